//! Loading stacks through the library: the shipped stacks, directories, variables and their
//! precedence, functions, for_each instances and references.

use std::path::{Path, PathBuf};
use std::time::Duration;

use benchstack::stack::{VarInputs, load_with_env};
use benchstack::vocab::load::{Arrival, Protocol, Rate, RequestSource, Slo};
use benchstack::vocab::resources::{Address, FlagValue, Kind, OutputValue, ResourceConfig, Stack};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn addr(kind: Kind, name: &str, key: Option<&str>) -> Address {
    Address {
        kind,
        name: name.into(),
        key: key.map(String::from),
    }
}

fn load(p: &Path, vars: VarInputs, env: &[(&str, &str)]) -> Stack {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match load_with_env(p, &vars, &env) {
        Ok(s) => s,
        Err(d) => panic!("{}: {d}", p.display()),
    }
}

fn config<'a>(s: &'a Stack, a: &Address) -> &'a ResourceConfig {
    &s.resources
        .iter()
        .find(|r| &r.address == a)
        .unwrap_or_else(|| panic!("{a} is in the stack"))
        .config
}

#[test]
fn local_stack_loads_with_defaults_edges_and_resolved_paths() {
    let s = load(&root().join("stacks/local.hcl"), VarInputs::default(), &[]);
    assert_eq!(s.resources.len(), 4);
    let lt = s
        .resources
        .iter()
        .find(|r| r.address.kind == Kind::Loadtest)
        .expect("a loadtest");
    assert!(lt.depends_on.contains(&addr(Kind::Serving, "tf", None)));
    let ResourceConfig::Loadtest(l) = &lt.config else {
        panic!("loadtest config")
    };
    // The cluster defaults to the target's; both stages parse.
    assert_eq!(l.cluster, addr(Kind::Cluster, "local", None));
    assert_eq!(l.model, "regression");
    assert_eq!(l.protocol, Protocol::Rest);
    assert_eq!(l.connections, 64);
    assert_eq!(l.timeout, Duration::from_secs(10));
    assert_eq!(l.stages.len(), 2);
    assert_eq!(l.stages[1].rate, Rate::PerSecond(3900.0));
    assert_eq!(l.stages[0].duration, Duration::from_secs(5));
    assert!(
        matches!(l.slos[0], Slo::Latency { percentile, .. } if percentile == 99.0),
        "{:?}",
        l.slos
    );
    let RequestSource::Data { path, batch_size } = &l.request else {
        panic!("data request")
    };
    assert_eq!(*batch_size, 1);
    assert_eq!(path, &root().join("examples/model/test.csv"));
    let ResourceConfig::Model(m) = config(&s, &addr(Kind::Model, "regression", None)) else {
        panic!()
    };
    assert_eq!(m.base_path, root().join("examples/model/regression"));
    let ResourceConfig::Serving(sv) = config(&s, &addr(Kind::Serving, "tf", None)) else {
        panic!()
    };
    assert_eq!(
        sv.batching.as_ref().and_then(|b| b.max_batch_size),
        Some(32)
    );
    assert_eq!(
        s.outputs[0].value,
        OutputValue::Attribute {
            address: addr(Kind::Serving, "tf", None),
            attribute: "rest_endpoint".into()
        }
    );
    // Spans point at the block in the file.
    assert_eq!(lt.span.file, root().join("stacks/local.hcl"));
    assert!(lt.span.line > 1 && lt.span.col == 1);
}

#[test]
fn sweep_makes_keyed_instances_and_loadtests_follow_their_serving_instance() {
    let s = load(
        &root().join("stacks/local-sweep.hcl"),
        VarInputs::default(),
        &[],
    );
    assert_eq!(s.resources.len(), 8);
    for key in ["large", "none", "small"] {
        let sv = addr(Kind::Serving, "tf", Some(key));
        let lt_addr = addr(Kind::Loadtest, "sweep", Some(key));
        let ResourceConfig::Loadtest(l) = config(&s, &lt_addr) else {
            panic!()
        };
        assert_eq!(l.target, sv);
        let lt = s.resources.iter().find(|r| r.address == lt_addr).unwrap();
        assert_eq!(
            lt.depends_on,
            vec![sv.clone()],
            "an instance depends on its own serving instance only"
        );
    }
    let ResourceConfig::Serving(small) = config(&s, &addr(Kind::Serving, "tf", Some("small")))
    else {
        panic!()
    };
    let b = small.batching.as_ref().unwrap();
    assert_eq!(
        (b.max_batch_size, b.batch_timeout_micros),
        (Some(8), Some(500))
    );
    assert_eq!(
        addr(Kind::Serving, "tf", Some("small")).to_string(),
        "serving.tf[\"small\"]"
    );
}

