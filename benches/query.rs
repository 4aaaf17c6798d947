//! Query service benchmark (`cargo bench --bench query`): one million realistic indicators,
//! served on a real Unix socket in-process, against a bare hyper responder as the floor.
//! Prints figures; docs/performance.md records a run and how to read it.

mod support;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use mispd::index::Index;
use mispd::model::{Indicator, Kind, Provenance};
use mispd::query::{self, Settings};
use mispd::state::{Shared, View, WarninglistOracle};
use mispd::validate::{Protected, Validator};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const N: usize = 1_000_000;

/// CPU time this thread has run, from the scheduler's accounting (`/proc/thread-self/schedstat`,
/// nanoseconds): on a loaded machine a rate over it drifts less than one over wall-clock time.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(
        stat.split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .unwrap_or(0),
    )
}

fn rss_kib() -> u64 {
    support::status_kib(std::process::id(), "VmRSS:")
}

/// Indicators shaped like a few large MISP feeds: 5000 events over 3 sources, each value with
/// its own attribute uuid, 10% of values listed by two sources.
fn generate() -> Vec<Indicator> {
    let mut rng = fastrand::Rng::with_seed(7);
    let sources: Vec<Arc<str>> = ["circl-osint", "botvrij", "internal-misp"]
        .iter()
        .map(|s| Arc::from(*s))
        .collect();
    let events: Vec<Arc<str>> = (0..5000)
        .map(|_| Arc::from(support::uuid(&mut rng)))
        .collect();
    let tag_sets: Vec<Arc<[Arc<str>]>> = vec![
        Arc::from(vec![Arc::<str>::from("tlp:white")]),
        Arc::from(vec![
            Arc::<str>::from("tlp:green"),
            Arc::<str>::from("misp-galaxy:threat-actor=\"APT 28\""),
        ]),
        Arc::from(vec![Arc::<str>::from(
            "osint:source-type=\"block-or-filter-list\"",
        )]),
    ];
    let types: Vec<Arc<str>> = [
        "domain", "hostname", "ip-dst", "ip-src", "url", "md5", "sha1", "sha256",
    ]
    .iter()
    .map(|s| Arc::from(*s))
    .collect();
    let category: Arc<str> = Arc::from("Network activity");
    let words = [
        "login", "secure", "update", "cdn", "mail", "pay", "account", "verify",
    ];
    let tlds = ["com", "net", "org", "ru", "info", "xyz", "top", "io"];
    let mut out = Vec::with_capacity(N + N / 10);
    for i in 0..N {
        let r = rng.u32(..100);
        let (value, kind, t) = if r < 40 {
            let name = format!(
                "{}-{}{}.{}",
                words[rng.usize(..words.len())],
                rng.u32(..1_000_000),
                i,
                tlds[rng.usize(..tlds.len())]
            );
            if r < 30 {
                (name, Kind::Domain, 0)
            } else {
                (format!("www.{name}"), Kind::Hostname, 1)
            }
        } else if r < 64 {
            let ip = std::net::Ipv4Addr::from(rng.u32(0x0100_0000..0xdf00_0000));
            if r == 63 {
                let net = ipnet::Ipv4Net::new(ip, rng.u8(16..=28)).unwrap().trunc();
                (net.to_string(), Kind::Cidr, 2)
            } else {
                (ip.to_string(), Kind::Ip, 2 + (r & 1) as usize)
            }
        } else if r < 70 {
            let ip = std::net::Ipv6Addr::from((0x2a00u128 << 112) | rng.u128(..1 << 100));
            if r == 69 {
                let net = ipnet::Ipv6Net::new(ip, 48).unwrap().trunc();
                (net.to_string(), Kind::Cidr, 2)
            } else {
                (ip.to_string(), Kind::Ip, 3)
            }
        } else if r < 85 {
            (
                format!(
                    "http://{}{}.{}/{}/{}.php?id={}",
                    words[rng.usize(..words.len())],
                    rng.u32(..100_000),
                    tlds[rng.usize(..tlds.len())],
                    words[rng.usize(..words.len())],
                    i,
                    rng.u32(..1000)
                ),
                Kind::Url,
                4,
            )
        } else {
            let (len, t) = [(32, 5), (40, 6), (64, 7)][rng.usize(..3)];
            let mut h = format!("{:032x}{:032x}", rng.u128(..), rng.u128(..));
            h.truncate(len);
            (h, Kind::Hash, t)
        };
        let ev = rng.usize(..events.len());
        let mut prov = Provenance {
            source: sources[ev % 2].clone(),
            event_uuid: Some(events[ev].clone()),
            attribute_uuid: Arc::from(support::uuid(&mut rng)),
            misp_type: types[t].clone(),
            category: category.clone(),
            tags: tag_sets[ev % 3].clone(),
            timestamp: 1_700_000_000 + i as i64,
            to_ids: true,
        };
        if i % 10 == 0 {
            out.push(Indicator {
                value: value.clone().into(),
                kind,
                provenance: prov.clone(),
                notes: Vec::new(),
            });
            prov.source = sources[2].clone();
            prov.attribute_uuid = Arc::from(support::uuid(&mut rng));
        }
        out.push(Indicator {
            value: value.into(),
            kind,
            provenance: prov,
            notes: Vec::new(),
        });
    }
    out
}

