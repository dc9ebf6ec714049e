//! Loaded models: version discovery under a base path, the signature (from saved_model.pb when
//! present, else from the ONNX graph) and inference with tract on the ONNX export.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message as _;
use tract_onnx::prelude::*;

use super::config::{ModelEntry, VersionPolicy};
use crate::proto::tensorflow::SavedModel;

pub const DEFAULT_SIGNATURE: &str = "serving_default";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model `{model}`: base path {} does not exist or is not a directory", path.display())]
    NoBasePath { model: String, path: PathBuf },
    #[error("model `{model}`: no numeric version folders under {}", path.display())]
    NoVersions { model: String, path: PathBuf },
    #[error("model `{model}`: version {version} requested by the version policy is not under {}", path.display())]
    MissingVersion {
        model: String,
        version: i64,
        path: PathBuf,
    },
    #[error("{} not found: the stand-in (benchstack serve) runs the ONNX export that must sit beside the SavedModel in each version folder (examples/model/create_model.py writes it); use tensorflow_model_server for a SavedModel alone", path.display())]
    NoOnnx { path: PathBuf },
    #[error("{}: {message}", path.display())]
    Onnx { path: PathBuf, message: String },
    #[error("{}: not a SavedModel: {message}", path.display())]
    SavedModel { path: PathBuf, message: String },
    #[error(
        "model `{model}`: version label `{label}` points at version {version}, which is not served"
    )]
    BadLabel {
        model: String,
        label: String,
        version: i64,
    },
}

/// A dense float tensor of the signature: name (the signature key) and shape (-1 = any).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub key: String,
    /// The graph tensor name (`serving_default_features:0`).
    pub tensor_name: String,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct Signature {
    pub name: String,
    pub method_name: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Width of the single input row (the product of the non-batch dims).
    pub fn row_width(&self) -> usize {
        self.inputs[0]
            .shape
            .iter()
            .skip(1)
            .map(|d| (*d).max(1) as usize)
            .product()
    }

    pub fn output_row_width(&self) -> usize {
        self.outputs[0]
            .shape
            .iter()
            .skip(1)
            .map(|d| (*d).max(1) as usize)
            .product()
    }
}

type Plan = Arc<TypedRunnableModel>;

/// One servable: a model version ready to run.
pub struct Servable {
    pub name: String,
    pub version: i64,
    pub path: PathBuf,
    pub signature: Signature,
    plan: Plan,
}

impl std::fmt::Debug for Servable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Servable")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish()
    }
}

/// The most rows one inference call runs (see `Servable::run`).
pub const MAX_ROWS_PER_RUN: usize = 8192;

impl Servable {
    /// Runs `rows` rows (row-major, `signature.row_width()` floats each); returns the output rows.
    /// More rows than `MAX_ROWS_PER_RUN` run in slices of that many, so the model's
    /// intermediate activations (rows × the widest layer) stay bounded however many rows a
    /// request carries: a 64 MiB request of broadcast values is 1.6 M rows of the example model,
    /// whose 1024-wide layers would otherwise want gigabytes at once.
    pub fn run(&self, rows: usize, input: Vec<f32>) -> Result<Vec<f32>, String> {
        if rows <= MAX_ROWS_PER_RUN {
            return self.run_slice(rows, &input);
        }
        let width = self.signature.row_width().max(1);
        let mut out = Vec::with_capacity(rows.saturating_mul(self.signature.output_row_width()));
        for slice in input.chunks(MAX_ROWS_PER_RUN.saturating_mul(width)) {
            out.extend(self.run_slice(slice.len() / width, slice)?);
        }
        Ok(out)
    }

    fn run_slice(&self, rows: usize, input: &[f32]) -> Result<Vec<f32>, String> {
        let width = self.signature.row_width();
        let tensor = Tensor::from_shape(&[rows, width], input).map_err(|e| e.to_string())?;
        let out = self
            .plan
            .run(tvec!(tensor.into()))
            .map_err(|e| format!("inference failed: {e}"))?;
        let first = out.first().ok_or("the model produced no output")?;
        let view = first
            .to_plain_array_view::<f32>()
            .map_err(|e| e.to_string())?;
        Ok(view.iter().copied().collect())
    }
}

