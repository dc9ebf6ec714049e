//! Issue 19's "done when", through the binary: `stacks/gke.hcl` applied against loopback
//! emulators of Service Usage, GKE, Kubernetes, Cloud Build, Artifact Registry and Cloud
//! Storage (fake-gcs-server), driven by the real clients. The first apply enables the
//! disabled APIs, uploads both build contexts, runs both builds, creates the repository and
//! deploys both images by digest, and the run records the digests; a second plan builds
//! nothing; a batching change plans a rebuild of the generated serving image; a changed file
//! in the worker's context plans one rebuild and re-runs only what uses it; a failing build
//! exits 1 with its step and log tail and creates no workload that depends on it. With
//! Compute Engine (emulated) describing the serving machine type smaller than benchstack's
//! table, `tune`, `compare` and `apply --gate` render every Deployment's rollout by its shape
//! and a tune skips the replica count that cannot be scheduled.

#[path = "support/cloudbuild_emulator.rs"]
mod cloudbuild_emulator;
#[path = "support/fake_gcs.rs"]
mod fake_gcs;
#[path = "support/fault_proxy.rs"]
mod fault_proxy;
#[path = "support/gke_emulator.rs"]
mod gke_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;
#[path = "support/k8s_emulator.rs"]
mod k8s_emulator;
#[path = "support/preflight_emulators.rs"]
mod preflight_emulators;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

