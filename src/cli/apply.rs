//! `benchstack apply [STACK | PLANFILE]`: make the running resources match the stack, in
//! dependency order, and run the load tests; prints a progress line per resource.

use std::path::{Path, PathBuf};

use miette::miette;

use super::common::{cancel_on_signals, confirm};
use super::plan::open_store;
use crate::apply::{self, ApplyOptions, Event, Outcome, StepResult};
use crate::ops::{
    PlanFlags, Planning, check_providers, load_stack_priced, make_plan, parse_addresses,
};
use crate::plan::{self, Action, Plan};
use crate::provider::Providers;
use crate::state::Store;

#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 applied and every load test met its SLOs, 1 an error (nothing or only part applied), 2 applied and stored but a load test missed an SLO, 130 interrupted (the state is saved). With --gate: 3 worse than the pinned baseline, 4 inconclusive."
)]
pub struct Args {
    /// A stack file, a directory of *.hcl files, or a plan file from `plan --out`.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Apply without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// How many resources to change at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallelism: u32,
    /// Before applying a stack with gke clusters, run plan's preflight (docs/gke.md,
    /// "Preflight"): a disabled API, a missing machine type or image, a CPU quota too small
    /// stops the apply before anything is created. `--preflight=false` skips it; a plan
    /// file is applied as it was checked.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub preflight: bool,
    /// After applying, compare the runs of every load test that has a pinned baseline
    /// (`benchstack results baseline set`) with it, by `compare`'s verdict (docs/compare.md);
    /// the load test is run again until there are --gate-rounds valid new runs.
    #[arg(long)]
    pub gate: bool,
    /// How many valid new runs the gate compares with the baseline.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=100), requires = "gate")]
    pub gate_rounds: u32,
    /// The smallest change the gate counts as better or worse, in percent.
    #[arg(long, default_value = "5%", value_parser = super::compare::parse_percent, requires = "gate")]
    pub min_effect: f64,
    #[command(flatten)]
    pub flags: PlanFlags,
}

/// A plan file is JSON with `format_version` and `lineage`; anything else is a stack.
fn read_plan_file(path: &Path) -> Option<miette::Result<Plan>> {
    if !path.is_file() {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("lineage")?;
    v.get("format_version")?;
    Some(serde_json::from_value(v).map_err(|e| {
        miette!(
            "{}: not a plan file this benchstack can read: {e}",
            path.display()
        )
    }))
}

fn past(a: Action) -> &'static str {
    match a {
        Action::Create => "created",
        Action::Update => "updated",
        Action::Replace => "replaced",
        Action::Delete => "deleted",
        Action::Run => "ran",
        Action::NoOp => "unchanged",
    }
}

fn doing(a: Action) -> &'static str {
    match a {
        Action::Create => "creating",
        Action::Update => "updating",
        Action::Replace => "replacing",
        Action::Delete => "deleting",
        Action::Run => "running",
        Action::NoOp => "checking",
    }
}

/// Prints apply's events, one line each (and a run's stage table); progress through the
/// shared renderer.
pub fn print_event(e: Event) {
    if !matches!(e, Event::Progress { .. }) {
        super::progress::end_line();
    }
    match e {
        Event::Recovered { address, adopted } => {
            if adopted {
                println!("{address}: recorded what an interrupted apply had started");
            } else {
                println!("{address}: cleaned up after an interrupted apply");
            }
        }
        Event::RecoveryFailed { address, message } => {
            eprintln!(
                "{address}: could not check what an interrupted apply left ({message}); its record is kept"
            );
        }
        Event::Started { address, action } => println!("{address}: {}…", doing(action)),
        Event::Progress { address, message } => {
            super::progress::resource(&address.to_string(), &message)
        }
        Event::Skipped { address, because } => {
            println!("{address}: skipped ({because} failed)")
        }
        Event::Finished {
            address,
            action,
            elapsed,
            result,
        } => {
            let secs = elapsed.as_secs_f64();
            match result {
                StepResult::Done => println!("{address}: {} ({secs:.1}s)", past(action)),
                StepResult::Failed(msg) => println!("{address}: FAILED after {secs:.1}s: {msg}"),
                StepResult::Ran {
                    run_id,
                    slos_met,
                    invalid,
                    report,
                } => {
                    println!(
                        "{address}: ran as run #{run_id} ({secs:.1}s){}",
                        match (&invalid, slos_met) {
                            (Some(why), _) => format!(" — INVALID, no SLO verdict: {why}"),
                            (None, true) => String::new(),
                            (None, false) => " — SLO NOT MET".to_string(),
                        }
                    );
                    if let Ok(r) = serde_json::from_value::<crate::loadgen::RunReport>(report) {
                        println!("{}", crate::report::stage_table(&r));
                    }
                }
            }
        }
    }
}

