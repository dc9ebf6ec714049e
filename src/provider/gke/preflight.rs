//! Preflight: what `benchstack plan` (and `apply`, `validate --remote`) asks Google before anything is
//! created, so that a problem shows up at the attribute at fault instead of as a refusal
//! halfway through an apply that already bills:
//!
//! - the APIs the stack needs are enabled (Service Usage `services.get`:
//!   `container.googleapis.com` and `compute.googleapis.com` in each cluster's project,
//!   `artifactregistry.googleapis.com` in the project of each Artifact Registry image);
//! - each cluster's machine type exists in its location, and its vCPUs and memory
//!   (Compute `machineTypes.get`), returned in the report for the plan's capacity check;
//! - the region's and the project's CPU quotas cover the vCPUs of the clusters the plan
//!   creates (Compute `regions.get` and `projects.get`: `quotas[]` of metric, limit, usage);
//! - every image the stack names exists in its registry (Docker Registry HTTP API v2,
//!   `HEAD /v2/NAME/manifests/REFERENCE`).
//!
//! The registry is asked through its v2 API with reqwest rather than through
//! google-cloud-artifactregistry-v1: the v2 API answers for every registry a node can pull
//! from (Artifact Registry, gcr.io names served by it, Docker Hub), checks exactly the
//! manifest the kubelet will pull, and adds no crate.
//!
//! A check that cannot be made (no credentials, no permission to read quotas, a network
//! failure) is a warning: the plan goes on. Nothing here prints; the findings are data.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use google_cloud_api_serviceusage_v1::client::ServiceUsage;
use google_cloud_compute_v1::client::{MachineTypes, Projects, Regions};

use super::QuotaShortfall;
use super::error::region_of;
use crate::manifest::capacity::{self, MachineType};
use crate::provider::ErrorKind;
use crate::provider::gcp::{self, Apis};
use crate::vocab::resources::{Address, ClusterConfig};

pub use crate::provider::gcp::{
    COMPUTE_ENDPOINT_ENV, REGISTRY_ENDPOINT_ENV, SERVICEUSAGE_ENDPOINT_ENV,
};

/// How long one preflight request may take before it is given up (a warning).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub const CONTAINER_API: &str = "container.googleapis.com";
pub const COMPUTE_API: &str = "compute.googleapis.com";
pub const ARTIFACT_REGISTRY_API: &str = "artifactregistry.googleapis.com";
pub const CLOUD_BUILD_API: &str = "cloudbuild.googleapis.com";

/// What the plan asks of Google: the stack's GKE clusters (with what the plan does to each)
/// and the images its Kubernetes resources run.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub clusters: Vec<ClusterItem>,
    pub images: Vec<ImageItem>,
    pub builds: Vec<BuildItem>,
}

/// An `image` block apply builds: Cloud Build runs it and pushes to Artifact Registry in
/// `project` (the repository's project).
#[derive(Debug, Clone)]
pub struct BuildItem {
    pub address: Address,
    pub project: String,
}

#[derive(Debug, Clone)]
pub struct ClusterItem {
    pub address: Address,
    pub config: ClusterConfig,
    /// The plan creates (or replaces) it: its nodes count against the CPU quotas.
    pub creates: bool,
    /// What a replacement deletes first (its vCPUs are free again before the create).
    pub replaces: Option<ClusterConfig>,
}

#[derive(Debug, Clone)]
pub struct ImageItem {
    pub address: Address,
    /// `image` (serving) or `loadgen_image` (loadtest).
    pub attribute: &'static str,
    pub image: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Applying would fail: the plan stops.
    Error,
    /// A check that could not be made.
    Warning,
}

/// One thing preflight found, at a resource's attribute where there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub address: Option<Address>,
    pub attribute: Option<&'static str>,
    pub message: String,
    /// What to run to fix it.
    pub fix: Option<String>,
}

impl Finding {
    fn error(address: &Address, attribute: &'static str, message: String, fix: String) -> Self {
        Finding {
            severity: Severity::Error,
            address: Some(address.clone()),
            attribute: Some(attribute),
            message,
            fix: Some(fix),
        }
    }

    fn warning(address: Option<&Address>, message: String) -> Self {
        Finding {
            severity: Severity::Warning,
            address: address.cloned(),
            attribute: None,
            message,
            fix: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// The machine types Compute Engine described: `ops` hands them to the plan's capacity
    /// check (`PlanOptions::machine_shapes`).
    pub machine_types: Vec<MachineType>,
}

impl Report {
    pub fn errors(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }
}

/// Runs every check `request` calls for, on a runtime of its own (from a plain thread).
pub fn run(request: &Request, apis: &Apis) -> Report {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Report {
                findings: vec![Finding::warning(
                    None,
                    format!("preflight skipped: cannot start its runtime: {e}"),
                )],
                machine_types: vec![],
            };
        }
    };
    rt.block_on(run_async(request, apis))
}

/// The APIs the stack needs, by (project, API), each with the resource and attribute that
/// needs it (where a disabled API is reported).
pub fn needed_apis(request: &Request) -> BTreeMap<(String, &'static str), (Address, &'static str)> {
    let mut apis: BTreeMap<(String, &'static str), (Address, &'static str)> = BTreeMap::new();
    for c in &request.clusters {
        let Some(project) = c.config.project.as_deref() else {
            continue;
        };
        for api in [CONTAINER_API, COMPUTE_API] {
            apis.entry((project.to_string(), api))
                .or_insert((c.address.clone(), "project"));
        }
    }
    for i in &request.images {
        if let Some(project) = ImageRef::parse(&i.image).and_then(|r| r.google_project()) {
            apis.entry((project, ARTIFACT_REGISTRY_API))
                .or_insert((i.address.clone(), i.attribute));
        }
    }
    for b in &request.builds {
        for api in [CLOUD_BUILD_API, ARTIFACT_REGISTRY_API] {
            apis.entry((b.project.clone(), api))
                .or_insert((b.address.clone(), "repository"));
        }
    }
    apis
}

