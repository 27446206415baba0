"""Mail paths beyond the lab domain, against the running lab (stdlib smtplib/imaplib/email):
the loop through the outside provider (Received chain, SPF/DKIM/DMARC verdicts), the failing-DKIM
sender domain, the bounce DSN, the refusals (relaying on port 25, a sender the login does not own),
the open-relay port, and the resolver that answers for the lab's zones only.

`pytest -s tests/lab/test_docker_lab_paths.py` prints the Received chains, the verdicts, the DSN's
headers and the trip and DSN delays.  Every test deletes the mail it produced."""

from __future__ import annotations

import base64
import email
import email.policy
import email.utils
import imaplib
import re
import smtplib
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from docker_lab_helpers import eventually, token
from lab.docker import dns

VERDICT = re.compile(r"\b(spf|dkim|dmarc)=([a-z]+)", re.I)


# -- helpers ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def paths(docker_lab):
    return docker_lab["paths"]


@pytest.fixture(scope="module")
def user(accounts):
    """The account these tests send as and to: the last rtNN (the matrix uses rt01..rt05)."""
    return sorted(name for name in accounts if name.startswith("rt"))[-1]


def _message(mail_from: str, rcpt: str, tok: str, domain: str) -> str:
    return (f"From: {mail_from}\r\nTo: {rcpt}\r\nSubject: lab paths {tok}\r\n"
            f"Message-ID: <{tok}@{domain}>\r\nDate: {email.utils.formatdate()}\r\n\r\n"
            f"paths body {tok}\r\n")


def _submit(docker_lab, ca_ctx, accounts, login, mail_from, rcpt, tok, mail_options=()):
    """Submission (587) with STARTTLS and AUTH; returns the time DATA was accepted."""
    with smtplib.SMTP(docker_lab["host"], docker_lab["ports"]["submission"], timeout=15) as s:
        s.starttls(context=ca_ctx)
        s.login(login, accounts[login]["password"])
        refused = s.sendmail(mail_from, [rcpt], _message(mail_from, rcpt, tok, docker_lab["domain"]),
                             mail_options=list(mail_options))
        sent_at = time.monotonic()
        assert refused == {}
    return sent_at


class Inbox:
    """An IMAPS session on one account's INBOX."""

    def __init__(self, docker_lab, ca_ctx, accounts, user):
        self.m = imaplib.IMAP4_SSL(docker_lab["host"], docker_lab["ports"]["imaps"], ssl_context=ca_ctx,
                                   timeout=15)
        self.m.login(user, accounts[user]["password"])

    def find(self, *criteria) -> list[bytes]:
        self.m.select("INBOX")  # a fresh SELECT sees new deliveries
        typ, data = self.m.uid("SEARCH", None, *criteria)
        assert typ == "OK", data
        return data[0].split()

    def fetch(self, uid: bytes) -> email.message.EmailMessage:
        typ, data = self.m.uid("FETCH", uid, "(BODY.PEEK[])")
        assert typ == "OK", data
        return email.message_from_bytes(data[0][1], policy=email.policy.default)

    def delete(self, uids) -> None:
        if uids:
            self.m.select("INBOX")
            self.m.uid("STORE", b",".join(uids).decode(), "+FLAGS.SILENT", "(\\Deleted)")
            self.m.expunge()

    def close(self) -> None:
        try:
            self.m.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


@pytest.fixture
def inbox(docker_lab, ca_ctx, accounts, user):
    box = Inbox(docker_lab, ca_ctx, accounts, user)
    made: list[str] = []  # tokens of the mail the test produced, deleted at the end
    box.made = made
    yield box
    try:
        for tok in made:
            box.delete(box.find("TEXT", tok))
            assert not box.find("TEXT", tok)
    finally:
        box.close()


def _unfold(value: str) -> str:
    return re.sub(r"\s+", " ", str(value)).strip()


