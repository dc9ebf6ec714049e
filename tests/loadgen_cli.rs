//! `benchstack loadtest` end to end: the binary against a loopback HTTP server and against
//! `benchstack serve` (REST and gRPC), its JSON and anchor line, and its bad-input errors.

#[path = "support/http_target.rs"]
mod http_target;
#[path = "support/serve_process.rs"]
mod serve_process;

use assert_cmd::Command;
use http_target::{Behaviour, HttpTarget};
use predicates::prelude::*;
use serve_process::{ServeProcess, repo};

fn loadtest() -> Command {
    let mut c = Command::cargo_bin("benchstack").unwrap();
    c.arg("loadtest")
        .timeout(std::time::Duration::from_secs(60));
    c
}

fn body() -> String {
    repo()
        .join("examples/requests/regression.json")
        .display()
        .to_string()
}

fn json_of(out: &[u8]) -> serde_json::Value {
    serde_json::from_slice(out)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", String::from_utf8_lossy(out)))
}

#[test]
fn json_output_has_the_documented_shape() {
    let server = HttpTarget::start(Behaviour::default());
    let out = loadtest()
        .args([&server.url(), "--model", "regression", "--request", &body()])
        .args([
            "--stage",
            "200:1s",
            "--stage",
            "400:1s",
            "--slo",
            "p99=500ms",
            "--json",
        ])
        .assert()
        .success();
    let v = json_of(&out.get_output().stdout);
    for k in [
        "target",
        "protocol",
        "model",
        "stages",
        "capacity",
        "environment",
    ] {
        assert!(v.get(k).is_some(), "missing {k}: {v}");
    }
    assert_eq!(v["protocol"], "rest");
    assert!(v["capacity"].is_null());
    for k in ["host", "cpus", "cpu_model", "version"] {
        assert!(v["environment"].get(k).is_some(), "environment.{k}");
    }
    let stages = v["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    let s = &stages[1];
    for k in [
        "name",
        "target_rate",
        "duration_s",
        "requests",
        "achieved_rate",
        "errors_total",
        "errors",
        "latency_ms",
        "service_time_ms",
        "generator_lag_ms",
        "histogram",
    ] {
        assert!(s.get(k).is_some(), "stage is missing {k}");
    }
    for k in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(s["latency_ms"][k].is_number(), "latency_ms.{k}");
        assert!(s["service_time_ms"][k].is_number(), "service_time_ms.{k}");
    }
    for k in ["p50", "p99", "max"] {
        assert!(s["generator_lag_ms"][k].is_number(), "generator_lag_ms.{k}");
    }
    assert_eq!(s["target_rate"], 400.0);
    assert_eq!(s["requests"], 400);
    assert_eq!(s["slos"][0]["met"], true);
    // The histogram is an HdrHistogram V2 in base64 that the library reads back.
    let report: benchstack::loadgen::RunReport =
        serde_json::from_value(v.clone()).expect("the JSON reads back as a RunReport");
    assert_eq!(report.stages[1].latency_histogram().unwrap().len(), 400);
}

#[test]
fn the_table_and_anchor_line_are_printed() {
    let server = HttpTarget::start(Behaviour::default());
    loadtest()
        .args([&server.url(), "--model", "regression", "--request", &body()])
        .args(["--rate", "300", "--duration", "1s", "--anchor-line"])
        .assert()
        .success()
        .stdout(predicate::str::contains("p99.9"))
        .stdout(
            predicate::str::is_match(
                r"ANCHOR requests=300 rps=[0-9.]+ p50_ms=[0-9.]+ p99_ms=[0-9.]+ errors=0\n",
            )
            .unwrap(),
        );
}

#[test]
fn a_missed_slo_exits_2_and_says_missed() {
    let server = HttpTarget::start(Behaviour {
        delay: std::time::Duration::from_millis(20),
        ..Behaviour::default()
    });
    loadtest()
        .args([&server.url(), "--model", "regression", "--request", &body()])
        .args(["--rate", "50", "--duration", "1s", "--slo", "p99=5ms"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("MISSED"));
}

#[test]
fn html_report_is_written_self_contained() {
    let server = HttpTarget::start(Behaviour::default());
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("r.html");
    loadtest()
        .args([&server.url(), "--model", "regression", "--request", &body()])
        .args([
            "--stage", "100:1s", "--stage", "200:1s", "--quiet", "--html",
        ])
        .arg(&page)
        .assert()
        .success()
        .stdout(predicate::str::is_empty());
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("<svg") && html.contains("percentile"));
    assert!(!html.contains("<script src") && !html.contains("http://cdn"));
}

