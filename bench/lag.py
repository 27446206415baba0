"""[2/5] Arrival-detection lag: the moment the round-trip probe saw its mail minus the moment the
mail landed in the Maildir.

- Landed: the kernel's ctime of the file Dovecot renames into Maildir/new/ (Dovecot's LMTP writes
  into tmp/ and renames; rename stamps ctime). An inotify watcher (bench/maildir_watch.py, its own
  process) on the container's new/ directory, reached from the host through
  /proc/<container pid>/root, reads the file within a fraction of a millisecond of the rename,
  before the probe can delete it, and takes its ctime and its X-Mailops-Roundtrip token. The
  container shares the host's kernel clock. The watcher's own read time bounds the landing moment
  from above: the interval [ctime, read] is reported as the precision. (When an IMAP session
  moved the file into cur/ before the watcher read it, the read time stands in: moved_to_cur.)
- Seen: the core's own seen_at (time.monotonic() when the header carrying the token was parsed:
  POP3 TOP, IMAP UID FETCH BODY.PEEK[HEADER]), converted to wall clock time by bench/hooks.py.

Arms, interleaved trip by trip in a shuffled order, on one dedicated account (rt06), each
alternating two paths (POP3: submission 587 STARTTLS + AUTH -> POP3S 995 APOP, port 25 STARTTLS
-> POP3 110 STLS APOP; IMAP: submission -> IMAPS 993, port 25 -> IMAP 143 STARTTLS):
  imap             the core as shipped with receive_protocol=imap: one connection, quick checks
                   (NOOP + UID SEARCH HEADER) from 2 ms after sending, doubling; waits of
                   IDLE_FROM (1 s) or more in IDLE
  imap IDLE only   every wait is IDLE until the server pushes (poll_delays replaced by a constant
                   IDLE_ONLY_WAIT): no quick checks
  pop3 adaptive    the core as shipped with receive_protocol=pop3: first check FIRST_CHECK_DELAY
                   (10 ms) after the SMTP session, doubling up to connection_interval (5 s)
  pop3 fixed 1 s   poll_delays replaced by a constant 1.0 s: what monitoring products do
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time

from bench import hooks
from bench.common import (IMAP_PATHS, PATHS, POP3_PATHS, PYTHON, ROOT, Progress, import_core, roundtrip_params, say,
                          summary)

USER = 'rt06'
# With IDLE only, a wait ends at the push (about 0.5 s with Dovecot 2.3) or after this long;
# two such waits fit in max_trip_time should a push bring no mail of ours.
IDLE_ONLY_WAIT = 10.0
# arm: (protocol, its paths, hooks.observe arguments, goal (median, p95) in ms or None)
ARMS = {
    'imap': ('imap', IMAP_PATHS, {}, (5, 20)),
    'imap IDLE only': ('imap', IMAP_PATHS, {'fixed_interval': IDLE_ONLY_WAIT}, None),
    'pop3 adaptive': ('pop3', POP3_PATHS, {}, (50, 200)),
    'pop3 fixed 1 s': ('pop3', POP3_PATHS, {'fixed_interval': 1.0}, None),
}
FIGURES = ('lag_ms', 'delivery_ms', 'wait_ms', 'finding_visit_ms', 'trip_time_ms', 'visits', 'imap_commands')


class Watcher:
    def __init__(self, dirs):
        self.proc = subprocess.Popen([PYTHON, '-u', '-m', 'bench.maildir_watch'] + [str(d) for d in dirs], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self.proc.stdout.readline() or '{}')
        if not ready.get('ready'):
            raise RuntimeError('maildir watcher did not start')
        self.events = {}
        self.other = []
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for line in self.proc.stdout:
            event = json.loads(line)
            with self.cond:
                if event.get('token'):
                    self.events.setdefault(event['token'], event)
                else:
                    self.other.append(event)
                self.cond.notify_all()

    def wait(self, token, timeout=5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while token not in self.events:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.events[token]

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def landing(event):
    """(landed, source) of a watcher event in epoch seconds: the file's ctime, or the watcher's
    read time when an IMAP session had already moved the file into cur/ (None: not observed)."""
    if event is None:
        return None, None
    if event.get('ctime_ns') is not None:
        return event['ctime_ns'] / 1e9, 'ctime'
    if event.get('moved') and event.get('token'):
        return event['event_ns'] / 1e9, 'watcher read'
    return None, None


def one_trip(rt, lab, watcher, arm, path, user=USER):
    _protocol, _paths, observe, _goal = ARMS[arm]
    params = roundtrip_params(lab, user, path)
    with hooks.observe(**observe) as trace:
        result = rt.mail_roundtrip(params)
    event = watcher.wait(result['token'])
    row = {'arm': arm, 'path': path, 'trip_time_ms': result['trip_time_ms'], 'attempts': result['attempts'],
           'visits': len(trace['visits']), 'seen_by': result.get('seen_by', 'check'),
           'imap_commands': hooks.imap_command_total(trace) if params['receive_protocol'] == 'imap' else None,
           'token': result['token']}
    seen = trace['seen']
    sent = seen - result['trip_time_ms'] / 1000.0
    landed, source = landing(event)
    if landed is None:
        row['lost_observation'] = True
        return row
    row.update({
        'lag_ms': round((seen - landed) * 1000, 2),
        'delivery_ms': round((landed - sent) * 1000, 2),
        'wait_ms': round((trace['finding_visit_start'] - landed) * 1000, 2),
        'finding_visit_ms': round((seen - trace['finding_visit_start']) * 1000, 2),
        'landed_from': source,
    })
    if source == 'ctime':
        row['observation_window_ms'] = round((event['event_ns'] - event['ctime_ns']) / 1e6, 3)
    return row


def summarize(rows, trips) -> dict:
    out = {'account': USER, 'trips_per_arm': trips, 'paths': {k: list(v) for k, v in PATHS.items()},
           'goals': {arm: {'median_ms': g[0], 'p95_ms': g[1]} for arm, (_p, _ps, _o, g) in ARMS.items() if g},
           'arms': {}, 'rows': rows}
    for arm, (protocol, paths, _observe, _goal) in ARMS.items():
        mine = [r for r in rows if r['arm'] == arm]
        entry = {k: summary([r.get(k) for r in mine]) for k in FIGURES}
        entry['protocol'] = protocol
        entry['by_path'] = {p: summary([r.get('lag_ms') for r in mine if r['path'] == p]) for p in paths}
        entry['seen_by_push'] = sum(1 for r in mine if r.get('seen_by') == 'push')
        entry['observations_missing'] = sum(1 for r in mine if r.get('lost_observation'))
        entry['landed_from_watcher_read'] = sum(1 for r in mine if r.get('landed_from') == 'watcher read')
        out['arms'][arm] = entry
    out['precision'] = {'ctime_to_watcher_read_ms': summary([r.get('observation_window_ms') for r in rows])}
    return out


def run(lab, trips: int = 50, step: int = 2, steps: int = 5) -> dict:
    _smtp, _pop3, rt, _probe = import_core()
    hooks.install(rt)
    lab.pop3_stat(USER)  # the Maildir exists before the watch is set
    watcher = Watcher([lab.maildir(USER) / 'new'])
    say('[%d/%d] arrival lag: %d round trips per arm (%s), interleaved, account %s'
        % (step, steps, trips, ', '.join(ARMS), USER))
    rows = []
    rng = random.Random(2)
    progress = Progress(step, steps, 'arrival lag', trips)
    try:
        for i in range(trips):
            order = list(ARMS)
            rng.shuffle(order)
            for arm in order:
                paths = ARMS[arm][1]
                time.sleep(0.05)
                rows.append(one_trip(rt, lab, watcher, arm, paths[i % len(paths)]))
            progress.tick()
    finally:
        watcher.close()
    out = summarize(rows, trips)
    out['leftover_in_maildir'] = lab.maildir_count(USER)
    return out
