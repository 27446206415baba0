"""[2/4] Arrival-detection lag: the moment the round-trip probe saw its mail minus the moment the
mail landed in the Maildir.

- Landed: the kernel's ctime of the file Dovecot renames into Maildir/new/ (Dovecot's LMTP writes
  into tmp/ and renames; rename stamps ctime). An inotify watcher (bench/maildir_watch.py, its own
  process) on the container's new/ directory, reached from the host through
  /proc/<container pid>/root, reads the file within a fraction of a millisecond of the rename,
  before the probe can delete it, and takes its ctime and its X-Mailops-Roundtrip token. The
  container shares the host's kernel clock. The watcher's own read time bounds the landing moment
  from above: the interval [ctime, read] is reported as the precision.
- Seen: the core's own seen_at (time.monotonic() when the TOP answer carrying the token was
  parsed), converted to wall clock time by bench/hooks.py.

Arms, interleaved trip by trip in a shuffled order, on one dedicated account (rt06), alternating
two paths (submission 587 STARTTLS + AUTH -> POP3S 995 APOP; port 25 STARTTLS -> POP3 110 STLS APOP):
  ours             the core as shipped: first check FIRST_CHECK_DELAY (10 ms) after the SMTP
                   session, doubling up to connection_interval (5 s)
  fixed 1 s        poll_delays replaced by a constant 1.0 s: what monitoring products do
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time

from bench import hooks
from bench.common import PATHS, PYTHON, ROOT, Progress, import_core, roundtrip_params, say, summary

USER = 'rt06'
ARMS = {'ours': {}, 'fixed 1 s': {'fixed_interval': 1.0}}


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


def one_trip(rt, lab, watcher, arm, path):
    params = roundtrip_params(lab, USER, path)
    with hooks.observe(**ARMS[arm]) as trace:
        result = rt.mail_roundtrip(params)
    event = watcher.wait(result['token'])
    row = {'arm': arm, 'path': path, 'trip_time_ms': result['trip_time_ms'], 'attempts': result['attempts'],
           'pop3_sessions': len(trace['visits']), 'token': result['token']}
    seen = trace['seen']
    sent = seen - result['trip_time_ms'] / 1000.0
    if event is None or event.get('ctime_ns') is None:
        row['lost_observation'] = True
        return row
    landed = event['ctime_ns'] / 1e9
    row.update({
        'lag_ms': round((seen - landed) * 1000, 2),
        'delivery_ms': round((landed - sent) * 1000, 2),
        'wait_ms': round((trace['finding_visit_start'] - landed) * 1000, 2),
        'finding_session_ms': round((seen - trace['finding_visit_start']) * 1000, 2),
        'observation_window_ms': round((event['event_ns'] - event['ctime_ns']) / 1e6, 3),
    })
    return row


def run(lab, trips: int = 50, step: int = 2, steps: int = 4) -> dict:
    _smtp, _pop3, rt, _probe = import_core()
    hooks.install(rt)
    lab.pop3_stat(USER)  # the Maildir exists before the watch is set
    watcher = Watcher([lab.maildir(USER) / 'new'])
    say('[%d/%d] arrival lag: %d round trips per arm (%s), interleaved, account %s'
        % (step, steps, trips, ', '.join(ARMS), USER))
    rows = []
    rng = random.Random(2)
    paths = list(PATHS)
    progress = Progress(step, steps, 'arrival lag', trips)
    try:
        for i in range(trips):
            order = list(ARMS)
            rng.shuffle(order)
            for arm in order:
                time.sleep(0.05)
                rows.append(one_trip(rt, lab, watcher, arm, paths[i % len(paths)]))
            progress.tick()
    finally:
        watcher.close()
    out = {'account': USER, 'trips_per_arm': trips, 'paths': {k: list(v) for k, v in PATHS.items()},
           'goal': 'ours: median lag <= 50 ms, p95 <= 200 ms', 'arms': {}, 'rows': rows}
    for arm in ARMS:
        mine = [r for r in rows if r['arm'] == arm]
        entry = {k: summary([r.get(k) for r in mine]) for k in
                 ('lag_ms', 'delivery_ms', 'wait_ms', 'finding_session_ms', 'trip_time_ms', 'pop3_sessions')}
        entry['by_path'] = {p: summary([r.get('lag_ms') for r in mine if r['path'] == p]) for p in paths}
        entry['observations_missing'] = sum(1 for r in mine if r.get('lost_observation'))
        out['arms'][arm] = entry
    out['precision'] = {'ctime_to_watcher_read_ms': summary([r.get('observation_window_ms') for r in rows])}
    out['leftover_in_maildir'] = lab.maildir_count(USER)
    return out
