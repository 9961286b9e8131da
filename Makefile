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

# Tests leave no system service enabled or listening. apt-install keeps the daemons of the
# packages it installs (nginx, mariadb) from starting, with a policy-rc.d that refuses
# them for the install (Debian's maintainer scripts, sysvinit and systemd alike, ask it),
# and disables them afterwards (apt enables them whatever the policy says). make test
# compares before and after: SERVICES enabled, anything listening on PORTS.
POLICY_RC_D ?= /usr/sbin/policy-rc.d
SYSTEMD_RUN ?= /run/systemd/system
SERVICES    := nginx mariadb
PORTS       := 80 443 3306
SERVICES_BEFORE ?= $(TOOLS)/services-before
SERVICES_AFTER  ?= $(TOOLS)/services-after

.PHONY: all build run test testdeps apt-install services-state services-check chaos bench fuzz lint clean

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

## test: every test of every module, with the race detector, against private MariaDB
## instances; then a check that no system service was left enabled or listening.
test:
	@mkdir -p $(TOOLS) && $(MAKE) --no-print-directory -s services-state > $(SERVICES_BEFORE)
	@$(MAKE) --no-print-directory testdeps
	@set -e; for m in $(MODULES); do \
		echo "go test ($$m)"; \
		$(GO) -C $$m test -race -count=1 -timeout 20m ./...; \
	done
	@$(MAKE) --no-print-directory -s services-state > $(SERVICES_AFTER)
	@$(MAKE) --no-print-directory -s services-check

# testdeps installs what the tests need on a fresh Debian machine: a C compiler for
# -race, mariadbd for the private database instances the tests start, chromium for the
# status page's browser test, nginx for the two-replica test (chaos/), systemd-analyze to
# verify deploy/wxlookup.service, and promtool (unpacked from Debian's prometheus package
# into .tools, so no Prometheus server is installed or started) to check deploy/alerts.yml.
# mariadb and nginx are installed through apt-install: neither is left enabled or running.
testdeps:
	@if ! command -v cc >/dev/null 2>&1; then \
		echo "make: no C compiler found (needed by go test -race): installing gcc with apt-get"; \
		$(MAKE) --no-print-directory apt-install PKGS="gcc libc6-dev"; \
	fi
	@if ! command -v mariadbd >/dev/null 2>&1 && [ ! -x /usr/sbin/mariadbd ]; then \
		echo "make: no mariadbd found (the tests start private instances): installing mariadb-server with apt-get"; \
		$(MAKE) --no-print-directory apt-install PKGS=mariadb-server DAEMONS=mariadb; \
	fi
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "make: no chromium found (the status page is tested in a headless browser): installing chromium with apt-get"; \
		$(MAKE) --no-print-directory apt-install PKGS=chromium; \
	fi
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
		echo "make: no nginx found (chaos/ runs two replicas behind it): installing nginx with apt-get"; \
		$(MAKE) --no-print-directory apt-install PKGS=nginx DAEMONS=nginx; \
	fi
	@if ! command -v systemd-analyze >/dev/null 2>&1; then \
		echo "make: no systemd-analyze found (verifies deploy/wxlookup.service): installing systemd with apt-get (no services started)"; \
		$(MAKE) --no-print-directory apt-install PKGS="--no-install-recommends systemd"; \
	fi
	@if ! command -v promtool >/dev/null 2>&1 && [ ! -x $(PROMTOOL) ]; then \
		echo "make: no promtool found (checks deploy/alerts.yml): unpacking Debian's prometheus package into .tools"; \
		mkdir -p $(TOOLS)/prometheus && cd $(TOOLS)/prometheus && \
		{ apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus; }; } && \
		dpkg-deb -x prometheus_*.deb . && rm -f prometheus_*.deb; \
	fi

# apt-install PKGS=… [DAEMONS=…]: apt-get install PKGS; the DAEMONS (services) they bring
# are neither started (a policy-rc.d that refuses, unless the machine has its own) nor left
# enabled (systemctl disable, with --now where systemd runs; update-rc.d without systemctl).
apt-install:
	@set -e; own_policy=; \
	if [ ! -e $(POLICY_RC_D) ]; then \
		printf '#!/bin/sh\n# wxlookup make testdeps: start no service during this install\nexit 101\n' > $(POLICY_RC_D); \
		chmod 0755 $(POLICY_RC_D); own_policy=1; \
	fi; \
	trap 'if [ -n "$$own_policy" ]; then rm -f $(POLICY_RC_D); fi' EXIT; \
	apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(PKGS); \
	for d in $(DAEMONS); do \
		if [ -d $(SYSTEMD_RUN) ]; then \
			echo "make: stopping and disabling $$d, which apt-get installed: the tests start their own"; \
			systemctl disable --now $$d; \
		elif command -v systemctl >/dev/null 2>&1; then \
			echo "make: disabling $$d, which apt-get installed (systemd does not run here, so it did not start)"; \
			systemctl disable $$d; \
		else \
			update-rc.d $$d disable; \
		fi; \
	done

# services-state prints, one a line, whether each of SERVICES is enabled and whether
# anything listens on each of PORTS (from /proc/net/tcp{,6}, so without ss or netstat).
services-state:
	@for s in $(SERVICES); do \
		st=$$(systemctl is-enabled $$s 2>/dev/null | head -n 1); \
		echo "enabled $$s $${st:-absent}"; \
	done
	@for p in $(PORTS); do \
		hex=$$(printf ':%04X' $$p); \
		if awk -v p=$$hex '$$4 == "0A" && substr($$2, length($$2) - 4) == p { found = 1 } END { exit !found }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; \
		then echo "listening $$p yes"; else echo "listening $$p no"; fi; \
	done

# services-check fails when SERVICES_AFTER shows a service enabled or a port listening that
# SERVICES_BEFORE did not.
services-check:
	@awk 'NR == FNR { before[$$1 " " $$2] = $$3; next } \
		($$1 == "enabled" && $$3 == "enabled" || $$1 == "listening" && $$3 == "yes") && before[$$1 " " $$2] != $$3 { \
			printf "make: after the tests, %s %s is %s; before them it was %s\n", $$1, $$2, $$3, before[$$1 " " $$2]; bad = 1 } \
		END { if (bad) { print "make: the tests left a system service enabled or listening"; exit 1 } }' \
		$(SERVICES_BEFORE) $(SERVICES_AFTER)

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
