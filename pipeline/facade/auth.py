"""API keys and roles of the facade: who may call what.

A caller presents a key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
Each key has one role: ``writer`` (ingest, stats, queries, search), ``admin``
(everything a writer may do, plus flushes and replication configuration) or
``replicator`` (only WAL apply, the role a primary's shipper presents).

Keys come from ``facade.api_keys`` (``THEMIS_FACADE_API_KEYS``: comma-separated
``key:role`` pairs) and from ``facade.api_keys_file`` (one ``key:role`` per line,
``#`` comments and blank lines ignored). A presented key is compared with **every**
configured key in constant time (:func:`hmac.compare_digest`, no early exit), so the
time an answer takes does not tell how much of a key was right. Keys are never logged
and never appear in error messages.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from enum import StrEnum
from pathlib import Path

from pipeline.config import FacadeSettings
from pipeline.errors import ConfigError

__all__ = ["ApiKeyring", "Role", "load_keyring", "presented_key"]


class Role(StrEnum):
    """What a key may do; ``admin`` implies ``writer``."""

    WRITER = "writer"
    ADMIN = "admin"
    REPLICATOR = "replicator"
    """May only apply WAL batches (``POST /api/v1/wal/apply``): a primary's shipper."""

    def allows(self, needed: Role) -> bool:
        if self is Role.REPLICATOR or needed is Role.REPLICATOR:
            return self is needed
        return self is Role.ADMIN or needed is Role.WRITER


class ApiKeyring:
    """The configured keys; :meth:`role_of` finds a presented key's role in constant time.

    Each key also has a caller id (a digest of the key, computed once) that rate limits
    are kept under, so the keys themselves are kept in no other table.
    """

    def __init__(self, entries: Iterable[tuple[str, Role]]) -> None:
        self._entries = [
            (key.encode("utf-8"), role, _caller_id(key.encode("utf-8"))) for key, role in entries
        ]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # never show the keys themselves
        return f"ApiKeyring({len(self._entries)} keys)"

    def role_of(self, presented: str) -> Role | None:
        """The role of ``presented``, or ``None`` if it is no configured key.

        Every configured key is compared, whether or not an earlier one matched.
        """
        found = self.caller_of(presented)
        return None if found is None else found[0]

    def keys_of(self, role: Role) -> list[str]:
        """The configured keys of ``role`` (for the WAL applier's own check)."""
        return [key.decode("utf-8") for key, found, _ in self._entries if found is role]

    def caller_of(self, presented: str) -> tuple[Role, str] | None:
        """The role and caller id of ``presented``, or ``None``; compares every key."""
        # A header's bytes that are no UTF-8 arrive as lone surrogates: encoded back as the
        # bytes sent, they match no configured key (always valid UTF-8).
        candidate = presented.encode("utf-8", "surrogateescape")
        found: tuple[Role, str] | None = None
        for key, role, caller in self._entries:
            if hmac.compare_digest(candidate, key) and found is None:
                found = (role, caller)
        return found


def _caller_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:24]


def parse_key_entries(text: str, *, separator: str, origin: str) -> list[tuple[str, Role]]:
    """``key:role`` entries separated by ``separator``; ``ConfigError`` names a bad entry's place.

    The role is after the last ``:``, so a key may itself contain colons.
    """
    entries: list[tuple[str, Role]] = []
    for number, raw in enumerate(text.split(separator), start=1):
        item = raw.strip()
        if not item or item.startswith("#"):
            continue
        key, sep, role = item.rpartition(":")
        if not sep or not key.strip():
            raise ConfigError(
                f"{origin}: entry {number} is not 'key:role' (roles: writer, admin, replicator)"
            )
        try:
            entries.append((key.strip(), Role(role.strip())))
        except ValueError:
            raise ConfigError(
                f"{origin}: entry {number} ends in no known role (the entry is not shown: "
                "a key may contain ':'); allowed: writer, admin, replicator"
            ) from None
    return entries


def load_keyring(settings: FacadeSettings) -> ApiKeyring:
    """The keys of ``facade.api_keys`` and of the file ``facade.api_keys_file``."""
    entries = parse_key_entries(settings.api_keys, separator=",", origin="facade.api_keys")
    if settings.api_keys_file:
        path = Path(settings.api_keys_file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"facade.api_keys_file: cannot read {path} ({exc.strerror}); "
                "fix the path or unset THEMIS_FACADE_API_KEYS_FILE"
            ) from None
        entries += parse_key_entries(text, separator="\n", origin=str(path))
    return ApiKeyring(entries)


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a request presents: ``Authorization: Bearer <key>`` (or ``Token <key>``, as
    InfluxDB clients send it), else ``X-API-Key``."""
    authorization = headers.get("Authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() in ("bearer", "token") and token.strip():
        return token.strip()
    api_key = headers.get("X-API-Key", "").strip()
    return api_key or None
