//! Which MISP attribute types mispd indexes, and how each part of a value is read.
//!
//! | MISP type | indexed as |
//! |---|---|
//! | `ip-src`, `ip-dst` | [`Kind::Ip`], or [`Kind::Cidr`] when the value has a prefix |
//! | `ip-src\|port`, `ip-dst\|port` | the address as [`Kind::Ip`]; the port is checked (0-65535), not indexed |
//! | `domain` | [`Kind::Domain`] (matches subdomains) |
//! | `hostname` | [`Kind::Hostname`] (exact) |
//! | `hostname\|port` | the name as [`Kind::Hostname`]; the port is checked, not indexed |
//! | `domain\|ip` | two indicators: [`Kind::Domain`] and [`Kind::Ip`] |
//! | `url` | [`Kind::Url`] (absolute URL with a host; normalised) |
//! | `email`, `email-src`, `email-dst`, `email-reply-to`, `whois-registrant-email`, `dns-soa-email` | [`Kind::Email`] |
//! | `md5`, `sha1`, `sha224`, `sha256`, `sha384`, `sha512`, `sha512/224`, `sha512/256`, `sha3-224`, `sha3-256`, `sha3-384`, `sha3-512`, `imphash`, `authentihash`, `pehash`, `cdhash`, `ja3-fingerprint-md5`, `jarm-fingerprint`, `hassh-md5`, `hasshserver-md5`, `x509-fingerprint-md5`, `x509-fingerprint-sha1`, `x509-fingerprint-sha256` | [`Kind::Hash`], exact hex length per type |
//! | `filename\|<hash>` for each exact hash above, `malware-sample` (`filename\|md5`) | the hash half as [`Kind::Hash`]; the file name is not indexed |
//! | `mutex` | [`Kind::Other`], exact string |
//!
//! Everything else is skipped, not quarantined: `comment`, `text`, `link` (references to reports),
//! `uri` (a path without a host), `email-attachment` (file names), `target-*` (the victims, not
//! the attacker), `filename` (too generic to block), `AS` (a whole network operator is never a
//! safe block), fuzzy hashes (`ssdeep`, `tlsh`, `vhash`, `impfuzzy`, `telfhash`: not matched
//! by equality), and every other type.

/// How one part of a value is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// An address, or a network when `cidr` is true.
    Ip {
        cidr: bool,
    },
    /// A TCP/UDP port, checked and dropped.
    Port,
    Domain,
    Hostname,
    Url,
    Email,
    /// A hex digest of exactly this many characters.
    Hash(u8),
    /// A string matched exactly (mutex names).
    Text,
    /// Checked to be non-empty, then dropped (the file name of `filename|sha256`).
    Ignored,
}

/// The shape of a whole value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    Single(Part),
    /// `a|b`, split on the first `|`.
    Pair(Part, Part),
}

/// Hex length of each exact-hash type.
fn hash_len(t: &str) -> Option<u8> {
    Some(match t {
        "md5"
        | "imphash"
        | "ja3-fingerprint-md5"
        | "hassh-md5"
        | "hasshserver-md5"
        | "x509-fingerprint-md5" => 32,
        "sha1" | "pehash" | "cdhash" | "x509-fingerprint-sha1" => 40,
        "sha224" | "sha512/224" | "sha3-224" => 56,
        "sha256" | "sha512/256" | "sha3-256" | "authentihash" | "x509-fingerprint-sha256" => 64,
        "jarm-fingerprint" => 62,
        "sha384" | "sha3-384" => 96,
        "sha512" | "sha3-512" => 128,
        _ => return None,
    })
}

/// The shape of a MISP type, or `None` when mispd does not index it.
pub(crate) fn shape(misp_type: &str) -> Option<Shape> {
    use Part::*;
    let s = match misp_type {
        "ip-src" | "ip-dst" => Shape::Single(Ip { cidr: true }),
        "ip-src|port" | "ip-dst|port" => Shape::Pair(Ip { cidr: false }, Port),
        "domain" => Shape::Single(Domain),
        "hostname" => Shape::Single(Hostname),
        "hostname|port" => Shape::Pair(Hostname, Port),
        "domain|ip" => Shape::Pair(Domain, Ip { cidr: false }),
        "url" => Shape::Single(Url),
        "email"
        | "email-src"
        | "email-dst"
        | "email-reply-to"
        | "whois-registrant-email"
        | "dns-soa-email" => Shape::Single(Email),
        "mutex" => Shape::Single(Text),
        "malware-sample" => Shape::Pair(Ignored, Hash(32)),
        t => {
            if let Some(n) = hash_len(t) {
                Shape::Single(Hash(n))
            } else if let Some(h) = t.strip_prefix("filename|") {
                Shape::Pair(Ignored, Hash(hash_len(h)?))
            } else {
                return None;
            }
        }
    };
    Some(s)
}

/// Every type [`shape`] accepts (for precomputing per-type tables).
pub(crate) const INDEXED_TYPES: &[&str] = &[
    "ip-src",
    "ip-dst",
    "ip-src|port",
    "ip-dst|port",
    "domain",
    "hostname",
    "hostname|port",
    "domain|ip",
    "url",
    "email",
    "email-src",
    "email-dst",
    "email-reply-to",
    "whois-registrant-email",
    "dns-soa-email",
    "mutex",
    "malware-sample",
    "md5",
    "sha1",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "sha512/224",
    "sha512/256",
    "sha3-224",
    "sha3-256",
    "sha3-384",
    "sha3-512",
    "imphash",
    "authentihash",
    "pehash",
    "cdhash",
    "ja3-fingerprint-md5",
    "jarm-fingerprint",
    "hassh-md5",
    "hasshserver-md5",
    "x509-fingerprint-md5",
    "x509-fingerprint-sha1",
    "x509-fingerprint-sha256",
    "filename|md5",
    "filename|sha1",
    "filename|sha224",
    "filename|sha256",
    "filename|sha384",
    "filename|sha512",
    "filename|sha512/224",
    "filename|sha512/256",
    "filename|sha3-224",
    "filename|sha3-256",
    "filename|sha3-384",
    "filename|sha3-512",
    "filename|imphash",
    "filename|authentihash",
    "filename|pehash",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for t in INDEXED_TYPES {
            assert!(shape(t).is_some(), "{t} listed but not indexed");
        }
        for t in [
            "comment",
            "text",
            "link",
            "uri",
            "email-attachment",
            "ssdeep",
            "AS",
        ] {
            assert!(shape(t).is_none(), "{t} must be skipped");
        }
        assert_eq!(
            shape("filename|sha256"),
            Some(Shape::Pair(Part::Ignored, Part::Hash(64)))
        );
        assert_eq!(shape("filename|ssdeep"), None);
    }

    #[test]
    fn every_indexed_type_exists_in_misp() {
        let text = include_str!("../../tests/fixtures/describeTypes.json");
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        let types = json["result"]["types"].as_array().unwrap();
        for t in INDEXED_TYPES {
            assert!(
                types.iter().any(|x| x.as_str() == Some(t)),
                "{t} is not a MISP type"
            );
        }
    }
}
