//! `benchstack plan` on stacks/gke.hcl (and a copy with its images as reference strings) asks Service Usage, Compute Engine and the registry
//! (emulated on loopback, driven by the real google-cloud-api-serviceusage-v1 and
//! google-cloud-compute-v1 clients and reqwest) before anything is created: a disabled API, a
//! machine type that does not exist, a CPU quota too small and a missing image are errors at
//! the attribute at fault with the command that fixes them; a check that cannot be made is a
//! warning and the plan goes on.

#[path = "support/gke_emulator.rs"]
mod gke_emulator;
#[path = "support/google_auth_emulator.rs"]
mod google_auth_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;
#[path = "support/preflight_emulators.rs"]
mod preflight_emulators;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use gke_emulator::GkeEmulator;
use google_auth_emulator::GoogleAuthEmulator;
use preflight_emulators::{ComputeEmulator, RegistryEmulator, ServiceUsageEmulator};

const BIN: &str = env!("CARGO_BIN_EXE_benchstack");
const PROJECT: &str = "bench-test";
const REGISTRY: &str = "us-central1-docker.pkg.dev";
const SERVING_IMAGE: &str = "bench-test/benchstack/tf-serving-regression:latest";
const WORKER_IMAGE: &str = "bench-test/benchstack/benchstack:latest";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A project with everything in place: the three APIs enabled, both images pushed, the
/// default quotas (room for 88 vCPUs); tests take one thing away.
struct World {
    gke: GkeEmulator,
    usage: ServiceUsageEmulator,
    compute: ComputeEmulator,
    registry: RegistryEmulator,
    auth: GoogleAuthEmulator,
    dir: tempfile::TempDir,
    key_file: PathBuf,
}

