#!/usr/bin/env bash
# Install the Debian packages of a single-node SLURM test cluster, if they are missing.
# Idempotent: a second call installs nothing and makes no network access.
# Needs root and apt (Debian 12: Slurm 22.05, munge 0.5, MariaDB 10.11).
set -euo pipefail

PACKAGES=(munge mariadb-server slurmdbd slurmctld slurmd slurm-client)

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    echo "slurm test cluster: packages already installed"
    exit 0
fi

if [[ $EUID -ne 0 ]]; then
    echo "slurm test cluster: installing ${missing[*]} needs root" >&2
    exit 2
fi

# Package scripts must not start daemons (there may be no init system, and start.sh
# owns the daemons' lifecycle); a policy-rc.d that denies starts is removed afterwards.
policy=/usr/sbin/policy-rc.d
own_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 0755 "$policy"
    own_policy=1
fi
cleanup() { if [[ $own_policy -eq 1 ]]; then rm -f "$policy"; fi; }
trap cleanup EXIT

echo "slurm test cluster: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Wait for another apt/dpkg run (unattended upgrades, a parallel job) instead of failing.
APT=(apt-get -o DPkg::Lock::Timeout=600)
"${APT[@]}" update -qq
"${APT[@]}" install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
echo "slurm test cluster: installed $(dpkg-query -W -f='${Version}' slurmctld) (slurm)," \
     "$(dpkg-query -W -f='${Version}' munge) (munge), $(dpkg-query -W -f='${Version}' mariadb-server) (mariadb)"
