//! A loopback emulator of the GKE v1 REST API (the subset benchstack uses), for the real
//! google-cloud-container-v1 client. Include with
//! `#[path = "support/gke_emulator.rs"] mod gke_emulator;`.
//!
//! Routes (the query string is ignored):
//! - `GET    /v1/projects/P/locations/L/clusters`                  list
//! - `POST   /v1/projects/P/locations/L/clusters`                  create (body `{"cluster":…}`)
//! - `GET    /v1/projects/P/locations/L/clusters/C`                get
//! - `DELETE /v1/projects/P/locations/L/clusters/C`                delete
//! - `POST   /v1/projects/P/locations/L/clusters/C:setResourceLabels`
//! - `POST   /v1/projects/P/locations/L/clusters/C/nodePools/NP:setSize`
//! - `GET    /v1/projects/P/locations/L/operations/OP`             get operation
//!
//! Operations stay PENDING, then RUNNING, for `polls_until_done` polls and are DONE after;
//! their effect (a cluster RUNNING, deleted, resized) lands when they finish. Errors are
//! `{"error":{"code","message","status"}}`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

/// What a finished operation does.
#[derive(Debug, Clone)]
enum Effect {
    Create,
    Delete,
    Resize { pool: String, count: i64 },
    Labels,
}

#[derive(Debug, Clone)]
struct Op {
    name: String,
    op_type: &'static str,
    /// `projects/P/locations/L/clusters/C`
    cluster: String,
    location: String,
    polls_left: u32,
    done: bool,
    effect: Effect,
    error: Option<String>,
}

#[derive(Default)]
struct State {
    /// By `projects/P/locations/L/clusters/C`.
    clusters: BTreeMap<String, Value>,
    operations: BTreeMap<String, Op>,
    next_op: u64,
    polls_until_done: u32,
    cluster_endpoint: String,
    cluster_ca: String,
    fail_next_operation: Option<String>,
    refuse_next_create: bool,
    deny_next_request: bool,
    /// Cluster name → how many more GETs of it answer 503 UNAVAILABLE (u32::MAX: all).
    unavailable_gets: BTreeMap<String, u32>,
    requests: Vec<(String, String)>,
}

/// The legacy `masterAuth` password and client key every cluster reports: a state or plan
/// file that contains it has recorded a credential.
pub const LEGACY_SECRET: &str = "LEGACY-CREDENTIAL-b8e1f0c4";

