//! The `kubernetes` provider: the workloads on a GKE cluster, through kube. A serving resource
//! is a Namespace, ConfigMap, Deployment and LoadBalancer Service applied server-side (field
//! manager `benchstack`); a load test is an Indexed Job of `benchstack worker` pods whose
//! reports are read from the pod logs and merged.
//!
//! The apply engine calls providers from plain threads, so the provider owns a tokio runtime
//! (built on first use) and blocks on it. Everything needed to reach the cluster again (its
//! endpoint and CA) is recorded in the observed state, because `read` and `delete` get only the
//! prior state; how it is reached (TLS with Google's credentials, or plain HTTP to an emulated
//! control plane) is the `KubeAccess` the provider was built with.

mod gang;
mod loadtest;
pub mod pods;
mod serving;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::Engine as _;

use super::gcp::{self, GkeClusterObserved, KubeAccess};
use super::retry::{self, Call, RetryPolicy};
use super::runtime::ClientRuntime;
use super::{Applied, Context, ErrorKind, Failure, Inputs, Observation, Provider, ProviderError};
use crate::state::{Intent, ResourceState};
use crate::vocab::resources::{Address, ResourceConfig};

pub use loadtest::LoadtestObserved;
pub use serving::ServingObserved;

/// How long a serving rollout (and then its LoadBalancer address) may take (humantime,
/// default 10m).
pub const ROLLOUT_TIMEOUT_ENV: &str = "BENCHSTACK_ROLLOUT_TIMEOUT";
/// How far in the future a load test's workers start together, so that every pod is
/// scheduled and has pulled its image first (humantime, default 60s).
pub const WORKER_START_DELAY_ENV: &str = "BENCHSTACK_WORKER_START_DELAY";

/// How long a deleted LoadBalancer Service may take to go (its load balancer removed by
/// GKE), before its cluster is deleted (humantime, default 10m).
pub const LB_DELETE_TIMEOUT_ENV: &str = "BENCHSTACK_LB_DELETE_TIMEOUT";

const DEFAULT_ROLLOUT_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_LB_DELETE_TIMEOUT: Duration = Duration::from_secs(600);
const DEFAULT_WORKER_START_DELAY: Duration = Duration::from_secs(60);
/// How long one API call may wait for its answer.
const API_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Polls back off to at most this.
const POLL_CAP: Duration = Duration::from_secs(10);

pub use crate::state::observed::ClusterConnection;

impl ClusterConnection {
    /// The connection of the cluster at `cluster`, from the resource's inputs.
    pub fn from_inputs(inputs: &Inputs, cluster: &Address) -> Result<Self, ProviderError> {
        let observed = inputs.observed.get(cluster).ok_or_else(|| {
            ProviderError::invalid(format!(
                "{cluster} has no recorded state: create the cluster first"
            ))
        })?;
        let gke: GkeClusterObserved = serde_json::from_value(observed.clone()).map_err(|e| {
            ProviderError::invalid(format!(
                "{cluster} is not a GKE cluster with a recorded endpoint: {e}"
            ))
        })?;
        if gke.endpoint.trim().is_empty() {
            return Err(ProviderError::invalid(format!(
                "{cluster} has no control-plane endpoint yet (status {})",
                gke.status
            )));
        }
        Ok(ClusterConnection {
            endpoint: gke.endpoint,
            ca_certificate: gke.ca_certificate,
        })
    }

    /// `gcloud container clusters get-credentials …` for the cluster at `cluster`, when its
    /// recorded state names it: what gives kubectl the same access.
    pub fn get_credentials(inputs: &Inputs, cluster: &Address) -> Option<String> {
        let observed = inputs.observed.get(cluster)?;
        let gke: GkeClusterObserved = serde_json::from_value(observed.clone()).ok()?;
        Some(format!(
            "gcloud container clusters get-credentials {} --location {} --project {}",
            gke.name, gke.location, gke.project
        ))
    }

