//! The gke provider against the loopback GKE emulator, through the real
//! google-cloud-container-v1 client: the library API (each test its own emulator and a
//! provider pointed at it, no environment variables), and the binary as a subprocess with
//! its own environment.

#[path = "support/gke_emulator.rs"]
mod gke_emulator;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use assert_cmd::prelude::*;
use benchstack::provider::gcp::GkeClusterObserved;
use benchstack::provider::gke::GkeProvider;
use benchstack::provider::{Context, ErrorKind, Inputs, Observation, Provider, ProviderError};
use benchstack::state::{Intent, ResourceState};
use benchstack::vocab::resources::{Address, ClusterConfig, Kind, ProviderKind, ResourceConfig};
use gke_emulator::GkeEmulator;

const PROJECT: &str = "bench-proj";
const LOCATION: &str = "us-central1-a";

fn provider(emu: &GkeEmulator) -> GkeProvider {
    GkeProvider::new()
        .with_emulator(emu.url())
        .with_poll_interval(Duration::from_millis(20))
}

fn address(name: &str) -> Address {
    Address {
        kind: Kind::Cluster,
        name: name.into(),
        key: None,
    }
}

fn config(node_count: u32) -> ClusterConfig {
    ClusterConfig {
        provider: ProviderKind::Gke,
        project: Some(PROJECT.into()),
        location: Some(LOCATION.into()),
        machine_type: Some("e2-highcpu-8".into()),
        node_count,
        disk_size_gb: Some(50),
        spot: false,
        private_nodes: false,
        labels: BTreeMap::from([("purpose".to_string(), "benchmark".to_string())]),
    }
}

/// What a provider call recorded: its intent notes and its progress lines.
#[derive(Default)]
struct Recorder {
    notes: Mutex<Vec<serde_json::Value>>,
    progress: Mutex<Vec<String>>,
    cancel: AtomicBool,
}

impl Recorder {
    fn with<T>(&self, f: impl FnOnce(&Context) -> T) -> T {
        let note = |v: serde_json::Value| -> Result<(), ProviderError> {
            self.notes.lock().unwrap().push(v);
            Ok(())
        };
        let progress = |m: String| self.progress.lock().unwrap().push(m);
        let dir = std::env::temp_dir();
        f(&Context {
            state_dir: &dir,
            note: &note,
            progress: &progress,
            cancel: &self.cancel,
        })
    }

    fn last_note(&self) -> serde_json::Value {
        self.notes.lock().unwrap().last().cloned().unwrap()
    }
}

fn record(address: &Address, config: &ClusterConfig, observed: serde_json::Value) -> ResourceState {
    ResourceState {
        address: address.clone(),
        provider: "gke".into(),
        config: ResourceConfig::Cluster(config.clone()),
        depends_on: vec![],
        observed,
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        fingerprint: String::new(),
        applied_at: 0,
        last_run: None,
    }
}

fn create(
    p: &GkeProvider,
    rec: &Recorder,
    a: &Address,
    c: &ClusterConfig,
) -> Result<serde_json::Value, ProviderError> {
    rec.with(|ctx| {
        p.create(
            ctx,
            a,
            &ResourceConfig::Cluster(c.clone()),
            &Inputs::default(),
        )
    })
    .map(|applied| applied.observed)
}

