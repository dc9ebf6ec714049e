//! One self-contained HTML page (inline CSS and SVG, no scripts or downloads) for one run or
//! several side by side: the summary table, the latency percentile spectrum (log axis of
//! 1/(1−q), as HdrHistogram's plotter draws it), and latency and throughput over time.

use std::fmt::Write as _;

use crate::loadgen::RunReport;
use crate::loadgen::result::decode_histogram;

const PALETTE: [&str; 8] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Series {
    label: String,
    color: String,
    dash: bool,
    points: Vec<(f64, f64)>,
}

enum XAxis {
    /// x = log10(1/(1−q)); labels 0%, 90%, 99%, …
    Nines(f64),
    Seconds(f64),
}

/// A "nice" step (1, 2 or 5 × 10^k) giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / n;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let m = if norm < 1.5 {
        1.0
    } else if norm < 3.5 {
        2.0
    } else if norm < 7.5 {
        5.0
    } else {
        10.0
    };
    m * mag
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

fn nines_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let pct = q * 100.0;
    let digits = (x - 2.0).max(0.0).round() as usize;
    format!("{pct:.digits$}%")
}

#[allow(clippy::too_many_arguments)]
fn chart(
    title: &str,
    y_label: &str,
    x: XAxis,
    series: &[Series],
    vlines: &[(f64, String)],
    hlines: &[(f64, String)],
) -> String {
    let (w, h) = (1080.0, 340.0);
    let (ml, mr, mt, mb) = (64.0, 20.0, 16.0, 42.0);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let x_max = match x {
        XAxis::Nines(m) | XAxis::Seconds(m) => m.max(1e-9),
    };
    let y_max_data = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .chain(hlines.iter().map(|l| l.0))
        .fold(0.0f64, f64::max);
    let step = nice_step(y_max_data.max(1e-6), 5.0);
    let y_max = ((y_max_data / step).ceil() * step).max(step);
    let sx = |v: f64| ml + (v / x_max).clamp(0.0, 1.0) * pw;
    let sy = |v: f64| mt + ph - (v / y_max).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    // Grid and y ticks.
    let mut v = 0.0;
    while v <= y_max + step * 0.01 {
        let y = sy(v);
        let _ = write!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 6.0,
            y + 4.0,
            fmt_num(v)
        );
        v += step;
    }
    // x ticks.
    match x {
        XAxis::Nines(m) => {
            let mut k = 0.0;
            while k <= m + 1e-9 {
                let xx = sx(k);
                let _ = write!(
                    s,
                    r##"<line x1="{xx:.1}" y1="{mt}" x2="{xx:.1}" y2="{:.1}" stroke="#e5e7eb"/><text x="{xx:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
                    mt + ph,
                    mt + ph + 16.0,
                    nines_label(k)
                );
                k += 1.0;
            }
        }
        XAxis::Seconds(m) => {
            let st = nice_step(m, 10.0);
            let mut t = 0.0;
            while t <= m + 1e-9 {
                let xx = sx(t);
                let _ = write!(
                    s,
                    r##"<line x1="{xx:.1}" y1="{mt}" x2="{xx:.1}" y2="{:.1}" stroke="#f1f5f9"/><text x="{xx:.1}" y="{:.1}" class="tick" text-anchor="middle">{}s</text>"##,
                    mt + ph,
                    mt + ph + 16.0,
                    fmt_num(t)
                );
                t += st;
            }
        }
    }
    let _ = write!(
        s,
        r##"<text x="14" y="{:.1}" class="axis" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text>"##,
        mt + ph / 2.0,
        mt + ph / 2.0,
        esc(y_label),
        ml + pw / 2.0,
        h - 6.0,
        match x {
            XAxis::Nines(_) => "percentile (log scale of 1/(1−q))",
            XAxis::Seconds(_) => "time since the first stage began",
        }
    );
    for (xv, label) in vlines {
        let xx = sx(*xv);
        let _ = write!(
            s,
            r##"<line x1="{xx:.1}" y1="{mt}" x2="{xx:.1}" y2="{:.1}" stroke="#94a3b8" stroke-dasharray="4 4"/><text x="{:.1}" y="{:.1}" class="tick">{}</text>"##,
            mt + ph,
            xx + 4.0,
            mt + 12.0,
            esc(label)
        );
    }
    for (yv, label) in hlines {
        let yy = sy(*yv);
        let _ = write!(
            s,
            r##"<line x1="{ml}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#f59e0b" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end" fill="#b45309">{}</text>"##,
            ml + pw,
            ml + pw - 4.0,
            yy - 4.0,
            esc(label)
        );
    }
    for se in series {
        if se.points.is_empty() {
            continue;
        }
        let pts: Vec<String> = se
            .points
            .iter()
            .map(|(a, b)| format!("{:.1},{:.1}", sx(*a), sy(*b)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{}" stroke-width="{}" {} points="{}"><title>{}</title></polyline>"#,
            se.color,
            if se.dash { "1.5" } else { "2" },
            if se.dash {
                r#"stroke-dasharray="5 4""#
            } else {
                ""
            },
            pts.join(" "),
            esc(&se.label)
        );
    }
    let _ = write!(
        s,
        r##"<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" fill="none" stroke="#cbd5e1"/></svg>"##
    );
    s.push_str(r#"<div class="legend">"#);
    for se in series {
        let _ = write!(
            s,
            r#"<span><i style="border-top:3px {} {}"></i>{}</span>"#,
            if se.dash { "dashed" } else { "solid" },
            se.color,
            esc(&se.label)
        );
    }
    s.push_str("</div></figure>");
    s
}

fn ms(v: f64) -> String {
    if v < 0.0 {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
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
                        Some(rate) => crate::loadgen::spec::format_error_rate(rate),
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
    body.push_str(&summary_table(runs));
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
    let slo_lines: Vec<(f64, String)> = runs
        .first()
        .map(|(_, r)| {
            r.slos
                .iter()
                .filter_map(|s| Some((s.limit_ms()?, format!("SLO {}", s.label()))))
                .collect()
        })
        .unwrap_or_default();
    body.push_str(&chart(
        "Latency by percentile (HdrHistogram percentile spectrum)",
        "latency (ms)",
        XAxis::Nines(max_nines),
        &spectrum,
        &[],
        &slo_lines,
    ));

    // Over time: stages laid end to end.
    let mut lat_series = Vec::new();
    let mut thr_series = Vec::new();
    let mut vlines = Vec::new();
    let mut t_max: f64 = 1.0;
    for (ri, (label, r)) in runs.iter().enumerate() {
        let color = PALETTE[ri % PALETTE.len()];
        let prefix = if multi {
            format!("{label} · ")
        } else {
            String::new()
        };
        let (mut p50, mut p99, mut rps, mut errs, mut target) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut offset = 0.0;
        for st in &r.stages {
            if ri == 0 {
                vlines.push((offset, st.name.clone()));
            }
            for p in &st.timeline {
                let t = offset + p.t as f64 + 0.5;
                if p.requests > p.errors {
                    p50.push((t, p.p50_ms));
                    p99.push((t, p.p99_ms));
                }
                rps.push((t, p.requests as f64));
                errs.push((t, p.errors as f64));
            }
            if let Some(rate) = st.target_rate {
                target.push((offset, rate));
                target.push((offset + st.duration_s, rate));
            }
            offset += st.duration_s;
        }
        t_max = t_max.max(offset);
        let c2 = if multi { color } else { PALETTE[1] };
        lat_series.push(Series {
            label: format!("{prefix}p99 per second"),
            color: c2.into(),
            dash: false,
            points: p99,
        });
        lat_series.push(Series {
            label: format!("{prefix}p50 per second"),
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
    body.push_str(&chart(
        "Latency over time (per-second p50 and p99, by completion time)",
        "latency (ms)",
        XAxis::Seconds(t_max),
        &lat_series,
        &vlines,
        &slo_lines,
    ));
    body.push_str(&chart(
        "Throughput over time",
        "requests per second",
        XAxis::Seconds(t_max),
        &thr_series,
        &vlines,
        &[],
    ));
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{}</title>
<style>
body{{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#0f172a;margin:24px auto;max-width:1120px;padding:0 16px}}
h1{{font-size:20px;margin:0 0 8px}}
.meta{{color:#475569;margin:4px 0}}
table{{border-collapse:collapse;margin:14px 0;width:100%;font-variant-numeric:tabular-nums}}
th,td{{padding:4px 8px;border-bottom:1px solid #e2e8f0;text-align:right;white-space:nowrap}}
th{{background:#f8fafc;font-weight:600}} th:first-child,td:first-child{{text-align:left}}
td:last-child,th:last-child{{text-align:left;white-space:normal}}
.ok{{color:#15803d}} .bad{{color:#b91c1c;font-weight:600}}
.warn{{background:#fef3c7;border-left:4px solid #f59e0b;padding:6px 10px}}
figure{{margin:18px 0}} figcaption{{font-weight:600;margin-bottom:4px}}
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
