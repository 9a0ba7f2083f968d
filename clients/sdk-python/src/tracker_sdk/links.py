"""Links in the formats of ``core/tracker-protocol/src/lib.rs``, replayed from ``tests/vectors/links.json``.

v2 (what new links use): the signature covers the link kind, the tenant, the key id, the destination (or short link
id), the expiry, the names that may be appended unsigned (``ext``) and every param. Encrypted v2 links hide all of
that in one AES-256-GCM blob bound to the tenant and key id. The v1 functions build the formats of the system this
one replaces, for links it already has in circulation.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Literal, Mapping, Sequence, Tuple, Union

from . import _aes
from .destinations import check_click_destination, check_new_destination
from .errors import TrackerError

LinkKind = Literal["click", "short", "postback", "impression"]
Params = Union[Mapping[str, object], Sequence[Tuple[str, str]]]

RESERVED_PARAMS = frozenset({"v", "k", "s", "e", "d", "url", "sig", "exp", "ext"})
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_KEY_PREFIX = re.compile(r"[a-z0-9]{2,32}")
_KID = re.compile(r"[a-z0-9]{1,16}")
_SHORT_ID = re.compile(r"tu_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# application/x-www-form-urlencoded as the platform writes it: these bytes stay, space is "+", the rest is %XX
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789*-._")


@dataclass(frozen=True)
class LinkKey:
    """A tenant's link key: its key prefix, key id, and signing secret or encryption key (64 hex digits)."""

    key_prefix: str
    kid: str
    secret: str | None = None
    encryption_key: str | None = None


def _form(text: str) -> str:
    return "".join(chr(b) if b in _SAFE else "+" if b == 0x20 else f"%{b:02X}" for b in text.encode())


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def pairs(params: Params | None) -> list[tuple[str, str]]:
    if not params:
        return []
    items = params.items() if isinstance(params, Mapping) else params
    return [(str(k), _text(v)) for k, v in items]


def url_with(base: str, path: str, items: Sequence[tuple[str, str]]) -> str:
    """``<base><path>?<pairs>``, form-encoded as the platform encodes (spaces as ``+``)."""
    query = "&".join(f"{_form(k)}={_form(v)}" for k, v in items)
    return f"{base.rstrip('/')}{path}?{query}"


def _check_params(items: list[tuple[str, str]]) -> None:
    seen: set[str] = set()
    for name, _ in items:
        if name in RESERVED_PARAMS:
            raise TrackerError("reserved_param", f'param "{name}" is reserved')
        if name in seen:
            raise TrackerError("duplicate_param", f'param "{name}" is repeated')
        seen.add(name)


def _netstring(field: str) -> bytes:
    raw = field.encode()
    return str(len(raw)).encode() + b":" + raw + b","


def v2_message(
    kind: str,
    key_prefix: str,
    kid: str,
    target: str,
    exp: str | None,
    ext: str | None,
    params: Sequence[tuple[str, str]],
) -> bytes:
    """The exact bytes a v2 signature covers: ``TRK2``, then netstrings of kind, tenant, kid, target, exp, ext, the
    number of params and each param's name and value, sorted by their UTF-8 bytes."""
    ordered = sorted(params, key=lambda kv: (kv[0].encode(), kv[1].encode()))
    out = b"TRK2" + b"".join(_netstring(f) for f in (kind, key_prefix, kid, target, exp or "", ext or ""))
    out += _netstring(str(len(ordered)))
    for k, v in ordered:
        out += _netstring(k) + _netstring(v)
    return out


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _check(
    kind: str,
    key: LinkKey,
    target: str,
    params: Params | None,
    expires_at: _dt.datetime | int | None,
    ext: Sequence[str] | None,
) -> tuple[list[tuple[str, str]], str | None, str | None]:
    items = pairs(params)
    _check_params(items)
    if not _KEY_PREFIX.fullmatch(key.key_prefix):
        raise TrackerError("invalid_key_prefix", "a key prefix is [a-z0-9]{2,32}")
    if not _KID.fullmatch(key.kid):
        raise TrackerError("malformed_signature", "a key id is [a-z0-9]{1,16}")
    if kind == "click":
        check_new_destination(target)
    if kind == "short" and not _SHORT_ID.fullmatch(target):
        raise TrackerError("invalid_short_link_id", "a short link id is tu_ followed by a UUID")
    exp = None
    if expires_at is not None:
        secs = int(expires_at.timestamp()) if isinstance(expires_at, _dt.datetime) else expires_at
        if isinstance(secs, bool) or not isinstance(secs, int) or not 0 < secs < 10**12:
            raise TrackerError("invalid_expiry", "expires_at is a positive number of unix seconds")
        exp = str(secs)
    ext_text = None
    if ext:
        for name in ext:
            if not _NAME.fullmatch(name) or name in RESERVED_PARAMS or any(k == name for k, _ in items):
                raise TrackerError("reserved_param", f'"{name}" cannot be an ext param')
        ext_text = ",".join(ext)
    return items, exp, ext_text


