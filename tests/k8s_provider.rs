//! The kubernetes provider through the library API against the loopback Kubernetes emulator:
//! server-side apply, rollouts, drift, deletion, and distributed load tests whose worker pods
//! are real `benchstack worker` processes sending load to a real `benchstack serve`.

#[path = "support/google_auth_emulator.rs"]
mod google_auth_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;
#[path = "support/k8s_emulator.rs"]
mod k8s_emulator;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use benchstack::loadgen::RunReport;
use benchstack::loadgen::histogram::decode_histogram;
use benchstack::manifest::capacity::Rollout;
use benchstack::manifest::k8s::{KUBERNETES_YAML, ServingObjects, serving_objects};
use benchstack::provider::gcp::{Apis, AuthEnv, GkeClusterObserved};
use benchstack::provider::kubernetes::KubernetesProvider;
use benchstack::provider::{
    Applied, Context, ErrorKind, Inputs, Observation, Provider, ProviderError,
};
use benchstack::state::observed::CloudBuildImageObserved;
use benchstack::state::{Intent, ResourceState};
use benchstack::vocab::load::{Arrival, Protocol, Rate, RequestSource, Stage};
use benchstack::vocab::resources::*;
use google_auth_emulator::GoogleAuthEmulator;
use k8s_emulator::{K8sEmulator, NodePool, Options};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_benchstack");

/// Env vars are process-global: every test sets the same ones, once.
fn setup() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| unsafe {
        std::env::set_var("BENCHSTACK_POLL_INTERVAL", "20ms");
        // How long the gang waits for every worker to be ready before the common start.
        std::env::set_var("BENCHSTACK_WORKER_START_DELAY", "5s");
        std::env::set_var("BENCHSTACK_ROLLOUT_TIMEOUT", "60s");
        std::env::set_var("BENCHSTACK_UNSCHEDULABLE_GRACE", "300ms");
        // Providers made with Providers::new (no per-test budget) give up on an unavailable
        // API after this long.
        std::env::set_var("BENCHSTACK_RETRY_BUDGET", "1s");
        // As a test drives the binary: GKE emulated, and a key at hand whose token endpoint
        // counts what is asked of it (`Apis::from_env` must leave it alone).
        std::env::set_var("BENCHSTACK_GKE_ENDPOINT", "http://127.0.0.1:9");
        std::env::set_var(
            "GOOGLE_APPLICATION_CREDENTIALS",
            key_file(&SHARED_GOOGLE.0, SHARED_GOOGLE.1.path()),
        );
    });
}

/// The token endpoint behind the process's `GOOGLE_APPLICATION_CREDENTIALS`, and the key's
/// directory.
static SHARED_GOOGLE: std::sync::LazyLock<(GoogleAuthEmulator, tempfile::TempDir)> =
    std::sync::LazyLock::new(|| (GoogleAuthEmulator::start(), tempfile::tempdir().unwrap()));

