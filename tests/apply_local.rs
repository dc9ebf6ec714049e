//! Plan and apply through the library with the local provider: real `benchstack serve`
//! processes on loopback ports, a real sled state.

#[path = "support/local_stack.rs"]
mod local_stack;

use benchstack::apply;
use benchstack::plan::{Action, PlanOptions};
use benchstack::provider::local::models_available;
use benchstack::state::Store;
use benchstack::state::gcs::Endpoint;
use benchstack::vocab::resources::Kind;
use local_stack::*;
use std::time::Duration;

fn action(plan: &benchstack::plan::Plan, a: &str) -> Action {
    plan.changes
        .iter()
        .find(|c| c.address.to_string() == a)
        .map(|c| c.action)
        .unwrap_or(Action::NoOp)
}

#[test]
fn serving_is_created_updated_with_new_processes_refreshed_and_destroyed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test", &Endpoint::Google).unwrap();
    let providers = providers(dir.path());
    let serving = addr(Kind::Serving, "tf");
    let opts = PlanOptions::default();

    // Create: two replicas on distinct ports, both serving the model.
    let p = plan(&store, &providers, Some(&serving_stack(2, 8)), &opts);
    assert_eq!(action(&p, "serving.tf"), Action::Create);
    let out = apply(&store, &providers, &p);
    assert!(out.ok(), "{out:?}");
    let first = pids(&store, &serving);
    let mut reaper = Reaper(first.clone());
    assert_eq!(first.len(), 2);
    let rec = store.resource(&serving).unwrap().unwrap();
    let ports: Vec<u16> = rec.observed["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rest_port"].as_u64().unwrap() as u16)
        .collect();
    assert_ne!(ports[0], ports[1]);
    for port in &ports {
        assert!(models_available(
            *port,
            &["regression".into()],
            Duration::from_secs(5)
        ));
    }
    assert_eq!(
        store.outputs().unwrap()["rest_endpoint"],
        format!("http://127.0.0.1:{}", ports[0])
    );

    // Unchanged: no changes after a refresh that finds both processes.
    let p = plan(&store, &providers, Some(&serving_stack(2, 8)), &opts);
    assert!(!p.has_changes(), "{}", benchstack::plan::render::text(&p));

    // A batching change restarts serving with the new file; the old processes are gone.
    let p = plan(&store, &providers, Some(&serving_stack(2, 16)), &opts);
    assert_eq!(action(&p, "serving.tf"), Action::Update);
    assert!(apply(&store, &providers, &p).ok());
    let second = pids(&store, &serving);
    reaper.0.extend(&second);
    assert!(
        first.iter().all(|p| !alive(*p)),
        "old replicas still running"
    );
    assert!(second.iter().all(|p| alive(*p)));
    let dir_now = store.resource(&serving).unwrap().unwrap().observed["directory"]
        .as_str()
        .unwrap()
        .to_string();
    let batching = std::fs::read_to_string(format!("{dir_now}/batching_parameters.txt")).unwrap();
    assert!(
        batching.contains("max_batch_size { value: 16 }"),
        "{batching}"
    );

    // A replica killed behind benchstack's back: refresh notices, plan replaces.
    unsafe {
        libc::kill(second[1] as i32, libc::SIGKILL);
    }
    std::thread::sleep(Duration::from_millis(200));
    let p = plan(&store, &providers, Some(&serving_stack(2, 16)), &opts);
    assert_eq!(action(&p, "serving.tf"), Action::Replace);
    let reason = p
        .changes
        .iter()
        .find(|c| c.address == serving)
        .unwrap()
        .reason
        .clone()
        .unwrap();
    assert!(reason.contains(&format!("pid {}", second[1])), "{reason}");
    assert!(apply(&store, &providers, &p).ok());
    let third = pids(&store, &serving);
    reaper.0.extend(&third);
    assert!(!alive(second[0]));

    // Destroy stops every process and empties the state.
    let destroy = PlanOptions {
        destroy: true,
        ..Default::default()
    };
    let p = plan(&store, &providers, None, &destroy);
    assert!(apply(&store, &providers, &p).ok());
    assert!(third.iter().all(|p| !alive(*p)), "destroy left a process");
    assert!(store.resources().unwrap().is_empty());
}

