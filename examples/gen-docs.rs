//! Generates the man pages and shell completions shipped in the packages, from one source each:
//! the clap definitions for `mispd(8)` and `mispctl(8)` (so they match `--help`), and
//! `docs/configuration.md` for `mispd.toml(5)`.
//!
//!     cargo run --example gen-docs            # rewrite packaging/man and packaging/completions
//!
//! `tests/generated_docs.rs` regenerates into a temporary directory and fails if the checked-in
//! files differ, so CI catches a CLI or config change without regenerated pages.
#![allow(dead_code)]

use clap::CommandFactory;
use std::path::Path;

/// Every generated file: (path relative to the output root, content).
pub fn generate(repo: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, cmd) in [
        ("mispd", mispd::daemon::Args::command()),
        ("mispctl", mispd::ctl::Cli::command()),
    ] {
        let mut buf = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .section("8")
            .render(&mut buf)
            .expect("render man page");
        out.push((format!("man/{name}.8"), buf));
    }
    let mut cmd = mispd::ctl::Cli::command();
    for (shell, file) in [
        (clap_complete::Shell::Bash, "mispctl.bash"),
        (clap_complete::Shell::Zsh, "_mispctl"),
        (clap_complete::Shell::Fish, "mispctl.fish"),
    ] {
        let mut buf = Vec::new();
        clap_complete::generate(shell, &mut cmd, "mispctl", &mut buf);
        out.push((format!("completions/{file}"), buf));
    }
    let md =
        std::fs::read_to_string(repo.join("docs/configuration.md")).expect("docs/configuration.md");
    out.push((
        "man/mispd.toml.5".into(),
        markdown_to_man(&md, "MISPD.TOML", "5").into_bytes(),
    ));
    out
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (rel, content) in generate(repo) {
        let path = repo.join("packaging").join(&rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        println!("wrote {}", path.display());
    }
}

/// A small Markdown-to-roff converter for our own configuration reference: headings, tables of
/// keys, bullet lists, code blocks, inline code and links. Not a general Markdown renderer.
pub fn markdown_to_man(md: &str, title: &str, section: &str) -> String {
    let mut out = format!(
        ".TH {title} {section} \"\" \"mispd {}\" \"mispd manual\"\n",
        env!("CARGO_PKG_VERSION")
    );
    let mut in_code = false;
    let mut first_heading = true;
    for line in md.lines() {
        if line.starts_with("```") {
            out.push_str(if in_code {
                ".fi\n.RE\n"
            } else {
                ".RS 2\n.nf\n"
            });
            in_code = !in_code;
            continue;
        }
        if in_code {
            out.push_str(&escape(line));
            out.push('\n');
            continue;
        }
        if let Some(h) = line.strip_prefix("# ") {
            if first_heading {
                first_heading = false;
                out.push_str(".SH NAME\nmispd.toml \\- configuration file of the mispd daemon\n");
            } else {
                out.push_str(&format!(".SH {}\n", inline(h).to_uppercase()));
            }
        } else if let Some(h) = line.strip_prefix("## ") {
            out.push_str(&format!(".SH {}\n", inline(h).to_uppercase()));
        } else if let Some(h) = line.strip_prefix("### ") {
            out.push_str(&format!(".SS {}\n", inline(h)));
        } else if line.starts_with('|') {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let header = cells.first().is_some_and(|c| *c == "key");
            let rule = cells
                .iter()
                .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'));
            if header || rule || cells.len() < 3 {
                continue;
            }
            out.push_str(&format!(
                ".TP\n{} (default: {})\n{}\n",
                inline(cells[0]),
                inline(cells[1]),
                inline(cells[2])
            ));
        } else if let Some(item) = line.strip_prefix("- ") {
            out.push_str(&format!(".IP \\(bu 2\n{}\n", inline(item)));
        } else if line.starts_with("  ") && !line.trim().is_empty() {
            out.push_str(&inline(line.trim()));
            out.push('\n');
        } else if line.trim().is_empty() {
            out.push_str(".PP\n");
        } else {
            out.push_str(&inline(line));
            out.push('\n');
        }
    }
    out
}

fn escape(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

/// Inline Markdown: `code` in bold, [text](link) as text, **strong** in bold.
fn inline(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(end) = rest[1..].find('`') {
                out.push_str(&format!("\\fB{}\\fR", escape(&rest[1..1 + end])));
                rest = &rest[end + 2..];
                continue;
            }
        }
        if c == '[' {
            if let (Some(mid), Some(end)) = (rest.find("]("), rest.find(')')) {
                if mid < end {
                    out.push_str(&escape(&rest[1..mid]));
                    rest = &rest[end + 1..];
                    continue;
                }
            }
        }
        if let Some(r) = rest.strip_prefix("**") {
            if let Some(end) = r.find("**") {
                out.push_str(&format!("\\fB{}\\fR", escape(&r[..end])));
                rest = &r[end + 2..];
                continue;
            }
        }
        out.push_str(&escape(&c.to_string()));
        rest = &rest[c.len_utf8()..];
    }
    let trimmed = out.trim_start();
    if trimmed.starts_with('.') || trimmed.starts_with('\'') {
        format!("\\&{trimmed}")
    } else {
        out
    }
}
