//! The run itself, on one thread: a dispatcher releases requests at their intended send
//! times (open loop) into a queue that the connection tasks drain; in a `max` stage the
//! connections send back to back instead (closed loop). Each wake-up of the dispatcher also
//! releases the requests due within `RELEASE_WINDOW` after it (see there). Everything shares
//! one `Ctx` through `Rc<RefCell<..>>` on a current-thread runtime, so the hot path takes no
//! locks.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::Progress;
use super::record::{ErrorKind, StageRecorder};
use super::schedule::{PreciseTimer, Schedule};
use super::server::StageMarks;
use crate::vocab::load::{Arrival, Rate, Stage};

/// The stage index of warmup requests (sent, not recorded).
pub const WARMUP: u32 = u32::MAX;

/// A dispatcher wake-up also releases the requests due this soon after it. Waking the
/// thread costs more CPU than the send itself (a timer, an idle exit, a context switch:
/// ~23 µs on a 2-core VM), so at 3900 req/s one wake-up per request made the generator cost
/// more than oha per request. Released early, a request is sent at most this much before its
/// intended time, and its latency then counts from the actual send (see `Ctx::done`), so
/// it is never shorter than what the server took; one sent late still counts from the
/// intended time. Constant arrivals below 1000 req/s still get a wake-up per request.
pub const RELEASE_WINDOW: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
pub struct Job {
    pub intended: Instant,
    /// When the dispatcher released it (intended + generator lag).
    pub released: Instant,
    pub stage: u32,
}

pub struct State {
    pub queue: VecDeque<Job>,
    /// Released and not yet completed (queued or on the wire).
    pub in_flight: usize,
    /// The stage being run closed loop, if any.
    pub closed: Option<u32>,
    pub stop: bool,
    pub recs: Vec<StageRecorder>,
}

pub struct Ctx {
    pub state: RefCell<State>,
    /// Wakes connection tasks when work is queued (or a closed stage starts, or the run stops).
    pub work: Notify,
    /// Wakes the dispatcher when a request completes while it waits for room under the cap.
    pub room: Notify,
    pub waiting_for_room: Cell<bool>,
    pub timeout: Duration,
    /// Connections that finished their first connection attempt (see `wait_ready`).
    pub ready: Cell<usize>,
    pub ready_notify: Notify,
}

impl Ctx {
    pub fn new(stages: &[Stage], timeout: Duration) -> Self {
        Ctx {
            state: RefCell::new(State {
                queue: VecDeque::with_capacity(1024),
                in_flight: 0,
                closed: None,
                stop: false,
                recs: stages.iter().cloned().map(StageRecorder::new).collect(),
            }),
            work: Notify::new(),
            room: Notify::new(),
            waiting_for_room: Cell::new(false),
            timeout,
            ready: Cell::new(0),
            ready_notify: Notify::new(),
        }
    }

    /// A connection task made its first connection attempt.
    pub fn connected(&self) {
        self.ready.set(self.ready.get() + 1);
        self.ready_notify.notify_one();
    }

    /// Waits until `n` connection tasks have tried to connect, so the schedule does not
    /// start while connections are still being opened (which would show up as lag).
    pub async fn wait_ready(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + self.timeout;
        while self.ready.get() < n {
            if tokio::time::timeout_at(deadline, self.ready_notify.notified())
                .await
                .is_err()
            {
                break;
            }
        }
    }

    /// Releases a request from the schedule (counts it in flight, records the lag).
    pub fn release(&self, job: Job) {
        let mut s = self.state.borrow_mut();
        s.in_flight += 1;
        if job.stage != WARMUP {
            s.recs[job.stage as usize]
                .record_lag(job.released.saturating_duration_since(job.intended));
        }
    }

    pub fn enqueue(&self, job: Job) {
        self.state.borrow_mut().queue.push_back(job);
        self.work.notify_one();
    }

    /// The next request for a connection: a queued one, or in a closed-loop stage a fresh
    /// one due now; `None` once the run has stopped.
    pub async fn next_job(&self) -> Option<Job> {
        loop {
            {
                let mut s = self.state.borrow_mut();
                if let Some(j) = s.queue.pop_front() {
                    return Some(j);
                }
                if let Some(stage) = s.closed {
                    s.in_flight += 1;
                    let now = Instant::now();
                    return Some(Job {
                        intended: now,
                        released: now,
                        stage,
                    });
                }
                if s.stop {
                    return None;
                }
            }
            self.work.notified().await;
        }
    }

    pub fn sent(&self, job: &Job, sent: Instant) {
        if job.stage != WARMUP {
            self.state.borrow_mut().recs[job.stage as usize].record_sent(job.released, sent);
        }
    }

