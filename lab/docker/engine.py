"""Find a Docker engine, or start a private one.

Order:

1. ``DOCKER_HOST`` set: that engine, and nothing else (an error if it does not answer).
2. The default socket (``/var/run/docker.sock``) answers: that engine.
3. The private engine's socket answers (started by an earlier ``up``): reuse it.
4. Root on Debian: install ``docker.io`` with apt if ``dockerd`` is missing, then
   start a private dockerd with its own data root, exec root, socket and pidfile,
   no bridge and no iptables rules (every lab container uses host networking).

The private engine is stopped only by the pid in its pidfile, and only when
``engine.json`` in the state dir says this lab started it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable, Optional

import docker
import docker.errors

DEFAULT_SOCKET = "/var/run/docker.sock"


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default)


@dataclasses.dataclass
class PrivateEngine:
    """Where the private dockerd keeps things (all overridable by env)."""
    run_dir: Path = dataclasses.field(
        default_factory=lambda: _env_path("LAB_DOCKERD_RUN_DIR", "/run/mailops-lab"))
    data_root: Path = dataclasses.field(
        default_factory=lambda: _env_path("LAB_DOCKERD_DATA_ROOT", "/var/lib/mailops-lab-docker"))

    @property
    def socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.run_dir / "dockerd.pid"

    @property
    def exec_root(self) -> Path:
        return self.run_dir / "exec"

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"


@dataclasses.dataclass
class Engine:
    client: docker.DockerClient
    base_url: str
    private: bool          # our private dockerd
    started_now: bool      # this process started it


class EngineError(RuntimeError):
    pass


def _client(base_url: str, timeout: int = 120) -> Optional[docker.DockerClient]:
    """A client when ``base_url`` answers a ping, else None."""
    try:
        client = docker.DockerClient(base_url=base_url, version="auto", timeout=timeout)
        client.ping()
        return client
    except Exception:  # connection refused, missing socket, bad answer
        return None


def _is_debian() -> bool:
    return Path("/etc/debian_version").is_file()


def _apt_install(packages: list[str], log: Callable[[str], None]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log(f"      installing {' '.join(packages)} with apt-get (one time)...")
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                      check=False).returncode:
        subprocess.run(["apt-get", "update"], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)


def ensure_tool(binary: str, package: str, log: Callable[[str], None]) -> str:
    """Path of ``binary``, installing Debian's ``package`` when root on Debian."""
    found = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found:
        return found
    if os.geteuid() != 0 or not _is_debian():
        raise EngineError(f"{binary} is missing: install {package} (needs root on Debian)")
    _apt_install([package], log)
    found = shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not found:
        raise EngineError(f"{binary} still missing after installing {package}")
    return found


def _dockerd_flags(dockerd: str) -> set[str]:
    try:
        out = subprocess.run([dockerd, "--help"], capture_output=True, text=True, timeout=20,
                             check=False)
    except (OSError, subprocess.TimeoutExpired):
        return set()
    text = out.stdout + out.stderr
    return {flag for flag in ("--ip6tables", "--iptables", "--bridge", "--ip-masq",
                              "--userland-proxy") if flag in text}


