//! The tuner's real bench: a trial is the stack with the serving resource's configuration
//! replaced, planned (targeted at that resource) and applied by the same `refresh::plan` and
//! `apply::execute` as `benchstack apply`, so the providers restart or roll the servers and
//! the state is written after each resource. A built serving-preset image is not rebuilt for
//! a trial that changes only its baked configuration (`PlanOptions::
//! keep_config_only_image_builds`: the ConfigMap carries the trial). A probe is the load test with one stage at the
//! probe's rate, run by the load test's own provider (the local load generator, or worker pods
//! on the load cluster), and stored as a run of the serving resource tagged with the tune.
//! Every plan is sized by the machine shapes the CLI's preflight read (`machine_shapes`), and
//! [`Bench::fits`] is the plan's own capacity check with them.

use std::sync::atomic::AtomicBool;

use crate::apply::{self, ApplyOptions};
use crate::loadgen::RunReport;
use crate::plan::{MachineShapes, PlanOptions};
use crate::provider::LiveReader;
use crate::provider::{
    Context, Inputs, ProviderReader, Providers, cluster_providers, provider_for,
};
use crate::refresh;
use crate::state::{RunRecord, Store, TuneProbe, procinfo};
use crate::vocab::load::{Slo, Stage};
use crate::vocab::resources::{Address, ResourceConfig, ServingConfig, Stack};

use super::{Bench, Event, TuneError};

pub struct StackBench<'a> {
    /// The stack as declared.
    pub stack: &'a Stack,
    pub serving: Address,
    pub loadtest: Address,
    pub tune: String,
    pub store: &'a Store,
    pub providers: &'a Providers,
    pub cancel: &'a AtomicBool,
    pub events: &'a (dyn Fn(Event) + Sync),
    /// The stack currently applied by this bench (the declared one until a trial is applied).
    current: Stack,
    /// The images the last probe measured, by role (`serving`: what the Deployment runs,
    /// the digest last applied), recorded with its run.
    measured_images: std::collections::BTreeMap<String, String>,
    /// The machine shapes the preflight read from Compute Engine (empty: the built-in table):
    /// every trial's plan, and [`Bench::fits`], size the node pool by them.
    pub machine_shapes: MachineShapes,
    /// A trial was applied (or its apply begun) by this bench.
    touched: bool,
}

