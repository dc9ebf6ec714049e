//! `benchstack state list | show ADDR | rm ADDR | history | pull | migrate --to TARGET |
//! unlock [ID] [--force]`.

use std::path::Path;

use miette::{IntoDiagnostic, miette};

use super::plan::open_store;
use crate::ops::open_view;
use crate::state::{self, Store, View, lock, procinfo};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every resource in the state.
    List,
    /// One resource as recorded: configuration, what the provider observed, rendered files.
    Show { address: String },
    /// Forget a resource without stopping it (it keeps running; benchstack no longer manages it).
    Rm { address: String },
    /// The history of operations: who, when, what, result.
    History,
    /// Print the state as JSON (the published snapshot, docs/state.md), read without the lock.
    Pull,
    /// Copy the state (lineage, serial, history, every run) to another directory or to
    /// gs://BUCKET/PREFIX; refuses a target that holds a different state. The source is left
    /// as it was. Without --state it copies this directory's own state and then binds the
    /// directory to the target (a directory target unbinds it), as after a changed backend
    /// block.
    Migrate {
        /// The target: a directory or gs://BUCKET/PREFIX.
        #[arg(long)]
        to: std::path::PathBuf,
    },
    /// Free the lock left by a benchstack that died; --force frees a live holder's lock too.
    /// On a GCS state: `unlock ID` breaks exactly the lock with that id (its generation, as
    /// shown by the refusal), after confirmation (--force skips it).
    Unlock {
        /// The lock id (GCS states only).
        id: Option<i64>,
        #[arg(long)]
        force: bool,
    },
}

fn require_state(dir: &Path) -> miette::Result<()> {
    if Store::exists(dir, &crate::ops::storage()) {
        Ok(())
    } else {
        Err(miette!(
            "no state in {}: nothing has been applied yet",
            crate::state::describe(dir)
        ))
    }
}

/// The published snapshot (list, show and history read it, so they answer during an apply).
fn require_view(dir: &Path) -> miette::Result<View> {
    open_view(dir)?.ok_or_else(|| {
        miette!(
            "no state in {}: nothing has been applied yet",
            crate::state::describe(dir)
        )
    })
}

/// Breaks the GCS lock with generation `id` (only that one: if it was released or taken again
/// since, nothing changes).
fn unlock_remote(state_dir: &Path, id: Option<i64>, force: bool) -> miette::Result<super::Outcome> {
    use state::gcs;
    let Some(address) = gcs::binding(state_dir) else {
        return Err(miette!("not a GCS state"));
    };
    let g = gcs::connect_bound(state_dir, &crate::ops::storage())
        .ok_or_else(|| miette!("not a GCS state"))?
        .map_err(|e| miette!("{e}"))?;
    let lock = match gcs::read_lock(&g) {
        // An unreadable lock is replaced only when its id is named (and still current).
        Err(gcs::GcsError::CorruptLock { generation, .. }) if id == Some(generation) => {
            if !force && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Err(miette!(
                    "refusing to break the lock without confirmation: there is no terminal to ask on; pass --force"
                ));
            }
            if !force
                && !super::common::confirm(
                    "Break this unreadable lock? A holder still working would have its next write refused.",
                    "break the lock",
                )?
            {
                println!("Unlock cancelled.");
                return Ok(super::Outcome::Success);
            }
            gcs::break_lock(&g, generation).map_err(|e| miette!("{e}"))?;
            println!("Broke the unreadable lock {generation} on {address}.");
            return Ok(super::Outcome::Success);
        }
        other => other.map_err(|e| miette!("{e}"))?,
    };
    let Some((record, current)) = lock.filter(|(r, _)| r.is_held()) else {
        println!("The state at {address} is not locked.");
        return Ok(super::Outcome::Success);
    };
    let now = procinfo::now_unix();
    let lease = if record.is_stale(now) {
        format!(
            "its lease expired at {} (stale)",
            procinfo::rfc3339(record.lease_until)
        )
    } else {
        format!(
            "its lease runs until {}: the holder may still be working",
            procinfo::rfc3339(record.lease_until)
        )
    };
    let Some(id) = id else {
        return Err(miette!(
            "the state at {address} is locked by {} (lock id {current}); {lease}\n  to break it: `benchstack state unlock {current}`",
            record.holder()
        ));
    };
    println!(
        "Lock {id} on {address}: held by {}; {lease}.",
        record.holder()
    );
    if !force && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(miette!(
            "refusing to break the lock without confirmation: there is no terminal to ask on; pass --force"
        ));
    }
    if !force
        && !super::common::confirm(
            "Break this lock? A holder still working would have its next write refused.",
            "break the lock",
        )?
    {
        println!("Unlock cancelled.");
        return Ok(super::Outcome::Success);
    }
    match gcs::break_lock(&g, id).map_err(|e| miette!("{e}"))? {
        Some(broken) => println!("Broke lock {id} of {}.", broken.holder()),
        None => println!("Broke the unreadable lock {id} on {address}."),
    }
    Ok(super::Outcome::Success)
}