#[test]
fn cluster_is_created_refreshed_resized_relabelled_drifts_and_is_deleted() {
    let emu = GkeEmulator::start();
    emu.set_cluster_endpoint("http://127.0.0.1:6443");
    let p = provider(&emu);
    let a = address("serving");
    let rec = Recorder::default();

    // Create: one `benchstack` node pool as configured, waited on until RUNNING.
    let observed = create(&p, &rec, &a, &config(3)).unwrap();
    let o: GkeClusterObserved = serde_json::from_value(observed.clone()).unwrap();
    assert_eq!(
        (o.project.as_str(), o.location.as_str(), o.name.as_str()),
        (PROJECT, LOCATION, "serving")
    );
    assert_eq!(o.endpoint, "http://127.0.0.1:6443");
    assert!(!o.ca_certificate.is_empty());
    assert_eq!(o.status, "RUNNING");
    assert_eq!((o.node_pool.as_str(), o.node_count), ("benchstack", 3));
    assert_eq!(o.machine_type, "e2-highcpu-8");
    let live = emu.cluster(PROJECT, LOCATION, "serving").unwrap();
    let pool = &live["nodePools"][0];
    assert_eq!(pool["name"], "benchstack");
    assert_eq!(pool["initialNodeCount"], 3);
    assert_eq!(pool["config"]["machineType"], "e2-highcpu-8");
    assert_eq!(pool["config"]["diskSizeGb"], 50);
    assert_eq!(live["resourceLabels"]["purpose"], "benchmark");
    assert!(live.get("privateClusterConfig").is_none());
    assert_eq!(
        emu.count(
            "POST",
            "/v1/projects/bench-proj/locations/us-central1-a/clusters"
        ),
        1
    );
    assert!(emu.count_containing("GET", "/operations/") >= 2);
    // The intent names the cluster before the call and the operation after it.
    let notes = rec.notes.lock().unwrap().clone();
    assert_eq!(notes[0]["name"], "serving");
    assert_eq!(notes[0]["project"], PROJECT);
    assert!(notes[0]["operation"].is_null());
    assert!(
        notes[1]["operation"]
            .as_str()
            .unwrap()
            .starts_with("operation-")
    );
    assert!(
        rec.progress
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.starts_with("creating cluster serving: RUNNING, ")),
        "{:?}",
        rec.progress.lock().unwrap()
    );

    // Refresh: present as recorded.
    let prior = record(&a, &config(3), observed);
    match rec.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Present(v) => assert_eq!(v["node_count"], 3),
        other => panic!("expected Present, got {other:?}"),
    }

    // Update in place: the node count through setSize, the labels with the fingerprint.
    let mut wanted = config(5);
    wanted.labels.insert("run".to_string(), "two".to_string());
    let applied = rec
        .with(|ctx| {
            p.update(
                ctx,
                &prior,
                &ResourceConfig::Cluster(wanted.clone()),
                &Inputs::default(),
            )
        })
        .unwrap();
    assert_eq!(
        emu.count(
            "POST",
            "/v1/projects/bench-proj/locations/us-central1-a/clusters/serving/nodePools/benchstack:setSize"
        ),
        1
    );
    assert_eq!(
        emu.count(
            "POST",
            "/v1/projects/bench-proj/locations/us-central1-a/clusters/serving:setResourceLabels"
        ),
        1
    );
    assert_eq!(applied.observed["node_count"], 5);
    assert_eq!(
        emu.cluster(PROJECT, LOCATION, "serving").unwrap()["resourceLabels"]["run"],
        "two"
    );

    // Resized by hand: the refresh reports the live count as the live config.
    let prior = record(&a, &wanted, applied.observed);
    assert!(emu.resize_outside(PROJECT, LOCATION, "serving", 7));
    match rec.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Modified {
            observed,
            config,
            what,
        } => {
            assert_eq!(what, "node_count changed from 5 to 7");
            assert_eq!(observed["node_count"], 7);
            let ResourceConfig::Cluster(live) = *config else {
                panic!("not a cluster config")
            };
            assert_eq!(live.node_count, 7);
            assert_eq!(live.machine_type.as_deref(), Some("e2-highcpu-8"));
        }
        other => panic!("expected Modified, got {other:?}"),
    }

    // An update back to the stack's count resizes from the live count.
    let applied = rec
        .with(|ctx| {
            p.update(
                ctx,
                &prior,
                &ResourceConfig::Cluster(wanted.clone()),
                &Inputs::default(),
            )
        })
        .unwrap();
    assert_eq!(applied.observed["node_count"], 5);
    assert_eq!(
        emu.count_containing("POST", "/nodePools/benchstack:setSize"),
        2
    );

    // Delete: DELETE, waited on until the cluster is gone.
    let prior = record(&a, &wanted, applied.observed);
    rec.with(|ctx| p.delete(ctx, &prior)).unwrap();
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_none());
    assert_eq!(
        emu.count(
            "DELETE",
            "/v1/projects/bench-proj/locations/us-central1-a/clusters/serving"
        ),
        1
    );
}

#[test]
fn cluster_deleted_outside_reads_as_gone_and_deleting_it_succeeds() {
    let emu = GkeEmulator::start();
    let p = provider(&emu);
    let a = address("loadgen");
    let rec = Recorder::default();
    let observed = create(&p, &rec, &a, &config(2)).unwrap();
    let prior = record(&a, &config(2), observed);

    assert!(emu.delete_outside(PROJECT, LOCATION, "loadgen"));
    match rec.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Gone(why) => assert_eq!(
            why,
            "cluster loadgen (project bench-proj, location us-central1-a) was deleted outside benchstack"
        ),
        other => panic!("expected Gone, got {other:?}"),
    }
    // NOT_FOUND on DELETE means already gone.
    rec.with(|ctx| p.delete(ctx, &prior)).unwrap();
    assert_eq!(emu.count_containing("DELETE", "/clusters/loadgen"), 1);
}

