//! Per-stage recording: fixed-size histograms, error counters and one summary per second.
//! Nothing here grows with the number of requests, so memory stays flat however long the run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::histogram::{encode_histogram, lag_summary, ms, new_histogram, percentiles};
use super::result::{EarlyStop, StageReport, TimelinePoint};
use super::verdict::{self, bottleneck, judge};
use crate::vocab::load::{Rate, Slo, Stage};

/// Why a request failed. Names (`kind()`) are the keys of `errors` in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// Could not open a connection.
    Connect,
    /// No complete reply within `--timeout`.
    Timeout,
    /// The server closed or reset the connection before the reply was complete.
    Closed,
    /// Another socket error.
    Io,
    /// A reply that is not HTTP, not a predict reply, or not a PredictResponse.
    Malformed,
    /// An HTTP status other than 200.
    Http(u16),
    /// A gRPC status other than OK.
    /// (the code's number, so kinds sort)
    Grpc(i32),
}

impl ErrorKind {
    pub fn kind(&self) -> String {
        match self {
            ErrorKind::Connect => "connect".into(),
            ErrorKind::Timeout => "timeout".into(),
            ErrorKind::Closed => "closed".into(),
            ErrorKind::Io => "io".into(),
            ErrorKind::Malformed => "malformed".into(),
            ErrorKind::Http(s) => format!("http_{s}"),
            ErrorKind::Grpc(c) => format!("grpc_{}", grpc_code_name(tonic::Code::from_i32(*c))),
        }
    }
}

fn grpc_code_name(c: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match c {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// A probe that can no longer pass still runs this long, so that its report shows a whole
/// second of the server's pace (see `search::kept_up`).
pub const MIN_RUN: Duration = Duration::from_secs(1);

/// A capacity probe's stop rule: a stage planned for `planned` requests fails the moment more
/// requests have missed an objective than it allows (`judge` over `planned` requests), so
/// sending the rest proves nothing. Only probes carry one (`LoadSpec::stop_when_hopeless`).
#[derive(Debug, Clone, PartialEq)]
pub struct Watch {
    pub planned: u64,
    pub budgets: Vec<Budget>,
}

/// One objective's allowance of misses out of the planned requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// `p99`, `errors`.
    pub label: String,
    /// A latency objective's limit in µs; None for the error-rate objective, which only
    /// failed requests miss.
    pub limit_us: Option<u64>,
    /// How many of the planned requests may miss it while it still holds.
    pub allowed: u64,
    /// Completed requests that missed it so far (slower than the limit, or failed).
    pub over: u64,
}

impl Watch {
    /// The rule for a stage at `rate` req/s for `duration` judged by `slos`. `planned` is an
    /// upper bound on the requests the schedule sends (Poisson arrivals: four standard
    /// deviations above the mean), so the stop never fires on a stage that could still pass:
    /// more requests only allow more misses.
    pub fn new(slos: &[Slo], rate: f64, duration: Duration, poisson: bool) -> Option<Watch> {
        let mean = rate * duration.as_secs_f64();
        if !mean.is_finite() || mean < 1.0 || slos.is_empty() {
            return None;
        }
        let spread = if poisson { 4.0 * mean.sqrt() } else { 0.0 };
        let planned = (mean + spread).ceil() as u64 + 1;
        let total = planned as f64;
        let budgets = slos
            .iter()
            .map(|slo| match *slo {
                Slo::Latency { percentile, limit } => {
                    // The rank `judge` reads: ⌈q·N⌉; everything above it may miss.
                    let rank = ((percentile / 100.0 * total) - 1e-9).ceil().max(1.0) as u64;
                    Budget {
                        label: slo.label(),
                        limit_us: Some(us(limit)),
                        allowed: planned.saturating_sub(rank),
                        over: 0,
                    }
                }
                Slo::ErrorRate { errors } => Budget {
                    label: slo.label(),
                    limit_us: None,
                    allowed: (errors * total + 1e-9).floor().max(0.0) as u64,
                    over: 0,
                },
            })
            .collect();
        Some(Watch { planned, budgets })
    }

    fn record(&mut self, latency_us: Option<u64>) {
        for b in &mut self.budgets {
            let missed = match (latency_us, b.limit_us) {
                (None, _) => true,
                (Some(l), Some(limit)) => l > limit,
                (Some(_), None) => false,
            };
            if missed {
                b.over += 1;
            }
        }
    }

    /// Why the stage can no longer pass, given `queued_over(limit_us)`: requests still
    /// waiting for a connection that are already older than that limit (they can only
    /// complete later still). None while every objective can still hold.
    pub fn hopeless(&self, queued_over: impl Fn(u64, u64) -> u64) -> Option<String> {
        self.budgets.iter().find_map(|b| {
            let waiting = match b.limit_us {
                Some(limit) => queued_over(limit, b.allowed.saturating_sub(b.over) + 1),
                None => 0,
            };
            let over = b.over + waiting;
            (over > b.allowed).then(|| match b.limit_us {
                Some(limit) => format!(
                    "{over} of the {} planned requests exceeded {} or failed; {} allows {}",
                    self.planned,
                    humantime::format_duration(Duration::from_micros(limit)),
                    b.label,
                    b.allowed
                ),
                None => format!(
                    "{over} of the {} planned requests failed; {} allows {}",
                    self.planned, b.label, b.allowed
                ),
            })
        })
    }
}

pub struct StageRecorder {
    pub stage: Stage,
    /// When the stage's schedule began and ends (set when the stage starts).
    pub start: Option<Instant>,
    pub end: Option<Instant>,
    pub latency: Histogram<u64>,
    pub service: Histogram<u64>,
    pub lag: Histogram<u64>,
    pub wait: Histogram<u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    pub errors_total: u64,
    pub completed: u64,
    pub sent_in_window: u64,
    pub cap_hits: u64,
    interval: Histogram<u64>,
    interval_second: u32,
    interval_requests: u64,
    interval_errors: u64,
    timeline: Vec<TimelinePoint>,
    /// The stop rule of a capacity probe.
    pub watch: Option<Watch>,
    /// When the stage stopped early, and why.
    pub stopped: Option<(Instant, String)>,
    /// Released requests dropped unsent when the stage stopped early.
    pub unsent: u64,
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128) as u64
}

