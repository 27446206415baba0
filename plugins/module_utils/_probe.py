# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The check level of the core: the error types, the defaults, the input rule every option value
passes before anything is sent, the secrets every output passes through, and run_check(), which
every module's core goes through (grading, warnings, transcript, redaction).

How a check flows: a module calls its core function (smtp_check, pop3_check, mail_roundtrip,
...), which checks its input and calls run_check(params, figure, body). body(check) runs one or
more sessions (_session.converse with a protocol's Client) and returns the facts; run_check grades
the primary figure and returns the facts, or raises the ProbeError carrying them.

Stdlib only, no Ansible import: plain pytest drives it and any managed node runs it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import ipaddress
import re
import time

# The oldest managed-node Python the core runs on (ssl.SSLCertVerificationError is 3.7).
PYTHON_FLOOR = (3, 7)

STAGES = ('input', 'resolve', 'connect', 'banner', 'tls', 'certificate', 'helo', 'auth', 'mail_from', 'rcpt',
          'data', 'login', 'stat', 'folders', 'select', 'search', 'retrieve', 'delete', 'quit', 'timeout', 'bounced',
          'junk', 'authentication', 'expectation', 'threshold')

# Defaults written once: the argument specs (_args) and the core both use these.
DEFAULT_TIMEOUT = 60
DEFAULT_RETRY_DELAY = 2.0
MAX_RETRIES = 10

# What no option value may hold: control characters (TAB aside) and Unicode line separators. One
# such character would end a command on the wire (CR, LF), cut a value short (NUL) or break a
# mail header (VT, NEL, U+2028). Message bodies may hold line breaks, never NUL.
_FORBIDDEN = re.compile(u'[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]')
_FORBIDDEN_IN_TEXT = re.compile(u'\x00')
MAX_OPTION_LENGTH = 4096
MAX_TEXT_LENGTH = 10 * 1024 * 1024
# Options whose value is the text of a mail, not a line on the wire.
TEXT_OPTIONS = ('body',)
# The range of every number option (smtp_port and the like are ports too).
RANGES = {'timeout': (1, 900), 'port': (1, 65535), 'max_trip_time': (1, 3600), 'connection_interval': (0.01, 600),
          'retries': (0, MAX_RETRIES), 'retry_delay': (0, 600), 'cert_warning_days': (0, 3650),
          'cert_critical_days': (0, 3650)}
_HOST_NAME = re.compile(r'^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?'
                        r'(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$')
_ZONE = re.compile(r'^[A-Za-z0-9_.-]{1,64}$')
# The secret options, each with the user name it goes with (for the AUTH PLAIN payload).
SECRET_OPTIONS = {'password': 'username', 'smtp_password': 'smtp_username', 'pop3_password': 'pop3_username',
                  'imap_password': 'imap_username', 'sender_password': 'sender_username', 'oauth2_token': 'username',
                  'smtp_oauth2_token': 'smtp_username', 'pop3_oauth2_token': 'pop3_username',
                  'imap_oauth2_token': 'imap_username', 'sender_oauth2_token': 'sender_username'}


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

    def add_facts(self, facts):
        """What was measured before the failure; facts the error already carries win."""
        self.result = dict(facts, **self.result)


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


# -- input ------------------------------------------------------------------------------------
def check_range(name, value, low, high):
    if value is not None and not low <= value <= high:
        raise ProbeError('input', '%s must be between %s and %s, got %s' % (name, low, high, value))


def control_character(text):
    """The first character no line on the wire may hold, as a match, or None."""
    return _FORBIDDEN.search(text)


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
    address, _sep, zone = host.partition('%')
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is not None:
        # A zone (fe80::1%eth0) exists only for IPv6, and names an interface.
        if not _sep or (ip.version == 6 and _ZONE.match(zone)):
            return
        raise ProbeError('input', '%s is not a valid host name or IP address: %r' % (name, host))
    try:
        # Both ways: encoding checks Unicode labels, decoding checks the xn-- labels given as such.
        ascii_name = host.encode('idna').decode('ascii')
        ascii_name.encode('ascii').decode('idna')
    except UnicodeError:
        ascii_name = None
    if not ascii_name or not _HOST_NAME.match(ascii_name):
        raise ProbeError('input', '%s is not a valid host name or IP address: %r' % (name, host))


def check_options(params):
    """Every option value before anything is sent, by one rule for all, so an option added later
    is covered too: strings (and the strings in a list option) by check_text, host options as
    names or addresses, numbers within RANGES."""
    for name, value in params.items():
        limits = RANGES.get(name) or RANGES.get(name.rpartition('_')[2] if name.endswith('_port') else None)
        if limits is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            check_range(name, value, *limits)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, str):
                check_text(name, item)
        if isinstance(value, str) and (name == 'host' or name.endswith('_host') or name.endswith('tls_server_name')):
            check_host(name, value)
        if isinstance(value, str) and name == 'source_address':
            check_address_literal(name, value)