def _verdicts(msg, authserv_id: str) -> dict[str, str]:
    """{method: result} from the Authentication-Results header fields of ``authserv_id``."""
    found: dict[str, str] = {}
    for field in msg.get_all("Authentication-Results") or []:
        text = _unfold(field)
        if text.split(";", 1)[0].strip() != authserv_id:
            continue
        for method, result in VERDICT.findall(text.split(";", 1)[1]):
            found.setdefault(method.lower(), result.lower())
    return found


def _show(title: str, lines) -> None:
    print(f"\n--- {title}")
    for line in lines:
        print(f"    {line}")


# -- the loop through the outside provider ------------------------------------------------

def test_loop_path_received_chain_and_verdicts(docker_lab, ca_ctx, accounts, paths, user, inbox):
    tok = token()
    inbox.made.append(tok)
    own = f"{user}@{docker_lab['domain']}"
    rcpt = paths["loop_address"].format(user=user)
    sent_at = _submit(docker_lab, ca_ctx, accounts, user, own, rcpt, tok)
    uids = eventually(lambda: inbox.find("HEADER", "Message-ID", tok), timeout=30, interval=0.1)
    trip = time.monotonic() - sent_at
    assert len(uids) == 1
    msg = inbox.fetch(uids[0])

    received = [_unfold(r) for r in msg.get_all("Received")]
    _show(f"loop {own} -> {rcpt}: {len(received)} Received headers (top = last hop), "
          f"back in {trip:.2f}s", received)
    ar = [_unfold(a) for a in msg.get_all("Authentication-Results")]
    _show("Authentication-Results", ar)
    assert len(received) >= 3
    # Newest first: Dovecot LMTP, the lab MTA inbound from the outside MTA, the outside MTA
    # from the lab MTA, the lab MTA's submission (ESMTPSA).
    assert "with LMTP" in received[0]
    outside_mx = paths["outside_mx"]
    assert re.search(rf"^from {re.escape(outside_mx)} .*\[{re.escape(paths['outside_host'])}\].* "
                     rf"by mail\.{re.escape(docker_lab['domain'])} \(Postfix\)", received[1])
    assert re.search(rf"by {re.escape(outside_mx)} \(Postfix\) .*for <{re.escape(rcpt)}>", received[2])
    assert re.search(r"with ESMTPSA .*for <" + re.escape(rcpt) + ">", received[-1])
    assert msg["Delivered-To"] == own
    assert _verdicts(msg, paths["authserv_id"]) == paths["verdicts"]["loop"] == \
        {"spf": "pass", "dkim": "pass", "dmarc": "pass"}
    assert "header.d=" + docker_lab["domain"] in " ".join(ar)


def test_baddkim_fails_dkim_and_dmarc(docker_lab, ca_ctx, accounts, paths, user, inbox):
    tok = token()
    inbox.made.append(tok)
    sender = paths["baddkim_sender"].format(user=user)
    rcpt = paths["loop_address"].format(user=user)
    _submit(docker_lab, ca_ctx, accounts, user, sender, rcpt, tok)
    uids = eventually(lambda: inbox.find("HEADER", "Message-ID", tok), timeout=30, interval=0.1)
    msg = inbox.fetch(uids[0])
    ar = [_unfold(a) for a in msg.get_all("Authentication-Results")]
    _show(f"baddkim {sender} -> {rcpt}: Authentication-Results", ar)
    verdicts = _verdicts(msg, paths["authserv_id"])
    assert verdicts == paths["verdicts"]["baddkim"]
    assert verdicts["dkim"] == "fail" and verdicts["dmarc"] == "fail"
    assert "header.d=" + paths["baddkim_domain"] in " ".join(ar)
    assert msg["Return-Path"] == f"<{sender}>"  # delivered all the same: p=none


# -- the bounce ----------------------------------------------------------------------------

