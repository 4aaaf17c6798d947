//! Validation against real data: the shipped MISP warninglists, the Infoblox feed sample and a
//! PyMISP test event, plus poison values that must never be published.

#[path = "validation_support/mod.rs"]
mod common;

use common::{attr, event_attributes, root, warninglists_dir};
use mispd::model::Kind;
use mispd::validate::{Judged, Protected, Settings, Validator};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

fn settings() -> Settings {
    Settings {
        warninglists: vec![warninglists_dir()],
        allowlist: None,
        ..Settings::default()
    }
}

/// Protected: MISP host misp.example.org at 93.184.215.14 (not on any list).
fn protected() -> Protected {
    Protected::from_parts(
        vec!["93.184.215.14".parse::<IpAddr>().unwrap()],
        vec!["misp.example.org".into()],
    )
}

fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| {
        let (v, warnings) = Validator::load(&settings(), protected());
        assert!(warnings.is_empty(), "{warnings:?}");
        v
    })
}

fn judge(v: &Validator, t: &str, value: &str) -> Judged {
    v.judge(&Arc::from("test"), &attr(t, value), 1_700_000_000)
}

/// The single rejection's code and detail.
fn rejected(v: &Validator, t: &str, value: &str) -> (String, String) {
    let j = judge(v, t, value);
    assert!(
        j.accepted.is_empty(),
        "{t} {value} accepted: {:?}",
        j.accepted
    );
    assert_eq!(j.rejected.len(), 1, "{t} {value}: {:?}", j.rejected);
    let r = &j.rejected[0].reason;
    (r.code.to_string(), r.detail.to_string())
}

#[test]
fn all_shipped_lists_load() {
    let s = validator().stats();
    assert_eq!(s.warninglists, 136);
    assert!(s.warninglist_entries > 500_000, "{s:?}");
    for t in ["cidr", "hostname", "string", "substring", "regex"] {
        assert!(s.entries_by_type[t] > 0, "{t}");
    }
    assert!(s.informing_lists >= 5 && s.blocking_lists > 100, "{s:?}");
}

#[test]
fn benign_infrastructure_is_rejected_by_name() {
    let v = validator();
    let aws_entry = {
        let j: serde_json::Value = serde_json::from_slice(
            &std::fs::read(warninglists_dir().join("lists/amazon-aws/list.json")).unwrap(),
        )
        .unwrap();
        let first = j["list"][0].as_str().unwrap().to_string(); // e.g. 1.178.1.0/24
        let net: ipnet::Ipv4Net = first.parse().unwrap();
        let a = u32::from(net.network()) + 7;
        std::net::Ipv4Addr::from(a).to_string()
    };
    for (t, value, list) in [
        ("ip-dst", "8.8.8.8", "public-dns-v4"),
        ("ip-src", "1.1.1.1", "public-dns-v4"),
        ("domain", "google.com", ""),
        ("hostname", "www.microsoft.com", ""),
        ("ip-dst", aws_entry.as_str(), "amazon-aws"),
        ("domain", "wikipedia.org", ""),
        ("url", "https://www.google.com/search?q=x", ""),
        (
            "domain|ip",
            "evil-example-domain.xyz|8.8.4.4",
            "public-dns-v4",
        ),
    ] {
        let (code, detail) = if t == "domain|ip" {
            let j = judge(v, t, value);
            assert_eq!(j.accepted.len(), 1, "the domain half stays: {j:?}");
            let r = &j.rejected[0].reason;
            (r.code.to_string(), r.detail.to_string())
        } else {
            rejected(v, t, value)
        };
        assert_eq!(code, "warninglist", "{value}: {detail}");
        assert!(detail.contains(" is on warninglist "), "{detail}");
        // the hit list names the expected list (the detail names the first blocking one)
        let hits = v.warninglist_hits(value.rsplit('|').next().unwrap());
        assert!(!hits.is_empty(), "{value}");
        if !list.is_empty() {
            assert!(hits.iter().any(|h| h.list == list), "{value}: {hits:?}");
        }
        assert!(hits.iter().any(|h| detail.contains(&h.list)), "{detail}");
    }
    let hits = v.warninglist_hits("8.8.8.8");
    let dns = hits.iter().find(|h| h.list == "public-dns-v4").unwrap();
    assert_eq!(dns.category.as_str(), "false-positive");
    assert!(dns.name.to_lowercase().contains("dns"), "{dns:?}");
}

