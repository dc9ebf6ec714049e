//! Failed requests count against every SLO: a server that answers 5% of requests with a fast
//! 503 misses `p99` however fast the rest are, and misses `errors = "1%"`, in `loadtest` and
//! in `apply` (exit 2 in both: the run is stored, the objective was not met).

#[path = "support/http_target.rs"]
mod http_target;
#[path = "support/serve_process.rs"]
mod serve_process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use http_target::{Behaviour, HttpTarget};
use serve_process::repo;

fn body() -> String {
    repo()
        .join("examples/requests/regression.json")
        .display()
        .to_string()
}

/// `benchstack loadtest --json` against a server whose every 20th reply is a 503.
fn loadtest_against_5pct_503(slos: &[&str]) -> (i32, serde_json::Value, String) {
    let server = HttpTarget::start(Behaviour {
        status_503_every: 20,
        ..Behaviour::default()
    });
    let mut c = Command::cargo_bin("benchstack").unwrap();
    c.timeout(Duration::from_secs(60))
        .args(["loadtest", &server.url(), "--model", "regression"])
        .args(["--request", &body(), "--rate", "200", "--duration", "2s"])
        .arg("--json");
    for s in slos {
        c.args(["--slo", s]);
    }
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json, stderr)
}

#[test]
fn loadtest_five_percent_fast_503s_miss_p99_and_exit_2() {
    let (code, v, err) = loadtest_against_5pct_503(&["p99=1s"]);
    assert_eq!(code, 2, "a missed SLO exits 2: {v}\n{err}");
    let stage = &v["stages"][0];
    assert_eq!(stage["errors"]["http_503"], 20, "{stage}");
    assert_eq!(stage["error_rate"], 0.05, "{stage}");
    let verdict = &stage["slos"][0];
    assert_eq!(verdict["slo"], "p99");
    assert_eq!(verdict["met"], false, "{verdict}");
    assert_eq!(verdict["observed_ms"], -1.0, "{verdict}");
    assert!(
        verdict["detail"]
            .as_str()
            .unwrap()
            .contains("5% of requests failed"),
        "{verdict}"
    );
}

#[test]
fn loadtest_error_rate_slo_fails_at_1_percent_and_holds_at_10() {
    let (code, v, err) = loadtest_against_5pct_503(&["errors=1%"]);
    assert_eq!(code, 2, "{v}\n{err}");
    let verdict = &v["stages"][0]["slos"][0];
    assert_eq!(verdict["slo"], "errors");
    assert_eq!(verdict["limit_error_rate"], 0.01);
    assert_eq!(verdict["observed_error_rate"], 0.05);
    assert_eq!(verdict["met"], false);

    // p90 is a successful request when 5% fail, and 5% is within 10%.
    let (code, v, err) = loadtest_against_5pct_503(&["errors=10%", "p90=1s"]);
    assert_eq!(code, 0, "{v}\n{err}");
    assert!(v["stages"][0]["slos"].as_array().unwrap().len() == 2);
}

#[test]
fn loadtest_table_shows_the_error_rate_beside_the_verdicts() {
    let server = HttpTarget::start(Behaviour {
        status_503_every: 20,
        ..Behaviour::default()
    });
    let out = Command::cargo_bin("benchstack")
        .unwrap()
        .timeout(Duration::from_secs(60))
        .args(["loadtest", &server.url(), "--model", "regression"])
        .args(["--request", &body(), "--rate", "200", "--duration", "2s"])
        .args(["--slo", "p99=1s", "--slo", "errors=0.1%"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{text}");
    assert!(text.contains("err %"), "{text}");
    assert!(
        text.contains(
            "SLO p99 <= 1000 ms: MISSED (5% of requests failed: the p99 request never completed)"
        ),
        "{text}"
    );
    assert!(
        text.contains("SLO errors <= 0.1%: MISSED (20 of 400 failed, 5%)"),
        "{text}"
    );
}

/// A directory holding `tensorflow_model_server`: the fake that fails every 20th predict.
fn fake_server_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("tensorflow_model_server");
    std::fs::copy(
        repo().join("tests/support/fake_tensorflow_model_server.py"),
        &fake,
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn stack(dir: &Path, slo: &str) -> PathBuf {
    let text = format!(
        r#"
cluster "local" {{
  provider = "local"
}}

model "regression" {{
  base_path = "{model}"
}}

serving "tf" {{
  cluster = cluster.local
  models  = [model.regression]
}}

loadtest "shedding" {{
  target   = serving.tf
  protocol = "rest"
  request  = file("{request}")
  stage {{
    rate     = 200
    duration = "2s"
  }}
  slo {{
    {slo}
  }}
}}
"#,
        model = repo().join("examples/model/regression").display(),
        request = body(),
    );
    let path = dir.join("stack.hcl");
    std::fs::write(&path, text).unwrap();
    path
}

fn benchstack(fake: &Path, state: &Path, args: &[&str]) -> (i32, String, String) {
    let path = format!(
        "{}:{}",
        fake.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::cargo_bin("benchstack")
        .unwrap()
        .timeout(Duration::from_secs(120))
        .env("PATH", path)
        .arg("--state")
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[test]
fn apply_against_a_server_shedding_5_percent_reports_the_missed_slos_and_exits_2() {
    let fake = fake_server_dir();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let file = stack(work.path(), "p99    = \"1s\"\n    errors = \"1%\"");
    let f = file.to_str().unwrap();

    let (code, out, err) = benchstack(fake.path(), &state, &["apply", "--auto-approve", f]);
    let stop = || {
        let _ = benchstack(fake.path(), &state, &["destroy", "--auto-approve"]);
    };
    if code != 2 {
        stop();
        panic!("a missed SLO exits 2 after storing the run\n{out}\n{err}");
    }
    assert!(
        out.contains("SLO p99 <= 1000 ms: MISSED (5% of requests failed"),
        "{out}"
    );
    assert!(out.contains("SLO errors <= 1%: MISSED"), "{out}");
    assert!(
        out.contains("SLO missed: 1 of 1 load tests: loadtest.shedding (run #1)."),
        "{out}"
    );

    // The run is stored with its verdict.
    let (code, json, err) = benchstack(fake.path(), &state, &["results", "--json"]);
    stop();
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let runs = v
        .as_array()
        .or_else(|| v["runs"].as_array())
        .expect("a list of runs");
    assert_eq!(runs.len(), 1, "{json}");
    assert_eq!(runs[0]["slos_met"], false, "{json}");
}