    pub fn done(&self, job: &Job, sent: Instant, done: Instant, outcome: Result<(), ErrorKind>) {
        let mut s = self.state.borrow_mut();
        s.in_flight -= 1;
        if job.stage != WARMUP {
            // Latency counts from the intended send time, or from the actual one when the
            // request left early (`RELEASE_WINDOW`): then the intended time would hide part of
            // what the server took.
            s.recs[job.stage as usize].record_done(job.intended.min(sent), sent, done, outcome);
        }
        drop(s);
        if self.waiting_for_room.get() {
            self.room.notify_one();
        }
    }

    pub fn in_flight(&self) -> usize {
        self.state.borrow().in_flight
    }

    /// Why stage `idx` (a capacity probe with a `Watch`) can no longer pass at `now`, if so:
    /// the requests that missed an objective, plus those of its requests still queued for a
    /// connection that are already older than the objective's limit.
    pub fn hopeless(&self, idx: usize, now: Instant) -> Option<String> {
        let s = self.state.borrow();
        let rec = s.recs.get(idx)?;
        let watch = rec.watch.as_ref()?;
        // Every probe shows at least a whole second of the server's pace: the capacity search
        // tells a latency floor from a growing queue by it (`search::kept_up`).
        if now.saturating_duration_since(rec.start?) < super::record::MIN_RUN {
            return None;
        }
        watch.hopeless(|limit_us, enough| {
            let limit = Duration::from_micros(limit_us);
            // The queue is in release order, which is intended-time order for one stage.
            s.queue
                .iter()
                .filter(|j| j.stage as usize == idx)
                .take_while(|j| now.saturating_duration_since(j.intended) > limit)
                .take(usize::try_from(enough).unwrap_or(usize::MAX))
                .count() as u64
        })
    }

    /// Stops stage `idx` early: the requests it released that still wait for a connection
    /// are dropped unsent (counted in the report), what is on the wire completes as usual.
    pub fn stop_early(&self, idx: usize, now: Instant, why: String) {
        let mut s = self.state.borrow_mut();
        let before = s.queue.len();
        s.queue.retain(|j| j.stage as usize != idx);
        let dropped = before - s.queue.len();
        s.in_flight -= dropped;
        if let Some(r) = s.recs.get_mut(idx) {
            r.unsent += dropped as u64;
            r.stopped = Some((now, why));
            r.end = Some(now);
        }
    }

    fn stopped(&self, idx: usize) -> bool {
        self.state
            .borrow()
            .recs
            .get(idx)
            .is_some_and(|r| r.stopped.is_some())
    }
}

/// Where released requests go: the connection queue (HTTP/1.1), or a task per request (gRPC).
pub trait Sink {
    fn dispatch(&self, job: Job);
}

pub struct RunPlan {
    pub stages: Vec<Stage>,
    pub warmup: Duration,
    pub arrival: Arrival,
    pub seed: u64,
    pub max_in_flight: Option<usize>,
    /// See `Schedule::with_phase`.
    pub phase: f64,
}

struct Ticker<'a> {
    progress: Option<&'a (dyn Fn(&Progress) + Sync)>,
    next: Instant,
    every: Duration,
}

impl Ticker<'_> {
    #[allow(clippy::too_many_arguments)]
    fn tick(
        &mut self,
        ctx: &Ctx,
        now: Instant,
        name: &str,
        index: usize,
        stages: usize,
        start: Instant,
        duration: Duration,
    ) {
        let Some(f) = self.progress else { return };
        if now < self.next {
            return;
        }
        self.next = now + self.every;
        let elapsed = now.saturating_duration_since(start).min(duration);
        let p = {
            let s = ctx.state.borrow();
            match s.recs.get(index) {
                Some(r) if name != "warmup" => Progress {
                    stage: name.to_string(),
                    stage_index: index,
                    stages,
                    warmup: false,
                    elapsed,
                    duration,
                    requests: r.completed,
                    achieved_rate: if elapsed.as_secs_f64() > 0.0 {
                        r.sent_in_window as f64 / elapsed.as_secs_f64()
                    } else {
                        0.0
                    },
                    p99_ms: r.p99_ms(),
                    errors: r.errors_total,
                    in_flight: s.in_flight,
                },
                _ => Progress {
                    stage: "warmup".into(),
                    stage_index: 0,
                    stages,
                    warmup: true,
                    elapsed,
                    duration,
                    requests: 0,
                    achieved_rate: 0.0,
                    p99_ms: 0.0,
                    errors: 0,
                    in_flight: s.in_flight,
                },
            }
        };
        f(&p);
    }
}

