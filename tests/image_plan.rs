//! `image` blocks in the stack language and the plan: the block decodes with its context
//! hashed; `image = image.NAME` is a graph edge; an unchanged context plans no build; a changed
//! file in one context plans that image's rebuild and rolls only what uses it; a Deployment
//! that does not run the last pushed digest is rolled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use benchstack::plan::{self, Action, Plan, PlanOptions, Prior};
use benchstack::provider::providers_for;
use benchstack::stack::{VarInputs, load_with_env};
use benchstack::state::{ResourceState, Snapshot};
use benchstack::vocab::resources::{Address, Kind, ResourceConfig, Stack};

fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/regression")
}

/// A stack with two images (a serving image and a load-generator image), each with its own
/// context directory, a GKE cluster, serving and a load test that use them.
fn write_stack(dir: &Path) -> PathBuf {
    for (ctx, file) in [("serving-ctx", "model.txt"), ("worker-ctx", "main.rs")] {
        let c = dir.join(ctx);
        std::fs::create_dir_all(c.join("ignored")).unwrap();
        std::fs::write(c.join("Dockerfile"), "FROM scratch\nCOPY . /app\n").unwrap();
        std::fs::write(c.join(".dockerignore"), "ignored\n").unwrap();
        std::fs::write(c.join(file), "v1").unwrap();
        std::fs::write(c.join("ignored/cache"), "1").unwrap();
    }
    let text = format!(
        r#"
cluster "gke" {{
  provider     = "gke"
  project      = "p"
  location     = "us-central1-a"
  machine_type = "e2-highcpu-8"
  node_count   = 1
}}

model "m" {{
  base_path = "{model}"
}}

image "serving" {{
  repository = "us-central1-docker.pkg.dev/p/benchstack"
  name       = "tf-serving"
  context    = "serving-ctx"
}}

image "worker" {{
  repository = "us-central1-docker.pkg.dev/p/benchstack"
  name       = "benchstack"
  context    = "worker-ctx"
  dockerfile = "Dockerfile"
  args = {{
    PROFILE = "release"
  }}
}}

serving "tf" {{
  cluster = cluster.gke
  image   = image.serving
  models  = [model.m]
  cpu     = "1"
  memory  = "1Gi"
}}

loadtest "lt" {{
  target        = serving.tf
  loadgen_image = image.worker
  data          = "{data}"
  stage {{
    rate     = 10
    duration = "1s"
  }}
}}
"#,
        model = fixture_model().display(),
        data = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/data.csv")
            .display()
    );
    let path = dir.join("stack.hcl");
    std::fs::write(&path, text).unwrap();
    path
}

fn load(path: &Path) -> Stack {
    match load_with_env(path, &VarInputs::default(), &[]) {
        Ok(s) => s,
        Err(d) => panic!("{d}"),
    }
}

fn addr(kind: Kind, name: &str) -> Address {
    Address {
        kind,
        name: name.into(),
        key: None,
    }
}

fn make(stack: &Stack, snap: &Snapshot) -> Plan {
    plan::make(
        Some(stack),
        &providers_for(stack),
        Prior::unrefreshed(snap),
        &PlanOptions::default(),
    )
    .unwrap()
}

fn action(p: &Plan, a: &str) -> (Action, Option<String>) {
    let c = p
        .changes
        .iter()
        .find(|c| c.address.to_string() == a)
        .unwrap_or_else(|| panic!("{a} is in the plan"));
    (c.action, c.reason.clone())
}

