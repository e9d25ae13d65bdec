/** What a client needs from a transport; the HTTP and binary transports both provide it. */
import type {
  CompressionConfig, FlushResult, QueryRequest, QueryResult, ReplicationStats, SearchRequest,
  SearchResult, VectorEntity, WriteResult,
} from "./types.js";
import type { WirePoint } from "./validate.js";

export interface Transport {
  /** A batch of buffered points (one request). */
  tsPutBatch(points: readonly WirePoint[]): Promise<WriteResult>;
  /** One point, durable. */
  tsPut(point: WirePoint): Promise<void>;
  tsStats(): Promise<Record<string, unknown>>;
  tsFlush(): Promise<FlushResult>;
  tsQuery(q: QueryRequest): Promise<QueryResult>;
  /** A batch of buffered adds or updates (one request on binary; one per item on HTTP). */
  vectorWrite(op: "add" | "update", items: readonly VectorEntity[]): Promise<WriteResult>;
  vectorRemove(pk: string): Promise<WriteResult>;
  /** One vector, durable. */
  vectorAdd(entity: VectorEntity): Promise<void>;
  vectorStats(): Promise<Record<string, unknown>>;
  vectorFlush(): Promise<FlushResult>;
  search(req: SearchRequest): Promise<SearchResult>;
  replicationStats(): Promise<ReplicationStats>;
  replicationConfig(c: CompressionConfig): Promise<Record<string, unknown>>;
  addReplica(replicaId: string, endpoint: string): Promise<Record<string, unknown>>;
  removeReplica(replicaId: string): Promise<Record<string, unknown>>;
  /** The largest request body this transport sends, in bytes. */
  maxBatchBytes(): number;
  close(): Promise<void>;
}