impl StageRecorder {
    pub fn new(stage: Stage) -> Self {
        StageRecorder {
            stage,
            start: None,
            end: None,
            latency: new_histogram(),
            service: new_histogram(),
            lag: new_histogram(),
            wait: new_histogram(),
            errors: BTreeMap::new(),
            errors_total: 0,
            completed: 0,
            sent_in_window: 0,
            cap_hits: 0,
            interval: new_histogram(),
            interval_second: 0,
            interval_requests: 0,
            interval_errors: 0,
            timeline: Vec::new(),
            watch: None,
            stopped: None,
            unsent: 0,
        }
    }

    pub fn begin(&mut self, start: Instant) {
        self.start = Some(start);
        self.end = Some(start + self.stage.duration);
    }

    #[inline]
    pub fn record_lag(&mut self, lag: Duration) {
        self.lag.saturating_record(us(lag));
    }

    #[inline]
    pub fn record_sent(&mut self, released: Instant, sent: Instant) {
        self.wait
            .saturating_record(us(sent.saturating_duration_since(released)));
        if self.end.is_some_and(|end| sent < end) {
            self.sent_in_window += 1;
        }
    }

    /// Records one completed request (`intended` → `sent` → `done`).
    #[inline]
    pub fn record_done(
        &mut self,
        intended: Instant,
        sent: Instant,
        done: Instant,
        outcome: Result<(), ErrorKind>,
    ) {
        self.completed += 1;
        let second = self
            .start
            .map(|s| done.saturating_duration_since(s).as_secs() as u32)
            .unwrap_or(0);
        if second != self.interval_second {
            self.roll(second);
        }
        self.interval_requests += 1;
        if let Some(w) = &mut self.watch {
            w.record(
                outcome
                    .is_ok()
                    .then(|| us(done.saturating_duration_since(intended))),
            );
        }
        match outcome {
            Ok(()) => {
                let latency = us(done.saturating_duration_since(intended));
                self.latency.saturating_record(latency);
                self.interval.saturating_record(latency);
                self.service
                    .saturating_record(us(done.saturating_duration_since(sent)));
            }
            Err(kind) => {
                *self.errors.entry(kind).or_default() += 1;
                self.errors_total += 1;
                self.interval_errors += 1;
            }
        }
    }

    /// Closes the current one-second bucket (and empty ones up to `second`).
    fn roll(&mut self, second: u32) {
        if second < self.interval_second {
            // A completion stamped before the current bucket (cannot normally happen):
            // count it in the current bucket rather than rewrite history.
            return;
        }
        self.flush_interval();
        for t in self.interval_second + 1..second {
            self.timeline.push(TimelinePoint {
                t,
                ..Default::default()
            });
        }
        self.interval_second = second;
    }

