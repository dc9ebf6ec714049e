//! `benchstack tune`: the configuration search. Trial settings → the serving resource applied
//! through the same plan, apply and providers as `benchstack apply` → capacity probes through
//! the load generator → every probe stored as a run in the state → ranking, cost, and the
//! `--write` edit of the stack.
//!
//! The inner loop finds one configuration's capacity under the load test's SLOs: open-loop
//! probes doubling from `start_rate` (or climbing from the previous trial's capacity, a warm
//! start) until one fails, then bisecting to `precision` (`loadgen::search_capacity`, the
//! search `--find-capacity` uses). A configuration whose missed objective does not ease when
//! the rate is halved has a floor above the SLO and is reported as never passing after two or
//! three probes; a probe stops sending once it can no longer pass, and none runs longer than
//! `MAX_PROBE_FACTOR` × `probe_duration`. A probe passes only by the
//! load generator's one verdict (`loadgen::probe_verdict` over `result::stage_failures`, with
//! failed requests counted against every SLO and an error-rate objective added when the load
//! test has none); a miss the generator's own lag accounts for is no verdict on the server
//! (the probe is repeated once, then the trial is invalid). The outer loop is a grid or a coordinate descent, then the best three are
//! measured again and ranked by the median.
//!
//! Nothing here prints: the CLI is told what happens through [`Event`]s.

pub mod bench;
pub mod prices;
pub mod write;

pub use crate::vocab::load::format_rate as fmt_rate;
use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::loadgen::result::percentile_counting_failures;
use crate::loadgen::{CapacitySearch, Floor, ProbeSample, ProbeVerdict, RunReport, StageReport};
use crate::stack::tune::{Knob, Objective, Search, TuneConfig};
use crate::state::TuneProbe;
use crate::vocab::load::Slo;
use crate::vocab::resources::{FlagValue, ServingConfig};

/// A trial's settings: dotted serving attribute → value (None: not set, the server's default).
pub type Settings = BTreeMap<String, Option<FlagValue>>;

#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// The trial's configuration could not be applied (the server did not start with it).
    #[error("{0}")]
    Apply(String),
    /// A probe could not be run at all (the load generator failed).
    #[error("{0}")]
    Probe(String),
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// What the tuner needs from the world: apply a serving configuration, run one probe, store
/// it. `bench::StackBench` does it through the providers; tests use a model.
pub trait Bench {
    /// Makes the serving resource run `serving`.
    fn apply(&mut self, serving: &ServingConfig) -> Result<(), TuneError>;
    /// One open-loop probe: `stage` (one stage at the probe's rate) against the serving
    /// resource, after the load test's warmup when `warmup`, judged by `slos`.
    fn probe(
        &mut self,
        stage: crate::vocab::load::Stage,
        slos: &[Slo],
        warmup: bool,
    ) -> Result<RunReport, TuneError>;
    /// Stores a probe as a run; returns its id.
    fn store(&mut self, report: &RunReport, tag: TuneProbe) -> Result<u64, TuneError>;
    /// The probes stored earlier for this tune: (run id, tag, report).
    fn stored(&self) -> Result<Vec<(u64, TuneProbe, RunReport)>, TuneError>;
}

