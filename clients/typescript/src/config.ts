/**
 * Client settings: the connection string and keys of docs/clients/CONFIGURATION.md.
 *
 * Precedence: explicit options, then the connection string (`conf`, or the
 * `THEMIS_CLIENT_CONF` environment variable when no `conf` is given), then the defaults.
 * The environment is read only when a client is built, never at import.
 */
import { ConfigurationError } from "./errors.js";

export type Schema = "http" | "https" | "themis" | "themis+tls";

/** Every setting, resolved. Sizes are bytes, times milliseconds. */
export interface ResolvedConfig {
  schema: Schema;
  /** `host:port` of the facade's HTTP or binary door. */
  addr: string;
  /** The binary transport's HTTP door (for query, search, direct writes, replicas). */
  httpAddr: string;
  apiKey: string | undefined;
  clientId: string;
  requestTimeoutMs: number;
  autoFlush: boolean;
  autoFlushRows: number;
  autoFlushBytes: number;
  autoFlushIntervalMs: number;
  maxBatchBytes: number;
  maxBufferRows: number;
  maxBufferBytes: number;
  maxRetries: number;
  retryTimeoutMs: number;
  retryInitialBackoffMs: number;
  retryMaxBackoffMs: number;
  tlsCa: string | undefined;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsVerify: boolean;
}

/** Options of every client; each one overrides the same key of the connection string. */
export interface ClientOptions {
  /** A connection string, `schema::key=value;...`. Default: `THEMIS_CLIENT_CONF`. */
  conf?: string;
  schema?: Schema;
  addr?: string;
  httpAddr?: string;
  apiKey?: string;
  clientId?: string;
  requestTimeoutMs?: number;
  autoFlush?: boolean;
  autoFlushRows?: number;
  autoFlushBytes?: number;
  autoFlushIntervalMs?: number;
  maxBatchBytes?: number;
  maxBufferRows?: number;
  maxBufferBytes?: number;
  maxRetries?: number;
  retryTimeoutMs?: number;
  retryInitialBackoffMs?: number;
  retryMaxBackoffMs?: number;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsVerify?: boolean;
}

const DEFAULT_PORTS: Record<Schema, number> = { http: 8080, https: 8443, themis: 9090, "themis+tls": 9443 };

type Kind = "str" | "int" | "bool";
const KEYS: Record<string, [keyof ResolvedConfig, Kind]> = {
  addr: ["addr", "str"],
  http_addr: ["httpAddr", "str"],
  api_key: ["apiKey", "str"],
  client_id: ["clientId", "str"],
  request_timeout_ms: ["requestTimeoutMs", "int"],
  auto_flush: ["autoFlush", "bool"],
  auto_flush_rows: ["autoFlushRows", "int"],
  auto_flush_bytes: ["autoFlushBytes", "int"],
  auto_flush_interval_ms: ["autoFlushIntervalMs", "int"],
  max_batch_bytes: ["maxBatchBytes", "int"],
  max_buffer_rows: ["maxBufferRows", "int"],
  max_buffer_bytes: ["maxBufferBytes", "int"],
  max_retries: ["maxRetries", "int"],
  retry_timeout_ms: ["retryTimeoutMs", "int"],
  retry_initial_backoff_ms: ["retryInitialBackoffMs", "int"],
  retry_max_backoff_ms: ["retryMaxBackoffMs", "int"],
  tls_ca: ["tlsCa", "str"],
  tls_cert: ["tlsCert", "str"],
  tls_key: ["tlsKey", "str"],
  tls_verify: ["tlsVerify", "bool"],
};

const DEFAULTS = {
  clientId: "themisdb-typescript",
  requestTimeoutMs: 10_000,
  autoFlush: true,
  autoFlushRows: 5000,
  autoFlushBytes: 1_048_576,
  autoFlushIntervalMs: 1000,
  maxBatchBytes: 1_048_576,
  maxBufferRows: 100_000,
  maxBufferBytes: 67_108_864,
  maxRetries: 5,
  retryTimeoutMs: 10_000,
  retryInitialBackoffMs: 100,
  retryMaxBackoffMs: 5000,
  tlsVerify: true,
};

