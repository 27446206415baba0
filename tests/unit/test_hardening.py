"""The hardening classes, each at its root: no option value can inject a command or reach the
wire unchecked, every output passes one redaction path that knows the client's encodings of a
secret, secrets are masked before anything is cut, and bad input ends at stage input."""

import base64
import socket
import threading

import pytest

from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check
from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError, Secrets
from ansible_collections.mailops.health.plugins.module_utils._session import MASK, MAX_LINE
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check
from ansible_collections.mailops.health.plugins.modules import pop3_check as pop3_module

from .helpers import pop3_params, roundtrip_params, run_module, smtp_params


class Listener:
    """A loopback port that counts connections and bytes: invalid input must send nothing."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.received = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _addr = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(0.5)
            try:
                while True:
                    data = conn.recv(4096)
                    if not data:
                        break
                    self.received += len(data)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def listener():
    running = Listener()
    yield running
    running.close()


def test_password_with_crlf_cannot_delete_foreign_mail(lab, capsys):
    """The injection seen: the right password followed by CRLF DELE 1 deleted a foreign mail."""
    lab.store.clear('alice')
    lab.store.add('alice', b'Subject: not ours\r\n\r\nforeign\r\n')
    args = pop3_params(lab, 'pop3', 'starttls', pop3_auth='password')
    args['password'] = lab.accounts['alice'] + '\r\nDELE 1\r\nQUIT'
    result = run_module(capsys, pop3_module, args)
    assert result['failed'] and result['stage'] == 'input'
    assert 'password must not contain control characters' in result['msg']
    assert len(lab.store.messages('alice')) == 1


@pytest.mark.parametrize('core,params,option', [
    (pop3_check, lambda lab, port: pop3_params(lab, 'pop3', 'none', pop3_auth='apop', port=port), 'username'),
    (smtp_check, lambda lab, port: smtp_params(lab, 'smtp', 'none', port=port, smtp_auth='password'), 'username'),
    (smtp_check, lambda lab, port: smtp_params(lab, 'smtp', 'none', port=port, smtp_auth='password'), 'password'),
    (smtp_check, lambda lab, port: smtp_params(lab, 'smtp', 'none', port=port, send_mail=True, mail_from='a@b.test',
                                               mail_to=['c@d.test']), 'subject'),
    (mail_roundtrip, lambda lab, port: roundtrip_params(lab, smtp_port=port, pop3_port=port), 'subject_prefix'),
    (mail_roundtrip, lambda lab, port: roundtrip_params(lab, smtp_port=port, pop3_port=port), 'pop3_password'),
    (mail_roundtrip, lambda lab, port: roundtrip_params(lab, smtp_port=port, pop3_port=port), 'smtp_host'),
])
@pytest.mark.parametrize('bad', ['\r\nDELE 1', '\n', '\0', '\x0b', '\x85', '\u2028', '\u2029', '\x1b'])
def test_control_characters_in_any_option_send_nothing(lab, listener, core, params, option, bad):
    values = params(lab, listener.port)
    values[option] = (values.get(option) or 'x') + bad + 'QUIT'
    with pytest.raises(ProbeError) as info:
        core(values)
    assert info.value.stage == 'input'
    assert info.value.message.startswith(option + ' ')
    assert listener.connections == 0 and listener.received == 0


@pytest.mark.parametrize('host', ['127.0.0.1\0.evil', 'xn--a.test', 'a..b', 'a' * 64 + '.test', '\u2028', 'ex ample.org',
                                  '[::1]', 'bad_\udcff.test', '127.0.0.1%lo', '::1%', '::1%a b'])
def test_invalid_hosts_fail_at_input(lab, host):
    with pytest.raises(ProbeError) as info:
        pop3_check(pop3_params(lab, 'pop3', 'none', host=host))
    assert info.value.stage == 'input'
    assert 'host' in info.value.message


@pytest.mark.parametrize('host', ['127.0.0.1', '::1', 'fe80::1%lo', 'localhost', 'localhost.', 'b\u00fccher.localhost'])
def test_valid_hosts_pass_input(lab, host):
    """Names and addresses (an IDN too) get past input; a name that does not resolve fails later."""
    try:
        pop3_check(pop3_params(lab, 'pop3', 'none', host=host, timeout=2))
    except ProbeError as e:
        assert e.stage != 'input', e.message


def test_over_long_values_fail_at_input(lab, listener):
    with pytest.raises(ProbeError) as info:
        pop3_check(pop3_params(lab, 'pop3', 'none', pop3_auth='password', port=listener.port, username='u' * 5000))
    assert info.value.stage == 'input' and 'username is longer than 4096' in info.value.message
    assert listener.connections == 0


def test_body_may_hold_line_breaks_but_not_nul(lab):
    params = smtp_params(lab, 'smtp', 'starttls', send_mail=True, mail_from='a@lab.test', mail_to=[lab.address('bob')],
                         body='line one\nline two\r\n.\r\nafter a dot')
    assert smtp_check(params)['sent'] is True
    with pytest.raises(ProbeError) as info:
        smtp_check(dict(params, body='a\0b'))
    assert info.value.stage == 'input' and info.value.message.startswith('body ')


def _secrets(password, user='alice'):
    secrets = Secrets()
    secrets.add_credentials(user, password)
    return secrets


def test_secrets_know_the_encodings_the_client_sends():
    password = 'S3cret-password-for-tests'
    secrets = _secrets(password)
    plain = base64.b64encode(b'\0alice\0' + password.encode()).decode()
    login = base64.b64encode(password.encode()).decode()
    text = 'x %s y %s z %s' % (password, plain, login)
    assert secrets.redact(text) == 'x %s y %s z %s' % (MASK, MASK, MASK)


@pytest.mark.parametrize('offset', [-3000, -1, 0, 1, 100])
def test_a_cut_never_shows_part_of_a_secret(offset):
    """Mask first, then cut: a 4,096-character secret across the cut is masked whole."""
    password = ('p4ss' * 1024)
    secrets = _secrets(password)
    start = MAX_LINE + offset
    line = 'a' * start + password + 'b' * 10
    shown = secrets.cut(line, MAX_LINE)
    assert 'p4ssp4ss' not in shown and 'p4ss' not in shown[-8:]
    truncated = secrets.cut(line[:MAX_LINE + 2000], MAX_LINE, truncated=True)
    assert 'p4ss' not in truncated


def test_an_echoed_over_long_line_shows_no_part_of_the_password(lab):
    """A server line over 64 KiB with the password straddling the cut, read by the real reader."""
    password = ''.join('%04d' % i for i in range(1024))  # 4,096 characters, no repeats
    with socket.socket() as server:
        server.bind(('127.0.0.1', 0))
        server.listen(1)

        def serve():
            conn, _addr = server.accept()
            with conn:
                conn.sendall(b'+OK ' + b'a' * (MAX_LINE - 3000) + password.encode() + b'b' * 70000 + b'\r\n')
                conn.recv(100)
        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        params = pop3_params(lab, 'pop3', 'none', port=server.getsockname()[1], transcript=True, timeout=2)
        params['password'] = password
        try:
            result = pop3_check(params)
        except ProbeError as e:
            result = dict(e.result, msg=e.message)
        thread.join(5)
    shown = repr(result)
    assert not any(password[i:i + 12] in shown for i in range(0, len(password) - 12))
