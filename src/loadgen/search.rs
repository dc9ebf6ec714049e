//! The capacity search shared by `--find-capacity` and `benchstack tune`: open-loop probes
//! doubling from `start_rate` (or bracketing a warm start) until one fails, then bisecting, as
//! MLPerf's LoadGen does; and the floor verdict that ends the search of a configuration no
//! rate can pass.

use serde::Serialize;

use super::result::{SloVerdict, StageReport};

/// How a capacity search runs.
#[derive(Debug, Clone, PartialEq)]
pub struct CapacitySearch {
    /// The first probe's rate.
    pub start_rate: f64,
    /// How long each probe runs.
    pub probe_duration: std::time::Duration,
    /// Stop bisecting when the bracket is narrower than this fraction of its upper end.
    pub precision: f64,
    /// Never probe above this rate.
    pub max_rate: f64,
    pub max_probes: usize,
}

impl Default for CapacitySearch {
    fn default() -> Self {
        CapacitySearch {
            start_rate: 100.0,
            probe_duration: std::time::Duration::from_secs(10),
            precision: 0.05,
            max_rate: 1_000_000.0,
            max_probes: 20,
        }
    }
}

/// A warm start climbs by this factor per passing probe (a cold start doubles): a neighbour in
/// the grid rarely carries more than half as much again, and the bisection after a step this
/// size costs no more probes than after a doubling at the usual precisions.
pub const WARM_STEP: f64 = 1.5;

/// Halving the rate must lower a missed objective's observation by more than this fraction of
/// it (and `NOISE_MS` for latency) to count: less is run-to-run noise, not the load easing.
pub const NOISE_SHARE: f64 = 0.10;
pub const NOISE_MS: f64 = 1.0;

/// The server kept pace with a probe when it completed at least this share of the successful
/// requests the offered rate implies within the probe's whole seconds.
pub const KEPT_UP_SHARE: f64 = 0.8;

/// What the search needs to know about a probe.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSample {
    pub rate: f64,
    pub passed: bool,
    /// The stage's verdict per objective (failures counted).
    pub verdicts: Vec<SloVerdict>,
    /// The server completed requests at the offered rate (less its failed share): its queue
    /// was not growing, so a missed latency objective is not the load's doing.
    pub kept_up: bool,
}

impl ProbeSample {
    /// `passed` is the caller's verdict (`probe_verdict`, which also judges the offered rate).
    pub fn of(stage: &StageReport, rate: f64, passed: bool) -> Self {
        ProbeSample {
            rate,
            passed,
            verdicts: stage.slos.clone(),
            kept_up: kept_up(stage, rate),
        }
    }
}

/// Whether the server answered `stage` at its offered `rate`: the successful requests that
/// completed within the stage's whole seconds (by completion time) are at least
/// `KEPT_UP_SHARE` of those the rate implies, after the median latency's delay. A server whose
/// queue grows completes at its own capacity instead, whatever the offered rate. A stage
/// shorter than a second cannot show it.
pub fn kept_up(stage: &StageReport, rate: f64) -> bool {
    // A probe stopped early ran at least `record::MIN_RUN`: one whole second.
    let window = (stage.duration_s + 1e-6).floor();
    if window < 1.0 || rate.is_nan() || rate <= 0.0 {
        return false;
    }
    let ok: u64 = stage
        .timeline
        .iter()
        .filter(|p| f64::from(p.t) < window)
        .map(|p| p.requests.saturating_sub(p.errors))
        .sum();
    let lead = stage.latency_ms.p50 / 1000.0;
    let expected = (1.0 - stage.error_rate) * rate * (window - lead);
    expected > 0.0 && ok as f64 >= KEPT_UP_SHARE * expected
}

/// A configuration whose objective stays missed however low the rate: halving the rate did
/// not lower the observation beyond noise while the server kept pace with the lower rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Floor {
    /// `p99`, or `errors`.
    pub objective: String,
    /// The limit: ms for a latency objective, a fraction for `errors`.
    pub limit: f64,
    /// The two probes, the higher rate first.
    pub observed: [FloorPoint; 2],
}

