"""Shared pieces of the benchmarks: the lab, the accounts, the core on its import path, the
mailbox-side observations (Maildir from the host, POP3 STAT), statistics and progress lines."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import poplib
import re
import resource
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / 'bench' / 'results'
TMP = RESULTS / 'tmp'          # gitignored: collections symlink tree, inventories, scratch
PYTHON = sys.executable

# Accounts this benchmark may use (rt01..rt05, alice and bob belong to the lab tests).
BENCH_ACCOUNTS = ['rt%02d' % n for n in range(6, 21)]
SHARED = 'shared'
# A delivery report (bounce): its Content-Type header, in a lower-cased header block.
_REPORT = re.compile(rb'^content-type:[ \t]*multipart/report', re.MULTILINE)


# -- the core under its collection name ---------------------------------------------------

def collections_root() -> Path:
    """A collections tree whose mailops/health is this checkout (a symlink), so the core imports
    as ansible_collections.mailops.health... and ansible-playbook finds the modules. Kept under
    bench/results/tmp so that build/ (make collection) is never touched."""
    root = TMP / 'collections'
    link = root / 'ansible_collections' / 'mailops' / 'health'
    link.parent.mkdir(parents=True, exist_ok=True)
    if not (link.is_symlink() and os.readlink(link) == str(ROOT)):
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(ROOT, link)
    return root


def import_core():
    root = str(collections_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from ansible_collections.mailops.health.plugins.module_utils import _pop3, _probe, _roundtrip, _smtp
    return _smtp, _pop3, _roundtrip, _probe


def core_module(name: str):
    """One module of the core (e.g. '_imap'), imported under its collection name."""
    import importlib
    import_core()
    return importlib.import_module('ansible_collections.mailops.health.plugins.module_utils.' + name)


# -- the lab ------------------------------------------------------------------------------

class Lab:
    """The Docker lab that is up: describe() data, accounts, the mailbox container."""

    def __init__(self, data: dict):
        self.data = data
        self.host = data['host']
        self.ports = data['ports']
        self.ca_path = data['ca_path']
        self.domain = data['domain']
        self.accounts = {a['username']: a for a in data['accounts']}
        self._client = None
        self._pid = None

    # docker
    @property
    def client(self):
        if self._client is None:
            import docker
            self._client = docker.DockerClient(base_url=self.data['docker_host'], timeout=120)
        return self._client

    def container(self, role: str):
        return self.client.containers.get(self.data['containers'][role])

    def mailbox_pid(self) -> int:
        if self._pid is None:
            self._pid = int(self.container('mailbox').attrs['State']['Pid'])
        return self._pid

    def maildir(self, user: str) -> Path:
        """The account's Maildir as the host sees it (root: the container's root filesystem)."""
        return Path('/proc/%d/root' % self.mailbox_pid()) / self.data['maildir'].format(username=user).lstrip('/')

    def exec(self, role: str, cmd: list[str]) -> tuple[int, str]:
        res = self.container(role).exec_run(cmd, user='root')
        return res.exit_code, res.output.decode('utf-8', 'replace')

    # mailboxes
    def pop3_stat(self, user: str) -> tuple[int, int]:
        """STAT over POP3S with USER/PASS (creates the Maildir on first login)."""
        ctx = ssl.create_default_context(cafile=self.ca_path)
        p = poplib.POP3_SSL(self.host, self.ports['pop3s'], context=ctx, timeout=60)
        try:
            p.user(user)
            p.pass_(self.accounts[user]['password'])
            return p.stat()
        finally:
            p.quit()

    def clean_probe_mail(self, user: str) -> tuple[int, int]:
        """Delete what earlier (aborted) runs left: mails carrying X-Mailops-Roundtrip, the
        large-mailbox filler (Subject 'bench filler') and bounces of probe mails (a
        multipart/report whose body carries X-Mailops-Roundtrip: the returned headers; only such
        reports are read whole, with RETR). Returns (deleted, other mails kept)."""
        ctx = ssl.create_default_context(cafile=self.ca_path)
        p = poplib.POP3_SSL(self.host, self.ports['pop3s'], context=ctx, timeout=120)
        deleted = kept = 0
        try:
            p.user(user)
            p.pass_(self.accounts[user]['password'])
            count = p.stat()[0]
            for n in range(1, count + 1):
                head = b'\n'.join(p.top(n, 0)[1]).lower()
                probe = b'x-mailops-roundtrip:' in head or b'subject: bench filler' in head
                if not probe and _REPORT.search(head):
                    probe = b'\nx-mailops-roundtrip:' in b'\n'.join(p.retr(n)[1]).lower()
                if probe:
                    p.dele(n)
                    deleted += 1
                else:
                    kept += 1
        finally:
            p.quit()
        return deleted, kept

    def maildir_count(self, user: str) -> int:
        """Mail files in new/ and cur/ (0 when the Maildir does not exist yet)."""
        md = self.maildir(user)
        total = 0
        for sub in ('new', 'cur'):
            try:
                total += sum(1 for _entry in os.scandir(md / sub))
            except FileNotFoundError:
                pass
        return total

    def queued_for(self, users: list[str]) -> int:
        """Mails in Postfix's queue for any of these users (postqueue -j in the MTA container)."""
        code, out = self.exec('mta', ['postqueue', '-j'])
        if code != 0:
            return -1
        wanted = {'%s@%s' % (u, self.domain) for u in users}
        count = 0
        for line in out.splitlines():
            line = line.strip()
            if not line.startswith('{'):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if any(r.get('address') in wanted for r in entry.get('recipients', [])):
                count += 1
        return count


