"""The fault table for IMAP: every IMAP fault the embedded lab can inject, through imap_check
and through a round trip that receives over IMAP. As in test_faults.py: the stage and a fragment
of the message, host:port, no traceback, no password in any form anywhere in the output, and
within the time bound."""

import json
import re
import time

import pytest

from ansible_collections.mailops.health.plugins.modules import imap_check, mail_roundtrip
from lab.embedded import EmbeddedLab

from .helpers import run_module
from .test_faults import MAX_TRIP_TIME, SLACK, TIMEOUT, random_password, secret_forms, shown_secrets

BOTH = ('imap_check', 'mail_roundtrip')


def fail(stage, fragment, modules=BOTH):
    return dict((m, (stage, fragment)) for m in modules)


def ok(modules=BOTH, warning=None):
    return dict((m, ('ok', warning)) for m in modules)


# fault id: (lab faults {variant: [fault]}, IMAP variant, extra options, expected outcome by module)
FAULTS = {
    # Greeting and transport.
    'silent': ({'imap': ['silent']}, 'imap', {}, fail('banner', 'timed out')),
    'slow-banner': ({'imap': ['slow_banner:5']}, 'imap', {}, fail('banner', 'timed out')),
    'trickle': ({'imap': ['trickle']}, 'imap', {}, fail('banner', 'timed out')),
    'greeting-bye': ({'imap': ['greeting_bye']}, 'imap', {}, fail('banner', 'refused the connection (BYE')),
    'garbage-not-tls': ({'imap': ['garbage']}, 'imap', {'tls_mode': 'tls'}, fail('tls', 'TLS handshake failed')),
    'preauth-skips-starttls': ({'imap': ['preauth']}, 'imap', {}, fail('tls', 'PREAUTH')),
    'preauth-over-tls': ({'imap_tls': ['preauth']}, 'imap_tls', {'tls_mode': 'tls'}, ok(['imap_check'])),
    'inject-after-starttls': ({'imap': ['inject_after_starttls']}, 'imap', {},
                              fail('tls', 'data before the TLS handshake')),
    'expired-cert': ({}, 'imap_expired', {'tls_mode': 'tls'}, fail('tls', 'expired')),
    'self-signed': ({}, 'imap_selfsigned', {'tls_mode': 'tls'}, fail('tls', 'self-signed')),
    'wrong-name': ({}, 'imap_wrongname', {'tls_mode': 'tls'}, fail('tls', 'mismatch')),
    'rogue-ca': ({}, 'imap_badcert', {'tls_mode': 'tls'}, fail('tls', 'certificate verification failed')),
    # Login.
    'login-no': ({'imap': ['login_no']}, 'imap', {'auth_mechanism': 'login'}, fail('login', 'LOGIN refused (NO')),
    'login-bad': ({'imap': ['login_bad']}, 'imap', {'auth_mechanism': 'login'}, fail('login', 'LOGIN refused (BAD')),
    'authenticate-no': ({'imap': ['authenticate_no']}, 'imap', {'auth_mechanism': 'plain'},
                        fail('login', 'AUTHENTICATE refused (NO')),
    # Responses that confuse a client.
    'untagged-before-tagged': ({'imap': ['untagged_before_tagged']}, 'imap', {}, ok()),
    'wrong-tag': ({'imap': ['wrong_tag']}, 'imap', {}, fail('tls', 'reply with tag')),
    'bye-mid-session': ({'imap': ['bye_mid_session']}, 'imap', {}, fail('stat', 'closed the connection', ['imap_check'])),
    # The mailbox (round trips).
    'select-no': ({'imap': ['select_no']}, 'imap', {}, fail('select', 'SELECT refused (NO', ['mail_roundtrip'])),
    'search-bad': ({'imap': ['search_bad']}, 'imap', {}, fail('search', 'UID SEARCH refused (BAD', ['mail_roundtrip'])),
    'literal-lies': ({'imap': ['literal_lies']}, 'imap', {}, fail('retrieve', 'timed out', ['mail_roundtrip'])),
    'literal-short': ({'imap': ['literal_short']}, 'imap', {}, fail('retrieve', 'malformed', ['mail_roundtrip'])),
    'store-no': ({'imap': ['store_no']}, 'imap', {}, fail('delete', 'UID STORE refused (NO', ['mail_roundtrip'])),
    'expunge-no': ({'imap': ['expunge_no']}, 'imap', {}, fail('delete', 'UID EXPUNGE refused (NO', ['mail_roundtrip'])),
    # Benign: the round trip's waits stay under a second here, so IDLE is never entered.
    'idle-never-ends': ({'imap': ['idle_never_ends']}, 'imap', {}, ok(['mail_roundtrip'])),
    'idle-no-push': ({'imap': ['idle_no_push']}, 'imap', {}, ok(['mail_roundtrip'])),
}
CASES = [pytest.param(fault, module, id='%s-%s' % (fault, module)) for fault, spec in FAULTS.items() for module in spec[3]]


