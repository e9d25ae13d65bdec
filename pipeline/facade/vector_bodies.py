"""The bodies of the vector writes, decoded in C: one operation per request.

:func:`vector_op_from_body` decodes ``{"pk", "vector", "metadata"?}`` (``{"pk"}`` for a
remove) with msgspec: the vector becomes a float32 array in one pass instead of being
checked number by number in Python, which for 768 dimensions was most of a request's
cost. Whatever the fast path does not take as it is (a wrong type, a missing or
unknown field, a wrong dimension, a non-finite component, a pk or metadata over its
limit) goes through :func:`~pipeline.validation.vector_op_from_json`, which
accepts the same bodies and names what is wrong in the 400. So the fast path changes
the cost, never the answer; ``tests/unit/test_facade_auth.py`` checks both agree.
"""

from __future__ import annotations

from typing import Final

import msgspec
import numpy as np
import numpy.typing as npt
import orjson

from pipeline.validation import parse_json, vector_op_from_json
from pipeline.vectors.ops import MAX_PK_BYTES, OpType, VectorOp, op_metadata_bytes

__all__ = ["vector_op_from_body", "vector_op_from_parts"]


class _Upsert(msgspec.Struct, forbid_unknown_fields=True):
    pk: str
    vector: list[float]
    metadata: msgspec.Raw = msgspec.Raw(b"")


class _Remove(msgspec.Struct, forbid_unknown_fields=True):
    pk: str


_UPSERT: Final = msgspec.json.Decoder(_Upsert)
_REMOVE: Final = msgspec.json.Decoder(_Remove)
_NOT_FAST: Final = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    RecursionError,  # msgspec on nesting deeper than the interpreter's limit
    orjson.JSONDecodeError,  # raw metadata msgspec passes but orjson refuses (1e400, bad UTF-8)
)


def vector_op_from_body(
    body: bytes, op: OpType, dimension: int, max_metadata_bytes: int
) -> VectorOp:
    """The checked operation ``op`` (from the path) of a request body; ``dimension`` is
    the configured vector length, ``max_metadata_bytes`` bounds the metadata's JSON size
    (bytes). :class:`~pipeline.errors.InvalidRequest` names the bad field."""
    try:
        fast = _fast(body, op, dimension, max_metadata_bytes)
    except _NOT_FAST:
        fast = None
    if fast is not None:
        return fast
    return vector_op_from_json(parse_json(body), op, dimension, max_metadata_bytes)


def _fast(body: bytes, op: OpType, dimension: int, max_metadata_bytes: int) -> VectorOp | None:
    """The operation if the body is plainly valid, else ``None`` (or a msgspec error)."""
    if op is OpType.REMOVE:
        pk = _REMOVE.decode(body).pk
        return VectorOp(op, pk, None, {}) if _pk_ok(pk) else None
    upsert = _UPSERT.decode(body)
    if not _pk_ok(upsert.pk) or len(upsert.vector) != dimension:
        return None
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
        vector = np.array(upsert.vector, dtype=np.float32)
    if not bool(np.isfinite(vector).all()):
        return None
    raw = bytes(upsert.metadata)
    metadata = orjson.loads(raw) if raw else None
    if metadata is None:
        metadata = {}
    elif not isinstance(metadata, dict) or op_metadata_bytes(metadata) > max_metadata_bytes:
        return None
    return VectorOp(op, upsert.pk, vector, metadata)


def vector_op_from_parts(
    op: OpType,
    pk: str,
    *,
    vector: npt.NDArray[np.float32] | None,
    metadata: dict[str, object] | None,
    dimension: int,
    max_metadata_bytes: int,
) -> VectorOp:
    """The checked operation of fields another door decoded (the binary protocol's).

    What passes the fast path's checks is taken as it is; anything else goes through
    :func:`~pipeline.validation.vector_op_from_json` as the equivalent JSON body,
    so a refusal names the field exactly as ``POST /vectors/...`` would.
    """
    raw: dict[str, object] = {"pk": pk}
    if op is OpType.REMOVE:
        if _pk_ok(pk):
            return VectorOp(op, pk, None, {})
    else:
        assert vector is not None
        meta = {} if metadata is None else metadata
        if (
            _pk_ok(pk)
            and vector.shape == (dimension,)
            and bool(np.isfinite(vector).all())
            and op_metadata_bytes(meta) <= max_metadata_bytes
        ):
            return VectorOp(op, pk, vector, meta)
        raw["vector"] = vector.tolist()
        if metadata is not None:
            raw["metadata"] = metadata
    return vector_op_from_json(raw, op, dimension, max_metadata_bytes)


def _pk_ok(pk: str) -> bool:
    return bool(pk) and (len(pk) * 4 <= MAX_PK_BYTES or len(pk.encode()) <= MAX_PK_BYTES)
