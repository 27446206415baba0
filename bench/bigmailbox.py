"""[4/5] Large mailbox: how long the round trip takes to find its mail in a mailbox (`shared`)
holding 10,000 other messages, against an empty mailbox (rt08), over POP3 and over IMAP,
interleaved trip by trip (the four kinds in a shuffled order per round).

The 10,000 messages are written straight into /var/vmail/shared/Maildir/new in the mailbox
container (one tar through the engine's put_archive, owned by vmail 5000:5000, Maildir names
with S= and W= sizes as Dovecot writes them), then one POP3 login lets Dovecot index them (its
time is reported). Afterwards they are removed by name (every filler file carries
'.mailopsbench' in its name) and a POP3 STAT must show the mailbox empty.

Figures per trip: trip_time_ms (SMTP acceptance -> the probe parsed its token: the time to find),
the whole mail_roundtrip call, the first visit (before sending; POP3: a session that reads the
10,000 UIDs once; IMAP: connect, login, LIST, SELECT of the 10,000-message INBOX, NOOP) and the
visit that found the mail (POP3: a session, UIDL again + TOP of the new message only; IMAP: on
the open connection, NOOP, UID SEARCH HEADER over the folder, STATUS Junk, UID FETCH of the
match, UID STORE + UID EXPUNGE).
"""

from __future__ import annotations

import io
import random
import tarfile
import time
from email.utils import formatdate

from bench import hooks
from bench.common import SHARED, Progress, import_core, roundtrip_params, say, summary

PATHS = {'pop3': 'submission+pop3s', 'imap': 'submission+imaps'}
GOALS = {'pop3': 2.0, 'imap': 1.2}   # full / empty, median trip time

FULL, EMPTY = SHARED, 'rt08'
MARK = 'mailopsbench'


def filler_tar(count: int) -> bytes:
    buf = io.BytesIO()
    now = int(time.time())
    rng = random.Random(4)
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for i in range(count):
            body = ('Line %d of an ordinary message that is not a probe mail.\r\n' % i) * rng.randint(3, 20)
            msg = ('Return-Path: <sender%d@example.net>\r\nFrom: Sender %d <sender%d@example.net>\r\n'
                   'To: shared@lab.test\r\nSubject: bench filler %d\r\nDate: %s\r\n'
                   'Message-ID: <%d.%s@example.net>\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s'
                   % (i % 97, i % 97, i % 97, i, formatdate(now - count + i, usegmt=True), i, MARK, body)).encode()
            vsize = len(msg)
            size = len(msg.replace(b'\r\n', b'\n'))
            # Dovecot stores LF line ends on disk; S= is the file size, W= the CRLF (POP3) size.
            data = msg.replace(b'\r\n', b'\n')
            info = tarfile.TarInfo('%d.M%dP1.%s,S=%d,W=%d' % (now - count + i, i, MARK, size, vsize))
            info.size = len(data)
            info.uid = info.gid = 5000
            info.uname = info.gname = 'vmail'
            info.mode = 0o600
            info.mtime = now - count + i
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fill(lab, count: int) -> dict:
    lab.pop3_stat(FULL)  # the Maildir exists
    t0 = time.monotonic()
    data = filler_tar(count)
    maildir = lab.data['maildir'].format(username=FULL)
    ok = lab.container('mailbox').put_archive(maildir + '/new', data)
    if not ok:
        raise RuntimeError('put_archive failed')
    # put_archive keeps the tar's owners, but make sure Dovecot (vmail) can rename them.
    lab.exec('mailbox', ['sh', '-c', 'chown 5000:5000 %s/new/*.%s* 2>/dev/null || true' % (maildir, MARK)])
    written = time.monotonic() - t0
    t1 = time.monotonic()
    n, _size = lab.pop3_stat(FULL)
    index = time.monotonic() - t1
    t2 = time.monotonic()
    lab.pop3_stat(FULL)
    second = time.monotonic() - t2
    return {'messages': n, 'write_s': round(written, 2), 'tar_mib': round(len(data) / 2**20, 1),
            'first_login_index_s': round(index, 2), 'second_login_s': round(second, 3)}


def clean(lab) -> dict:
    maildir = lab.data['maildir'].format(username=FULL)
    code, out = lab.exec('mailbox', ['sh', '-c', "find %s/new %s/cur -type f -name '*.%s*' -delete; echo done"
                                     % (maildir, maildir, MARK)])
    deleted, kept = lab.clean_probe_mail(FULL)  # probe mails of a failed trip, if any; resyncs Dovecot
    n = lab.pop3_stat(FULL)[0]
    return {'exec_rc': code, 'probe_mails_deleted': deleted, 'other_mails': kept, 'messages_after': n,
            'maildir_files_after': lab.maildir_count(FULL)}


def run(lab, messages=10000, trips=20, step=4, steps=5) -> dict:
    _smtp, _pop3, rt, _probe = import_core()
    hooks.install(rt)
    say('[%d/%d] large mailbox: %d messages into %s, then %d round trips each on %s (full) and %s (empty), '
        'over POP3 and IMAP' % (step, steps, messages, FULL, trips, FULL, EMPTY))
    for user in (FULL, EMPTY):
        lab.clean_probe_mail(user)
    before = lab.pop3_stat(FULL)[0]
    filled = fill(lab, messages)
    say('[%d/%d] large mailbox: wrote %d messages in %.1f s; first POP3 login (Dovecot indexes) %.1f s'
        % (step, steps, filled['messages'], filled['write_s'], filled['first_login_index_s']))
    rows = []
    progress = Progress(step, steps, 'large mailbox', trips)
    rng = random.Random(4)
    kinds = [(user, protocol) for protocol in PATHS for user in (FULL, EMPTY)]
    try:
        for _trip in range(trips):
            order = list(kinds)
            rng.shuffle(order)
            for user, protocol in order:
                time.sleep(0.05)
                t0 = time.monotonic()
                with hooks.observe() as trace:
                    r = rt.mail_roundtrip(roundtrip_params(lab, user, PATHS[protocol]))
                wall = (time.monotonic() - t0) * 1000
                visits = trace['visits']
                rows.append({'mailbox': 'full' if user == FULL else 'empty', 'protocol': protocol,
                             'trip_time_ms': r['trip_time_ms'], 'roundtrip_ms': round(wall, 1),
                             'attempts': r['attempts'],
                             'first_session_ms': round((visits[0]['end'] - visits[0]['start']) * 1000, 1),
                             'finding_session_ms': round((visits[-1]['end'] - visits[-1]['start']) * 1000, 1)})
            progress.tick()
    finally:
        cleaned = clean(lab)
    out = {'messages': messages, 'full_account': FULL, 'empty_account': EMPTY, 'messages_before': before,
           'fill': filled, 'cleanup': cleaned, 'trips_each': trips, 'paths': PATHS, 'goal_ratio': GOALS,
           'figures': figures(rows), 'rows': rows}
    return out


def figures(rows) -> dict:
    """{protocol: {figure: {full, empty, ratio of medians}}}."""
    out = {}
    for protocol in PATHS:
        mine = [r for r in rows if r['protocol'] == protocol]
        out[protocol] = {}
        for key in ('trip_time_ms', 'roundtrip_ms', 'first_session_ms', 'finding_session_ms', 'attempts'):
            full = summary([r[key] for r in mine if r['mailbox'] == 'full'])
            empty = summary([r[key] for r in mine if r['mailbox'] == 'empty'])
            out[protocol][key] = {'full': full, 'empty': empty,
                                  'ratio': round(full['median'] / empty['median'], 2) if empty.get('median') else None}
    return out
