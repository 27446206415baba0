"""The table of listeners the embedded lab starts, and the hook type.

Every listener is one *variant* of a protocol: the same server code with a
different TLS mode, certificate or feature set.  Keeping the whole matrix in
one table means a new variant is one line here, not new server code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Optional

# TLS modes of a listener.
TLS_NONE = "none"          # plaintext only, no STARTTLS/STLS offered
TLS_STARTTLS = "starttls"  # plaintext, upgrade offered (STARTTLS / STLS)
TLS_IMPLICIT = "implicit"  # TLS from the first byte (like ports 465 / 995)

# Which certificate a TLS listener presents (see certs.LabCerts).
CERT_GOOD = "good"            # lab CA, names localhost / 127.0.0.1 / ::1
CERT_ROGUE = "rogue"          # right names, unrelated CA
CERT_WRONGNAME = "wrongname"  # lab CA, but only wrong.invalid

# A per-command hook: ``await hook(conn, arg)`` runs on the lab's loop before
# the built-in command.  ``conn`` is the live connection object (it has an
# async ``push(line)``); ``arg`` is the command argument (None if absent).
# Return True when the hook fully handled the command (it sent its own
# reply), False to fall through to the built-in behaviour.  The pseudo
# command "CONNECT" runs before the greeting.  This is the seam that fault
# injection (banner delay, 554 banner, 454 on STARTTLS, -ERR on DELE...)
# plugs into.
Hook = Callable[[Any, Optional[str]], Awaitable[bool]]
Hooks = Mapping[str, Hook]


@dataclass(frozen=True)
class Variant:
    name: str
    protocol: str  # "smtp" or "pop3"
    tls: str = TLS_STARTTLS
    cert: str = CERT_GOOD
    apop: bool = True  # POP3 only: APOP timestamp in the banner + APOP command


VARIANTS: tuple[Variant, ...] = (
    Variant("smtp", "smtp", TLS_STARTTLS),
    Variant("smtp_tls", "smtp", TLS_IMPLICIT),
    Variant("smtp_plain", "smtp", TLS_NONE),
    Variant("smtp_badcert", "smtp", TLS_IMPLICIT, CERT_ROGUE),
    Variant("smtp_wrongname", "smtp", TLS_IMPLICIT, CERT_WRONGNAME),
    Variant("pop3", "pop3", TLS_STARTTLS),
    Variant("pop3_tls", "pop3", TLS_IMPLICIT),
    Variant("pop3_plain", "pop3", TLS_NONE),
    Variant("pop3_noapop", "pop3", TLS_STARTTLS, apop=False),
    Variant("pop3_badcert", "pop3", TLS_IMPLICIT, CERT_ROGUE),
    Variant("pop3_wrongname", "pop3", TLS_IMPLICIT, CERT_WRONGNAME),
)
