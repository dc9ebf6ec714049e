//! What the `gke`, `kubernetes` and `cloudbuild` providers share: where the Google APIs are
//! (or the emulators that stand in for them) and how to authenticate ([`Apis`], read from the
//! environment once, by [`Apis::from_env`], and handed to each client at construction),
//! credentials, polling cadence, and what a GKE cluster records as observed (the kubernetes
//! provider builds its client from it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use google_cloud_gax::error::rpc::Code;

use super::{ErrorKind, ProviderError};

/// Points the GKE client at another base URL (an emulator) and switches to anonymous
/// credentials, so nothing reaches Google or the metadata server.
pub const GKE_ENDPOINT_ENV: &str = "BENCHSTACK_GKE_ENDPOINT";
/// Service Usage at another base URL (an emulator).
pub const SERVICEUSAGE_ENDPOINT_ENV: &str = "BENCHSTACK_SERVICEUSAGE_ENDPOINT";
/// Compute Engine at another base URL (an emulator).
pub const COMPUTE_ENDPOINT_ENV: &str = "BENCHSTACK_COMPUTE_ENDPOINT";
/// Registries at other base URLs: `URL` (every registry) or `HOST=URL,HOST=URL`.
pub const REGISTRY_ENDPOINT_ENV: &str = "BENCHSTACK_REGISTRY_ENDPOINT";
/// Cloud Build and Artifact Registry at other base URLs (emulators).
pub const CLOUDBUILD_ENDPOINT_ENV: &str = "BENCHSTACK_CLOUDBUILD_ENDPOINT";
pub const ARTIFACTREGISTRY_ENDPOINT_ENV: &str = "BENCHSTACK_ARTIFACTREGISTRY_ENDPOINT";
/// The Cloud Storage base URL; `STORAGE_EMULATOR_HOST` (what gcloud and the Go, Python and
/// Java clients read; google-cloud-storage does not) is honoured too.
pub const STORAGE_ENDPOINT_ENV: &str = "BENCHSTACK_STORAGE_ENDPOINT";
pub const STORAGE_EMULATOR_HOST_ENV: &str = "STORAGE_EMULATOR_HOST";
/// The first interval between polls of a long-running operation, rollout or Job (humantime,
/// e.g. `50ms`); it backs off from there. Default 2 s.
pub const POLL_INTERVAL_ENV: &str = "BENCHSTACK_POLL_INTERVAL";

/// Where Google's APIs are and how benchstack authenticates to them. Decided once, by the
/// composition root ([`Apis::from_env`], called by the commands, which pass it to
/// `Providers::new`, `ops::preflight` and `ops::enable_apis`), and passed to every client at
/// construction: no provider reads an endpoint from the environment or guesses from a URL's
/// text that it talks to an emulator.
#[derive(Debug, Clone)]
pub struct Apis {
    /// Base URLs; None: Google's own endpoint for the API.
    pub gke: Option<String>,
    pub service_usage: Option<String>,
    pub compute: Option<String>,
    /// Registry host → base URL; `"*"` for every host. A host without one is
    /// `https://HOST`, or, with [`Credentials::Anonymous`], not asked.
    pub registries: BTreeMap<String, String>,
    pub cloud_build: Option<String>,
    pub artifact_registry: Option<String>,
    pub storage: Option<String>,
    pub credentials: Credentials,
}

/// How the clients authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// Google's: Application Default Credentials (or gke-gcloud-auth-plugin for a cluster's
    /// Kubernetes API) as `AuthEnv` finds them.
    Google(AuthEnv),
    /// Emulators: every client is anonymous, nothing looks for credentials or reaches the
    /// metadata server, and an API without an endpoint of its own is not asked. A
    /// service-account key named explicitly (`GOOGLE_APPLICATION_CREDENTIALS`) is still
    /// exchanged at its own `token_uri` for the bearer token a Google registry is asked
    /// with (a test's token emulator).
    Anonymous { registry_key: Option<PathBuf> },
}