/// The state as if `p` had been applied: images pushed with `digests`, the Deployment
/// running its image's digest.
fn applied(p: &Plan, digests: &BTreeMap<&str, &str>) -> Snapshot {
    let mut snap = Snapshot {
        lineage: p.lineage.clone(),
        serial: p.serial + 1,
        ..Default::default()
    };
    let reference = |c: &ResourceConfig, a: &Address| match c {
        ResourceConfig::Image(i) => {
            Some(format!("{}@{}", i.image_name(), digests[a.name.as_str()]))
        }
        _ => None,
    };
    let refs: BTreeMap<Address, String> = p
        .changes
        .iter()
        .filter_map(|c| Some((c.address.clone(), reference(c.after.as_ref()?, &c.address)?)))
        .collect();
    let fps: BTreeMap<String, String> = p
        .changes
        .iter()
        .map(|c| (c.address.to_string(), c.fingerprint.clone()))
        .collect();
    for c in &p.changes {
        let Some(config) = c.after.clone() else {
            continue;
        };
        let observed = match &config {
            ResourceConfig::Image(i) => serde_json::json!({
                "project": "p", "location": "us-central1", "build_id": "b1", "log_url": "",
                "source": "gs://p_cloudbuild/source/x.tgz",
                "digest": digests[c.address.name.as_str()],
                "reference": refs[&c.address],
                "content_hash": i.content_hash,
            }),
            ResourceConfig::Serving(s) => serde_json::json!({
                "image": s.image_from.as_ref().map(|a| refs[a].clone()),
            }),
            _ => serde_json::json!({}),
        };
        // What a run records: the fingerprint of everything upstream (a superset is fine).
        let upstream = if c.address.kind == Kind::Loadtest {
            fps.iter()
                .filter(|(a, _)| **a != c.address.to_string())
                .map(|(a, f)| (a.clone(), f.clone()))
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
                observed,
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

#[test]
fn an_image_block_decodes_with_its_context_hashed_and_is_a_dependency_of_what_uses_it() {
    let dir = tempfile::tempdir().unwrap();
    let stack = load(&write_stack(dir.path()));
    let worker = stack
        .resources
        .iter()
        .find(|r| r.address == addr(Kind::Image, "worker"))
        .expect("image.worker");
    let ResourceConfig::Image(i) = &worker.config else {
        panic!("an image config")
    };
    assert_eq!(
        i.context,
        std::fs::canonicalize(dir.path().join("worker-ctx")).unwrap()
    );
    assert_eq!(i.dockerfile, "Dockerfile");
    assert_eq!(i.args["PROFILE"], "release");
    assert_eq!(i.content_hash.len(), 64);
    let serving = stack
        .resources
        .iter()
        .find(|r| r.address.kind == Kind::Serving)
        .unwrap();
    assert!(serving.depends_on.contains(&addr(Kind::Image, "serving")));
    let ResourceConfig::Serving(s) = &serving.config else {
        panic!()
    };
    assert_eq!(s.image_from, Some(addr(Kind::Image, "serving")));
    assert_eq!(s.image, None);
    let lt = stack
        .resources
        .iter()
        .find(|r| r.address.kind == Kind::Loadtest)
        .unwrap();
    assert!(lt.depends_on.contains(&addr(Kind::Image, "worker")));
    // Images are built by the cloudbuild provider, whatever the cluster.
    let providers = providers_for(&stack);
    assert_eq!(
        providers[&addr(Kind::Image, "worker")].to_string(),
        "cloudbuild"
    );
}

#[test]
fn a_first_plan_builds_both_images_and_the_rendered_deployment_names_the_digest_to_come() {
    let dir = tempfile::tempdir().unwrap();
    let stack = load(&write_stack(dir.path()));
    let p = make(&stack, &Snapshot::default());
    assert_eq!(action(&p, "image.serving").0, Action::Create);
    assert_eq!(action(&p, "image.worker").0, Action::Create);
    assert_eq!(action(&p, "serving.tf").0, Action::Create);
    let serving = p
        .changes
        .iter()
        .find(|c| c.address.kind == Kind::Serving)
        .unwrap();
    let yaml = &serving.rendered["kubernetes.yaml"];
    assert!(
        yaml.contains(
            "image: us-central1-docker.pkg.dev/p/benchstack/tf-serving@(digest of image.serving)"
        ),
        "{yaml}"
    );
}

#[test]
fn an_unchanged_context_plans_no_build_and_a_changed_file_rebuilds_one_image_and_rolls_only_its_users()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = write_stack(dir.path());
    let stack = load(&path);
    let first = make(&stack, &Snapshot::default());
    let digests = BTreeMap::from([("serving", "sha256:aaa"), ("worker", "sha256:bbb")]);
    let snap = applied(&first, &digests);

    // Nothing changed: no build, nothing rolls, the load test stays as it ran.
    let again = make(&load(&path), &snap);
    assert!(!again.has_changes(), "{:?}", again.summary());

    // A file .dockerignore leaves out changes nothing either.
    std::fs::write(dir.path().join("worker-ctx/ignored/cache"), "2").unwrap();
    assert!(!make(&load(&path), &snap).has_changes());

    // A file in the worker's context: only the worker image and its user.
    std::fs::write(dir.path().join("worker-ctx/main.rs"), "v2").unwrap();
    let p = make(&load(&path), &snap);
    assert_eq!(
        action(&p, "image.worker"),
        (Action::Update, Some("context changed".into()))
    );
    assert_eq!(action(&p, "image.serving").0, Action::NoOp);
    assert_eq!(action(&p, "serving.tf").0, Action::NoOp);
    assert_eq!(
        action(&p, "loadtest.lt"),
        (
            Action::Run,
            Some("image.worker rebuilt: context changed".into())
        )
    );

    // A file in the serving image's context rolls the Deployment.
    std::fs::write(dir.path().join("worker-ctx/main.rs"), "v1").unwrap();
    std::fs::write(dir.path().join("serving-ctx/model.txt"), "v2").unwrap();
    let p = make(&load(&path), &snap);
    assert_eq!(action(&p, "image.worker").0, Action::NoOp);
    assert_eq!(action(&p, "image.serving").0, Action::Update);
    assert_eq!(
        action(&p, "serving.tf"),
        (
            Action::Update,
            Some("image.serving rebuilt: context changed".into())
        )
    );
}

#[test]
fn a_build_arg_change_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_stack(dir.path());
    let first = make(&load(&path), &Snapshot::default());
    let snap = applied(
        &first,
        &BTreeMap::from([("serving", "sha256:aaa"), ("worker", "sha256:bbb")]),
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"release\"", "\"debug\"");
    std::fs::write(&path, text).unwrap();
    let p = make(&load(&path), &snap);
    assert_eq!(
        action(&p, "image.worker"),
        (Action::Update, Some("args changed".into()))
    );
}

#[test]
fn a_deployment_not_running_the_last_pushed_digest_is_rolled() {
    // An apply that built the image, then failed before the rollout, leaves the Deployment on
    // the old digest: the next plan rolls it though nothing in the stack changed.
    let dir = tempfile::tempdir().unwrap();
    let path = write_stack(dir.path());
    let first = make(&load(&path), &Snapshot::default());
    let mut snap = applied(
        &first,
        &BTreeMap::from([("serving", "sha256:new"), ("worker", "sha256:bbb")]),
    );
    let tf = addr(Kind::Serving, "tf");
    snap.resources.get_mut(&tf).unwrap().observed = serde_json::json!({
        "image": "us-central1-docker.pkg.dev/p/benchstack/tf-serving@sha256:old"
    });
    let p = make(&load(&path), &snap);
    let (a, reason) = action(&p, "serving.tf");
    assert_eq!(a, Action::Update);
    let reason = reason.unwrap();
    assert!(
        reason.contains(
            "image.serving is us-central1-docker.pkg.dev/p/benchstack/tf-serving@sha256:new"
        ),
        "{reason}"
    );
    assert!(reason.contains("the Deployment runs"), "{reason}");
}

/// A stack whose serving image is generated (`preset = "serving"`) from its own model copy.
fn write_preset_stack(dir: &Path, batch: u32, extra: &str) -> PathBuf {
    let model = dir.join("model/regression");
    std::fs::create_dir_all(model.join("1")).unwrap();
    std::fs::create_dir_all(model.join("notes")).unwrap();
    if !model.join("1/saved_model.pb").exists() {
        std::fs::copy(
            fixture_model().join("1/saved_model.pb"),
            model.join("1/saved_model.pb"),
        )
        .unwrap();
    }
    std::fs::write(model.join("notes/readme.txt"), "not a version folder").unwrap();
    std::fs::write(dir.join("unrelated.txt"), "never in the image").unwrap();
    let text = format!(
        r#"
cluster "gke" {{
  provider     = "gke"
  project      = "p"
  location     = "us-central1-a"
  machine_type = "e2-highcpu-8"
  node_count   = 1
}}

model "regression" {{
  base_path = "model/regression"
}}

image "serving" {{
  repository = "us-central1-docker.pkg.dev/p/benchstack"
  name       = "tf-serving"
  preset     = "serving"
  {extra}
}}

serving "tf" {{
  cluster = cluster.gke
  image   = image.serving
  models  = [model.regression]
  cpu     = "1"
  memory  = "1Gi"
  batching {{
    max_batch_size = {batch}
  }}
}}
"#
    );
    let path = dir.join("stack.hcl");
    std::fs::write(&path, text).unwrap();
    path
}

fn change<'p>(p: &'p Plan, a: &str) -> &'p plan::Change {
    p.changes
        .iter()
        .find(|c| c.address.to_string() == a)
        .unwrap_or_else(|| panic!("{a} is in the plan"))
}

