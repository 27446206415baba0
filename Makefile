# Build / test entry points for the mailops.health Ansible collection.
#
#   make test         everything CI runs (.ci/run calls this), in this order: ruff, pythons, unit,
#                     compat, lint, sanity, sanity-pythons, release-check, molecule, lab-checks; at the
#                     end it fails if it changed the git work tree
#   make venv         create $(VENV) and install requirements-dev.txt
#   make ruff         ruff (ruff.toml: pyflakes, bugbear, pycodestyle) over lab/, bench/ and tests/
#   make pythons      byte-compile plugins/ and import the core without Ansible on every Python from
#                     the floor in tests/config.yml to 3.13 that pyenv (else PATH) has
#   make unit         every pytest suite under tests/ (core, modules, embedded lab, through Ansible)
#   make compat       the modules, the role and the playbooks (by FQCN) from the tarball on every
#                     ansible-core from 2.16 to 2.21, each in its own venv, against the embedded lab
#   make lint         ansible-lint (production profile) over the whole repository
#   make sanity       ansible-test sanity (no ignore files) on the collection tree; it also runs
#                     ansible-doc on every plugin, the changelog lint and shellcheck
#   make sanity-pythons  ansible-test's compile and import tests on every Python it supports (3.8-3.13)
#   make release-check   galaxy-importer on the tarball, the execution environment (ansible-builder),
#                     and README's install-and-try commands run verbatim in a fresh venv
#   make molecule     the role's Molecule scenario (localhost, against the embedded lab)
#   make release-notes   fold changelogs/fragments into the release galaxy.yml names (CHANGELOG.rst)
#   make collection   lay the collection out as build/ansible_collections/mailops/health
#   make demo         the health gate playbook against the Docker lab if up, else the embedded lab
#   make lab-up       start the Docker lab (Postfix + Dovecot); lab-down, lab-describe, lab-test;
#                     lab-running brings it up only when it is down
#   make lab-checks   what needs the Docker lab: lab-test integration matrix-check remote-test, in one
#                     lab session (a lab this step brought up is taken down again)
#   make integration  the expectation matrix through ansible-test integration; results in build/matrix/
#   make matrix-check render those results into build/matrix.md; fail if docs/matrix.md shows other
#                     cells (make test runs this: it never writes docs/)
#   make matrix-docs  write docs/matrix.md from those results (run after integration, then commit it)
#   make remote-test  a round trip from an SSH-managed node with a bare python3
#   make bench        benchmarks against the Docker lab (bench/README.md)
#   make fuzz         the long hostile-server fuzz run (10,000 examples)
#   make clean        remove build outputs (keeps the venvs); distclean also removes the venvs
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

# ansible-test's get-pip cache (tests/tools/get_pip_cache.sh says why); GET_PIP_VERSIONS
# overrides the pip versions read from the installed ansible-test.
GET_PIP_CACHE_DIR := $(HOME)/.ansible/test/cache
GET_PIP_VERSIONS ?=

WORKTREE_SNAPSHOT := $(BUILD_DIR)/worktree-before-test.json

# The venvs of make compat (one per ansible-core minor) and of the release tools (galaxy-importer,
# ansible-builder, molecule): outside the tree, reused between runs, remade when their pinned
# requirements change.
TOOLS_CACHE ?= $(HOME)/.cache/mailops-health
RELEASE_TOOLS = $(TOOLS_CACHE)/release-tools
RELEASE_STAMP = $(RELEASE_TOOLS)/.mailops-health-release-tools.stamp
COMPAT_ARGS ?=
VERSION = $(shell sed -n 's/^version: *//p' galaxy.yml)

.PHONY: help venv collection get-pip-cache ruff pythons sanity unit lint test demo lab-up lab-down lab-describe \
	lab-running lab-test lab-checks integration matrix-check matrix-docs remote-test bench fuzz clean distclean \
	compat sanity-pythons shellcheck release-tools release-check molecule release-notes

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
collection:
	@echo "==> collection: $(COLLECTION_DIR)"
	@tests/tools/collection.sh "$(COLLECTION_DIR)" "$(BUILD_DIR)"

get-pip-cache: venv
	@echo "==> get-pip-cache: offline get-pip stand-in for ansible-test"
	@tests/tools/get_pip_cache.sh "$(BIN)/python" "$(GET_PIP_CACHE_DIR)" "$(GET_PIP_VERSIONS)"

