//! `benchstack loadtest TARGET`: an ad-hoc open-loop load test, like wrk or oha but with
//! honest tails (latency from the intended send time).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use miette::{IntoDiagnostic, miette};

use crate::loadgen::{self, CapacitySearch, LoadSpec, Progress, SpecField, answers, request};
use crate::report;
use crate::vocab::load::{self as spec, Arrival, Protocol, Rate, RequestSource, Slo, Stage};

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  benchstack loadtest http://127.0.0.1:8501 --model regression --request examples/requests/regression.json --rate 3900 --duration 60s
  benchstack loadtest grpc://127.0.0.1:8500 --model regression --data examples/model/test.csv --batch-size 8 --stage 300:60s --stage 3900:60s --slo p99=50ms
  benchstack loadtest http://127.0.0.1:8501 --model regression --request body.json --rate max --connections 64 --duration 10s
  benchstack loadtest http://127.0.0.1:8501 --model regression --request body.json --find-capacity --slo p99=20ms --duration 10s

Exit status: 0 done (all SLOs met), 1 bad input, the run could not start, or the answers change under batching (--check-answers), 2 an SLO was missed.")]
pub struct Args {
    /// http://HOST:PORT (REST predict) or grpc://HOST:PORT (gRPC Predict); several spread the connections.
    #[arg(required = true, value_name = "TARGET")]
    pub targets: Vec<String>,
    /// The model name (as served).
    #[arg(long)]
    pub model: String,
    /// The signature to call (default: the model's serving_default).
    #[arg(long)]
    pub signature: Option<String>,
    /// A TF Serving JSON predict body, sent with every request (converted to a PredictRequest for gRPC).
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    pub request: Option<PathBuf>,
    /// A CSV (header + rows of numbers): each request carries --batch-size rows sampled from it.
    #[arg(long, value_name = "CSV")]
    pub data: Option<PathBuf>,
    /// Rows per request with --data.
    #[arg(long, value_name = "N", default_value = "1")]
    pub batch_size: String,
    /// Requests per second, or `max` (closed loop over --connections, like wrk).
    #[arg(
        long,
        value_name = "R",
        allow_hyphen_values = true,
        conflicts_with = "stage"
    )]
    pub rate: Option<String>,
    /// How long to run at --rate (e.g. 30s, 2m).
    #[arg(long, value_name = "D", allow_hyphen_values = true)]
    pub duration: Option<String>,
    /// A stage RATE:DURATION (repeatable; run in order), e.g. --stage 300:60s --stage 3900:60s.
    #[arg(long, value_name = "RATE:DURATION", allow_hyphen_values = true)]
    pub stage: Vec<String>,
    /// Sent before the first stage at its rate, not recorded.
    #[arg(long, value_name = "D", default_value = "0s")]
    pub warmup: String,
    /// `constant` (evenly spaced) or `poisson` (exponential gaps, seeded).
    #[arg(long, value_name = "KIND", default_value = "constant")]
    pub arrival: String,
    /// Seed for Poisson arrivals and CSV row sampling.
    #[arg(long, value_name = "N", default_value = "1")]
    pub seed: String,
    /// REST keep-alive connections, or gRPC HTTP/2 connections.
    #[arg(long, value_name = "N", default_value = "64")]
    pub connections: String,
    /// Cap on outstanding requests (the schedule waits, and the report says so, when reached).
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<String>,
    /// Per request and per connection attempt.
    #[arg(long, value_name = "D", default_value = "10s")]
    pub timeout: String,
    /// The largest reply body accepted (REST body or gRPC message); a larger one is a `malformed` error.
    #[arg(long, value_name = "BYTES", default_value = "67108864")]
    pub max_response_bytes: String,
    /// An objective (repeatable): PERCENTILE=DURATION (p99=50ms, p99.9=200ms) or errors=PERCENT
    /// (errors=0.1%). Failed requests count against every objective as requests that never
    /// completed.
    #[arg(long, value_name = "SLO")]
    pub slo: Vec<String>,
    /// Search the highest rate whose SLOs hold (grow from --rate, default 100, then bisect); each probe runs --duration.
    #[arg(long)]
    pub find_capacity: bool,
    /// Before the run (once, before a --find-capacity search), send 16 of the requests to each
    /// target alone, then together, and compare the answers (relative tolerance 1e-4): answers
    /// that change under batching stop the command with exit 1. `--check-answers=false` skips it.
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub check_answers: bool,
    /// Print the report as one JSON object (see docs/loadtest-json.md).
    #[arg(long)]
    pub json: bool,
    /// Write a self-contained HTML report with charts.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Also print `ANCHOR requests=N rps=X p50_ms=Y p99_ms=Z errors=E` (for bench/anchors/run.sh).
    #[arg(long)]
    pub anchor_line: bool,
    /// No progress line and no table (JSON, HTML and the anchor line are still written if asked).
    #[arg(long, short)]
    pub quiet: bool,
}

