//! One self-contained HTML page (inline CSS and SVG, no scripts or downloads) for one run or
//! several side by side: the summary table, the latency percentile spectrum (log axis of
//! 1/(1−q), as HdrHistogram's plotter draws it), and latency and throughput over time.
//!
//! This file is the page; `charts` draws each chart and `timeline` lays the per-second buckets
//! on the time axis.

mod charts;
mod timeline;

use std::fmt::Write as _;

use crate::loadgen::RunReport;
use crate::loadgen::histogram::decode_histogram;

use super::svg::{PALETTE, esc};
use charts::{Chart, Series, XAxis, chart, slo_limits};
use timeline::{merged_timeline_note, run_timeline, undrawn_note};

/// Milliseconds, or a dash for a value not measured (negative).
fn ms(v: f64) -> String {
    if v < 0.0 {
        "–".into()
    } else {
        crate::vocab::load::format_ms(v)
    }
}

fn summary_table(runs: &[(String, RunReport)]) -> String {
    let multi = runs.len() > 1;
    let mut s = String::from("<table><thead><tr>");
    if multi {
        s.push_str("<th>run</th>");
    }
    for h in [
        "stage", "rate", "achieved", "requests", "errors", "p50", "p90", "p99", "p99.9", "max",
        "svc p99", "lag p99", "SLOs",
    ] {
        let _ = write!(s, "<th>{h}</th>");
    }
    s.push_str("</tr></thead><tbody>");
    for (ri, (label, r)) in runs.iter().enumerate() {
        for st in &r.stages {
            s.push_str("<tr>");
            if multi {
                let _ = write!(
                    s,
                    r#"<td><i class="sw" style="background:{}"></i>{}</td>"#,
                    PALETTE[ri % PALETTE.len()],
                    esc(label)
                );
            }
            let rate = match st.target_rate {
                Some(x) => format!("{x:.0}/s"),
                None => "max (closed loop)".into(),
            };
            let errors = if st.errors_total == 0 {
                "0".to_string()
            } else {
                let kinds: Vec<String> =
                    st.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect();
                format!(
                    r#"<span class="bad" title="{}">{}</span>"#,
                    esc(&kinds.join(", ")),
                    st.errors_total
                )
            };
            let slos: Vec<String> = st
                .slos
                .iter()
                .map(|v| {
                    let limit = match v.limit_error_rate {
                        Some(rate) => crate::vocab::load::format_error_rate(rate),
                        None => format!("{} ms", v.limit_ms),
                    };
                    format!(
                        r#"<span class="{}" title="{}">{} ≤ {} {}</span>"#,
                        if v.met { "ok" } else { "bad" },
                        esc(&v.detail),
                        esc(&v.slo),
                        esc(&limit),
                        if v.met { "✓" } else { "✗" }
                    )
                })
                .collect();
            let _ = write!(
                s,
                "<td>{}</td><td>{}</td><td>{:.1}/s</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&st.name),
                rate,
                st.achieved_rate,
                st.requests,
                errors,
                ms(st.latency_ms.p50),
                ms(st.latency_ms.p90),
                ms(st.latency_ms.p99),
                ms(st.latency_ms.p999),
                ms(st.latency_ms.max),
                ms(st.service_time_ms.p99),
                ms(st.generator_lag_ms.p99),
                slos.join(" ")
            );
        }
    }
    s.push_str("</tbody></table>");
    s
}