impl World {
    fn start() -> World {
        let usage = ServiceUsageEmulator::start();
        usage.add_project(PROJECT, 123456789012);
        usage.enable(
            PROJECT,
            &[
                "container.googleapis.com",
                "compute.googleapis.com",
                "artifactregistry.googleapis.com",
            ],
        );
        let registry = RegistryEmulator::start();
        registry.push(SERVING_IMAGE);
        registry.push(WORKER_IMAGE);
        let auth = GoogleAuthEmulator::start();
        let key = auth.service_account_key("benchstack@bench-test.iam.gserviceaccount.com");
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("key.json");
        std::fs::write(&key_file, key.json.to_string()).unwrap();
        World {
            gke: GkeEmulator::start(),
            usage,
            compute: ComputeEmulator::start(),
            registry,
            auth,
            dir,
            key_file,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--state")
            .arg(self.dir.path().join("state"))
            .args(args)
            .stdin(Stdio::null())
            .env("BENCHSTACK_GKE_ENDPOINT", self.gke.url())
            .env("BENCHSTACK_SERVICEUSAGE_ENDPOINT", self.usage.url())
            .env("BENCHSTACK_COMPUTE_ENDPOINT", self.compute.url())
            .env(
                "BENCHSTACK_REGISTRY_ENDPOINT",
                format!("{REGISTRY}={}", self.registry.url()),
            )
            .env("GOOGLE_APPLICATION_CREDENTIALS", &self.key_file)
            .env("BENCHSTACK_POLL_INTERVAL", "20ms")
            .current_dir(self.dir.path());
        c
    }

    /// `benchstack plan stacks/gke.hcl --var project=bench-test [--var …] [extra]`.
    fn plan(&self, vars: &[&str], extra: &[&str]) -> (i32, String, String) {
        let mut c = self.command(&["plan"]);
        c.arg(literal_stack(self.dir.path()))
            .args(["--var", &format!("project={PROJECT}")]);
        for v in vars {
            c.args(["--var", v]);
        }
        c.args(extra);
        run(c)
    }

    /// Nothing was created, resized or deleted on GKE.
    fn assert_no_gke_change(&self) {
        let changes: Vec<_> = self
            .gke
            .requests()
            .into_iter()
            .filter(|(m, _)| m != "GET")
            .collect();
        assert!(changes.is_empty(), "GKE saw {changes:?}");
        assert_eq!(self.gke.cluster_count(), 0);
    }
}

fn run(mut c: Command) -> (i32, String, String) {
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// stacks/gke.hcl as it was before its images were `image` blocks: the serving and worker
/// images as reference strings in the registry (what the registry checks are about), its
/// paths absolute, and `enable_apis` off (a disabled API is an error). The shipped file with
/// its image blocks is planned by the `enable_apis` and Cloud Build tests below.
fn literal_text() -> String {
    let text = std::fs::read_to_string(repo().join("stacks/gke.hcl")).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("image \"") {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if skipping && line == "}" {
            skipping = false;
        }
    }
    let image = "\"${var.registry_location}-docker.pkg.dev/${var.project}/benchstack";
    let replaced = out
        .replace("\"../", &format!("\"{}/", repo().display()))
        .replace(
            "  image    = image.serving",
            &format!("  image    = {image}/tf-serving-regression:latest\""),
        )
        .replace(
            "  loadgen_image = image.worker",
            &format!("  loadgen_image = {image}/benchstack:latest\""),
        )
        .replace(
            "variable \"enable_apis\" {",
            "variable \"enable_apis\" {\n  type        = bool",
        );
    let replaced = replaced.replacen("  default     = true\n", "  default     = false\n", 1);
    assert!(!replaced.contains("= image."), "{replaced}");
    assert!(replaced.contains("default     = false"), "{replaced}");
    replaced
}

/// The literal-image stack (`literal_text`), written as gke.hcl in the world's directory.
fn literal_stack(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("gke.hcl");
    std::fs::write(&path, literal_text()).unwrap();
    path
}

/// `gke.hcl:LINE:COL` of the first line of the literal-image stack at or after the line
/// starting with `block` that contains `needle`, with the column where `needle`'s value starts.
fn at(block: &str, needle: &str) -> String {
    let text = literal_text();
    let start = text.lines().position(|l| l.starts_with(block)).unwrap();
    let (i, line) = text
        .lines()
        .enumerate()
        .skip(start)
        .find(|(_, l)| l.trim_start().starts_with(needle))
        .unwrap();
    let col = line.find('=').unwrap() + 2;
    let value_col = col + line[col - 1..].chars().take_while(|c| *c == ' ').count();
    format!("gke.hcl:{}:{}", i + 1, value_col)
}

#[test]
fn with_everything_in_place_plan_asks_each_api_once_and_passes() {
    let w = World::start();
    let (code, out, err) = w.plan(&[], &["--detailed-exitcode"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("cluster.serving will be created"), "{out}");
    assert!(!err.contains("preflight"), "{err}");
    let usage: Vec<String> = w.usage.requests().into_iter().map(|(_, p)| p).collect();
    for api in [
        "container.googleapis.com",
        "compute.googleapis.com",
        "artifactregistry.googleapis.com",
    ] {
        assert!(
            usage.contains(&format!("/v1/projects/{PROJECT}/services/{api}")),
            "{usage:?}"
        );
    }
    let compute: Vec<String> = w.compute.requests().into_iter().map(|(_, p)| p).collect();
    for path in [
        "/compute/v1/projects/bench-test/zones/us-central1-a/machineTypes/e2-highcpu-8",
        "/compute/v1/projects/bench-test/zones/us-central1-a/machineTypes/e2-highcpu-32",
        "/compute/v1/projects/bench-test/regions/us-central1",
        "/compute/v1/projects/bench-test",
    ] {
        assert!(
            compute.contains(&path.to_string()),
            "{path} not in {compute:?}"
        );
    }
    // Each image once, with the access token the key was exchanged for.
    let heads: Vec<String> = w
        .registry
        .requests()
        .into_iter()
        .filter(|(m, _)| m == "HEAD")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(
        heads,
        [
            "/v2/bench-test/benchstack/tf-serving-regression/manifests/latest",
            "/v2/bench-test/benchstack/benchstack/manifests/latest"
        ],
        "{heads:?}"
    );
    assert!(
        w.registry
            .authorizations()
            .iter()
            .all(|a| a.starts_with("Bearer ya29.emulated-access-token-")),
        "{:?}",
        w.registry.authorizations()
    );
    assert_eq!(w.auth.token_requests().len(), 1);
    w.assert_no_gke_change();
}

#[test]
fn a_disabled_api_is_an_error_at_the_clusters_project_with_the_enable_command() {
    let w = World::start();
    w.usage.disable(PROJECT, "container.googleapis.com");
    let (code, out, err) = w.plan(&[], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        !out.contains("will be created"),
        "no plan after a preflight error:\n{out}"
    );
    assert!(err.contains(&at("cluster \"serving\"", "project")), "{err}");
    assert!(
        err.contains("the Kubernetes Engine API (container.googleapis.com) is not enabled in project bench-test"),
        "{err}"
    );
    assert!(
        err.contains("gcloud services enable container.googleapis.com --project bench-test"),
        "{err}"
    );
    w.assert_no_gke_change();
}

#[test]
fn a_missing_image_is_an_error_at_the_image_attribute_naming_the_registrys_answer() {
    let w = World::start();
    let (code, out, err) = w.plan(&["registry_location=europe-west4"], &[]);
    // Nothing is pushed in europe-west4 and no registry endpoint serves it: unchecked.
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("europe-west4-docker.pkg.dev"), "{err}");

    let w = World::start();
    w.registry.remove(SERVING_IMAGE);
    let (code, out, err) = w.plan(&[], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains(&at("serving \"tf\"", "image")), "{err}");
    assert!(
        err.contains(
            "image us-central1-docker.pkg.dev/bench-test/benchstack/tf-serving-regression:latest does not exist"
        ),
        "{err}"
    );
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");
    assert!(
        err.contains(
            "gcloud artifacts docker images list us-central1-docker.pkg.dev/bench-test/benchstack --include-tags"
        ),
        "{err}"
    );
    // The worker image is there: only one problem.
    assert!(
        !err.contains(&at("loadtest \"baseline\"", "loadgen_image")),
        "{err}"
    );
    w.assert_no_gke_change();
}

#[test]
fn a_cpu_quota_too_small_for_the_new_clusters_is_an_error_with_the_quota_command() {
    let w = World::start();
    w.compute
        .set_region_quota(PROJECT, "us-central1", "CPUS", 24.0, 0.0);
    let (code, out, err) = w.plan(&[], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&at("cluster \"serving\"", "node_count")),
        "{err}"
    );
    assert!(
        err.contains(
            "the plan creates 88 vCPUs counted by CPUS in region us-central1 of project bench-test"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "cluster.serving: 3 × e2-highcpu-8 = 24, cluster.loadgen: 2 × e2-highcpu-32 = 64"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "gcloud quotas preferences create --project=bench-test --service=compute.googleapis.com --quota-id=CPUS-per-project-region --dimensions=region=us-central1 --preferred-value=88"
        ),
        "{err}"
    );
    w.assert_no_gke_change();

    // The project-wide quota, with some of it in use elsewhere.
    let w = World::start();
    w.compute
        .set_project_quota(PROJECT, "CPUS_ALL_REGIONS", 100.0, 20.0);
    let (code, out, err) = w.plan(&[], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("88 vCPUs counted by CPUS_ALL_REGIONS in project bench-test (all regions)"),
        "{err}"
    );
    assert!(err.contains("only 80 of 100 are free (20 in use)"), "{err}");
    assert!(err.contains("--preferred-value=108"), "{err}");
}

#[test]
fn quotas_that_cannot_be_read_are_a_warning_and_the_plan_goes_on() {
    let w = World::start();
    w.compute.deny_region(PROJECT, "us-central1");
    let (code, out, err) = w.plan(&[], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("cluster.serving will be created"), "{out}");
    assert!(
        err.contains("Warning: cluster.serving: preflight: cannot read the quotas of region us-central1 in project bench-test (CPUS, E2_CPUS): HTTP 403"),
        "{err}"
    );
    assert!(
        err.contains("Required 'compute.regions.get' permission"),
        "{err}"
    );
}

#[test]
fn an_unknown_machine_type_is_an_error_at_machine_type() {
    let w = World::start();
    let (code, out, err) = w.plan(&["serving_machine_type=e2-highcpu-12"], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&at("cluster \"serving\"", "machine_type")),
        "{err}"
    );
    assert!(
        err.contains("machine type e2-highcpu-12 does not exist in us-central1-a"),
        "{err}"
    );
    assert!(
        err.contains("gcloud compute machine-types list --zones us-central1-a --project bench-test --filter=\"name~^e2-\""),
        "{err}"
    );
    w.assert_no_gke_change();
}

