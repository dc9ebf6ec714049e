//! What REST and gRPC share: model lookup by name, version or label, the predict call through
//! the executor, and TF Serving's error categories.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::batching::{ExecError, Executor};
use super::metrics::Metrics;
use super::model::{LoadedModel, Servable};

/// The largest REST body or gRPC message the stand-in reads. A batch of 8000 rows of 10
/// floats is 320 KB, so this is generous; it also sets the element bound below.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The most elements an input tensor may have: as many f32 as the largest message can carry.
/// Dense values can never exceed it (they would not fit the message); it is what bounds a
/// single broadcast value (`float_val: [x]` with a large shape), which TensorFlow allows.
pub const MAX_ELEMENTS: usize = MAX_MESSAGE_BYTES / std::mem::size_of::<f32>();

/// TensorFlow's own limit on the rank of a tensor (TensorShape::MaxDimensions).
pub const MAX_DIMS: usize = 254;

/// The element count of a client-declared shape: refuses negative sizes, too many dims, an
/// overflowing product and more than [`MAX_ELEMENTS`], before anything is allocated from it.
pub fn element_count(name: &str, dims: &[i64]) -> Result<usize, ApiError> {
    if dims.len() > MAX_DIMS {
        return Err(ApiError::invalid(format!(
            "input \"{name}\" has {} dimensions; a tensor has at most {MAX_DIMS}",
            dims.len()
        )));
    }
    let mut count: usize = 1;
    for d in dims {
        let size = usize::try_from(*d).map_err(|_| {
            ApiError::invalid(format!(
                "input \"{name}\" has shape {dims:?}: dimension {d} is negative"
            ))
        })?;
        count = count.checked_mul(size).ok_or_else(|| {
            ApiError::invalid(format!(
                "input \"{name}\" has shape {dims:?}: the element count overflows"
            ))
        })?;
    }
    // A zero dim anywhere makes the product 0, so checking once at the end is exact.
    if count > MAX_ELEMENTS {
        return Err(ApiError::invalid(format!(
            "input \"{name}\" has shape {dims:?}: {count} elements exceed the limit of {MAX_ELEMENTS} (what a {} MiB message can carry as DT_FLOAT)",
            MAX_MESSAGE_BYTES >> 20
        )));
    }
    Ok(count)
}

/// TF Serving's error categories as they map to gRPC codes and HTTP statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    InvalidArgument,
    NotFound,
    Unavailable,
    Internal,
    Unimplemented,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError {
            code: Code::InvalidArgument,
            message: message.into(),
        }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            code: Code::NotFound,
            message: message.into(),
        }
    }

    pub fn http_status(&self) -> u16 {
        match self.code {
            Code::InvalidArgument => 400,
            Code::NotFound => 404,
            Code::Unavailable => 503,
            Code::Internal => 500,
            Code::Unimplemented => 501,
        }
    }

    pub fn grpc_status(&self) -> tonic::Status {
        let code = match self.code {
            Code::InvalidArgument => tonic::Code::InvalidArgument,
            Code::NotFound => tonic::Code::NotFound,
            Code::Unavailable => tonic::Code::Unavailable,
            Code::Internal => tonic::Code::Internal,
            Code::Unimplemented => tonic::Code::Unimplemented,
        };
        tonic::Status::new(code, self.message.clone())
    }
}

impl From<ExecError> for ApiError {
    fn from(e: ExecError) -> Self {
        let code = match e {
            ExecError::QueueFull | ExecError::ShuttingDown => Code::Unavailable,
            ExecError::TooLarge { .. } => Code::InvalidArgument,
            ExecError::Internal(_) => Code::Internal,
        };
        ApiError {
            code,
            message: e.to_string(),
        }
    }
}

/// How a request names the version it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionChoice {
    Latest,
    Number(i64),
    Label(String),
}

pub struct ServedModel {
    pub model: LoadedModel,
    pub executors: BTreeMap<i64, Executor>,
}