def check_address_literal(name, value):
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ProbeError('input', '%s must be an IPv4 or IPv6 address of this host, got %r' % (name, value))


def validate_endpoint(params):
    """The options every check has, by the one input rule."""
    check_options(params)


# -- secrets ----------------------------------------------------------------------------------
class Secrets:
    """The secrets of one check and every form the client sends them in (the password, base64 of
    it for AUTH LOGIN, base64 of the AUTH PLAIN payload, digests added as they are made). The one
    redaction path: transcript lines, quoted server text, error messages and every string of the
    result pass through it."""

    MASK = '********'
    TAIL = 8

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
        if pattern is None:
            return text
        return self._mask_tail(pattern.sub(self.MASK, text))

    def _mask_tail(self, text):
        """A text cut short may end in the start of a secret that became known only after the
        cut (an APOP digest quoted across the 64 KiB cut of the greeting that carries its
        timestamp): such a tail of TAIL characters or more is masked too."""
        for value in self._values:
            tail = text[-len(value):]
            at = tail.find(value[:self.TAIL])
            while at >= 0:
                if value.startswith(tail[at:]):
                    return text[:len(text) - len(tail) + at] + self.MASK
                at = tail.find(value[:self.TAIL], at + 1)
        return text

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
            return pattern.sub(self.MASK, text)
        parts, pos = [], 0
        for match in pattern.finditer(text):
            if match.start() >= limit:
                break
            parts.extend((text[pos:match.start()], self.MASK))
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
                yield from _option_dicts(item)


# -- one check --------------------------------------------------------------------------------
class Check:
    """What one check collects besides its facts: warnings, the transcript (when asked for) and
    the secrets every output passes through."""

    def __init__(self, params):
        self.params = params
        self.warnings = []
        self.transcript = [] if params.get('transcript') else None
        self.secrets = Secrets.of(params)
        self.degraded = False

    def degrade(self, message):
        """A finding that makes the check a warning (a certificate near its end), said once."""
        self.degraded = True
        if message not in self.warnings:
            self.warnings.append(message)

    def finish(self, result):
        """The result as the module returns it: warnings and transcript attached, every string
        redacted."""
        result['warnings'] = self.warnings
        if self.transcript is not None:
            result['transcript'] = self.transcript
        return self.secrets.scrub(result)


def grade(result, figure, warning_ms, critical_ms, warnings, degraded=False):
    """Set result['status'] from the primary figure; above critical_ms fails at stage threshold."""
    value = result.get(figure)
    # A check may have found itself degraded already (a round trip's mail in the junk folder).
    result['status'] = 'warning' if result.get('status') == 'warning' or degraded else 'up'
    if critical_ms is not None and value is not None and value > critical_ms:
        result['status'] = 'down'
        raise ProbeError('threshold', '%s %s ms is above critical_ms %s' % (figure, value, critical_ms), result)
    if warning_ms is not None and value is not None and value > warning_ms:
        result['status'] = 'warning'
        warnings.append('%s %s ms is above warning_ms %s' % (figure, value, warning_ms))
    return result


def run_check(params, figure, body):
    """Run body(check) and grade its primary figure, trying again after a failure up to retries
    times (as monitors do before they call a service down). Warnings, the transcript (when asked
    for), status and the failed tries are attached to the result, or to the error's result of the
    last try; both leave through the one redaction path. A check that passed only on a later try
    is a warning unless retry_warning is false."""
    retries = params.get('retries') or 0
    delay = DEFAULT_RETRY_DELAY if params.get('retry_delay') is None else params['retry_delay']
    check_options(dict(retries=retries, retry_delay=delay))
    check = Check(params)
    failed = []
    while True:
        try:
            result = grade(body(check), figure, params.get('warning_ms'), params.get('critical_ms'), check.warnings,
                           check.degraded)
            break
        except ProbeError as e:
            if e.stage == 'input' or len(failed) >= retries:
                e.result.setdefault('status', 'down')
                e.result.update(tries=len(failed) + 1, failed_tries=failed)
                e.result = check.finish(e.result)
                e.message = check.secrets.redact(e.message)
                e.args = (e.message,)
                raise
            failed.append({'stage': e.stage, 'msg': e.message})
            if check.transcript is not None:
                check.transcript.append('-- try %d failed at stage %s; trying again in %g s' % (len(failed), e.stage, delay))
            time.sleep(delay)
    result.update(tries=len(failed) + 1, failed_tries=failed)
    if failed and params.get('retry_warning', True) and result['status'] == 'up':
        result['status'] = 'warning'
        check.warnings.append('passed on try %d after %s' % (len(failed) + 1, '; '.join(
            'try %d failed at stage %s: %s' % (n + 1, f['stage'], f['msg']) for n, f in enumerate(failed))))
    return check.finish(result)
