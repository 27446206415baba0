"""Named faults of the embedded lab: each one really happens on the wire.

One test per fault (or per family of faults), with stdlib clients: smtplib,
poplib, socket, ssl.  Small ``:secs`` values keep the timed ones fast.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import logging
import os
import poplib
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from cryptography import x509

from lab.embedded import EmbeddedLab
from lab.embedded import __main__ as lab_main
from lab.embedded.faults import FAULTS, GARBAGE, parse

from .helpers import SENDER, RawClient, message, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
HOSTNAME = "mail.lab.test"

# The names other tests rely on: a contract, so spelt out here again.
CONTRACT = {
    "silent", "slow_banner", "trickle", "garbage",
    "banner_554", "banner_multiline", "drop_after_ehlo", "starttls_454",
    "starttls_last", "auth_535", "mail_451", "mail_550", "rcpt_550",
    "data_552", "drop_in_data", "421_ehlo", "421_starttls", "421_auth",
    "421_mail", "421_rcpt", "421_data", "421_quit", "deliver_twice",
    "deliver_never", "deliver_late", "bounce", "paths_pass", "dkim_fail", "open_relay",
    "banner_err", "no_capa", "stls_err", "user_err", "pass_err", "apop_err",
    "locked", "stat_malformed", "no_uidl", "no_top", "retr_truncated",
    "dele_err", "quit_err", "quit_err_after_dele", "uidl_duplicate",
    "drop_at_quit", "echo_secrets",
    # IMAP (tested in test_imap.py)
    "greeting_bye", "preauth", "login_no", "login_bad", "authenticate_no",
    "untagged_before_tagged", "wrong_tag", "literal_lies", "literal_short",
    "idle_never_ends", "idle_no_push", "idle_late", "inject_after_starttls",
    "expunge_no", "store_no", "search_bad", "select_no", "bye_mid_session",
    # OAuth, on a lab with an OAuth key (tested in tests/unit/test_oauth_lab.py)
    "oauth_echo_token", "oauth_no_challenge", "oauth_bad_challenge",
}

StartLab = Callable[..., EmbeddedLab]


@pytest.fixture(autouse=True)
def quiet_lab(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """A fault is expected traffic: nothing at WARNING or above is logged.

    Autouse, so set up before (and torn down after) the labs below: the
    check also covers their shutdown.
    """
    caplog.set_level(logging.WARNING)
    yield
    assert [f"{r.name}: {r.getMessage()}" for r in caplog.records] == []


@pytest.fixture
def start_lab() -> Iterator[StartLab]:
    """start_lab(variant=[faults], ...) -> a running lab, stopped after."""
    labs: list[EmbeddedLab] = []

    def start(**faults: object) -> EmbeddedLab:
        lab = EmbeddedLab(faults=faults).start()  # type: ignore[arg-type]
        labs.append(lab)
        return lab

    yield start
    for lab in labs:
        lab.stop()


def _connect(lab: EmbeddedLab, variant: str,
             timeout: float = 5) -> socket.socket:
    return socket.create_connection((lab.host, lab.ports[variant]),
                                    timeout=timeout)


def _smtp_reply(raw: RawClient) -> list[bytes]:
    """One (possibly multi-line) SMTP reply, lines without CRLF."""
    lines = []
    while True:
        line = raw.line()
        if not line:
            raise AssertionError(f"connection closed after {lines!r}")
        lines.append(line.rstrip(b"\r\n"))
        if line[3:4] != b"-":
            return lines


def _pop3(lab: EmbeddedLab, variant: str = "pop3") -> poplib.POP3:
    return poplib.POP3(lab.host, lab.ports[variant], timeout=5)


def _pop3_login(lab: EmbeddedLab, user: str = "alice",
                variant: str = "pop3") -> poplib.POP3:
    pop = _pop3(lab, variant)
    pop.user(user)
    pop.pass_(lab.accounts[user])
    return pop


def _send(lab: EmbeddedLab, subject: str, variant: str = "smtp",
          rcpt: str = "alice@lab.test") -> None:
    with smtplib.SMTP(lab.host, lab.ports[variant], timeout=5) as client:
        assert client.sendmail(SENDER, [rcpt], message(subject)) == {}


# -- the catalogue and the API ------------------------------------------------

def test_catalogue_is_the_contract() -> None:
    assert set(FAULTS) == CONTRACT
    for name, (protocol, description) in FAULTS.items():
        assert protocol in ("smtp", "pop3", "imap", "both", "any"), name
        assert description and "\n" not in description, name
    assert {n for n, (p, _d) in FAULTS.items() if p == "any"} == {
        "silent", "slow_banner", "trickle", "garbage", "oauth_echo_token",
        "oauth_no_challenge", "oauth_bad_challenge"}
    assert {n for n, (p, _d) in FAULTS.items() if p == "both"} == {
        "echo_secrets"}


def test_readme_has_a_row_per_fault() -> None:
    readme = (REPO_ROOT / "lab" / "embedded" / "README.md").read_text()
    rows = re.findall(r"^\| `([a-z0-9_]+)(?:\[:secs\])?` \| (\w+) \| (.*) \|$",
                      readme, re.MULTILINE)
    assert {name: (protocol, text) for name, protocol, text in rows
            if name in CONTRACT} == FAULTS


def test_parse_defaults_and_arguments() -> None:
    assert parse("slow_banner") == ("slow_banner", 5.0)
    assert parse("slow_banner:0.25") == ("slow_banner", 0.25)
    assert parse("deliver_late") == ("deliver_late", 3.0)
    assert parse("trickle") == ("trickle", 1.0)
    assert parse("locked") == ("locked", None)  # locked for good
    assert parse("locked:10") == ("locked", 10.0)
    assert parse("dele_err") == ("dele_err", None)


@pytest.mark.parametrize("faults, match", [
    ({"pop3": ["no_such_fault"]}, "unknown fault"),
    ({"nntp": ["silent"]}, "unknown variant"),
    ({"pop3": ["banner_554"]}, "for smtp"),
    ({"smtp": ["dele_err"]}, "for pop3"),
    ({"smtp": ["mail_451:3"]}, "takes no argument"),
    ({"smtp": ["slow_banner:soon"]}, "not a number"),
    ({"smtp": ["slow_banner:-1"]}, "not a number"),
    ({"smtp": ["slow_banner:nan"]}, "not a number"),
    ({"smtp": ["mail_451", "mail_550"]}, "both decide"),
    ({"smtp": ["silent", "banner_multiline"]}, "both decide"),
    ({"smtp": ["drop_in_data", "421_data"]}, "both decide"),
    ({"pop3": ["dele_err", "dele_err"]}, "given twice"),
    ({"pop3": ["no_uidl", "uidl_duplicate"]}, "both decide"),
    ({"pop3": ["quit_err", "drop_at_quit"]}, "both decide"),
    ({"smtp": ["banner_multiline", "echo_secrets"]}, "both decide"),
    ({"smtp_plain": ["starttls_454"]}, "STARTTLS"),
    ({"smtp_tls": ["starttls_last"]}, "STARTTLS"),
    ({"pop3_tls": ["stls_err"]}, "STARTTLS"),
    ({"pop3": [3]}, "string"),
])
def test_bad_faults_raise_value_error(faults: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmbeddedLab(faults=faults)


def test_describe_lists_faults(start_lab: StartLab) -> None:
    lab = start_lab(pop3="dele_err", smtp=["slow_banner:0", "mail_451"])
    assert lab.describe()["faults"] == {
        "pop3": ["dele_err"], "smtp": ["slow_banner:0", "mail_451"]}
    assert json.loads(json.dumps(lab.describe()))["faults"]["pop3"] == [
        "dele_err"]


def test_faults_compose_with_user_hooks() -> None:
    seen: list[Optional[str]] = []

    async def watch(conn: object, arg: Optional[str]) -> bool:
        seen.append(arg)
        return False  # fall through: the fault answers

    async def allow_msg_2(conn: object, arg: Optional[str]) -> bool:
        if arg == "2":
            await conn.push("+OK user hook says deleted")  # type: ignore
            return True
        return False

    with EmbeddedLab(faults={"pop3": ["dele_err"]},
                     hooks={"pop3": {"DELE": watch, "RETR": watch}}) as lab:
        lab.store.add("alice", message("one"))
        pop = _pop3_login(lab)
        try:
            with pytest.raises(poplib.error_proto, match="message locked"):
                pop.dele(1)
            assert pop.retr(1)[0].startswith(b"+OK")  # no fault on RETR
        finally:
            pop.quit()
        assert seen == ["1", "1"]
    with EmbeddedLab(faults={"pop3": ["dele_err"]},
                     hooks={"pop3": {"DELE": allow_msg_2}}) as lab:
        lab.store.add("alice", message("one"))
        lab.store.add("alice", message("two"))
        pop = _pop3_login(lab)
        try:
            assert pop.dele(2) == b"+OK user hook says deleted"
            with pytest.raises(poplib.error_proto, match="message locked"):
                pop.dele(1)
        finally:
            pop.quit()


def test_faults_compose_with_each_other(start_lab: StartLab) -> None:
    lab = start_lab(smtp=["slow_banner:0.1", "trickle:0.001",
                          "banner_multiline", "starttls_last",
                          "deliver_twice", "deliver_late:0.05"])
    begin = time.monotonic()
    with RawClient(lab.host, lab.ports["smtp"]) as raw:
        assert time.monotonic() - begin >= 0.1
        assert raw.greeting == f"220-{HOSTNAME} ESMTP\r\n".encode()
        assert raw.line() == b"220-second line\r\n"
        assert raw.line() == b"220 ready\r\n"
        raw.send("EHLO client.test")
        assert _smtp_reply(raw)[-1] == b"250 STARTTLS"
        raw.send("QUIT")
        assert _smtp_reply(raw)[0].startswith(b"221")
    _send(lab, "composed")
    wait_until(lambda: len(lab.store.messages("alice")) == 2)


def test_other_variants_unaffected(start_lab: StartLab) -> None:
    lab = start_lab(smtp="mail_550", pop3="dele_err")
    _send(lab, "fine", variant="smtp_plain")
    pop = _pop3_login(lab, variant="pop3_plain")
    try:
        assert pop.dele(1).startswith(b"+OK")
    finally:
        pop.quit()


def test_cli_fault_option(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    with subprocess.Popen(
            [sys.executable, "-m", "lab.embedded", "--fault", "pop3=dele_err",
             "--fault", "smtp=banner_554", "--fault", "pop3=no_top"],
            cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None
            info = json.loads(proc.stdout.readline())
            assert info["faults"] == {"pop3": ["dele_err", "no_top"],
                                      "smtp": ["banner_554"]}
            # Read here: communicate() bypasses the text wrapper's buffer.
            human = [proc.stdout.readline()
                     for _attempt in range(len(info["ports"]) + 1)]
            assert [line for line in human if "faults:" in line] == [
                f"smtp             {info['host']}:{info['ports']['smtp']}"
                "  faults: banner_554\n",
                f"pop3             {info['host']}:{info['ports']['pop3']}"
                "  faults: dele_err no_top\n"]
            with pytest.raises(smtplib.SMTPConnectError) as err:
                smtplib.SMTP(info["host"], info["ports"]["smtp"], timeout=5)
            assert err.value.smtp_code == 554
            proc.send_signal(signal.SIGTERM)
            out, err_text = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err_text
    assert out == "" and "Traceback" not in err_text


@pytest.mark.parametrize("argv, message_part", [
    (["--fault", "pop3"], "VARIANT=FAULT"),
    (["--fault", "pop3=nope"], "unknown fault"),
    (["--fault", "smtp=dele_err"], "for pop3"),
])
def test_cli_rejects_bad_faults(argv: list[str], message_part: str,
                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        lab_main.main(argv)
    assert exit_info.value.code == 2
    assert message_part in capsys.readouterr().err


def test_cli_lists_faults(capsys: pytest.CaptureFixture[str]) -> None:
    assert lab_main.main(["--list-faults"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines()}
    assert listed == CONTRACT


# -- both protocols -------------------------------------------------------------

@pytest.mark.parametrize("variant", ["smtp", "pop3"])
def test_silent(start_lab: StartLab, variant: str) -> None:
    lab = start_lab(**{variant: ["silent"]})
    with _connect(lab, variant, timeout=0.15) as sock:
        with pytest.raises(socket.timeout):
            sock.recv(100)  # nothing, and not closed either
        sock.settimeout(5)
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(100) == b""  # the server hangs up in turn


@pytest.mark.parametrize("variant, client", [
    ("smtp", lambda lab: smtplib.SMTP(lab.host, lab.ports["smtp"],
                                      timeout=5)),
    ("pop3", _pop3),
])
def test_slow_banner(start_lab: StartLab, variant: str,
                     client: Callable[[EmbeddedLab], object]) -> None:
    lab = start_lab(**{variant: ["slow_banner:0.2"]})
    begin = time.monotonic()
    conn = client(lab)
    assert time.monotonic() - begin >= 0.2
    conn.quit()  # type: ignore[attr-defined]


def test_trickle_one_byte_per_second(start_lab: StartLab) -> None:
    lab = start_lab(pop3="trickle")
    with _connect(lab, "pop3") as sock:
        assert sock.recv(100) == b"+"
        begin = time.monotonic()
        assert sock.recv(100) == b"O"
        assert 0.8 <= time.monotonic() - begin < 2


def test_trickle_fast_still_works(start_lab: StartLab) -> None:
    lab = start_lab(smtp="trickle:0.002")
    with _connect(lab, "smtp") as sock:
        assert len(sock.recv(100)) == 1
    _send(lab, "trickled")
    assert len(lab.store.messages("alice")) == 1


@pytest.mark.parametrize("variant", ["smtp", "pop3_plain"])
def test_garbage(start_lab: StartLab, variant: str) -> None:
    lab = start_lab(**{variant: ["garbage"]})
    assert len(GARBAGE) == 300
    assert b"\r" not in GARBAGE and b"\n" not in GARBAGE
    assert min(GARBAGE) >= 0x80  # not text
    for attempt in range(2):  # the same bytes every time
        with _connect(lab, variant, timeout=5) as sock:
            data = b""
            while len(data) < 300:
                chunk = sock.recv(400)
                assert chunk
                data += chunk
            assert data == GARBAGE
            if attempt == 0:
                sock.settimeout(0.1)
                with pytest.raises(socket.timeout):
                    sock.recv(100)  # kept open, nothing more
    # "Garbage instead of a TLS handshake".
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    with _connect(lab, variant) as sock:
        with pytest.raises(ssl.SSLError) as err:
            ctx.wrap_socket(sock, server_hostname=lab.host)
        assert not isinstance(err.value, ssl.SSLCertVerificationError)


# -- SMTP -------------------------------------------------------------------------

def test_banner_554(start_lab: StartLab) -> None:
    lab = start_lab(smtp="banner_554")
    with pytest.raises(smtplib.SMTPConnectError) as err:
        smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5)
    assert err.value.smtp_code == 554
    assert err.value.smtp_error == \
        f"5.3.2 {HOSTNAME} no SMTP service here".encode()
    # RFC 5321: then 503 to everything but QUIT.
    with RawClient(lab.host, lab.ports["smtp"]) as raw:
        assert raw.greeting == \
            f"554 5.3.2 {HOSTNAME} no SMTP service here\r\n".encode()
        assert raw.cmd("EHLO client.test").startswith(b"503 ")
        assert raw.cmd("QUIT").startswith(b"221 ")
        assert raw.line() == b""


def test_banner_multiline(start_lab: StartLab) -> None:
    lab = start_lab(smtp="banner_multiline")
    with RawClient(lab.host, lab.ports["smtp"]) as raw:
        assert [raw.greeting, raw.line(), raw.line()] == [
            f"220-{HOSTNAME} ESMTP\r\n".encode(), b"220-second line\r\n",
            b"220 ready\r\n"]
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        assert client.ehlo()[0] == 250
    _send(lab, "multiline banner")  # a success case
    assert len(lab.store.messages("alice")) == 1


@pytest.mark.parametrize("command", ["ehlo", "helo"])
def test_drop_after_ehlo(start_lab: StartLab, command: str) -> None:
    lab = start_lab(smtp="drop_after_ehlo")
    client = smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5)
    with pytest.raises(smtplib.SMTPServerDisconnected):
        getattr(client, command)()
    client.close()


def test_starttls_454(start_lab: StartLab) -> None:
    lab = start_lab(smtp="starttls_454")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")  # still advertised
        with pytest.raises(smtplib.SMTPResponseException) as err:
            client.starttls()
        assert err.value.smtp_code == 454
        assert err.value.smtp_error == \
            b"4.7.0 TLS not available due to local problem"


def test_starttls_last(start_lab: StartLab) -> None:
    lab = start_lab(smtp="starttls_last")
    with RawClient(lab.host, lab.ports["smtp"]) as raw:
        raw.send("EHLO client.test")
        reply = _smtp_reply(raw)
        assert reply[-1] == b"250 STARTTLS"
        assert all(line.startswith(b"250-") for line in reply[:-1])
        assert b"250-HELP" in reply and b"250-STARTTLS" not in reply
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls") and client.has_extn("auth")
        assert client.starttls(context=ctx)[0] == 220  # still works
        client.ehlo()
        assert not client.has_extn("starttls")
        client.sendmail(SENDER, ["alice@lab.test"], message("over tls"))
    assert len(lab.store.messages("alice")) == 1


@pytest.mark.parametrize("mechanism, initial_response", [
    ("PLAIN", True), ("PLAIN", False), ("LOGIN", False), ("CRAM-MD5", False),
])
def test_auth_535(start_lab: StartLab, mechanism: str,
                  initial_response: bool) -> None:
    lab = start_lab(smtp="auth_535")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        client.user, client.password = "alice", "alice-secret-1"  # right!
        method = getattr(client,
                         "auth_" + mechanism.lower().replace("-", "_"))
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            client.auth(mechanism, method,
                        initial_response_ok=initial_response)
        assert err.value.smtp_code == 535
        assert err.value.smtp_error == \
            b"5.7.8 Authentication credentials invalid"


@pytest.mark.parametrize("fault, code, enhanced", [
    ("mail_451", 451, b"4.3.0 "), ("mail_550", 550, b"5.7.1 "),
])
def test_mail_rejected(start_lab: StartLab, fault: str, code: int,
                       enhanced: bytes) -> None:
    lab = start_lab(smtp=fault)
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        reply = client.mail(SENDER)
        assert reply[0] == code and reply[1].startswith(enhanced)
        with pytest.raises(smtplib.SMTPSenderRefused):
            client.sendmail(SENDER, ["alice@lab.test"], message("no"))
    assert lab.store.messages("alice") == []


def test_rcpt_550(start_lab: StartLab) -> None:
    lab = start_lab(smtp="rcpt_550")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt("alice@lab.test")  # a known mailbox
        assert code == 550 and text.startswith(b"5.1.1 ")


def test_data_552(start_lab: StartLab) -> None:
    lab = start_lab(smtp="data_552")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("alice@lab.test")
        # smtplib sends the whole message and the final "." before reading.
        assert client.data(message("too big")) == (
            552, b"5.3.4 Message size exceeds fixed limit")
        assert client.noop()[0] == 250  # the session goes on
    assert lab.store.messages("alice") == []


def test_drop_in_data(start_lab: StartLab) -> None:
    lab = start_lab(smtp="drop_in_data")
    client = smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5)
    client.ehlo()
    client.mail(SENDER)
    client.rcpt("alice@lab.test")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.data(message("cut", "x" * 200 + "\r\n"))
    client.close()
    time.sleep(0.05)
    assert lab.store.messages("alice") == []


def _auth_plain() -> str:
    token = base64.b64encode(b"\0alice\0alice-secret-1").decode()
    return f"AUTH PLAIN {token}"


# Commands to send before the one that gets 421, then that one.
STEPS_TO_421 = {
    "ehlo": ([], "EHLO client.test"),
    "starttls": (["EHLO client.test"], "STARTTLS"),
    "auth": (["EHLO client.test"], _auth_plain()),
    "mail": (["EHLO client.test"], f"MAIL FROM:<{SENDER}>"),
    "rcpt": (["EHLO client.test", f"MAIL FROM:<{SENDER}>"],
             "RCPT TO:<alice@lab.test>"),
    "data": (["EHLO client.test", f"MAIL FROM:<{SENDER}>",
              "RCPT TO:<alice@lab.test>"], "DATA"),
    "quit": (["EHLO client.test"], "QUIT"),
}


@pytest.mark.parametrize("command", sorted(STEPS_TO_421))
def test_421(start_lab: StartLab, command: str) -> None:
    lab = start_lab(smtp=f"421_{command}")
    before, last = STEPS_TO_421[command]
    with RawClient(lab.host, lab.ports["smtp"]) as raw:
        assert raw.greeting.startswith(b"220 ")
        for step in before:
            raw.send(step)
            assert _smtp_reply(raw)[-1][:1] == b"2"
        assert raw.cmd(last) == \
            f"421 4.3.2 {HOSTNAME} service shutting down\r\n".encode()
        assert raw.line() == b""  # and closed


def test_421_ehlo_covers_helo(start_lab: StartLab) -> None:
    lab = start_lab(smtp="421_ehlo")
    client = smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5)
    code, text = client.helo()
    assert code == 421 and b"service shutting down" in text
    client.close()


def test_deliver_twice(start_lab: StartLab) -> None:
    lab = start_lab(smtp="deliver_twice")
    _send(lab, "twice")
    first, second = lab.store.messages("alice")
    assert first.data == second.data and first.uid != second.uid
    pop = _pop3_login(lab)
    try:
        assert pop.stat()[0] == 2
        uids = [line.split()[1] for line in pop.uidl()[1]]
        assert len(set(uids)) == 2
    finally:
        pop.quit()


def test_deliver_never(start_lab: StartLab) -> None:
    lab = start_lab(smtp="deliver_never")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("alice@lab.test")
        code, text = client.data(message("lost"))
        assert code == 250 and b"queued" in text
    time.sleep(0.1)
    assert lab.store.messages("alice") == []


def test_deliver_late(start_lab: StartLab) -> None:
    lab = start_lab(smtp="deliver_late:0.3")
    begin = time.monotonic()
    _send(lab, "late")
    assert lab.store.messages("alice") == []
    wait_until(lambda: len(lab.store.messages("alice")) == 1)
    assert time.monotonic() - begin >= 0.3


def test_bounce_goes_back_to_the_sender(start_lab: StartLab) -> None:
    lab = start_lab(smtp="bounce")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.sendmail("bob@lab.test", ["alice@lab.test"], message("returned"))
    assert lab.store.messages("alice") == []
    dsn, = lab.store.messages("bob")
    assert b"report-type=delivery-status" in dsn.data and b"Status: 5.1.1" in dsn.data
    assert b"Subject: returned" in dsn.data  # the returned headers


@pytest.mark.parametrize("fault, verdicts", [("paths_pass", b"dkim=pass"), ("dkim_fail", b"dkim=fail")])
def test_stamps_a_path_and_verdicts(start_lab: StartLab, fault: str, verdicts: bytes) -> None:
    lab = start_lab(smtp=fault)
    _send(lab, "stamped")
    stored, = lab.store.messages("alice")
    head = stored.data.split(b"\r\n\r\n", 1)[0]
    assert head.count(b"\r\nReceived: from ") == 3
    assert head.startswith(b"Authentication-Results: mx.lab.test; spf=pass") and verdicts in head


def test_open_relay_accepts_strangers(start_lab: StartLab) -> None:
    lab = start_lab(smtp="open_relay")
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt("relay-test@elsewhere.test")[0] == 250
        assert client.rcpt("alice@lab.test")[0] == 250
        assert client.data(message("relayed"))[0] == 250
    assert len(lab.store.messages("alice")) == 1


def test_deliver_late_dropped_when_lab_stops(start_lab: StartLab) -> None:
    lab = start_lab(smtp="deliver_late:0.1")
    _send(lab, "never seen")
    lab.stop()
    time.sleep(0.15)
    assert lab.store.messages("alice") == []


# -- POP3 ---------------------------------------------------------------------------

def test_banner_err(start_lab: StartLab) -> None:
    lab = start_lab(pop3="banner_err")
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        assert raw.greeting == b"-ERR [SYS/TEMP] server unavailable\r\n"
        assert raw.line() == b""  # and closed


def test_no_capa(start_lab: StartLab) -> None:
    lab = start_lab(pop3="no_capa")
    pop = _pop3(lab)
    try:
        with pytest.raises(poplib.error_proto):
            pop.capa()
    finally:
        pop.quit()
    # STLS still works when sent (poplib.stls() would ask CAPA first).
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        assert raw.cmd("CAPA") == b"-ERR unknown command\r\n"
        assert raw.cmd("STLS").startswith(b"+OK")
        raw.file.close()
        raw.sock = ctx.wrap_socket(raw.sock, server_hostname=lab.host)
        raw.file = raw.sock.makefile("rb")
        assert raw.cmd("USER alice").startswith(b"+OK")
        assert raw.cmd("PASS alice-secret-1").startswith(b"+OK")
        assert raw.cmd("QUIT").startswith(b"+OK")


def test_stls_err(start_lab: StartLab) -> None:
    lab = start_lab(pop3="stls_err")
    pop = _pop3(lab)
    try:
        assert "STLS" in pop.capa()  # listed...
        with pytest.raises(poplib.error_proto, match="TLS not available"):
            pop.stls(ssl.create_default_context(cafile=lab.ca_path))
        pop.user("alice")  # ...and the session goes on in plaintext
        pop.pass_("alice-secret-1")
    finally:
        pop.quit()


@pytest.mark.parametrize("fault", ["user_err", "pass_err", "apop_err"])
def test_auth_command_errors(start_lab: StartLab, fault: str) -> None:
    lab = start_lab(pop3=fault)
    pop = _pop3(lab)
    try:
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
            if fault == "user_err":
                pop.user("alice")
            elif fault == "pass_err":
                pop.user("alice")
                pop.pass_("alice-secret-1")
            else:
                pop.apop("alice", "alice-secret-1")
        assert not lab.store.is_locked("alice")
    finally:
        pop.quit()


def test_locked(start_lab: StartLab) -> None:
    lab = start_lab(pop3="locked")
    pop = _pop3(lab)
    try:
        pop.user("alice")
        with pytest.raises(poplib.error_proto) as err:
            pop.pass_("wrong")
        assert b"[AUTH]" in err.value.args[0]  # bad passwords stay bad
        pop.user("alice")
        with pytest.raises(poplib.error_proto) as err:
            pop.pass_("alice-secret-1")
        assert err.value.args[0] == \
            b"-ERR [IN-USE] mailbox locked by another session"
        with pytest.raises(poplib.error_proto, match=r"IN-USE"):
            pop.apop("alice", "alice-secret-1")
        # Still in AUTHORIZATION: USER is accepted, STAT is not.
        assert pop.user("bob").startswith(b"+OK")
        with pytest.raises(poplib.error_proto, match="not valid"):
            pop.stat()
        assert not lab.store.is_locked("alice")
    finally:
        pop.quit()


def test_locked_for_a_while(start_lab: StartLab) -> None:
    begin = time.monotonic()
    lab = start_lab(pop3="locked:0.5")
    pop = _pop3(lab)
    try:
        pop.user("alice")
        with pytest.raises(poplib.error_proto, match="IN-USE"):
            pop.pass_("alice-secret-1")
        time.sleep(max(0.0, begin + 0.55 - time.monotonic()))
        pop.user("alice")
        assert pop.pass_("alice-secret-1").startswith(b"+OK")
    finally:
        pop.quit()


def test_stat_malformed(start_lab: StartLab) -> None:
    lab = start_lab(pop3="stat_malformed")
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        assert raw.cmd("STAT").startswith(b"-ERR")  # not logged in yet
        raw.cmd("USER alice")
        assert raw.cmd("PASS alice-secret-1").startswith(b"+OK")
        assert raw.cmd("STAT") == b"+OK lots of mail\r\n"
        assert raw.cmd("QUIT").startswith(b"+OK")


@pytest.mark.parametrize("fault, capability", [
    ("no_uidl", "UIDL"), ("no_top", "TOP"),
])
def test_missing_commands(start_lab: StartLab, fault: str,
                          capability: str) -> None:
    lab = start_lab(pop3=fault)
    lab.store.add("alice", message("one"))
    pop = _pop3_login(lab)
    try:
        assert capability not in pop.capa()
        with pytest.raises(poplib.error_proto) as err:
            if capability == "UIDL":
                pop.uidl()
            else:
                pop.top(1, 0)
        assert err.value.args[0] == b"-ERR unknown command"
        assert pop.retr(1)[0].startswith(b"+OK")  # the rest works
    finally:
        pop.quit()


def test_retr_truncated(start_lab: StartLab) -> None:
    lab = start_lab(pop3="retr_truncated")
    lab.store.add("alice", b"Subject: cut\r\n\r\n1\r\n.2\r\n3\r\n4\r\n")
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        raw.cmd("USER alice")
        raw.cmd("PASS alice-secret-1")
        assert raw.cmd("RETR 1").startswith(b"+OK")
        # Six lines, three sent (byte-stuffed), no dot, then EOF.
        assert raw.multiline() == [b"Subject: cut\r\n", b"\r\n", b"1\r\n",
                                   b""]
    wait_until(lambda: not lab.store.is_locked("alice"))
    assert len(lab.store.messages("alice")) == 1
    pop = _pop3_login(lab)
    try:
        with pytest.raises(poplib.error_proto, match="EOF"):
            pop.retr(1)
    finally:
        pop.close()


def test_dele_err(start_lab: StartLab) -> None:
    lab = start_lab(pop3="dele_err")
    lab.store.add("alice", message("stays"))
    pop = _pop3_login(lab)
    try:
        with pytest.raises(poplib.error_proto) as err:
            pop.dele(1)
        assert err.value.args[0] == b"-ERR message locked"
    finally:
        pop.quit()
    assert len(lab.store.messages("alice")) == 1


def test_quit_err(start_lab: StartLab) -> None:
    lab = start_lab(pop3="quit_err")
    lab.store.add("alice", message("not deleted"))
    pop = _pop3_login(lab)
    try:
        assert pop.dele(1).startswith(b"+OK")
        with pytest.raises(poplib.error_proto) as err:
            pop.quit()
        assert err.value.args[0] == b"-ERR could not update maildrop"
        assert pop.file.readline() == b""  # closed
    finally:
        pop.close()
    wait_until(lambda: not lab.store.is_locked("alice"))
    assert len(lab.store.messages("alice")) == 1  # DELE not committed
    # QUIT before login still says goodbye normally.
    assert _pop3(lab).quit().startswith(b"+OK")


def test_uidl_duplicate(start_lab: StartLab) -> None:
    lab = start_lab(pop3="uidl_duplicate")
    lab.store.add("alice", message("one"))
    lab.store.add("alice", message("two"))
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        assert raw.cmd("UIDL").startswith(b"-ERR")  # not logged in yet
    pop = _pop3_login(lab)
    try:
        assert pop.uidl()[1] == [b"1 duplicate-uid", b"2 duplicate-uid"]
        assert pop.uidl(2) == b"+OK 2 duplicate-uid"
        with pytest.raises(poplib.error_proto, match="no such message"):
            pop.uidl(3)
        assert pop.dele(1).startswith(b"+OK")
        assert pop.uidl()[1] == [b"2 duplicate-uid"]  # the rest works
    finally:
        pop.quit()
    assert len(lab.store.messages("alice")) == 1


def test_drop_at_quit(start_lab: StartLab) -> None:
    lab = start_lab(pop3="drop_at_quit")
    lab.store.add("alice", message("deleted"))
    lab.store.add("alice", message("kept"))
    # A QUIT without DELE is answered.
    assert _pop3_login(lab).quit().startswith(b"+OK")
    wait_until(lambda: not lab.store.is_locked("alice"))
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        raw.cmd("USER alice")
        assert raw.cmd("PASS alice-secret-1").startswith(b"+OK")
        assert raw.cmd("DELE 1").startswith(b"+OK")
        assert raw.cmd("QUIT") == b""  # closed, no reply
    wait_until(lambda: not lab.store.is_locked("alice"))
    # ... and yet the deletion was committed.
    assert [m.data for m in lab.store.messages("alice")] == [
        message("kept")]


def _straddles(line: bytes, secret: str) -> bool:
    """secret sits across byte 65536 of line, its middle character on it."""
    start = 65536 - len(secret) // 2
    return line[start:start + len(secret)] == secret.encode()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _smtp_forms(user: str, password: str) -> list[str]:
    return [password, _b64(password), _b64(f"\0{user}\0{password}")]


def _assert_smtp_echo(reply: list[bytes], accounts: dict[str, str],
                      last: bytes) -> None:
    assert reply[-1] == last
    code = last[:3]
    assert all(line.startswith(code + b"-") for line in reply[:-1])
    for user, password in accounts.items():
        forms = " ".join(_smtp_forms(user, password))
        assert f"{code.decode()}-X-ECHO {user} {forms}".encode() in reply
        assert any(len(line) > 65536 and _straddles(line, password)
                   for line in reply)


def test_echo_secrets_smtp(start_lab: StartLab) -> None:
    lab = start_lab(smtp="echo_secrets")
    accounts = dict(lab.accounts)
    with RawClient(lab.host, lab.ports["smtp"]) as raw:
        greeting = [raw.greeting.rstrip(b"\r\n")] + _smtp_reply(raw)
        _assert_smtp_echo(greeting, accounts,
                          f"220 {HOSTNAME} ESMTP mailops embedded lab"
                          .encode())
        raw.send("EHLO client.test")
        ehlo = _smtp_reply(raw)
        _assert_smtp_echo(ehlo, accounts, b"250 HELP")
        assert b"250-STARTTLS" in ehlo  # the built-in lines are all there
        assert b"250-AUTH CRAM-MD5 LOGIN PLAIN" in ehlo
        payload = _b64("\0alice\0alice-secret-1")
        raw.send(f"AUTH PLAIN {payload}")
        _assert_smtp_echo(_smtp_reply(raw), accounts,
                          b"235 2.7.0 Authentication successful")
        raw.send(f"MAIL FROM:<{SENDER}>")
        assert _smtp_reply(raw)[-1] == b"250 OK"
        raw.send("RCPT TO:<bob@lab.test>")
        assert _smtp_reply(raw)[-1].startswith(b"250 ")
        raw.send("DATA")
        assert raw.line().startswith(b"354 ")  # one line: no echo here
        raw.sock.sendall(message("echoed") + b".\r\n")
        data_reply = _smtp_reply(raw)
        _assert_smtp_echo(data_reply, accounts, data_reply[-1])
        assert data_reply[-1].startswith(b"250 2.0.0 Ok: queued as ")
        raw.send(f"MAIL FROM:<{SENDER}>")
        _smtp_reply(raw)
        raw.send("RCPT TO:<nobody@lab.test>")
        _assert_smtp_echo(_smtp_reply(raw), accounts,  # errors too
                          b"550 5.1.1 <nobody@lab.test>: Recipient address "
                          b"rejected: User unknown")
        raw.send("QUIT")
        _assert_smtp_echo(_smtp_reply(raw), accounts, b"221 Bye")
    assert len(lab.store.messages("bob")) == 1
    # The STARTTLS go-ahead and the AUTH challenges stay single lines.
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    with RawClient(lab.host, lab.ports["smtp"]) as raw:
        _smtp_reply(raw)
        raw.send("EHLO client.test")
        _smtp_reply(raw)
        assert raw.cmd("STARTTLS") == b"220 Ready to start TLS\r\n"
        with ctx.wrap_socket(raw.sock, server_hostname=lab.host) as tls:
            tls.sendall(b"EHLO client.test\r\n")
            reader = tls.makefile("rb")
            ehlo = []
            while not ehlo or ehlo[-1][3:4] == b"-":
                ehlo.append(reader.readline().rstrip(b"\r\n"))
            _assert_smtp_echo(ehlo, accounts, b"250 HELP")
            assert b"250-STARTTLS" not in ehlo
            tls.sendall(b"AUTH LOGIN\r\n")
            assert reader.readline() == b"334 VXNlciBOYW1lAA==\r\n"
            reader.close()


def test_echo_secrets_pop3(start_lab: StartLab) -> None:
    lab = start_lab(pop3="echo_secrets")
    accounts = dict(lab.accounts)
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        timestamp = re.search(rb"<[^<>\s]+>", raw.greeting).group().decode()

        def digest(password: str) -> str:
            return hashlib.md5((timestamp + password).encode()).hexdigest()

        echo = " ".join(f"{password} {digest(password)}"
                        for _user, password in sorted(accounts.items()))
        assert raw.greeting == (f"+OK mailops embedded lab POP3 ready "
                                f"{timestamp} {echo}\r\n").encode()
        # No user known yet: the echo, but no long line.
        assert raw.cmd("NOOP") == f"-ERR command not valid in this state " \
                                  f"{echo} \r\n".encode()
        password = accounts["alice"]
        replies = [raw.cmd("USER alice"), raw.cmd(f"PASS {password}"),
                   raw.cmd("STAT"), raw.cmd("QUIT")]
    assert replies[0].startswith(f"+OK send PASS {echo} ~".encode())
    assert replies[1].startswith(b"+OK maildrop locked and ready, ")
    assert replies[2].startswith(f"+OK 0 0 {echo} ~".encode())
    assert replies[3].startswith(b"+OK bye (0 messages left) ")
    # The password and the digest in turn, across byte 65536.
    for reply, secret in zip(replies, [password, digest(password)] * 2):
        assert len(reply) > 65536 and reply.endswith(b"~\r\n")
        assert _straddles(reply, secret), reply[:60]
    # poplib copes with the echo on its own lines (not the long ones).
    lab = start_lab(pop3_noapop="echo_secrets")
    pop = _pop3(lab, "pop3_noapop")
    assert pop.getwelcome().endswith(
        " ".join(p for _u, p in sorted(accounts.items())).encode())
    pop.close()


def test_reply_hook() -> None:
    async def shout(conn: object, line: Optional[str]) -> bool:
        await conn.push_bytes(  # type: ignore[attr-defined]
            (line or "").upper().encode() + b"!\r\n")
        return True

    with EmbeddedLab(hooks={"pop3": {"REPLY": shout},
                            "smtp": {"REPLY": shout}}) as lab:
        with RawClient(lab.host, lab.ports["pop3"]) as raw:
            assert raw.greeting.startswith(b"+OK MAILOPS EMBEDDED LAB POP3")
            assert raw.greeting.endswith(b">!\r\n")
            # A pseudo command is no command a client can send.
            assert raw.cmd("REPLY x") == b"-ERR UNKNOWN COMMAND!\r\n"
            assert raw.cmd("GREETING") == b"-ERR UNKNOWN COMMAND!\r\n"
        with RawClient(lab.host, lab.ports["smtp"]) as raw:
            assert raw.greeting == \
                f"220 {HOSTNAME.upper()} ESMTP MAILOPS EMBEDDED LAB!\r\n" \
                .encode()
            assert raw.cmd("NOOP") == b"250 OK!\r\n"


# -- certificates -----------------------------------------------------------------

def _peer_cert(lab: EmbeddedLab, variant: str) -> x509.Certificate:
    pem = ssl.get_server_certificate((lab.host, lab.ports[variant]))
    return x509.load_pem_x509_certificate(pem.encode())


def _names(cert: x509.Certificate) -> set[str]:
    san = cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    return (set(san.get_values_for_type(x509.DNSName))
            | {str(a) for a in san.get_values_for_type(x509.IPAddress)})


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_expired_certificate(lab: EmbeddedLab, ca_ctx: ssl.SSLContext,
                             protocol: str) -> None:
    variant = f"{protocol}_expired"
    cert = _peer_cert(lab, variant)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_after_utc < now
    assert _names(cert) == {"localhost", "127.0.0.1", "::1"}
    assert lab.certs is not None
    lab_ca = x509.load_pem_x509_certificate(lab.certs.ca.cert_pem.bytes())
    cert.verify_directly_issued_by(lab_ca)  # from the lab CA
    with pytest.raises(ssl.SSLCertVerificationError,
                       match="certificate has expired"):
        if protocol == "smtp":
            smtplib.SMTP_SSL(lab.host, lab.ports[variant], timeout=5,
                             context=ca_ctx)
        else:
            poplib.POP3_SSL(lab.host, lab.ports[variant], timeout=5,
                            context=ca_ctx)


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_selfsigned_certificate(lab: EmbeddedLab, ca_ctx: ssl.SSLContext,
                                protocol: str) -> None:
    variant = f"{protocol}_selfsigned"
    cert = _peer_cert(lab, variant)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # signed by its own key
    assert _names(cert) == {"localhost", "127.0.0.1", "::1"}
    with pytest.raises(ssl.SSLCertVerificationError,
                       match="self.signed certificate"):
        if protocol == "smtp":
            smtplib.SMTP_SSL(lab.host, lab.ports[variant], timeout=5,
                             context=ca_ctx)
        else:
            poplib.POP3_SSL(lab.host, lab.ports[variant], timeout=5,
                            context=ca_ctx)
    # Trusting the certificate itself is all it takes: names and dates are
    # fine, only the chain is missing.
    assert lab.certs is not None
    own = ssl.create_default_context(cafile=str(lab.certs.selfsigned_path))
    if protocol == "smtp":
        with smtplib.SMTP_SSL(lab.host, lab.ports[variant], timeout=5,
                              context=own) as client:
            assert client.noop()[0] == 250
    else:
        assert poplib.POP3_SSL(lab.host, lab.ports[variant], timeout=5,
                               context=own).quit().startswith(b"+OK")
