"""Client settings: arguments, or one connection string (``THEMIS_CLIENT_CONF``).

``SCHEMA::key=value;key=value`` with the keys of ``docs/clients/CONFIGURATION.md``, the
same in every SDK. ``;;`` in a value stands for ``;``. Explicit arguments win over the
connection string, which wins over the defaults.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Final

from themisdb.errors import ConfigurationError

__all__ = ["ENV_VAR", "SCHEMAS", "ClientConfig", "parse_conf"]

ENV_VAR: Final = "THEMIS_CLIENT_CONF"
SCHEMAS: Final = {"http": 8080, "https": 8443, "themis": 9090, "themis+tls": 9443}
"""Each transport schema and its default port."""


@dataclass(frozen=True)
class ClientConfig:
    """Every setting of a client; see ``docs/clients/CONFIGURATION.md``."""

    schema: str = "http"
    addr: str = ""
    http_addr: str | None = None
    api_key: str | None = None
    client_id: str = "themisdb-python"
    request_timeout_ms: int = 10_000
    auto_flush: bool = True
    auto_flush_rows: int = 5000
    auto_flush_bytes: int = 1_048_576
    auto_flush_interval_ms: int = 1000
    max_batch_bytes: int = 1_048_576
    max_buffer_rows: int = 100_000
    max_buffer_bytes: int = 67_108_864
    max_retries: int = 5
    retry_timeout_ms: int = 10_000
    retry_initial_backoff_ms: int = 100
    retry_max_backoff_ms: int = 5000
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_verify: bool = True

    @property
    def binary(self) -> bool:
        """The binary protocol (``themis``/``themis+tls``) rather than HTTP."""
        return self.schema.startswith("themis")

    @property
    def tls(self) -> bool:
        return self.schema in ("https", "themis+tls")

    @property
    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.addr.rpartition(":")
        if not sep:
            return self.addr, SCHEMAS[self.schema]
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigurationError(f"addr: bad port in {self.addr!r}", key="addr")
        return host.strip("[]"), int(port)

    def validated(self) -> ClientConfig:
        """This configuration, checked: every size and time positive, ``addr`` present."""
        if self.schema not in SCHEMAS:
            raise ConfigurationError(
                f"unknown schema {self.schema!r}; one of {', '.join(SCHEMAS)}", key="schema"
            )
        if not self.addr:
            raise ConfigurationError("addr is required (host:port)", key="addr")
        self.host_port  # noqa: B018 - checks the port
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type == "int" and value < (0 if f.name == "max_retries" else 1):
                raise ConfigurationError(f"{f.name} must be positive; got {value}", key=f.name)
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigurationError("tls_cert and tls_key go together", key="tls_cert")
        return self

    def with_options(self, **options: Any) -> ClientConfig:
        """This configuration with ``options`` (``None`` values ignored) applied."""
        known = {f.name for f in dataclasses.fields(self)}
        given = {k: v for k, v in options.items() if v is not None}
        for key in given:
            if key not in known:
                raise ConfigurationError(f"unknown option {key!r}", key=key)
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in given.items()})


_BOOLS: Final = {"on": True, "true": True, "off": False, "false": False}
_FIELDS: Final = {f.name: f.type for f in dataclasses.fields(ClientConfig)}


def _coerce(key: str, value: object) -> Any:
    """``value`` of ``key`` as its field's type; text as a connection string writes it."""
    kind = _FIELDS[key]
    if kind == "int" and isinstance(value, str):
        if not value.strip().isdigit():
            raise ConfigurationError(f"{key} must be an integer; got {value!r}", key=key)
        return int(value)
    if kind == "bool" and isinstance(value, str):
        if value.strip().lower() not in _BOOLS:
            raise ConfigurationError(f"{key} must be on or off; got {value!r}", key=key)
        return _BOOLS[value.strip().lower()]
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigurationError(f"{key} must be an integer; got {value!r}", key=key)
    if kind == "bool" and not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be a boolean; got {value!r}", key=key)
    return value


def _split(body: str) -> list[str]:
    parts, current, i = [], [], 0
    while i < len(body):
        if body[i] == ";":
            if body[i + 1 : i + 2] == ";":
                current.append(";")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(body[i])
        i += 1
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def parse_conf(conf: str | None = None, **options: Any) -> ClientConfig:
    """A checked :class:`ClientConfig` from ``conf`` (default ``$THEMIS_CLIENT_CONF``)
    with ``options`` on top."""
    conf = os.environ.get(ENV_VAR) if conf is None else conf
    config = ClientConfig()
    if conf:
        schema, sep, body = conf.partition("::")
        if not sep:
            raise ConfigurationError(
                f"a connection string starts with SCHEMA:: ({', '.join(SCHEMAS)})", key="schema"
            )
        values: dict[str, Any] = {"schema": schema.strip().lower()}
        for part in _split(body):
            key, eq, value = part.partition("=")
            key = key.strip().lower()
            if not eq or key not in _FIELDS or key == "schema":
                raise ConfigurationError(f"unknown key {key!r} in the connection string", key=key)
            values[key] = _coerce(key, value)
        config = dataclasses.replace(config, **values)
    return config.with_options(**options).validated()
