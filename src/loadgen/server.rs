//! The server's side of a run: TF Serving's own metrics (its Prometheus page) and the serving
//! processes' CPU, read from every replica at the start and end of each stage, and the
//! difference summarised per stage (`ServerStage`, the `server` object of a stage).
//!
//! Scrapes run on a thread of their own, so the generator's thread never waits on them: the
//! engine only posts "stage i begins" and "the run has drained" ([`StageMarks`]). A target that
//! has no metrics page (nginx, another server, TF Serving without --monitoring_config_file)
//! gives a stage with `server: null` and the reason, never an error.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::prom::{self, Histogram, Sample};

pub const REQUEST_COUNT: &str = ":tensorflow:serving:request_count";
pub const REQUEST_LATENCY: &str = ":tensorflow:serving:request_latency";
pub const RUNTIME_LATENCY: &str = ":tensorflow:serving:runtime_latency";
pub const QUEUING_LATENCY: &str = ":tensorflow:serving:batching_session:queuing_latency";
pub const PROCESSED_BATCH_SIZE: &str = ":tensorflow:serving:batching_session:processed_batch_size";
pub const PADDING_SIZE: &str = ":tensorflow:serving:batching_session:padding_size";
pub const WRAPPED_RUN_COUNT: &str = ":tensorflow:serving:batching_session:wrapped_run_count";

/// The most of a metrics page read. TF Serving's page with TensorFlow's own metrics is tens of
/// kilobytes; anything much larger is not a metrics page worth reading mid-run.
pub const MAX_PAGE_BYTES: usize = 8 << 20;
/// How long one scrape of one replica may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// One replica of the target, as the scraper reaches it.
pub trait Replica: Send + Sync {
    /// How to name it in a reason (`127.0.0.1:8501`, a pod name).
    fn label(&self) -> String;
    /// The metrics page: `Ok(body)` for a 200, `Err(why)` otherwise (the status, a refused
    /// connection, a timeout).
    fn fetch(&self) -> Result<Vec<u8>, String>;
    /// The CPU the replica has used so far, where it can be read; `None` when this kind of
    /// replica cannot tell.
    fn cpu(&self) -> Option<Result<Cpu, String>> {
        None
    }
}

/// A replica's CPU counters at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cpu {
    /// CPU seconds used so far.
    pub seconds: f64,
    /// CFS periods so far and how many were throttled (cAdvisor's
    /// `container_cpu_cfs_periods_total`, `…_throttled_periods_total`); None where there is no
    /// CPU limit (no quota, no periods) or no way to read them.
    pub periods: Option<(f64, f64)>,
}

/// A replica reached over HTTP/1.1 at `addr` (the REST port).
pub struct HttpReplica {
    pub addr: SocketAddr,
    pub path: String,
    /// The serving process, for its CPU time from /proc (local replicas only).
    pub pid: Option<u32>,
}

impl Replica for HttpReplica {
    fn label(&self) -> String {
        self.addr.to_string()
    }

    fn fetch(&self) -> Result<Vec<u8>, String> {
        let host = self.addr.to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting an HTTP client runtime: {e}"))?;
        let (status, body) = rt.block_on(async {
            tokio::time::timeout(
                SCRAPE_TIMEOUT,
                super::http_get(self.addr, &host, &self.path, MAX_PAGE_BYTES),
            )
            .await
            .map_err(|_| format!("no answer within {}s", SCRAPE_TIMEOUT.as_secs()))?
        })?;
        if status != 200 {
            return Err(format!("GET {} answered HTTP {status}", self.path));
        }
        Ok(body.to_vec())
    }

    fn cpu(&self) -> Option<Result<Cpu, String>> {
        self.pid.map(|pid| {
            proc_cpu_seconds(pid).map(|seconds| Cpu {
                seconds,
                periods: None,
            })
        })
    }
}

