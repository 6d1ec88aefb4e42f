#!/usr/bin/env bash
# Installs the Debian packages listed in the given files (default:
# scripts/apt-packages.txt) that are missing, all in one apt run.
# Idempotent: when everything is present it makes no network access at all.
# Runs `apt-get update` at most once per call, and only when something is missing.
# `make test` passes every list at once, so that the suites it then runs side
# by side never wait for apt's lock or install anything themselves.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(($# > 0)) || set -- "$here/apt-packages.txt"

missing=()
for list in "$@"; do
	while read -r pkg _; do
		[[ -z "$pkg" || "$pkg" == \#* ]] && continue
		[[ " ${missing[*]-} " == *" $pkg "* ]] && continue
		if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
			missing+=("$pkg")
		fi
	done <"$list"
done

if ((${#missing[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or install them yourself)" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Another apt run (unattended-upgrades on a fresh machine) may hold the lock:
# wait for it rather than fail.
apt-get -o DPkg::Lock::Timeout=300 update -qq
apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
