"""OAuth 2.0 for the labs: a token issuer, its verifier, the SASL side of
XOAUTH2 and OAUTHBEARER, and a token endpoint.  Standard library only.

Tokens are JWTs (RFC 7519) signed with HS256 and a lab key::

    header  {"alg": "HS256", "typ": "JWT", "kid": "default"}
    claims  {"iss": "mailops-lab", "sub": user, "aud": "mail",
             "scope": "mail", "iat": t, "nbf": t, "exp": t + lifetime}

    key = make_key()
    token = issue(key, "alice")
    ok, error = verify(key, token, "alice")       # (True, None)

The Docker lab's Dovecot validates the same tokens locally (its
``local_validation_key_dict`` holds the key base64-encoded at
``<azp:default>/HS256/default``): ``save_key`` writes exactly that file.

The mail servers of the embedded lab take an ``OAuthServer`` (key, required
scope, the discovery URL for RFC 7628 errors) and call
``OAuthServer.authenticate`` with a protocol-specific way to send a
continuation; the exchange, the verdict and the provider-style JSON error
challenge are the same for SMTP, POP3 and IMAP.

``TokenEndpoint`` is the OAuth 2.0 client credentials grant (RFC 6749 4.4)
on a small threaded HTTP server.  As a program::

    python -m lab.embedded.oauth make-key --key-file KEY
    python -m lab.embedded.oauth issue --key-file KEY --user alice
    python -m lab.embedded.oauth serve --key-file KEY --clients-file CLIENTS
                                       [--host 127.0.0.1] [--port 0]

``serve`` prints the token URL as its first line and runs until SIGTERM or
SIGINT; the clients file is JSON ``{client_id: {"secret": ..., "username":
..., "scopes": [...], "lifetime": ...}}`` (lifetime optional: that client's
tokens live that many seconds instead of ``--lifetime``; negative: they are
issued already expired).  ``--tls-cert`` and ``--tls-key`` (PEM) serve HTTPS.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import http.server
import json
import logging
import os
import secrets
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Mapping, Optional, Union

log = logging.getLogger(__name__)

ISSUER = "mailops-lab"
AUDIENCE = "mail"
KID = "default"
ALGORITHM = "HS256"
DEFAULT_SCOPE = "mail"
DEFAULT_LIFETIME = 3600
ISSUE_SLACK = 1  # seconds iat and nbf lie in the past (issue without ``now``)
KEY_BYTES = 32

XOAUTH2 = "XOAUTH2"
OAUTHBEARER = "OAUTHBEARER"
MECHANISMS = (XOAUTH2, OAUTHBEARER)

# RFC 7628 3.2.2 / RFC 6750 3.1 error codes, and the HTTP-style status
# Google's XOAUTH2 puts in its error challenge instead.
INVALID_REQUEST = "invalid_request"
INVALID_TOKEN = "invalid_token"
INSUFFICIENT_SCOPE = "insufficient_scope"
XOAUTH2_STATUS = {INVALID_REQUEST: "400", INVALID_TOKEN: "401",
                  INSUFFICIENT_SCOPE: "403"}

# What the client must answer an error challenge with, per mechanism: an
# empty response for XOAUTH2 (Google, Microsoft), a single %x01 for
# OAUTHBEARER (RFC 7628 3.2.3).
DUMMY_RESPONSE = {XOAUTH2: b"", OAUTHBEARER: b"\x01"}

# Tweaks.oauth_challenge values (faults.py): how a failed login is answered.
CHALLENGE_JSON = "json"        # the provider-style JSON error challenge
CHALLENGE_NONE = "none"        # fail at once, no challenge (Microsoft 365)
CHALLENGE_GARBAGE = "garbage"  # a continuation that is neither base64 nor JSON
GARBAGE_CHALLENGE = "oauth error: token rejected"

_KVSEP = b"\x01"


# -- keys ------------------------------------------------------------------------

def make_key() -> bytes:
    """A fresh random HS256 key (32 bytes)."""
    return secrets.token_bytes(KEY_BYTES)


def key_text(key: bytes) -> str:
    """The key as Dovecot's key dict wants it: standard base64, one line."""
    return base64.b64encode(key).decode("ascii")


def key_from_text(text: str) -> bytes:
    try:
        key = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise ValueError("an OAuth key file holds the key in base64") from None
    if not key:
        raise ValueError("the OAuth key is empty")
    return key


