//! A serving resource on Kubernetes: Namespace, ConfigMap, Deployment and LoadBalancer
//! Service applied server-side, then the rollout and the Service address waited for. The
//! objects are the plan's (its rendered kubernetes.yaml, read back typed), with only an image
//! block's digest set: plan and cluster cannot disagree.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde::{Deserialize, Serialize};

use std::sync::atomic::AtomicBool;

use super::{ClusterConnection, POLL_CAP, call, pause, pods, secs};
use crate::manifest::capacity;
use crate::manifest::k8s::{
    FIELD_MANAGER, GRPC_PORT, KUBERNETES_YAML, LABEL_COMPONENT, LABEL_NAME, NAMESPACE, REST_PORT,
    ServingObjects, serving_objects,
};
use crate::provider::gcp::{self, KubeAccess};
use crate::provider::retry::{Call, RetryPolicy};
use crate::provider::{Applied, Context, Inputs, Observation, ProviderError};
use crate::state::{Intent, ResourceState};
use crate::vocab::resources::{Address, ResourceConfig, ServingConfig};

pub use crate::state::observed::KubernetesServingObserved as ServingObserved;

impl ServingObserved {
    fn new(
        cluster: ClusterConnection,
        name: String,
        generation: i64,
        replicas: u32,
        address: String,
    ) -> Self {
        // An IPv6 literal needs brackets in a URL and in host:port.
        let host = if address.contains(':') {
            format!("[{address}]")
        } else {
            address.clone()
        };
        let rest = format!("http://{host}:{REST_PORT}");
        let grpc = format!("{host}:{GRPC_PORT}");
        ServingObserved {
            cluster,
            namespace: NAMESPACE.to_string(),
            name,
            generation,
            replicas,
            address,
            rest_endpoint: rest.clone(),
            grpc_endpoint: grpc.clone(),
            rest_endpoints: vec![rest],
            grpc_endpoints: vec![grpc],
            image: None,
        }
    }

    fn to_value(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// Recorded in the intent before anything is applied, so an interrupted apply can find what
/// it made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServingIntent {
    cluster: ClusterConnection,
    namespace: String,
    name: String,
    objects: Vec<String>,
}

struct Apis {
    deployments: Api<Deployment>,
    services: Api<Service>,
    config_maps: Api<ConfigMap>,
    pods: Api<Pod>,
}

impl Apis {
    async fn new(
        cluster: &ClusterConnection,
        access: &KubeAccess,
        namespace: &str,
    ) -> Result<Self, ProviderError> {
        Ok(Self::with(cluster.client(access).await?, namespace))
    }

