//! The committed v1 state (tests/fixtures/state-v1, made by benchstack at schema 1 from
//! tests/fixtures/state-v1/stack) is migrated to the current schema when opened, and plans
//! with no changes against the stack it was applied with but one: benchstack has since
//! rendered monitoring.config (TF Serving's metrics page, which apply scrapes), so each serving
//! resource is updated once to get it, and its load test re-runs.
//!
//! The state records absolute paths (the model's base path, the CSV a load test samples), so
//! the stack is materialized where it was applied: /tmp/benchstack-state-v1/stack (under a
//! file lock, for concurrent runs). The plan runs with `--refresh=false`: the fixture's
//! serving processes are long gone, and refresh would rightly plan to restart them; what this
//! checks is that the migrated records say what the stack says.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use assert_cmd::prelude::*;

const APPLIED_AT: &str = "/tmp/benchstack-state-v1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// The stack as it was when the fixture was applied; the returned lock keeps it there.
fn materialize_stack() -> (std::fs::File, PathBuf) {
    std::fs::create_dir_all(APPLIED_AT).unwrap();
    let lock = std::fs::File::create(Path::new(APPLIED_AT).join(".lock")).unwrap();
    lock.lock().unwrap();
    let stack = Path::new(APPLIED_AT).join("stack");
    let _ = std::fs::remove_dir_all(&stack);
    let fixture = repo().join("tests/fixtures/state-v1/stack");
    copy_tree(&fixture, &stack);
    std::fs::copy(
        repo().join("examples/model/test.csv"),
        stack.join("test.csv"),
    )
    .unwrap();
    copy_tree(
        &repo().join("examples/model/regression"),
        &stack.join("model/regression"),
    );
    (lock, stack.join("stack.hcl"))
}

fn run(state: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("benchstack")
        .unwrap()
        .arg("--state")
        .arg(state)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_v1_fixture_migrates_on_open_and_plans_clean_without_refresh() {
    let (_lock, stack) = materialize_stack();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    copy_tree(&repo().join("tests/fixtures/state-v1/state"), &state);
    let stack = stack.to_str().unwrap();

    let (code, out, err) = run(
        &state,
        &["plan", "--refresh=false", "--detailed-exitcode", stack],
    );
    // Clean but for the monitoring config rendered since: nothing else differs.
    assert_eq!(code, 2, "{out}\n{err}");
    for s in ["small", "large"] {
        assert!(
            out.contains(&format!(
                "# serving.tf[\"{s}\"] will be updated in place: monitoring.config changed\n"
            )),
            "{out}"
        );
    }
    assert!(
        out.contains("Plan: 0 to create, 2 to update, 0 to replace, 0 to delete, 2 to run."),
        "{out}"
    );
    assert!(
        !out.contains("      ~ ") && !out.contains("      + "),
        "an attribute changed: {out}"
    );

    // Migrated once, in one step recorded in the history.
    let (code, history, err) = run(&state, &["state", "history"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(history.matches("migrate").count(), 1, "{history}");
    assert!(history.contains("schema 1 → 2"), "{history}");
    let (code, _, err) = run(&state, &["plan", "--refresh=false", stack]);
    assert_eq!(code, 0, "{err}");
    let (_, history, _) = run(&state, &["state", "history"]);
    assert_eq!(history.matches("migrate").count(), 1, "{history}");

    // The fixture's runs, under address strings, with their reports.
    let (code, out, err) = run(&state, &["results", "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut addresses: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["address"].as_str().unwrap())
        .collect();
    addresses.sort();
    assert_eq!(addresses, ["loadtest.grpc", "loadtest.smoke"]);
    let (code, out, err) = run(&state, &["state", "show", "serving.tf[\"small\"]"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["address"], "serving.tf[\"small\"]");
    assert!(shown["observed"]["local_serving"].is_object(), "{shown}");
}

#[test]
fn a_stack_change_after_the_migration_is_planned_as_usual() {
    let (_lock, stack) = materialize_stack();
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    copy_tree(&repo().join("tests/fixtures/state-v1/state"), &state);
    let edited = std::fs::read_to_string(&stack)
        .unwrap()
        .replace("large = 64", "large = 128");
    let edited_path = stack.with_file_name("edited.hcl");
    std::fs::write(&edited_path, edited).unwrap();
    let (code, out, err) = run(
        &state,
        &[
            "plan",
            "--refresh=false",
            "--detailed-exitcode",
            edited_path.to_str().unwrap(),
        ],
    );
    std::fs::remove_file(&edited_path).unwrap();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("serving.tf[\"large\"]"), "{out}");
    assert!(
        out.contains("loadtest.grpc"),
        "re-runs against the changed server: {out}"
    );
    // The untouched instance changes only by the monitoring config rendered since the fixture.
    assert!(
        out.contains(
            "# serving.tf[\"small\"] will be updated in place: monitoring.config changed\n"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "# serving.tf[\"large\"] will be updated in place: batching, monitoring.config changed"
        ),
        "{out}"
    );
}
