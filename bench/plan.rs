//! How long `plan` takes for a stack of 1,000 `for_each` serving instances, each with its
//! load test (2,002 resources): against an empty state (all create/run) and against the
//! state that plan leaves once applied (all no-op). Planning only: no refresh, no processes.
//!
//!     cargo bench --bench plan
//!
//! Prints the median of 5 runs of each.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use benchstack::plan::PlanOptions;
use benchstack::refresh;
use benchstack::state::{ResourceState, Snapshot};
use benchstack::vocab::load::{Arrival, Protocol, Rate, RequestSource, Stage};
use benchstack::vocab::resources::*;

fn addr(kind: Kind, name: &str, key: Option<String>) -> Address {
    Address {
        kind,
        name: name.into(),
        key,
    }
}

fn stack(n: usize) -> Stack {
    let c = addr(Kind::Cluster, "local", None);
    let m = addr(Kind::Model, "regression", None);
    let mut resources = vec![
        Resource {
            address: c.clone(),
            span: Span::default(),
            depends_on: vec![],
            config: ResourceConfig::Cluster(ClusterConfig {
                provider: ProviderKind::Local,
                project: None,
                location: None,
                machine_type: None,
                node_count: 1,
                disk_size_gb: None,
                spot: false,
                private_nodes: false,
                labels: BTreeMap::new(),
                service_account: None,
                network: None,
                subnetwork: None,
                enable_apis: false,
            }),
        },
        Resource {
            address: m.clone(),
            span: Span::default(),
            depends_on: vec![],
            config: ResourceConfig::Model(ModelConfig {
                name: "regression".into(),
                base_path: "/models/regression".into(),
                serving_path: None,
            }),
        },
    ];
    for i in 0..n {
        let key = Some(format!("b{i}"));
        let s = addr(Kind::Serving, "tf", key.clone());
        resources.push(Resource {
            address: s.clone(),
            span: Span::default(),
            depends_on: vec![c.clone(), m.clone()],
            config: ResourceConfig::Serving(ServingConfig {
                cluster: c.clone(),
                image: None,
                image_from: None,
                replicas: 1,
                models: vec![m.clone()],
                cpu: None,
                memory: None,
                flags: BTreeMap::new(),
                batching: Some(BatchingConfig {
                    max_batch_size: Some(i as u64 + 1),
                    num_batch_threads: Some(2),
                    ..Default::default()
                }),
            }),
        });
        resources.push(Resource {
            address: addr(Kind::Loadtest, "lt", key),
            span: Span::default(),
            depends_on: vec![c.clone(), s.clone()],
            config: ResourceConfig::Loadtest(LoadtestConfig {
                cluster: c.clone(),
                target: s,
                model: "regression".into(),
                signature: None,
                protocol: Protocol::Grpc,
                request: RequestSource::Body("{}".into()),
                workers: 1,
                start_tolerance_ms: 50,
                loadgen_image: None,
                loadgen_image_from: None,
                connections: 8,
                arrival: Arrival::Constant,
                seed: 1,
                warmup: Duration::ZERO,
                timeout: Duration::from_secs(1),
                stages: vec![Stage {
                    name: "s".into(),
                    rate: Rate::PerSecond(300.0),
                    duration: Duration::from_secs(60),
                }],
                slos: vec![],
            }),
        });
    }
    Stack {
        files: vec![],
        resources,
        outputs: vec![],
        backend: None,
    }
}

fn median(mut f: impl FnMut()) -> Duration {
    let mut times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[2]
}

fn main() {
    let stack = stack(1000);
    let opts = PlanOptions::default();
    let empty = Snapshot::default();
    let first = refresh::plan(Some(&stack), &empty, BTreeMap::new(), None, &opts).unwrap();
    let t_empty = median(|| {
        refresh::plan(Some(&stack), &empty, BTreeMap::new(), None, &opts).unwrap();
    });

    // The state as if `first` had been applied (load tests with their upstream fingerprints).
    let fps: BTreeMap<String, String> = first
        .changes
        .iter()
        .map(|c| (c.address.to_string(), c.fingerprint.clone()))
        .collect();
    let mut applied = Snapshot::default();
    for c in &first.changes {
        let upstream = if c.address.kind == Kind::Loadtest {
            let s = c.depends_on[1].to_string();
            [
                ("cluster.local".to_string(), fps["cluster.local"].clone()),
                (
                    "model.regression".to_string(),
                    fps["model.regression"].clone(),
                ),
                (s.clone(), fps[&s].clone()),
            ]
            .into_iter()
            .collect()
        } else {
            BTreeMap::new()
        };
        applied.resources.insert(
            c.address.clone(),
            ResourceState {
                address: c.address.clone(),
                provider: c.provider.clone(),
                config: c.after.clone().unwrap(),
                depends_on: c.depends_on.clone(),
                observed: serde_json::json!({}),
                rendered: c.rendered.clone(),
                upstream,
                fingerprint: c.fingerprint.clone(),
                applied_at: 0,
                last_run: None,
            },
        );
    }
    let noop = refresh::plan(Some(&stack), &applied, BTreeMap::new(), None, &opts).unwrap();
    assert!(
        !noop.has_changes(),
        "the applied state should plan no changes"
    );
    let t_noop = median(|| {
        refresh::plan(Some(&stack), &applied, BTreeMap::new(), None, &opts).unwrap();
    });
    println!(
        "plan, {} resources (1,000 for_each serving instances + their load tests):",
        stack.resources.len()
    );
    println!(
        "  empty state (all create/run): {:>8.1} ms",
        t_empty.as_secs_f64() * 1e3
    );
    println!(
        "  applied state (all no-op):    {:>8.1} ms",
        t_noop.as_secs_f64() * 1e3
    );
}
