//! The search against a model of a server whose capacity is a known function of its settings.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::loadgen::histogram::{encode_histogram, new_histogram};
use crate::loadgen::verdict::judge;
use crate::loadgen::{LagSummary, Percentiles};
use crate::stack::tune::{Dimension, Knob, Objective, Search, TuneConfig};
use crate::vocab::load::{Arrival, Protocol, Stage};
use crate::vocab::resources::{Address, BatchingConfig, FlagValue, Kind, Span};

fn knob(key: &str) -> Knob {
    Knob::parse(key).expect("a knob")
}

/// A model server: capacity by (max_batch_size, num_batch_threads); threads = 4 sheds load
/// (above its 200 req/s it fails the excess fast); max_batch_size = 128 answers no faster than
/// 72 ms at any rate (a latency floor above the 50 ms SLO); threads = 3 fails 5% of requests
/// at any rate (an error-rate floor); max_batch_size = 2 carries only 5 req/s.
struct Model {
    stored: Vec<(u64, TuneProbe, RunReport)>,
    applied: Option<ServingConfig>,
    probes: Cell<usize>,
    applies: usize,
    /// Interrupt after this many live probes.
    stop_after: Option<usize>,
    /// The generator falls behind at and above this rate.
    generator_limit: f64,
    /// Probes of configurations with this many batch threads come back invalid (a late
    /// distributed worker).
    late_worker_threads: Option<u64>,
    /// Configurations with at least this max_batch_size change answers under batching.
    corrupt_batch: Option<u64>,
    answer_checks: u32,
    /// (capacity, probes, factor): the configuration of that capacity carries only `factor`
    /// of it after that many probes of it (a measurement that does not repeat).
    fade: Option<(f64, usize, f64)>,
    faded_probes: Cell<usize>,
    /// Every live probe: (rate, duration).
    rates: std::cell::RefCell<Vec<(f64, Duration)>>,
    /// The node pool holds at most this many replicas (`Bench::fits`).
    max_replicas: Option<u32>,
    /// The replica count of every configuration applied.
    applied_replicas: Vec<u32>,
}

fn capacity_of(s: &ServingConfig) -> f64 {
    let b = s.batching.clone().unwrap_or_default();
    match (b.max_batch_size, b.num_batch_threads) {
        (Some(2), _) => 5.0,
        (Some(128), Some(2)) => 768.0,
        (Some(128), _) => 480.0,
        (Some(32), Some(2)) => 1000.0,
        (Some(32), Some(1)) => 600.0,
        (Some(8), Some(2)) => 500.0,
        (Some(8), Some(1)) => 300.0,
        (_, Some(4)) => 200.0,
        _ => 250.0,
    }
}

/// What the model answers: (latency floor µs, share of requests failed at any rate).
fn floors_of(s: &ServingConfig) -> (u64, f64) {
    let b = s.batching.clone().unwrap_or_default();
    let latency = if b.max_batch_size == Some(128) {
        72_000
    } else {
        1_000
    };
    let errors = if b.num_batch_threads == Some(3) {
        0.05
    } else {
        0.0
    };
    (latency, errors)
}

#[allow(clippy::too_many_arguments)]
fn report(
    rate: f64,
    duration: Duration,
    slos: &[Slo],
    cap: f64,
    sheds: bool,
    lag: bool,
    (floor_us, floor_errors): (u64, f64),
) -> RunReport {
    let n = (rate * duration.as_secs_f64()) as u64;
    let (ok, failed, lat_us) = if rate <= cap {
        let failed = (n as f64 * floor_errors).round() as u64;
        (n - failed, failed, floor_us)
    } else if sheds {
        let ok = (n as f64 * cap / rate) as u64;
        (ok, n - ok, floor_us)
    } else {
        (n, 0, 500_000)
    };
    let mut h = new_histogram();
    h.record_n(lat_us, ok).unwrap();
    // Completions per second: the offered rate while the server keeps up (or sheds the
    // excess fast), its capacity while a queue grows.
    let secs = duration.as_secs_f64().floor() as u32;
    let per_second = |share: u64| (share as f64 / duration.as_secs_f64()).round() as u64;
    let timeline = (0..secs)
        .map(|t| {
            let (requests, errors) = if rate <= cap || sheds {
                (per_second(n), per_second(failed))
            } else {
                (cap.round() as u64, 0)
            };
            crate::loadgen::TimelinePoint {
                t,
                requests,
                errors,
                ..Default::default()
            }
        })
        .collect();
    let stage = StageReport {
        name: "probe".into(),
        target_rate: Some(rate),
        closed_loop: false,
        duration_s: duration.as_secs_f64(),
        requests: n,
        // A generator at its limit does not send the whole offered rate.
        achieved_rate: if lag { rate * 0.9 } else { rate },
        errors_total: failed,
        errors: BTreeMap::new(),
        error_rate: if n > 0 { failed as f64 / n as f64 } else { 0.0 },
        latency_ms: Percentiles::default(),
        service_time_ms: Percentiles::default(),
        generator_lag_ms: LagSummary::default(),
        queue_wait_ms: LagSummary::default(),
        histogram: encode_histogram(&h),
        service_time_histogram: String::new(),
        generator_lag_histogram: String::new(),
        queue_wait_histogram: String::new(),
        slos: judge(slos, &h, failed),
        generator_bottleneck: lag,
        bottleneck: lag.then(|| "lagging".to_string()),
        in_flight_cap_hits: 0,
        timeline,
        stopped_early: None,
        server: None,
        server_note: None,
    };
    RunReport {
        target: "model".into(),
        protocol: Protocol::Rest,
        model: "m".into(),
        stages: vec![stage],
        capacity: None,
        environment: crate::environment::Environment::detect(),
        arrival: Arrival::Constant,
        connections: 1,
        slos: slos.to_vec(),
        workers: 1,
        invalid: None,
        worker_diagnostics: Vec::new(),
        answers: None,
    }
}

