"""The fuzz runs' figures in pytest's terminal summary: examples and outcomes (per stage) per property
of the hostile-server fuzzing, with how deep the IMAP dialogues got, cases and outcomes per module
and option of the input fuzzing."""

from hostile_server import IMAP_DEPTH, RUN, STATS
from input_contract import INPUT_STATS


def pytest_terminal_summary(terminalreporter):
    if STATS or INPUT_STATS:
        terminalreporter.section('fuzzing')
        terminalreporter.write_line('seed %s (FUZZ_SEED=%s generates the same examples again)' % (RUN.get('seed'), RUN.get('seed')))
    if STATS:
        terminalreporter.write_line('hostile servers:')
        for name, stats in sorted(STATS.items()):
            # How deep the IMAP dialogues got ('reached UID FETCH=...') on a line of its own.
            depth = dict((key[len('reached '):], count) for key, count in stats.items() if key.startswith('reached '))
            outcomes = dict((key, count) for key, count in stats.items() if not key.startswith('reached '))
            terminalreporter.write_line('  %s: %s' % (name, ', '.join(
                '%s=%s' % (key, round(value, 2) if isinstance(value, float) else value) for key, value in sorted(outcomes.items()))))
            if depth:
                terminalreporter.write_line('    examples that reached: %s' % ', '.join(
                    '%s=%d' % (verb, depth[verb]) for verb in IMAP_DEPTH if verb in depth))
    if INPUT_STATS:
        terminalreporter.write_line('hostile option values (cases, invalid by the contract, outcomes):')
        for module, options in sorted(INPUT_STATS.items()):
            totals = {}
            for stats in options.values():
                for key, count in stats.items():
                    totals[key] = totals.get(key, 0) + count
            terminalreporter.write_line('  %s, %d options: %s' % (module, len(options), _line(totals)))
            for option, stats in sorted(options.items()):
                terminalreporter.write_line('    %s: %s' % (option, _line(stats)))


def _line(stats):
    first = ['cases', 'invalid', 'valid']
    return ', '.join('%s=%s' % (key, stats[key]) for key in first + sorted(set(stats) - set(first)) if key in stats)
