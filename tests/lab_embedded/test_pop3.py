"""POP3 variants of the embedded lab, driven with poplib and a raw client."""

from __future__ import annotations

import hashlib
import poplib
import smtplib
import ssl

import pytest

from lab.embedded import EmbeddedLab

from .helpers import SENDER, RawClient, message, wait_until


def _login(lab: EmbeddedLab, user: str = "alice",
           variant: str = "pop3") -> poplib.POP3:
    client = poplib.POP3(lab.host, lab.ports[variant], timeout=5)
    client.user(user)
    client.pass_(lab.accounts[user])
    return client


def test_smtp_mail_is_visible_over_pop3(lab: EmbeddedLab) -> None:
    body = "line one\r\n.starts with a dot\r\n.\r\nline four\r\n"
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.sendmail(SENDER, ["alice@lab.test"], message("via smtp", body))
    sent = message("via smtp", body)

    pop = _login(lab)
    try:
        assert pop.stat() == (1, len(sent))
        [stored] = lab.store.messages("alice")
        uidl = pop.uidl()[1]
        assert uidl == [f"1 {stored.uid}".encode()]
        assert pop.uidl(1) == f"+OK 1 {stored.uid}".encode()
        assert pop.list(1) == f"+OK 1 {len(sent)}".encode()
        top = pop.top(1, 1)[1]
        assert top == [b"From: " + SENDER.encode(), b"To: someone@lab.test",
                       b"Subject: via smtp", b"", b"line one"]
        lines = pop.retr(1)[1]
        # poplib undoes the byte-stuffing: what comes back is what was sent.
        assert b"\r\n".join(lines) + b"\r\n" == sent
    finally:
        pop.quit()


def test_retr_byte_stuffs_on_the_wire(lab: EmbeddedLab) -> None:
    lab.store.add("bob", b"Subject: dots\n\n.hidden\n..two\n.\nend")
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        raw.cmd("USER bob")
        assert raw.cmd("PASS bob-secret-2").startswith(b"+OK")
        assert raw.cmd("RETR 1").startswith(b"+OK")
        assert raw.multiline() == [
            b"Subject: dots\r\n", b"\r\n", b"..hidden\r\n", b"...two\r\n",
            b"..\r\n", b"end\r\n", b".\r\n"]
        assert raw.cmd("TOP 1 0").startswith(b"+OK")
        assert raw.multiline() == [b"Subject: dots\r\n", b"\r\n", b".\r\n"]
        assert raw.cmd("QUIT").startswith(b"+OK")


def test_apop(lab: EmbeddedLab) -> None:
    pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
    timestamp = pop.getwelcome().split()[-1]
    assert timestamp.startswith(b"<") and timestamp.endswith(b">")
    assert b"@" in timestamp and timestamp.count(b".") >= 2
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        pop.apop("alice", "not-the-password")
    assert pop.apop("alice", "alice-secret-1").startswith(b"+OK")
    pop.quit()


def test_apop_garbage_digest(lab: EmbeddedLab) -> None:
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        assert raw.cmd("APOP alice \u00e9t\u00e9").startswith(b"-ERR [AUTH]")
        assert raw.cmd("APOP alice").startswith(b"-ERR")
        assert raw.cmd("APOP nobody 0123456789abcdef0123456789abcdef") \
            .startswith(b"-ERR [AUTH]")


def test_apop_timestamps_are_unique(lab: EmbeddedLab) -> None:
    greetings = set()
    for _attempt in range(3):
        with RawClient(lab.host, lab.ports["pop3"]) as raw:
            greetings.add(raw.greeting)
    assert len(greetings) == 3


def test_noapop_banner_and_command(lab: EmbeddedLab) -> None:
    with RawClient(lab.host, lab.ports["pop3_noapop"]) as raw:
        assert raw.greeting.startswith(b"+OK")
        assert b"<" not in raw.greeting and b">" not in raw.greeting
        digest = hashlib.md5(b"alice-secret-1").hexdigest()
        assert raw.cmd(f"APOP alice {digest}").startswith(b"-ERR")
        raw.cmd("USER alice")
        assert raw.cmd("PASS alice-secret-1").startswith(b"+OK")


def test_user_pass_wrong_password(lab: EmbeddedLab) -> None:
    pop = poplib.POP3(lab.host, lab.ports["pop3_plain"], timeout=5)
    pop.user("alice")
    with pytest.raises(poplib.error_proto, match=r"^b'-ERR \[AUTH\]"):
        pop.pass_("alice-secret-2")
    # PASS must follow a fresh USER after a failure.
    with pytest.raises(poplib.error_proto):
        pop.pass_("alice-secret-1")
    pop.user("alice")
    assert pop.pass_("alice-secret-1").startswith(b"+OK")
    pop.quit()


