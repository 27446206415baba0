# -*- coding: utf-8 -*-
# Copyright: mailops.health developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PROTOTYPE (benchmark only, not part of the collection): many round trips in one module run.

The probes run in threads inside one module process, so Ansible's per-task cost (fork, module
transfer, a Python start) is paid once per batch instead of once per round trip. Probes on the
same POP3 mailbox run one after another (they would only wait for each other's mailbox lock);
up to `parallel` mailboxes are worked on at once.

Options: probes (list of dicts with mail_roundtrip's options; their passwords are masked), defaults (dict merged
under every probe), parallel (int, default 10), fail_on (any|all|none, default any).
Returns: results (per probe: ok, trip_time_ms, total_ms, attempts, or stage/msg; no secrets),
ok, failed, wall_ms.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import threading
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mailops.health.plugins.module_utils._probe import ProbeError
from ansible_collections.mailops.health.plugins.module_utils._roundtrip import mail_roundtrip

# mail_roundtrip's own defaults (its argument_spec), so a probe dict may leave them out.
DEFAULTS = dict(smtp_port=None, smtp_tls_mode='starttls_if_available', smtp_auth='none', auth_mechanism='auto',
                helo=None, smtp_username=None, smtp_password=None, pop3_port=None, pop3_tls_mode='tls',
                pop3_auth='password', subject_prefix=None, connection_interval=5.0, max_trip_time=30,
                cleanup_stale=False, timeout=60, validate_certs=True, ca_path=None, allow_cleartext_auth=False,
                transcript=False, warning_ms=None, critical_ms=None)


def main():
    module = AnsibleModule(argument_spec=dict(
        probes=dict(type='list', elements='dict', required=True),
        defaults=dict(type='dict', default={}),
        parallel=dict(type='int', default=10),
        fail_on=dict(type='str', choices=['any', 'all', 'none'], default='any'),
    ), supports_check_mode=False)
    probes = [dict(DEFAULTS, **dict(module.params['defaults'], **p)) for p in module.params['probes']]
    # Only the passwords are secrets: masking whole probe dicts (no_log) would mask mailbox names too.
    for p in probes:
        for key in ('smtp_password', 'pop3_password'):
            if p.get(key):
                module.no_log_values.add(p[key])
    groups = {}
    for index, p in enumerate(probes):
        groups.setdefault((p['pop3_host'], p.get('pop3_port'), p['pop3_username']), []).append(index)
    queue = list(groups.values())
    lock = threading.Lock()
    results = [None] * len(probes)

    def worker():
        while True:
            with lock:
                if not queue:
                    return
                indexes = queue.pop(0)
            for i in indexes:
                try:
                    r = mail_roundtrip(dict(probes[i]))
                    results[i] = {'ok': True, 'mailbox': probes[i]['pop3_username'], 'trip_time_ms': r['trip_time_ms'],
                                  'total_ms': r['total_ms'], 'attempts': r['attempts'],
                                  'warnings': r.get('warnings', [])}
                except ProbeError as e:
                    results[i] = {'ok': False, 'mailbox': probes[i]['pop3_username'], 'stage': e.stage, 'msg': e.message}
                except Exception as e:  # a bug: still one failed probe, not a dead batch
                    results[i] = {'ok': False, 'mailbox': probes[i]['pop3_username'], 'stage': 'internal',
                                  'msg': '%s: %s' % (type(e).__name__, e)}

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _n in range(max(1, min(module.params['parallel'], len(queue))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = sum(1 for r in results if r['ok'])
    failed = len(results) - ok
    out = dict(changed=False, results=results, ok=ok, failed_count=failed,
               wall_ms=round((time.monotonic() - start) * 1000, 1))
    fail_on = module.params['fail_on']
    if (fail_on == 'any' and failed) or (fail_on == 'all' and results and not ok):
        module.fail_json(msg='%d of %d round trips failed' % (failed, len(results)), **out)
    module.exit_json(**out)


if __name__ == '__main__':
    main()
