//! The server's side of a run, end to end through the binary: `apply` renders
//! --monitoring_config_file, scrapes every replica's TF Serving metrics at the start and end of
//! each stage, and stores the difference per stage; `results --json` and the tables show it.
//! Against the stand-in (`benchstack serve`), against a server with known metrics (the fake
//! `tensorflow_model_server`: batches of exactly 4 rows, 5% UNAVAILABLE), and against one
//! without the endpoint. Load tests are short (a few hundred requests per stage).

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn benchstack(
    path_prefix: Option<&Path>,
    envs: &[(&str, &str)],
    state: &Path,
    args: &[&str],
) -> (i32, String, String) {
    let mut c = Command::cargo_bin("benchstack").unwrap();
    if let Some(p) = path_prefix {
        c.env(
            "PATH",
            format!(
                "{}:{}",
                p.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    }
    for (k, v) in envs {
        c.env(k, v);
    }
    let out = c
        .timeout(Duration::from_secs(180))
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

/// Destroys the stack when dropped, so no server outlives a failed assertion.
struct Destroy<'a> {
    path: Option<&'a Path>,
    envs: &'a [(&'a str, &'a str)],
    state: PathBuf,
}

impl Drop for Destroy<'_> {
    fn drop(&mut self) {
        let _ = benchstack(
            self.path,
            self.envs,
            &self.state,
            &["destroy", "--auto-approve"],
        );
    }
}

fn runs(path: Option<&Path>, envs: &[(&str, &str)], state: &Path) -> Vec<Value> {
    let (code, json, err) = benchstack(path, envs, state, &["results", "--json"]);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str::<Value>(&json)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn close(got: f64, want: f64, tolerance: f64, what: &str) {
    assert!(
        (got - want).abs() <= tolerance * want.abs(),
        "{what}: {got} is not within {:.0}% of {want}",
        tolerance * 100.0
    );
}

/// stacks/local.hcl as shipped, with its paths made absolute, its stages shortened (200 and
/// 400 req/s for 2 s each) and no warmup, so the stand-in's counters hold only the stages.
fn local_stack(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo().join("stacks/local.hcl")).unwrap();
    let examples = repo().join("examples");
    let text = text
        .replace("\"../examples", &format!("\"{}", examples.display()))
        .replace("rate     = 300", "rate     = 200")
        .replace("rate     = 3900", "rate     = 400")
        .replace("duration = \"5s\"", "duration = \"2s\"")
        .replace("warmup     = \"1s\"", "warmup     = \"0s\"");
    assert!(
        text.contains("rate     = 400") && text.contains("warmup     = \"0s\""),
        "{text}"
    );
    let path = dir.join("local.hcl");
    std::fs::write(&path, text).unwrap();
    path
}

fn page_value(page: &str, line_prefix: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(line_prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[test]
fn apply_of_the_local_stack_stores_the_stand_ins_batches_queue_wait_and_cpu_per_stage() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let stack = local_stack(work.path());
    let _destroy = Destroy {
        path: None,
        envs: &[],
        state: state.clone(),
    };
    let (code, out, err) = benchstack(
        None,
        &[],
        &state,
        &["apply", "--auto-approve", stack.to_str().unwrap()],
    );
    assert!(code == 0 || code == 2, "apply failed:\n{out}\n{err}");
    // The plan rendered the monitoring config the stand-in was started with.
    let (_, show, _) = benchstack(None, &[], &state, &["state", "show", "serving.tf"]);
    assert!(
        show.contains("monitoring.config") || show.contains("monitoring_config"),
        "{show}"
    );

    let runs = runs(None, &[], &state);
    let stages = runs[0]["report"]["stages"].as_array().unwrap().clone();
    assert_eq!(stages.len(), 2);
    let mut server_ok = 0.0;
    let mut server_batches = 0.0;
    let mut client_ok = 0.0;
    for st in &stages {
        let s = &st["server"];
        assert!(s.is_object(), "no server object: {st}");
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["per_replica_share"], serde_json::json!([1.0]));
        let ok = s["requests"]["OK"].as_f64().unwrap();
        let sent_ok = st["requests"].as_f64().unwrap() - st["errors_total"].as_f64().unwrap();
        // The scrape lands a few ms after the stage begins: a handful of requests may count in
        // the neighbouring stage.
        assert!(
            (ok - sent_ok).abs() <= 0.05 * sent_ok + 5.0,
            "server OK {ok} vs client OK {sent_ok}"
        );
        server_ok += ok;
        client_ok += sent_ok;
        let b = &s["batch_size"];
        let avg = b["avg"].as_f64().unwrap();
        assert!(
            (1.0..=32.0).contains(&avg),
            "avg batch {avg} outside 1..max_batch_size"
        );
        assert!(
            b["p50"].as_f64().unwrap() >= 1.0 && b["p99"].as_f64().unwrap() <= 32.0,
            "{b}"
        );
        let batches = s["batches"].as_f64().unwrap();
        assert!(batches > 0.0 && batches <= ok + 5.0, "{s}");
        server_batches += batches;
        // Requests arrive one row at a time: batches formed of them average rows/batch.
        close(avg, ok / batches, 0.05, "avg batch vs requests per batch");
        assert_eq!(
            s["padding_ratio"], 0.0,
            "no allowed_batch_sizes, no padding: {s}"
        );
        let q = &s["queue_wait_ms"];
        assert!(
            q["p50"].as_f64().unwrap() >= 0.0
                && q["p99"].as_f64().unwrap() >= q["p50"].as_f64().unwrap(),
            "{q}"
        );
        assert!(s["runtime_ms"]["p99"].as_f64().unwrap() > 0.0, "{s}");
        let cpu = s["cpu_cores"].as_f64().unwrap();
        assert!(cpu > 0.0 && cpu < 64.0, "cpu {cpu}");
        assert!(s["cpu_throttled_ratio"].is_null());
    }
    close(
        server_ok,
        client_ok,
        0.02,
        "server OK over both stages vs the client's",
    );

    // The answer check ran before the stages: its sample, sent alone and then together,
    // counts on the server's page but in no stage.
    let answers = &runs[0]["report"]["answers"];
    assert_eq!(answers["differing"], 0, "{answers}");
    let checked = 2.0 * answers["compared"].as_f64().unwrap();
    assert_eq!(checked, 32.0, "{answers}");
    // The stand-in's own counters (still running) agree with the stored stages: with no
    // warmup, the page's totals are the stages' sums and the check's requests, give or take
    // the few requests before the first scrape.
    let (code, endpoint, _) = benchstack(None, &[], &state, &["output", "rest_endpoint"]);
    assert_eq!(code, 0);
    let port: u16 = endpoint.trim().rsplit(':').next().unwrap().parse().unwrap();
    let (status, page) = benchstack::provider::local::http_get(
        port,
        "/monitoring/prometheus/metrics",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(status, 200);
    let page_ok = page_value(
        &page,
        ":tensorflow:serving:request_count{model_name=\"regression\",status=\"OK\"}",
    );
    assert!(
        page_ok >= server_ok + checked && page_ok <= server_ok + checked + 10.0,
        "page OK {page_ok} vs stages {server_ok} and {checked} checked"
    );
    let page_batches = page_value(
        &page,
        ":tensorflow:serving:batching_session:wrapped_run_count{}",
    );
    // The check's alone pass is 16 batches, its together pass 1 to 16.
    assert!(
        page_batches >= server_batches + 17.0 && page_batches <= server_batches + checked + 10.0,
        "page batches {page_batches} vs stages {server_batches} and {checked} checked"
    );

    // The terminal shows the second table.
    let (code, table, _) = benchstack(None, &[], &state, &["results", "loadtest.baseline"]);
    assert_eq!(code, 0);
    assert!(
        table.contains("server (TF Serving's own metrics):"),
        "{table}"
    );
    let html = work.path().join("r.html");
    let (code, _, err) = benchstack(
        None,
        &[],
        &state,
        &["results", "--html", html.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{err}");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<h2>Server</h2>"),
        "no server table in the HTML report"
    );
}

/// A directory holding `tensorflow_model_server`: the fake with known metrics.
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

fn fake_stack(dir: &Path) -> PathBuf {
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
    p90    = "10s" # 5% of requests fail: a p99 objective cannot hold
    errors = "10%"
  }}
}}
"#,
        model = repo().join("examples/model/regression").display(),
        request = repo().join("examples/requests/regression.json").display(),
    );
    let path = dir.join("stack.hcl");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_server_with_known_metrics_is_reported_within_ten_percent() {
    let fake = fake_server_dir();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let stack = fake_stack(work.path());
    let _destroy = Destroy {
        path: Some(fake.path()),
        envs: &[],
        state: state.clone(),
    };
    let (code, out, err) = benchstack(
        Some(fake.path()),
        &[],
        &state,
        &["apply", "--auto-approve", stack.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let runs = runs(Some(fake.path()), &[], &state);
    let st = &runs[0]["report"]["stages"][0];
    let s = &st["server"];
    assert!(s.is_object(), "{st}");
    let ok = s["requests"]["OK"].as_f64().unwrap();
    let unavailable = s["requests"]["UNAVAILABLE"].as_f64().unwrap();
    close(
        unavailable / (ok + unavailable),
        0.05,
        0.10,
        "UNAVAILABLE share",
    );
    // The generator saw the same sheds as 503s.
    close(
        unavailable,
        st["errors"]["http_503"].as_f64().unwrap(),
        0.10,
        "UNAVAILABLE vs http_503",
    );
    let b = &s["batch_size"];
    for k in ["avg", "p50", "p99"] {
        close(
            b[k].as_f64().unwrap(),
            4.0,
            0.10,
            &format!("batch_size.{k}"),
        );
    }
    close(s["batches"].as_f64().unwrap(), ok / 4.0, 0.10, "batches");
    assert_eq!(s["padding_ratio"], 0.0);
    for k in ["p50", "p99"] {
        close(
            s["queue_wait_ms"][k].as_f64().unwrap(),
            2.0,
            0.10,
            &format!("queue_wait_ms.{k}"),
        );
        close(
            s["runtime_ms"][k].as_f64().unwrap(),
            3.0,
            0.10,
            &format!("runtime_ms.{k}"),
        );
    }
    // The fake does not export request_latency: absent, not invented.
    assert!(s["request_ms"].is_null(), "{s}");
    assert!(s["cpu_cores"].as_f64().is_some(), "{s}");
    let (code, table, _) = benchstack(
        Some(fake.path()),
        &[],
        &state,
        &["results", "loadtest.shedding"],
    );
    assert_eq!(code, 0);
    assert!(table.contains("server status UNAVAILABLE="), "{table}");
}

#[test]
fn a_target_without_the_metrics_endpoint_gives_server_null_with_the_reason() {
    let fake = fake_server_dir();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let stack = fake_stack(work.path());
    let envs: &[(&str, &str)] = &[("NO_METRICS", "1")];
    let _destroy = Destroy {
        path: Some(fake.path()),
        envs,
        state: state.clone(),
    };
    let (code, out, err) = benchstack(
        Some(fake.path()),
        envs,
        &state,
        &["apply", "--auto-approve", stack.to_str().unwrap()],
    );
    assert_eq!(code, 0, "a missing endpoint is no error:\n{out}\n{err}");
    let runs = runs(Some(fake.path()), envs, &state);
    let st = &runs[0]["report"]["stages"][0];
    assert!(st["server"].is_null(), "{st}");
    let note = st["server_note"].as_str().unwrap();
    assert!(
        note.contains("/monitoring/prometheus/metrics answered HTTP 404"),
        "{note}"
    );
    let (_, table, _) = benchstack(
        Some(fake.path()),
        envs,
        &state,
        &["results", "loadtest.shedding"],
    );
    assert!(
        table.contains("main: no server metrics:") || table.contains(": no server metrics:"),
        "{table}"
    );
}