#[test]
fn a_machine_type_outside_the_table_is_sized_by_compute_engine_for_the_capacity_check() {
    let w = World::start();
    // e2-medium (2 vCPUs, 4 GiB) is not in benchstack's table: Compute Engine says what it
    // is, so 6-CPU replicas are refused instead of going unchecked.
    let (code, out, err) = w.plan(&["serving_machine_type=e2-medium"], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(!err.contains("not in benchstack's table"), "{err}");
    assert!(err.contains("do not fit on 3 × e2-medium"), "{err}");
}

#[test]
fn the_rollout_the_plan_renders_is_sized_by_the_shape_compute_engine_described() {
    let w = World::start();
    // e2-medium (2 vCPUs, 4 GiB) is not in benchstack's table. By its shape three 1.4-CPU
    // replicas fit 3 nodes (1.93 allocatable CPUs each, less the system pods) but a surge pod
    // beside them does not: the plan, and the file apply applies, roll one at a time.
    let stack = w.dir.path().join("gke.hcl");
    let text = literal_text()
        .replace("cpu    = \"6\"", "cpu    = \"1400m\"")
        .replace("memory = \"4Gi\"", "memory = \"1Gi\"");
    assert!(
        text.contains("\"1400m\""),
        "stacks/gke.hcl no longer requests 6 CPUs"
    );
    std::fs::write(&stack, text).unwrap();
    let plan_file = w.dir.path().join("plan.json");
    let mut c = w.command(&["plan"]);
    c.arg(&stack)
        .args(["--var", &format!("project={PROJECT}")])
        .args(["--var", "serving_machine_type=e2-medium", "--out"])
        .arg(&plan_file);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("not in benchstack's table"), "{err}");
    assert!(
        err.contains("updates roll one replica at a time (maxSurge 0, maxUnavailable 1)"),
        "{err}"
    );
    let plan: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&plan_file).unwrap()).unwrap();
    let serving = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rendered"]["kubernetes.yaml"].is_string())
        .expect("a serving change with its objects");
    let yaml = serving["rendered"]["kubernetes.yaml"].as_str().unwrap();
    assert!(yaml.contains("maxSurge: 0"), "{yaml}");
    assert!(yaml.contains("maxUnavailable: 1"), "{yaml}");
}