/// Every Google API emulated: the clusters' Kubernetes APIs are plain HTTP, and no test asks
/// Application Default Credentials for a token.
fn emulated() -> Apis {
    Apis::emulated()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn addr(kind: Kind, name: &str) -> Address {
    Address {
        kind,
        name: name.into(),
        key: None,
    }
}

/// Collects what the provider notes and reports.
struct Harness {
    dir: tempfile::TempDir,
    notes: Mutex<Vec<Value>>,
    progress: Mutex<Vec<String>>,
    cancel: AtomicBool,
    /// Cancels (as Ctrl-C would) once a progress message contains this.
    cancel_on: Option<&'static str>,
}

impl Harness {
    fn new() -> Self {
        setup();
        Harness {
            dir: tempfile::tempdir().unwrap(),
            notes: Mutex::new(Vec::new()),
            progress: Mutex::new(Vec::new()),
            cancel: AtomicBool::new(false),
            cancel_on: None,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&Context) -> T) -> T {
        let note = |v: Value| {
            self.notes.lock().unwrap().push(v);
            Ok(())
        };
        let progress = |m: String| {
            if self.cancel_on.is_some_and(|c| m.contains(c)) {
                self.cancel.store(true, Ordering::SeqCst);
            }
            self.progress.lock().unwrap().push(m)
        };
        f(&Context {
            state_dir: self.dir.path(),
            note: &note,
            progress: &progress,
            cancel: &self.cancel,
        })
    }

    fn progress(&self) -> Vec<String> {
        self.progress.lock().unwrap().clone()
    }
}

fn gke_cluster(emu: &K8sEmulator, name: &str) -> Value {
    serde_json::to_value(GkeClusterObserved {
        project: "test-project".into(),
        location: "us-central1-a".into(),
        name: name.into(),
        endpoint: emu.endpoint(),
        ca_certificate: String::new(),
        status: "RUNNING".into(),
        node_pool: "default-pool".into(),
        node_count: 3,
        machine_type: "e2-highcpu-8".into(),
        cpu_platform: None,
    })
    .unwrap()
}

/// A self-signed CA (EC P-256, valid until 2126), as a GKE cluster's
/// `masterAuth.clusterCaCertificate` carries one.
const TEST_CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIBkjCCATegAwIBAgIUdfRvVuBcYqNcNNMayM6QciUQcQEwCgYIKoZIzj0EAwIw\nHTEbMBkGA1UEAwwSYmVuY2hzdGFjay10ZXN0LWNhMCAXDTI2MTEyNTAyNTAwNloY\nDzIxMjYxMTAxMDI1MDA2WjAdMRswGQYDVQQDDBJiZW5jaHN0YWNrLXRlc3QtY2Ew\nWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAASqQzdRIKYkujM8NRe4o/J2bEdAvV89\nH7ewxWqDxz5x3tREkUyLAdSCMTghdbNU6SkwFqmI/yNZHgchKeyV8N1to1MwUTAd\nBgNVHQ4EFgQUbcRNgk9gi9frLiVbGHhAX9W9HsIwHwYDVR0jBBgwFoAUbcRNgk9g\ni9frLiVbGHhAX9W9HsIwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBG\nAiEA1zENN3mxW6QkbgWnr/wUodsUysU6xm2Hkw4wpmi5A3UCIQC2E/N9zipxphH3\n6IeC48kLJEzY4OGhANDE31IlJv9c2Q==\n-----END CERTIFICATE-----\n";

fn model() -> ModelConfig {
    ModelConfig {
        name: "regression".into(),
        base_path: repo().join("examples/model/regression"),
        serving_path: None,
    }
}

fn serving(replicas: u32) -> ServingConfig {
    ServingConfig {
        cluster: addr(Kind::Cluster, "serving"),
        image: Some("tensorflow/serving:2.19.0".into()),
        image_from: None,
        replicas,
        models: vec![addr(Kind::Model, "regression")],
        flags: BTreeMap::new(),
        batching: Some(BatchingConfig {
            max_batch_size: Some(64),
            batch_timeout_micros: Some(1000),
            ..Default::default()
        }),
        cpu: None,
        memory: None,
    }
}

fn serving_inputs(emu: &K8sEmulator) -> Inputs {
    let mut inputs = Inputs::default();
    inputs
        .observed
        .insert(addr(Kind::Cluster, "serving"), gke_cluster(emu, "serving"));
    inputs.configs.insert(
        addr(Kind::Model, "regression"),
        ResourceConfig::Model(model()),
    );
    inputs
}

fn state_of(address: Address, config: ResourceConfig, observed: &Value) -> ResourceState {
    ResourceState {
        address,
        provider: "kubernetes".into(),
        config,
        depends_on: vec![],
        observed: observed.clone(),
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        fingerprint: String::new(),
        applied_at: 0,
        last_run: None,
    }
}

fn loadtest(workers: u32) -> LoadtestConfig {
    LoadtestConfig {
        cluster: addr(Kind::Cluster, "loadgen"),
        target: addr(Kind::Serving, "tf"),
        model: "regression".into(),
        signature: None,
        protocol: Protocol::Rest,
        request: RequestSource::Data {
            path: repo().join("examples/model/test.csv"),
            batch_size: 1,
        },
        workers,
        start_tolerance_ms: 50,
        loadgen_image: Some("gcr.io/test-project/benchstack:test".into()),
        loadgen_image_from: None,
        connections: 6,
        arrival: Arrival::Constant,
        seed: 7,
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(5),
        stages: vec![Stage {
            name: "steady".into(),
            rate: Rate::PerSecond(150.0),
            duration: Duration::from_secs(2),
        }],
        slos: vec![],
    }
}

fn failed_message(r: Result<Applied, ProviderError>) -> String {
    match r {
        Ok(a) => panic!("expected a failure, got {:?}", a.observed),
        Err(e) => e.to_string(),
    }
}

#[test]
fn serving_is_applied_rolled_out_refreshed_scaled_outside_updated_and_deleted() {
    let h = Harness::new();
    let mut opts = Options::new(BIN);
    opts.load_balancer_ip = "127.31.41.59".into();
    let emu = K8sEmulator::start(opts);
    let p = KubernetesProvider::new(&emulated());
    let tf = addr(Kind::Serving, "tf");
    let inputs = serving_inputs(&emu);

    let applied = h
        .with(|ctx| p.create(ctx, &tf, &ResourceConfig::Serving(serving(2)), &inputs))
        .unwrap();
    let o = &applied.observed;
    assert_eq!(o["rest_endpoint"], "http://127.31.41.59:8501");
    assert_eq!(o["grpc_endpoint"], "127.31.41.59:8500");
    assert_eq!(
        o["rest_endpoints"],
        serde_json::json!(["http://127.31.41.59:8501"])
    );
    assert_eq!(
        o["grpc_endpoints"],
        serde_json::json!(["127.31.41.59:8500"])
    );
    assert_eq!(o["namespace"], "benchstack");
    assert_eq!(o["name"], "tf");
    assert_eq!(o["cluster"]["endpoint"], emu.endpoint());
    let first_generation = o["generation"].as_i64().unwrap();

    // The four objects went out by server-side apply, forced, as field manager benchstack.
    let applies: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    let paths: Vec<&str> = applies.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/benchstack",
            "/api/v1/namespaces/benchstack/configmaps/tf",
            "/apis/apps/v1/namespaces/benchstack/deployments/tf",
            "/api/v1/namespaces/benchstack/services/tf",
        ]
    );
    for r in &applies {
        assert!(
            r.content_type.starts_with("application/apply-patch+yaml"),
            "{r:?}"
        );
        assert_eq!(
            r.query.get("fieldManager").map(String::as_str),
            Some("benchstack")
        );
        assert_eq!(r.query.get("force").map(String::as_str), Some("true"));
    }
    let cm = emu.object("configmaps", "benchstack", "tf").unwrap();
    assert!(
        cm["data"]["batching_parameters.txt"]
            .as_str()
            .unwrap()
            .contains("max_batch_size { value: 64 }")
    );
    // The intent was noted before anything was applied, and the wait was reported.
    assert_eq!(h.notes.lock().unwrap()[0]["name"], "tf");
    let progress = h.progress();
    assert!(
        progress
            .iter()
            .any(|m| m.starts_with("rollout 0/2 replicas available")),
        "{progress:?}"
    );
    assert!(
        progress
            .iter()
            .any(|m| m.starts_with("waiting for the LoadBalancer address")),
        "{progress:?}"
    );

    let prior = state_of(
        tf.clone(),
        ResourceConfig::Serving(serving(2)),
        &applied.observed,
    );
    match h.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Present(o) => assert_eq!(o["rest_endpoint"], "http://127.31.41.59:8501"),
        other => panic!("expected Present, got {other:?}"),
    }

    // Scaled by hand: the refresh reports what is live.
    emu.scale("benchstack", "tf", 5);
    match h.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Modified { config, what, .. } => {
            assert_eq!(what, "replicas changed from 2 to 5");
            match *config {
                ResourceConfig::Serving(s) => assert_eq!(s.replicas, 5),
                other => panic!("expected a serving config, got {other:?}"),
            }
        }
        other => panic!("expected Modified, got {other:?}"),
    }

    // The update takes the replicas back (force), as a new generation whose rollout is waited.
    let before = emu.request_count();
    let updated = h
        .with(|ctx| p.update(ctx, &prior, &ResourceConfig::Serving(serving(3)), &inputs))
        .unwrap();
    assert!(updated.observed["generation"].as_i64().unwrap() > first_generation);
    let deployment = emu.object("deployments", "benchstack", "tf").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(
        deployment["status"]["observedGeneration"],
        deployment["metadata"]["generation"]
    );
    let status_reads = emu.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/deployments/tf/status"))
        .count();
    // Scaling 5 ready replicas down to 3 of the same template is complete at once, as on a
    // real cluster: the status is read, and says so.
    assert!(status_reads >= 1, "the rollout was not waited for");
    let prior = state_of(
        tf.clone(),
        ResourceConfig::Serving(serving(3)),
        &updated.observed,
    );
    assert!(matches!(
        h.with(|ctx| p.read(ctx, &prior)).unwrap(),
        Observation::Present(_)
    ));

    h.with(|ctx| p.delete(ctx, &prior)).unwrap();
    for resource in ["deployments", "services", "configmaps"] {
        assert_eq!(emu.object(resource, "benchstack", "tf"), None, "{resource}");
    }
    assert!(
        emu.object("namespaces", "", "benchstack").is_some(),
        "the shared namespace stays"
    );
    match h.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Gone(why) => assert!(why.contains("Deployment benchstack/tf"), "{why}"),
        other => panic!("expected Gone, got {other:?}"),
    }
    // Deleting again finds nothing to delete, which is fine.
    h.with(|ctx| p.delete(ctx, &prior)).unwrap();
}

#[test]
fn a_rollout_that_never_becomes_ready_times_out_saying_what_is_stuck() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    emu.never_ready("tf");
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(1));
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(serving(2)),
            &serving_inputs(&emu),
        )
    }));
    assert!(
        msg.contains("Deployment benchstack/tf did not finish within 1s"),
        "{msg}"
    );
    assert!(
        msg.contains("2 of 2 replicas updated, 0 available"),
        "{msg}"
    );
    // The pods say what is wrong: running, never ready.
    assert!(
        msg.contains(
            "Ready=False (ContainersNotReady): containers with unready status: [tensorflow-serving]"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("gcloud container clusters get-credentials serving --location us-central1-a --project test-project"),
        "{msg}"
    );
}

