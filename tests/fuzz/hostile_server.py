"""A scripted, hostile SMTP, POP3 or IMAP server on loopback for fuzzing the probe core.

One HostileServer listens on 127.0.0.1 port 0 for the whole test module. Before each hypothesis
example the test loads a persona (what the server "is": its EHLO features, CAPA list, mailbox)
and one script per connection. A script is a list of steps, one per server turn: the first
answers the connection (the greeting), each further one answers the next line the client sends.
A step either replies AUTO (the plausible answer the persona gives to whatever the client just
sent, so the probe gets deep into the dialogue) or sends an explicit payload (a malformed reply,
random bytes, an over-long line, invalid UTF-8, ...), optionally after a short sleep, in pieces,
and then closes, resets, starts server-side TLS or reads on. When the steps run out, the
script's ending applies: close, reset, stall (hold the connection silently until the client
gives up) or auto (keep answering plausibly).

The server never echoes what the client sent. It may be told the secrets instead (the test's
passwords and the forms a client sends them in, as HostileServer(secrets=...)): a payload or a
persona's host may hold the placeholder @SECRET:name@, a Straddle payload puts a form of a secret
across the byte a client cuts an over-long line at, and a persona with an Echo quotes forms of the
secrets in its plausible replies. The strategies name forms only, so no generated example holds a
secret; the server fills them in as it sends.

IMAP replies carry the tag of the command they answer: an explicit payload says @TAG@ for it (and
@NEXT@ for the tag the client will use next, @UID@ for the UID of the probe's own mail), so a
generated reply can be tagged right, tagged wrong or not tagged at all. An IMAP connection is
kept open through a round trip: once a folder is selected, and while AUTO steps remain, the
server waits for the client's next command (IMAP_PATIENCE) instead of PATIENCE; in IDLE it pushes
on its own.
"""

import base64
import hashlib
import hmac
import re
import socket
import struct
import threading
import time
import traceback

CRLF = b'\r\n'
# How long the server waits for the client's next line before it moves on: the next explicit
# step is then sent unsolicited (a reply in pieces), or, with no explicit step left, the
# connection is closed. Keeps "client waits for more, server waits for a command" short.
PATIENCE = 0.1
HANDSHAKE_TIMEOUT = 1.0
SEND_TIMEOUT = 10.0
STALL_CAP = 15.0
AUTO_TAIL_CAP = 300
MAX_CLIENT_BUFFER = 4 * 1024 * 1024
TOKEN_PLACEHOLDER = b'@TOKEN@'
UNKNOWN_TOKEN = b'0123456789abcdef0123456789abcdef'
_TOKEN_IN_DATA = re.compile(br'X-Mailops-Roundtrip:[ \t]*([0-9a-fA-F]+)')
_SECRET = re.compile(br'@SECRET:([a-z0-9_]+)@')
_IMAP_PLACEHOLDERS = re.compile(br'@(TAG|NEXT|UID)@')
# How long an IMAP server waits for the client's next command while AUTO steps remain: the
# connection stays open through a round trip (the SMTP side, the waits between checks).
IMAP_PATIENCE = 12.0
# The APOP timestamp as the client finds it in the greeting.
_APOP_TIMESTAMP = re.compile(r'<[^<>\s]+>')
# Where a client cuts an over-long line (the core keeps the first 64 KiB of a line).
LINE_CUT = 64 * 1024
STRADDLE_FILL = b'~'
# The forms of the secrets a server may be told, by name (see secret_forms()): SMTP's password, its
# base64 (AUTH LOGIN) and the AUTH PLAIN payload; POP3's password and its base64; apop is the
# digest of the POP3 password for the timestamp of the connection's greeting.
# IMAP's password, its base64 and the AUTHENTICATE PLAIN payload; cram is the CRAM-MD5 response to
# the connection's challenge (the persona's before one was sent).
SECRET_FORMS = ('smtp', 'smtp_b64', 'smtp_plain', 'pop3', 'pop3_b64', 'apop', 'imap', 'imap_b64', 'imap_plain', 'cram')

# Outcome counts per property and the run's seed, printed in the terminal summary by conftest.py.
STATS = {}
RUN = {}

AFTER = ('read', 'close', 'reset', 'tls')
ENDINGS = ('auto', 'close', 'reset', 'stall')


class Long:
    """An explicit payload too big to show in a falsifying example: prefix + fill * size + end."""

    def __init__(self, prefix, fill, size, end):
        self.prefix = prefix
        self.fill = fill
        self.size = size
        self.end = end

    def render(self):
        return self.prefix + self.fill * self.size + self.end

    def filled(self, fill):
        return Long(fill(self.prefix), self.fill, self.size, fill(self.end))

    def __repr__(self):
        return 'Long(%r + %r * %d + %r)' % (self.prefix, self.fill, self.size, self.end)


class Repeat:
    """Many copies of one line (a flood of continuation lines or listing entries)."""

    def __init__(self, head, line, count, tail):
        self.head = head
        self.line = line
        self.count = count
        self.tail = tail

    def render(self):
        return self.head + self.line * self.count + self.tail

    def filled(self, fill):
        return Repeat(fill(self.head), fill(self.line), self.count, fill(self.tail))

    def __repr__(self):
        return 'Repeat(%r + %r * %d + %r)' % (self.head, self.line, self.count, self.tail)


class Nest:
    """head, depth opening parentheses, inner, as many closing ones (minus missing), tail: IMAP
    data nested deeper than a recursive parser or printer goes."""

    def __init__(self, head, depth, inner=b'', missing=0, tail=CRLF):
        self.head = head
        self.depth = depth
        self.inner = inner
        self.missing = missing
        self.tail = tail

    def render(self):
        return self.head + b'(' * self.depth + self.inner + b')' * max(0, self.depth - self.missing) + self.tail

    def filled(self, fill):
        return Nest(fill(self.head), self.depth, fill(self.inner), self.missing, fill(self.tail))

    def __repr__(self):
        return 'Nest(%r, depth=%d, inner=%r, missing=%d, tail=%r)' % (self.head, self.depth, self.inner, self.missing,
                                                                      self.tail)