    /// A kube client for this cluster, reached as `access` says: the endpoint is what GKE
    /// records (`host` or `host:port`); the scheme, the CA and the credentials come from
    /// `access`, never from the endpoint's text.
    async fn client(&self, access: &KubeAccess) -> Result<kube::Client, ProviderError> {
        let config = self.kube_config(access).await?;
        let url = config.cluster_url.to_string();
        kube::Client::try_from(config).map_err(|e| {
            ProviderError::invalid(format!("cannot make a Kubernetes client for {url}: {e}"))
        })
    }

    async fn kube_config(&self, access: &KubeAccess) -> Result<kube::Config, ProviderError> {
        let url = access.url(self.endpoint.trim());
        let uri: http::Uri = url.parse().map_err(|e| {
            ProviderError::invalid(format!("the cluster endpoint {url:?} is not a URL: {e}"))
        })?;
        let mut config = kube::Config::new(uri);
        config.default_namespace = crate::manifest::k8s::NAMESPACE.to_string();
        // Every call here is a short request/response (no watches): a server that stops
        // answering fails the call instead of hanging the apply. Counted from the write, so
        // time a pooled connection sat idle does not count.
        config.read_timeout = Some(API_READ_TIMEOUT);
        // kube retries 429/503/504 on its own by default; `retry::retry` is the one loop, with
        // the one budget (two nested loops would multiply it).
        config.default_retry = false;
        config.reset_reader_on_write = true;
        match access {
            // kubectl's own: gke-gcloud-auth-plugin when it is on the PATH, else an OAuth
            // access token (never a self-signed JWT, which an API server refuses).
            KubeAccess::Https { auth } => {
                if !self.ca_certificate.trim().is_empty() {
                    config.root_cert = Some(ca_der_certificates(&self.ca_certificate)?);
                }
                config.auth_info =
                    gcp::cluster_auth_info_with(auth, &url, &self.ca_certificate).await?;
            }
            // An emulated control plane: no TLS to trust a CA for, no credentials asked for.
            KubeAccess::PlainHttp => {}
        }
        Ok(config)
    }
}

