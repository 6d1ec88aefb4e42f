#!/usr/bin/env bash
# A one-node Ceph (Pacific 16.2) cluster on loopback for polytropon's Ceph tests and
# for users who want to try the cephfs and rbd libservices: one mon, one mgr, one
# memstore OSD, one MDS, a CephFS named "cephfs", an "rbd" pool, cephx on, no
# systemd and nothing under /etc/ceph. Everything (conf, keyrings, data, logs, pid
# files) lives in the state directory.
#
# Usage: scripts/ceph-dev-cluster.sh up|down|status|env|restart-osd|restart-mon [STATE_DIR]
#   up           a fresh cluster (STATE_DIR is wiped), then prints the env lines
#   down         stops the daemons by pid (SIGTERM, SIGKILL after 30 s)
#   status       `ceph status` of the running cluster
#   env          prints `export POLYTROPON_CEPH_*=...` lines for the tests
#   restart-osd  stops osd.0 cleanly and starts it again on the same data
#   restart-mon  the same for mon.a
# STATE_DIR defaults to $POLYTROPON_CEPH_DIR, else /tmp/polytropon-ceph.
# Env: MON_V2_PORT (3300), MON_V1_PORT (6789).
#
# The OSD is a memstore: fast, no disk, and its data survives a restart only when
# it shuts down cleanly, so "osd fast shutdown = false" below is what makes
# restart-osd keep every acknowledged write.
set -euo pipefail
cmd=${1:-}
BASE=$(realpath -m "${2:-${POLYTROPON_CEPH_DIR:-/tmp/polytropon-ceph}}")
V2=${MON_V2_PORT:-3300}; V1=${MON_V1_PORT:-6789}
CONF=$BASE/ceph.conf
CLIENT=libservice
T0=$(date +%s.%N)
ts() { awk -v t0="$T0" -v now="$(date +%s.%N)" -v m="$*" 'BEGIN{printf "ceph-dev-cluster [%5.1fs] %s\n", now-t0, m}' >&2; }
C() { timeout 60 ceph -c "$CONF" -n client.admin "$@"; }

