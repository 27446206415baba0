"""retries, retry_delay and retry_warning: a check is tried again after a failure, as monitors do
before they call a service down, and every failed try stays visible."""

import socket
import threading
import time

import pytest

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check

from .helpers import smtp_params


class Flaky:
    """A loopback port that drops its first `drops` connections at once and forwards the others
    to the real server: a service that flaps."""

    def __init__(self, target, drops):
        self.target = target
        self.drops = drops
        self.listener = socket.socket()
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _addr = self.listener.accept()
            except OSError:
                return
            if self.drops > 0:
                self.drops -= 1
                conn.close()
                continue
            upstream = socket.create_connection(self.target)
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    @staticmethod
    def pump(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.listener.close()


@pytest.fixture
def flaky(lab):
    proxies = []

    def make(drops):
        proxy = Flaky((lab.host, lab.ports['smtp']), drops)
        proxies.append(proxy)
        return proxy
    yield make
    for proxy in proxies:
        proxy.close()


def test_a_flapping_service_passes_on_a_later_try_as_a_warning(lab, flaky):
    params = smtp_params(lab, 'smtp', 'starttls', port=flaky(2).port, retries=3, retry_delay=0.05)
    result = smtp_check(params)
    assert result['status'] == 'warning'
    assert result['tries'] == 3
    assert [t['stage'] for t in result['failed_tries']] == ['banner', 'banner']
    assert all('closed the connection' in t['msg'] for t in result['failed_tries'])
    assert any(w.startswith('passed on try 3 after try 1 failed at stage banner') for w in result['warnings'])
    assert sum(line.startswith('-- try ') for line in result['transcript']) == 2


def test_retry_warning_false_reports_up(lab, flaky):
    result = smtp_check(smtp_params(lab, 'smtp', 'starttls', port=flaky(1).port, retries=1, retry_delay=0,
                                    retry_warning=False))
    assert (result['status'], result['tries']) == ('up', 2)
    assert len(result['failed_tries']) == 1


def test_without_retries_one_failure_fails(lab, flaky):
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'starttls', port=flaky(1).port))
    assert info.value.stage == 'banner'
    assert (info.value.result['tries'], info.value.result['failed_tries']) == (1, [])


def test_a_service_that_stays_down_fails_after_every_try(lab, flaky):
    start = time.monotonic()
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'starttls', port=flaky(99).port, retries=2, retry_delay=0.2))
    assert time.monotonic() - start >= 0.4
    assert info.value.result['tries'] == 3
    assert len(info.value.result['failed_tries']) == 2 and info.value.result['status'] == 'down'


def test_invalid_input_is_not_tried_again(lab):
    start = time.monotonic()
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'starttls', helo='bad name', retries=5, retry_delay=10))
    assert info.value.stage == 'input' and time.monotonic() - start < 1


@pytest.mark.parametrize('option,value', [('retries', 11), ('retries', -1), ('retry_delay', 601)])
def test_retry_options_in_range(lab, option, value):
    with pytest.raises(ProbeError) as info:
        smtp_check(smtp_params(lab, 'smtp', 'starttls', **{option: value}))
    assert info.value.stage == 'input' and option in info.value.message
