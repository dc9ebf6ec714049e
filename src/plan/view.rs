//! The plan in the stack's terms: each resource's configuration as the HCL a user writes
//! (attributes and nested blocks, references as references, durations as durations, paths
//! relative to the stack, enum values as their HCL strings), and the change between the
//! configuration applied and the one to apply. The text plan (`render`) and `plan --json`
//! are both made from this one model ([`view`]).
//!
//! Built from the typed configuration (`vocab::resources`), never from its serde form.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::{Number, Value as Json};

use super::{Action, FORMAT_VERSION, FileDiff, OutputPlan, Plan, Summary, Warning};
use crate::vocab::load::{Arrival, Protocol, Rate, RequestSource, Slo, format_error_rate};
use crate::vocab::resources::{Address, BatchingConfig, FlagValue, ProviderKind, ResourceConfig};

/// A value as it is written in HCL (and, for `--json`, its machine form).
#[derive(Debug, Clone, PartialEq)]
pub enum HclValue {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    /// A duration: `"5s"` in HCL, seconds in JSON.
    Duration(Duration),
    /// A fraction written as a percentage: `"0.1%"` in HCL, `0.001` in JSON.
    Percent(f64),
    /// A path, relative to the stack's directory (as a stack writes it), or absolute when
    /// it lies elsewhere or no stack directory is known.
    Path(String),
    /// A reference to another resource: `cluster.local`, `serving.tf["small"]`.
    Reference(Address),
    List(Vec<HclValue>),
    Map(BTreeMap<String, HclValue>),
    /// Only known after apply (an endpoint a provider reports).
    Unknown,
}

impl HclValue {
    fn int(n: impl Into<Number>) -> HclValue {
        HclValue::Number(n.into())
    }

    /// A number; integral values are written without a fraction (`300`, not `300.0`).
    fn float(x: f64) -> HclValue {
        if x.fract() == 0.0 && x.abs() < 9.0e15 {
            HclValue::Number(Number::from(x as i64))
        } else {
            Number::from_f64(x).map_or(HclValue::Null, HclValue::Number)
        }
    }

    /// An empty list or map (left out where a whole block is shown).
    pub fn is_empty_collection(&self) -> bool {
        match self {
            HclValue::List(v) => v.is_empty(),
            HclValue::Map(m) => m.is_empty(),
            _ => false,
        }
    }

    /// The value on one line, as HCL: `cluster.local`, `"5s"`, `[model.m]`, `{ a = 1 }`.
    pub fn hcl(&self) -> String {
        match self {
            HclValue::Null => "null".into(),
            HclValue::Bool(b) => b.to_string(),
            HclValue::Number(n) => n.to_string(),
            HclValue::String(s) | HclValue::Path(s) => quote(s),
            HclValue::Duration(d) => quote(&format_duration(*d)),
            HclValue::Percent(f) => quote(&format_error_rate(*f)),
            HclValue::Reference(a) => a.to_string(),
            HclValue::List(items) => {
                let items: Vec<String> = items.iter().map(HclValue::hcl).collect();
                format!("[{}]", items.join(", "))
            }
            HclValue::Map(m) if m.is_empty() => "{}".into(),
            HclValue::Map(m) => {
                let items: Vec<String> = m
                    .iter()
                    .map(|(k, v)| format!("{} = {}", key(k), v.hcl()))
                    .collect();
                format!("{{ {} }}", items.join(", "))
            }
            HclValue::Unknown => "(known after apply)".into(),
        }
    }

    /// The machine form for `--json`: durations in seconds, percentages as fractions,
    /// references and paths as strings, unknown as null.
    pub fn json(&self) -> Json {
        match self {
            HclValue::Null | HclValue::Unknown => Json::Null,
            HclValue::Bool(b) => Json::Bool(*b),
            HclValue::Number(n) => Json::Number(n.clone()),
            HclValue::String(s) | HclValue::Path(s) => Json::String(s.clone()),
            HclValue::Duration(d) => {
                Number::from_f64(d.as_secs_f64()).map_or(Json::Null, Json::Number)
            }
            HclValue::Percent(f) => Number::from_f64(*f).map_or(Json::Null, Json::Number),
            HclValue::Reference(a) => Json::String(a.to_string()),
            HclValue::List(items) => Json::Array(items.iter().map(HclValue::json).collect()),
            HclValue::Map(m) => {
                Json::Object(m.iter().map(|(k, v)| (k.clone(), v.json())).collect())
            }
        }
    }

