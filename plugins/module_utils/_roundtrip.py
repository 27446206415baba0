# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The round trip: send a uniquely tagged mail over SMTP, watch a POP3 mailbox until exactly
that mail is there, delete it and only it."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from email.parser import HeaderParser
from email.utils import parsedate_to_datetime

from ansible_collections.mailops.health.plugins.module_utils import _pop3, _smtp
from ansible_collections.mailops.health.plugins.module_utils._probe import (
    ProbeError, Refused, check_options, check_range, endpoint_label, endpoint_port, ms_since, new_session, probe,
    validate_endpoint,
)

TOKEN_HEADER = 'X-Mailops-Roundtrip'
SUBJECT_MARK = 'mailops.health round trip'
# A healthy system delivers within milliseconds: the first check comes that soon (see bench/).
FIRST_CHECK_DELAY = 0.01
# More new messages than this since the previous check: one full UIDL listing is cheaper.
APPENDED_LIMIT = 20
_TOKEN = re.compile(r'^[0-9a-f]{32}$')
_SHARED = ('validate_certs', 'ca_path', 'timeout', 'allow_cleartext_auth')

# mail_roundtrip_batch: how many mailboxes may be worked on at once, and when the batch fails.
MAX_PARALLEL = 200
FAIL_ON = ('any', 'all', 'none')
# What each probe of a batch reports besides index, mailbox, ok, status and, on failure, stage and msg.
_BATCH_FIELDS = (('token', None), ('sent', False), ('trip_time_ms', None), ('total_ms', None), ('attempts', 0),
                 ('stale_deleted', 0))
# Failed probes named in the message of a failed batch; all of them are in its results.
_LISTED_FAILURES = 10


def side(params, prefix, extra=()):
    """The options of one side (smtp_* or pop3_*) in the shape the single-protocol core takes."""
    one = dict((key, params.get(key)) for key in _SHARED + tuple(extra))
    for key in ('host', 'port', 'tls_mode', 'username', 'password'):
        one[key] = params.get('%s_%s' % (prefix, key))
    return one


def parse_headers(lines):
    return HeaderParser().parsestr('\r\n'.join(lines) + '\r\n\r\n')


def token_of(headers):
    """The token of a mail this module sent, or None: exactly one token header holding a
    well-formed token, repeated in the subject after our mark. Copies of our prefix, forged or
    malformed headers never qualify."""
    values = [str(v).strip() for v in headers.get_all(TOKEN_HEADER) or ()]
    if len(values) != 1 or not _TOKEN.match(values[0]):
        return None
    # A long subject arrives folded over several lines: compare it unfolded.
    subject = ' '.join(str(headers.get('Subject', '')).split())
    return values[0] if '%s %s' % (SUBJECT_MARK, values[0]) in subject else None


def sent_before(headers, moment):
    """Whether the Date header lies before moment (epoch seconds); unknown dates never do."""
    try:
        return parsedate_to_datetime(str(headers.get('Date', ''))).timestamp() < moment
    except (TypeError, ValueError, IndexError, OverflowError):
        return False


def poll_delays(interval):
    """Adaptive polling: quick first checks (a mail usually lands within milliseconds on a
    healthy system), doubling up to connection_interval."""
    delay = min(FIRST_CHECK_DELAY, interval)
    while True:
        yield delay
        delay = min(delay * 2, interval)


def ticks(deadline, interval, immediately=False):
    """Sleep through the adaptive schedule, yielding at each check, while the deadline allows."""
    if immediately:
        yield
    for delay in poll_delays(interval):
        if time.monotonic() + delay > deadline:
            return
        time.sleep(delay)
        yield


def validate(params):
    check_options(params)
    check_range('max_trip_time', params.get('max_trip_time'), 1, 3600)
    check_range('connection_interval', params.get('connection_interval'), 0.01, 600)
    if len(_smtp.normalize_recipients(params.get('mail_to'))) != 1:
        raise ProbeError('input', 'mail_to must be exactly one address for a round trip')