# --------------------------------------------------------------------------
# test: fast checks first.  Steps run one after another even under make -j.  The work tree's
# git status (with the content of every file it lists) is saved first and compared at the end.
test: venv
	@"$(BIN)/python" tests/tools/worktree.py save "$(WORKTREE_SNAPSHOT)"
	@$(MAKE) --no-print-directory ruff
	@$(MAKE) --no-print-directory pythons
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory compat
	@$(MAKE) --no-print-directory lint
	@$(MAKE) --no-print-directory sanity
	@$(MAKE) --no-print-directory sanity-pythons
	@$(MAKE) --no-print-directory release-check
	@$(MAKE) --no-print-directory molecule
	@$(MAKE) --no-print-directory lab-checks
	@"$(BIN)/python" tests/tools/worktree.py check "$(WORKTREE_SNAPSHOT)"
	@echo "==> test: all steps passed"

ruff: venv
	@echo "==> ruff: lab/ bench/ tests/ (rules in ruff.toml)"
	"$(BIN)/ruff" check --no-cache lab bench tests

# pythons: the managed-node Pythons; runs with $(PYTHON), needs no venv (nor Ansible).
pythons:
	@$(PYTHON) tests/tools/pythons.py

# unit: every pytest suite under tests/ (pytest.ini testpaths): the core and the modules against
# the embedded lab, the lab itself, and the modules run through Ansible from the built tarball.
# pytest's exit 5 (nothing collected) fails, as it should.
unit: venv
	@echo "==> unit: pytest (about 3 min on 2 cores)"
	"$(BIN)/python" -m pytest -q $(UNIT_ARGS)

# lint: ansible-lint (production profile) over the whole repository (.ansible-lint: only the
# changelog fragments are left to antsibull-changelog's lint), resolving our own modules from the
# collection tree; --offline so it installs nothing.
lint: venv collection
	@echo "==> lint: ansible-lint --profile production (the whole repository)"
	@PATH="$(BIN):$$PATH" ANSIBLE_COLLECTIONS_PATH="$(COLLECTIONS_ROOT)" "$(BIN)/ansible-lint" --offline --profile production

# sanity: every default ansible-test sanity test, no ignore files.  With
# --requirements, ansible-test makes a venv per test under
# ~/.ansible/test/venv/ and installs its own pinned tools from PyPI there
# (bootstrapped through the get-pip stand-in).  The venv's bin/ comes first
# on PATH so that python$(SANITY_PYTHON) is the venv interpreter.
sanity: venv collection get-pip-cache shellcheck
	@echo "==> sanity: ansible-test sanity --python $(SANITY_PYTHON) (first run on a machine about 2 min: it builds its tool venvs; later about 30 s)"
	@start=$$(date +%s); \
	cd "$(COLLECTION_DIR)" && \
	PATH="$(BIN):$$PATH" "$(BIN)/ansible-test" sanity --python $(SANITY_PYTHON) --requirements --color no $(SANITY_ARGS); \
	echo "<== sanity passed in $$(( $$(date +%s) - start ))s"

# sanity-pythons: ansible-test's multi-version tests (compile, import: each module imported in a
# bare venv of that Python with only ansible's module_utils) on every Python it supports for
# modules, 3.8-3.13: the pyenv interpreters go on PATH, and without --python ansible-test runs each
# test on every one it finds. Python 3.7 (below ansible-test 2.19's range) is covered by make pythons
# (compile + core import) and make compat (every module run by ansible-core 2.16 and 2.17 on 3.7).
sanity-pythons: venv collection get-pip-cache
	@echo "==> sanity-pythons: ansible-test sanity --test compile --test import on Python 3.8-3.13 (first run about 30 s, later about 8 s)"
	@start=$$(date +%s); \
	pythons=$$(ls -d "$$(pyenv root 2>/dev/null || echo $$HOME/.pyenv)"/versions/3.*/bin 2>/dev/null | tr '\n' ':'); \
	cd "$(COLLECTION_DIR)" && \
	PATH="$(BIN):$$pythons$$PATH" "$(BIN)/ansible-test" sanity --test compile --test import --requirements --color no; \
	echo "<== sanity-pythons passed in $$(( $$(date +%s) - start ))s"

# shellcheck: ansible-test sanity runs its shellcheck test only when shellcheck is on PATH; install
# Debian's when it is missing (root on Debian).
shellcheck:
	@command -v shellcheck >/dev/null || { \
	  if [ "$$(id -u)" != 0 ] || [ ! -r /etc/debian_version ]; then \
	    echo "shellcheck: not installed (Debian: apt-get install shellcheck, as root)" >&2; exit 1; fi; \
	  echo "==> shellcheck: apt-get install shellcheck"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends shellcheck >/dev/null; }

