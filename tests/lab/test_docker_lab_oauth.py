"""OAuth 2.0 logins against the running lab (stdlib smtplib/poplib/imaplib raw commands, urllib):
XOAUTH2 and OAUTHBEARER on SMTP (587 STARTTLS, 465), POP3 (995, 110 + STLS) and IMAP (993,
143 + STARTTLS), with valid tokens (from the lab's token endpoint by the client credentials
grant, and minted with the lab key) and refused ones (expired, wrong scope, wrong user, bad
signature, malformed, wrong issuer, wrong audience); what each server answers (Dovecot's JSON
error challenge, relayed by Postfix as 334; the final refusal), the reasons Dovecot logs, long
tokens through Postfix, which ports offer the mechanisms, and the token endpoint itself.

Every login is as the lab's OAuth failure account (describe's oauth.failure_account, rt19)."""

from __future__ import annotations

import base64
import imaplib
import json
import poplib
import smtplib
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Optional

import pytest

from docker_lab_helpers import eventually
from lab.embedded import oauth as lab_oauth

MECHANISMS = ("XOAUTH2", "OAUTHBEARER")
# The ports the login matrix runs on: (port name, protocol, how TLS starts).
LOGIN_PORTS = [("submission", "smtp", "starttls"), ("smtps", "smtp", "implicit"),
               ("pop3s", "pop3", "implicit"), ("pop3", "pop3", "starttls"),
               ("imaps", "imap", "implicit"), ("imap", "imap", "starttls")]
LOGIN_PORT_IDS = [name for name, _proto, _tls in LOGIN_PORTS]
FAILURES = ("expired", "wrong_scope", "wrong_user", "bad_signature", "malformed", "wrong_issuer",
            "wrong_audience")
# What Dovecot's auth process logs for each (auth_verbose): "oauth2(rt19,...): oauth2 failed:
# Local validation failed: <reason>".  wrong_scope: Debian's 2.3.19.1 (+deb12u7) / upstream 2.3.19.
REASONS = {
    "expired": ("Token has expired",),
    "wrong_scope": ("configured scope 'mail' missing from token scope 'calendar'",
                    "Token is not valid for scope 'mail'"),
    "wrong_user": ("Username '{user}' did not match '{other}'",),
    "bad_signature": ("Incorrect JWT signature",),
    "malformed": ("Not a JWT token",),
    "wrong_issuer": ("Issuer 'issuer.invalid' is not allowed",),
    "wrong_audience": ("Token audience does not include 'mail'",),
}
# The final refusal after the client answers the error challenge.
FINAL_REFUSAL = {"smtp": "535 5.7.8 Error: authentication failed: (reason unavailable)",
                 "pop3": "-ERR [AUTH] Authentication failed.",
                 "imap": "NO [AUTHENTICATIONFAILED] Authentication failed."}
# What a client answers an error challenge with: nothing for XOAUTH2, %x01 for OAUTHBEARER
# (RFC 7628 3.2.3); Dovecot fails the exchange on any answer.
DUMMY = {"XOAUTH2": b"", "OAUTHBEARER": b"\x01"}


# -- fixtures -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def info(docker_lab):
    return docker_lab["oauth"]


@pytest.fixture(scope="module")
def key(info):
    return lab_oauth.load_key(info["key_path"])


@pytest.fixture(scope="module")
def user(info):
    return info["failure_account"]


@pytest.fixture(scope="module")
def clients(info):
    return {c["client_id"]: c for c in info["clients"]}


@pytest.fixture(scope="module")
def tls_ctx(docker_lab):
    return ssl.create_default_context(cafile=docker_lab["ca_path"])


@pytest.fixture(scope="module")
def audience_checked(mailbox):
    """Whether this Dovecot checks aud (Debian's backported "audience" setting; see the entrypoint)."""
    out = mailbox.run("grep -c '^audience = mail$' /etc/dovecot/lab/oauth2.conf.ext")
    return out.stdout.strip() == "1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def jwt(key: bytes, **claims) -> str:
    """A lab token with some claims replaced (None: left out)."""
    now = int(time.time())
    body = {"iss": lab_oauth.ISSUER, "sub": "nobody", "aud": lab_oauth.AUDIENCE, "scope": "mail",
            "iat": now, "nbf": now, "exp": now + 600}
    body.update(claims)
    body = {k: v for k, v in body.items() if v is not None}
    header = {"alg": "HS256", "typ": "JWT", "kid": lab_oauth.KID}
    signing_input = f"{lab_oauth._json_segment(header)}.{lab_oauth._json_segment(body)}"
    return f"{signing_input}.{lab_oauth._sign(key, signing_input)}"


