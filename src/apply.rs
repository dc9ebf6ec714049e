//! Apply: execute a plan. Walks the changes in dependency order (deletes in reverse), up to
//! `parallelism` at a time; writes an intent before every provider call and the resource
//! after it, so the state is current after every resource; skips the dependents of a failed
//! resource; on cancel (Ctrl-C) starts nothing new and lets what runs settle. It reports
//! events; the CLI prints them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::graph::Graph;
use crate::plan::{Action, Change, Plan};
use crate::provider::{Context, Inputs, ProviderError, Providers};
use crate::state::{self, Intent, ResourceState, RunRecord, StateError, Store, procinfo};
use crate::vocab::resources::{Address, OutputValue};

#[derive(Debug, Clone)]
pub enum Event {
    /// An intent left by an interrupted apply was settled.
    Recovered {
        address: Address,
        adopted: bool,
    },
    /// What an interrupted apply left could not be checked: the intent is kept.
    RecoveryFailed {
        address: Address,
        message: String,
    },
    Started {
        address: Address,
        action: Action,
    },
    Progress {
        address: Address,
        message: String,
    },
    Finished {
        address: Address,
        action: Action,
        elapsed: Duration,
        result: StepResult,
    },
    Skipped {
        address: Address,
        because: Address,
    },
}

#[derive(Debug, Clone)]
pub enum StepResult {
    Done,
    /// A load test ran and its results were stored.
    Ran {
        run_id: u64,
        slos_met: bool,
        /// Why no verdict may use the run (`RunReport::invalid`): its SLO result counts
        /// neither as met nor as missed.
        invalid: Option<String>,
        report: serde_json::Value,
    },
    Failed(String),
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub done: Vec<Address>,
    pub failed: Vec<(Address, String)>,
    /// (skipped, the failed resource it depends on)
    pub skipped: Vec<(Address, Address)>,
    /// Not started because of a cancel.
    pub not_started: Vec<Address>,
    pub runs: Vec<(Address, u64)>,
    pub slo_failures: Vec<(Address, u64)>,
    /// Runs stored but invalid (address, run id, why): no SLO verdict.
    pub invalid_runs: Vec<(Address, u64, String)>,
    pub interrupted: bool,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
            && self.skipped.is_empty()
            && self.slo_failures.is_empty()
            && self.invalid_runs.is_empty()
            && !self.interrupted
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(
        "the plan is stale: it was made against state {plan_lineage} serial {plan_serial}, the state is now {lineage} serial {serial}; run `benchstack plan` again"
    )]
    StalePlan {
        plan_lineage: String,
        plan_serial: u64,
        lineage: String,
        serial: u64,
    },
    #[error(
        "the plan is stale: the stack files changed since it was made; run `benchstack plan` again"
    )]
    StaleStack,
    #[error(
        "the plan file was written by a newer benchstack (format {0}); this build reads format {1}"
    )]
    PlanFormat(u32, u32),
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error(transparent)]
    Cycle(#[from] crate::graph::CycleError),
    #[error(
        "what an interrupted apply left could not be checked, so its record is kept and nothing was changed: {}; try again when the API answers",
        .0.iter().map(|(a, m)| format!("{a}: {m}")).collect::<Vec<_>>().join("; ")
    )]
    Recovery(Vec<(Address, String)>),
}

pub struct ApplyOptions {
    pub parallelism: usize,
    /// `apply` or `destroy` (for the history).
    pub operation: String,
}

/// Refuses a plan made against another state, an older serial, or stack files since edited.
pub fn check_fresh(plan: &Plan, store: &Store) -> Result<(), ApplyError> {
    if plan.format_version > crate::plan::FORMAT_VERSION {
        return Err(ApplyError::PlanFormat(
            plan.format_version,
            crate::plan::FORMAT_VERSION,
        ));
    }
    let meta = store.meta()?;
    if meta.lineage != plan.lineage || meta.serial != plan.serial {
        return Err(ApplyError::StalePlan {
            plan_lineage: plan.lineage.clone(),
            plan_serial: plan.serial,
            lineage: meta.lineage,
            serial: meta.serial,
        });
    }
    if let Some(stack) = &plan.stack {
        let now = crate::plan::stack_hash(&stack.files).map_err(|_| ApplyError::StaleStack)?;
        if now != plan.stack_hash {
            return Err(ApplyError::StaleStack);
        }
    }
    Ok(())
}

