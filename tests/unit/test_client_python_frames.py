"""The Python SDK's codec (``themisdb.protocol``) writes and reads the spec's golden frames
byte for byte; its connection strings read as docs/clients/CONFIGURATION.md says."""

from __future__ import annotations

import array
import json
import math
import struct
from pathlib import Path
from typing import Any

import pytest
from themisdb import ClientConfig, ConfigurationError, parse_conf
from themisdb import protocol as wire
from themisdb.transport import frame_error, http_error

pytestmark = pytest.mark.unit

SPEC = Path(__file__).resolve().parents[2] / "spec" / "binary"
FLAGS = {"REPLY": wire.Flags.REPLY, "ACK_QUEUED": wire.Flags.ACK_QUEUED}


def _frames() -> list[dict[str, Any]]:
    frames = []
    for name in ("session", "ts", "vectors", "errors", "replication"):
        frames.extend(json.loads((SPEC / f"{name}.json").read_text())["frames"])
    return frames


def _float(value: Any) -> float:
    if isinstance(value, str):
        if value.startswith("NaN:"):
            return struct.unpack("<d", bytes.fromhex(value[4:])[::-1])[0]  # type: ignore[no-any-return]
        return {"NaN": math.nan, "inf": math.inf, "-inf": -math.inf}[value]
    return float(value)


def _f32(values: list[float]) -> bytes:
    return array.array("f", values).tobytes()


def _payload(body: dict[str, Any]) -> bytes | None:
    """What the SDK encodes for ``body``; ``None`` for bodies only the server sends."""
    kind = body["type"]
    if kind == "HelloRequest":
        return wire.encode_hello(body["client_id"])
    if kind == "AuthRequest":
        return wire.encode_auth(bytes.fromhex(body["credential"]).decode())
    if kind == "Ping":
        return bytes.fromhex(body["data"])
    if kind == "Empty":
        return b""
    if kind == "TsPoint":
        value = _float(body["value"])
        return wire.encode_ts_point(body["metric"], body["entity"], body["timestamp_ms"], value,
                                    body["tags"])  # fmt: skip
    if kind == "TsBatch":
        points = [(p["metric"], p["entity"], p["timestamp_ms"], _float(p["value"]), p["tags"])
                  for p in body["points"]]  # fmt: skip
        return wire.encode_ts_batch(points)
    if kind == "VectorWrite":
        vector = body["vector"]
        return wire.encode_vector_write(body["pk"], _f32(vector), len(vector), body["metadata"])
    if kind == "VectorBatch":
        items = list(zip(body["pks"], map(_f32, body["vectors"]), body["metadata"], strict=True))
        return wire.encode_vector_batch(items, len(body["vectors"][0]))
    if kind == "VectorRemove":
        return wire.encode_vector_remove(body["pk"])
    if kind == "WalApply":
        return wire.encode_wal_apply(body["primary_id"], bytes.fromhex(body["batch"]))
    if kind == "JsonBody" and not body.get("reply"):
        return wire.encode_json(body["document"])
    return None


REQUESTS = [f for f in _frames() if "REPLY" not in f["frame"]["flags"]]
REPLIES = [f for f in _frames() if "REPLY" in f["frame"]["flags"]]


@pytest.mark.parametrize("golden", REQUESTS, ids=[f["name"] for f in REQUESTS])
def test_every_request_frame_of_the_spec_is_encoded_byte_for_byte(golden: dict[str, Any]) -> None:
    frame = golden["frame"]
    payload = _payload(frame["body"])
    assert payload is not None, frame["body"]["type"]
    flags = sum(FLAGS[name] for name in frame["flags"])
    encoded = wire.encode_frame(wire.Opcode[frame["opcode"]], frame["request_id"], payload, flags)
    assert encoded.hex() == golden["hex"]


@pytest.mark.parametrize("golden", REPLIES, ids=[f["name"] for f in REPLIES])
def test_every_reply_frame_of_the_spec_is_read_as_the_spec_says(golden: dict[str, Any]) -> None:
    raw = bytes.fromhex(golden["hex"])
    opcode, flags, length, request_id = wire.HEADER.unpack_from(raw)
    payload = raw[wire.HEADER.size :]
    frame, body = golden["frame"], golden["frame"]["body"]
    assert (opcode, request_id, len(payload)) == (
        wire.Opcode[frame["opcode"]], frame["request_id"], length,
    )  # fmt: skip
    assert flags & wire.Flags.REPLY
    kind = body["type"]
    if kind == "HelloOk":
        assert wire.decode_hello_ok(payload) == wire.HelloOk(
            body["version"], body["max_frame_bytes"], body["max_in_flight"], body["auth_methods"]
        )
    elif kind == "WriteAck":
        assert wire.decode_write_ack(payload) == (body["accepted"], body["buffer_size"])
    elif kind == "ErrorReply":
        reply = wire.decode_error(payload)
        assert (reply.code, reply.retriable, reply.retry_after_ms, reply.message) == (
            body["code"], body["retriable"], body["retry_after_ms"], body["message"],
        )  # fmt: skip
        assert frame_error(reply).retriable == body["retriable"]
    elif kind == "JsonBody":
        assert json.loads(payload) == body["document"]
    elif kind == "Ping":
        assert payload.hex() == body["data"]
    elif kind == "AuthOk":
        assert payload[1:].decode() == body["role"]
    elif kind == "GoAway":
        assert struct.unpack_from("<IH", payload) == (body["last_request_id"], body["code"])
    else:  # pragma: no cover - a new reply type in the spec
        pytest.fail(f"no reader for {kind}")


