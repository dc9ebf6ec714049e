//! Refresh: before planning, read what is actually running through the providers and settle
//! what an interrupted apply left, producing the plain data `plan` starts from
//! ([`plan::Prior`]). Read-only: nothing is created, changed or cleaned up here.
//!
//! This is the only place planning meets the providers: `plan` itself never calls one.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::plan::{self, Health, Plan, PlanError, PlanOptions, Prior, Warning};
use crate::provider::{LiveReader, Observation, ProviderError, providers_for};
use crate::state::{ResourceState, Snapshot};
use crate::vocab::resources::{Address, Kind, Stack};

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A refresh that failed stops the plan: a resource that could not be read is never
    /// planned as a replacement (or anything else).
    #[error(
        "{address}: refresh failed: {error}\nNothing was planned or changed. Try again when the API answers, or plan from the recorded state without reading it: --refresh=false"
    )]
    Refresh {
        address: Address,
        #[source]
        error: Box<ProviderError>,
    },
    /// What an interrupted apply left could not be checked: its record is kept.
    #[error(
        "{address}: an earlier apply was interrupted during its {operation}, and checking what it left failed: {error}\nThe record is kept and nothing was planned or changed; try again when the API answers"
    )]
    Recover {
        address: Address,
        operation: String,
        #[source]
        error: Box<ProviderError>,
    },
}

/// The state as planning should see it: intents an interrupted apply completed adopted, and
/// every in-scope resource read through `observe` (clusters first). Without `observe`
/// (`--refresh=false`) the state as recorded.
pub fn refresh(
    stack: Option<&Stack>,
    snap: &Snapshot,
    observe: Option<&dyn LiveReader>,
    opts: &PlanOptions,
) -> Result<Prior, RefreshError> {
    let Some(o) = observe else {
        return Ok(Prior::unrefreshed(snap));
    };

    // Priors: the state, with intents an interrupted apply completed adopted.
    let mut priors: BTreeMap<Address, ResourceState> = snap.resources.clone();
    let mut interrupted: BTreeMap<Address, String> = BTreeMap::new();
    for (a, intent) in &snap.intents {
        let recovered = o
            .recover(intent, priors.get(a))
            .map_err(|error| RefreshError::Recover {
                address: a.clone(),
                operation: intent.operation.clone(),
                error: Box::new(error),
            })?
            .and_then(|obs| plan::adopted(intent, obs));
        match recovered {
            Some(r) => {
                priors.insert(a.clone(), r);
            }
            None => {
                interrupted.insert(a.clone(), plan::interrupted_reason(intent));
            }
        }
    }

    let scope = plan::scope(stack, &priors, opts)?;
    let in_scope = |a: &Address| scope.as_ref().is_none_or(|s| s.contains(a));
    let mut health: BTreeMap<Address, Health> = BTreeMap::new();
    let mut warnings: Vec<Warning> = Vec::new();
    // Clusters first: what runs on a cluster that is gone is gone too, and what runs on one
    // about to be replaced goes with it; neither is read (its API may not answer, and that
    // must not stop the plan).
    let mut order: Vec<Address> = priors.keys().cloned().collect();
    order.sort_by_key(|a| a.kind != Kind::Cluster);
    for a in order {
        if !in_scope(&a) {
            continue;
        }
        let Some(prior) = priors.get_mut(&a) else {
            continue;
        };
        let on_cluster = prior.depends_on.iter().find_map(|d| match health.get(d) {
            Some(Health::Gone(_)) if d.kind == Kind::Cluster => Some((d.clone(), true)),
            Some(Health::Drifted(_)) if d.kind == Kind::Cluster => Some((d.clone(), false)),
            _ => None,
        });
        match on_cluster {
            Some((c, true)) => {
                health.insert(a.clone(), Health::Gone(format!("{c} no longer exists")));
                continue;
            }
            Some((_, false)) => continue,
            None => {}
        }
        let h = match o.read(prior) {
            Ok(Observation::Present(obs)) => {
                prior.observed = obs;
                Health::Ok
            }
            Ok(Observation::Gone(reason)) => Health::Gone(reason),
            Ok(Observation::Drifted(reason)) => Health::Drifted(reason),
            Ok(Observation::Unsettled { observed, warning }) => {
                prior.observed = observed;
                warnings.push(Warning {
                    address: a.clone(),
                    message: warning,
                });
                Health::Ok
            }
            Ok(Observation::Modified {
                observed,
                config,
                what,
            }) => {
                prior.observed = observed;
                prior.config = *config;
                Health::Modified(what)
            }
            Err(error) => {
                return Err(RefreshError::Refresh {
                    address: a.clone(),
                    error: Box::new(error),
                });
            }
        };
        health.insert(a.clone(), h);
    }
    Ok(Prior {
        lineage: snap.lineage.clone(),
        serial: snap.serial,
        resources: priors,
        interrupted,
        health,
        warnings,
        outputs: BTreeMap::new(),
    })
}

/// Refresh, then plan: what `plan`, `apply` and `destroy` run. `outputs` are the outputs the
/// state records (shown as changes to outputs).
pub fn plan(
    stack: Option<&Stack>,
    snap: &Snapshot,
    outputs: BTreeMap<String, Value>,
    observe: Option<&dyn LiveReader>,
    opts: &PlanOptions,
) -> Result<Plan, RefreshError> {
    let mut prior = refresh(stack, snap, observe, opts)?;
    prior.outputs = outputs;
    let providers = match stack {
        Some(s) => providers_for(s),
        None => BTreeMap::new(),
    };
    Ok(plan::make(stack, &providers, prior, opts)?)
}

#[cfg(test)]
mod tests;
