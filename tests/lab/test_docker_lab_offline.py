"""Parts of lab.docker that need no Docker engine: config, apt sources, certificates,
image hashing, CLI parsing.  These always run."""

from __future__ import annotations

import datetime
import re
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from lab.docker import baseimage, dns, images, runtime
from lab.docker.cli import build_parser
from lab.docker.config import (BADDKIM_DOMAIN, BOUNCE_DOMAIN, CONTAINERS, DEFAULT_PORTS, DKIM_SELECTOR, LAB_DIR,
                               OAUTH_FAILURE_CLIENTS, OAUTH_MECHANISMS, OAUTH_PORTS, OUTSIDE_DOMAIN, PORTS,
                               TLS_KINDS, LabConfig, port_env_name)
from lab.embedded import oauth as lab_oauth


# -- config -----------------------------------------------------------------------

def test_defaults_are_standard_ports():
    cfg = LabConfig.from_env({"LAB_LISTEN_IPV6": "no"})
    assert cfg.ports["smtp"] == 25 and cfg.ports["submission"] == 587
    assert cfg.ports["smtps"] == 465 and cfg.ports["pop3"] == 110
    assert cfg.ports["pop3s"] == 995
    assert cfg.listen == ("127.0.0.1",)
    assert list(DEFAULT_PORTS) == list(PORTS)


def test_port_table_rows_are_complete():
    for name, port in PORTS.items():
        assert port.name == name
        assert port.owner in CONTAINERS, port
        assert port.tls in TLS_KINDS, port
        assert port.protocol in ("smtp", "pop3", "imap", "lmtp", "dovecot-auth", "https"), port