usage() { sed -n '8,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

stop_one() { # name
	local f=$BASE/run/$1.pid pid
	[ -f "$f" ] || return 0
	pid=$(cat "$f")
	if kill -TERM "$pid" 2>/dev/null; then
		for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			echo "ceph-dev-cluster: $1 ($pid) did not stop in 30 s, SIGKILL" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
		ts "$1 ($pid) stopped"
	fi
	rm -f "$f"
}

down() {
	[ -d "$BASE/run" ] || return 0
	for n in mds.a osd.0 mgr.x mon.a; do stop_one "$n"; done
}

# wait_healthy waits until the OSD is up, every PG active+clean and the MDS active.
wait_healthy() {
	local s
	for _ in $(seq 1 240); do
		s=$(C status --format json 2>/dev/null || true)
		if echo "$s" | python3 -c '
import sys, json
d = json.load(sys.stdin)
p = d["pgmap"]
ok = d["osdmap"]["num_up_osds"] == 1
ok = ok and p["num_pgs"] > 0 and all(x["state_name"] == "active+clean" for x in p["pgs_by_state"])
ok = ok and any(x.get("status") == "up:active" for x in d["fsmap"].get("by_rank", []))
sys.exit(0 if ok else 1)' 2>/dev/null; then
			ts "osd up, all PGs active+clean, MDS active"
			return 0
		fi
		sleep 0.5
	done
	echo "ceph-dev-cluster: the cluster did not become healthy in 120 s; logs in $BASE/log" >&2
	C -s >&2 || true
	return 1
}

print_env() {
	cat <<EOT
export POLYTROPON_CEPH_CONF=$CONF
export POLYTROPON_CEPH_ID=$CLIENT
export POLYTROPON_CEPH_KEYRING=$BASE/ceph.client.$CLIENT.keyring
export POLYTROPON_CEPH_DIR=$BASE
EOT
}

up() {
	# stdout carries only the env lines (for eval); the daemons' chatter goes to stderr
	start_fresh >&2
	print_env
}

start_fresh() {
	down
	rm -rf "$BASE"
	mkdir -p "$BASE"/{run,log,crash,mon,mgr/x,osd/0,mds/a}
	local fsid
	fsid=$(uuidgen)
	cat >"$CONF" <<EOT
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$V2,v1:127.0.0.1:$V1]
public addr = 127.0.0.1
public network = 127.0.0.0/8
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
run dir = $BASE/run
pid file = $BASE/run/\$name.pid
admin socket = $BASE/run/\$name.asok
log file = $BASE/log/\$name.log
crash dir = $BASE/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
mon osd down out interval = 0
mon warn on osd down out interval zero = false
auth allow insecure global id reclaim = false
mon warn on insecure global id reclaim allowed = false
[mon]
mon data = $BASE/mon/\$id
# outside the mon data dir: --mkfs refuses a non-empty one
keyring = $BASE/mon/\$id/keyring
mon cluster log file = $BASE/log/cluster.log
[mgr]
mgr data = $BASE/mgr/\$id
keyring = $BASE/mgr/\$id/keyring
mgr initial modules = status
[osd]
osd data = $BASE/osd/\$id
keyring = $BASE/osd/\$id/keyring
osd objectstore = memstore
# memstore saves its data only on a clean umount, which fast shutdown skips
osd fast shutdown = false
memstore device bytes = 2147483648
osd op num shards = 1
osd op num threads per shard = 2
[mds]
mds data = $BASE/mds/\$id
keyring = $BASE/mds/\$id/keyring
mds cache memory limit = 134217728
[client]
keyring = $BASE/\$cluster.\$name.keyring
log file = $BASE/log/\$name.log
admin socket = $BASE/run/\$name.\$pid.asok
EOT
	ts "conf written (fsid $fsid)"
	ceph-authtool -C "$BASE/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
	ceph-authtool -C "$BASE/ceph.client.admin.keyring" --gen-key -n client.admin \
		--cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
	ceph-authtool "$BASE/mon.keyring" --import-keyring "$BASE/ceph.client.admin.keyring" >/dev/null
	monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$V2,v1:127.0.0.1:$V1]" "$BASE/monmap" >/dev/null
	ceph-mon -c "$CONF" --mkfs -i a --monmap "$BASE/monmap" --keyring "$BASE/mon.keyring"
	ceph-mon -c "$CONF" -i a
	C -s >/dev/null
	ts "mon.a answering"
	C mon enable-msgr2 >/dev/null 2>&1 || true

	C auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$BASE/mgr/x/keyring"
	ceph-mgr -c "$CONF" -i x
	ts "mgr.x started"

	local uuid id
	uuid=$(uuidgen)
	id=$(C osd new "$uuid")
	# --no-mon-config: mkfs must not ask the monitor for config it cannot auth to yet
	ceph-osd -c "$CONF" -i "$id" --mkfs --mkkey --osd-uuid "$uuid" --no-mon-config >"$BASE/log/osd-mkfs.log" 2>&1 ||
		{ cat "$BASE/log/osd-mkfs.log" >&2; exit 1; }
	C auth add "osd.$id" osd 'allow *' mon 'allow profile osd' mgr 'allow profile osd' -i "$BASE/osd/$id/keyring" >/dev/null
	ceph-osd -c "$CONF" -i "$id"
	ts "osd.$id (memstore) started"

	C osd pool create cephfs_metadata 8 8 >/dev/null
	C osd pool create cephfs_data 8 8 >/dev/null
	C fs new cephfs cephfs_metadata cephfs_data >/dev/null
	C auth get-or-create mds.a mon 'allow profile mds' osd 'allow rwx' mds 'allow' mgr 'allow profile mds' -o "$BASE/mds/a/keyring"
	ceph-mds -c "$CONF" -i a
	ts "mds.a started"
	C osd pool create rbd 8 8 >/dev/null
	timeout 60 rbd -c "$CONF" -n client.admin pool init rbd
	ts "pools created"

	# The tests' client: CephFS rw, rados and rbd on the rbd pool.
	C auth get-or-create client.$CLIENT \
		mon 'allow r, allow command "osd blocklist"' mds 'allow rw' mgr 'allow r' \
		osd 'allow rw tag cephfs data=cephfs, allow rwx pool=cephfs_data, allow rwx pool=rbd' \
		-o "$BASE/ceph.client.$CLIENT.keyring"
	wait_healthy
}

restart() { # daemon type, id
	local name=$1.$2
	[ -f "$BASE/run/$name.pid" ] || { echo "ceph-dev-cluster: $name is not running (no $BASE/run/$name.pid)" >&2; exit 1; }
	stop_one "$name"
	"ceph-$1" -c "$CONF" -i "$2"
	ts "$name started again"
	wait_healthy
}

case "$cmd" in
up) up ;;
down) down ;;
status) [ -f "$CONF" ] || { echo "ceph-dev-cluster: no cluster in $BASE" >&2; exit 1; }; C -s ;;
env) [ -f "$CONF" ] || { echo "ceph-dev-cluster: no cluster in $BASE" >&2; exit 1; }; print_env ;;
restart-osd) restart osd 0 ;;
restart-mon) restart mon a ;;
*) usage ;;
esac
