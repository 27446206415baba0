# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""mail_roundtrip_batch: many round trips in threads, probes on one mailbox one after another,
up to `parallel` mailboxes at once."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError, check_range, ms_since
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip, mailbox_of, prepare

# How many mailboxes may be worked on at once, and when the batch fails.
DEFAULT_PARALLEL = 10
MAX_PARALLEL = 200
FAIL_ON = ('any', 'all', 'none')
# What each probe of a batch reports besides index, mailbox, ok, status and, on failure, stage and msg.
_BATCH_FIELDS = (('token', None), ('sent', False), ('trip_time_ms', None), ('total_ms', None), ('attempts', 0),
                 ('stale_deleted', 0), ('tries', 1))
# Failed probes named in the message of a failed batch; all of them are in its results.
_LISTED_FAILURES = 10


def mailbox_label(mailbox):
    _protocol, host, port, user = mailbox
    return '%s@%s:%s' % (user, '[%s]' % host if ':' in host else host, port)


def batch_entry(index, params, check_mode=False):
    """One probe of a batch as a plain result and its warnings. Never raises: a bug of ours met
    by one probe fails that probe, not the batch."""
    entry = {'index': index, 'mailbox': mailbox_label(mailbox_of(params))}
    try:
        result = mail_roundtrip(params, check_mode)
        failure = None
    except ProbeError as e:
        result, failure = e.result, (e.stage, e.message)
    except Exception as e:  # a bug of ours: this probe fails with stage internal, the batch goes on
        result, failure = {}, ('internal', 'internal error: %s: %s' % (type(e).__name__, e))
    entry['ok'] = failure is None
    entry['status'] = result.get('status', 'down')
    for key, default in _BATCH_FIELDS:
        entry[key] = result.get(key, default)
    if failure is not None:
        entry['stage'], entry['msg'] = failure
    if 'transcript' in result:
        entry['transcript'] = result['transcript']
    return entry, result.get('warnings', [])


def run_many(probes, parallel=DEFAULT_PARALLEL, check_mode=False):
    """Run many round trips (each a dict of mail_roundtrip's options) in threads: probes on the same
    POP3 mailbox one after another (together they would only wait for each other's mailbox lock),
    up to parallel mailboxes at once. Every probe's input is checked before anything is sent.
    Returns results (in the order of probes), ok, failed_count, wall_ms, round_trips_per_minute,
    changed and warnings (prefixed with the probe's index)."""
    check_range('parallel', parallel, 1, MAX_PARALLEL)
    if not probes:
        raise ProbeError('input', 'probes is empty: a batch needs at least one probe')
    errors = []
    for index, params in enumerate(probes):
        try:
            prepare(params)
        except ProbeError as e:
            errors.append('probes[%d]: %s' % (index, e.message))
    if errors:
        raise ProbeError('input', '; '.join(errors))

    queues = {}
    for index, params in enumerate(probes):
        queues.setdefault(mailbox_of(params), []).append(index)
    done = [None] * len(probes)

    def work(indexes):
        for index in indexes:
            done[index] = batch_entry(index, probes[index], check_mode)

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(parallel, len(queues))) as pool:
        # Longest queues first, so that one long queue does not start last and finish alone.
        futures = [pool.submit(work, indexes) for indexes in sorted(queues.values(), key=len, reverse=True)]
        for future in futures:
            future.result()
    wall_ms = ms_since(start)
    results = [entry for entry, _warnings in done]
    ok = sum(1 for entry in results if entry['ok'])
    return {
        'changed': any(entry['stale_deleted'] for entry in results),
        'results': results,
        'ok': ok,
        'failed_count': len(results) - ok,
        'wall_ms': wall_ms,
        'round_trips_per_minute': round(ok * 60000.0 / wall_ms, 1) if wall_ms else 0.0,
        'warnings': ['probes[%d]: %s' % (index, warning)
                     for index, (_entry, warnings) in enumerate(done) for warning in warnings],
    }


def mail_roundtrip_batch(params, probes, check_mode=False):
    """The mail_roundtrip_batch module's core: run_many() with params parallel and fail_on; a
    failed batch raises ProbeError at the stage of its first failed probe, with the whole result."""
    fail_on = params.get('fail_on') or 'any'
    if fail_on not in FAIL_ON:
        raise ProbeError('input', 'fail_on must be one of %s, got %s' % (', '.join(FAIL_ON), fail_on))
    parallel = DEFAULT_PARALLEL if params.get('parallel') is None else params['parallel']
    batch = run_many(probes, parallel, check_mode)
    failed = [entry for entry in batch['results'] if not entry['ok']]
    if failed and (fail_on == 'any' or (fail_on == 'all' and not batch['ok'])):
        listed = '; '.join('probes[%d] (%s) at stage %s: %s' % (entry['index'], entry['mailbox'], entry['stage'], entry['msg'])
                           for entry in failed[:_LISTED_FAILURES])
        if len(failed) > _LISTED_FAILURES:
            listed += '; and %d more (see results)' % (len(failed) - _LISTED_FAILURES)
        raise ProbeError(failed[0]['stage'], '%d of %d probes failed (fail_on=%s): %s'
                         % (len(failed), len(batch['results']), fail_on, listed), batch)
    return batch
