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
