"""python -m lab.docker COMMAND

  up        engine, base image, images, certs, containers; wait until every port answers
  down      remove the lab's containers (by id); stop the private dockerd if `up` started it
  status    engine, containers and every port (exit 0 when all are up)
  logs      the containers' output (Postfix, Dovecot, the milters and unbound log to it)
  describe  host, domain, ca_path, ports, accounts (--json for the machine-readable form)
  certs     make the CA, certificates and accounts only (for `docker compose -f lab/compose.yaml`)

Ports: defaults in lab/docker/config.py; move one with LAB_PORT_<NAME>=N or
`--port name=N`, all of them with LAB_PORT_OFFSET=N or `--port-offset N`.
Other settings: LAB_DOMAIN, LAB_RT_ACCOUNTS, LAB_LISTEN_IPV6=auto|yes|no,
LAB_OUTSIDE_ADDRESS (the outside provider, 127.0.0.2), LAB_RESOLVER (127.0.0.53), LAB_STATE_DIR, LAB_DEBIAN_MIRROR (else read from the host's apt sources),
LAB_BASE_PULL=0 (do not try to pull the base image), DOCKER_HOST.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from docker.errors import DockerException

from . import runtime
from .config import CONTAINERS, LabConfig, state_dir
from .engine import EngineError
from .lab import current_config, describe, down, logs, status, up


def _port_arg(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=PORT, got {text!r}")
    return name.strip(), int(value)


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", action="append", type=_port_arg, default=[], metavar="NAME=N",
                   help="move one port (repeatable), e.g. --port smtp=2025")
    p.add_argument("--port-offset", type=int, default=None, metavar="N",
                   help="add N to every default port (also LAB_PORT_OFFSET)")
    p.add_argument("--domain", help="lab mail domain (also LAB_DOMAIN; default lab.test)")
    p.add_argument("--rt-accounts", type=int, metavar="N",
                   help="number of round-trip accounts rt01.. (also LAB_RT_ACCOUNTS; default 20)")


def _config_from(args: argparse.Namespace) -> LabConfig:
    env = dict(os.environ)
    if args.domain:
        env["LAB_DOMAIN"] = args.domain
    if args.rt_accounts is not None:
        env["LAB_RT_ACCOUNTS"] = str(args.rt_accounts)
    return LabConfig.from_env(env, overrides=dict(args.port), offset=args.port_offset)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab.docker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("up", help="bring the lab up")
    _config_args(p)
    p.add_argument("--rebuild", action="store_true", help="rebuild the images")
    p.add_argument("--json", action="store_true", help="print describe JSON at the end")

    p = sub.add_parser("down", help="take the lab down")
    p.add_argument("--keep-engine", action="store_true",
                   help="leave the private dockerd running (faster next up)")
    p.add_argument("--stop-engine", action="store_true",
                   help="stop the private dockerd even if this state dir did not start it")
    p.add_argument("--purge", action="store_true", help="also delete certs and accounts")

    sub.add_parser("status", help="is the lab up?")

    p = sub.add_parser("logs", help="container output")
    p.add_argument("roles", nargs="*", metavar="|".join(CONTAINERS), help="default: all")
    p.add_argument("--tail", type=int)
    p.add_argument("-f", "--follow", action="store_true", help="follow (one container)")

    p = sub.add_parser("describe", help="how to reach the lab")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("certs", help="make CA, certificates and accounts only")
    _config_args(p)
    p.add_argument("--force", action="store_true", help="make new ones even if valid")
    return parser


def _print_describe(d: dict) -> None:
    print(f"host:    {d['host']} ({', '.join(d['hosts'])})")
    print(f"domain:  {d['domain']}")
    print(f"CA:      {d['ca_path']}")
    if d.get("docker_host"):
        print(f"docker:  DOCKER_HOST={d['docker_host']}")
    print("ports:")
    for name, port in d["ports"].items():
        kind = d["port_kinds"][name]
        print(f"  {name:<16} {kind.get('host', d['host']) + ':' + str(port):<16} "
              f"{kind['protocol']}, tls={kind['tls']}")
    print(f"resolver: {d['resolver']['host']}:{d['resolver']['port']} (the lab's zones only)")
    paths = d.get("paths", {})
    if paths:
        print("paths:")
        for key, value in paths.items():
            print(f"  {key:<18} {json.dumps(value) if isinstance(value, dict) else value}")
    oauth = d.get("oauth")
    if oauth:
        print(f"oauth:   {oauth['token_url']} (key {oauth['key_path']}; "
              f"{', '.join(oauth['mechanisms'])}; scope {oauth['scope']})")
        for c in oauth["clients"]:
            if c["purpose"] != "valid":
                print(f"  client {c['client_id']:<12} {c['client_secret']:<26} for {c['username']} "
                      f"({c['purpose']})")
        print("  (and one client per account: client_id = the username; secrets in --json)")
    print(f"accounts ({len(d['accounts'])}):")
    for a in d["accounts"]:
        print(f"  {a['username']:<8} {a['password']:<18} {a['address']}")


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "up":
            d = up(_config_from(args), rebuild=args.rebuild)
            if args.json:
                print(json.dumps(d, indent=2))
            return 0
        if args.command == "down":
            down(state_dir(), keep_engine=args.keep_engine, stop_engine=args.stop_engine,
                 purge=args.purge)
            return 0
        if args.command == "status":
            return 0 if status(current_config()) else 1
        if args.command == "logs":
            bad = [r for r in args.roles if r not in CONTAINERS]
            if bad:
                raise ValueError(f"unknown container {bad[0]!r}: {' or '.join(CONTAINERS)}")
            logs(current_config(), args.roles, args.tail, args.follow)
            return 0
        if args.command == "describe":
            d = describe(current_config())
            if args.json:
                print(json.dumps(d, indent=2))
            else:
                _print_describe(d)
            return 0
        if args.command == "certs":
            cfg = _config_from(args)
            made = runtime.ensure_runtime(cfg, force=args.force)
            print(f"{'made' if made['certs'] else 'kept'} certificates in "
                  f"{cfg.runtime_dir / 'certs'}; {'made' if made['users'] else 'kept'} "
                  f"accounts in {cfg.users_path}; {'made' if made['oauth'] else 'kept'} "
                  f"OAuth key and clients in {cfg.oauth_dir}")
            print(f"CA for clients: {cfg.ca_path}")
            return 0
    except (RuntimeError, EngineError, ValueError, DockerException) as exc:
        print(f"lab.docker {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2
