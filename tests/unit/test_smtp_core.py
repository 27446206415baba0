"""smtp_check's core against the embedded lab's real SMTP servers: every tls_mode on every
kind of endpoint, every AUTH mechanism, sending, and the failures."""

import pytest

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check

from .helpers import smtp_params

# (tls_mode, endpoint) -> expected: TLS established?, warning expected?, or the failing stage.
TLS_MATRIX = [
    ('none', 'smtp', {'tls': False}),
    ('none', 'smtp_plain', {'tls': False}),
    ('starttls', 'smtp', {'tls': True}),
    ('starttls', 'smtp_plain', {'stage': 'tls', 'match': 'STARTTLS not offered'}),
    ('starttls_if_available', 'smtp', {'tls': True}),
    ('starttls_if_available', 'smtp_plain', {'tls': False, 'warning': 'does not offer STARTTLS'}),
    ('tls', 'smtp_tls', {'tls': True}),
    ('tls', 'smtp', {'stage': 'tls', 'match': 'TLS handshake failed'}),
    ('tls', 'smtp_badcert', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls', 'smtp_wrongname', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls_if_available', 'smtp_tls', {'tls': True}),
    ('tls_if_available', 'smtp_plain', {'tls': False, 'warning': 'does not speak implicit TLS'}),
    # A bad certificate never lets an *_if_available mode fall back to plaintext.
    ('tls_if_available', 'smtp_badcert', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls_if_available', 'smtp_wrongname', {'stage': 'tls', 'match': 'certificate verification failed'}),
]


@pytest.mark.parametrize('tls_mode,variant,expected', TLS_MATRIX, ids=['%s-%s' % c[:2] for c in TLS_MATRIX])
def test_tls_modes(lab, tls_mode, variant, expected):
    params = smtp_params(lab, variant, tls_mode)
    if 'stage' in expected:
        with pytest.raises(ProbeError) as info:
            smtp_check(params)
        assert info.value.stage == expected['stage']
        assert 'smtp 127.0.0.1:%d' % lab.ports[variant] in info.value.message
        assert expected.get('match', '') in info.value.message
        assert info.value.result['status'] == 'down'
        return
    result = smtp_check(params)
    assert result['status'] == 'up'
    assert result['tls']['established'] is expected['tls']
    assert result['banner']
    assert result['response_time_ms'] > 0
    if expected['tls']:
        assert result['tls']['version'].startswith('TLSv1.')
        assert result['tls']['verified'] is True
        assert 'DNS:localhost' in result['tls']['sans']
        assert result['tls']['days_left'] > 0
        assert 'STARTTLS' not in [f.split()[0] for f in result['features']]
    assert result['tls']['fallback'] is ('warning' in expected)
    if 'warning' in expected:
        assert any(expected['warning'] in w for w in result['warnings'])
    else:
        assert result['warnings'] == []


@pytest.mark.parametrize('mechanism', ['plain', 'login', 'cram-md5', 'auto'])
@pytest.mark.parametrize('variant,tls_mode', [('smtp', 'starttls'), ('smtp_tls', 'tls')])
def test_auth_mechanisms_over_tls(lab, variant, tls_mode, mechanism):
    result = smtp_check(smtp_params(lab, variant, tls_mode, smtp_auth='password', auth_mechanism=mechanism))
    assert result['auth_mechanism_used'] == ('cram-md5' if mechanism == 'auto' else mechanism)
    assert set(result['auth_mechanisms']) >= {'PLAIN', 'LOGIN', 'CRAM-MD5'}


@pytest.mark.parametrize('mechanism', ['plain', 'login', 'cram-md5'])
def test_wrong_password_fails_at_auth(lab, mechanism):
    params = smtp_params(lab, 'smtp', 'starttls', smtp_auth='password', auth_mechanism=mechanism,
                         password='wrong-password-xyz')
    with pytest.raises(ProbeError) as info:
        smtp_check(params)
    assert info.value.stage == 'auth'
    assert '535' in info.value.message
    assert 'wrong-password-xyz' not in repr(info.value.result) + info.value.message


@pytest.mark.parametrize('mechanism', ['plain', 'login'])
def test_cleartext_password_refused_without_tls(lab, mechanism):
    params = smtp_params(lab, 'smtp_plain', 'none', smtp_auth='password', auth_mechanism=mechanism)
    with pytest.raises(ProbeError) as info:
        smtp_check(params)
    assert info.value.stage == 'auth'
    assert 'without TLS' in info.value.message
    assert not any('AUTH' in line for line in info.value.result['transcript'] if line.startswith('C:'))


def test_cleartext_password_allowed_when_asked(lab):
    result = smtp_check(smtp_params(lab, 'smtp_plain', 'none', smtp_auth='password', auth_mechanism='plain',
                                    allow_cleartext_auth=True))
    assert result['auth_mechanism_used'] == 'plain'


def test_auto_picks_challenge_mechanism_without_tls(lab):
    result = smtp_check(smtp_params(lab, 'smtp_plain', 'none', smtp_auth='password'))
    assert result['auth_mechanism_used'] == 'cram-md5'


def test_send_mail_lands_in_mailbox(lab):
    before = len(lab.store.messages('bob'))
    result = smtp_check(smtp_params(lab, 'smtp', 'starttls', smtp_auth='password', send_mail=True,
                                    mail_from='monitor@lab.test', mail_to=['bob@lab.test'],
                                    subject='hello .dot', body='.line starting with a dot\n'))
    assert result['sent'] is True
    assert result['queue_id']
    assert result['data_reply'].startswith('250')
    assert result['message_id'].startswith('<')
    messages = lab.store.messages('bob')
    assert len(messages) == before + 1
    raw = messages[-1].data
    assert result['message_id'].encode() in raw
    assert b'\r\n.line starting with a dot' in raw


def test_send_mail_check_mode_sends_nothing(lab):
    before = len(lab.store.messages('bob'))
    result = smtp_check(smtp_params(lab, 'smtp', 'starttls', send_mail=True, mail_from='monitor@lab.test',
                                    mail_to='bob@lab.test'), check_mode=True)
    assert result['sent'] is False
    assert len(lab.store.messages('bob')) == before


def test_unknown_recipient_fails_at_rcpt(lab):
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'starttls', send_mail=True, mail_from='monitor@lab.test',
                               mail_to='nobody@lab.test'))
    assert info.value.stage == 'rcpt'
    assert '550' in info.value.message


