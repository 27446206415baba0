"""SMTP listeners built on aiosmtpd, delivering into the shared MailStore.

Mail is accepted with or without AUTH (like port 25); AUTH is offered on
every variant, with or without TLS, because deciding whether plaintext AUTH
is acceptable is the client's job, and that is what the tests exercise.
With an OAuth key (EmbeddedLab(oauth_key=...)) XOAUTH2 and OAUTHBEARER are
offered too (see oauth.OAuthServer).
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import email.utils
import hmac
import itertools
import logging
import os
import secrets
import time
from base64 import b64decode
from typing import TYPE_CHECKING, Any, Optional

from aiosmtpd.smtp import (
    MISSING,
    SMTP,
    AuthResult,
    Envelope,
    LoginPassword,
    Session,
    TLSSetupException,
    auth_mechanism,
)

from .certs import LabCerts
from .store import MailStore
from .variants import TLS_IMPLICIT, TLS_STARTTLS, Hook, Hooks, Tweaks, Variant

if TYPE_CHECKING:  # not at run time: `python -m lab.embedded.oauth` must
    from .oauth import OAuthServer  # find it unimported (runpy warns)

log = logging.getLogger(__name__)

IDENT = "ESMTP mailops embedded lab"
# Hook names that are not SMTP commands (see variants.Hook).
PSEUDO_COMMANDS = frozenset(("CONNECT", "GREETING", "REPLY"))
# The handler's OAuth mechanisms, left out of AUTH on a lab without a key.
OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


class LabHandler:
    """aiosmtpd handler: recipient checks, delivery, AUTH checks.

    ``tweaks`` (see variants.Tweaks) bends the EHLO reply, AUTH verdicts,
    the reply to the end of DATA and delivery, for fault injection.
    """

    def __init__(self, store: MailStore,
                 tweaks: Optional[Tweaks] = None,
                 oauth: Optional["OAuthServer"] = None) -> None:
        self.store = store
        self.tweaks = tweaks or Tweaks()
        self.oauth = oauth
        self._queue_ids = itertools.count(1)
        # Deliveries waiting for deliver_delay; cancelled when the lab stops.
        self.late: set[asyncio.TimerHandle] = set()

    async def handle_EHLO(self, server: SMTP, session: Session,
                          envelope: Envelope, hostname: str,
                          responses: list[str]) -> list[str]:
        # With this (5-argument) hook aiosmtpd leaves recording the client's
        # name to us and lets us reorder the reply lines.
        session.host_name = hostname
        if self.tweaks.starttls_last and "250-STARTTLS" in responses:
            lines = [r[4:] for r in responses if r != "250-STARTTLS"]
            lines.append("STARTTLS")
            responses = [f"250-{text}" for text in lines[:-1]]
            responses.append(f"250 {lines[-1]}")
        return responses

    async def handle_RCPT(self, server: SMTP, session: Session,
                          envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        if self.store.mailbox_for(address) is None and not self.tweaks.open_relay:
            return (f"550 5.1.1 <{address}>: Recipient address rejected: "
                    "User unknown")
        # With a handle_RCPT hook aiosmtpd leaves recording the recipient
        # to us.
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: SMTP, session: Session,
                          envelope: Envelope) -> str:
        if self.tweaks.data_reply is not None:
            return self.tweaks.data_reply  # and nothing is stored
        raw = envelope.original_content or b""
        rcpts = [rcpt for rcpt in envelope.rcpt_tos
                 if self.store.mailbox_for(rcpt) is not None]
        if self.tweaks.delivery == "bounce":
            sender = envelope.mail_from or ""
            rcpts = [sender] if self.store.mailbox_for(sender) else []
            raw = bounce(raw, sender, list(envelope.rcpt_tos))
        elif self.tweaks.stamp is not None:
            raw = stamped(raw, self.tweaks.stamp)
        delay = self.tweaks.deliver_delay
        if delay > 0:
            loop = asyncio.get_running_loop()
            # Forget the timers that already ran, keep the pending ones.
            self.late = {h for h in self.late if h.when() > loop.time()}
            self.late.add(loop.call_later(delay, self._deliver, rcpts, raw))
        else:
            self._deliver(rcpts, raw)
        queue_id = f"{next(self._queue_ids):010X}"
        return f"250 2.0.0 Ok: queued as {queue_id}"

    def _deliver(self, rcpts: list[str], raw: bytes) -> None:
        for rcpt in rcpts:
            for _copy in range(self.tweaks.copies):
                self.store.deliver(rcpt, raw)

    async def handle_exception(self, error: Exception) -> str:
        # Called by aiosmtpd inside its ``except`` block.  A client that
        # rejects our certificate during STARTTLS is expected traffic here
        # (aiosmtpd would log a traceback); anything else is a lab bug.
        if isinstance(error, TLSSetupException):
            log.debug("STARTTLS handshake failed: %r", error.__cause__)
        else:
            log.exception("SMTP session error")
        return f"500 5.3.0 Error: ({type(error).__name__}) {error}"

    def authenticate(self, server: SMTP, session: Session,
                     envelope: Envelope, mechanism: str,
                     auth_data: Any) -> AuthResult:
        """aiosmtpd authenticator, used by the built-in PLAIN and LOGIN."""
        if self.tweaks.auth_fails or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode("utf-8", "replace")
        password = auth_data.password.decode("utf-8", "replace")
        if self.store.check_password(user, password):
            return AuthResult(success=True, auth_data=auth_data)
        return AuthResult(success=False, handled=False)

    @auth_mechanism("CRAM-MD5")
    async def auth_CRAM_MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        """RFC 2195: the client proves the password with HMAC-MD5.

        aiosmtpd ships no CRAM-MD5; it picks up ``auth_*`` methods of the
        handler, so this one is advertised next to PLAIN and LOGIN.
        """
        if len(args) != 1:
            # CRAM-MD5 has no initial response.
            await server.push("501 5.5.2 Syntax: AUTH CRAM-MD5")
            return AuthResult(success=False, handled=True)
        challenge = (f"<{secrets.randbelow(10**10)}.{int(time.time())}"
                     f".{os.getpid()}@{server.hostname}>").encode()
        response = await server.challenge_auth(challenge)
        if response is MISSING:
            # challenge_auth already answered (aborted or bad base64).
            return AuthResult(success=False, handled=True)
        assert isinstance(response, bytes)
        login, _sep, digest = response.rpartition(b" ")
        user = login.decode("utf-8", "replace")
        password = self.store.password(user)
        if password is None or self.tweaks.auth_fails:
            return AuthResult(success=False, handled=False)
        expected = hmac.new(password.encode(), challenge, "md5").hexdigest()
        if hmac.compare_digest(expected.encode(), digest.lower()):
            return AuthResult(success=True,
                              auth_data=LoginPassword(login, b""))
        return AuthResult(success=False, handled=False)

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, server: SMTP, args: list[str]) -> AuthResult:
        """Google's and Microsoft's bearer token login (only with a key)."""
        return await self._oauth(server, args, "XOAUTH2")

    @auth_mechanism("OAUTHBEARER")
    async def auth_OAUTHBEARER(self, server: SMTP,
                               args: list[str]) -> AuthResult:
        """RFC 7628 bearer token login (only with a key)."""
        return await self._oauth(server, args, "OAUTHBEARER")

    async def _oauth(self, server: SMTP, args: list[str],
                     mechanism: str) -> AuthResult:
        assert self.oauth is not None  # the mechanisms are excluded otherwise
        initial = None
        if len(args) == 2:
            try:
                # RFC 4954 4: "=" is an empty initial response.
                initial = (b"" if args[1] == "=" else
                           b64decode(args[1].encode(), validate=True))
            except (binascii.Error, ValueError):
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)

        async def ask(text: str) -> Optional[bytes]:
            answer = await server.challenge_auth(text.encode("ascii"),
                                                 encode_to_b64=False)
            # MISSING: challenge_auth already answered ("*", bad base64).
            return None if answer is MISSING else answer

        outcome = await self.oauth.authenticate(
            mechanism, initial, ask,
            lambda user: self.store.password(user) is not None,
            fails=self.tweaks.auth_fails,
            challenge=self.tweaks.oauth_challenge)
        if outcome.answered:
            return AuthResult(success=False, handled=True)
        if outcome.unexpected:
            return AuthResult(success=False, handled=False, message=(
                "501 5.5.2 Invalid response to the OAuth error challenge"))
        if outcome.user is not None:
            return AuthResult(success=True, auth_data=LoginPassword(
                outcome.user.encode("utf-8"), b""))
        message = None  # aiosmtpd's "535 5.7.8 Authentication credentials invalid"
        if self.tweaks.oauth_echo and outcome.token:
            message = ("535 5.7.8 Authentication credentials invalid: "
                       f"token {outcome.token} rejected")
        return AuthResult(success=False, handled=False, message=message)


class LabSession(Session):
    """aiosmtpd's Session without the login_data deprecation warning.

    aiosmtpd 1.4 itself assigns the deprecated ``login_data`` on every
    successful AUTH, which would log a warning per login.
    """

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


STAMP_HOSTS = ("mail.lab.test", "relay.outside.test", "mx.lab.test")


def stamped(raw: bytes, verdicts: str) -> bytes:
    """raw as a three-hop path delivers it: a Received chain (one second a hop) and, on top,
    the receiving side's Authentication-Results with verdicts."""
    now = time.time()
    lines = [f"Authentication-Results: {STAMP_HOSTS[-1]}; {verdicts}"]
    for n, (source, by) in reversed(list(enumerate(
            zip(("probe.test",) + STAMP_HOSTS[:-1], STAMP_HOSTS)))):
        lines.append(
            f"Received: from {source} (localhost [127.0.0.1]) by {by} "
            f"(Postfix) with ESMTPS id 4Q{n}{int(now) % 100000}; "
            f"{email.utils.formatdate(now - 2 + n, usegmt=True)}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii") + raw


