"""IMAP variants and faults of the embedded lab, driven with imaplib and a
raw client (for what imaplib hides: continuations, literal sizes, tags)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import logging
import poplib
import re
import select
import smtplib
import socket
import ssl
import time
from typing import Iterator, Optional, Union

import pytest

from lab.embedded import EmbeddedLab
from lab.embedded.faults import GARBAGE

from .helpers import SENDER, message


# -- clients -----------------------------------------------------------------------

class Raw:
    """A line-oriented IMAP client: tags, literals and timing left visible."""

    def __init__(self, host: str, port: int,
                 context: Optional[ssl.SSLContext] = None,
                 timeout: float = 5) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.file = sock.makefile("rb")
        self.count = 0
        self.greeting = self.line()

    def line(self) -> bytes:
        return self.file.readline()

    def send(self, data: Union[str, bytes]) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def response(self, tag: str) -> list[bytes]:
        """Lines up to the tagged one; literals are read into their line."""
        lines = []
        while True:
            line = self.line()
            if not line:
                raise AssertionError(f"connection closed after {lines!r}")
            while (match := re.search(rb"\{(\d+)\}\r\n$", line)):
                line += self.file.read(int(match.group(1))) + self.line()
            lines.append(line)
            if line.startswith(tag.encode() + b" "):
                return lines

    def cmd(self, text: str) -> list[bytes]:
        self.count += 1
        tag = f"t{self.count}"
        self.send(f"{tag} {text}\r\n")
        return self.response(tag)

    def starttls(self, context: ssl.SSLContext) -> None:
        assert self.cmd("STARTTLS")[-1].startswith(b"t")
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")
        self.file = self.sock.makefile("rb")

    def login(self, user: str = "alice",
              password: str = "alice-secret-1") -> None:
        assert b" OK " in self.cmd(f"LOGIN {user} {password}")[-1]

    def quiet(self, secs: float) -> bool:
        """Nothing arrives for secs seconds (nothing must be buffered)."""
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return False
        return select.select([self.sock], [], [], secs)[0] == []

    def close(self) -> None:
        self.file.close()
        self.sock.close()

    def __enter__(self) -> "Raw":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _imap(lab: EmbeddedLab, variant: str = "imap_plain") -> imaplib.IMAP4:
    return imaplib.IMAP4(lab.host, lab.ports[variant], timeout=5)


def _login(lab: EmbeddedLab, variant: str = "imap_plain",
           user: str = "alice") -> imaplib.IMAP4:
    client = _imap(lab, variant)
    if "STARTTLS" in client.capabilities:
        client.starttls(ssl.create_default_context(cafile=lab.ca_path))
    client.login(user, lab.accounts[user])
    return client


def _ssl(lab: EmbeddedLab, variant: str = "imap_tls") -> imaplib.IMAP4_SSL:
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    return imaplib.IMAP4_SSL(lab.host, lab.ports[variant], ssl_context=ctx,
                             timeout=5)


def _send(lab: EmbeddedLab, subject: str, rcpt: str = "alice@lab.test",
          headers: str = "") -> None:
    raw = (f"From: {SENDER}\r\nTo: {rcpt}\r\nSubject: {subject}\r\n"
           f"{headers}\r\nbody of {subject}\r\n").encode()
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        assert client.sendmail(SENDER, [rcpt], raw) == {}


def _caps(client: imaplib.IMAP4) -> set[str]:
    return set(client.capabilities)


def _ok(result: tuple) -> list:
    typ, data = result
    assert typ == "OK", data
    return data


@pytest.fixture(autouse=True)
def quiet_lab(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Nothing at WARNING or above is logged, shutdown included."""
    caplog.set_level(logging.WARNING)
    yield
    assert [f"{r.name}: {r.getMessage()}" for r in caplog.records] == []


@pytest.fixture
def ctx(lab: EmbeddedLab) -> ssl.SSLContext:
    assert lab.ca_path is not None
    return ssl.create_default_context(cafile=lab.ca_path)


@pytest.fixture
def start_lab() -> Iterator:
    labs: list[EmbeddedLab] = []

    def start(**faults: Union[str, list[str]]) -> EmbeddedLab:
        lab = EmbeddedLab(faults=faults).start()
        labs.append(lab)
        return lab
    yield start
    for lab in labs:
        lab.stop()


