//! Host facts never to publish: this host's own addresses, its DNS resolvers, its default
//! gateways, and the MISP servers it talks to. Publishing any of them would let a poisoned
//! MISP cut the host off from its network, its resolver or its intelligence.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::path::Path;

/// Addresses and names that must never be published, each with the reason a person reads.
#[derive(Clone, Debug, Default)]
pub struct Protected {
    addrs: Vec<(IpAddr, String)>,
    names: Vec<(String, String)>,
}

impl Protected {
    /// Discover the host facts. Files that cannot be read and names that do not resolve are
    /// ignored (the rest still protects); the result lists what was found.
    pub fn discover(misp_hosts: &[String], resolv_conf: &Path) -> Protected {
        let mut p = Protected::default();
        // /proc/self/net rather than /proc/net (a symlink to it): mispd.service sets
        // ProcSubset=pid, which hides the top-level symlink but not the per-process directory.
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        for a in local_v4(&read("/proc/self/net/fib_trie")) {
            p.add_addr(a.into(), "an address of this host".into());
        }
        for a in local_v6(&read("/proc/self/net/if_inet6")) {
            p.add_addr(a.into(), "an address of this host".into());
        }
        for a in gateways_v4(&read("/proc/self/net/route")) {
            p.add_addr(a.into(), "this host's default gateway".into());
        }
        for a in gateways_v6(&read("/proc/self/net/ipv6_route")) {
            p.add_addr(a.into(), "this host's default gateway".into());
        }
        let resolv = std::fs::read_to_string(resolv_conf).unwrap_or_default();
        for a in resolvers(&resolv) {
            p.add_addr(
                a,
                format!("this host's DNS resolver from {}", resolv_conf.display()),
            );
        }
        for h in misp_hosts {
            let host = host_part(h);
            let bare = host.as_str();
            if let Ok(a) = bare.parse::<IpAddr>() {
                p.add_addr(a, format!("MISP server address {a}"));
                continue;
            }
            if let Ok(addrs) = (bare, 443).to_socket_addrs() {
                for sa in addrs {
                    p.add_addr(sa.ip(), format!("an address of MISP server host {host}"));
                }
            }
            p.names
                .push((host.clone(), format!("MISP server host {host}")));
        }
        p
    }

    /// Build from known parts (tests, or a caller that already knows the facts).
    pub fn from_parts(addrs: Vec<IpAddr>, names: Vec<String>) -> Protected {
        Protected {
            addrs: addrs
                .into_iter()
                .map(|a| (a, format!("protected address {a}")))
                .collect(),
            names: names
                .into_iter()
                .map(|n| {
                    let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
                    let why = format!("protected host {n}");
                    (n, why)
                })
                .collect(),
        }
    }

    fn add_addr(&mut self, a: IpAddr, why: String) {
        if !self.addrs.iter().any(|(x, _)| *x == a) {
            self.addrs.push((a, why));
        }
    }

    pub fn addrs(&self) -> impl Iterator<Item = &IpAddr> {
        self.addrs.iter().map(|(a, _)| a)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|(n, _)| n.as_str())
    }

    /// The reason a network (or single address) touches a protected address.
    pub(crate) fn net(&self, net: &ipnet::IpNet) -> Option<&str> {
        self.addrs
            .iter()
            .find(|(a, _)| net.contains(a) || net.contains(&super::sanity::canonical_ip(*a)))
            .map(|(_, why)| why.as_str())
    }

    /// The reason a name touches a protected name: equal to it, or (for a domain indicator,
    /// which matches subdomains) a parent of it.
    pub(crate) fn name(&self, name: &str, covers_subdomains: bool) -> Option<&str> {
        self.names
            .iter()
            .find(|(p, _)| p == name || (covers_subdomains && super::is_subdomain_of(p, name)))
            .map(|(_, why)| why.as_str())
    }
}

/// The host of a MISP server given as a name, `name:port`, `[v6]:port` or a URL.
fn host_part(h: &str) -> String {
    let h = h.trim();
    let h = match url::Url::parse(h) {
        Ok(u) if h.contains("://") => u.host_str().unwrap_or("").to_string(),
        _ => h.to_string(),
    };
    let h = if h.parse::<IpAddr>().is_ok() {
        h
    } else if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("").to_string()
    } else {
        h.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h.clone(), |(n, _)| n.to_string())
    };
    h.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `LOCAL` addresses from `/proc/net/fib_trie`: a `|-- a.b.c.d` line followed by `/32 host LOCAL`.
