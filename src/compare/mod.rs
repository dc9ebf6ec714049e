//! A/B comparison of two serving configurations, and the verdict `compare` and
//! `apply --gate` share.
//!
//! The unit compared is a round's figure (a run's p99 at a stage's rate, its error rate, its
//! achieved rate, or its capacity under the SLOs), never a request: requests inside one run
//! share the machine's noise, so a per-request test would call identical systems different
//! (Abedi & Brecht, ICPE 2017). Rounds are interleaved A B B A … (`order`). The verdict per
//! metric is Chromium Pinpoint's rule (`judge`, docs/compare.md): p = min(Mann–Whitney U,
//! Kolmogorov–Smirnov); `better`/`worse` needs p ≤ `ALPHA` and a change of at least the
//! minimum effect; `same` needs p above `same_threshold(n)` and the confidence interval of
//! the change inside ±min-effect; else `inconclusive`.
//!
//! `run_rounds` drives any [`Measure`] (tests use fakes; [`bench::StackMeasure`] deploys both
//! configurations through plan/apply and runs the stack's load test). The result,
//! [`Comparison`], is plain serde data: terminal text here (`render`), `--json` as is, and
//! other formats (markdown) can be built on it.

pub mod bench;
pub mod gate;
pub mod revision;
pub mod stats;

use serde::{Deserialize, Serialize};

use crate::loadgen::RunReport;
use crate::vocab::load::{format_error_rate, format_ms, format_rate};

/// The significance a `better`/`worse` verdict needs (Pinpoint's DIFFERENT threshold).
pub const ALPHA: f64 = 0.01;
/// The confidence of the interval of the change.
pub const CONFIDENCE: f64 = 0.95;
/// The default minimum effect: a change smaller than 5 % is never `better` or `worse`.
pub const DEFAULT_MIN_EFFECT: f64 = 0.05;

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    LowerIsBetter,
    HigherIsBetter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Better,
    Same,
    Worse,
    Inconclusive,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Same => "same",
            Verdict::Worse => "worse",
            Verdict::Inconclusive => "inconclusive",
        }
    }

    /// The verdict of several metrics: worse if any is worse, else inconclusive if any is,
    /// else better if any is, else same. No metric at all is inconclusive.
    pub fn overall(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let all: Vec<Verdict> = verdicts.into_iter().collect();
        if all.is_empty() || all.contains(&Verdict::Inconclusive) && !all.contains(&Verdict::Worse)
        {
            return Verdict::Inconclusive;
        }
        if all.contains(&Verdict::Worse) {
            Verdict::Worse
        } else if all.contains(&Verdict::Better) {
            Verdict::Better
        } else {
            Verdict::Same
        }
    }
}

/// The p-value above which samples count as the same, for `n` rounds per side and a minimum
/// effect of `magnitude` interquartile ranges of the pooled rounds: 0.5 at 5 rounds,
/// shrinking as 2.5/n to 0.1, then divided by the magnitude when it is above 1, never below
/// `ALPHA`. Pinpoint's "high threshold" shrinks the same two ways: with more rounds a real
/// difference drives p down, so a high p says more; and an effect many spreads wide would give
/// a tiny p, so a moderate p already rules it out. (A metric that barely varies, such as the
/// achieved rate, is `same` at a moderate p; a noisy p99 needs a high one.)
pub fn same_threshold(n: usize, magnitude: f64) -> f64 {
    let by_rounds = (2.5 / n.max(1) as f64).clamp(0.1, 0.5);
    let m = if magnitude.is_nan() {
        1.0
    } else {
        magnitude.max(1.0)
    };
    (by_rounds / m).max(ALPHA)
}

/// The interquartile range (linear interpolation between order statistics).
fn iqr(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let x = p * (s.len() - 1) as f64;
        let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
        s[lo] + (s[hi] - s[lo]) * (x - lo as f64)
    };
    q(0.75) - q(0.25)
}

/// One metric of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricComparison {
    /// `p99 ms @ stage 2 (3900 req/s)`, `capacity req/s`, …
    pub metric: String,
    /// `ms`, `req/s` or `fraction`.
    pub unit: String,
    pub direction: Direction,
    /// The rounds' figures, in order.
    pub base: Vec<f64>,
    pub candidate: Vec<f64>,
    pub base_median: f64,
    pub candidate_median: f64,
    /// (candidate median − base median) / base median, as a fraction. None when the base
    /// median is 0 and the candidate's is not.
    pub change: Option<f64>,
    /// The `CONFIDENCE` interval of the change: the Hodges–Lehmann interval of the shift
    /// candidate − base over the base median (±∞ when the rounds are too few).
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    pub p_mann_whitney: f64,
    pub p_kolmogorov_smirnov: f64,
    /// min of the two.
    pub p: f64,
    /// The p above which this many rounds count as the same.
    pub same_threshold: f64,
    pub verdict: Verdict,
}

