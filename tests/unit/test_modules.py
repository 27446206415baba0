"""The modules' main() driven with real module arguments against the embedded lab: the JSON
result a playbook sees, the failure shape (msg + stage), no secret anywhere in the output."""

import json

from ansible_collections.mailops.health.plugins.modules import mail_roundtrip, pop3_check, smtp_check

from .helpers import pop3_params, run_module


def test_smtp_check_success(lab, capsys):
    result = run_module(capsys, smtp_check, dict(
        host=lab.host, port=lab.ports['smtp'], tls_mode='starttls', ca_path=lab.ca_path, smtp_auth='password',
        username='alice', password=lab.accounts['alice'], send_mail=True, mail_from='monitor@lab.test',
        mail_to='bob@lab.test, alice@lab.test', transcript=True))
    assert result['_rc'] == 0
    assert result['changed'] is False
    assert result['status'] == 'up'
    assert result['sent'] is True
    assert result['tls']['established'] is True
    assert lab.accounts['alice'] not in result['_raw']


def test_smtp_check_default_mode_is_implicit_tls(lab, capsys):
    result = run_module(capsys, smtp_check, dict(host=lab.host, port=lab.ports['smtp_tls'], ca_path=lab.ca_path))
    assert result['tls']['established'] is True


def test_smtp_check_failure_has_stage_and_no_traceback(lab, capsys):
    result = run_module(capsys, smtp_check, dict(host=lab.host, port=lab.ports['smtp_plain'], tls_mode='starttls',
                                                 ca_path=lab.ca_path))
    assert result['_rc'] == 1
    assert result['failed'] is True
    assert result['stage'] == 'tls'
    assert result['msg'] == 'smtp 127.0.0.1:%d: STARTTLS not offered by the server (tls_mode=starttls)' \
        % lab.ports['smtp_plain']
    assert result['status'] == 'down'
    assert 'Traceback' not in result['_raw']


def test_smtp_check_requires_credentials_for_auth(lab, capsys):
    result = run_module(capsys, smtp_check, dict(host=lab.host, smtp_auth='password', username='alice'))
    assert result['failed'] is True
    assert 'password' in result['msg']


def test_smtp_check_warning_threshold(lab, capsys):
    result = run_module(capsys, smtp_check, dict(host=lab.host, port=lab.ports['smtp'], tls_mode='none',
                                                 warning_ms=0.001))
    assert result['status'] == 'warning'
    assert 'is above warning_ms 0.001' in json.dumps(result['warnings'])


def test_pop3_check_apop(lab, capsys):
    result = run_module(capsys, pop3_check, dict(
        host=lab.host, port=lab.ports['pop3'], ca_path=lab.ca_path, pop3_auth='apop', username='alice',
        password=lab.accounts['alice']))
    assert result['_rc'] == 0
    assert result['changed'] is False
    assert result['tls']['established'] is True  # default starttls_if_available upgraded
    assert result['apop_supported'] is True
    assert isinstance(result['message_count'], int)


def test_pop3_check_wrong_password(lab, capsys):
    result = run_module(capsys, pop3_check, dict(
        host=lab.host, port=lab.ports['pop3_tls'], tls_mode='tls', ca_path=lab.ca_path, pop3_auth='password',
        username='alice', password='wrong-password-xyz', transcript=True))
    assert result['failed'] is True
    assert result['stage'] == 'login'
    assert 'wrong-password-xyz' not in result['_raw']


def test_pop3_check_bad_port_range(lab, capsys):
    result = run_module(capsys, pop3_check, dict(host=lab.host, port=70000))
    assert result['stage'] == 'input'
    assert 'port' in result['msg']


def test_mail_roundtrip(lab, capsys):
    lab.store.clear('bob')
    args = dict(smtp_host=lab.host, smtp_port=lab.ports['smtp'], smtp_tls_mode='starttls', smtp_auth='password',
                smtp_username='alice', smtp_password=lab.accounts['alice'], mail_from='monitor@lab.test',
                mail_to='bob@lab.test', pop3_host=lab.host, pop3_port=lab.ports['pop3'], pop3_tls_mode='starttls',
                pop3_auth='apop', pop3_username='bob', pop3_password=lab.accounts['bob'], ca_path=lab.ca_path,
                connection_interval=0.5, transcript=True)
    result = run_module(capsys, mail_roundtrip, args)
    assert result['_rc'] == 0
    assert result['changed'] is False
    assert result['deleted'] is True
    assert result['total_ms'] > 0
    assert lab.store.messages('bob') == []
    for secret in (lab.accounts['alice'], lab.accounts['bob']):
        assert secret not in result['_raw']


def test_mail_roundtrip_check_mode(lab, capsys):
    lab.store.clear('bob')
    args = dict(smtp_host=lab.host, smtp_port=lab.ports['smtp'], mail_from='monitor@lab.test',
                mail_to='bob@lab.test', pop3_host=lab.host, pop3_port=lab.ports['pop3'], pop3_username='bob',
                pop3_password=lab.accounts['bob'], ca_path=lab.ca_path)
    result = run_module(capsys, mail_roundtrip, args, check_mode=True)
    assert result['_rc'] == 0
    assert result['sent'] is False
    assert lab.store.messages('bob') == []


def test_below_the_python_floor_a_module_fails_with_a_clear_message(lab, capsys, monkeypatch):
    from types import SimpleNamespace

    from ansible_collections.mailops.health.plugins.module_utils import _runner
    monkeypatch.setattr(_runner, 'sys', SimpleNamespace(version_info=(3, 6, 15), executable='/usr/bin/python3.6',
                                                        version='3.6.15 (default)'))
    result = run_module(capsys, pop3_check, pop3_params(lab, 'pop3', 'starttls'))
    assert result['failed'] and result['stage'] == 'input'
    assert result['msg'] == ('mailops.health needs Python 3.7 or newer on the managed node; /usr/bin/python3.6 is '
                             'Python 3.6.15')
