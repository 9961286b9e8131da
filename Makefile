# wxlookup — see README.md. Two set-up commands: `make run` and `make test`.

GO        ?= go
BIN       := bin/wxlookup
TOOLS     := $(CURDIR)/.tools
STATICCHECK_VERSION := v0.8.2
FUZZTIME  ?= 20s
PROMTOOL  := $(TOOLS)/prometheus/usr/bin/promtool
export PROMTOOL
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)

.PHONY: all build run test testdeps chaos bench fuzz lint clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/wxlookup

## run: the responder on the embedded demo data (token "demo", http://127.0.0.1:8080/wx).
run: build
	./$(BIN) serve

# MODULES are the Go modules of the tree: the product, and the harness in two modules of
# its own (bench/: load harness and baselines; chaos/: fault tests), so that the harness's
# dependencies stay out of the product's go.mod.
MODULES   := . bench chaos

## test: every test of every module, with the race detector, against private MariaDB instances.
test: testdeps
	@set -e; for m in $(MODULES); do \
		echo "go test ($$m)"; \
		$(GO) -C $$m test -race -count=1 -timeout 20m ./...; \
	done

# testdeps installs what the tests need on a fresh Debian machine: a C compiler for
# -race, mariadbd for the private database instances the tests start, chromium for the
# status page's browser test, nginx for the two-replica test (chaos/), and promtool
# (unpacked from Debian's prometheus package into .tools, so no Prometheus server is
# installed or started) to check deploy/alerts.yml.
testdeps:
	@if ! command -v cc >/dev/null 2>&1; then \
		echo "make: no C compiler found (needed by go test -race): installing gcc with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev; \
	fi
	@if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then \
		echo "make: no mariadbd found (the tests start private instances): installing mariadb-server with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "make: no chromium found (the status page is tested in a headless browser): installing chromium with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		echo "make: no nginx found (chaos/ runs two replicas behind it): installing nginx with apt-get"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; \
	fi
	@if ! command -v promtool >/dev/null 2>&1 && [ ! -x $(PROMTOOL) ]; then \
		echo "make: no promtool found (checks deploy/alerts.yml): unpacking Debian's prometheus package into .tools"; \
		mkdir -p $(TOOLS)/prometheus && cd $(TOOLS)/prometheus && \
		{ apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb; \
	fi

## chaos: the fault tests of chaos/ in their long form (10 MySQL kill cycles, …), without
## the race detector, printing the figures docs/OPERATIONS.md records. make test runs them
## short, with -race.
chaos: testdeps
	CHAOS_LONG=1 $(GO) -C chaos test -count=1 -timeout 20m -v ./ 2>&1 | tee chaos.out | grep -E '^(---|ok|FAIL|PASS)|FIGURES'
	@! grep -q -E '^(--- )?FAIL' chaos.out

## bench: the load harness of SPEC section 8; writes docs/BENCH.md and docs/bench.png.
bench: testdeps
	$(GO) -C bench build -o $(CURDIR)/bin/wxbench ./cmd/wxbench
	./bin/wxbench -out docs

## fuzz: every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

## lint: go vet and staticcheck (installed into .tools on first use).
lint:
	@test -x $(TOOLS)/staticcheck || GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	@set -e; for m in $(MODULES); do \
		$(GO) -C $$m vet ./...; \
		(cd $$m && $(TOOLS)/staticcheck ./...); \
	done

clean:
	rm -rf bin
