//! What the `gke` and `kubernetes` providers share: where the Google APIs are (or the
//! emulators that stand in for them), credentials, polling cadence, and what a GKE cluster
//! records as observed (the kubernetes provider builds its client from it).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ProviderError;

/// Points the GKE client at another base URL (an emulator) and switches to anonymous
/// credentials, so nothing reaches Google or the metadata server.
pub const GKE_ENDPOINT_ENV: &str = "BENCHSTACK_GKE_ENDPOINT";
/// The first interval between polls of a long-running operation, rollout or Job (humantime,
/// e.g. `50ms`); it backs off from there. Default 2 s.
pub const POLL_INTERVAL_ENV: &str = "BENCHSTACK_POLL_INTERVAL";

/// The emulator base URL when one is configured.
pub fn emulator_endpoint() -> Option<String> {
    std::env::var(GKE_ENDPOINT_ENV)
        .ok()
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
}

/// The first poll interval (see [`POLL_INTERVAL_ENV`]).
pub fn poll_interval() -> Result<Duration, ProviderError> {
    match std::env::var(POLL_INTERVAL_ENV) {
        Ok(s) => humantime::parse_duration(s.trim()).map_err(|e| {
            ProviderError::Failed(format!(
                "{POLL_INTERVAL_ENV}={s:?}: {e}; expected a duration such as 500ms or 2s"
            ))
        }),
        Err(_) => Ok(Duration::from_secs(2)),
    }
}

/// Polls back off from `first` by half again each time, up to `cap`.
pub fn backoff(current: Duration, cap: Duration) -> Duration {
    (current + current / 2).min(cap)
}

const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A Google access token for the Kubernetes API of a GKE cluster, from Application Default
/// Credentials; None against emulators (anonymous).
pub async fn access_token() -> Result<Option<String>, ProviderError> {
    if emulator_endpoint().is_some() {
        return Ok(None);
    }
    let credentials = google_cloud_auth::credentials::Builder::default()
        .with_scopes([CLOUD_PLATFORM_SCOPE])
        .build_access_token_credentials()
        .map_err(|e| {
            ProviderError::Failed(format!(
                "no Google credentials: {e} (run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)"
            ))
        })?;
    let token = credentials
        .access_token()
        .await
        .map_err(|e| ProviderError::Failed(format!("cannot get a Google access token: {e}")))?;
    Ok(Some(token.token))
}

/// What the gke provider records for a cluster (its `observed` state). The kubernetes
/// provider reads `endpoint` and `ca_certificate` from it to reach the cluster.
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
