//! Ingest and cold-start benchmark (issue 6): prints figures, asserts nothing about time.
//!
//!     cargo bench --bench ingest            # 1M attributes (set MISPD_BENCH_N to change)
//!     MISPD_BENCH_DAEMON=0 cargo bench --bench ingest   # the in-process phases only
//!
//! 1. Generates 1M realistic MISP attributes as restSearch pages of 5000 (domains, IPv4/IPv6
//!    with CIDRs, URLs, hashes, composites), serialised the way MISP sends them (numbers as strings).
//! 2. Ingest: decode each page and apply it to a sync store (one page in memory at a time, as a
//!    full sync does), validate every attribute with all
//!    shipped warninglists, build the index, each with the code the daemon runs (validation
//!    across the cores as the worker does). Reports attributes/s per phase and overall.
//! 3. Writes the snapshot, then starts the real `mispd` binary on it with the source unreachable
//!    and measures the time to `READY=1` and the daemon's resident memory once it serves.
//! 4. Has the real daemon sync the same attributes as a local feed from an empty state
//!    directory, and reports its memory after the sync; then restarts it on that state (the
//!    store file: nothing is fetched again) and reports the same.

mod support;

use mispd::config::Config;
use mispd::index::Index;
use mispd::misp::wire::decode_rest_search;
use mispd::model::Attribute;
use mispd::snapshot;
use mispd::sync::plan::Store;
use mispd::sync::worker::judge_all;
use mispd::validate::{Protected, Settings, Validator};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const PAGE: usize = 5000;

/// One attribute as MISP's JSON shows it, with a value of a type chosen by `r` (0..100).
fn attribute(rng: &mut fastrand::Rng, i: usize, events: &[String]) -> serde_json::Value {
    let words = [
        "login", "secure", "update", "cdn", "mail", "pay", "account", "verify",
    ];
    let tlds = ["com", "net", "org", "ru", "info", "xyz", "top", "io"];
    let r = rng.u32(..100);
    let word = words[rng.usize(..words.len())];
    let tld = tlds[rng.usize(..tlds.len())];
    let public_v4 = |rng: &mut fastrand::Rng| {
        // 11.0.0.0 - 99.255.255.255 avoids the special-purpose ranges below 100.
        std::net::Ipv4Addr::from(rng.u32(0x0b00_0000..0x6400_0000))
    };
    let (t, value) = match r {
        0..=44 => ("domain", format!("{word}-{}{i}.{tld}", rng.u32(..100_000))),
        45..=49 => ("hostname", format!("www.{word}{i}.{tld}")),
        50..=66 => ("ip-dst", public_v4(rng).to_string()),
        67 => (
            "ip-dst",
            format!(
                "{}/24",
                ipnet::Ipv4Net::new(public_v4(rng), 24)
                    .unwrap()
                    .trunc()
                    .addr()
            ),
        ),
        68..=71 => {
            let ip = std::net::Ipv6Addr::from((0x2a00u128 << 112) | rng.u128(..1 << 100));
            ("ip-src", ip.to_string())
        }
        72..=83 => (
            "url",
            format!(
                "http://{word}{}.{tld}/{word}/{i}.php?id={}",
                rng.u32(..100_000),
                rng.u32(..1000)
            ),
        ),
        84..=89 => (
            "sha256",
            format!("{:032x}{:032x}", rng.u128(..), rng.u128(..)),
        ),
        90..=93 => ("md5", format!("{:032x}", rng.u128(..))),
        94..=96 => ("domain|ip", format!("{word}{i}.{tld}|{}", public_v4(rng))),
        _ => (
            "filename|sha1",
            format!(
                "{word}{i}.exe|{:040x}",
                rng.u128(..) << 32 | rng.u32(..) as u128
            ),
        ),
    };
    serde_json::json!({
        "id": (i + 1).to_string(),
        "event_id": (i % events.len() + 1).to_string(),
        "object_id": "0",
        "object_relation": null,
        "category": "Network activity",
        "type": t,
        "value": value,
        "to_ids": true,
        "uuid": support::uuid(rng),
        "timestamp": (1_700_000_000 + i as i64).to_string(),
        "distribution": "5",
        "sharing_group_id": "0",
        "comment": "",
        "deleted": false,
        "disable_correlation": false,
        "first_seen": null,
        "last_seen": null,
        "event_uuid": events[i % events.len()],
        "Event": {"org_id": "1", "distribution": "3", "id": (i % events.len() + 1).to_string(),
                  "info": "benchmark event", "orgc_id": "1", "uuid": events[i % events.len()]},
        "Tag": [{"id": "1", "name": "tlp:white", "colour": "#ffffff", "numerical_value": null,
                 "is_galaxy": false, "local": 0, "inherited": 1}]
    })
}

