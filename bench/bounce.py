"""[7/7] Bounce fast-fail: how long a round trip whose mail bounces takes to its verdict, with the
core's bounce watch (a DSN about the probe in the mailbox it reads fails the trip at once, stage
bounced) against waiting out max_trip_time (watch_bounces false: stage timeout).

The bounce: the probe's mail goes from rt11 (submission 587 STARTTLS + AUTH) to rt11@bounce.test;
the lab MTA relays it to the outside MTA, which accepts it and bounces it: a 5.1.1 DSN
(multipart/report) back to the envelope sender, rt11@lab.test, whose INBOX the probe reads. The
DSN carries the probe's headers, X-Mailops-Roundtrip included, in its returned-message part.

Per trip:
- accepted: the wall clock when the probe's SMTP session returned (the server took the mail with
  250 and QUIT was answered): a wrapper around the core's _smtp.run_session, installed here at run
  time like bench/hooks.py's wrappers (plugins/ is not edited);
- verdict: the wall clock when mail_roundtrip raised its ProbeError to the caller (the receiver's
  connection closed, as a module run would end);
- DSN landed: the inotify watcher of part 2 (bench/maildir_watch.py) on rt11's Maildir/new, which
  reads the token from the DSN's body (token_in_body); the file's ctime, or the watcher's read
  time when an IMAP session had already moved the file into cur/;
- the core's own result['bounce']['arrived_ms'] (SMTP session done -> the report parsed).
Figures: time to verdict (verdict - accepted), the DSN landing (landed - accepted), verdict after
the DSN landed (the goal: <= GOAL_MS), the core's find after the landing ((accepted + arrived_ms)
- landed), split into waiting for the visit that found it and that visit (bench/hooks.py's visit
timing), and the closing (time to verdict - arrived_ms).

Arms, interleaved in a shuffled order per round, account rt11:
  imap fast-fail                  receive_protocol imap (IMAPS 993), watch_bounces true, max_trip_time 30
  pop3 fast-fail                  receive_protocol pop3 (POP3S 995 APOP), watch_bounces true, max_trip_time 30
  waiting (watch_bounces=false)   imap, watch_bounces false, max_trip_time WAIT_MAX_TRIP (10 s): the
                                  probe never takes the DSN and times out; only some rounds run it
                                  (each costs max_trip_time), and the DSN it leaves is deleted after
                                  the trip (Lab.clean_probe_mail).
"""

from __future__ import annotations

import random
import threading
import time

from bench import hooks
from bench.common import PATHS, Progress, import_core, roundtrip_params, say, summary
from bench.lag import Watcher, landing

USER = 'rt11'
BOUNCE_DOMAIN = 'bounce.test'
FAST_MAX_TRIP = 30
WAIT_MAX_TRIP = 10
GOAL_MS = 2000
FAST = 'imap fast-fail', 'pop3 fast-fail'
WAITING = 'waiting (watch_bounces=false)'
# arm: (path, watch_bounces, max_trip_time, the stage it must end at)
ARMS = {
    'imap fast-fail': ('submission+imaps', True, FAST_MAX_TRIP, 'bounced'),
    'pop3 fast-fail': ('submission+pop3s', True, FAST_MAX_TRIP, 'bounced'),
    WAITING: ('submission+imaps', False, WAIT_MAX_TRIP, 'timeout'),
}
FIGURES = ('to_verdict_ms', 'dsn_landed_ms', 'verdict_after_dsn_ms', 'arrived_ms', 'found_after_landing_ms',
           'wait_ms', 'finding_visit_ms', 'closing_ms', 'smtp_ms', 'attempts')

_clock = threading.local()
_installed = {}


def install_smtp_clock(smtp):
    """Record (per thread) the wall clock when an SMTP session that sent a message returned."""
    if _installed.get('done'):
        return
    orig = smtp.run_session

    def run_session(params, check, message=None):
        out = orig(params, check, message)
        if message is not None:
            _clock.accepted = time.time()
        return out

    smtp.run_session = run_session
    _installed['done'] = True


def ms(later, earlier):
    return None if later is None or earlier is None else round((later - earlier) * 1000.0, 1)


def one_trip(rt, probe, lab, watcher, arm) -> dict:
    path, watch, max_trip, expected = ARMS[arm]
    params = roundtrip_params(lab, USER, path, mail_to='%s@%s' % (USER, BOUNCE_DOMAIN), watch_bounces=watch,
                              max_trip_time=max_trip)
    row = {'arm': arm, 'path': path, 'watch_bounces': watch, 'max_trip_time_s': max_trip}
    _clock.accepted = None
    with hooks.observe() as trace:
        start = time.time()
        try:
            result = rt.mail_roundtrip(params)
            stage, message = 'passed', None
        except probe.ProbeError as e:
            result, stage, message = e.result, e.stage, e.message
        end = time.time()
    accepted = _clock.accepted
    row.update(stage=stage, ok=stage == expected, token=result.get('token'), attempts=result.get('attempts'),
               visits=len(trace['visits']), call_ms=ms(end, start), to_verdict_ms=ms(end, accepted),
               smtp_ms=(result.get('smtp') or {}).get('response_time_ms'))
    if stage != expected:
        row['error'] = '%s: %s' % (stage, (message or '')[:300])
    bounce = result.get('bounce')
    if bounce:
        row['bounce'] = {k: bounce.get(k) for k in ('status', 'action', 'diagnostic', 'reporting_mta', 'mailbox')}
        row['arrived_ms'] = bounce.get('arrived_ms')
        if row['to_verdict_ms'] is not None and row['arrived_ms'] is not None:
            row['closing_ms'] = round(row['to_verdict_ms'] - row['arrived_ms'], 1)
    event = watcher.wait(row['token'], timeout=5.0) if row['token'] else None
    landed, source = landing(event)
    if landed is None:
        row['lost_observation'] = True
    else:
        row.update(landed_from=source, token_in_body=bool(event.get('token_in_body')),
                   dsn_landed_ms=ms(landed, accepted), verdict_after_dsn_ms=ms(end, landed))
        if source == 'ctime':
            row['observation_window_ms'] = round((event['event_ns'] - event['ctime_ns']) / 1e6, 3)
        if row.get('arrived_ms') is not None and accepted is not None:
            row['found_after_landing_ms'] = ms(accepted + row['arrived_ms'] / 1000.0, landed)
            # The core fails right after the visit that found the DSN: the last one. Waiting for it
            # (landed -> its start; negative when it began before the landing) and the visit itself
            # (IMAP: NOOP + UID SEARCH, FETCH of the header and of the report, delete; POP3: a session).
            last = trace['visits'][-1] if trace['visits'] else None
            if last is not None:
                row.update(wait_ms=ms(last['start'], landed), finding_visit_ms=ms(last['end'], last['start']))
    if not watch:
        # The probe left the DSN in the mailbox: delete it now, so that the next trip starts clean.
        row['dsn_deleted_after'] = lab.clean_probe_mail(USER)[0]
    row['left_after'] = lab.maildir_count(USER)
    return row


