"""Run the embedded lab until SIGTERM or SIGINT.

    python -m lab.embedded [--host 127.0.0.1] [--describe-file PATH]
                           [--fault VARIANT=FAULT ...] [--list-faults]
                           [--oauth | --oauth-key-file PATH]

The first stdout line is describe() as one line of JSON (what a wrapper
parses); one human-readable line per listener follows.  ``--fault
pop3=dele_err`` (repeatable) makes a listener misbehave on purpose;
``--list-faults`` prints the catalogue and exits.  ``--oauth`` (a fresh
key) or ``--oauth-key-file`` (a key written by ``python -m
lab.embedded.oauth make-key``) adds XOAUTH2, OAUTHBEARER and a token
endpoint; describe() then has an "oauth" entry and the last line names the
token URL.
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
from .faults import FAULTS


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
    parser.add_argument("--fault", action="append", default=[],
                        metavar="VARIANT=FAULT",
                        help="inject a named fault into a listener, e.g. "
                             "pop3=dele_err or smtp=slow_banner:2 "
                             "(repeatable; see --list-faults)")
    parser.add_argument("--list-faults", action="store_true",
                        help="print the fault catalogue and exit")
    oauth_group = parser.add_mutually_exclusive_group()
    oauth_group.add_argument("--oauth", action="store_true",
                             help="offer XOAUTH2 and OAUTHBEARER with a fresh "
                                  "key and run a token endpoint")
    oauth_group.add_argument("--oauth-key-file", type=Path, metavar="PATH",
                             help="the same with this key (base64, as "
                                  "python -m lab.embedded.oauth make-key "
                                  "writes it)")
    args = parser.parse_args(argv)

    if args.list_faults:
        for name, (protocol, description) in FAULTS.items():
            print(f"{name:<22} {protocol:<5} {description}")
        return 0
    faults: dict[str, list[str]] = {}
    for item in args.fault:
        variant, sep, fault = item.partition("=")
        if not sep or not variant.strip() or not fault.strip():
            parser.error(f"--fault wants VARIANT=FAULT, not {item!r}")
        faults.setdefault(variant.strip(), []).append(fault.strip())

    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    # Installed before the lab starts, so an early signal still stops it
    # cleanly instead of killing the process mid-start.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    oauth_key: Optional[bytes] = None
    if args.oauth or args.oauth_key_file is not None:
        from . import oauth
        try:
            oauth_key = (oauth.make_key() if args.oauth
                         else oauth.load_key(args.oauth_key_file))
        except (OSError, ValueError) as exc:
            parser.error(f"--oauth-key-file: {exc}")
    try:
        lab = EmbeddedLab(host=args.host, faults=faults, oauth_key=oauth_key)
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
            injected = lab.faults.get(name)
            suffix = f"  faults: {' '.join(injected)}" if injected else ""
            print(f"{name:<16} {host}:{port}{suffix}")
        print(f"CA: {lab.ca_path}", flush=True)
        if lab.token_endpoint is not None:
            print(f"OAuth token endpoint: {lab.token_endpoint.url}",
                  flush=True)
        # Event.wait() with a timeout keeps the main thread responsive to
        # signals on every platform.
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