/// The projects whose APIs apply enables (a gke cluster there has `enable_apis = true`),
/// each with that cluster.
pub fn enabling_projects(request: &Request) -> BTreeMap<String, Address> {
    let mut out = BTreeMap::new();
    for c in &request.clusters {
        if let (true, Some(project)) = (c.config.enable_apis, c.config.project.as_deref()) {
            out.entry(project.to_string())
                .or_insert_with(|| c.address.clone());
        }
    }
    out
}

async fn run_async(request: &Request, google: &Apis) -> Report {
    let mut report = Report::default();
    let mut skipped = Vec::new();

    // 1. APIs. A disabled API is the first problem to fix: the Compute checks below are not
    //    made in a project whose Compute Engine API is off (they would only say so again).
    //    One apply enables (`enable_apis`) is not a problem: it is said, not refused.
    let apis = needed_apis(request);
    let enabling = enabling_projects(request);
    let mut disabled: BTreeSet<(String, &'static str)> = BTreeSet::new();
    match service_usage(google).await {
        Ok(Some(client)) => {
            for ((project, api), (address, attribute)) in &apis {
                match service_state(&client, project, api).await {
                    Ok(true) => {}
                    Ok(false) => {
                        disabled.insert((project.clone(), api));
                        match enabling.get(project) {
                            Some(cluster) => report.findings.push(Finding::warning(
                                Some(cluster),
                                format!(
                                    "{api} is not enabled in project {project}: apply enables it first (enable_apis = true)"
                                ),
                            )),
                            None => report
                                .findings
                                .push(disabled_api(address, attribute, project, api)),
                        }
                    }
                    Err(why) => {
                        report.findings.push(Finding::warning(
                            Some(address),
                            format!(
                                "preflight: cannot tell whether {api} is enabled in project {project}: {why}"
                            ),
                        ));
                        // Without credentials every other question fails the same way.
                        if why.credentials {
                            break;
                        }
                    }
                }
            }
        }
        Ok(None) => skipped.push(format!("enabled APIs ({SERVICEUSAGE_ENDPOINT_ENV})")),
        Err(why) => report.findings.push(Finding::warning(
            None,
            format!("preflight: the enabled APIs are not checked: {why}"),
        )),
    }

    // 2. Machine types and 3. quotas (Compute Engine).
    let compute_on = |project: &str| !disabled.contains(&(project.to_string(), COMPUTE_API));
    match compute(google).await {
        Ok(Some(clients)) => {
            let mut shapes: BTreeMap<String, MachineType> = BTreeMap::new();
            let mut regions: BTreeMap<(String, String), Result<RegionInfo, String>> =
                BTreeMap::new();
            for c in &request.clusters {
                let (Some(project), Some(location)) =
                    (c.config.project.as_deref(), c.config.location.as_deref())
                else {
                    continue;
                };
                if !compute_on(project) {
                    continue;
                }
                let region = region_of(location).to_string();
                let key = (project.to_string(), region.clone());
                if !regions.contains_key(&key) {
                    let info = region_info(&clients, project, &region).await;
                    regions.insert(key.clone(), info);
                }
                let info = &regions[&key];
                if let Err(why) = info
                    && why.starts_with(NO_SUCH_REGION)
                {
                    report.findings.push(Finding::error(
                        &c.address,
                        "location",
                        format!("location {location}: {why}"),
                        format!(
                            "pick a zone or region that exists: `gcloud compute zones list --project {project}`"
                        ),
                    ));
                    continue;
                }
                let Some(machine) = c.config.machine_type.as_deref() else {
                    continue;
                };
                // A zonal cluster: its zone; a regional one: the region's zones, until one
                // has the type (GKE puts the nodes in the region's default zones).
                let zones: Vec<String> = if location != region {
                    vec![location.to_string()]
                } else {
                    match info {
                        Ok(i) => i.zones.clone(),
                        Err(_) => vec![],
                    }
                };
                match machine_shape(&clients, project, &zones, machine).await {
                    Shape::Found(m) => {
                        shapes.insert(m.name.clone(), m);
                    }
                    Shape::NoSuchType(why) => report.findings.push(Finding::error(
                        &c.address,
                        "machine_type",
                        format!("machine type {machine} does not exist in {location}: {why}"),
                        format!(
                            "see the machine types there: `gcloud compute machine-types list --zones {} --project {project}{}`",
                            zones.join(","),
                            family_filter(machine)
                        ),
                    )),
                    Shape::NoSuchZone(why) => report.findings.push(Finding::error(
                        &c.address,
                        "location",
                        format!("zone {location} does not exist: {why}"),
                        format!(
                            "pick a zone that exists: `gcloud compute zones list --project {project} --filter=region:{region}`"
                        ),
                    )),
                    Shape::Unknown(why) => report.findings.push(Finding::warning(
                        Some(&c.address),
                        format!(
                            "preflight: cannot read machine type {machine} in {location} from Compute Engine: {why}"
                        ),
                    )),
                }
            }
            let mut project_quotas: BTreeMap<String, Result<Vec<QuotaValue>, String>> =
                BTreeMap::new();
            for c in &request.clusters {
                if let Some(project) = c.config.project.as_deref()
                    && c.creates
                    && compute_on(project)
                    && !project_quotas.contains_key(project)
                {
                    let q = project_info(&clients, project).await;
                    project_quotas.insert(project.to_string(), q);
                }
            }
            let shape_of = |name: &str| {
                shapes
                    .get(name)
                    .cloned()
                    .or_else(|| capacity::table_machine_type(name))
            };
            let needs = quota_needs(&request.clusters, &shape_of);
            report.findings.extend(needs.unknown);
            let mut unreadable = BTreeSet::new();
            for (key, need) in &needs.by_quota {
                let found = match &key.region {
                    Some(region) => regions
                        .get(&(key.project.clone(), region.clone()))
                        .map(|r| r.as_ref().map(|i| i.quotas.clone())),
                    None => project_quotas
                        .get(&key.project)
                        .map(|q| q.as_ref().cloned()),
                };
                let Some(found) = found else { continue };
                match found {
                    Ok(quotas) => {
                        if let Some(f) = compare(key, need, &quotas) {
                            report.findings.push(f);
                        }
                    }
                    Err(why)
                        if !why.starts_with(NO_SUCH_REGION)
                            && unreadable.insert((key.project.clone(), key.region.clone())) =>
                    {
                        let metrics: Vec<&str> = needs
                            .by_quota
                            .keys()
                            .filter(|k| k.project == key.project && k.region == key.region)
                            .map(|k| k.metric.as_str())
                            .collect();
                        report.findings.push(Finding::warning(
                            Some(&need.clusters[0].0),
                            format!(
                                "preflight: cannot read the quotas{} ({}): {why}; the {} vCPUs the plan creates are not checked against them",
                                key.region
                                    .as_ref()
                                    .map(|r| format!(" of region {r} in project {}", key.project))
                                    .unwrap_or_else(|| format!(" of project {}", key.project)),
                                metrics.join(", "),
                                need.total
                            ),
                        ))
                    }
                    Err(_) => {}
                }
            }
            report.machine_types = shapes.into_values().collect();
        }
        Ok(None) => skipped.push(format!(
            "machine types and CPU quotas ({COMPUTE_ENDPOINT_ENV})"
        )),
        Err(why) => report.findings.push(Finding::warning(
            None,
            format!("preflight: machine types and CPU quotas are not checked: {why}"),
        )),
    }

    // 4. Images.
    let mut seen = BTreeSet::new();
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .build();
    let mut token: Option<Result<Option<String>, String>> = None;
    for i in &request.images {
        if !seen.insert(i.image.clone()) {
            continue;
        }
        let Some(image) = ImageRef::parse(&i.image) else {
            report.findings.push(Finding::warning(
                Some(&i.address),
                format!(
                    "preflight: `{}` = {:?} is not an image reference benchstack can read; it is not checked",
                    i.attribute, i.image
                ),
            ));
            continue;
        };
        if let Some(project) = image.google_project()
            && disabled.contains(&(project, ARTIFACT_REGISTRY_API))
        {
            continue;
        }
        let base = match google.registry(&image.host) {
            Some(url) => url,
            None if google.anonymous() => {
                skipped.push(format!("image {} ({REGISTRY_ENDPOINT_ENV})", i.image));
                continue;
            }
            None => format!("https://{}", image.host),
        };
        let client = match &client {
            Ok(c) => c,
            Err(e) => {
                report.findings.push(Finding::warning(
                    Some(&i.address),
                    format!("preflight: images are not checked: {e}"),
                ));
                break;
            }
        };
        let bearer = if image.is_google() {
            if token.is_none() {
                token = Some(google_token(google).await);
            }
            match token.as_ref() {
                Some(Ok(t)) => t.clone(),
                Some(Err(why)) => {
                    report.findings.push(Finding::warning(
                        Some(&i.address),
                        format!("preflight: cannot check image {}: {why}", i.image),
                    ));
                    continue;
                }
                None => None,
            }
        } else {
            None
        };
        match manifest_exists(client, &base, &image, bearer.as_deref()).await {
            Ok(Manifest::Exists) => {}
            Ok(Manifest::Missing { code, message }) => {
                report.findings.push(missing_image(i, &image, &code, &message))
            }
            Ok(Manifest::Denied { status, message }) => report.findings.push(Finding::warning(
                Some(&i.address),
                format!(
                    "preflight: cannot check image {}: {} answered {status}{}{}",
                    i.image,
                    image.host,
                    if message.is_empty() { "" } else { ": " },
                    message
                ) + if image.is_google() {
                    " (the account running benchstack, and the nodes' service account, need roles/artifactregistry.reader)"
                } else {
                    ""
                },
            )),
            Err(why) => report.findings.push(Finding::warning(
                Some(&i.address),
                format!("preflight: cannot check image {}: {why}", i.image),
            )),
        }
    }
    if !skipped.is_empty() && google.anonymous() {
        report.findings.push(Finding::warning(
            None,
            format!(
                "preflight: Google's APIs are emulated (BENCHSTACK_*_ENDPOINT), so these are not checked (no endpoint given): {}",
                skipped.join(", ")
            ),
        ));
    }
    report
}

// ---- Service Usage -------------------------------------------------------------------

/// The client, or None when the APIs are emulated and Service Usage is not.
pub(super) async fn service_usage(e: &Apis) -> Result<Option<ServiceUsage>, String> {
    let builder =
        ServiceUsage::builder().with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
    let built = match (&e.service_usage, e.anonymous()) {
        (Some(url), _) => {
            builder
                .with_endpoint(url)
                .with_credentials(gcp::anonymous_credentials())
                .build()
                .await
        }
        (None, true) => return Ok(None),
        (None, false) => builder.build().await,
    };
    built.map(Some).map_err(|e| no_credentials(&e))
}

fn no_credentials(e: &dyn std::fmt::Display) -> String {
    format!(
        "no Google credentials ({e}); run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS"
    )
}

/// Whether `api` is enabled in `project` (`GET /v1/projects/P/services/API`, state ENABLED
/// or DISABLED); Err: the question could not be asked.
pub(super) async fn service_state(
    client: &ServiceUsage,
    project: &str,
    api: &str,
) -> Result<bool, CallError> {
    use google_cloud_api_serviceusage_v1::model::State;
    let call = client
        .get_service()
        .set_name(format!("projects/{project}/services/{api}"))
        .send();
    let service = timed(call).await?;
    Ok(service.state == State::Enabled)
}

/// Why a preflight call could not be made.
#[derive(Debug)]
pub(super) struct CallError {
    pub(super) text: String,
    /// No usable credentials: the other calls would fail the same way.
    credentials: bool,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

pub(super) async fn timed<T>(
    call: impl std::future::Future<Output = Result<T, google_cloud_gax::error::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError {
            text: describe(&e),
            credentials: e.is_authentication(),
        }),
        Err(_) => Err(CallError {
            text: format!("no answer within {}s", CALL_TIMEOUT.as_secs()),
            credentials: false,
        }),
    }
}

