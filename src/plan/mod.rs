//! Plan: the stack compared with the prior state (and, with refresh, with what is actually
//! running) gives one action per resource instance — create, update, replace, delete, run or
//! no-op — with its reason, attribute diffs and, for serving, the rendered files as unified
//! diffs. Planning has no side effects; refresh only reads.

pub mod cost;
pub mod render;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::graph::{CycleError, Graph};
pub use crate::manifest::capacity::MachineShapes;
use crate::manifest::{self, ModelPaths};
use crate::state::{Intent, ResourceState, Snapshot};
use crate::vocab::resources::{
    Address, ClusterConfig, Kind, ModelConfig, OutputValue, ProviderName, Resource, ResourceConfig,
    ServingConfig, Stack,
};

/// The version of the plan JSON (`--json`) and of plan files. 2: attributes and blocks in the
/// stack's own names and values (`stage`, `data`, `cluster = "cluster.local"`), outputs.
pub const FORMAT_VERSION: u32 = 2;

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
    /// The stack's directory: paths are shown relative to it, as the stack writes them.
    #[serde(default)]
    pub base_dir: Option<PathBuf>,
    /// What happens to each output.
    #[serde(default)]
    pub outputs: Vec<OutputPlan>,
}

/// An output's change: `after` is unknown until apply when it is an attribute of a resource
/// that changes (an endpoint).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutputPlan {
    pub name: String,
    /// `create`, `update`, `delete` or `no-op`.
    pub action: Action,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub after_unknown: bool,
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

    /// The documented `--json` form (docs/plan-json.md), from the same model as the text.
    pub fn to_json(&self) -> Value {
        view::view(self).to_json()
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
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub targets: Vec<Address>,
    pub replace: Vec<Address>,
    pub destroy: bool,
    /// The machine shapes Compute Engine described (the preflight's, through `ops`): the
    /// capacity check and the Deployment's rollout use them before the built-in table.
    pub machine_shapes: MachineShapes,
    /// A `tune` trial's plan: a built `preset = "serving"` image whose only change is its
    /// baked configuration files (`config/`: models.config, batching, monitoring) keeps its
    /// recorded build. The serving resource's ConfigMap, mounted over the image's `/config`,
    /// carries the trial's settings, so a rebuild would change nothing TF Serving reads; the
    /// Deployment keeps the digest last applied, and the image stays recorded as built from
    /// the old files, so the next full plan still shows the rebuild. `apply` never sets it.
    pub keep_config_only_image_builds: bool,
}