/// What happens, for the CLI to show.
#[derive(Debug, Clone)]
pub enum Event {
    /// A measurement of a trial begins. `index` of `total` planned measurements (1-based).
    Measuring {
        index: usize,
        total: usize,
        settings: Settings,
        baseline: bool,
        measurement: u32,
        /// The time the planned measurements still need, from this one on ([`Tuner`]'s
        /// estimate: probes still expected × what a probe took, plus the restarts); None
        /// before anything was measured.
        left: Option<Duration>,
    },
    /// The trial's settings are being applied.
    Applying { settings: Settings },
    /// A message from apply or from the load generator (one line).
    Progress { message: String },
    Probe {
        rate: f64,
        /// How long it was planned to run.
        duration: Duration,
        passed: bool,
        reason: String,
        /// Taken from the state (an earlier, interrupted tune), not measured again.
        reused: bool,
        run_id: u64,
        /// It stopped sending once it could no longer pass: after how long, and why.
        stopped_early: Option<(Duration, String)>,
        /// The probe is shorter than its percentile's sample rule (see [`short_sample`]).
        short_sample: Option<String>,
    },
    Measured {
        settings: Settings,
        capacity: Option<f64>,
        invalid: Option<String>,
        /// No rate can pass: the floor the search found.
        floor: Option<Floor>,
    },
    /// Putting the serving resource back to what the stack declares.
    Restoring,
}

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
}

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

    /// Why the trial found no capacity: the invalid reason or the first probe's failure.
    pub fn reason(&self) -> Option<String> {
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

pub fn settings_key(s: &Settings) -> String {
    s.iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("{k}=default"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `batching.max_batch_size=32, batching.num_batch_threads=2`.
pub fn settings_text(s: &Settings) -> String {
    s.iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("{k}=(default)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn settings_json(s: &Settings) -> BTreeMap<String, serde_json::Value> {
    s.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_ref()
                    .and_then(|v| serde_json::to_value(v).ok())
                    .unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

/// The declared configuration's values of the space's knobs.
pub fn baseline_settings(cfg: &TuneConfig, declared: &ServingConfig) -> Settings {
    cfg.space
        .iter()
        .map(|d| (d.knob.key(), d.knob.get(declared)))
        .collect()
}

/// The serving configuration of a trial: the declared one with the settings applied.
pub fn trial_serving(declared: &ServingConfig, settings: &Settings) -> ServingConfig {
    let mut s = declared.clone();
    for (k, v) in settings {
        if let (Ok(knob), Some(v)) = (Knob::parse(k), v) {
            knob.set(&mut s, v);
        }
    }
    s
}

/// Every combination of the space, in an order that changes as little of the running
/// deployment as possible between consecutive trials: each trial differs from the one before
/// in exactly one setting (the inner dimensions run forward and back, a reflected Gray code),
/// and `replicas` varies innermost, since a replica count alone changes no pod template (on
/// GKE the Deployment scales without a rollout) while every other setting restarts servers.
/// Otherwise the space's first dimension is outermost.
pub fn grid(cfg: &TuneConfig) -> Vec<Settings> {
    let mut dims: Vec<&crate::stack::tune::Dimension> = cfg.space.iter().collect();
    // Stable: the user's order stays among the restarting settings.
    dims.sort_by_key(|d| matches!(d.knob, Knob::Replicas));
    let mut out: Vec<Settings> = vec![Settings::new()];
    for d in dims {
        let mut next = Vec::with_capacity(out.len() * d.values.len());
        for (i, s) in out.iter().enumerate() {
            // Every other pass runs this dimension backwards, so the boundary between two
            // outer combinations keeps its value.
            let values: Vec<&FlagValue> = if i % 2 == 0 {
                d.values.iter().collect()
            } else {
                d.values.iter().rev().collect()
            };
            for v in values {
                let mut s = s.clone();
                s.insert(d.knob.key(), Some(v.clone()));
                next.push(s);
            }
        }
        out = next;
    }
    out
}

/// A probe runs at most this many `probe_duration`s, however low its rate: halving the rate
/// of a configuration that never passes would otherwise double the probe each time.
pub const MAX_PROBE_FACTOR: u32 = 4;

/// The samples a probe needs for its highest latency percentile q: 10 / (1 − q).
pub fn samples_needed(slos: &[Slo]) -> u64 {
    slos.iter()
        .filter_map(|s| match s {
            Slo::Latency { percentile, .. } => Some(*percentile),
            Slo::ErrorRate { .. } => None,
        })
        .map(|p| {
            let q = (p / 100.0).min(0.99999);
            (10.0 / (1.0 - q)).ceil() as u64
        })
        .max()
        .unwrap_or(0)
}

/// How long a probe at `rate` runs: `probe_duration`, lengthened so that it sends the samples
/// its percentile needs, but never beyond `MAX_PROBE_FACTOR` × `probe_duration`.
pub fn probe_duration(cfg: &TuneConfig, slos: &[Slo], rate: f64) -> Duration {
    let needed = samples_needed(slos) as f64 / rate;
    let base = cfg.probe_duration.as_secs_f64();
    let secs = base
        .max((needed * 10.0).ceil() / 10.0)
        .min(base * f64::from(MAX_PROBE_FACTOR));
    Duration::from_secs_f64(secs)
}

/// What a probe with fewer `requests` than its percentile's sample rule can prove, or None
/// when it had enough. A miss stands (more requests exceeded the limit than the percentile
/// allows of those sent); a pass on a short sample is weaker evidence than the rule asks for.
pub fn short_sample(slos: &[Slo], requests: u64, passed: bool) -> Option<String> {
    let needed = samples_needed(slos);
    if requests >= needed {
        return None;
    }
    let pct = slos
        .iter()
        .filter_map(|s| match s {
            Slo::Latency { percentile, .. } => Some((*percentile, s.label())),
            Slo::ErrorRate { .. } => None,
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, l)| l)
        .unwrap_or_default();
    Some(if passed {
        format!(
            "{requests} requests, fewer than the {needed} {pct} needs (the probe is capped at {MAX_PROBE_FACTOR} × probe_duration): a pass on this sample is weaker evidence"
        )
    } else {
        format!(
            "{requests} requests, fewer than the {needed} {pct} needs (the probe is capped at {MAX_PROBE_FACTOR} × probe_duration): the miss stands"
        )
    })
}

fn probe_result(run: u64, rate: f64, stage: &StageReport, slos: &[Slo]) -> ProbeResult {
    let passed_reason = match crate::loadgen::probe_verdict(stage, rate) {
        ProbeVerdict::Passed => None,
        ProbeVerdict::Failed(why) | ProbeVerdict::Invalid(why) => Some(why),
    };
    let hist = stage.latency_histogram().ok();
    let first_latency = slos.iter().find_map(|s| match s {
        Slo::Latency { percentile, .. } => Some(*percentile),
        Slo::ErrorRate { .. } => None,
    });
    let at = |q: f64| {
        hist.as_ref()
            .and_then(|h| percentile_counting_failures(h, stage.errors_total, q))
    };
    ProbeResult {
        run,
        rate,
        passed: passed_reason.is_none(),
        reason: passed_reason.unwrap_or_default(),
        latency_ms: first_latency.and_then(|p| at(p / 100.0)),
        p99_ms: at(0.99),
        error_rate: stage.error_rate,
        requests: stage.requests,
        duration_s: stage.duration_s,
        stopped_early: stage.stopped_early.as_ref().map(|e| e.reason.clone()),
        short_sample: None,
        batch_avg: stage
            .server
            .as_ref()
            .and_then(|s| s.batch_size)
            .map(|b| b.avg),
        cpu_cores: stage.server.as_ref().and_then(|s| s.cpu_cores),
    }
}

/// Runs a tune against `bench`. `declared` is the serving configuration the stack declares;
/// `basis` fingerprints what else the measurements depend on (the load test). The caller
/// puts the serving resource back afterwards ([`Bench::apply`] with `declared`).
pub struct Tuner<'a, B: Bench> {
    pub cfg: &'a TuneConfig,
    pub declared: ServingConfig,
    pub slos: Vec<Slo>,
    pub basis: String,
    pub pricing: Option<Pricing>,
    pub bench: &'a mut B,
    pub events: &'a dyn Fn(Event),
    stored: Vec<(u64, TuneProbe, RunReport)>,
    /// The settings key now applied, when the tuner applied one.
    applied: Option<String>,
    probes: usize,
    measured: usize,
    done: usize,
    total: usize,
    /// The last capacity a measurement found: where the next trial's search starts.
    last_capacity: Option<f64>,
    /// For the time-left estimate, per finished measurement: (probes, started warm, wall time
    /// of its live probes, live probes); and the wall time of all live probes and of applies.
    per_measurement: Vec<(usize, bool, Duration, usize)>,
    probe_time: Duration,
    live_probes: usize,
    apply_time: Duration,
    applies: usize,
}

/// The improvement below which `auto` stops (Model Analyzer's rule).
pub const AUTO_MIN_GAIN: f64 = 0.05;
/// How many of the best trials are measured `repeats` times.
pub const REMEASURE_BEST: usize = 3;

impl<'a, B: Bench> Tuner<'a, B> {
    pub fn new(
        cfg: &'a TuneConfig,
        declared: ServingConfig,
        loadtest_slos: &[Slo],
        basis: String,
        pricing: Option<Pricing>,
        bench: &'a mut B,
        events: &'a dyn Fn(Event),
    ) -> Result<Self, TuneError> {
        if cfg.objective == Objective::Cost && pricing.is_none() {
            return Err(TuneError::Invalid(format!(
                "tune.{}: objective = \"cost\" needs a price for the serving cluster's nodes: set `hourly_price` on the cluster",
                cfg.name
            )));
        }
        let stored = bench.stored()?;
        Ok(Tuner {
            cfg,
            declared,
            slos: crate::loadgen::capacity_slos(loadtest_slos),
            basis,
            pricing,
            bench,
            events,
            stored,
            applied: None,
            probes: 0,
            measured: 0,
            done: 0,
            total: 0,
            last_capacity: None,
            per_measurement: Vec::new(),
            probe_time: Duration::ZERO,
            live_probes: 0,
            apply_time: Duration::ZERO,
            applies: 0,
        })
    }

    /// Better-than for the objective: (trial capacity or cost).
    fn score(&self, t: &Trial) -> Option<f64> {
        let cap = t.capacity()?;
        if t.invalid().is_some() {
            return None;
        }
        match self.cfg.objective {
            Objective::Capacity => Some(cap),
            // Lower cost is better: negate so that higher scores win.
            Objective::Cost => self
                .pricing
                .as_ref()
                .and_then(|p| p.cost_per_million(cap))
                .map(|c| -c),
        }
    }

    fn basis_of(&self, serving: &ServingConfig) -> String {
        let mut h = Sha256::new();
        h.update(self.basis.as_bytes());
        h.update(serde_json::to_vec(serving).unwrap_or_default());
        h.update(format!(
            "{}|{}|{}",
            self.cfg.start_rate,
            self.cfg.probe_duration.as_secs_f64(),
            self.cfg.precision
        ));
        h.finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn new_trial(&self, settings: Settings, baseline: bool) -> Trial {
        let serving = if baseline {
            self.declared.clone()
        } else {
            trial_serving(&self.declared, &settings)
        };
        Trial {
            settings,
            baseline,
            serving,
            measurements: Vec::new(),
        }
    }

    /// The time the measurements from `done` to `total` still need: the probes a measurement
    /// is expected to take at what a live probe took on average (its run, the retry of a
    /// lagging one, the drain after a failure), plus what an apply took, for each of them.
    /// Once a capacity is known every later search starts warm, and a warm search is much
    /// shorter than the cold first one: it is then judged by the warm searches so far (before
    /// any, by its shape: two probes to bracket and the bisections to `precision`). None
    /// until a probe has run.
    fn time_left(&self) -> Option<Duration> {
        if self.live_probes == 0 {
            return None;
        }
        let all = &self.per_measurement;
        let warm: Vec<&(usize, bool, Duration, usize)> = all.iter().filter(|m| m.1).collect();
        let (probes, probe) = if self.last_capacity.is_some() {
            let probes = if warm.is_empty() {
                let bracket =
                    (1.0 - 1.0 / crate::loadgen::search::WARM_STEP) / self.cfg.precision.max(1e-3);
                2.0 + bracket.log2().ceil().max(0.0)
            } else {
                warm.iter().map(|m| m.0).sum::<usize>() as f64 / warm.len() as f64
            };
            let live: usize = warm.iter().map(|m| m.3).sum();
            let probe = if live > 0 {
                warm.iter().map(|m| m.2.as_secs_f64()).sum::<f64>() / live as f64
            } else {
                self.probe_time.as_secs_f64() / self.live_probes as f64
            };
            (probes, probe)
        } else {
            if all.is_empty() {
                return None;
            }
            (
                all.iter().map(|m| m.0).sum::<usize>() as f64 / all.len() as f64,
                self.probe_time.as_secs_f64() / self.live_probes as f64,
            )
        };
        let apply = if self.applies > 0 {
            self.apply_time.as_secs_f64() / self.applies as f64
        } else {
            0.0
        };
        let remaining = (self.total.max(self.done) + 1).saturating_sub(self.done) as f64;
        Some(Duration::from_secs_f64(
            remaining * (probes * probe + apply),
        ))
    }

    /// One capacity search of `trial` (its next measurement). Stored probes of the same
    /// measurement are replayed in order; the search measures live from where they end. A
    /// trial measured before starts from its own capacity, another from the last capacity
    /// found (the grid's neighbour): warm starts bracket around it.
    fn measure(&mut self, trial: &mut Trial) -> Result<(), TuneError> {
        let m = trial.measurements.len() as u32;
        self.done += 1;
        (self.events)(Event::Measuring {
            index: self.done,
            total: self.total.max(self.done),
            settings: trial.settings.clone(),
            baseline: trial.baseline,
            measurement: m,
            left: self.time_left(),
        });
        let basis = self.basis_of(&trial.serving);
        let mut replay: Vec<(u64, TuneProbe, RunReport)> = self
            .stored
            .iter()
            .filter(|(_, t, _)| {
                t.tune == self.cfg.address() && t.basis == basis && t.measurement == m
            })
            .cloned()
            .collect();
        replay.sort_by_key(|(_, t, _)| t.probe);
        let search = CapacitySearch {
            start_rate: self.cfg.start_rate,
            probe_duration: self.cfg.probe_duration,
            precision: self.cfg.precision,
            max_rate: crate::vocab::load::MAX_RATE,
            max_probes: 30,
        };
        let warm = trial.capacity().or(self.last_capacity);
        let (time_before, live_before) = (self.probe_time, self.live_probes);
        let mut probes: Vec<ProbeResult> = Vec::new();
        let mut invalid: Option<String> = None;
        let mut index = 0u32;
        let key = trial.key();
        let serving = trial.serving.clone();
        let settings_j = settings_json(&trial.settings);
        let result = crate::loadgen::search_capacity(&search, warm, |rate| {
            let i = index;
            index += 1;
            self.probes += 1;
            let capped = samples_needed(&self.slos) as f64 / rate
                > self.cfg.probe_duration.as_secs_f64() * f64::from(MAX_PROBE_FACTOR);
            let event =
                |p: &ProbeResult, st: &StageReport, reused: bool, reason: String| Event::Probe {
                    rate,
                    duration: Duration::from_secs_f64(
                        st.stopped_early
                            .as_ref()
                            .map_or(st.duration_s, |e| e.planned_s),
                    ),
                    passed: p.passed,
                    reason,
                    reused,
                    run_id: p.run,
                    stopped_early: st
                        .stopped_early
                        .as_ref()
                        .map(|e| (Duration::from_secs_f64(st.duration_s), e.reason.clone())),
                    short_sample: p.short_sample.clone(),
                };
            // An earlier tune's probe at this place and rate: its verdict stands.
            if let Some((run, tag, report)) = replay.get(i as usize)
                && tag.probe == i
                && (tag.rate - rate).abs() < 1e-6
                && let Some(stage) = report.stages.first()
            {
                if let Some(why) = &tag.invalid {
                    invalid = Some(why.clone());
                    return Err(None);
                }
                let mut p = probe_result(*run, rate, stage, &self.slos);
                if capped && stage.stopped_early.is_none() {
                    p.short_sample = short_sample(&self.slos, p.requests, p.passed);
                }
                (self.events)(event(&p, stage, true, p.reason.clone()));
                let sample = ProbeSample::of(stage, rate, p.passed);
                probes.push(p);
                return Ok(sample);
            }
            // Stored probes past a divergence are not used.
            replay.truncate(i as usize);
            let warmup = self.applied.as_deref() != Some(key.as_str());
            if warmup {
                (self.events)(Event::Applying {
                    settings: trial.settings.clone(),
                });
                self.applied = None;
                let began = std::time::Instant::now();
                if let Err(e) = self.bench.apply(&serving) {
                    return Err(Some(e));
                }
                self.apply_time += began.elapsed();
                self.applies += 1;
                self.applied = Some(key.clone());
            }
            let duration = probe_duration(self.cfg, &self.slos, rate);
            let stage = crate::vocab::load::Stage {
                name: format!("probe @{}", fmt_rate(rate)),
                rate: crate::vocab::load::Rate::PerSecond(rate),
                duration,
            };
            let began = std::time::Instant::now();
            let mut report = self
                .bench
                .probe(stage.clone(), &self.slos, warmup)
                .map_err(Some)?;
            let invalid_at = |report: &RunReport| match report.stages.first() {
                Some(st) => match crate::loadgen::probe_verdict(st, rate) {
                    ProbeVerdict::Invalid(why) => Some(why),
                    ProbeVerdict::Passed | ProbeVerdict::Failed(_) => None,
                },
                None => None,
            };
            // A generator that fell behind far enough to decide the verdict says nothing
            // about the server: try once more.
            if invalid_at(&report).is_some() {
                report = self.bench.probe(stage, &self.slos, false).map_err(Some)?;
            }
            self.probe_time += began.elapsed();
            self.live_probes += 1;
            self.measured += 1;
            let bottleneck = invalid_at(&report).map(|why| {
                format!(
                    "the load generator was the bottleneck at {} req/s ({why}): give the load test more `workers`, or fewer connections",
                    fmt_rate(rate),
                )
            });
            let Some(st) = report.stages.first().cloned() else {
                return Err(Some(TuneError::Probe("the probe reported no stage".into())));
            };
            let mut p = probe_result(0, rate, &st, &self.slos);
            if capped && st.stopped_early.is_none() {
                p.short_sample = short_sample(&self.slos, p.requests, p.passed);
            }
            let tag = TuneProbe {
                tune: self.cfg.address(),
                settings: settings_j.clone(),
                basis: basis.clone(),
                measurement: m,
                probe: i,
                rate,
                passed: p.passed && bottleneck.is_none(),
                reason: p.reason.clone(),
                invalid: bottleneck.clone(),
            };
            let run = self.bench.store(&report, tag).map_err(Some)?;
            p.run = run;
            let reason = match &bottleneck {
                Some(b) => b.clone(),
                None => p.reason.clone(),
            };
            (self.events)(event(&p, &st, false, reason));
            if let Some(b) = bottleneck {
                invalid = Some(b);
                return Err(None);
            }
            let sample = ProbeSample::of(&st, rate, p.passed);
            probes.push(p);
            Ok(sample)
        });
        let found = match result {
            Ok(c) => c,
            Err(None) => crate::loadgen::SearchOutcome {
                capacity: None,
                floor: None,
            },
            Err(Some(TuneError::Apply(msg))) => {
                invalid = Some(format!("could not apply the settings: {msg}"));
                self.applied = None;
                crate::loadgen::SearchOutcome {
                    capacity: None,
                    floor: None,
                }
            }
            Err(Some(e)) => return Err(e),
        };
        self.per_measurement.push((
            probes.len(),
            warm.is_some(),
            self.probe_time - time_before,
            self.live_probes - live_before,
        ));
        let measurement = Measurement {
            capacity: if invalid.is_some() {
                None
            } else {
                found.capacity
            },
            probes,
            invalid: invalid.clone(),
            floor: if invalid.is_some() { None } else { found.floor },
        };
        if let Some(c) = measurement.capacity {
            self.last_capacity = Some(c);
        }
        (self.events)(Event::Measured {
            settings: trial.settings.clone(),
            capacity: measurement.capacity,
            invalid,
            floor: measurement.floor.clone(),
        });
        trial.measurements.push(measurement);
        Ok(())
    }

    /// Runs the whole search. The serving resource is left at the last trial's settings.
    pub fn run(mut self) -> Result<Outcome, TuneError> {
        let base_settings = baseline_settings(self.cfg, &self.declared);
        let mut trials: Vec<Trial> = Vec::new();
        let repeats = self.cfg.repeats.max(1) as usize;
        let extra = REMEASURE_BEST * (repeats - 1);
        match self.cfg.search {
            Search::Grid => {
                let points = grid(self.cfg);
                let base_key = settings_key(&base_settings);
                let base_in_grid = points.iter().any(|p| settings_key(p) == base_key);
                self.total = points.len() + usize::from(!base_in_grid) + extra;
                // The baseline first, then every other point.
                let mut base = self.new_trial(base_settings.clone(), true);
                self.measure(&mut base)?;
                trials.push(base);
                for p in points {
                    if settings_key(&p) == base_key {
                        continue;
                    }
                    let mut t = self.new_trial(p, false);
                    self.measure(&mut t)?;
                    trials.push(t);
                }
            }
            Search::Auto => {
                self.total = (self.cfg.max_trials as usize) + extra;
                let mut base = self.new_trial(base_settings.clone(), true);
                self.measure(&mut base)?;
                trials.push(base);
                self.descend(&mut trials, &base_settings)?;
                self.total = trials.len() + extra;
            }
        }
        // Measure the best three again until each has `repeats` measurements. A
        // re-measurement can move a trial down the ranking and let one measured once into the
        // top three, so rank again until the top three are all measured in full: the winner
        // is never a configuration measured fewer times than its rivals.
        if repeats > 1 {
            loop {
                let mut order: Vec<usize> = (0..trials.len())
                    .filter(|&i| self.score(&trials[i]).is_some())
                    .collect();
                order.sort_by(|&a, &b| {
                    let (sa, sb) = (self.score(&trials[a]), self.score(&trials[b]));
                    sb.unwrap_or(f64::MIN).total_cmp(&sa.unwrap_or(f64::MIN))
                });
                let short: Vec<usize> = order
                    .iter()
                    .take(REMEASURE_BEST)
                    .copied()
                    .filter(|&i| trials[i].measurements.len() < repeats)
                    .collect();
                if short.is_empty() {
                    break;
                }
                // Planned: the remeasurements of the current top three.
                self.total = self.done
                    + short
                        .iter()
                        .map(|&i| repeats - trials[i].measurements.len())
                        .sum::<usize>();
                for i in short {
                    while trials[i].measurements.len() < repeats && trials[i].invalid().is_none() {
                        let mut t = trials[i].clone();
                        self.measure(&mut t)?;
                        trials[i] = t;
                    }
                }
            }
        }
        Ok(self.finish(trials))
    }

    /// Coordinate descent from the baseline: along each dimension in turn, measure its other
    /// values and move to the best; stop when a whole pass gains less than `AUTO_MIN_GAIN`
    /// or `max_trials` configurations were measured.
    fn descend(&mut self, trials: &mut Vec<Trial>, base: &Settings) -> Result<(), TuneError> {
        // Start from the baseline's values where they are in the space, else the first value.
        let mut point: Settings = self
            .cfg
            .space
            .iter()
            .map(|d| {
                let v = base
                    .get(&d.knob.key())
                    .cloned()
                    .flatten()
                    .filter(|v| d.values.contains(v))
                    .or_else(|| d.values.first().cloned());
                (d.knob.key(), v)
            })
            .collect();
        let max = self.cfg.max_trials as usize;
        let find = |trials: &Vec<Trial>, s: &Settings| {
            let k = settings_key(s);
            trials.iter().position(|t| t.key() == k)
        };
        if find(trials, &point).is_none() && trials.len() < max {
            let mut t = self.new_trial(point.clone(), false);
            self.measure(&mut t)?;
            trials.push(t);
        }
        loop {
            let start_score = find(trials, &point)
                .and_then(|i| self.score(&trials[i]))
                .unwrap_or(f64::MIN);
            let mut current = start_score;
            for d in self.cfg.space.clone() {
                for v in &d.values {
                    let mut cand = point.clone();
                    cand.insert(d.knob.key(), Some(v.clone()));
                    if find(trials, &cand).is_some() {
                        continue;
                    }
                    if trials.len() >= max {
                        return Ok(());
                    }
                    let mut t = self.new_trial(cand, false);
                    self.measure(&mut t)?;
                    trials.push(t);
                }
                // Move along this dimension to its best value.
                for v in &d.values {
                    let mut cand = point.clone();
                    cand.insert(d.knob.key(), Some(v.clone()));
                    if let Some(i) = find(trials, &cand)
                        && let Some(s) = self.score(&trials[i])
                        && s > current
                    {
                        current = s;
                        point = cand;
                    }
                }
            }
            let gained = if start_score == f64::MIN {
                current > f64::MIN
            } else {
                current - start_score > AUTO_MIN_GAIN * start_score.abs()
            };
            if !gained {
                return Ok(());
            }
        }
    }

    fn finish(self, trials: Vec<Trial>) -> Outcome {
        let baseline = trials.iter().position(|t| t.baseline).unwrap_or(0);
        let mut ranked: Vec<(usize, f64)> = trials
            .iter()
            .enumerate()
            .filter_map(|(i, t)| self.score(t).map(|s| (i, s)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        let winner = ranked.first().map(|(i, _)| *i);
        let lead_within_noise = match (ranked.first(), ranked.get(1)) {
            (Some((w, _)), Some((r, _))) => match (trials[*w].spread(), trials[*r].spread()) {
                (Some((wmin, _)), Some((_, rmax))) => wmin <= rmax,
                _ => false,
            },
            _ => false,
        };
        let sizing = match (winner, self.cfg.target_rate) {
            (Some(w), Some(target)) => trials[w].capacity().map(|cap| {
                let replicas = trials[w].serving.replicas.max(1);
                let per_replica = cap / f64::from(replicas);
                let needed = (target / per_replica).ceil().max(1.0) as u32;
                let nodes_now = self.pricing.as_ref().map(|p| p.nodes).unwrap_or(1);
                let nodes = ((f64::from(nodes_now) * f64::from(needed)) / f64::from(replicas))
                    .ceil()
                    .max(1.0) as u32;
                Sizing {
                    target_rate: target,
                    replicas: needed,
                    nodes,
                    monthly_cost: self
                        .pricing
                        .as_ref()
                        .map(|p| f64::from(nodes) * p.hourly_price * 730.0),
                }
            }),
            _ => None,
        };
        Outcome {
            tune: self.cfg.address(),
            objective: self.cfg.objective,
            slos: self.slos,
            baseline,
            trials,
            winner,
            lead_within_noise,
            probes: self.probes,
            probes_measured: self.measured,
            pricing: self.pricing,
            sizing,
        }
    }
}

impl Outcome {
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
        let head = format!(
            "In {} probes across {} configurations",
            self.probes,
            self.trials.len()
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
                "cost_per_million": cap.and_then(|c| self.pricing.as_ref().and_then(|p| p.cost_per_million(c))),
                "spread": t.spread().map(|(a, b)| serde_json::json!({"min": a, "max": b})),
                "measurements": t.measurements,
                "floor": t.floor(),
                "never_passes": t.floor().is_some(),
                "reason": t.reason(),
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

#[cfg(test)]
mod tests;
