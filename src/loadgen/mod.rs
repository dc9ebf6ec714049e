//! The open-loop load generator: arrival schedules, REST and gRPC clients, latency recording,
//! stages, capacity search and distributed workers.
//!
//! Open loop: intended send times come from the schedule alone; latency is measured from the
//! intended send time (no coordinated omission), and the report also carries the service time
//! (from the actual send) and how late the generator itself released requests.

pub mod answers;
pub mod engine;
pub mod grpc;
pub mod histogram;
pub mod http1;
pub mod merge;
pub mod pending;
pub mod prom;
pub mod record;
pub mod request;
pub mod result;
pub mod schedule;
pub mod search;
pub mod server;
pub mod verdict;
pub mod worker;

use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

pub use merge::merge;
pub use result::{
    Capacity, LagSummary, Percentiles, Probe, RunReport, SloVerdict, StageReport, TimelinePoint,
};
pub use search::{CapacitySearch, Floor, ProbeSample, SearchOutcome, search_capacity};
pub use verdict::{ProbeVerdict, capacity_slos, generator_invalid, judge_validity, probe_verdict};

use crate::vocab::load as spec;
use crate::vocab::resources::LoadtestConfig;
use engine::{Ctx, Job, RunPlan, Sink};
use spec::{Arrival, Protocol, Rate, RequestSource, Slo, Stage, format_rate as fmt_rate};
use worker::WorkerSpec;

/// Everything a run needs. `LoadSpec::new` fills in sensible defaults for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadSpec {
    /// Base URLs, e.g. `http://127.0.0.1:8501` or `grpc://127.0.0.1:8500`; with several
    /// (serving replicas) connections are spread across them.
    pub targets: Vec<String>,
    pub protocol: Protocol,
    pub model: String,
    pub signature: Option<String>,
    pub request: RequestSource,
    pub stages: Vec<Stage>,
    /// Sent at the first stage's rate before the stages, not recorded.
    pub warmup: Duration,
    pub arrival: Arrival,
    pub seed: u64,
    /// REST keep-alive connections, or gRPC HTTP/2 connections.
    pub connections: u32,
    /// At most this many requests outstanding; the schedule waits (and the report says the
    /// generator was the bottleneck) when it is reached. For gRPC `max` stages it is the
    /// number of concurrent closed-loop streams (default: `connections`).
    pub max_in_flight: Option<usize>,
    /// Per request (and per connection attempt).
    pub timeout: Duration,
    pub slos: Vec<Slo>,
    /// Constant arrivals start this fraction of an interval late (distributed worker i of
    /// N: i/N, so the workers together follow one generator's schedule).
    pub phase: f64,
    /// The largest reply body accepted (REST body, gRPC message); a larger one is a
    /// `malformed` error and its connection is reopened.
    pub max_response_bytes: u64,
    /// A capacity probe: a stage at a fixed rate stops sending the moment more of its planned
    /// requests have missed an objective than the objective allows (`record::Watch`), and the
    /// run ends there. Never set for `apply` or `loadtest` runs, which always run in full.
    pub stop_when_hopeless: bool,
}

impl LoadSpec {
    pub fn new(
        targets: Vec<String>,
        protocol: Protocol,
        model: impl Into<String>,
        request: RequestSource,
        stages: Vec<Stage>,
    ) -> Self {
        LoadSpec {
            targets,
            protocol,
            model: model.into(),
            signature: None,
            request,
            stages,
            warmup: Duration::ZERO,
            arrival: Arrival::Constant,
            seed: 1,
            connections: 64,
            max_in_flight: None,
            timeout: Duration::from_secs(10),
            slos: Vec::new(),
            phase: 0.0,
            max_response_bytes: http1::DEFAULT_MAX_BODY,
            stop_when_hopeless: false,
        }
    }
}

/// A snapshot for a live progress line (called about four times a second).
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub stage: String,
    pub stage_index: usize,
    pub stages: usize,
    pub warmup: bool,
    pub elapsed: Duration,
    pub duration: Duration,
    pub requests: u64,
    pub achieved_rate: f64,
    pub p99_ms: f64,
    pub errors: u64,
    pub in_flight: usize,
}