    fn with(client: kube::Client, namespace: &str) -> Self {
        Apis {
            deployments: Api::namespaced(client.clone(), namespace),
            services: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
        }
    }
}

/// Create or update: apply the four objects, wait for the rollout and the Service address.
/// Server-side apply of the same object is idempotent, so every call here may be retried.
pub(super) async fn apply(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    access: &KubeAccess,
    address: &Address,
    s: &ServingConfig,
    inputs: &Inputs,
    timeout: Duration,
) -> Result<Applied, ProviderError> {
    let cluster = ClusterConnection::from_inputs(inputs, &s.cluster)?;
    // Read before anything is applied: a bad setting changes nothing.
    let watch = pods::Watch::from_env()?;
    let objects = objects_to_apply(address, s, inputs)?;
    let name = objects.name().to_string();
    (ctx.note)(
        serde_json::to_value(ServingIntent {
            cluster: cluster.clone(),
            namespace: NAMESPACE.to_string(),
            name: name.clone(),
            objects: vec![
                format!("Namespace {NAMESPACE}"),
                format!("ConfigMap {name}"),
                format!("Deployment {name}"),
                format!("Service {name}"),
            ],
        })
        .unwrap_or_default(),
    )?;

    let client = cluster.client(access).await?;
    let apis = Apis::with(client.clone(), NAMESPACE);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    (ctx.progress)(format!(
        "applying Namespace {NAMESPACE}, ConfigMap, Deployment and Service {name}"
    ));
    let namespaces = Api::<Namespace>::all(client);
    let again = Call::Idempotent;
    let patch = (
        Patch::Apply(&objects.namespace),
        Patch::Apply(&objects.config_map),
        Patch::Apply(&objects.deployment),
        Patch::Apply(&objects.service),
    );
    let what = |kind: &str| format!("applying {kind} {NAMESPACE}/{name}");
    call(
        policy,
        ctx.cancel,
        again,
        &format!("applying Namespace {NAMESPACE}"),
        || namespaces.patch(NAMESPACE, &params, &patch.0),
    )
    .await?;
    call(policy, ctx.cancel, again, &what("ConfigMap"), || {
        apis.config_maps.patch(&name, &params, &patch.1)
    })
    .await?;
    let deployment = call(policy, ctx.cancel, again, &what("Deployment"), || {
        apis.deployments.patch(&name, &params, &patch.2)
    })
    .await?;
    call(policy, ctx.cancel, again, &what("Service"), || {
        apis.services.patch(&name, &params, &patch.3)
    })
    .await?;

    let generation = deployment.metadata.generation.unwrap_or(0);
    let watch = PodWatch {
        pods: &apis.pods,
        name: &name,
        template: Template::of(&objects.deployment),
        get_credentials: ClusterConnection::get_credentials(inputs, &s.cluster),
        watch,
    };
    let generation =
        wait_for_rollout(ctx, policy, &apis.deployments, &watch, generation, timeout).await?;
    let lb = wait_for_address(ctx, policy, &apis.services, &watch, timeout).await?;
    let mut observed = ServingObserved::new(cluster, name, generation, s.replicas, lb);
    observed.image = s.image.clone();
    Ok(Applied {
        observed: observed.to_value(),
        run: None,
    })
}

/// The objects the plan rendered (`Inputs::rendered`'s kubernetes.yaml: the bytes the reviewer
/// saw, the rollout sized with the machine shapes the plan knew), with the one thing only
/// apply knows set on the parsed Deployment: the digest of an `image = image.NAME` reference
/// (`s` comes resolved, `resolve_images`). Rendered here only for a caller that did not plan.
fn objects_to_apply(
    address: &Address,
    s: &ServingConfig,
    inputs: &Inputs,
) -> Result<ServingObjects, ProviderError> {
    let invalid =
        |e: crate::manifest::ManifestError| ProviderError::invalid(format!("{address}: {e}"));
    if let Some(yaml) = inputs.rendered.get(KUBERNETES_YAML) {
        let mut objects = ServingObjects::from_yaml(yaml).map_err(invalid)?;
        if s.image_from.is_some() {
            let image = s.image.as_deref().ok_or_else(|| {
                ProviderError::invalid(format!("{address}: its image's digest is not resolved"))
            })?;
            objects.set_image(image).map_err(invalid)?;
        }
        return Ok(objects);
    }
    let models = super::super::serving_models(s, inputs)?;
    let cluster_config = match inputs.configs.get(&s.cluster) {
        Some(ResourceConfig::Cluster(c)) => Some(c),
        _ => None,
    };
    // No plan, no preflight: the built-in table sizes the rollout.
    let rollout = capacity::rollout_for(cluster_config, s, &capacity::MachineShapes::default());
    serving_objects(address, s, &models, rollout).map_err(invalid)
}

/// Where a Deployment's rollout stands.
struct Rollout {
    done: bool,
    desired: i32,
    updated: i32,
    available: i32,
    ready: i32,
    generation: i64,
    observed_generation: i64,
    conditions: String,
    /// `Progressing=False, reason ProgressDeadlineExceeded` for the generation applied.
    deadline_exceeded: bool,
}

fn rollout(d: &Deployment, applied_generation: i64) -> Rollout {
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let generation = d.metadata.generation.unwrap_or(0).max(applied_generation);
    let status = d.status.clone().unwrap_or_default();
    let updated = status.updated_replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let ready = status.ready_replicas.unwrap_or(0);
    let observed_generation = status.observed_generation.unwrap_or(0);
    let deadline_exceeded = observed_generation >= generation
        && status.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing"
                && c.status == "False"
                && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
    let conditions = status
        .conditions
        .unwrap_or_default()
        .iter()
        .map(|c| {
            format!(
                "{}={}{}{}",
                c.type_,
                c.status,
                c.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                c.message
                    .as_deref()
                    .map(|m| format!(": {}", m.trim_end_matches('.')))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    Rollout {
        done: observed_generation >= generation && updated == desired && available == desired,
        desired,
        updated,
        available,
        ready,
        generation,
        observed_generation,
        conditions,
        deadline_exceeded,
    }
}

/// What identifies the pods of the template just applied (an earlier template's pods may
/// still be there, being replaced).
struct Template {
    checksum: Option<String>,
    image: Option<String>,
}

const CHECKSUM_ANNOTATION: &str = "benchstack.dev/config-sha256";

impl Template {
    fn of(d: &Deployment) -> Template {
        let template = d.spec.as_ref().map(|s| &s.template);
        Template {
            checksum: template
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .and_then(|a| a.get(CHECKSUM_ANNOTATION).cloned()),
            image: template
                .and_then(|t| t.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone()),
        }
    }

    fn matches(&self, p: &Pod) -> bool {
        let checksum = p
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(CHECKSUM_ANNOTATION));
        let image = p
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.as_ref());
        checksum == self.checksum.as_ref() && image == self.image.as_ref()
    }
}

/// The pods of a serving Deployment, watched while its rollout and its address are waited for.
struct PodWatch<'a> {
    pods: &'a Api<Pod>,
    name: &'a str,
    template: Template,
    get_credentials: Option<String>,
    watch: pods::Watch,
}

impl PodWatch<'_> {
    /// The Deployment's pods of the applied template (all of them when `all`).
    async fn list(
        &self,
        ctx: &Context<'_>,
        policy: &RetryPolicy,
        all: bool,
    ) -> Result<Vec<Pod>, ProviderError> {
        let lp = ListParams::default().labels(&format!(
            "{LABEL_NAME}={},{LABEL_COMPONENT}=serving",
            self.name
        ));
        let what = format!("listing the pods of Deployment {NAMESPACE}/{}", self.name);
        let list = call(policy, ctx.cancel, Call::Idempotent, &what, || {
            self.pods.list(&lp)
        })
        .await?;
        Ok(list
            .items
            .into_iter()
            .filter(|p| all || self.template.matches(p))
            .collect())
    }