class Mailbox:
    """The POP3 side: remembers which messages it has already looked at, so each check only
    reads the headers of new messages (UIDL + TOP)."""

    def __init__(self, params, check):
        self.params = params
        self.check = check
        self.label = endpoint_label('pop3', params['host'], endpoint_port('pop3', params))
        self.seen = set()
        self.locked = 0
        # (message count, UIDL of the last message) at the previous full listing or check.
        self.tail = None
        # False once the server gave two messages the same UIDL: then UIDLs tell nothing and
        # every check reads the headers of every message.
        self.unique_uids = True

    def distrust_uids(self):
        if self.unique_uids:
            self.unique_uids = False
            self.check.warnings.append('%s gives several messages the same UIDL; every check reads the headers of '
                                       'every message instead' % self.label)

    def appended(self, client):
        """The numbers of the messages that arrived since the previous check, or None when that
        cannot be told cheaply. POP3 only appends: if the message that was last then still has
        the same number and UIDL, nothing before it was removed and the new ones follow it, so
        a large mailbox costs STAT and a few single UIDLs instead of a full listing."""
        if self.tail is None:
            return None
        count = client.stat()[0]
        last_count, last_uid = self.tail
        if count < last_count or count - last_count > APPENDED_LIMIT:
            return None
        if last_count and client.uid(last_count) != last_uid:
            return None
        return range(count, last_count, -1)

    def new_messages(self, client):
        """(number, uid) of the messages not looked at yet, newest first."""
        if self.unique_uids:
            numbers = self.appended(client)
            if numbers is not None:
                new = [(n, client.uid(n)) for n in numbers]
                uids = [uid for _n, uid in new]
                if None not in uids:
                    if len(set(uids)) < len(uids) or self.seen.intersection(uids):
                        # A new message cannot carry the UIDL of another one (RFC 1939 7).
                        self.distrust_uids()
                    else:
                        self.tail = (numbers[0], new[0][1]) if new else self.tail
                        return new
        listing = client.listing('UIDL', 'search') if self.unique_uids else None
        if listing is not None and len(set(listing.values())) < len(listing):
            self.distrust_uids()
        if listing is not None and self.unique_uids:
            count = max(listing) if listing else 0
            self.tail = (count, listing.get(count))
            return [(n, uid) for n, uid in sorted(listing.items(), reverse=True) if uid not in self.seen]
        # No UIDL, or UIDLs that are not unique: every message is new to us in every session.
        numbers = listing if listing is not None else client.listing('LIST', 'search') or {}
        return [(n, None) for n in sorted(numbers, reverse=True)]

    def visit(self, timeout, token=None, stale_before=None):
        """One POP3 session: delete the mails carrying token and, with stale_before, earlier
        probes' mails dated before it; remember every other message as seen."""
        params = dict(self.params, timeout=timeout)
        session = new_session('pop3', params, self.check)
        start = time.monotonic()
        client, facts = _pop3.open_session(session, params, self.check.warnings)
        ours, stale = [], []
        try:
            for number, uid in self.new_messages(client):
                if token is not None or stale_before is not None:
                    headers = parse_headers(client.headers(number))
                    found = token_of(headers)
                    if found is not None and found == token:
                        facts.setdefault('seen_at', time.monotonic())
                        ours.append(number)
                        continue
                    if found is not None and stale_before is not None and sent_before(headers, stale_before):
                        stale.append(number)
                        continue
                if uid is not None:
                    self.seen.add(uid)
            for number in ours + stale:
                client.delete(number)
            try:
                client.quit()
            except Refused as e:
                if ours or stale:
                    # RFC 1939 6: -ERR to QUIT after DELE means deleted messages were not removed.
                    raise ProbeError('quit', '%s; the deletion was not committed and the mail stays in the mailbox'
                                     % e.message)
                raise
            except ProbeError as e:
                if ours or stale:
                    raise ProbeError('quit', '%s; DELE was accepted but QUIT got no answer, so it is not known whether '
                                     'the server removed the mail (cleanup_stale removes it later if it stayed)'
                                     % e.message)
                raise
        finally:
            client.session.close()
        facts['copies'] = len(ours)
        facts['stale_deleted'] = len(stale)
        facts['response_time_ms'] = ms_since(start)
        return facts

    def check_once(self, deadline, **kwargs):
        """visit() within the deadline; None when another session holds the mailbox lock, which
        is worth another try rather than a failure."""
        timeout = max(1, min(self.params['timeout'] or 60, deadline - time.monotonic()))
        try:
            return on_side('pop3', self.visit, timeout, **kwargs)
        except ProbeError as e:
            if e.stage == 'login' and _pop3.is_locked(e.message):
                self.locked += 1
                return None
            raise


def on_side(name, call, *args, **kwargs):
    """Run one side's step; what it measured before failing goes under its name."""
    try:
        return call(*args, **kwargs)
    except ProbeError as e:
        e.result = {name: e.result}
        raise


