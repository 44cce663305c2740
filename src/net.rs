//! Which network addresses keyward may send to: the classification of an IP address as
//! public or not (loopback, private, link-local, ...) and of a URL host as loopback. Pure: no
//! resolution, no I/O; the callers (spec validation, the webhook transport) resolve and
//! decide. Must not grow policy of its own.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address is not public (None: it is), as words for a message.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => {
            // An IPv4 address in IPv6 clothing is judged as the IPv4 address.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_v4(v4);
            }
            non_public_v6(v6)
        }
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_unspecified() || a == 0 {
        "an unspecified address (\"this host\")"
    } else if ip.is_private() {
        "a private address"
    } else if ip.is_link_local() {
        "a link-local address (cloud metadata services live there)"
    } else if a == 100 && (64..128).contains(&b) {
        "a shared (carrier-grade NAT) address"
    } else if a == 192 && b == 0 && c == 0 {
        "an IETF protocol address"
    } else if a == 198 && (18..20).contains(&b) {
        "a benchmarking address"
    } else if ip.is_documentation() {
        "a documentation address"
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        "a multicast, broadcast or reserved address"
    } else {
        return None;
    })
}

/// The IPv4 address carried in two 16-bit segments of an IPv6 address.
fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let seg = ip.segments();
    Some(if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_unspecified() {
        "an unspecified address (\"this host\")"
    } else if (seg[0] & 0xfe00) == 0xfc00 {
        "a unique local (private) address"
    } else if (seg[0] & 0xffc0) == 0xfe80 {
        "a link-local address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
        "a documentation address"
    } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
        // NAT64: judged by the IPv4 address it carries.
        return non_public_v4(embedded_v4(seg[6], seg[7]));
    } else if seg[0] == 0x2002 {
        // 6to4: the IPv4 address is in the next 32 bits.
        return non_public_v4(embedded_v4(seg[1], seg[2]));
    } else if seg[..6] == [0, 0, 0, 0, 0, 0] {
        "an IPv4-compatible (deprecated) address"
    } else {
        return None;
    })
}

/// Is this URL host the local machine, so a plain connection never leaves it? An IP
/// loopback literal, or `localhost` / `*.localhost` (RFC 6761).
pub fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
    }
}

/// The IP address of a URL host that is an IP literal.
pub fn host_ip(host: &url::Host<&str>) -> Option<IpAddr> {
    match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(*ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(*ip)),
        url::Host::Domain(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn np(s: &str) -> bool {
        non_public(s.parse().unwrap()).is_some()
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:c0a8:0101::1",
        ] {
            assert!(np(a), "{a} must not count as public");
        }
        for a in ["93.184.215.14", "172.32.0.1", "1.1.1.1", "2606:4700::1111"] {
            assert!(!np(a), "{a} is public");
        }
    }

    #[test]
    fn loopback_hosts_are_told_by_the_parsed_url() {
        let host = |u: &str| {
            let u = url::Url::parse(u).unwrap();
            is_loopback_host(&u.host().unwrap())
        };
        assert!(host("http://localhost:1/x"));
        assert!(host("http://[::1]:1/x"));
        assert!(host("http://api.localhost/x"));
        assert!(!host("http://localhost.example.com/x"));
        // The trick of issue 15: the backslash ends the authority for the client's parser.
        assert!(!host("http://evil.example\\@localhost/hook"));
        let u = url::Url::parse("http://0.0.0.0:9997\\@localhost/hook").unwrap();
        assert_eq!(u.host_str(), Some("0.0.0.0"));
        assert!(non_public(host_ip(&u.host().unwrap()).unwrap()).is_some());
    }
}