/// All versions of one model, plus its labels.
#[derive(Debug)]
pub struct LoadedModel {
    pub name: String,
    pub versions: BTreeMap<i64, Arc<Servable>>,
    pub labels: BTreeMap<String, i64>,
}

impl LoadedModel {
    pub fn latest(&self) -> Option<&Arc<Servable>> {
        self.versions.values().next_back()
    }
}

pub fn load(entry: &ModelEntry) -> Result<LoadedModel, LoadError> {
    let base = &entry.base_path;
    if !base.is_dir() {
        return Err(LoadError::NoBasePath {
            model: entry.name.clone(),
            path: base.clone(),
        });
    }
    let mut available: Vec<i64> = std::fs::read_dir(base)
        .map_err(|_| LoadError::NoBasePath {
            model: entry.name.clone(),
            path: base.clone(),
        })?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
        .filter(|v| *v >= 0)
        .collect();
    available.sort_unstable();
    if available.is_empty() {
        return Err(LoadError::NoVersions {
            model: entry.name.clone(),
            path: base.clone(),
        });
    }
    let chosen: Vec<i64> = match &entry.policy {
        VersionPolicy::Latest(n) => available.iter().rev().take(*n).copied().collect(),
        VersionPolicy::All => available.clone(),
        VersionPolicy::Specific(vs) => {
            for v in vs {
                if !available.contains(v) {
                    return Err(LoadError::MissingVersion {
                        model: entry.name.clone(),
                        version: *v,
                        path: base.clone(),
                    });
                }
            }
            vs.clone()
        }
    };
    let mut versions = BTreeMap::new();
    for v in chosen {
        let dir = base.join(v.to_string());
        versions.insert(v, Arc::new(load_version(&entry.name, v, &dir)?));
    }
    for (label, v) in &entry.labels {
        if !versions.contains_key(v) {
            return Err(LoadError::BadLabel {
                model: entry.name.clone(),
                label: label.clone(),
                version: *v,
            });
        }
    }
    Ok(LoadedModel {
        name: entry.name.clone(),
        versions,
        labels: entry.labels.clone(),
    })
}

fn load_version(name: &str, version: i64, dir: &Path) -> Result<Servable, LoadError> {
    let onnx_path = dir.join("model.onnx");
    if !onnx_path.is_file() {
        return Err(LoadError::NoOnnx { path: onnx_path });
    }
    let onnx_err = |e: TractError| LoadError::Onnx {
        path: onnx_path.clone(),
        message: format!("{e:#}"),
    };
    let model = tract_onnx::onnx()
        .model_for_path(&onnx_path)
        .map_err(onnx_err)?;
    let typed = model.into_typed().map_err(onnx_err)?;

    let onnx_inputs: Vec<(String, Vec<i64>)> = typed
        .input_outlets()
        .map_err(onnx_err)?
        .iter()
        .map(|o| {
            (
                typed.node(o.node).name.clone(),
                fact_shape(typed.outlet_fact(*o).ok()),
            )
        })
        .collect();
    let onnx_outputs: Vec<(String, Vec<i64>)> = typed
        .output_outlets()
        .map_err(onnx_err)?
        .iter()
        .map(|o| {
            let label = typed
                .outlet_label(*o)
                .map(|s| s.to_string())
                .unwrap_or_else(|| typed.node(o.node).name.clone());
            (label, fact_shape(typed.outlet_fact(*o).ok()))
        })
        .collect();
    if onnx_inputs.len() != 1 || onnx_outputs.is_empty() {
        return Err(LoadError::Onnx {
            path: onnx_path.clone(),
            message: format!(
                "the stand-in serves models with one float input; this one has {} inputs",
                onnx_inputs.len()
            ),
        });
    }

    let signature = match read_saved_model_signature(dir)? {
        Some(mut sig) => {
            // Shapes from the ONNX graph are authoritative for what tract will accept.
            if let Some(spec) = sig.inputs.first_mut()
                && spec.shape.is_empty()
            {
                spec.shape = onnx_inputs[0].1.clone();
            }
            for o in &mut sig.outputs {
                if o.shape.is_empty() {
                    o.shape = onnx_outputs[0].1.clone();
                }
            }
            sig
        }
        None => Signature {
            name: DEFAULT_SIGNATURE.into(),
            method_name: "tensorflow/serving/predict".into(),
            inputs: vec![TensorSpec {
                key: strip_port(&onnx_inputs[0].0),
                tensor_name: onnx_inputs[0].0.clone(),
                shape: onnx_inputs[0].1.clone(),
            }],
            outputs: vec![TensorSpec {
                key: strip_port(&onnx_outputs[0].0),
                tensor_name: onnx_outputs[0].0.clone(),
                shape: onnx_outputs[0].1.clone(),
            }],
        },
    };
    if signature.inputs.len() != 1 || signature.outputs.len() != 1 {
        return Err(LoadError::SavedModel {
            path: dir.join("saved_model.pb"),
            message: format!(
                "signature `{}` has {} inputs and {} outputs; the stand-in serves one input and one output",
                signature.name,
                signature.inputs.len(),
                signature.outputs.len()
            ),
        });
    }
    let plan = typed
        .into_optimized()
        .map_err(onnx_err)?
        .into_runnable()
        .map_err(onnx_err)?;
    Ok(Servable {
        name: name.to_string(),
        version,
        path: dir.to_path_buf(),
        signature,
        plan,
    })
}

