"""Every fault the embedded lab can inject, through every module it concerns: the module fails
(or, for the benign ones, succeeds) at the stage this table names, says host:port and what the
server did, shows no traceback and no password, and ends within its time bound.

"No password" means none of what a client derives from one either, anywhere in the module's JSON
output: the password, its base64 (AUTH LOGIN), the AUTH PLAIN payload, the AUTH LOGIN lines, the
APOP digest of every timestamp the lab handed out, and any 8 characters of the password in a row
(a secret cut in half by a line limit). Every row runs with long random passwords."""

import base64
import hashlib
import json
import re
import secrets
import socket
import string
import time

import pytest

from ansible_collections.mailops.health.plugins.modules import mail_roundtrip, pop3_check, smtp_check
from ansible_collections.mailops.health.plugins.module_utils._oauth import initial_response
from lab.embedded import VARIANTS, EmbeddedLab, oauth

from .helpers import run_module

TIMEOUT = 1
MAX_TRIP_TIME = 2
SLACK = 2

# fault id: (lab faults {variant: [fault]}, SMTP variant, POP3 variant, extra options, expected outcome by module)
# An outcome is a stage with a fragment of the message, or 'ok' (with an optional check on the result).
SMTP = ('smtp_check', 'mail_roundtrip')
POP3 = ('pop3_check', 'mail_roundtrip')


def fail(stage, fragment, modules, absent=None):
    """The modules fail at stage, fragment in the message (and absent not in it)."""
    return dict((m, (stage, fragment, absent)) for m in modules)