impl Progress {
    /// One line for logs and progress displays: `stage-2 (2/2): 12s/60s, 46800 requests,
    /// 3900 req/s, p99 11.4 ms, 0 errors`.
    pub fn summary(&self) -> String {
        format!(
            "{}{} ({}/{}): {:.0}s/{:.0}s, {} requests, {:.0} req/s, p99 {:.1} ms, {} errors",
            if self.warmup { "warmup " } else { "" },
            self.stage,
            self.stage_index + 1,
            self.stages,
            self.elapsed.as_secs_f64(),
            self.duration.as_secs_f64(),
            self.requests,
            self.achieved_rate,
            self.p99_ms,
            self.errors
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(String),
    #[error("the request {0}")]
    Request(#[from] request::RequestError),
    #[error("bad target {0}")]
    Target(String),
    #[error("cannot connect to {target}: {reason}")]
    Connect { target: String, reason: String },
    #[error("cannot read the model's signature over gRPC: {0}")]
    Metadata(String),
    #[error("cannot start the load generator's runtime: {0}")]
    Runtime(String),
    #[error("cancelled before the last stage finished")]
    Cancelled,
    #[error("histogram: {0}")]
    Histogram(String),
    #[error("cannot merge reports: {0}")]
    Merge(String),
    #[error(
        "{}: rows have {columns} columns, but model `{model}` takes {width} values per row (input `{input}` has shape {shape:?})",
        path.display()
    )]
    DataWidth {
        path: std::path::PathBuf,
        columns: usize,
        model: String,
        input: String,
        shape: Vec<i64>,
        width: usize,
    },
}

/// Refuses a CSV whose rows do not fit the model's input, before any load is sent. Shapes
/// with an unknown non-batch dimension cannot be checked and pass.
fn check_data_width(spec: &LoadSpec, input: Option<(String, Vec<i64>)>) -> Result<(), LoadError> {
    let (RequestSource::Data { path, .. }, Some((input, shape))) = (&spec.request, input) else {
        return Ok(());
    };
    let Some(dims) = shape.get(1..).filter(|d| !d.is_empty()) else {
        return Ok(());
    };
    if dims.iter().any(|d| *d <= 0) {
        return Ok(());
    }
    // The shape comes from the server: a product that overflows fits no CSV row anyway.
    let Some(width) = dims
        .iter()
        .try_fold(1i64, |w, &d| w.checked_mul(d))
        .and_then(|w| usize::try_from(w).ok())
    else {
        return Ok(());
    };
    let columns = request::read_csv(path)?
        .first()
        .map(|r| r.len())
        .unwrap_or(0);
    if columns == width {
        return Ok(());
    }
    Err(LoadError::DataWidth {
        path: path.clone(),
        columns,
        model: spec.model.clone(),
        input,
        shape,
        width,
    })
}

/// The most a metadata reply may carry; TF Serving's are a few kilobytes.
const MAX_METADATA_BYTES: usize = 16 << 20;

/// One GET over a fresh HTTP/1.1 connection, its body capped at `cap` bytes: the one-shot
/// client for a server's metadata (here) and status (the local provider). The caller bounds
/// the time; the connection is dropped with the call.
pub async fn http_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    cap: usize,
) -> Result<(u16, bytes::Bytes), String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .map_err(|e| format!("HTTP handshake: {e}"))?;
    // The connection runs beside the request; it is aborted once we are done (or the
    // caller's timeout drops us), so a server that never finishes holds nothing.
    let driver = AbortOnDrop(tokio::spawn(conn));
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .body(Empty::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), cap)
        .collect()
        .await
        .map_err(|e| format!("reading the reply to GET {path}: {e}"))?
        .to_bytes();
    drop(driver);
    Ok((status, body))
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The model's single input (name, shape) from TF Serving's REST metadata, if the target
/// answers it; anything else (another server, several inputs, no answer within the
/// timeout) gives `None`.
async fn rest_signature_input(
    addr: SocketAddr,
    host: &str,
    model: &str,
    signature: Option<&str>,
    timeout: Duration,
) -> Option<(String, Vec<i64>)> {
    let path = format!("/v1/models/{model}/metadata");
    let (status, body) =
        tokio::time::timeout(timeout, http_get(addr, host, &path, MAX_METADATA_BYTES))
            .await
            .ok()?
            .ok()?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let def =
        &v["metadata"]["signature_def"]["signature_def"][signature.unwrap_or("serving_default")];
    let inputs = def["inputs"].as_object()?;
    if inputs.len() != 1 {
        return None;
    }
    let (name, info) = inputs.iter().next()?;
    let shape = info["tensor_shape"]["dim"]
        .as_array()?
        .iter()
        .map(|d| {
            d["size"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| d["size"].as_i64())
        })
        .collect::<Option<Vec<i64>>>()?;
    Some((name.clone(), shape))
}

