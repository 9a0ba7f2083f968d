//! Destination checks and redirect building: only absolute http(s) URLs without credentials, and the click id
//! appended as `ad_click_id` in the right place (before any fragment, replacing a stale one).

use std::fmt::Write as _;

use uuid::Uuid;

use crate::ProtocolError;

/// Longest destination accepted (browsers and proxies start failing beyond a few KiB).
pub const MAX_DESTINATION_LEN: usize = 4096;
/// The query parameter that carries the click's event id to the destination.
pub const CLICK_ID_PARAM: &str = "ad_click_id";

/// Checks that `dest` is an absolute http(s) URL a browser will follow to the host it shows.
pub fn validate_destination(dest: &str) -> Result<(), ProtocolError> {
    if dest.len() > MAX_DESTINATION_LEN {
        return Err(ProtocolError::DestinationTooLong { max: MAX_DESTINATION_LEN });
    }
    let (scheme, rest) = dest.split_once("://").ok_or(ProtocolError::DestinationSchemeNotAllowed)?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(ProtocolError::DestinationSchemeNotAllowed);
    }
    // Browsers treat `\` as `/` and strip tabs and newlines: either would let the host a browser visits differ
    // from the host a reader of the link sees.
    if dest.bytes().any(|b| b <= b' ' || b == 0x7f || b == b'\\') {
        return Err(ProtocolError::InvalidDestination {
            reason: "contains whitespace, control characters or a backslash",
        });
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = rest.get(..authority_end).unwrap_or_default();
    if authority.contains('@') {
        return Err(ProtocolError::InvalidDestination {
            reason: "credentials (user@) are not allowed in destinations",
        });
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) =
            v6.split_once(']').ok_or(ProtocolError::InvalidDestination { reason: "unclosed IPv6 literal" })?;
        if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return Err(ProtocolError::InvalidDestination { reason: "bad IPv6 literal" });
        }
        match after {
            "" => ("v6", None),
            p => (
                "v6",
                Some(
                    p.strip_prefix(':')
                        .ok_or(ProtocolError::InvalidDestination { reason: "junk after IPv6 literal" })?,
                ),
            ),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(ProtocolError::InvalidDestination { reason: "missing host" });
    }
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) || host.starts_with('.') {
        return Err(ProtocolError::InvalidDestination {
            reason: "host must be ASCII (use punycode for international names)",
        });
    }
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok {
            return Err(ProtocolError::InvalidDestination { reason: "port must be 1 to 65535" });
        }
    }
    Ok(())
}

fn is_click_id_pair(pair: &str) -> bool {
    let name = pair.split('=').next().unwrap_or_default();
    form_urlencoded::parse(name.as_bytes()).next().is_some_and(|(k, _)| k == CLICK_ID_PARAM)
}

/// The `Location` for a click: the destination with `ad_click_id=<event_id>` added to its query (an existing
/// `ad_click_id` is replaced), the fragment kept last, other bytes kept as they were, and non-ASCII bytes
/// percent-encoded so the header is valid.
pub fn build_redirect(dest: &str, click_id: &Uuid) -> Result<String, ProtocolError> {
    validate_destination(dest)?;
    let (before_fragment, fragment) = match dest.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (dest, None),
    };
    let (path, query) = match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = String::with_capacity(dest.len() + 64);
    push_ascii(&mut out, path);
    out.push('?');
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty() && !is_click_id_pair(p)) {
            push_ascii(&mut out, pair);
            out.push('&');
        }
    }
    out.push_str(CLICK_ID_PARAM);
    out.push('=');
    let _ = write!(out, "{click_id}");
    if let Some(f) = fragment {
        out.push('#');
        push_ascii(&mut out, f);
    }
    Ok(out)
}

fn push_ascii(out: &mut String, s: &str) {
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Uuid {
        Uuid::try_parse("019c4633-5078-7411-8858-4aeafb6298bb").unwrap()
    }

    #[test]
    fn appends_click_id_in_the_right_place() {
        let cases = [
            ("https://a.com", "https://a.com?ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb"),
            ("https://a.com/p?x=1", "https://a.com/p?x=1&ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb"),
            ("https://a.com/p?", "https://a.com/p?ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb"),
            ("https://a.com/p?x=1&#f", "https://a.com/p?x=1&ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb#f"),
            ("https://a.com/p#frag?no", "https://a.com/p?ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb#frag?no"),
            (
                "https://a.com/?ad_click_id=old&q=%20x",
                "https://a.com/?q=%20x&ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb",
            ),
            ("HTTP://a.com:8080/é", "HTTP://a.com:8080/%C3%A9?ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb"),
            ("https://[::1]:8443/", "https://[::1]:8443/?ad_click_id=019c4633-5078-7411-8858-4aeafb6298bb"),
        ];
        for (dest, want) in cases {
            assert_eq!(build_redirect(dest, &id()).unwrap(), want, "{dest}");
        }
    }

    #[test]
    fn refuses_dangerous_destinations() {
        let cases = [
            ("javascript:alert(1)", "destination_scheme_not_allowed"),
            ("//evil.com", "destination_scheme_not_allowed"),
            ("ftp://a.com", "destination_scheme_not_allowed"),
            ("https://", "invalid_destination"),
            ("https://good.com@evil.com/", "invalid_destination"),
            ("https:\\\\evil.com", "destination_scheme_not_allowed"),
            ("https://evil.com\\@good.com", "invalid_destination"),
            ("https://a.com/\r\nSet-Cookie:x", "invalid_destination"),
            ("https://a.com:99999/", "invalid_destination"),
            ("https://ex ample.com/", "invalid_destination"),
            ("https://exämple.com/", "invalid_destination"),
        ];
        for (dest, code) in cases {
            assert_eq!(build_redirect(dest, &id()).unwrap_err().code(), code, "{dest}");
        }
        let long = format!("https://a.com/{}", "a".repeat(MAX_DESTINATION_LEN));
        assert_eq!(build_redirect(&long, &id()).unwrap_err().code(), "destination_too_long");
    }
}
