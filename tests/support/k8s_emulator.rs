//! A loopback Kubernetes API server for tests: the real paths, methods and JSON shapes that
//! kube sends (server-side apply, create, get, get /status, list with labelSelector, delete,
//! pod logs, `Status` errors), with in-memory objects and the controllers a GKE cluster runs,
//! advanced one step on every request:
//!
//! - Nodes come from GKE node pools (fixed, or read live from the GKE emulator), with the
//!   allocatable CPU and memory GKE leaves on each machine type minus what its system pods
//!   request (https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes).
//! - The scheduler binds a pod to the least allocated node its requests fit on, or leaves it
//!   `Pending` with `PodScheduled=False, reason Unschedulable` and the scheduler's message
//!   ("0/3 nodes are available: 3 Insufficient cpu. …";
//!   https://kubernetes.io/docs/concepts/scheduling-eviction/kube-scheduler/,
//!   https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-conditions).
//! - The kubelet pulls the image: an image missing from the emulated registry, or a private
//!   one on nodes whose OAuth scopes do not allow reading Cloud Storage / Artifact Registry
//!   (`devstorage.read_only` or `cloud-platform`,
//!   https://cloud.google.com/kubernetes-engine/docs/how-to/access-scopes), leaves the
//!   container waiting in `ErrImagePull`, then `ImagePullBackOff`
//!   (https://kubernetes.io/docs/concepts/containers/images/#imagepullbackoff).
//! - The Deployment controller rolls pods honouring `maxSurge` / `maxUnavailable` and reports
//!   `Progressing=False, reason ProgressDeadlineExceeded` once no progress was made for
//!   `progressDeadlineSeconds` (https://kubernetes.io/docs/concepts/workloads/controllers/deployment/).
//! - LoadBalancer Services get an address after a few reads and carry the
//!   `service.kubernetes.io/load-balancer-cleanup` finalizer: a deleted one lingers until the
//!   load balancer is gone (https://kubernetes.io/docs/tasks/access-application-cluster/create-external-load-balancer/#garbage-collecting-load-balancers).
//! - A Job's pods, once scheduled and pulled, run for real as processes on this machine (the
//!   worker program with the container's args and env plus `JOB_COMPLETION_INDEX`), their
//!   output kept as the pod log. Each gets its own pod IP, a loopback address 127.a.b.c, and
//!   env `valueFrom.fieldRef` `status.podIP` resolves to it (the downward API,
//!   https://kubernetes.io/docs/concepts/workloads/pods/downward-api/). A container with an
//!   `httpGet` readiness probe is Ready only once the probe answers 2xx on the pod IP
//!   (https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/).
//!   A worker can be made to start late (`delay_worker`: its container stays `Waiting`,
//!   `ContainerCreating`, before it turns Running) or to be killed while running
//!   (`kill_worker`: exit 137, `OOMKilled`). A failed pod of a Job whose `backoffLimit` is not
//!   yet exceeded is replaced by a new pod for the same completion index after the Job
//!   controller's back-off (10 s, doubling;
//!   https://kubernetes.io/docs/concepts/workloads/controllers/job/#pod-backoff-failure-policy;
//!   `Options::job_backoff` scales it down for tests).
//! - The pods/proxy subresource, `GET /api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH`
//!   (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/#get-connect-get-requests-to-proxy-of-pod,
//!   https://kubernetes.io/docs/tasks/access-application-cluster/access-cluster-services/#manually-constructing-apiserver-proxy-urls):
//!   a missing pod is 404 NotFound, a pod that is not Running has no IP to dial (503); a
//!   running Job pod is reached on its own pod IP (GET and POST, as the proxy passes the
//!   method through, with the request's headers but for `Authorization`, which the API
//!   server deletes once it has authenticated the request, and the hop-by-hop ones), a running serving pod is backed by the stand-in (`with_stand_in`,
//!   every serving pod by the one process), which answers the path as TF Serving would, and a pod started without
//!   `--monitoring_config_file` has no metrics page (404, TF Serving's "Malformed request").
//! - The nodes/proxy subresource to the kubelet's cAdvisor metrics,
//!   `GET /api/v1/nodes/NODE/proxy/metrics/cadvisor`
//!   (https://kubernetes.io/docs/reference/instrumentation/cadvisor-metric-labels/): for every
//!   container of every running pod on the node, `container_cpu_usage_seconds_total` with
//!   cAdvisor's `container`, `namespace`, `pod` labels, growing at [`CADVISOR_CORES`] cores,
//!   and, for a container with a CPU limit (a CFS quota), `container_cpu_cfs_periods_total`
//!   (100 ms periods) and `container_cpu_cfs_throttled_periods_total` (none throttled).
//!
//! Include with `#[path = "support/k8s_emulator.rs"] mod k8s_emulator;`.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::http_emulator::{self, Request, Server};
use http_body_util::Full;
use hyper::Response;
use hyper::body::Bytes;
use serde_json::{Value, json};

pub const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";

/// A GKE node pool, whose nodes the emulated cluster schedules on.
#[derive(Debug, Clone)]
pub struct NodePool {
    /// The GKE cluster it belongs to (one emulator can stand for several clusters' API
    /// servers; `placement` says whose nodes run what).
    pub cluster: String,
    pub machine_type: String,
    pub count: u32,
    pub oauth_scopes: Vec<String>,
}

pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";
pub const DEVSTORAGE_READ_ONLY: &str = "https://www.googleapis.com/auth/devstorage.read_only";

impl NodePool {
    /// `count` nodes of `machine_type` with the `cloud-platform` scope.
    pub fn new(machine_type: &str, count: u32) -> NodePool {
        NodePool {
            cluster: String::new(),
            machine_type: machine_type.into(),
            count,
            oauth_scopes: vec![CLOUD_PLATFORM.into()],
        }
    }

