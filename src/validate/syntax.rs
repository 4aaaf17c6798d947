//! Reading one part of a value: trimming, refanging, and checking syntax by MISP type. Produces
//! the canonical form (via [`crate::normalize`]) that is stored and that lookups compare.

use super::types::Part;
use crate::normalize;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::borrow::Cow;
use std::net::IpAddr;

/// A part that passed its syntax check, in canonical form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// An address (prefix at full length) or a network with host bits cleared.
    Net(IpNet),
    /// A domain or host name, lowercase ASCII (punycode).
    Name(String),
    /// A normalised absolute URL and its host.
    Url { text: String, host: UrlHost },
    /// `local@domain`, lowercased.
    Email(String),
    /// Lowercase hex.
    Hash(String),
    /// Matched exactly, case kept.
    Text(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum UrlHost {
    Name(String),
    Ip(IpAddr),
}

/// Defanging markers seen in real feeds, and what they stand for.
const MARKERS: &[(&str, &str)] = &[
    ("[://]", "://"),
    ("[:]", ":"),
    ("[.]", "."),
    ("(.)", "."),
    ("{.}", "."),
    ("[dot]", "."),
    ("(dot)", "."),
    ("[DOT]", "."),
    ("[@]", "@"),
    ("(@)", "@"),
    ("[at]", "@"),
    ("[AT]", "@"),
];

/// Whether a value is defanged: `hxxp://`/`fxp://` schemes or one of the bracket markers.
pub(crate) fn is_defanged(v: &str) -> bool {
    // every marker has a bracket: one byte scan settles almost every value
    let bracket = v.bytes().any(|b| matches!(b, b'[' | b'(' | b'{'));
    defanged_scheme(v).is_some() || bracket && MARKERS.iter().any(|(m, _)| v.contains(m))
}

/// The length of a defanged scheme prefix and its replacement.
fn defanged_scheme(v: &str) -> Option<(usize, &'static str)> {
    let b = v.as_bytes();
    if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"hxxp") {
        Some((4, "http"))
    } else if b.len() >= 4 && b[..4].eq_ignore_ascii_case(b"fxp:") {
        Some((3, "ftp"))
    } else {
        None
    }
}

/// Undo the common defanging conventions. Returns the value unchanged when there is nothing to undo.
pub(crate) fn refang(v: &str) -> Cow<'_, str> {
    if !is_defanged(v) {
        return Cow::Borrowed(v);
    }
    let mut s = match defanged_scheme(v) {
        Some((n, to)) => format!("{to}{}", &v[n..]),
        None => v.to_string(),
    };
    for (from, to) in MARKERS {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    Cow::Owned(s)
}

/// Check one trimmed, refanged part. `Ok(None)` for parts that are checked but not indexed
/// (ports, file names). `Err` carries the syntax detail.
pub(crate) fn parse(part: Part, v: &str) -> Result<Option<Parsed>, String> {
    if v.is_empty() {
        return Err("empty value".into());
    }
    match part {
        Part::Ip { cidr } => parse_net(v, cidr).map(|n| Some(Parsed::Net(n))),
        Part::Port => match v.parse::<u16>() {
            Ok(_) if v.bytes().all(|b| b.is_ascii_digit()) => Ok(None),
            _ => Err(format!("`{v}` is not a port (0-65535)")),
        },
        Part::Domain | Part::Hostname => name(v).map(|n| Some(Parsed::Name(n))),
        Part::Url => url(v).map(Some),
        Part::Email => email(v).map(|e| Some(Parsed::Email(e))),
        Part::Hash(len) => {
            if v.len() != len as usize {
                return Err(format!(
                    "{} characters where this hash type has {len}",
                    v.chars().count()
                ));
            }
            match normalize::hex(v) {
                Some(h) => Ok(Some(Parsed::Hash(h))),
                None => Err("not hexadecimal".into()),
            }
        }
        // Exact-match text (filenames, mutexes, JA3...) is exported one value per line and in
        // tab-separated formats: a control character would split or shift a consumer's record.
        Part::Text if v.chars().any(char::is_control) => Err(format!(
            "`{}` contains a control character",
            v.escape_debug()
        )),
        Part::Text => Ok(Some(Parsed::Text(v.to_string()))),
        Part::Ignored => Ok(None),
    }
}

/// An address or (when allowed) a CIDR network. Host bits are cleared; `/32` and `/128` are
/// plain addresses.
pub(crate) fn parse_net(v: &str, cidr: bool) -> Result<IpNet, String> {
    net(v, cidr).ok_or_else(|| match v.split_once('/') {
        Some(_) if !cidr => format!("`{v}`: a network where a single address is expected"),
        Some((addr, _)) if addr.parse::<IpAddr>().is_err() => {
            format!("`{v}` is not an IP network")
        }
        Some((_, len)) if len.parse::<u8>().is_err() => format!("`{v}`: bad prefix length"),
        Some(_) => format!("`{v}`: prefix length out of range"),
        None => format!("`{v}` is not an IP address"),
    })
}