# -- greeting, capabilities, TLS ---------------------------------------------------

def test_capabilities_per_variant_and_after_starttls(
        lab: EmbeddedLab, ctx: ssl.SSLContext) -> None:
    client = _imap(lab, "imap")
    assert client.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    before = _caps(client)
    assert {"IMAP4REV1", "STARTTLS", "LOGINDISABLED", "AUTH=CRAM-MD5",
            "SASL-IR", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "LITERAL+",
            "ID", "NAMESPACE"} <= before
    assert "AUTH=PLAIN" not in before
    _ok(client.starttls(ssl_context=ctx))
    after = _caps(client)
    assert "STARTTLS" not in after and "LOGINDISABLED" not in after
    assert {"AUTH=PLAIN", "AUTH=CRAM-MD5", "IDLE"} <= after
    typ, data = client.login("alice", "alice-secret-1")
    assert typ == "OK" and data[0].startswith(b"[CAPABILITY IMAP4rev1 ")
    assert b"AUTH=" not in data[0]
    client.logout()

    plain = _caps(_imap(lab, "imap_plain"))
    assert "STARTTLS" not in plain and "LOGINDISABLED" not in plain
    assert "AUTH=PLAIN" in plain
    assert "STARTTLS" not in _caps(_ssl(lab))
    assert "IDLE" not in _caps(_imap(lab, "imap_noidle"))
    noexpunge = _caps(_imap(lab, "imap_noexpunge"))
    assert "UIDPLUS" not in noexpunge and "MOVE" not in noexpunge
    assert "SPECIAL-USE" not in _caps(_imap(lab, "imap_nospecialuse"))
    assert "IDLE" in _caps(_imap(lab, "imap_idle_never"))


def test_logindisabled_is_enforced_before_tls(
        lab: EmbeddedLab, ctx: ssl.SSLContext) -> None:
    with Raw(lab.host, lab.ports["imap"]) as raw:
        assert raw.cmd("LOGIN alice alice-secret-1")[-1].startswith(
            b"t1 NO [PRIVACYREQUIRED]")
        plain = base64.b64encode(b"\0alice\0alice-secret-1").decode()
        assert raw.cmd(f"AUTHENTICATE PLAIN {plain}")[-1].startswith(
            b"t2 NO [PRIVACYREQUIRED]")
        assert raw.cmd("SELECT INBOX")[-1].startswith(b"t3 BAD")
    client = _imap(lab, "imap")
    client.starttls(ssl_context=ctx)
    with pytest.raises(imaplib.IMAP4.error, match="TLS is already active"):
        client._simple_command("STARTTLS")
    _ok(client.login("alice", "alice-secret-1"))
    client.logout()


def test_implicit_tls_and_certificate_variants(
        lab: EmbeddedLab, ctx: ssl.SSLContext) -> None:
    client = _ssl(lab)
    _ok(client.login("alice", "alice-secret-1"))
    client.logout()
    for variant, reason in [("imap_badcert", "unable to get local issuer"),
                            ("imap_wrongname", "match"),
                            ("imap_expired", "expired"),
                            ("imap_selfsigned", "self-signed")]:
        with pytest.raises(ssl.SSLCertVerificationError, match=reason):
            _ssl(lab, variant)
    # A plaintext listener answers a TLS client with no handshake at all.
    with pytest.raises((ssl.SSLError, OSError)):
        _ssl(lab, "imap_plain")


# -- authentication ----------------------------------------------------------------

def test_login_quoted_literal_and_literal_plus(lab: EmbeddedLab) -> None:
    lab.store.add_account("carol", 'sp ace"quote\\back')
    client = _imap(lab)
    _ok(client.login("carol", 'sp ace"quote\\back'))  # a quoted string
    client.logout()
    client = _imap(lab)
    client.literal = b"alice-secret-1"  # imaplib sends it as {14}
    assert client._simple_command("LOGIN", "alice")[0] == "OK"
    client.logout()
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        raw.send("a1 LOGIN {5+}\r\nalice {14+}\r\nalice-secret-1\r\n")
        assert raw.response("a1")[-1].startswith(b"a1 OK [CAPABILITY ")
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        raw.send("a1 LOGIN alice {9}\r\n")
        assert raw.line() == b"+ Ready for literal data\r\n"
        raw.send("not-it-at\r\n")
        assert raw.response("a1")[-1] == \
            b"a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"


