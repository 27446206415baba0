#!/usr/bin/env bash
# ansible-test downloads get-pip-<version>.py from a host this machine cannot reach; it uses
# ~/.ansible/test/cache/get_pip_<version with _ for .>.py instead when present.  This puts
# tests/tools/get_pip_standin.py there for each pip version the installed ansible-test asks for
# (2.19.14 asks for pip 24.2 only), or for VERSIONS when given.
#
#   tests/tools/get_pip_cache.sh PYTHON CACHE_DIR [VERSIONS]
set -euo pipefail
python=${1:?usage: tests/tools/get_pip_cache.sh PYTHON CACHE_DIR [VERSIONS]}
cache=${2:?usage: tests/tools/get_pip_cache.sh PYTHON CACHE_DIR [VERSIONS]}
versions=${3:-}
standin="$(cd "$(dirname "$0")" && pwd)/get_pip_standin.py"

if [ -z "$versions" ]; then
  src="$("$python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py"
  versions="$(grep -oE "pip='[0-9][0-9.]*'" "$src" | sed -E "s/pip='([0-9.]+)'/\1/" | sort -u)"
fi
if [ -z "$versions" ]; then
  echo "could not find the pip version(s) ansible-test asks for; set GET_PIP_VERSIONS" >&2
  exit 1
fi
mkdir -p "$cache"
for v in $versions; do
  dest="$cache/get_pip_${v//./_}.py"
  install -m 0644 "$standin" "$dest"
  echo "    $dest (pip $v)"
done