def ok(modules, warning=None):
    """The modules succeed; with warning (a regular expression), one warning matches it."""
    return dict((m, ('ok', warning)) for m in modules)


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
    # The mail's path: it bounces (the DSN reaches the mailbox read, the sender's), its verdicts.
    'bounces': ({'smtp': ['bounce']}, 'smtp', 'pop3', {'args': {'mail_from': 'bob@lab.test'}},
                {'mail_roundtrip': ('bounced', 'bounced: 5.1.1 smtp; 550 5.1.1')}),
    'dkim-fails-required': ({'smtp': ['dkim_fail']}, 'smtp', 'pop3', {'args': {'require_authentication': ['dkim']}},
                            {'mail_roundtrip': ('authentication', 'dkim=fail (by mx.lab.test)')}),
    'dkim-fails-not-required': ({'smtp': ['dkim_fail']}, 'smtp', 'pop3', {'args': {'require_authentication': ['spf']}},
                                {'mail_roundtrip': 'ok'}),
    'verdicts-pass-required': ({'smtp': ['paths_pass']}, 'smtp', 'pop3',
                               {'args': {'require_authentication': ['spf', 'dkim', 'dmarc']}}, {'mail_roundtrip': 'ok'}),
    'no-verdicts-required': ({}, 'smtp', 'pop3', {'args': {'require_authentication': ['dmarc']}},
                             {'mail_roundtrip': ('authentication', 'dmarc=none (no Authentication-Results)')}),
    # Expected refusals: the open-relay test against a relay that refuses, and one that accepts.
    'relay-refused': ({}, 'smtp', 'pop3', {'args': {'expect': 'reject', 'mail_to': 'relay-test@elsewhere.test'}},
                      {'smtp_check': 'ok'}),
    'open-relay': ({'smtp': ['open_relay']}, 'smtp', 'pop3',
                   {'args': {'expect': 'reject', 'mail_to': 'relay-test@elsewhere.test'}},
                   {'smtp_check': ('expectation', 'accepted at stage rcpt')}),
    # OAuth 2.0 tokens (the lab verifies its JWTs): refused ones say what the server's JSON error said.
    'oauth-valid': ({}, 'smtp', 'pop3', {'oauth': 'valid'}, ok(SMTP + ('pop3_check',))),
    'oauth-expired': ({}, 'smtp', 'pop3', {'oauth': 'expired'},
                      dict(fail('auth', 'status 401', ('smtp_check',)), **fail('login', 'status 401', POP3[:1]))),
    'oauth-wrong-scope': ({}, 'smtp', 'pop3', {'oauth': 'wrong_scope'},
                          dict(fail('auth', 'status 403', ('smtp_check',)), **fail('login', 'scope mail', POP3[:1]))),
    'oauth-echo-token': ({'smtp': ['oauth_echo_token'], 'pop3': ['oauth_echo_token']}, 'smtp', 'pop3',
                         {'oauth': 'expired'},
                         dict(fail('auth', 'status 401', ('smtp_check',)), **fail('login', 'status 401', POP3[:1]))),
    'oauth-no-challenge': ({'smtp': ['oauth_no_challenge']}, 'smtp', 'pop3', {'oauth': 'expired'},
                           fail('auth', '535', ('smtp_check',), absent='status')),
    'oauth-bad-challenge': ({'pop3': ['oauth_bad_challenge']}, 'smtp', 'pop3', {'oauth': 'expired'},
                            fail('login', 'not base64 JSON', POP3[:1])),
    # Servers that quote the secrets back (the lab knows every password, so it does so from the
    # greeting on), also across the 64 KiB mark of an over-long line.
    'smtp-echo-secrets': ({'smtp': ['echo_secrets']}, 'smtp', 'pop3', {}, ok(SMTP)),
    'smtp-echo-secrets-login': ({'smtp': ['echo_secrets']}, 'smtp', 'pop3', {'auth_mechanism': 'login'}, ok(SMTP)),
    'smtp-echo-secrets-rcpt-550': ({'smtp': ['echo_secrets', 'rcpt_550']}, 'smtp', 'pop3', {},
                                   fail('rcpt', '550', SMTP)),
    'smtp-echo-secrets-421-quit': ({'smtp': ['echo_secrets', '421_quit']}, 'smtp', 'pop3',
                                   {'auth_mechanism': 'login'}, fail('quit', '421', SMTP)),
    'pop3-echo-secrets': ({'pop3': ['echo_secrets']}, 'smtp', 'pop3', {}, ok(POP3)),
    'pop3-echo-secrets-apop': ({'pop3': ['echo_secrets']}, 'smtp', 'pop3', {'pop3_auth': 'apop'}, ok(POP3)),
    'pop3-echo-secrets-pass-err': ({'pop3': ['echo_secrets', 'pass_err']}, 'smtp', 'pop3', {},
                                   fail('login', 'PASS refused', POP3)),
    'pop3-echo-secrets-stat-malformed': ({'pop3': ['echo_secrets', 'stat_malformed']}, 'smtp', 'pop3',
                                         {'pop3_auth': 'apop'}, {'pop3_check': ('stat', 'malformed STAT', None)}),
    # Refused before the login: the APOP digest the banner quotes is masked all the same.
    'pop3-echo-secrets-apop-stls-err': ({'pop3': ['echo_secrets', 'stls_err']}, 'smtp', 'pop3', {'pop3_auth': 'apop'},
                                        fail('tls', '-ERR', POP3)),
    'echo-secrets-both': ({'smtp': ['echo_secrets'], 'pop3': ['echo_secrets']}, 'smtp', 'pop3',
                          {'pop3_auth': 'apop'}, ok(['mail_roundtrip'])),
    # A server giving every message the same UIDL: a mail already in the mailbox (seen by the first
    # check) shares it with the probe's mail, which must still be found, by its headers.
    'pop3-uidl-duplicate': ({'pop3': ['uidl_duplicate']}, 'smtp', 'pop3', {'preload': 1},
                            ok(['mail_roundtrip'], warning=r'(?i)duplicate UIDL|same UIDL|UIDLs? (is|are) not unique')),
    # DELE accepted, then the connection dropped at QUIT (this lab committed the deletion first):
    # whether the server committed it is not known, so the module must not say it was not.
    'pop3-drop-at-quit': ({'pop3': ['drop_at_quit']}, 'smtp', 'pop3', {},
                          fail('quit', 'not known', ['mail_roundtrip'], absent='was not committed')),
}

# Core defects other than those the table was written for: {fault id: reason}.
CASES = [pytest.param(fault, module, id='%s-%s' % (fault, module)) for fault, spec in FAULTS.items() for module in spec[4]]


def closed_port():
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def module_args(lab, module, smtp_port, pop3_port, extra, tokens=None):
    """The module's options for a row; with tokens ({user: token}) every login is OAuth."""
    args = _module_args(lab, module, smtp_port, pop3_port, extra)
    if tokens:
        for prefix, user in (('', 'alice' if module == 'smtp_check' else 'bob'), ('smtp_', 'alice'), ('pop3_', 'bob')):
            if prefix + 'password' in args:
                args.pop(prefix + 'password')
                args[prefix + 'oauth2_token'] = tokens[user]
        args.update(dict((key, value) for key, value in (('smtp_auth', 'oauth2'), ('pop3_auth', 'xoauth2'))
                         if key in args))
        if module != 'pop3_check':
            args['auth_mechanism'] = 'xoauth2'
    args.update(extra.get('args', {}))
    return args


