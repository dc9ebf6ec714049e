//! `benchstack serve` against real sockets: predictions equal TensorFlow's, both REST formats,
//! gRPC, batching, queue overflow and every error shape.

#[path = "support/serve_process.rs"]
mod serve_process;

use std::collections::HashMap;
use std::io::Write;

use benchstack::proto::serving::{
    GetModelMetadataRequest, GetModelStatusRequest, ModelSpec, PredictRequest, SignatureDefMap,
    model_service_client::ModelServiceClient, prediction_service_client::PredictionServiceClient,
};
use benchstack::proto::tensorflow::{
    DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim,
};
use prost::Message as _;
use serde_json::{Value, json};
use serve_process::{ServeProcess, http, read_json, repo};

fn expected() -> (Vec<Vec<f32>>, Vec<f32>) {
    let v = read_json(&repo().join("examples/model/expected.json"));
    let instances = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let predictions = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_f64().unwrap() as f32)
        .collect();
    (instances, predictions)
}

fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (g, w) in got.iter().zip(want) {
        let rel = ((g - w) / w.abs().max(1e-6)).abs();
        assert!(
            rel < 1e-5,
            "prediction {g} differs from TensorFlow's {w} by {rel:e} (relative)"
        );
    }
}

fn predictions(v: &Value, key: &str) -> Vec<f32> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .iter()
        .map(|p| p[0].as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn rest_row_and_columnar_formats_return_tensorflows_predictions() {
    let server = ServeProcess::start_model(&[]);
    let (instances, want) = expected();

    let (status, body) = http(
        "POST",
        server.rest_port,
        "/v1/models/regression:predict",
        &json!({"instances": instances}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_close(
        &predictions(&serde_json::from_str(&body).unwrap(), "predictions"),
        &want,
    );

    // Named row objects and an explicit signature.
    let named: Vec<Value> = instances.iter().map(|r| json!({"features": r})).collect();
    let body = json!({"signature_name": "serving_default", "instances": named}).to_string();
    let (status, body) = http(
        "POST",
        server.rest_port,
        "/v1/models/regression/versions/1:predict",
        &body,
    );
    assert_eq!(status, 200, "{body}");
    assert_close(
        &predictions(&serde_json::from_str(&body).unwrap(), "predictions"),
        &want,
    );

    // Columnar, bare and named.
    for inputs in [json!(instances), json!({"features": instances})] {
        let (status, body) = http(
            "POST",
            server.rest_port,
            "/v1/models/regression:predict",
            &json!({"inputs": inputs}).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        assert_close(
            &predictions(&serde_json::from_str(&body).unwrap(), "outputs"),
            &want,
        );
    }
}

#[test]
fn rest_status_and_metadata_have_tf_servings_shapes() {
    let server = ServeProcess::start_model(&[]);
    let (status, body) = http("GET", server.rest_port, "/v1/models/regression", "");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["model_version_status"][0]["version"], "1");
    assert_eq!(v["model_version_status"][0]["state"], "AVAILABLE");
    assert_eq!(v["model_version_status"][0]["status"]["error_code"], "OK");

    let (status, body) = http(
        "GET",
        server.rest_port,
        "/v1/models/regression/metadata",
        "",
    );
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let sig = &v["metadata"]["signature_def"]["signature_def"]["serving_default"];
    assert_eq!(sig["inputs"]["features"]["dtype"], "DT_FLOAT");
    assert_eq!(
        sig["inputs"]["features"]["tensor_shape"]["dim"][1]["size"],
        "10"
    );
    assert!(sig["outputs"]["prediction"].is_object(), "{v}");
    assert_eq!(v["model_spec"]["version"], "1");
}

#[test]
fn rest_bad_requests_get_tf_servings_error_shapes() {
    let server = ServeProcess::start_model(&[]);
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "POST",
            "/v1/models/regression:predict",
            "{not json",
            400,
            "JSON parse error",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            "[1,2]",
            400,
            "must be a JSON object",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            "{}",
            400,
            "Missing 'inputs' or 'instances'",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            r#"{"instances":[[1]],"inputs":[[1]]}"#,
            400,
            "Not both",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            r#"{"instances":[[1,2,3]]}"#,
            400,
            "expected 10",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            r#"{"instances":[["a",2,3,4,5,6,7,8,9,10]]}"#,
            400,
            "DT_FLOAT",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            r#"{"instances":[{"feature":[1,2,3,4,5,6,7,8,9,10]}]}"#,
            400,
            "expected exactly the input \"features\"",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            r#"{"instances":[]}"#,
            400,
            "no rows",
        ),
        (
            "POST",
            "/v1/models/regression:predict",
            r#"{"signature_name":"nope","instances":[[1,2,3,4,5,6,7,8,9,10]]}"#,
            400,
            "signature",
        ),
        (
            "POST",
            "/v1/models/nope:predict",
            r#"{"instances":[[1,2,3,4,5,6,7,8,9,10]]}"#,
            404,
            "Servable not found",
        ),
        (
            "POST",
            "/v1/models/regression/versions/7:predict",
            r#"{"instances":[[1,2,3,4,5,6,7,8,9,10]]}"#,
            404,
            "Servable not found",
        ),
        (
            "POST",
            "/v1/models/regression/labels/canary:predict",
            r#"{"instances":[[1,2,3,4,5,6,7,8,9,10]]}"#,
            404,
            "label",
        ),
        ("GET", "/v1/models/nope", "", 404, "Servable not found"),
        ("GET", "/v2/anything", "", 404, "Malformed request"),
    ];
    for (method, path, body, status, fragment) in cases {
        let (got, reply) = http(method, server.rest_port, path, body);
        assert_eq!(got, *status, "{method} {path} {body} → {reply}");
        let v: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|_| panic!("error body is not JSON: {reply}"));
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error key: {reply}"));
        assert!(
            msg.contains(fragment),
            "{method} {path}: `{msg}` should mention `{fragment}`"
        );
    }
    // Still serving after all that.
    let (status, _) = http("GET", server.rest_port, "/v1/models/regression", "");
    assert_eq!(status, 200);
}

