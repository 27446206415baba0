# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""POP3 side of the probe core (RFC 1939 with APOP, RFC 2449 CAPA, RFC 2595 STLS)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import hashlib
import re
import time

from ansible_collections.mailops.health.plugins.module_utils._probe import (
    MASK, MAX_RESPONSE, ProbeError, Refused, cleartext_guard, connect, is_number, ms_since, new_session, probe, require_tls_or_warn,
    validate_endpoint,
)

POP3_AUTH = ('none', 'password', 'apop')
_APOP_TIMESTAMP = re.compile(r'<[^<>\s]+>')


def is_locked(message):
    """A login refused because another session holds the maildrop (RFC 2449 IN-USE)."""
    return '[IN-USE]' in message or 'locked' in message.lower()


class Pop3Client:
    """One POP3 dialogue over a Session."""

    def __init__(self, session):
        self.session = session
        self.banner = None
        self.timestamp = None
        self.capabilities = None

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

    def greet(self):
        ok, text = self.status('banner')
        self.banner = text
        if not ok:
            raise self.session.error('banner', 'server refused the connection (-ERR %s)' % text)
        match = _APOP_TIMESTAMP.search(text)
        self.timestamp = match.group(0) if match else None

    def capa(self):
        """CAPA is optional (RFC 2449): a server without it answers -ERR; then None."""
        self.session.send_line('banner', 'CAPA')
        ok, _text = self.status('banner')
        self.capabilities = self.multiline('banner') if ok else None

    def has(self, keyword):
        return any(c.split(' ')[0].upper() == keyword for c in self.capabilities or ())

    def login(self, method, username, password, allow_cleartext_auth):
        session = self.session
        session.add_secret(password)
        if method == 'apop':
            if not self.timestamp:
                raise session.error('login', 'APOP requested but the banner carries no APOP timestamp')
            digest = hashlib.md5((self.timestamp + password).encode('utf-8')).hexdigest()
            session.add_secret(digest)
            self.command('login', 'APOP %s %s' % (username, digest), 'APOP', shown='APOP %s %s' % (username, MASK))
        else:
            cleartext_guard(session, allow_cleartext_auth, 'login', 'a password with USER/PASS')
            self.command('login', 'USER ' + username, 'USER')
            self.command('login', 'PASS ' + password, 'PASS', shown='PASS ' + MASK)

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

    def delete(self, number):
        self.command('delete', 'DELE %d' % number, 'DELE %d' % number)

    def quit(self, what='QUIT'):
        self.command('quit', 'QUIT', what)


def open_session(session, params, warnings):
    """Connect, greet, negotiate TLS and log in as params say (the pop3_check options).
    Returns (client, facts); the caller ends the session with client.quit()."""
    tls_mode = params['tls_mode']
    client = Pop3Client(session)
    timings = {}
    facts = {'host': session.host, 'port': session.port, 'timings': timings}
    start = time.monotonic()
    try:
        connect(session, tls_mode, warnings)
        timings['connect_ms'] = ms_since(start)
        client.greet()
        timings['banner_ms'] = ms_since(start)
        facts['banner'] = client.banner
        client.capa()
        # Without CAPA the server may still know STLS: in 'starttls' mode we try it anyway.
        offered = client.has('STLS') or (client.capabilities is None and tls_mode == 'starttls')
        if require_tls_or_warn(session, offered, tls_mode, 'STLS', warnings):
            client.command('tls', 'STLS', 'STLS')
            session.start_tls()
            client.capa()
        timings['tls_ms'] = ms_since(start)
        facts['capabilities'] = client.capabilities or []
        facts['apop_supported'] = client.timestamp is not None
        method = params.get('pop3_auth', 'none')
        if method != 'none':
            client.login(method, params.get('username') or '', params.get('password') or '',
                         params.get('allow_cleartext_auth', False))
            timings['login_ms'] = ms_since(start)
    except ProbeError as e:
        session.close()
        facts['tls'] = session.tls
        e.result = dict(facts, **e.result)
        raise
    facts['tls'] = session.tls
    return client, facts


def pop3_check(params):
    """The pop3_check module's core: returns the result dict, raises ProbeError on failure."""
    validate_endpoint(params)

    def body(check):
        warnings = check.warnings
        session = new_session('pop3', params, check)
        start = time.monotonic()
        result = {}
        try:
            client, facts = open_session(session, params, warnings)
            result.update(facts)
            try:
                if params.get('pop3_auth', 'none') != 'none':
                    result['message_count'], result['mailbox_size'] = client.stat()
                client.quit()
            finally:
                client.session.close()
        except ProbeError as e:
            result['response_time_ms'] = ms_since(start)
            e.result = dict(result, **e.result)
            raise
        result['response_time_ms'] = ms_since(start)
        return result

    return probe(params, 'response_time_ms', body)
