# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transport and the one session shape every protocol shares.

Conversation owns a session's life: connect (implicit TLS as tls_mode says), greet, read the
capabilities, STARTTLS when asked and offered (capabilities again after it), log in, the
caller's work, quit, close; converse() runs one whole. A protocol is a Client subclass that
fills in those steps; what the session observed comes back as one dict, on success and (on the
ProbeError) on failure alike.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import calendar
import functools
import os
import socket
import ssl
import tempfile
import time

from ansible_collections.mailops.health.plugins.module_utils._probe import (
    DEFAULT_TIMEOUT, ProbeError, NotTls, Secrets, control_character, endpoint_label, ms_since,
)

TLS_MODES = ('none', 'starttls', 'starttls_if_available', 'tls', 'tls_if_available')
IMPLICIT_TLS_MODES = ('tls', 'tls_if_available')
STARTTLS_MODES = ('starttls', 'starttls_if_available')
# (implicit TLS port, plaintext/STARTTLS port) by protocol.
DEFAULT_PORTS = {'smtp': (465, 25), 'pop3': (995, 110), 'imap': (993, 143)}
# address_family: what getaddrinfo is asked for.
ADDRESS_FAMILIES = {'any': socket.AF_UNSPEC, 'ipv4': socket.AF_INET, 'ipv6': socket.AF_INET6}
# tls_min_version: the oldest protocol version the client accepts (default: what Python and OpenSSL allow).
TLS_VERSIONS = ('TLSv1', 'TLSv1.1', 'TLSv1.2', 'TLSv1.3')

MASK = Secrets.MASK
# Longest line kept (RFC 5322 allows 998 octets; longer ones are cut, not fatal, so one broken
# foreign mail cannot fail a probe) and the most a multi-line response may hold.
MAX_LINE = 64 * 1024
MAX_RESPONSE = 16 * 1024 * 1024
# What a round trip's sort() says of a message that only its text can tell about (a bounce): the
# receiver then reads the start of it and asks sort.inspect(lines).
INSPECT = 'inspect'

# OpenSSL reasons that mean "the peer did not answer in TLS at all" (it sent a plaintext
# greeting). Only these allow tls_if_available to fall back; a TLS server that fails the
# handshake or presents a bad certificate never does.
_NOT_TLS_REASONS = frozenset(('WRONG_VERSION_NUMBER', 'RECORD_LAYER_FAILURE', 'PACKET_LENGTH_TOO_LONG',
                              'UNKNOWN_PROTOCOL', 'HTTP_REQUEST', 'UNEXPECTED_RECORD'))

# OpenSSL reasons of a handshake that found no protocol version both sides accept.
_VERSION_REASONS = frozenset(('UNSUPPORTED_PROTOCOL', 'TLSV1_ALERT_PROTOCOL_VERSION', 'NO_PROTOCOLS_AVAILABLE',
                              'WRONG_SSL_VERSION', 'VERSION_TOO_LOW', 'VERSION_TOO_HIGH'))

_DN_NAMES = {'commonName': 'CN', 'organizationName': 'O', 'organizationalUnitName': 'OU',
             'countryName': 'C', 'localityName': 'L', 'stateOrProvinceName': 'ST',
             'emailAddress': 'emailAddress', 'domainComponent': 'DC'}


@functools.lru_cache(maxsize=16)
def ssl_context(validate_certs=True, ca_path=None, tls_min_version=None):
    """An explicit client context: verification on unless asked otherwise. With ca_path, only
    that CA bundle (file or directory) is trusted; with tls_min_version (one of TLS_VERSIONS),
    no older protocol is spoken. Cached: loading a CA bundle costs tens of milliseconds, once
    per process instead of once per connection."""
    if not validate_certs:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        try:
            if ca_path and os.path.isdir(ca_path):
                context = ssl.create_default_context(capath=ca_path)
            else:
                context = ssl.create_default_context(cafile=ca_path or None)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise ProbeError('input', 'cannot load ca_path %s: %s' % (ca_path, e))
    if tls_min_version:
        if tls_min_version not in TLS_VERSIONS:
            raise ProbeError('input', 'tls_min_version must be one of %s, got %s' % (', '.join(TLS_VERSIONS), tls_min_version))
        try:
            context.minimum_version = getattr(ssl.TLSVersion, tls_min_version.replace('.', '_'))
        except (AttributeError, ValueError) as e:
            raise ProbeError('input', 'tls_min_version %s is not available with this Python and OpenSSL: %s'
                             % (tls_min_version, e))
    return context