/// Judges one metric: `base` and `candidate` are the rounds' figures.
pub fn judge(
    metric: &str,
    unit: &str,
    direction: Direction,
    base: &[f64],
    candidate: &[f64],
    min_effect: f64,
) -> MetricComparison {
    let base_median = stats::median(base);
    let candidate_median = stats::median(candidate);
    let mwu = stats::mann_whitney(base, candidate);
    let ks = stats::kolmogorov_smirnov(base, candidate);
    let hl = stats::hodges_lehmann(base, candidate, CONFIDENCE);
    let n = base.len().min(candidate.len());
    let pooled: Vec<f64> = base.iter().chain(candidate).copied().collect();
    let spread = iqr(&pooled);
    let magnitude = if spread > 0.0 {
        min_effect * base_median.abs() / spread
    } else {
        f64::INFINITY
    };
    let threshold = same_threshold(n, magnitude);
    let (p_mwu, p_ks) = (
        mwu.map(|r| r.p).unwrap_or(1.0),
        ks.map(|r| r.p).unwrap_or(1.0),
    );
    let p = p_mwu.min(p_ks);
    // The shift relative to the base median; 0/0 is no change, x/0 an unbounded one.
    let relative = |d: f64| -> Option<f64> {
        if base_median.abs() > 0.0 && base_median.is_finite() {
            Some(d / base_median.abs())
        } else if d == 0.0 {
            Some(0.0)
        } else if d.is_infinite() {
            Some(d)
        } else {
            None
        }
    };
    let change = relative(candidate_median - base_median);
    let (ci_low, ci_high) = match hl {
        Some((_, lo, hi)) => (relative(lo), relative(hi)),
        None => (None, None),
    };
    let valid = mwu.is_some() && ks.is_some() && n >= 2;
    let verdict = if !valid {
        Verdict::Inconclusive
    } else {
        // A change from a zero median is unbounded: large enough.
        let big = change.is_none_or(|c| c.abs() >= min_effect);
        let inside = matches!((ci_low, ci_high), (Some(l), Some(h))
            if l >= -min_effect && h <= min_effect);
        if p <= ALPHA && big {
            let up = match change {
                Some(c) => c > 0.0,
                None => candidate_median > base_median,
            };
            match (up, direction) {
                (true, Direction::HigherIsBetter) | (false, Direction::LowerIsBetter) => {
                    Verdict::Better
                }
                _ => Verdict::Worse,
            }
        } else if p > threshold && inside {
            Verdict::Same
        } else {
            Verdict::Inconclusive
        }
    };
    MetricComparison {
        metric: metric.to_string(),
        unit: unit.to_string(),
        direction,
        base: base.to_vec(),
        candidate: candidate.to_vec(),
        base_median,
        candidate_median,
        change,
        ci_low,
        ci_high,
        p_mann_whitney: p_mwu,
        p_kolmogorov_smirnov: p_ks,
        p,
        same_threshold: threshold,
        verdict,
    }
}

/// Which configuration a round measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Base,
    Candidate,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Base => "base",
            Side::Candidate => "candidate",
        }
    }
}

/// The measurement order: A B B A A B B A … (RMIT-style interleaving cancels drift).
pub fn order(round: usize) -> [Side; 2] {
    if round.is_multiple_of(2) {
        [Side::Base, Side::Candidate]
    } else {
        [Side::Candidate, Side::Base]
    }
}

/// One figure of a round, with which way it improves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub metric: String,
    pub unit: String,
    pub direction: Direction,
    pub value: f64,
}

/// What one measurement of one side gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub figures: Vec<Figure>,
    /// Set when the measurement says nothing about the server (the generator was the
    /// bottleneck): it is discarded and repeated.
    pub invalid: Option<String>,
    /// The stored run, when the measurement was stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
}

/// A measurement as the comparison lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The round (0-based); a repeated measurement keeps its round.
    pub round: usize,
    pub side: Side,
    pub figures: Vec<Figure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<u64>,
}

