//! The real consumers' own parsers, run on mispd's output: `nft -c -f` for the nftables set
//! file, `named-checkzone` for the RPZ zone, `promtool check metrics` for `/metrics` (Debian's
//! `nftables`, `bind9-utils` and `prometheus`).
//!
//! On a developer machine a missing tool skips its check with a line on stderr. With
//! `MISPD_TEST_REQUIRE_TOOLS=1` (what `.ci/run` sets, after installing them) a missing tool, or
//! an `nft` that cannot reach netlink, fails the test instead: CI never passes on a check that
//! did not run.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

fn required() -> bool {
    std::env::var_os("MISPD_TEST_REQUIRE_TOOLS").is_some_and(|v| v != "0")
}

/// Runs `tool args...`; `None` when it is not installed here (and that is allowed).
fn run(tool: &str, args: &[&str]) -> Option<std::process::Output> {
    match Command::new(tool).args(args).output() {
        Ok(o) => Some(o),
        Err(e) if !required() => {
            eprintln!("{tool} is not installed ({e}): its check of the export is skipped");
            None
        }
        Err(e) => panic!("{tool} cannot run ({e}) and MISPD_TEST_REQUIRE_TOOLS is set"),
    }
}

/// `nft -c -f file`: parses and checks the file against the kernel without applying it.
pub fn nft_accepts(file: &Path) {
    let Some(o) = run("nft", &["-c", "-f", file.to_str().unwrap()]) else {
        return;
    };
    let err = String::from_utf8_lossy(&o.stderr);
    // `nft -c` still needs netlink; without CAP_NET_ADMIN only a parse error can be judged.
    let no_netlink =
        err.contains("Operation not permitted") || err.contains("cache initialization failed");
    if no_netlink && !o.status.success() && !required() {
        eprintln!("nft -c could not reach netlink here: {err}");
        return;
    }
    let text = std::fs::read_to_string(file).unwrap_or_default();
    assert!(
        o.status.success(),
        "nft rejected the export: {err}\n{}",
        &text[..text.len().min(2000)]
    );
}

/// `named-checkzone ORIGIN file`: BIND's own zone loader.
pub fn named_accepts(origin: &str, file: &Path) {
    let Some(o) = run("named-checkzone", &[origin, file.to_str().unwrap()]) else {
        return;
    };
    assert!(
        o.status.success(),
        "named-checkzone: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `promtool check metrics < file`: Prometheus's own parser and linter for the text format
/// (Debian's `prometheus`).
pub fn promtool_accepts(file: &Path) {
    let Ok(input) = std::fs::File::open(file) else {
        panic!("cannot open {}", file.display());
    };
    let o = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(input)
        .output()
    {
        Ok(o) => o,
        Err(e) if !required() => {
            eprintln!("promtool is not installed ({e}): its check of /metrics is skipped");
            return;
        }
        Err(e) => panic!("promtool cannot run ({e}) and MISPD_TEST_REQUIRE_TOOLS is set"),
    };
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
