//! The vocabulary shared by the load generator, the stack language and the reports:
//! protocols, arrival processes, stages and SLOs, and how their text forms parse.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Rest,
    Grpc,
}

impl Protocol {
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        match s {
            "rest" | "http" => Ok(Protocol::Rest),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(SpecError::Protocol(other.to_string())),
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Rest => "rest",
            Protocol::Grpc => "grpc",
        })
    }
}

/// How intended send times are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Arrival {
    /// Evenly spaced: 1/rate apart.
    #[default]
    Constant,
    /// Exponential inter-arrival times with mean 1/rate (seeded).
    Poisson,
}

impl Arrival {
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        match s {
            "constant" => Ok(Arrival::Constant),
            "poisson" => Ok(Arrival::Poisson),
            other => Err(SpecError::Arrival(other.to_string())),
        }
    }
}

/// The offered load of one stage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Rate {
    /// Open loop: this many requests per second, on schedule.
    PerSecond(f64),
    /// Closed loop saturation over the connections (like wrk); reported as such.
    Max,
}

impl Rate {
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        if s == "max" {
            return Ok(Rate::Max);
        }
        let r: f64 = s.parse().map_err(|_| SpecError::Rate(s.to_string()))?;
        Rate::per_second(r).map_err(|e| match e {
            SpecError::RateTooHigh(_) => SpecError::RateTooHigh(s.to_string()),
            _ => SpecError::Rate(s.to_string()),
        })
    }

    /// The one check of an open-loop rate, wherever it comes from (flags, stack, worker
    /// JSON): finite, greater than 0 and at most `MAX_RATE`.
    pub fn per_second(r: f64) -> Result<Self, SpecError> {
        if !(r.is_finite() && r > 0.0) {
            return Err(SpecError::Rate(r.to_string()));
        }
        if r > MAX_RATE {
            return Err(SpecError::RateTooHigh(r.to_string()));
        }
        Ok(Rate::PerSecond(r))
    }

    /// Checks a rate built elsewhere (`max` always holds).
    pub fn check(self) -> Result<Self, SpecError> {
        match self {
            Rate::PerSecond(r) => Rate::per_second(r),
            Rate::Max => Ok(Rate::Max),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::PerSecond(r) => write!(f, "{r}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub rate: Rate,
    #[serde(with = "duration_secs")]
    pub duration: Duration,
}

impl Stage {
    /// Parses `RATE:DURATION` as given to `--stage` (e.g. `3900:60s`, `max:10s`).
    pub fn parse(s: &str, index: usize) -> Result<Self, SpecError> {
        let (rate, duration) = s
            .split_once(':')
            .ok_or_else(|| SpecError::Stage(s.to_string()))?;
        Stage {
            name: format!("stage-{}", index + 1),
            rate: Rate::parse(rate.trim())?,
            duration: parse_duration(duration.trim())?,
        }
        .check()
    }

    /// The one check of a stage: its rate (see [`Rate::per_second`]) and a duration greater
    /// than zero.
    pub fn check(self) -> Result<Self, SpecError> {
        self.rate.check()?;
        nonzero(self.duration, &self.name)?;
        Ok(self)
    }
}

/// A duration that must be greater than zero (a stage's, a timeout); `what` names it.
pub fn nonzero(d: Duration, what: &str) -> Result<Duration, SpecError> {
    if d.is_zero() {
        return Err(SpecError::ZeroDuration(what.to_string()));
    }
    Ok(d)
}

/// The one check of a run's length: at most `MAX_STAGES` stages, and the warmup and stages
/// together at most `MAX_DURATION` (the engine adds them to `Instant`s).
pub fn check_run_length(warmup: Duration, stages: &[Stage]) -> Result<(), SpecError> {
    if stages.len() > MAX_STAGES {
        return Err(SpecError::TooManyStages(stages.len()));
    }
    stages
        .iter()
        .try_fold(warmup, |t, s| t.checked_add(s.duration))
        .filter(|t| *t <= MAX_DURATION)
        .map(|_| ())
        .ok_or(SpecError::RunTooLong)
}

/// At most this many stages in one run: each holds several fixed-size histograms.
pub const MAX_STAGES: usize = 1000;

/// What each request carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestSource {
    /// A TF Serving JSON predict body (the text of a file such as `examples/requests/regression.json`).
    Body(String),
    /// Rows sampled from a CSV with a header, `batch_size` rows per request.
    Data {
        path: std::path::PathBuf,
        batch_size: u32,
    },
}

/// An objective every stage is judged against. A failed request (any error kind, timeouts
/// included) counts against every objective: for a latency percentile it is a request that
/// never completed within the limit, so 5% failures miss `p99` (as MLPerf LoadGen and k6's
/// `http_req_failed` treat them).
///
/// Serialized untagged so that the latency form keeps the shape stored by earlier versions
/// (`{"percentile": 99.0, "limit": 0.05}`); the error-rate form is `{"errors": 0.001}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Slo {
    /// The `percentile` (e.g. 99.0) of all requests, failures counted as never completing,
    /// must stay at or below `limit`.
    Latency {
        percentile: f64,
        #[serde(with = "duration_secs")]
        limit: Duration,
    },
    /// At most this fraction (0.001 = 0.1%) of the requests may fail.
    ErrorRate { errors: f64 },
}

