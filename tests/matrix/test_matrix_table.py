"""The expectation matrix table is complete and consistent, docs/matrix.md comes from it, and the
renderer marks what disagrees. No lab needed: the cells themselves run in the integration targets
(`make integration`)."""

from __future__ import annotations

import copy
import importlib.util
import itertools
import re
from pathlib import Path

import pytest
import yaml

from ansible_collections.mailops.health.plugins.module_utils._probe import STAGES
from ansible_collections.mailops.health.plugins.module_utils._session import TLS_MODES
from lab.docker.config import (BADDKIM_DOMAIN, BOUNCE_DOMAIN, OUTSIDE_DOMAIN, PORTS, TLS_BADCERT, TLS_IMPLICIT, TLS_NONE,
                               TLS_REQUIRED, TLS_STARTTLS)

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location('matrix_render', HERE / 'render.py')
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

TABLE = yaml.safe_load(render.TABLE.read_text())
# The lab's own SMTP ports; the open relay (a negative case for smtp_check_expect only) and the
# outside provider's MX (not the lab's server) are not in the cross products.
OPEN_RELAY = 'smtp_openrelay'
SMTP_ENDPOINTS = [name for name, port in PORTS.items()
                  if port.protocol == 'smtp' and port.address == 'lab' and name != OPEN_RELAY]
POP3_ENDPOINTS = [name for name, port in PORTS.items() if port.protocol == 'pop3']
IMAP_ENDPOINTS = [name for name, port in PORTS.items() if port.protocol == 'imap']
# An SMTP endpoint "accepts mail" unless its certificate cannot be trusted.
ACCEPTING_SMTP = [name for name in SMTP_ENDPOINTS if PORTS[name].tls != TLS_BADCERT]
# The IMAP endpoints a round trip reads the mailbox from, each in the mode its port is made for.
ROUNDTRIP_IMAP = [(name, {TLS_STARTTLS: 'starttls', TLS_IMPLICIT: 'tls'}[PORTS[name].tls])
                  for name in IMAP_ENDPOINTS if PORTS[name].tls in (TLS_STARTTLS, TLS_IMPLICIT)]
OURS = {'alice', 'bob', 'rt01', 'rt02', 'rt03', 'rt04', 'rt05'}
CLEARTEXT_MODES = ('none', 'starttls_if_available', 'tls_if_available')
MODULE_OF_PROTOCOL = {'smtp': 'smtp_check', 'pop3': 'pop3_check', 'imap': 'imap_check'}
# The mode each port is made for: STARTTLS ports with starttls, implicit TLS ones with tls.
MODE_OF_TLS = {TLS_STARTTLS: 'starttls', TLS_REQUIRED: 'starttls', TLS_IMPLICIT: 'tls', TLS_NONE: 'none'}
OAUTH_MECHANISMS = ('xoauth2', 'oauthbearer')
# Failures of an OAuth login: SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE.
LOGIN_STAGE = {'smtp_check': 'auth', 'pop3_check': 'login', 'imap_check': 'login'}


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