/// The DER certificates in `masterAuth.clusterCaCertificate` (base64 of one or more PEM
/// blocks).
pub fn ca_der_certificates(base64_pem: &str) -> Result<Vec<Vec<u8>>, ProviderError> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let pem_bytes = b64
        .decode(base64_pem.trim())
        .map_err(|e| ProviderError::invalid(format!("the cluster CA is not base64: {e}")))?;
    let pem = String::from_utf8(pem_bytes)
        .map_err(|_| ProviderError::invalid("the cluster CA is not a PEM text"))?;
    let mut certs = Vec::new();
    let mut body: Option<String> = None;
    for line in pem.lines().map(str::trim) {
        if line.starts_with("-----BEGIN CERTIFICATE") {
            body = Some(String::new());
        } else if line.starts_with("-----END CERTIFICATE") {
            let text = body.take().unwrap_or_default();
            certs.push(b64.decode(text).map_err(|e| {
                ProviderError::invalid(format!("the cluster CA holds a damaged certificate: {e}"))
            })?);
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    if certs.is_empty() {
        return Err(ProviderError::invalid(
            "the cluster CA holds no PEM certificate",
        ));
    }
    Ok(certs)
}

/// A kube error as a provider error that says what was being done, of the kind its status
/// code (or, for a failure before any answer, its cause) implies, with the API's message.
fn kube_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> ProviderError {
    let what = what.into();
    move |e| {
        let (kind, message, unsent) = classify(&e);
        let text = match &e {
            kube::Error::Api(s) => format!(
                "{what}: {} ({}{})",
                if s.message.is_empty() {
                    "the API server refused"
                } else {
                    s.message.as_str()
                },
                if s.reason.is_empty() {
                    "error"
                } else {
                    s.reason.as_str()
                },
                if s.code != 0 {
                    format!(", HTTP {}", s.code)
                } else {
                    String::new()
                }
            ),
            other => format!("{what}: {}", with_causes(other)),
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

/// The kind of a kube error, the API's message, and whether the request never left.
fn classify(e: &kube::Error) -> (ErrorKind, String, bool) {
    match e {
        kube::Error::Api(s) => {
            let kind = match s.code {
                0 => ErrorKind::Other,
                code => gcp::http_kind(code),
            };
            let message = if s.message.is_empty() {
                s.reason.clone()
            } else {
                s.message.clone()
            };
            (kind, message, false)
        }
        kube::Error::Auth(_) => (ErrorKind::Permission, with_causes(e), true),
        other => {
            let text = with_causes(other);
            match transport_failure(other) {
                Some(unsent) => (ErrorKind::Unavailable, text, unsent),
                None => (ErrorKind::Other, text, false),
            }
        }
    }
}

/// For a failure below HTTP: Some(true) when the connection was never made (refused, no
/// route: the request was not sent), Some(false) for one lost on the way (reset, timeout,
/// closed early), None for anything else (TLS, a bad URL, …), which a retry will not cure.
fn transport_failure(e: &(dyn std::error::Error + 'static)) -> Option<bool> {
    use std::io::ErrorKind as Io;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut lost = false;
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            match io.kind() {
                Io::ConnectionRefused | Io::HostUnreachable | Io::NetworkUnreachable => {
                    return Some(true);
                }
                Io::ConnectionReset
                | Io::ConnectionAborted
                | Io::BrokenPipe
                | Io::TimedOut
                | Io::UnexpectedEof => lost = true,
                _ => {}
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>()
            && (h.is_timeout() || h.is_closed() || h.is_incomplete_message() || h.is_canceled())
        {
            lost = true;
        }
        // hyper-util's client error says "client error (Connect)" for a connect failure.
        if err.to_string().contains("(Connect)") {
            return Some(true);
        }
        cur = err.source();
    }
    lost.then_some(false)
}

/// Sends a Kubernetes request under the retry policy.
async fn call<T, Fut>(
    policy: &RetryPolicy,
    cancel: &AtomicBool,
    kind: Call,
    what: &str,
    send: impl Fn() -> Fut,
) -> Result<T, ProviderError>
where
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    retry::retry(policy, cancel, kind, || async {
        send().await.map_err(kube_error(what))
    })
    .await
}

/// An error with its chain of causes (kube's own text for a connection error is only
/// "client error (Connect)"; the cause says refused, TLS, DNS, …).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

/// A duration from an environment variable (humantime), or `default` when unset.
fn env_duration(name: &str, default: Duration) -> Result<Duration, ProviderError> {
    Ok(crate::provider::env_duration(name, "90s or 10m")?.unwrap_or(default))
}

/// Sleeps `d`, waking early to honour a cancellation.
async fn pause(ctx: &Context<'_>, d: Duration) -> Result<(), ProviderError> {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        if ctx.cancel.load(Ordering::SeqCst) {
            return Err(ProviderError::Interrupted);
        }
        let now = left.min(step);
        tokio::time::sleep(now).await;
        left -= now;
    }
    if ctx.cancel.load(Ordering::SeqCst) {
        return Err(ProviderError::Interrupted);
    }
    Ok(())
}

/// Whole seconds, for progress lines.
fn secs(d: Duration) -> u64 {
    d.as_secs()
}

pub struct KubernetesProvider {
    runtime: ClientRuntime,
    /// How clusters' Kubernetes APIs are reached (given at construction).
    access: KubeAccess,
    /// Overrides `BENCHSTACK_ROLLOUT_TIMEOUT` (tests: one provider with a short timeout
    /// without changing the process environment for the others).
    rollout_timeout: Option<Duration>,
    /// Overrides `BENCHSTACK_RETRY_BUDGET`.
    retry_budget: Option<Duration>,
    /// Overrides `BENCHSTACK_LB_DELETE_TIMEOUT`.
    lb_delete_timeout: Option<Duration>,
}

impl KubernetesProvider {
    /// Reaches each cluster's Kubernetes API as `apis` says ([`gcp::Apis::kube_access`]).
    pub fn new(apis: &gcp::Apis) -> Self {
        KubernetesProvider {
            runtime: ClientRuntime::new("benchstack-kubernetes", "Kubernetes client"),
            access: apis.kube_access(),
            rollout_timeout: None,
            retry_budget: None,
            lb_delete_timeout: None,
        }
    }

    pub fn with_rollout_timeout(mut self, timeout: Duration) -> Self {
        self.rollout_timeout = Some(timeout);
        self
    }

    pub fn with_lb_delete_timeout(mut self, timeout: Duration) -> Self {
        self.lb_delete_timeout = Some(timeout);
        self
    }

    fn lb_delete_timeout(&self) -> Result<Duration, ProviderError> {
        match self.lb_delete_timeout {
            Some(t) => Ok(t),
            None => env_duration(LB_DELETE_TIMEOUT_ENV, DEFAULT_LB_DELETE_TIMEOUT),
        }
    }

    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = Some(budget);
        self
    }

    fn retry_policy(&self) -> Result<RetryPolicy, ProviderError> {
        match self.retry_budget {
            Some(b) => Ok(RetryPolicy::with_budget(b)),
            None => RetryPolicy::from_env(),
        }
    }

    fn rollout_timeout(&self) -> Result<Duration, ProviderError> {
        match self.rollout_timeout {
            Some(t) => Ok(t),
            None => env_duration(ROLLOUT_TIMEOUT_ENV, DEFAULT_ROLLOUT_TIMEOUT),
        }
    }

    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        self.runtime.block_on(f)
    }
}

