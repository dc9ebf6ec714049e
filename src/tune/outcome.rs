//! What a tune found: the trials with their measurements and probes, pricing and sizing, and
//! the ranking's presentation (the one-sentence summary, the JSON). Plain data; the search
//! that fills it is in `mod.rs`.

use serde::Serialize;

use super::{Settings, fmt_rate, settings_json, settings_key, settings_text};
use crate::loadgen::Floor;
use crate::stack::tune::Objective;
use crate::vocab::load::Slo;
use crate::vocab::resources::ServingConfig;

/// One probe of a measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeResult {
    pub run: u64,
    pub rate: f64,
    pub passed: bool,
    pub reason: String,
    /// The load test's first latency SLO's percentile over all requests, failures counted
    /// (null when it falls among the failed requests).
    pub latency_ms: Option<f64>,
    /// p99 over all requests, failures counted (null when it falls among the failures).
    pub p99_ms: Option<f64>,
    pub error_rate: f64,
    pub requests: u64,
    /// How long it ran (less than planned when it stopped early).
    pub duration_s: f64,
    /// Why it stopped sending before its planned end (it could no longer pass), or null.
    pub stopped_early: Option<String>,
    /// Set when the probe had fewer requests than its percentile's sample rule asks (the
    /// probe length is capped): what that sample can and cannot prove.
    pub short_sample: Option<String>,
    /// The server's average rows per executed batch during the probe (TF Serving's
    /// `processed_batch_size`); null without batching or without the server's metrics.
    pub batch_avg: Option<f64>,
    /// CPU the serving processes used during the probe, in cores; null where unknown.
    pub cpu_cores: Option<f64>,
    /// The share of CFS periods in which the serving containers were throttled (Kubernetes
    /// with a CPU limit); null where unknown.
    pub cpu_throttled_ratio: Option<f64>,
}

/// A trial whose pods were throttled in more than this share of CFS periods at capacity is
/// flagged: its thread pools likely assume the node's cores, not the container's limit.
pub const THROTTLED_WARNING: f64 = 0.10;
/// With batching on, an average batch below this many rows at capacity means batches barely
/// form at that rate.
pub const BATCH_NEAR_ONE: f64 = 1.5;

/// One capacity search of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measurement {
    /// The highest rate that passed, req/s (null when none did).
    pub capacity: Option<f64>,
    pub probes: Vec<ProbeResult>,
    /// Why this measurement says nothing about the server (the load generator was the
    /// bottleneck, or the configuration could not be applied).
    pub invalid: Option<String>,
    /// Set when the search stopped because no rate can pass: halving the rate did not lower
    /// a missed objective beyond noise (`loadgen::search::floor_between`).
    pub floor: Option<Floor>,
}

/// One configuration and its measurements.
#[derive(Debug, Clone)]
pub struct Trial {
    pub settings: Settings,
    /// The stack's own configuration.
    pub baseline: bool,
    pub serving: ServingConfig,
    pub measurements: Vec<Measurement>,
    /// Why the configuration was not run (`does not fit: …`: its replicas cannot all be
    /// scheduled on the serving node pool). Such a trial has no measurement and is never
    /// ranked.
    pub not_run: Option<String>,
}

impl Trial {
    pub fn key(&self) -> String {
        settings_key(&self.settings)
    }

    /// The median capacity of the valid measurements (a measurement without a passing probe
    /// counts as 0), or None when no valid measurement passed anything.
    pub fn capacity(&self) -> Option<f64> {
        let mut caps: Vec<f64> = self
            .measurements
            .iter()
            .filter(|m| m.invalid.is_none())
            .map(|m| m.capacity.unwrap_or(0.0))
            .collect();
        if caps.is_empty() || caps.iter().all(|c| *c <= 0.0) {
            return None;
        }
        caps.sort_by(f64::total_cmp);
        let n = caps.len();
        Some(if n % 2 == 1 {
            caps[n / 2]
        } else {
            (caps[n / 2 - 1] + caps[n / 2]) / 2.0
        })
    }

    /// (min, max) of the valid measurements' capacities.
    pub fn spread(&self) -> Option<(f64, f64)> {
        let caps: Vec<f64> = self
            .measurements
            .iter()
            .filter(|m| m.invalid.is_none())
            .map(|m| m.capacity.unwrap_or(0.0))
            .collect();
        let min = caps.iter().copied().reduce(f64::min)?;
        let max = caps.iter().copied().reduce(f64::max)?;
        Some((min, max))
    }