#[test]
fn preflight_false_and_stacks_without_gke_ask_nothing() {
    let w = World::start();
    w.usage.disable(PROJECT, "container.googleapis.com");
    let (code, out, err) = w.plan(&[], &["--preflight=false"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(w.usage.requests().is_empty());
    assert!(w.compute.requests().is_empty());
    assert!(w.registry.requests().is_empty());

    let mut c = w.command(&["plan"]);
    c.arg(repo().join("stacks/local.hcl"));
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(w.usage.requests().is_empty());
    assert!(w.compute.requests().is_empty());
    assert!(w.registry.requests().is_empty());
}

#[test]
fn validate_remote_runs_the_same_checks_as_if_every_cluster_were_new() {
    let w = World::start();
    w.compute
        .set_region_quota(PROJECT, "us-central1", "E2_CPUS", 32.0, 0.0);
    let mut c = w.command(&["validate", "--remote"]);
    c.arg(repo().join("stacks/gke.hcl"))
        .args(["--var", &format!("project={PROJECT}")]);
    let (code, out, err) = run(c);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("88 vCPUs counted by E2_CPUS"), "{err}");
    assert!(
        err.contains("`benchstack validate` without `--remote`"),
        "{err}"
    );

    let mut c = w.command(&["validate"]);
    c.arg(repo().join("stacks/gke.hcl"))
        .args(["--var", &format!("project={PROJECT}")]);
    let before = w.compute.requests().len();
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.compute.requests().len(), before);
}

#[test]
fn apply_stops_at_the_preflight_before_creating_anything() {
    let w = World::start();
    w.compute
        .set_region_quota(PROJECT, "us-central1", "CPUS", 24.0, 0.0);
    let mut c = w.command(&["apply", "--auto-approve"]);
    c.arg(repo().join("stacks/gke.hcl"))
        .args(["--var", &format!("project={PROJECT}")]);
    let (code, out, err) = run(c);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("88 vCPUs counted by CPUS"), "{err}");
    assert!(err.contains("`--preflight=false`"), "{err}");
    w.assert_no_gke_change();
}

