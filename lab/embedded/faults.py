"""Named faults for the embedded lab's listeners.

    EmbeddedLab(faults={"pop3": ["dele_err"], "smtp": ["slow_banner:0.5"]})
    python -m lab.embedded --fault pop3=dele_err --fault smtp=slow_banner:0.5

A fault is a name, or ``name:secs`` for the ones that take a number of
seconds.  ``FAULTS`` is the catalogue: name -> (protocol, description), where
protocol is "smtp", "pop3", "imap", "both" (SMTP and POP3) or "any".  The names are a contract: tests
elsewhere use exactly these.

Faults are made of the same seam user hooks plug into (variants.Hook: one
hook per command, plus the CONNECT, GREETING and LOGIN pseudo commands) and,
for what a command hook cannot reach (the order of the EHLO lines, AUTH
verdicts, the reply after DATA, delivery, CAPA), of variants.Tweaks.

Composition: on one command the user's hook runs first, then the fault's,
then the built-in command; the first to answer wins.  Faults of one variant
compose freely (slow_banner + trickle + banner_multiline is one slow,
trickled, three-line greeting) unless two of them would decide the same
thing (two greetings, two answers to MAIL, ...): that is a ValueError, as
are unknown names, arguments where none is taken, and a fault for the
other protocol or for a variant without the STARTTLS/STLS it is about, or an
OAuth fault on a lab without an OAuth key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from . import imap as _imap
from .pop3 import TRANSACTION, _lines, _multiline_body
from .store import MailStore
from .variants import TLS_STARTTLS, VARIANTS, Hook, Tweaks, Variant

__all__ = ["FAULTS", "FaultSpecs", "build", "compose", "parse", "validate"]

BOTH = "both"  # SMTP and POP3
ANY = "any"    # every protocol

# What "garbage" sends instead of a greeting: 300 bytes from 0x80-0xFF (so
# not text, and never a CR or LF), the same every run.
GARBAGE = bytes(random.Random(20250).randrange(0x80, 0x100)
                for _i in range(300))

# Where a client that keeps only the first 64 KiB of a line cuts it (the
# mailops.health core does): echo_secrets puts a secret across that byte.
LINE_CUT = 64 * 1024
ECHO_FILL = "~"
# What uidl_duplicate gives every message as its unique-id.
DUPLICATE_UIDL = "duplicate-uid"

# {variant: [fault spec, ...]}, or a single spec string per variant.
FaultSpecs = Mapping[str, Union[str, Iterable[str]]]


# -- what a variant's faults amount to ---------------------------------------

@dataclass
class _Greeting:
    """How the greeting goes; filled in by the greeting faults."""

    delay: float = 0.0                  # slow_banner
    interval: Optional[float] = None    # trickle: seconds per byte
    lines: Optional[list[str]] = None   # replacement lines (None: built-in)
    raw: Optional[bytes] = None         # garbage: bytes instead of lines
    # echo_secrets: the lines made per connection from (conn, built-in line)
    compute: Optional[Callable[[Any, str], list[str]]] = None
    then: Optional[str] = None          # "hold", "close" or "await_quit"


@dataclass
class _Plan:
    variant: Variant
    hostname: str
    started: float  # time.monotonic() when the lab started
    hooks: dict[str, list[Hook]] = field(default_factory=dict)
    tweaks: Tweaks = field(default_factory=Tweaks)
    greeting: Optional[_Greeting] = None

    def hook(self, commands: Iterable[str], hook: Hook) -> None:
        for command in commands:
            self.hooks.setdefault(command, []).append(hook)

    def greet(self) -> _Greeting:
        if self.greeting is None:
            self.greeting = _Greeting()
        return self.greeting


Installer = Callable[[_Plan, Optional[float]], None]


@dataclass(frozen=True)
class _Fault:
    protocol: str                  # "smtp", "pop3", "imap", BOTH or ANY
    description: str
    decides: frozenset[str]        # two faults of a variant may not share one
    install: Installer
    takes_secs: bool = False
    default: Optional[float] = None
    needs_starttls: bool = False   # meaningless without STARTTLS / STLS
    needs_oauth: bool = False      # meaningless on a lab without an OAuth key


_CATALOGUE: dict[str, _Fault] = {}


def _fault(name: str, protocol: str, description: str, decides: Iterable[str],
           install: Installer, **options: Any) -> None:
    _CATALOGUE[name] = _Fault(protocol, description, frozenset(decides),
                              install, **options)


# -- building blocks ----------------------------------------------------------

def _reply(line: str, *, close: bool = False,
           when: Optional[Callable[[Any], bool]] = None) -> Hook:
    """A hook answering ``line`` (and closing, if asked) when ``when``."""
    async def hook(conn: Any, arg: Optional[str]) -> bool:
        if when is not None and not when(conn):
            return False  # the built-in command answers
        await conn.push(line)
        if close:
            conn.close()
        return True
    return hook


def _in_transaction(conn: Any) -> bool:
    return conn.state == TRANSACTION


def _after_dele(conn: Any) -> bool:
    # pylint: disable-next=protected-access
    return conn.state == TRANSACTION and bool(conn._deleted)


def _replier(commands: Iterable[str], line: str, **options: Any) -> Installer:
    def install(plan: _Plan, secs: Optional[float]) -> None:
        text = line.format(host=plan.hostname)
        plan.hook(commands, _reply(text, **options))
    return install


async def _wait_for_eof(conn: Any) -> None:
    while await conn.reader.read(4096):
        pass


def _greeting_hook(greeting: _Greeting) -> Hook:
    async def hook(conn: Any, builtin: Optional[str]) -> bool:
        if greeting.delay > 0:
            await asyncio.sleep(greeting.delay)
        if greeting.raw is not None:
            data = greeting.raw
        else:
            lines = greeting.lines if greeting.lines is not None else [builtin]
            if greeting.compute is not None:
                lines = greeting.compute(conn, builtin or "")
            data = b"".join(f"{line}\r\n".encode() for line in lines)
        if greeting.interval is None:
            if data:
                await conn.push_bytes(data)
        else:
            for i in range(len(data)):
                if i:
                    await asyncio.sleep(greeting.interval)
                await conn.push_bytes(data[i:i + 1])
        if greeting.then == "hold":
            await _wait_for_eof(conn)
            conn.close()
        elif greeting.then == "close":
            conn.close()
        elif greeting.then == "await_quit":
            # RFC 5321 3.1: after a 554 greeting the server waits for QUIT
            # and answers anything else with 503.
            while True:
                line = await conn.reader.readline()
                if not line:
                    break
                if line.split(b" ", 1)[0].strip().upper() == b"QUIT":
                    await conn.push("221 2.0.0 Bye")
                    break
                await conn.push("503 5.5.1 Error: no SMTP service here")
            conn.close()
        return True
    return hook


# -- the catalogue --------------------------------------------------------------

def _silent(plan: _Plan, secs: Optional[float]) -> None:
    greeting = plan.greet()
    greeting.lines, greeting.then = [], "hold"


def _slow_banner(plan: _Plan, secs: Optional[float]) -> None:
    plan.greet().delay = secs or 0.0


def _trickle(plan: _Plan, secs: Optional[float]) -> None:
    plan.greet().interval = secs


def _garbage(plan: _Plan, secs: Optional[float]) -> None:
    greeting = plan.greet()
    greeting.raw, greeting.then = GARBAGE, "hold"


def _greeting_lines(lines: list[str], then: Optional[str] = None) -> Installer:
    def install(plan: _Plan, secs: Optional[float]) -> None:
        greeting = plan.greet()
        greeting.lines = [line.format(host=plan.hostname) for line in lines]
        greeting.then = then
    return install


def _tweak(**values: Any) -> Installer:
    def install(plan: _Plan, secs: Optional[float]) -> None:
        for name, value in values.items():
            setattr(plan.tweaks, name, value)
    return install


def _drop(plan: _Plan, secs: Optional[float]) -> None:
    async def drop(conn: Any, arg: Optional[str]) -> bool:
        conn.close()  # no reply at all
        return True
    plan.hook(("EHLO", "HELO"), drop)


def _drop_in_data(plan: _Plan, secs: Optional[float]) -> None:
    async def drop_in_data(conn: Any, arg: Optional[str]) -> bool:
        if arg or not conn.envelope.rcpt_tos:
            return False  # aiosmtpd's own 501 / 503
        await conn.push("354 End data with <CR><LF>.<CR><LF>")
        await conn.reader.read(65536)  # the first chunk of the message
        conn.close()
        return True
    plan.hook(("DATA",), drop_in_data)


def _deliver_late(plan: _Plan, secs: Optional[float]) -> None:
    plan.tweaks.deliver_delay = secs or 0.0


def _locked(plan: _Plan, secs: Optional[float]) -> None:
    async def locked(conn: Any, user: Optional[str]) -> bool:
        if secs is not None and time.monotonic() - plan.started >= secs:
            return False
        await conn.push("-ERR [IN-USE] mailbox locked by another session")
        return True
    plan.hook(("LOGIN",), locked)


def _without(command: str) -> Installer:
    def install(plan: _Plan, secs: Optional[float]) -> None:
        plan.hook((command,), _reply("-ERR unknown command"))
        # A server without the command does not offer it either.
        plan.tweaks.capa_hidden = plan.tweaks.capa_hidden | {command}
    return install


def _retr_truncated(plan: _Plan, secs: Optional[float]) -> None:
    async def retr(conn: Any, arg: Optional[str]) -> bool:
        if not _in_transaction(conn):
            return False
        found = await conn._message(arg)  # answers -ERR itself if bad
        if found is None:
            return True
        msg = found[1]
        lines = _lines(msg.data)
        body = _multiline_body(lines[:len(lines) // 2])[:-len(b".\r\n")]
        await conn.push_bytes(f"+OK {msg.size} octets\r\n".encode() + body)
        conn.close()  # no terminating dot
        return True
    plan.hook(("RETR",), retr)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _store(conn: Any) -> MailStore:
    store = getattr(conn, "store", None)  # a POP3 session
    if store is None:
        store = conn._listener.handler.store  # an SMTP connection
    return store


def _accounts(conn: Any) -> list[tuple[str, str]]:
    return sorted(_store(conn).accounts.items())


def _apop_digest(conn: Any, password: str) -> Optional[str]:
    if not getattr(conn, "timestamp", None):
        return None
    return hashlib.md5((conn.timestamp + password).encode("utf-8")).hexdigest()


def _secret_forms(conn: Any, user: str, password: str) -> list[str]:
    """What a client sends for a password: SMTP the password itself, its
    base64 (AUTH LOGIN) and the AUTH PLAIN payload; POP3 the password
    (PASS) and the APOP digest for this connection's timestamp."""
    if hasattr(conn, "store"):
        digest = _apop_digest(conn, password)
        return [password] + ([digest] if digest else [])
    return [password, _b64(password), _b64(f"\0{user}\0{password}")]


