#!/usr/bin/env bash
# One self-contained speed check for a lent GPU machine (torch preinstalled, no network).
# Run from the repository root; no install needed (PYTHONPATH=src):
#
#   bash benchmarks/gpu_check.sh            # about 6 minutes on an H100/H200, never over 7
#   bash benchmarks/gpu_check.sh --smoke    # tiny sizes on any machine (CPU too): checks that
#                                           # the script runs, not how fast anything is
#
# Prints per norm variant the training images/s of ResNet(n=2) at 256x256 for batch 8/32/128
# (bf16 autocast, channels_last), eager and torch.compile, peak GPU memory, eval images/s,
# benchmarks/norm_speed.py on CUDA, and the extrapolated wall time of configs/assignment.yaml.
# With $OUT set, the output also goes to $OUT/gpu_check.txt (and the numbers to
# $OUT/gpu_check.json). GPU_CHECK_SMOKE=1 is the same as --smoke; extra arguments go to
# benchmarks/gpu_check.py (e.g. --budget 200).
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

args=("$@")
if [[ "${GPU_CHECK_SMOKE:-0}" == 1 ]]; then args+=(--smoke); fi
hard_limit=415  # seconds: the python side plans for 360 and stops itself; this is the backstop
for a in "${args[@]}"; do [[ "$a" == --smoke ]] && hard_limit=300; done

log=/dev/null
if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT" && log="$OUT/gpu_check.txt" && : >"$log"
    args+=(--json "$OUT/gpu_check.json")
fi
say() { echo "$*" | tee -a "$log"; }

# A python that has torch: $PYTHON, else the checkout's .venv, else python3, else python.
py=""
for candidate in "${PYTHON:-}" .venv/bin/python python3 python; do
    if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null 2>&1 \
            && "$candidate" -c "import torch" >/dev/null 2>&1; then
        py=$candidate
        break
    fi
done
if [[ -z "$py" ]]; then
    say "gpu_check: no python with torch found (set PYTHON=...)"
    exit 1
fi

# First, that the package imports at all (a quick, clear failure beats a long broken run).
imports=$("$py" - 2>&1 <<'PY'
import torch
import resnorm.model, resnorm.norm_functions, resnorm.norms
print(f"imports ok ({__import__('sys').executable}): torch {torch.__version__}, "
      f"cuda available: {torch.cuda.is_available()}")
PY
)
status=$?
say "$imports"
if [[ $status != 0 ]]; then
    say "gpu_check: imports failed (see above)"
    exit 1
fi

extra=()
[[ -n "${OUT:-}" ]] && extra=(--out "$log")
timeout -k 10 "$hard_limit" "$py" benchmarks/gpu_check.py "${extra[@]}" "${args[@]}"
status=$?
if [[ $status == 124 || $status == 137 ]]; then
    say "gpu_check: stopped by the ${hard_limit} s backstop (the lines above are complete)"
fi
exit $status
