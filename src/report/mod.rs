//! Reports of load-test runs: the terminal table, the `ANCHOR` line for the anchors harness,
//! run-to-run comparison, and a self-contained HTML page with charts.

pub mod documents;
pub mod html;
pub mod markdown;
mod svg;
pub mod tune_html;

use std::fmt::Write as _;

use crate::loadgen::result::SloVerdict;
use crate::loadgen::{RunReport, StageReport};
use crate::vocab::load::format_error_rate;

pub use html::html;

fn rate_label(s: &StageReport) -> String {
    match s.target_rate {
        Some(r) => format!("{}/s", crate::vocab::load::format_rate(r)),
        None => "max".into(),
    }
}

use crate::vocab::load::format_ms as f;

fn pad_table(rows: &[Vec<String>], right: &[bool]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let w = widths[c];
            if c > 0 {
                line.push_str("  ");
            }
            // Padded by hand: `{:>w$}` panics for widths above u16::MAX (a long stage name).
            let pad = w.saturating_sub(cell.chars().count());
            if right.get(c).copied().unwrap_or(true) {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A stage's error rate in percent, as the table shows it.
fn error_pct(rate: f64) -> String {
    if rate == 0.0 {
        "0".into()
    } else if rate < 0.0001 {
        format!("{:.4}", rate * 100.0)
    } else if rate < 0.01 {
        format!("{:.2}", rate * 100.0)
    } else {
        format!("{:.1}", rate * 100.0)
    }
}

/// One SLO verdict as a line: the objective, met or MISSED, and what was observed.
fn slo_line(v: &SloVerdict, s: &StageReport) -> String {
    let verdict = if v.met { "met" } else { "MISSED" };
    match v.limit_error_rate {
        Some(limit) => format!(
            "SLO errors <= {}: {verdict} ({} of {} failed, {})",
            format_error_rate(limit),
            s.errors_total,
            s.requests,
            format_error_rate(v.observed_error_rate.unwrap_or(s.error_rate))
        ),
        None => {
            let observed = if v.observed_ms >= 0.0 {
                let counted = if s.errors_total > 0 {
                    format!(", {} failed requests counted as too slow", s.errors_total)
                } else {
                    String::new()
                };
                format!("{} ms{counted}", f(v.observed_ms))
            } else if s.requests == 0 {
                "no request completed".into()
            } else {
                format!(
                    "{} of requests failed: the {} request never completed",
                    format_error_rate(s.error_rate),
                    v.slo
                )
            };
            format!("SLO {} <= {} ms: {verdict} ({observed})", v.slo, v.limit_ms)
        }
    }
}

/// The terminal table: one row per stage (latencies in ms, from the intended send time),
/// then SLO verdicts, errors by kind, bottleneck warnings and the capacity result.
pub fn stage_table(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} {} model={} connections={} arrival={}{}",
        r.protocol,
        r.target,
        r.model,
        r.connections,
        match r.arrival {
            crate::vocab::load::Arrival::Constant => "constant",
            crate::vocab::load::Arrival::Poisson => "poisson",
        },
        if r.workers > 1 {
            format!(" workers={}", r.workers)
        } else {
            String::new()
        }
    );
    let mut rows = vec![
        [
            "stage", "rate", "achieved", "requests", "errors", "err %", "p50", "p90", "p99",
            "p99.9", "max", "mean", "svc p99", "lag p99",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    for s in &r.stages {
        rows.push(vec![
            s.name.clone(),
            rate_label(s),
            format!("{:.1}/s", s.achieved_rate),
            s.requests.to_string(),
            s.errors_total.to_string(),
            error_pct(s.error_rate),
            f(s.latency_ms.p50),
            f(s.latency_ms.p90),
            f(s.latency_ms.p99),
            f(s.latency_ms.p999),
            f(s.latency_ms.max),
            f(s.latency_ms.mean),
            f(s.service_time_ms.p99),
            f(s.generator_lag_ms.p99),
        ]);
    }
    let mut right = vec![true; 14];
    right[0] = false;
    out.push_str(&pad_table(&rows, &right));
    out.push_str("latencies in ms from the intended send time; svc = from the actual send; lag = generator lateness\n");
    out.push_str(&server_table(r));
    for s in &r.stages {
        if s.closed_loop {
            let _ = writeln!(
                out,
                "{}: closed loop (--rate max): each connection sends when its reply arrives; latency = service time",
                s.name
            );
        }
        for v in &s.slos {
            let _ = writeln!(out, "{}: {}", s.name, slo_line(v, s));
        }
        if !s.errors.is_empty() {
            let kinds: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k}={n}")).collect();
            let _ = writeln!(out, "{}: errors {}", s.name, kinds.join(" "));
        }
        if let Some(b) = &s.bottleneck {
            let _ = writeln!(
                out,
                "{}: WARNING the load generator was the bottleneck: {b}",
                s.name
            );
        }
        if s.queue_wait_ms.p99 > 1.0 && !s.closed_loop {
            let _ = writeln!(
                out,
                "{}: all connections were busy at times: requests waited up to {} ms for one (p99 {} ms); the wait counts in latency",
                s.name,
                f(s.queue_wait_ms.max),
                f(s.queue_wait_ms.p99)
            );
        }
    }
    if !r.worker_diagnostics.is_empty() {
        out.push_str(&worker_table(r));
    }
    if let Some(a) = &r.answers {
        let _ = writeln!(out, "{}", a.summary());
    }
    if let Some(why) = &r.invalid {
        let _ = writeln!(
            out,
            "INVALID RUN: {why}. It is stored and shown, but no verdict (SLO exit status, capacity, tune ranking, baseline) uses it."
        );
    }
    if let Some(c) = &r.capacity {
        for p in &c.probes {
            let _ = writeln!(
                out,
                "probe {:>2}: {:>10.1} req/s  {}{}",
                p.stage + 1,
                p.rate,
                if p.passed { "held" } else { "failed" },
                if p.reason.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", p.reason)
                }
            );
        }
        match c.rate {
            Some(rate) => {
                let _ = writeln!(
                    out,
                    "capacity: {rate:.1} req/s (the highest probed rate whose SLOs held)"
                );
            }
            None => {
                let _ = writeln!(out, "capacity: none (no probed rate held its SLOs)");
            }
        }
    }
    out
}

