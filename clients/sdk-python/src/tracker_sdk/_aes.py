"""AES-256-GCM in pure Python (FIPS 197, SP 800-38D with 96-bit nonces), so encrypted links need nothing beyond the
standard library. Links are short; speed is not the point. The tests check it against the platform's vectors."""

from __future__ import annotations

import hmac


def _sbox() -> bytes:
    box = bytearray(256)
    rotl = lambda x, n: ((x << n) | (x >> (8 - n))) & 0xFF  # noqa: E731
    p = q = 1
    while True:
        p = (p ^ (p << 1) ^ (0x1B if p & 0x80 else 0)) & 0xFF  # p * 3
        q ^= q << 1  # q / 3
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        box[p] = q ^ rotl(q, 1) ^ rotl(q, 2) ^ rotl(q, 3) ^ rotl(q, 4) ^ 0x63
        if p == 1:
            break
    box[0] = 0x63
    return bytes(box)


SBOX = _sbox()


def _xtime(x: int) -> int:
    return ((x << 1) ^ (0x1B if x & 0x80 else 0)) & 0xFF


def _expand(key: bytes) -> list[int]:
    if len(key) != 32:
        raise ValueError("an AES-256 key is 32 bytes")
    w = [int.from_bytes(key[i : i + 4], "big") for i in range(0, 32, 4)]
    sub = lambda x: int.from_bytes(bytes(SBOX[b] for b in x.to_bytes(4, "big")), "big")  # noqa: E731
    rcon = 1
    for i in range(8, 60):
        t = w[i - 1]
        if i % 8 == 0:
            t = sub(((t << 8) | (t >> 24)) & 0xFFFFFFFF) ^ (rcon << 24)
            rcon = _xtime(rcon)
        elif i % 8 == 4:
            t = sub(t)
        w.append(w[i - 8] ^ t)
    return w


def _encrypt_block(w: list[int], block: bytes) -> bytes:
    s = bytearray(block)

    def add_round_key(r: int) -> None:
        for c in range(4):
            for j, b in enumerate(w[r * 4 + c].to_bytes(4, "big")):
                s[c * 4 + j] ^= b

    add_round_key(0)
    for rnd in range(1, 15):
        # SubBytes and ShiftRows: row r of column c comes from column c + r
        t = [SBOX[s[((c + r) % 4) * 4 + r]] for c in range(4) for r in range(4)]
        if rnd < 14:
            for c in range(4):
                a0, a1, a2, a3 = t[c * 4 : c * 4 + 4]
                s[c * 4] = _xtime(a0) ^ _xtime(a1) ^ a1 ^ a2 ^ a3
                s[c * 4 + 1] = a0 ^ _xtime(a1) ^ _xtime(a2) ^ a2 ^ a3
                s[c * 4 + 2] = a0 ^ a1 ^ _xtime(a2) ^ _xtime(a3) ^ a3
                s[c * 4 + 3] = _xtime(a0) ^ a0 ^ a1 ^ a2 ^ _xtime(a3)
        else:
            s[:] = bytes(t)
        add_round_key(rnd)
    return bytes(s)


_R = 0xE1 << 120


def _gmul(x: int, y: int) -> int:
    z, v = 0, y
    for i in range(127, -1, -1):
        if (x >> i) & 1:
            z ^= v
        v = (v >> 1) ^ _R if v & 1 else v >> 1
    return z


def _ghash(h: int, aad: bytes, ciphertext: bytes) -> int:
    y = 0
    for data in (aad, ciphertext):
        for i in range(0, len(data), 16):
            y = _gmul(y ^ int.from_bytes(data[i : i + 16].ljust(16, b"\0"), "big"), h)
    return _gmul(y ^ ((len(aad) * 8) << 64 | len(ciphertext) * 8), h)


def _ctr(w: list[int], nonce: bytes, data: bytes) -> bytes:
    out = bytearray()
    for n, i in enumerate(range(0, len(data), 16), start=2):
        stream = _encrypt_block(w, nonce + n.to_bytes(4, "big"))
        out += bytes(a ^ b for a, b in zip(data[i : i + 16], stream))
    return bytes(out)


def _tag(w: list[int], nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    h = int.from_bytes(_encrypt_block(w, bytes(16)), "big")
    j0 = int.from_bytes(_encrypt_block(w, nonce + b"\0\0\0\1"), "big")
    return (_ghash(h, aad, ciphertext) ^ j0).to_bytes(16, "big")


def seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """Ciphertext followed by the 16-byte tag."""
    if len(nonce) != 12:
        raise ValueError("a GCM nonce is 12 bytes")
    w = _expand(key)
    ciphertext = _ctr(w, nonce, plaintext)
    return ciphertext + _tag(w, nonce, aad, ciphertext)


def open_(key: bytes, nonce: bytes, sealed: bytes, aad: bytes = b"") -> bytes | None:
    """The plaintext, or None when the tag does not authenticate the ciphertext."""
    if len(nonce) != 12 or len(sealed) < 16:
        return None
    w = _expand(key)
    ciphertext, tag = sealed[:-16], sealed[-16:]
    if not hmac.compare_digest(_tag(w, nonce, aad, ciphertext), tag):
        return None
    return _ctr(w, nonce, ciphertext)