impl<'a> StackBench<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stack: &'a Stack,
        serving: Address,
        loadtest: Address,
        tune: String,
        store: &'a Store,
        providers: &'a Providers,
        cancel: &'a AtomicBool,
        events: &'a (dyn Fn(Event) + Sync),
    ) -> Self {
        StackBench {
            stack,
            serving,
            loadtest,
            tune,
            store,
            providers,
            cancel,
            events,
            current: stack.clone(),
            measured_images: Default::default(),
            machine_shapes: MachineShapes::default(),
            touched: false,
        }
    }

    /// The stack with the serving resource's configuration replaced.
    fn with_serving(&self, serving: &ServingConfig) -> Stack {
        let mut s = self.stack.clone();
        for r in &mut s.resources {
            if r.address == self.serving {
                r.config = ResourceConfig::Serving(serving.clone());
            }
        }
        s
    }

    /// Plans `stack` for the serving resource (and what it needs) and applies it.
    fn apply_stack(&mut self, stack: Stack, cancel: &AtomicBool) -> Result<(), TuneError> {
        let snap = self.store.snapshot()?;
        let outputs = self.store.outputs()?;
        let observer = ProviderReader {
            providers: self.providers,
            state_dir: self.store.dir(),
        };
        let observe: &dyn LiveReader = &observer;
        let opts = PlanOptions {
            targets: vec![self.serving.clone()],
            replace: Vec::new(),
            destroy: false,
            // The ConfigMap carries the trial's settings: a serving-preset image is not
            // rebuilt for them (its baked copy is mounted over), see the option.
            keep_config_only_image_builds: true,
            // The capacity check and the rollout (maxSurge) by the shapes Compute Engine
            // described, as `apply` plans after its preflight.
            machine_shapes: self.machine_shapes.clone(),
        };
        let plan = refresh::plan(Some(&stack), &snap, outputs, Some(observe), &opts)
            .map_err(|e| TuneError::Apply(e.to_string()))?;
        let events = self.events;
        let on_event = |e: apply::Event| {
            let message = match e {
                apply::Event::Started { address, action } => {
                    format!("{address}: {}", action.as_str())
                }
                apply::Event::Progress { address, message } => format!("{address}: {message}"),
                apply::Event::Finished {
                    address, result, ..
                } => match result {
                    apply::StepResult::Failed(m) => format!("{address}: failed: {m}"),
                    _ => format!("{address}: done"),
                },
                apply::Event::Skipped { address, because } => {
                    format!("{address}: skipped ({because} failed)")
                }
                apply::Event::Recovered { address, .. } => {
                    format!("{address}: settled what an interrupted apply left")
                }
                apply::Event::RecoveryFailed { address, message } => {
                    format!("{address}: {message}")
                }
            };
            events(Event::Progress { message });
        };
        let outcome = apply::execute(
            &plan,
            self.store,
            self.providers,
            &ApplyOptions {
                parallelism: 1,
                operation: "tune".into(),
            },
            cancel,
            &on_event,
        )
        .map_err(|e| TuneError::Apply(e.to_string()))?;
        if outcome.interrupted {
            return Err(TuneError::Interrupted);
        }
        if let Some((a, m)) = outcome.failed.first() {
            return Err(TuneError::Apply(format!("{a}: {m}")));
        }
        if let Some((a, because)) = outcome.skipped.first() {
            return Err(TuneError::Apply(format!("{a}: skipped ({because} failed)")));
        }
        self.current = stack;
        Ok(())
    }

    /// Puts the serving resource back to what the stack declares (with its own cancel
    /// flag: it runs after an interrupted tune too).
    pub fn restore(&mut self, cancel: &AtomicBool) -> Result<(), TuneError> {
        // Nothing applied and nothing to put back (every trial was refused before its plan
        // and the serving resource was never created): a declared configuration that does
        // not fit is not planned into an error, nor its cluster created, here. One in the
        // state is put back even so (an earlier tune killed mid-trial left its settings).
        if !self.touched && self.store.resource(&self.serving)?.is_none() {
            return Ok(());
        }
        (self.events)(Event::Restoring);
        self.apply_stack(self.stack.clone(), cancel)
    }

    fn loadtest_config(&self) -> Result<crate::vocab::resources::LoadtestConfig, TuneError> {
        self.stack
            .resources
            .iter()
            .find(|r| r.address == self.loadtest)
            .and_then(|r| match &r.config {
                ResourceConfig::Loadtest(l) => Some(l.clone()),
                _ => None,
            })
            .ok_or_else(|| TuneError::Invalid(format!("{} is not in the stack", self.loadtest)))
    }
}

