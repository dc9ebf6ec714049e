//! What REST and gRPC share: model lookup by name, version or label, the predict call through
//! the executor, and TF Serving's error categories.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::batching::{Counters, ExecError, Executor};
use super::model::{LoadedModel, Servable};

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

#[derive(Debug, Default)]
pub struct RequestCounters {
    pub rest_ok: AtomicU64,
    pub rest_error: AtomicU64,
    pub grpc_ok: AtomicU64,
    pub grpc_error: AtomicU64,
}

pub struct Core {
    pub models: BTreeMap<String, ServedModel>,
    pub batching: Arc<Counters>,
    pub requests: RequestCounters,
    pub batching_enabled: bool,
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
        let reply = exec.submit(rows, input)?;
        let out = reply.wait().await?;
        Ok((servable, out))
    }

    pub fn shutdown(&self) {
        for m in self.models.values() {
            for e in m.executors.values() {
                e.shutdown();
            }
        }
    }

    /// Prometheus text exposition of the serving and batching counters.
    pub fn prometheus(&self) -> String {
        use std::fmt::Write;
        let c = &self.batching;
        let r = &self.requests;
        let mut s = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP benchstack_serve_requests_total Predict requests by API and outcome."
        );
        let _ = writeln!(s, "# TYPE benchstack_serve_requests_total counter");
        let _ = writeln!(
            s,
            "benchstack_serve_requests_total{{api=\"rest\",status=\"ok\"}} {}",
            load(&r.rest_ok)
        );
        let _ = writeln!(
            s,
            "benchstack_serve_requests_total{{api=\"rest\",status=\"error\"}} {}",
            load(&r.rest_error)
        );
        let _ = writeln!(
            s,
            "benchstack_serve_requests_total{{api=\"grpc\",status=\"ok\"}} {}",
            load(&r.grpc_ok)
        );
        let _ = writeln!(
            s,
            "benchstack_serve_requests_total{{api=\"grpc\",status=\"error\"}} {}",
            load(&r.grpc_error)
        );
        let _ = writeln!(
            s,
            "# HELP benchstack_serve_batching_enabled 1 when --enable_batching is on."
        );
        let _ = writeln!(s, "# TYPE benchstack_serve_batching_enabled gauge");
        let _ = writeln!(
            s,
            "benchstack_serve_batching_enabled {}",
            u8::from(self.batching_enabled)
        );
        let _ = writeln!(
            s,
            "# HELP benchstack_serve_tasks_total Tasks (requests) submitted to the execution queue."
        );
        let _ = writeln!(s, "# TYPE benchstack_serve_tasks_total counter");
        let _ = writeln!(s, "benchstack_serve_tasks_total {}", load(&c.tasks));
        let _ = writeln!(s, "# HELP benchstack_serve_batches_total Batches executed.");
        let _ = writeln!(s, "# TYPE benchstack_serve_batches_total counter");
        let _ = writeln!(s, "benchstack_serve_batches_total {}", load(&c.batches));
        let _ = writeln!(
            s,
            "# HELP benchstack_serve_batch_rows_total Rows executed in batches (before padding)."
        );
        let _ = writeln!(s, "# TYPE benchstack_serve_batch_rows_total counter");
        let _ = writeln!(s, "benchstack_serve_batch_rows_total {}", load(&c.rows));
        let _ = writeln!(
            s,
            "# HELP benchstack_serve_padding_rows_total Rows added to reach an allowed batch size."
        );
        let _ = writeln!(s, "# TYPE benchstack_serve_padding_rows_total counter");
        let _ = writeln!(
            s,
            "benchstack_serve_padding_rows_total {}",
            load(&c.padded_rows)
        );
        let _ = writeln!(
            s,
            "# HELP benchstack_serve_queue_rejections_total Tasks refused because the batch queue was full."
        );
        let _ = writeln!(s, "# TYPE benchstack_serve_queue_rejections_total counter");
        let _ = writeln!(
            s,
            "benchstack_serve_queue_rejections_total {}",
            load(&c.rejected_queue_full)
        );
        let _ = writeln!(
            s,
            "# HELP benchstack_serve_batch_size Rows per executed batch."
        );
        let _ = writeln!(s, "# TYPE benchstack_serve_batch_size histogram");
        let mut cumulative = 0;
        for (i, bound) in Counters::BUCKET_BOUNDS.iter().enumerate() {
            cumulative += load(&c.batch_size_buckets[i]);
            let _ = writeln!(
                s,
                "benchstack_serve_batch_size_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += load(&c.batch_size_buckets[16]);
        let _ = writeln!(
            s,
            "benchstack_serve_batch_size_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let _ = writeln!(s, "benchstack_serve_batch_size_sum {}", load(&c.rows));
        let _ = writeln!(s, "benchstack_serve_batch_size_count {}", load(&c.batches));
        s
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
