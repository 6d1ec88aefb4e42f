#!/usr/bin/env bash
# `make ceph-test`: installs Ceph's packages, starts the one-node cluster of
# scripts/ceph-dev-cluster.sh in a fresh state directory, runs the Ceph-backed
# tests with -tags ceph,pacific (race detector on: cgo and -race work together
# here), and stops the cluster whatever happens (trap).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
bash scripts/install-deps.sh scripts/apt-packages-ceph.txt
export POLYTROPON_CEPH_DIR=${POLYTROPON_CEPH_DIR:-$(mktemp -d /tmp/polytropon-ceph-test.XXXXXX)}
trap 'bash scripts/ceph-dev-cluster.sh down "$POLYTROPON_CEPH_DIR" || true; rm -rf "$POLYTROPON_CEPH_DIR"' EXIT
eval "$(bash scripts/ceph-dev-cluster.sh up "$POLYTROPON_CEPH_DIR")"
"$GO" vet -tags ceph,pacific ./libservices/cephfs/ ./blockdev/rbd/ ./perf/pathperf/
# -p 1: the packages share one cluster and restart its OSD.
"$GO" test -tags ceph,pacific -race -p 1 -count=1 -timeout 20m ./libservices/cephfs/ ./blockdev/rbd/ "$@"
"$GO" test -tags ceph,pacific -race -count=1 -timeout 10m -run 'TestCephFSBackend' ./perf/pathperf/ "$@"
