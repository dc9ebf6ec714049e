//! The gke provider: a `cluster` with `provider = "gke"` is a GKE cluster with one node pool
//! (`benchstack`), managed through google-cloud-container-v1 over REST. Every change is a
//! GKE long-running operation that is polled (backing off) until DONE, under a timeout, with
//! progress reported and cancellation honoured between polls.
//!
//! Before each remote call the provider notes project, location, cluster name and step in the
//! intent, and the operation name once GKE returns it, so an interrupted apply can be
//! continued by `recover`: it waits for a still-running operation and adopts the cluster.
//!
//! `spec` builds the requests and reads clusters, `api` makes the calls and polls the
//! operations, `error` says what went wrong, `preflight` asks Service Usage, Compute Engine
//! and the registries what would make an apply fail before anything is created; this file is the lifecycle (create, update,
//! refresh, delete, recover), finding benchstack's clusters without a state, and
//! `impl Provider`.

mod api;
mod error;
pub mod preflight;
pub mod services;
mod spec;

use self::error::*;
pub use self::error::{GkeError, QuotaShortfall, region_of};
use self::spec::*;
pub use self::spec::{ClusterRef, cluster_labels, cluster_name};

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use google_cloud_container_v1::client::ClusterManager;
use google_cloud_container_v1::model::{
    Cluster, IPAllocationPolicy, NodeConfig, NodePool, Operation, PrivateClusterConfig, cluster,
    operation,
};
use serde::{Deserialize, Serialize};

use super::gcp::{self, GkeClusterObserved};
use super::retry::{self, Call, RetryPolicy};
use super::runtime::ClientRuntime;
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

/// Polling and retry settings; `None` fields come from the environment.
#[derive(Debug, Clone, Default)]
struct Settings {
    poll_interval: Option<Duration>,
    timeout: Option<Duration>,
    retry_budget: Option<Duration>,
    busy_wait: Option<Duration>,
}

pub struct GkeProvider {
    /// Where GKE is and how to authenticate (given at construction).
    apis: gcp::Apis,
    settings: Settings,
    /// Built on first use: the runtime the async client runs on, and the client.
    runtime: ClientRuntime,
    client: Mutex<Option<ClusterManager>>,
}

impl GkeProvider {
    /// GKE where `apis` says it is (`apis.gke`, else Google's endpoint), with its credentials.
    pub fn new(apis: &gcp::Apis) -> Self {
        GkeProvider {
            apis: apis.clone(),
            settings: Settings::default(),
            runtime: ClientRuntime::new("benchstack-gke", "GKE client"),
            client: Mutex::new(None),
        }
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
}

impl GkeProvider {
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
                use crate::manifest::prices;
                let price = prices::cluster_node_price(
                    &machine,
                    &location,
                    c.spot,
                    &crate::manifest::capacity::MachineShapes::default(),
                )
                .map(|p| {
                    format!(
                        ", about ${:.2}/h (the nodes at {} on-demand list prices of {}, and the ${:.2}/h cluster management fee)",
                        p.per_hour * f64::from(nodes) + prices::GKE_MANAGEMENT_FEE,
                        prices::region_of(&location),
                        prices::PRICES_AS_OF,
                        prices::GKE_MANAGEMENT_FEE,
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
    use super::api::short_duration;
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
            enable_apis: false,
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

    #[test]
    fn billing_lines_name_running_clusters_with_their_price_and_creates_under_way() {
        let a = addr("serving", None);
        let observed = serde_json::json!({
            "project": "p", "location": "us-central1-a", "name": "serving",
            "endpoint": "10.0.0.1", "ca_certificate": "", "status": "RUNNING",
            "node_pool": NODE_POOL, "node_count": 3, "machine_type": "e2-highcpu-8",
        });
        let mut c = config();
        c.spot = false;
        let running = ResourceState {
            address: a.clone(),
            provider: "gke".into(),
            config: ResourceConfig::Cluster(c.clone()),
            depends_on: vec![],
            observed,
            rendered: BTreeMap::new(),
            upstream: BTreeMap::new(),
            fingerprint: String::new(),
            applied_at: 0,
            last_run: None,
        };
        let coming = Intent {
            address: addr("loadgen", None),
            operation: "create".into(),
            provider: "gke".into(),
            config: Some(ResourceConfig::Cluster(c)),
            depends_on: vec![],
            rendered: BTreeMap::new(),
            upstream: BTreeMap::new(),
            data: serde_json::json!({
                "project": "p", "location": "us-central1-a", "name": "loadgen",
                "step": "create", "operation": "operation-1",
            }),
            pid: 0,
            started: 0,
        };
        let lines = billing_lines(&[running], &[coming]);
        assert_eq!(
            lines,
            [
                "cluster.serving: GKE cluster serving (project p, location us-central1-a), 3 × e2-highcpu-8 nodes, about $0.69/h (the nodes at us-central1 on-demand list prices of 2026-07-30, and the $0.10/h cluster management fee)",
                "cluster.loadgen: GKE create of cluster loadgen (project p, location us-central1-a) was under way and goes on in GKE",
            ]
        );
        // A local resource bills nothing.
        assert!(billing_lines(&[], &[]).is_empty());
    }
}
