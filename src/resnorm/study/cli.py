"""`resnorm study`'s command line: its flags, the StudyOptions they give, its exit status.

resnorm.pipeline runs the command (the study, then Grad-CAM and the report) with these.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resnorm.errors import UsageError
from resnorm.rundir import ERROR_FILE
from resnorm.study.plan.options import StudyOptions
from resnorm.studydir import StudyDir

__all__ = ["configure_parser", "study_options", "exit_status", "exit_on_sigterm"]

EPILOG = (
    "examples:\n"
    "  resnorm study --synthetic data/synth-demo --plan configs/demo.yaml --out studies/demo\n"
    "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds\n"
    "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds "
    "--jobs 4\n"
    "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds "
    "--seeds 3\n"
    "  resnorm study --data data/birds --plan configs/assignment.yaml --out studies/birds "
    "--pdf   # report.pdf to hand in\n\n"
    "Re-running the same command finishes an interrupted study: finished runs are skipped,\n"
    "an interrupted run resumes from its last.pt. A diverged or failed run is recorded and\n"
    "the study goes on. Exit code 0 when every run finished (diverged counts: it is a\n"
    "result), 1 when a run failed, 2 for a bad plan or data, 4 out of a resource (disk\n"
    "space, memory, a worker process killed; re-run to continue).\n\n"
    "Val and test images with an exact or near copy in train (the audit of `resnorm\n"
    "prepare`) are left out of every score and of choosing epochs; --keep-leaked keeps\n"
    "them (the report then marks val/test scores as inflated). A test/ split is scored\n"
    "once per run at the end and chooses nothing: the report's held-out estimate.\n\n"
    "A plan's `tune:` section (pip install 'resnorm[tune]') first trains each tuned run at\n"
    "the trials Optuna's sampler draws (a grid, tune: {lr: [...]}, or the same Sobol\n"
    "points for every run, tune: {space: {lr: [lo, hi, log], weight_decay: [...]}, trials:\n"
    "K}) into STUDY/tuning/, chooses on val, then trains the final runs at the choice\n"
    "(docs/tuning.md; e.g. configs/birds-cpu-tuned.yaml).\n\n"
    "Several runs at once on one machine: --jobs K (one small ResNet does not fill a big\n"
    "GPU, nor many CPU cores). Each run trains in its own process with the same skip/\n"
    "resume/failure bookkeeping; its output goes to train.log in its folder (runs/<name>/\n"
    "seed-<s>/, a tuning trial's tuning/<run>/lr-<lr>/seed-<s>/) and this command\n"
    "prints one line per run as it finishes (completion order, numbered as they finish).\n"
    "Each job holds its own copy of the data on the device. Ctrl-C or killing the study\n"
    "stops its jobs; re-running resumes them. Works with --shard (K jobs within the\n"
    "shard); not with torchrun.\n\n"
    "A SLURM cluster: --executor slurm, on the login node, with --out (and --cache) on\n"
    "storage the compute nodes share. The data is prepared once (into STUDY/cache unless\n"
    "--cache or $RESNORM_CACHE says otherwise), then one array of one task per unfinished\n"
    "(run, seed) is submitted; the command waits, with a progress line, then records the\n"
    "study and writes Grad-CAM and the report (--no-wait: a job after the array does).\n"
    "Tasks requeue at their time limit or on preemption and resume from last.pt; re-running\n"
    "the command waits for tasks still queued and resubmits the unfinished rest:\n"
    "  resnorm study --data /shared/birds --plan configs/assignment.yaml \\\n"
    "      --out /shared/studies/birds --executor slurm --partition gpu --time-limit 4:00:00\n"
    "The plan's `slurm:` section sets the same (partition, time, gpus_per_task,\n"
    "cpus_per_task, mem_gb, array_parallelism, sbatch, setup); options here override it.\n\n"
    "Without SLURM: the same command on K machines with one --out on a shared filesystem\n"
    "(the run locks share the jobs out), or --shard I/K on each, then `resnorm report STUDY`;\n"
    "several GPUs per run: torchrun --nproc_per_node=N -m resnorm -- study ...\n"
    "(see docs/distributed.md)."
)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path,
                        help="dataset folder (train/ valid/) or a prepared cache")
    source.add_argument("--synthetic", type=Path, metavar="DIR",
                        help="use the synthetic dataset in DIR, generating it first if missing")
    parser.add_argument("--plan", type=Path, required=True, help="study plan (YAML)")
    parser.add_argument("--out", type=Path, required=True, help="study folder")
    parser.add_argument("--cache", help="folder for prepared-data caches (default: "
                        "$RESNORM_CACHE, else ~/.cache/resnorm, or STUDY/cache with "
                        "--executor slurm)")
    parser.add_argument("--no-gradcam", action="store_true", help="skip the Grad-CAM step")
    parser.add_argument("--no-report", action="store_true", help="skip the report")
    parser.add_argument("--pdf", action="store_true",
                        help="the report as STUDY/report.pdf too, to hand in (A4, the answer "
                        "sheet on page 1; needs WeasyPrint and Pango: pip install "
                        "'resnorm[pdf]')")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars and no per-epoch lines on the console: one line "
                        "per run (with --jobs, each run's own train.log stays complete)")
    parser.add_argument("--keep-leaked", action="store_true",
                        help="score val/test images that have an exact or near copy in train "
                        "(left out by default; scores then inflated; plan: defaults: "
                        "keep_leaked: true)")
    _work_options(parser)
    parser.add_argument("--mlflow", metavar="URI", nargs="?", const="",
                        help="at the end, export the study to MLflow (`resnorm export`): to URI, "
                        "or with no URI to sqlite:///STUDY/mlflow.db")
    parser.add_argument("--executor", choices=("local", "slurm"), default="local",
                        help="where the jobs train: local (this process, or --jobs K processes; "
                        "the default) or slurm (one SLURM array task per (run, seed))")
    _slurm_options(parser.add_argument_group(
        "SLURM (with --executor slurm; each overrides the plan's slurm: section)"))


def _work_options(parser: argparse.ArgumentParser) -> None:
    """Which jobs this process trains, and how many at once: --jobs, --seeds, --shard."""
    parser.add_argument("--jobs", type=_jobs_arg, default=1, metavar="K",
                        help="train up to K runs at once, each in its own process sharing the "
                        "device or the CPU cores; torch threads per job: the plan's `threads`, "
                        "else cores // K; each job's output goes to train.log in its folder; "
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


def _slurm_options(group) -> None:
    group.add_argument("--partition", help="partition to submit to (default: the cluster's)")
    group.add_argument("--time-limit", metavar="TIME", help="each task's time limit: minutes "
                       "or SLURM's form (4:00:00, 1-12:00); at the limit a task is requeued and "
                       "resumes from last.pt (default: the partition's limit)")
    group.add_argument("--gpus-per-task", type=int, metavar="G",
                       help="GPUs per task (default: 1; 0 when the plan trains on the CPU)")
    group.add_argument("--cpus-per-task", type=int, metavar="C",
                       help="CPUs per task (default: the plan's threads, else 4)")
    group.add_argument("--mem-gb", type=float, metavar="GB", help="memory per task")
    group.add_argument("--array-parallelism", type=int, metavar="K",
                       help="at most K tasks of the array at once (default: as many as fit)")
    group.add_argument("--sbatch", action="append", metavar="KEY=VALUE",
                       help="an extra sbatch setting, e.g. --sbatch account=lab "
                       "--sbatch qos=high (repeatable)")
    group.add_argument("--no-wait", action="store_true", help="submit and return: a job after "
                       "the array (afterany) records the study and writes Grad-CAM and the report")


SLURM_FLAGS = {"partition": "--partition", "time": "--time-limit",
               "gpus_per_task": "--gpus-per-task", "cpus_per_task": "--cpus-per-task",
               "mem_gb": "--mem-gb", "array_parallelism": "--array-parallelism",
               "sbatch": "--sbatch"}


def slurm_overrides(args: argparse.Namespace) -> dict:
    """The SLURM options given, as the plan's `slurm:` keys (checked: one-line UsageErrors)."""
    from resnorm.study.plan.parse import parse_time_limit

    given = {key: getattr(args, flag[2:].replace("-", "_")) for key, flag in SLURM_FLAGS.items()}
    given = {k: v for k, v in given.items() if v is not None}
    if args.executor != "slurm" and (given or args.no_wait):
        flag = SLURM_FLAGS[next(iter(given))] if given else "--no-wait"
        raise UsageError(f"{flag} is a SLURM option: it needs --executor slurm")
    for key in ("cpus_per_task", "array_parallelism", "gpus_per_task", "mem_gb"):
        low = 0 if key == "gpus_per_task" else 1
        if key in given and not given[key] >= low:
            raise UsageError(f"{SLURM_FLAGS[key]} must be at least {low}, got {given[key]}")
    if "time" in given:
        given["time"] = parse_time_limit(given["time"], "--time-limit")
    if "sbatch" in given:
        pairs = [item.partition("=") for item in given["sbatch"]]
        bad = [key for key, eq, _ in pairs if not eq or not key.strip("- ")]
        if bad:
            raise UsageError(f"--sbatch takes KEY=VALUE (e.g. account=lab), got {bad[0]!r}")
        given["sbatch"] = {key.strip().lstrip("-"): value for key, _, value in pairs}
    if args.executor == "slurm":
        given["wait"] = not args.no_wait
    return given


