"""Every limit on outside input, in one table.

Each door (the facade's HTTP bodies, records on the input topics, WAL batches a replica
applies) checks these before anything is produced or applied, and names the limit in
its 4xx answer or dead-letter reason. A record that passes the checks at the door can
be flushed: nothing later (a block header's u16 key length, a frame's u32 counts) can
refuse it.

Limits that an operator may want to change are settings instead (``facade.max_body_bytes``,
``vector_auto_buffer.max_metadata_bytes``, ``vector_auto_buffer.dimension``); their
defaults and bounds are in :mod:`pipeline.config`, and :data:`LIMITS` lists them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "LIMITS",
    "MAX_BINARY_ID_BYTES",
    "MAX_BINARY_MESSAGE_BYTES",
    "MAX_BINARY_PING_BYTES",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_ENTITY_BYTES",
    "MAX_FRAME_BYTES",
    "MAX_FRAME_POINTS",
    "MAX_HTTP_FIELD_BYTES",
    "MAX_HTTP_HEADERS",
    "MAX_LSN",
    "MAX_LSN_HOLES",
    "MAX_METRIC_BYTES",
    "MAX_PK_BYTES",
    "MAX_SEARCH_EF",
    "MAX_SEARCH_K",
    "MAX_SERIES_KEY_BYTES",
    "MAX_TAGS",
    "MAX_TAG_NAME_BYTES",
    "MAX_TAG_VALUE_BYTES",
    "MAX_VECTOR_DIMENSION",
    "MAX_WAL_BODY_BYTES",
    "Limit",
]

MAX_METRIC_BYTES: Final = 4096
"""Longest ``metric`` name in UTF-8 bytes."""
MAX_ENTITY_BYTES: Final = 4096
"""Longest ``entity`` in UTF-8 bytes."""
MAX_TAGS: Final = 256
"""Most tags on one point."""
MAX_TAG_NAME_BYTES: Final = 1024
"""Longest tag name in UTF-8 bytes."""
MAX_TAG_VALUE_BYTES: Final = 16_384
"""Longest tag value in UTF-8 bytes."""
MAX_SERIES_KEY_BYTES: Final = 65_535
"""Longest series key (metric, entity and tags as compact JSON) in UTF-8 bytes: what a
Gorilla block header holds (u16)."""
MAX_FRAME_POINTS: Final = 100_000
"""Most points the facade packs into one TSF1 frame (one Kafka record)."""
MAX_FRAME_BYTES: Final = 4 * 1024 * 1024
"""Largest TSF1 frame the facade writes (bytes; the broker's message limit is larger)."""
MAX_PK_BYTES: Final = 65_535
"""Longest vector primary key in UTF-8 bytes (a VOF1 frame's u16 length)."""
MAX_SEARCH_K: Final = 10_000
"""Largest ``k`` of one k-NN search."""
MAX_SEARCH_EF: Final = 100_000
"""Largest ``ef`` of one k-NN search."""
MAX_HTTP_FIELD_BYTES: Final = 8190
"""Longest HTTP request line and header field (name and value) the facade reads, in bytes."""
MAX_HTTP_HEADERS: Final = 128
"""Most header fields an HTTP request to the facade may have."""
MAX_VECTOR_DIMENSION: Final = 65_536
"""Largest vector dimension (``vector_auto_buffer.dimension``'s upper bound; a binary
frame declaring more is refused from its payload's first bytes)."""
MAX_BINARY_MESSAGE_BYTES: Final = 4096
"""Longest message of a binary-protocol ERROR or GOAWAY frame, UTF-8 bytes."""
MAX_BINARY_PING_BYTES: Final = 64
"""Longest binary-protocol PING payload (echoed by its PONG), bytes."""
MAX_BINARY_ID_BYTES: Final = 256
"""Longest ``client_id`` (HELLO) and ``primary_id`` (WAL_APPLY_COMPRESSED), UTF-8 bytes."""
MAX_WAL_BODY_BYTES: Final = 128 * 1024 * 1024
"""Largest WAL batch body a replica accepts over HTTP (bytes, compressed)."""
MAX_DECOMPRESSED_BYTES: Final = 256 * 1024 * 1024
"""Largest WAL batch after decompression (bytes); checked against the frame's declared
size before decompressing, and as a hard output limit while streaming."""
MAX_LSN: Final = 2**63 - 1
"""Largest LSN a replica stores (SQLite's signed 64-bit integer)."""
MAX_LSN_HOLES: Final = 1000
"""Most LSNs a WAL batch may skip between its entries (a batch may not jump its range)."""


@dataclass(frozen=True, slots=True)
class Limit:
    """One row of :data:`LIMITS`: the name, its value, and what refuses it where."""

    name: str
    value: int | str
    applies_to: str
    refused_with: str


LIMITS: Final[tuple[Limit, ...]] = (
    Limit("MAX_METRIC_BYTES", MAX_METRIC_BYTES, "point metric", "400 / dead letter"),
    Limit("MAX_ENTITY_BYTES", MAX_ENTITY_BYTES, "point entity", "400 / dead letter"),
    Limit("MAX_TAGS", MAX_TAGS, "tags per point", "400 / dead letter"),
    Limit("MAX_TAG_NAME_BYTES", MAX_TAG_NAME_BYTES, "tag name", "400 / dead letter"),
    Limit("MAX_TAG_VALUE_BYTES", MAX_TAG_VALUE_BYTES, "tag value", "400 / dead letter"),
    Limit("MAX_SERIES_KEY_BYTES", MAX_SERIES_KEY_BYTES, "series key", "400 / dead letter"),
    Limit("MAX_FRAME_POINTS", MAX_FRAME_POINTS, "points per TSF1 frame written", "split"),
    Limit("MAX_FRAME_BYTES", MAX_FRAME_BYTES, "bytes per TSF1 frame written", "split"),
    Limit("MAX_PK_BYTES", MAX_PK_BYTES, "vector pk", "400 / dead letter"),
    Limit(
        "vector_auto_buffer.max_metadata_bytes",
        "setting (default 65536)",
        "vector metadata as JSON",
        "400 / dead letter",
    ),
    Limit(
        "vector_auto_buffer.dimension",
        "setting (default 768, 1-65536)",
        "vector components",
        "400 / dead letter",
    ),
    Limit("MAX_SEARCH_K", MAX_SEARCH_K, "k of a search", "400"),
    Limit("MAX_SEARCH_EF", MAX_SEARCH_EF, "ef of a search", "400"),
    Limit("MAX_HTTP_FIELD_BYTES", MAX_HTTP_FIELD_BYTES, "HTTP request line, header field", "431"),
    Limit("MAX_HTTP_HEADERS", MAX_HTTP_HEADERS, "HTTP header fields", "400"),
    Limit(
        "facade.max_body_bytes",
        "setting (default 8 MiB)",
        "request body (so points per request)",
        "413",
    ),
    Limit("MAX_VECTOR_DIMENSION", MAX_VECTOR_DIMENSION, "vector dimension", "400 / ERROR"),
    Limit("MAX_BINARY_MESSAGE_BYTES", MAX_BINARY_MESSAGE_BYTES, "binary ERROR message", "cut"),
    Limit("MAX_BINARY_PING_BYTES", MAX_BINARY_PING_BYTES, "binary PING payload", "ERROR"),
    Limit("MAX_BINARY_ID_BYTES", MAX_BINARY_ID_BYTES, "binary client/primary id", "ERROR"),
    Limit("MAX_WAL_BODY_BYTES", MAX_WAL_BODY_BYTES, "WAL apply body", "413"),
    Limit("MAX_DECOMPRESSED_BYTES", MAX_DECOMPRESSED_BYTES, "WAL batch decompressed", "400"),
    Limit("MAX_LSN", MAX_LSN, "WAL batch last LSN", "400"),
    Limit("MAX_LSN_HOLES", MAX_LSN_HOLES, "LSNs a WAL batch skips", "400"),
)
"""Every limit, for the docs' table (docs/operations.md) and the test that keeps them equal."""
