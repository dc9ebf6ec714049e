//! The gke provider: a `cluster` with `provider = "gke"` is a GKE cluster with one node pool
//! (`benchstack`), managed through google-cloud-container-v1 over REST. Every change is a
//! GKE long-running operation that is polled (backing off) until DONE, under a timeout, with
//! progress reported and cancellation honoured between polls.
//!
//! Before each remote call the provider notes project, location, cluster name and step in the
//! intent, and the operation name once GKE returns it, so an interrupted apply can be
//! continued by `recover`: it waits for a still-running operation and adopts the cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use google_cloud_container_v1::client::ClusterManager;
use google_cloud_container_v1::model::{
    Cluster, IPAllocationPolicy, NodeConfig, NodePool, Operation, PrivateClusterConfig, cluster,
    operation,
};
use serde::{Deserialize, Serialize};

use super::gcp::{self, GkeClusterObserved};
use super::retry::{self, Call, RetryPolicy};
use super::{Applied, Context, ErrorKind, Failure, Inputs, Observation, Provider, ProviderError};
use crate::state::{Intent, ResourceState};
use crate::vocab::resources::{
    Address, ClusterConfig, LINEAGE_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, ResourceConfig,
};

/// The one node pool benchstack creates in each cluster.
pub const NODE_POOL: &str = "benchstack";
/// How long a GKE operation may run before the provider gives up waiting (humantime).
pub const TIMEOUT_ENV: &str = "BENCHSTACK_GKE_TIMEOUT";
/// How long a delete, resize or relabel keeps retrying while GKE refuses it because another
/// operation (an upgrade, an auto-repair) runs on the cluster (humantime, default 30m).
pub const BUSY_WAIT_ENV: &str = "BENCHSTACK_GKE_BUSY_WAIT";
const DEFAULT_BUSY_WAIT: Duration = Duration::from_secs(30 * 60);
/// gcloud's `gke-default` access scopes, which Terraform's google provider also sets itself on
/// every node pool it creates (`defaultOauthScopes` in
/// hashicorp/terraform-provider-google `google/services/container/node_config.go`: "Matches
/// gke-default scope from https://cloud.google.com/sdk/gcloud/reference/container/clusters/create").
/// The API adds none of its own beyond logging and monitoring (NodeConfig.oauthScopes: "If
/// unspecified, no scopes are added, unless Cloud Logging or Cloud Monitoring are enabled"),
/// and `devstorage.read_only` is what lets the nodes pull private images from gcr.io and
/// Artifact Registry.
pub const GKE_DEFAULT_SCOPES: [&str; 6] = [
    "https://www.googleapis.com/auth/devstorage.read_only",
    "https://www.googleapis.com/auth/logging.write",
    "https://www.googleapis.com/auth/monitoring",
    "https://www.googleapis.com/auth/service.management.readonly",
    "https://www.googleapis.com/auth/servicecontrol",
    "https://www.googleapis.com/auth/trace.append",
];
/// GKE cluster names are limited to 40 characters.
const MAX_CLUSTER_NAME: usize = 40;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const POLL_CAP: Duration = Duration::from_secs(15);
/// How often a sleep between polls looks at the cancel flag.
const CANCEL_CHECK: Duration = Duration::from_millis(100);

/// What can go wrong talking to GKE. Every message names the cluster, project and location.
#[derive(Debug, thiserror::Error)]
pub enum GkeError {
    #[error("cluster {address}: `{field}` is required for provider \"gke\"")]
    MissingField {
        address: String,
        field: &'static str,
    },
    #[error("cannot start the GKE client: {0}")]
    Client(String),
    #[error(
        "{action} {cluster}: not enough quota{quota}: {message} Nothing was created. {advice}", quota = .shortfall.describe(), advice = .shortfall.advice(&.cluster.project)
    )]
    Quota {
        action: &'static str,
        cluster: Box<ClusterRef>,
        shortfall: Box<QuotaShortfall>,
        message: String,
    },
    #[error(
        "{action} {cluster}: a cluster of that name already exists and is not recorded in this state; delete it (`gcloud container clusters delete {name} --project {project} --location {location}`) or rename the cluster block", name = .cluster.name, project = .cluster.project, location = .cluster.location
    )]
    AlreadyExists {
        action: &'static str,
        cluster: Box<ClusterRef>,
    },
    #[error(
        "{action} {cluster}: {message}; check the Application Default Credentials (`gcloud auth application-default login`), that project {project} exists, that the Kubernetes Engine API is enabled and that the account may manage clusters in it", project = .cluster.project
    )]
    Denied {
        action: &'static str,
        cluster: Box<ClusterRef>,
        message: String,
    },
    #[error("{action} {cluster}: {message}")]
    Api {
        action: &'static str,
        cluster: Box<ClusterRef>,
        message: String,
        kind: ErrorKind,
        /// The request never reached GKE.
        unsent: bool,
    },
    #[error("{action} {cluster}: operation {operation} failed: {message}{cleanup}")]
    OperationFailed {
        action: &'static str,
        cluster: Box<ClusterRef>,
        operation: String,
        message: String,
        /// What was done about a cluster the failed operation left behind.
        cleanup: String,
    },
    #[error(
        "{action} {cluster}: operation {operation} was still {status} after {waited}; it goes on in GKE: run `benchstack plan` again later (raise {TIMEOUT_ENV} to wait longer)"
    )]
    Timeout {
        action: &'static str,
        cluster: Box<ClusterRef>,
        operation: String,
        status: String,
        waited: String,
    },
    #[error("{0}")]
    Config(String),
}

impl From<GkeError> for ProviderError {
    /// Keeps GKE's message and the cluster apart (for policies and tests) and the full text
    /// with its advice for people.
    fn from(e: GkeError) -> Self {
        let text = e.to_string();
        let (kind, what, message, unsent) = match &e {
            GkeError::MissingField { address, .. } => {
                (ErrorKind::Invalid, address.clone(), text.clone(), false)
            }
            GkeError::Config(m) => (ErrorKind::Invalid, String::new(), m.clone(), false),
            GkeError::Client(m) => (ErrorKind::Other, String::new(), m.clone(), false),
            GkeError::Quota {
                action,
                cluster,
                message,
                ..
            } => (
                ErrorKind::Quota,
                format!("{action} {cluster}"),
                message.clone(),
                false,
            ),
            GkeError::AlreadyExists { action, cluster } => (
                ErrorKind::Conflict,
                format!("{action} {cluster}"),
                "already exists".into(),
                false,
            ),
            GkeError::Denied {
                action,
                cluster,
                message,
            } => (
                ErrorKind::Permission,
                format!("{action} {cluster}"),
                message.clone(),
                false,
            ),
            GkeError::Api {
                action,
                cluster,
                message,
                kind,
                unsent,
            } => (
                *kind,
                format!("{action} {cluster}"),
                message.clone(),
                *unsent,
            ),
            GkeError::OperationFailed {
                action,
                cluster,
                message,
                ..
            } => (
                ErrorKind::Other,
                format!("{action} {cluster}"),
                message.clone(),
                false,
            ),
            GkeError::Timeout {
                action, cluster, ..
            } => (
                ErrorKind::Other,
                format!("{action} {cluster}"),
                text.clone(),
                false,
            ),
        };
        ProviderError::of(
            kind,
            Failure {
                what,
                message,
                text: Some(text),
                unsent,
                attempts: None,
            },
        )
    }
}

