"""make test must leave the git work tree as it found it: snapshot it first, compare at the end.

    python tests/tools/worktree.py save FILE    # at the start of make test
    python tests/tools/worktree.py check FILE   # at the end: exit 1 when anything changed

The snapshot is `git status --porcelain` with every file it lists hashed, so a file that was
already modified and is rewritten by the run counts as a change too.  Ignored files (build/,
the venv, caches, lab/.state) are not looked at.  Outside a git work tree it says so and passes.
"""

import hashlib
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def git(*args):
    return subprocess.run(['git', *args], cwd=ROOT, capture_output=True, check=False)


def snapshot():
    """{path: (status, sha256 of its content or None)} of what git status lists."""
    out = git('status', '--porcelain=v1', '-z', '--untracked-files=all')
    if out.returncode:
        raise RuntimeError(out.stderr.decode(errors='replace').strip())
    entries = out.stdout.decode('utf-8', 'surrogateescape').split('\0')
    state = {}
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if not entry:
            continue
        status, path = entry[:2], entry[3:]
        if status[0] in 'RC':  # a rename or copy is followed by its source path
            i += 1
        full = os.path.join(ROOT, path)
        digest = None
        if os.path.isfile(full) and not os.path.islink(full):
            with open(full, 'rb') as f:
                digest = hashlib.sha256(f.read()).hexdigest()
        state[path] = [status, digest]
    return state


def main(argv):
    if len(argv) != 3 or argv[1] not in ('save', 'check'):
        sys.exit(__doc__)
    action, path = argv[1], argv[2]
    if git('rev-parse', '--is-inside-work-tree').returncode:
        print('    worktree: not a git work tree; nothing to compare')
        return 0
    now = snapshot()
    if action == 'save':
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(now, f)
        return 0
    with open(path, encoding='utf-8') as f:
        before = json.load(f)
    changed = sorted(p for p in set(before) | set(now) if before.get(p) != now.get(p))
    if not changed:
        print('==> worktree: git status as before the run (%d entries)' % len(now))
        return 0
    print('==> worktree: the run changed the git work tree (or someone edited it meanwhile):', file=sys.stderr)
    for p in changed:
        was, is_ = before.get(p), now.get(p)
        if was is None:
            what = '%s (was clean)' % is_[0].strip()
        elif is_ is None:
            what = 'clean (was %s)' % was[0].strip()
        elif was[0] == is_[0]:
            what = 'rewritten (%s)' % is_[0].strip()
        else:
            what = '%s (was %s)' % (is_[0].strip(), was[0].strip())
        print('    %s  %s' % (p, what), file=sys.stderr)
    print('    make test must leave the tree as it found it: write outputs under build/ (ignored)', file=sys.stderr)
    return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
