//! `benchstack plan`: what apply would change, as text, `--json` or a plan file (`--out`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::{IntoDiagnostic, miette};

use crate::plan::{self, Plan, PlanOptions};
use crate::provider::{Observer, Providers, cluster_providers, provider_for};
use crate::refresh;
use crate::vocab::resources::{Address, Stack};
use crate::state::{self, Store};

/// Flags shared by plan and apply.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanFlags {
    /// Only these resources (and what they depend on); repeatable.
    #[arg(long = "target", value_name = "ADDR")]
    pub targets: Vec<String>,
    /// Replace (or re-run) this resource even if unchanged; repeatable.
    #[arg(long = "replace", value_name = "ADDR")]
    pub replace: Vec<String>,
    /// Check what is actually running before planning (`--refresh=false` trusts the state).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub refresh: bool,
    /// Set a variable: NAME=VALUE; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a file; repeatable.
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stack file, or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Save the plan to FILE, for `benchstack apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print the plan as JSON (docs/plan-json.md).
    #[arg(long)]
    pub json: bool,
    /// Exit 0 when there are no changes, 2 when there are, 1 on error.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Take the state lock (`--lock=false` plans from the snapshot the last write published,
    /// so it answers while an apply runs; a plan file made so is refused by apply if the
    /// state moved on).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub lock: bool,
    #[command(flatten)]
    pub flags: PlanFlags,
}

pub fn parse_addresses(flag: &str, values: &[String]) -> miette::Result<Vec<Address>> {
    values
        .iter()
        .map(|v| state::parse_address(v).map_err(|e| miette!("--{flag}: {e}")))
        .collect()
}

/// Loads the stack; a bad stack is reported with file, line and column.
pub fn load_stack(path: &Path, flags: &PlanFlags) -> miette::Result<Stack> {
    let mut vars = Vec::new();
    for v in &flags.vars {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| miette!("--var `{v}`: expected NAME=VALUE"))?;
        vars.push((k.trim().to_string(), val.to_string()));
    }
    let inputs = crate::stack::VarInputs {
        vars,
        var_files: flags.var_files.clone(),
    };
    crate::stack::load(path, &inputs).map_err(miette::Report::new)
}

/// Every resource's provider must exist in this build (checked before anything is touched).
pub fn check_providers(stack: &Stack, providers: &Providers) -> miette::Result<()> {
    let clusters = cluster_providers(stack);
    for r in &stack.resources {
        let name = provider_for(&r.config, &clusters);
        providers
            .get(name)
            .map_err(|e| miette!("{} ({}): {e}", r.address, r.span))?;
    }
    Ok(())
}

/// The state as last published, read without the lock (None: nothing applied yet).
pub fn open_view(dir: &Path) -> miette::Result<Option<state::View>> {
    state::View::open(dir).map_err(|e| miette!("{e}"))
}

/// Opens the state for `operation`, noting a lock taken over from a dead holder.
pub fn open_store(dir: &Path, operation: &str) -> miette::Result<Store> {
    let store = Store::open(dir, operation).map_err(|e| miette!("{e}"))?;
    if let Some(old) = &store.lock().took_over {
        eprintln!("note: took over the lock left by {old}, which is no longer running");
    }
    Ok(store)
}

pub fn make_plan(
    stack: Option<&Stack>,
    store: &Store,
    providers: &Providers,
    flags: &PlanFlags,
    destroy: bool,
) -> miette::Result<Plan> {
    let snap = store.snapshot().map_err(|e| miette!("{e}"))?;
    let outputs = store.outputs().map_err(|e| miette!("{e}"))?;
    plan_from(
        stack,
        &snap,
        outputs,
        store.dir(),
        providers,
        flags,
        destroy,
    )
}

/// Plans against `snap` (the locked store's, or a published snapshot's).
pub fn plan_from(
    stack: Option<&Stack>,
    snap: &state::Snapshot,
    outputs: BTreeMap<String, serde_json::Value>,
    state_dir: &Path,
    providers: &Providers,
    flags: &PlanFlags,
    destroy: bool,
) -> miette::Result<Plan> {
    let opts = PlanOptions {
        targets: parse_addresses("target", &flags.targets)?,
        replace: parse_addresses("replace", &flags.replace)?,
        destroy,
    };
    let observer = Observer {
        providers,
        state_dir,
    };
    let observe: Option<&dyn crate::provider::Observe> = if flags.refresh { Some(&observer) } else { None };
    refresh::plan(stack, snap, outputs, observe, &opts).map_err(|e| miette!("{e}"))
}

/// What refresh found worth telling but not worth a change, on stderr (after the plan, so a
/// `--json` stdout stays one document).
pub fn print_warnings(plan: &Plan) {
    for w in &plan.warnings {
        eprintln!("Warning: {}: {}", w.address, w.message);
    }
}

pub fn run(state_dir: &Path, args: Args) -> miette::Result<super::Outcome> {
    parse_addresses("target", &args.flags.targets)?;
    parse_addresses("replace", &args.flags.replace)?;
    let stack = load_stack(&args.path, &args.flags)?;
    let providers = Providers::new(state_dir);
    check_providers(&stack, &providers)?;
    let plan = if args.lock {
        let store = open_store(state_dir, "plan")?;
        make_plan(Some(&stack), &store, &providers, &args.flags, false)?
    } else {
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
            false,
        )?
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json()).into_diagnostic()?
        );
    } else {
        print!("{}", plan::render::text(&plan));
    }
    print_warnings(&plan);
    if let Some(out) = &args.out {
        let bytes = serde_json::to_vec_pretty(&plan).into_diagnostic()?;
        // 0600: a plan file embeds the stack and the state's lineage.
        crate::state::private::write_private(out, &bytes)
            .map_err(|e| miette!("--out {}: cannot write the plan file: {e}", out.display()))?;
        if !args.json {
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