/// Runs the warmup and every stage on schedule, then waits (at most the request timeout)
/// for the requests still in flight. The recorders in `ctx` hold the results.
/// Runs the plan's stages; returns false when `cancel` was set (the run stopped early).
pub async fn run(
    ctx: &Ctx,
    sink: &dyn Sink,
    plan: &RunPlan,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
    cancel: &AtomicBool,
    marks: Option<&dyn StageMarks>,
) -> bool {
    let mut timer = PreciseTimer::new();
    let mut ticker = Ticker {
        progress,
        next: Instant::now(),
        every: Duration::from_millis(250),
    };
    let n = plan.stages.len();
    let mut start = Instant::now();
    if !plan.warmup.is_zero()
        && let Some(first) = plan.stages.first()
    {
        let warm = Stage {
            name: "warmup".into(),
            rate: first.rate,
            duration: plan.warmup,
        };
        run_stage(
            ctx,
            sink,
            plan,
            &mut timer,
            &mut ticker,
            &warm,
            WARMUP,
            start,
            n,
            cancel,
        )
        .await;
        start += plan.warmup;
    }
    for (i, stage) in plan.stages.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let now = Instant::now();
        // A stage begins where the previous one's schedule ended, unless the generator is
        // already past that (then now, so a stage is never compressed).
        if start < now {
            start = now;
        }
        ctx.state.borrow_mut().recs[i].begin(start);
        if let Some(m) = marks {
            m.stage_begins(i);
        }
        run_stage(
            ctx,
            sink,
            plan,
            &mut timer,
            &mut ticker,
            stage,
            i as u32,
            start,
            n,
            cancel,
        )
        .await;
        // A probe that can no longer pass ends the run (only probes carry a `Watch`).
        if ctx.stopped(i) {
            break;
        }
        start += stage.duration;
    }
    {
        let mut s = ctx.state.borrow_mut();
        s.stop = true;
    }
    ctx.work.notify_waiters();
    let deadline = Instant::now() + ctx.timeout + Duration::from_millis(200);
    while ctx.in_flight() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(m) = marks {
        m.run_drained();
    }
    !cancel.load(Ordering::Relaxed)
}