/// How a cluster's Kubernetes API is reached. The recorded endpoint is always what GKE
/// reports (`host` or `host:port`, no scheme): the scheme comes from here.
#[derive(Debug, Clone)]
pub enum KubeAccess {
    /// `https://ENDPOINT`, the server verified against the cluster's recorded CA
    /// (`masterAuth.clusterCaCertificate`), authenticated as kubectl is
    /// ([`cluster_auth_info_with`] in `auth`).
    Https { auth: AuthEnv },
    /// `http://ENDPOINT` without credentials: an emulated control plane on loopback.
    PlainHttp,
}

impl KubeAccess {
    /// The API server's URL for the endpoint a cluster records.
    pub fn url(&self, endpoint: &str) -> String {
        match self {
            KubeAccess::Https { .. } => format!("https://{endpoint}"),
            KubeAccess::PlainHttp => format!("http://{endpoint}"),
        }
    }
}

/// A base URL from the environment variable `name`, trimmed of a trailing `/`.
fn env_url(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|s| s.trim().trim_end_matches('/').to_string())
        .filter(|s| !s.is_empty())
}

/// `STORAGE_EMULATOR_HOST` as a base URL: Google's clients accept both `host:port` and a URL
/// there, and a bare host is plain HTTP.
pub fn storage_emulator_url(host: &str) -> String {
    let host = host.trim().trim_end_matches('/');
    if host.starts_with("http://") || host.starts_with("https://") {
        host.to_string()
    } else {
        format!("http://{host}")
    }
}

impl Apis {
    /// Google's endpoints with the credentials `auth` finds.
    pub fn google(auth: AuthEnv) -> Apis {
        Apis {
            gke: None,
            service_usage: None,
            compute: None,
            registries: BTreeMap::new(),
            cloud_build: None,
            artifact_registry: None,
            storage: None,
            credentials: Credentials::Google(auth),
        }
    }

    /// Emulators only, anonymously; each API at the URL its field is then given (tests).
    pub fn emulated() -> Apis {
        Apis {
            credentials: Credentials::Anonymous { registry_key: None },
            ..Apis::google(AuthEnv::default())
        }
    }

