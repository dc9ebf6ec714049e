//! `benchstack worker` (one pod of a distributed load test, run here as a plain process) and
//! `benchstack render` (the files apply would send), driven through the binary.

#[path = "support/serve_process.rs"]
mod serve_process;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use benchstack::loadgen::worker::{WorkerRequest, WorkerSpec};
use benchstack::loadgen::{RunReport, merge};
use benchstack::vocab::load::{Arrival, Protocol, Rate, Stage};
use serve_process::{ServeProcess, repo};

fn worker_spec(target: String, workers: u32) -> WorkerSpec {
    WorkerSpec {
        targets: vec![target],
        protocol: Protocol::Rest,
        model: "regression".into(),
        signature: None,
        request: WorkerRequest::Csv {
            csv: std::fs::read_to_string(repo().join("examples/model/test.csv")).unwrap(),
            batch_size: 1,
        },
        stages: vec![Stage {
            name: "steady".into(),
            rate: Rate::PerSecond(200.0),
            duration: Duration::from_secs(1),
        }],
        warmup: Duration::ZERO,
        arrival: Arrival::Constant,
        seed: 3,
        connections: 4,
        timeout: Duration::from_secs(5),
        slos: vec![],
        workers,
        start_at_unix_ms: None,
        control_port: None,
    }
}

fn last_line(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn workers_split_the_rate_and_their_reports_merge_into_the_union() {
    let serve = ServeProcess::start_model(&[]);
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    let spec = worker_spec(serve.rest_url(), 2);
    std::fs::write(&spec_path, serde_json::to_string(&spec).unwrap()).unwrap();

    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_benchstack"))
                .args(["worker", "--spec", spec_path.to_str().unwrap()])
                .env("JOB_COMPLETION_INDEX", i.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let reports: Vec<RunReport> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_str(&last_line(&out.stdout)).expect("the last line is the report")
        })
        .collect();
    for r in &reports {
        // Each worker offered half of 200 req/s for 1 s.
        assert_eq!(r.stages[0].target_rate, Some(100.0));
        assert_eq!(r.stages[0].requests, 100);
    }
    let merged = merge(&reports).unwrap();
    assert_eq!(merged.workers, 2);
    assert_eq!(merged.stages[0].requests, 200);
    let union = merged.stages[0].latency_histogram().unwrap();
    let parts: Vec<_> = reports
        .iter()
        .map(|r| r.stages[0].latency_histogram().unwrap())
        .collect();
    assert_eq!(union.len(), parts.iter().map(|h| h.len()).sum::<u64>());
    assert_eq!(union.max(), parts.iter().map(|h| h.max()).max().unwrap());
}

