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
from lab.docker.config import PORTS, TLS_BADCERT, TLS_IMPLICIT, TLS_STARTTLS

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location('matrix_render', HERE / 'render.py')
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

TABLE = yaml.safe_load(render.TABLE.read_text())
SMTP_ENDPOINTS = [name for name, port in PORTS.items() if port.protocol == 'smtp']
POP3_ENDPOINTS = [name for name, port in PORTS.items() if port.protocol == 'pop3']
IMAP_ENDPOINTS = [name for name, port in PORTS.items() if port.protocol == 'imap']
# An SMTP endpoint "accepts mail" unless its certificate cannot be trusted.
ACCEPTING_SMTP = [name for name in SMTP_ENDPOINTS if PORTS[name].tls != TLS_BADCERT]
# The IMAP endpoints a round trip reads the mailbox from, each in the mode its port is made for.
ROUNDTRIP_IMAP = [(name, {TLS_STARTTLS: 'starttls', TLS_IMPLICIT: 'tls'}[PORTS[name].tls])
                  for name in IMAP_ENDPOINTS if PORTS[name].tls in (TLS_STARTTLS, TLS_IMPLICIT)]
OURS = {'alice', 'bob', 'rt01', 'rt02', 'rt03', 'rt04', 'rt05'}
CLEARTEXT_MODES = ('none', 'starttls_if_available', 'tls_if_available')


def all_cells(section):
    return TABLE[section]['cells'] + (TABLE[section].get('extra') or [])


def notes_of(cell):
    notes = cell.get('note') or []
    return [notes] if isinstance(notes, str) else notes


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


def test_imap_cells_are_the_whole_cross_product():
    names = ('endpoint', 'tls_mode', 'auth')
    expected = itertools.product(IMAP_ENDPOINTS, TLS_MODES, ('none', 'login', 'plain', 'cram-md5'))
    assert keys(TABLE['imap_check']['cells'], names) == sorted(expected)


def test_roundtrip_cells_are_every_accepting_smtp_endpoint_with_every_pop3_endpoint():
    names = ('smtp_endpoint', 'pop3_endpoint', 'pop3_auth')
    expected = itertools.product(ACCEPTING_SMTP, POP3_ENDPOINTS, ('password', 'apop'))
    assert keys(TABLE['mail_roundtrip']['cells'], names) == sorted(expected)


def test_imap_roundtrip_cells_are_every_accepting_smtp_endpoint_with_every_imap_endpoint_in_its_mode():
    section = TABLE['mail_roundtrip_imap']
    assert section['module'] == 'mail_roundtrip'
    assert [name for name, _mode in ROUNDTRIP_IMAP] == ['imap', 'imaps']
    names = ('smtp_endpoint', 'imap_endpoint', 'imap_tls_mode')
    expected = [(smtp,) + imap for smtp in ACCEPTING_SMTP for imap in ROUNDTRIP_IMAP]
    assert keys(section['cells'], names) == sorted(expected)
    assert all(c['expect'] == 'ok' and 'expect_folder' not in c for c in section['cells'])  # INBOX, no junk marker


def test_junk_cells_cover_every_junk_setting():
    junk = dict((c['junk'], c) for c in all_cells('mail_roundtrip_imap') if 'junk' in c)
    assert sorted(junk) == ['fail', 'ok', 'warn']
    assert all(c['subject_prefix'] == '[lab-junk]' for c in junk.values())  # the lab's Sieve marker
    assert (junk['ok']['expect'], junk['ok']['expect_status'], junk['ok']['expect_folder']) == ('ok', 'up', 'Junk')
    assert (junk['warn']['expect'], junk['warn']['expect_status'], junk['warn']['expect_folder']) == ('ok', 'warning', 'Junk')
    assert junk['fail']['expect'] == 'failed:junk'


def test_imap_extra_cells_cover_folders_auto_and_certificates():
    extra = TABLE['imap_check']['extra']
    folders = [c for c in extra if 'folders' in c]
    assert any(c['expect'] == 'ok' and {'Junk', 'Trash', 'Sent'} <= set(c['folders']) for c in folders)
    assert any(c['expect'] == 'failed:folders' for c in folders)
    assert all(c['auth'] != 'none' for c in folders)  # LIST needs a login
    auto = [c for c in extra if c['auth'] == 'auto']
    assert auto and all(c['tls_mode'] == 'none' and c['expect_auth'] == 'cram-md5' and not c.get('allow_cleartext_auth')
                        for c in auto)
    assert any(c.get('validate_certs') is False and c['endpoint'] == 'imap_badcert' for c in extra)


@pytest.mark.parametrize('section', render.SECTIONS)
def test_no_cell_twice(section):
    cells = [render.cell_key(c) for c in all_cells(section)]
    assert len(cells) == len(set(cells))


