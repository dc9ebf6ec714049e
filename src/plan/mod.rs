//! Plan: the stack compared with the prior state (and, with refresh, with what is actually
//! running) gives one action per resource instance — create, update, replace, delete, run or
//! no-op — with its reason, attribute diffs and, for serving, the rendered files as unified
//! diffs. Planning has no side effects; refresh only reads.

pub mod render;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::graph::{CycleError, Graph};
use crate::manifest::{self, ModelPaths};
use crate::provider::{Observation, ProviderError, provider_for};
use crate::stack::types::{
    Address, Kind, ModelConfig, ProviderKind, Resource, ResourceConfig, Stack,
};
use crate::state::{Intent, ResourceState, Snapshot};

/// The version of the plan JSON (`--json`) and of plan files.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "create")]
    Create,
    #[serde(rename = "update")]
    Update,
    #[serde(rename = "replace")]
    Replace,
    #[serde(rename = "delete")]
    Delete,
    #[serde(rename = "run")]
    Run,
    #[serde(rename = "no-op")]
    NoOp,
}

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Delete => "delete",
            Action::Run => "run",
            Action::NoOp => "no-op",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttributeDiff {
    /// Dotted path into the configuration (`batching.max_batch_size`, `stages[1].rate`).
    pub path: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDiff {
    pub file: String,
    /// A unified diff (`--- a/FILE`, `+++ b/FILE`, hunks).
    pub diff: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub address: Address,
    pub action: Action,
    pub reason: Option<String>,
    pub provider: String,
    /// The configuration as applied (None when creating).
    pub before: Option<ResourceConfig>,
    /// The configuration to apply (None when deleting).
    pub after: Option<ResourceConfig>,
    pub attributes: Vec<AttributeDiff>,
    pub files: Vec<FileDiff>,
    /// What it depends on (from the stack, or from the state for a delete).
    pub depends_on: Vec<Address>,
    /// Rendered files and flags to apply with (serving).
    pub rendered: BTreeMap<String, String>,
    /// Fingerprint of the configuration to apply.
    pub fingerprint: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub create: usize,
    pub update: usize,
    pub replace: usize,
    pub delete: usize,
    pub run: usize,
    #[serde(rename = "no-op")]
    pub no_op: usize,
}

impl Summary {
    pub fn has_changes(&self) -> bool {
        self.create + self.update + self.replace + self.delete + self.run > 0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub format_version: u32,
    /// The state this plan was made against; applying it to any other is refused.
    pub lineage: String,
    pub serial: u64,
    /// SHA-256 over the stack files' names and contents (empty for destroy).
    pub stack_hash: String,
    pub stack: Option<Stack>,
    pub destroy: bool,
    pub changes: Vec<Change>,
    pub created: u64,
    /// What refresh found worth telling but not worth a change (a cluster DEGRADED).
    #[serde(default)]
    pub warnings: Vec<Warning>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub address: Address,
    pub message: String,
}

impl Plan {
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for c in &self.changes {
            match c.action {
                Action::Create => s.create += 1,
                Action::Update => s.update += 1,
                Action::Replace => s.replace += 1,
                Action::Delete => s.delete += 1,
                Action::Run => s.run += 1,
                Action::NoOp => s.no_op += 1,
            }
        }
        s
    }

    pub fn has_changes(&self) -> bool {
        self.summary().has_changes()
    }

    /// The documented `--json` form (docs/plan-json.md).
    pub fn to_json(&self) -> Value {
        let changes: Vec<Value> = self
            .changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "address": c.address.to_string(),
                    "kind": c.address.kind.as_str(),
                    "provider": c.provider,
                    "action": c.action.as_str(),
                    "reason": c.reason,
                    "before": c.before.as_ref().map(config_json),
                    "after": c.after.as_ref().map(config_json),
                    "attributes": c.attributes,
                    "files": c.files,
                })
            })
            .collect();
        serde_json::json!({
            "format_version": FORMAT_VERSION,
            "lineage": self.lineage,
            "serial": self.serial,
            "stack_hash": self.stack_hash,
            "destroy": self.destroy,
            "changes": changes,
            "warnings": self
                .warnings
                .iter()
                .map(|w| serde_json::json!({"address": w.address.to_string(), "message": w.message}))
                .collect::<Vec<_>>(),
            "summary": self.summary(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Cycle(#[from] CycleError),
    #[error("{address} ({span}): {message}")]
    Resource {
        address: String,
        span: String,
        message: String,
    },
    #[error("--target {0}: no such resource in the stack or the state")]
    UnknownTarget(String),
    #[error("--replace {0}: no such resource in the stack")]
    UnknownReplace(String),
    #[error("reading the stack file {path}: {source}")]
    StackFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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

/// What refresh and recovery need from the providers (read-only).
pub trait Observe {
    fn read(&self, prior: &ResourceState) -> Result<Observation, ProviderError>;
    /// What an unsettled intent completed, if anything (without cleaning anything up). An
    /// error means "could not tell", never "nothing".
    fn recover(
        &self,
        intent: &Intent,
        prior: Option<&ResourceState>,
    ) -> Result<Option<Value>, ProviderError>;
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub targets: Vec<Address>,
    pub replace: Vec<Address>,
    pub destroy: bool,
}

/// Fingerprint of what a resource is applied with: its configuration (in the state's schema
/// form, so library changes do not change it) and rendered files.
pub fn fingerprint(config: &ResourceConfig, rendered: &BTreeMap<String, String>) -> String {
    crate::state::schema::fingerprint(config, rendered)
}

/// SHA-256 over the stack files (names and contents), to detect a stack edited after `plan --out`.
pub fn stack_hash(files: &[PathBuf]) -> Result<String, PlanError> {
    let mut h = Sha256::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|source| PlanError::StackFile {
            path: f.clone(),
            source,
        })?;
        h.update(f.display().to_string().as_bytes());
        h.update([0]);
        h.update(&bytes);
        h.update([0]);
    }
    Ok(hex(&h.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The configuration as plain JSON (no internal tag), for diffs and `--json`.
pub fn config_json(c: &ResourceConfig) -> Value {
    let mut v = serde_json::to_value(c).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        m.remove("kind");
    }
    v
}

/// The cluster provider of every cluster in the stack.
pub fn cluster_providers(stack: &Stack) -> BTreeMap<Address, ProviderKind> {
    stack
        .resources
        .iter()
        .filter_map(|r| match &r.config {
            ResourceConfig::Cluster(c) => Some((r.address.clone(), c.provider)),
            _ => None,
        })
        .collect()
}

/// Renders what a resource is applied with (serving: models.config, batching, flags).
pub fn render_resource(
    r: &Resource,
    stack: &Stack,
    provider: &str,
) -> Result<BTreeMap<String, String>, PlanError> {
    let ResourceConfig::Serving(s) = &r.config else {
        return Ok(BTreeMap::new());
    };
    let models: Vec<ModelConfig> = s
        .models
        .iter()
        .filter_map(|a| {
            stack
                .resources
                .iter()
                .find(|m| &m.address == a)
                .and_then(|m| match &m.config {
                    ResourceConfig::Model(mc) => Some(mc.clone()),
                    _ => None,
                })
        })
        .collect();
    let paths = if provider == "local" {
        ModelPaths::Local
    } else {
        ModelPaths::Image
    };
    let located = |e: manifest::ManifestError| PlanError::Resource {
        address: r.address.to_string(),
        span: r.span.to_string(),
        message: e.to_string(),
    };
    let mut files = manifest::render_serving(s, &models, paths).map_err(located)?;
    if provider == "kubernetes" {
        // The objects themselves, so a reviewer sees exactly what the rollout sends.
        let objects = manifest::k8s::serving_objects(&r.address, s, &models).map_err(located)?;
        files.insert(
            manifest::k8s::KUBERNETES_YAML.to_string(),
            objects.to_yaml().map_err(located)?,
        );
    }
    Ok(files)
}

/// A resource state as it would be had the intent's call completed.
fn adopted(intent: &Intent, observed: Value) -> Option<ResourceState> {
    let config = intent.config.clone()?;
    Some(ResourceState {
        address: intent.address.clone(),
        provider: intent.provider.clone(),
        fingerprint: fingerprint(&config, &intent.rendered),
        config,
        depends_on: intent.depends_on.clone(),
        observed,
        rendered: intent.rendered.clone(),
        upstream: intent.upstream.clone(),
        applied_at: intent.started,
        last_run: None,
    })
}

enum Health {
    Ok,
    Gone(String),
    Drifted(String),
    /// Alive, but changed outside benchstack: the prior config was replaced by what is live.
    Modified(String),
}

/// Makes a plan. `stack` is None for a destroy plan. `observe` is None with `--refresh=false`.
pub fn make(
    stack: Option<&Stack>,
    snap: &Snapshot,
    observe: Option<&dyn Observe>,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let empty = Stack {
        files: vec![],
        resources: vec![],
        outputs: vec![],
    };
    let stack_ref = stack.unwrap_or(&empty);
    let graph = Graph::from_stack(stack_ref)?;
    let clusters = cluster_providers(stack_ref);

    // Priors: the state, with intents an interrupted apply completed adopted.
    let mut priors: BTreeMap<Address, ResourceState> = snap.resources.clone();
    let mut interrupted: BTreeMap<Address, String> = BTreeMap::new();
    for (a, intent) in &snap.intents {
        let recovered = match observe {
            Some(o) => o
                .recover(intent, priors.get(a))
                .map_err(|error| PlanError::Recover {
                    address: a.clone(),
                    operation: intent.operation.clone(),
                    error: Box::new(error),
                })?
                .and_then(|obs| adopted(intent, obs)),
            None => None,
        };
        match recovered {
            Some(r) => {
                priors.insert(a.clone(), r);
            }
            None => {
                interrupted.insert(
                    a.clone(),
                    format!(
                        "an earlier apply was interrupted during its {}",
                        intent.operation
                    ),
                );
            }
        }
    }

    // The set of addresses in scope.
    let in_stack: BTreeSet<Address> = stack_ref
        .resources
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let scope: Option<BTreeSet<Address>> = if opts.targets.is_empty() {
        None
    } else {
        let state_graph = Graph::from_edges(
            priors
                .values()
                .map(|r| (r.address.clone(), r.depends_on.clone())),
        )?;
        let mut set = BTreeSet::new();
        for t in &opts.targets {
            if !in_stack.contains(t) && !priors.contains_key(t) {
                return Err(PlanError::UnknownTarget(t.to_string()));
            }
            set.insert(t.clone());
            if opts.destroy {
                set.extend(state_graph.transitive_dependents(t));
            } else {
                // A target brings what it depends on.
                let mut todo = vec![t.clone()];
                while let Some(a) = todo.pop() {
                    for d in graph.dependencies(&a) {
                        if set.insert(d.clone()) {
                            todo.push(d.clone());
                        }
                    }
                }
            }
        }
        Some(set)
    };
    for r in &opts.replace {
        if !in_stack.contains(r) {
            return Err(PlanError::UnknownReplace(r.to_string()));
        }
    }
    let in_scope = |a: &Address| scope.as_ref().is_none_or(|s| s.contains(a));

    // Refresh.
    let mut health: BTreeMap<Address, Health> = BTreeMap::new();
    let mut warnings: Vec<Warning> = Vec::new();
    if let Some(o) = observe {
        // Clusters first: what runs on a cluster that is gone is gone too, and what runs on
        // one about to be replaced goes with it; neither is read (its API may not answer,
        // and that must not stop the plan).
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
                    return Err(PlanError::Refresh {
                        address: a.clone(),
                        error: Box::new(error),
                    });
                }
            };
            health.insert(a.clone(), h);
        }
    }

    let mut changes: Vec<Change> = Vec::new();
    let mut planned: BTreeMap<Address, (Action, String)> = BTreeMap::new();
    if !opts.destroy {
        let by_addr: BTreeMap<&Address, &Resource> = stack_ref
            .resources
            .iter()
            .map(|r| (&r.address, r))
            .collect();
        for a in graph.topo_order() {
            let Some(r) = by_addr.get(&a) else { continue };
            let provider = provider_for(&r.config, &clusters).to_string();
            let rendered = render_resource(r, stack_ref, &provider)?;
            let fp = fingerprint(&r.config, &rendered);
            if !in_scope(&a) {
                // Out of scope: as recorded (no change), for upstream checks of in-scope ones.
                planned.insert(a.clone(), (Action::NoOp, fp));
                continue;
            }
            let prior = priors.get(&a);
            let gone = match health.get(&a) {
                Some(Health::Gone(reason)) => Some(reason.clone()),
                _ => None,
            };
            let drifted = match health.get(&a) {
                Some(Health::Drifted(reason)) => Some(reason.clone()),
                _ => None,
            };
            let forced = opts.replace.contains(&a);
            let (action, reason) = decide(
                r,
                prior.filter(|_| gone.is_none()),
                &rendered,
                &graph,
                &planned,
                &priors,
                Decide {
                    forced,
                    gone,
                    drifted,
                    interrupted: interrupted.get(&a).cloned(),
                },
            );
            let reason = match (health.get(&a), action) {
                (Some(Health::Modified(what)), Action::Update | Action::Replace) => {
                    Some(match reason {
                        Some(r) => format!("{r} ({what} outside benchstack)"),
                        None => format!("{what} outside benchstack"),
                    })
                }
                _ => reason,
            };
            planned.insert(a.clone(), (action, fp.clone()));
            let before = prior.map(|p| p.config.clone());
            let attributes = match (&before, action) {
                (_, Action::Delete | Action::NoOp) => vec![],
                (Some(b), _) => attribute_diffs(&config_json(b), &config_json(&r.config)),
                (None, _) => attribute_diffs(&Value::Null, &config_json(&r.config)),
            };
            let files = if matches!(action, Action::NoOp) {
                vec![]
            } else {
                file_diffs(prior.map(|p| &p.rendered), &rendered)
            };
            changes.push(Change {
                address: a.clone(),
                action,
                reason,
                provider,
                before,
                after: Some(r.config.clone()),
                attributes,
                files,
                depends_on: r.depends_on.clone(),
                rendered,
                fingerprint: fp,
            });
        }
    }

    // Deletes: what the state holds and the stack does not (everything, for destroy),
    // dependents first.
    let state_graph = Graph::from_edges(
        priors
            .values()
            .map(|r| (r.address.clone(), r.depends_on.clone())),
    )?;
    for a in state_graph.reverse_topo_order() {
        if (opts.destroy || !in_stack.contains(&a)) && in_scope(&a) {
            let p = &priors[&a];
            let reason = if opts.destroy {
                "destroy".to_string()
            } else {
                "no longer in the stack".to_string()
            };
            changes.push(Change {
                address: a.clone(),
                action: Action::Delete,
                reason: Some(reason),
                provider: p.provider.clone(),
                before: Some(p.config.clone()),
                after: None,
                attributes: vec![],
                files: file_diffs(Some(&p.rendered), &BTreeMap::new()),
                depends_on: p.depends_on.clone(),
                rendered: BTreeMap::new(),
                fingerprint: p.fingerprint.clone(),
            });
        }
    }
    // Interrupted intents for resources neither in the stack nor the state still need settling.
    let stack_hash = match stack {
        Some(s) => stack_hash(&s.files)?,
        None => String::new(),
    };
    Ok(Plan {
        format_version: FORMAT_VERSION,
        lineage: snap.lineage.clone(),
        serial: snap.serial,
        stack_hash,
        stack: stack.cloned(),
        destroy: opts.destroy,
        changes,
        created: crate::state::procinfo::now_unix(),
        warnings,
    })
}

struct Decide {
    forced: bool,
    gone: Option<String>,
    drifted: Option<String>,
    interrupted: Option<String>,
}

fn decide(
    r: &Resource,
    prior: Option<&ResourceState>,
    rendered: &BTreeMap<String, String>,
    graph: &Graph,
    planned: &BTreeMap<Address, (Action, String)>,
    priors: &BTreeMap<Address, ResourceState>,
    d: Decide,
) -> (Action, Option<String>) {
    let is_loadtest = r.address.kind == Kind::Loadtest;
    let create = if is_loadtest {
        Action::Run
    } else {
        Action::Create
    };
    let replace = if is_loadtest {
        Action::Run
    } else {
        Action::Replace
    };
    let Some(prior) = prior else {
        let reason = d
            .gone
            .or(d.interrupted)
            .or_else(|| is_loadtest.then(|| "never run".to_string()));
        return (create, reason);
    };
    if d.forced {
        return (replace, Some("requested with --replace".into()));
    }
    if let Some(reason) = d.drifted {
        return (replace, Some(reason));
    }
    let changed = changed_attributes(&config_json(&prior.config), &config_json(&r.config));
    let files_changed: Vec<&String> = rendered
        .iter()
        .filter(|(k, v)| prior.rendered.get(*k) != Some(v))
        .map(|(k, _)| k)
        .chain(prior.rendered.keys().filter(|k| !rendered.contains_key(*k)))
        .collect();
    // A direct dependency that is replaced or re-created takes this one with it.
    let replaced_dep = r.depends_on.iter().find(|dep| {
        matches!(
            planned.get(*dep),
            Some((Action::Replace | Action::Create, _))
        ) && priors.contains_key(*dep)
            && !is_loadtest
            && dep.kind == Kind::Cluster
    });
    match &r.config {
        ResourceConfig::Cluster(_) => {
            const FORCES: &[&str] = &[
                "provider",
                "project",
                "location",
                "machine_type",
                "disk_size_gb",
                "spot",
                "private_nodes",
            ];
            if let Some(f) = changed.iter().find(|c| FORCES.contains(&c.as_str())) {
                (
                    Action::Replace,
                    Some(format!("{f} changed (forces replacement)")),
                )
            } else if !changed.is_empty() {
                (
                    Action::Update,
                    Some(format!("{} changed", changed.join(", "))),
                )
            } else {
                (Action::NoOp, None)
            }
        }
        ResourceConfig::Model(_) | ResourceConfig::Serving(_) => {
            if let Some(dep) = replaced_dep {
                return (Action::Replace, Some(format!("{dep} is replaced")));
            }
            if changed.iter().any(|c| c == "cluster") {
                return (
                    Action::Replace,
                    Some("cluster changed (forces replacement)".into()),
                );
            }
            if !changed.is_empty() || !files_changed.is_empty() {
                let mut what: Vec<String> = changed.clone();
                for f in files_changed {
                    if f != manifest::FLAGS
                        && f != manifest::k8s::KUBERNETES_YAML
                        && !what.iter().any(|w| f.starts_with(w.as_str()))
                    {
                        what.push(f.clone());
                    }
                }
                if what.is_empty() {
                    what.push("flags".into());
                }
                (Action::Update, Some(format!("{} changed", what.join(", "))))
            } else {
                (Action::NoOp, None)
            }
        }
        ResourceConfig::Loadtest(_) => {
            if !changed.is_empty() {
                return (Action::Run, Some(format!("{} changed", changed.join(", "))));
            }
            if let Some(reason) = d.interrupted {
                return (Action::Run, Some(reason));
            }
            // Anything upstream about to change, or changed since the last run.
            let mut upstream: Vec<Address> = Vec::new();
            let mut todo: Vec<&Address> = graph.dependencies(&r.address).collect();
            let mut seen = BTreeSet::new();
            while let Some(a) = todo.pop() {
                if seen.insert(a.clone()) {
                    upstream.push(a.clone());
                    todo.extend(graph.dependencies(a));
                }
            }
            upstream.sort();
            for u in &upstream {
                if let Some((action, _)) = planned.get(u)
                    && *action != Action::NoOp
                {
                    let verb = match action {
                        Action::Create => "will be created",
                        Action::Update => "will be updated",
                        Action::Replace => "will be replaced",
                        _ => "changes",
                    };
                    return (Action::Run, Some(format!("{u} {verb}")));
                }
            }
            for u in &upstream {
                let now = planned.get(u).map(|(_, fp)| fp);
                if now != prior.upstream.get(&u.to_string()) {
                    return (Action::Run, Some(format!("{u} changed since the last run")));
                }
            }
            (Action::NoOp, None)
        }
    }
}

/// The top-level attribute names that differ.
fn changed_attributes(before: &Value, after: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| k.to_string())
        .collect()
}