/// The API's message, with what kind of failure it was when that helps.
fn describe(e: &google_cloud_gax::error::Error) -> String {
    let (kind, message, _) = gcp::classify(e);
    let hint = match kind {
        ErrorKind::Permission => {
            " (the account may lack the permission; with user credentials, some APIs also need a quota project: `gcloud auth application-default set-quota-project PROJECT`)"
        }
        _ => "",
    };
    let code = e
        .http_status_code()
        .map(|c| format!("HTTP {c}: "))
        .unwrap_or_default();
    format!("{code}{message}{hint}")
}

fn disabled_api(address: &Address, attribute: &'static str, project: &str, api: &str) -> Finding {
    let (name, needed_for) = match api {
        CONTAINER_API => (
            "the Kubernetes Engine API",
            "to create and manage GKE clusters",
        ),
        COMPUTE_API => (
            "the Compute Engine API",
            "for the clusters' nodes (and to read machine types and quotas)",
        ),
        CLOUD_BUILD_API => ("the Cloud Build API", "to build the stack's `image` blocks"),
        _ => (
            "the Artifact Registry API",
            "to push and pull images in Artifact Registry (and gcr.io)",
        ),
    };
    Finding::error(
        address,
        attribute,
        format!("{name} ({api}) is not enabled in project {project}; it is needed {needed_for}"),
        format!("`gcloud services enable {api} --project {project}`, then plan again"),
    )
}

