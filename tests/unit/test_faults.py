"""Every fault the embedded lab can inject, through every module it concerns: the module fails
(or, for the benign ones, succeeds) at the stage this table names, says host:port and what the
server did, shows no traceback and no password, and ends within its time bound."""

import socket
import time

import pytest

from ansible_collections.mailops.health.plugins.modules import mail_roundtrip, pop3_check, smtp_check
from lab.embedded import EmbeddedLab

from .helpers import run_module

TIMEOUT = 1
MAX_TRIP_TIME = 2
SLACK = 2

# fault id: (lab faults {variant: [fault]}, SMTP variant, POP3 variant, extra options, expected outcome by module)
# An outcome is a stage with a fragment of the message, or 'ok' (with an optional check on the result).
SMTP = ('smtp_check', 'mail_roundtrip')
POP3 = ('pop3_check', 'mail_roundtrip')


def fail(stage, fragment, modules):
    return dict((m, (stage, fragment)) for m in modules)


FAULTS = {
    # Connection and greeting.
    'refused': ({}, 'closed', 'pop3', {}, fail('connect', 'refused', SMTP)),
    'smtp-silent': ({'smtp': ['silent']}, 'smtp', 'pop3', {}, fail('banner', 'timed out', SMTP)),
    'smtp-slow-banner': ({'smtp': ['slow_banner:5']}, 'smtp', 'pop3', {}, fail('banner', 'timed out', SMTP)),
    'smtp-trickle': ({'smtp': ['trickle']}, 'smtp', 'pop3', {}, fail('banner', 'timed out', SMTP)),
    'smtp-banner-554': ({'smtp': ['banner_554']}, 'smtp', 'pop3', {}, fail('banner', '554 5.3.2', SMTP)),
    'smtp-banner-multiline': ({'smtp': ['banner_multiline']}, 'smtp', 'pop3', {}, dict((m, 'ok') for m in SMTP)),
    'smtp-drop-after-ehlo': ({'smtp': ['drop_after_ehlo']}, 'smtp', 'pop3', {}, fail('helo', 'closed', SMTP)),
    # Transport security.
    'smtp-starttls-454': ({'smtp': ['starttls_454']}, 'smtp', 'pop3', {}, fail('tls', '454 4.7.0', SMTP)),
    'smtp-starttls-last': ({'smtp': ['starttls_last']}, 'smtp', 'pop3', {}, dict((m, 'ok') for m in SMTP)),
    'smtp-garbage-not-tls': ({'smtp': ['garbage']}, 'smtp', 'pop3', {'smtp_tls_mode': 'tls'},
                             fail('tls', 'TLS handshake failed', SMTP)),
    'smtp-expired-cert': ({}, 'smtp_expired', 'pop3', {'smtp_tls_mode': 'tls'}, fail('tls', 'expired', SMTP)),
    'smtp-self-signed': ({}, 'smtp_selfsigned', 'pop3', {'smtp_tls_mode': 'tls'}, fail('tls', 'self-signed', SMTP)),
    'smtp-wrong-name': ({}, 'smtp_wrongname', 'pop3', {'smtp_tls_mode': 'tls'}, fail('tls', 'mismatch', SMTP)),
    # The dialogue.
    'smtp-auth-535': ({'smtp': ['auth_535']}, 'smtp', 'pop3', {}, fail('auth', '535 5.7.8', SMTP)),
    'smtp-mail-451': ({'smtp': ['mail_451']}, 'smtp', 'pop3', {}, fail('mail_from', '451', SMTP)),
    'smtp-mail-550': ({'smtp': ['mail_550']}, 'smtp', 'pop3', {}, fail('mail_from', '550', SMTP)),
    'smtp-rcpt-550': ({'smtp': ['rcpt_550']}, 'smtp', 'pop3', {}, fail('rcpt', '550', SMTP)),
    'smtp-data-552': ({'smtp': ['data_552']}, 'smtp', 'pop3', {}, fail('data', '552', SMTP)),
    'smtp-drop-in-data': ({'smtp': ['drop_in_data']}, 'smtp', 'pop3', {}, fail('data', 'connection', SMTP)),
    'smtp-421-ehlo': ({'smtp': ['421_ehlo']}, 'smtp', 'pop3', {}, fail('helo', '421', SMTP)),
    'smtp-421-starttls': ({'smtp': ['421_starttls']}, 'smtp', 'pop3', {}, fail('tls', '421', SMTP)),
    'smtp-421-auth': ({'smtp': ['421_auth']}, 'smtp', 'pop3', {}, fail('auth', '421', SMTP)),
    'smtp-421-mail': ({'smtp': ['421_mail']}, 'smtp', 'pop3', {}, fail('mail_from', '421', SMTP)),
    'smtp-421-rcpt': ({'smtp': ['421_rcpt']}, 'smtp', 'pop3', {}, fail('rcpt', '421', SMTP)),
    'smtp-421-data': ({'smtp': ['421_data']}, 'smtp', 'pop3', {}, fail('data', '421', SMTP)),
    'smtp-421-quit': ({'smtp': ['421_quit']}, 'smtp', 'pop3', {}, fail('quit', '421', SMTP)),
    # POP3 greeting and security.
    'pop3-silent': ({'pop3': ['silent']}, 'smtp', 'pop3', {}, fail('banner', 'timed out', POP3)),
    'pop3-slow-banner': ({'pop3': ['slow_banner:5']}, 'smtp', 'pop3', {}, fail('banner', 'timed out', POP3)),
    'pop3-trickle': ({'pop3': ['trickle']}, 'smtp', 'pop3', {}, fail('banner', 'timed out', POP3)),
    'pop3-banner-err': ({'pop3': ['banner_err']}, 'smtp', 'pop3', {}, fail('banner', '-ERR', POP3)),
    'pop3-garbage-not-tls': ({'pop3': ['garbage']}, 'smtp', 'pop3', {'pop3_tls_mode': 'tls'},
                             fail('tls', 'TLS handshake failed', POP3)),
    'pop3-expired-cert': ({}, 'smtp', 'pop3_expired', {'pop3_tls_mode': 'tls'}, fail('tls', 'expired', POP3)),
    'pop3-self-signed': ({}, 'smtp', 'pop3_selfsigned', {'pop3_tls_mode': 'tls'}, fail('tls', 'self-signed', POP3)),
    'pop3-stls-err': ({'pop3': ['stls_err']}, 'smtp', 'pop3', {}, fail('tls', '-ERR', POP3)),
    'pop3-no-capa': ({'pop3': ['no_capa']}, 'smtp', 'pop3', {}, dict((m, 'ok') for m in POP3)),
    # POP3 login and mailbox.
    'pop3-user-err': ({'pop3': ['user_err']}, 'smtp', 'pop3', {}, fail('login', 'USER refused', POP3)),
    'pop3-pass-err': ({'pop3': ['pass_err']}, 'smtp', 'pop3', {}, fail('login', 'PASS refused', POP3)),
    'pop3-apop-err': ({'pop3': ['apop_err']}, 'smtp', 'pop3', {'pop3_auth': 'apop'}, fail('login', 'APOP refused', POP3)),
    'pop3-apop-no-timestamp': ({}, 'smtp', 'pop3_noapop', {'pop3_auth': 'apop'},
                               fail('login', 'no APOP timestamp', POP3)),
    'pop3-locked': ({'pop3': ['locked']}, 'smtp', 'pop3', {},
                    {'pop3_check': ('login', '[IN-USE]'), 'mail_roundtrip': ('login', 'stayed locked')}),
    'pop3-locked-briefly': ({'pop3': ['locked:0.5']}, 'smtp', 'pop3', {}, {'mail_roundtrip': 'ok'}),
    'pop3-stat-malformed': ({'pop3': ['stat_malformed']}, 'smtp', 'pop3', {},
                            {'pop3_check': ('stat', 'malformed STAT')}),
    'pop3-no-uidl': ({'pop3': ['no_uidl']}, 'smtp', 'pop3', {}, {'mail_roundtrip': 'ok'}),
    'pop3-no-top': ({'pop3': ['no_top']}, 'smtp', 'pop3', {}, {'mail_roundtrip': 'ok'}),
    'pop3-no-uidl-no-top': ({'pop3': ['no_uidl', 'no_top']}, 'smtp', 'pop3', {}, {'mail_roundtrip': 'ok'}),
    'pop3-retr-truncated': ({'pop3': ['no_top', 'retr_truncated']}, 'smtp', 'pop3', {},
                            {'mail_roundtrip': ('retrieve', 'closed')}),
    'pop3-dele-err': ({'pop3': ['dele_err']}, 'smtp', 'pop3', {}, {'mail_roundtrip': ('delete', 'DELE')}),
    'pop3-quit-err': ({'pop3': ['quit_err']}, 'smtp', 'pop3', {},
                      {'pop3_check': ('quit', 'QUIT refused'), 'mail_roundtrip': ('quit', 'QUIT refused')}),
    'pop3-quit-err-after-dele': ({'pop3': ['quit_err_after_dele']}, 'smtp', 'pop3', {},
                                 {'mail_roundtrip': ('quit', 'the deletion was not committed')}),
    # Delivery.
    'never-arrives': ({'smtp': ['deliver_never']}, 'smtp', 'pop3', {}, {'mail_roundtrip': ('timeout', 'did not arrive')}),
    'arrives-too-late': ({'smtp': ['deliver_late:4']}, 'smtp', 'pop3', {},
                         {'mail_roundtrip': ('timeout', 'did not arrive')}),
    'arrives-twice': ({'smtp': ['deliver_twice']}, 'smtp', 'pop3', {}, {'mail_roundtrip': 'ok'}),
}

