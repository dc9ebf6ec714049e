//! `benchstack loadtest` against hostile servers on loopback: replies that overflow, never
//! end, are not HTTP, or stop halfway. The run must end on time, without a panic, with
//! every failure under an error kind, and with every scheduled request in the report.

#[path = "support/serve_process.rs"]
mod serve_process;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use assert_cmd::Command;
use serve_process::repo;

/// What the server answers to every request.
#[derive(Debug, Clone, Copy)]
enum Hostile {
    /// A chunk size of 16 hex digits (2^64 - 1).
    HugeChunk,
    /// A 200 head, then body bytes until the client goes away.
    EndlessBody,
    /// Not HTTP at all; the connection stays open.
    GarbageStatus,
    /// A Content-Length of ~100 GB, one byte, then the close.
    HugeLengthThenClose,
    /// Content-Length 100, ten bytes, then the close.
    CloseMidBody,
    /// A status line, then header lines forever.
    EndlessHeaders,
    /// Reads the request and never answers.
    Silent,
}

/// A TCP server on 127.0.0.1:0, one thread per connection; stops on drop.
struct HostileServer {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HostileServer {
    fn start(how: Hostile) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let stopped = stopped.clone();
                        conns.push(std::thread::spawn(move || serve(s, how, &stopped)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        HostileServer {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The length of a request whose head is complete in `got` (head + Content-Length).
fn request_len(got: &[u8]) -> Option<usize> {
    let end = got.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    let body = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    Some(end + body)
}

/// Reads one whole request, body included (closing with unread bytes would reset the
/// connection and hide the reply from the client).
fn read_request(s: &mut TcpStream, stop: &AtomicBool) -> bool {
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if request_len(&got).is_some_and(|len| got.len() >= len) {
                    return true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return false,
        }
    }
    false
}

/// Waits for the client to hang up (or the server to stop), discarding what it sends.
fn hold_open(s: &mut TcpStream, stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
    }
}

/// Writes `chunk` until the client hangs up (or the server stops).
fn write_forever(s: &mut TcpStream, chunk: &[u8], stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        if s.write_all(chunk).is_err() {
            return;
        }
    }
}

fn serve(mut s: TcpStream, how: Hostile, stop: &AtomicBool) {
    // Bounded blocking so the thread notices `stop`.
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
    // One request per connection: every reply here ends the connection's usefulness.
    if !read_request(&mut s, stop) {
        return;
    }
    match how {
        Hostile::HugeChunk => {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFF\r\n{\"predictions\": [",
            );
        }
        Hostile::EndlessBody => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n");
            write_forever(&mut s, &[b'7'; 16 << 10], stop);
            return;
        }
        Hostile::GarbageStatus => {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
        }
        Hostile::HugeLengthThenClose => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n{");
            return;
        }
        Hostile::CloseMidBody => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"predicti");
            return;
        }
        Hostile::EndlessHeaders => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\n");
            write_forever(
                &mut s,
                &b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(256),
                stop,
            );
            return;
        }
        Hostile::Silent => {}
    }
    hold_open(&mut s, stop);
}

fn body() -> String {
    repo()
        .join("examples/requests/regression.json")
        .display()
        .to_string()
}

/// Runs `loadtest --json` at 20 req/s for 1 s (20 requests scheduled) and returns the
/// stage's report; asserts no panic and a clean exit.
fn run_against(server: &HostileServer, extra: &[&str]) -> serde_json::Value {
    run_with(server, &["--request", &body()], extra)
}