// ---- Compute Engine ------------------------------------------------------------------

struct ComputeClients {
    machine_types: MachineTypes,
    regions: Regions,
    projects: Projects,
}

async fn compute(e: &Apis) -> Result<Option<ComputeClients>, String> {
    let url = match (&e.compute, e.anonymous()) {
        (Some(url), _) => Some(url.clone()),
        (None, true) => return Ok(None),
        (None, false) => None,
    };
    macro_rules! build {
        ($t:ty) => {{
            let b = <$t>::builder().with_retry_policy(google_cloud_gax::retry_policy::NeverRetry);
            match &url {
                Some(u) => {
                    b.with_endpoint(u)
                        .with_credentials(gcp::anonymous_credentials())
                        .build()
                        .await
                }
                None => b.build().await,
            }
            .map_err(|e| no_credentials(&e))?
        }};
    }
    Ok(Some(ComputeClients {
        machine_types: build!(MachineTypes),
        regions: build!(Regions),
        projects: build!(Projects),
    }))
}

/// The start of the reason a region does not exist.
const NO_SUCH_REGION: &str = "no such region";

#[derive(Debug, Clone, PartialEq)]
pub struct QuotaValue {
    pub metric: String,
    pub limit: f64,
    pub usage: f64,
}

#[derive(Debug, Clone)]
struct RegionInfo {
    zones: Vec<String>,
    quotas: Vec<QuotaValue>,
}

fn quota_values(quotas: &[google_cloud_compute_v1::model::Quota]) -> Vec<QuotaValue> {
    quotas
        .iter()
        .filter_map(|q| {
            Some(QuotaValue {
                metric: q.metric.as_ref()?.name()?.to_string(),
                limit: q.limit.unwrap_or(0.0),
                usage: q.usage.unwrap_or(0.0),
            })
        })
        .collect()
}

async fn region_info(
    c: &ComputeClients,
    project: &str,
    region: &str,
) -> Result<RegionInfo, String> {
    let call = c
        .regions
        .get()
        .set_project(project)
        .set_region(region)
        .send();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(Ok(r)) => Ok(RegionInfo {
            // Zone URLs: …/projects/P/zones/us-central1-a
            zones: r
                .zones
                .iter()
                .filter_map(|z| z.rsplit('/').next().map(str::to_string))
                .collect(),
            quotas: quota_values(&r.quotas),
        }),
        Ok(Err(e)) if e.http_status_code() == Some(404) => Err(format!(
            "{NO_SUCH_REGION} {region} ({})",
            gcp::classify(&e).1
        )),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {}s", CALL_TIMEOUT.as_secs())),
    }
}

async fn project_info(c: &ComputeClients, project: &str) -> Result<Vec<QuotaValue>, String> {
    let p = timed(c.projects.get().set_project(project).send())
        .await
        .map_err(|e| e.text)?;
    Ok(quota_values(&p.quotas))
}

enum Shape {
    Found(MachineType),
    NoSuchType(String),
    NoSuchZone(String),
    Unknown(String),
}

