"""mailops.health.oauth2_token: main() driven with real module arguments against the lab's token endpoint
(lab/embedded/oauth.py TokenEndpoint on 127.0.0.1): the token a playbook gets, the failure shape (msg + stage
token), and the client secret nowhere in the output."""

import base64
import datetime
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote_plus

import pytest

from ansible_collections.mailops.health.plugins.modules import oauth2_token
from lab.embedded import oauth
from lab.embedded.certs import LabCerts

from .helpers import run_module
from .test_docs import argument_spec, compare

SECRET = 'Zq8~monitor-secret/with+odd=chars'
CLIENT_ID = 'mail-monitor'
SECRET_FORMS = (SECRET, quote_plus(SECRET),
                base64.b64encode(('%s:%s' % (CLIENT_ID, quote_plus(SECRET))).encode()).decode(),
                base64.b64encode(('%s:%s' % (CLIENT_ID, SECRET)).encode()).decode())
CLIENTS = {CLIENT_ID: (SECRET, 'alice', ('mail', 'openid'))}


@pytest.fixture(scope='module')
def key():
    return oauth.make_key()


@pytest.fixture(scope='module')
def endpoint(key):
    with oauth.TokenEndpoint(key, CLIENTS) as running:
        yield running


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """The endpoints are on 127.0.0.1: no proxy from the environment may take the request elsewhere."""
    for name in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
        monkeypatch.delenv(name, raising=False)


def args(url, **extra):
    params = dict(token_url=url, client_id=CLIENT_ID, client_secret=SECRET)
    params.update(extra)
    return params


def assert_no_secret(result):
    for form in SECRET_FORMS:
        assert form not in result['_raw']


def test_gets_a_token_with_client_secret_basic(endpoint, key, capsys):
    before = time.time()
    result = run_module(capsys, oauth2_token, args(endpoint.url, scope='mail'))
    assert result['_rc'] == 0 and result['changed'] is False
    assert oauth.verify(key, result['access_token'], 'alice') == (True, None)
    assert (result['token_type'], result['expires_in'], result['scope']) == ('Bearer', 3600, ['mail'])
    expires_at = datetime.datetime.strptime(result['expires_at'], '%Y-%m-%dT%H:%M:%SZ').replace(
        tzinfo=datetime.timezone.utc).timestamp()
    assert before + 3600 - 1 <= expires_at <= time.time() + 3600
    assert result['token_url'] == endpoint.url
    assert result['response_time_ms'] > 0
    assert 'stage' not in result and 'http_status' not in result
    assert_no_secret(result)


def test_client_secret_post_scopes_and_extra_params(endpoint, key, capsys):
    result = run_module(capsys, oauth2_token, args(endpoint.url, auth_method='client_secret_post',
                                                   scope='openid, mail openid', extra_params={'resource': 'x'}))
    assert result['_rc'] == 0
    assert result['scope'] == ['openid', 'mail']
    assert endpoint.issued[-1] == (CLIENT_ID, 'openid mail')
    assert oauth.verify(key, result['access_token'], 'alice') == (True, None)
    assert_no_secret(result)


def test_check_mode_gets_the_token_too(endpoint, capsys):
    count = len(endpoint.issued)
    result = run_module(capsys, oauth2_token, args(endpoint.url), check_mode=True)
    assert result['_rc'] == 0 and result['access_token'] and result['changed'] is False
    assert result['scope'] == ['mail']  # the endpoint's default for the client, as it said
    assert len(endpoint.issued) == count + 1


@pytest.mark.parametrize('auth_method', ['client_secret_basic', 'client_secret_post'])
def test_wrong_secret_fails_at_stage_token_without_the_secret(endpoint, capsys, auth_method):
    wrong = 'Wrong-Secret-42/x'
    result = run_module(capsys, oauth2_token, args(endpoint.url, client_secret=wrong, auth_method=auth_method))
    assert result['_rc'] == 1 and result['failed'] is True
    assert result['stage'] == 'token'
    assert result['msg'] == 'token endpoint %s: HTTP 401: invalid_client: client authentication failed' \
        % endpoint.url
    assert (result['error'], result['error_description'], result['http_status']) == (
        'invalid_client', 'client authentication failed', 401)
    assert 'access_token' not in result
    for form in (wrong, quote_plus(wrong), base64.b64encode(('%s:%s' % (CLIENT_ID, quote_plus(wrong))).encode())
                 .decode()):
        assert form not in result['_raw']