impl Slo {
    /// Parses `p99=50ms`, `p99.9=120ms`, `p50=5ms`, `errors=0.1%`.
    pub fn parse(s: &str) -> Result<Self, SpecError> {
        let (p, limit) = s
            .split_once('=')
            .ok_or_else(|| SpecError::Slo(s.to_string()))?;
        if p.trim() == "errors" {
            let errors =
                parse_error_rate(limit.trim()).ok_or_else(|| SpecError::Slo(s.to_string()))?;
            return Ok(Slo::ErrorRate { errors });
        }
        let percentile =
            Self::parse_percentile(p.trim()).ok_or_else(|| SpecError::Slo(s.to_string()))?;
        let limit = parse_duration(limit.trim()).map_err(|_| SpecError::Slo(s.to_string()))?;
        if limit.is_zero() {
            return Err(SpecError::Slo(s.to_string()));
        }
        Ok(Slo::Latency { percentile, limit })
    }

    /// `p99` → 99.0, `p99.9` → 99.9, `p999` → 99.9 (as in `latency_ms.p999`).
    pub fn parse_percentile(p: &str) -> Option<f64> {
        let digits = p.strip_prefix('p')?;
        let value: f64 = if digits.len() > 2 && !digits.contains('.') && digits.starts_with("99") {
            // p999 → 99.9, p9999 → 99.99
            format!("{}.{}", &digits[..2], &digits[2..]).parse().ok()?
        } else {
            digits.parse().ok()?
        };
        (value > 0.0 && value <= 100.0).then_some(value)
    }

    /// `p99`, or `errors`.
    pub fn label(&self) -> String {
        match self {
            Slo::Latency { percentile, .. } => format!("p{percentile}"),
            Slo::ErrorRate { .. } => "errors".into(),
        }
    }

    /// The latency limit in milliseconds, for a latency objective.
    pub fn limit_ms(&self) -> Option<f64> {
        match self {
            Slo::Latency { limit, .. } => Some(limit.as_secs_f64() * 1000.0),
            Slo::ErrorRate { .. } => None,
        }
    }
}

/// Parses an error-rate limit: `0.1%`, `1%`, `0%`, or a fraction `0.001`. Between 0 and 100%.
pub fn parse_error_rate(s: &str) -> Option<f64> {
    let fraction = match s.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().ok()? / 100.0,
        None => s.parse::<f64>().ok()?,
    };
    (fraction.is_finite() && (0.0..=1.0).contains(&fraction)).then_some(fraction)
}

/// `300`, `12.5`: a rate in requests per second as tables and messages show it.
pub fn format_rate(rate: f64) -> String {
    if rate.fract() == 0.0 {
        format!("{rate:.0}")
    } else {
        format!("{rate:.1}")
    }
}

/// `250`, `47.1`, `3.31`: milliseconds with three significant figures, as the stage table,
/// verdicts and pages show latencies.
pub fn format_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// `0.1%`, `5%`, `0%`: an error rate as people write it.
pub fn format_error_rate(fraction: f64) -> String {
    let pct = fraction * 100.0;
    let text = format!("{pct:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}%")
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Slo::Latency { percentile, limit } => {
                write!(f, "p{}<={}", percentile, humantime::format_duration(*limit))
            }
            Slo::ErrorRate { errors } => write!(f, "errors<={}", format_error_rate(*errors)),
        }
    }
}

/// The longest duration accepted anywhere (stages, warmup, timeouts, SLO limits): far
/// beyond any load test, and far enough from the limits of `Instant` and `f64` seconds that
/// adding several can never overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// The highest open-loop rate accepted (requests per second, over all workers): beyond it a
/// schedule could never be kept, only queued without bound.
pub const MAX_RATE: f64 = 10_000_000.0;

