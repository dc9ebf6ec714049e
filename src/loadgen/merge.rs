//! The merge of distributed workers' runs into one: histograms are added, never averaged, and
//! the merged stages are judged again (`verdict`) as if one generator had sent everything.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use super::LoadError;
use super::histogram::{
    decode_histogram, encode_histogram, lag_summary, new_histogram, percentiles,
};
use super::result::{RunReport, StageReport, TimelinePoint};
use super::verdict::{bottleneck, error_rate, judge, late_threshold};

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
        // The merged stages are judged again by the caller (`verdict::judge_validity`); a
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
    use crate::loadgen::result::fixtures::{lags, report_of};
    use crate::vocab::load::Slo;
    use rand::{Rng, SeedableRng};

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
