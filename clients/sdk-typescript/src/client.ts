// The batch client: events queued in memory, sent to `POST <base>/batch` with an ingest token, durable on the
// platform when a send succeeds.
//
// - A batch goes when `batchSize` events are queued, every `flushIntervalMs`, on `flush()`, and on `close()`.
// - Every batch carries an `Idempotency-Key`, the same on every retry, and every event its own `event_id`: a batch
//   retried after a lost answer is stored once.
// - Network errors, `408`, `429` and `5xx` are retried with exponential backoff and full jitter, waiting at least what
//   `Retry-After` asks; other `4xx` are final (the batch cannot succeed as sent) and go to `onError`.
// - In Node.js, what is queued when the program ends is sent before it exits (`beforeExit`); elsewhere call close().
// - The queue is bounded (`maxQueue`). When it is full, `track` refuses the new event, returns `false` and calls
//   `onDrop`: the caller learns of it at once, and what is already queued keeps its order.

import { uuidv7 } from './crypto.js';
import type { TrackInput, TrackerConfig } from './compat.js';
import { TrackerError } from './errors.js';

/** One event, as `/batch` takes it. */
export interface TrackEvent {
  event_type: string;
  params?: Record<string, string | number | boolean>;
  /** Default: a new UUIDv7 (the platform's dedup key: keep it when you resend an event yourself). */
  event_id?: string;
  /** When it happened, ms since the epoch. Default: when `track` was called. */
  timestamp?: number;
  ip?: string;
  user_agent?: string;
  referer?: string;
  accept_language?: string;
  raw_payload?: unknown;
}

/**
 * What `track` takes: a `TrackEvent`, or the replaced SDK's event shape (`TrackInput`: `request_path`,
 * `request_host`, `referer: null` ...), which its users keep sending to `https://<host>/v1/<ingest token>` (its
 * `apiUrl`): `/v1/<ingest token>/batch` reads that shape, while `/batch` refuses fields it does not know.
 */
export type TrackableEvent = TrackEvent | TrackInput;

export interface Rejected {
  index: number;
  code: string;
  message: string;
}

export interface BatchAnswer {
  accepted: number;
  rejected: Rejected[];
  /** The platform had stored this batch before (a retry of one whose answer was lost). */
  duplicate?: boolean;
}

export interface ClientOptions {
  /** The platform's base URL, e.g. `https://track.example.com`. */
  baseUrl: string;
  /** An ingest token (`trk_ing_...`). */
  token: string;
  /** Events per request (default 100, at most the platform's `MAX_BATCH_SIZE`). */
  batchSize?: number;
  /** Time between background sends (default 1000 ms; 0: only by size, `flush()` and `close()`). */
  flushIntervalMs?: number;
  /** Events held at most (default 10,000). */
  maxQueue?: number;
  /** Attempts per batch before it goes to `onError` (default 8). */
  maxAttempts?: number;
  /** First backoff (default 200 ms), doubled per attempt up to `maxBackoffMs` (default 30 s). */
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  /** A `Retry-After` longer than this (default 60 s, e.g. a monthly quota) ends the attempts at once. */
  maxRetryAfterMs?: number;
  /** A batch that could not be sent, with why; its events are no longer queued. */
  onError?: (error: Error, events: TrackableEvent[]) => void;
  /** An event refused because the queue was full. */
  onDrop?: (event: TrackableEvent) => void;
  /** Events the platform refused one by one (the rest of their batch was stored). */
  onRejected?: (rejected: Array<Rejected & { event: TrackableEvent }>) => void;
  /** A `fetch` of your own (tests, proxies). Default: the global one. */
  fetch?: typeof fetch;
  /** The batch path (default `/batch`). */
  path?: string;
  /** Turns the queued events into the request body (default: the JSON array `/batch` reads). */
  encode?: (events: TrackableEvent[]) => string;
}

