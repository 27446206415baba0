# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shared probe core: one error type, one connector for every transport-security mode,
line I/O bounded by a deadline, a transcript that never holds a secret, and thresholds.

Stdlib only, no Ansible import: plain pytest drives it and any managed node runs it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import calendar
import functools
import ipaddress
import os
import re
import socket
import ssl
import tempfile
import time

# The oldest managed-node Python the core runs on (ssl.SSLCertVerificationError is 3.7).
PYTHON_FLOOR = (3, 7)

TLS_MODES = ('none', 'starttls', 'starttls_if_available', 'tls', 'tls_if_available')
IMPLICIT_TLS_MODES = ('tls', 'tls_if_available')
STARTTLS_MODES = ('starttls', 'starttls_if_available')

STAGES = ('input', 'resolve', 'connect', 'banner', 'tls', 'helo', 'auth', 'mail_from', 'rcpt',
          'data', 'login', 'stat', 'search', 'retrieve', 'delete', 'quit', 'timeout', 'threshold')

MASK = '********'
# Longest line kept (RFC 5322 allows 998 octets; longer ones are cut, not fatal, so one broken
# foreign mail cannot fail a probe) and the most a multi-line response may hold.
MAX_LINE = 64 * 1024
MAX_RESPONSE = 16 * 1024 * 1024

# OpenSSL reasons that mean "the peer did not answer in TLS at all" (it sent a plaintext
# greeting). Only these allow tls_if_available to fall back; a TLS server that fails the
# handshake or presents a bad certificate never does.
_NOT_TLS_REASONS = frozenset(('WRONG_VERSION_NUMBER', 'RECORD_LAYER_FAILURE', 'PACKET_LENGTH_TOO_LONG',
                              'UNKNOWN_PROTOCOL', 'HTTP_REQUEST', 'UNEXPECTED_RECORD'))

_DN_NAMES = {'commonName': 'CN', 'organizationName': 'O', 'organizationalUnitName': 'OU',
             'countryName': 'C', 'localityName': 'L', 'stateOrProvinceName': 'ST',
             'emailAddress': 'emailAddress', 'domainComponent': 'DC'}


# What no option value may hold: control characters (TAB aside) and Unicode line separators. One
# such character would end a command on the wire (CR, LF), cut a value short (NUL) or break a
# mail header (VT, NEL, U+2028). Message bodies may hold line breaks, never NUL.
_FORBIDDEN = re.compile(u'[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]')
_FORBIDDEN_IN_TEXT = re.compile(u'\x00')
MAX_OPTION_LENGTH = 4096
MAX_TEXT_LENGTH = 10 * 1024 * 1024
# Options whose value is the text of a mail, not a line on the wire.
TEXT_OPTIONS = ('body',)
_HOST_NAME = re.compile(r'^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
                        r'(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$')
# The secret options, each with the user name it goes with (for the AUTH PLAIN payload).
SECRET_OPTIONS = {'password': 'username', 'smtp_password': 'smtp_username', 'pop3_password': 'pop3_username'}


class ProbeError(Exception):
    """The one failure type of the core: what failed (message), where (stage) and what was
    measured up to then (result)."""

    def __init__(self, stage, message, result=None):
        super(ProbeError, self).__init__(message)
        self.stage = stage
        self.message = message
        self.result = result if result is not None else {}

    def __str__(self):
        return self.message


class Refused(ProbeError):
    """The server answered and said no (an SMTP error code, a POP3 -ERR): what it did is known."""


class NotTls(ProbeError):
    """The peer answered the TLS handshake in plaintext: the one failure tls_if_available may
    fall back from."""


def is_number(text):
    """ASCII digits only: str.isdigit() also accepts characters such as '\u00b2' that int() refuses."""
    return bool(text) and all('0' <= c <= '9' for c in text)


def ms_since(start):
    """Milliseconds elapsed since a time.monotonic() reading, to 0.1 ms."""
    return round((time.monotonic() - start) * 1000.0, 1)


def endpoint_label(protocol, host, port):
    if ':' in host:
        return '%s [%s]:%s' % (protocol, host, port)
    return '%s %s:%s' % (protocol, host, port)


def check_range(name, value, low, high):
    if value is not None and not low <= value <= high:
        raise ProbeError('input', '%s must be between %s and %s, got %s' % (name, low, high, value))


def check_text(name, value):
    """One option value that may reach the wire or a mail header: no control characters, no line
    separators, a sane length. The message names the option and the character, never the value
    (it may be a password)."""
    text = name in TEXT_OPTIONS
    limit = MAX_TEXT_LENGTH if text else MAX_OPTION_LENGTH
    if len(value) > limit:
        raise ProbeError('input', '%s is longer than %d characters (%d)' % (name, limit, len(value)))
    bad = (_FORBIDDEN_IN_TEXT if text else _FORBIDDEN).search(value)
    if bad:
        raise ProbeError('input', '%s must not contain control characters or line breaks (U+%04X at position %d)'
                         % (name, ord(bad.group(0)), bad.start()))