def prepare(params):
    """Check a round trip's options before anything is sent (ProbeError at stage input) and split
    them into the SMTP side and the POP3 side."""
    validate(params)
    smtp_params = side(params, 'smtp', ('smtp_auth', 'auth_mechanism', 'helo', 'mail_from', 'mail_to'))
    smtp_params['send_mail'] = True
    _smtp.validate(smtp_params)
    pop3_params = side(params, 'pop3', ('pop3_auth',))
    validate_endpoint(pop3_params)
    return smtp_params, pop3_params


def mail_roundtrip(params, check_mode=False):
    """The mail_roundtrip module's core: returns the result dict, raises ProbeError on failure."""
    smtp_params, pop3_params = prepare(params)
    token = uuid.uuid4().hex
    recipients = _smtp.normalize_recipients(params['mail_to'])
    subject = ('%s %s %s' % (params.get('subject_prefix') or '', SUBJECT_MARK, token)).strip()
    data, message_id = _smtp.build_message(
        params['mail_from'], recipients, subject,
        'Round-trip test mail sent by mailops.health.mail_roundtrip; it deletes this mail when it arrives.\n',
        headers={TOKEN_HEADER: token})
    max_trip_time = params.get('max_trip_time') or 30
    interval = params.get('connection_interval') or 5
    cleanup_stale = params.get('cleanup_stale', False)

    def body(check):
        warnings = check.warnings
        result = {'token': token, 'message_id': None, 'attempts': 0, 'trip_time_ms': None, 'stale_deleted': 0,
                  'changed': False}
        mailbox = Mailbox(pop3_params, check)
        pop3_label = mailbox.label
        try:
            # A first POP3 session before anything is sent: it proves the login works (so a bad
            # POP3 password never leaves a mail behind), records which messages are not ours and,
            # with cleanup_stale, removes what earlier runs left behind.
            stale_before = time.time() - max_trip_time if cleanup_stale and not check_mode else None
            deadline = time.monotonic() + max_trip_time
            for _tick in ticks(deadline, interval, immediately=True):
                facts = mailbox.check_once(deadline, stale_before=stale_before)
                if facts is not None:
                    break
            else:
                raise ProbeError('login', '%s: the mailbox stayed locked by another session for max_trip_time %s s'
                                 % (pop3_label, max_trip_time))
            result['pop3'] = facts
            result['stale_deleted'] = facts.pop('stale_deleted')
            result['changed'] = result['stale_deleted'] > 0
            if check_mode:
                result['smtp'] = on_side('smtp', _smtp.run_session, smtp_params, check)
                result['total_ms'] = round(result['smtp']['response_time_ms'] + facts['response_time_ms'], 1)
                result['sent'] = False
                return result
            result['smtp'] = on_side('smtp', _smtp.run_session, smtp_params, check,
                                     (params['mail_from'], recipients, data))
            sent_at = time.monotonic()
            result['message_id'] = message_id
            result['sent'] = True
            for _tick in ticks(sent_at + max_trip_time, interval):
                result['attempts'] += 1
                facts = mailbox.check_once(sent_at + max_trip_time, token=token)
                if facts is not None and facts['copies']:
                    if facts['copies'] > 1:
                        warnings.append('%s: the test mail arrived %d times; every copy was deleted'
                                        % (pop3_label, facts['copies']))
                    facts.pop('stale_deleted')
                    result['pop3'] = facts
                    result['trip_time_ms'] = round((facts.pop('seen_at') - sent_at) * 1000.0, 1)
                    result['total_ms'] = round(result['smtp']['response_time_ms'] + facts['response_time_ms'], 1)
                    result['deleted'] = True
                    return result
            locked = '; the mailbox was locked by another session in %d of them' % mailbox.locked if mailbox.locked else ''
            raise ProbeError('timeout', '%s: the mail with token %s did not arrive within max_trip_time %s s '
                             '(%d mailbox checks%s); it stays in the mailbox if it arrives later'
                             % (pop3_label, token, max_trip_time, result['attempts'], locked))
        except ProbeError as e:
            e.result = dict(result, **e.result)
            raise

    return probe(params, 'total_ms', body)


def mailbox_of(params):
    """(host, port, user) of the POP3 mailbox a probe reads, with the port the probe will use."""
    pop3 = side(params, 'pop3')
    return pop3['host'], endpoint_port('pop3', pop3), pop3['username']


