//! The `benchstack tune --html` page (self-contained: inline CSS and SVG, no scripts): the
//! capacity of every configuration as bars with the min–max spread of its measurements, and
//! latency against offered rate per configuration with the SLO limit as a line.

use std::fmt::Write as _;

use crate::tune::{Outcome, fmt_rate, settings_text};
use crate::vocab::load::Slo;

use super::svg::{PALETTE, esc, fmt_num as num, nice_step as step, text_width};

/// A configuration's label on the bar chart.
fn bar_label(t: &crate::tune::Trial) -> String {
    let mut label = settings_text(&t.settings);
    if t.baseline {
        label.push_str(" (current)");
    }
    label
}

fn bars(o: &Outcome) -> String {
    // The label column is as wide as the longest label (it was clipped at the page's left
    // edge at a fixed width); the bars keep 540 px beside it.
    let widest = o
        .trials
        .iter()
        .map(|t| text_width(&bar_label(t), 11.0))
        .fold(0.0, f64::max);
    let left = (widest + 16.0).clamp(120.0, 900.0);
    let (w, row) = (left + 540.0, 28.0);
    let h = row * o.trials.len() as f64 + 50.0;
    let max = o
        .trials
        .iter()
        .filter_map(|t| t.spread().map(|(_, b)| b).or(t.capacity()))
        .fold(0.0, f64::max)
        .max(1.0);
    let st = step(max, 6.0);
    let top = (max / st).ceil() * st;
    let x = |v: f64| left + (w - left - 30.0) * v / top;
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" role=\"img\" aria-label=\"capacity per configuration\">"
    );
    let mut t = 0.0;
    while t <= top + 1e-9 {
        let _ = write!(
            s,
            "<line x1=\"{0}\" x2=\"{0}\" y1=\"10\" y2=\"{1}\" stroke=\"#e5e7eb\"/><text x=\"{0}\" y=\"{2}\" font-size=\"11\" text-anchor=\"middle\">{3}</text>",
            x(t),
            h - 30.0,
            h - 14.0,
            num(t)
        );
        t += st;
    }
    for (i, tr) in o.trials.iter().enumerate() {
        let y = 14.0 + row * i as f64;
        let label = bar_label(tr);
        let color = if Some(i) == o.winner {
            "#16a34a"
        } else if tr.baseline {
            "#6b7280"
        } else {
            "#2563eb"
        };
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + 14.0,
            esc(&label)
        );
        match tr.capacity() {
            Some(c) => {
                let _ = write!(
                    s,
                    "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\" opacity=\"0.8\"><title>{} req/s</title></rect><text x=\"{:.1}\" y=\"{}\" font-size=\"11\">{}</text>",
                    x(c) - left,
                    row - 8.0,
                    fmt_rate(c),
                    x(c) + 4.0,
                    y + 14.0,
                    fmt_rate(c)
                );
                if let Some((a, b)) = tr.spread().filter(|_| tr.measurements.len() > 1) {
                    let cy = y + (row - 8.0) / 2.0;
                    let _ = write!(
                        s,
                        "<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{cy}\" y2=\"{cy}\" stroke=\"#111\" stroke-width=\"2\"><title>{}–{} req/s over {} measurements</title></line>",
                        x(a),
                        x(b),
                        fmt_rate(a),
                        fmt_rate(b),
                        tr.measurements.len()
                    );
                }
            }
            None => {
                // "never passes: p99 floor …", or "no capacity: at … req/s: …".
                let why = match tr.reason() {
                    Some(r) if r.starts_with("never passes") => r,
                    Some(r) => format!("no capacity: {r}"),
                    None => "no capacity".to_string(),
                };
                let _ = write!(
                    s,
                    "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"#dc2626\">{}</text>",
                    left + 4.0,
                    y + 14.0,
                    esc(&why.chars().take(90).collect::<String>())
                );
            }
        }
    }
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">capacity under the SLOs, req/s (median; bar: min–max of the measurements)</text></svg>",
        left + (w - left) / 2.0,
        h - 1.0
    );
    s
}

/// A configuration's label and its (offered rate, p99 ms if measured) points.
type Curve = (String, Vec<(f64, Option<f64>)>);