#[test]
fn degraded_cluster_reads_as_unsettled_with_a_warning_and_an_error_cluster_as_drifted() {
    let emu = GkeEmulator::start();
    let p = provider(&emu);
    let a = address("serving");
    let rec = Recorder::default();
    let observed = create(&p, &rec, &a, &config(1)).unwrap();
    let prior = record(&a, &config(1), observed);
    assert!(emu.set_cluster_status(
        PROJECT,
        LOCATION,
        "serving",
        "DEGRADED",
        "Node pool benchstack has unhealthy nodes"
    ));
    match rec.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Unsettled { observed, warning } => {
            assert_eq!(observed["status"], "DEGRADED");
            assert!(
                warning.starts_with(
                    "cluster serving is DEGRADED: Node pool benchstack has unhealthy nodes"
                ),
                "{warning}"
            );
        }
        other => panic!("expected Unsettled, got {other:?}"),
    }
    for busy in ["RECONCILING", "PROVISIONING"] {
        assert!(emu.set_cluster_status(PROJECT, LOCATION, "serving", busy, ""));
        let got = rec.with(|ctx| p.read(ctx, &prior)).unwrap();
        assert!(
            matches!(got, Observation::Unsettled { .. }),
            "{busy}: {got:?}"
        );
    }
    assert!(emu.set_cluster_status(
        PROJECT,
        LOCATION,
        "serving",
        "ERROR",
        "All cluster resources were brought up, but the cluster API is reporting that: only 0 nodes out of 1 have registered"
    ));
    match rec.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Drifted(why) => assert_eq!(
            why,
            "cluster serving is ERROR: All cluster resources were brought up, but the cluster API is reporting that: only 0 nodes out of 1 have registered"
        ),
        other => panic!("expected Drifted, got {other:?}"),
    }
}

#[test]
fn a_503_once_on_the_cluster_get_is_retried_and_the_refresh_is_clean() {
    let emu = GkeEmulator::start();
    let p = provider(&emu).with_retry_budget(Duration::from_secs(20));
    let a = address("serving");
    let rec = Recorder::default();
    let observed = create(&p, &rec, &a, &config(1)).unwrap();
    let prior = record(&a, &config(1), observed);
    let path = format!("/v1/projects/{PROJECT}/locations/{LOCATION}/clusters/serving");
    let gets_before = emu.count("GET", &path);
    emu.unavailable_cluster_gets("serving", 1);
    match rec.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Present(v) => assert_eq!(v["status"], "RUNNING"),
        other => panic!("expected Present, got {other:?}"),
    }
    assert_eq!(
        emu.count("GET", &path) - gets_before,
        2,
        "one 503, one retry"
    );
}

#[test]
fn a_persistent_503_on_the_cluster_get_is_an_unavailable_error_with_the_api_message() {
    let emu = GkeEmulator::start();
    let p = provider(&emu).with_retry_budget(Duration::from_millis(600));
    let a = address("serving");
    let rec = Recorder::default();
    let observed = create(&p, &rec, &a, &config(1)).unwrap();
    let prior = record(&a, &config(1), observed);
    emu.unavailable_cluster_gets("serving", u32::MAX);
    let err = rec.with(|ctx| p.read(ctx, &prior)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(err.message(), Some(GkeEmulator::UNAVAILABLE_MESSAGE));
    let text = err.to_string();
    assert!(text.contains("cluster serving"), "{text}");
    assert!(text.contains(GkeEmulator::UNAVAILABLE_MESSAGE), "{text}");
    // Reading never deletes.
    assert_eq!(emu.count_containing("DELETE", "/clusters/"), 0);
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_some());
}

#[test]
fn private_nodes_are_requested_with_ip_aliases_and_the_master_range() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    let mut c = config(1);
    c.private_nodes = true;
    c.spot = true;
    create(&p, &Recorder::default(), &address("serving"), &c).unwrap();
    let live = emu.cluster(PROJECT, LOCATION, "serving").unwrap();
    assert_eq!(live["privateClusterConfig"]["enablePrivateNodes"], true);
    assert_eq!(
        live["privateClusterConfig"]["masterIpv4CidrBlock"],
        "172.16.0.32/28"
    );
    assert_eq!(live["ipAllocationPolicy"]["useIpAliases"], true);
    assert_eq!(live["nodePools"][0]["config"]["spot"], true);
}

