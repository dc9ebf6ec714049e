//! What TF Serving needs, rendered from a serving configuration: models.config,
//! batching_parameters.txt (text protos, see API-NOTES.md) and the flag list. The output is
//! deterministic (fixed field order, sorted flags) so plans diff cleanly.

pub mod capacity;
pub mod k8s;
pub mod prices;

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::vocab::resources::{
    BatchingConfig, FlagValue, ModelConfig, ServingConfig, ServingPreset,
};

pub const MODELS_CONFIG: &str = "models.config";
pub const BATCHING_PARAMETERS: &str = "batching_parameters.txt";
pub const FLAGS: &str = "flags";
/// monitoring.config: turns on TF Serving's Prometheus page, which benchstack scrapes at the
/// start and end of every load-test stage.
pub const MONITORING_CONFIG: &str = "monitoring.config";
/// Where that page is served, on the REST port.
pub const METRICS_PATH: &str = "/monitoring/prometheus/metrics";

pub use crate::vocab::resources::MANAGED_FLAGS;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ManifestError {
    #[error(
        "flag `{0}` is set by benchstack itself (from `models` and `batching`); remove it from `flags`"
    )]
    ManagedFlag(String),
    #[error("a serving resource needs at least one model")]
    NoModels,
    #[error("{0} runs on Kubernetes and needs `image` (e.g. \"tensorflow/serving:2.19.0\")")]
    MissingImage(String),
    #[error(
        "{0} runs on Kubernetes and needs `loadgen_image` (built from deploy/loadgen.Dockerfile)"
    )]
    MissingLoadgenImage(String),
    #[error(
        "the worker spec is {bytes} bytes with its request data inline, over the {} a pod's environment variable can carry; use a smaller CSV (a sample of rows) or a request body",
        k8s::MAX_WORKER_SPEC_BYTES
    )]
    WorkerSpecTooLarge { bytes: usize },
    #[error("cannot render the Kubernetes objects: {0}")]
    Render(String),
    #[error("cannot read the plan's rendered objects: {0}")]
    Rendered(String),
}

/// Where the model base paths point: this machine's path, or the path inside the serving image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelPaths {
    Local,
    Image,
}

/// `model_config_list { config { … } }` for the given models, in the given order.
pub fn models_config(models: &[ModelConfig], paths: ModelPaths) -> Result<String, ManifestError> {
    if models.is_empty() {
        return Err(ManifestError::NoModels);
    }
    let mut out = String::from("model_config_list {\n");
    for m in models {
        let base = match paths {
            ModelPaths::Local => m.base_path.display().to_string(),
            ModelPaths::Image => m
                .serving_path
                .clone()
                .unwrap_or_else(|| format!("/models/{}", m.name)),
        };
        let _ = write!(
            out,
            "  config {{\n    name: {}\n    base_path: {}\n    model_platform: \"tensorflow\"\n    model_version_policy {{ latest {{ num_versions: 1 }} }}\n  }}\n",
            quote(&m.name),
            quote(&base)
        );
    }
    out.push_str("}\n");
    Ok(out)
}

/// batching_parameters.txt: only the fields the stack sets, in BatchingParameters' field order,
/// scalars wrapped as `{ value: N }` as TF Serving expects.
pub fn batching_parameters(b: &BatchingConfig) -> String {
    let mut out = String::new();
    let mut wrapped = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            let _ = writeln!(out, "{name} {{ value: {v} }}");
        }
    };
    wrapped("max_batch_size", b.max_batch_size.map(|v| v.to_string()));
    wrapped(
        "batch_timeout_micros",
        b.batch_timeout_micros.map(|v| v.to_string()),
    );
    wrapped(
        "max_enqueued_batches",
        b.max_enqueued_batches.map(|v| v.to_string()),
    );
    wrapped(
        "num_batch_threads",
        b.num_batch_threads.map(|v| v.to_string()),
    );
    wrapped(
        "pad_variable_length_inputs",
        b.pad_variable_length_inputs.map(|v| v.to_string()),
    );
    wrapped(
        "enable_large_batch_splitting",
        b.enable_large_batch_splitting.map(|v| v.to_string()),
    );
    wrapped(
        "max_execution_batch_size",
        b.max_execution_batch_size.map(|v| v.to_string()),
    );
    // A repeated plain int64, not a wrapper.
    for s in &b.allowed_batch_sizes {
        let _ = writeln!(out, "allowed_batch_sizes: {s}");
    }
    out
}

