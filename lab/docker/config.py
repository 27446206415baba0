"""What the Docker lab is: ports, domain, accounts count, and where its state lives.

Every value has a default and an environment override; the CLI adds flags on top.
The same ``LAB_*`` variable names are read by ``lab/compose.yaml`` and by the
containers' entrypoints, so a port moved with ``LAB_PORT_SMTP=2025`` moves the
same way whichever front end starts the lab.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import socket
from pathlib import Path
from typing import Mapping, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_DIR = REPO_ROOT / "lab"
IMAGES_DIR = Path(__file__).resolve().parent / "images"

# One image per container, built from lab/docker/images/<name>/.  Start order: LMTP and SASL
# first, then the outside provider (its resolver answers the lab MTA's lookups), then the MTA.
CONTAINERS = ("mailbox", "outside", "mta")
IMAGE_CONTENTS = {  # what `up` says while it builds an image
    "mailbox": "Dovecot: POP3, IMAP, LMTP, Sieve, OAuth 2.0; the token endpoint",
    "outside": "the outside provider's Postfix, unbound",
    "mta": "Postfix, OpenDKIM, OpenDMARC, policyd-spf",
}

# How a client meets TLS on a port.
TLS_STARTTLS = "starttls"  # plaintext, STARTTLS/STLS offered
TLS_REQUIRED = "required"  # plaintext, STARTTLS required before MAIL
TLS_IMPLICIT = "implicit"  # TLS from the first byte
TLS_NONE = "none"          # plaintext, no upgrade offered
TLS_BADCERT = "badcert"    # implicit TLS, certificate not from the lab CA
TLS_KINDS = (TLS_STARTTLS, TLS_REQUIRED, TLS_IMPLICIT, TLS_NONE, TLS_BADCERT)


@dataclasses.dataclass(frozen=True)
class Port:
    name: str      # LAB_PORT_<NAME>, --port name=N, describe's ports/port_kinds keys
    default: int
    owner: str     # the container serving it (status, the readiness wait, the busy-port check)
    protocol: str  # what greets on it: smtp, pop3, imap, lmtp, dovecot-auth, https
    tls: str       # one of TLS_KINDS
    address: str = "lab"  # where it listens: "lab" (LAB_LISTEN: 127.0.0.1 [+ ::1]) or
    #                       "outside" (LAB_OUTSIDE_ADDRESS only: the outside provider's MX)


# The lab's ports, in the order describe lists them.  Names of the main services (smtp,
# submission, smtps, pop3, pop3s) are read by other code (playbooks, bench, tests): keep them.
# lab/compose.yaml and the README repeat the names and defaults (a test compares them).
PORTS: dict[str, Port] = {p.name: p for p in (
    Port("smtp", 25, "mta", "smtp", TLS_STARTTLS),                 # STARTTLS offered, not required
    Port("submission", 587, "mta", "smtp", TLS_REQUIRED),          # STARTTLS and AUTH required
    Port("smtps", 465, "mta", "smtp", TLS_IMPLICIT),               # AUTH required
    Port("smtp_nostarttls", 2525, "mta", "smtp", TLS_NONE),        # negative case
    Port("smtp_badcert", 4465, "mta", "smtp", TLS_BADCERT),        # rogue-CA certificate
    Port("smtp_openrelay", 2526, "mta", "smtp", TLS_NONE),         # relays for loopback (negative case)
    Port("pop3", 110, "mailbox", "pop3", TLS_STARTTLS),            # STLS offered, APOP
    Port("pop3s", 995, "mailbox", "pop3", TLS_IMPLICIT),
    Port("pop3_nostls", 1110, "mailbox", "pop3", TLS_NONE),        # second Dovecot instance
    Port("pop3_badcert", 1995, "mailbox", "pop3", TLS_BADCERT),    # third Dovecot instance
    Port("imap", 143, "mailbox", "imap", TLS_STARTTLS),
    Port("imaps", 993, "mailbox", "imap", TLS_IMPLICIT),
    Port("imap_nostarttls", 1143, "mailbox", "imap", TLS_NONE),    # second Dovecot instance
    Port("imap_badcert", 1993, "mailbox", "imap", TLS_BADCERT),    # third Dovecot instance
    Port("lmtp", 24, "mailbox", "lmtp", TLS_NONE),                 # Postfix delivers here
    Port("sasl", 12345, "mailbox", "dovecot-auth", TLS_NONE),      # Postfix's SMTP AUTH asks here
    Port("oauth", 9443, "mailbox", "https", TLS_IMPLICIT),         # OAuth 2.0 token endpoint
    Port("outside_smtp", 25, "outside", "smtp", TLS_STARTTLS, "outside"),  # the outside provider's MX
)}
DEFAULT_PORTS: dict[str, int] = {name: p.default for name, p in PORTS.items()}

DEFAULT_DOMAIN = "lab.test"
DEFAULT_HOST = "127.0.0.1"
# The outside provider (a second Postfix, container "outside") and the lab's DNS resolver
# (unbound in that container).  The resolver's port is 53 and not movable: /etc/resolv.conf,
# which Postfix, OpenDKIM and policyd-spf read, names an address only.
DEFAULT_OUTSIDE_ADDRESS = "127.0.0.2"
DEFAULT_RESOLVER = "127.0.0.53"
RESOLVER_PORT = 53
OUTSIDE_DOMAIN = "outside.test"   # <user>@outside.test is forwarded back to <user>@<domain>
BOUNCE_DOMAIN = "bounce.test"     # accepted by the outside MTA, then bounced (5.1.1)
BADDKIM_DOMAIN = "baddkim.test"   # the lab MTA signs it with a key DNS does not publish
DKIM_SELECTOR = "lab"             # <selector>._domainkey.<domain> for the lab domain and baddkim
DEFAULT_RT_ACCOUNTS = 20
EXTRA_ACCOUNTS = ("shared", "alice", "bob")
BASE_IMAGE = "debian:bookworm-slim"
LABEL = "io.mailops.lab"

# OAuth 2.0 (XOAUTH2, OAUTHBEARER): Dovecot validates the lab's HS256 tokens locally, the token
# endpoint (lab/embedded/oauth.py, in the mailbox container) issues them.  Which ports offer
# the mechanisms: every port with SASL (Postfix asks Dovecot's auth listener), not the
# open relay (no AUTH there); SMTP ports offer AUTH only after STARTTLS, except 2525.
OAUTH_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
OAUTH_PORTS = ("smtp", "submission", "smtps", "smtp_nostarttls", "smtp_badcert",
               "pop3", "pop3s", "pop3_nostls", "pop3_badcert",
               "imap", "imaps", "imap_nostarttls", "imap_badcert")
# The token endpoint's clients beyond one per account (client_id = the account name):
# tokens for the failure account that Dovecot refuses.  {client_id: (purpose, scopes, lifetime)}
OAUTH_FAILURE_CLIENTS = {
    "expired": ("expired", ("mail",), -60),           # issued a minute past their end
    "wrong_scope": ("wrong_scope", ("calendar",), None),  # may not ask for "mail"
}


def port_env_name(name: str) -> str:
    return "LAB_PORT_" + name.upper()


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a number") from None


def ipv6_loopback_available() -> bool:
    """True when ::1 exists here (the containers share this network namespace)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def state_dir(env: Optional[Mapping[str, str]] = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("LAB_STATE_DIR") or (LAB_DIR / ".state")).resolve()


