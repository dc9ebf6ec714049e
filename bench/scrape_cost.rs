//! What scraping the server's metrics costs a run: the same stage against `benchstack serve`
//! (batching on, the metrics page on), alternately without and with the scraper that `apply`
//! uses (one scrape of the page when the stage begins, one when it has drained), in the order
//! A B B A … so drift on a shared machine falls on both arms alike. Prints each run's achieved
//! rate and p99, the medians of each arm, their relative difference, and what one scrape
//! costs on its own (wall time and page size).
//!
//!     cargo bench --bench scrape_cost
//!     RATE=1000 SECS=5 ROUNDS=4 cargo bench --bench scrape_cost
//!
//! The stand-in is `target/…/benchstack` of the same build.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use benchstack::loadgen::server::{HttpReplica, Replica, Scraper, StageMarks, snapshot_all};
use benchstack::loadgen::{self, LoadSpec};
use benchstack::vocab::load::{Protocol, Rate, RequestSource, Stage};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() {
    let rate: f64 = env_or("RATE", 1000.0);
    let secs: u64 = env_or("SECS", 5);
    let rounds: usize = env_or("ROUNDS", 4);
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().expect("temp dir");
    let params = dir.path().join("batching_parameters.txt");
    std::fs::write(
        &params,
        "max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\nmax_enqueued_batches { value: 100 }\nnum_batch_threads { value: 1 }\n",
    )
    .expect("write batching parameters");
    let monitoring = dir.path().join("monitoring.config");
    std::fs::write(&monitoring, benchstack::manifest::monitoring_config()).expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_benchstack"))
        .arg("serve")
        .args([
            "--port",
            "0",
            "--rest_api_port",
            "0",
            "--model_name",
            "regression",
        ])
        .arg("--model_base_path")
        .arg(repo.join("examples/model/regression"))
        .arg("--enable_batching")
        .arg("--batching_parameters_file")
        .arg(&params)
        .arg("--monitoring_config_file")
        .arg(&monitoring)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start benchstack serve");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value = serde_json::from_str(line.trim()).expect("ready JSON");
    let port = ready["rest_port"].as_u64().expect("rest_port") as u16;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let replica = || -> Vec<Box<dyn Replica>> {
        vec![Box::new(HttpReplica {
            addr,
            path: benchstack::manifest::METRICS_PATH.to_string(),
            pid: Some(child.id()),
        })]
    };
    let body = std::fs::read_to_string(repo.join("examples/requests/regression.json"))
        .expect("request body");
    let mut spec = LoadSpec::new(
        vec![format!("http://127.0.0.1:{port}")],
        Protocol::Rest,
        "regression",
        RequestSource::Body(body),
        vec![Stage {
            name: "main".into(),
            rate: Rate::PerSecond(rate),
            duration: Duration::from_secs(secs),
        }],
    );
    spec.connections = 32;
    spec.warmup = Duration::from_secs(1);

    // One scrape on its own.
    let mut scrape_ms = Vec::new();
    let mut page_bytes = 0;
    let r = replica();
    for _ in 0..20 {
        let t = Instant::now();
        let s = snapshot_all(&r, "regression");
        scrape_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(s[0].reading.is_ok(), "{:?}", s[0].reading);
    }
    if let Ok(body) = r[0].fetch() {
        page_bytes = body.len();
    }

    let cancel = AtomicBool::new(false);
    let mut arms: [Vec<(f64, f64)>; 2] = [Vec::new(), Vec::new()];
    println!(
        "rate {rate} req/s, {secs} s per run, {rounds} runs per arm (A = without, B = with scraping)"
    );
    for i in 0..rounds * 2 {
        // A B B A A B B A …
        let with = matches!(i % 4, 1 | 2);
        let scraper = with.then(|| Scraper::start(replica(), "regression".into()));
        let marks = scraper.as_ref().map(|s| s as &dyn StageMarks);
        let report = loadgen::run_observed(&spec, None, &cancel, marks).expect("run");
        let st = &report.stages[0];
        if let Some(s) = scraper {
            let server = s.finish(1);
            assert!(server[0].is_ok(), "{:?}", server[0]);
        }
        println!(
            "{} achieved {:.1} req/s  p99 {:.3} ms",
            if with { "B" } else { "A" },
            st.achieved_rate,
            st.latency_ms.p99
        );
        arms[usize::from(with)].push((st.achieved_rate, st.latency_ms.p99));
    }
    let _ = child.kill();
    let _ = child.wait();
    let stat = |arm: &[(f64, f64)]| {
        let mut rates: Vec<f64> = arm.iter().map(|x| x.0).collect();
        let mut p99s: Vec<f64> = arm.iter().map(|x| x.1).collect();
        (median(&mut rates), median(&mut p99s))
    };
    let (ra, pa) = stat(&arms[0]);
    let (rb, pb) = stat(&arms[1]);
    println!("median without scraping: {ra:.1} req/s, p99 {pa:.3} ms");
    println!("median with scraping:    {rb:.1} req/s, p99 {pb:.3} ms");
    println!(
        "difference: achieved rate {:+.2}%, p99 {:+.2}%",
        (rb - ra) / ra * 100.0,
        (pb - pa) / pa * 100.0
    );
    println!(
        "one scrape: median {:.2} ms, max {:.2} ms, page {} bytes",
        median(&mut scrape_ms.clone()),
        scrape_ms.iter().copied().fold(0.0, f64::max),
        page_bytes
    );
}