#[test]
fn a_worker_without_its_index_or_spec_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("spec.json");
    std::fs::write(
        &spec_path,
        serde_json::to_string(&worker_spec("http://127.0.0.1:9".into(), 2)).unwrap(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .args(["worker", "--spec", spec_path.to_str().unwrap()])
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("JOB_COMPLETION_INDEX is not set"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .arg("worker")
        .env_remove("BENCHSTACK_WORKER_SPEC")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BENCHSTACK_WORKER_SPEC is not set"));
}

/// A worker process killed when the test ends, however it ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One HTTP/1.1 exchange with the worker's control port: (status, whole reply).
fn control(port: u16, head: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.write_all(head.as_bytes()).ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

#[test]
fn a_worker_takes_the_common_start_only_with_the_runs_token() {
    let serve = ServeProcess::start_model(&[]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut spec = worker_spec(serve.rest_url(), 1);
    spec.control_port = Some(port);
    let json = serde_json::to_string(&spec).unwrap();
    let worker = |token: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_benchstack"));
        c.args(["worker", "--index", "0"])
            .env("BENCHSTACK_WORKER_SPEC", &json)
            .env("POD_IP", "127.0.0.1")
            .env_remove("BENCHSTACK_WORKER_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            c.env("BENCHSTACK_WORKER_TOKEN", t);
        }
        c
    };

    // Without a token in its environment a worker with a control port does not serve.
    let out = worker(None).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BENCHSTACK_WORKER_TOKEN is not set"), "{err}");

    let mut child = Reaped(worker(Some("s3cret-of-this-run")).spawn().unwrap());
    let clock = "GET /clock HTTP/1.1\r\nHost: w\r\n\r\n";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while control(port, clock).is_none_or(|(code, _)| code != 200) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never served its clock"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let start = format!("POST /start?at_unix_ns={now_ns} HTTP/1.1\r\nHost: w\r\n");
    // Any pod of the cluster can reach the port: without the run's token it cannot start.
    for extra in [
        "",
        "X-Benchstack-Token: s3cret-of-this-ruN\r\n",
        "X-Benchstack-Token: s3cret\r\n",
        "Authorization: Bearer s3cret-of-this-run\r\n",
    ] {
        let (code, reply) = control(port, &format!("{start}{extra}\r\n")).unwrap();
        assert_eq!(code, 401, "{extra}: {reply}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "the worker must still be waiting"
    );
    let (_, held) = control(port, clock).unwrap();
    assert!(held.contains(r#""start_at_unix_ns":null"#), "{held}");

    // The coordinator's start, with the token: it runs its share and reports.
    let (code, reply) = control(
        port,
        &format!("{start}X-Benchstack-Token: s3cret-of-this-run\r\n\r\n"),
    )
    .unwrap();
    assert_eq!(code, 200, "{reply}");
    let mut out = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(child.0.wait().unwrap().success());
    let report: RunReport =
        serde_json::from_str(&last_line(out.as_bytes())).expect("the last line is the report");
    assert_eq!(report.stages[0].requests, 200);
}

fn render(stack: &Path, out: &Path, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .arg("render")
        .arg(stack)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn render_writes_the_original_experiments_deployment_and_the_worker_job() {
    let out = tempfile::tempdir().unwrap();
    render(
        &repo().join("stacks/gke.hcl"),
        out.path(),
        &["--var", "project=my-project"],
    );
    let yaml = std::fs::read_to_string(out.path().join("tf/kubernetes.yaml")).unwrap();
    for arg in [
        "- --port=8500",
        "- --rest_api_port=8501",
        "- --model_config_file=/config/models.config",
        "- --monitoring_config_file=/config/monitoring.config",
        "- --enable_batching=true",
        "- --batching_parameters_file=/config/batching_parameters.txt",
        "- --tensorflow_inter_op_parallelism=4",
        "- --tensorflow_intra_op_parallelism=4",
        "replicas: 3",
        "type: LoadBalancer",
    ] {
        assert!(yaml.contains(arg), "{arg} missing from\n{yaml}");
    }
    assert_eq!(
        std::fs::read_to_string(out.path().join("tf/batching_parameters.txt")).unwrap(),
        "max_batch_size { value: 8000 }\nbatch_timeout_micros { value: 4 }\nmax_enqueued_batches { value: 100 }\nnum_batch_threads { value: 4 }\n"
    );
    // TF Serving's Prometheus page, which apply scrapes at every stage's start and end.
    assert_eq!(
        std::fs::read_to_string(out.path().join("tf/monitoring.config")).unwrap(),
        "prometheus_config {\n  enable: true\n  path: \"/monitoring/prometheus/metrics\"\n}\n"
    );
    let job = std::fs::read_to_string(out.path().join("loadtest-baseline/job.yaml")).unwrap();
    for field in [
        "kind: Job",
        "completionMode: Indexed",
        "completions: 4",
        "parallelism: 4",
        "restartPolicy: Never",
        "- worker",
        "BENCHSTACK_WORKER_SPEC",
        // The control token is made by apply for each run, never written into a file.
        "BENCHSTACK_WORKER_TOKEN",
        "(made by apply for each run)",
    ] {
        assert!(job.contains(field), "{field} missing from\n{job}");
    }
    // No peak load test unless the n2 variables ask for one.
    assert!(!out.path().join("loadtest-peak-15k").exists());
    let n2 = tempfile::tempdir().unwrap();
    render(
        &repo().join("stacks/gke.hcl"),
        n2.path(),
        &[
            "--var",
            "project=my-project",
            "--var-file",
            repo()
                .join("stacks/gke-n2-highcpu-8.vars.hcl")
                .to_str()
                .unwrap(),
        ],
    );
    assert!(n2.path().join("loadtest-peak-15k/job.yaml").exists());
}

#[test]
fn render_of_a_local_stack_writes_the_tf_serving_files_only() {
    let out = tempfile::tempdir().unwrap();
    render(&repo().join("stacks/local.hcl"), out.path(), &[]);
    let serving = std::fs::read_dir(out.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(serving.join("models.config").exists());
    assert!(serving.join("batching_parameters.txt").exists());
    assert!(!serving.join("kubernetes.yaml").exists());
}
