//! Webhook deliveries: the signed `POST` (see `tracker_protocol::webhook`) and the guard against server-side
//! request forgery.
//!
//! A tenant chooses the URL, so without a guard a webhook could make our servers call their own private network
//! or a cloud metadata service. The guard sits where connections are made: the HTTP client resolves names only
//! through [`PublicResolver`], which refuses private, loopback, link-local, metadata and other special-purpose
//! addresses, so a name that resolves to a public address at check time and a private one later (DNS rebinding)
//! is refused too. URLs with a literal IP are checked before the request; redirects are not followed.
//! `WEBHOOK_ALLOW_PRIVATE=true` lifts the guard for local development and tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde::Serialize;

/// Whether an address is on the public internet (not private, loopback, link-local, shared, documentation,
/// benchmarking, multicast, reserved or unspecified).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            let low_v4 = || {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                Ipv4Addr::new(a, b, c, d)
            };
            // NAT64 (64:ff9b::/96), IPv4-compatible (::/96) and IPv4-translated (::ffff:0:0/96, SIIT) addresses
            // carry an IPv4 address in the low bits
            let nat64 = s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0];
            let translated = s[0..4] == [0, 0, 0, 0] && s[4] == 0xffff && s[5] == 0;
            if nat64 || translated || s[0..6] == [0, 0, 0, 0, 0, 0] {
                return is_public_v4(low_v4());
            }
            // Teredo (2001::/32) tunnels to an IPv4 server and client of its own: never a webhook's address
            if s[0] == 0x2001 && s[1] == 0 {
                return false;
            }
            // 6to4 (2002::/16) carries one in bits 16..48
            if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local (includes fd00:ec2::254, a metadata address)
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 (64:ff9b:1::/48)
                || s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local() // 169.254/16, including the 169.254.169.254 metadata service
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19))) // benchmarking
}

/// Why a webhook URL cannot be used.
pub fn check_url(url: &str, allow_private: bool) -> Result<reqwest::Url, &'static str> {
    if url.len() > 2048 {
        return Err("the URL must be at most 2048 bytes");
    }
    // the same host and character rules as link destinations (ASCII host, no credentials, whitespace or `\`)
    tracker_protocol::validate_destination(url)
        .map_err(|_| "the URL must be an absolute http(s) URL with an ASCII host")?;
    let parsed = reqwest::Url::parse(url).map_err(|_| "the URL is not an absolute URL")?;
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("the URL must be http or https");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("the URL must not contain credentials");
    }
    let Some(host) = parsed.host() else { return Err("the URL has no host") };
    if !allow_private {
        let literal = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(d) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") || d.ends_with(".internal") || d.ends_with(".local") {
                    return Err("the URL points at a private host");
                }
                None
            }
        };
        if literal.is_some_and(|ip| !is_public(ip)) {
            return Err("the URL points at a private, loopback or link-local address");
        }
    }
    Ok(parsed)
}

/// Resolves names and keeps only public addresses (all of them refused means the delivery fails).
#[derive(Debug, Clone, Copy)]
pub struct PublicResolver;

impl Resolve for PublicResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = addrs.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves only to private or reserved addresses").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for deliveries: the address guard (unless `allow_private`), no redirects, bounded time. There
/// is no fallback: without this client there are no deliveries.
pub fn client(allow_private: bool) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        // a proxy from the environment would resolve names itself, past the address guard
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("tracker-webhooks/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(PublicResolver));
    }
    b.build().map_err(|e| format!("the webhook HTTP client cannot be built: {e}"))
}

/// What happened to one delivery attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub delivery_id: String,
    /// A 2xx answer.
    pub delivered: bool,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// One delivery: a JSON `body` for an endpoint.
#[derive(Debug, Clone)]
pub struct Delivery<'a> {
    pub url: &'a str,
    pub secret: &'a str,
    pub event_type: &'a str,
    pub delivery_id: &'a str,
    pub body: Vec<u8>,
}

/// Sends one signed delivery.
pub async fn deliver(client: &reqwest::Client, d: Delivery<'_>, allow_private: bool, now_secs: i64) -> Attempt {
    let Delivery { url, secret, event_type, delivery_id, body } = d;
    use tracker_protocol::webhook::{DELIVERY_ID_HEADER, EVENT_HEADER, SIGNATURE_HEADER, sign};
    let started = Instant::now();
    let attempt = |status: Option<u16>, error: Option<String>| Attempt {
        delivery_id: delivery_id.to_owned(),
        delivered: status.is_some_and(|s| (200..300).contains(&s)),
        status,
        error,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let target = match check_url(url, allow_private) {
        Ok(t) => t,
        Err(e) => return attempt(None, Some(e.to_owned())),
    };
    let Some(signature) = sign(secret, now_secs, &body) else {
        return attempt(None, Some("the endpoint's secret cannot sign".into()));
    };
    let sent = client
        .post(target)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, signature)
        .header(DELIVERY_ID_HEADER, delivery_id)
        .header(EVENT_HEADER, event_type)
        .body(body)
        .send()
        .await;
    match sent {
        Ok(res) => {
            let status = res.status().as_u16();
            let error = (!res.status().is_success()).then(|| format!("the endpoint answered {status}"));
            attempt(Some(status), error)
        }
        Err(e) => {
            let mut reason = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                reason = format!("{reason}: {s}");
                source = s.source();
            }
            attempt(None, Some(reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
            "::127.0.0.1",
            "::a00:1",
            "2002:7f00:1::",
            "2002:a9fe:a9fe::1",
            "64:ff9b:1::a00:1",
            "::ffff:0:7f00:1",
            "::ffff:0:a9fe:a9fe",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private} must be refused");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:1.1.1.1", "64:ff9b::101:101", "2002:101:101::"]
        {
            assert!(is_public(public.parse().unwrap()), "{public} must pass");
        }
    }

    #[test]
    fn urls_are_checked_before_any_request() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        for bad in [
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "http://127.0.0.1:8080/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "http://localhost:3000/",
            "http://metadata.google.internal/",
            "not a url",
            "http://00*/",
            "https://a.example\\@b.example/",
        ] {
            assert!(check_url(bad, false).is_err(), "{bad} must be refused");
        }
        assert!(check_url("http://127.0.0.1:8080/", true).is_ok(), "allowed explicitly for development");
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused_at_connect_time() {
        // the resolver the client connects through refuses a name that only has loopback addresses
        let name: Name = "localhost".parse().unwrap();
        let err = PublicResolver.resolve(name).await.err().unwrap().to_string();
        assert!(err.contains("private"), "{err}");
        let d = Delivery {
            url: "http://127.0.0.1:9/",
            secret: "whsec_x",
            event_type: "webhook.test",
            delivery_id: "d1",
            body: vec![],
        };
        let a = deliver(&client(false).unwrap(), d, false, 0).await;
        assert!(!a.delivered && a.error.unwrap().contains("private"));
    }
}