/// The figures a fixed-rate run gives, per stage: p99 latency, error rate, achieved rate.
pub fn run_figures(report: &RunReport) -> Measured {
    let mut figures = Vec::new();
    for (i, s) in report.stages.iter().enumerate() {
        let at = match s.target_rate {
            Some(r) => format!("stage {} ({} req/s)", i + 1, format_rate(r)),
            None => format!("stage {} (max)", i + 1),
        };
        figures.push(Figure {
            metric: format!("p99 @ {at}"),
            unit: "ms".into(),
            direction: Direction::LowerIsBetter,
            value: s.latency_ms.p99,
        });
        figures.push(Figure {
            metric: format!("error rate @ {at}"),
            unit: "fraction".into(),
            direction: Direction::LowerIsBetter,
            value: s.error_rate,
        });
        figures.push(Figure {
            metric: format!("achieved rate @ {at}"),
            unit: "req/s".into(),
            direction: Direction::HigherIsBetter,
            value: s.achieved_rate,
        });
    }
    // The run's own verdict on itself (a distributed worker late, restarted or off-clock)
    // first; then any bottlenecked stage, stricter than the run-level rule (which keeps a
    // stage that met everything despite lag): a figure the generator shaped is not the
    // server's, whichever way it points.
    let invalid = report.invalid.clone().or_else(|| {
        report
            .stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.generator_bottleneck)
            .map(|(i, s)| {
                format!(
                    "stage {}: the load generator was the bottleneck ({})",
                    i + 1,
                    s.bottleneck
                        .as_deref()
                        .unwrap_or("it fell behind its schedule")
                )
            })
    });
    Measured {
        figures,
        invalid,
        run_id: None,
    }
}

/// Runs one side's measurement. Implemented by [`bench::StackMeasure`] and by test fakes.
pub trait Measure {
    fn measure(&mut self, side: Side, round: usize) -> Result<Measured, CompareError>;
    /// Called with each measurement as it is taken (progress).
    fn note(&mut self, _record: &RoundRecord) {}
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub rounds: usize,
    pub max_rounds: usize,
    /// As a fraction (0.05 for 5 %).
    pub min_effect: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            rounds: 5,
            max_rounds: 9,
            min_effect: DEFAULT_MIN_EFFECT,
        }
    }
}

/// The result of a comparison: plain data for terminal text, JSON, and markdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// What the base is (`git:HEAD~1`, a file, `baseline runs #3, #4`).
    pub base: String,
    pub candidate: String,
    /// The load test measured.
    pub loadtest: String,
    pub capacity: bool,
    pub min_effect: f64,
    /// Valid rounds per side.
    pub rounds: usize,
    /// True when the sides were measured in alternation (compare); false for the gate, whose
    /// baseline runs were measured earlier.
    #[serde(default)]
    pub interleaved: bool,
    pub metrics: Vec<MetricComparison>,
    /// Every measurement, valid or not, in the order taken.
    pub measurements: Vec<RoundRecord>,
    pub verdict: Verdict,
}

impl Comparison {
    pub fn invalid(&self) -> impl Iterator<Item = &RoundRecord> {
        self.measurements.iter().filter(|m| m.invalid.is_some())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Deploy(String),
    #[error("measuring: {0}")]
    Measure(String),
    #[error(
        "{0} measurements in a row were invalid (the load generator was the bottleneck): the last said {1}. Give the load test more workers or connections, or lower its rates."
    )]
    TooManyInvalid(usize, String),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Consecutive invalid measurements of one side before the comparison gives up.
pub const MAX_INVALID_IN_A_ROW: usize = 3;

/// Judges every metric both sides measured, from their figures per valid round (a metric
/// only one side has, such as a stage the baseline's runs did not have, is left out; none in
/// common gives no metric, and so an inconclusive verdict).
pub fn judge_all(
    base: &[Vec<Figure>],
    candidate: &[Vec<Figure>],
    min_effect: f64,
) -> Vec<MetricComparison> {
    // Metrics in the order the first base measurement lists them.
    let mut names: Vec<(String, String, Direction)> = Vec::new();
    for f in base.iter().chain(candidate).flatten() {
        if !names.iter().any(|(m, _, _)| m == &f.metric) {
            names.push((f.metric.clone(), f.unit.clone(), f.direction));
        }
    }
    let column = |rounds: &[Vec<Figure>], metric: &str| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| r.iter().find(|f| f.metric == metric).map(|f| f.value))
            .collect()
    };
    names
        .iter()
        .filter(|(m, _, _)| !column(base, m).is_empty() && !column(candidate, m).is_empty())
        .map(|(m, unit, dir)| {
            judge(
                m,
                unit,
                *dir,
                &column(base, m),
                &column(candidate, m),
                min_effect,
            )
        })
        .collect()
}