def token_request(info, ctx, client_id: str, secret: str, form: Optional[dict] = None):
    """POST the client credentials grant with HTTP Basic client auth: (status, JSON body, headers)."""
    data = urllib.parse.urlencode(form or {"grant_type": "client_credentials"}).encode()
    request = urllib.request.Request(info["token_url"], data=data, method="POST")
    basic = _b64(f"{urllib.parse.quote_plus(client_id)}:{urllib.parse.quote_plus(secret)}".encode())
    request.add_header("Authorization", "Basic " + basic)
    request.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(request, context=ctx, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read()), exc.headers


def endpoint_token(info, ctx, clients, client_id: str) -> str:
    status, body, _headers = token_request(info, ctx, client_id, clients[client_id]["client_secret"])
    assert status == 200, body
    return body["access_token"]


def other_account(accounts, user: str) -> str:
    return sorted(name for name in accounts if name.startswith("rt") and name != user)[-1]


def make_token(kind: str, info, ctx, clients, key, user, accounts) -> str:
    if kind == "endpoint":
        return endpoint_token(info, ctx, clients, user)
    if kind == "minted":
        return lab_oauth.issue(key, user)
    if kind in ("expired", "wrong_scope"):  # the endpoint's failure clients, for ``user``
        client = next(c for c in info["clients"] if c["purpose"] == kind)
        assert client["username"] == user
        return endpoint_token(info, ctx, clients, client["client_id"])
    if kind == "wrong_user":
        return lab_oauth.issue(key, other_account(accounts, user))
    if kind == "bad_signature":
        return lab_oauth.issue(lab_oauth.make_key(), user)
    if kind == "malformed":
        return "not-a-jwt"
    if kind == "wrong_issuer":
        return jwt(key, sub=user, iss="issuer.invalid")
    if kind == "wrong_audience":
        return jwt(key, sub=user, aud="calendar")
    raise ValueError(kind)


def sasl_message(mechanism: str, user: str, token: str) -> bytes:
    if mechanism == "XOAUTH2":
        return lab_oauth.xoauth2_message(user, token)
    return lab_oauth.oauthbearer_message(user, token)


# -- one login, raw, per protocol -------------------------------------------------------------

@dataclass
class Login:
    ok: bool
    first: str                            # the server's first reply to AUTH/AUTHENTICATE
    challenge: Optional[dict] = None      # the decoded JSON error challenge, if one came
    final: Optional[str] = None           # the reply to the client's answer to it
    after: list = field(default_factory=list)  # what the test did after a good login


def _challenge(text: str) -> dict:
    return json.loads(base64.b64decode(text, validate=True))


def smtp_login(docker_lab, ctx, port_name, tls, mechanism, raw: bytes, initial=True) -> Login:
    host, port = docker_lab["host"], docker_lab["ports"][port_name]
    s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=15) if tls == "implicit" \
        else smtplib.SMTP(host, port, timeout=15)
    with s:
        if tls == "starttls":
            s.starttls(context=ctx)
        s.ehlo("oauth.client.test")
        if initial:
            code, reply = s.docmd("AUTH", f"{mechanism} {_b64(raw)}")
        else:
            code, reply = s.docmd("AUTH", mechanism)
            assert (code, reply) == (334, b""), (code, reply)
            code, reply = s.docmd(_b64(raw))
        first = f"{code} {reply.decode()}"
        if code == 235:
            login = Login(True, first)
            # The login name is the account: it may send as its own address (587/465 check it).
            login.after.append(s.mail(f"{docker_lab['oauth']['failure_account']}@{docker_lab['domain']}"))
            s.rset()
            return login
        if code != 334:
            return Login(False, first)
        challenge = _challenge(reply.decode())
        code, reply = s.docmd(_b64(DUMMY[mechanism]))
        return Login(False, first, challenge, f"{code} {reply.decode()}")


