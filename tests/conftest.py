"""Test set-up shared by every suite: the collection importable under its real name, and the
embedded lab started once per session on port 0 with a throwaway CA."""

import atexit
import os
import shutil
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