fn fact_shape(fact: Option<&TypedFact>) -> Vec<i64> {
    fact.map(|f| f.shape.iter().map(|d| d.to_i64().unwrap_or(-1)).collect())
        .unwrap_or_default()
}

fn strip_port(name: &str) -> String {
    name.split(':').next().unwrap_or(name).to_string()
}

/// The `serving_default` signature of saved_model.pb, if the folder has one.
fn read_saved_model_signature(dir: &Path) -> Result<Option<Signature>, LoadError> {
    let path = dir.join("saved_model.pb");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    let sm = SavedModel::decode(bytes.as_slice()).map_err(|e| LoadError::SavedModel {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let Some(sig) = sm
        .meta_graphs
        .iter()
        .find_map(|mg| mg.signature_def.get(DEFAULT_SIGNATURE))
    else {
        return Ok(None);
    };
    let spec = |(key, info): (&String, &crate::proto::serving::TensorInfo)| TensorSpec {
        key: key.clone(),
        tensor_name: info.name.clone(),
        shape: info
            .tensor_shape
            .as_ref()
            .map(|s| s.dim.iter().map(|d| d.size).collect())
            .unwrap_or_default(),
    };
    Ok(Some(Signature {
        name: DEFAULT_SIGNATURE.into(),
        method_name: sig.method_name.clone(),
        inputs: sig.inputs.iter().map(spec).collect(),
        outputs: sig.outputs.iter().map(spec).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_rows_run_in_bounded_slices_with_the_same_outputs_as_one_run() {
        let base =
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/model/regression");
        let model = load(&crate::serve::single_model("regression", base)).unwrap();
        let servable = model.latest().unwrap();
        let width = servable.signature.row_width();
        let rows = MAX_ROWS_PER_RUN + 3;
        let input: Vec<f32> = (0..rows * width).map(|i| (i % 97) as f32 / 97.0).collect();
        let sliced = servable.run(rows, input.clone()).unwrap();
        assert_eq!(sliced.len(), rows * servable.signature.output_row_width());
        // The last rows, run on their own, give the same outputs as inside the sliced run.
        let tail_rows = 5;
        let tail = servable
            .run_slice(tail_rows, &input[(rows - tail_rows) * width..])
            .unwrap();
        let out_w = servable.signature.output_row_width();
        for (a, b) in tail.iter().zip(&sliced[(rows - tail_rows) * out_w..]) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