def _straddling(head: str, secret: str) -> str:
    """head, then filler, then secret, then 1 KiB more: one line whose byte
    LINE_CUT is the middle character of secret (ASCII text assumed)."""
    start = max(len(head), LINE_CUT - len(secret) // 2)
    return (head + ECHO_FILL * (start - len(head)) + secret
            + ECHO_FILL * 1024)


def _smtp_echo_lines(conn: Any, code: str) -> list[str]:
    """Continuation lines quoting every account's secrets, then one over-long
    line per account with its password across byte LINE_CUT."""
    accounts = _accounts(conn)
    lines = [f"{code}-X-ECHO {user} {' '.join(_secret_forms(conn, user, pw))}"
             for user, pw in accounts]
    return lines + [_straddling(f"{code}-X-ECHO ", pw) for _u, pw in accounts]


def _pop3_echo_text(conn: Any) -> str:
    return " ".join(form for user, pw in _accounts(conn)
                    for form in _secret_forms(conn, user, pw))


def _pop3_straddled(conn: Any) -> Optional[str]:
    """The secret this POP3 reply puts across LINE_CUT: the password and the
    APOP digest of the session's user (logged in, or named by USER) in
    turn; None while no user is known."""
    user = conn.user or conn._pending_user or getattr(conn, "_echo_user", None)
    conn._echo_user = user  # QUIT answers after the maildrop was released
    password = _store(conn).password(user) if user else None
    if password is None:
        return None
    forms = _secret_forms(conn, user, password)
    turn = getattr(conn, "_echo_turn", 0)
    conn._echo_turn = turn + 1
    return forms[turn % len(forms)]


def _echo_secrets(plan: _Plan, secs: Optional[float]) -> None:
    smtp = plan.variant.protocol == "smtp"

    def greeting(conn: Any, builtin: str) -> list[str]:
        if smtp:
            return _smtp_echo_lines(conn, "220") + [builtin]
        return [f"{builtin} {_pop3_echo_text(conn)}"]

    async def smtp_reply(conn: Any, line: str) -> bool:
        code = line[:3]
        # Not the STARTTLS go-ahead, AUTH challenges or the DATA go-ahead:
        # lines there would end up inside the TLS handshake or the exchange.
        if (line[3:4] != " " or not code.isdigit()
                or code in ("220", "334", "354")):
            return False
        lines = _smtp_echo_lines(conn, code) + [line]
        await conn.push_bytes("".join(f"{text}\r\n" for text in lines)
                              .encode("utf-8"))
        return True

    async def pop3_reply(conn: Any, line: str) -> bool:
        text = f"{line} {_pop3_echo_text(conn)} "
        secret = _pop3_straddled(conn)
        if secret is not None:
            text = _straddling(text, secret)
        await conn.push_bytes(f"{text}\r\n".encode("utf-8"))
        return True

    plan.greet().compute = greeting
    plan.hook(("REPLY",), smtp_reply if smtp else pop3_reply)


def _uidl_duplicate(plan: _Plan, secs: Optional[float]) -> None:
    async def uidl(conn: Any, arg: Optional[str]) -> bool:
        if not _in_transaction(conn):
            return False
        if arg:
            found = await conn._message(arg)  # answers -ERR itself if bad
            if found is not None:
                await conn.push(f"+OK {found[0]} {DUPLICATE_UIDL}")
            return True
        await conn.push_multiline(
            "+OK", (f"{number} {DUPLICATE_UIDL}".encode()
                    for number, _msg in conn._live()))
        return True
    plan.hook(("UIDL",), uidl)


def _drop_at_quit(plan: _Plan, secs: Optional[float]) -> None:
    async def drop(conn: Any, arg: Optional[str]) -> bool:
        if not _after_dele(conn):
            return False
        conn.commit()
        conn.close()  # and no reply
        return True
    plan.hook(("QUIT",), drop)


_fault("silent", ANY,
       "accept the connection, never send anything (until the client closes)",
       ("greeting", "greeting pace"), _silent)
_fault("slow_banner", ANY,
       "greeting only after secs seconds (default 5)",
       ("greeting delay",), _slow_banner, takes_secs=True, default=5.0)
_fault("trickle", ANY,
       "send the greeting one byte per second (per secs seconds if given)",
       ("greeting pace",), _trickle, takes_secs=True, default=1.0)
_fault("garbage", ANY,
       "300 fixed random non-text bytes instead of a greeting (or of a TLS "
       "handshake), then hold the connection open",
       ("greeting", "greeting pace"), _garbage)

_fault("banner_554", "smtp",
       "greeting `554 5.3.2 mail.lab.test no SMTP service here` (then 503 to "
       "all but QUIT)",
       ("greeting",),
       _greeting_lines(["554 5.3.2 {host} no SMTP service here"],
                       "await_quit"))
_fault("banner_multiline", "smtp",
       "three-line greeting `220-mail.lab.test ESMTP` / `220-second line` / "
       "`220 ready` (works)",
       ("greeting",),
       _greeting_lines(["220-{host} ESMTP", "220-second line", "220 ready"]))
_fault("drop_after_ehlo", "smtp",
       "EHLO and HELO close the connection without a reply",
       ("EHLO", "HELO"), _drop)
_fault("starttls_454", "smtp",
       "STARTTLS is advertised but answered `454 4.7.0 TLS not available due "
       "to local problem`",
       ("STARTTLS",),
       _replier(("STARTTLS",),
                "454 4.7.0 TLS not available due to local problem"),
       needs_starttls=True)
_fault("starttls_last", "smtp",
       "the EHLO reply ends with `250 STARTTLS` as its last line (works)",
       ("EHLO lines",), _tweak(starttls_last=True), needs_starttls=True)
_fault("auth_535", "smtp",
       "every AUTH ends in `535 5.7.8 Authentication credentials invalid`",
       ("AUTH",), _tweak(auth_fails=True))
_fault("mail_451", "smtp",
       "MAIL FROM answered `451 4.3.0 Temporary failure, try again later`",
       ("MAIL",),
       _replier(("MAIL",), "451 4.3.0 Temporary failure, try again later"))
_fault("mail_550", "smtp",
       "MAIL FROM answered `550 5.7.1 Sender rejected by policy`",
       ("MAIL",), _replier(("MAIL",), "550 5.7.1 Sender rejected by policy"))
_fault("rcpt_550", "smtp",
       "RCPT answered `550 5.1.1 Recipient address rejected: User unknown`",
       ("RCPT",),
       _replier(("RCPT",),
                "550 5.1.1 Recipient address rejected: User unknown"))
_fault("data_552", "smtp",
       "the end of DATA answered `552 5.3.4 Message size exceeds fixed "
       "limit`; nothing stored",
       ("end of DATA",),
       _tweak(data_reply="552 5.3.4 Message size exceeds fixed limit"))
_fault("drop_in_data", "smtp",
       "after 354, read the first chunk of data and close; nothing stored",
       ("DATA", "end of DATA"), _drop_in_data)
for _suffix, _commands in (("ehlo", ("EHLO", "HELO")),
                           ("starttls", ("STARTTLS",)), ("auth", ("AUTH",)),
                           ("mail", ("MAIL",)), ("rcpt", ("RCPT",)),
                           ("data", ("DATA",)), ("quit", ("QUIT",))):
    _fault(f"421_{_suffix}", "smtp",
           f"{' and '.join(_commands)} answered `421 4.3.2 mail.lab.test "
           "service shutting down`, connection closed",
           _commands,
           _replier(_commands, "421 4.3.2 {host} service shutting down",
                    close=True))
_fault("deliver_twice", "smtp",
       "an accepted mail is stored twice (two copies, distinct UIDLs)",
       ("copies",), _tweak(copies=2))
_fault("deliver_never", "smtp",
       "mail accepted with 250 but never stored",
       ("copies", "delivery delay"), _tweak(copies=0))
_fault("deliver_late", "smtp",
       "mail accepted with 250, stored only after secs seconds (default 3)",
       ("delivery delay",), _deliver_late, takes_secs=True, default=3.0)

_fault("bounce", "smtp",
       "an accepted mail bounces: a DSN (RFC 3464, 5.1.1 user unknown, the "
       "returned headers) goes to the envelope sender's mailbox instead",
       ("delivery",), _tweak(delivery="bounce"))
_fault("paths_pass", "smtp",
       "a stored mail gets a three-hop Received chain and "
       "`Authentication-Results: mx.lab.test; spf=pass; dkim=pass; dmarc=pass`",
       ("delivery", "stamp"),
       _tweak(stamp="spf=pass smtp.mailfrom=lab.test; dkim=pass "
                    "header.d=lab.test; dmarc=pass header.from=lab.test"))
_fault("dkim_fail", "smtp",
       "a stored mail gets a three-hop Received chain and "
       "`Authentication-Results: mx.lab.test; spf=pass; dkim=fail; dmarc=fail`",
       ("delivery", "stamp"),
       _tweak(stamp="spf=pass smtp.mailfrom=lab.test; dkim=fail (signature "
                    "verification failed) header.d=lab.test; dmarc=fail "
                    "header.from=lab.test"))
_fault("open_relay", "smtp",
       "RCPT to an address of no lab mailbox is accepted (an open relay); "
       "such recipients get nothing",
       ("RCPT",), _tweak(open_relay=True))

_fault("banner_err", "pop3",
       "greeting `-ERR [SYS/TEMP] server unavailable`, then close",
       ("greeting",),
       _greeting_lines(["-ERR [SYS/TEMP] server unavailable"], "close"))
_fault("no_capa", "pop3",
       "CAPA answers -ERR (STLS still works when sent)",
       ("CAPA",), _replier(("CAPA",), "-ERR unknown command"))
_fault("stls_err", "pop3",
       "STLS is listed in CAPA but answered `-ERR TLS not available`",
       ("STLS",), _replier(("STLS",), "-ERR TLS not available"),
       needs_starttls=True)
_fault("user_err", "pop3", "USER answered `-ERR [AUTH] USER rejected`",
       ("USER",), _replier(("USER",), "-ERR [AUTH] USER rejected"))
_fault("pass_err", "pop3",
       "PASS answered `-ERR [AUTH] authentication failed`",
       ("PASS",), _replier(("PASS",), "-ERR [AUTH] authentication failed"))
_fault("apop_err", "pop3",
       "APOP answered `-ERR [AUTH] APOP authentication failed`",
       ("APOP",),
       _replier(("APOP",), "-ERR [AUTH] APOP authentication failed"))
_fault("locked", "pop3",
       "a successful login answered `-ERR [IN-USE] mailbox locked by another "
       "session` (still AUTHORIZATION); with :secs only during the first "
       "secs seconds after the lab started",
       ("LOGIN",), _locked, takes_secs=True)
_fault("stat_malformed", "pop3", "STAT answered `+OK lots of mail`",
       ("STAT",),
       _replier(("STAT",), "+OK lots of mail", when=_in_transaction))
_fault("no_uidl", "pop3",
       "UIDL answered `-ERR unknown command` (and left out of CAPA)",
       ("UIDL",), _without("UIDL"))
_fault("no_top", "pop3",
       "TOP answered `-ERR unknown command` (and left out of CAPA)",
       ("TOP",), _without("TOP"))
_fault("retr_truncated", "pop3",
       "RETR sends +OK and the first half of the lines, then closes (no dot)",
       ("RETR",), _retr_truncated)
_fault("dele_err", "pop3", "DELE answered `-ERR message locked`",
       ("DELE",), _replier(("DELE",), "-ERR message locked"))
_fault("quit_err", "pop3",
       "QUIT in TRANSACTION answers `-ERR could not update maildrop`, closes "
       "and commits no deletion",
       ("QUIT",),
       _replier(("QUIT",), "-ERR could not update maildrop", close=True,
                when=_in_transaction))
_fault("quit_err_after_dele", "pop3",
       "QUIT after a DELE answers `-ERR could not update maildrop`, closes "
       "and commits no deletion (a QUIT without DELE works)",
       ("QUIT",),
       _replier(("QUIT",), "-ERR could not update maildrop", close=True,
                when=_after_dele))

_fault("uidl_duplicate", "pop3",
       "UIDL gives every message the same unique-id `duplicate-uid` (the "
       "listing and UIDL n)",
       ("UIDL",), _uidl_duplicate)
_fault("drop_at_quit", "pop3",
       "QUIT after a DELE commits the deletion, then closes the connection "
       "without a reply (a QUIT without DELE works)",
       ("QUIT",), _drop_at_quit)

_fault("echo_secrets", BOTH,
       "quote every account's password and what a client sends for it "
       "(SMTP: its base64 and the AUTH PLAIN payload; POP3: the APOP digest) "
       "in the greeting and in replies (SMTP: all but 220/334/354, as "
       "continuation lines; POP3: single-line ones), and put a password (or "
       "digest) across byte 65536 of a 66 KiB reply line",
       ("greeting",), _echo_secrets)


# -- IMAP ---------------------------------------------------------------------

def _imap_reply(commands: Iterable[str], text: str, *,
                when: Callable[[Any], bool],
                after: Optional[Callable[[Any], None]] = None) -> Installer:
    """Answer the commands with a tagged ``text`` when ``when(conn)``."""
    def install(plan: _Plan, secs: Optional[float]) -> None:
        async def hook(conn: Any, arg: Optional[str]) -> bool:
            if not when(conn):
                return False  # the built-in command answers
            await conn.push(f"{conn.tag} {text}")
            if after is not None:
                after(conn)
            return True
        plan.hook(commands, hook)
    return install


def _imap_unauthenticated(conn: Any) -> bool:
    return conn.state == _imap.NOT_AUTHENTICATED


def _imap_authenticated(conn: Any) -> bool:
    return conn.state in (_imap.AUTHENTICATED, _imap.SELECTED)


def _imap_selected(conn: Any) -> bool:
    return conn.state == _imap.SELECTED


def _preauth(plan: _Plan, secs: Optional[float]) -> None:
    def greeting(conn: Any, builtin: str) -> list[str]:
        user = next(iter(conn.store.accounts))
        conn.preauthenticate(user)
        return [f"* PREAUTH [CAPABILITY {' '.join(conn.capabilities())}] "
                f"{plan.hostname} logged in as {user}"]
    plan.greet().compute = greeting


IMAP_NOISE = ("* OK [ALERT] lab: unsolicited notice", "* X-LAB-NOISE 1 2 3")
IMAP_WRONG_TAG = "WRONGTAG"
IMAP_INJECTED = "* CAPABILITY IMAP4rev1 AUTH=PLAIN X-LAB-INJECTED"


def _is_tagged(conn: Any, line: str) -> bool:
    return conn.tag is not None and line.startswith(f"{conn.tag} ")


def _untagged_before_tagged(plan: _Plan, secs: Optional[float]) -> None:
    async def noise(conn: Any, line: str) -> bool:
        if _is_tagged(conn, line):
            await conn.push_bytes("".join(f"{n}\r\n" for n in IMAP_NOISE)
                                  .encode())
        return False  # the tagged line itself goes on as usual
    # First in the chain, so that wrong_tag (which answers) composes.
    plan.hooks.setdefault("REPLY", []).insert(0, noise)


def _wrong_tag(plan: _Plan, secs: Optional[float]) -> None:
    async def retag(conn: Any, line: str) -> bool:
        if not _is_tagged(conn, line):
            return False
        rest = line[len(conn.tag):]
        await conn.push_bytes(f"{IMAP_WRONG_TAG}{rest}\r\n".encode())
        return True
    plan.hook(("REPLY",), retag)


def _inject_after_starttls(plan: _Plan, secs: Optional[float]) -> None:
    async def starttls(conn: Any, arg: Optional[str]) -> bool:
        if not conn.starttls_offered() or conn.listener.tls_context is None:
            return False  # the built-in refusal
        await conn.push_bytes(f"{conn.tag} OK Begin TLS negotiation now.\r\n"
                              f"{IMAP_INJECTED}\r\n".encode())
        await conn.upgrade_tls()
        return True
    plan.hook(("STARTTLS",), starttls)


def _bye_mid_session(plan: _Plan, secs: Optional[float]) -> None:
    async def bye(conn: Any, arg: Optional[str]) -> bool:
        if not _imap_authenticated(conn):
            return False
        await conn.push(f"* BYE [UNAVAILABLE] {plan.hostname} shutting down")
        conn.close()
        return True
    plan.hook(tuple(_imap.COMMANDS), bye)


def _idle_late(plan: _Plan, secs: Optional[float]) -> None:
    plan.tweaks.idle_delay = secs or 0.0


_fault("greeting_bye", "imap",
       "greeting `* BYE [UNAVAILABLE] mail.lab.test server unavailable`, "
       "then close",
       ("greeting",),
       _greeting_lines(["* BYE [UNAVAILABLE] {host} server unavailable"],
                       "close"))
_fault("preauth", "imap",
       "greeting `* PREAUTH [CAPABILITY ...] mail.lab.test logged in as "
       "alice` (the first account): the session starts authenticated",
       ("greeting",), _preauth)
_fault("login_no", "imap",
       "LOGIN answered `NO [AUTHENTICATIONFAILED] Authentication failed.`",
       ("LOGIN",),
       _imap_reply(("LOGIN",), "NO [AUTHENTICATIONFAILED] Authentication "
                   "failed.", when=_imap_unauthenticated))
_fault("login_bad", "imap",
       "LOGIN answered `BAD Error in IMAP command LOGIN: invalid arguments`",
       ("LOGIN",),
       _imap_reply(("LOGIN",), "BAD Error in IMAP command LOGIN: invalid "
                   "arguments", when=_imap_unauthenticated))
_fault("authenticate_no", "imap",
       "every AUTHENTICATE ends in `NO [AUTHENTICATIONFAILED] Authentication "
       "failed.` (after the exchange)",
       ("AUTHENTICATE",), _tweak(auth_fails=True))
_fault("untagged_before_tagged", "imap",
       "two unsolicited untagged lines (`* OK [ALERT] lab: unsolicited "
       "notice`, `* X-LAB-NOISE 1 2 3`) before every tagged reply (works)",
       ("untagged noise",), _untagged_before_tagged)
_fault("wrong_tag", "imap",
       "every tagged reply carries the tag `WRONGTAG` instead of the "
       "command's",
       ("tagged reply",), _wrong_tag)
_fault("literal_lies", "imap",
       "FETCH literals announce 1024 bytes more than they send (a client "
       "trusting the size waits for bytes that never come)",
       ("FETCH literal sizes",), _tweak(literal_size=lambda n: n + 1024))
_fault("literal_short", "imap",
       "FETCH literals announce half the bytes they send (the rest spills "
       "into the response stream)",
       ("FETCH literal sizes",), _tweak(literal_size=lambda n: n // 2))
_fault("idle_never_ends", "imap",
       "IDLE works and pushes, but DONE is never answered (the connection "
       "stays open until the client closes it)",
       ("IDLE end",), _tweak(idle_done_answered=False))
_fault("idle_no_push", "imap",
       "IDLE is offered and answers `+ idling` and DONE, but pushes nothing "
       "(NOOP still reports new mail)",
       ("IDLE push",), _tweak(idle_push=False))
_fault("idle_late", "imap",
       "IDLE pushes a change only secs seconds after it happened (default "
       "0.5, like Dovecot)",
       ("IDLE push",), _idle_late, takes_secs=True, default=0.5)
_fault("inject_after_starttls", "imap",
       "the STARTTLS go-ahead is followed, in the same packet and before TLS, "
       "by `* CAPABILITY IMAP4rev1 AUTH=PLAIN X-LAB-INJECTED` (plaintext a "
       "client must discard)",
       ("STARTTLS",), _inject_after_starttls, needs_starttls=True)
_fault("expunge_no", "imap",
       "EXPUNGE and UID EXPUNGE answered `NO [NOPERM] EXPUNGE not permitted`",
       ("EXPUNGE",),
       _imap_reply(("EXPUNGE", "UID EXPUNGE"),
                   "NO [NOPERM] EXPUNGE not permitted", when=_imap_selected))
_fault("store_no", "imap",
       "STORE and UID STORE answered `NO [NOPERM] STORE not permitted`",
       ("STORE",),
       _imap_reply(("STORE", "UID STORE"), "NO [NOPERM] STORE not permitted",
                   when=_imap_selected))
_fault("search_bad", "imap",
       "SEARCH and UID SEARCH answered `BAD Error in IMAP command SEARCH: "
       "Unknown search key`",
       ("SEARCH",),
       _imap_reply(("SEARCH", "UID SEARCH"),
                   "BAD Error in IMAP command SEARCH: Unknown search key",
                   when=_imap_selected))
_fault("select_no", "imap",
       "SELECT and EXAMINE answered `NO [UNAVAILABLE] Mailbox temporarily "
       "unavailable` (no folder selected afterwards)",
       ("SELECT",),
       _imap_reply(("SELECT", "EXAMINE"),
                   "NO [UNAVAILABLE] Mailbox temporarily unavailable",
                   when=_imap_authenticated, after=lambda c: c.deselect()))
_fault("bye_mid_session", "imap",
       "the first command after a login is answered `* BYE [UNAVAILABLE] "
       "mail.lab.test shutting down` and the connection closed (no tagged "
       "reply)",
       ("session end",), _bye_mid_session)

# -- OAuth (XOAUTH2 and OAUTHBEARER, on a lab with an OAuth key) ----------------------
# Tweaks.oauth_challenge / oauth_echo; see oauth.OAuthServer.authenticate.

_fault("oauth_echo_token", ANY,
       "the final failure of a rejected OAuth login (XOAUTH2, OAUTHBEARER) "
       "quotes the bearer token the client sent (`... token <token> "
       "rejected`)",
       ("OAuth failure reply",), _tweak(oauth_echo=True), needs_oauth=True)
_fault("oauth_no_challenge", ANY,
       "a rejected OAuth token fails at once with the final failure, without "
       "the JSON error challenge (as Microsoft 365 does)",
       ("OAuth challenge",), _tweak(oauth_challenge="none"),
       needs_oauth=True)
_fault("oauth_bad_challenge", ANY,
       "a rejected OAuth token is challenged with `oauth error: token "
       "rejected` (neither base64 nor JSON) instead of the JSON error; the "
       "client's answer then gets the final failure",
       ("OAuth challenge",), _tweak(oauth_challenge="garbage"),
       needs_oauth=True)

FAULTS: dict[str, tuple[str, str]] = {
    name: (fault.protocol, fault.description)
    for name, fault in _CATALOGUE.items()
}
"""The catalogue: {name: (protocol, one-line description)}."""


# -- parsing and checking -----------------------------------------------------

def parse(spec: str) -> tuple[str, Optional[float]]:
    """``"name"`` or ``"name:secs"`` -> (name, secs or the default)."""
    if not isinstance(spec, str):
        raise ValueError(f"a fault is a string, not {spec!r}")
    name, sep, arg = spec.strip().partition(":")
    fault = _CATALOGUE.get(name)
    if fault is None:
        raise ValueError(f"unknown fault {name!r}; known: "
                         f"{', '.join(sorted(_CATALOGUE))}")
    if not sep:
        return name, fault.default
    if not fault.takes_secs:
        raise ValueError(f"fault {name!r} takes no argument, got {spec!r}")
    try:
        secs = float(arg)
    except ValueError:
        secs = math.nan
    if not math.isfinite(secs) or secs < 0:
        raise ValueError(f"fault {name!r}: {arg!r} is not a number of "
                         "seconds >= 0")
    return name, secs


def _check_variant(variant: Variant, specs: Iterable[str],
                   oauth: Optional[bool] = None) -> None:
    """oauth: whether the lab has an OAuth key (None: not checked)."""
    decided: dict[str, str] = {}
    for spec in specs:
        name, _secs = parse(spec)
        fault = _CATALOGUE[name]
        if name in decided.values():
            raise ValueError(f"{variant.name}: fault {name!r} given twice")
        if not (fault.protocol in (ANY, variant.protocol)
                or (fault.protocol == BOTH
                    and variant.protocol in ("smtp", "pop3"))):
            raise ValueError(f"fault {name!r} is for {fault.protocol}, "
                             f"{variant.name!r} is {variant.protocol}")
        if fault.needs_starttls and variant.tls != TLS_STARTTLS:
            raise ValueError(f"fault {name!r} needs a variant that offers "
                             f"STARTTLS/STLS; {variant.name!r} does not")
        if fault.needs_oauth and oauth is False:
            raise ValueError(f"fault {name!r} needs a lab with an OAuth key "
                             "(EmbeddedLab(oauth_key=...))")
        for what in sorted(fault.decides):
            other = decided.setdefault(what, name)
            if other != name:
                raise ValueError(f"{variant.name}: faults {other!r} and "
                                 f"{name!r} both decide the {what}")


def validate(faults: Optional[FaultSpecs], *,
             oauth: bool = False) -> dict[str, list[str]]:
    """Check {variant: specs} for a lab with (oauth=True) or without an
    OAuth key; returns it as {variant: [spec, ...]}."""
    by_name = {v.name: v for v in VARIANTS}
    checked: dict[str, list[str]] = {}
    for variant_name, specs in (faults or {}).items():
        variant = by_name.get(variant_name)
        if variant is None:
            raise ValueError(f"faults for unknown variant {variant_name!r}")
        spec_list = [specs] if isinstance(specs, str) else list(specs)
        spec_list = [s.strip() if isinstance(s, str) else s
                     for s in spec_list]
        _check_variant(variant, spec_list, oauth)
        if spec_list:
            checked[variant_name] = spec_list
    return checked


# -- building -------------------------------------------------------------------

def build(variant: Variant, specs: Iterable[str], *, hostname: str,
          started: float) -> tuple[dict[str, Hook], Tweaks]:
    """The hooks and tweaks that make ``variant`` show ``specs``.

    ``started`` is the time.monotonic() the lab started at (time-limited
    faults count from it); ``hostname`` is the name servers greet with.
    """
    spec_list = list(specs)
    _check_variant(variant, spec_list)
    plan = _Plan(variant, hostname, started)
    for spec in spec_list:
        name, secs = parse(spec)
        _CATALOGUE[name].install(plan, secs)
    if plan.greeting is not None:
        plan.hook(("GREETING",), _greeting_hook(plan.greeting))
    return {command: _chain(hooks)
            for command, hooks in plan.hooks.items()}, plan.tweaks


def compose(*tables: Mapping[str, Hook]) -> dict[str, Hook]:
    """One hook table out of several: per command, the hooks run in order
    until one answers (returns True)."""
    chains: dict[str, list[Hook]] = {}
    for table in tables:
        for command, hook in table.items():
            chains.setdefault(command, []).append(hook)
    return {command: _chain(hooks) for command, hooks in chains.items()}


def _chain(hooks: list[Hook]) -> Hook:
    if len(hooks) == 1:
        return hooks[0]

    async def chained(conn: Any, arg: Optional[str]) -> bool:
        for hook in hooks:
            if await hook(conn, arg):
                return True
        return False
    return chained
