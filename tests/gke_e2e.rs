//! End to end: `stacks/gke.hcl` applied through the binary against the loopback GKE and
//! Kubernetes emulators (driven by the real google-cloud-container-v1 and kube clients):
//! both clusters are created, serving is rolled out behind a LoadBalancer whose address is a
//! real `benchstack serve`, and the distributed load test runs as an Indexed Job whose pods
//! are real `benchstack worker` processes; then an empty plan, an in-place update, a
//! replacement, and destroy.

#[path = "support/cloudbuild_emulator.rs"]
mod cloudbuild_emulator;
#[path = "support/fake_gcs.rs"]
mod fake_gcs;
#[path = "support/gke_emulator.rs"]
mod gke_emulator;
#[path = "support/google_auth_emulator.rs"]
mod google_auth_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;
#[path = "support/k8s_emulator.rs"]
mod k8s_emulator;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cloudbuild_emulator::CloudBuildEmulator;
use fake_gcs::FakeGcs;
use gke_emulator::GkeEmulator;
use google_auth_emulator::GoogleAuthEmulator;
use k8s_emulator::{K8sEmulator, NodePool, NodeSource, Options, StandIn};

const BIN: &str = env!("CARGO_BIN_EXE_benchstack");
const PROJECT: &str = "bench-test";
/// The images stacks/gke.hcl builds for project bench-test (deployed by digest).
const SERVING_IMAGE: &str =
    "us-central1-docker.pkg.dev/bench-test/benchstack/tf-serving-regression";

