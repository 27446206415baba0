"""What a release has to pass, on the tarball `ansible-galaxy collection build` makes of this tree.

    python tests/release/release.py --tools VENV [--work DIR] [--only versions,importer,ee,readme]

versions  README's "Tested versions" table is what make compat runs, and meta/runtime.yml admits
          its oldest ansible-core.
importer  galaxy-importer (what Galaxy runs on an upload; here without containers, so without its
          ansible-test step) on the tarball: it must say nothing but INFO (no warning: a missing
          changelog, ansible-lint findings, documentation it cannot load, ...).
ee        the tarball installed, then `ansible-builder introspect` over it (meta/execution-environment.yml:
          no Python or system package), and `ansible-builder create` of the execution environment
          definition docs/execution-environment.yml with the collection taken from the tarball.
readme    a user following README.md: the shell blocks between its `release-test` markers run
          verbatim, in order, by bash in an empty directory holding the tarball, with a fresh HOME
          and no project venv on PATH (pip's cache is shared to save time). They create a venv,
          install ansible-core and aiosmtpd from PyPI, install the tarball, start the embedded lab
          from the installed collection and run the health gate by its FQCN. It must pass with its
          three checks up, and print none of the lab's passwords.

VENV is the release tools venv (tests/release/requirements.txt: galaxy-importer, ansible-builder);
this script runs under the project venv's Python (its ansible-galaxy builds the tarball).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
STEPS = ('versions', 'importer', 'ee', 'readme')


def run(command, **kwargs):
    kwargs.setdefault('stdout', subprocess.PIPE)
    kwargs.setdefault('stderr', subprocess.STDOUT)
    return subprocess.run([str(c) for c in command], universal_newlines=True, check=False, **kwargs)


def build(work):
    out = work / 'tarball'
    shutil.rmtree(str(out), ignore_errors=True)
    out.mkdir(parents=True)
    galaxy = Path(sys.executable).parent / 'ansible-galaxy'
    built = run([galaxy, 'collection', 'build', ROOT, '--output-path', out])
    if built.returncode:
        raise SystemExit('ansible-galaxy collection build failed:\n' + built.stdout)
    tarball, = out.glob('mailops-health-*.tar.gz')
    return tarball


def tools_env(tools):
    # galaxy-importer finds ansible-doc and ansible-lint on PATH
    return dict(os.environ, PATH='%s:%s' % (tools / 'bin', os.environ['PATH']), PYTHONWARNINGS='ignore')


def importer(tarball, tools, work):
    out = work / 'importer'
    shutil.rmtree(str(out), ignore_errors=True)
    out.mkdir(parents=True)
    env = dict(tools_env(tools), GALAXY_IMPORTER_CONFIG=str(HERE / 'galaxy-importer.cfg'),
               ANSIBLE_LOCAL_TEMP=str(out / 'tmp'))
    result = run([tools / 'bin' / 'python', '-m', 'galaxy_importer.main', tarball], cwd=str(out), env=env)
    (out / 'importer.log').write_text(result.stdout)
    lines = result.stdout.splitlines()
    # pip's notes about its optional local indexes are not the importer's
    findings = [line for line in lines if re.match(r'\s*(WARNING|ERROR|CRITICAL)\b', line)
                and 'Location' not in line]
    problems = []
    if result.returncode:
        problems.append('galaxy-importer exited %d' % result.returncode)
    if findings:
        problems.append('galaxy-importer findings:\n    ' + '\n    '.join(findings))
    if not any('Importer processing completed successfully' in line for line in lines):
        problems.append('galaxy-importer did not complete:\n    ' + '\n    '.join(lines[-15:]))
    linted = [line for line in lines if 'ansible-lint run complete' in line]
    documented = [line for line in lines if line.startswith('Loading ')]
    return problems, '%d contents loaded, ansible-lint %s' % (len(documented), 'ran' if linted else 'DID NOT RUN')


def execution_environment(tarball, tools, work):
    out = work / 'ee'
    shutil.rmtree(str(out), ignore_errors=True)
    out.mkdir(parents=True)
    env = tools_env(tools)
    problems = []
    installed = run([tools / 'bin' / 'ansible-galaxy', 'collection', 'install', '-p', out / 'collections', tarball], env=env)
    if installed.returncode:
        return ['ansible-galaxy collection install: ' + installed.stdout], '-'
    introspected = run([tools / 'bin' / 'ansible-builder', 'introspect', '--sanitize', out / 'collections'], env=env,
                       stderr=subprocess.PIPE)
    deps = yaml.safe_load(introspected.stdout) if introspected.returncode == 0 else None
    if deps != {'python': [], 'system': []}:
        problems.append('ansible-builder introspect: want no python and no system packages, got %r\n%s'
                        % (deps, introspected.stdout + introspected.stderr))
    # docs/execution-environment.yml with the collection from the tarball instead of Galaxy
    definition = yaml.safe_load((ROOT / 'docs' / 'execution-environment.yml').read_text())
    wanted = definition['dependencies']['galaxy']['collections']
    if [c.get('name') for c in wanted] != ['mailops.health']:
        problems.append('docs/execution-environment.yml: galaxy collections should be mailops.health alone: %r' % wanted)
    definition['additional_build_files'] = [{'src': str(tarball), 'dest': 'collections'}]
    definition['dependencies']['galaxy'] = {'collections': [{'name': 'collections/' + tarball.name, 'type': 'file'}]}
    (out / 'execution-environment.yml').write_text(yaml.safe_dump(definition, sort_keys=False))
    created = run([tools / 'bin' / 'ansible-builder', 'create', '-f', out / 'execution-environment.yml',
                   '--context', out / 'context'], env=env)
    build_dir = out / 'context' / '_build'
    if created.returncode:
        problems.append('ansible-builder create exited %d:\n%s' % (created.returncode, created.stdout))
    else:
        containerfile = next((p for p in (out / 'context').glob('*file') if p.is_file()), None)
        requirements = yaml.safe_load((build_dir / 'requirements.yml').read_text())
        if not (build_dir / 'collections' / tarball.name).exists():
            problems.append('ansible-builder create: the tarball is not in the build context')
        if requirements != {'collections': [{'name': 'collections/' + tarball.name, 'type': 'file'}]}:
            problems.append('ansible-builder create: requirements.yml is %r' % requirements)
        if containerfile is None or 'ansible-galaxy' not in containerfile.read_text():
            problems.append('ansible-builder create: no Containerfile installing collections in %s' % (out / 'context'))
        # the introspection the build runs in the image, with the script create put in the context
        script = run([tools / 'bin' / 'python', build_dir / 'scripts' / 'introspect.py', 'introspect', '--sanitize',
                      out / 'collections'], env=env, stderr=subprocess.PIPE)
        if script.returncode or yaml.safe_load(script.stdout.split('\n#', 1)[0]) != {'python': [], 'system': []}:
            problems.append('the build context\'s introspect.py: %s%s' % (script.stdout, script.stderr))
    return problems, 'introspect: no python or system packages; create: context in %s' % (out / 'context')


def readme_script():
    """The ```sh blocks between <!-- release-test: begin --> and <!-- release-test: end --> in README.md."""
    text = (ROOT / 'README.md').read_text()
    regions = re.findall(r'<!-- release-test: begin -->(.*?)<!-- release-test: end -->', text, re.S)
    blocks = [block for region in regions for block in re.findall(r'```sh\n(.*?)```', region, re.S)]
    if not blocks:
        raise SystemExit('README.md: no ```sh blocks between <!-- release-test: begin --> and <!-- release-test: end -->')
    return '\n'.join(blocks)


