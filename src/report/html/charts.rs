//! The SVG charts of the run page: the frame, axes and series of one chart (a log axis of
//! 1/(1−q) for the percentile spectrum, seconds for the time charts), and where limit lines
//! go, so that an SLO far above the data is named in a note instead of squashing the curves.

use std::fmt::Write as _;

use crate::loadgen::RunReport;
use crate::report::svg::{esc, fmt_num, nice_step};

pub(super) struct Series {
    pub label: String,
    pub color: String,
    pub dash: bool,
    pub points: Vec<(f64, f64)>,
}

pub(super) enum XAxis {
    /// x = log10(1/(1−q)); labels 0%, 90%, 99%, …
    Nines(f64),
    Seconds(f64),
}

/// A limit line is drawn on a chart when it is at most this many times the highest plotted
/// value; further above, a note above the chart names it instead, so the data are not squashed
/// against the floor of an axis stretched to reach the limit.
pub(crate) const LIMIT_IN_RANGE_FACTOR: f64 = 1.5;

/// A horizontal reference line, e.g. an SLO: `value` in the chart's y unit.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Limit {
    pub value: f64,
    /// What the line is, as the user wrote it: `SLO p99 ≤ 50 ms`.
    pub label: String,
}

/// The latency limits of the runs' SLOs (each distinct one once), in milliseconds.
pub(crate) fn slo_limits<'a>(runs: impl IntoIterator<Item = &'a RunReport>) -> Vec<Limit> {
    let mut out: Vec<Limit> = Vec::new();
    for r in runs {
        for s in &r.slos {
            if let Some(v) = s.limit_ms() {
                let l = Limit {
                    value: v,
                    label: format!("SLO {} ≤ {} ms", s.label(), fmt_num(v)),
                };
                if !out.contains(&l) {
                    out.push(l);
                }
            }
        }
    }
    out
}

/// Which limits a chart whose data reach `data_max` draws, and the notes for those it leaves out.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct PlacedLimits {
    pub drawn: Vec<Limit>,
    /// One sentence per limit too far above the data to draw: `SLO p99 ≤ 500 ms is above this
    /// chart (the highest value shown is 8.2 ms)`.
    pub notes: Vec<String>,
}

/// Splits `limits` into those drawn (at most [`LIMIT_IN_RANGE_FACTOR`] × the highest value, or
/// every one when there are no data) and notes for the rest; `unit` follows numbers in the notes.
pub(crate) fn place_limits(data_max: f64, limits: &[Limit], unit: &str) -> PlacedLimits {
    let mut placed = PlacedLimits::default();
    for l in limits {
        if data_max <= 0.0 || l.value <= data_max * LIMIT_IN_RANGE_FACTOR {
            placed.drawn.push(l.clone());
        } else {
            placed.notes.push(format!(
                "{} is above this chart (the highest value shown is {} {unit}).",
                l.label,
                fmt_num(data_max)
            ));
        }
    }
    placed
}

/// A linear y axis from 0: its top tick and the distance between ticks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct YAxis {
    pub max: f64,
    pub step: f64,
}

/// The y axis for values up to `top`: about five "nice" ticks, the highest at or just above
/// `top` (a little headroom so a curve's peak does not run along the frame).
pub(crate) fn y_axis(top: f64) -> YAxis {
    let top = if top.is_finite() && top > 0.0 {
        top * 1.04
    } else {
        1.0
    };
    let step = nice_step(top, 5.0);
    YAxis {
        max: ((top / step).ceil() * step).max(step),
        step,
    }
}

pub(super) fn nines_label(x: f64) -> String {
    let q = 1.0 - 10f64.powf(-x);
    let pct = q * 100.0;
    let digits = (x - 2.0).max(0.0).round() as usize;
    format!("{pct:.digits$}%")
}