    /// A JSON value (an output known when the stack is loaded) as HCL.
    pub fn from_json(v: &Json) -> HclValue {
        match v {
            Json::Null => HclValue::Null,
            Json::Bool(b) => HclValue::Bool(*b),
            Json::Number(n) => HclValue::Number(n.clone()),
            Json::String(s) => HclValue::String(s.clone()),
            Json::Array(items) => HclValue::List(items.iter().map(HclValue::from_json).collect()),
            Json::Object(m) => HclValue::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), HclValue::from_json(v)))
                    .collect(),
            ),
        }
    }
}

/// An HCL quoted string.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' | '%' if chars.peek() == Some(&'{') => {
                out.push(c);
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A map key: bare when it is an identifier, else quoted.
pub fn key(k: &str) -> String {
    let mut chars = k.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ident { k.to_string() } else { quote(k) }
}

/// `5s`, `50ms`, `1m30s`, `1h`, `250us`: what `parse_duration` reads back.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// A resource's (or a nested block's) attributes and blocks, in the stack language's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Body {
    pub attributes: Vec<(String, HclValue)>,
    pub blocks: Vec<Block>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// `stage`, `slo`, `batching`.
    pub name: String,
    pub body: Body,
}

/// Whether a block may appear more than once (it is a list in `--json`).
pub fn repeatable(block: &str) -> bool {
    block == "stage"
}

impl Body {
    fn set(&mut self, name: &str, v: HclValue) {
        self.attributes.push((name.to_string(), v));
    }

    fn opt<T>(&mut self, name: &str, v: &Option<T>, f: impl Fn(&T) -> HclValue) {
        if let Some(v) = v {
            self.set(name, f(v));
        }
    }

    fn block(&mut self, name: &str, body: Body) {
        self.blocks.push(Block {
            name: name.to_string(),
            body,
        });
    }

    fn attribute(&self, name: &str) -> Option<&HclValue> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// The body as a JSON object: attributes by name, a block as an object, a repeatable
    /// block as a list of objects.
    pub fn json(&self) -> Json {
        let mut m = serde_json::Map::new();
        for (k, v) in &self.attributes {
            m.insert(k.clone(), v.json());
        }
        for b in &self.blocks {
            if repeatable(&b.name) {
                let entry = m
                    .entry(b.name.clone())
                    .or_insert_with(|| Json::Array(vec![]));
                if let Json::Array(items) = entry {
                    items.push(b.body.json());
                }
            } else {
                m.insert(b.name.clone(), b.body.json());
            }
        }
        Json::Object(m)
    }
}

// Takes `&String`: it is passed as the converter for `Option<String>` fields.
#[allow(clippy::ptr_arg)]
fn string(s: &String) -> HclValue {
    HclValue::String(s.clone())
}

fn reference(a: &Address) -> HclValue {
    HclValue::Reference(a.clone())
}

fn provider_kind(p: ProviderKind) -> &'static str {
    match p {
        ProviderKind::Local => "local",
        ProviderKind::Gke => "gke",
    }
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Rest => "rest",
        Protocol::Grpc => "grpc",
    }
}

fn arrival(a: Arrival) -> &'static str {
    match a {
        Arrival::Constant => "constant",
        Arrival::Poisson => "poisson",
    }
}

fn flag(v: &FlagValue) -> HclValue {
    match v {
        FlagValue::Bool(b) => HclValue::Bool(*b),
        FlagValue::Int(i) => HclValue::int(*i),
        FlagValue::Float(x) => HclValue::float(*x),
        FlagValue::String(s) => HclValue::String(s.clone()),
    }
}

/// The attribute name of a latency objective: `p99`, `p50`, `p999` for 99.9.
fn percentile_key(p: f64) -> String {
    let text = HclValue::float(p).hcl();
    match text.strip_prefix("99.") {
        // p99.9 is written p999 (an HCL name holds no dot); parse_percentile reads it back.
        Some(rest) => format!("p99{rest}"),
        None => format!("p{text}"),
    }
}