/// Queries taken from the index after it is built (so they are not interleaved with the freed
/// input on the heap): every fourth listed value, each followed by a miss or an indirect hit.
fn queries(index: &Index) -> Vec<String> {
    let mut mixed = Vec::with_capacity(index.values() / 2);
    let mut rng = fastrand::Rng::with_seed(11);
    let mut listed: Vec<&str> = index.entries().step_by(4).map(|e| e.value()).collect();
    rng.shuffle(&mut listed);
    for (i, q) in listed.into_iter().enumerate() {
        mixed.push(q.to_string());
        mixed.push(match i % 4 {
            0 => format!("sub.unlisted-{i}.example"),
            1 => format!("10.{}.{}.{}", i % 250, (i / 250) % 250, i % 7),
            2 => format!("deep.sub.{q}"),
            _ => format!("{:064x}", i),
        });
    }
    mixed
}

/// A hyper server on a Unix socket that answers every request with a fixed small JSON body:
/// the cost of the transport alone. It runs on a query runtime like mispd's, busy-polling alike.
fn floor_server(path: PathBuf, busy: Duration) {
    let (rt, poll) = query::runtime::build(busy).unwrap();
    let listener = {
        let _guard = rt.enter();
        tokio::net::UnixListener::bind(&path).unwrap()
    };
    std::thread::spawn(move || {
        rt.block_on(async move {
            use std::os::fd::AsFd;
            if let Some(p) = &poll {
                p.watch(listener.as_fd());
            }
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                if let Some(p) = &poll {
                    p.watch(stream.as_fd());
                }
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        let mut r = Response::new(Full::new(Bytes::from_static(
                            br#"{"value":"x","listed":false,"matches":[]}"#,
                        )));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    });
}

/// A minimal blocking HTTP/1.1 client on one keep-alive Unix-socket connection, run on its own
/// OS thread: it writes a request and reads one `Content-Length` response. A client this thin
/// keeps the measurement about the server, as an external load generator would. A spinning
/// client polls its non-blocking socket instead of sleeping in `read`, as load generators built
/// on a spinning scheduler (Go's) effectively do.
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    spin: bool,
}

impl Client {
    fn connect(path: &Path) -> Client {
        Client {
            stream: UnixStream::connect(path).unwrap(),
            buf: Vec::with_capacity(1 << 16),
            spin: false,
        }
    }

    fn spinning(path: &Path) -> Client {
        let c = Client::connect(path);
        c.stream.set_nonblocking(true).unwrap();
        Client { spin: true, ..c }
    }

    fn read(&mut self, chunk: &mut [u8]) -> usize {
        loop {
            match self.stream.read(chunk) {
                Ok(k) => return k,
                Err(e) if self.spin && e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::hint::spin_loop()
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    fn send(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.stream.write(bytes) {
                Ok(k) => bytes = &bytes[k..],
                Err(e) if self.spin && e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::hint::spin_loop()
                }
                Err(e) => panic!("write: {e}"),
            }
        }
    }

    fn get(&mut self, uri: &str) -> (u16, usize) {
        let req = format!("GET {uri} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        self.send(req.as_bytes());
        self.response()
    }

    fn post(&mut self, uri: &str, body: &[u8]) -> (u16, usize) {
        let head = format!(
            "POST {uri} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.send(head.as_bytes());
        self.send(body);
        self.response()
    }

    /// Reads one response; returns its status and body length.
    fn response(&mut self) -> (u16, usize) {
        self.buf.clear();
        let mut chunk = [0u8; 1 << 16];
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let k = self.read(&mut chunk);
            assert!(k > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..k]);
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).unwrap();
        let status: u16 = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("a Content-Length response");
        while self.buf.len() < head_end + len {
            let k = self.read(&mut chunk);
            assert!(k > 0, "server closed the connection");
            self.buf.extend_from_slice(&chunk[..k]);
        }
        assert_eq!(self.buf.len(), head_end + len, "no pipelining here");
        (status, len)
    }
}

struct Run {
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    errors: usize,
}

fn single(path: &Path, uris: &[String], spin: bool) -> Run {
    let mut c = if spin {
        Client::spinning(path)
    } else {
        Client::connect(path)
    };
    for u in uris.iter().take(2000) {
        c.get(u);
    }
    let mut lat = Vec::with_capacity(uris.len());
    let mut errors = 0;
    let start = Instant::now();
    for u in uris {
        let t = Instant::now();
        let (status, _) = c.get(u);
        lat.push(t.elapsed());
        errors += usize::from(status != 200);
    }
    let total = start.elapsed();
    lat.sort_unstable();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;
    Run {
        per_sec: uris.len() as f64 / total.as_secs_f64(),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

fn main() {
    let rss0 = rss_kib();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} CPUs, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let t = Instant::now();
    let indicators = generate();
    let records = indicators.len();
    println!(
        "generated {records} indicator records ({N} values) in {:.2?}; RSS {} MiB",
        t.elapsed(),
        rss_kib() / 1024
    );
    let t = Instant::now();
    let index = Index::build(indicators);
    let build = t.elapsed();
    let rss_built = rss_kib();
    println!(
        "index build: {build:.2?}; index heap ~{} MiB ({:.0} B/record); RSS after build {} MiB (started at {} MiB)",
        index.heap_bytes() / (1 << 20),
        index.heap_bytes() as f64 / records as f64,
        rss_built / 1024,
        rss0 / 1024
    );

    // glibc keeps the freed input records mapped; the daemon trims after publishing.
    mispd::sys::release_free_memory();
    println!(
        "RSS after malloc_trim(0): {} MiB ({:.0} B per record)",
        rss_kib() / 1024,
        rss_kib() as f64 * 1024.0 / records as f64
    );

    // Lookups also report warninglist hits for the queried value, as the daemon does: load the
    // shipped lists behind the same oracle the supervisor publishes.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wl: mispd::validate::Settings = toml::from_str(&format!(
        "warninglists = [{:?}]\nallowlist = \"/nonexistent\"",
        repo.join("packaging/warninglists")
    ))
    .unwrap();
    let before = rss_kib();
    let (validator, _) = Validator::load(&wl, Protected::from_parts(vec![], vec![]));
    mispd::sys::release_free_memory();
    println!(
        "warninglists loaded ({} lists): +{} MiB RSS",
        validator.stats().warninglists,
        rss_kib().saturating_sub(before) / 1024
    );
    let queries = queries(&index);
    // The warninglist check alone, per kind of query value.
    let mut by_kind: Vec<(&str, Vec<&String>)> = ["ip", "url", "hash", "name"]
        .iter()
        .map(|k| (*k, Vec::new()))
        .collect();
    for q in queries.iter().take(200_000) {
        let k = if q.parse::<std::net::IpAddr>().is_ok() || q.contains('/') && !q.contains("://") {
            0
        } else if q.contains("://") {
            1
        } else if q.len() >= 32 && q.bytes().all(|b| b.is_ascii_hexdigit()) {
            2
        } else {
            3
        };
        by_kind[k].1.push(q);
    }
    let mut parts = Vec::new();
    let t = Instant::now();
    for (kind, qs) in &by_kind {
        let tk = Instant::now();
        let mut n = 0usize;
        for q in qs {
            n += validator.warninglist_hits(q).len();
        }
        parts.push(format!(
            "{kind} {:.0}/s ({n} hits)",
            qs.len() as f64 / tk.elapsed().as_secs_f64().max(1e-9)
        ));
    }
    println!(
        "warninglists only: {:.0} checks/s over 200000 queries; {}",
        200_000.0 / t.elapsed().as_secs_f64(),
        parts.join(", ")
    );
    let oracle: Arc<dyn WarninglistOracle> = Arc::new(ArcSwap::from_pointee(validator));

    // The index alone, no transport: lookups, and lookups with warninglists and JSON encoding.
    let t = Instant::now();
    let mut hits = 0usize;
    for q in queries.iter().take(200_000) {
        hits += usize::from(index.lookup(q).listed);
    }
    let took = t.elapsed();
    println!(
        "index only: {:.0} lookups/s ({hits} of 200000 listed)",
        200_000.0 / took.as_secs_f64()
    );
    let view = View {
        generation: 1,
        index: Arc::new(index),
        warninglists: Some(oracle),
        ..View::default()
    };
    let t = Instant::now();
    let mut bytes = 0usize;
    let mut out = Vec::new();
    for q in queries.iter().take(200_000) {
        out.clear();
        query::write_lookup(&mut out, &view, q);
        bytes += out.len();
    }
    println!(
        "index + warninglists + JSON: {:.0} lookups/s ({} bytes/answer)",
        200_000.0 / t.elapsed().as_secs_f64(),
        bytes / 200_000
    );

    // The same answers written a batch at a time, as `POST /v1/lookup` does on each core: the
    // next values' index memory is requested while one is resolved.
    let batched = |out: &mut Vec<u8>| {
        let (t, cpu) = (Instant::now(), thread_cpu());
        for chunk in queries[..200_000].chunks(1000) {
            out.clear();
            query::write_lookups(out, &view, chunk);
        }
        (
            200_000.0 / t.elapsed().as_secs_f64(),
            200_000.0 / (thread_cpu() - cpu).as_secs_f64(),
        )
    };
    println!(
        "the same in batches of 1000: {:.0} lookups/s",
        batched(&mut out).0
    );

    // MISPD_BENCH_IN_PROCESS_ONLY=N: repeat the encoded lookups N times more and stop there,
    // for profiling the lookup path alone.
    if let Ok(n) = std::env::var("MISPD_BENCH_IN_PROCESS_ONLY") {
        let n: usize = n.parse().expect("MISPD_BENCH_IN_PROCESS_ONLY=N: a count");
        // Each round's rate, reported as the median and the best: on a shared VM a mean mixes
        // in whatever else ran, which made one build look 20 % faster than itself.
        // One value at a time and in batches, round by round alternately; rates over wall-clock
        // and over this thread's CPU time.
        let (mut rates, mut batch_rates) = (Vec::new(), Vec::new());
        for _ in 0..n.max(1) {
            let (t, cpu) = (Instant::now(), thread_cpu());
            for q in queries.iter().take(200_000) {
                out.clear();
                query::write_lookup(&mut out, &view, q);
            }
            rates.push((
                200_000.0 / t.elapsed().as_secs_f64(),
                200_000.0 / (thread_cpu() - cpu).as_secs_f64(),
            ));
            batch_rates.push(batched(&mut out));
        }
        for (label, rates) in [("", rates), (" in batches of 1000", batch_rates)] {
            let mid = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let wall = mid(rates.iter().map(|r| r.0).collect());
            let cpu = mid(rates.iter().map(|r| r.1).collect());
            println!(
                "index + warninglists + JSON{label}, {} more rounds: median {wall:.0} lookups/s, {cpu:.0} per CPU-second",
                rates.len(),
            );
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        socket: dir.path().join("query.sock"),
        max_batch: 1000,
        max_body_bytes: 4 << 20,
        ..Settings::default()
    };
    let (admin, _admin_rx) = tokio::sync::mpsc::channel(1);
    let shared = Shared::new(view, admin);
    // The server side runs as in the daemon: `query::Service`, a thread and runtime of its own
    // that busy-polls for at most `query.busy-poll` (default 50 us; MISPD_BENCH_BUSY_POLL overrides)
    // before it sleeps. A second service and floor that never busy-poll show what it buys.
    let busy = std::env::var("MISPD_BENCH_BUSY_POLL")
        .ok()
        .map(|s| humantime::parse_duration(&s).unwrap())
        .unwrap_or(Settings::default().busy_poll.0);
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut services = Vec::new();
    let mut serve = |name: &str, busy: Duration| {
        let settings = Settings {
            socket: dir.path().join(format!("{name}.sock")),
            busy_poll: query::HumanDuration(busy),
            ..settings.clone()
        };
        let listener = query::bind(&settings).unwrap();
        services.push(
            query::Service::start(listener, shared.clone(), settings.clone(), stop_rx.clone())
                .unwrap(),
        );
        let floor = dir.path().join(format!("{name}-floor.sock"));
        floor_server(floor.clone(), busy);
        (settings.socket, floor)
    };
    let (sock, floor_sock) = serve("polling", busy);
    let (sock_np, floor_np) = serve("sleeping", Duration::ZERO);
    std::thread::sleep(Duration::from_millis(100));

    let uris: Vec<String> = queries
        .iter()
        .take(100_000)
        .map(|q| format!("/v1/lookup?value={}", query::client::encode(q)))
        .collect();
    // Sanity: half the queries are listed values.
    let (_, len) = Client::connect(&sock).get(&uris[0]);
    assert!(len > 100, "the first query is a listed value");

    // Alternate floor and mispd runs so that load from elsewhere hits both alike; report the
    // median round of each.
    let median = |mut v: Vec<Run>| {
        v.sort_by(|a, b| a.per_sec.total_cmp(&b.per_sec));
        v.swap_remove(v.len() / 2)
    };
    // MISPD_BENCH_PHASES=single,sparse,batch,many (the default: all) picks the phases to run.
    let phases = std::env::var("MISPD_BENCH_PHASES").unwrap_or_default();
    let want = |phase: &str| phases.is_empty() || phases.split(',').any(|p| p.trim() == phase);
    let mut one_connection = 0.0;
    for (label, sock, floor_sock, spin) in [
        (
            format!(
                "busy-poll {}, blocking client",
                humantime::format_duration(busy)
            ),
            &sock,
            &floor_sock,
            false,
        ),
        (
            "busy-poll off, blocking client".to_string(),
            &sock_np,
            &floor_np,
            false,
        ),
        (
            format!(
                "busy-poll {}, spinning client",
                humantime::format_duration(busy)
            ),
            &sock,
            &floor_sock,
            true,
        ),
    ] {
        if !want("single") {
            break;
        }
        let mut floors = Vec::new();
        let mut reals = Vec::new();
        for round in 0..5 {
            let part = &uris[round * 20_000..(round + 1) * 20_000];
            floors.push(single(floor_sock, part, spin));
            reals.push(single(sock, part, spin));
        }
        let errors: usize = reals.iter().map(|r| r.errors).sum();
        // Each mispd round against the floor round just before it: the spread shows how much
        // of a difference between two runs is this machine's drift.
        let ratios: Vec<String> = floors
            .iter()
            .zip(&reals)
            .map(|(f, r)| format!("{:.0}", 100.0 * r.per_sec / f.per_sec))
            .collect();
        let (floor, real) = (median(floors), median(reals));
        if one_connection == 0.0 {
            one_connection = real.per_sec;
        }
        println!("single lookups, one keep-alive connection, {label}:");
        println!(
            "  floor  (bare hyper): {:>9.0} req/s  p50 {:>5.1} us  p99 {:>5.1} us   (median of 5 rounds of 20000)",
            floor.per_sec, floor.p50_us, floor.p99_us
        );
        println!(
            "  lookup (mispd):      {:>9.0} req/s  p50 {:>5.1} us  p99 {:>5.1} us  errors {errors}  = {:.0}% of floor",
            real.per_sec,
            real.p50_us,
            real.p99_us,
            100.0 * real.per_sec / floor.per_sec
        );
        println!("  round by round, % of floor: {}", ratios.join(" "));
    }

    // What busy-polling costs: CPU of the query threads while one client sends 1000 requests/s
    // spaced out (each followed by an idle millisecond), polling and not.
    for (label, sock) in [("busy-poll on ", &sock), ("busy-poll off", &sock_np)] {
        if !want("sparse") {
            break;
        }
        let mut c = Client::connect(sock);
        let before = query_threads_cpu();
        let start = Instant::now();
        let n = 3000;
        for (i, u) in uris.iter().take(n).enumerate() {
            c.get(u);
            let next = start + Duration::from_millis(i as u64 + 1);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        let cpu = query_threads_cpu().saturating_sub(before);
        let wall = start.elapsed();
        println!(
            "sparse, {label}: {n} requests at {:.0}/s: query threads used {:.1}% of a core ({:.0} us CPU per request)",
            n as f64 / wall.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64
        );
    }

    // Batches of 1000 values per request, over one connection.
    let bodies: Vec<Vec<u8>> = queries
        .chunks(1000)
        .take(300)
        .map(|c| serde_json::to_vec(&serde_json::json!({ "values": c })).unwrap())
        .collect();
    // 300 requests of 1000 values each, after 20 to warm up: values/s and answer size.
    let batches = |sock: &Path| {
        let mut c = Client::connect(sock);
        for b in bodies.iter().take(20) {
            c.post("/v1/lookup", b);
        }
        let start = Instant::now();
        let mut answer_bytes = 0;
        for b in &bodies {
            let (status, len) = c.post("/v1/lookup", b);
            assert_eq!(status, 200);
            answer_bytes += len;
        }
        (
            bodies.len() as f64 * 1000.0 / start.elapsed().as_secs_f64(),
            answer_bytes / bodies.len(),
        )
    };
    // Polling and sleeping service in alternation, three rounds each, median of each.
    let (mut polled, mut slept) = (Vec::new(), Vec::new());
    let mut answer_bytes = 0;
    for _ in 0..if want("batch") { 3 } else { 0 } {
        let (rate, bytes) = batches(&sock);
        polled.push(rate);
        answer_bytes = bytes;
        slept.push(batches(&sock_np).0);
    }
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    if want("batch") {
        println!(
        "batched: {:.0} values/s (busy-poll off: {:.0}; median of 3 rounds of {} requests of 1000 values, {} KiB per answer)",
        mid(polled),
        mid(slept),
        bodies.len(),
            answer_bytes / 1024
        );
    }

    // 256 concurrent keep-alive connections, one client thread each.
    if !want("many") {
        return;
    }
    let uris = Arc::new(uris);
    let start = Instant::now();
    let threads: Vec<_> = (0..256usize)
        .map(|c| {
            let uris = uris.clone();
            let sock = sock.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&sock);
                let mut errors = 0;
                for i in 0..400 {
                    let (status, _) = client.get(&uris[(c * 400 + i) % uris.len()]);
                    errors += usize::from(status != 200);
                }
                errors
            })
        })
        .collect();
    let errors: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let took = start.elapsed();
    println!(
        "256 connections x 400 lookups: {:.0} req/s, errors {errors} (one connection: {:.0} req/s)",
        256.0 * 400.0 / took.as_secs_f64(),
        one_connection
    );
    let rss = rss_kib();
    println!(
        "resident memory after the runs: {} MiB ({:.0} B per indicator record, whole process incl. warninglists and the test clients)",
        rss / 1024,
        rss as f64 * 1024.0 / records as f64
    );
}

/// CPU time of this process's threads named `mispd-query` (the query services' threads and
/// their blocking pools), in nanoseconds from the scheduler's own accounting
/// (`/proc/self/task/*/schedstat`), not in 10 ms clock ticks.
fn query_threads_cpu() -> Duration {
    let mut total = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "mispd-query" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(total)
}