def save_key(path: Union[str, Path], key: bytes) -> None:
    """Write the key base64-encoded, readable by its owner only, no newline."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(key_text(key))


def load_key(path: Union[str, Path]) -> bytes:
    return key_from_text(Path(path).read_text(encoding="ascii"))


# -- tokens ----------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    if not text or any(c not in _B64URL for c in text) or len(text) % 4 == 1:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                    "0123456789-_")


def _json_segment(value: Mapping[str, Any]) -> str:
    return _b64url(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _sign(key: bytes, signing_input: str) -> str:
    return _b64url(hmac.new(key, signing_input.encode("ascii"),
                            hashlib.sha256).digest())


def scope_text(scope: Union[str, Iterable[str]]) -> str:
    """A scope as RFC 6749 3.3 writes it: space-separated, in order, once."""
    words = scope.split() if isinstance(scope, str) else \
        [w for item in scope for w in str(item).split()]
    return " ".join(dict.fromkeys(words))


def issue(key: bytes, username: str,
          scope: Union[str, Iterable[str]] = DEFAULT_SCOPE,
          lifetime: float = DEFAULT_LIFETIME,
          now: Optional[float] = None) -> str:
    """A signed access token for ``username``, valid from ``now`` for
    ``lifetime`` seconds (negative: already expired).

    Without ``now``, iat and nbf are ISSUE_SLACK seconds before the current
    time (exp still counts from the current time): Dovecot 2.3 compares them
    with a coarse clock and no leeway, and refuses a token used within a few
    milliseconds of a second boundary as "not valid yet"."""
    current = int(time.time() if now is None else now)
    issued = current - ISSUE_SLACK if now is None else current
    header = {"alg": ALGORITHM, "typ": "JWT", "kid": KID}
    claims = {"iss": ISSUER, "sub": username, "aud": AUDIENCE,
              "scope": scope_text(scope), "iat": issued, "nbf": issued,
              "exp": current + int(lifetime)}
    signing_input = f"{_json_segment(header)}.{_json_segment(claims)}"
    return f"{signing_input}.{_sign(key, signing_input)}"


def _error(status: str, scope: str, reason: str) -> dict[str, str]:
    return {"status": status, "scope": scope, "reason": reason}


def _decode(token: str) -> tuple[dict[str, Any], dict[str, Any], str, str]:
    """(header, claims, signing input, signature) or ValueError."""
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3:
        raise ValueError("not a JWT")
    header, claims = (json.loads(_b64url_decode(p).decode("utf-8"))
                      for p in parts[:2])
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("JWT parts are not JSON objects")
    _b64url_decode(parts[2])
    return header, claims, f"{parts[0]}.{parts[1]}", parts[2]


def claims_unverified(token: str) -> Optional[dict[str, Any]]:
    """The claims of a token without checking anything (None if malformed):
    for OAUTHBEARER without an authzid, where only the token names the user."""
    try:
        return _decode(token)[1]
    except (ValueError, UnicodeDecodeError):
        return None


def _int_claim(claims: Mapping[str, Any], name: str) -> Optional[int]:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} is not a number")
    return int(value)


def verify(key: bytes, token: str, username: Optional[str],
           required_scope: str = DEFAULT_SCOPE,
           now: Optional[float] = None) -> tuple[bool, Optional[dict[str, str]]]:
    """Check a token for ``username`` (None: for whoever it names).

    Returns (True, None), or (False, error) where error is the RFC 7628
    error a server reports ({"status", "scope"}) plus "reason", which only
    the lab uses (never sent): malformed, unsupported_algorithm, unknown_key,
    bad_signature, expired, not_yet_valid, wrong_issuer, wrong_audience,
    wrong_user or wrong_scope.  The status is insufficient_scope for
    wrong_scope, invalid_token otherwise.
    """
    current = time.time() if now is None else now
    try:
        header, claims, signing_input, signature = _decode(token)
    except (ValueError, UnicodeDecodeError):
        return False, _error(INVALID_TOKEN, required_scope, "malformed")
    if header.get("alg") != ALGORITHM:
        # Never "none", never another algorithm with the same key.
        return False, _error(INVALID_TOKEN, required_scope,
                             "unsupported_algorithm")
    if header.get("kid", KID) != KID:
        return False, _error(INVALID_TOKEN, required_scope, "unknown_key")
    if not hmac.compare_digest(_sign(key, signing_input).encode("ascii"),
                               signature.encode("ascii")):
        return False, _error(INVALID_TOKEN, required_scope, "bad_signature")
    try:
        exp = _int_claim(claims, "exp")
        nbf = _int_claim(claims, "nbf")
        iat = _int_claim(claims, "iat")
    except ValueError:
        return False, _error(INVALID_TOKEN, required_scope, "malformed")
    if exp is None or not isinstance(claims.get("sub"), str):
        return False, _error(INVALID_TOKEN, required_scope, "malformed")
    if current >= exp:
        return False, _error(INVALID_TOKEN, required_scope, "expired")
    if (nbf is not None and current < nbf) or (iat is not None
                                               and current < iat):
        return False, _error(INVALID_TOKEN, required_scope, "not_yet_valid")
    if claims.get("iss") != ISSUER:
        return False, _error(INVALID_TOKEN, required_scope, "wrong_issuer")
    audience = claims.get("aud")
    if audience != AUDIENCE and not (isinstance(audience, list)
                                     and AUDIENCE in audience):
        return False, _error(INVALID_TOKEN, required_scope, "wrong_audience")
    if username is not None and claims["sub"] != username:
        return False, _error(INVALID_TOKEN, required_scope, "wrong_user")
    scope = claims.get("scope")
    if required_scope and (not isinstance(scope, str)
                           or required_scope not in scope.split()):
        return False, _error(INSUFFICIENT_SCOPE, required_scope,
                             "wrong_scope")
    return True, None


# -- SASL messages -----------------------------------------------------------------

class SaslError(ValueError):
    """A client message that is not what the mechanism defines."""


def xoauth2_message(username: str, token: str) -> bytes:
    """What an XOAUTH2 client sends (before base64)."""
    return f"user={username}\x01auth=Bearer {token}\x01\x01".encode("utf-8")


def _saslname(text: str) -> str:
    return text.replace("=", "=3D").replace(",", "=2C")


def oauthbearer_message(username: Optional[str], token: str,
                        host: Optional[str] = None,
                        port: Optional[int] = None) -> bytes:
    """What an OAUTHBEARER client sends (RFC 7628 3.1, before base64)."""
    authzid = f"a={_saslname(username)}" if username else ""
    pairs = ""
    if host is not None:
        pairs += f"host={host}\x01"
    if port is not None:
        pairs += f"port={port}\x01"
    return f"n,{authzid},\x01{pairs}auth=Bearer {token}\x01\x01".encode(
        "utf-8")


def _pairs(chunks: list[bytes]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for chunk in chunks:
        name, sep, value = chunk.decode("utf-8").partition("=")
        if not sep or not name.isalpha() or name in fields:
            raise SaslError(f"bad key/value pair {chunk[:40]!r}")
        fields[name] = value
    return fields


def _bearer(fields: Mapping[str, str]) -> str:
    scheme, _sep, token = fields.get("auth", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SaslError("no auth=Bearer token")
    return token.strip()


def _kv_chunks(data: bytes) -> list[bytes]:
    """The pairs of ``pair\\x01pair\\x01\\x01`` (the whole message must end
    in two separators)."""
    if not data.endswith(_KVSEP + _KVSEP):
        raise SaslError("message does not end in \\x01\\x01")
    return data[:-2].split(_KVSEP) if data[:-2] else []


def parse_xoauth2(data: bytes) -> tuple[str, str]:
    """(user, token) of an XOAUTH2 client message, or SaslError."""
    try:
        fields = _pairs(_kv_chunks(data))
    except UnicodeDecodeError:
        raise SaslError("not UTF-8") from None
    user = fields.get("user", "")
    if not user:
        raise SaslError("no user=")
    return user, _bearer(fields)


def parse_oauthbearer(
        data: bytes) -> tuple[Optional[str], str, dict[str, str]]:
    """(authzid or None, token, all key/value pairs) of an OAUTHBEARER
    client message (RFC 7628 3.1), or SaslError."""
    header, sep, rest = data.partition(_KVSEP)
    if not sep:
        raise SaslError("no kvsep after the GS2 header")
    try:
        flag, authzid, tail = header.decode("utf-8").split(",")
        fields = _pairs(_kv_chunks(_KVSEP + rest)[1:])
    except (ValueError, UnicodeDecodeError):
        raise SaslError("malformed GS2 header or pairs") from None
    if flag not in ("n", "y") or tail:
        # "p=...": channel binding, which OAUTHBEARER servers do not offer.
        raise SaslError(f"unsupported GS2 header {header[:40]!r}")
    user = None
    if authzid:
        if not authzid.startswith("a="):
            raise SaslError("bad authzid")
        user = authzid[2:].replace("=2C", ",").replace("=3D", "=")
    return user or None, _bearer(fields), fields


# -- the server side ---------------------------------------------------------------

# ask(text): send a continuation carrying ``text`` (already in its wire form:
# base64, or not, as the caller decides) and return the client's decoded
# answer, or None when the protocol has already replied (the client aborted
# with "*" or sent bad base64).  May raise instead (IMAP's BAD).
Ask = Callable[[str], Awaitable[Optional[bytes]]]


@dataclass
class Outcome:
    """How one OAuth login ended."""

    user: Optional[str] = None       # logged in as
    error: Optional[dict[str, str]] = None  # why not (verify's dict)
    token: Optional[str] = None      # the token the client sent, if any
    answered: bool = False           # the protocol already replied
    unexpected: bool = False         # the answer to the error challenge
    #                                  was not the mechanism's dummy


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True)
class OAuthServer:
    """What a lab mail server needs to accept OAuth logins."""

    mechanisms = MECHANISMS  # what the servers offer (not a field)

    key: bytes
    scope: str = DEFAULT_SCOPE
    # The RFC 7628 "openid-configuration" of OAUTHBEARER errors (the token
    # endpoint's discovery document), when the lab runs one.
    openid_configuration: Optional[str] = None

    def error_challenge(self, mechanism: str,
                        error: Mapping[str, str]) -> bytes:
        """The provider-style JSON error a failed login is challenged with
        (not yet base64): Google's for XOAUTH2, RFC 7628's for OAUTHBEARER."""
        status = error.get("status", INVALID_TOKEN)
        if mechanism == XOAUTH2:
            body: dict[str, str] = {
                "status": XOAUTH2_STATUS.get(status, "401"),
                "schemes": "Bearer", "scope": self.scope}
        else:
            body = {"status": status, "scope": self.scope}
            if self.openid_configuration:
                body["openid-configuration"] = self.openid_configuration
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    def check(self, mechanism: str, data: bytes,
              known: Callable[[str], bool]) -> Outcome:
        """The verdict on one client message; ``known(user)`` says whether
        the lab has that account."""
        try:
            if mechanism == XOAUTH2:
                user, token = parse_xoauth2(data)
            else:
                authzid, token, _fields = parse_oauthbearer(data)
                claims = claims_unverified(token) or {}
                subject = claims.get("sub")
                user = authzid or (subject if isinstance(subject, str)
                                   else None)
        except SaslError:
            return Outcome(error=_error(INVALID_REQUEST, self.scope,
                                        "malformed_request"))
        if user is None:
            return Outcome(token=token, error=_error(
                INVALID_TOKEN, self.scope, "malformed"))
        ok, error = verify(self.key, token, user, self.scope)
        if ok and not known(user):
            ok, error = False, _error(INVALID_TOKEN, self.scope,
                                      "unknown_user")
        return Outcome(user=user if ok else None, error=error, token=token)

    async def authenticate(self, mechanism: str, initial: Optional[bytes],
                           ask: Ask, known: Callable[[str], bool], *,
                           fails: bool = False,
                           challenge: str = CHALLENGE_JSON) -> Outcome:
        """One XOAUTH2 or OAUTHBEARER exchange.

        ``initial`` is the decoded initial response (None: there was none,
        so an empty challenge asks for it).  On failure the client is
        challenged with the JSON error and must answer with the mechanism's
        dummy response before the caller sends the final failure.
        ``fails`` (the auth_535 / authenticate_no faults) rejects even a
        good token; ``challenge`` is Tweaks.oauth_challenge.
        """
        data = initial
        if data is None:
            data = await ask("")
            if data is None:
                return Outcome(answered=True)
        outcome = self.check(mechanism, data, known)
        if outcome.user is not None and fails:
            outcome = Outcome(token=outcome.token, error=_error(
                INVALID_TOKEN, self.scope, "refused"))
        if outcome.user is not None or challenge == CHALLENGE_NONE:
            return outcome
        assert outcome.error is not None
        text = (GARBAGE_CHALLENGE if challenge == CHALLENGE_GARBAGE
                else _b64(self.error_challenge(mechanism, outcome.error)))
        answer = await ask(text)
        if answer is None:
            outcome.answered = True
        elif answer != DUMMY_RESPONSE[mechanism]:
            outcome.unexpected = True
        return outcome


# -- the token endpoint --------------------------------------------------------------

@dataclass(frozen=True)
class Client:
    """A client of the token endpoint: its secret, the user its tokens are
    for, the scopes it may ask for (the first is the default) and, when not
    None, the lifetime of its tokens in seconds instead of the endpoint's
    (negative: issued already expired, for tests of expired tokens)."""

    secret: str
    username: str
    scopes: tuple[str, ...] = (DEFAULT_SCOPE,)
    lifetime: Optional[int] = None


ClientSpec = Union[Client, tuple, Mapping[str, Any]]

# TokenEndpoint quirks: misbehaviour for the oauth2_token module's tests.
QUIRK_NOT_JSON = "not_json"          # 200 with an HTML page
QUIRK_ECHO_SECRET = "echo_secret"    # invalid_client quoting what was sent
QUIRK_TOKEN_TYPE = "token_type_mac"  # 200 with token_type "mac"
QUIRK_NO_EXPIRY = "no_expires_in"    # 200 without expires_in and scope
QUIRKS = frozenset((QUIRK_NOT_JSON, QUIRK_ECHO_SECRET, QUIRK_TOKEN_TYPE,
                    QUIRK_NO_EXPIRY))

MAX_BODY = 64 * 1024
NOT_JSON_PAGE = b"<html><body>Sign in to continue</body></html>\n"


def _client(spec: ClientSpec) -> Client:
    if isinstance(spec, Client):
        return spec
    if isinstance(spec, Mapping):
        lifetime = spec.get("lifetime")
        return Client(str(spec["secret"]), str(spec["username"]),
                      tuple(spec.get("scopes") or (DEFAULT_SCOPE,)),
                      None if lifetime is None else int(lifetime))
    secret, username, *rest = spec
    scopes = rest[0] if rest else (DEFAULT_SCOPE,)
    if isinstance(scopes, str):
        scopes = scopes.split()
    lifetime = rest[1] if len(rest) > 1 else None
    return Client(str(secret), str(username), tuple(scopes),
                  None if lifetime is None else int(lifetime))


class _TokenError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "mailops-lab-oauth/1"
    protocol_version = "HTTP/1.0"
    timeout = 30
    endpoint: "TokenEndpoint"  # set on the per-endpoint subclass

    def setup(self) -> None:
        super().setup()
        if isinstance(self.request, ssl.SSLSocket):
            # Here, in the request's own thread, not in accept().
            self.request.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("token endpoint: " + format, *args)

    def _send(self, status: int, body: bytes, content_type: str,
              headers: Optional[Mapping[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Pragma", "no-cache")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: Mapping[str, Any],
              headers: Optional[Mapping[str, str]] = None) -> None:
        self._send(status, json.dumps(value).encode("utf-8"),
                   "application/json;charset=UTF-8", headers)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == TokenEndpoint.DISCOVERY_PATH:
            self._json(200, self.endpoint.discovery())
        elif path == TokenEndpoint.TOKEN_PATH:
            self._json(405, {"error": INVALID_REQUEST,
                             "error_description": "use POST"},
                       {"Allow": "POST"})
        else:
            self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != TokenEndpoint.TOKEN_PATH:
            self._json(404, {"error": "not_found"})
            return
        try:
            status, body = 200, self.endpoint.grant(self.headers,
                                                    self._body())
        except _TokenError as exc:
            headers = ({"WWW-Authenticate": f'Basic realm="{ISSUER}"'}
                       if exc.status == 401 else None)
            self._json(exc.status, {"error": exc.error,
                                    "error_description": exc.description},
                       headers)
            return
        if QUIRK_NOT_JSON in self.endpoint.quirks:
            self._send(200, NOT_JSON_PAGE, "text/html")
            return
        self._json(status, body)

    def _body(self) -> dict[str, str]:
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype.lower() != "application/x-www-form-urlencoded":
            raise _TokenError(400, INVALID_REQUEST, "the request body must "
                              "be application/x-www-form-urlencoded")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise _TokenError(400, INVALID_REQUEST,
                              "Content-Length missing") from None
        if not 0 <= length <= MAX_BODY:
            raise _TokenError(400, INVALID_REQUEST, "request body too large")
        raw = self.rfile.read(length).decode("utf-8", "replace")
        form: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(raw,
                                                  keep_blank_values=True):
            if name in form:
                # RFC 6749 3.1: no parameter more than once.
                raise _TokenError(400, INVALID_REQUEST,
                                  f"parameter {name} given more than once")
            form[name] = value
        return form


class TokenEndpoint:
    """The client credentials grant (RFC 6749 4.4) on a threaded HTTP
    server bound to ``host`` (default 127.0.0.1), port 0 by default.

    ``clients`` maps a client_id to a Client, a (secret, username[,
    scopes[, lifetime]]) tuple or a {"secret", "username", "scopes",
    "lifetime"} mapping (scopes and lifetime optional).  POST
    ``/token`` with ``grant_type=client_credentials`` (and ``scope``),
    authenticated with HTTP Basic (client_secret_basic: id and secret
    form-urlencoded, RFC 6749 2.3.1) or the form fields client_id and
    client_secret (client_secret_post); GET
    ``/.well-known/openid-configuration`` is the discovery document.
    ``ssl_context`` serves HTTPS instead.  ``quirks`` (QUIRKS) make it
    misbehave for tests.  ``url`` is the token URL.
    """

    TOKEN_PATH = "/token"
    DISCOVERY_PATH = "/.well-known/openid-configuration"

    def __init__(self, key: bytes, clients: Mapping[str, ClientSpec], *,
                 host: str = "127.0.0.1", port: int = 0,
                 lifetime: int = DEFAULT_LIFETIME,
                 ssl_context: Optional[ssl.SSLContext] = None,
                 quirks: Iterable[str] = ()) -> None:
        self.key = key
        self.clients = {cid: _client(spec) for cid, spec in clients.items()}
        self.host = host
        self.port = port
        self.lifetime = lifetime
        self.ssl_context = ssl_context
        self.quirks = frozenset(quirks)
        unknown = self.quirks - QUIRKS
        if unknown:
            raise ValueError(f"unknown token endpoint quirks: "
                             f"{sorted(unknown)}")
        self.issued: list[tuple[str, str]] = []  # (client_id, scope)
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- addresses ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        """Known once started (and still after stop, for messages)."""
        if self.port == 0:
            raise RuntimeError("token endpoint not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The token URL (what oauth2_token's token_url wants)."""
        return self.base_url + self.TOKEN_PATH

    @property
    def openid_configuration(self) -> str:
        return self.base_url + self.DISCOVERY_PATH

    def discovery(self) -> dict[str, Any]:
        scopes = sorted({s for c in self.clients.values() for s in c.scopes})
        return {"issuer": ISSUER, "token_endpoint": self.url,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic", "client_secret_post"],
                "scopes_supported": scopes}

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> "TokenEndpoint":
        if self._server is not None:
            raise RuntimeError("token endpoint already started")
        handler = type("TokenHandler", (_Handler,), {"endpoint": self})
        server_class = type("TokenServer", (http.server.ThreadingHTTPServer,), {
            "address_family": (socket.AF_INET6 if ":" in self.host
                               else socket.AF_INET),
            "daemon_threads": True})
        server = server_class((self.host, self.port), handler)
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(
                server.socket, server_side=True,
                do_handshake_on_connect=False)
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name="lab-token-endpoint",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket.  Idempotent."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(10)

    def __enter__(self) -> "TokenEndpoint":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the grant ----------------------------------------------------------

    def _authenticate(self, headers: Any,
                      form: dict[str, str]) -> tuple[str, Client]:
        authorization = headers.get("Authorization")
        posted = "client_secret" in form
        if authorization and posted:
            raise _TokenError(400, INVALID_REQUEST, "more than one client "
                              "authentication method")
        if authorization:
            scheme, _sep, value = authorization.partition(" ")
            try:
                if scheme.lower() != "basic":
                    raise ValueError(scheme)
                decoded = base64.b64decode(value.strip(),
                                           validate=True).decode("utf-8")
                raw_id, sep, raw_secret = decoded.partition(":")
                if not sep:
                    raise ValueError("no colon")
            except (ValueError, UnicodeDecodeError):
                raise _TokenError(401, "invalid_client", "malformed HTTP "
                                  "Basic client authentication") from None
            client_id = urllib.parse.unquote_plus(raw_id)
            secret = urllib.parse.unquote_plus(raw_secret)
            if form.get("client_id") not in (None, client_id):
                raise _TokenError(400, INVALID_REQUEST, "client_id differs "
                                  "from the authenticated client")
        elif posted:
            client_id, secret = form.get("client_id", ""), form["client_secret"]
        else:
            raise _TokenError(401, "invalid_client",
                              "client authentication required")
        client = self.clients.get(client_id)
        if client is None or not hmac.compare_digest(
                client.secret.encode("utf-8"), secret.encode("utf-8")):
            description = "client authentication failed"
            if QUIRK_ECHO_SECRET in self.quirks:
                description += (f": client {client_id} with secret {secret}"
                                f" ({authorization or 'posted'})")
            raise _TokenError(401, "invalid_client", description)
        return client_id, client

    def grant(self, headers: Any, form: dict[str, str]) -> dict[str, Any]:
        """The token response for one request, or _TokenError."""
        client_id, client = self._authenticate(headers, form)
        grant_type = form.get("grant_type")
        if not grant_type:
            raise _TokenError(400, INVALID_REQUEST, "grant_type missing")
        if grant_type != "client_credentials":
            raise _TokenError(400, "unsupported_grant_type",
                              f"grant_type {grant_type} is not supported")
        requested = form.get("scope", "").split()
        wanted = requested or [client.scopes[0]]
        refused = [s for s in wanted if s not in client.scopes]
        if refused:
            raise _TokenError(400, "invalid_scope", "scope not allowed for "
                              f"this client: {' '.join(refused)}")
        scope = scope_text(wanted)
        self.issued.append((client_id, scope))
        lifetime = (self.lifetime if client.lifetime is None
                    else client.lifetime)
        token = issue(self.key, client.username, scope, lifetime)
        body: dict[str, Any] = {
            "access_token": token,
            "token_type": ("mac" if QUIRK_TOKEN_TYPE in self.quirks
                           else "Bearer"),
            # An already expired token (a client with a negative lifetime)
            # is said to expire in 0 seconds: expires_in is never negative.
            "expires_in": max(0, lifetime), "scope": scope}
        if QUIRK_NO_EXPIRY in self.quirks:
            del body["expires_in"], body["scope"]
        return body