def python_on_path_without(directory):
    """PATH with the project venv's bin/ (and any other venv) left out."""
    keep = [p for p in os.environ['PATH'].split(os.pathsep)
            if p and Path(p).resolve() != Path(directory).resolve() and not (Path(p) / 'activate').exists()]
    return os.pathsep.join(keep)


def readme(tarball, _tools, work):
    out = work / 'readme'
    shutil.rmtree(str(out), ignore_errors=True)
    home = out / 'home'
    cwd = out / 'user'
    home.mkdir(parents=True)
    cwd.mkdir()
    shutil.copy(str(tarball), str(cwd))
    script = readme_script()
    (out / 'readme.sh').write_text(script)
    env = dict((k, v) for k, v in os.environ.items()
               if not k.startswith(('ANSIBLE_', 'VIRTUAL_ENV', 'PYTHON', 'MOLECULE_')))
    pyenv_root = os.environ.get('PYENV_ROOT') or str(Path.home() / '.pyenv')
    env.update(HOME=str(home), PATH=python_on_path_without(Path(sys.executable).parent),
               PIP_CACHE_DIR=os.environ.get('PIP_CACHE_DIR') or str(Path.home() / '.cache' / 'pip'))
    if Path(pyenv_root).is_dir():
        env['PYENV_ROOT'] = pyenv_root  # its shims look under $HOME/.pyenv otherwise
    process = subprocess.Popen(['bash', '-euo', 'pipefail', str(out / 'readme.sh')], cwd=str(cwd), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                               start_new_session=True)
    try:
        output = process.communicate(timeout=600)[0]
    finally:
        # whatever the script left running (the lab, if a command failed before `kill`) goes with it
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    (out / 'readme.log').write_text(output)
    problems = []
    if process.returncode:
        last = '\n'.join(output.splitlines()[-40:])
        problems.append('the README commands exited %d (%s):\n%s' % (process.returncode, out / 'readme.log', last))
    if not re.search(r'3 checks: 3 up, 0 warning, 0 down', output):
        problems.append('no "3 checks: 3 up" in the playbook output (%s)' % (out / 'readme.log'))
    lab = cwd / 'lab.json'
    if lab.exists():
        passwords = [a['password'] for a in json.loads(lab.read_text())['accounts']]
        leaked = [p for p in passwords if p in output]
        if leaked:
            problems.append('passwords in the output: %s' % ', '.join(leaked))
    else:
        problems.append('the README commands left no lab.json in the working directory')
    installed = home / '.ansible' / 'collections' / 'ansible_collections' / 'mailops' / 'health' / 'MANIFEST.json'
    if not installed.exists():
        problems.append('the collection is not where README says ansible-galaxy puts it (%s)' % installed)
    cores = sorted(p.name[:-len('.dist-info')].split('-')[1]
                   for p in cwd.glob('*/lib/python*/site-packages/ansible_core-*.dist-info'))
    commands = [line for line in script.splitlines() if line.strip() and not line.startswith('#')]
    return problems, 'ansible-core %s from PyPI, %d commands' % (', '.join(cores) or '?', len(commands))