fn flag<T: std::str::FromStr>(name: &str, value: &str, expected: &str) -> miette::Result<T> {
    value
        .trim()
        .parse::<T>()
        .map_err(|_| miette!("--{name} `{value}`: expected {expected}"))
}

fn duration(name: &str, value: &str) -> miette::Result<Duration> {
    spec::parse_duration(value.trim()).map_err(|e| miette!("--{name}: {e}"))
}

/// Turns the flags into a spec; every error names its flag or file.
pub fn build_spec(args: &Args) -> miette::Result<(LoadSpec, Option<CapacitySearch>)> {
    let protocol = {
        let mut p = None;
        for t in &args.targets {
            let this = if t.starts_with("grpc://") {
                Protocol::Grpc
            } else if t.starts_with("http://") {
                Protocol::Rest
            } else {
                return Err(miette!(
                    "TARGET `{t}`: expected http://HOST:PORT (REST) or grpc://HOST:PORT (gRPC)"
                ));
            };
            if p.is_some_and(|p| p != this) {
                return Err(miette!(
                    "TARGET `{t}`: all targets must use the same protocol"
                ));
            }
            p = Some(this);
        }
        p.ok_or_else(|| miette!("TARGET: expected at least one target"))?
    };
    let request = match (&args.request, &args.data) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| miette!("--request {}: cannot be read: {e}", path.display()))?;
            RequestSource::Body(text)
        }
        (None, Some(path)) => {
            let batch_size: u32 = flag("batch-size", &args.batch_size, "a whole number ≥ 1")?;
            if batch_size == 0 {
                return Err(miette!("--batch-size 0: expected a whole number ≥ 1"));
            }
            RequestSource::Data {
                path: path.clone(),
                batch_size,
            }
        }
        _ => {
            return Err(miette!(
                "give the request body with --request FILE (a TF Serving JSON predict body) or --data CSV [--batch-size N]"
            ));
        }
    };
    let seed: u64 = flag("seed", &args.seed, "a whole number")?;
    // Check the body now so that the error names the file, not the run.
    if let Err(e) = request::json_bodies(&request, args.signature.as_deref(), seed) {
        return Err(match (&args.request, &args.data) {
            (Some(p), _) => miette!("--request {}: {e}", p.display()),
            (_, Some(p)) => miette!("--data {}: {e}", p.display()),
            _ => miette!("{e}"),
        });
    }
    let mut stages = Vec::new();
    if args.stage.is_empty() {
        let rate = match &args.rate {
            Some(r) => Rate::parse(r.trim()).map_err(|e| miette!("--rate: {e}"))?,
            None if args.find_capacity => Rate::PerSecond(100.0),
            None => {
                return Err(miette!(
                    "give --rate R --duration D, or one or more --stage RATE:DURATION"
                ));
            }
        };
        let d = match &args.duration {
            Some(d) => duration("duration", d)?,
            None if args.find_capacity => Duration::from_secs(10),
            None => return Err(miette!("--rate needs --duration (e.g. --duration 30s)")),
        };
        spec::nonzero(d, "--duration").map_err(|e| miette!("{e}"))?;
        stages.push(Stage {
            name: "main".into(),
            rate,
            duration: d,
        });
    } else {
        if args.duration.is_some() {
            return Err(miette!(
                "--duration goes with --rate; with --stage give each stage its own RATE:DURATION"
            ));
        }
        for (i, s) in args.stage.iter().enumerate() {
            let st = Stage::parse(s, i).map_err(|e| miette!("--stage `{s}`: {e}"))?;
            stages.push(st);
        }
    }
    let connections: u32 = flag("connections", &args.connections, "a whole number ≥ 1")?;
    let max_in_flight = match &args.max_in_flight {
        Some(v) => Some(flag("max-in-flight", v, "a whole number ≥ 1")?),
        None => None,
    };
    let timeout = duration("timeout", &args.timeout)?;
    let slos = args
        .slo
        .iter()
        .map(|s| Slo::parse(s.trim()).map_err(|e| miette!("--slo: {e}")))
        .collect::<miette::Result<Vec<_>>>()?;
    let mut spec = LoadSpec::new(
        args.targets.clone(),
        protocol,
        args.model.clone(),
        request,
        stages,
    );
    spec.signature = args.signature.clone();
    spec.warmup = duration("warmup", &args.warmup)?;
    spec.arrival = Arrival::parse(args.arrival.trim()).map_err(|e| miette!("--arrival: {e}"))?;
    spec.seed = seed;
    spec.connections = connections;
    spec.max_in_flight = max_in_flight;
    spec.timeout = timeout;
    spec.slos = slos;
    spec.max_response_bytes = flag(
        "max-response-bytes",
        &args.max_response_bytes,
        "a whole number of bytes ≥ 1",
    )?;
    // The generator's own checks, each named by the flag that sets it.
    loadgen::check_spec(&spec).map_err(|p| {
        let flag = match p.field {
            SpecField::Targets => "TARGET",
            SpecField::Stages if args.stage.is_empty() => "--rate/--duration",
            SpecField::Stages => "--stage",
            SpecField::Connections => "--connections",
            SpecField::MaxInFlight => "--max-in-flight",
            SpecField::MaxResponseBytes => "--max-response-bytes",
            SpecField::Timeout => "--timeout",
        };
        miette!("{flag}: {}", p.message)
    })?;
    let search = if args.find_capacity {
        if args.stage.len() > 1 {
            return Err(miette!(
                "--find-capacity runs its own probes: give --rate (the first probe) and --duration (per probe), not --stage"
            ));
        }
        if spec.slos.is_empty() {
            return Err(miette!(
                "--find-capacity needs at least one --slo (e.g. --slo p99=50ms)"
            ));
        }
        let first = &spec.stages[0];
        let start_rate = match first.rate {
            Rate::PerSecond(r) => r,
            Rate::Max => {
                return Err(miette!(
                    "--find-capacity: --rate max has no rate to start from; give a number"
                ));
            }
        };
        Some(CapacitySearch {
            start_rate,
            probe_duration: first.duration,
            ..CapacitySearch::default()
        })
    } else {
        None
    };
    Ok((spec, search))
}