/// The command that removes what this stack made: `benchstack [--state DIR] destroy [STACK]
/// [--var …] [--var-file …]`, quoted for a POSIX shell where needed.
pub fn destroy_command(
    state_dir: &Path,
    stack: Option<&Path>,
    vars: &[String],
    var_files: &[PathBuf],
) -> String {
    let quote = |s: &str| -> String {
        if !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:@,+".contains(c))
        {
            s.to_string()
        } else {
            format!("'{}'", s.replace('\'', "'\\''"))
        }
    };
    let mut cmd = String::from("benchstack");
    // A GCS state is named by its gs:// address, which works from any directory.
    let state = crate::state::describe(state_dir);
    if state != "state" {
        cmd.push_str(&format!(" --state {}", quote(&state)));
    }
    cmd.push_str(" destroy");
    if let Some(p) = stack {
        cmd.push_str(&format!(" {}", quote(&p.display().to_string())));
    }
    for v in vars {
        cmd.push_str(&format!(" --var {}", quote(v)));
    }
    for f in var_files {
        cmd.push_str(&format!(" --var-file {}", quote(&f.display().to_string())));
    }
    cmd
}

/// After a failed or interrupted apply (or destroy): what the state says is still running on
/// Google Cloud, and billing, and the command that removes it.
fn print_still_running(store: &Store, remove: &str) {
    let (Ok(resources), Ok(intents)) = (store.resources(), store.intents()) else {
        return;
    };
    let lines = crate::provider::gke::billing_lines(&resources, &intents);
    if lines.is_empty() {
        return;
    }
    println!("\nStill running on Google Cloud (and billing):");
    for l in &lines {
        println!("  {l}");
    }
    println!("Remove them with: {remove}");
}

/// Prints the outcome; returns the exit code (0 ok, 1 failure, 2 applied but an SLO was
/// missed, 130 interrupted). `remove` is the command that removes what the state holds.
pub fn finish(
    outcome: &Outcome,
    plan: &Plan,
    store: &Store,
    verb: &str,
    remove: &str,
) -> miette::Result<super::Outcome> {
    let s = plan.summary();
    for (a, msg) in &outcome.failed {
        println!("Error: {a}: {msg}");
    }
    if !outcome.skipped.is_empty() {
        println!("Skipped because a dependency failed:");
        for (a, because) in &outcome.skipped {
            println!("  {a} (needs {because})");
        }
    }
    for (a, id) in &outcome.slo_failures {
        println!(
            "{a}: run #{id} did not meet its SLO (results stored; see `benchstack results --run {id}`)"
        );
    }
    for (a, id, why) in &outcome.invalid_runs {
        println!(
            "{a}: run #{id} is INVALID and gives no SLO verdict: {why} (results stored; see `benchstack results --run {id}`)"
        );
    }
    if outcome.interrupted {
        println!("Interrupted: the state is saved.");
        if !outcome.not_started.is_empty() {
            let names: Vec<String> = outcome.not_started.iter().map(|a| a.to_string()).collect();
            println!("Not started: {}", names.join(", "));
        }
        print_still_running(store, remove);
        return Ok(super::Outcome::Interrupted);
    }
    if outcome.failed.is_empty() && outcome.skipped.is_empty() {
        println!(
            "\n{verb} complete: {} created, {} updated, {} replaced, {} deleted, {} run.",
            s.create, s.update, s.replace, s.delete, s.run
        );
        if !outcome.slo_failures.is_empty() {
            let missed: Vec<String> = outcome
                .slo_failures
                .iter()
                .map(|(a, id)| format!("{a} (run #{id})"))
                .collect();
            println!(
                "SLO missed: {} of {} load tests: {}.",
                outcome.slo_failures.len(),
                outcome.runs.len(),
                missed.join(", ")
            );
        }
    } else {
        println!(
            "\n{verb} failed: {} of {} changes done.",
            outcome.done.len(),
            s.create + s.update + s.replace + s.delete + s.run
        );
        print_still_running(store, remove);
    }
    let outputs = store.outputs().map_err(|e| miette!("{e}"))?;
    if !outputs.is_empty() && !plan.destroy {
        println!("\nOutputs:");
        for (k, v) in outputs {
            println!("  {k} = {v}");
        }
    }
    // 1 for anything that did not get done, including a run that measured nothing a verdict
    // may use (invalid: neither "met" nor "missed"); 2 when everything was applied and
    // stored but a load test missed an SLO (like `loadtest`), so scripts can tell them apart.
    Ok(
        if !outcome.failed.is_empty()
            || !outcome.skipped.is_empty()
            || !outcome.invalid_runs.is_empty()
        {
            super::Outcome::Failed
        } else if !outcome.slo_failures.is_empty() {
            super::Outcome::SloMissed
        } else {
            super::Outcome::Success
        },
    )
}

