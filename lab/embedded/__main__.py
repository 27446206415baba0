"""Run the embedded lab until SIGTERM or SIGINT.

    python -m lab.embedded [--host 127.0.0.1] [--describe-file PATH]

The first stdout line is describe() as one line of JSON (what a wrapper
parses); one human-readable line per listener follows.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Optional

from . import EmbeddedLab


def _write_atomically(path: Path, text: str) -> None:
    # A process polling for the file must never read it half-written.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.embedded",
                                     description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--host", default="127.0.0.1",
                        help="loopback address to bind (default 127.0.0.1)")
    parser.add_argument("--describe-file", type=Path,
                        help="also write the describe() JSON here")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    # Installed before the lab starts, so an early signal still stops it
    # cleanly instead of killing the process mid-start.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        lab = EmbeddedLab(host=args.host)
    except ValueError as exc:
        parser.error(str(exc))
    with lab:
        description = lab.describe()
        text = json.dumps(description, sort_keys=True)
        if args.describe_file is not None:
            _write_atomically(args.describe_file, text + "\n")
        print(text)
        host = f"[{lab.host}]" if ":" in lab.host else lab.host
        for name, port in lab.ports.items():
            print(f"{name:<16} {host}:{port}")
        print(f"CA: {lab.ca_path}", flush=True)
        # Event.wait() with a timeout keeps the main thread responsive to
        # signals on every platform.
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