/// utime + stime of a process (fields 14 and 15 of /proc/PID/stat), in seconds.
pub fn proc_cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("reading /proc/{pid}/stat: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces or ')'.
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| format!("/proc/{pid}/stat is not a stat line"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let tick = |i: usize| -> Result<u64, String> {
        fields
            .get(i - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat has no field {i}"))
    };
    let ticks = tick(14)?.saturating_add(tick(15)?);
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 / hz)
}

/// What one scrape of one replica says, reduced to what the summary needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Requests for the model by status (`OK`, `UNAVAILABLE`, …).
    pub requests: BTreeMap<String, f64>,
    pub request_latency: Option<Histogram>,
    pub runtime_latency: Option<Histogram>,
    pub queuing_latency: Option<Histogram>,
    pub processed_batch_size: Option<Histogram>,
    pub padding_size: Option<Histogram>,
    pub wrapped_run_count: Option<f64>,
}

fn sum_histograms(
    samples: &[Sample],
    name: &str,
    select: impl Fn(&Sample) -> bool,
) -> Result<Option<Histogram>, String> {
    let mut total: Option<Histogram> = None;
    for (_, h) in prom::histograms(samples, name, select).map_err(|e| format!("{name}: {e}"))? {
        match &mut total {
            None => total = Some(h),
            Some(t) => t.add(&h).map_err(|e| format!("{name}: {e}"))?,
        }
    }
    Ok(total)
}

/// Reads TF Serving's metrics for `model` out of a page. Families a server does not export
/// (the batching session's, without batching) are `None`.
pub fn read_page(body: &[u8], model: &str) -> Result<Reading, String> {
    let samples = prom::parse(body, |n| n.starts_with(":tensorflow:serving:"))
        .map_err(|e| format!("the metrics page: {e}"))?;
    let for_model = |s: &Sample| s.label("model_name").is_none_or(|m| m == model);
    let mut requests = BTreeMap::new();
    let mut wrapped = None;
    for s in &samples {
        if s.name == REQUEST_COUNT && for_model(s) {
            if s.value.is_nan() || s.value < 0.0 {
                return Err(format!("{REQUEST_COUNT} has a negative or NaN value"));
            }
            let status = s.label("status").unwrap_or("").to_string();
            *requests.entry(status).or_insert(0.0) += s.value;
        } else if s.name == WRAPPED_RUN_COUNT {
            if s.value.is_nan() || s.value < 0.0 {
                return Err(format!("{WRAPPED_RUN_COUNT} has a negative or NaN value"));
            }
            *wrapped.get_or_insert(0.0) += s.value;
        }
    }
    Ok(Reading {
        requests,
        request_latency: sum_histograms(&samples, REQUEST_LATENCY, for_model)?,
        runtime_latency: sum_histograms(&samples, RUNTIME_LATENCY, for_model)?,
        queuing_latency: sum_histograms(&samples, QUEUING_LATENCY, |_| true)?,
        processed_batch_size: sum_histograms(&samples, PROCESSED_BATCH_SIZE, |_| true)?,
        padding_size: sum_histograms(&samples, PADDING_SIZE, |_| true)?,
        wrapped_run_count: wrapped,
    })
}

/// A container's CPU from a kubelet's cAdvisor page (`/metrics/cadvisor`): its
/// `container_cpu_usage_seconds_total`, and its CFS (periods, throttled periods) when the
/// container has a CPU limit (cAdvisor exports the period counters only then).
pub fn read_cadvisor(
    body: &[u8],
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<(f64, Option<(f64, f64)>), String> {
    const USAGE: &str = "container_cpu_usage_seconds_total";
    const PERIODS: &str = "container_cpu_cfs_periods_total";
    const THROTTLED: &str = "container_cpu_cfs_throttled_periods_total";
    let samples = prom::parse(body, |n| n == USAGE || n == PERIODS || n == THROTTLED)
        .map_err(|e| format!("the cAdvisor page: {e}"))?;
    let mine = |s: &&Sample| {
        s.label("namespace") == Some(namespace)
            && s.label("pod") == Some(pod)
            && s.label("container") == Some(container)
    };
    let value = |name: &str| -> Result<Option<f64>, String> {
        let mut found = None;
        for s in samples.iter().filter(|s| s.name == name).filter(mine) {
            if s.value.is_nan() || s.value < 0.0 {
                return Err(format!("{name} has a negative or NaN value"));
            }
            *found.get_or_insert(0.0) += s.value;
        }
        Ok(found)
    };
    let usage = value(USAGE)?
        .ok_or_else(|| format!("no {USAGE} for container {container} of pod {namespace}/{pod}"))?;
    let periods = match (value(PERIODS)?, value(THROTTLED)?) {
        (Some(p), Some(t)) => Some((p, t)),
        _ => None,
    };
    Ok((usage, periods))
}

/// One replica at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    /// When the server's page had been read: its counters are from at most this moment.
    pub answered: Instant,
    pub reading: Result<Reading, String>,
    pub cpu: Option<Result<f64, String>>,
    /// (CFS periods, throttled periods) so far.
    pub periods: Option<Result<(f64, f64), String>>,
}

