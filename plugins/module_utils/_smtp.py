# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SMTP side of the probe core (RFC 5321, RFC 3207 STARTTLS, RFC 4954 AUTH)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import hashlib
import hmac
import re
import socket
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import formatdate, make_msgid

from ansible_collections.mailops.health.plugins.module_utils import _oauth
from ansible_collections.mailops.health.plugins.module_utils._probe import (
    ProbeError, Refused, is_number, run_check, validate_endpoint,
)
from ansible_collections.mailops.health.plugins.module_utils._session import (
    MASK, MAX_RESPONSE, Client, add_hint, cleartext_guard, converse,
)

DEFAULT_SUBJECT = 'mailops.health test mail'
DEFAULT_BODY = 'Test mail sent by mailops.health.smtp_check.'
SMTP_AUTH = ('none', 'password', 'oauth2')
AUTH_MECHANISMS = ('auto', 'plain', 'login', 'cram-md5', 'xoauth2', 'oauthbearer')
# Order for auth_mechanism=auto: a challenge mechanism first because it never reveals the password.
_AUTO_ORDER = ('CRAM-MD5', 'PLAIN', 'LOGIN')
_CLEARTEXT_MECHANISMS = ('PLAIN', 'LOGIN')
# expect: a server is healthy also when it refuses what it must (relaying for strangers, AUTH
# without TLS, a sender the login does not own); expect_stage says where the refusal must come.
EXPECTATIONS = ('accept', 'reject')
EXPECT_STAGES = ('auth', 'mail_from', 'rcpt')

_ADDRESS = re.compile(r'^[^\s<>()\[\],;:@"]+@[A-Za-z0-9.\-]+$|^[^\s<>()\[\],;:@"]+@\[[0-9A-Fa-f:.]+\]$')
_HELO = re.compile(r'^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*$'
                   r'|^\[[0-9A-Fa-f:.]+\]$|^\[IPv6:[0-9A-Fa-f:.]+\]$')
_QUEUE_ID = re.compile(r'queued as\s+([A-Za-z0-9]+)', re.IGNORECASE)


def default_helo():
    """This host's FQDN when it is a valid HELO name, else a safe stand-in."""
    name = socket.getfqdn()
    if all(ord(c) < 128 for c in name) and _HELO.match(name):
        return name
    return 'localhost.localdomain'


def check_address(name, address):
    if not _ADDRESS.match(address or '') or len(address) > 254:
        raise ProbeError('input', '%s is not a valid mail address: %r' % (name, address))


def normalize_recipients(mail_to):
    """mail_to as a list; a comma-separated string is accepted too."""
    if mail_to is None:
        return []
    if isinstance(mail_to, str):
        mail_to = [mail_to]
    recipients = []
    for item in mail_to:
        recipients.extend(part.strip() for part in str(item).split(',') if part.strip())
    return recipients


def mechanisms_of(value):
    """auth_mechanism as a list of upper-case names (['AUTO'] for auto); a string is one name."""
    names = [value] if isinstance(value, str) else list(value or ['auto'])
    names = [str(name).strip().upper() for name in names if str(name).strip()] or ['AUTO']
    for name in names:
        if name.lower() not in AUTH_MECHANISMS:
            raise ProbeError('input', 'auth_mechanism must be among %s, got %s' % (', '.join(AUTH_MECHANISMS), name.lower()))
    if 'AUTO' in names and len(names) > 1:
        raise ProbeError('input', 'auth_mechanism auto picks one mechanism itself; list mechanisms without it')
    return names


