#!/usr/bin/env bash
# Lay the collection out as DEST (.../ansible_collections/<namespace>/<name>), where ansible-test,
# ansible-doc, ansible-lint and the demo want it.
#
#   tests/tools/collection.sh DEST [BUILD_DIR]
#
# The tree is rebuilt from scratch each time from the files git knows about (tracked, and
# untracked but not ignored), so .git, venvs, BUILD_DIR (default build) and caches never get in.
# Without git (e.g. an unpacked tarball) it falls back to tar with explicit excludes.  The copy
# gets its own `git init` so that ansible-test lists the files of this tree instead of walking up
# to the outer repository (where build/ is ignored and would look empty).
set -euo pipefail
dest=${1:?usage: tests/tools/collection.sh DEST [BUILD_DIR]}
build=${2:-build}
case "$dest" in /*) ;; *) dest="$PWD/$dest" ;; esac
cd "$(dirname "$0")/../.."

rm -rf "$dest"
mkdir -p "$dest"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do
        case "$f" in "$build"/*|.venv*/*|.git/*) continue ;; esac
        if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi
      done \
    | tar --null --no-recursion -T - -cf - \
    | tar -xf - -C "$dest"
else
  tar -cf - --exclude=./.git --exclude='./.venv*' --exclude="./$build" \
    --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache --exclude=.ruff_cache \
    --exclude=.hypothesis --exclude=./tests/output --exclude=./lab/build \
    --exclude=./lab/.state --exclude=./bench/results --exclude='*.tar.gz' . \
    | tar -xf - -C "$dest"
fi
git -C "$dest" init -q
echo "    $(find "$dest" -path '*/.git' -prune -o -type f -print | wc -l) files"