#[test]
fn failed_create_operation_reports_its_message_and_removes_the_failed_cluster() {
    let emu = GkeEmulator::start();
    let p = provider(&emu);
    emu.fail_next_operation("Google Compute Engine: The zone does not have enough resources available to fulfill the request.");
    let err = create(&p, &Recorder::default(), &address("serving"), &config(3))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("creating cluster serving (project bench-proj, location us-central1-a): operation operation-"), "{err}");
    assert!(
        err.contains("failed: Google Compute Engine: The zone does not have enough resources"),
        "{err}"
    );
    assert!(err.ends_with("; the failed cluster was deleted"), "{err}");
    assert_eq!(emu.cluster_count(), 0);
}

#[test]
fn quota_refusal_names_the_quota_and_says_nothing_was_created() {
    let emu = GkeEmulator::start();
    let p = provider(&emu);
    emu.refuse_next_create_with_quota();
    let err = create(&p, &Recorder::default(), &address("serving"), &config(8))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "creating cluster serving (project bench-proj, location us-central1-a): quota exceeded (CPUS): Insufficient regional quota"
        ),
        "{err}"
    );
    assert!(err.contains("nothing was created"), "{err}");
    assert_eq!(emu.cluster_count(), 0);
    assert_eq!(emu.count_containing("GET", "/operations/"), 0);
}

#[test]
fn a_permission_refusal_says_to_check_the_credentials_and_the_project() {
    let emu = GkeEmulator::start();
    let p = provider(&emu);
    emu.deny_next_request();
    let err = create(&p, &Recorder::default(), &address("serving"), &config(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster serving (project bench-proj, location us-central1-a)"),
        "{err}"
    );
    assert!(err.contains("container.clusters.create"), "{err}");
    assert!(
        err.contains("check the Application Default Credentials"),
        "{err}"
    );
    assert_eq!(emu.cluster_count(), 0);
}

#[test]
fn existing_cluster_of_the_same_name_is_reported_with_what_to_do() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    create(&p, &Recorder::default(), &address("serving"), &config(1)).unwrap();
    let err = create(&p, &Recorder::default(), &address("serving"), &config(1))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster serving (project bench-proj, location us-central1-a): a cluster of that name already exists"),
        "{err}"
    );
    assert!(
        err.contains(
            "gcloud container clusters delete serving --project bench-proj --location us-central1-a"
        ),
        "{err}"
    );
}

#[test]
fn operation_still_running_at_the_timeout_is_named() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(50);
    let p = provider(&emu).with_timeout(Duration::ZERO);
    let err = create(&p, &Recorder::default(), &address("serving"), &config(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("operation operation-"), "{err}");
    assert!(
        err.contains("was still PENDING after 0s; it goes on in GKE"),
        "{err}"
    );
    // A cluster still being created is left to finish, not deleted.
    assert_eq!(emu.count_containing("DELETE", "/clusters/serving"), 0);
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_some());
}

#[test]
fn failed_resize_operation_reports_its_message_and_keeps_the_cluster() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(1);
    let p = provider(&emu);
    let a = address("serving");
    let rec = Recorder::default();
    let observed = create(&p, &rec, &a, &config(2)).unwrap();
    let prior = record(&a, &config(2), observed);
    emu.fail_next_operation(
        "Node pool benchstack: instance group resize failed: ZONE_RESOURCE_POOL_EXHAUSTED",
    );
    let err = rec
        .with(|ctx| {
            p.update(
                ctx,
                &prior,
                &ResourceConfig::Cluster(config(4)),
                &Inputs::default(),
            )
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "resizing cluster serving (project bench-proj, location us-central1-a): operation operation-"
        ),
        "{err}"
    );
    assert!(
        err.ends_with(
            "failed: Node pool benchstack: instance group resize failed: ZONE_RESOURCE_POOL_EXHAUSTED"
        ),
        "{err}"
    );
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_some());
}

