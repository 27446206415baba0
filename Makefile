# Build / test entry points for the mailops.health Ansible collection.
#
#   make test        everything CI runs (.ci/run calls this)
#   make venv        create $(VENV) and install requirements-dev.txt
#   make collection  lay the collection out as build/ansible_collections/mailops/health
#   make sanity      ansible-test sanity (no ignore files) on that tree
#   make docs        ansible-doc for every module in plugins/modules
#   make unit        every pytest suite under tests/ (core, modules, embedded lab, through Ansible)
#   make lint        ansible-lint (production profile) on playbooks/ and roles/
#   make changelog-lint
#   make demo        the health gate playbook against the Docker lab if up, else the embedded lab
#   make lab-up      start the Docker lab (Postfix + Dovecot); lab-down, lab-describe, lab-test
#   make integration the security matrix through ansible-test integration (matrix-docs renders docs/matrix.md)
#   make remote-test a round trip from an SSH-managed node with a bare python3
#   make bench       benchmarks against the Docker lab (bench/README.md)
#   make fuzz        the long hostile-server fuzz run (10,000 examples)
#   make clean       remove build outputs (keeps the venv); distclean also removes the venv
#
# Variables (override on the command line, e.g. `make VENV=/tmp/venv-check test`):
PYTHON ?= python3
VENV ?= .venv
SANITY_PYTHON ?= 3.11
SANITY_ARGS ?=
UNIT_ARGS ?=

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

COLLECTION_NAMESPACE := mailops
COLLECTION_NAME := health
BUILD_DIR := build
COLLECTIONS_ROOT := $(abspath $(BUILD_DIR))
COLLECTION_DIR := $(BUILD_DIR)/ansible_collections/$(COLLECTION_NAMESPACE)/$(COLLECTION_NAME)

VENV_ABS = $(abspath $(VENV))
BIN = $(VENV_ABS)/bin
VENV_STAMP = $(VENV_ABS)/.mailops-health-requirements.stamp

# ansible-test downloads get-pip-<version>.py from a host we cannot reach; it
# uses ~/.ansible/test/cache/get_pip_<version with _ for .>.py instead when
# present.  The versions are read from the installed ansible-test (2.19.14 asks
# for pip 24.2 only); GET_PIP_VERSIONS overrides that.
GET_PIP_STANDIN := tests/tools/get_pip_standin.py
GET_PIP_CACHE_DIR := $(HOME)/.ansible/test/cache
GET_PIP_VERSIONS ?=


.PHONY: help venv collection get-pip-cache sanity docs changelog-lint unit lint test demo lab-up lab-down lab-describe lab-test lab-checks integration matrix-docs remote-test bench fuzz clean distclean

help:
	@sed -n '3,/^# Variables/{/^# Variables/d;p}' $(firstword $(MAKEFILE_LIST)) | sed 's/^# \{0,1\}//'

# --------------------------------------------------------------------------
# venv: created from scratch with $(PYTHON); redone only when
# requirements-dev.txt changes (stamp file inside the venv).
venv: $(VENV_STAMP)

$(VENV_STAMP): requirements-dev.txt
	@echo "==> venv: $(VENV_ABS) (first time: about 1 min)"
	@if [ ! -x "$(BIN)/python" ]; then \
	  echo "    creating venv with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
	  $(PYTHON) -m venv "$(VENV_ABS)"; \
	fi
	"$(BIN)/python" -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	@touch "$@"

# --------------------------------------------------------------------------
# collection: ansible-test needs the content under
# .../ansible_collections/<namespace>/<name>.  The tree is rebuilt from
# scratch each time from the files git knows about (tracked + untracked but
# not ignored), so .git, venvs, build/ and caches never get in.  Without git
# (e.g. an unpacked tarball) it falls back to tar with explicit excludes.
# The copy gets its own `git init` so that ansible-test lists the files of
# this tree instead of walking up to the outer repo (where build/ is ignored
# and would look empty).
collection:
	@echo "==> collection: $(COLLECTION_DIR)"
	@rm -rf "$(COLLECTION_DIR)"
	@mkdir -p "$(COLLECTION_DIR)"
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
	  git ls-files -z --cached --others --exclude-standard \
	    | while IFS= read -r -d '' f; do \
	        case "$$f" in $(BUILD_DIR)/*|.venv*/*|.git/*) continue ;; esac; \
	        if [ -e "$$f" ] || [ -L "$$f" ]; then printf '%s\0' "$$f"; fi; \
	      done \
	    | tar --null --no-recursion -T - -cf - \
	    | tar -xf - -C "$(COLLECTION_DIR)"; \
	else \
	  tar -cf - --exclude=./.git --exclude='./.venv*' --exclude=./$(BUILD_DIR) \
	    --exclude=__pycache__ --exclude='*.pyc' --exclude=.pytest_cache \
	    --exclude=.hypothesis --exclude=./tests/output --exclude=./lab/build \
	    --exclude=./lab/.state --exclude=./bench/results --exclude='*.tar.gz' . \
	    | tar -xf - -C "$(COLLECTION_DIR)"; \
	fi
	@git -C "$(COLLECTION_DIR)" init -q
	@echo "    $$(find "$(COLLECTION_DIR)" -path '*/.git' -prune -o -type f -print | wc -l) files"