    /// Fails with the pod's own words when one of the applied template's pods cannot start,
    /// or when one is Unschedulable (an old pod counts there: all of them need room).
    async fn check(
        &self,
        ctx: &Context<'_>,
        policy: &RetryPolicy,
        what: &str,
    ) -> Result<Vec<Pod>, ProviderError> {
        let all = self.list(ctx, policy, true).await?;
        let current: Vec<Pod> = all
            .iter()
            .filter(|p| self.template.matches(p))
            .cloned()
            .collect();
        if let Some(stuck) = self.watch.verdict(&current, &all) {
            return Err(pods::stuck_error(
                what,
                &stuck,
                self.get_credentials.as_deref(),
            ));
        }
        Ok(current)
    }
}

/// Polls the Deployment's status until the rollout of (at least) `generation` is complete;
/// returns the generation rolled out. Fails at once when a pod of the new template cannot
/// start, or when the Deployment reports its progress deadline exceeded.
async fn wait_for_rollout(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    deployments: &Api<Deployment>,
    watch: &PodWatch<'_>,
    generation: i64,
    timeout: Duration,
) -> Result<i64, ProviderError> {
    let name = watch.name;
    let started = Instant::now();
    let mut interval = gcp::poll_interval()?;
    let rollout_of = format!("the rollout of Deployment {NAMESPACE}/{name}");
    loop {
        let what = format!("reading the rollout of Deployment {NAMESPACE}/{name}");
        let d = call(policy, ctx.cancel, Call::Idempotent, &what, || {
            deployments.get_status(name)
        })
        .await?;
        let r = rollout(&d, generation);
        if r.done {
            return Ok(r.generation);
        }
        let current = watch.check(ctx, policy, &rollout_of).await?;
        let elapsed = started.elapsed();
        let counts = format!(
            "{} of {} replicas updated, {} available, {} ready (generation {} observed {}){}",
            r.updated,
            r.desired,
            r.available,
            r.ready,
            r.generation,
            r.observed_generation,
            if r.conditions.is_empty() {
                String::new()
            } else {
                format!("; conditions: {}", r.conditions)
            }
        );
        let pod_lines = if current.is_empty() {
            String::new()
        } else {
            format!("\n  {}", pods::summary(&current))
        };
        let first_pod = current
            .first()
            .and_then(|p| p.metadata.name.clone())
            .unwrap_or_else(|| format!("-l {LABEL_NAME}={name}"));
        if r.deadline_exceeded {
            return Err(ProviderError::other(format!(
                "{rollout_of} exceeded its progress deadline: {counts}{pod_lines}{}",
                pods::look_further(watch.get_credentials.as_deref(), &first_pod)
            )));
        }
        if elapsed >= timeout {
            return Err(ProviderError::other(format!(
                "{rollout_of} did not finish within {}: {counts}{pod_lines}{}",
                humantime::format_duration(timeout),
                pods::look_further(watch.get_credentials.as_deref(), &first_pod)
            )));
        }
        (ctx.progress)(format!(
            "rollout {}/{} replicas available, {}s",
            r.available,
            r.desired,
            secs(elapsed)
        ));
        pause(ctx, interval).await?;
        interval = gcp::backoff(interval, POLL_CAP);
    }
}

