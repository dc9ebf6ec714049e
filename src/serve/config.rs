//! TF Serving's configuration files, read the way tensorflow_model_server reads them:
//! models.config (`ModelServerConfig` text proto) and batching_parameters.txt
//! (`BatchingParameters` text proto with wrapped scalars).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::textproto::{self, Field, Message, Value};

pub use crate::vocab::limits::{
    MAX_BATCH_SIZE, MAX_BATCH_TIMEOUT_MICROS, MAX_ENQUEUED_BATCHES, MAX_THREADS,
};
/// Largest config file read (models.config, batching_parameters.txt).
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Which versions under a base path are served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    /// The `n` highest numeric versions (TF Serving's default is `latest { num_versions: 1 }`).
    Latest(usize),
    All,
    Specific(Vec<i64>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    pub base_path: PathBuf,
    pub policy: VersionPolicy,
    pub labels: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchingParams {
    pub max_batch_size: usize,
    pub batch_timeout_micros: u64,
    pub max_enqueued_batches: usize,
    pub num_batch_threads: usize,
    pub allowed_batch_sizes: Vec<usize>,
    pub pad_variable_length_inputs: bool,
    pub enable_large_batch_splitting: bool,
    pub max_execution_batch_size: Option<usize>,
    /// Labels `queuing_latency` (TF Serving: "batch_threads" when unset).
    pub thread_pool_name: Option<String>,
}

impl Default for BatchingParams {
    /// TF Serving's defaults for a session-run batcher.
    fn default() -> Self {
        BatchingParams {
            max_batch_size: 1000,
            batch_timeout_micros: 0,
            max_enqueued_batches: 10,
            num_batch_threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            allowed_batch_sizes: Vec::new(),
            pad_variable_length_inputs: false,
            enable_large_batch_splitting: false,
            max_execution_batch_size: None,
            thread_pool_name: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}:{col}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        col: usize,
        message: String,
    },
}

fn invalid(path: &Path, line: usize, col: usize, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        col,
        message: message.into(),
    }
}

fn read(path: &Path) -> Result<Message, ConfigError> {
    use std::io::Read as _;
    let read_err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut text = String::new();
    // One byte past the limit tells a file at the limit from a larger one.
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read_err)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(invalid(
            path,
            1,
            1,
            format!(
                "the file is larger than {} MiB; a config file is a few lines",
                MAX_CONFIG_BYTES >> 20
            ),
        ));
    }
    textproto::parse(&text).map_err(|e| invalid(path, e.line, e.col, e.message))
}

fn expect_message<'a>(path: &Path, f: &'a Field) -> Result<&'a Message, ConfigError> {
    match &f.value {
        Value::Message(m) => Ok(m),
        other => Err(invalid(
            path,
            f.line,
            f.col,
            format!("`{}` must be a message `{{ … }}`, found {other}", f.name),
        )),
    }
}

fn expect_string(path: &Path, f: &Field) -> Result<String, ConfigError> {
    match &f.value {
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(
            path,
            f.line,
            f.col,
            format!("`{}` must be a quoted string, found {other}", f.name),
        )),
    }
}

fn expect_int(path: &Path, f: &Field) -> Result<i64, ConfigError> {
    match &f.value {
        Value::Scalar(s) => s.parse().map_err(|_| {
            let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
            let message = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                format!("`{}` is {s}, out of range for a 64-bit integer", f.name)
            } else {
                format!("`{}` must be an integer, found `{s}`", f.name)
            };
            invalid(path, f.line, f.col, message)
        }),
        other => Err(invalid(
            path,
            f.line,
            f.col,
            format!("`{}` must be an integer, found {other}", f.name),
        )),
    }
}

fn expect_bool(path: &Path, f: &Field) -> Result<bool, ConfigError> {
    match &f.value {
        Value::Scalar(s) if s == "true" => Ok(true),
        Value::Scalar(s) if s == "false" => Ok(false),
        other => Err(invalid(
            path,
            f.line,
            f.col,
            format!("`{}` must be true or false, found {other}", f.name),
        )),
    }
}