# --------------------------------------------------------------------------
get-pip-cache: venv
	@echo "==> get-pip-cache: offline get-pip stand-in for ansible-test"
	@versions="$(GET_PIP_VERSIONS)"; \
	if [ -z "$$versions" ]; then \
	  src="$$("$(BIN)/python" -c 'import ansible_test, os; print(os.path.dirname(ansible_test.__file__))')/_internal/python_requirements.py"; \
	  versions="$$(grep -oE "pip='[0-9][0-9.]*'" "$$src" | sed -E "s/pip='([0-9.]+)'/\1/" | sort -u)"; \
	fi; \
	if [ -z "$$versions" ]; then echo "could not find the pip version(s) ansible-test asks for; set GET_PIP_VERSIONS" >&2; exit 1; fi; \
	mkdir -p "$(GET_PIP_CACHE_DIR)"; \
	for v in $$versions; do \
	  dest="$(GET_PIP_CACHE_DIR)/get_pip_$${v//./_}.py"; \
	  install -m 0644 "$(GET_PIP_STANDIN)" "$$dest"; \
	  echo "    $$dest (pip $$v)"; \
	done

# --------------------------------------------------------------------------
# sanity: every default ansible-test sanity test, no ignore files.  With
# --requirements, ansible-test makes a venv per test under
# ~/.ansible/test/venv/ and installs its own pinned tools from PyPI there
# (bootstrapped through the get-pip stand-in).  The venv's bin/ comes first
# on PATH so that python$(SANITY_PYTHON) is the venv interpreter.
sanity: venv collection get-pip-cache
	@echo "==> sanity: ansible-test sanity --python $(SANITY_PYTHON) (first run on a machine about 2 min: it builds its tool venvs; later about 30 s)"
	@start=$$(date +%s); \
	cd "$(COLLECTION_DIR)" && \
	PATH="$(BIN):$$PATH" "$(BIN)/ansible-test" sanity --python $(SANITY_PYTHON) --requirements --color no $(SANITY_ARGS); \
	echo "<== sanity passed in $$(( $$(date +%s) - start ))s"

