"""Trained zstd dictionaries for WAL batches (:mod:`pipeline.wal.batch`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pipeline.errors import ConfigError, InvalidArgument

__all__ = ["Dictionary", "train_dictionary"]


@dataclass(frozen=True, slots=True)
class Dictionary:
    """A trained zstd dictionary: its id (zstd's) and its bytes."""

    dictionary_id: int
    data: bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> Dictionary:
        dict_id = zstandard.ZstdCompressionDict(data).dict_id()
        if dict_id == 0:
            raise InvalidArgument(
                "not a zstd dictionary with an id (raw content dictionaries have none)"
            )
        return cls(dict_id, bytes(data))

    @classmethod
    def from_file(cls, path: str | Path, setting: str) -> Dictionary:
        """The dictionary in the file at ``path``; ``ConfigError`` naming ``setting`` when
        the file is missing or holds no zstd dictionary with an id."""
        try:
            return cls.from_bytes(Path(path).read_bytes())
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror}") from None
        except InvalidArgument as exc:
            raise ConfigError(f"{setting}: {path} is {exc}") from None

    def zstd(self) -> zstandard.ZstdCompressionDict:
        return zstandard.ZstdCompressionDict(self.data)


def train_dictionary(samples: Sequence[bytes], size: int = 16 * 1024) -> Dictionary:
    """A zstd dictionary of at most ``size`` bytes trained on ``samples``.

    For TWB2 batches the samples are what goes to their ``meta`` section, one per entry
    (:func:`pipeline.wal.columns.meta_of`). zstd needs enough samples (hundreds) of
    some variety; it raises otherwise (``zstandard.ZstdError``).
    """
    trained = zstandard.train_dictionary(size, list(samples))
    return Dictionary(trained.dict_id(), trained.as_bytes())
