"""`resnorm study`: the command line of the whole study (see resnorm.study.runner)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnorm.errors import UsageError
from resnorm.study.runner import run_study

__all__ = ["configure_parser", "run_cli"]

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "examples:\n"
        "  resnorm study --synthetic data/synth-demo --plan configs/demo.yaml --out studies/demo\n"
        "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds\n"
        "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds "
        "--jobs 4\n"
        "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds "
        "--seeds 3\n\n"
        "Re-running the same command finishes an interrupted study: finished runs are skipped,\n"
        "an interrupted run resumes from its last.pt. A diverged or failed run is recorded and\n"
        "the study goes on. Exit code 0 when every run finished (diverged counts: it is a\n"
        "result), 1 when a run failed, 2 for a bad plan or data, 4 out of a resource (disk\n"
        "space, memory, a worker process killed; re-run to continue).\n\n"
        "Val and test images with an exact or near copy in train (the audit of `resnorm\n"
        "prepare`) are left out of every score and of choosing epochs; --keep-leaked keeps\n"
        "them (the report then marks val/test scores as inflated). A test/ split is scored\n"
        "once per run at the end and chooses nothing: the report's held-out estimate.\n\n"
        "Several runs at once on one machine: --jobs K (one small ResNet does not fill a big\n"
        "GPU, nor many CPU cores). Each run trains in its own process with the same skip/\n"
        "resume/failure bookkeeping; its output goes to runs/<name>/train.log and this command\n"
        "prints one line per run as it finishes (completion order, numbered as they finish).\n"
        "Each job holds its own copy of the data on the device. Ctrl-C or killing the study\n"
        "stops its jobs; re-running resumes them. Works with --shard (K jobs within the\n"
        "shard); not with torchrun.\n\n"
        "Several machines: --shard I/K on each (same --out on a shared filesystem), then\n"
        "`resnorm report STUDY`; several GPUs per run: torchrun --nproc_per_node=N -m resnorm\n"
        "-- study ... (see docs/distributed.md)."
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path,
                        help="dataset folder (train/ valid/) or a prepared cache")
    source.add_argument("--synthetic", type=Path, metavar="DIR",
                        help="use the synthetic dataset in DIR, generating it first if missing")
    parser.add_argument("--plan", type=Path, required=True, help="study plan (YAML)")
    parser.add_argument("--out", type=Path, required=True, help="study folder")
    parser.add_argument("--cache", help="folder for prepared-data caches "
                        "(default: $RESNORM_CACHE or ~/.cache/resnorm)")
    parser.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM step")
    parser.add_argument("--no-report", action="store_true", help="skip the report")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars and no per-epoch lines on the console: one line "
                        "per run (with --jobs, each run's own train.log stays complete)")
    parser.add_argument("--keep-leaked", action="store_true",
                        help="score val/test images that have an exact or near copy in train "
                        "(left out by default; scores then inflated; plan: defaults: "
                        "keep_leaked: true)")
    parser.add_argument("--jobs", type=_jobs_arg, default=1, metavar="K",
                        help="train up to K runs at once, each in its own process sharing the "
                        "device or the CPU cores; torch threads per job: the plan's `threads`, "
                        "else cores // K; each run's output goes to runs/<name>/train.log; "
                        "auto: as many as fit, from the GPU's free memory (each job holds a "
                        "CUDA context, its model's peak and its own copy of the data) and its "
                        "SMs, or from the CPU cores; on a GPU a K that cannot fit is refused "
                        "up front (default: 1, one run after another in this process)")
    parser.add_argument("--seeds", type=_seeds_arg, metavar="K",
                        help="train every run with K seeds (the run's seed, seed+1, ..., "
                        "seed+K-1), or with the comma-separated seeds given (e.g. 0,1,2), "
                        "overriding the plan's `seeds:`; each (run, seed) trains in "
                        "runs/<name>/seed-<s>/. More seeds narrow the intervals the report "
                        "gives; 3 is a good start")
    parser.add_argument("--shard", metavar="I/K", help="train only shard I of K of the plan's "
                        "runs (round-robin in plan order; 0 <= I < K) into the same --out, e.g. "
                        "one per machine or SLURM array task; no Grad-CAM or report "
                        "(docs/distributed.md)")


def _jobs_arg(text: str) -> int | str:
    """--jobs: a count (run_study refuses one below 1, in its own words) or "auto"
    (resolved by run_study: resnorm.study.capacity)."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count K or auto, got {text!r}") from None


def _seeds_arg(text: str) -> int | list[int]:
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a count K or seeds such as 0,1,2, "
                                         f"got {text!r}") from None


def _exit_on_sigterm() -> None:
    """SIGTERM (a SLURM time limit, scancel, kill) unwinds like Ctrl-C: running jobs are
    stopped and this process's run locks released, so another process can take them."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding program): leave it as it is
        pass


def run_cli(args: argparse.Namespace) -> int:
    from resnorm.distributed import is_main_process, parse_shard

    _exit_on_sigterm()

    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as exc:
        raise UsageError(f"--shard: {exc}") from None
    result = run_study(args.plan, args.out, data=args.data, synthetic=args.synthetic,
                       cache=args.cache, progress=not args.quiet,
                       gradcam=not args.no_gradcam, report=not args.no_report, shard=shard,
                       jobs=args.jobs, seeds=args.seeds, keep_leaked=args.keep_leaked)
    if not is_main_process():
        return 0
    status = 0
    if result.failed:
        print(f"resnorm study: {len(result.failed)} job(s) failed: {', '.join(result.failed)} "
              f"(see runs/<name>/seed-<s>/error.txt; re-run to retry them)", file=sys.stderr)
        status = 1
    if result.gradcam_error:
        print(f"resnorm study: Grad-CAM failed: {result.gradcam_error}", file=sys.stderr)
        status = 1
    return status