def lab_up() -> Lab:
    """The lab's description; brings it up (idempotent) only when it is not up. Never down."""
    py = [PYTHON, '-m', 'lab.docker']
    if subprocess.run(py + ['status'], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                      check=False).returncode != 0:
        print('lab is not up: python -m lab.docker up', flush=True)
        subprocess.run(py + ['up'], cwd=ROOT, check=True)
    out = subprocess.run(py + ['describe', '--json'], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return Lab(json.loads(out))


# -- probe parameters ---------------------------------------------------------------------

# Round-trip paths: (SMTP port name, smtp_tls_mode, SMTP AUTH, receiving port name, its tls_mode).
# The receiving port's name says the protocol (pop3*, imap*).
PATHS = {
    'submission+pop3s': ('submission', 'starttls', True, 'pop3s', 'tls'),
    'smtp25+pop3stls': ('smtp', 'starttls', False, 'pop3', 'starttls'),
    'submission+imaps': ('submission', 'starttls', True, 'imaps', 'tls'),
    'smtp25+imapstarttls': ('smtp', 'starttls', False, 'imap', 'starttls'),
}
POP3_PATHS = ('submission+pop3s', 'smtp25+pop3stls')
IMAP_PATHS = ('submission+imaps', 'smtp25+imapstarttls')


def path_protocol(path: str) -> str:
    return 'imap' if PATHS[path][3].startswith('imap') else 'pop3'


def roundtrip_params(lab: Lab, user: str, path: str = 'submission+pop3s', **extra) -> dict:
    """mail_roundtrip's options for one account over one path (POP3 side with APOP, IMAP side
    with auth_mechanism auto), as the module would pass them to the core."""
    smtp_port, smtp_tls, smtp_auth, receive_port, receive_tls = PATHS[path]
    protocol = path_protocol(path)
    acct = lab.accounts[user]
    params = dict(
        smtp_host=lab.host, smtp_port=lab.ports[smtp_port], smtp_tls_mode=smtp_tls,
        smtp_auth='password' if smtp_auth else 'none', auth_mechanism='auto', helo='bench.lab.test',
        smtp_username=user if smtp_auth else None, smtp_password=acct['password'] if smtp_auth else None,
        mail_from=acct['address'], mail_to=acct['address'], receive_protocol=protocol,
        subject_prefix='[bench]', connection_interval=5.0, max_trip_time=30, cleanup_stale=False,
        timeout=30, validate_certs=True, ca_path=lab.ca_path, allow_cleartext_auth=False,
        transcript=False, warning_ms=None, critical_ms=None)
    # Only the receiving side's options (the playbooks of part 3 pass these dicts to Ansible).
    params.update({'%s_host' % protocol: lab.host, '%s_port' % protocol: lab.ports[receive_port],
                   '%s_tls_mode' % protocol: receive_tls, '%s_username' % protocol: user,
                   '%s_password' % protocol: acct['password']})
    if protocol == 'pop3':
        params['pop3_auth'] = 'apop'
    else:
        params.update(imap_auth_mechanism='auto', imap_folder='INBOX', junk='warn')
    params.update(extra)
    return params


# -- statistics ---------------------------------------------------------------------------

def percentile(values, q):
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values) -> dict:
    xs = [v for v in values if v is not None]
    if not xs:
        return {'n': 0}
    return {'n': len(xs), 'median': round(percentile(xs, 50), 3), 'p05': round(percentile(xs, 5), 3),
            'p95': round(percentile(xs, 95), 3), 'mean': round(sum(xs) / len(xs), 3),
            'min': round(min(xs), 3), 'max': round(max(xs), 3)}


