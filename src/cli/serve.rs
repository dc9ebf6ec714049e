//! `benchstack serve`: the TF-Serving-compatible stand-in. It takes tensorflow_model_server's
//! own flag names (`--flag=value` or `--flag value`), so one argument vector starts either.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use miette::{IntoDiagnostic, miette};

use crate::serve::{self, ServeOptions, config};

fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(format!(
            "`{other}` is not a boolean: expected true or false"
        )),
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// gRPC port (0 picks a free port).
    #[arg(long = "port", default_value_t = 8500)]
    pub port: u16,
    /// REST port (0 picks a free port; unlike tensorflow_model_server, REST is always on).
    #[arg(long = "rest_api_port", default_value_t = 8501)]
    pub rest_api_port: u16,
    /// Address to bind (loopback unless told otherwise).
    #[arg(long = "bind", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// Name of the single model to serve (with --model_base_path).
    #[arg(long = "model_name", default_value = "default")]
    pub model_name: String,
    /// Versioned base path of the single model to serve.
    #[arg(long = "model_base_path", conflicts_with = "model_config_file")]
    pub model_base_path: Option<PathBuf>,
    /// models.config (ModelServerConfig text proto) listing the models to serve.
    #[arg(long = "model_config_file")]
    pub model_config_file: Option<PathBuf>,
    /// Batch requests with TF Serving's batching scheduler.
    #[arg(long = "enable_batching", num_args = 0..=1, default_missing_value = "true", default_value = "false", value_parser = parse_bool)]
    pub enable_batching: bool,
    /// batching_parameters.txt (BatchingParameters text proto).
    #[arg(long = "batching_parameters_file")]
    pub batching_parameters_file: Option<PathBuf>,
    /// Threads per inference (accepted; tract runs each call on one thread).
    #[arg(long = "tensorflow_intra_op_parallelism", default_value_t = 0)]
    pub tensorflow_intra_op_parallelism: usize,
    /// Inference threads when batching is off (0 = one per core).
    #[arg(long = "tensorflow_inter_op_parallelism", default_value_t = 0)]
    pub tensorflow_inter_op_parallelism: usize,
    /// Front-end (REST and gRPC) threads (0 = one per core).
    #[arg(long = "rest_api_num_threads", default_value_t = 0)]
    pub rest_api_num_threads: usize,
    /// Accepted for compatibility; models are loaded once at start.
    #[arg(long = "file_system_poll_wait_seconds", default_value_t = 1)]
    pub file_system_poll_wait_seconds: i64,
    /// Accepted for compatibility.
    #[arg(long = "grpc_max_threads", default_value_t = 0)]
    pub grpc_max_threads: usize,
    /// Accepted for compatibility (the stand-in has no warmup records).
    #[arg(long = "enable_model_warmup", num_args = 0..=1, default_missing_value = "true", default_value = "true", value_parser = parse_bool)]
    pub enable_model_warmup: bool,
    /// monitoring.config (MonitoringConfig text proto): with `prometheus_config { enable:
    /// true path: "…" }` the REST port serves TF Serving's metrics at that path.
    #[arg(long = "monitoring_config_file")]
    pub monitoring_config_file: Option<PathBuf>,
    /// Open connections allowed per port (REST and gRPC each); more wait until one closes.
    #[arg(long = "max_connections", default_value_t = 1024)]
    pub max_connections: usize,
    /// Milliseconds a client has to send a request head (and to start the next one on a
    /// kept-alive HTTP/1 connection) before the connection is closed.
    #[arg(
        long = "header_read_timeout_ms",
        env = "BENCHSTACK_SERVE_HEADER_READ_TIMEOUT_MS",
        default_value_t = 30_000,
        hide = true
    )]
    pub header_read_timeout_ms: u64,
    /// Milliseconds a connection may send and take nothing before it is closed.
    #[arg(
        long = "idle_timeout_ms",
        env = "BENCHSTACK_SERVE_IDLE_TIMEOUT_MS",
        default_value_t = 300_000,
        hide = true
    )]
    pub idle_timeout_ms: u64,
}

/// Longest timeout the hidden timeout flags take (a day): beyond it is surely a typo, and a
/// deadline that far out is no defence.
const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
/// Most connections per port.
const MAX_CONNECTIONS: usize = 1 << 20;

/// Refuses a flag value outside `lo..=hi`, naming the flag.
fn check_range<T: PartialOrd + std::fmt::Display>(
    flag: &str,
    value: T,
    lo: T,
    hi: T,
) -> miette::Result<T> {
    if value < lo || value > hi {
        return Err(miette!(
            "--{flag}={value} is out of range: expected {lo} to {hi}"
        ));
    }
    Ok(value)
}

pub fn options(args: &Args) -> miette::Result<ServeOptions> {
    let models = match (&args.model_config_file, &args.model_base_path) {
        (Some(file), _) => config::read_model_config(file).map_err(|e| miette!("{e}"))?,
        (None, Some(base)) => vec![serve::single_model(&args.model_name, base.clone())],
        (None, None) => {
            return Err(miette!(
                "no model to serve: expected --model_base_path (with --model_name) or --model_config_file"
            ));
        }
    };
    let batching = match (args.enable_batching, &args.batching_parameters_file) {
        (true, Some(file)) => {
            Some(config::read_batching_parameters(file).map_err(|e| miette!("{e}"))?)
        }
        (true, None) => Some(config::BatchingParams {
            // What tensorflow_model_server names the pool when batching has no parameters file.
            thread_pool_name: Some("model_server_batch_threads".into()),
            ..config::BatchingParams::default()
        }),
        (false, Some(file)) => {
            return Err(miette!(
                "--batching_parameters_file {} is given but batching is off: add --enable_batching",
                file.display()
            ));
        }
        (false, None) => None,
    };
    let metrics_path = match &args.monitoring_config_file {
        Some(file) => config::read_monitoring_config(file).map_err(|e| miette!("{e}"))?,
        None => None,
    };
    // Thread counts become spawned threads: bound them like num_batch_threads (0 = cores).
    let threads = |flag, v| check_range(flag, v, 0, config::MAX_THREADS);
    threads(
        "tensorflow_intra_op_parallelism",
        args.tensorflow_intra_op_parallelism,
    )?;
    threads("grpc_max_threads", args.grpc_max_threads)?;
    let net = serve::net::NetLimits {
        max_connections: check_range("max_connections", args.max_connections, 1, MAX_CONNECTIONS)?,
        header_read_timeout: std::time::Duration::from_millis(check_range(
            "header_read_timeout_ms",
            args.header_read_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )?),
        idle_timeout: std::time::Duration::from_millis(check_range(
            "idle_timeout_ms",
            args.idle_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )?),
    };
    Ok(ServeOptions {
        bind: args.bind,
        grpc_port: args.port,
        rest_port: args.rest_api_port,
        models,
        batching,
        inference_threads: threads(
            "tensorflow_inter_op_parallelism",
            args.tensorflow_inter_op_parallelism,
        )?,
        io_threads: threads("rest_api_num_threads", args.rest_api_num_threads)?,
        net,
        metrics_path,
    })
}

pub fn run(args: Args) -> miette::Result<super::Outcome> {
    let opts = options(&args)?;
    serve::run(opts, |ready| {
        // One JSON line on stdout says the server is ready and where.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::to_string(&ready).unwrap_or_default());
        let _ = out.flush();
        eprintln!(
            "benchstack serve: gRPC on port {}, REST on port {} (pid {})",
            ready.grpc_port, ready.rest_port, ready.pid
        );
    })
    .into_diagnostic()?;
    Ok(super::Outcome::Success)
}
