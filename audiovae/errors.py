"""The package's own exception types.

Every error a user can cause by handing us bad input is one of these, with a
message that names the file (when there is one) and the problem, so the command
line can print it on one line without a traceback.
"""

from __future__ import annotations

import os


class AudioVAEError(Exception):
    """Base class of every error audiovae raises on purpose."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.fspath(path)
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class InvalidAudioError(AudioVAEError):
    """An audio file or waveform that cannot be used (unreadable, empty, silent, NaN...)."""


class InvalidFeatureError(AudioVAEError):
    """A feature array or feature file of the wrong shape, dtype or content."""


class ConfigError(AudioVAEError):
    """A configuration that is inconsistent, unknown or cannot be parsed."""


class CheckpointError(AudioVAEError):
    """A model directory or checkpoint that is missing, foreign or tampered with."""


class DataError(AudioVAEError):
    """A data set or feature cache that cannot be used."""


class TrainingError(AudioVAEError):
    """Training cannot go on (for example the loss became NaN)."""


class OutputError(AudioVAEError):
    """An output path that cannot be written, or whose writing would replace an input or a file we did not write."""


class DownloadError(DataError):
    """A download that failed, or whose size or checksum is wrong."""


class UnsafeArchiveError(DownloadError):
    """An archive member that would land outside the extraction folder (absolute path, '..', link, device)."""


class ExportError(AudioVAEError):
    """A model that cannot be exported, or whose exported file does not compute what PyTorch does."""


class OutputFolderError(AudioVAEError):
    """An output folder that cannot be written: one of another kind (a cache is not a run), or one another
    process is writing (see :mod:`audiovae.folders`)."""


class MissingExtraError(AudioVAEError):
    """A feature that needs optional packages that are not installed (the message names the pip extra)."""
