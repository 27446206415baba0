"""Fixtures for the Docker lab's tests (pytest + testinfra against the running containers).

The session fixture ``docker_lab`` reuses a lab that is already up (``python -m
lab.docker up``) or brings one up, and takes it down at the end only if it
brought it up.  Bringing a lab up can install docker.io, start a private
dockerd and build images, so those tests run only when asked for:

    pytest tests/lab                 # named on the command line
    MAILOPS_LAB_DOCKER=1 pytest      # or forced on (=0 forces them off)

A bare ``pytest`` (testpaths = tests) skips them.  Tests that need no lab
(config, mirror parsing, certificates) always run.

No __init__.py here on purpose: a package named ``lab`` under tests/ would
shadow the real ``lab`` package.
"""

from __future__ import annotations

import os
import ssl
import sys
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _asked_for(config: pytest.Config) -> bool:
    flag = os.environ.get("MAILOPS_LAB_DOCKER", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    base = Path(config.invocation_params.dir)
    for arg in config.invocation_params.args:
        if arg.startswith("-"):
            continue
        path = (base / arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def _external_lab(cfg, docker_lab_mod):
    """describe() of a lab that `docker compose -f lab/compose.yaml` started, if one
    answers on every port and its containers carry the lab's role labels."""
    from lab.docker import engine
    from lab.docker.config import CONTAINERS, LABEL
    if not all(docker_lab_mod.probe_all(cfg).values()) or not docker_lab_mod.probe_resolver(cfg):
        return None
    eng = engine.find(cfg.state)
    if eng is None:
        return None
    containers = {}
    for c in eng.client.containers.list(filters={"label": f"{LABEL}.role"}):
        containers.setdefault(c.labels[f"{LABEL}.role"], c.id)
    if set(containers) != set(CONTAINERS):
        return None
    description = docker_lab_mod.describe(cfg)
    description["containers"] = containers
    description["docker_host"] = eng.base_url
    description["started_by"] = "compose"
    return description


@pytest.fixture(scope="session")
def docker_lab(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """describe() of a running Docker lab."""
    if not _asked_for(request.config):
        pytest.skip("Docker lab tests run when asked for: `pytest tests/lab` "
                    "or MAILOPS_LAB_DOCKER=1")
    from lab.docker import lab as docker_lab_mod
    from lab.docker.config import state_dir

    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def log(line: str) -> None:
        if reporter is not None:
            reporter.write_line(f"lab.docker: {line}")

    state = state_dir()
    cfg = docker_lab_mod.current_config(state)
    # up() is idempotent: it keeps a lab that is up as asked (same images,
    # config and certs) and replaces an outdated one.  Down at the end only
    # when there was no lab up before.
    external = None
    if not docker_lab_mod.read_state(state).get("containers"):
        external = _external_lab(cfg, docker_lab_mod)
    if external is not None:
        log("a lab started by docker compose is up: testing it")
        description, started = external, False
    else:
        was_up = bool(docker_lab_mod.read_state(state).get("containers")) and \
            docker_lab_mod.status(cfg, log=lambda _line: None)
        if was_up:
            log("a lab is up: reusing it (down is left to whoever started it)")
        description = docker_lab_mod.up(cfg, log=log)
        started = not was_up
    old_docker_host = os.environ.get("DOCKER_HOST")
    if description.get("docker_host"):
        # testinfra's docker backend runs the docker CLI, which reads DOCKER_HOST.
        os.environ["DOCKER_HOST"] = description["docker_host"]
    try:
        yield description
    finally:
        if old_docker_host is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old_docker_host
        if started:
            docker_lab_mod.down(state, log=log)


@pytest.fixture(scope="session")
def ports(docker_lab: dict[str, Any]) -> dict[str, int]:
    return docker_lab["ports"]


@pytest.fixture(scope="session")
def accounts(docker_lab: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {a["username"]: a for a in docker_lab["accounts"]}


@pytest.fixture(scope="session")
def lab_host(docker_lab: dict[str, Any]) -> str:
    return docker_lab["host"]


@pytest.fixture
def ca_ctx(docker_lab: dict[str, Any]) -> ssl.SSLContext:
    """A client context trusting the lab CA and nothing else, strict like Python 3.13."""
    ctx = ssl.create_default_context(cafile=docker_lab["ca_path"])
    ctx.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    ctx.verify_flags |= getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
    return ctx


@pytest.fixture(scope="session")
def mta(docker_lab: dict[str, Any]):
    """testinfra host for the Postfix container (docker backend, by container id)."""
    import testinfra
    return testinfra.get_host(f"docker://{docker_lab['containers']['mta']}")


@pytest.fixture(scope="session")
def mailbox(docker_lab: dict[str, Any]):
    """testinfra host for the Dovecot container (docker backend, by container id)."""
    import testinfra
    return testinfra.get_host(f"docker://{docker_lab['containers']['mailbox']}")


@pytest.fixture(scope="session")
def outside(docker_lab: dict[str, Any]):
    """testinfra host for the outside provider's container (its Postfix and the lab resolver)."""
    import testinfra
    return testinfra.get_host(f"docker://{docker_lab['containers']['outside']}")
