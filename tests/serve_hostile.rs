//! `benchstack serve` against hostile clients and files: giant declared shapes, ill-formed
//! bodies, many idle connections, slowloris heads, absurd batching counts and deeply nested
//! config files. Every case ends with the server (or the startup error) behaving.

#[path = "support/serve_process.rs"]
mod serve_process;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use benchstack::proto::serving::{
    ModelSpec, PredictRequest, prediction_service_client::PredictionServiceClient,
};
use benchstack::proto::tensorflow::{
    DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
};
use prost::Message as _;
use serde_json::{Value, json};
use serve_process::{ServeProcess, http, raw_http};

/// A bound on how long any one wait in these tests may take: it keeps a broken server from
/// hanging the suite, and is never an assertion about speed.
const PATIENCE: Duration = Duration::from_secs(60);

fn request(dims: &[i64], float_val: Vec<f32>, tensor_content: Vec<u8>) -> PredictRequest {
    let t = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: dims
                .iter()
                .map(|d| Dim {
                    size: *d,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        float_val,
        tensor_content,
        ..Default::default()
    };
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "regression".into(),
            signature_name: String::new(),
            version_choice: None,
        }),
        inputs: HashMap::from([("features".to_string(), t)]),
        output_filter: vec![],
    }
}

fn good_request() -> PredictRequest {
    request(&[2, 10], (0..20).map(|i| i as f32 / 10.0).collect(), vec![])
}

const GOOD_BODY: &str = r#"{"instances":[[1,2,3,4,5,6,7,8,9,10]]}"#;

fn assert_rest_serves(port: u16) {
    let (status, body) = http("POST", port, "/v1/models/regression:predict", GOOD_BODY);
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["predictions"].as_array().map(|a| a.len()), Some(1), "{v}");
}

async fn assert_grpc_serves(url: String) {
    let mut client = PredictionServiceClient::connect(url).await.unwrap();
    let reply = client.predict(good_request()).await.unwrap().into_inner();
    assert_eq!(reply.outputs["prediction"].float_val.len(), 2);
}