    pub fn invalid(&self) -> Option<&str> {
        self.measurements.iter().find_map(|m| m.invalid.as_deref())
    }

    /// The floor that makes this configuration never pass: found by a valid measurement of a
    /// trial that passed nowhere.
    pub fn floor(&self) -> Option<&Floor> {
        if self.capacity().is_some() || self.invalid().is_some() {
            return None;
        }
        self.measurements.iter().find_map(|m| m.floor.as_ref())
    }

    /// The highest passing probe of the measurement nearest the median: latency and errors at
    /// capacity.
    pub fn at_capacity(&self) -> Option<&ProbeResult> {
        let cap = self.capacity()?;
        let m = self
            .measurements
            .iter()
            .filter(|m| m.invalid.is_none())
            .min_by(|a, b| {
                let da = (a.capacity.unwrap_or(0.0) - cap).abs();
                let db = (b.capacity.unwrap_or(0.0) - cap).abs();
                da.total_cmp(&db)
            })?;
        m.probes
            .iter()
            .filter(|p| p.passed)
            .max_by(|a, b| a.rate.total_cmp(&b.rate))
    }

    /// What the server's own figures at capacity say against this configuration: CPU
    /// throttling, or batches that barely form.
    pub fn server_warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(at) = self.at_capacity() else {
            return out;
        };
        if let Some(t) = at.cpu_throttled_ratio
            && t > THROTTLED_WARNING
        {
            out.push(format!(
                "throttled in {:.0}% of CPU periods at capacity: size the thread pools (num_batch_threads, tensorflow_intra_op_parallelism) to the container's CPU limit, not the node's cores",
                t * 100.0
            ));
        }
        let batching = self
            .serving
            .batching
            .as_ref()
            .is_some_and(|b| b.max_batch_size.unwrap_or(1) > 1);
        if batching
            && let Some(b) = at.batch_avg
            && b < BATCH_NEAR_ONE
        {
            out.push(format!(
                "batches averaged {b:.1} rows at {} req/s: batching barely forms at this rate, so a larger max_batch_size cannot help (a longer batch_timeout_micros or fewer batch threads can)",
                fmt_rate(at.rate)
            ));
        }
        out
    }

    /// Why the trial found no capacity: why it was not run, the invalid reason or the first
    /// probe's failure.
    pub fn reason(&self) -> Option<String> {
        if let Some(n) = &self.not_run {
            return Some(n.clone());
        }
        if let Some(i) = self.invalid() {
            return Some(i.to_string());
        }
        if self.capacity().is_some() {
            return None;
        }
        if let Some(f) = self.floor() {
            return Some(format!("never passes: {}", f.text()));
        }
        self.measurements
            .iter()
            .flat_map(|m| m.probes.iter())
            .find(|p| !p.passed)
            .map(|p| format!("at {} req/s: {}", fmt_rate(p.rate), p.reason))
    }
}

/// What a node of the serving cluster costs, and how many there are.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pricing {
    /// USD per node-hour.
    pub hourly_price: f64,
    pub nodes: u32,
    /// Where the price comes from (the stack's `hourly_price`, or the shipped table and its date).
    pub source: String,
}

impl Pricing {
    /// USD per million predictions at `capacity` req/s.
    pub fn cost_per_million(&self, capacity: f64) -> Option<f64> {
        (capacity > 0.0)
            .then(|| f64::from(self.nodes) * self.hourly_price * 1e6 / (capacity * 3600.0))
    }
}

/// How to carry `target_rate` with the winner.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sizing {
    pub target_rate: f64,
    pub replicas: u32,
    pub nodes: u32,
    /// USD per month (730 hours), when the cluster has a price.
    pub monthly_cost: Option<f64>,
}

/// The outcome of a tune.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub tune: String,
    pub objective: Objective,
    /// The load test's SLOs (with the error-rate objective the search adds).
    pub slos: Vec<Slo>,
    /// Index of the baseline in `trials`.
    pub baseline: usize,
    pub trials: Vec<Trial>,
    /// Index of the winner in `trials`.
    pub winner: Option<usize>,
    /// The runner-up's range overlaps the winner's: the lead is inside the noise.
    pub lead_within_noise: bool,
    pub probes: usize,
    /// Probes measured now (the rest were taken from the state).
    pub probes_measured: usize,
    pub pricing: Option<Pricing>,
    pub sizing: Option<Sizing>,
}

