"""bench/results/summary.md and bench/results/bench.png from the JSON results of the last run of
each part (a part that was not run this time keeps its earlier file; its date is shown)."""

from __future__ import annotations

import json
import textwrap

from bench.common import results_dir

PARTS = ('overhead', 'lag', 'throughput', 'bigmailbox', 'imapload', 'gate', 'bounce')
# Arm names of lag.json before the IMAP arms (POP3 only).
_OLD_LAG_ARMS = {'ours': 'pop3 adaptive', 'fixed 1 s': 'pop3 fixed 1 s'}
_OLD_LAG_GOALS = {'pop3 adaptive': {'median_ms': 50, 'p95_ms': 200}}


def load() -> dict:
    out = {}
    for part in PARTS:
        path = results_dir() / ('%s.json' % part)
        if path.exists():
            out[part] = json.loads(path.read_text())
    _upgrade(out)
    return out


def _upgrade(res: dict) -> None:
    """Results written before the IMAP parts, in today's shape (so that a part not run again
    still shows)."""
    ov = res.get('overhead')
    for e in (ov or {}).get('endpoints', []):
        if 'theirs_capa_ms' in e:
            e['theirs_matched_ms'] = e.pop('theirs_capa_ms')
            e['ratio_vs_matched'] = e.pop('ratio_vs_capa_matched', None)
            e['matched'] = '+ CAPA'
            e['samples']['theirs_matched'] = e['samples'].pop('theirs_capa', [])
    lg = res.get('lag')
    if lg and 'goals' not in lg:
        lg['goals'] = _OLD_LAG_GOALS
        lg['arms'] = {_OLD_LAG_ARMS.get(a, a): e for a, e in lg['arms'].items()}
        for e in lg['arms'].values():
            e['protocol'] = 'pop3'
            e['finding_visit_ms'] = e.pop('finding_session_ms', {})
            e['visits'] = e.pop('pop3_sessions', {})
        for r in lg['rows']:
            r['arm'] = _OLD_LAG_ARMS.get(r['arm'], r['arm'])
    bm = res.get('bigmailbox')
    if bm and 'trip_time_ms' in bm['figures']:
        bm['figures'] = {'pop3': bm['figures']}
        for r in bm['rows']:
            r.setdefault('protocol', 'pop3')


def _f(x, nd=1):
    if x is None:
        return '-'
    if isinstance(x, (int,)) or (isinstance(x, float) and x >= 100):
        return '{:,.0f}'.format(x)
    return ('{:.%df}' % nd).format(x)


def _n(x):
    """A count or a median of counts: whole when it is whole."""
    if x is None:
        return '-'
    return '{:,}'.format(int(x)) if float(x).is_integer() else '{:,.1f}'.format(x)


def _met(ok: bool) -> str:
    return 'met' if ok else '**missed**'