/// What a quota refusal says: which quota, where, and by how much. GKE refuses a cluster
/// create over a Compute Engine quota with 403 PERMISSION_DENIED and "Insufficient regional
/// quota to satisfy request: resource \"CPUS\": request requires '88.0' and is short '64.0'.
/// project has a quota of '24.0' with '24.0' available. View and manage quotas at
/// https://console.cloud.google.com/iam-admin/quotas?usage=USED&project=P." ("Insufficient
/// project quota" for project-wide quotas such as `CPUS_ALL_REGIONS`; google/caliban#66,
/// kubeflow/examples#597, googlecodelabs/feedback#950).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QuotaShortfall {
    /// `CPUS`, `CPUS_ALL_REGIONS`, `N2_CPUS`, `IN_USE_ADDRESSES`, … (empty when not said).
    pub quota: String,
    /// The region of a regional quota; None for a project-wide one.
    pub region: Option<String>,
    pub requires: Option<f64>,
    pub short: Option<f64>,
    pub limit: Option<f64>,
}

impl QuotaShortfall {
    /// Reads GKE's message; `location` gives the region of a regional quota.
    pub fn parse(message: &str, location: &str) -> QuotaShortfall {
        let number_after = |label: &str| -> Option<f64> {
            let rest = &message[message.find(label)? + label.len()..];
            let rest = rest.trim_start().strip_prefix('\'')?;
            rest[..rest.find('\'')?].parse().ok()
        };
        let lower = message.to_ascii_lowercase();
        let regional = !lower.contains("insufficient project quota")
            && !quota_name(message).is_some_and(|q| q.ends_with("ALL_REGIONS"));
        QuotaShortfall {
            quota: quota_name(message).unwrap_or_default(),
            region: regional.then(|| region_of(location).to_string()),
            requires: number_after("requires"),
            short: number_after("is short"),
            limit: number_after("a quota of"),
        }
    }

    /// ` (CPUS in region us-central1)`, ` (CPUS_ALL_REGIONS)`, or nothing.
    fn describe(&self) -> String {
        match (&self.quota, &self.region) {
            (q, _) if q.is_empty() => String::new(),
            (q, Some(r)) => format!(" ({q} in region {r})"),
            (q, None) => format!(" ({q}, all regions)"),
        }
    }

    /// The Cloud Quotas id of a Compute Engine quota: `CPUS` in a region is
    /// `CPUS-per-project-region`, `CPUS_ALL_REGIONS` is `CPUS-ALL-REGIONS-per-project`.
    pub fn quota_id(&self) -> Option<String> {
        if self.quota.is_empty() {
            return None;
        }
        let base = self.quota.replace('_', "-");
        Some(match self.region {
            Some(_) => format!("{base}-per-project-region"),
            None => format!("{base}-per-project"),
        })
    }

    /// How to raise it: the `gcloud` command (with the value the request needs) and the
    /// console page.
    pub fn advice(&self, project: &str) -> String {
        let console = format!(
            "https://console.cloud.google.com/iam-admin/quotas?usage=USED&project={project}"
        );
        let needed = match (self.limit, self.short) {
            (Some(l), Some(s)) => Some((l + s).ceil()),
            _ => None,
        };
        let command = match (self.quota_id(), needed) {
            (Some(id), Some(n)) => {
                let dimensions = self
                    .region
                    .as_ref()
                    .map(|r| format!(" --dimensions=region={r}"))
                    .unwrap_or_default();
                format!(
                    "`gcloud quotas preferences create --project={project} --service=compute.googleapis.com --quota-id={id}{dimensions} --preferred-value={n}` or "
                )
            }
            _ => String::new(),
        };
        format!(
            "Raise the quota ({command}at {console}), or use a smaller machine_type or node_count, or another location"
        )
    }
}

/// `us-central1-a` → `us-central1`; a region is its own region.
pub fn region_of(location: &str) -> &str {
    match location.rsplit_once('-') {
        Some((region, zone)) if zone.len() == 1 && region.contains('-') => region,
        _ => location,
    }
}

/// A quota refusal, whatever its status: GKE sends 403 PERMISSION_DENIED for Compute Engine
/// quotas (see [`QuotaShortfall`]); other Google APIs send 429 RESOURCE_EXHAUSTED.
fn is_quota_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("insufficient regional quota")
        || m.contains("insufficient project quota")
        || m.contains("insufficient quota")
        || (m.contains("quota") && m.contains("exceeded"))
}

/// Which GKE cluster a resource is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterRef {
    pub project: String,
    pub location: String,
    pub name: String,
}

impl std::fmt::Display for ClusterRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cluster {} (project {}, location {})",
            self.name, self.project, self.location
        )
    }
}

impl ClusterRef {
    pub fn for_config(address: &Address, c: &ClusterConfig) -> Result<ClusterRef, GkeError> {
        let missing = |field| GkeError::MissingField {
            address: address.to_string(),
            field,
        };
        Ok(ClusterRef {
            project: c.project.clone().ok_or_else(|| missing("project"))?,
            location: c.location.clone().ok_or_else(|| missing("location"))?,
            name: cluster_name(address),
        })
    }

    fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.location)
    }

    fn path(&self) -> String {
        format!("{}/clusters/{}", self.parent(), self.name)
    }

    fn node_pool_path(&self) -> String {
        format!("{}/nodePools/{NODE_POOL}", self.path())
    }

    /// `get_operation` wants the full resource name; GKE returns a bare operation id.
    fn operation_path(&self, operation: &str) -> String {
        if operation.contains('/') {
            operation.to_string()
        } else {
            format!("{}/operations/{operation}", self.parent())
        }
    }

    fn api_error(&self, action: &'static str, e: &google_cloud_gax::error::Error) -> GkeError {
        let (kind, message, unsent) = gcp::classify(e);
        let cluster = Box::new(self.clone());
        let already_exists = e
            .status()
            .is_some_and(|s| s.code == google_cloud_gax::error::rpc::Code::AlreadyExists);
        let quota = kind == ErrorKind::Quota
            || (kind == ErrorKind::Permission && !unsent && is_quota_message(&message));
        if quota {
            return GkeError::Quota {
                action,
                shortfall: Box::new(QuotaShortfall::parse(&message, &self.location)),
                cluster,
                message: with_full_stop(&message),
            };
        }
        match kind {
            ErrorKind::Conflict if already_exists => GkeError::AlreadyExists { action, cluster },
            ErrorKind::Permission if !unsent || e.is_authentication() => GkeError::Denied {
                action,
                cluster,
                message,
            },
            _ => GkeError::Api {
                action,
                cluster,
                message,
                kind,
                unsent,
            },
        }
    }
}

