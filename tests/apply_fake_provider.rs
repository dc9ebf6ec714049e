//! apply and destroy driven through the provider registry with a recording fake provider:
//! the order of provider calls, and that an intent is in the state while each call runs
//! (so a kill at that moment leaves a record the next plan settles).

#[path = "support/local_stack.rs"]
mod local_stack;

use std::sync::{Arc, Mutex};

use benchstack::plan::{Action, PlanOptions};
use benchstack::provider::{
    Applied, Context, Inputs, Observation, Provider, ProviderError, ProviderName, Providers,
    RunOutcome,
};
use benchstack::state::gcs::Endpoint;
use benchstack::state::{Intent, ResourceState, Store, View};
use benchstack::vocab::resources::{Address, Kind, ResourceConfig};
use local_stack::{apply, plan, serving_stack};

/// One call the fake saw: the operation, the address, and whether the published state held
/// an intent for that address while the call ran.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    operation: &'static str,
    address: String,
    intent_recorded: bool,
    rendered_files: Vec<String>,
}

#[derive(Clone, Default)]
struct Recorder {
    calls: Arc<Mutex<Vec<Call>>>,
    fail_on: Option<String>,
    /// Load tests return a run: (SLOs met, why it is invalid).
    run: Option<(bool, Option<String>)>,
}

impl Recorder {
    fn record(
        &self,
        ctx: &Context,
        operation: &'static str,
        address: &Address,
        inputs: Option<&Inputs>,
    ) -> Result<(), ProviderError> {
        let intent_recorded = View::open(ctx.state_dir, &Endpoint::Google)
            .ok()
            .flatten()
            .and_then(|v| v.intents().ok())
            .is_some_and(|intents| intents.iter().any(|i| &i.address == address));
        self.calls.lock().unwrap().push(Call {
            operation,
            address: address.to_string(),
            intent_recorded,
            rendered_files: inputs
                .map(|i| i.rendered.keys().cloned().collect())
                .unwrap_or_default(),
        });
        if self.fail_on.as_deref() == Some(&address.to_string()) {
            return Err(ProviderError::other(format!(
                "{address}: refused by the fake"
            )));
        }
        Ok(())
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl Provider for Recorder {
    fn name(&self) -> &'static str {
        "local"
    }
    fn read(&self, _ctx: &Context, prior: &ResourceState) -> Result<Observation, ProviderError> {
        Ok(Observation::Present(prior.observed.clone()))
    }
    fn create(
        &self,
        ctx: &Context,
        address: &Address,
        _config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        self.record(ctx, "create", address, Some(inputs))?;
        let run = match (address.kind, &self.run) {
            (Kind::Loadtest, Some((slos_met, invalid))) => Some(RunOutcome {
                report: serde_json::json!({"invalid": invalid}),
                slos_met: *slos_met,
                invalid: invalid.clone(),
                environment: benchstack::environment::Environment::detect(),
                images: Default::default(),
                started: 1,
                finished: 2,
            }),
            _ => None,
        };
        Ok(Applied {
            observed: observed_of(address),
            run,
        })
    }
    fn update(
        &self,
        ctx: &Context,
        prior: &ResourceState,
        _config: &ResourceConfig,
        inputs: &Inputs,
    ) -> Result<Applied, ProviderError> {
        self.record(ctx, "update", &prior.address, Some(inputs))?;
        Ok(Applied {
            observed: prior.observed.clone(),
            run: None,
        })
    }
    fn delete(&self, ctx: &Context, prior: &ResourceState) -> Result<(), ProviderError> {
        self.record(ctx, "delete", &prior.address, None)
    }
    fn recover(
        &self,
        _ctx: &Context,
        _intent: &Intent,
        _prior: Option<&ResourceState>,
        _clean_up: bool,
    ) -> Result<Option<serde_json::Value>, ProviderError> {
        Ok(None)
    }
}

/// What the local provider would record for the kind (the state checks the shape).
fn observed_of(address: &Address) -> serde_json::Value {
    match address.kind {
        Kind::Cluster => serde_json::json!({
            "host": "fake", "cpus": 2, "cpu_model": "fake", "memory_bytes": 1, "version": "0"
        }),
        Kind::Model => serde_json::json!({ "versions": [1] }),
        Kind::Serving => serde_json::json!({
            "binary": "fake", "directory": "/nonexistent", "models": ["regression"],
            "replicas": [], "rest_endpoint": "http://127.0.0.1:9", "grpc_endpoint": "127.0.0.1:9",
            "rest_endpoints": ["http://127.0.0.1:9"], "grpc_endpoints": ["127.0.0.1:9"],
            "started_at": 0
        }),
        Kind::Loadtest => serde_json::json!({
            "targets": ["http://127.0.0.1:9"], "protocol": "rest", "workers": 1
        }),
        Kind::Image => serde_json::json!({
            "project": "p", "location": "l", "build_id": "b", "source": "gs://b/o",
            "digest": "sha256:0", "reference": "r@sha256:0", "content_hash": "h"
        }),
    }
}

fn fake_providers(recorder: &Recorder) -> Providers {
    Providers::empty().register(ProviderName::Local, Box::new(recorder.clone()))
}

fn order(calls: &[Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .map(|c| (c.operation.to_string(), c.address.clone()))
        .collect()
}

fn pair(op: &str, address: &str) -> (String, String) {
    (op.to_string(), address.to_string())
}

#[test]
fn apply_creates_in_dependency_order_with_an_intent_recorded_before_each_call() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "apply", &Endpoint::Google).unwrap();
    let recorder = Recorder::default();
    let providers = fake_providers(&recorder);
    let stack = serving_stack(2, 32);

