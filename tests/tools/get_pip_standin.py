"""Offline stand-in for the get-pip.py bootstrap script used by ansible-test.

ansible-test bootstraps pip into each empty sanity-test virtual environment by
running ``get-pip-<version>.py``, which it downloads from a host this project's
machines cannot reach.  Before downloading, it looks for a cached copy at
``~/.ansible/test/cache/get_pip_<version with dots as underscores>.py`` and, if
present, runs it as ``__main__`` with pip-install style arguments, e.g.::

    --disable-pip-version-check pip==24.2 --no-setuptools --no-wheel

This stand-in (copied into place by ``make get-pip-cache``) does the same job
with what is available offline or from PyPI: it bootstraps pip with the
interpreter's own ``ensurepip`` and then runs ``python -m pip install <args>``
so the requested pip version is installed from PyPI.  ``--no-setuptools`` and
``--no-wheel`` are get-pip.py options, not pip options: they are dropped, and
setuptools is removed again afterwards if ensurepip added it and
``--no-setuptools`` was requested.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

GET_PIP_ONLY_OPTIONS = ('--no-setuptools', '--no-wheel')


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _run(cmd: list[str], quiet: bool = False) -> None:
    print('get-pip stand-in: ' + ' '.join(cmd), file=sys.stderr)
    sys.stderr.flush()
    subprocess.check_call(cmd, stdout=subprocess.DEVNULL if quiet else None)


def main(argv: list[str]) -> int:
    pip_args = [a for a in argv if a not in GET_PIP_ONLY_OPTIONS]
    no_setuptools = '--no-setuptools' in argv
    had_setuptools = _has('setuptools')

    if not _has('pip'):
        _run([sys.executable, '-m', 'ensurepip', '--default-pip'], quiet=True)

    _run([sys.executable, '-m', 'pip', 'install', '--upgrade', '-q'] + pip_args)

    if no_setuptools and not had_setuptools:
        # ensurepip on Python < 3.12 also installs setuptools; get-pip.py with
        # --no-setuptools would not have, so leave the environment as it would.
        probe = subprocess.run(
            [sys.executable, '-c', 'import importlib.util, sys; sys.exit(importlib.util.find_spec("setuptools") is None)'],
            check=False,
        )
        if probe.returncode == 0:
            _run([sys.executable, '-m', 'pip', 'uninstall', '-y', '-q', '--disable-pip-version-check', 'setuptools'])

    return 0


if __name__ == '__main__':
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as ex:
        print('get-pip stand-in failed: %s' % ex, file=sys.stderr)
        sys.exit(ex.returncode or 1)
