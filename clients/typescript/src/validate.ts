/** Checks done before anything is queued or sent: a bad item fails its call at once. */
import { ValidationError } from "./errors.js";
import type { DataPoint, VectorEntity } from "./types.js";

/** A point as the transports send it: `timestamp_ms` a safe integer number. */
export interface WirePoint {
  metric: string;
  entity: string;
  timestamp_ms: number;
  value: number;
  tags: Record<string, string> | undefined;
}

/** A safe integer from a number or bigint; anything else is a ValidationError naming `field`. */
export function safeInteger(v: unknown, field: string): number {
  if (typeof v === "bigint") {
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new ValidationError(`field '${field}' is ${v}, outside the safe integer range (±${Number.MAX_SAFE_INTEGER})`, field);
    }
    return Number(v);
  }
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v)) {
      throw new ValidationError(`field '${field}' is ${v}: it must be an integer within ±${Number.MAX_SAFE_INTEGER} (use a bigint for exact values)`, field);
    }
    return v;
  }
  throw new ValidationError(`field '${field}' must be a number or bigint, not ${typeof v}`, field);
}

export function toWirePoint(p: DataPoint, now: () => number = Date.now): WirePoint {
  if (p === null || typeof p !== "object") throw new ValidationError("a point must be an object", "point");
  if (typeof p.metric !== "string" || p.metric === "") throw new ValidationError("field 'metric' must be a non-empty string", "metric");
  if (typeof p.entity !== "string" || p.entity === "") throw new ValidationError("field 'entity' must be a non-empty string", "entity");
  if (typeof p.value !== "number") throw new ValidationError(`field 'value' must be a number, not ${typeof p.value}`, "value");
  const ts = p.timestamp_ms === undefined ? now() : safeInteger(p.timestamp_ms, "timestamp_ms");
  if (p.tags !== undefined) {
    if (p.tags === null || typeof p.tags !== "object" || Array.isArray(p.tags)) throw new ValidationError("field 'tags' must be an object of strings", "tags");
    for (const k in p.tags) if (typeof p.tags[k] !== "string") throw new ValidationError(`field 'tags' must map names to strings ('${k}' does not)`, "tags");
  }
  return { metric: p.metric, entity: p.entity, timestamp_ms: ts, value: p.value, tags: p.tags };
}

export function checkVector(v: unknown, field = "vector"): void {
  if (v instanceof Float32Array) {
    if (v.length === 0) throw new ValidationError(`field '${field}' must not be empty`, field);
    return;
  }
  if (!Array.isArray(v) || v.length === 0) throw new ValidationError(`field '${field}' must be a non-empty number[] or Float32Array`, field);
  for (let i = 0; i < v.length; i++) {
    const x: unknown = v[i];
    if (typeof x !== "number" || !Number.isFinite(x)) throw new ValidationError(`field '${field}' component ${i} must be a finite number`, field);
  }
}

export function checkEntity(e: VectorEntity): VectorEntity {
  if (e === null || typeof e !== "object") throw new ValidationError("a vector entity must be an object", "entity");
  checkPk(e.pk);
  checkVector(e.vector);
  if (e.metadata !== undefined && (e.metadata === null || typeof e.metadata !== "object" || Array.isArray(e.metadata))) {
    throw new ValidationError("field 'metadata' must be an object", "metadata");
  }
  return e;
}

export function checkPk(pk: unknown): string {
  if (typeof pk !== "string" || pk === "") throw new ValidationError("field 'pk' must be a non-empty string", "pk");
  return pk;
}

/** A size estimate of one point in bytes (its JSON form; the binary form is smaller). */
export function pointBytes(p: WirePoint): number {
  let n = 64 + p.metric.length + p.entity.length;
  if (p.tags) for (const k in p.tags) n += 6 + k.length + p.tags[k]!.length;
  return n;
}

export function vectorOpBytes(pk: string, e?: VectorEntity): number {
  if (!e) return 16 + pk.length;
  return 48 + pk.length + e.vector.length * 12 + (e.metadata ? JSON.stringify(e.metadata).length : 0);
}