    let p = plan(&store, &providers, Some(&stack), &PlanOptions::default());
    let outcome = apply(&store, &providers, &p);
    assert!(outcome.failed.is_empty(), "{outcome:?}");

    let calls = recorder.calls();
    let seen = order(&calls);
    let at = |a: &(String, String)| seen.iter().position(|s| s == a).unwrap();
    for expected in [
        pair("create", "cluster.local"),
        pair("create", "model.regression"),
        pair("create", "serving.tf"),
    ] {
        assert!(seen.contains(&expected), "{seen:?}");
    }
    // serving.tf references both: it is created after them.
    assert!(at(&pair("create", "cluster.local")) < at(&pair("create", "serving.tf")));
    assert!(at(&pair("create", "model.regression")) < at(&pair("create", "serving.tf")));
    for c in &calls {
        assert!(
            c.intent_recorded,
            "no intent while {} ran: {c:?}",
            c.address
        );
    }
    // Render once: the serving resource gets the files the plan showed.
    let serving = calls.iter().find(|c| c.address == "serving.tf").unwrap();
    assert!(
        serving
            .rendered_files
            .contains(&"batching_parameters.txt".to_string()),
        "{serving:?}"
    );
    // Settled: every resource recorded, no intent left.
    assert_eq!(store.resources().unwrap().len(), 3);
    assert!(store.intents().unwrap().is_empty());
}

