"""python -m bench [--only PART[,PART]] [--quick] | python -m bench report

Runs the benchmarks against the Docker lab (brought up if it is down; never taken down), writes
bench/results/<part>.json after each part, then bench/results/summary.md and bench/results/bench.png.
Parts: overhead, lag, throughput, bigmailbox, imapload, gate, bounce. The part gate starts the embedded lab
itself: run alone (--only gate) it needs neither the Docker lab nor root. See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from bench import bigmailbox, bounce, gate, imapload, lag, overhead, report, throughput
from bench.common import ROOT, SHARED, TMP, environment, lab_up, results_dir, say, write_json

PARTS = ('overhead', 'lag', 'throughput', 'bigmailbox', 'imapload', 'gate', 'bounce')
EMBEDDED = ('gate',)   # parts that bring their own (embedded) lab

FULL = dict(overhead=dict(runs=60, wall_runs=10), lag=dict(trips=50),
            throughput=dict(core_seconds=30, loop_per_host=6, batch_rounds=20),
            bigmailbox=dict(messages=10000, trips=30), imapload=dict(trips=10), gate=dict(reps=3),
            bounce=dict(rounds=20, waiting_rounds=3))
QUICK = dict(overhead=dict(runs=5, wall_runs=2), lag=dict(trips=4),
             throughput=dict(core_seconds=4, loop_per_host=1, batch_rounds=2),
             bigmailbox=dict(messages=500, trips=2), imapload=dict(trips=1),
             gate=dict(reps=1, fast_sizes=(3, 24), slow_sizes=(3,), slow_parallel_only=()),
             bounce=dict(rounds=2, waiting_rounds=1))


def preflight(lab):
    if os.geteuid() != 0:
        raise SystemExit('bench: run as root (it reads the mailbox container\'s Maildirs through /proc/<pid>/root)')
    lab.pop3_stat(SHARED)  # a fresh lab creates an account's Maildir at its first login
    md = lab.maildir(SHARED).parent
    if not os.access(md, os.R_OK):
        raise SystemExit('bench: cannot read %s' % md)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='python -m bench')
    ap.add_argument('command', nargs='?', default='run', choices=['run', 'report'])
    ap.add_argument('--only', default=','.join(PARTS), help='comma-separated parts: %s' % ', '.join(PARTS))
    ap.add_argument('--quick', action='store_true', help='tiny counts: a smoke test of the machinery, not figures')
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    TMP.mkdir(parents=True, exist_ok=True)
    if args.quick:
        results_dir(TMP / 'quick')
    if args.command == 'report':
        md, png = report.write()
        say('wrote %s and %s' % (md.relative_to(ROOT), png.relative_to(ROOT)))
        return 0
    parts = [p.strip() for p in args.only.split(',') if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        ap.error('unknown part(s): %s' % ', '.join(sorted(unknown)))
    sizes = QUICK if args.quick else FULL
    if args.quick:
        results_dir(TMP / 'quick')  # a smoke test never overwrites the figures in bench/results
    lab = None
    if any(part not in EMBEDDED for part in parts):
        lab = lab_up()
        preflight(lab)
    t0 = time.monotonic()
    steps = len(parts)
    modules = dict(overhead=overhead, lag=lag, throughput=throughput, bigmailbox=bigmailbox, imapload=imapload,
                   gate=gate, bounce=bounce)
    for step, part in enumerate(parts, 1):
        t = time.monotonic()
        env = environment(None if part in EMBEDDED else lab)
        data = modules[part].run(lab, step=step, steps=steps, **sizes[part])
        data['env'] = env
        data['quick'] = args.quick
        data['seconds'] = round(time.monotonic() - t, 1)
        path = write_json('%s.json' % part, data)
        say('[%d/%d] %s done in %.0f s -> %s' % (step, steps, part, data['seconds'], path.relative_to(ROOT)))
    md, png = report.write()
    say('bench: %d part(s) in %.0f s; %s, %s'
        % (len(parts), time.monotonic() - t0, md.relative_to(ROOT), png.relative_to(ROOT)))
    for row in report.headline(report.load()):
        say('  %-80s %s  (goal %s: %s)' % row)
    return 0


if __name__ == '__main__':
    sys.exit(main())