#[test]
fn gke_stack_loads_with_interpolated_image() {
    let vars = VarInputs {
        vars: vec![("project".into(), "my-project".into())],
        var_files: vec![],
    };
    let s = load(&root().join("stacks/gke.hcl"), vars, &[]);
    let ResourceConfig::Loadtest(l) = config(&s, &addr(Kind::Loadtest, "baseline", None)) else {
        panic!()
    };
    // Built by apply (image.worker) and deployed by digest.
    assert_eq!(l.loadgen_image, None);
    assert_eq!(
        l.loadgen_image_from,
        Some(addr(Kind::Image, "worker", None))
    );
    let ResourceConfig::Image(w) = config(&s, &addr(Kind::Image, "worker", None)) else {
        panic!()
    };
    assert_eq!(
        w.image_name(),
        "us-central1-docker.pkg.dev/my-project/benchstack/benchstack"
    );
    assert_eq!(w.dockerfile, "deploy/loadgen.Dockerfile");
    let ResourceConfig::Image(sv) = config(&s, &addr(Kind::Image, "serving", None)) else {
        panic!()
    };
    let preset = sv.preset.as_ref().expect("the serving preset");
    assert_eq!(preset.base_image, "tensorflow/serving:2.19.0");
    assert_eq!(preset.serving, Some(addr(Kind::Serving, "tf", None)));
    assert_eq!(preset.models[0].serving_path, "/models/regression");
    assert_eq!(l.cluster, addr(Kind::Cluster, "loadgen", None));
    assert_eq!(l.workers, 4);
    assert_eq!(l.protocol, Protocol::Grpc);
    // Not written: the 50 ms bound on a distributed worker's start and clock.
    assert_eq!(l.start_tolerance_ms, 50);
}

#[test]
fn a_loadtest_start_tolerance_is_read_as_milliseconds_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let write = |tolerance: &str| {
        let path = dir.path().join("stack.hcl");
        std::fs::write(
            &path,
            format!(
                r#"cluster "local" {{
  provider = "local"
}}
model "m" {{
  base_path = "{model}"
}}
serving "tf" {{
  cluster = cluster.local
  models  = [model.m]
}}
loadtest "l" {{
  target          = serving.tf
  request         = "{{\"instances\": [[1.0]]}}"
  start_tolerance = "{tolerance}"
  stage {{
    rate     = 10
    duration = "1s"
  }}
}}
"#,
                model = root().join("examples/model/regression").display()
            ),
        )
        .unwrap();
        path
    };
    let s = load(&write("250ms"), VarInputs::default(), &[]);
    let ResourceConfig::Loadtest(l) = config(&s, &addr(Kind::Loadtest, "l", None)) else {
        panic!()
    };
    assert_eq!(l.start_tolerance_ms, 250);
    let err = match load_with_env(&write("1h"), &VarInputs::default(), &[]) {
        Ok(_) => panic!("a 1h start_tolerance loaded"),
        Err(d) => format!("{d}"),
    };
    assert!(err.contains("start_tolerance"), "{err}");
}

#[test]
fn a_directory_loads_every_file_and_paths_resolve_per_file() {
    let dir = root().join("tests/fixtures/stacks/split");
    let s = load(&dir, VarInputs::default(), &[]);
    assert_eq!(s.files.len(), 2);
    let ResourceConfig::Serving(sv) = config(&s, &addr(Kind::Serving, "tf", None)) else {
        panic!()
    };
    assert_eq!(sv.image.as_deref(), Some("tensorflow/serving:default"));
    assert_eq!(
        sv.flags.get("rest_api_num_threads"),
        Some(&FlagValue::Int(4))
    );
    assert_eq!(
        sv.flags.get("saved_model_tags"),
        Some(&FlagValue::String("serve".into()))
    );
    let ResourceConfig::Loadtest(l) = config(&s, &addr(Kind::Loadtest, "smoke", None)) else {
        panic!()
    };
    assert!(matches!(&l.request, RequestSource::Body(b) if b.contains("instances")));
    assert_eq!(l.arrival, Arrival::Poisson);
    assert_eq!((l.seed, l.connections), (42, 8));
    assert_eq!(l.stages[0].name, "warm");
    assert_eq!(l.stages[1].name, "stage-2");
    assert_eq!(l.stages[1].rate, Rate::Max);
    assert_eq!(l.slos.len(), 2);
    let label = s.outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(
        label.value,
        OutputValue::Known(serde_json::json!("DEFAULT-1-y.json"))
    );
}

