# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""IMAP in the probe core (RFC 3501 / RFC 9051, RFC 2177 IDLE, RFC 4315 UIDPLUS, RFC 6851 MOVE,
RFC 6154 SPECIAL-USE, RFC 4959 SASL-IR): the client steps of the one session shape, imap_check,
and the receive side of a round trip over IMAP (one connection kept open, quick checks, IDLE for
the long waits, only our own mail deleted)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import hashlib
import hmac
import re
import time

from ansible_collections.mailops.health.plugins.module_utils import _oauth
from ansible_collections.mailops.health.plugins.module_utils._probe import (
    ProbeError, Refused, endpoint_label, is_number, run_check, validate_endpoint,
)
from ansible_collections.mailops.health.plugins.module_utils._session import (
    INSPECT, MASK, MAX_RESPONSE, Client, Conversation, cleartext_guard, converse, endpoint_port,
)

IMAP_AUTH = ('none', 'password', 'oauth2')
IMAP_MECHANISMS = ('auto', 'login', 'plain', 'cram-md5', 'xoauth2', 'oauthbearer')
# auth_mechanism=auto: a challenge mechanism first because it never reveals the password.
_AUTO_ORDER = ('cram-md5', 'plain', 'login')
_CLEARTEXT = ('plain', 'login')
DEFAULT_FOLDER = 'INBOX'
# Where a mail filtered as spam lands when the server names no \Junk folder.
JUNK_NAMES = ('Junk', 'Spam')
# Checks spaced at least this far apart wait in IDLE (a push ends the wait early); a server has
# DONE_GRACE seconds to answer DONE.
IDLE_FROM = 1.0
# Bytes read of a message that may be a bounce: its report comes before the returned mail.
REPORT_BYTES = 256 * 1024
DONE_GRACE = 2.0
_STATUS_ITEMS = ('MESSAGES', 'UNSEEN', 'UIDNEXT', 'UIDVALIDITY')
_LITERAL = re.compile(r'\{(\d+)\+?\}$')
# Deepest parenthesised list a response may hold (real ones nest a few levels: BODYSTRUCTURE).
MAX_NESTING = 32
_STATUS_WORDS = ('OK', 'NO', 'BAD', 'BYE', 'PREAUTH')


class Token(str):
    """A quoted string or literal from a response (as opposed to an atom)."""


def tokenize(text, literals):
    """The data of an untagged response as nested lists: atoms as str (BODY[...] sections kept
    whole), quoted strings and literals as Token, NIL as None. literals replace the {n}
    markers in order."""
    stack = [[]]
    literals = list(literals)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == ' ':
            i += 1
        elif c == '(':
            if len(stack) > MAX_NESTING:
                raise ValueError('parentheses nested more than %d deep' % MAX_NESTING)
            stack.append([])
            i += 1
        elif c == ')':
            if len(stack) == 1:
                raise ValueError('unbalanced parenthesis')
            done = stack.pop()
            stack[-1].append(done)
            i += 1
        elif c == '"':
            j, chars = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == '\\' and j + 1 < n:
                    j += 1
                chars.append(text[j])
                j += 1
            if j >= n:
                raise ValueError('unterminated quoted string')
            stack[-1].append(Token(''.join(chars)))
            i = j + 1
        elif c == '{':
            end = text.find('}', i)
            if end < 0 or not literals:
                raise ValueError('literal without data')
            stack[-1].append(Token(literals.pop(0)))
            i = end + 1
        else:
            j, depth = i, 0
            while j < n and (depth or text[j] not in ' ()"'):
                depth += text[j] == '['
                depth -= text[j] == ']' and depth > 0
                j += 1
            atom = text[i:j]
            stack[-1].append(None if atom.upper() == 'NIL' else atom)
            i = j
    if len(stack) != 1:
        raise ValueError('unbalanced parenthesis')
    return stack[0]


