//! `benchstack destroy [STACK]`: stop and forget everything in the state, dependents first.
//! Takes the same stack and variables as `apply`, as Terraform's destroy does: the stack is
//! loaded and checked (an error stops it before anything is touched), `--target` may name
//! its resources, and what is destroyed is what the state holds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use miette::miette;

use super::apply::{destroy_command, execute_and_finish, print_event};
use super::common::{cancel_on_signals, confirm};
use super::plan::open_store;
use super::progress;
use crate::apply;
use crate::ops::{PlanFlags, load_stack, make_plan, parse_addresses};
use crate::plan;
use crate::provider::{Context, Providers, gke};
use crate::state::Store;
use crate::vocab::resources::{Address, ProviderKind, ResourceConfig, Stack};

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

pub fn run(state: &crate::ops::StateArg, args: Args) -> miette::Result<super::Outcome> {
    let flags = PlanFlags {
        targets: args.targets.clone(),
        replace: vec![],
        refresh: args.refresh,
        vars: args.vars.clone(),
        var_files: args.var_files.clone(),
    };
    let targets = parse_addresses("target", &flags.targets)?;
    // Loaded before the state is opened: a stack with an error changes nothing.
    let stack = match &args.path {
        Some(path) => Some(load_stack(path, &flags)?),
        None => {
            if !flags.vars.is_empty() || !flags.var_files.is_empty() {
                return Err(miette!(
                    "--var and --var-file need the stack they belong to: benchstack destroy STACK --var …"
                ));
            }
            None
        }
    };
    let state_dir = &match &stack {
        Some(stack) => state.for_stack(stack)?,
        None => state.without_stack()?,
    };
    // The composition root: where Google's APIs are, read from the environment once.
    let apis = crate::provider::gcp::Apis::from_env();
    let providers = Providers::new(state_dir, &apis);
    let store = open_store(state_dir, "destroy")?;
    apply::recover(&store, &providers, &print_event).map_err(|e| miette!("{e}"))?;
    let plan = make_plan(
        stack.as_ref(),
        &store,
        &providers,
        &flags,
        &crate::ops::Planning::destroy(),
    )?;
    if !plan.has_changes() {
        let empty = store.resources().map_err(|e| miette!("{e}"))?.is_empty();
        if let (true, Some(stack)) = (empty, &stack) {
            return destroy_unrecorded(stack, &targets, &store, &apis, args.auto_approve);
        }
        println!("Nothing to destroy: the state is empty.");
        if stack.is_none() {
            println!(
                "(To look for GKE clusters benchstack made that no state records, give the stack: benchstack destroy STACK [--var …].)"
            );
        }
        return Ok(super::Outcome::Success);
    }
    print!("{}", plan::render::text(&plan));
    super::plan::print_warnings(&plan);
    if !args.auto_approve && !confirm("Destroy all of these?", "destroy")? {
        println!("Destroy cancelled.");
        return Ok(super::Outcome::Failed);
    }
    let remove = destroy_command(state_dir, args.path.as_deref(), &args.vars, &args.var_files);
    execute_and_finish(
        &plan,
        &store,
        &providers,
        args.parallelism,
        "destroy",
        &remove,
    )
}