pub struct GkeEmulator {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// A PEM certificate-shaped text; nothing verifies it against an http:// endpoint.
fn fake_ca_pem() -> String {
    let body =
        base64::engine::general_purpose::STANDARD.encode([0x30u8, 0x82, 0x01, 0x0a].repeat(12));
    format!("-----BEGIN CERTIFICATE-----\n{body}\n-----END CERTIFICATE-----\n")
}

impl GkeEmulator {
    /// Listens on 127.0.0.1:0 in a background thread. Operations finish after 2 polls;
    /// clusters report the bare endpoint `127.0.0.1` until `set_cluster_endpoint`.
    pub fn start() -> GkeEmulator {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            polls_until_done: 2,
            cluster_endpoint: "127.0.0.1".into(),
            cluster_ca: base64::engine::general_purpose::STANDARD.encode(fake_ca_pem()),
            ..State::default()
        }));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let shared = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        accepted = listener.accept() => {
                            let Ok((stream, _)) = accepted else { continue };
                            let state = shared.clone();
                            tokio::spawn(async move {
                                let service = service_fn(move |req| {
                                    let state = state.clone();
                                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                                });
                                let _ = hyper::server::conn::http1::Builder::new()
                                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                    .await;
                            });
                        }
                    }
                }
            });
        });
        GkeEmulator {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// The base URL to give the client (`BENCHSTACK_GKE_ENDPOINT`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many polls an operation stays PENDING/RUNNING (0: DONE at once).
    pub fn set_polls_until_done(&self, polls: u32) {
        self.state.lock().unwrap().polls_until_done = polls;
    }

    /// The endpoint new clusters report (e.g. `http://127.0.0.1:PORT` of a Kubernetes
    /// emulator).
    pub fn set_cluster_endpoint(&self, endpoint: &str) {
        self.state.lock().unwrap().cluster_endpoint = endpoint.to_string();
    }

    /// The `masterAuth.clusterCaCertificate` new clusters report (base64 of a PEM).
    pub fn set_cluster_ca(&self, base64_pem: &str) {
        self.state.lock().unwrap().cluster_ca = base64_pem.to_string();
    }

    /// The next operation started ends DONE with this error (a create leaves its cluster
    /// in ERROR, as GKE does).
    pub fn fail_next_operation(&self, message: &str) {
        self.state.lock().unwrap().fail_next_operation = Some(message.to_string());
    }

    /// The next request of any kind is refused with 403 PERMISSION_DENIED, as GKE answers an
    /// account without container.clusters permissions (or a project without the API).
    pub fn deny_next_request(&self) {
        self.state.lock().unwrap().deny_next_request = true;
    }

    /// The next `times` GETs of cluster `name` (u32::MAX: every one) are answered 503
    /// UNAVAILABLE, as GKE answers during an outage of its control plane API.
    pub fn unavailable_cluster_gets(&self, name: &str, times: u32) {
        self.state
            .lock()
            .unwrap()
            .unavailable_gets
            .insert(name.to_string(), times);
    }

    /// The message of those 503s.
    pub const UNAVAILABLE_MESSAGE: &'static str = "The service is currently unavailable.";

    /// The next create is refused with 429 RESOURCE_EXHAUSTED, as a CPU quota does.
    pub fn refuse_next_create_with_quota(&self) {
        self.state.lock().unwrap().refuse_next_create = true;
    }

    /// Removes a cluster as if someone deleted it by hand. False if there was none.
    pub fn delete_outside(&self, project: &str, location: &str, name: &str) -> bool {
        let key = format!("projects/{project}/locations/{location}/clusters/{name}");
        self.state.lock().unwrap().clusters.remove(&key).is_some()
    }

    /// Resizes the cluster's first node pool by hand. False if there is no such cluster.
    pub fn resize_outside(&self, project: &str, location: &str, name: &str, count: i64) -> bool {
        let key = format!("projects/{project}/locations/{location}/clusters/{name}");
        let mut st = self.state.lock().unwrap();
        let Some(c) = st.clusters.get_mut(&key) else {
            return false;
        };
        c["currentNodeCount"] = json!(count);
        true
    }

    /// Sets a cluster's status (e.g. `DEGRADED`) and status message by hand.
    pub fn set_cluster_status(
        &self,
        project: &str,
        location: &str,
        name: &str,
        status: &str,
        message: &str,
    ) -> bool {
        let key = format!("projects/{project}/locations/{location}/clusters/{name}");
        let mut st = self.state.lock().unwrap();
        let Some(c) = st.clusters.get_mut(&key) else {
            return false;
        };
        c["status"] = json!(status);
        c["statusMessage"] = json!(message);
        true
    }

    /// The cluster as the API would return it.
    pub fn cluster(&self, project: &str, location: &str, name: &str) -> Option<Value> {
        let key = format!("projects/{project}/locations/{location}/clusters/{name}");
        self.state.lock().unwrap().clusters.get(&key).cloned()
    }

    /// The stored nodePool JSON of every cluster named `cluster_name` (`config.machineType`,
    /// `config.oauthScopes`, `initialNodeCount`).
    pub fn node_pools(&self, cluster_name: &str) -> Vec<Value> {
        let suffix = format!("/clusters/{cluster_name}");
        self.state
            .lock()
            .unwrap()
            .clusters
            .iter()
            .filter(|(k, _)| k.ends_with(&suffix))
            .flat_map(|(_, c)| c["nodePools"].as_array().cloned().unwrap_or_default())
            .collect()
    }

    pub fn cluster_count(&self) -> usize {
        self.state.lock().unwrap().clusters.len()
    }

    /// Every request so far, as (method, path without query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests with this method and exactly this path (no query).
    pub fn count(&self, method: &str, path: &str) -> usize {
        self.count_where(method, |p| p == path)
    }

    /// Requests with this method whose path contains `fragment`.
    pub fn count_containing(&self, method: &str, fragment: &str) -> usize {
        self.count_where(method, |p| p.contains(fragment))
    }

    fn count_where(&self, method: &str, matches: impl Fn(&str) -> bool) -> usize {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(m, p)| m == method && matches(p))
            .count()
    }
}

