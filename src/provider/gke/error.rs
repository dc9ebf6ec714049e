//! What can go wrong talking to GKE, and how a refusal is read: quota shortfalls (GKE
//! sends them as 403 PERMISSION_DENIED) named with their region and how to raise them.

use super::*;

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
    pub(super) fn describe(&self) -> String {
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

/// `us-central1-a` → `us-central1`; a region is its own region (the one rule the prices use
/// too).
pub use crate::manifest::prices::region_of;

/// A quota refusal, whatever its status: GKE sends 403 PERMISSION_DENIED for Compute Engine
/// quotas (see [`QuotaShortfall`]); other Google APIs send 429 RESOURCE_EXHAUSTED.
pub(super) fn is_quota_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("insufficient regional quota")
        || m.contains("insufficient project quota")
        || m.contains("insufficient quota")
        || (m.contains("quota") && m.contains("exceeded"))
}

/// The quota a RESOURCE_EXHAUSTED message names (`… resource "CPUS": …` or `Quota 'CPUS' …`).
pub(super) fn quota_name(message: &str) -> Option<String> {
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

pub(super) fn with_full_stop(message: &str) -> String {
    let m = message.trim();
    if m.ends_with('.') {
        m.to_string()
    } else {
        format!("{m}.")
    }
}
