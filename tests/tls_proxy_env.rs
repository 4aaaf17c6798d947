//! mispd does not use HTTP proxies: a proxy variable in its environment is refused with a
//! clear message instead of being silently ignored. (Own test binary: it changes the
//! process environment.)

use mispd::credentials::ApiKey;
use mispd::misp::{shared_key, ClientError, MispClient};
use mispd::tls::{Pin, TlsSettings};
use std::time::Duration;

#[test]
fn proxy_variables_are_refused_unless_the_host_is_exempt() {
    let tls = TlsSettings {
        pins: vec![Pin::of_spki(b"x")],
        ca_file: None,
    };
    let key = shared_key(ApiKey::from_secret("a".repeat(40).into()));
    let make = |url: &str| MispClient::new(url, &tls, Duration::from_secs(1), key.clone(), 1 << 20);
    for v in [
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        std::env::remove_var(v);
    }
    assert!(make("https://misp.example.org/").is_ok());
    std::env::set_var("https_proxy", "http://proxy.example:3128");
    let err = make("https://misp.example.org/").unwrap_err();
    assert!(
        matches!(&err, ClientError::ProxyUnsupported { var } if var == "https_proxy"),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("does not use HTTP proxies"),
        "{err}"
    );
    std::env::set_var("no_proxy", "localhost,.example.org");
    assert!(make("https://misp.example.org/").is_ok());
    assert!(make("https://other.example.net/").is_err());
    std::env::remove_var("https_proxy");
    std::env::remove_var("no_proxy");
}