def _module_args(lab, module, smtp_port, pop3_port, extra):
    alice, bob = lab.accounts['alice'], lab.accounts['bob']
    common = dict(ca_path=lab.ca_path, timeout=TIMEOUT, transcript=True)
    mechanism = extra.get('auth_mechanism', 'plain')
    if module == 'smtp_check':
        return dict(common, host=lab.host, port=smtp_port, tls_mode=extra.get('smtp_tls_mode', 'starttls'),
                    smtp_auth='password', auth_mechanism=mechanism, username='alice', password=alice,
                    send_mail=True, mail_from='monitor@lab.test', mail_to='bob@lab.test')
    if module == 'pop3_check':
        return dict(common, host=lab.host, port=pop3_port, tls_mode=extra.get('pop3_tls_mode', 'starttls'),
                    pop3_auth=extra.get('pop3_auth', 'password'), username='bob', password=bob)
    return dict(common, smtp_host=lab.host, smtp_port=smtp_port, smtp_tls_mode=extra.get('smtp_tls_mode', 'starttls'),
                smtp_auth='password', auth_mechanism=mechanism, smtp_username='alice', smtp_password=alice,
                mail_from='monitor@lab.test', mail_to='bob@lab.test', pop3_host=lab.host, pop3_port=pop3_port,
                pop3_tls_mode=extra.get('pop3_tls_mode', 'starttls'), pop3_auth=extra.get('pop3_auth', 'password'),
                pop3_username='bob', pop3_password=bob, connection_interval=0.2, max_trip_time=MAX_TRIP_TIME)


MODULES = {'smtp_check': smtp_check, 'pop3_check': pop3_check, 'mail_roundtrip': mail_roundtrip}


def random_password():
    return ''.join(secrets.choice(string.ascii_letters + string.digits) for _i in range(48))


def b64(text):
    return base64.b64encode(text.encode('utf-8')).decode('ascii')


# Whose passwords each module is given (so must keep to itself): the lab quotes all of them.
OWN_ACCOUNTS = {'smtp_check': ('alice',), 'pop3_check': ('bob',), 'mail_roundtrip': ('alice', 'bob')}


def secret_forms(accounts, timestamps, apop_user=None):
    """{description: text} of everything that must never be shown: for each of accounts
    ({user: password}) the password, what AUTH PLAIN and AUTH LOGIN send for it and every 8
    characters of it in a row; for apop_user the APOP digest for every timestamp in timestamps."""
    forms = {}
    for user, password in accounts.items():
        forms.update({
            '%s password' % user: password,
            '%s base64 password (AUTH LOGIN)' % user: b64(password),
            '%s AUTH PLAIN payload' % user: b64('\0%s\0%s' % (user, password)),
            '%s AUTH LOGIN user line' % user: b64(user),
        })
        if user == apop_user:
            for timestamp in timestamps:
                forms['%s APOP digest for %s' % (user, timestamp)] = \
                    hashlib.md5((timestamp + password).encode('utf-8')).hexdigest()
        for start in range(len(password) - 7):
            forms['%s password[%d:%d]' % (user, start, start + 8)] = password[start:start + 8]
    return forms


def token_forms(user, token, port):
    """What a client sends of an OAuth token: the token, every 16 characters of it in a row, and
    the XOAUTH2 and OAUTHBEARER initial responses."""
    forms = {'%s token' % user: token}
    for start in range(0, len(token) - 15, 8):
        forms['%s token[%d:%d]' % (user, start, start + 16)] = token[start:start + 16]
    for mechanism in ('XOAUTH2', 'OAUTHBEARER'):
        for host in ('127.0.0.1', 'localhost'):
            forms['%s %s payload' % (user, mechanism)] = initial_response(mechanism, user, token, host, port)
    return forms


def strings(value):
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)
    elif isinstance(value, str):
        yield value


def shown_secrets(result, forms):
    """The forms found in the raw JSON output or in any of its strings (msg, every field,
    warnings, the transcript), each with a little context."""
    texts = [result['_raw']] + list(strings(dict((k, v) for k, v in result.items() if k != '_raw')))
    found = []
    for name, secret in forms.items():
        for text in texts:
            at = text.find(secret)
            if at >= 0:
                found.append('%s in ...%r...' % (name, text[max(0, at - 40):at + len(secret) + 10]))
                break
    return found


def timestamp_recorder(timestamps):
    """A GREETING hook noting every APOP timestamp the lab hands out (then the greeting goes on)."""
    async def record(conn, greeting):
        timestamps.extend(re.findall(r'<[^<>\s]+>', greeting or ''))
        return False
    return record


