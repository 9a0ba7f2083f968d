// Live events over Server-Sent Events. A browser's EventSource cannot send headers, so the stream is opened with
// a short-lived token (POST /api/sse/tokens: a key with only the `stream` scope) in its URL, never the session
// or a long-lived key. Tokens expire: the stream is reopened with a fresh one shortly before, and after an
// error, resuming after the last event it saw (`last_event_id`) so nothing is missed or shown twice.

import { api, errorMessage, type Event } from './api';

export type LiveStatus = 'connecting' | 'live' | 'reconnecting' | 'closed';

export interface LiveFilter {
  /** Comma-separated event types; all when empty. */
  event_type?: string;
  param_key?: string;
  param_value?: string;
}

export interface LiveOptions {
  filter?: LiveFilter;
  onEvent: (event: Event) => void;
  /** The server skipped events this client was too slow for. */
  onLagged?: (missed: number) => void;
  onStatus?: (status: LiveStatus, detail?: string) => void;
}

/** Stream tokens live 5 minutes: a token outlives a sign-out or a revoked key by at most that (then renewing fails). */
const TOKEN_TTL_SECS = 300;
/** Reopen this long before the token expires (the server's clock and ours may differ a little). */
const RENEW_BEFORE_MS = 90_000;
const MAX_BACKOFF_MS = 30_000;

/** Opens the stream; returns the function that closes it for good. */
export function openLive(options: LiveOptions): () => void {
  let source: EventSource | null = null;
  let renewTimer: ReturnType<typeof setTimeout> | undefined;
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let lastEventId: string | null = null;
  let failures = 0;
  let closed = false;

  const status = (s: LiveStatus, detail?: string) => options.onStatus?.(s, detail);

  function drop(): void {
    source?.close();
    source = null;
    clearTimeout(renewTimer);
    clearTimeout(retryTimer);
  }

  function retryLater(detail: string): void {
    drop();
    if (closed) return;
    failures += 1;
    // capped exponential backoff with jitter, so many open tabs do not reconnect in step
    const delay = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(failures - 1, 5)) * (0.5 + Math.random() / 2);
    status('reconnecting', detail);
    retryTimer = setTimeout(connect, delay);
  }

  async function connect(): Promise<void> {
    if (closed) return;
    status(lastEventId === null && failures === 0 ? 'connecting' : 'reconnecting');
    let token;
    try {
      token = await api().createStreamToken({ ttl_secs: TOKEN_TTL_SECS });
    } catch (error) {
      retryLater(errorMessage(error));
      return;
    }
    if (closed) return;

    const query = new URLSearchParams({ access_token: token.token });
    for (const [key, value] of Object.entries(options.filter ?? {})) if (value) query.set(key, value);
    if (lastEventId !== null) query.set('last_event_id', lastEventId);
    const next = new EventSource(`/sse/events?${query}`);
    source = next;

    next.onopen = () => {
      failures = 0;
      status('live');
    };
    next.onmessage = (message: MessageEvent<string>) => {
      if (message.lastEventId) lastEventId = message.lastEventId;
      try {
        options.onEvent(JSON.parse(message.data) as Event);
      } catch {
        // not an event (a future frame kind): nothing to show
      }
    };
    next.addEventListener('lagged', (message) => {
      try {
        const info = JSON.parse((message as MessageEvent<string>).data) as { missed_from_id: number; missed_to_id: number };
        options.onLagged?.(Math.max(1, info.missed_to_id - info.missed_from_id + 1));
      } catch {
        options.onLagged?.(1);
      }
    });
    next.onerror = () => {
      // CONNECTING: the browser retries by itself with the same URL (fine while the token lives);
      // CLOSED: it gave up (the token expired or was refused), so a new token is needed
      if (next.readyState === EventSource.CLOSED) retryLater('The live stream was closed.');
      else status('reconnecting');
    };

    // plan by the lifetime asked for, and by expires_at when that is sooner; a local clock far off the
    // server's would make expires_at meaningless here, so it is only trusted when it looks plausible
    const byServerClock = token.expires_at - Date.now();
    const lifetime = byServerClock > 2 * RENEW_BEFORE_MS ? Math.min(TOKEN_TTL_SECS * 1000, byServerClock) : TOKEN_TTL_SECS * 1000;
    renewTimer = setTimeout(() => {
      drop();
      void connect();
    }, lifetime - RENEW_BEFORE_MS);
  }

  void connect();
  return () => {
    closed = true;
    drop();
    status('closed');
  };
}

/** The short link an event is a click on (`/t/<tu_id>` with the same `tu_id` param), as the platform counts it. */
export function eventLink(event: Event): string | null {
  const tu = event.params?.tu_id;
  return tu && event.request_path === `/t/${tu}` ? tu : null;
}