pub use crate::vocab::limits::MAX_CONNECTIONS;
pub use spec::MAX_STAGES;

/// The part of a [`LoadSpec`] a problem is in, so that each caller names its own flag or
/// attribute (`--connections`, `connections = …`) for the one set of checks below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecField {
    Targets,
    Stages,
    Connections,
    MaxInFlight,
    MaxResponseBytes,
    Timeout,
}

impl SpecField {
    /// The field's name in a message without a caller's context.
    pub fn name(self) -> &'static str {
        match self {
            SpecField::Targets => "targets",
            SpecField::Stages => "stages",
            SpecField::Connections => "connections",
            SpecField::MaxInFlight => "max in flight",
            SpecField::MaxResponseBytes => "the reply size cap",
            SpecField::Timeout => "the timeout",
        }
    }
}

/// What is wrong with a spec, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", field.name())]
pub struct SpecProblem {
    pub field: SpecField,
    /// Without the field's name: `found 0, expected at least 1`.
    pub message: String,
}

/// The bounds every spec must keep, whoever made it (the CLI's flags, a loadtest block,
/// a worker's JSON, a library caller): the one place they are checked.
pub fn check_spec(spec: &LoadSpec) -> Result<(), SpecProblem> {
    let problem = |field, message: String| Err(SpecProblem { field, message });
    if spec.targets.is_empty() {
        return problem(SpecField::Targets, "none given".into());
    }
    if spec.stages.is_empty() {
        return problem(
            SpecField::Stages,
            "none given: give a rate and duration, or at least one stage".into(),
        );
    }
    if spec.connections == 0 || spec.connections > MAX_CONNECTIONS {
        return problem(
            SpecField::Connections,
            format!(
                "found {}, expected a whole number from 1 to {MAX_CONNECTIONS}",
                spec.connections
            ),
        );
    }
    if let Err(e) = spec::check_run_length(spec.warmup, &spec.stages) {
        return problem(SpecField::Stages, e.to_string());
    }
    for s in &spec.stages {
        if let Err(e) = s.clone().check() {
            return problem(SpecField::Stages, format!("stage `{}`: {e}", s.name));
        }
    }
    if spec.timeout.is_zero() {
        return problem(
            SpecField::Timeout,
            "found 0, expected more than zero".into(),
        );
    }
    if spec.timeout > spec::MAX_DURATION {
        return problem(SpecField::Timeout, "longer than 366 days".into());
    }
    if spec.max_response_bytes == 0 {
        return problem(
            SpecField::MaxResponseBytes,
            "found 0, expected a whole number of bytes ≥ 1".into(),
        );
    }
    if spec.max_in_flight == Some(0) {
        return problem(
            SpecField::MaxInFlight,
            "found 0, expected a whole number ≥ 1".into(),
        );
    }
    Ok(())
}

fn validate(spec: &LoadSpec) -> Result<(), LoadError> {
    check_spec(spec).map_err(|p| LoadError::Invalid(p.to_string()))
}

/// A REST target: the address to dial and the Host header.
fn rest_target(target: &str) -> Result<(SocketAddr, String), LoadError> {
    let rest = target.strip_prefix("http://").ok_or_else(|| {
        LoadError::Target(format!(
            "`{target}`: expected http://HOST:PORT for REST (https is not supported)"
        ))
    })?;
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') {
        return Err(LoadError::Target(format!(
            "`{target}`: expected http://HOST:PORT (the predict path is added from --model)"
        )));
    }
    let with_port = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| LoadError::Target(format!("`{target}`: {e}")))?
        .next()
        .ok_or_else(|| LoadError::Target(format!("`{target}`: the host has no address")))?;
    Ok((addr, hostport.to_string()))
}

struct QueueSink(Rc<Ctx>);

impl Sink for QueueSink {
    fn dispatch(&self, job: Job) {
        self.0.enqueue(job);
    }
}

