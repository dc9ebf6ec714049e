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
//!
//! What GKE does that the emulator models (sources in the comments where it happens):
//! - node pools keep what was asked (`config.oauthScopes`, `serviceAccount`, `machineType`,
//!   `labels`, `resourceLabels`); what was not asked gets GKE's defaults, and an empty
//!   `oauthScopes` gets only the logging and monitoring scopes (no registry access);
//! - a create over the project's CPU quota is refused with 403 PERMISSION_DENIED and GKE's
//!   "Insufficient regional quota to satisfy request: resource \"CPUS\" …" message;
//! - while another operation (an upgrade, an auto-repair) runs on a cluster, changes to it
//!   are refused with 400 FAILED_PRECONDITION;
//! - a project without the named network refuses the create with 400 INVALID_ARGUMENT;
//! - two private clusters in one network with the same control-plane range: the second
//!   one's creation fails;
//! - `locations/-` lists the clusters of every location.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::http_emulator::{self, Reply, Request, Server};
use base64::Engine;
use hyper::{Method, StatusCode};
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
    op_type: String,
    /// `projects/P/locations/L/clusters/C`
    cluster: String,
    location: String,
    polls_left: u32,
    done: bool,
    effect: Effect,
    error: Option<String>,
    /// A system operation ends at this time (it has no effect of its own).
    until: Option<Instant>,
}

/// An operation GKE started on its own on a cluster (not through this API).
#[derive(Debug, Clone)]
struct SystemOperation {
    name: String,
    op_type: String,
    until: Instant,
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
    deny_next_request: bool,
    /// Regional `CPUS` quota (per region) and project-wide `CPUS_ALL_REGIONS`; None: no limit.
    cpus_quota: Option<f64>,
    cpus_all_regions_quota: Option<f64>,
    /// Operations GKE runs on its own (upgrades, auto-repairs), by cluster key: while one
    /// runs, changes to the cluster are refused.
    system_operations: BTreeMap<String, SystemOperation>,
    /// Projects whose `default` network was deleted, and networks added by hand.
    no_default_network: BTreeSet<String>,
    networks: BTreeSet<(String, String)>,
    /// Cluster name → how many more GETs of it answer 503 UNAVAILABLE (u32::MAX: all).
    unavailable_gets: BTreeMap<String, u32>,
    requests: Vec<(String, String)>,
    /// The HTTP status of every answer, in order.
    answers: Vec<u16>,
}

/// The legacy `masterAuth` password and client key every cluster reports: a state or plan
/// file that contains it has recorded a credential.
pub const LEGACY_SECRET: &str = "LEGACY-CREDENTIAL-b8e1f0c4";