/// Recorded in the intent before each remote call (and again with the operation name).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GkeIntent {
    #[serde(flatten)]
    cluster: ClusterRef,
    /// create, delete, resize or labels.
    step: String,
    #[serde(default)]
    operation: Option<String>,
}

/// The GKE cluster name of an address: its DNS label, cut to GKE's 40 characters.
pub fn cluster_name(address: &Address) -> String {
    let full = crate::manifest::k8s::object_name(address);
    let cut: String = full.chars().take(MAX_CLUSTER_NAME).collect();
    cut.trim_end_matches('-').to_string()
}

/// The quota a RESOURCE_EXHAUSTED message names (`… resource "CPUS": …` or `Quota 'CPUS' …`).
fn quota_name(message: &str) -> Option<String> {
    for (open, close) in [("resource \"", '"'), ("Quota '", '\''), ("quota '", '\'')] {
        if let Some(start) = message.find(open) {
            let rest = &message[start + open.len()..];
            if let Some(end) = rest.find(close) {
                return Some(rest[..end].to_string());
            }
        }
    }
    None
}

fn with_full_stop(message: &str) -> String {
    let m = message.trim();
    if m.ends_with('.') {
        m.to_string()
    } else {
        format!("{m}.")
    }
}

/// `2m10s`, `45s`, `1h3m0s`.
fn short_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, sec) => format!("{h}h{m}m{sec}s"),
    }
}

fn operation_status(op: &Operation) -> String {
    op.status.name().unwrap_or("UNKNOWN").to_string()
}

fn cluster_status(c: &Cluster) -> String {
    c.status.name().unwrap_or("UNKNOWN").to_string()
}

/// The node pool benchstack manages, or the first one.
fn managed_pool(c: &Cluster) -> Option<&NodePool> {
    c.node_pools
        .iter()
        .find(|p| p.name == NODE_POOL)
        .or_else(|| c.node_pools.first())
}

/// Nodes per zone of the managed pool. `currentNodeCount` is the cluster's total over all its
/// pools and zones; `initialNodeCount` stays at the creation value after a resize.
/// (`currentNodeCount` is deprecated in the API but still the one live count GKE reports.)
#[allow(deprecated)]
fn live_node_count(c: &Cluster) -> u32 {
    let pool = managed_pool(c);
    let zones = pool.map(|p| p.locations.len()).unwrap_or(0).max(1) as i32;
    let pools = c.node_pools.len().max(1) as i32;
    if c.current_node_count > 0 && pools == 1 {
        (c.current_node_count / zones).max(0) as u32
    } else {
        pool.map(|p| p.initial_node_count.max(0) as u32)
            .unwrap_or(0)
    }
}

/// Why a cluster is unhealthy: its status message, else its conditions' messages.
/// (`statusMessage` is deprecated for `conditions`; GKE still fills either.)
#[allow(deprecated)]
fn status_message(c: &Cluster) -> String {
    if !c.status_message.is_empty() {
        return c.status_message.clone();
    }
    let conditions: Vec<&str> = c
        .conditions
        .iter()
        .map(|x| x.message.as_str())
        .filter(|m| !m.is_empty())
        .collect();
    if conditions.is_empty() {
        "no message".into()
    } else {
        conditions.join("; ")
    }
}

fn observed_of(r: &ClusterRef, c: &Cluster) -> GkeClusterObserved {
    let pool = managed_pool(c);
    let config = pool.and_then(|p| p.config.as_ref());
    GkeClusterObserved {
        project: r.project.clone(),
        location: r.location.clone(),
        name: r.name.clone(),
        endpoint: c.endpoint.clone(),
        ca_certificate: c
            .master_auth
            .as_ref()
            .map(|a| a.cluster_ca_certificate.clone())
            .unwrap_or_default(),
        status: cluster_status(c),
        node_pool: pool.map(|p| p.name.clone()).unwrap_or_default(),
        node_count: live_node_count(c),
        machine_type: config.map(|n| n.machine_type.clone()).unwrap_or_default(),
        cpu_platform: config
            .map(|n| n.min_cpu_platform.clone())
            .filter(|p| !p.is_empty()),
    }
}

fn to_json(o: &GkeClusterObserved) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

fn cluster_config(config: &ResourceConfig) -> Result<&ClusterConfig, ProviderError> {
    match config {
        ResourceConfig::Cluster(c) => Ok(c),
        _ => Err(ProviderError::invalid(
            "the gke provider manages clusters only",
        )),
    }
}

/// The resource labels a cluster carries: the stack's, `managed-by=benchstack`, and the
/// lineage of the state that made it (when known), so that `destroy` can find a cluster
/// whose state is lost, and tell whose it is.
pub fn cluster_labels(c: &ClusterConfig, lineage: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = c.labels.clone();
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY_VALUE.into());
    if let Some(l) = lineage.filter(|l| is_label_value(l)) {
        labels.insert(LINEAGE_LABEL.into(), l.to_string());
    }
    labels
}