const EVENTS: usize = 5000;

/// The same attributes as [`pages`], as a static MISP feed in `dir`: a manifest and one file per
/// event. Returns the bytes written.
fn write_feed(dir: &Path, n: usize) -> usize {
    let mut rng = fastrand::Rng::with_seed(42);
    let events: Vec<String> = (0..EVENTS).map(|_| support::uuid(&mut rng)).collect();
    let mut per_event: Vec<Vec<serde_json::Value>> = vec![Vec::new(); EVENTS];
    for i in 0..n {
        per_event[i % EVENTS].push(attribute(&mut rng, i, &events));
    }
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = serde_json::Map::new();
    let mut bytes = 0;
    for (uuid, attrs) in events.iter().zip(per_event) {
        let ev = serde_json::json!({"Event": {"uuid": uuid, "info": "benchmark event",
            "date": "2024-05-15", "timestamp": "1715767131", "published": true,
            "Orgc": {"name": "bench", "uuid": "d1c6a726-f132-4ddc-8180-ce3a5b778e65"},
            "Tag": [{"name": "tlp:white"}], "Attribute": attrs}});
        let body = serde_json::to_vec(&ev).unwrap();
        bytes += body.len();
        std::fs::write(dir.join(format!("{uuid}.json")), body).unwrap();
        manifest.insert(
            uuid.clone(),
            serde_json::json!({"info": "benchmark event", "timestamp": 1715767131}),
        );
    }
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    bytes
}