/// The machine type in the first of `zones` that has it.
async fn machine_shape(c: &ComputeClients, project: &str, zones: &[String], name: &str) -> Shape {
    let mut last = Shape::Unknown("the region lists no zones".into());
    for zone in zones {
        let call = c
            .machine_types
            .get()
            .set_project(project)
            .set_zone(zone)
            .set_machine_type(name)
            .send();
        last = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(m)) => {
                let (Some(cpus), Some(mem)) = (m.guest_cpus, m.memory_mb) else {
                    return Shape::Unknown("Compute Engine gave no guestCpus or memoryMb".into());
                };
                let (Ok(vcpus), Ok(memory_mib)) = (u32::try_from(cpus), u64::try_from(mem)) else {
                    return Shape::Unknown(format!(
                        "Compute Engine gave guestCpus {cpus}, memoryMb {mem}"
                    ));
                };
                // memoryMb is in MiB (e2-highcpu-8: 8192).
                return Shape::Found(MachineType {
                    name: name.to_string(),
                    vcpus,
                    memory_mib,
                });
            }
            Ok(Err(e)) => {
                let (kind, message, _) = gcp::classify(&e);
                let status = e.http_status_code();
                if status == Some(404) || kind == ErrorKind::NotFound {
                    // "The resource 'projects/P/zones/Z/machineTypes/M' was not found" for a
                    // type; "The resource 'projects/P/zones/Z' was not found" for a zone.
                    if message.contains("machineTypes/") {
                        Shape::NoSuchType(message)
                    } else {
                        Shape::NoSuchZone(message)
                    }
                } else if status == Some(400) && message.to_ascii_lowercase().contains("zone") {
                    Shape::NoSuchZone(message)
                } else {
                    return Shape::Unknown(describe(&e));
                }
            }
            Err(_) => {
                return Shape::Unknown(format!("no answer within {}s", CALL_TIMEOUT.as_secs()));
            }
        };
    }
    last
}

/// ` --filter="name~^e2-"` for a predefined type's family.
fn family_filter(machine: &str) -> String {
    match machine.split_once('-') {
        Some((family, _)) if !family.is_empty() => format!(" --filter=\"name~^{family}-\""),
        _ => String::new(),
    }
}

/// A quota the plan draws on: a metric of a region of a project, or of the project.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct QuotaKey {
    pub project: String,
    /// None: project-wide (`CPUS_ALL_REGIONS`).
    pub region: Option<String>,
    pub metric: String,
}

/// What the plan's new clusters need of one quota.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuotaNeed {
    /// vCPUs created, less those a replacement deletes first.
    pub total: u64,
    /// (cluster, nodes, machine type, its vCPUs) in stack order.
    pub clusters: Vec<(Address, u32, String, u32)>,
}

#[derive(Debug, Default)]
pub struct QuotaNeeds {
    pub by_quota: BTreeMap<QuotaKey, QuotaNeed>,
    /// Clusters whose vCPUs are unknown (a warning each).
    pub unknown: Vec<Finding>,
}

/// The quotas a cluster's nodes count against: the region's `CPUS` and the machine family's
/// (`E2_CPUS`, `N2_CPUS`, …), and the project's `CPUS_ALL_REGIONS`
/// (https://cloud.google.com/compute/resource-usage, "CPU quota"). Spot nodes are left out:
/// they draw on `PREEMPTIBLE_CPUS` where the project has that quota and on the regular ones
/// otherwise, which the quotas alone do not tell apart.
fn metrics_for(machine: &str) -> (Vec<String>, &'static str) {
    let family = machine
        .split('-')
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    let mut regional = vec!["CPUS".to_string()];
    if !family.is_empty() {
        regional.push(format!("{family}_CPUS"));
    }
    (regional, "CPUS_ALL_REGIONS")
}

/// The vCPUs each quota must have free for the clusters the plan creates.
pub fn quota_needs(
    clusters: &[ClusterItem],
    shape_of: &dyn Fn(&str) -> Option<MachineType>,
) -> QuotaNeeds {
    let mut out = QuotaNeeds::default();
    let vcpus = |c: &ClusterConfig| -> Option<(String, u32, u64)> {
        let machine = c.machine_type.as_deref()?;
        let shape = shape_of(machine)?;
        let nodes = capacity::node_total(c);
        Some((
            machine.to_string(),
            shape.vcpus,
            u64::from(nodes) * u64::from(shape.vcpus),
        ))
    };
    for c in clusters.iter().filter(|c| c.creates) {
        let (Some(project), Some(location)) =
            (c.config.project.as_deref(), c.config.location.as_deref())
        else {
            continue;
        };
        if c.config.spot {
            out.unknown.push(Finding::warning(
                Some(&c.address),
                "preflight: spot nodes are not checked against the CPU quotas (they count against PREEMPTIBLE_CPUS where the project has that quota, else against CPUS and the family's)".into(),
            ));
            continue;
        }
        let Some((machine, per_node, total)) = vcpus(&c.config) else {
            out.unknown.push(Finding::warning(
                Some(&c.address),
                format!(
                    "preflight: the vCPUs of machine type {} are not known, so its nodes are not checked against the CPU quotas",
                    c.config.machine_type.as_deref().unwrap_or("(none)")
                ),
            ));
            continue;
        };
        let region = region_of(location).to_string();
        let (regional, global) = metrics_for(&machine);
        // A replacement deletes the old cluster first: what it frees in the same quota.
        let freed = |metric: &str, per_region: bool| -> u64 {
            let Some(old) = &c.replaces else { return 0 };
            let (Some(op), Some(ol)) = (old.project.as_deref(), old.location.as_deref()) else {
                return 0;
            };
            let Some((om, _, ototal)) = vcpus(old) else {
                return 0;
            };
            if old.spot {
                return 0;
            }
            let (oregional, oglobal) = metrics_for(&om);
            let same_place = op == project && (!per_region || region_of(ol) == region);
            let counted = if per_region {
                oregional.iter().any(|m| m == metric)
            } else {
                oglobal == metric
            };
            if same_place && counted { ototal } else { 0 }
        };
        let keys = regional
            .iter()
            .map(|m| (Some(region.clone()), m.clone(), freed(m, true)))
            .chain(std::iter::once((
                None,
                global.to_string(),
                freed(global, false),
            )));
        for (region, metric, freed) in keys {
            let need = out
                .by_quota
                .entry(QuotaKey {
                    project: project.to_string(),
                    region,
                    metric,
                })
                .or_default();
            need.total += total.saturating_sub(freed);
            need.clusters.push((
                c.address.clone(),
                capacity::node_total(&c.config),
                machine.clone(),
                per_node,
            ));
        }
    }
    out
}