/// One probe's observation of the objective behind a floor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FloorPoint {
    /// Offered rate, req/s.
    pub rate: f64,
    /// ms for a latency objective, the error rate as a fraction for `errors`.
    pub value: f64,
}

impl Floor {
    /// The lower of the two observations: the floor is at least that high.
    pub fn value(&self) -> f64 {
        self.observed[0].value.min(self.observed[1].value)
    }

    /// `p99 floor 72.4 ms > 50 ms at 150 and 75 req/s`.
    pub fn text(&self) -> String {
        let (a, b) = (
            fmt_rate(self.observed[0].rate),
            fmt_rate(self.observed[1].rate),
        );
        if self.objective == "errors" {
            format!(
                "error-rate floor {} > {} at {a} and {b} req/s",
                crate::vocab::load::format_error_rate(self.value()),
                crate::vocab::load::format_error_rate(self.limit),
            )
        } else {
            format!(
                "{} floor {} ms > {} ms at {a} and {b} req/s",
                self.objective,
                fmt_ms(self.value()),
                fmt_ms(self.limit)
            )
        }
    }
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_rate(r: f64) -> String {
    if r.fract() == 0.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// The floor two failed probes show, `high` at a rate and `low` at a lower one: an objective
/// both missed whose observation at the lower rate is not lower beyond noise, while the
/// server kept pace with the lower rate (so a queue is not what kept it high). A latency
/// objective counts only where both percentiles are finite (otherwise failures decide it and
/// the error-rate objective speaks); the error rate counts as lowered when the share of
/// requests that succeeded grew beyond noise (an overloaded server that fails what it cannot
/// take succeeds twice as often at half the rate).
pub fn floor_between(high: &ProbeSample, low: &ProbeSample) -> Option<Floor> {
    if high.passed || low.passed || !low.kept_up || low.rate >= high.rate {
        return None;
    }
    low.verdicts.iter().filter(|v| !v.met).find_map(|l| {
        let h = high.verdicts.iter().find(|h| h.slo == l.slo && !h.met)?;
        match (
            h.limit_error_rate,
            h.observed_error_rate,
            l.observed_error_rate,
        ) {
            (Some(limit), Some(eh), Some(el)) => {
                let (sh, sl) = (1.0 - eh, 1.0 - el);
                let lowered = sl > sh * (1.0 + NOISE_SHARE) + 1e-12;
                (!lowered).then(|| Floor {
                    objective: l.slo.clone(),
                    limit,
                    observed: [
                        FloorPoint {
                            rate: high.rate,
                            value: eh,
                        },
                        FloorPoint {
                            rate: low.rate,
                            value: el,
                        },
                    ],
                })
            }
            (Some(_), _, _) => None,
            (None, _, _) => {
                if h.observed_ms < 0.0 || l.observed_ms < 0.0 {
                    return None;
                }
                let noise = (h.observed_ms * NOISE_SHARE).max(NOISE_MS);
                let lowered = l.observed_ms < h.observed_ms - noise;
                (!lowered).then(|| Floor {
                    objective: l.slo.clone(),
                    limit: l.limit_ms,
                    observed: [
                        FloorPoint {
                            rate: high.rate,
                            value: h.observed_ms,
                        },
                        FloorPoint {
                            rate: low.rate,
                            value: l.observed_ms,
                        },
                    ],
                })
            }
        }
    })
}

/// How a search ended.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchOutcome {
    /// The highest rate that passed (None when none did).
    pub capacity: Option<f64>,
    /// Set when the search stopped because no rate can pass.
    pub floor: Option<Floor>,
}

/// Rounds a rate stepped to from another: whole req/s from 10 up, tenths below.
fn step_rate(r: f64) -> f64 {
    if r >= 10.0 {
        r.round()
    } else {
        (r * 10.0).round() / 10.0
    }
}

/// The search itself, apart from how a probe is run. Cold, it doubles the rate from
/// `start_rate` until `probe` fails (or halves it until one passes); warm (`warm`: a nearby
/// configuration's capacity) it starts there and climbs by `WARM_STEP`. Then it bisects until
/// the bracket is within `precision` of its upper end or `max_probes` probes ran. While only
/// failures have been seen, two in a row that show a floor (`floor_between`) end it: no
/// lower rate will pass. `probe` measures a rate; an `Err` stops the search. Shared by
/// `find_capacity` and `benchstack tune`, so both bracket the same way.
pub fn search_capacity<E>(
    search: &CapacitySearch,
    warm: Option<f64>,
    mut probe: impl FnMut(f64) -> Result<ProbeSample, E>,
) -> Result<SearchOutcome, E> {
    let mut lo: Option<f64> = None;
    let mut hi: Option<f64> = None;
    let (mut rate, up) = match warm.filter(|c| c.is_finite() && *c >= 1.0) {
        Some(c) => (step_rate(c).min(search.max_rate), WARM_STEP),
        None => (search.start_rate, 2.0),
    };
    let mut count = 0;
    let mut last_failure: Option<ProbeSample> = None;
    // Grow (or shrink) until the rate is bracketed.
    while count < search.max_probes {
        count += 1;
        let sample = probe(rate)?;
        if sample.passed {
            lo = Some(rate);
            let next = if up == 2.0 {
                rate * 2.0
            } else {
                step_rate(rate * up)
            };
            if hi.is_some() || next > search.max_rate {
                break;
            }
            rate = next;
        } else {
            hi = Some(rate);
            if lo.is_some() {
                break;
            }
            if let Some(floor) = last_failure
                .as_ref()
                .and_then(|prev| floor_between(prev, &sample))
            {
                return Ok(SearchOutcome {
                    capacity: None,
                    floor: Some(floor),
                });
            }
            last_failure = Some(sample);
            rate /= 2.0;
            if rate < 1.0 {
                break;
            }
        }
    }
    // Bisect.
    while let (Some(l), Some(h)) = (lo, hi) {
        if count >= search.max_probes || (h - l) / h <= search.precision {
            break;
        }
        count += 1;
        let mid = ((l + h) / 2.0).round().max(1.0);
        if mid <= l || mid >= h {
            break;
        }
        if probe(mid)?.passed {
            lo = Some(mid);
        } else {
            hi = Some(mid);
        }
    }
    Ok(SearchOutcome {
        capacity: lo,
        floor: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(label: &str, limit_ms: f64, observed_ms: f64) -> SloVerdict {
        SloVerdict {
            slo: label.into(),
            percentile: 99.0,
            limit_ms,
            observed_ms,
            limit_error_rate: None,
            observed_error_rate: None,
            met: observed_ms >= 0.0 && observed_ms <= limit_ms,
            detail: String::new(),
        }
    }

    fn errors(limit: f64, observed: f64) -> SloVerdict {
        SloVerdict {
            slo: "errors".into(),
            percentile: 0.0,
            limit_ms: 0.0,
            observed_ms: -1.0,
            limit_error_rate: Some(limit),
            observed_error_rate: Some(observed),
            met: observed <= limit,
            detail: String::new(),
        }
    }

    fn failed(rate: f64, verdicts: Vec<SloVerdict>, kept_up: bool) -> ProbeSample {
        ProbeSample {
            rate,
            passed: false,
            verdicts,
            kept_up,
        }
    }

    #[test]
    fn a_latency_that_halving_the_rate_does_not_lower_is_a_floor() {
        let high = failed(100.0, vec![latency("p99", 50.0, 72.0)], true);
        let low = failed(50.0, vec![latency("p99", 50.0, 72.5)], true);
        let f = floor_between(&high, &low).unwrap();
        assert_eq!(f.text(), "p99 floor 72 ms > 50 ms at 100 and 50 req/s");
        // Within noise below is still no lower.
        let low = failed(50.0, vec![latency("p99", 50.0, 66.0)], true);
        assert!(floor_between(&high, &low).is_some());
    }

    #[test]
    fn a_latency_that_halving_the_rate_lowers_is_no_floor() {
        let high = failed(100.0, vec![latency("p99", 50.0, 400.0)], true);
        let low = failed(50.0, vec![latency("p99", 50.0, 120.0)], true);
        assert_eq!(floor_between(&high, &low), None);
    }

    #[test]
    fn a_server_that_did_not_keep_pace_shows_no_floor_however_alike_the_latencies() {
        // Deep overload: both probes' percentiles are the queue, not the server's floor.
        let high = failed(100.0, vec![latency("p99", 50.0, 9000.0)], false);
        let low = failed(50.0, vec![latency("p99", 50.0, 9000.0)], false);
        assert_eq!(floor_between(&high, &low), None);
    }

    #[test]
    fn a_percentile_among_the_failures_leaves_the_verdict_to_the_error_rate() {
        let high = failed(100.0, vec![latency("p99", 50.0, -1.0)], true);
        let low = failed(50.0, vec![latency("p99", 50.0, -1.0)], true);
        assert_eq!(floor_between(&high, &low), None);
    }

    #[test]
    fn an_error_rate_that_halving_does_not_lower_is_a_floor_but_shedding_is_not() {
        let high = failed(100.0, vec![errors(0.01, 0.05)], true);
        let low = failed(50.0, vec![errors(0.01, 0.049)], true);
        let f = floor_between(&high, &low).unwrap();
        assert!(f.text().starts_with("error-rate floor 4.9"), "{}", f.text());
        // A server shedding what it cannot take succeeds twice as often at half the rate,
        // even when nearly everything fails at both.
        let high = failed(1200.0, vec![errors(0.01, 0.983)], true);
        let low = failed(600.0, vec![errors(0.01, 0.967)], true);
        assert_eq!(floor_between(&high, &low), None);
    }

    #[test]
    fn the_search_stops_on_a_floor_after_two_probes() {
        let mut rates = Vec::new();
        let out = search_capacity::<()>(&CapacitySearch::default(), None, |rate| {
            rates.push(rate);
            Ok(failed(rate, vec![latency("p99", 50.0, 72.0)], true))
        })
        .unwrap();
        assert_eq!(rates, vec![100.0, 50.0]);
        assert_eq!(out.capacity, None);
        assert_eq!(out.floor.unwrap().objective, "p99");
    }

    #[test]
    fn without_a_floor_the_search_halves_down_to_one_request_a_second() {
        let mut rates = Vec::new();
        let out = search_capacity::<()>(&CapacitySearch::default(), None, |rate| {
            rates.push(rate);
            Ok(failed(rate, vec![latency("p99", 50.0, 72.0)], false))
        })
        .unwrap();
        assert_eq!(rates.len(), 7, "{rates:?}");
        assert_eq!(
            out,
            SearchOutcome {
                capacity: None,
                floor: None
            }
        );
    }

    #[test]
    fn a_warm_start_brackets_around_the_given_capacity() {
        let truth = 700.0;
        let mut rates = Vec::new();
        let search = CapacitySearch {
            precision: 0.08,
            ..CapacitySearch::default()
        };
        let out = search_capacity::<()>(&search, Some(640.0), |rate| {
            rates.push(rate);
            Ok(ProbeSample {
                rate,
                passed: rate <= truth,
                verdicts: Vec::new(),
                kept_up: true,
            })
        })
        .unwrap();
        assert_eq!(rates[..2], [640.0, 960.0]);
        let cap = out.capacity.unwrap();
        assert!(cap <= truth && cap >= truth * 0.92, "{cap} {rates:?}");
        assert!(rates.len() <= 6, "{rates:?}");
    }
}
