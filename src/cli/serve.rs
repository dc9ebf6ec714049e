//! `benchstack serve`: the TF-Serving-compatible stand-in. It takes tensorflow_model_server's
//! own flag names (`--flag=value` or `--flag value`), so one argument vector starts either.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Accepted for compatibility: the stand-in always exposes /monitoring/prometheus/metrics.
    #[arg(long = "monitoring_config_file")]
    pub monitoring_config_file: Option<PathBuf>,
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
        (true, None) => Some(config::BatchingParams::default()),
        (false, Some(file)) => {
            return Err(miette!(
                "--batching_parameters_file {} is given but batching is off: add --enable_batching",
                file.display()
            ));
        }
        (false, None) => None,
    };
    Ok(ServeOptions {
        bind: args.bind,
        grpc_port: args.port,
        rest_port: args.rest_api_port,
        models,
        batching,
        inference_threads: args.tensorflow_inter_op_parallelism,
        io_threads: args.rest_api_num_threads,
    })
}

pub fn run(args: Args) -> miette::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
