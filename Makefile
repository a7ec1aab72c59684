# stromatekt — the two set-up commands are `make demo` and `make test`.
CARGO ?= cargo
SHARED ?= ../shared

.PHONY: all deps build demo test lint bench clean

all: build

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --release --workspace

demo: build
	./target/release/stromatekt version
	@echo "demo: the end-to-end build of examples/hello is not implemented yet (issue 4);"
	@echo "demo: see README.md, section Status."

test: deps
	@test -d $(SHARED)/compat/buildkit || { echo "test: $(SHARED)/compat is missing (the conformance fixtures)"; exit 1; }
	$(CARGO) test --workspace

lint:
	$(CARGO) clippy --workspace --all-targets

clean:
	$(CARGO) clean