#[test]
fn variable_precedence_is_default_then_env_then_var_file_then_flag() {
    let dir = root().join("tests/fixtures/stacks/split");
    let replicas = |s: &Stack| match config(s, &addr(Kind::Serving, "tf", None)) {
        ResourceConfig::Serving(sv) => (sv.replicas, sv.image.clone().unwrap_or_default()),
        _ => panic!(),
    };
    let s = load(&dir, VarInputs::default(), &[]);
    assert_eq!(replicas(&s), (1, "tensorflow/serving:default".into()));
    let env = [
        ("BENCHSTACK_VAR_replicas", "2"),
        ("BENCHSTACK_VAR_tag", "env"),
    ];
    let s = load(&dir, VarInputs::default(), &env);
    assert_eq!(replicas(&s), (2, "tensorflow/serving:env".into()));
    let file = VarInputs {
        vars: vec![],
        var_files: vec![root().join("tests/fixtures/vars/replicas.hcl")],
    };
    let s = load(&dir, file.clone(), &env);
    assert_eq!(replicas(&s), (3, "tensorflow/serving:from-file".into()));
    let flag = VarInputs {
        vars: vec![("replicas".into(), "5".into())],
        ..file
    };
    let s = load(&dir, flag, &env);
    assert_eq!(replicas(&s), (5, "tensorflow/serving:from-file".into()));
}

#[test]
fn every_problem_in_a_stack_is_reported_in_one_run() {
    let err = load_with_env(
        &root().join("tests/bad_stacks/many_problems.hcl"),
        &VarInputs::default(),
        &[],
    )
    .unwrap_err();
    assert!(err.len() >= 4, "{err}");
    // Sorted by position, each with a location.
    let lines: Vec<usize> = err
        .items
        .iter()
        .filter_map(|d| d.span().map(|s| s.line))
        .collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

#[test]
fn a_backend_block_names_the_bucket_and_a_trimmed_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.hcl");
    std::fs::write(
        &path,
        "cluster \"local\" {\n  provider = \"local\"\n}\n\nbackend \"gcs\" {\n  bucket       = \"team-state\"\n  prefix       = \"/bench/prod/\"\n  kms_key_name = \"projects/p/locations/eu/keyRings/r/cryptoKeys/k\"\n}\n",
    )
    .unwrap();
    let s = load(&path, VarInputs::default(), &[]);
    let b = s.backend.expect("a backend");
    assert_eq!(b.url(), "gs://team-state/bench/prod");
    assert_eq!(
        b.kms_key_name.as_deref(),
        Some("projects/p/locations/eu/keyRings/r/cryptoKeys/k")
    );
    assert_eq!((b.span.line, b.span.col), (5, 1));
    // Without the block, the state is local.
    std::fs::write(&path, "cluster \"local\" {\n  provider = \"local\"\n}\n").unwrap();
    assert_eq!(load(&path, VarInputs::default(), &[]).backend, None);
}

#[test]
fn backend_blocks_take_literal_strings_one_per_stack_of_type_gcs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.hcl");
    std::fs::write(
        &path,
        r#"variable "p" {
  default = "x"
}

backend "gcs" {
  bucket       = "Team"
  prefix       = "a/../b"
  kms_key_name = "my-key"
}

backend "gcs" {
  bucket = "team"
  prefix = "${var.p}/state"
}

backend "s3" {
  bucket = "team"
}
"#,
    )
    .unwrap();
    let err = load_with_env(&path, &VarInputs::default(), &[]).unwrap_err();
    let text = err.to_string();
    let at = |line: usize, col: usize, what: &str| {
        assert!(
            err.items
                .iter()
                .any(|d| d.span().is_some_and(|s| (s.line, s.col) == (line, col))
                    && d.message.contains(what)),
            "{line}:{col} {what}\n{text}"
        );
    };
    at(6, 18, "bucket: found \"Team\", expected a bucket name");
    at(7, 18, "prefix: found \"a/../b\"");
    at(
        8,
        18,
        "kms_key_name: found \"my-key\", expected a Cloud KMS key name",
    );
    at(
        11,
        1,
        "found a second backend block, expected one per stack (the first is at",
    );
    at(
        16,
        9,
        "found the backend type \"s3\", expected `backend \"gcs\"",
    );
}

#[test]
fn a_backend_block_may_not_use_variables_or_functions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stack.hcl");
    std::fs::write(
        &path,
        "variable \"p\" {\n  default = \"x\"\n}\n\nbackend \"gcs\" {\n  bucket = \"team\"\n  prefix = \"${var.p}/state\"\n}\n",
    )
    .unwrap();
    let err = load_with_env(&path, &VarInputs::default(), &[]).unwrap_err();
    let d = err
        .items
        .iter()
        .find(|d| {
            d.message
                .contains("prefix: found a template, expected a literal string")
        })
        .unwrap_or_else(|| panic!("{err}"));
    let span = d.span().unwrap();
    assert_eq!((span.line, span.col), (7, 12), "{err}");
    std::fs::write(&path, "backend \"gcs\" {\n  bucket = lower(\"TEAM\")\n}\n").unwrap();
    let err = load_with_env(&path, &VarInputs::default(), &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("bucket: found a function call, expected a literal string"),
        "{err}"
    );
}
