//! End to end through the binary: a GKE stack whose serving images are `image` blocks, applied
//! against loopback emulators of GKE, Kubernetes, Cloud Build, Artifact Registry and Cloud
//! Storage (fake-gcs-server), driven by the real clients. The first apply builds both images,
//! records their digests and deploys by digest; a second plan builds nothing; a changed file
//! in one context plans that rebuild and rolls only the Deployment that uses it; a failing
//! build exits 1 with its step and log tail and leaves the Deployment that uses it as it was.

#[path = "support/cloudbuild_emulator.rs"]
mod cloudbuild_emulator;
#[path = "support/fake_gcs.rs"]
mod fake_gcs;
#[path = "support/gke_emulator.rs"]
mod gke_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;
#[path = "support/k8s_emulator.rs"]
mod k8s_emulator;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cloudbuild_emulator::CloudBuildEmulator;
use fake_gcs::FakeGcs;
use gke_emulator::GkeEmulator;
use k8s_emulator::{K8sEmulator, StandIn};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_benchstack");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct World {
    gcs: FakeGcs,
    cb: CloudBuildEmulator,
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
        gke.set_cluster_endpoint(&k8s.endpoint());
        let gcs = FakeGcs::start();
        let cb = CloudBuildEmulator::start(&gcs.url());
        let dir = tempfile::tempdir().unwrap();
        for ctx in ["serving-ctx", "other-ctx"] {
            let c = dir.path().join(ctx);
            std::fs::create_dir_all(&c).unwrap();
            std::fs::write(
                c.join("Dockerfile"),
                "FROM tensorflow/serving:2.19.0\nCOPY model.txt /models/\n",
            )
            .unwrap();
            std::fs::write(c.join("model.txt"), "v1").unwrap();
        }
        let stack = format!(
            r#"
cluster "gke" {{
  provider     = "gke"
  project      = "bench-proj"
  location     = "us-central1-a"
  machine_type = "e2-highcpu-8"
  node_count   = 2
}}

model "regression" {{
  base_path = "{model}"
}}

image "serving" {{
  repository = "us-central1-docker.pkg.dev/bench-proj/benchstack"
  name       = "tf-serving"
  context    = "serving-ctx"
}}

image "other" {{
  repository = "us-central1-docker.pkg.dev/bench-proj/benchstack"
  name       = "tf-serving-other"
  context    = "other-ctx"
}}

serving "tf" {{
  cluster = cluster.gke
  image   = image.serving
  models  = [model.regression]
  cpu     = "1"
  memory  = "1Gi"
}}

serving "other" {{
  cluster = cluster.gke
  image   = image.other
  models  = [model.regression]
  cpu     = "1"
  memory  = "1Gi"
}}
"#,
            model = repo().join("examples/model/regression").display()
        );
        std::fs::write(dir.path().join("stack.hcl"), stack).unwrap();
        World {
            gcs,
            cb,
            gke,
            k8s,
            _stand_in: stand_in,
            dir,
        }
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .args(args)
            .arg(self.dir.path().join("stack.hcl"))
            .stdin(Stdio::null())
            .env("BENCHSTACK_GKE_ENDPOINT", self.gke.url())
            .env("BENCHSTACK_CLOUDBUILD_ENDPOINT", self.cb.url())
            .env("BENCHSTACK_ARTIFACTREGISTRY_ENDPOINT", self.cb.url())
            .env("BENCHSTACK_STORAGE_ENDPOINT", self.gcs.url())
            .env("BENCHSTACK_POLL_INTERVAL", "20ms")
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// The action and reason of each change in `plan --json`.
    fn plan(&self) -> Vec<(String, String, String)> {
        let (code, out, err) = self.run(&["plan", "--json"]);
        assert_eq!(code, 0, "{out}\n{err}");
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["address"].as_str().unwrap_or_default().to_string(),
                    c["action"].as_str().unwrap_or_default().to_string(),
                    c["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn deployed_image(&self, name: &str) -> String {
        let d = self
            .k8s
            .object("deployments", "benchstack", name)
            .unwrap_or_else(|| panic!("Deployment {name}: {:?}", self.k8s.names("deployments")));
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn action_of<'a>(plan: &'a [(String, String, String)], a: &str) -> (&'a str, &'a str) {
    plan.iter()
        .find(|(addr, _, _)| addr == a)
        .map(|(_, act, why)| (act.as_str(), why.as_str()))
        .unwrap_or(("absent", ""))
}

#[test]
fn images_are_built_deployed_by_digest_rebuilt_on_change_and_a_failed_build_deploys_nothing() {
    let w = World::start();

    // First apply: both images built and pushed, both Deployments run them by digest.
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.cb.builds().len(), 2, "{out}");
    assert_eq!(w.cb.repositories().len(), 1);
    let tf = w.deployed_image("tf");
    assert!(
        tf.starts_with("us-central1-docker.pkg.dev/bench-proj/benchstack/tf-serving@sha256:"),
        "{tf}"
    );
    let other = w.deployed_image("other");
    assert!(other.contains("/tf-serving-other@sha256:"), "{other}");
    let (code, shown, err) = w.run_show("image.serving");
    assert_eq!(code, 0, "{err}");
    assert!(
        shown.contains(&tf),
        "the state records the pushed reference: {shown}"
    );

    // Nothing changed: no build planned.
    let p = w.plan();
    assert!(
        p.iter().all(|(_, a, _)| a == "no-op"),
        "a second plan changes nothing: {p:?}"
    );

    // A file in one context: that image is rebuilt and only its Deployment rolls.
    std::fs::write(w.dir.path().join("other-ctx/model.txt"), "v2").unwrap();
    let p = w.plan();
    assert_eq!(action_of(&p, "image.other"), ("update", "context changed"));
    assert_eq!(
        action_of(&p, "serving.other"),
        ("update", "image.other rebuilt: context changed")
    );
    assert_eq!(action_of(&p, "image.serving").0, "no-op");
    assert_eq!(action_of(&p, "serving.tf").0, "no-op");
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.cb.builds().len(), 3);
    assert_ne!(w.deployed_image("other"), other, "the Deployment rolled");
    assert_eq!(w.deployed_image("tf"), tf, "the other Deployment did not");

    // A failing build: exit 1 with the step and the log's tail; its Deployment stays.
    std::fs::write(
        w.dir.path().join("serving-ctx/Dockerfile"),
        "FROM tensorflow/serving:2.19.0\nRUN false\n",
    )
    .unwrap();
    let (code, out, err) = w.run(&["apply", "--auto-approve"]);
    let all = format!("{out}\n{err}");
    assert_eq!(code, 1, "{all}");
    assert!(all.contains("step 0 docker build"), "{all}");
    assert!(
        all.contains("The command '/bin/sh -c false' returned a non-zero code: 1"),
        "{all}"
    );
    assert_eq!(
        w.deployed_image("tf"),
        tf,
        "nothing that uses it was deployed"
    );
    let _ = &w.gcs;
}

impl World {
    fn run_show(&self, address: &str) -> (i32, String, String) {
        let out = Command::new(BIN)
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .args(["state", "show", address])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}
