"""mail_roundtrip_batch: many round trips in one module run against the embedded lab, driven through
main(); and the core's runner (mailbox queues, parallel, one probe's bug) through run_many()."""

import threading
import time

import pytest
from ansible.module_utils import basic

from ansible_collections.mailops.health.plugins.module_utils import _batch
from ansible_collections.mailops.health.plugins.modules import mail_roundtrip_batch

from .helpers import roundtrip_params, run_module
from .test_roundtrip_core import FOREIGN
from .test_safety import probe_mail

MAILBOXES = ('alice', 'bob', 'rt01', 'rt02')
WRONG = 'wrong-password-xyz'


def defaults(lab, **extra):
    """What every probe shares: SMTP AUTH as alice (a password in defaults), APOP on POP3 STLS."""
    values = dict(smtp_host=lab.host, smtp_port=lab.ports['smtp'], smtp_tls_mode='starttls', smtp_auth='password',
                  smtp_username='alice', smtp_password=lab.accounts['alice'], mail_from='monitor@lab.test',
                  pop3_host=lab.host, pop3_port=lab.ports['pop3'], pop3_tls_mode='starttls', pop3_auth='apop',
                  ca_path=lab.ca_path, connection_interval=0.5, max_trip_time=10, timeout=10)
    values.update(extra)
    return values


def probe(lab, user, **extra):
    values = dict(mail_to=lab.address(user), pop3_username=user, pop3_password=lab.accounts[user])
    values.update(extra)
    return values


def mailbox(lab, user):
    return '%s@%s:%d' % (user, lab.host, lab.ports['pop3'])


@pytest.fixture
def boxes(lab):
    """The four mailboxes, emptied and pre-loaded with foreign mail; yields their UIDLs."""
    before = {}
    for user in MAILBOXES:
        lab.store.clear(user)
        before[user] = [lab.store.add(user, raw) for raw in FOREIGN]
    yield before
    for user in MAILBOXES:
        lab.store.clear(user)


@pytest.fixture
def deliveries(lab, monkeypatch):
    """Every mail the lab's SMTP side delivers, by recipient."""
    seen = []
    deliver = lab.store.deliver

    def counting(rcpt, raw):
        seen.append(rcpt)
        return deliver(rcpt, raw)

    monkeypatch.setattr(lab.store, 'deliver', counting)
    return seen


def secrets_of(lab):
    return [lab.accounts[user] for user in MAILBOXES] + [WRONG]


def warning_texts(result):
    """The warnings' texts (ansible-core 2.19 returns each as a structured summary)."""
    return [w['event']['msg'] if isinstance(w, dict) else w for w in result.get('warnings', [])]


def assert_no_secret(lab, text):
    for secret in secrets_of(lab):
        assert secret not in text


def test_twelve_probes_over_four_mailboxes_leave_them_as_they_were(lab, capsys, boxes, deliveries):
    probes = [probe(lab, MAILBOXES[n % 4]) for n in range(12)]
    result = run_module(capsys, mail_roundtrip_batch, dict(defaults=defaults(lab), probes=probes, parallel=4))
    assert result['_rc'] == 0, result['_raw']
    assert (result['ok'], result['failed_count'], result['changed']) == (12, 0, False)
    assert [entry['index'] for entry in result['results']] == list(range(12))
    for n, entry in enumerate(result['results']):
        assert entry['ok'] is True
        assert entry['status'] == 'up'
        assert entry['mailbox'] == mailbox(lab, MAILBOXES[n % 4])
        assert entry['sent'] is True
        assert entry['attempts'] >= 1
        assert entry['trip_time_ms'] >= 0 and entry['total_ms'] > 0
        assert 'stage' not in entry and 'msg' not in entry
    assert len(set(entry['token'] for entry in result['results'])) == 12
    assert sorted(deliveries) == sorted(lab.address(MAILBOXES[n % 4]) for n in range(12))
    assert result['wall_ms'] > 0
    assert result['round_trips_per_minute'] == pytest.approx(12 * 60000.0 / result['wall_ms'], rel=0.01)
    for user in MAILBOXES:
        assert [m.uid for m in lab.store.messages(user)] == boxes[user]
    assert_no_secret(lab, result['_raw'])


