#!/usr/bin/env bash
# Installs the Debian packages listed in scripts/apt-packages.txt that are missing.
# Idempotent: when everything is present it makes no network access at all.
# Runs `apt-get update` at most once per call, and only when something is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
list=${1:-$here/apt-packages.txt}

missing=()
while read -r pkg _; do
	[[ -z "$pkg" || "$pkg" == \#* ]] && continue
	if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
		missing+=("$pkg")
	fi
done <"$list"

if ((${#missing[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: missing Debian packages: ${missing[*]} (run as root, or install them yourself)" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