/** Split `schema::k=v;k=v` (`;;` is a literal `;`) into the schema and its pairs. */
export function parseConnectionString(conf: string): { schema: Schema; values: Partial<ResolvedConfig> } {
  const at = conf.indexOf("::");
  if (at < 0) throw new ConfigurationError(`connection string ${JSON.stringify(conf)} has no 'schema::'`, "schema");
  const schema = conf.slice(0, at);
  if (!(schema in DEFAULT_PORTS)) {
    throw new ConfigurationError(`schema ${JSON.stringify(schema)} is not one of http, https, themis, themis+tls`, "schema");
  }
  const values: Record<string, unknown> = {};
  const body = conf.slice(at + 2);
  let i = 0;
  while (i < body.length) {
    let pair = "";
    for (; i < body.length; i++) {
      const ch = body[i];
      if (ch === ";") {
        if (body[i + 1] === ";") { pair += ";"; i++; continue; }
        break;
      }
      pair += ch;
    }
    i++;
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    if (eq < 0) throw new ConfigurationError(`'${pair}' is not key=value`, pair);
    const key = pair.slice(0, eq);
    const raw = pair.slice(eq + 1);
    const spec = KEYS[key];
    if (spec === undefined) throw new ConfigurationError(`unknown key '${key}'`, key);
    values[spec[0]] = convert(key, raw, spec[1]);
  }
  return { schema: schema as Schema, values: values as Partial<ResolvedConfig> };
}

function convert(key: string, raw: string, kind: Kind): string | number | boolean {
  if (kind === "str") return raw;
  if (kind === "bool") {
    if (raw === "on" || raw === "true") return true;
    if (raw === "off" || raw === "false") return false;
    throw new ConfigurationError(`key '${key}' must be on/off (or true/false), not '${raw}'`, key);
  }
  if (!/^\d+$/.test(raw)) throw new ConfigurationError(`key '${key}' must be a non-negative integer, not '${raw}'`, key);
  return Number(raw);
}

function envConf(): string | undefined {
  const g = globalThis as { process?: { env?: Record<string, string | undefined> } };
  return g.process?.env?.["THEMIS_CLIENT_CONF"];
}

/** Resolve options over the connection string over the defaults. */
export function resolveConfig(options: ClientOptions = {}): ResolvedConfig {
  const conf = options.conf ?? envConf();
  const parsed = conf ? parseConnectionString(conf) : undefined;
  const schema: Schema = options.schema ?? parsed?.schema ?? "http";
  const merged: Record<string, unknown> = { ...DEFAULTS, ...(parsed?.values ?? {}) };
  for (const [k, v] of Object.entries(options)) {
    if (k === "conf" || k === "schema" || v === undefined) continue;
    merged[k] = v;
  }
  const addr = merged["addr"];
  if (typeof addr !== "string" || addr === "") throw new ConfigurationError("'addr' is required (host:port)", "addr");
  const resolved = { ...merged, schema, addr: withPort(addr, DEFAULT_PORTS[schema], "addr") } as Record<string, unknown>;
  const host = hostOf(resolved["addr"] as string);
  const httpAddr = typeof merged["httpAddr"] === "string" ? (merged["httpAddr"] as string) : `${host}:8080`;
  resolved["httpAddr"] = schema === "http" || schema === "https" ? resolved["addr"] : withPort(httpAddr, 8080, "http_addr");
  for (const [key, [name, kind]] of Object.entries(KEYS)) {
    const v = resolved[name];
    if (v === undefined) continue;
    if (kind === "int" && !(typeof v === "number" && Number.isSafeInteger(v) && v >= 0)) {
      throw new ConfigurationError(`key '${key}' must be a non-negative integer`, key);
    }
    if (kind === "bool" && typeof v !== "boolean") throw new ConfigurationError(`key '${key}' must be a boolean`, key);
    if (kind === "str" && typeof v !== "string") throw new ConfigurationError(`key '${key}' must be a string`, key);
  }
  for (const key of ["auto_flush_rows", "max_batch_bytes", "max_buffer_rows", "max_buffer_bytes"] as const) {
    const spec = KEYS[key]!;
    if (resolved[spec[0]] === 0) throw new ConfigurationError(`key '${key}' must be at least 1`, key);
  }
  return resolved as unknown as ResolvedConfig;
}

function hostOf(addr: string): string {
  if (addr.startsWith("[")) return addr.slice(0, addr.indexOf("]") + 1);
  const c = addr.lastIndexOf(":");
  return c < 0 ? addr : addr.slice(0, c);
}

function withPort(addr: string, port: number, key: string): string {
  if (/^\[.*\]$/.test(addr) || !/:\d*$/.test(addr)) return `${addr}:${port}`;
  if (/:$/.test(addr)) throw new ConfigurationError(`key '${key}' has an empty port: '${addr}'`, key);
  return addr;
}