# compat: every ansible-core minor meta/runtime.yml admits (2.16-2.21), each in its own venv under
# $(TOOLS_CACHE)/compat (made from tests/compat/requirements/ by the script, two at a time, and
# reused), runs tests/compat/site.yml from the installed tarball against the embedded lab: every
# module (options set once for the action group), the role, the playbooks by FQCN.
# COMPAT_ARGS: e.g. --only 2.16,2.21.
compat: venv
	@"$(BIN)/python" tests/compat/compat.py --venvs "$(TOOLS_CACHE)/compat" $(COMPAT_ARGS)

# The release tools venv: galaxy-importer, ansible-builder, molecule (+ aiosmtpd for the lab the
# Molecule scenario starts), pinned in tests/release/requirements.txt; apart from the project venv
# because galaxy-importer wants older attrs and flake8.
release-tools: $(RELEASE_STAMP)

$(RELEASE_STAMP): tests/release/requirements.txt
	@echo "==> release-tools: $(RELEASE_TOOLS) (first time: about 30 s)"
	@if [ ! -x "$(RELEASE_TOOLS)/bin/python" ]; then $(PYTHON) -m venv "$(RELEASE_TOOLS)"; fi
	"$(RELEASE_TOOLS)/bin/python" -m pip install --disable-pip-version-check -q -r tests/release/requirements.txt
	@touch "$@"

# release-check: on the tarball of this tree: galaxy-importer (no warning allowed), the execution
# environment (ansible-builder introspect and create), and the README's install-and-try commands run
# verbatim in an empty directory with a fresh HOME (tests/release/release.py). About 35 s.
release-check: venv release-tools
	@"$(BIN)/python" tests/release/release.py --tools "$(RELEASE_TOOLS)" --work "$(BUILD_DIR)/release"

# molecule: the role's scenario (extensions/molecule/mail_health_gate: delegated to localhost, the
# embedded lab started in prepare and stopped by its pid in destroy), the collection tree on the
# collections path. About 20 s.
molecule: release-tools collection
	@echo "==> molecule: molecule test -s mail_health_gate"
	@PATH="$(RELEASE_TOOLS)/bin:$$PATH" PYTHONWARNINGS=ignore ANSIBLE_COLLECTIONS_PATH="$(COLLECTIONS_ROOT)" \
	  "$(RELEASE_TOOLS)/bin/molecule" test -s mail_health_gate > "$(BUILD_DIR)/molecule.log" 2>&1 \
	  || { tail -80 "$(BUILD_DIR)/molecule.log"; echo "<== molecule: FAILED (log: $(BUILD_DIR)/molecule.log)" >&2; exit 1; }
	@sed 's/\x1b\[[0-9;]*m//g' "$(BUILD_DIR)/molecule.log" | sed -n '/^SCENARIO RECAP/,$$p'

# release-notes: cut (or, after more work, update) the release galaxy.yml names: antsibull-changelog
# folds changelogs/fragments into changelogs/changelog.yaml and deletes them, lists the modules, roles
# and playbooks whose version_added is this version, and writes CHANGELOG.rst. Then commit.
release-notes: venv
	PATH="$(BIN):$$PATH" "$(BIN)/antsibull-changelog" release --version $(VERSION) --update-existing --reload-plugins

# --------------------------------------------------------------------------
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

# lab-running: every step that needs the Docker lab depends on this; it brings the lab up only when
# it is down, and never takes it down.
lab-running: venv
	@"$(BIN)/python" -m lab.docker status >/dev/null 2>&1 || $(MAKE) --no-print-directory lab-up

# lab-test: the Docker lab's own tests (testinfra and protocol checks). They reuse a lab that is
# up, or bring one up and take it (and a private dockerd they started) down at the end.
lab-test: venv
	@echo "==> lab-test: Docker lab tests (brings the lab up if needed: about 1-2 min)"
	"$(BIN)/python" -m pytest -q tests/lab

# lab-checks: everything that needs the Docker lab, in one lab session, one step after another: the
# lab is brought up if it is not up, and taken down again (with a private dockerd it started) only
# if this step brought it up.
LAB_CHECKS := lab-running lab-test integration matrix-check remote-test
lab-checks: venv
	@was_up=0; "$(BIN)/python" -m lab.docker status >/dev/null 2>&1 && was_up=1; \
	rc=0; for step in $(LAB_CHECKS); do $(MAKE) --no-print-directory $$step || { rc=$$?; break; }; done; \
	if [ $$was_up = 0 ]; then $(MAKE) --no-print-directory lab-down; fi; \
	exit $$rc