impl Bench for StackBench<'_> {
    fn apply(&mut self, serving: &ServingConfig) -> Result<(), TuneError> {
        let stack = self.with_serving(serving);
        self.touched = true;
        self.apply_stack(stack, self.cancel)
    }

    /// The plan's own capacity check (`plan::check_capacity`), so a trial skipped here is
    /// exactly one its plan would refuse.
    fn fits(&self, serving: &ServingConfig) -> Result<(), String> {
        let Some(r) = self
            .stack
            .resources
            .iter()
            .find(|r| r.address == self.serving)
        else {
            return Ok(());
        };
        let mut r = r.clone();
        r.config = ResourceConfig::Serving(serving.clone());
        match crate::plan::check_capacity(&r, self.stack, &self.machine_shapes) {
            Ok(_) => Ok(()),
            Err(crate::plan::PlanError::Resource { message, .. }) => Err(message),
            Err(e) => Err(e.to_string()),
        }
    }

    fn probe(&mut self, stage: Stage, slos: &[Slo], warmup: bool) -> Result<RunReport, TuneError> {
        let mut l = self.loadtest_config()?;
        l.stages = vec![stage];
        l.slos = slos.to_vec();
        if !warmup {
            l.warmup = std::time::Duration::ZERO;
        }
        let config = ResourceConfig::Loadtest(l);
        let clusters = cluster_providers(&self.current);
        let provider = self
            .providers
            .provider(provider_for(&config, &clusters))
            .map_err(|e| TuneError::Probe(e.to_string()))?;
        // What the load test depends on, as applied now (the trial's serving resource).
        let deps = self
            .current
            .resources
            .iter()
            .find(|r| r.address == self.loadtest)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default();
        let mut inputs = Inputs::gather(Some(&self.current), &deps, self.store)?;
        let note = |_v: serde_json::Value| Ok(());
        let events = self.events;
        let progress = |message: String| events(Event::Progress { message });
        let ctx = Context {
            state_dir: self.store.dir(),
            note: &note,
            progress: &progress,
            cancel: self.cancel,
        };
        // As a probe: the in-process load generator stops once the probe cannot pass.
        inputs.probe = true;
        let applied = provider
            .create(&ctx, &self.loadtest, &config, &inputs)
            .map_err(|e| match e {
                crate::provider::ProviderError::Interrupted => TuneError::Interrupted,
                e => TuneError::Probe(e.to_string()),
            })?;
        let run = applied
            .run
            .ok_or_else(|| TuneError::Probe("the load test reported no run".into()))?;
        self.measured_images = run.images.clone();
        let report: RunReport = serde_json::from_value(run.report)
            .map_err(|e| TuneError::Probe(format!("the probe's report: {e}")))?;
        // Let the server drain what an overloaded probe left queued before the next one.
        if !report.slos_met() {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Ok(report)
    }

    fn answers(&mut self) -> Result<Option<crate::loadgen::answers::AnswerCheck>, TuneError> {
        let l = self.loadtest_config()?;
        let deps = self
            .current
            .resources
            .iter()
            .find(|r| r.address == self.loadtest)
            .map(|r| r.depends_on.clone())
            .unwrap_or_default();
        let inputs = Inputs::gather(Some(&self.current), &deps, self.store)?;
        let events = self.events;
        let progress = |message: String| events(Event::Progress { message });
        Ok(crate::provider::answer_check(&l, &inputs, &progress))
    }

    fn store(&mut self, report: &RunReport, tag: TuneProbe) -> Result<u64, TuneError> {
        let resource = self
            .store
            .resource(&self.serving)?
            .ok_or_else(|| TuneError::Invalid(format!("{} is not in the state", self.serving)))?;
        let now = procinfo::now_unix();
        let duration: f64 = report.stages.iter().map(|s| s.duration_s).sum();
        let mut environment: crate::state::EnvironmentRecord = (&report.environment).into();
        environment.images = self.measured_images.clone();
        let record = RunRecord {
            id: 0,
            address: self.serving.clone(),
            started: now.saturating_sub(duration.ceil() as u64),
            finished: now,
            config_hash: tag.basis.clone(),
            upstream: Default::default(),
            environment,
            slos_met: tag.passed,
            report: serde_json::to_value(report)
                .map_err(|e| TuneError::Probe(format!("the probe's report: {e}")))?,
            tune: Some(tag),
        };
        Ok(self.store.put_run(record, resource)?)
    }

    fn stored(&self) -> Result<Vec<(u64, TuneProbe, RunReport)>, TuneError> {
        Ok(self
            .store
            .runs()?
            .into_iter()
            .filter_map(|r| {
                let tag = r.tune?;
                if tag.tune != self.tune {
                    return None;
                }
                let report: RunReport = serde_json::from_value(r.report).ok()?;
                Some((r.id, tag, report))
            })
            .collect())
    }
}
