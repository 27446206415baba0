"""The collection on every ansible-core minor that meta/runtime.yml claims, through ansible-playbook
against the embedded lab.

    python tests/compat/compat.py [--only 2.16,2.19] [--venvs DIR] [--work DIR] [--jobs N]

For each ansible-core minor in CORES: a venv of its own (DIR/ansible-core-<minor>-py<X.Y>, made
from tests/compat/requirements/ansible-core-<minor>.txt with a controller Python that core
supports; remade only when that file or the Python changes: a stamp inside the venv), the
collection tarball (built once) installed with that core's own ansible-galaxy, and then one
ansible-playbook run of tests/compat/site.yml: every module (shared options set once through
module_defaults and the action group mailops.health.mail), the role's failure path, and the
playbooks playbooks/health_gate.yml and playbooks/post_deploy_verify.yml by their FQCN, all run on
the oldest managed-node Python that core supports (from the floor in tests/config.yml), against
the embedded lab started once in the background (`python -m lab.embedded --describe-file`) and
stopped by its pid. playbooks/lab_matrix.yml needs the Docker lab and the checkout (it is not in
the tarball): each core only syntax-checks it.

A run fails on a failed play and on any deprecation warning Ansible prints. The logs go to
WORK/<minor>/. Runs under the project venv's Python (the embedded lab needs aiosmtpd and trustme).
"""

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / 'tests' / 'tools'))
sys.path.insert(0, str(ROOT))

from pythons import pyenv_pythons, pyenv_root  # noqa: E402
from lab.playbook_vars import playbook_vars  # noqa: E402


class Core:
    def __init__(self, minor, controllers, managed):
        self.minor = minor
        # Controller Pythons this core supports, in order of preference: spread over the cores so
        # that each controller Python runs at least one of them.
        self.controllers = controllers
        # The oldest managed-node Python this core supports that our modules support too.
        self.managed = managed
        self.requirements = HERE / 'requirements' / ('ansible-core-%s.txt' % minor)


# ansible-core's support matrix: controller / managed node Pythons.
CORES = [
    Core('2.16', ('3.10', '3.11', '3.12'), '3.7'),   # controller 3.10-3.12, managed node 2.7, 3.6-3.12
    Core('2.17', ('3.12', '3.10', '3.11'), '3.7'),   # controller 3.10-3.12, managed node 3.7-3.12
    Core('2.18', ('3.13', '3.11', '3.12'), '3.8'),   # controller 3.11-3.13, managed node 3.8-3.13
    Core('2.19', ('3.11', '3.12', '3.13'), '3.8'),   # controller 3.11-3.13, managed node 3.8-3.13
    Core('2.20', ('3.12', '3.13'), '3.9'),           # controller 3.12-3.14, managed node 3.9-3.14
    Core('2.21', ('3.13', '3.12'), '3.9'),           # controller 3.12-3.14, managed node 3.9-3.14
]

# Each core's round trips go to a mailbox of their own (cores run side by side).
MAILBOXES = ['bob', 'rt01', 'rt02', 'rt03', 'rt04', 'rt05']
QUIET = {'ANSIBLE_LOCALHOST_WARNING': '0', 'ANSIBLE_INVENTORY_UNPARSED_WARNING': '0', 'ANSIBLE_NOCOLOR': '1',
         'ANSIBLE_FORCE_COLOR': '0', 'ANSIBLE_DEPRECATION_WARNINGS': '1', 'PYTHONWARNINGS': 'ignore'}


def pythons():
    found = dict(('%d.%d' % version, exe) for version, exe in pyenv_pythons(pyenv_root()).items())
    for minor in ['3.%d' % n for n in range(7, 15)]:
        if minor not in found:
            exe = shutil.which('python' + minor)
            if exe and '/shims/' not in exe:
                found[minor] = exe
    return found


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ensure_venv(core, python, venvs):
    """The core's venv, made or remade when its requirements or its Python changed."""
    venv = venvs / ('ansible-core-%s-py%s' % (core.minor, python[0]))
    stamp = venv / '.mailops-health-compat.stamp'
    want = '%s %s\n' % (sha256(core.requirements), os.path.realpath(python[1]))
    venvs.mkdir(parents=True, exist_ok=True)
    with open(str(venvs / ('.%s.lock' % venv.name)), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once share the venv, never both build it
        if stamp.exists() and stamp.read_text() == want and (venv / 'bin' / 'ansible-playbook').exists():
            return venv, 'reused'
        start = time.monotonic()
        shutil.rmtree(str(venv), ignore_errors=True)
        for command in ([python[1], '-m', 'venv', str(venv)],
                        [str(venv / 'bin' / 'python'), '-m', 'pip', 'install', '--disable-pip-version-check', '-q',
                         '-r', str(core.requirements)]):
            run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                                 check=False)
            if run.returncode:
                raise RuntimeError('%s: %s' % (' '.join(command), run.stdout[-2000:]))
        stamp.write_text(want)
        return venv, 'made in %.0f s' % (time.monotonic() - start)


