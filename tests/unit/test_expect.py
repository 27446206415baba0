"""Expected refusals (smtp_check expect/expect_stage): a server is healthy also when it refuses
what it must. The check passes when the server refuses at the stage named, fails at stage
expectation when it accepts (or refuses only temporarily), and never sends DATA."""

import pytest

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check
from ansible_collections.mailops.health.plugins.modules import smtp_check as smtp_check_module
from lab.embedded.certs import LabCerts

from .helpers import run_module, smtp_params
from .scripted_server import Script, ScriptedServer, ehlo

CRLF = b'\r\n'


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    return LabCerts(tmp_path_factory.mktemp('expect-certs'))


def scripted(server, **extra):
    params = dict(host='127.0.0.1', port=server.port, tls_mode='none', smtp_auth='none', timeout=5, helo='probe.test',
                  mail_from='probe@outside.test', mail_to=['relay-test@elsewhere.test'], transcript=True)
    params.update(extra)
    return params


def failing(params, stage):
    with pytest.raises(ProbeError) as info:
        smtp_check(params)
    assert info.value.stage == stage, info.value.message
    return info.value


def test_a_refused_relay_passes_and_delivers_nothing(lab):
    before = lab.store.count() if hasattr(lab.store, 'count') else None
    result = smtp_check(smtp_params(lab, 'smtp', 'starttls', expect='reject', mail_from='probe@outside.test',
                                    mail_to=['relay-test@elsewhere.test']))
    assert result['status'] == 'up'
    assert result['expectation'] == {'expect': 'reject', 'stage': 'rcpt', 'accepted': False, 'code': 550,
                                     'reply': result['expectation']['reply'], 'met': True}
    assert 'relay-test@elsewhere.test' in result['expectation']['reply']
    assert not any(line.startswith('C: DATA') for line in result['transcript'])
    if before is not None:
        assert lab.store.count() == before


def test_an_open_relay_fails_at_stage_expectation(certs):
    with ScriptedServer(certs, Script('smtp', plain={'MAIL': b'250 2.1.0 Ok' + CRLF, 'RCPT': b'250 2.1.5 Ok' + CRLF,
                                                     'RSET': b'250 2.0.0 Ok' + CRLF})) as server:
        error = failing(scripted(server, expect='reject'), 'expectation')
    assert 'accepted at stage rcpt' in error.message and 'expect=reject' in error.message
    assert error.result['expectation']['met'] is False and error.result['expectation']['code'] == 250
    assert 'DATA' not in server.verbs('plain')
    assert server.verbs('plain')[-1] == 'RSET'


def test_a_temporary_refusal_is_not_the_refusal_expected(certs):
    with ScriptedServer(certs, Script('smtp', plain={'MAIL': b'250 2.1.0 Ok' + CRLF,
                                                     'RCPT': b'450 4.7.1 Try again later' + CRLF,
                                                     'RSET': b'250 2.0.0 Ok' + CRLF})) as server:
        error = failing(scripted(server, expect='reject'), 'expectation')
    assert 'only temporarily' in error.message and '450' in error.message


def test_a_refusal_before_the_stage_is_not_the_one_looked_for(certs):
    with ScriptedServer(certs, Script('smtp', plain={'MAIL': b'553 5.7.1 Sender rejected' + CRLF})) as server:
        error = failing(scripted(server, expect='reject', expect_stage='rcpt'), 'mail_from')
    assert 'MAIL FROM refused (553' in error.message


def test_a_sender_refused_at_mail_from(certs):
    with ScriptedServer(certs, Script('smtp', plain={'MAIL': b'553 5.7.1 Sender not owned' + CRLF,
                                                     'RSET': b'250 2.0.0 Ok' + CRLF})) as server:
        result = smtp_check(scripted(server, expect='reject', expect_stage='mail_from'))
    assert result['expectation']['met'] and result['expectation']['code'] == 553
    assert 'RCPT' not in server.verbs('plain')


def test_expect_accept_at_rcpt_proves_a_recipient_without_delivering(lab):
    result = smtp_check(smtp_params(lab, 'smtp', 'starttls', expect='accept', expect_stage='rcpt',
                                    mail_from='probe@outside.test', mail_to=[lab.address('alice')]))
    assert result['expectation']['accepted'] and result['expectation']['met']
    assert not any(line.startswith('C: DATA') for line in result['transcript'])
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'starttls', expect='accept', expect_stage='rcpt',
                               mail_from='probe@outside.test', mail_to=['nobody@lab.test']))
    assert info.value.stage == 'expectation' and 'refused at stage rcpt' in info.value.message


# -- AUTH without TLS ----------------------------------------------------------------------------
def test_auth_not_offered_without_tls_is_a_refusal(certs):
    with ScriptedServer(certs, Script('smtp', plain={'EHLO': ehlo('STARTTLS', 'PIPELINING')})) as server:
        result = smtp_check(scripted(server, expect='reject', expect_stage='auth', smtp_auth='password',
                                     username='alice', password='never-sent-password'))
    assert result['expectation'] == {'expect': 'reject', 'stage': 'auth', 'accepted': False, 'code': None,
                                     'reply': 'AUTH not offered', 'met': True}
    assert 'AUTH' not in server.verbs('plain')


def test_auth_refused_with_538_is_a_refusal(certs):
    with ScriptedServer(certs, Script('smtp', plain={'EHLO': ehlo('AUTH PLAIN LOGIN'),
                                                     'AUTH': b'538 5.7.11 Encryption required' + CRLF})) as server:
        result = smtp_check(scripted(server, expect='reject', expect_stage='auth'))
    assert result['expectation']['code'] == 538 and result['expectation']['met']


def test_auth_offered_in_plaintext_fails_and_no_credentials_are_sent(lab):
    # The embedded lab's STARTTLS port takes AUTH before TLS: what the negative check must catch.
    password = lab.accounts['alice']
    error = failing(smtp_params(lab, 'smtp', 'none', expect='reject', expect_stage='auth', smtp_auth='password',
                                allow_cleartext_auth=True), 'expectation')
    assert error.result['expectation']['accepted'] and error.result['expectation']['code'] == 334
    sent = [line for line in error.result['transcript'] if line.startswith('C: ')]
    assert sent[-3:] == ['C: AUTH PLAIN', 'C: *', 'C: RSET']
    assert password not in repr(error.result)


# -- through the module --------------------------------------------------------------------------
def test_module_reports_the_expectation(lab, capsys):
    args = dict(host=lab.host, port=lab.ports['smtp'], tls_mode='starttls', ca_path=lab.ca_path, expect='reject',
                mail_from='probe@outside.test', mail_to=['relay-test@elsewhere.test'])
    result = run_module(capsys, smtp_check_module, args, check_mode=True)
    assert result['_rc'] == 0 and result['expectation']['met'] and not result['changed']


@pytest.mark.parametrize('extra, words', [
    (dict(expect='reject', mail_from=None, mail_to=['x@elsewhere.test']), 'mail_from'),
    (dict(expect='maybe'), 'expect must be accept or reject'),
    (dict(expect='reject', expect_stage='data'), 'expect_stage must be one of'),
])
def test_expect_input_errors(lab, extra, words):
    params = smtp_params(lab, 'smtp', 'starttls', mail_from='probe@outside.test', mail_to=['x@elsewhere.test'])
    params.update(extra)
    error = failing(params, 'input')
    assert words in error.message