#[test]
fn poison_values_get_the_right_reason() {
    let v = validator();
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, "search lan\nnameserver 45.90.28.9\n").unwrap();
    let (with_resolver, w) = Validator::load(&settings(), Protected::discover(&[], &resolv));
    assert!(w.is_empty(), "{w:?}");
    let (code, detail) = rejected(&with_resolver, "ip-dst", "45.90.28.9");
    assert_eq!(code, "protected");
    assert!(
        detail.contains("DNS resolver") && detail.contains("resolv.conf"),
        "{detail}"
    );

    for (t, value, code) in [
        ("ip-dst", "0.0.0.0/0", "too-broad"),
        ("ip-src", "::/0", "too-broad"),
        ("ip-dst", "10.0.0.0/8", "too-broad"),
        ("ip-dst", "10.1.2.0/24", "bogon"),
        ("ip-dst", "127.0.0.1", "bogon"),
        ("ip-dst", "192.168.1.10", "bogon"),
        ("ip-dst", "203.0.113.7", "bogon"),
        ("ip-dst", "::1", "bogon"),
        ("ip-dst", "fe80::1", "bogon"),
        ("ip-dst", "::ffff:10.0.0.1", "bogon"),
        ("ip-dst", "224.0.0.251", "bogon"),
        ("ip-dst|port", "169.254.169.254|80", "bogon"),
        ("ip-dst", "93.184.215.14", "protected"),
        ("ip-dst", "93.184.0.0/16", "protected"),
        ("domain", "example.org", "protected"),
        ("hostname", "misp.example.org", "protected"),
        ("url", "https://misp.example.org/events/view/1", "protected"),
        ("domain", "co.uk", "public-suffix"),
        ("domain", "com", "syntax"),
        ("domain", "github.io", "public-suffix"),
        ("domain", "printer.local", "bogon"),
        ("ip-dst", "not an ip", "syntax"),
        ("md5", "d41d8cd98f00b204e9800998ecf8427", "syntax"),
        ("domain", "evil .com", "syntax"),
        ("domain", "localhost", "syntax"),
        ("ip-dst|port", "45.1.2.3|99999", "syntax"),
        ("domain|ip", "no-separator.example.net", "syntax"),
        ("url", "Data/dtl.dat", "syntax"),
        ("email-src", "not-an-email", "syntax"),
        (
            "sha256",
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "warninglist",
        ),
    ] {
        let (c, detail) = rejected(v, t, value);
        assert_eq!(c, code, "{t} {value}: {detail}");
    }
    // the hostname is exact: example.org as a *hostname* does not cover misp.example.org
    assert_eq!(
        judge(v, "hostname", "example-hostname.org").accepted.len(),
        1
    );
}

#[test]
fn real_malicious_indicators_pass() {
    let v = validator();
    let src: Arc<str> = Arc::from("infoblox");
    let attrs = event_attributes(&root().join("tests/fixtures/infoblox-sample.json"));
    assert!(attrs.len() > 2000);
    let (mut accepted, mut rejected, mut refanged) = (0, 0, 0);
    for a in &attrs {
        let j = v.judge(&src, a, 0);
        assert!(!j.skipped, "{a:?}");
        accepted += j.accepted.len();
        rejected += j.rejected.len();
        for i in &j.accepted {
            assert_eq!(*i.value, *i.value.trim(), "trimmed");
            assert!(
                !i.value.contains("[.]") && !i.value.starts_with("hxxp"),
                "{i:?}"
            );
            if i.notes.iter().any(|n| &**n == "refanged") {
                refanged += 1;
                assert_eq!(i.kind, Kind::Url, "{i:?}");
            }
            assert_eq!(&*i.provenance.source, "infoblox");
            assert_eq!(i.provenance.event_uuid.as_deref(), a.event_uuid.as_deref());
        }
    }
    assert_eq!(refanged, 163, "every defanged Infoblox value is refanged");
    assert!(
        accepted as f64 > 0.97 * attrs.len() as f64,
        "{accepted} {rejected}"
    );
    // specific real indicators
    let j = judge(
        v,
        "url",
        "hXXps[:]//honknft.com/connect/rh7_1a7r72zi-kk4k4z?b=1",
    );
    assert_eq!(
        &*j.accepted[0].value,
        "https://honknft.com/connect/rh7_1a7r72zi-kk4k4z?b=1"
    );
    let j = judge(v, "url", "balticpipe.playroom8.site ");
    assert_eq!(&*j.accepted[0].value, "http://balticpipe.playroom8.site/");
    assert!(j.accepted[0].notes.iter().any(|n| &**n == "scheme-added"));
    let j = judge(v, "domain", "ipv4.mikifox.com ");
    assert_eq!(&*j.accepted[0].value, "ipv4.mikifox.com");
    assert_eq!(j.accepted[0].kind, Kind::Domain);

    // PyMISP's long event: hashes (and their filename| composites) are indexed, links skipped
    let attrs =
        event_attributes(&root().join("tests/fixtures/PyMISP_reportlab_testfiles_long_event.json"));
    let mut hashes = 0;
    let mut skipped = 0;
    let mut bad = 0;
    for a in &attrs {
        let j = v.judge(&src, a, 0);
        skipped += j.skipped as usize;
        for r in &j.rejected {
            // only malformed values (e.g. url `107.183.86`) are held back here
            assert_eq!(
                &*r.reason.code, "syntax",
                "{} {}: {:?}",
                a.misp_type, a.value, r.reason
            );
            bad += 1;
        }
        hashes += j.accepted.iter().filter(|i| i.kind == Kind::Hash).count();
    }
    assert!(hashes >= 200, "{hashes}");
    assert!(bad <= 5, "{bad} malformed");
    assert!(
        skipped >= 80,
        "links, filenames, vulnerabilities are skipped: {skipped}"
    );
}

