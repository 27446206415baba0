"""OAuth 2.0 logins (SASL XOAUTH2 and OAUTHBEARER) in the core for SMTP AUTH, POP3 AUTH and IMAP
AUTHENTICATE, against the embedded lab's servers, which verify the lab's JWTs: valid, expired,
wrong-scope and malformed tokens, the providers' JSON error challenge in the failure message, TLS
required whatever allow_cleartext_auth says, and the token in no output in any form."""

import base64

import pytest

from ansible_collections.mailops.health.plugins.module_utils._imap import imap_check
from ansible_collections.mailops.health.plugins.module_utils._oauth import initial_response
from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check
from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check
from lab.embedded import EmbeddedLab, oauth

from .helpers import common, roundtrip_params

USER = 'alice'
MECHANISMS = ('xoauth2', 'oauthbearer')


@pytest.fixture(scope='module')
def olab():
    with EmbeddedLab(host='127.0.0.1', oauth_key=oauth.make_key()) as lab:
        yield lab


@pytest.fixture(scope='module')
def echo_lab():
    """Servers that quote the token back in their final refusal (a leak the core must mask)."""
    faults = {'smtp_tls': ['oauth_echo_token'], 'pop3_tls': ['oauth_echo_token'], 'imap_tls': ['oauth_echo_token']}
    with EmbeddedLab(host='127.0.0.1', oauth_key=oauth.make_key(), faults=faults) as lab:
        yield lab


def params_for(lab, protocol, mechanism, token, **extra):
    variant = {'smtp': 'smtp_tls', 'pop3': 'pop3_tls', 'imap': 'imap_tls'}[protocol]
    params = common(lab, host=lab.host, port=lab.ports[variant], tls_mode='tls', username=USER, password=None,
                    oauth2_token=token, helo='probe.test')
    if protocol == 'smtp':
        params.update(smtp_auth='oauth2', auth_mechanism=[mechanism])
    elif protocol == 'pop3':
        params.update(pop3_auth=mechanism)
    else:
        params.update(imap_auth='oauth2', auth_mechanism=mechanism)
    params.update(extra)
    return params


CHECKS = {'smtp': smtp_check, 'pop3': pop3_check, 'imap': imap_check}
STAGE = {'smtp': 'auth', 'pop3': 'login', 'imap': 'login'}
CASES = [(protocol, mechanism) for protocol in CHECKS for mechanism in MECHANISMS]


def token_forms(lab, protocol, token):
    """Every form the client puts the token in on the wire."""
    port = lab.ports[{'smtp': 'smtp_tls', 'pop3': 'pop3_tls', 'imap': 'imap_tls'}[protocol]]
    forms = [token, base64.b64encode(token.encode()).decode()]
    for mechanism in ('XOAUTH2', 'OAUTHBEARER'):
        for host in (lab.host, 'localhost'):
            forms.append(initial_response(mechanism, USER, token, host, port))
    return forms


def assert_no_token(lab, protocol, token, *outputs):
    text = repr(outputs)
    for form in token_forms(lab, protocol, token):
        assert form not in text
        assert form[:24] not in text, 'a piece of the token is shown'


@pytest.mark.parametrize('protocol, mechanism', CASES)
def test_a_valid_token_logs_in(olab, protocol, mechanism):
    token = olab.issue_token(USER)
    result = CHECKS[protocol](params_for(olab, protocol, mechanism, token))
    assert result['status'] == 'up'
    assert result['auth_mechanism_used'] == mechanism
    assert any('C: ' in line and '********' in line for line in result['transcript'])
    assert_no_token(olab, protocol, token, result)


@pytest.mark.parametrize('protocol, mechanism', CASES)
@pytest.mark.parametrize('kind, said', [('expired', 'status'), ('wrong_scope', 'scope mail')])
def test_a_refused_token_says_what_the_server_said(olab, protocol, mechanism, kind, said):
    if kind == 'expired':
        token = oauth.issue(olab.oauth_key, USER, lifetime=-60)
    else:
        token = oauth.issue(olab.oauth_key, USER, scope='calendar')
    with pytest.raises(ProbeError) as info:
        CHECKS[protocol](params_for(olab, protocol, mechanism, token))
    error = info.value
    assert error.stage == STAGE[protocol]
    assert 'refused' in error.message and said in error.message
    if mechanism == 'xoauth2':
        assert ('status 403' if kind == 'wrong_scope' else 'status 401') in error.message
    else:
        assert ('insufficient_scope' if kind == 'wrong_scope' else 'invalid_token') in error.message
    assert error.result['oauth_error']['scope'] == 'mail'
    assert_no_token(olab, protocol, token, error.message, error.result)


@pytest.mark.parametrize('protocol', ['smtp', 'imap'])  # POP3 names the mechanism in pop3_auth
def test_auto_prefers_oauthbearer(olab, protocol):
    params = params_for(olab, protocol, 'auto', olab.issue_token(USER))
    assert CHECKS[protocol](params)['auth_mechanism_used'] == 'oauthbearer'


