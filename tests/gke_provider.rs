//! The gke provider against the loopback GKE emulator, through the real
//! google-cloud-container-v1 client: the library API (each test its own emulator and a
//! provider pointed at it, no environment variables), and the binary as a subprocess with
//! its own environment.

#[path = "support/gke_emulator.rs"]
mod gke_emulator;
#[path = "support/google_auth_emulator.rs"]
mod google_auth_emulator;
#[path = "support/http_emulator.rs"]
mod http_emulator;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use assert_cmd::prelude::*;
use benchstack::provider::gcp::{Apis, GkeClusterObserved};
use benchstack::provider::gke::GkeProvider;
use benchstack::provider::{Context, ErrorKind, Inputs, Observation, Provider, ProviderError};
use benchstack::state::{Intent, ResourceState};
use benchstack::vocab::resources::{Address, ClusterConfig, Kind, ProviderKind, ResourceConfig};
use gke_emulator::GkeEmulator;

const PROJECT: &str = "bench-proj";
const LOCATION: &str = "us-central1-a";

fn provider(emu: &GkeEmulator) -> GkeProvider {
    GkeProvider::new(&Apis {
        gke: Some(emu.url()),
        ..Apis::emulated()
    })
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
        service_account: None,
        network: None,
        subnetwork: None,
        enable_apis: false,
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
    emu.set_cluster_endpoint("127.0.0.1:6443");
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
    assert_eq!(o.endpoint, "127.0.0.1:6443");
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
fn private_nodes_are_requested_with_ip_aliases_and_two_private_clusters_share_a_network() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    let mut c = config(1);
    c.private_nodes = true;
    c.spot = true;
    create(&p, &Recorder::default(), &address("serving"), &c).unwrap();
    let live = emu.cluster(PROJECT, LOCATION, "serving").unwrap();
    assert_eq!(live["privateClusterConfig"]["enablePrivateNodes"], true);
    assert!(
        live["privateClusterConfig"]
            .get("masterIpv4CidrBlock")
            .is_none(),
        "{live}"
    );
    assert_eq!(live["ipAllocationPolicy"]["useIpAliases"], true);
    assert_eq!(live["nodePools"][0]["config"]["spot"], true);
    // A fixed control-plane range would be taken by the first cluster: the second private
    // cluster in the same network comes up too.
    create(&p, &Recorder::default(), &address("loadgen"), &c).unwrap();
    assert_eq!(
        emu.cluster(PROJECT, LOCATION, "loadgen").unwrap()["status"],
        "RUNNING"
    );
}

#[test]
fn node_pools_get_the_gke_default_scopes_so_nodes_can_pull_private_images() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    create(&p, &Recorder::default(), &address("serving"), &config(3)).unwrap();
    let pools = emu.node_pools("serving");
    assert_eq!(pools.len(), 1);
    let scopes: Vec<&str> = pools[0]["config"]["oauthScopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // gcloud's gke-default, as Terraform's google provider sets it.
    assert_eq!(
        scopes,
        [
            "https://www.googleapis.com/auth/devstorage.read_only",
            "https://www.googleapis.com/auth/logging.write",
            "https://www.googleapis.com/auth/monitoring",
            "https://www.googleapis.com/auth/service.management.readonly",
            "https://www.googleapis.com/auth/servicecontrol",
            "https://www.googleapis.com/auth/trace.append",
        ]
    );
    assert_eq!(pools[0]["config"]["serviceAccount"], "default");
    assert_eq!(pools[0]["config"]["machineType"], "e2-highcpu-8");
}

#[test]
fn service_account_network_and_subnetwork_reach_the_cluster() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    emu.remove_default_network(PROJECT);
    emu.add_network(PROJECT, "bench-vpc");
    let p = provider(&emu);
    // The project has no `default` network: GKE refuses the create, and says so.
    let err = create(&p, &Recorder::default(), &address("serving"), &config(1)).unwrap_err();
    assert!(
        err.to_string()
            .contains("Project \"bench-proj\" has no network named \"default\"."),
        "{err}"
    );
    let mut c = config(1);
    c.service_account = Some("bench-nodes@bench-proj.iam.gserviceaccount.com".into());
    c.network = Some("bench-vpc".into());
    c.subnetwork = Some("bench-subnet".into());
    create(&p, &Recorder::default(), &address("serving"), &c).unwrap();
    let live = emu.cluster(PROJECT, LOCATION, "serving").unwrap();
    assert_eq!(live["network"], "bench-vpc");
    assert_eq!(live["subnetwork"], "bench-subnet");
    assert_eq!(
        emu.node_pools("serving")[0]["config"]["serviceAccount"],
        "bench-nodes@bench-proj.iam.gserviceaccount.com"
    );
}

