//! `benchstack results baseline set|list|unset`: runs of a load test pinned as its baseline,
//! per environment, for `apply --gate` (`crate::compare::gate`).

use std::path::Path;

use miette::miette;

use super::plan::open_store;
use crate::compare::gate;
use crate::state::{self, BaselineRecord, procinfo};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Pinned baselines: set, list, unset.
    #[command(subcommand)]
    Baseline(Action),
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Pin runs of a load test as its baseline in their environment (replacing that
    /// environment's earlier one). Without RUN: the latest run and the earlier valid runs of
    /// the same configuration, at most 9. Runs whose load generator was the bottleneck are
    /// refused. Pin at least 5 runs: with fewer the gate cannot say better or worse.
    Set {
        /// The load test (e.g. loadtest.baseline).
        address: String,
        /// Run ids (see `benchstack results`).
        runs: Vec<u64>,
    },
    /// The pinned baselines.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Unpin a load test's baselines (every environment's).
    Unset { address: String },
}

fn describe(b: &BaselineRecord) -> String {
    let f = &b.fingerprint;
    let mut env = format!(
        "{} × {}, machine type {}",
        f.cpus,
        f.cpu_model,
        f.machine_type.as_deref().unwrap_or("none (local)")
    );
    for (role, image) in &f.images {
        env.push_str(&format!(", {role} {image}"));
    }
    format!(
        "{}: runs {} (pinned {}; {env})",
        b.address,
        b.runs
            .iter()
            .map(|r| format!("#{r}"))
            .collect::<Vec<_>>()
            .join(", "),
        procinfo::rfc3339(b.pinned_at)
    )
}

pub fn run(state_dir: &Path, command: Command) -> miette::Result<super::Outcome> {
    let Command::Baseline(action) = command;
    match action {
        Action::List { json } => {
            let Some(view) = crate::ops::open_view(state_dir)? else {
                return Err(miette!(
                    "no state in {}: nothing has been applied yet",
                    state::describe(state_dir)
                ));
            };
            let all = view.baselines();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(all).map_err(|e| miette!("{e}"))?
                );
            } else if all.is_empty() {
                println!("No baselines pinned.");
            } else {
                for b in all {
                    println!("{}", describe(b));
                }
            }
            Ok(super::Outcome::Success)
        }
        Action::Set { address, runs } => {
            let address = state::parse_address(&address).map_err(|e| miette!("{e}"))?;
            let store = open_store(state_dir, "baseline set")?;
            let all = store.runs().map_err(|e| miette!("{e}"))?;
            let chosen = gate::choose_runs(&all, &address, &runs).map_err(|e| miette!("{e}"))?;
            let resources = store.resources().map_err(|e| miette!("{e}"))?;
            let fingerprint =
                gate::common_fingerprint(&chosen, gate::machine_type(&resources, &address))
                    .map_err(|e| miette!("{e}"))?;
            let record = BaselineRecord {
                address,
                fingerprint,
                runs: chosen.iter().map(|r| r.id).collect(),
                pinned_at: procinfo::now_unix(),
            };
            store.set_baseline(&record).map_err(|e| miette!("{e}"))?;
            println!("Pinned {}", describe(&record));
            if record.runs.len() < 5 {
                eprintln!(
                    "warning: {} run(s) pinned; with fewer than 5 the gate can never say better or worse (run the load test again with `benchstack apply --replace {}`, then pin again)",
                    record.runs.len(),
                    record.address
                );
            }
            Ok(super::Outcome::Success)
        }
        Action::Unset { address } => {
            let address = state::parse_address(&address).map_err(|e| miette!("{e}"))?;
            let store = open_store(state_dir, "baseline unset")?;
            let n = store.unset_baseline(&address).map_err(|e| miette!("{e}"))?;
            if n == 0 {
                return Err(miette!("no baseline is pinned for {address}"));
            }
            println!("Unpinned {n} baseline(s) of {address}.");
            Ok(super::Outcome::Success)
        }
    }
}