def check_host(name, host):
    """An IP address, or a host name whose IDNA form is valid (what getaddrinfo and SNI get)."""
    try:
        ipaddress.ip_address(host.split('%', 1)[0])
        return
    except ValueError:
        pass
    try:
        # Both ways: encoding checks Unicode labels, decoding checks the xn-- labels given as such.
        ascii_name = host.encode('idna').decode('ascii')
        ascii_name.encode('ascii').decode('idna')
    except UnicodeError:
        ascii_name = None
    if not ascii_name or not _HOST_NAME.match(ascii_name):
        raise ProbeError('input', '%s is not a valid host name or IP address: %r' % (name, host))


def check_options(params):
    """Every string option (and every string in a list option) before anything is sent: one
    rule for all, so an option added later is covered too. Host options must also be valid
    names or addresses."""
    for name, value in params.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, str):
                check_text(name, item)
        if isinstance(value, str) and (name == 'host' or name.endswith('_host')):
            check_host(name, value)


class Secrets:
    """The secrets of one check and every form the client sends them in (the password, base64 of
    it for AUTH LOGIN, base64 of the AUTH PLAIN payload, digests added as they are made). The one
    redaction path: transcript lines, quoted server text, error messages and every string of the
    result pass through it."""

    def __init__(self):
        self._values = set()
        self._pattern = None
        self.longest = 0

    @classmethod
    def of(cls, params):
        """The secret options of params (and of nested probes), with their encoded forms."""
        secrets = cls()
        for options in _option_dicts(params):
            for key, user_key in SECRET_OPTIONS.items():
                password = options.get(key)
                if isinstance(password, str) and password:
                    secrets.add_credentials(str(options.get(user_key) or ''), password)
        return secrets

    def add(self, value):
        if value and value not in self._values:
            self._values.add(value)
            self.longest = max(self.longest, len(value))
            self._pattern = None

    def add_credentials(self, username, password):
        self.add(password)
        for form in (password, '\0%s\0%s' % (username, password)):
            self.add(base64.b64encode(form.encode('utf-8')).decode('ascii'))

    def _compiled(self):
        if self._pattern is None and self._values:
            # Longest first: a secret that holds another is masked whole.
            self._pattern = re.compile('|'.join(re.escape(v) for v in sorted(self._values, key=len, reverse=True)))
        return self._pattern

    def redact(self, text):
        pattern = self._compiled()
        return pattern.sub(MASK, text) if pattern is not None else text

    def cut(self, text, limit, truncated=False):
        """Mask, then keep the first limit characters: a secret that starts before the cut is
        masked whole, never shown in part. truncated says text is only the start of a longer
        text, whose end may hold the start of a secret: that end is dropped too."""
        if truncated:
            limit = min(limit, max(0, len(text) - self.longest))
        pattern = self._compiled()
        if pattern is None:
            return text[:limit]
        if len(text) <= limit:
            return pattern.sub(MASK, text)
        parts, pos = [], 0
        for match in pattern.finditer(text):
            if match.start() >= limit:
                break
            parts.extend((text[pos:match.start()], MASK))
            pos = match.end()
        parts.append(text[pos:limit])
        return ''.join(parts)

    def scrub(self, value):
        """value with every string in it (dicts, lists, keys too) redacted."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return dict((self.scrub(k), self.scrub(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value


def _option_dicts(params):
    """params and every option dict nested in it (a batch's probes and defaults)."""
    yield params
    for value in params.values():
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, dict):
                for nested in _option_dicts(item):
                    yield nested