fn unsupported(config: &ResourceConfig) -> ProviderError {
    let kind = match config {
        ResourceConfig::Cluster(_) => "cluster",
        ResourceConfig::Model(_) => "model",
        ResourceConfig::Serving(_) => "serving resource",
        ResourceConfig::Loadtest(_) => "load test",
        ResourceConfig::Image(_) => "image",
    };
    ProviderError::invalid(format!(
        "the kubernetes provider manages serving and load tests, not a {kind}"
    ))
}

impl Provider for KubernetesProvider {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    fn read(&self, ctx: &Context, prior: &ResourceState) -> Result<Observation, ProviderError> {
        match &prior.config {
            ResourceConfig::Serving(s) => {
                let policy = self.retry_policy()?;
                self.block_on(serving::read(ctx, &policy, &self.access, prior, s))
            }
            // A load test's results stand; nothing of it lives between runs.
            ResourceConfig::Loadtest(_) => Ok(Observation::Present(prior.observed.clone())),
            other => Err(unsupported(other)),
        }
    }

    fn create(
        &self,
        ctx: &Context,
        address: &Address,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        // `image = image.NAME`: the digest the image block pushed, from its observed state.
        let config = &super::resolve_images(config, inputs)?;
        match config {
            ResourceConfig::Serving(s) => {
                let timeout = self.rollout_timeout()?;
                let policy = self.retry_policy()?;
                self.block_on(serving::apply(
                    ctx,
                    &policy,
                    &self.access,
                    address,
                    s,
                    inputs,
                    timeout,
                ))
            }
            ResourceConfig::Loadtest(l) => {
                let policy = self.retry_policy()?;
                self.block_on(loadtest::run(
                    ctx,
                    &policy,
                    &self.access,
                    address,
                    l,
                    inputs,
                ))
            }
            other => Err(unsupported(other)),
        }
    }

    fn update(
        &self,
        ctx: &Context,
        prior: &ResourceState,
        config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        // Server-side apply makes create and update the same call: a rolling update.
        self.create(ctx, &prior.address, config, inputs)
    }

