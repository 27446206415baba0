"""Test set-up shared by every suite: the collection importable under its real name, and the
embedded lab started once per session on port 0 with a throwaway CA."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The modules import their core as ansible_collections.mailops.health...: give the checkout
# that name through a symlink in a temporary collections tree.
_COLLECTIONS = Path(tempfile.mkdtemp(prefix='mailops-collections-'))
(_COLLECTIONS / 'ansible_collections' / 'mailops').mkdir(parents=True)
os.symlink(ROOT, _COLLECTIONS / 'ansible_collections' / 'mailops' / 'health')
atexit.register(shutil.rmtree, _COLLECTIONS, True)
sys.path.insert(0, str(_COLLECTIONS))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope='session')
def lab():
    from lab.embedded import EmbeddedLab
    with EmbeddedLab(host='127.0.0.1') as running:
        yield running


@pytest.fixture(scope='session')
def source_collections():
    """A collections path whose mailops.health is this checkout itself."""
    return _COLLECTIONS


@pytest.fixture(scope='session')
def installed_collections(tmp_path_factory):
    """A collections path with mailops.health installed from the tarball that
    `ansible-galaxy collection build` makes of this checkout, as a user gets it."""
    galaxy = str(Path(sys.executable).parent / 'ansible-galaxy')
    work = tmp_path_factory.mktemp('galaxy')
    subprocess.run([galaxy, 'collection', 'build', str(ROOT), '--output-path', str(work)],
                   check=True, capture_output=True, text=True)
    tarball, = work.glob('mailops-health-*.tar.gz')
    subprocess.run([galaxy, 'collection', 'install', str(tarball), '-p', str(work / 'collections')],
                   check=True, capture_output=True, text=True)
    installed = work / 'collections' / 'ansible_collections' / 'mailops' / 'health'
    assert (installed / 'plugins' / 'modules' / 'mail_roundtrip.py').exists()
    assert not (installed / '.venv').exists()
    return work / 'collections'