#[test]
fn the_files_the_server_reads_are_the_bytes_the_plan_showed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test", &Endpoint::Google).unwrap();
    let providers = providers(dir.path());
    let serving = addr(Kind::Serving, "tf");
    let p = plan(
        &store,
        &providers,
        Some(&serving_stack(1, 16)),
        &PlanOptions::default(),
    );
    let shown = p
        .changes
        .iter()
        .find(|c| c.address == serving)
        .unwrap()
        .rendered
        .clone();
    let out = apply(&store, &providers, &p);
    let _reaper = Reaper(pids(&store, &serving));
    assert!(out.ok(), "{out:?}");
    let rec = store.resource(&serving).unwrap().unwrap();
    let written = std::path::PathBuf::from(rec.observed["directory"].as_str().unwrap());
    for name in ["models.config", "batching_parameters.txt"] {
        let on_disk = std::fs::read_to_string(written.join(name)).unwrap();
        assert_eq!(Some(&on_disk), shown.get(name), "{name}");
    }
}

#[test]
fn a_server_started_but_not_recorded_is_adopted_not_started_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "test", &Endpoint::Google).unwrap();
    let providers = providers(dir.path());
    let serving = addr(Kind::Serving, "tf");
    let stack = serving_stack(1, 8);
    let opts = PlanOptions::default();
    // Apply everything but serving.
    let p = plan(
        &store,
        &providers,
        Some(&stack),
        &PlanOptions {
            targets: vec![
                addr(Kind::Model, "regression"),
                addr(Kind::Cluster, "local"),
            ],
            ..Default::default()
        },
    );
    assert!(apply(&store, &providers, &p).ok());

    // Simulate an apply killed right after the server came up: the provider ran (intent
    // written with its ports) but the resource was never recorded.
    let p = plan(&store, &providers, Some(&stack), &opts);
    let change = p
        .changes
        .iter()
        .find(|c| c.address == serving)
        .unwrap()
        .clone();
    let intent = std::sync::Mutex::new(benchstack::state::Intent {
        address: serving.clone(),
        operation: "create".into(),
        provider: "local".into(),
        config: change.after.clone(),
        depends_on: change.depends_on.clone(),
        rendered: change.rendered.clone(),
        upstream: Default::default(),
        data: serde_json::Value::Null,
        pid: 1,
        started: 0,
    });
    store.put_intent(&intent.lock().unwrap()).unwrap();
    let note = |v: serde_json::Value| {
        let mut i = intent.lock().unwrap();
        i.data = v;
        store
            .put_intent(&i)
            .map(|_| ())
            .map_err(|e| benchstack::provider::ProviderError::State(e.to_string()))
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let ctx = benchstack::provider::Context {
        state_dir: dir.path(),
        note: &note,
        progress: &|_| {},
        cancel: &cancel,
    };
    let mut inputs = benchstack::provider::Inputs::default();
    for r in &stack.resources {
        inputs.configs.insert(r.address.clone(), r.config.clone());
    }
    let applied = providers
        .provider(benchstack::provider::ProviderName::Local)
        .unwrap()
        .create(&ctx, &serving, change.after.as_ref().unwrap(), &inputs)
        .unwrap();
    let started: Vec<u32> = applied.observed["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap() as u32)
        .collect();
    let _reaper = Reaper(started.clone());
    assert!(store.resource(&serving).unwrap().is_none());

    // The next plan finds the running server through the intent: nothing to do.
    let p = plan(&store, &providers, Some(&stack), &opts);
    assert_eq!(
        action(&p, "serving.tf"),
        Action::NoOp,
        "{}",
        benchstack::plan::render::text(&p)
    );

    // Apply's recovery records it; no second server.
    apply::recover(&store, &providers, &|_| {}).unwrap();
    assert_eq!(pids(&store, &serving), started);
    assert!(store.intents().unwrap().is_empty());
    let p = plan(&store, &providers, Some(&stack), &opts);
    assert!(!p.has_changes());
    let dir_str = dir.path().display().to_string();
    assert_eq!(benchstack::state::procinfo::find_by_arg(&dir_str).len(), 1);

    let p = plan(
        &store,
        &providers,
        None,
        &PlanOptions {
            destroy: true,
            ..Default::default()
        },
    );
    assert!(apply(&store, &providers, &p).ok());
    assert!(benchstack::state::procinfo::find_by_arg(&dir_str).is_empty());
}

/// The serving record of a (tampered) state: `directory` and `replicas` as given.
fn serving_record(
    directory: &str,
    replicas: serde_json::Value,
) -> benchstack::state::ResourceState {
    let stack = serving_stack(1, 8);
    let s = stack
        .resources
        .iter()
        .find(|r| r.address.kind == Kind::Serving)
        .unwrap();
    benchstack::state::ResourceState {
        address: s.address.clone(),
        provider: "local".into(),
        config: s.config.clone(),
        depends_on: s.depends_on.clone(),
        observed: serde_json::json!({
            "binary": "benchstack",
            "directory": directory,
            "models": ["regression"],
            "replicas": replicas,
            "rest_endpoint": "http://127.0.0.1:9",
            "grpc_endpoint": "127.0.0.1:9",
            "rest_endpoints": ["http://127.0.0.1:9"],
            "grpc_endpoints": ["127.0.0.1:9"],
            "started_at": 0,
        }),
        rendered: Default::default(),
        upstream: Default::default(),
        fingerprint: String::new(),
        applied_at: 0,
        last_run: None,
    }
}

/// Deletes through the local provider, returning what it reported.
fn delete_local(state: &std::path::Path, prior: &benchstack::state::ResourceState) -> Vec<String> {
    let said = std::sync::Mutex::new(Vec::new());
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let progress = |m: String| said.lock().unwrap().push(m);
    let ctx = benchstack::provider::Context {
        state_dir: state,
        note: &|_| Ok(()),
        progress: &progress,
        cancel: &cancel,
    };
    providers(state)
        .provider(benchstack::provider::ProviderName::Local)
        .unwrap()
        .delete(&ctx, prior)
        .unwrap();
    said.into_inner().unwrap()
}

#[test]
fn a_tampered_state_never_makes_delete_remove_a_directory_benchstack_does_not_own() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let local = state.join("local").join("serving.tf");
    std::fs::create_dir_all(&local).unwrap();
    // Something precious outside the state, and an old working directory without the marker.
    let victim = dir.path().join("precious");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("data"), "keep me").unwrap();
    std::fs::write(victim.join(benchstack::provider::local::OWNED_MARKER), "").unwrap();
    let unmarked = local.join("g-old");
    std::fs::create_dir_all(&unmarked).unwrap();
    std::fs::write(unmarked.join("models.config"), "old").unwrap();
    std::os::unix::fs::symlink(&victim, local.join("g-link")).unwrap();
    let parent_hop = format!("{}/../../../precious", local.display());

    for recorded in [
        "/".to_string(),
        "..".to_string(),
        "".to_string(),
        "precious".to_string(),
        victim.display().to_string(),
        parent_hop,
        local.join("g-link").display().to_string(),
        state.join("local").display().to_string(),
        unmarked.display().to_string(),
    ] {
        let said = delete_local(&state, &serving_record(&recorded, serde_json::json!([])));
        assert!(
            said.iter().any(|m| m.starts_with("warning: left")),
            "{recorded:?}: no warning in {said:?}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(victim.join("data")).unwrap(),
        "keep me"
    );
    assert!(unmarked.join("models.config").is_file());
    assert!(state.join("local").is_dir());

    // A directory benchstack made (it carries the marker) is removed.
    let owned = local.join("g-new");
    std::fs::create_dir_all(&owned).unwrap();
    std::fs::write(owned.join(benchstack::provider::local::OWNED_MARKER), "").unwrap();
    let said = delete_local(
        &state,
        &serving_record(&owned.display().to_string(), serde_json::json!([])),
    );
    assert!(said.is_empty(), "{said:?}");
    assert!(!owned.exists());
}

