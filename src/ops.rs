//! Operations the commands share (cargo's `ops` pattern): reading the flags plan, apply and
//! destroy have in common, loading a stack with its variables, checking its providers,
//! opening the state, and planning with refresh. Commands call these and print; nothing here
//! prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::miette;

use crate::plan::{Plan, PlanOptions};
use crate::provider::{Observer, Providers, cluster_providers, provider_for};
use crate::refresh;
use crate::state::{self, Store};
use crate::vocab::resources::{Address, Stack};

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
            .provider(name)
            .map_err(|e| miette!("{} ({}): {e}", r.address, r.span))?;
    }
    Ok(())
}

/// The state as last published, read without the lock (None: nothing applied yet).
pub fn open_view(dir: &Path) -> miette::Result<Option<state::View>> {
    state::View::open(dir).map_err(|e| miette!("{e}"))
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
    let observe: Option<&dyn crate::provider::Observe> =
        if flags.refresh { Some(&observer) } else { None };
    refresh::plan(stack, snap, outputs, observe, &opts).map_err(|e| miette!("{e}"))
}
