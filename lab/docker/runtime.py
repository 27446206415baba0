"""The lab's runtime directory: TLS material, accounts and OAuth, made on the host.

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
    oauth/keys/default/HS256/default
                          the lab's OAuth key (HS256, base64; lab.embedded.oauth's
                          save_key), in the layout Dovecot's local_validation_key_dict
                          (fs:posix) looks it up: <azp>/<alg>/<kid>
    oauth/clients.json    the token endpoint's clients: one per account (client_id =
                          the account, a random secret, scope mail) and the failure
                          clients "expired" and "wrong_scope" (config.OAUTH_FAILURE_CLIENTS)
    oauth/oauth.py        a copy of lab/embedded/oauth.py, which the mailbox container
                          runs as the token endpoint (refreshed when the source changes)
    meta.json             domain and names the certificates were made for

The material is kept between runs and remade when the domain or the account
list changes, when a certificate is near its end, or on ``certs --force``
(passwords, client secrets and the OAuth key are kept when the account list changes).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import secrets
import shutil
import string
from pathlib import Path
from typing import Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .. import pki
from ..embedded import oauth as lab_oauth
from .config import BADDKIM_DOMAIN, OAUTH_FAILURE_CLIENTS, LabConfig

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


OAUTH_SOURCE = Path(lab_oauth.__file__).resolve()


def read_oauth_clients(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def oauth_clients(cfg: LabConfig, keep: Optional[dict[str, dict]] = None) -> dict[str, dict]:
    """The token endpoint's clients file (what ``serve --clients-file`` reads; "purpose" is
    the lab's, the endpoint ignores it).  Secrets of ``keep`` are kept."""
    keep = keep or {}

    def secret(client_id: str) -> str:
        return str(keep.get(client_id, {}).get("secret") or _password(24))

    clients: dict[str, dict] = {
        u: {"secret": secret(u), "username": u, "scopes": ["mail"], "purpose": "valid"}
        for u in cfg.usernames()}
    failing = cfg.oauth_failure_account()
    for client_id, (purpose, scopes, lifetime) in OAUTH_FAILURE_CLIENTS.items():
        clients[client_id] = {"secret": secret(client_id), "username": failing,
                              "scopes": list(scopes), "purpose": purpose}
        if lifetime is not None:
            clients[client_id]["lifetime"] = lifetime
    return clients


def write_oauth(cfg: LabConfig, force: bool = False) -> bool:
    """The OAuth key (kept), the clients file (remade when the accounts change, secrets
    kept) and the token endpoint's code.  True when the key or the clients were made."""
    made = False
    key_path = cfg.oauth_key_path
    key_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        lab_oauth.load_key(key_path)
        have_key = True
    except (OSError, ValueError):
        have_key = False
    if force or not have_key:
        # 0600: the mailbox entrypoint (root) copies it for Dovecot's auth process.
        lab_oauth.save_key(key_path, lab_oauth.make_key())
        made = True
    old = {} if force else read_oauth_clients(cfg.oauth_clients_path)
    wanted = oauth_clients(cfg, keep=old)
    if wanted != old:
        # The secrets: 0600 like the key; the entrypoint hands the endpoint its own copy.
        pki.write_file(cfg.oauth_clients_path,
                       (json.dumps(wanted, indent=2) + "\n").encode(), 0o600)
        made = True
    code = cfg.oauth_dir / "oauth.py"
    source = OAUTH_SOURCE.read_bytes()
    if not code.is_file() or code.read_bytes() != source:
        tmp = code.with_suffix(".tmp")
        shutil.copyfile(OAUTH_SOURCE, tmp)
        tmp.chmod(0o644)
        tmp.replace(code)
    return made


def oauth_files(cfg: LabConfig) -> list[Path]:
    return [cfg.oauth_key_path, cfg.oauth_clients_path, cfg.oauth_dir / "oauth.py"]


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
    made_oauth = write_oauth(cfg, force=force)
    meta = {"domain": cfg.domain, "names": server_names(cfg.domain)}
    pki.write_file(meta_path, (json.dumps(meta, indent=2) + "\n").encode())
    return {"certs": made_certs, "users": made_users, "dkim": made_dkim, "oauth": made_oauth}


def runtime_fingerprint(cfg: LabConfig) -> str:
    """Changes whenever what the containers read from /lab changes."""
    h = hashlib.sha256()
    for f in [*(cfg.runtime_dir / "certs" / n for n in CERT_FILES), cfg.users_path, *dkim_files(cfg),
              *oauth_files(cfg)]:
        h.update(f.name.encode() + b"\0")
        h.update(f.read_bytes() if f.is_file() else b"-")
    return h.hexdigest()[:16]