def test_bounce_dsn_reaches_the_sender(docker_lab, ca_ctx, accounts, paths, user, inbox):
    tok = token()
    inbox.made.append(tok)
    own = f"{user}@{docker_lab['domain']}"
    rcpt = paths["bounce_address"].format(user=user)
    sent_at = _submit(docker_lab, ca_ctx, accounts, user, own, rcpt, tok,
                      mail_options=["RET=HDRS", f"ENVID={tok}"])
    uids = eventually(lambda: inbox.find("TEXT", tok, "HEADER", "Content-Type", "multipart/report"),
                      timeout=30, interval=0.1)
    delay = time.monotonic() - sent_at
    assert len(uids) == 1
    dsn = inbox.fetch(uids[0])
    _show(f"DSN for {rcpt} in {own}'s INBOX {delay:.2f}s after DATA; its header",
          [f"{k}: {_unfold(v)}" for k, v in dsn.items()])

    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    assert dsn["Return-Path"] == "<>"
    parts = {part.get_content_type(): part for part in dsn.iter_parts()}
    assert {"text/plain", "message/delivery-status", "text/rfc822-headers"} <= set(parts)
    status = parts["message/delivery-status"].as_string()
    _show("message/delivery-status", [line for line in status.splitlines() if ":" in line])
    assert re.search(r"^Status: 5\.1\.1$", status, re.M), status
    assert re.search(r"^Action: failed$", status, re.M), status
    assert re.search(rf"^Final-Recipient: rfc822; ?{re.escape(rcpt)}$", status, re.M), status
    assert re.search(rf"^Diagnostic-Code: .*{re.escape(paths['bounce_diagnostic'])}", status, re.M), status
    assert re.search(rf"^Original-Envelope-Id: {re.escape(tok)}$", status, re.M), status
    headers = parts["text/rfc822-headers"]
    headers = headers.get_payload(decode=True).decode() if not headers.is_multipart() else str(headers)
    assert f"Message-ID: <{tok}@{docker_lab['domain']}>" in headers
    assert "paths body" not in headers  # RET=HDRS: the headers only
    assert delay < 15


# -- refusals and the open relay -----------------------------------------------------------

@pytest.mark.parametrize("target", ["loop_address", "bounce_address"])
def test_port_25_refuses_relaying_without_auth(docker_lab, paths, user, target):
    with smtplib.SMTP(docker_lab["host"], docker_lab["ports"]["smtp"], timeout=15) as s:
        s.ehlo("client.test")
        assert s.mail(f"{user}@{docker_lab['domain']}")[0] == 250
        code, text = s.rcpt(paths[target].format(user=user))
        assert (code, b"Relay access denied" in text) == (554, True), text
        # Inbound mail for the lab domain is still accepted there.
        assert s.rcpt(f"{user}@{docker_lab['domain']}")[0] == 250
        s.rset()


def test_open_relay_port_accepts_foreign_recipients(docker_lab, paths, user):
    with smtplib.SMTP(docker_lab["host"], paths["open_relay_port"], timeout=15) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls") and not s.has_extn("auth")
        assert s.mail("probe@example.com")[0] == 250
        code, text = s.rcpt(paths["loop_address"].format(user=user))
        assert code == 250, text
        assert s.rset()[0] == 250  # no DATA: nothing is sent


@pytest.mark.parametrize("port_name", ["submission", "smtps"])
def test_sender_login_mismatch_refused(docker_lab, ca_ctx, accounts, user, port_name):
    other = "rt01" if user != "rt01" else "rt02"
    domain = docker_lab["domain"]
    if port_name == "smtps":
        s = smtplib.SMTP_SSL(docker_lab["host"], docker_lab["ports"][port_name], context=ca_ctx, timeout=15)
    else:
        s = smtplib.SMTP(docker_lab["host"], docker_lab["ports"][port_name], timeout=15)
        s.starttls(context=ca_ctx)
    with s:
        s.login(user, accounts[user]["password"])
        code, text = s.mail(f"{other}@{domain}")
        if code == 250:  # smtpd_delay_reject: the refusal comes at RCPT
            code, text = s.rcpt(f"{user}@{domain}")
        assert code == 553 and b"not owned by user " + user.encode() in text, (code, text)
        s.rset()
        # Its own address, and an address no account owns, are fine.
        for sender in (f"{user}@{domain}", f"probe@{domain}"):
            assert s.mail(sender)[0] == 250
            assert s.rcpt(f"{user}@{domain}")[0] == 250, sender
            s.rset()


# -- the resolver ----------------------------------------------------------------------------

