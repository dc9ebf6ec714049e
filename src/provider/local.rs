//! The local provider: the cluster is this machine; a serving resource is `replicas` detached
//! `tensorflow_model_server` processes (or `benchstack serve` when TF Serving is not on PATH)
//! on free loopback ports, with their files under `STATE/local/ADDR/GENERATION/`; a load test
//! runs the load generator here.
//!
//! Every serving process carries its generation directory in its command line
//! (`--model_config_file=…/GENERATION/models.config`), so processes started by an apply that
//! was killed before it recorded their pids are found again by scanning /proc.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Applied, Context, Inputs, Observation, Provider, ProviderError, slug};
use crate::environment::Environment;
use crate::manifest::{self, ModelPaths};
use crate::stack::types::{Address, ModelConfig, ResourceConfig, ServingConfig};
use crate::state::procinfo::{self, is_alive};
use crate::state::{Intent, ResourceState};

/// How long a serving process may take to report its models AVAILABLE.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGTERM, then this long to finish in-flight requests, then SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub struct LocalProvider {
    state_dir: PathBuf,
    /// The server to start instead of the PATH lookup (tests use the built benchstack).
    server: Option<(PathBuf, Vec<String>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    pub pid: u32,
    /// Clock ticks since boot (/proc/PID/stat), so a reused pid is noticed.
    pub start_time: Option<u64>,
    pub grpc_port: u16,
    pub rest_port: u16,
    pub log: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingObserved {
    /// The server binary (tensorflow_model_server or this benchstack).
    pub binary: String,
    pub directory: PathBuf,
    pub models: Vec<String>,
    pub replicas: Vec<Replica>,
    pub rest_endpoint: String,
    pub grpc_endpoint: String,
    pub rest_endpoints: Vec<String>,
    pub grpc_endpoints: Vec<String>,
    pub started_at: u64,
}

/// Recorded in the intent before any process starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServingIntent {
    directory: PathBuf,
    /// (grpc, rest) per replica.
    ports: Vec<(u16, u16)>,
    models: Vec<String>,
    binary: String,
}

impl LocalProvider {
    pub fn new(state_dir: &Path) -> Self {
        LocalProvider {
            state_dir: state_dir.to_path_buf(),
            server: None,
        }
    }

    /// Starts `program ARGS… FLAGS…` as the server, instead of tensorflow_model_server on
    /// PATH or this executable's `serve`.
    pub fn with_server(mut self, program: PathBuf, args: Vec<String>) -> Self {
        self.server = Some((program, args));
        self
    }

