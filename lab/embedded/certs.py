"""Throwaway TLS material for one lab run, made with trustme.

Three server certificates exist so that clients can be tested against every
way verification should go:

* good: issued by the lab CA for localhost, 127.0.0.1 and ::1; a client
  trusting ``ca_path`` accepts it on either loopback address.
* rogue: right names, but from a second, unrelated CA; a client trusting only
  the lab CA must reject it (unknown issuer).
* wrongname: from the lab CA, but only for ``wrong.invalid``; the chain
  verifies, the hostname check must fail.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme

from .variants import CERT_GOOD, CERT_ROGUE, CERT_WRONGNAME

SERVER_NAMES = ("localhost", "127.0.0.1", "::1")
WRONG_NAME = "wrong.invalid"


class LabCerts:
    """A lab CA, a rogue CA and the three server certificates."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.ca = trustme.CA(organization_name="mailops embedded lab CA")
        self.rogue_ca = trustme.CA(organization_name="mailops rogue CA")
        self._leaves = {
            CERT_GOOD: self.ca.issue_cert(*SERVER_NAMES),
            CERT_ROGUE: self.rogue_ca.issue_cert(*SERVER_NAMES),
            CERT_WRONGNAME: self.ca.issue_cert(WRONG_NAME),
        }
        self.ca_path = self.directory / "lab-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        # Written too so a test can deliberately trust the rogue CA.
        self.rogue_ca_path = self.directory / "rogue-ca.pem"
        self.rogue_ca.cert_pem.write_to_path(str(self.rogue_ca_path))

    def server_context(self, kind: str = CERT_GOOD) -> ssl.SSLContext:
        """A server-side context presenting the ``kind`` certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        # Purpose.CLIENT_AUTH leaves verify_mode at CERT_NONE: the lab never
        # asks for client certificates.
        self._leaves[kind].configure_cert(ctx)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only the lab CA (handy in tests)."""
        return ssl.create_default_context(cafile=str(self.ca_path))