    /// A GKE API `nodePool` object (`config.machineType`, `config.oauthScopes`,
    /// `initialNodeCount`). No `oauthScopes` means none: "If unspecified, no scopes are added"
    /// (https://cloud.google.com/kubernetes-engine/docs/reference/rest/v1/NodeConfig).
    pub fn from_gke(cluster: &str, pool: &Value) -> NodePool {
        NodePool {
            cluster: cluster.into(),
            machine_type: pool["config"]["machineType"]
                .as_str()
                .unwrap_or("e2-medium")
                .into(),
            count: pool["initialNodeCount"].as_u64().unwrap_or(0) as u32,
            oauth_scopes: pool["config"]["oauthScopes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

/// Where the node pools come from when they change while the emulator runs (e.g. read from
/// the GKE emulator, whose clusters an apply creates).
#[derive(Clone)]
pub struct NodeSource(pub Arc<dyn Fn() -> Vec<NodePool> + Send + Sync>);

impl std::fmt::Debug for NodeSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeSource(..)")
    }
}

/// How the emulated cluster behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// A Deployment's pod becomes ready on the Nth controller step after its container started.
    pub ready_after_polls: u32,
    /// A LoadBalancer Service gets its address on the Nth read.
    pub address_after_polls: u32,
    /// The address LoadBalancer Services get.
    pub load_balancer_ip: String,
    /// What a Job's pods run (the container's `args` are passed to it).
    pub worker_program: PathBuf,
    /// The nodes (used when `node_source` is None).
    pub node_pools: Vec<NodePool>,
    pub node_source: Option<NodeSource>,
    /// Owner kind (`Deployment`, `Job`) → the cluster whose nodes run its pods; a kind not
    /// named runs on any node.
    pub placement: BTreeMap<String, String>,
    /// The image registry: image → private. None: every image exists and is public.
    pub registry: Option<BTreeMap<String, bool>>,
    /// Emulated seconds per wall-clock second, for `progressDeadlineSeconds` (600 s at 100
    /// is 6 s).
    pub time_scale: f64,
    /// How long a deleted LoadBalancer Service lingers while its load balancer is removed.
    pub load_balancer_cleanup: Duration,
    /// Controller steps a Deployment's deleted pod stays terminating (graceful termination:
    /// `deletionTimestamp` set, still on its node).
    pub termination_steps: u32,
    /// The Job controller's first back-off before it replaces a failed pod (10 s in
    /// Kubernetes; doubled for each further failure).
    pub job_backoff: Duration,
}

impl Options {
    pub fn new(worker_program: impl Into<PathBuf>) -> Self {
        Options {
            ready_after_polls: 2,
            address_after_polls: 2,
            load_balancer_ip: "127.0.0.1".into(),
            worker_program: worker_program.into(),
            node_pools: vec![NodePool::new("e2-standard-8", 3)],
            node_source: None,
            placement: BTreeMap::new(),
            registry: None,
            time_scale: 1.0,
            load_balancer_cleanup: Duration::from_millis(300),
            termination_steps: 2,
            job_backoff: Duration::from_secs(10),
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
    /// The `Authorization` header, if one was sent.
    pub authorization: Option<String>,
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
/// A Deployment's (generation, updated, ready, total pods): progress is any change of it.
type Snapshot = (i64, usize, usize, usize);
/// A pod of a Deployment: (name, ready, creation order).
type OwnedPod = (String, bool, u64);

struct State {
    opts: Options,
    /// When the emulator started: the clock of the kubelets' emulated CPU counters.
    started: Instant,
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
    /// Worker index → how long its first pod's container waits before it starts.
    delayed_workers: HashMap<u32, Duration>,
    /// Worker index → how long its first pod runs before its process is killed (OOM).
    killed_workers: HashMap<u32, Duration>,
    /// Pods whose process the emulator killed as the kernel's OOM killer would.
    oom_killed: HashSet<String>,
    /// (namespace, Job, index, when): replacement pods the Job controller will create.
    replacements: Vec<(String, String, u32, Instant)>,
    /// (resource, name) → how many more GETs of it answer 503 (u32::MAX: all).
    unavailable_gets: HashMap<(String, String), u32>,
    requests: Vec<Recorded>,
    pods: Vec<PodRecord>,
    /// Pod name → what the kubelet knows of it.
    sims: HashMap<String, PodSim>,
    /// Deployment → when it last made progress, and what it looked like then.
    progress: HashMap<Key, (Instant, Snapshot)>,
    /// Deleted LoadBalancer Services waiting for their load balancer to go.
    deleting: HashMap<Key, Instant>,
    /// Deployments whose containers exit 1 on start (CrashLoopBackOff).
    crash_looping: HashSet<String>,
    children: HashMap<String, Arc<Mutex<Child>>>,
    counter: u64,
    log_dir: tempfile::TempDir,
}

pub struct K8sEmulator {
    pub url: String,
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    server: Server,
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
            delayed_workers: HashMap::new(),
            killed_workers: HashMap::new(),
            oom_killed: HashSet::new(),
            replacements: Vec::new(),
            unavailable_gets: HashMap::new(),
            requests: Vec::new(),
            pods: Vec::new(),
            sims: HashMap::new(),
            progress: HashMap::new(),
            deleting: HashMap::new(),
            crash_looping: HashSet::new(),
            children: HashMap::new(),
            counter: 0,
            log_dir: tempfile::tempdir().expect("a directory for pod logs"),
            started: Instant::now(),
        }));
        let server_state = state.clone();
        let server = Server::start(move |req| handle(&server_state, &req));
        let addr = server.addr();
        K8sEmulator {
            url: server.url(),
            addr,
            state,
            server,
        }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// `127.0.0.1:PORT`: what a GKE cluster records as its endpoint (no scheme; the
    /// provider is told how to reach it).
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
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

    /// The pods of Deployment `name` never pass their readiness probe (the Deployment makes
    /// no progress and, after its deadline, reports ProgressDeadlineExceeded).
    pub fn never_ready(&self, deployment: &str) {
        lock(&self.state).never_ready.insert(deployment.to_string());
    }

    /// The containers of Deployment `name` exit 1 as soon as they start: CrashLoopBackOff.
    pub fn crash_loop(&self, deployment: &str) {
        lock(&self.state)
            .crash_looping
            .insert(deployment.to_string());
    }

    /// Pushes `image` to the emulated registry (private: pulling needs a storage scope). The
    /// first push makes the registry strict: images never pushed do not exist.
    pub fn push_image(&self, image: &str, private: bool) {
        lock(&self.state)
            .opts
            .registry
            .get_or_insert_with(BTreeMap::new)
            .insert(normalize_image(image), private);
    }

