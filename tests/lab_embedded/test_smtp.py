"""SMTP variants of the embedded lab, driven with smtplib."""

from __future__ import annotations

import smtplib
import ssl

import pytest

from lab.embedded import EmbeddedLab

from .helpers import SENDER, message

MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5"]


def _authenticate(client: smtplib.SMTP, mechanism: str, user: str,
                  password: str, initial_response: bool = True) -> tuple:
    client.user, client.password = user, password
    method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
    return client.auth(mechanism, method, initial_response_ok=initial_response)


def test_starttls_offered_on_smtp_and_verifies(lab: EmbeddedLab,
                                               ca_ctx: ssl.SSLContext) -> None:
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert set(client.esmtp_features["auth"].split()) == set(MECHANISMS)
        code = client.starttls(context=ca_ctx)[0]
        assert code == 220
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.sock.version().startswith("TLS")
        assert _authenticate(client, "PLAIN", "alice", "alice-secret-1")[0] == 235


def test_smtp_plain_offers_no_starttls_but_auth(lab: EmbeddedLab) -> None:
    with smtplib.SMTP(lab.host, lab.ports["smtp_plain"], timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.has_extn("auth")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.starttls()


@pytest.mark.parametrize("initial_response", [True, False])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_without_tls(lab: EmbeddedLab, mechanism: str,
                          initial_response: bool) -> None:
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        code, reply = _authenticate(client, mechanism, "bob", "bob-secret-2",
                                    initial_response)
        assert (code, reply[:5]) == (235, b"2.7.0")
    with smtplib.SMTP(lab.host, lab.ports["smtp_plain"], timeout=5) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as err:
            _authenticate(client, mechanism, "bob", "bob-secret-3",
                          initial_response)
        assert err.value.smtp_code == 535
        assert err.value.smtp_error.startswith(b"5.7.8")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_unknown_user_fails(lab: EmbeddedLab, mechanism: str) -> None:
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError):
            _authenticate(client, mechanism, "mallory", "alice-secret-1")


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_implicit_tls_auth_and_send(lab: EmbeddedLab, ca_ctx: ssl.SSLContext,
                                    mechanism: str) -> None:
    with smtplib.SMTP_SSL(lab.host, lab.ports["smtp_tls"], timeout=5,
                          context=ca_ctx) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert _authenticate(client, mechanism, "alice",
                             "alice-secret-1")[0] == 235
        client.sendmail(SENDER, ["alice@lab.test"], message("over 465"))
    assert b"Subject: over 465" in lab.store.messages("alice")[0].data


def test_delivery_reply_and_unknown_recipient(lab: EmbeddedLab) -> None:
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        client.mail(SENDER)
        code, reply = client.rcpt("nobody@lab.test")
        assert code == 550 and reply.startswith(b"5.1.1")
        assert client.rcpt("alice@lab.test")[0] == 250
        assert client.rcpt("Bob@Lab.Test")[0] == 250  # by local part
        code, reply = client.data(message("queued"))
        assert code == 250
        assert reply.startswith(b"2.0.0 Ok: queued as ")
        assert len(reply.split()[-1]) >= 6
    for user in ("alice", "bob"):
        [stored] = lab.store.messages(user)
        assert stored.data == message("queued")
    assert lab.store.messages("rt01") == []


def test_all_recipients_refused(lab: EmbeddedLab) -> None:
    with smtplib.SMTP(lab.host, lab.ports["smtp_plain"], timeout=5) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail(SENDER, ["ghost@lab.test"], message("lost"))


def test_queue_ids_differ(lab: EmbeddedLab) -> None:
    replies = set()
    with smtplib.SMTP(lab.host, lab.ports["smtp"], timeout=5) as client:
        client.ehlo()
        for n in range(3):
            client.mail(SENDER)
            client.rcpt("rt01@lab.test")
            replies.add(client.data(message(f"n{n}"))[1])
    assert len(replies) == 3
    assert len(lab.store.messages("rt01")) == 3


@pytest.mark.parametrize("variant,verify_code", [
    ("smtp_badcert", {20}),    # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    # HOSTNAME_MISMATCH, or IP_ADDRESS_MISMATCH when connecting by address
    ("smtp_wrongname", {62, 64}),
])
def test_bad_certificates_are_rejected(lab: EmbeddedLab,
                                       ca_ctx: ssl.SSLContext, variant: str,
                                       verify_code: set[int]) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as err:
        smtplib.SMTP_SSL(lab.host, lab.ports[variant], timeout=5,
                         context=ca_ctx)
    assert err.value.verify_code in verify_code


def test_badcert_endpoint_is_otherwise_sound(lab: EmbeddedLab) -> None:
    # Trusting the rogue CA instead makes it work: the failure above is the
    # issuer, not a broken listener.
    assert lab.certs is not None
    rogue = ssl.create_default_context(cafile=str(lab.certs.rogue_ca_path))
    with smtplib.SMTP_SSL(lab.host, lab.ports["smtp_badcert"], timeout=5,
                          context=rogue) as client:
        assert client.noop()[0] == 250
