"""The raw round-trip core in a thread pool: one thread per account, each running round trips
back to back on its own mailbox for SECONDS (or COUNT each). Run as its own process so that its
CPU time and peak memory (ru_maxrss) are the core's alone.

    python -m bench.throughput_core --lab LAB.json --accounts rt06,rt07 --seconds 30 [--threads-per-account 1]

Prints one JSON object: trips, failures by stage, wall, CPU (process), ru_maxrss, per-trip
figures. Progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time

from bench.common import Lab, cpu_seconds, import_core, roundtrip_params, summary


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument('--lab', required=True)
    ap.add_argument('--accounts', required=True)
    ap.add_argument('--seconds', type=float, default=30)
    ap.add_argument('--threads-per-account', type=int, default=1)
    ap.add_argument('--path', default='submission+pop3s')
    ap.add_argument('--label', default='core')
    args = ap.parse_args(argv)
    lab = Lab(json.load(open(args.lab)))
    _smtp, _pop3, rt, probe = import_core()
    accounts = args.accounts.split(',')
    stop_at = time.monotonic() + args.seconds
    lock = threading.Lock()
    results, failures = [], {}
    started = [0]

    def worker(user):
        params = roundtrip_params(lab, user, args.path)
        while time.monotonic() < stop_at:
            with lock:
                started[0] += 1
            t0 = time.monotonic()
            try:
                r = rt.mail_roundtrip(dict(params))
                row = {'ok': True, 'trip_time_ms': r['trip_time_ms'], 'wall_ms': (time.monotonic() - t0) * 1000,
                       'attempts': r['attempts']}
            except probe.ProbeError as e:
                row = {'ok': False, 'stage': e.stage, 'msg': e.message[:200]}
            with lock:
                results.append(row)
                if not row['ok']:
                    failures[row['stage']] = failures.get(row['stage'], 0) + 1

    cpu0, t0 = cpu_seconds(), time.monotonic()
    threads = [threading.Thread(target=worker, args=(u,), daemon=True)
               for u in accounts for _n in range(args.threads_per_account)]
    for t in threads:
        t.start()
    last = 0
    while any(t.is_alive() for t in threads):
        time.sleep(0.5)
        with lock:
            n = len(results)
        if time.monotonic() - t0 >= last + 5:
            last += 5
            sys.stderr.write('progress %d %.1f\n' % (n, time.monotonic() - t0))
            sys.stderr.flush()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    cpu = cpu_seconds() - cpu0
    ok = [r for r in results if r['ok']]
    out = {
        'label': args.label, 'threads': len(threads), 'accounts': len(accounts), 'path': args.path,
        'trips': len(results), 'ok': len(ok), 'failed': len(results) - len(ok), 'failures': failures,
        'wall_s': round(wall, 2), 'per_minute': round(len(ok) / wall * 60, 1),
        'cpu_s': round(cpu, 2), 'cpu_ms_per_trip': round(cpu / max(1, len(ok)) * 1000, 2),
        'ru_maxrss_mib': round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        'trip_time_ms': summary([r['trip_time_ms'] for r in ok]),
        'roundtrip_wall_ms': summary([r['wall_ms'] for r in ok]),
        'attempts': summary([r['attempts'] for r in ok]),
    }
    print(json.dumps(out))


if __name__ == '__main__':
    main()
