//! The `tune` block: which serving settings `benchstack tune` varies, how it measures them and
//! what it optimises. Tune blocks are not resources (plan and apply ignore them); they are
//! decoded and checked with the rest of the stack, so `validate` locates every problem. The
//! optional `hourly_price` of a cluster (what a node costs, for the tuner's cost figures) is
//! decoded here too.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use hcl_edit::expr::{Expression, ObjectKey};
use hcl_edit::structure::{Attribute, Block, Structure};
use serde::{Deserialize, Serialize};

use super::eval::{Decls, Scope};
use super::load::Loader;
use super::types::{Address, FlagValue, Kind, Resource, ResourceConfig, ServingConfig, Span};
use super::value::{Value, suggest};
use crate::loadgen::spec::{MAX_RATE, parse_duration};
use crate::serve::config::{
    MAX_BATCH_SIZE, MAX_BATCH_TIMEOUT_MICROS, MAX_ENQUEUED_BATCHES, MAX_THREADS,
};

/// The attributes of a `tune` block.
pub const TUNE_ATTRS: &[&str] = &[
    "serving",
    "loadtest",
    "space",
    "search",
    "start_rate",
    "probe_duration",
    "precision",
    "repeats",
    "objective",
    "target_rate",
    "max_trials",
];

/// The `batching` attributes a space may vary (allowed_batch_sizes is a list: not a knob).
pub const BATCHING_KNOBS: &[&str] = &[
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "max_execution_batch_size",
    "pad_variable_length_inputs",
    "enable_large_batch_splitting",
];

/// Flags benchstack sets itself (the same list the serving block refuses).
const RESERVED_FLAGS: &[&str] = &[
    "port",
    "rest_api_port",
    "model_name",
    "model_base_path",
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Search {
    /// Every combination of the space.
    Grid,
    /// Coordinate descent from the stack's current configuration.
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The most requests per second under the SLOs.
    Capacity,
    /// The lowest price per million predictions.
    Cost,
}

/// One serving attribute a tune varies, in dotted form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Knob {
    /// `batching.NAME`.
    Batching(String),
    /// `flags.NAME`.
    Flag(String),
    Replicas,
    Image,
    Cpu,
    Memory,
}