fn curves(o: &Outcome) -> String {
    // The legend goes under the plot (one row per configuration), never over the curves.
    let (w, plot_h, l, b) = (900.0, 420.0, 60.0, 40.0);
    let legend_top = plot_h + 8.0;
    let h = legend_top + 16.0 * o.trials.len() as f64 + 4.0;
    let slo = o.slos.iter().find_map(|s| match s {
        Slo::Latency { .. } => Some((s.label(), s.limit_ms().unwrap_or(0.0))),
        Slo::ErrorRate { .. } => None,
    });
    // Each configuration's probes of its first measurement, by rate.
    let series: Vec<Curve> = o
        .trials
        .iter()
        .map(|t| {
            let mut pts: Vec<(f64, Option<f64>)> = t
                .measurements
                .first()
                .map(|m| m.probes.iter().map(|p| (p.rate, p.latency_ms)).collect())
                .unwrap_or_default();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            (settings_text(&t.settings), pts)
        })
        .collect();
    let xmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|x| x.0))
        .fold(1.0, f64::max);
    let finite = series
        .iter()
        .flat_map(|(_, p)| p.iter().filter_map(|x| x.1))
        .fold(0.0, f64::max);
    let limit = slo.as_ref().map(|s| s.1).unwrap_or(0.0);
    // The axis shows the data; latencies above 4× the SLO (or failures) are drawn at the top.
    let ymax = finite.min(limit.max(1.0) * 4.0).max(limit * 1.2).max(1.0);
    let (xs, ys) = (step(xmax, 8.0), step(ymax, 6.0));
    let xtop = (xmax / xs).ceil() * xs;
    let ytop = (ymax / ys).ceil() * ys;
    let px = |v: f64| l + (w - l - 20.0) * v / xtop;
    let py = |v: f64| plot_h - b - (plot_h - b - 20.0) * v.min(ytop) / ytop;
    let mut s = format!(
        "<svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" role=\"img\" aria-label=\"latency against offered rate\">"
    );
    let mut t = 0.0;
    while t <= xtop + 1e-9 {
        let _ = write!(
            s,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"20\" y2=\"{1}\" stroke=\"#e5e7eb\"/><text x=\"{0:.1}\" y=\"{2}\" font-size=\"11\" text-anchor=\"middle\">{3}</text>",
            px(t),
            plot_h - b,
            plot_h - b + 14.0,
            num(t)
        );
        t += xs;
    }
    let mut t = 0.0;
    while t <= ytop + 1e-9 {
        let _ = write!(
            s,
            "<line x1=\"{l}\" x2=\"{0}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#e5e7eb\"/><text x=\"{2}\" y=\"{3:.1}\" font-size=\"11\" text-anchor=\"end\">{4}</text>",
            w - 20.0,
            py(t),
            l - 4.0,
            py(t) + 4.0,
            num(t)
        );
        t += ys;
    }
    if let Some((label, lim)) = &slo {
        let _ = write!(
            s,
            "<line x1=\"{l}\" x2=\"{0}\" y1=\"{1:.1}\" y2=\"{1:.1}\" stroke=\"#dc2626\" stroke-dasharray=\"6 4\"/><text x=\"{0}\" y=\"{2:.1}\" font-size=\"11\" fill=\"#dc2626\" text-anchor=\"end\">SLO {3} ≤ {4} ms</text>",
            w - 20.0,
            py(*lim),
            py(*lim) - 4.0,
            esc(label),
            num(*lim)
        );
    }
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(y.unwrap_or(ytop))))
            .collect();
        if !path.is_empty() {
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
                path.join(" "),
                esc(label)
            );
        }
        for (x, y) in pts {
            let _ = write!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{}: {} req/s, {}</title></circle>",
                px(*x),
                py(y.unwrap_or(ytop)),
                esc(label),
                fmt_rate(*x),
                y.map(|v| format!("{} ms", num(v)))
                    .unwrap_or_else(|| "failed requests above the percentile".into())
            );
        }
        let _ = write!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            l + 10.0,
            legend_top + 16.0 * i as f64,
            l + 24.0,
            legend_top + 9.0 + 16.0 * i as f64,
            esc(label)
        );
    }
    let ylabel = slo
        .as_ref()
        .map(|s| format!("{} latency, ms (failures counted)", s.0))
        .unwrap_or_else(|| "latency, ms".into());
    let _ = write!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">offered rate, req/s</text><text x=\"14\" y=\"{}\" font-size=\"12\" transform=\"rotate(-90 14 {})\" text-anchor=\"middle\">{}</text></svg>",
        l + (w - l) / 2.0,
        plot_h - 6.0,
        plot_h / 2.0,
        plot_h / 2.0,
        esc(&ylabel)
    );
    s
}

/// The whole page.
pub fn page(o: &Outcome) -> String {
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>benchstack tune</title><style>body{font-family:system-ui,sans-serif;margin:24px;color:#111}h1{font-size:20px}h2{font-size:16px;margin-top:28px}p{max-width:900px}svg{display:block;margin:8px 0}</style></head><body>",
    );
    let _ = write!(s, "<h1>{}</h1><p>{}</p>", esc(&o.tune), esc(&o.sentence()));
    let _ = write!(s, "<h2>Capacity per configuration</h2>{}", bars(o));
    let _ = write!(
        s,
        "<h2>Latency against offered rate (first measurement of each configuration)</h2><p>Points above the chart's top (or at it) are probes whose percentile was beyond the axis or fell among failed requests.</p>{}",
        curves(o)
    );
    s.push_str("</body></html>\n");
    s
}