def module_args(lab, module, port, extra):
    common = dict(ca_path=lab.ca_path, timeout=TIMEOUT, transcript=True)
    tls_mode = extra.get('tls_mode', 'starttls')
    mechanism = extra.get('auth_mechanism', 'auto')
    if module == 'imap_check':
        return dict(common, host=lab.host, port=port, tls_mode=tls_mode, imap_auth='password', auth_mechanism=mechanism,
                    username='bob', password=lab.accounts['bob'])
    return dict(common, smtp_host=lab.host, smtp_port=lab.ports['smtp'], smtp_tls_mode='starttls', smtp_auth='password',
                auth_mechanism='plain', smtp_username='alice', smtp_password=lab.accounts['alice'],
                mail_from='monitor@lab.test', mail_to='bob@lab.test', receive_protocol='imap', imap_host=lab.host,
                imap_port=port, imap_tls_mode=tls_mode, imap_auth_mechanism=mechanism, imap_username='bob',
                imap_password=lab.accounts['bob'], connection_interval=0.2, max_trip_time=MAX_TRIP_TIME)


@pytest.mark.parametrize('fault,module', CASES)
def test_imap_fault(fault, module, capsys):
    faults, variant, extra, outcomes = FAULTS[fault]
    accounts = {'alice': random_password(), 'bob': random_password()}
    with EmbeddedLab(faults=faults, accounts=accounts) as lab:
        port = lab.ports[variant]
        start = time.monotonic()
        result = run_module(capsys, {'imap_check': imap_check, 'mail_roundtrip': mail_roundtrip}[module],
                            module_args(lab, module, port, extra))
        elapsed = time.monotonic() - start
        bound = (MAX_TRIP_TIME if module == 'mail_roundtrip' else TIMEOUT) + SLACK
        assert elapsed < bound, 'took %.1f s' % elapsed
        assert 'Traceback' not in result['_raw']
        own = accounts if module == 'mail_roundtrip' else {'bob': accounts['bob']}
        shown = shown_secrets(result, secret_forms(own, ()))
        assert not shown, 'secrets shown: %s' % '; '.join(shown)
        expected = outcomes[module]
        if expected[0] == 'ok':
            assert result['_rc'] == 0, result['msg']
            assert result['status'] in ('up', 'warning')
            if expected[1]:
                assert any(re.search(expected[1], json.dumps(w)) for w in result.get('warnings', []))
            if module == 'mail_roundtrip':
                assert lab.store.messages('bob') == []
            return
        stage, fragment = expected
        assert result['_rc'] == 1 and result['status'] == 'down'
        assert result['stage'] == stage, result['msg']
        assert fragment in result['msg'], result['msg']
        assert 'imap 127.0.0.1:%d' % port in result['msg']
        assert 'internal error' not in result['msg']