    /// The one place the environment says where the APIs are: the `BENCHSTACK_*_ENDPOINT`
    /// variables and `STORAGE_EMULATOR_HOST`. Any of them set means emulators: every client
    /// is anonymous (nothing may look for credentials off loopback); none set means Google's
    /// endpoints with [`AuthEnv::from_process`].
    pub fn from_env() -> Apis {
        let mut registries = BTreeMap::new();
        if let Some(v) = env_url(REGISTRY_ENDPOINT_ENV) {
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                match part.split_once('=') {
                    Some((host, url)) => registries.insert(
                        host.trim().to_string(),
                        url.trim().trim_end_matches('/').to_string(),
                    ),
                    None => registries.insert("*".into(), part.trim_end_matches('/').to_string()),
                };
            }
        }
        let mut apis = Apis {
            gke: env_url(GKE_ENDPOINT_ENV),
            service_usage: env_url(SERVICEUSAGE_ENDPOINT_ENV),
            compute: env_url(COMPUTE_ENDPOINT_ENV),
            registries,
            cloud_build: env_url(CLOUDBUILD_ENDPOINT_ENV),
            artifact_registry: env_url(ARTIFACTREGISTRY_ENDPOINT_ENV),
            storage: env_url(STORAGE_ENDPOINT_ENV)
                .or_else(|| env_url(STORAGE_EMULATOR_HOST_ENV).map(|h| storage_emulator_url(&h))),
            credentials: Credentials::Google(AuthEnv::default()),
        };
        apis.credentials = if apis.any_endpoint() {
            Credentials::Anonymous {
                registry_key: std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from),
            }
        } else {
            Credentials::Google(AuthEnv::from_process())
        };
        apis
    }

    fn any_endpoint(&self) -> bool {
        [
            &self.gke,
            &self.service_usage,
            &self.compute,
            &self.cloud_build,
            &self.artifact_registry,
            &self.storage,
        ]
        .iter()
        .any(|e| e.is_some())
            || !self.registries.is_empty()
    }

    pub fn anonymous(&self) -> bool {
        matches!(self.credentials, Credentials::Anonymous { .. })
    }

    /// How a cluster's Kubernetes API is reached: over TLS with Google's credentials, or, when
    /// every API is emulated, over plain HTTP without any.
    pub fn kube_access(&self) -> KubeAccess {
        match &self.credentials {
            Credentials::Google(auth) => KubeAccess::Https { auth: auth.clone() },
            Credentials::Anonymous { .. } => KubeAccess::PlainHttp,
        }
    }

    /// A Google access token with [`CLUSTER_SCOPES`]; None with anonymous credentials
    /// (nothing is asked).
    pub async fn access_token(&self) -> Result<Option<String>, ProviderError> {
        match &self.credentials {
            Credentials::Google(auth) => access_token_with(auth).await.map(Some),
            Credentials::Anonymous { .. } => Ok(None),
        }
    }

    /// The credentials a Google registry's bearer token comes from: Google's, or with
    /// emulators only a key named explicitly; None: no token is asked for.
    pub fn registry_auth(&self) -> Option<AuthEnv> {
        match &self.credentials {
            Credentials::Google(auth) => Some(auth.clone()),
            Credentials::Anonymous { registry_key } => registry_key.as_ref().map(|k| AuthEnv {
                path: None,
                credentials_file: Some(k.clone()),
            }),
        }
    }

    /// Where a state on GCS is reached: the Cloud Storage emulator, anonymously, or Google.
    pub fn state_storage(&self) -> crate::state::gcs::Endpoint {
        match &self.storage {
            Some(url) => crate::state::gcs::Endpoint::Emulator(url.clone()),
            None => crate::state::gcs::Endpoint::Google,
        }
    }

    /// The registry base URL for `host`, when one is configured.
    pub fn registry(&self, host: &str) -> Option<String> {
        self.registries
            .get(host)
            .or_else(|| self.registries.get("*"))
            .cloned()
    }
}