#[test]
fn cancelled_create_is_continued_by_recovery_which_adopts_the_cluster() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(3);
    let p = provider(&emu);
    let a = address("serving");
    let rec = Recorder::default();
    rec.cancel.store(true, Ordering::SeqCst);
    let err = create(&p, &rec, &a, &config(2)).unwrap_err();
    assert!(matches!(err, ProviderError::Interrupted), "{err}");
    let intent = Intent {
        address: a.clone(),
        operation: "create".into(),
        provider: "gke".into(),
        config: Some(ResourceConfig::Cluster(config(2))),
        depends_on: vec![],
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        data: rec.last_note(),
        pid: 0,
        started: 0,
    };

    // A plan finds the operation still running: nothing to adopt yet, nothing touched.
    let fresh = Recorder::default();
    let adopted = fresh
        .with(|ctx| p.recover(ctx, &intent, None, false))
        .unwrap();
    assert_eq!(adopted, None);
    assert_eq!(emu.count_containing("DELETE", "/clusters/serving"), 0);

    // An apply waits for it and adopts the cluster.
    let adopted = fresh
        .with(|ctx| p.recover(ctx, &intent, None, true))
        .unwrap()
        .unwrap();
    assert_eq!(adopted["status"], "RUNNING");
    assert_eq!(adopted["node_count"], 2);
    assert_eq!(emu.count_containing("POST", "/clusters"), 1);
}

#[test]
fn recovery_of_an_interrupted_delete_finishes_it() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    let a = address("serving");
    create(&p, &Recorder::default(), &a, &config(1)).unwrap();
    let intent = Intent {
        address: a.clone(),
        operation: "delete".into(),
        provider: "gke".into(),
        config: Some(ResourceConfig::Cluster(config(1))),
        depends_on: vec![],
        rendered: BTreeMap::new(),
        upstream: BTreeMap::new(),
        data: serde_json::json!({
            "project": PROJECT, "location": LOCATION, "name": "serving", "step": "delete"
        }),
        pid: 0,
        started: 0,
    };
    let rec = Recorder::default();
    assert_eq!(
        rec.with(|ctx| p.recover(ctx, &intent, None, false))
            .unwrap(),
        None
    );
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_some());
    assert_eq!(
        rec.with(|ctx| p.recover(ctx, &intent, None, true)).unwrap(),
        None
    );
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_none());
}

// --- through the binary, as a subprocess with its own environment ---

struct Cli {
    dir: tempfile::TempDir,
    endpoint: String,
}

impl Cli {
    fn new(emu: &GkeEmulator) -> Cli {
        let cli = Cli {
            dir: tempfile::tempdir().unwrap(),
            endpoint: emu.url(),
        };
        std::fs::write(
            cli.stack(),
            format!(
                r#"
cluster "serving" {{
  provider     = "gke"
  project      = "{PROJECT}"
  location     = "{LOCATION}"
  machine_type = "e2-highcpu-8"
  node_count   = 3
}}
"#
            ),
        )
        .unwrap();
        cli
    }

    fn stack(&self) -> PathBuf {
        self.dir.path().join("stack.hcl")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `benchstack --state STATE ARGS…` (commands that take a stack get it via `self.stack()`).
    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::cargo_bin("benchstack")
            .unwrap()
            .arg("--state")
            .arg(self.state())
            .args(args)
            .env("BENCHSTACK_GKE_ENDPOINT", &self.endpoint)
            .env("BENCHSTACK_POLL_INTERVAL", "20ms")
            .env("BENCHSTACK_RETRY_BUDGET", "2s")
            .env_remove("BENCHSTACK_GKE_TIMEOUT")
            .current_dir(self.dir.path())
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

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn binary_applies_plans_and_destroys_a_gke_cluster() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);

    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    assert!(out.contains("cluster.serving"), "{out}");
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_some());
    assert!(cli.state().exists());

    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("No changes."), "{out}");

    // Resized by hand: the plan shows the drift as an in-place update.
    assert!(emu.resize_outside(PROJECT, LOCATION, "serving", 5));
    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("node_count changed from 3 to 5"), "{out}");

    let (code, out, err) = cli.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "destroy failed:\n{out}\n{err}");
    assert_eq!(emu.cluster_count(), 0);
}

#[test]
fn binary_failed_create_keeps_the_state_and_the_next_plan_proposes_it_again() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);
    emu.refuse_next_create_with_quota();

    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_ne!(code, 0, "apply should fail:\n{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(all.contains("quota exceeded (CPUS)"), "{all}");
    assert!(all.contains("nothing was created"), "{all}");
    assert_eq!(emu.cluster_count(), 0);

    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("cluster.serving"), "{out}");
    assert!(out.contains("create"), "{out}");

    // The quota was raised: the same apply now goes through.
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    assert_eq!(emu.cluster_count(), 1);
}

