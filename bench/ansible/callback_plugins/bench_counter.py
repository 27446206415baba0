# -*- coding: utf-8 -*-
# Benchmark helper (not part of the collection): counts round-trip results as they come in and
# writes them to $BENCH_COUNTER_OUT as JSON when the play ends.
from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = '''
name: bench_counter
type: aggregate
short_description: count mail_roundtrip results for the benchmark
description: Writes ok/failed counts and trip times to the file named by BENCH_COUNTER_OUT.
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
        self.data = {'ok': 0, 'failed': 0, 'trip_time_ms': [], 'failures': [], 'start': time.time()}

    def _single(self, res, ok):
        if ok:
            self.data['ok'] += 1
            self.data['trip_time_ms'].append(res.get('trip_time_ms'))
        else:
            self.data['failed'] += 1
            self.data['failures'].append('%s: %s' % (res.get('stage'), res.get('msg')))

    def _task_result(self, result, ok):
        action = result._task.action
        res = result._result
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

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get('BENCH_COUNTER_OUT')
        if path:
            self.data['end'] = time.time()
            with open(path, 'w') as f:
                json.dump(self.data, f)
