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
    dkim/<domain>.key     DKIM signing keys (RSA 2048) of the lab MTA: the lab domain
                          and baddkim.test, selector ``lab``
    dkim/<domain>.dns     the TXT value the lab resolver publishes at
                          lab._domainkey.<domain>: the signing key's public half for
                          the lab domain, the public half of ANOTHER key for
                          baddkim.test (so its signatures fail)
    meta.json             domain and names the certificates were made for

The material is kept between runs and remade when the domain or the account
list changes, when a certificate is near its end, or on ``certs --force``.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import string
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import pki
from .config import BADDKIM_DOMAIN, LabConfig

CERT_FILES = ("ca.pem", "server.pem", "server.key", "rogue-ca.pem", "rogue.pem", "rogue.key")
RENEW_BEFORE = datetime.timedelta(days=7)
ORGANIZATION = "mailops.health lab"


def server_names(domain: str) -> list[str]:
    return ["localhost", "127.0.0.1", "::1", domain, f"mail.{domain}"]


def write_certs(cert_dir: Path, domain: str) -> None:
    """The lab CA and its server certificate, and a rogue CA with one for the same names.
    RSA keys: what Postfix and Dovecot are most often run with."""
    cert_dir.mkdir(parents=True, exist_ok=True)
    names = server_names(domain)
    ca = pki.make_ca("mailops lab CA", ORGANIZATION, pki.KEY_RSA)
    leaf = pki.issue(ca, names, ORGANIZATION, pki.KEY_RSA)
    rogue_ca = pki.make_ca("mailops ROGUE CA (not trusted)", ORGANIZATION, pki.KEY_RSA)
    rogue_leaf = pki.issue(rogue_ca, names, ORGANIZATION, pki.KEY_RSA)
    # The private keys are throwaway lab keys; 0600 is enough because the
    # daemons read them as root in the containers.
    pki.write_file(cert_dir / "ca.pem", ca.cert_pem)
    pki.write_file(cert_dir / "server.pem", leaf.cert_pem + ca.cert_pem)
    pki.write_file(cert_dir / "server.key", leaf.key_pem, 0o600)
    pki.write_file(cert_dir / "rogue-ca.pem", rogue_ca.cert_pem)
    pki.write_file(cert_dir / "rogue.pem", rogue_leaf.cert_pem + rogue_ca.cert_pem)
    pki.write_file(cert_dir / "rogue.key", rogue_leaf.key_pem, 0o600)


def _certs_valid(cert_dir: Path) -> bool:
    if not all((cert_dir / f).is_file() for f in CERT_FILES):
        return False
    now = pki.now()
    for f in ("ca.pem", "server.pem", "rogue.pem"):
        try:
            cert = x509.load_pem_x509_certificate((cert_dir / f).read_bytes())
        except ValueError:
            return False
        if cert.not_valid_after_utc - now < RENEW_BEFORE:
            return False
    return True


def dkim_domains(cfg: LabConfig) -> list[str]:
    return [cfg.domain, BADDKIM_DOMAIN]


def dkim_files(cfg: LabConfig) -> list[Path]:
    d = cfg.runtime_dir / "dkim"
    return [d / f"{dom}.{ext}" for dom in dkim_domains(cfg) for ext in ("key", "dns")]


def _dkim_record(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def write_dkim(cfg: LabConfig, force: bool = False) -> bool:
    """A signing key and its DNS record per DKIM domain; for baddkim.test the record is
    the public half of a second key, thrown away.  Kept when present.  True when made."""
    made = False
    d = cfg.runtime_dir / "dkim"
    d.mkdir(parents=True, exist_ok=True)
    for dom in dkim_domains(cfg):
        key_path, dns_path = d / f"{dom}.key", d / f"{dom}.dns"
        if not force and key_path.is_file() and dns_path.is_file():
            continue
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        published = key if dom != BADDKIM_DOMAIN else \
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        # Read as root by the MTA's entrypoint, which hands OpenDKIM its own copy.
        pki.write_file(key_path, pem, 0o600)
        pki.write_file(dns_path, (_dkim_record(published) + "\n").encode())
        made = True
    return made


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
    pki.write_file(path, ("\n".join(lines) + "\n").encode())
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
    made_dkim = write_dkim(cfg, force=force)
    meta = {"domain": cfg.domain, "names": server_names(cfg.domain)}
    pki.write_file(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    return {"certs": made_certs, "users": made_users, "dkim": made_dkim}


def runtime_fingerprint(cfg: LabConfig) -> str:
    """Changes whenever what the containers read from /lab changes."""
    h = hashlib.sha256()
    for f in [*(cfg.runtime_dir / "certs" / n for n in CERT_FILES), cfg.users_path, *dkim_files(cfg)]:
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes() if f.is_file() else b"-")
    return h.hexdigest()[:16]
