//! `mispctl`: the command-line client and admin tool. The CLI definition lives here (so man
//! pages and completions are generated from the same source); `src/bin/mispctl.rs` is a shim.

use crate::config::Config;
use crate::query::client;
use clap::{Parser, Subcommand};
use serde_json::Value;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Client and admin tool for mispd: check configs, get server pins, look values up, watch
/// status and quarantine, release held changes.
#[derive(Parser, Debug)]
#[command(name = "mispctl", version, about, long_about = None)]
pub struct Cli {
    /// The daemon's query socket.
    #[arg(
        long,
        global = true,
        default_value = "/run/mispd/query.sock",
        env = "MISPCTL_SOCKET"
    )]
    pub socket: PathBuf,
    /// Print the daemon's JSON instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check a configuration file: prints "ok" or names the file, the key and what is wrong.
    CheckConfig {
        /// The configuration file.
        #[arg(default_value = "/etc/mispd/mispd.toml")]
        file: PathBuf,
    },
    /// Print the public-key pin (sha256//BASE64) of an https server, to paste into `pins`.
    Pin {
        /// The server, e.g. https://misp.example.org
        url: String,
        /// Also check the chain against this CA file (PEM) besides the system roots.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Connection timeout in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Look values up (IPs, domains, URLs, hashes, emails...). With no value, or `-`, reads one
    /// value per line from standard input. Exits 0 if any value is listed, 1 if none is.
    Lookup { values: Vec<String> },
    /// Show the daemon's status: generation, indicator counts, each source's state.
    Status,
    /// List quarantined values with their source and reason.
    Quarantine {
        #[arg(long)]
        source: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Apply a change a mass-change breaker is holding for SOURCE (root or the daemon's user).
    Release { source: String },
    /// Write the current set to standard output in a consumer's format (streamed). Errors go
    /// to standard error only; a reader that stops early (`| head`) ends it quietly, exit 0.
    Export {
        /// plain (one value a line), json (JSON lines), nft (an nftables script for `nft -f`
        /// that declares table `inet mispd` with sets mispd_v4 and mispd_v6), suricata (a
        /// dataset file), zeek (Intel framework file) or rpz (DNS response policy zone).
        #[arg(long, default_value = "plain")]
        format: String,
        /// Only this indicator kind or MISP type (e.g. `ip`, `domain`, `sha256`).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only indicators from this source.
        #[arg(long)]
        source: Option<String>,
        /// nft: the table (and set-name prefix) to declare instead of `mispd`.
        #[arg(long)]
        table: Option<String>,
        /// suricata: domains (default), urls, md5, sha1, sha256, ipv4 or ipv6.
        #[arg(long)]
        dataset: Option<String>,
    },
    /// Print what was added and removed since CURSOR (`+ value` / `- value` lines, then the new
    /// cursor on standard error). Without a cursor, or with one the daemon no longer knows, the
    /// whole set comes as additions (a reset).
    Changes {
        /// The cursor a previous call printed.
        #[arg(long)]
        since: Option<String>,
        /// Keep going: wait for each next change and print it as it comes.
        #[arg(long)]
        follow: bool,
        /// Seconds each wait may last (the daemon caps it at 300).
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("{0}")]
    Message(String),
    #[error("cannot talk to mispd at {socket}: {reason}")]
    Socket { socket: String, reason: String },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mispctl: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mispctl: {e}");
            ExitCode::from(2)
        }
    }
}

async fn request(
    cli: &Cli,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value), CtlError> {
    let res = match (method, body) {
        ("POST", b) => client::post(&cli.socket, path, &b.cloned().unwrap_or(Value::Null)).await,
        _ => client::get(&cli.socket, path).await,
    };
    let (status, bytes) = res.map_err(|e| CtlError::Socket {
        socket: cli.socket.display().to_string(),
        reason: e.to_string(),
    })?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
        CtlError::Message(format!("the daemon sent something that is not JSON: {e}"))
    })?;
    if status >= 400 {
        let msg = v["error"].as_str().unwrap_or("request failed");
        return Err(CtlError::Message(format!("{msg} (HTTP {status})")));
    }
    Ok((status, v))
}