def validate(params, token_name='oauth2_token'):
    """Check SMTP input before anything is sent."""
    validate_endpoint(params)
    mechanisms = mechanisms_of(params.get('auth_mechanism'))
    if params.get('smtp_auth') == 'oauth2' and mechanisms != ['AUTO'] and (
            len(mechanisms) > 1 or mechanisms[0] not in _oauth.OAUTH_MECHANISMS):
        raise ProbeError('input', 'smtp_auth=oauth2 takes auth_mechanism auto, xoauth2 or oauthbearer')
    if params.get('smtp_auth') in ('password', 'oauth2'):
        _oauth.validate('smtp', params, token_name)
    helo = params.get('helo')
    if helo is not None:
        if not all(ord(c) < 128 for c in helo) or not _HELO.match(helo) or len(helo) > 255:
            raise ProbeError('input', 'helo must be an ASCII host name or address literal, got %r' % helo)
    expect, stage = expectation(params)
    if expect not in EXPECTATIONS:
        raise ProbeError('input', 'expect must be accept or reject, got %s' % expect)
    if stage is not None and stage not in EXPECT_STAGES:
        raise ProbeError('input', 'expect_stage must be one of %s, got %s' % (', '.join(EXPECT_STAGES), stage))
    if stage in ('mail_from', 'rcpt'):
        check_address('mail_from', params.get('mail_from'))
    if stage == 'rcpt' and not normalize_recipients(params.get('mail_to')):
        raise ProbeError('input', 'mail_to needs at least one address with expect_stage=rcpt')
    for address in normalize_recipients(params.get('mail_to')) if stage == 'rcpt' else ():
        check_address('mail_to', address)
    if params.get('send_mail') and stage is None:
        check_address('mail_from', params.get('mail_from'))
        recipients = normalize_recipients(params.get('mail_to'))
        if not recipients:
            raise ProbeError('input', 'mail_to needs at least one address when a mail is sent')
        for address in recipients:
            check_address('mail_to', address)


def expectation(params):
    """(expect, expect_stage): where the check stops short of DATA, or (accept, None) for a whole
    check. expect=reject without a stage means rcpt (the open-relay test)."""
    expect = params.get('expect') or 'accept'
    stage = params.get('expect_stage')
    if expect == 'reject' and stage is None:
        stage = 'rcpt'
    return expect, stage