#[tokio::test]
async fn a_40_byte_giant_shape_is_invalid_argument_and_the_server_keeps_serving() {
    let mut server = ServeProcess::start_model(&[]);
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();

    // [10^12, 10] with one float_val: TF's broadcast form, 4·10^13 bytes if believed. The
    // tensor is about 40 bytes; the model spec brings the message to about 50.
    let giant = request(&[1_000_000_000_000, 10], vec![1.0], vec![]);
    assert!(
        giant.encoded_len() <= 64,
        "the hostile message is {} bytes",
        giant.encoded_len()
    );
    let err = client.predict(giant).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("exceed the limit"),
        "{}",
        err.message()
    );

    let cases: Vec<(PredictRequest, &str)> = vec![
        // The product overflows 64 bits.
        (
            request(&[i64::MAX, i64::MAX], vec![1.0], vec![]),
            "overflows",
        ),
        (request(&[-5, 10], vec![1.0], vec![]), "negative"),
        (request(&[1; 300], vec![1.0], vec![]), "at most 254"),
        // Just over the element bound, and a row count the model's input cannot take.
        (
            request(&[1_677_722, 10], vec![1.0], vec![]),
            "exceed the limit",
        ),
        (request(&[2, 11], vec![1.0], vec![]), "expected [-1, 10]"),
        (request(&[2, 10, 1], vec![1.0], vec![]), "expected [-1, 10]"),
        // Dense data that does not match the declared shape.
        (
            request(&[1_000_000, 10], vec![], vec![0; 40]),
            "tensor_content holds 40 bytes",
        ),
        (
            request(&[1_000_000, 10], vec![1.0, 2.0], vec![]),
            "float_val holds 2 values",
        ),
    ];
    for (req, fragment) in cases {
        let err = client.predict(req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
        assert!(err.message().contains(fragment), "{}", err.message());
    }
    let mut unknown_rank = good_request();
    if let Some(t) = unknown_rank.inputs.get_mut("features") {
        t.tensor_shape = Some(TensorShapeProto {
            dim: vec![],
            unknown_rank: true,
        });
    }
    let err = client.predict(unknown_rank).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    // A legitimate broadcast still works: one value fills [3, 10].
    let reply = client
        .predict(request(&[3, 10], vec![0.5], vec![]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.outputs["prediction"].float_val.len(), 3);

    // The same server, still alive, answers a normal request on both APIs.
    assert_grpc_serves(server.grpc_url()).await;
    assert_rest_serves(server.rest_port);
    assert!(matches!(server.child.try_wait(), Ok(None)));
    // Graceful shutdown waits for open connections: close ours, and keep this runtime
    // running (the client's connection task lives on it) while the server drains.
    drop(client);
    let code = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
}

#[test]
fn giant_and_ill_formed_rest_bodies_are_400_with_tf_servings_error_shape() {
    let server = ServeProcess::start_model(&[]);
    let deep = format!(
        "{{\"instances\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let nested_row = json!({"instances": [[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]]}).to_string();
    let long_row = json!({"instances": [vec![1.0; 100_000]]}).to_string();
    let string_sig = r#"{"signature_name":[1,2,3],"instances":[[1,2,3,4,5,6,7,8,9,10]]}"#;
    let both_late = r#"{"instances":[[1]],"inputs":[[1]]}"#;
    let cases: Vec<(&str, &str)> = vec![
        // Refused at the first level too deep for a row, without recursing through the rest.
        (deep.as_str(), "found a list where input"),
        (nested_row.as_str(), "found a list where input"),
        (long_row.as_str(), "expected 10"),
        (string_sig, "must be a string"),
        (both_late, "Not both"),
        (
            r#"{"instances":[{"features":[1,2,3,4,5,6,7,8,9,10],"x":[1]}]}"#,
            "expected exactly the input",
        ),
        (
            r#"{"inputs":{"features":[[1,2,3,4,5,6,7,8,9,"x"]]}}"#,
            "DT_FLOAT",
        ),
        (r#"{"instances":7}"#, "must be a list of rows"),
    ];
    for (body, fragment) in cases {
        let (status, reply) = http(
            "POST",
            server.rest_port,
            "/v1/models/regression:predict",
            body,
        );
        assert_eq!(status, 400, "{reply}");
        let v: Value = serde_json::from_str(&reply).unwrap_or_else(|_| panic!("not JSON: {reply}"));
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error key: {reply}"));
        assert!(
            msg.contains(fragment),
            "`{msg}` should mention `{fragment}`"
        );
    }

    // A body declared at a terabyte is refused from its length, not read or buffered.
    let (status, reply) = raw_http(
        server.rest_port,
        "POST /v1/models/regression:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000000\r\nConnection: close\r\n\r\n",
        b"{\"instances\": [[",
    );
    assert_eq!(status, 400, "{reply}");
    let v: Value = serde_json::from_str(&reply).unwrap_or_else(|_| panic!("not JSON: {reply}"));
    assert!(
        v["error"].as_str().is_some_and(|m| m.contains("body")),
        "{v}"
    );

    assert_rest_serves(server.rest_port);
}

/// Raises this process's open-file limit as far as allowed; returns the soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 256;
        }
        if lim.rlim_cur < lim.rlim_max {
            let mut raised = lim;
            raised.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normal_requests_are_answered_while_500_idle_connections_are_held() {
    // Idle connections stay open for the whole test: the deadlines are far away.
    let server = ServeProcess::start_model(&[
        "--header_read_timeout_ms",
        "600000",
        "--idle_timeout_ms",
        "600000",
    ]);
    // Two ports' worth of idle sockets plus headroom for the test's own files.
    let limit = raise_nofile();
    let per_port = 500.min((limit.saturating_sub(64) / 2) as usize);
    assert!(
        per_port >= 50,
        "RLIMIT_NOFILE {limit} is too low for this test"
    );
    let mut idle = Vec::new();
    for port in [server.rest_port, server.grpc_port] {
        for _ in 0..per_port {
            idle.push(TcpStream::connect(("127.0.0.1", port)).unwrap());
        }
    }
    let port = server.rest_port;
    tokio::task::spawn_blocking(move || assert_rest_serves(port))
        .await
        .unwrap();
    assert_grpc_serves(server.grpc_url()).await;
    // A half-sent head on one more connection does not hold up the others either.
    let mut partial = TcpStream::connect(("127.0.0.1", server.rest_port)).unwrap();
    partial
        .write_all(b"POST /v1/models/regression:predict HTTP/1.1\r\nHost")
        .unwrap();
    tokio::task::spawn_blocking(move || assert_rest_serves(port))
        .await
        .unwrap();
    drop(idle);
}

/// Waits (up to PATIENCE) for the server to close `s`: true on EOF or reset.
fn closed_by_peer(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A reply (hyper may answer 408) is fine; the close follows.
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

#[test]
fn slowloris_heads_and_silent_connections_are_closed_after_the_header_read_timeout() {
    let server = ServeProcess::start_model(&["--header_read_timeout_ms", "300"]);

    // A head that stops half way.
    let mut partial = TcpStream::connect(("127.0.0.1", server.rest_port)).unwrap();
    partial
        .write_all(b"POST /v1/models/regression:predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        .unwrap();
    assert!(closed_by_peer(&mut partial), "a partial head was left open");

    // Connections that never send a byte, on both ports (before HTTP/1 vs HTTP/2 is known).
    for port in [server.rest_port, server.grpc_port] {
        let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
        assert!(
            closed_by_peer(&mut silent),
            "a silent connection to {port} was left open"
        );
    }

    // A head that keeps trickling, one byte at a time, never ending: the deadline is for
    // the whole head, so fresh bytes do not extend it.
    let mut trickle = TcpStream::connect(("127.0.0.1", server.rest_port)).unwrap();
    trickle
        .write_all(b"GET /v1/models/regression HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    trickle.set_nonblocking(true).unwrap();
    let mut closed = false;
    let start = std::time::Instant::now();
    while start.elapsed() < PATIENCE {
        let mut buf = [0u8; 64];
        match trickle.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok(_) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if trickle.write_all(b"a").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "a trickling head was kept open");

    // And ordinary requests are answered all along.
    assert_rest_serves(server.rest_port);
}

/// Runs `benchstack serve` expecting it to fail at startup; returns (exit code, stderr).
fn startup_failure(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .arg("serve")
        .args(["--port", "0", "--rest_api_port", "0"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("benchstack serve {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

#[test]
fn absurd_counts_and_deep_nesting_in_files_and_flags_are_startup_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = serve_process::example_model();
    let model = model.to_str().unwrap();

    let batching = dir.path().join("batching_parameters.txt");
    std::fs::write(
        &batching,
        "max_batch_size { value: 32 }\nnum_batch_threads { value: 1000000000 }\n",
    )
    .unwrap();
    let (code, err) = startup_failure(&[
        "--model_base_path",
        model,
        "--enable_batching",
        "--batching_parameters_file",
        batching.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("batching_parameters.txt:2:") && err.contains("`num_batch_threads`"),
        "{err}"
    );
    assert!(err.contains("at most 1024"), "{err}");

    // 100k nested braces: refused, not a stack overflow (which would kill with a signal).
    let config = dir.path().join("models.config");
    std::fs::write(&config, "model_config_list {".repeat(100_000)).unwrap();
    let (code, err) = startup_failure(&["--model_config_file", config.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("models.config:1:") && err.contains("nest"),
        "{err}"
    );

    // Thread counts given as flags are bounded the same way.
    for flag in [
        "--rest_api_num_threads",
        "--tensorflow_inter_op_parallelism",
    ] {
        let (code, err) = startup_failure(&["--model_base_path", model, flag, "1000000000"]);
        assert_eq!(code, Some(1), "{err}");
        assert!(
            err.contains(&flag[2..]) && err.contains("out of range"),
            "{err}"
        );
    }
    let (code, err) = startup_failure(&["--model_base_path", model, "--max_connections", "0"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("max_connections"), "{err}");
}
