"""Run a command and measure it from outside: wall time, CPU time of the whole process tree,
the largest single process (ru_maxrss) and the peak summed RSS of the tree (sampled at 20 Hz).

    python -m bench.measure [--cwd DIR] -- CMD [ARG ...]     # prints one JSON line on stderr at the end

Used through measure() below, which runs the wrapper as its own process so that the
RUSAGE_CHILDREN figures hold only that command's tree, not earlier children of the benchmark.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import threading
import time


def _children(pid: int) -> list[int]:
    try:
        with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(_children(p))
    return out


def _rss_kib(pid: int) -> int:
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run(cmd: list[str], env=None, cwd=None, stdout=None) -> dict:
    peak = {'tree_rss_kib': 0, 'tree_procs': 0}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=stdout)
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            pids = _tree(proc.pid)
            total = sum(_rss_kib(p) for p in pids)
            if total > peak['tree_rss_kib']:
                peak['tree_rss_kib'] = total
            peak['tree_procs'] = max(peak['tree_procs'], len(pids))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    rc = proc.wait()
    wall = time.monotonic() - t0
    done.set()
    sampler.join()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {'rc': rc, 'wall_s': round(wall, 3), 'cpu_user_s': round(ru.ru_utime, 3), 'cpu_sys_s': round(ru.ru_stime, 3),
            'cpu_s': round(ru.ru_utime + ru.ru_stime, 3), 'max_single_rss_mib': round(ru.ru_maxrss / 1024, 1),
            'peak_tree_rss_mib': round(peak['tree_rss_kib'] / 1024, 1), 'peak_tree_procs': peak['tree_procs']}


def measure(cmd: list[str], env=None, cwd=None, stdout=None) -> dict:
    """run(cmd) inside a fresh wrapper process; returns its figures."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    wrapper = subprocess.run([sys.executable, '-m', 'bench.measure', '--cwd', cwd or os.getcwd(), '--'] + cmd,
                             env=env, cwd=root, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False)
    lines = [line for line in wrapper.stderr.splitlines() if line.startswith('{"rc"')]
    if not lines:
        raise RuntimeError('measure: no figures from %s\n%s' % (cmd, wrapper.stderr[-3000:]))
    for line in wrapper.stderr.splitlines():
        if not line.startswith('{"rc"'):
            sys.stderr.write(line + '\n')
    return json.loads(lines[-1])


if __name__ == '__main__':
    args = sys.argv[1:]
    workdir = None
    if args[:1] == ['--cwd']:
        workdir, args = args[1], args[2:]
    if args and args[0] == '--':
        args = args[1:]
    figures = run(args, cwd=workdir)
    sys.stderr.write(json.dumps(figures) + '\n')
    sys.exit(0)
