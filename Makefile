# The front door. `make up` creates the sandbox fleet; `make test` runs every test.
#   STACK=stacks/other.yaml  selects a stack (default: the sandbox, no credentials needed)
#   ARGS="--set policy.min_instances=5"  passes extra flags to fleet-cli

CARGO ?= cargo
STACK ?= stacks/sandbox.yaml
ARGS ?=
FLEET = $(CARGO) run --quiet -p fleet-cli --

.PHONY: all build demo preview plan up destroy refresh test lint fmt fuzz bench bench-policy bench-holdout bench-webhook clean

all: build

build:
	$(CARGO) build -p fleet-cli

# The whole loop on this machine: the GitLab simulator replays the busiest 1.5 h of a job
# trace at 60x while the fleet runs on the sandbox cloud; prints queue and fleet as it goes
# and a report at the end (about 90 s). TRACE=... picks another trace.
TRACE ?= stacks/traces/demo.csv
demo:
	FLEET_DEMO_TOKEN=$${FLEET_DEMO_TOKEN:-demo-token} $(FLEET) --stack stacks/demo.yaml demo --trace $(TRACE) $(ARGS)

preview:
	$(FLEET) preview --stack $(STACK) $(ARGS)

plan:
	$(FLEET) plan --stack $(STACK) $(ARGS)

# Applies what the preview shows without asking, as a timer-driven `make up` must.
up:
	$(FLEET) up --stack $(STACK) --yes $(ARGS)

# Asks for confirmation on a terminal; pass ARGS=--yes to skip.
destroy:
	$(FLEET) destroy --stack $(STACK) $(ARGS)

refresh:
	$(FLEET) refresh --stack $(STACK) $(ARGS)

# Installs cloud-init, systemd-analyze and libvirt with QEMU (apt-get, as root; libvirtd is
# started; the real-boot test builds the VM base image when it is not cached) and the test tools (moto,
# ansible-core, ansible-lint) into .venv, starts moto_server on a free port of
# 127.0.0.1 for the AWS tests (with the instance profile stacks/aws.yaml names), and stops
# it afterwards.
test:
	scripts/ensure-cloud-init
	scripts/ensure-systemd-analyze
	scripts/ensure-libvirt
	scripts/with-moto $(CARGO) test --workspace --locked
	$(CARGO) run --quiet -p fleet-core --example embed --features testing

# fleet-core reads no clock: its clippy.toml forbids Utc::now, SystemTime::now and
# Instant::now, and checked alone (no other crate's features unified in) chrono has no
# clock there, so a wall-clock call fails to build.
# scripts/ensure-libvirt: fleet-providers links libvirt (libvirt-dev), and the libvirt
# tests talk to a running libvirtd.
lint:
	scripts/ensure-libvirt
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) check -p fleet-core --lib --locked

fmt:
	$(CARGO) fmt --all

# fuzz and bench-webhook name the same packages, so cargo resolves the same features (tokio's
# test-util comes from fleet-cli's dev-dependencies) and they share one release build.
RELEASE_PKGS = -p fleet-core -p fleet-providers -p fleet-cli

# The property tests of the stack loader and the webhook check, FUZZ_CASES cases each
# (make test runs 2,000 each), in the release profile.
FUZZ_CASES ?= 1000000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --release --locked $(RELEASE_PKGS) --test fuzz_stack --test fuzz_webhook

bench:
	$(CARGO) bench -p fleet-core --bench plan -- --noplot
	$(CARGO) bench -p fleet-core --bench plan_memory
	$(CARGO) build --release -p fleet-cli
	scripts/with-moto scripts/bench-aws
	$(MAKE) bench-policy

# Every scaling policy over the traces in ../shared/traces (the demo trace when that folder
# is missing), swept for the cheapest cost with p95 wait <= 60 s; prints the table that
# BENCHMARKS.md records.
TRACES ?= $(shell ls $(abspath ../shared/traces)/*.csv 2>/dev/null | tr '\n' ':')
bench-policy:
	FLEET_TRACES="$(if $(TRACES),$(TRACES),$(CURDIR)/stacks/traces/demo.csv)" FLEET_TARGET_P95=60 \
		$(CARGO) bench -p fleet-core --bench simulate

# The same benchmark on hold-out traces: projects drawn at random (fixed seeds) from the
# shared traces, real demand the policy was not tuned on. Not part of make bench.
HOLDOUT_DIR ?= $(or $(CARGO_TARGET_DIR),target)/holdout
bench-holdout:
	mkdir -p $(HOLDOUT_DIR)
	scripts/sample-trace ../shared/traces/travis-all-2019-10-01_15.csv 60 1 $(HOLDOUT_DIR)/all-60p-seed1.csv
	scripts/sample-trace ../shared/traces/travis-all-2019-10-01_15.csv 60 2 $(HOLDOUT_DIR)/all-60p-seed2.csv
	scripts/sample-trace ../shared/traces/travis-org60-2019-10.csv 20 5 $(HOLDOUT_DIR)/org60-20p-seed5.csv
	scripts/sample-trace ../shared/traces/travis-org60-2019-10.csv 30 6 $(HOLDOUT_DIR)/org60-30p-seed6.csv
	FLEET_TRACES="$$(ls $(abspath $(HOLDOUT_DIR))/*.csv | tr '\n' ':')" FLEET_TARGET_P95=60 \
		$(CARGO) bench -p fleet-core --bench simulate

# 1,000 signed job webhooks a second for 30 s against `fleet-cli serve` on the sandbox, in
# the release profile: answer latency percentiles, reconciles caused, most in flight at once.
bench-webhook:
	$(CARGO) test --release --locked $(RELEASE_PKGS) --bench webhook_load -- 1000 30

clean:
	$(CARGO) clean
	rm -rf stacks/.fleet