def pop3_login(docker_lab, ctx, port_name, tls, mechanism, raw: bytes) -> Login:
    host, port = docker_lab["host"], docker_lab["ports"][port_name]
    p = poplib.POP3_SSL(host, port, context=ctx, timeout=15) if tls == "implicit" \
        else poplib.POP3(host, port, timeout=15)
    try:
        if tls == "starttls":
            p.stls(context=ctx)
        p._putcmd(f"AUTH {mechanism} {_b64(raw)}")
        first = p._getline()[0].decode()
        if first.startswith("+OK"):
            login = Login(True, first)
            login.after.append(p.stat())
            return login
        if not first.startswith("+ "):
            return Login(False, first)
        challenge = _challenge(first[2:])
        p._putcmd(_b64(DUMMY[mechanism]))
        return Login(False, first, challenge, p._getline()[0].decode())
    finally:
        p.close()


def imap_login(docker_lab, ctx, port_name, tls, mechanism, raw: bytes) -> Login:
    host, port = docker_lab["host"], docker_lab["ports"][port_name]
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=15) if tls == "implicit" \
        else imaplib.IMAP4(host, port, timeout=15)
    try:
        if tls == "starttls":
            m.starttls(ssl_context=ctx)
        tag = m._new_tag().decode()
        m.send(f"{tag} AUTHENTICATE {mechanism} {_b64(raw)}\r\n".encode())  # SASL-IR
        first = m.readline().decode().rstrip("\r\n")
        while first.startswith("* "):  # after a login: * CAPABILITY ...
            first = m.readline().decode().rstrip("\r\n")
        if first.startswith(f"{tag} OK"):
            login = Login(True, first.split(" ", 1)[1])
            m.state = "AUTH"
            login.after.append(m.select("INBOX", readonly=True)[0])
            return login
        if not first.startswith("+ "):
            return Login(False, first.split(" ", 1)[1] if first.startswith(tag) else first)
        challenge = _challenge(first[2:])
        m.send(_b64(DUMMY[mechanism]).encode() + b"\r\n")
        final = m.readline().decode().rstrip("\r\n")
        assert final.startswith(tag + " "), final
        return Login(False, first, challenge, final.split(" ", 1)[1])
    finally:
        try:
            m.shutdown()
        except OSError:
            pass


LOGIN = {"smtp": smtp_login, "pop3": pop3_login, "imap": imap_login}


def expected_challenge(info, mechanism: str) -> dict:
    """Dovecot 2.3's fixed error challenges (mech-oauth2.c), with the lab's
    openid_configuration_url appended to both."""
    if mechanism == "XOAUTH2":
        body = {"status": "401", "schemes": "bearer", "scope": "mail"}
    else:
        body = {"status": "invalid_token"}
    body["openid-configuration"] = info["openid_configuration"]
    return body


# -- the login matrix -------------------------------------------------------------------------

