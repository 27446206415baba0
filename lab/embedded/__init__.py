"""The embedded lab: real SMTP, POP3 and IMAP servers on loopback, for fast
tests.

    from lab.embedded import EmbeddedLab

    with EmbeddedLab() as lab:
        smtplib.SMTP(lab.host, lab.ports["smtp"])
        poplib.POP3(lab.host, lab.ports["pop3"])
        imaplib.IMAP4(lab.host, lab.ports["imap"])

Every listener (see variants.VARIANTS) runs on one daemon thread with its
own asyncio event loop, bound to an ephemeral port on a loopback address.
TLS material is minted per start (certs.LabCerts); ``ca_path`` is the CA a
client should trust.  ``faults={variant: ["dele_err", "slow_banner:2"]}``
makes listeners misbehave on purpose (see faults.FAULTS).
``oauth_key=oauth.make_key()`` adds XOAUTH2 and OAUTHBEARER logins and a
token endpoint (see oauth.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from . import faults as _faults
from .certs import LabCerts
from .faults import FAULTS, FaultSpecs
from .imap import ImapListener
from .pop3 import Pop3Listener
from .smtp import SmtpListener
from .store import MailStore, Message, UnknownFolder, UnknownMailbox
from .variants import VARIANTS, Hook, Hooks, Variant

if TYPE_CHECKING:
    # oauth.py is imported only when a lab has a key: `python -m
    # lab.embedded.oauth` must find it unimported (runpy warns otherwise).
    from .oauth import OAuthServer, TokenEndpoint

__all__ = [
    "DEFAULT_ACCOUNTS",
    "EmbeddedLab",
    "FAULTS",
    "Hook",
    "MailStore",
    "Message",
    "UnknownFolder",
    "UnknownMailbox",
    "VARIANTS",
    "Variant",
]

log = logging.getLogger(__name__)

DEFAULT_ACCOUNTS: dict[str, str] = {
    "alice": "alice-secret-1",
    "bob": "bob-secret-2",
    **{f"rt{n:02d}": f"rt{n:02d}-pass" for n in range(1, 6)},
}

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0

Listener = Union[SmtpListener, Pop3Listener, ImapListener]
LISTENERS = {"smtp": SmtpListener, "pop3": Pop3Listener,
             "imap": ImapListener}


def _loopback(host: str) -> str:
    """Only literal loopback addresses: a lab must never face a network.

    A name such as "localhost" is refused too, because it may resolve to
    both 127.0.0.1 and ::1, and port 0 would then give each its own port.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be a literal loopback IP address, "
                         f"not {host!r}") from None
    if not address.is_loopback:
        raise ValueError(f"host must be a loopback address, not {host!r}")
    return str(address)


