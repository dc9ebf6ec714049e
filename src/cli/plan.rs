//! `benchstack plan`: what apply would change, as text, `--json` or a plan file (`--out`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, miette};

use super::common::{Format, emit_markdown};
use crate::plan::cost::{PlanCost, PriceBook};
use crate::plan::{self, Plan};
use crate::provider::Providers;
use crate::state::{self, Store};

use crate::ops::{
    PlanFlags, Planning, check_providers, load_stack_priced, make_plan, open_view, parse_addresses,
    plan_from,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stack file, or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Save the plan to FILE, for `benchstack apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the plan as JSON (docs/plan-json.md); the same as `--format json`.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// text (default), json, or markdown for a pull request (docs/ci.md); markdown is also
    /// appended to `$GITHUB_STEP_SUMMARY` when that is set.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Take the state lock (`--lock=false` plans from the snapshot the last write published,
    /// so it answers while an apply runs; a plan file made so is refused by apply if the
    /// state moved on).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub lock: bool,
    /// Before planning is done, ask Google whether applying would fail for a reason already
    /// visible (docs/gke.md, "Preflight"): the APIs are enabled, the machine types exist in
    /// the location, the CPU quotas cover the clusters the plan creates, the images exist.
    /// Only for stacks with gke clusters; `--preflight=false` plans offline.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub preflight: bool,
    #[command(flatten)]
    pub flags: PlanFlags,
}

/// Opens the state for `operation`, noting a lock taken over from a dead holder.
pub fn open_store(dir: &Path, operation: &str) -> miette::Result<Store> {
    let store = Store::open(dir, operation, &crate::ops::storage()).map_err(|e| miette!("{e}"))?;
    if let Some(old) = &store.lock().took_over {
        eprintln!("note: took over the lock left by {old}, which is no longer running");
    }
    Ok(store)
}

/// What refresh found worth telling but not worth a change, on stderr (after the plan, so a
/// `--json` stdout stays one document).
pub fn print_warnings(plan: &Plan) {
    for w in &plan.warnings {
        eprintln!("Warning: {}: {}", w.address, w.message);
    }
}

pub fn run(state: &crate::ops::StateArg, args: Args) -> miette::Result<super::Outcome> {
    parse_addresses("target", &args.flags.targets)?;
    parse_addresses("replace", &args.flags.replace)?;
    let (stack, prices) = load_stack_priced(&args.path, &args.flags)?;
    let state_dir = &state.for_stack(&stack)?;
    // The composition root: where Google's APIs are, read from the environment once.
    let apis = crate::provider::gcp::Apis::from_env();
    let providers = Providers::new(state_dir, &apis);
    check_providers(&stack, &providers)?;
    let store = if args.lock {
        Some(open_store(state_dir, "plan")?)
    } else {
        None
    };
    let make = |planning: &Planning| -> miette::Result<Plan> {
        if let Some(store) = &store {
            return make_plan(Some(&stack), store, &providers, &args.flags, planning);
        }
        let (snap, outputs) = match open_view(state_dir)? {
            Some(view) => (view.snapshot().map_err(|e| miette!("{e}"))?, view.outputs()),
            None => (state::Snapshot::default(), BTreeMap::new()),
        };
        plan_from(
            Some(&stack),
            &snap,
            outputs,
            state_dir,
            &providers,
            &args.flags,
            planning,
        )
    };
    let mut plan = make(&Planning::default())?;
    let mut shapes = crate::manifest::capacity::MachineShapes::default();
    if args.preflight {
        let checked = crate::ops::preflight(&stack, Some(&plan), &apis);
        if !crate::cli::common::print_preflight(&checked, "`benchstack plan --preflight=false`") {
            return Ok(super::Outcome::Failed);
        }
        // Compute Engine described a machine type the built-in table does not know (or
        // knows otherwise): plan again, so the capacity check and the rollout use its shape.
        if checked.reshaped() {
            plan = make(&Planning {
                machine_shapes: checked.machine_shapes.clone(),
                ..Planning::default()
            })?;
        }
        shapes = checked.machine_shapes.clone();
    }
    let cost = plan_cost(&plan, &prices, &shapes);
    let format = Format::of(args.format, args.json);
    match format {
        Format::Json => {
            let mut json = plan.to_json();
            json["cost"] = cost
                .as_ref()
                .map_or(serde_json::Value::Null, PlanCost::to_json);
            println!("{}", serde_json::to_string_pretty(&json).into_diagnostic()?);
        }
        Format::Markdown => {
            let doc = crate::report::documents::plan_document(
                &plan,
                &stack_name(&args.path),
                cost.as_ref(),
            );
            emit_markdown(&doc.render(crate::report::markdown::GITHUB_LIMIT))?;
        }
        Format::Text => {
            print!("{}", plan::render::text(&plan));
            if let Some(c) = &cost {
                println!("\nCost: {}.", c.line());
            }
        }
    }
    print_warnings(&plan);
    if let Some(out) = &args.out {
        let bytes = serde_json::to_vec_pretty(&plan).into_diagnostic()?;
        // 0600: a plan file embeds the stack and the state's lineage.
        crate::state::private::write_private(out, &bytes)
            .map_err(|e| miette!("--out {}: cannot write the plan file: {e}", out.display()))?;
        if format == Format::Text {
            println!(
                "\nSaved the plan to {}. Apply exactly this plan with `benchstack apply {}`.",
                out.display(),
                out.display()
            );
        }
    }
    Ok(if args.detailed_exitcode && plan.has_changes() {
        super::Outcome::ChangesPending
    } else {
        super::Outcome::Success
    })
}

/// The stack's clusters priced before and after: the stack's `hourly_price`, else the dated
/// list price of a gke cluster's machine type in its region (its shape as Compute Engine
/// described it in the preflight, `shapes`, else the built-in one), plus GKE's management fee.
pub fn plan_cost(
    plan: &Plan,
    prices: &std::collections::BTreeMap<crate::vocab::resources::Address, f64>,
    shapes: &crate::manifest::capacity::MachineShapes,
) -> Option<PlanCost> {
    use crate::manifest::prices;
    let list = |c: &crate::vocab::resources::ClusterConfig| {
        let machine = c.machine_type.as_deref().unwrap_or_default();
        let location = c.location.as_deref().unwrap_or_default();
        prices::cluster_node_price(machine, location, c.spot, shapes)
            .map(|p| (p.per_hour, p.basis))
            .map_err(|e| e.to_string())
    };
    plan::cost::estimate(
        plan,
        &PriceBook {
            overrides: prices,
            list_price: &list,
            gke_fee: Some((prices::GKE_MANAGEMENT_FEE, prices::GKE_FEE_SOURCE)),
        },
    )
}

/// The stack as the command line named it, for the markdown's marker (`stacks/local.hcl`).
pub fn stack_name(path: &Path) -> String {
    let s = path.display().to_string();
    s.strip_prefix("./").map(str::to_string).unwrap_or(s)
}