def quoted(value):
    """A string argument as an IMAP quoted string (check_options keeps CR, LF and NUL out)."""
    return '"%s"' % value.replace('\\', '\\\\').replace('"', '\\"')


def encode_mailbox(name):
    """A folder name in IMAP's modified UTF-7 (RFC 3501 5.1.3)."""
    out, pending = [], []

    def flush():
        if pending:
            data = ''.join(pending).encode('utf-16-be')
            out.append('&' + base64.b64encode(data).decode('ascii').rstrip('=').replace('/', ',') + '-')
            del pending[:]
    for char in name:
        if 0x20 <= ord(char) <= 0x7e:
            flush()
            out.append('&-' if char == '&' else char)
        else:
            pending.append(char)
    flush()
    return ''.join(out)


def decode_mailbox(name):
    """A folder name from the server, modified UTF-7 decoded (a malformed one stays as it is)."""
    out, i = [], 0
    while i < len(name):
        start = name.find('&', i)
        end = name.find('-', start) if start >= 0 else -1
        if start < 0 or end < 0:
            out.append(name[i:])
            break
        out.append(name[i:start])
        chunk = name[start + 1:end]
        if not chunk:
            out.append('&')
        else:
            try:
                data = base64.b64decode(chunk.replace(',', '/') + '=' * (-len(chunk) % 4), validate=True)
                out.append(data.decode('utf-16-be'))
            except (ValueError, UnicodeDecodeError):
                return name
        i = end + 1
    return ''.join(out)


class Response:
    """One server response line with its literals: tag ('*', '+' or a command tag), and either a
    status (OK, NO, BAD, BYE, PREAUTH) with its [code] and text, or untagged data."""

    def __init__(self, tag, status, code, text, data):
        self.tag = tag
        self.status = status
        self.code = code
        self.text = text
        self.data = data


