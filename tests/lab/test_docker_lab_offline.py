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

from lab.docker import baseimage, images, runtime
from lab.docker.cli import build_parser
from lab.docker.config import CONTAINERS, DEFAULT_PORTS, LAB_DIR, PORTS, TLS_KINDS, LabConfig, port_env_name


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
        assert port.protocol in ("smtp", "pop3", "imap", "lmtp", "dovecot-auth"), port


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
    assert runtime.ensure_runtime(made_runtime) == {"certs": False, "users": False}
    assert runtime.runtime_fingerprint(made_runtime) == fp
    made_runtime.rt_accounts = 3
    assert runtime.ensure_runtime(made_runtime)["users"]
    users_after = runtime.read_users(made_runtime.users_path)
    assert users_after["rt01"] == users_before["rt01"]  # existing passwords kept
    assert "rt03" in users_after


def test_certificate_validity(made_runtime):
    leaf = x509.load_pem_x509_certificate(
        (made_runtime.runtime_dir / "certs" / "server.pem").read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    assert leaf.not_valid_before_utc < now < leaf.not_valid_after_utc


# -- images ----------------------------------------------------------------------------

def test_content_hash_is_stable_and_content_sensitive(tmp_path):
    (tmp_path / "Dockerfile").write_text("FROM debian:bookworm-slim\n")
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\n")
    h1 = images.content_hash(tmp_path)
    assert images.content_hash(tmp_path) == h1
    (tmp_path / "entrypoint.sh").write_text("#!/bin/sh\necho\n")
    assert images.content_hash(tmp_path) != h1


def test_dockerfiles_use_the_base_tag():
    for name in ("mta", "mailbox"):
        text = (images.context_dir(name) / "Dockerfile").read_text()
        assert "FROM debian:bookworm-slim" in text
