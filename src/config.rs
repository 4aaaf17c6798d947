//! The one TOML file an operator edits. Loaded in two passes: serde with `deny_unknown_fields`
//! (a typo is an error naming the key), then [`Config::check`] for meaning (URL schemes, pins,
//! intervals, names). Secrets never travel through here: a source names its credential, and a
//! string that looks like a MISP key anywhere in the file is refused.

use serde::{Deserialize, Deserializer};
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variables with this prefix override keys: `MISPD_DAEMON__STATE_DIR` sets
/// `daemon.state-dir`. Arrays of tables (`[[source]]`) cannot be overridden this way.
pub const ENV_PREFIX: &str = "MISPD";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: key `{key}`: {reason}")]
    Key {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub daemon: DaemonSettings,
    #[serde(default)]
    pub query: crate::query::Settings,
    #[serde(default)]
    pub validation: crate::validate::Settings,
    #[serde(default, rename = "source")]
    pub sources: Vec<SourceSettings>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct DaemonSettings {
    /// Where the snapshot of the validated set lives.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Where API keys are read from when systemd did not pass `$CREDENTIALS_DIRECTORY`.
    #[serde(default = "default_credentials_dir")]
    pub credentials_dir: PathBuf,
    /// How many quarantined values are kept for `/v1/quarantine` (newest win).
    #[serde(default = "default_quarantine_limit")]
    pub quarantine_limit: usize,
    /// Path to resolv.conf, read to protect this host's resolvers from being published.
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            state_dir: default_state_dir(),
            credentials_dir: default_credentials_dir(),
            quarantine_limit: default_quarantine_limit(),
            resolv_conf: default_resolv_conf(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/mispd")
}
fn default_credentials_dir() -> PathBuf {
    PathBuf::from("/etc/mispd/credentials")
}
fn default_quarantine_limit() -> usize {
    10_000
}
fn default_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SourceKind {
    /// A MISP server's REST API (`/attributes/restSearch`), https only, with an API key.
    Misp,
    /// A static MISP feed (`manifest.json` + `<uuid>.json`), from https or a local directory.
    Feed,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Misp => "misp",
            SourceKind::Feed => "feed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trust {
    /// Indicators are published on this source's word alone.
    #[default]
    Normal,
    /// Indicators are published only when another source lists them too.
    Low,
}

/// A duration written the human way (`30s`, `5m`, `6h`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl fmt::Debug for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map(HumanDuration).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write it with a unit, like \"30s\", \"5m\" or \"6h\""
            ))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct SourceSettings {
    pub name: String,
    pub kind: SourceKind,
    /// `https://` URL of the MISP server or feed; a feed may also be `file:///dir` or a plain path.
    pub url: String,
    /// The NAME of the credential holding the API key (a file name under the credentials
    /// directory or `$CREDENTIALS_DIRECTORY`), never the key itself. Required for `misp`.
    #[serde(default)]
    pub api_key: Option<String>,
    /// SHA-256 pins of the server's public key, `sha256//BASE64`; any one matching passes.
    #[serde(default)]
    pub pins: Vec<String>,
    /// Extra trust anchors (PEM), e.g. a private CA or the server's own self-signed certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    #[serde(default = "default_full_resync")]
    pub full_resync: HumanDuration,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// Largest response body accepted for one request, in bytes.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    #[serde(default = "default_true")]
    pub to_ids_only: bool,
    #[serde(default)]
    pub published_only: bool,
    /// Keep only attributes carrying at least one of these tags (attribute or event tags).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Drop attributes carrying any of these tags.
    #[serde(default)]
    pub not_tags: Vec<String>,
    /// Keep only these MISP types (empty: all types mispd indexes).
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub trust: Trust,
    /// Past this age without a successful sync, health reports degraded.
    #[serde(default)]
    pub max_stale: Option<HumanDuration>,
    /// Drop this source's indicators once its data is older than this (no successful sync for
    /// that long). Off by default: stale protection beats none.
    #[serde(default)]
    pub expire_after: Option<HumanDuration>,
    /// Publish only attributes seen within this age (`last_seen`, else the attribute timestamp),
    /// so old indicators age out one by one instead of all at once.
    #[serde(default)]
    pub max_age: Option<HumanDuration>,
    /// Ask MISP to leave out attributes its decaying models score as decayed
    /// (`excludeDecayed`); they then drop out at the next full resync.
    #[serde(default)]
    pub exclude_decayed: bool,
    /// Decaying model ids to score with (empty: all models enabled on the server).
    #[serde(default)]
    pub decaying_models: Vec<u32>,
    /// Apply a held mass change by itself once this many further syncs have returned the very
    /// same set (0: only `mispctl release` applies it).
    #[serde(default)]
    pub auto_release_after: u32,
    /// Accept a credential that does not look like a MISP key (e.g. behind a proxy), with a warning.
    #[serde(default)]
    pub allow_nonstandard_key: bool,
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_full_resync() -> HumanDuration {
    HumanDuration(Duration::from_secs(6 * 3600))
}
fn default_page_size() -> u32 {
    5000
}
fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_response_bytes() -> u64 {
    512 * 1024 * 1024
}
fn default_true() -> bool {
    true
}

impl SourceSettings {
    /// For a feed source: the local directory it reads, when the URL names one.
    pub fn feed_dir(&self) -> Option<PathBuf> {
        if let Some(p) = self.url.strip_prefix("file://") {
            return Some(PathBuf::from(p));
        }
        (!self.url.contains("://")).then(|| PathBuf::from(&self.url))
    }

    /// The TLS trust for this source: pins and extra anchors (pins are checked by `check()`).
    pub fn tls(&self) -> Result<crate::tls::TlsSettings, String> {
        let pins = self
            .pins
            .iter()
            .map(|p| p.parse::<crate::tls::Pin>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(crate::tls::TlsSettings {
            pins,
            ca_file: self.ca_file.clone(),
        })
    }

    /// Host name of the source URL, for protecting the MISP server from being published.
    pub fn host(&self) -> Option<String> {
        url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
    }
}

impl Config {
    /// Read, parse and check a configuration file (with `MISPD_*` environment overrides).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // First a plain TOML parse: syntax errors with line numbers, and the key scan.
        // A syntax error quotes the offending line: redact anything key-shaped in it.
        let raw: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: redact_key_like(&e.to_string()),
        })?;
        if let Some(key) = find_key_like_string(&toml::Value::Table(raw), "") {
            return Err(ConfigError::Key {
                path: path.to_path_buf(),
                key,
                reason: "this looks like a MISP API key. Keys never go in the configuration: put it \
                         in a root-only file under the credentials directory (chmod 600) or pass it \
                         with systemd LoadCredential=, and set `api-key` to that credential's name"
                    .into(),
            });
        }
        let env: std::collections::HashMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")) && k.contains("__"))
            .collect();
        let built = config::Config::builder()
            .add_source(config::File::from_str(&text, config::FileFormat::Toml))
            .add_source(
                config::Environment::with_prefix(ENV_PREFIX)
                    .prefix_separator("_")
                    .separator("__")
                    .convert_case(config::Case::Kebab)
                    .try_parsing(true)
                    .source(Some(env)),
            )
            .build()
            .map_err(|e| ConfigError::Invalid {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        let cfg: Config = built.try_deserialize().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason: explain_enum(&tidy_key_path(&redact_key_like(&e.to_string()))),
        })?;
        cfg.check().map_err(|(key, reason)| ConfigError::Key {
            path: path.to_path_buf(),
            key,
            reason,
        })?;
        Ok(cfg)
    }

    /// Semantic checks; the error names the key (`source[1].pins`) and what is wrong.
    pub fn check(&self) -> Result<(), (String, String)> {
        self.query.check().map_err(|e| ("query".to_string(), e))?;
        self.validation
            .check()
            .map_err(|e| ("validation".to_string(), e))?;
        let mut names = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let key = |k: &str| format!("source[{i}].{k}");
            if s.name.is_empty()
                || !s
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err((
                    key("name"),
                    format!(
                        "`{}` must be non-empty letters, digits, `-`, `_` or `.`",
                        s.name
                    ),
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err((key("name"), format!("`{}` is used by two sources", s.name)));
            }
            match s.kind {
                SourceKind::Misp => {
                    if !s.url.starts_with("https://") {
                        return Err((
                            key("url"),
                            format!(
                                "`{}`: MISP sources must use https:// (the API key would travel in clear)",
                                s.url
                            ),
                        ));
                    }
                    match &s.api_key {
                        None => {
                            return Err((
                                key("api-key"),
                                "missing: name the credential that holds this server's API key"
                                    .into(),
                            ))
                        }
                        Some(n) if !crate::credentials::valid_name(n) => {
                            return Err((
                                key("api-key"),
                                format!(
                                    "`{n}` is not a credential name (a plain file name, no `/`)"
                                ),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                SourceKind::Feed => {
                    if s.feed_dir().is_none() && !s.url.starts_with("https://") {
                        return Err((
                            key("url"),
                            format!(
                                "`{}`: feeds are read over https:// or from a local directory",
                                s.url
                            ),
                        ));
                    }
                    if s.api_key.is_some() {
                        return Err((key("api-key"), "feeds take no API key".into()));
                    }
                }
            }
            if s.url.starts_with("https://") {
                let u = url::Url::parse(&s.url)
                    .map_err(|e| (key("url"), format!("`{}`: {e}", s.url)))?;
                if u.host_str().is_none() {
                    return Err((key("url"), format!("`{}` has no host", s.url)));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return Err((
                        key("url"),
                        "credentials in the URL are refused: use `api-key` and a credential file"
                            .into(),
                    ));
                }
            }
            for p in &s.pins {
                p.parse::<crate::tls::Pin>()
                    .map_err(|e| (key("pins"), e.to_string()))?;
            }
            if let Some(ca) = &s.ca_file {
                if !ca.is_file() {
                    return Err((
                        key("ca-file"),
                        format!("{} is not a readable file", ca.display()),
                    ));
                }
            }
            if s.interval.0 < Duration::from_secs(1) {
                return Err((key("interval"), "must be at least 1s".into()));
            }
            if s.full_resync.0 < s.interval.0 {
                return Err((
                    key("full-resync"),
                    "must not be shorter than `interval`".into(),
                ));
            }
            if s.timeout.0 < Duration::from_secs(1) {
                return Err((key("timeout"), "must be at least 1s".into()));
            }
            if !(1..=100_000).contains(&s.page_size) {
                return Err((key("page-size"), "must be between 1 and 100000".into()));
            }
            if let (Some(exp), Some(stale)) = (s.expire_after, s.max_stale) {
                if exp.0 < stale.0 {
                    return Err((
                        key("expire-after"),
                        "must not be shorter than `max-stale`".into(),
                    ));
                }
            }
            if s.max_response_bytes < 1024 {
                return Err((key("max-response-bytes"), "must be at least 1024".into()));
            }
        }
        Ok(())
    }
}

/// Runs of letters and digits in `s` (where a key pasted into a URL or a sentence would stand).
fn alnum_runs(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|t| !t.is_empty())
}

/// `s` with every key-shaped run of letters and digits replaced by `***`.
fn redact_key_like(s: &str) -> String {
    let mut out = s.to_string();
    for run in alnum_runs(s).filter(|r| crate::credentials::looks_like_api_key(r)) {
        out = out.replace(run, "***");
    }
    out
}

/// The config crate names a bad choice by the Rust type (`enum SourceKind does not have
/// variant constructor fed`): say it in the file's words, with the values allowed.
fn explain_enum(s: &str) -> String {
    const CHOICES: [(&str, &str); 2] = [
        ("SourceKind", "`misp` or `feed`"),
        ("Trust", "`normal` or `low`"),
    ];
    let Some((head, rest)) = s.split_once(" does not have variant constructor ") else {
        return s.to_string();
    };
    let ty = head.rsplit(' ').next().unwrap_or("");
    let (value, tail) = rest.split_once(' ').unwrap_or((rest, ""));
    let allowed = CHOICES
        .iter()
        .find(|(t, _)| *t == ty)
        .map_or("see docs/configuration.md".to_string(), |(_, c)| {
            format!("expected {c}")
        });
    format!("`{value}` is not a valid value ({allowed}) {tail}")
        .trim_end()
        .to_string()
}

/// The config crate writes `source[0]interval`; say `source[0].interval`.
fn tidy_key_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev = ' ';
    for c in s.chars() {
        if prev == ']' && c.is_ascii_alphabetic() {
            out.push('.');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// The dotted key of the first string value that holds something shaped like a MISP API key
/// (the whole value, or a run of letters and digits inside it, as in `https://misp/?key=...`).
fn find_key_like_string(v: &toml::Value, at: &str) -> Option<String> {
    match v {
        // A public-key pin is a hash of public data; its base64 can hold a 40-character run of
        // letters and digits by chance, which must not read as a key.
        toml::Value::String(s) if s.parse::<crate::tls::Pin>().is_ok() => None,
        toml::Value::String(s) => alnum_runs(s)
            .any(crate::credentials::looks_like_api_key)
            .then(|| at.to_string()),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_key_like_string(x, &format!("{at}[{i}]"))),
        toml::Value::Table(t) => t.iter().find_map(|(k, x)| {
            let sub = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            find_key_like_string(x, &sub)
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        load_env(text, vec![])
    }

    fn load_env(text: &str, env: Vec<(&str, &str)>) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("mispd.toml");
        std::fs::write(&p, text).unwrap();
        Config::load_with_env(
            &p,
            env.into_iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    const MINIMAL: &str = r#"
[[source]]
name = "misp-prod"
kind = "misp"
url = "https://misp.example.org"
api-key = "misp-prod"
pins = ["sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = load(MINIMAL).unwrap();
        assert_eq!(c.daemon.state_dir, PathBuf::from("/var/lib/mispd"));
        let s = &c.sources[0];
        assert_eq!(s.interval.0, Duration::from_secs(300));
        assert_eq!(s.page_size, 5000);
        assert!(s.to_ids_only);
        assert_eq!(s.host().as_deref(), Some("misp.example.org"));
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let err = load(&format!("{MINIMAL}intervall = \"5m\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall"), "{err}");
        assert!(err.contains("mispd.toml"), "{err}");
    }

    #[test]
    fn a_pin_is_never_taken_for_a_key() {
        // Random test certificates sometimes give a pin like this: 40 letters and digits, then
        // `+`. It used to be refused as "a MISP API key" (a flaky end-to-end test found it).
        let pin = format!("sha256//{}+AA=", "Ab3".repeat(13) + "Z");
        assert!(pin.parse::<crate::tls::Pin>().is_ok(), "{pin}");
        let cfg =
            load(&MINIMAL.replace("sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", &pin))
                .unwrap();
        assert_eq!(cfg.sources[0].pins.len(), 1);
        // The same run anywhere else still is.
        let err = load(&format!(
            "{MINIMAL}tags = [\"{}\"]\n",
            "Ab3".repeat(13) + "Z"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("looks like a MISP API key"), "{err}");
    }

    #[test]
    fn a_bad_choice_names_the_allowed_values() {
        let err = load(&MINIMAL.replace("kind = \"misp\"", "kind = \"fed\""))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`fed` is not a valid value (expected `misp` or `feed`)")
                && err.contains("source[0].kind")
                && !err.contains("SourceKind"),
            "{err}"
        );
    }

    #[test]
    fn http_misp_source_is_refused() {
        let err = load(&MINIMAL.replace("https://", "http://"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source[0].url") && err.contains("https"),
            "{err}"
        );
    }

    #[test]
    fn api_key_in_config_is_refused_and_points_to_credentials() {
        let text = MINIMAL.replace(
            "api-key = \"misp-prod\"",
            "api-key = \"abcdefghijABCDEFGHIJ0123456789abcdefghij\"",
        );
        let err = load(&text).unwrap_err().to_string();
        assert!(err.contains("source[0].api-key"), "{err}");
        assert!(err.contains("credential"), "{err}");
        assert!(
            !err.contains("abcdefghijABCDEFGHIJ"),
            "the key must not be echoed: {err}"
        );
    }

    #[test]
    fn syntax_errors_and_urls_do_not_leak_keys() {
        let key = "abcdefghijABCDEFGHIJ0123456789abcdefghij";
        let err = load(&MINIMAL.replace("api-key = \"misp-prod\"", &format!("api-key = \"{key}")))
            .unwrap_err()
            .to_string();
        assert!(
            !err.contains(key),
            "unterminated string echoed the key: {err}"
        );
        let err = load(&MINIMAL.replace(
            "https://misp.example.org",
            &format!("https://misp.example.org/?key={key}"),
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("source[0].url") && !err.contains(key), "{err}");
    }

    #[test]
    fn bad_duration_and_pin_name_the_key() {
        let err = load(&format!("{MINIMAL}interval = \"5\"\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("interval") && err.contains("unit"), "{err}");
        let err = load(&MINIMAL.replace("sha256//AAAA", "sha1//AAAA"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("source[0].pins"), "{err}");
    }

    #[test]
    fn duplicate_names_refused() {
        let err = load(&format!("{MINIMAL}{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("source[1].name"), "{err}");
    }

    #[test]
    fn environment_overrides_kebab_keys() {
        let c = load_env(
            MINIMAL,
            vec![("MISPD_DAEMON__STATE_DIR", "/tmp/x"), ("MISPD_DEBUG", "1")],
        )
        .unwrap();
        assert_eq!(c.daemon.state_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn feed_from_directory() {
        let c = load("[[source]]\nname = \"f\"\nkind = \"feed\"\nurl = \"/srv/feed\"\n").unwrap();
        assert_eq!(c.sources[0].feed_dir(), Some(PathBuf::from("/srv/feed")));
    }
}