# demo: the health gate (playbooks/health_gate.yml) against the Docker lab when it is up, else
# against the embedded lab it starts (and stops) itself: lab/demo.sh.
demo: venv collection
	@lab/demo.sh "$(BIN)/python" "$(COLLECTIONS_ROOT)" "$(BUILD_DIR)/demo"

# --------------------------------------------------------------------------
# integration: ansible-test integration targets run every cell of the expectation matrix
# (tests/integration/targets/mail_matrix/vars/matrix.yml) through Ansible against the Docker lab
# and fail on any cell that does not match; the observed results go to build/matrix/.
# matrix-check renders them into build/matrix.md and fails when the committed docs/matrix.md
# shows other cells (dates, durations and per-cell details aside); matrix-docs writes
# docs/matrix.md itself, for a developer to commit: make test never writes docs/.
MATRIX_DIR := $(BUILD_DIR)/matrix
INTEGRATION_ARGS ?=
integration: venv collection lab-running
	@echo "==> integration: ansible-test integration, the expectation matrix against the Docker lab (about 1.5 min)"
	@mkdir -p "$(MATRIX_DIR)"
	@"$(BIN)/python" -m lab.docker describe --json \
	  | "$(BIN)/python" tests/tools/integration_config.py "$(abspath $(MATRIX_DIR))" \
	  > "$(COLLECTION_DIR)/tests/integration/integration_config.yml"
	@start=$$(date +%s); \
	cd "$(COLLECTION_DIR)" && \
	PATH="$(BIN):$$PATH" "$(BIN)/ansible-test" integration --local --python $(SANITY_PYTHON) --color no $(INTEGRATION_ARGS); \
	echo "<== integration passed in $$(( $$(date +%s) - start ))s (results in $(MATRIX_DIR))"

matrix-check: venv
	@echo "==> matrix-check: $(BUILD_DIR)/matrix.md from the table and the observed results, compared with docs/matrix.md"
	"$(BIN)/python" tests/matrix/render.py --results "$(MATRIX_DIR)" --output "$(BUILD_DIR)/matrix.md" --compare docs/matrix.md

matrix-docs: venv
	@echo "==> matrix-docs: docs/matrix.md from the table and the observed results"
	"$(BIN)/python" tests/matrix/render.py --results "$(MATRIX_DIR)" --output docs/matrix.md

# remote-test: a round trip run on a separate managed node over SSH (a container with sshd and a
# bare python3: no pip packages, no Ansible), against the Docker lab.
remote-test: venv lab-running
	@echo "==> remote-test: a round trip from an SSH-managed node with a bare python3"
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
# down): probe overhead against the monitoring plugins (check_smtp, check_pop, check_imap),
# arrival-detection lag (POP3, IMAP, IDLE alone, 1 s polling), round trips per minute, large
# mailbox (POP3 and IMAP), the IMAP load per round trip.  Writes bench/results/*.json,
# summary.md and bench.png (about 16 min).  Installs bench/requirements.txt into the venv, and
# monitoring-plugins-standard when missing, as root on Debian.  BENCH_ARGS: e.g. --only lag,throughput, or
# --quick (a 30 s smoke test of the machinery; its results go to bench/results/tmp/quick).
BENCH_ARGS ?=
BENCH_STAMP = $(VENV_ABS)/.mailops-health-bench-requirements.stamp

$(BENCH_STAMP): bench/requirements.txt $(VENV_STAMP)
	"$(BIN)/python" -m pip install --disable-pip-version-check -q -r bench/requirements.txt
	@touch "$@"

bench: venv $(BENCH_STAMP) lab-running
	@tests/tools/monitoring_plugins.sh
	@echo "==> bench: python -m bench $(BENCH_ARGS) (about 16 min; progress below)"
	"$(BIN)/python" -m bench $(BENCH_ARGS)

# --------------------------------------------------------------------------
clean:
	@echo "==> clean"
	rm -rf "$(BUILD_DIR)" .pytest_cache .ruff_cache .hypothesis tests/output
	find . -path ./.git -prune -o -path './.venv*' -prune -o -type d -name __pycache__ -print0 | xargs -0 rm -rf

distclean: clean
	rm -rf "$(VENV_ABS)" "$(TOOLS_CACHE)"
