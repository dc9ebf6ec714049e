//! Baselines and the gate: runs of a load test pinned as its baseline for one environment
//! (`results baseline set`), and `apply --gate`'s comparison of new runs with them by the same
//! verdict as `compare`. Runs are compared only within one environment fingerprint (machine
//! type, CPU model and count, image digests where known): across two, the difference is
//! named and the comparison refused.

use std::sync::atomic::AtomicBool;

use crate::apply::{self, ApplyOptions};
use crate::loadgen::RunReport;
use crate::plan::{MachineShapes, PlanOptions};
use crate::provider::{LiveReader, ProviderReader, Providers};
use crate::refresh;
use crate::state::{BaselineRecord, Fingerprint, ResourceState, RunRecord, Store};
use crate::vocab::resources::{Address, ResourceConfig, Stack};

use super::{
    CompareError, Comparison, Options, RoundRecord, Side, Verdict, judge_all, run_figures,
};

/// The most runs `baseline set` pins when no run is named.
pub const DEFAULT_BASELINE_RUNS: usize = 9;

/// The machine type of the cluster `loadtest`'s target runs on, from the state's records.
pub fn machine_type(resources: &[ResourceState], loadtest: &Address) -> Option<String> {
    let find = |a: &Address| resources.iter().find(|r| &r.address == a);
    let ResourceConfig::Loadtest(l) = &find(loadtest)?.config else {
        return None;
    };
    let ResourceConfig::Serving(s) = &find(&l.target)?.config else {
        return None;
    };
    let ResourceConfig::Cluster(c) = &find(&s.cluster)?.config else {
        return None;
    };
    c.machine_type.clone()
}

/// A run's environment fingerprint.
pub fn fingerprint(run: &RunRecord, machine_type: Option<String>) -> Fingerprint {
    Fingerprint {
        machine_type,
        cpu_model: run.environment.cpu_model.clone(),
        cpus: run.environment.cpus,
        images: run.environment.images.clone(),
    }
}

/// Why a run can be neither a baseline nor a candidate, if it cannot: its report does not
/// read, or a stage's generator was the bottleneck.
pub fn invalid_reason(run: &RunRecord) -> Option<String> {
    match serde_json::from_value::<RunReport>(run.report.clone()) {
        Err(e) => Some(format!("its report does not read: {e}")),
        Ok(r) => run_figures(&r).invalid,
    }
}

/// The runs to pin for `address`: `ids` as named, else the latest run of the load test and
/// the earlier ones of the same configuration (same load-test and upstream fingerprints), the
/// newest `DEFAULT_BASELINE_RUNS`, leaving out invalid ones. Tune probes are never pinned.
pub fn choose_runs(
    all: &[RunRecord],
    address: &Address,
    ids: &[u64],
) -> Result<Vec<RunRecord>, CompareError> {
    let of_address: Vec<&RunRecord> = all
        .iter()
        .filter(|r| &r.address == address && r.tune.is_none())
        .collect();
    let chosen: Vec<RunRecord> = if ids.is_empty() {
        let latest = of_address.iter().max_by_key(|r| r.id).ok_or_else(|| {
            CompareError::Invalid(format!(
                "{address} has no runs to pin (apply the stack first)"
            ))
        })?;
        let mut same: Vec<RunRecord> = of_address
            .iter()
            .filter(|r| r.config_hash == latest.config_hash && r.upstream == latest.upstream)
            .filter(|r| invalid_reason(r).is_none())
            .map(|r| (*r).clone())
            .collect();
        same.sort_by_key(|r| std::cmp::Reverse(r.id));
        same.truncate(DEFAULT_BASELINE_RUNS);
        same.reverse();
        same
    } else {
        let mut out = Vec::new();
        for id in ids {
            let r = all
                .iter()
                .find(|r| r.id == *id)
                .ok_or_else(|| CompareError::Invalid(format!("no run #{id} in the state")))?;
            if &r.address != address {
                return Err(CompareError::Invalid(format!(
                    "run #{id} is a run of {}, not of {address}",
                    r.address
                )));
            }
            if r.tune.is_some() {
                return Err(CompareError::Invalid(format!(
                    "run #{id} is a tune probe, not a run of the load test's stages"
                )));
            }
            if let Some(why) = invalid_reason(r) {
                return Err(CompareError::Invalid(format!(
                    "run #{id} cannot be a baseline: {why}"
                )));
            }
            out.push(r.clone());
        }
        out
    };
    if chosen.is_empty() {
        return Err(CompareError::Invalid(format!(
            "{address} has no valid runs of its latest configuration to pin"
        )));
    }
    Ok(chosen)
}