def _path_for(kind: str, target: str) -> str:
    return {"click": "/t", "short": f"/t/{target}", "postback": "/p", "impression": "/i"}[kind]


def signed_link(
    base: str,
    key: LinkKey,
    kind: LinkKind,
    target: str,
    params: Params | None = None,
    *,
    expires_at: _dt.datetime | int | None = None,
    ext: Sequence[str] | None = None,
) -> str:
    """A v2 signed link: ``<base><path>?v=2&k=<prefix>.<kid>[&url=][&exp=][&ext=]&<params>&s=<signature>``.

    ``target`` is the destination of a click, the ``tu_`` id of a short link, and empty for postbacks and pixels.

    >>> key = LinkKey("acme", "k1", secret="s3cret")
    >>> signed_link("https://t.example", key, "click", "https://shop.example/", {"campaign": "spring"})
    'https://t.example/t?v=2&k=acme.k1&url=https%3A%2F%2Fshop.example%2F&campaign=spring&s=...'
    """
    items, exp, ext_text = _check(kind, key, target, params, expires_at, ext)
    if not key.secret:
        raise TrackerError("malformed_signature", "the key has no signing secret")
    message = v2_message(kind, key.key_prefix, key.kid, target, exp, ext_text, items)
    signature = _b64(hmac.new(key.secret.encode(), message, hashlib.sha256).digest())
    head = [("v", "2"), ("k", f"{key.key_prefix}.{key.kid}")]
    if kind == "click":
        head.append(("url", target))
    if exp:
        head.append(("exp", exp))
    if ext_text:
        head.append(("ext", ext_text))
    return url_with(base, _path_for(kind, target), head + items + [("s", signature)])


def click_url(base: str, key: LinkKey, destination: str, params: Params | None = None, **options) -> str:
    """A v2 signed click to ``destination`` (``expires_at=``, ``ext=`` as for :func:`signed_link`)."""
    return signed_link(base, key, "click", destination, params, **options)


def short_link_url(base: str, key: LinkKey, tu_id: str, params: Params | None = None, **options) -> str:
    """A v2 signed short link (``/t/<tu_id>``; the destination is stored by the platform)."""
    return signed_link(base, key, "short", tu_id, params, **options)


def postback_url(base: str, key: LinkKey, params: Params, **options) -> str:
    """A v2 signed postback URL (``/p``): its params, ``event_type`` among them, cannot be changed on the way."""
    return signed_link(base, key, "postback", "", params, **options)


def pixel_url(base: str, key: LinkKey, params: Params, **options) -> str:
    """A v2 signed impression pixel URL (``/i``), for ``<img src>``."""
    return signed_link(base, key, "impression", "", params, **options)


def open_postback_url(base: str, params: Params) -> str:
    """An unsigned postback (``/p``) for a tenant that takes open postbacks, or with an ingest token (``token``)."""
    return url_with(base, "/p", pairs(params))