pub(crate) fn local_v4(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let t = line.trim();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.contains("host LOCAL") {
            if let Some(a) = last {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

fn hex128(s: &str) -> Option<u128> {
    (s.len() == 32).then(|| u128::from_str_radix(s, 16).ok())?
}

/// Addresses from `/proc/net/if_inet6` (first column, 32 hex digits).
pub(crate) fn local_v6(if_inet6: &str) -> Vec<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|l| l.split_whitespace().next().and_then(hex128))
        .map(Ipv6Addr::from)
        .collect()
}

/// Default gateways from `/proc/net/route` (destination 0, gateway in little-endian hex).
pub(crate) fn gateways_v4(route: &str) -> Vec<Ipv4Addr> {
    route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 3 || f[1] != "00000000" {
                return None;
            }
            let g = u32::from_str_radix(f[2], 16).ok().filter(|&g| g != 0)?;
            Some(Ipv4Addr::from(g.swap_bytes()))
        })
        .collect()
}

/// Default gateways from `/proc/net/ipv6_route`: destination `::/0` with a non-zero next hop.
pub(crate) fn gateways_v6(route: &str) -> Vec<Ipv6Addr> {
    route
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || hex128(f[0]) != Some(0) || f[1] != "00" {
                return None;
            }
            hex128(f[4]).filter(|&g| g != 0).map(Ipv6Addr::from)
        })
        .collect()
}

/// `nameserver` addresses from resolv.conf (a `%zone` suffix is dropped).
pub(crate) fn resolvers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next())?
        })
        .filter_map(|a| a.split('%').next()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.0.2.0/24 2 0 2\n        |-- 10.0.2.15\n           /32 host LOCAL\n        |-- 10.0.2.255\n           /32 link BROADCAST\nLocal:\n        |-- 10.0.2.15\n           /32 host LOCAL\n";
        assert_eq!(local_v4(fib), vec![Ipv4Addr::new(10, 0, 2, 15)]);
        let inet6 = "00000000000000000000000000000001 01 80 10 80       lo\n2a0104f8c2c3b0b20000000000000001 02 40 00 80     eth0\n";
        assert_eq!(
            local_v6(inet6),
            vec![
                "::1".parse::<Ipv6Addr>().unwrap(),
                "2a01:4f8:c2c3:b0b2::1".parse().unwrap()
            ]
        );
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0202000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\neth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert_eq!(gateways_v4(route), vec![Ipv4Addr::new(10, 0, 2, 2)]);
        let r6 = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n";
        assert_eq!(
            gateways_v6(r6),
            vec!["fe80::1".parse::<Ipv6Addr>().unwrap()]
        );
        let resolv = "# generated\nsearch example.org\nnameserver 9.9.9.9\nnameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(
            resolvers(resolv),
            vec![
                "9.9.9.9".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn discover_reads_resolv_conf_and_literal_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "nameserver 9.9.9.9\n").unwrap();
        let p = Protected::discover(&["198.51.100.20".into()], &path);
        let net = |s: &str| crate::validate::syntax::parse_net(s, true).unwrap();
        assert!(p.net(&net("9.9.9.9")).unwrap().contains("resolv.conf"));
        assert!(p.net(&net("9.9.0.0/16")).is_some());
        assert!(p.net(&net("198.51.100.20")).unwrap().contains("MISP"));
        assert!(p.net(&net("9.9.9.10")).is_none());
    }

    #[test]
    fn misp_hosts_in_any_spelling() {
        assert_eq!(
            host_part("https://MISP.example.org:8443/"),
            "misp.example.org"
        );
        assert_eq!(host_part("misp.example.org:443"), "misp.example.org");
        assert_eq!(host_part("misp.example.org."), "misp.example.org");
        assert_eq!(host_part("[2001:db8::5]:443"), "2001:db8::5");
        assert_eq!(host_part("https://[2001:db8::5]/"), "2001:db8::5");
        assert_eq!(host_part("2001:db8::5"), "2001:db8::5");
        let dir = tempfile::tempdir().unwrap();
        let p = Protected::discover(
            &["https://misp.invalid:8443".into()],
            &dir.path().join("none"),
        );
        assert!(p
            .name("misp.invalid", false)
            .unwrap()
            .contains("MISP server"));
    }

    #[test]
    fn names_cover_subdomains_only_for_domains() {
        let p = Protected::from_parts(vec![], vec!["MISP.Example.org.".into()]);
        assert!(p.name("misp.example.org", false).is_some());
        assert!(p.name("example.org", true).is_some());
        assert!(p.name("example.org", false).is_none());
        assert!(p.name("ample.org", true).is_none());
    }
}
