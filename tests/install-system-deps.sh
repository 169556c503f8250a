#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium for the reader-page browser test,
# mricron-data (Colin27, a real head with skull, for the registration ground-truth test and
# bench/brain_extraction.py), and (via tests/slurm/install.sh) a single-node SLURM cluster for
# the cluster test.
# Idempotent: installs only what is missing; needs root (CI runs as root).
set -euo pipefail

packages=(chromium chromium-driver mricron-data)

missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "$(id -u)" -ne 0 ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Missing Debian packages: ${missing[*]}" >&2
        echo "Install them with: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    fi
    echo "Not root: the SLURM cluster test will be skipped (see tests/slurm/)." >&2
    exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash "$(dirname "$0")/slurm/install.sh"