/// After `state migrate` of this directory's own state: a GCS target becomes the directory's
/// binding; a directory target unbinds it (the default `./state` then applies).
fn rebind(target: &Path, to: &Path) -> miette::Result<()> {
    let cwd = std::env::current_dir().into_diagnostic()?;
    match state::gcs::binding(target) {
        Some(address) => {
            let kms = state::workdir::read(&cwd)
                .ok()
                .flatten()
                .and_then(|d| d.kms_key_name);
            state::workdir::write(
                &cwd,
                &state::workdir::DirBinding {
                    gcs: address.clone(),
                    kms_key_name: kms,
                    bound_by: "`benchstack state migrate`".into(),
                },
            )
            .map_err(|e| miette!("{e}"))?;
            println!(
                "This directory now uses {address} ({}); its stack's backend block should name it.",
                state::workdir::FILE
            );
        }
        None => {
            let was = state::workdir::read(&cwd).ok().flatten();
            state::workdir::remove(&cwd).map_err(|e| miette!("{e}"))?;
            let default = Path::new(crate::ops::DEFAULT_STATE_DIR);
            let same = to.canonicalize().ok() == default.canonicalize().ok();
            match (was, same) {
                (Some(d), true) => println!(
                    "This directory no longer uses {}: its state is ./{} again; remove the stack's backend block.",
                    d.gcs,
                    crate::ops::DEFAULT_STATE_DIR
                ),
                (Some(d), false) => println!(
                    "This directory no longer uses {}; use --state {} from now on, and remove the stack's backend block.",
                    d.gcs,
                    to.display()
                ),
                (None, true) => {}
                (None, false) => println!("Use --state {} from now on.", to.display()),
            }
        }
    }
    Ok(())
}

