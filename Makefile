# lieutenant: `make test` installs what the tests need and runs them all.
GO      ?= go
BIN     := bin/lieutenant
PKGS    := ./...

# Debian packages the tests need: the real parts they start (HAProxy,
# OpenSSH, Git, sudo) and a C toolchain for the race detector (cgo).
TEST_DEPS := haproxy openssh-server openssh-client git sudo gcc libc6-dev rpm debootstrap

.PHONY: all build test deps check fuzz bench example images demo fleet-down clean

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

## test: everything, with the race detector, the end-to-end tests on the
## docker-compose fleet included; installs and builds what it needs first.
test: deps check
	testenv/fleet/build-images --if-docker
	$(GO) test -race -count=1 -timeout 20m $(PKGS)
	FUZZTIME=5s testenv/fuzz/run

## fuzz: every fuzz target for FUZZTIME each (5s in `make test`; the README's
## long run used FUZZTIME=1000000x); a crasher is saved as a regression test.
fuzz:
	FUZZTIME=$(or $(FUZZTIME),5s) testenv/fuzz/run

## images: the fleet's images and the demo service's RPMs (no registry
## needed: the base image is made with debootstrap when it cannot be pulled).
images:
	testenv/fleet/build-images

## demo: bring the fleet up and roll a release out on it under load
## (HOSTS=6 for more app hosts).
HOSTS ?= 4
demo: deps build images
	$(GO) run ./testenv/fleet/demo -bin $(BIN) -dir .fleet -hosts $(HOSTS)

## fleet-down: remove the demo fleet, and test fleets a killed test left.
fleet-down:
	$(GO) run ./testenv/fleet/demo -down -dir .fleet
	@leftover=$$(docker ps -aq --filter label=com.docker.compose.project 2>/dev/null | \
		xargs -r docker inspect -f '{{index .Config.Labels "com.docker.compose.project"}}' | grep '^lt-' | sort -u); \
	for p in $$leftover; do \
		echo "removing test fleet $$p"; \
		docker ps -aq --filter label=com.docker.compose.project=$$p | xargs -r docker rm -f >/dev/null; \
		docker network ls -q --filter label=com.docker.compose.project=$$p | xargs -r docker network rm >/dev/null; \
	done

## bench: every benchmark (see the README's Performance section): the small
## ones for Go's default time, the rollouts (the docker fleet against the
## floor script, 1,000 simulated hosts, HAProxy's enables) 4 times each.
ROLLOUTS := BenchmarkFleetVsFloor|BenchmarkRollout1000|BenchmarkHAProxyEnable
bench: deps
	testenv/fleet/build-images --if-docker
	$(GO) test -run '^$$' -bench . -skip '$(ROLLOUTS)' -benchmem $(PKGS)
	$(GO) test -run '^$$' -bench '$(ROLLOUTS)' -benchtime 4x -timeout 60m ./lb/ ./cmd/lieutenant/

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