def tested_versions(_tarball, _tools, _work):
    """README's *Tested versions* table is what make compat runs (tests/compat: CORES and the pinned
    ansible-core of each), and meta/runtime.yml admits its oldest core."""
    sys.path.insert(0, str(ROOT / 'tests' / 'compat'))
    import compat  # pylint: disable=import-outside-toplevel
    text = (ROOT / 'README.md').read_text()
    section = text.split('## Tested versions', 1)[-1].split('\n## ', 1)[0]
    rows = [tuple(cell.strip() for cell in line.strip('|').split('|'))
            for line in section.splitlines() if re.match(r'\|\s*\d', line)]
    want = []
    for core in compat.CORES:
        pinned = re.search(r'^ansible-core==(\S+)', core.requirements.read_text(), re.M).group(1)
        want.append((pinned, core.controllers[0], core.managed))
    problems = []
    if rows != want:
        problems.append('README "Tested versions" has\n    %s\nmake compat runs\n    %s' % (rows, want))
    floor = re.search(r"requires_ansible:\s*'>=(\d+\.\d+)", (ROOT / 'meta' / 'runtime.yml').read_text())
    if not floor or floor.group(1) != compat.CORES[0].minor:
        problems.append('meta/runtime.yml requires_ansible does not start at %s, the oldest core make compat runs'
                        % compat.CORES[0].minor)
    return problems, '%d ansible-core minors, %s to %s' % (len(want), compat.CORES[0].minor, compat.CORES[-1].minor)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n', 1)[0])
    parser.add_argument('--tools', type=Path, required=True, help='the release tools venv')
    parser.add_argument('--work', type=Path, default=ROOT / 'build' / 'release')
    parser.add_argument('--only', default=','.join(STEPS))
    args = parser.parse_args(argv)
    steps = args.only.split(',')
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error('unknown step(s): %s' % ', '.join(sorted(unknown)))
    args.work = args.work.resolve()
    args.tools = args.tools.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    tarball = build(args.work)
    print('==> release-check: %s (%s)' % (tarball.name, ', '.join(steps)))
    functions = {'versions': tested_versions, 'importer': importer, 'ee': execution_environment, 'readme': readme}
    failed = []
    for step in steps:
        began = time.monotonic()
        problems, summary = functions[step](tarball, args.tools, args.work)
        print('    %-9s %-4s %5.1f s  %s' % (step, 'FAIL' if problems else 'ok', time.monotonic() - began, summary))
        for problem in problems:
            print('  %s: %s' % (step, problem), file=sys.stderr)
        if problems:
            failed.append(step)
    if failed:
        print('<== release-check: FAILED: %s (%.0f s)' % (', '.join(failed), time.monotonic() - start), file=sys.stderr)
        return 1
    print('<== release-check: ok (%.0f s)' % (time.monotonic() - start))
    return 0


if __name__ == '__main__':
    sys.exit(main())
