"""The health gate through ansible-playbook against real Postfix and Dovecot: its checks at once
(one mail_checks task), retries, and the JUnit, Prometheus and Markdown outputs, parsed back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

BIN = Path(sys.executable).parent


def test_gate_against_postfix_and_dovecot(docker_lab, ports, accounts, source_collections, tmp_path):
    host, domain = docker_lab["host"], docker_lab["domain"]
    rt = accounts["rt04"]
    login = {"username": rt["username"], "password": rt["password"]}
    checks = [
        {"name": "submission", "type": "smtp",
         "options": dict(login, host=host, port=ports["submission"], tls_mode="starttls", smtp_auth="password")},
        {"name": "pop3s", "type": "pop3",
         "options": dict(login, host=host, port=ports["pop3s"], tls_mode="tls", pop3_auth="apop")},
        {"name": "imaps", "type": "imap",
         "options": dict(login, host=host, port=ports["imaps"], tls_mode="tls", imap_auth="password", folders=["Junk"])},
        {"name": "round trip imap", "type": "roundtrip", "options": {
            "smtp_host": host, "smtp_port": ports["smtp"], "smtp_tls_mode": "starttls", "mail_from": "monitor@" + domain,
            "mail_to": rt["address"], "receive_protocol": "imap", "imap_host": host, "imap_port": ports["imaps"],
            "imap_tls_mode": "tls", "imap_username": rt["username"], "imap_password": rt["password"]}},
        {"name": "rogue certificate", "type": "imap", "options": {"host": host, "port": ports["imap_badcert"],
                                                                  "tls_mode": "tls"}},
    ]
    outputs = {name: tmp_path / ("gate." + name) for name in ("xml", "prom", "md")}
    variables = {"mail_health_gate_checks": checks,
                 "mail_health_gate_common": {"ca_path": docker_lab["ca_path"], "timeout": 10, "retries": 1,
                                             "retry_delay": 0.5},
                 "mail_health_gate_junit": str(outputs["xml"]), "mail_health_gate_prometheus": str(outputs["prom"]),
                 "mail_health_gate_markdown": str(outputs["md"]), "ansible_python_interpreter": sys.executable}
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    (tmp_path / "gate.yml").write_text("- hosts: localhost\n  connection: local\n  gather_facts: false\n"
                                       "  roles:\n    - role: mailops.health.mail_health_gate\n")
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(source_collections), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    run = subprocess.run([str(BIN / "ansible-playbook"), "gate.yml", "-e", "@vars.json"], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=300, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 2, output  # the rogue certificate fails the gate, after the outputs are written
    assert "1 of 5 mail health checks failed: rogue certificate (imap) at stage tls" in output
    suite, = ET.parse(str(outputs["xml"])).getroot()
    assert (suite.get("tests"), suite.get("failures")) == ("5", "1")
    failure, = [case.find("failure") for case in suite if case.find("failure") is not None]
    assert failure.get("type") == "tls"
    families = {family.name: family for family in text_string_to_metric_families(outputs["prom"].read_text())}
    up = {sample.labels["check"]: sample.value for sample in families["mailops_health_check_up"].samples}
    assert up == {"submission": 1.0, "pop3s": 1.0, "imaps": 1.0, "round trip imap": 1.0, "rogue certificate": 0.0}
    # The failed check was tried twice (retries=1); the ones that passed at once took one try.
    tries = {sample.labels["check"]: sample.value for sample in families["mailops_health_check_tries"].samples}
    assert tries["rogue certificate"] == 2.0 and tries["submission"] == 1.0
    days = {sample.labels["check"]: sample.value for sample in families["mailops_health_certificate_days_left"].samples}
    assert days["imaps"] > 300
    assert "| round trip imap | up | roundtrip |" in outputs["md"].read_text()
    written = output + "".join(path.read_text() for path in outputs.values())
    assert rt["password"] not in written
