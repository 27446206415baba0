# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The round trip: send a uniquely tagged mail over SMTP, watch a POP3 mailbox until exactly
that mail is there, delete it and only it."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
import uuid
from email.parser import HeaderParser

from ansible_collections.mailops.health.plugins.module_utils import _pop3, _smtp
from ansible_collections.mailops.health.plugins.module_utils._probe import (
    ProbeError, check_no_line_breaks, check_range, endpoint_label, ms_since, probe, validate_endpoint,
)

TOKEN_HEADER = 'X-Mailops-Roundtrip'
SUBJECT_MARK = 'mailops.health round trip'
FIRST_CHECK_DELAY = 0.05
_SHARED = ('validate_certs', 'ca_path', 'timeout', 'allow_cleartext_auth')


def side(params, prefix, extra=()):
    """The options of one side (smtp_* or pop3_*) in the shape the single-protocol core takes."""
    one = dict((key, params.get(key)) for key in _SHARED + tuple(extra))
    for key in ('host', 'port', 'tls_mode', 'username', 'password'):
        one[key] = params.get('%s_%s' % (prefix, key))
    return one


def is_ours(header_lines, token):
    """A mail is ours only when its token header holds exactly our token and its subject
    carries it too; copies of our prefix or forged headers never match."""
    headers = HeaderParser().parsestr('\r\n'.join(header_lines) + '\r\n\r\n')
    values = [str(v).strip() for v in headers.get_all(TOKEN_HEADER) or ()]
    return values == [token] and token in str(headers.get('Subject', ''))


def poll_delays(interval):
    """Adaptive polling: quick first checks (a mail usually lands within milliseconds on a
    healthy system), doubling up to connection_interval."""
    delay = min(FIRST_CHECK_DELAY, interval)
    while True:
        yield delay
        delay = min(delay * 2, interval)


def validate(params):
    check_range('max_trip_time', params.get('max_trip_time'), 1, 3600)
    check_range('connection_interval', params.get('connection_interval'), 0.01, 600)
    check_no_line_breaks('subject_prefix', params.get('subject_prefix'))
    if len(_smtp.normalize_recipients(params.get('mail_to'))) != 1:
        raise ProbeError('input', 'mail_to must be exactly one address for a round trip')


class Mailbox:
    """The POP3 side: remembers which messages it has already looked at, so each check only
    reads the headers of new messages (UIDL + TOP)."""

    def __init__(self, params, warnings, transcript):
        self.params = params
        self.warnings = warnings
        self.transcript = transcript
        self.seen = set()

    def visit(self, token=None):
        """One POP3 session. With a token: look for it among new messages, delete it when found.
        Returns (found, facts)."""
        start = time.monotonic()
        client, facts = _pop3.open_session(self.params, self.warnings, self.transcript)
        found = False
        try:
            uids = client.listing('UIDL', 'search')
            if uids is None:
                # No UIDL: every message is new to us in every session (LIST numbers only).
                numbers = sorted(client.listing('LIST', 'search') or {}, reverse=True)
                candidates = [(n, None) for n in numbers]
            else:
                candidates = [(n, uid) for n, uid in sorted(uids.items(), reverse=True) if uid not in self.seen]
            for number, uid in candidates:
                if token is None:
                    self.seen.add(uid)
                    continue
                if is_ours(client.headers(number), token):
                    facts['seen_ms_monotonic'] = time.monotonic()
                    client.delete(number)
                    found = True
                    break
                if uid is not None:
                    self.seen.add(uid)
            try:
                client.quit()
            except ProbeError as e:
                if found:
                    raise ProbeError('quit', '%s; the deletion was not committed and the mail stays in the mailbox'
                                     % e.message)
                raise
        finally:
            client.session.close()
        facts['response_time_ms'] = ms_since(start)
        return found, facts


def on_side(name, call, *args):
    """Run one side's step; what it measured before failing goes under its name."""
    try:
        return call(*args)
    except ProbeError as e:
        e.result = {name: e.result}
        raise


def mail_roundtrip(params, check_mode=False):
    """The mail_roundtrip module's core: returns the result dict, raises ProbeError on failure."""
    validate(params)
    smtp_params = side(params, 'smtp', ('smtp_auth', 'auth_mechanism', 'helo', 'mail_from', 'mail_to'))
    smtp_params['send_mail'] = True
    _smtp.validate(smtp_params)
    pop3_params = side(params, 'pop3', ('pop3_auth',))
    validate_endpoint(pop3_params)
    token = uuid.uuid4().hex
    recipients = _smtp.normalize_recipients(params['mail_to'])
    subject = ('%s %s %s' % (params.get('subject_prefix') or '', SUBJECT_MARK, token)).strip()
    data, message_id = _smtp.build_message(
        params['mail_from'], recipients, subject,
        'Round-trip test mail sent by mailops.health.mail_roundtrip; it deletes this mail when it arrives.\n',
        headers={TOKEN_HEADER: token})
    max_trip_time = params.get('max_trip_time') or 30
    interval = params.get('connection_interval') or 5

    def body(warnings, transcript):
        result = {'token': token, 'message_id': None, 'attempts': 0, 'trip_time_ms': None}
        mailbox = Mailbox(pop3_params, warnings, transcript)
        try:
            # A first POP3 session before anything is sent: it proves the login works (so a bad
            # POP3 password never leaves a mail behind) and records which messages are not ours.
            _found, result['pop3'] = on_side('pop3', mailbox.visit)
            if check_mode:
                result['smtp'] = on_side('smtp', _smtp.run_session, smtp_params, warnings, transcript)
                result['total_ms'] = round(result['smtp']['response_time_ms'] + result['pop3']['response_time_ms'], 1)
                result['sent'] = False
                return result
            result['smtp'] = on_side('smtp', _smtp.run_session, smtp_params, warnings, transcript,
                                     (params['mail_from'], recipients, data))
            sent_at = time.monotonic()
            result['message_id'] = message_id
            result['sent'] = True
            deadline = sent_at + max_trip_time
            for delay in poll_delays(interval):
                if time.monotonic() + delay > deadline:
                    break
                time.sleep(delay)
                remaining = deadline - time.monotonic()
                mailbox.params = dict(pop3_params, timeout=max(1, min(pop3_params['timeout'] or 60, remaining)))
                result['attempts'] += 1
                found, facts = on_side('pop3', mailbox.visit, token)
                if found:
                    result['pop3'] = facts
                    result['trip_time_ms'] = round((facts.pop('seen_ms_monotonic') - sent_at) * 1000.0, 1)
                    result['total_ms'] = round(result['smtp']['response_time_ms'] + facts['response_time_ms'], 1)
                    result['deleted'] = True
                    return result
            raise ProbeError('timeout', '%s: the mail with token %s did not arrive within max_trip_time %s s '
                             '(%d mailbox checks); it stays in the mailbox if it arrives later'
                             % (endpoint_label('pop3', pop3_params['host'], result['pop3']['port']), token,
                                max_trip_time, result['attempts']))
        except ProbeError as e:
            e.result = dict(result, **e.result)
            raise

    return probe(params, 'total_ms', body)
