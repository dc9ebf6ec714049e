//! Builds `Stack` values for the local provider directly (no HCL), and drives plan + apply
//! through the library. Include with `#[path = "support/local_stack.rs"] mod local_stack;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use benchstack::apply::{self, ApplyOptions, Outcome};
use benchstack::plan::{Plan, PlanOptions};
use benchstack::provider::local::LocalProvider;
use benchstack::provider::{ProviderName, ProviderReader, Providers};
use benchstack::state::Store;
use benchstack::vocab::resources::*;

pub fn addr(kind: Kind, name: &str) -> Address {
    Address {
        kind,
        name: name.into(),
        key: None,
    }
}

fn res(address: Address, depends_on: Vec<Address>, config: ResourceConfig) -> Resource {
    Resource {
        address,
        span: Span::default(),
        depends_on,
        config,
    }
}

/// cluster.local, model.regression (the example model), serving.tf with `replicas` and
/// batching max_batch_size = `max_batch`.
pub fn serving_stack(replicas: u32, max_batch: u64) -> Stack {
    let c = addr(Kind::Cluster, "local");
    let m = addr(Kind::Model, "regression");
    let s = addr(Kind::Serving, "tf");
    Stack {
        files: vec![],
        resources: vec![
            res(
                c.clone(),
                vec![],
                ResourceConfig::Cluster(ClusterConfig {
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
            ),
            res(
                m.clone(),
                vec![],
                ResourceConfig::Model(ModelConfig {
                    name: "regression".into(),
                    base_path: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("examples/model/regression"),
                    serving_path: None,
                }),
            ),
            res(
                s.clone(),
                vec![c.clone(), m.clone()],
                ResourceConfig::Serving(ServingConfig {
                    cluster: c,
                    image: None,
                    image_from: None,
                    replicas,
                    models: vec![m],
                    cpu: None,
                    memory: None,
                    flags: BTreeMap::new(),
                    batching: Some(BatchingConfig {
                        max_batch_size: Some(max_batch),
                        batch_timeout_micros: Some(1000),
                        max_enqueued_batches: Some(100),
                        num_batch_threads: Some(1),
                        ..Default::default()
                    }),
                }),
            ),
        ],
        outputs: vec![Output {
            name: "rest_endpoint".into(),
            span: Span::default(),
            value: OutputValue::Attribute {
                address: s,
                attribute: "rest_endpoint".into(),
            },
        }],
        backend: None,
    }
}

/// Providers whose local serving runs the built `benchstack serve`.
pub fn providers(state: &Path) -> Providers {
    Providers::new(state, &benchstack::provider::gcp::Apis::emulated()).register(
        ProviderName::Local,
        Box::new(LocalProvider::new(state).with_server(
            PathBuf::from(env!("CARGO_BIN_EXE_benchstack")),
            vec!["serve".into()],
        )),
    )
}

pub fn plan(
    store: &Store,
    providers: &Providers,
    stack: Option<&Stack>,
    opts: &PlanOptions,
) -> Plan {
    let snap = store.snapshot().unwrap();
    let observer = ProviderReader {
        providers,
        state_dir: store.dir(),
    };
    let outputs = store.outputs().unwrap();
    benchstack::refresh::plan(stack, &snap, outputs, Some(&observer), opts).unwrap()
}

pub fn apply(store: &Store, providers: &Providers, plan: &Plan) -> Outcome {
    let cancel = AtomicBool::new(false);
    apply::execute(
        plan,
        store,
        providers,
        &ApplyOptions {
            parallelism: 4,
            operation: "apply".into(),
        },
        &cancel,
        &|_e| {},
    )
    .unwrap()
}

/// The serving pids recorded for an address.
pub fn pids(store: &Store, a: &Address) -> Vec<u32> {
    store
        .resource(a)
        .unwrap()
        .map(|r| {
            r.observed["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x["pid"].as_u64().unwrap() as u32)
                .collect()
        })
        .unwrap_or_default()
}

pub fn alive(pid: u32) -> bool {
    benchstack::state::procinfo::start_time(pid).is_some()
}

/// Kills leftover processes on drop, so a failing test does not leak servers.
pub struct Reaper(pub Vec<u32>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in &self.0 {
            unsafe {
                libc::kill(*pid as i32, libc::SIGKILL);
            }
        }
    }
}
