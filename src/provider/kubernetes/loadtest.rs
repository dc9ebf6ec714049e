//! A distributed load test: an Indexed Job of `benchstack worker` pods on the load-generation
//! cluster. Every worker gets the whole spec and a common start time; each prints its report
//! as the last line of its log, and the reports are merged (histograms added). The Job is
//! deleted afterwards, whether the run succeeded or not.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};

use super::gang;
use super::{
    ClusterConnection, DEFAULT_WORKER_START_DELAY, POLL_CAP, WORKER_START_DELAY_ENV, call,
    env_duration, pause, pods, secs,
};
use crate::loadgen::RunReport;
use crate::loadgen::server::{self, Replica, Scraper};
use crate::loadgen::verdict::mark_invalid;
use crate::loadgen::worker::WorkerSpec;
use crate::manifest::k8s::{self, FIELD_MANAGER, NAMESPACE, loadtest_job, object_name};
use crate::provider::gcp::KubeAccess;
use crate::provider::retry::{Call, RetryPolicy};
use crate::provider::{Applied, Context, Inputs, ProviderError, RunOutcome, gcp};
use crate::state::procinfo;
use crate::vocab::load::Rate;
use crate::vocab::resources::{Address, LoadtestConfig};

/// The label Kubernetes puts on an Indexed Job's pods with their index.
const INDEX_LABEL: &str = "batch.kubernetes.io/job-completion-index";
const WORKER_CONTAINER: &str = "worker";
/// Time allowed beyond the lead time and the stages, for pods that start late and for the
/// last replies to arrive.
const RUN_MARGIN: Duration = Duration::from_secs(120);

pub use crate::state::observed::KubernetesLoadtestObserved as LoadtestObserved;

/// The Job a run makes, recorded in the intent before it is created so an interrupted run's
/// Job can be removed.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JobRef {
    cluster: ClusterConnection,
    namespace: String,
    job: String,
}

/// `<object name>-<unix seconds>`, within the 63 characters a Job name may have.
fn job_name(address: &Address, unix_secs: u64) -> String {
    let suffix = format!("-{unix_secs}");
    let mut base = object_name(address);
    base.truncate(63 - suffix.len());
    format!("{}{suffix}", base.trim_end_matches('-'))
}