    /// The pods the cluster has now (Deployments' and Jobs'), as the API returns them.
    pub fn pods(&self, namespace: &str) -> Vec<Value> {
        lock(&self.state)
            .objects
            .iter()
            .filter(|(k, _)| k.0 == "pods" && k.1 == namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The emulated nodes: (name, cluster, allocatable millicores, allocatable MiB).
    pub fn nodes(&self) -> Vec<(String, String, i64, i64)> {
        let s = lock(&self.state);
        nodes(&s)
            .into_iter()
            .map(|n| {
                (
                    n.name,
                    n.cluster,
                    n.allocatable.cpu_m,
                    n.allocatable.mem_mib,
                )
            })
            .collect()
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

    /// The Job controller's first back-off before replacing a failed pod (see `Options`).
    pub fn set_job_backoff(&self, backoff: Duration) {
        lock(&self.state).opts.job_backoff = backoff;
    }

    /// The first pod of worker `index` turns Running only `delay` after it was created (a
    /// slow image pull or node): its container waits in `ContainerCreating` until then.
    pub fn delay_worker(&self, index: u32, delay: Duration) {
        lock(&self.state).delayed_workers.insert(index, delay);
    }

    /// The first pod of worker `index` is killed `after` it started running (exit 137,
    /// `OOMKilled`); the Job controller then replaces it if its backoffLimit allows.
    pub fn kill_worker(&self, index: u32, after: Duration) {
        lock(&self.state).killed_workers.insert(index, after);
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
        // The server stops (and its thread is joined) when the `server` field drops.
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

fn handle(state: &Arc<Mutex<State>>, req: &Request) -> http_emulator::Reply {
    let method = req.method.to_string();
    let path = req.path().to_string();
    let query = parse_query(req.query());
    let content_type = req.header("content-type").to_string();
    let body = String::from_utf8_lossy(&req.body).into_owned();
    let forwarded = proxied_headers(&req.headers);
    let reply = dispatch(
        state,
        &method,
        &path,
        &query,
        &content_type,
        &body,
        &forwarded,
    );
    let authorization = Some(req.header("authorization").to_string()).filter(|a| !a.is_empty());
    lock(state).requests.push(Recorded {
        method,
        path,
        query,
        content_type,
        body,
        status: reply.code,
        authorization,
    });
    Response::builder()
        .status(reply.code)
        .header("content-type", reply.content_type)
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// The request headers the pods/proxy subresource passes on to the pod. The API server
/// deletes `Authorization` once it has authenticated the request
/// (k8s.io/apiserver/pkg/endpoints/filters/authentication.go: "authorization header is not
/// required anymore in case of a successful authentication") and the impersonation headers
/// (filters/impersonation.go); its proxy (k8s.io/apimachinery/pkg/util/proxy,
/// UpgradeAwareHandler over net/http/httputil.ReverseProxy) drops the hop-by-hop headers
/// (RFC 9110 §7.6.1) and passes the others through.
fn proxied_headers(headers: &hyper::HeaderMap) -> Vec<(String, String)> {
    const DROPPED: [&str; 11] = [
        "authorization",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    ];
    headers
        .iter()
        .filter(|(k, _)| {
            let k = k.as_str();
            !DROPPED.contains(&k) && !k.starts_with("impersonate-")
        })
        .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
        .collect()
}

fn dispatch(
    state: &Arc<Mutex<State>>,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    content_type: &str,
    body: &str,
    forwarded: &[(String, String)],
) -> Reply {
    // The controllers, scheduler and kubelets take one step between requests.
    reconcile(state);
    if method == "GET"
        && let Some(reply) =
            pod_proxy(state, method, path, query, forwarded).or_else(|| node_proxy(state, path))
    {
        return reply;
    }
    if method == "POST"
        && let Some(reply) = pod_proxy(state, method, path, query, forwarded)
    {
        return reply;
    }
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

/// The CPU every emulated container uses, in cores (cAdvisor's usage counter grows by this
/// many seconds per second).
pub const CADVISOR_CORES: f64 = 0.5;

/// `GET /api/v1/nodes/NODE/proxy/metrics/cadvisor`, or None for any other path.
fn node_proxy(state: &Arc<Mutex<State>>, path: &str) -> Option<Reply> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let ["api", "v1", "nodes", node, "proxy", "metrics", "cadvisor"] = segs.as_slice() else {
        return None;
    };
    let s = lock(state);
    if !nodes(&s).iter().any(|n| n.name == *node) {
        return Some(not_found("nodes", node));
    }
    let secs = s.started.elapsed().as_secs_f64();
    let mut page = String::from(
        "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.\n# TYPE container_cpu_usage_seconds_total counter\n",
    );
    let mut periods = String::from(
        "# TYPE container_cpu_cfs_periods_total counter\n# TYPE container_cpu_cfs_throttled_periods_total counter\n",
    );
    for ((res, ns, name), pod) in &s.objects {
        if res != "pods"
            || pod["spec"]["nodeName"].as_str() != Some(*node)
            || pod["status"]["phase"] != "Running"
        {
            continue;
        }
        for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let container = c["name"].as_str().unwrap_or("");
            let labels = format!(
                "container=\"{container}\",cpu=\"total\",id=\"/kubepods/{name}/{container}\",image=\"{}\",namespace=\"{ns}\",pod=\"{name}\"",
                c["image"].as_str().unwrap_or("")
            );
            page.push_str(&format!(
                "container_cpu_usage_seconds_total{{{labels}}} {:.6} 1700000000000\n",
                secs * CADVISOR_CORES
            ));
            if !c["resources"]["limits"]["cpu"].is_null() {
                periods.push_str(&format!(
                    "container_cpu_cfs_periods_total{{{labels}}} {}\ncontainer_cpu_cfs_throttled_periods_total{{{labels}}} 0\n",
                    (secs * 10.0) as u64
                ));
            }
        }
    }
    page.push_str(&periods);
    Some(Reply {
        code: 200,
        content_type: "text/plain; version=0.0.4",
        body: page,
    })
}

/// `GET …/pods/NAME[:PORT]/proxy/PATH`, or None for any other path.
fn pod_proxy(
    state: &Arc<Mutex<State>>,
    method: &str,
    path: &str,
    query: &BTreeMap<String, String>,
    forwarded: &[(String, String)],
) -> Option<Reply> {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let [
        "api",
        "v1",
        "namespaces",
        ns,
        "pods",
        target,
        "proxy",
        rest @ ..,
    ] = segs.as_slice()
    else {
        return None;
    };
    let (pod, port) = match target.split_once(':') {
        Some((p, port)) => (p, port.parse::<u16>().ok()),
        None => (*target, None),
    };
    let s = lock(state);
    let Some(obj) = s.objects.get(&key("pods", ns, pod)) else {
        return Some(not_found("pods", pod));
    };
    if obj["status"]["phase"] != "Running" {
        return Some(status_error(
            503,
            "ServiceUnavailable",
            format!("pod {pod} is not running: no address to proxy to"),
            "pods",
            pod,
        ));
    }
    let args: Vec<String> = obj["spec"]["containers"][0]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let ip = s.opts.load_balancer_ip.clone();
    let job_pod = obj["metadata"]["labels"]["job-name"].is_string();
    let pod_ip = obj["status"]["podIP"].as_str().map(String::from);
    drop(s);
    let mut page = format!("/{}", rest.join("/"));
    // A Job's pod (a worker) answers on its own IP, whatever the method.
    if job_pod {
        let (Some(pod_ip), Some(port)) = (pod_ip, port) else {
            return Some(status_error(
                503,
                "ServiceUnavailable",
                format!("pod {pod}: no port to proxy to"),
                "pods",
                pod,
            ));
        };
        if !query.is_empty() {
            let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
            page = format!("{page}?{}", q.join("&"));
        }
        return Some(
            match http_blocking(
                &pod_ip,
                port,
                method,
                &page,
                forwarded,
                Duration::from_secs(5),
            ) {
                Ok((code, body)) => Reply {
                    code,
                    content_type: "application/json",
                    body,
                },
                Err(e) => status_error(
                    503,
                    "ServiceUnavailable",
                    format!("error trying to reach service: {e}"),
                    "pods",
                    pod,
                ),
            },
        );
    }
    if method != "GET" {
        return None;
    }
    if !args
        .iter()
        .any(|a| a.starts_with("--monitoring_config_file="))
    {
        return Some(Reply {
            code: 404,
            content_type: "application/json",
            body: json!({"error": format!("Malformed request: GET {page}")}).to_string(),
        });
    }
    // The pod's container answers on its port: the stand-in backing every serving pod.
    let port = port.unwrap_or(8501);
    Some(match http_get_blocking(&ip, port, &page) {
        Ok((code, body)) => Reply {
            code,
            content_type: "text/plain",
            body,
        },
        Err(e) => status_error(
            503,
            "ServiceUnavailable",
            format!("error trying to reach service: {e}"),
            "pods",
            pod,
        ),
    })
}

/// A plain HTTP/1.0 GET (the stand-in answers it and closes).
fn http_get_blocking(ip: &str, port: u16, path: &str) -> Result<(u16, String), String> {
    http_blocking(ip, port, "GET", path, &[], Duration::from_secs(5))
}

/// A plain HTTP/1.0 request without a body, with `headers`; the server answers and closes.
fn http_blocking(
    ip: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    timeout: Duration,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let addr: SocketAddr = format!("{ip}:{port}").parse().map_err(|e| format!("{e}"))?;
    let mut c = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        c,
        "{method} {path} HTTP/1.0\r\nHost: {ip}:{port}\r\n{extra}Content-Length: 0\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    c.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("no status")?;
    Ok((code, body.to_string()))
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
    let address_after = s.opts.address_after_polls;
    let lb_ip = s.opts.load_balancer_ip.clone();
    let Some(obj) = s.objects.get_mut(&k) else {
        return not_found(&r.resource, name);
    };
    if r.resource == "services" {
        let is_lb = obj["spec"]["type"] == "LoadBalancer";
        let has_address = obj["status"]["loadBalancer"]["ingress"][0]["ip"].is_string();
        let deleting = obj["metadata"]["deletionTimestamp"].is_string();
        if is_lb && !has_address && !deleting && polls >= address_after {
            obj["status"] = json!({"loadBalancer": {"ingress": [{"ip": lb_ip, "ipMode": "VIP"}]}});
        }
    }
    Reply::json(200, obj.clone())
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
    let k = key(&r.resource, &r.namespace, name);
    // An object with finalizers is only marked: it goes once its controllers removed them
    // (a LoadBalancer Service once its load balancer is deleted).
    if let Some(obj) = s.objects.get_mut(&k)
        && obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
    {
        if !obj["metadata"]["deletionTimestamp"].is_string() {
            obj["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:01Z");
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        }
        let reply = obj.clone();
        s.deleting.entry(k).or_insert_with(Instant::now);
        return Reply::json(200, reply);
    }
    let Some(mut obj) = s.objects.remove(&k) else {
        return not_found(&r.resource, name);
    };
    s.polls.remove(&k);
    if r.resource == "jobs" {
        // Background propagation: the garbage collector deletes the pods, which stops them.
        let pods: Vec<String> = s
            .pods
            .iter()
            .filter(|p| p.job == name)
            .map(|p| p.pod.clone())
            .collect();
        for pod in pods {
            remove_pod(&mut s, &r.namespace, &pod);
        }
    }
    if r.resource == "deployments" {
        // Its ReplicaSets go, and with them their pods.
        let pods: Vec<String> = s
            .sims
            .iter()
            .filter(|(_, p)| {
                p.namespace == r.namespace && p.owner == Owner::Deployment(name.into())
            })
            .map(|(n, _)| n.clone())
            .collect();
        for pod in pods {
            remove_pod(&mut s, &r.namespace, &pod);
        }
        s.progress.remove(&k);
    }
    if r.resource == "pods" {
        s.sims.remove(name);
    }
    obj["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:01Z");
    Reply::json(200, obj)
}

/// Deletes a Deployment's pod gracefully: it terminates for a few steps, still holding its
/// node's room, then goes (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination).
fn terminate_pod(s: &mut State, namespace: &str, pod: &str) {
    let steps = s.opts.termination_steps;
    if steps == 0 {
        remove_pod(s, namespace, pod);
        return;
    }
    if let Some(sim) = s.sims.get_mut(pod) {
        sim.terminating = Some(steps);
    }
    if let Some(p) = s.objects.get_mut(&key("pods", namespace, pod)) {
        p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:01Z");
        p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        p["status"]["containerStatuses"][0]["ready"] = json!(false);
    }
}

/// Deletes a pod object and stops its process.
fn remove_pod(s: &mut State, namespace: &str, pod: &str) {
    s.objects.remove(&key("pods", namespace, pod));
    s.sims.remove(pod);
    if let Some(child) = s.children.remove(pod)
        && let Ok(mut c) = child.lock()
    {
        let _ = c.kill();
        let _ = c.wait();
    }
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

/// The Job controller: one pod per completion index, `Pending` until the scheduler binds it
/// and the kubelet pulls its image and starts it (see `kubelet`).
fn start_job(state: &Arc<Mutex<State>>, namespace: &str, job_name: &str) {
    let mut guard = lock(state);
    let s = &mut *guard;
    let Some(job) = s.objects.get(&key("jobs", namespace, job_name)).cloned() else {
        return;
    };
    let completions = job["spec"]["completions"].as_u64().unwrap_or(1) as u32;
    for index in 0..completions {
        create_job_pod(s, namespace, job_name, &job, index, true);
    }
    drop(guard);
    // The new pods are scheduled and started at once, as a real cluster would start them
    // while the client is still reading the create's answer.
    reconcile(state);
    update_job_status(state, namespace, job_name);
}

/// One pod of a Job for a completion index (`first`: not a replacement).
fn create_job_pod(
    s: &mut State,
    namespace: &str,
    job_name: &str,
    job: &Value,
    index: u32,
    first: bool,
) {
    let template = job["spec"]["template"].clone();
    let job_uid = job["metadata"]["uid"].clone();
    {
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
            "status": {"phase": "Pending"},
        });
        let route = Route {
            resource: "pods".into(),
            namespace: namespace.into(),
            name: Some(pod_name.clone()),
            sub: None,
        };
        admit(s, &route, &pod_name, &mut pod);
        s.objects.insert(key("pods", namespace, &pod_name), pod);
        s.counter += 1;
        let mut sim = PodSim::new(
            namespace,
            Owner::Job(job_name.to_string(), index),
            s.counter,
        );
        sim.first_of_index = first;
        s.sims.insert(pod_name.clone(), sim);
        s.pods.push(PodRecord {
            job: job_name.to_string(),
            pod: pod_name.clone(),
            index,
            log,
        });
    }
}

/// The Job controller's replacements that are due: a new pod for the failed index, unless
/// the Job is gone or already finished.
fn replacements_step(s: &mut State) {
    let now = Instant::now();
    let (due, later): (Vec<_>, Vec<_>) = s
        .replacements
        .drain(..)
        .partition(|(_, _, _, at)| *at <= now);
    s.replacements = later;
    for (ns, job_name, index, _) in due {
        let Some(job) = s.objects.get(&key("jobs", &ns, &job_name)).cloned() else {
            continue;
        };
        let finished = job["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Failed" || c["type"] == "Complete")
        });
        if !finished {
            create_job_pod(s, &ns, &job_name, &job, index, false);
        }
    }
}

/// A 127.a.b.c address of its own for a Job's pod (Linux routes all of 127/8 to loopback),
/// random so that emulators in parallel test processes do not collide on a port.
fn pod_ip() -> String {
    let r = rand::random::<u32>();
    format!(
        "127.{}.{}.{}",
        1 + (r >> 16) as u8 % 250,
        (r >> 8) as u8,
        1 + (r as u8) % 250
    )
}

/// The kubelet starts a Job's pod: its process runs the worker program (or, for a failing
/// worker, prints its line and exits 1).
fn start_job_pod(
    state: &Arc<Mutex<State>>,
    s: &mut State,
    namespace: &str,
    job_name: &str,
    pod_name: &str,
    index: u32,
) {
    let Some(pod) = s.objects.get(&key("pods", namespace, pod_name)).cloned() else {
        return;
    };
    let container = pod["spec"]["containers"][0].clone();
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
    let ip = pod_ip();
    // `valueFrom.fieldRef` from the downward API: the pod's IP is the one field used.
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    let value = match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                        Some("status.podIP") => ip.clone(),
                        Some(_) => String::new(),
                        None => e["value"].as_str().unwrap_or("").to_string(),
                    };
                    Some((e["name"].as_str()?.to_string(), value))
                })
                .collect()
        })
        .unwrap_or_default();
    let probed = container["readinessProbe"]["httpGet"].is_object();
    let Some(log) = s
        .pods
        .iter()
        .find(|p| p.pod == pod_name)
        .map(|p| p.log.clone())
    else {
        return;
    };
    let failing = s.failing_workers.get(&index).cloned();
    let spawned = spawn_worker(&s.opts.worker_program, &args, &env, index, &log, failing);
    if let Some(p) = s.objects.get_mut(&key("pods", namespace, pod_name)) {
        p["status"]["phase"] = json!(if spawned.is_ok() { "Running" } else { "Failed" });
        p["status"]["podIP"] = json!(ip);
        p["status"]["podIPs"] = json!([{"ip": ip}]);
        p["status"]["containerStatuses"] = match &spawned {
            Ok(_) => json!([{"name": container_name, "image": image, "imageID": "",
                "ready": !probed, "restartCount": 0, "started": true,
                "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]),
            Err(e) => json!([{"name": container_name, "image": image, "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 128, "reason": "StartError", "message": e}}}]),
        };
    }
    if let Some(x) = s.sims.get_mut(pod_name) {
        x.running_since = Some(Instant::now());
    }
    if let Ok(child) = spawned {
        let child = Arc::new(Mutex::new(child));
        s.children.insert(pod_name.to_string(), child.clone());
        let state = state.clone();
        let namespace = namespace.to_string();
        let job_name = job_name.to_string();
        let pod_name = pod_name.to_string();
        std::thread::spawn(move || watch_pod(state, child, namespace, job_name, pod_name));
    }
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
        if !s.objects.contains_key(&key("pods", &namespace, &pod_name)) {
            // Deleted with its Job: nothing to report.
            return;
        }
        let ok = code == 0;
        let oom = s.oom_killed.contains(&pod_name);
        let Some(pod) = s.objects.get_mut(&key("pods", &namespace, &pod_name)) else {
            return;
        };
        pod["status"]["phase"] = json!(if ok { "Succeeded" } else { "Failed" });
        pod["status"]["containerStatuses"][0]["ready"] = json!(false);
        pod["status"]["containerStatuses"][0]["state"] = json!({"terminated": {
            "exitCode": code,
            "reason": if ok { "Completed" } else if oom { "OOMKilled" } else { "Error" },
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
        // The Job controller replaces a failed pod while its failures stay within the
        // backoffLimit, after a back-off that doubles with each failure.
        if !ok && let Some(index) = index {
            let job = s.objects.get(&key("jobs", &namespace, &job_name)).cloned();
            let limit = job
                .as_ref()
                .and_then(|j| j["spec"]["backoffLimit"].as_i64())
                .unwrap_or(6);
            let failed = s
                .objects
                .iter()
                .filter(|(k, v)| {
                    k.0 == "pods"
                        && k.1 == namespace
                        && v["metadata"]["labels"]["job-name"] == json!(job_name)
                        && v["status"]["phase"] == "Failed"
                })
                .count() as i64;
            if job.is_some() && failed <= limit {
                let backoff = s.opts.job_backoff * 2u32.pow((failed - 1).clamp(0, 10) as u32);
                s.replacements.push((
                    namespace.clone(),
                    job_name.clone(),
                    index,
                    Instant::now() + backoff,
                ));
            }
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
        count("Running") + count("Pending"),
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

// ---------------------------------------------------------------------------------------
// The cluster's behaviour: nodes, scheduler, kubelet, Deployment and Service controllers.
// ---------------------------------------------------------------------------------------

/// Who made a pod.
#[derive(Debug, Clone, PartialEq)]
enum Owner {
    Deployment(String),
    Job(String, u32),
}

/// What the kubelet and controllers keep of a pod beyond its object.
#[derive(Debug, Clone)]
struct PodSim {
    namespace: String,
    owner: Owner,
    /// Creation order.
    created: u64,
    /// Image pull attempts that failed.
    failed_pulls: u32,
    /// Controller steps since its container started.
    running_steps: u32,
    started: bool,
    /// When its object was made and when its container started running.
    created_at: Instant,
    running_since: Option<Instant>,
    /// The first pod for its completion index (what `delay_worker`/`kill_worker` affect).
    first_of_index: bool,
    /// Deleted: controller steps left until the kubelet has stopped it and the object goes.
    /// Until then it holds its node's room, and controllers no longer count it.
    terminating: Option<u32>,
}

impl PodSim {
    fn new(namespace: &str, owner: Owner, created: u64) -> PodSim {
        PodSim {
            namespace: namespace.into(),
            owner,
            created,
            failed_pulls: 0,
            running_steps: 0,
            started: false,
            created_at: Instant::now(),
            running_since: None,
            first_of_index: true,
            terminating: None,
        }
    }
}

/// Millicores and MiB.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Res {
    cpu_m: i64,
    mem_mib: i64,
}

struct Node {
    name: String,
    cluster: String,
    allocatable: Res,
    /// What GKE's own pods (kube-system) request on it.
    system: Res,
    scopes: Vec<String>,
}

/// vCPUs and GiB of the predefined machine types of the families GKE node pools commonly use
/// (https://cloud.google.com/compute/docs/general-purpose-machines,
/// https://cloud.google.com/compute/docs/compute-optimized-machines).
fn machine_shape(name: &str) -> Option<(i64, f64)> {
    let parts: Vec<&str> = name.split('-').collect();
    let [family, class, size] = parts.as_slice() else {
        return None;
    };
    let vcpus: i64 = size.parse().ok()?;
    let gib_per_vcpu = match (*family, *class) {
        ("e2" | "n2" | "n2d" | "c2" | "c3", "standard") => 4.0,
        ("e2" | "n2" | "n2d", "highcpu") => 1.0,
        ("c3", "highcpu") => 2.0,
        ("e2" | "n2" | "n2d" | "c3", "highmem") => 8.0,
        _ => return None,
    };
    Some((vcpus, vcpus as f64 * gib_per_vcpu))
}

/// GKE's allocatable: capacity minus the CPU and memory reservation and the 100 MiB eviction
/// threshold (https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes).
fn gke_allocatable(vcpus: i64, gib: f64) -> Res {
    let cores = vcpus as f64;
    let band = |x: f64, from: f64, to: f64| (x.min(to) - from).max(0.0);
    let cpu_reserved = 1000.0
        * (0.06 * band(cores, 0.0, 1.0)
            + 0.01 * band(cores, 1.0, 2.0)
            + 0.005 * band(cores, 2.0, 4.0)
            + 0.0025 * band(cores, 4.0, f64::INFINITY));
    let mem_reserved = if gib < 1.0 {
        255.0
    } else {
        1024.0
            * (0.25 * band(gib, 0.0, 4.0)
                + 0.20 * band(gib, 4.0, 8.0)
                + 0.10 * band(gib, 8.0, 16.0)
                + 0.06 * band(gib, 16.0, 128.0)
                + 0.02 * band(gib, 128.0, f64::INFINITY))
    };
    Res {
        cpu_m: (cores * 1000.0 - cpu_reserved).floor() as i64,
        mem_mib: (gib * 1024.0 - mem_reserved - 100.0).floor() as i64,
    }
}

/// kube-system on every GKE node: kube-proxy 100m, fluentbit-gke 100m/200Mi,
/// gke-metrics-agent 6m/100Mi, pdcsi-node 10m/20Mi (`kubectl describe node`).
const DAEMONSETS: Res = Res {
    cpu_m: 216,
    mem_mib: 320,
};
/// One kube-dns replica (kube-dns, dnsmasq and sidecar containers); two run per cluster.
const KUBE_DNS: Res = Res {
    cpu_m: 260,
    mem_mib: 110,
};
/// metrics-server, kube-dns-autoscaler, konnectivity-agent and l7-default-backend together.
const OTHER_ADDONS: Res = Res {
    cpu_m: 88,
    mem_mib: 165,
};

fn nodes(s: &State) -> Vec<Node> {
    let pools = match &s.opts.node_source {
        Some(source) => (source.0)(),
        None => s.opts.node_pools.clone(),
    };
    let mut out = Vec::new();
    let mut per_cluster: HashMap<String, usize> = HashMap::new();
    for (p, pool) in pools.iter().enumerate() {
        // An unknown machine type has nothing allocatable here: its pods stay Pending.
        let allocatable = machine_shape(&pool.machine_type)
            .map(|(v, g)| gke_allocatable(v, g))
            .unwrap_or_default();
        for i in 0..pool.count {
            let n = per_cluster.entry(pool.cluster.clone()).or_default();
            // kube-dns spreads over the first two nodes, the other add-ons take the third.
            let mut system = DAEMONSETS;
            if *n < 2 {
                system.cpu_m += KUBE_DNS.cpu_m;
                system.mem_mib += KUBE_DNS.mem_mib;
            }
            if *n == 2 || (*n == 0 && pool.count == 1) {
                system.cpu_m += OTHER_ADDONS.cpu_m;
                system.mem_mib += OTHER_ADDONS.mem_mib;
            }
            *n += 1;
            let cluster = if pool.cluster.is_empty() {
                "emulated"
            } else {
                pool.cluster.as_str()
            };
            out.push(Node {
                name: format!("gke-{cluster}-benchstack-{p}{i:03}-a1b2"),
                cluster: pool.cluster.clone(),
                allocatable,
                system,
                scopes: pool.oauth_scopes.clone(),
            });
        }
    }
    out
}

fn cpu_quantity(q: &str) -> i64 {
    let q = q.trim();
    match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().map(|v| v.ceil() as i64).unwrap_or(0),
        None => q
            .parse::<f64>()
            .map(|v| (v * 1000.0).ceil() as i64)
            .unwrap_or(0),
    }
}

fn memory_quantity_mib(q: &str) -> i64 {
    let q = q.trim();
    let units: &[(&str, f64)] = &[
        ("Ki", 1.0 / 1024.0),
        ("Mi", 1.0),
        ("Gi", 1024.0),
        ("Ti", 1024.0 * 1024.0),
        ("k", 1e3 / 1048576.0),
        ("M", 1e6 / 1048576.0),
        ("G", 1e9 / 1048576.0),
        ("T", 1e12 / 1048576.0),
    ];
    let (num, f) = units
        .iter()
        .find_map(|(u, f)| q.strip_suffix(u).map(|n| (n, *f)))
        .unwrap_or((q, 1.0 / 1048576.0));
    num.parse::<f64>()
        .map(|v| (v * f).ceil() as i64)
        .unwrap_or(0)
}

/// The sum of a pod's containers' requests.
fn pod_requests(pod: &Value) -> Res {
    let mut r = Res::default();
    for c in pod["spec"]["containers"].as_array().into_iter().flatten() {
        let req = &c["resources"]["requests"];
        if let Some(q) = req["cpu"].as_str() {
            r.cpu_m += cpu_quantity(q);
        }
        if let Some(q) = req["memory"].as_str() {
            r.mem_mib += memory_quantity_mib(q);
        }
    }
    r
}

/// `repo:tag` with the default tag made explicit.
fn normalize_image(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_string()
    } else {
        format!("{image}:latest")
    }
}

/// Whether a node's scopes let it read a private registry (Artifact Registry and gcr.io are
/// read with the node's service-account token, limited by its access scopes).
fn may_read_storage(scopes: &[String]) -> bool {
    scopes.iter().any(|s| {
        let s = s.trim_start_matches("https://www.googleapis.com/auth/");
        matches!(
            s,
            "cloud-platform"
                | "devstorage.read_only"
                | "devstorage.read_write"
                | "devstorage.full_control"
        )
    })
}

/// Why a pull fails, as containerd reports it to the kubelet: (reason, message).
fn pull_error(s: &State, image: &str, node: &Node) -> Option<(&'static str, String)> {
    let valid = !image.is_empty()
        && !image.contains(char::is_whitespace)
        && !image.chars().any(|c| c.is_ascii_uppercase());
    if !valid {
        return Some((
            "InvalidImageName",
            format!(
                "Failed to apply default image tag \"{image}\": couldn't parse image name \"{image}\": invalid reference format"
            ),
        ));
    }
    let registry = s.opts.registry.as_ref()?;
    let full = normalize_image(image);
    match registry.get(&full) {
        None => Some((
            "ErrImagePull",
            format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": {full}: not found"
            ),
        )),
        Some(true) if !may_read_storage(&node.scopes) => {
            let host = full.split('/').next().unwrap_or("");
            let repo = full
                .split_once('/')
                .map(|(_, r)| r.split([':', '@']).next().unwrap_or(r))
                .unwrap_or("");
            Some((
                "ErrImagePull",
                format!(
                    "Failed to pull image \"{image}\": rpc error: code = Unknown desc = failed to pull and unpack image \"{full}\": failed to resolve reference \"{full}\": failed to authorize: failed to fetch oauth token: unexpected status from GET request to https://{host}/v2/token?scope=repository%3A{}%3Apull&service={host}: 403 Forbidden",
                    repo.replace('/', "%2F")
                ),
            ))
        }
        Some(_) => None,
    }
}

/// A short stable hash (the pod-template-hash of a ReplicaSet).
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// An int-or-percent of `replicas`: surge rounds up, unavailable down (the Deployment docs).
fn int_or_percent(v: &Value, replicas: i64, round_up: bool, default: &str) -> i64 {
    let text = match v {
        Value::Number(n) => return n.as_i64().unwrap_or(0).max(0),
        Value::String(s) => s.clone(),
        _ => default.to_string(),
    };
    let Some(p) = text.strip_suffix('%').and_then(|p| p.parse::<f64>().ok()) else {
        return text.parse().unwrap_or(0);
    };
    let x = p * replicas as f64 / 100.0;
    if round_up {
        x.ceil() as i64
    } else {
        x.floor() as i64
    }
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["containerStatuses"][0]["ready"] == json!(true)
}

/// One step of every controller: Services, Deployments, the scheduler, the kubelets.
fn reconcile(state: &Arc<Mutex<State>>) {
    let mut jobs_touched: Vec<(String, String)> = Vec::new();
    {
        let mut guard = lock(state);
        let s = &mut *guard;
        services_step(s);
        // Forget pods whose objects went (deleted by hand, vanished workers).
        let live: HashSet<String> = s
            .objects
            .keys()
            .filter(|k| k.0 == "pods")
            .map(|k| k.2.clone())
            .collect();
        s.sims.retain(|name, _| live.contains(name));
        let gone: Vec<(String, String)> = s
            .sims
            .iter_mut()
            .filter_map(|(name, sim)| {
                let left = sim.terminating.as_mut()?;
                *left = left.saturating_sub(1);
                (*left == 0).then(|| (sim.namespace.clone(), name.clone()))
            })
            .collect();
        for (ns, pod) in gone {
            remove_pod(s, &ns, &pod);
        }
        let deployments: Vec<Key> = s
            .objects
            .keys()
            .filter(|k| k.0 == "deployments")
            .cloned()
            .collect();
        for k in deployments {
            deployment_step(s, &k);
        }
        replacements_step(s);
        let nodes = nodes(s);
        schedule_step(s, &nodes);
        kubelet_step(state, s, &nodes, &mut jobs_touched);
        let deployments: Vec<Key> = s
            .objects
            .keys()
            .filter(|k| k.0 == "deployments")
            .cloned()
            .collect();
        for k in deployments {
            deployment_status(s, &k);
        }
    }
    for (ns, job) in jobs_touched {
        update_job_status(state, &ns, &job);
    }
}

/// The service controller: a LoadBalancer Service gets the cleanup finalizer; a deleted one
/// goes once its load balancer is removed.
fn services_step(s: &mut State) {
    const FINALIZER: &str = "service.kubernetes.io/load-balancer-cleanup";
    let cleanup = s.opts.load_balancer_cleanup;
    let done: Vec<Key> = s
        .deleting
        .iter()
        .filter(|(_, since)| since.elapsed() >= cleanup)
        .map(|(k, _)| k.clone())
        .collect();
    for k in done {
        s.deleting.remove(&k);
        s.objects.remove(&k);
        s.polls.remove(&k);
    }
    for (k, obj) in s.objects.iter_mut() {
        if k.0 == "services"
            && obj["spec"]["type"] == "LoadBalancer"
            && !obj["metadata"]["deletionTimestamp"].is_string()
            && !obj["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == FINALIZER))
        {
            let mut f = obj["metadata"]["finalizers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            f.push(json!(FINALIZER));
            obj["metadata"]["finalizers"] = json!(f);
        }
    }
}

/// The Deployment and ReplicaSet controllers: new pods up to `replicas + maxSurge`, old ones
/// down while `replicas - maxUnavailable` stay available (unhealthy old ones first).
fn deployment_step(s: &mut State, k: &Key) {
    let Some(d) = s.objects.get(k).cloned() else {
        return;
    };
    let (namespace, name) = (k.1.clone(), k.2.clone());
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let template = d["spec"]["template"].clone();
    let hash = template_hash(&template);
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let surge = int_or_percent(&ru["maxSurge"], replicas, true, "25%");
    let unavailable = int_or_percent(&ru["maxUnavailable"], replicas, false, "25%");
    let min_available = replicas - unavailable;

    let owned = |s: &State| -> (Vec<OwnedPod>, Vec<OwnedPod>) {
        let mut new = Vec::new();
        let mut old = Vec::new();
        for (pod, sim) in &s.sims {
            if sim.namespace != namespace
                || sim.owner != Owner::Deployment(name.clone())
                || sim.terminating.is_some()
            {
                continue;
            }
            let Some(obj) = s.objects.get(&key("pods", &namespace, pod)) else {
                continue;
            };
            let entry = (pod.clone(), pod_ready(obj), sim.created);
            if obj["metadata"]["labels"]["pod-template-hash"] == json!(hash) {
                new.push(entry);
            } else {
                old.push(entry);
            }
        }
        new.sort_by_key(|e| e.2);
        old.sort_by_key(|e| e.2);
        (new, old)
    };

    // Scale the new ReplicaSet up (or down past `replicas`, unready and newest first).
    let (new, old) = owned(s);
    let total = (new.len() + old.len()) as i64;
    let room = (replicas + surge - total).min(replicas - new.len() as i64);
    for _ in 0..room.max(0) {
        create_deployment_pod(s, &namespace, &name, &hash, &template);
    }
    if new.len() as i64 > replicas {
        let mut extra = new.clone();
        extra.sort_by_key(|e| (e.1, std::cmp::Reverse(e.2)));
        for (pod, _, _) in extra.iter().take(new.len() - replicas as usize) {
            terminate_pod(s, &namespace, pod);
        }
    }

    // Scale the old ones down.
    let (new, old) = owned(s);
    let new_unavailable = new.iter().filter(|e| !e.1).count() as i64;
    let all = (new.len() + old.len()) as i64;
    let mut max_down = all - min_available - new_unavailable;
    if max_down <= 0 || old.is_empty() {
        return;
    }
    for (pod, ready, _) in &old {
        if !ready && max_down > 0 {
            terminate_pod(s, &namespace, pod);
            max_down -= 1;
        }
    }
    let (new, old) = owned(s);
    let available = new.iter().chain(old.iter()).filter(|e| e.1).count() as i64;
    let mut down = (available - min_available).min(old.len() as i64);
    for (pod, _, _) in &old {
        if down <= 0 {
            break;
        }
        terminate_pod(s, &namespace, pod);
        down -= 1;
    }
}

fn create_deployment_pod(s: &mut State, namespace: &str, name: &str, hash: &str, template: &Value) {
    s.counter += 1;
    let pod_name = format!("{name}-{hash}-{}", pod_suffix(s.counter));
    let mut labels = template["metadata"]["labels"].clone();
    if !labels.is_object() {
        labels = json!({});
    }
    labels["pod-template-hash"] = json!(hash);
    let mut pod = json!({
        "metadata": {
            "labels": labels,
            "annotations": template["metadata"]["annotations"].clone(),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": format!("{name}-{hash}"), "controller": true}],
        },
        "spec": template["spec"].clone(),
        "status": {"phase": "Pending"},
    });
    let route = Route {
        resource: "pods".into(),
        namespace: namespace.into(),
        name: Some(pod_name.clone()),
        sub: None,
    };
    admit(s, &route, &pod_name, &mut pod);
    s.objects.insert(key("pods", namespace, &pod_name), pod);
    s.counter += 1;
    let created = s.counter;
    s.sims.insert(
        pod_name,
        PodSim::new(namespace, Owner::Deployment(name.into()), created),
    );
}

/// The scheduler: each unbound pod (oldest first) goes to the least allocated node of its
/// cluster that has room for its requests, or stays Pending as Unschedulable.
fn schedule_step(s: &mut State, nodes: &[Node]) {
    let mut used: Vec<Res> = nodes.iter().map(|n| n.system).collect();
    let mut unbound: Vec<(u64, String, String)> = Vec::new();
    for (k, pod) in &s.objects {
        if k.0 != "pods" {
            continue;
        }
        match pod["spec"]["nodeName"].as_str() {
            Some(node) => {
                if let Some(i) = nodes.iter().position(|n| n.name == node) {
                    let r = pod_requests(pod);
                    used[i].cpu_m += r.cpu_m;
                    used[i].mem_mib += r.mem_mib;
                }
            }
            None => {
                if let Some(sim) = s.sims.get(&k.2) {
                    unbound.push((sim.created, k.1.clone(), k.2.clone()));
                }
            }
        }
    }
    unbound.sort();
    for (_, namespace, pod_name) in unbound {
        let Some(sim) = s.sims.get(&pod_name) else {
            continue;
        };
        let kind = match sim.owner {
            Owner::Deployment(_) => "Deployment",
            Owner::Job(..) => "Job",
        };
        let cluster = s.opts.placement.get(kind).cloned();
        let k = key("pods", &namespace, &pod_name);
        let Some(pod) = s.objects.get_mut(&k) else {
            continue;
        };
        let req = pod_requests(pod);
        let candidates: Vec<usize> = (0..nodes.len())
            .filter(|&i| cluster.as_ref().is_none_or(|c| &nodes[i].cluster == c))
            .collect();
        let free = |i: usize| Res {
            cpu_m: nodes[i].allocatable.cpu_m - used[i].cpu_m,
            mem_mib: nodes[i].allocatable.mem_mib - used[i].mem_mib,
        };
        let best = candidates
            .iter()
            .copied()
            .filter(|&i| free(i).cpu_m >= req.cpu_m && free(i).mem_mib >= req.mem_mib)
            .max_by_key(|&i| (free(i).cpu_m, free(i).mem_mib, usize::MAX - i));
        match best {
            Some(i) => {
                used[i].cpu_m += req.cpu_m;
                used[i].mem_mib += req.mem_mib;
                pod["spec"]["nodeName"] = json!(nodes[i].name);
                pod["status"]["conditions"] = json!([
                    {"type": "PodScheduled", "status": "True",
                     "lastTransitionTime": "2025-01-01T00:00:00Z"}
                ]);
            }
            None => {
                pod["status"]["phase"] = json!("Pending");
                pod["status"]["conditions"] = json!([{
                    "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "lastTransitionTime": "2025-01-01T00:00:00Z",
                    "message": unschedulable_message(&candidates, &free, req),
                }]);
            }
        }
    }
}

/// The scheduler's FitError text: per reason how many nodes it ruled out, sorted as strings,
/// then the preemption verdict.
fn unschedulable_message(candidates: &[usize], free: &dyn Fn(usize) -> Res, req: Res) -> String {
    let n = candidates.len();
    if n == 0 {
        return "no nodes available to schedule pods".into();
    }
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for &i in candidates {
        let f = free(i);
        if f.cpu_m < req.cpu_m {
            *counts.entry("Insufficient cpu").or_default() += 1;
        }
        if f.mem_mib < req.mem_mib {
            *counts.entry("Insufficient memory").or_default() += 1;
        }
    }
    let mut reasons: Vec<String> = counts.iter().map(|(r, c)| format!("{c} {r}")).collect();
    reasons.sort();
    format!(
        "0/{n} nodes are available: {}. preemption: 0/{n} nodes are available: {n} No preemption victims found for incoming pod.",
        reasons.join(", ")
    )
}

/// The kubelets: pull the image of each bound pod that has not started, then start it
/// (a Job's pod runs its process; a Deployment's becomes ready after a few steps).
fn kubelet_step(
    state: &Arc<Mutex<State>>,
    s: &mut State,
    nodes: &[Node],
    jobs_touched: &mut Vec<(String, String)>,
) {
    let ready_after = s.opts.ready_after_polls;
    let pods: Vec<(String, PodSim)> = s.sims.iter().map(|(n, p)| (n.clone(), p.clone())).collect();
    for (pod_name, sim) in pods {
        if sim.terminating.is_some() {
            continue;
        }
        let k = key("pods", &sim.namespace, &pod_name);
        let Some(pod) = s.objects.get(&k).cloned() else {
            continue;
        };
        let Some(node) = pod["spec"]["nodeName"]
            .as_str()
            .and_then(|n| nodes.iter().find(|x| x.name == n))
        else {
            continue;
        };
        let container = pod["spec"]["containers"][0].clone();
        let cname = container["name"].as_str().unwrap_or("main").to_string();
        let image = container["image"].as_str().unwrap_or("").to_string();
        if sim.started {
            if let Owner::Job(_, index) = &sim.owner {
                job_pod_step(s, &pod_name, &sim, *index, &pod);
            }
            if let Owner::Deployment(dep) = &sim.owner {
                let crash = s.crash_looping.contains(dep);
                let never = s.never_ready.contains(dep);
                let steps = sim.running_steps + 1;
                if let Some(x) = s.sims.get_mut(&pod_name) {
                    x.running_steps = steps;
                }
                let Some(p) = s.objects.get_mut(&k) else {
                    continue;
                };
                if crash {
                    p["status"]["containerStatuses"] = json!([{
                        "name": cname, "image": image, "imageID": "", "ready": false,
                        "restartCount": steps, "started": false,
                        "state": {"waiting": {"reason": "CrashLoopBackOff",
                            "message": format!("back-off 10s restarting failed container={cname} pod={pod_name}_{}({})", sim.namespace, p["metadata"]["uid"].as_str().unwrap_or(""))}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error",
                            "startedAt": "2025-01-01T00:00:00Z", "finishedAt": "2025-01-01T00:00:01Z"}},
                    }]);
                } else {
                    let ready = !never && steps >= ready_after;
                    p["status"]["containerStatuses"][0]["ready"] = json!(ready);
                    p["status"]["conditions"] = json!([
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Initialized", "status": "True"},
                        {"type": "ContainersReady", "status": if ready { "True" } else { "False" }},
                        {"type": "Ready", "status": if ready { "True" } else { "False" },
                         "reason": if ready { "" } else { "ContainersNotReady" },
                         "message": if ready { String::new() } else { format!("containers with unready status: [{cname}]") }},
                    ]);
                }
            }
            continue;
        }
        if let Some((reason, message)) = pull_error(s, &image, node) {
            let failed = sim.failed_pulls + 1;
            if let Some(x) = s.sims.get_mut(&pod_name) {
                x.failed_pulls = failed;
            }
            // Every retry fails again; between retries the kubelet backs off.
            let (reason, message) = if reason == "ErrImagePull" && failed % 4 != 1 {
                (
                    "ImagePullBackOff",
                    format!("Back-off pulling image \"{image}\": ErrImagePull: {message}"),
                )
            } else {
                (reason, message)
            };
            if let Some(p) = s.objects.get_mut(&k) {
                p["status"]["phase"] = json!("Pending");
                p["status"]["containerStatuses"] = json!([{
                    "name": cname, "image": image, "imageID": "", "ready": false,
                    "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": reason, "message": message}},
                }]);
            }
            if let Owner::Job(job, _) = &sim.owner {
                jobs_touched.push((sim.namespace.clone(), job.clone()));
            }
            continue;
        }
        // A worker made slow to start waits in ContainerCreating until its delay is over.
        if let Owner::Job(_, index) = &sim.owner
            && sim.first_of_index
            && let Some(delay) = s.delayed_workers.get(index).copied()
            && sim.created_at.elapsed() < delay
        {
            if let Some(p) = s.objects.get_mut(&k) {
                p["status"]["phase"] = json!("Pending");
                p["status"]["containerStatuses"] = json!([{
                    "name": cname, "image": image, "imageID": "", "ready": false,
                    "restartCount": 0, "started": false,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                }]);
            }
            continue;
        }
        if let Some(x) = s.sims.get_mut(&pod_name) {
            x.started = true;
        }
        match &sim.owner {
            Owner::Job(job, index) => {
                start_job_pod(state, s, &sim.namespace, job, &pod_name, *index);
                jobs_touched.push((sim.namespace.clone(), job.clone()));
            }
            Owner::Deployment(_) => {
                if let Some(p) = s.objects.get_mut(&k) {
                    p["status"]["phase"] = json!("Running");
                    p["status"]["containerStatuses"] = json!([{
                        "name": cname, "image": image, "imageID": format!("{image}@sha256:0000"),
                        "ready": false, "restartCount": 0, "started": true,
                        "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}},
                    }]);
                }
            }
        }
    }
}

/// A running Job pod: its readiness probe (an `httpGet` on its pod IP, answered 2xx) and, for
/// a worker set to be killed, the OOM kill once it has run long enough.
fn job_pod_step(s: &mut State, pod_name: &str, sim: &PodSim, index: u32, pod: &Value) {
    if pod["status"]["phase"] != "Running" {
        return;
    }
    if sim.first_of_index
        && let (Some(after), Some(since)) = (s.killed_workers.get(&index), sim.running_since)
        && since.elapsed() >= *after
        && !s.oom_killed.contains(pod_name)
    {
        s.oom_killed.insert(pod_name.to_string());
        if let Some(child) = s.children.get(pod_name)
            && let Ok(mut c) = child.lock()
        {
            let _ = c.kill();
        }
        return;
    }
    let probe = &pod["spec"]["containers"][0]["readinessProbe"]["httpGet"];
    if !probe.is_object() || pod_ready(pod) {
        return;
    }
    let (Some(ip), Some(port)) = (
        pod["status"]["podIP"].as_str(),
        probe["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
    ) else {
        return;
    };
    let path = probe["path"].as_str().unwrap_or("/");
    let ready = matches!(
        http_blocking(ip, port, "GET", path, &[], Duration::from_millis(300)),
        Ok((200..=399, _))
    );
    if ready && let Some(p) = s.objects.get_mut(&key("pods", &sim.namespace, pod_name)) {
        p["status"]["containerStatuses"][0]["ready"] = json!(true);
        p["status"]["conditions"] = json!([
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": "True"},
            {"type": "Ready", "status": "True"},
        ]);
    }
}

/// What the Deployment controller reports: replicas of this template updated, ready and
/// available; Available; Progressing, False with ProgressDeadlineExceeded once nothing
/// changed for `progressDeadlineSeconds` (default 600) of emulated time.
fn deployment_status(s: &mut State, k: &Key) {
    let Some(d) = s.objects.get(k).cloned() else {
        return;
    };
    let (namespace, name) = (&k.1, &k.2);
    let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
    let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1).max(0);
    let hash = template_hash(&d["spec"]["template"]);
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let unavailable = int_or_percent(&ru["maxUnavailable"], replicas, false, "25%");
    let deadline = d["spec"]["progressDeadlineSeconds"]
        .as_f64()
        .unwrap_or(600.0);
    let mut total = 0usize;
    let mut updated = 0usize;
    let mut ready = 0usize;
    let mut updated_ready = 0usize;
    for (pod, sim) in &s.sims {
        if &sim.namespace != namespace
            || sim.owner != Owner::Deployment(name.clone())
            || sim.terminating.is_some()
        {
            continue;
        }
        let Some(obj) = s.objects.get(&key("pods", namespace, pod)) else {
            continue;
        };
        total += 1;
        let is_new = obj["metadata"]["labels"]["pod-template-hash"] == json!(hash);
        let r = pod_ready(obj);
        updated += usize::from(is_new);
        ready += usize::from(r);
        updated_ready += usize::from(is_new && r);
    }
    let snapshot = (generation, updated, ready, total);
    let now = Instant::now();
    let entry = s.progress.entry(k.clone()).or_insert((now, snapshot));
    if entry.1 != snapshot {
        *entry = (now, snapshot);
    }
    let since = entry.0.elapsed().as_secs_f64() * s.opts.time_scale;
    let complete =
        updated as i64 == replicas && updated_ready as i64 == replicas && total as i64 == replicas;
    let rs = format!("{name}-{hash}");
    let progressing = if complete {
        json!({"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
               "message": format!("ReplicaSet \"{rs}\" has successfully progressed.")})
    } else if since > deadline {
        json!({"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
               "message": format!("ReplicaSet \"{rs}\" has timed out progressing.")})
    } else {
        json!({"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
               "message": format!("ReplicaSet \"{rs}\" is progressing.")})
    };
    let available_ok = ready as i64 >= replicas - unavailable;
    let available = if available_ok {
        json!({"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
               "message": "Deployment has minimum availability."})
    } else {
        json!({"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable",
               "message": "Deployment does not have minimum availability."})
    };
    let mut status = json!({
        "observedGeneration": generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "conditions": [available, progressing],
    });
    let unavailable_replicas = (total as i64).max(replicas) - ready as i64;
    if unavailable_replicas > 0 {
        status["unavailableReplicas"] = json!(unavailable_replicas);
    }
    if let Some(obj) = s.objects.get_mut(k) {
        obj["status"] = status;
    }
}

/// `benchstack serve` with the example model on a random loopback address `127.X.Y.Z` on the
/// ports a Kubernetes Service of benchstack exposes (8500 gRPC, 8501 REST): what the
/// emulator's LoadBalancer address points at. Stopped on drop.
pub struct StandIn {
    pub ip: String,
    child: Child,
    _stderr: tempfile::NamedTempFile,
    _monitoring: tempfile::NamedTempFile,
}

impl StandIn {
    pub fn start(program: &Path, model_name: &str, model_base_path: &Path) -> StandIn {
        let mut last = String::new();
        // TF Serving's metrics page on, as the rendered serving pods have it.
        let monitoring = tempfile::NamedTempFile::new().expect("a monitoring config");
        std::fs::write(
            monitoring.path(),
            "prometheus_config { enable: true path: \"/monitoring/prometheus/metrics\" }\n",
        )
        .expect("write the monitoring config");
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
                .arg("--monitoring_config_file")
                .arg(monitoring.path())
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
                    _monitoring: monitoring,
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
