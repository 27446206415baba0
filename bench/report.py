"""bench/results/summary.md and bench/results/bench.png from the JSON results of the last run of
each part (a part that was not run this time keeps its earlier file; its date is shown)."""

from __future__ import annotations

import json
import textwrap

from bench.common import results_dir

PARTS = ('overhead', 'lag', 'throughput', 'bigmailbox')


def load() -> dict:
    out = {}
    for part in PARTS:
        path = results_dir() / ('%s.json' % part)
        if path.exists():
            out[part] = json.loads(path.read_text())
    return out


def _f(x, nd=1):
    if x is None:
        return '-'
    if isinstance(x, (int,)) or (isinstance(x, float) and x >= 100):
        return '{:,.0f}'.format(x)
    return ('{:.%df}' % nd).format(x)


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
        a = lg['arms']['ours']['lag_ms']
        f = lg['arms']['fixed 1 s']['lag_ms']
        rows.append(('Arrival-detection lag, ours (median / p95)', '%s / %s ms' % (_f(a['median']), _f(a['p95'])),
                     '<= 50 / <= 200 ms', _met(a['median'] <= 50 and a['p95'] <= 200)))
        rows.append(('Arrival-detection lag, fixed 1 s polling (median / p95)',
                     '%s / %s ms' % (_f(f['median']), _f(f['p95'])), '-', '-'))
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
        t = bm['figures']['trip_time_ms']
        rows.append(('Time to find the mail, {:,}-message mailbox vs empty (median trip time)'.format(bm['messages']),
                     '%s vs %s ms = %.2fx' % (_f(t['full']['median']), _f(t['empty']['median']), t['ratio']),
                     '<= 2x', _met(t['ratio'] <= 2)))
    return rows


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
                  'theirs p95 | theirs + CAPA median | ours / theirs + CAPA |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
        for e in ov['endpoints']:
            lines.append('| %s | %s | %s | %.2f | %.2f | %s | %s | %s | %s |' % (
                e['name'], _f(e['ours_ms']['median'], 2), _f(e['theirs_ms']['median'], 2), e['ratio_of_medians'],
                e['median_pair_ratio'], _f(e['ours_ms']['p95'], 2), _f(e['theirs_ms']['p95'], 2),
                _f(e.get('theirs_capa_ms', {}).get('median'), 2), _f(e.get('ratio_vs_capa_matched'), 2)))
        lines += ['', 'Whole-process wall time of one smtp_check (587 STARTTLS), %d interleaved runs:' %
                  ov['module_wall_ms']['module file run directly']['n'], '',
                  '| how | median ms | p95 ms |', '| --- | --- | --- |']
        for k, v in ov['module_wall_ms'].items():
            lines.append('| %s | %s | %s |' % (k, _f(v['median']), _f(v['p95'])))
        lines.append('')

    lg = res.get('lag')
    if lg:
        lines += ['## 2. Arrival-detection lag', '',
                  '%d round trips per arm, interleaved, account %s, paths alternating (%s). Lag = the probe parsed '
                  'its token minus the kernel ctime of the mail file in Maildir/new (inotify watcher). Precision: '
                  'watcher read - ctime, median %s ms, p95 %s ms.' % (
                      lg['trips_per_arm'], lg['account'], ', '.join(lg['paths']),
                      _f(lg['precision']['ctime_to_watcher_read_ms']['median'], 3),
                      _f(lg['precision']['ctime_to_watcher_read_ms']['p95'], 3)), '',
                  '| arm | lag median | lag p95 | lag max | delivery (accepted -> landed) median | waiting for the '
                  'next check median | finding POP3 session median | POP3 sessions per trip median |',
                  '| --- | --- | --- | --- | --- | --- | --- | --- |']
        for arm, e in lg['arms'].items():
            lines.append('| %s | %s | %s | %s | %s | %s | %s | %s |' % (
                arm, _f(e['lag_ms']['median']), _f(e['lag_ms']['p95']), _f(e['lag_ms']['max']),
                _f(e['delivery_ms']['median']), _f(e['wait_ms']['median']), _f(e['finding_session_ms']['median']),
                _f(e['pop3_sessions']['median'], 0)))
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
                  '%d round trips each on the full and an empty mailbox (%s), interleaved. Afterwards: %s messages, '
                  '%s Maildir files.' % (
                      '{:,}'.format(f['messages']), bm['full_account'], f['write_s'], f['tar_mib'],
                      f['first_login_index_s'], bm['trips_each'], bm['empty_account'],
                      bm['cleanup']['messages_after'], bm['cleanup']['maildir_files_after']), '',
                  '| figure (median, ms) | {:,} messages | empty | ratio |'.format(bm['messages']), '| --- | --- | --- | --- |']
        names = {'trip_time_ms': 'trip time (accepted -> found)', 'roundtrip_ms': 'whole round trip',
                 'first_session_ms': 'first POP3 session (before sending)',
                 'finding_session_ms': 'POP3 session that found the mail', 'attempts': 'checks after sending'}
        for k, v in bm['figures'].items():
            lines.append('| %s | %s | %s | %s |' % (
                names.get(k, k), _f(v['full'].get('median')), _f(v['empty'].get('median')), _f(v['ratio'], 2)))
        lines.append('')
    return '\n'.join(lines)