/// monitoring.config (`MonitoringConfig` text proto, tensorflow_serving/config/
/// monitoring_config.proto): the Prometheus page on, at [`METRICS_PATH`].
pub fn monitoring_config() -> String {
    format!(
        "prometheus_config {{\n  enable: true\n  path: {}\n}}\n",
        quote(METRICS_PATH)
    )
}

/// Paths the flags refer to.
#[derive(Debug, Clone)]
pub struct FilePaths {
    pub models_config: String,
    pub batching_parameters: String,
    pub monitoring_config: String,
}

impl FilePaths {
    /// The bare file names, as shown in plans (the real directory is chosen at apply).
    pub fn names() -> Self {
        FilePaths::in_dir("")
    }

    /// The files under `dir` (`""`: the bare names).
    pub fn in_dir(dir: &str) -> Self {
        let at = |name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{}/{name}", dir.trim_end_matches('/'))
            }
        };
        FilePaths {
            models_config: at(MODELS_CONFIG),
            batching_parameters: at(BATCHING_PARAMETERS),
            monitoring_config: at(MONITORING_CONFIG),
        }
    }
}

/// The tensorflow_model_server flags (without ports): the managed ones first, then the
/// stack's `flags` sorted by name, each as `--name=value`.
pub fn flag_list(s: &ServingConfig, files: &FilePaths) -> Result<Vec<String>, ManifestError> {
    if let Some(f) = s.flags.keys().find(|k| MANAGED_FLAGS.contains(&k.as_str())) {
        return Err(ManifestError::ManagedFlag(f.clone()));
    }
    let mut flags = vec![
        format!("--model_config_file={}", files.models_config),
        format!("--monitoring_config_file={}", files.monitoring_config),
    ];
    if s.batching.is_some() {
        flags.push("--enable_batching=true".into());
        flags.push(format!(
            "--batching_parameters_file={}",
            files.batching_parameters
        ));
    }
    for (k, v) in &s.flags {
        let v = match v {
            FlagValue::String(s) => s.clone(),
            other => other.to_string(),
        };
        flags.push(format!("--{k}={v}"));
    }
    Ok(flags)
}

/// Everything rendered for a serving resource, keyed by file name (models.config,
/// monitoring.config, batching_parameters.txt with batching; `flags` holds the flag list, one
/// per line): what the plan diffs and the local provider writes.
pub fn render_serving(
    s: &ServingConfig,
    models: &[ModelConfig],
    paths: ModelPaths,
) -> Result<BTreeMap<String, String>, ManifestError> {
    let mut files = BTreeMap::new();
    files.insert(MODELS_CONFIG.to_string(), models_config(models, paths)?);
    files.insert(MONITORING_CONFIG.to_string(), monitoring_config());
    if let Some(b) = &s.batching {
        files.insert(BATCHING_PARAMETERS.to_string(), batching_parameters(b));
    }
    let mut flags = flag_list(s, &FilePaths::names())?.join("\n");
    flags.push('\n');
    files.insert(FLAGS.to_string(), flags);
    Ok(files)
}

/// The generated Dockerfile of a `preset = "serving"` image (see `serving_image_files`).
pub const DOCKERFILE: &str = "Dockerfile";

/// The context of a `preset = "serving"` image, as the plan shows it: the generated
/// Dockerfile and the configuration files at `config/`, the very bytes rendered for the
/// serving resource (`serving_files`, from `render_serving`), so the image and the
/// ConfigMap hold the same files. The models' version folders are added from this machine
/// under `models/NAME/` (`image_context::version_folders`) and are not text files of the plan.
pub fn serving_image_files(
    preset: &ServingPreset,
    serving_files: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut docker = format!(
        "# Generated by benchstack (image preset \"serving\"{}): the stack, not this file, is\n# edited. TF Serving reads {}/ from the serving resource's ConfigMap, mounted over\n# this copy of the same rendered files.\nFROM {}\n",
        preset
            .serving
            .as_ref()
            .map(|s| format!(" for {s}"))
            .unwrap_or_default(),
        k8s::CONFIG_DIR,
        preset.base_image
    );
    for name in [MODELS_CONFIG, BATCHING_PARAMETERS, MONITORING_CONFIG] {
        if let Some(text) = serving_files.get(name) {
            files.insert(format!("config/{name}"), text.clone());
        }
    }
    let _ = writeln!(docker, "COPY config/ {}/", k8s::CONFIG_DIR);
    for m in &preset.models {
        if m.serving_path.starts_with("gs://") {
            let _ = writeln!(
                docker,
                "# {}: TF Serving reads it from {} (not copied)",
                m.name, m.serving_path
            );
        } else {
            let _ = writeln!(
                docker,
                "COPY models/{}/ {}/",
                m.name,
                m.serving_path.trim_end_matches('/')
            );
        }
    }
    docker.push_str("EXPOSE 8500 8501\n");
    files.insert(DOCKERFILE.to_string(), docker);
    files
}

fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::{Address, Kind};

    fn serving(batching: Option<BatchingConfig>) -> ServingConfig {
        ServingConfig {
            cluster: Address {
                kind: Kind::Cluster,
                name: "local".into(),
                key: None,
            },
            image: None,
            image_from: None,
            replicas: 1,
            models: vec![],
            flags: [
                (
                    "tensorflow_intra_op_parallelism".to_string(),
                    FlagValue::Int(4),
                ),
                ("enable_model_warmup".to_string(), FlagValue::Bool(false)),
            ]
            .into_iter()
            .collect(),
            batching,
            cpu: None,
            memory: None,
        }
    }

    fn model() -> ModelConfig {
        ModelConfig {
            name: "regression".into(),
            base_path: "/m/regression".into(),
            serving_path: None,
        }
    }

    #[test]
    fn models_config_reads_back_in_the_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(MODELS_CONFIG);
        std::fs::write(&p, models_config(&[model()], ModelPaths::Local).unwrap()).unwrap();
        let read = crate::serve::config::read_model_config(&p).unwrap();
        assert_eq!(read[0].name, "regression");
        assert_eq!(read[0].base_path, std::path::PathBuf::from("/m/regression"));
        let image = models_config(&[model()], ModelPaths::Image).unwrap();
        assert!(
            image.contains("base_path: \"/models/regression\""),
            "{image}"
        );
    }

    #[test]
    fn batching_parameters_read_back_in_the_stand_in() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(BATCHING_PARAMETERS);
        let b = BatchingConfig {
            max_batch_size: Some(16),
            batch_timeout_micros: Some(1000),
            max_enqueued_batches: Some(100),
            num_batch_threads: Some(2),
            allowed_batch_sizes: vec![4, 8, 16],
            ..Default::default()
        };
        let text = batching_parameters(&b);
        assert!(text.starts_with("max_batch_size { value: 16 }\n"), "{text}");
        std::fs::write(&p, text).unwrap();
        let read = crate::serve::config::read_batching_parameters(&p).unwrap();
        assert_eq!(read.max_batch_size, 16);
        assert_eq!(read.batch_timeout_micros, 1000);
        assert_eq!(read.allowed_batch_sizes, vec![4, 8, 16]);
    }

    #[test]
    fn monitoring_config_reads_back_in_the_stand_in_as_the_metrics_page() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(MONITORING_CONFIG);
        std::fs::write(&p, monitoring_config()).unwrap();
        let read = crate::serve::config::read_monitoring_config(&p).unwrap();
        assert_eq!(read.as_deref(), Some(METRICS_PATH));
        let files = render_serving(&serving(None), &[model()], ModelPaths::Local).unwrap();
        assert_eq!(files[MONITORING_CONFIG], monitoring_config());
        assert!(
            files[FLAGS].contains("--monitoring_config_file=monitoring.config\n"),
            "{}",
            files[FLAGS]
        );
    }

    #[test]
    fn flags_are_managed_first_then_sorted() {
        let s = serving(Some(BatchingConfig::default()));
        let flags = flag_list(&s, &FilePaths::names()).unwrap();
        assert_eq!(
            flags,
            [
                "--model_config_file=models.config",
                "--monitoring_config_file=monitoring.config",
                "--enable_batching=true",
                "--batching_parameters_file=batching_parameters.txt",
                "--enable_model_warmup=false",
                "--tensorflow_intra_op_parallelism=4",
            ]
        );
        let no_batching = flag_list(&serving(None), &FilePaths::names()).unwrap();
        assert!(!no_batching.iter().any(|f| f.contains("batching")));
    }

    #[test]
    fn a_managed_flag_in_the_stack_is_refused() {
        let mut s = serving(None);
        s.flags.insert("port".into(), FlagValue::Int(1));
        assert_eq!(
            flag_list(&s, &FilePaths::names()),
            Err(ManifestError::ManagedFlag("port".into()))
        );
    }
}