/// A shortfall of `need` against the quotas Compute reported; None when it fits, or when
/// the quota is not reported (a family without its own quota, no preemptible quota).
pub fn compare(key: &QuotaKey, need: &QuotaNeed, quotas: &[QuotaValue]) -> Option<Finding> {
    let q = quotas.iter().find(|q| q.metric == key.metric)?;
    let available = (q.limit - q.usage).max(0.0);
    let requires = need.total as f64;
    if requires <= available || need.total == 0 {
        return None;
    }
    let (first, _, _, _) = need.clusters.first()?;
    let parts: Vec<String> = need
        .clusters
        .iter()
        .map(|(a, nodes, m, v)| {
            format!("{a}: {nodes} × {m} = {}", u64::from(*nodes) * u64::from(*v))
        })
        .collect();
    let shortfall = QuotaShortfall {
        quota: key.metric.clone(),
        region: key.region.clone(),
        requires: Some(requires),
        short: Some(requires - available),
        limit: Some(q.limit),
    };
    let place = match &key.region {
        Some(r) => format!("in region {r} of project {}", key.project),
        None => format!("in project {} (all regions)", key.project),
    };
    Some(Finding::error(
        first,
        "node_count",
        format!(
            "not enough quota: the plan creates {} vCPUs counted by {} {place} ({}), but only {} of {} are free ({} in use); GKE would refuse the cluster with \"Insufficient quota\"",
            need.total,
            key.metric,
            parts.join(", "),
            available,
            q.limit,
            q.usage
        ),
        shortfall.advice(&key.project),
    ))
}

// ---- Registries ----------------------------------------------------------------------

/// An image reference split as a container runtime reads it
/// (https://github.com/distribution/reference: `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`; no host
/// means Docker Hub, where a one-part name is under `library/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub host: String,
    /// The repository path (`PROJECT/REPO/IMAGE` on Artifact Registry).
    pub name: String,
    /// The digest when given, else the tag (default `latest`).
    pub reference: String,
}

impl ImageRef {
    pub fn parse(image: &str) -> Option<ImageRef> {
        let image = image.trim();
        if image.is_empty() || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d)),
            None => (image, None),
        };
        let (host, path) = match rest.split_once('/') {
            Some((h, p)) if h.contains('.') || h.contains(':') || h == "localhost" => {
                (h.to_string(), p)
            }
            _ => ("docker.io".to_string(), rest),
        };
        // A tag is after the last ':' of the last path segment.
        let last = path.rsplit('/').next().unwrap_or(path);
        let (name, tag) = match last.rsplit_once(':') {
            Some((_, t)) => (&path[..path.len() - t.len() - 1], Some(t)),
            None => (path, None),
        };
        if name.is_empty() || name.split('/').any(str::is_empty) {
            return None;
        }
        let name = if host == "docker.io" && !name.contains('/') {
            format!("library/{name}")
        } else {
            name.to_string()
        };
        let reference = digest.or(tag).unwrap_or("latest").to_string();
        if reference.is_empty() {
            return None;
        }
        Some(ImageRef {
            host,
            name,
            reference,
        })
    }

    /// Served by Artifact Registry (`LOCATION-docker.pkg.dev`, and gcr.io names since
    /// Container Registry was shut down): reached with a Google access token.
    pub fn is_google(&self) -> bool {
        self.host.ends_with("-docker.pkg.dev")
            || self.host == "gcr.io"
            || self.host.ends_with(".gcr.io")
    }

    /// The project holding an Artifact Registry image (the path's first part).
    pub fn google_project(&self) -> Option<String> {
        self.is_google()
            .then(|| self.name.split('/').next().map(str::to_string))
            .flatten()
            .filter(|p| !p.is_empty())
    }

    /// Where requests go: Docker Hub's API host is not its name.
    fn api_host(&self) -> &str {
        if self.host == "docker.io" {
            "registry-1.docker.io"
        } else {
            &self.host
        }
    }

    fn display(&self) -> String {
        let sep = if self.reference.contains(':') {
            '@'
        } else {
            ':'
        };
        format!("{}/{}{sep}{}", self.host, self.name, self.reference)
    }
}

/// A Google access token for Artifact Registry; None against emulators without explicit
/// credentials (nothing may look for credentials off loopback).
async fn google_token(e: &Apis) -> Result<Option<String>, String> {
    let Some(env) = e.registry_auth() else {
        return Ok(None);
    };
    gcp::access_token_with(&env)
        .await
        .map(Some)
        .map_err(|e| e.to_string())
}

