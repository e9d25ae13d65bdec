"""``ClusteredEmbeddings``: unit vectors shaped like text embeddings, for the vector benchmark.

Rather than uniform noise: a direction shared by every vector (so cosines are mostly
positive, as with real models), :data:`CLUSTERS` topic centres, and per centre a
random :data:`RANK`-dimensional subspace the points spread in (low intrinsic
dimension), plus a little isotropic noise::

    x = 0.5 * common + centre[c] + basis[c] @ z + noise,   z ~ N(0, 0.25^2 I_rank)
    noise ~ N(0, 0.3^2 / d I_d); then x / |x|

(``common`` a unit vector, ``centre[c]`` and the columns of ``basis[c]`` about unit
length). Points of one cluster have a cosine of about 0.5, of two clusters about 0.1.

:func:`random_unit_vectors` is the opposite: directions drawn uniformly on the unit
sphere, no structure at all. Every pair is nearly orthogonal (cosine about
``N(0, 1/d)``), so the true neighbours of a query are barely closer than the rest:
the hard case for a graph index, where its recall falls below 1 and can be compared.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "CLUSTERS",
    "DIMENSION",
    "RANK",
    "SEED",
    "ClusteredEmbeddings",
    "Vectors",
    "random_unit_vectors",
]

DIMENSION: Final = 768
CLUSTERS: Final = 64
RANK: Final = 16
SEED: Final = 0

Vectors = npt.NDArray[np.float32]


class ClusteredEmbeddings:
    """Unit vectors in clusters on low-rank subspaces (the model in the module docstring).

    Every :meth:`draw` is a fresh draw from the same model (queries, updates).
    """

    def __init__(
        self,
        dimension: int = DIMENSION,
        *,
        clusters: int = CLUSTERS,
        rank: int = RANK,
        seed: int = SEED,
    ) -> None:
        rng = np.random.default_rng(seed)
        scale = 1.0 / np.sqrt(dimension)
        common = rng.normal(size=dimension)
        self.common = (common / np.linalg.norm(common)).astype(np.float32)
        self.centres = (rng.normal(size=(clusters, dimension)) * scale).astype(np.float32)
        self.bases = (rng.normal(size=(clusters, dimension, rank)) * scale).astype(np.float32)
        self.dimension = dimension
        self.clusters = clusters
        self.rank = rank
        self._rng = np.random.default_rng(seed + 1)

    def draw(self, n: int) -> tuple[Vectors, npt.NDArray[np.int64]]:
        """``(vectors, cluster ids)``: ``n`` fresh unit float32 vectors."""
        rng = self._rng
        labels = rng.integers(0, self.clusters, n)
        out = 0.5 * self.common + self.centres[labels]
        latent = rng.normal(0.0, 0.25, (n, self.rank)).astype(np.float32)
        for c in np.unique(labels):
            rows = labels == c
            out[rows] += latent[rows] @ self.bases[c].T
        out += rng.normal(0.0, 0.3 / np.sqrt(self.dimension), out.shape).astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return np.ascontiguousarray(out, dtype=np.float32), labels


def random_unit_vectors(n: int, dimension: int, rng: np.random.Generator) -> Vectors:
    """``n`` float32 unit vectors uniform on the sphere (normalised standard normals)."""
    out = rng.normal(size=(n, dimension)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return np.ascontiguousarray(out, dtype=np.float32)