impl Model {
    fn new() -> Self {
        Model {
            stored: Vec::new(),
            applied: None,
            probes: Cell::new(0),
            applies: 0,
            stop_after: None,
            generator_limit: f64::INFINITY,
            late_worker_threads: None,
            corrupt_batch: None,
            answer_checks: 0,
            fade: None,
            faded_probes: Cell::new(0),
            rates: Default::default(),
            max_replicas: None,
            applied_replicas: Vec::new(),
        }
    }
}

impl Bench for Model {
    fn apply(&mut self, serving: &ServingConfig) -> Result<(), TuneError> {
        self.applies += 1;
        self.applied = Some(serving.clone());
        self.applied_replicas.push(serving.replicas);
        Ok(())
    }

    fn fits(&self, serving: &ServingConfig) -> Result<(), String> {
        match self.max_replicas {
            Some(max) if serving.replicas > max => Err(format!(
                "{} replicas do not fit on the model's {max}",
                serving.replicas
            )),
            _ => Ok(()),
        }
    }

    fn probe(&mut self, stage: Stage, slos: &[Slo], _warmup: bool) -> Result<RunReport, TuneError> {
        if self.stop_after == Some(self.probes.get()) {
            return Err(TuneError::Interrupted);
        }
        self.probes.set(self.probes.get() + 1);
        let s = self.applied.clone().expect("applied before probing");
        let rate = match stage.rate {
            crate::vocab::load::Rate::PerSecond(r) => r,
            crate::vocab::load::Rate::Max => 0.0,
        };
        let sheds = s.batching.as_ref().and_then(|b| b.num_batch_threads) == Some(4);
        let mut capacity = capacity_of(&s);
        if let Some((of, after, factor)) = self.fade
            && capacity == of
        {
            self.faded_probes.set(self.faded_probes.get() + 1);
            if self.faded_probes.get() > after {
                capacity *= factor;
            }
        }
        self.rates.borrow_mut().push((rate, stage.duration));
        let mut r = report(
            rate,
            stage.duration,
            slos,
            capacity,
            sheds,
            rate >= self.generator_limit,
            floors_of(&s),
        );
        // The server's side as a scrape would give it: batches half full, a core per thread.
        let b = s.batching.clone().unwrap_or_default();
        if self.late_worker_threads.is_some() && b.num_batch_threads == self.late_worker_threads {
            r.invalid =
                Some("worker 1 started 80.0 ms after the common start (bound 50 ms)".into());
        }
        r.stages[0].server = Some(crate::loadgen::server::ServerStage {
            replicas: 1,
            requests: BTreeMap::new(),
            batch_size: Some(crate::loadgen::server::BatchSize {
                avg: b.max_batch_size.unwrap_or(1) as f64 / 2.0,
                p50: 1.0,
                p99: 1.0,
            }),
            batches: None,
            padding_ratio: None,
            queue_wait_ms: None,
            runtime_ms: None,
            request_ms: None,
            cpu_cores: Some(b.num_batch_threads.unwrap_or(1) as f64),
            cpu_throttled_ratio: None,
            per_replica_share: vec![1.0],
        });
        Ok(r)
    }

    fn answers(&mut self) -> Result<Option<crate::loadgen::answers::AnswerCheck>, TuneError> {
        self.answer_checks += 1;
        let s = self.applied.clone().expect("applied before checking");
        let b = s.batching.and_then(|b| b.max_batch_size).unwrap_or(1);
        let differing = u32::from(self.corrupt_batch.is_some_and(|c| b >= c));
        Ok(Some(crate::loadgen::answers::AnswerCheck {
            sample: 16,
            compared: 16,
            tolerance: crate::loadgen::answers::TOLERANCE,
            differing: differing * 16,
            worst: None,
            note: None,
        }))
    }

    fn store(&mut self, report: &RunReport, tag: TuneProbe) -> Result<u64, TuneError> {
        let id = self.stored.len() as u64 + 1;
        self.stored.push((id, tag, report.clone()));
        Ok(id)
    }

    fn stored(&self) -> Result<Vec<(u64, TuneProbe, RunReport)>, TuneError> {
        Ok(self.stored.clone())
    }
}