/// Runs the stages against the targets and returns the report. Blocking: it builds its own
/// single-threaded runtime, so it is callable from synchronous code (not from inside a
/// tokio runtime's async context).
pub fn run_blocking(
    spec: &LoadSpec,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<RunReport, LoadError> {
    run_blocking_until(spec, progress, &AtomicBool::new(false))
}

/// `run_blocking` that stops sending when `cancel` is set (Ctrl-C during apply) and then
/// returns `LoadError::Cancelled`: a partial run is not a result.
pub fn run_blocking_until(
    spec: &LoadSpec,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
    cancel: &AtomicBool,
) -> Result<RunReport, LoadError> {
    let mut report = run_observed(spec, progress, cancel, None)?;
    for s in &mut report.stages {
        s.server_note = Some(NOT_SCRAPED.to_string());
    }
    Ok(report)
}

/// Why a stage has no `server` object when nothing scraped the server during the run.
pub const NOT_SCRAPED: &str = "not scraped: this run did not read the server's metrics (apply's load tests read them; `benchstack loadtest` does not)";

/// `run_blocking_until`, telling `marks` when each stage begins and when the run has drained
/// (the scraper of the server's metrics, see `server::Scraper`). The stages' `server` fields
/// are left for the caller to fill.
pub fn run_observed(
    spec: &LoadSpec,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
    cancel: &AtomicBool,
    marks: Option<&dyn server::StageMarks>,
) -> Result<RunReport, LoadError> {
    validate(spec)?;
    let bodies = request::json_bodies(&spec.request, spec.signature.as_deref(), spec.seed)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LoadError::Runtime(e.to_string()))?;
    let local = tokio::task::LocalSet::new();
    let ctx = Rc::new(Ctx::new(&spec.stages, spec.timeout));
    if spec.stop_when_hopeless {
        let poisson = matches!(spec.arrival, Arrival::Poisson);
        let mut st = ctx.state.borrow_mut();
        for r in &mut st.recs {
            if let Rate::PerSecond(rate) = r.stage.rate {
                r.watch = record::Watch::new(&spec.slos, rate, r.stage.duration, poisson);
            }
        }
    }
    let plan = RunPlan {
        stages: spec.stages.clone(),
        warmup: spec.warmup,
        arrival: spec.arrival,
        seed: spec.seed,
        max_in_flight: spec.max_in_flight,
        phase: spec.phase,
    };
    let mut completed = false;
    local.block_on(&rt, async {
        match spec.protocol {
            Protocol::Rest => {
                let mut targets = Vec::new();
                for t in &spec.targets {
                    let (addr, host) = rest_target(t)?;
                    // Fail fast and clearly on an unreachable target, before any schedule.
                    http1::connect(addr, spec.timeout)
                        .await
                        .map_err(|_| LoadError::Connect {
                            target: t.clone(),
                            reason: format!(
                                "no TCP connection to {addr} within {}",
                                humantime::format_duration(spec.timeout)
                            ),
                        })?;
                    if matches!(spec.request, RequestSource::Data { .. }) {
                        let input = rest_signature_input(
                            addr,
                            &host,
                            &spec.model,
                            spec.signature.as_deref(),
                            spec.timeout,
                        )
                        .await;
                        check_data_width(spec, input)?;
                    }
                    let reqs: Rc<[Vec<u8>]> = bodies
                        .iter()
                        .map(|b| request::http_request(&host, &spec.model, b))
                        .collect();
                    targets.push((addr, reqs));
                }
                let limits = http1::Limits {
                    max_body: spec.max_response_bytes,
                    ..http1::Limits::default()
                };
                for i in 0..spec.connections as usize {
                    let (addr, reqs) = &targets[i % targets.len()];
                    // Spread connections over the pre-built bodies.
                    let first = i.wrapping_mul(7919);
                    tokio::task::spawn_local(http1::worker(
                        ctx.clone(),
                        *addr,
                        reqs.clone(),
                        first,
                        limits,
                    ));
                }
                ctx.wait_ready(spec.connections as usize).await;
                let sink = QueueSink(ctx.clone());
                completed = engine::run(&ctx, &sink, &plan, progress, cancel, marks).await;
            }
            Protocol::Grpc => {
                let mut channels = Vec::new();
                for i in 0..spec.connections as usize {
                    let t = &spec.targets[i % spec.targets.len()];
                    channels.push(grpc::connect(t, spec.timeout).await?);
                }
                let parsed: Vec<request::Inputs> = bodies
                    .iter()
                    .map(|b| request::json_to_inputs(b))
                    .collect::<Result<_, _>>()?;
                let name = if parsed.iter().any(request::Inputs::needs_name) {
                    let input = grpc::signature_input(
                        channels[0].clone(),
                        &spec.model,
                        spec.signature.as_deref(),
                    )
                    .await?;
                    let name = input.as_ref().map(|(n, _)| n.clone());
                    check_data_width(spec, input)?;
                    name
                } else {
                    None
                };
                let reqs = parsed
                    .iter()
                    .map(|inp| {
                        request::predict_request(
                            inp,
                            &spec.model,
                            spec.signature.as_deref(),
                            name.as_deref(),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let max_reply = usize::try_from(spec.max_response_bytes).unwrap_or(usize::MAX);
                let pool = grpc::GrpcPool::new(ctx.clone(), channels, reqs, max_reply);
                if spec.stages.iter().any(|s| s.rate == Rate::Max) {
                    let slots = spec.max_in_flight.unwrap_or(spec.connections as usize);
                    for _ in 0..slots {
                        tokio::task::spawn_local(pool.clone().closed_loop());
                    }
                }
                let sink = grpc::GrpcSink(pool);
                completed = engine::run(&ctx, &sink, &plan, progress, cancel, marks).await;
            }
        }
        Ok::<(), LoadError>(())
    })?;
    // Stop the connection tasks before the runtime goes away. Their requests still on the
    // wire are recorded as they are dropped (`pending::Pending`).
    drop(local);
    if !completed {
        return Err(LoadError::Cancelled);
    }
    // Requests still queued for a connection when the run stopped waiting were released
    // at least a timeout ago: they count as timeouts, so every scheduled request is in
    // the report.
    let queued: Vec<Job> = ctx.state.borrow_mut().queue.drain(..).collect();
    let now = std::time::Instant::now();
    for job in queued {
        ctx.done(&job, job.released, now, Err(record::ErrorKind::Timeout));
    }
    let recs = std::mem::take(&mut ctx.state.borrow_mut().recs);
    let stages = recs
        .into_iter()
        .map(|r| r.into_report(&spec.slos))
        .collect();
    let mut report = RunReport {
        target: spec.targets.join(","),
        protocol: spec.protocol,
        model: spec.model.clone(),
        stages,
        capacity: None,
        environment: crate::environment::Environment::detect(),
        arrival: spec.arrival,
        connections: spec.connections,
        slos: spec.slos.clone(),
        workers: 1,
        invalid: None,
        worker_diagnostics: Vec::new(),
        answers: None,
    };
    report.invalid = generator_invalid(&report);
    Ok(report)
}

/// The highest rate whose SLOs hold: doubles the rate from `start_rate` until a probe
/// fails (or halves it until one passes), then bisects, as MLPerf's LoadGen does. Every
/// probe is a stage of the returned report and is listed in `capacity.probes`.
pub fn find_capacity(
    spec: &LoadSpec,
    search: &CapacitySearch,
    progress: Option<&(dyn Fn(&Progress) + Sync)>,
) -> Result<RunReport, LoadError> {
    if spec.slos.is_empty() {
        return Err(LoadError::Invalid(
            "a capacity search needs at least one SLO (e.g. p99=50ms)".into(),
        ));
    }
    Rate::per_second(search.start_rate)
        .map_err(|e| LoadError::Invalid(format!("the capacity search's start rate: {e}")))?;
    let mut stages = Vec::new();
    let mut probes = Vec::new();
    let mut first: Option<RunReport> = None;
    let slos = capacity_slos(&spec.slos);
    let mut probe = |rate: f64, stages: &mut Vec<StageReport>| -> Result<ProbeSample, LoadError> {
        let n = stages.len();
        let mut s = spec.clone();
        s.slos = slos.clone();
        // A probe stops sending once it cannot pass: it has its verdict, and an overloaded
        // server is spared the rest.
        s.stop_when_hopeless = true;
        s.stages = vec![Stage {
            name: format!("probe-{} @{}", n + 1, fmt_rate(rate)),
            rate: Rate::PerSecond(rate),
            duration: search.probe_duration,
        }];
        // Warm up once, before the first probe.
        if n > 0 {
            s.warmup = Duration::ZERO;
        }
        let mut report = run_blocking(&s, progress)?;
        // A generator that fell behind says nothing about the server: try once more.
        if matches!(
            probe_verdict(&report.stages[0], rate),
            ProbeVerdict::Invalid(_)
        ) {
            s.warmup = Duration::ZERO;
            report = run_blocking(&s, progress)?;
        }
        let stage = report.stages[0].clone();
        let failure = match probe_verdict(&stage, rate) {
            ProbeVerdict::Passed => None,
            ProbeVerdict::Failed(why) => Some(why),
            ProbeVerdict::Invalid(why) => Some(format!("no verdict on the server: {why}")),
        };
        probes.push(Probe {
            stage: n,
            rate,
            passed: failure.is_none(),
            reason: failure.clone().unwrap_or_default(),
        });
        let sample = ProbeSample::of(&stage, rate, failure.is_none());
        stages.push(stage);
        if first.is_none() {
            first = Some(report);
        }
        // Let the server drain queues left by a failed probe before the next one.
        std::thread::sleep(Duration::from_millis(500));
        Ok(sample)
    };
    let found = search_capacity(search, None, |rate| probe(rate, &mut stages))?;
    let mut report = first.ok_or_else(|| LoadError::Invalid("no probe ran".into()))?;
    report.stages = stages;
    // A probe the generator could not judge is retried and listed as such; the search's
    // answer is judged by its probes, not by the first probe's run.
    report.invalid = None;
    report.capacity = Some(Capacity {
        rate: found.capacity,
        probes,
        floor: found.floor.map(|f| f.text()),
    });
    Ok(report)
}

/// A loadtest block becomes a [`LoadSpec`] here and nowhere else.
impl LoadtestConfig {
    /// The load generator's spec for this test against `targets` (base URLs:
    /// `http://IP:8501` or `grpc://IP:8500`): the one place a loadtest block becomes a
    /// `LoadSpec` (the local provider runs it; workers get it through [`Self::worker_spec`]).
    pub fn load_spec(&self, targets: Vec<String>) -> LoadSpec {
        let mut spec = LoadSpec::new(
            targets,
            self.protocol,
            self.model.clone(),
            self.request.clone(),
            self.stages.clone(),
        );
        spec.signature = self.signature.clone();
        spec.warmup = self.warmup;
        spec.arrival = self.arrival;
        spec.seed = self.seed;
        spec.connections = self.connections;
        spec.timeout = self.timeout;
        spec.slos = self.slos.clone();
        spec
    }

    /// The spec its `workers` distributed workers share (reads the CSV now, so the workers
    /// carry its rows).
    pub fn worker_spec(&self, targets: Vec<String>) -> Result<WorkerSpec, LoadError> {
        WorkerSpec::new(&self.load_spec(targets), self.workers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LoadSpec {
        LoadSpec::new(
            vec!["http://127.0.0.1:9".into()],
            Protocol::Rest,
            "m",
            RequestSource::Body("{\"instances\": [[1.0]]}".into()),
            vec![Stage {
                name: "s".into(),
                rate: Rate::PerSecond(10.0),
                duration: Duration::from_secs(1),
            }],
        )
    }

    #[test]
    fn each_out_of_bounds_setting_is_named_by_its_field() {
        assert_eq!(check_spec(&spec()), Ok(()));
        let field = |f: &dyn Fn(&mut LoadSpec)| {
            let mut s = spec();
            f(&mut s);
            check_spec(&s).unwrap_err().field
        };
        assert_eq!(field(&|s| s.connections = 0), SpecField::Connections);
        assert_eq!(
            field(&|s| s.connections = MAX_CONNECTIONS + 1),
            SpecField::Connections
        );
        assert_eq!(
            field(&|s| s.max_in_flight = Some(0)),
            SpecField::MaxInFlight
        );
        assert_eq!(
            field(&|s| s.max_response_bytes = 0),
            SpecField::MaxResponseBytes
        );
        assert_eq!(field(&|s| s.timeout = Duration::ZERO), SpecField::Timeout);
        assert_eq!(field(&|s| s.targets.clear()), SpecField::Targets);
        assert_eq!(field(&|s| s.stages.clear()), SpecField::Stages);
    }
}