/// Leaf-level differences, with dotted paths.
pub fn attribute_diffs(before: &Value, after: &Value) -> Vec<AttributeDiff> {
    let mut b = BTreeMap::new();
    let mut a = BTreeMap::new();
    flatten("", before, &mut b);
    flatten("", after, &mut a);
    let keys: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .map(|k| AttributeDiff {
            path: k.clone(),
            before: b.get(k).cloned(),
            after: a.get(k).cloned(),
        })
        .collect()
}

fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::Null if prefix.is_empty() => {}
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Unified diffs of the rendered files that differ.
pub fn file_diffs(
    before: Option<&BTreeMap<String, String>>,
    after: &BTreeMap<String, String>,
) -> Vec<FileDiff> {
    let empty = BTreeMap::new();
    let before = before.unwrap_or(&empty);
    let names: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let old = before.get(name).map(String::as_str).unwrap_or("");
            let new = after.get(name).map(String::as_str).unwrap_or("");
            if old == new {
                return None;
            }
            let diff = similar::TextDiff::from_lines(old, new)
                .unified_diff()
                .context_radius(3)
                .header(
                    &if before.contains_key(name) {
                        format!("a/{name}")
                    } else {
                        "/dev/null".into()
                    },
                    &if after.contains_key(name) {
                        format!("b/{name}")
                    } else {
                        "/dev/null".into()
                    },
                )
                .to_string();
            Some(FileDiff {
                file: name.clone(),
                diff,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
