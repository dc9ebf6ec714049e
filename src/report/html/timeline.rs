//! A run's per-second timeline laid on one time axis (stages end to end), as the time charts
//! draw it: only whole seconds inside a stage's schedule, so that a part-second or requests
//! draining after a stage never read as a drop, and the notes for what is left undrawn.

use crate::loadgen::RunReport;
use crate::report::svg::{esc, fmt_num};

/// One second of a run on the report's time axis (stages laid end to end).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Second {
    /// Seconds since the run's first stage began.
    pub start: f64,
    /// Requests (failed ones included) that completed in this second.
    pub requests: u64,
    pub errors: u64,
    /// The second's percentiles of its stage's successful requests; None when none succeeded.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// What a run's per-second timeline draws, and what it leaves out.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct RunTimeline {
    /// Whole seconds inside their stage's schedule, in time order.
    pub seconds: Vec<Second>,
    /// Where each stage began, with its name.
    pub stage_starts: Vec<(f64, String)>,
    /// Where the last stage's schedule ended.
    pub end: f64,
    /// Stages whose duration is not a whole number of seconds: the name, the length of the
    /// part-second at the end that is not drawn, and the requests completed in it.
    pub partial: Vec<(String, f64, u64)>,
    /// Requests (and of them errors) that completed after their stage's schedule ended and fall
    /// in no drawn second (after the last stage, or not aligned with the next stage's seconds).
    pub undrawn_requests: u64,
    pub undrawn_errors: u64,
}