/// Anonymous credentials for a client pointed at an emulator.
pub fn anonymous_credentials() -> google_cloud_auth::credentials::Credentials {
    google_cloud_auth::credentials::anonymous::Builder::new().build()
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
const USERINFO_EMAIL_SCOPE: &str = "https://www.googleapis.com/auth/userinfo.email";
/// The scopes of a token for a cluster's Kubernetes API: what gke-gcloud-auth-plugin (and
/// client-go's old gcp auth provider) ask for. Without `userinfo.email` a service account
/// authenticates as its numeric id, and RBAC bindings by e-mail do not match
/// (imjasonh/gke-auth#28, google-github-actions/get-gke-credentials#15).
pub const CLUSTER_SCOPES: [&str; 2] = [CLOUD_PLATFORM_SCOPE, USERINFO_EMAIL_SCOPE];
/// kubectl's credential plugin for GKE (`gcloud components install gke-gcloud-auth-plugin`).
pub const AUTH_PLUGIN: &str = "gke-gcloud-auth-plugin";
/// The OAuth 2.0 JWT-bearer grant (RFC 7523) a service-account key is exchanged with.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A cached token is used until this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);

/// Where credentials come from: what the process environment says, captured once (tests give
/// their own).
#[derive(Debug, Clone, Default)]
pub struct AuthEnv {
    /// `PATH`, searched for [`AUTH_PLUGIN`].
    pub path: Option<std::ffi::OsString>,
    /// The Application Default Credentials file: `GOOGLE_APPLICATION_CREDENTIALS`, else
    /// gcloud's well-known `application_default_credentials.json` when it exists; None: the
    /// metadata server (a GCE VM, Cloud Shell, GKE).
    pub credentials_file: Option<PathBuf>,
}

impl AuthEnv {
    pub fn from_process() -> AuthEnv {
        let explicit = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        // gcloud's configuration directory: CLOUDSDK_CONFIG, else ~/.config/gcloud.
        let well_known = std::env::var_os("CLOUDSDK_CONFIG")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/gcloud")))
            .map(|d| d.join("application_default_credentials.json"))
            .filter(|p| p.is_file());
        AuthEnv {
            path: std::env::var_os("PATH"),
            credentials_file: explicit.or(well_known),
        }
    }
}

/// The credential plugin on `path`, if there is an executable one.
pub fn find_plugin(path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .map(|dir| dir.join(AUTH_PLUGIN))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// How to authenticate to the Kubernetes API of the cluster at `server` (its URL) with CA
/// `ca_base64_pem` (`masterAuth.clusterCaCertificate`), in `env`: exactly kubectl's authentication when
/// gke-gcloud-auth-plugin is on the PATH (kube runs it as an exec credential plugin and runs
/// it again when its token expires); otherwise an OAuth access token from Application
/// Default Credentials with [`CLUSTER_SCOPES`].
pub async fn cluster_auth_info_with(
    env: &AuthEnv,
    server: &str,
    ca_base64_pem: &str,
) -> Result<kube::config::AuthInfo, ProviderError> {
    if let Some(plugin) = find_plugin(env.path.as_deref()) {
        return Ok(plugin_auth_info(&plugin, server, ca_base64_pem));
    }
    let token = access_token_with(env).await?;
    Ok(kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    })
}

/// The exec credentials `gcloud container clusters get-credentials` writes into a kubeconfig
/// (https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl), with
/// the plugin never prompting: benchstack's terminal is its own.
pub fn plugin_auth_info(
    plugin: &Path,
    server: &str,
    ca_base64_pem: &str,
) -> kube::config::AuthInfo {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .decode(ca_base64_pem.trim())
        .ok()
        .filter(|c| !c.is_empty());
    let exec = kube::config::ExecConfig {
        api_version: Some("client.authentication.k8s.io/v1beta1".into()),
        command: Some(plugin.display().to_string()),
        install_hint: Some(
            "Install gke-gcloud-auth-plugin for use with kubectl by following https://cloud.google.com/kubernetes-engine/docs/how-to/cluster-access-for-kubectl#install_plugin".into(),
        ),
        interactive_mode: Some(kube::config::ExecInteractiveMode::Never),
        provide_cluster_info: true,
        cluster: Some(kube::config::ExecAuthCluster {
            server: Some(server.to_string()),
            certificate_authority_data: ca,
            ..Default::default()
        }),
        ..Default::default()
    };
    kube::config::AuthInfo {
        exec: Some(exec),
        ..Default::default()
    }
}

fn no_credentials(detail: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(
        ErrorKind::Permission,
        "",
        format!(
            "no Google credentials: {detail} (run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS)"
        ),
    )
}

/// An OAuth access token with [`CLUSTER_SCOPES`] from the credentials `env` names. A
/// service-account key is exchanged for one at its `token_uri` (never sent as the
/// self-signed JWT google-cloud-auth makes of it, which googleapis.com front ends accept and
/// a cluster's API server does not); a user's credentials are refreshed with these scopes;
/// anything else goes through google-cloud-auth's Application Default Credentials.
pub async fn access_token_with(env: &AuthEnv) -> Result<String, ProviderError> {
    let key = match &env.credentials_file {
        Some(file) => {
            let bytes = std::fs::read(file)
                .map_err(|e| no_credentials(format!("cannot read {}: {e}", file.display())))?;
            let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                no_credentials(format!(
                    "{} is not a credentials JSON file: {e}",
                    file.display()
                ))
            })?;
            Some(json)
        }
        None => None,
    };
    let kind = key
        .as_ref()
        .and_then(|k| k["type"].as_str())
        .unwrap_or_default()
        .to_string();
    match (kind.as_str(), key) {
        ("service_account", Some(k)) => service_account_token(&k).await,
        ("authorized_user", Some(k)) => {
            let credentials = google_cloud_auth::credentials::user_account::Builder::new(k)
                .with_scopes(CLUSTER_SCOPES)
                .build_access_token_credentials()
                .map_err(no_credentials)?;
            token_of(credentials).await
        }
        _ => {
            let credentials = google_cloud_auth::credentials::Builder::default()
                .with_scopes(CLUSTER_SCOPES)
                .build_access_token_credentials()
                .map_err(no_credentials)?;
            token_of(credentials).await
        }
    }
}

