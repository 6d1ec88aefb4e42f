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
# Ports of our own for the monitor: a Ceph host, or another ceph-test on this
# machine, may hold the defaults (3300, 6789).
if [[ -z "${MON_V2_PORT:-}" || -z "${MON_V1_PORT:-}" ]]; then
	read -r MON_V2_PORT MON_V1_PORT < <(python3 -c '
import socket
s = [socket.socket() for _ in range(2)]
for x in s:
    x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])')
	export MON_V2_PORT MON_V1_PORT
fi
trap 'bash scripts/ceph-dev-cluster.sh down "$POLYTROPON_CEPH_DIR" || true; rm -rf "$POLYTROPON_CEPH_DIR"' EXIT
eval "$(bash scripts/ceph-dev-cluster.sh up "$POLYTROPON_CEPH_DIR")"
"$GO" vet -tags ceph,pacific ./libservices/cephfs/ ./blockdev/rbd/ ./perf/pathperf/
# -p 1: the packages share one cluster and restart its OSD.
"$GO" test -tags ceph,pacific -race -p 1 -count=1 -timeout 20m ./libservices/cephfs/ ./blockdev/rbd/ "$@"
"$GO" test -tags ceph,pacific -race -count=1 -timeout 10m -run 'TestCephFSBackend' ./perf/pathperf/ "$@"