#[test]
fn bad_input_exits_1_naming_the_flag_or_file() {
    let dir = tempfile::tempdir().unwrap();
    let not_json = dir.path().join("bad.json");
    std::fs::write(&not_json, "instances: [1]").unwrap();
    let not_predict = dir.path().join("rows.json");
    std::fs::write(&not_predict, r#"{"rows": [[1, 2]]}"#).unwrap();
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "a,b,c\n1,2,3\n4,5\n").unwrap();
    let t = "http://127.0.0.1:9";
    let b = body();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--rate", "0", "--duration", "1s", "--request", &b],
            "--rate",
        ),
        (
            vec!["--rate", "-5", "--duration", "1s", "--request", &b],
            "--rate",
        ),
        (
            vec!["--rate", "10", "--duration", "10", "--request", &b],
            "--duration",
        ),
        (vec!["--stage", "10:soon", "--request", &b], "--stage"),
        (
            vec![
                "--rate",
                "10",
                "--duration",
                "1s",
                "--slo",
                "p99",
                "--request",
                &b,
            ],
            "--slo",
        ),
        (
            vec![
                "--rate",
                "10",
                "--duration",
                "1s",
                "--arrival",
                "bursty",
                "--request",
                &b,
            ],
            "--arrival",
        ),
        (
            vec![
                "--rate",
                "10",
                "--duration",
                "1s",
                "--connections",
                "0",
                "--request",
                &b,
            ],
            "--connections",
        ),
        (
            vec![
                "--rate",
                "10",
                "--duration",
                "1s",
                "--request",
                not_json.to_str().unwrap(),
            ],
            "bad.json: is not JSON",
        ),
        (
            vec![
                "--rate",
                "10",
                "--duration",
                "1s",
                "--request",
                not_predict.to_str().unwrap(),
            ],
            "rows.json: is not a TF Serving predict body",
        ),
        (
            vec![
                "--rate",
                "10",
                "--duration",
                "1s",
                "--data",
                csv.to_str().unwrap(),
            ],
            "d.csv: line 3",
        ),
        (vec!["--rate", "10", "--duration", "1s"], "--request"),
        (vec!["--find-capacity", "--request", &b], "--slo"),
    ];
    for (args, expected) in cases {
        loadtest()
            .arg(t)
            .args(["--model", "m"])
            .args(&args)
            .assert()
            .code(1)
            .stderr(predicate::str::contains(expected));
    }
    loadtest()
        .args([
            "ftp://x:1",
            "--model",
            "m",
            "--rate",
            "1",
            "--duration",
            "1s",
            "--request",
            &b,
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("TARGET"));
}

#[test]
fn an_unreachable_target_exits_1_within_the_connect_timeout() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    for scheme in ["http", "grpc"] {
        let t = std::time::Instant::now();
        loadtest()
            .arg(format!("{scheme}://127.0.0.1:{port}"))
            .args([
                "--model",
                "m",
                "--rate",
                "10",
                "--duration",
                "5s",
                "--timeout",
                "1s",
            ])
            .args(["--request", &body()])
            .assert()
            .code(1)
            .stderr(predicate::str::contains("cannot connect"));
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }
}