def test_authenticate_plain_and_cram_md5(lab: EmbeddedLab) -> None:
    client = _imap(lab)
    _ok(client.authenticate(
        "PLAIN", lambda _challenge: b"\0alice\0alice-secret-1"))
    client.logout()
    client = _imap(lab)
    _ok(client.login_cram_md5("bob", "bob-secret-2"))
    client.logout()
    client = _imap(lab)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login_cram_md5("bob", "not-bobs")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.authenticate("PLAIN", lambda _c: b"\0alice\0wrong")
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("alice", "wrong")
    client.logout()


def test_authenticate_wire(lab: EmbeddedLab) -> None:
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        # SASL-IR: the response in the command itself.
        payload = base64.b64encode(b"\0alice\0alice-secret-1").decode()
        assert raw.cmd(f"AUTHENTICATE PLAIN {payload}")[-1].startswith(
            b"t1 OK [CAPABILITY ")
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        raw.send("a AUTHENTICATE CRAM-MD5\r\n")
        line = raw.line()
        assert line.startswith(b"+ ")
        challenge = base64.b64decode(line[2:].strip())
        assert re.fullmatch(rb"<\d+\.\d+\.\d+@mail\.lab\.test>", challenge)
        digest = hmac.new(b"bob-secret-2", challenge, hashlib.md5).hexdigest()
        raw.send(base64.b64encode(f"bob {digest}".encode()) + b"\r\n")
        assert raw.response("a")[-1].startswith(b"a OK ")
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        raw.send("a AUTHENTICATE PLAIN\r\n")
        assert raw.line() == b"+ \r\n"
        raw.send("*\r\n")
        assert raw.response("a")[-1].startswith(b"a BAD ")
        assert raw.cmd("AUTHENTICATE GSSAPI")[-1].startswith(b"t1 NO ")


# -- folders -----------------------------------------------------------------------

def test_list_with_special_use_and_patterns(lab: EmbeddedLab) -> None:
    client = _login(lab)
    assert _ok(client.list()) == [
        b'(\\HasNoChildren) "/" INBOX', b'(\\HasNoChildren \\Junk) "/" Junk',
        b'(\\HasNoChildren \\Trash) "/" Trash',
        b'(\\HasNoChildren \\Sent) "/" Sent']
    assert _ok(client.list('""', "J*")) == [
        b'(\\HasNoChildren \\Junk) "/" Junk']
    assert _ok(client.list('""', "inbox")) == [b'(\\HasNoChildren) "/" INBOX']
    assert _ok(client.list('""', '""')) == [b'(\\Noselect) "/" ""']
    assert _ok(client.lsub())[0] == b'(\\HasNoChildren) "/" INBOX'
    client.logout()

    client = _login(lab, "imap_nospecialuse")
    listed = _ok(client.list())
    assert listed == [b'(\\HasNoChildren) "/" INBOX',
                      b'(\\HasNoChildren) "/" Spam',
                      b'(\\HasNoChildren) "/" Trash',
                      b'(\\HasNoChildren) "/" Sent']
    lab.store.add("alice", message("spam"), "Junk")
    assert _ok(client.select("Spam")) == [b"1"]
    assert client.select("Junk")[0] == "NO"
    client.logout()


def test_status_select_and_examine(lab: EmbeddedLab) -> None:
    lab.store.add("alice", message("one"), flags=["\\Seen"])
    lab.store.add("alice", message("two"))
    info = lab.store.folder_info("alice", "INBOX")
    client = _login(lab)
    status = _ok(client.status(
        "INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY RECENT)"))
    assert status == [f"INBOX (MESSAGES 2 UNSEEN 1 UIDNEXT 3 UIDVALIDITY "
                      f"{info.uidvalidity} RECENT 2)".encode()]
    assert client.status("Nope", "(MESSAGES)")[0] == "NO"
    assert _ok(client.select("INBOX")) == [b"2"]
    untagged = client.untagged_responses
    assert untagged["RECENT"] == [b"2"]
    assert untagged["UIDVALIDITY"] == [str(info.uidvalidity).encode()]
    assert untagged["UIDNEXT"] == [b"3"]
    assert untagged["UNSEEN"] == [b"2"]
    assert untagged["PERMANENTFLAGS"] == [
        b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)"]
    assert untagged["READ-WRITE"] == [b""]
    # \Recent went to this session.
    assert b"RECENT 0" in _ok(client.status("INBOX", "(RECENT)"))[0]
    assert _ok(client.select("INBOX", readonly=True)) == [b"2"]
    typ, data = client.store("1", "+FLAGS", "\\Deleted")
    assert (typ, data) == ("NO", [b"[READ-ONLY] Mailbox is read-only."])
    client.close()
    assert client.state == "AUTH"
    assert client.select("Nope")[0] == "NO"
    _ok(client.namespace())
    _ok(client.xatom("ID", "NIL"))
    client.logout()