/// [`parse_net`] without the reason: for probes that try each shape in turn (lookups), where
/// formatting an error for every value that is not an address would be wasted work.
pub(crate) fn net(v: &str, cidr: bool) -> Option<IpNet> {
    match v.split_once('/') {
        Some((addr, len)) => {
            if !cidr {
                return None;
            }
            let len: u8 = len.parse().ok()?;
            let net = match addr.parse::<IpAddr>().ok()? {
                IpAddr::V4(a) => Ipv4Net::new(a, len).map(IpNet::V4),
                IpAddr::V6(a) => Ipv6Net::new(a, len).map(IpNet::V6),
            };
            Some(net.ok()?.trunc())
        }
        None => v.parse::<IpAddr>().ok().map(IpNet::from),
    }
}

/// Whether a network has host bits set in its written form (so it was truncated).
pub(crate) fn had_host_bits(v: &str) -> bool {
    match v.split_once('/') {
        Some((a, _)) => parse_net(v, true)
            .map(|n| a.parse::<IpAddr>().ok() != Some(n.network()))
            .unwrap_or(false),
        None => false,
    }
}

/// A domain or host name: at least two labels, letters/digits/`-`/`_`, a TLD of two or more
/// characters that is not all digits (MISP's rule), 63 per label, 253 in all. Unicode names are
/// stored as punycode.
pub(crate) fn name(v: &str) -> Result<String, String> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{v}` contains whitespace"));
    }
    if v.parse::<IpAddr>().is_ok() {
        return Err(format!("`{v}` is an IP address, not a name"));
    }
    let n = normalize::domain(v).ok_or_else(|| format!("`{v}` is not a valid (IDN) name"))?;
    check_ascii_name(&n)?;
    if n.contains("xn--") && idna::domain_to_unicode(&n).1.is_err() {
        return Err(format!("`{v}` has invalid punycode"));
    }
    Ok(n)
}

fn check_ascii_name(n: &str) -> Result<(), String> {
    if n.len() > 253 {
        return Err("name longer than 253 characters".into());
    }
    let mut labels = 0;
    let mut last = "";
    for label in n.split('.') {
        if label.is_empty() {
            return Err(format!("`{n}` has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("`{n}` has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!("`{n}` has characters not allowed in a name"));
        }
        labels += 1;
        last = label;
    }
    if labels < 2 {
        return Err(format!("`{n}` is a single-label name"));
    }
    if last.len() < 2 || last.bytes().all(|b| b.is_ascii_digit()) || last.contains('_') {
        return Err(format!("`{n}` does not end in a valid top-level domain"));
    }
    Ok(())
}

fn url(v: &str) -> Result<Parsed, String> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{v}` contains whitespace"));
    }
    let with_scheme;
    let v = if v.contains("://") {
        v
    } else if schemeless_host(v) {
        with_scheme = format!("http://{v}");
        &with_scheme
    } else {
        return Err(format!(
            "`{v}` has no scheme and does not start with a host name"
        ));
    };
    let u = url::Url::parse(v).map_err(|e| format!("`{v}` is not a URL: {e}"))?;
    let host = match u.host() {
        Some(url::Host::Domain(d)) => {
            check_ascii_name(d.trim_end_matches('.'))?;
            UrlHost::Name(d.trim_end_matches('.').to_string())
        }
        Some(url::Host::Ipv4(a)) => UrlHost::Ip(IpAddr::V4(a)),
        Some(url::Host::Ipv6(a)) => UrlHost::Ip(IpAddr::V6(a)),
        None => return Err(format!("`{v}` has no host")),
    };
    let text = normalize::url(v).ok_or_else(|| format!("`{v}` is not a URL"))?;
    Ok(Parsed::Url { text, host })
}

/// A URL written without its scheme (MISP/MISP#8789: `www.evil.top/x`, common in synced
/// data): true when it starts with an IP address or a name under a real public suffix, so
/// file names such as `igfxtray.exe` or `Data/dtl.dat` are not mistaken for hosts.
pub(crate) fn schemeless_host(v: &str) -> bool {
    let host = v.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    match name(host) {
        Ok(n) => psl::suffix(n.as_bytes()).is_some_and(|s| s.is_known()),
        Err(_) => false,
    }
}

