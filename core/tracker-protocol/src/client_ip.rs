//! Client addresses as limits and proxies need them, the same at the edge, the core and the filter.
//!
//! - **Per-address limits key IPv6 by its /64.** One subscriber, one data centre VM or one attacker gets a whole /64
//!   (2^64 addresses): keyed by the full address, a per-address limit would be no limit at all. IPv4, and IPv6 that
//!   carries an IPv4 address (`::ffff:a.b.c.d`), are keyed by the IPv4 address.
//! - **`X-Forwarded-For` is read from the right.** Each proxy appends the address it saw; everything to the left of
//!   the entry our own proxy appended was written by the client and proves nothing.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv6Addr};

/// The key per-address limits count under: the IPv4 address, or the /64 of an IPv6 address (`2001:db8:1:2::/64`).
/// Text that is not an address is its own key.
pub fn rate_key(ip: &str) -> Cow<'_, str> {
    match ip.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Cow::Owned(v4.to_string()),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => Cow::Owned(v4.to_string()),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                Cow::Owned(format!("{}/64", Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0)))
            }
        },
        Err(_) => Cow::Borrowed(ip),
    }
}

/// The client address the nearest proxy saw: the last entry of `X-Forwarded-For` (several headers count as one
/// list, in order). `None` when that entry is not an address: a client cannot move an entry of its own there.
pub fn forwarded_for<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<IpAddr> {
    headers.into_iter().flat_map(|h| h.split(',')).last()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_by_its_64_and_ipv4_by_its_address() {
        assert_eq!(rate_key("203.0.113.9"), "203.0.113.9");
        assert_eq!(rate_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(rate_key("2001:db8:1:2:ffff:ffff:ffff:ffff"), rate_key("2001:db8:1:2::"));
        assert_ne!(rate_key("2001:db8:1:2::1"), rate_key("2001:db8:1:3::1"));
        assert_eq!(rate_key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(rate_key("unknown"), "unknown");
    }

    #[test]
    fn forwarded_for_is_read_from_the_right() {
        assert_eq!(forwarded_for(["198.51.100.7"]), "198.51.100.7".parse().ok());
        // what the client wrote (left) is ignored; our proxy appended the last entry
        assert_eq!(forwarded_for(["1.2.3.4, 198.51.100.7"]), "198.51.100.7".parse().ok());
        assert_eq!(forwarded_for(["1.2.3.4", " 2001:db8::1 "]), "2001:db8::1".parse().ok());
        // a last entry that is not an address: no fallback to one the client chose
        assert_eq!(forwarded_for(["198.51.100.7, garbage"]), None);
        assert_eq!(forwarded_for([]), None);
    }
}