#[test]
fn a_serving_preset_image_is_the_plans_rendered_files_and_the_model_versions_only() {
    let dir = tempfile::tempdir().unwrap();
    let stack = load(&write_preset_stack(dir.path(), 64, ""));
    let p = make(&stack, &Snapshot::default());
    let image = change(&p, "image.serving");
    let serving = change(&p, "serving.tf");
    assert_eq!(image.action, Action::Create);
    let docker = &image.rendered["Dockerfile"];
    assert!(
        docker.contains("\nFROM tensorflow/serving:2.19.0\n"),
        "{docker}"
    );
    assert!(docker.contains("\nCOPY config/ /config/\n"), "{docker}");
    assert!(
        docker.contains("\nCOPY models/regression/ /models/regression/\n"),
        "{docker}"
    );
    // The same bytes the serving resource's ConfigMap carries.
    for f in [
        "models.config",
        "batching_parameters.txt",
        "monitoring.config",
    ] {
        assert_eq!(
            image.rendered[&format!("config/{f}")],
            serving.rendered[f],
            "{f}"
        );
    }
    assert!(serving.rendered["batching_parameters.txt"].contains("max_batch_size { value: 64 }"));
    // The context: those files and the version folder, nothing else of the directory.
    let ResourceConfig::Image(i) = image.after.as_ref().unwrap() else {
        panic!()
    };
    assert_eq!(i.content_hash.len(), 64);
    let ctx = plan::serving_image_context(i, &image.rendered).unwrap();
    let files: Vec<&str> = ctx
        .entries
        .iter()
        .filter(|e| !matches!(e.kind, benchstack::image_context::EntryKind::Dir))
        .map(|e| e.rel.as_str())
        .collect();
    assert_eq!(
        files,
        [
            "Dockerfile",
            "config/batching_parameters.txt",
            "config/models.config",
            "config/monitoring.config",
            "models/regression/1/saved_model.pb"
        ]
    );
    assert_eq!(ctx.hash(&BTreeMap::new()).unwrap(), i.content_hash);
    // The Deployment names the digest to come, as with any image block.
    assert!(serving.rendered["kubernetes.yaml"].contains(
        "image: us-central1-docker.pkg.dev/p/benchstack/tf-serving@(digest of image.serving)"
    ));
}