impl Knob {
    pub fn parse(key: &str) -> Result<Knob, String> {
        let expected = "a serving attribute in dotted form: batching.NAME (max_batch_size, batch_timeout_micros, max_enqueued_batches, num_batch_threads, max_execution_batch_size, pad_variable_length_inputs, enable_large_batch_splitting), flags.NAME, replicas, image, cpu or memory";
        match key {
            "replicas" => return Ok(Knob::Replicas),
            "image" => return Ok(Knob::Image),
            "cpu" => return Ok(Knob::Cpu),
            "memory" => return Ok(Knob::Memory),
            _ => {}
        }
        if let Some(name) = key.strip_prefix("batching.") {
            if BATCHING_KNOBS.contains(&name) {
                return Ok(Knob::Batching(name.to_string()));
            }
            let hint = suggest(name, BATCHING_KNOBS.iter().copied())
                .map(|s| format!(" (did you mean batching.{s}?)"))
                .unwrap_or_default();
            return Err(format!("{expected}{hint}"));
        }
        if let Some(name) = key.strip_prefix("flags.") {
            if RESERVED_FLAGS.contains(&name) {
                return Err(format!(
                    "a flag benchstack does not set itself (`{name}` comes from the serving block)"
                ));
            }
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Ok(Knob::Flag(name.to_string()));
            }
            return Err("a bare flag name such as flags.tensorflow_intra_op_parallelism".into());
        }
        let hint = suggest(key, ["replicas", "image", "cpu", "memory"])
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        Err(format!("{expected}{hint}"))
    }

    /// The dotted key as written in a space.
    pub fn key(&self) -> String {
        match self {
            Knob::Batching(n) => format!("batching.{n}"),
            Knob::Flag(n) => format!("flags.{n}"),
            Knob::Replicas => "replicas".into(),
            Knob::Image => "image".into(),
            Knob::Cpu => "cpu".into(),
            Knob::Memory => "memory".into(),
        }
    }

    /// Checks one value of this knob; returns it typed or what was expected.
    pub fn check(&self, v: &Value) -> Result<FlagValue, String> {
        let uint = |min: u64, max: u64| -> Result<FlagValue, String> {
            match v {
                Value::Number(n) if n.fract() == 0.0 && *n >= min as f64 && *n <= max as f64 => {
                    Ok(FlagValue::Int(*n as i64))
                }
                _ => Err(format!("a whole number from {min} to {max}")),
            }
        };
        match self {
            Knob::Batching(n) => match n.as_str() {
                "max_batch_size" | "max_execution_batch_size" => uint(1, MAX_BATCH_SIZE as u64),
                "batch_timeout_micros" => uint(0, MAX_BATCH_TIMEOUT_MICROS),
                "max_enqueued_batches" => uint(1, MAX_ENQUEUED_BATCHES as u64),
                "num_batch_threads" => uint(1, MAX_THREADS as u64),
                _ => match v {
                    Value::Bool(b) => Ok(FlagValue::Bool(*b)),
                    _ => Err("true or false".into()),
                },
            },
            Knob::Flag(_) => match v {
                Value::Bool(b) => Ok(FlagValue::Bool(*b)),
                Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                    Ok(FlagValue::Int(*n as i64))
                }
                Value::Number(n) => Ok(FlagValue::Float(*n)),
                Value::String(s) => Ok(FlagValue::String(s.clone())),
                _ => Err("a scalar flag value (bool, number or string)".into()),
            },
            Knob::Replicas => uint(1, 1000),
            Knob::Image => match v {
                Value::String(s) if !s.trim().is_empty() => Ok(FlagValue::String(s.clone())),
                _ => Err("an image name such as \"tensorflow/serving:2.19.0\"".into()),
            },
            Knob::Cpu | Knob::Memory => {
                let text = match v {
                    Value::Number(n) if *n > 0.0 => super::value::format_number(*n),
                    Value::String(s) => s.trim().to_string(),
                    _ => return Err(self.quantity_expected()),
                };
                if is_quantity(&text) {
                    Ok(FlagValue::String(text))
                } else {
                    Err(self.quantity_expected())
                }
            }
        }
    }

    fn quantity_expected(&self) -> String {
        match self {
            Knob::Cpu => "a CPU quantity such as \"7\" or \"7500m\"".into(),
            _ => "a memory quantity such as \"4Gi\" or \"512Mi\"".into(),
        }
    }

    /// This knob's value in a serving configuration (None when unset: the server's default).
    pub fn get(&self, s: &ServingConfig) -> Option<FlagValue> {
        let int = |x: Option<u64>| x.map(|n| FlagValue::Int(n as i64));
        match self {
            Knob::Batching(n) => {
                let b = s.batching.as_ref()?;
                match n.as_str() {
                    "max_batch_size" => int(b.max_batch_size),
                    "batch_timeout_micros" => int(b.batch_timeout_micros),
                    "max_enqueued_batches" => int(b.max_enqueued_batches),
                    "num_batch_threads" => int(b.num_batch_threads),
                    "max_execution_batch_size" => int(b.max_execution_batch_size),
                    "pad_variable_length_inputs" => {
                        b.pad_variable_length_inputs.map(FlagValue::Bool)
                    }
                    "enable_large_batch_splitting" => {
                        b.enable_large_batch_splitting.map(FlagValue::Bool)
                    }
                    _ => None,
                }
            }
            Knob::Flag(n) => s.flags.get(n).cloned(),
            Knob::Replicas => Some(FlagValue::Int(i64::from(s.replicas))),
            Knob::Image => s.image.clone().map(FlagValue::String),
            Knob::Cpu => s.cpu.clone().map(FlagValue::String),
            Knob::Memory => s.memory.clone().map(FlagValue::String),
        }
    }

    /// Sets this knob in a serving configuration (a batching knob on a serving resource
    /// without a `batching` block turns batching on). The value was checked by `check`.
    pub fn set(&self, s: &mut ServingConfig, v: &FlagValue) {
        let uint = || match v {
            FlagValue::Int(i) => Some((*i).max(0) as u64),
            FlagValue::Float(f) => Some(f.max(0.0) as u64),
            _ => None,
        };
        let boolean = || match v {
            FlagValue::Bool(b) => Some(*b),
            _ => None,
        };
        let text = || v.to_string();
        match self {
            Knob::Batching(n) => {
                let b = s.batching.get_or_insert_with(Default::default);
                match n.as_str() {
                    "max_batch_size" => b.max_batch_size = uint(),
                    "batch_timeout_micros" => b.batch_timeout_micros = uint(),
                    "max_enqueued_batches" => b.max_enqueued_batches = uint(),
                    "num_batch_threads" => b.num_batch_threads = uint(),
                    "max_execution_batch_size" => b.max_execution_batch_size = uint(),
                    "pad_variable_length_inputs" => b.pad_variable_length_inputs = boolean(),
                    "enable_large_batch_splitting" => b.enable_large_batch_splitting = boolean(),
                    _ => {}
                }
            }
            Knob::Flag(n) => {
                s.flags.insert(n.clone(), v.clone());
            }
            Knob::Replicas => s.replicas = uint().unwrap_or(1).clamp(1, 1000) as u32,
            Knob::Image => s.image = Some(text()),
            Knob::Cpu => s.cpu = Some(text()),
            Knob::Memory => s.memory = Some(text()),
        }
    }
}

