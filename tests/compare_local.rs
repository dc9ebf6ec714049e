//! `benchstack compare` driven like a user on the local provider, against the tunable
//! TF-Serving stand-in (`tests/support/tunable_tensorflow_model_server.py`, put on PATH as
//! `tensorflow_model_server`) whose capacity is a known function of its batching settings:
//! max_batch_size 32 with num_batch_threads 1 carries 600 req/s, with 2 threads 960 (the
//! script's table). A configuration with ~40% less capacity compared against the better one
//! is `worse` (exit 3) and both are removed afterwards; a configuration compared with itself
//! is never `better` or `worse`; the base can come from a git revision.

#[path = "support/serve_process.rs"]
mod serve_process;
#[path = "support/tunable.rs"]
mod tunable;

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use serve_process::repo;
use tunable::{benchstack, server_dir};

/// A stack whose serving resource batches at most 32 rows with `threads` batch threads, and
/// whose load test offers `rate` req/s for `duration`.
fn stack_text(threads: u32, rate: u32, duration: &str) -> String {
    format!(
        r#"cluster "local" {{
  provider = "local"
}}

model "regression" {{
  base_path = "{model}"
}}

serving "tf" {{
  cluster = cluster.local
  models  = [model.regression]
  batching {{
    max_batch_size       = 32
    batch_timeout_micros = 1000
    max_enqueued_batches = 100
    num_batch_threads    = {threads}
  }}
}}

loadtest "smoke" {{
  target      = serving.tf
  protocol    = "rest"
  request     = file("{request}")
  connections = 256
  warmup      = "0s"
  stage {{
    rate     = {rate}
    duration = "{duration}"
  }}
  slo {{
    p99 = "200ms"
  }}
}}