/// A checkout-shaped directory for stacks/gke.hcl: `stacks/gke.hcl` (copied, with `edits`
/// applied), `examples/model` (a small SavedModel and the request data), and the worker's build context
/// (`..`): deploy/loadgen.Dockerfile, .dockerignore and a small source file, so that the
/// worker image's context is this directory, not the repository tests run in.
pub fn checkout(dir: &Path, edits: &[(&str, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir.join("stacks")).unwrap();
    std::fs::create_dir_all(dir.join("deploy")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    // The model the serving image carries: the small fixture SavedModel (the serving pods are
    // the stand-in, which serves the example model itself), so each serving rebuild uploads
    // little. gke_images_e2e.rs builds with the example model (a resumable upload).
    let model = dir.join("examples/model/regression/1");
    if !model.exists() {
        std::fs::create_dir_all(&model).unwrap();
        std::fs::copy(
            repo().join("tests/fixtures/model/regression/1/saved_model.pb"),
            model.join("saved_model.pb"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            repo().join("examples/model/test.csv"),
            dir.join("examples/model/test.csv"),
        )
        .unwrap();
    }
    for f in ["deploy/loadgen.Dockerfile", ".dockerignore"] {
        std::fs::copy(repo().join(f), dir.join(f)).unwrap();
    }
    if !dir.join("src/main.rs").exists() {
        std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    }
    let mut text = std::fs::read_to_string(repo().join("stacks/gke.hcl")).unwrap();
    for (from, to) in edits {
        assert!(text.contains(from), "stacks/gke.hcl no longer has {from:?}");
        text = text.replace(from, to);
    }
    let stack = dir.join("stacks/gke.hcl");
    std::fs::write(&stack, text).unwrap();
    stack
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct World {
    gke: Arc<GkeEmulator>,
    k8s: K8sEmulator,
    gcs: FakeGcs,
    cb: CloudBuildEmulator,
    _stand_in: StandIn,
    /// The token endpoint of the key `GOOGLE_APPLICATION_CREDENTIALS` names: with every API
    /// emulated, nothing may ask it for a token.
    google: GoogleAuthEmulator,
    key: PathBuf,
    dir: tempfile::TempDir,
    /// The stack file applied: a copy of the shipped one in a checkout-shaped directory.
    stack: PathBuf,
}

impl World {
    /// Both clusters' API servers are one emulator: its nodes are the GKE node pools (machine
    /// type, count and OAuth scopes as the GKE API stored them), serving pods run on
    /// cluster serving's nodes and worker pods on cluster loadgen's; the registry holds the
    /// stack's two images, private as a user's Artifact Registry repository is.
    fn start() -> World {
        let stand_in = StandIn::start(
            Path::new(BIN),
            "regression",
            &repo().join("examples/model/regression"),
        );
        let gke = Arc::new(GkeEmulator::start());
        let mut opts = Options::new(BIN);
        opts.load_balancer_ip = stand_in.ip.clone();
        let pools = gke.clone();
        opts.node_source = Some(NodeSource(Arc::new(move || {
            ["serving", "loadgen"]
                .iter()
                .flat_map(|c| {
                    pools
                        .node_pools(c)
                        .iter()
                        .map(|p| NodePool::from_gke(c, p))
                        .collect::<Vec<_>>()
                })
                .collect()
        })));
        opts.placement.insert("Deployment".into(), "serving".into());
        opts.placement.insert("Job".into(), "loadgen".into());
        // The images are built by apply: the registry holds whatever Cloud Build pushed.
        let k8s = K8sEmulator::start(opts);
        gke.set_cluster_endpoint(&k8s.endpoint());
        let gcs = FakeGcs::start();
        let cb = CloudBuildEmulator::start(&gcs.url());
        let dir = tempfile::tempdir().unwrap();
        let stack = checkout(&dir.path().join("checkout"), &[]);
        let google = GoogleAuthEmulator::start();
        let key = dir.path().join("key.json");
        let key_json = google.service_account_key("bench@bench-test.iam.gserviceaccount.com");
        std::fs::write(&key, key_json.json.to_string()).unwrap();
        World {
            google,
            key,
            gke,
            k8s,
            gcs,
            cb,
            _stand_in: stand_in,
            dir,
            stack,
        }
    }

    /// Runs benchstack on the stack's state with short stages at 5% of the rates.
    fn run(&self, args: &[&str], vars: &[&str]) -> (i32, String, String) {
        let mut c = Command::new(BIN);
        c.arg("--state")
            .arg(self.dir.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .env("BENCHSTACK_GKE_ENDPOINT", self.gke.url())
            .env("BENCHSTACK_CLOUDBUILD_ENDPOINT", self.cb.url())
            .env("BENCHSTACK_ARTIFACTREGISTRY_ENDPOINT", self.cb.url())
            .env("BENCHSTACK_STORAGE_ENDPOINT", self.gcs.url())
            .env("BENCHSTACK_POLL_INTERVAL", "20ms")
            .env("BENCHSTACK_WORKER_START_DELAY", "5s")
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.key)
            .current_dir(self.dir.path());
        if matches!(args.first(), Some(&"plan") | Some(&"apply")) {
            c.arg(&self.stack);
            c.args([
                "--var",
                &format!("project={PROJECT}"),
                "--var",
                "stage_duration=1s",
            ]);
            // Debug builds on a shared 2-core machine: the SLO is not what is tested here.
            c.args(["--var", "rate_scale=0.05", "--var", "slo_p99=10s"]);
            for v in vars {
                c.args(["--var", v]);
            }
        }
        let out = c.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Applies from now on the copy of stacks/gke.hcl with `from` replaced by `to`.
    fn edit_stack(&mut self, from: &str, to: &str) {
        self.stack = checkout(&self.dir.path().join("checkout"), &[(from, to)]);
    }
}

#[test]
fn gke_stack_applies_plans_clean_updates_replaces_and_destroys() {
    let mut w = World::start();

    let (code, out, err) = w.run(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    for line in [
        "cluster.serving will be created",
        "cluster.loadgen will be created",
        "serving.tf will be created",
        "loadtest.baseline will run",
    ] {
        assert!(out.contains(line), "{line} missing from the plan:\n{out}");
    }

    // No e2-highcpu-8 node has room for a second 6-CPU replica: updates roll one at a time.
    assert!(
        err.contains(
            "serving.tf: updates roll one replica at a time (maxSurge 0, maxUnavailable 1)"
        ),
        "{err}"
    );

    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.gke.cluster_count(), 2);
    // The serving pods pulled the private image on cluster serving's nodes, one per node.
    let serving_pods: Vec<serde_json::Value> = w
        .k8s
        .pods("benchstack")
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/component"] == "serving")
        .collect();
    assert_eq!(serving_pods.len(), 3);
    let mut nodes = std::collections::BTreeSet::new();
    for p in &serving_pods {
        assert_eq!(p["status"]["phase"], "Running", "{p}");
        let image = p["status"]["containerStatuses"][0]["image"]
            .as_str()
            .unwrap();
        assert!(
            image.starts_with(&format!("{SERVING_IMAGE}@sha256:")),
            "by the digest Cloud Build pushed: {image}"
        );
        let node = p["spec"]["nodeName"].as_str().unwrap();
        assert!(node.starts_with("gke-serving-"), "{node}");
        nodes.insert(node.to_string());
    }
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let deployment = w
        .k8s
        .object("deployments", "benchstack", "tf")
        .expect("the Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(args.contains("--enable_batching=true"), "{args}");

    // The stored run merges the four workers: its request count is the sum of theirs.
    let (code, runs, err) = w.run(&["results", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let run = &runs.as_array().expect("a list of runs")[0];
    let report = &run["report"];
    assert_eq!(report["workers"], 4, "{report}");
    let merged: u64 = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .sum();
    let from_pods: u64 = w
        .k8s
        .pod_records()
        .iter()
        .map(|p| {
            let last = p.log_text().lines().last().unwrap_or_default().to_string();
            let r: serde_json::Value = serde_json::from_str(&last).expect("a worker report");
            r["stages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["requests"].as_u64().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(merged, from_pods);
    assert_eq!(merged, 15 + 195, "5% of 300 and 3900 req/s for 1 s each");

    let (code, out, err) = w.run(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(code, 0, "nothing to do after apply:\n{out}\n{err}");
    assert!(
        !err.contains("updates roll one replica"),
        "no rollout, no word on how it rolls: {err}"
    );

    // A batching change edits the ConfigMap and rolls every replica (no node has room for a
    // surge pod, so one at a time), then the load test re-runs.
    w.edit_stack("max_batch_size       = 8000", "max_batch_size       = 4000");
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("serving.tf will be updated in place"), "{out}");
    let cm = w.k8s.object("configmaps", "benchstack", "tf").unwrap();
    assert!(
        cm["data"]["batching_parameters.txt"]
            .as_str()
            .unwrap()
            .contains("max_batch_size { value: 4000 }"),
        "{cm}"
    );
    let d = w.k8s.object("deployments", "benchstack", "tf").unwrap();
    assert_eq!(d["status"]["updatedReplicas"], 3, "{}", d["status"]);
    assert_eq!(d["status"]["availableReplicas"], 3, "{}", d["status"]);

    // Fewer replicas: the Deployment is updated in place, the load test re-runs.
    let (code, out, err) = w.run(&["plan", "--detailed-exitcode"], &["replicas=2"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("serving.tf will be updated in place"), "{out}");
    assert!(out.contains("      ~ replicas = 3 -> 2\n"), "{out}");
    assert!(
        out.contains("+++ b/kubernetes.yaml"),
        "the objects diff: {out}"
    );
    assert!(out.contains("+  replicas: 2"), "{out}");
    assert!(out.contains("loadtest.baseline will run"), "{out}");
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &["replicas=2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let deployment = w.k8s.object("deployments", "benchstack", "tf").unwrap();
    assert_eq!(deployment["spec"]["replicas"], 2);

    // Another machine type replaces the serving cluster, and what runs on it.
    let n2 = ["replicas=2", "serving_machine_type=n2-highcpu-8"];
    let (code, out, err) = w.run(&["plan", "--detailed-exitcode"], &n2);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("cluster.serving will be replaced: machine_type changed"),
        "{out}"
    );
    assert!(
        out.contains("-/+ cluster \"serving\" {\n      ~ machine_type = \"e2-highcpu-8\" -> \"n2-highcpu-8\" # forces replacement\n"),
        "{out}"
    );
    assert!(
        out.contains("serving.tf will be replaced: cluster.serving is replaced"),
        "{out}"
    );
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &n2);
    assert_eq!(code, 0, "{out}\n{err}");
    let serving = w
        .gke
        .cluster("bench-test", "us-central1-a", "serving")
        .unwrap();
    assert_eq!(
        serving["nodePools"][0]["config"]["machineType"], "n2-highcpu-8",
        "{serving}"
    );

    let (code, out, err) = w.run(&["destroy", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.gke.cluster_count(), 0);
    assert!(w.k8s.names("deployments").is_empty());
    // The LoadBalancer Service was gone (its finalizer removed) before its cluster was deleted.
    assert!(w.k8s.names("services").is_empty());
    let (_, list, _) = w.run(&["state", "list"], &[]);
    assert!(
        list.trim().is_empty() || !list.contains("cluster."),
        "{list}"
    );
    // Emulated APIs are anonymous: the key at hand was never exchanged for a token (the
    // clusters' Kubernetes API included: plain HTTP, no credentials).
    assert!(w.google.token_requests().is_empty());
    assert!(w.k8s.requests().iter().all(|r| r.authorization.is_none()));
}

#[test]
fn a_failed_worker_pod_fails_the_apply_keeps_the_state_and_the_next_plan_reruns_only_the_test() {
    let w = World::start();
    w.k8s
        .fail_worker(2, "error: cannot connect to grpc://10.0.0.7:8500");
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("worker 2") || out.contains("-2-"),
        "names the pod: {out}"
    );
    assert!(
        out.contains("cannot connect to grpc://10.0.0.7:8500"),
        "{out}"
    );

    // Both clusters and serving stand; only the load test is left to do.
    let (code, out, err) = w.run(&["plan", "--detailed-exitcode"], &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("loadtest.baseline will run"), "{out}");
    assert!(
        out.contains("Plan: 0 to create, 0 to update, 0 to replace, 0 to delete, 1 to run."),
        "{out}"
    );
    let (code, out, err) = w.run(&["destroy", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.gke.cluster_count(), 0);
}

#[test]
fn an_image_that_does_not_exist_fails_the_apply_naming_the_image_and_the_pull_error() {
    let mut w = World::start();
    let _ = &w.gcs;
    // A serving image given as a reference string nothing was pushed to (the registry holds
    // only what Cloud Build pushes). The rollout timeout stays at its default (10 minutes):
    // only the pods' own verdict ends this apply early.
    w.k8s.push_image(
        "us-central1-docker.pkg.dev/bench-test/other/unrelated:1",
        true,
    );
    w.stack = checkout(
        &w.dir.path().join("checkout"),
        &[
            (
                "  image    = image.serving",
                "  image    = \"europe-west4-docker.pkg.dev/bench-test/benchstack/tf-serving-regression:latest\"",
            ),
            // image.serving, no longer used by serving.tf, is a plain build.
            (
                "  preset     = \"serving\"\n  base_image = var.tf_serving_image",
                "  context    = \"..\"\n  dockerfile = \"deploy/loadgen.Dockerfile\"",
            ),
        ],
    );
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    let text = flat(&format!("{out}\n{err}"));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "failed to resolve reference \"europe-west4-docker.pkg.dev/bench-test/benchstack/tf-serving-regression:latest\""
        ),
        "{text}"
    );
    assert!(text.contains("not found"), "{text}");
    assert!(
        text.contains("ErrImagePull") || text.contains("ImagePullBackOff"),
        "{text}"
    );
    assert!(!text.contains("did not finish within"), "{text}");
    assert!(
        text.contains("gcloud container clusters get-credentials serving --location us-central1-a --project bench-test"),
        "{text}"
    );
    let (code, out, err) = w.run(&["destroy", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.gke.cluster_count(), 0);
}

/// `benchstack plan stacks/gke.hcl` on an empty state (nothing remote is read).
fn plan_only(vars: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Command::new(BIN);
    c.arg("--state")
        .arg(dir.path().join("state"))
        .arg("plan")
        .arg(repo().join("stacks/gke.hcl"))
        .args(["--var", &format!("project={PROJECT}")])
        .stdin(Stdio::null())
        .env("BENCHSTACK_GKE_ENDPOINT", "http://127.0.0.1:9")
        .current_dir(dir.path());
    for v in vars {
        c.args(["--var", v]);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// miette's report without its wrapping and gutter.
fn flat(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn plan_refuses_replicas_that_cannot_fit_the_clusters_nodes_at_the_serving_block() {
    let (code, out, err) = plan_only(&["replicas=4"]);
    let err = flat(&err);
    assert_eq!(code, 1, "{out}\n{err}");
    let text = std::fs::read_to_string(repo().join("stacks/gke.hcl")).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("serving \"tf\""))
        .unwrap()
        + 1;
    assert!(err.contains(&format!("gke.hcl:{line}:")), "{err}");
    assert!(
        err.contains(
            "4 replicas requesting 6 CPU and 4.00 GiB each do not fit on 3 × e2-highcpu-8"
        ),
        "{err}"
    );
    assert!(err.contains("only 3 would be scheduled"), "{err}");
}

#[test]
fn plan_warns_that_an_unknown_machine_type_skips_the_capacity_check() {
    let (code, out, err) = plan_only(&["serving_machine_type=e2-medium"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let err = flat(&err);
    assert!(
        err.contains("machine type e2-medium is not in benchstack's table"),
        "{err}"
    );
}