fn serving() -> ServingConfig {
    ServingConfig {
        cluster: Address {
            kind: Kind::Cluster,
            name: "local".into(),
            key: None,
        },
        image: None,
        image_from: None,
        replicas: 1,
        models: Vec::new(),
        flags: BTreeMap::new(),
        batching: Some(BatchingConfig {
            max_batch_size: Some(8),
            num_batch_threads: Some(1),
            ..Default::default()
        }),
        cpu: None,
        memory: None,
    }
}

fn config(search: Search, threads: &[i64], repeats: u32) -> TuneConfig {
    TuneConfig {
        name: "batching".into(),
        span: Span::default(),
        serving: Address {
            kind: Kind::Serving,
            name: "tf".into(),
            key: None,
        },
        loadtest: Address {
            kind: Kind::Loadtest,
            name: "lt".into(),
            key: None,
        },
        space: vec![
            Dimension {
                knob: Knob::Batching("max_batch_size".into()),
                values: vec![FlagValue::Int(8), FlagValue::Int(32)],
            },
            Dimension {
                knob: Knob::Batching("num_batch_threads".into()),
                values: threads.iter().map(|t| FlagValue::Int(*t)).collect(),
            },
        ],
        search,
        start_rate: 100.0,
        probe_duration: Duration::from_secs(1),
        precision: 0.05,
        repeats,
        objective: Objective::Capacity,
        target_rate: None,
        max_trials: 50,
    }
}

fn slos() -> Vec<Slo> {
    vec![Slo::Latency {
        percentile: 95.0,
        limit: Duration::from_millis(50),
    }]
}

fn run(cfg: &TuneConfig, bench: &mut Model) -> Result<Outcome, TuneError> {
    let events = |_e: Event| {};
    Tuner::new(
        cfg,
        serving(),
        &slos(),
        "basis".into(),
        None,
        bench,
        &events,
    )?
    .run()
}

fn winner_settings(o: &Outcome) -> String {
    settings_text(&o.trials[o.winner.unwrap()].settings)
}

#[test]
fn the_grid_names_the_configuration_with_the_most_capacity_within_the_precision() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    assert_eq!(o.trials.len(), 4, "the baseline is a grid point");
    assert!(o.trials[0].baseline);
    assert_eq!(
        winner_settings(&o),
        "batching.max_batch_size=32, batching.num_batch_threads=2"
    );
    let cap = o.trials[o.winner.unwrap()].capacity().unwrap();
    assert!((950.0..=1000.0).contains(&cap), "{cap}");
    let s = o.sentence();
    assert!(
        s.contains("% more than the current configuration (300"),
        "{s}"
    );
    // The model's server batches half of max_batch_size: 16 rows for 32, 4 for 8.
    assert!(
        s.contains(
            "its batches average 16.0 rows at capacity against 4.0 for the current configuration"
        ),
        "{s}"
    );
}

fn passing_probe(batch_avg: Option<f64>, throttled: Option<f64>) -> ProbeResult {
    ProbeResult {
        run: 1,
        rate: 400.0,
        passed: true,
        reason: String::new(),
        latency_ms: Some(10.0),
        p99_ms: Some(10.0),
        error_rate: 0.0,
        requests: 800,
        duration_s: 2.0,
        stopped_early: None,
        short_sample: None,
        batch_avg,
        cpu_cores: Some(1.0),
        cpu_throttled_ratio: throttled,
    }
}

fn trial_with(serving: ServingConfig, probe: ProbeResult) -> Trial {
    Trial {
        settings: Settings::new(),
        baseline: false,
        serving,
        measurements: vec![Measurement {
            capacity: Some(probe.rate),
            probes: vec![probe],
            invalid: None,
            floor: None,
        }],
        not_run: None,
    }
}

#[test]
fn a_trial_throttled_or_batching_rows_of_one_at_capacity_is_warned_about() {
    let throttled = trial_with(serving(), passing_probe(Some(4.0), Some(0.25)));
    let w = throttled.server_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("throttled in 25% of CPU periods"), "{w:?}");

    let unbatched = trial_with(serving(), passing_probe(Some(1.1), Some(0.02)));
    let w = unbatched.server_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("batches averaged 1.1 rows at 400 req/s"),
        "{w:?}"
    );

    // Without batching a batch of one is the configuration, not a finding; unknown figures
    // (a server without metrics) warn about nothing.
    let mut plain = serving();
    plain.batching = None;
    assert!(
        trial_with(plain, passing_probe(Some(1.0), None))
            .server_warnings()
            .is_empty()
    );
    assert!(
        trial_with(serving(), passing_probe(None, None))
            .server_warnings()
            .is_empty()
    );
}