def _aes_key(hex_key: str | None) -> bytes:
    try:
        key = bytes.fromhex(hex_key or "")
    except ValueError:
        key = b""
    if len(key) != 32:
        raise TrackerError("malformed_ciphertext", "an encryption key is 64 hex digits")
    return key


def encrypted_click_url(
    base: str,
    key: LinkKey,
    destination: str,
    params: Params | None = None,
    *,
    expires_at: _dt.datetime | int | None = None,
    ext: Sequence[str] | None = None,
    nonce: bytes | None = None,
) -> str:
    """A v2 encrypted click, ``<base>/t?v=2&k=<prefix>.<kid>&e=<blob>``: destination, expiry and params sealed with
    the tenant's encryption key. ``nonce`` is for tests only: a fresh random one is the default and must stay so."""
    items, exp, ext_text = _check("click", key, destination, params, expires_at, ext)
    aes_key = _aes_key(key.encryption_key)
    plain = [("url", destination)] + ([("exp", exp)] if exp else []) + ([("ext", ext_text)] if ext_text else [])
    text = "&".join(f"{_form(k)}={_form(v)}" for k, v in plain + items)
    aad = b"TRK2E" + b"".join(_netstring(f) for f in ("click", key.key_prefix, key.kid))
    nonce = os.urandom(12) if nonce is None else nonce
    blob = nonce + _aes.seal(aes_key, nonce, text.encode(), aad)
    return url_with(base, "/t", [("v", "2"), ("k", f"{key.key_prefix}.{key.kid}"), ("e", _b64(blob))])


# ---- v1: the formats of the replaced system ---------------------------------------------------------------------


def v1_signature(secret: str, key_prefix: str | None, message: str) -> str:
    """``[<prefix>_]<hex HMAC-SHA256(secret, message)>``."""
    if not secret:
        raise TrackerError("malformed_signature", "the secret is empty")
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
    return f"{key_prefix}_{digest}" if key_prefix else digest


def v1_signed_url(base: str, secret: str, key_prefix: str | None, destination: str, params: Params | None = None) -> str:
    """A v1 signed click: ``<base>/t?url=<destination>&sig=[<prefix>_]<hex>&<params>`` (only the destination is
    signed). A destination a click would refuse is refused here."""
    items = pairs(params)
    _check_params(items)
    check_click_destination(destination)
    return url_with(base, "/t", [("url", destination), ("sig", v1_signature(secret, key_prefix, destination))] + items)


def v1_short_url(base: str, secret: str, key_prefix: str | None, tu_id: str, params: Params | None = None) -> str:
    """A v1 short link: ``<base>/t/<tu_id>?sig=[<prefix>_]<hex HMAC(secret, tu_id)>&<params>``."""
    items = pairs(params)
    _check_params(items)
    if not _SHORT_ID.fullmatch(tu_id):
        raise TrackerError("invalid_short_link_id", "a short link id is tu_ followed by a UUID")
    return url_with(base, f"/t/{tu_id}", [("sig", v1_signature(secret, key_prefix, tu_id))] + items)


def v1_encrypted_url(
    base: str, encryption_key: str, destination: str, params: Params | None = None, *, nonce: bytes | None = None
) -> str:
    """A v1 encrypted click: ``<base>/t?d=<base64url(nonce || AES-256-GCM(destination) || tag)>&<params>``."""
    items = pairs(params)
    _check_params(items)
    check_click_destination(destination)
    nonce = os.urandom(12) if nonce is None else nonce
    blob = nonce + _aes.seal(_aes_key(encryption_key), nonce, destination.encode())
    return url_with(base, "/t", [("d", _b64(blob))] + items)


def v1_decrypt(encryption_key: str, blob: str) -> str:
    """The destination sealed in a v1 ``d=`` blob; ``TrackerError('decryption_failed')`` when it is not authentic."""
    try:
        raw = base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4))
    except ValueError:
        raw = b""
    plain = _aes.open_(_aes_key(encryption_key), raw[:12], raw[12:]) if len(raw) >= 28 else None
    if plain is None:
        raise TrackerError("decryption_failed", "not a valid encrypted URL for this key")
    return plain.decode()
