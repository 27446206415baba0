"""describe --json: the contract other modules read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from lab.docker.config import DEFAULT_PORTS

ROOT = Path(__file__).resolve().parents[2]
REQUIRED_PORTS = {"smtp", "submission", "smtps", "pop3", "pop3s"}


def test_required_keys(docker_lab):
    for key in ("host", "domain", "ca_path", "ports", "accounts"):
        assert key in docker_lab
    assert REQUIRED_PORTS <= set(docker_lab["ports"])
    assert set(docker_lab["ports"]) == set(DEFAULT_PORTS)
    for a in docker_lab["accounts"]:
        assert set(a) >= {"username", "password", "address"}
        assert a["address"] == f"{a['username']}@{docker_lab['domain']}"
        assert a["password"]


def test_accounts(docker_lab):
    names = [a["username"] for a in docker_lab["accounts"]]
    assert {"shared", "alice", "bob"} <= set(names)
    rt = [n for n in names if n.startswith("rt")]
    assert len(rt) >= 1 and rt[0] == "rt01"
    assert len(set(names)) == len(names)


def test_ca_file_is_a_ca(docker_lab):
    ca = x509.load_pem_x509_certificate(Path(docker_lab["ca_path"]).read_bytes())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)


def test_cli_describe_json_matches(docker_lab):
    if docker_lab.get("started_by") == "compose":
        # describe reads files only; the compose lab's container ids are not in them.
        docker_lab = {k: v for k, v in docker_lab.items() if k != "containers"}
    out = subprocess.run([sys.executable, "-m", "lab.docker", "describe", "--json"],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    data = json.loads(out.stdout)
    for key in ("host", "domain", "ca_path", "ports", "accounts", "containers"):
        if key in docker_lab:
            assert data[key] == docker_lab[key]


def test_cli_status_says_up(docker_lab):
    out = subprocess.run([sys.executable, "-m", "lab.docker", "status"], cwd=ROOT,
                         capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lab is up" in out.stdout


def test_playbook_vars_accept_it(docker_lab):
    from lab.playbook_vars import playbook_vars
    v = playbook_vars(docker_lab)
    assert v["health_smtp_port"] == docker_lab["ports"]["submission"]
    assert v["health_pop3_port"] == docker_lab["ports"]["pop3s"]