def plot(res: dict, path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    ax = axes[0][0]
    ov = res.get('overhead')
    if ov:
        names = [textwrap.fill(e['name'], 14) for e in ov['endpoints']]
        x = range(len(names))
        for off, key, label, color in ((-0.2, 'ours_ms', 'mailops.health (module)', '#1f77b4'),
                                       (0.2, 'theirs_ms', 'monitoring-plugins', '#ff7f0e')):
            med = [e[key]['median'] for e in ov['endpoints']]
            lo = [e[key]['median'] - e[key]['p05'] for e in ov['endpoints']]
            hi = [e[key]['p95'] - e[key]['median'] for e in ov['endpoints']]
            ax.bar([i + off for i in x], med, 0.4, yerr=[lo, hi], capsize=3, label=label, color=color)
        ax.set_xticks(list(x))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel('reported response time, ms (median, p5-p95)')
        ax.set_title('1. Probe overhead (%d interleaved runs each)' % ov['endpoints'][0]['runs'])
        ax.legend(fontsize=8)
    ax = axes[0][1]
    lg = res.get('lag')
    if lg:
        arms = list(lg['arms'])
        data = [[r['lag_ms'] for r in lg['rows'] if r['arm'] == a and r.get('lag_ms') is not None] for a in arms]
        ax.boxplot(data, whis=(5, 95), showfliers=True)
        ax.set_xticks(range(1, len(arms) + 1))
        ax.set_xticklabels(arms)
        ax.set_yscale('log')
        ax.axhline(50, color='green', linestyle='--', linewidth=1, label='goal: median 50 ms')
        ax.axhline(200, color='red', linestyle=':', linewidth=1, label='goal: p95 200 ms')
        ax.set_ylabel('seen - landed in Maildir, ms (log)')
        ax.set_title('2. Arrival-detection lag (%d trips per arm)' % lg['trips_per_arm'])
        ax.legend(fontsize=8)
    ax = axes[1][0]
    tp = res.get('throughput')
    if tp:
        labels = [w['label'] for w in tp['ways']]
        vals = [w['per_minute'] for w in tp['ways']]
        labels = [textwrap.fill(x, 24) for x in labels]
        bars = ax.barh(labels, vals, color=['#1f77b4', '#ff7f0e', '#2ca02c'][:len(vals)])
        for b, w in zip(bars, tp['ways']):
            ax.text(b.get_width(), b.get_y() + b.get_height() / 2, ' %.0f/min, %.0f ms CPU/trip'
                    % (w['per_minute'], w['cpu_ms_per_trip']), va='center', fontsize=8)
        ax.axvline(1000, color='green', linestyle='--', linewidth=1, label='goal 1,000/min')
        ax.set_xlabel('round trips per minute (15 mailboxes, 2-core machine incl. the lab)')
        ax.set_xlim(0, max(vals + [1000]) * 1.45)
        ax.set_title('3. Throughput')
        ax.legend(fontsize=8, loc='lower right')
    ax = axes[1][1]
    bm = res.get('bigmailbox')
    if bm:
        keys = ('trip_time_ms', 'roundtrip_ms')
        data, labels = [], []
        for k in keys:
            for box in ('empty', 'full'):
                data.append([r[k] for r in bm['rows'] if r['mailbox'] == box])
                labels.append('%s\n%s' % ('trip time' if k == 'trip_time_ms' else 'whole round trip',
                                          'empty' if box == 'empty' else '{:,} msgs'.format(bm['messages'])))
        ax.boxplot(data, whis=(5, 95))
        ax.set_xticks(range(1, len(labels) + 1))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_ylabel('ms')
        ax.set_title('4. Large mailbox (%d trips each; trip time ratio %.2fx)'
                     % (bm['trips_each'], bm['figures']['trip_time_ms']['ratio']))
    fig.suptitle('mailops.health benchmarks against the Docker lab (Postfix + Dovecot)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write() -> tuple:
    res = load()
    md = results_dir() / 'summary.md'
    md.write_text(markdown(res) + '\n')
    png = results_dir() / 'bench.png'
    if res:
        plot(res, png)
    return md, png
