"""IMAP in the Docker lab: the special-use folders, Sieve filing into Junk, IDLE pushing a delivery
(stdlib imaplib/smtplib against the running lab)."""

from __future__ import annotations

import functools
import imaplib
import re
import smtplib
import ssl
import statistics
import time

import pytest

from docker_lab_helpers import eventually, token

USER = "bob"  # a lab-test account (the matrix uses alice and rt01..rt05 only for their own roles)
SPECIAL_USE = {"Junk": "\\Junk", "Trash": "\\Trash", "Sent": "\\Sent"}
LIST_LINE = re.compile(rb'^\((?P<attrs>[^)]*)\) (?:"[^"]*"|NIL) "?(?P<name>[^"]*)"?$')


def _imaps(docker_lab, ports, ca_ctx, user=USER):
    m = imaplib.IMAP4_SSL(docker_lab["host"], ports["imaps"], ssl_context=ca_ctx, timeout=15)
    m.login(user, {a["username"]: a for a in docker_lab["accounts"]}[user]["password"])
    return m


def _folders(m) -> dict[str, set[str]]:
    typ, data = m.list()
    assert typ == "OK", data
    found = {}
    for line in data:
        match = LIST_LINE.match(line)
        assert match, line
        found[match.group("name").decode()] = set(match.group("attrs").decode().split())
    return found


def _uids_with(m, folder: str, tok: str) -> list[bytes]:
    typ, _data = m.select(folder)
    assert typ == "OK", (folder, _data)
    typ, data = m.uid("SEARCH", None, "HEADER", "Message-ID", tok)
    assert typ == "OK", data
    return data[0].split()


def _remove(m, folder: str, uids: list[bytes]) -> None:
    if uids:
        m.select(folder)
        m.uid("STORE", b",".join(uids).decode(), "+FLAGS.SILENT", "(\\Deleted)")
        m.expunge()


def _mail(tok: str, subject: str, extra_headers: str = "") -> str:
    return (f"From: alice@lab.test\r\nTo: {USER}@lab.test\r\nSubject: {subject}\r\n"
            f"Message-ID: <{tok}@lab.test>\r\n{extra_headers}\r\nsieve body {tok}\r\n")


# -- folders ------------------------------------------------------------------------

@pytest.mark.parametrize("port_name", ["imap", "imaps", "imap_nostarttls", "imap_badcert"])
def test_every_account_has_the_special_use_folders(docker_lab, ports, ca_ctx, accounts, port_name):
    host = docker_lab["host"]
    if port_name == "imap":
        m = imaplib.IMAP4(host, ports[port_name], timeout=15)
        m.starttls(ca_ctx)
    elif port_name == "imaps":
        m = imaplib.IMAP4_SSL(host, ports[port_name], ssl_context=ca_ctx, timeout=15)
    elif port_name == "imap_badcert":
        m = imaplib.IMAP4_SSL(host, ports[port_name], ssl_context=ssl._create_unverified_context(), timeout=15)
    else:
        m = imaplib.IMAP4(host, ports[port_name], timeout=15)
    try:
        m.login("alice", accounts["alice"]["password"])
        assert "SPECIAL-USE" in m.capability()[1][0].decode().upper().split()
        folders = _folders(m)
        assert set(folders) == {"INBOX", *SPECIAL_USE}
        for name, attribute in SPECIAL_USE.items():
            assert attribute in folders[name], (name, folders[name])
        typ, data = m.lsub()
        assert typ == "OK" and all(any(name.encode() in line for line in data) for name in SPECIAL_USE), data
    finally:
        m.logout()


# -- Sieve ----------------------------------------------------------------------------

def test_sieve_files_marked_mail_into_junk_and_the_rest_into_inbox(docker_lab, ports, ca_ctx):
    # The same markers as the embedded lab: X-Lab-Junk: yes, or [lab-junk] in the Subject; either case.
    cases = {
        "header": ("sieve by header", "X-Lab-Junk: yes\r\n", "Junk"),
        "header-upper": ("sieve by header, other case", "x-lab-junk: YES\r\n", "Junk"),
        "subject": ("Offer [LAB-JUNK] inside", "", "Junk"),
        "plain": ("an ordinary mail", "", "INBOX"),
        "header-no": ("not junk", "X-Lab-Junk: no\r\n", "INBOX"),
    }
    tokens = {case: token() for case in cases}
    with smtplib.SMTP(docker_lab["host"], ports["smtp"], timeout=15) as s:
        for case, (subject, headers, _folder) in cases.items():
            assert s.sendmail("alice@lab.test", [f"{USER}@lab.test"], _mail(tokens[case], subject, headers)) == {}
    m = _imaps(docker_lab, ports, ca_ctx)
    try:
        for case, (_subject, _headers, folder) in cases.items():
            other = "INBOX" if folder == "Junk" else "Junk"
            uids = eventually(functools.partial(_uids_with, m, folder, tokens[case]), timeout=30)
            assert len(uids) == 1, case
            assert _uids_with(m, other, tokens[case]) == [], f"{case}: also in {other}"
            _remove(m, folder, uids)
    finally:
        m.logout()