/// Reads every replica now (in parallel when there are several).
pub fn snapshot_all(replicas: &[Box<dyn Replica>], model: &str) -> Vec<Snapshot> {
    let one = |r: &dyn Replica| {
        let counters = r.cpu();
        let at = Instant::now();
        let cpu = counters.clone().map(|c| c.map(|c| c.seconds));
        let periods = counters.and_then(|c| match c {
            Ok(c) => c.periods.map(Ok),
            Err(e) => Some(Err(e)),
        });
        let page = r.fetch();
        let answered = Instant::now();
        let reading = page
            .and_then(|body| read_page(&body, model))
            .map_err(|e| format!("{}: {e}", r.label()));
        Snapshot {
            at,
            answered,
            reading,
            cpu,
            periods,
        }
    };
    if replicas.len() == 1 {
        return vec![one(replicas[0].as_ref())];
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = replicas
            .iter()
            .map(|r| s.spawn(move || one(r.as_ref())))
            .collect();
        handles
            .into_iter()
            .zip(replicas)
            .map(|(h, r)| {
                h.join().unwrap_or_else(|_| Snapshot {
                    at: Instant::now(),
                    answered: Instant::now(),
                    reading: Err(format!("{}: the scrape thread panicked", r.label())),
                    cpu: None,
                    periods: None,
                })
            })
            .collect()
    })
}

/// The `server` object of a stage (docs/loadtest-json.md). Percentiles come from Prometheus
/// buckets and are estimates (see `prom::Histogram::quantile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerStage {
    pub replicas: u32,
    /// Requests for the load test's model the servers counted, by status (`OK`,
    /// `UNAVAILABLE`, …): TF Serving's `request_count`.
    pub requests: BTreeMap<String, u64>,
    /// Rows per executed batch, after padding (`processed_batch_size`); null without batching.
    pub batch_size: Option<BatchSize>,
    /// Batches executed (`wrapped_run_count`); null without batching.
    #[serde(default)]
    pub batches: Option<u64>,
    /// Padding rows / executed rows; null without batching.
    pub padding_ratio: Option<f64>,
    /// Time a request waited in the batching queue (`queuing_latency`); null without batching.
    pub queue_wait_ms: Option<Quantiles>,
    /// Time a request spent in the model's session run (`runtime_latency`; with batching it
    /// includes the queue wait).
    pub runtime_ms: Option<Quantiles>,
    /// The server's own time for successful requests (`request_latency`: decoding, the run,
    /// encoding).
    #[serde(default)]
    pub request_ms: Option<Quantiles>,
    /// CPU used by the serving processes over the stage, in cores; null where it cannot be
    /// read.
    pub cpu_cores: Option<f64>,
    /// Share of CPU periods throttled by the container's limit; null where there is none.
    pub cpu_throttled_ratio: Option<f64>,
    /// Each replica's share of the requests the servers counted, in replica order.
    pub per_replica_share: Vec<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchSize {
    pub avg: f64,
    pub p50: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p99: f64,
}

fn quantiles(h: &Histogram, scale: f64) -> Option<Quantiles> {
    Some(Quantiles {
        p50: h.quantile(0.5)? * scale,
        p99: h.quantile(0.99)? * scale,
    })
}

fn delta_of(
    what: &str,
    end: &Option<Histogram>,
    start: &Option<Histogram>,
) -> Result<Option<Histogram>, String> {
    match (end, start) {
        (Some(e), Some(s)) => e.delta(s).map(Some).map_err(|e| format!("{what}: {e}")),
        // A family that first appears mid-stage (TF Serving registers the batching session's
        // samplers on first use) started from zero.
        (Some(e), None) => Ok(Some(e.clone())),
        (None, Some(_)) => Err(format!("{what} disappeared between scrapes")),
        (None, None) => Ok(None),
    }
}