/// The fingerprint all `runs` share, or an error naming where two differ.
pub fn common_fingerprint(
    runs: &[RunRecord],
    machine_type: Option<String>,
) -> Result<Fingerprint, CompareError> {
    let first = runs
        .first()
        .ok_or_else(|| CompareError::Invalid("no runs".into()))?;
    let f = fingerprint(first, machine_type.clone());
    for r in &runs[1..] {
        let g = fingerprint(r, machine_type.clone());
        let d = f.differences(&g);
        if !d.is_empty() {
            return Err(CompareError::Invalid(format!(
                "runs #{} and #{} were measured in different environments: {}",
                first.id,
                r.id,
                d.join("; ")
            )));
        }
    }
    Ok(f)
}

/// The baseline to gate `address`'s runs in environment `fingerprint` against; refused, with
/// the difference named, when only other environments have one.
pub fn baseline_for<'a>(
    baselines: &'a [BaselineRecord],
    address: &Address,
    fingerprint: &Fingerprint,
) -> Result<&'a BaselineRecord, CompareError> {
    let of: Vec<&BaselineRecord> = baselines.iter().filter(|b| &b.address == address).collect();
    if let Some(b) = of.iter().find(|b| &b.fingerprint == fingerprint) {
        return Ok(b);
    }
    match of.iter().max_by_key(|b| b.pinned_at) {
        None => Err(CompareError::Invalid(format!(
            "no baseline is pinned for {address}: pin one with `benchstack results baseline set {address}`"
        ))),
        Some(b) => Err(CompareError::Invalid(format!(
            "{address}'s baseline (runs {}) was measured in another environment, so the new runs cannot be compared with it: {} (baseline vs now). Pin a baseline in this environment with `benchstack results baseline set {address}`.",
            b.runs
                .iter()
                .map(|r| format!("#{r}"))
                .collect::<Vec<_>>()
                .join(", "),
            b.fingerprint.differences(fingerprint).join("; ")
        ))),
    }
}