    fn flush_interval(&mut self) {
        if self.interval_requests == 0 && self.interval.is_empty() {
            self.timeline.push(TimelinePoint {
                t: self.interval_second,
                ..Default::default()
            });
            return;
        }
        let h = &self.interval;
        let (p50, p99, max) = if h.is_empty() {
            (0.0, 0.0, 0.0)
        } else {
            (
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max()),
            )
        };
        self.timeline.push(TimelinePoint {
            t: self.interval_second,
            requests: self.interval_requests,
            errors: self.interval_errors,
            p50_ms: p50,
            p99_ms: p99,
            max_ms: max,
        });
        self.interval.reset();
        self.interval_requests = 0;
        self.interval_errors = 0;
    }

    pub fn p99_ms(&self) -> f64 {
        if self.latency.is_empty() {
            0.0
        } else {
            ms(self.latency.value_at_quantile(0.99))
        }
    }

    pub fn into_report(mut self, slos: &[Slo]) -> StageReport {
        if self.completed > 0 || self.start.is_some() {
            self.flush_interval();
        }
        // Drop trailing buckets past the stage's end that hold nothing.
        while self
            .timeline
            .last()
            .is_some_and(|p| p.requests == 0 && p.t as f64 >= self.stage.duration.as_secs_f64())
        {
            self.timeline.pop();
        }
        let planned_s = self.stage.duration.as_secs_f64();
        // A stage that stopped early ran until it stopped: its rates are over that time.
        let stopped_early = self.stopped.take().map(|(at, reason)| {
            let ran = self
                .start
                .map(|s| at.saturating_duration_since(s).as_secs_f64())
                .unwrap_or(0.0);
            (ran.clamp(0.001, planned_s.max(0.001)), reason)
        });
        let duration_s = stopped_early.as_ref().map_or(planned_s, |(ran, _)| *ran);
        let reason = bottleneck(&self.lag, self.cap_hits, verdict::late_threshold(slos));
        StageReport {
            name: self.stage.name.clone(),
            target_rate: match self.stage.rate {
                Rate::PerSecond(r) => Some(r),
                Rate::Max => None,
            },
            closed_loop: matches!(self.stage.rate, Rate::Max),
            duration_s,
            requests: self.completed,
            achieved_rate: if duration_s > 0.0 {
                self.sent_in_window as f64 / duration_s
            } else {
                0.0
            },
            errors_total: self.errors_total,
            errors: self.errors.iter().map(|(k, n)| (k.kind(), *n)).collect(),
            error_rate: verdict::error_rate(self.errors_total, self.completed),
            latency_ms: percentiles(&self.latency),
            service_time_ms: percentiles(&self.service),
            generator_lag_ms: lag_summary(&self.lag),
            queue_wait_ms: lag_summary(&self.wait),
            histogram: encode_histogram(&self.latency),
            service_time_histogram: encode_histogram(&self.service),
            generator_lag_histogram: encode_histogram(&self.lag),
            queue_wait_histogram: encode_histogram(&self.wait),
            slos: judge(slos, &self.latency, self.errors_total),
            generator_bottleneck: reason.is_some(),
            bottleneck: reason,
            in_flight_cap_hits: self.cap_hits,
            timeline: self.timeline,
            stopped_early: stopped_early.map(|(_, reason)| EarlyStop {
                planned_s,
                unsent: self.unsent,
                reason,
            }),
            server: None,
            server_note: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage() -> Stage {
        Stage {
            name: "s".into(),
            rate: Rate::PerSecond(100.0),
            duration: Duration::from_secs(3),
        }
    }

    #[test]
    fn latency_counts_from_the_intended_send_time_and_service_from_the_actual_one() {
        let mut r = StageRecorder::new(stage());
        let t0 = Instant::now();
        r.begin(t0);
        let intended = t0;
        let sent = t0 + Duration::from_millis(200);
        let done = sent + Duration::from_millis(1);
        r.record_done(intended, sent, done, Ok(()));
        let rep = r.into_report(&[]);
        assert!(
            (rep.latency_ms.max - 201.0).abs() < 0.5,
            "{:?}",
            rep.latency_ms
        );
        assert!((rep.service_time_ms.max - 1.0).abs() < 0.01);
    }

    #[test]
    fn timeline_has_one_bucket_per_second_including_silent_ones() {
        let mut r = StageRecorder::new(stage());
        let t0 = Instant::now();
        r.begin(t0);
        for s in [0u64, 0, 2] {
            let t = t0 + Duration::from_millis(s * 1000 + 10);
            r.record_done(t, t, t + Duration::from_millis(1), Ok(()));
        }
        let t = t0 + Duration::from_millis(2500);
        r.record_done(t, t, t, Err(ErrorKind::Http(503)));
        let rep = r.into_report(&[]);
        let counts: Vec<(u32, u64, u64)> = rep
            .timeline
            .iter()
            .map(|p| (p.t, p.requests, p.errors))
            .collect();
        assert_eq!(counts, vec![(0, 2, 0), (1, 0, 0), (2, 2, 1)]);
        assert_eq!(rep.errors.get("http_503"), Some(&1));
        assert_eq!(rep.requests, 4);
    }
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    fn p95() -> Vec<Slo> {
        vec![
            Slo::Latency {
                percentile: 95.0,
                limit: Duration::from_millis(50),
            },
            Slo::ErrorRate { errors: 0.01 },
        ]
    }

    #[test]
    fn a_probe_may_miss_what_its_objectives_allow_of_the_planned_requests() {
        // 200 req/s for 1 s: at most 201 requests; p95 allows 10 of them over 50 ms, errors=1%
        // allows 2 failures.
        let w = Watch::new(&p95(), 200.0, Duration::from_secs(1), false).unwrap();
        assert_eq!(w.planned, 201);
        let allowed: Vec<u64> = w.budgets.iter().map(|b| b.allowed).collect();
        assert_eq!(allowed, vec![10, 2]);
        // Poisson arrivals may send more: the bound (and so the allowance) is higher.
        let poisson = Watch::new(&p95(), 200.0, Duration::from_secs(1), true).unwrap();
        assert!(poisson.planned > 250, "{}", poisson.planned);
        // Rate max has no plan; no objectives, no rule.
        assert!(Watch::new(&[], 200.0, Duration::from_secs(1), false).is_none());
    }

    #[test]
    fn a_probe_is_hopeless_only_past_floor_one_minus_q_times_n_misses() {
        let mut w = Watch::new(&p95(), 200.0, Duration::from_secs(1), false).unwrap();
        let none = |_: u64, _: u64| 0;
        for _ in 0..10 {
            w.record(Some(60_000));
        }
        assert_eq!(w.hopeless(none), None, "10 slow of 201 still meet p95");
        w.record(Some(50_000));
        assert_eq!(
            w.hopeless(none),
            None,
            "exactly at the limit is not over it"
        );
        w.record(Some(60_000));
        let why = w.hopeless(none).unwrap();
        assert_eq!(
            why,
            "11 of the 201 planned requests exceeded 50ms or failed; p95 allows 10"
        );
        // Requests still queued past the limit count too.
        let mut w = Watch::new(&p95(), 200.0, Duration::from_secs(1), false).unwrap();
        assert!(w.hopeless(|_, enough| enough).is_some());
        // Three failures are over the error-rate objective's two.
        for _ in 0..3 {
            w.record(None);
        }
        assert!(w.budgets[1].over > w.budgets[1].allowed);
    }

    #[test]
    fn a_stopped_stage_reports_how_long_it_ran_and_why() {
        let stage = Stage {
            name: "probe".into(),
            rate: Rate::PerSecond(100.0),
            duration: Duration::from_secs(10),
        };
        let mut r = StageRecorder::new(stage);
        let t0 = Instant::now();
        r.begin(t0);
        for i in 0..150u64 {
            let sent = t0 + Duration::from_millis(i * 10);
            r.record_sent(sent, sent);
            r.record_done(sent, sent, sent + Duration::from_millis(80), Ok(()));
        }
        r.stopped = Some((t0 + Duration::from_millis(1500), "hopeless".into()));
        r.end = Some(t0 + Duration::from_millis(1500));
        r.unsent = 3;
        let rep = r.into_report(&p95());
        assert_eq!(rep.duration_s, 1.5);
        assert!(
            (rep.achieved_rate - 100.0).abs() < 1.0,
            "{}",
            rep.achieved_rate
        );
        let e = rep.stopped_early.unwrap();
        assert_eq!(
            (e.planned_s, e.unsent, e.reason.as_str()),
            (10.0, 3, "hopeless")
        );
        assert!(!rep.slos[0].met);
    }
}
