"""APOP, and a real round trip: SMTP in Postfix -> LMTP -> Dovecot Maildir -> POP3 out."""

from __future__ import annotations

import poplib
import smtplib

import pytest

from docker_lab_helpers import APOP_TIMESTAMP, eventually, message, token


def _maildir(docker_lab, user):
    return docker_lab["maildir"].format(username=user)


def _files_with(mailbox, maildir, tok):
    out = mailbox.run(f"grep -l -r -F {tok} {maildir}/new {maildir}/cur 2>/dev/null")
    return [line for line in out.stdout.splitlines() if line]


def _container_log(docker_lab, role):
    import docker
    client = docker.DockerClient(base_url=docker_lab["docker_host"], version="auto")
    try:
        raw = client.containers.get(docker_lab["containers"][role]).logs(tail=2000)
    finally:
        client.close()
    return raw.decode(errors="replace").splitlines()


def _pop3_find(p: poplib.POP3, tok: str) -> int:
    listing = p.list()[1]
    for entry in listing:
        num = int(entry.split()[0])
        lines = p.top(num, 0)[1]
        if any(tok.encode() in line for line in lines):
            return num
    return 0


# -- APOP -------------------------------------------------------------------------

@pytest.mark.parametrize("port_name", ["pop3", "pop3s", "pop3_nostls"])
def test_pop3_banner_has_apop_timestamp(lab_host, ports, port_name):
    if port_name == "pop3s":
        p = poplib.POP3_SSL(lab_host, ports[port_name],
                            context=__import__("ssl")._create_unverified_context(), timeout=15)
    else:
        p = poplib.POP3(lab_host, ports[port_name], timeout=15)
    try:
        assert APOP_TIMESTAMP.search(p.getwelcome()), p.getwelcome()
    finally:
        p.quit()


def test_apop_login_over_stls(lab_host, ports, ca_ctx, accounts):
    p = poplib.POP3(lab_host, ports["pop3"], timeout=15)
    try:
        p.stls(ca_ctx)
        assert p.apop("rt02", accounts["rt02"]["password"]).startswith(b"+OK")
        p.stat()
    finally:
        p.quit()


def test_apop_login_over_pop3s(lab_host, ports, ca_ctx, accounts):
    p = poplib.POP3_SSL(lab_host, ports["pop3s"], context=ca_ctx, timeout=15)
    try:
        assert p.apop("rt03", accounts["rt03"]["password"]).startswith(b"+OK")
    finally:
        p.quit()


def test_apop_wrong_password_refused(lab_host, ports, ca_ctx):
    p = poplib.POP3_SSL(lab_host, ports["pop3s"], context=ca_ctx, timeout=15)
    try:
        with pytest.raises(poplib.error_proto):
            p.apop("rt03", "wrong-password")
    finally:
        p.close()


def test_user_pass_login(lab_host, ports, ca_ctx, accounts):
    p = poplib.POP3_SSL(lab_host, ports["pop3s"], context=ca_ctx, timeout=15)
    try:
        p.user("rt04")
        assert p.pass_(accounts["rt04"]["password"]).startswith(b"+OK")
    finally:
        p.quit()


def test_shared_mailbox_takes_parallel_sessions(lab_host, ports, ca_ctx, accounts):
    sessions = []
    try:
        for _session in range(12):
            p = poplib.POP3_SSL(lab_host, ports["pop3s"], context=ca_ctx, timeout=15)
            sessions.append(p)
            p.user("shared")
            p.pass_(accounts["shared"]["password"])
    finally:
        for p in sessions:
            p.quit()


# -- round trip ----------------------------------------------------------------------

def test_round_trip_smtp_lmtp_maildir_pop3(docker_lab, lab_host, ports, ca_ctx, accounts,
                                           mailbox):
    user = "rt05"
    rcpt = accounts[user]["address"]
    tok = token()
    # Port 25, no TLS (not required there), no AUTH: an MX-style delivery.
    with smtplib.SMTP(lab_host, ports["smtp"], timeout=15) as s:
        refused = s.sendmail(f"alice@{docker_lab['domain']}", [rcpt],
                             message(f"alice@{docker_lab['domain']}", rcpt, tok))
        assert refused == {}

    maildir = _maildir(docker_lab, user)
    files = eventually(lambda: _files_with(mailbox, maildir, tok), timeout=30)
    assert len(files) == 1
    path = files[0]
    f = mailbox.file(path)
    assert f.user == "vmail"
    content = f.content_string
    # Dovecot's LMTP server stamps its hop: the mail crossed Postfix -> LMTP -> Dovecot.
    assert "with LMTP" in content
    assert "(Postfix)" in content
    assert f"Delivered-To: {rcpt}" in content

    # Postfix logged the LMTP hop to the Dovecot listener (container output).
    hop = f"relay=127.0.0.1[127.0.0.1]:{ports['lmtp']}"
    assert eventually(lambda: [ln for ln in _container_log(docker_lab, "mta")
                               if f"to=<{rcpt}>" in ln and hop in ln and "status=sent" in ln])

    p = poplib.POP3(lab_host, ports["pop3"], timeout=15)
    try:
        p.stls(ca_ctx)
        p.apop(user, accounts[user]["password"])
        num = _pop3_find(p, tok)
        assert num, "message not seen over POP3"
        lines = p.retr(num)[1]
        assert any(tok.encode() in line for line in lines)
        p.dele(num)
    finally:
        p.quit()  # QUIT commits the DELE

    eventually(lambda: not _files_with(mailbox, maildir, tok), timeout=10)
    p = poplib.POP3_SSL(lab_host, ports["pop3s"], context=ca_ctx, timeout=15)
    try:
        p.apop(user, accounts[user]["password"])
        assert _pop3_find(p, tok) == 0
    finally:
        p.quit()


def test_round_trip_submission_auth_to_pop3s(docker_lab, lab_host, ports, ca_ctx,
                                             accounts, mailbox):
    sender, user = accounts["alice"], "bob"
    rcpt = accounts[user]["address"]
    tok = token()
    with smtplib.SMTP(lab_host, ports["submission"], timeout=15) as s:
        s.starttls(context=ca_ctx)
        s.login("alice", sender["password"])
        assert s.sendmail(sender["address"], [rcpt],
                          message(sender["address"], rcpt, tok)) == {}
    eventually(lambda: _files_with(mailbox, _maildir(docker_lab, user), tok), timeout=30)
    p = poplib.POP3_SSL(lab_host, ports["pop3s"], context=ca_ctx, timeout=15)
    try:
        p.apop(user, accounts[user]["password"])
        num = _pop3_find(p, tok)
        assert num
        p.dele(num)
    finally:
        p.quit()


def test_unknown_recipient_refused(docker_lab, lab_host, ports):
    with smtplib.SMTP(lab_host, ports["smtp"], timeout=15) as s:
        s.ehlo("client.test")
        s.mail("probe@example.com")
        code = s.rcpt(f"nobody-here@{docker_lab['domain']}")[0]
        assert code == 550


def test_no_relay_off_the_machine(lab_host, ports, mta):
    # Unauthenticated: relay denied.  Authenticated relaying would be accepted,
    # but every transport other than LMTP to the lab is an error: nothing leaves.
    with smtplib.SMTP(lab_host, ports["smtp"], timeout=15) as s:
        s.ehlo("client.test")
        s.mail("probe@example.com")
        code = s.rcpt("someone@example.org")[0]
        assert code == 554
    out = mta.run("postconf -h default_transport relay_transport local_transport")
    assert out.rc == 0
    assert all(line.startswith("error:") for line in out.stdout.splitlines()), out.stdout
