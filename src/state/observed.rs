//! What each provider records about a resource it manages (its `observed` state), one type per
//! provider and resource kind. The providers build and read these types; the state stores
//! them tagged (`{"local_serving": {…}}`, see docs/state.md) and checks on every write that
//! what a provider recorded is what its type says.
//!
//! Inside the library a resource's `observed` travels as JSON (`ResourceState::observed`);
//! `Observed::from_json` is the one place it is given its type, and the accessors below are
//! how anything other than the provider that wrote it reads it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::records::EnvironmentRecord;
use crate::vocab::resources::Kind;

/// A local cluster: the machine itself.
pub type LocalClusterObserved = EnvironmentRecord;

/// A model on this machine: the versions found under its base path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalModelObserved {
    #[serde(default)]
    pub versions: Vec<u64>,
}

/// One local serving process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replica {
    pub pid: u32,
    /// Clock ticks since boot (/proc/PID/stat), so a reused pid is noticed.
    pub start_time: Option<u64>,
    pub grpc_port: u16,
    pub rest_port: u16,
    pub log: PathBuf,
}

/// A local serving resource: its processes and endpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalServingObserved {
    /// The server binary (tensorflow_model_server or this benchstack).
    pub binary: String,
    pub directory: PathBuf,
    pub models: Vec<String>,
    pub replicas: Vec<Replica>,
    pub rest_endpoint: String,
    pub grpc_endpoint: String,
    pub rest_endpoints: Vec<String>,
    pub grpc_endpoints: Vec<String>,
    pub started_at: u64,
}

/// A load test run on this machine (the run itself is stored apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalLoadtestObserved {
    pub targets: Vec<String>,
    /// `rest` or `grpc`.
    pub protocol: String,
    pub workers: u32,
}

/// What the gke provider records for a cluster. The kubernetes provider reads `endpoint` and
/// `ca_certificate` from it to reach the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GkeClusterObserved {
    pub project: String,
    pub location: String,
    /// The GKE cluster name.
    pub name: String,
    /// The control plane: a bare IP (real GKE), or a URL with a scheme (an emulator),
    /// which is used as is.
    pub endpoint: String,
    /// `masterAuth.clusterCaCertificate`: base64 of a PEM; empty when the API gave none.
    #[serde(default)]
    pub ca_certificate: String,
    /// RUNNING, RECONCILING, …
    pub status: String,
    pub node_pool: String,
    pub node_count: u32,
    pub machine_type: String,
    /// The nodes' CPU platform, where the API reports it.
    #[serde(default)]
    pub cpu_platform: Option<String>,
}

/// How to reach a cluster's Kubernetes API: copied from the gke provider's observed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterConnection {
    /// A bare IP or host (real GKE: `https://` is implied), or a URL with a scheme (an
    /// emulator), used as is.
    pub endpoint: String,
    /// Base64 of the cluster CA's PEM; empty when there is none.
    #[serde(default)]
    pub ca_certificate: String,
}

/// What the kubernetes provider records for a serving resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubernetesServingObserved {
    pub cluster: ClusterConnection,
    pub namespace: String,
    /// The Deployment, Service and ConfigMap name.
    pub name: String,
    /// The Deployment's `metadata.generation` the rollout was waited for.
    pub generation: i64,
    pub replicas: u32,
    /// The Service's LoadBalancer IP or host name.
    pub address: String,
    pub rest_endpoint: String,
    pub grpc_endpoint: String,
    /// One entry each: the Service address (the load balancer spreads over the replicas).
    pub rest_endpoints: Vec<String>,
    pub grpc_endpoints: Vec<String>,
    /// The image the Deployment runs (`REPOSITORY/NAME@sha256:…` for an `image` block):
    /// the plan compares it with the image's digest to roll a rebuilt image out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// What the cloudbuild provider records for an `image` block: the build that pushed it and
/// the digest Artifact Registry gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudBuildImageObserved {
    /// The GCP project the build ran in.
    pub project: String,
    /// The build's region (`locations/L` of the repository).
    pub location: String,
    /// The build's id, and where its log is shown.
    pub build_id: String,
    #[serde(default)]
    pub log_url: String,
    /// `gs://BUCKET/OBJECT`: the uploaded context.
    pub source: String,
    /// `sha256:…`, from the build's `results.images[].digest`.
    pub digest: String,
    /// `REPOSITORY/NAME@sha256:…`: what serving and load tests deploy.
    pub reference: String,
    /// The context's content hash this digest was built from.
    pub content_hash: String,
}

/// What the kubernetes provider records for a load test (the run itself is stored apart).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KubernetesLoadtestObserved {
    pub cluster: ClusterConnection,
    pub namespace: String,
    /// The Job of the last run (deleted once its reports were read).
    pub job: String,
    pub workers: u32,
    pub targets: Vec<String>,
    /// `rest` or `grpc`.
    pub protocol: String,
}

