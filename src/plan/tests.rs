use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::vocab::load::{Arrival, Protocol, Rate, RequestSource, Stage};
use crate::vocab::resources::{
    BatchingConfig, ClusterConfig, LoadtestConfig, ModelConfig, ProviderKind, ServingConfig, Span,
};

pub(crate) fn addr(kind: Kind, name: &str) -> Address {
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
                    service_account: None,
                    network: None,
                    subnetwork: None,
                    enable_apis: false,
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
                    image_from: None,
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
                    start_tolerance_ms: 50,
                    loadgen_image: None,
                    loadgen_image_from: None,
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
        backend: None,
    }
}

/// The state as if `plan` had been applied.
pub(crate) fn applied(plan: &Plan) -> Snapshot {
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

pub(crate) fn action_of(plan: &Plan, a: &str) -> (Action, Option<String>) {
    let c = plan
        .changes
        .iter()
        .find(|c| c.address.to_string() == a)
        .unwrap_or_else(|| panic!("{a} not in plan"));
    (c.action, c.reason.clone())
}

/// The provider of each resource: every test stack here is local.
fn local_providers(
    stack: Option<&Stack>,
) -> BTreeMap<Address, crate::vocab::resources::ProviderName> {
    stack
        .map(|s| {
            s.resources
                .iter()
                .map(|r| {
                    (
                        r.address.clone(),
                        crate::vocab::resources::ProviderName::Local,
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Plans from the state as recorded (no refresh).
pub(crate) fn plan_with(
    stack: Option<&Stack>,
    snap: &Snapshot,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    make(
        stack,
        &local_providers(stack),
        Prior::unrefreshed(snap),
        opts,
    )
}

pub(crate) fn plan_for(stack: &Stack, snap: &Snapshot) -> Plan {
    plan_with(Some(stack), snap, &PlanOptions::default()).unwrap()
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
    let json = plan.to_json();
    let attributes = &json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "serving.tf")
        .unwrap()["attributes"];
    assert_eq!(
        attributes,
        &serde_json::json!([{
            "path": "batching.max_batch_size",
            "before": 8,
            "after": 16,
            "forces_replacement": false,
        }])
    );
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
    let plan = plan_with(Some(&stack), &Snapshot::default(), &opts).unwrap();
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
    let plan = plan_with(Some(&stack), &snap, &opts).unwrap();
    assert_eq!(
        action_of(&plan, "loadtest.lt"),
        (Action::Run, Some("requested with --replace".into()))
    );
    let bad = PlanOptions {
        targets: vec![addr(Kind::Serving, "nope")],
        ..Default::default()
    };
    assert!(matches!(
        plan_with(Some(&stack), &snap, &bad),
        Err(PlanError::UnknownTarget(_))
    ));
}

#[test]
fn destroy_deletes_dependents_first() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let opts = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    let plan = plan_with(None, &snap, &opts).unwrap();
    let order: Vec<String> = plan.changes.iter().map(|c| c.address.to_string()).collect();
    assert_eq!(plan.summary().delete, 4);
    let pos = |a: &str| order.iter().position(|x| x == a).unwrap();
    assert!(pos("loadtest.lt") < pos("serving.tf") && pos("serving.tf") < pos("model.m"));
}

#[test]
fn the_json_form_has_the_documented_fields() {
    let plan = plan_for(&local_stack(8), &Snapshot::default());
    let v = plan.to_json();
    assert_eq!(v["format_version"], 2);
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
fn an_update_in_place_shows_each_changed_attribute_as_old_to_new_in_its_block() {
    let snap = applied(&plan_for(&local_stack(8), &Snapshot::default()));
    let text = render::text(&plan_for(&local_stack(16), &snap));
    for expected in [
        "  # serving.tf will be updated in place: batching changed\n",
        "  ~ serving \"tf\" {\n",
        "      ~ batching {\n          ~ max_batch_size = 8 -> 16\n",
        "            # (2 unchanged attributes hidden)\n        }\n",
        "        # (4 unchanged attributes hidden)\n    }\n",
        "    +++ b/batching_parameters.txt",
        // The load test itself did not change: only why it re-runs.
        "  # loadtest.lt will run: serving.tf will be updated\n",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    assert!(!text.contains("loadtest \"lt\" {"), "{text}");
    assert!(!text.contains("cluster \"local\""), "{text}");
}

#[test]
fn a_replacement_marks_the_attribute_that_forces_it() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let mut moved = stack.clone();
    if let ResourceConfig::Cluster(c) = &mut moved.resources[0].config {
        c.location = Some("elsewhere".into());
        c.node_count = 2;
    }
    let plan = plan_for(&moved, &snap);
    let text = render::text(&plan);
    for expected in [
        "  # cluster.local will be replaced: location changed (forces replacement)\n",
        "-/+ cluster \"local\" {\n",
        "      + location = \"elsewhere\" # forces replacement\n",
        "      ~ node_count = 1 -> 2\n",
        "  # serving.tf will be replaced: cluster.local is replaced\n",
        "-/+ serving \"tf\" {\n",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    // node_count alone updates in place: it is not marked.
    assert!(!text.contains("node_count = 1 -> 2 # forces"), "{text}");
    let json = plan.to_json();
    let cluster = &json["changes"][0];
    assert_eq!(cluster["address"], "cluster.local");
    assert_eq!(cluster["action"], "replace");
    assert_eq!(
        cluster["attributes"],
        serde_json::json!([
            {"path": "location", "before": null, "after": "elsewhere", "forces_replacement": true},
            {"path": "node_count", "before": 1, "after": 2, "forces_replacement": false},
        ])
    );
}

#[test]
fn a_load_test_change_shows_its_stage_and_slo_blocks_as_written() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let mut edited = stack.clone();
    if let ResourceConfig::Loadtest(l) = &mut edited.resources[3].config {
        l.stages[0].rate = Rate::Max;
        l.stages.push(Stage {
            name: "s2".into(),
            rate: Rate::PerSecond(250.5),
            duration: Duration::from_millis(1500),
        });
        l.slos = vec![
            crate::vocab::load::Slo::Latency {
                percentile: 99.9,
                limit: Duration::from_millis(120),
            },
            crate::vocab::load::Slo::ErrorRate { errors: 0.001 },
        ];
        l.timeout = Duration::from_secs(90);
    }
    let plan = plan_for(&edited, &snap);
    assert_eq!(
        action_of(&plan, "loadtest.lt"),
        (Action::Run, Some("timeout, stage, slo changed".into()))
    );
    let text = render::text(&plan);
    for expected in [
        "  > loadtest \"lt\" {\n",
        "      ~ timeout = \"1s\" -> \"1m30s\"\n",
        "      ~ stage {\n          ~ rate = 10 -> \"max\"\n",
        "      + stage {\n          + name = \"s2\"\n          + rate = 250.5\n          + duration = \"1s500ms\"\n        }\n",
        "      + slo {\n          + p999 = \"120ms\"\n          + errors = \"0.1%\"\n        }\n",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from\n{text}");
    }
    let json = plan.to_json();
    let lt = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "loadtest.lt")
        .unwrap();
    assert_eq!(lt["after"]["stage"][1]["duration"], 1.5);
    assert_eq!(lt["after"]["slo"]["p999"], 0.12);
    let paths: Vec<&str> = lt["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "timeout",
            "stage[0].rate",
            "stage[1].name",
            "stage[1].rate",
            "stage[1].duration",
            "slo.p999",
            "slo.errors"
        ]
    );
}

#[test]
fn json_addresses_are_strings_with_the_for_each_key() {
    let mut stack = local_stack(8);
    let small = Address {
        kind: Kind::Serving,
        name: "tf".into(),
        key: Some("small".into()),
    };
    stack.resources[2].address = small.clone();
    if let ResourceConfig::Loadtest(l) = &mut stack.resources[3].config {
        l.target = small.clone();
    }
    stack.resources[3].depends_on = vec![addr(Kind::Cluster, "local"), small.clone()];
    let plan = plan_for(&stack, &Snapshot::default());
    let json = plan.to_json();
    let addresses: Vec<&str> = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert!(
        addresses.contains(&"serving.tf[\"small\"]"),
        "{addresses:?}"
    );
    let lt = json["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "loadtest.lt")
        .unwrap();
    assert_eq!(lt["after"]["target"], "serving.tf[\"small\"]");
    assert_eq!(lt["after"]["cluster"], "cluster.local");
    let text = render::text(&plan);
    assert!(
        text.contains("  # serving.tf[\"small\"] will be created\n  + serving \"tf\" {"),
        "{text}"
    );
    assert!(
        text.contains("+ target = serving.tf[\"small\"]\n"),
        "{text}"
    );
}

#[test]
fn outputs_of_resources_that_change_are_known_after_apply() {
    let mut stack = local_stack(8);
    stack.outputs = vec![
        crate::vocab::resources::Output {
            name: "rest_endpoint".into(),
            span: Span::default(),
            value: crate::vocab::resources::OutputValue::Attribute {
                address: addr(Kind::Serving, "tf"),
                attribute: "rest_endpoint".into(),
            },
        },
        crate::vocab::resources::Output {
            name: "team".into(),
            span: Span::default(),
            value: crate::vocab::resources::OutputValue::Known(serde_json::json!("infra")),
        },
    ];
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let mut prior = Prior::unrefreshed(&snap);
    prior.outputs = BTreeMap::from([
        (
            "rest_endpoint".to_string(),
            serde_json::json!("http://127.0.0.1:8501"),
        ),
        ("team".to_string(), serde_json::json!("infra")),
        ("old".to_string(), serde_json::json!(1)),
    ]);
    let plan = make(
        Some(&local_stack_with_outputs(16, &stack)),
        &local_providers(Some(&stack)),
        prior,
        &PlanOptions::default(),
    )
    .unwrap();
    let text = render::text(&plan);
    assert!(
        text.contains("Changes to Outputs:\n  ~ rest_endpoint = \"http://127.0.0.1:8501\" -> (known after apply)\n  - old = 1 -> null\n"),
        "{text}"
    );
    assert!(!text.contains("team"), "{text}");
    let json = plan.to_json();
    assert_eq!(json["outputs"][0]["name"], "rest_endpoint");
    assert_eq!(json["outputs"][0]["after"], serde_json::Value::Null);
    assert_eq!(json["outputs"][0]["after_unknown"], true);
    assert_eq!(json["outputs"][1]["action"], "no-op");
    assert_eq!(json["outputs"][2]["action"], "delete");
}

/// `local_stack(max_batch)` with the outputs of `with`.
fn local_stack_with_outputs(max_batch: u64, with: &Stack) -> Stack {
    let mut s = local_stack(max_batch);
    s.outputs = with.outputs.clone();
    s
}

#[test]
fn paths_are_shown_relative_to_the_stack_directory() {
    use std::path::Path;
    let base = Path::new("/work/repo/stacks");
    assert_eq!(
        view::display_path(Path::new("/work/repo/examples/model/test.csv"), Some(base)),
        "../examples/model/test.csv"
    );
    assert_eq!(
        view::display_path(Path::new("/work/repo/stacks/data/x.csv"), Some(base)),
        "data/x.csv"
    );
    assert_eq!(
        view::display_path(Path::new("/elsewhere/x.csv"), Some(base)),
        "/elsewhere/x.csv"
    );
    assert_eq!(
        view::display_path(Path::new("/work/repo/x.csv"), None),
        "/work/repo/x.csv"
    );
}

#[test]
fn durations_are_written_as_the_stack_language_reads_them() {
    for (d, text) in [
        (Duration::from_secs(5), "5s"),
        (Duration::from_millis(50), "50ms"),
        (Duration::from_secs(90), "1m30s"),
        (Duration::from_secs(7200), "2h"),
        (Duration::from_micros(1_250), "1ms250us"),
        (Duration::ZERO, "0s"),
    ] {
        assert_eq!(view::format_duration(d), text);
        assert_eq!(
            crate::vocab::load::parse_duration(text).unwrap(),
            d,
            "{text}"
        );
    }
}

/// Every attribute and block the plan shows is declared in `stack::schema`, so the schema's
/// replacement rule (`forces_replacement`) and the reference page cover all of them.
#[test]
fn every_attribute_the_plan_shows_is_declared_in_the_stack_schema() {
    use crate::stack::schema::{self, BlockSchema};
    fn check(what: &str, body: &view::Body, schema: &BlockSchema) {
        for (name, _) in &body.attributes {
            let declared = schema.attr_names().contains(&name.as_str())
                || schema.computed.iter().any(|(c, _)| c == name)
                || (!schema.patterns.is_empty() && name.starts_with('p'));
            assert!(
                declared,
                "{what}: `{name}` is not declared in schema::{}",
                schema.name
            );
        }
        for b in &body.blocks {
            let nested = schema
                .nested(&b.name)
                .unwrap_or_else(|| panic!("{what}: block `{}` is not declared", b.name));
            check(&format!("{what}.{}", b.name), &b.body, nested.schema);
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut stacks = vec![local_stack(8)];
    // The GKE stack's project has no default.
    let vars = crate::stack::VarInputs {
        vars: vec![("project".into(), "my-project".into())],
        var_files: vec![],
    };
    for (f, vars) in [
        ("stacks/local.hcl", Default::default()),
        ("stacks/gke.hcl", vars),
        ("stacks/local-sweep.hcl", Default::default()),
    ] {
        stacks.push(
            crate::stack::load_with_env(&root.join(f), &vars, &[])
                .unwrap_or_else(|e| panic!("{f}: {e}")),
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for stack in &stacks {
        for r in &stack.resources {
            let kind = r.address.kind.as_str();
            let schema = schema::block(kind).expect("every resource kind is declared");
            check(
                &r.address.to_string(),
                &view::resource_body(&r.config, None),
                schema,
            );
            seen.insert(kind);
        }
    }
    // Every resource kind, images included (stacks/gke.hcl builds its two).
    assert_eq!(seen.len(), 5, "{seen:?}");
}

#[test]
fn a_load_test_from_private_nodes_to_a_public_load_balancer_is_warned_about() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let inputs = crate::stack::VarInputs {
        vars: vec![("project".into(), "p".into())],
        var_files: vec![],
    };
    let mut stack = crate::stack::load(&root.join("stacks/gke.hcl"), &inputs).unwrap();
    let baseline = stack
        .resources
        .iter()
        .find(|r| r.address.to_string() == "loadtest.baseline")
        .unwrap()
        .clone();
    assert_eq!(super::route_warning(&baseline, &stack), None);
    for r in stack.resources.iter_mut() {
        if let ResourceConfig::Cluster(c) = &mut r.config
            && r.address.name == "loadgen"
        {
            c.private_nodes = true;
        }
    }
    let w = super::route_warning(&baseline, &stack).expect("a warning");
    assert!(
        w.message.contains("cluster.loadgen has private nodes"),
        "{}",
        w.message
    );
    assert!(w.message.contains("Cloud NAT"), "{}", w.message);
}
