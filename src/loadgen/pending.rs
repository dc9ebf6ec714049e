//! A request a connection task has taken and not yet recorded. If the task is dropped
//! first (the run stopped waiting for it) or unwinds (a bug), the guard records it as
//! failed, so every released request is counted exactly once: the report never quietly
//! undercounts.

use std::time::Instant;

use super::engine::{Ctx, Job};
use super::record::ErrorKind;

pub struct Pending<'a> {
    ctx: &'a Ctx,
    job: Option<(Job, Instant)>,
}

impl<'a> Pending<'a> {
    pub fn new(ctx: &'a Ctx, job: Job, sent: Instant) -> Self {
        Pending {
            ctx,
            job: Some((job, sent)),
        }
    }

    /// Records the outcome (once).
    #[inline]
    pub fn finish(&mut self, done: Instant, outcome: Result<(), ErrorKind>) {
        if let Some((job, sent)) = self.job.take() {
            self.ctx.done(&job, sent, done, outcome);
        }
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        // Unwinding: the reply broke the client (counted as a reply it could not read).
        // Otherwise the run ended before the reply: it outlived the timeout.
        let kind = if std::thread::panicking() {
            ErrorKind::Malformed
        } else {
            ErrorKind::Timeout
        };
        self.finish(Instant::now(), Err(kind));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::vocab::load::{Rate, Stage};

    fn ctx_with_one_released() -> (Ctx, Job) {
        let stage = Stage {
            name: "s".into(),
            rate: Rate::PerSecond(10.0),
            duration: Duration::from_secs(1),
        };
        let ctx = Ctx::new(&[stage], Duration::from_secs(1));
        let now = Instant::now();
        ctx.state.borrow_mut().recs[0].begin(now);
        let job = Job {
            intended: now,
            released: now,
            stage: 0,
        };
        ctx.release(job);
        (ctx, job)
    }

    #[test]
    fn a_request_dropped_unfinished_counts_as_a_timeout_once() {
        let (ctx, job) = ctx_with_one_released();
        drop(Pending::new(&ctx, job, Instant::now()));
        let s = ctx.state.borrow();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.recs[0].completed, 1);
        assert_eq!(s.recs[0].errors.get(&ErrorKind::Timeout), Some(&1));
    }

    #[test]
    fn a_finished_request_is_not_counted_again_on_drop() {
        let (ctx, job) = ctx_with_one_released();
        let mut p = Pending::new(&ctx, job, Instant::now());
        p.finish(Instant::now(), Ok(()));
        drop(p);
        let s = ctx.state.borrow();
        assert_eq!(
            (s.in_flight, s.recs[0].completed, s.recs[0].errors_total),
            (0, 1, 0)
        );
    }

    #[test]
    fn a_request_whose_task_panics_counts_as_malformed() {
        let (ctx, job) = ctx_with_one_released();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _p = Pending::new(&ctx, job, Instant::now());
            panic!("a bug on a bad reply");
        }));
        assert!(r.is_err());
        let s = ctx.state.borrow();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.recs[0].errors.get(&ErrorKind::Malformed), Some(&1));
    }
}
