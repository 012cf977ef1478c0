//! Which peer addresses a TURN allocation may talk to.
//!
//! An open relay that reaches the server's own loopback, its private network or a cloud metadata address is a
//! classic server-side request forgery hole, so by default the relay refuses: loopback, unspecified, RFC 1918
//! private, CGNAT (100.64/10), link-local, IPv6 unique-local, multicast, broadcast and reserved space, documentation
//! and benchmarking ranges. IPv6 addresses that embed an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, NAT64,
//! Teredo) are judged by the embedded address as well, so `::ffff:127.0.0.1` or `64:ff9b::a00:1` cannot sneak past.
//! The operator's deny list overrides everything; the allow list overrides the default denials (tests allow
//! 127.0.0.1 explicitly).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The peer address policy.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
}

const DEFAULT_DENY_V4: &[(u8, u8, u8, u8, u8)] = &[
    (0, 0, 0, 0, 8),       // "this network", unspecified
    (10, 0, 0, 0, 8),      // private
    (100, 64, 0, 0, 10),   // CGNAT
    (127, 0, 0, 0, 8),     // loopback
    (169, 254, 0, 0, 16),  // link-local (cloud metadata lives here)
    (172, 16, 0, 0, 12),   // private
    (192, 0, 0, 0, 24),    // IETF protocol assignments
    (192, 0, 2, 0, 24),    // documentation
    (192, 88, 99, 0, 24),  // 6to4 relay anycast
    (192, 168, 0, 0, 16),  // private
    (198, 18, 0, 0, 15),   // benchmarking
    (198, 51, 100, 0, 24), // documentation
    (203, 0, 113, 0, 24),  // documentation
    (224, 0, 0, 0, 4),     // multicast
    (240, 0, 0, 0, 4),     // reserved, and the broadcast address
];

impl PeerPolicy {
    /// A policy with the operator's allow and deny lists on top of the defaults.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>) -> Self {
        Self { allow, deny }
    }

    /// Whether an allocation may send to (and receive from) `peer`.
    pub fn permits(&self, peer: IpAddr) -> bool {
        let forms = forms(peer);
        let listed = |nets: &[IpNet]| forms.iter().flatten().any(|ip| nets.iter().any(|net| net.contains(ip)));
        if listed(&self.deny) {
            return false;
        }
        if listed(&self.allow) {
            return true;
        }
        !forms.iter().flatten().any(|ip| denied_by_default(*ip))
    }
}

/// The address and the IPv4 addresses an IPv6 address embeds (at most two: Teredo embeds server and client).
fn forms(ip: IpAddr) -> [Option<IpAddr>; 3] {
    match ip {
        IpAddr::V4(_) => [Some(ip), None, None],
        IpAddr::V6(v6) => {
            let [a, b, ..] = v6.segments();
            let octets = v6.octets();
            let last32 = Ipv4Addr::new(octets[12], octets[13], octets[14], octets[15]);
            let embedded: [Option<Ipv4Addr>; 2] = if let Some(mapped) = v6.to_ipv4_mapped() {
                [Some(mapped), None]
            } else if a == 0x2002 {
                // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
                [Some(Ipv4Addr::new(octets[2], octets[3], octets[4], octets[5])), None]
            } else if a == 0x0064 && b == 0xff9b {
                // NAT64: the well-known prefix 64:ff9b::/96 and the local-use 64:ff9b:1::/48 end in the IPv4 address.
                [Some(last32), None]
            } else if a == 0x2001 && b == 0x0000 {
                // Teredo: server address in bits 32-63, client address (bit-inverted) in the last 32 bits.
                let server = Ipv4Addr::new(octets[4], octets[5], octets[6], octets[7]);
                let client = Ipv4Addr::from(!u32::from(last32));
                [Some(server), Some(client)]
            } else if octets[..12].iter().all(|&o| o == 0) && !v6.is_unspecified() && !v6.is_loopback() {
                // IPv4-compatible (deprecated): ::a.b.c.d.
                [Some(last32), None]
            } else {
                [None, None]
            };
            [Some(ip), embedded[0].map(IpAddr::V4), embedded[1].map(IpAddr::V4)]
        }
    }
}

fn denied_by_default(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            DEFAULT_DENY_V4.iter().any(|&(a, b, c, d, prefix)| {
                let net = u32::from(Ipv4Addr::new(a, b, c, d));
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
                bits & mask == net
            })
        }
        IpAddr::V6(v6) => v6_denied(v6),
    }
}

fn v6_denied(v6: Ipv6Addr) -> bool {
    let first = v6.segments()[0];
    v6.is_unspecified()
        || v6.is_loopback()
        || first & 0xfe00 == 0xfc00 // unique local fc00::/7
        || first & 0xffc0 == 0xfe80 // link-local fe80::/10
        || first & 0xffc0 == 0xfec0 // site-local fec0::/10 (deprecated)
        || first & 0xff00 == 0xff00 // multicast ff00::/8
        || (first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation 2001:db8::/32
        || (first == 0x0100 && v6.segments()[1..4] == [0, 0, 0]) // discard-only 100::/64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn denies_internal_addresses_by_default() {
        let policy = PeerPolicy::default();
        for denied in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "2002:7f00:1::",
            "2002:a00:1::1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::c0a8:101",
            // Teredo with client 127.0.0.1 (inverted: 80ff:fffe) and a public server.
            "2001:0:5ef5:79fb::80ff:fffe",
            "2001:db8::1",
        ] {
            assert!(!policy.permits(ip(denied)), "{denied} must be denied");
        }
        for allowed in
            ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
        {
            assert!(policy.permits(ip(allowed)), "{allowed} must be allowed");
        }
    }

    #[test]
    fn operator_lists_override() {
        let policy = PeerPolicy::new(
            vec!["127.0.0.1/32".parse().unwrap(), "10.0.0.0/8".parse().unwrap()],
            vec!["10.9.0.0/16".parse().unwrap(), "8.8.8.8/32".parse().unwrap()],
        );
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::ffff:127.0.0.1")), "the mapped form follows the IPv4 rule");
        assert!(!policy.permits(ip("127.0.0.2")));
        assert!(policy.permits(ip("10.1.0.1")));
        assert!(!policy.permits(ip("10.9.0.1")), "deny beats allow");
        assert!(!policy.permits(ip("8.8.8.8")));
        assert!(!policy.permits(ip("64:ff9b::808:808")), "an embedded denied address is denied");
    }
}