/// The Service's LoadBalancer IP or host name, when it has one.
fn load_balancer_address(s: &Service) -> Option<String> {
    let ingress = s
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?;
    let first = ingress.first()?;
    first
        .ip
        .clone()
        .filter(|ip| !ip.is_empty())
        .or_else(|| first.hostname.clone().filter(|h| !h.is_empty()))
}

async fn wait_for_address(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    services: &Api<Service>,
    watch: &PodWatch<'_>,
    timeout: Duration,
) -> Result<String, ProviderError> {
    let name = watch.name;
    let started = Instant::now();
    let mut interval = gcp::poll_interval()?;
    loop {
        let what = format!("reading Service {NAMESPACE}/{name}");
        let s = call(policy, ctx.cancel, Call::Idempotent, &what, || {
            services.get_status(name)
        })
        .await?;
        if let Some(a) = load_balancer_address(&s) {
            return Ok(a);
        }
        // A pod that starts crash-looping now fails the apply here, not at the load test.
        watch
            .check(
                ctx,
                policy,
                &format!("waiting for the address of Service {NAMESPACE}/{name}"),
            )
            .await?;
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            return Err(ProviderError::other(format!(
                "Service {NAMESPACE}/{name} got no LoadBalancer address within {} \
                 (status.loadBalancer.ingress is empty){}",
                humantime::format_duration(timeout),
                watch
                    .get_credentials
                    .as_deref()
                    .map(|g| format!(
                        "\n  look further:\n    {g}\n    kubectl describe service {name} --namespace {NAMESPACE}"
                    ))
                    .unwrap_or_default()
            )));
        }
        (ctx.progress)(format!(
            "waiting for the LoadBalancer address, {}s",
            secs(elapsed)
        ));
        pause(ctx, interval).await?;
        interval = gcp::backoff(interval, POLL_CAP);
    }
}

fn parse_observed(observed: &serde_json::Value) -> Result<ServingObserved, ProviderError> {
    serde_json::from_value(observed.clone()).map_err(|e| {
        ProviderError::invalid(format!(
            "the recorded state of this serving resource is unreadable: {e}"
        ))
    })
}

