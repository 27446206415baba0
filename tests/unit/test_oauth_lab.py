"""The lab's OAuth 2.0 side: tokens (lab/embedded/oauth.py issue and verify), the token endpoint
(client credentials grant), and XOAUTH2 / OAUTHBEARER on the embedded SMTP, POP3 and IMAP servers,
driven on the wire with smtplib, poplib and imaplib; the OAuth faults."""

import base64
import hashlib
import hmac
import imaplib
import json
import os
import poplib
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from lab.embedded import EmbeddedLab, oauth
from lab.embedded.certs import LabCerts

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000
GOOD_SECRET = 'client-secret:with/odd+chars'


def b64(data):
    return base64.b64encode(data).decode('ascii')


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b'=').decode('ascii')


def segment(value):
    return b64url(json.dumps(value).encode())


def signed(key, header, claims):
    """A JWT made here, independently of oauth.issue."""
    signing_input = '%s.%s' % (segment(header), segment(claims))
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return '%s.%s' % (signing_input, b64url(signature))


def claims(**changes):
    value = {'iss': 'mailops-lab', 'sub': 'alice', 'aud': 'mail', 'scope': 'mail', 'iat': NOW, 'nbf': NOW,
             'exp': NOW + 3600}
    value.update(changes)
    return {k: v for k, v in value.items() if v is not None}


HEADER = {'alg': 'HS256', 'typ': 'JWT', 'kid': 'default'}


@pytest.fixture(scope='module')
def key():
    return oauth.make_key()


@pytest.fixture(scope='module')
def olab():
    """A lab with an OAuth key (the session's `lab` has none)."""
    with EmbeddedLab(oauth_key=oauth.make_key()) as running:
        yield running


# -- tokens ----------------------------------------------------------------------------------------

