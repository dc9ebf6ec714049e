//! A loopback Kubernetes API server for tests: the real paths, methods and JSON shapes that
//! kube sends (server-side apply, create, get, get /status, list with labelSelector, delete,
//! pod logs, `Status` errors), with in-memory objects and a little controller behaviour:
//! Deployments become ready after a few polls, LoadBalancer Services get an address, and a
//! Job's pods are run for real as processes on this machine (the worker program with the
//! container's args and env plus `JOB_COMPLETION_INDEX`), their output kept as the pod log.
//! Include with `#[path = "support/k8s_emulator.rs"] mod k8s_emulator;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

pub const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";

/// How the emulated cluster behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// A Deployment reports its rollout complete on the Nth read after a spec change.
    pub ready_after_polls: u32,
    /// A LoadBalancer Service gets its address on the Nth read.
    pub address_after_polls: u32,
    /// The address LoadBalancer Services get.
    pub load_balancer_ip: String,
    /// What a Job's pods run (the container's `args` are passed to it).
    pub worker_program: PathBuf,
}

impl Options {
    pub fn new(worker_program: impl Into<PathBuf>) -> Self {
        Options {
            ready_after_polls: 2,
            address_after_polls: 2,
            load_balancer_ip: "127.0.0.1".into(),
            worker_program: worker_program.into(),
        }
    }
}

/// One request the emulator answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query parameters.
    pub query: BTreeMap<String, String>,
    pub content_type: String,
    pub body: String,
    pub status: u16,
}

/// Where a pod of a Job ran, kept after the pod is deleted.
#[derive(Debug, Clone)]
pub struct PodRecord {
    pub job: String,
    pub pod: String,
    pub index: u32,
    pub log: PathBuf,
}

