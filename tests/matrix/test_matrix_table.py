"""The expectation matrix table is complete and consistent, docs/matrix.md comes from it, and the
renderer marks what disagrees. No lab needed: the cells themselves run in the integration targets
(`make integration`)."""

from __future__ import annotations

import copy
import importlib.util
import itertools
from pathlib import Path

import pytest
import yaml

from ansible_collections.mailops.health.plugins.module_utils._probe import STAGES
from ansible_collections.mailops.health.plugins.module_utils._session import TLS_MODES
from lab.docker.config import PORTS, TLS_BADCERT

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location('matrix_render', HERE / 'render.py')
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

TABLE = yaml.safe_load(render.TABLE.read_text())
SMTP_ENDPOINTS = [name for name, port in PORTS.items() if port.protocol == 'smtp']
POP3_ENDPOINTS = [name for name, port in PORTS.items() if port.protocol == 'pop3']
# An SMTP endpoint "accepts mail" unless its certificate cannot be trusted.
ACCEPTING_SMTP = [name for name in SMTP_ENDPOINTS if PORTS[name].tls != TLS_BADCERT]
OURS = {'alice', 'bob', 'rt01', 'rt02', 'rt03', 'rt04', 'rt05'}
CLEARTEXT_MODES = ('none', 'starttls_if_available', 'tls_if_available')


def all_cells(module):
    return TABLE[module]['cells'] + (TABLE[module].get('extra') or [])


def keys(cells, names):
    return sorted(tuple(c[k] for k in names) for c in cells)


def test_smtp_cells_are_the_whole_cross_product():
    names = ('endpoint', 'tls_mode', 'auth', 'send_mail')
    expected = itertools.product(SMTP_ENDPOINTS, TLS_MODES, ('none', 'plain', 'login', 'cram-md5'), (False, True))
    assert keys(TABLE['smtp_check']['cells'], names) == sorted(expected)


def test_pop3_cells_are_the_whole_cross_product():
    names = ('endpoint', 'tls_mode', 'auth')
    expected = itertools.product(POP3_ENDPOINTS, TLS_MODES, ('none', 'password', 'apop'))
    assert keys(TABLE['pop3_check']['cells'], names) == sorted(expected)


def test_roundtrip_cells_are_every_accepting_smtp_endpoint_with_every_pop3_endpoint():
    names = ('smtp_endpoint', 'pop3_endpoint', 'pop3_auth')
    expected = itertools.product(ACCEPTING_SMTP, POP3_ENDPOINTS, ('password', 'apop'))
    assert keys(TABLE['mail_roundtrip']['cells'], names) == sorted(expected)


@pytest.mark.parametrize('module', render.MODULES)
def test_no_cell_twice(module):
    cells = [render.cell_key(c) for c in all_cells(module)]
    assert len(cells) == len(set(cells))


@pytest.mark.parametrize('module', render.MODULES)
def test_expectations_name_an_outcome_or_a_real_stage(module):
    for cell in all_cells(module):
        expect = cell['expect']
        assert expect in ('ok', 'fallback') or (expect.startswith('failed:') and expect.split(':', 1)[1] in STAGES), cell


@pytest.mark.parametrize('module', render.MODULES)
def test_notes_exist_and_every_note_is_used(module):
    used = set()
    for cell in all_cells(module):
        notes = cell.get('note') or []
        notes = [notes] if isinstance(notes, str) else notes
        assert set(notes) <= set(TABLE['notes']), cell
        used.update(notes)
    if module == 'mail_roundtrip':  # every note is used somewhere in the table
        for other in render.MODULES:
            for cell in all_cells(other):
                notes = cell.get('note') or []
                used.update([notes] if isinstance(notes, str) else notes)
        assert used == set(TABLE['notes'])


@pytest.mark.parametrize('module', render.MODULES)
def test_fallback_is_expected_only_where_a_mode_allows_it(module):
    for cell in all_cells(module):
        modes = [cell.get('tls_mode'), cell.get('smtp_tls_mode'), cell.get('pop3_tls_mode')]
        if cell['expect'] == 'fallback':
            assert any(m in ('starttls_if_available', 'tls_if_available') for m in modes), cell


@pytest.mark.parametrize('module', ['smtp_check', 'pop3_check'])
def test_cells_waiting_for_a_banner_that_never_comes_have_a_short_timeout(module):
    # Keeps the integration run short: these cells last as long as their timeout.
    for cell in all_cells(module):
        if cell['expect'] == 'failed:banner':
            assert cell.get('timeout', TABLE['settings']['timeout']) <= 3, cell