#[test]
fn services_and_images_that_cannot_be_read_are_warnings_not_errors() {
    let w = World::start();
    w.usage.deny(PROJECT);
    w.registry.deny("bench-test/benchstack");
    let (code, out, err) = w.plan(&[], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("cluster.serving will be created"), "{out}");
    assert!(
        err.contains("preflight: cannot tell whether container.googleapis.com is enabled in project bench-test: HTTP 403"),
        "{err}"
    );
    assert!(
        err.contains("preflight: cannot check image us-central1-docker.pkg.dev/bench-test/benchstack/tf-serving-regression:latest: us-central1-docker.pkg.dev answered 403"),
        "{err}"
    );
    assert!(err.contains("roles/artifactregistry.reader"), "{err}");
    // Behind a 403 a missing tag cannot be told from a present one: still only a warning.
    w.registry.remove(SERVING_IMAGE);
    let (code, out, err) = w.plan(&[], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn a_public_image_is_checked_with_the_anonymous_token_its_registry_hands_out() {
    let w = World::start();
    let hub = RegistryEmulator::start();
    hub.serve_anonymous_tokens("anonymous-pull-token");
    hub.push("tensorflow/serving:2.19.0");
    // A copy of the stack whose serving image is Docker Hub's, beside a link to the examples.
    let copy = w.dir.path().join("edited");
    std::fs::create_dir_all(copy.join("stacks")).unwrap();
    std::os::unix::fs::symlink(repo().join("examples"), copy.join("examples")).unwrap();
    let text = literal_text();
    let from = "\"${var.registry_location}-docker.pkg.dev/${var.project}/benchstack/tf-serving-regression:latest\"";
    assert!(text.contains(from));
    let stack = copy.join("stacks/gke.hcl");
    let plan = |tag: &str| {
        std::fs::write(
            &stack,
            text.replace(from, &format!("\"tensorflow/serving:{tag}\"")),
        )
        .unwrap();
        let mut c = w.command(&["plan"]);
        c.arg(&stack)
            .args(["--var", &format!("project={PROJECT}")])
            .env(
                "BENCHSTACK_REGISTRY_ENDPOINT",
                format!("{REGISTRY}={},docker.io={}", w.registry.url(), hub.url()),
            );
        run(c)
    };
    let (code, out, err) = plan("2.19.0");
    assert_eq!(code, 0, "{out}\n{err}");
    let seen = hub.requests();
    assert!(
        seen.contains(&("GET".into(), "/v2/token".into())),
        "{seen:?}"
    );
    assert_eq!(
        hub.authorizations(),
        ["", "Bearer anonymous-pull-token"],
        "a Google token is never sent to another registry"
    );

    let (code, out, err) = plan("2.99.0");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("image tensorflow/serving:2.99.0 does not exist: docker.io has no manifest 2.99.0 (MANIFEST_UNKNOWN"),
        "{err}"
    );
    assert!(
        err.contains("docker manifest inspect docker.io/tensorflow/serving:2.99.0"),
        "{err}"
    );
}

#[test]
fn the_shipped_stacks_image_blocks_need_cloud_build_enabled_in_their_repositorys_project() {
    let w = World::start();
    // stacks/gke.hcl builds both images in the project; Artifact Registry is on, Cloud Build
    // off (World enables only three APIs), and apply may not enable it.
    let mut c = w.command(&["plan"]);
    c.arg(repo().join("stacks/gke.hcl")).args([
        "--var",
        &format!("project={PROJECT}"),
        "--var",
        "enable_apis=false",
    ]);
    let (code, out, err) = run(c);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(
            "the Cloud Build API (cloudbuild.googleapis.com) is not enabled in project bench-test"
        ),
        "{err}"
    );
    let text = std::fs::read_to_string(repo().join("stacks/gke.hcl")).unwrap();
    let block = text
        .lines()
        .position(|l| l.starts_with("image \"serving\""))
        .unwrap();
    assert!(
        err.contains(&format!("gke.hcl:{}:", block + 2)),
        "located at image.serving's repository:\n{err}"
    );
    assert!(
        err.contains("gcloud services enable cloudbuild.googleapis.com --project bench-test"),
        "{err}"
    );
    // No registry is asked: the images do not exist before apply builds them.
    assert!(w.registry.requests().is_empty());
    w.assert_no_gke_change();
}

/// The shipped stack: `enable_apis` is on by default.
fn enabling_stack(_w: &World) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("stacks/gke.hcl")).unwrap();
    assert_eq!(text.matches("enable_apis  = var.enable_apis").count(), 2);
    repo().join("stacks/gke.hcl")
}