#[test]
fn rest_and_grpc_work_against_benchstack_serve() {
    let serve = ServeProcess::start_model(&[]);
    let grpc = format!("grpc://127.0.0.1:{}", serve.grpc_port);
    for target in [serve.rest_url(), grpc] {
        let out = loadtest()
            .args([&target, "--model", "regression", "--request", &body()])
            .args([
                "--rate",
                "200",
                "--duration",
                "1s",
                "--connections",
                "4",
                "--json",
            ])
            .assert()
            .success();
        let v = json_of(&out.get_output().stdout);
        let s = &v["stages"][0];
        assert_eq!(s["errors_total"], 0, "{target}: {}", s["errors"]);
        assert_eq!(s["requests"], 200, "{target}");
    }
    // Batches sampled from the CSV, over gRPC (the input name comes from the signature).
    let csv = repo().join("examples/model/test.csv");
    let out = loadtest()
        .arg(format!("grpc://127.0.0.1:{}", serve.grpc_port))
        .args([
            "--model",
            "regression",
            "--data",
            csv.to_str().unwrap(),
            "--batch-size",
            "8",
        ])
        .args([
            "--rate",
            "100",
            "--duration",
            "1s",
            "--connections",
            "2",
            "--json",
        ])
        .assert()
        .success();
    let v = json_of(&out.get_output().stdout);
    assert_eq!(
        v["stages"][0]["errors_total"], 0,
        "{}",
        v["stages"][0]["errors"]
    );
    // A wrong model and a row-format body: no signature to name the input; exit 1.
    let out = loadtest()
        .arg(format!("grpc://127.0.0.1:{}", serve.grpc_port))
        .args(["--model", "nope", "--data", csv.to_str().unwrap()])
        .args(["--rate", "50", "--duration", "1s", "--json"])
        .assert();
    let o = out.get_output();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("signature"));
    // With named inputs no signature is needed: a wrong model is counted by its gRPC code.
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("named.json");
    std::fs::write(
        &named,
        r#"{"instances": [{"features": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}]}"#,
    )
    .unwrap();
    let out = loadtest()
        .arg(format!("grpc://127.0.0.1:{}", serve.grpc_port))
        .args(["--model", "nope", "--request", named.to_str().unwrap()])
        .args(["--rate", "50", "--duration", "1s", "--json"])
        .assert()
        .success();
    let v = json_of(&out.get_output().stdout);
    assert_eq!(
        v["stages"][0]["errors"]["grpc_not_found"], 50,
        "{}",
        v["stages"][0]["errors"]
    );
}