def summarize(rows) -> dict:
    arms = {}
    for arm, (path, watch, max_trip, expected) in ARMS.items():
        mine = [r for r in rows if r['arm'] == arm]
        entry = {k: summary([r.get(k) for r in mine if r.get('ok')]) for k in FIGURES}
        stages = {}
        for r in mine:
            stages[r['stage']] = stages.get(r['stage'], 0) + 1
        entry.update(path=path, watch_bounces=watch, max_trip_time_s=max_trip, expected_stage=expected, trips=len(mine),
                     stages=stages, unexpected=sum(1 for r in mine if not r.get('ok')),
                     observations_missing=sum(1 for r in mine if r.get('lost_observation')),
                     token_in_body=sum(1 for r in mine if r.get('token_in_body')),
                     landed_from_watcher_read=sum(1 for r in mine if r.get('landed_from') == 'watcher read'),
                     left_after_trip=sum(1 for r in mine if r.get('left_after')))
        if arm in FAST:
            after = entry['verdict_after_dsn_ms']
            entry['goal_met'] = bool(mine) and entry['unexpected'] == 0 and after.get('n') == len(mine) \
                and after['max'] <= GOAL_MS
        arms[arm] = entry
    return arms


def waiting_rounds_at(rounds: int, waiting_rounds: int) -> set:
    """The rounds (0-based) the waiting arm runs in: spread evenly over the part."""
    waiting_rounds = min(waiting_rounds, rounds)
    return {min(rounds - 1, int((k + 0.5) * rounds / waiting_rounds)) for k in range(waiting_rounds)}


def run(lab, rounds: int = 20, waiting_rounds: int = 3, step: int = 7, steps: int = 7) -> dict:
    _smtp, _pop3, rt, probe = import_core()
    hooks.install(rt)
    install_smtp_clock(rt._smtp)
    cleaned_before = lab.clean_probe_mail(USER)   # also makes the Maildir before the watch is set
    watcher = Watcher([lab.maildir(USER) / 'new'])
    waiting_at = waiting_rounds_at(rounds, waiting_rounds)
    say('[%d/%d] bounce fast-fail: %d rounds of %s, %d of %s (max_trip_time %d s), interleaved, account %s -> %s@%s'
        % (step, steps, rounds, ' and '.join(FAST), len(waiting_at), WAITING, WAIT_MAX_TRIP, USER, USER,
           BOUNCE_DOMAIN))
    rows = []
    rng = random.Random(7)
    progress = Progress(step, steps, 'bounce fast-fail', rounds)
    try:
        for i in range(rounds):
            order = list(FAST) + ([WAITING] if i in waiting_at else [])
            rng.shuffle(order)
            for arm in order:
                time.sleep(0.05)
                rows.append(one_trip(rt, probe, lab, watcher, arm))
            bad = [r for r in rows[-len(order):] if not r['ok']]
            progress.tick(note=('%d unexpected: %s' % (len(bad), bad[0]['error'][:120])) if bad else '')
    finally:
        watcher.close()
    paths = sorted({path for path, _w, _m, _s in ARMS.values()})
    out = {'account': USER, 'mail_to': '%s@%s' % (USER, BOUNCE_DOMAIN), 'rounds': rounds,
           'waiting_rounds': len(waiting_at), 'goal_ms': GOAL_MS, 'paths': {p: list(PATHS[p]) for p in paths},
           'cleaned_before': cleaned_before[0], 'unmatched_landings': len(watcher.other), 'arms': summarize(rows),
           'rows': rows}
    out['precision'] = {'ctime_to_watcher_read_ms': summary([r.get('observation_window_ms') for r in rows])}
    fast = [out['arms'][a]['to_verdict_ms'].get('median') for a in FAST]
    waiting = out['arms'][WAITING]['to_verdict_ms'].get('median')
    if waiting and all(fast):
        out['waiting_over_fast'] = {a: round(waiting / f, 1) for a, f in zip(FAST, fast)}
    time.sleep(1.0)
    out['after'] = {'queued': lab.queued_for([USER]), 'maildir_files': lab.maildir_count(USER),
                    'pop3_messages': lab.pop3_stat(USER)[0]}
    if out['after']['maildir_files'] or out['after']['pop3_messages']:
        out['after']['cleaned'] = lab.clean_probe_mail(USER)[0]
    return out
