"""The batch client: events queued in memory and sent from a background thread to ``POST <base>/batch`` with an
ingest token, durable on the platform when a send succeeds. Standard library only (``urllib``); pass ``send=`` to
use an HTTP client of your own.

- A batch goes when ``batch_size`` events are queued, every ``flush_interval`` seconds, on :meth:`flush` and on
  :meth:`close` (also at interpreter exit).
- Every batch carries an ``Idempotency-Key``, the same on every retry, and every event its own ``event_id``: a batch
  retried after a lost answer is stored once.
- Network errors, 408, 429 and 5xx are retried with exponential backoff and full jitter, waiting at least what
  ``Retry-After`` asks; other 4xx are final and go to ``on_error``.
- The queue is bounded (``max_queue``). When it is full, :meth:`track` refuses the new event, returns ``False`` and
  calls ``on_drop``: the caller learns of it at once, and what is already queued keeps its order.
"""

from __future__ import annotations

import atexit
import email.utils
import json
import os
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable, Mapping

from .errors import TrackerError

Event = Mapping[str, Any]
# (url, headers, body) -> (status, headers, body): what a send needs from an HTTP client
Send = Callable[[str, Mapping[str, str], bytes], "tuple[int, Mapping[str, str], bytes]"]


def uuid7(now_ms: int | None = None) -> str:
    """A UUIDv7: the millisecond clock, then randomness (what the platform mints; sortable by time)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    raw = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds or an HTTP date; ``None`` when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        at = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, at.timestamp() - time.time())


def _urllib_send(url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, Mapping[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers=dict(headers), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class TrackerClient:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        max_queue: int = 10_000,
        max_attempts: int = 8,
        initial_backoff: float = 0.2,
        max_backoff: float = 30.0,
        max_retry_after: float = 60.0,
        on_error: Callable[[Exception, list[dict]], None] | None = None,
        on_drop: Callable[[Event], None] | None = None,
        on_rejected: Callable[[list[dict]], None] | None = None,
        send: Send | None = None,
        path: str = "/batch",
    ) -> None:
        if not base_url:
            raise TrackerError("invalid_config", "base_url is required")
        self._url = base_url.rstrip("/") + path
        self._token = token
        self._batch_size = batch_size
        self._max_queue = max_queue
        self._max_attempts = max_attempts
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._max_retry_after = max_retry_after
        self._on_error = on_error
        self._on_drop = on_drop
        self._on_rejected = on_rejected
        self._send_http = send or _urllib_send
        self._queue: list[dict] = []
        self._lock = threading.Lock()
        self._sending = threading.Lock()  # one batch on the wire at a time: order is kept
        self._wake = threading.Event()
        self._closed = False
        self._interval = flush_interval
        self._thread = threading.Thread(target=self._run, name="tracker-sdk-flush", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def track(self, event: Event) -> bool:
        """Queues an event; ``False`` (and ``on_drop``) when the queue is full or the client is closed."""
        now = int(time.time() * 1000)
        with self._lock:
            if self._closed or len(self._queue) >= self._max_queue:
                refused = True
            else:
                refused = False
                item = dict(event)
                item.setdefault("event_id", uuid7(now))
                item.setdefault("timestamp", now)
                self._queue.append(item)
                if len(self._queue) >= self._batch_size:
                    self._wake.set()
        if refused and self._on_drop:
            self._on_drop(event)
        return not refused

    def flush(self) -> int:
        """Sends everything queued; returns how many events the platform took. Raises the last batch's error."""
        accepted = 0
        with self._sending:
            while True:
                with self._lock:
                    batch, self._queue = self._queue[: self._batch_size], self._queue[self._batch_size :]
                if not batch:
                    return accepted
                accepted += self._send(batch)

    def close(self) -> None:
        """Refuses new events, stops the background thread and sends what is queued."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        try:
            self.flush()
        except TrackerError:
            pass  # reported to on_error
        atexit.unregister(self.close)

    def __enter__(self) -> TrackerClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self._interval if self._interval > 0 else None)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - reported to on_error; the thread must live on
                pass

    def _send(self, batch: list[dict]) -> int:
        headers = {"content-type": "application/json", "idempotency-key": uuid7()}
        if self._token:
            headers["authorization"] = f"Bearer {self._token}"
        body = json.dumps(batch, separators=(",", ":")).encode()
        error: Exception = TrackerError("unsent", "not sent")
        for attempt in range(1, self._max_attempts + 1):
            wait = None
            try:
                status, answer_headers, answer = self._send_http(self._url, headers, body)
                if 200 <= status < 300:
                    result = json.loads(answer or b"{}")
                    rejected = result.get("rejected") or []
                    if rejected and self._on_rejected:
                        self._on_rejected([{**r, "event": batch[r["index"]]} for r in rejected])
                    return int(result.get("accepted", 0))
                error = TrackerError.from_answer(status, answer)
                if not (status in (408, 429) or status >= 500):
                    break
                lower = {k.lower(): v for k, v in answer_headers.items()}
                wait = retry_after_seconds(lower.get("retry-after"))
                if wait is not None and wait > self._max_retry_after:
                    break
            except (OSError, ValueError) as e:  # network errors, unreadable answers
                error = e
            if attempt == self._max_attempts:
                break
            # full jitter over the exponential ceiling, never sooner than the platform asked
            ceiling = min(self._max_backoff, self._initial_backoff * 2 ** (attempt - 1))
            time.sleep(max(wait or 0.0, random.uniform(0, ceiling)))
        if self._on_error:
            self._on_error(error, batch)
        if isinstance(error, TrackerError):
            raise error
        raise TrackerError("unavailable", str(error)) from error