use cloudbuild_emulator::CloudBuildEmulator;
use fake_gcs::FakeGcs;
use fault_proxy::FaultProxy;
use gke_emulator::GkeEmulator;
use k8s_emulator::{K8sEmulator, NodePool, NodeSource, Options, StandIn};
use preflight_emulators::{ComputeEmulator, ServiceUsageEmulator};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_benchstack");
const PROJECT: &str = "bench-test";
const REPOSITORY: &str = "us-central1-docker.pkg.dev/bench-test/benchstack";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A checkout-shaped directory: stacks/gke.hcl (copied), examples/ (a link to the
/// repository's: the serving image carries the example model, 17 MiB of context, so the
/// upload is resumable), and the worker's context (`..`): deploy/loadgen.Dockerfile,
/// .dockerignore and a source file.
fn checkout(dir: &Path) -> PathBuf {
    for d in ["stacks", "deploy", "src"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::os::unix::fs::symlink(repo().join("examples"), dir.join("examples")).unwrap();
    for f in [
        "deploy/loadgen.Dockerfile",
        ".dockerignore",
        "stacks/gke.hcl",
    ] {
        std::fs::copy(repo().join(f), dir.join(f)).unwrap();
    }
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    dir.join("stacks/gke.hcl")
}

struct World {
    gke: Arc<GkeEmulator>,
    k8s: K8sEmulator,
    gcs: FakeGcs,
    /// Cloud Storage as the client sees it: fake-gcs-server behind a proxy that forwards with
    /// the server's own Host (google-cloud-storage sends the endpoint's host without its port,
    /// and fake-gcs-server builds a resumable upload's Location from the Host header; GCS's
    /// Location is always its own absolute URL).
    storage: FaultProxy,
    cb: CloudBuildEmulator,
    usage: ServiceUsageEmulator,
    /// Compute Engine, asked by the preflight only when `ask_compute` is set (else its
    /// machine-type and quota checks are skipped, as against any emulated GKE).
    compute: ComputeEmulator,
    ask_compute: bool,
    _stand_in: StandIn,
    dir: tempfile::TempDir,
    checkout: PathBuf,
    stack: PathBuf,
}

impl World {
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
        let k8s = K8sEmulator::start(opts);
        gke.set_cluster_endpoint(&k8s.endpoint());
        let gcs = FakeGcs::start();
        let storage = FaultProxy::start(gcs.url(), "never-failed", 0);
        let cb = CloudBuildEmulator::start(&gcs.url());
        // A new project: only Compute Engine and Artifact Registry are on.
        let usage = ServiceUsageEmulator::start();
        usage.add_project(PROJECT, 123456789012);
        usage.enable(
            PROJECT,
            &["compute.googleapis.com", "artifactregistry.googleapis.com"],
        );
        usage.set_polls_before_done(1);
        let dir = tempfile::tempdir().unwrap();
        let checkout_dir = dir.path().join("checkout");
        let stack = checkout(&checkout_dir);
        World {
            gke,
            k8s,
            gcs,
            storage,
            cb,
            usage,
            compute: ComputeEmulator::start(),
            ask_compute: false,
            _stand_in: stand_in,
            dir,
            checkout: checkout_dir,
            stack,
        }
    }

    fn run(&self, args: &[&str], vars: &[&str]) -> (i32, String, String) {
        let mut c = Command::new(BIN);
        c.arg("--state")
            .arg(self.dir.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .env("BENCHSTACK_GKE_ENDPOINT", self.gke.url())
            .env("BENCHSTACK_SERVICEUSAGE_ENDPOINT", self.usage.url())
            .env("BENCHSTACK_CLOUDBUILD_ENDPOINT", self.cb.url())
            .env("BENCHSTACK_ARTIFACTREGISTRY_ENDPOINT", self.cb.url())
            .env("BENCHSTACK_STORAGE_ENDPOINT", self.storage.host())
            .env("BENCHSTACK_POLL_INTERVAL", "20ms")
            .env("BENCHSTACK_WORKER_START_DELAY", "1s")
            .current_dir(self.dir.path());
        if self.ask_compute {
            c.env("BENCHSTACK_COMPUTE_ENDPOINT", self.compute.url());
        }
        if matches!(
            args.first(),
            Some(&"plan") | Some(&"apply") | Some(&"tune") | Some(&"compare")
        ) {
            c.arg(&self.stack).args([
                "--var",
                &format!("project={PROJECT}"),
                "--var",
                "stage_duration=1s",
                "--var",
                "rate_scale=0.05",
                "--var",
                "slo_p99=10s",
            ]);
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

    /// (address, action, reason) of each change in `plan --json`.
    fn plan(&self, vars: &[&str]) -> Vec<(String, String, String)> {
        let (code, out, err) = self.run(&["plan", "--json"], vars);
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

    fn deployment_image(&self) -> String {
        let d = self
            .k8s
            .object("deployments", "benchstack", "tf")
            .expect("the Deployment");
        d["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The images each stored run measured, newest first: (serving, loadgen).
    fn run_images(&self) -> Vec<(String, String)> {
        let (code, runs, err) = self.run(&["results", "--json"], &[]);
        assert_eq!(code, 0, "{err}");
        let runs: Value = serde_json::from_str(&runs).unwrap();
        runs.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let i = &r["environment"]["images"];
                (
                    i["serving"].as_str().unwrap_or_default().to_string(),
                    i["loadgen"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// The source objects uploaded to the build bucket (fake-gcs-server's object list).
    fn gcs_objects(&self) -> usize {
        let body = http_get(
            self.gcs.port,
            &format!("/storage/v1/b/{PROJECT}_cloudbuild/o?prefix=benchstack/source/"),
        );
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["items"].as_array().map(Vec::len))
            .unwrap_or(0)
    }
}

impl World {
    /// Asks the Compute Engine emulator for machine shapes, which describes e2-highcpu-8
    /// smaller than benchstack's table (4 vCPUs, 4 GiB against 8 and 8), and gives the stack's
    /// serving 3-CPU replicas: three fit one per node, but no surge pod beside them, and a
    /// fourth fits nowhere (by the table, a surge pod and a fourth replica fit). Returns the
    /// stack's new text.
    fn use_compute_shape_without_room_to_surge(&mut self) -> String {
        self.ask_compute = true;
        self.compute.describe("e2-highcpu-8", 4, 4096);
        let text = std::fs::read_to_string(&self.stack)
            .unwrap()
            .replace("cpu    = \"6\"", "cpu    = \"3\"")
            .replace("memory = \"4Gi\"", "memory = \"2Gi\"");
        assert!(text.contains("cpu    = \"3\""), "stacks/gke.hcl changed");
        std::fs::write(&self.stack, &text).unwrap();
        text
    }

    /// The files of the uploaded source of `image` (its newest object), with their bytes.
    fn uploaded_context(&self, image: &str) -> std::collections::BTreeMap<String, Vec<u8>> {
        use std::io::Read;
        let bucket = format!("{PROJECT}_cloudbuild");
        let list = http_get(
            self.gcs.port,
            &format!("/storage/v1/b/{bucket}/o?prefix=benchstack/source/{image}-"),
        );
        let v: Value = serde_json::from_slice(&list).unwrap();
        let items = v["items"].as_array().expect("uploaded sources");
        assert_eq!(items.len(), 1, "{v}");
        let name = items[0]["name"].as_str().unwrap().replace('/', "%2F");
        let body = http_get(
            self.gcs.port,
            &format!("/storage/v1/b/{bucket}/o/{name}?alt=media"),
        );
        let mut files = std::collections::BTreeMap::new();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(body.as_slice()));
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            if e.header().entry_type().is_dir() {
                continue;
            }
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
        files
    }
}

fn action_of<'a>(plan: &'a [(String, String, String)], a: &str) -> (&'a str, &'a str) {
    plan.iter()
        .find(|(addr, _, _)| addr == a)
        .map(|(_, act, why)| (act.as_str(), why.as_str()))
        .unwrap_or(("absent", ""))
}

/// The body of `GET path` from the server on loopback `port` (HTTP/1.0: read to the end).
fn http_get(port: u16, path: &str) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let at = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP response");
    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
    assert!(head.contains(" 200 "), "GET {path}: {head}");
    buf[at + 4..].to_vec()
}

/// The files under `dir`, `/`-separated and relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() {
            out.extend(walk(&e.path()).into_iter().map(|f| format!("{name}/{f}")));
        } else {
            out.push(name);
        }
    }
    out
}

fn flat(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn the_gke_stack_builds_both_images_deploys_them_by_digest_and_rebuilds_only_what_changed() {
    let w = World::start();

    // 1. The first apply: APIs, both contexts, both builds, the repository, deploy by digest.
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "APIs: enabled cloudbuild.googleapis.com, container.googleapis.com in project bench-test"
        ),
        "{out}"
    );
    assert!(w.usage.is_enabled(PROJECT, "container.googleapis.com"));
    assert_eq!(w.gcs_objects(), 2, "both contexts uploaded");
    let builds = w.cb.builds();
    assert_eq!(builds.len(), 2, "{out}");
    assert_eq!(
        w.cb.repositories(),
        ["projects/bench-test/locations/us-central1/repositories/benchstack"]
    );
    let serving = w.deployment_image();
    assert!(
        serving.starts_with(&format!("{REPOSITORY}/tf-serving-regression@sha256:")),
        "{serving}"
    );
    // The serving image's context is the generated Dockerfile, the plan's rendered files
    // (byte for byte the ConfigMap's) and the model's version folder: nothing else.
    let ctx = w.uploaded_context("image.serving");
    let mut expected: Vec<String> = [
        "Dockerfile",
        "config/batching_parameters.txt",
        "config/models.config",
        "config/monitoring.config",
    ]
    .map(String::from)
    .to_vec();
    let version = repo().join("examples/model/regression/1");
    for e in walk(&version) {
        expected.push(format!("models/regression/1/{e}"));
    }
    expected.sort();
    assert_eq!(ctx.keys().cloned().collect::<Vec<_>>(), expected);
    assert_eq!(
        ctx["models/regression/1/saved_model.pb"],
        std::fs::read(version.join("saved_model.pb")).unwrap()
    );
    // Over 16 MiB: google-cloud-storage uploaded it with a resumable upload.
    assert!(
        w.storage
            .uploads
            .lock()
            .unwrap()
            .iter()
            .any(|q| q.contains("uploadType=resumable") && q.contains("image.serving")),
        "{:?}",
        w.storage.uploads.lock().unwrap()
    );
    let dockerfile = String::from_utf8_lossy(&ctx["Dockerfile"]).into_owned();
    assert!(
        dockerfile.contains("\nFROM tensorflow/serving:2.19.0\nCOPY config/ /config/\nCOPY models/regression/ /models/regression/\n"),
        "{dockerfile}"
    );
    let cm = w
        .k8s
        .object("configmaps", "benchstack", "tf")
        .expect("the ConfigMap");
    for f in [
        "models.config",
        "batching_parameters.txt",
        "monitoring.config",
    ] {
        assert_eq!(
            cm["data"][f].as_str().unwrap().as_bytes(),
            ctx[&format!("config/{f}")].as_slice(),
            "{f}: the image and the ConfigMap hold the same bytes"
        );
    }
    // The worker's context: the checkout after .dockerignore (no stacks/).
    let worker_ctx = w.uploaded_context("image.worker");
    assert!(
        worker_ctx.contains_key("deploy/loadgen.Dockerfile"),
        "{:?}",
        worker_ctx.keys()
    );
    assert!(worker_ctx.contains_key("src/main.rs"));
    assert!(
        !worker_ctx.keys().any(|k| k.starts_with("stacks/")),
        "{:?}",
        worker_ctx.keys()
    );

    // The run records the digests it measured: what the Deployment and the Job ran.
    let runs = w.run_images();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].0, serving);
    let worker = runs[0].1.clone();
    assert!(
        worker.starts_with(&format!("{REPOSITORY}/benchstack@sha256:")),
        "{worker}"
    );
    let pods = w.k8s.pod_records().len();
    assert_eq!(pods, 4, "four worker pods");

    // 2. Nothing changed: no build.
    let p = w.plan(&[]);
    assert!(p.iter().all(|(_, a, _)| a == "no-op"), "{p:?}");

    // 3. A batching change renders a new file in the generated serving image: rebuild, roll.
    let text = std::fs::read_to_string(&w.stack).unwrap();
    std::fs::write(
        &w.stack,
        text.replace("max_batch_size       = 8000", "max_batch_size       = 4000"),
    )
    .unwrap();
    let p = w.plan(&[]);
    assert_eq!(
        action_of(&p, "image.serving"),
        ("update", "config/batching_parameters.txt changed")
    );
    let (action, why) = action_of(&p, "serving.tf");
    assert_eq!(action, "update");
    assert!(
        why.contains("image.serving rebuilt: config/batching_parameters.txt changed"),
        "{why}"
    );
    assert_eq!(action_of(&p, "image.worker").0, "no-op");
    std::fs::write(&w.stack, text).unwrap();

    // 4. A file in the worker's context: one rebuild, only the load test runs again.
    std::fs::write(w.checkout.join("src/main.rs"), "fn main() { /* v2 */ }\n").unwrap();
    let p = w.plan(&[]);
    assert_eq!(action_of(&p, "image.worker"), ("update", "context changed"));
    assert_eq!(
        action_of(&p, "loadtest.baseline"),
        ("run", "image.worker rebuilt: context changed")
    );
    for a in [
        "image.serving",
        "serving.tf",
        "cluster.serving",
        "cluster.loadgen",
    ] {
        assert_eq!(action_of(&p, a).0, "no-op", "{a}: {p:?}");
    }
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.cb.builds().len(), 3, "one more build");
    assert_eq!(w.deployment_image(), serving, "serving did not roll");
    let runs = w.run_images();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let newest = runs
        .iter()
        .find(|(_, l)| l != &worker)
        .unwrap_or_else(|| panic!("a run on the new worker digest: {runs:?}"));
    assert!(
        newest
            .1
            .starts_with(&format!("{REPOSITORY}/benchstack@sha256:"))
    );
    assert_eq!(newest.0, serving, "measured against the same serving image");

    // 5. A failing build: exit 1 with its step and log tail; no Job runs on it.
    let pods_before = w.k8s.pod_records().len();
    let dockerfile = w.checkout.join("deploy/loadgen.Dockerfile");
    let df = std::fs::read_to_string(&dockerfile).unwrap();
    std::fs::write(
        &dockerfile,
        df.replace(
            "FROM debian:bookworm-slim",
            "RUN false\nFROM debian:bookworm-slim",
        ),
    )
    .unwrap();
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    let all = flat(&format!("{out}\n{err}"));
    assert_eq!(code, 1, "{all}");
    assert!(all.contains("step 0 docker build"), "{all}");
    assert!(
        all.contains("The command '/bin/sh -c false' returned a non-zero code: 1"),
        "{all}"
    );
    assert!(
        all.contains("loadtest.baseline: skipped (image.worker failed)"),
        "{all}"
    );
    assert_eq!(
        w.k8s.pod_records().len(),
        pods_before,
        "no workload on the failed image"
    );
    assert_eq!(w.run_images().len(), 2, "no run recorded");
    assert_eq!(w.deployment_image(), serving);
}

