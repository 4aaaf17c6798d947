//! The operator's local allowlist: values that are never published, whatever a source says.
//!
//! One entry per line; `#` starts a comment. An entry is an IP address or CIDR network (an
//! indicator overlapping it either way is held back), `*.example.com` (that domain and every
//! name under it), a plain name (that name; a domain indicator covering it is held back too),
//! or any other value (URL, email, hash...) compared in canonical form.

use super::fxhash::FxHashSet as HashSet;
use super::syntax;
use ipnet::IpNet;
use std::path::Path;

#[derive(Debug, Default)]
pub(crate) struct Allowlist {
    nets: Vec<IpNet>,
    names: HashSet<String>,
    wildcards: HashSet<String>,
    values: HashSet<String>,
}

impl Allowlist {
    /// Load from a file; a missing file is an empty allowlist (with a note in `warnings`).
    pub(crate) fn load(path: &Path, warnings: &mut Vec<String>) -> Allowlist {
        match std::fs::read_to_string(path) {
            Ok(text) => Allowlist::parse(&text, &path.display().to_string(), warnings),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                warnings.push(format!(
                    "allowlist {} does not exist: no local allowlist (info)",
                    path.display()
                ));
                Allowlist::default()
            }
            Err(e) => {
                warnings.push(format!(
                    "allowlist {} cannot be read ({e}): no local allowlist; fix its permissions",
                    path.display()
                ));
                Allowlist::default()
            }
        }
    }

    pub(crate) fn parse(text: &str, origin: &str, warnings: &mut Vec<String>) -> Allowlist {
        let mut a = Allowlist::default();
        for (no, line) in text.lines().enumerate() {
            let e = line.split('#').next().unwrap_or("").trim();
            if e.is_empty() {
                continue;
            }
            if let Ok(n) = syntax::parse_net(e, true) {
                a.nets.push(n);
            } else if let Some(d) = e.strip_prefix("*.") {
                match syntax::name(d) {
                    Ok(n) => {
                        a.wildcards.insert(n);
                    }
                    Err(why) => warnings.push(format!("{origin}:{}: skipped: {why}", no + 1)),
                }
            } else if let Ok(n) = syntax::name(e) {
                a.names.insert(n);
            } else if e.contains("://") {
                match crate::normalize::url(e) {
                    Some(u) => {
                        a.values.insert(u);
                    }
                    None => warnings.push(format!("{origin}:{}: skipped: not a URL", no + 1)),
                }
            } else if e.contains('@') {
                a.values
                    .insert(crate::normalize::email(e).unwrap_or_else(|| e.to_lowercase()));
            } else {
                // hashes are lowercase in canonical form; keep the exact text too for mutexes
                a.values.insert(e.to_string());
                a.values.insert(e.to_ascii_lowercase());
            }
        }
        a
    }

    pub(crate) fn len(&self) -> usize {
        self.nets.len() + self.names.len() + self.wildcards.len() + self.values.len()
    }

    pub(crate) fn net(&self, net: &IpNet) -> Option<String> {
        self.nets
            .iter()
            .find(|a| a.contains(net) || net.contains(*a))
            .map(|a| format!("{net} overlaps allowlisted {a}"))
    }

    /// A name is held back if it is listed, under a `*.` entry, or (for a domain indicator)
    /// a parent of a listed name.
    pub(crate) fn name(&self, name: &str, covers_subdomains: bool) -> Option<String> {
        if self.names.is_empty() && self.wildcards.is_empty() {
            return None;
        }
        if self.names.contains(name) {
            return Some(format!("{name} is allowlisted"));
        }
        let mut rest = name;
        loop {
            if self.wildcards.contains(rest) {
                return Some(format!("{name} is under allowlisted *.{rest}"));
            }
            match rest.split_once('.') {
                Some((_, r)) => rest = r,
                None => break,
            }
        }
        if covers_subdomains {
            let all = self.names.iter().chain(self.wildcards.iter());
            if let Some(n) = all.into_iter().find(|n| super::is_subdomain_of(n, name)) {
                return Some(format!("{name} covers allowlisted {n}"));
            }
        }
        None
    }

    pub(crate) fn value(&self, v: &str) -> Option<String> {
        if self.values.is_empty() {
            return None;
        }
        self.values
            .contains(v)
            .then(|| format!("{v} is allowlisted"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# partners\n8.8.4.4\n10.20.0.0/16 # office\n*.partner.example.com\nbank.example.net\nhttps://Intranet.Example.org/login\nD41D8CD98F00B204E9800998ECF8427E\nnot a value at all\n*.bad..name\n";

    fn list() -> (Allowlist, Vec<String>) {
        let mut w = vec![];
        (Allowlist::parse(TEXT, "allowlist.txt", &mut w), w)
    }

    #[test]
    fn entries_and_matches() {
        let (a, w) = list();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("allowlist.txt:9:"));
        let net = |s: &str| syntax::parse_net(s, true).unwrap();
        assert!(a.net(&net("8.8.4.4")).is_some());
        assert!(a.net(&net("8.8.0.0/16")).is_some(), "covering network");
        assert!(a.net(&net("10.20.3.4")).is_some());
        assert!(a.net(&net("8.8.8.8")).is_none());
        assert!(a.name("partner.example.com", false).is_some());
        assert!(a.name("x.y.partner.example.com", false).is_some());
        assert!(a.name("otherpartner.example.com", false).is_none());
        assert!(a.name("bank.example.net", false).is_some());
        assert!(a.name("www.bank.example.net", false).is_none());
        assert!(
            a.name("example.net", true).is_some(),
            "covers bank.example.net"
        );
        assert!(a.name("example.net", false).is_none());
        assert!(a.value("https://intranet.example.org/login").is_some());
        assert!(a.value("d41d8cd98f00b204e9800998ecf8427e").is_some());
    }

    #[test]
    fn missing_file_is_empty() {
        let mut w = vec![];
        let a = Allowlist::load(Path::new("/nonexistent/mispd/allowlist.txt"), &mut w);
        assert_eq!(a.len(), 0);
        assert!(w[0].contains("does not exist"));
    }
}
