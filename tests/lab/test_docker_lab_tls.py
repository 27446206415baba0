"""TLS behaviour of every port at the protocol level (stdlib smtplib/poplib/imaplib/ssl)."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import socket
import ssl

import pytest


def _smtp(host, port, ctx=None, implicit=False):
    if implicit:
        return smtplib.SMTP_SSL(host, port, context=ctx, timeout=15)
    return smtplib.SMTP(host, port, timeout=15)


# -- SMTP -------------------------------------------------------------------------

def test_smtp_25_offers_starttls_and_it_verifies(lab_host, ports, ca_ctx):
    with _smtp(lab_host, ports["smtp"]) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        s.starttls(context=ca_ctx)
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")


def test_smtp_25_does_not_require_starttls(lab_host, ports, docker_lab):
    with _smtp(lab_host, ports["smtp"]) as s:
        s.ehlo("client.test")
        code = s.mail("probe@example.com")[0]
        assert code == 250
        code = s.rcpt(f"rt01@{docker_lab['domain']}")[0]
        assert code == 250
        s.rset()


def test_smtp_25_auth_only_after_starttls(lab_host, ports, ca_ctx):
    with _smtp(lab_host, ports["smtp"]) as s:
        s.ehlo("client.test")
        assert not s.has_extn("auth")
        s.starttls(context=ca_ctx)
        s.ehlo("client.test")
        assert s.has_extn("auth")


def test_submission_requires_starttls_before_mail(lab_host, ports):
    with _smtp(lab_host, ports["submission"]) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        assert not s.has_extn("auth"), "no AUTH before TLS"
        code, msg = s.mail("alice@lab.test")
        assert code == 530, msg
        assert b"STARTTLS" in msg


def test_submission_requires_auth(lab_host, ports, ca_ctx, docker_lab):
    with _smtp(lab_host, ports["submission"]) as s:
        s.starttls(context=ca_ctx)
        s.ehlo("client.test")
        assert set(s.esmtp_features["auth"].split()) >= {"PLAIN", "LOGIN", "CRAM-MD5"}
        s.mail("alice@" + docker_lab["domain"])
        code = s.rcpt("bob@" + docker_lab["domain"])[0]
        assert code >= 500, "RCPT without AUTH must be refused on submission"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_submission_auth_mechanisms(lab_host, ports, ca_ctx, accounts, mechanism):
    with _smtp(lab_host, ports["submission"]) as s:
        s.starttls(context=ca_ctx)
        s.ehlo("client.test")
        s.user, s.password = "alice", accounts["alice"]["password"]
        method = getattr(s, "auth_" + mechanism.lower().replace("-", "_"))
        code = s.auth(mechanism, method)[0]
        assert code == 235


def test_submission_wrong_password(lab_host, ports, ca_ctx):
    with _smtp(lab_host, ports["submission"]) as s:
        s.starttls(context=ca_ctx)
        with pytest.raises(smtplib.SMTPAuthenticationError):
            s.login("alice", "not-the-password")


def test_smtps_implicit_tls_and_auth(lab_host, ports, ca_ctx, accounts):
    with _smtp(lab_host, ports["smtps"], ca_ctx, implicit=True) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        s.login("rt01", accounts["rt01"]["password"])


def test_smtps_speaks_tls_first(lab_host, ports):
    # A plain-text client gets no SMTP greeting: the server waits for a ClientHello.
    with socket.create_connection((lab_host, ports["smtps"]), timeout=3) as raw:
        raw.settimeout(1.5)
        with pytest.raises(socket.timeout):
            raw.recv(10)


def test_smtp_nostarttls_offers_no_starttls(lab_host, ports):
    with _smtp(lab_host, ports["smtp_nostarttls"]) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            s.starttls()


def test_smtp_badcert_rejected_by_lab_ca_client(lab_host, ports, ca_ctx):
    with pytest.raises(ssl.SSLCertVerificationError):
        _smtp(lab_host, ports["smtp_badcert"], ca_ctx, implicit=True)


def test_smtp_badcert_is_still_smtp(lab_host, ports):
    insecure = ssl._create_unverified_context()
    with _smtp(lab_host, ports["smtp_badcert"], insecure, implicit=True) as s:
        assert s.ehlo()[0] == 250


def test_certificate_names(ports, ca_ctx, docker_lab):
    # The lab certificate verifies under each name clients may use.
    for name in ("localhost", "127.0.0.1", docker_lab["domain"]):
        with socket.create_connection(("127.0.0.1", ports["smtps"]), timeout=10) as raw:
            with ca_ctx.wrap_socket(raw, server_hostname=name) as tls:
                assert tls.getpeercert()
    if "::1" in docker_lab["hosts"]:
        with socket.create_connection(("::1", ports["pop3s"]), timeout=10) as raw:
            with ca_ctx.wrap_socket(raw, server_hostname="::1"):
                pass


def test_wrong_name_rejected(ports, ca_ctx):
    with socket.create_connection(("127.0.0.1", ports["smtps"]), timeout=10) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ca_ctx.wrap_socket(raw, server_hostname="not-the-lab.example")


# -- POP3 -------------------------------------------------------------------------

def test_pop3_offers_stls_and_it_verifies(lab_host, ports, ca_ctx):
    p = poplib.POP3(lab_host, ports["pop3"], timeout=15)
    try:
        assert "STLS" in p.capa()
        p.stls(ca_ctx)
        assert "STLS" not in p.capa()
    finally:
        p.quit()


def test_pop3s_implicit_tls(lab_host, ports, ca_ctx):
    p = poplib.POP3_SSL(lab_host, ports["pop3s"], context=ca_ctx, timeout=15)
    try:
        assert p.getwelcome().startswith(b"+OK")
        assert "STLS" not in p.capa()
    finally:
        p.quit()


def test_pop3_nostls_offers_no_stls(lab_host, ports, ca_ctx):
    p = poplib.POP3(lab_host, ports["pop3_nostls"], timeout=15)
    try:
        assert "STLS" not in p.capa()
        with pytest.raises(poplib.error_proto):
            p.stls(ca_ctx)
    finally:
        p.close()


def test_pop3_badcert_rejected_by_lab_ca_client(lab_host, ports, ca_ctx):
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(lab_host, ports["pop3_badcert"], context=ca_ctx, timeout=15)


def test_pop3_badcert_is_still_pop3(lab_host, ports):
    p = poplib.POP3_SSL(lab_host, ports["pop3_badcert"],
                        context=ssl._create_unverified_context(), timeout=15)
    try:
        assert p.getwelcome().startswith(b"+OK")
    finally:
        p.quit()


# -- IMAP -------------------------------------------------------------------------

def test_imap_starttls_and_login(lab_host, ports, ca_ctx, accounts):
    with imaplib.IMAP4(lab_host, ports["imap"], timeout=15) as m:
        assert "STARTTLS" in m.capabilities
        m.starttls(ca_ctx)
        m.login("bob", accounts["bob"]["password"])


def test_imaps_implicit_tls(lab_host, ports, ca_ctx, accounts):
    with imaplib.IMAP4_SSL(lab_host, ports["imaps"], ssl_context=ca_ctx, timeout=15) as m:
        m.login("bob", accounts["bob"]["password"])


def test_imap_143_allows_plaintext_login_before_tls_on_loopback(lab_host, ports):
    # Dovecot counts a loopback connection (client IP = server IP) as secured: cleartext mechanisms
    # are offered before STARTTLS and LOGINDISABLED is never said (the matrix relies on this).
    with imaplib.IMAP4(lab_host, ports["imap"], timeout=15) as m:
        assert "STARTTLS" in m.capabilities
        assert "LOGINDISABLED" not in m.capabilities
        assert {"AUTH=PLAIN", "AUTH=LOGIN", "AUTH=CRAM-MD5"} <= set(m.capabilities)


def test_imaps_speaks_tls_first(lab_host, ports):
    with socket.create_connection((lab_host, ports["imaps"]), timeout=3) as raw:
        raw.settimeout(1.5)
        with pytest.raises(socket.timeout):
            raw.recv(10)


def test_imap_nostarttls_offers_no_starttls(lab_host, ports, accounts):
    with imaplib.IMAP4(lab_host, ports["imap_nostarttls"], timeout=15) as m:
        assert "STARTTLS" not in m.capabilities
        # Asked anyway, the server refuses it (imaplib itself would not even send it).
        with pytest.raises(imaplib.IMAP4.error, match="TLS support isn't enabled"):
            m._simple_command("STARTTLS")
        assert not isinstance(m.sock, ssl.SSLSocket)
        m.login("bob", accounts["bob"]["password"])  # plaintext LOGIN works there


def test_imap_badcert_rejected_by_lab_ca_client(lab_host, ports, ca_ctx):
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(lab_host, ports["imap_badcert"], ssl_context=ca_ctx, timeout=15)


def test_imap_badcert_is_still_imap_with_the_rogue_certificate(lab_host, ports, docker_lab):
    rogue_ctx = ssl.create_default_context(cafile=docker_lab["rogue_ca_path"])
    with imaplib.IMAP4_SSL(lab_host, ports["imap_badcert"], ssl_context=rogue_ctx, timeout=15) as m:
        assert m.welcome.startswith(b"* OK")
        assert "STARTTLS" not in m.capabilities