def bounce(raw: bytes, sender: str, rcpts: list[str]) -> bytes:
    """The DSN (RFC 3464, as Postfix writes it, returning the headers) of raw."""
    original = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    recipient = rcpts[0] if rcpts else "unknown"
    return "\r\n".join([
        "Return-Path: <>",
        "From: MAILER-DAEMON@mx.lab.test (Mail Delivery System)",
        f"To: {sender}",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {email.utils.formatdate(usegmt=True)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; '
        'boundary="lab-bounce"',
        "",
        "--lab-bounce",
        "Content-Type: text/plain",
        "",
        "This is the mail system at host mx.lab.test. Your message could "
        "not be delivered.",
        "",
        "--lab-bounce",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.lab.test",
        "",
        f"Final-Recipient: rfc822; {recipient}",
        "Action: failed",
        "Status: 5.1.1",
        f"Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: user unknown",
        "",
        "--lab-bounce",
        "Content-Type: text/rfc822-headers",
        "",
        original,
        "",
        "--lab-bounce--",
        ""]).encode("utf-8")


class LabSMTP(SMTP):
    """aiosmtpd's SMTP protocol plus per-command hooks.

    aiosmtpd's own ``handle_*`` hooks cannot veto every command (STARTTLS,
    for one) nor the greeting, so hooks wrap the command table aiosmtpd
    dispatches from, "CONNECT" runs before the greeting, "GREETING"
    may replace it and "REPLY" sees every reply line pushed.
    """

    def __init__(self, handler: LabHandler, *, hooks: Hooks,
                 listener: "SmtpListener", **kwargs: Any) -> None:
        if listener.oauth is not None:
            # A bearer token's SASL response (after a bare "AUTH OAUTHBEARER") is one line of
            # up to RFC 4954's 12288 octets; aiosmtpd's reader stops at 1001.
            self.line_length_limit = 12288 + 2
        super().__init__(handler, **kwargs)
        self._lab_hooks = dict(hooks)
        self._listener = listener
        # Set just before aiosmtpd sends the greeting: the next push is it.
        self._lab_greeting_next = False
        if listener.oauth is not None:
            # aiosmtpd's size limits live in one dict shared by every
            # connection (a class attribute); ours is per connection.  An
            # AUTH line with a bearer token is longer than aiosmtpd's 512
            # (RFC 4954 4 allows 12288); the reader still caps every line
            # at line_length_limit.
            self.command_size_limits = collections.defaultdict(
                lambda: self.command_size_limit,
                {"AUTH": self.line_length_limit})
        for command, hook in self._lab_hooks.items():
            if command not in PSEUDO_COMMANDS:
                # _smtp_methods is aiosmtpd's {COMMAND: bound method} table.
                self._smtp_methods[command] = self._hooked(
                    hook, self._smtp_methods.get(command))

    def _hooked(self, hook: Hook, builtin: Optional[Any]) -> Any:
        async def run(arg: Optional[str]) -> None:
            if await hook(self, arg):
                return
            if builtin is None:
                await self.push("502 5.5.1 Command not implemented")
            else:
                await builtin(arg)
        return run

    def _create_session(self) -> Session:
        return LabSession(self.loop)

    # -- the connection interface hooks rely on (shared with POP3) ----------

    @property
    def reader(self) -> asyncio.StreamReader:
        """The client's bytes (after STARTTLS: decrypted)."""
        return self._reader

    async def push(self, status: Any) -> None:
        line = (status if isinstance(status, str)
                else bytes(status).decode("utf-8", "replace"))
        if self._lab_greeting_next:
            self._lab_greeting_next = False
            hook = self._lab_hooks.get("GREETING")
            if hook is not None and await hook(self, line):
                return
        # Every reply line on its way out, the built-in greeting included
        # (unless a GREETING hook sent its own); push_bytes bypasses this.
        hook = self._lab_hooks.get("REPLY")
        if hook is not None and await hook(self, line):
            return
        await super().push(status)

    async def push_bytes(self, data: bytes) -> None:
        """Send raw bytes (no CRLF added)."""
        self._writer.write(data)
        await self._writer.drain()

    def close(self) -> None:
        """End the connection once what was pushed is sent."""
        if self.transport is not None:
            self.transport.close()

    async def _handle_client(self) -> None:
        try:
            hook = self._lab_hooks.get("CONNECT")
            if hook is not None and await hook(self, None):
                return
            self._lab_greeting_next = True
            await super()._handle_client()
        except asyncio.CancelledError:
            # aiosmtpd cancels this task on EOF and on a lost connection; a
            # hook may have been waiting (a silent greeting, say), so the
            # connection is ended here too, not left half-open.
            self.close()
            raise
        except OSError as exc:
            # A reset while a hook writes (or aiosmtpd's own re-raised
            # ConnectionResetError): the client's business, and nobody
            # awaits this task, so it must not end with an exception.
            log.debug("SMTP %s session ended: %r",
                      self._listener.variant.name, exc)
            self.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Called again after STARTTLS with the TLS transport; a set copes.
        self._listener.connections.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Optional[Exception]) -> None:
        self._listener.connections.discard(self)
        super().connection_lost(error)


