"""The mailops.health.mail_health_gate role and playbooks/health_gate.yml, through ansible-playbook
against the embedded lab: one summary table, every check run even when one fails, the play failing
with the failing checks and why, bad input refused before anything runs, no password in the output.
"""

from __future__ import annotations

import json
import socket
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.mailops.health.plugins.module_utils import _args
from ansible_collections.mailops.health.plugins.modules import imap_check, mail_roundtrip, pop3_check, smtp_check

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / 'roles' / 'mail_health_gate'
BIN = Path(sys.executable).parent


class Captured(Exception):
    pass


def module_options(module, monkeypatch):
    """The option names a module's main() gives AnsibleModule."""
    seen = {}

    def capture(argument_spec, **_kwargs):
        seen.update(argument_spec)
        raise Captured()

    monkeypatch.setattr(module, 'AnsibleModule', capture)
    with pytest.raises(Captured):
        module.main()
    return set(seen)


@pytest.mark.parametrize('check_type, module', [('smtp', smtp_check), ('pop3', pop3_check), ('imap', imap_check),
                                                ('roundtrip', mail_roundtrip)])
def test_role_knows_exactly_the_options_of_each_module(check_type, module, monkeypatch):
    known = yaml.safe_load((ROLE / 'vars' / 'main.yml').read_text())
    role_options = set(known['mail_health_gate_shared_options']) | set(known['mail_health_gate_type_options'][check_type])
    assert role_options == module_options(module, monkeypatch)


def test_one_task_runs_every_check():
    """The checks go, options and all, to one mailops.health.mail_checks task: nothing is dropped."""
    tasks = yaml.safe_load((ROLE / 'tasks' / 'main.yml').read_text())
    runs = [t for t in tasks if any(key.startswith('mailops.health.') for key in t)]
    assert [next(key for key in t if key.startswith('mailops.health.')) for t in runs] == ['mailops.health.mail_checks']
    assert "check.type: check.options" in runs[0]['mailops.health.mail_checks']['checks']


def test_common_options_are_the_shared_ones():
    specs = yaml.safe_load((ROLE / 'meta' / 'argument_specs.yml').read_text())
    common = specs['argument_specs']['main']['options']['mail_health_gate_common']['options']
    assert set(common) == set(_args.common())


def play(source_collections, tmp_path, playbook, extra_vars, *args):
    vars_file = tmp_path / 'vars.json'
    vars_file.write_text(json.dumps(dict(extra_vars, ansible_python_interpreter=sys.executable)))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(source_collections), ANSIBLE_NOCOLOR='1', ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='0', PATH='%s:%s' % (BIN, os.environ['PATH']))
    run = subprocess.run([str(BIN / 'ansible-playbook'), str(playbook), '-e', '@%s' % vars_file] + list(args),
                         cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)
    return run, run.stdout + run.stderr


def gate_playbook(tmp_path):
    path = tmp_path / 'gate.yml'
    path.write_text('''
- hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: mailops.health.mail_health_gate
''')
    return path


def checks(lab, bad_password=False):
    host = lab.host
    pop3_password = 'not-the-password-42' if bad_password else lab.accounts['bob']
    return [
        {'name': 'submission', 'type': 'smtp', 'thresholds': {'min_cert_days': 1},
         'options': {'host': host, 'port': lab.ports['smtp'], 'tls_mode': 'starttls', 'smtp_auth': 'password',
                     'username': 'alice', 'password': lab.accounts['alice']}},
        {'name': 'plain smtp', 'type': 'smtp',
         'options': {'host': host, 'port': lab.ports['smtp_plain'], 'tls_mode': 'starttls_if_available'}},
        {'name': 'pop3 apop', 'type': 'pop3',
         'options': {'host': host, 'port': lab.ports['pop3_tls'], 'tls_mode': 'tls', 'pop3_auth': 'apop',
                     'username': 'bob', 'password': pop3_password}},
        {'name': 'bad certificate', 'type': 'pop3',
         'options': {'host': host, 'port': lab.ports['pop3_badcert'], 'tls_mode': 'tls_if_available'}},
        {'name': 'round trip', 'type': 'roundtrip',
         'options': {'smtp_host': host, 'smtp_port': lab.ports['smtp'], 'smtp_tls_mode': 'starttls',
                     'mail_from': 'alice@%s' % lab.describe()['domain'], 'mail_to': lab.address('rt01'),
                     'pop3_host': host, 'pop3_port': lab.ports['pop3'], 'pop3_tls_mode': 'starttls', 'pop3_auth': 'apop',
                     'pop3_username': 'rt01', 'pop3_password': lab.accounts['rt01'], 'connection_interval': 0.2}},
    ]


