#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (for CI and for trying
# `resnorm study --executor slurm` locally): munged, slurmctld and slurmd, one partition
# `debug` with this machine's CPUs and 2 fake GPUs, no accounting database.
#
#   sudo scripts/slurm/up.sh      # idempotent: a cluster that answers is left as it is
#   sinfo                         # debug* up infinite 1 idle <host>
#   sudo scripts/slurm/down.sh    # stops the daemons (packages and config stay)
#
# Needs root and Debian's packages (installed here with apt-get when missing). Exits
# non-zero, with one line saying why, where no cluster can be started; the SLURM tests then
# skip. The fake GPUs are /dev/tty0 and /dev/tty1: gres needs character devices, and
# SLURM sets CUDA_VISIBLE_DEVICES from them as from real GPUs.
set -euo pipefail

STATE=${RESNORM_SLURM_STATE:-/var/lib/resnorm-slurm}   # spool, state and logs
CONF=/etc/slurm/slurm.conf
MARK="# written by resnorm scripts/slurm/up.sh"

say() { echo "slurm up: $*" >&2; }

# (a short timeout: without a controller sinfo retries for ~10 s before it fails)
if timeout 3 sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
    say "a cluster already answers: $(sinfo -h -o '%P %a %D %t' | head -n 1)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "needs root (installs packages, starts daemons)"; exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
        || ! command -v sinfo >/dev/null || ! command -v munged >/dev/null; then
    command -v apt-get >/dev/null || { say "no apt-get to install SLURM with"; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
        >/dev/null
fi
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    say "$CONF exists and is not ours: leaving this machine's SLURM alone"; exit 1
fi
for dev in /dev/tty0 /dev/tty1; do
    [ -c "$dev" ] || { say "$dev is no character device (needed for the fake GPUs)"; exit 1; }
done

host=$(hostname -s)
cpus=$(nproc)
mkdir -p "$STATE/ctld" "$STATE/d" /etc/slurm
cat > "$CONF" <<EOF
$MARK
ClusterName=resnorm
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
# no cgroups in a container: plain process tracking, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
# no slurmdbd: sacct has nothing to read (submitit warns, and resnorm asks squeue)
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# a cancelled job's processes get SIGKILL this long after SIGTERM (default 30 s), and a
# requeued job may start again after cred_expire (default 120 s): short, for tests
KillWait=2
AuthInfo=cred_expire=5
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
SchedulerParameters=sched_interval=2
NodeName=$host CPUs=$cpus Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
cat > /etc/slurm/gres.conf <<EOF
$MARK
NodeName=$host Name=gpu File=/dev/tty[0-1]
EOF

# munge: the key comes with the package; the daemon runs as its own user
mkdir -p /run/munge
chown munge:munge /run/munge
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
    touch "$STATE/started-munged"   # down.sh stops only what this script started
fi
[ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null \
    || slurmctld -c
[ -s "$STATE/slurmd.pid" ] && kill -0 "$(cat "$STATE/slurmd.pid")" 2>/dev/null || slurmd -c

for _ in $(seq 1 60); do
    if timeout 3 sinfo -h -o %t 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
        say "up: $(sinfo -h -o '%P %a %D %t %N' | head -n 1), $cpus CPUs, 2 fake GPUs"
        exit 0
    fi
    sleep 0.5
done
say "the cluster did not come up within 30 s; see $STATE/slurmctld.log and slurmd.log"
exit 1
