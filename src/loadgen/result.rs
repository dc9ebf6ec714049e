//! What a run produces: the `--json` object (`RunReport`), its per-stage parts, and the merge
//! of several runs (distributed workers): histograms are added, never averaged.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2Serializer};
use serde::{Deserialize, Serialize};

use super::LoadError;
use crate::environment::Environment;
use crate::vocab::load::{Protocol, Slo, format_error_rate, format_ms as fmt_ms};

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

/// Adds `why` to a run's reasons for being invalid.
pub fn mark_invalid(report: &mut RunReport, why: impl Into<String>) {
    let why = why.into();
    report.invalid = Some(match report.invalid.take() {
        Some(prev) if !prev.is_empty() => format!("{prev}; {why}"),
        _ => why,
    });
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

/// The one verdict function: every objective judged over all of a stage's requests, where
/// `latency` holds the successful ones and `failed` counts the rest. A failed request counts
/// as one that never completed within any limit, so the q-th percentile over all requests is
/// the successful requests' value at rank ⌈q·N⌉, or infinite when that rank lies among the
/// failures. A stage with no requests meets nothing.
pub fn judge(slos: &[Slo], latency: &Histogram<u64>, failed: u64) -> Vec<SloVerdict> {
    let ok = latency.len();
    let total = ok.saturating_add(failed);
    let error_rate = if total == 0 {
        None
    } else {
        Some(failed as f64 / total as f64)
    };
    slos.iter()
        .map(|slo| match *slo {
            Slo::Latency { percentile, limit } => {
                let limit_ms = limit.as_secs_f64() * 1000.0;
                let observed = percentile_counting_failures(latency, failed, percentile / 100.0);
                let met = observed.is_some_and(|v| v <= limit_ms);
                let detail = match (observed, error_rate) {
                    (None, None) => "no request was sent".to_string(),
                    (None, Some(rate)) => format!(
                        "{} of requests failed, so the {} is a request that never completed (limit {} ms)",
                        format_error_rate(rate),
                        slo.label(),
                        fmt_ms(limit_ms)
                    ),
                    (Some(v), _) => format!(
                        "{} {} ms {} {} ms{}",
                        slo.label(),
                        fmt_ms(v),
                        if met { "<=" } else { ">" },
                        fmt_ms(limit_ms),
                        if failed > 0 {
                            format!(" ({failed} failed requests counted as too slow)")
                        } else {
                            String::new()
                        }
                    ),
                };
                SloVerdict {
                    slo: slo.label(),
                    percentile,
                    limit_ms,
                    observed_ms: observed.unwrap_or(-1.0),
                    limit_error_rate: None,
                    observed_error_rate: None,
                    met,
                    detail,
                }
            }
            Slo::ErrorRate { errors } => {
                let met = error_rate.is_some_and(|r| r <= errors);
                let detail = match error_rate {
                    None => "no request was sent".to_string(),
                    Some(r) => format!(
                        "errors {} ({failed} of {total}) {} {}",
                        format_error_rate(r),
                        if met { "<=" } else { ">" },
                        format_error_rate(errors)
                    ),
                };
                SloVerdict {
                    slo: slo.label(),
                    percentile: 0.0,
                    limit_ms: 0.0,
                    observed_ms: -1.0,
                    limit_error_rate: Some(errors),
                    observed_error_rate: error_rate,
                    met,
                    detail,
                }
            }
        })
        .collect()
}

/// The `quantile` (0..=1) of all requests in ms, failures counted as infinitely slow; None
/// when it falls among the failures or there are no requests.
pub fn percentile_counting_failures(
    latency: &Histogram<u64>,
    failed: u64,
    quantile: f64,
) -> Option<f64> {
    let ok = latency.len();
    let total = ok.saturating_add(failed);
    if total == 0 {
        return None;
    }
    // The 1-based rank of the request at this quantile (the small epsilon keeps 0.99 × 1000
    // at rank 990 despite floating point).
    let rank = ((quantile * total as f64) - 1e-9).ceil().max(1.0) as u64;
    if rank > ok {
        return None;
    }
    // The same rank among the successful requests alone; the half keeps `ceil` in
    // hdrhistogram's lookup on exactly this rank.
    let q = ((rank as f64 - 0.5) / ok as f64).clamp(0.0, 1.0);
    Some(ms(latency.value_at_quantile(q)))
}

/// Failed over all completed requests (0 when none completed).
pub fn error_rate(failed: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        failed as f64 / requests as f64
    }
}