async fn token_of(
    credentials: google_cloud_auth::credentials::AccessTokenCredentials,
) -> Result<String, ProviderError> {
    let token = credentials.access_token().await.map_err(|e| {
        let kind = if e.is_transient() {
            ErrorKind::Unavailable
        } else {
            ErrorKind::Permission
        };
        ProviderError::new(kind, "getting a Google access token", e.to_string())
    })?;
    Ok(token.token)
}

/// Tokens exchanged for service-account keys, by client e-mail and token URI, with when they
/// expire (a client is made per provider call; the token lasts an hour).
static SA_TOKENS: Mutex<BTreeMap<(String, String), (String, Instant)>> =
    Mutex::new(BTreeMap::new());

/// The JWT-bearer exchange of a service-account key for an OAuth access token
/// (https://developers.google.com/identity/protocols/oauth2/service-account#httprest): a JWT
/// with `iss` = the key's e-mail, `scope`, `aud` = its `token_uri`, `iat` and `exp`, signed
/// RS256 with the key (by google-cloud-auth's signer), POSTed to `token_uri` as
/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`.
async fn service_account_token(key: &serde_json::Value) -> Result<String, ProviderError> {
    use base64::Engine as _;
    let what = "exchanging the service-account key for an access token";
    let email = key["client_email"].as_str().unwrap_or_default().to_string();
    let token_uri = key["token_uri"]
        .as_str()
        .filter(|u| !u.is_empty())
        .unwrap_or("https://oauth2.googleapis.com/token")
        .to_string();
    if email.is_empty() {
        return Err(no_credentials(
            "the service-account key has no client_email",
        ));
    }
    let cache_key = (email.clone(), token_uri.clone());
    if let Some((token, expires)) = SA_TOKENS
        .lock()
        .ok()
        .and_then(|t| t.get(&cache_key).cloned())
        && Instant::now() + TOKEN_MARGIN < expires
    {
        return Ok(token);
    }
    let signer = google_cloud_auth::credentials::service_account::Builder::new(key.clone())
        .build_signer()
        .map_err(no_credentials)?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({
        "alg": "RS256",
        "typ": "JWT",
        "kid": key["private_key_id"].as_str().unwrap_or_default(),
    });
    let claims = serde_json::json!({
        "iss": email,
        "scope": CLUSTER_SCOPES.join(" "),
        "aud": token_uri,
        "iat": now,
        "exp": now + 3600,
    });
    let unsigned = format!(
        "{}.{}",
        b64.encode(header.to_string()),
        b64.encode(claims.to_string())
    );
    let signature = signer
        .sign(unsigned.as_bytes())
        .await
        .map_err(|e| no_credentials(format!("cannot sign with the service-account key: {e}")))?;
    let assertion = format!("{unsigned}.{}", b64.encode(signature));
    let client = reqwest::Client::builder()
        .timeout(TOKEN_REQUEST_TIMEOUT)
        .build()
        .map_err(|e| ProviderError::new(ErrorKind::Other, what, e.to_string()))?;
    let response = client
        .post(&token_uri)
        .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
        .send()
        .await
        .map_err(|e| {
            let e2 = ProviderError::new(ErrorKind::Unavailable, what, format!("{token_uri}: {e}"));
            if e.is_connect() {
                e2.unsent_request()
            } else {
                e2
            }
        })?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| ProviderError::new(ErrorKind::Unavailable, what, e.to_string()))?;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if !status.is_success() {
        // {"error":"invalid_grant","error_description":"…"} (RFC 6749 §5.2)
        let message = match (v["error"].as_str(), v["error_description"].as_str()) {
            (Some(e), Some(d)) => format!("{e}: {d}"),
            (Some(e), None) => e.to_string(),
            _ => String::from_utf8_lossy(&body).chars().take(300).collect(),
        };
        // A refused grant (400 invalid_grant, 401) means the key is not good: a permission
        // problem, not a bad request of ours.
        let kind = match http_kind(status.as_u16()) {
            k @ (ErrorKind::Unavailable | ErrorKind::Throttled) => k,
            _ => ErrorKind::Permission,
        };
        return Err(ProviderError::new(
            kind,
            what,
            format!("{token_uri} answered {status}: {message}"),
        ));
    }
    let Some(token) = v["access_token"].as_str().filter(|t| !t.is_empty()) else {
        return Err(ProviderError::new(
            ErrorKind::Other,
            what,
            format!("{token_uri} answered without an access_token"),
        ));
    };
    let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
    if let Ok(mut t) = SA_TOKENS.lock() {
        t.insert(cache_key, (token.to_string(), Instant::now() + lifetime));
    }
    Ok(token.to_string())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A token endpoint that counts the requests it gets and refuses each (400
    /// `invalid_grant`, which nobody retries).
    fn counting_token_endpoint() -> (String, Arc<AtomicUsize>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 8192];
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.read(&mut buf);
                let body = r#"{"error":"invalid_grant","error_description":"refused by the test"}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        (url, count)
    }

    /// Credentials a user's `gcloud auth application-default login` would leave, refreshed
    /// at `token_uri`.
    fn user_credentials(dir: &Path, token_uri: &str) -> AuthEnv {
        let file = dir.join("adc.json");
        let json = serde_json::json!({
            "type": "authorized_user",
            "client_id": "id.apps.googleusercontent.com",
            "client_secret": "secret",
            "refresh_token": "1//refresh",
            "token_uri": token_uri,
        });
        std::fs::write(&file, json.to_string()).unwrap();
        AuthEnv {
            path: Some(dir.as_os_str().to_owned()),
            credentials_file: Some(file),
        }
    }

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn anonymous_credentials_ask_no_token_where_google_credentials_ask_one() {
        let dir = tempfile::tempdir().unwrap();
        let (token_uri, count) = counting_token_endpoint();
        let google = Apis::google(user_credentials(dir.path(), &token_uri));
        assert!(block_on(google.access_token()).is_err(), "refused");
        assert_eq!(count.load(Ordering::SeqCst), 1, "the endpoint counts");

        let emulated = Apis::emulated();
        assert_eq!(block_on(emulated.access_token()).unwrap(), None);
        assert!(emulated.registry_auth().is_none());
        assert_eq!(count.load(Ordering::SeqCst), 1, "no token was asked for");
    }

    #[test]
    fn the_kube_access_follows_the_credentials() {
        let google = Apis::google(AuthEnv::default());
        assert!(matches!(google.kube_access(), KubeAccess::Https { .. }));
        assert_eq!(
            google.kube_access().url("127.0.0.1:6443"),
            "https://127.0.0.1:6443"
        );
        let emulated = Apis::emulated();
        assert!(matches!(emulated.kube_access(), KubeAccess::PlainHttp));
        assert_eq!(
            emulated.kube_access().url("127.0.0.1:6443"),
            "http://127.0.0.1:6443"
        );
    }

    #[test]
    fn storage_emulator_host_takes_a_host_or_a_url() {
        assert_eq!(
            storage_emulator_url("localhost:4443"),
            "http://localhost:4443"
        );
        assert_eq!(
            storage_emulator_url(" https://gcs.test:4443/ "),
            "https://gcs.test:4443"
        );
        assert_eq!(
            storage_emulator_url("http://127.0.0.1:9"),
            "http://127.0.0.1:9"
        );
    }
}