#[test]
fn a_rollout_past_its_progress_deadline_fails_then_not_at_the_timeout() {
    let h = Harness::new();
    let mut opts = Options::new(BIN);
    // progressDeadlineSeconds (600) passes in 0.6 s.
    opts.time_scale = 1000.0;
    let emu = K8sEmulator::start(opts);
    emu.never_ready("tf");
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(serving(2)),
            &serving_inputs(&emu),
        )
    }));
    assert!(
        msg.contains("the rollout of Deployment benchstack/tf exceeded its progress deadline"),
        "{msg}"
    );
    assert!(msg.contains("ProgressDeadlineExceeded"), "{msg}");
    assert!(msg.contains("has timed out progressing"), "{msg}");
    assert!(!msg.contains("did not finish within"), "{msg}");
}

/// The cluster `serving` as the stack configures it (the capacity check reads it).
fn serving_cluster(machine_type: &str, nodes: u32) -> ClusterConfig {
    ClusterConfig {
        provider: ProviderKind::Gke,
        project: Some("test-project".into()),
        location: Some("us-central1-a".into()),
        machine_type: Some(machine_type.into()),
        node_count: nodes,
        disk_size_gb: None,
        spot: false,
        private_nodes: false,
        labels: BTreeMap::new(),
        service_account: None,
        network: None,
        subnetwork: None,
        enable_apis: false,
    }
}

/// `serving(replicas)` requesting the original experiment's 7 CPUs and 4Gi per replica.
fn big_serving(replicas: u32) -> ServingConfig {
    let mut s = serving(replicas);
    s.cpu = Some("7".into());
    s.memory = Some("4Gi".into());
    s
}

fn highcpu_8_emulator(nodes: u32) -> K8sEmulator {
    let mut opts = Options::new(BIN);
    opts.node_pools = vec![NodePool::new("e2-highcpu-8", nodes)];
    K8sEmulator::start(opts)
}

#[test]
fn replicas_that_fit_no_node_fail_the_rollout_at_once_with_the_schedulers_message() {
    let h = Harness::new();
    let emu = highcpu_8_emulator(3);
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(big_serving(4)),
            &serving_inputs(&emu),
        )
    }));
    assert!(
        msg.contains(
            "is Unschedulable: 0/3 nodes are available: 3 Insufficient cpu, 3 Insufficient memory."
        ),
        "{msg}"
    );
    assert!(msg.contains("kubectl describe pod tf-"), "{msg}");
    assert!(!msg.contains("did not finish within"), "{msg}");
}

#[test]
fn a_batching_change_rolls_one_pod_at_a_time_when_no_node_has_room_for_a_surge_pod() {
    let h = Harness::new();
    let emu = highcpu_8_emulator(3);
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let tf = addr(Kind::Serving, "tf");
    let mut inputs = serving_inputs(&emu);
    inputs.configs.insert(
        addr(Kind::Cluster, "serving"),
        ResourceConfig::Cluster(serving_cluster("e2-highcpu-8", 3)),
    );
    let first = big_serving(3);
    let applied = h
        .with(|ctx| p.create(ctx, &tf, &ResourceConfig::Serving(first.clone()), &inputs))
        .unwrap();
    let d = emu.object("deployments", "benchstack", "tf").unwrap();
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"],
        serde_json::json!({"maxSurge": 0, "maxUnavailable": 1})
    );
    // Every replica has a node of its own.
    let nodes: std::collections::BTreeSet<String> = emu
        .pods("benchstack")
        .iter()
        .map(|p| p["spec"]["nodeName"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(nodes.len(), 3, "{nodes:?}");

    let mut changed = first.clone();
    changed.batching.as_mut().unwrap().max_batch_size = Some(128);
    let prior = state_of(
        tf.clone(),
        ResourceConfig::Serving(first),
        &applied.observed,
    );
    let updated = h
        .with(|ctx| p.update(ctx, &prior, &ResourceConfig::Serving(changed), &inputs))
        .unwrap();
    assert!(
        updated.observed["generation"].as_i64().unwrap()
            > applied.observed["generation"].as_i64().unwrap()
    );
    let d = emu.object("deployments", "benchstack", "tf").unwrap();
    assert_eq!(d["status"]["updatedReplicas"], 3, "{}", d["status"]);
    assert_eq!(d["status"]["availableReplicas"], 3, "{}", d["status"]);
    let serving: Vec<Value> = emu
        .pods("benchstack")
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert_eq!(serving.len(), 3);
    // Each replacement waited, Unschedulable, for its predecessor to terminate: that is a
    // rolling update, not a failure.
    assert!(
        h.progress().iter().any(|m| m.starts_with("rollout 2/3")),
        "{:?}",
        h.progress()
    );
}

/// The kubernetes.yaml the plan rendered for `s`, as `Inputs::rendered` carries it.
fn rendered_yaml(s: &ServingConfig, rollout: Rollout) -> BTreeMap<String, String> {
    let objects = serving_objects(&addr(Kind::Serving, "tf"), s, &[model()], rollout).unwrap();
    BTreeMap::from([(KUBERNETES_YAML.to_string(), objects.to_yaml().unwrap())])
}

#[test]
fn the_provider_applies_the_plans_rendered_objects_with_only_the_built_images_digest_set() {
    let h = Harness::new();
    let emu = highcpu_8_emulator(3);
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let tf = addr(Kind::Serving, "tf");
    let image = addr(Kind::Image, "serving");
    let digest = format!(
        "us-central1-docker.pkg.dev/test-project/benchstack/tf@sha256:{}",
        "ab".repeat(32)
    );
    let mut inputs = serving_inputs(&emu);
    // Small replicas on 3 × e2-highcpu-8: the built-in table alone would roll with a surge
    // pod. The plan rolled them one at a time (as it does when Compute Engine described the
    // nodes smaller than the table): the cluster must get what the plan showed.
    inputs.configs.insert(
        addr(Kind::Cluster, "serving"),
        ResourceConfig::Cluster(serving_cluster("e2-highcpu-8", 3)),
    );
    inputs.observed.insert(
        image.clone(),
        serde_json::to_value(CloudBuildImageObserved {
            project: "test-project".into(),
            location: "us-central1".into(),
            build_id: "b1".into(),
            log_url: String::new(),
            source: "gs://b/o.tar.gz".into(),
            digest: format!("sha256:{}", "ab".repeat(32)),
            reference: digest.clone(),
            content_hash: "h".into(),
        })
        .unwrap(),
    );
    let mut s = serving(3);
    s.image = None;
    s.image_from = Some(image.clone());
    // The plan names the image symbolically (its digest is known only once it is built).
    let mut planned = s.clone();
    planned.image = Some(
        "us-central1-docker.pkg.dev/test-project/benchstack/tf@(digest of image.serving)".into(),
    );
    inputs.rendered = rendered_yaml(&planned, Rollout::OneAtATime);
    let applied = h
        .with(|ctx| p.create(ctx, &tf, &ResourceConfig::Serving(s), &inputs))
        .unwrap();
    assert_eq!(applied.observed["image"], digest.as_str());

    let d = emu.object("deployments", "benchstack", "tf").unwrap();
    assert_eq!(
        d["spec"]["strategy"]["rollingUpdate"],
        serde_json::json!({"maxSurge": 0, "maxUnavailable": 1})
    );
    let rendered = ServingObjects::from_yaml(&inputs.rendered[KUBERNETES_YAML]).unwrap();
    let mut expected = serde_json::to_value(&rendered.deployment.spec).unwrap();
    expected["template"]["spec"]["containers"][0]["image"] = Value::from(digest.as_str());
    let got = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(got, &expected["template"]["spec"]["containers"][0]);
    assert_eq!(
        d["spec"]["template"]["metadata"]["annotations"],
        expected["template"]["metadata"]["annotations"]
    );
    let cm = emu.object("configmaps", "benchstack", "tf").unwrap();
    assert_eq!(
        cm["data"],
        serde_json::to_value(&rendered.config_map.data).unwrap()
    );
}

#[test]
fn a_surge_pod_that_fits_no_node_fails_the_update_with_the_schedulers_message() {
    let h = Harness::new();
    let emu = highcpu_8_emulator(3);
    // No cluster configuration among the inputs: the default surge strategy.
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let tf = addr(Kind::Serving, "tf");
    let inputs = serving_inputs(&emu);
    let first = big_serving(3);
    let applied = h
        .with(|ctx| p.create(ctx, &tf, &ResourceConfig::Serving(first.clone()), &inputs))
        .unwrap();
    let mut changed = first.clone();
    changed.batching.as_mut().unwrap().max_batch_size = Some(128);
    let prior = state_of(
        tf.clone(),
        ResourceConfig::Serving(first),
        &applied.observed,
    );
    let msg = failed_message(
        h.with(|ctx| p.update(ctx, &prior, &ResourceConfig::Serving(changed), &inputs)),
    );
    assert!(
        msg.contains("is Unschedulable: 0/3 nodes are available: 3 Insufficient cpu"),
        "{msg}"
    );
    // The old replicas still serve.
    let d = emu.object("deployments", "benchstack", "tf").unwrap();
    assert_eq!(d["status"]["availableReplicas"], 3, "{}", d["status"]);
}

#[test]
fn an_image_that_does_not_exist_fails_the_rollout_at_once_naming_the_image_and_the_pull_error() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    emu.push_image("tensorflow/serving:2.19.0", false);
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let mut s = serving(2);
    s.image = Some("us-central1-docker.pkg.dev/test-project/benchstack/tf-serving:nope".into());
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(s),
            &serving_inputs(&emu),
        )
    }));
    assert!(
        msg.contains("ErrImagePull") || msg.contains("ImagePullBackOff"),
        "{msg}"
    );
    assert!(
        msg.contains("failed to resolve reference \"us-central1-docker.pkg.dev/test-project/benchstack/tf-serving:nope\""),
        "{msg}"
    );
    assert!(msg.contains("not found"), "{msg}");
    assert!(!msg.contains("did not finish within"), "{msg}");
}