/// A distributed run's workers, one row each: start lateness, clock offset (± half the
/// round trip it was measured with), achieved rate, generator lag p99, errors, restarts.
pub fn worker_table(r: &RunReport) -> String {
    let mut rows = vec![
        [
            "worker", "pod", "late ms", "clock ms", "req/s", "lag p99", "errors", "restarts",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let opt = |v: Option<f64>| v.map(|x| format!("{x:.1}")).unwrap_or_else(|| "-".into());
    for d in &r.worker_diagnostics {
        rows.push(vec![
            d.index.to_string(),
            d.pod.clone(),
            opt(d.start_late_ms),
            match (d.clock_offset_ms, d.clock_rtt_ms) {
                (Some(o), Some(rtt)) => format!("{o:+.1} ±{:.1}", rtt / 2.0),
                (Some(o), None) => format!("{o:+.1}"),
                _ => "-".into(),
            },
            format!("{:.1}", d.achieved_rate),
            f(d.lag_p99_ms),
            d.errors.to_string(),
            d.restarts.to_string(),
        ]);
    }
    pad_table(&rows, &[true, false, true, true, true, true, true, true])
}

/// The server's side, one row per stage: what TF Serving itself counted (requests by status,
/// rows per batch, padding, queue wait, session run time) and the CPU its processes used. A
/// stage without it says why. Empty when no stage has either.
pub fn server_table(r: &RunReport) -> String {
    // A run that never tried (`benchstack loadtest`) says nothing about it.
    let tried = |s: &StageReport| {
        s.server.is_some()
            || s.server_note
                .as_deref()
                .is_some_and(|n| n != crate::loadgen::NOT_SCRAPED)
    };
    if !r.stages.iter().any(tried) {
        return String::new();
    }
    let mut out = String::new();
    let mut rows = vec![
        [
            "stage",
            "replicas",
            "ok",
            "failed",
            "batch avg",
            "p50",
            "p99",
            "pad %",
            "queue p50",
            "p99",
            "run p50",
            "p99",
            "cpu",
            "share",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>(),
    ];
    let mut notes = Vec::new();
    for st in &r.stages {
        let Some(s) = &st.server else {
            if let Some(n) = &st.server_note {
                notes.push(format!("{}: {n}", st.name));
            }
            continue;
        };
        let ok = s.requests.get("OK").copied().unwrap_or(0);
        let failed: u64 = s
            .requests
            .iter()
            .filter(|(k, _)| k.as_str() != "OK")
            .map(|(_, n)| n)
            .sum();
        let opt = |v: Option<f64>, fmt: &dyn Fn(f64) -> String| v.map(fmt).unwrap_or("-".into());
        let rows_fmt = |x: f64| format!("{x:.1}");
        rows.push(vec![
            st.name.clone(),
            s.replicas.to_string(),
            ok.to_string(),
            failed.to_string(),
            opt(s.batch_size.map(|b| b.avg), &rows_fmt),
            opt(s.batch_size.map(|b| b.p50), &rows_fmt),
            opt(s.batch_size.map(|b| b.p99), &rows_fmt),
            opt(s.padding_ratio, &|x| format!("{:.1}", x * 100.0)),
            opt(s.queue_wait_ms.map(|q| q.p50), &|x| f(x)),
            opt(s.queue_wait_ms.map(|q| q.p99), &|x| f(x)),
            opt(s.runtime_ms.map(|q| q.p50), &|x| f(x)),
            opt(s.runtime_ms.map(|q| q.p99), &|x| f(x)),
            opt(s.cpu_cores, &|x| format!("{x:.2}")),
            if s.per_replica_share.len() > 1 {
                s.per_replica_share
                    .iter()
                    .map(|x| format!("{:.0}%", x * 100.0))
                    .collect::<Vec<_>>()
                    .join("/")
            } else {
                "-".into()
            },
        ]);
        let other: Vec<String> = s
            .requests
            .iter()
            .filter(|(k, n)| k.as_str() != "OK" && **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if !other.is_empty() {
            notes.push(format!("{}: server status {}", st.name, other.join(" ")));
        }
        if let Some(t) = s.cpu_throttled_ratio {
            notes.push(format!(
                "{}: CPU throttled in {:.1}% of periods",
                st.name,
                t * 100.0
            ));
        }
    }
    if rows.len() > 1 {
        let _ = writeln!(out, "server (TF Serving's own metrics):");
        let mut right = vec![true; 14];
        right[0] = false;
        out.push_str(&pad_table(&rows, &right));
        out.push_str("batch = rows per executed batch after padding; queue = wait for a batch; run = session run (queue included); ms; cpu in cores; percentiles estimated from the server's buckets\n");
    }
    for n in notes {
        let _ = writeln!(out, "{n}");
    }
    out
}

/// The line `../shared/bench/anchors/run.sh` reads: totals over all stages.
pub fn anchor_line(r: &RunReport) -> String {
    let requests: u64 = r.stages.iter().map(|s| s.requests).sum();
    let errors: u64 = r.stages.iter().map(|s| s.errors_total).sum();
    let secs: f64 = r.stages.iter().map(|s| s.duration_s).sum();
    let rps = if secs > 0.0 {
        r.stages
            .iter()
            .map(|s| s.achieved_rate * s.duration_s)
            .sum::<f64>()
            / secs
    } else {
        0.0
    };
    let (p50, p99) = match r.total_latency() {
        Ok(h) if !h.is_empty() => (
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
        ),
        _ => (0.0, 0.0),
    };
    format!(
        "ANCHOR requests={requests} rps={rps:.1} p50_ms={p50:.3} p99_ms={p99:.3} errors={errors}"
    )
}

fn delta(a: f64, b: f64) -> String {
    if a == 0.0 {
        return "-".into();
    }
    format!("{:+.1}%", (b - a) / a * 100.0)
}

/// A compared quantity: label, how to read it (None: the stage does not have it), whether it
/// is a latency in ms.
type Metric = (&'static str, fn(&StageReport) -> Option<f64>, bool);

/// The server's side compared, when either stage has it.
const SERVER_METRICS: [Metric; 5] = [
    (
        "server batch avg",
        |s| s.server.as_ref()?.batch_size.map(|b| b.avg),
        false,
    ),
    (
        "server queue p99 ms",
        |s| s.server.as_ref()?.queue_wait_ms.map(|q| q.p99),
        true,
    ),
    (
        "server run p99 ms",
        |s| s.server.as_ref()?.runtime_ms.map(|q| q.p99),
        true,
    ),
    (
        "server failed",
        |s| {
            let v = s.server.as_ref()?;
            Some(
                v.requests
                    .iter()
                    .filter(|(k, _)| k.as_str() != "OK")
                    .map(|(_, n)| *n as f64)
                    // An empty f64 sum is -0.0, which prints "-0".
                    .sum::<f64>()
                    + 0.0,
            )
        },
        false,
    ),
    ("server cpu cores", |s| s.server.as_ref()?.cpu_cores, false),
];

/// One compared quantity: label, A's value, B's value, whether it is a latency in ms.
pub type Compared = (&'static str, Option<f64>, Option<f64>, bool);

/// Two runs' stages matched by position: the stage's name and its compared quantities (the
/// server's too when either stage has them).
pub fn compare_metrics(ra: &RunReport, rb: &RunReport) -> Vec<(String, Vec<Compared>)> {
    let mut out = Vec::new();
    let n = ra.stages.len().max(rb.stages.len());
    for i in 0..n {
        let (sa, sb) = (ra.stages.get(i), rb.stages.get(i));
        let name = match (sa, sb) {
            (Some(x), Some(y)) if x.name == y.name => x.name.clone(),
            (Some(x), Some(y)) => format!("{} / {}", x.name, y.name),
            (Some(x), None) => format!("{} / -", x.name),
            (None, Some(y)) => format!("- / {}", y.name),
            (None, None) => continue,
        };
        let mut metrics: Vec<Metric> = vec![
            ("rate /s", |s| Some(s.achieved_rate), false),
            ("requests", |s| Some(s.requests as f64), false),
            ("errors", |s| Some(s.errors_total as f64), false),
            ("p50 ms", |s| Some(s.latency_ms.p50), true),
            ("p90 ms", |s| Some(s.latency_ms.p90), true),
            ("p99 ms", |s| Some(s.latency_ms.p99), true),
            ("p99.9 ms", |s| Some(s.latency_ms.p999), true),
            ("max ms", |s| Some(s.latency_ms.max), true),
        ];
        if sa.is_some_and(|s| s.server.is_some()) || sb.is_some_and(|s| s.server.is_some()) {
            metrics.extend(SERVER_METRICS);
        }
        let values = metrics
            .iter()
            .map(|(label, get, is_ms)| (*label, sa.and_then(get), sb.and_then(get), *is_ms))
            .collect();
        out.push((name, values));
    }
    out
}

/// Two runs side by side, stage by stage (matched by position), with relative changes.
pub fn compare_table(a: &(String, RunReport), b: &(String, RunReport)) -> String {
    let (la, ra) = a;
    let (lb, rb) = b;
    let mut out = String::new();
    let _ = writeln!(out, "A = {la}: {} {} {}", ra.protocol, ra.target, ra.model);
    let _ = writeln!(out, "B = {lb}: {} {} {}", rb.protocol, rb.target, rb.model);
    let mut rows = vec![
        ["stage", "metric", "A", "B", "change"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>(),
    ];
    for (name, metrics) in compare_metrics(ra, rb) {
        for (k, (label, va, vb, is_ms)) in metrics.into_iter().enumerate() {
            let show = |v: Option<f64>| match v {
                None => "-".to_string(),
                Some(x) if is_ms => f(x),
                Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
                Some(x) => format!("{x:.1}"),
            };
            rows.push(vec![
                if k == 0 { name.clone() } else { String::new() },
                label.to_string(),
                show(va),
                show(vb),
                match (va, vb) {
                    (Some(x), Some(y)) => delta(x, y),
                    _ => "-".into(),
                },
            ]);
        }
    }
    out.push_str(&pad_table(&rows, &[false, false, true, true, true]));
    match (&ra.capacity, &rb.capacity) {
        (Some(ca), Some(cb)) => {
            let show = |c: Option<f64>| c.map(|r| format!("{r:.1} req/s")).unwrap_or("none".into());
            let _ = writeln!(out, "capacity: A {}  B {}", show(ca.rate), show(cb.rate));
        }
        (Some(_), None) | (None, Some(_)) => {
            let _ = writeln!(out, "capacity: searched in one run only");
        }
        (None, None) => {}
    }
    // What makes a run's figures no verdict is said beside them, never left to be noticed in
    // each run's own page.
    for (letter, r) in [("A", ra), ("B", rb)] {
        if let Some(why) = &r.invalid {
            let _ = writeln!(
                out,
                "{letter} is an INVALID RUN: {why}. Its figures are shown, but they are no verdict."
            );
        }
        if let Some(answers) = r.answers.as_ref().filter(|a| a.differs()) {
            let _ = writeln!(out, "{letter}: {}", answers.summary());
        }
    }
    out
}

/// A run's standing in one word for the reader: `invalid` (no verdict may use it),
/// `answers differ` (batching changed its predictions), else whether its SLOs held.
pub fn run_standing(r: &RunReport) -> &'static str {
    if r.invalid.is_some() {
        "invalid"
    } else if r.answers.as_ref().is_some_and(|a| a.differs()) {
        "answers differ"
    } else if r.slos_met() {
        "met"
    } else {
        "MISSED"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::environment::Environment;
    use crate::loadgen::record::StageRecorder;
    use crate::vocab::load::{Protocol, Rate, Slo, Stage};
    use std::time::{Duration, Instant};

    fn run(latency_ms: u64) -> RunReport {
        let slos = [Slo::parse("p99=10ms").unwrap()];
        let stages = [100.0, 200.0]
            .iter()
            .enumerate()
            .map(|(i, &rate)| {
                let mut r = StageRecorder::new(Stage {
                    name: format!("stage-{}", i + 1),
                    rate: Rate::PerSecond(rate),
                    duration: Duration::from_secs(2),
                });
                let t0 = Instant::now();
                r.begin(t0);
                for k in 0..400u64 {
                    let t = t0 + Duration::from_millis(k * 5);
                    r.record_sent(t, t);
                    r.record_done(t, t, t + Duration::from_millis(latency_ms + k % 7), Ok(()));
                }
                r.into_report(&slos)
            })
            .collect();
        RunReport {
            target: "http://127.0.0.1:1".into(),
            protocol: Protocol::Rest,
            model: "m".into(),
            stages,
            capacity: None,
            environment: Environment::detect(),
            arrival: Default::default(),
            connections: 8,
            slos: slos.to_vec(),
            workers: 1,
            invalid: None,
            worker_diagnostics: Vec::new(),
            answers: None,
        }
    }

    #[test]
    fn the_table_shows_every_stage_and_slo_verdicts() {
        let t = stage_table(&run(1));
        assert!(t.contains("stage-1") && t.contains("stage-2"));
        assert!(t.contains("SLO p99 <= 10 ms: met"));
        let t = stage_table(&run(20));
        assert!(t.contains("MISSED"));
    }

    #[test]
    fn the_table_counts_failed_requests_against_the_slos() {
        // 95 fast successes and 5 fast 503s: p99 and errors<=1% both miss.
        let slos = [
            Slo::parse("p99=10ms").unwrap(),
            Slo::parse("errors=1%").unwrap(),
        ];
        let mut r = StageRecorder::new(Stage {
            name: "stage-1".into(),
            rate: Rate::PerSecond(100.0),
            duration: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        r.begin(t0);
        for k in 0..100u64 {
            let t = t0 + Duration::from_millis(k * 10);
            r.record_sent(t, t);
            let outcome = if k % 20 == 19 {
                Err(crate::loadgen::record::ErrorKind::Http(503))
            } else {
                Ok(())
            };
            r.record_done(t, t, t + Duration::from_millis(1), outcome);
        }
        let mut report = run(1);
        report.stages = vec![r.into_report(&slos)];
        report.slos = slos.to_vec();
        assert!(!report.slos_met());
        let t = stage_table(&report);
        assert!(
            t.contains(
                "SLO p99 <= 10 ms: MISSED (5% of requests failed: the p99 request never completed)"
            ),
            "{t}"
        );
        assert!(
            t.contains("SLO errors <= 1%: MISSED (5 of 100 failed, 5%)"),
            "{t}"
        );
        assert!(t.contains("err %"), "{t}");
        assert_eq!(report.stages[0].error_rate, 0.05);
    }

    #[test]
    fn the_anchor_line_totals_all_stages() {
        let line = anchor_line(&run(1));
        assert!(line.starts_with("ANCHOR requests=800 rps="), "{line}");
        assert!(line.ends_with("errors=0"), "{line}");
    }

    #[test]
    fn the_server_side_is_a_second_table_a_reason_or_nothing_and_compares_side_by_side() {
        use crate::loadgen::server::{BatchSize, Quantiles, ServerStage};
        let server = ServerStage {
            replicas: 2,
            requests: [("OK".to_string(), 950), ("UNAVAILABLE".to_string(), 50)].into(),
            batch_size: Some(BatchSize {
                avg: 4.0,
                p50: 4.0,
                p99: 4.0,
            }),
            batches: Some(237),
            padding_ratio: Some(0.0),
            queue_wait_ms: Some(Quantiles { p50: 2.0, p99: 2.5 }),
            runtime_ms: Some(Quantiles { p50: 3.0, p99: 4.0 }),
            request_ms: None,
            cpu_cores: Some(1.25),
            cpu_throttled_ratio: None,
            per_replica_share: vec![0.5, 0.5],
        };
        // A run that never scraped (benchstack loadtest) prints nothing about it.
        let mut plain = run(1);
        for s in &mut plain.stages {
            s.server_note = Some(crate::loadgen::NOT_SCRAPED.into());
        }
        assert_eq!(server_table(&plain), "");
        let mut scraped = run(1);
        scraped.stages[0].server = Some(server);
        scraped.stages[1].server_note = Some(
            "no server metrics: 127.0.0.1:1: GET /monitoring/prometheus/metrics answered HTTP 404"
                .into(),
        );
        let t = stage_table(&scraped);
        assert!(t.contains("server (TF Serving's own metrics):"), "{t}");
        assert!(t.contains("50%/50%"), "{t}");
        assert!(t.contains("server status UNAVAILABLE=50"), "{t}");
        assert!(t.contains("answered HTTP 404"), "{t}");
        let c = compare_table(&("a".into(), plain), &("b".into(), scraped.clone()));
        let row = c
            .lines()
            .find(|l| l.contains("server batch avg"))
            .unwrap_or_else(|| panic!("{c}"));
        // A scraped nothing; B's average batch was 4 rows.
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["server", "batch", "avg", "-", "4", "-"],
            "{row}"
        );
        assert!(c.contains("server cpu cores"), "{c}");
        let page = html(&[("b".into(), scraped)]);
        assert!(page.contains("<h2>Server</h2>") && page.contains("UNAVAILABLE: 50"));
    }

    #[test]
    fn comparison_table_and_page_show_both_runs() {
        let a = ("before".to_string(), run(1));
        let b = ("after".to_string(), run(2));
        let t = compare_table(&a, &b);
        assert!(t.contains("A = before") && t.contains("B = after"));
        assert!(t.contains("p99 ms"));
        let page = html(&[a, b]);
        assert!(page.contains("before vs after"));
        assert_eq!(page.matches("<svg").count(), 3);
        assert!(!page.contains("<script"));
    }

    #[test]
    fn two_runs_as_markdown_lead_with_the_last_stage_p99_and_go_red_when_the_newer_misses() {
        let a = ("#1 loadtest.lt".to_string(), run(1));
        let mut b = ("#2 loadtest.lt".to_string(), run(20));
        // With the server's side too: its run p99 is not the headline.
        b.1.stages[1].server = Some(crate::loadgen::server::ServerStage {
            replicas: 1,
            requests: [("OK".to_string(), 400)].into(),
            batch_size: None,
            batches: None,
            padding_ratio: None,
            queue_wait_ms: None,
            runtime_ms: Some(crate::loadgen::server::Quantiles { p50: 3.0, p99: 4.0 }),
            request_ms: None,
            cpu_cores: None,
            cpu_throttled_ratio: None,
            per_replica_share: vec![],
        });
        let md = documents::runs_document(&a, &b, "loadtest.lt").render(markdown::GITHUB_LIMIT);
        let first = md.lines().next().unwrap();
        assert!(
            first.starts_with(
                "**Runs** \\#1 loadtest.lt → \\#2 loadtest.lt (`loadtest.lt`): stage-2 p99 "
            ),
            "{first}"
        );
        assert!(first.ends_with(" · SLOs met → MISSED"), "{first}");
        assert!(md.contains("> [!CAUTION]"), "{md}");
        assert!(md.contains("| stage-2 p99 |"), "{md}");
        // No failures counted is 0, not "-0" (an empty f64 sum).
        assert!(md.contains("| stage-2 server failed | - | 0 | - |"), "{md}");
        let m = markdown::Marker::find(&md).unwrap();
        assert_eq!(m.conclusion, markdown::Conclusion::Failure);
        assert_eq!(m.kind, "results");
    }

    #[test]
    fn two_runs_compared_say_which_is_invalid_and_an_invalid_run_is_neither_met_nor_missed() {
        let a = ("#1 loadtest.lt".to_string(), run(1));
        let mut b = ("#2 loadtest.lt".to_string(), run(20));
        b.1.invalid = Some("worker 2 restarted".into());
        let t = compare_table(&a, &b);
        assert!(
            t.contains("B is an INVALID RUN: worker 2 restarted."),
            "{t}"
        );
        assert!(!t.contains("A is an INVALID RUN"), "{t}");
        let md = documents::runs_document(&a, &b, "loadtest.lt").render(markdown::GITHUB_LIMIT);
        let first = md.lines().next().unwrap();
        assert!(first.ends_with(" · SLOs met → invalid"), "{first}");
        assert!(
            md.contains("> [!WARNING]") && md.contains("worker 2 restarted"),
            "{md}"
        );
        // Its missed SLOs are not a red alert: an invalid run is no verdict.
        assert!(!md.contains("> [!CAUTION]"), "{md}");
        let m = markdown::Marker::find(&md).unwrap();
        assert_eq!(m.conclusion, markdown::Conclusion::Neutral);
    }

    #[test]
    fn two_runs_compared_name_answers_that_batching_changed() {
        let a = ("#1 loadtest.lt".to_string(), run(1));
        let mut b = ("#2 loadtest.lt".to_string(), run(1));
        b.1.answers = Some(crate::loadgen::answers::AnswerCheck {
            sample: 16,
            compared: 16,
            tolerance: crate::loadgen::answers::TOLERANCE,
            differing: 3,
            worst: None,
            note: None,
        });
        let t = compare_table(&a, &b);
        assert!(t.contains("B: answers checked: 16 of 16"), "{t}");
        assert!(t.contains("3 DIFFER"), "{t}");
        let md = documents::runs_document(&a, &b, "loadtest.lt").render(markdown::GITHUB_LIMIT);
        assert!(
            md.lines()
                .next()
                .unwrap()
                .ends_with(" · SLOs met → answers differ"),
            "{md}"
        );
        assert!(md.contains("batching changed the answers"), "{md}");
        let m = markdown::Marker::find(&md).unwrap();
        assert_eq!(m.conclusion, markdown::Conclusion::Failure);
    }
}
