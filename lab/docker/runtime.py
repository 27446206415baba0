"""The lab's runtime directory: TLS material and accounts, made on the host.

``<state>/runtime`` is mounted read-only at ``/lab`` in both containers::

    certs/ca.pem          lab CA (what clients trust: describe's ca_path)
    certs/server.pem      server certificate + lab CA, names: localhost,
                          127.0.0.1, ::1, the domain and mail.<domain>
    certs/server.key
    certs/rogue-ca.pem    a second CA nobody trusts
    certs/rogue.pem       same names, issued by the rogue CA (the *_badcert ports)
    certs/rogue.key
    users                 Dovecot passwd-file, {PLAIN} passwords (APOP and
                          CRAM-MD5 need them recoverable)
    meta.json             domain and names the certificates were made for

The material is kept between runs and remade when the domain or the account
list changes, when a certificate is near its end, or on ``certs --force``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import string
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import LabConfig

CERT_FILES = ("ca.pem", "server.pem", "server.key", "rogue-ca.pem", "rogue.pem", "rogue.key")
RENEW_BEFORE = datetime.timedelta(days=7)


def server_names(domain: str) -> list[str]:
    return ["localhost", "127.0.0.1", "::1", domain, f"mail.{domain}"]


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mailops.health lab"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def make_ca(common_name: str, now: datetime.datetime):
    key = _key()
    name = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True,
            crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_leaf(ca_key, ca_cert, names: list[str], now: datetime.datetime):
    key = _key()
    alt: list[x509.GeneralName] = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=397))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=True,
            data_encipherment=False, key_agreement=False, key_cert_sign=False,
            crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_certs(cert_dir: Path, domain: str) -> None:
    cert_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    names = server_names(domain)
    ca_key, ca = make_ca("mailops lab CA", now)
    key, leaf = make_leaf(ca_key, ca, names, now)
    rogue_ca_key, rogue_ca = make_ca("mailops ROGUE CA (not trusted)", now)
    rkey, rleaf = make_leaf(rogue_ca_key, rogue_ca, names, now)
    # The private keys are throwaway lab keys; 0600 is enough because the
    # daemons read them as root in the containers.
    _write(cert_dir / "ca.pem", _pem(ca), 0o644)
    _write(cert_dir / "server.pem", _pem(leaf) + _pem(ca), 0o644)
    _write(cert_dir / "server.key", _key_pem(key), 0o600)
    _write(cert_dir / "rogue-ca.pem", _pem(rogue_ca), 0o644)
    _write(cert_dir / "rogue.pem", _pem(rleaf) + _pem(rogue_ca), 0o644)
    _write(cert_dir / "rogue.key", _key_pem(rkey), 0o600)


def _certs_valid(cert_dir: Path) -> bool:
    if not all((cert_dir / f).is_file() for f in CERT_FILES):
        return False
    now = datetime.datetime.now(datetime.timezone.utc)
    for f in ("ca.pem", "server.pem", "rogue.pem"):
        try:
            cert = x509.load_pem_x509_certificate((cert_dir / f).read_bytes())
        except ValueError:
            return False
        if cert.not_valid_after_utc - now < RENEW_BEFORE:
            return False
    return True


def read_users(path: Path) -> dict[str, str]:
    users: dict[str, str] = {}
    if not path.is_file():
        return users
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, pw = line.split(":", 2)[:2]
        users[name] = pw.removeprefix("{PLAIN}")
    return users


def _password(length: int = 16) -> str:
    # Letters and digits only: safe in a passwd-file, a shell line or a YAML value.
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _index in range(length))


def write_users(path: Path, usernames: list[str], keep: Optional[dict[str, str]] = None) -> dict[str, str]:
    keep = keep or {}
    users = {u: keep.get(u) or _password() for u in usernames}
    lines = ["# Dovecot passwd-file made by `python -m lab.docker`: user:{PLAIN}password"]
    lines += [f"{u}:{{PLAIN}}{pw}::::::" for u, pw in users.items()]
    # Readable by Dovecot's auth process whatever uid the runtime dir maps to.
    _write(path, ("\n".join(lines) + "\n").encode(), 0o644)
    return users


def ensure_runtime(cfg: LabConfig, force: bool = False) -> dict:
    """Make (or keep) certs and accounts for ``cfg``; returns what changed."""
    rt = cfg.runtime_dir
    rt.mkdir(parents=True, exist_ok=True)
    meta_path = rt / "meta.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError):
        meta = {}
    cert_dir = rt / "certs"
    made_certs = False
    if force or meta.get("names") != server_names(cfg.domain) or not _certs_valid(cert_dir):
        write_certs(cert_dir, cfg.domain)
        made_certs = True
    old = {} if force else read_users(cfg.users_path)
    wanted = cfg.usernames()
    made_users = False
    if list(old) != wanted:
        write_users(cfg.users_path, wanted, keep=old)
        made_users = True
    meta = {"domain": cfg.domain, "names": server_names(cfg.domain)}
    _write(meta_path, (json.dumps(meta, indent=2) + "\n").encode(), 0o644)
    return {"certs": made_certs, "users": made_users}


def runtime_fingerprint(cfg: LabConfig) -> str:
    """Changes whenever what the containers read from /lab changes."""
    import hashlib
    h = hashlib.sha256()
    for f in [*(cfg.runtime_dir / "certs" / n for n in CERT_FILES), cfg.users_path]:
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes() if f.is_file() else b"-")
    return h.hexdigest()[:16]