#[test]
fn the_load_shedding_configuration_never_wins() {
    let cfg = config(Search::Grid, &[1, 2, 4], 1);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    let shed = o
        .trials
        .iter()
        .find(|t| {
            t.settings.get(&knob("batching.num_batch_threads")) == Some(&Some(FlagValue::Int(4)))
        })
        .unwrap();
    // It "serves" any rate with fast errors; counted failures cap it at its real capacity
    // (and the 1% the error-rate objective allows above it).
    assert!(shed.capacity().unwrap() <= 200.0 / 0.99);
    assert_eq!(
        winner_settings(&o),
        "batching.max_batch_size=32, batching.num_batch_threads=2"
    );
}

#[test]
fn the_best_three_are_measured_repeats_times_and_the_rest_once() {
    let cfg = config(Search::Grid, &[1, 2], 3);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    let mut counts: Vec<usize> = o.trials.iter().map(|t| t.measurements.len()).collect();
    counts.sort();
    assert_eq!(counts, vec![1, 3, 3, 3]);
    // Identical measurements: no spread, and the lead is not inside the noise.
    assert!(!o.lead_within_noise);
}

#[test]
fn a_configuration_measured_once_cannot_win_over_ones_measured_in_full() {
    let cfg = config(Search::Grid, &[1, 2], 3);
    let mut reference = Model::new();
    let first = run(&cfg, &mut reference).unwrap();
    let probes_of_best = first
        .trials
        .iter()
        .find(|t| settings_key(&t.settings).ends_with("=32,batching.num_batch_threads=2"))
        .map(|t| t.measurements[0].probes.len())
        .unwrap();
    // The best configuration's first measurement does not repeat: it falls to a fifth, below
    // the baseline (300 req/s), which was measured once and now ranks among the best three.
    let mut m = Model::new();
    m.fade = Some((1000.0, probes_of_best, 0.2));
    let o = run(&cfg, &mut m).unwrap();
    // All four were among the best three at some point, so all are measured in full.
    for t in &o.trials {
        assert_eq!(t.measurements.len(), 3, "{}", settings_key(&t.settings));
    }
    assert_eq!(
        winner_settings(&o),
        "batching.max_batch_size=32, batching.num_batch_threads=1"
    );
}

#[test]
fn an_interrupted_tune_resumes_without_measuring_finished_trials_again() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut full = Model::new();
    let reference = run(&cfg, &mut full).unwrap();
    let total = full.probes.get();

    let mut m = Model::new();
    m.stop_after = Some(total / 2);
    assert!(matches!(run(&cfg, &mut m), Err(TuneError::Interrupted)));
    let before = m.probes.get();
    m.stop_after = None;
    let o = run(&cfg, &mut m).unwrap();
    // The second run measured only what the first did not.
    assert_eq!(m.probes.get() - before, total - before);
    assert_eq!(o.probes_measured, total - before);
    assert_eq!(winner_settings(&o), winner_settings(&reference));
    // A third run measures nothing and applies nothing.
    let applies = m.applies;
    let again = run(&cfg, &mut m).unwrap();
    assert_eq!(again.probes_measured, 0);
    assert_eq!(m.applies, applies);
}

#[test]
fn a_generator_bottleneck_makes_the_trial_invalid_with_the_reason() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    m.generator_limit = 900.0;
    let o = run(&cfg, &mut m).unwrap();
    let best = o
        .trials
        .iter()
        .find(|t| {
            settings_key(&t.settings).contains("max_batch_size=32,batching.num_batch_threads=2")
        })
        .unwrap();
    let why = best.invalid().unwrap();
    assert!(why.contains("load generator was the bottleneck"), "{why}");
    assert!(why.contains("workers"), "{why}");
    // The winner is the best configuration the generator could measure.
    assert_eq!(
        winner_settings(&o),
        "batching.max_batch_size=32, batching.num_batch_threads=1"
    );
}

#[test]
fn an_invalid_distributed_probe_makes_the_trial_invalid_and_it_cannot_win() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    // Two threads would win (see the bottleneck test) but every probe of them is invalid.
    m.late_worker_threads = Some(2);
    let o = run(&cfg, &mut m).unwrap();
    let two = o
        .trials
        .iter()
        .find(|t| {
            settings_key(&t.settings).contains("max_batch_size=32,batching.num_batch_threads=2")
        })
        .unwrap();
    let why = two.invalid().unwrap();
    assert!(why.contains("worker 1 started 80.0 ms"), "{why}");
    assert!(!why.contains("load generator"), "{why}");
    assert_eq!(
        winner_settings(&o),
        "batching.max_batch_size=32, batching.num_batch_threads=1"
    );
}

#[test]
fn a_configuration_whose_answers_change_under_batching_cannot_win() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    // max_batch_size 32 would win; its answers differ.
    m.corrupt_batch = Some(32);
    let o = run(&cfg, &mut m).unwrap();
    for t in &o.trials {
        let key = settings_key(&t.settings);
        if key.contains("max_batch_size=32") {
            let why = t
                .invalid()
                .unwrap_or_else(|| panic!("{key} should be invalid"));
            assert!(why.contains("batching changes the answers"), "{why}");
            assert!(why.contains("relative tolerance 1e-4"), "{why}");
            // One probe, then no more measuring of a configuration that cannot win.
            assert_eq!(t.measurements[0].probes.len(), 0, "{key}");
        } else {
            assert_eq!(t.invalid(), None, "{key}");
        }
    }
    let w = winner_settings(&o);
    assert!(w.contains("max_batch_size=8"), "{w}");
    assert!(
        m.answer_checks >= 2,
        "checked once per applied configuration"
    );
}