def test_a_connection_string_sets_every_key_and_arguments_win_over_it() -> None:
    conf = (
        "themis::addr=db.example:9091;api_key=k;;with;;semicolons;http_addr=db.example:8081;"
        "auto_flush_rows=7;auto_flush=off;max_retries=0;tls_verify=false;client_id=c"
    )
    config = parse_conf(conf, auto_flush_rows=9)
    assert (config.schema, config.host_port, config.api_key) == (
        "themis", ("db.example", 9091), "k;with;semicolons",
    )  # fmt: skip
    assert (config.http_addr, config.auto_flush_rows, config.auto_flush) == (
        "db.example:8081", 9, False,
    )  # fmt: skip
    assert (config.max_retries, config.tls_verify, config.binary, config.tls) == (
        0, False, True, False,
    )  # fmt: skip
    assert parse_conf("https::addr=h").host_port == ("h", 8443)
    assert ClientConfig(schema="themis+tls", addr="h").host_port == ("h", 9443)


@pytest.mark.parametrize(
    ("conf", "key"),
    [
        ("http:addr=h:1", "schema"),
        ("gopher::addr=h:1", "schema"),
        ("http::api_key=k", "addr"),
        ("http::addr=h:1;colour=blue", "colour"),
        ("http::addr=h:1;auto_flush_rows=many", "auto_flush_rows"),
        ("http::addr=h:1;auto_flush=maybe", "auto_flush"),
        ("http::addr=h:1;auto_flush_rows=0", "auto_flush_rows"),
        ("http::addr=h:99999", "addr"),
        ("http::addr=h:1;tls_cert=c.pem", "tls_cert"),
    ],
)
def test_a_bad_connection_string_names_its_key(conf: str, key: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        parse_conf(conf)
    assert caught.value.key == key


@pytest.mark.parametrize(
    ("status", "body", "name", "retriable"),
    [
        (400, {"error": "field 'vector' must have 16 components"}, "ValidationError", False),
        (401, {"error": "unknown key"}, "AuthenticationError", False),
        (403, {"error": "needs admin"}, "PermissionDeniedError", False),
        (404, {"error": "no pk"}, "NotFoundError", False),
        (413, {"error": "body too large"}, "ValidationError", False),
        (429, {"error": "Buffer overflow", "buffer_size": 7}, "BufferOverflowError", True),
        (429, {"error": "rate"}, "RateLimitedError", True),
        (503, {"error": "no worker"}, "ServerUnavailableError", True),
    ],
)
def test_each_status_is_its_typed_error(
    status: int, body: dict[str, Any], name: str, retriable: bool
) -> None:
    error = http_error(status, body, "2")
    assert (type(error).__name__, error.retriable, error.status) == (name, retriable, status)
    if name == "ValidationError":
        assert getattr(error, "field", None) in ("vector", None)
    if name == "RateLimitedError":
        assert getattr(error, "retry_after", None) == 2.0
    if name == "BufferOverflowError":
        assert getattr(error, "buffer_size", None) == 7


def test_a_batch_encoded_from_columns_is_the_batch_encoded_point_by_point() -> None:
    series = [
        ("cpu", "s1", (("dc", "eu"),)),
        ("cpu", "s2", ()),
        ("mem", "s1", (("dc", "eu"), ("r", "1"))),
    ]
    sids = [0, 1, 2, 0, 2, 1]
    ts = [1, 1, 2, -(2**63), 2**63 - 1, 0]
    values = [1.5, -0.0, math.inf, math.nan, 2.5, 1e300]
    points = [
        (series[s][0], series[s][1], t, v, dict(series[s][2]) or None)
        for s, t, v in zip(sids, ts, values, strict=True)
    ]
    assert wire.encode_ts_columns(series, sids, ts, values) == wire.encode_ts_batch(points)
    assert wire.encode_ts_columns(series, [], [], []) == wire.encode_ts_batch([])