// Node.js: what open clients still hold when the program has nothing else to do is sent before it exits (their
// timers do not keep it alive); elsewhere, and on signals, call close(). One listener for every client.
const open = new Set<TrackerClient>();
(globalThis as { process?: { once?: (event: string, listener: () => void) => void } }).process?.once?.(
  'beforeExit',
  () => void Promise.all([...open].map((client) => client.close().catch(() => {}))),
);

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Seconds or an HTTP date, in ms from now; `undefined` when absent or unreadable. */
export function retryAfterMs(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export class TrackerClient {
  readonly #options: Required<Omit<ClientOptions, 'onError' | 'onDrop' | 'onRejected'>> &
    Pick<ClientOptions, 'onError' | 'onDrop' | 'onRejected'>;
  #queue: TrackableEvent[] = [];
  #sending: Promise<void> = Promise.resolve();
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  /**
   * `options` may also be the replaced SDK's configuration (`apiUrl`, `batchSize`, `flushInterval`, `onError`),
   * with `apiUrl` set to `https://<host>/v1/<ingest token>`.
   */
  constructor(options: ClientOptions | TrackerConfig) {
    if ('apiUrl' in options) options = fromLegacy(options);
    if (!options.baseUrl) throw new TrackerError('invalid_config', 'baseUrl is required');
    if (!options.token && !/\/v1\/[^/]+\/?$/.test(options.baseUrl)) {
      throw new TrackerError('invalid_config', 'token is required (or a base URL ending in /v1/<ingest token>)');
    }
    this.#options = {
      batchSize: 100,
      flushIntervalMs: 1000,
      maxQueue: 10_000,
      maxAttempts: 8,
      initialBackoffMs: 200,
      maxBackoffMs: 30_000,
      maxRetryAfterMs: 60_000,
      fetch: (...args: Parameters<typeof fetch>) => globalThis.fetch(...args),
      path: '/batch',
      encode: (events) => JSON.stringify(events),
      ...options,
      baseUrl: options.baseUrl.replace(/\/+$/, ''),
    };
    open.add(this);
    if (this.#options.flushIntervalMs > 0) {
      this.#timer = setInterval(() => void this.flush().catch(() => {}), this.#options.flushIntervalMs);
      // a queue with nothing to send must not keep a Node.js process alive
      (this.#timer as { unref?: () => void }).unref?.();
    }
  }

  /** Events queued and not yet sent. */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queues an event; `false` (and `onDrop`) when the queue is full or the client is closed. */
  track(event: TrackableEvent): boolean {
    if (this.#closed || this.#queue.length >= this.#options.maxQueue) {
      this.#options.onDrop?.(event);
      return false;
    }
    const now = Date.now();
    this.#queue.push({ ...event, event_id: event.event_id ?? uuidv7(now), timestamp: event.timestamp ?? now });
    if (this.#queue.length >= this.#options.batchSize) void this.flush().catch(() => {});
    return true;
  }

  /** Sends everything queued (after any send in progress); resolves with how many events the platform took. */
  flush(): Promise<number> {
    let accepted = 0;
    const run = this.#sending.then(async () => {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, this.#options.batchSize);
        accepted += await this.#send(batch);
      }
    });
    this.#sending = run.catch(() => {});
    return run.then(() => accepted);
  }

  /** Stops the timer, refuses new events and sends what is queued. */
  async close(): Promise<void> {
    this.#closed = true;
    open.delete(this);
    if (this.#timer !== undefined) clearInterval(this.#timer);
    await this.flush();
  }

  /** @deprecated The replaced SDK's name for `close()`. */
  destroy(): Promise<void> {
    return this.close();
  }

  async #send(batch: TrackableEvent[]): Promise<number> {
    const o = this.#options;
    const idempotencyKey = uuidv7();
    const body = o.encode(batch);
    let lastError: Error = new TrackerError('unsent', 'not sent');
    for (let attempt = 1; attempt <= o.maxAttempts; attempt++) {
      let wait: number | undefined;
      try {
        const headers: Record<string, string> = {
          'content-type': 'application/json',
          'idempotency-key': idempotencyKey,
        };
        if (o.token) headers.authorization = `Bearer ${o.token}`;
        const answer = await o.fetch(o.baseUrl + o.path, { method: 'POST', headers, body });
        if (answer.ok) {
          const result = (await answer.json()) as BatchAnswer;
          if (result.rejected?.length && o.onRejected) {
            o.onRejected(result.rejected.map((r) => ({ ...r, event: batch[r.index]! })));
          }
          return result.accepted ?? 0;
        }
        lastError = TrackerError.fromAnswer(answer.status, await answer.text());
        const retryable = answer.status === 408 || answer.status === 429 || answer.status >= 500;
        if (!retryable) break;
        wait = retryAfterMs(answer.headers.get('retry-after'));
        if (wait !== undefined && wait > o.maxRetryAfterMs) break;
      } catch (error) {
        lastError = error instanceof Error ? error : new Error(String(error));
      }
      if (attempt === o.maxAttempts) break;
      // full jitter over the exponential ceiling, never sooner than the platform asked
      const ceiling = Math.min(o.maxBackoffMs, o.initialBackoffMs * 2 ** (attempt - 1));
      await sleep(Math.max(wait ?? 0, Math.random() * ceiling));
    }
    o.onError?.(lastError, batch);
    throw lastError;
  }
}

function fromLegacy(config: TrackerConfig): ClientOptions {
  if (!/^https?:\/\/[^/]+(\/.*)?\/v1\/[^/]+\/?$/.test(config.apiUrl ?? '')) {
    throw new TrackerError(
      'invalid_config',
      'apiUrl must be https://<host>/v1/<ingest token>. The replaced system\'s batches carried no credential; ' +
        'this platform needs one, so the client sends an ingest token (an imported pt_... token, or a new one) in ' +
        'the URL\'s path. See docs/migrating.md, "6. Switch", in the platform\'s repository (or pass ' +
        '{ baseUrl, token } instead).',
    );
  }
  return {
    baseUrl: config.apiUrl,
    token: '', // in the base URL's path: that system's batches carried no credential
    ...(config.batchSize !== undefined && { batchSize: config.batchSize }),
    ...(config.flushInterval !== undefined && { flushIntervalMs: config.flushInterval }),
    ...(config.onError && { onError: config.onError as unknown as NonNullable<ClientOptions['onError']> }),
  };
}
