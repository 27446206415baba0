# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""POP3 in the probe core (RFC 1939 with APOP, RFC 2449 CAPA, RFC 2595 STLS): the client steps of
the one session shape, pop3_check, and the receive side of a round trip over POP3."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import re
import time

from ansible_collections.mailops.health.plugins.module_utils import _oauth
from ansible_collections.mailops.health.plugins.module_utils._probe import (
    ProbeError, Refused, endpoint_label, is_number, run_check, validate_endpoint,
)
from ansible_collections.mailops.health.plugins.module_utils._session import (
    INSPECT, MASK, MAX_RESPONSE, Client, add_hint, cleartext_guard, converse, endpoint_port,
)

POP3_AUTH = ('none', 'password', 'apop', 'xoauth2', 'oauthbearer')
_APOP_TIMESTAMP = re.compile(r'<[^<>\s]+>')
# More new messages than this since the previous check: one full UIDL listing is cheaper.
APPENDED_LIMIT = 20
# Body lines read of a message that may be a bounce: its report comes before the returned mail.
REPORT_LINES = 400


def is_locked(message):
    """A login refused because another session holds the maildrop (RFC 2449 IN-USE)."""
    return '[IN-USE]' in message or 'locked' in message.lower()


class Pop3Client(Client):
    """The POP3 steps of the one session shape, and the commands a mailbox check needs."""

    protocol = 'pop3'
    tls_command = 'STLS'
    login_timing = 'login_ms'

    def __init__(self, session, params, check):
        super(Pop3Client, self).__init__(session, params, check)
        self.timestamp = None
        self.capability_list = None
        self.deleted = 0

    def status(self, stage):
        line = self.session.read_line(stage)
        if line.startswith('+OK'):
            return True, line[4:]
        if line.startswith('-ERR'):
            return False, line[5:]
        raise self.session.error(stage, 'malformed reply %s' % self.session.quote(line))

    def command(self, stage, line, what, shown=None):
        self.session.send_line(stage, line, shown)
        ok, text = self.status(stage)
        if not ok:
            raise self.session.error(stage, '%s refused (-ERR %s)' % (what, text), Refused)
        return text

    def multiline(self, stage, record=True, headers_only=False):
        """The body of a multi-line response, dot-unstuffed, as a list of lines. With
        record=False the transcript gets only a line count (listings and mail content);
        headers_only keeps the lines before the first empty one (RETR used for headers)."""
        lines = []
        count = size = 0
        keep = True
        while True:
            line = self.session.read_line(stage, record)
            if line == '.':
                break
            count += 1
            line = line[1:] if line.startswith('.') else line
            keep = keep and not (headers_only and line == '')
            if keep:
                size += len(line) + 2
                if size > MAX_RESPONSE:
                    raise self.session.error(stage, 'response larger than %d bytes' % MAX_RESPONSE)
                lines.append(line)
        if not record:
            self.session.note('S: <%d lines>' % count)
        return lines

    # -- the steps of the session shape ---------------------------------------------------
    def greet(self):
        ok, text = self.status('banner')
        self.facts['banner'] = text
        if not ok:
            raise self.session.error('banner', 'server refused the connection (-ERR %s)' % text, Refused)
        match = _APOP_TIMESTAMP.search(text)
        self.timestamp = match.group(0) if match else None
        self.facts['apop_supported'] = self.timestamp is not None
        if self.timestamp and self.params.get('pop3_auth') == 'apop':
            # Known from now on, not only once sent: a server quoting it earlier is masked too.
            self.session.add_secret(self.apop_digest())

    def capabilities(self):
        """CAPA is optional (RFC 2449): a server without it answers -ERR; then None."""
        self.session.send_line('banner', 'CAPA')
        ok, _text = self.status('banner')
        self.capability_list = self.multiline('banner') if ok else None
        self.facts['capabilities'] = self.capability_list or []

    def has(self, keyword):
        return any(c.split(' ')[0].upper() == keyword for c in self.capability_list or ())

    def offers_tls(self):
        # Without CAPA the server may still know STLS: in 'starttls' mode we try it anyway.
        return self.has('STLS') or (self.capability_list is None and self.params['tls_mode'] == 'starttls')

    def upgrade(self):
        try:
            self.command('tls', 'STLS', 'STLS')
        except Refused as e:
            if self.capability_list is None:
                add_hint(e, 'the server knows no CAPA, so it never offered STLS: if it speaks TLS at all, it is '
                            'probably implicit TLS on port 995 (tls_mode=tls)')
            raise

    def login(self):
        method = self.params.get('pop3_auth', 'none')
        if method == 'none':
            return False
        if method in ('xoauth2', 'oauthbearer'):
            self.oauth(method.upper())
            return True
        username, password = self.params.get('username') or '', self.params.get('password') or ''
        session = self.session
        if method == 'apop':
            if not self.timestamp:
                raise session.error('login', 'APOP requested but the banner carries no APOP timestamp')
            self.command('login', 'APOP %s %s' % (username, self.apop_digest()), 'APOP',
                         shown='APOP %s %s' % (username, MASK))
        else:
            cleartext_guard(session, self.params.get('allow_cleartext_auth', False), 'login', 'a password with USER/PASS')
            self.command('login', 'USER ' + username, 'USER')
            self.command('login', 'PASS ' + password, 'PASS', shown='PASS ' + MASK)
        return True

    def oauth(self, mech):
        """AUTH (RFC 5034) with XOAUTH2 or OAUTHBEARER and oauth2_token (see _oauth): an initial
        response when the command fits 255 octets, else after the server's empty challenge."""
        sasl = [c.split()[1:] for c in self.capability_list or () if c.split()[:1] == ['SASL']]
        offered = [m.upper() for words in sasl for m in words]
        if self.capability_list is not None and mech not in offered:
            raise self.session.error('login', 'AUTH %s not offered (SASL: %s)' % (mech, ' '.join(offered) or 'none'))
        exchange = _oauth.Exchange(self, mech, 'login')
        pending = None
        if len('AUTH %s %s' % (mech, exchange.response)) <= 253:
            self.session.send_line('login', 'AUTH %s %s' % (mech, exchange.response), shown='AUTH %s %s' % (mech, MASK))
        else:
            self.session.send_line('login', 'AUTH ' + mech)
            pending = exchange.response
        while True:
            line = self.session.read_line('login')
            if line.startswith('+OK'):
                return
            if line.startswith('-ERR'):
                raise exchange.failed(self.session.error('login', 'AUTH %s refused (%s)' % (mech, line), Refused))
            if not line.startswith('+'):
                raise self.session.error('login', 'malformed reply %s' % self.session.quote(line))
            if pending is not None:
                self.session.send_line('login', pending, shown=MASK)
                pending = None
            else:
                self.session.send_line('login', exchange.answer(line[1:].strip()))

    def apop_digest(self):
        return hashlib.md5((self.timestamp + (self.params.get('password') or '')).encode('utf-8')).hexdigest()

    def quit(self):
        """QUIT ends the session and, after DELE, commits the deletions (RFC 1939 UPDATE state):
        a failure then says what is known about them."""
        try:
            self.command('quit', 'QUIT', 'QUIT')
        except Refused as e:
            if self.deleted:
                # RFC 1939 6: -ERR to QUIT after DELE means deleted messages were not removed.
                raise ProbeError('quit', '%s; the deletion was not committed and the mail stays in the mailbox'
                                 % e.message)
            raise
        except ProbeError as e:
            if self.deleted:
                raise ProbeError('quit', '%s; DELE was accepted but QUIT got no answer, so it is not known whether '
                                 'the server removed the mail (cleanup_stale removes it later if it stayed)'
                                 % e.message)
            raise

    # -- mailbox commands -----------------------------------------------------------------
    def stat(self):
        text = self.command('stat', 'STAT', 'STAT')
        parts = text.split()
        if len(parts) < 2 or not is_number(parts[0]) or not is_number(parts[1]):
            raise self.session.error('stat', 'malformed STAT reply %s' % self.session.quote(text))
        return int(parts[0]), int(parts[1])

    def listing(self, command, stage):
        """UIDL or LIST: {message number: second field}; None when the server refuses it."""
        self.session.send_line(stage, command)
        ok, _text = self.status(stage)
        if not ok:
            return None
        entries = {}
        for line in self.multiline(stage, record=False):
            parts = line.split()
            if len(parts) < 2 or not is_number(parts[0]):
                raise self.session.error(stage, 'malformed %s line %s' % (command, self.session.quote(line)))
            entries[int(parts[0])] = parts[1]
        return entries

    def uid(self, number):
        """UIDL of one message (a single-line answer), or None when the server refuses."""
        self.session.send_line('search', 'UIDL %d' % number)
        ok, text = self.status('search')
        parts = text.split()
        if not ok:
            return None
        if len(parts) < 2 or parts[0] != str(number):
            raise self.session.error('search', 'malformed UIDL reply %s' % self.session.quote(text))
        return parts[1]

    def headers(self, number):
        """The header lines of one message: TOP n 0, or RETR when the server has no TOP."""
        self.session.send_line('search', 'TOP %d 0' % number)
        ok, _text = self.status('search')
        if ok:
            return self.multiline('search', record=False, headers_only=True)
        self.command('retrieve', 'RETR %d' % number, 'RETR %d' % number)
        return self.multiline('retrieve', record=False, headers_only=True)

    def report(self, number):
        """The start of one message, enough for a bounce's report (TOP n REPORT_LINES, or RETR when
        the server has no TOP)."""
        self.session.send_line('retrieve', 'TOP %d %d' % (number, REPORT_LINES))
        ok, _text = self.status('retrieve')
        if not ok:
            self.command('retrieve', 'RETR %d' % number, 'RETR %d' % number)
        return self.multiline('retrieve', record=False)

    def delete(self, number):
        self.command('delete', 'DELE %d' % number, 'DELE %d' % number)
        self.deleted += 1


