//! `/v1/indicators`: the whole served set in the formats consumers load directly (plain lines,
//! JSON lines, an nftables script, Suricata datasets, a Zeek Intel file, a DNS RPZ zone).
//! Streamed in chunks from a blocking task so a million entries never sit in one buffer.

use super::handlers::{error, param, Resp};
use crate::index::{EntryRef, Index};
use crate::model::Kind;
use crate::state::View;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use std::convert::Infallible;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

const CHUNK: usize = 64 * 1024;

/// A response body fed by a channel; ends when the producer drops its sender.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Plain,
    Json,
    Nft,
    Suricata(Dataset),
    Zeek,
    Rpz,
}

/// Which Suricata dataset to write (each dataset has one type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dataset {
    /// Domains and host names, base64 (`type string`, for `dns.query` / `tls.sni` / `http.host`).
    Domains,
    /// URLs, base64 (`type string`).
    Urls,
    Md5,
    Sha1,
    Sha256,
    /// IPv4 addresses (`type ipv4`); CIDRs are not representable and left out.
    Ipv4,
    /// IPv6 addresses (`type ip`).
    Ipv6,
}

struct Export {
    format: Format,
    kind: Option<String>,
    source: Option<String>,
    table: String,
    generation: u64,
}

fn is_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && s.as_bytes()[0].is_ascii_alphabetic()
}

pub(crate) fn respond(view: &View, params: &[(String, String)]) -> Resp {
    let bad = |code: &str, msg: &str| error(StatusCode::BAD_REQUEST, code, msg);
    let format = match param(params, "format").unwrap_or("plain") {
        "plain" => Format::Plain,
        "json" => Format::Json,
        "nft" => Format::Nft,
        "zeek" => Format::Zeek,
        "rpz" => Format::Rpz,
        "suricata" => Format::Suricata(match param(params, "dataset").unwrap_or("domains") {
            "domains" => Dataset::Domains,
            "urls" => Dataset::Urls,
            "md5" => Dataset::Md5,
            "sha1" => Dataset::Sha1,
            "sha256" => Dataset::Sha256,
            "ipv4" => Dataset::Ipv4,
            "ipv6" => Dataset::Ipv6,
            _ => {
                return bad(
                    "bad-dataset",
                    "dataset is one of domains, urls, md5, sha1, sha256, ipv4, ipv6",
                )
            }
        }),
        _ => {
            return bad(
                "bad-format",
                "format is one of plain, json, nft, suricata, zeek, rpz",
            )
        }
    };
    let table = param(params, "table").unwrap_or("mispd").to_string();
    if !is_ident(&table) {
        return bad(
            "bad-table",
            "table must be a letter then letters, digits or _",
        );
    }
    // A typo must not read as "nothing of that kind": an nft or rpz export of nothing would
    // clear the consumer's set.
    let kinds = [
        "ip", "cidr", "domain", "hostname", "url", "email", "hash", "other",
    ];
    if let Some(t) = param(params, "type") {
        if !kinds.contains(&t) && !crate::validate::is_indexed_type(t) {
            return bad(
                "bad-type",
                "type is an indicator kind (ip, cidr, domain, hostname, url, email, hash, other) or a MISP type mispd indexes (e.g. ip-dst, sha256)",
            );
        }
    }
    if let Some(src) = param(params, "source") {
        if !view.sources.iter().any(|s| s.name == src) {
            return bad("bad-source", "no source of that name is configured");
        }
    }
    let ex = Export {
        format,
        kind: param(params, "type").map(str::to_string),
        source: param(params, "source").map(str::to_string),
        table,
        generation: view.generation,
    };
    let content_type = match format {
        Format::Json => "application/x-ndjson",
        _ => "text/plain; charset=utf-8",
    };
    let index = view.index.clone();
    stream(content_type, move |out| write_export(&index, &ex, out))
}

/// A response whose body `produce` writes on a blocking thread, sent in chunks as they fill.
pub(crate) fn stream(
    content_type: &'static str,
    produce: impl FnOnce(&mut Out) -> std::io::Result<()> + Send + 'static,
) -> Resp {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut out = Out {
            buf: Vec::with_capacity(CHUNK + 1024),
            tx,
        };
        // An error here only means the client went away.
        let _ = produce(&mut out).and_then(|()| out.flush());
    });
    let mut r = Response::new(ChannelBody(rx).boxed());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The `/v1/changes` answer for a reset: the whole set, streamed (it can be tens of megabytes).