fn email(v: &str) -> Result<String, String> {
    if v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("`{v}` contains whitespace"));
    }
    let (local, dom) = v
        .rsplit_once('@')
        .ok_or_else(|| format!("`{v}` has no @"))?;
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return Err(format!("`{v}` has an invalid local part"));
    }
    name(dom)?;
    normalize::email(v).ok_or_else(|| format!("`{v}` is not an email address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refang_real_forms() {
        assert_eq!(
            refang("hXXps[:]//honknft.com/connect"),
            "https://honknft.com/connect"
        );
        assert_eq!(refang("hxxp://103.167.92.57/x"), "http://103.167.92.57/x");
        assert_eq!(refang("evil[.]example(.)com"), "evil.example.com");
        assert_eq!(refang("bad[@]evil[.]com"), "bad@evil.com");
        assert_eq!(refang("fxp://x[.]com/a"), "ftp://x.com/a");
        assert!(matches!(refang("plain.example.com"), Cow::Borrowed(_)));
        assert!(!is_defanged("hxyz.com") && is_defanged("HXXP://a.com"));
        assert!(!is_defanged("hxxa.com") && !is_defanged("http://[2001:db8::1]/?a[]=1"));
    }

    #[test]
    fn names() {
        assert_eq!(name("Evil.Example.COM").unwrap(), "evil.example.com");
        assert_eq!(name("bücher.de").unwrap(), "xn--bcher-kva.de");
        assert!(name("evil .com").unwrap_err().contains("whitespace"));
        assert!(name("localhost").unwrap_err().contains("single-label"));
        assert!(name("a..b.com").is_err());
        assert!(name("1.2.3.4").unwrap_err().contains("IP address"));
        assert!(name("host.123").is_err());
        assert!(name(&format!("{}.com", "a".repeat(64))).is_err());
        assert_eq!(name("_dmarc.example.com").unwrap(), "_dmarc.example.com");
        assert!(name("xn--a.de").unwrap_err().contains("punycode"));
        assert_eq!(name("xn--bcher-kva.de").unwrap(), "xn--bcher-kva.de");
    }

    /// `Validator::for_each_warninglist_hit` tries the e-mail and hex shapes before the name
    /// check, on the ground that no such value is a valid name.
    #[test]
    fn no_email_or_hex_text_is_a_name() {
        for v in [
            "d41d8cd98f00b204e9800998ecf8427e",
            "DEADBEEF",
            "0",
            "a@b.com",
            "@example.com",
            "user@xn--bcher-kva.de",
            "bücher@bücher.de",
        ] {
            assert!(name(v).is_err(), "{v}");
        }
    }

    #[test]
    fn nets() {
        assert_eq!(
            parse_net("10.1.2.3/8", true).unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert!(had_host_bits("10.1.2.3/8") && !had_host_bits("10.0.0.0/8"));
        let err = |v, cidr| parse_net(v, cidr).unwrap_err();
        assert!(err("10.0.0.0/8", false).contains("single address is expected"));
        assert!(err("1.2.3.4/33", true).contains("out of range"));
        assert!(err("1.2.3.4/x", true).contains("bad prefix length"));
        assert!(err("1.2.3/8", true).contains("not an IP network"));
        assert!(err("not an ip", true).contains("not an IP address"));
        for v in [
            "10.1.2.3/8",
            "10.0.0.0/8",
            "1.2.3.4/33",
            "not an ip",
            "::1",
            "::1/200",
        ] {
            for cidr in [true, false] {
                assert_eq!(net(v, cidr), parse_net(v, cidr).ok(), "{v} {cidr}");
            }
        }
        assert_eq!(
            parse_net("2001:0db8::0001", false).unwrap().to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn hashes_urls_emails_ports() {
        let md5 = "d41d8cd98f00b204e9800998ecf8427e";
        assert!(parse(Part::Hash(32), md5).unwrap().is_some());
        assert!(parse(Part::Hash(32), &md5[1..]).is_err());
        assert!(parse(Part::Hash(32), &"g".repeat(32)).is_err());
        assert!(parse(Part::Port, "443").unwrap().is_none());
        assert!(parse(Part::Port, "70000").is_err());
        assert!(parse(Part::Port, "+80").is_err());
        match parse(Part::Url, "www.kcico.com.tw/data/openwebmail/doc/wthk.txt").unwrap() {
            Some(Parsed::Url { text, .. }) => {
                assert_eq!(
                    text,
                    "http://www.kcico.com.tw/data/openwebmail/doc/wthk.txt"
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(parse(Part::Url, "198.55.120.143:7386/B/ResN32.dll").is_ok());
        for bad in ["igfxtray.exe", "Data/dtl.dat", "107.183.86"] {
            assert!(parse(Part::Url, bad).is_err(), "{bad}");
        }
        assert!(parse(Part::Url, "mailto:a@b.com").is_err());
        match parse(Part::Url, "HTTP://Evil.Example.com:80/a#x").unwrap() {
            Some(Parsed::Url { text, host }) => {
                assert_eq!(text, "http://evil.example.com/a");
                assert_eq!(host, UrlHost::Name("evil.example.com".into()));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(Part::Email, "Bad@Evil.Example.com").unwrap(),
            Some(Parsed::Email("bad@evil.example.com".into()))
        );
        assert!(parse(Part::Email, "no-at-sign").is_err());
        assert!(parse(Part::Email, "a@localhost").is_err());
    }
}
