# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one scheduler for many checks in one task (mail_checks: any mix of SMTP, POP3, IMAP checks
and round trips; mail_roundtrip_batch: round trips): threads, checks that log in to the same
mailbox one after another, up to `parallel` at once."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import time
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.mailops.health.plugins.module_utils import _imap, _pop3, _smtp
from ansible_collections.mailops.health.plugins.module_utils._probe import (
    ProbeError, check_range, ms_since, validate_endpoint,
)
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip, mailbox_of, prepare

# How many checks may run at once, and when the task fails.
DEFAULT_PARALLEL = 10
MAX_PARALLEL = 200
FAIL_ON = ('any', 'all', 'none')
CHECK_TYPES = ('smtp', 'pop3', 'imap', 'roundtrip')
# What each probe of a round-trip batch reports besides index, mailbox, ok, status and, on failure, stage and msg.
_BATCH_FIELDS = (('token', None), ('sent', False), ('trip_time_ms', None), ('total_ms', None), ('attempts', 0),
                 ('stale_deleted', 0), ('path', None), ('authentication', None), ('bounce', None), ('tries', 1))
# Failed checks named in the message of a failed task; all of them are in its results.
_LISTED_FAILURES = 10


def _pop3_core(params, _check_mode):
    return _pop3.pop3_check(params)


def _imap_core(params, _check_mode):
    return _imap.imap_check(params)


def _roundtrip_core(params, check_mode):
    return mail_roundtrip(params, check_mode)


# kind: (check the input before anything is sent, run the check)
KINDS = {
    'smtp': (_smtp.validate, _smtp.smtp_check),
    'pop3': (validate_endpoint, _pop3_core),
    'imap': (validate_endpoint, _imap_core),
    'roundtrip': (prepare, _roundtrip_core),
}


def queue_of(kind, params, index):
    """Checks that log in to the same mailbox (host and user, whatever the port or protocol) wait
    for each other: a POP3 maildrop is locked while a session holds it. Every other check has a
    queue of its own."""
    if kind == 'roundtrip':
        _protocol, host, _port, user = mailbox_of(params)
        return ('mailbox', host, user)
    if kind == 'pop3' and params.get('pop3_auth', 'none') != 'none':
        return ('mailbox', params['host'], params.get('username'))
    return ('check', index)


def mailbox_label(mailbox):
    _protocol, host, port, user = mailbox
    return '%s@%s:%s' % (user, '[%s]' % host if ':' in host else host, port)


def run_one(kind, params, check_mode):
    """(result, failure) of one check. Never raises: a bug of ours met by one check fails that
    check with stage internal, the others go on."""
    try:
        return KINDS[kind][1](params, check_mode), None
    except ProbeError as e:
        return e.result, (e.stage, e.message)
    except Exception as e:  # a bug of ours: this check fails with stage internal, the task goes on
        return {}, ('internal', 'internal error: %s: %s' % (type(e).__name__, e))


def run_many(items, parallel=DEFAULT_PARALLEL, check_mode=False, label='checks', entry=None):
    """Run items ((kind, params) each) in threads, up to parallel at once, checks on one mailbox
    one after another. Every item's input is checked before anything is sent (stage input,
    naming label[index]). entry(index, kind, params, result, failure) makes each result entry.
    Returns results (in the order of items), ok, failed_count, wall_ms and warnings (prefixed
    with label[index])."""
    check_range('parallel', parallel, 1, MAX_PARALLEL)
    if not items:
        raise ProbeError('input', '%s is empty: at least one is needed' % label)
    errors = []
    for index, (kind, params) in enumerate(items):
        try:
            KINDS[kind][0](params)
        except ProbeError as e:
            errors.append('%s[%d]: %s' % (label, index, e.message))
    if errors:
        raise ProbeError('input', '; '.join(errors))

    queues = {}
    for index, (kind, params) in enumerate(items):
        queues.setdefault(queue_of(kind, params, index), []).append(index)
    done = [None] * len(items)

    def work(indexes):
        for index in indexes:
            kind, params = items[index]
            result, failure = run_one(kind, params, check_mode)
            done[index] = (entry(index, kind, params, result, failure), result.get('warnings', []))

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=min(parallel, len(queues))) as pool:
        # Longest queues first, so that one long queue does not start last and finish alone.
        futures = [pool.submit(work, indexes) for indexes in sorted(queues.values(), key=len, reverse=True)]
        for future in futures:
            future.result()
    results = [result for result, _warnings in done]
    ok = sum(1 for result in results if result['ok'])
    return {
        'results': results,
        'ok': ok,
        'failed_count': len(results) - ok,
        'wall_ms': ms_since(start),
        'warnings': ['%s[%d]: %s' % (label, index, warning)
                     for index, (_result, warnings) in enumerate(done) for warning in warnings],
    }