output "rest" {{
  value = serving.tf.rest_endpoint
}}
"#,
        model = repo().join("examples/model/regression").display(),
        request = repo().join("examples/requests/regression.json").display(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// What the state holds, by address.
fn resources(server: &Path, state: &Path) -> Vec<String> {
    let (code, out, err) = benchstack(server, state, &["state", "list"]);
    assert_eq!(code, 0, "{err}");
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The comparisons share the machine's two cores with nothing of their own.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn a_configuration_with_less_capacity_is_worse_and_both_are_removed() {
    let _turn = one_at_a_time();
    let server = server_dir();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    // 800 req/s: the base (960 req/s) keeps up; the candidate (600 req/s) queues.
    let candidate = write(work.path(), "candidate.hcl", &stack_text(1, 800, "1s"));
    let base = write(work.path(), "base.hcl", &stack_text(2, 800, "1s"));
    let (code, out, err) = benchstack(
        server.path(),
        &state,
        &[
            "compare",
            candidate.to_str().unwrap(),
            "--against",
            base.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(code, 3, "worse exits 3\n{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "worse");
    let p99 = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["metric"].as_str().unwrap().starts_with("p99"))
        .unwrap();
    assert_eq!(p99["verdict"], "worse", "{p99}");
    assert!(p99["p"].as_f64().unwrap() <= 0.01);
    assert!(p99["candidate_median"].as_f64() > p99["base_median"].as_f64());
    assert!(v["rounds"].as_u64().unwrap() >= 5);
    // A B B A …: the first round measured the base first, the second the candidate.
    let sides: Vec<&str> = v["measurements"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["invalid"].is_null())
        .take(4)
        .map(|m| m["side"].as_str().unwrap())
        .collect();
    assert_eq!(sides, ["base", "candidate", "candidate", "base"]);
    // Both configurations were removed.
    assert!(
        resources(server.path(), &state)
            .iter()
            .all(|r| !r.starts_with("serving."))
    );
}

#[test]
fn a_configuration_compared_with_itself_is_never_better_or_worse() {
    let _turn = one_at_a_time();
    let server = server_dir();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    // 300 requests a round: a p99 steady enough that identical configurations rarely differ
    // by the 5% minimum effect (docs/compare.md).
    let a = write(work.path(), "a.hcl", &stack_text(2, 400, "750ms"));
    let b = write(work.path(), "b.hcl", &stack_text(2, 400, "750ms"));
    for attempt in 1..=5 {
        let (code, out, err) = benchstack(
            server.path(),
            &state,
            &[
                "compare",
                a.to_str().unwrap(),
                "--against",
                b.to_str().unwrap(),
                "--json",
            ],
        );
        assert!(
            code == 0 || code == 4,
            "attempt {attempt}: exit {code}\n{out}\n{err}"
        );
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let verdict = v["verdict"].as_str().unwrap();
        assert!(
            verdict == "same" || verdict == "inconclusive",
            "attempt {attempt}: {verdict}\n{out}"
        );
        assert_eq!(code == 0, verdict == "same");
    }
    assert!(
        resources(server.path(), &state)
            .iter()
            .all(|r| !r.starts_with("serving."))
    );
}

#[test]
fn the_base_can_be_a_git_revision_of_the_same_file_and_bad_revisions_are_named() {
    let _turn = one_at_a_time();
    let server = server_dir();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let git = |args: &[&str]| {
        let out = StdCommand::new("git")
            .arg("-C")
            .arg(work.path())
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "-q"]);
    let stack = write(work.path(), "stack.hcl", &stack_text(2, 800, "1s"));
    git(&["add", "stack.hcl"]);
    git(&["commit", "-qm", "960 req/s"]);
    // What is applied stays applied: compare removes only what it deployed.
    let (code, out, err) = benchstack(
        server.path(),
        &state,
        &["apply", "--auto-approve", s(&stack)],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, endpoint, err) = benchstack(server.path(), &state, &["output", "rest"]);
    assert_eq!(code, 0, "{err}");
    struct Destroy<'a>(&'a Path, PathBuf, PathBuf);
    impl Drop for Destroy<'_> {
        fn drop(&mut self) {
            let _ = benchstack(self.0, &self.1, &["destroy", "--auto-approve", s(&self.2)]);
        }
    }
    let _cleanup = Destroy(server.path(), state.clone(), stack.clone());
    // The edit under review: one batch thread, 600 req/s.
    write(work.path(), "stack.hcl", &stack_text(1, 800, "1s"));
    // The revision's tree is unpacked under TMPDIR: watched to see it removed afterwards.
    let tmp = tempfile::tempdir().unwrap();
    let (code, out, err) = tunable::run(
        server.path(),
        |c| {
            c.arg("--state").arg(&state).env("TMPDIR", tmp.path());
        },
        &[
            "compare",
            stack.to_str().unwrap(),
            "--against",
            "HEAD",
            "--rounds",
            "5",
        ],
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("Verdict: worse"), "{out}");
    assert!(out.contains("git:HEAD"), "{out}");
    // Nothing of the base is left: no copy beside the stack, no unpacked tree.
    let left: Vec<String> = [work.path(), tmp.path()]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).unwrap())
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("compare-base"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let listed = resources(server.path(), &state);
    assert!(listed.iter().any(|r| r == "serving.tf"), "{listed:?}");
    assert!(
        !listed.iter().any(|r| r.contains("compare_base")),
        "{listed:?}"
    );
    let (code, after, err) = benchstack(server.path(), &state, &["output", "rest"]);
    assert_eq!(code, 0, "{err}");
    assert!(after.trim().starts_with("http://127.0.0.1:"), "{after}");
    assert!(
        endpoint.trim().starts_with("http://127.0.0.1:"),
        "{endpoint}"
    );

    let (code, _, err) = benchstack(
        server.path(),
        &state,
        &[
            "compare",
            stack.to_str().unwrap(),
            "--against",
            "no-such-rev",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("no-such-rev"), "{err}");
}

#[test]
fn apply_gate_exits_3_when_the_new_runs_are_worse_than_the_pinned_baseline() {
    let _turn = one_at_a_time();
    let server = server_dir();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let stack = write(work.path(), "stack.hcl", &stack_text(2, 800, "1s"));
    let f = stack.to_str().unwrap();
    struct Destroy<'a>(&'a Path, PathBuf, PathBuf);
    impl Drop for Destroy<'_> {
        fn drop(&mut self) {
            let _ = benchstack(
                self.0,
                &self.1,
                &["destroy", "--auto-approve", self.2.to_str().unwrap()],
            );
        }
    }
    let _cleanup = Destroy(server.path(), state.clone(), stack.clone());

    // Without a baseline the gate refuses before applying anything.
    let (code, _, err) = benchstack(
        server.path(),
        &state,
        &["apply", "--auto-approve", "--gate", f],
    );
    assert_eq!(code, 1);
    assert!(err.contains("baseline set"), "{err}");

    // Five runs of the 960 req/s configuration, pinned.
    let (code, out, err) = benchstack(server.path(), &state, &["apply", "--auto-approve", f]);
    assert_eq!(code, 0, "{out}\n{err}");
    for _ in 0..4 {
        let (code, out, err) = benchstack(
            server.path(),
            &state,
            &["apply", "--auto-approve", "--replace", "loadtest.smoke", f],
        );
        assert_eq!(code, 0, "{out}\n{err}");
    }
    let (code, out, err) = benchstack(
        server.path(),
        &state,
        &["results", "baseline", "set", "loadtest.smoke"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("runs #1, #2, #3, #4, #5"), "{out}");
    let (code, out, _) = benchstack(
        server.path(),
        &state,
        &["results", "baseline", "list", "--json"],
    );
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed[0]["address"], "loadtest.smoke");
    assert_eq!(listed[0]["runs"].as_array().unwrap().len(), 5);

    // The edit under review: one batch thread (600 req/s). The gate says worse: exit 3.
    write(work.path(), "stack.hcl", &stack_text(1, 800, "1s"));
    let (code, out, err) = benchstack(
        server.path(),
        &state,
        &["apply", "--auto-approve", "--gate", f],
    );
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.contains("Verdict: worse"), "{out}");
    assert!(out.contains("baseline runs #1, #2, #3, #4, #5"), "{out}");

    // Unpinned, the gate has nothing to compare with.
    let (code, out, err) = benchstack(
        server.path(),
        &state,
        &["results", "baseline", "unset", "loadtest.smoke"],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, _) = benchstack(server.path(), &state, &["results", "baseline", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("No baselines pinned"), "{out}");
}
