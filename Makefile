# turnomatic: the two commands a newcomer needs are `make up` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

# Debian packages the control machine needs for the tests, the lab and the benchmarks.
DEB_PACKAGES := redis-server nginx wrk systemd-container mmdebstrap iproute2 openssh-client \
	curl dnsutils rsync nodejs python3-pip python3-venv \
	graphite-carbon graphite-web gunicorn chromium collectd-core
# npm: Debian's nodejs comes without it (package npm); NodeSource's nodejs brings its own
# and conflicts with Debian's npm, so npm is installed only where it is missing.

# pytest.ini and tests/conftest.py set what runs and in which order (docs/testing.md):
# the loopback suites first, then the lab test (which leaves it down and wiped), the
# roles' Molecule scenarios, the fleet end to end on bare VMs, and the suites that
# reuse the converged fleet (monitoring, load, and the edge
# failovers, last: they power balancers and a name server off and back on). `make check` is the loopback part.
LOOPBACK := -m "not lab and not molecule"

.PHONY: help setup up run check test lint bench-app bench-change bench-lab-app profile-app capacity-steps bench-tracing bench-replica-ack load load-smoke load-lab lab-up lab-status lab-down fault autoscale gameday autoscale-proof

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

setup: $(VENV)/.installed ## install Debian packages, the virtualenv and the collections

$(VENV)/.installed: requirements.txt requirements.yml app/pyproject.toml tools/load/package-lock.json tools/bench/package-lock.json
	@[ "$$(id -u)" = 0 ] || { echo "make setup (and every target but run) installs Debian packages: run it as root" >&2; exit 1; }
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEB_PACKAGES)
	command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -e app
	$(BIN)/ansible-galaxy collection install -r requirements.yml
	npm ci --silent --prefix tools/load
	npm ci --silent --prefix tools/bench
	touch $@

# `make run` needs no root and no apt: a virtualenv with the app's own dependencies only
# (python3 -m venv: Debian's python3-venv). `make setup` later adds the rest to the same one.
$(VENV)/.app-installed: app/pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q -e app
	touch $@

# make run RUN_ARGS="--port 7018 --threads 8" (turnomatic serve --help)
RUN_ARGS ?=
run: $(VENV)/.app-installed ## one turnomatic on 127.0.0.1:7017, counters in memory; no root (README)
	@echo "make run: it answers once it logs 'serving on http://...'; Ctrl-C stops it"
	$(BIN)/turnomatic serve $(RUN_ARGS)

lab-up: setup ## the lab: every inventory host as a systemd-nspawn VM on tmlab0 (docs/lab.md)
	$(BIN)/ansible-playbook playbooks/lab.yml -e lab_action=up

lab-status: setup ## the lab's VMs, bridge and package proxy
	$(BIN)/ansible-playbook playbooks/lab.yml -e lab_action=status

lab-down: setup ## stop every lab VM (inventory and Molecule), the package proxy, remove the bridge
	$(BIN)/ansible-playbook playbooks/lab.yml -e lab_action=down

up: lab-up ## bring turnomatic up: the lab VMs, site.yml on them, then where to reach it
	$(BIN)/ansible-playbook site.yml
	@echo "turnomatic is up: http://turnomatic.lab:7017/turno/<id> from the lab's hosts (dns1 answers the name)."
	@echo "From this machine, through a balancer:"
	@$(BIN)/ansible-inventory --list | $(BIN)/python -c 'import json, sys; hostvars = json.load(sys.stdin)["_meta"]["hostvars"]; \
		print("\n".join("  curl http://%s:7017/turno/grupo1" % hostvars[host]["ansible_host"] for host in sorted(hostvars) if host.startswith("lb")))'

# make fault VM=app1 FAULT=stop|kill|start|freeze|thaw|cut|heal|partition|delay|undelay [DELAY_MS=5] [PEERS=redis2,app2]
DELAY_MS ?= 5
fault: setup ## one fault on one lab VM: make fault VM=app1 FAULT=kill (docs/lab.md)
	$(BIN)/ansible-playbook playbooks/fault.yml -e lab_vm=$(VM) -e lab_fault=$(FAULT) -e lab_delay_ms=$(DELAY_MS) $(if $(PEERS),-e lab_peers=$(PEERS))

check: setup lint ## lint and every loopback suite: a few minutes, no VM touched
	$(BIN)/pytest --durations=10 $(LOOPBACK)

test: setup lint ## run every test (takes the lab down and wipes it, then brings it up again)
	$(BIN)/pytest --durations=15

