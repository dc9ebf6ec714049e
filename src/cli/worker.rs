//! `benchstack worker`: one pod of a distributed load test. Reads the whole test's spec from
//! `BENCHSTACK_WORKER_SPEC` (or `--spec FILE`) and its index from `JOB_COMPLETION_INDEX` (or
//! `--index`), waits for the common start, runs its share with the same library code as
//! `benchstack loadtest`, and prints its report (JSON, base64 HdrHistograms) as the last line
//! of its output, where the coordinator reads it from the pod log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use miette::{IntoDiagnostic, WrapErr, miette};

use crate::loadgen::worker::{self, WorkerSpec};
use crate::loadgen::{self, Progress};
use crate::manifest::k8s::{WORKER_SPEC_ENV, WORKER_TOKEN_ENV};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Read the spec from FILE instead of the BENCHSTACK_WORKER_SPEC environment variable.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// This worker's index (default: JOB_COMPLETION_INDEX, set by an Indexed Job).
    #[arg(long)]
    pub index: Option<u32>,
}

pub fn run(args: Args) -> miette::Result<super::Outcome> {
    let text = match &args.spec {
        Some(path) => std::fs::read_to_string(path)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot read --spec {}", path.display()))?,
        None => std::env::var(WORKER_SPEC_ENV).map_err(|_| {
            miette!("{WORKER_SPEC_ENV} is not set: a worker gets its spec from the Job (or pass --spec FILE)")
        })?,
    };
    let spec: WorkerSpec = serde_json::from_str(&text)
        .into_diagnostic()
        .wrap_err("the worker spec is not valid JSON of the expected shape")?;
    let index = match args.index {
        Some(i) => i,
        None => worker::index_from_env().map_err(|e| miette!("{e}"))?,
    };
    let scratch = tempfile::tempdir()
        .into_diagnostic()
        .wrap_err("cannot make a scratch directory")?;
    let share = spec
        .share(index, scratch.path())
        .map_err(|e| miette!("{e}"))?;

    // Gang start: serve the clock and wait for the coordinator's start (in this worker's
    // clock); without a control port, the start in the spec (or at once).
    let late = match spec.control_port {
        Some(port) => {
            let ip = std::env::var(worker::POD_IP_ENV)
                .ok()
                .filter(|s| !s.is_empty());
            // Only the coordinator, which made the token, may start the run.
            let token = std::env::var(WORKER_TOKEN_ENV)
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| {
                    miette!(
                        "{WORKER_TOKEN_ENV} is not set: a worker with a control port takes the common start only with the run's token, which the coordinator puts in the Job"
                    )
                })?;
            let control =
                worker::Control::serve(ip.as_deref(), port, &token).map_err(|e| miette!("{e}"))?;
            eprintln!(
                "worker {index}/{}: ready on {}, waiting for the common start",
                spec.workers, control.addr
            );
            let limit = spec.expected_duration() * 2 + Duration::from_secs(600);
            let at = control.wait_for_start(limit).ok_or_else(|| {
                miette!(
                    "worker {index}: no common start within {} of becoming ready",
                    humantime::format_duration(limit)
                )
            })?;
            let start = std::time::UNIX_EPOCH + Duration::from_nanos(at);
            if let Ok(wait) = start.duration_since(SystemTime::now()) {
                std::thread::sleep(wait);
            }
            SystemTime::now()
                .duration_since(start)
                .unwrap_or(Duration::ZERO)
        }
        None => {
            let (wait, late) = spec.wait_for_start(SystemTime::now());
            if !wait.is_zero() {
                std::thread::sleep(wait);
            }
            late
        }
    };
    if late >= Duration::from_millis(1) {
        eprintln!(
            "worker {index}/{}: started {:.3}s after the common start",
            spec.workers,
            late.as_secs_f64()
        );
    }

    // A line every few seconds: pod logs are read by people too, but not redrawn.
    let last = Mutex::new(Instant::now() - Duration::from_secs(60));
    let show = |p: &Progress| {
        let Ok(mut last) = last.lock() else { return };
        if last.elapsed() >= Duration::from_secs(5) {
            *last = Instant::now();
            eprintln!("worker {index}: {}", p.summary());
        }
    };
    let mut report = loadgen::run_blocking(&share, Some(&show)).map_err(|e| miette!("{e}"))?;
    // What only the worker knows; the coordinator adds the rest.
    report.worker_diagnostics = vec![loadgen::result::WorkerDiagnostics {
        index,
        start_late_ms: Some(late.as_secs_f64() * 1000.0),
        ..Default::default()
    }];
    let line = serde_json::to_string(&report).into_diagnostic()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").into_diagnostic()?;
    out.flush().into_diagnostic()?;
    Ok(super::Outcome::Success)
}