@dataclasses.dataclass
class LabConfig:
    ports: dict[str, int]
    domain: str = DEFAULT_DOMAIN
    host: str = DEFAULT_HOST
    rt_accounts: int = DEFAULT_RT_ACCOUNTS
    listen: tuple[str, ...] = ("127.0.0.1",)
    state: Path = dataclasses.field(default_factory=state_dir)
    outside_address: str = DEFAULT_OUTSIDE_ADDRESS
    resolver: str = DEFAULT_RESOLVER

    # -- construction --------------------------------------------------------

    @classmethod
    def from_env(cls, env: Optional[Mapping[str, str]] = None,
                 overrides: Optional[Mapping[str, int]] = None,
                 offset: Optional[int] = None) -> "LabConfig":
        """Defaults, then LAB_PORT_OFFSET / LAB_PORT_<NAME> / LAB_DOMAIN / LAB_RT_ACCOUNTS /
        LAB_LISTEN_IPV6 / LAB_OUTSIDE_ADDRESS / LAB_RESOLVER from ``env``, then ``overrides``."""
        env = os.environ if env is None else env
        if offset is None:
            offset = _env_int(env, "LAB_PORT_OFFSET", 0)
        ports = {name: port + offset for name, port in DEFAULT_PORTS.items()}
        for name in ports:
            ports[name] = _env_int(env, port_env_name(name), ports[name])
        for name, port in (overrides or {}).items():
            if name not in ports:
                raise ValueError(f"unknown port name {name!r}; known: {', '.join(ports)}")
            ports[name] = int(port)
        v6 = env.get("LAB_LISTEN_IPV6", "auto").strip().lower()
        if v6 in ("", "auto"):
            use_v6 = ipv6_loopback_available()
        else:
            use_v6 = v6 in ("1", "yes", "true", "on")
        cfg = cls(
            ports=ports,
            domain=env.get("LAB_DOMAIN", DEFAULT_DOMAIN).strip() or DEFAULT_DOMAIN,
            rt_accounts=_env_int(env, "LAB_RT_ACCOUNTS", DEFAULT_RT_ACCOUNTS),
            listen=("127.0.0.1", "::1") if use_v6 else ("127.0.0.1",),
            state=state_dir(env),
            outside_address=env.get("LAB_OUTSIDE_ADDRESS", "").strip() or DEFAULT_OUTSIDE_ADDRESS,
            resolver=env.get("LAB_RESOLVER", "").strip() or DEFAULT_RESOLVER,
        )
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for var, addr in (("LAB_OUTSIDE_ADDRESS", self.outside_address), ("LAB_RESOLVER", self.resolver)):
            try:
                ip = ipaddress.IPv4Address(addr)
            except ValueError:
                raise ValueError(f"{var}={addr!r} is not an IPv4 address") from None
            if not ip.is_loopback or addr == self.host:
                raise ValueError(f"{var}={addr!r} must be a loopback address other than {self.host}")
        # A port number may repeat on different addresses (smtp and outside_smtp are both 25).
        seen: dict[tuple[str, int], str] = {(self.resolver, RESOLVER_PORT): "the resolver"}
        for name, port in self.ports.items():
            if not 1 <= port <= 65535:
                raise ValueError(f"port {name}={port} is out of range")
            key = (self.port_host(name), port)
            if key in seen:
                raise ValueError(f"ports {seen[key]} and {name} are both {port}")
            seen[key] = name
        if not 0 <= self.rt_accounts <= 999:
            raise ValueError("LAB_RT_ACCOUNTS must be between 0 and 999")
        if not self.domain.replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"LAB_DOMAIN={self.domain!r} is not a plain domain name")

    # -- derived -------------------------------------------------------------

    def port_host(self, name: str) -> str:
        """The address a port is reached on (the outside provider has its own)."""
        return self.outside_address if PORTS[name].address == "outside" else self.host

    @property
    def authserv_id(self) -> str:
        """The authserv-id of the lab MTA's Authentication-Results header fields."""
        return f"mail.{self.domain}"

    @property
    def runtime_dir(self) -> Path:
        """Mounted read-only at /lab in both containers: certs/ and users."""
        return self.state / "runtime"

    @property
    def ca_path(self) -> Path:
        return self.runtime_dir / "certs" / "ca.pem"

    @property
    def users_path(self) -> Path:
        return self.runtime_dir / "users"

    @property
    def oauth_dir(self) -> Path:
        """The OAuth key, the token endpoint's clients and its code (oauth.py)."""
        return self.runtime_dir / "oauth"

    @property
    def oauth_key_path(self) -> Path:
        """The HS256 key, base64, where Dovecot's fs dict finds it: <azp>/<alg>/<kid>."""
        return self.oauth_dir / "keys" / "default" / "HS256" / "default"

    @property
    def oauth_clients_path(self) -> Path:
        return self.oauth_dir / "clients.json"

    def oauth_failure_account(self) -> str:
        """The account the failure clients' tokens name: the last rtNN but one (rt19)."""
        rt = [u for u in self.usernames() if u.startswith("rt")]
        return rt[-2] if len(rt) >= 2 else self.usernames()[0]

    @property
    def oauth_base_url(self) -> str:
        return f"https://{self.host}:{self.ports['oauth']}"

    def usernames(self) -> list[str]:
        width = max(2, len(str(self.rt_accounts)))
        return [f"rt{i:0{width}d}" for i in range(1, self.rt_accounts + 1)] + list(EXTRA_ACCOUNTS)

    def container_env(self) -> dict[str, str]:
        """What the entrypoints read (the same names compose.yaml passes)."""
        env = {port_env_name(name): str(port) for name, port in self.ports.items()}
        env["LAB_DOMAIN"] = self.domain
        env["LAB_LISTEN"] = " ".join(self.listen)
        env["LAB_OUTSIDE_ADDRESS"] = self.outside_address
        env["LAB_RESOLVER"] = self.resolver
        return env

    def to_json(self) -> dict:
        return {"ports": dict(self.ports), "domain": self.domain, "host": self.host,
                "rt_accounts": self.rt_accounts, "listen": list(self.listen),
                "outside_address": self.outside_address, "resolver": self.resolver}

    @classmethod
    def from_json(cls, data: Mapping, state: Path) -> "LabConfig":
        # A state written before a port existed gets that port's default.
        ports = {k: data["ports"].get(k, default) for k, default in DEFAULT_PORTS.items()}
        return cls(ports=ports, domain=data["domain"], host=data["host"],
                   rt_accounts=int(data["rt_accounts"]), listen=tuple(data["listen"]),
                   state=state,
                   outside_address=data.get("outside_address", DEFAULT_OUTSIDE_ADDRESS),
                   resolver=data.get("resolver", DEFAULT_RESOLVER))

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()[:16]
