"""Build the lab images, cached by the content hash of their Dockerfile dirs.

An image is tagged ``mailops-lab-<name>:<hash>``, the hash covering every file
of ``lab/docker/images/<name>/`` and the base image tag.  When that tag exists
nothing is built.  Builds use host networking so apt-get inside reaches the
mirror without a bridge.
"""

from __future__ import annotations

import hashlib
import re
import json
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import docker
import docker.errors

from .config import BASE_IMAGE, IMAGE_CONTENTS, IMAGES_DIR, LABEL


def context_dir(name: str) -> Path:
    return IMAGES_DIR / name


def content_hash(directory: Path) -> str:
    h = hashlib.sha256()
    h.update(BASE_IMAGE.encode() + b"\0")
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if "__pycache__" in path.parts:
            continue
        rel = path.relative_to(directory).as_posix()
        h.update(rel.encode() + b"\0")
        h.update(b"x" if path.stat().st_mode & 0o111 else b"-")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def image_ref(name: str) -> str:
    return f"mailops-lab-{name}:{content_hash(context_dir(name))}"


def image_exists(client: docker.DockerClient, ref: str) -> bool:
    try:
        client.images.get(ref)
        return True
    except docker.errors.ImageNotFound:
        return False


class BuildError(RuntimeError):
    pass


def build(base_url: str, name: str, ref: str, logpath: Path) -> None:
    """Build one image (own API client: builds run in parallel threads)."""
    api = docker.APIClient(base_url=base_url, version="auto", timeout=900)
    error: Optional[str] = None
    with open(logpath, "w") as log:
        stream = api.build(path=str(context_dir(name)), tag=ref, rm=True, forcerm=True,
                           pull=False, network_mode="host", decode=True,
                           labels={LABEL: "1", f"{LABEL}.image": name})
        for chunk in stream:
            if "stream" in chunk:
                log.write(chunk["stream"])
            elif "error" in chunk:
                error = chunk["error"]
                log.write("ERROR: " + error + "\n")
            elif chunk.get("status"):
                log.write(json.dumps(chunk) + "\n")
    api.close()
    if error:
        tail = logpath.read_text(errors="replace")[-2500:]
        raise BuildError(f"building {name} failed: {error}\n--- {logpath} (tail) ---\n{tail}")


def build_all(base_url: str, client: docker.DockerClient, names: list[str], logdir: Path,
              log: Callable[[str], None], step: Callable[[str], None]) -> dict[str, dict]:
    """Build the images missing, in parallel. Returns {name: {ref, built, seconds}}."""
    logdir.mkdir(parents=True, exist_ok=True)
    result: dict[str, dict] = {}
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run(name: str, ref: str) -> None:
        t0 = time.monotonic()
        try:
            build(base_url, name, ref, logdir / f"build-{name}.log")
        except BaseException as exc:  # reported after join
            with lock:
                errors.append(exc)
            return
        seconds = time.monotonic() - t0
        with lock:
            result[name]["seconds"] = round(seconds, 1)
            log(f"      {name} image built in {seconds:.1f}s ({ref})")

    for name in names:
        ref = image_ref(name)
        if image_exists(client, ref):
            step(f"{name} image up to date ({ref})")
            result[name] = {"ref": ref, "built": False, "seconds": 0.0}
            continue
        contents = f" ({IMAGE_CONTENTS[name]})" if name in IMAGE_CONTENTS else ""
        step(f"building {name} image{contents}...")
        result[name] = {"ref": ref, "built": True, "seconds": None}
        t = threading.Thread(target=run, args=(name, ref), name=f"build-{name}", daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return result


def prune_old(client: docker.DockerClient, name: str, keep: str) -> list[str]:
    """Untag earlier content-hash builds of one image (unused ones are then
    deleted by the engine).  Other tags (e.g. compose's) are left alone."""
    pattern = re.compile(rf"^mailops-lab-{re.escape(name)}:[0-9a-f]{{16}}$")
    removed = []
    for image in client.images.list(name=f"mailops-lab-{name}"):
        for tag in image.tags:
            if tag == keep or not pattern.match(tag):
                continue
            try:
                client.images.remove(tag, noprune=False)
                removed.append(tag)
            except docker.errors.APIError:
                pass  # still used by a container: next time
    return removed