@pytest.mark.parametrize("source", ["endpoint", "minted"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("port_name,protocol,tls", LOGIN_PORTS, ids=LOGIN_PORT_IDS)
def test_valid_token_logs_in(docker_lab, info, tls_ctx, clients, key, user, accounts,
                             port_name, protocol, tls, mechanism, source):
    token = make_token(source, info, tls_ctx, clients, key, user, accounts)
    login = LOGIN[protocol](docker_lab, tls_ctx, port_name, tls, mechanism,
                            sasl_message(mechanism, user, token))
    assert login.ok, login
    expected = {"smtp": "235 2.7.0 Authentication successful", "pop3": "+OK Logged in.",
                "imap": "OK"}[protocol]
    assert login.first.startswith(expected), login.first
    if protocol == "smtp":
        assert login.after[0][0] == 250, login.after  # MAIL FROM its own address
    elif protocol == "pop3":
        assert isinstance(login.after[0], tuple)
    else:
        assert login.after == ["OK"]


@pytest.mark.parametrize("kind", FAILURES)
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("port_name,protocol,tls", LOGIN_PORTS, ids=LOGIN_PORT_IDS)
def test_bad_token_is_refused_with_the_json_challenge(docker_lab, info, tls_ctx, clients, key, user,
                                                      accounts, audience_checked,
                                                      port_name, protocol, tls, mechanism, kind):
    if kind == "wrong_audience" and not audience_checked:
        pytest.skip("this Dovecot does not check aud (no audience setting)")
    token = make_token(kind, info, tls_ctx, clients, key, user, accounts)
    login = LOGIN[protocol](docker_lab, tls_ctx, port_name, tls, mechanism,
                            sasl_message(mechanism, user, token))
    assert not login.ok, login
    # Dovecot challenges with its JSON error (Postfix relays it as 334), the client answers
    # with the mechanism's dummy, then the refusal.
    prefix = {"smtp": "334 ", "pop3": "+ ", "imap": "+ "}[protocol]
    assert login.first.startswith(prefix), login.first
    assert login.challenge == expected_challenge(info, mechanism)
    assert login.final == FINAL_REFUSAL[protocol]


def _log_count(docker_lab, text: str) -> int:
    import docker
    client = docker.DockerClient(base_url=docker_lab["docker_host"], version="auto")
    try:
        logs = client.containers.get(docker_lab["containers"]["mailbox"]).logs(tail=2000)
    finally:
        client.close()
    return logs.decode(errors="replace").count(text)


@pytest.mark.parametrize("kind", FAILURES)
def test_dovecot_logs_why(docker_lab, info, tls_ctx, clients, key, user, accounts, audience_checked,
                          kind):
    """auth_verbose: the reason of each refusal, in the mailbox container's log."""
    if kind == "wrong_audience" and not audience_checked:
        pytest.skip("this Dovecot does not check aud (no audience setting)")
    other = other_account(accounts, user)
    reasons = [r.format(user=user, other=other) for r in REASONS[kind]]
    before = {r: _log_count(docker_lab, r) for r in reasons}
    token = make_token(kind, info, tls_ctx, clients, key, user, accounts)
    login = imap_login(docker_lab, tls_ctx, "imaps", "implicit", "XOAUTH2",
                       sasl_message("XOAUTH2", user, token))
    assert not login.ok
    eventually(lambda: any(_log_count(docker_lab, r) > before[r] for r in reasons), timeout=10)


# -- refusals without a challenge ------------------------------------------------------------------

SASL_ERRORS = {
    # OAUTHBEARER without an authzid (n,,): Dovecot 2.3 needs a= ("Missing username or token").
    "oauthbearer_without_authzid": ("OAUTHBEARER", lambda token, user: lab_oauth.oauthbearer_message(None, token)),
    # XOAUTH2 without auth= ("Username or token missing").
    "xoauth2_without_token": ("XOAUTH2", lambda token, user: f"user={user}\x01\x01".encode()),
    # Not the mechanism's format at all ("Invalid gs2-header in request").
    "oauthbearer_garbage": ("OAUTHBEARER", lambda token, user: b"hello"),
}


@pytest.mark.parametrize("case", sorted(SASL_ERRORS))
@pytest.mark.parametrize("port_name,protocol,tls", [p for p in LOGIN_PORTS if p[2] == "implicit"],
                         ids=[p[0] for p in LOGIN_PORTS if p[2] == "implicit"])
def test_malformed_sasl_message_is_refused_at_once(docker_lab, tls_ctx, key, user, port_name, protocol,
                                                   tls, case):
    mechanism, build = SASL_ERRORS[case]
    login = LOGIN[protocol](docker_lab, tls_ctx, port_name, tls, mechanism,
                            build(lab_oauth.issue(key, user), user))
    assert not login.ok and login.challenge is None, login
    assert login.first == FINAL_REFUSAL[protocol], login.first


def test_not_base64_is_refused(docker_lab, tls_ctx):
    host, ports = docker_lab["host"], docker_lab["ports"]
    with smtplib.SMTP_SSL(host, ports["smtps"], context=tls_ctx, timeout=15) as s:
        s.ehlo("oauth.client.test")
        code, reply = s.docmd("AUTH", "XOAUTH2 !!!not-base64")
        assert (code, reply) == (535, b"5.7.8 Error: authentication failed: "
                                      b"Invalid base64 data in initial response")
    p = poplib.POP3_SSL(host, ports["pop3s"], context=tls_ctx, timeout=15)
    try:
        with pytest.raises(poplib.error_proto) as err:
            p._shortcmd("AUTH XOAUTH2 !!!not-base64")
        assert err.value.args[0] == b"-ERR [AUTH] Invalid base64 data in initial response"
    finally:
        p.close()
    m = imaplib.IMAP4_SSL(host, ports["imaps"], ssl_context=tls_ctx, timeout=15)
    try:
        m.send(b"x1 AUTHENTICATE XOAUTH2 !!!not-base64\r\n")
        assert m.readline() == b"x1 BAD Invalid base64 data in initial response\r\n"
    finally:
        m.shutdown()


def test_password_and_token_mechanisms_do_not_mix(docker_lab, tls_ctx, accounts, key, user):
    """The passwd-file passdb serves PLAIN/LOGIN/CRAM-MD5/APOP, the oauth2 passdb XOAUTH2 and
    OAUTHBEARER: a token is no password, a password is no token."""
    token = lab_oauth.issue(key, user)
    with smtplib.SMTP_SSL(docker_lab["host"], docker_lab["ports"]["smtps"], context=tls_ctx, timeout=15) as s:
        s.ehlo("oauth.client.test")
        code, _reply = s.docmd("AUTH", "PLAIN " + _b64(f"\0{user}\0{token}".encode()))
        assert code == 535
        code, _reply = s.docmd("AUTH", "PLAIN " + _b64(f"\0{user}\0{accounts[user]['password']}".encode()))
        assert code == 235
    login = imap_login(docker_lab, tls_ctx, "imaps", "implicit", "XOAUTH2",
                       sasl_message("XOAUTH2", user, accounts[user]["password"]))
    assert not login.ok and login.challenge is not None


# -- long tokens -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_token(key, user):
    """A 3 KB token: many scopes, as some providers issue them (4.3 KB as an XOAUTH2 response)."""
    scopes = ["mail"] + [f"https://scopes.lab.test/api/resource{i}.readwrite" for i in range(45)]
    token = lab_oauth.issue(key, user, scope=scopes)
    assert 3000 < len(token) < 3500
    return token


@pytest.mark.parametrize("initial", [True, False], ids=["initial-response", "after-334"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
@pytest.mark.parametrize("port_name,tls", [("submission", "starttls"), ("smtps", "implicit")])
def test_long_token_through_postfix(docker_lab, tls_ctx, user, long_token, port_name, tls, mechanism,
                                    initial):
    # smtpd reads the AUTH line with line_length_limit (raised to 12288 in the lab; the default
    # 2048 chops it and Dovecot answers "Invalid base64 data in initial response"), the
    # answer to 334 with smtpd_sasl_response_limit (12288).
    login = smtp_login(docker_lab, tls_ctx, port_name, tls, mechanism,
                       sasl_message(mechanism, user, long_token), initial=initial)
    assert login.ok, login


@pytest.mark.parametrize("port_name,protocol", [("pop3s", "pop3"), ("imaps", "imap")])
def test_long_token_pop3_imap(docker_lab, tls_ctx, user, long_token, port_name, protocol):
    for mechanism in MECHANISMS:
        login = LOGIN[protocol](docker_lab, tls_ctx, port_name, "implicit", mechanism,
                                sasl_message(mechanism, user, long_token))
        assert login.ok, (mechanism, login)


def test_postfix_line_length_limit(mta):
    assert mta.run("postconf -h line_length_limit").stdout.strip() == "12288"


# -- where the mechanisms are offered ------------------------------------------------------------

def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def offered(docker_lab, ctx, name: str) -> set[str]:
    """The SASL mechanisms a port offers (SMTP: after STARTTLS where there is one)."""
    kind = docker_lab["port_kinds"][name]
    host, port = kind["host"], docker_lab["ports"][name]
    tls = kind["tls"]
    if tls == "badcert":
        ctx, tls = _unverified(), "implicit"
    if kind["protocol"] == "smtp":
        s = smtplib.SMTP_SSL(host, port, context=ctx, timeout=15) if tls == "implicit" \
            else smtplib.SMTP(host, port, timeout=15)
        with s:
            s.ehlo("oauth.client.test")
            if tls in ("starttls", "required"):
                s.starttls(context=ctx)
                s.ehlo("oauth.client.test")
            return set(s.esmtp_features.get("auth", "").upper().split())
    if kind["protocol"] == "pop3":
        p = poplib.POP3_SSL(host, port, context=ctx, timeout=15) if tls == "implicit" \
            else poplib.POP3(host, port, timeout=15)
        try:
            if tls == "starttls":
                p.stls(context=ctx)
            return set(p.capa().get("SASL", []))
        finally:
            p.close()
    m = imaplib.IMAP4_SSL(host, port, ssl_context=ctx, timeout=15) if tls == "implicit" \
        else imaplib.IMAP4(host, port, timeout=15)
    try:
        if tls == "starttls":
            m.starttls(ssl_context=ctx)
        return {c.split("=", 1)[1] for c in m.capabilities if c.startswith("AUTH=")}
    finally:
        m.shutdown()


def test_describe_oauth_ports_offer_the_mechanisms(docker_lab, info, tls_ctx):
    assert info["mechanisms"] == list(MECHANISMS)
    for name, mechanisms in info["ports"].items():
        seen = offered(docker_lab, tls_ctx, name)
        assert set(mechanisms) <= seen, (name, seen)
        assert {"PLAIN", "LOGIN"} <= seen, (name, seen)  # the password mechanisms stay
    # No AUTH at all on the open relay; SMTP AUTH (OAuth included) only after STARTTLS on 25.
    assert offered(docker_lab, tls_ctx, "smtp_openrelay") == set()
    with smtplib.SMTP(docker_lab["host"], docker_lab["ports"]["submission"], timeout=15) as s:
        s.ehlo("oauth.client.test")
        assert not s.has_extn("auth")


@pytest.mark.parametrize("port_name,protocol", [("imap_nostarttls", "imap"), ("pop3_nostls", "pop3"),
                                                ("smtp_nostarttls", "smtp")])
def test_plaintext_ports_accept_a_token(docker_lab, tls_ctx, key, user, port_name, protocol):
    """Dovecot counts loopback as secured: on the ports without TLS, XOAUTH2 is offered and a token
    sent there in clear logs in.  Nothing on the server side stops it: a client must refuse to
    send a bearer token without TLS (the negative case these ports are for)."""
    login = LOGIN[protocol](docker_lab, tls_ctx, port_name, "none", "XOAUTH2",
                            sasl_message("XOAUTH2", user, lab_oauth.issue(key, user)))
    assert login.ok, login


def test_dovecot_instances_configured(mailbox):
    for conf in ("main", "nostls", "badcert"):
        out = mailbox.run(f"doveconf -c /etc/dovecot/lab/{conf}.conf -h auth_mechanisms")
        assert out.rc == 0, out.stderr
        assert set(out.stdout.split()) == {"plain", "login", "cram-md5", "apop", "xoauth2", "oauthbearer"}
        out = mailbox.run(f"doveconf -c /etc/dovecot/lab/{conf}.conf passdb")
        assert "driver = oauth2" in out.stdout and "mechanisms = xoauth2 oauthbearer" in out.stdout
        assert "mechanisms = plain login cram-md5 apop none" in out.stdout
    conf = mailbox.file("/etc/dovecot/lab/oauth2.conf.ext").content_string
    for line in ("introspection_mode = local", "username_attribute = sub", "scope = mail",
                 "issuers = mailops-lab",
                 "local_validation_key_dict = fs:posix:prefix=/etc/dovecot/oauth-keys/"):
        assert line in conf.splitlines()
    key_file = mailbox.file("/etc/dovecot/oauth-keys/default/HS256/default")
    assert key_file.group == "dovecot" and key_file.mode == 0o640


def test_key_is_the_one_dovecot_reads(mailbox, info):
    with open(info["key_path"], encoding="ascii") as handle:
        host_key = handle.read()
    assert mailbox.file("/etc/dovecot/oauth-keys/default/HS256/default").content_string == host_key
    assert lab_oauth.key_from_text(host_key)


# -- the token endpoint ---------------------------------------------------------------------------

def test_token_endpoint_client_credentials(info, tls_ctx, clients, user):
    status, body, headers = token_request(info, tls_ctx, user, clients[user]["client_secret"])
    assert status == 200, body
    assert headers["Cache-Control"] == "no-store"
    assert body["token_type"] == "Bearer" and body["scope"] == "mail" and body["expires_in"] == info["lifetime"]
    claims = lab_oauth.claims_unverified(body["access_token"])
    assert claims["sub"] == user and claims["iss"] == info["issuer"] and claims["aud"] == info["audience"]
    # iat and nbf a second back (lab.embedded.oauth.ISSUE_SLACK), exp a lifetime from now.
    assert claims["iat"] == claims["nbf"] and claims["exp"] - claims["iat"] == info["lifetime"] + 1
    assert abs(claims["exp"] - time.time() - info["lifetime"]) < 5


def test_token_endpoint_failure_clients(info, tls_ctx, clients, user, key):
    by_purpose = {c["purpose"]: c for c in info["clients"]}
    assert set(by_purpose) == {"valid", "expired", "wrong_scope"}
    expired = by_purpose["expired"]
    status, body, _headers = token_request(info, tls_ctx, expired["client_id"], expired["client_secret"])
    assert status == 200 and body["expires_in"] == 0, body
    claims = lab_oauth.claims_unverified(body["access_token"])
    assert claims["exp"] < time.time() and claims["sub"] == user
    assert lab_oauth.verify(key, body["access_token"], user)[1]["reason"] == "expired"
    wrong = by_purpose["wrong_scope"]
    status, body, _headers = token_request(info, tls_ctx, wrong["client_id"], wrong["client_secret"])
    assert status == 200 and body["scope"] == "calendar", body
    assert lab_oauth.verify(key, body["access_token"], user)[1]["reason"] == "wrong_scope"
    # It may not ask for mail.
    status, body, _headers = token_request(info, tls_ctx, wrong["client_id"], wrong["client_secret"],
                                           {"grant_type": "client_credentials", "scope": "mail"})
    assert status == 400 and body["error"] == "invalid_scope", body


@pytest.mark.parametrize("client_id,secret", [("{user}", "wrong-secret"), ("no-such-client", "x"),
                                              ("{user}", "")])
def test_token_endpoint_refuses_a_wrong_secret(info, tls_ctx, user, client_id, secret):
    status, body, headers = token_request(info, tls_ctx, client_id.format(user=user), secret)
    assert status == 401, body
    assert body == {"error": "invalid_client", "error_description": "client authentication failed"}
    assert headers["WWW-Authenticate"] == 'Basic realm="mailops-lab"'


def test_token_endpoint_discovery_and_methods(docker_lab, info, tls_ctx):
    with urllib.request.urlopen(info["openid_configuration"], context=tls_ctx, timeout=10) as response:
        doc = json.loads(response.read())
    assert doc["issuer"] == info["issuer"] and doc["token_endpoint"] == info["token_url"]
    assert doc["grant_types_supported"] == ["client_credentials"]
    assert set(doc["scopes_supported"]) == {"mail", "calendar"}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(info["token_url"], context=tls_ctx, timeout=10)
    assert err.value.code == 405
    err.value.close()
    # HTTPS with the lab's certificate on every lab address; plain HTTP is not served.
    for host in docker_lab["hosts"]:
        url = info["openid_configuration"].replace(docker_lab["host"], f"[{host}]" if ":" in host else host)
        with urllib.request.urlopen(url, context=tls_ctx, timeout=10) as response:
            assert response.status == 200
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(info["openid_configuration"].replace("https:", "http:"), timeout=5)


def test_token_endpoint_runs_unprivileged(mailbox, ports):
    processes = [p for p in mailbox.process.filter(comm="python3") if "oauth.py serve" in p.args]
    assert processes and all(p.user == "labtoken" for p in processes)
    assert mailbox.socket(f"tcp://127.0.0.1:{ports['oauth']}").is_listening


def test_describe_oauth_block(docker_lab, info, accounts):
    assert info["token_url"] == f"https://{docker_lab['host']}:{docker_lab['ports']['oauth']}/token"
    assert info["scope"] == "mail" and info["kid"] == "default" and info["algorithm"] == "HS256"
    assert info["key_path"].endswith("/oauth/keys/default/HS256/default")
    valid = [c for c in info["clients"] if c["purpose"] == "valid"]
    assert sorted(c["client_id"] for c in valid) == sorted(accounts)
    assert all(c["client_id"] == c["username"] and c["scopes"] == ["mail"] for c in valid)
    assert len({c["client_secret"] for c in info["clients"]}) == len(info["clients"])
    assert info["failure_account"] in accounts