/// GKE label values: at most 63 lowercase letters, digits, `_` and `-`.
fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The lineage of the state in `state_dir`, from its published snapshot (read without the
/// database, which the running command holds). None when there is none to read.
fn state_lineage(state_dir: &std::path::Path) -> Option<String> {
    let path = crate::state::published::snapshot_dir(state_dir).join("current.json");
    let bytes = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v["lineage"].as_str().map(str::to_string)
}

/// The cluster to create: one named node pool with gcloud's `gke-default` scopes (and the
/// service account, when given), the labels, the network, and private nodes with IP aliases.
/// A private cluster names no control-plane range: GKE 1.29 and later choose one, and a fixed
/// range would collide with the next private cluster in the same network, since the range
/// must be unique there (crossplane-contrib/provider-gcp#227;
/// https://cloud.google.com/kubernetes-engine/docs/how-to/alias-ips: "the master-ipv4-cidr
/// and private-endpoint-subnetwork flags are optional").
/// `privateClusterConfig.enablePrivateNodes` is deprecated in favour of network settings that
/// need a prepared subnetwork; it is still honoured.
#[allow(deprecated)]
fn cluster_spec(r: &ClusterRef, c: &ClusterConfig, labels: &BTreeMap<String, String>) -> Cluster {
    let mut node_config = NodeConfig::new()
        .set_spot(c.spot)
        .set_oauth_scopes(GKE_DEFAULT_SCOPES);
    if let Some(m) = &c.machine_type {
        node_config = node_config.set_machine_type(m.clone());
    }
    if let Some(gb) = c.disk_size_gb {
        node_config = node_config.set_disk_size_gb(i32::try_from(gb).unwrap_or(i32::MAX));
    }
    if let Some(sa) = &c.service_account {
        node_config = node_config.set_service_account(sa.clone());
    }
    let pool = NodePool::new()
        .set_name(NODE_POOL)
        .set_config(node_config)
        .set_initial_node_count(i32::try_from(c.node_count).unwrap_or(i32::MAX));
    let mut cluster = Cluster::new()
        .set_name(r.name.clone())
        .set_node_pools([pool])
        .set_resource_labels(labels.clone());
    if let Some(n) = &c.network {
        cluster = cluster.set_network(n.clone());
    }
    if let Some(s) = &c.subnetwork {
        cluster = cluster.set_subnetwork(s.clone());
    }
    if c.private_nodes {
        cluster = cluster
            .set_private_cluster_config(PrivateClusterConfig::new().set_enable_private_nodes(true))
            .set_ip_allocation_policy(IPAllocationPolicy::new().set_use_ip_aliases(true));
    }
    cluster
}

/// Where and how the provider talks to GKE; `None` fields come from the environment.
#[derive(Debug, Clone, Default)]
struct Settings {
    endpoint: Option<String>,
    poll_interval: Option<Duration>,
    timeout: Option<Duration>,
    retry_budget: Option<Duration>,
    busy_wait: Option<Duration>,
}

pub struct GkeProvider {
    settings: Settings,
    /// Built on first use: the runtime the async client runs on, and the client.
    runtime: Mutex<Option<Arc<tokio::runtime::Runtime>>>,
    client: Mutex<Option<ClusterManager>>,
}

impl Default for GkeProvider {
    fn default() -> Self {
        Self::new()
    }
}

impl GkeProvider {
    /// Google's endpoint with Application Default Credentials, or the emulator named by
    /// `BENCHSTACK_GKE_ENDPOINT` with anonymous credentials.
    pub fn new() -> Self {
        GkeProvider {
            settings: Settings::default(),
            runtime: Mutex::new(None),
            client: Mutex::new(None),
        }
    }

    /// Talks to an emulator at `url` (anonymous credentials, no retries) regardless of the
    /// environment.
    pub fn with_emulator(mut self, url: impl Into<String>) -> Self {
        self.settings.endpoint = Some(url.into().trim_end_matches('/').to_string());
        self
    }

    /// The first interval between operation polls, instead of `BENCHSTACK_POLL_INTERVAL`.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.settings.poll_interval = Some(interval);
        self
    }

    /// How long to keep retrying a call that meets a transient failure, instead of
    /// `BENCHSTACK_RETRY_BUDGET`.
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.settings.retry_budget = Some(budget);
        self
    }

    /// How long a delete, resize or relabel waits out another operation on the cluster,
    /// instead of `BENCHSTACK_GKE_BUSY_WAIT`.
    pub fn with_busy_wait(mut self, wait: Duration) -> Self {
        self.settings.busy_wait = Some(wait);
        self
    }

    fn busy_wait(&self) -> Result<Duration, ProviderError> {
        if let Some(d) = self.settings.busy_wait {
            return Ok(d);
        }
        Ok(super::env_duration(BUSY_WAIT_ENV, "30m or 1h")?.unwrap_or(DEFAULT_BUSY_WAIT))
    }

    fn retry_policy(&self) -> Result<RetryPolicy, ProviderError> {
        match self.settings.retry_budget {
            Some(b) => Ok(RetryPolicy::with_budget(b)),
            None => RetryPolicy::from_env(),
        }
    }

    /// How long to wait for one operation, instead of `BENCHSTACK_GKE_TIMEOUT`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.settings.timeout = Some(timeout);
        self
    }

    fn poll_interval(&self) -> Result<Duration, ProviderError> {
        match self.settings.poll_interval {
            Some(d) => Ok(d),
            None => gcp::poll_interval(),
        }
    }

    fn timeout(&self) -> Result<Duration, ProviderError> {
        if let Some(d) = self.settings.timeout {
            return Ok(d);
        }
        Ok(super::env_duration(TIMEOUT_ENV, "45m or 1h")?.unwrap_or(DEFAULT_TIMEOUT))
    }

    fn runtime(&self) -> Result<Arc<tokio::runtime::Runtime>, ProviderError> {
        let mut slot = self
            .runtime
            .lock()
            .map_err(|_| GkeError::Client("runtime lock poisoned".into()))?;
        if let Some(rt) = slot.as_ref() {
            return Ok(rt.clone());
        }
        let rt = Arc::new(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("benchstack-gke")
                .enable_all()
                .build()
                .map_err(ProviderError::io("starting the GKE client runtime"))?,
        );
        *slot = Some(rt.clone());
        Ok(rt)
    }

    /// Runs `f` with the client on the provider's runtime, from a plain thread.
    fn run<T>(
        &self,
        f: impl AsyncFnOnce(&ClusterManager) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let rt = self.runtime()?;
        rt.block_on(async {
            let client = self.client().await?;
            f(&client).await
        })
    }

    async fn client(&self) -> Result<ClusterManager, ProviderError> {
        if let Some(c) = self
            .client
            .lock()
            .map_err(|_| GkeError::Client("client lock poisoned".into()))?
            .as_ref()
        {
            return Ok(c.clone());
        }
        let endpoint = self
            .settings
            .endpoint
            .clone()
            .or_else(gcp::emulator_endpoint);
        // The client's own retries are off in every case: `retry::retry` is the one loop, with
        // one budget, that also honours a cancel (two nested loops would multiply).
        let built = match endpoint {
            Some(url) => {
                // An emulator: nothing may look for credentials off loopback.
                ClusterManager::builder()
                    .with_endpoint(url)
                    .with_credentials(
                        google_cloud_auth::credentials::anonymous::Builder::new().build(),
                    )
                    .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
                    .build()
                    .await
            }
            None => {
                ClusterManager::builder()
                    .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
                    .build()
                    .await
            }
        }
        .map_err(|e| {
            GkeError::Client(format!(
                "{e} (run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)"
            ))
        })?;
        let mut slot = self
            .client
            .lock()
            .map_err(|_| GkeError::Client("client lock poisoned".into()))?;
        Ok(slot.get_or_insert(built).clone())
    }

    /// Sends a request with the provider's retry policy; GKE errors are classified by
    /// `api_error`.
    async fn call<T, Fut>(
        &self,
        r: &ClusterRef,
        action: &'static str,
        kind: Call,
        cancel: &AtomicBool,
        send: impl Fn() -> Fut,
    ) -> Result<T, ProviderError>
    where
        Fut: std::future::Future<Output = Result<T, google_cloud_gax::error::Error>>,
    {
        let policy = self.retry_policy()?;
        retry::retry(&policy, cancel, kind, || async {
            send()
                .await
                .map_err(|e| ProviderError::from(r.api_error(action, &e)))
        })
        .await
    }

    /// As [`Self::call`] for a change that GKE refuses while another operation runs on the
    /// cluster (an upgrade, an auto-repair): that refusal is retried, backing off, for up to
    /// the busy wait, with a progress line naming the operation.
    async fn call_waiting<T, Fut>(
        &self,
        ctx: &Context<'_>,
        r: &ClusterRef,
        action: &'static str,
        kind: Call,
        send: impl Fn() -> Fut,
    ) -> Result<T, ProviderError>
    where
        Fut: std::future::Future<Output = Result<T, google_cloud_gax::error::Error>>,
    {
        let policy = self.retry_policy()?.waiting_while_busy(self.busy_wait()?);
        let waiting = |e: &ProviderError, wait: Duration| {
            (ctx.progress)(format!(
                "{action} cluster {}: GKE is busy with another operation ({}); trying again in {}",
                r.name,
                e.message().unwrap_or("no message"),
                short_duration(wait.max(Duration::from_secs(1)))
            ))
        };
        retry::retry_telling(&policy, ctx.cancel, kind, &waiting, || async {
            send()
                .await
                .map_err(|e| ProviderError::from(r.api_error(action, &e)))
        })
        .await
    }

    /// The live cluster, or None when GKE says it does not exist (NOT_FOUND, and nothing
    /// else: any other failure is an error, retried first when it is transient).
    async fn get(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        cancel: &AtomicBool,
    ) -> Result<Option<Cluster>, ProviderError> {
        let got = self
            .call(r, "reading", Call::Idempotent, cancel, || {
                client.get_cluster().set_name(r.path()).send()
            })
            .await;
        match got {
            Ok(c) => Ok(Some(c)),
            Err(ProviderError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn get_existing(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        action: &'static str,
        cancel: &AtomicBool,
    ) -> Result<Cluster, ProviderError> {
        self.get(client, r, cancel).await?.ok_or_else(|| {
            GkeError::Api {
                action,
                cluster: Box::new(r.clone()),
                message: "GKE reports no such cluster (deleted outside benchstack?)".into(),
                kind: ErrorKind::NotFound,
                unsent: false,
            }
            .into()
        })
    }

    /// Polls the operation until DONE, backing off; fails with the operation's own error.
    /// `cancel` is None during recovery, which has nobody to interrupt it.
    async fn wait(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        first: Operation,
        action: &'static str,
        ctx: &Context<'_>,
        honour_cancel: bool,
    ) -> Result<(), ProviderError> {
        let name = first.name.clone();
        match self
            .poll_until_done(client, r, first, action, ctx, honour_cancel)
            .await?
        {
            None => Ok(()),
            Some(message) => Err(self.operation_failed(r, action, &name, &message, "")),
        }
    }

    /// Polls until DONE: Ok(None) when the operation succeeded, Ok(Some(its error message))
    /// when it failed; Err when waiting itself failed (timeout, cancel, API error).
    async fn poll_until_done(
        &self,
        client: &ClusterManager,
        r: &ClusterRef,
        first: Operation,
        action: &'static str,
        ctx: &Context<'_>,
        honour_cancel: bool,
    ) -> Result<Option<String>, ProviderError> {
        let started = Instant::now();
        let timeout = self.timeout()?;
        let mut interval = self.poll_interval()?;
        let name = first.name.clone();
        let mut op = first;
        loop {
            if op.status == operation::Status::Done {
                return Ok(match &op.error {
                    Some(e) if e.code != 0 || !e.message.is_empty() => Some(e.message.clone()),
                    _ => None,
                });
            }
            (ctx.progress)(format!(
                "{action} cluster {}: {}, {}",
                r.name,
                operation_status(&op),
                short_duration(started.elapsed())
            ));
            if started.elapsed() >= timeout {
                return Err(GkeError::Timeout {
                    action,
                    cluster: Box::new(r.clone()),
                    operation: name,
                    status: operation_status(&op),
                    waited: short_duration(started.elapsed()),
                }
                .into());
            }
            let wake = Instant::now() + interval;
            while Instant::now() < wake {
                if honour_cancel && ctx.cancel.load(Ordering::SeqCst) {
                    return Err(ProviderError::Interrupted);
                }
                tokio::time::sleep(CANCEL_CHECK.min(wake - Instant::now())).await;
            }
            if honour_cancel && ctx.cancel.load(Ordering::SeqCst) {
                return Err(ProviderError::Interrupted);
            }
            interval = gcp::backoff(interval, POLL_CAP);
            op = self
                .call(r, action, Call::Idempotent, ctx.cancel, || {
                    client
                        .get_operation()
                        .set_name(r.operation_path(&name))
                        .send()
                })
                .await?;
        }
    }

    fn operation_failed(
        &self,
        r: &ClusterRef,
        action: &'static str,
        operation: &str,
        message: &str,
        cleanup: &str,
    ) -> ProviderError {
        GkeError::OperationFailed {
            action,
            cluster: Box::new(r.clone()),
            operation: operation.to_string(),
            message: if message.is_empty() {
                "no reason given".into()
            } else {
                message.to_string()
            },
            cleanup: cleanup.to_string(),
        }
        .into()
    }

    fn note(
        ctx: &Context,
        r: &ClusterRef,
        step: &str,
        operation: Option<&str>,
    ) -> Result<(), ProviderError> {
        (ctx.note)(
            serde_json::to_value(GkeIntent {
                cluster: r.clone(),
                step: step.to_string(),
                operation: operation.map(str::to_string),
            })
            .unwrap_or_default(),
        )
    }

    async fn create_cluster(
        &self,
        client: &ClusterManager,
        ctx: &Context<'_>,
        r: &ClusterRef,
        c: &ClusterConfig,
    ) -> Result<GkeClusterObserved, ProviderError> {
        Self::note(ctx, r, "create", None)?;
        (ctx.progress)(format!("creating cluster {}", r.name));
        let spec = cluster_spec(
            r,
            c,
            &cluster_labels(c, state_lineage(ctx.state_dir).as_deref()),
        );
        let op = self
            .call(r, "creating", Call::Once, ctx.cancel, || {
                client
                    .create_cluster()
                    .set_parent(r.parent())
                    .set_cluster(spec.clone())
                    .send()
            })
            .await?;
        Self::note(ctx, r, "create", Some(&op.name))?;
        let op_name = op.name.clone();
        let outcome = self
            .poll_until_done(client, r, op, "creating", ctx, true)
            .await?;
        if let Some(message) = outcome {
            // GKE keeps a cluster whose creation failed, in ERROR: remove it so the failure
            // leaves nothing behind and the next apply can create it afresh.
            let cleanup = self.remove_failed(client, ctx, r).await;
            return Err(self.operation_failed(r, "creating", &op_name, &message, &cleanup));
        }
        let live = self.get_existing(client, r, "creating", ctx.cancel).await?;
        Ok(observed_of(r, &live))
    }

    /// Deletes what a failed create left; says what happened, for the error message.
    async fn remove_failed(
        &self,
        client: &ClusterManager,
        ctx: &Context<'_>,
        r: &ClusterRef,
    ) -> String {
        match self.get(client, r, ctx.cancel).await {
            Ok(None) => "; nothing was left behind".into(),
            Ok(Some(_)) => match self.delete_cluster(client, ctx, r, false).await {
                Ok(()) => "; the failed cluster was deleted".into(),
                Err(e) => {
                    format!("; deleting the failed cluster also failed ({e}): delete it by hand")
                }
            },
            Err(e) => format!("; could not check for a failed cluster left behind ({e})"),
        }
    }

    async fn delete_cluster(
        &self,
        client: &ClusterManager,
        ctx: &Context<'_>,
        r: &ClusterRef,
        honour_cancel: bool,
    ) -> Result<(), ProviderError> {
        Self::note(ctx, r, "delete", None)?;
        (ctx.progress)(format!("deleting cluster {}", r.name));
        let sent = self
            .call_waiting(ctx, r, "deleting", Call::Once, || {
                client.delete_cluster().set_name(r.path()).send()
            })
            .await;
        let op = match sent {
            Ok(op) => op,
            Err(ProviderError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        Self::note(ctx, r, "delete", Some(&op.name))?;
        self.wait(client, r, op, "deleting", ctx, honour_cancel)
            .await
    }

    async fn update_cluster(
        &self,
        client: &ClusterManager,
        ctx: &Context<'_>,
        r: &ClusterRef,
        c: &ClusterConfig,
    ) -> Result<GkeClusterObserved, ProviderError> {
        // Compare with what is live, not what was recorded: a resize outside benchstack is
        // exactly what this update may be undoing.
        let live = self.get_existing(client, r, "updating", ctx.cancel).await?;
        if live_node_count(&live) != c.node_count {
            Self::note(ctx, r, "resize", None)?;
            (ctx.progress)(format!(
                "resizing cluster {} from {} to {} nodes",
                r.name,
                live_node_count(&live),
                c.node_count
            ));
            let op = self
                .call_waiting(ctx, r, "resizing", Call::Once, || {
                    client
                        .set_node_pool_size()
                        .set_name(r.node_pool_path())
                        .set_node_count(i32::try_from(c.node_count).unwrap_or(i32::MAX))
                        .send()
                })
                .await?;
            Self::note(ctx, r, "resize", Some(&op.name))?;
            self.wait(client, r, op, "resizing", ctx, true).await?;
        }
        let live = self.get_existing(client, r, "updating", ctx.cancel).await?;
        let live_labels: BTreeMap<String, String> = live
            .resource_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // The cluster keeps the lineage it was made with; one made before these labels
        // existed gets this state's.
        let lineage = live_labels
            .get(LINEAGE_LABEL)
            .cloned()
            .or_else(|| state_lineage(ctx.state_dir));
        let wanted = cluster_labels(c, lineage.as_deref());
        if live_labels != wanted {
            Self::note(ctx, r, "labels", None)?;
            (ctx.progress)(format!("setting the labels of cluster {}", r.name));
            let op = self
                .call_waiting(ctx, r, "labelling", Call::Once, || {
                    client
                        .set_labels()
                        .set_name(r.path())
                        .set_resource_labels(wanted.iter().collect::<HashMap<_, _>>())
                        .set_label_fingerprint(live.label_fingerprint.clone())
                        .send()
                })
                .await?;
            Self::note(ctx, r, "labels", Some(&op.name))?;
            self.wait(client, r, op, "labelling", ctx, true).await?;
        }
        let live = self.get_existing(client, r, "updating", ctx.cancel).await?;
        Ok(observed_of(r, &live))
    }

    async fn refresh(
        &self,
        client: &ClusterManager,
        ctx: &Context<'_>,
        prior: &ResourceState,
        c: &ClusterConfig,
    ) -> Result<Observation, ProviderError> {
        let r = match serde_json::from_value::<GkeClusterObserved>(prior.observed.clone()) {
            Ok(o) => ClusterRef {
                project: o.project,
                location: o.location,
                name: o.name,
            },
            Err(_) => ClusterRef::for_config(&prior.address, c)?,
        };
        let Some(live) = self.get(client, &r, ctx.cancel).await? else {
            return Ok(Observation::Gone(format!(
                "cluster {} (project {}, location {}) was deleted outside benchstack",
                r.name, r.project, r.location
            )));
        };
        let status = live.status.clone();
        let observed = observed_of(&r, &live);
        // Only ERROR is broken for good: GKE says so, and its message says why. A cluster
        // that is degraded, busy or starting is left alone (it may recover, and replacing it
        // would destroy everything on it); the user is told. STOPPING means someone is
        // deleting it: the next plan after that shows a create.
        match status {
            cluster::Status::Error => {
                return Ok(Observation::Drifted(format!(
                    "cluster {} is ERROR: {}",
                    r.name,
                    status_message(&live)
                )));
            }
            cluster::Status::Degraded
            | cluster::Status::Reconciling
            | cluster::Status::Provisioning
            | cluster::Status::Stopping => {
                return Ok(Observation::Unsettled {
                    observed: to_json(&observed),
                    warning: format!(
                        "cluster {} is {}: {}; nothing is planned for it until it settles",
                        r.name,
                        cluster_status(&live),
                        status_message(&live)
                    ),
                });
            }
            _ => {}
        }
        let mut changes = Vec::new();
        let mut live_config = c.clone();
        // While GKE is still provisioning it may report no nodes yet: not a drift.
        let settled = status == cluster::Status::Running;
        if settled && observed.node_count != c.node_count {
            changes.push(format!(
                "node_count changed from {} to {}",
                c.node_count, observed.node_count
            ));
            live_config.node_count = observed.node_count;
        }
        if let Some(recorded) = &c.machine_type
            && !observed.machine_type.is_empty()
            && &observed.machine_type != recorded
        {
            changes.push(format!(
                "machine_type changed from {recorded} to {}",
                observed.machine_type
            ));
            live_config.machine_type = Some(observed.machine_type.clone());
        }
        if changes.is_empty() {
            Ok(Observation::Present(to_json(&observed)))
        } else {
            Ok(Observation::Modified {
                observed: to_json(&observed),
                config: Box::new(ResourceConfig::Cluster(live_config)),
                what: changes.join(", "),
            })
        }
    }

    async fn recover_cluster(
        &self,
        client: &ClusterManager,
        ctx: &Context<'_>,
        data: &GkeIntent,
        clean_up: bool,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        let r = &data.cluster;
        if let Some(name) = &data.operation {
            let op = self
                .call(r, "recovering", Call::Idempotent, ctx.cancel, || {
                    client
                        .get_operation()
                        .set_name(r.operation_path(name))
                        .send()
                })
                .await;
            match op {
                Ok(op) if op.status != operation::Status::Done => {
                    if !clean_up {
                        // Still at work in GKE: nothing to adopt yet; apply will wait for it.
                        return Ok(None);
                    }
                    let action = match data.step.as_str() {
                        "delete" => "deleting",
                        "create" => "creating",
                        _ => "updating",
                    };
                    if let Err(e) = self.wait(client, r, op, action, ctx, false).await {
                        // A failed create is cleaned up below like any other leftover.
                        if data.step != "create" {
                            return Err(e);
                        }
                    }
                }
                Ok(_) => {}
                Err(ProviderError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let live = self.get(client, r, ctx.cancel).await?;
        match (data.step.as_str(), live) {
            ("delete", Some(_)) => {
                if clean_up {
                    self.delete_cluster(client, ctx, r, false).await?;
                }
                Ok(None)
            }
            (_, Some(c)) if c.status == cluster::Status::Error => {
                if clean_up {
                    self.delete_cluster(client, ctx, r, false).await?;
                }
                Ok(None)
            }
            ("delete", None) | (_, None) => Ok(None),
            (_, Some(c)) => Ok(Some(to_json(&observed_of(r, &c)))),
        }
    }
}

/// A GKE cluster labelled `managed-by=benchstack`, as a listing found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedCluster {
    pub cluster: ClusterRef,
    pub status: String,
    /// The lineage of the state that made it (its `benchstack-lineage` label).
    pub lineage: Option<String>,
    pub node_count: u32,
    pub machine_type: String,
}

impl GkeProvider {
    /// The clusters in `project` and `location` that benchstack made, whatever state they
    /// belong to. The list API has no filter: the labels are read here.
    pub fn find_managed(
        &self,
        project: &str,
        location: &str,
        cancel: &AtomicBool,
    ) -> Result<Vec<ManagedCluster>, ProviderError> {
        let parent = format!("projects/{project}/locations/{location}");
        let what = format!("listing the clusters of project {project} in {location}");
        let policy = self.retry_policy()?;
        let listed = self.run(async |client| {
            retry::retry(&policy, cancel, Call::Idempotent, || async {
                client
                    .list_clusters()
                    .set_parent(parent.clone())
                    .send()
                    .await
                    .map_err(|e| {
                        let (kind, message, unsent) = gcp::classify(&e);
                        let e = ProviderError::new(kind, what.clone(), message);
                        if unsent { e.unsent_request() } else { e }
                    })
            })
            .await
        })?;
        Ok(listed
            .clusters
            .iter()
            .filter(|c| {
                c.resource_labels.get(MANAGED_BY_LABEL).map(String::as_str)
                    == Some(MANAGED_BY_VALUE)
            })
            .map(|c| {
                let r = ClusterRef {
                    project: project.to_string(),
                    location: if c.location.is_empty() {
                        location.to_string()
                    } else {
                        c.location.clone()
                    },
                    name: c.name.clone(),
                };
                let o = observed_of(&r, c);
                ManagedCluster {
                    lineage: c.resource_labels.get(LINEAGE_LABEL).cloned(),
                    status: o.status,
                    node_count: o.node_count,
                    machine_type: o.machine_type,
                    cluster: r,
                }
            })
            .collect())
    }

    /// Deletes a cluster no state records (one [`Self::find_managed`] found), waiting until
    /// it is gone.
    pub fn delete_unrecorded(
        &self,
        ctx: &Context,
        cluster: &ClusterRef,
    ) -> Result<(), ProviderError> {
        self.run(async |client| self.delete_cluster(client, ctx, cluster, true).await)
    }
}

/// What keeps running, and billing, on Google Cloud among these resources: one line per
/// GKE cluster (its nodes, and their on-demand price when known) and per LoadBalancer
/// Service on one, and one per GKE create that an interrupted apply left under way.
pub fn billing_lines(resources: &[ResourceState], intents: &[Intent]) -> Vec<String> {
    let mut lines = Vec::new();
    for r in resources {
        match (r.provider.as_str(), &r.config) {
            ("gke", ResourceConfig::Cluster(c)) => {
                let o = serde_json::from_value::<GkeClusterObserved>(r.observed.clone()).ok();
                let (name, project, location, nodes, machine) = match &o {
                    Some(o) => (
                        o.name.clone(),
                        o.project.clone(),
                        o.location.clone(),
                        o.node_count,
                        o.machine_type.clone(),
                    ),
                    None => (
                        cluster_name(&r.address),
                        c.project.clone().unwrap_or_default(),
                        c.location.clone().unwrap_or_default(),
                        c.node_count,
                        c.machine_type.clone().unwrap_or_default(),
                    ),
                };
                let price = crate::tune::prices::on_demand(&machine)
                    .filter(|_| !c.spot)
                    .map(|p| {
                        format!(
                            ", about ${:.2}/h at us-central1 on-demand prices",
                            p * f64::from(nodes)
                        )
                    })
                    .unwrap_or_default();
                lines.push(format!(
                    "{}: GKE cluster {name} (project {project}, location {location}), {nodes} × {machine} nodes{price}",
                    r.address
                ));
            }
            ("kubernetes", ResourceConfig::Serving(s)) => lines.push(format!(
                "{}: a LoadBalancer Service on {} (a Google Cloud forwarding rule)",
                r.address, s.cluster
            )),
            _ => {}
        }
    }
    for i in intents.iter().filter(|i| i.provider == "gke") {
        if let Ok(data) = serde_json::from_value::<GkeIntent>(i.data.clone()) {
            lines.push(format!(
                "{}: GKE {} of cluster {} (project {}, location {}) was under way and goes on in GKE",
                i.address, data.step, data.cluster.name, data.cluster.project, data.cluster.location
            ));
        }
    }
    lines
}

impl Provider for GkeProvider {
    fn name(&self) -> &'static str {
        "gke"
    }

    fn read(&self, ctx: &Context, prior: &ResourceState) -> Result<Observation, ProviderError> {
        let c = cluster_config(&prior.config)?;
        self.run(async |client| self.refresh(client, ctx, prior, c).await)
    }

    fn create(
        &self,
        ctx: &Context,
        address: &Address,
        config: &ResourceConfig,
        _inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        let c = cluster_config(config)?;
        let r = ClusterRef::for_config(address, c)?;
        let observed = self.run(async |client| self.create_cluster(client, ctx, &r, c).await)?;
        Ok(Applied {
            observed: to_json(&observed),
            run: None,
        })
    }

    fn update(
        &self,
        ctx: &Context,
        prior: &ResourceState,
        config: &ResourceConfig,
        _inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        let c = cluster_config(config)?;
        let r = ClusterRef::for_config(&prior.address, c)?;
        let observed = self.run(async |client| self.update_cluster(client, ctx, &r, c).await)?;
        Ok(Applied {
            observed: to_json(&observed),
            run: None,
        })
    }

    fn delete(&self, ctx: &Context, prior: &ResourceState) -> Result<(), ProviderError> {
        let r = match serde_json::from_value::<GkeClusterObserved>(prior.observed.clone()) {
            Ok(o) => ClusterRef {
                project: o.project,
                location: o.location,
                name: o.name,
            },
            Err(_) => ClusterRef::for_config(&prior.address, cluster_config(&prior.config)?)?,
        };
        self.run(async |client| self.delete_cluster(client, ctx, &r, true).await)
    }

    fn recover(
        &self,
        ctx: &Context,
        intent: &Intent,
        _prior: Option<&ResourceState>,
        clean_up: bool,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        let Ok(data) = serde_json::from_value::<GkeIntent>(intent.data.clone()) else {
            // No note: the provider never reached GKE.
            return Ok(None);
        };
        self.run(async |client| self.recover_cluster(client, ctx, &data, clean_up).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::Kind;

    fn addr(name: &str, key: Option<&str>) -> Address {
        Address {
            kind: Kind::Cluster,
            name: name.into(),
            key: key.map(str::to_string),
        }
    }

    #[test]
    fn cluster_name_is_a_dns_label_cut_to_forty_characters() {
        assert_eq!(cluster_name(&addr("serving", None)), "serving");
        assert_eq!(cluster_name(&addr("Serving_A", Some("x"))), "serving-a-x");
        let long = cluster_name(&addr(&"abcdefghij".repeat(6), None));
        assert_eq!(long.len(), 40);
        // A cut that ends on a separator drops it.
        let cut = cluster_name(&addr(&format!("{}_b", "a".repeat(39)), None));
        assert_eq!(cut, "a".repeat(39));
    }

    #[test]
    fn quota_name_is_taken_from_gke_messages() {
        assert_eq!(
            quota_name(
                "Insufficient regional quota to satisfy request: resource \"CPUS\": request requires '64.0' and is short '40.0'"
            )
            .as_deref(),
            Some("CPUS")
        );
        assert_eq!(
            quota_name("Quota 'SSD_TOTAL_GB' exceeded.  Limit: 500.0").as_deref(),
            Some("SSD_TOTAL_GB")
        );
        assert_eq!(quota_name("something else"), None);
    }

    #[test]
    fn durations_are_shown_compactly() {
        assert_eq!(short_duration(Duration::from_secs(5)), "5s");
        assert_eq!(short_duration(Duration::from_secs(130)), "2m10s");
        assert_eq!(short_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    #[allow(deprecated)]
    fn node_count_is_per_zone_of_the_managed_pool() {
        let pool = NodePool::new()
            .set_name(NODE_POOL)
            .set_initial_node_count(3)
            .set_locations(["us-central1-a", "us-central1-b"]);
        let mut c = Cluster::new().set_node_pools([pool]);
        // Provisioning: no current count yet, the pool's initial count stands.
        assert_eq!(live_node_count(&c), 3);
        c.current_node_count = 10;
        assert_eq!(live_node_count(&c), 5);
    }

    fn config() -> ClusterConfig {
        ClusterConfig {
            provider: crate::vocab::resources::ProviderKind::Gke,
            project: Some("p".into()),
            location: Some("l".into()),
            machine_type: Some("e2-highcpu-8".into()),
            node_count: 3,
            disk_size_gb: Some(50),
            spot: true,
            private_nodes: false,
            labels: BTreeMap::from([("team".to_string(), "perf".to_string())]),
            service_account: None,
            network: None,
            subnetwork: None,
        }
    }

    fn cluster_ref() -> ClusterRef {
        ClusterRef {
            project: "p".into(),
            location: "l".into(),
            name: "serving".into(),
        }
    }

    #[test]
    #[allow(deprecated)]
    fn private_nodes_come_with_ip_aliases_and_no_fixed_master_range() {
        let r = cluster_ref();
        let mut c = config();
        let public = cluster_spec(&r, &c, &c.labels);
        assert!(public.private_cluster_config.is_none());
        assert!(public.ip_allocation_policy.is_none());
        let pool = &public.node_pools[0];
        assert_eq!(pool.name, NODE_POOL);
        assert_eq!(pool.initial_node_count, 3);
        let nc = pool.config.as_ref().unwrap();
        assert_eq!(
            (nc.machine_type.as_str(), nc.disk_size_gb, nc.spot),
            ("e2-highcpu-8", 50, true)
        );
        assert_eq!(public.resource_labels["team"], "perf");

        c.private_nodes = true;
        let private = cluster_spec(&r, &c, &c.labels);
        let pcc = private.private_cluster_config.unwrap();
        assert!(pcc.enable_private_nodes);
        // GKE picks the control plane's range: a fixed one would collide with the next
        // private cluster in the network.
        assert_eq!(pcc.master_ipv4_cidr_block, "");
        assert!(private.ip_allocation_policy.unwrap().use_ip_aliases);
    }

    #[test]
    fn node_pools_get_the_gke_default_scopes_and_the_service_account_and_network() {
        let r = cluster_ref();
        let mut c = config();
        let spec = cluster_spec(&r, &c, &c.labels);
        let nc = spec.node_pools[0].config.as_ref().unwrap();
        assert_eq!(
            nc.oauth_scopes,
            GKE_DEFAULT_SCOPES.map(String::from).to_vec()
        );
        assert!(
            nc.oauth_scopes
                .iter()
                .any(|s| s == "https://www.googleapis.com/auth/devstorage.read_only")
        );
        assert_eq!(nc.service_account, "");
        assert_eq!((spec.network.as_str(), spec.subnetwork.as_str()), ("", ""));

        c.service_account = Some("nodes@p.iam.gserviceaccount.com".into());
        c.network = Some("bench-vpc".into());
        c.subnetwork = Some("bench-subnet".into());
        let spec = cluster_spec(&r, &c, &c.labels);
        let nc = spec.node_pools[0].config.as_ref().unwrap();
        assert_eq!(nc.service_account, "nodes@p.iam.gserviceaccount.com");
        assert_eq!(
            (spec.network.as_str(), spec.subnetwork.as_str()),
            ("bench-vpc", "bench-subnet")
        );
    }

    #[test]
    fn every_cluster_is_labelled_managed_by_benchstack_with_the_lineage() {
        let c = config();
        let labels = cluster_labels(&c, Some("0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"));
        assert_eq!(labels["managed-by"], "benchstack");
        assert_eq!(
            labels["benchstack-lineage"],
            "0f1e2d3c-aaaa-bbbb-cccc-0123456789ab"
        );
        assert_eq!(labels["team"], "perf");
        // No lineage (or one that is no label value): only managed-by.
        assert!(!cluster_labels(&c, None).contains_key("benchstack-lineage"));
        assert!(!cluster_labels(&c, Some("Not A Label")).contains_key("benchstack-lineage"));
    }

    #[test]
    fn a_quota_refusal_is_read_into_its_quota_region_and_numbers() {
        let regional = QuotaShortfall::parse(
            "Insufficient regional quota to satisfy request: resource \"CPUS\": request requires '88.0' and is short '64.0'. project has a quota of '24.0' with '24.0' available. View and manage quotas at https://console.cloud.google.com/iam-admin/quotas?usage=USED&project=p.",
            "us-central1-a",
        );
        assert_eq!(regional.quota, "CPUS");
        assert_eq!(regional.region.as_deref(), Some("us-central1"));
        assert_eq!(
            (regional.requires, regional.short, regional.limit),
            (Some(88.0), Some(64.0), Some(24.0))
        );
        assert_eq!(
            regional.quota_id().as_deref(),
            Some("CPUS-per-project-region")
        );
        let advice = regional.advice("p");
        assert!(
            advice.contains("gcloud quotas preferences create --project=p --service=compute.googleapis.com --quota-id=CPUS-per-project-region --dimensions=region=us-central1 --preferred-value=88"),
            "{advice}"
        );
        let global = QuotaShortfall::parse(
            "Insufficient project quota to satisfy request: resource \"CPUS_ALL_REGIONS\": request requires '16.0' and is short '4.0'. project has a quota of '12.0' with '12.0' available.",
            "europe-west1-b",
        );
        assert_eq!(global.region, None);
        assert_eq!(
            global.quota_id().as_deref(),
            Some("CPUS-ALL-REGIONS-per-project")
        );
        assert!(global.advice("p").contains("--preferred-value=16`"));
        assert_eq!(region_of("us-central1"), "us-central1");
        assert_eq!(region_of("europe-west1-b"), "europe-west1");
    }
}
