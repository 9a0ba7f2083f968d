"""Webhook deliveries are signed ``Tracker-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t "." body)>``,
with several ``v1=`` entries while a secret rotates. Verify the raw body bytes, before parsing them."""

from __future__ import annotations

import hashlib
import hmac
import re
import time

from .errors import TrackerError

SIGNATURE_HEADER = "Tracker-Signature"
DELIVERY_ID_HEADER = "Tracker-Delivery-Id"
EVENT_HEADER = "Tracker-Event"


def sign_webhook(secret: str, timestamp: int, body: bytes | str) -> str:
    """The header value for ``body`` signed at ``timestamp`` (tests of your own receiver)."""
    raw = body.encode() if isinstance(body, str) else body
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_webhook(
    secret: str,
    header: str | None,
    body: bytes | str,
    *,
    tolerance_seconds: int = 300,
    now: int | None = None,
) -> int:
    """Checks a delivery's ``Tracker-Signature`` header against its raw body; returns the signed timestamp.

    Raises :class:`TrackerError` with ``malformed_signature``, ``stale_signature`` or ``invalid_signature``.

    >>> header = sign_webhook("whsec_x", 1_700_000_000, b'{"event_type":"purchase"}')
    >>> verify_webhook("whsec_x", header, b'{"event_type":"purchase"}', now=1_700_000_010)
    1700000000
    """
    timestamp = None
    signatures: list[bytes] = []
    for part in (header or "").split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            if not re.fullmatch(r"-?\d{1,15}", value):
                raise TrackerError("malformed_signature", "the timestamp is not a number")
            timestamp = int(value)
        elif name == "v1":
            try:
                signatures.append(bytes.fromhex(value))
            except ValueError:
                raise TrackerError("malformed_signature", "a v1 signature is not hex") from None
    if timestamp is None or not signatures:
        raise TrackerError("malformed_signature", "the header needs t= and at least one v1=")
    current = int(time.time()) if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        raise TrackerError("stale_signature", "the timestamp is outside the tolerance")
    raw = body.encode() if isinstance(body, str) else body
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).digest()
    # every entry is compared, so the time taken does not say which one matched
    matched = False
    for signature in signatures:
        matched = hmac.compare_digest(expected, signature) or matched
    if not matched:
        raise TrackerError("invalid_signature", "no signature matches")
    return timestamp
