//! What a run produces: the `--json` object (`RunReport`) and its per-stage parts, as plain
//! serde data. Judging them is `verdict`'s job, their histograms `histogram`'s, and merging
//! several runs `merge`'s.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::LoadError;
use super::histogram::{decode_histogram, new_histogram};
use super::verdict::stage_failures;
use crate::environment::Environment;
use crate::vocab::load::{Protocol, Slo};

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
    pub arrival: crate::vocab::load::Arrival,
    #[serde(default)]
    pub connections: u32,
    /// The SLOs every stage was judged against.
    #[serde(default)]
    pub slos: Vec<Slo>,
    /// How many runs were merged into this one (1 for a single generator).
    #[serde(default = "one")]
    pub workers: u32,
    /// Why no verdict may use this run (SLO exit status, capacity search, tune ranking,
    /// baseline), or null for a valid run: a distributed worker missing, restarted, late or
    /// off-clock beyond the bound, or a stage whose generator was the bottleneck. Reasons are
    /// joined by "; ". Runs stored before this field read as valid.
    #[serde(default)]
    pub invalid: Option<String>,
    /// A distributed run's workers, one entry each, in index order (empty for one generator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub worker_diagnostics: Vec<WorkerDiagnostics>,
    /// Whether batching changed the server's answers (`loadgen::answers`), checked before the
    /// run with the server idle; absent when not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<super::answers::AnswerCheck>,
}

fn one() -> u32 {
    1
}

/// One distributed worker as the coordinator saw it: how well it started and how it ran.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WorkerDiagnostics {
    pub index: u32,
    /// The pod that produced the report (the last one for its index).
    #[serde(default)]
    pub pod: String,
    /// How long after the common start the worker began its first stage (its own clock,
    /// corrected by the offset); null when it never reported.
    #[serde(default)]
    pub start_late_ms: Option<f64>,
    /// The worker's clock minus the coordinator's, from the round trip with the lowest delay
    /// (NTP's estimate: worker time − midpoint of send and receive); null when unmeasured.
    #[serde(default)]
    pub clock_offset_ms: Option<f64>,
    /// That round trip's delay: the offset is known to ± half of it.
    #[serde(default)]
    pub clock_rtt_ms: Option<f64>,
    /// Requests sent per second, all stages together.
    #[serde(default)]
    pub achieved_rate: f64,
    /// The worst stage's generator lag p99.
    #[serde(default)]
    pub lag_p99_ms: f64,
    #[serde(default)]
    pub errors: u64,
    /// Container restarts (`restartCount`) plus replacement pods for its index.
    #[serde(default)]
    pub restarts: u32,
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
    /// `errors_total / requests` (0 when nothing completed): what the `errors` SLO judges.
    #[serde(default)]
    pub error_rate: f64,
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
    /// Set when a capacity probe stopped sending as soon as it could no longer meet its
    /// objectives (`duration_s` is then how long it ran); absent for every other run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_early: Option<EarlyStop>,
    /// The server's side of the stage: TF Serving's own metrics and the serving processes'
    /// CPU, from scrapes of every replica at the stage's start and end. null when they could
    /// not be read (or were not scraped), and then `server_note` says why.
    #[serde(default)]
    pub server: Option<super::server::ServerStage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_note: Option<String>,
}

/// Why and when a capacity probe stopped before its planned end (see `engine::Watch`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// How long the stage was planned to run, seconds.
    pub planned_s: f64,
    /// Requests released by the schedule but still waiting for a connection when it stopped:
    /// never sent, so not in `requests`.
    #[serde(default)]
    pub unsent: u64,
    /// The objective that could no longer be met, e.g. `61 of the 1200 planned requests
    /// exceeded 50 ms or failed; p95 allows 60`.
    pub reason: String,
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
    /// `p99`, `p99.9`, or `errors` for the error-rate objective.
    pub slo: String,
    /// The percentile of a latency objective (0 for `errors`).
    #[serde(default)]
    pub percentile: f64,
    /// The latency limit (0 for `errors`).
    #[serde(default)]
    pub limit_ms: f64,
    /// The percentile over all requests, failed ones counted as never completing; -1 when it
    /// falls among the failed requests (or nothing was sent): no finite latency meets it.
    #[serde(default)]
    pub observed_ms: f64,
    /// The error-rate limit as a fraction (`errors` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_error_rate: Option<f64>,
    /// The stage's error rate as a fraction (`errors` only; see also the stage's `error_rate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_error_rate: Option<f64>,
    pub met: bool,
    /// One sentence: what was observed against what limit, and why it missed.
    #[serde(default)]
    pub detail: String,
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
    /// Why no rate can pass, when the search stopped on a floor (`search::Floor::text`):
    /// `p99 floor 72.4 ms > 50 ms at 100 and 50 req/s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
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

impl StageReport {
    pub fn latency_histogram(&self) -> Result<Histogram<u64>, LoadError> {
        decode_histogram(&self.histogram)
    }
}

impl RunReport {
    /// True when every stage met every SLO, failures counted (and there is at least one
    /// stage). With no SLOs, a stage that completed requests passes.
    pub fn slos_met(&self) -> bool {
        !self.stages.is_empty() && self.stages.iter().all(|s| stage_failures(s).is_empty())
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

/// Reports built through the real recorder, shared by the tests of `verdict`, `merge` and
/// this file.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::loadgen::record::StageRecorder;
    use crate::vocab::load::{Rate, Stage};
    use std::time::{Duration, Instant};

    pub(crate) fn report_of(samples_us: &[u64], slos: &[Slo]) -> RunReport {
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
            invalid: None,
            worker_diagnostics: Vec::new(),
            answers: None,
        }
    }

    pub(crate) fn lags(spec: &[(u64, u64)]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &(us, n) in spec {
            h.record_n(us, n).unwrap();
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::report_of;
    use super::*;

    #[test]
    fn a_report_survives_a_json_round_trip() {
        let r = report_of(&[100, 200, 300], &[Slo::parse("p50=1ms").unwrap()]);
        let text = serde_json::to_string(&r).unwrap();
        let back: RunReport = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert!(back.slos_met());
    }
}