def summary(stdout):
    """The summary lines of the debug task (JSON strings in the default callback's output)."""
    start = stdout.index('"CHECK ')
    return [json.loads(line.strip().rstrip(',')) for line in stdout[start:].splitlines()[:8] if line.strip().startswith('"')]


def test_gate_reports_every_check_and_fails_with_the_failing_ones(lab, source_collections, tmp_path):
    variables = {'mail_health_gate_checks': checks(lab)[:2] + checks(lab)[3:], 'mail_health_gate_common': {'ca_path': lab.ca_path}}
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path), variables, '-v')
    assert run.returncode == 2, output
    lines = summary(run.stdout)
    assert lines[0].split()[:3] == ['CHECK', 'RESULT', 'TYPE']
    column = lines[0].index('RESULT')
    rows = dict((line[:column].strip(), line[column:].split()) for line in lines[1:-1])
    assert rows['submission'][:2] == ['up', 'smtp']
    assert rows['plain smtp'][:2] == ['warning', 'smtp'] and 'continued without TLS' in lines[2]
    assert rows['bad certificate'][:2] == ['DOWN', 'pop3'] and 'tls: pop3 ' in lines[3]
    assert rows['round trip'][:2] == ['up', 'roundtrip'] and 'mail arrived after' in lines[4]
    assert lines[-1] == '4 checks: 2 up, 1 warning, 1 down'
    assert '1 of 4 mail health checks failed: bad certificate (pop3) at stage tls: pop3 ' in output
    assert 'certificate verification failed' in output
    for password in lab.accounts.values():
        assert password not in output
    assert lab.store.messages('rt01') == []


def test_gate_fails_on_a_wrong_password_without_showing_it(lab, source_collections, tmp_path):
    variables = {'mail_health_gate_checks': checks(lab, bad_password=True)[2:3], 'mail_health_gate_common': {'ca_path': lab.ca_path}}
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path), variables, '-vvv')
    assert run.returncode == 2, output
    assert 'pop3 apop (pop3) at stage login' in output
    assert 'not-the-password-42' not in output


def test_gate_can_only_report(lab, source_collections, tmp_path):
    variables = {'mail_health_gate_checks': checks(lab)[3:4], 'mail_health_gate_fail': False,
                 'mail_health_gate_common': {'ca_path': lab.ca_path}}
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path), variables)
    assert run.returncode == 0, output
    assert '1 checks: 0 up, 0 warning, 1 down' in output


def test_certificate_threshold_fails_a_working_check(lab, source_collections, tmp_path):
    check = dict(checks(lab)[0], thresholds={'min_cert_days': 3650})
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path),
                       {'mail_health_gate_checks': [check], 'mail_health_gate_common': {'ca_path': lab.ca_path}})
    assert run.returncode == 2, output
    assert 'submission (smtp) at stage certificate: smtp 127.0.0.1:' in output
    assert 'fewer than cert_critical_days 3650' in output


def test_certificate_warning_days_make_a_warning_that_says_why(lab, source_collections, tmp_path):
    check = dict(checks(lab)[0], thresholds={'cert_warning_days': 3650})
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path),
                       {'mail_health_gate_checks': [check], 'mail_health_gate_common': {'ca_path': lab.ca_path}})
    assert run.returncode == 0, output
    assert 'fewer than cert_warning_days 3650' in output
    assert 'slower than warning_ms' not in output