/// Compares `new` runs with the `baseline` runs by `compare`'s verdict.
pub fn compare_runs(
    address: &Address,
    baseline: &[RunRecord],
    new: &[RunRecord],
    min_effect: f64,
) -> Result<Comparison, CompareError> {
    let mut measurements = Vec::new();
    let mut figures = |runs: &[RunRecord], side: Side| -> Result<Vec<_>, CompareError> {
        let mut out = Vec::new();
        for (i, r) in runs.iter().enumerate() {
            let report: RunReport = serde_json::from_value(r.report.clone()).map_err(|e| {
                CompareError::Invalid(format!("run #{}'s report does not read: {e}", r.id))
            })?;
            let m = run_figures(&report);
            measurements.push(RoundRecord {
                round: i,
                side,
                figures: m.figures.clone(),
                invalid: m.invalid.clone(),
                run_id: Some(r.id),
            });
            if m.invalid.is_none() {
                out.push(m.figures);
            }
        }
        Ok(out)
    };
    let base = figures(baseline, Side::Base)?;
    let cand = figures(new, Side::Candidate)?;
    let metrics = judge_all(&base, &cand, min_effect);
    let verdict = Verdict::overall(metrics.iter().map(|m| m.verdict));
    let ids = |runs: &[RunRecord]| {
        runs.iter()
            .map(|r| format!("#{}", r.id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Ok(Comparison {
        base: format!("baseline runs {}", ids(baseline)),
        candidate: format!("new runs {}", ids(new)),
        loadtest: address.to_string(),
        capacity: false,
        min_effect,
        rounds: base.len().min(cand.len()),
        interleaved: false,
        metrics,
        measurements,
        verdict,
    })
}

/// Runs `loadtest` once more (a targeted `--replace` plan, applied), storing the run; returns
/// its id.
pub fn rerun(
    stack: &Stack,
    loadtest: &Address,
    store: &Store,
    providers: &Providers,
    machine_shapes: &MachineShapes,
    cancel: &AtomicBool,
    on_event: &(dyn Fn(apply::Event) + Sync),
) -> Result<u64, CompareError> {
    let snap = store.snapshot()?;
    let outputs = store.outputs()?;
    let observer = ProviderReader {
        providers,
        state_dir: store.dir(),
    };
    let observe: &dyn LiveReader = &observer;
    let opts = PlanOptions {
        targets: vec![loadtest.clone()],
        replace: vec![loadtest.clone()],
        destroy: false,
        // As apply planned: its serving resource renders the same rollout, so it is left
        // as applied.
        machine_shapes: machine_shapes.clone(),
        ..PlanOptions::default()
    };
    let plan = refresh::plan(Some(stack), &snap, outputs, Some(observe), &opts)
        .map_err(|e| CompareError::Deploy(e.to_string()))?;
    let outcome = apply::execute(
        &plan,
        store,
        providers,
        &ApplyOptions {
            parallelism: 1,
            operation: "gate".into(),
        },
        cancel,
        on_event,
    )
    .map_err(|e| CompareError::Deploy(e.to_string()))?;
    if outcome.interrupted {
        return Err(CompareError::Interrupted);
    }
    if let Some((a, m)) = outcome.failed.first() {
        return Err(CompareError::Deploy(format!("{a}: {m}")));
    }
    outcome
        .runs
        .iter()
        .find(|(a, _)| a == loadtest)
        .map(|(_, id)| *id)
        .ok_or_else(|| CompareError::Measure(format!("{loadtest} did not run")))
}

/// Gates `loadtest`: the runs made since `after` (exclusive), topped up by re-runs to
/// `opts.rounds` valid ones, compared with the pinned baseline of their environment.
#[allow(clippy::too_many_arguments)]
pub fn gate(
    stack: &Stack,
    loadtest: &Address,
    after: u64,
    store: &Store,
    providers: &Providers,
    machine_shapes: &MachineShapes,
    opts: &Options,
    cancel: &AtomicBool,
    on_event: &(dyn Fn(apply::Event) + Sync),
) -> Result<Comparison, CompareError> {
    let new_runs = || -> Result<Vec<RunRecord>, CompareError> {
        Ok(store
            .runs()?
            .into_iter()
            .filter(|r| &r.address == loadtest && r.id > after && r.tune.is_none())
            .collect())
    };
    let mut in_a_row = 0;
    loop {
        let runs = new_runs()?;
        let valid = runs.iter().filter(|r| invalid_reason(r).is_none()).count();
        if valid >= opts.rounds {
            break;
        }
        if let Some(why) = runs.last().and_then(invalid_reason) {
            in_a_row += 1;
            if in_a_row >= super::MAX_INVALID_IN_A_ROW {
                return Err(CompareError::TooManyInvalid(in_a_row, why));
            }
        } else {
            in_a_row = 0;
        }
        rerun(
            stack,
            loadtest,
            store,
            providers,
            machine_shapes,
            cancel,
            on_event,
        )?;
    }
    let runs = new_runs()?;
    let resources = store.resources()?;
    let machine = machine_type(&resources, loadtest);
    let valid: Vec<RunRecord> = runs
        .iter()
        .filter(|r| invalid_reason(r).is_none())
        .cloned()
        .collect();
    let fp = common_fingerprint(&valid, machine)?;
    let baselines = store.baselines()?;
    let baseline = baseline_for(&baselines, loadtest, &fp)?;
    let all = store.runs()?;
    let base_runs: Vec<RunRecord> = baseline
        .runs
        .iter()
        .map(|id| {
            all.iter()
                .find(|r| r.id == *id)
                .cloned()
                .ok_or_else(|| CompareError::Invalid(format!("baseline run #{id} is missing")))
        })
        .collect::<Result<_, _>>()?;
    compare_runs(loadtest, &base_runs, &runs, opts.min_effect)
}