#[test]
fn every_cluster_is_labelled_managed_by_benchstack() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    create(&p, &Recorder::default(), &address("serving"), &config(1)).unwrap();
    let labels = &emu.cluster(PROJECT, LOCATION, "serving").unwrap()["resourceLabels"];
    assert_eq!(labels["managed-by"], "benchstack");
    assert_eq!(labels["purpose"], "benchmark");
}

#[test]
fn a_delete_during_an_auto_repair_waits_for_it_and_succeeds() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu).with_busy_wait(Duration::from_secs(60));
    let a = address("serving");
    let rec = Recorder::default();
    let observed = create(&p, &rec, &a, &config(1)).unwrap();
    let prior = record(&a, &config(1), observed);
    let op = emu
        .start_system_operation("serving", "AUTO_REPAIR_NODES", Duration::from_millis(1500))
        .unwrap();
    rec.with(|ctx| p.delete(ctx, &prior)).unwrap();
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_none());
    // Refused (400 FAILED_PRECONDITION) at least once, then accepted.
    assert!(emu.answered(400) >= 1);
    assert!(emu.count_containing("DELETE", "/clusters/serving") >= 2);
    let progress = rec.progress.lock().unwrap().clone();
    assert!(
        progress
            .iter()
            .any(|m| m.contains("GKE is busy with another operation")
                && m.contains(&format!("Cluster is running incompatible operation {op}."))),
        "{progress:?}"
    );
}

#[test]
fn a_resize_during_an_upgrade_waits_and_a_zero_busy_wait_fails_with_gkes_message() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let a = address("serving");
    let rec = Recorder::default();
    let p = provider(&emu).with_busy_wait(Duration::ZERO);
    let observed = create(&p, &rec, &a, &config(1)).unwrap();
    let prior = record(&a, &config(1), observed);
    emu.start_system_operation("serving", "UPGRADE_MASTER", Duration::from_secs(600))
        .unwrap();
    let err = rec
        .with(|ctx| {
            p.update(
                ctx,
                &prior,
                &ResourceConfig::Cluster(config(2)),
                &Inputs::default(),
            )
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains(
            "is currently upgrading cluster serving. Please wait and try again once it is done."
        ),
        "{err}"
    );

    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu).with_busy_wait(Duration::from_secs(60));
    let observed = create(&p, &rec, &a, &config(1)).unwrap();
    let prior = record(&a, &config(1), observed);
    emu.start_system_operation("serving", "UPGRADE_MASTER", Duration::from_millis(1200))
        .unwrap();
    let applied = rec
        .with(|ctx| {
            p.update(
                ctx,
                &prior,
                &ResourceConfig::Cluster(config(2)),
                &Inputs::default(),
            )
        })
        .unwrap();
    assert_eq!(applied.observed["node_count"], 2);
    assert!(emu.answered(400) >= 1);
}