CASES = [(fault, module) for fault, spec in FAULTS.items() for module in spec[4]]


def closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def module_args(lab, module, smtp_port, pop3_port, extra):
    alice, bob = lab.accounts['alice'], lab.accounts['bob']
    common = dict(ca_path=lab.ca_path, timeout=TIMEOUT, transcript=True)
    if module == 'smtp_check':
        return dict(common, host=lab.host, port=smtp_port, tls_mode=extra.get('smtp_tls_mode', 'starttls'),
                    smtp_auth='password', auth_mechanism='plain', username='alice', password=alice,
                    send_mail=True, mail_from='monitor@lab.test', mail_to='bob@lab.test')
    if module == 'pop3_check':
        return dict(common, host=lab.host, port=pop3_port, tls_mode=extra.get('pop3_tls_mode', 'starttls'),
                    pop3_auth=extra.get('pop3_auth', 'password'), username='bob', password=bob)
    return dict(common, smtp_host=lab.host, smtp_port=smtp_port, smtp_tls_mode=extra.get('smtp_tls_mode', 'starttls'),
                smtp_auth='password', auth_mechanism='plain', smtp_username='alice', smtp_password=alice,
                mail_from='monitor@lab.test', mail_to='bob@lab.test', pop3_host=lab.host, pop3_port=pop3_port,
                pop3_tls_mode=extra.get('pop3_tls_mode', 'starttls'), pop3_auth=extra.get('pop3_auth', 'password'),
                pop3_username='bob', pop3_password=bob, connection_interval=0.2, max_trip_time=MAX_TRIP_TIME)