#[test]
fn a_private_image_on_nodes_without_a_storage_scope_fails_with_the_registrys_403() {
    let h = Harness::new();
    let mut opts = Options::new(BIN);
    // What a node pool created through the API without oauthScopes gets: no scopes at all.
    opts.node_pools = vec![NodePool {
        cluster: String::new(),
        machine_type: "e2-standard-8".into(),
        count: 3,
        oauth_scopes: vec![],
    }];
    let emu = K8sEmulator::start(opts);
    let image = "us-central1-docker.pkg.dev/test-project/benchstack/tf-serving-regression:latest";
    emu.push_image(image, true);
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let mut s = serving(1);
    s.image = Some(image.into());
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(s),
            &serving_inputs(&emu),
        )
    }));
    assert!(msg.contains("403 Forbidden"), "{msg}");
    assert!(
        msg.contains("devstorage.read_only"),
        "the hint names the scope: {msg}"
    );
}

#[test]
fn a_crash_looping_container_fails_the_rollout_at_once() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    emu.crash_loop("tf");
    let p = KubernetesProvider::new(&emulated()).with_rollout_timeout(Duration::from_secs(60));
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(serving(1)),
            &serving_inputs(&emu),
        )
    }));
    assert!(
        msg.contains(
            "is CrashLoopBackOff: back-off 10s restarting failed container=tensorflow-serving"
        ),
        "{msg}"
    );
    assert!(msg.contains("last exited with code 1 (Error)"), "{msg}");
}

#[test]
fn a_worker_image_that_does_not_exist_fails_the_load_test_at_once_and_the_job_is_deleted() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    emu.push_image("tensorflow/serving:2.19.0", false);
    let p = KubernetesProvider::new(&emulated());
    let mut l = loadtest(2);
    // Minutes of stages: only a fail-fast ends this run quickly.
    l.stages[0].duration = Duration::from_secs(600);
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Loadtest, "baseline"),
            &ResourceConfig::Loadtest(l),
            &unreachable_target_inputs(&emu),
        )
    }));
    assert!(
        msg.starts_with("load test Job benchstack/baseline-"),
        "{msg}"
    );
    assert!(msg.contains("gcr.io/test-project/benchstack:test"), "{msg}");
    assert!(
        msg.contains("ErrImagePull") || msg.contains("ImagePullBackOff"),
        "{msg}"
    );
    assert!(msg.contains("get-credentials loadgen"), "{msg}");
    assert!(emu.names("jobs").is_empty(), "{:?}", emu.names("jobs"));
}

#[test]
fn deleting_serving_waits_until_the_load_balancer_service_is_gone() {
    let h = Harness::new();
    let mut opts = Options::new(BIN);
    opts.load_balancer_cleanup = Duration::from_millis(800);
    let emu = K8sEmulator::start(opts);
    let p = KubernetesProvider::new(&emulated());
    let tf = addr(Kind::Serving, "tf");
    let config = ResourceConfig::Serving(serving(1));
    let applied = h
        .with(|ctx| p.create(ctx, &tf, &config, &serving_inputs(&emu)))
        .unwrap();
    let svc = emu.object("services", "benchstack", "tf").unwrap();
    assert_eq!(
        svc["metadata"]["finalizers"],
        serde_json::json!(["service.kubernetes.io/load-balancer-cleanup"])
    );
    let prior = state_of(tf, config, &applied.observed);
    h.with(|ctx| p.delete(ctx, &prior)).unwrap();
    assert_eq!(emu.object("services", "benchstack", "tf"), None);
    assert!(
        h.progress()
            .iter()
            .any(|m| m.starts_with("waiting for the load balancer of Service benchstack/tf")),
        "{:?}",
        h.progress()
    );
}