/// Refresh: both objects present, scaled as recorded, with an address. Only a 404 makes an
/// object gone; any other failure to read (after retries) is an error, never a drift.
pub(super) async fn read(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    access: &KubeAccess,
    prior: &ResourceState,
    s: &ServingConfig,
) -> Result<Observation, ProviderError> {
    let o = parse_observed(&prior.observed)?;
    let apis = Apis::new(&o.cluster, access, &o.namespace).await?;
    let what = |kind: &str| format!("reading {kind} {}/{}", o.namespace, o.name);
    let Some(deployment) = call(
        policy,
        ctx.cancel,
        Call::Idempotent,
        &what("Deployment"),
        || apis.deployments.get_opt(&o.name),
    )
    .await?
    else {
        return Ok(Observation::Gone(format!(
            "Deployment {}/{} no longer exists",
            o.namespace, o.name
        )));
    };
    let Some(service) = call(
        policy,
        ctx.cancel,
        Call::Idempotent,
        &what("Service"),
        || apis.services.get_opt(&o.name),
    )
    .await?
    else {
        return Ok(Observation::Gone(format!(
            "Service {}/{} no longer exists",
            o.namespace, o.name
        )));
    };
    let Some(address) = load_balancer_address(&service) else {
        return Ok(Observation::Drifted(format!(
            "Service {}/{} has no LoadBalancer address",
            o.namespace, o.name
        )));
    };
    let live_replicas = deployment
        .spec
        .as_ref()
        .and_then(|sp| sp.replicas)
        .unwrap_or(1)
        .max(0) as u32;
    let mut observed = ServingObserved::new(
        o.cluster.clone(),
        o.name.clone(),
        deployment.metadata.generation.unwrap_or(o.generation),
        live_replicas,
        address,
    );
    // What the Deployment runs now, so that a rebuilt image not yet rolled out is noticed.
    observed.image = Template::of(&deployment).image.or(o.image.clone());
    let observed = observed.to_value();
    if live_replicas != s.replicas {
        let mut live = s.clone();
        live.replicas = live_replicas;
        return Ok(Observation::Modified {
            observed,
            config: Box::new(ResourceConfig::Serving(live)),
            what: format!("replicas changed from {} to {live_replicas}", s.replicas),
        });
    }
    Ok(Observation::Present(observed))
}

