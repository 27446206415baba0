"""Named faults for the embedded lab's listeners.

    EmbeddedLab(faults={"pop3": ["dele_err"], "smtp": ["slow_banner:0.5"]})
    python -m lab.embedded --fault pop3=dele_err --fault smtp=slow_banner:0.5

A fault is a name, or ``name:secs`` for the ones that take a number of
seconds.  ``FAULTS`` is the catalogue: name -> (protocol, description), where
protocol is "smtp", "pop3" or "both".  The names are a contract: tests
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
other protocol or for a variant without the STARTTLS/STLS it is about.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Union

from .pop3 import TRANSACTION, _lines, _multiline_body
from .variants import TLS_STARTTLS, VARIANTS, Hook, Tweaks, Variant

__all__ = ["FAULTS", "FaultSpecs", "build", "compose", "parse", "validate"]

BOTH = "both"

# What "garbage" sends instead of a greeting: 300 bytes from 0x80-0xFF (so
# not text, and never a CR or LF), the same every run.
GARBAGE = bytes(random.Random(20250).randrange(0x80, 0x100)
                for _i in range(300))

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
    protocol: str                  # "smtp", "pop3" or BOTH
    description: str
    decides: frozenset[str]        # two faults of a variant may not share one
    install: Installer
    takes_secs: bool = False
    default: Optional[float] = None
    needs_starttls: bool = False   # meaningless without STARTTLS / STLS


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


_fault("silent", BOTH,
       "accept the connection, never send anything (until the client closes)",
       ("greeting", "greeting pace"), _silent)
_fault("slow_banner", BOTH,
       "greeting only after secs seconds (default 5)",
       ("greeting delay",), _slow_banner, takes_secs=True, default=5.0)
_fault("trickle", BOTH,
       "send the greeting one byte per second (per secs seconds if given)",
       ("greeting pace",), _trickle, takes_secs=True, default=1.0)
_fault("garbage", BOTH,
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


def _check_variant(variant: Variant, specs: Iterable[str]) -> None:
    decided: dict[str, str] = {}
    for spec in specs:
        name, _secs = parse(spec)
        fault = _CATALOGUE[name]
        if name in decided.values():
            raise ValueError(f"{variant.name}: fault {name!r} given twice")
        if fault.protocol not in (BOTH, variant.protocol):
            raise ValueError(f"fault {name!r} is for {fault.protocol}, "
                             f"{variant.name!r} is {variant.protocol}")
        if fault.needs_starttls and variant.tls != TLS_STARTTLS:
            raise ValueError(f"fault {name!r} needs a variant that offers "
                             f"STARTTLS/STLS; {variant.name!r} does not")
        for what in sorted(fault.decides):
            other = decided.setdefault(what, name)
            if other != name:
                raise ValueError(f"{variant.name}: faults {other!r} and "
                                 f"{name!r} both decide the {what}")


def validate(faults: Optional[FaultSpecs]) -> dict[str, list[str]]:
    """Check {variant: specs}; returns it as {variant: [spec, ...]}."""
    by_name = {v.name: v for v in VARIANTS}
    checked: dict[str, list[str]] = {}
    for variant_name, specs in (faults or {}).items():
        variant = by_name.get(variant_name)
        if variant is None:
            raise ValueError(f"faults for unknown variant {variant_name!r}")
        spec_list = [specs] if isinstance(specs, str) else list(specs)
        spec_list = [s.strip() if isinstance(s, str) else s
                     for s in spec_list]
        _check_variant(variant, spec_list)
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
