//! The real measurer of `benchstack compare`: both serving configurations deployed side by
//! side on the stack's cluster (the base one under `serving.NAME_compare_base`, its models
//! under `model.NAME_compare_base`, so the state marks it as the base by its address; its
//! `image = image.NAME` built from the base as `image.NAME_compare_base`, a serving-preset one
//! generated for the base's serving resource, unless the candidate's build can serve it:
//! the same bytes, or for a serving preset only other `config/` files, which the base's
//! ConfigMap carries), each
//! round the stack's load test run against one of them by the load test's own provider, as
//! `tune` probes do; with `capacity`, a capacity search under the SLOs judged by loadgen's
//! `probe_verdict` (the one verdict). Deploy and removal go through `refresh::plan` and
//! `apply::execute`, so the state is written after each resource.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicBool;

use crate::apply::{self, ApplyOptions};
use crate::loadgen::search::{CapacitySearch, ProbeSample, search_capacity};
use crate::loadgen::{ProbeVerdict, RunReport, capacity_slos, probe_verdict};
use crate::plan::{MachineShapes, PlanOptions};
use crate::provider::{
    Context, Inputs, LiveReader, ProviderReader, Providers, cluster_providers, provider_for,
};
use crate::refresh;
use crate::state::Store;
use crate::vocab::load::{Rate, Stage};
use crate::vocab::resources::{Address, Kind, LoadtestConfig, ResourceConfig, Stack};

use super::{CompareError, Direction, Figure, Measure, Measured, RoundRecord, Side, run_figures};

/// The suffix that marks the base configuration's resources.
pub const BASE_SUFFIX: &str = "_compare_base";

fn base_address(a: &Address) -> Address {
    Address {
        kind: a.kind,
        name: format!("{}{BASE_SUFFIX}", a.name),
        key: a.key.clone(),
    }
}

/// The candidate stack with the base's serving resource (and its models) added under base
/// addresses.
#[derive(Debug, Clone)]
pub struct Combined {
    pub stack: Stack,
    pub loadtest: Address,
    pub target: Address,
    pub base_target: Address,
    /// The resources added for the base.
    pub base_resources: Vec<Address>,
    /// What the base side's requests are: the base's own version of the load test's model,
    /// signature and request (a pull request that changes the request data or renames the
    /// model is measured with each side's own). None when the base has no such load test.
    /// The load itself (stages, SLOs, connections, arrival) is the candidate's on both sides,
    /// so that the rounds measure the same load.
    pub base_requests: Option<BaseRequests>,
}

/// The base's own requests (see [`Combined::base_requests`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BaseRequests {
    pub model: String,
    pub signature: Option<String>,
    pub request: crate::vocab::load::RequestSource,
}

impl Combined {
    /// The load test as one side runs it, with what it depends on: the candidate's, aimed at
    /// the base's serving resource and sending the base's requests for the base.
    pub fn loadtest_for(&self, side: Side) -> Result<(LoadtestConfig, Vec<Address>), CompareError> {
        let r = self
            .stack
            .resources
            .iter()
            .find(|r| r.address == self.loadtest)
            .ok_or_else(|| CompareError::Invalid("the load test left the stack".into()))?;
        let ResourceConfig::Loadtest(l) = &r.config else {
            return Err(CompareError::Invalid("not a load test".into()));
        };
        let mut l = l.clone();
        let mut deps = r.depends_on.clone();
        if side == Side::Base {
            l.target = self.base_target.clone();
            if let Some(b) = &self.base_requests {
                l.model = b.model.clone();
                l.signature = b.signature.clone();
                l.request = b.request.clone();
            }
            for d in &mut deps {
                if *d == self.target {
                    *d = self.base_target.clone();
                }
            }
        }
        Ok((l, deps))
    }
}

