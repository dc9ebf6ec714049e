use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::loadgen::spec::{Arrival, Protocol, Rate, RequestSource, Stage};
use crate::stack::types::{
    BatchingConfig, ClusterConfig, LoadtestConfig, ModelConfig, ServingConfig, Span,
};

fn addr(kind: Kind, name: &str) -> Address {
    Address {
        kind,
        name: name.into(),
        key: None,
    }
}

fn res(address: Address, depends_on: Vec<Address>, config: ResourceConfig) -> Resource {
    Resource {
        address,
        span: Span {
            file: "stack.hcl".into(),
            line: 1,
            col: 1,
        },
        depends_on,
        config,
    }
}

/// cluster.local, model.m, serving.tf (batching max 8), loadtest.lt.
pub(crate) fn local_stack(max_batch: u64) -> Stack {
    let c = addr(Kind::Cluster, "local");
    let m = addr(Kind::Model, "m");
    let s = addr(Kind::Serving, "tf");
    let l = addr(Kind::Loadtest, "lt");
    Stack {
        files: vec![],
        resources: vec![
            res(
                c.clone(),
                vec![],
                ResourceConfig::Cluster(ClusterConfig {
                    provider: ProviderKind::Local,
                    project: None,
                    location: None,
                    machine_type: None,
                    node_count: 1,
                    disk_size_gb: None,
                    spot: false,
                    private_nodes: false,
                    labels: BTreeMap::new(),
                }),
            ),
            res(
                m.clone(),
                vec![],
                ResourceConfig::Model(ModelConfig {
                    name: "m".into(),
                    base_path: "/models/m".into(),
                    serving_path: None,
                }),
            ),
            res(
                s.clone(),
                vec![c.clone(), m.clone()],
                ResourceConfig::Serving(ServingConfig {
                    cluster: c.clone(),
                    image: None,
                    replicas: 1,
                    models: vec![m.clone()],
                    cpu: None,
                    memory: None,
                    flags: BTreeMap::new(),
                    batching: Some(BatchingConfig {
                        max_batch_size: Some(max_batch),
                        num_batch_threads: Some(2),
                        ..Default::default()
                    }),
                }),
            ),
            res(
                l.clone(),
                vec![c.clone(), s.clone()],
                ResourceConfig::Loadtest(LoadtestConfig {
                    cluster: c.clone(),
                    target: s.clone(),
                    model: "m".into(),
                    signature: None,
                    protocol: Protocol::Rest,
                    request: RequestSource::Body("{}".into()),
                    workers: 1,
                    loadgen_image: None,
                    connections: 2,
                    arrival: Arrival::Constant,
                    seed: 1,
                    warmup: Duration::ZERO,
                    timeout: Duration::from_secs(1),
                    stages: vec![Stage {
                        name: "s1".into(),
                        rate: Rate::PerSecond(10.0),
                        duration: Duration::from_secs(1),
                    }],
                    slos: vec![],
                }),
            ),
        ],
        outputs: vec![],
    }
}

/// The state as if `plan` had been applied.
fn applied(plan: &Plan) -> Snapshot {
    let mut snap = Snapshot {
        lineage: plan.lineage.clone(),
        serial: plan.serial + 1,
        ..Default::default()
    };
    let fps: BTreeMap<&Address, &String> = plan
        .changes
        .iter()
        .map(|c| (&c.address, &c.fingerprint))
        .collect();
    for c in &plan.changes {
        let Some(config) = c.after.clone() else {
            continue;
        };
        let upstream = if c.address.kind == Kind::Loadtest {
            c.depends_on
                .iter()
                .chain([&addr(Kind::Model, "m")])
                .map(|a| (a.to_string(), fps[a].clone()))
                .collect()
        } else {
            BTreeMap::new()
        };
        snap.resources.insert(
            c.address.clone(),
            ResourceState {
                address: c.address.clone(),
                provider: c.provider.clone(),
                config,
                depends_on: c.depends_on.clone(),
                observed: serde_json::json!({}),
                rendered: c.rendered.clone(),
                upstream,
                fingerprint: c.fingerprint.clone(),
                applied_at: 0,
                last_run: None,
            },
        );
    }
    snap
}

