//! The search space: a trial's settings (knob → value), how they are keyed and shown, the
//! declared configuration's own settings, a trial's serving configuration, and the grid.

use std::collections::BTreeMap;

use crate::stack::tune::{Knob, TuneConfig};
use crate::vocab::resources::{FlagValue, ServingConfig};

/// A trial's settings: serving attribute → value (None: not set, the server's default).
/// Ordered by the knob's dotted form, which is also how settings are keyed and shown.
pub type Settings = BTreeMap<Knob, Option<FlagValue>>;

pub fn settings_key(s: &Settings) -> String {
    s.iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{}={v}", k.key()),
            None => format!("{}=default", k.key()),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `batching.max_batch_size=32, batching.num_batch_threads=2`.
pub fn settings_text(s: &Settings) -> String {
    s.iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{}={v}", k.key()),
            None => format!("{}=(default)", k.key()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn settings_json(s: &Settings) -> BTreeMap<String, serde_json::Value> {
    s.iter()
        .map(|(k, v)| {
            (
                k.key(),
                v.as_ref()
                    .and_then(|v| serde_json::to_value(v).ok())
                    .unwrap_or(serde_json::Value::Null),
            )
        })
        .collect()
}

/// The declared configuration's values of the space's knobs.
pub fn baseline_settings(cfg: &TuneConfig, declared: &ServingConfig) -> Settings {
    cfg.space
        .iter()
        .map(|d| (d.knob.clone(), d.knob.get(declared)))
        .collect()
}

/// The serving configuration of a trial: the declared one with the settings applied.
pub fn trial_serving(declared: &ServingConfig, settings: &Settings) -> ServingConfig {
    let mut s = declared.clone();
    for (knob, v) in settings {
        if let Some(v) = v {
            knob.set(&mut s, v);
        }
    }
    s
}

/// Every combination of the space, in an order that changes as little of the running
/// deployment as possible between consecutive trials: each trial differs from the one before
/// in exactly one setting (the inner dimensions run forward and back, a reflected Gray code),
/// and `replicas` varies innermost, since a replica count alone changes no pod template (on
/// GKE the Deployment scales without a rollout) while every other setting restarts servers.
/// Otherwise the space's first dimension is outermost.
pub fn grid(cfg: &TuneConfig) -> Vec<Settings> {
    let mut dims: Vec<&crate::stack::tune::Dimension> = cfg.space.iter().collect();
    // Stable: the user's order stays among the restarting settings.
    dims.sort_by_key(|d| matches!(d.knob, Knob::Replicas));
    let mut out: Vec<Settings> = vec![Settings::new()];
    for d in dims {
        let mut next = Vec::with_capacity(out.len() * d.values.len());
        for (i, s) in out.iter().enumerate() {
            // Every other pass runs this dimension backwards, so the boundary between two
            // outer combinations keeps its value.
            let values: Vec<&FlagValue> = if i % 2 == 0 {
                d.values.iter().collect()
            } else {
                d.values.iter().rev().collect()
            };
            for v in values {
                let mut s = s.clone();
                s.insert(d.knob.clone(), Some(v.clone()));
                next.push(s);
            }
        }
        out = next;
    }
    out
}