class ImapClient(Client):
    """The IMAP steps of the one session shape, and the commands a mailbox check needs."""

    protocol = 'imap'
    tls_command = 'STARTTLS'
    login_timing = 'login_ms'

    def __init__(self, session, params, check):
        super(ImapClient, self).__init__(session, params, check)
        self.counter = 0
        self.caps = []
        self.preauth = False
        self.greeting_caps = None
        self.pushed = 0
        self.selected = None
        self.pending = []

    # -- responses ------------------------------------------------------------------------
    def read(self, stage):
        """The next response with its literals, parsed."""
        parts, literals, size = [], [], 0
        while True:
            line = self.session.read_line(stage)
            size += len(line)
            match = _LITERAL.search(line)
            parts.append(line)
            if match is None:
                break
            count = int(match.group(1))
            size += count
            if size > MAX_RESPONSE:
                raise self.session.error(stage, 'response larger than %d bytes' % MAX_RESPONSE)
            literals.append(self.session.read_bytes(stage, count).decode('utf-8', 'replace'))
        text = ''.join(parts)
        tag, _sep, rest = text.partition(' ')
        if tag == '+':
            return Response('+', None, None, rest, None)
        word, _sep, tail = rest.partition(' ')
        if word.upper() in _STATUS_WORDS and tag:
            code = None
            if tail.startswith('['):
                end = tail.find(']')
                if end > 0:
                    code, tail = tail[1:end], tail[end + 1:].strip()
            return Response(tag, word.upper(), code, tail, None)
        if tag != '*':
            raise self.session.error(stage, 'malformed response %s' % self.session.quote(text))
        try:
            data = tokenize(rest, literals)
        except ValueError as e:
            raise self.session.error(stage, 'malformed response (%s) %s' % (e, self.session.quote(text)))
        if not data:
            raise self.session.error(stage, 'malformed response %s' % self.session.quote(text))
        return Response('*', None, None, rest, data)

    def untagged(self, response):
        """Note what an untagged response says about the session: capabilities, new mail."""
        if response.status == 'BYE':
            self.session.note('-- server says BYE: %s' % response.text)
        elif response.code and response.code.upper().startswith('CAPABILITY '):
            self.caps = response.code.split()[1:]
        elif response.data and str(response.data[0]).upper() == 'CAPABILITY':
            self.caps = [str(c) for c in response.data[1:]]
        elif response.data and len(response.data) > 1 and str(response.data[1]).upper() == 'EXISTS':
            self.pushed += 1

    def command(self, stage, line, shown=None, continuation=None):
        """Send a tagged command and read to its tagged reply; untagged responses on the way are
        returned (and noted). continuation(text) answers a '+' from the server. A NO or BAD
        fails at stage (Refused)."""
        tag = self.send(stage, line, shown)
        return self.collect(stage, {tag: line}, continuation)

    def pipeline(self, stage, lines):
        """Several commands in one write and their answers read (one round trip instead of one
        each). A server may finish them in any order (RFC 3501 5.5): the untagged responses of
        all of them come back together."""
        tags = dict((self.send(stage, line, flush=False), line) for line in lines)
        self.session.send_raw(stage, b''.join(self.pending))
        self.pending = []
        return self.collect(stage, tags)

    def send(self, stage, line, shown=None, flush=True):
        self.counter += 1
        tag = 'A%03d' % self.counter
        text = '%s %s' % (tag, line)
        if flush:
            self.session.send_line(stage, text, None if shown is None else '%s %s' % (tag, shown))
        else:
            self.session.check_line(stage, text)
            self.session.note('C: ' + text)
            self.pending.append(text.encode('utf-8') + b'\r\n')
        return tag

    def collect(self, stage, tags, continuation=None):
        """Read until every command in tags ({tag: line}) has its tagged reply."""
        tags = dict(tags)
        collected = []
        while tags:
            response = self.read(stage)
            if response.tag == '+':
                if continuation is None:
                    raise self.session.error(stage, 'unexpected continuation request %s'
                                             % self.session.quote(response.text))
                continuation(response.text)
                continue
            if response.tag == '*':
                self.untagged(response)
                collected.append(response)
                continue
            line = tags.pop(response.tag, None)
            if line is None:
                raise self.session.error(stage, 'reply with tag %s to command %s' % (
                    self.session.quote(response.tag), ', '.join(sorted(tags))))
            if response.status != 'OK':
                words = line.split(' ')
                what = ' '.join(words[:2]) if words[0] == 'UID' else words[0]
                raise self.session.error(stage, '%s refused (%s %s)' % (what, response.status, response.text), Refused)
            if response.code and response.code.upper().startswith('CAPABILITY '):
                self.caps = response.code.split()[1:]
        return collected

    @staticmethod
    def data(responses):
        """The data of the untagged data responses among responses (status lines carry none)."""
        return [response.data for response in responses if response.data]

    def has(self, capability):
        return any(c.upper() == capability for c in self.caps)

    # -- the steps of the session shape ---------------------------------------------------
    def greet(self):
        response = self.read('banner')
        self.facts['banner'] = response.text
        if response.tag != '*' or response.status not in ('OK', 'PREAUTH'):
            raise self.session.error('banner', 'server refused the connection (%s %s)'
                                     % (response.status or response.tag, response.text), Refused)
        if response.code and response.code.upper().startswith('CAPABILITY '):
            self.greeting_caps = response.code.split()[1:]
        if response.status == 'PREAUTH':
            self.preauth = True
            self.facts['preauth'] = True
            # Already logged in: STARTTLS is no longer allowed (RFC 3501 6.2.1).
            if self.params['tls_mode'] == 'starttls':
                raise self.session.error('tls', 'server greeted with PREAUTH, which skips the STARTTLS upgrade '
                                                '(tls_mode=starttls)')

    def capabilities(self):
        """CAPABILITY, unless the greeting listed them; after STARTTLS always asked again (what was
        said before the handshake is not trusted)."""
        if self.greeting_caps is not None and not self.session.tls['established']:
            self.caps = self.greeting_caps
        else:
            self.command('banner', 'CAPABILITY')
        self.greeting_caps = None
        if self.session.tls['established'] and 'capabilities' in self.facts and 'tls_ms' not in self.timings:
            self.facts['capabilities_before_tls'] = self.facts['capabilities']
        self.facts['capabilities'] = list(self.caps)

    def offers_tls(self):
        return self.has('STARTTLS') and not self.preauth

    def upgrade(self):
        self.command('tls', 'STARTTLS')

    def login(self):
        if self.params.get('imap_auth', 'none') == 'none' or self.preauth:
            return False
        if self.params.get('imap_auth') == 'oauth2':
            self.oauth()
            return True
        username, password = self.params.get('username') or '', self.params.get('password') or ''
        mechanism = self.choose_mechanism()
        self.facts['auth_mechanism_used'] = mechanism
        if mechanism in _CLEARTEXT:
            cleartext_guard(self.session, self.params.get('allow_cleartext_auth', False), 'login',
                            'a password with %s' % ('LOGIN' if mechanism == 'login' else 'AUTHENTICATE PLAIN'))
        if mechanism == 'login':
            self.command('login', 'LOGIN %s %s' % (quoted(username), quoted(password)),
                         shown='LOGIN %s %s' % (quoted(username), MASK))
        elif mechanism == 'plain':
            payload = base64.b64encode(('\0%s\0%s' % (username, password)).encode('utf-8')).decode('ascii')
            self.session.add_secret(payload)
            if self.has('SASL-IR'):
                self.command('login', 'AUTHENTICATE PLAIN ' + payload, shown='AUTHENTICATE PLAIN ' + MASK)
            else:
                self.command('login', 'AUTHENTICATE PLAIN', continuation=lambda _text: self.session.send_line(
                    'login', payload, shown=MASK))
        else:
            def answer(text):
                try:
                    challenge = base64.b64decode(text.strip(), validate=True)
                except ValueError:
                    raise self.session.error('login', 'malformed CRAM-MD5 challenge')
                digest = hmac.new(password.encode('utf-8'), challenge, hashlib.md5).hexdigest()
                response = base64.b64encode(('%s %s' % (username, digest)).encode('utf-8')).decode('ascii')
                self.session.add_secret(response)
                self.session.send_line('login', response, shown=MASK)
            self.command('login', 'AUTHENTICATE CRAM-MD5', continuation=answer)
        return True

    def oauth(self):
        """AUTHENTICATE XOAUTH2 or OAUTHBEARER with oauth2_token (see _oauth); the initial response
        with the command when the server has SASL-IR, else at its first continuation."""
        asked = self.params.get('auth_mechanism') or 'auto'
        offered = [c.split('=', 1)[1].upper() for c in self.caps if c.upper().startswith('AUTH=')]
        mech = _oauth.choose(None if asked == 'auto' else asked, offered)
        if mech is None:
            raise self.session.error('login', '%s not offered (capabilities: %s)' % (
                'AUTHENTICATE ' + asked.upper() if asked != 'auto' else 'no OAuth mechanism (OAUTHBEARER, XOAUTH2)',
                ' '.join(self.caps)))
        exchange = _oauth.Exchange(self, mech, 'login')
        pending = []

        def answer(text):
            if pending:
                self.session.send_line('login', pending.pop(), shown=MASK)
            else:
                self.session.send_line('login', exchange.answer(text))
        try:
            if self.has('SASL-IR'):
                self.command('login', 'AUTHENTICATE %s %s' % (mech, exchange.response),
                             shown='AUTHENTICATE %s %s' % (mech, MASK), continuation=answer)
            else:
                pending.append(exchange.response)
                self.command('login', 'AUTHENTICATE ' + mech, continuation=answer)
        except Refused as e:
            raise exchange.failed(e)

    def choose_mechanism(self):
        """The login mechanism: the one asked for when the server allows it, else (auto) a
        challenge mechanism first, and no cleartext one without TLS unless allowed."""
        offered = [m for m in ('cram-md5', 'plain') if self.has('AUTH=' + m.upper())]
        if not self.has('LOGINDISABLED'):
            offered.append('login')
        asked = self.params.get('auth_mechanism') or 'auto'
        if asked != 'auto':
            if asked not in offered:
                raise self.session.error('login', '%s not offered (capabilities: %s)' % (
                    'LOGIN' if asked == 'login' else 'AUTHENTICATE ' + asked.upper(), ' '.join(self.caps)))
            return asked
        choices = [m for m in _AUTO_ORDER if m in offered]
        if not self.session.tls['established'] and not self.params.get('allow_cleartext_auth', False):
            choices = [m for m in choices if m not in _CLEARTEXT] or choices
        if not choices:
            raise self.session.error('login', 'no login mechanism offered (LOGINDISABLED and no supported AUTH=; '
                                              'capabilities: %s)' % ' '.join(self.caps))
        return choices[0]

    def quit(self):
        self.command('quit', 'LOGOUT')

    # -- folder commands ------------------------------------------------------------------
    def folders(self):
        """{name: [attributes]} of every folder (LIST "" "*"), names decoded."""
        found = {}
        for data in self.data(self.command('folders', 'LIST "" "*"')):
            if len(data) >= 4 and str(data[0]).upper() == 'LIST' and isinstance(data[1], list):
                found[decode_mailbox(str(data[3]))] = [str(a) for a in data[1]]
        return found

    def status(self, folder):
        """STATUS of a folder: messages, unseen, uidnext, uidvalidity."""
        return self.status_of(self.command('stat', self.status_command(folder)), folder)

    @staticmethod
    def status_command(folder):
        return 'STATUS %s (%s)' % (quoted(encode_mailbox(folder)), ' '.join(_STATUS_ITEMS))

    def select(self, folder, readonly=False):
        """SELECT (or EXAMINE) a folder; returns its UIDNEXT from the answer, or None."""
        responses = self.command('select', '%s %s' % ('EXAMINE' if readonly else 'SELECT', quoted(encode_mailbox(folder))))
        self.selected = folder
        for response in responses:
            words = (response.code or '').split()
            if len(words) == 2 and words[0].upper() == 'UIDNEXT' and is_number(words[1]):
                return int(words[1])
        return None

    def search(self, criteria):
        """UIDs matching a UID SEARCH."""
        return self.found_uids(self.command('search', 'UID SEARCH ' + criteria))

    def found_uids(self, responses):
        uids = []
        for data in self.data(responses):
            if str(data[0]).upper() == 'SEARCH':
                for uid in data[1:]:
                    if not is_number(str(uid)):
                        raise self.session.error('search', 'malformed SEARCH result %s' % self.session.quote(str(uid)))
                    uids.append(int(uid))
        return uids

    def status_of(self, responses, folder):
        """The STATUS answer for folder among responses."""
        for data in self.data(responses):
            if (len(data) >= 3 and str(data[0]).upper() == 'STATUS' and isinstance(data[-1], list)
                    and str(data[1]) == encode_mailbox(folder)):
                pairs = data[-1]
                values = dict((str(pairs[i]).upper(), pairs[i + 1]) for i in range(0, len(pairs) - 1, 2))
                return dict((item.lower(), int(values[item]) if is_number(str(values.get(item))) else None)
                            for item in _STATUS_ITEMS)
        raise self.session.error('stat', 'no STATUS answer for %s' % folder)

    def headers(self, uids):
        """{uid: header lines} of the given messages (BODY.PEEK[HEADER]: nothing is marked seen)."""
        return self.fetch_lines(uids, 'BODY.PEEK[HEADER]', 'BODY[HEADER]')

    def message(self, uid):
        """The lines of the first REPORT_BYTES of one message (a bounce: its report comes first)."""
        return self.fetch_lines([uid], 'BODY.PEEK[]<0.%d>' % REPORT_BYTES, 'BODY[]<0>').get(uid, [])

    def fetch_lines(self, uids, item, key):
        found = {}
        for data in self.data(self.command('retrieve', 'UID FETCH %s (UID %s)' % (','.join(map(str, uids)), item))):
            if len(data) >= 3 and str(data[1]).upper() == 'FETCH' and isinstance(data[2], list):
                items = data[2]
                values = dict((str(items[i]).upper(), items[i + 1]) for i in range(0, len(items) - 1, 2))
                uid, text = values.get('UID'), values.get(key)
                if is_number(str(uid)) and isinstance(text, str):
                    found[int(uid)] = text.replace('\r\n', '\n').split('\n')
                elif text is not None:
                    raise self.session.error('retrieve', 'malformed FETCH answer: %s is not a string' % key)
        return found

    def delete(self, uids, trash=None):
        """Remove exactly these messages: UID EXPUNGE (UIDPLUS) or MOVE to trash; without either,
        flag them \\Deleted and expunge nothing (a plain EXPUNGE would also remove other clients'
        \\Deleted mail). Returns how: 'uid_expunge', 'move' or 'flagged'."""
        uid_set = ','.join(map(str, uids))
        if self.has('UIDPLUS'):
            self.command('delete', 'UID STORE %s +FLAGS.SILENT (\\Deleted)' % uid_set)
            self.command('delete', 'UID EXPUNGE %s' % uid_set)
            return 'uid_expunge'
        if self.has('MOVE') and trash:
            self.command('delete', 'UID MOVE %s %s' % (uid_set, quoted(encode_mailbox(trash))))
            return 'move'
        self.command('delete', 'UID STORE %s +FLAGS.SILENT (\\Deleted)' % uid_set)
        return 'flagged'

    def idle(self, seconds):
        """Wait in IDLE up to seconds; True when the server pushed news of new mail."""
        pushed = self.pushed
        until = time.monotonic() + seconds
        tag = self.send('search', 'IDLE')
        response = self.read('search')
        while response.tag == '*':
            self.untagged(response)
            response = self.read('search')
        if response.tag != '+':
            raise self.session.error('search', 'IDLE refused (%s %s)' % (response.status or response.tag, response.text),
                                     Refused)
        while self.pushed == pushed:
            line = self.session.wait_line('search', until - time.monotonic())
            if line is None:
                break
            response = self.parse_pushed(line)
            if response is not None:
                self.untagged(response)
        self.session.send_line('search', 'DONE')
        while True:
            try:
                response = self.read('search')
            except ProbeError as e:
                raise ProbeError(e.stage, '%s (after DONE, to end IDLE)' % e.message)
            if response.tag == '*':
                self.untagged(response)
                continue
            if response.tag != tag or response.status != 'OK':
                raise self.session.error('search', 'IDLE ended badly (%s %s)' % (response.status or response.tag,
                                                                                 response.text))
            return self.pushed > pushed

    def parse_pushed(self, line):
        """An untagged line read during IDLE (no literals expected there)."""
        tag, _sep, rest = line.partition(' ')
        if tag != '*':
            raise self.session.error('search', 'unexpected line during IDLE %s' % self.session.quote(line))
        try:
            return Response('*', None, None, rest, tokenize(rest, ()))
        except ValueError:
            return None


