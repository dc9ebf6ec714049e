//! The local provider: the cluster is this machine; a serving resource is `replicas` detached
//! `tensorflow_model_server` processes (or `benchstack serve` when TF Serving is not on PATH)
//! on free loopback ports, with their files under `STATE/local/ADDR/GENERATION/`; a load test
//! runs the load generator here.
//!
//! Every process started is noted in the intent (pid and start time) as soon as it runs, so an
//! apply killed before it recorded the resource leaves enough to find exactly those
//! processes again; nothing is ever matched by its command line. A directory is removed only
//! when it lies under `STATE/local/` and carries the marker file benchstack writes into the
//! directories it makes: a tampered or stale state cannot make it delete anything else.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Applied, Context, Inputs, Observation, Provider, ProviderError, slug};
use crate::environment::Environment;
use crate::manifest::{self, ModelPaths};
use crate::state::observed::{LocalClusterObserved, LocalModelObserved};
use crate::state::procinfo::{self, is_alive};
use crate::state::{Intent, ResourceState};
use crate::vocab::resources::{Address, ModelConfig, ResourceConfig, ServingConfig};

/// How long a serving process may take to report its models AVAILABLE.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// SIGTERM, then this long to finish in-flight requests, then SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Written into every working directory benchstack makes; only such directories are removed.
pub const OWNED_MARKER: &str = ".benchstack-owned";
/// A model status reply larger than this is not a TF Serving status.
const MAX_STATUS_BODY: usize = 1 << 20;

pub struct LocalProvider {
    state_dir: PathBuf,
    /// The server to start instead of the PATH lookup (tests use the built benchstack).
    server: Option<(PathBuf, Vec<String>)>,
}

pub use crate::state::observed::{LocalServingObserved as ServingObserved, Replica};

/// Recorded in the intent before any process starts, and again as each one starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServingIntent {
    directory: PathBuf,
    /// (grpc, rest) per replica.
    ports: Vec<(u16, u16)>,
    models: Vec<String>,
    binary: String,
    /// The processes started so far (pid and start time): what recovery may adopt or stop.
    #[serde(default)]
    replicas: Vec<Replica>,
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
        // Render once: the plan's files are written as the reviewer saw them.
        let files = if inputs.rendered.is_empty() {
            manifest::render_serving(s, &models, ModelPaths::Local)
                .map_err(|e| ProviderError::other(e.to_string()))?
        } else {
            inputs.rendered.clone()
        };
        let generation = format!(
            "g{}-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0),
            std::process::id()
        );
        // Absolute, so the directory recorded in the state means the same from anywhere.
        let dir = self.local_root()?.join(slug(address)).join(generation);
        std::fs::create_dir_all(&dir)
            .map_err(ProviderError::io(format!("creating {}", dir.display())))?;
        let marker = dir.join(OWNED_MARKER);
        std::fs::write(&marker, format!("made by benchstack for {address}\n"))
            .map_err(ProviderError::io(format!("writing {}", marker.display())))?;
        for (name, text) in &files {
            if name != manifest::FLAGS {
                let p = dir.join(name);
                std::fs::write(&p, text)
                    .map_err(ProviderError::io(format!("writing {}", p.display())))?;
            }
        }
        let paths = manifest::FilePaths::in_dir(&dir.display().to_string());
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
            let mut intent = ServingIntent {
                directory: dir.clone(),
                ports: ports.clone(),
                models: model_names.clone(),
                binary: program.display().to_string(),
                replicas: Vec::new(),
            };
            (ctx.note)(serde_json::to_value(&intent).unwrap_or_default())?;
            let mut replicas = Vec::new();
            let mut failed = None;
            for (i, (grpc, rest)) in ports.iter().enumerate() {
                let log = dir.join(format!("replica-{}.log", i + 1));
                match spawn_server(&program, &pre_args, &flags, *grpc, *rest, &log) {
                    Ok(pid) => {
                        replicas.push(Replica {
                            pid,
                            start_time: procinfo::start_time(pid),
                            grpc_port: *grpc,
                            rest_port: *rest,
                            log,
                        });
                        intent.replicas = replicas.clone();
                        if let Err(e) =
                            (ctx.note)(serde_json::to_value(&intent).unwrap_or_default())
                        {
                            failed = Some(e);
                            break;
                        }
                    }
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
        self.remove_dir(ctx, &dir);
        Err(last_err.unwrap_or_else(|| ProviderError::other("serving did not start")))
    }

    /// `STATE/local`, absolute.
    fn local_root(&self) -> Result<PathBuf, ProviderError> {
        std::path::absolute(self.state_dir.join("local")).map_err(ProviderError::io(format!(
            "resolving {}",
            self.state_dir.join("local").display()
        )))
    }

    /// Stops the recorded processes (those still the same processes: pid and start time) and
    /// removes the working directory if it is benchstack's own.
    fn stop_serving(&self, ctx: &Context, o: &ServingObserved) {
        for r in &o.replicas {
            stop_process(r.pid, r.start_time, STOP_GRACE);
        }
        self.remove_dir(ctx, &o.directory);
    }

    /// Removes a working directory taken from the state, if [`owned_dir`] allows; otherwise
    /// leaves it and says why (through progress: providers do not print).
    fn remove_dir(&self, ctx: &Context, dir: &Path) {
        let root = match self.local_root() {
            Ok(r) => r,
            Err(e) => {
                (ctx.progress)(format!("warning: left {} in place: {e}", dir.display()));
                return;
            }
        };
        match owned_dir(&root, dir) {
            Ok(Some(d)) => {
                if let Err(e) = std::fs::remove_dir_all(&d) {
                    (ctx.progress)(format!("warning: could not remove {}: {e}", d.display()));
                }
            }
            Ok(None) => {}
            Err(why) => {
                (ctx.progress)(format!("warning: left {} in place: {why}", dir.display()));
            }
        }
    }
}