fn run_with(server: &HostileServer, request: &[&str], extra: &[&str]) -> serde_json::Value {
    let out = Command::cargo_bin("benchstack")
        .unwrap()
        .arg("loadtest")
        .arg(server.url())
        .args(["--model", "regression"])
        .args(request)
        .args(["--rate", "20", "--duration", "1s", "--timeout", "1s"])
        .args(["--json", "--quiet"])
        .args(extra)
        // A hang guard, not a timing assertion: duration + timeout + grace is ~3 s.
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    assert!(
        out.status.success(),
        "exit {:?}: {stderr}",
        out.status.code()
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
    v["stages"][0].clone()
}

/// Every one of the 20 scheduled requests is in the report, failed, under `kind`.
fn assert_all_failed_as(stage: &serde_json::Value, kind: &str) {
    let requests = stage["requests"].as_u64().unwrap();
    let errors_total = stage["errors_total"].as_u64().unwrap();
    let errors = stage["errors"].as_object().unwrap();
    let by_kind: u64 = errors.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(requests, 20, "scheduled 20: {stage}");
    assert_eq!(errors_total, requests, "every request failed: {stage}");
    assert_eq!(by_kind, errors_total, "errors by kind add up: {stage}");
    assert_eq!(
        errors.get(kind).and_then(|n| n.as_u64()),
        Some(20),
        "all under `{kind}`: {stage}"
    );
}

#[test]
fn a_sixteen_hex_digit_chunk_size_is_malformed() {
    let s = HostileServer::start(Hostile::HugeChunk);
    assert_all_failed_as(&run_against(&s, &[]), "malformed");
}

#[test]
fn an_endless_body_is_cut_off_at_the_cap_as_malformed() {
    let s = HostileServer::start(Hostile::EndlessBody);
    let stage = run_against(&s, &["--max-response-bytes", "262144"]);
    assert_all_failed_as(&stage, "malformed");
}

/// With --data the generator first asks the server for the model's metadata (hyper, with a
/// body cap and the timeout): an endless reply there must not hold up or sink the run.
#[test]
fn an_endless_metadata_reply_is_cut_off_and_the_run_goes_on() {
    let s = HostileServer::start(Hostile::EndlessBody);
    let csv = repo().join("examples/model/test.csv");
    let stage = run_with(
        &s,
        &["--data", csv.to_str().unwrap()],
        &["--max-response-bytes", "262144"],
    );
    assert_all_failed_as(&stage, "malformed");
}

#[test]
fn a_garbage_status_line_is_malformed() {
    let s = HostileServer::start(Hostile::GarbageStatus);
    assert_all_failed_as(&run_against(&s, &[]), "malformed");
}

#[test]
fn a_huge_content_length_is_malformed_before_the_close() {
    let s = HostileServer::start(Hostile::HugeLengthThenClose);
    assert_all_failed_as(&run_against(&s, &[]), "malformed");
}

#[test]
fn a_close_mid_body_is_closed() {
    let s = HostileServer::start(Hostile::CloseMidBody);
    assert_all_failed_as(&run_against(&s, &[]), "closed");
}

#[test]
fn headers_that_never_end_are_malformed() {
    let s = HostileServer::start(Hostile::EndlessHeaders);
    assert_all_failed_as(&run_against(&s, &[]), "malformed");
}

/// One connection, a server that never answers: the run stops waiting with one request on
/// the wire and the rest still queued. All of them are reported, as timeouts.
#[test]
fn requests_still_in_flight_or_queued_when_the_run_ends_are_counted() {
    let s = HostileServer::start(Hostile::Silent);
    let stage = run_against(&s, &["--connections", "1"]);
    assert_all_failed_as(&stage, "timeout");
}

// Absurd input: refused with the flag or file:line:col named, exit 1, never a panic.

fn assert_refused(out: std::process::Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "a panic: {stderr}");
    assert!(!stderr.contains("overflow"), "an overflow: {stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for e in expected {
        assert!(stderr.contains(e), "expected {e:?} in: {stderr}");
    }
}

fn benchstack(args: &[&str]) -> std::process::Output {
    Command::cargo_bin("benchstack")
        .unwrap()
        .args(args)
        .timeout(Duration::from_secs(60))
        .output()
        .unwrap()
}