/// `named`: the state came from `--state`/`BENCHSTACK_STATE`, not from this directory (so
/// `migrate` leaves the directory's binding alone).
pub fn run(state_dir: &Path, named: bool, args: Args) -> miette::Result<super::Outcome> {
    match args.command {
        Command::Unlock { id, force } if state::gcs::binding(state_dir).is_some() => {
            return unlock_remote(state_dir, id, force);
        }
        Command::Unlock { id: Some(_), .. } => {
            return Err(miette!(
                "a lock id is for a state on GCS; the state in {} is a local directory: run `benchstack state unlock`",
                crate::state::describe(state_dir)
            ));
        }
        Command::Unlock { id: None, force } => {
            match lock::unlock(state_dir, force).map_err(|e| miette!("{e}"))? {
                lock::Unlocked::NotLocked => {
                    println!(
                        "The state in {} is not locked.",
                        crate::state::describe(state_dir)
                    )
                }
                lock::Unlocked::RemovedStale(h) => {
                    println!("Removed the lock of {h}, which is no longer running.")
                }
                lock::Unlocked::RemovedLive(h) => println!(
                    "Removed the lock of {h}. That process still runs: two writers may now corrupt the state."
                ),
            }
            if Store::exists(state_dir, &crate::ops::storage()) {
                let store = open_store(state_dir, "state unlock")?;
                let mut e = state::history_entry("state unlock", None, None);
                e.result = if force { "forced".into() } else { "ok".into() };
                store.record_history(e).map_err(|e| miette!("{e}"))?;
            }
        }
        Command::Pull => {
            let view = require_view(state_dir)?;
            println!(
                "{}",
                serde_json::to_string_pretty(view.published()).into_diagnostic()?
            );
        }
        Command::Migrate { to } => {
            require_state(state_dir)?;
            let mut target = state::resolve(&to).map_err(|e| miette!("--to: {e}"))?;
            // The key of this directory's backend (if any) encrypts the copy too.
            if let (Some(address), Some(kms)) = (
                state::gcs::binding(&target),
                state::workdir::read(&std::env::current_dir().into_diagnostic()?)
                    .ok()
                    .flatten()
                    .and_then(|d| d.kms_key_name),
            ) {
                target =
                    state::gcs::bind(&address, Some(&kms)).map_err(|e| miette!("--to: {e}"))?;
            }
            let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => a == b,
            };
            if same(state_dir, &target) {
                return Err(miette!(
                    "--to names the state being migrated ({})",
                    state::describe(state_dir)
                ));
            }
            let source = open_store(state_dir, "state migrate")?;
            let dest = open_store(&target, "state migrate")?;
            dest.copy_from(&source).map_err(|e| miette!("{e}"))?;
            let meta = dest.meta().map_err(|e| miette!("{e}"))?;
            let runs = dest.runs().map_err(|e| miette!("{e}"))?.len();
            let history = dest.history().map_err(|e| miette!("{e}"))?.len();
            println!(
                "Copied the state (lineage {}, serial {}, {runs} runs, {history} history entries) from {} to {}. The source is unchanged.",
                meta.lineage,
                meta.serial,
                state::describe(state_dir),
                state::describe(&target),
            );
            drop(dest);
            drop(source);
            if named {
                println!("Use --state {} from now on.", to.display());
            } else {
                // The directory's own state moved: bind the directory to where it went, as
                // `terraform init -migrate-state` does, so every command here follows it.
                rebind(&target, &to)?;
            }
        }
        Command::List => {
            let view = require_view(state_dir)?;
            for r in view.resources().map_err(|e| miette!("{e}"))? {
                let observed =
                    state::observed::Observed::from_json(&r.provider, r.address.kind, &r.observed)
                        .ok();
                let endpoint = observed
                    .as_ref()
                    .and_then(|o| o.serving_endpoints())
                    .and_then(|(rest, _)| rest.first().cloned());
                let detail = match endpoint {
                    Some(ep) => {
                        let pids: Vec<String> = observed
                            .as_ref()
                            .map(|o| o.local_pids())
                            .unwrap_or_default()
                            .iter()
                            .map(|p| p.to_string())
                            .collect();
                        if pids.is_empty() {
                            ep
                        } else {
                            format!("{ep} (pids {})", pids.join(", "))
                        }
                    }
                    None => r
                        .last_run
                        .map(|id| format!("last run #{id}"))
                        .unwrap_or_default(),
                };
                println!(
                    "{:<32} {:<6} {}  {}",
                    r.address.to_string(),
                    r.provider,
                    procinfo::rfc3339(r.applied_at),
                    detail
                );
            }
            for i in view.intents().map_err(|e| miette!("{e}"))? {
                println!(
                    "{:<32} (unsettled {} from an interrupted apply; the next plan continues it)",
                    i.address.to_string(),
                    i.operation
                );
            }
        }
        Command::Show { address } => {
            let a = state::parse_address(&address).map_err(|e| miette!("{e}"))?;
            let view = require_view(state_dir)?;
            let r = view
                .resource(&a)
                .map_err(|e| miette!("{e}"))?
                .ok_or_else(|| miette!("no resource `{a}` in the state"))?;
            // The record as stored (docs/state.md).
            let record =
                state::records::ResourceRecord::from_state(&r).map_err(|e| miette!("{e}"))?;
            println!(
                "{}",
                serde_json::to_string_pretty(&record).into_diagnostic()?
            );
        }
        Command::Rm { address } => {
            require_state(state_dir)?;
            let a = state::parse_address(&address).map_err(|e| miette!("{e}"))?;
            let store = open_store(state_dir, "state rm")?;
            if store.resource(&a).map_err(|e| miette!("{e}"))?.is_none() {
                return Err(miette!("no resource `{a}` in the state"));
            }
            store.remove_resource(&a).map_err(|e| miette!("{e}"))?;
            let mut e = state::history_entry("state rm", Some(&a), None);
            e.result = "ok".into();
            store.record_history(e).map_err(|e| miette!("{e}"))?;
            println!("Removed {a} from the state. Anything it runs keeps running, unmanaged.");
        }
        Command::History => {
            let view = require_view(state_dir)?;
            for h in view.history() {
                println!(
                    "{:>4}  {}  {}@{}  {:<13} {:<28} {:<8} {}",
                    h.id,
                    procinfo::rfc3339(h.started),
                    h.user,
                    h.host,
                    h.operation,
                    h.address.unwrap_or_default(),
                    h.action.unwrap_or_default(),
                    h.result
                );
            }
        }
    }
    Ok(super::Outcome::Success)
}
