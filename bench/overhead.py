"""[1/5] Probe overhead: the response time smtp_check / pop3_check / imap_check report against the
one the monitoring plugins check_smtp / check_pop / check_imap report (perfdata time=...s), on the
same lab endpoints,
interleaved run by run; then the whole-process wall time of one module run, direct and through
ansible-playbook.

Both sides run as a fresh process per check, as they do in production: ours is the module file
itself (python plugins/modules/smtp_check.py, arguments on stdin, the way Ansible runs it minus
the AnsiballZ wrapper), theirs the plugin binary. Each tool times itself; what each includes:

  check_smtp  timer starts before connect (name resolution included), banner, HELO (EHLO with
              -S/-A), [STARTTLS, handshake without certificate verification, EHLO], [AUTH LOGIN],
              QUIT and its 221 reply, close.
  smtp_check  timer starts before name resolution: connect, banner, EHLO, [STARTTLS, handshake
              WITH certificate verification against ca_path, EHLO], [AUTH], QUIT and its 221, close.
  check_pop   (check_tcp) timer starts before connect: [implicit TLS handshake, no verification],
              reads until the banner matches '+OK', sends QUIT without waiting for the answer, close.
  pop3_check  timer starts before name resolution: connect, [implicit TLS with verification],
              banner, CAPA and its multi-line answer, QUIT and its +OK, close: two round trips
              more than check_pop.
  check_imap  (check_tcp) as check_pop: [implicit TLS, no verification], reads until the banner
              matches '* OK', sends 'a1 LOGOUT' without waiting for the answer, close.
  imap_check  (imap_auth none) timer as above: connect, [implicit TLS with verification], banner
              (Dovecot lists its capabilities in it, so no CAPABILITY command), LOGOUT and its
              tagged OK, close: one round trip more than check_imap.
Ours make their SSL context (when the mode may speak TLS; once per process) before the timer starts.

So that the gap can be told apart from the extra dialogue, a third arm (theirs_matched) runs the
plugin with our dialogue as far as it goes: check_pop with CAPA sent too (-s 'CAPA\\r\\n' -e SASL:
banner + CAPA answer, still no QUIT answer); check_imap sending LOGOUT itself and expecting its
tagged answer (-s 'a1 LOGOUT\\r\\n' -e 'a1 OK': banner + LOGOUT answer, our whole dialogue).

A pause of GAP seconds precedes every check: Dovecot's pop3-login serves one connection per
process (service_count=1) and needs a moment to fork the next one; back-to-back connections
would time Dovecot's fork, and would favour whichever side runs after a slower one.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import time

from bench.common import PYTHON, ROOT, Progress, collections_root, rnd, say, summary

PLUGINS = '/usr/lib/nagios/plugins'
GAP = 0.03
_PERF_TIME = re.compile(r'\btime=([0-9.]+)s')


def variants(lab) -> list[dict]:
    host, ports, ca = lab.host, lab.ports, lab.ca_path
    user = 'rt06'
    pw = lab.accounts[user]['password']
    base = dict(host=host, ca_path=ca, validate_certs=True, timeout=30)
    return [
        dict(name='smtp 25 plaintext', module='smtp_check',
             ours=dict(base, port=ports['smtp'], tls_mode='none'),
             theirs=[PLUGINS + '/check_smtp', '-H', host, '-p', str(ports['smtp'])]),
        dict(name='smtp 587 STARTTLS', module='smtp_check',
             ours=dict(base, port=ports['submission'], tls_mode='starttls'),
             theirs=[PLUGINS + '/check_smtp', '-H', host, '-p', str(ports['submission']), '-S']),
        dict(name='smtp 587 STARTTLS + AUTH LOGIN', module='smtp_check',
             ours=dict(base, port=ports['submission'], tls_mode='starttls', smtp_auth='password',
                       auth_mechanism='login', username=user, password=pw),
             theirs=[PLUGINS + '/check_smtp', '-H', host, '-p', str(ports['submission']), '-S',
                     '-A', 'LOGIN', '-U', user, '-P', pw]),
        dict(name='pop3 110 plaintext', module='pop3_check',
             ours=dict(base, port=ports['pop3'], tls_mode='none', pop3_auth='none'),
             theirs=[PLUGINS + '/check_pop', '-H', host, '-p', str(ports['pop3'])],
             theirs_matched=[PLUGINS + '/check_pop', '-H', host, '-p', str(ports['pop3']), '-E', '-s', 'CAPA\\r\\n',
                             '-e', 'SASL'], matched='+ CAPA'),
        dict(name='pop3 995 implicit TLS', module='pop3_check',
             ours=dict(base, port=ports['pop3s'], tls_mode='tls', pop3_auth='none'),
             theirs=[PLUGINS + '/check_pop', '-H', host, '-p', str(ports['pop3s']), '-S'],
             theirs_matched=[PLUGINS + '/check_pop', '-H', host, '-p', str(ports['pop3s']), '-S', '-E', '-s',
                             'CAPA\\r\\n', '-e', 'SASL'], matched='+ CAPA'),
        dict(name='imap 143 plaintext', module='imap_check',
             ours=dict(base, port=ports['imap'], tls_mode='none', imap_auth='none'),
             theirs=[PLUGINS + '/check_imap', '-H', host, '-p', str(ports['imap'])],
             theirs_matched=[PLUGINS + '/check_imap', '-H', host, '-p', str(ports['imap']), '-E', '-s',
                             'a1 LOGOUT\\r\\n', '-e', 'a1 OK'], matched='+ LOGOUT answer'),
        dict(name='imap 993 implicit TLS', module='imap_check',
             ours=dict(base, port=ports['imaps'], tls_mode='tls', imap_auth='none'),
             theirs=[PLUGINS + '/check_imap', '-H', host, '-p', str(ports['imaps']), '-S'],
             theirs_matched=[PLUGINS + '/check_imap', '-H', host, '-p', str(ports['imaps']), '-S', '-E', '-s',
                             'a1 LOGOUT\\r\\n', '-e', 'a1 OK'], matched='+ LOGOUT answer'),
    ]


def module_env() -> dict:
    env = dict(os.environ)
    env['PYTHONPATH'] = str(collections_root())
    env.pop('PYTHONDONTWRITEBYTECODE', None)
    return env


def run_module(module: str, args: dict, env: dict) -> tuple[float, float]:
    """One direct module run; (reported response_time_ms, process wall ms)."""
    payload = json.dumps({'ANSIBLE_MODULE_ARGS': args})
    t0 = time.perf_counter()
    proc = subprocess.run([PYTHON, str(ROOT / 'plugins' / 'modules' / (module + '.py'))], input=payload,
                          capture_output=True, text=True, env=env, cwd=str(collections_root().parent), check=False)
    wall = (time.perf_counter() - t0) * 1000
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        raise RuntimeError('%s gave no JSON: %s %s' % (module, proc.stdout[-500:], proc.stderr[-500:])) from None
    if out.get('failed'):
        raise RuntimeError('%s failed: %s' % (module, out.get('msg')))
    return out['response_time_ms'], wall


def run_plugin(cmd: list[str]) -> tuple[float, float]:
    """One plugin run; (perfdata time in ms, process wall ms)."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = (time.perf_counter() - t0) * 1000
    match = _PERF_TIME.search(proc.stdout)
    if proc.returncode != 0 or not match:
        raise RuntimeError('%s: rc %s: %s' % (os.path.basename(cmd[0]), proc.returncode, proc.stdout.strip()[:300]))
    return float(match.group(1)) * 1000, wall


