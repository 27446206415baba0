"""STARTTLS / STLS client cases after "Why TLS is better without STARTTLS" (Poddebniak et al.,
USENIX Security 2021): response injection, data before the handshake, capability stripping,
refused upgrades, cleartext AUTH, capabilities re-read after TLS, and failed handshakes.

Each row names what a scripted server (scripted_server.py, real TLS from a throwaway CA) does,
the tls_modes it runs in, the outcome (a stage and a message fragment, or ok and the facts), the
last command the server read in plaintext (nothing in the clear after it), the commands it must
have read over TLS and those it must never read. Every row also checks that the password never
reached the server in the clear, in any form.
"""

import base64
import re
from collections import namedtuple
from types import SimpleNamespace

import pytest

from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check
from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check
from lab.embedded.certs import LabCerts

from .helpers import pop3_params, smtp_params
from .scripted_server import Script, ScriptedServer, capa, ehlo

PASSWORD = 'starttls-case-secret'
# The password as the server would see it in the clear: raw, in AUTH PLAIN, in AUTH LOGIN.
CLEARTEXT_FORMS = (PASSWORD, base64.b64encode(b'\0alice\0' + PASSWORD.encode()).decode(),
                   base64.b64encode(PASSWORD.encode()).decode())
STARTTLS_MODES = ('starttls', 'starttls_if_available')

Fails = namedtuple('Fails', 'stage match')  # match: a regular expression on the message


class Ok(namedtuple('Ok', 'tls fallback warning facts')):
    """Success: TLS established?, tls.fallback, a warning fragment (or None), exact result facts."""

    def __new__(cls, tls, fallback=False, warning=None, **facts):
        return super().__new__(cls, tls, fallback, warning, facts)


Case = namedtuple('Case', 'id script modes expect last_plain auth after_tls never')


def row(id, script, modes, expect, last_plain, auth=None, after_tls=(), never=()):
    """One case: the server's script, the tls_modes, the outcome, the last command the server
    reads in plaintext (None: none at all), the auth options, the commands it must read over
    TLS and the ones it must never read."""
    return Case(id, script, modes, expect, last_plain, auth or {}, after_tls, never)


def smtp(**kwargs):
    return Script('smtp', **kwargs)


def pop3(**kwargs):
    return Script('pop3', **kwargs)


SMTP_AUTH = dict(smtp_auth='password', auth_mechanism='auto')
POP3_AUTH = dict(pop3_auth='password')
INJECTED = 'data before the TLS handshake'
HANDSHAKE_FAILED = 'TLS handshake failed'
# A line in a packet of its own right after the upgrade answer is refused either way, depending
# on when it arrives: already read with the answer (INJECTED), or read by TLS as a record that
# is not one (HANDSHAKE_FAILED). The same-packet rows pin the first path deterministically.
EITHER_REFUSAL = '%s|%s' % (INJECTED, HANDSHAKE_FAILED)
OFFERED = {'EHLO': ehlo('STARTTLS', 'AUTH PLAIN LOGIN')}
STRIPPED = {'EHLO': ehlo('AUTH PLAIN LOGIN')}
NO_CAPA = {'CAPA': b'-ERR unknown command\r\n'}
NO_STLS = {'CAPA': capa('USER', 'TOP')}
BOTH = STARTTLS_MODES
IF_AVAILABLE = ('starttls_if_available',)
NO_SMTP_AUTH = ('AUTH',)
NO_POP3_LOGIN = ('USER', 'PASS')