/// Settles the intents an interrupted apply left: adopts what it completed (a serving process
/// that came up is recorded, never started twice) and removes what it half-made. An intent
/// whose provider could not be asked (an API error, an unknown provider) is kept, reported,
/// and makes this return `ApplyError::Recovery` once the others are settled: dropping it
/// would forget what the interrupted call may have made.
pub fn recover(
    store: &Store,
    providers: &Providers,
    events: &(dyn Fn(Event) + Sync),
) -> Result<(), ApplyError> {
    let cancel = AtomicBool::new(false);
    let ctx = Context::quiet(store.dir(), &cancel);
    let mut failures = Vec::new();
    for intent in store.intents()? {
        let prior = store.resource(&intent.address)?;
        let recovered = providers
            .get(&intent.provider)
            .and_then(|p| p.recover(&ctx, &intent, prior.as_ref(), true));
        let mut entry =
            state::history_entry("recover", Some(&intent.address), Some(&intent.operation));
        let adopted = match recovered {
            Ok(a) => a,
            Err(e) => {
                let message = e.to_string();
                entry.result = format!("failed (the intent is kept): {message}");
                entry.finished = procinfo::now_unix();
                store.record_history(entry)?;
                events(Event::RecoveryFailed {
                    address: intent.address.clone(),
                    message: message.clone(),
                });
                failures.push((intent.address.clone(), message));
                continue;
            }
        };
        match (adopted, &intent.config) {
            (Some(observed), Some(config)) => {
                store.put_resource(&ResourceState {
                    address: intent.address.clone(),
                    provider: intent.provider.clone(),
                    fingerprint: crate::plan::fingerprint(config, &intent.rendered),
                    config: config.clone(),
                    depends_on: intent.depends_on.clone(),
                    observed,
                    rendered: intent.rendered.clone(),
                    upstream: intent.upstream.clone(),
                    applied_at: intent.started,
                    last_run: prior.as_ref().and_then(|p| p.last_run),
                })?;
                entry.result = "adopted what the interrupted call started".into();
                events(Event::Recovered {
                    address: intent.address.clone(),
                    adopted: true,
                });
            }
            _ => {
                store.clear_intent(&intent.address)?;
                entry.result = "cleaned up after the interrupted call".into();
                events(Event::Recovered {
                    address: intent.address.clone(),
                    adopted: false,
                });
            }
        }
        entry.finished = procinfo::now_unix();
        store.record_history(entry)?;
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::Recovery(failures))
    }
}

