# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The round trip: send a uniquely tagged mail over SMTP, watch a mailbox until exactly that
mail is there, delete it and only it. Protocol-free on the receive side: it talks to a Receiver.

A Receiver (_pop3.Pop3Mailbox, _imap.ImapMailbox) has
  side    the name its facts go under in the result ('pop3', 'imap')
  label   the endpoint for messages ('pop3 mail.example.com:995')
  busy    how many visits found the mailbox held by another session
  first_check_delay, check_growth (optional)
          seconds from sending to the first check and how fast the waits grow, when a check is
          cheaper than FIRST_CHECK_DELAY and CHECK_GROWTH allow for
  visit(timeout, sort=None)
          one look into the mailbox: log in (or reuse the open connection), find what is new
          (or what sort.token finds), hand the header lines of each candidate to sort()
          (-> 'ours', 'stale' or None), delete ours and stale, and return the facts of the look
          with seen_at (time.monotonic() when ours was first seen, or None), copies and
          stale_deleted; None when the mailbox was busy. With sort=None nothing is read.
  wait(seconds)
          wait before the next visit; True when the server said new mail arrived meanwhile
  close() end (log out when a connection is still open)
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import re
import time
import uuid
from email.parser import HeaderParser
from email.utils import parsedate_to_datetime

from ansible_collections.mailops.health.plugins.module_utils import _headers, _imap, _oauth, _pop3, _smtp
from ansible_collections.mailops.health.plugins.module_utils._probe import (
    DEFAULT_TIMEOUT, ProbeError, check_options, run_check, validate_endpoint,
)
from ansible_collections.mailops.health.plugins.module_utils._session import INSPECT, endpoint_port

TOKEN_HEADER = 'X-Mailops-Roundtrip'
SUBJECT_MARK = 'mailops.health round trip'
BODY = 'Round-trip test mail sent by mailops.health.mail_roundtrip; it deletes this mail when it arrives.\n'
# Defaults written once (the argument spec uses them too).
DEFAULT_MAX_TRIP_TIME = 30
DEFAULT_CONNECTION_INTERVAL = 5
# A healthy system delivers within milliseconds: the first check comes that soon, and the waits
# double from there (see bench/).
FIRST_CHECK_DELAY = 0.01
CHECK_GROWTH = 2.0
DENSE_UNTIL = 0.02
_TOKEN = re.compile(r'^[0-9a-f]{32}$')
_SHARED = ('validate_certs', 'ca_path', 'timeout', 'allow_cleartext_auth', 'address_family', 'source_address',
           'tls_min_version', 'cert_warning_days', 'cert_critical_days')
# The receive protocols and their receivers.
RECEIVERS = {'pop3': _pop3.Pop3Mailbox, 'imap': _imap.ImapMailbox}
RECEIVE_PROTOCOLS = ('pop3', 'imap')
JUNK_POLICIES = ('ok', 'warn', 'fail')
# The verdicts require_authentication can ask for (Authentication-Results, RFC 8601).
AUTH_METHODS = ('spf', 'dkim', 'dmarc')
# What makes a message worth reading whole: it may be a bounce (an RFC 3464 report, the senders of
# plain-text bounces, or an empty Return-Path).
_REPORT = re.compile(r'multipart/report', re.IGNORECASE)
_BOUNCER = re.compile(r'mailer-daemon|postmaster|mail delivery (sub)?system', re.IGNORECASE)


def side(params, prefix, extra=()):
    """The options of one side (smtp_* or pop3_*) in the shape the single-protocol core takes."""
    one = dict((key, params.get(key)) for key in _SHARED + tuple(extra))
    for key in ('host', 'port', 'tls_mode', 'tls_server_name', 'username', 'password', 'oauth2_token'):
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