def _format_dn(dn):
    parts = []
    for rdn in dn or ():
        for key, value in rdn:
            parts.append('%s=%s' % (_DN_NAMES.get(key, key), value))
    return ','.join(parts)


def _decode_unverified(der):
    """Read fields of a certificate that was not verified (validate_certs=false), so expiry is
    still reported. Uses the ssl module's own decoder; any failure just means no details."""
    decode = getattr(getattr(ssl, '_ssl', None), '_test_decode_cert', None)
    if decode is None or not der:
        return None
    fd, path = tempfile.mkstemp(suffix='.pem')
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(ssl.DER_cert_to_PEM_cert(der))
        return decode(path)
    except (OSError, ValueError, ssl.SSLError):
        return None
    finally:
        os.unlink(path)


def tls_details(sock, verified):
    """The TLS facts a playbook asserts on: version, cipher and the peer certificate."""
    cert = sock.getpeercert() if verified else _decode_unverified(sock.getpeercert(binary_form=True))
    cipher = sock.cipher()
    info = {
        'established': True,
        'fallback': False,
        'version': sock.version(),
        'cipher': cipher[0] if cipher else None,
        'verified': bool(verified),
        'subject': None, 'issuer': None, 'sans': [], 'not_after': None, 'days_left': None,
    }
    if cert:
        info['subject'] = _format_dn(cert.get('subject'))
        info['issuer'] = _format_dn(cert.get('issuer'))
        info['sans'] = ['%s:%s' % pair for pair in cert.get('subjectAltName', ())]
        if cert.get('notAfter'):
            expires = ssl.cert_time_to_seconds(cert['notAfter'])
            info['not_after'] = time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))
            info['days_left'] = int((expires - calendar.timegm(time.gmtime())) // 86400)
    return info


def no_tls():
    return {'established': False, 'fallback': False, 'version': None, 'cipher': None, 'verified': False, 'subject': None,
            'issuer': None, 'sans': [], 'not_after': None, 'days_left': None}


class Session:
    """One connection to one endpoint: connect, TLS, line I/O and the transcript.

    Every read and write is bounded by one deadline (timeout seconds from the start of the
    session), so a server that trickles a byte at a time cannot hold the probe past it.
    Every line recorded in the transcript or quoted in an error passes through redact().
    """

    def __init__(self, protocol, host, port, timeout, context, secrets=None, transcript=None,
                 address_family='any', source_address=None, server_name=None, min_version=None):
        self.protocol = protocol
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self.label = endpoint_label(protocol, host, port)
        self.secrets = secrets if secrets is not None else Secrets()
        self.transcript = transcript
        self.address_family = address_family or 'any'
        self.source_address = source_address
        # The name sent as SNI and checked against the certificate (tls_server_name), else host.
        self.server_name = server_name or host
        self.min_version = min_version
        self.deadline = None
        self.sock = None
        self.tls = no_tls()
        self.received = 0
        self._buffer = b''

    # -- errors and redaction -------------------------------------------------------------
    def redact(self, text):
        return self.secrets.redact(text)

    def quote(self, text, limit=200):
        """Server text for an error message: secrets masked first, then cut and escaped, so
        neither the cut nor the escaping can let part of a secret through."""
        return repr(self.secrets.cut(text, limit))

    def error(self, stage, what, kind=ProbeError):
        return kind(stage, '%s: %s' % (self.label, self.redact(what)))

    def note(self, text):
        if self.transcript is not None:
            self.transcript.append(self.redact(text))

    def add_secret(self, secret):
        self.secrets.add(secret)

    # -- connection -----------------------------------------------------------------------
    def _remaining(self, stage):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise self.error(stage, 'timed out after %g s' % self.timeout)
        return remaining

    def open(self, implicit_tls):
        """Resolve and connect (trying every address), then start TLS at once if asked."""
        self._buffer = b''  # a new connection: nothing the last one sent counts
        if self.deadline is None:
            # One deadline per check: a tls_if_available reconnect in plaintext does not extend it.
            self.deadline = time.monotonic() + self.timeout
        addresses = self.resolve()
        last_error = None
        for family, socktype, proto, _name, address in addresses:
            sock = socket.socket(family, socktype, proto)
            try:
                if self.source_address:
                    self.bind(sock)
                sock.settimeout(self._remaining('connect'))
                sock.connect(address)
            except socket.timeout:
                sock.close()
                raise self.error('connect', 'connection timed out after %g s' % self.timeout)
            except OSError as e:
                sock.close()
                last_error = e
                continue
            self.sock = sock
            break
        if self.sock is None:
            raise self.error('connect', 'cannot connect: %s' % (last_error.strerror or last_error))
        self.note('-- connected to %s' % self.label)
        if implicit_tls:
            self.start_tls()

    def resolve(self):
        """The addresses to try: of address_family, and of source_address's family when one is set."""
        family = ADDRESS_FAMILIES.get(self.address_family, socket.AF_UNSPEC)
        if self.source_address:
            source_family = socket.AF_INET6 if ':' in self.source_address else socket.AF_INET
            if family not in (socket.AF_UNSPEC, source_family):
                raise self.error('input', 'source_address %s is not an address_family=%s address'
                                 % (self.source_address, self.address_family))
            family = source_family
        try:
            return socket.getaddrinfo(self.host, self.port, family, socket.SOCK_STREAM)
        except socket.gaierror as e:
            if family == socket.AF_UNSPEC:
                raise self.error('resolve', 'cannot resolve host: %s' % e.strerror)
            raise self.error('resolve', 'cannot resolve host to an %s address (%s): %s' % (
                'IPv6' if family == socket.AF_INET6 else 'IPv4', self.family_reason(), e.strerror))

    def family_reason(self):
        if self.source_address:
            return 'source_address %s' % self.source_address
        return 'address_family=%s' % self.address_family

    def bind(self, sock):
        try:
            sock.bind((self.source_address, 0))
        except OSError as e:
            sock.close()
            raise self.error('connect', 'cannot use source_address %s: %s' % (self.source_address, e.strerror or e))

    def start_tls(self):
        """Wrap the connection in TLS. Certificate failures and handshake failures are both
        stage tls; the caller decides (only for plaintext answers) whether to fall back."""
        if self._buffer:
            # Bytes that arrived before the handshake would be trusted as if they came over TLS
            # (the STARTTLS injection flaw): refuse them.
            raise self.error('tls', 'server sent data before the TLS handshake')
        verified = self.context.verify_mode != ssl.CERT_NONE
        try:
            self.sock.settimeout(self._remaining('tls'))
            self.sock = self.context.wrap_socket(self.sock, server_hostname=self.server_name)
        except ssl.SSLCertVerificationError as e:
            raise self.error('tls', 'certificate verification failed: %s' % (e.verify_message or e.reason))
        except ssl.SSLError as e:
            if e.reason in _NOT_TLS_REASONS:
                raise self.error('tls', 'TLS handshake failed: %s (the server answered in plaintext: if this is a '
                                        'plaintext or STARTTLS port, use a STARTTLS tls_mode)' % e.reason, NotTls)
            hint = ''
            if e.reason in _VERSION_REASONS:
                hint = ' (no TLS version both sides accept%s)' % (
                    '; the server offers none at or above tls_min_version %s' % self.min_version
                    if self.min_version else '')
            raise self.error('tls', 'TLS handshake failed: %s%s' % (e.reason or e, hint))
        except socket.timeout:
            raise self.error('tls', 'TLS handshake timed out after %g s' % self.timeout)
        except OSError as e:
            raise self.error('tls', 'TLS handshake failed: %s' % (e.strerror or e))
        self.tls = tls_details(self.sock, verified)
        self.note('-- TLS established: %s %s' % (self.tls['version'], self.tls['cipher']))

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    # -- line I/O -------------------------------------------------------------------------
    def read_line(self, stage, record=True):
        """One line without its line ending, decoded leniently (servers send any bytes), cut
        at MAX_LINE characters after secrets are masked. record=False keeps it out of the
        transcript (mail content)."""
        # Bytes kept of an over-long line: enough for MAX_LINE characters and a secret that
        # starts just before the cut, so the cut never shows part of a secret.
        keep = 4 * (MAX_LINE + self.secrets.longest)
        while True:
            end = self._buffer.find(b'\n')
            if end >= 0:
                raw, self._buffer = self._buffer[:end].rstrip(b'\r'), self._buffer[end + 1:]
                line = raw[:keep].decode('utf-8', 'replace')
                line = self.secrets.cut(line, MAX_LINE, truncated=len(raw) > keep)
                if record:
                    self.note('S: ' + line)
                return line
            if len(self._buffer) > keep:
                # Keep the start of an over-long line and drop the rest as it arrives.
                self._buffer = self._buffer[:keep]
            self._receive(stage)

    def read_bytes(self, stage, size):
        """Exactly size bytes (an IMAP literal), bounded by MAX_RESPONSE and the deadline."""
        if size > MAX_RESPONSE:
            raise self.error(stage, 'server announced %d bytes, more than %d' % (size, MAX_RESPONSE))
        while len(self._buffer) < size:
            self._receive(stage)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def wait_line(self, stage, seconds):
        """A line if one arrives within seconds (and the deadline), else None: waiting for a
        server push (IMAP IDLE) without failing when none comes."""
        until = min(time.monotonic() + seconds, self.deadline)
        keep = 4 * (MAX_LINE + self.secrets.longest)
        while self._buffer.find(b'\n') < 0:
            if len(self._buffer) > keep:
                # As read_line does: keep the start of an over-long line, drop the rest.
                self._buffer = self._buffer[:keep]
            remaining = until - time.monotonic()
            if remaining <= 0:
                return None
            try:
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return None
            except (ssl.SSLError, OSError) as e:
                raise self.error(stage, 'connection lost: %s' % (getattr(e, 'reason', None) or e))
            if not chunk:
                raise self.error(stage, 'server closed the connection')
            self.received += len(chunk)
            self._buffer += chunk
        return self.read_line(stage)

    def extend(self, seconds):
        """A new deadline seconds from now, for a connection kept open across checks (IMAP):
        each step on it is bounded by the deadline set for that step."""
        self.deadline = time.monotonic() + seconds
        self.timeout = round(seconds, 1)

    def _receive(self, stage):
        try:
            self.sock.settimeout(self._remaining(stage))
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise self.error(stage, 'timed out after %g s waiting for the server' % self.timeout)
        except ssl.SSLError as e:
            raise self.error(stage, 'TLS error: %s' % (e.reason or e))
        except OSError as e:
            raise self.error(stage, 'connection lost: %s' % (e.strerror or e))
        if not chunk:
            raise self.error(stage, 'server closed the connection')
        self.received += len(chunk)
        self._buffer += chunk

    def check_line(self, stage, line):
        """check_options refuses control characters before connecting; this is the last guard."""
        if control_character(line):
            raise self.error(stage, 'refusing to send a command holding a control character')

    def send_line(self, stage, line, shown=None):
        """Send one command; shown is what the transcript records instead (for secrets)."""
        self.check_line(stage, line)
        self.note('C: ' + (line if shown is None else shown))
        self.send_raw(stage, line.encode('utf-8') + b'\r\n')

    def send_raw(self, stage, data):
        try:
            self.sock.settimeout(self._remaining(stage))
            self.sock.sendall(data)
        except socket.timeout:
            raise self.error(stage, 'timed out after %g s sending to the server' % self.timeout)
        except OSError as e:
            raise self.error(stage, 'connection lost: %s' % (e.strerror or e))


def connect(session, tls_mode, warnings):
    """Open a session in tls_mode's implicit part: 'tls' fails unless TLS is spoken,
    'tls_if_available' reconnects in plaintext only when the server answered in plaintext."""
    if tls_mode not in IMPLICIT_TLS_MODES:
        session.open(implicit_tls=False)
        return
    try:
        session.open(implicit_tls=True)
    except NotTls:
        session.close()
        if tls_mode != 'tls_if_available':
            raise
        warnings.append('%s does not speak implicit TLS; continued without TLS (tls_mode=tls_if_available)'
                        % session.label)
        session.note('-- no TLS spoken; reconnecting in plaintext')
        session.open(implicit_tls=False)
        session.tls['fallback'] = True


def require_tls_or_warn(session, offered, tls_mode, command, warnings):
    """The STARTTLS decision shared by SMTP and POP3. Returns True when the caller must send
    the upgrade command now."""
    if tls_mode not in STARTTLS_MODES:
        return False
    if offered:
        return True
    if tls_mode == 'starttls':
        raise session.error('tls', '%s not offered by the server (tls_mode=starttls)' % command)
    warnings.append('%s does not offer %s; continued without TLS (tls_mode=starttls_if_available)'
                    % (session.label, command))
    session.tls['fallback'] = True
    return False


def add_hint(error, hint):
    """Say in a failure's message what the probe can tell about its likely cause."""
    error.message = '%s (%s)' % (error.message, hint)
    error.args = (error.message,)


def judge_certificate(session, params, check):
    """cert_critical_days and cert_warning_days, as monitors check them: a certificate that ends in
    fewer days fails at stage certificate, or makes the check a warning."""
    days = session.tls.get('days_left')
    if not session.tls['established'] or days is None:
        return
    what = 'the certificate%s ends in %d days (%s)' % (
        ' of ' + session.tls['subject'] if session.tls.get('subject') else '', days, session.tls.get('not_after'))
    critical, warning = params.get('cert_critical_days'), params.get('cert_warning_days')
    if critical is not None and days < critical:
        raise session.error('certificate', '%s, fewer than cert_critical_days %d' % (what, critical))
    if warning is not None and days < warning:
        check.degrade('%s: %s, fewer than cert_warning_days %d' % (session.label, what, warning))


def cleartext_guard(session, allow_cleartext_auth, stage, what):
    """Refuse to send a reusable password over a connection without TLS unless allowed."""
    if not session.tls['established'] and not allow_cleartext_auth:
        raise session.error(stage, 'refusing to send %s without TLS; choose a TLS mode, a challenge '
                                   'mechanism, or set allow_cleartext_auth=true' % what)


def endpoint_port(protocol, params):
    """The port option, or the protocol's default for the tls_mode."""
    implicit_port, plain_port = DEFAULT_PORTS[protocol]
    return params.get('port') or (implicit_port if params['tls_mode'] in IMPLICIT_TLS_MODES else plain_port)


def new_session(protocol, params, check):
    """A Session for the endpoint options (host, port, tls_mode, timeout, validate_certs,
    ca_path) of one check. The TLS context is made here, before any timing starts, and only when
    the mode may speak TLS."""
    context = None
    if params['tls_mode'] != 'none':
        context = ssl_context(params.get('validate_certs', True), params.get('ca_path'), params.get('tls_min_version'))
    return Session(protocol, params['host'], endpoint_port(protocol, params), params.get('timeout') or DEFAULT_TIMEOUT,
                   context, secrets=check.secrets, transcript=check.transcript,
                   address_family=params.get('address_family'), source_address=params.get('source_address'),
                   server_name=params.get('tls_server_name'), min_version=params.get('tls_min_version'))


class Client:
    """A protocol's part of the one session shape: converse() calls these steps in order. A
    subclass sets protocol, tls_command and login_timing and fills in the steps; whatever a step
    observes goes into self.facts."""

    protocol = None
    tls_command = None
    login_timing = None

    def __init__(self, session, params, check):
        self.session = session
        self.params = params
        self.check = check
        self.facts = {}
        self.timings = {}
        self.start = time.monotonic()

    def mark(self, step):
        """Milliseconds from connect at which a step ended."""
        self.timings[step] = ms_since(self.start)

    def greet(self):
        """Read the greeting; a refusal fails at stage banner."""
        raise NotImplementedError

    def capabilities(self):
        """Ask for the capabilities (again after TLS)."""
        raise NotImplementedError

    def offers_tls(self):
        raise NotImplementedError

    def upgrade(self):
        """Send tls_command and read its answer; converse() then does the handshake."""
        raise NotImplementedError

    def login(self):
        """Log in as params say; False when no login was asked for."""
        raise NotImplementedError

    def quit(self):
        raise NotImplementedError

    def result(self):
        """What the session observed and measured, as the check returns it."""
        result = {'host': self.session.host, 'port': self.session.port, 'tls': self.session.tls,
                  'timings': self.timings, 'response_time_ms': ms_since(self.start)}
        result.update(self.facts)
        return result


class Conversation:
    """The one session shape as a context manager. Entering connects (implicit TLS as tls_mode
    says), greets, reads the capabilities, negotiates STARTTLS when asked and offered (and reads
    the capabilities again), logs in, and gives the client; leaving quits (unless the block
    failed) and closes. A ProbeError on the way carries client.result(), measured up to the
    failure: the one place where a failed session's facts are collected."""

    def __init__(self, client_class, params, check):
        self.session = new_session(client_class.protocol, params, check)
        self.client = client_class(self.session, params, check)
        self.params = params
        self.check = check
        self.tls_mode = params['tls_mode']
        self.warnings = check.warnings

    def __enter__(self):
        session, client = self.session, self.client
        try:
            connect(session, self.tls_mode, self.warnings)
            client.mark('connect_ms')
            try:
                client.greet()
            except ProbeError as e:
                if e.stage == 'banner' and not session.received and self.tls_mode not in IMPLICIT_TLS_MODES:
                    add_hint(e, 'the server sent nothing: if this is an implicit-TLS port (465, 995, 993), use '
                                'tls_mode=tls')
                raise
            client.mark('banner_ms')
            client.capabilities()
            if require_tls_or_warn(session, client.offers_tls(), self.tls_mode, client.tls_command, self.warnings):
                client.upgrade()
                session.start_tls()
                client.capabilities()
            client.mark('tls_ms')
            judge_certificate(session, self.params, self.check)
            if client.login():
                client.mark(client.login_timing)
        except ProbeError as e:
            session.close()
            e.add_facts(client.result())
            raise
        return client

    def __exit__(self, exc_type, exc, traceback):
        try:
            if exc_type is None:
                self.client.quit()
        except ProbeError as e:
            e.add_facts(self.client.result())
            raise
        finally:
            self.session.close()
        if isinstance(exc, ProbeError):
            exc.add_facts(self.client.result())
        return False


def converse(client_class, params, check, work=None):
    """One whole session: Conversation, with work(client) after the login. Returns
    client.result(); a failure raises ProbeError carrying the same facts."""
    with Conversation(client_class, params, check) as client:
        if work is not None:
            work(client)
    return client.result()
