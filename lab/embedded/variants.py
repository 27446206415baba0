"""The table of listeners the embedded lab starts, and the hook type.

Every listener is one *variant* of a protocol: the same server code with a
different TLS mode, certificate or feature set.  Keeping the whole matrix in
one table means a new variant is one line here, not new server code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, FrozenSet, Mapping, Optional

# TLS modes of a listener.
TLS_NONE = "none"          # plaintext only, no STARTTLS/STLS offered
TLS_STARTTLS = "starttls"  # plaintext, upgrade offered (STARTTLS / STLS)
TLS_IMPLICIT = "implicit"  # TLS from the first byte (like ports 465 / 995)

# Which certificate a TLS listener presents (see certs.LabCerts).
CERT_GOOD = "good"            # lab CA, names localhost / 127.0.0.1 / ::1
CERT_ROGUE = "rogue"          # right names, unrelated CA
CERT_WRONGNAME = "wrongname"  # lab CA, but only wrong.invalid
CERT_EXPIRED = "expired"      # lab CA, right names, not_after in the past
CERT_SELFSIGNED = "selfsigned"  # right names, self-signed (no CA at all)

# A per-command hook: ``await hook(conn, arg)`` runs on the lab's loop before
# the built-in command.  ``conn`` is the live connection object (it has an
# async ``push(line)``); ``arg`` is the command argument (None if absent).
# Return True when the hook fully handled the command (it sent its own
# reply), False to fall through to the built-in behaviour.  The pseudo
# command "CONNECT" runs before the greeting.  This is the seam that fault
# injection (faults.py: banner delay, 554 banner, 454 on STARTTLS, -ERR on
# DELE...) plugs into.
#
# More pseudo commands:
# * "GREETING" (both protocols): ``arg`` is the built-in greeting line.
#   Return True when the hook sent a greeting of its own (or none): the
#   session then goes on reading commands unless the hook closed it.
# * "LOGIN" (POP3): runs after PASS or APOP proved the credentials, before
#   the maildrop is locked; ``arg`` is the user.  Return True to refuse the
#   login with a reply of the hook's own (the session stays in
#   AUTHORIZATION).
#
# Besides ``push(line)`` both kinds of ``conn`` offer ``push_bytes(data)``
# (raw, no CRLF added), ``reader`` (the asyncio.StreamReader of the client's
# bytes) and ``close()`` (end the connection once what was pushed is sent).
Hook = Callable[[Any, Optional[str]], Awaitable[bool]]
Hooks = Mapping[str, Hook]


@dataclass
class Tweaks:
    """Knobs below the hook seam, for faults a command hook cannot express.

    The defaults are the lab's normal behaviour; faults.py sets them.
    """

    # SMTP: the EHLO reply lists STARTTLS as its last line.
    starttls_last: bool = False
    # SMTP: every AUTH verdict is "535 5.7.8" (after any challenge exchange).
    auth_fails: bool = False
    # SMTP: the reply after the client's final "." instead of storing.
    data_reply: Optional[str] = None
    # SMTP: copies stored per recipient of an accepted mail (0: none).
    copies: int = 1
    # SMTP: seconds between accepting a mail and storing it.
    deliver_delay: float = 0.0
    # POP3: capabilities left out of the CAPA reply.
    capa_hidden: FrozenSet[str] = field(default_factory=frozenset)


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
    Variant("smtp_expired", "smtp", TLS_IMPLICIT, CERT_EXPIRED),
    Variant("smtp_selfsigned", "smtp", TLS_IMPLICIT, CERT_SELFSIGNED),
    Variant("pop3", "pop3", TLS_STARTTLS),
    Variant("pop3_tls", "pop3", TLS_IMPLICIT),
    Variant("pop3_plain", "pop3", TLS_NONE),
    Variant("pop3_noapop", "pop3", TLS_STARTTLS, apop=False),
    Variant("pop3_badcert", "pop3", TLS_IMPLICIT, CERT_ROGUE),
    Variant("pop3_wrongname", "pop3", TLS_IMPLICIT, CERT_WRONGNAME),
    Variant("pop3_expired", "pop3", TLS_IMPLICIT, CERT_EXPIRED),
    Variant("pop3_selfsigned", "pop3", TLS_IMPLICIT, CERT_SELFSIGNED),
)