#[test]
fn a_load_balancer_that_is_not_removed_in_time_fails_the_delete_with_the_gcloud_line() {
    let h = Harness::new();
    let mut opts = Options::new(BIN);
    opts.load_balancer_cleanup = Duration::from_secs(3600);
    let emu = K8sEmulator::start(opts);
    let p = KubernetesProvider::new(&emulated()).with_lb_delete_timeout(Duration::from_millis(300));
    let tf = addr(Kind::Serving, "tf");
    let config = ResourceConfig::Serving(serving(1));
    let applied = h
        .with(|ctx| p.create(ctx, &tf, &config, &serving_inputs(&emu)))
        .unwrap();
    let prior = state_of(tf, config, &applied.observed);
    let msg = h.with(|ctx| p.delete(ctx, &prior)).unwrap_err().to_string();
    assert!(
        msg.contains("Service benchstack/tf was deleted but is still there"),
        "{msg}"
    );
    assert!(
        msg.contains("service.kubernetes.io/load-balancer-cleanup"),
        "{msg}"
    );
    assert!(
        msg.contains("gcloud compute forwarding-rules list --filter='description~benchstack/tf'"),
        "{msg}"
    );
}

#[test]
fn an_interrupted_create_is_adopted_once_its_deployment_is_ready() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    let p = KubernetesProvider::new(&emulated());
    let tf = addr(Kind::Serving, "tf");
    let config = ResourceConfig::Serving(serving(1));
    let applied = h
        .with(|ctx| p.create(ctx, &tf, &config, &serving_inputs(&emu)))
        .unwrap();
    let intent = Intent {
        address: tf.clone(),
        operation: "create".into(),
        provider: "kubernetes".into(),
        config: Some(config),
        depends_on: vec![],
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        data: h.notes.lock().unwrap()[0].clone(),
        pid: 1,
        started: 0,
    };
    let adopted = h
        .with(|ctx| p.recover(ctx, &intent, None, false))
        .unwrap()
        .expect("a ready Deployment is adopted");
    assert_eq!(
        adopted["rest_endpoints"],
        applied.observed["rest_endpoints"]
    );
    assert_eq!(adopted["generation"], applied.observed["generation"]);
}

#[test]
fn a_503_reading_a_deployment_is_retried_and_a_persistent_one_is_an_error_never_a_drift() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    let tf = addr(Kind::Serving, "tf");
    let config = ResourceConfig::Serving(serving(1));
    let applied = h
        .with(|ctx| {
            KubernetesProvider::new(&emulated()).create(ctx, &tf, &config, &serving_inputs(&emu))
        })
        .unwrap();
    let prior = state_of(tf.clone(), config.clone(), &applied.observed);

    // Once: the retry gets the answer and the refresh is clean.
    let p = KubernetesProvider::new(&emulated()).with_retry_budget(Duration::from_secs(20));
    emu.unavailable_gets("deployments", "tf", 1);
    let before = emu.request_count();
    match h.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Present(o) => assert_eq!(o["name"], "tf"),
        other => panic!("expected Present, got {other:?}"),
    }
    let reads: Vec<u16> = emu.requests()[before..]
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/deployments/tf"))
        .map(|r| r.status)
        .collect();
    assert_eq!(reads, [503, 200]);

    // Persistently: an unavailable error naming the Deployment with the API's message.
    let p = KubernetesProvider::new(&emulated()).with_retry_budget(Duration::from_millis(600));
    emu.unavailable_gets("deployments", "tf", u32::MAX);
    let before = emu.request_count();
    let err = h.with(|ctx| p.read(ctx, &prior)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(err.message(), Some(K8sEmulator::UNAVAILABLE_MESSAGE));
    let text = err.to_string();
    assert!(text.contains("reading Deployment benchstack/tf"), "{text}");
    assert!(text.contains("HTTP 503"), "{text}");
    // And recovery of an interrupted update says it could not look, instead of "nothing".
    let intent = Intent {
        address: tf.clone(),
        operation: "update".into(),
        provider: "kubernetes".into(),
        config: Some(config),
        depends_on: vec![],
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        data: h.notes.lock().unwrap()[0].clone(),
        pid: 1,
        started: 0,
    };
    let err = h
        .with(|ctx| p.recover(ctx, &intent, Some(&prior), true))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        emu.requests()[before..].iter().all(|r| r.method == "GET"),
        "nothing but reads while the API is unavailable"
    );
    assert!(emu.object("deployments", "benchstack", "tf").is_some());

    // A 404 is gone, as before.
    emu.unavailable_gets("deployments", "tf", 0);
    assert!(emu.remove("deployments", "benchstack", "tf"));
    assert!(matches!(
        h.with(|ctx| p.read(ctx, &prior)).unwrap(),
        Observation::Gone(_)
    ));
}

#[test]
fn a_recovery_that_cannot_read_the_api_keeps_the_intent_and_stops_the_plan() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    let tf = addr(Kind::Serving, "tf");
    let config = ResourceConfig::Serving(serving(1));
    h.with(|ctx| {
        KubernetesProvider::new(&emulated()).create(ctx, &tf, &config, &serving_inputs(&emu))
    })
    .unwrap();
    let store = benchstack::state::Store::open(
        h.dir.path(),
        "test",
        &benchstack::state::gcs::Endpoint::Google,
    )
    .unwrap();
    store
        .put_intent(&Intent {
            address: tf.clone(),
            operation: "create".into(),
            provider: "kubernetes".into(),
            config: Some(config),
            depends_on: vec![],
            rendered: BTreeMap::new(),
            upstream: BTreeMap::new(),
            data: h.notes.lock().unwrap()[0].clone(),
            pid: 1,
            started: 0,
        })
        .unwrap();
    let providers = benchstack::provider::Providers::new(h.dir.path(), &emulated());
    emu.unavailable_gets("deployments", "tf", u32::MAX);
    let before = emu.request_count();

    let events = Mutex::new(Vec::new());
    let err = benchstack::apply::recover(&store, &providers, &|e| {
        events.lock().unwrap().push(format!("{e:?}"))
    })
    .unwrap_err();
    match &err {
        benchstack::apply::ApplyError::Recovery(failed) => {
            assert_eq!(failed.len(), 1);
            assert_eq!(failed[0].0, tf);
            assert!(
                failed[0].1.contains(K8sEmulator::UNAVAILABLE_MESSAGE),
                "{err}"
            );
        }
        other => panic!("expected a recovery error, got {other:?}"),
    }
    assert!(
        events.lock().unwrap()[0].contains("RecoveryFailed"),
        "{events:?}"
    );
    assert_eq!(store.intents().unwrap().len(), 1, "the intent is kept");
    assert!(store.resource(&tf).unwrap().is_none());
    let history = store.history().unwrap();
    assert!(
        history
            .last()
            .is_some_and(|e| e.result.starts_with("failed (the intent is kept)")),
        "{history:?}"
    );

    // A plan does not plan over it: it stops, naming the resource.
    let observer = benchstack::provider::ProviderReader {
        providers: &providers,
        state_dir: store.dir(),
    };
    let snap = store.snapshot().unwrap();
    let err = benchstack::refresh::plan(
        None,
        &snap,
        BTreeMap::new(),
        Some(&observer),
        &Default::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, benchstack::refresh::RefreshError::Recover { address, .. } if *address == tf),
        "{err:?}"
    );
    assert!(
        emu.requests()[before..].iter().all(|r| r.method == "GET"),
        "nothing but reads while the API is unavailable"
    );

    // Once the API answers, the Deployment the interrupted call made is adopted.
    emu.unavailable_gets("deployments", "tf", 0);
    benchstack::apply::recover(&store, &providers, &|_| {}).unwrap();
    assert!(store.intents().unwrap().is_empty());
    assert!(store.resource(&tf).unwrap().is_some());
}