#[test]
fn absurd_durations_rates_and_stage_counts_are_refused_naming_the_flag() {
    let b = body();
    let t = "http://127.0.0.1:9";
    let run = |extra: &[&str]| {
        let mut args = vec!["loadtest", t, "--model", "m", "--request", &b];
        args.extend_from_slice(extra);
        benchstack(&args)
    };
    let huge = "300000000000y";
    let slo = format!("p99={huge}");
    let stage = format!("10:{huge}");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--rate", "10", "--duration", huge],
            vec!["--duration", "too long"],
        ),
        (
            vec!["--rate", "10", "--duration", "500000000y"],
            vec!["--duration", "too long"],
        ),
        (
            vec!["--rate", "1e300", "--duration", "1s"],
            vec!["--rate", "too high"],
        ),
        (vec!["--stage", "1e300:1s"], vec!["--stage", "too high"]),
        (vec!["--stage", &stage], vec!["--stage", "too long"]),
        (
            vec!["--rate", "10", "--duration", "1s", "--warmup", huge],
            vec!["--warmup", "too long"],
        ),
        (
            vec!["--rate", "10", "--duration", "1s", "--timeout", huge],
            vec!["--timeout", "too long"],
        ),
        (
            vec!["--rate", "10", "--duration", "1s", "--slo", &slo],
            vec!["--slo"],
        ),
        (
            vec![
                "--rate",
                "10",
                "--duration",
                "1s",
                "--max-response-bytes",
                "99999999999999999999999",
            ],
            vec!["--max-response-bytes"],
        ),
    ];
    for (extra, expected) in cases {
        assert_refused(run(&extra), &expected);
    }
    // Stages that add up to more than a run may last, and too many stages.
    let long: Vec<String> = (0..3).map(|_| "10:200d".to_string()).collect();
    let mut args: Vec<&str> = Vec::new();
    for s in &long {
        args.extend(["--stage", s]);
    }
    assert_refused(run(&args), &["366 days"]);
    let many: Vec<String> = (0..1001).map(|_| "10:1s".to_string()).collect();
    let mut args: Vec<&str> = Vec::new();
    for s in &many {
        args.extend(["--stage", s]);
    }
    assert_refused(run(&args), &["1001 stages", "--stage"]);
    let csv = repo().join("examples/model/test.csv");
    let out = benchstack(&[
        "loadtest",
        t,
        "--model",
        "m",
        "--data",
        csv.to_str().unwrap(),
        "--batch-size",
        "4000000000",
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_refused(out, &["--data", "batch size", "too large"]);
}

#[test]
fn a_deeply_nested_request_body_is_refused_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.json");
    let text = format!(
        "{{\"instances\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(&deep, text).unwrap();
    let out = benchstack(&[
        "loadtest",
        "http://127.0.0.1:9",
        "--model",
        "m",
        "--request",
        deep.to_str().unwrap(),
        "--rate",
        "10",
        "--duration",
        "1s",
    ]);
    assert_refused(out, &["deep.json: is not JSON", "recursion limit"]);
}

/// A minimal valid stack whose load test carries `loadtest_extra` lines.
fn stack_with(dir: &std::path::Path, loadtest_extra: &str) -> std::path::PathBuf {
    stack_requesting(
        dir,
        &repo().join("examples/requests/regression.json"),
        loadtest_extra,
    )
}

fn stack_requesting(
    dir: &std::path::Path,
    request: &std::path::Path,
    loadtest_extra: &str,
) -> std::path::PathBuf {
    let root = repo();
    let text = format!(
        r#"cluster "local" {{
  provider = "local"
}}

model "regression" {{
  base_path = "{model}"
}}

serving "tf" {{
  cluster  = cluster.local
  replicas = 1
  models   = [model.regression]
}}

loadtest "x" {{
  target  = serving.tf
  model   = "regression"
  request = file("{body}")
{loadtest_extra}
}}
"#,
        model = root.join("examples/model/regression").display(),
        body = request.display(),
    );
    let p = dir.join("x.hcl");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn a_stack_with_absurd_values_is_refused_located() {
    let dir = tempfile::tempdir().unwrap();
    let ok = stack_with(
        dir.path(),
        "  stage {\n    rate     = 10\n    duration = \"1s\"\n  }",
    );
    let out = benchstack(&["validate", ok.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The load test's body starts on line 19.
    for (extra, expected) in [
        (
            "  stage {\n    rate     = 10\n    duration = \"300000000000y\"\n  }",
            "x.hcl:21:16",
        ),
        (
            "  stage {\n    rate     = 1e300\n    duration = \"1s\"\n  }",
            "x.hcl:20:16",
        ),
        (
            "  stage {\n    rate     = 10\n    duration = \"1s\"\n    name     = format(\"%.70000f\", 1)\n  }",
            "x.hcl:22:",
        ),
        (
            "  warmup = \"200d\"\n  stage {\n    rate     = 10\n    duration = \"200d\"\n  }",
            "x.hcl:15:",
        ),
    ] {
        let p = stack_with(dir.path(), extra);
        assert_refused(benchstack(&["validate", p.to_str().unwrap()]), &[expected]);
    }
}

#[test]
fn a_deeply_nested_request_file_in_a_stack_is_refused_located() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("deep.json");
    let text = format!(
        "{{\"instances\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    std::fs::write(&deep, text).unwrap();
    let p = stack_requesting(
        dir.path(),
        &deep,
        "  stage {\n    rate     = 10\n    duration = \"1s\"\n  }",
    );
    assert_refused(
        benchstack(&["validate", p.to_str().unwrap()]),
        &["x.hcl:18:", "not JSON", "recursion limit"],
    );
}

/// hcl-edit limits nesting itself (64 levels); this keeps it that way through the binary.
#[test]
fn deeply_nested_hcl_is_refused_located_not_a_stack_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("deep.hcl");
    std::fs::write(
        &p,
        format!("locals {{\n  x = {}\n}}\n", "[".repeat(100_000)),
    )
    .unwrap();
    let path = p.to_str().unwrap();
    assert_refused(benchstack(&["validate", path]), &["deep.hcl:2:", "nested"]);
    assert_refused(
        benchstack(&["fmt", "--check", path]),
        &["deep.hcl:2:", "nested"],
    );
    // Through template interpolations too.
    std::fs::write(
        &p,
        format!(
            "x = \"{}1{}\"\n",
            "${\"".repeat(50_000),
            "\"}".repeat(50_000)
        ),
    )
    .unwrap();
    assert_refused(benchstack(&["validate", path]), &["deep.hcl:1:", "nested"]);
    // And a --var read as an HCL expression.
    std::fs::write(&p, "variable \"v\" {\n  default = [1]\n}\n").unwrap();
    let deep_var = format!("v={}", "[".repeat(100_000));
    assert_refused(benchstack(&["validate", path, "--var", &deep_var]), &["v"]);
}

/// The stand-in closes a kept-alive connection that stays quiet past its header-read
/// timeout. At 4 req/s on one connection every request after the first finds it closed: the
/// generator sends again on a fresh connection instead of reporting `closed` errors.
#[test]
fn a_keep_alive_connection_closed_while_idle_is_reopened_not_counted_as_an_error() {
    let server = serve_process::ServeProcess::start_model(&["--header_read_timeout_ms", "100"]);
    let body = repo().join("examples/requests/regression.json");
    let out = Command::cargo_bin("benchstack")
        .unwrap()
        .timeout(Duration::from_secs(60))
        .args(["loadtest", &server.rest_url(), "--model", "regression"])
        .arg("--request")
        .arg(&body)
        .args(["--rate", "4", "--duration", "2s", "--connections", "1"])
        .args(["--json", "--slo", "errors=0%"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let stage = &v["stages"][0];
    assert_eq!(stage["requests"], 8, "{stage}");
    assert_eq!(stage["errors_total"], 0, "{stage}");
    assert_eq!(out.status.code(), Some(0), "{stage}");
}