@pytest.mark.parametrize('bad, message', [
    ({'name': 'x', 'type': 'ftp', 'options': {'host': 'h'}}, 'value of type must be one of: smtp, pop3, imap, roundtrip'),
    ({'name': 'x', 'type': 'smtp', 'options': {'host': 'h', 'prot': 25}}, "check 'x' (smtp) has options the module does not know: prot"),
    ({'type': 'smtp', 'options': {'host': 'h'}}, 'missing required arguments: name'),
    ({'name': 'x', 'type': 'smtp', 'options': {'host': 'h'}, 'thresholds': {'min_days': 3}}, 'thresholds.min_days'),
])
def test_bad_input_is_refused_before_any_check_runs(lab, source_collections, tmp_path, bad, message):
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path), {'mail_health_gate_checks': [bad]})
    assert run.returncode == 2, output
    assert message in output
    assert 'Run the SMTP checks' not in output


def test_duplicate_names_are_refused(lab, source_collections, tmp_path):
    check = checks(lab)[1]
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path), {'mail_health_gate_checks': [check, check]})
    assert run.returncode == 2, output
    assert "duplicate name 'plain smtp'" in output


def test_health_gate_playbook_takes_its_checks_from_the_inventory(lab, source_collections, tmp_path):
    """health_checks in group_vars replaces the three standard checks."""
    (tmp_path / 'group_vars').mkdir()
    (tmp_path / 'group_vars' / 'probes.yml').write_text(yaml.safe_dump({'health_checks': checks(lab)[:2],
                                                                        'health_ca_path': lab.ca_path}))
    (tmp_path / 'hosts.ini').write_text('[probes]\nprobe1 ansible_connection=local\n')
    run, output = play(source_collections, tmp_path, ROOT / 'playbooks' / 'health_gate.yml', {'health_gate_hosts': 'probes'},
                       '-i', str(tmp_path / 'hosts.ini'))
    assert run.returncode == 0, output
    lines = summary(run.stdout)
    column = lines[0].index('RESULT')
    assert [line[:column].strip() for line in lines[1:-1]] == ['submission', 'plain smtp']
    assert lines[-1] == '2 checks: 1 up, 1 warning, 0 down'


def test_post_deploy_verify_playbook(lab, source_collections, tmp_path):
    ports = {'smtp': lab.ports['smtp'], 'submission': lab.ports['smtp'], 'smtps': lab.ports['smtp_tls'],
             'pop3': lab.ports['pop3'], 'pop3s': lab.ports['pop3_tls']}
    variables = {'post_deploy_host': lab.host, 'post_deploy_ports': ports, 'post_deploy_ca_path': lab.ca_path,
                 'post_deploy_user': 'rt02', 'post_deploy_address': lab.address('rt02'),
                 'post_deploy_password': lab.accounts['rt02'], 'post_deploy_wait': 5}
    run, output = play(source_collections, tmp_path, ROOT / 'playbooks' / 'post_deploy_verify.yml', variables)
    assert run.returncode == 0, output
    lines = summary(run.stdout)
    assert lines[-1] == '6 checks: 6 up, 0 warning, 0 down', output
    assert lab.store.messages('rt02') == []
    # A port that stays closed fails the play at the port check, before any login is tried.
    with socket.socket() as closed:
        closed.bind(('127.0.0.1', 0))
        variables['post_deploy_ports'] = dict(ports, pop3s=closed.getsockname()[1])
        variables['post_deploy_wait'] = 1
        run, output = play(source_collections, tmp_path, ROOT / 'playbooks' / 'post_deploy_verify.yml', variables)
    assert run.returncode == 2, output
    assert 'The mail ports are open' in output and 'Timeout when waiting for 127.0.0.1:' in output
    assert 'Run the checks' not in output
    assert lab.accounts['rt02'] not in output


