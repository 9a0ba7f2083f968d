//! Which sites a tenant's beacon is accepted from.
//!
//! A tenant may list origins (`https://shop.example`, `http://localhost:3000`, `https://*.shop.example` for every
//! subdomain, not the apex). A beacon's origin is its request's `Origin` header, which browsers send with every
//! `POST` (`sendBeacon` and `fetch` alike), or the origin of its `Referer` when there is no usable `Origin`. When a
//! tenant has a list, a beacon from any other origin (or from none) is still answered `204`, so the other site
//! learns nothing, but its event carries [`REFUSED_ORIGIN`] and the filter drops it under the reason `origin`: it
//! is never kept, never billed, and the tenant sees it in the drop ledger.

/// The raw-payload entry of a beacon event from an origin its tenant does not accept (the origin, or null).
pub const REFUSED_ORIGIN: &str = "refused_origin";

/// The drop ledger's reason for such events.
pub const DROP_REASON: &str = "origin";

/// Origins a tenant may list.
pub const MAX_ALLOWED_ORIGINS: usize = 50;

const MAX_ORIGIN_LEN: usize = 253 + 16;

/// `scheme://host[:port]`, lowercase, the scheme's default port left out; `None` unless http(s) with a plain host.
fn normalize(text: &str, wildcard: bool) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') || authority.is_empty() || authority.len() > MAX_ORIGIN_LEN {
        return None;
    }
    let (host, port) = match authority.strip_prefix('[') {
        // [IPv6]:port
        Some(v6) => {
            let (addr, after) = v6.split_once(']')?;
            addr.parse::<std::net::Ipv6Addr>().ok()?;
            let port = if after.is_empty() { None } else { Some(after.strip_prefix(':')?) };
            (authority.get(..addr.len() + 2)?, port)
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = p.parse().ok()?;
            if n == 0 || n > 65_535 {
                return None;
            }
            (n.to_string() != default_port).then(|| n.to_string())
        }
        Some(_) => return None,
        None => None,
    };
    let host = host.to_ascii_lowercase();
    let name = match host.strip_prefix("*.") {
        Some(rest) if wildcard => rest,
        _ => host.as_str(),
    };
    let plain = name.starts_with('[')
        || (!name.is_empty()
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            }));
    if !plain {
        return None;
    }
    Some(match port {
        Some(p) => format!("{scheme}://{host}:{p}"),
        None => format!("{scheme}://{host}"),
    })
}

/// One entry of a tenant's list, normalized (`HTTPS://Shop.Example:443/` is `https://shop.example`); the reason it
/// cannot be one otherwise.
pub fn parse_allowed(entry: &str) -> Result<String, &'static str> {
    let entry = entry.trim();
    let (_, rest) = entry.split_once("://").ok_or("an origin is scheme://host[:port], e.g. https://shop.example")?;
    if rest.trim_end_matches('/').contains(['/', '?', '#']) {
        return Err("an origin has no path, query or fragment");
    }
    normalize(entry, true).ok_or("an origin is http(s)://host[:port]; a host may start with *. for its subdomains")
}

/// The origin a beacon request came from: its `Origin` header, or its `Referer`'s origin; normalized.
pub fn request_origin(origin: Option<&str>, referer: Option<&str>) -> Option<String> {
    origin
        .filter(|o| !o.eq_ignore_ascii_case("null"))
        .and_then(|o| normalize(o, false))
        .or_else(|| normalize(referer?, false))
}

/// Whether a normalized `origin` is one of `allowed` (entries from [`parse_allowed`]).
pub fn allows(allowed: &[String], origin: &str) -> bool {
    allowed.iter().any(|entry| match entry.split_once("://*.") {
        Some((scheme, suffix)) => origin
            .strip_prefix(scheme)
            .and_then(|o| o.strip_prefix("://"))
            .and_then(|host| host.strip_suffix(suffix))
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => entry == origin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_origins_are_normalized_or_refused_with_a_reason() {
        for (entry, want) in [
            ("https://shop.example", "https://shop.example"),
            ("HTTPS://Shop.Example:443/", "https://shop.example"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://shop.example:80", "http://shop.example"),
            ("https://*.shop.example", "https://*.shop.example"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(parse_allowed(entry).as_deref(), Ok(want), "{entry}");
        }
        for entry in [
            "shop.example",
            "ftp://shop.example",
            "https://shop.example/path",
            "https://user@shop.example",
            "https://shop.example:0",
            "https://shop.example:99999",
            "https://*",
            "https://a.*.example",
            "https://shop..example",
            "https://-shop.example",
            "https://",
            "http://[::1]x",
        ] {
            assert!(parse_allowed(entry).is_err(), "{entry}");
        }
    }

    #[test]
    fn a_request_origin_comes_from_origin_or_else_the_referer() {
        assert_eq!(request_origin(Some("https://Shop.example"), None).as_deref(), Some("https://shop.example"));
        let from_referer = request_origin(Some("null"), Some("https://shop.example:443/cart?x=1"));
        assert_eq!(from_referer.as_deref(), Some("https://shop.example"));
        assert_eq!(request_origin(None, Some("not a url")), None);
        assert_eq!(request_origin(None, None), None);
    }

    #[test]
    fn wildcards_match_subdomains_only_and_ports_must_agree() {
        let allowed: Vec<String> =
            ["https://*.shop.example", "http://localhost:3000"].iter().map(|e| parse_allowed(e).unwrap()).collect();
        for origin in ["https://www.shop.example", "https://a.b.shop.example", "http://localhost:3000"] {
            assert!(allows(&allowed, origin), "{origin}");
        }
        for origin in [
            "https://shop.example",
            "http://www.shop.example",
            "https://evilshop.example",
            "https://shop.example.evil",
            "https://www.shop.example:8443",
            "http://localhost:3001",
            "http://localhost",
        ] {
            assert!(!allows(&allowed, origin), "{origin}");
        }
    }
}