#[test]
fn a_batching_change_rebuilds_the_serving_preset_image_and_rolls_the_deployment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_preset_stack(dir.path(), 64, "");
    let first = make(&load(&path), &Snapshot::default());
    let snap = applied(&first, &BTreeMap::from([("serving", "sha256:aaa")]));
    let again = make(&load(&path), &snap);
    assert!(!again.has_changes(), "{:?}", again.summary());
    // A file outside the generated context changes nothing.
    std::fs::write(dir.path().join("unrelated.txt"), "v2").unwrap();
    std::fs::write(dir.path().join("model/regression/notes/readme.txt"), "v2").unwrap();
    assert!(!make(&load(&path), &snap).has_changes());

    let path = write_preset_stack(dir.path(), 128, "");
    let p = make(&load(&path), &snap);
    assert_eq!(
        (
            change(&p, "image.serving").action,
            change(&p, "image.serving").reason.clone()
        ),
        (
            Action::Update,
            Some("config/batching_parameters.txt changed".into())
        )
    );
    let reason = change(&p, "serving.tf").reason.clone().unwrap();
    assert_eq!(change(&p, "serving.tf").action, Action::Update);
    assert!(
        reason.contains("image.serving rebuilt: config/batching_parameters.txt changed"),
        "{reason}"
    );

    // A new model version: the image is rebuilt though no rendered file changed.
    let path = write_preset_stack(dir.path(), 64, "");
    std::fs::write(dir.path().join("model/regression/1/variables.txt"), "w").unwrap();
    let p = make(&load(&path), &snap);
    assert_eq!(
        change(&p, "image.serving").reason.as_deref(),
        Some("the models' version folders changed")
    );

    // The base image is the stack's to choose.
    std::fs::remove_file(dir.path().join("model/regression/1/variables.txt")).unwrap();
    let path = write_preset_stack(dir.path(), 64, "base_image = \"tensorflow/serving:2.20.0\"");
    let p = make(&load(&path), &snap);
    let image = change(&p, "image.serving");
    assert_eq!(image.action, Action::Update);
    assert!(
        image.rendered["Dockerfile"].contains("FROM tensorflow/serving:2.20.0\n"),
        "{}",
        image.rendered["Dockerfile"]
    );
}