/// One run: create the Job, follow it, read and merge the reports, delete the Job.
pub(super) async fn run(
    ctx: &Context<'_>,
    policy: &RetryPolicy,
    access: &KubeAccess,
    address: &Address,
    l: &LoadtestConfig,
    inputs: &Inputs,
) -> Result<Applied, ProviderError> {
    let cluster = ClusterConnection::from_inputs(inputs, &l.cluster)?;
    let targets = super::super::load_test_targets(l, inputs)?;
    let mut spec = l
        .worker_spec(targets.clone())
        .map_err(|e| ProviderError::other(format!("{address}: {e}")))?;
    // How long the workers may take to become ready before the common start is published
    // without the missing ones (the run is then invalid).
    let lead = env_duration(WORKER_START_DELAY_ENV, DEFAULT_WORKER_START_DELAY)?;
    let watch = pods::Watch::from_env()?;
    spec.start_at_unix_ms = None;
    spec.control_port = Some(k8s::WORKER_CONTROL_PORT);
    // Answers checked with the server idle, before any worker starts (the check blocks).
    let answers = if inputs.probe {
        None
    } else {
        let (l2, inputs2) = (l.clone(), inputs.clone());
        let (check, notes) = tokio::task::spawn_blocking(move || {
            let notes = std::sync::Mutex::new(Vec::new());
            let check = crate::provider::answer_check(&l2, &inputs2, &|m| {
                if let Ok(mut n) = notes.lock() {
                    n.push(m);
                }
            });
            (check, notes.into_inner().unwrap_or_default())
        })
        .await
        .map_err(|e| ProviderError::other(format!("the answer check failed: {e}")))?;
        for m in notes {
            (ctx.progress)(m);
        }
        crate::provider::refuse_changed_answers(l, check.as_ref())?;
        check
    };
    let spec_json = serde_json::to_string(&spec)
        .map_err(|e| ProviderError::other(format!("the worker spec: {e}")))?;
    let name = job_name(address, procinfo::now_unix());
    // Who may start the workers: this run only.
    let token = crate::loadgen::worker::new_token();
    let job = loadtest_job(address, l, &name, &spec_json, &token)
        .map_err(|e| ProviderError::other(format!("{address}: {e}")))?;

    (ctx.note)(
        serde_json::to_value(JobRef {
            cluster: cluster.clone(),
            namespace: NAMESPACE.to_string(),
            job: name.clone(),
        })
        .unwrap_or_default(),
    )?;
    let apis = Apis::new(&cluster, access).await?;
    // The load-generation cluster may never have run anything of benchstack's.
    let namespaces = Api::<Namespace>::all(apis.client().await?);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let ns = k8s::namespace();
    let ns_patch = Patch::Apply(&ns);
    call(
        policy,
        ctx.cancel,
        Call::Idempotent,
        &format!("applying Namespace {NAMESPACE}"),
        || namespaces.patch(NAMESPACE, &params, &ns_patch),
    )
    .await?;
    let (jobs, _) = apis.get().await?;
    let started = procinfo::now_unix();
    (ctx.progress)(format!(
        "creating Job {NAMESPACE}/{name} of {} workers",
        spec.workers
    ));
    let post = PostParams::default();
    // A create is repeated only if it never reached the API server: a second Job would run
    // a second measurement.
    call(
        policy,
        ctx.cancel,
        Call::Once,
        &format!("creating Job {NAMESPACE}/{name}"),
        || jobs.create(&post, &job),
    )
    .await?;

    let follow = Follow {
        ctx,
        policy,
        apis: &apis,
        name: &name,
        spec: &spec,
        start_at: std::sync::Mutex::new(None),
        lead,
        token: &token,
        get_credentials: ClusterConnection::get_credentials(inputs, &l.cluster),
        watch,
    };
    // The server's side: every serving pod's metrics page through the API server's pod
    // proxy, as each stage begins on the workers' common schedule and once they are done.
    let scraper = serving_replicas(l, inputs, access)
        .await
        .map(|replicas| Scraper::start(replicas, l.model.clone()));
    let outcome = async {
        let mut gang = follow.gang_start().await?;
        if let Ok(scraper) = &scraper {
            let mut boundaries = Vec::with_capacity(spec.stages.len());
            let mut at = gang.start_at() + spec.warmup;
            for st in &spec.stages {
                boundaries.push(at);
                at += st.duration;
            }
            scraper.mark_on_schedule(boundaries);
        }
        let reports = follow.reports(&mut gang).await?;
        Ok::<_, ProviderError>((gang, reports))
    }
    .await;
    // The Job goes in every case: a finished Job's pods only hold on to cluster resources.
    let removed = match apis.get().await {
        Ok((jobs, _)) => delete_job(policy, &jobs, &name).await,
        Err(e) => Err(e),
    };
    let (gang, reports) = outcome?;
    removed?;

    let workers = gang::diagnostics(&gang, &reports);
    let reports: Vec<RunReport> = reports.into_iter().map(|(_, _, r)| r).collect();
    let mut merged = crate::loadgen::merge(&reports)
        .map_err(|e| ProviderError::other(format!("merging the workers' reports: {e}")))?;
    // Complete and on time, or invalid with the reasons: never "n−1 workers".
    let bound = Duration::from_millis(l.start_tolerance_ms);
    for why in gang::judge(&gang, &workers, bound) {
        mark_invalid(&mut merged, why);
    }
    merged.worker_diagnostics = workers;
    merged.answers = answers;
    crate::loadgen::judge_validity(&mut merged);
    let stages = merged.stages.len();
    let server = match scraper {
        // The last scrape waits on the API server: off this runtime's threads.
        Ok(s) => tokio::task::spawn_blocking(move || s.finish(stages))
            .await
            .map_err(|e| format!("the scrape thread failed: {e}")),
        Err(why) => Err(why),
    };
    server::attach(&mut merged, server);
    let slos_met = merged.slos_met() || l.slos.is_empty();
    let observed = LoadtestObserved {
        cluster,
        namespace: NAMESPACE.to_string(),
        job: name,
        workers: spec.workers,
        targets,
        protocol: l.protocol.to_string(),
    };
    Ok(Applied {
        observed: serde_json::to_value(&observed).unwrap_or_default(),
        run: Some(RunOutcome {
            images: measured_images(l, inputs),
            environment: merged.environment.clone(),
            report: serde_json::to_value(&merged)
                .map_err(|e| ProviderError::other(format!("the run report: {e}")))?,
            slos_met,
            invalid: merged.invalid.clone(),
            started,
            finished: procinfo::now_unix(),
        }),
    })
}