#[test]
fn probes_are_lengthened_to_the_samples_their_percentile_needs() {
    let cfg = config(Search::Grid, &[1], 1);
    let p99 = vec![Slo::Latency {
        percentile: 99.0,
        limit: Duration::from_millis(50),
    }];
    assert_eq!(samples_needed(&p99), 1000);
    // 1 s at 500 req/s is 500 requests: 2 s are needed for p99.
    assert_eq!(probe_duration(&cfg, &p99, 500.0), Duration::from_secs(2));
    assert_eq!(probe_duration(&cfg, &p99, 5000.0), Duration::from_secs(1));
    // At 100 req/s it would take 10 s: the cap is 4 × probe_duration.
    assert_eq!(probe_duration(&cfg, &p99, 100.0), Duration::from_secs(4));
}

#[test]
fn auto_climbs_from_the_current_configuration_to_the_best() {
    let cfg = config(Search::Auto, &[1, 2, 4], 1);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    assert_eq!(
        winner_settings(&o),
        "batching.max_batch_size=32, batching.num_batch_threads=2"
    );
    assert!(o.trials.len() <= 6, "{}", o.trials.len());
}

#[test]
fn the_json_has_the_documented_shape() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    let j = o.to_json();
    assert_eq!(j["tune"], "tune.batching");
    assert_eq!(j["winner"]["settings"]["batching.max_batch_size"], 32);
    assert!(j["baseline"]["capacity"].is_number());
    let t = &j["trials"][0];
    for k in [
        "settings",
        "capacity",
        "passed",
        "p99_ms",
        "error_rate",
        "cost_per_million",
        "measurements",
        "reason",
        "batch_avg",
        "cpu_cores",
        "cpu_throttled_ratio",
        "warnings",
    ] {
        assert!(t.get(k).is_some(), "{k} missing in {t}");
    }
}

#[test]
fn the_grid_changes_one_setting_per_trial_with_replicas_innermost() {
    let mut cfg = config(Search::Grid, &[1, 2, 4], 1);
    cfg.space.insert(
        0,
        Dimension {
            knob: Knob::Replicas,
            values: vec![FlagValue::Int(1), FlagValue::Int(2)],
        },
    );
    let points = grid(&cfg);
    assert_eq!(points.len(), 2 * 2 * 3, "every combination");
    let keys: std::collections::BTreeSet<String> = points.iter().map(settings_key).collect();
    assert_eq!(keys.len(), points.len(), "no combination twice");
    for pair in points.windows(2) {
        let changed: Vec<&Knob> = pair[0]
            .iter()
            .filter(|(k, v)| pair[1].get(*k) != Some(*v))
            .map(|(k, _)| k)
            .collect();
        assert_eq!(changed.len(), 1, "{:?} -> {:?}", pair[0], pair[1]);
    }
    // Replicas vary innermost: the settings that restart servers change only between their
    // 6 combinations (5 times), and each replica count in between is a scale, not a rollout.
    let restarts = points
        .windows(2)
        .filter(|w| {
            w[0].iter()
                .any(|(k, v)| *k != Knob::Replicas && w[1].get(k) != Some(v))
        })
        .count();
    assert_eq!(restarts, 5, "{points:?}");
    // The first dimension the user gave (after replicas) stays outermost.
    let mbs: Vec<&Option<FlagValue>> = points
        .iter()
        .map(|p| &p[&knob("batching.max_batch_size")])
        .collect();
    assert!(
        mbs[..6].iter().all(|v| **v == Some(FlagValue::Int(8))),
        "{mbs:?}"
    );
}

fn batch_grid(sizes: &[i64], threads: &[i64]) -> TuneConfig {
    let mut cfg = config(Search::Grid, threads, 1);
    cfg.space[0].values = sizes.iter().map(|b| FlagValue::Int(*b)).collect();
    cfg
}

fn trial_of(o: &Outcome, mbs: i64, threads: i64) -> &Trial {
    o.trials
        .iter()
        .find(|t| {
            t.settings.get(&knob("batching.max_batch_size")) == Some(&Some(FlagValue::Int(mbs)))
                && t.settings.get(&knob("batching.num_batch_threads"))
                    == Some(&Some(FlagValue::Int(threads)))
        })
        .unwrap()
}