fn load_err(path: &Path) -> String {
    match load_with_env(path, &VarInputs::default(), &[]) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(d) => d.to_string(),
    }
}

#[test]
fn a_serving_preset_refuses_a_context_of_its_own_and_needs_one_serving_resource() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_preset_stack(dir.path(), 64, "context = \".\"");
    let e = load_err(&path);
    assert!(
        e.contains("found `context` with `preset = \"serving\"`"),
        "{e}"
    );
    assert!(e.contains("stack.hcl:"), "{e}");

    let path = write_preset_stack(dir.path(), 64, "");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "image   = image.serving",
        "image   = \"tensorflow/serving:2.19.0\"",
    );
    std::fs::write(&path, text).unwrap();
    let e = load_err(&path);
    assert!(e.contains("that no serving resource uses"), "{e}");
}

#[test]
fn a_serving_preset_image_is_refused_as_a_worker_image_and_for_two_serving_resources() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_preset_stack(dir.path(), 64, "");
    let base = std::fs::read_to_string(&path).unwrap();
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/data.csv");
    std::fs::write(
        &path,
        format!(
            "{base}\nloadtest \"lt\" {{\n  target        = serving.tf\n  loadgen_image = image.serving\n  data          = \"{}\"\n  stage {{\n    rate     = 10\n    duration = \"1s\"\n  }}\n}}\n",
            data.display()
        ),
    )
    .unwrap();
    let e = load_err(&path);
    assert!(
        e.contains(
            "as the `loadgen_image` of loadtest.lt, expected a worker image built from a Dockerfile"
        ),
        "{e}"
    );

    let second = base.replace("serving \"tf\" {", "serving \"tf2\" {");
    std::fs::write(
        &path,
        format!(
            "{base}\n{}",
            &second[second.find("serving \"tf2\"").unwrap()..]
        ),
    )
    .unwrap();
    let e = load_err(&path);
    assert!(e.contains("used by serving.tf and serving.tf2"), "{e}");
    assert!(
        e.contains("one serving resource per serving-preset image"),
        "{e}"
    );
}

