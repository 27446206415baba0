"""Processes and listeners inside the containers (testinfra, docker backend by id),
and the ports as seen from the host."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from lab.docker.config import DEFAULT_PORTS, PORTS

MTA_PORTS = [n for n, p in PORTS.items() if p.owner == "mta"]
MAILBOX_PORTS = [n for n, p in PORTS.items() if p.owner == "mailbox"]


def test_postfix_master_runs_as_root(mta):
    masters = mta.process.filter(comm="master")
    assert len(masters) == 1
    assert masters[0].user == "root"
    assert masters[0].pid == 1, "postfix start-fg: the master is the container's main process"


@pytest.mark.parametrize("daemon", ["qmgr", "pickup", "tlsmgr", "postlogd"])
def test_postfix_daemons(mta, daemon):
    assert mta.process.filter(comm=daemon), f"no {daemon} process"


def test_postfix_config_is_valid(mta):
    out = mta.run("postfix check && postconf -n virtual_transport smtpd_sasl_type")
    assert out.rc == 0, out.stderr
    assert "virtual_transport = lmtp:inet:[127.0.0.1]:" in out.stdout
    assert "smtpd_sasl_type = dovecot" in out.stdout


def test_dovecot_instances(mailbox):
    masters = mailbox.process.filter(comm="dovecot")
    configs = sorted(p.args.split("-c ", 1)[1].rsplit("/", 1)[1] for p in masters)
    assert configs == ["badcert.conf", "main.conf", "nostls.conf"]
    assert all(p.user == "root" for p in masters)


@pytest.mark.parametrize("daemon", ["auth", "log", "config", "anvil"])
def test_dovecot_helpers(mailbox, daemon):
    assert mailbox.process.filter(comm=daemon)


def test_dovecot_apop_and_plain_passwords_configured(mailbox):
    out = mailbox.run("doveconf -c /etc/dovecot/lab/main.conf -h auth_mechanisms")
    assert out.rc == 0
    assert set(out.stdout.split()) >= {"plain", "login", "cram-md5", "apop"}


@pytest.mark.parametrize("name", MTA_PORTS)
def test_mta_port_listening_in_container(mta, ports, name):
    assert mta.socket(f"tcp://127.0.0.1:{ports[name]}").is_listening


@pytest.mark.parametrize("name", MAILBOX_PORTS)
def test_mailbox_port_listening_in_container(mailbox, ports, name):
    assert mailbox.socket(f"tcp://127.0.0.1:{ports[name]}").is_listening


def test_listeners_are_loopback_only(mailbox, ports):
    # Host networking: the container sees every listener of the machine.
    ours = set(ports.values())
    seen = []
    for spec in mailbox.socket.get_listening_sockets():
        if not spec.startswith("tcp://"):
            continue
        addr, _sep, port = spec[len("tcp://"):].rpartition(":")
        if int(port) in ours:
            seen.append(int(port))
            assert ipaddress.ip_address(addr.strip("[]")).is_loopback, spec
    assert set(seen) == ours


@pytest.mark.parametrize("name", list(DEFAULT_PORTS))
def test_port_answers_on_every_lab_address(docker_lab, ports, name):
    for host in docker_lab["hosts"]:
        with socket.create_connection((host, ports[name]), timeout=5):
            pass


def test_maildir_root_belongs_to_vmail(mailbox):
    d = mailbox.file("/var/vmail")
    assert d.is_directory
    assert d.user == "vmail"