#[test]
fn a_latency_floor_above_the_slo_ends_the_trial_as_never_passing_after_two_probes() {
    let cfg = batch_grid(&[8, 32, 128], &[1, 2]);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    assert_eq!(o.trials.len(), 6);
    for threads in [1, 2] {
        let t = trial_of(&o, 128, threads);
        assert_eq!(t.capacity(), None);
        let f = t.floor().expect("a floor verdict");
        assert_eq!(f.objective, "p95");
        assert!((f.value() - 72.0).abs() < 0.5, "{f:?}");
        // Two probes, or three when the warm start (the previous trial's capacity) was above
        // this configuration's own capacity: the floor shows between the last two.
        let probes = &t.measurements[0].probes;
        assert!((2..=3).contains(&probes.len()), "{probes:?}");
        let n = probes.len();
        assert_eq!(probes[n - 1].rate, probes[n - 2].rate / 2.0);
        let why = t.reason().unwrap();
        assert!(
            why.starts_with("never passes: p95 floor 72") && why.contains("> 50 ms at "),
            "{why}"
        );
    }
    // The reachable configurations are measured as before, and the best one wins.
    assert_eq!(
        winner_settings(&o),
        "batching.max_batch_size=32, batching.num_batch_threads=2"
    );
    let cap = o.trials[o.winner.unwrap()].capacity().unwrap();
    assert!((950.0..=1000.0).contains(&cap), "{cap}");
    let j = o.to_json();
    let hopeless: Vec<&serde_json::Value> = j["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["never_passes"] == true)
        .collect();
    assert_eq!(hopeless.len(), 2, "{j}");
    assert_eq!(hopeless[0]["floor"]["objective"], "p95");
    let seen = hopeless[0]["floor"]["observed"][1]["value"]
        .as_f64()
        .unwrap();
    assert!((seen - 72.0).abs() < 0.5, "{seen}");
    // The table says it in the verdict column and the reason beneath; the page says it too.
    let table = crate::cli::tune::table(&o);
    assert_eq!(table.matches("never passes").count(), 4, "{table}");
    assert!(
        table.contains(
            "batching.max_batch_size=128, batching.num_batch_threads=2: never passes: p95 floor 72"
        ),
        "{table}"
    );
    let page = crate::report::tune_html::page(&o);
    assert!(page.contains("never passes: p95 floor 72"), "{page}");
}

#[test]
fn the_table_shows_the_servers_average_batch_and_cpu_at_capacity() {
    let cfg = batch_grid(&[8, 32], &[1, 2]);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    let table = crate::cli::tune::table(&o);
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("batch avg") && header.contains("cpu"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("batching.max_batch_size=32, batching.num_batch_threads=2"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(row.contains(" 16.0 ") && row.contains(" 2.00 "), "{row}");
}

#[test]
fn a_floor_verdict_is_resumed_from_the_state_without_measuring_again() {
    let cfg = batch_grid(&[8, 32, 128], &[1, 2]);
    let mut m = Model::new();
    let first = run(&cfg, &mut m).unwrap();
    let probes = m.probes.get();
    let again = run(&cfg, &mut m).unwrap();
    assert_eq!(again.probes_measured, 0);
    assert_eq!(m.probes.get(), probes);
    assert_eq!(
        trial_of(&again, 128, 2).reason(),
        trial_of(&first, 128, 2).reason()
    );
    assert!(trial_of(&again, 128, 1).floor().is_some());
}

#[test]
fn an_error_rate_floor_ends_the_trial_as_never_passing() {
    let cfg = batch_grid(&[8], &[1, 3]);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    let t = trial_of(&o, 8, 3);
    let f = t.floor().expect("an error-rate floor");
    assert_eq!(f.objective, "errors");
    // The warm start (300 req/s) is above its capacity: that miss is latency, then two
    // probes show the error floor.
    assert_eq!(t.measurements[0].probes.len(), 3);
    let why = t.reason().unwrap();
    assert!(
        why.starts_with("never passes: error-rate floor 4.9"),
        "{why}"
    );
    assert!(why.contains("> 1%"), "{why}");
}

#[test]
fn an_overloaded_server_is_searched_down_to_its_capacity_not_called_a_floor() {
    // Capacity 5 req/s from a start of 100: every probe down to 5 misses with the same
    // (queue-bound) latency, but the server never kept pace, so no floor is declared.
    let cfg = batch_grid(&[2], &[1]);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    let t = trial_of(&o, 2, 1);
    assert!(t.floor().is_none(), "{:?}", t.measurements);
    let cap = t.capacity().unwrap();
    assert!((3.0..=5.0).contains(&cap), "{cap}");
}

#[test]
fn halving_the_rate_never_makes_a_probe_longer_than_the_cap_and_says_what_it_proves() {
    let cfg = batch_grid(&[2], &[1]);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    let cap = cfg.probe_duration * MAX_PROBE_FACTOR;
    assert!(
        m.rates.borrow().iter().all(|(_, d)| *d <= cap),
        "{:?}",
        m.rates.borrow()
    );
    // 200 samples for p95: below 50 req/s the 4 s cap is shorter than the rule asks.
    let probes = &trial_of(&o, 2, 1).measurements[0].probes;
    let low = probes.iter().find(|p| p.rate < 10.0).unwrap();
    let short = low.short_sample.as_deref().unwrap();
    assert!(short.contains("fewer than the 200 p95 needs"), "{short}");
    let fast = probes.iter().find(|p| p.rate >= 100.0).unwrap();
    assert_eq!(fast.short_sample, None);
    let p99 = vec![Slo::Latency {
        percentile: 99.0,
        limit: Duration::from_millis(50),
    }];
    assert_eq!(probe_duration(&cfg, &p99, 10.0), Duration::from_secs(4));
    assert!(
        short_sample(&p99, 40, false)
            .unwrap()
            .ends_with("the miss stands")
    );
    assert!(
        short_sample(&p99, 40, true)
            .unwrap()
            .ends_with("a pass on this sample is weaker evidence")
    );
    assert_eq!(short_sample(&p99, 1000, true), None);
}

#[test]
fn the_next_trial_starts_at_the_previous_capacity_and_needs_fewer_probes() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    let o = run(&cfg, &mut m).unwrap();
    // The baseline (8, 1: 300 req/s) starts cold at start_rate; each later trial's first
    // probe is the capacity the trial before it found.
    assert_eq!(o.trials[0].measurements[0].probes[0].rate, cfg.start_rate);
    for pair in o.trials.windows(2) {
        let prev = pair[0].capacity().unwrap();
        assert_eq!(pair[1].measurements[0].probes[0].rate, prev.round());
    }
    // Cold, every trial would double from 100; warm, the grid needs fewer probes in all.
    let cold: usize = o
        .trials
        .iter()
        .map(|t| {
            let mut n = 0;
            crate::loadgen::search_capacity::<()>(
                &CapacitySearch {
                    start_rate: cfg.start_rate,
                    probe_duration: cfg.probe_duration,
                    precision: cfg.precision,
                    max_rate: 1e6,
                    max_probes: 30,
                },
                None,
                |rate| {
                    n += 1;
                    Ok(sample(rate, rate <= capacity_of(&t.serving)))
                },
            )
            .unwrap();
            n
        })
        .sum();
    assert!(o.probes < cold, "warm {} vs cold {cold}", o.probes);
}

fn sample(rate: f64, passed: bool) -> ProbeSample {
    ProbeSample {
        rate,
        passed,
        verdicts: Vec::new(),
        kept_up: true,
    }
}

#[test]
fn the_time_left_is_estimated_once_a_probe_has_run_and_shrinks_to_the_last_measurement() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    let lefts = std::cell::RefCell::new(Vec::new());
    let events = |e: Event| {
        if let Event::Measuring { left, .. } = e {
            lefts.borrow_mut().push(left);
        }
    };
    Tuner::new(
        &cfg,
        serving(),
        &slos(),
        "basis".into(),
        None,
        &mut m,
        &events,
    )
    .unwrap()
    .run()
    .unwrap();
    let lefts = lefts.into_inner();
    assert_eq!(lefts.len(), 4);
    assert_eq!(lefts[0], None, "nothing measured yet");
    assert!(lefts[1..].iter().all(Option::is_some), "{lefts:?}");
}

#[test]
fn with_a_price_the_winner_s_cost_per_million_is_set_against_the_current_one_and_in_markdown() {
    let cfg = config(Search::Grid, &[1, 2], 1);
    let mut m = Model::new();
    let mut o = run(&cfg, &mut m).unwrap();
    o.pricing = Some(Pricing {
        hourly_price: 0.198,
        nodes: 3,
        source: "test".into(),
    });
    let w = o.winner.unwrap();
    assert!(!o.trials[w].baseline);
    let (current, winner) = o.cost_change().unwrap();
    let cap = |t: &Trial| t.capacity().unwrap();
    let expect = |c: f64| 3.0 * 0.198 * 1e6 / (c * 3600.0);
    assert!((current - expect(cap(&o.trials[o.baseline]))).abs() < 1e-12);
    assert!((winner - expect(cap(&o.trials[w]))).abs() < 1e-12);
    assert!(
        winner < current,
        "more capacity on the same nodes is cheaper"
    );
    let sentence = o.cost_sentence().unwrap();
    assert!(
        sentence.contains("per million predictions at capacity, current → winner (−"),
        "{sentence}"
    );
    assert_eq!(o.to_json()["cost_change"]["winner_per_million"], winner);

    let md = crate::report::documents::tune_document(&o, "stacks/local-tune.hcl")
        .render(crate::report::markdown::GITHUB_LIMIT);
    let first = md.lines().next().unwrap();
    assert!(
        first.starts_with("**Tune** `tune.batching`: In "),
        "{first}"
    );
    assert!(first.contains("per million predictions"), "{first}");
    assert!(md.contains("| settings | capacity req/s |"), "{md}");
    assert!(md.contains("| WINNER |"), "{md}");
    assert!(md.contains("<details><summary>Every probe"), "{md}");
    let marker = crate::report::markdown::Marker::find(&md).unwrap();
    assert_eq!(marker.kind, "tune.batching");
    assert_eq!(
        marker.conclusion,
        crate::report::markdown::Conclusion::Success
    );
}

/// The grid of `batching.max_batch_size` [8, 32] × `replicas` `replicas`.
fn replicas_grid(search: Search, replicas: &[i64]) -> TuneConfig {
    let mut cfg = config(search, &[1], 1);
    cfg.space.push(Dimension {
        knob: Knob::Replicas,
        values: replicas.iter().map(|r| FlagValue::Int(*r)).collect(),
    });
    cfg
}

/// Runs `cfg` on `m`, returning the outcome and each event's line as the CLI would key it.
fn run_with_events(cfg: &TuneConfig, m: &mut Model) -> (Outcome, Vec<String>) {
    let seen = std::cell::RefCell::new(Vec::new());
    let events = |e: Event| {
        seen.borrow_mut().push(match e {
            Event::DoesNotFit {
                settings,
                trials,
                baseline,
                reason,
            } => format!(
                "does not fit: {} trials={trials:?} baseline={baseline}: {reason}",
                settings_text(&settings)
            ),
            Event::NotRun { settings, .. } => format!("not run: {}", settings_text(&settings)),
            Event::Measuring { settings, .. } => format!("measuring: {}", settings_text(&settings)),
            _ => String::new(),
        })
    };
    let o = Tuner::new(cfg, serving(), &slos(), "basis".into(), None, m, &events)
        .unwrap()
        .run()
        .unwrap();
    let lines = seen
        .into_inner()
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    (o, lines)
}

#[test]
fn replicas_that_do_not_fit_are_reported_before_the_first_trial_and_never_run_or_ranked() {
    let cfg = replicas_grid(Search::Grid, &[1, 2, 4]);
    let mut m = Model::new();
    m.max_replicas = Some(2);
    let (o, lines) = run_with_events(&cfg, &mut m);
    // One line up front, for the replica count, naming how many trials it rules out.
    assert_eq!(
        lines[0],
        "does not fit: replicas=4 trials=Some(2) baseline=false: 4 replicas do not fit on the model's 2",
        "{lines:?}"
    );
    assert!(lines[1].starts_with("measuring: "), "{lines:?}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("does not fit"))
            .count(),
        1
    );
    // Recorded, not run: no apply, no probe, no measurement, never the winner.
    assert!(!m.applied_replicas.contains(&4), "{:?}", m.applied_replicas);
    let skipped: Vec<&Trial> = o.trials.iter().filter(|t| t.not_run.is_some()).collect();
    assert_eq!(skipped.len(), 2);
    for t in &skipped {
        assert_eq!(t.serving.replicas, 4);
        assert!(t.measurements.is_empty());
        assert_eq!(
            t.reason().as_deref(),
            Some("does not fit: 4 replicas do not fit on the model's 2")
        );
    }
    assert_eq!(o.trials.len(), 6, "every grid point is in the outcome");
    assert_ne!(o.trials[o.winner.unwrap()].serving.replicas, 4);
    let rows = o.trial_rows();
    assert_eq!(rows.iter().filter(|r| r[7] == "not run").count(), 2);
    let j = o.to_json();
    let not_run: Vec<&serde_json::Value> = j["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["not_run"].is_string())
        .collect();
    assert_eq!(not_run.len(), 2, "{j}");
    assert_eq!(not_run[0]["capacity"], serde_json::Value::Null);
    let s = o.sentence();
    assert!(
        s.contains("across 4 configurations (2 more not run: they do not fit the serving nodes)"),
        "{s}"
    );
}

#[test]
fn auto_skips_configurations_that_do_not_fit_without_counting_them_as_trials() {
    // Replicas first: the descent reaches replicas=8 before a larger max_batch_size.
    let mut cfg = config(Search::Auto, &[1], 1);
    cfg.space.insert(
        0,
        Dimension {
            knob: Knob::Replicas,
            values: vec![FlagValue::Int(1), FlagValue::Int(8)],
        },
    );
    cfg.max_trials = 2;
    let mut m = Model::new();
    m.max_replicas = Some(2);
    let (o, lines) = run_with_events(&cfg, &mut m);
    assert!(
        lines[0].starts_with("does not fit: replicas=8 trials=None baseline=false"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("not run: ") && l.contains("replicas=8")),
        "{lines:?}"
    );
    assert!(!m.applied_replicas.contains(&8));
    let run = o.trials.iter().filter(|t| t.not_run.is_none()).count();
    assert_eq!(run, 2, "max_trials counts the trials run");
    assert_eq!(
        o.trials[o.winner.unwrap()]
            .settings
            .get(&knob("batching.max_batch_size")),
        Some(&Some(FlagValue::Int(32))),
        "the trial after the skipped one was still run"
    );
}

#[test]
fn a_current_configuration_that_does_not_fit_is_not_run_and_said_so() {
    let cfg = replicas_grid(Search::Grid, &[1]);
    let mut m = Model::new();
    m.max_replicas = Some(0);
    let (o, lines) = run_with_events(&cfg, &mut m);
    assert!(
        lines[0].starts_with("does not fit: replicas=1 trials=Some(2) baseline=true"),
        "{lines:?}"
    );
    assert_eq!(m.applies, 0);
    assert!(o.trials.iter().all(|t| t.not_run.is_some()));
    assert_eq!(o.winner, None);
}
