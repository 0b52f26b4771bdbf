#!/usr/bin/env bash
# Stop the single-node cluster that scripts/slurm/up.sh started: its slurmd and slurmctld
# (by their pid files) and munged if up.sh started it. Idempotent; packages, config and
# $STATE stay (the next up.sh starts with an empty queue).
set -uo pipefail

STATE=${RESNORM_SLURM_STATE:-/var/lib/resnorm-slurm}

stop() {  # stop NAME PIDFILE: SIGTERM, then wait up to 10 s
    local pid
    [ -s "$2" ] || return 0
    pid=$(cat "$2")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "slurm down: stopped $1 ($pid)" >&2
    fi
    rm -f "$2"
}

stop slurmd "$STATE/slurmd.pid"
stop slurmctld "$STATE/slurmctld.pid"
if [ -e "$STATE/started-munged" ]; then
    stop munged /run/munge/munged.pid
    rm -f "$STATE/started-munged"
fi
exit 0
