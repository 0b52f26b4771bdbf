"""The `resnorm` command line: one subcommand per stage of the study pipeline.

Each stage lives in its own module, which exposes `configure_parser(parser)` and
`run_cli(args) -> int`; this file only wires them together and maps errors to exit codes.
Only the module of the command given is imported: `resnorm --version` and `resnorm --help`
import none, and `resnorm train` (a torchrun rank, a SLURM task) not the report's.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from resnorm import __version__
from resnorm.errors import (EXIT_DIVERGED, EXIT_RESOURCE, EXIT_USAGE, DivergedError,
                            ResourceError, UsageError)
from resnorm.fileio import is_disk_full

# subcommand -> (module, one-line help)
COMMANDS = {
    "synth": ("resnorm.data.synth", "write the synthetic stand-in dataset"),
    "prepare": ("resnorm.data.prepare", "decode an image-folder dataset once into a uint8 cache"),
    "train": ("resnorm.train.cli", "train one model variant"),
    "study": ("resnorm.pipeline", "run a whole study plan: train, robustness, Grad-CAM, report"),
    "robustness": ("resnorm.robustness.cli", "score a study's runs on corrupted held-out images"),
    "gradcam": ("resnorm.gradcam.cli", "render Grad-CAM galleries for a trained run"),
    "report": ("resnorm.report.cli", "write the HTML/Markdown report of a study"),
    "export": ("resnorm.export.cli", "export a study to MLflow (runs, metrics, artifacts)"),
}


def build_parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser: the subparsers of `commands` (default: all) complete, their modules
    imported; the others by name and help line only (enough for `resnorm --help` and to
    refuse an unknown command)."""
    parser = argparse.ArgumentParser(
        prog="resnorm",
        description="Study BN, IN, BIN, LN and GN in a 6n+2-layer ResNet.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  resnorm study --synthetic data/synth-demo --plan configs/demo.yaml --out studies/demo\n"
        "  resnorm study --data /path/to/Birds_25 --plan configs/assignment.yaml --out studies/birds\n"
        "  resnorm train --data /path/to/Birds_25 --norm gn --out runs/gn\n\n"
        "`resnorm COMMAND --help` describes each command. Exit codes: 0 ok, 1 a run of a "
        "study failed,\n2 bad usage or config, 3 a run diverged, 4 out of a resource (disk "
        "space, memory,\na worker process killed).",
    )
    parser.add_argument("--version", action="version", version=f"resnorm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if commands is not None and name not in commands:
            sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(
            name,
            help=help_text,
            description=(module.__doc__ or help_text).strip().splitlines()[0],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.configure_parser(p)
        p.set_defaults(_run=module.run_cli)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if a in COMMANDS), None)  # the first word that is one
    args = build_parser([command] if command else []).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"resnorm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except DivergedError as exc:
        print(f"resnorm {args.command}: diverged: {exc}", file=sys.stderr)
        return EXIT_DIVERGED
    except ResourceError as exc:  # a full disk, a dead worker: expected faults, one line
        print(f"resnorm {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_RESOURCE
    except MemoryError:
        print(f"resnorm {args.command}: error: out of memory (try a smaller --batch-size, "
              f"--size or fewer --jobs)", file=sys.stderr)
        return EXIT_RESOURCE
    except RuntimeError as exc:
        if type(exc).__name__ != "OutOfMemoryError":  # torch's, for CUDA and MPS
            raise
        print(f"resnorm {args.command}: error: out of device memory: "
              f"{str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_RESOURCE
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        print(f"resnorm {args.command}: error: no space left on the device "
              f"({exc.filename or 'writing a file'}): {exc.strerror}", file=sys.stderr)
        return EXIT_RESOURCE
    except KeyboardInterrupt:
        print(f"resnorm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