#[allow(clippy::too_many_arguments)]
async fn run_stage(
    ctx: &Ctx,
    sink: &dyn Sink,
    plan: &RunPlan,
    timer: &mut PreciseTimer,
    ticker: &mut Ticker<'_>,
    stage: &Stage,
    index: u32,
    start: Instant,
    stages: usize,
    cancel: &AtomicBool,
) {
    let end = start + stage.duration;
    let idx = if index == WARMUP {
        usize::MAX
    } else {
        index as usize
    };
    match stage.rate {
        Rate::Max => {
            ctx.state.borrow_mut().closed = Some(index);
            ctx.work.notify_waiters();
            loop {
                let now = Instant::now();
                if now >= end || cancel.load(Ordering::Relaxed) {
                    break;
                }
                ticker.tick(ctx, now, &stage.name, idx, stages, start, stage.duration);
                let next = (now + Duration::from_millis(250)).min(end);
                tokio::time::sleep_until(next.into()).await;
            }
            ctx.state.borrow_mut().closed = None;
        }
        Rate::PerSecond(rate) => {
            let seed = plan.seed.wrapping_add(index as u64);
            let mut sched = Schedule::new(plan.arrival, rate, seed).with_phase(plan.phase);
            let dur = stage.duration.as_secs_f64();
            loop {
                let off = sched.next_offset();
                if off >= dur || cancel.load(Ordering::Relaxed) {
                    break;
                }
                let intended = start + Duration::from_secs_f64(off);
                let mut now = Instant::now();
                if index != WARMUP
                    && let Some(why) = ctx.hopeless(idx, now)
                {
                    ctx.stop_early(idx, now, why);
                    break;
                }
                // Requests due within the window go out with this wake-up (RELEASE_WINDOW).
                if intended > now + RELEASE_WINDOW {
                    ticker.tick(ctx, now, &stage.name, idx, stages, start, stage.duration);
                    timer.sleep_until(intended).await;
                    now = Instant::now();
                }
                if let Some(cap) = plan.max_in_flight
                    && ctx.in_flight() >= cap
                {
                    if index != WARMUP {
                        ctx.state.borrow_mut().recs[idx].cap_hits += 1;
                    }
                    ctx.waiting_for_room.set(true);
                    while ctx.in_flight() >= cap {
                        ctx.room.notified().await;
                    }
                    ctx.waiting_for_room.set(false);
                    now = Instant::now();
                }
                let job = Job {
                    intended,
                    released: now,
                    stage: index,
                };
                ctx.release(job);
                sink.dispatch(job);
            }
            // Let the schedule's last interval run out before the next stage begins.
            if Instant::now() < end && !cancel.load(Ordering::Relaxed) && !ctx.stopped(idx) {
                timer.sleep_until(end).await;
            }
        }
    }
    ticker.next = Instant::now();
    ticker.tick(
        ctx,
        Instant::now(),
        &stage.name,
        idx,
        stages,
        start,
        stage.duration,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::record::Watch;
    use crate::loadgen::result::StageReport;
    use crate::vocab::load::Slo;
    use std::rc::Rc;

    /// A server that answers every request 100 ms after its intended send time.
    struct Slow(Rc<Ctx>);

    impl Sink for Slow {
        fn dispatch(&self, job: Job) {
            self.0.sent(&job, job.released);
            let done = job.intended + Duration::from_millis(100);
            self.0.done(&job, job.released, done, Ok(()));
        }
    }

    fn probe_against_slow_server(watched: bool) -> StageReport {
        let stage = Stage {
            name: "probe".into(),
            rate: Rate::PerSecond(200.0),
            duration: Duration::from_secs(3),
        };
        let slos = [Slo::Latency {
            percentile: 99.0,
            limit: Duration::from_millis(50),
        }];
        let ctx = Rc::new(Ctx::new(
            std::slice::from_ref(&stage),
            Duration::from_secs(1),
        ));
        if watched {
            ctx.state.borrow_mut().recs[0].watch = Watch::new(&slos, 200.0, stage.duration, false);
        }
        let plan = RunPlan {
            stages: vec![stage],
            warmup: Duration::ZERO,
            arrival: Arrival::Constant,
            seed: 1,
            max_in_flight: None,
            phase: 0.0,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        let sink = Slow(ctx.clone());
        let completed = local.block_on(
            &rt,
            run(&ctx, &sink, &plan, None, &AtomicBool::new(false), None),
        );
        assert!(completed);
        let rec = ctx.state.borrow_mut().recs.pop().unwrap();
        rec.into_report(&slos)
    }

    #[test]
    fn a_watched_probe_stops_sending_once_it_cannot_pass_and_a_normal_run_does_not() {
        let probe = probe_against_slow_server(true);
        let stop = probe.stopped_early.as_ref().expect("stopped early");
        assert_eq!(stop.planned_s, 3.0);
        assert!(stop.reason.contains("p99 allows 6"), "{}", stop.reason);
        assert!(probe.requests < 600, "{}", probe.requests);
        assert!(probe.duration_s < 3.0);
        assert!(!probe.slos[0].met);
        // The same run without the rule (apply, loadtest) sends its whole schedule.
        let full = probe_against_slow_server(false);
        assert_eq!(full.stopped_early, None);
        assert_eq!(full.requests, 600);
        assert_eq!(full.duration_s, 3.0);
    }

    #[test]
    fn an_early_request_counts_from_its_send_and_a_late_one_from_its_intended_time() {
        let stage = Stage {
            name: "s".into(),
            rate: Rate::PerSecond(1000.0),
            duration: Duration::from_secs(1),
        };
        let ctx = Ctx::new(&[stage], Duration::from_secs(1));
        let t0 = Instant::now();
        ctx.state.borrow_mut().recs[0].begin(t0);
        let ms = Duration::from_millis;
        // Released with an earlier wake-up, 0.8 ms before it was due; the reply took 2 ms.
        let early = Job {
            intended: t0 + Duration::from_micros(800),
            released: t0,
            stage: 0,
        };
        // Released 3 ms late; the reply took 2 ms, so the user waited 5 ms.
        let late = Job {
            intended: t0 + ms(10),
            released: t0 + ms(13),
            stage: 0,
        };
        for job in [early, late] {
            ctx.release(job);
            ctx.sent(&job, job.released);
            ctx.done(&job, job.released, job.released + ms(2), Ok(()));
        }
        let s = ctx.state.borrow();
        let r = &s.recs[0];
        assert_eq!(s.in_flight, 0);
        assert_eq!(r.latency.min(), r.latency.lowest_equivalent(2_000));
        assert_eq!(r.latency.max(), r.latency.highest_equivalent(5_000));
        assert_eq!(
            (r.lag.min(), r.lag.max()),
            (0, r.lag.highest_equivalent(3_000))
        );
        assert_eq!(r.service.max(), r.service.highest_equivalent(2_000));
    }
}
