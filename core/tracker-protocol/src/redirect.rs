//! Destination checks and redirect building: only absolute http(s) URLs without credentials, and the click id
//! appended as `ad_click_id` in the right place (before any fragment, replacing a stale one).

use std::fmt::Write as _;

use uuid::Uuid;

use crate::ProtocolError;

/// Longest destination a new link may have (browsers and proxies start failing beyond a few KiB).
pub const MAX_DESTINATION_LEN: usize = 4096;
/// Longest destination a verified link is redirected to: links already out in the world (the replaced system
/// set no limit) may be longer than new ones; the request that carries one is bounded anyway.
pub const MAX_REDIRECT_LEN: usize = 16 * 1024;
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
    let (host, port) = split_authority(authority)?;
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

/// Refuses what a click on a verified link to `dest` would refuse ([`build_redirect`]'s errors): the rule for links
/// in the replaced system's formats, whose clicks are redirected wherever a browser would go. New links are held to
/// [`validate_destination`], which is stricter.
pub fn check_redirectable(dest: &str) -> Result<(), ProtocolError> {
    build_redirect(dest, &Uuid::nil()).map(|_| ())
}

fn is_click_id_pair(pair: &str) -> bool {
    let name = pair.split('=').next().unwrap_or_default();
    form_urlencoded::parse(name.as_bytes()).next().is_some_and(|(k, _)| k == CLICK_ID_PARAM)
}

/// Schemes no browser follows from a redirect, or that would run code or read local data: never a destination.
const BLOCKED_SCHEMES: [&str; 8] =
    ["javascript", "vbscript", "data", "file", "blob", "about", "filesystem", "view-source"];

/// Bytes percent-encoded in each part of a redirect, besides controls, DEL and non-ASCII: what the URL Standard's
/// path, query (special schemes) and fragment percent-encode sets add, so the `Location` is what a browser would
/// have made of the destination, in bytes a header can carry.
const PATH_SET: &[u8] = b" \"<>`{}";
const QUERY_SET: &[u8] = b" \"<>'";
const FRAGMENT_SET: &[u8] = b" \"<>`";

/// The `Location` for a click on a verified link: the destination as a browser reads it, with
/// `ad_click_id=<event_id>` added to its query (an existing `ad_click_id` is replaced) and the fragment kept last.
///
/// A signed destination is the tenant's word, so whatever a browser would follow is followed, read the way the URL
/// Standard reads it (and the way browsers read the bytes the replaced system passed on untouched): tabs and
/// newlines dropped and the ends trimmed; for http(s), slashes or backslashes after the scheme, backslashes in the
/// path as slashes, credentials dropped (the browser goes to the host after the last `@` anyway), a
/// protocol-relative `//host/…` as https, and spaces, quotes, angle brackets and non-ASCII percent-encoded. An app's
/// own hierarchical scheme (`myapp://…`) gets the click id too; an opaque one (`mailto:`, `tel:`) is passed on as it
/// is. Refused: script, data and local schemes, relative references (they led back to the tracking host), and
/// hosts or ports no browser can reach.
pub fn build_redirect(dest: &str, click_id: &Uuid) -> Result<String, ProtocolError> {
    let cleaned: String = dest.chars().filter(|c| !matches!(c, '\t' | '\n' | '\r')).collect();
    let dest = cleaned.trim_matches(|c: char| c <= ' ');
    if dest.len() > MAX_REDIRECT_LEN {
        return Err(ProtocolError::DestinationTooLong { max: MAX_REDIRECT_LEN });
    }
    let (scheme, rest) = match split_scheme(dest) {
        Some(parts) => parts,
        None if dest.starts_with("//") => ("https", dest),
        None => return Err(ProtocolError::DestinationSchemeNotAllowed),
    };
    let lower = scheme.to_ascii_lowercase();
    if BLOCKED_SCHEMES.contains(&lower.as_str()) {
        return Err(ProtocolError::DestinationSchemeNotAllowed);
    }
    let mut out = String::with_capacity(dest.len() + 64);
    if lower == "http" || lower == "https" {
        let rest = rest.trim_start_matches(['/', '\\']);
        let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        check_host_port(host_port)?;
        out.push_str(scheme);
        out.push_str("://");
        push_encoded(&mut out, host_port, b"");
        let (path, query, fragment) = split_tail(tail);
        push_encoded(&mut out, &path.replace('\\', "/"), PATH_SET);
        push_query(&mut out, query, click_id);
        push_fragment(&mut out, fragment);
    } else if let Some(hier) = rest.strip_prefix("//") {
        out.push_str(scheme);
        out.push_str("://");
        let (path, query, fragment) = split_tail(hier);
        push_encoded(&mut out, path, PATH_SET);
        push_query(&mut out, query, click_id);
        push_fragment(&mut out, fragment);
    } else {
        out.push_str(scheme);
        out.push(':');
        push_encoded(&mut out, rest, FRAGMENT_SET);
    }
    Ok(out)
}

/// `scheme` and what follows its `:`, if `s` starts with a scheme (a letter, then letters, digits, `+`, `-`, `.`).
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut bytes = scheme.bytes();
    let valid = bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then_some((scheme, rest))
}

/// Path, query and fragment of what follows the authority.
fn split_tail(tail: &str) -> (&str, Option<&str>, Option<&str>) {
    let (before_fragment, fragment) = match tail.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (tail, None),
    };
    match before_fragment.split_once('?') {
        Some((p, q)) => (p, Some(q), fragment),
        None => (before_fragment, None, fragment),
    }
}

