//! Loopback emulators of what `benchstack plan` asks before anything is created (its
//! preflight): Service Usage v1, Compute Engine v1 (machine types, regions, projects) and a
//! Docker Registry HTTP API v2 (Artifact Registry). Include with
//! `#[path = "support/preflight_emulators.rs"] mod preflight_emulators;`.
//!
//! Each speaks the real paths, methods, JSON shapes and status codes (sources beside each
//! handler), and records every request so a test can see what was asked.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use crate::http_emulator::{self, Reply, Server};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode};
use serde_json::{Value, json};

type Handler = Arc<dyn Fn(&Method, &str, &hyper::HeaderMap, &[u8]) -> Reply + Send + Sync>;

/// The shared loopback server, recording `(method, path)` of every request.
struct Loopback {
    server: Server,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl Loopback {
    fn start(handler: Handler) -> Loopback {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let server = Server::start(move |req| {
            seen.lock()
                .unwrap()
                .push((req.method.to_string(), req.path().to_string()));
            handler(&req.method, req.path(), &req.headers, &req.body)
        });
        Loopback { server, requests }
    }

    fn url(&self) -> String {
        self.server.url()
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.requests.lock().unwrap().clone()
    }
}

fn json_reply(status: u16, body: Value) -> Reply {
    http_emulator::json(http_emulator::status(status), &body)
}

/// Google's API error (https://cloud.google.com/apis/design/errors#http_mapping):
/// `{"error":{"code","message","status"}}`.
fn google_error(code: u16, status: &str, message: &str) -> Reply {
    json_reply(
        code,
        json!({"error": {"code": code, "message": message, "status": status}}),
    )
}

// ---- Service Usage -------------------------------------------------------------------

#[derive(Default)]
struct UsageState {
    /// project id → project number
    projects: BTreeMap<String, u64>,
    /// (project id, service) enabled
    enabled: BTreeSet<(String, String)>,
    /// Projects whose services the caller may not read.
    denied: BTreeSet<String>,
    /// Projects where the caller may read but not enable services.
    enable_denied: BTreeSet<String>,
    /// Enable operations by name: (project, services, polls left before done, batchEnable).
    operations: BTreeMap<String, (String, Vec<String>, u32, bool)>,
    /// How many `operations.get` answer `done: false` before an operation ends.
    polls_before_done: u32,
    next_operation: u64,
}

/// Every service name this emulator knows (others are not services: batchEnable refuses them).
const KNOWN_SERVICES: &[&str] = &[
    "container.googleapis.com",
    "compute.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "storage.googleapis.com",
    "serviceusage.googleapis.com",
];

/// A Service resource as `services.get` and the enable responses carry it.
fn service_json(number: u64, service: &str, enabled: bool) -> Value {
    json!({
        "name": format!("projects/{number}/services/{service}"),
        "parent": format!("projects/{number}"),
        "config": {"name": service, "title": service},
        "state": if enabled { "ENABLED" } else { "DISABLED" },
    })
}

/// Starts an enable operation: the services become ENABLED only when it is done (after
/// `polls_before_done` reads of it), as the real service does (the state changes when the
/// operation completes, which takes from seconds to minutes).
fn start_enable(st: &mut UsageState, project: &str, services: Vec<String>, batch: bool) -> Reply {
    let Some(number) = st
        .projects
        .get(project)
        .copied()
        .filter(|_| !st.denied.contains(project))
    else {
        return google_error(
            403,
            "PERMISSION_DENIED",
            &format!(
                "Permission denied to enable service [{}]\nHelp Token: AbCdEf",
                services.join(",")
            ),
        );
    };
    if st.enable_denied.contains(project) {
        return google_error(
            403,
            "PERMISSION_DENIED",
            &format!(
                "Permission denied to enable service [{}]\nHelp Token: AbCdEf",
                services.join(",")
            ),
        );
    }
    // batchEnable: at most 20 services, and an unknown one fails the whole request.
    if services.is_empty() || services.len() > 20 {
        return google_error(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
        );
    }
    if let Some(bad) = services
        .iter()
        .find(|s| !KNOWN_SERVICES.contains(&s.as_str()))
    {
        return google_error(
            403,
            "PERMISSION_DENIED",
            &format!("Not found or permission denied for service(s): {bad}."),
        );
    }
    st.next_operation += 1;
    let name = format!("operations/acf.p2-{number}-{:08x}", st.next_operation);
    let polls = st.polls_before_done;
    st.operations.insert(
        name.clone(),
        (project.to_string(), services.clone(), polls, batch),
    );
    json_reply(
        200,
        json!({
            "name": name,
            "metadata": {
                "@type": "type.googleapis.com/google.api.serviceusage.v1.OperationMetadata",
                "resourceNames": services.iter().map(|s| format!("services/{s}/projectSettings/{number}")).collect::<Vec<_>>(),
            },
        }),
    )
}

/// Service Usage v1 `services.get`
/// (https://cloud.google.com/service-usage/docs/reference/rest/v1/services/get):
/// `GET /v1/projects/P/services/SERVICE` → a Service
/// (https://cloud.google.com/service-usage/docs/reference/rest/v1/services#Service):
/// `{"name": "projects/123/services/container.googleapis.com", "parent": "projects/123",
/// "config": {"name": …, "title": …}, "state": "ENABLED" | "DISABLED"}`. The name carries the
/// project *number* even when asked by id. Every service of a project that exists has a
/// state (a service never enabled is DISABLED). A project the caller may not see, or that
/// does not exist, is 403 PERMISSION_DENIED (Google does not say which).
///
/// Enabling (`apply` with `enable_apis = true`):
/// - `services.batchEnable`
///   (https://cloud.google.com/service-usage/docs/reference/rest/v1/services/batchEnable):
///   `POST /v1/projects/P/services:batchEnable` with `{"serviceIds": [...]}` (at most 20; "If
///   any of the services fails to be enabled, the entire request fails") → an Operation;
/// - `services.enable`
///   (https://cloud.google.com/service-usage/docs/reference/rest/v1/services/enable):
///   `POST /v1/projects/P/services/SERVICE:enable` → an Operation;
/// - `operations.get`
///   (https://cloud.google.com/service-usage/docs/reference/rest/v1/operations/get):
///   `GET /v1/operations/NAME` → the Operation
///   (https://cloud.google.com/service-usage/docs/reference/rest/Shared.Types/ListOperationsResponse#Operation):
///   `{"name": "operations/acf.p2-…", "metadata": {...}, "done": bool}` and, once done,
///   `"response": {"@type": "…BatchEnableServicesResponse", "services": [Service]}` (or
///   `…EnableServiceResponse` with `"service"`). The services are ENABLED from then on.
///
/// Without `serviceusage.services.enable` the POST is 403 PERMISSION_DENIED.
pub struct ServiceUsageEmulator {
    server: Loopback,
    state: Arc<Mutex<UsageState>>,
}

impl ServiceUsageEmulator {
    pub fn start() -> ServiceUsageEmulator {
        let state = Arc::new(Mutex::new(UsageState::default()));
        let shared = state.clone();
        let server = Loopback::start(Arc::new(move |method, path, _headers, body: &[u8]| {
            let mut st = shared.lock().unwrap();
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match (method, parts.as_slice()) {
                (&Method::GET, ["v1", "projects", p, "services", service]) => {
                    let Some(number) = st.projects.get(*p).filter(|_| !st.denied.contains(*p))
                    else {
                        return google_error(
                            403,
                            "PERMISSION_DENIED",
                            &format!(
                                "Permission denied to get service [{service}]\nHelp Token: AbCdEf"
                            ),
                        );
                    };
                    let enabled = st.enabled.contains(&(p.to_string(), service.to_string()));
                    if let Some(service) = service.strip_suffix(":enable") {
                        return google_error(
                            405,
                            "METHOD_NOT_ALLOWED",
                            &format!("GET of {service}:enable"),
                        );
                    }
                    json_reply(200, service_json(*number, service, enabled))
                }
                (&Method::POST, ["v1", "projects", p, "services:batchEnable"]) => {
                    let ids: Vec<String> = serde_json::from_slice::<Value>(body)
                        .ok()
                        .and_then(|v| v.get("serviceIds").cloned())
                        .and_then(|v| serde_json::from_value(v).ok())
                        .unwrap_or_default();
                    let p = p.to_string();
                    start_enable(&mut st, &p, ids, true)
                }
                (&Method::POST, ["v1", "projects", p, service]) if service.ends_with(":enable") => {
                    let service = service.trim_end_matches(":enable").to_string();
                    let p = p.to_string();
                    start_enable(&mut st, &p, vec![service], false)
                }
                (&Method::GET, ["v1", "operations", op]) => {
                    let name = format!("operations/{op}");
                    let Some((project, services, left, batch)) = st.operations.get(&name).cloned()
                    else {
                        return google_error(
                            404,
                            "NOT_FOUND",
                            &format!("Operation {name} not found."),
                        );
                    };
                    if left > 0 {
                        st.operations
                            .insert(name.clone(), (project, services, left - 1, batch));
                        return json_reply(
                            200,
                            json!({"name": name, "metadata": {"@type": "type.googleapis.com/google.api.serviceusage.v1.OperationMetadata"}}),
                        );
                    }
                    for s in &services {
                        st.enabled.insert((project.clone(), s.clone()));
                    }
                    let number = st.projects.get(&project).copied().unwrap_or_default();
                    let listed: Vec<Value> = services
                        .iter()
                        .map(|s| service_json(number, s, true))
                        .collect();
                    json_reply(
                        200,
                        json!({
                            "name": name,
                            "metadata": {"@type": "type.googleapis.com/google.api.serviceusage.v1.OperationMetadata"},
                            "done": true,
                            "response": if batch {
                                json!({
                                    "@type": "type.googleapis.com/google.api.serviceusage.v1.BatchEnableServicesResponse",
                                    "services": listed,
                                })
                            } else {
                                json!({
                                    "@type": "type.googleapis.com/google.api.serviceusage.v1.EnableServiceResponse",
                                    "service": listed[0],
                                })
                            },
                        }),
                    )
                }
                _ => google_error(404, "NOT_FOUND", &format!("unknown path {path}")),
            }
        }));
        ServiceUsageEmulator { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A project (with its number) whose `services` are all DISABLED until enabled.
    pub fn add_project(&self, project: &str, number: u64) {
        self.state
            .lock()
            .unwrap()
            .projects
            .insert(project.into(), number);
    }

    pub fn enable(&self, project: &str, services: &[&str]) {
        let mut st = self.state.lock().unwrap();
        for s in services {
            st.enabled.insert((project.into(), s.to_string()));
        }
    }

    pub fn disable(&self, project: &str, service: &str) {
        self.state
            .lock()
            .unwrap()
            .enabled
            .remove(&(project.into(), service.into()));
    }

    /// The caller may read but not enable the project's services (403 on enable).
    pub fn deny_enable(&self, project: &str) {
        self.state
            .lock()
            .unwrap()
            .enable_denied
            .insert(project.into());
    }

    /// How many reads of an enable operation answer `done: false` (default 0).
    pub fn set_polls_before_done(&self, n: u32) {
        self.state.lock().unwrap().polls_before_done = n;
    }

    pub fn is_enabled(&self, project: &str, service: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .enabled
            .contains(&(project.into(), service.into()))
    }

    /// The caller may not read the project's services (403).
    pub fn deny(&self, project: &str) {
        self.state.lock().unwrap().denied.insert(project.into());
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.server.requests()
    }
}

// ---- Compute Engine ------------------------------------------------------------------

#[derive(Default)]
struct ComputeState {
    /// region → its zones
    regions: BTreeMap<String, Vec<String>>,
    /// zone → machine type → (guestCpus, memoryMb)
    machine_types: BTreeMap<String, BTreeMap<String, (i64, i64)>>,
    /// (project, region) → metric → (limit, usage)
    region_quotas: BTreeMap<(String, String), BTreeMap<String, (f64, f64)>>,
    /// project → metric → (limit, usage)
    project_quotas: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    /// (project, region) whose regions.get the caller may not call.
    denied_regions: BTreeSet<(String, String)>,
    denied_projects: BTreeSet<String>,
}

/// Compute Engine v1, the three reads preflight makes
/// (https://cloud.google.com/compute/docs/reference/rest/v1):
/// - `GET /compute/v1/projects/P/zones/Z/machineTypes/M` (machineTypes.get) → MachineType
///   `{"kind":"compute#machineType","name","guestCpus","memoryMb","zone","selfLink",…}`;
///   memoryMb is in MiB (e2-highcpu-8: 8192);
/// - `GET /compute/v1/projects/P/regions/R` (regions.get) → Region `{"kind":"compute#region",
///   "name","status":"UP","zones":[zone URLs],"quotas":[{"metric","limit","usage"}]}`;
/// - `GET /compute/v1/projects/P` (projects.get) → Project `{"kind":"compute#project","name",
///   "quotas":[…]}` with the project-wide quotas such as `CPUS_ALL_REGIONS`.
///
/// Errors are Compute's: `{"error":{"code","message","errors":[{"message","domain",
/// "reason"}]}}`: 404 `notFound` "The resource 'projects/P/zones/Z/machineTypes/M' was not
/// found" (or '…/zones/Z' for a zone that does not exist); 403 `forbidden` "Required
/// 'compute.regions.get' permission for 'projects/P/regions/R'".
///
/// Zones and machine types are a realistic subset: us-central1 (a, b, c, f) and europe-west4
/// (a, b, c) with the E2 and N2 predefined types GKE stacks use, N1 standard types (not in
/// benchstack's built-in shapes), plus e2-medium (shared core: 2 vCPUs, 4096 MiB). Quotas default to a project with room for `stacks/gke.hcl`.
pub struct ComputeEmulator {
    server: Loopback,
    state: Arc<Mutex<ComputeState>>,
}

fn compute_error(code: u16, reason: &str, message: &str) -> Reply {
    json_reply(
        code,
        json!({"error": {"code": code, "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}]}}),
    )
}

impl ComputeEmulator {
    pub fn start() -> ComputeEmulator {
        let mut st = ComputeState::default();
        let mut types = BTreeMap::new();
        for (family, gib_per_cpu, sizes) in [
            ("e2-standard", 4, &[2, 4, 8, 16, 32][..]),
            ("e2-highcpu", 1, &[2, 4, 8, 16, 32][..]),
            ("e2-highmem", 8, &[2, 4, 8, 16][..]),
            (
                "n2-standard",
                4,
                &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128][..],
            ),
            ("n2-highcpu", 1, &[2, 4, 8, 16, 32, 48, 64, 80, 96][..]),
        ] {
            for n in sizes {
                types.insert(
                    format!("{family}-{n}"),
                    (*n as i64, *n as i64 * gib_per_cpu * 1024),
                );
            }
        }
        types.insert("e2-medium".into(), (2, 4096));
        // N1 standard: 3.75 GB (GiB) per vCPU, so memoryMb is 3840 × vCPUs (n1-standard-8:
        // 30720) (https://cloud.google.com/compute/docs/general-purpose-machines#n1_machines).
        for n in [1, 2, 4, 8, 16, 32, 64, 96] {
            types.insert(format!("n1-standard-{n}"), (n, n * 3840));
        }
        for (region, zones) in [
            ("us-central1", &["a", "b", "c", "f"][..]),
            ("europe-west4", &["a", "b", "c"][..]),
        ] {
            let names: Vec<String> = zones.iter().map(|z| format!("{region}-{z}")).collect();
            for z in &names {
                st.machine_types.insert(z.clone(), types.clone());
            }
            st.regions.insert(region.into(), names);
        }
        let state = Arc::new(Mutex::new(st));
        let shared = state.clone();
        let server = Loopback::start(Arc::new(move |method, path, _headers, _body: &[u8]| {
            let st = shared.lock().unwrap();
            if method != Method::GET {
                return compute_error(404, "notFound", &format!("unknown path {path}"));
            }
            let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            match parts.as_slice() {
                [
                    "compute",
                    "v1",
                    "projects",
                    p,
                    "zones",
                    z,
                    "machineTypes",
                    m,
                ] => {
                    let Some(types) = st.machine_types.get(*z) else {
                        return compute_error(
                            404,
                            "notFound",
                            &format!("The resource 'projects/{p}/zones/{z}' was not found"),
                        );
                    };
                    let Some((cpus, mem)) = types.get(*m) else {
                        return compute_error(
                            404,
                            "notFound",
                            &format!(
                                "The resource 'projects/{p}/zones/{z}/machineTypes/{m}' was not found"
                            ),
                        );
                    };
                    let base = "https://www.googleapis.com/compute/v1";
                    json_reply(
                        200,
                        json!({
                            "kind": "compute#machineType",
                            "id": "901008",
                            "creationTimestamp": "1969-12-31T16:00:00.000-08:00",
                            "name": m,
                            "description": format!("{cpus} vCPUs {} GB RAM", mem / 1024),
                            "guestCpus": cpus,
                            "memoryMb": mem,
                            "maximumPersistentDisks": 128,
                            "maximumPersistentDiskSizeGb": "263168",
                            "zone": z,
                            "selfLink": format!("{base}/projects/{p}/zones/{z}/machineTypes/{m}"),
                            "isSharedCpu": false,
                            "architecture": "X86_64",
                        }),
                    )
                }
                ["compute", "v1", "projects", p, "regions", r] => {
                    if st.denied_regions.contains(&(p.to_string(), r.to_string())) {
                        return compute_error(
                            403,
                            "forbidden",
                            &format!(
                                "Required 'compute.regions.get' permission for 'projects/{p}/regions/{r}'"
                            ),
                        );
                    }
                    let Some(zones) = st.regions.get(*r) else {
                        return compute_error(
                            404,
                            "notFound",
                            &format!("The resource 'projects/{p}/regions/{r}' was not found"),
                        );
                    };
                    let base = "https://www.googleapis.com/compute/v1";
                    let quotas = st
                        .region_quotas
                        .get(&(p.to_string(), r.to_string()))
                        .cloned()
                        .unwrap_or_else(default_region_quotas);
                    json_reply(
                        200,
                        json!({
                            "kind": "compute#region",
                            "id": "1000",
                            "name": r,
                            "description": r,
                            "status": "UP",
                            "zones": zones.iter().map(|z| format!("{base}/projects/{p}/zones/{z}")).collect::<Vec<_>>(),
                            "quotas": quota_list(&quotas),
                            "selfLink": format!("{base}/projects/{p}/regions/{r}"),
                        }),
                    )
                }
                ["compute", "v1", "projects", p] => {
                    if st.denied_projects.contains(*p) {
                        return compute_error(
                            403,
                            "forbidden",
                            &format!(
                                "Required 'compute.projects.get' permission for 'projects/{p}'"
                            ),
                        );
                    }
                    let quotas = st
                        .project_quotas
                        .get(*p)
                        .cloned()
                        .unwrap_or_else(default_project_quotas);
                    json_reply(
                        200,
                        json!({
                            "kind": "compute#project",
                            "id": "123456789",
                            "name": p,
                            "quotas": quota_list(&quotas),
                            "selfLink": format!("https://www.googleapis.com/compute/v1/projects/{p}"),
                        }),
                    )
                }
                _ => compute_error(404, "notFound", &format!("unknown path {path}")),
            }
        }));
        ComputeEmulator { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Sets one regional quota of the project (limit, usage).
    pub fn set_region_quota(
        &self,
        project: &str,
        region: &str,
        metric: &str,
        limit: f64,
        usage: f64,
    ) {
        self.state
            .lock()
            .unwrap()
            .region_quotas
            .entry((project.into(), region.into()))
            .or_insert_with(default_region_quotas)
            .insert(metric.into(), (limit, usage));
    }

    pub fn set_project_quota(&self, project: &str, metric: &str, limit: f64, usage: f64) {
        self.state
            .lock()
            .unwrap()
            .project_quotas
            .entry(project.into())
            .or_insert_with(default_project_quotas)
            .insert(metric.into(), (limit, usage));
    }

    /// machineTypes.get describes `name` with this shape in every zone (guestCpus, memoryMb
    /// in MiB): Compute Engine's description is the truth a plan sizes nodes by, whatever
    /// benchstack's built-in table says.
    pub fn describe(&self, name: &str, guest_cpus: i64, memory_mb: i64) {
        for types in self.state.lock().unwrap().machine_types.values_mut() {
            types.insert(name.into(), (guest_cpus, memory_mb));
        }
    }

    /// regions.get of this region answers 403 (an account without compute.regions.get).
    pub fn deny_region(&self, project: &str, region: &str) {
        self.state
            .lock()
            .unwrap()
            .denied_regions
            .insert((project.into(), region.into()));
    }

    pub fn deny_project(&self, project: &str) {
        self.state
            .lock()
            .unwrap()
            .denied_projects
            .insert(project.into());
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.server.requests()
    }
}

/// A few of the metrics regions.get lists, with room for stacks/gke.hcl's 88 vCPUs.
fn default_region_quotas() -> BTreeMap<String, (f64, f64)> {
    [
        ("CPUS", 200.0),
        ("E2_CPUS", 200.0),
        ("N2_CPUS", 200.0),
        ("PREEMPTIBLE_CPUS", 0.0),
        ("IN_USE_ADDRESSES", 16.0),
        ("SSD_TOTAL_GB", 2048.0),
        ("DISKS_TOTAL_GB", 4096.0),
    ]
    .into_iter()
    .map(|(m, l)| (m.to_string(), (l, 0.0)))
    .collect()
}

fn default_project_quotas() -> BTreeMap<String, (f64, f64)> {
    [
        ("CPUS_ALL_REGIONS", 200.0),
        ("NETWORKS", 15.0),
        ("FIREWALLS", 200.0),
    ]
    .into_iter()
    .map(|(m, l)| (m.to_string(), (l, 0.0)))
    .collect()
}

fn quota_list(q: &BTreeMap<String, (f64, f64)>) -> Vec<Value> {
    q.iter()
        .map(|(m, (l, u))| json!({"metric": m, "limit": l, "usage": u}))
        .collect()
}

// ---- Docker Registry v2 (Artifact Registry) ------------------------------------------

#[derive(Default)]
struct RegistryState {
    /// "NAME:TAG" → (digest, media type)
    manifests: BTreeMap<String, (String, String)>,
    /// Bearer tokens accepted; a predicate decides when None.
    tokens: Option<BTreeSet<String>>,
    /// Repository paths (NAME prefixes) the token may not read.
    denied: BTreeSet<String>,
    /// The token `GET /v2/token` hands to anyone (a public registry such as Docker Hub).
    anonymous: Option<String>,
    authorizations: Vec<String>,
}

/// The Docker Registry HTTP API v2 as Artifact Registry serves it
/// (https://distribution.github.io/distribution/spec/api/, "Existing Manifests";
/// https://cloud.google.com/artifact-registry/docs/docker/authentication#token):
/// - `HEAD|GET /v2/NAME/manifests/REFERENCE` with `Authorization: Bearer <Google access
///   token>`: 200 with `Docker-Content-Digest` and `Content-Type` when it exists; 404
///   `{"errors":[{"code":"MANIFEST_UNKNOWN",…}]}` when the repository has no such tag or
///   digest, `NAME_UNKNOWN` when there is no such repository;
/// - without a token: 401 `UNAUTHORIZED` with `WWW-Authenticate: Bearer
///   realm="…/v2/token",service="…",scope="repository:NAME:pull"`; a token without read
///   access to the repository: 403 `DENIED`.
///
/// HEAD answers carry no body (RFC 9110 §9.3.2), so a client learns which 404 it is from a GET.
/// Accepted tokens: Google OAuth access tokens (`ya29.`), unless a set is given.
pub struct RegistryEmulator {
    server: Loopback,
    state: Arc<Mutex<RegistryState>>,
}

fn registry_error(
    status: u16,
    code: &str,
    message: &str,
    head: bool,
    extra: &[(&str, String)],
) -> Reply {
    let body = json!({"errors": [{"code": code, "message": message, "detail": null}]}).to_string();
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", "application/json; charset=utf-8")
        .header("docker-distribution-api-version", "registry/2.0");
    for (k, v) in extra {
        b = b.header(*k, v);
    }
    if head {
        b.header("content-length", body.len().to_string())
            .body(Full::new(Bytes::new()))
            .unwrap()
    } else {
        b.body(Full::new(Bytes::from(body))).unwrap()
    }
}

impl RegistryEmulator {
    pub fn start() -> RegistryEmulator {
        let state = Arc::new(Mutex::new(RegistryState::default()));
        let shared = state.clone();
        let server_addr: Arc<Mutex<String>> = Arc::new(Mutex::new(String::new()));
        let addr_for_handler = server_addr.clone();
        let server = Loopback::start(Arc::new(move |method, path, headers, _body: &[u8]| {
            let mut st = shared.lock().unwrap();
            let head = method == Method::HEAD;
            if method != Method::GET && method != Method::HEAD {
                return registry_error(
                    405,
                    "UNSUPPORTED",
                    "The operation is unsupported.",
                    head,
                    &[],
                );
            }
            // A public registry's token service hands an anonymous client a pull token
            // (https://distribution.github.io/distribution/spec/auth/token/: `GET
            // realm?service=…&scope=…` → `{"token", "access_token", "expires_in",
            // "issued_at"}`); Docker Hub's is auth.docker.io/token.
            if path == "/v2/token" {
                return match &st.anonymous {
                    Some(t) => json_reply(
                        200,
                        json!({"token": t, "access_token": t, "expires_in": 300,
                               "issued_at": "2026-01-01T00:00:00Z"}),
                    ),
                    None => {
                        registry_error(401, "UNAUTHORIZED", "authentication required", head, &[])
                    }
                };
            }
            let Some(rest) = path.strip_prefix("/v2/") else {
                return registry_error(404, "NOT_FOUND", "not found", head, &[]);
            };
            let Some((name, reference)) = rest.rsplit_once("/manifests/") else {
                return registry_error(404, "NOT_FOUND", "not found", head, &[]);
            };
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            st.authorizations.push(auth.clone());
            let token = auth.strip_prefix("Bearer ").unwrap_or_default();
            let valid = match &st.tokens {
                Some(set) => set.contains(token),
                None => token.starts_with("ya29."),
            };
            if !valid {
                let base = addr_for_handler.lock().unwrap().clone();
                return registry_error(
                    401,
                    "UNAUTHORIZED",
                    "authentication failed",
                    head,
                    &[(
                        "www-authenticate",
                        format!(
                            "Bearer realm=\"{base}/v2/token\",service=\"us-central1-docker.pkg.dev\",scope=\"repository:{name}:pull\""
                        ),
                    )],
                );
            }
            if st.denied.iter().any(|d| name.starts_with(d.as_str())) {
                return registry_error(
                    403,
                    "DENIED",
                    &format!(
                        "Permission \"artifactregistry.repositories.downloadArtifacts\" denied on resource \"projects/{name}\" (or it may not exist)"
                    ),
                    head,
                    &[],
                );
            }
            // The repository is the first two parts on Artifact Registry (PROJECT/REPO), the
            // whole name on Docker Hub (NAMESPACE/IMAGE).
            let repo: String = name.split('/').take(2).collect::<Vec<_>>().join("/");
            let repo_exists = st
                .manifests
                .keys()
                .any(|k| k.starts_with(&format!("{repo}/")) || k.starts_with(&format!("{repo}:")));
            let key = if reference.starts_with("sha256:") {
                st.manifests
                    .iter()
                    .find(|(k, (d, _))| k.starts_with(&format!("{name}:")) && d == reference)
                    .map(|(k, _)| k.clone())
            } else {
                Some(format!("{name}:{reference}"))
            };
            match key.and_then(|k| st.manifests.get(&k).cloned()) {
                Some((digest, media_type)) => Response::builder()
                    .status(200)
                    .header("content-type", media_type)
                    .header("docker-content-digest", digest)
                    .header("docker-distribution-api-version", "registry/2.0")
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
                None if !repo_exists => registry_error(
                    404,
                    "NAME_UNKNOWN",
                    &format!("Repository \"{repo}\" not found"),
                    head,
                    &[],
                ),
                None => registry_error(
                    404,
                    "MANIFEST_UNKNOWN",
                    &format!("Failed to fetch \"{reference}\""),
                    head,
                    &[],
                ),
            }
        }));
        *server_addr.lock().unwrap() = server.url();
        RegistryEmulator { server, state }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// Pushes `name:tag` (`PROJECT/REPO/IMAGE:TAG`, without the host).
    pub fn push(&self, name_and_tag: &str) {
        let n = self.state.lock().unwrap().manifests.len();
        self.state.lock().unwrap().manifests.insert(
            name_and_tag.into(),
            (
                format!("sha256:{:064x}", n + 1),
                "application/vnd.docker.distribution.manifest.v2+json".into(),
            ),
        );
    }

    /// Deletes `name:tag` (the tag; the repository stays).
    pub fn remove(&self, name_and_tag: &str) {
        self.state.lock().unwrap().manifests.remove(name_and_tag);
    }

    /// The token may not read repositories under this path.
    pub fn deny(&self, name_prefix: &str) {
        self.state.lock().unwrap().denied.insert(name_prefix.into());
    }

    /// Behaves as a public registry: `GET /v2/token` gives anyone `token`, which reads every
    /// repository.
    pub fn serve_anonymous_tokens(&self, token: &str) {
        let mut st = self.state.lock().unwrap();
        st.anonymous = Some(token.into());
        st.tokens
            .get_or_insert_with(BTreeSet::new)
            .insert(token.into());
    }

    /// Only these bearer tokens are accepted.
    pub fn accept_tokens(&self, tokens: &[&str]) {
        self.state.lock().unwrap().tokens = Some(tokens.iter().map(|t| t.to_string()).collect());
    }

    /// The Authorization headers of the manifest requests, in order.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.lock().unwrap().authorizations.clone()
    }

    pub fn requests(&self) -> Vec<(String, String)> {
        self.server.requests()
    }
}