/// The reports the workers printed, from the pod logs the emulator kept.
fn worker_reports(emu: &K8sEmulator, job: &str) -> Vec<RunReport> {
    let pods: Vec<_> = emu
        .pod_records()
        .into_iter()
        .filter(|p| p.job == job)
        .collect();
    pods.iter()
        .map(|p| {
            let log = p.log_text();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap();
            serde_json::from_str(last).unwrap_or_else(|e| panic!("{}: {e}: {log}", p.pod))
        })
        .collect()
}

/// Serving `tf` with `replicas` rolled out on the emulator, and the inputs of a load test on
/// cluster.loadgen (same emulator) against it.
fn serve_for_load_tests(
    h: &Harness,
    p: &KubernetesProvider,
    emu: &K8sEmulator,
    tf: &Address,
    replicas: u32,
) -> Inputs {
    let applied = h
        .with(|ctx| {
            p.create(
                ctx,
                tf,
                &ResourceConfig::Serving(serving(replicas)),
                &serving_inputs(emu),
            )
        })
        .unwrap();
    let mut inputs = Inputs::default();
    inputs
        .observed
        .insert(addr(Kind::Cluster, "loadgen"), gke_cluster(emu, "loadgen"));
    inputs.observed.insert(tf.clone(), applied.observed);
    inputs
}

#[test]
fn a_distributed_load_test_merges_the_reports_of_three_worker_pods() {
    let h = Harness::new();
    let (emu, stand_in) =
        K8sEmulator::with_stand_in(Path::new(BIN), &repo().join("examples/model/regression"));
    let p = KubernetesProvider::new(&emulated());

    let tf = addr(Kind::Serving, "tf");
    let inputs = serve_for_load_tests(&h, &p, &emu, &tf, 2);

    let baseline = addr(Kind::Loadtest, "baseline");
    let applied = h
        .with(|ctx| {
            p.create(
                ctx,
                &baseline,
                &ResourceConfig::Loadtest(loadtest(3)),
                &inputs,
            )
        })
        .unwrap();
    let observed = applied.observed.clone();
    let job = observed["job"].as_str().unwrap().to_string();
    assert!(job.starts_with("baseline-"), "{job}");
    assert_eq!(applied.observed["workers"], 3);
    assert_eq!(
        applied.observed["targets"],
        serde_json::json!([format!("http://{}:8501", stand_in.ip)])
    );

    let run = applied.run.expect("a load test returns its run");
    assert!(run.slos_met);
    // The run names the images it measured: what the Deployment runs and the workers' image.
    assert_eq!(
        run.images.get("serving").map(String::as_str),
        Some("tensorflow/serving:2.19.0"),
        "{:?}",
        run.images
    );
    assert_eq!(
        run.images.get("loadgen"),
        loadtest(3).loadgen_image.as_ref()
    );
    let merged: RunReport = serde_json::from_value(run.report).unwrap();
    let workers = worker_reports(&emu, &job);
    assert_eq!(workers.len(), 3);
    assert_eq!(merged.workers, 3);
    // The gang start: every worker was measured through the pod proxy and handed the start;
    // all started within the bound, so the run is valid.
    assert_eq!(run.invalid, None);
    assert_eq!(merged.invalid, None, "{:?}", merged.worker_diagnostics);
    assert_eq!(merged.worker_diagnostics.len(), 3);
    for (i, d) in merged.worker_diagnostics.iter().enumerate() {
        assert_eq!(d.index, i as u32);
        assert!(d.start_late_ms.is_some_and(|l| l < 50.0), "{d:?}");
        assert!(d.clock_offset_ms.is_some_and(|o| o.abs() < 50.0), "{d:?}");
        assert!(d.clock_rtt_ms.is_some(), "{d:?}");
        assert_eq!(d.restarts, 0);
        assert!(d.achieved_rate > 0.0, "{d:?}");
    }
    let starts: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.contains(":8089/proxy/start"))
        .collect();
    assert_eq!(starts.len(), 3, "one start per worker");
    assert!(starts.iter().all(|r| r.status == 200), "{starts:?}");

    let requests: u64 = workers.iter().map(|w| w.stages[0].requests).sum();
    assert!(requests > 0);
    assert_eq!(merged.stages[0].requests, requests);
    assert_eq!(
        merged.stages[0].errors_total, 0,
        "{:?}",
        merged.stages[0].errors
    );

    // The server's side, scraped through the API server's pod proxy at the stage's start on
    // the common schedule and after the workers finished: two serving pods, both backed by
    // the emulator's one stand-in, so each pod's page counts every request.
    let server = merged.stages[0]
        .server
        .as_ref()
        .unwrap_or_else(|| panic!("no server side: {:?}", merged.stages[0].server_note));
    assert_eq!(server.replicas, 2);
    let ok = server.requests.get("OK").copied().unwrap_or(0) as f64;
    let want = 2.0 * requests as f64;
    assert!(
        (ok - want).abs() <= 0.1 * want,
        "server OK {ok}, expected about {want}: {server:?}"
    );
    assert!(
        server
            .per_replica_share
            .iter()
            .all(|x| (0.45..=0.55).contains(x)),
        "{server:?}"
    );
    assert!(server.runtime_ms.is_some(), "{server:?}");
    // CPU from each pod's kubelet (cAdvisor, through the node proxy): the emulator's
    // containers each use CADVISOR_CORES; without a CPU limit there are no CFS periods.
    let cpu = server.cpu_cores.unwrap_or_else(|| panic!("{server:?}"));
    let want_cpu = 2.0 * k8s_emulator::CADVISOR_CORES;
    assert!(
        (cpu - want_cpu).abs() <= 0.1 * want_cpu,
        "cpu {cpu}: {server:?}"
    );
    assert_eq!(server.cpu_throttled_ratio, None);
    let proxied = emu
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET"
                && r.path.starts_with("/api/v1/namespaces/benchstack/pods/tf-")
                && r.path
                    .ends_with(":8501/proxy/monitoring/prometheus/metrics")
                && r.status == 200
        })
        .count();
    assert!(proxied >= 4, "two scrapes of two pods: {proxied}");

    // The merged histogram is the union of the workers': counts add up, the max is theirs.
    let merged_hist = decode_histogram(&merged.stages[0].histogram).unwrap();
    let hists: Vec<_> = workers
        .iter()
        .map(|w| decode_histogram(&w.stages[0].histogram).unwrap())
        .collect();
    assert_eq!(
        merged_hist.len(),
        hists.iter().map(|h| h.len()).sum::<u64>()
    );
    assert_eq!(
        merged_hist.max(),
        hists.iter().map(|h| h.max()).max().unwrap()
    );

    // Each pod got its own index and the whole spec.
    let mut indexes: Vec<u32> = emu
        .pod_records()
        .iter()
        .filter(|p| p.job == job)
        .map(|p| p.index)
        .collect();
    indexes.sort();
    assert_eq!(indexes, [0, 1, 2]);
    assert!(
        h.progress().iter().any(|m| m.contains("workers running")),
        "{:?}",
        h.progress()
    );

    // The Job is gone afterwards, and nothing of the run lives on.
    assert!(emu.names("jobs").is_empty(), "{:?}", emu.names("jobs"));
    let delete = emu
        .requests()
        .into_iter()
        .find(|r| r.method == "DELETE" && r.path.ends_with(&format!("/jobs/{job}")))
        .expect("the Job was deleted");
    assert!(
        delete.body.contains("\"propagationPolicy\":\"Background\""),
        "{}",
        delete.body
    );
    let prior = state_of(baseline, ResourceConfig::Loadtest(loadtest(3)), &observed);
    match h.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Present(o) => assert_eq!(o["job"], job.as_str()),
        other => panic!("expected Present, got {other:?}"),
    }
    h.with(|ctx| p.delete(ctx, &prior)).unwrap();
}