def test_invalid_probe_fails_naming_it_before_anything_is_sent(lab, capsys, boxes, deliveries):
    probes = [probe(lab, user) for user in MAILBOXES]
    del probes[3]['pop3_password']
    del probes[1]['mail_to']
    result = run_module(capsys, mail_roundtrip_batch, dict(defaults=defaults(lab), probes=probes))
    assert result['_rc'] == 1
    assert result['stage'] == 'input'
    assert 'probes[3]: receive_protocol is pop3 but any of the following are missing: pop3_password, pop3_oauth2_token' in result['msg']
    assert 'probes[1]: missing required arguments: mail_to' in result['msg']
    assert 'probes[0]' not in result['msg'] and 'probes[2]' not in result['msg']
    assert 'results' not in result
    assert deliveries == []
    assert_no_secret(lab, result['_raw'])


def test_defaults_fill_what_probes_leave_out_and_null_means_not_set(lab, capsys, boxes, deliveries):
    probes = [dict(probe(lab, 'bob'), pop3_host=None), probe(lab, 'rt01', max_trip_time=None)]
    result = run_module(capsys, mail_roundtrip_batch, dict(defaults=defaults(lab), probes=probes))
    assert result['_rc'] == 0, result['_raw']
    assert result['ok'] == 2


@pytest.mark.parametrize('probe_extra,defaults_extra,message', [
    (dict(max_trip_time=0), {}, 'probes[1]: max_trip_time must be between 1 and 3600, got 0'),
    (dict(mail_to='a@lab.test, b@lab.test'), {}, 'probes[1]: mail_to must be exactly one address for a round trip'),
])
def test_invalid_input_in_core_checks(lab, capsys, boxes, deliveries, probe_extra, defaults_extra, message):
    probes = [probe(lab, 'alice'), probe(lab, 'bob', **probe_extra)]
    result = run_module(capsys, mail_roundtrip_batch, dict(defaults=defaults(lab, **defaults_extra), probes=probes))
    assert result['_rc'] == 1
    assert result['stage'] == 'input'
    assert message in result['msg']
    assert deliveries == []
    assert_no_secret(lab, result['_raw'])


@pytest.mark.parametrize('probe_extra,defaults_extra,message', [
    (dict(smtp_tls_mode='startls'), {}, 'value of smtp_tls_mode must be one of: none, starttls, '),
    (dict(pop3_pasword=WRONG), {}, 'probes.pop3_pasword'),
    ({}, dict(smtp_prot=25), 'defaults.smtp_prot'),
    ({}, dict(timeout='soon'), "argument 'timeout' is of type"),
])
def test_types_choices_and_unknown_keys_are_ansibles_own_checks(
        lab, capsys, boxes, deliveries, probe_extra, defaults_extra, message):
    """probes and defaults are declared with suboptions: Ansible refuses them as it refuses any
    module's options, before the module runs, and masks the passwords it knows."""
    probes = [probe(lab, 'alice'), probe(lab, 'bob', **probe_extra)]
    result = run_module(capsys, mail_roundtrip_batch, dict(defaults=defaults(lab, **defaults_extra), probes=probes))
    assert result['_rc'] == 1
    assert message in result['msg']
    assert deliveries == []
    for secret in [lab.accounts[user] for user in MAILBOXES]:
        assert secret not in result['_raw']


@pytest.mark.parametrize('args,message', [
    (dict(probes=[]), 'probes is empty'),
    (dict(parallel=0), 'parallel must be between 1 and 200, got 0'),
    (dict(parallel=201), 'parallel must be between 1 and 200, got 201'),
])
def test_batch_options_are_checked(lab, capsys, boxes, deliveries, args, message):
    module_args = dict(defaults=defaults(lab), probes=[probe(lab, 'bob')])
    module_args.update(args)
    result = run_module(capsys, mail_roundtrip_batch, module_args)
    assert result['_rc'] == 1
    assert result['stage'] == 'input'
    assert message in result['msg']
    assert deliveries == []