def mailbox_label(mailbox):
    host, port, user = mailbox
    return '%s@%s:%s' % (user, '[%s]' % host if ':' in host else host, port)


def batch_entry(index, params, check_mode=False):
    """One probe of a batch as a plain result and its warnings. Never raises: a bug of ours met
    by one probe fails that probe, not the batch."""
    entry = {'index': index, 'mailbox': mailbox_label(mailbox_of(params))}
    try:
        result = mail_roundtrip(params, check_mode)
        failure = None
    except ProbeError as e:
        result, failure = e.result, (e.stage, e.message)
    except Exception as e:  # a bug of ours: this probe fails with stage internal, the batch goes on
        result, failure = {}, ('internal', 'internal error: %s: %s' % (type(e).__name__, e))
    entry['ok'] = failure is None
    entry['status'] = result.get('status', 'down')
    for key, default in _BATCH_FIELDS:
        entry[key] = result.get(key, default)
    if failure is not None:
        entry['stage'], entry['msg'] = failure
    if 'transcript' in result:
        entry['transcript'] = result['transcript']
    return entry, result.get('warnings', [])


def run_many(probes, parallel=10, check_mode=False):
    """Run many round trips (each a dict of mail_roundtrip's options) in threads: probes on the same
    POP3 mailbox one after another (together they would only wait for each other's mailbox lock),
    up to parallel mailboxes at once. Every probe's input is checked before anything is sent.
    Returns results (in the order of probes), ok, failed_count, wall_ms, round_trips_per_minute,
    changed and warnings (prefixed with the probe's index)."""
    check_range('parallel', parallel, 1, MAX_PARALLEL)
    if not probes:
        raise ProbeError('input', 'probes is empty: a batch needs at least one probe')
    errors = []
    for index, params in enumerate(probes):
        try:
            prepare(params)
        except ProbeError as e:
            errors.append('probes[%d]: %s' % (index, e.message))
    if errors:
        raise ProbeError('input', '; '.join(errors))

    queues = {}
    for index, params in enumerate(probes):
        queues.setdefault(mailbox_of(params), []).append(index)
    done = [None] * len(probes)

    def work(indexes):
        for index in indexes:
            done[index] = batch_entry(index, probes[index], check_mode)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(parallel, len(queues))) as pool:
        # Longest queues first, so that one long queue does not start last and finish alone.
        futures = [pool.submit(work, indexes) for indexes in sorted(queues.values(), key=len, reverse=True)]
        for future in futures:
            future.result()
    wall_ms = ms_since(start)
    results = [entry for entry, _warnings in done]
    ok = sum(1 for entry in results if entry['ok'])
    return {
        'changed': any(entry['stale_deleted'] for entry in results),
        'results': results,
        'ok': ok,
        'failed_count': len(results) - ok,
        'wall_ms': wall_ms,
        'round_trips_per_minute': round(ok * 60000.0 / wall_ms, 1) if wall_ms else 0.0,
        'warnings': ['probes[%d]: %s' % (index, warning)
                     for index, (_entry, warnings) in enumerate(done) for warning in warnings],
    }


def mail_roundtrip_batch(params, probes, check_mode=False):
    """The mail_roundtrip_batch module's core: run_many() with params parallel and fail_on; a
    failed batch raises ProbeError at the stage of its first failed probe, with the whole result."""
    fail_on = params.get('fail_on') or 'any'
    if fail_on not in FAIL_ON:
        raise ProbeError('input', 'fail_on must be one of %s, got %s' % (', '.join(FAIL_ON), fail_on))
    parallel = 10 if params.get('parallel') is None else params['parallel']
    batch = run_many(probes, parallel, check_mode)
    failed = [entry for entry in batch['results'] if not entry['ok']]
    if failed and (fail_on == 'any' or (fail_on == 'all' and not batch['ok'])):
        listed = '; '.join('probes[%d] (%s) at stage %s: %s' % (entry['index'], entry['mailbox'], entry['stage'], entry['msg'])
                           for entry in failed[:_LISTED_FAILURES])
        if len(failed) > _LISTED_FAILURES:
            listed += '; and %d more (see results)' % (len(failed) - _LISTED_FAILURES)
        raise ProbeError(failed[0]['stage'], '%d of %d probes failed (fail_on=%s): %s'
                         % (len(failed), len(batch['results']), fail_on, listed), batch)
    return batch