pub(crate) fn reset_changes(index: Arc<Index>, cursor: String) -> Resp {
    stream("application/json", move |out| {
        #[derive(serde::Serialize)]
        struct Item<'a> {
            value: &'a str,
            kind: Kind,
        }
        write!(out, "{{\"cursor\":")?;
        serde_json::to_writer(&mut *out, &cursor)?;
        write!(out, ",\"reset\":true,\"added\":[")?;
        for (i, e) in index.entries().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            let item = Item {
                value: e.value(),
                kind: e.kind(),
            };
            serde_json::to_writer(&mut *out, &item)?;
        }
        write!(out, "],\"removed\":[]}}")
    })
}

/// A buffered writer that sends full chunks down the channel (blocking: we run on a blocking
/// thread, and the channel's bound is the back-pressure).
pub(crate) struct Out {
    buf: Vec<u8>,
    tx: tokio::sync::mpsc::Sender<Bytes>,
}

impl Out {
    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK + 1024),
        ));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
    }
}

impl Write for Out {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            Out::flush(self)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn selected<'a>(index: &'a Index, ex: &'a Export) -> impl Iterator<Item = EntryRef<'a>> + 'a {
    index.entries().filter(move |e| {
        ex.kind.as_deref().is_none_or(|t| e.has_type(t))
            && ex.source.as_deref().is_none_or(|s| e.has_source(s))
    })
}

fn write_export(index: &Index, ex: &Export, out: &mut Out) -> std::io::Result<()> {
    match ex.format {
        Format::Plain => {
            for e in selected(index, ex) {
                writeln!(out, "{}", e.value())?;
            }
        }
        Format::Json => {
            for e in selected(index, ex) {
                let sources: Vec<&str> = e.sources().map(|s| &**s.source).collect();
                let line = serde_json::json!({
                    "value": e.value(), "kind": e.kind(), "type": e.misp_type(), "sources": sources,
                });
                writeln!(out, "{line}")?;
            }
        }
        Format::Nft => nft(index, ex, out)?,
        Format::Suricata(d) => suricata(index, ex, d, out)?,
        Format::Zeek => zeek(index, ex, out)?,
        Format::Rpz => rpz(index, ex, out)?,
    }
    Ok(())
}

/// An nftables script that (re)defines two interval sets and fills them in one transaction:
/// `nft -f` applies it atomically. Addresses inside a listed network are left out, so intervals
/// never overlap.
fn nft(index: &Index, ex: &Export, out: &mut Out) -> std::io::Result<()> {
    let t = &ex.table;
    writeln!(out, "# mispd generation {}", ex.generation)?;
    writeln!(out, "table inet {t} {{")?;
    writeln!(out, "\tset {t}_v4 {{ type ipv4_addr; flags interval; }}")?;
    writeln!(out, "\tset {t}_v6 {{ type ipv6_addr; flags interval; }}")?;
    writeln!(out, "}}")?;
    for (set, v6) in [("v4", false), ("v6", true)] {
        writeln!(out, "flush set inet {t} {t}_{set}")?;
        let mut n = 0;
        for e in selected(index, ex) {
            if !matches!(e.kind(), Kind::Ip | Kind::Cidr) || e.value().contains(':') != v6 {
                continue;
            }
            if index.covered_by_other_cidr(&e) {
                continue;
            }
            if n % 1000 == 0 {
                if n > 0 {
                    writeln!(out, " }}")?;
                }
                write!(out, "add element inet {t} {t}_{set} {{ {}", e.value())?;
            } else {
                write!(out, ", {}", e.value())?;
            }
            n += 1;
        }
        if n > 0 {
            writeln!(out, " }}")?;
        }
    }
    Ok(())
}

fn suricata(index: &Index, ex: &Export, d: Dataset, out: &mut Out) -> std::io::Result<()> {
    let b64 = base64::engine::general_purpose::STANDARD;
    for e in selected(index, ex) {
        let v = e.value();
        let take = match d {
            Dataset::Domains => matches!(e.kind(), Kind::Domain | Kind::Hostname),
            Dataset::Urls => e.kind() == Kind::Url,
            Dataset::Md5 => e.kind() == Kind::Hash && v.len() == 32,
            Dataset::Sha1 => e.kind() == Kind::Hash && v.len() == 40,
            Dataset::Sha256 => e.kind() == Kind::Hash && v.len() == 64,
            Dataset::Ipv4 => e.kind() == Kind::Ip && !v.contains(':'),
            Dataset::Ipv6 => e.kind() == Kind::Ip && v.contains(':'),
        };
        if !take {
            continue;
        }
        if matches!(d, Dataset::Domains | Dataset::Urls) {
            writeln!(out, "{}", b64.encode(v))?;
        } else {
            writeln!(out, "{v}")?;
        }
    }
    Ok(())
}

