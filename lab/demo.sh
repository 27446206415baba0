#!/usr/bin/env bash
# The health gate (playbooks/health_gate.yml) against a lab: the Docker lab (real Postfix +
# Dovecot) when it is up (`make lab-up`), else the embedded lab, started in the background on
# free loopback ports and stopped by its pid when the play ends.
#
#   lab/demo.sh PYTHON COLLECTIONS_ROOT WORK_DIR
#
# PYTHON is the project venv's python (its bin/ has ansible-playbook); COLLECTIONS_ROOT holds
# ansible_collections/mailops/health (`make collection`); WORK_DIR gets lab.json and vars.json.
set -euo pipefail
python=${1:?usage: lab/demo.sh PYTHON COLLECTIONS_ROOT WORK_DIR}
collections=${2:?usage: lab/demo.sh PYTHON COLLECTIONS_ROOT WORK_DIR}
work=${3:?usage: lab/demo.sh PYTHON COLLECTIONS_ROOT WORK_DIR}
cd "$(dirname "$0")/.."

mkdir -p "$work"
rm -f "$work/lab.json"
lab_pid=
stop_lab() {
  if [ -n "$lab_pid" ]; then
    kill "$lab_pid" 2>/dev/null || true
    wait "$lab_pid" 2>/dev/null || true
  fi
}
trap stop_lab EXIT

if "$python" -m lab.docker status >/dev/null 2>&1; then
  echo "==> demo: using the Docker lab (Postfix + Dovecot on 127.0.0.1)"
  "$python" -m lab.docker describe --json > "$work/lab.json"
else
  echo "==> demo: Docker lab not up (make lab-up starts it); starting the embedded lab (Python SMTP + POP3 on 127.0.0.1)"
  "$python" -m lab.embedded --describe-file "$work/lab.json" > "$work/lab.log" 2>&1 &
  lab_pid=$!
  for _ in $(seq 50); do [ -s "$work/lab.json" ] && break; sleep 0.1; done
  if [ ! -s "$work/lab.json" ]; then
    cat "$work/lab.log"
    echo "embedded lab did not start" >&2
    exit 1
  fi
fi
"$python" -m lab.playbook_vars "$work/lab.json" > "$work/vars.json"
echo "==> demo: ansible-playbook playbooks/health_gate.yml"
ANSIBLE_COLLECTIONS_PATH="$collections" ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 \
  "$(dirname "$python")/ansible-playbook" playbooks/health_gate.yml -e "@$work/vars.json"