class Sort:
    """sort() for Receiver.visit: 'ours' for the mail carrying token, 'stale' for an earlier
    probe's mail dated before stale_before (epoch seconds), None for everything else. header
    and token also let a receiver search on the server (IMAP UID SEARCH HEADER).

    With bounces, a message that may be a bounce is INSPECT: the receiver reads its start and
    asks inspect(lines), which says 'bounce' when it is a delivery report about our mail (its
    returned headers carry our token or Message-ID). With bounces_only nothing else is taken (the
    sender's mailbox). What was found stays here: the header lines of ours, the first bounce."""

    header = TOKEN_HEADER

    def __init__(self, token=None, stale_before=None, message_id=None, bounces=False, bounces_only=False):
        self.token = token
        self.stale_before = stale_before
        self.message_id = message_id
        self.bounces = bounces or bounces_only
        self.bounces_only = bounces_only
        self.headers = None
        self.bounce = None
        self.delays = []

    def __call__(self, header_lines):
        headers = parse_headers(header_lines)
        found = token_of(headers)
        if found is not None and not self.bounces_only:
            if found == self.token:
                if self.headers is None:
                    self.headers = list(header_lines)
                return 'ours'
            if self.stale_before is not None and sent_before(headers, self.stale_before):
                return 'stale'
        if self.bounces and found is None and self.may_be_bounce(headers):
            return INSPECT
        return None

    @staticmethod
    def may_be_bounce(headers):
        return bool(_REPORT.search(str(headers.get('Content-Type', ''))) or _BOUNCER.search(str(headers.get('From', '')))
                    or str(headers.get('Return-Path', '')).replace(' ', '') == '<>')

    def inspect(self, lines):
        """'bounce' for a delivery report about our mail (a failure, or a delay notice), else None."""
        report = _headers.delivery_status(lines)
        if report is None or not self.about_ours(report):
            return None
        if report.get('action') == 'delayed' or str(report.get('status') or '').startswith('4'):
            self.delays.append(report)
        elif self.bounce is None:
            self.bounce = report
        return 'bounce'

    def about_ours(self, report):
        returned = parse_headers(report.get('original_headers') or [])
        if self.token is not None and token_of(returned) == self.token:
            return True
        message_id = report.get('original_message_id')
        return bool(self.message_id and message_id and message_id.strip() == self.message_id)


def sorter(token=None, stale_before=None, **kwargs):
    """A Sort, or None when there is nothing to look for (then no headers are read)."""
    if token is None and stale_before is None:
        return None
    return Sort(token, stale_before, **kwargs)


def poll_delays(interval, first=FIRST_CHECK_DELAY, growth=CHECK_GROWTH):
    """Adaptive polling: quick first checks (a mail usually lands within milliseconds on a
    healthy system), each wait growth times the last while waits are under DENSE_UNTIL, then
    doubling, up to connection_interval."""
    delay = min(first, interval)
    while True:
        yield delay
        delay = min(delay * (growth if delay < DENSE_UNTIL else 2.0), interval)


def ticks(receiver, deadline, interval, immediately=False):
    """Wait through the adaptive schedule (receiver.wait: a sleep, or IMAP IDLE), yielding at
    each check, up to the deadline: a wait that would pass it is cut short, so the last check
    comes at the deadline (not a whole wait before it). A wait the server ends early with news of
    new mail starts the schedule again from the first delay."""
    if immediately:
        yield
    schedule = (interval, getattr(receiver, 'first_check_delay', FIRST_CHECK_DELAY),
                getattr(receiver, 'check_growth', CHECK_GROWTH))
    delays = poll_delays(*schedule)
    for delay in delays:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if receiver.wait(min(delay, left)):
            delays = poll_delays(*schedule)
        yield


def on_side(name, call, *args, **kwargs):
    """Run one side's step; what it measured before failing goes under its name."""
    try:
        return call(*args, **kwargs)
    except ProbeError as e:
        e.result = {name: e.result}
        raise


def validate(params):
    check_options(params)
    if len(_smtp.normalize_recipients(params.get('mail_to'))) != 1:
        raise ProbeError('input', 'mail_to must be exactly one address for a round trip')