impl Drop for GkeEmulator {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reply(status: StatusCode, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=UTF-8")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn error(code: u16, status: &str, message: &str) -> Response<Full<Bytes>> {
    reply(
        StatusCode::from_u16(code).unwrap(),
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

/// A stable fingerprint of a label set (GKE's is opaque; this one changes with the labels).
fn fingerprint(labels: &Value) -> String {
    let text = labels.to_string();
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{:016x}", h)[..8].to_string()
}

async fn handle(state: &Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, "INVALID_ARGUMENT", "unreadable body"),
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(400, "INVALID_ARGUMENT", &format!("invalid JSON: {e}")),
        }
    };
    let mut st = state.lock().unwrap();
    st.requests.push((method.to_string(), path.clone()));
    if method == Method::GET
        && let Some(name) = path
            .strip_prefix("/v1/projects/")
            .and_then(|rest| rest.split_once("/clusters/"))
            .map(|(_, name)| name.to_string())
        && !name.contains('/')
        && let Some(left) = st.unavailable_gets.get_mut(&name)
        && *left > 0
    {
        if *left != u32::MAX {
            *left -= 1;
        }
        return error(503, "UNAVAILABLE", GkeEmulator::UNAVAILABLE_MESSAGE);
    }
    if std::mem::take(&mut st.deny_next_request) {
        return error(
            403,
            "PERMISSION_DENIED",
            "Required \"container.clusters.create\" permission(s) for \"projects/bench-proj\".",
        );
    }
    route(&mut st, &method, &path, body)
}

fn route(st: &mut State, method: &Method, path: &str, body: Value) -> Response<Full<Bytes>> {
    let Some(rest) = path.strip_prefix("/v1/") else {
        return error(404, "NOT_FOUND", &format!("unknown path {path}"));
    };
    // `…/clusters/C:setResourceLabels`, `…/nodePools/NP:setSize`
    let (resource, verb) = match rest.rsplit_once(':') {
        Some((r, v)) if !v.contains('/') => (r, Some(v)),
        _ => (rest, None),
    };
    let parts: Vec<&str> = resource.split('/').collect();
    match (method, parts.as_slice(), verb) {
        (&Method::GET, ["projects", p, "locations", l, "clusters"], None) => {
            let prefix = format!("projects/{p}/locations/{l}/clusters/");
            let clusters: Vec<Value> = st
                .clusters
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect();
            reply(StatusCode::OK, json!({ "clusters": clusters }))
        }
        (&Method::POST, ["projects", p, "locations", l, "clusters"], None) => {
            create_cluster(st, p, l, body)
        }
        (&Method::GET, ["projects", _, "locations", _, "clusters", _], None) => {
            match st.clusters.get(resource) {
                Some(c) => reply(StatusCode::OK, c.clone()),
                None => not_found_cluster(resource),
            }
        }
        (&Method::DELETE, ["projects", _, "locations", l, "clusters", _], None) => {
            if !st.clusters.contains_key(resource) {
                return not_found_cluster(resource);
            }
            if let Some(c) = st.clusters.get_mut(resource) {
                c["status"] = json!("STOPPING");
            }
            start_operation(st, "DELETE_CLUSTER", resource, l, Effect::Delete)
        }
        (
            &Method::POST,
            ["projects", _, "locations", l, "clusters", _],
            Some("setResourceLabels"),
        ) => {
            let Some(c) = st.clusters.get_mut(resource) else {
                return not_found_cluster(resource);
            };
            let given = body["labelFingerprint"].as_str().unwrap_or_default();
            if given != c["labelFingerprint"].as_str().unwrap_or_default() {
                return error(
                    412,
                    "FAILED_PRECONDITION",
                    "Labels could not be set due to fingerprint mismatch",
                );
            }
            let labels = if body["resourceLabels"].is_object() {
                body["resourceLabels"].clone()
            } else {
                json!({})
            };
            c["labelFingerprint"] = json!(fingerprint(&labels));
            c["resourceLabels"] = labels;
            let location = l.to_string();
            start_operation(st, "SET_LABELS", resource, &location, Effect::Labels)
        }
        (
            &Method::POST,
            [
                "projects",
                p,
                "locations",
                l,
                "clusters",
                c,
                "nodePools",
                np,
            ],
            Some("setSize"),
        ) => {
            let key = format!("projects/{p}/locations/{l}/clusters/{c}");
            let Some(cluster) = st.clusters.get_mut(&key) else {
                return not_found_cluster(&key);
            };
            let has_pool = cluster["nodePools"]
                .as_array()
                .is_some_and(|a| a.iter().any(|pool| pool["name"] == *np));
            if !has_pool {
                return error(404, "NOT_FOUND", &format!("Node pool \"{np}\" not found."));
            }
            let Some(count) = body["nodeCount"].as_i64() else {
                return error(400, "INVALID_ARGUMENT", "nodeCount is required");
            };
            cluster["status"] = json!("RECONCILING");
            let effect = Effect::Resize {
                pool: np.to_string(),
                count,
            };
            start_operation(st, "SET_NODE_POOL_SIZE", &key, l, effect)
        }
        (&Method::GET, ["projects", _, "locations", _, "operations", op], None) => {
            poll_operation(st, op)
        }
        _ => error(404, "NOT_FOUND", &format!("unknown method {method} {path}")),
    }
}