    fn start_serving(
        &self,
        ctx: &Context,
        address: &Address,
        s: &ServingConfig,
        inputs: &Inputs,
    ) -> Result<ServingObserved, ProviderError> {
        let models = super::serving_models(s, inputs)?;
        let files = manifest::render_serving(s, &models, ModelPaths::Local)
            .map_err(|e| ProviderError::other(e.to_string()))?;
        let generation = format!(
            "g{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            std::process::id()
        );
        let dir = self
            .state_dir
            .join("local")
            .join(slug(address))
            .join(generation);
        std::fs::create_dir_all(&dir)
            .map_err(ProviderError::io(format!("creating {}", dir.display())))?;
        for (name, text) in &files {
            if name != manifest::FLAGS {
                let p = dir.join(name);
                std::fs::write(&p, text)
                    .map_err(ProviderError::io(format!("writing {}", p.display())))?;
            }
        }
        let paths = manifest::FilePaths {
            models_config: dir.join(manifest::MODELS_CONFIG).display().to_string(),
            batching_parameters: dir
                .join(manifest::BATCHING_PARAMETERS)
                .display()
                .to_string(),
        };
        let flags =
            manifest::flag_list(s, &paths).map_err(|e| ProviderError::other(e.to_string()))?;
        let (program, pre_args) = match &self.server {
            Some(s) => s.clone(),
            None => server_binary()?,
        };
        let model_names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();

        // A port chosen free can be taken before the server binds it: try again with new ones.
        let mut last_err = None;
        for _attempt in 0..3 {
            let ports = free_port_pairs(s.replicas as usize)
                .map_err(ProviderError::io("choosing free loopback ports"))?;
            (ctx.note)(
                serde_json::to_value(ServingIntent {
                    directory: dir.clone(),
                    ports: ports.clone(),
                    models: model_names.clone(),
                    binary: program.display().to_string(),
                })
                .unwrap_or_default(),
            )?;
            let mut replicas = Vec::new();
            let mut failed = None;
            for (i, (grpc, rest)) in ports.iter().enumerate() {
                let log = dir.join(format!("replica-{}.log", i + 1));
                match spawn_server(&program, &pre_args, &flags, *grpc, *rest, &log) {
                    Ok(pid) => replicas.push(Replica {
                        pid,
                        start_time: procinfo::start_time(pid),
                        grpc_port: *grpc,
                        rest_port: *rest,
                        log,
                    }),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if failed.is_none() {
                (ctx.progress)(format!(
                    "waiting for {} replica(s) to report AVAILABLE",
                    replicas.len()
                ));
                for r in &replicas {
                    if let Err(e) = wait_ready(r, &model_names, READY_TIMEOUT) {
                        failed = Some(e);
                        break;
                    }
                }
            }
            match failed {
                None => {
                    return Ok(observed(&program, &dir, model_names, replicas));
                }
                Some(e) => {
                    for r in &replicas {
                        stop_process(r.pid, r.start_time, Duration::from_secs(2));
                    }
                    let retry = replicas.iter().any(|r| log_tail(&r.log).contains("in use"));
                    last_err = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(last_err.unwrap_or_else(|| ProviderError::other("serving did not start")))
    }

    fn stop_serving(&self, o: &ServingObserved) {
        for r in &o.replicas {
            stop_process(r.pid, r.start_time, STOP_GRACE);
        }
        // Anything else started from that directory (e.g. by an interrupted apply).
        for pid in procinfo::find_by_arg(&o.directory.display().to_string()) {
            stop_process(pid, procinfo::start_time(pid), STOP_GRACE);
        }
        let _ = std::fs::remove_dir_all(&o.directory);
    }
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn read(&self, _ctx: &Context, prior: &ResourceState) -> Result<Observation, ProviderError> {
        match &prior.config {
            ResourceConfig::Cluster(_) => Ok(Observation::Present(
                serde_json::to_value(Environment::detect()).unwrap_or_default(),
            )),
            ResourceConfig::Model(m) => {
                if m.base_path.is_dir() {
                    Ok(Observation::Present(prior.observed.clone()))
                } else {
                    Ok(Observation::Gone(format!(
                        "the model base path {} no longer exists",
                        m.base_path.display()
                    )))
                }
            }
            ResourceConfig::Serving(_) => {
                let o: ServingObserved = serde_json::from_value(prior.observed.clone())
                    .map_err(|e| ProviderError::other(format!("unreadable observed state: {e}")))?;
                let mut dead = Vec::new();
                let mut unhealthy = Vec::new();
                for (i, r) in o.replicas.iter().enumerate() {
                    if !is_alive(r.pid, r.start_time) {
                        dead.push(format!("replica {} (pid {})", i + 1, r.pid));
                    } else if !models_available(r.rest_port, &o.models, Duration::from_secs(2)) {
                        unhealthy.push(format!("replica {} (pid {})", i + 1, r.pid));
                    }
                }
                if dead.len() == o.replicas.len() {
                    Ok(Observation::Gone(format!(
                        "{} no longer running",
                        if dead.len() == 1 {
                            format!("{} is", dead[0])
                        } else {
                            format!("{} are", dead.join(", "))
                        }
                    )))
                } else if !dead.is_empty() {
                    Ok(Observation::Drifted(format!("{} exited", dead.join(", "))))
                } else if !unhealthy.is_empty() {
                    // Running, but its status could not be read (busy, loading): a failure to
                    // read is never a reason to replace it.
                    Ok(Observation::Unsettled {
                        observed: prior.observed.clone(),
                        warning: format!(
                            "{} did not report its models AVAILABLE in time",
                            unhealthy.join(", ")
                        ),
                    })
                } else {
                    Ok(Observation::Present(prior.observed.clone()))
                }
            }
            // A load test's results stand; there is nothing running to check.
            ResourceConfig::Loadtest(_) => Ok(Observation::Present(prior.observed.clone())),
        }
    }

    fn create(
        &self,
        ctx: &Context,
        address: &Address,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        match config {
            ResourceConfig::Cluster(_) => Ok(Applied {
                observed: serde_json::to_value(Environment::detect()).unwrap_or_default(),
                run: None,
            }),
            ResourceConfig::Model(m) => Ok(Applied {
                observed: serde_json::json!({ "versions": model_versions(m)? }),
                run: None,
            }),
            ResourceConfig::Serving(s) => {
                let o = self.start_serving(ctx, address, s, inputs)?;
                Ok(Applied {
                    observed: serde_json::to_value(o).unwrap_or_default(),
                    run: None,
                })
            }
            ResourceConfig::Loadtest(l) => super::local_loadtest::run(ctx, l, inputs),
        }
    }

    fn update(
        &self,
        ctx: &Context,
        prior: &ResourceState,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        match config {
            ResourceConfig::Serving(s) => {
                // Start the new generation first, then stop the old one: the endpoints change,
                // but the model is served throughout.
                let new = self.start_serving(ctx, &prior.address, s, inputs)?;
                if let Ok(old) = serde_json::from_value::<ServingObserved>(prior.observed.clone()) {
                    self.stop_serving(&old);
                }
                Ok(Applied {
                    observed: serde_json::to_value(new).unwrap_or_default(),
                    run: None,
                })
            }
            other => self.create(ctx, &prior.address, other, inputs),
        }
    }

    fn delete(&self, _ctx: &Context, prior: &ResourceState) -> Result<(), ProviderError> {
        if let ResourceConfig::Serving(_) = prior.config
            && let Ok(o) = serde_json::from_value::<ServingObserved>(prior.observed.clone())
        {
            self.stop_serving(&o);
        }
        Ok(())
    }

    fn recover(
        &self,
        _ctx: &Context,
        intent: &Intent,
        prior: Option<&ResourceState>,
        clean_up: bool,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        let Some(ResourceConfig::Serving(_)) = &intent.config else {
            // Clusters and models leave nothing behind; an interrupted load test is re-run.
            if intent.operation == "delete"
                && clean_up
                && let Some(p) = prior
            {
                self.delete(_ctx, p)?;
            }
            return Ok(None);
        };
        let prior_observed =
            prior.and_then(|p| serde_json::from_value::<ServingObserved>(p.observed.clone()).ok());
        if intent.operation == "delete" {
            if clean_up && let Some(o) = &prior_observed {
                self.stop_serving(o);
            }
            return Ok(None);
        }
        let Ok(data) = serde_json::from_value::<ServingIntent>(intent.data.clone()) else {
            // The provider never got as far as choosing ports: nothing was started.
            return Ok(None);
        };
        let dir = data.directory.display().to_string();
        let pids = procinfo::find_by_arg(&dir);
        let mut replicas = Vec::new();
        for (i, (grpc, rest)) in data.ports.iter().enumerate() {
            let flag = format!("--rest_api_port={rest}");
            let found = pids
                .iter()
                .copied()
                .find(|pid| procinfo::cmdline(*pid).is_some_and(|args| args.contains(&flag)));
            match found {
                Some(pid) if models_available(*rest, &data.models, Duration::from_secs(2)) => {
                    replicas.push(Replica {
                        pid,
                        start_time: procinfo::start_time(pid),
                        grpc_port: *grpc,
                        rest_port: *rest,
                        log: data.directory.join(format!("replica-{}.log", i + 1)),
                    })
                }
                _ => break,
            }
        }
        let complete = replicas.len() == data.ports.len() && !replicas.is_empty();
        if complete {
            let o = observed(
                Path::new(&data.binary),
                &data.directory,
                data.models,
                replicas,
            );
            // An interrupted update may have left the previous generation running.
            if clean_up
                && let Some(old) = &prior_observed
                && old.directory != o.directory
            {
                self.stop_serving(old);
            }
            return Ok(Some(serde_json::to_value(o).unwrap_or_default()));
        }
        if clean_up {
            for pid in pids {
                stop_process(pid, procinfo::start_time(pid), STOP_GRACE);
            }
            let _ = std::fs::remove_dir_all(&data.directory);
        }
        Ok(None)
    }
}

fn observed(
    program: &Path,
    dir: &Path,
    models: Vec<String>,
    replicas: Vec<Replica>,
) -> ServingObserved {
    let rest_endpoints: Vec<String> = replicas
        .iter()
        .map(|r| format!("http://127.0.0.1:{}", r.rest_port))
        .collect();
    let grpc_endpoints: Vec<String> = replicas
        .iter()
        .map(|r| format!("127.0.0.1:{}", r.grpc_port))
        .collect();
    ServingObserved {
        binary: program.display().to_string(),
        directory: dir.to_path_buf(),
        models,
        rest_endpoint: rest_endpoints.first().cloned().unwrap_or_default(),
        grpc_endpoint: grpc_endpoints.first().cloned().unwrap_or_default(),
        rest_endpoints,
        grpc_endpoints,
        replicas,
        started_at: procinfo::now_unix(),
    }
}

/// The numeric version folders under a model's base path (at least one is required).
fn model_versions(m: &ModelConfig) -> Result<Vec<u64>, ProviderError> {
    let entries = std::fs::read_dir(&m.base_path).map_err(ProviderError::io(format!(
        "model `{}`: reading the base path {}",
        m.name,
        m.base_path.display()
    )))?;
    let mut versions: Vec<u64> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            e.file_type().ok()?.is_dir().then_some(())?;
            e.file_name().to_str()?.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    if versions.is_empty() {
        return Err(ProviderError::other(format!(
            "model `{}`: {} holds no numeric version folder (expected e.g. {}/1/saved_model.pb)",
            m.name,
            m.base_path.display(),
            m.base_path.display()
        )));
    }
    Ok(versions)
}

/// `tensorflow_model_server` if it is on PATH, else this binary's `serve`.
fn server_binary() -> Result<(PathBuf, Vec<String>), ProviderError> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("tensorflow_model_server");
            if p.is_file() {
                return Ok((p, Vec::new()));
            }
        }
    }
    let exe =
        std::env::current_exe().map_err(ProviderError::io("finding the benchstack binary"))?;
    Ok((exe, vec!["serve".to_string()]))
}

fn spawn_server(
    program: &Path,
    pre_args: &[String],
    flags: &[String],
    grpc: u16,
    rest: u16,
    log: &Path,
) -> Result<u32, ProviderError> {
    let out = std::fs::File::create(log)
        .map_err(ProviderError::io(format!("creating {}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(ProviderError::io("opening the log"))?;
    let mut cmd = Command::new(program);
    cmd.args(pre_args)
        .arg(format!("--port={grpc}"))
        .arg(format!("--rest_api_port={rest}"))
        .args(flags)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // Its own session: it outlives this command and a Ctrl-C at the terminal does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(ProviderError::io(format!("starting {}", program.display())))?;
    Ok(child.id())
}

/// Two distinct free loopback ports per replica (gRPC, REST), all distinct.
fn free_port_pairs(n: usize) -> std::io::Result<Vec<(u16, u16)>> {
    // Hold every listener until all are chosen so no port is handed out twice.
    let listeners: Vec<TcpListener> = (0..n * 2)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok(ports.chunks(2).map(|c| (c[0], c[1])).collect())
}

fn wait_ready(r: &Replica, models: &[String], timeout: Duration) -> Result<(), ProviderError> {
    let deadline = Instant::now() + timeout;
    loop {
        if !is_alive(r.pid, r.start_time) {
            return Err(ProviderError::other(format!(
                "the server (pid {}) exited while starting; the end of {}:\n{}",
                r.pid,
                r.log.display(),
                log_tail(&r.log)
            )));
        }
        if models_available(r.rest_port, models, Duration::from_secs(1)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ProviderError::other(format!(
                "the server (pid {}) did not report {} AVAILABLE within {}s; see {}",
                r.pid,
                models.join(", "),
                timeout.as_secs(),
                r.log.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// True when `GET /v1/models/NAME` reports a version AVAILABLE for every model.
pub fn models_available(rest_port: u16, models: &[String], timeout: Duration) -> bool {
    models.iter().all(|m| {
        let Ok((200, body)) = http_get(rest_port, &format!("/v1/models/{m}"), timeout) else {
            return false;
        };
        serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v["model_version_status"]
                    .as_array()
                    .map(|a| a.iter().any(|s| s["state"] == "AVAILABLE"))
            })
            .unwrap_or(false)
    })
}

/// A minimal blocking HTTP/1.1 GET on loopback (readiness checks only).
fn http_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // A chunked body: good enough to take the first chunk's JSON for a status check.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or(body)
    } else {
        body
    };
    Ok((status, body))
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Only if the pid is still the recorded process.
pub fn stop_process(pid: u32, start_time: Option<u64>, grace: Duration) {
    if !is_alive(pid, start_time) {
        return;
    }
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(pid);
        if !is_alive(pid, start_time) {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    if is_alive(pid, start_time) {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        for _ in 0..200 {
            reap(pid);
            if !is_alive(pid, start_time) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Collects the exit status if `pid` is our own child (so it does not linger as a zombie).
fn reap(pid: u32) {
    let mut status = 0;
    unsafe {
        libc::waitpid(pid as i32, &mut status, libc::WNOHANG);
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Cancellation is checked between steps only: a started server is always waited for.
pub fn cancelled(ctx: &Context) -> bool {
    ctx.cancel.load(Ordering::SeqCst)
}
