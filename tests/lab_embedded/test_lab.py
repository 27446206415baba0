"""The embedded lab as a whole: lifecycle, describe(), hooks, IPv6, CLI."""

from __future__ import annotations

import gc
import json
import logging
import os
import poplib
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Optional

import pytest

from lab.embedded import DEFAULT_ACCOUNTS, EmbeddedLab, VARIANTS

from .helpers import SENDER, message, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
EXPECTED_PORTS = {
    "smtp", "smtp_tls", "smtp_plain", "smtp_badcert", "smtp_wrongname",
    "smtp_expired", "smtp_selfsigned",
    "pop3", "pop3_tls", "pop3_plain", "pop3_noapop", "pop3_badcert",
    "pop3_wrongname", "pop3_expired", "pop3_selfsigned",
    "imap", "imap_tls", "imap_plain", "imap_badcert", "imap_wrongname",
    "imap_expired", "imap_selfsigned", "imap_nospecialuse", "imap_noidle",
    "imap_noexpunge", "imap_idle_never",
}


def _ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_describe(lab: EmbeddedLab) -> None:
    info = json.loads(json.dumps(lab.describe()))
    assert info["host"] == "127.0.0.1" == lab.host
    assert info["domain"] == "lab.test" == lab.domain
    assert set(info["ports"]) == EXPECTED_PORTS == {v.name for v in VARIANTS}
    assert len(set(info["ports"].values())) == len(EXPECTED_PORTS)
    assert Path(info["ca_path"]).read_text().startswith(
        "-----BEGIN CERTIFICATE-----")
    assert {a["username"]: a["password"] for a in info["accounts"]} == \
        DEFAULT_ACCOUNTS
    assert {"username": "alice", "password": "alice-secret-1",
            "address": "alice@lab.test"} in info["accounts"]
    assert DEFAULT_ACCOUNTS["rt05"] == "rt05-pass"


def test_custom_accounts_and_domain() -> None:
    with EmbeddedLab(accounts={"carol": "pw"}, domain="example.test") as lab:
        assert lab.describe()["accounts"] == [
            {"username": "carol", "password": "pw",
             "address": "carol@example.test"}]
        with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
            client.sendmail(SENDER, ["carol@example.test"], message("hi"))
        assert len(lab.store.messages("carol")) == 1


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "localhost", "::"])
def test_only_loopback_hosts(host: str) -> None:
    with pytest.raises(ValueError):
        EmbeddedLab(host=host)


def test_stop_is_idempotent_and_frees_ports() -> None:
    lab = EmbeddedLab().start()
    port = lab.ports["pop3"]
    ca_path = Path(lab.ca_path or "")
    lab.stop()
    lab.stop()
    assert not lab.running and lab.ports == {} and lab.ca_path is None
    assert not ca_path.exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_loopback() -> None:
    with EmbeddedLab(host="::1") as lab:
        assert lab.describe()["host"] == "::1"
        ctx = ssl.create_default_context(cafile=lab.ca_path)
        with smtplib.SMTP("::1", lab.ports["smtp"], timeout=5) as client:
            client.starttls(context=ctx)
            client.sendmail(SENDER, ["rt01@lab.test"], message("v6"))
        pop = poplib.POP3_SSL("::1", lab.ports["pop3_tls"], timeout=5,
                              context=ctx)
        pop.user("rt01")
        pop.pass_("rt01-pass")
        assert pop.stat()[0] == 1
        pop.quit()
        with pytest.raises(ssl.SSLCertVerificationError):
            poplib.POP3_SSL("::1", lab.ports["pop3_wrongname"], timeout=5,
                            context=ctx)


def test_hooks_override_commands() -> None:
    async def refuse_starttls(conn: object, arg: Optional[str]) -> bool:
        await conn.push("454 4.7.0 TLS not available")  # type: ignore
        return True

    async def fail_dele(conn: object, arg: Optional[str]) -> bool:
        await conn.push("-ERR [SYS/TEMP] injected")  # type: ignore
        return True

    async def passthrough(conn: object, arg: Optional[str]) -> bool:
        return False

    hooks = {"smtp": {"STARTTLS": refuse_starttls, "NOOP": passthrough},
             "pop3": {"DELE": fail_dele, "STAT": passthrough}}
    with EmbeddedLab(hooks=hooks) as lab:
        lab.store.add("alice", message("stuck"))
        with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
            assert client.noop()[0] == 250
            with pytest.raises(smtplib.SMTPResponseException) as err:
                client.starttls()
            assert err.value.smtp_code == 454
        pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
        pop.user("alice")
        pop.pass_("alice-secret-1")
        assert pop.stat()[0] == 1
        with pytest.raises(poplib.error_proto, match="injected"):
            pop.dele(1)
        pop.quit()
        # Other variants keep the built-in behaviour.
        pop = poplib.POP3(lab.host, lab.ports["pop3_plain"], timeout=5)
        pop.user("alice")
        pop.pass_("alice-secret-1")
        assert pop.dele(1).startswith(b"+OK")
        pop.quit()