pub struct GkeEmulator {
    server: Server,
    state: Arc<Mutex<State>>,
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
        let state = Arc::new(Mutex::new(State {
            polls_until_done: 2,
            cluster_endpoint: "127.0.0.1".into(),
            cluster_ca: base64::engine::general_purpose::STANDARD.encode(fake_ca_pem()),
            ..State::default()
        }));
        let shared = state.clone();
        let server = Server::start(move |req| handle(&shared, &req));
        GkeEmulator { server, state }
    }

    /// The base URL to give the client (`BENCHSTACK_GKE_ENDPOINT`).
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// How many polls an operation stays PENDING/RUNNING (0: DONE at once).
    pub fn set_polls_until_done(&self, polls: u32) {
        self.state.lock().unwrap().polls_until_done = polls;
    }

    /// The endpoint new clusters report (e.g. `127.0.0.1:PORT` of a Kubernetes emulator).
    /// GKE reports the control plane's IP address, never a URL (`Cluster.endpoint`: "The IP
    /// address of this cluster's master endpoint. The endpoint can be accessed from the
    /// internet at https://username:password@endpoint/",
    /// https://cloud.google.com/kubernetes-engine/docs/reference/rest/v1/projects.locations.clusters#Cluster);
    /// the port is the emulator's only addition.
    pub fn set_cluster_endpoint(&self, endpoint: &str) {
        assert!(
            !endpoint.contains("://"),
            "GKE reports an address, not a URL: {endpoint}"
        );
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

    /// The project's regional `CPUS` quota (in every region): a create whose nodes need more
    /// vCPUs than the region has left is refused with 403 PERMISSION_DENIED.
    pub fn set_cpus_quota(&self, vcpus: f64) {
        self.state.lock().unwrap().cpus_quota = Some(vcpus);
    }

    /// The project-wide `CPUS_ALL_REGIONS` quota.
    pub fn set_cpus_all_regions_quota(&self, vcpus: f64) {
        self.state.lock().unwrap().cpus_all_regions_quota = Some(vcpus);
    }

    /// GKE starts an operation of its own on cluster `name` (e.g. `UPGRADE_MASTER`,
    /// `AUTO_REPAIR_NODES`) that runs for `duration`: until then every change to the cluster
    /// (delete, resize, labels) is refused with 400 FAILED_PRECONDITION. The operation can be
    /// read through the operations API. Returns its name; None without such a cluster.
    pub fn start_system_operation(
        &self,
        name: &str,
        op_type: &str,
        duration: Duration,
    ) -> Option<String> {
        let mut st = self.state.lock().unwrap();
        let key = st
            .clusters
            .keys()
            .find(|k| k.ends_with(&format!("/clusters/{name}")))?
            .clone();
        st.next_op += 1;
        let op_name = format!(
            "operation-{}-{:08x}",
            1_700_000_000_000u64 + st.next_op,
            st.next_op
        );
        let location = key.split('/').nth(3).unwrap_or_default().to_string();
        st.operations.insert(
            op_name.clone(),
            Op {
                name: op_name.clone(),
                op_type: op_type.to_string(),
                cluster: key.clone(),
                location,
                polls_left: 0,
                done: false,
                effect: Effect::Labels,
                error: None,
                until: Some(Instant::now() + duration),
            },
        );
        st.system_operations.insert(
            key,
            SystemOperation {
                name: op_name.clone(),
                op_type: op_type.to_string(),
                until: Instant::now() + duration,
            },
        );
        Some(op_name)
    }

    /// The project has no `default` network (deleted, or never made under an organisation
    /// policy such as `compute.skipDefaultNetworkCreation`).
    pub fn remove_default_network(&self, project: &str) {
        self.state
            .lock()
            .unwrap()
            .no_default_network
            .insert(project.to_string());
    }

    /// A VPC network the project has besides `default`.
    pub fn add_network(&self, project: &str, network: &str) {
        self.state
            .lock()
            .unwrap()
            .networks
            .insert((project.to_string(), network.to_string()));
    }

    /// The node pools (as the API returns them) of the cluster called `cluster_name`, in any
    /// project and location; empty when there is no such cluster.
    pub fn node_pools(&self, cluster_name: &str) -> Vec<serde_json::Value> {
        let st = self.state.lock().unwrap();
        st.clusters
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/clusters/{cluster_name}")))
            .and_then(|(_, c)| c["nodePools"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Requests answered with this HTTP status so far.
    pub fn answered(&self, status: u16) -> usize {
        self.state
            .lock()
            .unwrap()
            .answers
            .iter()
            .filter(|s| **s == status)
            .count()
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

fn reply(status: StatusCode, body: Value) -> Reply {
    http_emulator::json(status, &body)
}

fn error(code: u16, status: &str, message: &str) -> Reply {
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

fn handle(state: &Arc<Mutex<State>>, req: &Request) -> Reply {
    let method = req.method.clone();
    let path = req.path().to_string();
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(e) => return error(400, "INVALID_ARGUMENT", &format!("invalid JSON: {e}")),
        }
    };
    let mut st = state.lock().unwrap();
    let st = &mut *st;
    st.requests.push((method.to_string(), path.clone()));
    let response = answer(st, &method, &path, body);
    st.answers.push(response.status().as_u16());
    response
}

fn answer(st: &mut State, method: &Method, path: &str, body: Value) -> Reply {
    if *method == Method::GET
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
    if *method != Method::GET
        && let Some(refusal) = busy_refusal(st, path)
    {
        return refusal;
    }
    route(st, method, path, body)
}

/// GKE runs one operation at a time on a cluster: a change while an upgrade or an auto-repair
/// of its own runs is refused with 400 FAILED_PRECONDITION, in one of two wordings seen from
/// the API: "Operation operation-… is currently upgrading cluster C. Please wait and try again
/// once it is done." (hashicorp/terraform-provider-google#3650, banzaicloud/pipeline#623) and
/// "Cluster is running incompatible operation operation-…." (rancher/gke-operator#509).
/// Terraform modules and CI scripts retry on both
/// (terraform-google-modules/terraform-google-kubernetes-engine#2469).
fn busy_refusal(st: &mut State, path: &str) -> Option<Reply> {
    let rest = path.strip_prefix("/v1/")?;
    let resource = rest.split(':').next().unwrap_or(rest);
    let parts: Vec<&str> = resource.split('/').collect();
    if parts.len() < 6 || parts[4] != "clusters" {
        return None;
    }
    let key = parts[..6].join("/");
    let busy = st.system_operations.get(&key)?.clone();
    if Instant::now() >= busy.until {
        st.system_operations.remove(&key);
        if let Some(op) = st.operations.get_mut(&busy.name) {
            op.done = true;
        }
        return None;
    }
    let cluster = parts[5];
    let message = if busy.op_type == "UPGRADE_MASTER" {
        format!(
            "Operation {} is currently upgrading cluster {cluster}. Please wait and try again once it is done.",
            busy.name
        )
    } else {
        format!("Cluster is running incompatible operation {}.", busy.name)
    };
    Some(error(400, "FAILED_PRECONDITION", &message))
}

fn route(st: &mut State, method: &Method, path: &str, body: Value) -> Reply {
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
            // `-` lists every location of the project (API reference,
            // projects.locations.clusters.list: "Specify \"-\" to list clusters in all
            // locations"). There is no server-side filter: callers filter on the labels.
            let prefix = if *l == "-" {
                format!("projects/{p}/locations/")
            } else {
                format!("projects/{p}/locations/{l}/clusters/")
            };
            let clusters: Vec<Value> = st
                .clusters
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| v.clone())
                .collect();
            reply(
                StatusCode::OK,
                json!({ "clusters": clusters, "missingZones": [] }),
            )
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

fn not_found_cluster(key: &str) -> Reply {
    let name = key.rsplit('/').next().unwrap_or(key);
    error(
        404,
        "NOT_FOUND",
        &format!("Not found: {key}. Cluster \"{name}\" not found."),
    )
}

/// The vCPUs of a Compute Engine machine type: the shared-core types have 2 (e2-micro,
/// e2-small, e2-medium) or 1 (f1-micro, g1-small); the others end in their vCPU count
/// (`e2-highcpu-8`, `n2-standard-32`). https://cloud.google.com/compute/docs/machine-resource
fn vcpus(machine_type: &str) -> f64 {
    match machine_type {
        "f1-micro" | "g1-small" => 1.0,
        "e2-micro" | "e2-small" | "e2-medium" => 2.0,
        other => other
            .rsplit('-')
            .next()
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(2.0),
    }
}

/// `us-central1-a` → `us-central1`; a region stays itself.
fn region_of(location: &str) -> &str {
    match location.rsplit_once('-') {
        Some((region, zone)) if zone.len() == 1 && region.contains('-') => region,
        _ => location,
    }
}

/// The vCPUs a cluster's nodes use (or will use): every pool's nodes in every one of its
/// locations (the live count once there is one, for a cluster of one pool).
fn cluster_vcpus(cluster: &Value) -> f64 {
    let pools = cluster["nodePools"].as_array().map_or(0, |p| p.len());
    let live = cluster["currentNodeCount"].as_f64().unwrap_or(0.0);
    if pools == 1 && live > 0.0 {
        let machine = cluster["nodePools"][0]["config"]["machineType"]
            .as_str()
            .unwrap_or("e2-medium");
        return live * vcpus(machine);
    }
    cluster["nodePools"]
        .as_array()
        .map(|pools| {
            pools
                .iter()
                .map(|p| {
                    let zones = p["locations"].as_array().map_or(1, |z| z.len().max(1));
                    let nodes = p["initialNodeCount"].as_f64().unwrap_or(0.0);
                    nodes
                        * zones as f64
                        * vcpus(p["config"]["machineType"].as_str().unwrap_or("e2-medium"))
                })
                .sum()
        })
        .unwrap_or(0.0)
}

/// GKE checks the Compute Engine quotas when the create arrives and refuses it with
/// **403 PERMISSION_DENIED** (not 429 RESOURCE_EXHAUSTED), in these words: regional
/// `CPUS` — google/caliban#66, googlecodelabs/feedback#950,
/// GoogleCloudPlatform/cloud-ops-sandbox#44; project-wide `CPUS_ALL_REGIONS` (as "Insufficient
/// project quota") — kubeflow/examples#597.
fn quota_refusal(st: &State, project: &str, location: &str, requested: f64) -> Option<Reply> {
    let region = region_of(location);
    let in_project = |k: &&String| k.starts_with(&format!("projects/{project}/"));
    let used_in = |same_region: bool| -> f64 {
        st.clusters
            .iter()
            .filter(|(k, _)| in_project(k))
            .filter(|(_, c)| {
                !same_region || region_of(c["location"].as_str().unwrap_or("")) == region
            })
            .map(|(_, c)| cluster_vcpus(c))
            .sum()
    };
    let checks = [
        ("regional", "CPUS", st.cpus_quota, used_in(true)),
        (
            "project",
            "CPUS_ALL_REGIONS",
            st.cpus_all_regions_quota,
            used_in(false),
        ),
    ];
    for (scope, resource, quota, used) in checks {
        let Some(quota) = quota else { continue };
        let available = (quota - used).max(0.0);
        if requested > available {
            return Some(error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Insufficient {scope} quota to satisfy request: resource \"{resource}\": request requires '{requested:.1}' and is short '{short:.1}'. project has a quota of '{quota:.1}' with '{available:.1}' available. View and manage quotas at https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={project}.",
                    short = requested - available
                ),
            ));
        }
    }
    None
}

fn create_cluster(st: &mut State, project: &str, location: &str, body: Value) -> Reply {
    let mut cluster = body["cluster"].clone();
    let Some(name) = cluster["name"].as_str().map(str::to_string) else {
        return error(400, "INVALID_ARGUMENT", "Cluster.name is required");
    };
    let key = format!("projects/{project}/locations/{location}/clusters/{name}");
    if st.clusters.contains_key(&key) {
        return error(409, "ALREADY_EXISTS", &format!("Already exists: {key}."));
    }
    // Without `network` the cluster goes into the project's `default` network; a project
    // without it is refused (400 INVALID_ARGUMENT, kubeflow/kubeflow#3616,
    // kubeflow/examples#537).
    let network = cluster["network"]
        .as_str()
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_string();
    let known = if network == "default" {
        !st.no_default_network.contains(project)
    } else {
        st.networks
            .contains(&(project.to_string(), network.clone()))
    };
    if !known {
        return error(
            400,
            "INVALID_ARGUMENT",
            &format!("Project \"{project}\" has no network named \"{network}\"."),
        );
    }
    let Some(pools) = cluster["nodePools"].as_array_mut() else {
        return error(400, "INVALID_ARGUMENT", "Cluster.node_pools is required");
    };
    for pool in pools.iter_mut() {
        let config = &mut pool["config"];
        if !config.is_object() {
            *config = json!({});
        }
        // GKE's defaults for what the request leaves out (API reference, NodeConfig).
        if config["machineType"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            config["machineType"] = json!("e2-medium");
        }
        if config["diskSizeGb"].as_i64().unwrap_or(0) == 0 {
            config["diskSizeGb"] = json!(100);
        }
        if config["diskType"].as_str().unwrap_or_default().is_empty() {
            config["diskType"] = json!("pd-balanced");
        }
        if config["imageType"].as_str().unwrap_or_default().is_empty() {
            config["imageType"] = json!("COS_CONTAINERD");
        }
        // "If not specified, the \"default\" service account is used."
        if config["serviceAccount"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            config["serviceAccount"] = json!("default");
        }
        // NodeConfig.oauthScopes: "If unspecified, no scopes are added, unless Cloud Logging
        // or Cloud Monitoring are enabled, in which case their required scopes will be
        // added." Both are on by default, so a pool created through the API without scopes
        // gets only these two — no devstorage.read_only, so no pulls from a private registry
        // (rancher/rancher#18440, knative/pkg#1015).
        let no_scopes = config["oauthScopes"]
            .as_array()
            .is_none_or(|a| a.is_empty());
        if no_scopes {
            config["oauthScopes"] = json!([
                "https://www.googleapis.com/auth/logging.write",
                "https://www.googleapis.com/auth/monitoring"
            ]);
        }
        // A zonal cluster's nodes are in its zone; a regional one's in three of the region's
        // zones, `initialNodeCount` in each ("node_count … in each of the cluster's zones",
        // https://cloud.google.com/kubernetes-engine/docs/concepts/regional-clusters).
        pool["locations"] = if region_of(location) == location {
            json!(["a", "b", "c"].map(|z| format!("{location}-{z}")))
        } else {
            json!([location])
        };
        pool["status"] = json!("PROVISIONING");
        pool["selfLink"] = json!(format!(
            "https://container.googleapis.com/v1/{key}/nodePools/{}",
            pool["name"].as_str().unwrap_or_default()
        ));
    }
    if let Some(refusal) = quota_refusal(st, project, location, cluster_vcpus(&cluster)) {
        return refusal;
    }
    let labels = if cluster["resourceLabels"].is_object() {
        cluster["resourceLabels"].clone()
    } else {
        json!({})
    };
    cluster["resourceLabels"] = labels.clone();
    cluster["labelFingerprint"] = json!(fingerprint(&labels));
    cluster["network"] = json!(network);
    // In an auto-mode network each region's subnetwork has the network's name.
    if cluster["subnetwork"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        cluster["subnetwork"] = json!(network);
    }
    cluster["location"] = json!(location);
    cluster["zone"] = json!(location);
    cluster["status"] = json!("PROVISIONING");
    cluster["selfLink"] = json!(format!("https://container.googleapis.com/v1/{key}"));
    cluster["createTime"] = json!("2025-01-01T00:00:00+00:00");
    cluster["currentNodeCount"] = json!(0);
    // The control plane's range of a private cluster must be unique in its network: a second
    // cluster given the same block does not come up (crossplane-contrib/provider-gcp#227).
    // The wording of the failure is the emulator's; GKE's is not documented.
    let master = cluster["privateClusterConfig"]["masterIpv4CidrBlock"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let clash = (!master.is_empty())
        .then(|| {
            st.clusters.iter().find(|(k, c)| {
                k.starts_with(&format!("projects/{project}/"))
                    && c["network"] == json!(network)
                    && c["privateClusterConfig"]["masterIpv4CidrBlock"] == json!(master)
            })
        })
        .flatten()
        .map(|(k, _)| k.rsplit('/').next().unwrap_or_default().to_string());
    st.clusters.insert(key.clone(), cluster);
    if let Some(other) = clash {
        st.fail_next_operation = Some(format!(
            "The control plane range {master} overlaps with the range of cluster {other} in network {network}."
        ));
    }
    start_operation(st, "CREATE_CLUSTER", &key, location, Effect::Create)
}

fn start_operation(
    st: &mut State,
    op_type: &'static str,
    cluster: &str,
    location: &str,
    effect: Effect,
) -> Reply {
    st.next_op += 1;
    let name = format!(
        "operation-{}-{:08x}",
        1_700_000_000_000u64 + st.next_op,
        st.next_op
    );
    let mut op = Op {
        name: name.clone(),
        op_type: op_type.to_string(),
        cluster: cluster.to_string(),
        location: location.to_string(),
        polls_left: st.polls_until_done,
        done: false,
        effect,
        error: st.fail_next_operation.take(),
        until: None,
    };
    if op.polls_left == 0 {
        finish(st, &mut op);
    }
    let json = op_json(&op, "PENDING");
    st.operations.insert(name, op);
    reply(StatusCode::OK, json)
}

fn poll_operation(st: &mut State, name: &str) -> Reply {
    let Some(mut op) = st.operations.get(name).cloned() else {
        return error(
            404,
            "NOT_FOUND",
            &format!("Operation \"{name}\" not found."),
        );
    };
    if let Some(until) = op.until {
        // A system operation: over when its time is up.
        op.done = Instant::now() >= until;
    } else if !op.done {
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
                    let zones = pool["locations"].as_array().map_or(1, |z| z.len().max(1));
                    total += pool["initialNodeCount"].as_i64().unwrap_or(0) * zones as i64;
                }
            }
            cluster["currentNodeCount"] = json!(total);
        }
        Effect::Delete => {
            st.clusters.remove(&op.cluster);
        }
        Effect::Resize { pool, count } => {
            // `nodeCount` is per zone of the pool.
            let zones = cluster["nodePools"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == json!(pool)))
                .and_then(|p| p["locations"].as_array())
                .map_or(1, |z| z.len().max(1));
            cluster["status"] = json!("RUNNING");
            cluster["currentNodeCount"] = json!(count * zones as i64);
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