pub fn run(state: &crate::ops::StateArg, args: Args) -> miette::Result<super::Outcome> {
    let from_file = read_plan_file(&args.path).transpose()?;
    let mut prices = std::collections::BTreeMap::new();
    let stack = match &from_file {
        Some(_) => None,
        None => {
            parse_addresses("target", &args.flags.targets)?;
            parse_addresses("replace", &args.flags.replace)?;
            let (stack, declared) = load_stack_priced(&args.path, &args.flags)?;
            prices = declared;
            Some(stack)
        }
    };
    // A plan file is applied to the state of this directory (its lineage is checked).
    let state_dir = &match &stack {
        Some(stack) => state.for_stack(stack)?,
        None => state.without_stack()?,
    };
    // The composition root: where Google's APIs are, read from the environment once.
    let apis = crate::provider::gcp::Apis::from_env();
    let providers = Providers::new(state_dir, &apis);
    if let Some(stack) = &stack {
        check_providers(stack, &providers)?;
    }
    let store = open_store(state_dir, "apply")?;
    let gated = match (&stack, args.gate) {
        (_, false) => Vec::new(),
        (None, true) => {
            return Err(miette!(
                "--gate needs the stack (it runs the load tests again), not a plan file"
            ));
        }
        (Some(stack), true) => gated_loadtests(stack, &store)?,
    };
    let after = store
        .runs()
        .map_err(|e| miette!("{e}"))?
        .iter()
        .map(|r| r.id)
        .max()
        .unwrap_or(0);
    // The machine shapes the preflight read: the gate's re-runs plan with them too (a plan
    // made without them would render another rollout and update the serving resource).
    let mut machine_shapes = crate::plan::MachineShapes::default();
    let plan = match from_file {
        Some(plan) => {
            apply::check_fresh(&plan, &store)
                .map_err(|e| miette!("{}: {e}", args.path.display()))?;
            apply::recover(&store, &providers, &print_event).map_err(|e| miette!("{e}"))?;
            plan
        }
        None => {
            apply::recover(&store, &providers, &print_event).map_err(|e| miette!("{e}"))?;
            let mut plan = make_plan(
                stack.as_ref(),
                &store,
                &providers,
                &args.flags,
                &Planning::default(),
            )?;
            // With --gate the load tests run again even when nothing else changes.
            let mut shapes = crate::manifest::capacity::MachineShapes::default();
            if let Some(stack) = stack
                .as_ref()
                .filter(|_| args.preflight && (plan.has_changes() || args.gate))
            {
                let checked = crate::ops::preflight(stack, Some(&plan), &apis);
                if !super::common::print_preflight(&checked, "`--preflight=false`") {
                    return Ok(super::Outcome::Failed);
                }
                machine_shapes = checked.machine_shapes.clone();
                // Compute Engine's shapes for the capacity check and the rollout (see plan).
                if checked.reshaped() {
                    let planning = Planning {
                        machine_shapes: checked.machine_shapes.clone(),
                        ..Planning::default()
                    };
                    plan = make_plan(Some(stack), &store, &providers, &args.flags, &planning)?;
                }
                shapes = checked.machine_shapes.clone();
            }
            print!("{}", plan::render::text(&plan));
            if let Some(c) =
                super::plan::plan_cost(&plan, &prices, &shapes).filter(|_| plan.has_changes())
            {
                println!("\nCost: {}.", c.line());
            }
            super::plan::print_warnings(&plan);
            if plan.has_changes()
                && !args.auto_approve
                && !confirm("Apply these changes?", "apply")?
            {
                println!("Apply cancelled.");
                return Ok(super::Outcome::Failed);
            }
            plan
        }
    };
    let remove = destroy_command(
        state_dir,
        stack.as_ref().map(|_| args.path.as_path()),
        &args.flags.vars,
        &args.flags.var_files,
    );
    // `enable_apis = true`: the APIs first, or the first create would be refused.
    crate::ops::enable_apis(&plan, &apis, &|line| println!("APIs: {line}"))
        .map_err(|e| miette!("{e}"))?;
    let outcome = execute_and_finish(
        &plan,
        &store,
        &providers,
        args.parallelism,
        "apply",
        &remove,
    )?;
    match (&stack, outcome) {
        (Some(stack), super::Outcome::Success | super::Outcome::SloMissed) if args.gate => Ok(
            match run_gate(
                stack,
                &gated,
                after,
                &store,
                &providers,
                &machine_shapes,
                &args,
            )? {
                None => super::Outcome::Interrupted,
                Some(crate::compare::Verdict::Better | crate::compare::Verdict::Same) => outcome,
                Some(v) => super::compare::outcome(v),
            },
        ),
        _ => Ok(outcome),
    }
}