@pytest.mark.parametrize('section', render.SECTIONS)
def test_expectations_name_an_outcome_or_a_real_stage(section):
    for cell in all_cells(section):
        expect = cell['expect']
        assert expect in ('ok', 'fallback') or (expect.startswith('failed:') and expect.split(':', 1)[1] in STAGES), cell
        # what else a cell asks of a success is asked of a success only; a folder only of an IMAP round trip
        assert expect in ('ok', 'fallback') or not set(render.EXPECT_MORE) & set(cell), cell
        assert 'expect_folder' not in cell or 'imap_endpoint' in cell, cell


@pytest.mark.parametrize('section', render.SECTIONS)
def test_notes_exist(section):
    for cell in all_cells(section):
        assert set(notes_of(cell)) <= set(TABLE['notes']), cell


def test_every_note_is_used():
    used = set(note for section in render.SECTIONS for cell in all_cells(section) for note in notes_of(cell))
    assert used == set(TABLE['notes'])


def test_sections_of_the_table_are_the_rendered_ones():
    assert [k for k, v in TABLE.items() if isinstance(v, dict) and 'cells' in v] == list(render.SECTIONS)


@pytest.mark.parametrize('section', render.SECTIONS)
def test_fallback_is_expected_only_where_a_mode_allows_it(section):
    for cell in all_cells(section):
        modes = [cell.get('tls_mode'), cell.get('smtp_tls_mode'), cell.get('pop3_tls_mode'), cell.get('imap_tls_mode')]
        if cell['expect'] == 'fallback':
            assert any(m in ('starttls_if_available', 'tls_if_available') for m in modes), cell


@pytest.mark.parametrize('section', ['smtp_check', 'pop3_check', 'imap_check'])
def test_cells_waiting_for_a_banner_that_never_comes_have_a_short_timeout(section):
    # Keeps the integration run short: these cells last as long as their timeout (on loopback a
    # connection is made at once, so 1 s tells "no greeting" from "no connection" well enough).
    for cell in all_cells(section):
        if cell['expect'] == 'failed:banner':
            assert cell.get('timeout', TABLE['settings']['timeout']) <= 1, cell


def test_reusable_passwords_allowed_in_cleartext_only_where_the_mode_allows_plaintext():
    cells = [('smtp_check', c, c['auth'] in ('plain', 'login')) for c in TABLE['smtp_check']['cells']]
    cells += [('pop3_check', c, c['auth'] == 'password') for c in TABLE['pop3_check']['cells']]
    cells += [('imap_check', c, c['auth'] in ('plain', 'login')) for c in TABLE['imap_check']['cells']]
    for _module, cell, reusable in cells:
        assert cell.get('allow_cleartext_auth', False) == (reusable and cell['tls_mode'] in CLEARTEXT_MODES), cell
    # ... and the guard cells show the refusal without it, for every module that logs in.
    for module in ('smtp_check', 'pop3_check', 'imap_check'):
        guards = [c for c in TABLE[module].get('extra') or [] if c.get('note') == 'guard']
        assert guards and all(c['allow_cleartext_auth'] is False and c['expect'] in ('failed:auth', 'failed:login')
                              for c in guards), module


def test_imap_guards_cover_every_plaintext_session_with_a_reusable_password():
    # where a cross-product cell sends LOGIN or AUTHENTICATE PLAIN without TLS (allowed), a guard cell
    # shows the refusal without allow_cleartext_auth
    def without_tls(cell):
        return cell['expect'] == 'fallback' or (cell['expect'] == 'ok' and cell['tls_mode'] == 'none')
    plaintext = set((c['endpoint'], c['tls_mode'], c['auth']) for c in TABLE['imap_check']['cells']
                    if c.get('allow_cleartext_auth') and without_tls(c))
    guards = set((c['endpoint'], c['tls_mode'], c['auth']) for c in TABLE['imap_check']['extra'] if c.get('note') == 'guard')
    assert plaintext and plaintext == guards


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
    for section in render.SECTIONS:
        cells = []
        for number, cell in enumerate(all_cells(section)):
            observed = observe(cell)
            if observed is not None:
                cells.append({'cell': copy.deepcopy(cell), 'name': '%s cell %d' % (section, number), 'expect': cell['expect'],
                              'observed': observed, 'match': observed == cell['expect'], 'detail': 'what the module said',
                              'time_ms': 1.0, 'tls': 'none'})
        results[section] = {'section': section, 'module': TABLE[section].get('module', section), 'started': '2026-01-01T00:00:00',
                            'seconds': 1.0, 'ansible_version': '2.19', 'lab': {'kind': 'docker'}, 'cells': cells}
    return results


def test_render_all_as_expected():
    text, totals = render.render(TABLE, fake_results())
    cells = sum(len(all_cells(m)) for m in render.SECTIONS)
    assert totals == {'match': cells, 'mismatch': 0, 'not run': 0}
    assert 'All %d cells observed as the table expects' % cells in text
    assert 'MISMATCH' not in text and 'NOT RUN' not in text
    for note in TABLE['notes']:
        assert '**%s**' % note in text
    for section in render.SECTIONS:
        assert '\n## %s\n' % (TABLE[section].get('title') or '`%s`' % section) in text
    assert 'ok (status warning, folder Junk)' in text  # what a cell asks besides `expect` is shown


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