class Straddle:
    """One over-long line: head, filler, a form of a secret whose middle byte is byte LINE_CUT of
    the line (a client that keeps LINE_CUT bytes keeps its first half), 1 KiB more filler, end."""

    def __init__(self, head, form, end=CRLF):
        self.head = head
        self.form = form
        self.end = end

    def render(self, secret=None):
        value = secret(self.form) if secret is not None else b'@SECRET:' + self.form.encode() + b'@'
        start = max(len(self.head), LINE_CUT - len(value) // 2)
        return self.head + STRADDLE_FILL * (start - len(self.head)) + value + STRADDLE_FILL * 1024 + self.end

    def filled(self, fill):
        return Straddle(fill(self.head), self.form, fill(self.end))

    def __repr__(self):
        return 'Straddle(%r, %r, %r)' % (self.head, self.form, self.end)


class Echo:
    """What a persona quotes in its plausible replies: the forms (names from SECRET_FORMS) on a
    line of their own (SMTP: continuation lines before the last; POP3: after the status line's
    text; IMAP: after the text of the last line), and straddle, one form put across LINE_CUT of an
    over-long line; at the moments in where (the command verbs, 'greeting', 'DATA-END'; IMAP also
    'AUTH-ANSWER', 'DONE' and 'PUSH'), or at every one when where is None."""

    def __init__(self, forms=(), straddle=None, where=None):
        self.forms = list(forms)
        self.straddle = straddle
        self.where = None if where is None else frozenset(where)

    def __repr__(self):
        where = None if self.where is None else sorted(self.where)
        return 'Echo(%r, straddle=%r, where=%r)' % (self.forms, self.straddle, where)

    def applies(self, moment):
        return self.where is None or moment in self.where

    def smtp(self, data, secret):
        """data (one reply) with the echo lines inserted before its last line."""
        body = data[:-2] if data.endswith(CRLF) else data
        head, _sep, last = body.rpartition(CRLF)
        code = last[:3]
        lines = []
        if self.forms:
            lines.append(code + b'-X-ECHO ' + b' '.join(secret(form) for form in self.forms) + CRLF)
        if self.straddle:
            lines.append(Straddle(code + b'-', self.straddle).render(secret))
        return (head + CRLF if head else b'') + b''.join(lines) + last + CRLF

    def pop3(self, data, secret):
        """data (one response) with the echo after the text of its first line."""
        first, sep, rest = data.partition(CRLF)
        if self.forms:
            first += b' ' + b' '.join(secret(form) for form in self.forms)
        if self.straddle:
            first = Straddle(first + b' ', self.straddle, end=b'').render(secret)
        return first + (sep or CRLF) + rest

    def imap(self, data, secret):
        """data (one reply) with the echo after the text of its last line (the tagged status line,
        or the greeting): where a client quotes a refusal."""
        body = data[:-2] if data.endswith(CRLF) else data
        head, sep, last = body.rpartition(CRLF)
        if self.forms:
            last += b' ' + b' '.join(secret(form) for form in self.forms)
        if self.straddle:
            last = Straddle(last + b' ', self.straddle, end=b'').render(secret)
        return head + sep + last + CRLF


def secret_forms(smtp_user, smtp_password, pop3_password, imap_user='', imap_password=''):
    """The forms a server may be told (SECRET_FORMS but apop and cram, which depend on the
    greeting and the challenge of a connection)."""
    def b64(text):
        return base64.b64encode(text.encode('utf-8'))
    return {'smtp': smtp_password.encode('utf-8'), 'smtp_b64': b64(smtp_password),
            'smtp_plain': b64('\0%s\0%s' % (smtp_user, smtp_password)),
            'pop3': pop3_password.encode('utf-8'), 'pop3_b64': b64(pop3_password),
            'imap': imap_password.encode('utf-8'), 'imap_b64': b64(imap_password),
            'imap_plain': b64('\0%s\0%s' % (imap_user, imap_password))}


def cram_response(user, password, challenge):
    """The CRAM-MD5 response a client sends for challenge (the text after '+ '), as bytes, or b''
    when the challenge is no base64 (a client refuses it)."""
    try:
        decoded = base64.b64decode(challenge.strip(), validate=True)
    except ValueError:
        return b''
    digest = hmac.new(password.encode('utf-8'), decoded, hashlib.md5).hexdigest()
    return base64.b64encode(('%s %s' % (user, digest)).encode('utf-8'))


def apop_digest(timestamp, password):
    return hashlib.md5((timestamp + password).encode('utf-8')).hexdigest()


def greeting_timestamp(data):
    """The APOP timestamp a client reads from this greeting (as the core does), or None."""
    line = data.split(b'\n', 1)[0][:LINE_CUT].rstrip(b'\r').decode('utf-8', 'replace')
    if not line.startswith('+OK'):
        return None
    match = _APOP_TIMESTAMP.search(line[4:])
    return match.group(0) if match else None


class Step:
    """One server turn. reply None means AUTO (the persona's plausible answer)."""

    def __init__(self, reply=None, delay=0.0, split=0, after='read'):
        assert after in AFTER
        self.reply = reply
        self.delay = delay
        self.split = split
        self.after = after

    def __repr__(self):
        parts = ['AUTO' if self.reply is None else repr(self.reply)]
        if self.delay:
            parts.append('delay=%r' % self.delay)
        if self.split:
            parts.append('split=%r' % self.split)
        if self.after != 'read':
            parts.append('after=%r' % self.after)
        return 'Step(%s)' % ', '.join(parts)


AUTO = Step()


class Script:
    """The steps for one connection and what happens when they run out. at ({command: Step},
    IMAP) aims steps at commands wherever they come: the first such command the client sends
    that an AUTO step would answer gets the step instead."""

    def __init__(self, steps, ending='auto', at=None):
        assert ending in ENDINGS
        self.steps = list(steps)
        self.ending = ending
        self.at = dict(at or {})

    def __repr__(self):
        return 'Script(%r, ending=%r%s)' % (self.steps, self.ending, ', at=%r' % self.at if self.at else '')


def numeral(number, digits=None):
    """number in decimal, written with the ten characters of digits instead of 0-9 if given
    (superscripts, fullwidth or Arabic-Indic digits: all pass str.isdigit())."""
    text = '%d' % number
    if digits:
        text = text.translate(dict((ord('0') + i, digit) for i, digit in enumerate(digits)))
    return text.encode('utf-8')


_CODE = re.compile(br'(?m)^([0-9]{3})')


def render(payload, token, secret=None, fill=None):
    """An explicit payload as bytes. fill (IMAP: the tags) applies to the parts before any secret
    or long filler, so a Straddle still puts its secret across LINE_CUT."""
    if isinstance(payload, bytes):
        data = fill(payload) if fill else payload
    else:
        payload = payload.filled(fill) if fill else payload
        data = payload.render(secret) if isinstance(payload, Straddle) else payload.render()
    return data.replace(TOKEN_PLACEHOLDER, token or UNKNOWN_TOKEN)


class _Eof(Exception):
    """The client closed its side."""


class _Reader:
    """The client's lines (or, in SMTP DATA mode, the whole message up to CRLF.CRLF)."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b''

    def unit(self, data_mode, patience):
        """The next client unit, or None when nothing complete arrived within patience."""
        deadline = time.monotonic() + patience
        while True:
            if data_mode:
                if self.buffer.startswith(b'.\r\n'):
                    self.buffer = self.buffer[3:]
                    return b''
                end = self.buffer.find(b'\r\n.\r\n')
                if end >= 0:
                    unit, self.buffer = self.buffer[:end], self.buffer[end + 5:]
                    return unit
            else:
                end = self.buffer.find(b'\n')
                if end >= 0:
                    unit, self.buffer = self.buffer[:end].rstrip(b'\r'), self.buffer[end + 1:]
                    return unit
            remaining = deadline - time.monotonic()
            if remaining <= 0 or len(self.buffer) > MAX_CLIENT_BUFFER:
                return None
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise _Eof()
            self.buffer += chunk


class SmtpPersona:
    """Plausible SMTP answers, with a little dialogue state (AUTH continuation, DATA)."""

    protocol = 'smtp'

    def __init__(self, host=b'mx.fuzz.test', features=(b'PIPELINING', b'AUTH PLAIN LOGIN CRAM-MD5', b'STARTTLS'),
                 challenge=b'PDEyMzQ1LjY3ODlAbXguZnV6ei50ZXN0Pg==', auth_ok=True, queue_id=b'4XyZ9', cert='good',
                 digits=None, echo=None):
        # digits: reply codes written with these ten characters instead of 0-9.
        # cert: the kind of certificate (lab.embedded.certs) shown after STARTTLS; None keeps
        # talking plaintext after agreeing to TLS.
        # echo: an Echo (forms of the secrets quoted in the plausible replies) or None.
        self.echo = echo
        self.host = host
        self.features = list(features)
        self.challenge = challenge
        self.auth_ok = auth_ok
        self.queue_id = queue_id
        self.cert = cert
        self.digits = digits

    def __repr__(self):
        return ('SmtpPersona(host=%r, features=%r, challenge=%r, auth_ok=%r, queue_id=%r, cert=%r, digits=%r, '
                'echo=%r)' % (self.host, self.features, self.challenge, self.auth_ok, self.queue_id, self.cert,
                              self.digits, self.echo))

    def conversation(self, shared):
        return _SmtpConversation(self, shared)


def _verb(unit):
    words = (unit or b'').split()
    return words[0].upper().decode('ascii', 'replace') if words else ''


class _SmtpConversation:
    def __init__(self, persona, shared):
        self.persona = persona
        self.shared = shared
        self.secret = None  # set by the server: form name -> bytes
        self.auth_state = None
        self.data_mode = False
        self.want_tls = False

    def reply(self, unit, first):
        """The plausible answer to unit (None for the greeting)."""
        moment = 'greeting' if first else 'DATA-END' if self.data_mode else _verb(unit)
        data = self._reply(unit, first)
        if self.persona.digits:
            data = _CODE.sub(lambda match: numeral(int(match.group(1)), self.persona.digits), data)
        echo = self.persona.echo
        if data and echo is not None and echo.applies(moment):
            data = echo.smtp(data, self.secret)
        return data

    def _reply(self, unit, first):
        p = self.persona
        self.want_tls = False
        if first:
            return b'220 ' + p.host + b' ESMTP hostile' + CRLF
        if unit is None:
            return b''
        if self.data_mode:
            self.data_mode = False
            return b'250 2.0.0 Ok: queued as ' + p.queue_id + CRLF
        if self.auth_state is not None:
            state, self.auth_state = self.auth_state, None
            if state == 'login-user':
                self.auth_state = 'login-password'
                return b'334 UGFzc3dvcmQ6' + CRLF
            return (b'235 2.7.0 Authentication successful' if p.auth_ok else b'535 5.7.8 Authentication failed') + CRLF
        words = unit.split()
        verb = words[0].upper() if words else b''
        if verb == b'EHLO':
            lines = [p.host] + p.features
            return b''.join(b'250-' + line + CRLF for line in lines[:-1]) + b'250 ' + lines[-1] + CRLF
        if verb == b'HELO':
            return b'250 ' + p.host + CRLF
        if verb == b'STARTTLS':
            self.want_tls = True
            return b'220 2.0.0 Ready to start TLS' + CRLF
        if verb == b'AUTH':
            mech = words[1].upper() if len(words) > 1 else b''
            if mech == b'LOGIN' and len(words) == 2:
                self.auth_state = 'login-user'
                return b'334 VXNlcm5hbWU6' + CRLF
            if mech == b'CRAM-MD5':
                self.auth_state = 'cram'
                return b'334 ' + p.challenge + CRLF
            if mech == b'PLAIN' and len(words) == 2:
                self.auth_state = 'plain'
                return b'334 ' + CRLF
            return (b'235 2.7.0 Authentication successful' if p.auth_ok else b'535 5.7.8 Authentication failed') + CRLF
        if verb in (b'MAIL', b'RCPT', b'RSET', b'NOOP'):
            return b'250 2.1.0 Ok' + CRLF
        if verb == b'DATA':
            return b'354 End data with <CR><LF>.<CR><LF>' + CRLF
        if verb == b'QUIT':
            return b'221 2.0.0 Bye' + CRLF
        return b'502 5.5.2 Error: command not recognized' + CRLF

    def sent(self, unit, data):
        """Track DATA mode whatever produced the reply (AUTO or explicit)."""
        words = (unit or b'').split()
        self.data_mode = bool(words) and words[0].upper() == b'DATA' and data.startswith(b'354')


class Message:
    """A mailbox entry: header lines (may hold @TOKEN@) and whether it only shows up once the
    SMTP side has accepted a mail (it "arrives")."""

    def __init__(self, uid, headers, arrives=False, size=None):
        self.uid = uid
        self.headers = list(headers)
        self.arrives = arrives
        self.size = size

    def __repr__(self):
        return 'Message(%r, %r, arrives=%r, size=%r)' % (self.uid, self.headers, self.arrives, self.size)


class Pop3Persona:
    protocol = 'pop3'

    def __init__(self, host=b'pop.fuzz.test', timestamp=b'<1896.697170952@pop.fuzz.test>',
                 capabilities=(b'TOP', b'UIDL', b'USER', b'STLS'), login_ok=True, messages=(), uidl_ok=True,
                 top_ok=True, dele_ok=True, stat=None, cert='good', locked_sessions=0,
                 digits=None, echo=None):
        # locked_sessions: that many logins (counted over all connections of the example) are
        # refused with "[IN-USE] maildrop locked", as when another session holds the mailbox.
        self.host = host
        self.timestamp = timestamp
        self.capabilities = None if capabilities is None else list(capabilities)
        self.login_ok = login_ok
        self.messages = list(messages)
        self.uidl_ok = uidl_ok
        self.top_ok = top_ok
        self.dele_ok = dele_ok
        self.stat = stat
        self.cert = cert
        self.locked_sessions = locked_sessions
        self.digits = digits  # message numbers and sizes written with these instead of 0-9
        self.echo = echo  # an Echo (forms of the secrets quoted in the plausible replies) or None

    def __repr__(self):
        return ('Pop3Persona(host=%r, timestamp=%r, capabilities=%r, login_ok=%r, messages=%r, uidl_ok=%r, '
                'top_ok=%r, dele_ok=%r, stat=%r, cert=%r, locked_sessions=%r, digits=%r, echo=%r)' % (
                    self.host, self.timestamp, self.capabilities, self.login_ok, self.messages, self.uidl_ok,
                    self.top_ok, self.dele_ok, self.stat, self.cert, self.locked_sessions, self.digits, self.echo))

    def conversation(self, shared):
        return _Pop3Conversation(self, shared)


def _multiline(first, lines):
    body = b''.join((b'.' + line if line.startswith(b'.') else line) + CRLF for line in lines)
    return first + CRLF + body + b'.' + CRLF


class _Pop3Conversation:
    data_mode = False

    def __init__(self, persona, shared):
        self.persona = persona
        self.shared = shared
        self.want_tls = False
        self.secret = None  # set by the server: form name -> bytes

    def visible(self):
        arrived = 'token' in self.shared
        return [m for m in self.persona.messages if arrived or not m.arrives]

    def message(self, words):
        messages = self.visible()
        try:
            number = int(words[1])
        except (IndexError, ValueError):
            return None
        return messages[number - 1] if 1 <= number <= len(messages) else None

    def reply(self, unit, first):
        data = self._reply(unit, first)
        echo = self.persona.echo
        if data and echo is not None and echo.applies('greeting' if first else _verb(unit)):
            data = echo.pop3(data, self.secret)
        return data

    def _reply(self, unit, first):
        p = self.persona
        self.want_tls = False
        if first:
            return b'+OK ' + p.host + b' POP3 hostile ready' + ((b' ' + p.timestamp) if p.timestamp else b'') + CRLF
        if unit is None:
            return b''
        words = unit.split()
        verb = words[0].upper() if words else b''
        messages = self.visible()
        if verb == b'CAPA':
            if p.capabilities is None:
                return b'-ERR unknown command' + CRLF
            return _multiline(b'+OK Capability list follows', p.capabilities)
        if verb == b'STLS':
            self.want_tls = True
            return b'+OK Begin TLS negotiation' + CRLF
        if verb in (b'USER', b'NOOP', b'RSET'):
            return b'+OK' + CRLF
        if verb in (b'PASS', b'APOP'):
            logins = self.shared.get('pop3 logins', 0)
            self.shared['pop3 logins'] = logins + 1
            if logins < p.locked_sessions:
                return b'-ERR [IN-USE] maildrop locked by another session' + CRLF
            return (b'+OK maildrop ready' if p.login_ok else b'-ERR [AUTH] invalid login') + CRLF
        if verb == b'STAT':
            if p.stat is not None:
                return b'+OK ' + p.stat + CRLF
            return b'+OK %s %s' % (self.num(len(messages)), self.num(sum(self.size(m) for m in messages))) + CRLF
        if verb == b'UIDL':
            if not p.uidl_ok:
                return b'-ERR UIDL not supported' + CRLF
            return _multiline(b'+OK', [b'%s %s' % (self.num(n), m.uid) for n, m in enumerate(messages, 1)])
        if verb == b'LIST':
            return _multiline(b'+OK', [b'%s %s' % (self.num(n), self.num(self.size(m)))
                                       for n, m in enumerate(messages, 1)])
        if verb in (b'TOP', b'RETR'):
            if verb == b'TOP' and not p.top_ok:
                return b'-ERR TOP not supported' + CRLF
            message = self.message(words)
            if message is None:
                return b'-ERR no such message' + CRLF
            lines = [self.fill(line) for line in message.headers] + [b'']
            if verb == b'RETR':
                lines.append(b'Round-trip body.')
            return _multiline(b'+OK', lines)
        if verb == b'DELE':
            if not p.dele_ok or self.message(words) is None:
                return b'-ERR cannot delete' + CRLF
            return b'+OK message deleted' + CRLF
        if verb == b'QUIT':
            return b'+OK bye' + CRLF
        return b'-ERR unknown command' + CRLF

    def num(self, number):
        return numeral(number, self.persona.digits)

    def fill(self, line):
        return line.replace(TOKEN_PLACEHOLDER, self.shared.get('token') or UNKNOWN_TOKEN)

    @staticmethod
    def size(message):
        if message.size is not None:
            return message.size
        return sum(len(line) + 2 for line in message.headers) + 2

    def sent(self, unit, data):
        pass


class ImapMessage:
    """A mailbox entry over IMAP: its UID, header lines (may hold @TOKEN@), the folder it is in
    (as the server names it), and whether it only shows up once the SMTP side has accepted a
    mail (it "arrives", when the persona's arrival says)."""

    def __init__(self, uid, headers, folder=b'INBOX', arrives=False):
        self.uid = uid
        self.headers = list(headers)
        self.folder = folder
        self.arrives = arrives

    def __repr__(self):
        return 'ImapMessage(%r, %r, folder=%r, arrives=%r)' % (self.uid, self.headers, self.folder, self.arrives)


IMAP_CAPABILITIES = (b'STARTTLS', b'LOGINDISABLED', b'AUTH=PLAIN', b'AUTH=CRAM-MD5', b'SASL-IR', b'IDLE', b'UIDPLUS',
                     b'MOVE', b'SPECIAL-USE', b'LITERAL+', b'ID', b'NAMESPACE')
IMAP_FOLDERS = ((b'\\HasNoChildren', b'INBOX'), (b'\\HasNoChildren \\Junk', b'Junk'),
                (b'\\HasNoChildren \\Trash', b'Trash'), (b'\\HasNoChildren \\Sent', b'Sent'))
# How the persona writes BODY[HEADER] in a FETCH answer: a literal (with the UID before or after
# it, among other items), or as a server must not (quoted over several lines, NIL, a list, no UID,
# the item named as asked).
IMAP_FETCH_FORMS = ('literal', 'literal-first', 'extras', 'no-uid', 'nil', 'quoted', 'list', 'peek')
# Ways a plausible server still surprises a client: untagged data after the tagged reply, an
# [ALERT] before every tagged reply, EXISTS/RECENT before every reply in a selected folder,
# lower-case status words, [CAPABILITY] in the login reply, LOGOUT without BYE.
IMAP_QUIRKS = ('tagged-first', 'alert', 'exists-always', 'lowercase', 'caps-code', 'no-bye')
IMAP_ARRIVALS = ('now', 'late', 'idle')
# The commands whose reaching counts in the summary (conftest.py): how deep a dialogue got.
IMAP_DEPTH = ('LOGIN', 'AUTHENTICATE', 'LIST', 'STATUS', 'SELECT', 'UID SEARCH', 'UID FETCH', 'UID STORE', 'UID EXPUNGE',
              'UID MOVE', 'IDLE')
IMAP_IDLE_ENDS = ('ok', 'silent', 'no', 'bye', 'untagged')


class ImapPersona:
    """Plausible IMAP answers over a small mailbox: capabilities (before and after STARTTLS),
    LOGIN and AUTHENTICATE PLAIN/CRAM-MD5, LIST with special-use attributes, STATUS, SELECT with
    [UIDNEXT], UID SEARCH (the probe's mail shows up once the SMTP side received its token, as
    arrival says: at once, after a few searches, or only once the client waits in IDLE), UID
    FETCH BODY.PEEK[HEADER] as a literal, UID STORE/EXPUNGE/MOVE, IDLE with a push and DONE."""

    protocol = 'imap'

    def __init__(self, host=b'imap.fuzz.test', greeting='OK', caps_in_greeting=True, capabilities=IMAP_CAPABILITIES,
                 tls_capabilities=None, auth_ok=True, challenge=b'PDEyMzQ1LjY3ODlAaW1hcC5mdXp6LnRlc3Q+',
                 folders=IMAP_FOLDERS, messages=(), arrival='now', uidnext=None, uidvalidity=b'1',
                 search='honest', fetch='literal', literal=0, refuse=(), idle_push=b'* @N@ EXISTS\r\n',
                 idle_delay=0.05, idle_end='ok', quirks=(), cert='good', echo=None):
        # greeting: OK, PREAUTH or BYE. tls_capabilities: what CAPABILITY lists after STARTTLS
        # (None: the same without STARTTLS and LOGINDISABLED). folders: (attributes, name as
        # written on the wire). uidnext: None for the true one, else the bytes SELECT and STATUS
        # say (b'' leaves it out). search: honest, all (every UID) or star (n:* also matches the
        # last message, RFC 3501 6.4.8). literal: bytes added to every literal's announced size.
        # refuse: commands ('SELECT', 'UID FETCH', ...) answered NO. idle_push: what IDLE pushes
        # idle_delay seconds after its continuation (bytes with @N@ for the message count, or a
        # Long), None for nothing. idle_end: how DONE is answered (IMAP_IDLE_ENDS: OK, never, NO,
        # BYE and a hang-up, untagged news then OK).
        self.host = host
        self.greeting = greeting
        self.caps_in_greeting = caps_in_greeting
        self.capabilities = list(capabilities)
        self.tls_capabilities = None if tls_capabilities is None else list(tls_capabilities)
        self.auth_ok = auth_ok
        self.challenge = challenge
        self.folders = [tuple(folder) for folder in folders]
        self.messages = list(messages)
        self.arrival = arrival
        self.uidnext = uidnext
        self.uidvalidity = uidvalidity
        self.search = search
        self.fetch = fetch
        self.literal = literal
        self.refuse = frozenset(refuse)
        self.idle_push = idle_push
        self.idle_delay = idle_delay
        self.idle_end = idle_end
        self.quirks = frozenset(quirks)
        self.cert = cert
        self.echo = echo

    def __repr__(self):
        return ('ImapPersona(host=%r, greeting=%r, caps_in_greeting=%r, capabilities=%r, tls_capabilities=%r, '
                'auth_ok=%r, challenge=%r, folders=%r, messages=%r, arrival=%r, uidnext=%r, uidvalidity=%r, '
                'search=%r, fetch=%r, literal=%r, refuse=%r, idle_push=%r, idle_delay=%r, idle_end=%r, quirks=%r, '
                'cert=%r, echo=%r)' % (
                    self.host, self.greeting, self.caps_in_greeting, self.capabilities, self.tls_capabilities,
                    self.auth_ok, self.challenge, self.folders, self.messages, self.arrival, self.uidnext,
                    self.uidvalidity, self.search, self.fetch, self.literal, sorted(self.refuse), self.idle_push,
                    self.idle_delay, self.idle_end, sorted(self.quirks), self.cert, self.echo))

    def conversation(self, shared):
        return _ImapConversation(self, shared)


def _imap_args(text):
    """The arguments of a client command: atoms, quoted strings (unescaped) and parenthesized
    lists (kept whole)."""
    out, i, n = [], 0, len(text)
    while i < n:
        char = text[i:i + 1]
        if char == b' ':
            i += 1
        elif char == b'"':
            j, chars = i + 1, []
            while j < n and text[j:j + 1] != b'"':
                if text[j:j + 1] == b'\\' and j + 1 < n:
                    j += 1
                chars.append(text[j:j + 1])
                j += 1
            out.append(b''.join(chars))
            i = j + 1
        elif char == b'(':
            j, depth = i, 0
            while j < n:
                depth += text[j:j + 1] == b'('
                depth -= text[j:j + 1] == b')'
                j += 1
                if depth == 0:
                    break
            out.append(text[i:j])
            i = j
        else:
            j = text.find(b' ', i)
            j = n if j < 0 else j
            out.append(text[i:j])
            i = j
    return out


def _uid_ranges(text):
    """A UID set (5,6 or 3:* or 1:4) as (low, high) pairs, high None for *; None when malformed."""
    ranges = []
    for part in text.split(b','):
        low, sep, high = part.partition(b':')
        try:
            first = None if low == b'*' else int(low)
            last = (None if high == b'*' else int(high)) if sep else first
        except ValueError:
            return None
        ranges.append((first or 0, last))
    return ranges


def _in_ranges(uid, ranges):
    return any(low <= uid and (high is None or uid <= high) for low, high in ranges)


def _wire_name(name):
    """A folder name as a server writes it: an atom when it can be one, else quoted."""
    if name and re.match(br'^[A-Za-z0-9._&-]+$', name):
        return name
    return b'"' + name.replace(b'\\', b'\\\\').replace(b'"', b'\\"') + b'"'


class _ImapConversation:
    data_mode = False

    def __init__(self, persona, shared):
        self.persona = persona
        self.shared = shared
        self.secret = None  # set by the server: form name -> bytes
        self.want_tls = False
        self.hangup = False
        self.tls = False
        self.tag = None  # of the last command
        self.selected = None
        self.reported = {}  # folder -> the message count last told the client
        # What the client's next line is besides a command: an answer to a SASL continuation
        # (answers_due of them), or DONE (idle_tag).
        self.auth = None  # (tag, mechanism) of the AUTHENTICATE in flight
        self.answers_due = 0
        self.idle_tag = None
        self.idle_pushed = False
        # The connection's CRAM-MD5 challenge (the persona's until one was sent), for 'cram'.
        self.challenge = persona.challenge.decode('utf-8', 'replace')
        self.expected_answers = set()

    # -- the hooks the server calls -----------------------------------------------------
    @property
    def pushing(self):
        return self.idle_tag is not None and not self.idle_pushed and self.persona.idle_push is not None

    def patience(self, steps, ending):
        if self.pushing:
            return self.persona.idle_delay
        if (steps and steps[0].reply is not None) or (self.tls and self.persona.cert is None):
            # An explicit step comes soon, unasked if need be; or the persona agreed to TLS and
            # talks on in plaintext, so the client's handshake is all that comes.
            return PATIENCE
        if self.selected is not None and (steps or ending == 'auto'):
            # A round trip's connection, open through the SMTP session and the waits.
            return IMAP_PATIENCE
        return PATIENCE

    def fill(self, data):
        return _IMAP_PLACEHOLDERS.sub(lambda match: self.placeholder(match.group(1)), data)

    def placeholder(self, name):
        if name == b'TAG':
            return self.tag or b'A001'
        if name == b'NEXT':
            try:
                return b'A%03d' % (int((self.tag or b'A000')[1:]) + 1)
            except ValueError:
                return b'A999'
        ours = [m.uid for m in self.persona.messages if m.arrives]
        return b'%d' % (ours[0] if ours else 1)

    def reply(self, unit, first):
        moment = 'greeting' if first else self.moment(unit)
        data = self._reply(unit, first)
        echo = self.persona.echo
        if data and echo is not None and echo.applies(moment):
            data = echo.imap(data, self.secret)
        return data

    def moment(self, unit):
        return 'PUSH' if unit is None else self.command(unit)

    def command(self, unit):
        """What a client line is: AUTH-ANSWER, DONE, or the command ('UID FETCH' for UID ones)."""
        if self.answers_due:
            return 'AUTH-ANSWER'
        if self.idle_tag is not None:
            return 'DONE'
        words = unit.upper().split()
        if len(words) > 2 and words[1] == b'UID':
            return (words[1] + b' ' + words[2]).decode('ascii', 'replace')
        return words[1].decode('ascii', 'replace') if len(words) > 1 else ''

    def sent(self, unit, data):
        """Follow the dialogue whatever answered (AUTO or an explicit step): which client lines
        answer a continuation (and which of those are CRAM-MD5 responses), when IDLE began."""
        shared = self.shared
        if unit is not None:
            if unit in self.expected_answers:
                shared.setdefault('cram answers', []).append(unit.decode('ascii'))
            if self.answers_due:
                self.answers_due -= 1
            elif self.idle_tag is not None:
                self.idle_tag = None
            else:
                words = unit.split()
                verb = words[1].upper() if len(words) > 1 else b''
                name = verb + b' ' + words[2].upper() if verb == b'UID' and len(words) > 2 else verb
                shared.setdefault('imap verbs', set()).add(name.decode('ascii', 'replace'))
                self.auth = (words[0], words[2].upper()) if verb == b'AUTHENTICATE' and len(words) > 2 else None
                if verb == b'IDLE' and any(line.startswith(b'+') for line in data.split(b'\n')):
                    self.idle_tag, self.idle_pushed = words[0], False
                    shared['imap idled'] = True
        continuations = [line[1:].strip().rstrip(b'\r') for line in data.split(b'\n') if line.startswith(b'+')]
        if self.auth is not None and continuations and unit is not None:
            self.answers_due += len(continuations)
            if self.auth[1] == b'CRAM-MD5':
                for challenge in continuations:
                    self.challenge = challenge.decode('utf-8', 'replace')
                    shared.setdefault('cram challenges', []).append(self.challenge)
                    answer = self.secret('cram')
                    if answer:
                        self.expected_answers.add(answer)

    # -- the mailbox ----------------------------------------------------------------------
    def arrived(self):
        if 'token' not in self.shared:
            return False
        arrival = self.persona.arrival
        if arrival == 'late':
            return self.shared.get('imap searches', 0) >= 3
        if arrival == 'idle':
            return bool(self.shared.get('imap idled'))
        return True

    def folder(self, name):
        """The persona's name of the folder a client named, or None."""
        for _attrs, known in self.persona.folders:
            if known == name or (known.upper() == b'INBOX' and name.upper() == b'INBOX'):
                return known
        return None

    def visible(self, folder):
        deleted = self.shared.setdefault('imap deleted', set())
        arrived = self.arrived()
        found = sorted((m for m in self.persona.messages
                        if self.folder(m.folder) == folder and m.uid not in deleted and (arrived or not m.arrives)),
                       key=lambda m: m.uid)
        high = self.shared.setdefault('imap high', {})
        high[folder] = max([high.get(folder, 0)] + [m.uid for m in found])
        return found

    def uidnext(self, folder):
        if self.persona.uidnext is not None:
            return self.persona.uidnext
        self.visible(folder)
        return b'%d' % (self.shared['imap high'][folder] + 1)

    def header(self, message):
        lines = [line.replace(TOKEN_PLACEHOLDER, self.shared.get('token') or UNKNOWN_TOKEN) for line in message.headers]
        return CRLF.join(lines) + CRLF + CRLF

    def matches(self, message, name, value):
        """Whether a header field name holds value (unfolded, case-insensitive), as SEARCH HEADER."""
        text = self.header(message).replace(CRLF + b' ', b' ').replace(CRLF + b'\t', b' ').lower()
        return any(line.startswith(name.lower() + b':') and value.lower() in line for line in text.split(CRLF))

    # -- answers --------------------------------------------------------------------------
    def status_word(self, word):
        return word.lower() if 'lowercase' in self.persona.quirks else word

    def done(self, lines=(), status=b'OK', text=b'completed', code=None):
        """The reply to the current command: untagged lines, then the tagged status line."""
        p = self.persona
        lines = list(lines)
        if 'exists-always' in p.quirks and self.selected is not None:
            lines.insert(0, b'* %d EXISTS' % len(self.visible(self.selected)))
            lines.insert(1, b'* 0 RECENT')
        if 'alert' in p.quirks:
            lines.insert(0, b'* OK [ALERT] maintenance tonight')
        tagged = b'%s %s %s%s' % (self.tag, self.status_word(status), b'[%s] ' % code if code else b'', text)
        if 'tagged-first' in p.quirks and lines:
            lines = [tagged] + lines
        else:
            lines.append(tagged)
        return b''.join(line + CRLF for line in lines)

    def caps(self):
        p = self.persona
        if self.tls and p.tls_capabilities is not None:
            listed = p.tls_capabilities
        elif self.tls:
            listed = [c for c in p.capabilities if c.upper() not in (b'STARTTLS', b'LOGINDISABLED')]
        else:
            listed = p.capabilities
        return b' '.join([b'IMAP4rev1'] + listed)

    def logged_in(self):
        p = self.persona
        if not p.auth_ok:
            return self.done(status=b'NO', code=b'AUTHENTICATIONFAILED', text=b'Authentication failed.')
        return self.done(code=b'CAPABILITY ' + self.caps() if 'caps-code' in p.quirks else None, text=b'Logged in')

    def _reply(self, unit, first):
        p = self.persona
        self.want_tls = False
        if first:
            if p.greeting == 'BYE':
                self.hangup = True
                return b'* BYE ' + p.host + b' too busy' + CRLF
            code = b'[CAPABILITY ' + self.caps() + b'] ' if p.caps_in_greeting else b''
            return b'* ' + p.greeting.encode('ascii') + b' ' + code + p.host + b' hostile IMAP ready' + CRLF
        if unit is None:
            if self.pushing:
                self.idle_pushed = True
                count = len(self.visible(self.selected)) if self.selected is not None else 0
                push = p.idle_push if isinstance(p.idle_push, bytes) else p.idle_push.render()
                return push.replace(b'@N@', b'%d' % count)
            return b''
        if self.answers_due:
            self.tag = self.auth[0]
            if unit.strip() == b'*':
                return self.done(status=b'BAD', text=b'Authentication cancelled')
            return self.logged_in()
        if self.idle_tag is not None:
            self.tag = self.idle_tag
            return self.idle_done()
        words = unit.split(None, 2)
        if len(words) < 2:
            return b'* BAD Error in IMAP command received by server.' + CRLF
        self.tag = words[0]
        verb = words[1].upper()
        args = _imap_args(words[2] if len(words) > 2 else b'')
        if verb == b'UID' and args:
            verb, args = b'UID ' + args[0].upper(), args[1:]
        if verb.decode('ascii', 'replace') in p.refuse:
            return self.done(status=b'NO', code=b'UNAVAILABLE', text=verb + b' refused')
        handler = getattr(self, 'do_' + verb.decode('ascii', 'replace').lower().replace(' ', '_'), None)
        if handler is None:
            return self.done(status=b'BAD', text=b'Error in IMAP command ' + verb + b': Unknown command.')
        return handler(args)

    def idle_done(self):
        end = self.persona.idle_end
        if end == 'silent':
            return b''
        if end == 'bye':
            self.hangup = True
            return b'* BYE idled too long' + CRLF
        if end == 'no':
            return self.done(status=b'NO', text=b'IDLE failed')
        lines = []
        if end == 'untagged' and self.selected is not None:
            lines = [b'* %d EXISTS' % len(self.visible(self.selected)), b'* OK Still here']
        return self.done(lines, text=b'Idle completed')

    def do_capability(self, _args):
        return self.done([b'* CAPABILITY ' + self.caps()], text=b'Capability completed')

    def do_starttls(self, _args):
        self.want_tls = True
        self.tls = True
        return self.done(text=b'Begin TLS negotiation now')

    def do_login(self, _args):
        return self.logged_in()

    def do_authenticate(self, args):
        mechanism = args[0].upper() if args else b''
        if mechanism == b'PLAIN':
            return self.logged_in() if len(args) > 1 else b'+ ' + CRLF
        if mechanism == b'CRAM-MD5':
            return b'+ ' + self.persona.challenge + CRLF
        return self.done(status=b'NO', code=b'CANNOT', text=b'Unsupported authentication mechanism')

    def do_list(self, _args):
        lines = [b'* LIST (%s) "/" %s' % (attrs, _wire_name(name)) for attrs, name in self.persona.folders]
        return self.done(lines, text=b'List completed')

    def do_status(self, args):
        folder = self.folder(args[0]) if args else None
        if folder is None:
            return self.done(status=b'NO', code=b'NONEXISTENT', text=b'Mailbox does not exist')
        messages = len(self.visible(folder))
        items = b'MESSAGES %d UNSEEN %d' % (messages, messages)
        uidnext = self.uidnext(folder)
        if uidnext:
            items += b' UIDNEXT ' + uidnext
        return self.done([b'* STATUS %s (%s UIDVALIDITY %s)' % (_wire_name(folder), items, self.persona.uidvalidity)],
                         text=b'Status completed')

    def do_select(self, args):
        folder = self.folder(args[0]) if args else None
        if folder is None:
            self.selected = None
            return self.done(status=b'NO', code=b'NONEXISTENT', text=b'Mailbox does not exist')
        self.selected = folder
        count = len(self.visible(folder))
        self.reported[folder] = count
        lines = [b'* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)', b'* %d EXISTS' % count, b'* 0 RECENT',
                 b'* OK [UIDVALIDITY %s] UIDs valid' % self.persona.uidvalidity]
        uidnext = self.uidnext(folder)
        if uidnext:
            lines.append(b'* OK [UIDNEXT %s] Predicted next UID' % uidnext)
        return self.done(lines, code=b'READ-WRITE', text=b'Select completed')

    do_examine = do_select

    def do_noop(self, _args):
        lines = []
        if self.selected is not None:
            count = len(self.visible(self.selected))
            if count != self.reported.get(self.selected):
                self.reported[self.selected] = count
                lines.append(b'* %d EXISTS' % count)
        return self.done(lines, text=b'NOOP completed')

    def do_uid_search(self, args):
        if self.selected is None:
            return self.done(status=b'BAD', text=b'No mailbox selected')
        if 'token' in self.shared:
            self.shared['imap searches'] = self.shared.get('imap searches', 0) + 1
        visible = self.visible(self.selected)
        # UID n:* and HEADER criteria; several HEADER criteria (under OR: the probe's bounce
        # search) match when any does, and FROM criteria are read as matching nothing.
        start, headers, i = None, [], 0
        while i < len(args):
            key = args[i].upper()
            if key == b'UID' and i + 1 < len(args):
                ranges = _uid_ranges(args[i + 1]) or [(0, None)]
                start = ranges[0][0]
                i += 2
            elif key == b'HEADER' and i + 2 < len(args):
                headers.append((args[i + 1], args[i + 2]))
                i += 3
            else:
                i += 1
        found = [m for m in visible
                 if (start is None or m.uid >= start) and (not headers or any(self.matches(m, *h) for h in headers))]
        search = self.persona.search
        if search == 'all':
            found = visible
        elif search == 'star' and start is not None and visible and visible[-1] not in found:
            found.append(visible[-1])
        return self.done([b' '.join([b'* SEARCH'] + [b'%d' % m.uid for m in found])], text=b'Search completed')

    def selected_in(self, args):
        """(sequence number, message) of the selected folder's messages in the UID set args[0]."""
        ranges = _uid_ranges(args[0]) if args else None
        if self.selected is None or ranges is None:
            return None
        return [(seq, m) for seq, m in enumerate(self.visible(self.selected), 1) if _in_ranges(m.uid, ranges)]

    def do_uid_fetch(self, args):
        chosen = self.selected_in(args)
        if chosen is None:
            return self.done(status=b'BAD', text=b'Invalid messageset')
        form, lines = self.persona.fetch, []
        for seq, message in chosen:
            header = self.header(message)
            literal = b'{%d}' % max(0, len(header) + self.persona.literal) + CRLF + header
            uid = b'UID %d' % message.uid
            items = {
                'literal': uid + b' BODY[HEADER] ' + literal,
                'literal-first': b'BODY[HEADER] ' + literal + b' ' + uid,
                'extras': uid + b' RFC822.SIZE %d FLAGS (\\Recent) BODY[HEADER] ' % len(header) + literal,
                'no-uid': b'BODY[HEADER] ' + literal,
                'nil': uid + b' BODY[HEADER] NIL',
                'quoted': uid + b' BODY[HEADER] "' + header.replace(b'"', b'\\"') + b'"',
                'list': uid + b' BODY[HEADER] (' + header.split(CRLF, maxsplit=1)[0] + b')',
                'peek': uid + b' BODY.PEEK[HEADER] ' + literal,
            }[form]
            lines.append(b'* %d FETCH (%s)' % (seq, items))
        return self.done(lines, text=b'Fetch completed')

    def do_uid_store(self, args):
        chosen = self.selected_in(args)
        if chosen is None:
            return self.done(status=b'BAD', text=b'Invalid messageset')
        flagged = self.shared.setdefault('imap flagged', set())
        lines = []
        for seq, message in chosen:
            flagged.add(message.uid)
            if len(args) < 2 or b'SILENT' not in args[1].upper():
                lines.append(b'* %d FETCH (UID %d FLAGS (\\Deleted))' % (seq, message.uid))
        return self.done(lines, text=b'Store completed')

    def expunge(self, chosen):
        deleted = self.shared.setdefault('imap deleted', set())
        lines = []
        for seq, message in sorted(chosen, key=lambda pair: pair[0], reverse=True):
            deleted.add(message.uid)
            lines.append(b'* %d EXPUNGE' % seq)
        return lines

    def do_uid_expunge(self, args):
        chosen = self.selected_in(args)
        if chosen is None:
            return self.done(status=b'BAD', text=b'Invalid messageset')
        flagged = self.shared.setdefault('imap flagged', set())
        return self.done(self.expunge([(seq, m) for seq, m in chosen if m.uid in flagged]), text=b'Expunge completed')

    def do_uid_move(self, args):
        chosen = self.selected_in(args)
        if chosen is None:
            return self.done(status=b'BAD', text=b'Invalid messageset')
        if len(args) < 2 or self.folder(args[1]) is None:
            return self.done(status=b'NO', code=b'TRYCREATE', text=b'Mailbox does not exist')
        uids = b','.join(b'%d' % m.uid for _seq, m in chosen)
        lines = [b'* OK [COPYUID %s %s %s] Moved UIDs.' % (self.persona.uidvalidity, uids, uids)] if chosen else []
        return self.done(lines + self.expunge(chosen), text=b'Move completed')

    def do_idle(self, _args):
        return b'+ idling' + CRLF

    def do_logout(self, _args):
        self.hangup = True
        lines = [] if 'no-bye' in self.persona.quirks else [b'* BYE Logging out']
        return self.done(lines, text=b'Logout completed')

    def do_enable(self, _args):
        return self.done(text=b'Enabled')

    do_id = do_namespace = do_check = do_unselect = do_enable


class HostileServer:
    """A threaded loopback TCP server whose connections follow loaded scripts."""

    def __init__(self, certs=None, shared=None, secrets=None):
        # secrets: {form name: bytes} (see secret_forms()), what @SECRET:name@ stands for.
        self.secrets = dict(secrets or {})
        self.certs = certs
        self.contexts = {}
        self.shared = shared if shared is not None else {}
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.persona = None
        self.scripts = []
        self.connections = 0
        self.lifetimes = []
        self.errors = []
        self.threads = []
        self.stopping = False
        self.acceptor = threading.Thread(target=self._accept_loop, name='hostile-accept-%d' % self.port)
        self.acceptor.daemon = True
        self.acceptor.start()

    # -- control from the test ------------------------------------------------------------
    def load(self, persona, scripts):
        """Set the behaviour for the next connections: scripts[i] for the i-th connection,
        the last one again for any further connection."""
        with self.lock:
            self.shared.clear()
            self.persona = persona
            self.scripts = list(scripts) or [Script([], 'close')]
            self.connections = 0
            self.lifetimes = []
            self.errors = []  # every handler of the last example has ended (exercise waits)

    def wait_idle(self, limit):
        """Wait until every connection handler has ended; False when some still runs."""
        end = time.monotonic() + limit
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        with self.lock:
            self.threads = [t for t in self.threads if t.is_alive()]
            return not self.threads

    def close(self):
        self.stopping = True
        try:
            self.listener.close()
        except OSError:
            pass
        self.acceptor.join(2)
        self.wait_idle(STALL_CAP + 5)

    # -- serving --------------------------------------------------------------------------
    def _accept_loop(self):
        self.listener.settimeout(0.2)
        while not self.stopping:
            try:
                conn, _address = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            # Each reply goes out as written: with Nagle, an answer written in parts (the three of a
            # pipelined IMAP check) waits for the client's delayed ACK, some 40 ms a check.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                index = min(self.connections, len(self.scripts) - 1)
                script = self.scripts[index]
                persona = self.persona
                self.connections += 1
                thread = threading.Thread(target=self._handle, args=(conn, persona, script),
                                          name='hostile-conn-%d' % self.port)
                thread.daemon = True
                self.threads.append(thread)
            thread.start()

    def _handle(self, conn, persona, script):
        start = time.monotonic()
        current = [conn]  # the TLS socket replaces conn once a handshake succeeded
        try:
            self._converse(current, persona, script)
        except (OSError, _Eof):
            pass
        except Exception as e:  # pylint: disable=broad-exception-caught
            # A bug in this harness, not in the probe: reported by the test through .errors.
            where = traceback.extract_tb(e.__traceback__)[-1]
            self.errors.append('%s: %r (hostile_server.py line %d)' % (type(e).__name__, e, where.lineno))
        finally:
            for sock in (current[0], conn):
                try:
                    sock.close()
                except OSError:
                    pass
            with self.lock:
                self.lifetimes.append(time.monotonic() - start)

    def _send(self, sock, data, step):
        if step.delay:
            time.sleep(step.delay)
        if not data:
            return
        sock.settimeout(SEND_TIMEOUT)
        if step.split and len(data) > 1:
            size = max(1, len(data) // (step.split + 1))
            for offset in range(0, len(data), size):
                sock.sendall(data[offset:offset + size])
                time.sleep(0.002)
        else:
            sock.sendall(data)

    def _converse(self, current, persona, script):
        sock = current[0]
        reader = _Reader(sock)
        talk = persona.conversation(self.shared)
        timestamp = []  # the APOP timestamp of this connection's greeting, once sent
        talk.secret = lambda name: self._secret(name, timestamp, persona, talk)
        # The hooks an IMAP conversation has (SMTP and POP3 keep the defaults): fill(data) puts
        # the tags into an explicit payload; patience(steps, ending) is how long to wait for the
        # client's next line; pushing says a reply is due unasked (an IDLE push); hangup closes
        # the connection after the reply just sent (a BYE).
        fill = getattr(talk, 'fill', None)
        patience = getattr(talk, 'patience', lambda _steps, _ending: PATIENCE)
        steps = list(script.steps)
        aimed = dict(script.at)
        unit = None
        first = True
        auto_tail = 0
        while True:
            if steps:
                step = steps.pop(0)
            elif script.ending == 'auto' and auto_tail < AUTO_TAIL_CAP:
                auto_tail += 1
                step = AUTO
            else:
                self._end(sock, script.ending)
                return
            if step.reply is None and aimed and unit is not None:
                step = aimed.pop(talk.command(unit), step)
            if step.reply is None:
                data = talk.reply(unit, first)
                after = 'tls' if talk.want_tls and step.after == 'read' else step.after
            else:
                data = render(step.reply, self.shared.get('token'), talk.secret, fill)
                after = step.after
            if b'@SECRET:' in data:
                data = _SECRET.sub(lambda match: talk.secret(match.group(1).decode('ascii')), data)
            if first and persona.protocol == 'pop3':
                found = greeting_timestamp(data)
                if found:
                    timestamp.append(found)
                    with self.lock:
                        self.shared.setdefault('timestamps', []).append(found)
            first = False
            self._send(sock, data, step)
            talk.sent(unit, data)
            if getattr(talk, 'hangup', False):
                return
            if after == 'close':
                return
            if after == 'reset':
                self._end(sock, 'reset')
                return
            if after == 'tls':
                sock = self._start_tls(sock, persona.cert)
                if sock is None:
                    return
                current[0] = sock
                reader = _Reader(sock)
            unit = reader.unit(talk.data_mode, patience(steps, script.ending))
            if unit is None and not any(s.reply is not None for s in steps) and not getattr(talk, 'pushing', False):
                # Nothing to answer and nothing explicit left to push: give up on the client.
                if script.ending in ('stall', 'reset'):
                    self._end(sock, script.ending)
                return
            if unit and talk.data_mode:
                match = _TOKEN_IN_DATA.search(unit)
                if match:
                    self.shared['token'] = match.group(1)

    def _secret(self, name, timestamp, persona, talk=None):
        """The form name of the secrets this server was told, as bytes (b'' when unknown); apop
        is the digest for this connection's timestamp (the persona's before the greeting went),
        cram the CRAM-MD5 response to this connection's challenge (likewise)."""
        if name == 'cram':
            challenge = getattr(talk, 'challenge', None)
            if challenge is None:
                return b''
            return cram_response(self.secrets.get('imap_user', b'').decode('utf-8'),
                                 self.secrets.get('imap', b'').decode('utf-8'), challenge)
        if name != 'apop':
            return self.secrets.get(name, b'')
        if not timestamp:
            planned = greeting_timestamp(b'+OK ' + (getattr(persona, 'timestamp', None) or b''))
            if planned is None:
                return b''
            timestamp = [planned]
        password = self.secrets.get('pop3', b'').decode('utf-8')
        return apop_digest(timestamp[0], password).encode('ascii')

    def _start_tls(self, sock, cert):
        if self.certs is None or cert is None:
            return sock  # claims TLS, keeps talking plaintext
        with self.lock:
            if cert not in self.contexts:
                self.contexts[cert] = self.certs.server_context(cert)
            context = self.contexts[cert]
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            return context.wrap_socket(sock, server_side=True)
        except (OSError, ValueError):
            return None

    @staticmethod
    def _end(sock, ending):
        if ending == 'reset':
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        elif ending == 'stall':
            # Say nothing; read and drop whatever comes until the client gives up.
            end = time.monotonic() + STALL_CAP
            while time.monotonic() < end:
                sock.settimeout(max(0.01, end - time.monotonic()))
                try:
                    if not sock.recv(65536):
                        return
                except socket.timeout:
                    return