/// Lays a run's per-second buckets on one time axis. A bucket is drawn only when it is a whole
/// second inside its stage's schedule, so rates are counts over one second: a stage's last
/// part-second (a duration like 2.5 s) would otherwise show as a drop. Completions after a
/// stage's schedule ended (its in-flight requests draining) are added to the next stage's second
/// that covers the same time, so a stage boundary shows the real completion rate; those after
/// the last stage, or not aligned with a drawn second, are counted in `undrawn_*`.
pub(crate) fn run_timeline(r: &RunReport) -> RunTimeline {
    const EPS: f64 = 1e-6;
    let mut tl = RunTimeline::default();
    let mut drained: Vec<(f64, u64, u64)> = Vec::new();
    let mut offset = 0.0;
    for st in &r.stages {
        tl.stage_starts.push((offset, st.name.clone()));
        let d = st.duration_s.max(0.0);
        let mut partial_requests = None;
        for p in &st.timeline {
            let t = p.t as f64;
            let start = offset + t;
            if t + 1.0 <= d + EPS {
                let ok = p.requests > p.errors;
                tl.seconds.push(Second {
                    start,
                    requests: p.requests,
                    errors: p.errors,
                    p50_ms: ok.then_some(p.p50_ms),
                    p99_ms: ok.then_some(p.p99_ms),
                });
            } else if t < d - EPS {
                // The part-second at the end of the stage's schedule.
                partial_requests = Some(p.requests);
            } else {
                drained.push((start, p.requests, p.errors));
            }
        }
        // A whole second with no completions has no bucket when nothing completed after it:
        // it is a true zero (the server answered nothing), drawn as one.
        if !st.timeline.is_empty() {
            for t in 0..(d + EPS).floor() as u32 {
                if !st.timeline.iter().any(|p| p.t == t) {
                    tl.seconds.push(Second {
                        start: offset + t as f64,
                        requests: 0,
                        errors: 0,
                        p50_ms: None,
                        p99_ms: None,
                    });
                }
            }
        }
        let frac = d - d.floor();
        if frac > EPS {
            tl.partial
                .push((st.name.clone(), frac, partial_requests.unwrap_or(0)));
        }
        offset += d;
    }
    tl.end = offset;
    tl.seconds.sort_by(|a, b| {
        a.start
            .partial_cmp(&b.start)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    for (start, requests, errors) in drained {
        match tl
            .seconds
            .iter_mut()
            .find(|s| (s.start - start).abs() < EPS)
        {
            Some(s) => {
                s.requests += requests;
                s.errors += errors;
            }
            None => {
                tl.undrawn_requests += requests;
                tl.undrawn_errors += errors;
            }
        }
    }
    tl
}

/// The note for a run's per-second timeline that was merged from several workers: what its
/// per-second percentiles are (see `loadgen::merge`), or None for a single generator.
pub(crate) fn merged_timeline_note(label: &str, r: &RunReport) -> Option<String> {
    (r.workers > 1).then(|| {
        format!(
            "{}merged from {} workers: each second's p50 and p99 here is the highest of the \
             workers' values for that second, an upper bound on the percentile of all the \
             requests completed in that second (per-second histograms are not kept), never \
             below it. Requests and errors per second are exact sums; seconds count from each \
             worker's own stage start (the workers start together). The table and the \
             percentile chart come from the merged histograms and are exact.",
            if label.is_empty() {
                "This run is ".to_string()
            } else {
                format!("{label} is ")
            },
            r.workers
        )
    })
}

/// The note for what a run's time charts leave out, or None when everything is drawn.
pub(super) fn undrawn_note(label: &str, tl: &RunTimeline) -> Option<String> {
    let mut parts = Vec::new();
    for (stage, len, requests) in &tl.partial {
        parts.push(format!(
            "the last {} s of stage {} ({} request{}; a part-second, whose count over a whole \
             second would read as a drop)",
            fmt_num((len * 1000.0).round() / 1000.0),
            esc(stage),
            requests,
            if *requests == 1 { "" } else { "s" }
        ));
    }
    if tl.undrawn_requests > 0 {
        parts.push(format!(
            "{} request{}{} that completed after their stage's schedule ended (in flight when \
             it ended)",
            tl.undrawn_requests,
            if tl.undrawn_requests == 1 { "" } else { "s" },
            if tl.undrawn_errors > 0 {
                format!(" ({} failed)", tl.undrawn_errors)
            } else {
                String::new()
            }
        ));
    }
    if parts.is_empty() {
        return None;
    }
    Some(format!(
        "{}Not drawn over time: {}. The table and the percentile chart include them.",
        if label.is_empty() {
            String::new()
        } else {
            format!("{} · ", esc(label))
        },
        parts.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::fixtures::{run, stage, steady};

    #[test]
    fn a_stages_last_completions_count_in_the_next_stages_second_that_covers_them() {
        let mut a = steady(0, 2000, 1000);
        a.push((1999, 500_000)); // completes at 2.499 s: in the next stage's first second
        let r = run(
            vec![
                stage("a", 2000, &a, &[]),
                stage("b", 2000, &steady(0, 2000, 1000), &[]),
            ],
            &[],
        );
        let tl = run_timeline(&r);
        let counts: Vec<(f64, u64)> = tl.seconds.iter().map(|s| (s.start, s.requests)).collect();
        assert_eq!(counts, vec![(0.0, 100), (1.0, 100), (2.0, 101), (3.0, 100)]);
        assert_eq!(tl.undrawn_requests, 0);
        assert_eq!(
            tl.stage_starts,
            vec![(0.0, "a".to_string()), (2.0, "b".to_string())]
        );
    }

    #[test]
    fn seconds_in_which_nothing_completed_are_drawn_as_zero() {
        // The server stops answering after the first second of a 3 s stage.
        let r = run(vec![stage("s", 3000, &steady(0, 1000, 1000), &[])], &[]);
        assert_eq!(r.stages[0].timeline.len(), 1);
        let tl = run_timeline(&r);
        let counts: Vec<(f64, u64)> = tl.seconds.iter().map(|s| (s.start, s.requests)).collect();
        assert_eq!(counts, vec![(0.0, 100), (1.0, 0), (2.0, 0)]);
        assert!(tl.seconds[1].p99_ms.is_none());
    }
}
