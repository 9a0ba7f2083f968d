#!/usr/bin/env python3
"""Checks tests/vectors/links.json with an independent implementation (Python's standard library only):
the v1 and v2 signatures, the signed links SDKs build (byte for byte, every kind: click, short, postback, pixel),
the v2 canonical message, the edge batch signature and the partition hash.
Any SDK can follow this file as a reference. Exits non-zero on the first mismatch."""
import base64
import hashlib
import hmac
import json
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

RESERVED = {"v", "k", "s", "e", "d", "url", "sig", "exp", "ext"}
vectors = json.loads((Path(__file__).parent / "links.json").read_text())
tenant_keys = {k["kid"]: k for k in vectors["keys"]["6vct"]}
global_secret = vectors["keys"]["global"]["hmac_secret"]
checked = 0


def netstring(s: str) -> bytes:
    b = s.encode()
    return str(len(b)).encode() + b":" + b + b","


def v2_message(kind, key_prefix, kid, target, exp, ext, params):
    out = b"TRK2" + b"".join(netstring(f) for f in (kind, key_prefix, kid, target, exp or "", ext or ""))
    out += netstring(str(len(params)))
    for k, v in sorted(params, key=lambda kv: (kv[0].encode(), kv[1].encode())):
        out += netstring(k) + netstring(v)
    return out


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def fail(msg):
    print(f"vector mismatch: {msg}", file=sys.stderr)
    sys.exit(1)


for case in vectors["links"]:
    expect = case["expect"]
    if "error" in expect:
        continue
    parts = urlsplit(case["url"])
    q = dict(parse_qsl(parts.query, keep_blank_values=True))
    fmt = expect["format"]
    if fmt in ("v1_signed", "v1_short"):
        prefix, _, hexsig = q["sig"].rpartition("_")
        secret = tenant_keys[expect["kid"]]["signing_secret"] if prefix else global_secret
        message = q["url"] if fmt == "v1_signed" else parts.path.rsplit("/", 1)[1]
        want = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
        if want != hexsig:
            fail(case["name"])
        checked += 1
    elif fmt == "v2_signed":
        key_prefix, kid = q["k"].split(".")
        ext = set(filter(None, q.get("ext", "").split(",")))
        params = [(k, v) for k, v in q.items() if k not in RESERVED and k not in ext]
        kind = case["kind"]
        target = q.get("url", "") if kind == "click" else (parts.path.rsplit("/", 1)[1] if kind == "short" else "")
        msg = v2_message(kind, key_prefix, kid, target, q.get("exp"), q.get("ext"), params)
        secret = tenant_keys[kid]["signing_secret"]
        if b64(hmac.new(secret.encode(), msg, hashlib.sha256).digest()) != q["s"]:
            fail(case["name"])
        checked += 1


def form(text: str) -> str:
    """application/x-www-form-urlencoded as the platform writes it (the url crate's byte_serialize; URLSearchParams):
    ASCII letters, digits and *-._ as they are, a space as +, any other byte as %XX."""
    safe = b"*-._0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(chr(b) if b in safe else "+" if b == 0x20 else f"%{b:02X}" for b in text.encode())


def url_with(path, pairs):
    return "https://track.example" + path + "?" + "&".join(f"{form(k)}={form(v)}" for k, v in pairs)


V2_PATHS = {"click": "/t", "postback": "/p", "impression": "/i"}
built_kinds = set()
for b in vectors["builds"]:
    fmt, kind, params = b["format"], b["kind"], [tuple(p) for p in b["params"]]
    if fmt in ("v2_encrypted", "v1_encrypted"):
        continue  # AES-GCM is not in Python's standard library: the SDKs' own tests rebuild these
    if fmt == "v2_signed":
        exp = str(b["expires_at"]) if b["expires_at"] is not None else None
        ext = ",".join(b["ext"]) or None
        secret = tenant_keys[b["kid"]]["signing_secret"]
        msg = v2_message(kind, b["key_prefix"], b["kid"], b["target"], exp, ext, params)
        pairs = [("v", "2"), ("k", f"{b['key_prefix']}.{b['kid']}")]
        pairs += [("url", b["target"])] if kind == "click" else []
        pairs += [("exp", exp)] if exp else []
        pairs += [("ext", ext)] if ext else []
        pairs += params + [("s", b64(hmac.new(secret.encode(), msg, hashlib.sha256).digest()))]
        url = url_with(V2_PATHS.get(kind) or f"/t/{b['target']}", pairs)
    else:
        secret = tenant_keys[b["kid"]]["signing_secret"] if b["key_prefix"] else global_secret
        sig = hmac.new(secret.encode(), b["target"].encode(), hashlib.sha256).hexdigest()
        sig = f"{b['key_prefix']}_{sig}" if b["key_prefix"] else sig
        if fmt == "v1_signed":
            url = url_with("/t", [("url", b["target"]), ("sig", sig)] + params)
        else:
            url = url_with(f"/t/{b['target']}", [("sig", sig)] + params)
    if url != b["url"]:
        fail(f"build: {b['name']}: {url}")
    built_kinds.add(kind)
    checked += 1
if built_kinds != {"click", "short", "postback", "impression"}:
    fail(f"builds cover the kinds {sorted(built_kinds)} only")

m = vectors["v2_message"]
i = m["input"]
params = [tuple(p) for p in i["params"]]
message = v2_message(i["kind"], i["key_prefix"], i["kid"], i["target"], i["exp"], i["ext"], params)
if message.decode() != m["message_utf8"]:
    fail("v2_message")

e = vectors["edge_batch_signature"]
# purpose "batch": its own key, derived from the shared secret, and the purpose named in what is signed
key = hmac.new(e["secret"].encode(), b"tracker/v2/batch", hashlib.sha256).digest()
mac = hmac.new(key, f"v2\nbatch\n{e['timestamp_ms']}\n{e['batch_id']}\n".encode() + e["body"].encode(), hashlib.sha256)
if "v2=" + mac.hexdigest() != e["signature"]:
    fail("edge_batch_signature")

# webhook deliveries: t=<secs>,v1=<hex HMAC(secret, "<t>." + body)>, any v1 entry may match, within the tolerance
w = vectors["webhook_signatures"]
for case in w["cases"]:
    fields = [part.strip().partition("=") for part in case["header"].split(",")]
    stamps = [v for k, _, v in fields if k == "t"]
    sigs = [v for k, _, v in fields if k == "v1"]
    if len(stamps) != 1 or not stamps[0].lstrip("-").isdigit() or not sigs:
        outcome = "malformed"
    elif abs(case["now"] - int(stamps[0])) > w["tolerance_secs"]:
        outcome = "stale"
    else:
        signed = f"{stamps[0]}.".encode() + case["body"].encode()
        mac = hmac.new(w["secret"].encode(), signed, hashlib.sha256).hexdigest()
        outcome = "ok" if any(hmac.compare_digest(mac, s) for s in sigs) else "mismatch"
    if outcome != case["expect"]:
        fail(f"webhook: {case['name']}")
    checked += 1

for prefix, want in vectors["partitions_of_24"].items():
    h = 0xCBF29CE484222325
    for b in prefix.encode():
        h = ((h ^ b) * 0x100000001B3) % (1 << 64)
    if h % 24 != want:
        fail(f"partition of {prefix}")

print(
    f"tests/vectors: {checked} link and webhook signatures and signed builds, the v2 message, the edge signature and "
    "partitions agree with Python's hmac"
)
