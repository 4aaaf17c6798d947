//! Canonical forms of values, shared by validation (indicator side) and lookups (query side), so
//! that both sides compare the same text. MISP stores hostnames, domains, hashes and emails
//! lowercased and IPv6 compressed; URLs are compared after WHATWG parsing (scheme and host case,
//! default port and fragment removed, IDN hosts in punycode).

use std::net::IpAddr;

/// An IP address in canonical text form (IPv6 compressed, IPv4-mapped kept as IPv6).
pub fn ip(value: &str) -> Option<IpAddr> {
    value.trim().parse::<IpAddr>().ok()
}

/// A domain or host name: trimmed, trailing dot removed, lowercased, Unicode turned to punycode.
/// Returns `None` when the name cannot be converted (invalid IDN, empty).
pub fn domain(value: &str) -> Option<String> {
    let v = value.trim().trim_end_matches('.');
    if v.is_empty() {
        return None;
    }
    if v.is_ascii() {
        return Some(v.to_ascii_lowercase());
    }
    idna::domain_to_ascii(v).ok().filter(|s| !s.is_empty())
}

/// A URL in the form lookups compare: `None` when it does not parse as an absolute URL with a host.
pub fn url(value: &str) -> Option<String> {
    parsed_url(value).map(String::from)
}

/// [`url`] before it is turned into text, for callers that also need the host.
pub fn parsed_url(value: &str) -> Option<url::Url> {
    let mut u = url::Url::parse(value.trim()).ok()?;
    u.host_str()?;
    u.set_fragment(None);
    Some(u)
}

/// A hex digest, lowercased. `None` when it is not all hex.
pub fn hex(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit())).then(|| v.to_ascii_lowercase())
}

/// An email address: the domain part is normalised like a domain, the local part lowercased
/// (MISP lowercases the whole address).
pub fn email(value: &str) -> Option<String> {
    let v = value.trim();
    let (local, dom) = v.rsplit_once('@')?;
    if local.is_empty() {
        return None;
    }
    Some(format!("{}@{}", local.to_lowercase(), domain(dom)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_compare_after_normalisation() {
        assert_eq!(
            url("HTTP://Evil.Example:80/a#frag").unwrap(),
            "http://evil.example/a"
        );
        assert_eq!(
            url("https://evil.example:443").unwrap(),
            "https://evil.example/"
        );
        assert_eq!(
            url("https://evil.example:8443/x").unwrap(),
            "https://evil.example:8443/x"
        );
        assert!(url("evil.example/path").is_none());
    }

    #[test]
    fn domains_lowercase_and_punycode() {
        assert_eq!(domain("Evil.Example.").unwrap(), "evil.example");
        assert_eq!(domain("bücher.example").unwrap(), "xn--bcher-kva.example");
        assert!(domain("  ").is_none());
    }

    #[test]
    fn ipv6_is_compressed() {
        assert_eq!(
            ip("2001:0db8:0000:0000:0000:0000:0000:0001")
                .unwrap()
                .to_string(),
            "2001:db8::1"
        );
    }

    #[test]
    fn email_and_hex() {
        assert_eq!(email("Bad@Evil.Example").unwrap(), "bad@evil.example");
        assert_eq!(hex("ABCdef01").unwrap(), "abcdef01");
        assert!(hex("xyz").is_none());
    }
}