def run_session(params, check, work=None):
    """One POP3 session as params describe (the pop3_check options), with work(client) after the
    login. Returns the facts of the session."""
    return converse(Pop3Client, params, check, work)


def pop3_check(params):
    """The pop3_check module's core: returns the result dict, raises ProbeError on failure."""
    validate_endpoint(params)
    _oauth.validate('pop3', params)

    def stat(client):
        client.facts['message_count'], client.facts['mailbox_size'] = client.stat()

    def body(check):
        return run_session(params, check, stat if params.get('pop3_auth', 'none') != 'none' else None)

    return run_check(params, 'response_time_ms', body)


class Pop3Mailbox:
    """The receive side of a round trip over POP3 (the interface _roundtrip.Receiver describes).
    POP3 shows new mail only at login, so each visit is one session. It remembers which messages
    it has looked at, so each visit reads the headers of new messages only."""

    side = 'pop3'

    def __init__(self, params, check):
        self.params = params
        self.check = check
        self.label = endpoint_label('pop3', params['host'], endpoint_port('pop3', params))
        self.busy = 0
        self.seen = set()
        # (message count, UIDL of the last message) at the previous full listing or check.
        self.tail = None
        # False once the server gave two messages the same UIDL: then UIDLs tell nothing and
        # every visit reads the headers of every message.
        self.unique_uids = True

    def visit(self, timeout, sort=None):
        """One session: log in, list what is new, hand each new message's header lines to
        sort(), which says 'ours', 'stale' or None (someone else's; without sort no headers
        are read), delete ours and stale, quit. Returns the session's facts with seen_at,
        copies and stale_deleted, or None when another session holds the mailbox lock (worth
        another try, not a failure)."""
        params = dict(self.params, timeout=timeout)
        found = {'ours': [], 'stale': [], 'bounce': []}
        seen_at = []

        def work(client):
            for number, uid in self.new_messages(client):
                kind = sort(client.headers(number)) if sort is not None else None
                if kind == INSPECT:
                    kind = sort.inspect(client.report(number))
                if kind is not None:
                    found[kind].append(number)
                    if kind == 'ours' and not seen_at:
                        seen_at.append(time.monotonic())
                elif uid is not None:
                    self.seen.add(uid)
            for number in found['ours'] + found['stale'] + found['bounce']:
                client.delete(number)

        try:
            facts = run_session(params, self.check, work)
        except ProbeError as e:
            if e.stage == 'login' and is_locked(e.message):
                self.busy += 1
                return None
            raise
        facts.update(seen_at=seen_at[0] if seen_at else None, copies=len(found['ours']),
                     stale_deleted=len(found['stale']), bounces=len(found['bounce']))
        return facts

    def wait(self, seconds):
        """POP3 has no push: just wait."""
        time.sleep(seconds)
        return False

    def close(self):
        """Every visit is a whole session: nothing stays open."""

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
