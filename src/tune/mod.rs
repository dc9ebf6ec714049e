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
//! load generator's one verdict (`loadgen::probe_verdict` over `verdict::stage_failures`, with
//! failed requests counted against every SLO and an error-rate objective added when the load
//! test has none); a miss the generator's own lag accounts for is no verdict on the server
//! (the probe is repeated once, then the trial is invalid). The outer loop is a grid or a coordinate descent, then the best three are
//! measured again and ranked by the median. A configuration whose replicas cannot all be
//! scheduled on the serving nodes ([`Bench::fits`]) is listed before the first trial and
//! recorded as not run, never ranked.
//!
//! Nothing here prints: the CLI is told what happens through [`Event`]s.

pub mod bench;
mod outcome;
pub mod prices;
mod probe;
mod space;
pub mod write;

pub use outcome::*;
use probe::probe_result;
pub use probe::{MAX_PROBE_FACTOR, probe_duration, samples_needed, short_sample};
pub use space::*;

pub use crate::vocab::load::format_rate as fmt_rate;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::loadgen::{CapacitySearch, Floor, ProbeSample, ProbeVerdict, RunReport, StageReport};
use crate::stack::tune::{Objective, Search, TuneConfig};
use crate::state::TuneProbe;
use crate::vocab::load::Slo;
use crate::vocab::resources::ServingConfig;

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
    /// Checks the applied configuration's answers (`loadgen::answers`) with the server idle;
    /// None when they cannot be checked.
    fn answers(&mut self) -> Result<Option<crate::loadgen::answers::AnswerCheck>, TuneError> {
        Ok(None)
    }
    /// Whether all of `serving`'s replicas can be scheduled on its nodes (the plan's capacity
    /// check, with the machine shapes the preflight read): `Err` says why not. A bench that
    /// cannot tell answers `Ok`.
    fn fits(&self, _serving: &ServingConfig) -> Result<(), String> {
        Ok(())
    }
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
    /// Before the first trial: the configurations with these settings of `replicas`, `cpu`
    /// and `memory` cannot all be scheduled on the serving nodes, so they are not run.
    /// `trials`: how many of the grid's trials that is (None for `auto`, which skips them
    /// wherever the search reaches them); `baseline`: the stack's own configuration is one.
    DoesNotFit {
        settings: Settings,
        trials: Option<usize>,
        baseline: bool,
        reason: String,
    },
    /// A trial not run: it does not fit (reported up front by [`Event::DoesNotFit`]).
    NotRun { settings: Settings, baseline: bool },
    /// Putting the serving resource back to what the stack declares.
    Restoring,
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
    /// Why the applied configuration cannot win: batching changed its answers.
    answers_differ: Option<String>,
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
            answers_differ: None,
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
            not_run: None,
        }
    }

    /// The trial of `settings`, measured, or recorded as not run when it does not fit.
    fn run_trial(&mut self, settings: Settings, baseline: bool) -> Result<Trial, TuneError> {
        let mut t = self.new_trial(settings, baseline);
        match self.bench.fits(&t.serving) {
            Ok(()) => self.measure(&mut t)?,
            Err(why) => {
                (self.events)(Event::NotRun {
                    settings: t.settings.clone(),
                    baseline,
                });
                t.not_run = Some(format!("does not fit: {why}"));
            }
        }
        Ok(t)
    }

    /// Before the first trial: every combination of the space's `replicas`, `cpu` and
    /// `memory` values (the settings that decide whether the pods can be scheduled) that
    /// does not fit, and the stack's own configuration when it does not, each reported once
    /// ([`Event::DoesNotFit`]). `points`: the grid, to count the trials each one rules out.
    fn report_unfit(&self, points: Option<&[Settings]>) {
        use crate::stack::tune::Knob;
        let sizing = |k: &Knob| matches!(k, Knob::Replicas | Knob::Cpu | Knob::Memory);
        let mut combos: Vec<Settings> = vec![Settings::new()];
        for d in self.cfg.space.iter().filter(|d| sizing(&d.knob)) {
            combos = combos
                .iter()
                .flat_map(|c| {
                    d.values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.insert(d.knob.clone(), Some(v.clone()));
                        c
                    })
                })
                .collect();
        }
        let base: Settings = baseline_settings(self.cfg, &self.declared)
            .into_iter()
            .filter(|(k, _)| sizing(k))
            .collect();
        let base_in_space = combos
            .iter()
            .any(|c| settings_key(c) == settings_key(&base));
        let matches =
            |combo: &Settings, p: &Settings| combo.iter().all(|(k, v)| p.get(k) == Some(v));
        for combo in &combos {
            let serving = trial_serving(&self.declared, combo);
            if let Err(reason) = self.bench.fits(&serving) {
                (self.events)(Event::DoesNotFit {
                    settings: combo.clone(),
                    trials: points.map(|ps| ps.iter().filter(|p| matches(combo, p)).count()),
                    baseline: settings_key(combo) == settings_key(&base),
                    reason,
                });
            }
        }
        if !base_in_space && let Err(reason) = self.bench.fits(&self.declared) {
            (self.events)(Event::DoesNotFit {
                settings: base,
                trials: Some(1),
                baseline: true,
                reason,
            });
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
                // The server is idle now: do its answers under batching match them sent
                // alone? A configuration that changes answers cannot win.
                self.answers_differ = self
                    .bench
                    .answers()
                    .map_err(Some)?
                    .filter(|c| c.differs())
                    .map(|c| format!("batching changes the answers: {}", c.summary()));
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
            // The generator's verdict on the probe, else the run's own (a distributed
            // probe whose workers did not start together is no evidence either).
            let invalid_at = |report: &RunReport| match report.stages.first() {
                Some(st) => match crate::loadgen::probe_verdict(st, rate) {
                    ProbeVerdict::Invalid(why) => Some(why),
                    ProbeVerdict::Passed | ProbeVerdict::Failed(_) => report.invalid.clone(),
                },
                None => report.invalid.clone(),
            };
            // A generator that fell behind far enough to decide the verdict says nothing
            // about the server: try once more.
            if invalid_at(&report).is_some() {
                report = self.bench.probe(stage, &self.slos, false).map_err(Some)?;
            }
            self.probe_time += began.elapsed();
            self.live_probes += 1;
            self.measured += 1;
            let answers_differ = self.answers_differ.clone();
            let bottleneck = answers_differ.or_else(|| invalid_at(&report).map(|why| {
                if report.invalid.as_deref() == Some(why.as_str()) && !why.contains("bottleneck") {
                    format!("the probe at {} req/s is invalid ({why})", fmt_rate(rate))
                } else {
                    format!(
                        "the load generator was the bottleneck at {} req/s ({why}): give the load test more `workers`, or fewer connections",
                        fmt_rate(rate),
                    )
                }
            }));
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
                self.report_unfit(Some(&points));
                let base_key = settings_key(&base_settings);
                let fits = |s: &Settings, baseline: bool| {
                    let serving = if baseline {
                        self.declared.clone()
                    } else {
                        trial_serving(&self.declared, s)
                    };
                    self.bench.fits(&serving).is_ok()
                };
                // Only what will run counts towards the measurements planned.
                let runnable = points
                    .iter()
                    .filter(|p| settings_key(p) != base_key && fits(p, false))
                    .count();
                self.total = runnable + usize::from(fits(&base_settings, true)) + extra;
                // The baseline first, then every other point.
                let base = self.run_trial(base_settings.clone(), true)?;
                trials.push(base);
                for p in points {
                    if settings_key(&p) == base_key {
                        continue;
                    }
                    let t = self.run_trial(p, false)?;
                    trials.push(t);
                }
            }
            Search::Auto => {
                self.report_unfit(None);
                self.total = (self.cfg.max_trials as usize) + extra;
                let base = self.run_trial(base_settings.clone(), true)?;
                trials.push(base);
                self.descend(&mut trials, &base_settings)?;
                self.total = trials.iter().filter(|t| t.not_run.is_none()).count() + extra;
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
                    .get(&d.knob)
                    .cloned()
                    .flatten()
                    .filter(|v| d.values.contains(v))
                    .or_else(|| d.values.first().cloned());
                (d.knob.clone(), v)
            })
            .collect();
        let max = self.cfg.max_trials as usize;
        let find = |trials: &Vec<Trial>, s: &Settings| {
            let k = settings_key(s);
            trials.iter().position(|t| t.key() == k)
        };
        // Configurations not run (they do not fit) do not count towards `max_trials`.
        let run = |trials: &Vec<Trial>| trials.iter().filter(|t| t.not_run.is_none()).count();
        if find(trials, &point).is_none() && run(trials) < max {
            let t = self.run_trial(point.clone(), false)?;
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
                    cand.insert(d.knob.clone(), Some(v.clone()));
                    if find(trials, &cand).is_some() {
                        continue;
                    }
                    if run(trials) >= max {
                        return Ok(());
                    }
                    let t = self.run_trial(cand, false)?;
                    trials.push(t);
                }
                // Move along this dimension to its best value.
                for v in &d.values {
                    let mut cand = point.clone();
                    cand.insert(d.knob.clone(), Some(v.clone()));
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

#[cfg(test)]
mod tests;