#[test]
fn a_failed_worker_fails_the_run_naming_its_pod_and_last_log_line_and_the_job_is_deleted() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    emu.fail_worker(1, "worker 1: cannot reach the target: connection refused");
    let p = KubernetesProvider::new(&emulated());
    // Nothing listens there: the run must fail on the broken worker, not on the others.
    let inputs = unreachable_target_inputs(&emu);
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Loadtest, "baseline"),
            &ResourceConfig::Loadtest(loadtest(3)),
            &inputs,
        )
    }));
    let failed_pod = emu
        .pod_records()
        .into_iter()
        .find(|p| p.index == 1)
        .expect("a pod for worker 1");
    assert!(
        msg.contains(&format!("pod {} (worker 1): Failed", failed_pod.pod)),
        "{msg}"
    );
    assert!(msg.contains("exit code 1 (Error)"), "{msg}");
    assert!(
        msg.contains("last log line: worker 1: cannot reach the target: connection refused"),
        "{msg}"
    );
    assert!(emu.names("jobs").is_empty(), "{:?}", emu.names("jobs"));
    assert!(emu.names("pods").is_empty(), "{:?}", emu.names("pods"));
    assert_eq!(emu.running_processes(), 0);
}

/// Load-test inputs whose target nothing listens on: for runs that fail or are stopped.
fn unreachable_target_inputs(emu: &K8sEmulator) -> Inputs {
    let mut inputs = Inputs::default();
    inputs
        .observed
        .insert(addr(Kind::Cluster, "loadgen"), gke_cluster(emu, "loadgen"));
    inputs.observed.insert(
        addr(Kind::Serving, "tf"),
        serde_json::json!({
            "rest_endpoints": ["http://127.0.0.1:9"],
            "grpc_endpoints": ["127.0.0.1:9"],
        }),
    );
    inputs
}

#[test]
fn a_cancelled_load_test_stops_between_polls_and_deletes_its_job() {
    let mut h = Harness::new();
    h.cancel_on = Some("workers running");
    let emu = K8sEmulator::start(Options::new(BIN));
    let p = KubernetesProvider::new(&emulated());
    let result = h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Loadtest, "baseline"),
            &ResourceConfig::Loadtest(loadtest(2)),
            &unreachable_target_inputs(&emu),
        )
    });
    assert!(
        matches!(result, Err(ProviderError::Interrupted)),
        "{:?}",
        result.map(|a| a.observed)
    );
    assert_eq!(emu.pod_records().len(), 2, "the Job had started its pods");
    assert!(emu.names("jobs").is_empty(), "{:?}", emu.names("jobs"));
    assert_eq!(emu.running_processes(), 0);
}

#[test]
fn a_cancelled_rollout_wait_stops_with_interrupted_and_recovery_adopts_nothing_unready() {
    let mut h = Harness::new();
    h.cancel_on = Some("rollout");
    let emu = K8sEmulator::start(Options::new(BIN));
    emu.never_ready("tf");
    let p = KubernetesProvider::new(&emulated());
    let tf = addr(Kind::Serving, "tf");
    let config = ResourceConfig::Serving(serving(2));
    let result = h.with(|ctx| p.create(ctx, &tf, &config, &serving_inputs(&emu)));
    assert!(
        matches!(result, Err(ProviderError::Interrupted)),
        "{:?}",
        result.map(|a| a.observed)
    );
    // What the interrupted create applied is not adopted (not ready), and apply removes it.
    let intent = Intent {
        address: tf,
        operation: "create".into(),
        provider: "kubernetes".into(),
        config: Some(config),
        depends_on: vec![],
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        data: h.notes.lock().unwrap()[0].clone(),
        pid: 1,
        started: 0,
    };
    h.cancel.store(false, Ordering::SeqCst);
    assert_eq!(
        h.with(|ctx| p.recover(ctx, &intent, None, false)).unwrap(),
        None
    );
    assert!(
        emu.object("deployments", "benchstack", "tf").is_some(),
        "plan touches nothing"
    );
    assert_eq!(
        h.with(|ctx| p.recover(ctx, &intent, None, true)).unwrap(),
        None
    );
    assert_eq!(emu.object("deployments", "benchstack", "tf"), None);
    assert_eq!(emu.object("services", "benchstack", "tf"), None);
}

/// A key file for `google`'s token endpoint, in `dir`.
fn key_file(google: &GoogleAuthEmulator, dir: &Path) -> PathBuf {
    let key = google.service_account_key("bench@test-project.iam.gserviceaccount.com");
    let path = dir.join("key.json");
    std::fs::write(&path, key.json.to_string()).unwrap();
    path
}

#[test]
fn with_google_credentials_a_loopback_endpoint_is_still_reached_over_https_trusting_the_cluster_ca()
{
    use base64::Engine as _;
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    let google = GoogleAuthEmulator::start();
    let keys = tempfile::tempdir().unwrap();
    let mut cluster: GkeClusterObserved =
        serde_json::from_value(gke_cluster(&emu, "serving")).unwrap();
    // Real GKE records a bare address (here the emulator's, on loopback): with Google's
    // credentials that is https, and the emulator speaks only http.
    assert!(!cluster.endpoint.contains("://"), "{}", cluster.endpoint);
    cluster.ca_certificate = base64::engine::general_purpose::STANDARD.encode(TEST_CA_PEM);
    let mut inputs = serving_inputs(&emu);
    inputs.observed.insert(
        addr(Kind::Cluster, "serving"),
        serde_json::to_value(&cluster).unwrap(),
    );
    let google_apis = Apis::google(AuthEnv {
        // No gke-gcloud-auth-plugin there: the key is exchanged for a token.
        path: Some(keys.path().as_os_str().to_owned()),
        credentials_file: Some(key_file(&google, keys.path())),
    });
    let p = KubernetesProvider::new(&google_apis);
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(serving(1)),
            &inputs,
        )
    }));
    assert!(msg.starts_with("applying Namespace benchstack:"), "{msg}");
    // rustls read the emulator's plain-HTTP answer as a TLS record: the client spoke TLS.
    assert!(msg.contains("InvalidContentType"), "{msg}");
    assert_eq!(
        emu.request_count(),
        0,
        "a TLS handshake is not an HTTP request"
    );
    assert_eq!(google.token_requests().len(), 1, "the key was exchanged");

    // A damaged CA is refused before anything is sent.
    cluster.ca_certificate = "not base64!".into();
    inputs.observed.insert(
        addr(Kind::Cluster, "serving"),
        serde_json::to_value(&cluster).unwrap(),
    );
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(serving(1)),
            &inputs,
        )
    }));
    assert!(msg.contains("the cluster CA is not base64"), "{msg}");
}

