//! One capacity probe: how long it runs (the sample its percentile needs, capped) and what it
//! found, judged by the load generator's one verdict.

use std::time::Duration;

use super::ProbeResult;
use crate::loadgen::verdict::percentile_counting_failures;
use crate::loadgen::{ProbeVerdict, StageReport};
use crate::stack::tune::TuneConfig;
use crate::vocab::load::Slo;

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

pub(super) fn probe_result(run: u64, rate: f64, stage: &StageReport, slos: &[Slo]) -> ProbeResult {
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
        cpu_throttled_ratio: stage.server.as_ref().and_then(|s| s.cpu_throttled_ratio),
    }
}
