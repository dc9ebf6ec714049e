//! `benchstack destroy`: stop and forget everything in the state, dependents first.

use std::path::Path;
use std::process::ExitCode;

use miette::miette;

use super::apply::{confirm, execute_and_finish, print_event};
use super::plan::{PlanFlags, make_plan, open_store};
use crate::apply;
use crate::plan;
use crate::provider::Providers;

#[derive(Debug, clap::Args)]
pub struct Args {
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

pub fn run(state_dir: &Path, args: Args) -> miette::Result<ExitCode> {
    let flags = PlanFlags {
        targets: args.targets.clone(),
        replace: vec![],
        refresh: args.refresh,
        vars: vec![],
        var_files: vec![],
    };
    super::plan::parse_addresses("target", &flags.targets)?;
    let providers = Providers::new(state_dir);
    let store = open_store(state_dir, "destroy")?;
    apply::recover(&store, &providers, &print_event).map_err(|e| miette!("{e}"))?;
    let plan = make_plan(None, &store, &providers, &flags, true)?;
    if !plan.has_changes() {
        println!("Nothing to destroy: the state is empty.");
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", plan::render::text(&plan));
    super::plan::print_warnings(&plan);
    if !args.auto_approve && !confirm("Destroy all of these?", "destroy")? {
        println!("Destroy cancelled.");
        return Ok(ExitCode::from(1));
    }
    execute_and_finish(&plan, &store, &providers, args.parallelism, "destroy")
}
