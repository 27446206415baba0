"""Hypothesis against hostile servers: whatever an SMTP, POP3 or IMAP server sends, the probe core
returns a result with status up/warning or raises ProbeError (a known stage, '<protocol>
127.0.0.1:<port>' of a server it talked to in the message), within its time budget, and never
shows the password: not in the error message, not in any string of the result, in no form the
client sends it in (base64, the AUTH PLAIN payload, the APOP digest, the CRAM-MD5 response) and
not 8 characters of one in a row, even when the server quotes them back (it is told the secrets),
across the byte where an over-long line is cut too.

A server that keeps to the IMAP RFCs in all it does (in the ways real ones differ) must also let
a round trip over IMAP succeed: the one property here that a wrong answer ending in a ProbeError
does not satisfy.

FUZZ_EXAMPLES (default 500) is the total number of examples, split 22/18/18/22/15/5 between
smtp_check, pop3_check, mail_roundtrip over POP3, imap_check, mail_roundtrip over IMAP and
mail_roundtrip against plausible IMAP servers. `make fuzz` runs 10,000. Every run draws a random
seed (FUZZ_SEED repeats a run); the seed and the counts of the run are printed in the terminal
summary (conftest.py), a failure also prints a @reproduce_failure blob, and the example database
(.hypothesis/) replays the failure first on the next run.
"""

import base64
import os
import random
import threading
import time

import pytest
from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st

from ansible_collections.mailops.health.plugins.module_utils._imap import DONE_GRACE, IDLE_FROM, imap_check
from ansible_collections.mailops.health.plugins.module_utils._pop3 import pop3_check
from ansible_collections.mailops.health.plugins.module_utils._probe import STAGES, ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip
from ansible_collections.mailops.health.plugins.module_utils._smtp import smtp_check
from lab.embedded.certs import LabCerts

from hostile_server import (
    AUTO, CRLF, IMAP_DEPTH, RUN, STALL_CAP, STATS, HostileServer, ImapMessage, ImapPersona, Nest, Script, SmtpPersona,
    Step, apop_digest, cram_response, secret_forms,
)
from hostile_strategies import (
    OURS, imap_check_script, imap_persona, imap_roundtrip_script, mostly, pick, plain_imap_persona, pop3_persona,
    pop3_script, smtp_persona, smtp_script,
)