/// An empty state with a stack: the state may have been lost, or be in another directory,
/// while its clusters still run. Looks for clusters labelled `managed-by=benchstack` in the
/// project and location of each of the stack's GKE clusters and offers to delete those
/// that bear a name of the stack's clusters; others are listed with the command that
/// deletes them, and left alone.
fn destroy_unrecorded(
    stack: &Stack,
    targets: &[Address],
    store: &Store,
    apis: &crate::provider::gcp::Apis,
    auto_approve: bool,
) -> miette::Result<super::Outcome> {
    // The registry's providers know resources; finding unrecorded clusters is the GKE
    // provider's own question (the same `Apis` as the registered one).
    let gke = gke::GkeProvider::new(apis);
    let mut places: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    // `--target` narrows it to the clusters named (a target that is no cluster names none).
    for r in stack
        .resources
        .iter()
        .filter(|r| targets.is_empty() || targets.contains(&r.address))
    {
        if let ResourceConfig::Cluster(c) = &r.config
            && c.provider == ProviderKind::Gke
            && let (Some(p), Some(l)) = (&c.project, &c.location)
        {
            places
                .entry((p.clone(), l.clone()))
                .or_default()
                .insert(gke::cluster_name(&r.address));
        }
    }
    if places.is_empty() {
        println!("Nothing to destroy: the state is empty.");
        return Ok(super::Outcome::Success);
    }
    let cancel = cancel_on_signals();
    let mut ours: Vec<gke::ManagedCluster> = Vec::new();
    let mut others: Vec<gke::ManagedCluster> = Vec::new();
    for ((project, location), names) in &places {
        let found = gke.find_managed(project, location, &cancel).map_err(|e| {
            miette!("the state is empty, and looking for clusters benchstack made failed: {e}")
        })?;
        for m in found {
            if names.contains(&m.cluster.name) {
                ours.push(m);
            } else {
                others.push(m);
            }
        }
    }
    let lineage = store.meta().map(|m| m.lineage).unwrap_or_default();
    let describe = |m: &gke::ManagedCluster| {
        let whose = match &m.lineage {
            Some(l) if *l == lineage => " (made by this state)".to_string(),
            Some(l) => format!(" (made by state lineage {l})"),
            None => String::new(),
        };
        format!(
            "{}: {}, {} × {}, project {}, location {}{whose}",
            m.cluster.name,
            m.status,
            m.node_count,
            m.machine_type,
            m.cluster.project,
            m.cluster.location
        )
    };
    if !others.is_empty() {
        println!(
            "Clusters labelled managed-by=benchstack that are not in this stack (left alone):"
        );
        for m in &others {
            println!("  {}", describe(m));
            println!(
                "    delete with: gcloud container clusters delete {} --project {} --location {}",
                m.cluster.name, m.cluster.project, m.cluster.location
            );
        }
    }
    if ours.is_empty() {
        let where_: Vec<String> = places
            .keys()
            .map(|(p, l)| format!("project {p}, location {l}"))
            .collect();
        println!(
            "Nothing to destroy: the state is empty, and no cluster of this stack labelled managed-by=benchstack runs in {}.",
            where_.join("; ")
        );
        return Ok(super::Outcome::Success);
    }
    println!(
        "The state is empty, but these clusters of this stack, made by benchstack, are running:"
    );
    for m in &ours {
        println!("  {}", describe(m));
    }
    println!(
        "Deleting a cluster deletes what runs on it; a LoadBalancer Service's forwarding rule can outlive it: check `gcloud compute forwarding-rules list --project PROJECT` afterwards."
    );
    if !auto_approve && !confirm("Delete these clusters?", "destroy")? {
        println!("Destroy cancelled.");
        return Ok(super::Outcome::Failed);
    }
    let note = |_v: serde_json::Value| Ok(());
    let mut failed = 0;
    for m in &ours {
        let label = format!("cluster {}", m.cluster.name);
        let show = |msg: String| progress::resource(&label, &msg);
        let ctx = Context {
            state_dir: store.dir(),
            note: &note,
            progress: &show,
            cancel: &cancel,
        };
        let result = gke.delete_unrecorded(&ctx, &m.cluster);
        progress::end_line();
        match result {
            Ok(()) => println!("{label}: deleted"),
            Err(e) => {
                failed += 1;
                println!("{label}: FAILED: {e}");
            }
        }
    }
    if failed > 0 {
        println!(
            "\nDestroy failed: {failed} of {} not deleted.",
            clusters(ours.len())
        );
        return Ok(super::Outcome::Failed);
    }
    println!("\nDestroy complete: {} deleted.", clusters(ours.len()));
    Ok(super::Outcome::Success)
}

/// `1 cluster`, `2 clusters`.
fn clusters(n: usize) -> String {
    if n == 1 {
        "1 cluster".into()
    } else {
        format!("{n} clusters")
    }
}