class EmbeddedLab:
    """python -m lab.embedded in the background; stopped by its pid."""

    def __init__(self, work):
        self.describe_file = work / 'lab.json'
        self.log = work / 'lab.log'
        self.process = None

    def __enter__(self):
        if self.describe_file.exists():
            self.describe_file.unlink()
        with open(str(self.log), 'w') as log:
            self.process = subprocess.Popen([sys.executable, '-m', 'lab.embedded', '--describe-file',
                                             str(self.describe_file)], cwd=str(ROOT), stdout=log, stderr=log)
        deadline = time.monotonic() + 20
        while not self.describe_file.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError('the embedded lab did not start:\n' + self.log.read_text())
            time.sleep(0.05)
        return json.loads(self.describe_file.read_text())

    def __exit__(self, *exc):
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait()


def variables(lab, mailbox, managed_python):
    accounts = dict((a['username'], a) for a in lab['accounts'])
    ports = lab['ports']
    account = accounts[mailbox]
    result = {
        'ansible_python_interpreter': managed_python,
        'compat_lab': lab,
        'compat_user': account['username'],
        'compat_password': account['password'],
        'compat_address': account['address'],
        'compat_sender': accounts['alice']['address'],
        # playbooks/post_deploy_verify.yml, with the embedded lab's listeners as the services
        'post_deploy_host': lab['host'],
        'post_deploy_user': account['username'],
        'post_deploy_password': account['password'],
        'post_deploy_address': account['address'],
        'post_deploy_ca_path': lab['ca_path'],
        'post_deploy_ports': {'smtp': ports['smtp'], 'submission': ports['smtp'], 'smtps': ports['smtp_tls'],
                              'pop3': ports['pop3'], 'pop3s': ports['pop3_tls']},
        'post_deploy_wait': 5,
    }
    # playbooks/health_gate.yml: its health_* variables as `make demo` gives them (health_critical_ms
    # unset on purpose: that is what broke it before ansible-core 2.19)
    result.update(playbook_vars(lab, sender='alice', receiver=mailbox))
    return result


DEPRECATION = re.compile(r'\[DEPRECATION WARNING\]')