def receive_side(params):
    """(protocol, options) of the receive side, in the shape the single-protocol core takes."""
    protocol = params.get('receive_protocol') or 'pop3'
    if protocol == 'pop3':
        return protocol, side(params, 'pop3', ('pop3_auth',))
    one = side(params, 'imap')
    one.update(imap_auth='oauth2' if params.get('imap_oauth2_token') else 'password',
               auth_mechanism=params.get('imap_auth_mechanism') or 'auto',
               folder=params.get('imap_folder') or _imap.DEFAULT_FOLDER, junk_folders=params.get('junk_folders'))
    return protocol, one


def sender_side(params):
    """(protocol, options) of the sender's mailbox, watched for bounces, or None when not given."""
    if not params.get('sender_host'):
        return None
    protocol = params.get('sender_protocol') or 'imap'
    one = side(params, 'sender')
    token = bool(one.get('oauth2_token'))
    if protocol == 'pop3':
        one['pop3_auth'] = 'xoauth2' if token else 'password'
    else:
        one.update(imap_auth='oauth2' if token else 'password', auth_mechanism='auto', folder=_imap.DEFAULT_FOLDER,
                   junk_folders=None)
    return protocol, one


def check_sender_side(params):
    found = sender_side(params)
    if found is None:
        return None
    protocol, one = found
    if protocol not in RECEIVE_PROTOCOLS:
        raise ProbeError('input', 'sender_protocol must be one of %s, got %s' % (', '.join(RECEIVE_PROTOCOLS), protocol))
    if not one.get('username') or not (one.get('password') or one.get('oauth2_token')):
        raise ProbeError('input', 'sender_host needs sender_username and sender_password (or sender_oauth2_token)')
    validate_endpoint(one)
    _oauth.validate(protocol, one, 'sender_oauth2_token')
    if (protocol, one['host'], endpoint_port(protocol, one), one['username']) == mailbox_of(params):
        raise ProbeError('input', 'sender_* name the mailbox the round trip reads; leave them out (that mailbox is '
                                  'watched for bounces anyway)')
    return found


def prepare(params):
    """Check a round trip's options before anything is sent (ProbeError at stage input) and split
    them into the SMTP side and the receive side."""
    validate(params)
    protocol = params.get('receive_protocol') or 'pop3'
    if protocol not in RECEIVE_PROTOCOLS:
        raise ProbeError('input', 'receive_protocol must be one of %s, got %s' % (', '.join(RECEIVE_PROTOCOLS), protocol))
    _protocol, receive_params = receive_side(params)
    secret = 'oauth2_token' if _oauth.uses_token(protocol, receive_params) else 'password'
    missing = ['%s_%s' % (protocol, key) for key in ('host', 'username', secret) if not receive_params.get(key)]
    if missing:
        raise ProbeError('input', 'receive_protocol=%s needs %s' % (protocol, ', '.join(missing)))
    smtp_params = side(params, 'smtp', ('smtp_auth', 'auth_mechanism', 'helo', 'mail_from', 'mail_to'))
    smtp_params['send_mail'] = True
    _smtp.validate(smtp_params, 'smtp_oauth2_token')
    validate_endpoint(receive_params)
    _oauth.validate(protocol, receive_params, '%s_oauth2_token' % protocol)
    check_sender_side(params)
    unknown = [m for m in params.get('require_authentication') or () if m not in AUTH_METHODS]
    if unknown:
        raise ProbeError('input', 'require_authentication may name %s, got %s' % (', '.join(AUTH_METHODS), ', '.join(unknown)))
    return smtp_params, receive_params


def mailbox_of(params):
    """(protocol, host, port, user) of the mailbox a probe reads, with the port it will use."""
    protocol, receive = receive_side(params)
    return protocol, receive['host'], endpoint_port(protocol, receive), receive['username']


def visits(receiver, deadline, interval, timeout, sort, immediately=False):
    """Visit the mailbox on the adaptive schedule while the deadline allows: yields each visit's
    facts, None when the mailbox was busy. Each visit's timeout ends by the deadline."""
    for _tick in ticks(receiver, deadline, interval, immediately):
        yield on_side(receiver.side, receiver.visit, max(1, round(min(timeout, deadline - time.monotonic()), 1)), sort)