/// The server's side of each stage (TF Serving's own metrics, CPU), or why there is none.
fn server_table(runs: &[(String, RunReport)]) -> String {
    let any = runs.iter().any(|(_, r)| {
        r.stages.iter().any(|st| {
            st.server.is_some()
                || st
                    .server_note
                    .as_deref()
                    .is_some_and(|n| n != crate::loadgen::NOT_SCRAPED)
        })
    });
    if !any {
        return String::new();
    }
    let multi = runs.len() > 1;
    let mut s = String::from("<h2>Server</h2><table><thead><tr>");
    if multi {
        s.push_str("<th>run</th>");
    }
    for h in [
        "stage",
        "replicas",
        "requests by status",
        "batch avg",
        "batch p50",
        "batch p99",
        "padding",
        "queue p50",
        "queue p99",
        "run p50",
        "run p99",
        "CPU cores",
        "per replica",
    ] {
        let _ = write!(s, "<th>{h}</th>");
    }
    s.push_str("</tr></thead><tbody>");
    let cols = if multi { 14 } else { 13 };
    for (ri, (label, r)) in runs.iter().enumerate() {
        for st in &r.stages {
            s.push_str("<tr>");
            if multi {
                let _ = write!(
                    s,
                    r#"<td><i class="sw" style="background:{}"></i>{}</td>"#,
                    PALETTE[ri % PALETTE.len()],
                    esc(label)
                );
            }
            let _ = write!(s, "<td>{}</td>", esc(&st.name));
            let Some(v) = &st.server else {
                let _ = write!(
                    s,
                    r#"<td colspan="{}" class="meta">{}</td></tr>"#,
                    cols - if multi { 2 } else { 1 },
                    esc(st.server_note.as_deref().unwrap_or("not scraped"))
                );
                continue;
            };
            let opt = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map(f).unwrap_or("–".into());
            let rows = |x: f64| format!("{x:.1}");
            let statuses: Vec<String> = v
                .requests
                .iter()
                .map(|(k, n)| format!("{k}: {n}"))
                .collect();
            let _ = write!(
                s,
                "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                v.replicas,
                esc(&statuses.join(", ")),
                opt(v.batch_size.map(|b| b.avg), &rows),
                opt(v.batch_size.map(|b| b.p50), &rows),
                opt(v.batch_size.map(|b| b.p99), &rows),
                opt(v.padding_ratio, &|x| format!("{:.1}%", x * 100.0)),
                opt(v.queue_wait_ms.map(|q| q.p50), &ms),
                opt(v.queue_wait_ms.map(|q| q.p99), &ms),
                opt(v.runtime_ms.map(|q| q.p50), &ms),
                opt(v.runtime_ms.map(|q| q.p99), &ms),
                opt(v.cpu_cores, &|x| format!("{x:.2}")),
                v.per_replica_share
                    .iter()
                    .map(|x| format!("{:.0}%", x * 100.0))
                    .collect::<Vec<_>>()
                    .join(" / ")
            );
        }
    }
    s.push_str("</tbody></table><p class=\"meta\">From TF Serving's own metrics, scraped from every replica at the start and end of each stage. Batch = rows per executed batch after padding; queue = wait for a batch; run = the session run (with batching, the queue wait included); times in ms. Percentiles are estimated from the server's histogram buckets (linear within a bucket).</p>");
    s
}

fn notes(runs: &[(String, RunReport)]) -> String {
    let mut s = String::new();
    for (label, r) in runs {
        for st in &r.stages {
            if let Some(b) = &st.bottleneck {
                let _ = write!(
                    s,
                    r#"<p class="warn">{} · {}: the load generator was the bottleneck: {}</p>"#,
                    esc(label),
                    esc(&st.name),
                    esc(b)
                );
            }
        }
        if let Some(c) = &r.capacity {
            let _ = write!(
                s,
                "<p><b>{}: capacity {}</b> — probes: {}</p>",
                esc(label),
                c.rate
                    .map(|x| format!("{x:.1} req/s"))
                    .unwrap_or_else(|| "none held".into()),
                c.probes
                    .iter()
                    .map(|p| format!(
                        r#"<span class="{}" title="{}">{:.0}/s {}</span>"#,
                        if p.passed { "ok" } else { "bad" },
                        esc(&p.reason),
                        p.rate,
                        if p.passed { "✓" } else { "✗" }
                    ))
                    .collect::<Vec<_>>()
                    .join(" → ")
            );
        }
    }
    s
}

