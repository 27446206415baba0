"""A scripted, hostile SMTP or POP3 server on loopback for fuzzing the probe core.

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
"""

import base64
import hashlib
import re
import socket
import struct
import threading
import time

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
# The APOP timestamp as the client finds it in the greeting.
_APOP_TIMESTAMP = re.compile(r'<[^<>\s]+>')
# Where a client cuts an over-long line (the core keeps the first 64 KiB of a line).
LINE_CUT = 64 * 1024
STRADDLE_FILL = b'~'
# The forms of the secrets a server may be told, by name (see secret_forms()): SMTP's password, its
# base64 (AUTH LOGIN) and the AUTH PLAIN payload; POP3's password and its base64; apop is the
# digest of the POP3 password for the timestamp of the connection's greeting.
SECRET_FORMS = ('smtp', 'smtp_b64', 'smtp_plain', 'pop3', 'pop3_b64', 'apop')

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

    def __repr__(self):
        return 'Repeat(%r + %r * %d + %r)' % (self.head, self.line, self.count, self.tail)


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

    def __repr__(self):
        return 'Straddle(%r, %r, %r)' % (self.head, self.form, self.end)


class Echo:
    """What a persona quotes in its plausible replies: the forms (names from SECRET_FORMS) on a
    line of their own (SMTP: continuation lines before the last; POP3: after the status line's
    text), and straddle, one form put across LINE_CUT of an over-long line; at the moments in where
    (the command verbs, 'greeting', 'DATA-END'), or at every one when where is None."""

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


def secret_forms(smtp_user, smtp_password, pop3_password):
    """The forms a server may be told (SECRET_FORMS but apop, which depends on the greeting)."""
    def b64(text):
        return base64.b64encode(text.encode('utf-8'))
    return {'smtp': smtp_password.encode('utf-8'), 'smtp_b64': b64(smtp_password),
            'smtp_plain': b64('\0%s\0%s' % (smtp_user, smtp_password)),
            'pop3': pop3_password.encode('utf-8'), 'pop3_b64': b64(pop3_password)}


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
    """The steps for one connection and what happens when they run out."""

    def __init__(self, steps, ending='auto'):
        assert ending in ENDINGS
        self.steps = list(steps)
        self.ending = ending

    def __repr__(self):
        return 'Script(%r, ending=%r)' % (self.steps, self.ending)


def numeral(number, digits=None):
    """number in decimal, written with the ten characters of digits instead of 0-9 if given
    (superscripts, fullwidth or Arabic-Indic digits: all pass str.isdigit())."""
    text = '%d' % number
    if digits:
        text = text.translate(dict((ord('0') + i, digit) for i, digit in enumerate(digits)))
    return text.encode('utf-8')


_CODE = re.compile(br'(?m)^([0-9]{3})')


def render(payload, token, secret=None):
    if isinstance(payload, bytes):
        data = payload
    elif isinstance(payload, Straddle):
        data = payload.render(secret)
    else:
        data = payload.render()
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
            self.errors.append('%s: %r' % (type(e).__name__, e))
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
        talk.secret = lambda name: self._secret(name, timestamp, persona)
        steps = list(script.steps)
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
            if step.reply is None:
                data = talk.reply(unit, first)
                after = 'tls' if talk.want_tls and step.after == 'read' else step.after
            else:
                data = render(step.reply, self.shared.get('token'), talk.secret)
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
            unit = reader.unit(talk.data_mode, PATIENCE)
            if unit is None and not any(s.reply is not None for s in steps):
                # Nothing to answer and nothing explicit left to push: give up on the client.
                if script.ending in ('stall', 'reset'):
                    self._end(sock, script.ending)
                return
            if unit and talk.data_mode:
                match = _TOKEN_IN_DATA.search(unit)
                if match:
                    self.shared['token'] = match.group(1)

    def _secret(self, name, timestamp, persona):
        """The form name of the secrets this server was told, as bytes (b'' when unknown); apop
        is the digest for this connection's timestamp (the persona's before the greeting went)."""
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