def test_smtp_delivery_lands_in_inbox_or_junk(lab: EmbeddedLab) -> None:
    _send(lab, "ham")
    _send(lab, "spam by header", headers="X-Lab-Junk: yes\r\n")
    _send(lab, "Offer [LAB-JUNK] inside")
    assert [m.data.split(b"Subject: ")[1].split(b"\r\n")[0]
            for m in lab.store.messages("alice", "Junk")] == \
        [b"spam by header", b"Offer [LAB-JUNK] inside"]
    client = _login(lab)
    assert _ok(client.select("INBOX")) == [b"1"]
    assert _ok(client.select("Junk")) == [b"2"]
    client.logout()
    pop = poplib.POP3(lab.host, lab.ports["pop3"], timeout=5)
    pop.user("alice")
    pop.pass_("alice-secret-1")
    assert pop.stat()[0] == 1  # POP3 sees INBOX only
    pop.quit()


# -- search, fetch, store, expunge, move ---------------------------------------------

def _probe(subject: str, probe: str = "", body: str = "Hello.\r\n") -> bytes:
    extra = f"X-Probe-Id: {probe}\r\n" if probe else ""
    return (f"From: {SENDER}\r\nTo: alice@lab.test\r\nSubject: {subject}\r\n"
            f"{extra}X-Long: first\r\n second\r\n\r\n{body}").encode()


def test_uid_search_and_fetch(lab: EmbeddedLab) -> None:
    lab.store.add("alice", _probe("one", "aaa-111"))
    lab.store.add("alice", _probe("two", "BBB-222"))
    lab.store.add("alice", _probe("three"), flags=["\\Deleted"])
    client = _login(lab)
    client.select("INBOX")
    assert _ok(client.uid("SEARCH", None, "ALL")) == [b"1 2 3"]
    assert _ok(client.uid("SEARCH", None, "HEADER", "X-Probe-Id",
                          "bbb-2")) == [b"2"]
    assert _ok(client.uid("SEARCH", None, "HEADER", "x-probe-id",
                          '""')) == [b"1 2"]
    assert _ok(client.uid("SEARCH", None, "HEADER", "X-Long",
                          '"first second"')) == [b"1 2 3"]
    assert _ok(client.uid("SEARCH", None, "UID", "2:*")) == [b"2 3"]
    assert _ok(client.uid("SEARCH", None, "UID", "9:*")) == [b"3"]
    assert _ok(client.search(None, "DELETED")) == [b"3"]
    assert _ok(client.search(None, "UNDELETED", "SUBJECT", "t")) == [b"2"]
    assert _ok(client.search(None, "OR", "SUBJECT", "one",
                             "NOT", "UID", "1:2")) == [b"1 3"]
    today = time.strftime("%d-%b-%Y")
    assert _ok(client.search(None, "SINCE", today)) == [b"1 2 3"]
    assert _ok(client.search(None, "BEFORE", today)) == [b""]
    with pytest.raises(imaplib.IMAP4.error, match="Unknown search key"):
        client.search(None, "FROBNICATE")

    data = _ok(client.uid(
        "FETCH", "2", "(UID FLAGS RFC822.SIZE INTERNALDATE "
        "BODY.PEEK[HEADER.FIELDS (Subject X-Probe-Id X-Long)])"))
    head, fields = data[0]
    assert head.startswith(b"2 (UID 2 FLAGS (\\Recent) RFC822.SIZE ")
    size = int(re.search(rb"RFC822\.SIZE (\d+)", head).group(1))
    assert size == len(lab.store.messages("alice")[1].data)
    assert re.search(rb'INTERNALDATE "[ 0-9]\d-[A-Z][a-z]{2}-\d{4} '
                     rb'\d\d:\d\d:\d\d [+-]\d{4}"', head)
    assert head.endswith(b"BODY[HEADER.FIELDS (Subject X-Probe-Id X-Long)] "
                         b"{%d}" % len(fields))
    assert fields == (b"Subject: two\r\nX-Probe-Id: BBB-222\r\n"
                      b"X-Long: first\r\n second\r\n\r\n")
    assert _ok(client.uid("SEARCH", None, "SEEN")) == [b""]  # PEEK
    data = _ok(client.uid("FETCH", "1", "(BODY[] BODY.PEEK[TEXT]<0.3>)"))
    assert data[0][1] == lab.store.messages("alice")[0].data
    assert data[0][0].startswith(b"1 (UID 1 BODY[] {")
    assert data[1][0].endswith(b" BODY[TEXT]<0> {3}") and data[1][1] == b"Hel"
    assert data[2] == b" FLAGS (\\Seen \\Recent))"
    assert _ok(client.search(None, "SEEN")) == [b"1"]
    with pytest.raises(imaplib.IMAP4.error, match="not implemented"):
        client.fetch("1", "(ENVELOPE)")
    with pytest.raises(imaplib.IMAP4.error, match="Invalid messageset"):
        client.fetch("7", "(UID)")  # beyond EXISTS
    assert _ok(client.uid("FETCH", "7", "(UID)")) == [None]
    client.logout()


