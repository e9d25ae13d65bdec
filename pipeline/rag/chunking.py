"""Text and Markdown files cut into chunks small enough to embed, with stable pks.

Markdown is cut at headings first (ATX ``#`` .. ``######``, outside fenced code
blocks), then at blank lines (paragraphs), and paragraphs are packed into chunks of
at most ``max_chars`` characters. A paragraph longer than that is cut into windows
of ``max_chars`` characters that overlap by ``overlap`` characters, preferring to
cut at whitespace. Plain text is cut the same way without the heading step.

Every chunk has a deterministic pk, ``<source>#<index>`` (``source`` is the file's
path relative to the ingested folder, with ``/`` separators; ``index`` counts the
file's chunks from 0), and metadata::

    {"source": "guide/setup.md", "title": "Setup", "heading": "Install > Linux",
     "chunk": 3, "chars": 812, "text": "..."}

``title`` is the document's first level-1 heading, else the file name without its
extension; ``heading`` is the path of headings above the chunk joined by ``" > "``
(empty before the first heading and in plain text); ``chars`` is the length of
``text`` in characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Final

from pipeline.errors import InvalidArgument

__all__ = [
    "DEFAULT_MAX_CHARS",
    "DEFAULT_OVERLAP",
    "SUFFIXES",
    "Chunk",
    "chunk_document",
]

DEFAULT_MAX_CHARS: Final = 1000
"""Characters per chunk at most."""
DEFAULT_OVERLAP: Final = 100
"""Characters two windows of one long paragraph share."""
SUFFIXES: Final = frozenset({".md", ".markdown", ".txt"})
"""File name extensions that are chunked; ``.md`` and ``.markdown`` as Markdown."""

_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of a document: its pk, its text and the metadata stored beside its vector."""

    pk: str
    text: str
    metadata: dict[str, Any]

    @property
    def embedding_text(self) -> str:
        """What is embedded: title and heading path, then the text (context for short chunks)."""
        context = " > ".join(
            part for part in (self.metadata["title"], self.metadata["heading"]) if part
        )
        return f"{context}\n{self.text}" if context else self.text


@dataclass(frozen=True, slots=True)
class _Section:
    heading: str
    body: str


def chunk_document(
    text: str,
    source: str,
    *,
    markdown: bool | None = None,
    max_chars: int = DEFAULT_MAX_CHARS,
    overlap: int = DEFAULT_OVERLAP,
) -> list[Chunk]:
    """The chunks of one document, in reading order.

    ``source`` names the document in pks and metadata (a relative POSIX path);
    ``markdown`` defaults to whether ``source`` ends in ``.md`` or ``.markdown``.
    Raises ``ValueError`` unless ``0 <= overlap < max_chars``.
    """
    if not 0 <= overlap < max_chars:
        raise InvalidArgument(
            f"need 0 <= overlap < max_chars; got overlap={overlap} max_chars={max_chars}"
        )
    path = PurePosixPath(source)
    if markdown is None:
        markdown = path.suffix.lower() in {".md", ".markdown"}
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    sections = _markdown_sections(text) if markdown else [_Section("", text)]
    title = _title(sections) if markdown else ""
    title = title or path.stem
    chunks: list[Chunk] = []
    for section in sections:
        for piece in _pack(_paragraphs(section.body), max_chars, overlap):
            index = len(chunks)
            metadata = {
                "source": source,
                "title": title,
                "heading": section.heading,
                "chunk": index,
                "chars": len(piece),
                "text": piece,
            }
            chunks.append(Chunk(f"{source}#{index}", piece, metadata))
    return chunks


def _markdown_sections(text: str) -> list[_Section]:
    """Sections under each heading; a section's heading is the path of headings above it."""
    sections: list[_Section] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    fence: str | None = None

    def close() -> None:
        body = "\n".join(lines).strip()
        if body:
            sections.append(_Section(" > ".join(title for _, title in path), body))
        lines.clear()

    for line in text.split("\n"):
        fenced = _FENCE.match(line)
        if fenced is not None:
            marker = fenced.group(1)
            fence = marker if fence is None else (None if marker == fence else fence)
            lines.append(line)
            continue
        heading = _HEADING.match(line) if fence is None else None
        if heading is None:
            lines.append(line)
            continue
        close()
        level = len(heading.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, heading.group(2).strip()))
    close()
    if not sections and path:  # headings only: keep them searchable
        sections.append(_Section(" > ".join(title for _, title in path), ""))
    return sections


def _title(sections: list[_Section]) -> str:
    for section in sections:
        first = section.heading.split(" > ", 1)[0]
        if first:
            return first
    return ""


def _paragraphs(body: str) -> list[str]:
    return [p.strip() for p in _BLANK_LINES.split(body) if p.strip()]


def _pack(paragraphs: list[str], max_chars: int, overlap: int) -> list[str]:
    """Paragraphs joined into chunks of at most ``max_chars``; long ones cut into windows."""
    out: list[str] = []
    current = ""
    for paragraph in paragraphs:
        if len(paragraph) > max_chars:
            if current:
                out.append(current)
                current = ""
            out.extend(_windows(paragraph, max_chars, overlap))
            continue
        joined = f"{current}\n\n{paragraph}" if current else paragraph
        if len(joined) <= max_chars:
            current = joined
        else:
            out.append(current)
            current = paragraph
    if current:
        out.append(current)
    return out


def _windows(text: str, max_chars: int, overlap: int) -> list[str]:
    """``text`` cut into windows of at most ``max_chars`` that overlap by about ``overlap``."""
    out: list[str] = []
    start = 0
    while start < len(text):
        end = min(start + max_chars, len(text))
        if end < len(text):
            space = text.rfind(" ", start + max_chars // 2, end)
            if space > start:
                end = space
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        if end >= len(text):
            break
        next_start = end - overlap
        if overlap:  # start the overlap at a word boundary when one is near
            space = text.find(" ", next_start, end)
            next_start = space + 1 if space != -1 else next_start
        start = max(next_start, start + 1)
    return out
