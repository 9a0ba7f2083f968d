"""Which destinations a link may have, as the platform judges them (``core/tracker-protocol/src/redirect.rs``,
replayed from ``tests/vectors/links.json`` by the tests): a link that could never be followed is refused when it is
built."""

from __future__ import annotations

import re

from .errors import TrackerError

#: Longest destination of a new link, and of one a click is redirected to (in UTF-8 bytes).
MAX_DESTINATION_BYTES = 4096
MAX_REDIRECT_BYTES = 16 * 1024

# schemes a click never goes to: they would run code or read local data
_BLOCKED_SCHEMES = frozenset({"javascript", "vbscript", "data", "file", "blob", "about", "filesystem", "view-source"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
_ASCII_HOST = re.compile(r"[A-Za-z0-9._-]+")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")
_PORT = re.compile(r"[0-9]{1,5}")


def _scheme_refused() -> TrackerError:
    return TrackerError("destination_scheme_not_allowed", "destination must be an absolute http or https URL")


def _invalid(reason: str) -> TrackerError:
    return TrackerError("invalid_destination", f"destination is not a valid URL: {reason}")


def _split_authority(authority: str) -> tuple[str, str | None]:
    """An authority's host (``v6`` for an IPv6 literal) and port, as a browser splits them."""
    port: str | None = None
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _invalid("unclosed IPv6 literal")
        if not _IPV6.fullmatch(authority[1:close]):
            raise _invalid("bad IPv6 literal")
        host, after = "v6", authority[close + 1 :]
        if after:
            if not after.startswith(":"):
                raise _invalid("junk after IPv6 literal")
            port = after[1:]
    else:
        host, sep, rest = authority.rpartition(":")
        if sep:
            port = rest
        else:
            host = authority
    if not host:
        raise _invalid("missing host")
    return host, port


def _port_ok(port: str) -> bool:
    return bool(_PORT.fullmatch(port)) and 1 <= int(port) <= 65535


def check_new_destination(destination: str) -> None:
    """Raises unless ``destination`` is what the platform takes for a new link: an absolute http(s) URL a browser
    follows to the host it shows (no credentials, whitespace, control characters or backslashes; an ASCII host; a
    valid port)."""
    if len(destination.encode()) > MAX_DESTINATION_BYTES:
        raise TrackerError("destination_too_long", f"destination is longer than {MAX_DESTINATION_BYTES} bytes")
    scheme, sep, rest = destination.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise _scheme_refused()
    if _UNSAFE.search(destination):
        raise _invalid("contains whitespace, control characters or a backslash")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise _invalid("credentials (user@) are not allowed in destinations")
    host, port = _split_authority(authority)
    if not _ASCII_HOST.fullmatch(host) or host.startswith("."):
        raise _invalid("host must be ASCII (use punycode for international names)")
    if port is not None and not _port_ok(port):
        raise _invalid("port must be 1 to 65535")


def check_click_destination(destination: str) -> None:
    """Raises if a click on a link to ``destination`` would be refused: the rule for links in the replaced system's
    (v1) formats, which are redirected wherever a browser would go (an app's own scheme too), except script, data and
    local schemes, relative references, and hosts or ports no browser can reach."""
    dest = re.sub(r"[\t\n\r]", "", destination).strip("".join(chr(c) for c in range(0x21)))
    if len(dest.encode()) > MAX_REDIRECT_BYTES:
        raise TrackerError("destination_too_long", f"destination is longer than {MAX_REDIRECT_BYTES} bytes")
    m = _SCHEME.match(dest)
    if m:
        scheme, rest = m.group(1).lower(), dest[m.end() :]
    elif dest.startswith("//"):
        scheme, rest = "https", dest
    else:
        raise _scheme_refused()
    if scheme in _BLOCKED_SCHEMES:
        raise _scheme_refused()
    if scheme not in ("http", "https"):
        return
    after = rest.lstrip("/\\")
    authority = re.split(r"[/\\?#]", after, maxsplit=1)[0]
    host, port = _split_authority(authority.rpartition("@")[2])
    # letters, digits, `-`, `.`, `_`, or international characters (a browser turns them into punycode)
    if not all(c.isascii() and (c.isalnum() or c in "-._") or not c.isascii() for c in host) or host.startswith("."):
        raise _invalid("the host has characters no host name can hold")
    # an empty port is the default one, as browsers read it
    if port is not None and port != "" and not _port_ok(port):
        raise _invalid("port must be 1 to 65535")