def test_store_and_uid_expunge_leave_other_deleted_mail(
        lab: EmbeddedLab) -> None:
    for n in range(1, 4):
        lab.store.add("alice", message(f"m{n}"))
    client = _login(lab)
    client.select("INBOX")
    assert _ok(client.uid("STORE", "1:2", "+FLAGS", "(\\Deleted)")) == [
        b"1 (UID 1 FLAGS (\\Deleted \\Recent))",
        b"2 (UID 2 FLAGS (\\Deleted \\Recent))"]
    assert _ok(client.store("3", "+FLAGS.SILENT", "\\Flagged")) == [None]
    assert _ok(client.store("3", "-FLAGS", "(\\Flagged)")) == [
        b"3 (FLAGS (\\Recent))"]
    _ok(client.uid("EXPUNGE", "1"))
    assert client.untagged_responses.pop("EXPUNGE") == [b"1"]
    assert [e.uid for e in lab.store.entries("alice", "INBOX")] == [2, 3]
    assert "\\Deleted" in lab.store.entries("alice", "INBOX")[0].flags
    typ, data = client.expunge()
    assert typ == "OK" and data == [b"1"]  # what was UID 2, now number 1
    assert [e.uid for e in lab.store.entries("alice", "INBOX")] == [3]
    client.logout()


def test_move_and_copy(lab: EmbeddedLab) -> None:
    for n in range(1, 4):
        lab.store.add("alice", message(f"m{n}"))
    trash = lab.store.folder_info("alice", "Trash").uidvalidity
    client = _login(lab)
    client.select("INBOX")
    typ, data = client.uid("MOVE", "2", "Trash")
    assert typ == "OK"
    assert client.untagged_responses.get("EXPUNGE") == [b"2"]
    assert client.untagged_responses.get("OK")[-1] == \
        f"[COPYUID {trash} 2 1] Moved UIDs.".encode()
    assert [e.uid for e in lab.store.entries("alice", "INBOX")] == [1, 3]
    assert _ok(client.copy("1:2", "Trash")) == [
        f"[COPYUID {trash} 1,3 2:3] Copy completed.".encode()]
    assert len(lab.store.messages("alice", "Trash")) == 3
    assert len({m.uid for m in lab.store.messages("alice", "Trash")}) == 3
    typ, data = client.copy("1", "Nowhere")
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")
    client.select("Trash")
    _ok(client._simple_command("MOVE", "1:*", "INBOX"))
    assert len(lab.store.messages("alice")) == 5
    client.logout()