def test_sieve_is_the_global_script_in_lmtp(mailbox):
    conf = "/etc/dovecot/lab/main.conf"
    out = mailbox.run(f"doveconf -c {conf} -h -f protocol=lmtp mail_plugins")
    assert out.rc == 0 and "sieve" in out.stdout.split(), out.stdout + out.stderr
    out = mailbox.run(f"doveconf -c {conf} -h plugin/sieve_before")
    assert out.stdout.strip() == "/etc/dovecot/sieve/lab-junk.sieve"
    # compiled at start (LMTP runs as vmail and cannot write next to it)
    assert mailbox.file("/etc/dovecot/sieve/lab-junk.svbin").is_file


# -- IDLE -----------------------------------------------------------------------------

def test_idle_is_on_with_dovecot_defaults(mailbox, docker_lab, ports, ca_ctx):
    out = mailbox.run("doveconf -c /etc/dovecot/lab/main.conf -h imap_idle_notify_interval")
    assert out.stdout.strip() == "2 mins"  # Dovecot's default: "* OK Still here" every 2 minutes
    m = _imaps(docker_lab, ports, ca_ctx)
    try:
        assert "IDLE" in m.capabilities
    finally:
        m.logout()


def _idle_until_exists(m, deliver, timeout=15.0) -> tuple[float, float]:
    """IDLE on the selected folder, deliver(), then wait for an EXISTS push: (delivery seconds,
    seconds from the end of the delivery to the push)."""
    tag = m._new_tag()
    m.send(tag + b" IDLE\r\n")
    assert m.readline().startswith(b"+"), "IDLE not accepted"
    m.sock.settimeout(timeout)
    start = time.monotonic()
    deliver()
    delivered = time.monotonic()
    while True:
        line = m.readline()
        assert line, "connection closed during IDLE"
        if line.startswith(b"* ") and line.rstrip().endswith(b" EXISTS"):
            pushed = time.monotonic()
            break
    m.send(b"DONE\r\n")
    while not m.readline().startswith(tag):
        pass
    return delivered - start, pushed - delivered


def _deliver(docker_lab, ports, path, tok) -> None:
    """One mail to USER straight to Dovecot's LMTP listener, or through Postfix (port 25)."""
    client = smtplib.LMTP(docker_lab["host"], ports["lmtp"]) if path == "lmtp" else \
        smtplib.SMTP(docker_lab["host"], ports["smtp"], timeout=15)
    with client:
        assert client.sendmail("alice@lab.test", [f"{USER}@lab.test"], _mail(tok, f"idle {tok}")) == {}


@pytest.mark.parametrize("path", ["lmtp", "smtp"])
def test_idle_pushes_exists_for_a_delivery(docker_lab, ports, ca_ctx, capsys, path):
    """A client in IDLE hears of a new mail about half a second after Dovecot stored it (LMTP's 250
    reply), or after Postfix accepted it (SMTP, which adds the queue and the LMTP hop)."""
    m = _imaps(docker_lab, ports, ca_ctx)
    delays, tokens = [], []
    try:
        m.select("INBOX")
        for _round in range(3):
            tok = token()
            tokens.append(tok)
            _took, delay = _idle_until_exists(m, functools.partial(_deliver, docker_lab, ports, path, tok))
            delays.append(delay)
        with capsys.disabled():
            print(f"\nIDLE push after {path} delivery: " + ", ".join(f"{d * 1000:.0f} ms" for d in delays)
                  + f" (median {statistics.median(delays) * 1000:.0f} ms)")
        # A push, not the 30 s fallback poll (mailbox_idle_check_interval): Dovecot 2.3 pushes
        # about 0.5 s after the delivery.
        assert max(delays) < 5.0, delays
        for tok in tokens:
            _remove(m, "INBOX", eventually(functools.partial(_uids_with, m, "INBOX", tok), timeout=30))
    finally:
        m.logout()
