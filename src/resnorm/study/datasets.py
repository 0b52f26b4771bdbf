"""A study's data: the synthetic stand-in made when asked for, and the dataset decoded once per
distinct (size, resize) of the plan's runs, before any job trains."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from resnorm.errors import UsageError
from resnorm.study.plan.parse import Plan, train_default

__all__ = ["data_key", "prepare_data", "check_scored_data", "make_demo_data"]


def data_key(fields: dict[str, Any]) -> tuple[int, str]:
    """The (size, resize) a run's images are prepared at: which cache it trains on."""
    return (int(fields.get("size", train_default("size"))),
            str(fields.get("resize", train_default("resize"))))


def prepare_data(data: str | Path, configs: list[dict[str, Any]], cache: str | None,
                 progress: bool) -> dict[tuple[int, str], Path]:
    """Decode the dataset once per distinct (size, resize) of the runs' resolved `configs`;
    return the caches."""
    from resnorm.data import prepare
    from resnorm.data.cache import default_cache_dir, read_manifest

    wanted = []
    for config in configs:
        key = data_key(config)
        if key not in wanted:
            wanted.append(key)
    manifest = read_manifest(Path(data))
    if manifest is not None:  # --data is already a prepared cache: it must fit every run
        have = (manifest["params"]["size"], manifest["params"]["resize"])
        other = [k for k in wanted if k != have]
        if other:
            raise UsageError(f"{data} is a cache of {have[0]}px images ({have[1]}), but the "
                             f"plan has runs at {other[0][0]}px ({other[0][1]}); point --data "
                             "at the dataset folder instead")
        return {}
    caches = {}
    for size, resize in wanted:
        out = None
        if cache is not None:  # under --cache, named as prepare names its default caches
            out = Path(cache) / default_cache_dir(Path(data).resolve(), size, resize).name
        caches[(size, resize)] = prepare(data, size=size, out=out, resize=resize,
                                         progress=progress)
    return caches


def check_scored_data(todo: list, say) -> None:
    """Load each cache the jobs train on, as they will score it (leaked val/test images left
    out unless keep_leaked): a validation split too small for that fails the study now, in
    one line, not in every job; say once what is left out."""
    from resnorm.data import load_cache

    notes = []
    for data, keep in dict.fromkeys((job.cfg.data, job.cfg.keep_leaked) for job in todo):
        note = load_cache(data).scored(keep).leak_note()
        if note and note not in notes:
            notes.append(note)
            say(f"warning: {note}")


def make_demo_data(directory: str | Path, plan: Plan, progress: bool) -> Path:
    """The synthetic dataset in `directory`: generated when missing (plan's `synthetic:` sizes)."""
    from resnorm.data import make_synthetic
    from resnorm.data.synth import read_marker

    directory = Path(directory)
    params = dict(plan.synthetic)
    if read_marker(directory) is not None and not params:
        return directory  # already there, and the plan does not ask for particular sizes
    return make_synthetic(directory, progress=progress, **params)