fn batching(b: &BatchingConfig) -> Body {
    let mut body = Body::default();
    let u = |n: &u64| HclValue::int(*n);
    let bool_ = |b: &bool| HclValue::Bool(*b);
    body.opt("max_batch_size", &b.max_batch_size, u);
    body.opt("batch_timeout_micros", &b.batch_timeout_micros, u);
    body.opt("max_enqueued_batches", &b.max_enqueued_batches, u);
    body.opt("num_batch_threads", &b.num_batch_threads, u);
    body.set(
        "allowed_batch_sizes",
        HclValue::List(b.allowed_batch_sizes.iter().map(u).collect()),
    );
    body.opt(
        "pad_variable_length_inputs",
        &b.pad_variable_length_inputs,
        bool_,
    );
    body.opt(
        "enable_large_batch_splitting",
        &b.enable_large_batch_splitting,
        bool_,
    );
    body.opt("max_execution_batch_size", &b.max_execution_batch_size, u);
    body
}

/// A resource's configuration as HCL. Paths are shown relative to `base` (the stack's
/// directory) when given.
pub fn resource_body(config: &ResourceConfig, base: Option<&Path>) -> Body {
    let mut b = Body::default();
    match config {
        ResourceConfig::Cluster(c) => {
            b.set(
                "provider",
                HclValue::String(provider_kind(c.provider).into()),
            );
            b.opt("project", &c.project, string);
            b.opt("location", &c.location, string);
            b.opt("machine_type", &c.machine_type, string);
            b.set("node_count", HclValue::int(c.node_count));
            b.opt("disk_size_gb", &c.disk_size_gb, |n| HclValue::int(*n));
            b.set("spot", HclValue::Bool(c.spot));
            b.set("private_nodes", HclValue::Bool(c.private_nodes));
            b.opt("service_account", &c.service_account, string);
            b.opt("network", &c.network, string);
            b.opt("subnetwork", &c.subnetwork, string);
            b.set(
                "labels",
                HclValue::Map(
                    c.labels
                        .iter()
                        .map(|(k, v)| (k.clone(), HclValue::String(v.clone())))
                        .collect(),
                ),
            );
        }
        ResourceConfig::Model(m) => {
            b.set(
                "base_path",
                HclValue::Path(display_path(&m.base_path, base)),
            );
            b.opt("serving_path", &m.serving_path, string);
            b.set("name", HclValue::String(m.name.clone()));
        }
        ResourceConfig::Serving(s) => {
            b.set("cluster", reference(&s.cluster));
            match &s.image_from {
                Some(a) => b.set("image", reference(a)),
                None => b.opt("image", &s.image, string),
            }
            b.set("replicas", HclValue::int(s.replicas));
            b.set(
                "models",
                HclValue::List(s.models.iter().map(reference).collect()),
            );
            b.set(
                "flags",
                HclValue::Map(s.flags.iter().map(|(k, v)| (k.clone(), flag(v))).collect()),
            );
            b.opt("cpu", &s.cpu, string);
            b.opt("memory", &s.memory, string);
            if let Some(batch) = &s.batching {
                b.block("batching", batching(batch));
            }
        }
        ResourceConfig::Image(i) => {
            b.set("repository", HclValue::String(i.repository.clone()));
            b.set("name", HclValue::String(i.name.clone()));
            if let Some(p) = &i.preset {
                b.set("preset", HclValue::String("serving".into()));
                b.set("base_image", HclValue::String(p.base_image.clone()));
            } else {
                b.set("context", HclValue::Path(display_path(&i.context, base)));
                b.set("dockerfile", HclValue::String(i.dockerfile.clone()));
                b.set(
                    "args",
                    HclValue::Map(
                        i.args
                            .iter()
                            .map(|(k, v)| (k.clone(), HclValue::String(v.clone())))
                            .collect(),
                    ),
                );
            }
            // Not written in the stack: what the loader hashed (a change plans a build).
            b.set("content_hash", HclValue::String(i.content_hash.clone()));
        }
        ResourceConfig::Loadtest(l) => {
            b.set("cluster", reference(&l.cluster));
            b.set("target", reference(&l.target));
            b.set("model", HclValue::String(l.model.clone()));
            b.set("protocol", HclValue::String(protocol(l.protocol).into()));
            b.opt("signature", &l.signature, string);
            match &l.request {
                RequestSource::Body(body) => b.set("request", HclValue::String(body.clone())),
                RequestSource::Data { path, batch_size } => {
                    b.set("data", HclValue::Path(display_path(path, base)));
                    b.set("batch_size", HclValue::int(*batch_size));
                }
            }
            b.set("workers", HclValue::int(l.workers));
            if l.start_tolerance_ms != crate::vocab::resources::DEFAULT_START_TOLERANCE_MS {
                b.set(
                    "start_tolerance",
                    HclValue::Duration(std::time::Duration::from_millis(l.start_tolerance_ms)),
                );
            }
            match &l.loadgen_image_from {
                Some(a) => b.set("loadgen_image", reference(a)),
                None => b.opt("loadgen_image", &l.loadgen_image, string),
            }
            b.set("connections", HclValue::int(l.connections));
            b.set("arrival", HclValue::String(arrival(l.arrival).into()));
            b.set("seed", HclValue::int(l.seed));
            b.set("warmup", HclValue::Duration(l.warmup));
            b.set("timeout", HclValue::Duration(l.timeout));
            for s in &l.stages {
                let mut stage = Body::default();
                stage.set("name", HclValue::String(s.name.clone()));
                stage.set(
                    "rate",
                    match s.rate {
                        Rate::PerSecond(r) => HclValue::float(r),
                        Rate::Max => HclValue::String("max".into()),
                    },
                );
                stage.set("duration", HclValue::Duration(s.duration));
                b.block("stage", stage);
            }
            if !l.slos.is_empty() {
                let mut slo = Body::default();
                for s in &l.slos {
                    match s {
                        Slo::Latency { percentile, limit } => {
                            slo.set(&percentile_key(*percentile), HclValue::Duration(*limit))
                        }
                        Slo::ErrorRate { errors } => slo.set("errors", HclValue::Percent(*errors)),
                    }
                }
                b.block("slo", slo);
            }
        }
    }
    b
}

