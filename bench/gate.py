"""[6/6] Health-gate wall time: the role as shipped (one mailops.health.mail_checks task, up to
mail_health_gate_parallel checks at once) against its former shape (one looped task per check
type, one module run per check), for 3, 24 and 96 checks, through ansible-playbook, against the
EMBEDDED lab (lab.embedded.EmbeddedLab, in this process, on 127.0.0.1): no Docker lab needed.

Checks: smtp, pop3, imap in turn, each logging in with an account of its own (gate01..gate96, so
no check waits for another on the same mailbox), lab CA verified, timeout 5 s.
  fast  STARTTLS on the plain listeners (smtp, pop3, imap): a few ms each
  slow  implicit TLS on smtp_tls, pop3_tls, imap_tls, each with the fault slow_banner:1 (the
        greeting comes 1 s after the connection), so every check takes about 1 s and passes
Arms, each one ansible-playbook run on localhost (connection local, pipelining):
  loop      bench/ansible/gate_loop.yml: the role's former tasks (commit 393435e): the plan, then
            one task per type looping over its checks (the summary left out)
  parallel  bench/ansible/gate_parallel.yml: the role as it is now, mail_health_gate_fail false,
            mail_health_gate_summary false, mail_health_gate_parallel at its default
Every cell (arm x speed x N) runs REPS times; in each round the cells run one after another in a
shuffled order. One untimed warm-up run of each playbook comes first. Figures: median wall time
of the whole ansible-playbook process per cell, N/3 ratios per arm (goal for the role: 24 checks
within 1.5x of 3) and loop / parallel per N. Every check must pass in every run.
"""

from __future__ import annotations

import json
import os
import random

from bench.common import PYTHON, ROOT, TMP, Progress, say, summary
from bench.measure import measure
from bench.throughput import ANSIBLE_DIR, ansible_env

ARMS = {'loop': ANSIBLE_DIR / 'gate_loop.yml', 'parallel': ANSIBLE_DIR / 'gate_parallel.yml'}
TYPES = ('smtp', 'pop3', 'imap')
SLOW_FAULT = 'slow_banner:1'
# speed: {type: (lab variant, tls_mode)}
VARIANTS = {
    'fast': {'smtp': ('smtp', 'starttls'), 'pop3': ('pop3', 'starttls'), 'imap': ('imap', 'starttls')},
    'slow': {'smtp': ('smtp_tls', 'tls'), 'pop3': ('pop3_tls', 'tls'), 'imap': ('imap_tls', 'tls')},
}
TIMEOUT = 5
GOAL_RATIO = 1.5
CHECK_ACTIONS = ('smtp_check', 'pop3_check', 'imap_check', 'mail_roundtrip', 'mail_checks')


def accounts(n: int) -> dict:
    return {'gate%02d' % i: 'gate%02d-pass' % i for i in range(1, n + 1)}


def role_parallel() -> int:
    """mail_health_gate_parallel as the role ships it (its defaults file)."""
    import yaml
    return int(yaml.safe_load((ROOT / 'roles/mail_health_gate/defaults/main.yml').read_text())
               ['mail_health_gate_parallel'])


def gate_checks(lab, speed: str, n: int) -> list:
    """n checks for mail_health_gate_checks: smtp, pop3, imap in turn, one account each."""
    users = list(accounts(n))
    checks = []
    for i in range(n):
        kind = TYPES[i % len(TYPES)]
        variant, tls_mode = VARIANTS[speed][kind]
        user = users[i]
        options = {'host': lab.host, 'port': lab.ports[variant], 'tls_mode': tls_mode, 'username': user,
                   'password': '%s-pass' % user}
        options.update({'smtp': {'smtp_auth': 'password'}, 'pop3': {'pop3_auth': 'password'},
                        'imap': {'imap_auth': 'password'}}[kind])
        checks.append({'name': '%s %s %02d' % (speed, kind, i + 1), 'type': kind, 'options': options})
    return checks


def run_gate(lab, arm: str, speed: str, n: int) -> dict:
    slug = 'gate-%s-%s-%d' % (arm, speed, n)
    counter = TMP / ('%s.counter.json' % slug)
    vars_file = TMP / ('%s.vars.json' % slug)
    log = TMP / ('%s.log' % slug)
    vars_file.write_text(json.dumps({'bench_checks': gate_checks(lab, speed, n),
                                     'bench_common': {'ca_path': lab.ca_path, 'timeout': TIMEOUT,
                                                      'validate_certs': True}}))
    os.chmod(vars_file, 0o600)
    counter.unlink(missing_ok=True)
    cmd = [os.path.join(os.path.dirname(PYTHON), 'ansible-playbook'), '-i', 'localhost,', '-e',
           '@%s' % vars_file, str(ARMS[arm])]
    with open(log, 'w') as f:
        figures = measure(cmd, env=ansible_env(counter), cwd=str(ANSIBLE_DIR), stdout=f)
    vars_file.unlink(missing_ok=True)
    data = json.loads(counter.read_text()) if counter.exists() else {}
    outcomes = data.get('gate_outcomes') or []
    tasks = data.get('tasks') or []
    return {'arm': arm, 'speed': speed, 'checks': n, 'rc': figures['rc'], 'wall_s': figures['wall_s'],
            'cpu_s': figures['cpu_s'], 'peak_tree_rss_mib': figures['peak_tree_rss_mib'],
            'ok': sum(1 for o in outcomes if o in ('ok', 'warning')),
            'failed': n - sum(1 for o in outcomes if o in ('ok', 'warning')),
            'check_tasks_s': round(sum(t['seconds'] for t in tasks
                                       if t['action'].rsplit('.', 1)[-1] in CHECK_ACTIONS), 3),
            'tasks': len(tasks), 'log': str(log.relative_to(ROOT))}