fn progress_line(p: &Progress) -> String {
    if p.warmup {
        return format!(
            "warmup  {:>5.1}s/{:.0}s  in flight {}",
            p.elapsed.as_secs_f64(),
            p.duration.as_secs_f64(),
            p.in_flight
        );
    }
    format!(
        "{} ({}/{})  {:>5.1}s/{:.0}s  {:>9.1} req/s  p99 {:>8.2} ms  errors {}  in flight {}",
        p.stage,
        p.stage_index + 1,
        p.stages,
        p.elapsed.as_secs_f64(),
        p.duration.as_secs_f64(),
        p.achieved_rate,
        p.p99_ms,
        p.errors,
        p.in_flight
    )
}

/// The answer check before the run: None when skipped or when it could not be made (said on
/// stderr, as `apply` says it); an error when the answers differ.
fn check_answers(args: &Args, spec: &LoadSpec) -> miette::Result<Option<answers::AnswerCheck>> {
    if !args.check_answers {
        return Ok(None);
    }
    let sample = answers::Sample {
        model: &spec.model,
        signature: spec.signature.as_deref(),
        source: &spec.request,
        seed: spec.seed,
        timeout: spec.timeout,
    };
    match answers::check_each(&spec.targets, &sample) {
        Ok(checks) => {
            let differing: Vec<&str> = checks
                .iter()
                .filter(|(_, c)| c.differs())
                .map(|(t, _)| t.as_str())
                .collect();
            let differing = differing.join(", ");
            let check = answers::combine(checks);
            if let Some(why) = check.refusal(&differing) {
                return Err(miette!("{why}"));
            }
            if !args.quiet {
                eprintln!("{}", check.summary());
            }
            Ok(Some(check))
        }
        Err(e) => {
            if !args.quiet {
                eprintln!("answers not checked: {e}");
            }
            Ok(None)
        }
    }
}

pub fn run(args: Args) -> miette::Result<super::Outcome> {
    let (spec, search) = build_spec(&args)?;
    let answers = check_answers(&args, &spec)?;
    let live = !args.quiet && std::io::stderr().is_terminal();
    let show = |p: &Progress| {
        let phase = if p.warmup { "warmup" } else { p.stage.as_str() };
        super::progress::update(super::progress::Stream::Stderr, phase, &progress_line(p));
    };
    let progress: Option<&(dyn Fn(&Progress) + Sync)> = if live { Some(&show) } else { None };
    let result = match &search {
        Some(s) => loadgen::find_capacity(&spec, s, progress),
        None => loadgen::run_blocking(&spec, progress),
    };
    if live {
        super::progress::end_line();
    }
    let mut report = result.map_err(|e| match e {
        loadgen::LoadError::Request(r) => match (&args.request, &args.data) {
            (Some(p), _) => miette!("--request {}: {r}", p.display()),
            (_, Some(p)) => miette!("--data {}: {r}", p.display()),
            _ => miette!("{r}"),
        },
        other => miette!("{other}"),
    })?;
    report.answers = answers;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).into_diagnostic()?
        );
    } else if !args.quiet {
        print!("{}", report::stage_table(&report));
    }
    if args.anchor_line {
        println!("{}", report::anchor_line(&report));
    }
    if let Some(path) = &args.html {
        let label = report.target.clone();
        std::fs::write(path, report::html(&[(label, report.clone())]))
            .map_err(|e| miette!("--html {}: cannot write: {e}", path.display()))?;
        if !args.quiet {
            eprintln!("wrote {}", path.display());
        }
    }
    // A run whose generator was the bottleneck says nothing about the server: neither met
    // nor missed (the table says why).
    if search.is_none() && report.invalid.is_some() {
        return Ok(super::Outcome::Failed);
    }
    let missed = search.is_none() && !spec.slos.is_empty() && !report.slos_met();
    Ok(if missed {
        super::Outcome::SloMissed
    } else {
        super::Outcome::Success
    })
}
