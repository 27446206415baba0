#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: oauth2_token
short_description: Get an OAuth 2.0 access token with the client credentials grant
version_added: 0.1.0
description:
  - Asks an OAuth 2.0 token endpoint for an access token with the client credentials grant (RFC 6749 section 4.4), as
    a monitoring application registered with Microsoft Entra ID, Google or Keycloak does, and returns the token, its
    type, lifetime and scope.
  - The token is meant for the C(oauth2_token) option of the mail checks (for example
    M(mailops.health.imap_check) with C(imap_auth=oauth2)), which log in with it over SASL XOAUTH2 or OAUTHBEARER.
  - The task must set C(no_log=true), see the notes.
  - Fails with stage C(token) and what the endpoint said (its C(error) and C(error_description)); the client secret
    never appears in a result, and a response body is never quoted raw.
author:
  - mailops.health developers (@mailops-health)
extends_documentation_fragment:
  - mailops.health.common.attributes
attributes:
  check_mode:
    description:
      - Gets the token in check mode too. Asking for a token changes nothing on the mail system, and the checks that
        follow in the same play need it.
options:
  token_url:
    description:
      - URL of the token endpoint, for example C(https://login.microsoftonline.com/TENANT/oauth2/v2.0/token) or
        C(https://oauth2.googleapis.com/token).
      - Must be C(https), except for a loopback address (C(localhost), C(127.0.0.1), C(::1)), where C(http) is accepted.
        It must not hold credentials (C(user:password@)); redirects are not followed.
    type: str
    required: true
  client_id:
    description:
      - The client (application) ID registered with the provider.
    type: str
    required: true
  client_secret:
    description:
      - The client's secret. Never returned, logged or quoted in an error.
    type: str
    required: true
  scope:
    description:
      - The scopes to ask for, for example V(https://outlook.office365.com/.default) for Microsoft 365 or
        V(https://mail.google.com/) for Google. A space- or comma-separated string is accepted too.
      - Omitted, the request has no scope and the endpoint uses its default for the client.
    type: list
    elements: str
  extra_params:
    description:
      - More form parameters for the request, such as C(resource) or C(audience) for providers that want them.
      - Values are strings, numbers or booleans. They cannot replace C(grant_type), C(scope), C(client_id) or
        C(client_secret). They are not secret (not masked).
    type: dict
  auth_method:
    description:
      - How the client authenticates (RFC 6749 section 2.3.1). V(client_secret_basic) sends O(client_id) and
        O(client_secret) in an HTTP Basic C(Authorization) header (each form-urlencoded first, as the RFC says);
        V(client_secret_post) sends them as the form fields C(client_id) and C(client_secret).
    type: str
    choices: [client_secret_basic, client_secret_post]
    default: client_secret_basic
  timeout:
    description:
      - Seconds to wait for the token endpoint (to connect, and for each read), between V(1) and V(900).
    type: int
    default: 60
  validate_certs:
    description:
      - Verify the endpoint's certificate (chain and host name). Use V(false) only for a lab.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of the CA certificates to trust for the endpoint instead of the system store.
    type: path
notes:
  - The returned RV(access_token) is a credential. Set C(no_log=true) on the task, or anyone who can read the play's
    output (or its callback logs) can use the token until it expires; O(client_secret) is masked by Ansible either way.
  - Pass RV(access_token) to the C(oauth2_token) option of the mail checks in the same play; get a new one when
    RV(expires_at) is near rather than storing it.
  - The endpoint must answer with a C(Bearer) token, the only kind XOAUTH2 and OAUTHBEARER carry.
  - Proxies from the environment (C(https_proxy), C(no_proxy)) are honoured; C(~/.netrc) is not read.
  - Only the Python standard library and Ansible's own module utilities are needed on the managed node.
seealso:
  - module: mailops.health.imap_check
  - module: mailops.health.smtp_check
  - module: mailops.health.pop3_check
  - name: RFC 6749 section 4.4, Client Credentials Grant
    description: The grant this module uses.
    link: https://www.rfc-editor.org/rfc/rfc6749#section-4.4
'''

EXAMPLES = r'''
- name: Get an access token for the monitoring application (Microsoft 365)
  mailops.health.oauth2_token:
    token_url: https://login.microsoftonline.com/{{ tenant_id }}/oauth2/v2.0/token
    client_id: "{{ monitor_client_id }}"
    client_secret: "{{ vault_monitor_client_secret }}"
    scope: https://outlook.office365.com/.default
  register: token
  no_log: true

- name: Log in to IMAP with the token (XOAUTH2)
  mailops.health.imap_check:
    host: outlook.office365.com
    tls_mode: tls
    imap_auth: oauth2
    auth_mechanism: xoauth2
    username: monitor@example.com
    oauth2_token: "{{ token.access_token }}"
  register: imap

- name: Get a token from a private endpoint, the client authenticated in the form, with a private CA
  mailops.health.oauth2_token:
    token_url: https://sso.example.com/realms/mail/protocol/openid-connect/token
    client_id: mail-monitor
    client_secret: "{{ vault_keycloak_secret }}"
    auth_method: client_secret_post
    scope: [email, mail]
    extra_params:
      audience: dovecot
    ca_path: /etc/ssl/private-ca.pem
  register: keycloak_token
  no_log: true

- name: Fail early when the token lives less than ten minutes
  ansible.builtin.assert:
    that: keycloak_token.expires_in is none or keycloak_token.expires_in > 600
    fail_msg: "token expires at {{ keycloak_token.expires_at }}"
'''

RETURN = r'''
access_token:
  description:
    - The access token. A credential; see the notes on C(no_log).
    - Meant for the C(oauth2_token) option of M(mailops.health.smtp_check), M(mailops.health.pop3_check) and
      M(mailops.health.imap_check).
  returned: success
  type: str
  sample: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJtb25pdG9yIn0.c2lnbmF0dXJl
token_type:
  description: The token type, always V(Bearer) (another type fails).
  returned: success
  type: str
  sample: Bearer
expires_in:
  description: Seconds the token is valid for, as the endpoint said; V(null) when it did not say.
  returned: success
  type: int
  sample: 3599
expires_at:
  description: When the token expires, ISO 8601 UTC (from RV(expires_in) and the time of the answer); V(null) when the
    endpoint did not say.
  returned: success
  type: str
  sample: "2026-12-06T13:00:00Z"
scope:
  description: The scopes granted, as the endpoint listed them, or else those asked for (RFC 6749 section 5.1).
  returned: success
  type: list
  elements: str
  sample: ["https://outlook.office365.com/.default"]
token_url:
  description: The token endpoint asked, without its query.
  returned: always
  type: str
  sample: https://login.microsoftonline.com/example/oauth2/v2.0/token
response_time_ms:
  description: Milliseconds from sending the request to the end of the answer.
  returned: when the endpoint answered
  type: float
  sample: 182.4
http_status:
  description: The HTTP status of the endpoint's answer.
  returned: when the endpoint answered
  type: int
  sample: 401
error:
  description: The endpoint's RFC 6749 error code.
  returned: on failure, when the endpoint sent one
  type: str
  sample: invalid_client
error_description:
  description: The endpoint's error description, shortened to 300 characters, with the client secret masked.
  returned: on failure, when the endpoint sent one
  type: str
  sample: "AADSTS7000215: Invalid client secret provided."
stage:
  description: Where the module failed, V(input) (an option) or V(token) (the request or the answer).
  returned: on failure
  type: str
  sample: token
'''

import base64
import datetime
import http.client
import ipaddress
import json
import socket
import ssl
import time
from urllib.error import HTTPError, URLError
from urllib.parse import quote_plus, urlencode, urlsplit, urlunsplit

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import ConnectionError as UrlsConnectionError
from ansible.module_utils.urls import open_url

from ansible_collections.mailops.health.plugins.module_utils._probe import (
    DEFAULT_TIMEOUT, ProbeError, Secrets, check_options, ms_since,
)
from ansible_collections.mailops.health.plugins.module_utils._runner import run

AUTH_METHODS = ('client_secret_basic', 'client_secret_post')
# Form fields the module sets itself; extra_params may not replace them.
RESERVED_PARAMS = ('grant_type', 'scope', 'client_id', 'client_secret')
MAX_BODY = 1024 * 1024
MAX_DESCRIPTION = 300
USER_AGENT = 'mailops.health-oauth2_token'


def argument_spec():
    return dict(
        token_url=dict(type='str', required=True, no_log=False),
        client_id=dict(type='str', required=True),
        client_secret=dict(type='str', required=True, no_log=True),
        scope=dict(type='list', elements='str'),
        extra_params=dict(type='dict'),
        auth_method=dict(type='str', choices=list(AUTH_METHODS), default='client_secret_basic'),
        timeout=dict(type='int', default=DEFAULT_TIMEOUT),
        validate_certs=dict(type='bool', default=True),
        ca_path=dict(type='path'),
    )


# -- input -------------------------------------------------------------------------------------
def _shown_url(parts):
    """The endpoint as messages and results name it: no credentials, no query, no fragment."""
    host = parts.hostname or ''
    if ':' in host:
        host = '[%s]' % host
    netloc = host if parts.port is None else '%s:%s' % (host, parts.port)
    return urlunsplit((parts.scheme, netloc, parts.path, '', ''))


def _is_loopback(host):
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_url(url):
    """token_url as the module shows it, or ProbeError at stage input."""
    try:
        parts = urlsplit(url)
        shown = _shown_url(parts)  # a port that is not a number raises here
    except ValueError as e:
        raise ProbeError('input', 'token_url is not a valid URL: %s' % e)
    if parts.scheme not in ('https', 'http') or not parts.hostname:
        raise ProbeError('input', 'token_url must be an https URL with a host, got %s' % shown)
    if parts.username is not None or parts.password is not None:
        raise ProbeError('input', 'token_url must not hold credentials; give them as client_id and client_secret')
    if parts.scheme == 'http' and not _is_loopback(parts.hostname):
        raise ProbeError('input', 'token_url must use https (http only for a loopback address, the client secret '
                                  'would cross the network in plaintext): %s' % shown)
    return shown


def _scopes(values):
    words = []
    for value in values or ():
        for word in value.split():
            if word not in words:
                words.append(word)
    return words


def _extra_params(extra):
    fields = []
    for name, value in (extra or {}).items():
        if name in RESERVED_PARAMS:
            raise ProbeError('input', 'extra_params cannot set %s; use the option of that name' % name)
        if isinstance(value, bool):
            text = 'true' if value else 'false'
        elif isinstance(value, (int, float)):
            text = str(value)
        elif isinstance(value, str):
            text = value
        else:
            raise ProbeError('input', 'extra_params.%s must be a string, a number or a boolean' % name)
        fields.append((str(name), text))
    check_options(dict(('extra_params.%s' % name, value) for name, value in fields))
    return fields


def _secrets(client_id, client_secret):
    """The secret and every form the request carries it in."""
    secrets = Secrets()
    encoded = quote_plus(client_secret)
    for pair in ('%s:%s' % (quote_plus(client_id), encoded), '%s:%s' % (client_id, client_secret)):
        secrets.add(base64.b64encode(pair.encode('utf-8')).decode('ascii'))
    secrets.add(client_secret)
    secrets.add(encoded)
    return secrets


# -- the answer ----------------------------------------------------------------------------------
def _text(value, secrets, limit=MAX_DESCRIPTION):
    """A string field of the endpoint's answer as a result may hold it: printable, short, no secret."""
    if not isinstance(value, str):
        return None
    text = ''.join(c if c.isprintable() else '?' for c in value)
    if len(text) > limit:
        text = text[:limit] + '...'
    return secrets.redact(text)


def _json_object(body):
    try:
        value = json.loads(body.decode('utf-8'))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _describe_body(status, content_type, body):
    """What an answer that is not the expected JSON was, without quoting it."""
    return 'HTTP %s with a body that is not a JSON object (%s, %d bytes)' % (
        status, (content_type or 'no Content-Type').split(';')[0].strip(), len(body))


def _expires_in(value):
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())  # some endpoints send the number as a string
    if isinstance(value, (int, float)) and value >= 0:
        return int(value)
    return None


def _iso_utc(timestamp):
    when = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return when.strftime('%Y-%m-%dT%H:%M:%SZ')


# -- the request ----------------------------------------------------------------------------------
def _post(params, form, headers):
    """(HTTP status, Content-Type, body) of the endpoint's answer, error statuses included."""
    try:
        response = open_url(params['token_url'], data=urlencode(form), headers=headers, method='POST',
                            timeout=params['timeout'], validate_certs=params['validate_certs'],
                            ca_path=params['ca_path'], follow_redirects='none', use_proxy=True, use_netrc=False,
                            http_agent=USER_AGENT)
        try:
            return response.getcode(), response.headers.get('Content-Type'), response.read(MAX_BODY + 1)
        finally:
            response.close()
    except HTTPError as e:
        try:
            body = e.read(MAX_BODY + 1) if e.fp is not None else b''
        except (OSError, http.client.HTTPException, AttributeError):
            body = b''
        return e.code, e.headers.get('Content-Type') if e.headers else None, body


def get_token(params):
    """The module's work: check the input, ask for the token, read the answer."""
    names = ('token_url', 'client_id', 'client_secret', 'scope', 'timeout', 'ca_path')
    check_options(dict((name, params[name]) for name in names))
    shown = _check_url(params['token_url'])
    if not params['client_id']:
        raise ProbeError('input', 'client_id must not be empty')
    scopes = _scopes(params['scope'])
    form = [('grant_type', 'client_credentials')]
    if scopes:
        form.append(('scope', ' '.join(scopes)))
    form.extend(_extra_params(params['extra_params']))
    headers = {'Content-Type': 'application/x-www-form-urlencoded', 'Accept': 'application/json'}
    if params['auth_method'] == 'client_secret_basic':
        pair = '%s:%s' % (quote_plus(params['client_id']), quote_plus(params['client_secret']))
        headers['Authorization'] = 'Basic %s' % base64.b64encode(pair.encode('utf-8')).decode('ascii')
    else:
        form.extend([('client_id', params['client_id']), ('client_secret', params['client_secret'])])
    secrets = _secrets(params['client_id'], params['client_secret'])
    facts = dict(token_url=shown)
    where = 'token endpoint %s' % shown

    def fail(message, **more):
        facts.update(more)
        raise ProbeError('token', secrets.redact('%s: %s' % (where, message)), facts)

    start = time.monotonic()
    try:
        status, content_type, body = _post(params, form, headers)
    except URLError as e:
        reason = e.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            fail('timed out after %s s' % params['timeout'])
        if isinstance(reason, ssl.SSLCertVerificationError):
            fail('certificate verification failed: %s' % (reason.verify_message or reason.reason))
        fail('cannot reach the endpoint: %s' % (getattr(reason, 'strerror', None) or reason))
    except (socket.timeout, TimeoutError):
        fail('timed out after %s s' % params['timeout'])
    except ssl.SSLCertVerificationError as e:
        fail('certificate verification failed: %s' % (e.verify_message or e.reason))
    except (UrlsConnectionError, OSError, http.client.HTTPException) as e:
        fail('cannot reach the endpoint: %s' % (getattr(e, 'strerror', None) or str(e) or type(e).__name__))
    received = time.time()
    facts.update(response_time_ms=ms_since(start), http_status=status)
    if len(body) > MAX_BODY:
        fail('HTTP %s with an answer over %d bytes' % (status, MAX_BODY))
    answer = _json_object(body)

    if not 200 <= status < 300:
        if 300 <= status < 400:
            fail('HTTP %s, a redirect (not followed: token_url must be the token endpoint itself)' % status)
        error = _text(answer.get('error'), secrets, 100) if answer else None
        if not error:
            fail(_describe_body(status, content_type, body))
        description = _text(answer.get('error_description'), secrets)
        more = dict(error=error)
        if description:
            more['error_description'] = description
        fail('HTTP %s: %s%s' % (status, error, ': %s' % description if description else ''), **more)
    if answer is None:
        fail(_describe_body(status, content_type, body))
    token = answer.get('access_token')
    if not isinstance(token, str) or not token:
        fail('HTTP 200 without an access_token')
    token_type = answer.get('token_type')
    if not isinstance(token_type, str) or token_type.lower() != 'bearer':
        fail('the token is of type %s, not Bearer (XOAUTH2 and OAUTHBEARER carry Bearer tokens only)'
             % (_text(token_type, secrets, 40) if isinstance(token_type, str) else 'none given'))
    expires_in = _expires_in(answer.get('expires_in'))
    granted = answer.get('scope')
    facts.pop('http_status')
    facts.update(
        access_token=token,
        token_type='Bearer',
        expires_in=expires_in,
        expires_at=_iso_utc(received + expires_in) if expires_in is not None else None,
        scope=granted.split() if isinstance(granted, str) else scopes,
    )
    return facts


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run(module, get_token)


if __name__ == '__main__':
    main()
