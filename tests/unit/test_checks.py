"""mail_checks: any mix of SMTP, POP3, IMAP checks and round trips in one task, in parallel, through
main() against the embedded lab."""

import threading
import time

import pytest

from ansible_collections.mailops.health.plugins.module_utils import _batch
from ansible_collections.mailops.health.plugins.modules import mail_checks

from .helpers import run_module


def gate(lab, bob='bob'):
    alice = dict(username='alice', password=lab.accounts['alice'])
    return [
        dict(name='smtp starttls',
             smtp=dict(alice, host=lab.host, port=lab.ports['smtp'], tls_mode='starttls', smtp_auth='password')),
        dict(name='pop3 apop',
             pop3=dict(alice, host=lab.host, port=lab.ports['pop3'], tls_mode='starttls', pop3_auth='apop')),
        dict(name='imap login',
             imap=dict(alice, host=lab.host, port=lab.ports['imap'], tls_mode='starttls', imap_auth='password',
                       folders=['Junk'])),
        dict(name='round trip pop3', roundtrip=dict(
            smtp_host=lab.host, smtp_port=lab.ports['smtp'], smtp_tls_mode='starttls', mail_from='monitor@lab.test',
            mail_to=lab.address(bob), pop3_host=lab.host, pop3_port=lab.ports['pop3'], pop3_tls_mode='starttls',
            pop3_auth='apop', pop3_username=bob, pop3_password=lab.accounts[bob], connection_interval=0.5)),
        dict(name='round trip imap', roundtrip=dict(
            smtp_host=lab.host, smtp_port=lab.ports['smtp'], smtp_tls_mode='starttls', mail_from='monitor@lab.test',
            mail_to=lab.address('rt01'), receive_protocol='imap', imap_host=lab.host, imap_port=lab.ports['imap'],
            imap_tls_mode='starttls', imap_username='rt01', imap_password=lab.accounts['rt01'], connection_interval=0.5)),
    ]


def assert_no_secret(lab, text):
    for password in lab.accounts.values():
        assert password not in text


def test_a_mix_of_checks_in_one_task(lab, capsys):
    for user in ('bob', 'rt01'):
        lab.store.clear(user)
    result = run_module(capsys, mail_checks, dict(defaults=dict(ca_path=lab.ca_path, timeout=10), checks=gate(lab)))
    assert result['_rc'] == 0, result['_raw']
    assert [(r['index'], r['name'], r['type'], r['ok'], r['status']) for r in result['results']] == [
        (0, 'smtp starttls', 'smtp', True, 'up'), (1, 'pop3 apop', 'pop3', True, 'up'),
        (2, 'imap login', 'imap', True, 'up'), (3, 'round trip pop3', 'roundtrip', True, 'up'),
        (4, 'round trip imap', 'roundtrip', True, 'up')]
    smtp, pop3, imap, trip_pop3, trip_imap = result['results']
    assert smtp['auth_mechanism_used'] and smtp['tls']['established']
    assert pop3['apop_supported'] and imap['folder']['name'] == 'INBOX' and 'Junk' in imap['folders']
    assert trip_pop3['deleted'] and trip_imap['folder'] == 'INBOX'
    assert (result['ok'], result['failed_count'], result['changed']) == (5, 0, False)
    assert_no_secret(lab, result['_raw'])


def test_checks_run_side_by_side_and_one_mailbox_at_a_time(lab, capsys, monkeypatch):
    """Up to parallel checks at once; POP3 logins to one mailbox one after another."""
    lock = threading.Lock()
    state = {'running': 0, 'most': 0, 'spans': []}

    def recorded(run):
        def wrapper(params, check_mode):
            with lock:
                state['running'] += 1
                state['most'] = max(state['most'], state['running'])
            start = time.monotonic()
            try:
                time.sleep(0.05)
                return run(params, check_mode)
            finally:
                with lock:
                    state['running'] -= 1
                    state['spans'].append((params.get('username'), start, time.monotonic()))
        return wrapper

    monkeypatch.setattr(_batch, 'KINDS', dict((kind, (validate, recorded(run)))
                                              for kind, (validate, run) in _batch.KINDS.items()))
    pop3 = dict(host=lab.host, port=lab.ports['pop3'], tls_mode='starttls', pop3_auth='apop', username='alice',
                password=lab.accounts['alice'])
    checks = ([dict(name='smtp %d' % n, smtp=dict(host=lab.host, port=lab.ports['smtp'], tls_mode='starttls'))
               for n in range(6)] + [dict(name='pop3 %d' % n, pop3=pop3) for n in range(3)])
    result = run_module(capsys, mail_checks, dict(defaults=dict(ca_path=lab.ca_path), checks=checks, parallel=4))
    assert result['_rc'] == 0, result['_raw']
    assert state['most'] == 4
    logins = sorted((start, end) for user, start, end in state['spans'] if user == 'alice')
    assert len(logins) == 3 and all(a[1] <= b[0] for a, b in zip(logins, logins[1:]))


