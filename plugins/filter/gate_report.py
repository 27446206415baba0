# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The health gate's results as CI and monitoring read them: JUnit XML, the Prometheus text
format (for node_exporter's textfile collector) and a Markdown table. Documented in the YAML
files beside this one; the rows are the mail_health_gate role's mail_health_gate_results."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
import xml.etree.ElementTree as ET

_STATUS = {'ok': 0, 'warning': 1, 'failed': 2}
_PREFIX = 'mailops_health_'


def _seconds(ms):
    return None if ms is None else float(ms) / 1000.0


def junit_xml(rows, suite='mail_health_gate'):
    """One testcase per check: failed checks carry a failure with the stage and message."""
    failures = sum(1 for row in rows if row['outcome'] == 'failed')
    total = sum(_seconds(row.get('time_ms')) or 0.0 for row in rows)
    suites = ET.Element('testsuites', name=suite, tests=str(len(rows)), failures=str(failures), time='%.3f' % total)
    node = ET.SubElement(suites, 'testsuite', name=suite, tests=str(len(rows)), failures=str(failures), errors='0',
                         skipped='0', time='%.3f' % total,
                         timestamp=time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime()))
    for row in rows:
        case = ET.SubElement(node, 'testcase', classname='mailops.health.%s' % row['type'], name=row['name'],
                             time='%.3f' % (_seconds(row.get('time_ms')) or 0.0))
        if row['outcome'] == 'failed':
            failure = ET.SubElement(case, 'failure', type=str(row.get('stage')),
                                    message='%s: %s' % (row.get('stage'), row.get('msg')))
            failure.text = str(row.get('msg'))
        if row.get('detail'):
            ET.SubElement(case, 'system-out').text = str(row['detail'])
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding='unicode') + '\n'


def _label(value):
    return str(value).replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def prometheus_text(rows, timestamp=None):
    """Gauges per check (labels check, type, host, port) in the Prometheus text format."""
    metrics = [
        ('check_up', '1 when the check passed (up or warning), 0 when it failed.', lambda r: int(r['outcome'] != 'failed')),
        ('check_status', 'The outcome: 0 up, 1 warning, 2 down.', lambda r: _STATUS[r['outcome']]),
        ('check_response_seconds', 'Response time of the check (a round trip: SMTP plus mailbox response time).',
         lambda r: _seconds(r.get('time_ms'))),
        ('roundtrip_trip_seconds', 'Seconds from the SMTP server accepting the test mail to the probe seeing it.',
         lambda r: _seconds(r.get('trip_time_ms'))),
        ('certificate_days_left', 'Days until the TLS certificate the check saw expires (the earliest of a round trip).',
         lambda r: r.get('cert_days')),
        ('check_tries', 'Tries the check took (more than 1 when it was tried again).', lambda r: r.get('tries')),
    ]
    lines = []
    for name, help_text, value_of in metrics:
        samples = []
        for row in rows:
            value = value_of(row)
            if value is None:
                continue
            labels = ','.join('%s="%s"' % (key, _label(row.get(field) if row.get(field) is not None else ''))
                              for key, field in (('check', 'name'), ('type', 'type'), ('host', 'host'), ('port', 'port')))
            samples.append('%s%s{%s} %s' % (_PREFIX, name, labels, repr(float(value)) if isinstance(value, float) else value))
        if samples:
            lines += ['# HELP %s%s %s' % (_PREFIX, name, help_text), '# TYPE %s%s gauge' % (_PREFIX, name)] + samples
    lines += ['# HELP %slast_run_timestamp_seconds When the gate last ran (Unix time).' % _PREFIX,
              '# TYPE %slast_run_timestamp_seconds gauge' % _PREFIX,
              '%slast_run_timestamp_seconds %.3f' % (_PREFIX, time.time() if timestamp is None else float(timestamp))]
    return '\n'.join(lines) + '\n'


def _cell(value):
    return '-' if value is None or value == '' else str(value).replace('|', '\\|').replace('\n', ' ')


def markdown_table(rows):
    """The summary table in Markdown, for CI job summaries."""
    words = {'ok': 'up', 'warning': 'warning', 'failed': '**DOWN**'}
    lines = ['| check | result | type | time ms | TLS | cert days | detail |', '| --- | --- | --- | ---: | --- | ---: | --- |']
    for row in rows:
        lines.append('| %s |' % ' | '.join(_cell(value) for value in (
            row['name'], words[row['outcome']], row['type'], row.get('time_ms'), row.get('tls'), row.get('cert_days'),
            row.get('detail'))))
    outcomes = [row['outcome'] for row in rows]
    lines += ['', '%d checks: %d up, %d warning, %d down' % (len(rows), outcomes.count('ok'), outcomes.count('warning'),
                                                             outcomes.count('failed'))]
    return '\n'.join(lines) + '\n'


class FilterModule(object):

    def filters(self):
        return {'junit_xml': junit_xml, 'prometheus_text': prometheus_text, 'markdown_table': markdown_table}