def test_noexpunge_variant_has_only_plain_expunge(lab: EmbeddedLab) -> None:
    lab.store.add("alice", message("mine"), flags=["\\Deleted"])
    lab.store.add("alice", message("theirs"), flags=["\\Deleted"])
    client = _login(lab, "imap_noexpunge")
    client.select("INBOX")
    for command in (("EXPUNGE", "1"), ("MOVE", "1", "Trash")):
        with pytest.raises(imaplib.IMAP4.error, match="Unknown command"):
            client.uid(*command)
    assert _ok(client.copy("1", "Trash")) == [b"Copy completed."]
    assert _ok(client.expunge()) == [b"1", b"1"]  # it takes both
    assert lab.store.messages("alice") == []
    client.logout()


def test_append_and_concurrent_sessions(lab: EmbeddedLab) -> None:
    first, second = _login(lab), _login(lab)
    first.select("INBOX")
    second.select("INBOX")
    first.untagged_responses.clear()
    typ, data = second.append("INBOX", "(\\Seen)", None,
                              message("appended"))
    validity = lab.store.folder_info("alice", "INBOX").uidvalidity
    assert (typ, data) == ("OK", [f"[APPENDUID {validity} 1] Append "
                                  "completed.".encode()])
    first.noop()
    assert first.untagged_responses.pop("EXISTS") == [b"1"]
    second.store("1", "+FLAGS", "\\Deleted")
    typ, data = first.noop()
    assert first.untagged_responses.pop("FETCH") == [
        b"1 (UID 1 FLAGS (\\Deleted \\Seen))"]  # \\Recent went to second
    second.expunge()
    first.noop()
    assert first.untagged_responses.pop("EXPUNGE") == [b"1"]
    first.logout()
    second.logout()


# -- IDLE ---------------------------------------------------------------------------

def _idle(lab: EmbeddedLab, variant: str = "imap_plain") -> Raw:
    raw = Raw(lab.host, lab.ports[variant])
    if b"STARTTLS" in raw.greeting:
        raw.starttls(ssl.create_default_context(cafile=lab.ca_path))
    raw.login()
    raw.cmd("SELECT INBOX")
    raw.send("i IDLE\r\n")
    assert raw.line() == b"+ idling\r\n"
    return raw


def _push_time(raw: Raw) -> float:
    line = raw.line()
    assert line == b"* 1 EXISTS\r\n"
    assert raw.line() == b"* 1 RECENT\r\n"
    return time.monotonic()


def test_idle_pushes_a_delivery(lab: EmbeddedLab) -> None:
    with _idle(lab) as raw:
        sent = time.monotonic()
        _send(lab, "pushed")
        assert _push_time(raw) - sent < 1.0
        raw.send("DONE\r\n")
        assert raw.response("i")[-1] == b"i OK Idle completed.\r\n"
        assert raw.cmd("UID SEARCH SUBJECT pushed")[0] == b"* SEARCH 1\r\n"


def test_idle_push_comes_late_with_idle_late(start_lab) -> None:
    lab = start_lab(imap_plain="idle_late:0.4")
    with _idle(lab) as raw:
        sent = time.monotonic()
        lab.store.add("alice", message("late"))
        assert _push_time(raw) - sent >= 0.4
        raw.send("DONE\r\n")
        assert raw.response("i")[-1].startswith(b"i OK")


@pytest.mark.parametrize("variant, faults", [
    ("imap_idle_never", None), ("imap_plain", "idle_no_push")])
def test_idle_that_never_pushes(start_lab, variant: str,
                                faults: Optional[str]) -> None:
    lab = start_lab(**({variant: faults} if faults else {}))
    with _idle(lab, variant) as raw:
        lab.store.add("alice", message("unannounced"))
        assert raw.quiet(0.3)
        raw.send("DONE\r\n")
        assert raw.response("i") == [b"i OK Idle completed.\r\n"]
        assert raw.cmd("NOOP")[:2] == [b"* 1 EXISTS\r\n", b"* 1 RECENT\r\n"]


def test_idle_refused_without_capability(
        lab: EmbeddedLab, ctx: ssl.SSLContext) -> None:
    with Raw(lab.host, lab.ports["imap_noidle"]) as raw:
        raw.starttls(ctx)
        raw.login()
        raw.cmd("SELECT INBOX")
        assert raw.cmd("IDLE") == [
            b"t4 BAD Error in IMAP command IDLE: Unknown command.\r\n"]


