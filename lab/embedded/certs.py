"""Throwaway TLS material for one lab run, made with trustme.

Five server certificates exist so that clients can be tested against every
way verification should go:

* good: issued by the lab CA for localhost, 127.0.0.1 and ::1; a client
  trusting ``ca_path`` accepts it on either loopback address.
* rogue: right names, but from a second, unrelated CA; a client trusting only
  the lab CA must reject it (unknown issuer).
* wrongname: from the lab CA, but only for ``wrong.invalid``; the chain
  verifies, the hostname check must fail.
* expired: from the lab CA with the right names, but its validity ended
  yesterday; OpenSSL says "certificate has expired".
* selfsigned: the right names, signed by its own key and by no CA (made with
  ``cryptography``, which trustme is built on); OpenSSL says "self-signed
  certificate".
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .variants import (
    CERT_EXPIRED,
    CERT_GOOD,
    CERT_ROGUE,
    CERT_SELFSIGNED,
    CERT_WRONGNAME,
)

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
WRONG_NAME = "wrong.invalid"


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A self-signed leaf for SERVER_NAMES: (cert PEM path, key PEM path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME,
                           "mailops self-signed server"),
        x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAMES[0]),
    ])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt_names: list[x509.GeneralName] = [x509.DNSName(SERVER_NAMES[0])]
    alt_names += [x509.IPAddress(ipaddress.ip_address(a))
                  for a in SERVER_NAMES[1:]]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                       critical=True)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.ExtendedKeyUsage(
            [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "selfsigned-cert.pem"
    key_path = directory / "selfsigned-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return cert_path, key_path


class LabCerts:
    """A lab CA, a rogue CA and the five server certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca = trustme.CA(organization_name="mailops embedded lab CA")
        self.rogue_ca = trustme.CA(organization_name="mailops rogue CA")
        now = datetime.datetime.now(datetime.timezone.utc)
        self._leaves = {
            CERT_GOOD: self.ca.issue_cert(*SERVER_NAMES),
            CERT_ROGUE: self.rogue_ca.issue_cert(*SERVER_NAMES),
            CERT_WRONGNAME: self.ca.issue_cert(WRONG_NAME),
            CERT_EXPIRED: self.ca.issue_cert(
                *SERVER_NAMES,
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1)),
        }
        self.ca_path = self.directory / "lab-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        # Written too so a test can deliberately trust the rogue CA.
        self.rogue_ca_path = self.directory / "rogue-ca.pem"
        self.rogue_ca.cert_pem.write_to_path(str(self.rogue_ca_path))
        # The self-signed certificate is its own trust anchor: a test may
        # trust this file to show that only the chain was the problem.
        self.selfsigned_path, self._selfsigned_key = _self_signed(
            self.directory)

    def server_context(self, kind: str = CERT_GOOD) -> ssl.SSLContext:
        """A server-side context presenting the ``kind`` certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # Purpose.CLIENT_AUTH leaves verify_mode at CERT_NONE: the lab never
        # asks for client certificates.
        if kind == CERT_SELFSIGNED:
            ctx.load_cert_chain(str(self.selfsigned_path),
                                str(self._selfsigned_key))
        else:
            self._leaves[kind].configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only the lab CA (handy in tests)."""
        return ssl.create_default_context(cafile=str(self.ca_path))
