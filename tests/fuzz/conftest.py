"""The fuzz run's figures (examples and outcomes per property) in pytest's terminal summary."""

from hostile_server import RUN, STATS


def pytest_terminal_summary(terminalreporter):
    if not STATS:
        return
    terminalreporter.section('hostile-server fuzzing')
    terminalreporter.write_line('seed %s (FUZZ_SEED=%s generates the same examples again)' % (RUN.get('seed'), RUN.get('seed')))
    for name, stats in sorted(STATS.items()):
        terminalreporter.write_line('%s: %s' % (name, ', '.join('%s=%s' % item for item in sorted(stats.items()))))