def build_message(mail_from, recipients, subject, body, headers=None, domain=None):
    """A plain RFC 5322 message with CRLF line endings; returns (bytes, message_id)."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg['From'] = mail_from
    msg['To'] = ', '.join(recipients)
    msg['Subject'] = subject
    msg['Date'] = formatdate(localtime=False, usegmt=True)
    message_id = make_msgid(domain=domain or mail_from.rpartition('@')[2])
    msg['Message-ID'] = message_id
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body or '')
    return msg.as_bytes(), message_id


class SmtpClient(Client):
    """The SMTP steps of the one session shape (RFC 5321, RFC 3207 STARTTLS, RFC 4954 AUTH)."""

    protocol = 'smtp'
    tls_command = 'STARTTLS'
    login_timing = 'auth_ms'

    def __init__(self, session, params, check):
        super(SmtpClient, self).__init__(session, params, check)
        self.helo = params.get('helo') or default_helo()
        self.features = []
        self.auth_mechanisms = []

    def reply(self, stage):
        """Read a (multi-line) reply: returns (code, text lines)."""
        lines = []
        size = 0
        while True:
            line = self.session.read_line(stage)
            size += len(line)
            if size > MAX_RESPONSE:
                raise self.session.error(stage, 'reply larger than %d bytes' % MAX_RESPONSE)
            if len(line) < 3 or not is_number(line[:3]) or (len(line) > 3 and line[3] not in ' -'):
                raise self.session.error(stage, 'malformed reply %s' % self.session.quote(line))
            lines.append(line[4:])
            if len(line) == 3 or line[3] == ' ':
                return int(line[:3]), lines

    def command(self, stage, line, expect, what, shown=None):
        self.session.send_line(stage, line, shown)
        code, lines = self.reply(stage)
        if code not in expect:
            error = self.session.error(stage, '%s refused (%d %s)' % (what, code, ' '.join(lines)), Refused)
            error.code = code
            error.reply = self.session.redact('%d %s' % (code, ' '.join(lines)))
            raise error
        return code, lines

    def greet(self):
        code, lines = self.reply('banner')
        self.facts['banner'] = ' '.join(lines)
        if code != 220:
            raise self.session.error('banner', 'server refused the connection (%d %s)' % (code, ' '.join(lines)), Refused)

    def capabilities(self):
        self.hello(self.helo)
        self.facts['features'] = self.features
        self.facts['auth_mechanisms'] = self.auth_mechanisms

    def offers_tls(self):
        return self.has('STARTTLS')

    def upgrade(self):
        self.command('tls', 'STARTTLS', (220,), 'STARTTLS')

    def login(self):
        # A check that expects AUTH to be refused probes it without credentials (see probe_auth).
        how = self.params.get('smtp_auth', 'none')
        if how == 'none' or expectation(self.params) == ('reject', 'auth'):
            return False
        if how == 'oauth2':
            self.oauth()
            return True
        self.authenticate(self.params.get('username') or '', self.params.get('password') or '',
                          mechanisms_of(self.params.get('auth_mechanism')), self.params.get('allow_cleartext_auth', False))
        return True

    def hello(self, name):
        self.session.send_line('helo', 'EHLO ' + name)
        code, lines = self.reply('helo')
        if code == 250:
            self.features = [l.strip() for l in lines[1:] if l.strip()]
        elif code in (500, 502):
            # A server without ESMTP: HELO still proves the dialogue works.
            self.command('helo', 'HELO ' + name, (250,), 'HELO')
            self.features = []
        else:
            raise self.session.error('helo', 'EHLO refused (%d %s)' % (code, ' '.join(lines)))
        self.auth_mechanisms = []
        for feature in self.features:
            keyword, _sep, args = feature.replace('=', ' ', 1).partition(' ')
            if keyword.upper() == 'AUTH':
                for mech in args.upper().split():
                    if mech not in self.auth_mechanisms:
                        self.auth_mechanisms.append(mech)

    def has(self, keyword):
        return any(f.split(' ')[0].upper() == keyword for f in self.features)

    def choose(self, mechanisms, allow_cleartext_auth):
        """The mechanisms to try, in order: auto picks one (one failed login per check, so a wrong
        password cannot lock the account), a list is tried in turn as far as the server offers it."""
        session = self.session
        if not self.auth_mechanisms:
            raise session.error('auth', 'server offers no AUTH mechanism')
        if mechanisms == ['AUTO']:
            choices = [m for m in _AUTO_ORDER if m in self.auth_mechanisms]
            if not session.tls['established'] and not allow_cleartext_auth:
                choices = [m for m in choices if m not in _CLEARTEXT_MECHANISMS] or choices
            if not choices:
                raise session.error('auth', 'no supported AUTH mechanism offered (offers: %s)'
                                    % ' '.join(self.auth_mechanisms))
            return choices[:1]
        choices = [m for m in mechanisms if m in self.auth_mechanisms]
        if not choices:
            raise session.error('auth', 'AUTH %s not offered (offers: %s)' % (
                ', '.join(mechanisms), ' '.join(self.auth_mechanisms)))
        return choices

    def authenticate(self, username, password, mechanisms, allow_cleartext_auth):
        """Log in with the first of the chosen mechanisms the server accepts; auth_mechanism_used
        and auth_tried say what was tried, also when every one was refused."""
        self.session.add_secret(password)
        choices = self.choose(mechanisms, allow_cleartext_auth)
        tried = self.facts['auth_tried'] = []
        for mech in choices:
            self.facts['auth_mechanism_used'] = mech.lower()
            tried.append(mech.lower())
            try:
                self.auth_with(mech, username, password, allow_cleartext_auth)
                return
            except Refused as e:
                if mech != choices[-1]:
                    self.session.note('-- AUTH %s refused; trying the next mechanism listed' % mech)
                    continue
                others = [m for m in _AUTO_ORDER if m in self.auth_mechanisms and m.lower() not in tried]
                if others:
                    add_hint(e, 'tried %s; the server also offers %s: list mechanisms in auth_mechanism to try them '
                                'in turn' % (', '.join(m.upper() for m in tried), ', '.join(others)))
                raise

    def auth_with(self, mech, username, password, allow_cleartext_auth):
        session = self.session
        if mech in _CLEARTEXT_MECHANISMS:
            cleartext_guard(session, allow_cleartext_auth, 'auth', 'a password with AUTH ' + mech)

        def b64(data):
            text = base64.b64encode(data.encode('utf-8')).decode('ascii')
            session.add_secret(text)
            return text

        if mech == 'PLAIN':
            payload = b64('\0%s\0%s' % (username, password))
            self.command('auth', 'AUTH PLAIN ' + payload, (235,), 'authentication', shown='AUTH PLAIN ' + MASK)
        elif mech == 'LOGIN':
            self.command('auth', 'AUTH LOGIN', (334,), 'AUTH LOGIN')
            self.command('auth', b64(username), (334,), 'authentication', shown=MASK)
            self.command('auth', b64(password), (235,), 'authentication', shown=MASK)
        else:
            _code, lines = self.command('auth', 'AUTH CRAM-MD5', (334,), 'AUTH CRAM-MD5')
            try:
                challenge = base64.b64decode(lines[0].strip(), validate=True)
            except (ValueError, IndexError):
                raise session.error('auth', 'malformed CRAM-MD5 challenge')
            digest = hmac.new(password.encode('utf-8'), challenge, hashlib.md5).hexdigest()
            self.command('auth', b64('%s %s' % (username, digest)), (235,), 'authentication', shown=MASK)

    def oauth(self):
        """AUTH XOAUTH2 or OAUTHBEARER with oauth2_token (see _oauth): an initial response when it
        fits the 512-octet command line (RFC 4954 4), else after the server's empty challenge."""
        asked = mechanisms_of(self.params.get('auth_mechanism'))[0]
        mech = _oauth.choose(None if asked == 'AUTO' else asked, self.auth_mechanisms)
        if mech is None:
            raise self.session.error('auth', '%s not offered (offers: %s)' % (
                'AUTH ' + asked if asked != 'AUTO' else 'no OAuth mechanism (OAUTHBEARER, XOAUTH2)',
                ' '.join(self.auth_mechanisms) or 'no AUTH'))
        exchange = _oauth.Exchange(self, mech, 'auth')
        self.facts['auth_tried'] = [mech.lower()]
        if len('AUTH %s %s' % (mech, exchange.response)) <= 510:
            self.session.send_line('auth', 'AUTH %s %s' % (mech, exchange.response), shown='AUTH %s %s' % (mech, MASK))
        else:
            self.command('auth', 'AUTH ' + mech, (334,), 'AUTH ' + mech)
            self.session.send_line('auth', exchange.response, shown=MASK)
        code, lines = self.reply('auth')
        if code == 334:
            self.session.send_line('auth', exchange.answer(lines[0] if lines else ''))
            code, lines = self.reply('auth')
        if code != 235:
            error = self.session.error('auth', 'authentication refused (%d %s)' % (code, ' '.join(lines)), Refused)
            raise exchange.failed(error)

    def probe_auth(self):
        """Whether the server would take credentials here, found without sending any: AUTH with no
        initial response, and '*' (RFC 4954 4) to cancel at the server's challenge. Returns
        (accepted, code, reply)."""
        if not self.auth_mechanisms:
            return False, None, 'AUTH not offered'
        mechanisms = mechanisms_of(self.params.get('auth_mechanism'))
        offered = [m for m in _CLEARTEXT_MECHANISMS + ('CRAM-MD5',) if m in self.auth_mechanisms]
        mech = (offered or self.auth_mechanisms)[0] if mechanisms == ['AUTO'] else mechanisms[0]
        self.session.send_line('auth', 'AUTH ' + mech)
        code, lines = self.reply('auth')
        reply = '%d %s' % (code, ' '.join(lines))
        if code == 334:
            self.session.send_line('auth', '*')
            self.reply('auth')
            return True, code, 'AUTH %s: %s' % (mech, reply)
        return code < 400, code, 'AUTH %s: %s' % (mech, reply)

    def send(self, mail_from, recipients, data):
        """MAIL, RCPT, DATA; the server's final reply goes into the facts."""
        self.command('mail_from', 'MAIL FROM:<%s>' % mail_from, (250,), 'MAIL FROM')
        for rcpt in recipients:
            self.command('rcpt', 'RCPT TO:<%s>' % rcpt, (250, 251), 'RCPT TO <%s>' % rcpt)
        self.command('data', 'DATA', (354,), 'DATA')
        # Dot-stuffing (RFC 5321 4.5.2) and the terminating line.
        payload = re.sub(br'(?m)^\.', b'..', data)
        if not payload.endswith(b'\r\n'):
            payload += b'\r\n'
        self.session.note('C: <message, %d bytes>' % len(data))
        self.session.send_raw('data', payload + b'.\r\n')
        self.session.note('C: .')
        code, lines = self.reply('data')
        if code != 250:
            raise self.session.error('data', 'message refused (%d %s)' % (code, ' '.join(lines)), Refused)
        self.facts['data_reply'] = '%d %s' % (code, ' '.join(lines))
        match = _QUEUE_ID.search(self.facts['data_reply'])
        self.facts['queue_id'] = match.group(1) if match else None
        self.mark('data_ms')

    def quit(self):
        self.command('quit', 'QUIT', (221,), 'QUIT')


