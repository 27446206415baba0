"""The options a mail admin used to swaks, curl and check_tcp reaches for, on every module through
the one connector: tls_server_name, address_family, source_address, tls_min_version, the
certificate day thresholds, SMTP auth_mechanism lists, and the hints a failure gives when the
probe can tell the likely cause. Against the embedded lab and the scripted server (real sockets,
real TLS)."""

import socket
import ssl
import threading

import pytest

from ansible_collections.mailops.health.plugins.module_utils._imap import imap_check
from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check
from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check
from lab.embedded.certs import LabCerts

from .helpers import common, pop3_params, roundtrip_params, smtp_params
from .scripted_server import Script, ScriptedServer, ehlo

CRLF = b'\r\n'


def fails(call, params, stage):
    with pytest.raises(ProbeError) as info:
        call(params)
    assert info.value.stage == stage, info.value.message
    return info.value


# -- tls_server_name ---------------------------------------------------------------------------
def test_tls_server_name_is_what_the_certificate_is_checked_against(lab):
    # The wrong-name certificate names only wrong.invalid: by address it fails, by that name it passes.
    fails(smtp_check, smtp_params(lab, 'smtp_wrongname', 'tls'), 'tls')
    result = smtp_check(smtp_params(lab, 'smtp_wrongname', 'tls', tls_server_name='wrong.invalid'))
    assert result['tls']['verified'] and result['host'] == '127.0.0.1'
    # The good certificate does not name mail.example.com: the name given wins over host.
    error = fails(smtp_check, smtp_params(lab, 'smtp_tls', 'tls', tls_server_name='mail.example.com'), 'tls')
    assert 'certificate verification failed' in error.message


