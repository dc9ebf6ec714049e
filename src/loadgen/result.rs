//! What a run produces: the `--json` object (`RunReport`), its per-stage parts, and the merge
//! of several runs (distributed workers): histograms are added, never averaged.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

use super::LoadError;
use super::spec::{Protocol, Slo};
use crate::environment::Environment;

/// Lowest and highest trackable latency in microseconds (1 µs … 60 s) and the precision.
pub const HIST_LOW_US: u64 = 1;
pub const HIST_HIGH_US: u64 = 60_000_000;
pub const HIST_SIGFIG: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants inside hdrhistogram's accepted range, so this cannot fail.
    Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// The `--json` object of `benchstack loadtest` (documented in docs/loadtest-json.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The target URL(s), comma-separated when connections were spread over several.
    pub target: String,
    pub protocol: Protocol,
    pub model: String,
    pub stages: Vec<StageReport>,
    /// The result of `--find-capacity`, else null.
    pub capacity: Option<Capacity>,
    pub environment: Environment,
    /// `constant` or `poisson`.
    #[serde(default)]
    pub arrival: super::spec::Arrival,
    #[serde(default)]
    pub connections: u32,
    /// The SLOs every stage was judged against.
    #[serde(default)]
    pub slos: Vec<Slo>,
    /// How many runs were merged into this one (1 for a single generator).
    #[serde(default = "one")]
    pub workers: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    /// Offered rate in requests per second; null for a closed-loop `max` stage.
    pub target_rate: Option<f64>,
    /// True for `--rate max` (closed loop: each connection sends when its last reply arrived).
    #[serde(default)]
    pub closed_loop: bool,
    pub duration_s: f64,
    /// Requests scheduled in this stage that completed (successfully or not).
    pub requests: u64,
    /// Requests actually sent within the stage's window, per second.
    pub achieved_rate: f64,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    /// Completion − intended send time (the latency a user would see; no coordinated omission).
    pub latency_ms: Percentiles,
    /// Completion − actual send time (what the server and network took).
    pub service_time_ms: Percentiles,
    /// Actual − intended send time: how late the generator's own scheduler released requests.
    pub generator_lag_ms: LagSummary,
    /// Time a released request waited for a free connection (all connections busy).
    #[serde(default)]
    pub queue_wait_ms: LagSummary,
    /// The latency histogram: HdrHistogram V2, base64 (1 µs … 60 s, 3 significant digits, µs units).
    pub histogram: String,
    #[serde(default)]
    pub service_time_histogram: String,
    #[serde(default)]
    pub generator_lag_histogram: String,
    #[serde(default)]
    pub queue_wait_histogram: String,
    /// One verdict per SLO.
    #[serde(default)]
    pub slos: Vec<SloVerdict>,
    /// True when the generator, not the server, limited this stage (more than 1% of requests
    /// released late, see `late_threshold`, or the in-flight cap was hit); `bottleneck` says why.
    #[serde(default)]
    pub generator_bottleneck: bool,
    #[serde(default)]
    pub bottleneck: Option<String>,
    /// Times the dispatcher had to wait because `--max-in-flight` requests were outstanding.
    #[serde(default)]
    pub in_flight_cap_hits: u64,
    /// Per-second buckets (by completion time since the stage began).
    #[serde(default)]
    pub timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LagSummary {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SloVerdict {
    /// e.g. `p99`.
    pub slo: String,
    pub percentile: f64,
    pub limit_ms: f64,
    pub observed_ms: f64,
    pub met: bool,
}

/// One second of a stage, by completion time. Percentiles of merged reports are the highest
/// of the workers' (an upper bound): per-second histograms are not kept.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the stage began (the bucket's start).
    pub t: u32,
    pub requests: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// The outcome of `--find-capacity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// The highest probed rate whose SLOs held; null when even the first probe failed.
    pub rate: Option<f64>,
    pub probes: Vec<Probe>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// Index into `stages`.
    pub stage: usize,
    pub rate: f64,
    pub passed: bool,
    /// Why it failed (which SLO, errors, rate not held), or empty.
    pub reason: String,
}

