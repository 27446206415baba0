"""The documentation of every module says what its argument spec does: the same options, types,
choices, defaults and requirements (also of suboptions). The defaults are the core's own
constants, so the docs are held to the core as well."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ansible.module_utils import basic

from ansible_collections.mailops.health.plugins.module_utils import _batch, _probe, _roundtrip, _smtp
from ansible_collections.mailops.health.plugins.modules import (
    imap_check, mail_checks, mail_roundtrip, mail_roundtrip_batch, oauth2_token, pop3_check, smtp_check,
)

MODULES = {'smtp_check': smtp_check, 'pop3_check': pop3_check, 'imap_check': imap_check,
           'mail_roundtrip': mail_roundtrip, 'mail_roundtrip_batch': mail_roundtrip_batch, 'mail_checks': mail_checks,
           'oauth2_token': oauth2_token}


class Captured(Exception):
    pass


def argument_spec(module, monkeypatch):
    """The spec main() hands to AnsibleModule."""
    seen = {}

    def capture(self, argument_spec, **kwargs):
        seen.update(argument_spec)
        raise Captured()

    monkeypatch.setattr(basic.AnsibleModule, '__init__', capture)
    with pytest.raises(Captured):
        module.main()
    return seen


@pytest.fixture(scope='module')
def docs(source_collections):
    ansible_doc = str(Path(sys.executable).parent / 'ansible-doc')
    names = ['mailops.health.%s' % name for name in MODULES]
    out = subprocess.run([ansible_doc, '--json', '-t', 'module'] + names, check=True, capture_output=True, text=True,
                         env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(source_collections))).stdout
    return dict((name.rpartition('.')[2], entry['doc']) for name, entry in json.loads(out).items())


def compare(spec, documented, where):
    # Generated suboptions: python tests/tools/suboptions_docs.py writes them.
    assert sorted(spec) == sorted(documented), where
    for name, option in spec.items():
        doc = documented[name]
        here = '%s.%s' % (where, name)
        assert doc.get('type', 'str') == option.get('type', 'str'), here
        assert doc.get('default') == option.get('default'), here
        assert bool(doc.get('required')) == bool(option.get('required')), here
        assert doc.get('choices') == option.get('choices'), here
        assert doc.get('elements') == option.get('elements'), here
        if 'options' in option:
            compare(option['options'], doc['suboptions'], here)


@pytest.mark.parametrize('name', sorted(MODULES))
def test_docs_match_the_argument_spec(name, docs, monkeypatch):
    compare(argument_spec(MODULES[name], monkeypatch), docs[name]['options'], name)


def test_defaults_are_the_cores_constants(docs):
    options = docs['mail_roundtrip']['options']
    assert options['timeout']['default'] == _probe.DEFAULT_TIMEOUT
    assert options['max_trip_time']['default'] == _roundtrip.DEFAULT_MAX_TRIP_TIME
    assert options['connection_interval']['default'] == _roundtrip.DEFAULT_CONNECTION_INTERVAL
    assert docs['smtp_check']['options']['subject']['default'] == _smtp.DEFAULT_SUBJECT
    assert docs['smtp_check']['options']['body']['default'] == _smtp.DEFAULT_BODY
    assert docs['mail_roundtrip_batch']['options']['parallel']['default'] == _batch.DEFAULT_PARALLEL


@pytest.mark.parametrize('name', sorted(MODULES))
def test_every_module_has_the_shared_attributes(name, docs):
    attributes = docs[name]['attributes']
    assert attributes['check_mode']['support'] == 'full'
    assert attributes['diff_mode']['support'] == 'none'
