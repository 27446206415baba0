"""Processes and listeners inside the containers (testinfra, docker backend by id),
and the ports as seen from the host."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from lab.docker.config import DEFAULT_PORTS, PORTS

MTA_PORTS = [n for n, p in PORTS.items() if p.owner == "mta"]
MAILBOX_PORTS = [n for n, p in PORTS.items() if p.owner == "mailbox"]
OUTSIDE_PORTS = [n for n, p in PORTS.items() if p.owner == "outside"]
LAB_ADDRESS_PORTS = [n for n, p in PORTS.items() if p.address == "lab"]


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


@pytest.mark.parametrize("daemon,count", [("opendkim", 2), ("opendmarc", 1)])
def test_milters_run(mta, daemon, count):
    # OpenDKIM twice: a signer for the submission ports, a verifier for inbound mail.
    assert len(mta.process.filter(comm=daemon)) >= count


def test_outside_provider_runs(outside):
    assert outside.process.filter(comm="master"), "no postfix master"
    assert outside.process.filter(comm="unbound"), "no unbound"
    out = outside.run("postfix check && postconf -h myhostname virtual_alias_domains relay_domains")
    assert out.rc == 0, out.stderr
    assert out.stdout.split() == ["mx.outside.test", "outside.test", "bounce.test"]


@pytest.mark.parametrize("name", OUTSIDE_PORTS)
def test_outside_port_listening_in_container(outside, docker_lab, ports, name):
    host = docker_lab["port_kinds"][name]["host"]
    assert outside.socket(f"tcp://{host}:{ports[name]}").is_listening


def test_resolver_listening_in_container(outside, docker_lab):
    resolver = docker_lab["resolver"]
    for proto in ("tcp", "udp"):
        assert outside.socket(f"{proto}://{resolver['host']}:{resolver['port']}").is_listening


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


def test_listeners_are_loopback_only(mailbox, docker_lab, ports):
    # Host networking: the container sees every listener of the machine.
    ours = set(ports.values()) | {docker_lab["resolver"]["port"]}
    seen = []
    for spec in mailbox.socket.get_listening_sockets():
        if not spec.startswith(("tcp://", "udp://")):
            continue
        addr, _sep, port = spec.split("://", 1)[1].rpartition(":")
        if int(port) in ours:
            seen.append(int(port))
            assert ipaddress.ip_address(addr.strip("[]")).is_loopback, spec
    assert set(seen) == ours


@pytest.mark.parametrize("name", LAB_ADDRESS_PORTS)
def test_port_answers_on_every_lab_address(docker_lab, ports, name):
    for host in docker_lab["hosts"]:
        with socket.create_connection((host, ports[name]), timeout=5):
            pass


@pytest.mark.parametrize("name", sorted(set(DEFAULT_PORTS) - set(LAB_ADDRESS_PORTS)))
def test_outside_port_answers_on_its_address(docker_lab, ports, name):
    with socket.create_connection((docker_lab["port_kinds"][name]["host"], ports[name]), timeout=5) as s:
        s.settimeout(5)
        assert s.recv(64).startswith(b"220 mx.outside.test")


def test_maildir_root_belongs_to_vmail(mailbox):
    d = mailbox.file("/var/vmail")
    assert d.is_directory
    assert d.user == "vmail"
