"""The modules run through Ansible itself, with the collection installed from the tarball that
`ansible-galaxy collection build` makes, on the system Python when there is one (no pip packages
there: the stdlib-only promise), against the embedded lab."""

import json
import os
import subprocess
import sys
from pathlib import Path

from lab.playbook_vars import playbook_vars

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# A Python with nothing but the standard library runs the modules, as on a bare managed node.
MANAGED_PYTHON = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable


def ansible_playbook(installed_collections, tmp_path, playbook, extra_vars):
    vars_file = tmp_path / 'vars.json'
    vars_file.write_text(json.dumps(dict(extra_vars, ansible_python_interpreter=MANAGED_PYTHON)))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed_collections), ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0', PATH='%s:%s' % (BIN, os.environ['PATH']))
    # Run from the temporary directory so nothing resolves the checkout's own tree.
    return subprocess.run([str(BIN / 'ansible-playbook'), str(playbook), '-e', '@%s' % vars_file],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300, check=False)


def test_health_gate_playbook(lab, installed_collections, tmp_path):
    lab.store.clear('bob')
    variables = playbook_vars(lab.describe())
    variables['health_smtp_port'] = lab.ports['smtp']
    run = ansible_playbook(installed_collections, tmp_path, ROOT / 'playbooks' / 'health_gate.yml', variables)
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'failed=0' in run.stdout
    assert 'smtp_check      up' in run.stdout
    assert 'pop3_check      up' in run.stdout
    assert 'mail_roundtrip  up' in run.stdout
    assert lab.store.messages('bob') == []
    for account in lab.describe()['accounts']:
        assert account['password'] not in run.stdout + run.stderr


def test_failures_through_ansible(lab, installed_collections, tmp_path):
    playbook = tmp_path / 'failures.yml'
    playbook.write_text('''
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: STARTTLS required where it is not offered
      mailops.health.smtp_check:
        host: "{{ lab.host }}"
        port: "{{ lab.ports.smtp_plain }}"
        tls_mode: starttls
      register: no_starttls
      ignore_errors: true
    - name: Untrusted certificate on POP3 over TLS
      mailops.health.pop3_check:
        host: "{{ lab.host }}"
        port: "{{ lab.ports.pop3_badcert }}"
        tls_mode: tls_if_available
        ca_path: "{{ lab.ca_path }}"
      register: bad_cert
      ignore_errors: true
    - name: Wrong APOP password, in check mode
      mailops.health.pop3_check:
        host: "{{ lab.host }}"
        port: "{{ lab.ports.pop3 }}"
        ca_path: "{{ lab.ca_path }}"
        pop3_auth: apop
        username: alice
        password: not-the-password-42
      check_mode: true
      register: wrong_password
      ignore_errors: true
    - name: The failures say where and why
      ansible.builtin.assert:
        that:
          - no_starttls is failed
          - no_starttls.stage == 'tls'
          - "'STARTTLS not offered' in no_starttls.msg"
          - bad_cert is failed
          - bad_cert.stage == 'tls'
          - "'certificate verification failed' in bad_cert.msg"
          - wrong_password is failed
          - wrong_password.stage == 'login'
          - wrong_password is not changed
''')
    run = ansible_playbook(installed_collections, tmp_path, playbook, {'lab': lab.describe()})
    assert run.returncode == 0, run.stdout + run.stderr
    assert 'Traceback' not in run.stdout + run.stderr
    assert 'not-the-password-42' not in run.stdout + run.stderr


def test_ansible_doc_renders(installed_collections):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(installed_collections))
    for module in ('smtp_check', 'pop3_check', 'mail_roundtrip'):
        run = subprocess.run([str(BIN / 'ansible-doc'), 'mailops.health.%s' % module], env=env,
                             capture_output=True, text=True, check=False)
        assert run.returncode == 0, run.stderr
        assert 'tls_mode' in run.stdout
        assert 'ERROR' not in run.stderr
