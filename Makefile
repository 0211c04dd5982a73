# lieutenant: `make test` installs what the tests need and runs them all.
GO      ?= go
BIN     := bin/lieutenant
PKGS    := ./...

# Debian packages the tests need: the real parts they start (HAProxy,
# OpenSSH, Git, sudo) and a C toolchain for the race detector (cgo).
TEST_DEPS := haproxy openssh-server openssh-client git sudo gcc libc6-dev

.PHONY: all build test deps check bench example clean

all: build

build: $(BIN)

$(BIN): $(shell find . -name '*.go' -not -path './bin/*') go.mod go.sum
	$(GO) build -trimpath -o $@ ./cmd/lieutenant

## deps: install the Debian packages the integration tests run (real HAProxy,
## OpenSSH, Git) when they are missing.
deps:
	@missing=""; \
	for pkg in $(TEST_DEPS); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" -ne 0 ]; then echo "need root to install$$missing: run 'sudo make deps'" >&2; exit 1; fi; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y --no-install-recommends $$missing || \
		{ apt-get update && apt-get install -y --no-install-recommends $$missing; }; \
	fi

## check: formatting and vet.
check:
	@unformatted=$$(gofmt -l $$(find . -name '*.go' -not -path './bin/*')); \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)

## test: everything, with the race detector; installs what it needs first.
test: deps check
	$(GO) test -race -count=1 $(PKGS)

## bench: planning, a rollout over SSH hosts, history commits.
bench: deps
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

## example: the README's example deploy repository as a Git repository in
## bin/example-deploy, validated and planned (offline: it has no real hosts).
EXAMPLE := $(CURDIR)/bin/example-deploy
example: $(BIN)
	rm -rf $(EXAMPLE) && mkdir -p $(EXAMPLE) && cp -R playbook/testdata/valid/. $(EXAMPLE)/
	cd $(EXAMPLE) && git init -q -b main && git add . && \
		git -c user.name=example -c user.email=example@example.invalid commit -q -m "example deploy repository"
	$(BIN) --repo $(EXAMPLE) validate
	$(BIN) --repo $(EXAMPLE) plan --env production --offline

clean:
	rm -rf bin