fn action_of(plan: &Plan, a: &str) -> (Action, Option<String>) {
    let c = plan
        .changes
        .iter()
        .find(|c| c.address.to_string() == a)
        .unwrap_or_else(|| panic!("{a} not in plan"));
    (c.action, c.reason.clone())
}

fn plan_for(stack: &Stack, snap: &Snapshot) -> Plan {
    make(Some(stack), snap, None, &PlanOptions::default()).unwrap()
}

#[test]
fn an_empty_state_creates_everything_and_runs_the_load_test() {
    let plan = plan_for(&local_stack(8), &Snapshot::default());
    let s = plan.summary();
    assert_eq!((s.create, s.run, s.update), (3, 1, 0));
    assert_eq!(
        action_of(&plan, "loadtest.lt"),
        (Action::Run, Some("never run".into()))
    );
    // Dependencies come first.
    let order: Vec<String> = plan.changes.iter().map(|c| c.address.to_string()).collect();
    assert!(
        order.iter().position(|a| a == "serving.tf")
            < order.iter().position(|a| a == "loadtest.lt")
    );
}

#[test]
fn an_applied_stack_plans_no_changes() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let plan = plan_for(&stack, &snap);
    assert!(!plan.has_changes(), "{}", render::text(&plan));
    assert!(render::text(&plan).starts_with("No changes."));
}

#[test]
fn a_batching_change_updates_serving_with_a_file_diff_and_reruns_the_load_test() {
    let snap = applied(&plan_for(&local_stack(8), &Snapshot::default()));
    let plan = plan_for(&local_stack(16), &snap);
    let (action, reason) = action_of(&plan, "serving.tf");
    assert_eq!(action, Action::Update);
    assert_eq!(reason.as_deref(), Some("batching changed"));
    let serving = plan
        .changes
        .iter()
        .find(|c| c.address.kind == Kind::Serving)
        .unwrap();
    let diff = &serving
        .files
        .iter()
        .find(|f| f.file == "batching_parameters.txt")
        .unwrap()
        .diff;
    assert!(diff.contains("-max_batch_size { value: 8 }"), "{diff}");
    assert!(diff.contains("+max_batch_size { value: 16 }"), "{diff}");
    assert_eq!(serving.attributes[0].path, "batching.max_batch_size");
    assert_eq!(
        action_of(&plan, "loadtest.lt"),
        (Action::Run, Some("serving.tf will be updated".into()))
    );
    assert_eq!(action_of(&plan, "cluster.local").0, Action::NoOp);
    let text = render::text(&plan);
    assert!(
        text.contains("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete, 1 to run."),
        "{text}"
    );
}

#[test]
fn a_load_test_reruns_when_upstream_changed_since_its_last_run() {
    let stack8 = local_stack(8);
    let mut snap = applied(&plan_for(&stack8, &Snapshot::default()));
    // serving.tf was updated to 16 by an apply whose load test did not run.
    let p16 = plan_for(&local_stack(16), &snap);
    let s16 = applied(&p16);
    let serving = addr(Kind::Serving, "tf");
    snap.resources
        .insert(serving.clone(), s16.resources[&serving].clone());
    let plan = plan_for(&local_stack(16), &snap);
    assert_eq!(action_of(&plan, "serving.tf").0, Action::NoOp);
    assert_eq!(
        action_of(&plan, "loadtest.lt"),
        (
            Action::Run,
            Some("serving.tf changed since the last run".into())
        )
    );
}

#[test]
fn a_removed_resource_is_deleted_and_a_location_change_replaces_a_cluster() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let mut smaller = stack.clone();
    smaller
        .resources
        .retain(|r| r.address.kind != Kind::Loadtest);
    if let ResourceConfig::Cluster(c) = &mut smaller.resources[0].config {
        c.location = Some("elsewhere".into());
    }
    let plan = plan_for(&smaller, &snap);
    assert_eq!(
        action_of(&plan, "loadtest.lt"),
        (Action::Delete, Some("no longer in the stack".into()))
    );
    assert_eq!(
        action_of(&plan, "cluster.local"),
        (
            Action::Replace,
            Some("location changed (forces replacement)".into())
        )
    );
    assert_eq!(
        action_of(&plan, "serving.tf"),
        (Action::Replace, Some("cluster.local is replaced".into()))
    );
}

