"""Errors the CLI turns into one-line messages."""

from __future__ import annotations

import signal


class PeftSentimentError(Exception):
    """Base class for every error caused by user input or the environment."""


class ConfigError(PeftSentimentError, ValueError):
    """A recipe, an override or an option has a bad value."""


class DataError(PeftSentimentError):
    """The data set is missing, malformed or unusable for binary sentiment."""


class ModelError(PeftSentimentError):
    """A model, tokenizer or adapter cannot be loaded."""


class RunError(PeftSentimentError):
    """A run folder is missing, incomplete or would be overwritten."""


class HubError(PeftSentimentError):
    """A Hugging Face Hub request failed, or the repo is not in a state to push to."""


class Interrupted(PeftSentimentError):
    """Training stopped on SIGINT or SIGTERM after saving a checkpoint."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


def signal_of(err: KeyboardInterrupt) -> signal.Signals:
    """The signal behind a KeyboardInterrupt: SIGINT itself, SIGTERM for the CLI's subclass of it."""
    return signal.SIGINT if type(err) is KeyboardInterrupt else signal.SIGTERM


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for one-line errors."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__