def await_mail(result, watched, sender, sent_at, max_trip_time, interval, timeout):
    """Visit the mailbox (watched: the receiver and its sort) until the mail is there, and the
    sender's mailbox (sender: its receiver, or None, and sort) after each visit that found
    nothing; returns the finding visit's facts. A bounce in either fails at once at stage
    bounced; max_trip_time without the mail fails at stage timeout."""
    receiver, sort = watched
    sender_box, sender_sort = sender
    for facts in visits(receiver, sent_at + max_trip_time, interval, timeout, sort):
        result['attempts'] += 1
        if facts is not None and facts['copies']:
            return facts
        if sender_box is not None and sort.bounce is None:
            result['sender'] = on_side('sender', sender_box.visit, timeout, sender_sort) or result['sender']
        if sort.bounce is not None or sender_sort.bounce is not None:
            raise bounced(result, receiver if sort.bounce is not None else sender_box, sort.bounce or sender_sort.bounce,
                          sent_at)
    busy = '; the mailbox was locked by another session in %d of them' % receiver.busy if receiver.busy else ''
    raise ProbeError('timeout', '%s: the mail with token %s did not arrive within max_trip_time %s s (%d mailbox checks'
                     '%s); it stays in the mailbox if it arrives later'
                     % (receiver.label, result['token'], max_trip_time, result['attempts'], busy))


def bounced(result, receiver, report, sent_at):
    """The mail came back: fail at once at stage bounced with what the report says."""
    result['bounce'] = dict((key, report.get(key)) for key in (
        'action', 'status', 'diagnostic', 'recipient', 'reporting_mta', 'remote_mta', 'original_message_id'))
    result['bounce'].update(mailbox=receiver.label, arrived_ms=round((time.monotonic() - sent_at) * 1000.0, 1))
    return ProbeError('bounced', '%s: the test mail bounced: %s %s%s; the bounce was deleted' % (
        receiver.label, report.get('status') or 'no status', report.get('diagnostic') or '(no diagnostic)',
        ' (reported by %s)' % report['reporting_mta'] if report.get('reporting_mta') else ''))


def mail_path(result, header_lines, params, warnings, label):
    """The probe's path (Received hops) and the verdicts the receiving side stamped; a verdict
    require_authentication names that did not pass fails at stage authentication."""
    hops = _headers.hops(header_lines or [])
    summary = _headers.hops_summary(hops)
    for hop in hops:
        hop.pop('epoch', None)
    result['hops'] = hops
    result['path'] = {'hops': summary['hops'], 'total_s': summary['total_s'], 'max_delay_s': summary['max_delay_s'],
                      'clock_skew': summary['clock_skew']}
    if summary['clock_skew']:
        warnings.append('%s: the Received dates of the test mail go backwards (clock skew between the servers of '
                        'its path); hops with clock_skew=true have a negative delay_s' % label)
    ids = params.get('authserv_ids') or None
    verdicts = _headers.verdicts(_headers.authentication_results(header_lines or [], ids), ids)
    result['authentication'] = verdicts
    failed = ['%s=%s' % (method, verdicts.get(method) or 'none')
              for method in params.get('require_authentication') or () if verdicts.get(method) != 'pass']
    if failed:
        stamped = ('by %s' % verdicts['authserv_id']) if verdicts.get('authserv_id') else (
            'no Authentication-Results%s' % (' from %s' % ', '.join(ids) if ids else ''))
        raise ProbeError('authentication', '%s: the test mail arrived, but %s (%s); require_authentication: %s'
                         % (label, ', '.join(failed), stamped, ', '.join(params['require_authentication'])))


def judge_junk(result, receiver, policy, warnings):
    """The test mail was filed into a junk folder: fine, a warning, or a failure, as policy says."""
    what = '%s: the test mail landed in the junk folder %s' % (receiver.label, result['folder'])
    if policy == 'fail':
        raise ProbeError('junk', what + ' (junk=fail); it was deleted there')
    if policy == 'warn':
        warnings.append(what + ' (junk=warn)')
        result['status'] = 'warning'