/// `path` relative to `base` (`../examples/model/test.csv`), as a stack writes it; absolute
/// when they share nothing but the root, or without a base.
pub fn display_path(path: &Path, base: Option<&Path>) -> String {
    let Some(base) = base else {
        return path.display().to_string();
    };
    let absolute = |p: &Path| {
        crate::stack::funcs::normalize(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    };
    let (p, b) = (absolute(path), absolute(base));
    let pc: Vec<Component> = p.components().collect();
    let bc: Vec<Component> = b.components().collect();
    let common = pc.iter().zip(&bc).take_while(|(x, y)| x == y).count();
    // Sharing only the root (or a Windows prefix): the absolute path says more.
    let shared_root = pc
        .iter()
        .take(common)
        .filter(|c| matches!(c, Component::Normal(_)))
        .count();
    if shared_root == 0 {
        return p.display().to_string();
    }
    let mut out = PathBuf::new();
    for _ in common..bc.len() {
        out.push("..");
    }
    for c in &pc[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        ".".into()
    } else {
        out.display().to_string()
    }
}

/// The names of the top-level attributes and blocks that differ between two bodies, in the
/// stack language's order.
pub fn changed_names(before: &Body, after: &Body) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |n: &str| {
        if !out.iter().any(|o| o == n) {
            out.push(n.to_string());
        }
    };
    for (name, _) in after.attributes.iter().chain(&before.attributes) {
        if before.attribute(name) != after.attribute(name) {
            push(name);
        }
    }
    for b in after.blocks.iter().chain(&before.blocks) {
        let of = |body: &Body| -> Vec<Body> {
            body.blocks
                .iter()
                .filter(|x| x.name == b.name)
                .map(|x| x.body.clone())
                .collect()
        };
        if of(before) != of(after) {
            push(&b.name);
        }
    }
    out
}

/// One attribute, before and after (`None`: not set on that side).
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeChange {
    pub name: String,
    pub before: Option<HclValue>,
    pub after: Option<HclValue>,
    /// This change is why the resource is replaced.
    pub forces_replacement: bool,
}

impl AttributeChange {
    pub fn changed(&self) -> bool {
        self.before != self.after
    }
}

/// One nested block, before and after.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockChange {
    pub name: String,
    pub before: bool,
    pub after: bool,
    pub body: BodyChange,
}

impl BlockChange {
    pub fn changed(&self) -> bool {
        self.before != self.after || self.body.changed()
    }
}

/// Every attribute and block of a body, each with its before and after.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BodyChange {
    pub attributes: Vec<AttributeChange>,
    pub blocks: Vec<BlockChange>,
}