fn not_found_cluster(key: &str) -> Response<Full<Bytes>> {
    let name = key.rsplit('/').next().unwrap_or(key);
    error(
        404,
        "NOT_FOUND",
        &format!("Not found: {key}. Cluster \"{name}\" not found."),
    )
}

fn create_cluster(
    st: &mut State,
    project: &str,
    location: &str,
    body: Value,
) -> Response<Full<Bytes>> {
    if std::mem::take(&mut st.refuse_next_create) {
        return error(
            429,
            "RESOURCE_EXHAUSTED",
            &format!(
                "Insufficient regional quota to satisfy request: resource \"CPUS\": request requires '64.0' and is short '40.0'. project has a quota of '24.0' with '24.0' available. View and manage quotas at https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={project}."
            ),
        );
    }
    let mut cluster = body["cluster"].clone();
    let Some(name) = cluster["name"].as_str().map(str::to_string) else {
        return error(400, "INVALID_ARGUMENT", "Cluster.name is required");
    };
    let key = format!("projects/{project}/locations/{location}/clusters/{name}");
    if st.clusters.contains_key(&key) {
        return error(409, "ALREADY_EXISTS", &format!("Already exists: {key}."));
    }
    let Some(pools) = cluster["nodePools"].as_array_mut() else {
        return error(400, "INVALID_ARGUMENT", "Cluster.node_pools is required");
    };
    for pool in pools.iter_mut() {
        if pool["config"]["machineType"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            pool["config"]["machineType"] = json!("e2-medium");
        }
        if pool["config"]["diskSizeGb"].as_i64().unwrap_or(0) == 0 {
            pool["config"]["diskSizeGb"] = json!(100);
        }
        pool["locations"] = json!([location]);
        pool["status"] = json!("PROVISIONING");
        pool["selfLink"] = json!(format!(
            "https://container.googleapis.com/v1/{key}/nodePools/{}",
            pool["name"].as_str().unwrap_or_default()
        ));
    }
    let labels = if cluster["resourceLabels"].is_object() {
        cluster["resourceLabels"].clone()
    } else {
        json!({})
    };
    cluster["resourceLabels"] = labels.clone();
    cluster["labelFingerprint"] = json!(fingerprint(&labels));
    cluster["location"] = json!(location);
    cluster["zone"] = json!(location);
    cluster["status"] = json!("PROVISIONING");
    cluster["selfLink"] = json!(format!("https://container.googleapis.com/v1/{key}"));
    cluster["createTime"] = json!("2025-01-01T00:00:00+00:00");
    cluster["currentNodeCount"] = json!(0);
    st.clusters.insert(key.clone(), cluster);
    start_operation(st, "CREATE_CLUSTER", &key, location, Effect::Create)
}