/// The load test to compare by: `chosen`, else the stack's only one.
pub fn pick_loadtest(stack: &Stack, chosen: Option<&Address>) -> Result<Address, CompareError> {
    let all: Vec<&Address> = stack
        .resources
        .iter()
        .filter(|r| r.address.kind == Kind::Loadtest)
        .map(|r| &r.address)
        .collect();
    match chosen {
        Some(a) if all.contains(&a) => Ok(a.clone()),
        Some(a) => Err(CompareError::Invalid(format!(
            "--loadtest {a}: not a load test of the stack"
        ))),
        None => match all.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(CompareError::Invalid(
                "the stack has no loadtest block: nothing to measure the configurations by".into(),
            )),
            many => Err(CompareError::Invalid(format!(
                "the stack has {} load tests ({}); choose one with --loadtest",
                many.len(),
                many.iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        },
    }
}

/// Adds the base's version of the load test's target to the candidate stack.
pub fn combine(
    candidate: &Stack,
    base: &Stack,
    loadtest: &Address,
) -> Result<Combined, CompareError> {
    let lt = candidate
        .resources
        .iter()
        .find(|r| &r.address == loadtest)
        .ok_or_else(|| CompareError::Invalid(format!("{loadtest} is not in the stack")))?;
    let ResourceConfig::Loadtest(l) = &lt.config else {
        return Err(CompareError::Invalid(format!(
            "{loadtest} is not a load test"
        )));
    };
    let target = l.target.clone();
    let serving = base
        .resources
        .iter()
        .find(|r| r.address == target)
        .ok_or_else(|| {
            CompareError::Invalid(format!(
                "the base has no {target} (the load test's target): nothing to compare with"
            ))
        })?;
    let ResourceConfig::Serving(base_cfg) = &serving.config else {
        return Err(CompareError::Invalid(format!(
            "{target} is not a serving resource"
        )));
    };
    let mut stack = candidate.clone();
    let taken: BTreeSet<Address> = stack.resources.iter().map(|r| r.address.clone()).collect();
    let mut added = Vec::new();
    // The base's models under base addresses (same serving names, the base's paths).
    let mut cfg = base_cfg.clone();
    for m in &mut cfg.models {
        let model = base
            .resources
            .iter()
            .find(|r| &r.address == m)
            .ok_or_else(|| CompareError::Invalid(format!("the base has no {m}")))?;
        let renamed = base_address(m);
        if taken.contains(&renamed) {
            return Err(CompareError::Invalid(format!(
                "{renamed} is already in the stack: compare names the base's resources with the suffix {BASE_SUFFIX}"
            )));
        }
        let mut r = model.clone();
        r.address = renamed.clone();
        stack.resources.push(r);
        added.push(renamed.clone());
        *m = renamed;
    }
    // The cluster is the candidate's: both run side by side there.
    if !taken.contains(&cfg.cluster) {
        return Err(CompareError::Invalid(format!(
            "the base's {target} uses {}, which the stack does not declare: both configurations must run on the stack's cluster",
            cfg.cluster
        )));
    }
    let base_target = base_address(&target);
    if taken.contains(&base_target) {
        return Err(CompareError::Invalid(format!(
            "{base_target} is already in the stack: compare names the base's resources with the suffix {BASE_SUFFIX}"
        )));
    }
    // The base's image is built from the base: a serving-preset image bakes in the models
    // (and a Dockerfile image's context is the base's), so the candidate's would run the
    // candidate's models on both sides.
    let base_image = match &cfg.image_from {
        Some(image) => Some(base_image(base, image, &base_target, &taken)?),
        None => None,
    };
    if let Some(b) = &base_image {
        cfg.image_from = Some(b.address.clone());
    }
    let depends_on = serving
        .depends_on
        .iter()
        .map(|d| match d.kind {
            Kind::Model => base_address(d),
            Kind::Image if base_image.is_some() && Some(d) == serving_image(serving) => {
                base_address(d)
            }
            _ => d.clone(),
        })
        .collect();
    let image_from = cfg.image_from.clone();
    stack.resources.push(crate::vocab::resources::Resource {
        address: base_target.clone(),
        span: serving.span.clone(),
        depends_on,
        config: ResourceConfig::Serving(cfg),
    });
    added.push(base_target.clone());
    if let (Some(b), Some(own)) = (base_image, image_from) {
        stack.resources.push(b);
        if let Some(same) = same_build(&stack, &own) {
            // The candidate's build can serve the base (see `same_build`): built once.
            stack.resources.retain(|r| r.address != own);
            for r in &mut stack.resources {
                if r.address != base_target {
                    continue;
                }
                for d in &mut r.depends_on {
                    if *d == own {
                        *d = same.clone();
                    }
                }
                if let ResourceConfig::Serving(s) = &mut r.config {
                    s.image_from = Some(same.clone());
                }
            }
        } else {
            added.push(own);
        }
    }
    let base_requests = base
        .resources
        .iter()
        .find(|r| &r.address == loadtest)
        .and_then(|r| match &r.config {
            ResourceConfig::Loadtest(b) => Some(BaseRequests {
                model: b.model.clone(),
                signature: b.signature.clone(),
                request: b.request.clone(),
            }),
            _ => None,
        });
    Ok(Combined {
        stack,
        loadtest: loadtest.clone(),
        target,
        base_target,
        base_resources: added,
        base_requests,
    })
}

/// The image `image` of the base's serving resource as the base builds it, under its base
/// address: a serving-preset image generated for `base_target` (the base's models and
/// files), a Dockerfile image with the base's context.
fn base_image(
    base: &Stack,
    image: &Address,
    base_target: &Address,
    taken: &BTreeSet<Address>,
) -> Result<crate::vocab::resources::Resource, CompareError> {
    let found = base
        .resources
        .iter()
        .find(|r| &r.address == image)
        .ok_or_else(|| CompareError::Invalid(format!("the base has no {image}")))?;
    let ResourceConfig::Image(i) = &found.config else {
        return Err(CompareError::Invalid(format!("{image} is not an image")));
    };
    let renamed = base_address(image);
    if taken.contains(&renamed) {
        return Err(CompareError::Invalid(format!(
            "{renamed} is already in the stack: compare names the base's resources with the suffix {BASE_SUFFIX}"
        )));
    }
    let mut i = i.clone();
    if let Some(p) = &mut i.preset {
        p.serving = Some(base_target.clone());
    }
    let mut r = found.clone();
    r.address = renamed;
    r.config = ResourceConfig::Image(i);
    Ok(r)
}

fn serving_image(r: &crate::vocab::resources::Resource) -> Option<&Address> {
    match &r.config {
        ResourceConfig::Serving(s) => s.image_from.as_ref(),
        _ => None,
    }
}

/// The candidate's image (the one at the base image `own`'s original address in `stack`)
/// when it can serve the base: a Dockerfile image with the same content hash, a serving
/// preset differing at most in its `config/` files (the hashes computed as the plan does,
/// over the generated context).
fn same_build(stack: &Stack, own: &Address) -> Option<Address> {
    let original = Address {
        kind: own.kind,
        name: own.name.strip_suffix(BASE_SUFFIX)?.to_string(),
        key: own.key.clone(),
    };
    let find = |a: &Address| stack.resources.iter().find(|r| &r.address == a);
    let (theirs, ours) = (find(&original)?, find(own)?);
    let (ResourceConfig::Image(t), ResourceConfig::Image(o)) = (&theirs.config, &ours.config)
    else {
        return None;
    };
    let same = match (&t.preset, &o.preset) {
        (None, None) => t.content_hash == o.content_hash,
        // The same models and base image: the candidate's build serves the base as well,
        // the base's ConfigMap mounted over its `/config` (the files that differ by config
        // alone). Unknown when a hash cannot be computed (the plan says why).
        (Some(_), Some(_)) => {
            let candidate = crate::plan::serving_image_hash(theirs, stack, None).ok()?;
            let base = crate::plan::serving_image_hash(ours, stack, Some(theirs)).ok()?;
            candidate == base
        }
        _ => false,
    };
    same.then_some(original)
}

/// Plans and applies `opts` against `stack` (events as progress lines).
fn apply_plan(
    stack: &Stack,
    store: &Store,
    providers: &Providers,
    opts: &PlanOptions,
    cancel: &AtomicBool,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(), CompareError> {
    let snap = store.snapshot()?;
    let outputs = store.outputs()?;
    let observer = ProviderReader {
        providers,
        state_dir: store.dir(),
    };
    let observe: &dyn LiveReader = &observer;
    let plan = refresh::plan(Some(stack), &snap, outputs, Some(observe), opts)
        .map_err(|e| CompareError::Deploy(e.to_string()))?;
    let on_event = |e: apply::Event| match e {
        apply::Event::Started { address, action } => {
            progress(format!("{address}: {}", action.as_str()))
        }
        apply::Event::Finished {
            address, result, ..
        } => match result {
            apply::StepResult::Failed(m) => progress(format!("{address}: failed: {m}")),
            _ => progress(format!("{address}: done")),
        },
        _ => {}
    };
    let outcome = apply::execute(
        &plan,
        store,
        providers,
        &ApplyOptions {
            parallelism: 2,
            operation: "compare".into(),
        },
        cancel,
        &on_event,
    )
    .map_err(|e| CompareError::Deploy(e.to_string()))?;
    if outcome.interrupted {
        return Err(CompareError::Interrupted);
    }
    if let Some((a, m)) = outcome.failed.first() {
        return Err(CompareError::Deploy(format!("{a}: {m}")));
    }
    if let Some((a, because)) = outcome.skipped.first() {
        return Err(CompareError::Deploy(format!(
            "{a}: skipped ({because} failed)"
        )));
    }
    Ok(())
}

/// Deploys both configurations; returns what compare created (to remove at the end).
pub fn deploy(
    c: &Combined,
    store: &Store,
    providers: &Providers,
    machine_shapes: &MachineShapes,
    cancel: &AtomicBool,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Address>, CompareError> {
    let before: BTreeSet<Address> = store.resources()?.into_iter().map(|r| r.address).collect();
    let opts = PlanOptions {
        targets: vec![c.target.clone(), c.base_target.clone()],
        replace: Vec::new(),
        destroy: false,
        // The shapes the preflight read: the capacity check and both Deployments' rollout.
        machine_shapes: machine_shapes.clone(),
        ..PlanOptions::default()
    };
    let result = apply_plan(&c.stack, store, providers, &opts, cancel, progress);
    // Whatever got created is removed later, even after a failed deploy.
    let created: Vec<Address> = store
        .resources()?
        .into_iter()
        .map(|r| r.address)
        .filter(|a| !before.contains(a) || c.base_resources.contains(a))
        .collect();
    result.map(|()| created.clone()).map_err(|e| match e {
        CompareError::Deploy(m) => CompareError::Deploy(format!(
            // Removed afterwards, or kept with --keep: the command says which.
            "{m} (created before it failed: {})",
            created
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        e => e,
    })
}

/// Removes `addresses` (what compare created): a targeted destroy.
pub fn remove(
    c: &Combined,
    addresses: &[Address],
    store: &Store,
    providers: &Providers,
    cancel: &AtomicBool,
    progress: &(dyn Fn(String) + Sync),
) -> Result<(), CompareError> {
    let live: BTreeSet<Address> = store.resources()?.into_iter().map(|r| r.address).collect();
    let targets: Vec<Address> = addresses
        .iter()
        .filter(|a| live.contains(a))
        .cloned()
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    let opts = PlanOptions {
        targets,
        replace: Vec::new(),
        destroy: true,
        ..PlanOptions::default()
    };
    // A destroy plan clears the recorded outputs; the stack's own resources that stay (the
    // candidate applied before compare) keep theirs, as the deploy left them.
    let outputs = store.outputs()?;
    apply_plan(&c.stack, store, providers, &opts, cancel, progress)?;
    if store.resource(&c.target)?.is_some() {
        store.set_outputs(&outputs)?;
    }
    Ok(())
}

/// Measures rounds by running the load test against one side's serving resource.
pub struct StackMeasure<'a> {
    pub combined: &'a Combined,
    pub store: &'a Store,
    pub providers: &'a Providers,
    pub cancel: &'a AtomicBool,
    pub progress: &'a (dyn Fn(String) + Sync),
    /// A capacity search per round instead of the fixed stages.
    pub capacity: bool,
    /// Called with each measurement (the CLI prints a line).
    pub on_record: &'a dyn Fn(&RoundRecord),
}

impl StackMeasure<'_> {
    fn loadtest(&self, side: Side) -> Result<(LoadtestConfig, Vec<Address>), CompareError> {
        self.combined.loadtest_for(side)
    }

    /// One run of `l` by its provider.
    fn run(
        &self,
        l: LoadtestConfig,
        deps: &[Address],
        probe: bool,
    ) -> Result<RunReport, CompareError> {
        let config = ResourceConfig::Loadtest(l);
        let clusters = cluster_providers(&self.combined.stack);
        let provider = self
            .providers
            .provider(provider_for(&config, &clusters))
            .map_err(|e| CompareError::Measure(e.to_string()))?;
        let mut inputs = Inputs::gather(Some(&self.combined.stack), deps, self.store)?;
        inputs.probe = probe;
        let note = |_v: serde_json::Value| Ok(());
        let ctx = Context {
            state_dir: self.store.dir(),
            note: &note,
            progress: self.progress,
            cancel: self.cancel,
        };
        let applied = provider
            .create(&ctx, &self.combined.loadtest, &config, &inputs)
            .map_err(|e| match e {
                crate::provider::ProviderError::Interrupted => CompareError::Interrupted,
                e => CompareError::Measure(e.to_string()),
            })?;
        let run = applied
            .run
            .ok_or_else(|| CompareError::Measure("the load test reported no run".into()))?;
        serde_json::from_value(run.report)
            .map_err(|e| CompareError::Measure(format!("the run's report: {e}")))
    }

    fn capacity_round(
        &self,
        l: LoadtestConfig,
        deps: &[Address],
    ) -> Result<Measured, CompareError> {
        let first = l
            .stages
            .first()
            .ok_or_else(|| CompareError::Invalid("the load test has no stage".into()))?
            .clone();
        let start_rate = match first.rate {
            Rate::PerSecond(r) => r,
            Rate::Max => {
                return Err(CompareError::Invalid(
                    "--capacity needs the load test's first stage at a fixed rate (its start rate)"
                        .into(),
                ));
            }
        };
        let search = CapacitySearch {
            start_rate,
            probe_duration: first.duration,
            ..CapacitySearch::default()
        };
        let slos = capacity_slos(&l.slos);
        let mut invalid: Option<String> = None;
        let mut first_probe = true;
        let outcome = search_capacity(&search, None, |rate| {
            let mut pl = l.clone();
            pl.stages = vec![Stage {
                name: format!("probe at {rate} req/s"),
                rate: Rate::PerSecond(rate),
                duration: first.duration,
            }];
            pl.slos = slos.clone();
            if !first_probe {
                pl.warmup = std::time::Duration::ZERO;
            }
            first_probe = false;
            let report = self.run(pl, deps, true)?;
            let stage = report
                .stages
                .first()
                .ok_or_else(|| CompareError::Measure("a probe without a stage".into()))?;
            let passed = match probe_verdict(stage, rate) {
                ProbeVerdict::Passed => true,
                ProbeVerdict::Failed(_) => false,
                ProbeVerdict::Invalid(why) => {
                    invalid.get_or_insert(format!(
                        "the probe at {rate} req/s: the load generator was the bottleneck ({why})"
                    ));
                    false
                }
            };
            if !passed {
                // Let the server drain what an overloaded probe left queued.
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Ok::<_, CompareError>(ProbeSample::of(stage, rate, passed))
        })?;
        Ok(Measured {
            figures: vec![Figure {
                metric: "capacity under the SLOs".into(),
                unit: "req/s".into(),
                direction: Direction::HigherIsBetter,
                value: outcome.capacity.unwrap_or(0.0),
            }],
            invalid,
            run_id: None,
        })
    }
}

impl Measure for StackMeasure<'_> {
    fn measure(&mut self, side: Side, _round: usize) -> Result<Measured, CompareError> {
        if self.cancel.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(CompareError::Interrupted);
        }
        let (l, deps) = self.loadtest(side)?;
        if self.capacity {
            return self.capacity_round(l, &deps);
        }
        let report = self.run(l, &deps, false)?;
        Ok(run_figures(&report))
    }

    fn note(&mut self, record: &RoundRecord) {
        (self.on_record)(record);
    }
}