def _jobs_arg(text: str) -> int | str:
    """--jobs: a count (run_study refuses one below 1, in its own words) or "auto"
    (resolved by run_study: resnorm.study.execution.capacity)."""
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


def exit_on_sigterm() -> None:
    """SIGTERM (a SLURM time limit, scancel, kill) unwinds like Ctrl-C: running jobs are
    stopped and this process's run locks released, so another process can take them."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    try:
        signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding program): leave it as it is
        pass


def study_options(args: argparse.Namespace) -> StudyOptions:
    """The options the command line gives (each checked: one-line UsageErrors)."""
    from resnorm.distributed import parse_shard

    try:
        shard = parse_shard(args.shard) if args.shard is not None else None
    except ValueError as exc:
        raise UsageError(f"--shard: {exc}") from None
    return StudyOptions(data=args.data, synthetic=args.synthetic, cache=args.cache,
                        progress=not args.quiet, gradcam=not args.no_gradcam,
                        report=not args.no_report, pdf=args.pdf, shard=shard, jobs=args.jobs,
                        seeds=args.seeds, keep_leaked=args.keep_leaked,
                        executor=args.executor, slurm=slurm_overrides(args),
                        mlflow=args.mlflow)


def exit_status(result, executor: str) -> int:
    """0 when every job finished (diverged counts: it is a result); 1, with a line on
    stderr, when a job or Grad-CAM failed. Ranks other than 0 exit 0 (rank 0 speaks)."""
    from resnorm.distributed import is_main_process

    if not is_main_process():
        return 0
    status = 0
    if result.failed:
        where = ("the lines above" if executor == "slurm"
                 else StudyDir(".").trial("<name>", "<s>") / ERROR_FILE)
        print(f"resnorm study: {len(result.failed)} job(s) failed: {', '.join(result.failed)} "
              f"(see {where}; re-run to retry them)", file=sys.stderr)
        status = 1
    if result.gradcam_error:
        print(f"resnorm study: Grad-CAM failed: {result.gradcam_error}", file=sys.stderr)
        status = 1
    return status