/// Starts the real daemon on `config` with a NOTIFY_SOCKET in `dir`; returns it with the time
/// to the first notification containing `until` (None when `limit` passes first).
fn start_daemon(
    config: &Path,
    dir: &Path,
    until: &str,
    limit: Duration,
) -> (std::process::Child, Option<Duration>) {
    let notify_path = dir.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let t = Instant::now();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mispd"))
        .arg("--config")
        .arg(config)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("MISPD_LOG", "info")
        .stderr(std::fs::File::create(dir.join("mispd.log")).unwrap())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    while t.elapsed() < limit {
        if let Ok(k) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..k]).contains(until) {
                return (child, Some(t.elapsed()));
            }
        }
    }
    let log = std::fs::read_to_string(dir.join("mispd.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(10).collect();
    println!("  (no {until:?} within {limit:?}; the daemon's last log lines, newest first:)");
    for l in tail {
        println!("    {l}");
    }
    (child, None)
}

fn pages(n: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(42);
    let events: Vec<String> = (0..EVENTS).map(|_| support::uuid(&mut rng)).collect();
    (0..n.div_ceil(PAGE))
        .map(|p| {
            let attrs: Vec<_> = (p * PAGE..((p + 1) * PAGE).min(n))
                .map(|i| attribute(&mut rng, i, &events))
                .collect();
            serde_json::to_vec(&serde_json::json!({"response": {"Attribute": attrs}})).unwrap()
        })
        .collect()
}

fn main() {
    let n: usize = std::env::var("MISPD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    println!("ingest benchmark: {n} attributes in pages of {PAGE}");

    let t = Instant::now();
    let bodies = pages(n);
    let bytes: usize = bodies.iter().map(Vec::len).sum();
    println!(
        "  generated {} pages, {:.1} MB of restSearch JSON in {:.2} s",
        bodies.len(),
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );

    let settings: Settings = toml::from_str(&format!(
        "warninglists = [{:?}]\nallowlist = \"/nonexistent\"",
        repo.join("packaging/warninglists")
    ))
    .unwrap();
    let t = Instant::now();
    let (validator, _) = Validator::load(&settings, Protected::from_parts(vec![], vec![]));
    println!(
        "  warninglists loaded in {:.2} s",
        t.elapsed().as_secs_f64()
    );

    // Phase 1: decode each page and apply it to a fresh store, as a full sync does (room for
    // as many attributes as the store had before, the whole set on a resync). The peak
    // resident memory is reset first (`/proc/self/clear_refs`), so what this phase holds
    // beyond the store it builds (decoded pages waiting) shows on its own.
    let pid = std::process::id();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = support::status_kib(pid, "VmRSS:");
    let t0 = Instant::now();
    let mut store = Store::default();
    store.reserve(n);
    let (mut decode_only_s, mut store_s) = (0.0, 0.0);
    for body in &bodies {
        let t = Instant::now();
        let attributes = decode_rest_search(body).expect("decode").attributes;
        let t1 = Instant::now();
        decode_only_s += (t1 - t).as_secs_f64();
        for a in attributes {
            store.apply(a);
        }
        store_s += t1.elapsed().as_secs_f64();
    }
    let decode_s = t0.elapsed().as_secs_f64();
    let (rss_after, peak) = (
        support::status_kib(pid, "VmRSS:"),
        support::status_kib(pid, "VmHWM:"),
    );
    let page_mb = bodies.iter().map(Vec::len).max().unwrap_or(0) as f64 / 1e6;
    drop(bodies);
    // Phase 2: validate, with the worker's own `judge_all` (large sets across the cores).
    let t1 = Instant::now();
    let source: Arc<str> = Arc::from("bench");
    let selected: Vec<&Attribute> = store.iter().collect();
    let (accepted, rejected, _) = judge_all(&validator, &source, &selected, 1_800_000_000);
    drop(selected);
    let rejected = rejected.len();
    let validate_s = t1.elapsed().as_secs_f64();
    // Phase 3: index.
    let t2 = Instant::now();
    let accepted_n = accepted.len();
    let index = Index::build(accepted);
    let index_s = t2.elapsed().as_secs_f64();
    let total = decode_s + validate_s + index_s;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("  (each phase runs the daemon's own code; validation uses up to 4 of {cores} cores)");
    println!(
        "  decode+store   {:>8.2} s  {:>10.0} attributes/s  (decode {:.2} s, store.apply {:.2} s)",
        decode_s,
        n as f64 / decode_s,
        decode_only_s,
        store_s
    );
    println!(
        "  validate       {:>8.2} s  {:>10.0} attributes/s  ({} indicators, {} rejected)",
        validate_s,
        n as f64 / validate_s,
        accepted_n,
        rejected
    );
    println!(
        "  index build    {:>8.2} s  {:>10.0} indicators/s  ({} entries)",
        index_s,
        accepted_n as f64 / index_s,
        index.len()
    );
    println!(
        "  INGEST TOTAL   {:>8.2} s  {:>10.0} attributes/s  (target >= 500000)",
        total,
        n as f64 / total
    );
    // For comparison with earlier figures: the same validation on one core.
    let t = Instant::now();
    let one: usize = store
        .iter()
        .map(|a| validator.judge(&source, a, 1_800_000_000).accepted.len())
        .sum();
    let one_s = t.elapsed().as_secs_f64();
    println!(
        "  (validate on one core: {:.2} s, {:.0} attributes/s, {} indicators)",
        one_s,
        n as f64 / one_s,
        one
    );
    println!(
        "  decode+store memory: the store grew RSS by {} MB; the phase's peak was {} MB above its end (pages are {page_mb:.1} MB of JSON each)",
        rss_after.saturating_sub(rss_before) / 1024,
        peak.saturating_sub(rss_after) / 1024,
    );
    println!(
        "  peak RSS of this process so far: {} MB (the generated JSON included)",
        support::status_kib(std::process::id(), "VmHWM:") / 1024
    );
    drop(store);
    if std::env::var("MISPD_BENCH_DAEMON").is_ok_and(|v| v == "0") {
        return;
    }

    // Snapshot, then a cold start of the real daemon from it.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let t = Instant::now();
    snapshot::write(
        &state,
        &snapshot::Snapshot {
            generation: 1,
            index: Arc::new(index),
            sources: vec![snapshot::SourceSnapshot {
                name: "bench".into(),
                own: None,
                quarantine: vec![],
                held: None,
                held_change: None,
                last_success: Some(1_800_000_000),
            }],
        },
    )
    .unwrap();
    let snap_size = std::fs::metadata(state.join("snapshot")).unwrap().len();
    println!(
        "  snapshot written in {:.2} s, {:.1} MB",
        t.elapsed().as_secs_f64(),
        snap_size as f64 / 1e6
    );

    let config = dir.path().join("mispd.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nstate-dir = {state:?}\ncredentials-dir = {cred:?}\n[query]\nsocket = {sock:?}\n[validation]\nwarninglists = [{wl:?}]\nmax-added = 100000000\n\
             [[source]]\nname = \"bench\"\nkind = \"feed\"\nurl = {feed:?}\ninterval = \"1h\"\nfull-resync = \"1h\"\n",
            cred = dir.path().join("cred"),
            sock = dir.path().join("q.sock"),
            wl = repo.join("packaging/warninglists"),
            feed = dir.path().join("no-feed-here"),
        ),
    )
    .unwrap();
    Config::load(&config).expect("bench config");
    let (mut child, ready) = start_daemon(&config, dir.path(), "READY=1", Duration::from_secs(60));
    match ready {
        Some(d) => println!(
            "  COLD START from snapshot to READY=1: {:.2} s  (target < 2 s)",
            d.as_secs_f64()
        ),
        None => println!("  COLD START: no READY=1 within 60 s"),
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = support::status_kib(child.id(), "VmRSS:");
    println!(
        "  DAEMON RSS serving {n} attributes' indicators: {} MB ({:.0} bytes per attribute; target < 200 MB)",
        rss / 1024,
        rss as f64 * 1024.0 / n as f64
    );
    let _ = child.kill();
    let _ = child.wait();

    // Steady state: the same attributes as a local static feed, synced by the real daemon from
    // an empty state directory. Its worker writes the source's store (every live attribute) to
    // its store file for the next sync, so this is what a daemon holds after its first sync.
    let feed = dir.path().join("feed");
    let t = Instant::now();
    let feed_bytes = write_feed(&feed, n);
    println!(
        "  feed written: {EVENTS} event files, {:.1} MB in {:.1} s",
        feed_bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&state).unwrap();
    let synced_config = dir.path().join("mispd-feed.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("{:?}", dir.path().join("no-feed-here")),
        &format!("{feed:?}"),
    );
    std::fs::write(&synced_config, text).unwrap();
    let mut child = sync_and_measure(
        &synced_config,
        dir.path(),
        n,
        "after its own full sync",
        |d| {
            println!(
            "  FULL SYNC of the feed by the daemon (start to source ok): {:.2} s  ({:.0} attributes/s end to end)",
            d.as_secs_f64(),
            n as f64 / d.as_secs_f64()
        )
        },
    );
    let store_file = state.join("stores/bench.store");
    if let Ok(m) = std::fs::metadata(&store_file) {
        println!(
            "  the worker's store file: {:.1} MB ({:.0} bytes per attribute)",
            m.len() as f64 / 1e6,
            m.len() as f64 / n as f64
        );
    }
    let _ = child.kill();
    let _ = child.wait();

    // A restart with that state: the worker goes on from its store file (the feed is unchanged:
    // no event is fetched again) and re-publishes the whole set.
    let mut child = sync_and_measure(
        &synced_config,
        dir.path(),
        n,
        "after the restart's first sync",
        |d| {
            println!(
                "  RESTART with the store file, start to source ok: {:.2} s",
                d.as_secs_f64()
            )
        },
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Starts the daemon on `config` (state in `dir/state`), reports how long its source took to
/// be ok through `took`, lets the sync settle and reports its memory `when`.
fn sync_and_measure(
    config: &Path,
    dir: &Path,
    n: usize,
    when: &str,
    took: impl FnOnce(Duration),
) -> std::process::Child {
    let (child, synced) = start_daemon(config, dir, "bench ok", Duration::from_secs(300));
    match synced {
        Some(d) => took(d),
        None => println!("  {when}: the source was not ok within 300 s"),
    }
    settle(&dir.join("state"));
    report_memory(&child, n, &dir.join("q.sock"), when);
    child
}

/// Let the snapshot write and the memory release after a sync finish. (The worker writes its
/// store file and frees the store before the source is reported ok.)
fn settle(state: &Path) {
    assert!(state.join("stores/bench.store").exists(), "no store file");
    std::thread::sleep(Duration::from_secs(3));
}

fn report_memory(child: &std::process::Child, n: usize, sock: &Path, when: &str) {
    let rss = support::status_kib(child.id(), "VmRSS:");
    let hwm = support::status_kib(child.id(), "VmHWM:");
    println!(
        "  DAEMON RSS {when} (the index; the worker's store of {n} attributes is on disk): {} MB ({:.0} bytes per attribute); peak during the sync {} MB",
        rss / 1024,
        rss as f64 * 1024.0 / n as f64,
        hwm / 1024
    );
    if let Some((in_use, free)) = heap_metrics(sock) {
        println!(
            "  its heap (mallinfo2, /metrics): {} MB in use, {} MB freed but held",
            in_use / 1_000_000,
            free / 1_000_000
        );
    }
}

/// `mispd_heap_bytes` in use and free, read from the daemon's `/metrics`.
fn heap_metrics(sock: &Path) -> Option<(u64, u64)> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let value = |state: &str| {
        let key = format!("mispd_heap_bytes{{state=\"{state}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((value("in_use")?, value("free")?))
}