/// What the run measured: the serving image its target's Deployment runs and the worker image
/// (digests for `image` blocks; `l` has them resolved).
fn measured_images(
    l: &LoadtestConfig,
    inputs: &Inputs,
) -> std::collections::BTreeMap<String, String> {
    let mut images = std::collections::BTreeMap::new();
    if let Some(i) = inputs
        .observed
        .get(&l.target)
        .and_then(crate::state::observed::deployed_image)
    {
        images.insert("serving".to_string(), i);
    }
    if let Some(i) = &l.loadgen_image {
        images.insert("loadgen".to_string(), i.clone());
    }
    images
}

/// The target's serving pods as the scraper reaches them: through the serving cluster's API
/// server, `GET /api/v1/namespaces/NS/pods/POD:8501/proxy/monitoring/prometheus/metrics`
/// (the pods/proxy subresource), one per running pod. Err(why) when they cannot be listed.
async fn serving_replicas(
    l: &LoadtestConfig,
    inputs: &Inputs,
    access: &KubeAccess,
) -> Result<Vec<Box<dyn Replica>>, String> {
    let observed = inputs
        .observed
        .get(&l.target)
        .ok_or_else(|| format!("not scraped: {} is not in the state", l.target))?;
    let serving: crate::state::observed::KubernetesServingObserved =
        serde_json::from_value(observed.clone())
            .map_err(|_| format!("not scraped: {} records no Kubernetes serving", l.target))?;
    let client = serving
        .cluster
        .client(access)
        .await
        .map_err(|e| format!("connecting to the serving cluster: {e}"))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &serving.namespace);
    let selector = format!(
        "{}={},{}=serving",
        k8s::LABEL_NAME,
        serving.name,
        k8s::LABEL_COMPONENT
    );
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| format!("listing the serving pods ({selector}): {e}"))?;
    // (pod, node) of each running pod.
    let mut names: Vec<(String, Option<String>)> = list
        .items
        .iter()
        .filter(|p| pod_phase(p) == "Running")
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            (pod_name(p).to_string(), node)
        })
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(format!("no running serving pod matches {selector}"));
    }
    let handle = tokio::runtime::Handle::current();
    Ok(names
        .into_iter()
        .map(|(pod, node)| {
            Box::new(PodReplica {
                client: client.clone(),
                handle: handle.clone(),
                path: format!(
                    "/api/v1/namespaces/{}/pods/{pod}:{}/proxy{}",
                    serving.namespace,
                    k8s::REST_PORT,
                    crate::manifest::METRICS_PATH
                ),
                namespace: serving.namespace.clone(),
                node,
                pod,
            }) as Box<dyn Replica>
        })
        .collect())
}

/// One serving pod, reached through the API server's pod proxy on its REST port; its CPU
/// from its node's kubelet (cAdvisor) through the node proxy.
struct PodReplica {
    client: kube::Client,
    handle: tokio::runtime::Handle,
    namespace: String,
    pod: String,
    node: Option<String>,
    path: String,
}

impl PodReplica {
    /// GET `path` through the API server: the body of a 200, else why not.
    fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        use http_body_util::{BodyExt, Limited};
        // Called from the scraper's own thread, never from one of the runtime's.
        self.handle.block_on(async {
            let get = async {
                let req = http::Request::get(path)
                    .body(kube::client::Body::empty())
                    .map_err(|e| format!("building the request: {e}"))?;
                let resp = self
                    .client
                    .send(req)
                    .await
                    .map_err(|e| format!("GET {path}: {e}"))?;
                let status = resp.status().as_u16();
                let body = Limited::new(resp.into_body(), server::MAX_PAGE_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the reply to GET {path}: {e}"))?
                    .to_bytes();
                if status != 200 {
                    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                    return Err(format!(
                        "GET {path} answered HTTP {status}: {}",
                        text.trim()
                    ));
                }
                Ok(body.to_vec())
            };
            tokio::time::timeout(server::SCRAPE_TIMEOUT, get)
                .await
                .map_err(|_| format!("no answer within {}s", server::SCRAPE_TIMEOUT.as_secs()))?
        })
    }
}