#[test]
fn with_enable_apis_a_disabled_api_is_not_an_error_and_apply_enables_it_before_creating_anything() {
    let w = World::start();
    w.usage.disable(PROJECT, "container.googleapis.com");
    w.usage.set_polls_before_done(2);
    let stack = enabling_stack(&w);
    let mut c = w.command(&["plan"]);
    c.arg(&stack).args(["--var", &format!("project={PROJECT}")]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        format!("{out}{err}").contains(
            "container.googleapis.com is not enabled in project bench-test: apply enables it first (enable_apis = true)"
        ),
        "{out}\n{err}"
    );
    assert!(!err.contains("error"), "{err}");
    assert!(
        !w.usage.requests().iter().any(|(m, _)| m == "POST"),
        "plan enables nothing"
    );
    w.assert_no_gke_change();

    let mut c = w.command(&["apply", "--auto-approve", "--target", "cluster.serving"]);
    c.arg(&stack).args(["--var", &format!("project={PROJECT}")]);
    let (code, out, err) = run(c);
    assert_eq!(code, 0, "{out}\n{err}");
    // Container (disabled by the test) and Cloud Build (World never enables it, and the
    // stack's image blocks build there): one batchEnable.
    assert!(
        out.contains(
            "APIs: enabled cloudbuild.googleapis.com, container.googleapis.com in project bench-test"
        ),
        "{out}"
    );
    assert!(w.usage.is_enabled(PROJECT, "container.googleapis.com"));
    assert!(w.usage.is_enabled(PROJECT, "cloudbuild.googleapis.com"));
    let reqs = w.usage.requests();
    let batch = reqs
        .iter()
        .filter(|(m, p)| m == "POST" && p == "/v1/projects/bench-test/services:batchEnable")
        .count();
    assert_eq!(batch, 1, "{reqs:?}");
    // The operation was followed until done (two reads answered `done: false`).
    assert!(
        reqs.iter()
            .filter(|(m, p)| m == "GET" && p.starts_with("/v1/operations/"))
            .count()
            >= 3,
        "{reqs:?}"
    );
    assert_eq!(w.gke.cluster_count(), 1);
}

#[test]
fn with_enable_apis_a_refused_enable_stops_apply_before_anything_is_created() {
    let w = World::start();
    w.usage.disable(PROJECT, "compute.googleapis.com");
    w.usage.deny_enable(PROJECT);
    let stack = enabling_stack(&w);
    let mut c = w.command(&["apply", "--auto-approve"]);
    c.arg(&stack).args(["--var", &format!("project={PROJECT}")]);
    let (code, out, err) = run(c);
    assert_eq!(code, 1, "{out}\n{err}");
    // miette wraps the message: compare it flattened.
    let err = err
        .replace('│', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        err.contains("enabling APIs in project bench-test (enable_apis = true on cluster."),
        "{err}"
    );
    assert!(
        err.contains("roles/serviceusage.serviceUsageAdmin"),
        "{err}"
    );
    assert!(
        err.contains("gcloud services enable cloudbuild.googleapis.com compute.googleapis.com --project bench-test"),
        "{err}"
    );
    w.assert_no_gke_change();
}

/// The cost object of `plan --json`, and a cluster's side in it.
fn cost_side<'a>(json: &'a serde_json::Value, cluster: &str, side: &str) -> &'a serde_json::Value {
    json["cost"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == cluster)
        .unwrap_or_else(|| panic!("{cluster} in {json}"))
        .get(side)
        .unwrap()
}

