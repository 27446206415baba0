"""mail_roundtrip's core against the embedded lab: SMTP in, POP3 out, only our mail deleted."""

import threading
import time

import pytest

from ansible_collections.mailops.health.plugins.module_utils import _roundtrip
from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from lab.embedded import EmbeddedLab

from .helpers import roundtrip_params

FOREIGN = [
    b'Subject: an ordinary mail\r\n\r\nhello\r\n',
    # Copies our subject prefix and mark, with another token in the header.
    b'Subject: [health] mailops.health round trip 0123456789abcdef0123456789abcdef\r\n'
    b'X-Mailops-Roundtrip: 0123456789abcdef0123456789abcdef\r\n\r\nnot ours\r\n',
    b'Subject: malformed\r\nX-Mailops-Roundtrip: \xff\xfe garbage\r\n\r\nnot ours\r\n',
]


@pytest.mark.parametrize('smtp_variant,smtp_tls,pop3_variant,pop3_tls,pop3_auth', [
    ('smtp', 'starttls', 'pop3', 'starttls', 'apop'),
    ('smtp', 'starttls', 'pop3', 'starttls', 'password'),
    ('smtp_tls', 'tls', 'pop3_tls', 'tls', 'password'),
    ('smtp_tls', 'tls', 'pop3_tls', 'tls', 'apop'),
    ('smtp_plain', 'none', 'pop3_plain', 'none', 'apop'),
])
def test_roundtrip_finds_and_deletes_only_its_mail(lab, smtp_variant, smtp_tls, pop3_variant, pop3_tls, pop3_auth):
    lab.store.clear('bob')
    foreign = [lab.store.add('bob', raw) for raw in FOREIGN]
    result = mail_roundtrip(roundtrip_params(lab, smtp_variant, pop3_variant, smtp_tls_mode=smtp_tls,
                                             pop3_tls_mode=pop3_tls, pop3_auth=pop3_auth))
    assert result['status'] == 'up'
    assert result['deleted'] is True
    assert len(result['token']) == 32
    assert result['attempts'] >= 1
    assert result['trip_time_ms'] >= 0
    assert result['total_ms'] == round(result['smtp']['response_time_ms'] + result['pop3']['response_time_ms'], 1)
    assert result['smtp']['queue_id']
    assert result['smtp']['tls']['established'] is (smtp_tls != 'none')
    assert result['pop3']['tls']['established'] is (pop3_tls != 'none')
    assert [m.uid for m in lab.store.messages('bob')] == foreign


def test_roundtrip_with_smtp_auth(lab):
    lab.store.clear('bob')
    result = mail_roundtrip(roundtrip_params(lab, smtp_auth='password', smtp_username='alice',
                                             smtp_password=lab.accounts['alice']))
    assert result['smtp']['auth_mechanism_used']
    assert lab.store.messages('bob') == []
    assert lab.accounts['alice'] not in '\n'.join(result['transcript'])


def test_only_new_messages_are_read(lab):
    lab.store.clear('bob')
    for i in range(20):
        lab.store.add('bob', b'Subject: old %d\r\n\r\nbody\r\n' % i)
    result = mail_roundtrip(roundtrip_params(lab))
    tops = [line for line in result['transcript'] if line.startswith('C: TOP')]
    assert len(tops) == 1  # only the new message's headers, not the 20 old ones
    assert len(lab.store.messages('bob')) == 20


def test_check_mode_logs_in_and_sends_nothing(lab):
    lab.store.clear('bob')
    result = mail_roundtrip(roundtrip_params(lab, smtp_auth='password', smtp_username='alice',
                                             smtp_password=lab.accounts['alice']), check_mode=True)
    assert result['sent'] is False
    assert result['message_id'] is None
    assert result['smtp']['auth_mechanism_used']
    assert lab.store.messages('bob') == []


def test_wrong_pop3_password_fails_before_sending(lab):
    lab.store.clear('bob')
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(roundtrip_params(lab, pop3_password='wrong-password-xyz'))
    assert info.value.stage == 'login'
    assert 'smtp' not in info.value.result
    assert lab.store.messages('bob') == []
    assert 'wrong-password-xyz' not in repr(info.value.result)