enum Manifest {
    Exists,
    /// 404: `MANIFEST_UNKNOWN` (no such tag or digest) or `NAME_UNKNOWN` (no such repository).
    Missing {
        code: String,
        message: String,
    },
    /// 401 or 403 even with credentials.
    Denied {
        status: u16,
        message: String,
    },
}

/// The media types a kubelet accepts; a registry answers 404 for a manifest list or OCI
/// index asked for without them.
const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json";

/// `HEAD /v2/NAME/manifests/REFERENCE` (https://distribution.github.io/distribution/spec/api/,
/// "Existing Manifests"): 200 exists, 404 does not. Without a token a registry answers 401
/// with a `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge; for registries
/// other than Google's the anonymous token that realm hands out is fetched and the request
/// repeated (public images on Docker Hub, ghcr.io).
async fn manifest_exists(
    client: &reqwest::Client,
    base: &str,
    image: &ImageRef,
    bearer: Option<&str>,
) -> Result<Manifest, String> {
    let base = if base == format!("https://{}", image.host) {
        format!("https://{}", image.api_host())
    } else {
        base.to_string()
    };
    let url = format!("{base}/v2/{}/manifests/{}", image.name, image.reference);
    let send = |token: Option<String>| {
        let mut req = client.head(&url).header("Accept", MANIFEST_TYPES);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    // The token the answer was given to (the anonymous one after a challenge).
    let mut used = bearer.map(str::to_string);
    let mut response = send(used.clone())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if response.status() == reqwest::StatusCode::UNAUTHORIZED && bearer.is_none() {
        let challenge = response
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(token) = match challenge {
            Some(c) => anonymous_token(client, &c).await,
            None => None,
        } {
            response = send(Some(token.clone()))
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            used = Some(token);
        }
    }
    let status = response.status().as_u16();
    match status {
        200..=299 => Ok(Manifest::Exists),
        401 | 403 | 404 => {
            // HEAD has no body; a GET says which error it is.
            let (code, message) = error_body(client, &url, used.as_deref()).await;
            if status == 404 {
                Ok(Manifest::Missing {
                    code: code.unwrap_or_else(|| "MANIFEST_UNKNOWN".into()),
                    message,
                })
            } else {
                Ok(Manifest::Denied { status, message })
            }
        }
        s => Err(format!("{} answered HTTP {s}", image.host)),
    }
}

/// The registry's `{"errors":[{"code","message"}]}` for a GET of the same URL.
async fn error_body(
    client: &reqwest::Client,
    url: &str,
    bearer: Option<&str>,
) -> (Option<String>, String) {
    let mut req = client.get(url).header("Accept", MANIFEST_TYPES);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let Ok(resp) = req.send().await else {
        return (None, String::new());
    };
    let Some(body) = capped_body(resp).await else {
        return (None, String::new());
    };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let first = &v["errors"][0];
    (
        first["code"].as_str().map(str::to_string),
        first["message"]
            .as_str()
            .map(|m| m.chars().take(300).collect())
            .unwrap_or_default(),
    )
}

/// How much of a registry's answer is read: its error documents and tokens are small, and a
/// peer that sends more is not waited for.
const MAX_BODY: usize = 64 * 1024;

async fn capped_body(mut resp: reqwest::Response) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return None;
        }
    }
    Some(body)
}

/// The token an anonymous client gets from a `Bearer realm=…` challenge
/// (https://distribution.github.io/distribution/spec/auth/token/).
async fn anonymous_token(client: &reqwest::Client, challenge: &str) -> Option<String> {
    let rest = challenge.trim().strip_prefix("Bearer ")?;
    let mut params = BTreeMap::new();
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        params.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    let realm = params.remove("realm")?;
    if !realm.starts_with("https://") && !realm.starts_with("http://") {
        return None;
    }
    let query: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| k == "service" || k == "scope")
        .collect();
    let resp = client.get(&realm).query(&query).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&capped_body(resp).await?).ok()?;
    v["token"]
        .as_str()
        .or(v["access_token"].as_str())
        .map(str::to_string)
}

