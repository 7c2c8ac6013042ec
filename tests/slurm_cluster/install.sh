#!/usr/bin/env bash
# Installs the Debian packages a one-node Slurm cluster with accounting needs.
# Idempotent, and returns at once when everything is already installed.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"

# eatmydata: MariaDB without fsync starts in 1 s instead of 4-5 s here.
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server eatmydata)
# Commands start.sh uses; if all are there, there is nothing to do.
COMMANDS=(slurmctld slurmd slurmdbd sbatch sacct sacctmgr scontrol squeue scancel
          munged munge unmunge mariadbd mariadb-install-db mariadb-admin mariadb eatmydata
          runuser setsid)

missing=()
for c in "${COMMANDS[@]}"; do
    command -v "$c" >/dev/null 2>&1 || missing+=("$c")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
echo "[cgb-slurm] installing ${PACKAGES[*]} (missing: ${missing[*]})" >&2

if [[ $(id -u) -ne 0 ]]; then
    echo "[cgb-slurm] install.sh must run as root (apt-get install)" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Keep the packages' postinst from starting their daemons (through init.d or
# systemd): start.sh runs its own, with its own configs.
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi

apt_install() {
    # Wait for a concurrent apt/dpkg instead of failing on its lock.
    apt-get install -y -q --no-install-recommends \
        -o DPkg::Lock::Timeout=300 "${PACKAGES[@]}"
}
# A fresh machine may have no package lists, an old one stale ones: update
# only when the install fails, so the common case stays fast.
if ! apt_install; then
    apt-get update -q -o DPkg::Lock::Timeout=300
    apt_install
fi