@pytest.mark.parametrize('fault,module', CASES)
def test_fault(fault, module, capsys):
    faults, smtp_variant, pop3_variant, extra, outcomes = FAULTS[fault]
    accounts = {'alice': random_password(), 'bob': random_password()}
    timestamps = []
    hooks = dict((v.name, {'GREETING': timestamp_recorder(timestamps)}) for v in VARIANTS if v.protocol == 'pop3')
    key = oauth.make_key() if extra.get('oauth') else None
    with EmbeddedLab(faults=faults, accounts=accounts, hooks=hooks, oauth_key=key) as lab:
        preloaded = [lab.store.add('bob', b'From: someone@lab.test\r\nSubject: already here %d\r\n\r\nHello.\r\n' % n)
                     for n in range(extra.get('preload', 0))]
        smtp_port = closed_port() if smtp_variant == 'closed' else lab.ports[smtp_variant]
        pop3_port = lab.ports[pop3_variant]
        tokens = None
        if key is not None:
            kind = extra['oauth']
            tokens = dict((user, oauth.issue(key, user, scope='calendar' if kind == 'wrong_scope' else 'mail',
                                             lifetime=-60 if kind == 'expired' else 600)) for user in accounts)
        start = time.monotonic()
        result = run_module(capsys, MODULES[module], module_args(lab, module, smtp_port, pop3_port, extra, tokens))
        elapsed = time.monotonic() - start
        bound = (MAX_TRIP_TIME if module == 'mail_roundtrip' else TIMEOUT) + SLACK
        assert elapsed < bound, 'took %.1f s' % elapsed
        assert 'Traceback' not in result['_raw']
        own = dict((user, accounts[user]) for user in OWN_ACCOUNTS[module])
        apop_user = 'bob' if extra.get('pop3_auth') == 'apop' else None
        forms = secret_forms(own, timestamps, apop_user)
        for user in own if tokens else ():
            port = smtp_port if (module, user) in (('smtp_check', 'alice'), ('mail_roundtrip', 'alice')) else pop3_port
            forms.update(token_forms(user, tokens[user], port))
        shown = shown_secrets(result, forms)
        assert not shown, 'secrets shown: %s' % '; '.join(shown)
        expected = outcomes[module]
        if expected == 'ok' or expected[0] == 'ok':
            assert result['_rc'] == 0, result['msg']
            assert result['status'] in ('up', 'warning')
            warning = None if expected == 'ok' else expected[1]
            if warning:
                # Ansible 2.19 gives each warning as a dict; its text is in there.
                texts = [json.dumps(w) for w in result.get('warnings', [])]
                assert any(re.search(warning, text) for text in texts), texts
            if module == 'mail_roundtrip':
                assert [m.uid for m in lab.store.messages('bob')] == preloaded
                assert result['pop3']['copies'] == (2 if fault == 'arrives-twice' else 1)
            return
        stage, fragment = expected[:2]
        absent = expected[2] if len(expected) > 2 else None
        assert result['_rc'] == 1
        assert result['failed'] is True
        assert result['status'] == 'down'
        assert result['stage'] == stage, result['msg']
        assert fragment in result['msg']
        if absent:
            assert absent not in result['msg']
        pop3_stages = ('login', 'stat', 'retrieve', 'delete', 'bounced', 'authentication')
        port = pop3_port if stage in pop3_stages or fault.startswith('pop3') else smtp_port
        if stage != 'timeout':
            assert '127.0.0.1:%d' % port in result['msg']
        assert 'internal error' not in result['msg']


def test_apop_digest_across_the_cut_of_the_banner(capsys):
    """A server that quotes the APOP digest of the banner's own timestamp across byte 65536 of the
    banner line: the client keeps the first 64 KiB, then logs in with that digest."""
    password = random_password()

    timestamps = []

    async def greeting(conn, builtin):
        timestamps.append(conn.timestamp)
        digest = hashlib.md5((conn.timestamp + password).encode()).hexdigest()
        head = builtin + ' '
        start = 64 * 1024 - len(digest) // 2
        await conn.push_bytes((head + '~' * (start - len(head)) + digest + '~' * 1024 + '\r\n').encode())
        return True

    with EmbeddedLab(accounts={'alice': random_password(), 'bob': password}, hooks={'pop3': {'GREETING': greeting}}) as lab:
        args = module_args(lab, 'pop3_check', None, lab.ports['pop3'], {'pop3_auth': 'apop'})
        result = run_module(capsys, pop3_check, args)
    assert result['_rc'] == 0, result['msg']
    forms = secret_forms({'bob': password}, timestamps, apop_user='bob')
    digest = [form for name, form in forms.items() if 'APOP digest' in name][0]
    forms.update(('APOP digest[%d:%d]' % (i, i + 8), digest[i:i + 8]) for i in range(len(digest) - 7))
    shown = shown_secrets(result, forms)
    assert not shown, 'secrets shown: %s' % '; '.join(shown)