def rnd(x, nd=2):
    return None if x is None else round(x, nd)


# -- progress and environment --------------------------------------------------------------

class Progress:
    """'[2/4] arrival lag: 17/50' lines: every ~10% (and the last) in a log, in place on a tty."""

    def __init__(self, step: int, steps: int, label: str, total: int):
        self.prefix = '[%d/%d] %s' % (step, steps, label)
        self.total = total
        self.done = 0
        self.tty = sys.stdout.isatty()
        self.every = max(1, total // 10)
        self.t0 = time.monotonic()
        self.lock = threading.Lock()

    def tick(self, n: int = 1, note: str = ''):
        with self.lock:
            self.done += n
            if self.tty or self.done % self.every == 0 or self.done >= self.total:
                line = '%s: %d/%d%s (%.0f s)' % (self.prefix, self.done, self.total,
                                                 (' ' + note) if note else '', time.monotonic() - self.t0)
                if self.tty:
                    end = '\n' if self.done >= self.total else ''
                    sys.stdout.write('\r' + line + '\x1b[K' + end)
                else:
                    sys.stdout.write(line + '\n')
                sys.stdout.flush()


def say(text: str):
    print(text, flush=True)


def environment(lab: Lab | None = None) -> dict:
    env = {
        'when': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
        'python': platform.python_version(),
        'kernel': platform.release(),
        'cpus': os.cpu_count(),
        'loadavg_at_start': os.getloadavg(),
    }
    try:
        env['git'] = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, check=False,
                                    text=True).stdout.strip()
    except OSError:
        pass
    try:
        import ansible
        env['ansible_core'] = ansible.__version__ if hasattr(ansible, '__version__') else None
        from ansible.release import __version__ as av
        env['ansible_core'] = av
    except ImportError:
        pass
    if lab is not None:
        env['lab'] = {'host': lab.host, 'ports': lab.ports}
    return env


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


_results = [RESULTS]


def results_dir(path: Path | None = None) -> Path:
    """Where results go: bench/results, or (--quick) a scratch directory; set with path."""
    if path is not None:
        _results[0] = path
    return _results[0]


def write_json(name: str, data: dict) -> Path:
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    tmp = path.with_suffix('.json.tmp')
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + '\n')
    os.replace(tmp, path)
    return path


def _cgroup_cpu_ns(pid: int):
    """CPU time (ns) of the cgroup of a process: cgroup v1 cpuacct.usage or v2 cpu.stat."""
    with open('/proc/%d/cgroup' % pid) as f:
        lines = [line.rstrip('\n').split(':', 2) for line in f]
    for _num, controllers, path in lines:
        if 'cpuacct' in controllers.split(','):
            for base in ('/sys/fs/cgroup/cpuacct', '/sys/fs/cgroup/cpu,cpuacct'):
                try:
                    with open(base + path + '/cpuacct.usage') as f:
                        return int(f.read())
                except OSError:
                    continue
    for _num, controllers, path in lines:
        if controllers == '':
            try:
                with open('/sys/fs/cgroup' + path + '/cpu.stat') as f:
                    for line in f:
                        if line.startswith('usage_usec '):
                            return int(line.split()[1]) * 1000
            except OSError:
                pass
    return None


def container_cpu_ns(lab: Lab) -> dict:
    """CPU time (ns) used so far by each lab container (its cgroup, read from the host)."""
    out = {}
    for role in lab.data['containers']:
        try:
            pid = int(lab.container(role).attrs['State']['Pid'])
            out[role] = _cgroup_cpu_ns(pid)
        except Exception:  # noqa: BLE001 - no figure rather than no benchmark
            out[role] = None
    return out