impl PodRecord {
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

type Key = (String, String, String);

struct State {
    opts: Options,
    objects: BTreeMap<Key, Value>,
    /// Reads since the last spec change (Deployments) or since creation (Services).
    polls: HashMap<Key, u32>,
    never_ready: HashSet<String>,
    /// Worker index → the log line a failing worker prints before it exits 1.
    failing_workers: HashMap<u32, String>,
    /// Worker indexes whose pod object disappears once it succeeded (garbage-collected or
    /// deleted by hand); the Job still counts it, as the real Job controller does.
    vanishing_workers: HashSet<u32>,
    /// Job → succeeded pods whose objects are gone.
    vanished_succeeded: HashMap<String, i64>,
    /// (resource, name) → how many more GETs of it answer 503 (u32::MAX: all).
    unavailable_gets: HashMap<(String, String), u32>,
    requests: Vec<Recorded>,
    pods: Vec<PodRecord>,
    children: HashMap<String, Arc<Mutex<Child>>>,
    counter: u64,
    log_dir: tempfile::TempDir,
}

pub struct K8sEmulator {
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn lock(state: &Arc<Mutex<State>>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl K8sEmulator {
    /// An emulator whose LoadBalancer address is a real `benchstack serve` of the example
    /// model (what worker pods send to); both stop on drop.
    pub fn with_stand_in(program: &Path, model_base_path: &Path) -> (K8sEmulator, StandIn) {
        let stand_in = StandIn::start(program, "regression", model_base_path);
        let mut opts = Options::new(program);
        opts.load_balancer_ip = stand_in.ip.clone();
        (K8sEmulator::start(opts), stand_in)
    }

    pub fn start(opts: Options) -> K8sEmulator {
        let state = Arc::new(Mutex::new(State {
            opts,
            objects: BTreeMap::new(),
            polls: HashMap::new(),
            never_ready: HashSet::new(),
            failing_workers: HashMap::new(),
            vanishing_workers: HashSet::new(),
            vanished_succeeded: HashMap::new(),
            unavailable_gets: HashMap::new(),
            requests: Vec::new(),
            pods: Vec::new(),
            children: HashMap::new(),
            counter: 0,
            log_dir: tempfile::tempdir().expect("a directory for pod logs"),
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let server_state = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("emulator runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                addr_tx
                    .send(listener.local_addr().expect("local addr"))
                    .expect("send addr");
                let mut shutdown_rx = shutdown_rx;
                loop {
                    tokio::select! {
                        _ = &mut shutdown_rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = server_state.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| {
                                    let state = state.clone();
                                    async move { Ok::<_, Infallible>(handle(state, req).await) }
                                });
                                let _ = http1::Builder::new()
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the emulator did not start");
        K8sEmulator {
            url: format!("http://{addr}"),
            addr,
            state,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.state).requests.len()
    }

    /// The next `times` GETs of `resource`/`name` (u32::MAX: every one) are answered 503 with
    /// a `Status`, as an overloaded or restarting API server answers.
    pub fn unavailable_gets(&self, resource: &str, name: &str, times: u32) {
        lock(&self.state)
            .unavailable_gets
            .insert((resource.to_string(), name.to_string()), times);
    }

    /// The message of those 503s.
    pub const UNAVAILABLE_MESSAGE: &'static str =
        "the server is currently unable to handle the request";

    /// The Deployment `name` never becomes ready (its progress deadline is exceeded).
    pub fn never_ready(&self, deployment: &str) {
        lock(&self.state).never_ready.insert(deployment.to_string());
    }

    /// Pods with this completion index print `log_line` and exit 1 instead of running the
    /// worker program.
    pub fn fail_worker(&self, index: u32, log_line: &str) {
        lock(&self.state)
            .failing_workers
            .insert(index, log_line.to_string());
    }

    /// Pods with this completion index vanish once they succeeded, while the Job keeps
    /// counting them as succeeded.
    pub fn vanish_worker(&self, index: u32) {
        lock(&self.state).vanishing_workers.insert(index);
    }

    pub fn set_load_balancer_ip(&self, ip: &str) {
        lock(&self.state).opts.load_balancer_ip = ip.to_string();
    }

    /// `kubectl scale`: another field manager sets the Deployment's replicas.
    pub fn scale(&self, namespace: &str, deployment: &str, replicas: i64) {
        let mut s = lock(&self.state);
        let key = key("deployments", namespace, deployment);
        let state = &mut *s;
        let Some(obj) = state.objects.get_mut(&key) else {
            panic!("no Deployment {namespace}/{deployment} to scale")
        };
        obj["spec"]["replicas"] = json!(replicas);
        bump_generation(obj);
        let managed = obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut managed: Vec<Value> = managed
            .into_iter()
            .filter(|m| m["manager"] != "kubectl")
            .collect();
        managed.push(json!({"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1", "subresource": "scale"}));
        obj["metadata"]["managedFields"] = json!(managed);
        s.counter += 1;
        let rv = s.counter;
        if let Some(obj) = s.objects.get_mut(&key) {
            obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
        s.polls.insert(key, 0);
    }

    /// Removes an object as if someone deleted it with kubectl.
    pub fn remove(&self, resource: &str, namespace: &str, name: &str) -> bool {
        lock(&self.state)
            .objects
            .remove(&key(resource, namespace, name))
            .is_some()
    }

    /// Puts an object back as it was (e.g. after `remove`).
    pub fn insert(&self, resource: &str, namespace: &str, name: &str, object: Value) {
        lock(&self.state)
            .objects
            .insert(key(resource, namespace, name), object);
    }

    /// The stored object (`resource` is the plural path segment: `deployments`, `jobs`, …;
    /// namespace `""` for namespaces themselves).
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        lock(&self.state)
            .objects
            .get(&key(resource, namespace, name))
            .cloned()
    }

    pub fn names(&self, resource: &str) -> Vec<String> {
        lock(&self.state)
            .objects
            .keys()
            .filter(|k| k.0 == resource)
            .map(|k| k.2.clone())
            .collect()
    }

    /// Every pod every Job had, in creation order, also after the Job was deleted.
    pub fn pod_records(&self) -> Vec<PodRecord> {
        lock(&self.state).pods.clone()
    }

    /// Processes of pods still running.
    pub fn running_processes(&self) -> usize {
        let s = lock(&self.state);
        s.children
            .values()
            .filter(|c| matches!(c.lock().map(|mut c| c.try_wait()), Ok(Ok(None))))
            .count()
    }
}

impl Drop for K8sEmulator {
    fn drop(&mut self) {
        let children: Vec<Arc<Mutex<Child>>> =
            lock(&self.state).children.drain().map(|(_, c)| c).collect();
        for c in children {
            if let Ok(mut c) = c.lock() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn key(resource: &str, namespace: &str, name: &str) -> Key {
    (resource.into(), namespace.into(), name.into())
}

fn bump_generation(obj: &mut Value) {
    let g = obj["metadata"]["generation"].as_i64().unwrap_or(0);
    obj["metadata"]["generation"] = json!(g + 1);
}

/// The apiVersion and list kind of a resource.
fn kind_of(resource: &str) -> (&'static str, &'static str) {
    match resource {
        "namespaces" => ("v1", "Namespace"),
        "configmaps" => ("v1", "ConfigMap"),
        "services" => ("v1", "Service"),
        "pods" => ("v1", "Pod"),
        "deployments" => ("apps/v1", "Deployment"),
        "jobs" => ("batch/v1", "Job"),
        _ => ("v1", "Unknown"),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// A parsed API path.
#[derive(Debug)]
struct Route {
    resource: String,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match segs.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let r = |res: &str, ns: &str, name: Option<&&str>, sub: Option<&&str>| Route {
        resource: res.to_string(),
        namespace: ns.to_string(),
        name: name.map(|s| s.to_string()),
        sub: sub.map(|s| s.to_string()),
    };
    Some(match rest {
        ["namespaces"] => r("namespaces", "", None, None),
        ["namespaces", name] => r("namespaces", "", Some(name), None),
        ["namespaces", ns, res] => r(res, ns, None, None),
        ["namespaces", ns, res, name] => r(res, ns, Some(name), None),
        ["namespaces", ns, res, name, sub] => r(res, ns, Some(name), Some(sub)),
        [res] => r(res, "", None, None),
        _ => return None,
    })
}

fn status_error(code: u16, reason: &str, message: String, kind: &str, name: &str) -> Reply {
    Reply::json(
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": {"name": name, "kind": kind},
            "code": code,
        }),
    )
}

fn not_found(resource: &str, name: &str) -> Reply {
    let singular = resource.trim_end_matches('s');
    status_error(
        404,
        "NotFound",
        format!("{resource} \"{name}\" not found"),
        singular,
        name,
    )
}

struct Reply {
    code: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn json(code: u16, v: Value) -> Reply {
        Reply {
            code,
            content_type: "application/json",
            body: v.to_string(),
        }
    }
}

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query().unwrap_or(""));
    let content_type = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(_) => String::new(),
    };
    let reply = dispatch(&state, &method, &path, &query, &content_type, &body);
    lock(&state).requests.push(Recorded {
        method,
        path,
        query,
        content_type,
        body,
        status: reply.code,
    });
    Response::builder()
        .status(reply.code)
        .header("content-type", reply.content_type)
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn dispatch(
    state: &Arc<Mutex<State>>,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &str,
) -> Reply {
    let Some(r) = route(path) else {
        return status_error(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            "",
            "",
        );
    };
    if method == "GET"
        && let Some(name) = r.name.as_deref()
    {
        let mut s = lock(state);
        if let Some(left) = s
            .unavailable_gets
            .get_mut(&(r.resource.clone(), name.to_string()))
            && *left > 0
        {
            if *left != u32::MAX {
                *left -= 1;
            }
            return status_error(
                503,
                "ServiceUnavailable",
                K8sEmulator::UNAVAILABLE_MESSAGE.into(),
                &r.resource,
                name,
            );
        }
    }
    match (method, r.name.as_deref(), r.sub.as_deref()) {
        ("GET", None, None) => list(state, &r, query),
        ("GET", Some(name), None | Some("status")) => get(state, &r, name),
        ("GET", Some(name), Some("log")) if r.resource == "pods" => pod_log(state, &r, name),
        ("PATCH", Some(name), None) => apply(state, &r, name, query, content_type, body),
        ("POST", None, None) => create(state, &r, body),
        ("DELETE", Some(name), None) => delete(state, &r, name),
        _ => status_error(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
            &r.resource,
            r.name.as_deref().unwrap_or(""),
        ),
    }
}

/// Equality-based label selectors (`a=b,c==d`), which is what benchstack sends.
fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| {
        let (k, v) = match term.split_once("==").or_else(|| term.split_once('=')) {
            Some(kv) => kv,
            None => return obj["metadata"]["labels"].get(term.trim()).is_some(),
        };
        obj["metadata"]["labels"][k.trim()].as_str() == Some(v.trim())
    })
}

fn list(state: &Arc<Mutex<State>>, r: &Route, query: &BTreeMap<String, String>) -> Reply {
    let s = lock(state);
    let selector = query.get("labelSelector").cloned().unwrap_or_default();
    let items: Vec<Value> = s
        .objects
        .iter()
        .filter(|(k, _)| k.0 == r.resource && (r.namespace.is_empty() || k.1 == r.namespace))
        .map(|(_, v)| v.clone())
        .filter(|v| matches_selector(v, &selector))
        .collect();
    let (api_version, kind) = kind_of(&r.resource);
    Reply::json(
        200,
        json!({
            "apiVersion": api_version,
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": s.counter.to_string()},
            "items": items,
        }),
    )
}

fn get(state: &Arc<Mutex<State>>, r: &Route, name: &str) -> Reply {
    let mut s = lock(state);
    let k = key(&r.resource, &r.namespace, name);
    if !s.objects.contains_key(&k) {
        return not_found(&r.resource, name);
    }
    let polls = {
        let p = s.polls.entry(k.clone()).or_insert(0);
        *p += 1;
        *p
    };
    let ready_after = s.opts.ready_after_polls;
    let address_after = s.opts.address_after_polls;
    let lb_ip = s.opts.load_balancer_ip.clone();
    let stuck = s.never_ready.contains(name);
    let Some(obj) = s.objects.get_mut(&k) else {
        return not_found(&r.resource, name);
    };
    match r.resource.as_str() {
        "deployments" => deployment_status(obj, name, polls >= ready_after && !stuck, stuck),
        "services" => {
            let is_lb = obj["spec"]["type"] == "LoadBalancer";
            let has_address = obj["status"]["loadBalancer"]["ingress"][0]["ip"].is_string();
            if is_lb && !has_address && polls >= address_after {
                obj["status"] =
                    json!({"loadBalancer": {"ingress": [{"ip": lb_ip, "ipMode": "VIP"}]}});
            }
        }
        _ => {}
    }
    Reply::json(200, obj.clone())
}

/// What the Deployment controller would report: ready (all replicas of this generation
/// available) or still progressing (or, when stuck, past its progress deadline).
fn deployment_status(obj: &mut Value, name: &str, ready: bool, stuck: bool) {
    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1);
    let desired = obj["spec"]["replicas"].as_i64().unwrap_or(1);
    let rs = format!("{name}-7c9d8f6b5");
    obj["status"] = if ready {
        json!({
            "observedGeneration": generation,
            "replicas": desired,
            "updatedReplicas": desired,
            "readyReplicas": desired,
            "availableReplicas": desired,
            "conditions": [
                {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                 "message": "Deployment has minimum availability."},
                {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
                 "message": format!("ReplicaSet \"{rs}\" has successfully progressed.")},
            ],
        })
    } else {
        let progressing = if stuck {
            json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                   "message": format!("ReplicaSet \"{rs}\" has timed out progressing.")})
        } else {
            json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                   "message": format!("ReplicaSet \"{rs}\" is progressing.")})
        };
        json!({
            "observedGeneration": generation,
            "replicas": desired,
            "updatedReplicas": desired,
            "unavailableReplicas": desired,
            "conditions": [
                {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
                 "message": "Deployment does not have minimum availability."},
                progressing,
            ],
        })
    };
}

fn pod_log(state: &Arc<Mutex<State>>, r: &Route, name: &str) -> Reply {
    let s = lock(state);
    if !s.objects.contains_key(&key("pods", &r.namespace, name)) {
        return not_found("pods", name);
    }
    let text = s
        .pods
        .iter()
        .find(|p| p.pod == name)
        .map(|p| p.log_text())
        .unwrap_or_default();
    Reply {
        code: 200,
        content_type: "text/plain",
        body: text,
    }
}

/// Fills in what the API server sets on a new object.
fn admit(s: &mut State, r: &Route, name: &str, obj: &mut Value) {
    s.counter += 1;
    let (api_version, kind) = kind_of(&r.resource);
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    obj["metadata"]["name"] = json!(name);
    if !r.namespace.is_empty() {
        obj["metadata"]["namespace"] = json!(r.namespace);
    }
    obj["metadata"]["uid"] = json!(format!("00000000-0000-4000-8000-{:012x}", s.counter));
    obj["metadata"]["resourceVersion"] = json!(s.counter.to_string());
    obj["metadata"]["generation"] = json!(1);
    obj["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    if obj.get("status").is_none()
        && matches!(r.resource.as_str(), "deployments" | "services" | "jobs")
    {
        obj["status"] = json!({});
    }
}

/// Server-side apply: creates the object or takes the applied fields over (with `force`),
/// keeping what the server owns (metadata it set, status).
fn apply(
    state: &Arc<Mutex<State>>,
    r: &Route,
    name: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &str,
) -> Reply {
    if !content_type.starts_with("application/apply-patch+yaml") {
        return status_error(
            415,
            "UnsupportedMediaType",
            format!("the emulator takes only server-side apply patches, not {content_type:?}"),
            &r.resource,
            name,
        );
    }
    let Some(manager) = query.get("fieldManager").filter(|m| !m.is_empty()).cloned() else {
        return status_error(
            400,
            "BadRequest",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
            &r.resource,
            name,
        );
    };
    let force = query.get("force").map(|v| v == "true").unwrap_or(false);
    let mut applied: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return status_error(
                400,
                "BadRequest",
                format!("the apply patch is not valid JSON/YAML: {e}"),
                &r.resource,
                name,
            );
        }
    };
    if applied["metadata"]["name"].as_str() != Some(name) {
        return status_error(
            400,
            "BadRequest",
            format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                applied["metadata"]["name"]
            ),
            &r.resource,
            name,
        );
    }
    let (api_version, _) = kind_of(&r.resource);
    let entry = json!({"manager": manager, "operation": "Apply", "apiVersion": api_version});
    let mut guard = lock(state);
    let s = &mut *guard;
    let k = key(&r.resource, &r.namespace, name);
    let created;
    let result = match s.objects.get(&k).cloned() {
        None => {
            admit(s, r, name, &mut applied);
            applied["metadata"]["managedFields"] = json!([entry]);
            s.objects.insert(k.clone(), applied.clone());
            created = true;
            applied
        }
        Some(existing) => {
            let others: Vec<Value> = existing["metadata"]["managedFields"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|m| m["manager"] != json!(manager))
                .collect();
            let contested = existing["spec"]["replicas"] != applied["spec"]["replicas"]
                && applied["spec"]["replicas"].is_number();
            if !force
                && contested
                && let Some(other) = others.first()
            {
                return status_error(
                    409,
                    "Conflict",
                    format!(
                        "Apply failed with 1 conflict: conflict with \"{}\": .spec.replicas",
                        other["manager"].as_str().unwrap_or("")
                    ),
                    &r.resource,
                    name,
                );
            }
            let mut next = existing.clone();
            for field in ["spec", "data"] {
                match applied.get(field) {
                    Some(v) => next[field] = v.clone(),
                    None => {
                        if let Some(m) = next.as_object_mut() {
                            m.remove(field);
                        }
                    }
                }
            }
            for field in ["labels", "annotations"] {
                if let Some(v) = applied["metadata"].get(field) {
                    next["metadata"][field] = v.clone();
                }
            }
            if next["spec"] != existing["spec"] {
                bump_generation(&mut next);
                s.polls.insert(k.clone(), 0);
            }
            // With force, the applier takes the contested fields from the others.
            let mut managed: Vec<Value> = if force { Vec::new() } else { others };
            managed.push(entry);
            next["metadata"]["managedFields"] = json!(managed);
            s.counter += 1;
            next["metadata"]["resourceVersion"] = json!(s.counter.to_string());
            s.objects.insert(k.clone(), next.clone());
            created = false;
            next
        }
    };
    drop(guard);
    if created && r.resource == "jobs" {
        start_job(state, &r.namespace, name);
    }
    let code = if created { 201 } else { 200 };
    Reply::json(code, lock(state).objects.get(&k).cloned().unwrap_or(result))
}

