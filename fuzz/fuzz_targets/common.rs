//! Shared by the fuzz targets: a validator with a few real MISP warninglists (one of each list
//! type), loaded once per process.
#![allow(dead_code)] // each target uses part of it

use mispd::validate::{Protected, Settings, Validator};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Real lists from packaging/warninglists: cidr, string, hostname, substring and regex.
pub const LISTS: &[(&str, &[u8])] = &[
    (
        "rfc1918",
        include_bytes!("../../packaging/warninglists/lists/rfc1918/list.json"),
    ),
    (
        "ipv6-linklocal",
        include_bytes!("../../packaging/warninglists/lists/ipv6-linklocal/list.json"),
    ),
    (
        "rfc6761",
        include_bytes!("../../packaging/warninglists/lists/rfc6761/list.json"),
    ),
    (
        "empty-hashes",
        include_bytes!("../../packaging/warninglists/lists/empty-hashes/list.json"),
    ),
    (
        "dax30",
        include_bytes!("../../packaging/warninglists/lists/dax30/list.json"),
    ),
    (
        "automated-malware-analysis",
        include_bytes!("../../packaging/warninglists/lists/automated-malware-analysis/list.json"),
    ),
    (
        "common-contact-emails",
        include_bytes!("../../packaging/warninglists/lists/common-contact-emails/list.json"),
    ),
];

/// Types that reach the validator from MISP, indexed or not.
pub const TYPES: &[&str] = &[
    "ip-dst",
    "ip-src",
    "ip-dst|port",
    "ip-src|port",
    "domain",
    "hostname",
    "domain|ip",
    "hostname|port",
    "url",
    "uri",
    "link",
    "email",
    "email-src",
    "email-dst",
    "md5",
    "sha1",
    "sha256",
    "sha512",
    "filename|md5",
    "filename|sha256",
    "ssdeep",
    "AS",
    "text",
    "comment",
    "x509-fingerprint-sha1",
    "ja3-fingerprint-md5",
];

pub fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("mispd-fuzz-lists-{}", std::process::id()));
        for (name, bytes) in LISTS {
            let d = dir.join("lists").join(name);
            std::fs::create_dir_all(&d).expect("temp dir for warninglists");
            std::fs::write(d.join("list.json"), bytes).expect("write warninglist");
        }
        let settings = Settings {
            warninglists: vec![PathBuf::from(&dir)],
            allowlist: None,
            ..Settings::default()
        };
        let (v, warnings) = Validator::load(&settings, Protected::default());
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(v.stats().warninglists, LISTS.len());
        let _ = std::fs::remove_dir_all(&dir);
        v
    })
}