#[test]
fn targets_bring_their_dependencies_and_replace_forces_a_rerun() {
    let stack = local_stack(8);
    let opts = PlanOptions {
        targets: vec![addr(Kind::Serving, "tf")],
        ..Default::default()
    };
    let plan = make(Some(&stack), &Snapshot::default(), None, &opts).unwrap();
    let touched: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .map(|c| c.address.to_string())
        .collect();
    assert_eq!(touched, ["cluster.local", "model.m", "serving.tf"]);

    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let opts = PlanOptions {
        replace: vec![addr(Kind::Loadtest, "lt")],
        ..Default::default()
    };
    let plan = make(Some(&stack), &snap, None, &opts).unwrap();
    assert_eq!(
        action_of(&plan, "loadtest.lt"),
        (Action::Run, Some("requested with --replace".into()))
    );
    let bad = PlanOptions {
        targets: vec![addr(Kind::Serving, "nope")],
        ..Default::default()
    };
    assert!(matches!(
        make(Some(&stack), &snap, None, &bad),
        Err(PlanError::UnknownTarget(_))
    ));
}

/// Answers refresh and recovery for one address as told; everything else is present.
struct FakeObserve {
    address: Address,
    read: fn() -> Result<Observation, ProviderError>,
    recover: fn() -> Result<Option<Value>, ProviderError>,
}

impl FakeObserve {
    fn reads(address: Address, read: fn() -> Result<Observation, ProviderError>) -> Self {
        FakeObserve {
            address,
            read,
            recover: || Ok(None),
        }
    }
}

impl Observe for FakeObserve {
    fn read(&self, prior: &ResourceState) -> Result<Observation, ProviderError> {
        if prior.address == self.address {
            (self.read)()
        } else {
            Ok(Observation::Present(prior.observed.clone()))
        }
    }
    fn recover(
        &self,
        _: &Intent,
        _: Option<&ResourceState>,
    ) -> Result<Option<Value>, ProviderError> {
        (self.recover)()
    }
}

#[test]
fn refresh_recreates_a_serving_process_that_died() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Ok(Observation::Gone(
            "replica 1 (pid 42) is no longer running".into(),
        ))
    });
    let plan = make(Some(&stack), &snap, Some(&obs), &PlanOptions::default()).unwrap();
    assert_eq!(
        action_of(&plan, "serving.tf"),
        (
            Action::Create,
            Some("replica 1 (pid 42) is no longer running".into())
        )
    );
    assert_eq!(action_of(&plan, "loadtest.lt").0, Action::Run);
}

#[test]
fn destroy_deletes_dependents_first() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let opts = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    let plan = make(None, &snap, None, &opts).unwrap();
    let order: Vec<String> = plan.changes.iter().map(|c| c.address.to_string()).collect();
    assert_eq!(plan.summary().delete, 4);
    let pos = |a: &str| order.iter().position(|x| x == a).unwrap();
    assert!(pos("loadtest.lt") < pos("serving.tf") && pos("serving.tf") < pos("model.m"));
}