def test_idle_never_ends(start_lab) -> None:
    lab = start_lab(imap_plain="idle_never_ends")
    with _idle(lab) as raw:
        lab.store.add("alice", message("news"))
        _push_time(raw)  # pushes still come
        raw.send("DONE\r\n")
        assert raw.quiet(0.3)
        raw.send("t9 NOOP\r\n")  # read by nobody: IDLE still holds the line
        assert raw.quiet(0.2)


# -- faults ---------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["greeting_bye", "bye_mid_session"])
def test_bye_faults(start_lab, fault: str) -> None:
    lab = start_lab(imap_plain=fault)
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        if fault == "greeting_bye":
            assert raw.greeting == (b"* BYE [UNAVAILABLE] mail.lab.test "
                                    b"server unavailable\r\n")
        else:
            assert raw.greeting.startswith(b"* OK [CAPABILITY ")
            assert raw.cmd("CAPABILITY")[-1].startswith(b"t1 OK")
            assert raw.cmd("LOGIN alice alice-secret-1")[-1].startswith(
                b"t2 OK")
            raw.send("t3 SELECT INBOX\r\n")
            assert raw.line() == (b"* BYE [UNAVAILABLE] mail.lab.test "
                                  b"shutting down\r\n")
        assert raw.line() == b""  # closed


def test_preauth(start_lab) -> None:
    lab = start_lab(imap_plain="preauth")
    lab.store.add("alice", message("hi"))
    client = _imap(lab)
    assert client.state == "AUTH"
    assert client.welcome.startswith(b"* PREAUTH [CAPABILITY IMAP4rev1 ")
    assert client.welcome.endswith(b"mail.lab.test logged in as alice")
    assert _ok(client.select("INBOX")) == [b"1"]
    client.logout()


@pytest.mark.parametrize("fault, command, reply", [
    ("login_no", "LOGIN alice alice-secret-1",
     b"NO [AUTHENTICATIONFAILED] Authentication failed."),
    ("login_bad", "LOGIN alice alice-secret-1",
     b"BAD Error in IMAP command LOGIN: invalid arguments"),
    ("authenticate_no",
     "AUTHENTICATE PLAIN " + base64.b64encode(
         b"\0alice\0alice-secret-1").decode(),
     b"NO [AUTHENTICATIONFAILED] Authentication failed."),
    ("select_no", "EXAMINE INBOX",
     b"NO [UNAVAILABLE] Mailbox temporarily unavailable"),
    ("store_no", "UID STORE 1 +FLAGS (\\Seen)",
     b"NO [NOPERM] STORE not permitted"),
    ("search_bad", "UID SEARCH ALL",
     b"BAD Error in IMAP command SEARCH: Unknown search key"),
    ("expunge_no", "EXPUNGE", b"NO [NOPERM] EXPUNGE not permitted"),
])
def test_reply_faults(start_lab, fault: str, command: str,
                      reply: bytes) -> None:
    lab = start_lab(imap_plain=fault)
    lab.store.add("alice", message("m"), flags=["\\Deleted"])
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        if not command.startswith(("LOGIN", "AUTHENTICATE")):
            raw.login()
            if fault != "select_no":
                raw.cmd("SELECT INBOX")
        assert raw.cmd(command)[-1] == f"t{raw.count} ".encode() + reply \
            + b"\r\n"
        if fault == "select_no":
            assert raw.cmd("FETCH 1 UID")[-1].startswith(b"t3 BAD")
        # The store is as it was.
        assert lab.store.entries("alice", "INBOX")[0].flags == \
            frozenset({"\\Deleted"})


def test_untagged_before_tagged_and_wrong_tag(start_lab) -> None:
    lab = start_lab(imap_plain="untagged_before_tagged",
                    imap=["wrong_tag", "untagged_before_tagged"])
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        assert raw.cmd("NOOP") == [b"* OK [ALERT] lab: unsolicited notice\r\n",
                                   b"* X-LAB-NOISE 1 2 3\r\n",
                                   b"t1 OK NOOP completed.\r\n"]
    client = _login(lab)  # imaplib copes with the noise
    assert _ok(client.select("INBOX")) == [b"0"]
    client.logout()
    with Raw(lab.host, lab.ports["imap"]) as raw:
        raw.send("t1 NOOP\r\n")
        assert [raw.line() for _line in range(3)] == [
            b"* OK [ALERT] lab: unsolicited notice\r\n",
            b"* X-LAB-NOISE 1 2 3\r\n", b"WRONGTAG OK NOOP completed.\r\n"]
    with pytest.raises(imaplib.IMAP4.abort, match="WRONGTAG"):
        _imap(lab, "imap")