fn start_operation(
    st: &mut State,
    op_type: &'static str,
    cluster: &str,
    location: &str,
    effect: Effect,
) -> Response<Full<Bytes>> {
    st.next_op += 1;
    let name = format!(
        "operation-{}-{:08x}",
        1_700_000_000_000u64 + st.next_op,
        st.next_op
    );
    let mut op = Op {
        name: name.clone(),
        op_type,
        cluster: cluster.to_string(),
        location: location.to_string(),
        polls_left: st.polls_until_done,
        done: false,
        effect,
        error: st.fail_next_operation.take(),
    };
    if op.polls_left == 0 {
        finish(st, &mut op);
    }
    let json = op_json(&op, "PENDING");
    st.operations.insert(name, op);
    reply(StatusCode::OK, json)
}

fn poll_operation(st: &mut State, name: &str) -> Response<Full<Bytes>> {
    let Some(mut op) = st.operations.get(name).cloned() else {
        return error(
            404,
            "NOT_FOUND",
            &format!("Operation \"{name}\" not found."),
        );
    };
    if !op.done {
        if op.polls_left > 0 {
            op.polls_left -= 1;
        }
        if op.polls_left == 0 {
            finish(st, &mut op);
        }
    }
    let json = op_json(&op, "RUNNING");
    st.operations.insert(name.to_string(), op);
    reply(StatusCode::OK, json)
}

/// Applies the operation's effect (or its failure) and marks it DONE.
fn finish(st: &mut State, op: &mut Op) {
    op.done = true;
    let endpoint = st.cluster_endpoint.clone();
    let ca = st.cluster_ca.clone();
    let Some(cluster) = st.clusters.get_mut(&op.cluster) else {
        return;
    };
    if let Some(message) = &op.error {
        if matches!(op.effect, Effect::Create) {
            cluster["status"] = json!("ERROR");
            cluster["statusMessage"] = json!(message);
        } else {
            cluster["status"] = json!("RUNNING");
        }
        return;
    }
    match &op.effect {
        Effect::Create => {
            cluster["status"] = json!("RUNNING");
            cluster["endpoint"] = json!(endpoint);
            // GKE still returns legacy basic-auth and client-certificate credentials for
            // clusters made with them: benchstack must never record them.
            cluster["masterAuth"] = json!({
                "clusterCaCertificate": ca,
                "username": "admin",
                "password": LEGACY_SECRET,
                "clientCertificate": LEGACY_SECRET,
                "clientKey": LEGACY_SECRET,
            });
            cluster["currentMasterVersion"] = json!("1.33.5-gke.1000000");
            let mut total = 0;
            if let Some(pools) = cluster["nodePools"].as_array_mut() {
                for pool in pools {
                    pool["status"] = json!("RUNNING");
                    total += pool["initialNodeCount"].as_i64().unwrap_or(0);
                }
            }
            cluster["currentNodeCount"] = json!(total);
        }
        Effect::Delete => {
            st.clusters.remove(&op.cluster);
        }
        Effect::Resize { pool: _, count } => {
            cluster["status"] = json!("RUNNING");
            cluster["currentNodeCount"] = json!(count);
        }
        Effect::Labels => {}
    }
}

fn op_json(op: &Op, in_progress: &str) -> Value {
    let status = if op.done { "DONE" } else { in_progress };
    let mut v = json!({
        "name": op.name,
        "zone": op.location,
        "location": op.location,
        "operationType": op.op_type,
        "status": status,
        "selfLink": format!("https://container.googleapis.com/v1/projects/{}/locations/{}/operations/{}",
            op.cluster.split('/').nth(1).unwrap_or_default(), op.location, op.name),
        "targetLink": format!("https://container.googleapis.com/v1/{}", op.cluster),
        "startTime": "2025-01-01T00:00:00Z",
    });
    if op.done {
        v["endTime"] = json!("2025-01-01T00:05:00Z");
        if let Some(message) = &op.error {
            v["statusMessage"] = json!(message);
            v["error"] = json!({ "code": 13, "message": message });
        }
    }
    v
}
