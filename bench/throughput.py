"""[3/4] Round trips per minute from one 2-core controller across the dedicated accounts
rt06..rt20 (15 mailboxes), zero lost and zero left over, CPU per round trip and peak memory.

The controller is the same 2-core machine that runs the lab's Postfix and Dovecot, so every
figure here is for controller + mail system together; the lab containers' CPU time (their
cgroups) is reported next to the controller's.

Ways measured (path: submission 587 STARTTLS + AUTH -> POP3S 995 APOP, lab CA):
  core, thread pool       the raw core, one thread per mailbox, back to back for SECONDS: the ceiling
  ansible forks           ansible-playbook, 15 inventory hosts (ansible_connection: local), one
                          per mailbox, forks=15, mail_roundtrip in a loop of K per host
  ansible batch           ansible-playbook, one task on localhost running
                          mailops.health.mail_roundtrip_batch: all round trips in threads inside
                          one module process
After each way: every mailbox must be empty (Maildir new/ + cur/) and nothing queued for them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

from bench.common import (BENCH_ACCOUNTS, PYTHON, ROOT, TMP, Progress, collections_root, container_cpu_ns,
                          roundtrip_params, say, summary)
from bench.measure import measure

ANSIBLE_DIR = ROOT / 'bench' / 'ansible'


def settle_and_check(lab, accounts, timeout=20.0) -> dict:
    """Wait until nothing is queued for the accounts and their Maildirs are empty (or timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        queued = lab.queued_for(accounts)
        left = {u: lab.maildir_count(u) for u in accounts}
        if (queued == 0 and not any(left.values())) or time.monotonic() > deadline:
            return {'queued': queued, 'leftover': sum(left.values()),
                    'leftover_by_account': {u: n for u, n in left.items() if n}}
        time.sleep(0.5)


def with_server_cpu(lab, fn):
    before = container_cpu_ns(lab)
    out = fn()
    after = container_cpu_ns(lab)
    cpu = {}
    for role in before:
        if before[role] is not None and after.get(role) is not None:
            cpu[role] = round((after[role] - before[role]) / 1e9, 2)
    out['lab_containers_cpu_s'] = cpu
    if out.get('ok'):
        out['lab_cpu_ms_per_trip'] = round(sum(cpu.values()) / out['ok'] * 1000, 2)
    return out


def core_pool(lab, seconds, progress, label) -> dict:
    lab_json = TMP / 'lab.json'
    lab_json.write_text(json.dumps(lab.data))
    cmd = [PYTHON, '-m', 'bench.throughput_core', '--lab', str(lab_json), '--accounts', ','.join(BENCH_ACCOUNTS),
           '--seconds', str(seconds), '--label', label]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if line.startswith('progress '):
            n = int(line.split()[1])
            progress.tick(0, note='%s: %d round trips' % (label, n))
        else:
            sys.stderr.write(line)
    out = proc.stdout.read()
    if proc.wait() != 0:
        raise RuntimeError('throughput_core failed')
    progress.tick(1, note=label)
    return json.loads(out)


def ansible_env(counter_out) -> dict:
    env = dict(os.environ)
    env.pop('PYTHONPATH', None)
    env.update(ANSIBLE_COLLECTIONS_PATH=str(collections_root()), ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_NOCOLOR='1', ANSIBLE_HOST_KEY_CHECKING='0',
               ANSIBLE_CALLBACK_PLUGINS=str(ANSIBLE_DIR / 'callback_plugins'),
               ANSIBLE_PIPELINING='1',
               ANSIBLE_STDOUT_CALLBACK='ansible.builtin.minimal', ANSIBLE_DISPLAY_OK_HOSTS='0',
               ANSIBLE_PYTHON_INTERPRETER=PYTHON, BENCH_COUNTER_OUT=str(counter_out))
    return env


def run_playbook(lab, name, playbook, inventory, extra_vars, forks, trips, progress) -> dict:
    slug = re.sub(r'[^a-z0-9]+', '-', name.lower()).strip('-')
    counter = TMP / ('%s.counter.json' % slug)
    vars_file = TMP / ('%s.vars.json' % slug)
    vars_file.write_text(json.dumps(extra_vars))
    os.chmod(vars_file, 0o600)
    counter.unlink(missing_ok=True)
    cmd = [os.path.join(os.path.dirname(PYTHON), 'ansible-playbook'), '-i', str(inventory), '-f', str(forks),
           '-e', '@%s' % vars_file, str(playbook)]
    log = TMP / ('%s.log' % slug)

    def go():
        with open(log, 'w') as f:
            figures = measure(cmd, env=ansible_env(counter), cwd=str(ANSIBLE_DIR), stdout=f)
        return figures

    figures = with_server_cpu(lab, go)
    vars_file.unlink(missing_ok=True)
    data = json.loads(counter.read_text()) if counter.exists() else {'ok': 0, 'failed': trips, 'trip_time_ms': []}
    progress.tick(1, note=name)
    ok = data['ok']
    out = {'label': name, 'planned': trips, 'ok': ok, 'failed': data['failed'], 'failures': data['failures'][:5],
           'forks': forks, 'rc': figures['rc'], 'wall_s': figures['wall_s'],
           'per_minute': round(ok / figures['wall_s'] * 60, 1) if figures['wall_s'] else None,
           'cpu_s': figures['cpu_s'], 'cpu_ms_per_trip': round(figures['cpu_s'] / max(1, ok) * 1000, 1),
           'max_single_rss_mib': figures['max_single_rss_mib'], 'peak_tree_rss_mib': figures['peak_tree_rss_mib'],
           'peak_tree_procs': figures['peak_tree_procs'],
           'trip_time_ms': summary([t for t in data['trip_time_ms'] if t is not None]),
           'log': str(log.relative_to(ROOT))}
    out['lab_containers_cpu_s'] = cpu = figures.get('lab_containers_cpu_s') or {}
    if ok and cpu:
        out['lab_cpu_ms_per_trip'] = round(sum(cpu.values()) / ok * 1000, 2)
    return out


def forks_inventory(lab) -> str:
    lines = ['all:', '  hosts:']
    for user in BENCH_ACCOUNTS:
        lines += ['    bench-%s:' % user, '      ansible_connection: local', '      probe_account: %s' % user]
    path = TMP / 'forks_inventory.yml'
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def run(lab, core_seconds=30, loop_per_host=6, batch_rounds=20, step=3, steps=5) -> dict:
    for user in BENCH_ACCOUNTS:           # Maildirs exist, leftovers of aborted runs gone
        lab.clean_probe_mail(user)
    before = settle_and_check(lab, BENCH_ACCOUNTS, timeout=5)
    say('[%d/%d] round trips per minute: %d mailboxes (%s..%s); core %d s, ansible forks %d x %d, '
        'ansible batch %d x %d' % (step, steps, len(BENCH_ACCOUNTS), BENCH_ACCOUNTS[0], BENCH_ACCOUNTS[-1],
                                   core_seconds, len(BENCH_ACCOUNTS), loop_per_host,
                                   len(BENCH_ACCOUNTS), batch_rounds))
    progress = Progress(step, steps, 'round trips per minute', 3)
    ways = []

    ways.append(with_server_cpu(lab, lambda: core_pool(lab, core_seconds, progress, 'core, thread pool')))
    ways[-1]['after'] = settle_and_check(lab, BENCH_ACCOUNTS)

    inventory = forks_inventory(lab)
    probes = {u: roundtrip_params(lab, u) for u in BENCH_ACCOUNTS}
    trips = len(BENCH_ACCOUNTS) * loop_per_host
    ways.append(run_playbook(lab, 'ansible forks', ANSIBLE_DIR / 'forks.yml', inventory,
                             {'bench_probes': probes, 'bench_loop': loop_per_host}, len(BENCH_ACCOUNTS), trips,
                             progress))
    ways[-1]['after'] = settle_and_check(lab, BENCH_ACCOUNTS)

    batch = [probes[u] for _round in range(batch_rounds) for u in BENCH_ACCOUNTS]
    ways.append(run_playbook(lab, 'ansible batch', ANSIBLE_DIR / 'batch.yml', 'localhost,',
                             {'bench_batch': batch, 'bench_parallel': len(BENCH_ACCOUNTS)}, 1, len(batch), progress))
    ways[-1]['after'] = settle_and_check(lab, BENCH_ACCOUNTS)

    return {'accounts': BENCH_ACCOUNTS, 'before': before, 'ways': ways,
            'goal': '1,000 round trips per minute, zero lost, zero leftover'}