TOTAL = int(os.environ.get('FUZZ_EXAMPLES') or 500)
SMTP_EXAMPLES = max(1, TOTAL * 22 // 100)
POP3_EXAMPLES = max(1, TOTAL * 18 // 100)
ROUNDTRIP_EXAMPLES = max(1, TOTAL * 18 // 100)
IMAP_EXAMPLES = max(1, TOTAL * 22 // 100)
PLAUSIBLE_IMAP_EXAMPLES = max(1, TOTAL * 5 // 100)
IMAP_ROUNDTRIP_EXAMPLES = max(1, TOTAL - SMTP_EXAMPLES - POP3_EXAMPLES - ROUNDTRIP_EXAMPLES - IMAP_EXAMPLES
                              - PLAUSIBLE_IMAP_EXAMPLES)
# One seed for every fuzz module of the run (test_input_fuzz.py takes the same).
SEED = RUN.setdefault('seed', int(os.environ.get('FUZZ_SEED') or random.SystemRandom().randrange(2 ** 32)))
SLACK = 2.0
# A probe still running this long after its budget is reported as a hang (and left behind).
HANG_AFTER = 10.0

USERNAME = 'fuzz-user'
SMTP_PASSWORD = 'Smtp-S3cret-marker-7f3a9c'
POP3_PASSWORD = 'Pop3-S3cret-marker-51be07'
IMAP_USERNAME = 'bob'
IMAP_PASSWORD = 'Imap-S3cret-marker-c4d2e8'


def _b64(text):
    return base64.b64encode(text.encode('utf-8')).decode('ascii')


# What may never be shown: the passwords and the encodings the client sends them in (the APOP
# digests are added per example, for the timestamps the servers handed out).
SMTP_SECRETS = [SMTP_PASSWORD, _b64(SMTP_PASSWORD), _b64('\0%s\0%s' % (USERNAME, SMTP_PASSWORD))]
POP3_SECRETS = [POP3_PASSWORD, _b64(POP3_PASSWORD)]
IMAP_SECRETS = [IMAP_PASSWORD, _b64(IMAP_PASSWORD), _b64('\0%s\0%s' % (IMAP_USERNAME, IMAP_PASSWORD))]
SECRETS = SMTP_SECRETS + POP3_SECRETS
# What the hostile servers may quote back (by form name, see hostile_server.SECRET_FORMS).
SERVER_SECRETS = secret_forms(USERNAME, SMTP_PASSWORD, POP3_PASSWORD, IMAP_USERNAME, IMAP_PASSWORD)
# A secret cut short must not show in part either: no 8 characters of one in a row.
PIECE = 8


def forbidden(secrets, also_shown=()):
    """secrets and every PIECE characters in a row of them, but for pieces that a secret this
    probe was not given holds too (a server may show that one: the passwords share
    '-S3cret-marker-'), or one of others (forms the server may show that are no secret of the
    probe: CRAM-MD5 responses to challenges it never answered)."""
    others = [text.decode('utf-8') for text in SERVER_SECRETS.values() if text.decode('utf-8') not in secrets]
    others += [other for other in also_shown if other not in secrets]
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
    shared = {}  # the token the SMTP side received, for the POP3 or IMAP side's mailbox
    smtp = HostileServer(certs, shared, SERVER_SECRETS)
    pop3 = HostileServer(certs, shared, SERVER_SECRETS)
    # The IMAP server also makes the CRAM-MD5 response to its challenges (the cram form).
    imap = HostileServer(certs, shared, dict(SERVER_SECRETS, imap_user=IMAP_USERNAME.encode('utf-8')))
    yield smtp, pop3, imap
    for server in (smtp, pop3, imap):
        server.close()


def common_params(draw, timeouts=(1, 1, 1, 2)):
    return dict(
        timeout=draw(st.sampled_from(timeouts)),
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


# A reply that never completes costs the client its timeout: mostly 1 s over IMAP.
IMAP_TIMEOUTS = (1, 1, 1, 1, 1, 2)
imap_mechanisms = pick((3, st.just('auto')), (1, st.sampled_from(['plain', 'login', 'cram-md5'])))
# A third of the time the persona keeps to the RFCs, so what the script sends decides alone.
any_imap_persona = pick((2, imap_persona), (1, plain_imap_persona()))


@st.composite
def imap_case(draw):
    params = common_params(draw, IMAP_TIMEOUTS)
    params.update(host='127.0.0.1', tls_mode=draw(tls_modes), imap_auth=draw(mostly('password', 'none')),
                  auth_mechanism=draw(imap_mechanisms), username=IMAP_USERNAME,
                  password=IMAP_PASSWORD, folder=draw(pick((3, st.just('INBOX')), (1, st.sampled_from(['Junk', 'Entw\u00fcrfe', 'a&b'])))),
                  folders=draw(pick((3, st.none()), (1, st.sampled_from([['INBOX'], ['INBOX', 'Junk'], ['Ind\u00e9sirables'],
                                                                         ['Spam', 'Trash']])))))
    return params, draw(any_imap_persona), draw(imap_check_script)


# How a round trip over IMAP paces its checks: quickly (every wait under IDLE_FROM, so checks
# only), or slowly enough to wait in IDLE (the waits grow to connection_interval 1 s; the first
# IDLE starts some 1.6 s after the send, within max_trip_time 3 s).
FAST, SLOW = (0.05, 1), (1, 3)


@st.composite
def imap_roundtrip_case(draw):
    params = common_params(draw, IMAP_TIMEOUTS)
    # Slow pacing costs 1.6 to 4.6 s an example: one in twenty.
    interval, max_trip_time = draw(pick((19, st.just(FAST)), (1, st.just(SLOW))))
    params.update(
        smtp_host='127.0.0.1', smtp_tls_mode=draw(tls_modes), smtp_auth=draw(st.sampled_from(['none', 'password'])),
        auth_mechanism=draw(st.sampled_from(['auto', 'plain', 'login', 'cram-md5'])), smtp_username=USERNAME,
        smtp_password=SMTP_PASSWORD, helo='probe.fuzz.test', mail_from='monitor@fuzz.test', mail_to='bob@fuzz.test',
        receive_protocol='imap', imap_host='127.0.0.1', imap_tls_mode=draw(tls_modes), imap_username=IMAP_USERNAME,
        imap_password=IMAP_PASSWORD,
        imap_auth_mechanism=draw(imap_mechanisms),
        imap_folder=draw(pick((9, st.just('INBOX')), (1, st.just('Junk')))),
        junk_folders=draw(pick((4, st.none()), (1, st.sampled_from([[], ['Junk'], ['Spam', 'Junk'], ['INBOX']])))),
        junk=draw(st.sampled_from(['warn', 'ok', 'fail'])), subject_prefix=draw(st.sampled_from(['[health]', '', None])),
        connection_interval=interval, max_trip_time=max_trip_time, cleanup_stale=draw(st.booleans()))
    persona = draw(any_imap_persona)
    if (interval, max_trip_time) == SLOW and draw(mostly(True, False)):
        # Slow pacing is for IDLE: the mail arrives only once the client waits there.
        persona.arrival = 'idle'
        for listed in (persona.capabilities, persona.tls_capabilities or []):
            if b'IDLE' not in listed:
                listed.append(b'IDLE')
    # The SMTP side is fuzzed in its own right (and in the round trip over POP3): here it mostly
    # takes the mail plainly, so the IMAP side's faults are met deep in the round trip. The IMAP
    # side follows its persona plainly half the time (see roundtrip_case).
    clean = st.just(Script([], 'auto'))
    smtp_who, smtp_steps = draw(pick((3, st.tuples(st.just(SmtpPersona()), clean)),
                                     (1, st.tuples(smtp_persona, st.one_of(clean, smtp_script)))))
    return (params, draw(mostly(False, True)), smtp_who, smtp_steps, persona,
            draw(st.one_of(clean, imap_roundtrip_script)))


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


def exercise(name, call, budget, servers, timeout, secrets, apop=False, lifetime=None):
    """Run one probe against loaded hostile servers and check every property; secrets are the
    ones this probe was given (with apop, the digests of the POP3 password count too; the CRAM-MD5
    responses the client sent to an IMAP server always do). lifetime: {server: the longest a
    connection to it may last}, timeout + SLACK for the others. Returns (result, ProbeError):
    one of them is None."""
    stats = STATS.setdefault(name, {})
    result, error, elapsed, hung = watched(call, budget + HANG_AFTER)
    idle = all(server.wait_idle(STALL_CAP + 5) for server in servers)
    lifetimes = [life for server in servers for life in server.lifetimes]
    _count_depth(stats, servers)
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
        if not any('%s 127.0.0.1:%d' % (server.persona.protocol, server.port) in error.message for server in servers):
            problems.append('no protocol host:port in the message %r' % error.message)
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
    # The CRAM-MD5 responses the client sent are its secrets, whole and in pieces; the responses
    # to challenges it did not answer (a server may show those) are not.
    shared = servers[-1].shared
    answers = sorted(set(shared.get('cram answers', [])))
    unanswered = [cram_response(IMAP_USERNAME, IMAP_PASSWORD, challenge).decode('ascii')
                  for challenge in shared.get('cram challenges', [])]
    for secret in forbidden(secrets + answers, unanswered) + digests:
        for text in texts:
            at = text.find(secret)
            assert at < 0, 'secret %r shown in ...%r...' % (secret, text[max(0, at - 100):at + len(secret) + 100])
    assert idle, 'a connection was still open %s s after the call returned' % (STALL_CAP + 5)
    # Each connection, seen from the server, must end by the session's deadline (+ slack).
    lifetime = lifetime or {}
    for server in servers:
        limit = lifetime.get(server, timeout + SLACK)
        assert all(life <= limit for life in server.lifetimes), 'connection lifetimes %s, limit %.1f s' % (
            server.lifetimes, limit)
    return result, error


def _count_depth(stats, servers):
    verbs = set()
    for server in servers:
        if server.persona is not None and server.persona.protocol == 'imap':
            verbs |= server.shared.get('imap verbs', set())
    for verb in IMAP_DEPTH:
        if verb in verbs:
            stats['reached ' + verb] = stats.get('reached ' + verb, 0) + 1


def _count(stats, outcome, elapsed, budget, lifetimes):
    stats['examples'] = stats.get('examples', 0) + 1
    stats[outcome] = stats.get(outcome, 0) + 1
    stats['over budget'] = stats.get('over budget', 0) + (elapsed > budget)
    stats['max s'] = round(max(elapsed, stats.get('max s', 0)), 2)
    stats['max connection s'] = round(max(lifetimes + [stats.get('max connection s', 0)]), 2)
    stats['total s'] = stats.get('total s', 0) + elapsed  # rounded when shown: most examples take milliseconds


@seed(SEED)
@settings(max_examples=SMTP_EXAMPLES, **FUZZ_SETTINGS)
@given(case=smtp_case())
def test_smtp_check_against_hostile_server(servers, certs, case):
    smtp = servers[0]
    params, check_mode, persona, script = case
    params = dict(params, port=smtp.port, ca_path=str(certs.ca_path))
    smtp.load(persona, [script])
    exercise('smtp_check', lambda: smtp_check(params, check_mode=check_mode), params['timeout'] + SLACK, [smtp],
             params['timeout'], SMTP_SECRETS)


@seed(SEED)
@settings(max_examples=POP3_EXAMPLES, **FUZZ_SETTINGS)
@given(case=pop3_case())
def test_pop3_check_against_hostile_server(servers, certs, case):
    pop3 = servers[1]
    params, persona, script = case
    params = dict(params, port=pop3.port, ca_path=str(certs.ca_path))
    pop3.load(persona, [script])
    exercise('pop3_check', lambda: pop3_check(params), params['timeout'] + SLACK, [pop3], params['timeout'],
             POP3_SECRETS, apop=params['pop3_auth'] == 'apop')


@seed(SEED)
@settings(max_examples=ROUNDTRIP_EXAMPLES, **FUZZ_SETTINGS)
@given(case=roundtrip_case())
def test_mail_roundtrip_against_hostile_servers(servers, certs, case):
    smtp, pop3, _imap = servers
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


# What the IMAP fuzzing found, run every time as well (Hypothesis may not draw them again): the
# options of a plain example, and the server.
PLAIN_IMAP_CHECK = dict(timeout=1, validate_certs=True, allow_cleartext_auth=True, transcript=True, warning_ms=None,
                        critical_ms=None, host='127.0.0.1', tls_mode='starttls', imap_auth='password',
                        auth_mechanism='auto', username=IMAP_USERNAME, password=IMAP_PASSWORD, folder='INBOX',
                        folders=None)
PLAIN_IMAP_ROUNDTRIP = dict(
    timeout=1, validate_certs=True, allow_cleartext_auth=True, transcript=True, warning_ms=None, critical_ms=None,
    smtp_host='127.0.0.1', smtp_tls_mode='starttls', smtp_auth='password', auth_mechanism='auto',
    smtp_username=USERNAME, smtp_password=SMTP_PASSWORD, helo='probe.fuzz.test', mail_from='monitor@fuzz.test',
    mail_to='bob@fuzz.test', receive_protocol='imap', imap_host='127.0.0.1', imap_tls_mode='starttls',
    imap_username=IMAP_USERNAME, imap_password=IMAP_PASSWORD, imap_auth_mechanism='auto', imap_folder='INBOX',
    junk_folders=None, junk='warn', subject_prefix='[health]', connection_interval=FAST[0], max_trip_time=FAST[1],
    cleanup_stale=False)
OUR_MAIL = [ImapMessage(1, OURS[0], arrives=True)]
PLAIN = Script([], 'auto')


@seed(SEED)
@settings(max_examples=IMAP_EXAMPLES, **FUZZ_SETTINGS)
@given(case=imap_case())
# Parentheses nested deeper than the recursion limit: a RecursionError (fixed in 6136144).
@example(case=(
    PLAIN_IMAP_CHECK, ImapPersona(), Script([AUTO], at={'STATUS': Step(Nest(b'* ', 5000, tail=CRLF + b'@TAG@ OK\r\n'))})))
def test_imap_check_against_hostile_server(servers, certs, case):
    imap = servers[2]
    params, persona, script = case
    params = dict(params, port=imap.port, ca_path=str(certs.ca_path))
    imap.load(persona, [script])
    exercise('imap_check', lambda: imap_check(params), params['timeout'] + SLACK, [imap], params['timeout'],
             IMAP_SECRETS)


@seed(SEED)
@settings(max_examples=IMAP_ROUNDTRIP_EXAMPLES, **FUZZ_SETTINGS)
@given(case=imap_roundtrip_case())
# BODY[HEADER] answered as a parenthesized list: an AttributeError in ImapClient.headers().
@example(case=(PLAIN_IMAP_ROUNDTRIP, False, SmtpPersona(), PLAIN, ImapPersona(fetch='list', messages=OUR_MAIL), PLAIN))
def test_mail_roundtrip_over_imap_against_hostile_servers(servers, certs, case):
    smtp, _pop3, imap = servers
    params, check_mode, smtp_who, smtp_steps, imap_who, imap_steps = case
    params = dict(params, smtp_port=smtp.port, imap_port=imap.port, ca_path=str(certs.ca_path))
    smtp.load(smtp_who, [smtp_steps])
    imap.load(imap_who, [imap_steps])
    budget = imap_roundtrip_budget(params)
    exercise('mail_roundtrip over imap', lambda: mail_roundtrip(params, check_mode=check_mode), budget, [smtp, imap],
             params['timeout'], SMTP_SECRETS + IMAP_SECRETS, lifetime={imap: budget})


def imap_roundtrip_budget(params):
    """As over POP3 (the first look, the SMTP session, then up to max_trip_time of checks, the last
    of which may start just before the deadline and take 1 s), and a wait in IDLE may end
    DONE_GRACE after its time. The one IMAP connection lasts through all of it."""
    idle = DONE_GRACE if params['connection_interval'] >= IDLE_FROM else 0
    return 2 * (params['max_trip_time'] + 1) + params['timeout'] + idle + SLACK


@st.composite
def plausible_imap_case(draw):
    params = common_params(draw, IMAP_TIMEOUTS)
    params.update(
        validate_certs=True, smtp_host='127.0.0.1', smtp_tls_mode=draw(tls_modes), smtp_auth='password',
        auth_mechanism='auto', smtp_username=USERNAME, smtp_password=SMTP_PASSWORD, helo='probe.fuzz.test',
        mail_from='monitor@fuzz.test', mail_to='bob@fuzz.test', receive_protocol='imap', imap_host='127.0.0.1',
        imap_tls_mode=draw(tls_modes), imap_username=IMAP_USERNAME, imap_password=IMAP_PASSWORD,
        imap_auth_mechanism='auto', imap_folder='INBOX', junk=draw(st.sampled_from(['warn', 'ok'])),
        subject_prefix='[health]', connection_interval=0.05, max_trip_time=1, cleanup_stale=draw(st.booleans()))
    return params, draw(plain_imap_persona())


@seed(SEED)
@settings(max_examples=PLAUSIBLE_IMAP_EXAMPLES, **FUZZ_SETTINGS)
@given(case=plausible_imap_case())
# A junk folder whose name needs modified UTF-7: it was encoded twice (fixed in e8c9fe9).
@example(case=(PLAIN_IMAP_ROUNDTRIP, ImapPersona(folders=[(b'', b'INBOX'), (b'\\Junk', b'Ind&AOk-sirables')],
                                                 messages=[ImapMessage(1, OURS[0], folder=b'Ind&AOk-sirables', arrives=True)])))
def test_mail_roundtrip_over_imap_against_plausible_servers(servers, certs, case):
    smtp, _pop3, imap = servers
    params, persona = case
    params = dict(params, smtp_port=smtp.port, imap_port=imap.port, ca_path=str(certs.ca_path))
    smtp.load(SmtpPersona(), [Script([], 'auto')])
    imap.load(persona, [Script([], 'auto')])
    budget = imap_roundtrip_budget(params)
    result, error = exercise('mail_roundtrip over imap, plausible server', lambda: mail_roundtrip(params), budget,
                             [smtp, imap], params['timeout'], SMTP_SECRETS + IMAP_SECRETS, lifetime={imap: budget})
    assert error is None, 'a round trip against a plausible IMAP server failed: %s (stage %s)' % (error, error.stage)
    assert result['deleted'] and result['seen_by'] in ('check', 'push'), result