def test_stls_upgrade_verifies_against_lab_ca(lab: EmbeddedLab,
                                              ca_ctx: ssl.SSLContext) -> None:
    pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
    caps = pop.capa()
    assert {"TOP", "UIDL", "USER", "STLS"} <= set(caps)
    assert pop.stls(context=ca_ctx).startswith(b"+OK")
    assert isinstance(pop.sock, ssl.SSLSocket)
    assert "STLS" not in pop.capa()
    with pytest.raises(poplib.error_proto, match="not permitted"):
        pop._shortcmd("STLS")  # a second STLS is refused by the server
    pop.user("bob")
    pop.pass_("bob-secret-2")
    assert pop.stat() == (0, 0)
    pop.quit()


def test_stls_refused_on_plain_variant(lab: EmbeddedLab) -> None:
    pop = poplib.POP3(lab.host, lab.ports["pop3_plain"], timeout=5)
    assert "STLS" not in pop.capa()
    pop.quit()
    with RawClient(lab.host, lab.ports["pop3_plain"]) as raw:
        assert raw.cmd("STLS").startswith(b"-ERR")
        assert raw.cmd("NOOP").startswith(b"-ERR")  # wrong state, still up


def test_implicit_tls(lab: EmbeddedLab, ca_ctx: ssl.SSLContext) -> None:
    lab.store.add("rt02", message("tls"))
    pop = poplib.POP3_SSL(lab.host, lab.ports["pop3_tls"], timeout=5,
                          context=ca_ctx)
    assert "STLS" not in pop.capa()
    pop.user("rt02")
    pop.pass_("rt02-pass")
    assert pop.stat()[0] == 1
    pop.quit()


@pytest.mark.parametrize("variant,verify_code", [
    ("pop3_badcert", {20}),    # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    # HOSTNAME_MISMATCH, or IP_ADDRESS_MISMATCH when connecting by address
    ("pop3_wrongname", {62, 64}),
])
def test_bad_certificates_are_rejected(lab: EmbeddedLab,
                                       ca_ctx: ssl.SSLContext, variant: str,
                                       verify_code: set[int]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        poplib.POP3_SSL(lab.host, lab.ports[variant], timeout=5,
                        context=ca_ctx)
    assert err.value.verify_code in verify_code


def test_dele_quit_removes_only_that_message(lab: EmbeddedLab) -> None:
    uids = [lab.store.add("rt03", message(f"m{n}")) for n in range(3)]
    pop = _login(lab, "rt03")
    assert pop.dele(2).startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        pop.dele(2)  # already marked
    with pytest.raises(poplib.error_proto):
        pop.retr(2)  # marked messages are gone for this session
    assert pop.stat()[0] == 2
    listing = pop.list()[1]
    assert [line.split()[0] for line in listing] == [b"1", b"3"]
    assert lab.store.messages("rt03") != []  # nothing removed before QUIT
    assert len(lab.store.messages("rt03")) == 3
    assert pop.quit().startswith(b"+OK")
    assert [m.uid for m in lab.store.messages("rt03")] == [uids[0], uids[2]]


def test_dele_without_quit_deletes_nothing(lab: EmbeddedLab) -> None:
    for n in range(2):
        lab.store.add("rt04", message(f"m{n}"))
    pop = _login(lab, "rt04")
    pop.dele(1)
    pop.dele(2)
    pop.close()  # connection dropped: no UPDATE state
    wait_until(lambda: not lab.store.is_locked("rt04"))
    assert len(lab.store.messages("rt04")) == 2


def test_rset_unmarks(lab: EmbeddedLab) -> None:
    lab.store.add("rt05", message("keep"))
    pop = _login(lab, "rt05")
    pop.dele(1)
    assert pop.rset().startswith(b"+OK")
    pop.quit()
    assert len(lab.store.messages("rt05")) == 1


def test_mailbox_lock(lab: EmbeddedLab) -> None:
    first = _login(lab, "bob")
    second = poplib.POP3(lab.host, lab.ports["pop3_plain"], timeout=5)
    second.user("bob")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_("bob-secret-2")
    # Other users are not affected.
    _login(lab, "alice", "pop3_plain").quit()
    first.quit()
    # Unlocked before QUIT's +OK went out, so no polling is needed.
    second.user("bob")
    assert second.pass_("bob-secret-2").startswith(b"+OK")
    second.quit()


def test_snapshot_and_commands_by_state(lab: EmbeddedLab) -> None:
    with RawClient(lab.host, lab.ports["pop3"]) as raw:
        assert raw.cmd("STAT").startswith(b"-ERR")
        assert raw.cmd("BOGUS").startswith(b"-ERR")
        raw.cmd("USER alice")
        assert raw.cmd("pass alice-secret-1").startswith(b"+OK")
        # Mail arriving during the session is not visible until next login.
        lab.store.add("alice", message("late"))
        assert raw.cmd("STAT") == b"+OK 0 0\r\n"
        assert raw.cmd("USER alice").startswith(b"-ERR")
        assert raw.cmd("LIST 1").startswith(b"-ERR")
        assert raw.cmd("TOP x 1").startswith(b"-ERR")
        assert raw.cmd("NOOP") == b"+OK\r\n"
        assert raw.cmd("QUIT").startswith(b"+OK")
    pop = _login(lab)
    assert pop.stat()[0] == 1
    pop.quit()