pub fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

pub fn percentiles(h: &Histogram<u64>) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

pub fn lag_summary(h: &Histogram<u64>) -> LagSummary {
    if h.is_empty() {
        return LagSummary::default();
    }
    LagSummary {
        p50: ms(h.value_at_quantile(0.50)),
        p99: ms(h.value_at_quantile(0.99)),
        max: ms(h.max()),
    }
}

pub fn encode_histogram(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail for a histogram within its own bounds.
    if V2Serializer::new().serialize(h, &mut buf).is_err() {
        return String::new();
    }
    base64::engine::general_purpose::STANDARD.encode(buf)
}

pub fn decode_histogram(s: &str) -> Result<Histogram<u64>, LoadError> {
    if s.is_empty() {
        return Ok(new_histogram());
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| LoadError::Histogram(format!("not base64: {e}")))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(raw))
        .map_err(|e| LoadError::Histogram(format!("not an HdrHistogram V2: {e:?}")))?;
    // Re-home into the standard bounds so adding histograms never fails on range.
    let mut out = new_histogram();
    out.add(&h)
        .map_err(|e| LoadError::Histogram(format!("{e:?}")))?;
    Ok(out)
}

pub fn judge(slos: &[Slo], latency: &Histogram<u64>) -> Vec<SloVerdict> {
    slos.iter()
        .map(|slo| {
            let observed_ms = if latency.is_empty() {
                f64::INFINITY
            } else {
                ms(latency.value_at_quantile(slo.percentile / 100.0))
            };
            let limit_ms = slo.limit.as_secs_f64() * 1000.0;
            SloVerdict {
                slo: slo.label(),
                percentile: slo.percentile,
                limit_ms,
                observed_ms: if observed_ms.is_finite() {
                    observed_ms
                } else {
                    -1.0
                },
                met: observed_ms <= limit_ms,
            }
        })
        .collect()
}

/// Without a latency SLO, a request counts as late when the generator released it more than
/// this after its intended send time: a tenth of the 50 ms p99 SLO of the shipped stacks.
pub const LATE_WITHOUT_SLO: Duration = Duration::from_millis(5);

/// The share of a stage's requests that may be released late before the generator calls
/// itself the bottleneck. A stalled or overloaded generator falls behind for long stretches
/// and makes far more requests late; the machine's scheduling noise delays a few.
pub const LATE_SHARE: f64 = 0.01;

/// How late a release may be before it counts as late: a tenth of the smallest latency SLO
/// limit (lag below that is small beside what the SLO allows), else `LATE_WITHOUT_SLO`.
pub fn late_threshold(slos: &[Slo]) -> Duration {
    slos.iter()
        .map(|s| s.limit / 10)
        .min()
        .unwrap_or(LATE_WITHOUT_SLO)
}