#[test]
fn composites_idn_and_kinds() {
    let v = validator();
    let md5 = "0123456789abcdef0123456789ABCDEF";
    let j = judge(v, "filename|md5", &format!("evil.exe|{md5}"));
    assert_eq!(j.accepted.len(), 1);
    assert_eq!(&*j.accepted[0].value, md5.to_lowercase());
    assert_eq!(&*j.accepted[0].provenance.misp_type, "filename|md5");
    let j = judge(v, "malware-sample", &format!("evil.exe|{md5}"));
    assert_eq!(j.accepted[0].kind, Kind::Hash);
    let j = judge(v, "domain|ip", "evil-example-domain.xyz|45.1.2.3");
    let kinds: Vec<Kind> = j.accepted.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, vec![Kind::Domain, Kind::Ip]);
    let j = judge(v, "ip-dst|port", "45.1.2.3|8080");
    assert_eq!(
        (&*j.accepted[0].value, j.accepted[0].kind),
        ("45.1.2.3", Kind::Ip)
    );
    let j = judge(v, "hostname|port", "C2.Evil-Example.xyz|443");
    assert_eq!(
        (&*j.accepted[0].value, j.accepted[0].kind),
        ("c2.evil-example.xyz", Kind::Hostname)
    );
    let j = judge(v, "ip-dst", "45.1.2.3/24");
    assert_eq!(
        (&*j.accepted[0].value, j.accepted[0].kind),
        ("45.1.2.0/24", Kind::Cidr)
    );
    assert!(j.accepted[0].notes[0].starts_with("host bits cleared"));
    let j = judge(v, "ip-dst", "2a0e:0000:0000::0001");
    assert_eq!(&*j.accepted[0].value, "2a0e::1");
    // IDN: Unicode accepted, punycode stored; the punycode form is the same indicator
    let j = judge(v, "domain", "bücher-evil-example.de");
    assert!(
        j.accepted[0].value.starts_with("xn--bcher-evil-example-"),
        "{j:?}"
    );
    let j2 = judge(v, "domain", &j.accepted[0].value);
    assert_eq!(j.accepted[0].value, j2.accepted[0].value);
    assert_eq!(rejected(v, "domain", "xn--a.de").0, "syntax");
    let j = judge(v, "email-src", "Phish@Evil-Example.xyz");
    assert_eq!(
        (&*j.accepted[0].value, j.accepted[0].kind),
        ("phish@evil-example.xyz", Kind::Email)
    );
    let j = judge(v, "mutex", "Global\\EvilMutex");
    assert_eq!(j.accepted[0].kind, Kind::Other);
    // skipped, not quarantined
    for t in [
        "comment",
        "text",
        "link",
        "email-attachment",
        "uri",
        "ssdeep",
        "AS",
        "ip",
    ] {
        let j = judge(v, t, "whatever");
        assert!(
            j.skipped && j.rejected.is_empty() && j.accepted.is_empty(),
            "{t}"
        );
    }
    let mut deleted = attr("ip-dst", "45.1.2.3");
    deleted.deleted = true;
    assert!(v.judge(&Arc::from("t"), &deleted, 0).skipped);
}