#[test]
fn apis_from_an_emulated_environment_reach_the_cluster_over_plain_http_and_ask_no_token() {
    let h = Harness::new();
    let emu = K8sEmulator::start(Options::new(BIN));
    // The environment names an emulator and a key (see `setup`): everything is anonymous.
    let apis = Apis::from_env();
    let p = KubernetesProvider::new(&apis);
    h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Serving, "tf"),
            &ResourceConfig::Serving(serving(1)),
            &serving_inputs(&emu),
        )
    })
    .unwrap();
    assert!(emu.request_count() > 0, "plain HTTP reached the emulator");
    assert!(
        emu.requests().iter().all(|r| r.authorization.is_none()),
        "no credentials were sent"
    );
    assert!(SHARED_GOOGLE.0.token_requests().is_empty());
}

#[test]
fn a_grpc_load_test_sends_to_the_service_grpc_port() {
    let h = Harness::new();
    let (emu, stand_in) =
        K8sEmulator::with_stand_in(Path::new(BIN), &repo().join("examples/model/regression"));
    let p = KubernetesProvider::new(&emulated());
    let tf = addr(Kind::Serving, "tf");
    let inputs = serve_for_load_tests(&h, &p, &emu, &tf, 1);
    let mut config = loadtest(2);
    config.protocol = Protocol::Grpc;
    config.stages[0].rate = Rate::PerSecond(60.0);
    config.stages[0].duration = Duration::from_secs(1);
    let applied = h
        .with(|ctx| {
            p.create(
                ctx,
                &addr(Kind::Loadtest, "grpc"),
                &ResourceConfig::Loadtest(config),
                &inputs,
            )
        })
        .unwrap();
    let target = format!("grpc://{}:8500", stand_in.ip);
    assert_eq!(applied.observed["targets"], serde_json::json!([target]));
    let merged: RunReport = serde_json::from_value(applied.run.unwrap().report).unwrap();
    assert_eq!(merged.protocol, Protocol::Grpc);
    assert_eq!(merged.workers, 2);
    assert!(merged.stages[0].requests > 0);
    assert_eq!(
        merged.stages[0].errors_total, 0,
        "{:?}",
        merged.stages[0].errors
    );
}

#[test]
fn a_worker_whose_pod_vanished_fails_the_run_naming_the_missing_index() {
    let h = Harness::new();
    let (emu, _stand_in) =
        K8sEmulator::with_stand_in(Path::new(BIN), &repo().join("examples/model/regression"));
    emu.vanish_worker(1);
    let p = KubernetesProvider::new(&emulated());
    let tf = addr(Kind::Serving, "tf");
    let inputs = serve_for_load_tests(&h, &p, &emu, &tf, 1);
    let mut config = loadtest(2);
    config.stages[0].rate = Rate::PerSecond(40.0);
    config.stages[0].duration = Duration::from_secs(1);
    let msg = failed_message(h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Loadtest, "baseline"),
            &ResourceConfig::Loadtest(config),
            &inputs,
        )
    }));
    assert!(
        msg.contains("reports success but no succeeded pod has worker index 1"),
        "{msg}"
    );
    assert!(msg.contains("no pod for worker 1"), "{msg}");
    assert!(emu.names("jobs").is_empty(), "{:?}", emu.names("jobs"));
}

/// A 2-worker load test of 40 req/s for a second against one serving replica.
fn short_distributed_run(emu: &K8sEmulator, h: &Harness, p: &KubernetesProvider) -> Applied {
    let tf = addr(Kind::Serving, "tf");
    let inputs = serve_for_load_tests(h, p, emu, &tf, 1);
    let mut config = loadtest(2);
    config.stages[0].rate = Rate::PerSecond(40.0);
    config.stages[0].duration = Duration::from_secs(1);
    h.with(|ctx| {
        p.create(
            ctx,
            &addr(Kind::Loadtest, "baseline"),
            &ResourceConfig::Loadtest(config),
            &inputs,
        )
    })
    .unwrap()
}

#[test]
fn a_worker_pod_that_starts_late_makes_the_run_invalid_with_the_reason() {
    let h = Harness::new();
    let (emu, _stand_in) =
        K8sEmulator::with_stand_in(Path::new(BIN), &repo().join("examples/model/regression"));
    // Past the gang's 5 s wait: the others start without it, and it starts when it can.
    emu.delay_worker(1, Duration::from_millis(6500));
    let p = KubernetesProvider::new(&emulated());
    let run = short_distributed_run(&emu, &h, &p).run.unwrap();
    let report: RunReport = serde_json::from_value(run.report).unwrap();
    let why = run.invalid.clone().expect("the run is invalid");
    assert_eq!(report.invalid.as_deref(), Some(why.as_str()));
    assert!(
        why.contains("worker 1 was not ready at the common start"),
        "{why}"
    );
    assert!(!why.contains("worker 0"), "{why}");
    // Stored and shown: both workers' reports are merged, with worker 1's lateness.
    assert_eq!(report.workers, 2);
    let late = report.worker_diagnostics[1].start_late_ms.unwrap();
    assert!(late > 500.0, "{:?}", report.worker_diagnostics);
    assert!(report.worker_diagnostics[0].start_late_ms.unwrap() < 50.0);
    let table = benchstack::report::stage_table(&report);
    assert!(
        table.contains("INVALID RUN: worker 1 was not ready"),
        "{table}"
    );
    assert!(emu.names("jobs").is_empty());
}

#[test]
fn a_worker_killed_mid_run_is_replaced_and_the_run_is_invalid_as_restarted() {
    let h = Harness::new();
    let (emu, _stand_in) =
        K8sEmulator::with_stand_in(Path::new(BIN), &repo().join("examples/model/regression"));
    // The Job controller's 10 s back-off, scaled down.
    emu.set_job_backoff(Duration::from_millis(300));
    emu.kill_worker(1, Duration::from_millis(300));
    let p = KubernetesProvider::new(&emulated());
    let run = short_distributed_run(&emu, &h, &p).run.unwrap();
    let report: RunReport = serde_json::from_value(run.report).unwrap();
    let why = run.invalid.expect("the run is invalid");
    assert!(why.contains("worker 1 restarted 1 time(s)"), "{why}");
    let pods: Vec<_> = emu
        .pod_records()
        .into_iter()
        .filter(|r| r.index == 1)
        .collect();
    assert_eq!(pods.len(), 2, "the Job replaced the killed pod: {pods:?}");
    assert_eq!(report.worker_diagnostics[1].restarts, 1);
    assert_eq!(report.worker_diagnostics[1].pod, pods[1].pod);
    assert_eq!(report.worker_diagnostics[0].restarts, 0);
}