def run_core(core, venv, python, tarball, lab, mailbox, work):
    """Install the tarball with the core's ansible-galaxy, run site.yml, syntax-check lab_matrix.yml."""
    out = work / core.minor
    shutil.rmtree(str(out), ignore_errors=True)
    out.mkdir(parents=True)
    collections = out / 'collections'
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collections), ANSIBLE_LOCAL_TEMP=str(out / 'tmp'), **QUIET)
    env.pop('ANSIBLE_CONFIG', None)
    managed = python_for(core.managed)
    (out / 'vars.json').write_text(json.dumps(variables(lab, mailbox, managed or python[1])))
    bin_dir = venv / 'bin'
    steps = [
        ('install', [str(bin_dir / 'ansible-galaxy'), 'collection', 'install', '-p', str(collections), str(tarball)]),
        ('site.yml', [str(bin_dir / 'ansible-playbook'), str(HERE / 'site.yml'), '-e', '@%s' % (out / 'vars.json')]),
        ('lab_matrix.yml syntax', [str(bin_dir / 'ansible-playbook'), '--syntax-check',
                                   str(ROOT / 'playbooks' / 'lab_matrix.yml')]),
    ]
    start = time.monotonic()
    problems = []
    for name, command in steps:
        run = subprocess.run(command, cwd=str(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             universal_newlines=True, check=False)
        log = out / (re.sub(r'\W+', '-', name) + '.log')
        log.write_text(run.stdout)
        if run.returncode:
            problems.append('%s exited %d (%s):\n%s' % (name, run.returncode, log, tail(run.stdout)))
            break
        deprecations = [line for line in run.stdout.splitlines() if DEPRECATION.search(line)]
        if deprecations:
            problems.append('%s: deprecation warnings (%s):\n    %s' % (name, log, '\n    '.join(deprecations)))
    plays = recap(out / 'site-yml.log')
    return {'core': core.minor, 'version': installed_version(venv), 'controller': python[0],
            'managed': core.managed if managed else '%s (no %s here)' % (python[0], core.managed),
            'seconds': time.monotonic() - start, 'problems': problems, 'tasks': plays}


def tail(text, lines=40):
    return '\n'.join('    ' + line for line in text.strip().splitlines()[-lines:])


def recap(log):
    """ok/changed/failed of the PLAY RECAP line."""
    text = log.read_text() if log.exists() else ''
    match = re.search(r'localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)', text)
    return 'ok=%s changed=%s failed=%s' % (match.group(1), match.group(2), match.group(4)) if match else '-'


def installed_version(venv):
    for path in (venv / 'lib').glob('python*/site-packages/ansible_core-*.dist-info'):
        return path.name[:-len('.dist-info')].split('-')[1]
    return '?'


_PYTHONS = {}


def python_for(minor):
    if not _PYTHONS:
        _PYTHONS.update(pythons())
    return _PYTHONS.get(minor)


def build_tarball(work):
    out = work / 'tarball'
    shutil.rmtree(str(out), ignore_errors=True)
    out.mkdir(parents=True)
    galaxy = Path(sys.executable).parent / 'ansible-galaxy'
    subprocess.run([str(galaxy), 'collection', 'build', str(ROOT), '--output-path', str(out)], check=True,
                   stdout=subprocess.DEVNULL)
    tarball, = out.glob('mailops-health-*.tar.gz')
    return tarball


# Modules outside the action group mail: oauth2_token speaks HTTP to a token endpoint and takes
# none of the mail checks' options, so a module_defaults group for the checks must not reach it.
NOT_IN_GROUP = ('oauth2_token',)


def group_covers_every_module():
    """meta/runtime.yml's action group mail lists every mail check module in plugins/modules: [missing]."""
    text = (ROOT / 'meta' / 'runtime.yml').read_text()
    group = re.search(r'\n  mail:\n((?:    (?:- \S+|#.*)\n)+)', text)
    listed = set(re.findall(r'- (\S+)', group.group(1))) if group else set()
    modules = set(p.stem for p in (ROOT / 'plugins' / 'modules').glob('*.py')
                  if p.stem != '__init__' and p.stem not in NOT_IN_GROUP)
    return sorted(modules - listed)


def claimed_minors():
    text = (ROOT / 'meta' / 'runtime.yml').read_text()
    return re.search(r"requires_ansible:\s*'([^']+)'", text).group(1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--only', help='comma-separated minors, e.g. 2.16,2.19 (default: all of CORES)')
    cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
    parser.add_argument('--venvs', type=Path, default=cache / 'mailops-health' / 'compat')
    parser.add_argument('--work', type=Path, default=ROOT / 'build' / 'compat')
    parser.add_argument('--jobs', type=int, default=2, help='cores run side by side (default 2)')
    args = parser.parse_args(argv)
    args.work, args.venvs = args.work.resolve(), args.venvs.resolve()
    cores = [c for c in CORES if not args.only or c.minor in args.only.split(',')]
    if not cores:
        parser.error('no such core: %s' % args.only)
    print('==> compat: ansible-core %s (meta/runtime.yml requires_ansible %s) against the embedded lab'
          % (', '.join(c.minor for c in cores), claimed_minors()))
    missing = group_covers_every_module()
    if missing:
        print('<== compat: FAILED: meta/runtime.yml action group mail lacks %s' % ', '.join(missing), file=sys.stderr)
        return 1
    start = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    available = pythons()
    chosen = {}
    for core in cores:
        minor = next((m for m in core.controllers if m in available), None)
        if minor is None:
            print('<== compat: FAILED: no controller Python for ansible-core %s (wants one of %s)'
                  % (core.minor, ', '.join(core.controllers)), file=sys.stderr)
            return 1
        chosen[core.minor] = (minor, available[minor])

    # Venvs (side by side: mostly waiting for pip) and the tarball.
    with ThreadPoolExecutor(max(1, len(cores))) as pool:
        venv_jobs = dict((c.minor, pool.submit(ensure_venv, c, chosen[c.minor], args.venvs)) for c in cores)
        tarball = build_tarball(args.work)
        venvs = {}
        for minor, job in venv_jobs.items():
            venvs[minor], how = job.result()
            print('    venv %-5s %s (%s)' % (minor, venvs[minor], how))
    print('    tarball %s; venvs ready after %.0f s' % (tarball.name, time.monotonic() - start))

    with EmbeddedLab(args.work) as lab:
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            jobs = [pool.submit(run_core, core, venvs[core.minor], chosen[core.minor], tarball, lab,
                                MAILBOXES[CORES.index(core) % len(MAILBOXES)], args.work) for core in cores]
            results = [job.result() for job in jobs]

    print('    %-5s %-9s %-10s %-18s %-30s %s' % ('core', 'version', 'controller', 'managed node', 'site.yml', 'time'))
    failed = []
    for result in results:
        print('    %-5s %-9s %-10s %-18s %-30s %.1f s  %s' % (
            result['core'], result['version'], result['controller'], result['managed'], result['tasks'],
            result['seconds'], 'FAIL' if result['problems'] else 'ok'))
        if result['problems']:
            failed.append(result['core'])
    for result in results:
        for problem in result['problems']:
            print('  ansible-core %s: %s' % (result['core'], problem), file=sys.stderr)
    took = time.monotonic() - start
    if failed:
        print('<== compat: FAILED on ansible-core %s (%.0f s)' % (', '.join(failed), took), file=sys.stderr)
        return 1
    print('<== compat: ok on ansible-core %s (%.0f s)' % (', '.join(r['core'] for r in results), took))
    return 0


if __name__ == '__main__':
    sys.exit(main())
