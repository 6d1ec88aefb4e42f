# polytropon: `make demo` runs the main job, `make test` runs every test.
GO      ?= go
BIN     := bin/polytropon
COMMIT  := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
LDFLAGS := -X main.commit=$(COMMIT)
# Tests that run several processes and kernel paths at once: keep them from
# overloading a 2-core machine.
TESTFLAGS ?= -p 2 -timeout 20m

.PHONY: all build demo test deps lint vet test-race test-invariants bench clean nvme-test

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/polytropon

deps:
	bash scripts/install-deps.sh

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

test: deps lint vet test-race test-invariants nvme-test ceph-test

# drivers/nvme's passthrough and VFIO drivers on QEMU's emulated NVMe controller
# behind an emulated IOMMU (installs the guest kernel, busybox and QEMU with apt).
nvme-test:
	GO=$(GO) bash scripts/nvme/test.sh

# Ceph client tests against a one-node cluster started and stopped here.
.PHONY: ceph-test
ceph-test:
	GO=$(GO) bash scripts/ceph-test.sh

bench:
	$(GO) test -run '^$$' -bench . -benchmem -count 1 ./...

clean:
	rm -rf bin