/// Whether the generator limited the stage, and why: more than `LATE_SHARE` of its requests
/// were released more than `late` after their intended send time (see `late_threshold`), or
/// the `--max-in-flight` cap held requests back.
pub fn bottleneck(lag: &Histogram<u64>, cap_hits: u64, late: Duration) -> Option<String> {
    let mut why = Vec::new();
    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
    // Whole histogram buckets above the threshold (3 significant digits: within 0.1%).
    let over: u64 = lag
        .iter_recorded()
        .filter(|v| lag.lowest_equivalent(v.value_iterated_to()) > late_us)
        .map(|v| v.count_at_value())
        .sum();
    let total = lag.len();
    if total > 0 && over as f64 > LATE_SHARE * total as f64 {
        why.push(format!(
            "{over} of {total} requests ({:.1}%) were released more than {} after their \
             intended send time (lag p99 {:.2} ms): the load generator could not keep the schedule",
            over as f64 * 100.0 / total as f64,
            humantime::format_duration(late),
            ms(lag.value_at_quantile(0.99))
        ));
    }
    if cap_hits > 0 {
        why.push(format!(
            "the --max-in-flight cap was hit {cap_hits} times (requests were held back)"
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

impl StageReport {
    pub fn latency_histogram(&self) -> Result<Histogram<u64>, LoadError> {
        decode_histogram(&self.histogram)
    }
}

impl RunReport {
    /// True when every stage met every SLO (and there is at least one stage).
    pub fn slos_met(&self) -> bool {
        !self.stages.is_empty() && self.stages.iter().all(|s| s.slos.iter().all(|v| v.met))
    }

    /// True when the generator limited any stage.
    pub fn generator_bottleneck(&self) -> bool {
        self.stages.iter().any(|s| s.generator_bottleneck)
    }

    /// All stages' latency histograms added together.
    pub fn total_latency(&self) -> Result<Histogram<u64>, LoadError> {
        let mut total = new_histogram();
        for s in &self.stages {
            total
                .add(s.latency_histogram()?)
                .map_err(|e| LoadError::Histogram(format!("{e:?}")))?;
        }
        Ok(total)
    }
}

/// Merges the reports of workers that ran the same stages, each a share of the rate:
/// counts and rates are summed, histograms added (percentiles come from the merged
/// histogram), errors summed by kind, and SLOs judged again on the merged latencies.
pub fn merge(reports: &[RunReport]) -> Result<RunReport, LoadError> {
    let first = reports
        .first()
        .ok_or_else(|| LoadError::Merge("no reports to merge".into()))?;
    for (i, r) in reports.iter().enumerate().skip(1) {
        if r.stages.len() != first.stages.len() {
            return Err(LoadError::Merge(format!(
                "report {i} has {} stages, report 0 has {}",
                r.stages.len(),
                first.stages.len()
            )));
        }
        if r.model != first.model || r.protocol != first.protocol {
            return Err(LoadError::Merge(format!(
                "report {i} tested {} over {}, report 0 tested {} over {}",
                r.model, r.protocol, first.model, first.protocol
            )));
        }
    }
    let add = |a: &mut Histogram<u64>, b: &str| -> Result<(), LoadError> {
        a.add(decode_histogram(b)?)
            .map_err(|e| LoadError::Histogram(format!("{e:?}")))
    };
    let mut stages = Vec::with_capacity(first.stages.len());
    for (i, s0) in first.stages.iter().enumerate() {
        let (mut lat, mut svc, mut lag, mut wait) = (
            new_histogram(),
            new_histogram(),
            new_histogram(),
            new_histogram(),
        );
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut timeline: BTreeMap<u32, TimelinePoint> = BTreeMap::new();
        let (mut requests, mut achieved, mut cap_hits, mut rate) = (0u64, 0.0, 0u64, 0.0);
        let mut any_rate = false;
        let mut duration_s: f64 = 0.0;
        for r in reports {
            let s = &r.stages[i];
            add(&mut lat, &s.histogram)?;
            add(&mut svc, &s.service_time_histogram)?;
            add(&mut lag, &s.generator_lag_histogram)?;
            add(&mut wait, &s.queue_wait_histogram)?;
            for (k, n) in &s.errors {
                *errors.entry(k.clone()).or_default() += n;
            }
            for p in &s.timeline {
                let e = timeline.entry(p.t).or_insert(TimelinePoint {
                    t: p.t,
                    ..Default::default()
                });
                e.requests += p.requests;
                e.errors += p.errors;
                e.p50_ms = e.p50_ms.max(p.p50_ms);
                e.p99_ms = e.p99_ms.max(p.p99_ms);
                e.max_ms = e.max_ms.max(p.max_ms);
            }
            requests += s.requests;
            achieved += s.achieved_rate;
            cap_hits += s.in_flight_cap_hits;
            if let Some(t) = s.target_rate {
                rate += t;
                any_rate = true;
            }
            duration_s = duration_s.max(s.duration_s);
        }
        let reason = bottleneck(&lag, cap_hits, late_threshold(&first.slos));
        stages.push(StageReport {
            name: s0.name.clone(),
            target_rate: any_rate.then_some(rate),
            closed_loop: s0.closed_loop,
            duration_s,
            requests,
            achieved_rate: achieved,
            errors_total: errors.values().sum(),
            errors,
            latency_ms: percentiles(&lat),
            service_time_ms: percentiles(&svc),
            generator_lag_ms: lag_summary(&lag),
            queue_wait_ms: lag_summary(&wait),
            histogram: encode_histogram(&lat),
            service_time_histogram: encode_histogram(&svc),
            generator_lag_histogram: encode_histogram(&lag),
            queue_wait_histogram: encode_histogram(&wait),
            slos: judge(&first.slos, &lat),
            generator_bottleneck: reason.is_some(),
            bottleneck: reason,
            in_flight_cap_hits: cap_hits,
            timeline: timeline.into_values().collect(),
        });
    }
    let mut targets: Vec<&str> = Vec::new();
    for r in reports {
        for t in r.target.split(',') {
            if !targets.contains(&t) {
                targets.push(t);
            }
        }
    }
    Ok(RunReport {
        target: targets.join(","),
        protocol: first.protocol,
        model: first.model.clone(),
        stages,
        capacity: first.capacity.clone(),
        environment: first.environment.clone(),
        arrival: first.arrival,
        connections: reports.iter().map(|r| r.connections).sum(),
        slos: first.slos.clone(),
        workers: reports.iter().map(|r| r.workers).sum(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::StageRecorder;
    use crate::loadgen::spec::{Rate, Stage};
    use rand::{Rng, SeedableRng};
    use std::time::{Duration, Instant};

    fn report_of(samples_us: &[u64], slos: &[Slo]) -> RunReport {
        let mut r = StageRecorder::new(Stage {
            name: "s".into(),
            rate: Rate::PerSecond(100.0),
            duration: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        r.begin(t0);
        for &us in samples_us {
            r.record_done(t0, t0, t0 + Duration::from_micros(us), Ok(()));
        }
        RunReport {
            target: "http://a".into(),
            protocol: Protocol::Rest,
            model: "m".into(),
            stages: vec![r.into_report(slos)],
            capacity: None,
            environment: Environment::detect(),
            arrival: Default::default(),
            connections: 1,
            slos: slos.to_vec(),
            workers: 1,
        }
    }

    #[test]
    fn merged_histograms_equal_one_histogram_of_all_samples() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let slos = [Slo::parse("p99=20ms").unwrap()];
        let parts: Vec<Vec<u64>> = (0..3)
            .map(|k| {
                (0..5000)
                    .map(|_| rng.random_range(50..(2_000 + k * 20_000)))
                    .collect()
            })
            .collect();
        let reports: Vec<RunReport> = parts.iter().map(|p| report_of(p, &slos)).collect();
        let merged = merge(&reports).unwrap();
        let all: Vec<u64> = parts.concat();
        let single = report_of(&all, &slos);
        let (m, s) = (&merged.stages[0], &single.stages[0]);
        assert_eq!(
            m.latency_histogram().unwrap(),
            s.latency_histogram().unwrap()
        );
        assert_eq!(m.latency_ms, s.latency_ms);
        assert_eq!(m.requests, 15_000);
        assert_eq!(m.slos, s.slos);
        assert_eq!(merged.workers, 3);
        // Averaging the parts' p99s would be wrong; the merged p99 is the p99 of all samples.
        let avg_p99: f64 = reports
            .iter()
            .map(|r| r.stages[0].latency_ms.p99)
            .sum::<f64>()
            / 3.0;
        assert!((m.latency_ms.p99 - avg_p99).abs() > 1.0);
    }

    #[test]
    fn reports_with_different_stages_do_not_merge() {
        let a = report_of(&[100], &[]);
        let mut b = a.clone();
        b.stages.push(b.stages[0].clone());
        assert!(matches!(merge(&[a, b]), Err(LoadError::Merge(_))));
        assert!(matches!(merge(&[]), Err(LoadError::Merge(_))));
    }

    #[test]
    fn a_report_survives_a_json_round_trip() {
        let r = report_of(&[100, 200, 300], &[Slo::parse("p50=1ms").unwrap()]);
        let text = serde_json::to_string(&r).unwrap();
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert!(back.slos_met());
    }

    fn lags(spec: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &(us, n) in spec {
            h.record_n(us, n).unwrap();
        }
        h
    }

    #[test]
    fn scheduling_noise_is_not_a_bottleneck_but_a_generator_falling_behind_is() {
        let p99_50ms = [Slo::parse("p99=50ms").unwrap()];
        let p50_2ms = [
            Slo::parse("p99=50ms").unwrap(),
            Slo::parse("p50=2ms").unwrap(),
        ];
        assert_eq!(late_threshold(&p99_50ms), Duration::from_millis(5));
        assert_eq!(late_threshold(&p50_2ms), Duration::from_micros(200));
        assert_eq!(late_threshold(&[]), LATE_WITHOUT_SLO);
        // 100–400 req/s on a busy machine: lag p99 2–3 ms from the OS waking the thread late.
        let noise = lags(&[(60, 9_800), (2_500, 150), (3_000, 50)]);
        assert!(noise.value_at_quantile(0.99) > 1_000);
        assert_eq!(bottleneck(&noise, 0, late_threshold(&p99_50ms)), None);
        assert_eq!(bottleneck(&noise, 0, late_threshold(&[])), None);
        // The same lag against a 2 ms median SLO is 2% of requests late: flagged.
        let why = bottleneck(&noise, 0, late_threshold(&p50_2ms)).unwrap();
        assert!(why.contains("200 of 10000 requests (2.0%)"), "{why}");
        assert!(why.contains("more than 200us"), "{why}");
        // A generator that cannot keep up: lag grows to tens of ms for a third of the stage.
        let behind = lags(&[(60, 6_000), (20_000, 2_000), (40_000, 2_000)]);
        assert!(bottleneck(&behind, 0, late_threshold(&p99_50ms)).is_some());
        assert!(bottleneck(&behind, 0, late_threshold(&[])).is_some());
        // Exactly 1% late is allowed; a release at the threshold itself is not late.
        let edge = lags(&[(60, 9_900), (6_000, 100)]);
        assert_eq!(bottleneck(&edge, 0, Duration::from_millis(5)), None);
        let at = lags(&[(60, 9_000), (5_000, 1_000)]);
        assert_eq!(bottleneck(&at, 0, Duration::from_millis(5)), None);
        // The in-flight cap flags the stage whatever the lag; an empty stage is not flagged.
        let capped = bottleneck(&new_histogram(), 3, LATE_WITHOUT_SLO).unwrap();
        assert!(capped.contains("max-in-flight"), "{capped}");
        assert_eq!(bottleneck(&new_histogram(), 0, LATE_WITHOUT_SLO), None);
    }

    #[test]
    fn merged_reports_judge_the_bottleneck_on_all_workers_lags() {
        // Two workers each 0.8% late (not flagged alone) stay unflagged together; a third that
        // fell behind flags the merged stage.
        let slos = [Slo::parse("p99=50ms").unwrap()];
        let with_lag = |h: &Histogram<u64>| {
            let mut r = report_of(&[100], &slos);
            r.stages[0].generator_lag_histogram = encode_histogram(h);
            r.stages[0].generator_bottleneck = false;
            r.stages[0].bottleneck = None;
            r
        };
        let a = with_lag(&lags(&[(50, 992), (8_000, 8)]));
        let m = merge(&[a.clone(), a.clone()]).unwrap();
        assert!(
            !m.stages[0].generator_bottleneck,
            "{:?}",
            m.stages[0].bottleneck
        );
        let c = with_lag(&lags(&[(50, 500), (30_000, 500)]));
        let m = merge(&[a.clone(), a, c]).unwrap();
        assert!(m.stages[0].generator_bottleneck);
    }
}
