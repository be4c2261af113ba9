#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the Slurm launcher's test (tests/slurm.sh):
#
#   scripts/slurm_cluster.sh start    # install Debian's slurm packages if needed, start munge,
#                                     # slurmctld and slurmd (configless), wait until the node is idle
#   scripts/slurm_cluster.sh stop     # stop the daemons (the packages stay)
#
# Needs root (it installs packages and writes /etc/slurm). The node offers this machine's CPUs
# (at most ICRL_SLURM_CPUS, default 2); state lives under /var/spool/icrl-slurm and is reset by
# `start`, so every test starts from an empty queue.
set -euo pipefail
cmd="${1:-start}"
state=/var/spool/icrl-slurm
conf=/etc/slurm/slurm.conf
host="$(hostname -s)"

stop() {
    for d in slurmd slurmctld; do
        if pkill -x "$d" 2>/dev/null; then
            for _ in $(seq 50); do pgrep -x "$d" >/dev/null || break; sleep 0.1; done
        fi
    done
}

if [ "$cmd" = stop ]; then
    stop
    exit 0
fi
if [ "$cmd" != start ]; then
    echo "usage: $0 start|stop" >&2
    exit 2
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: $0 needs root (it installs slurm and starts its daemons)" >&2
    exit 2
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v munged >/dev/null || ! command -v sbatch >/dev/null; then
    echo "installing slurmctld, slurmd, munge and the client commands from Debian" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd munge slurm-client >&2
fi

# munge authenticates slurmd to slurmctld; one key for the one node.
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null >/dev/null 2>&1; then
    pkill -x munged 2>/dev/null || true
    su -s /bin/sh munge -c /usr/sbin/munged
    for _ in $(seq 50); do munge -n </dev/null >/dev/null 2>&1 && break; sleep 0.1; done
fi

cpus=$(nproc)
cpus=$(( cpus < ${ICRL_SLURM_CPUS:-2} ? cpus : ${ICRL_SLURM_CPUS:-2} ))
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))

stop
rm -rf "$state"
mkdir -p "$state/ctld" "$state/d" /etc/slurm /var/log/slurm
chown -R slurm:slurm "$state/ctld" /var/log/slurm
cat >"$conf" <<CONF
# Written by icrl's scripts/slurm_cluster.sh: a one-node test cluster.
ClusterName=icrl-test
SlurmctldHost=$host
SlurmctldParameters=enable_configless
AuthType=auth/munge
SlurmUser=slurm
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/d
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
JobRequeue=1
MpiDefault=none
KillWait=30
SchedulerParameters=bf_interval=1
MinJobAge=600
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

/usr/sbin/slurmctld -i
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
# Configless: slurmd fetches slurm.conf from slurmctld instead of reading a local copy.
/usr/sbin/slurmd --conf-server "$host"
for _ in $(seq 150); do
    if sinfo -h -N -o '%t' 2>/dev/null | grep -qx idle; then
        echo "slurm: one node '$host' with $cpus CPUs is up (partition debug)"
        exit 0
    fi
    sleep 0.2
done
echo "error: the slurm node did not come up; see /var/log/slurm/*.log" >&2
sinfo -N >&2 || true
exit 1
