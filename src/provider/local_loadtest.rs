//! A local load test: the load generator on this machine against every replica of the
//! target serving resource; connections are spread across the replicas.

use super::{Applied, Context, Inputs, ProviderError, RunOutcome};
use crate::loadgen::{self, LoadSpec, Progress};
use crate::stack::types::LoadtestConfig;
use crate::state::procinfo;

pub fn run(ctx: &Context, l: &LoadtestConfig, inputs: &Inputs) -> Result<Applied, ProviderError> {
    let targets = super::load_test_targets(l, inputs)?;
    let mut spec = LoadSpec::new(
        targets,
        l.protocol,
        l.model.clone(),
        l.request.clone(),
        l.stages.clone(),
    );
    spec.signature = l.signature.clone();
    spec.warmup = l.warmup;
    spec.arrival = l.arrival;
    spec.seed = l.seed;
    spec.connections = l.connections;
    spec.timeout = l.timeout;
    spec.slos = l.slos.clone();
    let started = procinfo::now_unix();
    let report_progress = |p: &Progress| (ctx.progress)(p.summary());
    let report = match loadgen::run_blocking_until(&spec, Some(&report_progress), ctx.cancel) {
        Ok(r) => r,
        Err(loadgen::LoadError::Cancelled) => return Err(ProviderError::Interrupted),
        Err(e) => return Err(ProviderError::Failed(format!("the load test failed: {e}"))),
    };
    let slos_met = report.slos_met() || l.slos.is_empty();
    Ok(Applied {
        observed: serde_json::json!({
            "targets": spec.targets,
            "protocol": l.protocol,
        }),
        run: Some(RunOutcome {
            environment: report.environment.clone(),
            report: serde_json::to_value(&report)
                .map_err(|e| ProviderError::Failed(format!("the run report: {e}")))?,
            slos_met,
            started,
            finished: procinfo::now_unix(),
        }),
    })
}