def test_connect_hook_replaces_greeting() -> None:
    async def reject(conn: object, arg: Optional[str]) -> bool:
        await conn.push("554 5.3.2 go away")  # type: ignore
        conn.transport.close()  # type: ignore
        return True

    with EmbeddedLab(hooks={"smtp_plain": {"CONNECT": reject}}) as lab:
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP(lab.host, lab.ports["smtp_plain"], timeout=5)
        assert err.value.smtp_code == 554


def test_hooks_for_unknown_variant_rejected() -> None:
    with pytest.raises(ValueError):
        EmbeddedLab(hooks={"nntp": {}})


def test_clean_shutdown_with_open_sessions(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="asyncio")
    lab = EmbeddedLab().start()
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    smtp = smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5)
    smtp.starttls(context=ctx)
    smtp.mail(SENDER)
    pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
    pop.stls(context=ctx)
    pop.user("alice")
    pop.pass_("alice-secret-1")
    assert lab.store.is_locked("alice")
    idle = socket.create_connection((lab.host, lab.ports["pop3_tls"]))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lab.stop()
        gc.collect()
    for sock in (smtp.sock, pop.sock, idle):
        sock.close()
    assert not lab.running
    assert not lab.store.is_locked("alice")
    assert [str(w.message) for w in caught
            if issubclass(w.category, (ResourceWarning, RuntimeWarning))] == []
    assert [r.getMessage() for r in caplog.records
            if r.name == "asyncio"] == []


def test_rejected_tls_upgrades_end_quietly(
        lab: EmbeddedLab, caplog: pytest.LogCaptureFixture) -> None:
    # A client that does not trust the certificate aborts the handshake:
    # routine for a lab, so nothing at WARNING or above may be logged.
    caplog.set_level(logging.WARNING)
    assert lab.certs is not None
    rogue = ssl.create_default_context(cafile=str(lab.certs.rogue_ca_path))
    smtp = smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        smtp.starttls(context=rogue)
    smtp.close()
    pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        pop.stls(context=rogue)
    pop.sock.close()
    pop.file.close()
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(lab.host, lab.ports["pop3_tls"], timeout=5,
                        context=rogue)
    # The listeners still serve afterwards.
    assert poplib.POP3(lab.host, lab.ports["pop3"], timeout=5).quit()
    lab.stop()
    assert [r.getMessage() for r in caplog.records] == []


def test_accounts_added_while_running(lab: EmbeddedLab) -> None:
    lab.store.add_account("dave", "dave-pw")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.sendmail(SENDER, ["dave@lab.test"], message("new"))
    pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
    pop.apop("dave", "dave-pw")
    assert pop.stat()[0] == 1
    pop.quit()
    assert {"username": "dave", "password": "dave-pw",
            "address": "dave@lab.test"} in lab.describe()["accounts"]


def test_restart_after_stop() -> None:
    lab = EmbeddedLab()
    with lab:
        lab.store.add("bob", message("kept"))
        first_ca = lab.ca_path
    with lab:
        assert lab.ca_path != first_ca  # fresh CA per start
        pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
        pop.user("bob")
        pop.pass_("bob-secret-2")
        assert pop.stat()[0] == 1  # the store outlives a restart
        pop.quit()


def test_main_runs_until_sigterm(tmp_path: Path) -> None:
    describe_file = tmp_path / "lab.json"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with subprocess.Popen(
            [sys.executable, "-m", "lab.embedded", "--describe-file",
             str(describe_file)],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            # Then one line per listener and the CA line.  (Read here: the
            # text wrapper buffers them, and communicate() bypasses it.)
            human = [proc.stdout.readline()
                     for _attempt in range(len(info["ports"]) + 1)]
            assert json.loads(describe_file.read_text()) == info
            assert set(info["ports"]) == EXPECTED_PORTS
            assert {line.split()[0] for line in human[:-1]} == EXPECTED_PORTS
            assert human[-1] == f"CA: {info['ca_path']}\n"
            with smtplib.SMTP(info["host"], info["ports"]["smtp"],
                              timeout=5) as client:
                client.sendmail(SENDER, ["alice@lab.test"], message("cli"))
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert out == "" and "Traceback" not in err
    assert not Path(info["ca_path"]).exists()  # temp dir cleaned up


def test_lock_released_when_tls_client_vanishes(
        lab: EmbeddedLab, ca_ctx: ssl.SSLContext) -> None:
    pop = poplib.POP3_SSL(lab.host, lab.ports["pop3_tls"], timeout=5,
                          context=ca_ctx)
    pop.user("rt02")
    pop.pass_("rt02-pass")
    assert lab.store.is_locked("rt02")
    pop.close()  # no QUIT, no TLS close_notify
    wait_until(lambda: not lab.store.is_locked("rt02"))