/// A Zeek Intel framework file. Zeek's `Intel::DOMAIN` matches names exactly (no subdomains) and
/// `Intel::URL` is written without its scheme, as Zeek expects. Other kinds are left out.
fn zeek(index: &Index, ex: &Export, out: &mut Out) -> std::io::Result<()> {
    writeln!(
        out,
        "#fields\tindicator\tindicator_type\tmeta.source\tmeta.desc\tmeta.url"
    )?;
    for e in selected(index, ex) {
        let v = e.value();
        let (ty, v) = match e.kind() {
            Kind::Ip => ("Intel::ADDR", v),
            Kind::Cidr => ("Intel::SUBNET", v),
            Kind::Domain | Kind::Hostname => ("Intel::DOMAIN", v),
            Kind::Url => (
                "Intel::URL",
                v.split_once("://").map_or(v, |(_, rest)| rest),
            ),
            Kind::Email => ("Intel::EMAIL", v),
            Kind::Hash => ("Intel::FILE_HASH", v),
            Kind::Other => continue,
        };
        if v.is_empty() || v.contains(|c: char| c.is_control()) {
            continue;
        }
        let mut sources: Vec<&str> = e.sources().map(|s| &**s.source).collect();
        sources.sort_unstable();
        sources.dedup();
        let event = e
            .sources()
            .find_map(|s| s.event_uuid.map(|u| u.to_string()))
            .unwrap_or_else(|| "-".into());
        let src = clean_field(&sources.join(","));
        let desc = clean_field(&format!("MISP {} event {}", e.misp_type(), event));
        writeln!(out, "{v}\t{ty}\t{src}\t{desc}\t-")?;
    }
    Ok(())
}

/// Zeek fields may not hold tabs or newlines; an empty field is written `-`.
fn clean_field(s: &str) -> String {
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// A response policy zone: `Domain` entries block the name and `*.name`, `Hostname` entries the
/// name only (`CNAME .` = NXDOMAIN). Names are written relative, so the zone can be loaded under
/// any origin. Names that are not plain DNS names are left out rather than escaped.
fn rpz(index: &Index, ex: &Export, out: &mut Out) -> std::io::Result<()> {
    writeln!(
        out,
        "; mispd response policy zone, generation {}",
        ex.generation
    )?;
    writeln!(out, "$TTL 300")?;
    writeln!(
        out,
        "@ IN SOA localhost. hostmaster.localhost. {} 3600 600 86400 300",
        ex.generation % (1 << 32)
    )?;
    writeln!(out, "@ IN NS localhost.")?;
    for e in selected(index, ex) {
        let wildcard = match e.kind() {
            Kind::Domain => true,
            Kind::Hostname => false,
            _ => continue,
        };
        let name = e.value();
        if !dns_name(name) {
            continue;
        }
        writeln!(out, "{name} CNAME .")?;
        if wildcard {
            writeln!(out, "*.{name} CNAME .")?;
        }
    }
    Ok(())
}

fn dns_name(name: &str) -> bool {
    // Room for "*." and a zone origin of up to 60 characters.
    name.len() <= 190
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_checked() {
        assert!(dns_name("evil.example"));
        assert!(dns_name("_dmarc.evil-1.example"));
        assert!(!dns_name("evil..example"));
        assert!(!dns_name("evil.example."));
        assert!(!dns_name("evil example"));
        assert!(!dns_name("Evil.example"));
        assert!(!dns_name(&"a".repeat(64)));
    }

    #[test]
    fn table_names_are_identifiers() {
        assert!(is_ident("mispd"));
        assert!(is_ident("fw_1"));
        assert!(!is_ident("1fw"));
        assert!(!is_ident("a b"));
        assert!(!is_ident("x;flush ruleset"));
    }

    #[test]
    fn zeek_fields_never_hold_tabs() {
        assert_eq!(clean_field("a\tb"), "a b");
        assert_eq!(clean_field(""), "-");
    }
}