MODULES = {'smtp_check': smtp_check, 'pop3_check': pop3_check, 'mail_roundtrip': mail_roundtrip}


@pytest.mark.parametrize('fault,module', CASES, ids=['%s-%s' % case for case in CASES])
def test_fault(fault, module, capsys):
    faults, smtp_variant, pop3_variant, extra, outcomes = FAULTS[fault]
    with EmbeddedLab(faults=faults) as lab:
        smtp_port = closed_port() if smtp_variant == 'closed' else lab.ports[smtp_variant]
        pop3_port = lab.ports[pop3_variant]
        start = time.monotonic()
        result = run_module(capsys, MODULES[module], module_args(lab, module, smtp_port, pop3_port, extra))
        elapsed = time.monotonic() - start
        bound = (MAX_TRIP_TIME if module == 'mail_roundtrip' else TIMEOUT) + SLACK
        assert elapsed < bound, 'took %.1f s' % elapsed
        assert 'Traceback' not in result['_raw']
        for account in ('alice', 'bob'):
            assert lab.accounts[account] not in result['_raw']
        expected = outcomes[module]
        if expected == 'ok':
            assert result['_rc'] == 0, result['msg']
            assert result['status'] in ('up', 'warning')
            if module == 'mail_roundtrip':
                assert lab.store.messages('bob') == []
                assert result['pop3']['copies'] == (2 if fault == 'arrives-twice' else 1)
            return
        stage, fragment = expected
        assert result['_rc'] == 1
        assert result['failed'] is True
        assert result['status'] == 'down'
        assert result['stage'] == stage, result['msg']
        assert fragment in result['msg']
        port = pop3_port if stage in ('login', 'stat', 'retrieve', 'delete') or fault.startswith('pop3') else smtp_port
        if stage != 'timeout':
            assert '127.0.0.1:%d' % port in result['msg']
        assert 'internal error' not in result['msg']