def bench_response_times(lab, runs: int, step: int, steps: int) -> list[dict]:
    env = module_env()
    out = []
    vs = variants(lab)
    progress = Progress(step, steps, 'probe overhead', runs * len(vs))
    rng = random.Random(6)
    for v in vs:
        arms = {'ours': [], 'theirs': []}
        if 'theirs_matched' in v:
            arms['theirs_matched'] = []
        walls = {k: [] for k in arms}
        for _round in range(runs):
            order = list(arms)
            rng.shuffle(order)
            for arm in order:
                time.sleep(GAP)
                if arm == 'ours':
                    reported, wall = run_module(v['module'], v['ours'], env)
                else:
                    reported, wall = run_plugin(v[arm])
                arms[arm].append(reported)
                walls[arm].append(wall)
            progress.tick(note=v['name'])
        pairs = [o / t for o, t in zip(arms['ours'], arms['theirs']) if t > 0]
        row = {
            'name': v['name'],
            'runs': runs,
            'ours_ms': summary(arms['ours']),
            'theirs_ms': summary(arms['theirs']),
            'ratio_of_medians': rnd(summary(arms['ours'])['median'] / summary(arms['theirs'])['median'], 3),
            'median_pair_ratio': rnd(summary(pairs)['median'], 3),
            'process_wall_ms': {k: summary(w) for k, w in walls.items()},
            'samples': arms,
        }
        if 'theirs_matched' in arms:
            row['matched'] = v['matched']
            row['theirs_matched_ms'] = summary(arms['theirs_matched'])
            row['ratio_vs_matched'] = rnd(row['ours_ms']['median'] / row['theirs_matched_ms']['median'], 3)
        out.append(row)
    return out


