"""pop3_check's core against the embedded lab's POP3 server: every tls_mode on every kind of
endpoint, USER/PASS and APOP, and the failures."""

import pytest

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check

from .helpers import pop3_params

TLS_MATRIX = [
    ('none', 'pop3', {'tls': False}),
    ('none', 'pop3_plain', {'tls': False}),
    ('starttls', 'pop3', {'tls': True}),
    ('starttls', 'pop3_plain', {'stage': 'tls', 'match': 'STLS not offered'}),
    ('starttls_if_available', 'pop3', {'tls': True}),
    ('starttls_if_available', 'pop3_plain', {'tls': False, 'warning': 'does not offer STLS'}),
    ('tls', 'pop3_tls', {'tls': True}),
    ('tls', 'pop3_plain', {'stage': 'tls', 'match': 'TLS handshake failed'}),
    ('tls', 'pop3_badcert', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls', 'pop3_wrongname', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls_if_available', 'pop3_tls', {'tls': True}),
    ('tls_if_available', 'pop3_plain', {'tls': False, 'warning': 'does not speak implicit TLS'}),
    ('tls_if_available', 'pop3_badcert', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls_if_available', 'pop3_wrongname', {'stage': 'tls', 'match': 'certificate verification failed'}),
]


@pytest.mark.parametrize('tls_mode,variant,expected', TLS_MATRIX, ids=['%s-%s' % c[:2] for c in TLS_MATRIX])
@pytest.mark.parametrize('auth', ['none', 'password', 'apop'])
def test_tls_modes_and_auth(lab, tls_mode, variant, expected, auth):
    # USER/PASS without TLS is refused unless allowed; here it is allowed so every cell logs in.
    params = pop3_params(lab, variant, tls_mode, pop3_auth=auth, allow_cleartext_auth=True)
    if 'stage' in expected:
        with pytest.raises(ProbeError) as info:
            pop3_check(params)
        assert info.value.stage == expected['stage']
        assert 'pop3 127.0.0.1:%d' % lab.ports[variant] in info.value.message
        assert expected['match'] in info.value.message
        return
    result = pop3_check(params)
    assert result['status'] == 'up'
    assert result['tls']['established'] is expected['tls']
    assert result['apop_supported'] is True
    assert 'UIDL' in result['capabilities']
    if auth == 'none':
        assert 'message_count' not in result
    else:
        assert result['message_count'] >= 0 and result['mailbox_size'] >= 0
    assert result['tls']['fallback'] is ('warning' in expected)
    if 'warning' in expected:
        assert any(expected['warning'] in w for w in result['warnings'])
    else:
        assert result['warnings'] == []


def test_stat_counts_messages(lab):
    lab.store.clear('alice')
    lab.store.add('alice', b'Subject: one\r\n\r\nbody\r\n')
    lab.store.add('alice', b'Subject: two\r\n\r\nbody two\r\n')
    result = pop3_check(pop3_params(lab, 'pop3', 'starttls', pop3_auth='password'))
    assert result['message_count'] == 2
    assert result['mailbox_size'] == sum(m.size for m in lab.store.messages('alice'))
    assert len(lab.store.messages('alice')) == 2  # read-only


@pytest.mark.parametrize('auth', ['password', 'apop'])
def test_wrong_password_fails_at_login(lab, auth):
    params = pop3_params(lab, 'pop3', 'starttls', pop3_auth=auth, password='wrong-password-xyz')
    with pytest.raises(ProbeError) as info:
        pop3_check(params)
    assert info.value.stage == 'login'
    assert '-ERR' in info.value.message
    assert 'wrong-password-xyz' not in repr(info.value.result) + info.value.message


def test_apop_without_banner_timestamp(lab):
    with pytest.raises(ProbeError) as info:
        pop3_check(pop3_params(lab, 'pop3_noapop', 'starttls', pop3_auth='apop'))
    assert info.value.stage == 'login'
    assert 'no APOP timestamp' in info.value.message
    assert info.value.result['apop_supported'] is False


def test_apop_works_without_tls_and_hides_digest(lab):
    result = pop3_check(pop3_params(lab, 'pop3_plain', 'none', pop3_auth='apop'))
    assert result['tls']['established'] is False
    assert any(line.startswith('C: APOP alice ********') for line in result['transcript'])


def test_user_pass_refused_without_tls(lab):
    with pytest.raises(ProbeError) as info:
        pop3_check(pop3_params(lab, 'pop3_plain', 'none', pop3_auth='password'))
    assert info.value.stage == 'login'
    assert 'allow_cleartext_auth' in info.value.message
    assert not any(line.startswith('C: USER') for line in info.value.result['transcript'])


def test_transcript_masks_password(lab):
    result = pop3_check(pop3_params(lab, 'pop3', 'starttls', pop3_auth='password'))
    text = '\n'.join(result['transcript'])
    assert lab.accounts['alice'] not in text
    assert 'C: PASS ********' in text
    assert '-- TLS established' in text


def test_connection_refused(lab):
    import socket
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ProbeError) as info:
        pop3_check(pop3_params(lab, 'pop3', 'none', port=port))
    assert info.value.stage == 'connect'
    assert 'pop3 127.0.0.1:%d' % port in info.value.message


def test_tls_context_is_made_once_per_process(lab):
    from ansible_collections.mailops.health.plugins.module_utils._session import ssl_context
    ssl_context.cache_clear()
    for _attempt in range(3):
        pop3_check(pop3_params(lab, 'pop3_tls', 'tls'))
    info = ssl_context.cache_info()
    assert (info.misses, info.hits) == (1, 2)


def test_plaintext_check_makes_no_tls_context(lab):
    from ansible_collections.mailops.health.plugins.module_utils._session import ssl_context
    ssl_context.cache_clear()
    pop3_check(pop3_params(lab, 'pop3_plain', 'none', ca_path='/nonexistent/ca.pem'))
    assert ssl_context.cache_info().misses == 0


@pytest.mark.parametrize('password,padding', [('back\\slash-pw', 0), ('long-secret-password', 170)],
                         ids=['escaped-by-repr', 'straddles-the-cut'])
def test_password_echoed_in_a_malformed_reply_is_masked(password, padding):
    """A broken server that echoes the PASS line: the quoted reply never shows the password,
    neither escaped by repr() nor cut in half by the length limit."""
    from lab.embedded import EmbeddedLab

    async def echo(conn, arg):
        await conn.push('%sunknown command: PASS %s' % ('x' * padding, arg))
        return True

    with EmbeddedLab(accounts={'eve': password}, hooks={'pop3': {'PASS': echo}}) as lab:
        with pytest.raises(ProbeError) as info:
            pop3_check(pop3_params(lab, 'pop3', 'starttls', pop3_auth='password', user='eve'))
    assert info.value.stage == 'login'
    assert 'malformed reply' in info.value.message
    text = info.value.message + repr(info.value.result)
    for fragment in (password, repr(password)[1:-1], password[:8]):
        assert fragment not in text
