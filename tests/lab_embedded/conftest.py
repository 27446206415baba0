"""Fixtures for the embedded lab's own tests."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path
from typing import Iterator

import pytest

# The lab is imported as ``lab.embedded`` from the repository root; make that
# work without relying on a root pytest configuration.
REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from lab.embedded import EmbeddedLab  # noqa: E402


@pytest.fixture
def lab() -> Iterator[EmbeddedLab]:
    # A fresh lab per test: starting one takes a few tens of milliseconds,
    # and no test can then see another's mail or locks.
    with EmbeddedLab() as running:
        yield running


@pytest.fixture
def ca_ctx(lab: EmbeddedLab) -> ssl.SSLContext:
    """A client context that trusts the lab CA and nothing else."""
    assert lab.ca_path is not None
    return ssl.create_default_context(cafile=lab.ca_path)
