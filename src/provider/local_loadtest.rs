//! A local load test: the load generator on this machine against every replica of the
//! target serving resource; connections are spread across the replicas. With `workers > 1`
//! it runs that many `benchstack worker` processes (each generator is single-threaded, so
//! this is how a local test uses several cores) and merges their reports, as on Kubernetes.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{Applied, Context, Inputs, ProviderError, RunOutcome};
use crate::loadgen::RunReport;
use crate::loadgen::server::{self, HttpReplica, Replica, Scraper, StageMarks};
use crate::loadgen::{self, Progress};
use crate::state::procinfo;
use crate::vocab::resources::LoadtestConfig;

pub fn run(ctx: &Context, l: &LoadtestConfig, inputs: &Inputs) -> Result<Applied, ProviderError> {
    let targets = super::load_test_targets(l, inputs)?;
    let replicas = scrape_targets(l, inputs);
    // A tune probe starts only once the previous probe's queue has drained on the server
    // (requests its generator gave up on are still answered there, inside this probe).
    if inputs.probe
        && let Ok(r) = &replicas
    {
        match server::wait_until_quiet(r, &l.model, server::QUIET_INTERVAL, server::QUIET_LIMIT) {
            Ok(Some(waited)) if waited > server::QUIET_INTERVAL * 4 => (ctx.progress)(format!(
                "waited {:.1} s for the server to finish the previous probe's requests",
                waited.as_secs_f64()
            )),
            Ok(_) => {}
            Err(why) => (ctx.progress)(format!("probing anyway: {why}")),
        }
    }
    // Answers checked once per applied configuration, with the server idle (a tune checks
    // them itself, once per trial, not on every probe).
    let answers = if inputs.probe {
        None
    } else {
        let check = super::answer_check(l, inputs, ctx.progress);
        super::refuse_changed_answers(l, check.as_ref())?;
        check
    };
    if l.workers > 1 {
        let started = procinfo::now_unix();
        let mut report = run_worker_processes(ctx, l, targets.clone(), replicas)?;
        report.answers = answers;
        return outcome(l, targets, report, started);
    }
    let mut spec = l.load_spec(targets);
    spec.stop_when_hopeless = inputs.probe;
    let started = procinfo::now_unix();
    let report_progress = |p: &Progress| (ctx.progress)(p.summary());
    let (scraper, why_not) = match replicas {
        Ok(r) => (Some(Scraper::start(r, l.model.clone())), None),
        Err(why) => (None, Some(why)),
    };
    let marks = scraper.as_ref().map(|s| s as &dyn StageMarks);
    let mut report = match loadgen::run_observed(&spec, Some(&report_progress), ctx.cancel, marks) {
        Ok(r) => r,
        Err(loadgen::LoadError::Cancelled) => return Err(ProviderError::Interrupted),
        Err(e) => return Err(ProviderError::other(format!("the load test failed: {e}"))),
    };
    let stages = report.stages.len();
    server::attach(
        &mut report,
        scraper
            .map(|s| s.finish(stages))
            .ok_or_else(|| why_not.unwrap_or_default()),
    );
    report.answers = answers;
    outcome(l, spec.targets, report, started)
}

/// The target's replicas as the scraper reaches them: each REST port on loopback, and its
/// process (for CPU time) while it is still the recorded process. Err(why) when the target's
/// recorded state names no local replicas.
fn scrape_targets(l: &LoadtestConfig, inputs: &Inputs) -> Result<Vec<Box<dyn Replica>>, String> {
    let observed = inputs
        .observed
        .get(&l.target)
        .ok_or_else(|| format!("not scraped: {} is not in the state", l.target))?;
    let serving: crate::state::observed::LocalServingObserved =
        serde_json::from_value(observed.clone()).map_err(|_| {
            format!(
                "not scraped: {} records no local serving processes",
                l.target
            )
        })?;
    if serving.replicas.is_empty() {
        return Err(format!("not scraped: {} records no replicas", l.target));
    }
    Ok(serving
        .replicas
        .iter()
        .map(|r| {
            Box::new(HttpReplica {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], r.rest_port)),
                path: crate::manifest::METRICS_PATH.to_string(),
                pid: procinfo::is_alive(r.pid, r.start_time).then_some(r.pid),
            }) as Box<dyn Replica>
        })
        .collect())
}

fn outcome(
    l: &LoadtestConfig,
    targets: Vec<String>,
    report: RunReport,
    started: u64,
) -> Result<Applied, ProviderError> {
    let slos_met = report.slos_met() || l.slos.is_empty();
    Ok(Applied {
        observed: serde_json::to_value(crate::state::observed::LocalLoadtestObserved {
            targets,
            protocol: l.protocol.to_string(),
            workers: l.workers,
        })
        .unwrap_or_default(),
        run: Some(RunOutcome {
            images: BTreeMap::new(),
            environment: report.environment.clone(),
            report: serde_json::to_value(&report)
                .map_err(|e| ProviderError::other(format!("the run report: {e}")))?,
            slos_met,
            invalid: report.invalid.clone(),
            started,
            finished: procinfo::now_unix(),
        }),
    })
}