def expect_outcome(client, params):
    """Go as far as expect_stage without DATA and record what the server did there; an outcome
    other than expect fails at stage expectation. Nothing is ever delivered."""
    expect, stage = expectation(params)
    accepted, code, reply = True, None, None
    try:
        if stage == 'auth':
            accepted, code, reply = client.probe_auth()
        else:
            code, lines = client.command('mail_from', 'MAIL FROM:<%s>' % params['mail_from'], (250,), 'MAIL FROM')
            reply = '%d %s' % (code, ' '.join(lines))
            for rcpt in normalize_recipients(params.get('mail_to')) if stage == 'rcpt' else ():
                code, lines = client.command('rcpt', 'RCPT TO:<%s>' % rcpt, (250, 251), 'RCPT TO <%s>' % rcpt)
                reply = '%d %s' % (code, ' '.join(lines))
    except Refused as e:
        if e.stage != stage:
            raise
        accepted, code, reply = False, e.code, e.reply
    if stage != 'auth' or accepted:
        client.command('quit', 'RSET', (250,), 'RSET')
    temporary = expect == 'reject' and not accepted and code is not None and code < 500
    met = accepted == (expect == 'accept') and not temporary
    client.facts['expectation'] = {'expect': expect, 'stage': stage, 'accepted': accepted, 'code': code,
                                   'reply': reply, 'met': met}
    if temporary:
        raise client.session.error('expectation', 'refused at stage %s only temporarily (%s); expect=reject wants a '
                                                  'permanent refusal (5xx)' % (stage, reply))
    if not met:
        raise client.session.error('expectation', '%s at stage %s (%s), but expect=%s' % (
            'accepted' if accepted else 'refused', stage, reply, expect))