def test_post_deploy_restarts_once_on_a_failed_gate(lab, source_collections, tmp_path):
    """With post_deploy_restart, a failed gate restarts those services once (here one that does
    not exist, so the restart itself fails) instead of failing at once."""
    ports = {'smtp': lab.ports['smtp'], 'submission': lab.ports['smtp'], 'smtps': lab.ports['smtp_tls'],
             'pop3': lab.ports['pop3'], 'pop3s': lab.ports['pop3_badcert']}
    variables = {'post_deploy_host': lab.host, 'post_deploy_ports': ports, 'post_deploy_ca_path': lab.ca_path,
                 'post_deploy_user': 'rt02', 'post_deploy_address': lab.address('rt02'),
                 'post_deploy_password': lab.accounts['rt02'], 'post_deploy_wait': 5}
    run, output = play(source_collections, tmp_path, ROOT / 'playbooks' / 'post_deploy_verify.yml', variables)
    assert run.returncode == 2 and 'Fail at once when no recovery is configured' in output, output
    assert 'Restart the mail services once' not in output
    variables['post_deploy_restart'] = ['mailops-health-no-such-service']
    run, output = play(source_collections, tmp_path, ROOT / 'playbooks' / 'post_deploy_verify.yml', variables)
    assert run.returncode == 2
    assert 'Restart the mail services once' in output and 'mailops-health-no-such-service' in output
    assert lab.accounts['rt02'] not in output


def test_gate_writes_junit_prometheus_and_markdown(lab, source_collections, tmp_path):
    import xml.etree.ElementTree as ET

    from prometheus_client.parser import text_string_to_metric_families
    outputs = dict(junit=tmp_path / 'gate.xml', prometheus=tmp_path / 'gate.prom', markdown=tmp_path / 'gate.md')
    variables = {'mail_health_gate_checks': checks(lab)[:2] + checks(lab)[3:],
                 'mail_health_gate_common': {'ca_path': lab.ca_path},
                 'mail_health_gate_junit': str(outputs['junit']), 'mail_health_gate_prometheus': str(outputs['prometheus']),
                 'mail_health_gate_markdown': str(outputs['markdown'])}
    run, output = play(source_collections, tmp_path, gate_playbook(tmp_path), variables)
    assert run.returncode == 2, output  # the gate fails (bad certificate), after writing the files
    suites = ET.parse(str(outputs['junit'])).getroot()
    suite, = suites
    assert (suite.get('tests'), suite.get('failures')) == ('4', '1')
    cases = dict((case.get('name'), case) for case in suite)
    assert cases['submission'].get('classname') == 'mailops.health.smtp' and cases['submission'].find('failure') is None
    failure = cases['bad certificate'].find('failure')
    assert failure.get('type') == 'tls' and 'certificate verification failed' in failure.get('message')
    families = dict((family.name, family) for family in text_string_to_metric_families(outputs['prometheus'].read_text()))
    up = dict((sample.labels['check'], sample.value) for sample in families['mailops_health_check_up'].samples)
    assert up == {'submission': 1.0, 'plain smtp': 1.0, 'bad certificate': 0.0, 'round trip': 1.0}
    status = dict((sample.labels['check'], sample.value) for sample in families['mailops_health_check_status'].samples)
    assert status['plain smtp'] == 1.0 and status['bad certificate'] == 2.0
    assert families['mailops_health_check_up'].samples[0].labels['port'] == str(lab.ports['smtp'])
    trip, = families['mailops_health_roundtrip_trip_seconds'].samples
    assert trip.labels['check'] == 'round trip' and 0 < trip.value < 10
    assert families['mailops_health_last_run_timestamp_seconds'].samples[0].value > 1.7e9
    markdown = outputs['markdown'].read_text()
    assert markdown.startswith('| check | result | type |') and '| bad certificate | **DOWN** | pop3 |' in markdown
    assert markdown.rstrip().endswith('4 checks: 2 up, 1 warning, 1 down')
    written = ''.join(path.read_text() for path in outputs.values())
    for password in lab.accounts.values():
        assert password not in written