def test_resolver_serves_the_lab_zones(docker_lab, paths):
    server = docker_lab["resolver"]["host"]
    domain = docker_lab["domain"]

    def ask(name, qtype):
        answer = dns.query(server, name, qtype, port=docker_lab["resolver"]["port"])
        assert answer.rcode_name == "NOERROR", (name, qtype, answer)
        return answer.answers

    assert ask(domain, "MX") == [(10, f"mail.{domain}")]
    assert ask(f"mail.{domain}", "A") == [docker_lab["host"]]
    assert ask(paths["outside_domain"], "MX") == [(10, paths["outside_mx"])]
    assert ask(paths["bounce_domain"], "MX") == [(10, paths["outside_mx"])]
    assert ask(paths["outside_mx"], "A") == [paths["outside_host"]]
    spf = ask(domain, "TXT")
    assert spf == [f"v=spf1 ip4:{docker_lab['host']} ip6:::1 include:{paths['outside_domain']} -all"]
    assert ask(f"_dmarc.{domain}", "TXT")[0].startswith("v=DMARC1; p=none")
    assert ask(f"_dmarc.{paths['baddkim_domain']}", "TXT")[0].startswith("v=DMARC1; p=none")
    # The lab domain publishes its signing key; baddkim.test publishes another one.
    dkim_dir = Path(docker_lab["ca_path"]).parents[1] / "dkim"
    for dom, matches in ((domain, True), (paths["baddkim_domain"], False)):
        published = ask(f"{paths['dkim_selector']}._domainkey.{dom}", "TXT")[0]
        key = serialization.load_pem_private_key((dkim_dir / f"{dom}.key").read_bytes(), None)
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        assert (published.split("p=", 1)[1] == base64.b64encode(der).decode()) is matches, dom


@pytest.mark.parametrize("name", ["example.com", "com", ".", "localhost.example.org"])
def test_resolver_refuses_everything_else(docker_lab, name):
    for tcp in (False, True):
        answer = dns.query(docker_lab["resolver"]["host"], name, "A", tcp=tcp)
        assert answer.rcode_name == "REFUSED" and not answer.answers, (name, answer)


def test_resolver_config_has_no_way_out(outside):
    conf = outside.file("/etc/unbound/lab.conf").content_string
    assert 'local-zone: "." refuse' in conf
    for forbidden in ("forward-zone", "stub-zone", "root-hints", "auto-trust-anchor-file"):
        assert forbidden not in conf


def test_mta_containers_use_the_lab_resolver(docker_lab, mta, outside):
    expected = f"nameserver {docker_lab['resolver']['host']}"
    for host in (mta, outside):
        lines = [ln for ln in host.file("/etc/resolv.conf").content_string.splitlines()
                 if ln.startswith("nameserver")]
        assert lines == [expected]
    # OpenDKIM's libunbound forwards to it too (it would recurse from the root otherwise).
    ub = mta.file("/etc/opendkim/unbound.conf").content_string
    assert f"forward-addr: {docker_lab['resolver']['host']}" in ub
    # The host's own resolver configuration is not the containers' one.
    assert Path("/etc/resolv.conf").read_text() != mta.file("/etc/resolv.conf").content_string
    # The SMTP clients send from loopback addresses only.
    assert mta.run("postconf -h smtp_bind_address").stdout.strip() == "127.0.0.1"
    assert outside.run("postconf -h smtp_bind_address").stdout.strip() == docker_lab["paths"]["outside_host"]


def test_describe_paths(docker_lab, paths, ports):
    assert paths["outside_port"] == ports["outside_smtp"]
    assert docker_lab["port_kinds"]["outside_smtp"]["host"] == paths["outside_host"]
    assert paths["open_relay_port"] == ports["smtp_openrelay"]
    assert docker_lab["port_kinds"]["smtp_openrelay"]["tls"] == "none"
    assert paths["authserv_id"] == f"mail.{docker_lab['domain']}"
    assert paths["resolver"] == docker_lab["resolver"]["host"]
    for key in ("loop_address", "bounce_address", "baddkim_sender"):
        assert "{user}" in paths[key]
