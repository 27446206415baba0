"""[5/5] IMAP server load: what one IMAP round trip asks of the server while it waits for a mail
that takes DELIVERY_DELAY (10 s) to arrive: IMAP commands and connections per round trip, and how
soon after landing the mail was seen.

The delay: bench/hooks.py's deliver_after makes the probe's own SMTP session send nothing and
sends the probe's very message (same headers, same token) in a second SMTP session 10 s later,
from another thread, through the real path (Postfix -> LMTP -> Sieve -> Maildir). The probe
meanwhile watches the mailbox as it would for a slow delivery.

Counting (hooks.py, per thread): every tagged command the IMAP client sends (ImapClient.command,
by verb; LOGIN/AUTHENTICATE, LIST, SELECT, NOOP, UID SEARCH, STATUS of the junk folder, UID
FETCH, UID STORE, UID EXPUNGE, LOGOUT), every IDLE (ImapClient.idle: IDLE ... DONE counts as
one command) and every IMAP connection (Conversation.__enter__). Landing: the inotify watcher
of the lag part, on each account's Maildir/new.

Arms, run at the same time in each round (one thread and one account each, so every arm meets
the same server state), path submission 587 -> IMAPS 993, connection_interval 5 s:
  quick checks + IDLE   the core as shipped: checks from 2 ms, doubling up to 5 s; waits of
                        IDLE_FROM (1 s) or more are spent in IDLE, so the push ends them
  quick checks, no IDLE the same schedule with every wait a sleep (IDLE_FROM = infinity)
  fixed 1 s, no IDLE    a check every second, no IDLE: what monitoring products do
"""

from __future__ import annotations

import random
import threading
import time

from bench import hooks
from bench.common import Progress, import_core, roundtrip_params, say, summary
from bench.lag import Watcher, landing

DELIVERY_DELAY = 10.0
PATH = 'submission+imaps'
# arm: (account, hooks.observe arguments besides deliver_after)
ARMS = {
    'quick checks + IDLE (ours)': ('rt07', {}),
    'quick checks, no IDLE': ('rt09', {'no_idle': True}),
    'fixed 1 s, no IDLE': ('rt10', {'fixed_interval': 1.0, 'no_idle': True}),
}
FIGURES = ('commands', 'connections', 'idle', 'checks_after_sending', 'commands_while_waiting', 'lag_ms',
           'delivery_delay_ms', 'trip_time_ms')


def one_trip(rt, probe, lab, watcher, arm, delay) -> dict:
    user, observe = ARMS[arm]
    row = {'arm': arm, 'account': user}
    with hooks.observe(deliver_after=delay, **observe) as trace:
        try:
            result = rt.mail_roundtrip(roundtrip_params(lab, user, PATH))
        except probe.ProbeError as e:
            row['error'] = '%s: %s' % (e.stage, e.message)
            return row
    commands = dict(trace['imap_commands'])
    row.update(commands=sum(commands.values()), by_command=commands, connections=trace['imap_connections'],
               idle=commands.get('IDLE', 0), checks_after_sending=result['attempts'],
               seen_by=result.get('seen_by'), trip_time_ms=result['trip_time_ms'], token=result['token'])
    # Commands spent waiting: after the first look (before sending) up to the check that found
    # the mail: the checks that found nothing and the IDLEs.
    visits = trace['visits']
    finding = next(v for v in visits if v.get('seen') is not None)
    row['commands_while_waiting'] = finding['imap_commands_before'] - visits[0]['imap_commands_after']
    event = watcher.wait(result['token'], timeout=10.0)
    landed, _source = landing(event)
    seen, sent = trace['seen'], trace['seen'] - result['trip_time_ms'] / 1000.0
    if landed is None:
        row['lost_observation'] = True
    else:
        row['lag_ms'] = round((seen - landed) * 1000, 1)
        row['delivery_delay_ms'] = round((landed - sent) * 1000, 1)
    if trace['delivery'].get('error'):
        row['delivery_error'] = trace['delivery']['error']
    return row


def summarize(rows) -> dict:
    arms = {}
    for arm in ARMS:
        mine = [r for r in rows if r['arm'] == arm and not r.get('error')]
        entry = {k: summary([r.get(k) for r in mine]) for k in FIGURES}
        verbs = sorted({v for r in mine for v in r['by_command']})
        entry['by_command_median'] = {v: summary([r['by_command'].get(v, 0) for r in mine]).get('median')
                                      for v in verbs}
        entry['failed'] = sum(1 for r in rows if r['arm'] == arm and r.get('error'))
        entry['seen_by_push'] = sum(1 for r in mine if r.get('seen_by') == 'push')
        entry['observations_missing'] = sum(1 for r in mine if r.get('lost_observation'))
        arms[arm] = entry
    return arms


def run(lab, trips: int = 10, delay: float = DELIVERY_DELAY, step: int = 5, steps: int = 5) -> dict:
    _smtp, _pop3, rt, probe = import_core()
    hooks.install(rt)
    users = [user for user, _observe in ARMS.values()]
    for user in users:
        lab.clean_probe_mail(user)   # also makes the Maildir before the watch is set
    watcher = Watcher([lab.maildir(user) / 'new' for user in users])
    say('[%d/%d] IMAP server load: %d rounds of %d round trips at once (%s), delivery %g s after the probe starts '
        'watching' % (step, steps, trips, len(ARMS), ', '.join(ARMS), delay))
    rows = []
    rng = random.Random(5)
    progress = Progress(step, steps, 'IMAP server load', trips)
    try:
        for _round in range(trips):
            order = list(ARMS)
            rng.shuffle(order)   # which thread starts first
            got = []

            def trip(arm, into):
                into.append(one_trip(rt, probe, lab, watcher, arm, delay))
            threads = [threading.Thread(target=trip, args=(arm, got)) for arm in order]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            rows.extend(sorted(got, key=lambda r: list(ARMS).index(r['arm'])))
            failed = [r for r in got if r.get('error')]
            progress.tick(note=('%d failed: %s' % (len(failed), failed[0]['error'][:120])) if failed else '')
            time.sleep(0.2)
    finally:
        pending = hooks.join_deliveries()
        watcher.close()
    out = {'delivery_delay_s': delay, 'path': PATH, 'accounts': {arm: user for arm, (user, _o) in ARMS.items()},
           'connection_interval_s': 5.0, 'rounds': trips, 'arms': summarize(rows), 'rows': rows,
           'deliveries_unfinished': pending}
    time.sleep(0.5)
    out['after_queued'] = lab.queued_for(users)
    out['after'] = {}
    for user in users:
        left = lab.maildir_count(user)
        out['after'][user] = {'left': left, 'cleaned': lab.clean_probe_mail(user)[0] if left else 0}
    return out