def test_issue_makes_the_documented_jwt(key):
    token = oauth.issue(key, 'alice', now=NOW)
    head, body, signature = token.split('.')

    def pad(text):
        return text + '=' * (-len(text) % 4)
    assert json.loads(base64.urlsafe_b64decode(pad(head))) == HEADER
    assert json.loads(base64.urlsafe_b64decode(pad(body))) == claims()
    expected = hmac.new(key, ('%s.%s' % (head, body)).encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64decode(pad(signature)) == expected
    assert oauth.issue(key, 'bob', scope=['mail', 'other mail'], lifetime=60, now=NOW).count('.') == 2
    assert oauth.claims_unverified(oauth.issue(key, 'bob', scope=['mail', 'other mail'], now=NOW))['scope'] == \
        'mail other'


def test_a_good_token_verifies(key):
    assert oauth.verify(key, oauth.issue(key, 'alice', now=NOW), 'alice', now=NOW + 10) == (True, None)
    assert oauth.verify(key, signed(key, HEADER, claims()), 'alice', now=NOW) == (True, None)
    assert oauth.verify(key, signed(key, HEADER, claims(aud=['other', 'mail'])), 'alice', now=NOW) == (True, None)
    assert oauth.verify(key, oauth.issue(key, 'alice', 'openid mail', now=NOW), None, now=NOW) == (True, None)


@pytest.mark.parametrize('make, now, status, reason', [
    (lambda k: oauth.issue(k, 'alice', now=NOW), NOW + 3600, 'invalid_token', 'expired'),
    (lambda k: oauth.issue(k, 'alice', lifetime=-1, now=NOW), NOW, 'invalid_token', 'expired'),
    (lambda k: oauth.issue(k, 'alice', now=NOW), NOW - 1, 'invalid_token', 'not_yet_valid'),
    (lambda k: signed(k, HEADER, claims(nbf=NOW + 100)), NOW, 'invalid_token', 'not_yet_valid'),
    (lambda k: oauth.issue(k, 'alice', scope='openid', now=NOW), NOW, 'insufficient_scope', 'wrong_scope'),
    (lambda k: signed(k, HEADER, claims(scope=None)), NOW, 'insufficient_scope', 'wrong_scope'),
    (lambda k: oauth.issue(k, 'bob', now=NOW), NOW, 'invalid_token', 'wrong_user'),
    (lambda k: oauth.issue(oauth.make_key(), 'alice', now=NOW), NOW, 'invalid_token', 'bad_signature'),
    (lambda k: oauth.issue(k, 'alice', now=NOW)[:-2] + 'AA', NOW, 'invalid_token', 'bad_signature'),
    (lambda k: signed(k, HEADER, claims(iss='elsewhere')), NOW, 'invalid_token', 'wrong_issuer'),
    (lambda k: signed(k, HEADER, claims(aud='imap')), NOW, 'invalid_token', 'wrong_audience'),
    (lambda k: signed(k, dict(HEADER, alg='none'), claims()), NOW, 'invalid_token', 'unsupported_algorithm'),
    (lambda k: signed(k, dict(HEADER, alg='HS512'), claims()), NOW, 'invalid_token', 'unsupported_algorithm'),
    (lambda k: signed(k, dict(HEADER, kid='other'), claims()), NOW, 'invalid_token', 'unknown_key'),
    (lambda k: signed(k, HEADER, claims(exp=None)), NOW, 'invalid_token', 'malformed'),
    (lambda k: signed(k, HEADER, claims(exp='soon')), NOW, 'invalid_token', 'malformed'),
    (lambda k: 'not-a-token', NOW, 'invalid_token', 'malformed'),
    (lambda k: 'a.b.c', NOW, 'invalid_token', 'malformed'),
    (lambda k: '%s.%s.' % (segment(HEADER), segment(claims())), NOW, 'invalid_token', 'malformed'),
    (lambda k: '%s.%s.sig' % (segment(HEADER), b64url(b'[1, 2]')), NOW, 'invalid_token', 'malformed'),
    (lambda k: '', NOW, 'invalid_token', 'malformed'),
], ids=['expired-at-exp', 'expired', 'before-iat', 'before-nbf', 'wrong-scope', 'no-scope', 'wrong-user',
        'other-key', 'tampered-signature', 'wrong-issuer', 'wrong-audience', 'alg-none', 'alg-hs512', 'unknown-kid',
        'no-exp', 'exp-not-number', 'not-jwt', 'not-base64-json', 'empty-signature', 'claims-not-object', 'empty'])
def test_a_bad_token_is_refused_with_its_reason(key, make, now, status, reason):
    expected = {'status': status, 'scope': 'mail', 'reason': reason}
    assert oauth.verify(key, make(key), 'alice', now=now) == (False, expected)


def test_key_files_are_base64_and_private(tmp_path, key):
    path = tmp_path / 'key'
    oauth.save_key(path, key)
    assert path.read_text() == base64.b64encode(key).decode()  # Dovecot's key dict format, no newline
    assert path.stat().st_mode & 0o777 == 0o600
    assert oauth.load_key(path) == key
    path.write_text('not base64 at all!')
    with pytest.raises(ValueError, match='base64'):
        oauth.load_key(path)


# -- SASL messages ---------------------------------------------------------------------------------

def test_sasl_messages_parse_back():
    assert oauth.xoauth2_message('alice', 'tok') == b'user=alice\x01auth=Bearer tok\x01\x01'
    assert oauth.parse_xoauth2(b'user=alice\x01auth=Bearer tok\x01\x01') == ('alice', 'tok')
    message = oauth.oauthbearer_message('a,b=c', 'tok', '127.0.0.1', 143)
    assert message == b'n,a=a=2Cb=3Dc,\x01host=127.0.0.1\x01port=143\x01auth=Bearer tok\x01\x01'
    assert oauth.parse_oauthbearer(message) == ('a,b=c', 'tok', {'host': '127.0.0.1', 'port': '143',
                                                                 'auth': 'Bearer tok'})
    assert oauth.parse_oauthbearer(b'n,,\x01auth=bearer tok\x01\x01')[:2] == (None, 'tok')


@pytest.mark.parametrize('parse, data', [
    (oauth.parse_xoauth2, b'user=alice\x01auth=Bearer tok\x01'),
    (oauth.parse_xoauth2, b'user=alice\x01auth=Basic tok\x01\x01'),
    (oauth.parse_xoauth2, b'auth=Bearer tok\x01\x01'),
    (oauth.parse_xoauth2, b'\xff\xfe'),
    (oauth.parse_oauthbearer, b'p=tls-unique,,\x01auth=Bearer tok\x01\x01'),
    (oauth.parse_oauthbearer, b'n,a=alice,\x01host=h\x01\x01'),
    (oauth.parse_oauthbearer, b'n,b=alice,\x01auth=Bearer tok\x01\x01'),
    (oauth.parse_oauthbearer, b'\x01'),
    (oauth.parse_oauthbearer, b'user=alice\x01auth=Bearer tok\x01\x01'),
])
def test_malformed_sasl_messages_raise(parse, data):
    with pytest.raises(oauth.SaslError):
        parse(data)


# -- the token endpoint ----------------------------------------------------------------------------

CLIENTS = {'monitor': (GOOD_SECRET, 'alice', ('mail', 'openid')), 'other': oauth.Client('other-secret', 'bob')}


@pytest.fixture(scope='module')
def endpoint(key):
    with oauth.TokenEndpoint(key, CLIENTS) as running:
        yield running


def post(url, form, auth=None, content_type='application/x-www-form-urlencoded', raw=None):
    headers = {'Content-Type': content_type}
    if auth is not None:
        headers['Authorization'] = 'Basic ' + b64(auth.encode())
    data = raw if raw is not None else urllib.parse.urlencode(form).encode()
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, dict(e.headers), json.loads(e.read())


def basic(client_id, secret):
    quote = urllib.parse.quote_plus
    return '%s:%s' % (quote(client_id), quote(secret))


def test_client_secret_basic(endpoint, key):
    status, headers, body = post(endpoint.url, {'grant_type': 'client_credentials', 'scope': 'mail'},
                                 auth=basic('monitor', GOOD_SECRET))
    assert status == 200
    assert headers['Cache-Control'] == 'no-store'
    assert headers['Content-Type'].startswith('application/json')
    assert set(body) == {'access_token', 'token_type', 'expires_in', 'scope'}
    assert (body['token_type'], body['expires_in'], body['scope']) == ('Bearer', 3600, 'mail')
    assert oauth.verify(key, body['access_token'], 'alice') == (True, None)


def test_client_secret_post_and_the_default_scope(endpoint, key):
    status, _headers, body = post(endpoint.url, {'grant_type': 'client_credentials', 'client_id': 'other',
                                                 'client_secret': 'other-secret'})
    assert status == 200 and body['scope'] == 'mail'  # the client's first scope
    assert oauth.verify(key, body['access_token'], 'bob') == (True, None)
    status, _headers, body = post(endpoint.url, {'grant_type': 'client_credentials', 'client_id': 'monitor',
                                                 'client_secret': GOOD_SECRET, 'scope': 'openid mail openid'})
    assert status == 200 and body['scope'] == 'openid mail'
    assert oauth.verify(key, body['access_token'], 'alice') == (True, None)


@pytest.mark.parametrize('form, auth, status, error', [
    ({'grant_type': 'client_credentials'}, basic('monitor', 'wrong'), 401, 'invalid_client'),
    ({'grant_type': 'client_credentials', 'client_id': 'monitor', 'client_secret': 'wrong'}, None, 401,
     'invalid_client'),
    ({'grant_type': 'client_credentials'}, basic('nobody', GOOD_SECRET), 401, 'invalid_client'),
    ({'grant_type': 'client_credentials'}, None, 401, 'invalid_client'),
    ({'grant_type': 'password'}, basic('monitor', GOOD_SECRET), 400, 'unsupported_grant_type'),
    ({}, basic('monitor', GOOD_SECRET), 400, 'invalid_request'),
    ({'grant_type': 'client_credentials', 'scope': 'mail admin'}, basic('monitor', GOOD_SECRET), 400,
     'invalid_scope'),
    ({'grant_type': 'client_credentials', 'client_id': 'monitor', 'client_secret': GOOD_SECRET},
     basic('monitor', GOOD_SECRET), 400, 'invalid_request'),
], ids=['basic-wrong-secret', 'post-wrong-secret', 'unknown-client', 'no-client-auth', 'unsupported-grant',
        'no-grant-type', 'invalid-scope', 'two-auth-methods'])
def test_token_errors_are_rfc6749(endpoint, form, auth, status, error):
    got_status, headers, body = post(endpoint.url, form, auth=auth)
    assert (got_status, body['error']) == (status, error)
    assert body['error_description']
    assert GOOD_SECRET not in json.dumps(body) and 'wrong' not in json.dumps(body)
    if status == 401:
        assert headers['WWW-Authenticate'] == 'Basic realm="mailops-lab"'


def test_token_endpoint_rejects_odd_requests(endpoint):
    auth = basic('monitor', GOOD_SECRET)
    assert post(endpoint.url, {'grant_type': 'client_credentials'}, auth=auth,
                content_type='application/json')[2]['error'] == 'invalid_request'
    assert post(endpoint.url, None, auth=auth, raw=b'grant_type=client_credentials&grant_type=x')[2][
        'error'] == 'invalid_request'
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(endpoint.url, timeout=5)
    assert info.value.code == 405 and info.value.headers['Allow'] == 'POST'
    info.value.close()
    document = json.loads(urllib.request.urlopen(endpoint.openid_configuration, timeout=5).read())
    assert document['token_endpoint'] == endpoint.url
    assert document['grant_types_supported'] == ['client_credentials']


def test_token_endpoint_over_tls(tmp_path, key):
    certs = LabCerts(tmp_path)
    with oauth.TokenEndpoint(key, CLIENTS, ssl_context=certs.server_context()) as tls:
        assert tls.url.startswith('https://127.0.0.1:')
        request = urllib.request.Request(tls.url, data=b'grant_type=client_credentials', headers={
            'Content-Type': 'application/x-www-form-urlencoded',
            'Authorization': 'Basic ' + b64(basic('other', 'other-secret').encode())})
        context = ssl.create_default_context(cafile=str(certs.ca_path))
        with urllib.request.urlopen(request, timeout=5, context=context) as response:
            assert json.loads(response.read())['token_type'] == 'Bearer'


def test_oauth_cli_make_key_issue_and_serve(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = [sys.executable, '-m', 'lab.embedded.oauth']
    key_file, clients_file = tmp_path / 'key', tmp_path / 'clients.json'
    subprocess.run(cli + ['make-key', '--key-file', str(key_file)], check=True, cwd=ROOT, env=env)
    key = oauth.load_key(key_file)
    token = subprocess.run(cli + ['issue', '--key-file', str(key_file), '--user', 'bob'], check=True, cwd=ROOT,
                           env=env, capture_output=True, text=True).stdout.strip()
    assert oauth.verify(key, token, 'bob') == (True, None)
    clients_file.write_text(json.dumps({'mon': {'secret': 's3', 'username': 'bob', 'scopes': ['mail']}}))
    with subprocess.Popen(cli + ['serve', '--key-file', str(key_file), '--clients-file', str(clients_file)], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            url = proc.stdout.readline().strip()
            assert url.startswith('http://127.0.0.1:') and url.endswith('/token')
            status, _headers, body = post(url, {'grant_type': 'client_credentials'}, auth='mon:s3')
            assert status == 200 and oauth.verify(key, body['access_token'], 'bob') == (True, None)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert err == ''  # no runpy warning: nothing imports oauth.py before it runs as __main__


def test_embedded_lab_cli_with_an_oauth_key_file(tmp_path):
    key_file = tmp_path / 'key'
    oauth.save_key(key_file, oauth.make_key())
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with subprocess.Popen([sys.executable, '-m', 'lab.embedded', '--oauth-key-file', str(key_file)], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            info = json.loads(proc.stdout.readline())
            lines = [proc.stdout.readline() for _port in range(len(info['ports']) + 2)]
            assert info['oauth']['key'] == key_file.read_text()
            assert lines[-1] == 'OAuth token endpoint: %s\n' % info['oauth']['token_url']
            status, _headers, body = post(info['oauth']['token_url'], {'grant_type': 'client_credentials'},
                                          auth='alice:%s' % info['accounts'][0]['password'])
            assert status == 200
            with smtplib.SMTP(info['host'], info['ports']['smtp_plain'], timeout=5) as client:
                client.ehlo()
                xoauth2 = oauth.xoauth2_message('alice', body['access_token'])
                assert client.docmd('AUTH', 'XOAUTH2 ' + b64(xoauth2))[0] == 235
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0 and 'Traceback' not in err


# -- the embedded lab's servers --------------------------------------------------------------------

def test_the_lab_issues_tokens_and_runs_a_token_endpoint(olab):
    described = olab.describe()['oauth']
    assert described['token_url'] == olab.token_endpoint.url
    assert described['mechanisms'] == ['XOAUTH2', 'OAUTHBEARER'] and described['scope'] == 'mail'
    assert oauth.key_from_text(described['key']) == olab.oauth_key
    token = olab.issue_token('bob')
    assert oauth.verify(olab.oauth_key, token, 'bob') == (True, None)
    status, _headers, body = post(olab.token_endpoint.url, {'grant_type': 'client_credentials'},
                                  auth='bob:%s' % olab.accounts['bob'])
    assert status == 200 and oauth.verify(olab.oauth_key, body['access_token'], 'bob') == (True, None)


def test_without_a_key_nothing_changes(lab):
    assert 'oauth' not in lab.describe() and lab.token_endpoint is None
    with pytest.raises(RuntimeError):
        lab.issue_token('alice')
    with smtplib.SMTP(lab.host, lab.ports['smtp_plain'], timeout=5) as client:
        client.ehlo()
        assert client.esmtp_features['auth'].split() == ['CRAM-MD5', 'LOGIN', 'PLAIN']
        assert client.docmd('AUTH', 'XOAUTH2')[0] == 504
    pop = poplib.POP3(lab.host, lab.ports['pop3_plain'], timeout=5)
    assert 'SASL' not in pop.capa()
    with pytest.raises(poplib.error_proto, match='unknown command'):
        pop._shortcmd('AUTH XOAUTH2')
    pop.quit()
    imap = imaplib.IMAP4(lab.host, lab.ports['imap_plain'], timeout=5)
    assert not {'AUTH=XOAUTH2', 'AUTH=OAUTHBEARER'} & set(imap.capabilities)
    assert imap._simple_command('AUTHENTICATE', 'XOAUTH2', 'dGVzdA==')[0] == 'NO'
    imap.logout()


def test_oauth_faults_need_a_key():
    with pytest.raises(ValueError, match='OAuth key'):
        EmbeddedLab(faults={'imap': ['oauth_echo_token']})
    with pytest.raises(ValueError, match='both decide'):
        EmbeddedLab(oauth_key=b'k', faults={'smtp': ['oauth_no_challenge', 'oauth_bad_challenge']})
    with pytest.raises(ValueError, match='oauth_key'):
        EmbeddedLab(oauth_key='not bytes')


def xoauth2(user, token):
    return b64(oauth.xoauth2_message(user, token))


def oauthbearer(user, token, port=None):
    return b64(oauth.oauthbearer_message(user, token, '127.0.0.1' if port else None, port))


def xoauth2_json(status='401'):
    return b'{"status":"%s","schemes":"Bearer","scope":"mail"}' % status.encode()


def oauthbearer_json(lab, status='invalid_token'):
    return ('{"status":"%s","scope":"mail","openid-configuration":"%s"}'
            % (status, lab.token_endpoint.openid_configuration)).encode()


def smtp_client(lab, variant='smtp_plain'):
    client = smtplib.SMTP(lab.host, lab.ports[variant], timeout=5)
    client.ehlo()
    return client


def test_smtp_advertises_and_accepts_both_mechanisms(olab):
    token = olab.issue_token('alice')
    with smtp_client(olab) as client:
        assert client.esmtp_features['auth'].split() == ['CRAM-MD5', 'LOGIN', 'OAUTHBEARER', 'PLAIN', 'XOAUTH2']
        answer = client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', token))
        assert answer == (235, b'2.7.0 Authentication successful')
    with smtp_client(olab, 'smtp') as client:  # no initial response: an empty challenge asks for it
        client.starttls(context=ssl.create_default_context(cafile=olab.ca_path))
        client.ehlo()
        assert client.docmd('AUTH', 'OAUTHBEARER') == (334, b'')
        assert client.docmd(oauthbearer('alice', token, olab.ports['smtp']))[0] == 235
    with smtp_client(olab) as client:  # no authzid: the token's sub is the user
        assert client.docmd('AUTH', 'OAUTHBEARER ' + oauthbearer(None, olab.issue_token('bob')))[0] == 235


def test_smtp_bad_token_gets_the_json_challenge_then_535(olab):
    with smtp_client(olab) as client:
        code, challenge = client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', 'not-a-token'))
        assert (code, base64.b64decode(challenge)) == (334, xoauth2_json())
        assert client.docmd('') == (535, b'5.7.8 Authentication credentials invalid')
    with smtp_client(olab) as client:
        expired = olab.issue_token('alice', lifetime=-1)
        code, challenge = client.docmd('AUTH', 'OAUTHBEARER ' + oauthbearer('alice', expired, 25))
        assert (code, base64.b64decode(challenge)) == (334, oauthbearer_json(olab))
        assert client.docmd('AQ==') == (535, b'5.7.8 Authentication credentials invalid')
        # A failed login leaves the session usable: a good token works next.
        assert client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', olab.issue_token('alice')))[0] == 235


def test_smtp_challenge_statuses_and_odd_answers(olab):
    with smtp_client(olab) as client:
        _code, challenge = client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', olab.issue_token('alice', 'openid')))
        assert base64.b64decode(challenge) == xoauth2_json('403')  # wrong scope
        assert client.docmd('AQ==')[0] == 501  # XOAUTH2 wants an empty answer
        _code, challenge = client.docmd('AUTH', 'XOAUTH2 ' + b64(b'no pairs here'))
        assert base64.b64decode(challenge) == xoauth2_json('400')  # not an XOAUTH2 message
        assert client.docmd('*') == (501, b'5.7.0 Auth aborted')
        _code, challenge = client.docmd('AUTH', 'OAUTHBEARER ' + oauthbearer('bob', olab.issue_token('alice')))
        assert base64.b64decode(challenge) == oauthbearer_json(olab)  # a token for someone else
        assert client.docmd('')[0] == 501  # OAUTHBEARER wants %x01
        _code, challenge = client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('nobody', olab.issue_token('nobody')))
        assert base64.b64decode(challenge) == xoauth2_json()  # no such account
        assert client.docmd('')[0] == 535
        assert client.docmd('AUTH', 'XOAUTH2 not*base64')[0] == 501


def test_pop3_auth(olab):
    token = olab.issue_token('rt01')
    pop = poplib.POP3(olab.host, olab.ports['pop3_plain'], timeout=5)
    assert pop.capa()['SASL'] == ['XOAUTH2', 'OAUTHBEARER']
    pop._putcmd('AUTH')
    assert pop._getlongresp()[1] == [b'XOAUTH2', b'OAUTHBEARER']
    assert pop._shortcmd('AUTH XOAUTH2') == b'+ '
    assert pop._shortcmd(xoauth2('rt01', 'bad-token')) == b'+ ' + b64(xoauth2_json()).encode()
    with pytest.raises(poplib.error_proto, match=r'-ERR \[AUTH\] Authentication failed\.'):
        pop._shortcmd('')
    assert pop._shortcmd('AUTH OAUTHBEARER ' + oauthbearer('rt01', token)).startswith(b'+OK maildrop locked')
    assert pop.stat() == (0, 0)
    with pytest.raises(poplib.error_proto, match='not valid in this state'):
        pop._shortcmd('AUTH XOAUTH2')
    pop.quit()


def test_pop3_oauthbearer_failure_and_odd_answers(olab):
    pop = poplib.POP3(olab.host, olab.ports['pop3_plain'], timeout=5)
    challenge = pop._shortcmd('AUTH OAUTHBEARER ' + oauthbearer('rt02', olab.issue_token('rt02', lifetime=-1)))
    assert base64.b64decode(challenge[2:]) == oauthbearer_json(olab)
    with pytest.raises(poplib.error_proto, match=r'^b?.?-ERR \[AUTH\]'):
        pop._shortcmd('AQ==')
    pop._shortcmd('AUTH XOAUTH2 ' + xoauth2('rt02', 'bad'))
    with pytest.raises(poplib.error_proto, match='Invalid response to the OAuth error challenge'):
        pop._shortcmd('AQ==')
    pop._shortcmd('AUTH XOAUTH2')
    with pytest.raises(poplib.error_proto, match='aborted'):
        pop._shortcmd('*')
    with pytest.raises(poplib.error_proto, match='unsupported'):
        pop._shortcmd('AUTH GSSAPI')
    assert pop._shortcmd('AUTH XOAUTH2 ' + xoauth2('rt02', olab.issue_token('rt02'))).startswith(b'+OK')
    pop.quit()


def imap_client(lab, variant='imap_plain'):
    return imaplib.IMAP4(lab.host, lab.ports[variant], timeout=5)


class RawImap:
    """Line by line, for what imaplib cannot send (a SASL-IR exchange that gets a challenge)."""

    def __init__(self, lab, variant='imap_plain'):
        self.sock = socket.create_connection((lab.host, lab.ports[variant]), timeout=5)
        self.file = self.sock.makefile('rb')
        self.greeting = self.file.readline()

    def send(self, line):
        self.sock.sendall(line.encode() + b'\r\n')
        return self.file.readline()

    def close(self):
        self.file.close()
        self.sock.close()


def test_imap_sasl_ir_and_continuations(olab):
    imap = imap_client(olab)
    assert {'AUTH=XOAUTH2', 'AUTH=OAUTHBEARER', 'SASL-IR'} <= set(imap.capabilities)
    typ, data = imap._simple_command('AUTHENTICATE', 'XOAUTH2', xoauth2('alice', olab.issue_token('alice')))
    assert typ == 'OK'
    imap.state = 'AUTH'  # imaplib moves it only in authenticate(), which has no SASL-IR
    assert imap.select('INBOX')[0] == 'OK'
    imap.logout()
    imap = imap_client(olab)
    seen = []
    answers = iter([oauth.oauthbearer_message('bob', olab.issue_token('bob'), '127.0.0.1', 143)])
    assert imap.authenticate('OAUTHBEARER', lambda challenge: seen.append(challenge) or next(answers))[0] == 'OK'
    assert seen == [b'']
    imap.logout()


@pytest.mark.parametrize('mechanism, message, dummy, expected', [
    ('XOAUTH2', lambda lab: oauth.xoauth2_message('alice', 'bad'), b'', lambda lab: xoauth2_json()),
    ('OAUTHBEARER', lambda lab: oauth.oauthbearer_message('alice', lab.issue_token('alice', 'openid')), b'\x01',
     lambda lab: oauthbearer_json(lab, 'insufficient_scope')),
])
def test_imap_bad_token_gets_the_json_challenge_then_no(olab, mechanism, message, dummy, expected):
    imap = imap_client(olab)
    challenges = []
    answers = iter([message(olab), dummy])
    with pytest.raises(imaplib.IMAP4.error, match=r'\[AUTHENTICATIONFAILED\] Authentication failed\.'):
        imap.authenticate(mechanism, lambda challenge: challenges.append(challenge) or next(answers))
    assert challenges == [b'', expected(olab)]
    imap.logout()
    raw = RawImap(olab)  # the same with SASL-IR
    assert raw.send('a1 AUTHENTICATE %s %s' % (mechanism, b64(message(olab)))) == b'+ %s\r\n' % b64(
        expected(olab)).encode()
    assert raw.send(b64(dummy)) == b'a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n'
    raw.close()


def test_imap_odd_answers_and_the_tls_rule(olab):
    imap = imap_client(olab)
    answers = iter([oauth.xoauth2_message('alice', 'bad'), b'\x01'])
    with pytest.raises(imaplib.IMAP4.error, match='Invalid response to the OAuth error challenge'):
        imap.authenticate('XOAUTH2', lambda challenge: next(answers))
    imap.logout()
    imap = imap_client(olab, 'imap')  # LOGINDISABLED before STARTTLS: bearer tokens wait for TLS as PLAIN does
    assert 'AUTH=XOAUTH2' not in imap.capabilities
    typ, data = imap._simple_command('AUTHENTICATE', 'XOAUTH2', xoauth2('alice', olab.issue_token('alice')))
    assert typ == 'NO' and b'PRIVACYREQUIRED' in data[0]
    imap.starttls(ssl_context=ssl.create_default_context(cafile=olab.ca_path))
    assert {'AUTH=XOAUTH2', 'AUTH=OAUTHBEARER'} <= set(imap.capabilities)
    assert imap._simple_command('AUTHENTICATE', 'XOAUTH2', xoauth2('alice', olab.issue_token('alice')))[0] == 'OK'
    imap.logout()


def test_auth_faults_reject_good_tokens_through_the_challenge():
    with EmbeddedLab(oauth_key=oauth.make_key(), faults={'smtp_plain': ['auth_535'],
                                                         'imap_plain': ['authenticate_no']}) as lab:
        with smtp_client(lab) as client:
            code, challenge = client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', lab.issue_token('alice')))
            assert (code, base64.b64decode(challenge)) == (334, xoauth2_json())
            assert client.docmd('')[0] == 535
        imap = imap_client(lab)
        answers = iter([oauth.xoauth2_message('alice', lab.issue_token('alice')), b''])
        with pytest.raises(imaplib.IMAP4.error, match='AUTHENTICATIONFAILED'):
            imap.authenticate('XOAUTH2', lambda challenge: next(answers))
        imap.logout()


def test_fault_oauth_echo_token():
    faults = {v: ['oauth_echo_token'] for v in ('smtp_plain', 'pop3_plain', 'imap_plain')}
    with EmbeddedLab(oauth_key=oauth.make_key(), faults=faults) as lab:
        token = lab.issue_token('alice', lifetime=-1)
        with smtp_client(lab) as client:
            client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', token))
            assert client.docmd('') == (535, ('5.7.8 Authentication credentials invalid: token %s rejected'
                                              % token).encode())
        pop = poplib.POP3(lab.host, lab.ports['pop3_plain'], timeout=5)
        pop._shortcmd('AUTH XOAUTH2 ' + xoauth2('alice', token))
        with pytest.raises(poplib.error_proto) as info:
            pop._shortcmd('')
        assert info.value.args[0] == ('-ERR [AUTH] Authentication failed: token %s rejected' % token).encode()
        pop.quit()
        imap = imap_client(lab)
        answers = iter([oauth.oauthbearer_message('alice', token), b'\x01'])
        with pytest.raises(imaplib.IMAP4.error, match='token %s rejected' % token):
            imap.authenticate('OAUTHBEARER', lambda challenge: next(answers))
        imap.logout()


def test_fault_oauth_no_challenge_and_bad_challenge():
    faults = {'smtp_plain': ['oauth_no_challenge'], 'pop3_plain': ['oauth_bad_challenge'],
              'imap_plain': ['oauth_bad_challenge']}
    with EmbeddedLab(oauth_key=oauth.make_key(), faults=faults) as lab:
        with smtp_client(lab) as client:
            assert client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', 'bad'))[0] == 535  # at once
            assert client.docmd('AUTH', 'XOAUTH2 ' + xoauth2('alice', lab.issue_token('alice')))[0] == 235
        pop = poplib.POP3(lab.host, lab.ports['pop3_plain'], timeout=5)
        assert pop._shortcmd('AUTH XOAUTH2 ' + xoauth2('alice', 'bad')) == b'+ oauth error: token rejected'
        with pytest.raises(poplib.error_proto, match='Authentication failed'):
            pop._shortcmd('')
        pop.quit()
        raw = RawImap(lab)
        assert raw.send('a1 AUTHENTICATE OAUTHBEARER ' + oauthbearer('alice', 'bad')) == \
            b'+ oauth error: token rejected\r\n'
        assert raw.send('AQ==') == b'a1 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n'
        assert raw.send('a2 AUTHENTICATE OAUTHBEARER ' + oauthbearer('alice', 'bad')) == \
            b'+ oauth error: token rejected\r\n'
        assert raw.send('') == b'a2 BAD Invalid response to the OAuth error challenge\r\n'  # not %x01
        raw.close()
        assert lab.describe()['faults']['smtp_plain'] == ['oauth_no_challenge']


def test_a_slow_client_does_not_hold_the_token_endpoint(olab):
    """The endpoint serves each request in its own thread: a client that connects and says nothing does not
    stop the next one."""
    with socket.create_connection((olab.host, olab.token_endpoint.port), timeout=5):
        started = time.monotonic()
        status, _headers, _body = post(olab.token_endpoint.url, {'grant_type': 'client_credentials'},
                                       auth='alice:%s' % olab.accounts['alice'])
        assert status == 200 and time.monotonic() - started < 2