async fn delete_objects(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    access: &KubeAccess,
    cluster: &ClusterConnection,
    namespace: &str,
    name: &str,
    lb_timeout: Duration,
) -> Result<(), ProviderError> {
    let cancel: &AtomicBool = ctx.cancel;
    let apis = Apis::new(cluster, access, namespace).await?;
    let params = DeleteParams::background();
    // Deleting twice is harmless (the second is a 404, which means done).
    let ignore_missing = |r: Result<(), ProviderError>| match r {
        Ok(()) | Err(ProviderError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    };
    let what = |kind: &str| format!("deleting {kind} {namespace}/{name}");
    let deleted = call(
        policy,
        cancel,
        Call::Idempotent,
        &what("Service"),
        || async { apis.services.delete(name, &params).await.map(|_| ()) },
    )
    .await;
    ignore_missing(deleted)?;
    let deleted = call(
        policy,
        cancel,
        Call::Idempotent,
        &what("Deployment"),
        || async { apis.deployments.delete(name, &params).await.map(|_| ()) },
    )
    .await;
    ignore_missing(deleted)?;
    let deleted = call(
        policy,
        cancel,
        Call::Idempotent,
        &what("ConfigMap"),
        || async { apis.config_maps.delete(name, &params).await.map(|_| ()) },
    )
    .await;
    ignore_missing(deleted)?;
    // The namespace is shared with other serving resources and load tests: it stays.
    wait_until_service_gone(ctx, policy, &apis.services, namespace, name, lb_timeout).await
}

/// A LoadBalancer Service stays (with its `service.kubernetes.io/load-balancer-cleanup`
/// finalizer) until GKE has removed its forwarding rule, target pool, health check and
/// firewall rules. GKE recommends deleting such Services before their cluster
/// (https://cloud.google.com/kubernetes-engine/docs/how-to/deleting-a-cluster): a cluster
/// deleted first can leave the load balancer behind, billing. So wait until it is gone.
async fn wait_until_service_gone(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    services: &Api<Service>,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> Result<(), ProviderError> {
    let started = Instant::now();
    let mut interval = gcp::poll_interval()?;
    loop {
        let what = format!("reading Service {namespace}/{name}");
        let svc = call(policy, ctx.cancel, Call::Idempotent, &what, || {
            services.get_opt(name)
        })
        .await?;
        let Some(svc) = svc else {
            return Ok(());
        };
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            let finalizers = svc.metadata.finalizers.unwrap_or_default().join(", ");
            return Err(ProviderError::other(format!(
                "Service {namespace}/{name} was deleted but is still there after {} \
                 (finalizers: {}): its load balancer may not be removed. Check for what is \
                 left before deleting the cluster:\n    gcloud compute forwarding-rules list \
                 --filter='description~{namespace}/{name}'",
                humantime::format_duration(timeout),
                if finalizers.is_empty() {
                    "none".to_string()
                } else {
                    finalizers
                }
            )));
        }
        (ctx.progress)(format!(
            "waiting for the load balancer of Service {namespace}/{name} to be removed, {}s",
            secs(elapsed)
        ));
        pause(ctx, interval).await?;
        interval = gcp::backoff(interval, POLL_CAP);
    }
}

pub(super) async fn delete(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    access: &KubeAccess,
    observed: &serde_json::Value,
    lb_timeout: Duration,
) -> Result<(), ProviderError> {
    let o = parse_observed(observed)?;
    (ctx.progress)(format!(
        "deleting Service, Deployment and ConfigMap {}/{}",
        o.namespace, o.name
    ));
    delete_objects(
        ctx,
        policy,
        access,
        &o.cluster,
        &o.namespace,
        &o.name,
        lb_timeout,
    )
    .await
}

/// An interrupted create or update: adopt the Deployment when it is rolled out and its
/// Service has an address; with `clean_up`, remove the objects of a create that did not get
/// that far.
pub(super) async fn recover(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    access: &KubeAccess,
    intent: &Intent,
    prior: Option<&ResourceState>,
    clean_up: bool,
    lb_timeout: Duration,
) -> Result<Option<serde_json::Value>, ProviderError> {
    if intent.operation == "delete" {
        if clean_up && let Some(p) = prior {
            delete(ctx, policy, access, &p.observed, lb_timeout).await?;
        }
        return Ok(None);
    }
    let Ok(data) = serde_json::from_value::<ServingIntent>(intent.data.clone()) else {
        // The provider never got as far as recording what it would apply.
        return Ok(None);
    };
    let apis = Apis::new(&data.cluster, access, &data.namespace).await?;
    let read = |kind: &str| format!("reading {kind} {}/{}", data.namespace, data.name);
    let deployment = call(
        policy,
        ctx.cancel,
        Call::Idempotent,
        &read("Deployment"),
        || apis.deployments.get_opt(&data.name),
    )
    .await?;
    let service = call(
        policy,
        ctx.cancel,
        Call::Idempotent,
        &read("Service"),
        || apis.services.get_opt(&data.name),
    )
    .await?;
    if let (Some(d), Some(s)) = (&deployment, &service) {
        let r = rollout(d, 0);
        if r.done
            && let Some(address) = load_balancer_address(s)
        {
            return Ok(Some(
                ServingObserved::new(
                    data.cluster.clone(),
                    data.name.clone(),
                    r.generation,
                    r.desired.max(0) as u32,
                    address,
                )
                .to_value(),
            ));
        }
    }
    // An update leaves the objects to the next apply; a create that did not finish is removed.
    if clean_up && prior.is_none() {
        delete_objects(
            ctx,
            policy,
            access,
            &data.cluster,
            &data.namespace,
            &data.name,
            lb_timeout,
        )
        .await?;
    }
    Ok(None)
}
