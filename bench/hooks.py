"""Observation hooks around the round-trip core, installed at run time (plugins/ is not edited).

- Every receiver visit (_pop3.Pop3Mailbox.visit) is timed; the visit that finds the probe's token hands over the core's
  own seen_at (time.monotonic() when the TOP answer with the token was parsed), converted to wall
  clock time so that it can be compared with the Maildir file's kernel timestamp.
- poll_delays() can be replaced per thread by a fixed interval (the 1-second polling monitoring
  products use).
"""

from __future__ import annotations

import threading
import time

_local = threading.local()
_installed = {}


def _wall(mono: float) -> float:
    """A time.monotonic() reading as time.time() (both read back to back now)."""
    return time.time() - (time.monotonic() - mono)


def install(roundtrip_module):
    if _installed.get('done'):
        return
    rt = roundtrip_module
    receiver = rt.RECEIVERS['pop3']
    orig_visit = receiver.visit
    orig_delays = rt.poll_delays

    def visit(self, timeout, sort=None):
        trace = getattr(_local, 'trace', None)
        start = time.monotonic()
        facts = orig_visit(self, timeout, sort)
        end = time.monotonic()
        if trace is not None and facts is not None:
            entry = {'start': _wall(start), 'end': _wall(end)}
            if facts.get('seen_at') is not None:
                entry['seen'] = _wall(facts['seen_at'])
                trace['seen'] = entry['seen']
                trace['finding_visit_start'] = entry['start']
            trace['visits'].append(entry)
        return facts

    def poll_delays(interval, *args):
        fixed = getattr(_local, 'fixed_interval', None)
        if fixed is None:
            yield from orig_delays(interval, *args)
        else:
            while True:
                yield fixed

    receiver.visit = visit
    rt.poll_delays = poll_delays
    _installed['done'] = True


class observe:
    """with observe(fixed_interval=1.0) as trace: mail_roundtrip(...)  ->  trace['seen'], ..."""

    def __init__(self, fixed_interval=None):
        self.fixed_interval = fixed_interval
        self.trace = {'visits': [], 'seen': None, 'finding_visit_start': None}

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
