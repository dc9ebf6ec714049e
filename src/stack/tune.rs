//! The `tune` block: which serving settings `benchstack tune` varies, how it measures them and
//! what it optimises. Tune blocks are not resources (plan and apply ignore them); they are
//! decoded and checked with the rest of the stack (`load/tune.rs`, with the optional
//! `hourly_price` of a cluster: what a node costs, for the tuner's cost figures), so
//! `validate` locates every problem. Their attributes are declared in `schema::TUNE`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::schema::{BATCHING, RESERVED_FLAGS, SERVING, Type};
use super::value::{Value, suggest};
use crate::vocab::resources::{Address, FlagValue, ServingConfig, Span};

/// The `batching` attributes a space may vary: every scalar one of `schema::BATCHING`
/// (`allowed_batch_sizes` is a list, not a knob).
pub fn batching_knobs() -> Vec<&'static str> {
    BATCHING
        .attrs
        .iter()
        .filter(|a| !matches!(a.ty, Type::UintList { .. }))
        .map(|a| a.name)
        .collect()
}

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

/// One serving attribute a tune varies, in dotted form. Ordered by that dotted form, so that
/// a trial's settings read (and key stored runs) in the same order as before knobs were typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl Ord for Knob {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialOrd for Knob {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Knob {
    pub fn parse(key: &str) -> Result<Knob, String> {
        let knobs = batching_knobs();
        let expected = format!(
            "a serving attribute in dotted form: batching.NAME ({}), flags.NAME, replicas, image, cpu or memory",
            knobs.join(", ")
        );
        match key {
            "replicas" => return Ok(Knob::Replicas),
            "image" => return Ok(Knob::Image),
            "cpu" => return Ok(Knob::Cpu),
            "memory" => return Ok(Knob::Memory),
            _ => {}
        }
        if let Some(name) = key.strip_prefix("batching.") {
            if knobs.contains(&name) {
                return Ok(Knob::Batching(name.to_string()));
            }
            let hint = suggest(name, knobs.iter().copied())
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

    /// Checks one value of this knob as the serving block checks it (ranges and expected
    /// texts from `schema::SERVING` and `schema::BATCHING`); returns it typed or what was
    /// expected.
    pub fn check(&self, v: &Value) -> Result<FlagValue, String> {
        let uint = |ty: &Type| -> Result<FlagValue, String> {
            let Type::Uint { min, max } = *ty else {
                return Err(ty.expected());
            };
            match v {
                Value::Number(n) if n.fract() == 0.0 && *n >= min as f64 && *n <= max as f64 => {
                    Ok(FlagValue::Int(*n as i64))
                }
                _ => Err(ty.expected()),
            }
        };
        match self {
            Knob::Batching(n) => {
                // A knob read back from a run record may name anything.
                let Some(a) = BATCHING
                    .get(n)
                    .filter(|a| !matches!(a.ty, Type::UintList { .. }))
                else {
                    return Err(format!(
                        "a batching attribute a tune may vary: {}",
                        batching_knobs().join(", ")
                    ));
                };
                let ty = a.ty;
                match ty {
                    Type::Bool => match v {
                        Value::Bool(b) => Ok(FlagValue::Bool(*b)),
                        _ => Err(ty.expected()),
                    },
                    _ => uint(&ty),
                }
            }
            Knob::Flag(_) => match v {
                Value::Bool(b) => Ok(FlagValue::Bool(*b)),
                Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                    Ok(FlagValue::Int(*n as i64))
                }
                Value::Number(n) => Ok(FlagValue::Float(*n)),
                Value::String(s) => Ok(FlagValue::String(s.clone())),
                _ => Err("a scalar flag value (bool, number or string)".into()),
            },
            Knob::Replicas => uint(&SERVING.attr("replicas").ty),
            Knob::Image => match v {
                Value::String(s) if !s.trim().is_empty() => Ok(FlagValue::String(s.clone())),
                _ => Err(format!(
                    "an image name such as {}",
                    SERVING.attr("image").example
                )),
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
            Knob::Cpu => SERVING.attr("cpu").ty.expected(),
            _ => SERVING.attr("memory").ty.expected(),
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
    #[serde(with = "crate::vocab::load::duration_secs")]
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