def _median(rows, key='wall_s'):
    return summary([r[key] for r in rows]).get('median')


def run(lab=None, reps=3, fast_sizes=(3, 24, 96), slow_sizes=(3, 24), slow_parallel_only=(96,), step=6,
        steps=6) -> dict:
    """lab is the Docker lab of the other parts (unused: this part starts the embedded lab)."""
    from lab.embedded import EmbeddedLab

    cells = [(arm, 'fast', n) for n in fast_sizes for arm in ARMS]
    cells += [(arm, 'slow', n) for n in slow_sizes for arm in ARMS]
    cells += [('parallel', 'slow', n) for n in slow_parallel_only]
    biggest = max(list(fast_sizes) + list(slow_sizes) + list(slow_parallel_only))
    faults = {VARIANTS['slow'][kind][0]: [SLOW_FAULT] for kind in TYPES}
    parallel = role_parallel()
    say('[%d/%d] health gate: loop vs one mail_checks task (role default parallel %d), fast checks N=%s, '
        '~1 s checks (%s) N=%s%s, %d runs per cell, embedded lab'
        % (step, steps, parallel, '/'.join(map(str, fast_sizes)), SLOW_FAULT, '/'.join(map(str, slow_sizes)),
           (' (parallel arm also N=%s)' % '/'.join(map(str, slow_parallel_only))) if slow_parallel_only else '',
           reps))
    rows = []
    rng = random.Random(6)
    progress = Progress(step, steps, 'health gate', reps * len(cells))
    with EmbeddedLab(accounts=accounts(biggest), faults=faults) as lab_e:
        warmup = [run_gate(lab_e, arm, 'fast', 3) for arm in ARMS]
        for _round in range(reps):
            order = list(cells)
            rng.shuffle(order)
            for arm, speed, n in order:
                row = run_gate(lab_e, arm, speed, n)
                row['round'] = _round
                rows.append(row)
                bad = ' (%d FAILED, rc %d: %s)' % (row['failed'], row['rc'], row['log']) if row['failed'] or row['rc'] \
                    else ''
                progress.tick(note='%s %s N=%d: %.1f s%s' % (arm, speed, n, row['wall_s'], bad))
        lab_info = {'host': lab_e.host, 'faults': lab_e.faults,
                    'ports': {v: lab_e.ports[v] for kinds in VARIANTS.values() for v, _tls in kinds.values()}}

    table = []
    for speed in ('fast', 'slow'):
        for n in sorted({c[2] for c in cells if c[1] == speed}):
            entry = {'speed': speed, 'checks': n}
            for arm in ARMS:
                got = [r for r in rows if (r['arm'], r['speed'], r['checks']) == (arm, speed, n)]
                if not got:
                    continue
                entry[arm] = {'wall_s': summary([r['wall_s'] for r in got]), 'cpu_s': summary([r['cpu_s'] for r in got]),
                              'check_tasks_s': summary([r['check_tasks_s'] for r in got]),
                              'failed': sum(r['failed'] for r in got), 'runs': len(got)}
            if 'loop' in entry and 'parallel' in entry:
                entry['loop_over_parallel'] = round(entry['loop']['wall_s']['median']
                                                    / entry['parallel']['wall_s']['median'], 2)
            table.append(entry)

    def wall(arm, speed, n):
        for e in table:
            if (e['speed'], e['checks']) == (speed, n) and arm in e:
                return e[arm]['wall_s']['median']
        return None

    ratios = {}
    for speed in ('fast', 'slow'):
        for arm in ARMS:
            base = wall(arm, speed, 3)
            for n in (24, 96):
                top = wall(arm, speed, n)
                if base and top:
                    ratios.setdefault(speed, {}).setdefault(arm, {})['%d/3' % n] = round(top / base, 2)
    return {'lab': 'lab.embedded.EmbeddedLab in the benchmark process, on %s' % lab_info['host'],
            'lab_info': lab_info, 'slow_fault': SLOW_FAULT, 'timeout_s': TIMEOUT, 'reps': reps,
            'role_parallel': parallel, 'goal_ratio_24_over_3': GOAL_RATIO,
            'arms': {arm: str(path.relative_to(ROOT)) for arm, path in ARMS.items()},
            'cells': table, 'ratios': ratios, 'warmup': warmup, 'rows': rows,
            'failed': sum(r['failed'] for r in rows) + sum(1 for r in rows if r['rc'])}