def test_an_endpoint_quoting_the_secret_is_masked(key, capsys):
    with oauth.TokenEndpoint(key, {CLIENT_ID: ('other-secret', 'alice')}, quirks=['echo_secret']) as echoing:
        result = run_module(capsys, oauth2_token, args(echoing.url))
    assert result['stage'] == 'token' and result['error'] == 'invalid_client'
    # Masked by the module itself (Ansible's own no_log mask would read VALUE_SPECIFIED_IN_NO_LOG_PARAMETER),
    # the Basic header's base64 too, which Ansible does not know.
    assert 'with secret ********' in result['error_description']
    assert 'Basic ********' in result['error_description']
    assert 'VALUE_SPECIFIED_IN_NO_LOG_PARAMETER' not in result['error_description'] + result['msg']
    assert_no_secret(result)


def test_invalid_scope(endpoint, capsys):
    result = run_module(capsys, oauth2_token, args(endpoint.url, scope=['mail', 'admin']))
    assert (result['stage'], result['error'], result['http_status']) == ('token', 'invalid_scope', 400)
    assert 'admin' in result['error_description']


def test_unreachable_endpoint(capsys):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    url = 'http://127.0.0.1:%d/token' % port
    result = run_module(capsys, oauth2_token, args(url, timeout=5))
    assert result['_rc'] == 1 and result['stage'] == 'token'
    assert result['msg'].startswith('token endpoint %s: cannot reach the endpoint: ' % url)
    assert 'refused' in result['msg'].lower()
    assert 'http_status' not in result and result['token_url'] == url
    assert_no_secret(result)


def test_endpoint_that_never_answers_times_out(capsys):
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        sock.listen(1)  # the kernel accepts; nobody ever answers
        url = 'http://127.0.0.1:%d/token' % sock.getsockname()[1]
        result = run_module(capsys, oauth2_token, args(url, timeout=1))
    assert result['stage'] == 'token'
    assert result['msg'] == 'token endpoint %s: timed out after 1 s' % url


@pytest.mark.parametrize('quirk, message', [
    ('not_json', 'HTTP 200 with a body that is not a JSON object (text/html, %d bytes)' % len(oauth.NOT_JSON_PAGE)),
    ('token_type_mac', 'the token is of type mac, not Bearer (XOAUTH2 and OAUTHBEARER carry Bearer tokens only)'),
])
def test_answers_that_are_no_bearer_token(key, capsys, quirk, message):
    with oauth.TokenEndpoint(key, CLIENTS, quirks=[quirk]) as odd:
        result = run_module(capsys, oauth2_token, args(odd.url))
    assert result['_rc'] == 1 and result['stage'] == 'token'
    assert result['msg'] == 'token endpoint %s: %s' % (odd.url, message)
    assert result['http_status'] == 200
    assert 'Sign in' not in result['_raw']  # the body is described, never quoted
    assert 'access_token' not in result and 'eyJ' not in result['_raw']


def test_without_expires_in_the_requested_scope_is_returned(key, capsys):
    with oauth.TokenEndpoint(key, CLIENTS, quirks=['no_expires_in']) as terse:
        result = run_module(capsys, oauth2_token, args(terse.url, scope='openid'))
    assert result['_rc'] == 0
    assert (result['expires_in'], result['expires_at'], result['scope']) == (None, None, ['openid'])


class _Handler(http.server.BaseHTTPRequestHandler):
    answers = {}

    def do_POST(self):  # noqa: N802
        status, headers, body = self.answers[self.path]
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args):
        pass


@pytest.fixture(scope='module')
def scripted():
    """An HTTP server on 127.0.0.1 answering POST path with _Handler.answers[path]."""
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield 'http://127.0.0.1:%d' % server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize('path, answer, message', [
    ('/redirect', (302, {'Location': 'http://127.0.0.1:9/elsewhere'}, b''),
     'HTTP 302, a redirect (not followed: token_url must be the token endpoint itself)'),
    ('/html-error', (502, {'Content-Type': 'text/html'}, b'<h1>Bad gateway %s</h1>' % SECRET.encode()),
     'HTTP 502 with a body that is not a JSON object (text/html, %d bytes)' % (len(SECRET) + 21)),
    ('/no-token', (200, {'Content-Type': 'application/json'}, b'{"token_type": "Bearer"}'),
     'HTTP 200 without an access_token'),
    ('/list', (200, {'Content-Type': 'application/json'}, b'["access_token"]'),
     'HTTP 200 with a body that is not a JSON object (application/json, 16 bytes)'),
], ids=['redirect', 'html-error', 'no-token', 'json-list'])
def test_odd_answers_are_described_not_quoted(scripted, capsys, path, answer, message):
    _Handler.answers[path] = answer
    url = scripted + path
    result = run_module(capsys, oauth2_token, args(url))
    assert result['stage'] == 'token'
    assert result['msg'] == 'token endpoint %s: %s' % (url, message)
    assert 'Bad gateway' not in result['_raw']
    assert_no_secret(result)


