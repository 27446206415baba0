"""Hypothesis against hostile servers: whatever an SMTP or POP3 server sends, the probe core
returns a result with status up/warning or raises ProbeError (a known stage, host:port in the
message), within its time budget, and never shows the password: not in the error message, not in
any string of the result, in no form the client sends it in (base64, the AUTH PLAIN payload, the
APOP digest) and not 8 characters of one in a row, even when the server quotes them back (it is
told the secrets), across the byte where an over-long line is cut too.

FUZZ_EXAMPLES (default 500) is the total number of examples, split 40/30/30 between smtp_check,
pop3_check and mail_roundtrip. `make fuzz` runs 10,000. Every run draws a random seed (FUZZ_SEED
repeats a run); the seed and the counts of the run are printed in the terminal summary
(conftest.py), a failure also prints a @reproduce_failure blob, and the example database
(.hypothesis/) replays the failure first on the next run.
"""

import base64
import os
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check
from ansible_collections.mailops.health.plugins.module_utils._probe import STAGES, ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check
from lab.embedded.certs import LabCerts

from hostile_server import RUN, STALL_CAP, STATS, HostileServer, Script, apop_digest, secret_forms
from hostile_strategies import mostly, pop3_persona, pop3_script, smtp_persona, smtp_script

TOTAL = int(os.environ.get('FUZZ_EXAMPLES') or 500)
SMTP_EXAMPLES = max(1, TOTAL * 4 // 10)
POP3_EXAMPLES = max(1, TOTAL * 3 // 10)
ROUNDTRIP_EXAMPLES = max(1, TOTAL - SMTP_EXAMPLES - POP3_EXAMPLES)
# One seed for every fuzz module of the run (test_input_fuzz.py takes the same).
SEED = RUN.setdefault('seed', int(os.environ.get('FUZZ_SEED') or random.SystemRandom().randrange(2 ** 32)))
SLACK = 2.0
# A probe still running this long after its budget is reported as a hang (and left behind).
HANG_AFTER = 10.0

USERNAME = 'fuzz-user'
SMTP_PASSWORD = 'Smtp-S3cret-marker-7f3a9c'
POP3_PASSWORD = 'Pop3-S3cret-marker-51be07'


def _b64(text):
    return base64.b64encode(text.encode('utf-8')).decode('ascii')


# What may never be shown: the passwords and the encodings the client sends them in (the APOP
# digests are added per example, for the timestamps the servers handed out).
SMTP_SECRETS = [SMTP_PASSWORD, _b64(SMTP_PASSWORD), _b64('\0%s\0%s' % (USERNAME, SMTP_PASSWORD))]
POP3_SECRETS = [POP3_PASSWORD, _b64(POP3_PASSWORD)]
SECRETS = SMTP_SECRETS + POP3_SECRETS
# What the hostile servers may quote back (by form name, see hostile_server.SECRET_FORMS).
SERVER_SECRETS = secret_forms(USERNAME, SMTP_PASSWORD, POP3_PASSWORD)
# A secret cut short must not show in part either: no 8 characters of one in a row.
PIECE = 8


def forbidden(secrets):
    """secrets and every PIECE characters in a row of them, but for pieces that a secret this
    probe was not given holds too (a server may show that one: the two passwords share
    '-S3cret-marker-')."""
    others = [text.decode('utf-8') for text in SERVER_SECRETS.values() if text.decode('utf-8') not in secrets]
    pieces = set(secrets)
    for secret in secrets:
        pieces.update(piece for piece in (secret[i:i + PIECE] for i in range(len(secret) - PIECE + 1))
                      if not any(piece in other for other in others))
    return sorted(pieces, key=len, reverse=True)


def strings(value):
    """Every string in value (dicts, keys too, lists, tuples)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings(key)
            yield from strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings(item)


FUZZ_SETTINGS = dict(
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                           HealthCheck.large_base_example],
)


@pytest.fixture(scope='module')
def certs(tmp_path_factory):
    return LabCerts(tmp_path_factory.mktemp('fuzz-certs'))


@pytest.fixture(scope='module')
def servers(certs):
    shared = {}  # the token the SMTP side received, for the POP3 side's mailbox
    smtp = HostileServer(certs, shared, SERVER_SECRETS)
    pop3 = HostileServer(certs, shared, SERVER_SECRETS)
    yield smtp, pop3
    smtp.close()
    pop3.close()


def common_params(draw):
    return dict(
        timeout=draw(st.sampled_from([1, 1, 1, 2])),
        validate_certs=draw(st.booleans()),
        allow_cleartext_auth=True,
        transcript=True,
        warning_ms=draw(st.sampled_from([None, None, 0, 60000])),
        critical_ms=None,
    )


tls_modes = st.sampled_from(['none', 'starttls_if_available', 'starttls_if_available', 'starttls'])


@st.composite
def smtp_case(draw):
    params = common_params(draw)
    params.update(
        host='127.0.0.1', tls_mode=draw(tls_modes), smtp_auth=draw(st.sampled_from(['password', 'none'])),
        auth_mechanism=draw(st.sampled_from(['auto', 'plain', 'login', 'cram-md5'])), username=USERNAME,
        password=SMTP_PASSWORD, helo='probe.fuzz.test', send_mail=draw(st.booleans()),
        mail_from='monitor@fuzz.test', mail_to=draw(st.sampled_from([['rcpt@fuzz.test'], 'a@fuzz.test, b@fuzz.test'])),
        subject=None, body=None)
    return params, draw(mostly(False, True)), draw(smtp_persona), draw(smtp_script)


@st.composite
def pop3_case(draw):
    params = common_params(draw)
    params.update(host='127.0.0.1', tls_mode=draw(tls_modes),
                  pop3_auth=draw(st.sampled_from(['password', 'apop', 'none'])), username=USERNAME,
                  password=POP3_PASSWORD)
    return params, draw(pop3_persona), draw(pop3_script)


@st.composite
def roundtrip_case(draw):
    params = common_params(draw)
    params.update(
        smtp_host='127.0.0.1', smtp_tls_mode=draw(tls_modes), smtp_auth=draw(st.sampled_from(['none', 'password'])),
        auth_mechanism=draw(st.sampled_from(['auto', 'plain', 'login', 'cram-md5'])), smtp_username=USERNAME,
        smtp_password=SMTP_PASSWORD, helo='probe.fuzz.test', mail_from='monitor@fuzz.test', mail_to='bob@fuzz.test',
        pop3_host='127.0.0.1', pop3_tls_mode=draw(tls_modes),
        pop3_auth=draw(st.sampled_from(['password', 'apop', 'none'])), pop3_username='bob',
        pop3_password=POP3_PASSWORD, subject_prefix=draw(st.sampled_from(['[health]', '', None])),
        connection_interval=0.05, max_trip_time=1, cleanup_stale=draw(st.booleans()))
    # The first script answers the first POP3 session (before the send), the next ones the
    # mailbox checks after it; the last one repeats.
    # Half the time one side follows its persona plainly, so the other side's faults are met
    # deep in the round trip (after the send, in the mailbox checks).
    clean = st.just(Script([], 'auto'))
    return (params, draw(mostly(False, True)), draw(smtp_persona), draw(st.one_of(clean, smtp_script)),
            draw(pop3_persona), draw(st.lists(st.one_of(clean, pop3_script), min_size=1, max_size=3)))


def watched(call, limit):
    """call() on a worker thread: (result, exception, elapsed s), or hung=True when it is still
    running after limit seconds (the thread is left behind; the run goes on)."""
    box = {}

    def target():
        try:
            box['result'] = call()
        except Exception as e:  # pylint: disable=broad-exception-caught
            box['error'] = e  # handed back to the test thread below

    thread = threading.Thread(target=target, name='fuzz-probe')
    thread.daemon = True
    start = time.monotonic()
    thread.start()
    thread.join(limit)
    return box.get('result'), box.get('error'), time.monotonic() - start, thread.is_alive()


def exercise(name, call, budget, servers, timeout, secrets, apop=False):
    """Run one probe against loaded hostile servers and check every property; secrets are the
    ones this probe was given (with apop, the digests of the POP3 password count too)."""
    stats = STATS.setdefault(name, {})
    result, error, elapsed, hung = watched(call, budget + HANG_AFTER)
    idle = all(server.wait_idle(STALL_CAP + 5) for server in servers)
    lifetimes = [life for server in servers for life in server.lifetimes]
    if hung:
        _count(stats, 'hang', elapsed, budget, lifetimes)
        pytest.fail('hang: the probe was still running %.1f s after it started (budget %.1f s)' % (elapsed, budget))
    if error is not None and not isinstance(error, ProbeError):
        _count(stats, 'other exception: %s' % type(error).__name__, elapsed, budget, lifetimes)
        raise error
    problems = []
    if error is not None:
        _count(stats, 'ProbeError(%s)' % error.stage, elapsed, budget, lifetimes)
        texts = [error.message] + list(strings(error.result))
        if error.stage not in STAGES:
            problems.append('unknown stage %r' % error.stage)
        if not any('127.0.0.1:%d' % server.port in error.message for server in servers):
            problems.append('no host:port in the message %r' % error.message)
        if error.result.get('status') != 'down':
            problems.append('error result status %r' % error.result.get('status'))
    else:
        _count(stats, 'returned status=%s' % result.get('status'), elapsed, budget, lifetimes)
        texts = list(strings(result))
        if result.get('status') not in ('up', 'warning'):
            problems.append('status %r' % result.get('status'))
    harness = [e for server in servers for e in server.errors]
    assert not harness, 'hostile server failed: %s' % harness
    assert not problems, problems
    assert elapsed <= budget, 'took %.2f s, budget %.2f s' % (elapsed, budget)
    # With pop3_auth=apop the APOP digest of every greeting's timestamp, from the greeting on. Whole
    # only: the half of a digest that the greeting bringing its timestamp puts before the line cut
    # shows (test_faults.py: test_apop_digest_across_the_cut_of_the_banner, xfail).
    digests = []
    if apop:
        digests = [apop_digest(stamp, POP3_PASSWORD) for stamp in servers[-1].shared.get('timestamps', [])]
    for secret in forbidden(secrets) + digests:
        for text in texts:
            at = text.find(secret)
            assert at < 0, 'secret %r shown in ...%r...' % (secret, text[max(0, at - 100):at + len(secret) + 100])
    assert idle, 'a connection was still open %s s after the call returned' % (STALL_CAP + 5)
    # Each connection, seen from the server, must end by the session's deadline (+ slack).
    assert all(life <= timeout + SLACK for life in lifetimes), 'connection lifetimes %s' % lifetimes


def _count(stats, outcome, elapsed, budget, lifetimes):
    stats['examples'] = stats.get('examples', 0) + 1
    stats[outcome] = stats.get(outcome, 0) + 1
    stats['over budget'] = stats.get('over budget', 0) + (elapsed > budget)
    stats['max s'] = round(max(elapsed, stats.get('max s', 0)), 2)
    stats['max connection s'] = round(max(lifetimes + [stats.get('max connection s', 0)]), 2)
    stats['total s'] = round(stats.get('total s', 0) + elapsed, 1)


@seed(SEED)
@settings(max_examples=SMTP_EXAMPLES, **FUZZ_SETTINGS)
@given(case=smtp_case())
def test_smtp_check_against_hostile_server(servers, certs, case):
    smtp, _pop3 = servers
    params, check_mode, persona, script = case
    params = dict(params, port=smtp.port, ca_path=str(certs.ca_path))
    smtp.load(persona, [script])
    exercise('smtp_check', lambda: smtp_check(params, check_mode=check_mode), params['timeout'] + SLACK, [smtp],
             params['timeout'], SMTP_SECRETS)


@seed(SEED)
@settings(max_examples=POP3_EXAMPLES, **FUZZ_SETTINGS)
@given(case=pop3_case())
def test_pop3_check_against_hostile_server(servers, certs, case):
    _smtp, pop3 = servers
    params, persona, script = case
    params = dict(params, port=pop3.port, ca_path=str(certs.ca_path))
    pop3.load(persona, [script])
    exercise('pop3_check', lambda: pop3_check(params), params['timeout'] + SLACK, [pop3], params['timeout'],
             POP3_SECRETS, apop=params['pop3_auth'] == 'apop')


@seed(SEED)
@settings(max_examples=ROUNDTRIP_EXAMPLES, **FUZZ_SETTINGS)
@given(case=roundtrip_case())
def test_mail_roundtrip_against_hostile_servers(servers, certs, case):
    smtp, pop3 = servers
    params, check_mode, smtp_who, smtp_steps, pop3_who, pop3_scripts = case
    params = dict(params, smtp_port=smtp.port, pop3_port=pop3.port, ca_path=str(certs.ca_path))
    smtp.load(smtp_who, [smtp_steps])
    pop3.load(pop3_who, pop3_scripts)
    # The first mailbox check (retried while the mailbox is locked, for up to max_trip_time, the
    # last try taking up to 1 s), the SMTP session (up to timeout), then up to max_trip_time of
    # mailbox checks, the last of which may again start just before the deadline and take 1 s.
    budget = 2 * (params['max_trip_time'] + 1) + params['timeout'] + SLACK
    exercise('mail_roundtrip', lambda: mail_roundtrip(params, check_mode=check_mode), budget, [smtp, pop3],
             params['timeout'], SECRETS, apop=params['pop3_auth'] == 'apop')
