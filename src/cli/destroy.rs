//! `benchstack destroy [STACK]`: stop and forget everything in the state, dependents first.
//! Takes the same stack and variables as `apply`, as Terraform's destroy does: the stack is
//! loaded and checked (an error stops it before anything is touched), `--target` may name
//! its resources, and what is destroyed is what the state holds.

use std::path::{Path, PathBuf};

use miette::miette;

use super::apply::{confirm, execute_and_finish, print_event};
use super::plan::{PlanFlags, make_plan, open_store};
use crate::apply;
use crate::plan;
use crate::provider::Providers;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The stack file or directory `apply` was given (optional: without it, the state alone
    /// says what to destroy).
    pub path: Option<PathBuf>,
    /// Set a variable: NAME=VALUE; repeatable (as for `apply`).
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a file; repeatable (as for `apply`).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// Destroy without asking.
    #[arg(long)]
    pub auto_approve: bool,
    /// Only these resources and what depends on them; repeatable.
    #[arg(long = "target", value_name = "ADDR")]
    pub targets: Vec<String>,
    /// Check what is actually running first (`--refresh=false` trusts the state, e.g. while
    /// an API cannot be read).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub refresh: bool,
    /// How many resources to delete at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallelism: u32,
}

pub fn run(state_dir: &Path, args: Args) -> miette::Result<super::Outcome> {
    let flags = PlanFlags {
        targets: args.targets.clone(),
        replace: vec![],
        refresh: args.refresh,
        vars: args.vars.clone(),
        var_files: args.var_files.clone(),
    };
    super::plan::parse_addresses("target", &flags.targets)?;
    // Loaded before the state is opened: a stack with an error changes nothing.
    let stack = match &args.path {
        Some(path) => Some(super::plan::load_stack(path, &flags)?),
        None => {
            if !flags.vars.is_empty() || !flags.var_files.is_empty() {
                return Err(miette!(
                    "--var and --var-file need the stack they belong to: benchstack destroy STACK --var …"
                ));
            }
            None
        }
    };
    let providers = Providers::new(state_dir);
    let store = open_store(state_dir, "destroy")?;
    apply::recover(&store, &providers, &print_event).map_err(|e| miette!("{e}"))?;
    let plan = make_plan(stack.as_ref(), &store, &providers, &flags, true)?;
    if !plan.has_changes() {
        println!("Nothing to destroy: the state is empty.");
        return Ok(super::Outcome::Success);
    }
    print!("{}", plan::render::text(&plan));
    super::plan::print_warnings(&plan);
    if !args.auto_approve && !confirm("Destroy all of these?", "destroy")? {
        println!("Destroy cancelled.");
        return Ok(super::Outcome::Failed);
    }
    execute_and_finish(&plan, &store, &providers, args.parallelism, "destroy")
}
