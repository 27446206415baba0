"""Throwaway TLS material for one lab run, made with lab/pki.py (the Docker lab's helper too).

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
* selfsigned: the right names, signed by its own key and by no CA; OpenSSL
  says "self-signed certificate".

Keys are ECDSA P-256: quick to make at every start.
"""

from __future__ import annotations

import datetime
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from .. import pki
from .variants import (
    CERT_EXPIRED,
    CERT_GOOD,
    CERT_ROGUE,
    CERT_SELFSIGNED,
    CERT_WRONGNAME,
)

if TYPE_CHECKING:
    import trustme

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
WRONG_NAME = "wrong.invalid"
ORGANIZATION = "mailops embedded lab"


class LabCerts:
    """A lab CA, a rogue CA and the five server certificates, as PEM files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.authority = pki.make_ca("mailops embedded lab CA", ORGANIZATION)
        self.rogue_authority = pki.make_ca("mailops rogue CA", ORGANIZATION)
        now = pki.now()
        leaves = {
            CERT_GOOD: pki.issue(self.authority, SERVER_NAMES, ORGANIZATION),
            CERT_ROGUE: pki.issue(self.rogue_authority, SERVER_NAMES, ORGANIZATION),
            CERT_WRONGNAME: pki.issue(self.authority, [WRONG_NAME], ORGANIZATION),
            CERT_EXPIRED: pki.issue(self.authority, SERVER_NAMES, ORGANIZATION,
                                    not_before=now - datetime.timedelta(days=30),
                                    not_after=now - datetime.timedelta(days=1)),
            CERT_SELFSIGNED: pki.self_signed(SERVER_NAMES, "mailops self-signed server"),
        }
        self.ca_path = self.directory / "lab-ca.pem"
        pki.write_file(self.ca_path, self.authority.cert_pem)
        # Written too so a test can deliberately trust the rogue CA.
        self.rogue_ca_path = self.directory / "rogue-ca.pem"
        pki.write_file(self.rogue_ca_path, self.rogue_authority.cert_pem)
        self._files: dict[str, tuple[Path, Path]] = {}
        for kind, leaf in leaves.items():
            cert_path = self.directory / f"{kind}-cert.pem"
            key_path = self.directory / f"{kind}-key.pem"
            pki.write_file(cert_path, leaf.cert_pem)
            pki.write_file(key_path, leaf.key_pem, 0o600)
            self._files[kind] = (cert_path, key_path)
        # The self-signed certificate is its own trust anchor: a test may
        # trust this file to show that only the chain was the problem.
        self.selfsigned_path = self._files[CERT_SELFSIGNED][0]

    @property
    def ca(self) -> "trustme.CA":
        """The lab CA as a ``trustme.CA`` (for tests that issue certificates of their own)."""
        import trustme
        return trustme.CA.from_pem(self.authority.cert_pem, self.authority.key_pem)

    def server_context(self, kind: str = CERT_GOOD) -> ssl.SSLContext:
        """A server-side context presenting the ``kind`` certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # Purpose.CLIENT_AUTH leaves verify_mode at CERT_NONE: the lab never
        # asks for client certificates.
        cert_path, key_path = self._files[kind]
        ctx.load_cert_chain(str(cert_path), str(key_path))
        return ctx