    fn delete(&self, ctx: &Context, prior: &ResourceState) -> Result<(), ProviderError> {
        let policy = self.retry_policy()?;
        match &prior.config {
            ResourceConfig::Serving(_) => {
                let lb = self.lb_delete_timeout()?;
                self.block_on(serving::delete(
                    ctx,
                    &policy,
                    &self.access,
                    &prior.observed,
                    lb,
                ))
            }
            ResourceConfig::Loadtest(_) => self.block_on(loadtest::delete_leftover(
                ctx,
                &policy,
                &self.access,
                &prior.observed,
            )),
            other => Err(unsupported(other)),
        }
    }

    fn recover(
        &self,
        ctx: &Context,
        intent: &Intent,
        prior: Option<&ResourceState>,
        clean_up: bool,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        let policy = self.retry_policy()?;
        match &intent.config {
            Some(ResourceConfig::Serving(_)) => {
                let lb = self.lb_delete_timeout()?;
                self.block_on(serving::recover(
                    ctx,
                    &policy,
                    &self.access,
                    intent,
                    prior,
                    clean_up,
                    lb,
                ))
            }
            Some(ResourceConfig::Loadtest(_)) => {
                // An interrupted run is re-run: adopt nothing, remove its Job.
                if clean_up {
                    self.block_on(loadtest::delete_leftover(
                        ctx,
                        &policy,
                        &self.access,
                        &intent.data,
                    ))?;
                }
                Ok(None)
            }
            None if intent.operation == "delete" => {
                if clean_up && let Some(p) = prior {
                    self.delete(ctx, p)?;
                }
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// A loopback endpoint as an emulator's would be recorded, with a CA.
    fn loopback_cluster() -> ClusterConnection {
        let b64 = base64::engine::general_purpose::STANDARD;
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64.encode([0x30u8, 0x82, 0x01, 0x0a, 0x02])
        );
        ClusterConnection {
            endpoint: "127.0.0.1:6443".into(),
            ca_certificate: b64.encode(pem),
        }
    }

    #[test]
    fn google_credentials_never_make_a_plain_http_client_even_for_a_loopback_endpoint() {
        use std::os::unix::fs::PermissionsExt;
        // gke-gcloud-auth-plugin on the PATH: its exec credentials, run only when a request is
        // sent (none is here).
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join(gcp::AUTH_PLUGIN);
        std::fs::write(&plugin, "#!/bin/sh\nexit 1\n").unwrap();
        std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let apis = gcp::Apis::google(gcp::AuthEnv {
            path: Some(dir.path().as_os_str().to_owned()),
            credentials_file: None,
        });
        let config = block_on(loopback_cluster().kube_config(&apis.kube_access())).unwrap();
        assert_eq!(config.cluster_url.scheme_str(), Some("https"));
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:6443/");
        assert!(config.root_cert.is_some(), "the cluster's CA is trusted");
        assert!(config.auth_info.exec.is_some(), "kubectl's credentials");
    }

    #[test]
    fn anonymous_access_is_plain_http_without_credentials_or_a_ca() {
        let apis = gcp::Apis::emulated();
        let config = block_on(loopback_cluster().kube_config(&apis.kube_access())).unwrap();
        assert_eq!(config.cluster_url.scheme_str(), Some("http"));
        assert!(config.root_cert.is_none());
        assert!(config.auth_info.exec.is_none());
        assert!(config.auth_info.token.is_none());
    }

    #[test]
    fn a_base64_pem_ca_becomes_der_certificates() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let der = [0x30u8, 0x82, 0x01, 0x0a, 0x02];
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            b64.encode(der)
        );
        let certs = ca_der_certificates(&b64.encode(pem)).unwrap();
        assert_eq!(certs, vec![der.to_vec()]);
    }

    #[test]
    fn a_ca_without_a_certificate_is_refused() {
        let b64 = base64::engine::general_purpose::STANDARD;
        let err = ca_der_certificates(&b64.encode("not a pem")).unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        assert!(ca_der_certificates("%%%").is_err());
    }
}