#[test]
fn known_service_lists_inform() {
    let v = validator();
    // a phishing name under a dynamic DNS provider is published, with a note
    let j = judge(v, "domain", "paypal-login.duckdns.org");
    assert_eq!(j.accepted.len(), 1, "{j:?}");
    assert!(j.accepted[0]
        .notes
        .iter()
        .any(|n| &**n == "warninglist:dynamic-dns"));
    // the provider itself never is (public suffix here; the rule also covers non-PSL entries)
    assert_eq!(rejected(v, "domain", "duckdns.org").0, "public-suffix");
    let hits = v.warninglist_hits("paypal-login.duckdns.org");
    let h = hits.iter().find(|h| h.list == "dynamic-dns").unwrap();
    assert_eq!(
        (h.category.as_str(), h.action),
        ("known", mispd::validate::Action::Inform)
    );
}

#[test]
fn defanged_values_are_quarantined_when_refang_is_off() {
    let s = Settings {
        refang: false,
        ..settings()
    };
    let (v, _) = Validator::load(&s, Protected::default());
    let (code, _) = rejected(&v, "url", "hxxp://103.167.92.57/xx_cloudprotect/vbc.exe");
    assert_eq!(code, "defanged");
    assert_eq!(rejected(&v, "domain", "evil-example[.]xyz").0, "defanged");
    assert_eq!(judge(&v, "domain", "evil-example.xyz").accepted.len(), 1);
}

#[test]
fn allowlist_always_wins() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("allowlist.txt");
    std::fs::write(
        &path,
        "# partners\n45.1.2.3\n*.partner-example.xyz\nbank-example.net\n0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let s = Settings {
        allowlist: Some(path),
        ..settings()
    };
    let (v, w) = Validator::load(&s, Protected::default());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(v.stats().allowlist_entries, 4);
    for (t, value) in [
        ("ip-dst", "45.1.2.3"),
        ("ip-dst", "45.1.0.0/16"),
        ("domain", "partner-example.xyz"),
        ("hostname", "a.b.partner-example.xyz"),
        ("domain", "bank-example.net"),
        ("url", "https://login.partner-example.xyz/x"),
        ("md5", "0123456789ABCDEF0123456789ABCDEF"),
        ("email-src", "ceo@partner-example.xyz"),
    ] {
        assert_eq!(rejected(&v, t, value).0, "allowlist", "{t} {value}");
    }
    assert_eq!(
        judge(&v, "hostname", "www.bank-example.net").accepted.len(),
        1
    );
    // a missing allowlist is fine
    let s = Settings {
        allowlist: Some(PathBuf::from("/nonexistent/allowlist.txt")),
        ..settings()
    };
    let (_, w) = Validator::load(&s, Protected::default());
    assert_eq!(w.len(), 1);
}

#[test]
fn settings_parse_and_check() {
    let s: Settings = toml::from_str(
        "min-prefix-v4 = 20\nrefang = false\nallow-bogons = [\"10.9.0.0/16\"]\n[warninglist-actions]\nvpn-ipv4 = \"block\"\n",
    )
    .unwrap();
    assert_eq!(s.min_prefix_v4, 20);
    assert!(s.check().is_ok());
    assert!(
        toml::from_str::<Settings>("min-prefix = 3").is_err(),
        "unknown keys are errors"
    );
    let bad: Settings = toml::from_str("min-prefix-v4 = 40").unwrap();
    assert!(bad.check().unwrap_err().contains("min-prefix-v4"));
    let bad: Settings = toml::from_str("allow-bogons = [\"lan\"]").unwrap();
    assert!(bad.check().unwrap_err().contains("allow-bogons"));
    let bad: Settings = toml::from_str("max-removed-percent = 0").unwrap();
    assert!(bad.check().unwrap_err().contains("max-removed-percent"));
    assert!(Settings::default().check().is_ok());
    // allow a lab range: allow-bogons lifts the bogon check; the rfc1918 warninglist is a
    // separate check (rfc1918, rfc5735) and has to be disabled (or set to inform) as well
    let s = Settings {
        warninglists: vec![warninglists_dir()],
        allowlist: None,
        disabled_warninglists: vec!["rfc1918".into(), "rfc5735".into()],
        ..s
    };
    let (v, w) = Validator::load(&s, Protected::default());
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(judge(&v, "ip-dst", "10.9.8.7").accepted.len(), 1);
    assert_eq!(rejected(&v, "ip-dst", "10.8.8.7").0, "bogon");
}