impl Replica for PodReplica {
    fn label(&self) -> String {
        format!("pod {}", self.pod)
    }

    fn fetch(&self) -> Result<Vec<u8>, String> {
        self.get(&self.path)
    }

    /// `container_cpu_usage_seconds_total` (and the CFS period counters, with a CPU limit) of
    /// the serving container, from the kubelet's `/metrics/cadvisor` through the node proxy.
    fn cpu(&self) -> Option<Result<server::Cpu, String>> {
        let node = self.node.as_ref()?;
        let page = format!("/api/v1/nodes/{node}/proxy/metrics/cadvisor");
        Some(self.get(&page).and_then(|body| {
            server::read_cadvisor(&body, &self.namespace, &self.pod, k8s::SERVING_CONTAINER)
                .map(|(seconds, periods)| server::Cpu { seconds, periods })
                .map_err(|e| format!("node {node}: {e}"))
        }))
    }
}

/// Deletes the Job; it runs also after a cancel (the Job must go), so it does not stop for one.
async fn delete_job(
    policy: &RetryPolicy,
    jobs: &Api<Job>,
    name: &str,
) -> Result<(), ProviderError> {
    let never = std::sync::atomic::AtomicBool::new(false);
    let deleted = call(
        policy,
        &never,
        Call::Idempotent,
        &format!("deleting Job {NAMESPACE}/{name}"),
        || async {
            jobs.delete(name, &DeleteParams::background())
                .await
                .map(|_| ())
        },
    )
    .await;
    match deleted {
        Ok(()) | Err(ProviderError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the Job recorded in a load test's observed state or intent, if it is still there.
pub(super) async fn delete_leftover(
    _ctx: &Context<'_>,
    policy: &RetryPolicy,
    access: &KubeAccess,
    recorded: &serde_json::Value,
) -> Result<(), ProviderError> {
    let Ok(r) = serde_json::from_value::<JobRef>(recorded.clone()) else {
        // No Job was ever created (or nothing was recorded): nothing to remove.
        return Ok(());
    };
    let client = r.cluster.client(access).await?;
    let jobs: Api<Job> = Api::namespaced(client, &r.namespace);
    delete_job(policy, &jobs, &r.job).await
}

fn pod_index(p: &Pod) -> Option<u32> {
    let meta = &p.metadata;
    meta.labels
        .as_ref()
        .and_then(|l| l.get(INDEX_LABEL))
        .or_else(|| meta.annotations.as_ref().and_then(|a| a.get(INDEX_LABEL)))
        .and_then(|v| v.parse().ok())
}

fn pod_name(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or("(unnamed pod)")
}

fn pod_phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// The last non-empty line of a log.
fn last_line(log: &str) -> Option<&str> {
    log.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// What runs `elapsed` after the common start: `warmup`, `stage 3900 req/s`, `stage max`,
/// or `finishing` once the last stage is over.
fn stage_at(spec: &WorkerSpec, elapsed: Duration) -> String {
    if elapsed < spec.warmup {
        return "warmup".to_string();
    }
    let mut end = spec.warmup;
    for s in &spec.stages {
        end += s.duration;
        if elapsed < end {
            return match s.rate {
                Rate::PerSecond(r) => format!("stage {r:.0} req/s"),
                Rate::Max => "stage max".to_string(),
            };
        }
    }
    "finishing".to_string()
}

/// Google access tokens live an hour; clients for a long run are remade well before that.
const CLIENT_MAX_AGE: Duration = Duration::from_secs(30 * 60);

/// A client of the load-generation cluster, remade (with a fresh token) once it is older
/// than `CLIENT_MAX_AGE`.
struct Apis<'a> {
    cluster: &'a ClusterConnection,
    access: &'a KubeAccess,
    current: std::sync::Mutex<(kube::Client, Instant)>,
}

impl<'a> Apis<'a> {
    async fn new(
        cluster: &'a ClusterConnection,
        access: &'a KubeAccess,
    ) -> Result<Apis<'a>, ProviderError> {
        let client = cluster.client(access).await?;
        Ok(Apis {
            cluster,
            access,
            current: std::sync::Mutex::new((client, Instant::now())),
        })
    }

    async fn client(&self) -> Result<kube::Client, ProviderError> {
        let poisoned = || ProviderError::other("the Kubernetes client lock was poisoned");
        {
            let cur = self.current.lock().map_err(|_| poisoned())?;
            if cur.1.elapsed() < CLIENT_MAX_AGE {
                return Ok(cur.0.clone());
            }
        }
        let client = self.cluster.client(self.access).await?;
        *self.current.lock().map_err(|_| poisoned())? = (client.clone(), Instant::now());
        Ok(client)
    }

    async fn get(&self) -> Result<(Api<Job>, Api<Pod>), ProviderError> {
        let client = self.client().await?;
        Ok((
            Api::namespaced(client.clone(), NAMESPACE),
            Api::namespaced(client, NAMESPACE),
        ))
    }
}

struct Follow<'a> {
    ctx: &'a Context<'a>,
    policy: &'a RetryPolicy,
    apis: &'a Apis<'a>,
    name: &'a str,
    spec: &'a WorkerSpec,
    /// The common start once published (for the progress line).
    start_at: std::sync::Mutex<Option<SystemTime>>,
    lead: Duration,
    /// The run's control token (in the Job's environment), sent with every start.
    token: &'a str,
    get_credentials: Option<String>,
    watch: pods::Watch,
}

impl Follow<'_> {
    async fn list_pods(&self) -> Result<Vec<Pod>, ProviderError> {
        let lp = ListParams::default().labels(&format!("job-name={}", self.name));
        let (_, pods) = self.apis.get().await?;
        let what = format!("listing the pods of Job {NAMESPACE}/{}", self.name);
        Ok(call(
            self.policy,
            self.ctx.cancel,
            Call::Idempotent,
            &what,
            || pods.list(&lp),
        )
        .await?
        .items)
    }

    async fn log(&self, pod: &str) -> Result<String, ProviderError> {
        let lp = LogParams {
            container: Some(WORKER_CONTAINER.to_string()),
            ..Default::default()
        };
        let (_, pods) = self.apis.get().await?;
        let what = format!("reading the log of pod {NAMESPACE}/{pod}");
        call(
            self.policy,
            self.ctx.cancel,
            Call::Idempotent,
            &what,
            || pods.logs(pod, &lp),
        )
        .await
    }

    /// The Job's pods now, or why the run cannot go on: the Job or a worker failed, or a
    /// worker cannot start (its image cannot be pulled, it fits on no node).
    ///
    /// `strict` (before the common start): any failed pod fails the run. After it, a failed
    /// pod the Job replaces (within its backoffLimit) is a restart the run records instead.
    async fn poll(&self, strict: bool) -> Result<(Vec<Pod>, i32), ProviderError> {
        let (jobs, _) = self.apis.get().await?;
        let what = format!("reading Job {NAMESPACE}/{}", self.name);
        let job = call(
            self.policy,
            self.ctx.cancel,
            Call::Idempotent,
            &what,
            || jobs.get_status(self.name),
        )
        .await?;
        let status = job.status.unwrap_or_default();
        let pods = self.list_pods().await?;
        let job_failed =
            (strict && status.failed.unwrap_or(0) > 0)
                || status.conditions.iter().flatten().any(|c| {
                    (c.type_ == "Failed" || c.type_ == "FailureTarget") && c.status == "True"
                });
        if job_failed || (strict && pods.iter().any(|p| pod_phase(p) == "Failed")) {
            return Err(self.failure(&pods, "a worker failed").await);
        }
        if let Some(stuck) = self.watch.verdict(&pods, &pods) {
            return Err(pods::stuck_error(
                &format!("load test Job {NAMESPACE}/{}", self.name),
                &stuck,
                self.get_credentials.as_deref(),
            ));
        }
        Ok((pods, status.succeeded.unwrap_or(0)))
    }

    /// Waits until every worker pod is Running, Ready (it serves its clock) and measured,
    /// or the lead time is over, then publishes the common start to the ready ones, each in
    /// its own clock. A worker not ready by then is recorded (the run will be invalid); no
    /// worker ready at all fails the run.
    async fn gang_start(&self) -> Result<gang::Gang, ProviderError> {
        let workers = self.spec.workers;
        let port = k8s::WORKER_CONTROL_PORT;
        let began = Instant::now();
        // Readiness is a short wait: poll often, never slower than once a second.
        let interval = gcp::poll_interval()?.min(Duration::from_secs(1));
        let mut g = gang::Gang::default();
        let pods = loop {
            let (pods, _) = self.poll(true).await?;
            let client = self.apis.client().await?;
            for p in &pods {
                let Some(i) = pod_index(p) else { continue };
                g.saw(i, p);
                if g.clocks.contains_key(&i) || !gang::worker_ready(p) {
                    continue;
                }
                // Not answering yet is not an error: the next poll asks again.
                if let Ok(c) = gang::measure(&client, NAMESPACE, pod_name(p), port).await {
                    g.clocks.insert(i, c);
                }
            }
            if g.clocks.len() as u32 >= workers || began.elapsed() >= self.lead {
                break pods;
            }
            (self.ctx.progress)(format!(
                "{}/{workers} workers ready, waiting for all before the common start",
                g.clocks.len()
            ));
            pause(self.ctx, interval).await?;
        };
        if g.clocks.is_empty() {
            return Err(self
                .failure(
                    &pods,
                    &format!(
                        "no worker became ready within {} ({WORKER_START_DELAY_ENV})",
                        humantime::format_duration(self.lead)
                    ),
                )
                .await);
        }
        for i in 0..workers {
            if !g.clocks.contains_key(&i) {
                let state = pods
                    .iter()
                    .find(|p| pod_index(p) == Some(i))
                    .map(|p| format!("pod {} {}", pod_name(p), pod_phase(p)))
                    .unwrap_or_else(|| "no pod".into());
                g.not_ready.insert(
                    i,
                    format!(
                        "{state} after {}",
                        humantime::format_duration(Duration::from_secs(self.lead.as_secs()))
                    ),
                );
            }
        }
        let lead = gang::publish_lead(&g.clocks);
        g.start_unix_ns = (SystemTime::now() + lead)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // Every worker at once: a start handed out one after the other would make the last
        // worker late by the sum of the round trips.
        let client = self.apis.client().await?;
        let mut sends = tokio::task::JoinSet::new();
        for (&i, c) in &g.clocks {
            let (client, pod, at) = (client.clone(), c.pod.clone(), g.start_for(i));
            let token = self.token.to_string();
            sends.spawn(async move {
                (
                    i,
                    pod.clone(),
                    gang::publish(&client, NAMESPACE, &pod, port, at, &token).await,
                )
            });
        }
        while let Some(done) = sends.join_next().await {
            let Ok((i, pod, sent)) = done else { continue };
            match sent {
                Ok(()) => {
                    g.handed.insert(pod);
                }
                Err(e) => {
                    g.not_ready
                        .insert(i, format!("the start could not be handed to it: {e}"));
                }
            }
        }
        if let Ok(mut at) = self.start_at.lock() {
            *at = Some(g.start_at());
        }
        (self.ctx.progress)(format!(
            "{}/{workers} workers ready, common start in {}",
            g.clocks.len(),
            humantime::format_duration(Duration::from_millis(lead.as_millis() as u64))
        ));
        Ok(g)
    }

    /// A worker pod that became ready after the common start was published (it was late,
    /// or it replaced one): measured and handed the same start, so its report still comes
    /// (late, and the run invalid).
    async fn hand_late_starts(
        &self,
        g: &mut gang::Gang,
        pods: &[Pod],
    ) -> Result<(), ProviderError> {
        let port = k8s::WORKER_CONTROL_PORT;
        for p in pods {
            let Some(i) = pod_index(p) else { continue };
            g.saw(i, p);
            let name = pod_name(p);
            if g.handed.contains(name) || !gang::worker_ready(p) {
                continue;
            }
            let client = self.apis.client().await?;
            let Ok(c) = gang::measure(&client, NAMESPACE, name, port).await else {
                continue;
            };
            g.clocks.insert(i, c);
            if gang::publish(&client, NAMESPACE, name, port, g.start_for(i), self.token)
                .await
                .is_ok()
            {
                g.handed.insert(name.to_string());
            }
        }
        Ok(())
    }

    /// Follows the Job until every worker succeeded (then returns their index, pod and
    /// report, in index order) or one failed, the run timed out or was cancelled.
    async fn reports(
        &self,
        g: &mut gang::Gang,
    ) -> Result<Vec<(u32, String, RunReport)>, ProviderError> {
        let workers = self.spec.workers;
        let deadline_after =
            self.lead + self.spec.expected_duration() + RUN_MARGIN + self.spec.timeout;
        let started = Instant::now();
        let mut interval = gcp::poll_interval()?;
        loop {
            let (pods, succeeded) = self.poll(false).await?;
            self.hand_late_starts(g, &pods).await?;
            if succeeded >= workers as i32 {
                return self.collect(&pods).await;
            }
            if started.elapsed() >= deadline_after {
                return Err(self
                    .failure(
                        &pods,
                        &format!(
                            "the run did not finish within {}",
                            humantime::format_duration(deadline_after)
                        ),
                    )
                    .await);
            }
            (self.ctx.progress)(self.progress_line(&pods));
            pause(self.ctx, interval).await?;
            interval = gcp::backoff(interval, POLL_CAP);
        }
    }

    fn progress_line(&self, pods: &[Pod]) -> String {
        let workers = self.spec.workers;
        let running = pods.iter().filter(|p| pod_phase(p) == "Running").count();
        let done = pods.iter().filter(|p| pod_phase(p) == "Succeeded").count();
        let mut line = format!("{running}/{workers} workers running");
        if done > 0 {
            line.push_str(&format!(", {done} done"));
        }
        let total = self.spec.expected_duration();
        let Some(start_at) = self.start_at.lock().ok().and_then(|g| *g) else {
            return line;
        };
        match SystemTime::now().duration_since(start_at) {
            Err(wait) => line.push_str(&format!(", starting in {}s", secs(wait.duration()))),
            Ok(elapsed) => {
                line.push_str(&format!(
                    ", {}, {}s/{}s",
                    stage_at(self.spec, elapsed),
                    secs(elapsed),
                    secs(total)
                ));
            }
        }
        line
    }

    /// Every worker's report, read from the last line of its pod's log.
    async fn collect(&self, pods: &[Pod]) -> Result<Vec<(u32, String, RunReport)>, ProviderError> {
        let mut by_index: BTreeMap<u32, &Pod> = BTreeMap::new();
        for p in pods.iter().filter(|p| pod_phase(p) == "Succeeded") {
            if let Some(i) = pod_index(p) {
                by_index.insert(i, p);
            }
        }
        let missing: Vec<String> = (0..self.spec.workers)
            .filter(|i| !by_index.contains_key(i))
            .map(|i| i.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(self
                .failure(
                    pods,
                    &format!(
                        "Job {NAMESPACE}/{} reports success but no succeeded pod has worker index {}",
                        self.name,
                        missing.join(", ")
                    ),
                )
                .await);
        }
        let mut reports = Vec::with_capacity(by_index.len());
        for (i, p) in by_index {
            let name = pod_name(p);
            let log = self.log(name).await?;
            let line = last_line(&log).ok_or_else(|| {
                ProviderError::other(format!(
                    "pod {name} (worker {i}) succeeded but its log is empty: no report"
                ))
            })?;
            let report: RunReport = serde_json::from_str(line).map_err(|e| {
                ProviderError::other(format!(
                    "pod {name} (worker {i}): the last log line is not a report ({e}): {line}"
                ))
            })?;
            reports.push((i, name.to_string(), report));
        }
        Ok(reports)
    }

    /// Why the run failed: `why`, then the pods to blame with their phase, exit code, reason
    /// and last log line (the failed ones, or when none failed, every unfinished one), and
    /// the workers that have no pod at all.
    async fn failure(&self, pods: &[Pod], why: &str) -> ProviderError {
        let mut sorted: Vec<&Pod> = pods.iter().collect();
        sorted.sort_by_key(|p| pod_index(p));
        let failed: Vec<&Pod> = sorted
            .iter()
            .copied()
            .filter(|p| pod_phase(p) == "Failed")
            .collect();
        let unfinished: Vec<&Pod> = sorted
            .iter()
            .copied()
            .filter(|p| !matches!(pod_phase(p), "Failed" | "Succeeded"))
            .collect();
        let blamed = if failed.is_empty() {
            &unfinished
        } else {
            &failed
        };
        let mut lines = Vec::new();
        for p in blamed {
            lines.push(self.describe(p).await);
        }
        if !failed.is_empty() && !unfinished.is_empty() {
            let names: Vec<String> = unfinished
                .iter()
                .map(|p| format!("{} ({})", pod_name(p), pod_phase(p)))
                .collect();
            lines.push(format!("stopped with the Job: {}", names.join(", ")));
        }
        let found: Vec<u32> = pods.iter().filter_map(pod_index).collect();
        let missing: Vec<String> = (0..self.spec.workers)
            .filter(|i| !found.contains(i))
            .map(|i| i.to_string())
            .collect();
        if !missing.is_empty() {
            lines.push(format!("no pod for worker {}", missing.join(", ")));
        }
        ProviderError::other(format!(
            "load test Job {NAMESPACE}/{}: {why}{}",
            self.name,
            if lines.is_empty() {
                String::new()
            } else {
                format!("\n  {}", lines.join("\n  "))
            }
        ))
    }

    /// One pod: its phase, how its container ended, and the last line of its log.
    async fn describe(&self, p: &Pod) -> String {
        let phase = pod_phase(p);
        let name = pod_name(p);
        let mut line = format!(
            "pod {name} (worker {}): {phase}",
            pod_index(p)
                .map(|i| i.to_string())
                .unwrap_or_else(|| "?".into())
        );
        let terminated = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        let waiting = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.waiting.as_ref());
        if let Some(w) = waiting {
            line.push_str(&format!(
                ", waiting: {}{}",
                w.reason.as_deref().unwrap_or("?"),
                w.message
                    .as_deref()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        if let Some(t) = terminated {
            line.push_str(&format!(", exit code {}", t.exit_code));
            if let Some(r) = &t.reason {
                line.push_str(&format!(" ({r})"));
            }
            if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
                line.push_str(&format!(": {m}"));
            }
        }
        if phase != "Pending" {
            match self.log(name).await {
                Ok(log) => match last_line(&log) {
                    Some(last) => line.push_str(&format!("; last log line: {last}")),
                    None => line.push_str("; its log is empty"),
                },
                Err(e) => line.push_str(&format!("; no log: {e}")),
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::load::Protocol;
    use crate::vocab::resources::Kind;

    #[test]
    fn job_names_are_unique_per_second_and_fit_a_label() {
        let a = Address {
            kind: Kind::Loadtest,
            name: "baseline".into(),
            key: None,
        };
        assert_eq!(job_name(&a, 1_700_000_000), "baseline-1700000000");
        let long = Address {
            kind: Kind::Loadtest,
            name: "x".repeat(80),
            key: None,
        };
        let n = job_name(&long, 1_700_000_000);
        assert!(n.len() <= 63, "{n}");
        assert!(n.ends_with("-1700000000"), "{n}");
    }

    #[test]
    fn progress_names_the_stage_running_since_the_common_start() {
        use crate::loadgen::worker::WorkerRequest;
        use crate::vocab::load::{Arrival, Stage};
        let stage = |rate, secs| Stage {
            name: "s".into(),
            rate,
            duration: Duration::from_secs(secs),
        };
        let spec = WorkerSpec {
            targets: vec!["http://127.0.0.1:8501".into()],
            protocol: Protocol::Rest,
            model: "m".into(),
            signature: None,
            request: WorkerRequest::Body { body: "{}".into() },
            stages: vec![stage(Rate::PerSecond(300.0), 60), stage(Rate::Max, 10)],
            warmup: Duration::from_secs(5),
            arrival: Arrival::Constant,
            seed: 1,
            connections: 1,
            timeout: Duration::from_secs(1),
            slos: vec![],
            workers: 4,
            start_at_unix_ms: None,
            control_port: None,
        };
        let at = |s| stage_at(&spec, Duration::from_secs(s));
        assert_eq!(at(0), "warmup");
        assert_eq!(at(5), "stage 300 req/s");
        assert_eq!(at(64), "stage 300 req/s");
        assert_eq!(at(65), "stage max");
        assert_eq!(at(75), "finishing");
    }

    #[test]
    fn the_report_is_the_last_non_empty_line() {
        assert_eq!(last_line("starting\n{\"a\":1}\n\n"), Some("{\"a\":1}"));
        assert_eq!(last_line("\n \n"), None);
    }
}
