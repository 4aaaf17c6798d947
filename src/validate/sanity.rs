//! Sanity checks that need no list: special-purpose address ranges (bogons), networks too broad
//! to block, public suffixes and special-use names.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use std::net::IpAddr;

/// IANA special-purpose IPv4 ranges (RFC 6890 and successors) never published as indicators.
const BOGONS_V4: &[(&str, &str)] = &[
    ("0.0.0.0/8", "\"this network\" (RFC 791)"),
    ("10.0.0.0/8", "private network (RFC 1918)"),
    ("100.64.0.0/10", "carrier-grade NAT (RFC 6598)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private network (RFC 1918)"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation (TEST-NET-1)"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", "private network (RFC 1918)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation (TEST-NET-2)"),
    ("203.0.113.0/24", "documentation (TEST-NET-3)"),
    ("224.0.0.0/4", "multicast"),
    (
        "240.0.0.0/4",
        "reserved (includes broadcast 255.255.255.255)",
    ),
];

/// IPv6 special-purpose ranges inside global unicast `2000::/3`; everything outside `2000::/3`
/// (loopback, unspecified, ULA, link-local, multicast...) is a bogon too, except IPv4-mapped
/// addresses, which are judged by their IPv4 address.
const BOGONS_V6: &[(&str, &str)] = &[
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("2001:10::/28", "deprecated ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "SRv6 SIDs (RFC 9602)"),
    ("::/3", "outside global unicast 2000::/3 (loopback, unspecified, NAT64 local use...)"),
    ("4000::/2", "outside global unicast 2000::/3"),
    ("8000::/1", "outside global unicast 2000::/3 (ULA fc00::/7, link-local fe80::/10, multicast ff00::/8...)"),
];

/// Special-use domain names (RFC 6761, 6762, 8375; ICANN `.internal`): never resolvable on the
/// Internet, so an indicator under them is a local name leaking out of someone's sandbox.
const SPECIAL_NAMES: &[&str] = &["localhost", "local", "invalid", "home.arpa", "internal"];

#[derive(Debug)]
pub(crate) struct Sanity {
    v4: PrefixMap<Ipv4Net, &'static str>,
    v6: PrefixMap<Ipv6Net, &'static str>,
    allowed: Vec<IpNet>,
    min_v4: u8,
    min_v6: u8,
}

/// Why a value fails a sanity check.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Insane {
    Bogon(String),
    TooBroad(String),
    PublicSuffix(String),
}

impl Sanity {
    pub(crate) fn new(allowed: Vec<IpNet>, min_v4: u8, min_v6: u8) -> Sanity {
        let mut v4 = PrefixMap::new();
        for (n, why) in BOGONS_V4 {
            v4.insert(n.parse::<Ipv4Net>().expect("static bogon"), *why);
        }
        let mut v6 = PrefixMap::new();
        for (n, why) in BOGONS_V6 {
            v6.insert(n.parse::<Ipv6Net>().expect("static bogon"), *why);
        }
        Sanity {
            v4,
            v6,
            allowed,
            min_v4: min_v4.max(1),
            min_v6: min_v6.max(1),
        }
    }

    /// Too broad first (a /0 is never a reasonable block), then bogon overlap both ways: a
    /// network that contains a special-purpose range counts as well.
    pub(crate) fn check_net(&self, net: IpNet) -> Result<(), Insane> {
        let (len, min) = match net {
            IpNet::V4(n) => (n.prefix_len(), self.min_v4),
            IpNet::V6(n) => (n.prefix_len(), self.min_v6),
        };
        if len < min {
            return Err(Insane::TooBroad(format!(
                "{net} is broader than /{min} (min-prefix-{})",
                if net.addr().is_ipv4() { "v4" } else { "v6" }
            )));
        }
        if self.allowed.iter().any(|a| a.contains(&net)) {
            return Ok(());
        }
        if let Some(why) = self.bogon(net) {
            return Err(Insane::Bogon(format!("{net} is {why}")));
        }
        Ok(())
    }