fn missing_image(i: &ImageItem, image: &ImageRef, code: &str, message: &str) -> Finding {
    let what = if code == "NAME_UNKNOWN" {
        format!(
            "its repository {}/{} does not exist",
            image.host, image.name
        )
    } else {
        format!("{} has no manifest {}", image.host, image.reference)
    };
    let detail = if message.is_empty() {
        code.to_string()
    } else {
        format!("{code}: {message}")
    };
    let fix = if image.host.ends_with("-docker.pkg.dev") {
        let repo: Vec<&str> = image.name.split('/').collect();
        let listed = if repo.len() >= 2 {
            format!("{}/{}/{}", image.host, repo[0], repo[1])
        } else {
            format!("{}/{}", image.host, image.name)
        };
        format!(
            "see what is there: `gcloud artifacts docker images list {listed} --include-tags`; build and push the image first (`gcloud builds submit --config deploy/cloudbuild.yaml --project {} .`)",
            repo.first().copied().unwrap_or_default()
        )
    } else if image.is_google() {
        format!(
            "see what is there: `gcloud artifacts docker images list {}/{} --include-tags`",
            image.host,
            image
                .name
                .rsplit_once('/')
                .map(|(r, _)| r)
                .unwrap_or(&image.name)
        )
    } else {
        format!(
            "check the name and tag: `docker manifest inspect {}`",
            image.display()
        )
    };
    Finding::error(
        &i.address,
        i.attribute,
        format!(
            "image {} does not exist: {what} ({detail}); its pods would never start (ErrImagePull)",
            i.image
        ),
        fix,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::{Kind, ProviderKind};

    fn addr(name: &str) -> Address {
        Address {
            kind: Kind::Cluster,
            name: name.into(),
            key: None,
        }
    }

    fn cluster(machine: &str, nodes: u32, location: &str) -> ClusterConfig {
        ClusterConfig {
            provider: ProviderKind::Gke,
            project: Some("p".into()),
            location: Some(location.into()),
            machine_type: Some(machine.into()),
            node_count: nodes,
            disk_size_gb: None,
            spot: false,
            private_nodes: false,
            labels: BTreeMap::new(),
            service_account: None,
            network: None,
            subnetwork: None,
            enable_apis: false,
        }
    }

    #[test]
    fn image_references_are_split_as_a_runtime_reads_them() {
        let r = ImageRef::parse("us-central1-docker.pkg.dev/p/benchstack/tf:latest").unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.as_str()),
            ("us-central1-docker.pkg.dev", "p/benchstack/tf", "latest")
        );
        assert_eq!(r.google_project().as_deref(), Some("p"));
        let r = ImageRef::parse("tensorflow/serving").unwrap();
        assert_eq!(
            (r.host.as_str(), r.name.as_str(), r.reference.as_str()),
            ("docker.io", "tensorflow/serving", "latest")
        );
        assert_eq!(
            ImageRef::parse("busybox:1.36").unwrap().name,
            "library/busybox"
        );
        let r = ImageRef::parse("localhost:5000/a/b@sha256:abc").unwrap();
        assert_eq!(
            (r.host.as_str(), r.reference.as_str()),
            ("localhost:5000", "sha256:abc")
        );
        assert!(!r.is_google());
        assert!(ImageRef::parse("gcr.io/p/x:1").unwrap().is_google());
        assert_eq!(ImageRef::parse("a b"), None);
        assert_eq!(ImageRef::parse("host.io//x"), None);
        assert_eq!(ImageRef::parse(""), None);
    }

    fn table(name: &str) -> Option<MachineType> {
        capacity::table_machine_type(name)
    }

    #[test]
    fn the_stacks_two_clusters_need_88_vcpus_of_cpus_e2_cpus_and_all_regions() {
        let items = vec![
            ClusterItem {
                address: addr("serving"),
                config: cluster("e2-highcpu-8", 3, "us-central1-a"),
                creates: true,
                replaces: None,
            },
            ClusterItem {
                address: addr("loadgen"),
                config: cluster("e2-highcpu-32", 2, "us-central1-a"),
                creates: true,
                replaces: None,
            },
        ];
        let needs = quota_needs(&items, &table);
        let key = |region: Option<&str>, metric: &str| QuotaKey {
            project: "p".into(),
            region: region.map(String::from),
            metric: metric.into(),
        };
        for k in [
            key(Some("us-central1"), "CPUS"),
            key(Some("us-central1"), "E2_CPUS"),
            key(None, "CPUS_ALL_REGIONS"),
        ] {
            assert_eq!(needs.by_quota[&k].total, 88, "{k:?}");
        }
        let quotas = vec![
            QuotaValue {
                metric: "CPUS".into(),
                limit: 24.0,
                usage: 0.0,
            },
            QuotaValue {
                metric: "E2_CPUS".into(),
                limit: 500.0,
                usage: 0.0,
            },
        ];
        let f = compare(
            &key(Some("us-central1"), "CPUS"),
            &needs.by_quota[&key(Some("us-central1"), "CPUS")],
            &quotas,
        )
        .unwrap();
        assert_eq!(f.attribute, Some("node_count"));
        assert_eq!(f.address, Some(addr("serving")));
        assert!(
            f.message
                .contains("88 vCPUs counted by CPUS in region us-central1"),
            "{}",
            f.message
        );
        assert!(f.fix.as_deref().unwrap().contains("--quota-id=CPUS-per-project-region --dimensions=region=us-central1 --preferred-value=88"), "{:?}", f.fix);
        assert_eq!(
            compare(
                &key(Some("us-central1"), "E2_CPUS"),
                &needs.by_quota[&key(Some("us-central1"), "E2_CPUS")],
                &quotas
            ),
            None
        );
        // No N2_CPUS quota reported: nothing to compare.
        assert_eq!(
            compare(
                &key(Some("us-central1"), "N2_CPUS"),
                &needs.by_quota[&key(Some("us-central1"), "CPUS")],
                &quotas
            ),
            None
        );
    }

    #[test]
    fn a_replacement_counts_only_what_it_adds_and_existing_clusters_count_nothing() {
        let items = vec![
            ClusterItem {
                address: addr("serving"),
                config: cluster("e2-highcpu-8", 4, "us-central1-a"),
                creates: true,
                replaces: Some(cluster("e2-highcpu-8", 3, "us-central1-a")),
            },
            ClusterItem {
                address: addr("loadgen"),
                config: cluster("e2-highcpu-32", 2, "us-central1-a"),
                creates: false,
                replaces: None,
            },
        ];
        let needs = quota_needs(&items, &table);
        let k = QuotaKey {
            project: "p".into(),
            region: Some("us-central1".into()),
            metric: "CPUS".into(),
        };
        assert_eq!(needs.by_quota[&k].total, 8);
    }

    #[test]
    fn a_machine_type_of_unknown_size_is_a_warning_not_a_guess() {
        let items = vec![ClusterItem {
            address: addr("serving"),
            config: cluster("e2-medium", 3, "us-central1-a"),
            creates: true,
            replaces: None,
        }];
        let needs = quota_needs(&items, &table);
        assert!(needs.by_quota.is_empty());
        assert_eq!(needs.unknown.len(), 1);
        assert_eq!(needs.unknown[0].severity, Severity::Warning);
    }
}
