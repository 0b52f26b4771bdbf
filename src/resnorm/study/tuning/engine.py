"""Optuna as the tuning engine: one Optuna study per tuned run, whose sampler draws the trials
(ask), and which records each finished trial's score (tell) and names the best.

- A grid (`tune: {lr: [...]}`) is drawn by `GridSampler`: each combination once.
- A space (`tune: {space: {...}, trials: K}`) by `QMCSampler` (scrambled Sobol, QMC_SEED): a
  deterministic sequence, so every tuned run gets the identical K points. As Optuna's
  QMCSampler does before it knows the space, the first point comes from its seeded independent
  sampler, the others from the Sobol sequence.
- With `tune.default` the run's untuned setting is one more trial, enqueued after the
  sampler's points (it does not shift them).

Values are the plan's: lr at the plan's base batch size (the phase scales it to each run's
batch by the plan's lr rule), weight decay as it is. Storage: STUDY/tuning/journal.log
(`JournalStorage(JournalFileBackend)`, safe for several processes and on a shared file
system); asking and telling take a file lock, so a kill at any moment and any number of
re-runs ask no point twice and tell each trial once. Telling opens the study without the
sampler (GridSampler stops an optimize loop when its grid is exhausted, which ask-and-tell
does not have). No pruner: every trial trains its whole length (pruning early penalises slow
starters such as IN and the no-norm variant).

Optuna is imported here only, and only for a plan with `tune:`.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

from resnorm.errors import UsageError
from resnorm.study.plan.tune_settings import QMC_SEED, TuneSettings
from resnorm.study.tuning.results import lr_text
from resnorm.studydir import StudyDir

__all__ = ["require_optuna", "journal_storage", "ask_trials", "tell_trials", "best_trial"]

UNTUNED = "untuned"  # the user attribute marking the run's untuned setting


def require_optuna() -> None:
    """Refuse a plan with `tune:` in one line when Optuna is not installed."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UsageError("the plan's tune: section needs Optuna: pip install "
                         "'resnorm[tune]' (or pip install optuna)") from None


def journal_storage(study: Path):
    """The Optuna storage of a study's tuning: the journal file STUDY/tuning/journal.log."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = StudyDir(study).tuning_journal
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


@contextmanager
def _locked(study: Path):
    import filelock

    lock = StudyDir(study).tuning_journal_lock
    lock.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(str(lock), timeout=600):
        yield journal_storage(study)


def _sampler(settings: TuneSettings):
    import optuna

    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(settings.grid, seed=QMC_SEED)
    with warnings.catch_warnings():  # QMCSampler is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.QMCSampler(qmc_type="sobol", scramble=True, seed=QMC_SEED)


def _distributions(settings: TuneSettings, default: dict[str, float] | None) -> dict:
    """Each searched setting's distribution (a grid's spans its values and the default)."""
    from optuna.distributions import FloatDistribution

    out = {}
    for param in settings.params:
        if settings.space:
            low, high, log = settings.space[param]
        else:
            values = settings.grid[param] + ([default[param]] if default else [])
            low, high = min(values), max(values)
            log = low > 0
        out[param] = FloatDistribution(low, high, log=log)
    return out


def _open(storage, run: str, sampler=None):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(study_name=run, storage=storage, sampler=sampler,
                               direction="maximize", load_if_exists=True)


def ask_trials(study: Path, run: str, settings: TuneSettings,
               default: dict[str, float] | None) -> list:
    """The run's trials (FrozenTrials, by number): the sampler's `settings.count()` points,
    then the untuned setting `default` unless None or already among them. Asks only what
    the journal lacks, so a re-run asks nothing twice."""
    with _locked(study) as storage:
        ostudy = _open(storage, run, _sampler(settings))
        dists = _distributions(settings, default)
        trials = ostudy.get_trials(deepcopy=False)
        for _ in range(settings.count() - sum(not t.user_attrs.get(UNTUNED) for t in trials)):
            ostudy.ask(dists)
        trials = ostudy.get_trials(deepcopy=False)
        shown = [{p: lr_text(t.params[p]) for p in settings.params} for t in trials]
        if default and {p: lr_text(v) for p, v in default.items()} not in shown and not any(
                t.user_attrs.get(UNTUNED) for t in trials):
            ostudy.enqueue_trial(default, user_attrs={UNTUNED: True})
            ostudy.ask(dists)
        return sorted(ostudy.get_trials(deepcopy=False), key=lambda t: t.number)


def tell_trials(study: Path, run: str, outcomes: dict[int, tuple[float | None, dict]]) -> None:
    """Record finished trials: number -> (score, attributes); a None score tells a failed
    (diverged, failed) trial. Trials told before are left as they are."""
    from optuna.trial import TrialState

    with _locked(study) as storage:
        ostudy = _open(storage, run)
        for trial in ostudy.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.number not in outcomes:
                continue
            value, attrs = outcomes[trial.number]
            for key, item in attrs.items():
                storage.set_trial_user_attr(trial._trial_id, key, item)
            if value is None:
                ostudy.tell(trial.number, state=TrialState.FAIL)
            else:
                ostudy.tell(trial.number, value)


def best_trial(study: Path, run: str) -> int | None:
    """The number of the run's best trial under the plan's score (the Optuna study's
    best_trial: the highest score, the first such trial on ties), None when none finished."""
    with _locked(study) as storage:
        ostudy = _open(storage, run)
        try:
            return ostudy.best_trial.number
        except ValueError:  # no complete trial
            return None
