# polytropon: `make demo` runs the main job, `make test` runs every test.
GO      ?= go
BIN     := bin/polytropon
COMMIT  := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS := -X main.commit=$(COMMIT)
# -count=1: every run runs the tests; go never replays a pass from its cache.
# -p 2: tests that run several processes and kernel paths at once keep a
# 2-core machine from overloading.
TESTFLAGS ?= -count=1 -p 2 -timeout 20m
# Every package list the tests need: the Go suites', nvme-test's, ceph-test's.
TEST_APT := scripts/apt-packages.txt scripts/nvme/apt-packages.txt scripts/apt-packages-ceph.txt

.PHONY: all build demo test deps test-deps lint vet test-go test-race test-invariants bench clean nvme-test ceph-test $(addprefix timed-,$(SUITES))

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/polytropon

deps:
	bash scripts/install-deps.sh

# All of make test's packages in one apt run, before its suites start side by
# side (two apt runs at once would wait on each other's lock).
test-deps:
	bash scripts/install-deps.sh $(TEST_APT)

demo: deps build
	$(BIN) demo

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) test -count=1 ./internal/lint

vet:
	$(GO) vet ./...
	$(GO) vet -tags purego ./...

test-race:
	$(GO) test -race $(TESTFLAGS) ./...

test-invariants:
	$(GO) test -tags invariants $(TESTFLAGS) ./...

# The two Go suites one after the other: side by side they would double the
# load of tests that already run several processes per test on 2 cores.
test-go:
	@$(MAKE) --no-print-directory test-race
	@$(MAKE) --no-print-directory test-invariants

# make test: the Go suites beside nvme-test (mostly a QEMU guest booting) and
# ceph-test (mostly a cluster starting and waiting), which leave the CPUs idle
# for long stretches. Each suite's output is printed as one block when it
# ends, with its time; make test fails if any failed, once all have ended.
# TEST_JOBS=1 runs them one after another.
TEST_JOBS ?= 3
SUITES := test-go nvme-test ceph-test
test: test-deps lint vet
	@echo "make test: $(SUITES) side by side; each prints its output when it ends (the Go suites last, about 10-15 minutes)"
	@$(MAKE) --no-print-directory -j$(TEST_JOBS) --output-sync=target --keep-going $(addprefix timed-,$(SUITES))

timed-%:
	@start=$$(date +%s); rc=0; $(MAKE) --no-print-directory $* || rc=$$?; \
	  echo "make test: $* $$( [ $$rc = 0 ] && echo passed || echo FAILED ) in $$(( $$(date +%s) - start )) s"; exit $$rc

# drivers/nvme's passthrough and VFIO drivers on QEMU's emulated NVMe controller
# behind an emulated IOMMU (installs the guest kernel, busybox and QEMU with apt).
nvme-test:
	GO=$(GO) bash scripts/nvme/test.sh

# Ceph client tests against a one-node cluster started and stopped here.
ceph-test:
	GO=$(GO) bash scripts/ceph-test.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./...

clean:
	rm -rf bin