/// A `tune` trial's plan: the serving resource targeted, built images kept for a change of
/// their baked configuration only (`PlanOptions::keep_config_only_image_builds`), after a
/// refresh that found everything recorded running as recorded.
fn trial(stack: &Stack, snap: &Snapshot) -> Plan {
    let mut prior = Prior::unrefreshed(snap);
    prior.health = snap
        .resources
        .keys()
        .map(|a| (a.clone(), plan::Health::Ok))
        .collect();
    plan::make(
        Some(stack),
        &providers_for(stack),
        prior,
        &PlanOptions {
            targets: vec![addr(Kind::Serving, "tf")],
            keep_config_only_image_builds: true,
            ..Default::default()
        },
    )
    .unwrap()
}

#[test]
fn a_tune_trial_changing_batching_keeps_the_built_serving_image_and_the_next_plan_rebuilds_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_preset_stack(dir.path(), 64, "");
    let first = make(&load(&path), &Snapshot::default());
    let snap = applied(&first, &BTreeMap::from([("serving", "sha256:aaa")]));

    // The trial's batching: the ConfigMap carries it; the image is not rebuilt and the
    // Deployment is not rolled to another digest.
    let trial_stack = load(&write_preset_stack(dir.path(), 128, ""));
    let p = trial(&trial_stack, &snap);
    assert!(
        p.changes
            .iter()
            .all(|c| c.address != addr(Kind::Image, "serving") || c.action == Action::NoOp),
        "{:?}",
        p.summary()
    );
    let serving = change(&p, "serving.tf");
    assert_eq!(serving.action, Action::Update);
    let reason = serving.reason.clone().unwrap();
    assert_eq!(reason, "batching changed");
    assert!(serving.rendered["batching_parameters.txt"].contains("max_batch_size { value: 128 }"));

    // Applied: the serving resource runs the trial's files on the recorded digest; the image
    // is still recorded as built from the old files.
    let mut after = snap.clone();
    let s = after.resources.get_mut(&addr(Kind::Serving, "tf")).unwrap();
    s.config = serving.after.clone().unwrap();
    s.rendered = serving.rendered.clone();
    s.fingerprint = serving.fingerprint.clone();
    // The next trial (the same settings) plans nothing at all.
    assert!(!trial(&trial_stack, &after).has_changes());

    // A plain plan of the trial's stack (what `tune --write` leaves) rebuilds the image once
    // and rolls the Deployment to it: nothing is silently out of date.
    let p = make(&trial_stack, &after);
    assert_eq!(
        (
            change(&p, "image.serving").action,
            change(&p, "image.serving").reason.clone()
        ),
        (
            Action::Update,
            Some("config/batching_parameters.txt changed".into())
        )
    );
    let reason = change(&p, "serving.tf").reason.clone().unwrap();
    assert!(
        reason.contains("image.serving rebuilt: config/batching_parameters.txt changed"),
        "{reason}"
    );
    // The declared stack (what the tune restores) is the image as built.
    let declared = load(&write_preset_stack(dir.path(), 64, ""));
    assert!(
        !make(&declared, &snap).has_changes(),
        "the declared stack matches the build"
    );

    // What the ConfigMap does not carry is still built in a trial: a new model version …
    std::fs::write(dir.path().join("model/regression/1/variables.txt"), "w").unwrap();
    let p = trial(&load(&write_preset_stack(dir.path(), 128, "")), &snap);
    assert_eq!(change(&p, "image.serving").action, Action::Update);
    assert!(
        change(&p, "serving.tf")
            .reason
            .as_deref()
            .unwrap()
            .contains("image.serving rebuilt"),
    );
    std::fs::remove_file(dir.path().join("model/regression/1/variables.txt")).unwrap();
    // … or another base image.
    let p = trial(
        &load(&write_preset_stack(
            dir.path(),
            128,
            "base_image = \"tensorflow/serving:2.20.0\"",
        )),
        &snap,
    );
    assert_eq!(change(&p, "image.serving").action, Action::Update);
    // And an image never built is built.
    let p = trial(&trial_stack, &Snapshot::default());
    assert_eq!(change(&p, "image.serving").action, Action::Create);
}