def bench_module_wall(lab, runs: int, step: int, steps: int) -> dict:
    """Whole-process wall time of one smtp_check run (587 STARTTLS): ansible-playbook with one
    task on localhost, the module file run directly, and check_smtp, interleaved."""
    tmp = collections_root().parent
    playbook = tmp / 'one_task.yml'
    args = dict(host=lab.host, port=lab.ports['submission'], tls_mode='starttls', ca_path=lab.ca_path)
    playbook.write_text(
        '- name: One smtp_check\n  hosts: localhost\n  gather_facts: false\n  tasks:\n'
        '    - name: Submission answers with STARTTLS\n      mailops.health.smtp_check:\n'
        + ''.join('        %s: %s\n' % (k, json.dumps(v)) for k, v in args.items()))
    env = module_env()
    aenv = dict(env, ANSIBLE_COLLECTIONS_PATH=str(collections_root()), ANSIBLE_LOCALHOST_WARNING='0',
                ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_NOCOLOR='1', ANSIBLE_PYTHON_INTERPRETER=PYTHON,
                ANSIBLE_STDOUT_CALLBACK='default')
    aenv.pop('PYTHONPATH')
    ansible_playbook = os.path.join(os.path.dirname(PYTHON), 'ansible-playbook')
    walls = {'ansible-playbook (1 task, localhost)': [], 'module file run directly': [], 'check_smtp -S': []}
    progress = Progress(step, steps, 'module wall time', runs)
    for _round in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run([ansible_playbook, '-i', 'localhost,', '-c', 'local', str(playbook)], env=aenv,
                              capture_output=True, text=True, cwd=str(tmp), check=False)
        walls['ansible-playbook (1 task, localhost)'].append((time.perf_counter() - t0) * 1000)
        if proc.returncode != 0:
            raise RuntimeError('ansible-playbook failed: %s %s' % (proc.stdout[-1500:], proc.stderr[-1500:]))
        walls['module file run directly'].append(run_module('smtp_check', args, env)[1])
        walls['check_smtp -S'].append(run_plugin([PLUGINS + '/check_smtp', '-H', lab.host, '-p',
                                                  str(lab.ports['submission']), '-S'])[1])
        progress.tick()
    return {k: summary(v) for k, v in walls.items()}


def ensure_plugins():
    missing = [p for p in ('check_smtp', 'check_pop', 'check_imap') if not os.access(os.path.join(PLUGINS, p), os.X_OK)]
    if missing:
        raise SystemExit('monitoring plugins missing (%s): apt-get install -y monitoring-plugins-standard '
                         '(make bench does it as root on Debian)' % ', '.join(missing))
    version = subprocess.run([PLUGINS + '/check_smtp', '-V'], capture_output=True, text=True,
                             check=False).stdout.strip()
    return version


def run(lab, runs: int = 60, wall_runs: int = 10, step: int = 1, steps: int = 5) -> dict:
    version = ensure_plugins()
    say('[%d/%d] probe overhead: %d interleaved runs per endpoint (ours: module process; theirs: %s)'
        % (step, steps, runs, version))
    rows = bench_response_times(lab, runs, step, steps)
    wall = bench_module_wall(lab, wall_runs, step, steps)
    return {'plugins_version': version, 'gap_s': GAP, 'endpoints': rows, 'module_wall_ms': wall,
            'goal': 'median ratio ours/theirs <= 1.10'}