/// The directory to remove, if `dir` (from the state, so not trusted) is one benchstack made:
/// absolute, without `..`, strictly inside `root` once symlinks are resolved, and carrying
/// [`OWNED_MARKER`]. Ok(None) when it no longer exists; Err(why) when it must be left alone.
pub fn owned_dir(root: &Path, dir: &Path) -> Result<Option<PathBuf>, String> {
    if dir.as_os_str().is_empty() {
        return Err("the recorded directory is empty".into());
    }
    if !dir.is_absolute() {
        return Err("the recorded directory is not an absolute path".into());
    }
    if dir.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err("the recorded directory contains `..`".into());
    }
    if !dir.exists() {
        return Ok(None);
    }
    let real = std::fs::canonicalize(dir).map_err(|e| format!("cannot resolve it: {e}"))?;
    let real_root = std::fs::canonicalize(root)
        .map_err(|e| format!("it is not inside {} ({e})", root.display()))?;
    if real == real_root || !real.starts_with(&real_root) {
        return Err(format!(
            "it is not a working directory inside {}",
            real_root.display()
        ));
    }
    if !real.join(OWNED_MARKER).is_file() {
        return Err(format!(
            "it has no {OWNED_MARKER} marker (made by an older benchstack, or not by benchstack); remove it by hand if it is no longer needed"
        ));
    }
    Ok(Some(real))
}

/// Images are built by the cloudbuild provider, never on this machine.
fn not_local() -> ProviderError {
    ProviderError::invalid(
        "the local provider does not build images: an image block is built by the cloudbuild provider",
    )
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn read(&self, _ctx: &Context, prior: &ResourceState) -> Result<Observation, ProviderError> {
        match &prior.config {
            ResourceConfig::Cluster(_) => Ok(Observation::Present(machine())),
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
            ResourceConfig::Image(_) => Err(not_local()),
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
                observed: machine(),
                run: None,
            }),
            ResourceConfig::Model(m) => Ok(Applied {
                observed: serde_json::to_value(LocalModelObserved {
                    versions: model_versions(m)?,
                })
                .unwrap_or_default(),
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
            ResourceConfig::Image(_) => Err(not_local()),
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
                    self.stop_serving(ctx, &old);
                }
                Ok(Applied {
                    observed: serde_json::to_value(new).unwrap_or_default(),
                    run: None,
                })
            }
            other => self.create(ctx, &prior.address, other, inputs),
        }
    }

    fn delete(&self, ctx: &Context, prior: &ResourceState) -> Result<(), ProviderError> {
        if let ResourceConfig::Serving(_) = prior.config
            && let Ok(o) = serde_json::from_value::<ServingObserved>(prior.observed.clone())
        {
            self.stop_serving(ctx, &o);
        }
        Ok(())
    }

    fn recover(
        &self,
        ctx: &Context,
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
                self.delete(ctx, p)?;
            }
            return Ok(None);
        };
        let prior_observed =
            prior.and_then(|p| serde_json::from_value::<ServingObserved>(p.observed.clone()).ok());
        if intent.operation == "delete" {
            if clean_up && let Some(o) = &prior_observed {
                self.stop_serving(ctx, o);
            }
            return Ok(None);
        }
        let Ok(data) = serde_json::from_value::<ServingIntent>(intent.data.clone()) else {
            // The provider never got as far as choosing ports: nothing was started.
            return Ok(None);
        };
        // Exactly the processes the interrupted call noted, if they are still those processes.
        let mut replicas = Vec::new();
        for (grpc, rest) in &data.ports {
            let found = data.replicas.iter().find(|r| {
                r.rest_port == *rest && r.grpc_port == *grpc && is_alive(r.pid, r.start_time)
            });
            match found {
                Some(r) if models_available(*rest, &data.models, Duration::from_secs(2)) => {
                    replicas.push(r.clone())
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
                self.stop_serving(ctx, old);
            }
            return Ok(Some(serde_json::to_value(o).unwrap_or_default()));
        }
        if clean_up {
            for r in &data.replicas {
                stop_process(r.pid, r.start_time, STOP_GRACE);
            }
            self.remove_dir(ctx, &data.directory);
        }
        Ok(None)
    }
}