def test_mail_that_never_arrives_times_out(lab, monkeypatch):
    lab.store.clear('bob')
    # The mail goes to alice while the probe watches bob's mailbox: it never arrives there.
    params = roundtrip_params(lab, mail_to=lab.address('alice'), max_trip_time=1, connection_interval=0.2)
    start = time.monotonic()
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(params)
    assert time.monotonic() - start < 3
    assert info.value.stage == 'timeout'
    assert 'did not arrive within max_trip_time 1 s' in info.value.message
    assert info.value.result['attempts'] >= 3
    assert info.value.result['smtp']['queue_id']


def test_mail_arriving_late_is_found(lab):
    """A mail that lands while the probe polls (here: delivered by hand after a delay) is found."""
    lab.store.clear('bob')
    original = _roundtrip._smtp.run_session

    def send_elsewhere_then_deliver(params, check, message=None):
        if message is None:
            return original(params, check)
        result = original(dict(params), check, (message[0], [lab.address('alice')], message[2]))
        timer = threading.Timer(0.6, lab.store.deliver, (lab.address('bob'), message[2]))
        timer.start()
        return result

    _roundtrip._smtp.run_session = send_elsewhere_then_deliver
    try:
        result = mail_roundtrip(roundtrip_params(lab, connection_interval=0.2))
    finally:
        _roundtrip._smtp.run_session = original
    assert result['trip_time_ms'] >= 600
    assert result['attempts'] >= 3
    assert lab.store.messages('bob') == []


def test_polling_backs_off_to_connection_interval():
    delays = _roundtrip.poll_delays(1.0)
    assert [next(delays) for _step in range(9)] == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0]


@pytest.mark.parametrize('field,value,stage', [
    ('subject_prefix', 'x\r\nBcc: a@b', 'input'),
    ('mail_to', 'a@lab.test, b@lab.test', 'input'),
    ('max_trip_time', 0, 'input'),
    ('timeout', 901, 'input'),
])
def test_bad_input(lab, field, value, stage):
    params = roundtrip_params(lab)
    params[field] = value
    with pytest.raises(ProbeError) as info:
        mail_roundtrip(params)
    assert info.value.stage == stage
    assert field in info.value.message


def test_long_subject_prefix_is_found_although_folded(lab):
    lab.store.clear('bob')
    result = mail_roundtrip(roundtrip_params(lab, subject_prefix='[a prefix long enough to make the subject fold]'))
    assert result['deleted'] is True
    assert lab.store.messages('bob') == []


def test_checks_after_the_first_read_only_what_was_appended():
    """In a full mailbox each check costs STAT and single UIDLs, not a listing of every message."""
    with EmbeddedLab(faults={'smtp': ['deliver_late:0.5']}) as lab:
        foreign = [lab.store.add('bob', b'Subject: old %d\r\n\r\nbody\r\n' % i) for i in range(300)]
        result = mail_roundtrip(roundtrip_params(lab, connection_interval=0.1))
        assert result['attempts'] >= 3
        assert result['transcript'].count('C: UIDL') == 1  # the full listing before sending, only
        assert [m.uid for m in lab.store.messages('bob')] == foreign


def test_a_message_removed_meanwhile_falls_back_to_a_full_listing():
    with EmbeddedLab(faults={'smtp': ['deliver_late:0.6']}) as lab:
        foreign = [lab.store.add('bob', b'Subject: old %d\r\n\r\nbody\r\n' % i) for i in range(50)]
        # Another client deletes the last foreign message while the probe waits for its mail.
        threading.Timer(0.3, lab.store.delete, ('bob', [foreign[-1]])).start()
        result = mail_roundtrip(roundtrip_params(lab, connection_interval=0.1))
        assert result['deleted'] is True
        assert result['transcript'].count('C: UIDL') >= 2
        assert [m.uid for m in lab.store.messages('bob')] == foreign[:-1]
