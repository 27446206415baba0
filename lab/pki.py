"""Certificates for both labs: CAs, server certificates they issue, self-signed ones, PEM files.

The Docker lab (lab/docker/runtime.py) keeps RSA certificates in its state dir for Postfix and
Dovecot; the embedded lab (lab/embedded/certs.py) makes ECDSA ones at every start.  A CA and a
certificate it issues pass Python 3.13's strict verification (VERIFY_X509_STRICT): the CA has
critical basicConstraints and keyUsage and a subject key identifier, the certificate an
authority key identifier naming its CA.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from pathlib import Path
from typing import Optional, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]

KEY_RSA = "rsa"  # RSA 2048
KEY_EC = "ec"    # ECDSA P-256
CA_DAYS = 3650
SERVER_DAYS = 397  # the longest a public CA may issue for


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def new_key(key_type: str) -> PrivateKey:
    if key_type == KEY_RSA:
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == KEY_EC:
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unknown key type {key_type!r}: {KEY_RSA} or {KEY_EC}")


def subject(common_name: str, organization: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def alt_names(names: Sequence[str]) -> x509.SubjectAlternativeName:
    """IP literals as IP addresses, everything else as DNS names."""
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(general)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, content_commitment=False, key_encipherment=not ca,
        data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
        encipher_only=False, decipher_only=False)


@dataclasses.dataclass(frozen=True)
class Issued:
    """A certificate and its private key."""

    key: PrivateKey
    cert: x509.Certificate

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption())


def make_ca(common_name: str, organization: str, key_type: str = KEY_EC,
            start: Optional[datetime.datetime] = None, days: int = CA_DAYS) -> Issued:
    """A root CA that may sign server certificates only (path length 0)."""
    start = start or now()
    key = new_key(key_type)
    name = subject(common_name, organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(hours=1))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def issue(ca: Issued, names: Sequence[str], organization: str, key_type: str = KEY_EC,
          not_before: Optional[datetime.datetime] = None,
          not_after: Optional[datetime.datetime] = None) -> Issued:
    """A server certificate from ``ca`` for ``names`` (the first is also the common name);
    valid from an hour ago for SERVER_DAYS unless told otherwise."""
    start = now()
    key = new_key(key_type)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject(names[0], organization))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or start - datetime.timedelta(hours=1))
        .not_valid_after(not_after or start + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(alt_names(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(key, cert)


def self_signed(names: Sequence[str], organization: str, key_type: str = KEY_EC,
                days: int = 30) -> Issued:
    """A server certificate signed by its own key and by no CA.  No keyUsage and no key
    identifiers, so that OpenSSL reports it as a "self-signed certificate", and a client that
    trusts this very file accepts it."""
    start = now()
    key = new_key(key_type)
    name = subject(names[0], organization)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(days=1))
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(alt_names(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, cert)


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` with ``mode`` so that a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