fn add_to(total: &mut Option<Histogram>, h: Option<Histogram>) -> Result<(), String> {
    match (total.as_mut(), h) {
        (_, None) => Ok(()),
        (None, Some(h)) => {
            *total = Some(h);
            Ok(())
        }
        (Some(t), Some(h)) => t.add(&h),
    }
}

/// The stage between two snapshots of every replica: deltas summed over the replicas.
/// `Err(reason)` when any replica could not be read at either end.
pub fn summarize(start: &[Snapshot], end: &[Snapshot]) -> Result<ServerStage, String> {
    if start.len() != end.len() || start.is_empty() {
        return Err("the replicas were not all read at both ends of the stage".into());
    }
    let mut requests: BTreeMap<String, f64> = BTreeMap::new();
    let mut per_replica = Vec::with_capacity(start.len());
    let (mut latency, mut runtime, mut queue, mut batch, mut padding) =
        (None, None, None, None, None);
    let mut wrapped: Option<f64> = None;
    let mut cpu_cores: Option<f64> = Some(0.0);
    // (periods, throttled) over the stage, summed; None once a replica cannot tell.
    let mut periods: Option<(f64, f64)> = Some((0.0, 0.0));
    for (s, e) in start.iter().zip(end) {
        let (a, b) = match (&s.reading, &e.reading) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(why), _) | (_, Err(why)) => return Err(why.clone()),
        };
        let mut mine = 0.0;
        for (status, n) in &b.requests {
            let before = a.requests.get(status).copied().unwrap_or(0.0);
            if *n < before {
                return Err(format!(
                    "request_count{{status=\"{status}\"}} went down between scrapes (the server restarted?)"
                ));
            }
            *requests.entry(status.clone()).or_insert(0.0) += n - before;
            mine += n - before;
        }
        per_replica.push(mine);
        add_to(
            &mut latency,
            delta_of("request_latency", &b.request_latency, &a.request_latency)?,
        )?;
        add_to(
            &mut runtime,
            delta_of("runtime_latency", &b.runtime_latency, &a.runtime_latency)?,
        )?;
        add_to(
            &mut queue,
            delta_of("queuing_latency", &b.queuing_latency, &a.queuing_latency)?,
        )?;
        add_to(
            &mut batch,
            delta_of(
                "processed_batch_size",
                &b.processed_batch_size,
                &a.processed_batch_size,
            )?,
        )?;
        add_to(
            &mut padding,
            delta_of("padding_size", &b.padding_size, &a.padding_size)?,
        )?;
        if let Some(w) = b.wrapped_run_count {
            let before = a.wrapped_run_count.unwrap_or(0.0);
            if w < before {
                return Err("wrapped_run_count went down between scrapes".into());
            }
            *wrapped.get_or_insert(0.0) += w - before;
        }
        cpu_cores = match (cpu_cores, &s.cpu, &e.cpu) {
            (Some(total), Some(Ok(c0)), Some(Ok(c1))) => {
                let secs = e.at.saturating_duration_since(s.at).as_secs_f64();
                (secs > 0.0 && c1 >= c0).then(|| total + (c1 - c0) / secs)
            }
            _ => None,
        };
        periods = match (periods, &s.periods, &e.periods) {
            (Some((p, t)), Some(Ok((p0, t0))), Some(Ok((p1, t1)))) if p1 >= p0 && t1 >= t0 => {
                Some((p + (p1 - p0), t + (t1 - t0)))
            }
            _ => None,
        };
    }
    let total: f64 = per_replica.iter().sum();
    let batch_size = batch.as_ref().and_then(|h| {
        Some(BatchSize {
            avg: h.mean()?,
            p50: h.quantile_whole(0.5)?,
            p99: h.quantile_whole(0.99)?,
        })
    });
    let padding_ratio = match (&batch, &padding) {
        (Some(b), Some(p)) if b.sum > 0.0 => Some(p.sum / b.sum),
        (Some(b), None) if b.sum > 0.0 => Some(0.0),
        _ => None,
    };
    Ok(ServerStage {
        replicas: start.len() as u32,
        requests: requests
            .into_iter()
            .map(|(k, v)| (k, v.round() as u64))
            .collect(),
        batch_size,
        batches: wrapped.map(|w| w.round() as u64),
        padding_ratio,
        queue_wait_ms: queue.as_ref().and_then(|h| quantiles(h, 1e-3)),
        runtime_ms: runtime.as_ref().and_then(|h| quantiles(h, 1e-3)),
        request_ms: latency.as_ref().and_then(|h| quantiles(h, 1e-3)),
        cpu_cores,
        cpu_throttled_ratio: periods.and_then(|(p, t)| (p > 0.0).then(|| t / p)),
        per_replica_share: if total > 0.0 {
            per_replica.iter().map(|n| n / total).collect()
        } else {
            Vec::new()
        },
    })
}