/// Appended to `stacks/gke.hcl` for the tune: a one-worker load test whose objective no
/// server meets (so each trial ends after the two or three probes that find its floor) and a
/// grid of two batching-only trials.
const TUNE_BLOCKS: &str = r#"
loadtest "tuneprobe" {
  cluster       = cluster.loadgen
  target        = serving.tf
  model         = "regression"
  protocol      = "grpc"
  data          = "../examples/model/test.csv"
  batch_size    = 1
  workers       = 1
  loadgen_image = image.worker
  stage {
    rate     = 20
    duration = "1s"
  }
  slo {
    p99 = "1us"
  }
}

tune "batching" {
  serving  = serving.tf
  loadtest = loadtest.tuneprobe
  space = {
    "batching.max_batch_size" = [16, 32]
  }
  search         = "grid"
  start_rate     = 20
  probe_duration = "200ms"
  precision      = 0.5
  repeats        = 1
}
"#;

#[test]
fn a_tune_on_gke_changes_only_the_configmap_per_trial_and_the_next_plan_rebuilds_the_serving_image()
{
    let w = World::start();
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let builds = w.cb.builds().len();
    assert_eq!(builds, 2, "{out}");
    let serving = w.deployment_image();
    let runs_before = w.run_images().len();

    let text = std::fs::read_to_string(&w.stack).unwrap();
    std::fs::write(&w.stack, format!("{text}{TUNE_BLOCKS}")).unwrap();
    let (code, out, err) = w.run(&["tune"], &[]);
    assert!(code == 0 || code == 2, "{code}: {out}\n{err}");
    // Batching-only trials: the ConfigMap carries them; no build, no upload, no new digest.
    assert_eq!(
        w.cb.builds().len(),
        builds,
        "no Cloud Build for a batching-only trial\n{out}\n{err}"
    );
    assert_eq!(w.gcs_objects(), 2, "no context uploaded");
    assert_eq!(w.deployment_image(), serving);

    // Every probe records the digest it measured (the one last applied) and the trial's
    // settings; both trials were measured.
    let (code, json, err) = w.run(&["results", "--json"], &[]);
    assert_eq!(code, 0, "{err}");
    let runs: Value = serde_json::from_str(&json).unwrap();
    let probes: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["tune"].is_object())
        .collect();
    assert_eq!(probes.len() + runs_before, runs.as_array().unwrap().len());
    let mut sizes: Vec<i64> = probes
        .iter()
        .filter_map(|r| r["tune"]["settings"]["batching.max_batch_size"].as_i64())
        .collect();
    sizes.sort();
    sizes.dedup();
    assert!(
        sizes.contains(&16) && sizes.contains(&32),
        "{sizes:?}\n{out}\n{err}"
    );
    for r in &probes {
        assert_eq!(
            r["environment"]["images"]["serving"].as_str(),
            Some(serving.as_str()),
            "{r}"
        );
    }

    // The tune restored the declared batching: the image as built is what the stack says.
    let p = w.plan(&[]);
    assert_eq!(action_of(&p, "image.serving").0, "no-op", "{p:?}");
    assert_eq!(action_of(&p, "serving.tf").0, "no-op", "{p:?}");
    let cm = w
        .k8s
        .object("configmaps", "benchstack", "tf")
        .expect("the ConfigMap");
    assert!(
        cm["data"]["batching_parameters.txt"]
            .as_str()
            .unwrap()
            .contains("max_batch_size { value: 8000 }"),
        "{cm}"
    );

    // The stack takes a trial's batching (what `tune --write` does): the plan shows the
    // rebuild, and one apply builds once and rolls serving to the new digest.
    let text = std::fs::read_to_string(&w.stack).unwrap();
    std::fs::write(
        &w.stack,
        text.replace("max_batch_size       = 8000", "max_batch_size       = 32"),
    )
    .unwrap();
    let p = w.plan(&[]);
    assert_eq!(
        action_of(&p, "image.serving"),
        ("update", "config/batching_parameters.txt changed")
    );
    let (code, out, err) = w.run(&["apply", "--auto-approve", "--target", "serving.tf"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.cb.builds().len(), builds + 1, "one build");
    assert_ne!(w.deployment_image(), serving, "rolled to the new digest");
    let p = w.plan(&[]);
    assert_eq!(action_of(&p, "image.serving").0, "no-op", "{p:?}");
    assert_eq!(action_of(&p, "serving.tf").0, "no-op", "{p:?}");
}