/// Whether a stage passed, and if not, why: every objective's verdict (failures counted) and
/// a stage that completed no request. This is the only place that decides pass/fail; the
/// terminal, `apply`, `--find-capacity` and `tune` all read it.
pub fn stage_failures(stage: &StageReport) -> Vec<String> {
    let mut why: Vec<String> = stage
        .slos
        .iter()
        .filter(|v| !v.met)
        .map(|v| {
            if v.detail.is_empty() {
                format!("{} missed", v.slo)
            } else {
                v.detail.clone()
            }
        })
        .collect();
    if stage.requests == 0 && why.is_empty() {
        why.push("no request completed".into());
    }
    why
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
        .filter_map(|s| match s {
            Slo::Latency { limit, .. } => Some(*limit / 10),
            Slo::ErrorRate { .. } => None,
        })
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

/// Whether the generator's late releases can account for a missed latency objective.
/// A request's latency is its lag plus what the connection queue and the server took, so a
/// request slower than `limit + t` whose lag was at most `t` missed the limit on the server's
/// account. When, for some `t`, more such requests remain than the objective allows to miss,
/// the server missed it by itself and the lag explains nothing. Failed requests count as
/// slower than any limit, as in `judge`.
pub fn lag_explains_miss(
    latency: &Histogram<u64>,
    failed: u64,
    lag: &Histogram<u64>,
    percentile: f64,
    limit: Duration,
) -> bool {
    let total = latency.len().saturating_add(failed);
    if total == 0 {
        return true;
    }
    let rank = ((percentile / 100.0 * total as f64) - 1e-9).ceil().max(1.0) as u64;
    // How many requests may exceed the limit while the objective still holds.
    let allowed = total.saturating_sub(rank);
    let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
    // Buckets as (lowest value, count), ascending; a count above `x` counts whole buckets
    // that lie entirely above it, so it never overstates the server's misses.
    let buckets = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
        h.iter_recorded()
            .map(|v| {
                (
                    h.lowest_equivalent(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect()
    };
    let above = |b: &[(u64, u64)], x: u64| -> u64 {
        let i = b.partition_point(|&(low, _)| low <= x);
        b[i..].iter().map(|&(_, c)| c).sum()
    };
    let lat = buckets(latency);
    let lags = buckets(lag);
    // The candidate bounds on lag: none, and each lag bucket's upper end.
    let bounds = std::iter::once(0).chain(lags.iter().map(|&(low, _)| lag.highest_equivalent(low)));
    for t in bounds {
        let slow = failed.saturating_add(above(&lat, limit_us.saturating_add(t)));
        let lagged = above(&lags, t);
        if slow.saturating_sub(lagged) > allowed {
            return false;
        }
    }
    true
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
        let errors_total: u64 = errors.values().sum();
        stages.push(StageReport {
            name: s0.name.clone(),
            target_rate: any_rate.then_some(rate),
            closed_loop: s0.closed_loop,
            duration_s,
            requests,
            achieved_rate: achieved,
            errors_total,
            errors,
            error_rate: error_rate(errors_total, requests),
            latency_ms: percentiles(&lat),
            service_time_ms: percentiles(&svc),
            generator_lag_ms: lag_summary(&lag),
            queue_wait_ms: lag_summary(&wait),
            histogram: encode_histogram(&lat),
            service_time_histogram: encode_histogram(&svc),
            generator_lag_histogram: encode_histogram(&lag),
            queue_wait_histogram: encode_histogram(&wait),
            slos: judge(&first.slos, &lat, errors_total),
            generator_bottleneck: reason.is_some(),
            bottleneck: reason,
            in_flight_cap_hits: cap_hits,
            timeline: timeline.into_values().collect(),
            // Distributed workers run their whole share: only the in-process generator of a
            // capacity probe stops early.
            stopped_early: None,
            // The workers measure the client side only; the caller scrapes the server.
            server: None,
            server_note: s0.server_note.clone(),
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
        // The merged stages are judged again by the caller (`super::judge_validity`); a
        // worker's own reasons are kept.
        invalid: {
            let why: Vec<String> = reports
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.invalid.as_ref().map(|w| format!("worker {i}: {w}")))
                .collect();
            (!why.is_empty()).then(|| why.join("; "))
        },
        worker_diagnostics: Vec::new(),
        answers: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::StageRecorder;
    use crate::vocab::load::{Rate, Stage};
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
            invalid: None,
            worker_diagnostics: Vec::new(),
            answers: None,
        }
    }

    /// A one-second stage of `(requests, latency µs, generator lag µs, failed)` groups, all
    /// sent within the window, judged by `slos`.
    fn lagged_stage(groups: &[(u64, u64, u64, bool)], slos: &[Slo]) -> StageReport {
        let mut r = StageRecorder::new(Stage {
            name: "probe".into(),
            rate: Rate::PerSecond(1000.0),
            duration: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        r.begin(t0);
        for &(n, latency_us, lag_us, failed) in groups {
            for _ in 0..n {
                r.record_lag(Duration::from_micros(lag_us));
                r.record_sent(t0, t0);
                let outcome = if failed {
                    Err(crate::loadgen::record::ErrorKind::Http(503))
                } else {
                    Ok(())
                };
                r.record_done(t0, t0, t0 + Duration::from_micros(latency_us), outcome);
            }
        }
        r.into_report(slos)
    }

    #[test]
    fn a_run_whose_generator_accounts_for_a_miss_is_invalid_and_a_pass_with_lag_is_not() {
        let p99 = [Slo::parse("p99=50ms").unwrap()];
        let run_of = |stage: StageReport| {
            let mut r = report_of(&[1_000], &p99);
            r.stages = vec![stage];
            r
        };
        let stalled = lagged_stage(&[(970, 2_000, 0, false), (30, 60_000, 20_000, false)], &p99);
        let mut r = run_of(stalled);
        r.stages[0].target_rate = Some(1000.0);
        let why = crate::loadgen::generator_invalid(&r).expect("invalid");
        assert!(why.contains("load generator was the bottleneck"), "{why}");
        crate::loadgen::judge_validity(&mut r);
        assert_eq!(r.invalid.as_deref(), Some(why.as_str()));
        let passed = lagged_stage(&[(970, 2_000, 0, false), (30, 30_000, 20_000, false)], &p99);
        let mut r = run_of(passed);
        r.stages[0].target_rate = Some(1000.0);
        assert_eq!(crate::loadgen::generator_invalid(&r), None);
        // Runs stored before the field read as valid.
        let mut old = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("invalid");
        let back: RunReport = serde_json::from_value(old).unwrap();
        assert_eq!(back.invalid, None);
        assert!(back.worker_diagnostics.is_empty());
    }

    #[test]
    fn a_miss_the_generators_lag_accounts_for_is_no_verdict_on_the_server() {
        use crate::loadgen::{ProbeVerdict, probe_verdict};
        let p99 = [Slo::parse("p99=50ms").unwrap()];
        // 3% of requests released 20 ms late (a scheduling stall) and 60 ms slow: without
        // the lag they took 40 ms, within the limit.
        let stalled = lagged_stage(&[(970, 2_000, 0, false), (30, 60_000, 20_000, false)], &p99);
        assert!(stalled.generator_bottleneck);
        assert!(!stalled.slos[0].met);
        match probe_verdict(&stalled, 1000.0) {
            ProbeVerdict::Invalid(why) => {
                assert!(why.contains("within what that lag accounts for"), "{why}")
            }
            v => panic!("{v:?}"),
        }
        // The same stall, but 5% of requests took 500 ms: the server missed by itself.
        let overloaded = lagged_stage(
            &[
                (920, 2_000, 0, false),
                (30, 60_000, 20_000, false),
                (50, 500_000, 0, false),
            ],
            &p99,
        );
        assert!(matches!(
            probe_verdict(&overloaded, 1000.0),
            ProbeVerdict::Failed(_)
        ));
        // So it is when fewer requests were sent than offered: they queued for connections
        // held by the slow server.
        assert!(matches!(
            probe_verdict(&overloaded, 2000.0),
            ProbeVerdict::Failed(_)
        ));
        // Requests the server failed are the server's, lag or not.
        let shedding = lagged_stage(
            &[
                (920, 2_000, 0, false),
                (30, 60_000, 20_000, false),
                (50, 1_000, 0, true),
            ],
            &p99,
        );
        assert!(matches!(
            probe_verdict(&shedding, 1000.0),
            ProbeVerdict::Failed(_)
        ));
        // A pass with lag stands: the lag only made the latency look worse.
        let passed = lagged_stage(&[(970, 2_000, 0, false), (30, 30_000, 20_000, false)], &p99);
        assert!(passed.generator_bottleneck);
        assert_eq!(probe_verdict(&passed, 1000.0), ProbeVerdict::Passed);
        // Without lag a miss is a miss.
        let slow = lagged_stage(&[(970, 2_000, 0, false), (30, 60_000, 0, false)], &p99);
        assert!(!slow.generator_bottleneck);
        assert!(matches!(
            probe_verdict(&slow, 1000.0),
            ProbeVerdict::Failed(_)
        ));
        // A generator that did not send the offered rate while lagging gives no verdict.
        match probe_verdict(&stalled, 2000.0) {
            ProbeVerdict::Invalid(why) => assert!(why.contains("req/s sent of 2000"), "{why}"),
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn lag_explains_only_the_misses_it_could_have_caused() {
        let mut latency = new_histogram();
        let mut lag = new_histogram();
        latency.record_n(2_000, 97).unwrap();
        latency.record_n(60_000, 3).unwrap();
        lag.record_n(0, 99).unwrap();
        lag.record_n(20_000, 1).unwrap();
        let limit = Duration::from_millis(50);
        // p99 allows one request over 50 ms; three are and one of them lagged 20 ms: two
        // missed on the server's account.
        assert!(!lag_explains_miss(&latency, 0, &lag, 99.0, limit));
        // p98 allows two: without the lagged one, two remain, so the lag explains the miss.
        assert!(lag_explains_miss(&latency, 0, &lag, 98.0, limit));
        // A lag too small to lift 60 ms over 50 ms explains nothing: 60 > 50 + 5.
        let mut small = new_histogram();
        small.record_n(0, 97).unwrap();
        small.record_n(5_000, 3).unwrap();
        assert!(!lag_explains_miss(&latency, 0, &small, 98.0, limit));
        // Failed requests count as slower than any limit.
        assert!(!lag_explains_miss(&latency, 3, &lag, 98.0, limit));
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

    fn histogram_of(samples_us: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for &us in samples_us {
            h.record(us).unwrap();
        }
        h
    }

    #[test]
    fn five_percent_fast_failures_miss_p99_however_fast_the_successes() {
        // 950 successes at 1 ms, 50 failures (a fast 503 each): p99 is a failed request.
        let ok = histogram_of(&[1_000; 950]);
        let v = judge(&[Slo::parse("p99=50ms").unwrap()], &ok, 50);
        assert!(!v[0].met, "{v:?}");
        assert_eq!(v[0].observed_ms, -1.0);
        assert!(
            v[0].detail.contains("5% of requests failed"),
            "{}",
            v[0].detail
        );
        // The same stage meets p90: the 900th request is a success.
        let v = judge(&[Slo::parse("p90=50ms").unwrap()], &ok, 50);
        assert!(v[0].met, "{v:?}");
        assert!(
            v[0].detail.contains("50 failed requests counted"),
            "{}",
            v[0].detail
        );
    }

    #[test]
    fn failures_shift_the_percentile_towards_the_slow_successes() {
        // 985 at 1 ms, 5 at 100 ms, 10 failures. Without the failures p99 is rank 981 of 990:
        // 1 ms. With them it is rank 990 of 1000, a 100 ms success.
        let mut samples = vec![1_000u64; 985];
        samples.extend([100_000u64; 5]);
        let ok = histogram_of(&samples);
        let alone = judge(&[Slo::parse("p99=50ms").unwrap()], &ok, 0);
        assert!(alone[0].met, "{alone:?}");
        let counted = judge(&[Slo::parse("p99=50ms").unwrap()], &ok, 10);
        assert!(!counted[0].met, "{counted:?}");
        assert!((counted[0].observed_ms - 100.0).abs() < 0.2, "{counted:?}");
    }

    #[test]
    fn without_failures_the_verdict_reads_the_tables_percentile() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 100).collect();
        let ok = histogram_of(&samples);
        let table = percentiles(&ok);
        for (label, shown) in [
            ("p50", table.p50),
            ("p90", table.p90),
            ("p99", table.p99),
            ("p99.9", table.p999),
        ] {
            let v = judge(&[Slo::parse(&format!("{label}=1s")).unwrap()], &ok, 0);
            assert_eq!(v[0].observed_ms, shown, "{label}");
        }
    }

    #[test]
    fn the_error_rate_slo_compares_failed_over_all_requests() {
        let ok = histogram_of(&[1_000; 950]);
        let one_pct = Slo::parse("errors=1%").unwrap();
        let v = judge(&[one_pct], &ok, 50);
        assert!(!v[0].met);
        assert_eq!(v[0].observed_error_rate, Some(0.05));
        assert!(
            v[0].detail.contains("5% (50 of 1000) > 1%"),
            "{}",
            v[0].detail
        );
        let v = judge(&[Slo::parse("errors=5%").unwrap()], &ok, 50);
        assert!(v[0].met);
        let v = judge(&[Slo::parse("errors=0%").unwrap()], &ok, 0);
        assert!(v[0].met);
    }

    #[test]
    fn nothing_sent_meets_no_objective() {
        let empty = new_histogram();
        let v = judge(
            &[
                Slo::parse("p99=1s").unwrap(),
                Slo::parse("errors=100%").unwrap(),
            ],
            &empty,
            0,
        );
        assert!(v.iter().all(|v| !v.met), "{v:?}");
    }

    #[test]
    fn all_failed_requests_fail_every_objective() {
        let empty = new_histogram();
        let v = judge(&[Slo::parse("p50=1s").unwrap()], &empty, 10);
        assert!(!v[0].met);
        assert!(
            v[0].detail.contains("100% of requests failed"),
            "{}",
            v[0].detail
        );
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