#[test]
fn the_plans_cost_prices_each_cluster_in_its_region_with_the_management_fee() {
    let w = World::start();
    let (code, out, err) = w.plan(&[], &["--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let serving = cost_side(&json, "cluster.serving", "after");
    // e2-highcpu-8 in us-central1: 8 × $0.02181159 + 8 × $0.00292353 = $0.19788096.
    let p = serving["hourly_price"].as_f64().unwrap();
    assert!((p - 0.19788096).abs() < 1e-9, "{serving}");
    assert_eq!(serving["management_fee"], 0.1);
    let per_hour = serving["per_hour"].as_f64().unwrap();
    assert!(
        (per_hour - (3.0 * 0.19788096 + 0.1)).abs() < 1e-9,
        "{serving}"
    );
    let source = serving["source"].as_str().unwrap();
    assert!(source.contains("e2-highcpu-8 in us-central1"), "{source}");
    assert!(source.contains("2026-07-30"), "{source}");
    let loadgen = cost_side(&json, "cluster.loadgen", "after");
    let p = loadgen["hourly_price"].as_f64().unwrap();
    assert!((p - 0.79152384).abs() < 1e-9, "{loadgen}");
    let total = json["cost"]["after_per_hour"].as_f64().unwrap();
    assert!(
        (total - (3.0 * 0.19788096 + 2.0 * 0.79152384 + 0.2)).abs() < 1e-9,
        "{total}"
    );
    assert!(
        json["cost"]["management_fee_source"]
            .as_str()
            .unwrap()
            .contains("https://cloud.google.com/kubernetes-engine/pricing")
    );
}

#[test]
fn a_machine_type_outside_the_shapes_table_is_priced_by_the_shape_compute_engine_described() {
    let w = World::start();
    // n1-standard-8 is not in benchstack's shapes table: without the preflight it has no
    // price, and says why…
    let (code, out, err) = w.plan(
        &["serving_machine_type=n1-standard-8"],
        &["--json", "--preflight=false"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let serving = cost_side(&json, "cluster.serving", "after");
    assert_eq!(
        serving["hourly_price"],
        serde_json::Value::Null,
        "{serving}"
    );
    assert_eq!(
        serving["unpriced"],
        "the shape of n1-standard-8 is not known (the preflight reads it from Compute Engine)"
    );
    // …and with it, Compute Engine's 8 vCPUs and 30 GiB at N1's prices in us-central1:
    // 8 × $0.031611 + 30 × $0.004237 = $0.379998 (the source's n1-standard-8).
    let (code, out, err) = w.plan(&["serving_machine_type=n1-standard-8"], &["--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let serving = cost_side(&json, "cluster.serving", "after");
    let p = serving["hourly_price"].as_f64().unwrap();
    assert!((p - 0.379998).abs() < 1e-9, "{serving}");
    assert!(
        serving["source"]
            .as_str()
            .unwrap()
            .contains("8 vCPU × $0.031611 + 30 GiB × $0.004237"),
        "{serving}"
    );
}

#[test]
fn a_cluster_in_a_region_without_prices_is_named_not_priced_as_another_region() {
    let w = World::start();
    // asia-southeast3 has no E2 figures in the table: both clusters are named, none is priced
    // at us-central1's prices.
    let (code, out, err) = w.plan(&["location=asia-southeast3-a"], &["--preflight=false"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Cost: "))
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(
        line,
        "Cost: $0.00 → $0.00 per hour, without \
         cluster.loadgen (no list price for E2 machine types in asia-southeast3), \
         cluster.serving (no list price for E2 machine types in asia-southeast3): \
         set `hourly_price`."
    );
}

/// A tune of serving.tf's replicas (and, with `images`, its image) by the stack's load test,
/// appended to the literal-image stack.
fn tune_block(replicas: &[u32], images: &[&str]) -> String {
    let replicas: Vec<String> = replicas.iter().map(u32::to_string).collect();
    let images = if images.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = images.iter().map(|i| format!("\"{i}\"")).collect();
        format!("    \"image\"    = [{}]\n", list.join(", "))
    };
    format!(
        r#"
tune "size" {{
  serving  = serving.tf
  loadtest = loadtest.baseline
  space = {{
    "replicas" = [{}]
{images}  }}
  search         = "grid"
  probe_duration = "1s"
  repeats        = 1
}}
"#,
        replicas.join(", ")
    )
}

impl World {
    /// `benchstack tune gke.hcl --var project=bench-test [--var …] [extra]` on the literal-image
    /// stack with `tune` appended.
    fn tune(&self, tune: &str, vars: &[&str], extra: &[&str]) -> (i32, String, String) {
        let path = self.dir.path().join("gke.hcl");
        std::fs::write(&path, format!("{}{tune}", literal_text())).unwrap();
        let mut c = self.command(&["tune"]);
        c.arg(&path).args(["--var", &format!("project={PROJECT}")]);
        for v in vars {
            c.args(["--var", v]);
        }
        c.args(extra);
        run(c)
    }
}

#[test]
fn a_tune_short_of_cpu_quota_stops_at_the_preflight_before_its_first_trial() {
    let w = World::start();
    // The tune creates cluster.serving (3 × e2-highcpu-8 = 24 vCPUs) for its first trial;
    // the load cluster is not its to create.
    w.compute
        .set_region_quota(PROJECT, "us-central1", "CPUS", 16.0, 0.0);
    let (code, out, err) = w.tune(&tune_block(&[1, 2], &[]), &[], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(
            "the plan creates 24 vCPUs counted by CPUS in region us-central1 of project bench-test"
        ),
        "{err}"
    );
    assert!(
        err.contains(&at("cluster \"serving\"", "node_count")),
        "{err}"
    );
    assert!(err.contains("`--preflight=false`"), "{err}");
    assert!(!err.contains("trial 1/"), "no trial ran:\n{err}");
    w.assert_no_gke_change();
}

#[test]
fn a_tune_checks_every_image_of_its_space_in_the_registry_at_the_tune_block() {
    let w = World::start();
    let missing = format!("{REGISTRY}/bench-test/benchstack/tf-serving-regression:nightly");
    let present = format!("{REGISTRY}/{SERVING_IMAGE}");
    let (code, out, err) = w.tune(&tune_block(&[3], &[&present, &missing]), &[], &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains(&format!("tune.size: image {missing} does not exist")),
        "{err}"
    );
    // Located at the tune block's `space`, where the value is written.
    let text = literal_text() + &tune_block(&[3], &[&present, &missing]);
    let line = text
        .lines()
        .position(|l| l.starts_with("  space = {"))
        .unwrap();
    assert!(err.contains(&format!("gke.hcl:{}:", line + 1)), "{err}");
    let heads: Vec<String> = w
        .registry
        .requests()
        .into_iter()
        .filter(|(m, _)| m == "HEAD")
        .map(|(_, p)| p)
        .collect();
    assert!(
        heads.contains(&"/v2/bench-test/benchstack/tf-serving-regression/manifests/nightly".into()),
        "{heads:?}"
    );
    w.assert_no_gke_change();
}

#[test]
fn a_tune_sizes_its_trials_by_the_machine_shape_compute_engine_describes_and_runs_none_that_cannot_fit()
 {
    let w = World::start();
    // e2-medium (2 vCPUs, 4 GiB) is not in benchstack's table: by Compute Engine's shape no
    // 6-CPU replica fits a node, so no trial can be scheduled. Each is reported up front and
    // none is applied: nothing is created (without the shape, the first trial's plan would
    // only warn, and create the cluster).
    let (code, out, err) = w.tune(
        &tune_block(&[1, 2], &[]),
        &["serving_machine_type=e2-medium"],
        &["--json"],
    );
    assert_eq!(code, 2, "no winner\n{out}\n{err}");
    assert!(
        err.contains("does not fit: replicas=1 (1 trial not run): 1 replica requesting 6 CPU"),
        "{err}"
    );
    assert!(
        err.contains("does not fit: replicas=2 (1 trial not run)"),
        "{err}"
    );
    assert!(
        err.contains("does not fit: replicas=3 [current configuration] (1 trial not run)"),
        "{err}"
    );
    assert!(err.contains("on 3 × e2-medium"), "{err}");
    assert!(!err.contains("not in benchstack's table"), "{err}");
    assert!(!err.contains("trial 1/"), "no trial ran:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let trials = v["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 3, "{v}");
    for t in trials {
        assert!(
            t["not_run"]
                .as_str()
                .is_some_and(|r| r.starts_with("does not fit: ")),
            "{t}"
        );
        assert_eq!(t["measurements"], serde_json::json!([]), "{t}");
    }
    assert_eq!(v["winner"], serde_json::Value::Null);
    w.assert_no_gke_change();
}

#[test]
fn compare_stops_at_the_preflight_before_deploying_either_side() {
    let w = World::start();
    w.compute
        .set_region_quota(PROJECT, "us-central1", "CPUS", 16.0, 0.0);
    let stack = literal_stack(w.dir.path());
    let mut c = w.command(&["compare"]);
    c.arg(&stack)
        .arg("--against")
        .arg(&stack)
        .args(["--var", &format!("project={PROJECT}")]);
    let (code, out, err) = run(c);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("the plan creates 24 vCPUs counted by CPUS in region us-central1"),
        "{err}"
    );
    assert!(err.contains("`--preflight=false`"), "{err}");
    w.assert_no_gke_change();
}