/// The Deployment's rolling update: (maxSurge, maxUnavailable).
fn rollout(w: &World) -> (Value, Value) {
    let d = w
        .k8s
        .object("deployments", "benchstack", "tf")
        .expect("the Deployment");
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    (ru["maxSurge"].clone(), ru["maxUnavailable"].clone())
}

#[test]
fn a_tune_on_gke_sizes_every_trial_by_the_shape_compute_engine_describes_and_skips_what_cannot_fit()
{
    let mut w = World::start();
    let text = w.use_compute_shape_without_room_to_surge();
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        rollout(&w),
        (Value::from(0), Value::from(1)),
        "apply's plan"
    );

    let tune = TUNE_BLOCKS.replace(
        "\"batching.max_batch_size\" = [16, 32]",
        "\"batching.max_batch_size\" = [16]\n    \"replicas\"                = [3, 4]",
    );
    assert!(tune.contains("[3, 4]"));
    std::fs::write(&w.stack, format!("{text}{tune}")).unwrap();
    let (code, out, err) = w.run(&["tune", "--json"], &[]);
    assert!(code == 0 || code == 2, "{code}: {out}\n{err}");
    // Reported before the first trial, by Compute Engine's shape.
    let fit = err
        .find("does not fit: replicas=4 (1 trial not run): 4 replicas requesting 3 CPU")
        .unwrap_or_else(|| panic!("no does-not-fit line:\n{err}"));
    let first = err.find("trial 1/").expect("a trial ran");
    assert!(fit < first, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let trials = v["trials"].as_array().unwrap();
    let four: Vec<&Value> = trials
        .iter()
        .filter(|t| t["settings"]["replicas"] == 4)
        .collect();
    assert_eq!(four.len(), 1, "{v}");
    assert!(
        four[0]["not_run"]
            .as_str()
            .is_some_and(|r| r.starts_with("does not fit: 4 replicas")),
        "{v}"
    );
    assert_eq!(four[0]["measurements"], serde_json::json!([]));
    // Never scaled to 4, and every plan of the tune (its trials, the restore) rendered the
    // rollout by Compute Engine's shape: the Deployment still rolls one at a time.
    let d = w
        .k8s
        .object("deployments", "benchstack", "tf")
        .expect("the Deployment");
    assert_eq!(d["spec"]["replicas"], 3, "{err}");
    assert_eq!(rollout(&w), (Value::from(0), Value::from(1)), "{err}");
    // The stack as declared is what runs: nothing to change.
    let p = w.plan(&[]);
    assert_eq!(action_of(&p, "serving.tf").0, "no-op", "{p:?}");
}