/// How long the workers get to start before the common start time.
const LOCAL_START_DELAY: Duration = Duration::from_millis(500);

struct WorkerProcess {
    index: u32,
    child: Child,
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

fn read_all(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}

fn last_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
}

/// `workers` processes of this executable's `worker` command, each given the whole spec and
/// its index; their reports (last stdout line) merged. Ctrl-C kills them.
fn run_worker_processes(
    ctx: &Context,
    l: &LoadtestConfig,
    targets: Vec<String>,
    replicas: Result<Vec<Box<dyn Replica>>, String>,
) -> Result<RunReport, ProviderError> {
    let mut spec = l
        .worker_spec(targets)
        .map_err(|e| ProviderError::other(format!("the load test failed: {e}")))?;
    let start_at = SystemTime::now() + LOCAL_START_DELAY;
    spec.start_at_unix_ms = start_at
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_millis() as u64);
    let mut spec_file =
        tempfile::NamedTempFile::new().map_err(ProviderError::io("writing the worker spec"))?;
    serde_json::to_writer(&mut spec_file, &spec)
        .map_err(|e| ProviderError::other(format!("writing the worker spec: {e}")))?;
    let exe = std::env::current_exe().map_err(ProviderError::io("finding benchstack"))?;
    let mut workers = Vec::new();
    for index in 0..spec.workers {
        let spawned = Command::new(&exe)
            .arg("worker")
            .arg("--spec")
            .arg(spec_file.path())
            .arg("--index")
            .arg(index.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                kill_all(&mut workers);
                return Err(ProviderError::Io {
                    what: format!("starting worker {index} ({})", exe.display()),
                    source: e,
                });
            }
        };
        let stdout = read_all(child.stdout.take());
        let stderr = read_all(child.stderr.take());
        workers.push(WorkerProcess {
            index,
            child,
            stdout,
            stderr,
        });
    }

    let began = Instant::now();
    let expected = LOCAL_START_DELAY + spec.expected_duration();
    let mut last_progress = Instant::now() - Duration::from_secs(1);
    // The workers keep the common schedule: each stage begins at the common start plus the
    // warmup and the stages before it, and the server is scraped then.
    let (scraper, why_not) = match replicas {
        Ok(r) => (Some(Scraper::start(r, l.model.clone())), None),
        Err(why) => (None, Some(why)),
    };
    let mut boundaries: Vec<SystemTime> = Vec::new();
    let mut at = start_at + spec.warmup;
    for st in &spec.stages {
        boundaries.push(at);
        at += st.duration;
    }
    let mut next_mark = 0;
    loop {
        if let Some(s) = &scraper
            && next_mark < boundaries.len()
            && SystemTime::now() >= boundaries[next_mark]
        {
            s.stage_begins(next_mark);
            next_mark += 1;
        }
        if ctx.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            kill_all(&mut workers);
            return Err(ProviderError::Interrupted);
        }
        let mut running = 0;
        for w in &mut workers {
            if matches!(w.child.try_wait(), Ok(None)) {
                running += 1;
            }
        }
        if running == 0 {
            break;
        }
        if last_progress.elapsed() >= Duration::from_millis(500) {
            last_progress = Instant::now();
            (ctx.progress)(format!(
                "{running}/{} workers running, {:.0}s/{:.0}s",
                spec.workers,
                began.elapsed().as_secs_f64(),
                expected.as_secs_f64()
            ));
        }
        // Wake for the next stage boundary on time (within a few ms), else every 50 ms.
        let nap = boundaries
            .get(next_mark)
            .and_then(|b| b.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::from_millis(50))
            .min(Duration::from_millis(50));
        std::thread::sleep(nap.max(Duration::from_millis(1)));
    }

    let mut reports = Vec::new();
    let mut failures = Vec::new();
    for w in workers {
        let WorkerProcess {
            index,
            mut child,
            stdout,
            stderr,
        } = w;
        let status = child
            .wait()
            .map_err(ProviderError::io("waiting for a worker"))?;
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        if !status.success() {
            failures.push(format!(
                "worker {index}: exited with {status}: {}",
                last_line(&err)
            ));
            continue;
        }
        match serde_json::from_str::<RunReport>(last_line(&out)) {
            Ok(r) => reports.push(r),
            Err(e) => failures.push(format!("worker {index}: no report on its last line ({e})")),
        }
    }
    if !failures.is_empty() {
        return Err(ProviderError::other(format!(
            "the load test failed: {}",
            failures.join("; ")
        )));
    }
    let mut report = loadgen::merge(&reports)
        .map_err(|e| ProviderError::other(format!("merging the workers' reports: {e}")))?;
    // Each local worker's own start lateness; the merged stages judged again.
    report.worker_diagnostics = reports
        .iter()
        .flat_map(|r| r.worker_diagnostics.iter().cloned())
        .collect();
    crate::loadgen::judge_validity(&mut report);
    let stages = report.stages.len();
    server::attach(
        &mut report,
        scraper
            .map(|s| s.finish(stages))
            .ok_or_else(|| why_not.unwrap_or_default()),
    );
    Ok(report)
}

fn kill_all(workers: &mut [WorkerProcess]) {
    for w in workers.iter_mut() {
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
}