fn create(state: &Arc<Mutex<State>>, r: &Route, body: &str) -> Reply {
    let mut obj: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(e) => {
            return status_error(
                400,
                "BadRequest",
                format!("invalid JSON: {e}"),
                &r.resource,
                "",
            );
        }
    };
    let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) else {
        return status_error(
            422,
            "Invalid",
            "metadata.name: Required value: name or generateName is required".into(),
            &r.resource,
            "",
        );
    };
    {
        let mut s = lock(state);
        let k = key(&r.resource, &r.namespace, &name);
        if s.objects.contains_key(&k) {
            return status_error(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", r.resource),
                r.resource.trim_end_matches('s'),
                &name,
            );
        }
        admit(&mut s, r, &name, &mut obj);
        s.objects.insert(k, obj);
    }
    if r.resource == "jobs" {
        start_job(state, &r.namespace, &name);
    }
    let current = lock(state)
        .objects
        .get(&key(&r.resource, &r.namespace, &name))
        .cloned()
        .unwrap_or(Value::Null);
    Reply::json(201, current)
}

fn delete(state: &Arc<Mutex<State>>, r: &Route, name: &str) -> Reply {
    let mut s = lock(state);
    let Some(mut obj) = s.objects.remove(&key(&r.resource, &r.namespace, name)) else {
        return not_found(&r.resource, name);
    };
    s.polls.remove(&key(&r.resource, &r.namespace, name));
    if r.resource == "jobs" {
        // Background propagation: the garbage collector deletes the pods, which stops them.
        let pods: Vec<String> = s
            .pods
            .iter()
            .filter(|p| p.job == name)
            .map(|p| p.pod.clone())
            .collect();
        for pod in pods {
            s.objects.remove(&key("pods", &r.namespace, &pod));
            if let Some(child) = s.children.remove(&pod)
                && let Ok(mut c) = child.lock()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    obj["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:01Z");
    Reply::json(200, obj)
}

fn pod_suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(rand::random::<u32>() as u64);
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The Job controller and kubelet: one pod per completion index, each run as a process.
fn start_job(state: &Arc<Mutex<State>>, namespace: &str, job_name: &str) {
    let mut guard = lock(state);
    let s = &mut *guard;
    let Some(job) = s.objects.get(&key("jobs", namespace, job_name)).cloned() else {
        return;
    };
    let completions = job["spec"]["completions"].as_u64().unwrap_or(1) as u32;
    let template = job["spec"]["template"].clone();
    let container = template["spec"]["containers"][0].clone();
    let container_name = container["name"].as_str().unwrap_or("main").to_string();
    let image = container["image"].as_str().unwrap_or("").to_string();
    let args: Vec<String> = container["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some((
                        e["name"].as_str()?.to_string(),
                        e["value"].as_str().unwrap_or("").to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let job_uid = job["metadata"]["uid"].clone();
    for index in 0..completions {
        s.counter += 1;
        let pod_name = format!("{job_name}-{index}-{}", pod_suffix(s.counter));
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        labels["job-name"] = json!(job_name);
        labels["batch.kubernetes.io/job-name"] = json!(job_name);
        labels["controller-uid"] = job_uid.clone();
        labels[INDEX_LABEL] = json!(index.to_string());
        let log = s.log_dir.path().join(format!("{pod_name}.log"));
        let mut pod = json!({
            "metadata": {
                "labels": labels,
                "annotations": {INDEX_LABEL: index.to_string()},
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": job_uid, "controller": true}],
            },
            "spec": template["spec"].clone(),
        });
        let route = Route {
            resource: "pods".into(),
            namespace: namespace.into(),
            name: Some(pod_name.clone()),
            sub: None,
        };
        admit(s, &route, &pod_name, &mut pod);
        let failing = s.failing_workers.get(&index).cloned();
        let spawned = spawn_worker(&s.opts.worker_program, &args, &env, index, &log, failing);
        pod["status"] = match &spawned {
            Ok(_) => json!({
                "phase": "Running",
                "containerStatuses": [{"name": container_name, "image": image, "imageID": "",
                    "ready": true, "restartCount": 0, "started": true,
                    "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}],
            }),
            Err(e) => json!({
                "phase": "Failed",
                "containerStatuses": [{"name": container_name, "image": image, "imageID": "",
                    "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 128, "reason": "StartError", "message": e}}}],
            }),
        };
        s.objects.insert(key("pods", namespace, &pod_name), pod);
        s.pods.push(PodRecord {
            job: job_name.to_string(),
            pod: pod_name.clone(),
            index,
            log,
        });
        if let Ok(child) = spawned {
            let child = Arc::new(Mutex::new(child));
            s.children.insert(pod_name.clone(), child.clone());
            let state = state.clone();
            let namespace = namespace.to_string();
            let job_name = job_name.to_string();
            std::thread::spawn(move || watch_pod(state, child, namespace, job_name, pod_name));
        }
    }
    let active = s
        .objects
        .iter()
        .filter(|(k, v)| {
            k.0 == "pods"
                && v["metadata"]["labels"]["job-name"] == json!(job_name)
                && v["status"]["phase"] == "Running"
        })
        .count();
    if let Some(j) = s.objects.get_mut(&key("jobs", namespace, job_name)) {
        j["status"] = json!({"active": active, "startTime": "2025-01-01T00:00:00Z"});
    }
    drop(guard);
    update_job_status(state, namespace, job_name);
}

fn spawn_worker(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    index: u32,
    log: &Path,
    failing: Option<String>,
) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = match failing {
        Some(line) => {
            let mut c = Command::new("/bin/sh");
            c.args(["-c", "printf '%s\\n' \"$1\"; exit 1", "sh", &line]);
            c
        }
        None => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
    };
    // A pod's environment is the container's, not the test process's.
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("JOB_COMPLETION_INDEX", index.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    cmd.spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// Waits for a pod's process and records how it ended.
fn watch_pod(
    state: Arc<Mutex<State>>,
    child: Arc<Mutex<Child>>,
    namespace: String,
    job_name: String,
    pod_name: String,
) {
    let status = loop {
        let done = match child.lock() {
            Ok(mut c) => c.try_wait(),
            Err(_) => return,
        };
        match done {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => return,
        }
    };
    let code = status.code().unwrap_or(137);
    {
        let mut s = lock(&state);
        s.children.remove(&pod_name);
        let Some(pod) = s.objects.get_mut(&key("pods", &namespace, &pod_name)) else {
            // Deleted with its Job: nothing to report.
            return;
        };
        let ok = code == 0;
        pod["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
        pod["status"]["containerStatuses"][0]["ready"] = json!(false);
        pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {
            "exitCode": code,
            "reason": if ok { "Completed" } else { "Error" },
            "startedAt": "2025-01-01T00:00:00Z",
            "finishedAt": "2025-01-01T00:00:01Z",
        }});
        let index = pod["metadata"]["labels"][INDEX_LABEL]
            .as_str()
            .and_then(|i| i.parse::<u32>().ok());
        s.counter += 1;
        if ok && index.is_some_and(|i| s.vanishing_workers.contains(&i)) {
            s.objects.remove(&key("pods", &namespace, &pod_name));
            *s.vanished_succeeded.entry(job_name.clone()).or_default() += 1;
        }
    }
    update_job_status(&state, &namespace, &job_name);
}

/// The Job's counts and conditions from its pods (backoffLimit 0: one failure fails it).
fn update_job_status(state: &Arc<Mutex<State>>, namespace: &str, job_name: &str) {
    let mut s = lock(state);
    let phases: Vec<String> = s
        .objects
        .iter()
        .filter(|(k, v)| {
            k.0 == "pods"
                && k.1 == namespace
                && v["metadata"]["labels"]["job-name"] == json!(job_name)
        })
        .map(|(_, v)| {
            v["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string()
        })
        .collect();
    let vanished = s.vanished_succeeded.get(job_name).copied().unwrap_or(0);
    let Some(job) = s.objects.get_mut(&key("jobs", namespace, job_name)) else {
        return;
    };
    let completions = job["spec"]["completions"].as_i64().unwrap_or(1);
    let backoff_limit = job["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let count = |p: &str| phases.iter().filter(|x| x.as_str() == p).count() as i64;
    let (active, succeeded, failed) = (
        count("Running"),
        count("Succeeded") + vanished,
        count("Failed"),
    );
    let mut status =
        json!({"startTime": "2025-01-01T00:00:00Z", "active": active, "ready": active});
    if succeeded > 0 {
        status["succeeded"] = json!(succeeded);
    }
    if failed > 0 {
        status["failed"] = json!(failed);
    }
    if failed > backoff_limit {
        status["conditions"] = json!([
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
             "message": "Job has reached the specified backoff limit"},
        ]);
    } else if succeeded >= completions {
        status["conditions"] = json!([
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods"},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached",
             "message": "Reached expected number of succeeded pods"},
        ]);
        status["completionTime"] = json!("2025-01-01T00:00:02Z");
    }
    job["status"] = status;
}

/// `benchstack serve` with the example model on a random loopback address `127.X.Y.Z` on the
/// ports a Kubernetes Service of benchstack exposes (8500 gRPC, 8501 REST): what the
/// emulator's LoadBalancer address points at. Stopped on drop.
pub struct StandIn {
    pub ip: String,
    child: Child,
    _stderr: tempfile::NamedTempFile,
}

impl StandIn {
    pub fn start(program: &Path, model_name: &str, model_base_path: &Path) -> StandIn {
        let mut last = String::new();
        for _attempt in 0..20 {
            let [a, b, c]: [u8; 3] = rand::random();
            // Stay off 127.0.0.x, where other tests' servers live, and off .0/.255 hosts.
            let ip = format!("127.{}.{}.{}", a.max(1), b, c.clamp(1, 254));
            let stderr = tempfile::NamedTempFile::new().expect("a file for stderr");
            let mut child = Command::new(program)
                .args([
                    "serve",
                    "--bind",
                    &ip,
                    "--port",
                    "8500",
                    "--rest_api_port",
                    "8501",
                ])
                .args(["--model_name", model_name])
                .arg("--model_base_path")
                .arg(model_base_path)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::from(stderr.reopen().expect("reopen stderr file")))
                .spawn()
                .expect("spawn benchstack serve");
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            if !line.trim().is_empty() {
                return StandIn {
                    ip,
                    child,
                    _stderr: stderr,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last = std::fs::read_to_string(stderr.path()).unwrap_or_default();
        }
        panic!("benchstack serve did not start on any 127.X.Y.Z:8500/8501: {last}");
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