#[test]
fn the_json_form_has_the_documented_fields() {
    let plan = plan_for(&local_stack(8), &Snapshot::default());
    let v = plan.to_json();
    assert_eq!(v["format_version"], 1);
    let c = &v["changes"][0];
    for k in ["address", "action", "reason", "before", "after"] {
        assert!(c.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["summary"]["create"], 3);
    assert_eq!(v["summary"]["run"], 1);
    assert!(
        v["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["action"] == "run")
    );
}

#[test]
fn a_failed_refresh_stops_the_plan_naming_the_resource_and_is_never_a_replacement() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Err(ProviderError::new(
            crate::provider::ErrorKind::Unavailable,
            "reading Deployment benchstack/tf",
            "the server is currently unable to handle the request",
        ))
    });
    let err = make(Some(&stack), &snap, Some(&obs), &PlanOptions::default()).unwrap_err();
    match &err {
        PlanError::Refresh { address, error } => {
            assert_eq!(address.to_string(), "serving.tf");
            assert_eq!(
                error.message(),
                Some("the server is currently unable to handle the request")
            );
        }
        other => panic!("expected a refresh error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("serving.tf: refresh failed: reading Deployment benchstack/tf: the server is currently unable"), "{text}");
    assert!(text.contains("--refresh=false"), "{text}");
}

#[test]
fn an_unsettled_resource_plans_no_change_and_carries_a_warning() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Ok(Observation::Unsettled {
            observed: serde_json::json!({}),
            warning: "cluster serving is DEGRADED: unhealthy nodes".into(),
        })
    });
    let plan = make(Some(&stack), &snap, Some(&obs), &PlanOptions::default()).unwrap();
    assert!(!plan.has_changes(), "{}", render::text(&plan));
    assert_eq!(plan.warnings.len(), 1);
    assert_eq!(plan.warnings[0].address.to_string(), "serving.tf");
    assert_eq!(
        plan.to_json()["warnings"][0]["message"],
        "cluster serving is DEGRADED: unhealthy nodes"
    );
}

#[test]
fn a_resource_broken_for_good_is_replaced_with_the_reason() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Ok(Observation::Drifted("replica 2 (pid 43) exited".into()))
    });
    let plan = make(Some(&stack), &snap, Some(&obs), &PlanOptions::default()).unwrap();
    assert_eq!(
        action_of(&plan, "serving.tf"),
        (Action::Replace, Some("replica 2 (pid 43) exited".into()))
    );
}

#[test]
fn a_failed_recovery_stops_the_plan_instead_of_planning_over_the_intent() {
    let stack = local_stack(8);
    let mut snap = applied(&plan_for(&stack, &Snapshot::default()));
    let a = addr(Kind::Serving, "tf");
    let prior = snap.resources[&a].clone();
    snap.intents.insert(
        a.clone(),
        Intent {
            address: a.clone(),
            operation: "update".into(),
            provider: "local".into(),
            config: Some(prior.config.clone()),
            depends_on: prior.depends_on.clone(),
            rendered: prior.rendered.clone(),
            upstream: BTreeMap::new(),
            data: Value::Null,
            pid: 1,
            started: 0,
        },
    );
    let obs = FakeObserve {
        address: a.clone(),
        read: || Ok(Observation::Present(Value::Null)),
        recover: || {
            Err(ProviderError::new(
                crate::provider::ErrorKind::Unavailable,
                "reading Deployment benchstack/tf",
                "connection refused",
            ))
        },
    };
    let err = make(Some(&stack), &snap, Some(&obs), &PlanOptions::default()).unwrap_err();
    assert!(
        matches!(&err, PlanError::Recover { address, .. } if *address == a),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("serving.tf"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains("record is kept"), "{text}");
}

/// Gone for the cluster; an error for anything read on it.
struct ClusterGone;

impl Observe for ClusterGone {
    fn read(&self, prior: &ResourceState) -> Result<Observation, ProviderError> {
        match prior.address.kind {
            Kind::Cluster => Ok(Observation::Gone("deleted outside benchstack".into())),
            Kind::Model => Ok(Observation::Present(prior.observed.clone())),
            _ => Err(ProviderError::new(
                crate::provider::ErrorKind::Unavailable,
                "reading",
                "connection refused",
            )),
        }
    }
    fn recover(
        &self,
        _: &Intent,
        _: Option<&ResourceState>,
    ) -> Result<Option<Value>, ProviderError> {
        Ok(None)
    }
}

#[test]
fn what_runs_on_a_cluster_that_is_gone_is_created_again_without_being_read() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let plan = make(
        Some(&stack),
        &snap,
        Some(&ClusterGone),
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(action_of(&plan, "cluster.local").0, Action::Create);
    assert_eq!(
        action_of(&plan, "serving.tf"),
        (
            Action::Create,
            Some("cluster.local no longer exists".into())
        )
    );
    assert_eq!(action_of(&plan, "loadtest.lt").0, Action::Run);
}