def read_pid(priv: PrivateEngine) -> Optional[int]:
    try:
        return int(priv.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def _alive_reaping(pid: int) -> bool:
    """pid_alive, reaping it first when it is our own child (same-process up/down)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return pid_alive(pid)


def _is_our_dockerd(pid: int, priv: PrivateEngine) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (bool(cmdline) and os.path.basename(cmdline[0]) == b"dockerd"
            and str(priv.pidfile).encode() in cmdline)


def start_private(state: Path, log: Callable[[str], None]) -> Engine:
    if os.geteuid() != 0:
        raise EngineError(
            "no Docker engine answers (DOCKER_HOST or /var/run/docker.sock) and a private "
            "one needs root: start Docker, or run `python -m lab.docker up` as root")
    priv = PrivateEngine()
    dockerd = shutil.which("dockerd") or shutil.which("dockerd", path="/usr/sbin:/usr/bin")
    if not dockerd:
        if not _is_debian():
            raise EngineError("no Docker engine and no dockerd: install Docker")
        _apt_install(["docker.io"], log)
        # A systemd host starts the packaged daemon on install: use it if so.
        client = _client(f"unix://{DEFAULT_SOCKET}")
        if client is not None:
            return Engine(client, f"unix://{DEFAULT_SOCKET}", private=False, started_now=False)
        dockerd = shutil.which("dockerd", path="/usr/sbin:/usr/bin")
        if not dockerd:
            raise EngineError("docker.io installed but dockerd not found")
    for d in (priv.run_dir, priv.exec_root, priv.data_root):
        d.mkdir(parents=True, exist_ok=True)
    # A stale socket or pidfile from a killed daemon would stop the new one.
    old = read_pid(priv)
    if old and pid_alive(old) and _is_our_dockerd(old, priv):
        raise EngineError(f"private dockerd (pid {old}) runs but does not answer on {priv.socket}")
    if old:
        clear_stale(state, priv, log)
    for stale in (priv.socket, priv.pidfile):
        stale.unlink(missing_ok=True)
    flags = _dockerd_flags(dockerd)
    cmd = [dockerd, "--data-root", str(priv.data_root), "--exec-root", str(priv.exec_root),
           "-H", priv.base_url, "--pidfile", str(priv.pidfile)]
    cmd += ["--bridge=none"] if "--bridge" in flags else []
    cmd += ["--iptables=false"] if "--iptables" in flags else []
    cmd += ["--ip6tables=false"] if "--ip6tables" in flags else []
    cmd += ["--ip-masq=false"] if "--ip-masq" in flags else []
    cmd += ["--userland-proxy=false"] if "--userland-proxy" in flags else []
    cmd += ["--log-level", "warn"]
    state.mkdir(parents=True, exist_ok=True)
    logpath = state / "dockerd.log"
    if logpath.exists() and logpath.stat().st_size > 5_000_000:
        os.replace(logpath, state / "dockerd.log.1")
    logf = open(logpath, "ab")
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                            start_new_session=True, close_fds=True)
    logf.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (state / "dockerd.log").read_text(errors="replace")[-2000:]
            raise EngineError(f"private dockerd exited with {proc.returncode}:\n{tail}")
        if priv.socket.exists():
            client = _client(priv.base_url)
            if client is not None:
                _write_engine_state(state, {"private": True, "started_by_lab": True,
                                            "pid": proc.pid, "base_url": priv.base_url,
                                            "pidfile": str(priv.pidfile)})
                return Engine(client, priv.base_url, private=True, started_now=True)
        time.sleep(0.1)
    raise EngineError(f"private dockerd did not answer on {priv.socket} within 60 s "
                      f"(log: {state / 'dockerd.log'})")


def _write_engine_state(state: Path, data: dict) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "engine.json").write_text(json.dumps(data, indent=2) + "\n")


def read_engine_state(state: Path) -> dict:
    try:
        return json.loads((state / "engine.json").read_text())
    except (OSError, ValueError):
        return {}


def find(state: Path) -> Optional[Engine]:
    """The engine the lab uses, if one answers now (never starts anything)."""
    if os.environ.get("DOCKER_HOST"):
        url = os.environ["DOCKER_HOST"]
        client = _client(url)
        return Engine(client, url, private=False, started_now=False) if client else None
    client = _client(f"unix://{DEFAULT_SOCKET}")
    if client is not None:
        return Engine(client, f"unix://{DEFAULT_SOCKET}", private=False, started_now=False)
    priv = PrivateEngine()
    if priv.socket.exists():
        client = _client(priv.base_url)
        if client is not None:
            return Engine(client, priv.base_url, private=True, started_now=False)
    return None


def ensure(state: Path, log: Callable[[str], None]) -> Engine:
    engine = find(state)
    if engine is not None:
        return engine
    if os.environ.get("DOCKER_HOST"):
        raise EngineError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer")
    return start_private(state, log)


def _unmount_under(root: Path) -> None:
    """dockerd leaves <exec-root>/netns/default mounted; drop such leftovers."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    prefix = str(root).rstrip("/") + "/"
    targets = [ln.split()[4] for ln in lines if ln.split()[4].startswith(prefix)]
    for target in sorted(targets, key=len, reverse=True):
        subprocess.run(["umount", "-l", target], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


def stop_private(state: Path, log: Callable[[str], None], timeout: float = 30,
                 force: bool = False) -> bool:
    """Stop the private dockerd by its pid if this lab started it (or ``force``:
    whoever started it, as long as the pid is the dockerd of our pidfile).
    True if stopped."""
    info = read_engine_state(state)
    if not info.get("started_by_lab") and not force:
        pid = read_pid(PrivateEngine())
        if pid and pid_alive(pid) and _is_our_dockerd(pid, PrivateEngine()):
            log(f"private dockerd (pid {pid}) left running: this state dir did not start it "
                "(`down --stop-engine` stops it)")
        return False
    priv = PrivateEngine()
    pid = read_pid(priv) or info.get("pid")
    if not pid or not pid_alive(pid) or not _is_our_dockerd(pid, priv):
        (state / "engine.json").unlink(missing_ok=True)
        return False
    log(f"stopping private dockerd (pid {pid})")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive_reaping(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        log(f"dockerd (pid {pid}) still running after {timeout:.0f} s: SIGKILL")
        os.kill(pid, signal.SIGKILL)
        while _alive_reaping(pid):
            time.sleep(0.1)
    _wait_shims(priv, log)
    _unmount_under(priv.exec_root)
    (state / "engine.json").unlink(missing_ok=True)
    return True


def _pids(match: Callable[[int, bytes], bool]) -> list[int]:
    """Live pids whose (pid, command line) match."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if pid_alive(int(entry.name)) and match(int(entry.name), cmdline):
            pids.append(int(entry.name))
    return pids


def _in_containers(pid: int, ids: list[str]) -> bool:
    try:
        cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return any(cid in cgroups for cid in ids)


def clear_stale(state: Path, priv: PrivateEngine, log: Callable[[str], None]) -> None:
    """What a private dockerd killed without `down` leaves behind, so a new one can start: the
    processes of the lab's containers (found by the container ids the lab recorded, in their
    cgroups), its containerd and shims (found by our exec root), and their runtime state."""
    try:
        recorded = json.loads((state / "lab.json").read_text()).get("containers", {})
        ids = [info["id"] for info in recorded.values() if info.get("id")]
    except (OSError, ValueError, AttributeError):
        ids = []
    needle = str(priv.exec_root).encode()
    leftovers = _pids(lambda pid, cmd: (ids and _in_containers(pid, ids))
                      or (needle in cmd and b"containerd" in cmd.split(b"\0", 1)[0]))
    if leftovers:
        log(f"cleaning up after a private dockerd that was killed: stopping pids {leftovers}")
    for pid in leftovers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    while any(_alive_reaping(pid) for pid in leftovers) and time.monotonic() < deadline:
        time.sleep(0.1)
    _unmount_under(priv.exec_root)
    # containerd's pidfile and socket would point the new dockerd at the dead containerd.
    shutil.rmtree(priv.exec_root / "containerd", ignore_errors=True)


def _shim_pids(priv: PrivateEngine) -> list[int]:
    """containerd shims of the private engine (they outlive dockerd for a moment)."""
    needle = str(priv.exec_root).encode()
    return _pids(lambda pid, cmd: b"containerd-shim" in cmd.split(b"\0", 1)[0] and needle in cmd)


def _wait_shims(priv: PrivateEngine, log: Callable[[str], None], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = _shim_pids(priv)
        if not pids:
            return
        time.sleep(0.1)
    log(f"containerd shims still running after {timeout:.0f} s: pids {pids} "
        "(a container of the private engine was not removed?)")
