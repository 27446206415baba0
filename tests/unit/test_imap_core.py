"""imap_check's core and round trips that receive over IMAP, against the embedded lab's IMAP
server: every tls_mode on every kind of endpoint, each login mechanism, LOGINDISABLED, folders,
and the round trip's one connection, IDLE, deletion of only its own mail and junk placement."""

import threading
import time

import pytest

from ansible_collections.mailops.health.plugins.module_utils._imap import (
    decode_mailbox, encode_mailbox, imap_check, tokenize,
)
from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip

from .helpers import common, roundtrip_params
from .test_roundtrip_core import FOREIGN


def imap_params(lab, variant, tls_mode, imap_auth='password', user='alice', **extra):
    params = common(lab, host=lab.host, port=lab.ports[variant], tls_mode=tls_mode, imap_auth=imap_auth,
                    auth_mechanism='auto', username=user, password=lab.accounts[user], folder='INBOX', folders=None)
    params.update(extra)
    return params


def imap_roundtrip(lab, user='bob', variant='imap', **extra):
    return roundtrip_params(lab, user=user, receive='imap', imap_variant=variant, **extra)


TLS_MATRIX = [
    ('none', 'imap_plain', {'tls': False}),
    ('starttls', 'imap', {'tls': True}),
    ('starttls', 'imap_plain', {'stage': 'tls', 'match': 'STARTTLS not offered'}),
    ('starttls_if_available', 'imap', {'tls': True}),
    ('starttls_if_available', 'imap_plain', {'tls': False, 'warning': 'does not offer STARTTLS'}),
    ('tls', 'imap_tls', {'tls': True}),
    ('tls', 'imap_plain', {'stage': 'tls', 'match': 'TLS handshake failed'}),
    ('tls', 'imap_badcert', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls', 'imap_wrongname', {'stage': 'tls', 'match': 'certificate verification failed'}),
    ('tls_if_available', 'imap_tls', {'tls': True}),
    ('tls_if_available', 'imap_plain', {'tls': False, 'warning': 'does not speak implicit TLS'}),
    ('tls_if_available', 'imap_badcert', {'stage': 'tls', 'match': 'certificate verification failed'}),
]


@pytest.mark.parametrize('tls_mode,variant,expected', TLS_MATRIX, ids=['%s-%s' % c[:2] for c in TLS_MATRIX])
@pytest.mark.parametrize('mechanism', ['none', 'login', 'plain', 'cram-md5'])
def test_tls_modes_and_mechanisms(lab, tls_mode, variant, expected, mechanism):
    params = imap_params(lab, variant, tls_mode, imap_auth='none' if mechanism == 'none' else 'password',
                         auth_mechanism='auto' if mechanism == 'none' else mechanism, allow_cleartext_auth=True)
    if 'stage' in expected:
        with pytest.raises(ProbeError) as info:
            imap_check(params)
        assert info.value.stage == expected['stage']
        assert 'imap 127.0.0.1:%d' % lab.ports[variant] in info.value.message
        assert expected['match'] in info.value.message
        return
    if mechanism == 'login' and not expected['tls'] and variant != 'imap_plain':
        pytest.skip('LOGINDISABLED without TLS')
    result = imap_check(params)
    assert result['status'] == 'up'
    assert result['tls']['established'] is expected['tls']
    assert 'IMAP4REV1' in [c.upper() for c in result['capabilities']]
    if mechanism == 'none':
        assert 'folder' not in result and 'auth_mechanism_used' not in result
    else:
        assert result['auth_mechanism_used'] == mechanism
        assert result['folder']['name'] == 'INBOX' and result['folder']['uidvalidity'] > 0
    if 'warning' in expected:
        assert any(expected['warning'] in w for w in result['warnings'])


def test_capabilities_are_asked_again_after_starttls(lab):
    result = imap_check(imap_params(lab, 'imap', 'starttls'))
    assert 'STARTTLS' in result['capabilities_before_tls']
    assert 'STARTTLS' not in result['capabilities']
    transcript = result['transcript']
    after_tls = transcript[[i for i, line in enumerate(transcript) if 'TLS established' in line][0]:]
    assert any(line.startswith('C: A') and line.endswith('CAPABILITY') for line in after_tls)


def test_logindisabled_is_respected(lab):
    """Before TLS the server says LOGINDISABLED: LOGIN is never sent, even with cleartext allowed."""
    with pytest.raises(ProbeError) as info:
        imap_check(imap_params(lab, 'imap', 'none', auth_mechanism='login', allow_cleartext_auth=True))
    assert info.value.stage == 'login' and 'LOGIN not offered' in info.value.message
    assert not any(' LOGIN ' in line for line in info.value.result['transcript'])


def test_cleartext_password_refused_without_tls(lab):
    with pytest.raises(ProbeError) as info:
        imap_check(imap_params(lab, 'imap_plain', 'none', auth_mechanism='plain'))
    assert info.value.stage == 'login' and 'refusing to send a password' in info.value.message


def test_auto_prefers_a_challenge_mechanism_without_tls(lab):
    result = imap_check(imap_params(lab, 'imap_plain', 'none'))
    assert result['auth_mechanism_used'] == 'cram-md5'


def test_wrong_password_fails_at_login_and_is_not_shown(lab):
    params = imap_params(lab, 'imap', 'starttls', auth_mechanism='plain', password='Wrong-Passw0rd-for-imap')
    with pytest.raises(ProbeError) as info:
        imap_check(params)
    assert info.value.stage == 'login'
    assert 'Wrong-Passw0rd-for-imap' not in repr(info.value.result) + info.value.message


def test_folders_must_exist(lab):
    result = imap_check(imap_params(lab, 'imap', 'starttls', folders=['INBOX', 'Junk']))
    assert {'INBOX', 'Junk'} <= set(result['folders'])
    with pytest.raises(ProbeError) as info:
        imap_check(imap_params(lab, 'imap', 'starttls', folders=['Archive-2019']))
    assert info.value.stage == 'folders' and 'missing folder: Archive-2019' in info.value.message


def test_status_counts_messages(lab):
    lab.store.clear('alice')
    for raw in FOREIGN[:2]:
        lab.store.add('alice', raw)
    result = imap_check(imap_params(lab, 'imap', 'starttls'))
    assert result['folder']['messages'] == 2


# -- round trips over IMAP --------------------------------------------------------------

def test_roundtrip_over_imap_finds_and_deletes_only_its_mail(lab):
    lab.store.clear('bob')
    foreign = [lab.store.add('bob', raw) for raw in FOREIGN]
    result = mail_roundtrip(imap_roundtrip(lab))
    assert result['status'] == 'up' and result['deleted'] is True
    assert result['folder'] == 'INBOX' and result['seen_by'] == 'check'
    assert result['imap']['deleted_by'] == 'uid_expunge' and result['imap']['copies'] == 1
    assert [m.uid for m in lab.store.messages('bob')] == foreign


def test_other_clients_deleted_mail_survives(lab):
    """A foreign message flagged \\Deleted by another client stays: only UID EXPUNGE of our UID."""
    import imaplib
    import ssl
    lab.store.clear('bob')
    for raw in FOREIGN[:2]:
        lab.store.add('bob', raw)
    other = imaplib.IMAP4(lab.host, lab.ports['imap'])
    other.starttls(ssl.create_default_context(cafile=lab.ca_path))
    other.login('bob', lab.accounts['bob'])
    other.select('INBOX')
    other.store('1', '+FLAGS', '\\Deleted')
    try:
        mail_roundtrip(imap_roundtrip(lab))
        assert len(lab.store.messages('bob')) == 2
    finally:
        other.logout()


def test_without_uidplus_or_move_nothing_is_expunged(lab):
    lab.store.clear('bob')
    lab.store.add('bob', FOREIGN[0])
    result = mail_roundtrip(imap_roundtrip(lab, variant='imap_noexpunge'))
    assert result['imap']['deleted_by'] == 'flagged'
    assert any('neither UIDPLUS nor MOVE' in w for w in result['warnings'])
    assert len(lab.store.messages('bob')) == 2  # ours is flagged, not expunged; the foreign one stays


def test_a_mail_filed_as_junk_is_found_there(lab):
    lab.store.clear('bob')
    result = mail_roundtrip(imap_roundtrip(lab, subject_prefix='[lab-junk]'))
    assert result['folder'] == 'Junk' and result['status'] == 'warning'
    assert any('junk folder Junk' in w for w in result['warnings'])
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(imap_roundtrip(lab, subject_prefix='[lab-junk]', junk='fail'))
    assert info.value.stage == 'junk'
    assert mail_roundtrip(imap_roundtrip(lab, subject_prefix='[lab-junk]', junk='ok'))['status'] == 'up'
    assert lab.store.messages('bob') == []


def test_junk_without_special_use_falls_back_to_the_spam_folder(lab):
    lab.store.clear('bob')
    result = mail_roundtrip(imap_roundtrip(lab, variant='imap_nospecialuse', subject_prefix='[lab-junk]'))
    assert result['folder'] == 'Spam'


def deliver_later(lab, monkeypatch, seconds):
    """The round trip's mail goes to alice over SMTP and lands in bob's mailbox seconds later."""
    from ansible_collections.mailops.health.plugins.module_utils import _smtp
    original = _smtp.run_session

    def send_later(params, check, message=None):
        if message is None:
            return original(params, check)
        result = original(dict(params), check, (message[0], [lab.address('alice')], message[2]))
        threading.Timer(seconds, lab.store.deliver, (lab.address('bob'), message[2])).start()
        return result

    monkeypatch.setattr(_smtp, 'run_session', send_later)


def test_a_late_mail_is_seen_through_idle_push(lab, monkeypatch):
    """Checks spaced a second or more apart wait in IDLE; the push ends the wait before the next
    scheduled check (10 s apart here)."""
    lab.store.clear('bob')
    deliver_later(lab, monkeypatch, 2.5)
    result = mail_roundtrip(imap_roundtrip(lab, connection_interval=10, max_trip_time=15))
    assert result['seen_by'] == 'push'
    assert 2500 <= result['trip_time_ms'] < 10000


def test_a_server_that_never_pushes_is_still_found_by_checks(lab, monkeypatch):
    lab.store.clear('bob')
    deliver_later(lab, monkeypatch, 1.5)
    result = mail_roundtrip(imap_roundtrip(lab, variant='imap_idle_never', connection_interval=2, max_trip_time=10))
    assert result['seen_by'] == 'check' and result['deleted'] is True


def test_imap_roundtrip_check_mode_sends_nothing(lab):
    lab.store.clear('bob')
    result = mail_roundtrip(imap_roundtrip(lab), check_mode=True)
    assert result['sent'] is False and lab.store.messages('bob') == []
    assert result['imap']['tls']['established'] is True


def test_imap_options_required_with_receive_protocol_imap(lab):
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(imap_roundtrip(lab, imap_password=None))
    assert info.value.stage == 'input' and 'imap_password' in info.value.message


# -- parsing ----------------------------------------------------------------------------

def test_tokenize_keeps_sections_and_literals():
    data = tokenize('3 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT DATE)] {12} FLAGS (\\Seen))', ['Subject: x\r\n'])
    assert data == ['3', 'FETCH', ['UID', '7', 'BODY[HEADER.FIELDS (SUBJECT DATE)]', 'Subject: x\r\n', 'FLAGS', ['\\Seen']]]
    assert tokenize('LIST (\\HasNoChildren \\Junk) "/" "Junk" NIL', []) == ['LIST', ['\\HasNoChildren', '\\Junk'], '/', 'Junk', None]


@pytest.mark.parametrize('name,encoded', [('INBOX', 'INBOX'), ('Entw\u00fcrfe', 'Entw&APw-rfe'), ('a&b', 'a&-b'),
                                          ('\u53f0\u5317', '&U,BTFw-')])
def test_folder_names_in_modified_utf7(name, encoded):
    assert encode_mailbox(name) == encoded
    assert decode_mailbox(encoded) == name


def test_a_server_that_never_ends_idle_fails_within_the_trip(lab, monkeypatch):
    from ansible_collections.mailops.health.plugins.module_utils import _smtp
    from lab.embedded import EmbeddedLab
    with EmbeddedLab(faults={'imap': ['idle_never_ends']}) as faulty:
        faulty.store.clear('bob')
        original = _smtp.run_session

        def send_elsewhere(params, check, message=None):
            if message is None:
                return original(params, check)
            return original(dict(params), check, (message[0], [faulty.address('alice')], message[2]))

        monkeypatch.setattr(_smtp, 'run_session', send_elsewhere)
        start = time.monotonic()
        with pytest.raises(ProbeError) as info:
            mail_roundtrip(imap_roundtrip(faulty, connection_interval=1, max_trip_time=4))
        assert info.value.stage == 'search' and 'IDLE' in info.value.message
        assert time.monotonic() - start < 4 + 3


def test_batch_of_imap_probes(lab, capsys):
    from ansible_collections.mailops.health.plugins.modules import mail_roundtrip_batch

    from .helpers import run_module
    for user in ('alice', 'bob'):
        lab.store.clear(user)
    probes = [dict((k, v) for k, v in imap_roundtrip(lab, user=user).items() if v is not None)
              for user in ('alice', 'bob', 'alice')]
    result = run_module(capsys, mail_roundtrip_batch, dict(probes=probes, parallel=2))
    assert result['_rc'] == 0, result['_raw']
    assert result['ok'] == 3
    assert [entry['mailbox'] for entry in result['results']] == [
        'alice@127.0.0.1:%d' % lab.ports['imap'], 'bob@127.0.0.1:%d' % lab.ports['imap'],
        'alice@127.0.0.1:%d' % lab.ports['imap']]
    assert lab.store.messages('alice') == [] and lab.store.messages('bob') == []


def test_tokenize_refuses_deep_nesting():
    """A hostile server's thousands of parentheses are a malformed response, not a RecursionError."""
    with pytest.raises(ValueError):
        tokenize('CAPABILITY ' + '(' * 5000 + ')' * 5000, [])
    assert tokenize('X ' + '(' * 10 + ')' * 10, [])[0] == 'X'


def test_a_line_streamed_without_end_during_idle_stays_bounded(lab):
    """A server that streams bytes without a line end while the client waits in IDLE cannot grow
    the client's buffer without bound."""
    import socket

    from ansible_collections.mailops.health.plugins.module_utils._probe import Secrets
    from ansible_collections.mailops.health.plugins.module_utils._session import MAX_LINE, Session
    a, b = socket.socketpair()
    session = Session('imap', '127.0.0.1', 1, 5, None, secrets=Secrets())
    session.sock = a
    session.extend(5)
    stop = threading.Event()

    def flood():
        try:
            while not stop.is_set():
                b.sendall(b'x' * 65536)
        except OSError:
            pass
    threading.Thread(target=flood, daemon=True).start()
    try:
        assert session.wait_line('search', 1.0) is None
        assert len(session._buffer) <= 4 * MAX_LINE + 65536
    finally:
        stop.set()
        a.close()
        b.close()
