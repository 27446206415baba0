# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""OAuth 2.0 logins shared by SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE: the SASL mechanisms
XOAUTH2 (Google, Microsoft) and OAUTHBEARER (RFC 7628). One exchange for all three protocols:
the initial response (whose base64 holds the token: a secret in that form too), the error
challenge a server sends before its final failure (a base64 JSON status: read for the message,
answered with the dummy response the mechanism prescribes), and the rule that a bearer token
never goes over a connection without TLS."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import base64
import json
import re

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError, Refused

OAUTH_MECHANISMS = ('OAUTHBEARER', 'XOAUTH2')  # auto's order: the standard one first
# A bearer token as RFC 6750 2.1 writes it (b64token): nothing that could end a SASL field.
_TOKEN = re.compile(r'^[A-Za-z0-9\-._~+/]+=*$')
_CHALLENGE_FIELDS = ('status', 'scope', 'schemes')
MAX_CHALLENGE = 8192


def check_token(name, token):
    if not token or not _TOKEN.match(token):
        raise ProbeError('input', '%s is not an OAuth 2.0 bearer token (RFC 6750 b64token: letters, digits and '
                                  '-._~+/ then = padding)' % name)


def uses_token(protocol, params):
    """Whether the options of one check (or one side) log in with oauth2_token."""
    if protocol == 'smtp':
        return params.get('smtp_auth') == 'oauth2'
    if protocol == 'pop3':
        return params.get('pop3_auth') in ('xoauth2', 'oauthbearer')
    return params.get('imap_auth') == 'oauth2'


def validate(protocol, params, name='oauth2_token'):
    """Before anything is sent: a check that logs in with a token has a well-formed one (name is
    the option it came from), and a token mechanism is not asked for with a password login."""
    if uses_token(protocol, params):
        check_token(name, params.get('oauth2_token'))
        return
    asked = params.get('auth_mechanism')
    for mechanism in [asked] if isinstance(asked, str) else asked or ():
        if str(mechanism).upper() in OAUTH_MECHANISMS:
            raise ProbeError('input', 'auth_mechanism %s logs in with a token: set %s and %s' % (
                mechanism, {'smtp': 'smtp_auth=oauth2', 'imap': 'imap_auth=oauth2'}.get(protocol, 'the auth option'),
                name))


def _saslname(user):
    """RFC 5801 saslname: ',' and '=' escaped."""
    return user.replace('=', '=3D').replace(',', '=2C')


def initial_response(mechanism, username, token, host, port):
    """The base64 initial client response of mechanism."""
    if mechanism == 'XOAUTH2':
        raw = 'user=%s\x01auth=Bearer %s\x01\x01' % (username, token)
    else:
        raw = 'n,a=%s,\x01host=%s\x01port=%d\x01auth=Bearer %s\x01\x01' % (_saslname(username), host, port, token)
    return base64.b64encode(raw.encode('utf-8')).decode('ascii')


def dummy_response(mechanism):
    """What answers the error challenge so that the server sends its final failure: an empty line
    for XOAUTH2, %x01 for OAUTHBEARER (RFC 7628 3.2.3)."""
    return '' if mechanism == 'XOAUTH2' else 'AQ=='


def read_challenge(text):
    """The error challenge (base64 JSON) as {'status', 'scope', 'schemes'} (strings, or None), or
    {'unreadable': True} when it is not base64 JSON."""
    try:
        data = json.loads(base64.b64decode(text.strip()[:MAX_CHALLENGE], validate=True).decode('utf-8'))
    except (ValueError, UnicodeDecodeError):
        return {'unreadable': True}
    if not isinstance(data, dict):
        return {'unreadable': True}
    return dict((key, str(data[key])[:200] if data.get(key) is not None else None) for key in _CHALLENGE_FIELDS)


def describe(challenge):
    if challenge.get('unreadable'):
        return 'its error challenge was not base64 JSON'
    said = ', '.join('%s %s' % (key, challenge[key]) for key in _CHALLENGE_FIELDS if challenge.get(key))
    return 'the server said: %s' % (said or 'nothing (an empty JSON error)')


class Exchange:
    """One OAuth login over a protocol's SASL step: the protocol sends (command, response) and
    feeds challenges in; this knows what to answer and how to word the failure."""

    def __init__(self, client, mechanism, stage):
        session = client.session
        if not session.tls['established']:
            # Whatever allow_cleartext_auth says: a bearer token works for anyone who reads it.
            raise session.error(stage, 'refusing to send an OAuth token with %s without TLS (bearer tokens always '
                                       'need TLS; allow_cleartext_auth does not apply)' % mechanism)
        params = client.params
        token = params.get('oauth2_token') or ''
        check_token('oauth2_token', token)
        session.add_secret(token)
        self.mechanism = mechanism
        self.stage = stage
        self.session = session
        self.client = client
        self.response = initial_response(mechanism, params.get('username') or '', token, session.server_name,
                                         session.port)
        session.add_secret(self.response)
        self.challenge = None
        client.facts['auth_mechanism_used'] = mechanism.lower()

    def answer(self, text):
        """The line answering a server challenge: the error challenge gets the dummy response."""
        self.challenge = read_challenge(text)
        self.client.facts['oauth_error'] = self.challenge
        return dummy_response(self.mechanism)

    def failed(self, error):
        """error (the server's final refusal) with what its challenge said."""
        if isinstance(error, Refused) and self.challenge is not None:
            error.message = '%s; %s' % (error.message, self.session.redact(describe(self.challenge)))
            error.args = (error.message,)
        return error


def choose(asked, offered):
    """The OAuth mechanism: the one asked for (upper case) or, for auto, the first of
    OAUTH_MECHANISMS the server offers; None when it offers none."""
    if asked and asked.upper() in OAUTH_MECHANISMS:
        return asked.upper() if asked.upper() in offered else None
    return next((m for m in OAUTH_MECHANISMS if m in offered), None)
