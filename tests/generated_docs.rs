//! The man pages and completions in packaging/ are generated (examples/gen-docs.rs) from the clap
//! definitions and docs/configuration.md. This fails when they are out of date.

#[path = "../examples/gen-docs.rs"]
mod gen_docs;

use std::path::Path;

#[test]
fn checked_in_man_pages_and_completions_match_the_sources() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stale = Vec::new();
    for (rel, content) in gen_docs::generate(repo) {
        let path = repo.join("packaging").join(&rel);
        if std::fs::read(&path).ok().as_deref() != Some(&content[..]) {
            stale.push(rel);
        }
    }
    assert!(
        stale.is_empty(),
        "out of date (run `cargo run --example gen-docs`): {stale:?}"
    );
}

#[test]
fn config_man_page_has_every_source_key() {
    let md = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md"),
    )
    .unwrap();
    let man = gen_docs::markdown_to_man(&md, "MISPD.TOML", "5");
    for key in [
        "full\\-resync",
        "api\\-key",
        "pins",
        "state\\-dir",
        "to\\-ids\\-only",
    ] {
        assert!(
            man.contains(&format!("\\fB{key}\\fR")),
            "{key} missing from mispd.toml(5)"
        );
    }
    assert!(man.starts_with(".TH MISPD.TOML 5"));
}