/// Fingerprint of what a resource is applied with: its configuration (in the state's schema
/// form, so library changes do not change it) and rendered files.
pub fn fingerprint(config: &ResourceConfig, rendered: &BTreeMap<String, String>) -> String {
    crate::state::records::fingerprint(config, rendered)
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

/// Whether changing `attribute` of a `kind` resource forces its replacement rather than an
/// update in place (load tests never update: they re-run). Read from the attribute's
/// declaration in `stack::schema`, the one place this is decided.
pub fn forces_replacement(kind: Kind, attribute: &str) -> bool {
    crate::stack::schema::forces_replacement(kind.as_str(), attribute)
}

/// Renders what a resource is applied with (serving: models.config, batching, flags; on
/// Kubernetes its objects, whose rollout depends on the nodes' `shapes`).
pub fn render_resource(
    r: &Resource,
    stack: &Stack,
    provider: ProviderName,
    shapes: &MachineShapes,
) -> Result<BTreeMap<String, String>, PlanError> {
    if let ResourceConfig::Image(i) = &r.config
        && let Some(preset) = &i.preset
    {
        return serving_image_files(r, preset, stack);
    }
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
    let paths = if provider == ProviderName::Local {
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
    if provider == ProviderName::Kubernetes {
        // An `image` block's digest is known only once it is built: the objects name it
        // symbolically, so they stay the same from one build to the next (the plan rolls
        // a rebuilt image through the image's own change, see `image_roll`).
        let mut s = s.clone();
        if let Some(a) = &s.image_from {
            s.image = Some(symbolic_image(stack, a));
        }
        let s = &s;
        // The objects themselves, so a reviewer sees exactly what the rollout sends.
        let rollout = manifest::capacity::rollout_for(cluster_of(stack, s), s, shapes);
        let objects =
            manifest::k8s::serving_objects(&r.address, s, &models, rollout).map_err(located)?;
        files.insert(
            manifest::k8s::KUBERNETES_YAML.to_string(),
            objects.to_yaml().map_err(located)?,
        );
    }
    Ok(files)
}

/// A `preset = "serving"` image's generated files: its serving resource's rendered
/// configuration files (the same call that renders them for the serving resource, so the
/// bytes are the same) under `config/`, and the Dockerfile.
fn serving_image_files(
    r: &Resource,
    preset: &crate::vocab::resources::ServingPreset,
    stack: &Stack,
) -> Result<BTreeMap<String, String>, PlanError> {
    let serving = preset
        .serving
        .as_ref()
        .and_then(|a| stack.resources.iter().find(|s| &s.address == a))
        .ok_or_else(|| PlanError::Resource {
            address: r.address.to_string(),
            span: r.span.to_string(),
            message: "no serving resource uses this serving-preset image".into(),
        })?;
    // Only the configuration files are taken, which no machine shape changes.
    let files = render_resource(
        serving,
        stack,
        ProviderName::Kubernetes,
        &MachineShapes::default(),
    )?;
    Ok(manifest::serving_image_files(preset, &files))
}

/// The content hash of the `preset = "serving"` image `r` as the plan computes it or, with
/// `as_for` (another serving-preset image), as if generated for `as_for`'s serving resource
/// with `as_for`'s configuration files: its Dockerfile naming that resource and its `config/`
/// files `as_for`'s. Equal to `as_for`'s own hash when the two differ at most in what the
/// serving resource's ConfigMap, mounted over `/config`, carries anyway: `compare` then lets
/// the candidate's build serve the base too.
pub fn serving_image_hash(
    r: &Resource,
    stack: &Stack,
    as_for: Option<&Resource>,
) -> Result<String, PlanError> {
    let located = |message: String| PlanError::Resource {
        address: r.address.to_string(),
        span: r.span.to_string(),
        message,
    };
    let ResourceConfig::Image(i) = &r.config else {
        return Err(located("not an image".into()));
    };
    let Some(preset) = &i.preset else {
        return Err(located("not a serving-preset image".into()));
    };
    let files = match as_for {
        None => serving_image_files(r, preset, stack)?,
        Some(other) => {
            let Some(other_preset) = (match &other.config {
                ResourceConfig::Image(o) => o.preset.as_ref(),
                _ => None,
            }) else {
                return Err(located(format!(
                    "{} is not a serving-preset image",
                    other.address
                )));
            };
            // Generated for `as_for`'s serving resource: the Dockerfile names it and
            // `config/` holds its rendered files; the models and the base image stay `r`'s.
            let mut as_named = preset.clone();
            as_named.serving = other_preset.serving.clone();
            serving_image_files(r, &as_named, stack)?
        }
    };
    serving_image_context(i, &files)
        .and_then(|c| c.hash(&i.args))
        .map_err(|e| located(e.to_string()))
}

/// The build context of a `preset = "serving"` image: the plan's rendered files and the
/// models' version folders from this machine (what the Cloud Build provider uploads).
pub fn serving_image_context(
    i: &crate::vocab::resources::ImageConfig,
    rendered: &BTreeMap<String, String>,
) -> Result<crate::image_context::Context, crate::image_context::ContextError> {
    crate::image_context::Context::serving(rendered, &i.baked_dirs())
}

/// The resource as planned: a serving-preset image gets the content hash of its generated
/// context (the loader cannot compute it: the rendered files are the plan's).
fn with_context_hash(
    r: &Resource,
    rendered: &BTreeMap<String, String>,
) -> Result<Option<Resource>, PlanError> {
    let ResourceConfig::Image(i) = &r.config else {
        return Ok(None);
    };
    if i.preset.is_none() {
        return Ok(None);
    }
    let hash = serving_image_context(i, rendered)
        .and_then(|c| c.hash(&i.args))
        .map_err(|e| PlanError::Resource {
            address: r.address.to_string(),
            span: r.span.to_string(),
            message: e.to_string(),
        })?;
    let mut r = r.clone();
    if let ResourceConfig::Image(i) = &mut r.config {
        i.content_hash = hash;
    }
    Ok(Some(r))
}

/// Whether a `preset = "serving"` image `r` (as planned, with its content hash) differs from
/// its recorded build `prior` only in its baked configuration files (`config/…`, the bytes
/// the serving resource's ConfigMap mounts over them): its context with the recorded
/// `config/` files hashes to the recorded content hash, and nothing else of the block
/// changed. False for an image never built (no recorded digest) or not a serving preset.
fn config_only_image_change(
    r: &Resource,
    rendered: &BTreeMap<String, String>,
    prior: &ResourceState,
) -> bool {
    let (ResourceConfig::Image(now), ResourceConfig::Image(before)) = (&r.config, &prior.config)
    else {
        return false;
    };
    if now.preset.is_none()
        || crate::state::observed::image_reference(&prior.observed).is_none()
        || now.content_hash == before.content_hash
    {
        return false;
    }
    // Nothing written in the block changed (base image, models, repository …).
    let changed = view::changed_names(
        &view::resource_body(&prior.config, None),
        &view::resource_body(&r.config, None),
    );
    if changed.iter().any(|c| c != "content_hash") {
        return false;
    }
    let is_config = |k: &String| k.starts_with("config/");
    let mut with_prior_config: BTreeMap<String, String> = rendered
        .iter()
        .filter(|(k, _)| !is_config(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    with_prior_config.extend(
        prior
            .rendered
            .iter()
            .filter(|(k, _)| is_config(k))
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    serving_image_context(now, &with_prior_config)
        .and_then(|c| c.hash(&now.args))
        .is_ok_and(|h| h == before.content_hash)
}

/// How the plan's rendered objects name the image an `image` block builds:
/// `REPOSITORY/NAME@(digest of image.NAME)`.
pub fn symbolic_image(stack: &Stack, image: &Address) -> String {
    let name = stack
        .resources
        .iter()
        .find(|r| &r.address == image)
        .and_then(|r| match &r.config {
            ResourceConfig::Image(i) => Some(i.image_name()),
            _ => None,
        })
        .unwrap_or_else(|| image.to_string());
    format!("{name}@(digest of {image})")
}

/// Why a serving resource or load test must roll to its image block's digest: the image is
/// built or rebuilt by this plan, or (serving) the Deployment does not run the digest the
/// last build recorded (an apply that built the image and then failed before the rollout).
fn image_roll(
    r: &Resource,
    changes: &[Change],
    priors: &BTreeMap<Address, ResourceState>,
) -> Option<String> {
    let image = match &r.config {
        ResourceConfig::Serving(s) => s.image_from.as_ref()?,
        ResourceConfig::Loadtest(l) => l.loadgen_image_from.as_ref()?,
        _ => return None,
    };
    if let Some(c) = changes.iter().find(|c| &c.address == image) {
        match c.action {
            Action::Create => return Some(format!("{image} will be built")),
            Action::Update | Action::Replace => {
                let why = c.reason.clone().unwrap_or_else(|| "changed".into());
                return Some(format!("{image} rebuilt: {why}"));
            }
            _ => {}
        }
    }
    let ResourceConfig::Serving(_) = &r.config else {
        return None;
    };
    let built = priors
        .get(image)
        .and_then(|p| crate::state::observed::image_reference(&p.observed))?;
    let deployed = priors
        .get(&r.address)
        .and_then(|p| crate::state::observed::deployed_image(&p.observed));
    match deployed {
        Some(d) if d != built => Some(format!("{image} is {built}, the Deployment runs {d}")),
        _ => None,
    }
}

/// The cluster a serving resource runs on, from the stack.
fn cluster_of<'a>(stack: &'a Stack, s: &ServingConfig) -> Option<&'a ClusterConfig> {
    stack
        .resources
        .iter()
        .find(|c| c.address == s.cluster)
        .and_then(|c| match &c.config {
            ResourceConfig::Cluster(cc) => Some(cc),
            _ => None,
        })
}

/// Capacity before rollout: a serving resource on Kubernetes whose replicas cannot all be
/// scheduled on its cluster's nodes is refused at its block; one whose nodes have no room for
/// a surge pod is told it rolls one replica at a time; an unknown machine type is a warning.
pub fn check_capacity(
    r: &Resource,
    stack: &Stack,
    shapes: &MachineShapes,
) -> Result<Option<Warning>, PlanError> {
    let ResourceConfig::Serving(s) = &r.config else {
        return Ok(None);
    };
    let Some(cluster) = cluster_of(stack, s) else {
        return Ok(None);
    };
    let warning = |message: String| Warning {
        address: r.address.clone(),
        message,
    };
    match manifest::capacity::check(cluster, s, shapes) {
        manifest::capacity::Verdict::Fits { note, .. } => Ok(note.map(warning)),
        manifest::capacity::Verdict::Unknown(why) => Ok(Some(warning(why))),
        manifest::capacity::Verdict::DoesNotFit(message) => Err(PlanError::Resource {
            address: r.address.to_string(),
            span: r.span.to_string(),
            message,
        }),
    }
}

/// A load test from a private GKE cluster against a serving resource on GKE: the workers send
/// to the serving LoadBalancer's public address, which nodes without external addresses reach
/// only through Cloud NAT (or another route out). benchstack cannot see the network's routes,
/// so the plan says so before the run instead of every request failing to connect.
pub fn route_warning(r: &Resource, stack: &Stack) -> Option<Warning> {
    let ResourceConfig::Loadtest(l) = &r.config else {
        return None;
    };
    let cluster = |a: &Address| {
        stack
            .resources
            .iter()
            .find(|c| &c.address == a)
            .and_then(|c| match &c.config {
                ResourceConfig::Cluster(cc) => Some(cc),
                _ => None,
            })
    };
    let load = cluster(&l.cluster)?;
    let target = stack.resources.iter().find(|s| s.address == l.target)?;
    let ResourceConfig::Serving(serving) = &target.config else {
        return None;
    };
    let serving_cluster = cluster(&serving.cluster)?;
    let gke = crate::vocab::resources::ProviderKind::Gke;
    if load.provider != gke || serving_cluster.provider != gke || !load.private_nodes {
        return None;
    }
    Some(Warning {
        address: r.address.clone(),
        message: format!(
            "{} has private nodes: its workers reach {}'s LoadBalancer at a public address only through Cloud NAT (or another route to the internet) on its network; without one every request fails to connect. Check with `gcloud compute routers nats list --region REGION`, or set private_nodes = false on {}",
            l.cluster, l.target, l.cluster
        ),
    })
}

/// A resource state as it would be had the intent's call completed (refresh adopts what an
/// interrupted apply finished).
pub fn adopted(intent: &Intent, observed: Value) -> Option<ResourceState> {
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

/// What refresh found about a recorded resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Running as recorded.
    Ok,
    /// Gone (with why): it is created again.
    Gone(String),
    /// Broken for good (with why): it is replaced.
    Drifted(String),
    /// Alive, but changed outside benchstack (with what): the prior config was replaced by
    /// what is live, so the stack's values show as an update or a replacement.
    Modified(String),
}

/// What planning starts from besides the stack: the state as recovered and refreshed, as
/// plain data. `crate::refresh` makes it by reading through the providers; with
/// `--refresh=false`, [`Prior::unrefreshed`] takes the state as recorded.
#[derive(Debug, Clone, Default)]
pub struct Prior {
    pub lineage: String,
    pub serial: u64,
    /// The recorded resources, with what an interrupted apply completed adopted and what
    /// refresh observed (or, for `Health::Modified`, the live configuration) filled in.
    pub resources: BTreeMap<Address, ResourceState>,
    /// Resources an interrupted apply left unsettled, with the reason shown for them.
    pub interrupted: BTreeMap<Address, String>,
    /// What refresh found, per resource it read (none without refresh).
    pub health: BTreeMap<Address, Health>,
    /// What refresh found worth telling but not worth a change.
    pub warnings: Vec<Warning>,
    /// The outputs recorded by the last apply.
    pub outputs: BTreeMap<String, Value>,
}

impl Prior {
    /// The state as recorded, without reading anything: every unsettled intent counts as
    /// interrupted.
    pub fn unrefreshed(snap: &Snapshot) -> Prior {
        Prior {
            lineage: snap.lineage.clone(),
            serial: snap.serial,
            resources: snap.resources.clone(),
            interrupted: snap
                .intents
                .iter()
                .map(|(a, intent)| (a.clone(), interrupted_reason(intent)))
                .collect(),
            health: BTreeMap::new(),
            warnings: Vec::new(),
            outputs: BTreeMap::new(),
        }
    }
}

/// The reason shown for a resource an interrupted apply left unsettled.
pub fn interrupted_reason(intent: &Intent) -> String {
    format!(
        "an earlier apply was interrupted during its {}",
        intent.operation
    )
}

/// The resources in scope: `None` for all of them, else the targets with what they depend on
/// (or, for destroy, what depends on them in the state `priors`).
pub fn scope(
    stack: Option<&Stack>,
    priors: &BTreeMap<Address, ResourceState>,
    opts: &PlanOptions,
) -> Result<Option<BTreeSet<Address>>, PlanError> {
    if opts.targets.is_empty() {
        return Ok(None);
    }
    let empty = Stack {
        files: vec![],
        resources: vec![],
        outputs: vec![],
        backend: None,
    };
    let stack = stack.unwrap_or(&empty);
    let graph = Graph::from_stack(stack)?;
    let state_graph = Graph::from_edges(
        priors
            .values()
            .map(|r| (r.address.clone(), r.depends_on.clone())),
    )?;
    let mut set = BTreeSet::new();
    for t in &opts.targets {
        if !stack.resources.iter().any(|r| &r.address == t) && !priors.contains_key(t) {
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
    Ok(Some(set))
}

/// Makes a plan. `stack` is None for a destroy plan without a stack. `providers` names the
/// provider that applies each of the stack's resources (`local`, `gke`, `kubernetes`); `prior`
/// is the state as refresh left it.
pub fn make(
    stack: Option<&Stack>,
    providers: &BTreeMap<Address, ProviderName>,
    prior: Prior,
    opts: &PlanOptions,
) -> Result<Plan, PlanError> {
    let empty = Stack {
        files: vec![],
        resources: vec![],
        outputs: vec![],
        backend: None,
    };
    let stack_ref = stack.unwrap_or(&empty);
    let graph = Graph::from_stack(stack_ref)?;
    let Prior {
        lineage,
        serial,
        resources: priors,
        interrupted,
        health,
        mut warnings,
        outputs: prior_outputs,
    } = prior;

    let in_stack: BTreeSet<Address> = stack_ref
        .resources
        .iter()
        .map(|r| r.address.clone())
        .collect();
    let scope = scope(stack, &priors, opts)?;
    for r in &opts.replace {
        if !in_stack.contains(r) {
            return Err(PlanError::UnknownReplace(r.to_string()));
        }
    }
    let in_scope = |a: &Address| scope.as_ref().is_none_or(|s| s.contains(a));

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
            let provider = providers
                .get(&a)
                .copied()
                .ok_or_else(|| PlanError::Resource {
                    address: a.to_string(),
                    span: r.span.to_string(),
                    message: "no provider was chosen for it".into(),
                })?;
            let rendered = render_resource(r, stack_ref, provider, &opts.machine_shapes)?;
            let hashed = with_context_hash(r, &rendered)?;
            let r = hashed.as_ref().unwrap_or(r);
            let fp = fingerprint(&r.config, &rendered);
            // Replicas that cannot be scheduled are refused whatever the action; how an update
            // rolls is said only when something is applied.
            let capacity_note = if provider == ProviderName::Kubernetes && in_scope(&a) {
                check_capacity(r, stack_ref, &opts.machine_shapes)?
                    .or_else(|| route_warning(r, stack_ref))
            } else {
                None
            };
            if !in_scope(&a) {
                // Out of scope: as recorded (no change), for upstream checks of in-scope ones.
                planned.insert(a.clone(), (Action::NoOp, fp));
                continue;
            }
            let prior = priors.get(&a);
            if opts.keep_config_only_image_builds
                && let Some(p) = prior
                // Running as recorded (a gone or drifted image is built again).
                && matches!(health.get(&a), None | Some(Health::Ok))
                && config_only_image_change(r, &rendered, p)
            {
                // Kept as built (see `PlanOptions::keep_config_only_image_builds`): as
                // recorded, like a resource out of scope.
                planned.insert(a.clone(), (Action::NoOp, p.fingerprint.clone()));
                continue;
            }
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
                    image_roll: image_roll(r, &changes, &priors),
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
            if action != Action::NoOp
                && let Some(w) = capacity_note
            {
                warnings.push(w);
            }
            planned.insert(a.clone(), (action, fp.clone()));
            let before = prior.map(|p| p.config.clone());
            let files = if matches!(action, Action::NoOp) {
                vec![]
            } else {
                file_diffs(prior.map(|p| &p.rendered), &rendered)
            };
            changes.push(Change {
                address: a.clone(),
                action,
                reason,
                provider: provider.to_string(),
                before,
                after: Some(r.config.clone()),
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
    let outputs = output_plans(
        stack,
        &prior_outputs,
        &changes,
        opts.destroy,
        !opts.targets.is_empty(),
    );
    Ok(Plan {
        format_version: FORMAT_VERSION,
        lineage,
        serial,
        stack_hash,
        stack: stack.cloned(),
        destroy: opts.destroy,
        changes,
        created: crate::state::procinfo::now_unix(),
        warnings,
        base_dir: stack
            .and_then(|s| s.files.first())
            .and_then(|f| f.parent())
            .map(|d| std::path::absolute(d).unwrap_or_else(|_| d.to_path_buf())),
        outputs,
    })
}

/// What happens to each output: a value known now is compared with the recorded one; an
/// attribute of a resource that is created, updated or replaced is only known after apply;
/// recorded outputs the stack no longer declares (all of them, for destroy) are deleted.
/// A targeted destroy deletes only the outputs that read a resource it deletes, and keeps
/// every output when it has no stack to tell which (an output is never lost because what it
/// reads could not be known).
fn output_plans(
    stack: Option<&Stack>,
    prior: &BTreeMap<String, Value>,
    changes: &[Change],
    destroy: bool,
    targeted: bool,
) -> Vec<OutputPlan> {
    if destroy && targeted {
        let deleted = |a: &Address| {
            changes
                .iter()
                .any(|c| &c.address == a && c.action == Action::Delete)
        };
        return prior
            .iter()
            .filter(|(name, _)| {
                stack.is_some_and(|s| {
                    s.outputs.iter().any(|o| {
                        &o.name == *name
                            && matches!(&o.value, OutputValue::Attribute { address, .. } if deleted(address))
                    })
                })
            })
            .map(|(name, v)| OutputPlan {
                name: name.clone(),
                action: Action::Delete,
                before: Some(v.clone()),
                after: None,
                after_unknown: false,
            })
            .collect();
    }
    let mut out = Vec::new();
    let declared: Vec<&crate::vocab::resources::Output> = match stack {
        Some(s) if !destroy => s.outputs.iter().collect(),
        _ => vec![],
    };
    for o in &declared {
        let before = prior.get(&o.name).cloned();
        let (after, after_unknown) = match &o.value {
            OutputValue::Known(v) => (Some(v.clone()), false),
            OutputValue::Attribute { address, .. } => {
                let changes_it = changes.iter().any(|c| {
                    &c.address == address
                        && matches!(c.action, Action::Create | Action::Update | Action::Replace)
                });
                if changes_it || before.is_none() {
                    (None, true)
                } else {
                    (before.clone(), false)
                }
            }
        };
        let action = match &before {
            None => Action::Create,
            Some(_) if after_unknown || after != before => Action::Update,
            Some(_) => Action::NoOp,
        };
        out.push(OutputPlan {
            name: o.name.clone(),
            action,
            before,
            after,
            after_unknown,
        });
    }
    for (name, v) in prior {
        if !declared.iter().any(|o| &o.name == name) {
            out.push(OutputPlan {
                name: name.clone(),
                action: Action::Delete,
                before: Some(v.clone()),
                after: None,
                after_unknown: false,
            });
        }
    }
    out
}

struct Decide {
    forced: bool,
    gone: Option<String>,
    drifted: Option<String>,
    interrupted: Option<String>,
    /// The image block it deploys is (re)built, or not what it runs: see `image_roll`.
    image_roll: Option<String>,
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
    let changed = view::changed_names(
        &view::resource_body(&prior.config, None),
        &view::resource_body(&r.config, None),
    );
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
            if let Some(f) = changed
                .iter()
                .find(|c| forces_replacement(Kind::Cluster, c))
            {
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
            if let Some(f) = changed
                .iter()
                .find(|c| forces_replacement(r.address.kind, c))
            {
                return (
                    Action::Replace,
                    Some(format!("{f} changed (forces replacement)")),
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
                let mut reason = format!("{} changed", what.join(", "));
                if let Some(roll) = d.image_roll {
                    reason = format!("{reason}; {roll}");
                }
                (Action::Update, Some(reason))
            } else if let Some(roll) = d.image_roll {
                (Action::Update, Some(roll))
            } else {
                (Action::NoOp, None)
            }
        }
        ResourceConfig::Image(i) if i.preset.is_some() => {
            // Generated: name the rendered files that changed, or the models' files.
            if changed.is_empty() && files_changed.is_empty() {
                return (Action::NoOp, None);
            }
            let mut what: Vec<String> = changed
                .iter()
                .filter(|c| c.as_str() != "content_hash")
                .cloned()
                .collect();
            what.extend(files_changed.iter().map(|f| f.to_string()));
            if what.is_empty() {
                what.push("the models' version folders".into());
            }
            (Action::Update, Some(format!("{} changed", what.join(", "))))
        }
        ResourceConfig::Image(_) => {
            if changed.is_empty() {
                return (Action::NoOp, None);
            }
            // The content hash covers args and the Dockerfile too: name it only when
            // nothing else that was written changed ("context changed").
            let mut what: Vec<String> = changed
                .iter()
                .filter(|c| c.as_str() != "content_hash")
                .cloned()
                .collect();
            if changed.iter().any(|c| c == "content_hash")
                && !what
                    .iter()
                    .any(|w| w == "args" || w == "dockerfile" || w == "context")
            {
                what.push("context".into());
            }
            (Action::Update, Some(format!("{} changed", what.join(", "))))
        }
        ResourceConfig::Loadtest(_) => {
            if !changed.is_empty() {
                return (Action::Run, Some(format!("{} changed", changed.join(", "))));
            }
            if let Some(reason) = d.interrupted {
                return (Action::Run, Some(reason));
            }
            if let Some(roll) = d.image_roll {
                return (Action::Run, Some(roll));
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
pub(crate) mod tests;
