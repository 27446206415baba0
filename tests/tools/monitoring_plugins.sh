#!/usr/bin/env bash
# The benchmarks compare with monitoring-plugins' check_smtp and check_pop: install Debian's
# monitoring-plugins-standard when they are missing (root on Debian only).
#
#   tests/tools/monitoring_plugins.sh [PLUGIN_DIR]
set -euo pipefail
dir=${1:-/usr/lib/nagios/plugins}
if [ -x "$dir/check_smtp" ] && [ -x "$dir/check_pop" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || [ ! -r /etc/debian_version ]; then
  echo "bench: needs $dir/check_smtp and check_pop (Debian: monitoring-plugins-standard; run as root)" >&2
  exit 1
fi
echo "==> bench: apt-get install monitoring-plugins-standard (check_smtp, check_pop)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends monitoring-plugins-standard >/dev/null