#[test]
fn destroy_deletes_dependents_first_and_keeps_what_failed_to_delete() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "apply", &Endpoint::Google).unwrap();
    let recorder = Recorder::default();
    let providers = fake_providers(&recorder);
    let stack = serving_stack(1, 16);
    let p = plan(&store, &providers, Some(&stack), &PlanOptions::default());
    apply(&store, &providers, &p);
    recorder.calls.lock().unwrap().clear();

    // The model's delete fails: it stays in the state, and so does nothing it depends on
    // being skipped; serving.tf (which depends on it) goes first.
    let failing = Recorder {
        calls: recorder.calls.clone(),
        fail_on: Some("model.regression".into()),
        run: None,
    };
    let providers = fake_providers(&failing);
    let destroy = PlanOptions {
        destroy: true,
        ..PlanOptions::default()
    };
    let p = plan(&store, &providers, Some(&stack), &destroy);
    assert!(p.changes.iter().all(|c| c.action == Action::Delete));
    let outcome = apply(&store, &providers, &p);

    let seen = order(&recorder.calls());
    let at = |a: &(String, String)| seen.iter().position(|s| s == a);
    assert!(
        at(&pair("delete", "serving.tf")).unwrap()
            < at(&pair("delete", "model.regression")).unwrap(),
        "{seen:?}"
    );
    assert_eq!(outcome.failed.len(), 1, "{outcome:?}");
    assert_eq!(outcome.failed[0].0.to_string(), "model.regression");
    let left: Vec<String> = store
        .resources()
        .unwrap()
        .iter()
        .map(|r| r.address.to_string())
        .collect();
    assert!(left.contains(&"model.regression".to_string()), "{left:?}");
    assert!(!left.contains(&"serving.tf".to_string()), "{left:?}");
    for c in recorder.calls() {
        assert!(
            c.intent_recorded,
            "no intent while {} ran: {c:?}",
            c.address
        );
    }
}

/// serving_stack plus loadtest.baseline against serving.tf.
fn stack_with_loadtest() -> benchstack::vocab::resources::Stack {
    use benchstack::vocab::load::{Arrival, Protocol, Rate, RequestSource, Stage};
    use benchstack::vocab::resources::{LoadtestConfig, Resource, Span};
    use std::time::Duration;
    let mut stack = serving_stack(1, 8);
    let a = |kind, name: &str| Address {
        kind,
        name: name.into(),
        key: None,
    };
    stack.resources.push(Resource {
        address: a(Kind::Loadtest, "baseline"),
        depends_on: vec![a(Kind::Cluster, "local"), a(Kind::Serving, "tf")],
        config: ResourceConfig::Loadtest(LoadtestConfig {
            cluster: a(Kind::Cluster, "local"),
            target: a(Kind::Serving, "tf"),
            model: "regression".into(),
            signature: None,
            protocol: Protocol::Rest,
            request: RequestSource::Body("{}".into()),
            workers: 1,
            start_tolerance_ms: 50,
            loadgen_image: None,
            loadgen_image_from: None,
            connections: 1,
            arrival: Arrival::Constant,
            seed: 1,
            warmup: Duration::ZERO,
            timeout: Duration::from_secs(1),
            stages: vec![Stage {
                name: "s".into(),
                rate: Rate::PerSecond(10.0),
                duration: Duration::from_secs(1),
            }],
            slos: vec![],
        }),
        span: Span::default(),
    });
    stack
}

#[test]
fn an_invalid_run_is_stored_but_counts_neither_as_an_slo_pass_nor_a_miss() {
    for (slos_met, invalid) in [(true, Some("worker 1 started 80 ms late")), (false, None)] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "apply", &Endpoint::Google).unwrap();
        let recorder = Recorder {
            run: Some((slos_met, invalid.map(String::from))),
            ..Default::default()
        };
        let providers = fake_providers(&recorder);
        let p = plan(
            &store,
            &providers,
            Some(&stack_with_loadtest()),
            &PlanOptions::default(),
        );
        let outcome = apply(&store, &providers, &p);
        assert!(outcome.failed.is_empty(), "{outcome:?}");
        assert_eq!(outcome.runs.len(), 1, "the run is stored: {outcome:?}");
        assert_eq!(store.runs().unwrap().len(), 1);
        match invalid {
            Some(why) => {
                // A run that claims its SLOs held, but is invalid: no verdict either way.
                assert!(outcome.slo_failures.is_empty(), "{outcome:?}");
                assert_eq!(outcome.invalid_runs.len(), 1);
                assert_eq!(outcome.invalid_runs[0].2, why);
                assert!(!outcome.ok(), "an invalid run does not pass");
            }
            None => {
                assert_eq!(outcome.slo_failures.len(), 1, "{outcome:?}");
                assert!(outcome.invalid_runs.is_empty());
            }
        }
    }
}