#[test]
fn a_csv_whose_columns_do_not_fit_the_model_is_refused_before_the_run() {
    let server = ServeProcess::start_model(&[]);
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("nine.csv");
    std::fs::write(&csv, "a,b,c,d,e,f,g,h,i\n1,2,3,4,5,6,7,8,9\n").unwrap();
    let grpc = format!("grpc://127.0.0.1:{}", server.grpc_port);
    for target in [server.rest_url(), grpc] {
        let out = Command::cargo_bin("benchstack")
            .unwrap()
            .args(["loadtest", &target, "--model", "regression", "--data"])
            .arg(&csv)
            .args(["--rate", "100", "--duration", "1s", "--quiet"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{target}: {err}");
        assert!(
            err.contains("nine.csv")
                && err.contains("9 columns")
                && err.contains("takes 10 values per row"),
            "{target}: {err}"
        );
    }
}

/// The tunable stand-in (tests/support/tunable_tensorflow_model_server.py) on a free
/// loopback port with batching on (`max_batch_size` 8), in its TUNABLE_CORRUPT_FROM_BATCH
/// mode when `corrupt`: a predict that arrives while another is in service (it would share a
/// batch) is answered 1% off; one sent alone gets the true answer. Stopped on drop.
struct Tunable {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Tunable {
    fn start(corrupt: bool) -> Tunable {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        let params = dir.path().join("batching_parameters.txt");
        std::fs::write(
            &params,
            "max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\n",
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = std::process::Command::new("python3");
        cmd.arg(repo().join("tests/support/tunable_tensorflow_model_server.py"))
            .arg(format!("--rest_api_port={port}"))
            .arg("--model_name=regression")
            .arg("--enable_batching=true")
            .arg(format!("--batching_parameters_file={}", params.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit());
        if corrupt {
            cmd.env("TUNABLE_CORRUPT_FROM_BATCH", "8");
        }
        let mut child = cmd.spawn().expect("python3 runs the tunable stand-in");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(
            line.contains("REST on"),
            "the tunable stand-in did not start: {line}"
        );
        Tunable {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Tunable {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Stderr without whitespace and miette's frame, which wraps lines where it likes.
fn squash(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '│' | '×'))
        .collect()
}

const IDENTICAL: &str = "answers checked: 16 of 16 sample requests, batched against sent alone, relative tolerance 1e-4: identical";

#[test]
fn answers_are_checked_before_the_run_over_the_targets_protocol() {
    let serve = ServeProcess::start_model(&["--enable_batching"]);
    let grpc = format!("grpc://127.0.0.1:{}", serve.grpc_port);
    for target in [serve.rest_url(), grpc] {
        let out = loadtest()
            .args([&target, "--model", "regression", "--request", &body()])
            .args(["--rate", "50", "--duration", "1s", "--json"])
            .assert()
            .success();
        let o = out.get_output();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(IDENTICAL), "{target}: {err}");
        let v = json_of(&o.stdout);
        let a = &v["answers"];
        assert_eq!(a["sample"], 16, "{target}: {a}");
        assert_eq!(a["compared"], 16, "{target}: {a}");
        assert_eq!(a["differing"], 0, "{target}: {a}");
        assert_eq!(a["tolerance"], 0.0001, "{target}: {a}");
        // The check's requests are not the run's.
        assert_eq!(v["stages"][0]["requests"], 50, "{target}");
    }
    // Skipped on request: no line, no field.
    let out = loadtest()
        .args([
            &serve.rest_url(),
            "--model",
            "regression",
            "--request",
            &body(),
        ])
        .args(["--rate", "50", "--duration", "1s", "--json"])
        .arg("--check-answers=false")
        .assert()
        .success();
    let o = out.get_output();
    assert!(!String::from_utf8_lossy(&o.stderr).contains("answers checked"));
    assert!(json_of(&o.stdout).get("answers").is_none());
}

#[test]
fn answers_that_change_under_batching_stop_loadtest_with_exit_1() {
    let bad = Tunable::start(true);
    let out = loadtest()
        .args([&bad.url(), "--model", "regression", "--request", &body()])
        .args(["--rate", "50", "--duration", "1s", "--json"])
        .assert()
        .code(1);
    let o = out.get_output();
    let err = squash(&o.stderr);
    assert!(err.contains("answerschangeunderbatching"), "{err}");
    assert!(err.contains("DIFFER"), "{err}");
    assert!(err.contains("relativedifference9.90e-3"), "{err}");
    assert!(o.stdout.is_empty(), "the run did not happen");

    // Each target is checked: a good one beside it does not hide it, and the difference
    // names the target at fault.
    let good = Tunable::start(false);
    let out = loadtest()
        .args([&good.url(), &bad.url(), "--model", "regression"])
        .args(["--request", &body(), "--rate", "50", "--duration", "1s"])
        .assert()
        .code(1);
    let err = squash(&out.get_output().stderr);
    // The refusal names the target whose answers differ, not the good one beside it.
    assert!(
        err.contains(&squash(
            format!("{}'s answers change under batching", bad.url()).as_bytes()
        )),
        "{err}"
    );
    assert!(!err.contains(&squash(good.url().as_bytes())), "{err}");
    assert!(err.contains("eachof2targetschecked"), "{err}");
    assert!(
        err.contains(&squash(
            format!("(worst: {}: request", bad.url()).as_bytes()
        )),
        "{err}"
    );

    // --find-capacity checks once, before the search.
    let out = loadtest()
        .args([&bad.url(), "--model", "regression", "--request", &body()])
        .args(["--find-capacity", "--slo", "p99=50ms", "--duration", "1s"])
        .assert()
        .code(1);
    let err = squash(&out.get_output().stderr);
    assert!(err.contains("answerschangeunderbatching"), "{err}");
    let out = loadtest()
        .args([&good.url(), "--model", "regression", "--request", &body()])
        .args(["--find-capacity", "--slo", "p99=200ms", "--rate", "50"])
        .args(["--duration", "1s", "--json"])
        .assert()
        .success();
    let o = out.get_output();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("answers checked").count(), 1, "{err}");
    assert_eq!(json_of(&o.stdout)["answers"]["differing"], 0);

    // Skipped, the same server runs (its answers under load are its own business).
    loadtest()
        .args([&bad.url(), "--model", "regression", "--request", &body()])
        .args(["--rate", "50", "--duration", "1s", "--check-answers=false"])
        .assert()
        .success();
}