async fn run(cli: Cli) -> Result<ExitCode, CtlError> {
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::CheckConfig { file } => match Config::load(file) {
            Ok(c) => {
                for w in config_warnings(&c) {
                    eprintln!("warning: {w}");
                }
                let _ = writeln!(
                    out,
                    "ok: {} ({} source(s))",
                    file.display(),
                    c.sources.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Pin {
            url,
            ca_file,
            timeout,
        } => {
            let report =
                crate::tls::fetch_pin(url, ca_file.as_deref(), Duration::from_secs(*timeout))
                    .await
                    .map_err(|e| CtlError::Message(e.to_string()))?;
            let _ = writeln!(out, "{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Lookup { values } => {
            let values: Vec<String> = if values.is_empty() || values == &["-"] {
                std::io::stdin()
                    .lock()
                    .lines()
                    .map_while(Result::ok)
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            } else {
                values.clone()
            };
            let mut any = false;
            for chunk in values.chunks(1000) {
                let (_, v) = request(
                    &cli,
                    "POST",
                    "/v1/lookup",
                    Some(&serde_json::json!({ "values": chunk })),
                )
                .await?;
                for r in v["results"].as_array().into_iter().flatten() {
                    any |= r["listed"].as_bool().unwrap_or(false);
                    if cli.json {
                        let _ = writeln!(out, "{r}");
                    } else {
                        let _ = writeln!(out, "{}", human_lookup(r));
                    }
                }
            }
            Ok(if any {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Status => {
            let (_, v) = request(&cli, "GET", "/v1/status", None).await?;
            if cli.json {
                let _ = writeln!(out, "{v}");
            } else {
                let _ = writeln!(
                    out,
                    "mispd {}: generation {}, {} indicators",
                    v["version"].as_str().unwrap_or("?"),
                    v["generation"],
                    v["indicators"]
                );
                for s in v["sources"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "  {:<20} {:<12} {:>8} indicators {:>6} quarantined  last success {}{}",
                        s["name"].as_str().unwrap_or("?"),
                        s["state"].as_str().unwrap_or("?"),
                        s["indicators"],
                        s["quarantined"],
                        s["last-success"].as_str().unwrap_or("never"),
                        s["last-error"]
                            .as_str()
                            .map(|e| format!("\n    last error: {e}"))
                            .unwrap_or_default()
                    );
                    if let Some(h) = s["held"].as_object() {
                        let _ = writeln!(
                            out,
                            "    HELD: +{} -{} of {} ({}); release with `mispctl release {}`",
                            h["added"],
                            h["removed"],
                            h["current"],
                            h["reason"].as_str().unwrap_or(""),
                            s["name"].as_str().unwrap_or("?")
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Quarantine { source, limit } => {
            let mut path = format!("/v1/quarantine?limit={limit}");
            if let Some(s) = source {
                path.push_str(&format!("&source={}", url_escape(s)));
            }
            let (_, v) = request(&cli, "GET", &path, None).await?;
            if cli.json {
                let _ = writeln!(out, "{v}");
            } else {
                let items = v["items"].as_array().cloned().unwrap_or_default();
                for q in &items {
                    let _ = writeln!(
                        out,
                        "{:<40} {:<14} {:<16} {} (event {}, attribute {})",
                        q["value"].as_str().unwrap_or("?"),
                        q["misp_type"].as_str().unwrap_or("?"),
                        q["reason"]["code"].as_str().unwrap_or("?"),
                        q["reason"]["detail"].as_str().unwrap_or(""),
                        q["event_uuid"].as_str().unwrap_or("-"),
                        q["attribute_uuid"].as_str().unwrap_or("-"),
                    );
                }
                if items.is_empty() {
                    let _ = writeln!(out, "nothing quarantined");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            format,
            kind,
            source,
            table,
            dataset,
        } => {
            let mut path = format!("/v1/indicators?format={}", url_escape(format));
            for (name, value) in [
                ("type", kind),
                ("source", source),
                ("table", table),
                ("dataset", dataset),
            ] {
                if let Some(v) = value {
                    path.push_str(&format!("&{name}={}", url_escape(v)));
                }
            }
            drop(out);
            let mut stdout = tokio::io::stdout();
            match client::get_to(&cli.socket, &path, &mut stdout).await {
                Ok(_) => Ok(ExitCode::SUCCESS),
                // The error goes to stderr only: stdout may be redirected into a firewall file.
                Err(client::ClientError::Refused { status, message }) => Err(CtlError::Message(
                    format!("export failed (HTTP {status}): {message}"),
                )),
                // The reader stopped early (`mispctl export | head`): that is its choice, not
                // a failure, as with other tools that write to a pipe.
                Err(client::ClientError::Output(e))
                    if e.kind() == std::io::ErrorKind::BrokenPipe =>
                {
                    Ok(ExitCode::SUCCESS)
                }
                Err(client::ClientError::Output(e)) => Err(CtlError::Message(format!(
                    "cannot write the export out: {e}"
                ))),
                Err(e) => Err(CtlError::Socket {
                    socket: cli.socket.display().to_string(),
                    reason: e.to_string(),
                }),
            }
        }
        Command::Changes {
            since,
            follow,
            wait,
        } => {
            let mut cursor = since.clone();
            loop {
                let mut path = format!("/v1/changes?wait={}", if *follow { *wait } else { 0 });
                if let Some(c) = &cursor {
                    path.push_str(&format!("&since={}", url_escape(c)));
                }
                let (_, v) = request(&cli, "GET", &path, None).await?;
                if cli.json {
                    let _ = writeln!(out, "{v}");
                } else {
                    if v["reset"].as_bool().unwrap_or(false) {
                        let _ = writeln!(out, "# reset: the whole current set follows");
                    }
                    for (sign, key) in [("+", "added"), ("-", "removed")] {
                        for item in v[key].as_array().into_iter().flatten() {
                            let _ = writeln!(
                                out,
                                "{sign} {}\t{}",
                                item["value"].as_str().unwrap_or("?"),
                                item["kind"].as_str().unwrap_or("?")
                            );
                        }
                    }
                }
                let _ = out.flush();
                cursor = v["cursor"].as_str().map(str::to_string);
                if !*follow {
                    if !cli.json {
                        eprintln!("cursor: {}", cursor.as_deref().unwrap_or(""));
                    }
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
        Command::Release { source } => {
            let (_, v) = request(
                &cli,
                "POST",
                &format!("/v1/release/{}", url_escape(source)),
                None,
            )
            .await?;
            let _ = writeln!(
                out,
                "{}",
                v["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Things a valid configuration may still get wrong on this host: said, not refused (the
/// package's own config is checked before the warninglists and keys are installed).
fn config_warnings(c: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if c.sources.is_empty() {
        w.push("no [[source]] is configured: the daemon will start and serve nothing".into());
    } else if let Some(warning) = crate::supervisor::corroboration_warning(c) {
        w.push(warning);
    }
    for dir in &c.validation.warninglists {
        if !dir.is_dir() {
            w.push(format!(
                "validation.warninglists: {} is not a directory: indicators are not checked against MISP warninglists until it exists",
                dir.display()
            ));
        }
    }
    if std::env::var_os("CREDENTIALS_DIRECTORY").is_none() {
        for s in &c.sources {
            if let Some(name) = &s.api_key {
                let path = c.daemon.credentials_dir.join(name);
                if !path.exists() {
                    w.push(format!(
                        "source `{}`: credential {} does not exist (fine if systemd passes it with LoadCredential={name}:...)",
                        s.name,
                        path.display()
                    ));
                }
            }
        }
    }
    w
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// One line per value: `VALUE  listed|not listed  [how, type, sources]`.
fn human_lookup(r: &Value) -> String {
    let value = r["value"].as_str().unwrap_or("?");
    let mut line = if r["listed"].as_bool().unwrap_or(false) {
        let parts: Vec<String> = r["matches"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let sources: Vec<String> = m["sources"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|s| {
                        format!(
                            "{} event {}",
                            s["source"].as_str().unwrap_or("?"),
                            s["event_uuid"].as_str().unwrap_or("-")
                        )
                    })
                    .collect();
                format!(
                    "{} match on {} ({}) from {}",
                    m["match"].as_str().unwrap_or("?"),
                    m["indicator"].as_str().unwrap_or("?"),
                    m["type"].as_str().unwrap_or("?"),
                    sources.join(", ")
                )
            })
            .collect();
        format!("{value}\tLISTED\t{}", parts.join("; "))
    } else {
        format!("{value}\tnot listed")
    };
    if let Some(w) = r["warninglists"].as_array().filter(|w| !w.is_empty()) {
        let names: Vec<&str> = w.iter().filter_map(|x| x["name"].as_str()).collect();
        line.push_str(&format!("\t(on warninglists: {})", names.join(", ")));
    }
    line
}
