//! `/metrics` in the Prometheus text format: what is served, lookups, request latency, and the
//! sync counters the supervisor feeds through [`crate::state::Metrics`].

use super::handlers::{Ctx, Resp};
use crate::model::{now_epoch, SourceStatus};
use crate::state::LATENCY_BUCKETS_US;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn head(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

pub(crate) fn render(ctx: &Ctx) -> String {
    let view = ctx.shared.load();
    let m = ctx.shared.metrics();
    let mut o = String::with_capacity(4096);
    head(
        &mut o,
        "mispd_generation",
        "gauge",
        "Generation of the published set.",
    );
    let _ = writeln!(o, "mispd_generation {}", view.generation);
    head(
        &mut o,
        "mispd_indicators",
        "gauge",
        "Published indicator records by source and MISP type.",
    );
    for (source, ty, n) in view.index.counts() {
        let _ = writeln!(
            o,
            "mispd_indicators{{source=\"{}\",type=\"{}\"}} {n}",
            label(source),
            label(ty)
        );
    }
    head(
        &mut o,
        "mispd_values",
        "gauge",
        "Distinct published values.",
    );
    let _ = writeln!(o, "mispd_values {}", view.index.values());
    head(
        &mut o,
        "mispd_quarantined",
        "gauge",
        "Values held in quarantine, by source and reason code.",
    );
    let mut by_reason: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for r in view.quarantine.iter() {
        *by_reason.entry((&r.source, &r.reason.code)).or_default() += 1;
    }
    for ((source, reason), n) in by_reason {
        let _ = writeln!(
            o,
            "mispd_quarantined{{source=\"{}\",reason=\"{}\"}} {n}",
            label(source),
            label(reason)
        );
    }
    head(
        &mut o,
        "mispd_source_state",
        "gauge",
        "1 for the current state of each source.",
    );
    for s in &view.sources {
        let _ = writeln!(
            o,
            "mispd_source_state{{source=\"{}\",state=\"{}\"}} 1",
            label(&s.name),
            s.state.as_str()
        );
    }
    let now = now_epoch();
    sources(&mut o, &view.sources, now);
    if let Some(age) = snapshot_age(m.snapshot_written.load(Relaxed), now) {
        head(
            &mut o,
            "mispd_snapshot_age_seconds",
            "gauge",
            "Seconds since the on-disk snapshot was last written (it is written when what is served changes).",
        );
        let _ = writeln!(o, "mispd_snapshot_age_seconds {age}");
    }
    let counters = [
        ("mispd_lookups_total", "Values looked up.", &m.lookups),
        (
            "mispd_lookup_hits_total",
            "Lookups that found the value listed.",
            &m.lookup_hits,
        ),
        (
            "mispd_requests_total",
            "HTTP requests on the query socket.",
            &m.requests,
        ),
        (
            "mispd_request_errors_total",
            "Requests answered with a 4xx or 5xx status.",
            &m.request_errors,
        ),
        (
            "mispd_connections_denied_total",
            "Connections refused by peer credentials.",
            &m.denied_connections,
        ),
        (
            "mispd_connections_rejected_total",
            "Connections refused at the connection limit.",
            &m.rejected_connections,
        ),
        (
            "mispd_breaker_trips_total",
            "Mass-change breakers tripped.",
            &m.breaker_trips,
        ),
        (
            "mispd_rejections_total",
            "Values rejected by validation.",
            &m.rejections,
        ),
        (
            "mispd_snapshot_write_failures_total",
            "Snapshot writes that failed (state directory full or not writable).",
            &m.snapshot_failures,
        ),
    ];
    for (name, help, c) in counters {
        head(&mut o, name, "counter", help);
        let _ = writeln!(o, "{name} {}", c.load(Relaxed));
    }
    let name = "mispd_request_duration_seconds";
    head(
        &mut o,
        name,
        "histogram",
        "Time to answer a request on the query socket.",
    );
    let mut cumulative = 0;
    for (i, le) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += m.latency_buckets[i].load(Relaxed);
        let _ = writeln!(
            o,
            "{name}_bucket{{le=\"{}\"}} {cumulative}",
            *le as f64 / 1e6
        );
    }
    cumulative += m.latency_buckets[LATENCY_BUCKETS_US.len()].load(Relaxed);
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(
        o,
        "{name}_sum {}",
        m.latency_sum_us.load(Relaxed) as f64 / 1e6
    );
    let _ = writeln!(o, "{name}_count {cumulative}");
    if let Some(h) = crate::sys::heap_usage() {
        head(
            &mut o,
            "mispd_heap_bytes",
            "gauge",
            "Heap bytes in use, and freed but still held by the allocator.",
        );
        let _ = writeln!(o, "mispd_heap_bytes{{state=\"in_use\"}} {}", h.in_use);
        let _ = writeln!(o, "mispd_heap_bytes{{state=\"free\"}} {}", h.free);
    }
    o
}

/// Per-source sync figures: syncs by outcome, the last sync's duration, the last success, and
/// the size of a held change.
fn sources(o: &mut String, sources: &[SourceStatus], now: i64) {
    head(
        o,
        "mispd_syncs_total",
        "counter",
        "Syncs since the daemon started, by source and outcome (ok, failed).",
    );
    for s in sources {
        let name = label(&s.name);
        let _ = writeln!(
            o,
            "mispd_syncs_total{{source=\"{name}\",outcome=\"ok\"}} {}",
            s.syncs_ok
        );
        let _ = writeln!(
            o,
            "mispd_syncs_total{{source=\"{name}\",outcome=\"failed\"}} {}",
            s.syncs_failed
        );
    }
    head(
        o,
        "mispd_sync_duration_seconds",
        "gauge",
        "How long the last completed sync of a source took (fetch, decode, validation).",
    );
    for s in sources {
        if let Some(t) = s.last_sync_seconds {
            let _ = writeln!(
                o,
                "mispd_sync_duration_seconds{{source=\"{}\"}} {t}",
                label(&s.name)
            );
        }
    }
    head(
        o,
        "mispd_data_age_seconds",
        "gauge",
        "Seconds since the last successful sync of a source (of the data served for it).",
    );
    for s in sources {
        if let Some(t) = s.last_success_epoch {
            let _ = writeln!(
                o,
                "mispd_data_age_seconds{{source=\"{}\"}} {}",
                label(&s.name),
                (now - t).max(0)
            );
        }
    }
    head(
        o,
        "mispd_held_change_values",
        "gauge",
        "Values a held mass change would add or remove (0 when nothing is held).",
    );
    for s in sources {
        let (added, removed) = s.held.as_ref().map_or((0, 0), |h| (h.added, h.removed));
        let name = label(&s.name);
        let _ = writeln!(
            o,
            "mispd_held_change_values{{source=\"{name}\",change=\"added\"}} {added}"
        );
        let _ = writeln!(
            o,
            "mispd_held_change_values{{source=\"{name}\",change=\"removed\"}} {removed}"
        );
    }
}

/// Seconds since the snapshot was written, when there is one (`written` 0: none).
fn snapshot_age(written: i64, now: i64) -> Option<i64> {
    (written > 0).then(|| (now - written).max(0))
}

pub(crate) fn respond(ctx: &Ctx) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(render(ctx))).boxed());
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    r
}