/// A resource's observed state, by provider and kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Observed {
    LocalCluster(LocalClusterObserved),
    LocalModel(LocalModelObserved),
    LocalServing(LocalServingObserved),
    LocalLoadtest(LocalLoadtestObserved),
    GkeCluster(GkeClusterObserved),
    KubernetesServing(KubernetesServingObserved),
    KubernetesLoadtest(KubernetesLoadtestObserved),
    CloudbuildImage(CloudBuildImageObserved),
}

/// What every serving provider's observed state carries (`local_serving` and
/// `kubernetes_serving` both): where it listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServingEndpoints {
    /// REST base URLs (`http://HOST:PORT`).
    pub rest_endpoints: Vec<String>,
    /// gRPC `HOST:PORT` pairs.
    pub grpc_endpoints: Vec<String>,
}

/// The `REPOSITORY/NAME@sha256:…` an image's observed JSON records, if it is one.
pub fn image_reference(v: &serde_json::Value) -> Option<String> {
    serde_json::from_value::<CloudBuildImageObserved>(v.clone())
        .ok()
        .map(|o| o.reference)
}

/// The image a Kubernetes serving resource's observed JSON says its Deployment runs.
pub fn deployed_image(v: &serde_json::Value) -> Option<String> {
    v.get("image").and_then(|i| i.as_str()).map(str::to_string)
}

/// A serving resource's endpoints from its observed JSON, whichever provider serves it.
pub fn serving_endpoints(v: &serde_json::Value) -> Result<(Vec<String>, Vec<String>), String> {
    let e: ServingEndpoints = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    Ok((e.rest_endpoints, e.grpc_endpoints))
}

impl Observed {
    /// Types what `provider` recorded for a resource of `kind`.
    pub fn from_json(provider: &str, kind: Kind, v: &serde_json::Value) -> Result<Self, String> {
        fn typed<T: serde::de::DeserializeOwned>(
            v: &serde_json::Value,
            what: &str,
        ) -> Result<T, String> {
            serde_json::from_value(v.clone())
                .map_err(|e| format!("the observed state is not a {what}: {e}"))
        }
        Ok(match (provider, kind) {
            ("local", Kind::Cluster) => Observed::LocalCluster(typed(v, "local cluster")?),
            ("local", Kind::Model) => Observed::LocalModel(typed(v, "local model")?),
            ("local", Kind::Serving) => Observed::LocalServing(typed(v, "local serving")?),
            ("local", Kind::Loadtest) => Observed::LocalLoadtest(typed(v, "local load test")?),
            ("gke", Kind::Cluster) => Observed::GkeCluster(typed(v, "GKE cluster")?),
            ("kubernetes", Kind::Serving) => {
                Observed::KubernetesServing(typed(v, "Kubernetes serving")?)
            }
            ("kubernetes", Kind::Loadtest) => {
                Observed::KubernetesLoadtest(typed(v, "Kubernetes load test")?)
            }
            ("cloudbuild", Kind::Image) => {
                Observed::CloudbuildImage(typed(v, "Cloud Build image")?)
            }
            (p, k) => {
                return Err(format!(
                    "no provider `{p}` manages a {} in this benchstack",
                    k.as_str()
                ));
            }
        })
    }

    /// The JSON the provider works with.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Observed::LocalCluster(o) => serde_json::to_value(o),
            Observed::LocalModel(o) => serde_json::to_value(o),
            Observed::LocalServing(o) => serde_json::to_value(o),
            Observed::LocalLoadtest(o) => serde_json::to_value(o),
            Observed::GkeCluster(o) => serde_json::to_value(o),
            Observed::KubernetesServing(o) => serde_json::to_value(o),
            Observed::KubernetesLoadtest(o) => serde_json::to_value(o),
            Observed::CloudbuildImage(o) => serde_json::to_value(o),
        };
        // Plain structs of strings and numbers: serializing them cannot fail.
        v.unwrap_or_default()
    }

    /// A serving resource's endpoints: (REST base URLs, gRPC host:port pairs).
    pub fn serving_endpoints(&self) -> Option<(&[String], &[String])> {
        match self {
            Observed::LocalServing(o) => Some((&o.rest_endpoints, &o.grpc_endpoints)),
            Observed::KubernetesServing(o) => Some((&o.rest_endpoints, &o.grpc_endpoints)),
            _ => None,
        }
    }

    /// An attribute a stack output may name (`serving.tf.rest_endpoint`): a top-level field.
    pub fn attribute(&self, name: &str) -> Option<serde_json::Value> {
        match self.to_json() {
            serde_json::Value::Object(mut m) => m.remove(name),
            _ => None,
        }
    }

    /// The pids of a local serving resource's processes.
    pub fn local_pids(&self) -> Vec<u32> {
        match self {
            Observed::LocalServing(o) => o.replicas.iter().map(|r| r.pid).collect(),
            _ => Vec::new(),
        }
    }

    pub fn gke_cluster(&self) -> Option<&GkeClusterObserved> {
        match self {
            Observed::GkeCluster(o) => Some(o),
            _ => None,
        }
    }
}
