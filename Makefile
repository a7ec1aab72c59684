# stromatekt — the two set-up commands are `make demo` and `make test`.
CARGO ?= cargo
SHARED ?= ../shared

.PHONY: all deps build demo test fuzz compat lint bench clean modern-docker

all: build

deps:
	./scripts/install-deps.sh
	./scripts/seed-crate.sh

build: deps
	$(CARGO) build --release --workspace

DEMO ?= $(CURDIR)/target/demo

# Builds examples/hello on the embedded store (/var/lib/stromatekt, a
# loop-mounted btrfs image when that directory is not on btrfs) into an OCI
# layout, then runs its CMD with runc to show it works.
demo: build
	./scripts/busybox-oci.sh $(DEMO)/busybox
	./target/release/stromatekt build -f examples/hello/Dockerfile \
	  --build-arg BASE=oci-layout://$(DEMO)/busybox:latest \
	  -t hello -o type=oci,dest=$(DEMO)/hello-oci examples/hello
	rm -rf $(DEMO)/bundle
	umoci unpack --image $(DEMO)/hello-oci:latest $(DEMO)/bundle >/dev/null
	jq '.process.terminal=false' $(DEMO)/bundle/config.json > $(DEMO)/bundle/config.tmp && mv $(DEMO)/bundle/config.tmp $(DEMO)/bundle/config.json
	cd $(DEMO)/bundle && runc run demo-hello-$$$$ < /dev/null
	rm -rf $(DEMO)/bundle
	@echo
	@echo "demo: the image is the OCI layout $(DEMO)/hello-oci (tag latest)."
	@echo "demo: run it:  umoci unpack --image $(DEMO)/hello-oci:latest bundle && cd bundle && runc run hello (a terminal is needed: umoci sets process.terminal)"
	@echo "demo: or copy it: skopeo copy oci:$(DEMO)/hello-oci:latest docker-archive:hello.tar (then docker load < hello.tar)"

# The compat reference is today's Docker (shared/modern-docker: dockerd 28.5's
# BuildKit, buildx 0.29), set up by its up.sh (installed once per machine,
# then only started): under CI a failure to bring it up fails the run.
MODERN_DOCKER ?= $(SHARED)/modern-docker

modern-docker:
	@$(MODERN_DOCKER)/up.sh || { if [ "$$CI" = true ]; then echo "test: the modern Docker (the compat reference) did not come up: $(MODERN_DOCKER)/up.sh failed"; exit 1; fi; echo "test: warning: $(MODERN_DOCKER)/up.sh failed; the compat test cannot run"; }

# A test that cannot run (not root, a tool missing) fails, naming what is
# missing. STROMATEKT_ALLOW_SKIP=1 (a machine without root) makes it a skip
# instead, logged to $(SKIP_LOG) and summarised at the end; never under CI=true.
SKIP_LOG ?= $(CURDIR)/target/test-skips.txt

test: deps modern-docker
	@test -d $(SHARED)/compat/buildkit || { echo "test: $(SHARED)/compat is missing (the conformance fixtures)"; exit 1; }
	@mkdir -p $(dir $(SKIP_LOG)) && rm -f $(SKIP_LOG)
	STROMATEKT_SHARED=$(abspath $(SHARED)) STROMATEKT_CHECK_CHANGES=1 STROMATEKT_SKIP_LOG=$(SKIP_LOG) $(CARGO) test --workspace --no-fail-fast; \
	  rc=$$?; ./scripts/skip-summary.sh $(SKIP_LOG); exit $$rc
	./fuzz/run.sh -n $(FUZZ_RUNS)

# Every fuzz target (fuzz/fuzz_targets) for FUZZ_RUNS executions; `make test`
# does a short run. Long runs: FUZZ_RUNS=10000000 make fuzz.
FUZZ_RUNS ?= 20000
fuzz: deps
	./fuzz/run.sh -n $(FUZZ_RUNS)

# Times stromatekt against today's BuildKit (the modern Docker), Docker 20.10's
# BuildKit, the legacy builder and buildah
# (bench/bench.py; BENCH_N=runs per cell, default 3). Writes bench/results.md
# and bench/results.tsv.
bench: deps modern-docker
	$(CARGO) build --release
	python3 bench/bench.py $(if $(BENCH_N),-n $(BENCH_N))
	./scripts/install-ocinoco.sh
	python3 bench/push.py $(if $(BENCH_N),-n $(BENCH_N))
	python3 bench/ci.py $(if $(BENCH_N),-n $(BENCH_N))
	$(CARGO) bench --bench transfer

# The docker-build comparison alone (also part of `make test`): every case in
# compat-tests/cases built by stromatekt, by today's BuildKit and by docker
# 20.10's legacy builder.
compat: deps modern-docker
	STROMATEKT_SHARED=$(abspath $(SHARED)) STROMATEKT_CHECK_CHANGES=1 $(CARGO) test --test compat -- --nocapture

lint:
	$(CARGO) clippy --workspace --all-targets

clean:
	$(CARGO) clean
