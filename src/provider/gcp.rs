//! What the `gke` and `kubernetes` providers share: where the Google APIs are (or the
//! emulators that stand in for them), credentials, polling cadence, and what a GKE cluster
//! records as observed (the kubernetes provider builds its client from it).

use std::time::Duration;

use google_cloud_gax::error::rpc::Code;

use super::{ErrorKind, ProviderError};

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
    Ok(super::env_duration(POLL_INTERVAL_ENV, "500ms or 2s")?.unwrap_or(Duration::from_secs(2)))
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
            ProviderError::new(ErrorKind::Permission, "", format!(
                "no Google credentials: {e} (run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)"
            ))
        })?;
    let token = credentials.access_token().await.map_err(|e| {
        let kind = if e.is_transient() {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Permission
        };
        ProviderError::new(kind, "getting a Google access token", e.to_string())
    })?;
    Ok(Some(token.token))
}

/// The kind of a Google API error, its message as the API gave it, and whether the request
/// never left this machine. The service's status code decides where there is one; then the
/// HTTP status (an error from a proxy or load balancer has no status body); then how the
/// call failed locally (connect, timeout, I/O).
pub fn classify(e: &google_cloud_gax::error::Error) -> (ErrorKind, String, bool) {
    if let Some(s) = e.status() {
        let kind = match s.code {
            Code::NotFound => ErrorKind::NotFound,
            Code::Unavailable | Code::Internal | Code::DeadlineExceeded => ErrorKind::Unavailable,
            Code::ResourceExhausted if is_rate_limit(&s.message) => ErrorKind::Throttled,
            Code::ResourceExhausted => ErrorKind::Quota,
            Code::PermissionDenied | Code::Unauthenticated => ErrorKind::Permission,
            Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => ErrorKind::Conflict,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::Invalid,
            _ => match e.http_status_code() {
                Some(code) => http_kind(code),
                None => ErrorKind::Other,
            },
        };
        return (kind, s.message.clone(), false);
    }
    if let Some(code) = e.http_status_code() {
        return (http_kind(code), e.to_string(), false);
    }
    if e.is_transient_and_before_rpc() || e.is_connect() {
        return (ErrorKind::Unavailable, e.to_string(), true);
    }
    if e.is_timeout() || e.is_io() || e.is_transport() {
        return (ErrorKind::Unavailable, e.to_string(), false);
    }
    if e.is_authentication() {
        return (ErrorKind::Permission, e.to_string(), true);
    }
    (ErrorKind::Other, e.to_string(), false)
}

/// The kind an HTTP status alone implies.
pub fn http_kind(code: u16) -> ErrorKind {
    match code {
        404 | 410 => ErrorKind::NotFound,
        429 => ErrorKind::Throttled,
        500 | 502 | 503 | 504 => ErrorKind::Unavailable,
        401 | 403 => ErrorKind::Permission,
        409 | 412 => ErrorKind::Conflict,
        400 | 422 => ErrorKind::Invalid,
        _ => ErrorKind::Other,
    }
}

/// RESOURCE_EXHAUSTED is both a resource quota (CPUs: retrying will not help) and a request
/// rate limit (`… per minute`: it will); Google says which only in the message.
fn is_rate_limit(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "per minute",
        "per second",
        "per 100 seconds",
        "rate limit",
        "too many requests",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// What the gke provider records for a cluster (its `observed` state).
pub use crate::state::observed::GkeClusterObserved;