impl BodyChange {
    pub fn changed(&self) -> bool {
        self.attributes.iter().any(AttributeChange::changed)
            || self.blocks.iter().any(BlockChange::changed)
    }
}

/// Pairs two bodies: attributes by name, blocks by name and position (`stage` 1 with
/// `stage` 1). `forces(name)` tells which top-level attributes force replacement.
pub fn diff(
    before: Option<&Body>,
    after: Option<&Body>,
    forces: &dyn Fn(&str) -> bool,
) -> BodyChange {
    let empty = Body::default();
    let (b, a) = (before.unwrap_or(&empty), after.unwrap_or(&empty));
    let mut names: Vec<&String> = Vec::new();
    for (n, _) in a.attributes.iter().chain(&b.attributes) {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let attributes = names
        .into_iter()
        .map(|n| {
            let before = b.attribute(n).cloned();
            let after = a.attribute(n).cloned();
            let forces_replacement = before != after && forces(n);
            AttributeChange {
                name: n.clone(),
                before,
                after,
                forces_replacement,
            }
        })
        .collect();
    let mut block_names: Vec<&String> = Vec::new();
    for x in a.blocks.iter().chain(&b.blocks) {
        if !block_names.contains(&&x.name) {
            block_names.push(&x.name);
        }
    }
    let mut blocks = Vec::new();
    for n in block_names {
        let bs: Vec<&Body> = b
            .blocks
            .iter()
            .filter(|x| &x.name == n)
            .map(|x| &x.body)
            .collect();
        let as_: Vec<&Body> = a
            .blocks
            .iter()
            .filter(|x| &x.name == n)
            .map(|x| &x.body)
            .collect();
        for i in 0..bs.len().max(as_.len()) {
            let (x, y) = (bs.get(i).copied(), as_.get(i).copied());
            blocks.push(BlockChange {
                name: n.clone(),
                before: x.is_some(),
                after: y.is_some(),
                body: diff(x, y, &|_: &str| false),
            });
        }
    }
    BodyChange { attributes, blocks }
}

/// One resource's change, in the stack's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceChange {
    pub address: Address,
    pub action: Action,
    pub reason: Option<String>,
    pub provider: String,
    /// The configuration as applied (None when creating).
    pub before: Option<Body>,
    /// The configuration to apply (None when deleting).
    pub after: Option<Body>,
    pub body: BodyChange,
    pub files: Vec<FileDiff>,
}

/// One output's change.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputChange {
    pub name: String,
    pub action: Action,
    pub before: Option<HclValue>,
    /// `HclValue::Unknown` when only known after apply.
    pub after: Option<HclValue>,
}

/// The whole plan in the stack's terms: what the text plan and `--json` show.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanView {
    pub lineage: String,
    pub serial: u64,
    pub stack_hash: String,
    pub destroy: bool,
    pub changes: Vec<ResourceChange>,
    pub outputs: Vec<OutputChange>,
    pub warnings: Vec<Warning>,
    pub summary: Summary,
}

/// Builds the model of `plan`.
pub fn view(plan: &Plan) -> PlanView {
    let base = plan.base_dir.as_deref();
    let changes = plan
        .changes
        .iter()
        .map(|c| {
            let before = c.before.as_ref().map(|b| resource_body(b, base));
            let after = c.after.as_ref().map(|a| resource_body(a, base));
            let kind = c.address.kind;
            let replacing = c.action == Action::Replace;
            let body = diff(before.as_ref(), after.as_ref(), &|name: &str| {
                replacing && super::forces_replacement(kind, name)
            });
            ResourceChange {
                address: c.address.clone(),
                action: c.action,
                reason: c.reason.clone(),
                provider: c.provider.clone(),
                before,
                after,
                body,
                files: c.files.clone(),
            }
        })
        .collect();
    let outputs = plan.outputs.iter().map(output_change).collect();
    PlanView {
        lineage: plan.lineage.clone(),
        serial: plan.serial,
        stack_hash: plan.stack_hash.clone(),
        destroy: plan.destroy,
        changes,
        outputs,
        warnings: plan.warnings.clone(),
        summary: plan.summary(),
    }
}

fn output_change(o: &OutputPlan) -> OutputChange {
    OutputChange {
        name: o.name.clone(),
        action: o.action,
        before: o.before.as_ref().map(HclValue::from_json),
        after: if o.after_unknown {
            Some(HclValue::Unknown)
        } else {
            o.after.as_ref().map(HclValue::from_json)
        },
    }
}