lint: setup ## yamllint and ansible-lint (production profile) over every playbook and role
	$(BIN)/yamllint --strict .
	$(BIN)/ansible-lint

# make bench-app ROUNDS=5 SECONDS=10 (or BENCH_ARGS="--connections 64"); exits 1 when the target is not met
BENCH_ARGS ?=
bench-app: setup ## wrk: turnomatic vs a bare WSGI callable, same Redis increment, same run; target >= 0.90
	$(BIN)/python -m tools.bench.bench_app $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(SECONDS),--seconds $(SECONDS)) $(BENCH_ARGS)

# make bench-change BASE=main ROUNDS=5
BASE ?= main
bench-change: setup ## wrk: CPU per request of this tree's app against BASE's (default main), same run
	$(BIN)/python -m tools.bench.bench_change --base $(BASE) $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(SECONDS),--seconds $(SECONDS)) $(BENCH_ARGS)

# make profile-app PROFILE_OUT=docs/images/profile-after PROFILE_ARGS="-- --threads 16"
PROFILE_OUT ?= tests/output/profile/app
PROFILE_ARGS ?=
profile-app: setup ## py-spy on one loaded turnomatic (wrk, local Redis): flame graph SVG + PNG, shares per function
	$(BIN)/python -m tools.bench.profile_app --out $(PROFILE_OUT) $(PROFILE_ARGS)

# make bench-lab-app LAB_BENCH_ARGS="--settings 2x8,1x16 --rounds 3"
LAB_BENCH_ARGS ?=
bench-lab-app: setup ## the lab: app VMs' CPU per request at saturation, processes x threads side by side
	$(BIN)/python -m tools.bench.lab_app_cpu $(LAB_BENCH_ARGS)

# make capacity-steps STEPS_ARGS="--rounds 2 --rows reference,memory,local-redis"
STEPS_ARGS ?=
capacity-steps: setup ## open-loop max load per construction step, Node.js reference row, side by side (docs/capacity.md)
	$(BIN)/python -m tools.load.capacity_steps $(STEPS_ARGS)

bench-tracing: setup ## wrk: turnomatic with tracing off, at the default sampling, at 100 % and at 0 %, same run
	$(BIN)/python -m tools.bench.bench_tracing $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(SECONDS),--seconds $(SECONDS)) $(BENCH_ARGS)

bench-replica-ack: setup ## wrk: turnomatic with and without the replica acknowledgement (WAIT), same run
	$(BIN)/python -m tools.bench.bench_replica_ack $(if $(ROUNDS),--rounds $(ROUNDS)) $(if $(SECONDS),--seconds $(SECONDS)) $(BENCH_ARGS)

# make load LOAD_TARGET=http://10.70.17.11:7017 LOAD_ARGS="--start 200 --step 200 --max-rate 4000"
LOAD_TARGET ?= http://127.0.0.1:7017
LOAD_ARGS ?=
load: setup ## open-loop load steps against LOAD_TARGET, every ticket checked; report in tests/output/load
	$(BIN)/python -m tools.load.turnoload --target $(LOAD_TARGET) $(LOAD_ARGS)

load-smoke: setup ## the short, bounded load run CI makes (real redis-server, turnomatic, nginx on loopback)
	$(BIN)/pytest tests/load $(LOOPBACK)

load-lab: setup ## the capacity runs on the lab fleet: 1, 2, 4 app VMs, Redis +5 ms, overload
	$(BIN)/python -m tools.load.lab_capacity

# make autoscale [DRY_RUN=1]: one decision per interval until stopped (docs/capacity.md "Autoscaling")
autoscale: setup ## the app tier's autoscaler on the lab fleet; DRY_RUN=1 prints decisions without acting
	$(BIN)/python -m tools.autoscale $(if $(filter 1,$(DRY_RUN)),--dry-run)

# make gameday [SCENARIO=app-power-cut] [HOLD=30]: runs, drafts and summary in tests/output/gameday
gameday: setup ## game days on the lab fleet (Chaos Toolkit) and their timeline drafts; every scenario without SCENARIO
	$(BIN)/python -m tools.gameday $(if $(SCENARIO),--scenario $(SCENARIO)) $(if $(HOLD),--hold $(HOLD))

# make autoscale-proof [PROFILE=short]: report, figures and plot in tests/output/autoscale/<profile>/
autoscale-proof: setup ## the autoscaler on the lab under a load ramp (PROFILE=short about 6 min, full longer; needs make up)
	$(BIN)/python -m tools.autoscale.proof $(if $(PROFILE),--profile $(PROFILE))