CASES = [
    # -- SMTP: data before the handshake ---------------------------------------------------
    row('smtp-response-injection-same-packet',
        smtp(plain={'STARTTLS': b'220 2.0.0 go ahead\r\n250-injected.test\r\n250 AUTH PLAIN\r\n'}),
        BOTH, Fails('tls', INJECTED), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    row('smtp-injected-line-separate-packet', smtp(inject=b'250 injected.test\r\n'),
        BOTH, Fails('tls', EITHER_REFUSAL), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    row('smtp-implicit-tls-plaintext-before-handshake', smtp(implicit=True, preamble=b'220 mx ESMTP\r\n'),
        ('tls',), Fails('tls', HANDSHAKE_FAILED), None, SMTP_AUTH, never=NO_SMTP_AUTH),
    # -- SMTP: stripped or refused STARTTLS, cleartext AUTH ---------------------------------
    row('smtp-starttls-stripped', smtp(plain=STRIPPED),
        ('starttls',), Fails('tls', 'STARTTLS not offered'), 'EHLO', SMTP_AUTH, never=('STARTTLS', 'AUTH')),
    row('smtp-starttls-stripped-falls-back', smtp(plain={'EHLO': ehlo('SIZE 1000')}),
        IF_AVAILABLE, Ok(False, fallback=True, warning='does not offer STARTTLS', features=['SIZE 1000']),
        'QUIT', never=('STARTTLS',)),
    row('smtp-starttls-454', smtp(plain=dict(OFFERED, STARTTLS=b'454 4.7.0 TLS not available\r\n')),
        BOTH, Fails('tls', r'STARTTLS refused \(454 4\.7\.0'), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    row('smtp-starttls-502', smtp(plain=dict(OFFERED, STARTTLS=b'502 5.5.1 not implemented\r\n')),
        BOTH, Fails('tls', r'STARTTLS refused \(502 5\.5\.1'), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    row('smtp-starttls-354', smtp(plain=dict(OFFERED, STARTTLS=b'354 go on\r\n')),
        BOTH, Fails('tls', r'STARTTLS refused \(354 go on'), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    row('smtp-auth-plain-in-clear-after-stripping', smtp(plain=STRIPPED),
        IF_AVAILABLE, Fails('auth', 'refusing to send a password with AUTH PLAIN'), 'EHLO',
        dict(SMTP_AUTH, auth_mechanism='plain'), never=NO_SMTP_AUTH),
    row('smtp-auth-login-in-clear-after-stripping', smtp(plain=STRIPPED),
        IF_AVAILABLE, Fails('auth', 'refusing to send a password with AUTH LOGIN'), 'EHLO',
        dict(SMTP_AUTH, auth_mechanism='login'), never=NO_SMTP_AUTH),
    row('smtp-auth-auto-in-clear-after-stripping', smtp(plain=STRIPPED),
        IF_AVAILABLE, Fails('auth', 'refusing to send a password'), 'EHLO', SMTP_AUTH, never=NO_SMTP_AUTH),
    # -- SMTP: capabilities after TLS ---------------------------------------------------------
    row('smtp-capabilities-reread-after-tls',
        smtp(plain={'EHLO': ehlo('STARTTLS', 'AUTH PLAIN', 'SIZE 1000')}, tls={'EHLO': ehlo('AUTH CRAM-MD5', 'SIZE 2000')}),
        BOTH, Ok(True, features=['AUTH CRAM-MD5', 'SIZE 2000'], auth_mechanisms=['CRAM-MD5'],
                 auth_mechanism_used='cram-md5'),
        'STARTTLS', SMTP_AUTH, after_tls=('EHLO', 'AUTH')),
    row('smtp-post-tls-ehlo-refused-keeps-nothing-from-before',
        smtp(plain=OFFERED, tls={'EHLO': b'502 5.5.2 no ESMTP\r\n'}),
        BOTH, Ok(True, features=[], auth_mechanisms=[]), 'STARTTLS', after_tls=('EHLO', 'HELO')),
    # -- SMTP: failed handshakes --------------------------------------------------------------
    row('smtp-tls-garbage-after-starttls', smtp(plain=OFFERED, upgrade='garbage'),
        BOTH, Fails('tls', HANDSHAKE_FAILED), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    row('smtp-tls-close-after-starttls', smtp(plain=OFFERED, upgrade='close'),
        BOTH, Fails('tls', HANDSHAKE_FAILED), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    row('smtp-tls-untrusted-certificate', smtp(plain=OFFERED, cert='rogue'),
        BOTH, Fails('tls', 'certificate verification failed'), 'STARTTLS', SMTP_AUTH, never=NO_SMTP_AUTH),
    # -- POP3: data before the handshake ---------------------------------------------------
    row('pop3-response-injection-same-packet', pop3(plain={'STLS': b'+OK begin TLS\r\n+OK injected\r\n'}),
        BOTH, Fails('tls', INJECTED), 'STLS', POP3_AUTH, never=NO_POP3_LOGIN),
    row('pop3-injected-line-separate-packet', pop3(inject=b'+OK injected\r\n'),
        BOTH, Fails('tls', EITHER_REFUSAL), 'STLS', POP3_AUTH, never=NO_POP3_LOGIN),
    row('pop3-implicit-tls-plaintext-before-handshake', pop3(implicit=True, preamble=b'+OK POP3 ready\r\n'),
        ('tls',), Fails('tls', HANDSHAKE_FAILED), None, POP3_AUTH, never=NO_POP3_LOGIN),
    # -- POP3: stripped or refused STLS, cleartext USER/PASS ---------------------------------
    row('pop3-stls-stripped', pop3(plain=NO_STLS),
        ('starttls',), Fails('tls', 'STLS not offered'), 'CAPA', POP3_AUTH, never=('STLS',) + NO_POP3_LOGIN),
    row('pop3-stls-stripped-falls-back', pop3(plain=NO_STLS),
        IF_AVAILABLE, Ok(False, fallback=True, warning='does not offer STLS', capabilities=['USER', 'TOP']),
        'QUIT', never=('STLS',)),
    # Without CAPA nothing says STLS is missing: starttls tries it, starttls_if_available does not.
    row('pop3-capa-refused-starttls-tries-stls', pop3(plain=NO_CAPA),
        ('starttls',), Ok(True, capabilities=[]), 'STLS', after_tls=('CAPA',)),
    row('pop3-capa-refused-falls-back', pop3(plain=NO_CAPA),
        IF_AVAILABLE, Ok(False, fallback=True, warning='does not offer STLS', capabilities=[]), 'QUIT',
        never=('STLS',)),
    row('pop3-stls-err', pop3(plain={'STLS': b'-ERR TLS not available\r\n'}),
        BOTH, Fails('tls', r'STLS refused \(-ERR TLS not available'), 'STLS', POP3_AUTH, never=NO_POP3_LOGIN),
    row('pop3-user-pass-in-clear-after-stripping', pop3(plain=NO_STLS),
        IF_AVAILABLE, Fails('login', 'refusing to send a password with USER/PASS'), 'CAPA', POP3_AUTH,
        never=NO_POP3_LOGIN),
    # -- POP3: capabilities after TLS ---------------------------------------------------------
    row('pop3-capabilities-reread-after-tls',
        pop3(plain={'CAPA': capa('USER', 'STLS', 'TOP')}, tls={'CAPA': capa('SASL PLAIN', 'TOP', 'UIDL')}),
        BOTH, Ok(True, capabilities=['SASL PLAIN', 'TOP', 'UIDL']), 'STLS', after_tls=('CAPA',)),
    row('pop3-post-tls-capa-refused-keeps-nothing-from-before',
        pop3(plain={'CAPA': capa('USER', 'STLS')}, tls={'CAPA': b'-ERR not now\r\n'}),
        BOTH, Ok(True, capabilities=[]), 'STLS', after_tls=('CAPA',)),
    # -- POP3: failed handshakes --------------------------------------------------------------
    row('pop3-tls-garbage-after-stls', pop3(upgrade='garbage'),
        BOTH, Fails('tls', HANDSHAKE_FAILED), 'STLS', POP3_AUTH, never=NO_POP3_LOGIN),
    row('pop3-tls-close-after-stls', pop3(upgrade='close'),
        BOTH, Fails('tls', HANDSHAKE_FAILED), 'STLS', POP3_AUTH, never=NO_POP3_LOGIN),
    row('pop3-tls-untrusted-certificate', pop3(cert='rogue'),
        BOTH, Fails('tls', 'certificate verification failed'), 'STLS', POP3_AUTH, never=NO_POP3_LOGIN),
]

RUNS = [pytest.param(c, mode, id='%s-%s' % (c.id, mode)) for c in CASES for mode in c.modes]


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    return LabCerts(tmp_path_factory.mktemp('starttls-certs'))


def check(case, tls_mode, certs, server):
    """Run the core of the case's protocol against server: (result, error)."""
    endpoint = SimpleNamespace(host='127.0.0.1', ports={'scripted': server.port}, ca_path=str(certs.ca_path),
                               accounts={'alice': PASSWORD})
    if case.script.protocol == 'smtp':
        run, params = smtp_check, smtp_params(endpoint, 'scripted', tls_mode, timeout=5, **case.auth)
    else:
        run, params = pop3_check, pop3_params(endpoint, 'scripted', tls_mode, timeout=5, **case.auth)
    try:
        return run(params), None
    except ProbeError as e:
        return e.result, e


@pytest.mark.parametrize('case,tls_mode', RUNS)
def test_starttls_case(certs, case, tls_mode):
    with ScriptedServer(certs, case.script) as server:
        result, error = check(case, tls_mode, certs, server)
    expect = case.expect
    if isinstance(expect, Fails):
        assert error is not None, 'passed, expected a failure at stage %s: %r' % (expect.stage, result)
        assert error.stage == expect.stage, error.message
        assert error.message.startswith('%s 127.0.0.1:%d: ' % (case.script.protocol, server.port))
        assert re.search(expect.match, error.message), error.message
        assert result['status'] == 'down'
        assert result['tls']['established'] is False
        if expect.stage == 'tls':
            assert server.lines('tls') == [], 'the client went on after a failed upgrade'
    else:
        assert error is None, error.message
        assert result['status'] == 'up'
        assert result['tls']['established'] is expect.tls
        assert result['tls']['fallback'] is expect.fallback
        if expect.warning:
            assert any(expect.warning in w for w in result['warnings']), result['warnings']
        else:
            assert result['warnings'] == []
        for name, value in expect.facts.items():
            assert result[name] == value, name
    plain = server.verbs('plain')
    assert (plain[-1] if plain else None) == case.last_plain, plain
    for verb in case.after_tls:
        assert verb in server.verbs('tls'), server.received
    for verb in case.never:
        assert verb not in plain + server.verbs('tls'), server.received
    cleartext = '\n'.join(server.lines('plain'))
    assert not [form for form in CLEARTEXT_FORMS if form in cleartext], 'password sent in the clear'
    assert PASSWORD not in repr(result) + (error.message if error else '')