# -- command line --------------------------------------------------------------------

def _load_clients(path: Path) -> dict[str, Client]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("the clients file is a JSON object "
                         "{client_id: {secret, username, scopes}}")
    return {str(cid): _client(spec) for cid, spec in data.items()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.embedded.oauth",
        description="The lab's OAuth 2.0 token issuer.")
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-key", help="write a fresh HS256 key "
                               "(base64, as Dovecot reads it)")
    make.add_argument("--key-file", type=Path, required=True)
    mint = commands.add_parser("issue", help="print a token")
    mint.add_argument("--key-file", type=Path, required=True)
    mint.add_argument("--user", required=True)
    mint.add_argument("--scope", default=DEFAULT_SCOPE)
    mint.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME)
    serve = commands.add_parser("serve", help="run the token endpoint until "
                                "SIGTERM/SIGINT; prints the token URL")
    serve.add_argument("--key-file", type=Path, required=True)
    serve.add_argument("--clients-file", type=Path, required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--lifetime", type=int, default=DEFAULT_LIFETIME)
    serve.add_argument("--tls-cert", type=Path, help="serve HTTPS with this "
                       "PEM certificate (chain)")
    serve.add_argument("--tls-key", type=Path, help="its PEM private key")
    args = parser.parse_args(argv)

    if args.command == "make-key":
        save_key(args.key_file, make_key())
        return 0
    try:
        key = load_key(args.key_file)
        clients = (_load_clients(args.clients_file)
                   if args.command == "serve" else {})
        context = None
        if args.command == "serve" and (args.tls_cert or args.tls_key):
            if not (args.tls_cert and args.tls_key):
                raise ValueError("--tls-cert and --tls-key go together")
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(args.tls_cert, args.tls_key)
    except (OSError, ValueError, KeyError, TypeError, ssl.SSLError) as exc:
        parser.error(str(exc))
    if args.command == "issue":
        print(issue(key, args.user, args.scope, args.lifetime))
        return 0

    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with TokenEndpoint(key, clients, host=args.host, port=args.port,
                       lifetime=args.lifetime,
                       ssl_context=context) as endpoint:
        print(endpoint.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