def headline(res: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, goal, met) rows: the README table."""
    rows = []
    ov = res.get('overhead')
    if ov:
        for e in ov['endpoints']:
            r = e['ratio_of_medians']
            value = '%s / %s ms = %.2f' % (_f(e['ours_ms']['median'], 2), _f(e['theirs_ms']['median'], 2), r)
            rows.append(('Response time, %s: ours / monitoring plugin (median)' % e['name'], value,
                         '<= 1.10', _met(r <= 1.10)))
        w = ov['module_wall_ms']
        rows.append(('One smtp_check run, whole process (median)',
                     'ansible-playbook %s ms; module run directly %s ms; check_smtp %s ms' % (
                         _f(w['ansible-playbook (1 task, localhost)']['median']),
                         _f(w['module file run directly']['median']), _f(w['check_smtp -S']['median'])),
                     '-', '-'))
    lg = res.get('lag')
    if lg:
        for arm, e in lg['arms'].items():
            a = e['lag_ms']
            if not a.get('n'):
                continue
            goal = lg['goals'].get(arm)
            rows.append(('Arrival-detection lag, %s (median / p95 of %d)' % (arm, a['n']),
                         '%s / %s ms' % (_f(a['median']), _f(a['p95'])),
                         '<= %s / <= %s ms' % (goal['median_ms'], goal['p95_ms']) if goal else '-',
                         _met(a['median'] <= goal['median_ms'] and a['p95'] <= goal['p95_ms']) if goal else '-'))
    tp = res.get('throughput')
    if tp:
        for w in tp['ways']:
            clean = w['failed'] == 0 and w['after']['leftover'] == 0 and w['after']['queued'] == 0
            rows.append(('Round trips per minute, %s (15 mailboxes)' % w['label'],
                         '%s/min; %s ms CPU per trip; lost %d, left %d' % (
                             _f(w['per_minute']), _f(w['cpu_ms_per_trip']), w['failed'], w['after']['leftover']),
                         '>= 1,000/min, 0 lost, 0 left', _met(w['per_minute'] >= 1000 and clean)))
    bm = res.get('bigmailbox')
    if bm:
        for protocol, figures in bm['figures'].items():
            t = figures['trip_time_ms']
            goal = bm.get('goal_ratio', {'pop3': 2.0})[protocol]
            rows.append(('Time to find the mail over {}, {:,}-message mailbox vs empty (median trip time)'.format(
                protocol.upper(), bm['messages']),
                '%s vs %s ms = %.2fx' % (_f(t['full']['median']), _f(t['empty']['median']), t['ratio']),
                '<= %gx' % goal, _met(t['ratio'] <= goal)))
    ld = res.get('imapload')
    if ld:
        for arm, e in ld['arms'].items():
            if not e['commands'].get('n'):
                continue
            rows.append(('IMAP commands / connections per round trip, delivery after %g s, %s (median)'
                         % (ld['delivery_delay_s'], arm),
                         '%s commands (%s while waiting) / %s; seen %s ms after landing' % (
                             _n(e['commands']['median']), _n(e['commands_while_waiting']['median']),
                             _n(e['connections']['median']), _f(e['lag_ms'].get('median'))), '-', '-'))
    gt = res.get('gate')
    if gt:
        goal = gt['goal_ratio_24_over_3']
        for speed in ('fast', 'slow'):
            three, top = _gate_wall(gt, 'parallel', speed, 3), _gate_wall(gt, 'parallel', speed, 24)
            if three and top:
                rows.append(('Health gate wall time, 24 vs 3 %s checks, the role (one mail_checks task; median of %d)'
                             % (_GATE_SPEED[speed], gt['reps']),
                             '%.2f vs %.2f s = %.2fx; the former loop: %s' % (
                                 top, three, top / three, _gate_loop_note(gt, speed)),
                             '<= %gx' % goal, _met(top / three <= goal and not gt['failed'])))
    bo = res.get('bounce')
    if bo:
        waiting = [e for e in bo['arms'].values() if not e['watch_bounces']]
        w = waiting[0] if waiting else None
        note = ('; waiting out max_trip_time %d s (watch_bounces=false): %s ms, %d/%d at stage timeout' % (
            w['max_trip_time_s'], _f(w['to_verdict_ms'].get('median')), w['stages'].get('timeout', 0), w['trips'])
            if w and w['trips'] else '')
        for arm, e in bo['arms'].items():
            a = e['verdict_after_dsn_ms']
            if not e['watch_bounces'] or not a.get('n'):
                continue
            rows.append(('Verdict after the bounce (DSN) landed, %s (median / max of %d; stage bounced in %d/%d)'
                         % (arm, a['n'], e['stages'].get('bounced', 0), e['trips']),
                         '%s / %s ms; accepted -> verdict %s ms%s' % (
                             _f(a['median']), _f(a['max']), _f(e['to_verdict_ms'].get('median')), note),
                         '<= {:,} ms (every trip), vs max_trip_time'.format(bo['goal_ms']), _met(e['goal_met'])))
    return rows


_GATE_SPEED = {'fast': 'fast', 'slow': '~1 s'}


def _gate_wall(gt: dict, arm: str, speed: str, n: int):
    for e in gt['cells']:
        if (e['speed'], e['checks']) == (speed, n) and arm in e:
            return e[arm]['wall_s']['median']
    return None


def _gate_loop_note(gt: dict, speed: str) -> str:
    three, top = _gate_wall(gt, 'loop', speed, 3), _gate_wall(gt, 'loop', speed, 24)
    if not (three and top):
        return '-'
    return '%.2f vs %.2f s = %.2fx' % (top, three, top / three)


def markdown(res: dict) -> str:
    lines = ['# mailops.health benchmarks', '']
    envs = [(p, res[p].get('env', {})) for p in PARTS if p in res]
    if envs:
        e = envs[0][1]
        lines += ['Machine: %s CPUs, kernel %s, Python %s, ansible-core %s, commit %s. The Docker lab (Postfix + '
                  'Dovecot) runs on the same machine; every figure is controller and mail system together.'
                  % (e.get('cpus'), e.get('kernel'), e.get('python'), e.get('ansible_core'), e.get('git')), '']
        lines += ['| part | run at (UTC) | load average at start |', '| --- | --- | --- |']
        for p, e in envs:
            lines.append('| %s | %s | %s |' % (p, e.get('when'), ', '.join('%.2f' % x for x in e.get('loadavg_at_start', []))))
        lines.append('')
    lines += ['## Headline', '', '| figure | value | goal | |', '| --- | --- | --- | --- |']
    lines += ['| %s | %s | %s | %s |' % r for r in headline(res)]
    lines += ['', 'Plot: `bench/results/bench.png`.', '']

    ov = res.get('overhead')
    if ov:
        lines += ['## 1. Probe overhead', '',
                  '%d interleaved runs per endpoint, a fresh process per check on both sides (ours: the module file, '
                  'arguments on stdin; theirs: %s). Reported response time in ms (each tool times itself; see '
                  'bench/README.md for what each includes).' % (ov['endpoints'][0]['runs'], ov['plugins_version']), '',
                  '| endpoint | ours median | theirs median | ratio of medians | median of paired ratios | ours p95 | '
                  'theirs p95 | theirs with our dialogue (POP3: + CAPA; IMAP: + LOGOUT answer) median | ours / that |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for e in ov['endpoints']:
            lines.append('| %s | %s | %s | %.2f | %.2f | %s | %s | %s | %s |' % (
                e['name'], _f(e['ours_ms']['median'], 2), _f(e['theirs_ms']['median'], 2), e['ratio_of_medians'],
                e['median_pair_ratio'], _f(e['ours_ms']['p95'], 2), _f(e['theirs_ms']['p95'], 2),
                _f(e.get('theirs_matched_ms', {}).get('median'), 2), _f(e.get('ratio_vs_matched'), 2)))
        lines += ['', 'Whole-process wall time of one smtp_check (587 STARTTLS), %d interleaved runs:' %
                  ov['module_wall_ms']['module file run directly']['n'], '',
                  '| how | median ms | p95 ms |', '| --- | --- | --- |']
        for k, v in ov['module_wall_ms'].items():
            lines.append('| %s | %s | %s |' % (k, _f(v['median']), _f(v['p95'])))
        lines.append('')

    lg = res.get('lag')
    if lg:
        lines += ['## 2. Arrival-detection lag', '',
                  '%d round trips per arm, interleaved, account %s, each arm alternating its two paths (%s). Lag = the '
                  'probe parsed its token minus the kernel ctime of the mail file in Maildir/new (inotify watcher). '
                  'Precision: watcher read - ctime, median %s ms, p95 %s ms. A check is a POP3 session, or on IMAP '
                  'NOOP + UID SEARCH on the open connection.' % (
                      lg['trips_per_arm'], lg['account'], ', '.join(lg['paths']),
                      _f(lg['precision']['ctime_to_watcher_read_ms']['median'], 3),
                      _f(lg['precision']['ctime_to_watcher_read_ms']['p95'], 3)), '',
                  '| arm | lag median | lag p95 | lag max | goal | delivery (accepted -> landed) median | waiting for the '
                  'next check median | the finding check median | looks per trip (first one included) median | found after a push | '
                  'IMAP commands per trip median |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for arm, e in lg['arms'].items():
            goal = lg['goals'].get(arm)
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |' % (
                arm, _f(e['lag_ms'].get('median')), _f(e['lag_ms'].get('p95')), _f(e['lag_ms'].get('max')),
                ('<= %s / %s: %s' % (goal['median_ms'], goal['p95_ms'], _met(
                    e['lag_ms'].get('n', 0) > 0 and e['lag_ms']['median'] <= goal['median_ms']
                    and e['lag_ms']['p95'] <= goal['p95_ms'])) if goal else '-'), _f(e['delivery_ms'].get('median')), _f(e['wait_ms'].get('median')),
                _f(e['finding_visit_ms'].get('median')), _n(e['visits'].get('median')),
                '%s/%s' % (e.get('seen_by_push', 0), e['lag_ms'].get('n', 0)) if e.get('protocol') == 'imap' else '-',
                _n(e.get('imap_commands', {}).get('median'))))
        lines.append('')

    tp = res.get('throughput')
    if tp:
        lines += ['## 3. Round trips per minute', '',
                  '15 mailboxes (%s..%s), path submission 587 STARTTLS + AUTH -> POP3S 995 APOP. CPU is the controller '
                  'process (tree); lab CPU is both containers\' cgroups over the same interval (includes whatever '
                  'else the lab served meanwhile).' % (tp['accounts'][0], tp['accounts'][-1]), '',
                  '| way | round trips | per minute | lost | left in mailboxes | controller CPU ms/trip | lab CPU '
                  'ms/trip | peak memory | trip time median / p95 ms |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for w in tp['ways']:
            if 'ru_maxrss_mib' in w:
                mem = 'ru_maxrss %s MiB' % _f(w['ru_maxrss_mib'])
            else:
                mem = 'largest process %s MiB; tree %s MiB in %d processes' % (
                    _f(w['max_single_rss_mib']), _f(w['peak_tree_rss_mib']), w['peak_tree_procs'])
            lines.append('| %s | %d | %s | %d | %d | %s | %s | %s | %s / %s |' % (
                w['label'], w['ok'] + w['failed'], _f(w['per_minute']), w['failed'], w['after']['leftover'],
                _f(w['cpu_ms_per_trip']), _f(w.get('lab_cpu_ms_per_trip')), mem,
                _f(w['trip_time_ms'].get('median')), _f(w['trip_time_ms'].get('p95'))))
        lines.append('')

    bm = res.get('bigmailbox')
    if bm:
        f = bm['fill']
        lines += ['## 4. Large mailbox', '',
                  '%s messages written into `%s` in %s s (%s MiB); the first POP3 login (Dovecot indexes) took %s s. '
                  '%d round trips each on the full and an empty mailbox (%s), over %s, interleaved. Afterwards: %s '
                  'messages, %s Maildir files.' % (
                      '{:,}'.format(f['messages']), bm['full_account'], f['write_s'], f['tar_mib'],
                      f['first_login_index_s'], bm['trips_each'], bm['empty_account'],
                      ' and '.join(p.upper() for p in bm['figures']),
                      bm['cleanup']['messages_after'], bm['cleanup']['maildir_files_after']), '',
                  '| protocol | figure (median, ms) | {:,} messages | empty | ratio |'.format(bm['messages']),
                  '| --- | --- | --- | --- | --- |']
        names = {'trip_time_ms': 'trip time (accepted -> found)', 'roundtrip_ms': 'whole round trip',
                 'first_session_ms': 'first visit (before sending; IMAP: login, LIST, SELECT)',
                 'finding_session_ms': 'the visit that found the mail', 'attempts': 'checks after sending'}
        for protocol, figures in bm['figures'].items():
            for k, v in figures.items():
                lines.append('| %s | %s | %s | %s | %s |' % (
                    protocol.upper(), names.get(k, k), _f(v['full'].get('median')), _f(v['empty'].get('median')),
                    _f(v['ratio'], 2)))
        lines.append('')

    ld = res.get('imapload')
    if ld:
        lines += ['## 5. IMAP server load', '',
                  '%d rounds; in each, one round trip per arm at the same time (own account each), path %s, '
                  'connection_interval %g s; the mail is delivered %g s after the probe starts watching (its SMTP '
                  'session sends nothing; the same message goes out in a second session then). Medians per round '
                  'trip; while waiting = after the first look, up to the check that found the mail. Afterwards: %s '
                  'mails left, %s queued.' % (
                      ld['rounds'], ld['path'], ld['connection_interval_s'], ld['delivery_delay_s'],
                      sum(a['left'] for a in ld['after'].values()), ld['after_queued']), '',
                  '| arm | IMAP commands | while waiting | connections | IDLE | checks after sending | seen after '
                  'landing, ms (median / max) | found after a push | failed | commands by verb (median) |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for arm, e in ld['arms'].items():
            lines.append('| %s | %s | %s | %s | %s | %s | %s / %s | %s/%s | %s | %s |' % (
                arm, _n(e['commands'].get('median')), _n(e['commands_while_waiting'].get('median')),
                _n(e['connections'].get('median')), _n(e['idle'].get('median')),
                _n(e['checks_after_sending'].get('median')), _f(e['lag_ms'].get('median')),
                _f(e['lag_ms'].get('max')), e['seen_by_push'], e['commands'].get('n', 0), e['failed'],
                ', '.join('%s %s' % (v, _n(n)) for v, n in e['by_command_median'].items())))
        lines.append('')

    gt = res.get('gate')
    if gt:
        lines += ['## 6. Health-gate wall time', '',
                  'The health-gate role as shipped (`%s`: one `mailops.health.mail_checks` task, `mail_health_gate_parallel` '
                  '%d) against its former per-type loop (`%s`), each the whole `ansible-playbook` process on localhost, '
                  'against the embedded lab (%s). Checks: smtp, pop3, imap in turn, each with a login of its own '
                  'account, lab CA verified; fast: STARTTLS on the plain listeners; ~1 s: implicit TLS on listeners '
                  'with the fault `%s`. %d runs per cell, cells interleaved in a shuffled order per round; median '
                  'wall time (s). Check tasks: the time Ansible spent in the tasks that run checks (the rest is '
                  'ansible-playbook start, templating and the other tasks). Failed checks in all runs: %d.' % (
                      gt['arms']['parallel'], gt['role_parallel'], gt['arms']['loop'], gt['lab'], gt['slow_fault'],
                      gt['reps'], gt['failed']), '',
                  '| checks | loop: wall | loop: check tasks | loop: CPU | role (parallel): wall | role: check tasks | '
                  'role: CPU | loop / role |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- |']
        for e in gt['cells']:
            cols = []
            for arm in ('loop', 'parallel'):
                a = e.get(arm)
                cols += [_f(a['wall_s']['median'], 2), _f(a['check_tasks_s']['median'], 2), _f(a['cpu_s']['median'], 2)] \
                    if a else ['not run'] + ['-'] * 2
            lines.append('| %d %s | %s | %s |' % (e['checks'], _GATE_SPEED[e['speed']], ' | '.join(cols),
                                                  _f(e.get('loop_over_parallel'), 2)))
        lines += ['', '| checks | role: N / 3 checks | loop: N / 3 checks |', '| --- | --- | --- |']
        for speed, arms in gt['ratios'].items():
            for key in ('24/3', '96/3'):
                if key in arms.get('parallel', {}) or key in arms.get('loop', {}):
                    lines.append('| %s %s | %s | %s |' % (
                        key.split('/', maxsplit=1)[0], _GATE_SPEED[speed], _f(arms.get('parallel', {}).get(key), 2),
                        _f(arms.get('loop', {}).get(key), 2)))
        lines += ['', 'Goal: 24 checks within %gx the wall time of 3 (the role).' % gt['goal_ratio_24_over_3'], '']

    bo = res.get('bounce')
    if bo:
        rows = bo['rows']
        after = bo['after']
        lines += ['## 7. Bounce fast-fail', '',
                  '%d rounds, arms interleaved in a shuffled order per round (the waiting arm in %d of them: each costs '
                  'max_trip_time), account %s, mail_to `%s`: the outside MTA accepts the mail and bounces it with a '
                  '5.1.1 DSN to the envelope sender, whose INBOX the probe reads. Accepted = the probe\'s SMTP session '
                  'done; verdict = mail_roundtrip raised its failure (connection closed); DSN landed = the ctime of '
                  'the DSN file in Maildir/new (inotify watcher; token read from the DSN body in %d of %d trips; '
                  'watcher read - ctime median %s ms); core found = the core\'s `bounce.arrived_ms`. Medians in ms '
                  'unless said. Afterwards: %s Maildir files, %s POP3 messages, %s queued.' % (
                      bo['rounds'], bo['waiting_rounds'], bo['account'], bo['mail_to'],
                      sum(1 for r in rows if r.get('token_in_body')), len(rows),
                      _f(bo['precision']['ctime_to_watcher_read_ms'].get('median'), 3), after['maildir_files'],
                      after['pop3_messages'], after['queued']), '',
                  '| arm | path | watch_bounces, max_trip_time | trips | stages | accepted -> verdict median / max | '
                  'accepted -> DSN landed | verdict after the DSN landed median / max | goal | DSN landed -> core found '
                  '| of which waiting for the next check | and the check that found it | core found -> verdict | '
                  'checks after sending |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for arm, e in bo['arms'].items():
            v, a = e['to_verdict_ms'], e['verdict_after_dsn_ms']
            lines.append('| %s | %s | %s, %d s | %d | %s | %s / %s | %s | %s / %s | %s | %s | %s | %s | %s | %s |' % (
                arm, e['path'], 'true' if e['watch_bounces'] else 'false', e['max_trip_time_s'], e['trips'],
                ', '.join('%s %d' % kv for kv in sorted(e['stages'].items())), _f(v.get('median')), _f(v.get('max')),
                _f(e['dsn_landed_ms'].get('median')), _f(a.get('median')), _f(a.get('max')),
                ('<= {:,}: {}'.format(bo['goal_ms'], _met(e['goal_met'])) if 'goal_met' in e
                 else 'stage timeout after max_trip_time'),
                _f(e['found_after_landing_ms'].get('median')), _f(e.get('wait_ms', {}).get('median')),
                _f(e.get('finding_visit_ms', {}).get('median')), _f(e['closing_ms'].get('median')),
                _n(e['attempts'].get('median'))))
        if bo.get('waiting_over_fast'):
            lines += ['', 'Waiting out max_trip_time / fast-fail (median time to verdict): %s.' % ', '.join(
                '%s %.0fx' % kv for kv in bo['waiting_over_fast'].items())]
        lines.append('')
    return '\n'.join(lines)


def plot(res: dict, path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 3, figsize=(21, 15))
    ax = axes[0][0]
    ov = res.get('overhead')
    if ov:
        names = [textwrap.fill(e['name'], 12) for e in ov['endpoints']]
        x = range(len(names))
        for off, key, label, color in ((-0.2, 'ours_ms', 'mailops.health (module)', '#1f77b4'),
                                       (0.2, 'theirs_ms', 'monitoring-plugins', '#ff7f0e')):
            med = [e[key]['median'] for e in ov['endpoints']]
            lo = [e[key]['median'] - e[key]['p05'] for e in ov['endpoints']]
            hi = [e[key]['p95'] - e[key]['median'] for e in ov['endpoints']]
            ax.bar([i + off for i in x], med, 0.4, yerr=[lo, hi], capsize=3, label=label, color=color)
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, fontsize=7)
        ax.set_ylabel('reported response time, ms (median, p5-p95)')
        ax.set_title('1. Probe overhead (%d interleaved runs each)' % ov['endpoints'][0]['runs'])
        ax.legend(fontsize=8)
    ax = axes[0][1]
    lg = res.get('lag')
    if lg:
        arms = [a for a in lg['arms'] if any(r.get('lag_ms') is not None for r in lg['rows'] if r['arm'] == a)]
        data = [[r['lag_ms'] for r in lg['rows'] if r['arm'] == a and r.get('lag_ms') is not None] for a in arms]
        ax.boxplot(data, whis=(5, 95), showfliers=True)
        ax.set_xticks(range(1, len(arms) + 1))
        ax.set_xticklabels([textwrap.fill(a, 10) for a in arms], fontsize=8)
        ax.set_yscale('log')
        colors = iter(('#2ca02c', '#9467bd', '#8c564b'))
        for arm, goal in lg['goals'].items():
            color = next(colors, 'gray')
            ax.axhline(goal['median_ms'], color=color, linestyle='--', linewidth=1,
                       label='%s goal: median %s ms' % (arm, goal['median_ms']))
            ax.axhline(goal['p95_ms'], color=color, linestyle=':', linewidth=1,
                       label='%s goal: p95 %s ms' % (arm, goal['p95_ms']))
        ax.set_ylabel('seen - landed in Maildir, ms (log)')
        ax.set_title('2. Arrival-detection lag (%d trips per arm)' % lg['trips_per_arm'])
        ax.legend(fontsize=7)
    ax = axes[0][2]
    tp = res.get('throughput')
    if tp:
        labels = [w['label'] for w in tp['ways']]
        vals = [w['per_minute'] for w in tp['ways']]
        labels = [textwrap.fill(x, 18) for x in labels]
        bars = ax.barh(labels, vals, color=['#1f77b4', '#ff7f0e', '#2ca02c'][:len(vals)])
        for b, w in zip(bars, tp['ways']):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, ' %.0f/min, %.0f ms CPU/trip'
                    % (w['per_minute'], w['cpu_ms_per_trip']), va='center', fontsize=8)
        ax.axvline(1000, color='green', linestyle='--', linewidth=1, label='goal 1,000/min')
        ax.set_xlabel('round trips per minute (15 mailboxes, 2-core machine incl. the lab)')
        ax.set_xlim(0, max(vals + [1000]) * 1.6)
        ax.set_title('3. Throughput')
        ax.legend(fontsize=8, loc='lower right')
    ax = axes[1][0]
    bm = res.get('bigmailbox')
    if bm:
        data, labels, ratios = [], [], []
        for protocol, figures in bm['figures'].items():
            ratios.append('%s %.2fx' % (protocol.upper(), figures['trip_time_ms']['ratio']))
            for box in ('empty', 'full'):
                data.append([r['trip_time_ms'] for r in bm['rows']
                             if r['mailbox'] == box and r.get('protocol', 'pop3') == protocol])
                size = 'empty' if box == 'empty' else '{:,} msgs'.format(bm['messages'])
                labels.append('%s\n%s' % (protocol.upper(), size))
        ax.boxplot(data, whis=(5, 95))
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel('trip time (accepted -> found), ms')
        ax.set_title('4. Large mailbox (%d trips each; ratio %s)' % (bm['trips_each'], ', '.join(ratios)))
    ax = axes[1][1]
    ld = res.get('imapload')
    if ld:
        arms = list(ld['arms'])
        x = range(len(arms))
        waiting = [ld['arms'][a]['commands_while_waiting'].get('median') or 0 for a in arms]
        total = [ld['arms'][a]['commands'].get('median') or 0 for a in arms]
        ax.bar(list(x), [t - w for t, w in zip(total, waiting)], 0.6, label='log in, first look, the finding check, '
               'log out', color='#9edae5')
        ax.bar(list(x), waiting, 0.6, bottom=[t - w for t, w in zip(total, waiting)], label='while waiting',
               color='#1f77b4')
        for i, a in enumerate(arms):
            e = ld['arms'][a]
            ax.text(i, total[i], '%s commands, %s conn.\nseen %s ms after landing' % (
                _n(total[i]), _n(e['connections'].get('median')), _f(e['lag_ms'].get('median'))),
                ha='center', va='bottom', fontsize=8)
        ax.set_xticks(list(x))
        ax.set_xticklabels([textwrap.fill(a, 16) for a in arms], fontsize=8)
        ax.set_ylim(0, max(total + [1]) * 1.3)
        ax.set_ylabel('IMAP commands per round trip (median)')
        ax.set_title('5. IMAP server load, delivery after %g s (%d rounds)' % (ld['delivery_delay_s'], ld['rounds']))
        ax.legend(fontsize=8, loc='upper left')
    else:
        ax.axis('off')
    ax = axes[1][2]
    gt = res.get('gate')
    if gt:
        styles = {('loop', 'fast'): ('#ff7f0e', '-'), ('parallel', 'fast'): ('#1f77b4', '-'),
                  ('loop', 'slow'): ('#ff7f0e', '--'), ('parallel', 'slow'): ('#1f77b4', '--')}
        names = {'loop': 'former loop', 'parallel': 'role (mail_checks, parallel %d)' % gt['role_parallel']}
        for (arm, speed), (color, style) in styles.items():
            pts = [(e['checks'], e[arm]['wall_s']) for e in gt['cells'] if e['speed'] == speed and arm in e]
            if not pts:
                continue
            xs = [n for n, _w in pts]
            ax.errorbar(xs, [w['median'] for _n, w in pts],
                        yerr=[[w['median'] - w['min'] for _n, w in pts], [w['max'] - w['median'] for _n, w in pts]],
                        color=color, linestyle=style, marker='o', capsize=3,
                        label='%s, %s checks' % (names[arm], _GATE_SPEED[speed]))
            for n, w in pts:
                ax.annotate('%.1f' % w['median'], (n, w['median']), textcoords='offset points', xytext=(4, 4),
                            fontsize=7, color=color)
        from matplotlib.ticker import NullFormatter
        ax.set_xscale('log')
        ax.set_yscale('log')
        sizes = sorted({e['checks'] for e in gt['cells']})
        ax.set_xticks(sizes)
        ax.set_xticklabels([str(n) for n in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        walls = [e[arm]['wall_s'][k] for e in gt['cells'] for arm in ('loop', 'parallel') if arm in e
                 for k in ('min', 'max')]
        ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500) if min(walls) / 1.5 <= t <= max(walls) * 1.5]
        ax.set_yticks(ticks)
        ax.set_yticklabels([str(t) for t in ticks])
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel('checks in the gate')
        ax.set_ylabel('ansible-playbook wall time, s (median, min-max; log)')
        ax.set_title('6. Health gate, embedded lab (%d runs; goal: 24 checks <= %gx 3)'
                     % (gt['reps'], gt['goal_ratio_24_over_3']))
        ax.legend(fontsize=7, loc='upper left')
    else:
        ax.axis('off')
    _plot_bounce(axes[2][0], res.get('bounce'))
    axes[2][1].axis('off')
    axes[2][2].axis('off')
    fig.suptitle('mailops.health benchmarks against the Docker lab (Postfix + Dovecot; part 6: the embedded lab)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_bounce(ax, bo) -> None:
    if not bo:
        ax.axis('off')
        return
    import random
    arms = [a for a, e in bo['arms'].items() if e['verdict_after_dsn_ms'].get('n')]
    data = [[r['verdict_after_dsn_ms'] for r in bo['rows'] if r['arm'] == a and r.get('ok')
             and r.get('verdict_after_dsn_ms') is not None] for a in arms]
    ax.boxplot(data, whis=(0, 100), showfliers=False)
    jitter = random.Random(7)
    for i, (arm, values) in enumerate(zip(arms, data), 1):
        e = bo['arms'][arm]
        ax.scatter([i + jitter.uniform(-0.12, 0.12) for _v in values], values, s=10, alpha=0.6,
                   color='#1f77b4' if e['watch_bounces'] else '#ff7f0e', zorder=3)
        ax.annotate('median %s ms\n(accepted -> verdict %s ms;\nDSN landed after %s ms)' % (
            _f(e['verdict_after_dsn_ms']['median']), _f(e['to_verdict_ms'].get('median')),
            _f(e['dsn_landed_ms'].get('median'))), (i, max(values)), textcoords='offset points', xytext=(0, 8),
            ha='center', fontsize=7)
    ax.axhline(bo['goal_ms'], color='green', linestyle='--', linewidth=1,
               label='goal: verdict <= {:,} ms after the DSN landed'.format(bo['goal_ms']))
    ax.set_yscale('log')
    low = min(min(v) for v in data if v) if any(data) else 1
    ax.set_ylim(max(0.5, low / 2), max(max(v) for v in data if v) * 4 if any(data) else 10)
    ax.set_xticks(range(1, len(arms) + 1))
    labels = ['%s\nmax_trip_time %d s' % (textwrap.fill(a, 22, break_long_words=False), bo['arms'][a]['max_trip_time_s'])
              for a in arms]
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylabel('verdict - DSN landed in Maildir, ms (log)')
    ax.set_title('7. Bounce fast-fail (%d rounds; waiting arm %d)' % (bo['rounds'], bo['waiting_rounds']))
    ax.legend(fontsize=8, loc='lower right')


def write() -> tuple:
    res = load()
    md = results_dir() / 'summary.md'
    md.write_text(markdown(res) + '\n')
    png = results_dir() / 'bench.png'
    if res:
        plot(res, png)
    return md, png