def mail_roundtrip(params, check_mode=False):
    """The mail_roundtrip module's core: returns the result dict, raises ProbeError on failure."""
    smtp_params, receive_params = prepare(params)
    token = uuid.uuid4().hex
    recipients = _smtp.normalize_recipients(params['mail_to'])
    subject = ('%s %s %s' % (params.get('subject_prefix') or '', SUBJECT_MARK, token)).strip()
    data, message_id = _smtp.build_message(params['mail_from'], recipients, subject, BODY,
                                           headers={TOKEN_HEADER: token})
    max_trip_time = params.get('max_trip_time') or DEFAULT_MAX_TRIP_TIME
    interval = params.get('connection_interval') or DEFAULT_CONNECTION_INTERVAL
    protocol = params.get('receive_protocol') or 'pop3'
    junk_policy = params.get('junk') or 'warn'
    watch_bounces = params.get('watch_bounces', True) is not False

    def body(check):
        result = {'token': token, 'message_id': None, 'attempts': 0, 'trip_time_ms': None, 'stale_deleted': 0,
                  'changed': False}
        receiver = RECEIVERS[protocol](receive_params, check)
        sender = sender_side(params) if watch_bounces else None
        sender_box = RECEIVERS[sender[0]](sender[1], check) if sender else None
        timeout = receive_params['timeout'] or DEFAULT_TIMEOUT
        try:
            # A first visit before anything is sent: it proves the login works (so a bad password
            # never leaves a mail behind), records which messages are not ours and, with
            # cleanup_stale, removes what earlier runs left behind.
            stale_before = time.time() - max_trip_time if params.get('cleanup_stale') and not check_mode else None
            for facts in visits(receiver, time.monotonic() + max_trip_time, interval, timeout,
                                sorter(None, stale_before), immediately=True):
                if facts is not None:
                    break
            else:
                raise ProbeError('login', '%s: the mailbox stayed locked by another session for max_trip_time %s s'
                                 % (receiver.label, max_trip_time))
            result['stale_deleted'] = facts.pop('stale_deleted')
            result['changed'] = result['stale_deleted'] > 0
            facts.pop('seen_at')
            result[receiver.side] = facts
            if sender_box is not None:
                # The sender's mailbox: its login proven, and what is in it already known, before sending.
                result['sender'] = on_side('sender', sender_box.visit, timeout, None) or {}
            if check_mode:
                result['smtp'] = on_side('smtp', _smtp.run_session, smtp_params, check)
                result['sent'] = False
            else:
                result['smtp'] = on_side('smtp', _smtp.run_session, smtp_params, check,
                                         (params['mail_from'], recipients, data))
                sent_at = time.monotonic()
                result['message_id'] = message_id
                result['sent'] = True
                sort = sorter(token, message_id=message_id, bounces=watch_bounces)
                sender_sort = Sort(token, message_id=message_id, bounces_only=True)
                facts = await_mail(result, (receiver, sort), (sender_box, sender_sort), sent_at, max_trip_time,
                                   interval, timeout)
                if facts['copies'] > 1:
                    check.warnings.append('%s: the test mail arrived %d times; every copy was deleted'
                                          % (receiver.label, facts['copies']))
                facts.pop('stale_deleted')
                for report in sort.delays + sender_sort.delays:
                    check.warnings.append('delivery of the test mail was delayed before it arrived: %s %s'
                                          % (report.get('status'), report.get('diagnostic')))
                result['trip_time_ms'] = round((facts.pop('seen_at') - sent_at) * 1000.0, 1)
                result['deleted'] = True
                result['seen_by'] = facts.pop('seen_by', 'check')
                result['folder'] = facts.pop('folder', None)
                result[receiver.side] = facts
            result['total_ms'] = round(result['smtp']['response_time_ms'] + facts['response_time_ms'], 1)
            if result.get('folder') not in (None, receive_params.get('folder')):
                judge_junk(result, receiver, junk_policy, check.warnings)
            if result['sent']:
                mail_path(result, sort.headers, params, check.warnings, receiver.label)
            return result
        except ProbeError as e:
            e.add_facts(result)
            raise
        finally:
            receiver.close()
            if sender_box is not None:
                sender_box.close()

    return run_check(params, 'total_ms', body)
