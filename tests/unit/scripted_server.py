"""A scripted SMTP or POP3 server on 127.0.0.1 port 0 that speaks real TLS, for the STARTTLS
cases (test_starttls_cases.py).

A Script says what the server answers to each command before and after TLS, and what it does
right after agreeing to STARTTLS / STLS: start TLS, close, or answer the ClientHello with
garbage (after a refusal it stays in plaintext). The server records every command line it reads
with the phase ('plain' or 'tls') it arrived in, so a test can assert what the client did and
did not send.
"""

import socket
import threading
from dataclasses import dataclass, field

CRLF = b'\r\n'
WAIT = 5.0  # the longest the server waits for the client at any point
POLL = 0.02  # how often the idle listener checks whether it is to stop

UPGRADE_VERB = {'smtp': 'STARTTLS', 'pop3': 'STLS'}
UPGRADES = ('tls', 'close', 'garbage')
ACCEPTED = (b'220', b'+OK')  # an upgrade answer that agrees to TLS


def ehlo(*features):
    """An EHLO reply listing features."""
    lines = [b'mx.scripted.test'] + [f.encode('ascii') for f in features]
    return b''.join(b'250-' + line + CRLF for line in lines[:-1]) + b'250 ' + lines[-1] + CRLF


def capa(*capabilities):
    """A CAPA reply listing capabilities."""
    lines = [b'+OK capability list follows'] + [c.encode('ascii') for c in capabilities] + [b'.']
    return b''.join(line + CRLF for line in lines)


SMTP_REPLIES = {
    'EHLO': ehlo('STARTTLS'), 'HELO': b'250 mx.scripted.test' + CRLF,
    'STARTTLS': b'220 2.0.0 Ready to start TLS' + CRLF,
    # CRAM-MD5 challenge "<1.2@mx>"; any AUTH line is answered 334, the line after it 235.
    'AUTH': b'334 PDEuMkBteD4=' + CRLF, 'QUIT': b'221 2.0.0 Bye' + CRLF,
}
POP3_REPLIES = {
    'CAPA': capa('STLS'), 'STLS': b'+OK begin TLS negotiation' + CRLF, 'USER': b'+OK' + CRLF,
    'PASS': b'+OK maildrop ready' + CRLF, 'STAT': b'+OK 0 0' + CRLF, 'QUIT': b'+OK bye' + CRLF,
}
DEFAULTS = {
    'smtp': (b'220 mx.scripted.test ESMTP' + CRLF, SMTP_REPLIES, b'502 5.5.2 unknown command' + CRLF),
    'pop3': (b'+OK scripted POP3 ready' + CRLF, POP3_REPLIES, b'-ERR unknown command' + CRLF),
}


@dataclass
class Script:
    """What the server does on every connection.

    plain / tls: replies by command verb before / after TLS (over the protocol's defaults; tls
    falls back to plain). upgrade: what follows an answer agreeing to STARTTLS / STLS (UPGRADES).
    inject: bytes sent in a packet of their own right after that answer, before anything else.
    implicit: TLS from the first byte, after sending preamble in plaintext. cert: the kind of
    server certificate (lab.embedded.certs).
    """
    protocol: str
    plain: dict = field(default_factory=dict)
    tls: dict = field(default_factory=dict)
    upgrade: str = 'tls'
    inject: bytes = b''
    implicit: bool = False
    preamble: bytes = b''
    cert: str = 'good'

    def __post_init__(self):
        assert self.protocol in DEFAULTS and self.upgrade in UPGRADES

    def reply(self, verb, phase):
        _greeting, defaults, unknown = DEFAULTS[self.protocol]
        replies = dict(defaults, **self.plain)
        if phase == 'tls':
            replies.update(self.tls)
        return replies.get(verb, unknown)


class ScriptedServer:
    """Serves script to each connection, one connection at a time, until closed."""

    def __init__(self, certs, script):
        self.certs = certs
        self.script = script
        self.received = []  # (phase, line) for every command line read
        self.errors = []
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.listener.settimeout(POLL)
        self.stopping = False
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, name='scripted-%d' % self.port, daemon=True)
        self.thread.start()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop listening and wait until the connection being served has ended."""
        self.stopping = True
        self.thread.join(WAIT + 1)
        self.listener.close()
        assert not self.thread.is_alive(), 'scripted server still serving'
        assert not self.errors, self.errors

    def lines(self, phase):
        return [line for p, line in self.received if p == phase]

    def verbs(self, phase):
        return [line.split(' ')[0].upper() for line in self.lines(phase) if line]

    # -- serving --------------------------------------------------------------------------
    def _serve(self):
        while not self.stopping:
            try:
                conn, _address = self.listener.accept()
            except socket.timeout:
                continue
            try:
                self._converse(conn)
            except (OSError, EOFError):
                pass  # the client went away, as clients that refuse a server do
            except Exception as e:  # pylint: disable=broad-exception-caught
                self.errors.append('%s: %r' % (type(e).__name__, e))  # a bug in this harness
            finally:
                conn.close()

    def _tls(self, sock):
        context = self.certs.server_context(self.script.cert)
        return context.wrap_socket(sock, server_side=True)

    def _converse(self, sock):
        script = self.script
        sock.settimeout(WAIT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        phase = 'plain'
        if script.implicit:
            sock.sendall(script.preamble)
            sock = self._tls(sock)
            phase = 'tls'
        sock.sendall(DEFAULTS[script.protocol][0])
        buffer = b''
        continuation = False
        while True:
            while b'\n' not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise EOFError()
                buffer += chunk
            raw, buffer = buffer.split(b'\n', 1)
            line = raw.rstrip(b'\r').decode('utf-8', 'replace')
            self.received.append((phase, line))
            verb = line.split(' ')[0].upper()
            if continuation:  # the client's answer to a 334 challenge
                reply, continuation = b'235 2.7.0 Authentication successful' + CRLF, False
            else:
                reply = script.reply(verb, phase)
                continuation = reply.startswith(b'334')
            sock.sendall(reply)
            if verb == 'QUIT':
                return
            if verb == UPGRADE_VERB[script.protocol] and phase == 'plain' and reply.startswith(ACCEPTED):
                if script.inject:
                    sock.sendall(script.inject)
                if script.upgrade == 'close':
                    return
                if script.upgrade == 'garbage':
                    sock.recv(65536)  # the ClientHello
                    sock.sendall(b'garbage, not a TLS record' + CRLF)
                    return
                sock = self._tls(sock)
                phase = 'tls'
                buffer = b''