#[test]
fn managed_clusters_are_found_by_their_label_and_deleted_without_a_state() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    create(&p, &Recorder::default(), &address("serving"), &config(1)).unwrap();
    create(&p, &Recorder::default(), &address("loadgen"), &config(2)).unwrap();
    let cancel = AtomicBool::new(false);
    let mut found = p.find_managed(PROJECT, LOCATION, &cancel).unwrap();
    found.sort_by(|a, b| a.cluster.name.cmp(&b.cluster.name));
    let names: Vec<&str> = found.iter().map(|m| m.cluster.name.as_str()).collect();
    assert_eq!(names, ["loadgen", "serving"]);
    assert_eq!(found[0].node_count, 2);
    assert_eq!(found[0].machine_type, "e2-highcpu-8");
    assert!(
        p.find_managed(PROJECT, "europe-west1-b", &cancel)
            .unwrap()
            .is_empty()
    );
    let rec = Recorder::default();
    rec.with(|ctx| p.delete_unrecorded(ctx, &found[1].cluster))
        .unwrap();
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_none());
    assert!(emu.cluster(PROJECT, LOCATION, "loadgen").is_some());
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
fn a_403_quota_refusal_is_a_quota_error_naming_the_quota_region_and_how_to_raise_it() {
    let emu = GkeEmulator::start();
    emu.set_cpus_quota(24.0);
    let p = provider(&emu);
    // 8 × e2-highcpu-8 = 64 vCPUs against 24.
    let err = create(&p, &Recorder::default(), &address("serving"), &config(8)).unwrap_err();
    assert_eq!(emu.answered(403), 1, "GKE answers quota refusals with 403");
    assert_eq!(err.kind(), ErrorKind::Quota, "{err}");
    let text = err.to_string();
    assert!(
        text.starts_with(
            "creating cluster serving (project bench-proj, location us-central1-a): not enough quota (CPUS in region us-central1): Insufficient regional quota to satisfy request: resource \"CPUS\": request requires '64.0' and is short '40.0'."
        ),
        "{text}"
    );
    assert!(text.contains("Nothing was created."), "{text}");
    assert!(
        text.contains("gcloud quotas preferences create --project=bench-proj --service=compute.googleapis.com --quota-id=CPUS-per-project-region --dimensions=region=us-central1 --preferred-value=64"),
        "{text}"
    );
    assert!(
        text.contains(
            "https://console.cloud.google.com/iam-admin/quotas?usage=USED&project=bench-proj"
        ),
        "{text}"
    );
    assert!(!text.contains("Application Default Credentials"), "{text}");
    assert_eq!(emu.cluster_count(), 0);
    assert_eq!(emu.count_containing("GET", "/operations/"), 0);

    // The project-wide quota, once the region has room.
    emu.set_cpus_quota(1000.0);
    emu.set_cpus_all_regions_quota(12.0);
    let err = create(&p, &Recorder::default(), &address("serving"), &config(2)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Quota, "{err}");
    assert!(
        err.to_string()
            .contains("not enough quota (CPUS_ALL_REGIONS, all regions)"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("--quota-id=CPUS-ALL-REGIONS-per-project --preferred-value=16"),
        "{err}"
    );
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
    // 3 × e2-highcpu-8 = 24 vCPUs against 16.
    emu.set_cpus_quota(16.0);

    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 1, "apply should fail:\n{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.contains("not enough quota (CPUS in region us-central1)"),
        "{all}"
    );
    assert!(all.contains("Nothing was created."), "{all}");
    assert_eq!(emu.cluster_count(), 0);
    // Nothing runs, so nothing is listed as running.
    assert!(!out.contains("Still running"), "{out}");

    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("cluster.serving"), "{out}");
    assert!(out.contains("create"), "{out}");

    // The quota was raised: the same apply now goes through.
    emu.set_cpus_quota(100.0);
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

impl Cli {
    fn write_stack(&self, text: &str) {
        std::fs::write(self.stack(), text).unwrap();
    }

    /// The lineage of this state, from its published snapshot.
    fn lineage(&self) -> String {
        let text =
            std::fs::read_to_string(self.state().join("snapshot").join("current.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["lineage"].as_str().unwrap().to_string()
    }
}

/// Two clusters: `serving` (3 × e2-highcpu-8, 24 vCPUs) and `loadgen` (2 × e2-highcpu-32,
/// 64 vCPUs), as in stacks/gke.hcl.
fn two_cluster_stack() -> String {
    format!(
        r#"
cluster "serving" {{
  provider     = "gke"
  project      = "{PROJECT}"
  location     = "{LOCATION}"
  machine_type = "e2-highcpu-8"
  node_count   = 3
}}

cluster "loadgen" {{
  provider     = "gke"
  project      = "{PROJECT}"
  location     = "{LOCATION}"
  machine_type = "e2-highcpu-32"
  node_count   = 2
}}
"#
    )
}

#[test]
fn binary_failed_apply_lists_what_still_runs_and_how_to_remove_it() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);
    cli.write_stack(&two_cluster_stack());
    // Room for serving's 24 vCPUs, not for loadgen's 64 as well.
    emu.set_cpus_quota(40.0);
    let (code, out, err) = cli.run(&[
        "apply",
        "--auto-approve",
        "--parallelism",
        "1",
        s(&cli.stack()),
    ]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("not enough quota (CPUS in region us-central1)"),
        "{out}"
    );
    assert_eq!(emu.cluster_count(), 1);
    let still = out
        .split("Still running on Google Cloud (and billing):")
        .nth(1)
        .unwrap_or_else(|| panic!("no still-running list:\n{out}"));
    assert!(
        still.contains("cluster.serving: GKE cluster serving (project bench-proj, location us-central1-a), 3 × e2-highcpu-8 nodes, about $"),
        "{still}"
    );
    assert!(!still.contains("cluster.loadgen"), "{still}");
    let remove = format!(
        "Remove them with: benchstack --state {} destroy {}",
        s(&cli.state()),
        s(&cli.stack())
    );
    assert!(still.contains(&remove), "{still}");