def failing_batch(lab):
    probes = [probe(lab, user) for user in MAILBOXES]
    probes[2]['pop3_password'] = WRONG
    return dict(defaults=defaults(lab, transcript=True), probes=probes)


def test_failing_probe_fails_the_task_with_fail_on_any(lab, capsys, boxes, deliveries):
    result = run_module(capsys, mail_roundtrip_batch, failing_batch(lab))
    assert result['_rc'] == 1
    assert result['failed'] is True
    assert result['stage'] == 'login'
    assert result['msg'].startswith('1 of 4 probes failed (fail_on=any): probes[2] (%s) at stage login: pop3 '
                                    % mailbox(lab, 'rt01'))
    assert (result['ok'], result['failed_count']) == (3, 1)
    failed = result['results'][2]
    assert (failed['ok'], failed['status'], failed['stage'], failed['sent']) == (False, 'down', 'login', False)
    assert failed['msg'].startswith('pop3 %s:%d: ' % (lab.host, lab.ports['pop3']))
    assert failed['transcript']  # asked for in defaults; masked like every other output
    assert [entry['ok'] for entry in result['results']] == [True, True, False, True]
    assert len(deliveries) == 3  # the failing probe logged in first and sent nothing
    assert_no_secret(lab, result['_raw'])


def test_fail_on_none_reports_the_failure_and_succeeds(lab, capsys, boxes, deliveries):
    result = run_module(capsys, mail_roundtrip_batch, dict(failing_batch(lab), fail_on='none'))
    assert result['_rc'] == 0
    assert 'failed' not in result
    assert (result['ok'], result['failed_count']) == (3, 1)
    assert result['results'][2]['stage'] == 'login'
    for user in MAILBOXES:
        assert [m.uid for m in lab.store.messages(user)] == boxes[user]
    assert_no_secret(lab, result['_raw'])


def test_fail_on_all_fails_only_when_every_probe_fails(lab, capsys, boxes):
    result = run_module(capsys, mail_roundtrip_batch, dict(failing_batch(lab), fail_on='all'))
    assert result['_rc'] == 0
    assert result['failed_count'] == 1
    result = run_module(capsys, mail_roundtrip_batch, dict(
        defaults=defaults(lab), probes=[probe(lab, 'bob', pop3_password=WRONG)], fail_on='all'))
    assert result['_rc'] == 1
    assert result['msg'].startswith('1 of 1 probes failed (fail_on=all): probes[0]')


def test_passwords_never_reach_output_or_log(lab, capsys, boxes, monkeypatch):
    logged = []
    monkeypatch.setattr(basic, 'has_journal', False)
    monkeypatch.setattr(basic.syslog, 'syslog', lambda *args: logged.append(args[-1]))
    args = failing_batch(lab)
    args['probes'][0]['warning_ms'] = 0.001
    result = run_module(capsys, mail_roundtrip_batch, dict(args, fail_on='none'))
    assert result['_rc'] == 0
    assert any(line.startswith('-- connected to') for line in result['results'][0]['transcript'])
    assert [w for w in warning_texts(result) if w.startswith('probes[0]: total_ms ') and 'above warning_ms' in w]
    assert result['results'][0]['status'] == 'warning'
    # Only the passwords are masked: host and user names stay readable.
    assert result['results'][1]['mailbox'] == mailbox(lab, 'bob')
    assert_no_secret(lab, result['_raw'])
    # The module's log shows the probes with their passwords masked.
    assert logged and "'pop3_username': 'rt02'" in logged[0] and "'pop3_password': '********'" in logged[0]
    assert_no_secret(lab, '\n'.join(logged))