/// Measures interleaved rounds until `rounds` valid ones per side, then adds rounds while the
/// verdict is inconclusive, up to `max_rounds`. An invalid measurement is recorded, discarded
/// and repeated (at most `MAX_INVALID_IN_A_ROW` times in a row).
pub fn run_rounds(
    measure: &mut dyn Measure,
    opts: &Options,
    labels: (&str, &str, &str, bool),
) -> Result<Comparison, CompareError> {
    if opts.rounds < 2 || opts.max_rounds < opts.rounds {
        return Err(CompareError::Invalid(format!(
            "--rounds must be at least 2 and --max-rounds at least --rounds (got {} and {})",
            opts.rounds, opts.max_rounds
        )));
    }
    let mut measurements = Vec::new();
    let mut base: Vec<Vec<Figure>> = Vec::new();
    let mut cand: Vec<Vec<Figure>> = Vec::new();
    let mut round = 0;
    loop {
        for side in order(round) {
            let mut in_a_row = 0;
            loop {
                let m = measure.measure(side, round)?;
                let record = RoundRecord {
                    round,
                    side,
                    figures: m.figures.clone(),
                    invalid: m.invalid.clone(),
                    run_id: m.run_id,
                };
                measure.note(&record);
                measurements.push(record);
                match m.invalid {
                    None => {
                        match side {
                            Side::Base => base.push(m.figures),
                            Side::Candidate => cand.push(m.figures),
                        }
                        break;
                    }
                    Some(why) => {
                        in_a_row += 1;
                        if in_a_row >= MAX_INVALID_IN_A_ROW {
                            return Err(CompareError::TooManyInvalid(in_a_row, why));
                        }
                    }
                }
            }
        }
        round += 1;
        if round < opts.rounds {
            continue;
        }
        let metrics = judge_all(&base, &cand, opts.min_effect);
        let verdict = Verdict::overall(metrics.iter().map(|m| m.verdict));
        if verdict != Verdict::Inconclusive || round >= opts.max_rounds {
            return Ok(Comparison {
                base: labels.0.to_string(),
                candidate: labels.1.to_string(),
                loadtest: labels.2.to_string(),
                capacity: labels.3,
                min_effect: opts.min_effect,
                rounds: round,
                interleaved: true,
                metrics,
                measurements,
                verdict,
            });
        }
    }
}

fn fmt_value(unit: &str, v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    match unit {
        "ms" => format!("{} ms", format_ms(v)),
        "fraction" => format_error_rate(v),
        "req/s" => format!("{} req/s", format_rate((v * 10.0).round() / 10.0)),
        _ => format!("{v}"),
    }
}

fn fmt_pct(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_infinite() => {
            if v > 0.0 {
                "+∞".into()
            } else {
                "−∞".into()
            }
        }
        Some(v) => format!("{:+.1}%", v * 100.0),
        None => "n/a".into(),
    }
}

/// The terminal text of a comparison: a line per metric, the invalid measurements and why,
/// and the verdict.
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{}: {} (candidate) against {} (base), {} rounds each{}; min effect {:.1}%\n\n",
        c.loadtest,
        c.candidate,
        c.base,
        c.rounds,
        if c.interleaved { ", interleaved" } else { "" },
        c.min_effect * 100.0
    ));
    let rows: Vec<[String; 7]> = c
        .metrics
        .iter()
        .map(|m| {
            [
                m.metric.clone(),
                fmt_value(&m.unit, m.base_median),
                fmt_value(&m.unit, m.candidate_median),
                fmt_pct(m.change),
                format!("[{}, {}]", fmt_pct(m.ci_low), fmt_pct(m.ci_high)),
                format!("{:.3}", m.p),
                m.verdict.as_str().to_string(),
            ]
        })
        .collect();
    let header = [
        "metric",
        "base",
        "candidate",
        "change",
        "95% CI",
        "p",
        "verdict",
    ]
    .map(String::from);
    let mut widths = [0usize; 7];
    for r in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell}{}", " ".repeat(w - cell.chars().count())))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if c.metrics.is_empty() {
        out.push_str(
            "no metric was measured by both sides (did the load test's stages change since the baseline's runs?)\n",
        );
    }
    let invalid: Vec<&RoundRecord> = c.invalid().collect();
    if !invalid.is_empty() {
        out.push_str(&format!(
            "\n{} measurement(s) discarded and repeated:\n",
            invalid.len()
        ));
        for r in invalid {
            out.push_str(&format!(
                "  round {} {}: {}\n",
                r.round + 1,
                r.side.as_str(),
                r.invalid.as_deref().unwrap_or("")
            ));
        }
    }
    out.push_str(&format!("\nVerdict: {}", c.verdict.as_str()));
    let by: Vec<&str> = c
        .metrics
        .iter()
        .filter(|m| m.verdict == c.verdict && c.verdict != Verdict::Same)
        .map(|m| m.metric.as_str())
        .collect();
    if !by.is_empty() {
        out.push_str(&format!(" ({})", by.join(", ")));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
