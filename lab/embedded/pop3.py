"""A small asyncio POP3 server: RFC 1939, CAPA (RFC 2449), STLS (RFC 2595),
and, on a lab with an OAuth key, AUTH (RFC 5034) with XOAUTH2 and OAUTHBEARER.

One Pop3Session per connection walks the RFC 1939 states: AUTHORIZATION
(USER/PASS, APOP, CAPA, STLS), TRANSACTION (the maildrop is locked and
snapshotted; DELE only marks) and UPDATE (reached only through QUIT, which
commits the marked deletions).  A connection that drops without QUIT never
reaches UPDATE, so it deletes nothing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import itertools
import logging
import os
import socket
import ssl
import time
from typing import TYPE_CHECKING, Awaitable, Callable, Iterable, Optional

from .certs import LabCerts
from .store import MailStore, Message
from .variants import TLS_IMPLICIT, TLS_STARTTLS, Hooks, Tweaks, Variant

if TYPE_CHECKING:  # not at run time (see smtp.py)
    from .oauth import OAuthServer

log = logging.getLogger(__name__)

AUTHORIZATION = "AUTHORIZATION"
TRANSACTION = "TRANSACTION"
UPDATE = "UPDATE"

BANNER = "mailops embedded lab POP3 ready"
IMPLEMENTATION = "mailops-embedded-lab"
# RFC 1939 section 3: the autologout timer must be at least 10 minutes.
IDLE_TIMEOUT = 600.0
# How long a closing connection may take to say goodbye before it is cut.
CLOSE_TIMEOUT = 5.0
MAX_LINE = 4096

# Hook names that are not POP3 commands (see variants.Hook): a client that
# sends one as a command gets the built-in answer, not the hook.
PSEUDO_COMMANDS = frozenset(("CONNECT", "GREETING", "LOGIN", "REPLY"))

# Makes APOP timestamps unique within the process, as RFC 1939 asks.
_timestamps = itertools.count(1)


def _lines(data: bytes) -> list[bytes]:
    """Split a CRLF-normalized message into lines without their CRLF."""
    if not data:
        return []
    if data.endswith(b"\r\n"):
        data = data[:-2]
    return data.split(b"\r\n")


def _multiline_body(lines: Iterable[bytes]) -> bytes:
    """Byte-stuff lines (RFC 1939 section 3) and add the terminating dot."""
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line + b"\r\n"
    out += b".\r\n"
    return bytes(out)


class Pop3Session:
    """One client connection."""

    def __init__(self, listener: "Pop3Listener",
                 reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.listener = listener
        self.variant = listener.variant
        self.store = listener.store
        self.reader = reader
        self.writer = writer
        self.state = AUTHORIZATION
        self.tls_active = self.variant.tls == TLS_IMPLICIT
        self.timestamp: Optional[str] = None  # the APOP timestamp, if any
        self.user: Optional[str] = None       # locked maildrop owner
        self._pending_user: Optional[str] = None  # from USER, awaiting PASS
        self._maildrop: list[Message] = []    # snapshot taken at login
        self._deleted: set[int] = set()       # 1-based numbers marked by DELE
        self._closing = False

    # -- I/O --------------------------------------------------------------

    async def push(self, line: str) -> None:
        """Send one response line (CRLF added), through the REPLY hook."""
        hook = self.listener.hooks.get("REPLY")
        if hook is not None and await hook(self, line):
            return
        await self.push_bytes(line.encode("utf-8") + b"\r\n")

    async def push_bytes(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def push_multiline(self, first: str, lines: Iterable[bytes]) -> None:
        # One write: a multi-line response is never interleaved or split by
        # a drain in the middle.
        await self.push_bytes(first.encode("utf-8") + b"\r\n"
                              + _multiline_body(lines))

    def close(self) -> None:
        """End the session after the current command (used by QUIT, hooks)."""
        self._closing = True

    def abort(self) -> None:
        """Cut the connection at once (lab shutdown)."""
        self._closing = True
        self.writer.transport.abort()

    async def _read_line(self) -> Optional[bytes]:
        """The next command line, or None when the session should end."""
        try:
            async with asyncio.timeout(IDLE_TIMEOUT):
                line = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None  # EOF: the client went away
        except asyncio.LimitOverrunError:
            await self.push("-ERR line too long")
            return None
        except TimeoutError:
            await self.push("-ERR autologout timer expired")
            return None
        if len(line) > MAX_LINE:
            await self.push("-ERR line too long")
            return None
        return line

    # -- session loop -------------------------------------------------------

    async def run(self) -> None:
        try:
            hook = self.listener.hooks.get("CONNECT")
            if hook is None or not await hook(self, None):
                greeting = self._greeting()
                hook = self.listener.hooks.get("GREETING")
                if hook is None or not await hook(self, greeting):
                    await self.push(greeting)
            while not self._closing:
                line = await self._read_line()
                if line is None:
                    break
                await self._dispatch(line)
        except OSError as exc:
            # Resets and TLS errors (ssl.SSLError is an OSError) just end
            # the session; they are the client's business.
            log.debug("POP3 %s session ended: %r", self.variant.name, exc)
        finally:
            # No QUIT, no UPDATE state: marked messages stay (RFC 1939 6).
            self._release()
            await self._close_transport()

    def _greeting(self) -> str:
        if not self.variant.apop:
            return f"+OK {BANNER}"
        self.timestamp = (f"<{os.getpid()}.{next(_timestamps)}."
                          f"{int(time.time())}@{self.listener.hostname}>")
        return f"+OK {BANNER} {self.timestamp}"

    async def _dispatch(self, raw: bytes) -> None:
        text = raw.rstrip(b"\r\n").decode("utf-8", "replace")
        keyword, _sep, rest = text.partition(" ")
        command = keyword.upper()
        arg = rest if rest else None
        hook = (None if command in PSEUDO_COMMANDS
                else self.listener.hooks.get(command))
        if hook is not None and await hook(self, arg):
            return
        entry = COMMANDS.get(command)
        if entry is None:
            await self.push("-ERR unknown command")
            return
        states, method = entry
        if self.state not in states:
            await self.push("-ERR command not valid in this state")
            return
        try:
            await method(self, arg)
        except OSError:
            raise  # connection trouble ends the session in run()
        except Exception:  # a lab bug must not look like a dropped link
            log.exception("POP3 %s: %s failed", self.variant.name, command)
            await self.push("-ERR [SYS/PERM] internal server error")

    def _release(self) -> None:
        if self.user is not None:
            self.store.unlock(self.user)
            self.user = None

    async def _close_transport(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.writer.wait_closed()
        except (OSError, TimeoutError):
            # The peer reset or never finished the TLS goodbye: cut it.
            self.writer.transport.abort()

    # -- AUTHORIZATION --------------------------------------------------------

    async def cmd_user(self, arg: Optional[str]) -> None:
        if not arg:
            await self.push("-ERR usage: USER name")
            return
        # Same answer for every name: PASS decides, no user enumeration.
        self._pending_user = arg
        await self.push("+OK send PASS")

    async def cmd_pass(self, arg: Optional[str]) -> None:
        user, self._pending_user = self._pending_user, None
        if user is None:
            await self.push("-ERR USER first")
            return
        await self._login(user, self.store.check_password(user, arg or ""))

    async def cmd_apop(self, arg: Optional[str]) -> None:
        if self.timestamp is None:
            await self.push("-ERR APOP not supported")
            return
        parts = (arg or "").split()
        if len(parts) != 2:
            await self.push("-ERR usage: APOP name digest")
            return
        user, digest = parts
        password = self.store.password(user)
        ok = False
        if password is not None:
            expected = hashlib.md5(
                (self.timestamp + password).encode("utf-8")).hexdigest()
            # Bytes: compare_digest refuses non-ASCII str, and the digest
            # is whatever the client sent.
            ok = hmac.compare_digest(expected.encode(),
                                     digest.lower().encode("utf-8"))
        await self._login(user, ok)

    async def _login(self, user: str, ok: bool) -> None:
        if not ok:
            await self.push("-ERR [AUTH] invalid user name or password")
            return
        hook = self.listener.hooks.get("LOGIN")
        if hook is not None and await hook(self, user):
            return  # refused by the hook, still in AUTHORIZATION
        if not self.store.try_lock(user):
            await self.push("-ERR [IN-USE] mailbox locked, try again later")
            return
        self.user = user
        self.state = TRANSACTION
        self._maildrop = self.store.messages(user)
        self._deleted.clear()
        count, size = self._totals()
        await self.push(f"+OK maildrop locked and ready, {count} messages "
                        f"({size} octets)")

    async def cmd_auth(self, arg: Optional[str]) -> None:
        """RFC 5034 AUTH, only XOAUTH2 and OAUTHBEARER (and only on a lab
        with an OAuth key: elsewhere the command is unknown, as before)."""
        oauth = self.listener.oauth
        if oauth is None:
            await self.push("-ERR unknown command")
            return
        if self.state != AUTHORIZATION:
            await self.push("-ERR command not valid in this state")
            return
        words = (arg or "").split()
        if not words:
            # Not in RFC 5034, but what clients probe with (RFC 1734 style).
            await self.push_multiline(
                "+OK SASL mechanisms follow",
                (m.encode() for m in oauth.mechanisms))
            return
        mechanism = words[0].upper()
        if len(words) > 2:
            await self.push("-ERR usage: AUTH mechanism [initial-response]")
            return
        if mechanism not in oauth.mechanisms:
            await self.push("-ERR unsupported authentication mechanism")
            return
        initial = None
        if len(words) == 2:
            initial = await self._sasl_decode(words[1], initial=True)
            if initial is None:
                return

        async def ask(text: str) -> Optional[bytes]:
            await self.push(f"+ {text}")
            line = await self._read_line()
            if line is None:
                self.close()
                return None
            return await self._sasl_decode(
                line.rstrip(b"\r\n").decode("ascii", "replace"))

        outcome = await oauth.authenticate(
            mechanism, initial, ask,
            lambda user: self.store.password(user) is not None,
            fails=False, challenge=self.listener.tweaks.oauth_challenge)
        if outcome.answered:
            return
        if outcome.unexpected:
            await self.push("-ERR Invalid response to the OAuth error "
                            "challenge")
        elif outcome.user is not None:
            await self._login(outcome.user, True)
        elif self.listener.tweaks.oauth_echo and outcome.token:
            await self.push(f"-ERR [AUTH] Authentication failed: token "
                            f"{outcome.token} rejected")
        else:
            await self.push("-ERR [AUTH] Authentication failed.")

    async def _sasl_decode(self, text: str,
                           initial: bool = False) -> Optional[bytes]:
        """A client's base64 SASL response, or None after answering -ERR
        (RFC 5034 4: "*" cancels; "=" is an empty initial response)."""
        if text == "*" and not initial:
            await self.push("-ERR authentication aborted")
            return None
        if text == "=" and initial:
            return b""
        try:
            return base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            await self.push("-ERR invalid base64 in SASL response")
            return None

    async def cmd_capa(self, arg: Optional[str]) -> None:
        caps = ["TOP", "UIDL", "USER", "RESP-CODES", "AUTH-RESP-CODE"]
        if self.listener.oauth is not None:
            caps.append("SASL " + " ".join(self.listener.oauth.mechanisms))
        if self._stls_available():
            caps.append("STLS")
        caps.append(f"IMPLEMENTATION {IMPLEMENTATION}")
        hidden = self.listener.tweaks.capa_hidden
        caps = [c for c in caps if c.split()[0] not in hidden]
        await self.push_multiline("+OK capability list follows",
                                  (c.encode() for c in caps))

    def _stls_available(self) -> bool:
        return (self.variant.tls == TLS_STARTTLS and not self.tls_active
                and self.state == AUTHORIZATION)

    async def cmd_stls(self, arg: Optional[str]) -> None:
        if self.tls_active:
            await self.push("-ERR command not permitted when TLS active")
            return
        if not self._stls_available() or self.listener.tls_context is None:
            await self.push("-ERR STLS not available")
            return
        await self.push("+OK begin TLS negotiation")
        # Plaintext pipelined behind STLS must not be taken as if it came
        # over TLS (STARTTLS command injection, CVE-2011-0411).  StreamReader
        # has no public way to drop its buffer, hence the private access.
        buffered = getattr(self.reader, "_buffer", None)
        if buffered:
            buffered.clear()
        try:
            await self.writer.start_tls(self.listener.tls_context)
        except (OSError, ConnectionError) as exc:
            log.debug("POP3 %s: STLS handshake failed: %r",
                      self.variant.name, exc)
            self.abort()
            return
        self.tls_active = True
        # RFC 2595 4: nothing learnt before the upgrade carries over.
        self._pending_user = None

    # -- TRANSACTION ----------------------------------------------------------

    def _totals(self) -> tuple[int, int]:
        live = [m for i, m in enumerate(self._maildrop, 1)
                if i not in self._deleted]
        return len(live), sum(m.size for m in live)

    async def _message(self, arg: Optional[str]) -> Optional[tuple[int, Message]]:
        """Resolve a message-number argument, or answer -ERR and give None."""
        try:
            number = int((arg or "").split()[0])
        except (ValueError, IndexError):
            await self.push("-ERR invalid message number")
            return None
        if not 1 <= number <= len(self._maildrop) or number in self._deleted:
            await self.push(f"-ERR no such message {number}")
            return None
        return number, self._maildrop[number - 1]

    def _live(self) -> list[tuple[int, Message]]:
        return [(i, m) for i, m in enumerate(self._maildrop, 1)
                if i not in self._deleted]

    async def cmd_stat(self, arg: Optional[str]) -> None:
        count, size = self._totals()
        await self.push(f"+OK {count} {size}")

    async def _scan(self, arg: Optional[str],
                    field: Callable[[Message], str]) -> None:
        """LIST and UIDL share their shape: one message, or all of them."""
        if arg:
            found = await self._message(arg)
            if found is not None:
                number, msg = found
                await self.push(f"+OK {number} {field(msg)}")
            return
        await self.push_multiline(
            "+OK",
            (f"{number} {field(msg)}".encode() for number, msg in self._live()))

    async def cmd_list(self, arg: Optional[str]) -> None:
        await self._scan(arg, lambda m: str(m.size))

    async def cmd_uidl(self, arg: Optional[str]) -> None:
        await self._scan(arg, lambda m: m.uid)

    async def cmd_retr(self, arg: Optional[str]) -> None:
        found = await self._message(arg)
        if found is not None:
            msg = found[1]
            await self.push_multiline(f"+OK {msg.size} octets",
                                      _lines(msg.data))

    async def cmd_top(self, arg: Optional[str]) -> None:
        parts = (arg or "").split()
        try:
            count = int(parts[1])
        except (ValueError, IndexError):
            await self.push("-ERR usage: TOP msg n")
            return
        if len(parts) != 2 or count < 0:
            await self.push("-ERR usage: TOP msg n")
            return
        found = await self._message(parts[0])
        if found is None:
            return
        lines = _lines(found[1].data)
        try:
            blank = lines.index(b"")  # the line between headers and body
        except ValueError:
            blank = len(lines)
        await self.push_multiline("+OK top of message follows",
                                  lines[:blank + 1 + count])

    async def cmd_dele(self, arg: Optional[str]) -> None:
        found = await self._message(arg)
        if found is not None:
            self._deleted.add(found[0])
            await self.push(f"+OK message {found[0]} deleted")

    async def cmd_noop(self, arg: Optional[str]) -> None:
        await self.push("+OK")

    async def cmd_rset(self, arg: Optional[str]) -> None:
        self._deleted.clear()
        count, size = self._totals()
        await self.push(f"+OK maildrop has {count} messages ({size} octets)")

    async def cmd_quit(self, arg: Optional[str]) -> None:
        self.close()
        if self.state != TRANSACTION:
            await self.push("+OK bye")
            return
        # Unlock before answering: a client that reconnects as soon as it
        # reads +OK must find the maildrop free.
        left = self.commit()
        await self.push(f"+OK bye ({left} messages left)")

    def commit(self) -> int:
        """The UPDATE state: remove the messages marked by DELE and release
        the maildrop; returns how many messages are left in it."""
        self.state = UPDATE
        assert self.user is not None
        user = self.user
        doomed = [self._maildrop[i - 1].uid for i in sorted(self._deleted)]
        self.store.delete(user, doomed)
        self._release()
        return len(self.store.messages(user))


_AnyState = (AUTHORIZATION, TRANSACTION)
COMMANDS: dict[str, tuple[tuple[str, ...],
                          Callable[[Pop3Session, Optional[str]],
                                   Awaitable[None]]]] = {
    "USER": ((AUTHORIZATION,), Pop3Session.cmd_user),
    "PASS": ((AUTHORIZATION,), Pop3Session.cmd_pass),
    "APOP": ((AUTHORIZATION,), Pop3Session.cmd_apop),
    "STLS": ((AUTHORIZATION,), Pop3Session.cmd_stls),
    "AUTH": (_AnyState, Pop3Session.cmd_auth),  # it checks the state itself
    "CAPA": (_AnyState, Pop3Session.cmd_capa),
    "QUIT": (_AnyState, Pop3Session.cmd_quit),
    "STAT": ((TRANSACTION,), Pop3Session.cmd_stat),
    "LIST": ((TRANSACTION,), Pop3Session.cmd_list),
    "UIDL": ((TRANSACTION,), Pop3Session.cmd_uidl),
    "RETR": ((TRANSACTION,), Pop3Session.cmd_retr),
    "TOP": ((TRANSACTION,), Pop3Session.cmd_top),
    "DELE": ((TRANSACTION,), Pop3Session.cmd_dele),
    "NOOP": ((TRANSACTION,), Pop3Session.cmd_noop),
    "RSET": ((TRANSACTION,), Pop3Session.cmd_rset),
}
"""{COMMAND: (states it is valid in, implementation)}."""


class Pop3Listener:
    """One POP3 variant: a listening socket plus its live sessions."""

    def __init__(self, variant: Variant, *, store: MailStore,
                 certs: LabCerts, hooks: Optional[Hooks] = None,
                 hostname: Optional[str] = None,
                 tweaks: Optional[Tweaks] = None,
                 oauth: Optional["OAuthServer"] = None) -> None:
        self.variant = variant
        self.store = store
        self.hooks = dict(hooks or {})
        self.tweaks = tweaks or Tweaks()
        self.oauth = oauth
        self.hostname = hostname or socket.gethostname()
        self.tls_context: Optional[ssl.SSLContext] = (
            certs.server_context(variant.cert)
            if variant.tls in (TLS_STARTTLS, TLS_IMPLICIT) else None)
        self.sessions: dict[Pop3Session, asyncio.Task[None]] = {}
        self.port: Optional[int] = None
        self._server: Optional[asyncio.AbstractServer] = None

    async def start(self, host: str) -> int:
        implicit = (self.tls_context if self.variant.tls == TLS_IMPLICIT
                    else None)
        self._server = await asyncio.start_server(
            self._on_client, host, 0, ssl=implicit, limit=MAX_LINE * 2)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    def _on_client(self, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
        # A plain callback that starts our own task: had start_server run a
        # coroutine, the task would belong to asyncio's StreamReaderProtocol,
        # which reports a cancelled one as an error ("Exception in
        # callback"), and shutdown must be able to cancel sessions.
        session = Pop3Session(self, reader, writer)
        task = asyncio.get_running_loop().create_task(
            session.run(), name=f"pop3 {self.variant.name} session")
        self.sessions[session] = task
        task.add_done_callback(lambda _: self.sessions.pop(session, None))

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        # Server.close() leaves accepted connections open (until 3.12's
        # close_clients): cut them and wait for their tasks to unwind, so
        # locks are released and no task outlives the loop.
        sessions = list(self.sessions.items())
        for session, task in sessions:
            session.abort()
            task.cancel()
        if sessions:
            await asyncio.gather(*(t for _session, t in sessions),
                                 return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