/// An authority's host (`v6` for a well-formed IPv6 literal) and port, as a browser splits them; never an empty host.
fn split_authority(authority: &str) -> Result<(&str, Option<&str>), ProtocolError> {
    let bad = |reason| ProtocolError::InvalidDestination { reason };
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or(bad("unclosed IPv6 literal"))?;
            if addr.is_empty() || !addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
                return Err(bad("bad IPv6 literal"));
            }
            match after {
                "" => ("v6", None),
                p => ("v6", Some(p.strip_prefix(':').ok_or(bad("junk after IPv6 literal"))?)),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok((host, port))
}

/// A host a browser can look up (letters, digits, `-`, `.`, `_`, or international characters, which are
/// percent-encoded and turned into punycode by the browser) or an IPv6 literal, and an optional port.
fn check_host_port(authority: &str) -> Result<(), ProtocolError> {
    let (host, port) = split_authority(authority)?;
    let host_ok = host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') || !c.is_ascii());
    if !host_ok || host.starts_with('.') {
        return Err(ProtocolError::InvalidDestination { reason: "the host has characters no host name can hold" });
    }
    if let Some(p) = port {
        // an empty port is the default one, as browsers read it
        let ok = p.is_empty()
            || (p.len() <= 5
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)));
        if !ok {
            return Err(ProtocolError::InvalidDestination { reason: "port must be 1 to 65535" });
        }
    }
    Ok(())
}

/// The query without any `ad_click_id`, then the click id.
fn push_query(out: &mut String, query: Option<&str>, click_id: &Uuid) {
    out.push('?');
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty() && !is_click_id_pair(p)) {
            push_encoded(out, pair, QUERY_SET);
            out.push('&');
        }
    }
    out.push_str(CLICK_ID_PARAM);
    out.push('=');
    let _ = write!(out, "{click_id}");
}

fn push_fragment(out: &mut String, fragment: Option<&str>) {
    if let Some(f) = fragment {
        out.push('#');
        push_encoded(out, f, FRAGMENT_SET);
    }
}

/// Appends `s`, percent-encoding controls, DEL, non-ASCII and the bytes of `set`; other bytes as they were.
fn push_encoded(out: &mut String, s: &str, set: &[u8]) {
    for c in s.chars() {
        if c.is_ascii() && !c.is_ascii_control() && !set.contains(&(c as u8)) {
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
    fn reads_destinations_as_a_browser_does() {
        let cases = [
            ("//evil.com/x", "https://evil.com/x?ad_click_id="),
            ("https:\\\\evil.com", "https://evil.com?ad_click_id="),
            ("https:evil.com/p", "https://evil.com/p?ad_click_id="),
            ("https://good.com@evil.com/", "https://evil.com/?ad_click_id="),
            ("https://u:p@a.com/x", "https://a.com/x?ad_click_id="),
            ("https://evil.com\\@good.com", "https://evil.com/@good.com?ad_click_id="),
            ("https://a.com/\r\nSet-Cookie:x", "https://a.com/Set-Cookie:x?ad_click_id="),
            (
                "  https://a.com/a b\\c?q=a b\\c&x=\"<'>#f g",
                "https://a.com/a%20b/c?q=a%20b\\c&x=%22%3C%27%3E&ad_click_id=",
            ),
            ("https://exämple.com/", "https://ex%C3%A4mple.com/?ad_click_id="),
            ("https://a.com:/p", "https://a.com:/p?ad_click_id="),
            ("myapp://open/item?id=7#top", "myapp://open/item?id=7&ad_click_id="),
        ];
        for (dest, want) in cases {
            let got = build_redirect(dest, &id()).unwrap();
            assert!(got.starts_with(want), "{dest:?} gave {got:?}");
            assert!(got.bytes().all(|b| (0x21..0x7f).contains(&b)), "{got:?} is not a plain header value");
        }
        // an opaque scheme's handler gets the destination as it was, without a click id it would not understand
        assert_eq!(build_redirect("mailto:a@b.example?subject=hi", &id()).unwrap(), "mailto:a@b.example?subject=hi");
    }

    #[test]
    fn refuses_what_no_browser_follows() {
        let cases = [
            ("javascript:alert(1)", "destination_scheme_not_allowed"),
            (" JavaScript:alert(1)", "destination_scheme_not_allowed"),
            ("data:text/html,x", "destination_scheme_not_allowed"),
            ("file:///etc/passwd", "destination_scheme_not_allowed"),
            ("/relative/path", "destination_scheme_not_allowed"),
            ("offer.example/landing", "destination_scheme_not_allowed"),
            ("https://", "invalid_destination"),
            ("https://a.com:99999/", "invalid_destination"),
            ("https://ex ample.com/", "invalid_destination"),
            ("https://a<b.com/", "invalid_destination"),
        ];
        for (dest, code) in cases {
            assert_eq!(build_redirect(dest, &id()).unwrap_err().code(), code, "{dest}");
        }
        let long = format!("https://a.com/{}", "a".repeat(MAX_REDIRECT_LEN));
        assert_eq!(build_redirect(&long, &id()).unwrap_err().code(), "destination_too_long");
        // a link out there may be longer than a new one may
        assert!(build_redirect(&format!("https://a.com/{}", "a".repeat(MAX_DESTINATION_LEN)), &id()).is_ok());
    }

    #[test]
    fn creation_stays_strict() {
        for dest in ["https://good.com@evil.com/", "https://exämple.com/", "//evil.com", "https://evil.com\\@good.com"]
        {
            assert!(validate_destination(dest).is_err(), "{dest}");
        }
    }
}
