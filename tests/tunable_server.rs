//! The tunable TF-Serving stand-in (`tests/support/tunable_tensorflow_model_server.py`) that
//! the `tune` tests put on PATH as `tensorflow_model_server`: its `--print-capacity` truth for
//! a batching file, the contract the tune tests rely on (one clear winner), its REST answers,
//! and the shedding configuration answering 503 to a burst instead of queueing it.

#[path = "support/serve_process.rs"]
mod serve_process;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serve_process::{http, repo};

fn script() -> PathBuf {
    repo().join("tests/support/tunable_tensorflow_model_server.py")
}

/// A batching_parameters.txt as the manifest renders it.
fn batching_file(dir: &Path, max_batch_size: u32, num_batch_threads: u32) -> PathBuf {
    let p = dir.join(format!("batching-{max_batch_size}-{num_batch_threads}.txt"));
    std::fs::write(
        &p,
        format!(
            "max_batch_size {{ value: {max_batch_size} }}\nbatch_timeout_micros {{ value: 1000 }}\nnum_batch_threads {{ value: {num_batch_threads} }}\n"
        ),
    )
    .unwrap();
    p
}

fn batching_flags(file: &Path) -> Vec<String> {
    vec![
        "--enable_batching=true".to_string(),
        format!("--batching_parameters_file={}", file.display()),
        "--tensorflow_intra_op_parallelism=2".to_string(),
    ]
}

/// `--print-capacity` for these flags: (capacity, sheds, base_latency_ms).
fn print_capacity(flags: &[String]) -> (f64, bool, f64) {
    let out = Command::new(script())
        .arg("--print-capacity")
        .args(flags)
        .output()
        .expect("run the tunable server script");
    assert!(
        out.status.success(),
        "--print-capacity failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    (
        v["capacity"].as_f64().expect("capacity"),
        v["sheds"].as_bool().expect("sheds"),
        v["base_latency_ms"].as_f64().expect("base_latency_ms"),
    )
}

struct Server {
    child: Child,
    rest_port: u16,
}

