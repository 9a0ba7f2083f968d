"""Tracking links (v2 signed and encrypted, and the v1 formats), postback and pixel URLs, a batch client with
retries and idempotency, and webhook signature checks. Standard library only."""

from .api import ApiClient
from .client import TrackerClient, retry_after_seconds, uuid7
from .errors import TrackerError
from .links import (
    RESERVED_PARAMS,
    LinkKey,
    click_url,
    encrypted_click_url,
    open_postback_url,
    pixel_url,
    postback_url,
    short_link_url,
    signed_link,
    v1_decrypt,
    v1_encrypted_url,
    v1_short_url,
    v1_signature,
    v1_signed_url,
    v2_message,
)
from .webhook import DELIVERY_ID_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign_webhook, verify_webhook

__all__ = [
    "ApiClient",
    "DELIVERY_ID_HEADER",
    "EVENT_HEADER",
    "RESERVED_PARAMS",
    "SIGNATURE_HEADER",
    "LinkKey",
    "TrackerClient",
    "TrackerError",
    "click_url",
    "encrypted_click_url",
    "open_postback_url",
    "pixel_url",
    "postback_url",
    "retry_after_seconds",
    "short_link_url",
    "sign_webhook",
    "signed_link",
    "uuid7",
    "v1_decrypt",
    "v1_encrypted_url",
    "v1_short_url",
    "v1_signature",
    "v1_signed_url",
    "v2_message",
    "verify_webhook",
]
__version__ = "0.1.0"
