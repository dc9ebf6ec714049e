//! The local TF-Serving-compatible stand-in (`benchstack serve`): models from models.config or
//! --model_name/--model_base_path, inference on the ONNX export with tract, REST and gRPC
//! front ends, and TF Serving's batching scheduler.

pub mod batching;
pub mod config;
pub mod core;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod net;
pub mod rest;
pub mod textproto;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use self::batching::Executor;
use self::config::{BatchingParams, ConfigError, ModelEntry};
use self::core::{Core, MAX_MESSAGE_BYTES, ServedModel};
use self::metrics::Metrics;
use self::net::{Acceptor, NetLimits};

/// Everything `benchstack serve` needs, resolved from TF Serving's flags.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: IpAddr,
    /// gRPC port; 0 picks a free one.
    pub grpc_port: u16,
    /// REST port; 0 picks a free one.
    pub rest_port: u16,
    pub models: Vec<ModelEntry>,
    /// `Some` with --enable_batching.
    pub batching: Option<BatchingParams>,
    /// Threads that run inference when batching is off (TF's inter-op parallelism; 0 = cores).
    pub inference_threads: usize,
    /// Runtime threads for the REST/gRPC front ends (0 = cores).
    pub io_threads: usize,
    /// Connection cap and timeouts for both listeners.
    pub net: NetLimits,
    /// The metrics page's path on the REST port, from --monitoring_config_file; None: no page.
    pub metrics_path: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Load(#[from] model::LoadError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Runtime(String),
}

/// The ports a started server listens on (what the ready line prints).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Ready {
    pub grpc_port: u16,
    pub rest_port: u16,
    pub pid: u32,
}

/// Loads the models and starts their executors (no sockets yet).
pub fn build_core(opts: &ServeOptions) -> Result<Core, ServeError> {
    let pool = match &opts.batching {
        Some(b) => b.thread_pool_name.as_deref().unwrap_or("batch_threads"),
        None => "",
    };
    let metrics = Arc::new(Metrics::new(opts.batching.is_some(), pool));
    let threads = if opts.inference_threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        opts.inference_threads
    };
    let mut models = BTreeMap::new();
    for entry in &opts.models {
        let loaded = model::load(entry)?;
        let mut executors = BTreeMap::new();
        for (v, s) in &loaded.versions {
            let exec = Executor::start(s.clone(), opts.batching.clone(), threads, metrics.clone())
                .map_err(|e| {
                    ServeError::Runtime(format!(
                        "model `{}` version {v}: cannot start its batch threads: {e}",
                        entry.name
                    ))
                })?;
            executors.insert(*v, exec);
        }
        models.insert(
            entry.name.clone(),
            ServedModel {
                model: loaded,
                executors,
            },
        );
    }
    Ok(Core {
        models,
        metrics,
        metrics_path: opts.metrics_path.clone(),
    })
}

/// Runs the server until SIGTERM or SIGINT; `on_ready` gets the bound ports once both listen.
pub fn run(opts: ServeOptions, on_ready: impl FnOnce(Ready)) -> Result<(), ServeError> {
    net::raise_nofile_limit();
    let core = Arc::new(build_core(&opts)?);
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if opts.io_threads > 0 {
        rt.worker_threads(opts.io_threads);
    }
    let rt = rt
        .enable_all()
        .build()
        .map_err(|e| ServeError::Runtime(e.to_string()))?;
    let result = rt.block_on(serve(core.clone(), &opts, on_ready));
    core.shutdown();
    result
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

async fn serve(
    core: Arc<Core>,
    opts: &ServeOptions,
    on_ready: impl FnOnce(Ready),
) -> Result<(), ServeError> {
    let grpc = bind(SocketAddr::new(opts.bind, opts.grpc_port)).await?;
    let rest = bind(SocketAddr::new(opts.bind, opts.rest_port)).await?;
    let port = |l: &TcpListener| l.local_addr().map(|a| a.port()).unwrap_or(0);
    on_ready(Ready {
        grpc_port: port(&grpc),
        rest_port: port(&rest),
        pid: std::process::id(),
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
    });

    let svc = grpc::Service { core: core.clone() };
    let mut grpc_stop = stop_rx.clone();
    let limits = opts.net;
    let grpc_task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(net::H2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(net::H2_KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(net::H2_MAX_CONCURRENT_STREAMS)
            .add_service(
                crate::proto::serving::prediction_service_server::PredictionServiceServer::new(
                    svc.clone(),
                )
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(
                crate::proto::serving::model_service_server::ModelServiceServer::new(svc)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES),
            )
            // Our own accept loop: tonic's retries a failing accept at once (a spin on
            // EMFILE) and has no cap on connections or deadline on silent ones.
            .serve_with_incoming_shutdown(
                Acceptor::new(grpc, limits, "gRPC").into_stream(),
                async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                },
            ),
    );

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut rest_stop = stop_rx.clone();
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Slowloris: the whole head must arrive in time, however slowly it trickles.
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(net::H2_KEEPALIVE_INTERVAL))
        .keep_alive_timeout(net::H2_KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(net::H2_MAX_CONCURRENT_STREAMS);
    let mut rest_acceptor = Acceptor::new(rest, limits, "REST");
    loop {
        tokio::select! {
            stream = rest_acceptor.accept() => {
                let core = core.clone();
                let service = service_fn(move |req| {
                    let core = core.clone();
                    async move { Ok::<_, std::convert::Infallible>(rest::handle(core, req).await) }
                });
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = rest_stop.wait_for(|s| *s) => break,
        }
    }
    // Stop accepting (the listener drops here), let in-flight requests finish.
    drop(rest_acceptor);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(30), graceful.shutdown()).await;
    let _ = grpc_task.await;
    signals.abort();
    Ok(())
}

/// The model list from `--model_name` / `--model_base_path`.
pub fn single_model(name: &str, base_path: PathBuf) -> ModelEntry {
    ModelEntry {
        name: name.to_string(),
        base_path,
        policy: config::VersionPolicy::Latest(1),
        labels: BTreeMap::new(),
    }
}