#[test]
fn apply_gate_re_runs_the_load_test_with_the_shape_compute_engine_describes() {
    let mut w = World::start();
    // As above: by Compute Engine's shape no surge pod fits beside three 3-CPU replicas.
    w.use_compute_shape_without_room_to_surge();
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(rollout(&w), (Value::from(0), Value::from(1)));
    let (code, out, err) = w.run(&["results", "baseline", "set", "loadtest.baseline"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");

    // Nothing changed: the gate's re-runs plan the load test with its serving resource in
    // scope, rendered by the same shape as apply's, so the Deployment is left as applied.
    let (code, out, err) = w.run(
        &["apply", "--auto-approve", "--gate", "--gate-rounds", "2"],
        &[],
    );
    assert!([0, 2, 3, 4].contains(&code), "{code}: {out}\n{err}");
    assert!(out.contains("Gate: loadtest.baseline"), "{out}\n{err}");
    assert!(!out.contains("serving.tf: update"), "{out}");
    assert_eq!(
        rollout(&w),
        (Value::from(0), Value::from(1)),
        "{out}\n{err}"
    );
}

#[test]
fn compare_on_gke_deploys_both_sides_by_the_shape_compute_engine_describes() {
    let mut w = World::start();
    // As above: by Compute Engine's shape no surge pod fits beside three 3-CPU replicas.
    let text = w.use_compute_shape_without_room_to_surge();
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let builds = w.cb.builds().len();
    let base = w.checkout.join("stacks/base.hcl");
    std::fs::write(&base, &text).unwrap();
    let base = base.display().to_string();
    let (code, out, err) = w.run(
        &[
            "compare",
            "--against",
            &base,
            "--rounds",
            "2",
            "--max-rounds",
            "2",
            "--keep",
        ],
        &[],
    );
    assert!([0, 3, 4].contains(&code), "{code}: {out}\n{err}");
    let d = w
        .k8s
        .object("deployments", "benchstack", "tf-compare-base")
        .unwrap_or_else(|| panic!("the base's Deployment, kept\n{out}\n{err}"));
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    assert_eq!(
        (ru["maxSurge"].clone(), ru["maxUnavailable"].clone()),
        (Value::from(0), Value::from(1)),
        "{out}\n{err}"
    );
    assert_eq!(
        rollout(&w),
        (Value::from(0), Value::from(1)),
        "{out}\n{err}"
    );
    // The base's serving image has the candidate's bytes: the candidate's build serves it.
    assert_eq!(w.cb.builds().len(), builds, "{out}\n{err}");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        Value::from(w.deployment_image())
    );
}

#[test]
fn compare_on_gke_builds_the_base_s_serving_image_from_the_base_s_model_and_runs_each_side_on_its_own_digest()
 {
    let w = World::start();
    // Both sides side by side: 3-CPU replicas, so the serving nodes hold two each.
    let text = std::fs::read_to_string(&w.stack)
        .unwrap()
        .replace("cpu    = \"6\"", "cpu    = \"3\"")
        .replace("memory = \"4Gi\"", "memory = \"2Gi\"");
    std::fs::write(&w.stack, &text).unwrap();
    let (code, out, err) = w.run(&["apply", "--auto-approve"], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let builds = w.cb.builds().len();
    let candidate = w.deployment_image();
    // The base: the same stack serving another version of the model (version 2).
    let version = repo().join("examples/model/regression/1");
    let base_model = w.checkout.join("base-model/regression/2");
    for f in walk(&version) {
        let to = base_model.join(&f);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(version.join(&f), &to).unwrap();
    }
    let base_text = text.replace(
        "base_path = \"../examples/model/regression\"",
        "base_path = \"../base-model/regression\"",
    );
    assert_ne!(text, base_text);
    let base = w.checkout.join("stacks/base.hcl");
    std::fs::write(&base, &base_text).unwrap();
    let base = base.display().to_string();
    let compare = |keep: bool| {
        let mut args = vec![
            "compare",
            "--against",
            &base,
            "--rounds",
            "2",
            "--max-rounds",
            "2",
        ];
        if keep {
            args.push("--keep");
        }
        let (code, out, err) = w.run(&args, &[]);
        assert!([0, 3, 4].contains(&code), "{code}: {out}\n{err}");
        format!("{out}\n{err}")
    };
    let said = compare(true);

    // One more build: the base's image, from the base's model; the candidate's is as applied.
    let all = w.cb.builds();
    assert_eq!(all.len(), builds + 1, "{said}");
    let ctx = w.uploaded_context("image.serving_compare_base");
    assert!(
        ctx.contains_key("models/regression/2/saved_model.pb"),
        "{:?}",
        ctx.keys()
    );
    assert!(
        !ctx.keys().any(|k| k.starts_with("models/regression/1/")),
        "{:?}",
        ctx.keys()
    );
    let dockerfile = String::from_utf8_lossy(&ctx["Dockerfile"]).into_owned();
    assert!(
        dockerfile.contains("for serving.tf_compare_base"),
        "{dockerfile}"
    );
    // Each side runs its own digest.
    assert_eq!(w.deployment_image(), candidate);
    let d = w
        .k8s
        .object("deployments", "benchstack", "tf-compare-base")
        .unwrap_or_else(|| panic!("the base's Deployment, kept\n{said}"));
    let base_image = d["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        base_image.starts_with(&format!("{REPOSITORY}/tf-serving-regression@sha256:")),
        "{base_image}"
    );
    assert_ne!(base_image, candidate, "{said}");

    // Run again without --keep: nothing is rebuilt, and the base's image leaves the state
    // with the rest of what compare created.
    let said = compare(false);
    assert_eq!(w.cb.builds().len(), builds + 1, "{said}");
    let (code, listed, err) = w.run(&["state", "list"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!listed.contains("compare_base"), "{listed}\n{said}");
    assert!(listed.contains("image.serving"), "{listed}");
    assert!(
        w.k8s
            .object("deployments", "benchstack", "tf-compare-base")
            .is_none()
    );
}