def test_invalid_checks_fail_naming_them_before_anything_is_sent(lab, capsys):
    lab.store.clear('bob')
    checks = gate(lab)
    del checks[0]['smtp']['host']
    checks[3]['roundtrip']['max_trip_time'] = 0
    checks[4]['name'] = checks[2]['name']
    result = run_module(capsys, mail_checks, dict(checks=checks))
    assert result['_rc'] == 1 and result['stage'] == 'input'
    assert 'checks[0] (smtp starttls): missing required arguments: host' in result['msg']
    assert 'checks[4] (imap login): the name is used twice' in result['msg']
    assert 'results' not in result and lab.store.messages('bob') == []
    result = run_module(capsys, mail_checks, dict(checks=gate(lab)[:3] + [dict(gate(lab)[3], roundtrip=dict(
        gate(lab)[3]['roundtrip'], max_trip_time=0))]))
    assert result['stage'] == 'input' and 'checks[3]: max_trip_time must be between 1 and 3600, got 0' in result['msg']
    assert_no_secret(lab, result['_raw'])


def test_a_check_has_exactly_one_type(lab, capsys):
    both = dict(name='two', smtp=dict(host=lab.host), pop3=dict(host=lab.host))
    result = run_module(capsys, mail_checks, dict(checks=[both]))
    assert result['_rc'] == 1 and 'mutually exclusive' in result['msg']
    result = run_module(capsys, mail_checks, dict(checks=[dict(name='none')]))
    assert result['_rc'] == 1 and 'one of the following is required' in result['msg']


def test_failures_and_fail_on(lab, capsys):
    checks = gate(lab)[:3]
    checks[1]['pop3']['password'] = 'Wrong-password-for-the-gate-1'
    result = run_module(capsys, mail_checks, dict(defaults=dict(ca_path=lab.ca_path), checks=checks))
    assert result['_rc'] == 1 and result['stage'] == 'login'
    assert result['msg'].startswith('1 of 3 checks failed (fail_on=any): checks[1] pop3 apop (pop3) at stage login: ')
    assert [r['ok'] for r in result['results']] == [True, False, True]
    assert 'Wrong-password-for-the-gate-1' not in result['_raw']
    result = run_module(capsys, mail_checks, dict(defaults=dict(ca_path=lab.ca_path), checks=checks, fail_on='none'))
    assert result['_rc'] == 0 and result['failed_count'] == 1


def test_check_mode_sends_nothing(lab, capsys):
    lab.store.clear('bob')
    result = run_module(capsys, mail_checks, dict(defaults=dict(ca_path=lab.ca_path), checks=gate(lab)[3:4]),
                        check_mode=True)
    assert result['_rc'] == 0 and result['results'][0]['sent'] is False
    assert lab.store.messages('bob') == []


@pytest.mark.parametrize('kind,option,value', [
    ('pop3', 'password', 'x\r\nDELE 1'), ('smtp', 'helo', 'probe.test\r\nRSET'), ('imap', 'host', '127.0.0.1\0.evil'),
    ('roundtrip', 'subject_prefix', 'a\u2028b'), ('imap', 'folder', 'INBOX\r\nA1 LOGOUT'),
])
def test_hostile_values_in_a_check_send_nothing(lab, capsys, kind, option, value):
    """A check's options pass the same input rule as its module's: stage input, nothing sent."""
    from .test_hardening import Listener
    listener = Listener()
    try:
        checks = gate(lab)
        check = next(c for c in checks if kind in c)
        for key in ('port', 'smtp_port', 'pop3_port', 'imap_port'):
            if key in check[kind]:
                check[kind][key] = listener.port
        check[kind][option] = value
        result = run_module(capsys, mail_checks, dict(checks=[check]))
        assert result['_rc'] == 1 and result['stage'] == 'input', result['msg']
        assert option in result['msg'] and 'internal' not in result['msg']
        assert listener.connections == 0
    finally:
        listener.close()