def test_port_defaults_written_elsewhere_match_the_table():
    # compose.yaml, the entrypoints and the healthchecks carry ${LAB_PORT_<NAME>:-default};
    # lab/docker/README.md has the services table.
    env_defaults = {port_env_name(name): str(p.default) for name, p in PORTS.items()}
    files = [LAB_DIR / "compose.yaml", *sorted((LAB_DIR / "docker" / "images").rglob("*.sh"))]
    seen = set()
    for path in files:
        for var, default in re.findall(r"\$\{(LAB_PORT_[A-Z0-9_]+):-([0-9]+)\}", path.read_text()):
            assert env_defaults.get(var) == default, f"{path}: {var} defaults to {default}"
            seen.add(var)
    assert seen == set(env_defaults)
    readme = (LAB_DIR / "docker" / "README.md").read_text().split("## Services", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)`\s*\| (\d+)\s*\|", readme, re.M))
    rows.update(zip(("imap", "imaps"), re.search(r"`imap` / `imaps`\s*\| (\d+)/(\d+)", readme).groups()))
    assert rows == {name: str(p.default) for name, p in PORTS.items()}


def test_containers_compose_and_images_agree():
    # One image dir per container, a compose service per container with that role label.
    import yaml
    compose = yaml.safe_load((LAB_DIR / "compose.yaml").read_text())
    assert list(compose["services"]) == list(CONTAINERS)
    from lab.docker.config import IMAGE_CONTENTS
    from lab.docker.lab import BUILD_ORDER, STEPS
    assert set(IMAGE_CONTENTS) == set(BUILD_ORDER) == set(CONTAINERS)
    assert STEPS == 5 + len(CONTAINERS)
    for name in CONTAINERS:
        for f in ("Dockerfile", "entrypoint.sh", "healthcheck.sh"):
            assert (images.context_dir(name) / f).is_file(), (name, f)
        service = compose["services"][name]
        assert service["labels"]["io.mailops.lab.role"] == name
        assert service["build"]["context"] == f"./docker/images/{name}"
        assert service["network_mode"] == "host"
    # The MTA starts after the resolver (outside) and Dovecot are healthy.
    assert set(compose["services"]["mta"]["depends_on"]) == {"mailbox", "outside"}
    env = compose["x-lab-environment"]
    assert env["LAB_OUTSIDE_ADDRESS"] == "${LAB_OUTSIDE_ADDRESS:-127.0.0.2}"
    assert env["LAB_RESOLVER"] == "${LAB_RESOLVER:-127.0.0.53}"


def test_entrypoints_name_the_configured_domains():
    # The outside provider's domains and the DKIM selector are written into the entrypoints.
    for name in ("mta", "outside"):
        text = (images.context_dir(name) / "entrypoint.sh").read_text()
        assert f"OUTSIDE_DOMAIN={OUTSIDE_DOMAIN}\n" in text
        assert f"BOUNCE_DOMAIN={BOUNCE_DOMAIN}\n" in text
        assert f"BADDKIM_DOMAIN={BADDKIM_DOMAIN}\n" in text
        assert f"SELECTOR={DKIM_SELECTOR}\n" in text


def test_outside_port_and_resolver_config():
    cfg = LabConfig.from_env({"LAB_LISTEN_IPV6": "no"})
    assert PORTS["outside_smtp"].owner == "outside" and PORTS["outside_smtp"].address == "outside"
    assert PORTS["smtp_openrelay"].tls == "none" and PORTS["smtp_openrelay"].owner == "mta"
    # smtp and outside_smtp are both 25, on different addresses.
    assert cfg.ports["smtp"] == cfg.ports["outside_smtp"] == 25
    assert (cfg.port_host("smtp"), cfg.port_host("outside_smtp")) == ("127.0.0.1", "127.0.0.2")
    assert cfg.resolver == "127.0.0.53" and cfg.authserv_id == "mail.lab.test"
    env = cfg.container_env()
    assert env["LAB_OUTSIDE_ADDRESS"] == "127.0.0.2" and env["LAB_RESOLVER"] == "127.0.0.53"
    moved = LabConfig.from_env({"LAB_OUTSIDE_ADDRESS": "127.0.0.9", "LAB_RESOLVER": "127.0.1.53",
                                "LAB_PORT_OFFSET": "1000"})
    assert moved.port_host("outside_smtp") == "127.0.0.9" and moved.ports["outside_smtp"] == 1025


@pytest.mark.parametrize("env", [{"LAB_OUTSIDE_ADDRESS": "192.0.2.1"}, {"LAB_OUTSIDE_ADDRESS": "127.0.0.1"},
                                 {"LAB_RESOLVER": "10.0.0.1"}, {"LAB_RESOLVER": "::1"},
                                 {"LAB_OUTSIDE_ADDRESS": "nope"}])
def test_outside_and_resolver_must_be_other_loopback_addresses(env):
    with pytest.raises(ValueError, match="loopback|IPv4"):
        LabConfig.from_env(env)


def test_same_port_on_one_address_refused():
    with pytest.raises(ValueError, match="both"):
        LabConfig.from_env({"LAB_PORT_SMTP_OPENRELAY": "2525"})
    # The outside provider's port may repeat a lab port (another address), not its own twice.
    LabConfig.from_env({"LAB_PORT_OUTSIDE_SMTP": "587"})


def test_state_from_before_the_new_ports_gets_their_defaults(tmp_path):
    old = {"ports": {k: v for k, v in DEFAULT_PORTS.items() if k not in ("smtp_openrelay", "outside_smtp")},
           "domain": "lab.test", "host": "127.0.0.1", "rt_accounts": 20, "listen": ["127.0.0.1"]}
    cfg = LabConfig.from_json(old, tmp_path)
    assert cfg.ports["smtp_openrelay"] == 2526 and cfg.ports["outside_smtp"] == 25
    assert cfg.outside_address == "127.0.0.2" and cfg.resolver == "127.0.0.53"


def test_env_offset_and_overrides():
    cfg = LabConfig.from_env({"LAB_PORT_OFFSET": "10000", "LAB_PORT_POP3": "2110"},
                             overrides={"smtp": 3025})
    assert cfg.ports["smtp"] == 3025
    assert cfg.ports["pop3"] == 2110
    assert cfg.ports["submission"] == 10587


def test_duplicate_port_refused():
    with pytest.raises(ValueError, match="both"):
        LabConfig.from_env({"LAB_PORT_SMTP": "110"})


def test_unknown_port_name_refused():
    with pytest.raises(ValueError, match="unknown port"):
        LabConfig.from_env({}, overrides={"smtpx": 1})


def test_accounts_and_container_env(tmp_path):
    cfg = LabConfig.from_env({"LAB_RT_ACCOUNTS": "3", "LAB_STATE_DIR": str(tmp_path),
                              "LAB_DOMAIN": "example.test", "LAB_LISTEN_IPV6": "yes"})
    assert cfg.usernames() == ["rt01", "rt02", "rt03", "shared", "alice", "bob"]
    env = cfg.container_env()
    assert env["LAB_PORT_SMTP_NOSTARTTLS"] == "2525"
    assert env["LAB_DOMAIN"] == "example.test"
    assert env["LAB_LISTEN"] == "127.0.0.1 ::1"


def test_config_round_trips_json(tmp_path):
    cfg = LabConfig.from_env({"LAB_STATE_DIR": str(tmp_path), "LAB_PORT_OFFSET": "7"})
    back = LabConfig.from_json(cfg.to_json(), tmp_path)
    assert back.to_json() == cfg.to_json()
    assert list(back.ports) == list(DEFAULT_PORTS)


def test_cli_port_flag():
    args = build_parser().parse_args(["up", "--port", "smtp=2025", "--port-offset", "5"])
    assert args.port == [("smtp", 2025)] and args.port_offset == 5


# -- apt sources ----------------------------------------------------------------------

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.invalid/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.invalid/debian-security
Suites: bookworm-security
Components: main
"""


def test_mirror_from_deb822(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(DEB822)
    (d / "other.sources.disabled").write_text("Types: deb\nURIs: http://nope.invalid/x\n"
                                              "Suites: bookworm\nComponents: main\n")
    sources = baseimage.host_apt_sources(tmp_path / "missing.list", d)
    assert baseimage.debian_mirror(sources) == "http://mirror.invalid/debian"
    text = baseimage.image_apt_sources("http://mirror.invalid/debian", sources)
    assert "deb http://mirror.invalid/debian bookworm main" in text
    assert "deb http://mirror.invalid/debian bookworm-updates main" in text
    assert "deb http://security.invalid/debian-security bookworm-security main" in text


def test_mirror_from_one_line_format(tmp_path):
    lst = tmp_path / "sources.list"
    lst.write_text("# deb http://commented.invalid/debian bookworm main\n"
                   "deb-src http://src.invalid/debian bookworm main\n"
                   "deb [arch=amd64 signed-by=/k.gpg] http://sec.invalid/debian-security "
                   "bookworm-security main\n"
                   "deb http://one.invalid/debian bookworm main contrib\n")
    sources = baseimage.host_apt_sources(lst, tmp_path / "none.d")
    assert baseimage.debian_mirror(sources) == "http://one.invalid/debian"
    text = baseimage.image_apt_sources("http://one.invalid/debian", sources)
    assert "bookworm-updates" not in text  # the host does not list it


def test_mirror_env_override(monkeypatch):
    monkeypatch.setenv("LAB_DEBIAN_MIRROR", "http://override.invalid/debian")
    assert baseimage.debian_mirror([]) == "http://override.invalid/debian"


def test_no_mirror_is_an_error(monkeypatch):
    monkeypatch.delenv("LAB_DEBIAN_MIRROR", raising=False)
    with pytest.raises(RuntimeError, match="LAB_DEBIAN_MIRROR"):
        baseimage.debian_mirror([])


def test_repo_names_no_mirror_host():
    # The mirror is read from the host at run time; none is written in the lab.
    try:
        sources = baseimage.host_apt_sources()
    except OSError:
        sources = []
    hosts = {s.uri.split("/")[2] for s in sources if s.uri.count("/") >= 2}
    root = Path(baseimage.__file__).resolve().parent
    files = [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files.append(root.parent / "compose.yaml")
    for path in files:
        text = path.read_text(errors="replace")
        for host in hosts:
            assert host not in text, f"{host} named in {path}"


# -- certificates ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def made_runtime(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    cfg = LabConfig.from_env({"LAB_STATE_DIR": str(state), "LAB_RT_ACCOUNTS": "2"})
    runtime.ensure_runtime(cfg)
    return cfg


def test_certificate_extensions(made_runtime):
    certs = made_runtime.runtime_dir / "certs"
    ca = x509.load_pem_x509_certificate((certs / "ca.pem").read_bytes())
    leaf = x509.load_pem_x509_certificate((certs / "server.pem").read_bytes())
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"localhost", "lab.test", "mail.lab.test"} <= set(san.get_values_for_type(x509.DNSName))
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1"}


def test_strict_tls_handshake_with_lab_ca(made_runtime):
    """A strict (Python 3.13-like) client accepts the server cert; the rogue one fails."""
    import socket
    certs = made_runtime.runtime_dir / "certs"

    def serve(cert: str, key: str) -> int:
        srv_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        srv_ctx.load_cert_chain(certs / cert, certs / key)
        lsock = socket.create_server(("127.0.0.1", 0))

        def run() -> None:
            conn = lsock.accept()[0]
            try:
                with srv_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass
            finally:
                lsock.close()
        threading.Thread(target=run, daemon=True).start()
        return lsock.getsockname()[1]

    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    ctx.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    port = serve("server.pem", "server.key")
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"x")
    port = serve("rogue.pem", "rogue.key")
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="localhost")


def test_runtime_is_kept_then_remade(made_runtime):
    users_before = runtime.read_users(made_runtime.users_path)
    assert list(users_before) == ["rt01", "rt02", "shared", "alice", "bob"]
    assert all(pw.isalnum() and len(pw) >= 12 for pw in users_before.values())
    fp = runtime.runtime_fingerprint(made_runtime)
    assert runtime.ensure_runtime(made_runtime) == {"certs": False, "users": False, "dkim": False,
                                                    "oauth": False}
    assert runtime.runtime_fingerprint(made_runtime) == fp
    made_runtime.rt_accounts = 3
    assert runtime.ensure_runtime(made_runtime)["users"]
    users_after = runtime.read_users(made_runtime.users_path)
    assert users_after["rt01"] == users_before["rt01"]  # existing passwords kept
    assert "rt03" in users_after


def test_dkim_keys(made_runtime):
    import base64
    from cryptography.hazmat.primitives import serialization
    d = made_runtime.runtime_dir / "dkim"
    for domain, published_matches in ((made_runtime.domain, True), (BADDKIM_DOMAIN, False)):
        key = serialization.load_pem_private_key((d / f"{domain}.key").read_bytes(), None)
        assert key.key_size == 2048
        record = (d / f"{domain}.dns").read_text().strip()
        assert record.startswith("v=DKIM1; k=rsa; p=")
        der = key.public_key().public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        assert (record.split("p=", 1)[1] == base64.b64encode(der).decode()) is published_matches, domain
    assert all(f.is_file() for f in runtime.dkim_files(made_runtime))


def test_dns_client_against_a_fake_server():
    """The resolver probe's DNS client: query encoding and answer parsing (A, MX, TXT, REFUSED)."""
    import socket
    import struct

    def answer(query: bytes) -> bytes:
        qid, qtype = query[:2], struct.unpack("!H", query[-4:-2])[0]
        question = query[12:]
        name = b"\xc0\x0c"
        if qtype == 1:
            rr = name + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([127, 0, 0, 1])
        elif qtype == 15:
            target = b"\x04mail\xc0\x0c"
            rr = name + struct.pack("!HHIH", 15, 1, 60, 2 + len(target)) + struct.pack("!H", 10) + target
        elif qtype == 16:
            parts = b"\x05v=spf" + b"\x07 -all.."
            rr = name + struct.pack("!HHIH", 16, 1, 60, len(parts)) + parts
        else:
            return qid + struct.pack("!HHHHH", 0x8185, 1, 0, 0, 0) + question
        return qid + struct.pack("!HHHHH", 0x8180, 1, 1, 0, 0) + question + rr

    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]

    def serve():
        for _n in range(4):
            data, peer = srv.recvfrom(512)
            srv.sendto(answer(data), peer)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert dns.query("127.0.0.1", "lab.test", "A", port=port).answers == ["127.0.0.1"]
        assert dns.query("127.0.0.1", "lab.test", "MX", port=port).answers == [(10, "mail.lab.test")]
        assert dns.query("127.0.0.1", "lab.test", "TXT", port=port).answers == ["v=spf -all.."]
        refused = dns.query("127.0.0.1", "example.com", "NS", port=port)
        assert refused.rcode_name == "REFUSED" and refused.answers == []
    finally:
        t.join(5)
        srv.close()


def test_certificate_validity(made_runtime):
    leaf = x509.load_pem_x509_certificate(
        (made_runtime.runtime_dir / "certs" / "server.pem").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    assert leaf.not_valid_before_utc < now < leaf.not_valid_after_utc


# -- OAuth ----------------------------------------------------------------------------

def test_oauth_runtime(made_runtime):
    cfg = made_runtime
    key = lab_oauth.load_key(cfg.oauth_key_path)
    assert len(key) == lab_oauth.KEY_BYTES
    # Where Dovecot's fs dict looks: <azp>/<alg>/<kid>, for tokens without azp.
    assert cfg.oauth_key_path.relative_to(cfg.oauth_dir / "keys").as_posix() == \
        f"default/{lab_oauth.ALGORITHM}/{lab_oauth.KID}"
    assert oct(cfg.oauth_key_path.stat().st_mode & 0o777) == "0o600"
    clients = runtime.read_oauth_clients(cfg.oauth_clients_path)
    failing = cfg.oauth_failure_account()
    assert [c for c in clients if clients[c]["purpose"] == "valid"] == cfg.usernames()
    assert all(clients[u]["username"] == u and clients[u]["scopes"] == ["mail"] for u in cfg.usernames())
    for client_id, (purpose, scopes, lifetime) in OAUTH_FAILURE_CLIENTS.items():
        assert clients[client_id]["purpose"] == purpose and clients[client_id]["username"] == failing
        assert clients[client_id]["scopes"] == list(scopes) and clients[client_id].get("lifetime") == lifetime
    assert len({c["secret"] for c in clients.values()}) == len(clients)
    assert (cfg.oauth_dir / "oauth.py").read_bytes() == Path(lab_oauth.__file__).read_bytes()
    # The token endpoint reads this file as it is (purpose is ignored).
    endpoint = lab_oauth.TokenEndpoint(key, clients)
    assert endpoint.clients["expired"].lifetime == -60 and endpoint.clients["wrong_scope"].scopes == ("calendar",)


def test_oauth_runtime_kept_and_secrets_survive_account_changes(tmp_path):
    cfg = LabConfig.from_env({"LAB_STATE_DIR": str(tmp_path), "LAB_RT_ACCOUNTS": "3"})
    runtime.ensure_runtime(cfg)
    key_text = cfg.oauth_key_path.read_text()
    before = runtime.read_oauth_clients(cfg.oauth_clients_path)
    assert cfg.oauth_failure_account() == "rt02"
    fp = runtime.runtime_fingerprint(cfg)
    assert runtime.ensure_runtime(cfg)["oauth"] is False
    assert runtime.runtime_fingerprint(cfg) == fp
    cfg.rt_accounts = 4
    assert runtime.ensure_runtime(cfg)["oauth"] is True
    after = runtime.read_oauth_clients(cfg.oauth_clients_path)
    assert cfg.oauth_key_path.read_text() == key_text
    assert after["rt01"]["secret"] == before["rt01"]["secret"]
    assert after["expired"]["secret"] == before["expired"]["secret"]
    assert after["expired"]["username"] == "rt03" and "rt04" in after
    assert runtime.runtime_fingerprint(cfg) != fp


def test_oauth_describe_block(made_runtime):
    from lab.docker.lab import describe
    block = describe(made_runtime)["oauth"]
    assert block["token_url"] == f"https://127.0.0.1:{made_runtime.ports['oauth']}/token"
    assert block["key_path"] == str(made_runtime.oauth_key_path)
    assert block["mechanisms"] == list(OAUTH_MECHANISMS) and block["scope"] == "mail"
    assert set(block["ports"]) == set(OAUTH_PORTS) <= set(PORTS)
    assert "smtp_openrelay" not in block["ports"]
    purposes = {c["client_id"]: c["purpose"] for c in block["clients"]}
    assert purposes["expired"] == "expired" and purposes["wrong_scope"] == "wrong_scope"
    assert {c["client_secret"] for c in block["clients"]} == \
        {c["secret"] for c in runtime.read_oauth_clients(made_runtime.oauth_clients_path).values()}


def test_token_endpoint_client_lifetime():
    """The per-client lifetime (lab.embedded.oauth.Client.lifetime): negative issues expired tokens,
    and expires_in is then 0."""
    import base64
    import json as json_mod
    import time
    import urllib.request
    key = lab_oauth.make_key()
    clients = {"now": ("s1", "alice"), "old": ("s2", "alice", ["mail"], -60),
               "short": {"secret": "s3", "username": "bob", "lifetime": 30}}
    with lab_oauth.TokenEndpoint(key, clients, lifetime=600) as endpoint:
        def grant(client_id, secret):
            request = urllib.request.Request(endpoint.url, data=b"grant_type=client_credentials")
            request.add_header("Authorization", "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode())
            request.add_header("Content-Type", "application/x-www-form-urlencoded")
            with urllib.request.urlopen(request, timeout=10) as response:
                return json_mod.loads(response.read())
        now = time.time()
        body = grant("now", "s1")
        assert body["expires_in"] == 600
        assert lab_oauth.verify(key, body["access_token"], "alice") == (True, None)
        body = grant("old", "s2")
        assert body["expires_in"] == 0
        claims = lab_oauth.claims_unverified(body["access_token"])
        assert claims["exp"] <= now - 59
        assert lab_oauth.verify(key, body["access_token"], "alice")[1]["reason"] == "expired"
        body = grant("short", "s3")
        assert body["expires_in"] == 30 and lab_oauth.claims_unverified(body["access_token"])["sub"] == "bob"
    assert lab_oauth.Client("x", "y").lifetime is None


def test_issue_backdates_iat_and_nbf():
    import time
    key = lab_oauth.make_key()
    now = int(time.time())
    claims = lab_oauth.claims_unverified(lab_oauth.issue(key, "alice", lifetime=60))
    assert claims["iat"] == claims["nbf"] and now - 2 <= claims["iat"] <= now - lab_oauth.ISSUE_SLACK + 1
    assert now + 59 <= claims["exp"] <= now + 61
    fixed = lab_oauth.claims_unverified(lab_oauth.issue(key, "alice", lifetime=60, now=1000))
    assert (fixed["iat"], fixed["nbf"], fixed["exp"]) == (1000, 1000, 1060)


def test_token_endpoint_cli_serves_https(made_runtime):
    """`python -m lab.embedded.oauth serve --tls-cert --tls-key`: what the mailbox container runs."""
    import json as json_mod
    import subprocess
    import sys
    import urllib.request
    certs = made_runtime.runtime_dir / "certs"
    cmd = [sys.executable, "-m", "lab.embedded.oauth", "serve", "--key-file", str(made_runtime.oauth_key_path),
           "--clients-file", str(made_runtime.oauth_clients_path), "--host", "127.0.0.1", "--port", "0",
           "--tls-cert", str(certs / "server.pem"), "--tls-key", str(certs / "server.key")]
    proc = subprocess.Popen(cmd, cwd=LAB_DIR.parent, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:") and url.endswith("/token"), url
        ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
        discovery = url.replace("/token", lab_oauth.TokenEndpoint.DISCOVERY_PATH)
        with urllib.request.urlopen(discovery, context=ctx, timeout=10) as response:
            assert json_mod.loads(response.read())["token_endpoint"] == url
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        proc.stdout.close()
    bad = subprocess.run(cmd[:-2], cwd=LAB_DIR.parent, capture_output=True, text=True, timeout=30, check=False)
    assert bad.returncode == 2 and "go together" in bad.stderr


def test_oauth_files_agree():
    """The entrypoint's key path and oauth2 settings, the healthcheck, compose and the README say
    what config.py and lab.embedded.oauth say."""
    entrypoint = (images.context_dir("mailbox") / "entrypoint.sh").read_text()
    assert f"OAUTH_KEY=default/{lab_oauth.ALGORITHM}/{lab_oauth.KID} " in entrypoint
    for line in ("introspection_mode = local", "username_attribute = sub",
                 f"scope = {lab_oauth.DEFAULT_SCOPE}", f"issuers = {lab_oauth.ISSUER}",
                 f'audience="audience = {lab_oauth.AUDIENCE}"',
                 "auth_mechanisms = plain login cram-md5 apop " + " ".join(m.lower() for m in OAUTH_MECHANISMS),
                 "mechanisms = " + " ".join(m.lower() for m in OAUTH_MECHANISMS)):
        assert line in entrypoint, line
    assert "oauth.py serve" in (images.context_dir("mailbox") / "healthcheck.sh").read_text()
    assert "python3" in (images.context_dir("mailbox") / "Dockerfile").read_text()
    assert "line_length_limit = 12288" in (images.context_dir("mta") / "entrypoint.sh").read_text()
    readme = (LAB_DIR / "docker" / "README.md").read_text()
    oauth_section = readme.split("## OAuth 2.0", 1)[1].split("\n## ", 1)[0]
    for word in (*OAUTH_FAILURE_CLIENTS, "line_length_limit", "XOAUTH2", "OAUTHBEARER", "key_path"):
        assert word in oauth_section, word


# -- images ----------------------------------------------------------------------------

def test_content_hash_is_stable_and_content_sensitive(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\n")
    h1 = images.content_hash(tmp_path)
    assert images.content_hash(tmp_path) == h1
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\necho\n")
    assert images.content_hash(tmp_path) != h1


def test_dockerfiles_use_the_base_tag():
    for name in CONTAINERS:
        text = (images.context_dir(name) / "Dockerfile").read_text()
        assert "FROM debian:bookworm-slim" in text
