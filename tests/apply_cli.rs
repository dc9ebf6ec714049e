//! End to end through the binary, in temp dirs: apply, plan, a batching edit, results,
//! destroy, stale plan files, the lock, no TTY, and an apply killed during a load test.
//! Load tests are tiny (200 req/s for 1 s) so the suite stays quick on a shared machine.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::prelude::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn stack(&self) -> PathBuf {
        self.dir.path().join("stack.hcl")
    }

    /// The local stack: one serving replica with batching, a tiny REST load test.
    fn write_stack(&self, max_batch_size: u32, duration: &str) {
        let model = repo().join("examples/model/regression");
        let request = repo().join("examples/requests/regression.json");
        let text = format!(
            r#"
cluster "local" {{
  provider = "local"
}}

model "regression" {{
  base_path = "{model}"
}}

serving "tf" {{
  cluster  = cluster.local
  replicas = 1
  models   = [model.regression]
  batching {{
    max_batch_size       = {max_batch_size}
    batch_timeout_micros = 1000
    max_enqueued_batches = 100
    num_batch_threads    = 1
  }}
}}

loadtest "smoke" {{
  cluster  = cluster.local
  target   = serving.tf
  model    = "regression"
  protocol = "rest"
  request  = file("{request}")
  stage {{
    rate     = 200
    duration = "{duration}"
  }}
  slo   {{ p99 = "10s" }}
}}

output "rest_endpoint" {{
  value = serving.tf.rest_endpoint
}}
"#,
            model = model.display(),
            request = request.display(),
        );
        std::fs::write(self.stack(), text).unwrap();
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("benchstack").unwrap();
        c.arg("--state")
            .arg(self.state())
            .args(args)
            .stdin(Stdio::null());
        c.current_dir(self.dir.path());
        c
    }

    fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.cmd(args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Starts `apply --auto-approve` on the stack and reads its output until the load test
    /// runs; returns the child, the rest of its output and what was read so far.
    fn apply_until_the_load_test_runs(
        &self,
    ) -> (
        std::process::Child,
        std::io::Lines<BufReader<std::process::ChildStdout>>,
        String,
    ) {
        let mut child = self
            .cmd(&["apply", "--auto-approve", s(&self.stack())])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.unwrap();
            seen.push_str(&line);
            seen.push('\n');
            if line.starts_with("loadtest.smoke: running") {
                break;
            }
        }
        assert!(seen.contains("loadtest.smoke: running"), "{seen}");
        (child, lines, seen)
    }

    /// Serving processes started for this state directory.
    fn servers(&self) -> Vec<u32> {
        benchstack::state::procinfo::find_by_arg(&self.state().display().to_string())
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for pid in self.servers() {
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn apply_plan_edit_batching_compare_runs_and_destroy() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let stack = env.stack();

    let (code, out, err) = env.run(&["apply", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    assert!(out.contains("serving.tf: created ("), "{out}");
    assert!(out.contains("loadtest.smoke: ran as run #1"), "{out}");
    assert_eq!(env.servers().len(), 1);

    // Nothing to do: exit 0 with --detailed-exitcode.
    let (code, out, err) = env.run(&["plan", "--detailed-exitcode", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.starts_with("No changes."), "{out}");

    // The outputs name a live endpoint.
    let (code, endpoint, _) = env.run(&["output", "rest_endpoint"]);
    assert_eq!(code, 0);
    assert!(
        endpoint.trim().starts_with("http://127.0.0.1:"),
        "{endpoint}"
    );

    // A batching edit: an in-place update with the file diff, and the load test re-runs.
    env.write_stack(16, "1s");
    let (code, out, err) = env.run(&["plan", "--detailed-exitcode", s(&stack)]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        out.contains("# serving.tf will be updated in place: batching changed"),
        "{out}"
    );
    // The change in the stack's own terms, then the rendered file's diff.
    assert!(out.contains("  ~ serving \"tf\" {"), "{out}");
    assert!(out.contains("      ~ batching {"), "{out}");
    assert!(
        out.contains("          ~ max_batch_size = 8 -> 16"),
        "{out}"
    );
    assert!(out.contains("-max_batch_size { value: 8 }"), "{out}");
    assert!(out.contains("+max_batch_size { value: 16 }"), "{out}");
    assert!(
        out.contains("# loadtest.smoke will run: serving.tf will be updated"),
        "{out}"
    );
    assert!(
        out.contains("Plan: 0 to create, 1 to update, 0 to replace, 0 to delete, 1 to run."),
        "{out}"
    );

    let (code, json, _) = env.run(&["plan", "--json", s(&stack)]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["format_version"], 2);
    assert_eq!(v["summary"]["update"], 1);
    assert_eq!(v["summary"]["run"], 1);
    let serving = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "serving.tf")
        .unwrap();
    assert_eq!(serving["action"], "update");
    assert_eq!(serving["before"]["batching"]["max_batch_size"], 8);
    assert_eq!(serving["after"]["batching"]["max_batch_size"], 16);
    assert_eq!(serving["after"]["cluster"], "cluster.local");
    assert_eq!(serving["attributes"][0]["path"], "batching.max_batch_size");
    assert_eq!(serving["attributes"][0]["before"], 8);
    assert_eq!(serving["attributes"][0]["after"], 16);
    let smoke = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["address"] == "loadtest.smoke")
        .unwrap();
    assert_eq!(smoke["after"]["target"], "serving.tf");
    assert_eq!(smoke["after"]["stage"][0]["rate"], 200);

    let before = env.servers();
    let (code, out, err) = env.run(&["apply", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("loadtest.smoke: ran as run #2"), "{out}");
    let after = env.servers();
    assert_eq!(after.len(), 1);
    assert_ne!(before, after, "the update restarts serving");

    // Both runs are kept and compare.
    let (code, out, err) = env.run(&["results", "--compare", "1", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, json, _) = env.run(&["results", "--json"]);
    assert_eq!(code, 0);
    let runs: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert!(
        runs[1]["report"]["stages"][0]["histogram"].is_string(),
        "full histogram stored"
    );
    let html = env.dir.path().join("runs.html");
    let (code, _, err) = env.run(&["results", "--compare", "1", "2", "--html", s(&html)]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::metadata(&html).unwrap().len() > 0);

    let (code, out, _) = env.run(&["state", "list"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("serving.tf") && out.contains("loadtest.smoke"),
        "{out}"
    );
    let (code, out, _) = env.run(&["state", "history"]);
    assert_eq!(code, 0);
    assert!(out.contains("apply") && out.contains("run #2"), "{out}");

    let (code, out, err) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(env.servers().is_empty(), "destroy left a serving process");
    let (_, out, _) = env.run(&["state", "list"]);
    assert!(out.trim().is_empty(), "{out}");
}

#[test]
fn a_stale_plan_file_is_refused() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let stack = env.stack();
    let p1 = env.dir.path().join("p1.json");
    let (code, out, err) = env.run(&[
        "plan",
        "--target",
        "model.regression",
        "--out",
        s(&p1),
        s(&stack),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    // Another apply changes the state after the plan was made.
    let (code, out, err) = env.run(&[
        "apply",
        "--auto-approve",
        "--target",
        "cluster.local",
        s(&stack),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, _, err) = env.run(&["apply", s(&p1)]);
    assert_eq!(code, 1);
    assert!(err.contains("stale"), "{err}");

    // A fresh plan applies; a plan whose stack file was edited since does not.
    let p2 = env.dir.path().join("p2.json");
    let (code, _, _) = env.run(&[
        "plan",
        "--target",
        "model.regression",
        "--out",
        s(&p2),
        s(&stack),
    ]);
    assert_eq!(code, 0);
    env.write_stack(9, "1s");
    let (code, _, err) = env.run(&["apply", s(&p2)]);
    assert_eq!(code, 1);
    assert!(err.contains("stack files changed"), "{err}");
    env.write_stack(8, "1s");
    let (code, out, err) = env.run(&["apply", s(&p2)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("model.regression: created"), "{out}");
}

#[test]
fn a_second_writer_is_told_who_holds_the_lock() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let held = benchstack::state::Store::open(
        &env.state(),
        "apply",
        &benchstack::state::gcs::Endpoint::Google,
    )
    .unwrap();
    let (code, _, err) = env.run(&["plan", s(&env.stack())]);
    assert_eq!(code, 1);
    assert!(err.contains("locked by"), "{err}");
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains("`apply`"), "{err}");
    assert!(err.contains("since"), "{err}");
    drop(held);
    let (code, _, err) = env.run(&["plan", s(&env.stack())]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn apply_without_auto_approve_and_without_a_terminal_is_refused() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let (code, _, err) = env.run(&["apply", s(&env.stack())]);
    assert_eq!(code, 1);
    assert!(err.contains("--auto-approve"), "{err}");
    assert!(env.servers().is_empty());
}

#[test]
fn a_bad_stack_is_an_error_and_touches_no_state() {
    let env = Env::new();
    std::fs::write(
        env.stack(),
        "cluster \"local\" {\n  provider = \"local\"\n  colour = 3\n}\n",
    )
    .unwrap();
    let (code, _, err) = env.run(&["plan", s(&env.stack())]);
    assert_eq!(code, 1);
    assert!(err.contains("colour"), "{err}");
    assert!(!env.state().exists(), "a bad stack created state");
}

#[test]
fn an_apply_killed_during_a_load_test_is_continued_without_a_second_server() {
    let env = Env::new();
    env.write_stack(8, "30s");
    let stack = env.stack();
    let (mut child, _lines, _seen) = env.apply_until_the_load_test_runs();
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let first = env.servers();
    assert_eq!(first.len(), 1, "serving outlives the killed apply");

    // The next plan continues: serving stands, the load test runs again.
    env.write_stack(8, "1s");
    let (code, out, err) = env.run(&["plan", "--detailed-exitcode", s(&stack)]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("took over the lock"), "{err}");
    assert!(!out.contains("serving.tf will"), "{out}");
    assert!(out.contains("# loadtest.smoke will run"), "{out}");
    let (code, out, err) = env.run(&["apply", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(env.servers(), first, "no second serving process");
    let (code, _, _) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0);
    assert!(env.servers().is_empty());
}

#[test]
fn load_tests_never_measure_at_the_same_time_and_a_missed_slo_exits_2_after_storing() {
    let env = Env::new();
    let model = repo().join("examples/model/regression");
    let request = repo().join("examples/requests/regression.json");
    // Two independent serving/loadtest pairs: with parallelism 4 they could overlap, and a
    // measurement shared with another is not a measurement. The SLO of 1 µs cannot be met.
    let text = format!(
        r#"
cluster "local" {{
  provider = "local"
}}

model "regression" {{
  base_path = "{model}"
}}

serving "tf" {{
  for_each = toset(["a", "b"])
  cluster  = cluster.local
  models   = [model.regression]
}}

loadtest "smoke" {{
  for_each = serving.tf
  target   = each.value
  request  = file("{request}")
  stage {{
    rate     = 100
    duration = "1s"
  }}
  slo   {{ p99 = "1us" }}
}}
"#,
        model = model.display(),
        request = request.display(),
    );
    std::fs::write(env.stack(), text).unwrap();
    let (code, out, err) = env.run(&[
        "apply",
        "--auto-approve",
        "--parallelism",
        "4",
        s(&env.stack()),
    ]);
    assert_eq!(
        code, 2,
        "a missed SLO exits 2 (applied and stored, objective not met)\n{out}\n{err}"
    );
    assert!(out.contains("did not meet its SLO"), "{out}");

    let (code, json, err) = env.run(&["results", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let runs = v
        .as_array()
        .or_else(|| v["runs"].as_array())
        .expect("a list of runs");
    assert_eq!(
        runs.len(),
        2,
        "both runs are stored despite the missed SLO: {json}"
    );
    let mut windows: Vec<(u64, u64)> = runs
        .iter()
        .map(|r| {
            (
                r["started"].as_u64().unwrap(),
                r["finished"].as_u64().unwrap(),
            )
        })
        .collect();
    windows.sort();
    assert!(
        windows[0].1 <= windows[1].0,
        "the two load tests overlapped: {windows:?}"
    );
    let (code, _, err) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0, "{err}");
    assert!(env.servers().is_empty());
}

#[test]
fn ctrl_c_during_a_load_test_stops_it_saves_the_state_and_exits_130() {
    let env = Env::new();
    env.write_stack(8, "60s");
    let stack = env.stack();
    let (mut child, lines, mut seen) = env.apply_until_the_load_test_runs();
    std::thread::sleep(Duration::from_millis(500));
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    // The 60 s stage is cut short: the rest of the output arrives and the process ends well
    // before the stage would have (the bound only keeps a broken build from hanging).
    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("Interrupted: the state is saved."), "{seen}");

    // Serving was recorded, no partial run was stored, and the next plan re-runs the test.
    let (code, out, _) = env.run(&["state", "list"]);
    assert_eq!(code, 0);
    assert!(out.contains("serving.tf"), "{out}");
    let (_, runs, _) = env.run(&["results", "--json"]);
    assert!(
        !runs.contains("\"stages\""),
        "a cancelled run is not a result: {runs}"
    );
    let (code, out, err) = env.run(&["plan", "--detailed-exitcode", s(&stack)]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("# loadtest.smoke will run"), "{out}");
    assert!(!out.contains("serving.tf will"), "{out}");
    let (code, _, _) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0);
    assert!(env.servers().is_empty());
}

#[test]
fn plan_without_refresh_trusts_the_state_and_with_refresh_sees_a_dead_server() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let stack = env.stack();
    let (code, out, err) = env.run(&["apply", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    for pid in env.servers() {
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !env.servers().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, out, err) = env.run(&["plan", "--detailed-exitcode", "--refresh=false", s(&stack)]);
    assert_eq!(
        code, 0,
        "without refresh the state is believed: {out}\n{err}"
    );
    let (code, out, err) = env.run(&["plan", "--detailed-exitcode", s(&stack)]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("serving.tf"), "{out}");
    let (code, _, _) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0);
}

#[test]
fn a_plan_file_applies_from_another_working_directory() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let plan_file = env.dir.path().join("tf.plan");
    let (code, out, err) = env.run(&["plan", "--out", s(&plan_file), "stack.hcl"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let elsewhere = tempfile::tempdir().unwrap();
    let out = env
        .cmd(&["apply", s(&plan_file)])
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, _, _) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0);
}

#[test]
fn a_local_load_test_with_workers_runs_them_as_processes_and_stores_one_merged_run() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let text = std::fs::read_to_string(env.stack()).unwrap().replace(
        "  protocol = \"rest\"\n",
        "  protocol = \"rest\"\n  workers  = 2\n",
    );
    std::fs::write(env.stack(), text).unwrap();
    let (code, out, err) = env.run(&["apply", "--auto-approve", s(&env.stack())]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("workers=2"), "{out}");
    let (code, runs, err) = env.run(&["results", "--json"]);
    assert_eq!(code, 0, "{err}");
    let runs: serde_json::Value = serde_json::from_str(&runs).unwrap();
    let report = &runs[0]["report"];
    assert_eq!(report["workers"], 2, "{report}");
    // 200 req/s for 1 s, split over two interleaved schedules: exactly one generator's 200.
    assert_eq!(report["stages"][0]["requests"], 200, "{report}");
    // The server is scraped on the workers' common schedule: it counted the stage's requests
    // (a few at the edges may fall outside the window).
    let server = &report["stages"][0]["server"];
    let ok = server["requests"]["OK"]
        .as_f64()
        .unwrap_or_else(|| panic!("{report}"));
    assert!((180.0..=205.0).contains(&ok), "server OK {ok}: {server}");
    let (code, _, _) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0);
}

#[test]
fn destroy_takes_the_stack_and_variables_apply_took_and_refuses_a_bad_one_untouched() {
    let env = Env::new();
    env.write_stack(32, "1s");
    let stack = env.stack();
    let (code, out, err) = env.run(&["apply", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(env.servers().len(), 1);

    // A stack with an error stops destroy before the state is touched.
    let bad = env.state().with_file_name("bad.hcl");
    std::fs::write(&bad, "cluster \"local\" {\n  provider = \"nowhere\"\n}\n").unwrap();
    let (code, out, err) = env.run(&["destroy", "--auto-approve", s(&bad)]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("bad.hcl:2:"), "located: {err}");
    assert_eq!(env.servers().len(), 1, "nothing was destroyed");

    // Variables without a stack are a usage error, not silently ignored.
    let (code, _, err) = env.run(&["destroy", "--auto-approve", "--var", "x=1"]);
    assert_eq!(code, 1);
    assert!(err.contains("--var"), "{err}");

    // With the stack apply took, everything in the state goes.
    let (code, out, err) = env.run(&["destroy", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("4 deleted"), "{out}");
    assert!(env.servers().is_empty());
    let (code, out, _) = env.run(&["state", "list"]);
    assert_eq!(code, 0);
    assert!(!out.contains("serving.tf"), "{out}");
}

#[test]
fn plan_of_the_local_stack_shows_it_in_the_stack_s_own_terms() {
    let env = Env::new();
    let stack = repo().join("stacks/local.hcl");
    let (code, out, err) = env.run(&["plan", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    // No Rust, no `kind`/`name` pairs for references, no absolute paths.
    for leak in [
        "PerSecond",
        "Data",
        "Some(",
        "cluster.kind",
        "cluster.name",
        "target.kind",
        ".key",
        "stages[",
        "slos[",
    ] {
        assert!(!out.contains(leak), "{leak:?} in\n{out}");
    }
    let root = repo();
    assert!(!out.contains(root.to_str().unwrap()), "{out}");
    // What the stack wrote, as it wrote it (and the defaults it left out, as HCL).
    for expected in [
        "  # serving.tf will be created",
        "  + serving \"tf\" {",
        "      + cluster = cluster.local",
        "      + models = [model.regression]",
        "      + flags = {",
        "          + tensorflow_intra_op_parallelism = 2",
        "      + batching {",
        "          + max_batch_size = 32",
        "  # loadtest.baseline will run: never run",
        "  > loadtest \"baseline\" {",
        "      + target = serving.tf",
        "      + protocol = \"rest\"",
        "      + data = \"../examples/model/test.csv\"",
        "      + batch_size = 1",
        "      + warmup = \"1s\"",
        "      + timeout = \"10s\"",
        "      + stage {",
        "          + rate = 300",
        "          + rate = 3900",
        "          + duration = \"5s\"",
        "      + slo {",
        "          + p99 = \"50ms\"",
        "          + errors = \"0.1%\"",
        "      + base_path = \"../examples/model/regression\"",
        "Changes to Outputs:",
        "  + rest_endpoint = (known after apply)",
        "  + grpc_endpoint = (known after apply)",
    ] {
        assert!(out.contains(expected), "{expected:?} missing from\n{out}");
    }

    let (code, json, err) = env.run(&["plan", "--json", s(&stack)]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let addresses: Vec<&str> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["address"].as_str().unwrap())
        .collect();
    assert_eq!(
        addresses,
        [
            "cluster.local",
            "model.regression",
            "serving.tf",
            "loadtest.baseline"
        ]
    );
    let lt = &v["changes"][3]["after"];
    assert_eq!(lt["cluster"], "cluster.local");
    assert_eq!(lt["target"], "serving.tf");
    assert_eq!(lt["data"], "../examples/model/test.csv");
    assert_eq!(lt["timeout"], 10.0);
    assert_eq!(lt["stage"][1]["rate"], 3900);
    assert_eq!(lt["slo"]["p99"], 0.05);
    assert_eq!(lt["slo"]["errors"], 0.001);
    assert_eq!(v["outputs"][0]["after_unknown"], true);
}

/// Addresses of the changes in `plan --json`, of the runs in `results --json`.
fn json_addresses(v: &serde_json::Value, list: &str) -> Vec<String> {
    let items = if list.is_empty() {
        v.as_array().cloned().unwrap_or_default()
    } else {
        v[list].as_array().cloned().unwrap_or_default()
    };
    items
        .iter()
        .map(|c| {
            c["address"]
                .as_str()
                .unwrap_or_else(|| panic!("address is not a string: {c}"))
                .to_string()
        })
        .collect()
}

#[test]
fn readers_answer_from_the_published_snapshot_while_an_apply_holds_the_lock() {
    let env = Env::new();
    env.write_stack(8, "15s");
    let stack = env.stack();
    let (code, plan_json, err) = env.run(&["plan", "--json", s(&stack)]);
    assert_eq!(code, 0, "{err}");
    let planned = json_addresses(&serde_json::from_str(&plan_json).unwrap(), "changes");
    assert!(
        planned.contains(&"loadtest.smoke".to_string()),
        "{planned:?}"
    );

    let (mut child, lines, mut seen) = env.apply_until_the_load_test_runs();
    let lock = env.state().join(benchstack::state::lock::LOCK_FILE);
    let holder = std::fs::read_to_string(&lock).expect("the apply holds the lock");

    // Everything applied so far is visible; nothing waits for the lock.
    let (code, out, err) = env.run(&["state", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("serving.tf"), "{out}");
    assert!(out.contains("model.regression"), "{out}");
    let (code, out, err) = env.run(&["results"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("No runs yet"), "the run is still going: {out}");
    let (code, out, err) = env.run(&["state", "show", "serving.tf"]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["address"], "serving.tf");
    assert_eq!(shown["config"]["cluster"], "cluster.local");
    let (code, _, err) = env.run(&["state", "history"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = env.run(&["output", "--json"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = env.run(&["plan", "--lock=false", "--refresh=false", s(&stack)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("loadtest.smoke"), "{out}");
    // The same apply held the lock from before the reads until after them.
    assert_eq!(
        std::fs::read_to_string(&lock).ok().as_deref(),
        Some(holder.as_str()),
        "the reads ran while the apply held the lock"
    );
    let (code, _, err) = env.run(&["plan", s(&stack)]);
    assert_eq!(code, 1, "a plan with the lock still waits for the writer");
    assert!(err.contains("locked by"), "{err}");

    for line in lines {
        seen.push_str(&line.unwrap());
        seen.push('\n');
    }
    assert_eq!(child.wait().unwrap().code(), Some(0), "{seen}");

    // The finished run, under the address string plan used.
    let (code, out, err) = env.run(&["results", "--json"]);
    assert_eq!(code, 0, "{err}");
    let ran = json_addresses(&serde_json::from_str(&out).unwrap(), "");
    assert_eq!(ran, ["loadtest.smoke"]);
    assert!(planned.contains(&ran[0]), "{planned:?} vs {ran:?}");
    let (code, _, _) = env.run(&["destroy", "--auto-approve"]);
    assert_eq!(code, 0);
    assert!(env.servers().is_empty());
}

#[test]
fn a_reader_that_closes_stdout_early_ends_the_command_quietly_with_success() {
    // `benchstack plan --json | head -0`: the reader goes away before the first write.
    let env = Env::new();
    let mut child = Command::cargo_bin("benchstack")
        .unwrap()
        .args(["--state", s(&env.state()), "plan", "--json"])
        .arg(repo().join("stacks/local.hcl"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_targeted_destroy_deletes_only_the_outputs_that_read_what_it_destroyed() {
    let env = Env::new();
    env.write_stack(8, "1s");
    let stack = env.stack();
    let mut text = std::fs::read_to_string(&stack).unwrap();
    text.push_str("\noutput \"team\" {\n  value = \"infra\"\n}\n");
    std::fs::write(&stack, text).unwrap();
    let (code, out, err) = env.run(&["apply", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    let outputs = || env.run(&["output"]).1;
    let before = outputs();
    assert!(before.contains("rest_endpoint = "), "{before}");
    assert!(before.contains("team = \"infra\""), "{before}");

    // The load test reads nothing an output shows: every output stays.
    let (code, out, err) = env.run(&[
        "destroy",
        "--auto-approve",
        "--target",
        "loadtest.smoke",
        s(&stack),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(outputs(), before);

    // The serving resource goes, and with it only the output that reads it.
    let (code, out, err) = env.run(&[
        "destroy",
        "--auto-approve",
        "--target",
        "serving.tf",
        s(&stack),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let after = outputs();
    assert!(!after.contains("rest_endpoint"), "{after}");
    assert!(after.contains("team = \"infra\""), "{after}");

    // A whole destroy removes the rest.
    let (code, out, err) = env.run(&["destroy", "--auto-approve", s(&stack)]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!outputs().contains("team"), "{}", outputs());
}