/// How long [`wait_until_quiet`] waits between two readings, and at most in all. A server
/// that still works through a queue completes requests every few milliseconds, so 50 ms
/// without one is quiet; a quiet server costs a probe one interval.
pub const QUIET_INTERVAL: Duration = Duration::from_millis(50);
pub const QUIET_LIMIT: Duration = Duration::from_secs(15);

/// Waits until the replicas' request counters stop moving: two readings `interval` apart with
/// the same totals, so that a previous probe's queue has drained before the next one starts
/// (its requests would otherwise be answered, and measured, inside the next probe).
/// Ok(Some(waited)) once quiet; Ok(None) when the counters cannot be read (a server without
/// the metrics page: nothing to wait on); Err(why) when they were still moving after `limit`.
pub fn wait_until_quiet(
    replicas: &[Box<dyn Replica>],
    model: &str,
    interval: Duration,
    limit: Duration,
) -> Result<Option<Duration>, String> {
    let started = Instant::now();
    let total = |snaps: &[Snapshot]| -> Option<f64> {
        let mut sum = 0.0;
        for s in snaps {
            sum += s.reading.as_ref().ok()?.requests.values().sum::<f64>();
        }
        Some(sum)
    };
    let Some(mut last) = total(&snapshot_all(replicas, model)) else {
        return Ok(None);
    };
    loop {
        std::thread::sleep(interval);
        let Some(now) = total(&snapshot_all(replicas, model)) else {
            return Ok(None);
        };
        if now == last {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= limit {
            return Err(format!(
                "the server was still answering earlier requests after {} s",
                limit.as_secs_f64()
            ));
        }
        last = now;
    }
}

/// Told by the engine when a stage's schedule begins and when the run has drained. Called on
/// the generator's thread: it must return at once.
pub trait StageMarks: Sync {
    fn stage_begins(&self, index: usize);
    fn run_drained(&self);
}

enum Mark {
    Begin(usize),
    Drained,
}

/// Scrapes the replicas on its own thread at each mark; [`Scraper::finish`] turns the
/// snapshots into each stage's `server` object or the reason there is none.
pub struct Scraper {
    /// Each mark with the moment it was given.
    tx: mpsc::Sender<(Mark, Instant)>,
    thread: std::thread::JoinHandle<Vec<(Mark, Instant, Vec<Snapshot>)>>,
}

/// How late a stage's scrape may answer after its mark before the stage's figures would mix
/// in the neighbouring stage's requests: this, or 2% of the stage, whichever is more. A scrape
/// answers in about a millisecond on loopback; one that waits for a dropped SYN's retransmit
/// (a server whose listen backlog overflowed as the generator connected) answers a second
/// late, and its stage is reported without server figures rather than with wrong ones.
const SCRAPE_LATENESS: Duration = Duration::from_millis(100);

/// Err(why) when `snapshots` answered too late after `mark` for a stage of `length`.
fn check_lateness(
    what: &str,
    mark: Instant,
    snapshots: &[Snapshot],
    length: Duration,
) -> Result<(), String> {
    let allowed = SCRAPE_LATENESS.max(length / 50);
    let late = snapshots
        .iter()
        .map(|s| s.answered.saturating_duration_since(mark))
        .max()
        .unwrap_or_default();
    if late > allowed {
        return Err(format!(
            "the server answered the scrape {} ms after the stage {what} (at most {} ms keeps the stages apart): its counts would mix in the neighbouring stage's requests",
            late.as_millis(),
            allowed.as_millis()
        ));
    }
    Ok(())
}

impl Scraper {
    pub fn start(replicas: Vec<Box<dyn Replica>>, model: String) -> Scraper {
        let (tx, rx) = mpsc::channel::<(Mark, Instant)>();
        let thread = std::thread::spawn(move || {
            let mut out = Vec::new();
            while let Ok((mark, given)) = rx.recv() {
                let drained = matches!(mark, Mark::Drained);
                out.push((mark, given, snapshot_all(&replicas, &model)));
                if drained {
                    break;
                }
            }
            out
        });
        Scraper { tx, thread }
    }

    /// Per stage (`stages` of them): the server object, or the reason there is none.
    pub fn finish(self, stages: usize) -> Vec<Result<ServerStage, String>> {
        let _ = self.tx.send((Mark::Drained, Instant::now()));
        drop(self.tx);
        let marks = self.thread.join().unwrap_or_default();
        (0..stages)
            .map(|i| {
                let begin = marks
                    .iter()
                    .position(|(m, _, _)| matches!(m, Mark::Begin(j) if *j == i))
                    .ok_or_else(|| "the stage did not run".to_string())?;
                // The stage ends where the next mark (the next stage, or the drain) is.
                let end = marks
                    .get(begin + 1)
                    .ok_or_else(|| "the run ended before the stage's last scrape".to_string())?;
                let (_, began, first) = &marks[begin];
                let (_, ended, last) = end;
                let length = ended.saturating_duration_since(*began);
                check_lateness("began", *began, first, length)?;
                check_lateness("ended", *ended, last, length)?;
                summarize(first, last)
            })
            .collect()
    }
}

impl Scraper {
    /// Marks each stage's beginning at its wall-clock time (distributed workers keep a
    /// common schedule: stage i begins at `boundaries[i]`), from a thread of its own.
    pub fn mark_on_schedule(&self, boundaries: Vec<std::time::SystemTime>) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            for (i, at) in boundaries.into_iter().enumerate() {
                if let Ok(wait) = at.duration_since(std::time::SystemTime::now()) {
                    std::thread::sleep(wait);
                }
                if tx.send((Mark::Begin(i), Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
}

/// Puts each stage's server object, or the reason there is none, into the report.
pub fn attach(
    report: &mut super::RunReport,
    server: Result<Vec<Result<ServerStage, String>>, String>,
) {
    for (i, stage) in report.stages.iter_mut().enumerate() {
        let got = match &server {
            Ok(per_stage) => per_stage
                .get(i)
                .cloned()
                .unwrap_or_else(|| Err("the stage was not scraped".into())),
            Err(why) => Err(why.clone()),
        };
        match got {
            Ok(s) => {
                stage.server = Some(s);
                stage.server_note = None;
            }
            Err(why) => {
                stage.server = None;
                stage.server_note = Some(if why.starts_with("not scraped") {
                    why
                } else {
                    format!("no server metrics: {why}")
                });
            }
        }
    }
}

impl StageMarks for Scraper {
    fn stage_begins(&self, index: usize) {
        let _ = self.tx.send((Mark::Begin(index), Instant::now()));
    }

    fn run_drained(&self) {
        let _ = self.tx.send((Mark::Drained, Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ok: u64, unavailable: u64, batches: u64, rows_per_batch: u64, queue_us: u64) -> String {
        let mut s = String::new();
        s.push_str("# TYPE :tensorflow:serving:request_count counter\n");
        s.push_str(&format!(
            ":tensorflow:serving:request_count{{model_name=\"m\",status=\"OK\"}} {ok}\n"
        ));
        s.push_str(&format!(
            ":tensorflow:serving:request_count{{model_name=\"m\",status=\"UNAVAILABLE\"}} {unavailable}\n"
        ));
        s.push_str(":tensorflow:serving:request_count{model_name=\"other\",status=\"OK\"} 1000\n");
        let p = PROCESSED_BATCH_SIZE;
        for b in [1, 2, 4, 8] {
            let n = if rows_per_batch < b { batches } else { 0 };
            s.push_str(&format!("{p}_bucket{{le=\"{b}\"}} {n}\n"));
        }
        s.push_str(&format!("{p}_bucket{{le=\"+Inf\"}} {batches}\n"));
        s.push_str(&format!("{p}_sum{{}} {}\n", batches * rows_per_batch));
        s.push_str(&format!("{p}_count{{}} {batches}\n"));
        let q = QUEUING_LATENCY;
        s.push_str(&format!(
            "{q}_bucket{{thread_pool_name=\"t\",le=\"100\"}} 0\n{q}_bucket{{thread_pool_name=\"t\",le=\"10000\"}} {ok}\n{q}_bucket{{thread_pool_name=\"t\",le=\"+Inf\"}} {ok}\n{q}_sum{{thread_pool_name=\"t\"}} {}\n{q}_count{{thread_pool_name=\"t\"}} {ok}\n",
            ok * queue_us
        ));
        s.push_str(&format!("{WRAPPED_RUN_COUNT}{{}} {batches}\n"));
        s
    }

    fn snap(text: &str, cpu: f64, at: Instant) -> Snapshot {
        Snapshot {
            at,
            answered: at,
            reading: read_page(text.as_bytes(), "m"),
            cpu: Some(Ok(cpu)),
            periods: None,
        }
    }

    #[test]
    fn a_stage_is_the_difference_of_its_two_scrapes_summed_over_replicas() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(2);
        let start = vec![
            snap(&page(10, 0, 3, 4, 2000), 1.0, t0),
            snap(&page(0, 0, 0, 4, 0), 5.0, t0),
        ];
        let end = vec![
            snap(&page(105, 5, 28, 4, 2000), 2.0, t1),
            snap(&page(285, 15, 75, 4, 2000), 8.0, t1),
        ];
        let s = summarize(&start, &end).unwrap();
        assert_eq!(s.replicas, 2);
        assert_eq!(s.requests["OK"], 380);
        assert_eq!(s.requests["UNAVAILABLE"], 20);
        assert!(!s.requests.contains_key("other"));
        let b = s.batch_size.unwrap();
        assert_eq!((b.avg, b.p50, b.p99), (4.0, 4.0, 4.0));
        assert_eq!(s.batches, Some(100));
        assert_eq!(s.padding_ratio, Some(0.0));
        let q = s.queue_wait_ms.unwrap();
        assert!((q.p50 - 2.0).abs() < 1e-9, "{q:?}");
        // (1 + 3) CPU seconds over 2 s.
        assert_eq!(s.cpu_cores, Some(2.0));
        assert_eq!(s.per_replica_share, vec![0.25, 0.75]);
    }

    /// A replica whose OK counter grows by `step` on each of its first `moving` reads.
    struct Draining {
        reads: std::sync::atomic::AtomicU64,
        moving: u64,
    }

    impl Replica for Draining {
        fn label(&self) -> String {
            "draining".into()
        }
        fn fetch(&self) -> Result<Vec<u8>, String> {
            let n = self
                .reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .min(self.moving);
            Ok(page(10 + n * 7, 0, 1, 1, 100).into_bytes())
        }
    }

    #[test]
    fn the_next_probe_waits_until_the_servers_counters_stop_moving() {
        let replicas: Vec<Box<dyn Replica>> = vec![Box::new(Draining {
            reads: Default::default(),
            moving: 3,
        })];
        let tick = Duration::from_millis(1);
        let waited = wait_until_quiet(&replicas, "m", tick, Duration::from_secs(5));
        assert!(matches!(waited, Ok(Some(_))), "{waited:?}");
        // Still moving at the limit: said, not waited on forever.
        let busy: Vec<Box<dyn Replica>> = vec![Box::new(Draining {
            reads: Default::default(),
            moving: u64::MAX,
        })];
        let e = wait_until_quiet(&busy, "m", tick, Duration::from_millis(20)).unwrap_err();
        assert!(e.contains("still answering earlier requests"), "{e}");
        // A server without the page: nothing to wait on.
        struct NoPage;
        impl Replica for NoPage {
            fn label(&self) -> String {
                "nopage".into()
            }
            fn fetch(&self) -> Result<Vec<u8>, String> {
                Err("answered HTTP 404".into())
            }
        }
        let none: Vec<Box<dyn Replica>> = vec![Box::new(NoPage)];
        assert_eq!(
            wait_until_quiet(&none, "m", tick, Duration::from_secs(5)),
            Ok(None)
        );
    }

    #[test]
    fn a_scrape_answered_a_second_late_gives_its_stage_a_reason_not_mixed_counts() {
        let mark = Instant::now();
        let stage = Duration::from_secs(2);
        let on_time = snap(
            &page(10, 0, 3, 4, 2000),
            1.0,
            mark + Duration::from_millis(3),
        );
        assert!(check_lateness("began", mark, std::slice::from_ref(&on_time), stage).is_ok());
        // A dropped SYN is retransmitted after a second: half of a 2 s stage.
        let late = snap(&page(10, 0, 3, 4, 2000), 1.0, mark + Duration::from_secs(1));
        let why = check_lateness("began", mark, &[on_time, late.clone()], stage).unwrap_err();
        assert!(why.contains("1000 ms after the stage began"), "{why}");
        // A long stage allows 2% of its length.
        assert!(
            check_lateness("ended", mark, &[late], Duration::from_secs(60)).is_ok(),
            "1 s of a 60 s stage is within 2%"
        );
    }

    #[test]
    fn an_unreadable_replica_or_a_restart_gives_a_reason_not_numbers() {
        let t = Instant::now();
        let ok = snap(&page(10, 0, 3, 4, 2000), 1.0, t);
        let missing = Snapshot {
            at: t,
            answered: t,
            reading: Err(
                "127.0.0.1:1: GET /monitoring/prometheus/metrics answered HTTP 404".into(),
            ),
            cpu: None,
            periods: None,
        };
        let e = summarize(std::slice::from_ref(&ok), std::slice::from_ref(&missing)).unwrap_err();
        assert!(e.contains("HTTP 404"), "{e}");
        let restarted = snap(&page(1, 0, 1, 4, 2000), 1.0, t);
        let e = summarize(&[ok], &[restarted]).unwrap_err();
        assert!(e.contains("went down"), "{e}");
        let e = read_page(b"<html>not found</html>", "m").unwrap_err();
        assert!(e.contains("metrics page"), "{e}");
    }

    #[test]
    fn cadvisor_gives_the_containers_cpu_and_throttling_and_a_stage_its_ratio() {
        let page = "# TYPE container_cpu_usage_seconds_total counter\n\
container_cpu_usage_seconds_total{container=\"tensorflow-serving\",cpu=\"total\",namespace=\"benchstack\",pod=\"tf-1\"} 12.5 1700000000000\n\
container_cpu_usage_seconds_total{container=\"other\",namespace=\"benchstack\",pod=\"tf-1\"} 99 1700000000000\n\
container_cpu_cfs_periods_total{container=\"tensorflow-serving\",namespace=\"benchstack\",pod=\"tf-1\"} 1000\n\
container_cpu_cfs_throttled_periods_total{container=\"tensorflow-serving\",namespace=\"benchstack\",pod=\"tf-1\"} 100\n";
        let (usage, periods) =
            read_cadvisor(page.as_bytes(), "benchstack", "tf-1", "tensorflow-serving").unwrap();
        assert_eq!(usage, 12.5);
        assert_eq!(periods, Some((1000.0, 100.0)));
        assert!(
            read_cadvisor(page.as_bytes(), "benchstack", "tf-2", "tensorflow-serving").is_err()
        );
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        let mut a = snap(&page_text(), 1.0, t0);
        let mut b = snap(&page_text(), 1.5, t1);
        a.periods = Some(Ok((100.0, 10.0)));
        b.periods = Some(Ok((110.0, 13.0)));
        let s = summarize(&[a], &[b]).unwrap();
        assert_eq!(s.cpu_throttled_ratio, Some(0.3));
        assert_eq!(s.cpu_cores, Some(0.5));
    }

    fn page_text() -> String {
        page(10, 0, 3, 4, 2000)
    }

    #[test]
    fn this_process_has_cpu_seconds() {
        let s = proc_cpu_seconds(std::process::id()).unwrap();
        assert!(s >= 0.0);
        assert!(proc_cpu_seconds(u32::MAX).is_err());
    }
}