/// A local cluster's observed state: this machine.
fn machine() -> serde_json::Value {
    serde_json::to_value(LocalClusterObserved::from(&Environment::detect())).unwrap_or_default()
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

/// A blocking HTTP/1.1 GET on loopback through hyper (readiness checks only): the whole
/// exchange within `timeout`, the body at most [`MAX_STATUS_BODY`] bytes.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Result<(u16, String), String> {
    let run = || -> Result<(u16, String), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting an HTTP client runtime: {e}"))?;
        rt.block_on(async {
            tokio::time::timeout(timeout, get(port, path))
                .await
                .map_err(|_| format!("no answer within {}ms", timeout.as_millis()))?
        })
    };
    // block_on panics inside a runtime: from async code, run on a thread of its own.
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(run)
                .join()
                .unwrap_or_else(|_| Err("the HTTP client thread panicked".into()))
        })
    } else {
        run()
    }
}

async fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (status, body) =
        crate::loadgen::http_get(addr, &format!("127.0.0.1:{port}"), path, MAX_STATUS_BODY).await?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn only_a_marked_directory_inside_the_root_is_owned() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("state/local");
        let owned = root.join("serving.tf/g1");
        std::fs::create_dir_all(&owned).unwrap();
        std::fs::write(owned.join(OWNED_MARKER), "").unwrap();
        let unmarked = root.join("serving.tf/g0");
        std::fs::create_dir_all(&unmarked).unwrap();

        assert_eq!(
            owned_dir(&root, &owned).unwrap(),
            Some(std::fs::canonicalize(&owned).unwrap())
        );
        assert_eq!(
            owned_dir(&root, &root.join("serving.tf/gone")).unwrap(),
            None
        );
        for refused in [
            PathBuf::new(),
            PathBuf::from(".."),
            PathBuf::from("/"),
            PathBuf::from("state/local/serving.tf/g1"),
            root.join("serving.tf/g1/../g1"),
            root.clone(),
            unmarked.clone(),
            tmp.path().to_path_buf(),
        ] {
            assert!(owned_dir(&root, &refused).is_err(), "{refused:?}");
        }
    }

    /// Serves one connection with `reply`, or holds it silently when None.
    fn one_shot(reply: Option<Vec<u8>>) -> (u16, std::thread::JoinHandle<()>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            match reply {
                Some(r) => {
                    let _ = s.write_all(&r);
                }
                None => std::thread::sleep(Duration::from_millis(1500)),
            }
        });
        (port, t)
    }

    #[test]
    fn the_status_get_reads_a_reply_and_refuses_an_oversized_or_missing_one() {
        let body = r#"{"model_version_status":[{"version":"1","state":"AVAILABLE"}]}"#;
        let ok = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let (port, t) = one_shot(Some(ok.into_bytes()));
        assert!(models_available(
            port,
            &["m".into()],
            Duration::from_secs(5)
        ));
        t.join().unwrap();

        let big = MAX_STATUS_BODY + 1;
        let mut reply =
            format!("HTTP/1.1 200 OK\r\ncontent-length: {big}\r\nconnection: close\r\n\r\n")
                .into_bytes();
        reply.extend(std::iter::repeat_n(b' ', big));
        let (port, t) = one_shot(Some(reply));
        let err = http_get(port, "/v1/models/m", Duration::from_secs(5)).unwrap_err();
        assert!(err.contains("reading the reply"), "{err}");
        t.join().unwrap();

        let (port, t) = one_shot(None);
        let err = http_get(port, "/v1/models/m", Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("no answer within"), "{err}");
        t.join().unwrap();
    }
}