def test_smtp_expect_cells_cover_relay_auth_without_tls_and_sender_ownership():
    cells = TABLE['smtp_check_expect']['cells']
    assert TABLE['smtp_check_expect']['module'] == 'smtp_check'
    for cell in cells:
        # a check with an expectation stops before DATA: nothing is sent, the outcome is the expectation's
        assert cell['must'] in ('accept', 'reject') and cell['expect_stage'] in ('auth', 'mail_from', 'rcpt'), cell
        assert not cell.get('send_mail') and cell['expect'] in ('ok', 'failed:expectation') and 'expect_code' in cell, cell
        refused = (cell['must'] == 'reject') == (cell['expect'] == 'ok')
        if refused and cell['expect_code'] is not None:
            assert cell['expect_code'] >= 500, cell  # expect=reject wants a permanent refusal
        if not refused:
            assert cell['expect_code'] is None or cell['expect_code'] < 400, cell
    by_case = {}
    for cell in cells:
        by_case.setdefault(cell['case'], []).append(cell)
    # relaying to an outside address without AUTH: refused on port 25 (plaintext and STARTTLS), taken by the open relay
    relay = dict(((c['endpoint'], c['tls_mode']), c) for c in by_case['relay'])
    assert all(c['auth'] == 'none' and c['must'] == 'reject' and c['mail_to'].endswith('@' + OUTSIDE_DOMAIN) for c in relay.values())
    assert (relay[('smtp', 'none')]['expect'], relay[('smtp', 'starttls')]['expect']) == ('ok', 'ok')
    assert relay[(OPEN_RELAY, 'none')]['expect'] == 'failed:expectation'
    # AUTH without TLS: not offered on 25 and 587 before STARTTLS, offered on the port without STARTTLS
    auth = dict((c['endpoint'], c) for c in by_case['auth-without-tls'])
    assert all(c['tls_mode'] == 'none' and c['expect_stage'] == 'auth' and c['must'] == 'reject' for c in auth.values())
    assert [auth[name]['expect'] for name in ('smtp', 'submission', 'smtp_nostarttls')] == ['ok', 'ok', 'failed:expectation']
    # sender ownership on every submission port: another account's address refused at RCPT, the own accepted
    submission = sorted(name for name in SMTP_ENDPOINTS if PORTS[name].tls in (TLS_REQUIRED, TLS_IMPLICIT))
    for case, must, sender in (('foreign-sender', 'reject', '{other_sender}@{domain}'), ('own-sender', 'accept', '{sender}@{domain}')):
        assert sorted(c['endpoint'] for c in by_case[case]) == submission
        assert all(c['must'] == must and c['expect'] == 'ok' and c['mail_from'] == sender and c['auth'] != 'none'
                   and c['expect_stage'] == 'rcpt' for c in by_case[case]), case
    assert TABLE['accounts']['other_sender'] != TABLE['accounts']['sender']


def test_connection_options_cells_are_every_case_with_every_module():
    cells = TABLE['connection_options']['cells']
    cases = sorted(set(c['case'] for c in cells))
    assert keys(cells, ('case', 'module')) == sorted(itertools.product(cases, MODULE_OF_PROTOCOL.values()))
    options = ('tls_server_name', 'tls_min_version', 'cert_critical_days', 'cert_warning_days', 'address_family', 'source_address')
    for cell in cells:
        port = PORTS[cell['endpoint']]
        # over implicit TLS on the module's own protocol, without a login
        assert MODULE_OF_PROTOCOL[port.protocol] == cell['module'] and port.tls == TLS_IMPLICIT and cell['tls_mode'] == 'tls'
        assert cell['auth'] == 'none' and set(options) & set(cell), cell
    for option in options:  # every option is in the section, for every module
        assert set(c['module'] for c in cells if option in c) == set(MODULE_OF_PROTOCOL.values()), option
    by = dict(((c['case'], c['module']), c) for c in cells)
    for module in MODULE_OF_PROTOCOL.values():
        assert by[('tls-min-1.3', module)]['expect_tls'] == 'TLSv1.3'
        assert by[('cert-critical-days', module)]['expect'] == 'failed:certificate'
        assert by[('cert-warning-days', module)]['expect_status'] == 'warning'
        assert by[('cert-critical-days', module)]['cert_critical_days'] > 397  # the lab certificates' lifetime
        assert by[('wrong-server-name', module)]['expect'] == 'failed:tls'
        assert (by[('ipv6', module)]['host'], by[('ipv6', module)]['address_family']) == ('::1', 'ipv6')