def test_reusable_passwords_allowed_in_cleartext_only_where_the_mode_allows_plaintext():
    cells = [('smtp_check', c, c['auth'] in ('plain', 'login')) for c in TABLE['smtp_check']['cells']]
    cells += [('pop3_check', c, c['auth'] == 'password') for c in TABLE['pop3_check']['cells']]
    for _module, cell, reusable in cells:
        assert cell.get('allow_cleartext_auth', False) == (reusable and cell['tls_mode'] in CLEARTEXT_MODES), cell
    # ... and the guard cells show the refusal without it.
    guards = [c for m in ('smtp_check', 'pop3_check') for c in TABLE[m].get('extra') or [] if c.get('note') == 'guard']
    assert guards and all(c['allow_cleartext_auth'] is False and c['expect'] in ('failed:auth', 'failed:login') for c in guards)


def test_matrix_uses_only_our_accounts():
    assert set(TABLE['accounts'].values()) <= OURS


def test_docs_were_generated_from_this_table():
    docs = (render.ROOT / 'docs' / 'matrix.md').read_text()
    assert 'table sha256 %s' % render.table_digest(render.TABLE) in docs, \
        'docs/matrix.md is older than the table: run `make integration matrix-docs`'


def test_docs_show_what_the_table_determines():
    # docs/matrix.md is a real run's page; leaving aside dates, durations and details, it is what
    # the table gives when every cell is observed as expected.
    text, _totals = render.render(TABLE, fake_results())
    assert render.compare(text, render.DOCS.read_text(), 'docs/matrix.md') == [], \
        'docs/matrix.md does not show the table: run `make integration matrix-docs`'


def test_compare_ignores_what_changes_from_run_to_run_and_nothing_else():
    text, _totals = render.render(TABLE, fake_results())
    later = fake_results()
    for module in later.values():
        module['started'], module['seconds'] = '2027-02-02T02:02:02', 99.9
        for entry in module['cells']:
            entry['time_ms'], entry['detail'] = 123.4, 'something else'
    assert render.compare(render.render(TABLE, later)[0], text, 'before') == []
    first_ok = next(c for c in TABLE['smtp_check']['cells'] if c['expect'] == 'ok')
    mismatch = render.render(TABLE, fake_results(lambda cell: 'failed:tls' if cell is first_ok else cell['expect']))[0]
    assert render.compare(mismatch, text, 'before') != []


def fake_results(observe=lambda cell: cell['expect']):
    results = {}
    for module in render.MODULES:
        cells = []
        for number, cell in enumerate(all_cells(module)):
            observed = observe(cell)
            if observed is not None:
                cells.append({'cell': copy.deepcopy(cell), 'name': '%s cell %d' % (module, number), 'expect': cell['expect'],
                              'observed': observed, 'match': observed == cell['expect'], 'detail': 'what the module said',
                              'time_ms': 1.0, 'tls': 'none'})
        results[module] = {'module': module, 'started': '2026-01-01T00:00:00', 'seconds': 1.0, 'ansible_version': '2.19',
                           'lab': {'kind': 'docker'}, 'cells': cells}
    return results


def test_render_all_as_expected():
    text, totals = render.render(TABLE, fake_results())
    cells = sum(len(all_cells(m)) for m in render.MODULES)
    assert totals == {'match': cells, 'mismatch': 0, 'not run': 0}
    assert 'All %d cells observed as the table expects' % cells in text
    assert 'MISMATCH' not in text and 'NOT RUN' not in text
    for note in TABLE['notes']:
        assert '**%s**' % note in text


def test_render_marks_mismatches_and_cells_not_run_loudly():
    first_ok = next(c for c in TABLE['smtp_check']['cells'] if c['expect'] == 'ok')
    first_pop3 = TABLE['pop3_check']['cells'][0]

    def observe(cell):
        if cell is first_pop3:
            return None
        return 'failed:tls' if cell is first_ok else cell['expect']

    text, totals = render.render(TABLE, fake_results(observe))
    assert totals['mismatch'] == 1 and totals['not run'] == 1
    assert '**2 OF' in text and '1 MISMATCH, 1 NOT RUN' in text
    assert '**❌ MISMATCH: expected ok, observed ✗ tls**' in text
    assert '## ❌ Mismatches' in text
    assert '**NOT RUN**' in text


def test_render_reports_results_of_cells_no_longer_in_the_table():
    results = fake_results()
    results['pop3_check']['cells'].append({'cell': {'endpoint': 'gone'}, 'name': 'gone', 'observed': 'ok'})
    text, _totals = render.render(TABLE, results)
    assert 'holds 1 cells that are no longer in the table' in text