@pytest.mark.parametrize('protocol', list(CHECKS))
def test_no_token_goes_over_plaintext_whatever_allow_cleartext_auth_says(olab, protocol):
    variant = {'smtp': 'smtp_plain', 'pop3': 'pop3_plain', 'imap': 'imap_plain'}[protocol]
    token = olab.issue_token(USER)
    params = params_for(olab, protocol, 'xoauth2', token, port=olab.ports[variant], tls_mode='none',
                        allow_cleartext_auth=True)
    with pytest.raises(ProbeError) as info:
        CHECKS[protocol](params)
    assert info.value.stage == STAGE[protocol]
    assert 'without TLS' in info.value.message
    sent = [line for line in info.value.result['transcript'] if line.startswith('C: ')]
    assert not any('AUTH' in line for line in sent), sent


@pytest.mark.parametrize('token', ['two words', 'tok\x01en', 'ünïcode', ''])
def test_a_malformed_token_is_refused_before_connecting(olab, token):
    with pytest.raises(ProbeError) as info:
        smtp_check(params_for(olab, 'smtp', 'xoauth2', token))
    assert info.value.stage == 'input' and 'oauth2_token' in info.value.message


def test_a_password_mechanism_with_a_token_login_is_an_input_error(olab):
    with pytest.raises(ProbeError) as info:
        smtp_check(params_for(olab, 'smtp', 'plain', olab.issue_token(USER)))
    assert info.value.stage == 'input' and 'smtp_auth=oauth2 takes' in info.value.message
    with pytest.raises(ProbeError) as info:
        imap_check(params_for(olab, 'imap', 'xoauth2', None, imap_auth='password', password='x'))
    assert info.value.stage == 'input' and 'logs in with a token' in info.value.message


@pytest.mark.parametrize('protocol', ['smtp', 'pop3'])
def test_a_token_too_long_for_the_command_line_goes_after_the_challenge(olab, protocol):
    token = oauth.issue(olab.oauth_key, USER, scope='mail ' + ' '.join('extra.scope.%d' % n for n in range(60)))
    assert len(token) > 600
    result = CHECKS[protocol](params_for(olab, protocol, 'oauthbearer', token))
    sent = [line for line in result['transcript'] if line.startswith('C: ')]
    assert 'C: AUTH OAUTHBEARER' in sent and 'C: ********' in sent
    assert_no_token(olab, protocol, token, result)


@pytest.mark.parametrize('protocol, mechanism', CASES)
def test_a_server_that_echoes_the_token_never_shows_it(echo_lab, protocol, mechanism):
    token = oauth.issue(echo_lab.oauth_key, USER, lifetime=-60)
    with pytest.raises(ProbeError) as info:
        CHECKS[protocol](params_for(echo_lab, protocol, mechanism, token))
    assert info.value.stage == STAGE[protocol]
    assert '********' in info.value.message
    assert_no_token(echo_lab, protocol, token, info.value.message, info.value.result)


@pytest.mark.parametrize('protocol', list(CHECKS))
@pytest.mark.parametrize('fault, words', [('oauth_no_challenge', 'refused'),
                                          ('oauth_bad_challenge', 'its error challenge was not base64 JSON')])
def test_servers_that_skip_or_garble_the_challenge(protocol, fault, words):
    variant = {'smtp': 'smtp_tls', 'pop3': 'pop3_tls', 'imap': 'imap_tls'}[protocol]
    with EmbeddedLab(host='127.0.0.1', oauth_key=oauth.make_key(), faults={variant: [fault]}) as lab:
        token = oauth.issue(lab.oauth_key, USER, lifetime=-60)
        with pytest.raises(ProbeError) as info:
            CHECKS[protocol](params_for(lab, protocol, 'xoauth2', token))
    assert info.value.stage == STAGE[protocol] and words in info.value.message
    assert 'Traceback' not in info.value.message


@pytest.mark.parametrize('receive', ['pop3', 'imap'])
def test_a_round_trip_with_tokens_on_both_sides(olab, receive):
    token = olab.issue_token('bob')
    params = roundtrip_params(olab, receive=receive, smtp_variant='smtp_tls', smtp_tls_mode='tls', smtp_auth='oauth2',
                              smtp_username='bob', smtp_oauth2_token=token, pop3_variant='pop3_tls')
    if receive == 'pop3':
        params.update(pop3_tls_mode='tls', pop3_auth='oauthbearer', pop3_password=None, pop3_oauth2_token=token)
    else:
        params.update(imap_port=olab.ports['imap_tls'], imap_tls_mode='tls', imap_password=None,
                      imap_oauth2_token=token)
    result = mail_roundtrip(params)
    assert result['deleted'] and result['smtp']['auth_mechanism_used'] == 'oauthbearer'
    assert result[receive]['auth_mechanism_used'] in ('oauthbearer', 'xoauth2')
    assert_no_token(olab, 'smtp', token, result)