/// A Kubernetes quantity (`7`, `7500m`, `0.5`, `4Gi`).
fn is_quantity(text: &str) -> bool {
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|num| {
            !num.is_empty()
                && num.chars().all(|c| c.is_ascii_digit() || c == '.')
                && num.parse::<f64>().is_ok_and(|n| n > 0.0)
        })
    })
}

/// One dimension of the search space: a knob and the values to try, in the order written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    pub knob: Knob,
    pub values: Vec<FlagValue>,
}

/// A decoded `tune "NAME" { … }` block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TuneConfig {
    pub name: String,
    pub span: Span,
    pub serving: Address,
    pub loadtest: Address,
    pub space: Vec<Dimension>,
    pub search: Search,
    /// The first probe's rate, requests/s.
    pub start_rate: f64,
    /// Each probe's measured time (after the load test's warmup, once per trial).
    #[serde(with = "crate::loadgen::spec::duration_secs")]
    pub probe_duration: Duration,
    /// Bisect until the bracket is within this fraction of its upper end.
    pub precision: f64,
    /// How many measurements the best configurations get in all.
    pub repeats: u32,
    pub objective: Objective,
    /// Size the deployment for this traffic (requests/s).
    pub target_rate: Option<f64>,
    /// The most configurations `auto` measures.
    pub max_trials: u32,
}

impl TuneConfig {
    /// `tune.NAME`.
    pub fn address(&self) -> String {
        format!("tune.{}", self.name)
    }
}

/// What a stack holds besides its resources: the tune blocks and the clusters' hourly prices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StackExtras {
    pub tunes: Vec<TuneConfig>,
    /// `hourly_price` per cluster, where the stack gives one (USD per node-hour).
    pub hourly_prices: BTreeMap<Address, f64>,
}

/// A top-level block handed over by the loader: its name, file index and block.
pub(crate) type TopBlock<'b> = (String, usize, &'b Block);

fn range_of(x: &impl hcl_edit::Span) -> Range<usize> {
    x.span().unwrap_or(0..0)
}

fn header_range(b: &Block) -> Range<usize> {
    let start = range_of(&b.ident).start;
    let end = b
        .labels
        .last()
        .map(|l| range_of(l).end)
        .unwrap_or(range_of(&b.ident).end);
    start..end
}

/// Decodes every tune block and every cluster's `hourly_price`; problems become located
/// diagnostics in `ld`. `resources` are the decoded resources (to check references).
#[allow(clippy::too_many_arguments)]
pub(crate) fn decode(
    ld: &mut Loader,
    tunes: &[TopBlock],
    clusters: &[TopBlock],
    vars: &BTreeMap<String, Value>,
    failed_vars: &HashSet<String>,
    decls: &Decls,
    resources: &[Resource],
) -> StackExtras {
    let mut out = StackExtras::default();
    for (name, file, block) in clusters {
        let Some(a) = block.body.get_attribute("hourly_price") else {
            continue;
        };
        let dir = ld.files[*file].dir.clone();
        let scope = Scope::new(vars, decls, &dir).with_failed(failed_vars);
        let Some(v) = eval(ld, *file, &scope, &a.value) else {
            continue;
        };
        match v {
            Value::Number(n) if n.is_finite() && n >= 0.0 => {
                out.hourly_prices.insert(
                    Address {
                        kind: Kind::Cluster,
                        name: name.clone(),
                        key: None,
                    },
                    n,
                );
            }
            other => ld.error(
                *file,
                range_of(&a.value),
                format!(
                    "hourly_price: found {}, expected the price of one node-hour in USD, a number of at least 0 such as 0.198",
                    other.describe()
                ),
                None,
            ),
        }
    }
    for (name, file, block) in tunes {
        if let Some(t) = decode_tune(ld, name, *file, block, vars, failed_vars, decls, resources) {
            out.tunes.push(t);
        }
    }
    out
}

