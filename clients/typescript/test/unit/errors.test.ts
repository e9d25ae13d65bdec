import { test } from "node:test";
import assert from "node:assert/strict";
import * as api from "../../src/index.js";
import { errorFromReply } from "../../src/binary.js";
import { ErrorCode } from "../../src/codec.js";

test("every error is a ThemisError with the retriable flag of CONFIGURATION.md", () => {
  assert.equal(new api.RateLimitedError("x", 1000).retriable, true);
  assert.equal(new api.RateLimitedError("x", 1000).retryAfterMs, 1000);
  assert.equal(new api.ServerUnavailableError("x").retriable, true);
  assert.equal(new api.AuthenticationError("x").retriable, false);
  assert.equal(new api.BufferOverflowError("x", 5).bufferSize, 5);
  assert.equal(new api.ValidationError("x", "pk").field, "pk");
  for (const E of [api.AuthenticationError, api.PermissionDeniedError, api.NotFoundError, api.ServerUnavailableError]) {
    const e = new E("m");
    assert.ok(e instanceof api.ThemisError && e instanceof Error);
    assert.equal(e.name, E.name);
  }
});

test("binary error codes map onto the error tree; unknown codes go by their retriable bit", () => {
  const reply = (code: number, retriable = false) => errorFromReply({ code, retriable, retryAfterMs: 250, itemsAccepted: 0, message: "m" }, "OP");
  assert.ok(reply(ErrorCode.RATE_LIMITED, true) instanceof api.RateLimitedError);
  assert.equal(reply(ErrorCode.RATE_LIMITED, true).retryAfterMs, 250);
  assert.ok(reply(ErrorCode.BUFFER_FULL, true) instanceof api.BufferOverflowError);
  assert.equal(reply(ErrorCode.BUFFER_FULL, true).retriable, true);
  assert.ok(reply(ErrorCode.SHUTTING_DOWN, true) instanceof api.ServerUnavailableError);
  assert.ok(reply(ErrorCode.AUTHENTICATION_FAILED) instanceof api.AuthenticationError);
  assert.ok(reply(ErrorCode.PERMISSION_DENIED) instanceof api.PermissionDeniedError);
  assert.ok(reply(ErrorCode.NOT_FOUND) instanceof api.NotFoundError);
  assert.ok(reply(ErrorCode.INVALID_REQUEST) instanceof api.ValidationError);
  assert.equal(reply(999, true).retriable, true);
  assert.equal(reply(999, false).retriable, false);
});

test("the package exports exactly its public names", () => {
  assert.deepEqual(Object.keys(api).sort(), [
    "AuthenticationError", "BufferOverflowError", "ConfigurationError", "NotFoundError", "PermissionDeniedError",
    "RateLimitedError", "ServerUnavailableError", "ThemisError", "ThemisReplicationClient", "ThemisTimeSeriesClient",
    "ThemisVectorClient", "ValidationError", "WriteError", "parseConnectionString", "resolveConfig",
  ]);
});