def run_session(params, check, work=None):
    """One IMAP session as params describe (the imap_check options), with work(client) after the
    login. Returns the facts of the session."""
    return converse(ImapClient, params, check, work)


def imap_check(params):
    """The imap_check module's core: returns the result dict, raises ProbeError on failure."""
    validate_endpoint(params)
    _oauth.validate('imap', params)
    folder = params.get('folder') or DEFAULT_FOLDER
    required = params.get('folders') or []

    def inspect(client):
        if required:
            found = client.folders()
            client.facts['folders'] = sorted(found)
            missing = [name for name in required if name not in found]
            if missing:
                raise client.session.error('folders', 'missing folder%s: %s' % (
                    's' if len(missing) > 1 else '', ', '.join(missing)))
        client.facts['folder'] = dict(client.status(folder), name=folder)

    def body(check):
        logged_in = params.get('imap_auth', 'none') != 'none'
        return run_session(params, check, inspect if logged_in else None)

    return run_check(params, 'response_time_ms', body)


class ImapMailbox:
    """The receive side of a round trip over IMAP (the interface _roundtrip.Receiver describes):
    one connection kept open through the round trip. Each check is one round trip to the server:
    NOOP, UID SEARCH for the token among the messages that arrived since the first look, and the
    STATUS of each junk folder, pipelined; a junk folder is searched only when its UIDNEXT moved.
    Waits between checks of a second or more are spent in IDLE, so a push ends them early."""

    side = 'imap'
    # A check on the open connection is one round trip (about a millisecond): the first comes 2 ms
    # after sending and the waits grow by a quarter each up to 20 ms (then double), so a mail that
    # lands 10-60 ms after sending (a healthy MTA) is seen within a few milliseconds.
    first_check_delay = 0.002
    check_growth = 1.25

    def __init__(self, params, check):
        self.params = params
        self.check = check
        self.label = endpoint_label('imap', params['host'], endpoint_port('imap', params))
        self.folder = params.get('folder') or DEFAULT_FOLDER
        self.busy = 0
        self.conversation = None
        self.client = None
        self.junk = []
        self.trash = None
        # {folder: UIDNEXT at the first look}: our mail can only have a UID from there on.
        self.uid_from = {}
        # {junk folder: UIDNEXT at the last look}: searched again only when it moved.
        self.junk_next = {}
        self.after_push = False

    def open(self, timeout):
        conversation = Conversation(ImapClient, dict(self.params, timeout=timeout), self.check)
        self.client = conversation.__enter__()
        self.conversation = conversation
        try:
            folders = self.client.folders()
            self.junk = self.junk_folders(folders)
            self.trash = next((name for name, attrs in folders.items() if '\\Trash' in attrs), None)
            for folder in self.junk:
                self.uid_from[folder] = self.junk_next[folder] = self.client.status(folder)['uidnext']
            self.uid_from[self.folder] = self.client.select(self.folder)
            self.client.mark('select_ms')
        except ProbeError as e:
            self.close(e)
            raise

    def junk_folders(self, folders):
        """The folders to look in besides the watched one: those the user named, else the
        server's \\Junk folder, else Junk or Spam when they exist."""
        named = self.params.get('junk_folders')
        if named is not None:
            return [name for name in named if name != self.folder]
        # A folder that cannot be selected (\Noselect, \NonExistent) holds no mail.
        usable = dict((name, [a.lower() for a in attrs]) for name, attrs in folders.items()
                      if not {'\\noselect', '\\nonexistent'} & set(a.lower() for a in attrs))
        special = [name for name, attrs in usable.items() if '\\junk' in attrs]
        return special or [name for name in JUNK_NAMES if name in usable]

    def criteria(self, folder, sort):
        """The search for sort: our token among the messages since the first look (and, when
        sort looks for bounces, what looks like one: a report, or mail from the mailer daemon or
        postmaster; sort reads those whole), or (for stale leftovers) every message with the
        token header. Servers without full-text search do not search a bounce's returned headers
        (BODY), so bounces are found by their own headers."""
        header = 'HEADER %s %s' % (sort.header, quoted(sort.token or ''))
        if sort.token and sort.bounces:
            header = 'OR %s OR HEADER Content-Type "multipart/report" OR FROM "mailer-daemon" FROM "postmaster"' % header
        start = self.uid_from.get(folder)
        return 'UID %d:* %s' % (start, header) if sort.token and start else header

    def visit(self, timeout, sort=None):
        start = time.monotonic()
        if self.client is None:
            self.open(timeout)
        client = self.client
        client.session.extend(timeout)
        try:
            seen_by = 'push' if self.after_push else 'check'
            self.after_push = False
            found = {'ours': [], 'stale': [], 'bounce': []}
            where = {}
            if sort is None:
                client.command('search', 'NOOP')
            else:
                answers = client.pipeline('search', ['NOOP', 'UID SEARCH ' + self.criteria(self.folder, sort)]
                                          + [client.status_command(folder) for folder in self.junk])
                self.take(self.folder, client.found_uids(answers), sort, found, where)
                for folder in self.junk:
                    uidnext = client.status_of(answers, folder)['uidnext']
                    if uidnext != self.junk_next.get(folder) or not sort.token:
                        self.junk_next[folder] = uidnext
                        client.select(folder)
                        self.take(folder, client.search(self.criteria(folder, sort)), sort, found, where)
                        client.select(self.folder)
            facts = client.result()
            facts.update(copies=len(found['ours']), stale_deleted=len(found['stale']), bounces=len(found['bounce']),
                         response_time_ms=round((time.monotonic() - start) * 1000.0, 1))
            facts['seen_at'] = where.get('seen_at')
            if found['ours']:
                facts['folder'] = where['folder']
                facts['seen_by'] = seen_by
                facts['deleted_by'] = where['deleted_by']
            return facts
        except ProbeError as e:
            self.close(e)
            raise

    def take(self, folder, uids, sort, found, where):
        """Sort the messages a search found in the selected folder; delete ours and stale."""
        start = self.uid_from.get(folder) if sort.token else None
        # 'UID n:*' also matches the last message when it is older than n (RFC 3501 6.4.8).
        uids = [uid for uid in uids if start is None or uid >= start]
        if not uids:
            return
        kinds = {}
        for uid, lines in sorted(self.client.headers(uids).items()):
            kind = sort(lines)
            if kind == INSPECT:
                kind = sort.inspect(self.client.message(uid))
            if kind is not None:
                kinds.setdefault(kind, []).append(uid)
        if 'ours' in kinds:
            where.setdefault('seen_at', time.monotonic())
            where.setdefault('folder', folder)
        doomed = kinds.get('ours', []) + kinds.get('stale', []) + kinds.get('bounce', [])
        if doomed:
            how = self.client.delete(doomed, self.trash if folder != self.trash else None)
            where.setdefault('deleted_by', how)
            if how == 'flagged':
                self.check.warnings.append(
                    '%s has neither UIDPLUS nor MOVE: the test mail in %s is flagged \\Deleted but not expunged '
                    '(a plain EXPUNGE would remove other clients\' \\Deleted mail too)' % (self.label, folder))
        for kind, kind_uids in kinds.items():
            found[kind].extend(kind_uids)

    def wait(self, seconds):
        """Wait before the next check: in IDLE when the wait is long and the server has IDLE
        (True when it pushed news of new mail), else sleep."""
        if self.client is None or seconds < IDLE_FROM or not self.client.has('IDLE'):
            time.sleep(seconds)
            return False
        # The wait, and a moment for the answer to DONE: a server that never ends IDLE fails
        # the check within the round trip's deadline rather than a whole timeout later.
        self.client.session.extend(seconds + DONE_GRACE)
        try:
            self.after_push = self.client.idle(seconds)
        except ProbeError as e:
            self.close(e)
            raise
        return self.after_push

    def close(self, error=None):
        """LOGOUT and close (after a failure: just close)."""
        conversation, self.conversation, self.client = self.conversation, None, None
        if conversation is None:
            return
        if error is None:
            try:
                conversation.__exit__(None, None, None)
            except ProbeError as e:
                self.check.warnings.append('%s: %s' % (self.label, e.message))
        else:
            conversation.__exit__(type(error), error, None)