pub struct Core {
    pub models: BTreeMap<String, ServedModel>,
    pub metrics: Arc<Metrics>,
    /// Where the REST port serves the metrics page: set by --monitoring_config_file
    /// (`prometheus_config { enable: true }`), as in TF Serving; None serves no page.
    pub metrics_path: Option<String>,
}

impl Core {
    pub fn model(&self, name: &str) -> Result<&ServedModel, ApiError> {
        self.models.get(name).ok_or_else(|| {
            ApiError::not_found(format!("Servable not found for request: Latest({name})"))
        })
    }

    pub fn executor(&self, name: &str, version: &VersionChoice) -> Result<&Executor, ApiError> {
        let m = self.model(name)?;
        let v = match version {
            VersionChoice::Latest => *m.executors.keys().next_back().ok_or_else(|| {
                ApiError::not_found(format!("Servable not found for request: Latest({name})"))
            })?,
            VersionChoice::Number(v) => *v,
            VersionChoice::Label(l) => *m.model.labels.get(l).ok_or_else(|| {
                ApiError::not_found(format!(
                    "Unrecognized servable version label: {l} (model {name})"
                ))
            })?,
        };
        m.executors.get(&v).ok_or_else(|| {
            ApiError::not_found(format!(
                "Servable not found for request: Specific({name}, {v})"
            ))
        })
    }

    /// Runs `rows` rows through the named model; returns the servable that ran and the outputs.
    pub async fn predict(
        &self,
        name: &str,
        version: &VersionChoice,
        signature: &str,
        rows: usize,
        input: Vec<f32>,
    ) -> Result<(Arc<Servable>, Vec<f32>), ApiError> {
        let exec = self.executor(name, version)?;
        let servable = exec.servable().clone();
        check_signature(&servable, signature)?;
        if rows == 0 {
            return Err(ApiError::invalid(
                "the request carries no rows: expected at least one instance",
            ));
        }
        // TF Serving times the session run: with batching, the wait in the queue included.
        let started = std::time::Instant::now();
        let reply = exec.submit(rows, input)?;
        let out = reply.wait().await?;
        self.metrics
            .runtime_latency(name, started.elapsed().as_micros() as u64);
        Ok((servable, out))
    }

    pub fn shutdown(&self) {
        for m in self.models.values() {
            for e in m.executors.values() {
                e.shutdown();
            }
        }
    }

    /// The Prometheus page (TF Serving's names and layouts, see `metrics`).
    pub fn prometheus(&self) -> String {
        self.metrics.prometheus()
    }
}

pub fn check_signature(servable: &Servable, signature: &str) -> Result<(), ApiError> {
    if signature.is_empty() || signature == servable.signature.name {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Serving signature name: \"{signature}\" not found in signature def; expected \"{}\"",
            servable.signature.name
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn element_count_refuses_overflow_negatives_rank_and_giants() {
        assert_eq!(element_count("x", &[3, 10]), Ok(30));
        assert_eq!(element_count("x", &[]), Ok(1));
        assert_eq!(element_count("x", &[0, i64::MAX]), Ok(0));
        let giant = element_count("x", &[1_000_000_000_000, 10]).unwrap_err();
        assert_eq!(giant.code, Code::InvalidArgument);
        assert!(
            giant.message.contains("exceed the limit"),
            "{}",
            giant.message
        );
        let overflow = element_count("x", &[i64::MAX, i64::MAX]).unwrap_err();
        assert!(
            overflow.message.contains("overflows"),
            "{}",
            overflow.message
        );
        let negative = element_count("x", &[-1, 10]).unwrap_err();
        assert!(
            negative.message.contains("negative"),
            "{}",
            negative.message
        );
        let rank = element_count("x", &[1; MAX_DIMS + 1]).unwrap_err();
        assert!(rank.message.contains("at most 254"), "{}", rank.message);
        assert_eq!(element_count("x", &[MAX_ELEMENTS as i64]), Ok(MAX_ELEMENTS));
        assert!(element_count("x", &[MAX_ELEMENTS as i64 + 1]).is_err());
    }
}