def serve_once(handler):
    """A listener on 127.0.0.1 port 0 serving one connection with handler(conn, peer) in a thread."""
    listener = socket.create_server(('127.0.0.1', 0))
    listener.settimeout(5)

    def serve():
        try:
            conn, peer = listener.accept()
            with conn:
                handler(conn, peer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            listener.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def minimal_smtp(conn):
    conn.sendall(b'220 probe.test ESMTP' + CRLF)
    for reply in (b'250 probe.test', b'221 bye'):
        conn.recv(1024)
        conn.sendall(reply + CRLF)


def test_tls_server_name_reaches_the_server_as_sni(tmp_path):
    certs = LabCerts(tmp_path)
    context = certs.server_context()
    seen = []
    context.sni_callback = lambda sock, name, ctx: seen.append(name)

    def handler(conn, _peer):
        minimal_smtp(context.wrap_socket(conn, server_side=True))
    port, thread = serve_once(handler)
    smtp_check(dict(host='127.0.0.1', port=port, tls_mode='tls', tls_server_name='localhost', smtp_auth='none',
                    timeout=5, helo='probe.test', ca_path=str(certs.ca_path)))
    thread.join(5)
    assert seen == ['localhost']


# -- address_family and source_address ---------------------------------------------------------
def test_address_family_restricts_what_is_tried(lab):
    error = fails(smtp_check, smtp_params(lab, 'smtp', 'starttls', address_family='ipv6'), 'resolve')
    assert 'IPv6' in error.message and 'address_family=ipv6' in error.message
    result = smtp_check(smtp_params(lab, 'smtp', 'starttls', host='localhost', tls_server_name='localhost',
                                    address_family='ipv4'))
    assert result['tls']['established']


def test_source_address_is_the_address_connected_from():
    peers = []
    port, thread = serve_once(lambda conn, peer: (peers.append(peer[0]), minimal_smtp(conn)))
    smtp_check(dict(host='127.0.0.1', port=port, tls_mode='none', smtp_auth='none', timeout=5, helo='probe.test',
                    source_address='127.0.0.2'))
    thread.join(5)
    assert peers == ['127.0.0.2']


@pytest.mark.parametrize('source, family, stage, words', [
    ('192.0.2.1', 'any', 'connect', 'cannot use source_address 192.0.2.1'),   # not an address of this host
    ('::1', 'ipv4', 'input', 'not an address_family=ipv4 address'),
    ('mail.example.com', 'any', 'input', 'source_address must be an IPv4 or IPv6 address'),
])
def test_source_address_errors_say_what(lab, source, family, stage, words):
    error = fails(smtp_check, smtp_params(lab, 'smtp', 'starttls', source_address=source, address_family=family), stage)
    assert words in error.message


# -- tls_min_version ---------------------------------------------------------------------------
class Tls12Certs(LabCerts):
    def server_context(self, kind='good'):
        context = super(Tls12Certs, self).server_context(kind)
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        return context


def test_tls_min_version_fails_at_tls_when_the_server_offers_less(tmp_path):
    certs = Tls12Certs(tmp_path)
    with ScriptedServer(certs, Script('smtp', implicit=True, plain={'EHLO': ehlo('AUTH PLAIN')})) as server:
        params = dict(host='127.0.0.1', port=server.port, tls_mode='tls', smtp_auth='none', timeout=5,
                      helo='probe.test', ca_path=str(certs.ca_path), tls_server_name='localhost')
        assert smtp_check(dict(params, tls_min_version='TLSv1.2'))['tls']['version'] == 'TLSv1.2'
        error = fails(smtp_check, dict(params, tls_min_version='TLSv1.3'), 'tls')
    assert 'tls_min_version TLSv1.3' in error.message


def test_tls_min_version_is_checked_before_connecting(lab):
    fails(smtp_check, smtp_params(lab, 'smtp', 'starttls', tls_min_version='SSLv3'), 'input')


# -- certificate thresholds --------------------------------------------------------------------
@pytest.mark.parametrize('call, params', [
    (smtp_check, lambda lab: smtp_params(lab, 'smtp', 'starttls')),
    (pop3_check, lambda lab: pop3_params(lab, 'pop3_tls', 'tls')),
    (imap_check, lambda lab: common(lab, host=lab.host, port=lab.ports['imap'], tls_mode='starttls', imap_auth='none')),
], ids=['smtp', 'pop3', 'imap'])
def test_certificate_days_thresholds_on_every_protocol(lab, call, params):
    days = call(params(lab))['tls']['days_left']
    assert days > 30
    assert call(dict(params(lab), cert_warning_days=days, cert_critical_days=1))['status'] == 'up'
    result = call(dict(params(lab), cert_warning_days=days + 1))
    assert result['status'] == 'warning'
    assert any('fewer than cert_warning_days %d' % (days + 1) in w for w in result['warnings'])
    error = fails(call, dict(params(lab), cert_critical_days=days + 1), 'certificate')
    assert 'ends in %d days' % days in error.message and error.result['tls']['days_left'] == days


def test_an_expired_certificate_is_critical_even_unverified(lab):
    error = fails(smtp_check, smtp_params(lab, 'smtp_expired', 'tls', validate_certs=False, cert_critical_days=0),
                  'certificate')
    assert error.result['tls']['days_left'] < 0


def test_certificate_warning_on_a_round_trip_is_said_once(lab):
    days = smtp_check(smtp_params(lab, 'smtp', 'starttls'))['tls']['days_left']
    result = mail_roundtrip(roundtrip_params(lab, cert_warning_days=days + 1))
    assert result['status'] == 'warning'
    said = [w for w in result['warnings'] if 'cert_warning_days' in w]
    # One warning per endpoint (SMTP, POP3), however many times the mailbox was visited.
    assert len(said) == 2, said


# -- hints -------------------------------------------------------------------------------------
def test_starttls_mode_against_an_implicit_tls_port_says_so(lab):
    error = fails(smtp_check, smtp_params(lab, 'smtp_tls', 'starttls', timeout=2), 'banner')
    assert 'implicit-TLS port' in error.message and 'tls_mode=tls' in error.message


def test_implicit_tls_against_a_plaintext_port_says_so(lab):
    error = fails(smtp_check, smtp_params(lab, 'smtp_plain', 'tls'), 'tls')
    assert 'answered in plaintext' in error.message and 'STARTTLS tls_mode' in error.message


def test_stls_refused_by_a_server_without_capa_says_so(tmp_path):
    script = Script('pop3', plain={'CAPA': b'-ERR unknown command' + CRLF, 'STLS': b'-ERR not supported' + CRLF})
    with ScriptedServer(LabCerts(tmp_path), script) as server:
        error = fails(pop3_check, dict(host='127.0.0.1', port=server.port, tls_mode='starttls', pop3_auth='none',
                                       timeout=5), 'tls')
    assert 'knows no CAPA' in error.message and 'port 995' in error.message


# -- SMTP auth mechanisms ----------------------------------------------------------------------
def test_auto_makes_one_attempt_and_names_the_other_mechanisms(lab):
    error = fails(smtp_check, smtp_params(lab, 'smtp', 'starttls', smtp_auth='password', password='wrong-password'),
                  'auth')
    assert error.result['auth_tried'] == ['cram-md5']
    assert error.result['auth_mechanism_used'] == 'cram-md5'
    assert 'the server also offers PLAIN' in error.message
    assert error.result['transcript'].count('C: AUTH CRAM-MD5') == 1


def test_a_list_of_mechanisms_is_tried_in_turn(tmp_path):
    # The server refuses every AUTH: both listed mechanisms are tried, in order, on one connection.
    certs = LabCerts(tmp_path)
    script = Script('smtp', plain={'EHLO': ehlo('STARTTLS')},
                    tls={'EHLO': ehlo('AUTH CRAM-MD5 PLAIN'), 'AUTH': b'535 5.7.8 Authentication failed' + CRLF})
    with ScriptedServer(certs, script) as server:
        params = dict(host='127.0.0.1', port=server.port, tls_mode='starttls', smtp_auth='password', username='alice',
                      password='s3cret-pass-word', timeout=5, helo='probe.test', ca_path=str(certs.ca_path),
                      tls_server_name='localhost', auth_mechanism=['cram-md5', 'plain'], transcript=True)
        error = fails(smtp_check, params, 'auth')
    assert error.result['auth_tried'] == ['cram-md5', 'plain']
    assert error.result['auth_mechanism_used'] == 'plain'
    assert [line.split(' ')[:2] for line in server.lines('tls') if line.startswith('AUTH')] == [
        ['AUTH', 'CRAM-MD5'], ['AUTH', 'PLAIN']]


def test_listed_mechanisms_the_server_lacks_are_skipped(lab):
    result = smtp_check(smtp_params(lab, 'smtp', 'starttls', smtp_auth='password', auth_mechanism=['login', 'plain']))
    assert result['auth_tried'] == ['login'] and result['auth_mechanism_used'] == 'login'


@pytest.mark.parametrize('value, words', [(['auto', 'plain'], 'list mechanisms without it'),
                                          (['digest-md5'], 'auth_mechanism must be among')])
def test_bad_mechanism_lists_are_input_errors(lab, value, words):
    error = fails(smtp_check, smtp_params(lab, 'smtp', 'starttls', smtp_auth='password', auth_mechanism=value), 'input')
    assert words in error.message