/// The stack's load tests that have a baseline pinned; an error when none has one.
fn gated_loadtests(
    stack: &crate::vocab::resources::Stack,
    store: &Store,
) -> miette::Result<Vec<crate::vocab::resources::Address>> {
    let baselines = store.baselines().map_err(|e| miette!("{e}"))?;
    let loadtests: Vec<_> = stack
        .resources
        .iter()
        .filter(|r| r.address.kind == crate::vocab::resources::Kind::Loadtest)
        .map(|r| r.address.clone())
        .collect();
    let gated: Vec<_> = loadtests
        .iter()
        .filter(|a| baselines.iter().any(|b| &b.address == *a))
        .cloned()
        .collect();
    if gated.is_empty() {
        return Err(miette!(
            "--gate: none of the stack's load tests ({}) has a pinned baseline; pin one with `benchstack results baseline set ADDRESS`",
            loadtests
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(gated)
}

/// Runs the gate for each load test and prints its comparison; returns the overall verdict
/// (None when interrupted).
fn run_gate(
    stack: &crate::vocab::resources::Stack,
    gated: &[crate::vocab::resources::Address],
    after: u64,
    store: &Store,
    providers: &Providers,
    machine_shapes: &crate::plan::MachineShapes,
    args: &Args,
) -> miette::Result<Option<crate::compare::Verdict>> {
    let cancel = cancel_on_signals();
    let mut verdicts = Vec::new();
    for loadtest in gated {
        println!("\nGate: {loadtest} against its pinned baseline…");
        let c = match crate::compare::gate::gate(
            stack,
            loadtest,
            after,
            store,
            providers,
            machine_shapes,
            &crate::compare::Options {
                rounds: args.gate_rounds as usize,
                max_rounds: args.gate_rounds as usize,
                min_effect: args.min_effect,
            },
            &cancel,
            &print_event,
        ) {
            Ok(c) => c,
            Err(crate::compare::CompareError::Interrupted) => {
                println!("Interrupted: the runs so far are stored.");
                return Ok(None);
            }
            Err(e) => return Err(miette!("--gate: {e}")),
        };
        print!("{}", crate::compare::render(&c));
        verdicts.push(c.verdict);
    }
    Ok(Some(crate::compare::Verdict::overall(verdicts)))
}

/// Executes an approved plan (Ctrl-C stops new work) and prints the outcome; shared by apply
/// and destroy. `operation` is recorded in the history and capitalised in the summary.
pub fn execute_and_finish(
    plan: &Plan,
    store: &Store,
    providers: &Providers,
    parallelism: u32,
    operation: &str,
    remove: &str,
) -> miette::Result<super::Outcome> {
    let cancel = cancel_on_signals();
    let outcome = apply::execute(
        plan,
        store,
        providers,
        &ApplyOptions {
            parallelism: parallelism as usize,
            operation: operation.into(),
        },
        &cancel,
        &print_event,
    )
    .map_err(|e| miette!("{e}"))?;
    let mut verb = operation.to_string();
    if let Some(first) = verb.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    finish(&outcome, plan, store, &verb, remove)
}
