"""Render the expectation matrix page from the table and the results the integration targets observed.

    python tests/matrix/render.py [--table T] [--results DIR] [--output build/matrix.md] [--compare docs/matrix.md]

The table is tests/integration/targets/mail_matrix/vars/matrix.yml (the one the targets run); the
results are the <section>.json files the mail_matrix role writes (`make integration` puts them in
build/matrix). A section of the table is one module's grid, named after the module, or another
grid of a module's (mail_roundtrip_imap: the round trip reading the mailbox over IMAP;
smtp_check_expect; mail_roundtrip_paths) or of several modules' (connection_options, oauth: each
cell names its module). Every cell of the table appears in the page with what was observed for it;
a cell whose observation differs from the table, or that was not run, is marked loudly, and so is
the summary at the top.

`make matrix-check` (in make test) renders into build/ and, with --compare, fails when the committed
docs/matrix.md does not show what the render shows, leaving aside what changes from run to run
(dates, durations, per-cell details). `make matrix-docs` writes docs/matrix.md itself.
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / 'tests' / 'integration' / 'targets' / 'mail_matrix' / 'vars' / 'matrix.yml'
RESULTS = ROOT / 'build' / 'matrix'
OUTPUT = ROOT / 'build' / 'matrix.md'
DOCS = ROOT / 'docs' / 'matrix.md'
SECTIONS = ('smtp_check', 'pop3_check', 'imap_check', 'mail_roundtrip', 'mail_roundtrip_imap', 'smtp_check_expect',
            'connection_options', 'mail_roundtrip_paths', 'oauth')
# The integration targets that run the sections (tests/integration/targets).
TARGETS = ('smtp_check_matrix', 'pop3_check_matrix', 'imap_check_matrix', 'mail_roundtrip_matrix', 'connection_options_matrix',
           'oauth_matrix')
# Keys of a cell that are not the module's settings: what it must give. EXPECT_MORE is asked of a
# success only; EXPECT_ANY of any outcome that has those facts (smtp_check's expectation, the round
# trip's verdicts and bounce, the words of a failure).
EXPECT_MORE = ('expect_auth', 'expect_status', 'expect_folder', 'expect_tls', 'expect_min_hops')
EXPECT_ANY = ('expect_code', 'expect_verdicts', 'expect_bounce', 'expect_msg')
NOT_SETTINGS = ('expect', 'note', 'case', 'module') + EXPECT_MORE + EXPECT_ANY


def table_digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def load_table(path):
    with open(path, encoding='utf-8') as f:
        return yaml.safe_load(f)


def load_results(directory):
    """{section: results file content} for the sections that have one."""
    results = {}
    for section in SECTIONS:
        path = Path(directory) / ('%s.json' % section)
        if path.exists():
            with open(path, encoding='utf-8') as f:
                results[section] = json.load(f)
    return results


def cell_key(cell):
    return json.dumps(cell, sort_keys=True)


def value_text(value):
    """A cell value as the YAML table writes it (a mapping as key=value pairs)."""
    if isinstance(value, dict):
        return ', '.join('%s=%s' % (key, value_text(item)) for key, item in value.items())
    return json.dumps(value) if isinstance(value, (bool, list)) or value is None else str(value)


def outcome_text(outcome):
    if outcome is None:
        return 'not run'
    if outcome == 'ok':
        return 'ok'
    if outcome == 'fallback':
        return 'ok, fallback warning'
    if outcome.startswith('failed:'):
        return 'fails at `%s`' % outcome.split(':', 1)[1]
    return '`%s`' % outcome


def short_text(outcome):
    if outcome == 'ok':
        return 'ok'
    if outcome == 'fallback':
        return 'ok ⚠'
    if outcome.startswith('failed:'):
        return '✗ %s' % outcome.split(':', 1)[1]
    return '`%s`' % outcome


def more_text(cell):
    """What a cell asks besides `expect` (expect_auth, expect_code, ...), e.g. 'status warning' or
    'verdicts spf=pass, dkim=pass, dmarc=pass'."""
    return '; '.join('%s %s' % (key[len('expect_'):], value_text(cell[key])) for key in EXPECT_MORE + EXPECT_ANY
                     if key in cell)


class Section:
    """One section of the table (one grid) joined with its observed results."""

    def __init__(self, name, section, notes, results):
        self.name = name
        self.module = section.get('module', name)
        self.title = section.get('title') or '`%s`' % name
        self.rows = section['rows']
        self.columns = section['columns']
        self.cells = section['cells']
        self.extra = section.get('extra') or []
        self.note_numbers = dict((key, number) for number, key in enumerate(notes, 1))
        self.results = results
        observed = {}
        for entry in (results or {}).get('cells', []):
            observed[cell_key(entry['cell'])] = entry
        self.observed = observed
        known = set(cell_key(c) for c in self.cells + self.extra)
        self.stale = [entry for key, entry in observed.items() if key not in known]

    def entry(self, cell):
        return self.observed.get(cell_key(cell))

    def status(self, cell):
        """'match', 'mismatch' or 'not run'."""
        entry = self.entry(cell)
        if entry is None:
            return 'not run'
        return 'match' if entry['observed'] == cell['expect'] else 'mismatch'

    def counts(self):
        counts = {'match': 0, 'mismatch': 0, 'not run': 0}
        for cell in self.cells + self.extra:
            counts[self.status(cell)] += 1
        return counts

    def notes_of(self, cell):
        notes = cell.get('note') or []
        if isinstance(notes, str):
            notes = [notes]
        return [self.note_numbers[n] for n in notes]

    def mark(self, cell, compact=True):
        """What a table cell of the page shows for one matrix cell."""
        entry = self.entry(cell)
        refs = self.notes_of(cell)
        sup = '<sup>%s</sup>' % ','.join(str(n) for n in refs) if refs else ''
        show = short_text if compact else outcome_text
        if more_text(cell):
            sup = ' (%s)%s' % (more_text(cell), sup)
        if entry is None:
            return '**NOT RUN** (expected %s)%s' % (show(cell['expect']), sup)
        if entry['observed'] != cell['expect']:
            return '**❌ MISMATCH: expected %s, observed %s**%s' % (show(cell['expect']), show(entry['observed']), sup)
        return show(entry['observed']) + sup

    def column_label(self, values):
        parts = []
        for key, value in zip(self.columns, values):
            if key == 'send_mail':
                parts.append('send' if value else 'no mail')
            else:
                parts.append(str(value))
        return ', '.join(parts)

    def grid(self):
        """The cross product laid out as rows x columns (markdown lines)."""
        row_values, column_values, slots = [], [], {}
        for cell in self.cells:
            row = tuple(cell[k] for k in self.rows)
            column = tuple(cell[k] for k in self.columns)
            if row not in row_values:
                row_values.append(row)
            if column not in column_values:
                column_values.append(column)
            slots[(row, column)] = cell
        lines = ['| %s | %s |' % (' | '.join(self.rows), ' | '.join(self.column_label(c) for c in column_values)),
                 '|%s|' % '|'.join(['---'] * (len(self.rows) + len(column_values)))]
        for row in row_values:
            marks = [self.mark(slots[(row, column)]) if (row, column) in slots else '' for column in column_values]
            lines.append('| %s | %s |' % (' | '.join('`%s`' % v for v in row), ' | '.join(marks)))
        return lines

    def settings(self, cell):
        keys = self.rows + self.columns
        return ', '.join('%s=%s' % (k, value_text(v)) for k, v in cell.items() if k not in keys and k not in NOT_SETTINGS)

    def extra_table(self):
        lines = ['| %s | %s | settings | result |' % (' | '.join(self.rows), ' | '.join(self.columns)),
                 '|%s|' % '|'.join(['---'] * (len(self.rows) + len(self.columns) + 2))]
        for cell in self.extra:
            lines.append('| %s | %s | %s | %s |' % (' | '.join('`%s`' % cell.get(k) for k in self.rows),
                                                    ' | '.join('`%s`' % value_text(cell.get(k)) for k in self.columns),
                                                    self.settings(cell), self.mark(cell, compact=False)))
        return lines

    def details(self):
        """Every cell with the check name, what the module said and its time."""
        lines = ['| check | expected | observed | time ms | TLS | detail |', '|---|---|---|---|---|---|']
        # detail: what the role reported, then the facts the cell's extra expectations looked at
        for cell in self.cells + self.extra:
            entry = self.entry(cell) or {}
            observed = entry.get('observed')
            flag = '' if observed == cell['expect'] else ' **❌**'
            lines.append('| %s | %s | %s%s | %s | %s | %s |' % (
                entry.get('name', '(not run) ' + self.settings(dict((k, v) for k, v in cell.items() if k not in self.rows))),
                cell['expect'], observed or 'not run', flag, entry.get('time_ms', ''), entry.get('tls', ''),
                ' — '.join(str(part) for part in (entry.get('detail'), entry.get('facts')) if part).replace('|', '\\|')))
        return lines


def render(table, results, table_path=TABLE):
    notes = table.get('notes') or {}
    sections = [Section(name, table[name], notes, results.get(name)) for name in SECTIONS if name in table]
    totals = {'match': 0, 'mismatch': 0, 'not run': 0}
    for section in sections:
        for key, value in section.counts().items():
            totals[key] += value
    cells = sum(totals.values())
    try:
        shown_path = Path(table_path).resolve().relative_to(ROOT)
    except ValueError:
        shown_path = Path(table_path)
    out = ['# Expectation matrix', '',
           '<!-- Generated by tests/matrix/render.py (make matrix-docs) from %s (table sha256 %s) and the results'
           ' of `make integration`. Do not edit: change the table, run the integration targets, regenerate. -->'
           % (shown_path, table_digest(table_path)), '',
           'Every cell of the expectation table (`%s`) run through Ansible against the Docker lab (Postfix + Dovecot) by'
           ' the integration targets %s and `%s`, with the'
           ' outcome that was **observed**. Expectations were written from the documentation of each `tls_mode` and'
           ' option and the lab configuration before the cells were run.'
           % (shown_path, ', '.join('`%s`' % t for t in TARGETS[:-1]), TARGETS[-1]), '']
    if totals['mismatch'] or totals['not run']:
        wrong = totals['mismatch'] + totals['not run']
        out += ['> [!CAUTION]',
                '> **%d OF %d CELLS DO NOT SHOW WHAT THE TABLE EXPECTS: %d MISMATCH, %d NOT RUN.** They are marked'
                ' ❌ MISMATCH / NOT RUN below.' % (wrong, cells, totals['mismatch'], totals['not run']), '']
    else:
        out += ['**All %d cells observed as the table expects.**' % cells, '']
    out += ['| section | cells | as expected | mismatch | not run | run (UTC) | seconds |', '|---|---|---|---|---|---|---|']
    for section in sections:
        counts = section.counts()
        run = section.results or {}
        when = '%s, ansible-core %s, %s lab' % (run['started'], run.get('ansible_version'), run.get('lab', {}).get('kind')) if run else '—'
        out.append('| %s | %d | %d | %s | %s | %s | %s |' % (
            section.title, sum(counts.values()), counts['match'],
            '**%d**' % counts['mismatch'] if counts['mismatch'] else '0',
            '**%d**' % counts['not run'] if counts['not run'] else '0', when, run.get('seconds', '—')))
    out += ['', 'Legend: `ok` succeeded with TLS as asked (plaintext for `tls_mode=none`); `ok ⚠` succeeded without TLS'
            ' and warned "continued without TLS"; `✗ stage` failed at that stage; in parentheses what else the cell'
            ' checked (the login mechanism, status word, TLS version, reply code of an expectation, hops, verdicts,'
            ' bounce, words of the failure); numbers are the notes at the end.', '']
    mismatches = [(m, c) for m in sections for c in m.cells + m.extra if m.status(c) == 'mismatch']
    if mismatches:
        out += ['## ❌ Mismatches', '']
        for section, cell in mismatches:
            entry = section.entry(cell)
            out.append('- %s **%s**: expected %s, observed %s — %s' % (
                section.title, entry['name'], outcome_text(cell['expect']), outcome_text(entry['observed']), entry.get('detail', '')))
        out.append('')
    for section in sections:
        out += ['## %s' % section.title, '']
        sink = (section.results or {}).get('mail_sink')
        if sink:
            out += ['Mails sent by the `send` cells: %s, found in the mailbox `%s`: %s (then deleted).%s' % (
                sink['expected'], sink['mailbox'], sink['found'], '' if sink['found'] == sink['expected'] else ' **❌ MISMATCH**'), '']
        out += section.grid() + ['']
        if section.extra:
            out += ['Cells outside the cross product:', ''] + section.extra_table() + ['']
        if section.stale:
            out += ['**The results file holds %d cells that are no longer in the table (run the integration targets'
                    ' again).**' % len(section.stale), '']
        out += ['<details><summary>Every %s cell with what the module said</summary>' % section.name, '']
        out += section.details() + ['', '</details>', '']
    out += ['## Notes', '']
    for number, (key, text) in enumerate(notes.items(), 1):
        out.append('%d. **%s**: %s' % (number, key, ' '.join(str(text).split())))
    out.append('')
    return '\n'.join(out), totals


def table_lines(text):
    """The lines of a page that the table and this renderer decide once every cell is observed as
    expected: all but the run dates and durations of the summary rows, the mail counts and the
    per-cell details, and blank lines."""
    lines = text.splitlines()
    first_section = next((i for i, line in enumerate(lines) if line.startswith('## ')), len(lines))
    kept, in_details = [], False
    for number, line in enumerate(lines):
        if line.startswith('<details>'):
            in_details = True
        elif line.startswith('</details>'):
            in_details = False
        elif not (in_details or not line.strip() or line.startswith('Mails sent by')):
            if number < first_section and line.startswith('| ') and not line.startswith('| section |'):
                line = '|'.join(line.split('|')[:6]) + '|'  # a summary row without its run date and seconds
            kept.append(line)
    return kept


def compare(rendered, committed, committed_name):
    """Differences in table_lines between a fresh render and the committed page (a unified diff)."""
    return list(difflib.unified_diff(table_lines(committed), table_lines(rendered), committed_name, 'this render',
                                     lineterm='', n=1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--table', default=str(TABLE))
    parser.add_argument('--results', default=str(RESULTS))
    parser.add_argument('--output', default=str(OUTPUT))
    parser.add_argument('--compare', metavar='PAGE', help='fail when PAGE (docs/matrix.md) shows other cells than this render')
    args = parser.parse_args(argv)
    text, totals = render(load_table(args.table), load_results(args.results), args.table)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text, encoding='utf-8')
    cells = sum(totals.values())
    print('%s: %d cells, %d as expected, %d mismatch, %d not run' % (args.output, cells, totals['match'],
                                                                     totals['mismatch'], totals['not run']))
    if totals['mismatch'] or totals['not run']:
        print('*** %d CELLS DO NOT SHOW WHAT THE TABLE EXPECTS (see %s) ***'
              % (totals['mismatch'] + totals['not run'], args.output), file=sys.stderr)
    if args.compare:
        diff = compare(text, Path(args.compare).read_text(encoding='utf-8'), args.compare)
        if diff:
            print('\n'.join(diff[:60]), file=sys.stderr)
            print('*** %s does not show what %s shows (above, leaving aside dates, durations and details): run'
                  ' `make integration matrix-docs` and commit it ***' % (args.compare, args.output), file=sys.stderr)
            return 1
        print('%s shows what %s shows' % (args.compare, args.output))
    return 0


if __name__ == '__main__':
    sys.exit(main())