/// One leaf difference: a dotted path in the stack's names (`replicas`,
/// `batching.max_batch_size`, `stage[1].rate`, `flags.NAME`, `slo.p99`) and its value on each
/// side (`None`: not set there). `--json`'s `attributes` and the markdown tables show these.
#[derive(Debug, Clone, PartialEq)]
pub struct Leaf {
    pub path: String,
    pub before: Option<HclValue>,
    pub after: Option<HclValue>,
    pub forces_replacement: bool,
}

impl ResourceChange {
    /// Every leaf that differs between before and after.
    pub fn leaves(&self) -> Vec<Leaf> {
        let mut out = Vec::new();
        leaves("", &self.body, &mut out);
        out
    }
}

fn leaves(prefix: &str, change: &BodyChange, out: &mut Vec<Leaf>) {
    let path = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    };
    let leaf = |path: String, before: Option<&HclValue>, after: Option<&HclValue>, forces| Leaf {
        path,
        before: before.cloned(),
        after: after.cloned(),
        forces_replacement: forces,
    };
    for a in change.attributes.iter().filter(|a| a.changed()) {
        let p = path(&a.name);
        let is_map = |v: &Option<HclValue>| matches!(v, Some(HclValue::Map(_)));
        let map_or_absent = |v: &Option<HclValue>| v.is_none() || is_map(v);
        if (is_map(&a.before) || is_map(&a.after))
            && map_or_absent(&a.before)
            && map_or_absent(&a.after)
        {
            // A map: one leaf per key that differs.
            let entries = |v: &Option<HclValue>| match v {
                Some(HclValue::Map(m)) => m.clone(),
                _ => BTreeMap::new(),
            };
            let (bm, am) = (entries(&a.before), entries(&a.after));
            let keys: BTreeSet<&String> = bm.keys().chain(am.keys()).collect();
            for k in keys.into_iter().filter(|k| bm.get(*k) != am.get(*k)) {
                out.push(leaf(
                    format!("{p}.{k}"),
                    bm.get(k),
                    am.get(k),
                    a.forces_replacement,
                ));
            }
        } else {
            out.push(leaf(
                p,
                a.before.as_ref(),
                a.after.as_ref(),
                a.forces_replacement,
            ));
        }
    }
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for b in &change.blocks {
        let i = index.entry(b.name.as_str()).or_insert(0);
        let name = if repeatable(&b.name) {
            format!("{}[{i}]", b.name)
        } else {
            b.name.clone()
        };
        *i += 1;
        if b.changed() {
            leaves(&path(&name), &b.body, out);
        }
    }
}

fn leaf_json(l: &Leaf) -> Json {
    serde_json::json!({
        "path": l.path,
        "before": l.before.as_ref().map_or(Json::Null, HclValue::json),
        "after": l.after.as_ref().map_or(Json::Null, HclValue::json),
        "forces_replacement": l.forces_replacement,
    })
}

impl PlanView {
    /// The documented `--json` form (docs/plan-json.md).
    pub fn to_json(&self) -> Json {
        let changes: Vec<Json> = self
            .changes
            .iter()
            .map(|c| {
                let attributes: Vec<Json> = c.leaves().iter().map(leaf_json).collect();
                serde_json::json!({
                    "address": c.address.to_string(),
                    "kind": c.address.kind.as_str(),
                    "provider": c.provider,
                    "action": c.action.as_str(),
                    "reason": c.reason,
                    "before": c.before.as_ref().map(Body::json),
                    "after": c.after.as_ref().map(Body::json),
                    "attributes": attributes,
                    "files": c.files.iter().map(|f| serde_json::json!({"file": f.file, "diff": f.diff})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let outputs: Vec<Json> = self
            .outputs
            .iter()
            .map(|o| {
                serde_json::json!({
                    "name": o.name,
                    "action": o.action.as_str(),
                    "before": o.before.as_ref().map(HclValue::json),
                    "after": o.after.as_ref().map(HclValue::json),
                    "after_unknown": o.after == Some(HclValue::Unknown),
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
            "outputs": outputs,
            "warnings": self
                .warnings
                .iter()
                .map(|w| serde_json::json!({"address": w.address.to_string(), "message": w.message}))
                .collect::<Vec<_>>(),
            "summary": self.summary,
        })
    }
}