impl Server {
    /// Starts the script on free loopback ports (new ones if a port was taken meanwhile) and
    /// waits until it reports the model AVAILABLE.
    fn start(flags: &[String], model_config: &Path) -> Server {
        let mut last = String::new();
        for _attempt in 0..3 {
            let (grpc, rest) = {
                let a = TcpListener::bind("127.0.0.1:0").unwrap();
                let b = TcpListener::bind("127.0.0.1:0").unwrap();
                (
                    a.local_addr().unwrap().port(),
                    b.local_addr().unwrap().port(),
                )
            };
            let mut child = Command::new(script())
                .arg(format!("--port={grpc}"))
                .arg(format!("--rest_api_port={rest}"))
                .arg(format!("--model_config_file={}", model_config.display()))
                .args(flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the tunable server script");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    last = err;
                    break;
                }
                if TcpStream::connect(("127.0.0.1", rest)).is_ok() {
                    return Server {
                        child,
                        rest_port: rest,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("the tunable server did not listen on {rest}");
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("the tunable server did not start: {last}");
    }

    /// SIGTERM; the exit code once it has exited.
    fn terminate(&mut self) -> Option<i32> {
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        for _ in 0..400 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        None
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn model_config(dir: &Path) -> PathBuf {
    let p = dir.join("models.config");
    std::fs::write(
        &p,
        "model_config_list {\n  config {\n    name: \"regression\"\n    base_path: \"/nowhere\"\n    model_platform: \"tensorflow\"\n  }\n}\n",
    )
    .unwrap();
    p
}

#[test]
fn print_capacity_gives_the_documented_truth_for_two_configurations() {
    let dir = tempfile_dir("print");
    let (c, sheds, base) = print_capacity(&batching_flags(&batching_file(&dir, 32, 2)));
    assert_eq!((c, sheds, base), (960.0, false, 19.6));
    let (c, sheds, _) = print_capacity(&batching_flags(&batching_file(&dir, 8, 4)));
    assert_eq!((c, sheds), (197.5, true));
    let (c, sheds, base) = print_capacity(&[]);
    assert_eq!((c, sheds, base), (150.0, false, 1.0), "batching disabled");
}

#[test]
fn the_largest_batch_size_has_a_latency_floor_above_a_50ms_slo_and_the_others_do_not() {
    let dir = tempfile_dir("floor");
    for (b, floor) in [(8, 6.4), (32, 19.6), (128, 72.4)] {
        for n in [1, 2] {
            let (_, _, base) = print_capacity(&batching_flags(&batching_file(&dir, b, n)));
            assert_eq!(base, floor, "({b}, {n})");
        }
    }
}

#[test]
fn one_non_shedding_configuration_leads_the_batching_grid_by_30_percent() {
    let dir = tempfile_dir("grid");
    let mut grid = Vec::new();
    for b in [8, 32] {
        for n in [1, 2] {
            let (c, sheds, _) = print_capacity(&batching_flags(&batching_file(&dir, b, n)));
            assert!(!sheds, "({b}, {n}) must not shed");
            grid.push((c, b, n));
        }
    }
    grid.sort_by(|x, y| y.0.total_cmp(&x.0));
    assert_eq!((grid[0].1, grid[0].2), (32, 2), "{grid:?}");
    assert!(grid[0].0 >= 1.3 * grid[1].0, "{grid:?}");
}

#[test]
fn print_capacity_names_the_line_of_a_bad_batching_file() {
    let dir = tempfile_dir("bad");
    let p = dir.join("batching.txt");
    std::fs::write(
        &p,
        "max_batch_size { value: 8 }\nnum_batch_threads { value: two }\n",
    )
    .unwrap();
    let out = Command::new(script())
        .arg("--print-capacity")
        .args(batching_flags(&p))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("batching.txt:2:"), "{err}");
}

#[test]
fn serves_status_and_predictions_and_exits_0_on_sigterm() {
    let dir = tempfile_dir("serve");
    let mut server = Server::start(
        &batching_flags(&batching_file(&dir, 32, 2)),
        &model_config(&dir),
    );
    let port = server.rest_port;
    let (status, body) = http("GET", port, "/v1/models/regression", "");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model_version_status"][0]["state"], "AVAILABLE", "{v}");

    let (status, body) = http(
        "POST",
        port,
        "/v1/models/regression:predict",
        r#"{"instances": [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]}"#,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["predictions"].as_array().map(Vec::len), Some(3), "{v}");

    let (status, body) = http("POST", port, "/v1/models/regression:predict", "{\"inst");
    assert_eq!(status, 400, "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
    let (status, _) = http(
        "POST",
        port,
        "/v1/models/other:predict",
        "{\"instances\": [1]}",
    );
    assert_eq!(status, 404);
    // Still serving after the bad requests.
    let (status, _) = http("GET", port, "/v1/models/regression", "");
    assert_eq!(status, 200);

    assert_eq!(server.terminate(), Some(0));
}

#[test]
fn the_shedding_configuration_answers_a_burst_with_fast_503s() {
    let dir = tempfile_dir("shed");
    let server = Server::start(
        &batching_flags(&batching_file(&dir, 8, 4)),
        &model_config(&dir),
    );
    // 200 requests on 200 connections at once: the virtual server takes one per ~5 ms and
    // sheds whatever would wait more than 5 ms, so unless the burst is spread over a whole
    // second, some are shed; the first is always served.
    let body = r#"{"instances": [[1.0, 2.0]]}"#;
    let request = format!(
        "POST /v1/models/regression:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut conns: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", server.rest_port)).unwrap())
        .collect();
    for c in &mut conns {
        c.write_all(request.as_bytes()).unwrap();
    }
    let (mut ok, mut shed) = (0, 0);
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut raw = String::new();
        c.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        match head.split_whitespace().nth(1) {
            Some("200") => ok += 1,
            Some("503") => {
                let v: serde_json::Value = serde_json::from_str(body).expect("a JSON 503 body");
                assert!(v["error"].is_string(), "{v}");
                shed += 1;
            }
            other => panic!("unexpected answer {other:?}: {raw}"),
        }
    }
    assert!(ok >= 1, "the first request of a burst is served");
    assert!(shed >= 1, "{ok} served, none shed");
    assert_eq!(ok + shed, 200);
}

/// A fresh directory under the target's temp dir (no tempfile crate in dev-dependencies).
fn tempfile_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tunable-server-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
