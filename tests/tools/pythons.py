"""Byte-compile plugins/ and import the probe core on every managed-node Python this machine has.

    python3 tests/tools/pythons.py [--max 3.13]

The supported Pythons start at the floor declared in tests/config.yml (modules: python_requires
'>=3.N') and end at --max.  For each minor version the interpreter comes from pyenv (the newest
patch release under `pyenv root`/versions), else from PATH (python3.N); python3 on PATH is
checked too.  Each one runs this file in isolated mode (-I -S -B: no site-packages, no
PYTHONPATH, nothing written into the tree), so nothing but the standard library can be imported
and Ansible is not there: it compiles every .py under plugins/ and imports every module of
plugins/module_utils under its real name, ansible_collections.mailops.health.plugins.module_utils.
Any warning (a SyntaxWarning, a DeprecationWarning) is an error.

Versions with no interpreter here are listed as missing; that alone does not fail.  Exit 1 when a
Python fails, or when none was found.

This file runs under every Python it checks: keep it to the syntax of the oldest one.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(ROOT, 'tests', 'config.yml')
COLLECTION = ('ansible_collections', 'mailops', 'health')
CORE_PACKAGE = '.'.join(COLLECTION + ('plugins', 'module_utils'))


# -- in the Python under test ---------------------------------------------------------------

def child(collections_root):
    """Compile plugins/, import the core; one JSON line on stdout."""
    import importlib
    import warnings
    warnings.simplefilter('error')
    result = {'version': '%d.%d.%d' % sys.version_info[:3], 'compiled': 0, 'imported': [], 'errors': []}
    plugins = os.path.join(ROOT, 'plugins')
    for directory, _dirs, files in sorted(os.walk(plugins)):
        for name in sorted(files):
            if name.endswith('.py'):
                path = os.path.join(directory, name)
                try:
                    with open(path, 'rb') as f:
                        compile(f.read(), path, 'exec', dont_inherit=True)
                    result['compiled'] += 1
                except Exception as exc:  # SyntaxError, or a warning made an error
                    result['errors'].append('%s: %s: %s' % (os.path.relpath(path, ROOT), type(exc).__name__, exc))
    sys.path.insert(0, collections_root)
    for path in sorted(glob.glob(os.path.join(plugins, 'module_utils', '*.py'))):
        name = os.path.splitext(os.path.basename(path))[0]
        if name == '__init__':
            continue
        try:
            importlib.import_module(CORE_PACKAGE + '.' + name)
            result['imported'].append(name)
        except BaseException as exc:  # whatever it is, it is the answer for this Python
            result['errors'].append('import %s: %s: %s' % (name, type(exc).__name__, exc))
    print(json.dumps(result))


# -- the driver --------------------------------------------------------------------------------

def floor():
    """(3, N) from tests/config.yml's python_requires: '>=3.N'."""
    with open(CONFIG) as f:
        match = re.search(r"""python_requires:\s*['"]?>=\s*(\d+)\.(\d+)""", f.read())
    if not match:
        raise SystemExit('%s: no python_requires >=X.Y' % CONFIG)
    return int(match.group(1)), int(match.group(2))


def pyenv_root():
    if os.environ.get('PYENV_ROOT'):
        return os.environ['PYENV_ROOT']
    if shutil.which('pyenv'):
        out = subprocess.run(['pyenv', 'root'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             universal_newlines=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    default = os.path.expanduser('~/.pyenv')
    return default if os.path.isdir(os.path.join(default, 'versions')) else None


def pyenv_pythons(root):
    """{(3, N): path} of the newest CPython 3.N.x under root/versions."""
    newest = {}
    versions = os.path.join(root, 'versions') if root else None
    for entry in os.listdir(versions) if versions and os.path.isdir(versions) else []:
        match = re.match(r'^3\.(\d+)\.(\d+)$', entry)
        exe = os.path.join(root, 'versions', entry, 'bin', 'python3')
        if match and os.access(exe, os.X_OK):
            minor, patch = int(match.group(1)), int(match.group(2))
            if (3, minor) not in newest or patch > newest[(3, minor)][0]:
                newest[(3, minor)] = (patch, exe)
    return dict((version, exe) for version, (_patch, exe) in newest.items())


def on_path(name, root):
    """A python on PATH, not one of pyenv's shims (they may stand for a version not installed)."""
    path = shutil.which(name)
    if path and root and os.path.realpath(path).startswith(os.path.join(os.path.realpath(root), 'shims')):
        return None
    return path


def version_of(exe):
    out = subprocess.run([exe, '-c', 'import sys; print("%d %d" % sys.version_info[:2])'], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, universal_newlines=True, check=False)
    try:
        major, minor = out.stdout.split()
        return int(major), int(minor)
    except ValueError:
        return None


def check(exe, collections_root):
    out = subprocess.run([exe, '-I', '-S', '-B', os.path.abspath(__file__), '--child', collections_root],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    lines = out.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {'version': '?', 'compiled': 0, 'imported': [],
                'errors': ['exit %d: %s' % (out.returncode, (out.stderr or out.stdout).strip()[-500:])]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--max', default='3.13', help='newest Python to look for (default 3.13)')
    parser.add_argument('--child', metavar='COLLECTIONS_ROOT', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    low = floor()
    high = tuple(int(x) for x in args.max.split('.'))
    wanted = [(3, minor) for minor in range(low[1], high[1] + 1)]
    print('==> pythons: compile plugins/ and import the core without Ansible on Python %d.%d..%d.%d'
          % (low + high))
    root = pyenv_root()
    found = pyenv_pythons(root)
    if root:
        print('    pyenv: %s (%s)' % (root, ', '.join('%d.%d' % v for v in sorted(found)) or 'no CPython 3'))
    else:
        print('    pyenv: not found; using the Pythons on PATH')
    candidates = {}
    for version in wanted:
        exe = found.get(version) or on_path('python%d.%d' % version, root)
        if exe:
            candidates[version] = exe
    python3 = shutil.which('python3')  # a pyenv shim too: it runs pyenv's global version
    if python3:
        version = version_of(python3)
        if version and version not in candidates:
            candidates[version] = python3

    collections = tempfile.mkdtemp(prefix='mailops-pythons-')
    failed, passed = [], []
    try:
        parent = os.path.join(collections, *COLLECTION[:-1])
        os.makedirs(parent)
        os.symlink(ROOT, os.path.join(parent, COLLECTION[-1]))
        for version in sorted(candidates):
            exe = candidates[version]
            label = '%d.%d' % version
            if version < low:
                print('    %-5s %-40s skipped: below the floor %d.%d (tests/config.yml)' % (label, exe, low[0], low[1]))
                continue
            result = check(exe, collections)
            if result['errors']:
                failed.append(label)
                print('    %-5s %-40s FAIL (%s):' % (label, exe, result['version']))
                for error in result['errors']:
                    print('          %s' % error)
            else:
                passed.append(label)
                print('    %-5s %-40s ok (%s): %d files compiled, core imported: %s'
                      % (label, exe, result['version'], result['compiled'], ' '.join(result['imported'])))
    finally:
        shutil.rmtree(collections, ignore_errors=True)
    missing = ['%d.%d' % v for v in wanted if v not in candidates]
    print('    missing: %s' % (', '.join(missing) if missing else 'none'))
    if failed or not passed:
        print('<== pythons: FAILED on %s' % (', '.join(failed) or 'every Python: none found'), file=sys.stderr)
        return 1
    print('<== pythons: ok on %s' % ', '.join(passed))
    return 0


if __name__ == '__main__':
    sys.exit(main())
