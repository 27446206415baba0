"""Observation hooks around the round-trip core, installed at run time (plugins/ is not edited).

Inside `with observe(...) as trace:` (per thread; other threads are not touched):

- Every receiver visit (Pop3Mailbox.visit, ImapMailbox.visit) is timed; the visit that finds the
  probe's token hands over the core's own seen_at (time.monotonic() when the header carrying the
  token was parsed), converted to wall clock time so that it can be compared with the Maildir
  file's kernel timestamp. Every receiver wait is timed too (with whether the server pushed).
- IMAP load: every tagged command (ImapClient.send, counted by its verb: NOOP, UID SEARCH,
  STATUS, LOGIN, IDLE, ...; never its arguments; an IDLE ... DONE is one command)
  and every IMAP connection (Conversation.__enter__ with an IMAP client).
- fixed_interval: poll_delays() yields that constant instead of the adaptive schedule (1.0: the
  1-second polling monitoring products use; a long one with IDLE: every wait is IDLE until a push).
- no_idle: the IMAP receiver's waits are plain sleeps whatever their length (IDLE_FROM = infinity).
- deliver_after: the round trip's SMTP session sends nothing; the same message (the probe's own
  bytes) is sent in a second SMTP session that many seconds later, from another thread: a
  delivery that takes that long, through the real Postfix -> LMTP -> Maildir path.
"""

from __future__ import annotations

import threading
import time

_local = threading.local()
_installed = {}
_deliveries = []          # threads of deliver_after sessions, so a part can wait for them
_deliveries_lock = threading.Lock()


def _wall(mono: float) -> float:
    """A time.monotonic() reading as time.time() (both read back to back now)."""
    return time.time() - (time.monotonic() - mono)


def _trace():
    return getattr(_local, 'trace', None)


def imap_verb(line: str) -> str:
    """The command word of an IMAP command line without its tag ('UID SEARCH', 'LOGIN'): the
    arguments (a password for LOGIN) are never kept."""
    words = line.split(' ', 2)
    if words[0].upper() == 'UID' and len(words) > 1:
        return ('UID ' + words[1]).upper()
    return words[0].upper()


def install(roundtrip_module):
    if _installed.get('done'):
        return
    import importlib
    rt = roundtrip_module
    package = rt.__name__.rsplit('.', 1)[0]
    _imap = importlib.import_module(package + '._imap')
    _probe = importlib.import_module(package + '._probe')
    _session = importlib.import_module(package + '._session')
    _smtp = rt._smtp
    orig_delays = rt.poll_delays

    def wrap_receiver(receiver):
        orig_visit, orig_wait = receiver.visit, receiver.wait

        def visit(self, timeout, sort=None):
            trace = _trace()
            before = imap_command_total(trace) if trace is not None else None
            start = time.monotonic()
            facts = orig_visit(self, timeout, sort)
            end = time.monotonic()
            if trace is not None and facts is not None:
                entry = {'start': _wall(start), 'end': _wall(end), 'imap_commands_before': before,
                         'imap_commands_after': imap_command_total(trace)}
                if facts.get('seen_at') is not None:
                    entry['seen'] = _wall(facts['seen_at'])
                    trace['seen'] = entry['seen']
                    trace['finding_visit_start'] = entry['start']
                trace['visits'].append(entry)
            return facts

        def wait(self, seconds):
            trace = _trace()
            start = time.monotonic()
            if trace is not None and trace['no_idle']:
                time.sleep(seconds)
                pushed = False
            else:
                pushed = orig_wait(self, seconds)
            if trace is not None:
                trace['waits'].append({'start': _wall(start), 'end': _wall(time.monotonic()), 'seconds': seconds,
                                       'pushed': bool(pushed)})
            return pushed

        receiver.visit = visit
        receiver.wait = wait

    for receiver in set(rt.RECEIVERS.values()):
        wrap_receiver(receiver)

    def poll_delays(interval, *args):
        fixed = getattr(_local, 'fixed_interval', None)
        if fixed is None:
            yield from orig_delays(interval, *args)
        else:
            while True:
                yield fixed

    rt.poll_delays = poll_delays

    client = _imap.ImapClient
    orig_send = client.send

    # Every tagged command goes through send(): single ones, pipelined checks and IDLE alike.
    def send(self, stage, line, shown=None, flush=True):
        trace = _trace()
        if trace is not None:
            verb = imap_verb(line)
            trace['imap_commands'][verb] = trace['imap_commands'].get(verb, 0) + 1
        return orig_send(self, stage, line, shown, flush)

    client.send = send

    conversation = _session.Conversation
    orig_enter = conversation.__enter__

    def enter(self):
        trace = _trace()
        if trace is not None and self.client.protocol == 'imap':
            trace['imap_connections'] += 1
        return orig_enter(self)

    conversation.__enter__ = enter

    orig_run_session = _smtp.run_session

    def run_session(params, check, message=None):
        trace = _trace()
        delay = trace['deliver_after'] if trace is not None else None
        if delay is None or message is None:
            return orig_run_session(params, check, message)
        due = time.monotonic() + delay
        record = trace['delivery']

        def deliver():
            time.sleep(max(0.0, due - time.monotonic()))
            record['started'] = time.time()
            try:
                orig_run_session(params, _probe.Check(params), message)
                record['sent'] = time.time()
            except _probe.ProbeError as e:
                record['error'] = '%s: %s' % (e.stage, e.message)

        thread = threading.Thread(target=deliver, name='bench-delivery', daemon=True)
        with _deliveries_lock:
            _deliveries.append(thread)
        thread.start()
        # The probe's own SMTP session: the same dialogue up to the login, nothing sent.
        return orig_run_session(params, check)

    _smtp.run_session = run_session
    _installed['done'] = True


def join_deliveries(timeout: float = 60.0) -> int:
    """Wait for the deliver_after sessions still pending; returns how many did not finish."""
    deadline = time.monotonic() + timeout
    with _deliveries_lock:
        threads = list(_deliveries)
        del _deliveries[:]
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sum(1 for t in threads if t.is_alive())


def imap_command_total(trace) -> int:
    return sum(trace['imap_commands'].values())


class observe:
    """with observe(fixed_interval=1.0) as trace: mail_roundtrip(...)  ->  trace['seen'], ..."""

    def __init__(self, fixed_interval=None, no_idle=False, deliver_after=None):
        self.fixed_interval = fixed_interval
        self.trace = {'visits': [], 'waits': [], 'seen': None, 'finding_visit_start': None, 'imap_commands': {},
                      'imap_connections': 0, 'no_idle': bool(no_idle), 'deliver_after': deliver_after,
                      'delivery': {}}

    def __enter__(self):
        _local.trace = self.trace
        _local.fixed_interval = self.fixed_interval
        self.trace['call_start'] = time.time()
        return self.trace

    def __exit__(self, *exc):
        self.trace['call_end'] = time.time()
        _local.trace = None
        _local.fixed_interval = None
        return False
