//! Every verdict of the load generator, in one place: the SLO judgement of a stage (failed
//! requests counted), whether the generator was the bottleneck, whether its lag accounts for a
//! miss, the capacity probe's verdict and the run-level validity rule. The terminal, `apply`,
//! `--find-capacity`, `tune` and `compare` all read these and judge nothing themselves.

use std::time::Duration;

use hdrhistogram::Histogram;

use super::histogram::{decode_histogram, ms};
use super::result::{RunReport, SloVerdict, StageReport};
use crate::vocab::load::{Slo, format_error_rate, format_ms as fmt_ms};

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
    let over = released_late(lag, late);
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

/// How many requests were released more than `late` after their intended send time (whole
/// histogram buckets above it: 3 significant digits, within 0.1%).
fn released_late(lag: &Histogram<u64>, late: Duration) -> u64 {
    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
    lag.iter_recorded()
        .filter(|v| lag.lowest_equivalent(v.value_iterated_to()) > late_us)
        .map(|v| v.count_at_value())
        .sum()
}

/// A stage's late-release threshold from its judged objectives (`late_threshold`'s rule).
fn stage_late_threshold(stage: &StageReport) -> Duration {
    stage
        .slos
        .iter()
        .filter(|v| v.percentile > 0.0 && v.limit_ms > 0.0)
        .filter_map(|v| Duration::try_from_secs_f64(v.limit_ms / 1000.0 / 10.0).ok())
        .min()
        .unwrap_or(LATE_WITHOUT_SLO)
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

/// Adds `why` to a run's reasons for being invalid.
pub fn mark_invalid(report: &mut RunReport, why: impl Into<String>) {
    let why = why.into();
    report.invalid = Some(match report.invalid.take() {
        Some(prev) if !prev.is_empty() => format!("{prev}; {why}"),
        _ => why,
    });
}

/// Why a run's own stages make it unusable for a verdict: a stage whose generator was the
/// bottleneck and whose missed objectives (or missed offered rate) its lag accounts for,
/// the same rule as a capacity probe's `ProbeVerdict::Invalid`. A stage that met everything
/// despite lag keeps its pass (lag only makes latency look worse), so it does not count.
pub fn generator_invalid(report: &RunReport) -> Option<String> {
    let why: Vec<String> = report
        .stages
        .iter()
        .filter(|s| s.generator_bottleneck)
        .filter_map(|s| match probe_verdict(s, s.target_rate.unwrap_or(0.0)) {
            ProbeVerdict::Invalid(why) => Some(format!(
                "stage {}: the load generator was the bottleneck ({why})",
                s.name
            )),
            _ => None,
        })
        .collect();
    (!why.is_empty()).then(|| why.join("; "))
}

/// Recomputes a (merged) run's generator verdict and adds it to the reasons it already has.
pub fn judge_validity(report: &mut RunReport) {
    if let Some(why) = generator_invalid(report) {
        mark_invalid(report, why);
    }
}

/// Why a probe did not hold, or `None` when it did: the stage's verdict
/// (`stage_failures`: every SLO with failed requests counted) and the offered rate
/// actually sent (within 1%). `probe_verdict` decides whether the generator's lag accounts for
/// it.
fn probe_failure(stage: &StageReport, rate: f64) -> Option<String> {
    let mut why = stage_failures(stage);
    if stage.achieved_rate < 0.99 * rate {
        why.push(format!(
            "only {:.1} req/s sent of {rate}",
            stage.achieved_rate
        ));
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// What a capacity probe says about the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbeVerdict {
    /// Every objective held at the offered rate. Generator lag, if any, only made the
    /// latency look worse (it counts from the intended send time), so the pass stands.
    Passed,
    /// The server missed an objective; the reasons.
    Failed(String),
    /// The generator fell behind far enough to account for the miss: no verdict on the
    /// server (retry, or give the load test more workers).
    Invalid(String),
}

/// The one verdict of a capacity probe, shared by `--find-capacity` and `benchstack tune`:
/// `probe_failure`, except that when the generator was the bottleneck and every missed
/// objective is one its own lag can account for (`lag_explains_miss`), the probe is
/// `Invalid` rather than held against the server; that includes a probe that missed only the
/// offered rate. A missed error-rate objective is always the server's (lag does not make a
/// server fail requests), and so is a latency miss beyond the lag, even when fewer requests
/// were sent than offered: with every connection waiting on a slow server, requests queue for
/// a connection, and that wait counts in the latency as the server's.
pub fn probe_verdict(stage: &StageReport, rate: f64) -> ProbeVerdict {
    let Some(failure) = probe_failure(stage, rate) else {
        return ProbeVerdict::Passed;
    };
    if !stage.generator_bottleneck {
        return ProbeVerdict::Failed(failure);
    }
    let why = stage
        .bottleneck
        .clone()
        .unwrap_or_else(|| "the load generator fell behind its schedule".into());
    let (Ok(latency), Ok(lag)) = (
        stage.latency_histogram(),
        decode_histogram(&stage.generator_lag_histogram),
    ) else {
        return ProbeVerdict::Invalid(why);
    };
    let server_missed = stage.slos.iter().filter(|v| !v.met).any(|v| {
        v.limit_error_rate.is_some()
            || (v.percentile > 0.0
                && !lag_explains_miss(
                    &latency,
                    stage.errors_total,
                    &lag,
                    v.percentile,
                    Duration::try_from_secs_f64(v.limit_ms.max(0.0) / 1000.0)
                        .unwrap_or(Duration::MAX),
                ))
    });
    // The generator can have cost the window one sent request per request it never released
    // and per late release. Requests missing beyond those were released on time and waited
    // for a connection: the server (or its connections) held them, not the generator.
    let rate_missed_by_server = rate > 0.0 && stage.achieved_rate < 0.99 * rate && {
        let offered = rate * stage.duration_s;
        let shortfall = (offered - stage.achieved_rate * stage.duration_s).floor();
        let unreleased = (offered - lag.len() as f64).max(0.0).ceil();
        shortfall > unreleased + released_late(&lag, stage_late_threshold(stage)) as f64
    };
    if server_missed || rate_missed_by_server {
        ProbeVerdict::Failed(failure)
    } else {
        ProbeVerdict::Invalid(format!(
            "{why}; the missed objectives ({failure}) are within what that lag accounts for"
        ))
    }
}

/// The objectives a capacity search judges probes by: the given ones, plus `errors=1%` when
/// none bounds the error rate, so that a configuration that sheds load by failing fast is
/// never crowned (the added objective is listed in the report like the others).
pub fn capacity_slos(slos: &[Slo]) -> Vec<Slo> {
    let mut out = slos.to_vec();
    if !out.iter().any(|s| matches!(s, Slo::ErrorRate { .. })) {
        out.push(Slo::ErrorRate { errors: 0.01 });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::histogram::{new_histogram, percentiles};
    use crate::loadgen::record::StageRecorder;
    use crate::loadgen::result::fixtures::{lags, report_of};
    use crate::vocab::load::{Rate, Stage};
    use std::time::Instant;

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
        let why = generator_invalid(&r).expect("invalid");
        assert!(why.contains("load generator was the bottleneck"), "{why}");
        judge_validity(&mut r);
        assert_eq!(r.invalid.as_deref(), Some(why.as_str()));
        let passed = lagged_stage(&[(970, 2_000, 0, false), (30, 30_000, 20_000, false)], &p99);
        let mut r = run_of(passed);
        r.stages[0].target_rate = Some(1000.0);
        assert_eq!(generator_invalid(&r), None);
        // Runs stored before the field read as valid.
        let mut old = serde_json::to_value(&r).unwrap();
        old.as_object_mut().unwrap().remove("invalid");
        let back: RunReport = serde_json::from_value(old).unwrap();
        assert_eq!(back.invalid, None);
        assert!(back.worker_diagnostics.is_empty());
    }

    /// A one-second stage at 20/s: `sent` of its requests sent within the window, every
    /// release `lag` late except `on_time` of them, all 20 timing out.
    fn queued_stage(sent: u64, on_time: u64, lag: Duration) -> StageReport {
        let mut r = StageRecorder::new(Stage {
            name: "s".into(),
            rate: Rate::PerSecond(20.0),
            duration: Duration::from_secs(1),
        });
        let t0 = Instant::now();
        r.begin(t0);
        for k in 0..20 {
            r.record_lag(if k < on_time { Duration::ZERO } else { lag });
        }
        for _ in 0..sent {
            r.record_sent(t0, t0);
        }
        for _ in 0..20 {
            r.record_done(
                t0,
                t0,
                t0 + Duration::from_secs(1),
                Err(crate::loadgen::record::ErrorKind::Timeout),
            );
        }
        r.into_report(&[])
    }

    #[test]
    fn a_rate_the_server_held_back_is_its_miss_however_noisy_the_generator() {
        // One connection to a server that never answers: one request sent, 19 waiting for
        // the connection; one release 6 ms late (a loaded machine) makes a bottleneck of 1
        // in 20, but it cannot have kept 19 requests off the wire.
        let held = queued_stage(1, 19, Duration::from_millis(6));
        assert!(held.generator_bottleneck);
        match probe_verdict(&held, 20.0) {
            ProbeVerdict::Failed(why) => assert!(why.contains("req/s sent of 20"), "{why}"),
            v => panic!("{v:?}"),
        }
        let mut run = report_of(&[20], &[]);
        run.stages = vec![held];
        assert_eq!(generator_invalid(&run), None);
        // Every release 300 ms late and ten requests missing: the lag accounts for them.
        let stalled = queued_stage(10, 0, Duration::from_millis(300));
        assert!(matches!(
            probe_verdict(&stalled, 20.0),
            ProbeVerdict::Invalid(_)
        ));
    }

    #[test]
    fn a_miss_the_generators_lag_accounts_for_is_no_verdict_on_the_server() {
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
}