def judge(batch, fail_on, label, describe):
    """Fail a batch as fail_on says: ProbeError at the stage of the first failed check, naming
    the failed ones (describe(entry) says which), with the whole result."""
    if fail_on not in FAIL_ON:
        raise ProbeError('input', 'fail_on must be one of %s, got %s' % (', '.join(FAIL_ON), fail_on))
    failed = [entry for entry in batch['results'] if not entry['ok']]
    if failed and (fail_on == 'any' or (fail_on == 'all' and not batch['ok'])):
        listed = '; '.join('%s at stage %s: %s' % (describe(entry), entry['stage'], entry['msg'])
                           for entry in failed[:_LISTED_FAILURES])
        if len(failed) > _LISTED_FAILURES:
            listed += '; and %d more (see results)' % (len(failed) - _LISTED_FAILURES)
        raise ProbeError(failed[0]['stage'], '%d of %d %s failed (fail_on=%s): %s'
                         % (len(failed), len(batch['results']), label, fail_on, listed), batch)
    return batch


def _probe_entry(index, _kind, params, result, failure):
    entry = {'index': index, 'mailbox': mailbox_label(mailbox_of(params)), 'ok': failure is None,
             'status': result.get('status', 'down')}
    for key, default in _BATCH_FIELDS:
        entry[key] = result.get(key, default)
    if failure is not None:
        entry['stage'], entry['msg'] = failure
    if 'transcript' in result:
        entry['transcript'] = result['transcript']
    return entry


def mail_roundtrip_batch(params, probes, check_mode=False):
    """The mail_roundtrip_batch module's core: many round trips; a failed batch (fail_on) raises
    ProbeError at the stage of its first failed probe, with the whole result."""
    parallel = DEFAULT_PARALLEL if params.get('parallel') is None else params['parallel']
    batch = run_many([('roundtrip', probe) for probe in probes], parallel, check_mode, 'probes', _probe_entry)
    batch['changed'] = any(entry['stale_deleted'] for entry in batch['results'])
    batch['round_trips_per_minute'] = round(batch['ok'] * 60000.0 / batch['wall_ms'], 1) if batch['wall_ms'] else 0.0
    return judge(batch, params.get('fail_on') or 'any', 'probes',
                 lambda entry: 'probes[%d] (%s)' % (entry['index'], entry['mailbox']))


def mail_checks(params, checks, check_mode=False):
    """The mail_checks module's core: checks is a list of (name, kind, options); each result is
    the check's own result with index, name, type, ok and, on failure, stage and msg."""
    def entry(index, kind, _params, result, failure):
        one = dict(result, index=index, name=checks[index][0], type=kind, ok=failure is None,
                   status=result.get('status', 'down'))
        one.pop('warnings', None)
        if failure is not None:
            one['stage'], one['msg'] = failure
        return one

    parallel = DEFAULT_PARALLEL if params.get('parallel') is None else params['parallel']
    batch = run_many([(kind, options) for _name, kind, options in checks], parallel, check_mode, 'checks', entry)
    batch['changed'] = any(entry.get('changed') for entry in batch['results'])
    return judge(batch, params.get('fail_on') or 'any', 'checks',
                 lambda entry: 'checks[%d] %s (%s)' % (entry['index'], entry['name'], entry['type']))
