"""User-facing errors: one base class the CLI and the jobs catch (one line, exit 2).

Everything else is a bug and keeps its traceback. No imports: core, config and pipeline all
raise these.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix. The message names the setting, file or class at fault;
    `hint` (optional) says what to do and is printed on its own line."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class ConfigError(UserError, ValueError):
    """A setting is invalid or unknown, or a config file cannot be read."""


class DataError(UserError, ValueError):
    """An input image set, class map or checkpoint is missing or unusable."""


class MissingPathError(DataError, FileNotFoundError):
    """A file or folder the user named does not exist (or lacks what it must hold)."""


class SourceError(DataError):
    """A raw dataset source (ImageFolder, CIFAR batches, tars) is unusable as a whole."""


class ShardError(DataError):
    """A Parquet shard folder is missing, empty or has the wrong columns (names the file)."""


class ClusterError(UserError):
    """Ray could not be started here, or the cluster named by RAY_ADDRESS cannot be reached."""


class OutputError(UserError, FileExistsError):
    """An output folder holds something that is not this run's (another run, foreign files)."""


__all__ = ["UserError", "ConfigError", "DataError", "MissingPathError", "SourceError", "ShardError", "ClusterError",
           "OutputError"]