/// Executes the plan's changes. Errors of individual resources are in the outcome; an Err is
/// a state store failure (nothing more can be recorded).
pub fn execute(
    plan: &Plan,
    store: &Store,
    providers: &Providers,
    opts: &ApplyOptions,
    cancel: &AtomicBool,
    events: &(dyn Fn(Event) + Sync),
) -> Result<Outcome, ApplyError> {
    let work: Vec<&Change> = plan
        .changes
        .iter()
        .filter(|c| c.action != Action::NoOp)
        .collect();
    let index: BTreeMap<&Address, usize> = work
        .iter()
        .enumerate()
        .map(|(i, c)| (&c.address, i))
        .collect();
    // Edges: a create/update/run waits for its dependencies; a delete waits for the deletes of
    // what depends on it.
    let mut deps: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); work.len()];
    for (i, c) in work.iter().enumerate() {
        if c.action == Action::Delete {
            for (j, other) in work.iter().enumerate() {
                if other.action == Action::Delete && other.depends_on.contains(&c.address) {
                    deps[i].insert(j);
                }
            }
        } else {
            for d in &c.depends_on {
                if let Some(&j) = index.get(d)
                    && work[j].action != Action::Delete
                {
                    deps[i].insert(j);
                }
            }
        }
    }
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); work.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &j in ds {
            dependents[j].push(i);
        }
    }
    let mut waiting: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut ready: BTreeSet<usize> = (0..work.len()).filter(|i| waiting[*i] == 0).collect();
    let mut finished = vec![false; work.len()];
    let mut outcome = Outcome::default();
    let upstreams = upstream_fingerprints(plan)?;
    let parallelism = opts.parallelism.max(1);
    let fatal: Mutex<Option<StateError>> = Mutex::new(None);

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Duration, StepResult)>();
        let mut running = 0usize;
        // A load test runs alone: nothing else starts while it measures, and it starts only
        // when nothing else is running, so parallel steps (another load test, a server
        // starting) never share the machine with a measurement.
        let mut measuring = false;
        loop {
            while running < parallelism
                && !measuring
                && !cancel.load(Ordering::SeqCst)
                && fatal.lock().map(|f| f.is_none()).unwrap_or(false)
            {
                let pick = if running == 0 {
                    ready.pop_first()
                } else {
                    let other = ready
                        .iter()
                        .copied()
                        .find(|j| work[*j].action != Action::Run);
                    other.inspect(|j| {
                        ready.remove(j);
                    })
                };
                let Some(i) = pick else { break };
                measuring = work[i].action == Action::Run;
                running += 1;
                let c = work[i];
                let tx = tx.clone();
                let upstream = upstreams.get(&c.address).cloned().unwrap_or_default();
                let fatal = &fatal;
                events(Event::Started {
                    address: c.address.clone(),
                    action: c.action,
                });
                scope.spawn(move || {
                    let t0 = Instant::now();
                    let result =
                        match step(plan, c, upstream, store, providers, opts, cancel, events) {
                            Ok(r) => r,
                            Err(e) => {
                                let msg = e.to_string();
                                if let Ok(mut f) = fatal.lock() {
                                    f.get_or_insert(e);
                                }
                                StepResult::Failed(format!("state store: {msg}"))
                            }
                        };
                    let _ = tx.send((i, t0.elapsed(), result));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((i, elapsed, result)) = rx.recv() else {
                break;
            };
            running -= 1;
            finished[i] = true;
            let c = work[i];
            if c.action == Action::Run {
                measuring = false;
            }
            match &result {
                StepResult::Failed(msg) => {
                    outcome.failed.push((c.address.clone(), msg.clone()));
                    // Skip everything downstream.
                    let mut todo = dependents[i].clone();
                    while let Some(d) = todo.pop() {
                        if !finished[d] {
                            finished[d] = true;
                            ready.remove(&d);
                            outcome
                                .skipped
                                .push((work[d].address.clone(), c.address.clone()));
                            events(Event::Skipped {
                                address: work[d].address.clone(),
                                because: c.address.clone(),
                            });
                            todo.extend(dependents[d].iter().copied());
                        }
                    }
                }
                StepResult::Ran {
                    run_id,
                    slos_met,
                    invalid,
                    ..
                } => {
                    outcome.done.push(c.address.clone());
                    outcome.runs.push((c.address.clone(), *run_id));
                    if let Some(why) = invalid {
                        outcome
                            .invalid_runs
                            .push((c.address.clone(), *run_id, why.clone()));
                    } else if !slos_met {
                        outcome.slo_failures.push((c.address.clone(), *run_id));
                    }
                }
                StepResult::Done => outcome.done.push(c.address.clone()),
            }
            if !matches!(result, StepResult::Failed(_)) {
                for &d in &dependents[i] {
                    waiting[d] -= 1;
                    if waiting[d] == 0 && !finished[d] {
                        ready.insert(d);
                    }
                }
            }
            events(Event::Finished {
                address: c.address.clone(),
                action: c.action,
                elapsed,
                result,
            });
        }
    });
    if let Ok(mut f) = fatal.lock()
        && let Some(e) = f.take()
    {
        return Err(e.into());
    }
    for (i, done) in finished.iter().enumerate() {
        if !done {
            outcome.not_started.push(work[i].address.clone());
        }
    }
    outcome.interrupted = cancel.load(Ordering::SeqCst) && !outcome.not_started.is_empty();
    if outcome.not_started.is_empty() && cancel.load(Ordering::SeqCst) {
        outcome.interrupted = true;
    }
    write_outputs(plan, store)?;
    Ok(outcome)
}