@pytest.mark.parametrize("fault, announced", [
    ("literal_lies", lambda n: n + 1024), ("literal_short", lambda n: n // 2)])
def test_literal_faults(start_lab, fault: str, announced) -> None:
    lab = start_lab(imap_plain=fault)
    lab.store.add("alice", message("sized", "x" * 100 + "\r\n"))
    data = lab.store.messages("alice")[0].data
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        raw.login()
        raw.cmd("SELECT INBOX")
        raw.send("f UID FETCH 1 (BODY.PEEK[])\r\n")
        head = raw.line()
        assert head == b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % announced(
            len(data))
        assert raw.file.read(len(data)) == data  # what is really sent
        assert raw.line() == b")\r\n"
        assert raw.line().startswith(b"f OK")


def test_inject_after_starttls(start_lab) -> None:
    lab = start_lab(imap="inject_after_starttls")
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    with Raw(lab.host, lab.ports["imap"]) as raw:
        raw.send("s STARTTLS\r\n")
        chunk = raw.sock.recv(4096)  # one packet: the OK and the injection
        assert chunk == (b"s OK Begin TLS negotiation now.\r\n* CAPABILITY "
                         b"IMAP4rev1 AUTH=PLAIN X-LAB-INJECTED\r\n")
    client = _imap(lab, "imap")
    _ok(client.starttls(ssl_context=ctx))
    assert "X-LAB-INJECTED" not in _caps(client)  # discarded, as it must be
    _ok(client.login("alice", "alice-secret-1"))
    client.logout()


def test_greeting_faults_of_any_protocol(start_lab) -> None:
    lab = start_lab(imap_plain="slow_banner:0.3", imap_tls="garbage",
                    imap="silent", imap_noidle="trickle:0.002")
    started = time.monotonic()
    with Raw(lab.host, lab.ports["imap_plain"]) as raw:
        assert raw.greeting.startswith(b"* OK [CAPABILITY ")
        assert time.monotonic() - started >= 0.3
    ctx = ssl.create_default_context(cafile=lab.ca_path)
    with socket.create_connection((lab.host, lab.ports["imap_tls"]),
                                  timeout=5) as plain:
        with ctx.wrap_socket(plain, server_hostname="localhost") as tls:
            received = b""
            while len(received) < len(GARBAGE):
                received += tls.recv(4096)
            assert received == GARBAGE
    with pytest.raises(socket.timeout):
        Raw(lab.host, lab.ports["imap"], timeout=0.2)
    with socket.create_connection((lab.host, lab.ports["imap_noidle"]),
                                  timeout=5) as sock:
        first = sock.recv(4096)  # the first byte comes alone
        rest = b""
        while not rest.endswith(b"\r\n"):
            rest += sock.recv(4096)
        assert first == b"*" and rest.startswith(b" OK [CAPABILITY ")


@pytest.mark.parametrize("faults, match", [
    ({"imap_tls": ["inject_after_starttls"]}, "STARTTLS"),
    ({"pop3": ["login_no"]}, "for imap"),
    ({"imap": ["dele_err"]}, "for pop3"),
    ({"imap": ["echo_secrets"]}, "for both"),
    ({"imap": ["idle_no_push", "idle_late"]}, "both decide"),
    ({"imap": ["greeting_bye", "preauth"]}, "both decide"),
])
def test_bad_imap_faults(faults: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EmbeddedLab(faults=faults)


def test_user_hook_on_a_uid_command() -> None:
    seen = []

    async def refuse(conn, arg: Optional[str]) -> bool:
        seen.append((conn.tag, arg))
        await conn.push(f"{conn.tag} NO [LIMIT] not today")
        return True

    with EmbeddedLab(hooks={"imap_plain": {"UID FETCH": refuse}}) as lab:
        lab.store.add("alice", message("m"))
        client = _login(lab)
        client.select("INBOX")
        typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
        assert (typ, data) == ("NO", [b"[LIMIT] not today"])
        assert _ok(client.fetch("1:*", "(FLAGS)")) == [
            b"1 (FLAGS (\\Recent))"]
        client.logout()
    assert seen[0][1] == "1:* (FLAGS)"