/// One page for one run, or several side by side (one color per run).
pub fn html(runs: &[(String, RunReport)]) -> String {
    let multi = runs.len() > 1;
    let title = if multi {
        format!(
            "benchstack comparison: {}",
            runs.iter()
                .map(|(l, _)| l.as_str())
                .collect::<Vec<_>>()
                .join(" vs ")
        )
    } else if let Some((l, r)) = runs.first() {
        if *l == r.target {
            format!(
                "benchstack loadtest: {} {} ({})",
                r.protocol, r.target, r.model
            )
        } else {
            format!("benchstack loadtest: {l} ({} {})", r.protocol, r.target)
        }
    } else {
        "benchstack loadtest".to_string()
    };
    let mut body = String::new();
    let _ = write!(body, "<h1>{}</h1>", esc(&title));
    for (ri, (label, r)) in runs.iter().enumerate() {
        let e = &r.environment;
        let _ = write!(
            body,
            r#"<p class="meta"><i class="sw" style="background:{}"></i><b>{}</b>: {} <code>{}</code>, model <code>{}</code>, {} connections, {:?} arrivals{} · generator host {} ({} × {}, benchstack {})</p>"#,
            PALETTE[ri % PALETTE.len()],
            esc(label),
            r.protocol,
            esc(&r.target),
            esc(&r.model),
            r.connections,
            r.arrival,
            if r.workers > 1 {
                format!(", {} workers merged", r.workers)
            } else {
                String::new()
            },
            esc(&e.host),
            e.cpus,
            esc(&e.cpu_model),
            esc(&e.version)
        );
    }
    for (label, r) in runs {
        if let Some(why) = &r.invalid {
            let _ = write!(
                body,
                r#"<p class="invalid"><b>INVALID RUN</b> ({}): {}. Stored and shown; no verdict, capacity, tune ranking or baseline uses it.</p>"#,
                esc(label),
                esc(why)
            );
        }
        if let Some(a) = &r.answers {
            let _ = write!(
                body,
                r#"<p class="{}">{}: {}</p>"#,
                if a.differs() { "invalid" } else { "meta" },
                esc(label),
                esc(&a.summary())
            );
        }
        if !r.worker_diagnostics.is_empty() {
            let _ = write!(
                body,
                "<h2>Workers ({})</h2><pre>{}</pre>",
                esc(label),
                esc(&super::worker_table(r))
            );
        }
    }
    body.push_str(&summary_table(runs));
    body.push_str(&server_table(runs));
    body.push_str(&notes(runs));
    body.push_str("<p class=\"meta\">Latency is measured from each request's intended send time (open loop: no coordinated omission); svc = service time from the actual send; lag = how late the generator released requests. Times in ms.</p>");

    // Percentile spectrum: one line per stage (and run).
    let mut spectrum = Vec::new();
    let mut max_nines: f64 = 2.0;
    let many_stages = runs.iter().map(|(_, r)| r.stages.len()).sum::<usize>() > 1;
    let mut k = 0;
    for (ri, (label, r)) in runs.iter().enumerate() {
        for (si, st) in r.stages.iter().enumerate() {
            let Ok(h) = decode_histogram(&st.histogram) else {
                continue;
            };
            if h.is_empty() {
                continue;
            }
            let mut pts = Vec::new();
            let mut last_x = -1.0;
            for it in h.iter_quantiles(4) {
                let q = it.quantile_iterated_to();
                if q >= 1.0 {
                    break;
                }
                let x = (1.0 / (1.0 - q)).log10();
                if x - last_x < 0.002 && !pts.is_empty() {
                    continue;
                }
                last_x = x;
                pts.push((x, it.value_iterated_to() as f64 / 1000.0));
            }
            // The top of the distribution: as many nines as the sample count supports.
            let top = (h.len() as f64).log10().floor().clamp(1.0, 6.0);
            pts.retain(|p| p.0 <= top);
            pts.push((top, h.max() as f64 / 1000.0));
            max_nines = max_nines.max(top);
            let name = if multi {
                format!("{label} · {}", st.name)
            } else {
                st.name.clone()
            };
            let color = if multi && !many_stages {
                PALETTE[ri % PALETTE.len()]
            } else {
                PALETTE[k % PALETTE.len()]
            };
            spectrum.push(Series {
                label: name,
                color: color.to_string(),
                dash: multi && si % 2 == 1,
                points: pts,
            });
            k += 1;
        }
    }
    let slo_lines = slo_limits(runs.iter().map(|(_, r)| r));
    body.push_str(&chart(Chart {
        id: "latency-percentiles",
        title: "Latency by percentile (HdrHistogram percentile spectrum)",
        y_label: "latency (ms)",
        unit: "ms",
        x: XAxis::Nines(max_nines),
        series: &spectrum,
        vlines: &[],
        limits: &slo_lines,
        notes: Vec::new(),
    }));

    // Over time: stages laid end to end.
    let mut lat_series = Vec::new();
    let mut thr_series = Vec::new();
    let mut vlines = Vec::new();
    let mut lat_notes = Vec::new();
    let mut thr_notes = Vec::new();
    let mut t_max: f64 = 1.0;
    for (ri, (label, r)) in runs.iter().enumerate() {
        let color = PALETTE[ri % PALETTE.len()];
        let prefix = if multi {
            format!("{label} · ")
        } else {
            String::new()
        };
        let tl = run_timeline(r);
        if ri == 0 {
            vlines = tl.stage_starts.clone();
        }
        let (mut p50, mut p99, mut rps, mut errs, mut target) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for s in &tl.seconds {
            let t = s.start + 0.5;
            if let (Some(a), Some(b)) = (s.p50_ms, s.p99_ms) {
                p50.push((t, a));
                p99.push((t, b));
            }
            rps.push((t, s.requests as f64));
            errs.push((t, s.errors as f64));
        }
        let mut offset = 0.0;
        for st in &r.stages {
            if let Some(rate) = st.target_rate {
                target.push((offset, rate));
                target.push((offset + st.duration_s, rate));
            }
            offset += st.duration_s;
        }
        t_max = t_max.max(tl.end);
        let merged = merged_timeline_note(if multi { label } else { "" }, r);
        let bound = if merged.is_some() {
            format!(" (upper bound: highest of {} workers)", r.workers)
        } else {
            String::new()
        };
        if let Some(n) = merged {
            lat_notes.push(esc(&n));
        }
        if let Some(n) = undrawn_note(if multi { label } else { "" }, &tl) {
            lat_notes.push(n.clone());
            thr_notes.push(n);
        }
        let c2 = if multi { color } else { PALETTE[1] };
        lat_series.push(Series {
            label: format!("{prefix}p99 per second{bound}"),
            color: c2.into(),
            dash: false,
            points: p99,
        });
        lat_series.push(Series {
            label: format!("{prefix}p50 per second{bound}"),
            color: color.into(),
            dash: true,
            points: p50,
        });
        thr_series.push(Series {
            label: format!("{prefix}completed requests per second"),
            color: color.into(),
            dash: false,
            points: rps,
        });
        if errs.iter().any(|p| p.1 > 0.0) {
            thr_series.push(Series {
                label: format!("{prefix}errors per second"),
                color: if multi {
                    color.into()
                } else {
                    "#dc2626".into()
                },
                dash: true,
                points: errs,
            });
        }
        if !target.is_empty() {
            thr_series.push(Series {
                label: format!("{prefix}target rate"),
                color: "#94a3b8".into(),
                dash: true,
                points: target,
            });
        }
    }
    body.push_str(&chart(Chart {
        id: "latency-over-time",
        title: "Latency over time (per-second p50 and p99, by completion time)",
        y_label: "latency (ms)",
        unit: "ms",
        x: XAxis::Seconds(t_max),
        series: &lat_series,
        vlines: &vlines,
        limits: &slo_lines,
        notes: lat_notes,
    }));
    body.push_str(&chart(Chart {
        id: "throughput-over-time",
        title: "Throughput over time (requests completed per second)",
        y_label: "requests per second",
        unit: "/s",
        x: XAxis::Seconds(t_max),
        series: &thr_series,
        vlines: &vlines,
        limits: &[],
        notes: thr_notes,
    }));
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{}</title>
<style>
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#0f172a;margin:24px auto;max-width:1120px;padding:0 16px}}
h1{{font-size:20px;margin:0 0 8px}}
.meta{{color:#475569;margin:4px 0}}
.invalid{{color:#b91c1c;border:1px solid #b91c1c;padding:6px;margin:6px 0}}
table{{border-collapse:collapse;margin:14px 0;width:100%;font-variant-numeric:tabular-nums}}
th,td{{padding:4px 8px;border-bottom:1px solid #e2e8f0;text-align:right;white-space:nowrap}}
th{{background:#f8fafc;font-weight:600}} th:first-child,td:first-child{{text-align:left}}
td:last-child,th:last-child{{text-align:left;white-space:normal}}
.ok{{color:#15803d}} .bad{{color:#b91c1c;font-weight:600}}
.warn{{background:#fef3c7;border-left:4px solid #f59e0b;padding:6px 10px}}
figure{{margin:18px 0}} figcaption{{font-weight:600;margin-bottom:4px}}
.chart-note{{color:#475569;font-size:12px;margin:2px 0 4px}}
svg{{width:100%;height:auto;background:#fff}}
.tick{{font-size:11px;fill:#475569}} .axis{{font-size:12px;fill:#334155}}
.legend{{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:12px;color:#334155}}
.legend i{{display:inline-block;width:22px;margin-right:6px;vertical-align:middle}}
.sw{{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px}}
code{{background:#f1f5f9;padding:0 3px;border-radius:3px}}
</style></head><body>
{}
</body></html>
"#,
        esc(&title),
        body
    )
}

/// Runs built through the real recorder, shared by the tests of the page and `timeline`.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::environment::Environment;
    use crate::loadgen::record::StageRecorder;
    use crate::loadgen::{RunReport, StageReport};
    use crate::vocab::load::{Protocol, Rate, Slo, Stage};
    use std::time::{Duration, Instant};

    /// A stage of `duration_ms` whose requests, sent at `(sent_ms, latency_us)` after its start,
    /// all succeed after `latency_us`.
    pub(crate) fn stage(
        name: &str,
        duration_ms: u64,
        sent: &[(u64, u64)],
        slos: &[Slo],
    ) -> StageReport {
        let mut r = StageRecorder::new(Stage {
            name: name.into(),
            rate: Rate::PerSecond(100.0),
            duration: Duration::from_millis(duration_ms),
        });
        let t0 = Instant::now();
        r.begin(t0);
        for &(sent_ms, latency_us) in sent {
            let intended = t0 + Duration::from_millis(sent_ms);
            let done = intended + Duration::from_micros(latency_us);
            r.record_done(intended, intended, done, Ok(()));
        }
        r.into_report(slos)
    }

    /// Requests every 10 ms over `[from_ms, to_ms)`, each taking `latency_us`.
    pub(crate) fn steady(from_ms: u64, to_ms: u64, latency_us: u64) -> Vec<(u64, u64)> {
        (from_ms..to_ms)
            .step_by(10)
            .map(|t| (t, latency_us))
            .collect()
    }

    pub(crate) fn run(stages: Vec<StageReport>, slos: &[Slo]) -> RunReport {
        RunReport {
            target: "http://127.0.0.1:8501".into(),
            protocol: Protocol::Rest,
            model: "m".into(),
            stages,
            capacity: None,
            environment: Environment {
                host: "test".into(),
                cpus: 2,
                cpu_model: "cpu".into(),
                memory_bytes: 1 << 30,
                version: "0".into(),
            },
            arrival: Default::default(),
            connections: 1,
            slos: slos.to_vec(),
            workers: 1,
            invalid: None,
            worker_diagnostics: Vec::new(),
            answers: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{run, stage, steady};
    use super::*;
    use crate::loadgen::merge;
    use crate::vocab::load::Slo;

    /// The HTML of the figure with this id.
    fn figure<'a>(page: &'a str, id: &str) -> &'a str {
        let start = page
            .find(&format!(r#"<figure id="{id}">"#))
            .unwrap_or_else(|| panic!("no figure {id}"));
        let end = start + page[start..].find("</figure>").expect("figure closes");
        &page[start..end]
    }

    fn y_max(fig: &str) -> f64 {
        let at = fig.find("data-y-max=\"").expect("svg has data-y-max") + 12;
        let len = fig[at..].find('"').expect("attribute closes");
        fig[at..at + len].parse().expect("a number")
    }

    #[test]
    fn latency_axes_scale_to_a_5ms_p99_not_to_a_500ms_slo_which_is_noted_above_the_chart() {
        let slos = [Slo::parse("p99=500ms").unwrap()];
        let r = run(vec![stage("s", 3000, &steady(0, 3000, 5000), &slos)], &slos);
        let page = html(&[("run".into(), r)]);
        for id in ["latency-percentiles", "latency-over-time"] {
            let fig = figure(&page, id);
            let top = y_max(fig);
            assert!((5.0..50.0).contains(&top), "{id}: y max {top}");
            assert!(
                fig.contains("SLO p99 ≤ 500 ms is above this chart"),
                "{id}: {fig}"
            );
            assert!(!fig.contains(r#"class="limit""#), "{id} draws the SLO line");
        }
    }

    #[test]
    fn an_slo_within_one_and_a_half_times_the_data_is_drawn_and_the_axis_reaches_it() {
        let slos = [Slo::parse("p99=50ms").unwrap()];
        let r = run(
            vec![stage("s", 2000, &steady(0, 2000, 40_000), &slos)],
            &slos,
        );
        let page = html(&[("run".into(), r)]);
        let fig = figure(&page, "latency-over-time");
        assert!(fig.contains(r#"class="limit""#));
        assert!(!fig.contains("above this chart"));
        assert!(y_max(fig) >= 50.0);
    }

    #[test]
    fn a_part_second_at_the_end_of_a_stage_is_not_drawn_as_a_drop() {
        // 2.5 s at 100/s: seconds 0 and 1 are whole, [2, 2.5) is not.
        let r = run(vec![stage("ramp", 2500, &steady(0, 2500, 2000), &[])], &[]);
        let tl = run_timeline(&r);
        let starts: Vec<f64> = tl.seconds.iter().map(|s| s.start).collect();
        assert_eq!(starts, vec![0.0, 1.0]);
        assert!(tl.seconds.iter().all(|s| s.requests >= 99), "{tl:?}");
        assert_eq!(tl.partial, vec![("ramp".to_string(), 0.5, 50)]);
        let page = html(&[("run".into(), r)]);
        let fig = figure(&page, "throughput-over-time");
        assert!(fig.contains("the last 0.5 s of stage ramp"), "{fig}");
    }

    #[test]
    fn requests_completing_after_the_last_stage_are_not_drawn_as_a_drop_but_counted_in_a_note() {
        // The last request of a 2 s stage completes at 2.003 s: a bucket of 1 request.
        let mut done = steady(0, 2000, 1000);
        done.push((1999, 4000));
        let r = run(vec![stage("s", 2000, &done, &[])], &[]);
        assert!(r.stages[0].timeline.iter().any(|p| p.t == 2));
        let tl = run_timeline(&r);
        assert_eq!(tl.seconds.len(), 2);
        assert!(tl.seconds.iter().all(|s| s.requests >= 100));
        assert_eq!((tl.undrawn_requests, tl.undrawn_errors), (1, 0));
        let page = html(&[("run".into(), r)]);
        assert!(
            figure(&page, "throughput-over-time")
                .contains("1 request that completed after their stage")
        );
    }

    #[test]
    fn a_timeline_merged_from_workers_is_labelled_an_upper_bound() {
        let one = || run(vec![stage("s", 2000, &steady(0, 2000, 3000), &[])], &[]);
        let merged = merge(&[one(), one(), one(), one()]).unwrap();
        assert_eq!(merged.workers, 4);
        let page = html(&[("run".into(), merged)]);
        let fig = figure(&page, "latency-over-time");
        assert!(fig.contains("merged from 4 workers"), "{fig}");
        assert!(fig.contains("upper bound: highest of 4 workers"));
        let single = html(&[("run".into(), one())]);
        assert!(!single.contains("upper bound"));
    }

    #[test]
    fn four_runs_share_one_page_with_each_distinct_slo_once() {
        let runs: Vec<(String, RunReport)> = (0..4u64)
            .map(|i| {
                let slos = [Slo::parse(if i < 2 { "p99=20ms" } else { "p99=25ms" }).unwrap()];
                (
                    format!("#{i}"),
                    run(
                        vec![stage("s", 2000, &steady(0, 2000, 5000 + i * 5000), &slos)],
                        &slos,
                    ),
                )
            })
            .collect();
        let page = html(&runs);
        let fig = figure(&page, "latency-over-time");
        assert_eq!(fig.matches(r#"class="limit""#).count(), 2);
        for (l, _) in &runs {
            assert!(fig.contains(&format!("{l} · p99 per second")));
        }
    }
}
