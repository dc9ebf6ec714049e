//! gRPC Predict over tonic: `connections` HTTP/2 connections (one tonic `Channel` each);
//! open-loop requests each run as their own task on a connection chosen round-robin, so a
//! slow server never holds back the schedule; closed-loop stages run one loop per slot.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use prost::Message;
use tonic::transport::{Channel, Endpoint};

use super::LoadError;
use super::engine::{Ctx, Job, Sink};
use super::pending::Pending;
use super::record::ErrorKind;
use crate::proto::serving::prediction_service_client::PredictionServiceClient;
use crate::proto::serving::{
    GetModelMetadataRequest, ModelSpec, PredictRequest, PredictResponse, SignatureDefMap,
};

/// `grpc://host:port` (or `http://host:port`) → the URI tonic dials.
pub fn endpoint_uri(target: &str) -> Result<String, LoadError> {
    let rest = target
        .strip_prefix("grpc://")
        .or_else(|| target.strip_prefix("http://"))
        .ok_or_else(|| {
            LoadError::Target(format!("`{target}`: expected grpc://HOST:PORT for gRPC"))
        })?;
    let hostport = rest.trim_end_matches('/');
    if hostport.is_empty() || hostport.contains('/') {
        return Err(LoadError::Target(format!(
            "`{target}`: expected grpc://HOST:PORT (no path)"
        )));
    }
    Ok(format!("http://{hostport}"))
}

/// Opens one HTTP/2 connection; fails (within the timeout) with a message naming the target.
pub async fn connect(target: &str, timeout: Duration) -> Result<Channel, LoadError> {
    let uri = endpoint_uri(target)?;
    let ep = Endpoint::from_shared(uri)
        .map_err(|e| LoadError::Target(format!("`{target}`: {e}")))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true);
    match tokio::time::timeout(timeout, ep.connect()).await {
        Ok(Ok(ch)) => Ok(ch),
        Ok(Err(e)) => Err(LoadError::Connect {
            target: target.to_string(),
            reason: error_chain(&e),
        }),
        Err(_) => Err(LoadError::Connect {
            target: target.to_string(),
            reason: format!(
                "no connection within {}",
                humantime::format_duration(timeout)
            ),
        }),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The name of the signature's single input, from GetModelMetadata (as TF Serving itself
/// resolves row-format requests). `None` when the signature has several inputs.
pub async fn input_name(
    channel: Channel,
    model: &str,
    signature: Option<&str>,
) -> Result<Option<String>, LoadError> {
    Ok(signature_input(channel, model, signature)
        .await?
        .map(|(name, _)| name))
}

/// The signature's single input: its name and shape (-1 = any), from GetModelMetadata.
/// `None` when the signature has several inputs.
pub async fn signature_input(
    channel: Channel,
    model: &str,
    signature: Option<&str>,
) -> Result<Option<(String, Vec<i64>)>, LoadError> {
    let mut client = PredictionServiceClient::new(channel);
    let req = GetModelMetadataRequest {
        model_spec: Some(ModelSpec {
            name: model.to_string(),
            signature_name: signature.unwrap_or_default().to_string(),
            version_choice: None,
        }),
        metadata_field: vec!["signature_def".into()],
    };
    let resp = client
        .get_model_metadata(req)
        .await
        .map_err(|s| LoadError::Metadata(format!("{:?}: {}", s.code(), s.message())))?
        .into_inner();
    let any = resp
        .metadata
        .get("signature_def")
        .ok_or_else(|| LoadError::Metadata("the reply has no signature_def".into()))?;
    let map = SignatureDefMap::decode(any.value.as_slice())
        .map_err(|e| LoadError::Metadata(format!("signature_def: {e}")))?;
    let want = signature.unwrap_or("serving_default");
    let def = map
        .signature_def
        .get(want)
        .or_else(|| (map.signature_def.len() == 1).then(|| map.signature_def.values().next())?)
        .ok_or_else(|| {
            LoadError::Metadata(format!(
                "model `{model}` has no signature `{want}` (it has: {})",
                map.signature_def
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    Ok((def.inputs.len() == 1)
        .then(|| def.inputs.iter().next())
        .flatten()
        .map(|(name, info)| {
            let shape = info
                .tensor_shape
                .as_ref()
                .map(|t| t.dim.iter().map(|d| d.size).collect())
                .unwrap_or_default();
            (name.clone(), shape)
        }))
}

pub struct GrpcPool {
    pub ctx: Rc<Ctx>,
    pub clients: Vec<PredictionServiceClient<Channel>>,
    pub requests: Rc<[PredictRequest]>,
    next: Cell<usize>,
}

impl GrpcPool {
    /// `max_reply` caps a PredictResponse's size (a larger one is an error, not memory).
    pub fn new(
        ctx: Rc<Ctx>,
        channels: Vec<Channel>,
        requests: Vec<PredictRequest>,
        max_reply: usize,
    ) -> Rc<Self> {
        Rc::new(GrpcPool {
            ctx,
            clients: channels
                .into_iter()
                .map(|c| PredictionServiceClient::new(c).max_decoding_message_size(max_reply))
                .collect(),
            requests: requests.into(),
            next: Cell::new(0),
        })
    }

    fn pick(&self) -> (PredictionServiceClient<Channel>, PredictRequest) {
        let i = self.next.get();
        self.next.set(i.wrapping_add(1));
        (
            self.clients[i % self.clients.len()].clone(),
            self.requests[i % self.requests.len()].clone(),
        )
    }

    /// A closed-loop slot: sends back to back while a `max` stage runs.
    pub async fn closed_loop(self: Rc<Self>) {
        while let Some(job) = self.ctx.next_job().await {
            let (client, req) = self.pick();
            call(&self.ctx, job, client, req).await;
        }
    }
}

fn classify(r: Result<tonic::Response<PredictResponse>, tonic::Status>) -> Result<(), ErrorKind> {
    match r {
        Ok(resp) if resp.get_ref().outputs.is_empty() => Err(ErrorKind::Malformed),
        Ok(_) => Ok(()),
        Err(s) => Err(match s.code() {
            tonic::Code::DeadlineExceeded => ErrorKind::Timeout,
            tonic::Code::Cancelled if s.message().contains("Timeout expired") => ErrorKind::Timeout,
            tonic::Code::Unavailable if s.message().contains("connect") => ErrorKind::Connect,
            code => ErrorKind::Grpc(code as i32),
        }),
    }
}

async fn call(
    ctx: &Ctx,
    job: Job,
    mut client: PredictionServiceClient<Channel>,
    req: PredictRequest,
) {
    let sent = Instant::now();
    // Recorded even if the task is dropped (the run stopped waiting) before the reply.
    let mut pending = Pending::new(ctx, job, sent);
    ctx.sent(&job, sent);
    let r = client.predict(req).await;
    let done = Instant::now();
    pending.finish(done, classify(r));
}

/// Open loop: every released request becomes its own task.
pub struct GrpcSink(pub Rc<GrpcPool>);

impl Sink for GrpcSink {
    fn dispatch(&self, job: Job) {
        let pool = self.0.clone();
        tokio::task::spawn_local(async move {
            let (client, req) = pool.pick();
            call(&pool.ctx, job, client, req).await;
        });
    }
}