class SmtpListener:
    """One SMTP variant: a listening socket plus its live connections."""

    def __init__(self, variant: Variant, *, store: MailStore,
                 certs: LabCerts, hooks: Optional[Hooks] = None,
                 hostname: str = "localhost",
                 tweaks: Optional[Tweaks] = None,
                 oauth: Optional["OAuthServer"] = None) -> None:
        self.variant = variant
        self.hooks = dict(hooks or {})
        self.hostname = hostname
        self.oauth = oauth
        self.handler = LabHandler(store, tweaks, oauth)
        self.connections: set[LabSMTP] = set()
        self.port: Optional[int] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._tls = (certs.server_context(variant.cert)
                     if variant.tls in (TLS_STARTTLS, TLS_IMPLICIT) else None)

    def _make_protocol(self) -> LabSMTP:
        return LabSMTP(
            self.handler,
            hooks=self.hooks,
            listener=self,
            hostname=self.hostname,  # also avoids a slow getfqdn() per link
            ident=IDENT,
            tls_context=self._tls if self.variant.tls == TLS_STARTTLS else None,
            require_starttls=False,
            auth_require_tls=False,
            auth_exclude_mechanism=(() if self.oauth is not None
                                    else OAUTH_MECHANISMS),
            authenticator=self.handler.authenticate,
            loop=asyncio.get_running_loop(),
        )

    async def start(self, host: str) -> int:
        implicit = self._tls if self.variant.tls == TLS_IMPLICIT else None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_protocol, host, 0, ssl=implicit)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        # Server.close() leaves accepted connections open (until 3.12's
        # close_clients); abort them so their handler tasks end now.
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        for handle in list(self.handler.late):
            handle.cancel()  # a stopped lab delivers nothing more
        self.handler.late.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