/// Parses `500ms`, `60s`, `2m`, `1m30s`, `250us`. A bare number is rejected: units are required.
/// At most `MAX_DURATION`.
pub fn parse_duration(s: &str) -> Result<Duration, SpecError> {
    let d = humantime::parse_duration(s).map_err(|e| match e {
        humantime::DurationError::NumberOverflow => SpecError::DurationTooLong(s.to_string()),
        _ => SpecError::Duration(s.to_string()),
    })?;
    if d > MAX_DURATION {
        return Err(SpecError::DurationTooLong(s.to_string()));
    }
    Ok(d)
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("`{0}` is not a protocol: expected `rest` or `grpc`")]
    Protocol(String),
    #[error("`{0}` is not an arrival process: expected `constant` or `poisson`")]
    Arrival(String),
    #[error(
        "`{0}` is not a rate: expected a number of requests per second greater than 0, or `max`"
    )]
    Rate(String),
    #[error("`{0}` is not a stage: expected RATE:DURATION, e.g. `3900:60s`")]
    Stage(String),
    #[error(
        "`{0}` is not an SLO: expected PERCENTILE=DURATION (e.g. `p99=50ms`) or errors=PERCENT (e.g. `errors=0.1%`)"
    )]
    Slo(String),
    #[error("`{0}` is not a duration: expected a number with a unit, e.g. `500ms`, `60s`, `2m`")]
    Duration(String),
    #[error("`{0}` is too long: expected a duration of at most 366 days")]
    DurationTooLong(String),
    #[error("`{0}` is too high a rate: expected at most 10000000 requests per second")]
    RateTooHigh(String),
    #[error("{0}: found a duration of 0s, expected a duration greater than zero")]
    ZeroDuration(String),
    #[error("found {0} stages, expected at most {max} (--stage flags or stage blocks)", max = MAX_STAGES)]
    TooManyStages(usize),
    #[error("the warmup and stages together last longer than 366 days, the most a run may")]
    RunTooLong,
}

/// Serializes durations as fractional seconds (what the JSON formats carry).
pub mod duration_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_parses_rate_and_duration() {
        let s = Stage::parse("3900:60s", 1).unwrap();
        assert_eq!(s.rate, Rate::PerSecond(3900.0));
        assert_eq!(s.duration, Duration::from_secs(60));
        assert_eq!(s.name, "stage-2");
        assert_eq!(Stage::parse("max:1m", 0).unwrap().rate, Rate::Max);
    }

    #[test]
    fn rates_that_are_not_positive_are_refused() {
        assert!(Rate::parse("0").is_err());
        assert!(Rate::parse("-5").is_err());
        assert!(Rate::parse("fast").is_err());
        assert!(Rate::parse("NaN").is_err());
    }

    fn percentile(s: &str) -> f64 {
        match Slo::parse(s).unwrap() {
            Slo::Latency { percentile, .. } => percentile,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn slo_parses_any_percentile() {
        assert_eq!(percentile("p99=50ms"), 99.0);
        assert_eq!(percentile("p99.9=1s"), 99.9);
        assert_eq!(percentile("p999=1s"), 99.9);
        assert_eq!(
            Slo::parse("p50=5ms").unwrap(),
            Slo::Latency {
                percentile: 50.0,
                limit: Duration::from_millis(5)
            }
        );
        assert!(Slo::parse("p99=0ms").is_err());
        assert!(Slo::parse("p99").is_err());
        assert!(Slo::parse("q99=5ms").is_err());
        assert!(Slo::parse("p101=5ms").is_err());
        assert!(Slo::parse("p99=fast").is_err());
    }

    #[test]
    fn error_rate_slo_parses_percent_and_fraction() {
        assert_eq!(
            Slo::parse("errors=0.1%").unwrap(),
            Slo::ErrorRate { errors: 0.001 }
        );
        assert_eq!(
            Slo::parse("errors=0").unwrap(),
            Slo::ErrorRate { errors: 0.0 }
        );
        assert_eq!(
            Slo::parse("errors = 5%").unwrap(),
            Slo::ErrorRate { errors: 0.05 }
        );
        assert!(Slo::parse("errors=101%").is_err());
        assert!(Slo::parse("errors=-1%").is_err());
        assert!(Slo::parse("errors=lots").is_err());
        assert_eq!(format_error_rate(0.001), "0.1%");
        assert_eq!(format_error_rate(0.05), "5%");
        assert_eq!(format_error_rate(0.0), "0%");
    }

    #[test]
    fn slos_keep_the_stored_json_shape() {
        let latency = Slo::parse("p99=50ms").unwrap();
        let json = serde_json::to_value(latency).unwrap();
        assert_eq!(json, serde_json::json!({"percentile": 99.0, "limit": 0.05}));
        let back: Slo = serde_json::from_value(json).unwrap();
        assert_eq!(back, latency);
        let errors = Slo::parse("errors=1%").unwrap();
        let json = serde_json::to_value(errors).unwrap();
        assert_eq!(json, serde_json::json!({"errors": 0.01}));
        assert_eq!(serde_json::from_value::<Slo>(json).unwrap(), errors);
    }

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("60").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn absurd_durations_and_rates_are_refused_not_overflowed() {
        for d in [
            "300000000000y",
            "367d",
            "99999999999999999999999s",
            "500000000y",
        ] {
            assert_eq!(
                parse_duration(d),
                Err(SpecError::DurationTooLong(d.into())),
                "{d}"
            );
        }
        assert_eq!(parse_duration("366d").unwrap(), MAX_DURATION);
        assert_eq!(
            Rate::parse("1e300"),
            Err(SpecError::RateTooHigh("1e300".into()))
        );
        assert!(Rate::parse("inf").is_err());
        assert_eq!(Rate::parse("1e7").unwrap(), Rate::PerSecond(MAX_RATE));
        assert!(Stage::parse("1e300:1s", 0).is_err());
        assert!(Stage::parse("10:300000000000y", 0).is_err());
    }
}
