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
# * "GREETING" (every protocol): ``arg`` is the built-in greeting line.
#   Return True when the hook sent a greeting of its own (or none): the
#   session then goes on reading commands unless the hook closed it.
# * "LOGIN" (POP3): runs after PASS or APOP proved the credentials, before
#   the maildrop is locked; ``arg`` is the user.  Return True to refuse the
#   login with a reply of the hook's own (the session stays in
#   AUTHORIZATION).
# * IMAP (imap.py): hooks are keyed by command ("FETCH", "UID FETCH", ...);
#   ``conn.tag`` is the tag to answer with, ``arg`` the arguments as sent.
#   There is no "LOGIN" pseudo command there (LOGIN is a real command).
#
# Besides ``push(line)`` every kind of ``conn`` offers ``push_bytes(data)``
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
    # SMTP: every AUTH verdict is "535 5.7.8" (after any challenge exchange);
    # IMAP: every AUTHENTICATE verdict is NO [AUTHENTICATIONFAILED].
    auth_fails: bool = False
    # SMTP: the reply after the client's final "." instead of storing.
    data_reply: Optional[str] = None
    # SMTP: copies stored per recipient of an accepted mail (0: none).
    copies: int = 1
    # SMTP: seconds between accepting a mail and storing it.
    deliver_delay: float = 0.0
    # SMTP: what delivery does with an accepted mail: "store" it, or "bounce" it (a DSN,
    # RFC 3464, about it goes to the envelope sender's mailbox instead).
    delivery: str = "store"
    # SMTP: the Authentication-Results verdicts stamped on a stored mail, under a Received
    # chain of three hops (None: the mail is stored as it came, with no trace headers).
    stamp: Optional[str] = None
    # SMTP: RCPT to an address of no lab mailbox is accepted (an open relay; the mail is
    # then dropped).
    open_relay: bool = False
    # POP3 / IMAP: capabilities left out of the CAPA / CAPABILITY reply.
    capa_hidden: FrozenSet[str] = field(default_factory=frozenset)
    # IMAP: seconds between a change and IDLE pushing it (Dovecot: ~0.5).
    idle_delay: float = 0.0
    # IMAP: IDLE pushes changes at all (False: only a later NOOP shows them).
    idle_push: bool = True
    # IMAP: DONE is answered with the tagged OK (False: never answered).
    idle_done_answered: bool = True
    # IMAP: the size announced for a FETCH literal of n bytes (None: n).
    literal_size: Optional[Callable[[int], int]] = None
    # OAuth (XOAUTH2, OAUTHBEARER; labs with an OAuth key): how a rejected
    # token is answered: "json" (the provider-style JSON error challenge),
    # "none" (the final failure at once) or "garbage" (a challenge that is
    # neither base64 nor JSON); see oauth.OAuthServer.authenticate.
    oauth_challenge: str = "json"
    # OAuth: the final failure quotes the bearer token the client sent.
    oauth_echo: bool = False


@dataclass(frozen=True)
class Variant:
    name: str
    protocol: str  # "smtp", "pop3" or "imap"
    tls: str = TLS_STARTTLS
    cert: str = CERT_GOOD
    apop: bool = True  # POP3 only: APOP timestamp in the banner + APOP command
    # IMAP only: on a STARTTLS variant, LOGINDISABLED before TLS (LOGIN and
    # AUTHENTICATE PLAIN refused with NO [PRIVACYREQUIRED], AUTH=PLAIN not
    # offered).  Plaintext-only variants never advertise it.
    logindisabled: bool = True
    # IMAP only: SPECIAL-USE (\Junk \Trash \Sent).  Without it no folder
    # has an attribute and the store's Junk folder is called "Spam".
    special_use: bool = True
    # IMAP only: capabilities left out, with their commands ("IDLE",
    # "UIDPLUS": UID EXPUNGE and COPYUID/APPENDUID, "MOVE").
    lacks: FrozenSet[str] = frozenset()
    # IMAP only: IDLE pushes changes (False: advertised, but never pushes).
    idle_push: bool = True


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
    Variant("imap", "imap", TLS_STARTTLS),
    Variant("imap_tls", "imap", TLS_IMPLICIT),
    Variant("imap_plain", "imap", TLS_NONE),
    Variant("imap_badcert", "imap", TLS_IMPLICIT, CERT_ROGUE),
    Variant("imap_wrongname", "imap", TLS_IMPLICIT, CERT_WRONGNAME),
    Variant("imap_expired", "imap", TLS_IMPLICIT, CERT_EXPIRED),
    Variant("imap_selfsigned", "imap", TLS_IMPLICIT, CERT_SELFSIGNED),
    Variant("imap_nospecialuse", "imap", TLS_STARTTLS, special_use=False),
    Variant("imap_noidle", "imap", TLS_STARTTLS, lacks=frozenset({"IDLE"})),
    Variant("imap_noexpunge", "imap", TLS_STARTTLS,
            lacks=frozenset({"UIDPLUS", "MOVE"})),
    Variant("imap_idle_never", "imap", TLS_STARTTLS, idle_push=False),
)