def test_https_with_the_lab_ca(tmp_path, key, capsys):
    certs = LabCerts(tmp_path)
    with oauth.TokenEndpoint(key, CLIENTS, ssl_context=certs.server_context()) as tls:
        trusted = run_module(capsys, oauth2_token, args(tls.url, ca_path=str(certs.ca_path)))
        untrusted = run_module(capsys, oauth2_token, args(tls.url, ca_path=str(certs.selfsigned_path)))
        unchecked = run_module(capsys, oauth2_token, args(tls.url, validate_certs=False))
    assert trusted['_rc'] == 0 and oauth.verify(key, trusted['access_token'], 'alice') == (True, None)
    assert untrusted['stage'] == 'token'
    assert untrusted['msg'].startswith('token endpoint %s: certificate verification failed: ' % tls.url)
    assert unchecked['_rc'] == 0


@pytest.mark.parametrize('extra, message', [
    (dict(token_url='http://192.0.2.1/token'), 'token_url must use https (http only for a loopback address'),
    (dict(token_url='ftp://127.0.0.1/token'), 'token_url must be an https URL with a host'),
    (dict(token_url='https://id:pw@127.0.0.1/token'), 'token_url must not hold credentials'),
    (dict(token_url='https://127.0.0.1:http/token'), 'token_url is not a valid URL'),
    (dict(extra_params={'client_secret': 'x'}), 'extra_params cannot set client_secret'),
    (dict(extra_params={'resource': ['a', 'b']}), 'extra_params.resource must be a string'),
    (dict(extra_params={'resource': 'a\r\nb'}), 'extra_params.resource must not contain control characters'),
    (dict(client_id='a\nb'), 'client_id must not contain control characters'),
    (dict(timeout=0), 'timeout must be between 1 and 900'),
], ids=['plain-http-remote', 'ftp', 'credentials', 'bad-port', 'reserved-param', 'list-param', 'crlf-param',
        'crlf-client-id', 'timeout'])
def test_bad_input_fails_before_any_request(endpoint, capsys, extra, message):
    count = len(endpoint.issued)
    result = run_module(capsys, oauth2_token, args(extra.pop('token_url', endpoint.url), **extra))
    assert result['_rc'] == 1 and result['stage'] == 'input'
    assert result['msg'].startswith(message), result['msg']
    assert len(endpoint.issued) == count
    assert_no_secret(result)


def test_secret_is_required_and_no_log(capsys):
    result = run_module(capsys, oauth2_token, dict(token_url='https://127.0.0.1/token', client_id='x'))
    assert result['failed'] and 'client_secret' in result['msg']
    assert argument_spec_of_module()['client_secret']['no_log'] is True


def argument_spec_of_module():
    return oauth2_token.argument_spec()


def test_docs_match_the_argument_spec(source_collections, monkeypatch):
    ansible_doc = str(Path(sys.executable).parent / 'ansible-doc')
    out = subprocess.run([ansible_doc, '--json', '-t', 'module', 'mailops.health.oauth2_token'], check=True,
                         capture_output=True, text=True,
                         env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(source_collections))).stdout
    doc = json.loads(out)['mailops.health.oauth2_token']['doc']
    compare(argument_spec(oauth2_token, monkeypatch), doc['options'], 'oauth2_token')
    galaxy = (Path(__file__).resolve().parents[2] / 'galaxy.yml').read_text()
    assert 'version: %s\n' % doc['version_added'] in galaxy  # new in the release being made
    assert doc['attributes']['check_mode']['support'] == 'full'
    assert doc['attributes']['diff_mode']['support'] == 'none'
    assert doc['options']['timeout']['default'] == oauth2_token.DEFAULT_TIMEOUT
