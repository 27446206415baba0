# -*- coding: utf-8 -*-
# Benchmark helper (not part of the collection): counts round-trip results as they come in, keeps
# the health-gate outcomes the gate playbooks hand over (fact bench_gate_outcomes) and each task's
# duration, and writes them to $BENCH_COUNTER_OUT as JSON when the play ends.
from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = '''
name: bench_counter
type: aggregate
short_description: count mail_roundtrip results for the benchmark
description: Writes ok/failed counts, trip times, gate outcomes and task durations to the file named by BENCH_COUNTER_OUT.
'''

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = 'aggregate'
    CALLBACK_NAME = 'bench_counter'
    CALLBACK_NEEDS_ENABLED = False

    def __init__(self, *args, **kwargs):
        super(CallbackModule, self).__init__(*args, **kwargs)
        self.data = {'ok': 0, 'failed': 0, 'trip_time_ms': [], 'failures': [], 'start': time.time(),
                     'tasks': []}
        self._task_start = None

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task_start = (task.get_name(), task.action, time.time())

    def _task_done(self):
        # One host (localhost) in the gate playbooks: its result ends the task (a loop's after its items).
        if self._task_start is not None:
            name, action, start = self._task_start
            self.data['tasks'].append({'name': name, 'action': action, 'seconds': round(time.time() - start, 4)})
            self._task_start = None

    def _single(self, res, ok):
        if ok:
            self.data['ok'] += 1
            self.data['trip_time_ms'].append(res.get('trip_time_ms'))
        else:
            self.data['failed'] += 1
            self.data['failures'].append('%s: %s' % (res.get('stage'), res.get('msg')))

    def _task_result(self, result, ok):
        self._task_done()
        action = result._task.action
        res = result._result
        outcomes = (res.get('ansible_facts') or {}).get('bench_gate_outcomes')
        if outcomes is not None:
            self.data['gate_outcomes'] = outcomes
        if action.endswith('mail_roundtrip_batch'):
            for r in res.get('results') or []:
                self._single(r, r.get('ok'))
            if not res.get('results'):
                self._single(res, False)
        elif action.endswith('mail_roundtrip') and 'results' not in res:
            self._single(res, ok)

    def v2_runner_item_on_ok(self, result):
        if result._task.action.endswith('mail_roundtrip'):
            self._single(result._result, True)

    def v2_runner_item_on_failed(self, result):
        if result._task.action.endswith('mail_roundtrip'):
            self._single(result._result, False)

    def v2_runner_on_ok(self, result):
        self._task_result(result, True)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task_result(result, False)

    def v2_runner_on_skipped(self, result):
        self._task_done()

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('BENCH_COUNTER_OUT')
        if path:
            self.data['end'] = time.time()
            with open(path, 'w') as f:
                json.dump(self.data, f)