class EmbeddedLab:
    """Context manager running every lab listener on a background loop.

    ``hooks`` maps a variant name to {COMMAND: hook} (see variants.Hook); it
    is the extension point for fault injection.  ``faults`` maps a variant
    name to a list of named faults (see faults.FAULTS), e.g.
    ``{"pop3": ["dele_err"]}``; on a command the user's hook runs before the
    fault's.  Unknown or unfitting faults raise ValueError here.

    ``oauth_key`` (bytes, e.g. oauth.make_key() or oauth.load_key(path))
    turns on OAuth: the SMTP, POP3 and IMAP listeners offer XOAUTH2 and
    OAUTHBEARER and accept the tokens oauth.issue makes with that key for
    scope "mail" (``lab.issue_token(user)``), and a token endpoint runs on
    the same host (``lab.token_endpoint.url``), whose clients are the
    accounts (client_id the user name, client_secret the password).
    """

    def __init__(self, host: str = "127.0.0.1",
                 accounts: Optional[Mapping[str, str]] = None,
                 domain: str = "lab.test", *,
                 hooks: Optional[Mapping[str, Hooks]] = None,
                 faults: Optional[FaultSpecs] = None,
                 oauth_key: Optional[bytes] = None) -> None:
        self.host = _loopback(host)
        self.domain = domain
        self.store = MailStore(DEFAULT_ACCOUNTS if accounts is None
                               else accounts)
        self.hooks = {name: dict(h) for name, h in (hooks or {}).items()}
        unknown = set(self.hooks) - {v.name for v in VARIANTS}
        if unknown:
            raise ValueError(f"hooks for unknown variants: {sorted(unknown)}")
        if oauth_key is not None and (not isinstance(oauth_key, bytes)
                                      or not oauth_key):
            raise ValueError("oauth_key must be non-empty bytes")
        self.oauth_key = oauth_key
        self.faults = _faults.validate(faults, oauth=oauth_key is not None)
        self.token_endpoint: Optional["TokenEndpoint"] = None
        self._oauth: Optional["OAuthServer"] = None
        self._started = 0.0  # time.monotonic() of the last start()
        self.ports: dict[str, int] = {}
        self.certs: Optional[LabCerts] = None
        self._tmpdir: Optional[Path] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._listeners: list[Listener] = []
        self._stopping = False

    # -- public attributes --------------------------------------------------

    @property
    def accounts(self) -> dict[str, str]:
        """{username: password}; the store's own dict, shared by servers."""
        return self.store.accounts

    @property
    def ca_path(self) -> Optional[str]:
        """PEM file of the lab CA (None until started)."""
        return str(self.certs.ca_path) if self.certs else None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def address(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def issue_token(self, user: str, scope: str = "mail",
                    lifetime: float = 3600) -> str:
        """An access token for ``user`` the lab's servers accept (with the
        default scope); needs ``oauth_key``."""
        if self.oauth_key is None:
            raise RuntimeError("this lab has no OAuth key (oauth_key=...)")
        from . import oauth
        return oauth.issue(self.oauth_key, user, scope, lifetime)

    def describe(self) -> dict[str, Any]:
        """Everything a client needs, as a JSON-able dict."""
        return {
            "host": self.host,
            "domain": self.domain,
            "ca_path": self.ca_path,
            "ports": dict(self.ports),
            "faults": {name: list(specs)
                       for name, specs in self.faults.items()},
            "accounts": [
                {"username": user, "password": password,
                 "address": self.address(user)}
                for user, password in self.accounts.items()
            ],
            **self._describe_oauth(),
        }

    def _describe_oauth(self) -> dict[str, Any]:
        """{"oauth": {...}} on a lab with a key (the key base64, as
        oauth.save_key writes it), else nothing."""
        if self.oauth_key is None:
            return {}
        from . import oauth
        endpoint = self.token_endpoint
        return {"oauth": {
            "key": oauth.key_text(self.oauth_key),
            "scope": oauth.DEFAULT_SCOPE,
            "mechanisms": list(oauth.MECHANISMS),
            "token_url": endpoint.url if endpoint else None,
            "openid_configuration": (endpoint.openid_configuration
                                     if endpoint else None),
        }}

    # -- lifecycle ----------------------------------------------------------

    def __enter__(self) -> "EmbeddedLab":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> "EmbeddedLab":
        if self._thread is not None:
            raise RuntimeError("lab already started")
        self._tmpdir = Path(tempfile.mkdtemp(prefix="embedded-lab-"))
        self.certs = LabCerts(self._tmpdir)
        if self.oauth_key is not None:
            try:
                self._start_oauth(self.oauth_key)
            except BaseException:
                self.stop()
                raise
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._exception_handler)
        self._stopping = False
        self._started = time.monotonic()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="embedded-lab",
            daemon=True)
        self._thread.start()
        try:
            self.ports = self._call(self._astart(), START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Close every listener and connection, end the thread.  Idempotent."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            self._stopping = True
            try:
                self._call(self._astop(), STOP_TIMEOUT)
            finally:
                loop.call_soon_threadsafe(loop.stop)
                thread.join(STOP_TIMEOUT)
        self._loop = self._thread = None
        self._listeners = []
        self.ports = {}
        if self.token_endpoint is not None:
            self.token_endpoint.stop()
            self.token_endpoint = None
        self._oauth = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None
        self.certs = None

    def _start_oauth(self, key: bytes) -> None:
        from . import oauth
        clients = {user: oauth.Client(password, user)
                   for user, password in self.accounts.items()}
        self.token_endpoint = oauth.TokenEndpoint(
            key, clients, host=self.host).start()
        self._oauth = oauth.OAuthServer(
            key, openid_configuration=self.token_endpoint.openid_configuration)

    # -- loop thread ----------------------------------------------------------

    def _call(self, coro: Any, timeout: float) -> Any:
        assert self._loop is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def _exception_handler(self, loop: asyncio.AbstractEventLoop,
                           context: dict[str, Any]) -> None:
        exc = context.get("exception")
        # A client refusing our certificate (the point of the badcert and
        # wrongname listeners) or vanishing mid-handshake fails the server
        # side of the TLS handshake; asyncio's debug mode reports that as an
        # error, but it is expected traffic.  The same goes for connections
        # that stop() cuts or cancels.
        expected = (
            (isinstance(exc, OSError) and context.get("message")
             == "Error on transport creation for incoming connection")
            or (self._stopping
                and isinstance(exc, (asyncio.CancelledError, OSError))))
        if expected:
            log.debug("embedded lab: %s: %r", context.get("message"), exc)
            return
        loop.default_exception_handler(context)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            # Whatever is still pending is cancelled and awaited here, so
            # closing the loop never drops a live task ("Task was destroyed
            # but it is pending").
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(
                    asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    async def _astart(self) -> dict[str, int]:
        assert self.certs is not None
        for variant in VARIANTS:
            cls = LISTENERS[variant.protocol]
            hostname = f"mail.{self.domain}"
            # Built per start: time-limited faults count from this start.
            fault_hooks, tweaks = _faults.build(
                variant, self.faults.get(variant.name, ()),
                hostname=hostname, started=self._started)
            hooks = _faults.compose(self.hooks.get(variant.name, {}),
                                    fault_hooks)
            listener = cls(variant, store=self.store, certs=self.certs,
                           hooks=hooks, hostname=hostname, tweaks=tweaks,
                           oauth=self._oauth)
            self._listeners.append(listener)
            await listener.start(self.host)
        ports = {}
        for listener in self._listeners:
            assert listener.port is not None
            ports[listener.variant.name] = listener.port
        return ports

    async def _astop(self) -> None:
        await asyncio.gather(*(lst.aclose() for lst in self._listeners),
                             return_exceptions=True)