@functools.lru_cache(maxsize=16)
def ssl_context(validate_certs=True, ca_path=None):
    """An explicit client context: verification on unless asked otherwise. With ca_path, only
    that CA bundle (file or directory) is trusted. Cached: loading a CA bundle costs tens of
    milliseconds, once per process instead of once per connection."""
    if not validate_certs:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        if ca_path and os.path.isdir(ca_path):
            return ssl.create_default_context(capath=ca_path)
        return ssl.create_default_context(cafile=ca_path or None)
    except (OSError, ssl.SSLError, ValueError) as e:
        raise ProbeError('input', 'cannot load ca_path %s: %s' % (ca_path, e))


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

    def __init__(self, protocol, host, port, timeout, context, secrets=None, transcript=None):
        self.protocol = protocol
        self.host = host
        self.port = port
        self.timeout = timeout
        self.context = context
        self.label = endpoint_label(protocol, host, port)
        self.secrets = secrets if secrets is not None else Secrets()
        self.transcript = transcript
        self.deadline = None
        self.sock = None
        self.tls = no_tls()
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
        try:
            addresses = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise self.error('resolve', 'cannot resolve host: %s' % e.strerror)
        last_error = None
        for family, socktype, proto, _name, address in addresses:
            sock = socket.socket(family, socktype, proto)
            try:
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
            self.sock = self.context.wrap_socket(self.sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as e:
            raise self.error('tls', 'certificate verification failed: %s' % (e.verify_message or e.reason))
        except ssl.SSLError as e:
            raise self.error('tls', 'TLS handshake failed: %s' % (e.reason or e),
                             NotTls if e.reason in _NOT_TLS_REASONS else ProbeError)
        except socket.timeout:
            raise self.error('tls', 'TLS handshake timed out after %g s' % self.timeout)
        except OSError as e:
            raise self.error('tls', 'TLS handshake failed: %s' % (e.strerror or e))
        self.tls = tls_details(self.sock, verified)
        self.note('-- TLS established: %s %s' % (self.tls['version'], self.tls['cipher']))

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
            self._buffer += chunk

    def send_line(self, stage, line, shown=None):
        """Send one command; shown is what the transcript records instead (for secrets)."""
        if _FORBIDDEN.search(line):
            # check_options refuses such values before connecting; this is the last guard.
            raise self.error(stage, 'refusing to send a command holding a control character')
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


def cleartext_guard(session, allow_cleartext_auth, stage, what):
    """Refuse to send a reusable password over a connection without TLS unless allowed."""
    if not session.tls['established'] and not allow_cleartext_auth:
        raise session.error(stage, 'refusing to send %s without TLS; choose a TLS mode, a challenge '
                                   'mechanism, or set allow_cleartext_auth=true' % what)


# (implicit TLS port, plaintext/STARTTLS port) by protocol.
DEFAULT_PORTS = {'smtp': (465, 25), 'pop3': (995, 110)}


def validate_endpoint(params):
    check_options(params)
    check_range('timeout', params.get('timeout'), 1, 900)
    check_range('port', params.get('port'), 1, 65535)


def endpoint_port(protocol, params):
    """The port option, or the protocol's default for the tls_mode."""
    implicit_port, plain_port = DEFAULT_PORTS[protocol]
    return params.get('port') or (implicit_port if params['tls_mode'] in IMPLICIT_TLS_MODES else plain_port)


class Check:
    """What one check collects besides its facts: warnings, the transcript (when asked for) and
    the secrets every output passes through."""

    def __init__(self, params):
        self.params = params
        self.warnings = []
        self.transcript = [] if params.get('transcript') else None
        self.secrets = Secrets.of(params)

    def finish(self, result):
        """The result as the module returns it: warnings and transcript attached, every string
        redacted."""
        result['warnings'] = self.warnings
        if self.transcript is not None:
            result['transcript'] = self.transcript
        return self.secrets.scrub(result)


def new_session(protocol, params, check):
    """A Session for the endpoint options (host, port, tls_mode, timeout, validate_certs,
    ca_path) of one check. The TLS context is made here, before any timing starts, and only when
    the mode may speak TLS."""
    context = None
    if params['tls_mode'] != 'none':
        context = ssl_context(params.get('validate_certs', True), params.get('ca_path'))
    return Session(protocol, params['host'], endpoint_port(protocol, params), params.get('timeout') or 60, context,
                   secrets=check.secrets, transcript=check.transcript)


def grade(result, figure, warning_ms, critical_ms, warnings):
    """Set result['status'] from the primary figure; above critical_ms fails at stage threshold."""
    value = result.get(figure)
    result['status'] = 'up'
    if critical_ms is not None and value is not None and value > critical_ms:
        result['status'] = 'down'
        raise ProbeError('threshold', '%s %s ms is above critical_ms %s' % (figure, value, critical_ms), result)
    if warning_ms is not None and value is not None and value > warning_ms:
        result['status'] = 'warning'
        warnings.append('%s %s ms is above warning_ms %s' % (figure, value, warning_ms))
    return result


def probe(params, figure, body):
    """Run body(check) and grade its primary figure. Warnings, the transcript (when asked for)
    and status are attached to the result, or to the error's result; both leave through the one
    redaction path."""
    check = Check(params)
    try:
        result = grade(body(check), figure, params.get('warning_ms'), params.get('critical_ms'), check.warnings)
    except ProbeError as e:
        e.result.setdefault('status', 'down')
        e.result = check.finish(e.result)
        e.message = check.secrets.redact(e.message)
        e.args = (e.message,)
        raise
    return check.finish(result)
