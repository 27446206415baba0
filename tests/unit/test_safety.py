"""Nothing lost: a probe deletes only its own mail, also when many probes share one mailbox full
of look-alikes, and cleanup_stale removes only earlier probes' leftovers."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from email.utils import formatdate

import pytest

from lab.embedded import EmbeddedLab

from ansible_collections.mailops.health.plugins.module_utils._roundtrip import (
    SUBJECT_MARK, TOKEN_HEADER, mail_roundtrip,
)

from .helpers import roundtrip_params


def probe_mail(token, age_seconds, prefix='[health]', header_token=None):
    """A mail shaped like one a probe sent age_seconds ago."""
    return ('From: monitor@lab.test\r\nTo: bob@lab.test\r\nSubject: %s %s %s\r\nDate: %s\r\n%s: %s\r\n\r\nbody\r\n'
            % (prefix, SUBJECT_MARK, token, formatdate(time.time() - age_seconds, usegmt=True), TOKEN_HEADER,
               header_token or token)).encode()


LOOK_ALIKES = [
    b'Subject: an ordinary mail\r\n\r\nhello\r\n',
    # Our prefix and mark, but no token header at all.
    ('Subject: [health] %s 0123456789abcdef0123456789abcdef\r\n\r\nx\r\n' % SUBJECT_MARK).encode(),
    # Forged header: the token does not match the subject.
    probe_mail('0123456789abcdef0123456789abcdef', 0, header_token='fedcba9876543210fedcba9876543210'),
    # Malformed token headers.
    probe_mail('not-a-token', 0),
    # Two token headers.
    ('Subject: %s %s\r\n%s: %s\r\n%s: %s\r\n\r\nx\r\n'
     % (SUBJECT_MARK, 'a' * 32, TOKEN_HEADER, 'a' * 32, TOKEN_HEADER, 'a' * 32)).encode(),
    b'Subject: bad bytes \xff\xfe\xfa\r\nX-Mailops-Roundtrip: \xff\xfe\r\n\r\nx\r\n',
    # Oversized and non-UTF-8 headers.
    b'Subject: huge\r\nX-Huge: ' + b'A' * 200000 + b'\r\n\r\nx\r\n',
    b'Subject: =?iso-8859-1?q?caf=E9?=\r\nX-Latin1: caf\xe9\r\n\r\nx\r\n',
]


RECEIVE = pytest.mark.parametrize('receive', ['pop3', 'imap'])


@RECEIVE
def test_parallel_roundtrips_on_one_shared_mailbox(lab, receive):
    lab.store.clear('bob')
    foreign = [lab.store.add('bob', raw) for raw in LOOK_ALIKES]
    results, errors = [], []

    def run():
        try:
            results.append(mail_roundtrip(roundtrip_params(lab, receive=receive, connection_interval=0.2,
                                                           max_trip_time=20)))
        except Exception as e:  # collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run) for _n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 8
    assert len({r['token'] for r in results}) == 8
    assert all(r['deleted'] and r[receive]['copies'] == 1 for r in results)
    assert [m.uid for m in lab.store.messages('bob')] == foreign


@RECEIVE
def test_cleanup_stale_removes_only_old_leftovers(lab, receive):
    lab.store.clear('bob')
    keep = [lab.store.add('bob', raw) for raw in LOOK_ALIKES]
    # Another probe's mail, sent a moment ago: still in flight, must stay.
    keep.append(lab.store.add('bob', probe_mail(uuid.uuid4().hex, 1)))
    # An old look-alike whose token is malformed: not ours to judge.
    keep.append(lab.store.add('bob', probe_mail('0123456789ABCDEF0123456789ABCDEF', 3600)))
    for _n in range(3):
        lab.store.add('bob', probe_mail(uuid.uuid4().hex, 3600))
    result = mail_roundtrip(roundtrip_params(lab, receive=receive, cleanup_stale=True, max_trip_time=30))
    assert result['stale_deleted'] == 3
    assert result['changed'] is True
    assert sorted(m.uid for m in lab.store.messages('bob')) == sorted(keep)


@RECEIVE
def test_without_cleanup_stale_leftovers_stay(lab, receive):
    lab.store.clear('bob')
    leftover = lab.store.add('bob', probe_mail(uuid.uuid4().hex, 3600))
    result = mail_roundtrip(roundtrip_params(lab, receive=receive))
    assert result['stale_deleted'] == 0
    assert result['changed'] is False
    assert [m.uid for m in lab.store.messages('bob')] == [leftover]


@RECEIVE
def test_check_mode_never_deletes_leftovers(lab, receive):
    lab.store.clear('bob')
    leftover = lab.store.add('bob', probe_mail(uuid.uuid4().hex, 3600))
    result = mail_roundtrip(roundtrip_params(lab, receive=receive, cleanup_stale=True), check_mode=True)
    assert result['stale_deleted'] == 0
    assert [m.uid for m in lab.store.messages('bob')] == [leftover]


@RECEIVE
@pytest.mark.parametrize('raw', LOOK_ALIKES[-3:], ids=['bad-bytes', 'oversized', 'latin1'])
def test_hostile_foreign_headers_do_not_break_the_probe(lab, raw, receive):
    lab.store.clear('bob')
    lab.store.add('bob', raw)
    result = mail_roundtrip(roundtrip_params(lab, receive=receive, cleanup_stale=True))
    assert result['deleted'] is True
    assert len(lab.store.messages('bob')) == 1


@RECEIVE
def test_a_killed_run_leaves_a_mail_the_next_run_removes(tmp_path, receive):
    """A probe killed after sending cannot delete its mail; the next run with cleanup_stale does."""
    with EmbeddedLab(faults={'smtp': ['deliver_late:2']}) as lab:
        params = roundtrip_params(lab, receive=receive, max_trip_time=5, transcript=False)
        (tmp_path / 'params.json').write_text(json.dumps(params))
        script = ('import json, sys; from ansible_collections.mailops.health.plugins.module_utils._roundtrip '
                  'import mail_roundtrip; mail_roundtrip(json.load(open(sys.argv[1])))')
        probe = subprocess.Popen([sys.executable, '-c', script, str(tmp_path / 'params.json')],
                                 env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        # The lab accepts the mail at once and puts it in the mailbox 2 s later; the probe is
        # killed in between, while it waits for its mail.
        time.sleep(1.2)
        assert probe.poll() is None, 'the probe ended before it was killed'
        probe.send_signal(signal.SIGKILL)
        probe.wait(10)
        deadline = time.monotonic() + 10
        while not lab.store.messages('bob') and time.monotonic() < deadline:
            time.sleep(0.05)
        leftover = lab.store.messages('bob')
        assert len(leftover) == 1
        time.sleep(1.5)  # the leftover is now older than the next run's max_trip_time
        result = mail_roundtrip(roundtrip_params(lab, receive=receive, max_trip_time=3, cleanup_stale=True))
        assert result['stale_deleted'] == 1
        assert lab.store.messages('bob') == []
