"""Exceptions the command line turns into exit codes (see `resnorm.cli`)."""

EXIT_OK = 0
EXIT_USAGE = 2      # bad usage, invalid config, missing data: one line on stderr
EXIT_DIVERGED = 3   # a training run hit a non-finite loss and stopped cleanly


class UsageError(ValueError):
    """Invalid input from the user: reported as one line on stderr, exit code 2."""


class DivergedError(RuntimeError):
    """A run stopped on a non-finite loss; exit code 3."""