/// For every load test: the fingerprints of everything upstream, as the plan applies them.
fn upstream_fingerprints(
    plan: &Plan,
) -> Result<BTreeMap<Address, BTreeMap<String, String>>, ApplyError> {
    let Some(stack) = &plan.stack else {
        return Ok(BTreeMap::new());
    };
    let graph = Graph::from_stack(stack)?;
    let fps: BTreeMap<&Address, &String> = plan
        .changes
        .iter()
        .map(|c| (&c.address, &c.fingerprint))
        .collect();
    let mut out = BTreeMap::new();
    for r in &stack.resources {
        let mut up = BTreeMap::new();
        let mut todo: Vec<&Address> = graph.dependencies(&r.address).collect();
        while let Some(a) = todo.pop() {
            if let Some(fp) = fps.get(a)
                && up.insert(a.to_string(), (*fp).clone()).is_none()
            {
                todo.extend(graph.dependencies(a));
            }
        }
        out.insert(r.address.clone(), up);
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn step(
    plan: &Plan,
    c: &Change,
    upstream: BTreeMap<String, String>,
    store: &Store,
    providers: &Providers,
    opts: &ApplyOptions,
    cancel: &AtomicBool,
    events: &(dyn Fn(Event) + Sync),
) -> Result<StepResult, StateError> {
    let mut entry =
        state::history_entry(&opts.operation, Some(&c.address), Some(c.action.as_str()));
    let result = step_inner(plan, c, upstream, store, providers, cancel, events);
    entry.finished = procinfo::now_unix();
    entry.result = match &result {
        Ok(StepResult::Failed(m)) => format!("failed: {m}"),
        Ok(StepResult::Ran {
            run_id,
            slos_met,
            invalid,
            ..
        }) => match invalid {
            Some(why) => format!("run #{run_id}: INVALID ({why})"),
            None => format!(
                "run #{run_id}: SLOs {}",
                if *slos_met { "met" } else { "failed" }
            ),
        },
        Ok(StepResult::Done) => "ok".into(),
        Err(e) => format!("failed: {e}"),
    };
    store.record_history(entry)?;
    result
}

fn step_inner(
    plan: &Plan,
    c: &Change,
    upstream: BTreeMap<String, String>,
    store: &Store,
    providers: &Providers,
    cancel: &AtomicBool,
    events: &(dyn Fn(Event) + Sync),
) -> Result<StepResult, StateError> {
    let provider = match providers.get(&c.provider) {
        Ok(p) => p,
        Err(e) => return Ok(StepResult::Failed(e.to_string())),
    };
    let prior = store.resource(&c.address)?;
    let intent = Mutex::new(Intent {
        address: c.address.clone(),
        operation: c.action.as_str().to_string(),
        provider: c.provider.clone(),
        config: c.after.clone().or_else(|| c.before.clone()),
        depends_on: c.depends_on.clone(),
        rendered: c.rendered.clone(),
        upstream: upstream.clone(),
        data: serde_json::Value::Null,
        pid: std::process::id(),
        started: procinfo::now_unix(),
    });
    if let Ok(i) = intent.lock() {
        store.put_intent(&i)?;
    }
    let note = |data: serde_json::Value| -> Result<(), ProviderError> {
        let mut i = intent
            .lock()
            .map_err(|_| ProviderError::State("intent lock poisoned".into()))?;
        i.data = data;
        store
            .put_intent(&i)
            .map(|_| ())
            .map_err(|e| ProviderError::State(e.to_string()))
    };
    let address = c.address.clone();
    let progress = |message: String| {
        events(Event::Progress {
            address: address.clone(),
            message,
        })
    };
    let ctx = Context {
        state_dir: store.dir(),
        note: &note,
        progress: &progress,
        cancel,
    };
    let inputs = inputs_for(plan, c, store)?;

    let applied = match (c.action, &c.after, &prior) {
        (Action::Delete, _, Some(p)) => {
            return match provider.delete(&ctx, p) {
                Ok(()) => {
                    store.remove_resource(&c.address)?;
                    Ok(StepResult::Done)
                }
                Err(e) => {
                    settle_failed_intent(store, &c.address, &e)?;
                    Ok(StepResult::Failed(e.to_string()))
                }
            };
        }
        (Action::Delete, _, None) => {
            store.clear_intent(&c.address)?;
            return Ok(StepResult::Done);
        }
        (Action::Update, Some(after), Some(p)) => provider.update(&ctx, p, after, &inputs),
        (Action::Replace, Some(after), Some(p)) => provider
            .delete(&ctx, p)
            .and_then(|()| provider.create(&ctx, &c.address, after, &inputs)),
        (Action::Run, Some(after), Some(p)) => provider.update(&ctx, p, after, &inputs),
        (_, Some(after), _) => provider.create(&ctx, &c.address, after, &inputs),
        (_, None, _) => Err(ProviderError::other("nothing to apply")),
    };
    let applied = match applied {
        Ok(a) => a,
        Err(e) => {
            settle_failed_intent(store, &c.address, &e)?;
            return Ok(StepResult::Failed(e.to_string()));
        }
    };
    let Some(config) = c.after.clone() else {
        return Ok(StepResult::Failed("nothing to apply".into()));
    };
    let record = ResourceState {
        address: c.address.clone(),
        provider: c.provider.clone(),
        config,
        depends_on: c.depends_on.clone(),
        observed: applied.observed,
        rendered: c.rendered.clone(),
        upstream: upstream.clone(),
        fingerprint: c.fingerprint.clone(),
        applied_at: procinfo::now_unix(),
        last_run: prior.as_ref().and_then(|p| p.last_run),
    };
    match applied.run {
        Some(run) => {
            let slos_met = run.slos_met;
            let invalid = run.invalid.clone();
            let report = run.report.clone();
            let id = store.put_run(
                RunRecord {
                    id: 0,
                    address: c.address.clone(),
                    started: run.started,
                    finished: run.finished,
                    config_hash: c.fingerprint.clone(),
                    upstream,
                    environment: {
                        let mut e: crate::state::records::EnvironmentRecord =
                            (&run.environment).into();
                        e.images = run.images.clone();
                        e
                    },
                    slos_met,
                    report: run.report,
                    tune: None,
                },
                record,
            )?;
            Ok(StepResult::Ran {
                run_id: id,
                slos_met,
                invalid,
                report,
            })
        }
        None => {
            store.put_resource(&record)?;
            Ok(StepResult::Done)
        }
    }
}

/// After a failed provider call: a failure cleaned up after itself, so the prior record
/// stands and the intent goes. The intent stays when what the call did is unknown: an
/// interruption (Ctrl-C while a cluster is still being created), or a request that reached
/// the API and got no answer (a timeout, a 503 after retries); the next plan then asks the
/// provider what is there and adopts it, instead of forgetting something that may exist.
fn settle_failed_intent(
    store: &Store,
    address: &Address,
    error: &ProviderError,
) -> Result<(), StateError> {
    let outcome_unknown = matches!(error, ProviderError::Interrupted)
        || (matches!(error, ProviderError::Unavailable(_)) && !error.unsent());
    if outcome_unknown {
        Ok(())
    } else {
        store.clear_intent(address).map(|_serial| ())
    }
}

/// The files the plan rendered for the change, and the configuration (from the plan's
/// stack) and observed state (from the store) of its direct dependencies.
fn inputs_for(plan: &Plan, c: &Change, store: &Store) -> Result<Inputs, StateError> {
    Ok(Inputs {
        rendered: c.rendered.clone(),
        ..Inputs::gather(plan.stack.as_ref(), &c.depends_on, store)?
    })
}

/// Stores the outputs: known values as they are, attributes from what the providers observed.
fn write_outputs(plan: &Plan, store: &Store) -> Result<(), StateError> {
    let mut out = BTreeMap::new();
    if plan.destroy {
        // What the plan deletes: every output for a whole destroy, only those reading a
        // deleted resource for a targeted one (`plan::output_plans`).
        out = store.outputs()?;
        for o in plan.outputs.iter().filter(|o| o.action == Action::Delete) {
            out.remove(&o.name);
        }
    } else if let Some(stack) = &plan.stack {
        for o in &stack.outputs {
            let value = match &o.value {
                OutputValue::Known(v) => Some(v.clone()),
                OutputValue::Attribute { address, attribute } => {
                    store.resource(address)?.and_then(|r| {
                        crate::state::observed::Observed::from_json(
                            &r.provider,
                            r.address.kind,
                            &r.observed,
                        )
                        .ok()?
                        .attribute(attribute)
                    })
                }
            };
            if let Some(v) = value {
                out.insert(o.name.clone(), v);
            }
        }
    } else {
        out = store.outputs()?;
    }
    store.set_outputs(&out)?;
    Ok(())
}