    // The command it names removes them.
    let (code, out, err) = cli.run(&["destroy", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(emu.cluster_count(), 0);
}

#[test]
fn binary_clusters_carry_the_managed_by_label_and_the_state_lineage() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    let labels = &emu.cluster(PROJECT, LOCATION, "serving").unwrap()["resourceLabels"];
    assert_eq!(labels["managed-by"], "benchstack");
    assert_eq!(labels["benchstack-lineage"], cli.lineage().as_str());
    // The labels benchstack adds are not drift: the next plan is empty.
    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[test]
fn binary_destroy_on_an_empty_state_finds_and_deletes_the_stacks_labelled_clusters() {
    let emu = GkeEmulator::start();
    let first = Cli::new(&emu);
    first.write_stack(&two_cluster_stack());
    let (code, out, err) = first.run(&["apply", "--auto-approve", s(&first.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    // A cluster benchstack made for another stack, in the same project and location.
    let other = Cli::new(&emu);
    other.write_stack(&format!(
        r#"
cluster "other" {{
  provider     = "gke"
  project      = "{PROJECT}"
  location     = "{LOCATION}"
  machine_type = "e2-highcpu-8"
}}
"#
    ));
    let (code, out, err) = other.run(&["apply", "--auto-approve", s(&other.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(emu.cluster_count(), 3);

    // The first state is lost: a destroy from a fresh state with the same stack. A target
    // narrows it to that cluster.
    let lost = Cli::new(&emu);
    lost.write_stack(&two_cluster_stack());
    let (code, out, err) = lost.run(&[
        "destroy",
        "--auto-approve",
        "--target",
        "cluster.loadgen",
        s(&lost.stack()),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Destroy complete: 1 cluster deleted."),
        "{out}"
    );
    assert!(emu.cluster(PROJECT, LOCATION, "loadgen").is_none());
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_some());
    create(
        &provider(&emu),
        &Recorder::default(),
        &address("loadgen"),
        &ClusterConfig {
            machine_type: Some("e2-highcpu-32".into()),
            ..config(2)
        },
    )
    .unwrap();
    let (code, out, err) = lost.run(&["destroy", "--auto-approve", s(&lost.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(
            "The state is empty, but these clusters of this stack, made by benchstack, are running:"
        ),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "serving: RUNNING, 3 × e2-highcpu-8, project bench-proj, location us-central1-a (made by state lineage {})",
            first.lineage()
        )),
        "{out}"
    );
    assert!(out.contains("other: RUNNING"), "{out}");
    assert!(
        out.contains("delete with: gcloud container clusters delete other --project bench-proj --location us-central1-a"),
        "{out}"
    );
    assert!(
        out.contains("Destroy complete: 2 clusters deleted."),
        "{out}"
    );
    assert!(emu.cluster(PROJECT, LOCATION, "serving").is_none());
    assert!(emu.cluster(PROJECT, LOCATION, "loadgen").is_none());
    assert!(
        emu.cluster(PROJECT, LOCATION, "other").is_some(),
        "not this stack's: left alone"
    );

    // Nothing of this stack left: said so.
    let (code, out, err) = lost.run(&["destroy", "--auto-approve", s(&lost.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("Nothing to destroy: the state is empty, and no cluster of this stack"),
        "{out}"
    );
}

#[test]
fn binary_plan_shows_service_account_and_network_and_a_change_replaces_the_cluster() {
    let emu = GkeEmulator::start();
    emu.add_network(PROJECT, "bench-vpc");
    let cli = Cli::new(&emu);
    let stack = |sa: &str| {
        format!(
            r#"
cluster "serving" {{
  provider        = "gke"
  project         = "{PROJECT}"
  location        = "{LOCATION}"
  machine_type    = "e2-highcpu-8"
  service_account = "{sa}"
  network         = "bench-vpc"
  subnetwork      = "bench-subnet"
}}
"#
        )
    };
    cli.write_stack(&stack("nodes@bench-proj.iam.gserviceaccount.com"));
    let (code, out, err) = cli.run(&["plan", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    for line in [
        "+ service_account = \"nodes@bench-proj.iam.gserviceaccount.com\"",
        "+ network = \"bench-vpc\"",
        "+ subnetwork = \"bench-subnet\"",
    ] {
        assert!(out.contains(line), "{line} missing:\n{out}");
    }
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        emu.node_pools("serving")[0]["config"]["serviceAccount"],
        "nodes@bench-proj.iam.gserviceaccount.com"
    );
    cli.write_stack(&stack("other@bench-proj.iam.gserviceaccount.com"));
    let (code, out, err) = cli.run(&["plan", "--detailed-exitcode", s(&cli.stack())]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("service_account changed (forces replacement)"),
        "{out}"
    );
}

// --- authentication to a cluster's Kubernetes API ---

use benchstack::provider::gcp::{self, AuthEnv};
use google_auth_emulator::GoogleAuthEmulator;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `GET /version` on the emulated API server with `auth`, through kube.
fn version_with(auth: kube::config::AuthInfo, server: &str) -> Result<String, kube::Error> {
    rt().block_on(async {
        let mut config = kube::Config::new(server.parse().unwrap());
        config.auth_info = auth;
        let client = kube::Client::try_from(config)?;
        Ok(client.apiserver_version().await?.git_version)
    })
}

fn write_json(dir: &Path, name: &str, v: &serde_json::Value) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, v.to_string()).unwrap();
    path
}

#[test]
fn a_service_account_key_is_exchanged_at_its_token_uri_for_an_access_token_the_cluster_accepts() {
    let google = GoogleAuthEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let key = google.service_account_key("bench@bench-proj.iam.gserviceaccount.com");
    let env = AuthEnv {
        path: Some(dir.path().as_os_str().to_owned()),
        credentials_file: Some(write_json(dir.path(), "key.json", &key.json)),
    };
    let token = rt().block_on(gcp::access_token_with(&env)).unwrap();
    assert!(
        token.starts_with("ya29."),
        "an OAuth access token, not a JWT: {token}"
    );
    let requests = google.token_requests();
    assert_eq!(requests.len(), 1);
    let r = &requests[0];
    assert_eq!(r.grant_type, "urn:ietf:params:oauth:grant-type:jwt-bearer");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.claims["iss"], key.email.as_str());
    assert_eq!(r.claims["aud"], google.token_uri().as_str());
    assert_eq!(
        r.scope,
        "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"
    );
    // The cluster takes it (and would refuse a self-signed JWT: anything it did not issue).
    let auth = rt()
        .block_on(gcp::cluster_auth_info_with(&env, &google.url(), ""))
        .unwrap();
    assert!(auth.exec.is_none());
    assert_eq!(
        version_with(auth, &google.url()).unwrap(),
        "v1.33.5-gke.1000000"
    );
    // The token is reused while it is valid.
    assert_eq!(google.token_requests().len(), 1);
}

#[test]
fn a_refused_key_exchange_is_a_permission_error_quoting_the_token_endpoint() {
    let google = GoogleAuthEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let mut key = google.service_account_key("stale@bench-proj.iam.gserviceaccount.com");
    // A key the endpoint does not know (deleted, or of another account).
    key.json["client_email"] = "unknown@bench-proj.iam.gserviceaccount.com".into();
    let env = AuthEnv {
        path: None,
        credentials_file: Some(write_json(dir.path(), "key.json", &key.json)),
    };
    let err = rt().block_on(gcp::access_token_with(&env)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permission, "{err}");
    assert!(err.to_string().contains("invalid_grant"), "{err}");
    assert!(err.to_string().contains(&google.token_uri()), "{err}");
}

#[test]
fn user_credentials_are_refreshed_with_the_cloud_platform_and_userinfo_email_scopes() {
    let google = GoogleAuthEmulator::start();
    let dir = tempfile::tempdir().unwrap();
    let env = AuthEnv {
        path: None,
        credentials_file: Some(write_json(
            dir.path(),
            "adc.json",
            &google.authorized_user(),
        )),
    };
    let token = rt().block_on(gcp::access_token_with(&env)).unwrap();
    assert!(token.starts_with("ya29."), "{token}");
    let r = &google.token_requests()[0];
    assert_eq!(r.grant_type, "refresh_token");
    let scopes: Vec<&str> = r.scope.split(' ').collect();
    assert!(
        scopes.contains(&"https://www.googleapis.com/auth/cloud-platform")
            && scopes.contains(&"https://www.googleapis.com/auth/userinfo.email"),
        "{scopes:?}"
    );
}

#[test]
fn gke_gcloud_auth_plugin_on_the_path_is_run_by_kube_as_kubectl_does() {
    use std::os::unix::fs::PermissionsExt;
    let google = GoogleAuthEmulator::start();
    google.allow_token("plugin-token-1");
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("gke-gcloud-auth-plugin");
    std::fs::write(
        &plugin,
        r#"#!/bin/sh
printf '%s' "$KUBERNETES_EXEC_INFO" > "$(dirname "$0")/exec-info.json"
printf '%s' '{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"plugin-token-1","expirationTimestamp":"2099-01-01T00:00:00Z"}}'
"#,
    )
    .unwrap();
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A key file is there too: the plugin wins, as for kubectl.
    let key = google.service_account_key("bench@bench-proj.iam.gserviceaccount.com");
    let env = AuthEnv {
        path: Some(std::env::join_paths([Path::new("/nonexistent"), dir.path()]).unwrap()),
        credentials_file: Some(write_json(dir.path(), "key.json", &key.json)),
    };
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD
        .encode("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let auth = rt()
        .block_on(gcp::cluster_auth_info_with(&env, &google.url(), &ca))
        .unwrap();
    let exec = auth.exec.clone().expect("exec credentials");
    assert_eq!(exec.command.as_deref(), Some(plugin.to_str().unwrap()));
    assert_eq!(
        exec.api_version.as_deref(),
        Some("client.authentication.k8s.io/v1beta1")
    );
    assert!(exec.provide_cluster_info);
    assert_eq!(
        version_with(auth, &google.url()).unwrap(),
        "v1.33.5-gke.1000000"
    );
    assert_eq!(google.api_authorizations(), ["Bearer plugin-token-1"]);
    assert!(google.token_requests().is_empty(), "no key exchange");
    // The plugin was told which cluster, as kubectl tells it.
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("exec-info.json")).unwrap())
            .unwrap();
    assert_eq!(info["spec"]["cluster"]["server"], google.url().as_str());
    assert!(
        info["spec"]["cluster"]["certificate-authority-data"].is_string(),
        "{info}"
    );
}

#[test]
fn binary_destroy_survives_an_auto_repair_that_refuses_the_delete_for_a_while() {
    let emu = GkeEmulator::start();
    let cli = Cli::new(&emu);
    let (code, out, err) = cli.run(&["apply", "--auto-approve", s(&cli.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    emu.start_system_operation("serving", "AUTO_REPAIR_NODES", Duration::from_millis(1500))
        .unwrap();
    let (code, out, err) = cli.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "destroy should wait out the repair:\n{out}\n{err}");
    assert_eq!(emu.cluster_count(), 0);
    assert!(
        emu.answered(400) >= 1,
        "the delete was refused at least once"
    );
}

#[test]
fn a_regional_cluster_has_node_count_nodes_in_each_of_three_zones() {
    let emu = GkeEmulator::start();
    emu.set_polls_until_done(0);
    let p = provider(&emu);
    let a = address("serving");
    let rec = Recorder::default();
    let mut c = config(2);
    c.location = Some("us-central1".into());
    // 2 nodes × 3 zones × 8 vCPUs = 48 against 40: refused, naming the whole request.
    emu.set_cpus_quota(40.0);
    let err = create(&p, &rec, &a, &c).unwrap_err();
    assert!(
        err.to_string()
            .contains("request requires '48.0' and is short '8.0'"),
        "{err}"
    );
    emu.set_cpus_quota(100.0);
    let observed = create(&p, &rec, &a, &c).unwrap();
    assert_eq!(observed["node_count"], 2, "per zone, as configured");
    let live = emu.cluster(PROJECT, "us-central1", "serving").unwrap();
    assert_eq!(live["currentNodeCount"], 6);
    let prior = record(&a, &c, observed);
    match rec.with(|ctx| p.read(ctx, &prior)).unwrap() {
        Observation::Present(v) => assert_eq!(v["node_count"], 2),
        other => panic!("expected Present, got {other:?}"),
    }
    let mut bigger = c.clone();
    bigger.node_count = 3;
    let applied = rec
        .with(|ctx| {
            p.update(
                ctx,
                &prior,
                &ResourceConfig::Cluster(bigger),
                &Inputs::default(),
            )
        })
        .unwrap();
    assert_eq!(applied.observed["node_count"], 3);
    assert_eq!(
        emu.cluster(PROJECT, "us-central1", "serving").unwrap()["currentNodeCount"],
        9
    );
}