def test_roundtrip_paths_cells_are_every_case_read_over_pop3_and_imap():
    section = TABLE['mail_roundtrip_paths']
    cells = section['cells']
    assert section['module'] == 'mail_roundtrip'
    cases = sorted(set(c['case'] for c in cells))
    assert cases == ['baddkim', 'bounce', 'bounce-sender-mailbox', 'loop', 'loop-verified']
    assert keys(cells, ('case', 'receive_protocol')) == sorted(itertools.product(cases, ('imap', 'pop3')))
    max_trip = TABLE['settings']['max_trip_time']
    for cell in cells:
        # mail leaves the lab domain only with AUTH, on a submission port
        assert cell['smtp_auth'] == 'password' and PORTS[cell['smtp_endpoint']].tls in (TLS_REQUIRED, TLS_IMPLICIT), cell
        receive = cell['receive_protocol']
        assert PORTS[cell[receive + '_endpoint']].protocol == receive and ('imap_endpoint' in cell) == (receive == 'imap'), cell
        domain = cell['mail_to'].split('@')[1]
        if cell['case'].startswith('bounce'):
            assert domain == BOUNCE_DOMAIN and cell['expect'] == 'failed:bounced', cell
            assert cell['expect_bounce']['status'] == '5.1.1' and cell['expect_bounce']['within_s'] * 4 <= max_trip, cell
        else:
            assert domain == OUTSIDE_DOMAIN and cell['authserv_ids'] == ['{authserv_id}'], cell  # the loop
    by = dict(((c['case'], c['receive_protocol']), c) for c in cells)
    for receive in ('pop3', 'imap'):
        for case in ('loop', 'loop-verified'):
            assert by[(case, receive)]['expect'] == 'ok' and by[(case, receive)]['expect_min_hops'] >= 4
            assert by[(case, receive)]['expect_verdicts'] == {'spf': 'pass', 'dkim': 'pass', 'dmarc': 'pass'}
        assert by[('loop-verified', receive)]['require_authentication'] == ['spf', 'dkim', 'dmarc']
        bad = by[('baddkim', receive)]
        assert bad['mail_from'].endswith('@' + BADDKIM_DOMAIN) and bad['require_authentication'] == ['dkim']
        assert bad['expect'] == 'failed:authentication' and bad['expect_verdicts']['dkim'] == 'fail'
        # the DSN in the sender's own mailbox, read as the round trip's mailbox ...
        own = by[('bounce', receive)]
        assert own['mailbox'] == 'sender' and own['expect_bounce']['mailbox'] == 'receiving' and 'sender_mailbox' not in own
        # ... or watched as sender_* while another mailbox is read (another protocol: the labels differ)
        watched = by[('bounce-sender-mailbox', receive)]
        assert 'mailbox' not in watched and watched['expect_bounce']['mailbox'] == 'sender'
        assert PORTS[watched['sender_mailbox']].protocol != receive


def test_oauth_cells_cover_every_tls_endpoint_both_mechanisms_and_the_refusals():
    cells = TABLE['oauth']['cells']
    for cell in cells:
        port = PORTS[cell['endpoint']]
        assert cell['module'] == MODULE_OF_PROTOCOL[port.protocol] and cell['auth'] in OAUTH_MECHANISMS, cell
        assert cell['tls_mode'] == MODE_OF_TLS[port.tls] and cell['token'] in ('valid', 'expired', 'wrong_scope', 'malformed'), cell
        if cell['expect'] == 'ok':
            assert cell['token'] == 'valid' and cell['tls_mode'] != 'none' and cell['expect_auth'] == cell['auth'], cell
        else:
            assert cell['expect'] == 'failed:' + LOGIN_STAGE[cell['module']], cell
    # a valid token logs in with both mechanisms on every endpoint with TLS the lab trusts
    tls_endpoints = [name for name, port in PORTS.items() if port.protocol in MODULE_OF_PROTOCOL and port.address == 'lab'
                     and port.tls in (TLS_STARTTLS, TLS_REQUIRED, TLS_IMPLICIT)]
    valid_ok = [(c['endpoint'], c['auth']) for c in cells if c['token'] == 'valid' and c['expect'] == 'ok']
    assert sorted(valid_ok) == sorted(itertools.product(tls_endpoints, OAUTH_MECHANISMS))
    # expired, wrong-scope and malformed tokens with both mechanisms on one endpoint per protocol
    for token in ('expired', 'wrong_scope', 'malformed'):
        refused = [c for c in cells if c['token'] == token]
        every = sorted(itertools.product(MODULE_OF_PROTOCOL.values(), OAUTH_MECHANISMS))
        assert sorted((c['module'], c['auth']) for c in refused) == every, token
        assert all(c['tls_mode'] != 'none' and 'the server said' in c['expect_msg'] for c in refused)  # its error challenge
    # a valid token over plaintext, allowed cleartext or not, is never sent: every plaintext port, both mechanisms
    plaintext = [c for c in cells if c['tls_mode'] == 'none']
    assert sorted((c['endpoint'], c['auth']) for c in plaintext) == sorted(itertools.product(
        [name for name in tls_endpoints + [n for n, p in PORTS.items() if p.tls == TLS_NONE]
         if PORTS[name].tls == TLS_NONE and PORTS[name].protocol in MODULE_OF_PROTOCOL and name != OPEN_RELAY
         and PORTS[name].address == 'lab'], OAUTH_MECHANISMS))
    assert all(c['token'] == 'valid' and c['allow_cleartext_auth'] is True for c in plaintext)
    assert all('refusing to send an OAuth token' in c['expect_msg'] for c in plaintext)  # the client, not the server
    assert TABLE['settings']['malformed_token'].count('.') == 2  # looks like a JWT's three parts, is none


