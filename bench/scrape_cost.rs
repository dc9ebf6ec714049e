//! What scraping the server's metrics costs a run, against `benchstack serve` (batching on,
//! the metrics page on): one run of PAIRS pairs of stages at one rate, the first of each pair
//! scraped as `apply` scrapes a stage (the page and the process's CPU when it begins and as it
//! ends, through the same `snapshot_all`), the second not. Prints each pair's achieved rate
//! and p99, the median paired difference, and what one scrape costs on its own (wall time and
//! page size).
//!
//!     cargo bench --bench scrape_cost
//!     RATE=1000 SECS=3 PAIRS=20 cargo bench --bench scrape_cost
//!
//! The stand-in is `target/…/benchstack` of the same build.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use benchstack::loadgen::server::{HttpReplica, Replica, StageMarks, snapshot_all};
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
    let secs: u64 = env_or("SECS", 3);
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
    let pid = child.id();
    let replica = move || -> Vec<Box<dyn Replica>> {
        vec![Box::new(HttpReplica {
            addr,
            path: benchstack::manifest::METRICS_PATH.to_string(),
            pid: Some(pid),
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

    // Paired stages in one run: 2 × PAIRS stages at one rate, back to back on the same
    // connections; the first of each pair is scraped as `apply` scrapes a stage (when it
    // begins and as it ends), the second is not. Adjacent stages share the machine's state, so
    // the pair's difference is far less noisy than separate runs (tried first: their p99s
    // spread ±12% on this shared machine, hiding any effect).
    let pairs: usize = env_or("PAIRS", 20);
    spec.stages = (0..pairs * 2)
        .map(|i| Stage {
            name: format!(
                "{}{}",
                if i % 2 == 0 { "scraped-" } else { "plain-" },
                i / 2
            ),
            rate: Rate::PerSecond(rate),
            duration: Duration::from_secs(secs),
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<usize>();
    let stage_len = Duration::from_secs(secs);
    let scrapes = std::thread::spawn(move || {
        let r = replica();
        let mut n = 0;
        while let Ok(i) = rx.recv() {
            if i % 2 == 0 {
                let begun = Instant::now();
                let _ = snapshot_all(&r, "regression");
                // The stage's closing scrape, just before it ends.
                std::thread::sleep(
                    stage_len.saturating_sub(Duration::from_millis(30) + begun.elapsed()),
                );
                let _ = snapshot_all(&r, "regression");
                n += 2;
            }
        }
        n
    });
    struct Marks(std::sync::mpsc::Sender<usize>);
    impl StageMarks for Marks {
        fn stage_begins(&self, index: usize) {
            let _ = self.0.send(index);
        }
        fn run_drained(&self) {}
    }
    let marks = Marks(tx);
    let cancel = AtomicBool::new(false);
    println!("rate {rate} req/s, {pairs} pairs of {secs} s stages in one run (scraped, then not)");
    let report = loadgen::run_observed(&spec, None, &cancel, Some(&marks)).expect("run");
    drop(marks);
    let n_scrapes = scrapes.join().unwrap_or(0);
    let mut d_rate = Vec::new();
    let mut d_p99 = Vec::new();
    let (mut p99_s, mut p99_p) = (Vec::new(), Vec::new());
    for pair in report.stages.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        println!(
            "{:<12} {:.1} req/s p99 {:.3} ms | {:<10} {:.1} req/s p99 {:.3} ms",
            a.name, a.achieved_rate, a.latency_ms.p99, b.name, b.achieved_rate, b.latency_ms.p99
        );
        d_rate.push((a.achieved_rate - b.achieved_rate) / b.achieved_rate * 100.0);
        d_p99.push((a.latency_ms.p99 - b.latency_ms.p99) / b.latency_ms.p99 * 100.0);
        p99_s.push(a.latency_ms.p99);
        p99_p.push(b.latency_ms.p99);
    }
    let _ = child.kill();
    let _ = child.wait();
    println!("{n_scrapes} scrapes during the run");
    println!(
        "median p99: scraped stages {:.3} ms, plain stages {:.3} ms",
        median(&mut p99_s),
        median(&mut p99_p)
    );
    println!(
        "median paired difference (scraped − plain): achieved rate {:+.2}%, p99 {:+.2}%",
        median(&mut d_rate),
        median(&mut d_p99)
    );
    println!(
        "one scrape: median {:.2} ms, max {:.2} ms, page {} bytes",
        median(&mut scrape_ms.clone()),
        scrape_ms.iter().copied().fold(0.0, f64::max),
        page_bytes
    );
}