#[test]
fn delete_stops_only_the_recorded_process_with_its_start_time_never_by_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let working = state.join("local").join("serving.tf").join("g1");
    std::fs::create_dir_all(&working).unwrap();
    std::fs::write(working.join(benchstack::provider::local::OWNED_MARKER), "").unwrap();
    // A process that mentions the working directory but was never recorded, and one whose pid
    // is recorded with another start time (a reused pid).
    let mut unrecorded = std::process::Command::new("sh")
        .args(["-c", "sleep 30; true", &working.display().to_string()])
        .spawn()
        .unwrap();
    let mut reused = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .unwrap();
    let _reaper = Reaper(vec![unrecorded.id(), reused.id()]);
    let start = benchstack::state::procinfo::start_time(reused.id()).unwrap();
    let replicas = serde_json::json!([{
        "pid": reused.id(),
        "start_time": start + 1,
        "grpc_port": 9,
        "rest_port": 9,
        "log": working.join("replica-1.log"),
    }]);
    delete_local(
        &state,
        &serving_record(&working.display().to_string(), replicas),
    );
    assert!(
        alive(unrecorded.id()),
        "a process was matched by its command line"
    );
    assert!(alive(reused.id()), "a reused pid was signalled");
    assert!(!working.exists());
    let _ = unrecorded.kill();
    let _ = reused.kill();
    let _ = unrecorded.wait();
    let _ = reused.wait();
}