pub(super) struct Chart<'a> {
    /// The figure's id (for links and tests).
    pub id: &'a str,
    pub title: &'a str,
    pub y_label: &'a str,
    /// The unit in notes about limits off the chart.
    pub unit: &'a str,
    pub x: XAxis,
    pub series: &'a [Series],
    pub vlines: &'a [(f64, String)],
    pub limits: &'a [Limit],
    /// Sentences shown above the chart (already HTML-escaped).
    pub notes: Vec<String>,
}

pub(super) fn chart(c: Chart<'_>) -> String {
    let Chart {
        id,
        title,
        y_label,
        unit,
        x,
        series,
        vlines,
        limits,
        mut notes,
    } = c;
    let (w, h) = (1080.0, 340.0);
    let (ml, mr, mt, mb) = (64.0, 20.0, 16.0, 42.0);
    let pw = w - ml - mr;
    let ph = h - mt - mb;
    let x_max = match x {
        XAxis::Nines(m) | XAxis::Seconds(m) => m.max(1e-9),
    };
    let data_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let placed = place_limits(data_max, limits, unit);
    notes.extend(placed.notes.iter().map(|n| esc(n)));
    let top = placed
        .drawn
        .iter()
        .map(|l| l.value)
        .fold(data_max, f64::max);
    let YAxis { max: y_max, step } = y_axis(top);
    let sx = |v: f64| ml + (v / x_max).clamp(0.0, 1.0) * pw;
    let sy = |v: f64| mt + ph - (v / y_max).clamp(0.0, 1.0) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<figure id="{}"><figcaption>{}</figcaption>"#,
        esc(id),
        esc(title)
    );
    for n in &notes {
        let _ = write!(s, r#"<p class="chart-note">{n}</p>"#);
    }
    let _ = write!(
        s,
        r#"<svg viewBox="0 0 {w} {h}" role="img" aria-label="{}" data-y-max="{}">"#,
        esc(title),
        fmt_num(y_max)
    );
    // Grid and y ticks.
    let mut k = 0.0;
    while k * step <= y_max + step * 0.01 {
        let v = k * step;
        let y = sy(v);
        let _ = write!(
            s,
            r##"<line x1="{ml}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            ml + pw,
            ml - 6.0,
            y + 4.0,
            fmt_num(v)
        );
        k += 1.0;
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
            let mut k = 0.0;
            while k * st <= m + 1e-9 {
                let t = k * st;
                let xx = sx(t);
                let _ = write!(
                    s,
                    r##"<line x1="{xx:.1}" y1="{mt}" x2="{xx:.1}" y2="{:.1}" stroke="#f1f5f9"/><text x="{xx:.1}" y="{:.1}" class="tick" text-anchor="middle">{}s</text>"##,
                    mt + ph,
                    mt + ph + 16.0,
                    fmt_num(t)
                );
                k += 1.0;
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
    for l in &placed.drawn {
        let yy = sy(l.value);
        let _ = write!(
            s,
            r##"<line class="limit" x1="{ml}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#f59e0b" stroke-dasharray="6 3"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end" fill="#b45309">{}</text>"##,
            ml + pw,
            ml + pw - 4.0,
            yy - 4.0,
            esc(&l.label)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_placed_by_their_distance_from_the_data() {
        let l = |v: f64| Limit {
            value: v,
            label: format!("SLO p99 ≤ {v} ms"),
        };
        let p = place_limits(8.2, &[l(10.0), l(500.0)], "ms");
        assert_eq!(p.drawn, vec![l(10.0)]);
        assert_eq!(
            p.notes,
            vec!["SLO p99 ≤ 500 ms is above this chart (the highest value shown is 8.2 ms)."]
        );
        // No data: the limit sets the axis.
        assert_eq!(place_limits(0.0, &[l(500.0)], "ms").drawn, vec![l(500.0)]);
        let y = y_axis(5.0);
        assert!(y.max >= 5.0 && y.max < 7.5, "{y:?}");
    }
}
