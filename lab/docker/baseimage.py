"""Make sure the Dockerfiles' base image (debian:bookworm-slim) exists.

Present: nothing to do.  Missing: pull it (what a machine with registry access
does).  Pull fails: build an equivalent with ``debootstrap --variant=minbase``
from the Debian mirror this host's apt already uses, read from
/etc/apt/sources.list and /etc/apt/sources.list.d/ at run time (no mirror is
named in the repository; ``LAB_DEBIAN_MIRROR`` overrides), and import it under
the same tag, so the same Dockerfiles build either way.  The image's apt
sources name that same mirror, so ``apt-get`` in the builds reaches it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterable, Optional

import docker
import docker.errors

from . import engine as engine_mod
from .config import BASE_IMAGE

SUITE = "bookworm"
APT_SOURCES = Path("/etc/apt/sources.list")
APT_SOURCES_D = Path("/etc/apt/sources.list.d")


@dataclasses.dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def _parse_one_line(text: str) -> Iterable[AptSource]:
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        line = re.sub(r"\[[^\]]*\]", " ", line)  # [signed-by=... arch=...]
        parts = line.split()
        if len(parts) < 3 or parts[0] != "deb":
            continue
        yield AptSource(parts[1], (parts[2],), tuple(parts[3:]))


def _parse_deb822(text: str) -> Iterable[AptSource]:
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            if ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no":
            continue
        if "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            yield AptSource(uri, tuple(fields.get("suites", "").split()),
                            tuple(fields.get("components", "").split()))


def host_apt_sources(sources_list: Path = APT_SOURCES,
                     sources_dir: Path = APT_SOURCES_D) -> list[AptSource]:
    found: list[AptSource] = []
    files: list[Path] = [sources_list] if sources_list.is_file() else []
    if sources_dir.is_dir():
        files += sorted(p for p in sources_dir.iterdir()
                        if p.suffix in (".list", ".sources") and p.is_file())
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parser = _parse_deb822 if path.suffix == ".sources" else _parse_one_line
        found.extend(parser(text))
    return found


def _is_security(src: AptSource, suite: str) -> bool:
    return any(s.endswith("-security") or s.endswith("/updates") for s in src.suites)


def debian_mirror(sources: Optional[list[AptSource]] = None, suite: str = SUITE) -> str:
    """The URI of the host's main Debian archive (not the security one)."""
    override = os.environ.get("LAB_DEBIAN_MIRROR", "").strip()
    if override:
        return override
    sources = host_apt_sources() if sources is None else sources
    candidates = [s for s in sources
                  if s.uri.startswith(("http://", "https://")) and "main" in s.components
                  and not _is_security(s, suite)]
    # Same release first, then any Debian-looking archive (a newer host still
    # points at a mirror that carries bookworm).
    for s in candidates:
        if suite in s.suites:
            return s.uri
    for s in candidates:
        if s.uri.rstrip("/").endswith("/debian"):
            return s.uri
    raise RuntimeError(
        "no Debian mirror found in /etc/apt/sources.list{,.d}: set LAB_DEBIAN_MIRROR")


def image_apt_sources(mirror: str, sources: Optional[list[AptSource]] = None,
                      suite: str = SUITE) -> str:
    """sources.list for the image: the mirror for <suite> and <suite>-updates, plus
    the host's security archive for <suite> when the host has one."""
    sources = host_apt_sources() if sources is None else sources
    lines = [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main"]
    if os.environ.get("LAB_DEBIAN_MIRROR", "").strip():
        return "\n".join(lines) + "\n"
    for s in sources:
        if f"{suite}-security" in s.suites and s.uri.startswith(("http://", "https://")):
            lines.append(f"deb {s.uri} {suite}-security main")
            break
    # Only suites the host itself lists are sure to exist on its mirror.
    host_suites = {x for s in sources for x in s.suites}
    if f"{suite}-updates" not in host_suites:
        lines.remove(f"deb {mirror} {suite}-updates main")
    return "\n".join(lines) + "\n"


def _try_pull(client: docker.DockerClient, log: Callable[[str], None]) -> bool:
    if os.environ.get("LAB_BASE_PULL", "1") == "0":
        return False
    repo, tag = BASE_IMAGE.split(":")
    try:
        client.images.pull(repo, tag=tag)
        return True
    except (docker.errors.APIError, docker.errors.DockerException, OSError) as exc:
        msg = getattr(exc, "explanation", None) or str(exc)
        log(f"      cannot pull {BASE_IMAGE} ({str(msg).splitlines()[0][:160]})")
        log("      building it with debootstrap instead")
        return False


def debootstrap_import(engine: engine_mod.Engine, state: Path,
                       log: Callable[[str], None]) -> None:
    if os.geteuid() != 0:
        raise RuntimeError(f"{BASE_IMAGE} is missing, cannot be pulled, and debootstrap "
                           "needs root")
    debootstrap = engine_mod.ensure_tool("debootstrap", "debootstrap", log)
    sources = host_apt_sources()
    mirror = debian_mirror(sources)
    rootfs = state / "base-rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    logpath = state / "debootstrap.log"
    log(f"      debootstrap --variant=minbase {SUITE} from the host's mirror {mirror}")
    t0 = time.monotonic()
    with open(logpath, "wb") as logf:
        rc = subprocess.run([debootstrap, "--variant=minbase", SUITE, str(rootfs), mirror],
                            stdout=logf, stderr=subprocess.STDOUT, check=False).returncode
    if rc:
        tail = logpath.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"debootstrap failed ({rc}), log {logpath}:\n{tail}")
    log(f"      debootstrap done in {time.monotonic() - t0:.1f}s")
    try:
        # Trim it toward what the slim image has, and drop host specifics.
        for rel in ("etc/resolv.conf", "etc/hostname"):
            (rootfs / rel).unlink(missing_ok=True)
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for p in (rootfs / d).glob("*"):
                if p.is_file():
                    p.unlink()
        (rootfs / "etc/apt/sources.list").write_text(image_apt_sources(mirror, sources))
        t1 = time.monotonic()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
                               stdout=subprocess.PIPE)
        repo, tag = BASE_IMAGE.split(":")
        assert tar.stdout is not None
        engine.client.api.import_image_from_stream(
            tar.stdout, repository=repo, tag=tag,
            changes=['CMD ["bash"]',
                     'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
                     'LABEL io.mailops.lab.base=debootstrap'])
        if tar.wait():
            raise RuntimeError("tar of the debootstrap tree failed")
        engine.client.images.get(BASE_IMAGE)
        log(f"      imported as {BASE_IMAGE} in {time.monotonic() - t1:.1f}s")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def ensure_base_image(engine: engine_mod.Engine, state: Path,
                      log: Callable[[str], None]) -> str:
    """'present', 'pulled' or 'debootstrap'."""
    try:
        engine.client.images.get(BASE_IMAGE)
        return "present"
    except docker.errors.ImageNotFound:
        pass
    if _try_pull(engine.client, log):
        return "pulled"
    debootstrap_import(engine, state, log)
    return "debootstrap"
