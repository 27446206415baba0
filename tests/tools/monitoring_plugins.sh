#!/usr/bin/env bash
# The benchmarks compare with monitoring-plugins' check_smtp, check_pop and check_imap: install Debian's
# monitoring-plugins-standard when they are missing (root on Debian only).
#
#   tests/tools/monitoring_plugins.sh [PLUGIN_DIR]
set -euo pipefail
dir=${1:-/usr/lib/nagios/plugins}
if [ -x "$dir/check_smtp" ] && [ -x "$dir/check_pop" ] && [ -x "$dir/check_imap" ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || [ ! -r /etc/debian_version ]; then
  echo "bench: needs $dir/check_smtp, check_pop and check_imap (Debian: monitoring-plugins-standard; run as root)" >&2
  exit 1
fi
echo "==> bench: apt-get install monitoring-plugins-standard (check_smtp, check_pop, check_imap)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends monitoring-plugins-standard >/dev/null