    fn bogon(&self, net: IpNet) -> Option<&'static str> {
        match as_v4(net) {
            IpNet::V4(n) => overlap4(&self.v4, &n),
            IpNet::V6(n) => overlap6(&self.v6, &n),
        }
    }

    /// Public-suffix-only names (`com`, `co.uk`, `github.io`) and special-use names. `Ok`
    /// carries the length of the name's registrable domain (`evil.example.co.uk` ->
    /// `example.co.uk`).
    pub(crate) fn check_name(&self, name: &str) -> Result<usize, Insane> {
        for s in SPECIAL_NAMES {
            if name == *s || name.strip_suffix(s).is_some_and(|p| p.ends_with('.')) {
                return Err(Insane::Bogon(format!(
                    "{name} is under the special-use name .{s}"
                )));
            }
        }
        match psl::domain_str(name) {
            Some(d) => Ok(d.len()),
            None => Err(Insane::PublicSuffix(format!("{name} is a public suffix"))),
        }
    }
}

/// An IPv4-mapped IPv6 network (`::ffff:a.b.c.d/n`, n >= 96) as the IPv4 network it stands for.
pub(crate) fn as_v4(net: IpNet) -> IpNet {
    if let IpNet::V6(n) = net {
        if n.prefix_len() >= 96 {
            if let Some(a) = n.addr().to_ipv4_mapped() {
                if let Ok(v4) = Ipv4Net::new(a, n.prefix_len() - 96) {
                    return IpNet::V4(v4);
                }
            }
        }
    }
    net
}

/// The address an IP stands for, IPv4-mapped addresses unwrapped.
pub(crate) fn canonical_ip(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(a),
        v4 => v4,
    }
}

fn overlap4<T: Copy>(m: &PrefixMap<Ipv4Net, T>, n: &Ipv4Net) -> Option<T> {
    m.cover(n)
        .next()
        .or_else(|| m.children(n).next())
        .map(|(_, v)| *v)
}

fn overlap6<T: Copy>(m: &PrefixMap<Ipv6Net, T>, n: &Ipv6Net) -> Option<T> {
    m.cover(n)
        .next()
        .or_else(|| m.children(n).next())
        .map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Sanity {
        Sanity::new(vec![], 16, 32)
    }
    fn net(v: &str) -> IpNet {
        crate::validate::syntax::parse_net(v, true).unwrap()
    }

    #[test]
    fn bogons() {
        for b in [
            "0.0.0.0",
            "10.1.2.3",
            "127.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "192.0.0.8",
            "192.0.2.7",
            "198.51.100.1",
            "203.0.113.7",
            "198.19.0.1",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b:1::1",
        ] {
            assert!(
                matches!(s().check_net(net(b)), Err(Insane::Bogon(_))),
                "{b} must be a bogon"
            );
        }
        for ok in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "45.0.0.0/16",
        ] {
            assert_eq!(s().check_net(net(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn broad_and_containing() {
        assert!(matches!(
            s().check_net(net("0.0.0.0/0")),
            Err(Insane::TooBroad(_))
        ));
        assert!(matches!(
            s().check_net(net("::/0")),
            Err(Insane::TooBroad(_))
        ));
        assert!(matches!(
            s().check_net(net("10.0.0.0/8")),
            Err(Insane::TooBroad(_))
        ));
        // a /16 that contains a documentation /24
        assert!(matches!(
            s().check_net(net("198.51.0.0/16")),
            Err(Insane::Bogon(_))
        ));
        let zero = Sanity::new(vec![], 0, 0);
        assert!(matches!(
            zero.check_net(net("0.0.0.0/0")),
            Err(Insane::TooBroad(_))
        ));
        let allowed = Sanity::new(vec![net("10.9.0.0/16")], 16, 32);
        assert_eq!(allowed.check_net(net("10.9.1.2")), Ok(()));
        assert!(allowed.check_net(net("10.8.1.2")).is_err());
    }

    #[test]
    fn names() {
        assert!(matches!(
            s().check_name("co.uk"),
            Err(Insane::PublicSuffix(_))
        ));
        assert!(matches!(
            s().check_name("com"),
            Err(Insane::PublicSuffix(_))
        ));
        assert!(matches!(
            s().check_name("github.io"),
            Err(Insane::PublicSuffix(_))
        ));
        assert!(matches!(
            s().check_name("printer.local"),
            Err(Insane::Bogon(_))
        ));
        assert!(matches!(s().check_name("localhost"), Err(Insane::Bogon(_))));
        assert_eq!(s().check_name("evil.co.uk"), Ok("evil.co.uk".len()));
        assert_eq!(s().check_name("a.b.notlocal.com"), Ok("notlocal.com".len()));
        assert_eq!(s().check_name("x.blogspot.com"), Ok("x.blogspot.com".len()));
    }
}