fn eval(ld: &mut Loader, file: usize, scope: &Scope, e: &Expression) -> Option<Value> {
    match scope.eval(e) {
        Ok(v) => Some(v),
        Err(err) => {
            // An empty message is a consequence of a problem already reported.
            if !err.message.is_empty() {
                ld.error(file, err.range, err.message, err.help);
            }
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decode_tune(
    ld: &mut Loader,
    name: &str,
    file: usize,
    block: &Block,
    vars: &BTreeMap<String, Value>,
    failed_vars: &HashSet<String>,
    decls: &Decls,
    resources: &[Resource],
) -> Option<TuneConfig> {
    let what = format!("tune \"{name}\"");
    let before = ld.diags.len();
    let dir = ld.files[file].dir.clone();
    let scope = Scope::new(vars, decls, &dir).with_failed(failed_vars);
    let mut attrs: BTreeMap<String, &Attribute> = BTreeMap::new();
    for s in block.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let key = a.key.value().to_string();
                if !TUNE_ATTRS.contains(&key.as_str()) {
                    let help = suggest(&key, TUNE_ATTRS.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"));
                    ld.error(
                        file,
                        range_of(&a.key),
                        format!(
                            "found the unknown attribute `{key}` in {what}, expected one of: {}",
                            TUNE_ATTRS.join(", ")
                        ),
                        help,
                    );
                    continue;
                }
                if attrs.contains_key(&key) {
                    ld.error(
                        file,
                        range_of(&a.key),
                        format!(
                            "found `{key}` a second time in {what}, expected each attribute once"
                        ),
                        None,
                    );
                    continue;
                }
                attrs.insert(key, a);
            }
            Structure::Block(b) => {
                let ident = b.ident.value().to_string();
                let help = TUNE_ATTRS
                    .contains(&ident.as_str())
                    .then(|| format!("`{ident}` is an attribute: write `{ident} = …`"));
                ld.error(
                    file,
                    range_of(&b.ident),
                    format!("found the block `{ident}` in {what}, expected no nested blocks (attributes: {})", TUNE_ATTRS.join(", ")),
                    help,
                );
            }
        }
    }
    // A typed attribute: evaluates it and checks it with `f`, which says what was expected.
    let typed = |ld: &mut Loader,
                 key: &str,
                 f: &dyn Fn(&Value) -> Result<(), String>|
     -> Option<(Value, Range<usize>)> {
        let a = attrs.get(key)?;
        let v = eval(ld, file, &scope, &a.value)?;
        match f(&v) {
            Ok(()) => Some((v, range_of(&a.value))),
            Err(expected) => {
                ld.error(
                    file,
                    range_of(&a.value),
                    format!("{key}: found {}, expected {expected}", v.describe()),
                    None,
                );
                None
            }
        }
    };
    let reference = |kind: Kind| {
        move |v: &Value| -> Result<(), String> {
            let k = kind.as_str();
            match v {
                Value::Ref(r) if r.address.kind == kind && r.attribute.is_none() => {
                    let declared = decls.contains_key(&(kind, r.address.name.clone()));
                    if !declared {
                        return Err(format!(
                            "a reference to a declared {k} ({} is not declared)",
                            r.address
                        ));
                    }
                    if r.address.key.is_none()
                        && matches!(
                            decls.get(&(kind, r.address.name.clone())),
                            Some(super::eval::Instances::Keys(_))
                        )
                    {
                        return Err(format!(
                            "one instance such as {}[\"KEY\"] ({} has for_each)",
                            r.address, r.address
                        ));
                    }
                    Ok(())
                }
                _ => Err(format!("a reference to a {k} such as {k}.NAME")),
            }
        }
    };
    let as_addr = |v: &Value| match v {
        Value::Ref(r) => Some(r.address.clone()),
        _ => None,
    };
    let serving = match typed(ld, "serving", &reference(Kind::Serving)) {
        Some((v, _)) => as_addr(&v),
        None => {
            if !attrs.contains_key("serving") {
                ld.error(
                    file,
                    header_range(block),
                    format!("found {what} without `serving`, expected `serving = serving.NAME` (the resource whose settings vary)"),
                    None,
                );
            }
            None
        }
    };
    let loadtest = match typed(ld, "loadtest", &reference(Kind::Loadtest)) {
        Some((v, r)) => as_addr(&v).map(|a| (a, r)),
        None => {
            if !attrs.contains_key("loadtest") {
                ld.error(
                    file,
                    header_range(block),
                    format!("found {what} without `loadtest`, expected `loadtest = loadtest.NAME` (how to measure: protocol, requests, connections, SLOs)"),
                    None,
                );
            }
            None
        }
    };
    let find = |a: &Address| resources.iter().find(|r| &r.address == a);
    let serving_config = serving.as_ref().and_then(|a| match &find(a)?.config {
        ResourceConfig::Serving(s) => Some(s.clone()),
        _ => None,
    });
    // The load test must measure the tuned resource and have an SLO to tune against.
    if let (Some(s), Some((l, r))) = (&serving, &loadtest)
        && let Some(res) = find(l)
        && let ResourceConfig::Loadtest(lc) = &res.config
    {
        if &lc.target != s {
            ld.error(
                file,
                r.clone(),
                format!("loadtest: found {l}, whose target is {}, expected a load test of {s} (the resource this tune varies)", lc.target),
                None,
            );
        } else if !lc
            .slos
            .iter()
            .any(|x| matches!(x, crate::loadgen::spec::Slo::Latency { .. }))
        {
            ld.error(
                file,
                r.clone(),
                format!("loadtest: found {l} without a latency SLO, expected one such as `slo {{ p99 = \"50ms\" }}`: capacity is the most traffic that meets it"),
                None,
            );
        }
    }
    let space = match attrs.get("space") {
        None => {
            ld.error(
                file,
                header_range(block),
                format!("found {what} without `space`, expected `space = {{ \"batching.max_batch_size\" = [8, 32] }}`"),
                None,
            );
            None
        }
        Some(a) => decode_space(ld, file, &scope, a, serving_config.as_ref()),
    };
    let number = |min: f64, max: f64, expected: String| {
        move |v: &Value| match v {
            Value::Number(n) if n.is_finite() && *n >= min && *n <= max => Ok(()),
            _ => Err(expected.clone()),
        }
    };
    let num = |v: Option<(Value, Range<usize>)>| match v {
        Some((Value::Number(n), _)) => Some(n),
        _ => None,
    };
    let text = |v: Option<(Value, Range<usize>)>| match v {
        Some((Value::String(s), _)) => Some(s),
        _ => None,
    };
    let search = match text(typed(ld, "search", &|v| match v {
        Value::String(s) if s == "grid" || s == "auto" => Ok(()),
        _ => Err("\"grid\" (every combination) or \"auto\" (coordinate descent)".into()),
    })) {
        Some(s) if s == "auto" => Search::Auto,
        _ => Search::Grid,
    };
    let objective = match text(typed(ld, "objective", &|v| {
        match v {
        Value::String(s) if s == "capacity" || s == "cost" => Ok(()),
        _ => Err("\"capacity\" (most requests/s under the SLOs) or \"cost\" (lowest price per million predictions)".into()),
    }
    })) {
        Some(s) if s == "cost" => Objective::Cost,
        _ => Objective::Capacity,
    };
    let rate_expected =
        format!("a rate in requests per second greater than 0 and at most {MAX_RATE}");
    let start_rate = num(typed(
        ld,
        "start_rate",
        &number(f64::MIN_POSITIVE, MAX_RATE, rate_expected.clone()),
    ))
    .unwrap_or(100.0);
    let target_rate = num(typed(
        ld,
        "target_rate",
        &number(f64::MIN_POSITIVE, MAX_RATE, rate_expected),
    ));
    let precision = num(typed(
        ld,
        "precision",
        &number(
            0.001,
            0.5,
            "a fraction from 0.001 to 0.5, such as 0.05 (5%)".into(),
        ),
    ))
    .unwrap_or(0.05);
    let repeats = num(typed(
        ld,
        "repeats",
        &number(1.0, 20.0, "a whole number from 1 to 20".into()),
    ))
    .filter(|n| n.fract() == 0.0);
    if let (None, Some(a)) = (&repeats, attrs.get("repeats"))
        && ld.diags.len() == before
    {
        ld.error(
            file,
            range_of(&a.value),
            "repeats: found a fraction, expected a whole number from 1 to 20".to_string(),
            None,
        );
    }
    let max_trials = num(typed(
        ld,
        "max_trials",
        &number(1.0, 10_000.0, "a whole number from 1 to 10000".into()),
    ))
    .map(|n| n as u32)
    .unwrap_or(50);
    let probe_duration = match typed(ld, "probe_duration", &|v| match v {
        Value::String(s) => match parse_duration(s) {
            Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => Ok(()),
            _ => Err("a duration from 100ms to 1h, such as \"10s\"".into()),
        },
        _ => Err("a duration string such as \"10s\"".into()),
    }) {
        Some((Value::String(s), _)) => parse_duration(&s).ok(),
        _ => None,
    }
    .unwrap_or(Duration::from_secs(10));
    if ld.diags.len() > before {
        return None;
    }
    Some(TuneConfig {
        name: name.to_string(),
        span: ld.span(file, range_of(&block.ident)),
        serving: serving?,
        loadtest: loadtest?.0,
        space: space?,
        search,
        start_rate,
        probe_duration,
        precision,
        repeats: repeats.map(|n| n as u32).unwrap_or(3),
        objective,
        target_rate,
        max_trials,
    })
}

fn decode_space(
    ld: &mut Loader,
    file: usize,
    scope: &Scope,
    a: &Attribute,
    serving: Option<&ServingConfig>,
) -> Option<Vec<Dimension>> {
    let Expression::Object(obj) = &a.value else {
        let found = eval(ld, file, scope, &a.value)
            .map(|v| v.describe())
            .unwrap_or_else(|| "an expression".into());
        ld.error(
            file,
            range_of(&a.value),
            format!("space: found {found}, expected an object of serving attributes to lists of values, such as {{ \"batching.max_batch_size\" = [8, 32] }}"),
            None,
        );
        return None;
    };
    let before = ld.diags.len();
    let mut out: Vec<Dimension> = Vec::new();
    for (k, v) in obj.iter() {
        let key = match k {
            ObjectKey::Ident(i) => i.value().to_string(),
            ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
            ObjectKey::Expression(Expression::Variable(v)) => v.value().to_string(),
            ObjectKey::Expression(e) => {
                ld.error(
                    file,
                    range_of(e),
                    "space: found a computed key, expected a quoted serving attribute such as \"batching.max_batch_size\"".to_string(),
                    None,
                );
                continue;
            }
        };
        let knob = match Knob::parse(&key) {
            Ok(k) => k,
            Err(expected) => {
                ld.error(
                    file,
                    range_of(k),
                    format!("space: found the key \"{key}\", expected {expected}"),
                    None,
                );
                continue;
            }
        };
        if out.iter().any(|d| d.knob == knob) {
            ld.error(
                file,
                range_of(k),
                format!("space: found \"{key}\" a second time, expected each attribute once"),
                None,
            );
            continue;
        }
        if knob == Knob::Batching("max_batch_size".into())
            && serving
                .and_then(|s| s.batching.as_ref())
                .is_some_and(|b| !b.allowed_batch_sizes.is_empty())
        {
            ld.error(
                file,
                range_of(k),
                "space: found \"batching.max_batch_size\" while the serving resource sets allowed_batch_sizes, which must end at max_batch_size; expected a serving resource without allowed_batch_sizes".to_string(),
                None,
            );
            continue;
        }
        let Some(list) = eval(ld, file, scope, v.expr()) else {
            continue;
        };
        let Value::List(items) = list else {
            ld.error(
                file,
                range_of(v.expr()),
                format!("space \"{key}\": found {}, expected a non-empty list of values such as [8, 32]", list.describe()),
                None,
            );
            continue;
        };
        if items.is_empty() {
            ld.error(
                file,
                range_of(v.expr()),
                format!("space \"{key}\": found an empty list, expected at least one value"),
                None,
            );
            continue;
        }
        let mut values: Vec<FlagValue> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            // Point at the element itself where the list is written out.
            let r = match v.expr() {
                Expression::Array(arr) => arr.iter().nth(i).map(range_of),
                _ => None,
            }
            .unwrap_or_else(|| range_of(v.expr()));
            match knob.check(item) {
                Ok(fv) => {
                    if values.contains(&fv) {
                        ld.error(
                            file,
                            r,
                            format!("space \"{key}\": found {fv} twice, expected each value once"),
                            None,
                        );
                    } else {
                        values.push(fv);
                    }
                }
                Err(expected) => ld.error(
                    file,
                    r,
                    format!(
                        "space \"{key}\": found {}, expected {expected}",
                        item.describe()
                    ),
                    None,
                ),
            }
        }
        out.push(Dimension { knob, values });
    }
    if out.is_empty() && ld.diags.len() == before {
        ld.error(
            file,
            range_of(&a.value),
            "space: found no attributes, expected at least one such as \"batching.max_batch_size\" = [8, 32]".to_string(),
            None,
        );
    }
    (ld.diags.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use crate::stack::types::FlagValue;
    use crate::stack::{VarInputs, load_with_env};

    fn stack(tune: &str) -> String {
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/model/regression");
        format!(
            "cluster \"local\" {{\n  provider     = \"local\"\n  hourly_price = 0.5\n}}\n\nmodel \"m\" {{\n  base_path = \"{model}\"\n}}\n\nserving \"tf\" {{\n  cluster = cluster.local\n  models  = [model.m]\n}}\n\nloadtest \"lt\" {{\n  target  = serving.tf\n  request = \"{{\\\"instances\\\": [[1.0]]}}\"\n  stage {{\n    rate     = 10\n    duration = \"1s\"\n  }}\n  slo {{\n    p99 = \"50ms\"\n  }}\n}}\n\n{tune}\n"
        )
    }

    fn load(text: &str) -> Result<super::StackExtras, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.hcl");
        std::fs::write(&p, text).unwrap();
        super::super::load::load_stack_full(&p, &VarInputs::default(), &[])
            .map(|(_, x)| x)
            .map_err(|d| d.to_string())
    }

    #[test]
    fn a_tune_block_is_decoded_with_defaults_and_the_cluster_price() {
        let x = load(&stack(
            "tune \"b\" {\n  serving  = serving.tf\n  loadtest = loadtest.lt\n  space = {\n    \"batching.max_batch_size\" = [8, 32]\n    \"flags.tensorflow_inter_op_parallelism\" = [1, 2]\n  }\n}",
        ))
        .unwrap();
        let t = &x.tunes[0];
        assert_eq!(t.address(), "tune.b");
        assert_eq!(t.space.len(), 2);
        assert_eq!(
            t.space[0].values,
            vec![FlagValue::Int(8), FlagValue::Int(32)]
        );
        assert_eq!(t.repeats, 3);
        assert_eq!(t.search, super::Search::Grid);
        assert_eq!(
            x.hourly_prices.values().copied().collect::<Vec<_>>(),
            vec![0.5]
        );
        // The load() used by plan and apply accepts the same stack.
        let _ = load_with_env;
    }

    #[test]
    fn tune_errors_are_located_and_say_what_was_expected() {
        let e = load(&stack(
            "tune \"b\" {\n  serving  = serving.tf\n  loadtest = loadtest.lt\n  space = {\n    \"batching.max_batch_sise\" = [8]\n    \"batching.num_batch_threads\" = [0, 2]\n    \"replicas\" = 2\n  }\n  search = \"random\"\n  colour = 1\n}",
        ))
        .unwrap_err();
        assert!(e.contains("s.hcl:31:5"), "{e}");
        assert!(e.contains("did you mean batching.max_batch_size?"), "{e}");
        assert!(e.contains("s.hcl:32:37"), "{e}");
        assert!(
            e.contains("space \"batching.num_batch_threads\": found the number 0, expected a whole number from 1 to 1024"),
            "{e}"
        );
        assert!(e.contains("expected a non-empty list of values"), "{e}");
        assert!(
            e.contains("search: found the string \"random\", expected \"grid\""),
            "{e}"
        );
        assert!(
            e.contains("found the unknown attribute `colour` in tune \"b\""),
            "{e}"
        );
    }

    #[test]
    fn a_tune_must_measure_the_resource_it_varies() {
        let e = load(&stack(
            "tune \"b\" {\n  serving  = serving.tf\n  loadtest = serving.tf\n}",
        ))
        .unwrap_err();
        assert!(
            e.contains(
                "loadtest: found a reference to serving.tf, expected a reference to a loadtest"
            ),
            "{e}"
        );
        assert!(e.contains("without `space`"), "{e}");
    }
}