fn predict_request(rows: &[Vec<f32>], content: bool) -> PredictRequest {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut t = TensorProto {
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: vec![
                Dim {
                    size: rows.len() as i64,
                    name: String::new(),
                },
                Dim {
                    size: 10,
                    name: String::new(),
                },
            ],
            unknown_rank: false,
        }),
        ..Default::default()
    };
    if content {
        t.tensor_content = flat.iter().flat_map(|f| f.to_le_bytes()).collect();
    } else {
        t.float_val = flat;
    }
    PredictRequest {
        model_spec: Some(ModelSpec {
            name: "regression".into(),
            signature_name: "serving_default".into(),
            version_choice: None,
        }),
        inputs: HashMap::from([("features".to_string(), t)]),
        output_filter: vec![],
    }
}

#[tokio::test]
async fn grpc_predict_status_and_metadata() {
    let server = ServeProcess::start_model(&[]);
    let (instances, want) = expected();
    let mut client = PredictionServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    for content in [true, false] {
        let reply = client
            .predict(predict_request(&instances, content))
            .await
            .unwrap()
            .into_inner();
        let out = &reply.outputs["prediction"];
        assert_eq!(
            out.tensor_shape.as_ref().unwrap().dim[0].size,
            instances.len() as i64
        );
        assert_close(&out.float_val, &want);
        assert_eq!(reply.model_spec.unwrap().name, "regression");
    }

    let mut bad = predict_request(&instances, true);
    bad.inputs.get_mut("features").unwrap().dtype = DataType::DtDouble as i32;
    let err = client.predict(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().contains("DT_FLOAT"), "{}", err.message());

    let mut bad = predict_request(&instances, true);
    bad.inputs.get_mut("features").unwrap().tensor_content.pop();
    assert_eq!(
        client.predict(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let mut bad = predict_request(&instances, true);
    let t = bad.inputs.remove("features").unwrap();
    bad.inputs.insert("x".into(), t);
    assert_eq!(
        client.predict(bad).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );

    let mut bad = predict_request(&instances, true);
    bad.model_spec.as_mut().unwrap().name = "nope".into();
    assert_eq!(
        client.predict(bad).await.unwrap_err().code(),
        tonic::Code::NotFound
    );

    let mut status = ModelServiceClient::connect(server.grpc_url())
        .await
        .unwrap();
    let s = status
        .get_model_status(GetModelStatusRequest {
            model_spec: Some(ModelSpec {
                name: "regression".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.model_version_status[0].version, 1);
    assert_eq!(s.model_version_status[0].state, 30);

    let md = client
        .get_model_metadata(GetModelMetadataRequest {
            model_spec: Some(ModelSpec {
                name: "regression".into(),
                ..Default::default()
            }),
            metadata_field: vec!["signature_def".into()],
        })
        .await
        .unwrap()
        .into_inner();
    let any = &md.metadata["signature_def"];
    assert!(any.type_url.ends_with("tensorflow.serving.SignatureDefMap"));
    let map = SignatureDefMap::decode(any.value.as_slice()).unwrap();
    assert!(
        map.signature_def["serving_default"]
            .inputs
            .contains_key("features")
    );
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// The sum over every series whose line starts with `prefix` (e.g. all label sets of a
/// histogram's `_sum`).
fn metric_total(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// A monitoring.config turning TF Serving's Prometheus page on at `path`.
fn monitoring(dir: &tempfile::TempDir, path: &str) -> String {
    write_file(
        dir,
        "monitoring.config",
        &format!("prometheus_config {{\n  enable: true,\n  path: \"{path}\"\n}}\n"),
    )
}

const PAGE: &str = "/monitoring/prometheus/metrics";
const BATCHING: &str = ":tensorflow:serving:batching_session";

fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn concurrent_requests_are_served_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let params = write_file(
        &dir,
        "batching_parameters.txt",
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 20000 }\nmax_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\nallowed_batch_sizes: 32\nallowed_batch_sizes: 64\n",
    );
    let mon = monitoring(&dir, PAGE);
    let server = ServeProcess::start_model(&[
        "--enable_batching",
        "--batching_parameters_file",
        &params,
        "--monitoring_config_file",
        &mon,
    ]);
    let (instances, want) = expected();
    let port = server.rest_port;
    let threads: Vec<_> = (0..16)
        .map(|i| {
            let row = instances[i % instances.len()].clone();
            std::thread::spawn(move || {
                let (status, body) = http(
                    "POST",
                    port,
                    "/v1/models/regression:predict",
                    &json!({"instances": [row]}).to_string(),
                );
                assert_eq!(status, 200, "{body}");
                predictions(&serde_json::from_str(&body).unwrap(), "predictions")[0]
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        assert_close(&[t.join().unwrap()], &[want[i % want.len()]]);
    }
    let (status, text) = http("GET", port, PAGE, "");
    assert_eq!(status, 200, "{text}");
    let batches = metric(&text, &format!("{BATCHING}:wrapped_run_count{{}}"));
    assert_eq!(
        metric(&text, &format!("{BATCHING}:input_batch_size_count{{}}")),
        16,
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("{BATCHING}:input_batch_size_sum{{}}")),
        16,
        "{text}"
    );
    assert!(
        batches < 16,
        "16 concurrent requests ran in {batches} batches: expected some batch of more than one\n{text}"
    );
    assert_eq!(
        metric(&text, &format!("{BATCHING}:processed_batch_size_count{{}}")),
        batches,
        "{text}"
    );
    // Padded to 32 or 64 rows: the executed rows are the real 16 plus the padding.
    let processed = metric(&text, &format!("{BATCHING}:processed_batch_size_sum{{}}"));
    let padding = metric_total(&text, &format!("{BATCHING}:padding_size_sum{{"));
    assert!(padding > 0.0, "batches are padded to 32 or 64 rows\n{text}");
    assert_eq!(processed as f64, 16.0 + padding, "{text}");
    assert_eq!(
        metric(
            &text,
            ":tensorflow:serving:request_count{model_name=\"regression\",status=\"OK\"}"
        ),
        16,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            ":tensorflow:serving:request_latency_count{model_name=\"regression\",API=\"predict\",entrypoint=\"REST\"}"
        ),
        16,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("{BATCHING}:queuing_latency_count{{thread_pool_name=\"batch_threads\"}}")
        ),
        16,
        "{text}"
    );
}

#[test]
fn without_a_monitoring_config_there_is_no_metrics_page_as_in_tf_serving() {
    let server = ServeProcess::start_model(&[]);
    let (status, body) = http("GET", server.rest_port, PAGE, "");
    assert_eq!(status, 404, "{body}");
    // Batching off: no batching-session families, but requests are counted.
    let dir = tempfile::tempdir().unwrap();
    let mon = monitoring(&dir, PAGE);
    let server = ServeProcess::start_model(&["--monitoring_config_file", &mon]);
    let (status, _) = http("GET", server.rest_port, "/v1/models/nope", "");
    assert_eq!(status, 404);
    let (status, text) = http("GET", server.rest_port, PAGE, "");
    assert_eq!(status, 200, "{text}");
    assert!(!text.contains("batching_session"), "{text}");
    assert!(
        text.contains("# TYPE :tensorflow:serving:request_count counter\n"),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            ":tensorflow:serving:request_count{model_name=\"nope\",status=\"NOT_FOUND\"}"
        ),
        1,
        "{text}"
    );
}

#[test]
fn a_full_batch_queue_is_refused_with_503_and_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    // One batch thread and room for one queued batch; every request fills a whole batch of 512
    // rows, so while one runs and one waits, the rest of a burst cannot be queued.
    let params = write_file(
        &dir,
        "batching_parameters.txt",
        "max_batch_size { value: 512 }\nbatch_timeout_micros { value: 0 }\nmax_enqueued_batches { value: 1 }\nnum_batch_threads { value: 1 }\n",
    );
    let mon = monitoring(&dir, PAGE);
    let server = ServeProcess::start_model(&[
        "--enable_batching=true",
        &format!("--batching_parameters_file={params}"),
        &format!("--monitoring_config_file={mon}"),
    ]);
    let (instances, _) = expected();
    let port = server.rest_port;
    let big: Vec<Vec<f32>> = (0..512).map(|_| instances[0].clone()).collect();
    let body = json!({"instances": big}).to_string();
    let threads: Vec<_> = (0..48)
        .map(|_| {
            let body = body.clone();
            std::thread::spawn(move || http("POST", port, "/v1/models/regression:predict", &body))
        })
        .collect();
    let results: Vec<(u16, String)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let refused: Vec<&(u16, String)> = results.iter().filter(|(s, _)| *s == 503).collect();
    assert!(
        !refused.is_empty(),
        "a burst of 48 into a queue of one batch should be refused in part: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    assert!(
        refused[0].1.contains("queue") && refused[0].1.contains("\"error\""),
        "{}",
        refused[0].1
    );
    assert!(results.iter().all(|(s, _)| *s == 200 || *s == 503));
    let (_, text) = http("GET", port, PAGE, "");
    assert_eq!(
        metric(
            &text,
            ":tensorflow:serving:request_count{model_name=\"regression\",status=\"UNAVAILABLE\"}"
        ),
        refused.len() as u64,
        "{text}"
    );
    // TF Serving times only the requests that succeeded.
    assert_eq!(
        metric_total(&text, ":tensorflow:serving:request_latency_count{"),
        (results.len() - refused.len()) as f64,
        "{text}"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    // A lone row waits out a 700 ms batch timeout: it is in flight when SIGTERM arrives.
    let params = write_file(
        &dir,
        "b.txt",
        "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 700000 }\n",
    );
    let mut server =
        ServeProcess::start_model(&["--enable_batching", "--batching_parameters_file", &params]);
    let port = server.rest_port;
    let row = expected().0[0].clone();
    let in_flight = std::thread::spawn(move || {
        http(
            "POST",
            port,
            "/v1/models/regression:predict",
            &json!({"instances": [row]}).to_string(),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(server.terminate(), Some(0));
    let (status, body) = in_flight.join().unwrap();
    assert_eq!(status, 200, "the in-flight request was cut off: {body}");
    // And it no longer accepts.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn models_config_serves_every_model_and_bad_files_name_line_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let base = serve_process::example_model();
    let config = write_file(
        &dir,
        "models.config",
        &format!(
            "model_config_list {{\n  config {{\n    name: 'a'\n    base_path: '{0}'\n    model_platform: \"tensorflow\"\n    version_labels {{ key: 'stable' value: 1 }}\n  }}\n  config {{\n    name: 'b'\n    base_path: '{0}'\n    model_platform: \"tensorflow\"\n  }}\n}}\n",
            base.display()
        ),
    );
    let server = ServeProcess::start(&["--model_config_file", &config]);
    let row = expected().0[0].clone();
    for path in [
        "/v1/models/a:predict",
        "/v1/models/b:predict",
        "/v1/models/a/labels/stable:predict",
    ] {
        let (status, body) = http(
            "POST",
            server.rest_port,
            path,
            &json!({"instances": [row]}).to_string(),
        );
        assert_eq!(status, 200, "{path}: {body}");
    }

    let bad = write_file(
        &dir,
        "bad.config",
        "model_config_list {\n  config {\n    name: 'a'\n    base_pth: '/x'\n  }\n}\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .args([
            "serve",
            "--port",
            "0",
            "--rest_api_port",
            "0",
            "--model_config_file",
            &bad,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{bad}:4:5")) && err.contains("base_pth"),
        "{err}"
    );

    let bad = write_file(
        &dir,
        "batching.txt",
        "max_batch_size { value: 8 }\nbatch_timeout_micros { value: -4 }\n",
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .args([
            "serve",
            "--port",
            "0",
            "--rest_api_port",
            "0",
            "--model_name",
            "r",
        ])
        .args([
            "--model_base_path",
            base.to_str().unwrap(),
            "--enable_batching",
            "--batching_parameters_file",
            &bad,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{bad}:2:")) && err.contains("negative"),
        "{err}"
    );
}

#[test]
fn a_version_without_onnx_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("m/3")).unwrap();
    std::fs::write(dir.path().join("m/3/saved_model.pb"), b"").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .args([
            "serve",
            "--port",
            "0",
            "--rest_api_port",
            "0",
            "--model_name",
            "m",
            "--model_base_path",
        ])
        .arg(dir.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("m/3/model.onnx") && err.contains("ONNX export"),
        "{err}"
    );
}

#[test]
fn large_batch_splitting_runs_a_big_request_in_several_batches() {
    let dir = tempfile::tempdir().unwrap();
    let params = write_file(
        &dir,
        "batching_parameters.txt",
        "max_batch_size { value: 4 }\nbatch_timeout_micros { value: 0 }\nmax_enqueued_batches { value: 10 }\nnum_batch_threads { value: 2 }\nenable_large_batch_splitting { value: true }\n",
    );
    let mon = monitoring(&dir, "/m");
    let server = ServeProcess::start_model(&[
        "--enable_batching",
        "--batching_parameters_file",
        &params,
        "--monitoring_config_file",
        &mon,
    ]);
    let (instances, want) = expected();
    let rows: Vec<Vec<f32>> = (0..10)
        .map(|i| instances[i % instances.len()].clone())
        .collect();
    let wanted: Vec<f32> = (0..10).map(|i| want[i % want.len()]).collect();
    let (status, body) = http(
        "POST",
        server.rest_port,
        "/v1/models/regression:predict",
        &json!({"instances": rows}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    assert_close(
        &predictions(&serde_json::from_str(&body).unwrap(), "predictions"),
        &wanted,
    );
    let (_, text) = http("GET", server.rest_port, "/m", "");
    assert_eq!(
        metric(&text, &format!("{BATCHING}:wrapped_run_count{{}}")),
        3,
        "10 rows split into 4 + 4 + 2\n{text}"
    );
    // One request of 10 rows, before the split.
    assert_eq!(
        metric(&text, &format!("{BATCHING}:input_batch_size_sum{{}}")),
        10,
        "{text}"
    );
    // The page is where the config says, and only there.
    let (status, _) = http("GET", server.rest_port, PAGE, "");
    assert_eq!(status, 404);

    // Without splitting, a task larger than max_batch_size is refused.
    let plain = write_file(&dir, "plain.txt", "max_batch_size { value: 4 }\n");
    let server =
        ServeProcess::start_model(&["--enable_batching", "--batching_parameters_file", &plain]);
    let (status, body) = http(
        "POST",
        server.rest_port,
        "/v1/models/regression:predict",
        &json!({"instances": rows}).to_string(),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("larger than maximum input batch size 4"),
        "{body}"
    );
}
