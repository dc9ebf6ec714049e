//! What benchstack asks GKE for and how it reads the answer: cluster names and resource
//! paths, the create request (node pool, scopes, labels, network, private nodes) and the
//! observed state made of a live cluster.

use super::*;

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

    pub(super) fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.location)
    }

    pub(super) fn path(&self) -> String {
        format!("{}/clusters/{}", self.parent(), self.name)
    }

    pub(super) fn node_pool_path(&self) -> String {
        format!("{}/nodePools/{NODE_POOL}", self.path())
    }

    /// `get_operation` wants the full resource name; GKE returns a bare operation id.
    pub(super) fn operation_path(&self, operation: &str) -> String {
        if operation.contains('/') {
            operation.to_string()
        } else {
            format!("{}/operations/{operation}", self.parent())
        }
    }

    pub(super) fn api_error(
        &self,
        action: &'static str,
        e: &google_cloud_gax::error::Error,
    ) -> GkeError {
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

/// The GKE cluster name of an address: its DNS label, cut to GKE's 40 characters.
pub fn cluster_name(address: &Address) -> String {
    let full = crate::manifest::k8s::object_name(address);
    let cut: String = full.chars().take(MAX_CLUSTER_NAME).collect();
    cut.trim_end_matches('-').to_string()
}

pub(super) fn operation_status(op: &Operation) -> String {
    op.status.name().unwrap_or("UNKNOWN").to_string()
}

pub(super) fn cluster_status(c: &Cluster) -> String {
    c.status.name().unwrap_or("UNKNOWN").to_string()
}

/// The node pool benchstack manages, or the first one.
pub(super) fn managed_pool(c: &Cluster) -> Option<&NodePool> {
    c.node_pools
        .iter()
        .find(|p| p.name == NODE_POOL)
        .or_else(|| c.node_pools.first())
}

/// Nodes per zone of the managed pool. `currentNodeCount` is the cluster's total over all its
/// pools and zones; `initialNodeCount` stays at the creation value after a resize.
/// (`currentNodeCount` is deprecated in the API but still the one live count GKE reports.)
#[allow(deprecated)]
pub(super) fn live_node_count(c: &Cluster) -> u32 {
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
pub(super) fn status_message(c: &Cluster) -> String {
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

pub(super) fn observed_of(r: &ClusterRef, c: &Cluster) -> GkeClusterObserved {
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

pub(super) fn to_json(o: &GkeClusterObserved) -> serde_json::Value {
    serde_json::to_value(o).unwrap_or_default()
}

pub(super) fn cluster_config(config: &ResourceConfig) -> Result<&ClusterConfig, ProviderError> {
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
pub(super) fn is_label_value(s: &str) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// The lineage of the state in `state_dir`, from its published snapshot (read without the
/// database, which the running command holds). None when there is none to read.
pub(super) fn state_lineage(state_dir: &std::path::Path) -> Option<String> {
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
pub(super) fn cluster_spec(
    r: &ClusterRef,
    c: &ClusterConfig,
    labels: &BTreeMap<String, String>,
) -> Cluster {
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