# --------------------------------------------------------------------------
docs: venv collection
	@echo "==> docs: ansible-doc for each module in plugins/modules"
	@shopt -s nullglob; \
	mods=(); \
	for f in plugins/modules/*.py; do \
	  m=$$(basename "$$f" .py); [ "$$m" = "__init__" ] && continue; mods+=("$$m"); \
	done; \
	if [ $${#mods[@]} -eq 0 ]; then echo "    no modules in plugins/modules: nothing to check"; exit 0; fi; \
	failed=(); \
	for m in "$${mods[@]}"; do \
	  if ANSIBLE_COLLECTIONS_PATH="$(COLLECTIONS_ROOT)" ANSIBLE_NOCOLOR=1 \
	     "$(BIN)/ansible-doc" -t module "$(COLLECTION_NAMESPACE).$(COLLECTION_NAME).$$m" >/dev/null 2>"$(BUILD_DIR)/ansible-doc-$$m.err" \
	     && ! grep -qi 'error\|warning' "$(BUILD_DIR)/ansible-doc-$$m.err"; then \
	    echo "    ok   $(COLLECTION_NAMESPACE).$(COLLECTION_NAME).$$m"; \
	  else \
	    echo "    FAIL $(COLLECTION_NAMESPACE).$(COLLECTION_NAME).$$m"; sed 's/^/        /' "$(BUILD_DIR)/ansible-doc-$$m.err"; \
	    failed+=("$$m"); \
	  fi; \
	done; \
	if [ $${#failed[@]} -gt 0 ]; then echo "ansible-doc failed for: $${failed[*]}" >&2; exit 1; fi

# --------------------------------------------------------------------------
changelog-lint: venv
	@echo "==> changelog-lint: antsibull-changelog lint"
	"$(BIN)/antsibull-changelog" lint

# --------------------------------------------------------------------------
# unit: every pytest suite under tests/ (pytest.ini testpaths): the core and the modules against
# the embedded lab, the lab itself, and the modules run through Ansible from the built tarball.
# pytest's exit 5 (nothing collected) fails, as it should.
unit: venv
	@echo "==> unit: pytest (about 20 s)"
	"$(BIN)/python" -m pytest -q $(UNIT_ARGS)

# --------------------------------------------------------------------------
# test: fast checks first.  Steps run one after another even under make -j.
test: venv
	@$(MAKE) --no-print-directory changelog-lint
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory docs
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory sanity
	@$(MAKE) --no-print-directory lab-checks
	@echo "==> test: all steps passed"

# lab-checks: everything that needs the Docker lab, in one lab session: brought up if it is not
# up, and taken down again (with a private dockerd it started) only if this step brought it up.
lab-checks: venv
	@was_up=0; "$(BIN)/python" -m lab.docker status >/dev/null 2>&1 && was_up=1; \
	if [ $$was_up = 0 ]; then $(MAKE) --no-print-directory lab-up; fi; \
	rc=0; $(MAKE) --no-print-directory lab-test integration matrix-docs remote-test || rc=$$?; \
	if [ $$was_up = 0 ]; then $(MAKE) --no-print-directory lab-down; fi; \
	exit $$rc

# --------------------------------------------------------------------------
# demo: the health gate (playbooks/health_gate.yml) against a lab: the Docker lab (real
# Postfix + Dovecot) when it is up (`make lab-up`), else the embedded lab, started in the
# background on free loopback ports and stopped by its pid when the play ends.
DEMO_DIR := $(BUILD_DIR)/demo
demo: venv collection
	@mkdir -p "$(DEMO_DIR)"; rm -f "$(DEMO_DIR)/lab.json"; lab_pid=; \
	trap '[ -z "$$lab_pid" ] || { kill $$lab_pid 2>/dev/null; wait $$lab_pid 2>/dev/null; } || true' EXIT; \
	if "$(BIN)/python" -m lab.docker status >/dev/null 2>&1; then \
	  echo "==> demo: using the Docker lab (Postfix + Dovecot on 127.0.0.1)"; \
	  "$(BIN)/python" -m lab.docker describe --json > "$(DEMO_DIR)/lab.json"; \
	else \
	  echo "==> demo: Docker lab not up (make lab-up starts it); starting the embedded lab (Python SMTP + POP3 on 127.0.0.1)"; \
	  "$(BIN)/python" -m lab.embedded --describe-file "$(DEMO_DIR)/lab.json" > "$(DEMO_DIR)/lab.log" 2>&1 & lab_pid=$$!; \
	  for i in $$(seq 50); do [ -s "$(DEMO_DIR)/lab.json" ] && break; sleep 0.1; done; \
	  [ -s "$(DEMO_DIR)/lab.json" ] || { cat "$(DEMO_DIR)/lab.log"; echo "embedded lab did not start"; exit 1; }; \
	fi; \
	"$(BIN)/python" -m lab.playbook_vars "$(DEMO_DIR)/lab.json" > "$(DEMO_DIR)/vars.json"; \
	echo "==> demo: ansible-playbook playbooks/health_gate.yml"; \
	ANSIBLE_COLLECTIONS_PATH="$(COLLECTIONS_ROOT)" ANSIBLE_LOCALHOST_WARNING=0 ANSIBLE_INVENTORY_UNPARSED_WARNING=0 \
	  "$(BIN)/ansible-playbook" playbooks/health_gate.yml -e "@$(DEMO_DIR)/vars.json"

# The Docker lab: Postfix + Dovecot in two containers on loopback. `lab-up` installs docker.io
# and starts a private dockerd when no engine is reachable (root on Debian), builds the Debian
# base image with debootstrap when it cannot be pulled, and waits until every port answers.
lab-up: venv
	@echo "==> lab-up: Docker lab (cold: about 1 min; warm: a few seconds)"
	"$(BIN)/python" -m lab.docker up

lab-down: venv
	"$(BIN)/python" -m lab.docker down

lab-describe: venv
	@"$(BIN)/python" -m lab.docker describe --json

# lab-test: the Docker lab's own tests (testinfra and protocol checks). They reuse a lab that is
# up, or bring one up and take it (and a private dockerd they started) down at the end.
lab-test: venv
	@echo "==> lab-test: Docker lab tests (brings the lab up if needed: about 1-2 min)"
	"$(BIN)/python" -m pytest -q tests/lab

# --------------------------------------------------------------------------
# integration: ansible-test integration targets run every cell of the expectation matrix
# (tests/integration/targets/mail_matrix/vars/matrix.yml) through Ansible against the Docker lab
# (brought up if it is down) and fail on any cell that does not match; the observed results go
# to build/matrix/, which matrix-docs renders into docs/matrix.md.
MATRIX_DIR := $(BUILD_DIR)/matrix
INTEGRATION_ARGS ?=
integration: venv collection
	@echo "==> integration: ansible-test integration, the expectation matrix against the Docker lab (about 6 min)"
	@"$(BIN)/python" -m lab.docker status >/dev/null 2>&1 || "$(BIN)/python" -m lab.docker up
	@mkdir -p "$(MATRIX_DIR)"
	@"$(BIN)/python" -m lab.docker describe --json \
	  | "$(BIN)/python" -c 'import json, sys; json.dump({"mailops_lab": json.load(sys.stdin), "mailops_matrix_results_dir": sys.argv[1]}, sys.stdout, indent=1)' \
	    "$(abspath $(MATRIX_DIR))" > "$(COLLECTION_DIR)/tests/integration/integration_config.yml"
	@start=$$(date +%s); \
	cd "$(COLLECTION_DIR)" && \
	PATH="$(BIN):$$PATH" "$(BIN)/ansible-test" integration --local --python $(SANITY_PYTHON) --color no $(INTEGRATION_ARGS); \
	echo "<== integration passed in $$(( $$(date +%s) - start ))s (results in $(MATRIX_DIR); make matrix-docs)"

matrix-docs: venv
	@echo "==> matrix-docs: docs/matrix.md from the table and the observed results"
	"$(BIN)/python" tests/matrix/render.py --results "$(MATRIX_DIR)" --output docs/matrix.md

# remote-test: a round trip run on a separate managed node over SSH (a container with sshd and a
# bare python3: no pip packages, no Ansible), against the Docker lab.
remote-test: venv
	@echo "==> remote-test: a round trip from an SSH-managed node with a bare python3"
	@"$(BIN)/python" -m lab.docker status >/dev/null 2>&1 || "$(BIN)/python" -m lab.docker up
	"$(BIN)/python" -m pytest -q tests/remote

# --------------------------------------------------------------------------
# fuzz: the long hostile-server run (Hypothesis, 10,000 examples over smtp_check, pop3_check and
# mail_roundtrip; make test runs 500). FUZZ_SEED=N repeats a run.
FUZZ_EXAMPLES ?= 10000
fuzz: venv
	@echo "==> fuzz: $(FUZZ_EXAMPLES) hostile-server examples (about 15 min for 10,000)"
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) "$(BIN)/python" -m pytest -q tests/fuzz

# --------------------------------------------------------------------------
# bench: the benchmarks in bench/ against the Docker lab (brought up if it is down, never taken
# down): probe overhead against the monitoring plugins, arrival-detection lag, round trips per
# minute, large mailbox.  Writes bench/results/*.json, summary.md and bench.png (about 6 min).
# Installs bench/requirements.txt into the venv, and monitoring-plugins-standard (check_smtp,
# check_pop) when missing, as root on Debian.  BENCH_ARGS: e.g. --only lag,throughput, or
# --quick (a 30 s smoke test of the machinery; its results go to bench/results/tmp/quick).
BENCH_ARGS ?=
BENCH_STAMP = $(VENV_ABS)/.mailops-health-bench-requirements.stamp
NAGIOS_PLUGINS := /usr/lib/nagios/plugins

$(BENCH_STAMP): bench/requirements.txt $(VENV_STAMP)
	"$(BIN)/python" -m pip install --disable-pip-version-check -q -r bench/requirements.txt
	@touch "$@"

bench: venv $(BENCH_STAMP)
	@if [ ! -x "$(NAGIOS_PLUGINS)/check_smtp" ] || [ ! -x "$(NAGIOS_PLUGINS)/check_pop" ]; then \
	  if [ "$$(id -u)" = 0 ] && [ -r /etc/debian_version ]; then \
	    echo "==> bench: apt-get install monitoring-plugins-standard (check_smtp, check_pop)"; \
	    apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends monitoring-plugins-standard >/dev/null; \
	  else \
	    echo "bench: needs $(NAGIOS_PLUGINS)/check_smtp and check_pop (Debian: monitoring-plugins-standard; run as root)" >&2; exit 1; \
	  fi; \
	fi
	@echo "==> bench: python -m bench $(BENCH_ARGS) (about 6 min; progress below)"
	"$(BIN)/python" -m bench $(BENCH_ARGS)

# lint: ansible-lint (production profile) on the playbooks and roles, resolving our own
# modules from the collection tree; --offline so it installs nothing.
lint: venv collection
	@echo "==> lint: ansible-lint --profile production"
	@ANSIBLE_COLLECTIONS_PATH="$(COLLECTIONS_ROOT)" "$(BIN)/ansible-lint" --offline --profile production \
	  $(wildcard playbooks roles)

# --------------------------------------------------------------------------
clean:
	@echo "==> clean"
	rm -rf "$(BUILD_DIR)" .pytest_cache .hypothesis tests/output
	find . -path ./.git -prune -o -path './.venv*' -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf "$(VENV_ABS)"