/// Every file under `dir`, by relative path, with its bytes.
fn files_of(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

impl Cli {
    /// What the state holds, as the state commands show it: resources, the record of
    /// `cluster.serving`, and the history (a write of any kind adds to one of them).
    fn dump(&self) -> String {
        let mut all = String::new();
        for args in [
            &["state", "list"][..],
            &["state", "show", "cluster.serving"],
            &["state", "history"],
        ] {
            let (code, out, err) = self.run(args);
            assert_eq!(code, 0, "{args:?}: {out}\n{err}");
            all.push_str(&out);
        }
        all
    }
}

#[test]
fn binary_plan_apply_and_destroy_stop_on_a_persistent_503_and_change_nothing() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    // The readers below answer from the published snapshot without opening the database;
    // sled compacts its log into a new snapshot file the first time it is opened after the
    // apply's writes. Open it once (a plan that needs no API) so that what is compared below
    // is what the failing commands do.
    let (code, out, err) = cli.run(&["plan", "--refresh=false", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let dump = cli.dump();
    let files = files_of(&cli.state());
    let posts = emu.count_containing("POST", "/clusters");

    emu.unavailable_cluster_gets("serving", u32::MAX);
    for args in [
        vec!["plan", s(&cli.stack())],
        vec!["plan", "--detailed-exitcode", s(&cli.stack())],
        vec!["apply", "--auto-approve", s(&cli.stack())],
        vec!["destroy", "--auto-approve"],
    ] {
        let (code, out, err) = cli.run(&args);
        assert_eq!(code, 1, "{args:?} should fail:\n{out}\n{err}");
        assert!(
            err.contains("cluster.serving: refresh failed"),
            "{args:?}: {err}"
        );
        assert!(
            err.contains(GkeEmulator::UNAVAILABLE_MESSAGE),
            "{args:?}: {err}"
        );
        assert!(err.contains("--refresh=false"), "{args:?}: {err}");
        assert!(!out.contains("replace"), "{args:?}: {out}");
    }
    // Nothing was deleted or created, and the state is as it was, byte for byte.
    assert_eq!(emu.count_containing("DELETE", "/clusters"), 0);
    assert_eq!(emu.count_containing("POST", "/clusters"), posts);
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_some());
    let now = files_of(&cli.state());
    let changed: Vec<_> = now
        .keys()
        .chain(files.keys())
        .filter(|k| now.get(*k) != files.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "the state directory changed: {changed:?}"
    );
    assert_eq!(cli.dump(), dump);

    // The way out while the API is down: plan from the recorded state.
    let (code, out, err) = cli.run(&[
        "plan",
        "--refresh=false",
        "--detailed-exitcode",
        s(&cli.stack()),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("No changes."), "{out}");
}

#[test]
fn binary_plan_is_clean_after_one_503_that_a_retry_cures() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    emu.unavailable_cluster_gets("serving", 1);
    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("No changes."), "{out}");
    let path = format!("/v1/projects/{PROJECT}/locations/{LOCATION}/clusters/serving");
    assert!(
        emu.requests()
            .iter()
            .filter(|(m, p)| m == "GET" && *p == path)
            .count()
            >= 2
    );
}

#[test]
fn binary_error_cluster_is_replaced_quoting_gke_and_degraded_one_only_warns() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");

    assert!(emu.set_cluster_status(
        PROJECT,
        LOCATION,
        "serving",
        "DEGRADED",
        "Node pool benchstack has unhealthy nodes"
    ));
    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("No changes."), "{out}");
    assert!(
        err.contains("Warning: cluster.serving: cluster serving is DEGRADED: Node pool benchstack has unhealthy nodes"),
        "{err}"
    );
    // apply with the degraded cluster changes nothing either.
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(emu.count_containing("DELETE", "/clusters"), 0);

    assert!(emu.set_cluster_status(
        PROJECT,
        LOCATION,
        "serving",
        "ERROR",
        "Insufficient CPU quota to recreate the node pool"
    ));
    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("replace"), "{out}");
    assert!(
        out.contains("cluster serving is ERROR: Insufficient CPU quota to recreate the node pool"),
        "{out}"
    );
}