fn unknown(path: &Path, f: &Field, in_what: &str, known: &[&str]) -> ConfigError {
    invalid(
        path,
        f.line,
        f.col,
        format!(
            "unknown field `{}` in {in_what}; expected one of: {}",
            f.name,
            known.join(", ")
        ),
    )
}

/// Reads a models.config. Relative base paths resolve against the current directory, as
/// tensorflow_model_server does.
pub fn read_model_config(path: &Path) -> Result<Vec<ModelEntry>, ConfigError> {
    let root = read(path)?;
    let mut models = Vec::new();
    for f in &root.fields {
        if f.name != "model_config_list" {
            return Err(unknown(
                path,
                f,
                "ModelServerConfig",
                &["model_config_list"],
            ));
        }
        for c in &expect_message(path, f)?.fields {
            if c.name != "config" {
                return Err(unknown(path, c, "model_config_list", &["config"]));
            }
            models.push(read_model_entry(path, c)?);
        }
    }
    if models.is_empty() {
        return Err(invalid(
            path,
            1,
            1,
            "no models: expected `model_config_list { config { name: … base_path: … } }`",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for m in &models {
        if !seen.insert(m.name.clone()) {
            return Err(invalid(
                path,
                1,
                1,
                format!("model `{}` is configured twice", m.name),
            ));
        }
    }
    Ok(models)
}

fn read_model_entry(path: &Path, c: &Field) -> Result<ModelEntry, ConfigError> {
    const KNOWN: &[&str] = &[
        "name",
        "base_path",
        "model_platform",
        "model_version_policy",
        "version_labels",
        "logging_config",
    ];
    let mut name = None;
    let mut base_path = None;
    let mut policy = VersionPolicy::Latest(1);
    let mut labels = BTreeMap::new();
    for f in &expect_message(path, c)?.fields {
        match f.name.as_str() {
            "name" => name = Some(expect_string(path, f)?),
            "base_path" => base_path = Some(PathBuf::from(expect_string(path, f)?)),
            "model_platform" => {
                let p = expect_string(path, f)?;
                if p != "tensorflow" {
                    return Err(invalid(
                        path,
                        f.line,
                        f.col,
                        format!("model_platform `{p}` is not supported: expected \"tensorflow\""),
                    ));
                }
            }
            "model_version_policy" => policy = read_policy(path, f)?,
            "version_labels" => {
                let (mut key, mut value) = (None, None);
                for kv in &expect_message(path, f)?.fields {
                    match kv.name.as_str() {
                        "key" => key = Some(expect_string(path, kv)?),
                        "value" => value = Some(expect_int(path, kv)?),
                        _ => return Err(unknown(path, kv, "version_labels", &["key", "value"])),
                    }
                }
                match (key, value) {
                    (Some(k), Some(v)) => {
                        labels.insert(k, v);
                    }
                    _ => {
                        return Err(invalid(
                            path,
                            f.line,
                            f.col,
                            "version_labels needs both `key` and `value`",
                        ));
                    }
                }
            }
            "logging_config" => {}
            _ => return Err(unknown(path, f, "config", KNOWN)),
        }
    }
    let name = name.ok_or_else(|| invalid(path, c.line, c.col, "config without `name`"))?;
    let base_path = base_path.ok_or_else(|| {
        invalid(
            path,
            c.line,
            c.col,
            format!("config `{name}` without `base_path`"),
        )
    })?;
    Ok(ModelEntry {
        name,
        base_path,
        policy,
        labels,
    })
}

fn read_policy(path: &Path, f: &Field) -> Result<VersionPolicy, ConfigError> {
    let m = expect_message(path, f)?;
    let Some(choice) = m.fields.first() else {
        return Ok(VersionPolicy::Latest(1));
    };
    match choice.name.as_str() {
        "latest" => {
            let mut n = 1;
            for x in &expect_message(path, choice)?.fields {
                if x.name != "num_versions" {
                    return Err(unknown(path, x, "latest", &["num_versions"]));
                }
                n = expect_int(path, x)?;
                if n < 1 {
                    return Err(invalid(
                        path,
                        x.line,
                        x.col,
                        "num_versions must be at least 1",
                    ));
                }
            }
            Ok(VersionPolicy::Latest(n as usize))
        }
        "all" => Ok(VersionPolicy::All),
        "specific" => {
            let mut versions = Vec::new();
            for x in &expect_message(path, choice)?.fields {
                if x.name != "versions" {
                    return Err(unknown(path, x, "specific", &["versions"]));
                }
                versions.push(expect_int(path, x)?);
            }
            if versions.is_empty() {
                return Err(invalid(
                    path,
                    choice.line,
                    choice.col,
                    "specific policy lists no versions",
                ));
            }
            Ok(VersionPolicy::Specific(versions))
        }
        _ => Err(unknown(
            path,
            choice,
            "model_version_policy",
            &["latest", "all", "specific"],
        )),
    }
}

/// Reads a monitoring.config (`MonitoringConfig` text proto): the path of the Prometheus page
/// when `prometheus_config { enable: true }`, else None. An empty `path` means TF Serving's
/// default, `/monitoring/prometheus/metrics`.
pub fn read_monitoring_config(path: &Path) -> Result<Option<String>, ConfigError> {
    let root = read(path)?;
    let mut enabled = false;
    let mut page = String::new();
    for f in &root.fields {
        if f.name != "prometheus_config" {
            return Err(unknown(path, f, "MonitoringConfig", &["prometheus_config"]));
        }
        for c in &expect_message(path, f)?.fields {
            match c.name.as_str() {
                "enable" => enabled = expect_bool(path, c)?,
                "path" => {
                    page = expect_string(path, c)?;
                    if !page.is_empty() && !page.starts_with('/') {
                        return Err(invalid(
                            path,
                            c.line,
                            c.col,
                            format!("`path` must start with `/`, found {page:?}"),
                        ));
                    }
                }
                _ => return Err(unknown(path, c, "prometheus_config", &["enable", "path"])),
            }
        }
    }
    if !enabled {
        return Ok(None);
    }
    if page.is_empty() {
        page = DEFAULT_METRICS_PATH.to_string();
    }
    Ok(Some(page))
}

/// Where TF Serving serves Prometheus metrics when the config names no path.
pub const DEFAULT_METRICS_PATH: &str = "/monitoring/prometheus/metrics";

/// Reads batching_parameters.txt. Scalars may be wrapped (`max_batch_size { value: 8 }`, as
/// TF Serving writes them) or bare (`max_batch_size: 8`).
pub fn read_batching_parameters(path: &Path) -> Result<BatchingParams, ConfigError> {
    const KNOWN: &[&str] = &[
        "max_batch_size",
        "batch_timeout_micros",
        "max_enqueued_batches",
        "num_batch_threads",
        "allowed_batch_sizes",
        "pad_variable_length_inputs",
        "enable_large_batch_splitting",
        "max_execution_batch_size",
        "thread_pool_name",
    ];
    let root = read(path)?;
    let mut p = BatchingParams::default();
    for f in &root.fields {
        // Unwrap `{ value: X }`.
        let inner;
        let scalar: &Field = match &f.value {
            Value::Message(m) => {
                let v = m.fields.iter().find(|x| x.name == "value").ok_or_else(|| {
                    invalid(
                        path,
                        f.line,
                        f.col,
                        format!("`{}` must be `{{ value: … }}`", f.name),
                    )
                })?;
                inner = Field {
                    name: f.name.clone(),
                    value: v.value.clone(),
                    line: v.line,
                    col: v.col,
                };
                &inner
            }
            _ => f,
        };
        let non_negative = |what: &Field| -> Result<u64, ConfigError> {
            let v = expect_int(path, what)?;
            u64::try_from(v).map_err(|_| {
                invalid(
                    path,
                    what.line,
                    what.col,
                    format!("`{}` must not be negative, found {v}", what.name),
                )
            })
        };
        let bounded = |what: &Field, max: u64| -> Result<u64, ConfigError> {
            let v = non_negative(what)?;
            if v > max {
                return Err(invalid(
                    path,
                    what.line,
                    what.col,
                    format!("`{}` is {v}; the stand-in accepts at most {max}", what.name),
                ));
            }
            Ok(v)
        };
        // Every bound is at most usize::MAX on 64-bit targets, so the casts are exact.
        match f.name.as_str() {
            "max_batch_size" => p.max_batch_size = bounded(scalar, MAX_BATCH_SIZE as u64)? as usize,
            "batch_timeout_micros" => {
                p.batch_timeout_micros = bounded(scalar, MAX_BATCH_TIMEOUT_MICROS)?
            }
            "max_enqueued_batches" => {
                p.max_enqueued_batches = bounded(scalar, MAX_ENQUEUED_BATCHES as u64)? as usize
            }
            "num_batch_threads" => {
                p.num_batch_threads = bounded(scalar, MAX_THREADS as u64)? as usize
            }
            "allowed_batch_sizes" => p
                .allowed_batch_sizes
                .push(bounded(scalar, MAX_BATCH_SIZE as u64)? as usize),
            "pad_variable_length_inputs" => {
                p.pad_variable_length_inputs = expect_bool(path, scalar)?
            }
            "enable_large_batch_splitting" => {
                p.enable_large_batch_splitting = expect_bool(path, scalar)?
            }
            "max_execution_batch_size" => {
                p.max_execution_batch_size = Some(bounded(scalar, MAX_BATCH_SIZE as u64)? as usize)
            }
            "thread_pool_name" => p.thread_pool_name = Some(expect_string(path, scalar)?),
            _ => return Err(unknown(path, f, "BatchingParameters", KNOWN)),
        }
    }
    let first = root
        .fields
        .first()
        .map(|f| (f.line, f.col))
        .unwrap_or((1, 1));
    if p.max_batch_size == 0 {
        return Err(invalid(
            path,
            first.0,
            first.1,
            "max_batch_size must be at least 1",
        ));
    }
    if p.num_batch_threads == 0 {
        return Err(invalid(
            path,
            first.0,
            first.1,
            "num_batch_threads must be at least 1",
        ));
    }
    if p.max_enqueued_batches == 0 {
        return Err(invalid(
            path,
            first.0,
            first.1,
            "max_enqueued_batches must be at least 1",
        ));
    }
    if !p.allowed_batch_sizes.is_empty() {
        let at = root
            .fields
            .iter()
            .find(|f| f.name == "allowed_batch_sizes")
            .map(|f| (f.line, f.col))
            .unwrap_or(first);
        if p.allowed_batch_sizes.windows(2).any(|w| w[0] >= w[1]) || p.allowed_batch_sizes[0] == 0 {
            return Err(invalid(
                path,
                at.0,
                at.1,
                format!(
                    "allowed_batch_sizes must be increasing and positive, found {:?}",
                    p.allowed_batch_sizes
                ),
            ));
        }
        let limit = p
            .max_execution_batch_size
            .filter(|_| p.enable_large_batch_splitting)
            .unwrap_or(p.max_batch_size);
        if p.allowed_batch_sizes.last() != Some(&limit) {
            return Err(invalid(
                path,
                at.0,
                at.1,
                format!(
                    "the last allowed_batch_sizes entry must equal max_batch_size ({limit}), found {:?}",
                    p.allowed_batch_sizes
                ),
            ));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        use std::io::Write;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn model_config_with_policy_and_labels() {
        let f = write(
            "model_config_list {\n config {\n  name: 'regression'\n  base_path: '/models/regression'\n  model_platform: \"tensorflow\"\n  model_version_policy { specific { versions: 1 versions: 2 } }\n  version_labels { key: 'stable' value: 1 }\n }\n}\n",
        );
        let m = read_model_config(f.path()).unwrap();
        assert_eq!(m[0].name, "regression");
        assert_eq!(m[0].policy, VersionPolicy::Specific(vec![1, 2]));
        assert_eq!(m[0].labels["stable"], 1);
    }

    #[test]
    fn model_config_errors_name_file_line_and_problem() {
        let f = write("model_config_list {\n config {\n  name: 'r'\n  base_pth: '/x'\n }\n}\n");
        let e = read_model_config(f.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("{}:4:3", f.path().display())), "{e}");
        assert!(e.contains("unknown field `base_pth`"), "{e}");
    }

    #[test]
    fn batching_parameters_wrapped_and_bare() {
        let f = write(
            "max_batch_size { value: 8000 }\nbatch_timeout_micros { value: 4 }\nmax_enqueued_batches { value: 100 }\nnum_batch_threads: 4\n",
        );
        let p = read_batching_parameters(f.path()).unwrap();
        assert_eq!(
            (
                p.max_batch_size,
                p.batch_timeout_micros,
                p.max_enqueued_batches,
                p.num_batch_threads
            ),
            (8000, 4, 100, 4)
        );
    }

    #[test]
    fn batching_parameters_refuse_bad_allowed_sizes_and_negatives() {
        let f = write(
            "max_batch_size { value: 32 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16\n",
        );
        let e = read_batching_parameters(f.path()).unwrap_err().to_string();
        assert!(
            e.contains(":2:1") && e.contains("must equal max_batch_size (32)"),
            "{e}"
        );
        let f = write("max_batch_size { value: -1 }\n");
        let e = read_batching_parameters(f.path()).unwrap_err().to_string();
        assert!(e.contains("must not be negative"), "{e}");
        let f = write("batch_timeout_micros { value: 1.5 }\n");
        assert!(
            read_batching_parameters(f.path())
                .unwrap_err()
                .to_string()
                .contains("must be an integer")
        );
        let f = write("batch_timeout_micros { value: 99999999999999999999 }\n");
        assert!(
            read_batching_parameters(f.path())
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
    }

    #[test]
    fn absurd_batching_counts_are_config_errors_naming_file_line_and_field() {
        for (text, field, max) in [
            (
                "num_batch_threads { value: 1000000000 }\n",
                "num_batch_threads",
                "1024",
            ),
            ("max_batch_size: 10000000000\n", "max_batch_size", "1048576"),
            (
                "max_enqueued_batches { value: 1000000000000 }\n",
                "max_enqueued_batches",
                "1000000",
            ),
            (
                "batch_timeout_micros { value: 18446744073709551 }\n",
                "batch_timeout_micros",
                "60000000",
            ),
            (
                "max_execution_batch_size { value: 4294967296 }\n",
                "max_execution_batch_size",
                "1048576",
            ),
            (
                "allowed_batch_sizes: 4294967296\n",
                "allowed_batch_sizes",
                "1048576",
            ),
        ] {
            let f = write(text);
            let e = read_batching_parameters(f.path()).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{}:1:", f.path().display())), "{e}");
            assert!(e.contains(&format!("`{field}`")) && e.contains(max), "{e}");
        }
    }

    #[test]
    fn monitoring_config_enables_the_page_at_its_path() {
        let f = write("prometheus_config {\n  enable: true,\n  path: \"/m/p\"\n}\n");
        assert_eq!(
            read_monitoring_config(f.path()).unwrap(),
            Some("/m/p".into())
        );
        let f = write("prometheus_config { enable: true }\n");
        assert_eq!(
            read_monitoring_config(f.path()).unwrap().as_deref(),
            Some(DEFAULT_METRICS_PATH)
        );
        let f = write("prometheus_config { enable: false path: \"/x\" }\n");
        assert_eq!(read_monitoring_config(f.path()).unwrap(), None);
        let f = write("prometheus_config { enable: true pth: \"/x\" }\n");
        let e = read_monitoring_config(f.path()).unwrap_err().to_string();
        assert!(
            e.contains(":1:") && e.contains("unknown field `pth`"),
            "{e}"
        );
    }

    #[test]
    fn deeply_nested_and_oversized_config_files_are_errors() {
        let f = write(&"model_config_list {".repeat(100_000));
        let e = read_model_config(f.path()).unwrap_err().to_string();
        assert!(e.contains("nest more than"), "{e}");
        let f = write(&"#".repeat(MAX_CONFIG_BYTES as usize + 1));
        let e = read_batching_parameters(f.path()).unwrap_err().to_string();
        assert!(e.contains("larger than 16 MiB"), "{e}");
    }
}
