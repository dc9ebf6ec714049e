//! End to end: `stacks/gke.hcl` applied through the binary against the loopback GKE and
//! Kubernetes emulators (driven by the real google-cloud-container-v1 and kube clients):
//! both clusters are created, serving is rolled out behind a LoadBalancer whose address is a
//! real `benchstack serve`, and the distributed load test runs as an Indexed Job whose pods
//! are real `benchstack worker` processes; then an empty plan, an in-place update, a
//! replacement, and destroy.

#[path = "support/gke_emulator.rs"]
mod gke_emulator;
#[path = "support/k8s_emulator.rs"]
mod k8s_emulator;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gke_emulator::GkeEmulator;
use k8s_emulator::{K8sEmulator, StandIn};

const BIN: &str = env!("CARGO_BIN_EXE_benchstack");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct World {
    gke: GkeEmulator,
    k8s: K8sEmulator,
    _stand_in: StandIn,
    dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let (k8s, stand_in) =
            K8sEmulator::with_stand_in(Path::new(BIN), &repo().join("examples/model/regression"));
        let gke = GkeEmulator::start();
        gke.set_cluster_endpoint(&k8s.url());
        World {
            gke,
            k8s,
            _stand_in: stand_in,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Runs benchstack on stacks/gke.hcl's state with short stages at 5% of the rates.
    fn run(&self, args: &[&str], vars: &[&str]) -> (i32, String, String) {
        let mut c = Command::new(BIN);
        c.arg("--state")
            .arg(self.dir.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .env("BENCHSTACK_GKE_ENDPOINT", self.gke.url())
            .env("BENCHSTACK_POLL_INTERVAL", "20ms")
            .env("BENCHSTACK_WORKER_START_DELAY", "1s")
            .current_dir(self.dir.path());
        if matches!(args.first(), Some(&"plan") | Some(&"apply")) {
            c.arg(repo().join("stacks/gke.hcl"));
            c.args(["--var", "project=bench-test", "--var", "stage_duration=1s"]);
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
}

#[test]
fn gke_stack_applies_plans_clean_updates_replaces_and_destroys() {
    let w = World::start();

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

    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.gke.cluster_count(), 2);
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
    let (_, list, _) = w.run(&["state", "list"], &[]);
    assert!(
        list.trim().is_empty() || !list.contains("cluster."),
        "{list}"
    );
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