def test_oauth_round_trips_log_in_with_tokens_on_both_sides():
    trips = [c for section in ('mail_roundtrip', 'mail_roundtrip_imap') for c in all_cells(section) if 'token' in c]
    assert {('imap_endpoint' in c) for c in trips} == {True, False}
    for cell in trips:
        receive = 'imap' if 'imap_endpoint' in cell else 'pop3'
        assert cell['token'] == 'valid' and cell['smtp_auth'] == 'oauth2' and cell['smtp_mechanism'] in OAUTH_MECHANISMS, cell
        assert cell[receive + '_auth'] in OAUTH_MECHANISMS and cell['expect'] == 'ok', cell
    assert {c['smtp_mechanism'] for c in trips} == set(OAUTH_MECHANISMS)


@pytest.mark.parametrize('section', render.SECTIONS)
def test_oauth_only_with_a_token(section):
    # the runner logs in with a token exactly where a cell has one (auth xoauth2/oauthbearer, smtp_auth oauth2)
    for cell in all_cells(section):
        oauth = (cell.get('auth') in OAUTH_MECHANISMS or cell.get('smtp_auth') == 'oauth2'
                 or cell.get('pop3_auth') in OAUTH_MECHANISMS or cell.get('imap_auth') in OAUTH_MECHANISMS)
        assert oauth == ('token' in cell), cell


@pytest.mark.parametrize('section', render.SECTIONS)
def test_cells_run_a_real_module(section):
    modules = set(MODULE_OF_PROTOCOL.values()) | {'mail_roundtrip'}
    for cell in all_cells(section):
        assert cell.get('module', TABLE[section].get('module', section)) in modules, cell


@pytest.mark.parametrize('section', render.SECTIONS)
def test_placeholders_name_known_values(section):
    known = set('{%s}' % role for role in TABLE['accounts']) | {'{mailbox}', '{domain}', '{authserv_id}'}
    for cell in all_cells(section):
        for value in cell.values():
            for text in value if isinstance(value, list) else [value]:
                if isinstance(text, str):
                    for found in re.findall(r'\{[^}]*\}', text):
                        assert found in known, cell
        assert '{mailbox}' not in str(cell) or cell.get('module', TABLE[section].get('module')) == 'mail_roundtrip', cell


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
        # what it asks of any outcome, only where the module reports those facts
        assert 'expect_code' not in cell or ('must' in cell and expect in ('ok', 'failed:expectation')), cell
        assert 'expect_verdicts' not in cell or expect in ('ok', 'failed:authentication'), cell
        assert 'expect_bounce' not in cell or expect == 'failed:bounced', cell
        assert 'expect_msg' not in cell or expect.startswith('failed:'), cell


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
    assert 'ok (status warning; folder Junk)' in text  # what a cell asks besides `expect` is shown
    assert 'verdicts spf=pass, dkim=pass, dmarc=pass' in text and '(code 554)' in text


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