def test_check_mode_logs_in_and_sends_nothing(lab, capsys, boxes, deliveries):
    probes = [probe(lab, MAILBOXES[n % 4]) for n in range(8)]
    result = run_module(capsys, mail_roundtrip_batch, dict(defaults=defaults(lab), probes=probes), check_mode=True)
    assert result['_rc'] == 0, result['_raw']
    assert result['ok'] == 8
    assert result['changed'] is False
    assert all(entry['sent'] is False and entry['total_ms'] > 0 for entry in result['results'])
    assert deliveries == []
    bad = run_module(capsys, mail_roundtrip_batch, failing_batch(lab), check_mode=True)
    assert bad['_rc'] == 1 and bad['stage'] == 'login'  # check mode still logs in
    assert deliveries == []
    for user in MAILBOXES:
        assert [m.uid for m in lab.store.messages(user)] == boxes[user]


def test_changed_only_when_cleanup_stale_deleted_something(lab, capsys, boxes):
    lab.store.add('rt02', probe_mail('0123456789abcdef0123456789abcdef', 3600))
    probes = [probe(lab, 'bob', cleanup_stale=True), probe(lab, 'rt02', cleanup_stale=True)]
    result = run_module(capsys, mail_roundtrip_batch, dict(defaults=defaults(lab), probes=probes))
    assert result['_rc'] == 0, result['_raw']
    assert result['changed'] is True
    assert [entry['stale_deleted'] for entry in result['results']] == [0, 1]
    assert [m.uid for m in lab.store.messages('rt02')] == boxes['rt02']


# -- the runner in the core ---------------------------------------------------------------

class Recorder:
    """Wraps the real mail_roundtrip: when each probe ran, and how many ran at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.spans = {}
        self.running = 0
        self.most = 0
        self.real = _batch.mail_roundtrip

    def __call__(self, params, check_mode=False):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        start = time.monotonic()
        try:
            time.sleep(0.05)  # long enough for the scheduling to show
            if params['subject_prefix'] == 'boom':  # a bug met by this one probe
                raise RuntimeError('boom')
            return self.real(params, check_mode)
        finally:
            with self.lock:
                self.running -= 1
                self.spans[params['subject_prefix']] = (params['pop3_username'], start, time.monotonic())


@pytest.mark.parametrize('parallel', [2, 4])
def test_the_scheduler_runs_a_mailbox_one_probe_at_a_time_and_up_to_parallel_mailboxes(lab, boxes, monkeypatch, parallel):
    recorder = Recorder()
    monkeypatch.setattr(_batch, 'mail_roundtrip', recorder)
    # A mailbox's probes side by side: a runner that ignored mailboxes would run them together.
    probes = [roundtrip_params(lab, user=MAILBOXES[n // 3], subject_prefix='p%d' % n) for n in range(12)]
    batch = _batch.mail_roundtrip_batch(dict(parallel=parallel, fail_on='none'), probes)
    assert batch['ok'] == 12
    assert recorder.most == parallel
    for user in MAILBOXES:
        spans = sorted((start, end) for owner, start, end in recorder.spans.values() if owner == user)
        assert len(spans) == 3
        assert all(earlier[1] <= later[0] for earlier, later in zip(spans, spans[1:]))


def test_the_scheduler_goes_on_after_one_probes_bug(lab, boxes, monkeypatch):
    monkeypatch.setattr(_batch, 'mail_roundtrip', Recorder())
    probes = [roundtrip_params(lab, user=user, subject_prefix='p') for user in MAILBOXES]
    probes[1]['subject_prefix'] = 'boom'
    batch = _batch.mail_roundtrip_batch(dict(parallel=4, fail_on='none'), probes)
    assert (batch['ok'], batch['failed_count']) == (3, 1)
    entry = batch['results'][1]
    assert (entry['ok'], entry['status'], entry['stage'], entry['msg']) == \
        (False, 'down', 'internal', 'internal error: RuntimeError: boom')
