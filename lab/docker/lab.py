"""Bring the Docker mail lab up and down, describe it, report on it.

State (lab/.state/, gitignored):

    lab.json        config, engine, container ids and timings of the lab that is up
    engine.json     the private dockerd this lab started (pid, socket)
    runtime/        certs, accounts, DKIM keys and OAuth, mounted read-only at /lab in the
                    containers
    logs/           image build logs
    dockerd.log     the private dockerd's log
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
import socket
import ssl
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

import docker
import docker.errors

from . import baseimage, dns, engine as engine_mod, images, runtime
from ..embedded import oauth as lab_oauth
from .config import (BADDKIM_DOMAIN, BASE_IMAGE, BOUNCE_DOMAIN, CONTAINERS, DKIM_SELECTOR, LABEL,
                     OAUTH_MECHANISMS, OAUTH_PORTS, OUTSIDE_DOMAIN, PORTS, RESOLVER_PORT,
                     TLS_BADCERT, TLS_IMPLICIT, LabConfig, state_dir)

Log = Callable[[str], None]
# engine, base image, one step per image, certificates, containers, readiness
STEPS = 5 + len(CONTAINERS)
BUILD_ORDER = ("mta", "outside", "mailbox")  # the order the image steps are listed in
READY_TIMEOUT = float(os.environ.get("LAB_READY_TIMEOUT", "90"))
MAILDIR_TEMPLATE = "/var/vmail/{username}/Maildir"


def _stdout(msg: str) -> None:
    print(msg, flush=True)


# -- state ------------------------------------------------------------------

def read_state(state: Path) -> dict:
    try:
        return json.loads((state / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_state(state: Path, data: dict) -> None:
    state.mkdir(parents=True, exist_ok=True)
    tmp = state / "lab.json.tmp"
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state / "lab.json")


def current_config(state: Optional[Path] = None) -> LabConfig:
    """The config of the lab that is up, else the one the environment asks for."""
    state = state or state_dir()
    data = read_state(state)
    if data.get("config"):
        return LabConfig.from_json(data["config"], state)
    cfg = LabConfig.from_env()
    cfg.state = state
    return cfg


# -- describe ----------------------------------------------------------------

def describe(cfg: Optional[LabConfig] = None) -> dict[str, Any]:
    """What a client needs: host, domain, ca_path, ports, accounts (+ extras)."""
    cfg = cfg or current_config()
    users = runtime.read_users(cfg.users_path)
    data = read_state(cfg.state)
    return {
        "kind": "docker",
        "host": cfg.host,
        "hosts": list(cfg.listen),
        "domain": cfg.domain,
        "ca_path": str(cfg.ca_path),
        "rogue_ca_path": str(cfg.ca_path.with_name("rogue-ca.pem")),
        "ports": dict(cfg.ports),
        "port_kinds": {name: {"protocol": p.protocol, "tls": p.tls, "host": cfg.port_host(name)}
                       for name, p in PORTS.items()},
        "resolver": {"host": cfg.resolver, "port": RESOLVER_PORT},
        "paths": paths(cfg),
        "oauth": oauth(cfg),
        "accounts": [{"username": u, "password": pw, "address": f"{u}@{cfg.domain}"}
                     for u, pw in users.items()],
        "shared_account": "shared",
        "maildir": MAILDIR_TEMPLATE,
        "docker_host": data.get("engine", {}).get("base_url"),
        "containers": {name: info["id"] for name, info in data.get("containers", {}).items()},
    }


def paths(cfg: LabConfig) -> dict[str, Any]:
    """The mail paths beyond the lab domain: what a probe of hops, verdicts and bounces needs.
    Templates take ``{user}`` (an account's username)."""
    return {
        "outside_domain": OUTSIDE_DOMAIN,
        "outside_host": cfg.outside_address,
        "outside_port": cfg.ports["outside_smtp"],
        "outside_mx": f"mx.{OUTSIDE_DOMAIN}",
        # Submitted with AUTH (submission/smtps), it goes lab MTA -> outside MTA -> lab MTA
        # (port smtp) -> LMTP, back into <user>'s INBOX.
        "loop_address": "{user}@" + OUTSIDE_DOMAIN,
        "loop_returns_to": "{user}@" + cfg.domain,
        "bounce_domain": BOUNCE_DOMAIN,
        "bounce_address": "{user}@" + BOUNCE_DOMAIN,
        "bounce_status": "5.1.1",
        "bounce_diagnostic": "user unknown in the lab's bounce domain",
        "baddkim_domain": BADDKIM_DOMAIN,
        "baddkim_sender": "{user}@" + BADDKIM_DOMAIN,
        "dkim_selector": DKIM_SELECTOR,
        "authserv_id": cfg.authserv_id,
        "resolver": cfg.resolver,
        "open_relay_port": cfg.ports["smtp_openrelay"],
        # What the lab MTA's Authentication-Results say when the mail comes back in on port smtp.
        "verdicts": {
            "loop": {"spf": "pass", "dkim": "pass", "dmarc": "pass"},
            "baddkim": {"spf": "softfail", "dkim": "fail", "dmarc": "fail"},
        },
    }


def oauth(cfg: LabConfig) -> dict[str, Any]:
    """OAuth 2.0: the token endpoint, the key (tokens can be minted with
    lab.embedded.oauth.issue(load_key(key_path), user, ...)), the clients and the ports."""
    clients = runtime.read_oauth_clients(cfg.oauth_clients_path)
    return {
        "token_url": cfg.oauth_base_url + lab_oauth.TokenEndpoint.TOKEN_PATH,
        "openid_configuration": cfg.oauth_base_url + lab_oauth.TokenEndpoint.DISCOVERY_PATH,
        "key_path": str(cfg.oauth_key_path),
        "algorithm": lab_oauth.ALGORITHM,
        "kid": lab_oauth.KID,
        "issuer": lab_oauth.ISSUER,
        "audience": lab_oauth.AUDIENCE,
        "scope": lab_oauth.DEFAULT_SCOPE,
        "lifetime": lab_oauth.DEFAULT_LIFETIME,
        "mechanisms": list(OAUTH_MECHANISMS),
        # The account the failure clients' tokens are for.
        "failure_account": cfg.oauth_failure_account(),
        "clients": [{"client_id": cid, "client_secret": c["secret"], "username": c["username"],
                     "scopes": c["scopes"], "purpose": c["purpose"],
                     **({"lifetime": c["lifetime"]} if "lifetime" in c else {})}
                    for cid, c in clients.items()],
        # Port name -> the OAuth mechanisms it offers (SMTP: after STARTTLS where it has it).
        "ports": {name: list(OAUTH_MECHANISMS) for name in OAUTH_PORTS},
    }


# -- ports --------------------------------------------------------------------

def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


def _probe(host: str, port: int, name: str, timeout: float = 2.0) -> bool:
    """True when the port greets like the service ``name`` should be."""
    proto, tls = PORTS[name].protocol, PORTS[name].tls
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return False
    try:
        sock = raw
        if tls in (TLS_IMPLICIT, TLS_BADCERT):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(raw, server_hostname=None)
        if proto == "dovecot-auth":
            return True
        sock.settimeout(timeout)
        if proto == "https":
            sock.sendall(f"GET {lab_oauth.TokenEndpoint.DISCOVERY_PATH} HTTP/1.0\r\n"
                         f"Host: {host}\r\n\r\n".encode())
            return sock.recv(512).startswith(b"HTTP/1.0 200")
        greeting = sock.recv(512)
        expected = {"smtp": b"220", "lmtp": b"220", "pop3": b"+OK", "imap": b"* OK"}[proto]
        return greeting.startswith(expected)
    except (OSError, ssl.SSLError):
        return False
    finally:
        raw.close()


def probe_all(cfg: LabConfig) -> dict[str, bool]:
    return {name: _probe(cfg.port_host(name), port, name) for name, port in cfg.ports.items()}


def probe_resolver(cfg: LabConfig, timeout: float = 1.0) -> bool:
    """True when the lab resolver answers for the lab domain's MX host."""
    return dns.answers(cfg.resolver, f"mail.{cfg.domain}", "A", port=RESOLVER_PORT, timeout=timeout)


def udp_port_free(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
            return True
        except OSError:
            return False


# -- containers ---------------------------------------------------------------

def _container_name(cfg: LabConfig, role: str) -> str:
    # Distinct per state dir, so two checkouts on one engine do not collide.
    if cfg.state == state_dir({}):
        return f"mailops-lab-{role}"
    return f"mailops-lab-{role}-{hashlib.sha256(str(cfg.state).encode()).hexdigest()[:8]}"


def _labels(cfg: LabConfig, role: str, runtime_fp: str) -> dict[str, str]:
    return {LABEL: "1", f"{LABEL}.state": str(cfg.state), f"{LABEL}.role": role,
            f"{LABEL}.config": cfg.fingerprint(), f"{LABEL}.runtime": runtime_fp}


def lab_containers(client: docker.DockerClient, state: Path) -> list:
    return client.containers.list(all=True, filters={"label": f"{LABEL}.state={state}"})


def _remove(container, log: Log) -> None:
    cid = container.id
    try:
        if container.status == "running":
            container.stop(timeout=5)
        container.remove(force=True)
        log(f"      removed {container.name} ({cid[:12]})")
    except docker.errors.NotFound:
        pass


def _tail_logs(container, lines: int = 40) -> str:
    try:
        return container.logs(tail=lines).decode(errors="replace")
    except docker.errors.APIError:
        return "(no logs)"


# -- up -----------------------------------------------------------------------

class _Progress:
    """The numbered step lines of `up` and the seconds each step took."""

    def __init__(self, log: Log) -> None:
        self.log = log
        self.timings: dict[str, float] = {}
        self._number = 0
        self._start = self._lap_start = time.monotonic()

    def step(self, text: str) -> None:
        self._number += 1
        self.log(f"[{self._number}/{STEPS}] {text}")

    def lap(self, key: str) -> None:
        now = time.monotonic()
        self.timings[key] = round(now - self._lap_start, 2)
        self._lap_start = now

    def finish(self) -> None:
        self.timings["total"] = round(time.monotonic() - self._start, 2)
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items() if k != "total")
        self.log(f"lab up in {self.timings['total']:.1f}s ({parts})")


def up(cfg: LabConfig, log: Log = _stdout, rebuild: bool = False) -> dict[str, Any]:
    """Bring the lab up (idempotent: a lab already up as asked is kept)."""
    progress = _Progress(log)
    cfg.state.mkdir(parents=True, exist_ok=True)
    eng = _up_engine(cfg, progress)
    base = _up_base_image(eng, cfg, progress)
    built = _up_images(eng, cfg, progress, rebuild)
    runtime_fp = _up_runtime(cfg, progress)
    containers = _up_containers(eng, cfg, built, runtime_fp, progress)
    _up_ready(eng, cfg, containers, progress)
    for role in CONTAINERS:  # earlier builds no container uses any more
        images.prune_old(eng.client, role, keep=built[role]["ref"])
    progress.finish()
    data = read_state(cfg.state)
    data["timings"] = progress.timings
    data["built"] = {k: v["built"] for k, v in built.items()}
    data["base_image"] = base
    _write_state(cfg.state, data)
    return describe(cfg)


def _up_engine(cfg: LabConfig, progress: _Progress) -> engine_mod.Engine:
    progress.step("docker engine...")
    eng = engine_mod.ensure(cfg.state, progress.log)
    how = ("private dockerd started" if eng.started_now else
           "private dockerd" if eng.private else "existing engine")
    progress.log(f"      {how}: {eng.base_url}")
    progress.lap("engine")
    return eng


def _up_base_image(eng: engine_mod.Engine, cfg: LabConfig, progress: _Progress) -> str:
    progress.step(f"base image {BASE_IMAGE}...")
    base = baseimage.ensure_base_image(eng, cfg.state, progress.log)
    progress.log(f"      {base}")
    progress.lap("base_image")
    return base


def _up_images(eng: engine_mod.Engine, cfg: LabConfig, progress: _Progress,
               rebuild: bool) -> dict[str, dict]:
    """One step per image: up to date, or built (in parallel)."""
    if rebuild:
        for role in CONTAINERS:
            ref = images.image_ref(role)
            if images.image_exists(eng.client, ref):
                for c in eng.client.containers.list(all=True, filters={"ancestor": ref}):
                    _remove(c, progress.log)
                eng.client.images.remove(ref, force=True)
    built = images.build_all(eng.base_url, eng.client, list(BUILD_ORDER), cfg.state / "logs",
                             progress.log, progress.step)
    progress.lap("images")
    return built


def _up_runtime(cfg: LabConfig, progress: _Progress) -> str:
    """Certificates and accounts; returns their fingerprint (a change replaces the containers)."""
    progress.step("CA, certificates, accounts, OAuth key and clients...")
    made = runtime.ensure_runtime(cfg)
    progress.log(f"      {'made' if made['certs'] else 'kept'} certificates, "
                 f"{'made' if made['users'] else 'kept'} accounts, "
                 f"{'made' if made['dkim'] else 'kept'} DKIM keys, "
                 f"{'made' if made['oauth'] else 'kept'} OAuth key and clients; CA: {cfg.ca_path}")
    runtime_fp = runtime.runtime_fingerprint(cfg)
    progress.lap("certs")
    return runtime_fp


def _up_containers(eng: engine_mod.Engine, cfg: LabConfig, built: dict[str, dict],
                   runtime_fp: str, progress: _Progress) -> dict[str, dict]:
    """Keep both containers when they run as asked, else replace both; record them in the state."""
    progress.step("containers...")
    old = read_state(cfg.state)
    keep = _containers_to_keep(eng.client, cfg, built, runtime_fp)
    _remove_all_but(eng.client, cfg, keep, progress.log)
    _check_ports_free(cfg, keep)
    containers: dict[str, dict] = {}
    for role in CONTAINERS:
        ref = built[role]["ref"]
        if role in keep:
            c = keep[role]
            progress.log(f"      {role}: kept {c.id[:12]}")
        else:
            c = eng.client.containers.run(
                ref, name=_container_name(cfg, role), detach=True,
                network_mode="host", environment=cfg.container_env(),
                volumes={str(cfg.runtime_dir): {"bind": "/lab", "mode": "ro"}},
                labels=_labels(cfg, role, runtime_fp), restart_policy={"Name": "no"},
                stop_signal="SIGTERM")
            progress.log(f"      {role}: started {c.id[:12]} ({ref})")
        containers[role] = {"id": c.id, "name": c.name, "image": ref}
    _write_state(cfg.state, {
        "config": cfg.to_json(),
        "engine": {"base_url": eng.base_url, "private": eng.private},
        "containers": containers,
        "runtime_fingerprint": runtime_fp,
        "up_since": old.get("up_since") if keep
        else datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    })
    progress.lap("containers")
    return containers


def _containers_to_keep(client: docker.DockerClient, cfg: LabConfig, built: dict[str, dict],
                        runtime_fp: str) -> dict[str, Any]:
    """{role: container} of a lab that runs the images, config and certificates asked for."""
    keep: dict[str, Any] = {}
    existing = {c.labels.get(f"{LABEL}.role"): c for c in lab_containers(client, cfg.state)}
    for role in CONTAINERS:
        c = existing.get(role)
        want = _labels(cfg, role, runtime_fp)
        if (c is not None and c.status == "running" and built[role]["ref"] in c.image.tags
                and all(c.labels.get(k) == v for k, v in want.items())):
            keep[role] = c
    if len(keep) != len(CONTAINERS):
        # Postfix holds connections to Dovecot's auth and LMTP listeners, and the two MTAs
        # and the resolver share the accounts and DKIM records: all or nothing.
        keep.clear()
    return keep


def _remove_all_but(client: docker.DockerClient, cfg: LabConfig, keep: dict[str, Any],
                    log: Log) -> None:
    for c in lab_containers(client, cfg.state):
        role = c.labels.get(f"{LABEL}.role")
        if role not in keep or keep[role].id != c.id:
            _remove(c, log)
    # A container of the same name left by a lab whose state was lost.
    for role in CONTAINERS:
        if role in keep:
            continue
        try:
            _remove(client.containers.get(_container_name(cfg, role)), log)
        except docker.errors.NotFound:
            pass


def _check_ports_free(cfg: LabConfig, keep: dict[str, Any]) -> None:
    """The ports of the containers about to start must be free on the host."""
    busy = [f"{name}={cfg.port_host(name)}:{port}" for name, port in cfg.ports.items()
            if PORTS[name].owner not in keep and not port_free(port, cfg.port_host(name))]
    if busy:
        raise RuntimeError(
            "ports in use: " + ", ".join(busy) +
            ". Move them with LAB_PORT_<NAME>=N, `--port name=N` or LAB_PORT_OFFSET / --port-offset"
            " (the outside provider's address with LAB_OUTSIDE_ADDRESS)")
    if "outside" not in keep and not (port_free(RESOLVER_PORT, cfg.resolver)
                                      and udp_port_free(RESOLVER_PORT, cfg.resolver)):
        raise RuntimeError(f"{cfg.resolver}:{RESOLVER_PORT} (the lab resolver) is in use: "
                           "give it another loopback address with LAB_RESOLVER")


def _up_ready(eng: engine_mod.Engine, cfg: LabConfig, containers: dict[str, dict],
              progress: _Progress) -> None:
    progress.step(f"waiting for {len(cfg.ports)} ports and the resolver...")
    wait_ready(cfg, eng.client, containers, progress.log)
    progress.lap("ready")


def wait_ready(cfg: LabConfig, client: docker.DockerClient, containers: dict, log: Log,
               timeout: float = READY_TIMEOUT) -> None:
    pending = dict(cfg.ports)
    resolver_up = False
    deadline = time.monotonic() + timeout
    last_check = 0.0
    while pending or not resolver_up:
        for name, port in list(pending.items()):
            if _probe(cfg.port_host(name), port, name, timeout=1.0):
                del pending[name]
        resolver_up = resolver_up or probe_resolver(cfg)
        if not pending and resolver_up:
            break
        if time.monotonic() > deadline:
            missing = [f"{k}={v}" for k, v in pending.items()]
            if not resolver_up:
                missing.append(f"resolver={cfg.resolver}:{RESOLVER_PORT}")
            raise RuntimeError(f"not ready after {timeout:.0f}s: " + ", ".join(missing) +
                               _logs_hint(client, containers))
        if time.monotonic() - last_check > 1.0:
            last_check = time.monotonic()
            for role, info in containers.items():
                c = client.containers.get(info["id"])
                if c.status not in ("running", "created"):
                    raise RuntimeError(f"{role} container {c.status}:\n{_tail_logs(c)}")
        time.sleep(0.1)
    log(f"      all {len(cfg.ports)} ports answer (on {cfg.host}; outside_smtp on "
        f"{cfg.outside_address}); the resolver answers on {cfg.resolver}")


def _logs_hint(client: docker.DockerClient, containers: dict) -> str:
    out = []
    for role, info in containers.items():
        try:
            out.append(f"\n--- {role} logs ---\n{_tail_logs(client.containers.get(info['id']))}")
        except docker.errors.NotFound:
            out.append(f"\n--- {role}: container gone ---")
    return "".join(out)


# -- down ---------------------------------------------------------------------

def down(state: Optional[Path] = None, log: Log = _stdout, keep_engine: bool = False,
         stop_engine: bool = False, purge: bool = False) -> None:
    state = state or state_dir()
    data = read_state(state)
    eng = engine_mod.find(state)
    if eng is None:
        if data.get("containers"):
            log("no Docker engine answers: the lab's containers are gone with it")
    else:
        ids = {info["id"] for info in data.get("containers", {}).values()}
        found = {c.id: c for c in lab_containers(eng.client, state)}
        for cid in ids - set(found):
            try:
                found[cid] = eng.client.containers.get(cid)
            except docker.errors.NotFound:
                pass
        for c in found.values():
            _remove(c, log)
        if not found:
            log("no lab containers")
    (state / "lab.json").unlink(missing_ok=True)
    if not keep_engine:
        engine_mod.stop_private(state, log, force=stop_engine)
    if purge:
        shutil.rmtree(state / "runtime", ignore_errors=True)
        log(f"removed {state / 'runtime'}")


# -- status / logs --------------------------------------------------------------

def status(cfg: LabConfig, log: Log = _stdout) -> bool:
    data = read_state(cfg.state)
    eng = engine_mod.find(cfg.state)
    einfo = engine_mod.read_engine_state(cfg.state)
    if eng is None:
        log("engine:     none answers")
    else:
        extra = f" (private dockerd pid {einfo.get('pid')})" if eng.private and einfo else ""
        log(f"engine:     {eng.base_url}{extra}")
    containers = dict(data.get("containers", {}))
    if not containers and eng is not None:
        # Not started by `up`: a lab from `docker compose -f lab/compose.yaml`?
        for c in eng.client.containers.list(filters={"label": f"{LABEL}.role"}):
            role = c.labels[f"{LABEL}.role"]
            containers.setdefault(role, {"id": c.id, "image": ",".join(c.image.tags)})
        if containers:
            log("containers: not started by `up` (docker compose?)")
    ok = eng is not None and bool(containers)
    for role in CONTAINERS:
        info = containers.get(role)
        if not info or eng is None:
            log(f"{role + ':':<11} not up")
            ok = False
            continue
        try:
            c = eng.client.containers.get(info["id"])
            health = c.attrs.get("State", {}).get("Health", {}).get("Status", "-")
            log(f"{role + ':':<11} {c.id[:12]} {c.status} health={health} image={info['image']}")
            ok = ok and c.status == "running"
        except docker.errors.NotFound:
            log(f"{role + ':':<11} container {info['id'][:12]} gone")
            ok = False
    answers = probe_all(cfg)
    for name, port in cfg.ports.items():
        where = f"{cfg.port_host(name)}:{port}"
        log(f"  {name:<16} {where:<16} {'up' if answers[name] else 'DOWN'}")
    resolver_up = probe_resolver(cfg)
    where = f"{cfg.resolver}:{RESOLVER_PORT}"
    log(f"  {'resolver':<16} {where:<16} {'up' if resolver_up else 'DOWN'}")
    ok = ok and all(answers.values()) and resolver_up
    log(f"lab is {'up' if ok else 'not (fully) up'}")
    return ok


def logs(cfg: LabConfig, roles: list[str], tail: Optional[int], follow: bool,
         out=sys.stdout.buffer) -> None:
    data = read_state(cfg.state)
    eng = engine_mod.find(cfg.state)
    if eng is None or not data.get("containers"):
        raise RuntimeError("the lab is not up")
    for role in roles or list(CONTAINERS):
        info = data["containers"].get(role)
        if not info:
            continue
        c = eng.client.containers.get(info["id"])
        kwargs: dict[str, Any] = {"tail": tail if tail is not None else "all"}
        if follow and len(roles) == 1:
            for chunk in c.logs(stream=True, follow=True, **kwargs):
                out.write(chunk)
                out.flush()
            return
        for line in c.logs(**kwargs).splitlines(keepends=True):
            out.write(f"{role:<8}| ".encode() + line)
        out.flush()