/// The columns of [`Outcome::trial_rows`].
pub const TRIAL_COLUMNS: [&str; 10] = [
    "settings",
    "capacity req/s",
    "p99 ms",
    "errors",
    "batch avg",
    "cpu",
    "$/M pred.",
    "verdict",
    "spread req/s",
    "n",
];

impl Outcome {
    /// One row per trial under [`TRIAL_COLUMNS`]: what the terminal table and the markdown
    /// show.
    pub fn trial_rows(&self) -> Vec<Vec<String>> {
        let mut rows = Vec::new();
        for (i, t) in self.trials.iter().enumerate() {
            let at = t.at_capacity();
            let cap = t.capacity();
            let verdict = if Some(i) == self.winner {
                "WINNER".to_string()
            } else if t.not_run.is_some() {
                "not run".to_string()
            } else if t.invalid().is_some() {
                "invalid".to_string()
            } else if t.floor().is_some() {
                "never passes".to_string()
            } else if cap.is_some() {
                "met".to_string()
            } else {
                "missed".to_string()
            };
            let mut settings = settings_text(&t.settings);
            if t.baseline {
                settings.push_str(" (current)");
            }
            rows.push(vec![
                settings,
                cap.map(fmt_rate).unwrap_or_else(|| "-".into()),
                at.and_then(|p| p.p99_ms)
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into()),
                at.map(|p| format!("{:.2}%", p.error_rate * 100.0))
                    .unwrap_or_else(|| "-".into()),
                // The server's side at capacity (TF Serving's own metrics, the processes' CPU).
                at.and_then(|p| p.batch_avg)
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "-".into()),
                at.and_then(|p| p.cpu_cores)
                    .map(|v| format!("{v:.2}"))
                    .unwrap_or_else(|| "-".into()),
                self.cost_per_million(t)
                    .map(|c| format!("{c:.3}"))
                    .unwrap_or_else(|| "-".into()),
                verdict,
                t.spread()
                    .filter(|_| t.measurements.len() > 1)
                    .map(|(a, b)| format!("{}–{}", fmt_rate(a), fmt_rate(b)))
                    .unwrap_or_else(|| "-".into()),
                t.measurements.len().to_string(),
            ]);
        }
        rows
    }

    /// USD per million predictions at a trial's measured capacity, when the cluster has a
    /// price.
    pub fn cost_per_million(&self, t: &Trial) -> Option<f64> {
        let cap = t.capacity()?;
        self.pricing.as_ref()?.cost_per_million(cap)
    }

    /// The current configuration's and the winner's cost per million predictions, when both
    /// are known and the winner is another configuration.
    pub fn cost_change(&self) -> Option<(f64, f64)> {
        let w = &self.trials[self.winner?];
        if w.baseline {
            return None;
        }
        let base = self.cost_per_million(self.trials.get(self.baseline)?)?;
        Some((base, self.cost_per_million(w)?))
    }

    /// "$0.031 → $0.024 per million predictions at capacity (−23%)".
    pub fn cost_sentence(&self) -> Option<String> {
        let (b, w) = self.cost_change()?;
        let pct = if b > 0.0 {
            format!(" ({:+.0}%)", (w / b - 1.0) * 100.0).replace('-', "−")
        } else {
            String::new()
        };
        Some(format!(
            "${b:.3} → ${w:.3} per million predictions at capacity, current → winner{pct}"
        ))
    }

    /// The one-sentence summary: "In N probes across M configurations, <settings> carries X
    /// req/s at p99 ≤ 50 ms, Y% more than the current configuration (Z req/s)".
    pub fn sentence(&self) -> String {
        let slo = self
            .slos
            .iter()
            .filter_map(|s| match s {
                Slo::Latency { .. } => Some(format!(
                    "{} ≤ {} ms",
                    s.label(),
                    fmt_ms(s.limit_ms().unwrap_or(0.0))
                )),
                Slo::ErrorRate { .. } => None,
            })
            .collect::<Vec<_>>()
            .join(" and ");
        let not_run = self.trials.iter().filter(|t| t.not_run.is_some()).count();
        let head = format!(
            "In {} probes across {} configurations{}",
            self.probes,
            self.trials.len() - not_run,
            match not_run {
                0 => String::new(),
                1 => " (1 more not run: it does not fit the serving nodes)".to_string(),
                n => format!(" ({n} more not run: they do not fit the serving nodes)"),
            }
        );
        let Some(w) = self.winner else {
            return format!("{head}, no configuration met the SLOs ({slo}).");
        };
        let win = &self.trials[w];
        let cap = win.capacity().unwrap_or(0.0);
        let base = &self.trials[self.baseline];
        let who = if win.baseline {
            format!(
                "the current configuration ({})",
                settings_text(&win.settings)
            )
        } else {
            settings_text(&win.settings)
        };
        let mut s = format!("{head}, {who} carries {} req/s at {slo}", fmt_rate(cap));
        if !win.baseline {
            match base.capacity() {
                Some(b) if b > 0.0 => {
                    let pct = (cap / b - 1.0) * 100.0;
                    if pct >= 0.0 {
                        s.push_str(&format!(
                            ", {pct:.0}% more than the current configuration ({} req/s)",
                            fmt_rate(b)
                        ));
                    } else {
                        s.push_str(&format!(
                            ", {:.0}% less than the current configuration ({} req/s) but cheaper per prediction",
                            -pct,
                            fmt_rate(b)
                        ));
                    }
                }
                _ => s.push_str(", while the current configuration met the SLOs at no probed rate"),
            }
        } else {
            s.push_str(", more than any other configuration tried");
        }
        if self.lead_within_noise {
            s.push_str(
                "; its lead over the runner-up is inside the noise (their measured ranges overlap)",
            );
        }
        // In the server's terms, when both ends were scraped and their batches differ.
        if !win.baseline
            && let (Some(w), Some(b)) = (
                win.at_capacity().and_then(|p| p.batch_avg),
                base.at_capacity().and_then(|p| p.batch_avg),
            )
            && (w - b).abs() >= 0.5
            && (w / b.max(f64::MIN_POSITIVE) >= 1.2 || b / w.max(f64::MIN_POSITIVE) >= 1.2)
        {
            s.push_str(&format!(
                "; its batches average {w:.1} rows at capacity against {b:.1} for the current configuration"
            ));
        }
        s.push('.');
        s
    }

    /// The `--json` object (docs/tune-json.md).
    pub fn to_json(&self) -> serde_json::Value {
        let trial = |t: &Trial| {
            let at = t.at_capacity();
            let cap = t.capacity();
            serde_json::json!({
                "settings": settings_json(&t.settings),
                "baseline": t.baseline,
                "capacity": cap,
                "passed": cap.is_some() && t.invalid().is_none(),
                "p99_ms": at.and_then(|p| p.p99_ms),
                "latency_ms": at.and_then(|p| p.latency_ms),
                "error_rate": at.map(|p| p.error_rate),
                "cost_per_million": self.cost_per_million(t),
                "spread": t.spread().map(|(a, b)| serde_json::json!({"min": a, "max": b})),
                "measurements": t.measurements,
                "floor": t.floor(),
                "never_passes": t.floor().is_some(),
                "reason": t.reason(),
                "not_run": t.not_run,
                "batch_avg": at.and_then(|p| p.batch_avg),
                "cpu_cores": at.and_then(|p| p.cpu_cores),
                "cpu_throttled_ratio": at.and_then(|p| p.cpu_throttled_ratio),
                "warnings": t.server_warnings(),
            })
        };
        serde_json::json!({
            "tune": self.tune,
            "objective": self.objective,
            "slos": self.slos.iter().map(|s| match s {
                Slo::Latency { .. } => serde_json::json!({"slo": s.label(), "limit_ms": s.limit_ms()}),
                Slo::ErrorRate { errors } => serde_json::json!({"slo": "errors", "limit_error_rate": errors}),
            }).collect::<Vec<_>>(),
            "baseline": trial(&self.trials[self.baseline]),
            "trials": self.trials.iter().map(trial).collect::<Vec<_>>(),
            "winner": self.winner.map(|w| {
                let t = &self.trials[w];
                serde_json::json!({
                    "settings": settings_json(&t.settings),
                    "capacity": t.capacity(),
                    "baseline": t.baseline,
                })
            }),
            "lead_within_noise": self.lead_within_noise,
            "probes": self.probes,
            "probes_measured": self.probes_measured,
            "pricing": self.pricing,
            "cost_change": self.cost_change().map(|(current, winner)| serde_json::json!({
                "current_per_million": current,
                "winner_per_million": winner,
            })),
            "sizing": self.sizing,
            "summary": self.sentence(),
        })
    }
}

fn fmt_ms(v: f64) -> String {
    if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}