def run_session(params, check, message=None):
    """One SMTP session as params describe (the smtp_check options); sends message
    (mail_from, recipients, bytes) when given. Returns the facts of the session."""
    def send(client):
        client.send(*message)
    return converse(SmtpClient, params, check, send if message is not None else None)


def smtp_check(params, check_mode=False):
    """The smtp_check module's core: returns the result dict, raises ProbeError on failure."""
    validate(params)
    message = message_id = None
    if params.get('send_mail') and expectation(params)[1] is None:
        recipients = normalize_recipients(params['mail_to'])
        data, message_id = build_message(params['mail_from'], recipients, params.get('subject') or DEFAULT_SUBJECT,
                                         params.get('body') or DEFAULT_BODY)
        message = (params['mail_from'], recipients, data)

    if expectation(params)[1] is not None:
        # Stops short of DATA, so check mode runs it whole.
        return run_check(params, 'response_time_ms',
                         lambda check: converse(SmtpClient, params, check, lambda client: expect_outcome(client, params)))

    def body(check):
        # Check mode proves everything up to the login and sends nothing.
        result = run_session(params, check, None if check_mode else message)
        if message is not None:
            result['sent'] = not check_mode
            result['message_id'] = None if check_mode else message_id
        return result

    return run_check(params, 'response_time_ms', body)