def test_transcript_masks_every_secret(lab):
    for mechanism in ('plain', 'login', 'cram-md5'):
        result = smtp_check(smtp_params(lab, 'smtp', 'starttls', smtp_auth='password', auth_mechanism=mechanism))
        text = '\n'.join(result['transcript'])
        assert lab.accounts['alice'] not in text
        assert '********' in text
        assert 'C: EHLO probe.test' in text


def test_untrusted_ca_without_validation_still_reports_certificate(lab):
    result = smtp_check(smtp_params(lab, 'smtp_badcert', 'tls', validate_certs=False))
    assert result['tls']['established'] is True
    assert result['tls']['verified'] is False
    assert result['tls']['not_after']


def test_ipv6_literal(lab):
    # The lab listens on 127.0.0.1; an IPv6 literal without a listener fails at connect, named in brackets.
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'none', host='::1'))
    assert info.value.stage == 'connect'
    assert '[::1]:' in info.value.message


def test_unresolvable_host_fails_at_resolve(lab):
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'none', host='no-such-host.invalid'))
    assert info.value.stage == 'resolve'


@pytest.mark.parametrize('field,value', [('helo', 'bad\r\nMAIL FROM:<x@y>'), ('helo', 'h\u00e9lo.test'),
                                         ('subject', 'a\nBcc: x@y'), ('mail_from', 'not-an-address')])
def test_bad_input_rejected_before_connecting(lab, field, value):
    params = smtp_params(lab, 'smtp', 'starttls', send_mail=True, mail_from='monitor@lab.test',
                         mail_to=['bob@lab.test'])
    params[field] = value
    with pytest.raises(ProbeError) as info:
        smtp_check(params)
    assert info.value.stage == 'input'
    assert field in info.value.message


def test_thresholds(lab):
    result = smtp_check(smtp_params(lab, 'smtp', 'none', warning_ms=0.0001))
    assert result['status'] == 'warning'
    assert any('warning_ms' in w for w in result['warnings'])
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'none', critical_ms=0.0001))
    assert info.value.stage == 'threshold'
    assert info.value.result['response_time_ms'] > 0
