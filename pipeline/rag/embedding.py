"""Embedders: text -> unit float32 vectors for the vector path.

:class:`HashingEmbedder` is built in and needs no download: it hashes word
unigrams and bigrams (blake2b, keyed by a seed, so the same text gives the same
vector in every process and on every machine) straight into ``dimension``
components. Each feature adds its weight to :data:`HASHES_PER_FEATURE` components
with a hashed sign each, which is a sparse random projection of the unbounded
bag of features; the weight is ``1 + ln(count)`` (sublinear term frequency), with
bigrams at half a unigram's weight (words are lower-cased, common English
stop words dropped and plurals folded); the result is L2-normalised. Texts that share
words are close in cosine space; texts that share none are nearly orthogonal. It
knows no synonyms: for semantic search install the optional extra and use
:class:`SentenceTransformerEmbedder`::

    pip install themis-pipeline[embeddings]    # sentence-transformers

Every embedder has a ``name`` that changes when its vectors would change; the
ingest job re-embeds every file when it does.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import math
import re
from collections import Counter
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt

from pipeline.errors import ConfigError, InvalidArgument

__all__ = [
    "DEFAULT_SENTENCE_MODEL",
    "HASHES_PER_FEATURE",
    "Embedder",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
]

HASHES_PER_FEATURE: Final = 4
"""Components each unigram or bigram adds to (with a sign each)."""
DEFAULT_SENTENCE_MODEL: Final = "sentence-transformers/all-MiniLM-L6-v2"
"""The model :class:`SentenceTransformerEmbedder` loads by default (384 dimensions)."""

_BIGRAM_WEIGHT: Final = 0.5
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
# Words too common to tell documents apart; without IDF they would dominate.
_STOPWORDS: Final = frozenset(
    """a about above after again all also am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers him his how i if in into is it its itself just me more
    most my no nor not now of off on once only or other our ours out over own same she should so
    some such than that the their theirs them then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you
    your yours""".split()  # noqa: SIM905  # a word list reads better as text
)

Float32Matrix = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Turns texts into vectors of ``dimension`` float32 components, one row per text."""

    @property
    def dimension(self) -> int: ...

    @property
    def name(self) -> str:
        """Identifies the embedder and its parameters: a new name means new vectors."""
        ...

    def embed(self, texts: Sequence[str]) -> Float32Matrix: ...


class HashingEmbedder:
    """Feature hashing of word unigrams and bigrams into ``dimension`` components.

    Deterministic across processes (blake2b keyed by ``seed``, never Python's salted
    ``hash``); rows are unit vectors (an empty text maps to a fixed unit vector).
    """

    def __init__(self, dimension: int, *, seed: int = 0) -> None:
        if dimension < 1:
            raise InvalidArgument(f"dimension must be >= 1; got {dimension}")
        self._dimension = dimension
        self._seed = seed
        self._key = seed.to_bytes(8, "little", signed=False)
        self._cache: dict[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]] = {}

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def name(self) -> str:
        return f"hashing-v2(dim={self._dimension},seed={self._seed},k={HASHES_PER_FEATURE})"

    def embed(self, texts: Sequence[str]) -> Float32Matrix:
        """One unit row per text."""
        out = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            self._embed_into(out[row], text)
        return out

    def _embed_into(self, row: npt.NDArray[np.float32], text: str) -> None:
        tokens = [_stem(t) for t in _TOKEN.findall(text.lower()) if t not in _STOPWORDS]
        features: Counter[str] = Counter(tokens)
        bigrams: Counter[str] = Counter(f"{a} {b}" for a, b in pairwise(tokens))
        if not features:
            features["\x00empty"] = 1
        for counts, scale in ((features, 1.0), (bigrams, _BIGRAM_WEIGHT)):
            for feature, count in counts.items():
                indices, signs = self._slots(feature)
                np.add.at(row, indices, signs * np.float32(scale * (1.0 + math.log(count))))
        norm = float(np.linalg.norm(row))
        if norm > 0:
            row /= norm

    def _slots(self, feature: str) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """The components and signs of one feature (cached; stable across processes)."""
        cached = self._cache.get(feature)
        if cached is not None:
            return cached
        digest = hashlib.blake2b(
            feature.encode("utf-8"), digest_size=4 * HASHES_PER_FEATURE + 1, key=self._key
        ).digest()
        words = np.frombuffer(digest[:-1], dtype="<u4").astype(np.int64)
        indices = (words % self._dimension).astype(np.intp)
        bits = digest[-1]
        signs = np.array(
            [1.0 if bits >> i & 1 else -1.0 for i in range(HASHES_PER_FEATURE)], dtype=np.float32
        )
        if len(self._cache) < 1_000_000:  # bounded: a huge corpus must not eat memory
            self._cache[feature] = (indices, signs)
        return indices, signs


def _stem(token: str) -> str:
    """A plural folded onto its singular (``brokers`` -> ``broker``), nothing more clever."""
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


class SentenceTransformerEmbedder:
    """A sentence-transformers model (optional extra: ``pip install themis-pipeline[embeddings]``).

    The package is imported when the embedder is created, not before; the model is
    downloaded on first use by sentence-transformers itself. Rows are normalised.
    """

    def __init__(self, model_name: str = DEFAULT_SENTENCE_MODEL, *, batch_size: int = 32) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigError(
                "the sentence-transformers embedder needs the optional extra: "
                "pip install themis-pipeline[embeddings] (or use the built-in hashing embedder)"
            )
        module: Any = importlib.import_module("sentence_transformers")
        self._model: Any = module.SentenceTransformer(model_name)
        self._model_name = model_name
        self._batch_size = batch_size
        self._dimension = int(self._model.get_sentence_embedding_dimension())

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def name(self) -> str:
        return f"sentence-transformers({self._model_name})"

    def embed(self, texts: Sequence[str]) -> Float32Matrix:
        vectors = self._model.encode(
            list(texts),
            batch_size=self._batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
