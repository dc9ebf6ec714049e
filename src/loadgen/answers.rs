//! Answers checked: does batching change what the server predicts? TF Serving users have
//! seen it do so (tensorflow/serving#1279: padding short sequences to the longest in a batch
//! gave garbage outputs).
//!
//! A fixed sample of the load test's own requests (the first [`SAMPLE`] bodies its seed
//! draws) is sent twice to the idle server, over the protocol the load test uses (REST
//! predict for `http://`, gRPC Predict for `grpc://`, built as the gRPC executor builds its
//! requests): first **alone**, one after the other, so no request shares a batch with
//! another (TF Serving runs a batch of one request's rows, exactly what an unbatched session
//! runs, apart from padding the batch dimension with copies of its first row); then **all at
//! once**, so they batch together as under load. Every number of each batched answer must
//! equal the alone answer within a relative tolerance of [`TOLERANCE`]. The reference costs
//! nothing extra (no second, unbatched server, no restart between configurations) and works
//! against any server on any cluster; what it cannot see is a configuration that changes
//! even a lone request's answer.
//!
//! The protocol matters: TF Serving decodes REST's JSON and gRPC's tensors on different
//! paths before they meet in the batching session, so a load test over gRPC is checked
//! over gRPC.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{AbortOnDrop, LoadError, grpc, request};
use crate::proto::serving::prediction_service_client::PredictionServiceClient;
use crate::proto::serving::{PredictRequest, PredictResponse};
use crate::proto::tensorflow::{DataType, TensorProto};
use crate::vocab::load::RequestSource;

/// Requests in the sample.
pub const SAMPLE: usize = 16;
/// Relative tolerance: |batched − alone| ≤ TOLERANCE × max(|batched|, |alone|).
pub const TOLERANCE: f64 = 1e-4;
/// The largest answer read (REST body, gRPC message); a larger one is not compared.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnswerCheck {
    /// Requests sent in each pass.
    pub sample: u32,
    /// Requests answered 200 in both passes (the others are not compared).
    pub compared: u32,
    pub tolerance: f64,
    /// Compared requests whose batched answer differs from the alone one.
    pub differing: u32,
    /// The largest difference found, as a sentence (request, position, both values).
    #[serde(default)]
    pub worst: Option<String>,
    /// Why some or all requests could not be compared.
    #[serde(default)]
    pub note: Option<String>,
}

impl AnswerCheck {
    pub fn differs(&self) -> bool {
        self.differing > 0
    }

    /// Why a load test must not run against `what` (the serving resource or the targets),
    /// when its answers change under batching: the one message `apply` and `loadtest` give.
    pub fn refusal(&self, what: &str) -> Option<String> {
        self.differs().then(|| format!(
            "{what}'s answers change under batching, so its results would not be trustworthy and the load test did not run: {}. Compare the batching settings with an unbatched configuration (padding can change answers: tensorflow/serving#1279)",
            self.summary()
        ))
    }

    /// One line for the terminal: what was compared, with what tolerance, and the result.
    pub fn summary(&self) -> String {
        let head = format!(
            "answers checked: {} of {} sample requests, batched against sent alone, relative tolerance {:e}",
            self.compared, self.sample, self.tolerance
        );
        let mut line = if self.differs() {
            format!(
                "{head}: {} DIFFER{}",
                self.differing,
                self.worst
                    .as_deref()
                    .map(|w| format!(" (worst: {w})"))
                    .unwrap_or_default()
            )
        } else if self.compared == 0 {
            format!("{head}: nothing compared")
        } else {
            format!("{head}: identical")
        };
        if let Some(n) = &self.note {
            line.push_str(&format!(" ({n})"));
        }
        line
    }
}

/// One answer as compared: its outputs' names, types and shapes (`""` for REST, whose JSON
/// carries its shape in the nesting, compared through the count of numbers), and every
/// number in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub shape: String,
    pub numbers: Vec<f64>,
}

/// What a check sends and how long each request may take (the load test's own timeout).
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub model: &'a str,
    pub signature: Option<&'a str>,
    pub source: &'a RequestSource,
    pub seed: u64,
    pub timeout: Duration,
}

/// Runs the check against `target`: `http://host:port` (REST predict) or `grpc://host:port`
/// (gRPC Predict), the protocol of the load test. A request sent alone that gets no answer at
/// all (no connection, a timeout, a reply that is not HTTP) ends the check there with a note,
/// so a server that does not answer costs one timeout, not one per request.
pub fn check(target: &str, s: &Sample) -> Result<AnswerCheck, LoadError> {
    let (model, signature, timeout) = (s.model, s.signature, s.timeout);
    let bodies = sample(s.source, signature, s.seed)?;
    let target = target.to_string();
    let (model, signature) = (model.to_string(), signature.map(String::from));
    block_on(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| LoadError::Runtime(e.to_string()))?;
        rt.block_on(async {
            let passes = if target.starts_with("grpc://") {
                grpc_passes(&target, &model, signature.as_deref(), &bodies, timeout).await?
            } else {
                rest_passes(&target, &model, &bodies, timeout).await?
            };
            Ok::<_, LoadError>(match passes {
                Passes::NotCompared(why) => AnswerCheck {
                    sample: bodies.len() as u32,
                    compared: 0,
                    tolerance: TOLERANCE,
                    differing: 0,
                    worst: None,
                    note: Some(why),
                },
                Passes::Both { alone, together } => compare_answers(&alone, &together),
            })
        })
    })
}

/// [`check`] on every target, each target's own result: a load test with several targets
/// may send to several servers, each with its own configuration, and one target's answers
/// say nothing about another's. [`combine`] makes them one.
pub fn check_each(targets: &[String], s: &Sample) -> Result<Vec<(String, AnswerCheck)>, LoadError> {
    targets
        .iter()
        .map(|t| Ok((t.clone(), check(t, s)?)))
        .collect()
}

/// Several targets' checks as one (a single check unchanged): the counts are summed; the
/// worst difference and the notes name their target.
pub fn combine(mut checks: Vec<(String, AnswerCheck)>) -> AnswerCheck {
    if checks.len() == 1 {
        return checks.remove(0).1;
    }
    let mut out = AnswerCheck {
        sample: 0,
        compared: 0,
        tolerance: TOLERANCE,
        differing: 0,
        worst: None,
        note: None,
    };
    let mut notes = Vec::new();
    for (target, c) in &checks {
        out.sample += c.sample;
        out.compared += c.compared;
        out.differing += c.differing;
        if out.worst.is_none()
            && c.differs()
            && let Some(w) = &c.worst
        {
            out.worst = Some(format!("{target}: {w}"));
        }
        if let Some(n) = &c.note {
            notes.push(format!("{target}: {n}"));
        }
    }
    notes.push(format!("each of {} targets checked", checks.len()));
    out.note = Some(notes.join("; "));
    out
}

/// The sample: the first [`SAMPLE`] bodies the seed draws; a single body (a request file)
/// is sent SAMPLE times, since identical requests batch too.
fn sample(
    source: &RequestSource,
    signature: Option<&str>,
    seed: u64,
) -> Result<Vec<String>, LoadError> {
    let mut bodies = request::json_bodies(source, signature, seed)
        .map_err(|e| LoadError::Invalid(e.to_string()))?;
    if bodies.is_empty() {
        return Err(LoadError::Invalid(
            "no request to check answers with".into(),
        ));
    }
    let first = bodies.clone();
    while bodies.len() < SAMPLE {
        bodies.extend(first.iter().cloned());
    }
    bodies.truncate(SAMPLE);
    Ok(bodies)
}

/// Runs `f` on this thread, or on a thread of its own when this one is inside a tokio
/// runtime (a provider's blocking task), where building and blocking on another runtime
/// would panic.
fn block_on<T: Send>(f: impl FnOnce() -> Result<T, LoadError> + Send) -> Result<T, LoadError> {
    if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| {
            s.spawn(f)
                .join()
                .unwrap_or_else(|_| Err(LoadError::Runtime("the answer check panicked".into())))
        })
    } else {
        f()
    }
}

enum Passes {
    /// Nothing can be compared (why): the others are not waited on one by one.
    NotCompared(String),
    Both {
        alone: Vec<Result<Answer, String>>,
        together: Vec<Result<Answer, String>>,
    },
}

/// Why a request has no answer to compare.
enum Failure {
    /// The server answered, with an error status (HTTP 503, gRPC UNAVAILABLE, …): the
    /// others may still be answered.
    Refused(String),
    /// No answer at all: no connection, a timeout, a reply that is not HTTP or gRPC.
    NoAnswer(String),
}

impl Failure {
    fn text(self) -> String {
        match self {
            Failure::Refused(s) | Failure::NoAnswer(s) => s,
        }
    }
}

/// The alone pass: one request after the other, stopping at the first that gets no answer.
async fn alone_pass<F, Fut>(n: usize, mut send: F) -> Result<Vec<Result<Answer, String>>, String>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Answer, Failure>>,
{
    let mut alone = Vec::with_capacity(n);
    for i in 0..n {
        match send(i).await {
            Ok(a) => alone.push(Ok(a)),
            Err(Failure::Refused(why)) => alone.push(Err(why)),
            Err(Failure::NoAnswer(why)) if i == 0 => {
                return Err(format!(
                    "the server could not be reached or did not answer: {why}"
                ));
            }
            Err(Failure::NoAnswer(why)) => {
                return Err(format!(
                    "not compared: request {i}, sent alone, got no answer: {why}"
                ));
            }
        }
    }
    Ok(alone)
}

/// Waits for every task, in the order they were spawned.
async fn in_order<T: Send + 'static>(
    tasks: Vec<tokio::task::JoinHandle<Result<T, Failure>>>,
) -> Vec<Result<T, String>> {
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(match t.await {
            Ok(r) => r.map_err(Failure::text),
            Err(e) => Err(format!("the sender failed: {e}")),
        });
    }
    out
}

async fn rest_passes(
    target: &str,
    model: &str,
    bodies: &[String],
    timeout: Duration,
) -> Result<Passes, LoadError> {
    let (addr, host) = super::rest_target(target)?;
    let path = format!("/v1/models/{model}:predict");
    // Each on its own connection: nothing of one request lingers in the next.
    let alone = alone_pass(bodies.len(), |i| {
        let (host, path) = (&host, &path);
        async move {
            let conn = rest_connect(addr, timeout).await?;
            rest_post(conn, host, path, &bodies[i], timeout).await
        }
    })
    .await;
    let alone = match alone {
        Ok(a) => a,
        Err(why) => return Ok(Passes::NotCompared(why)),
    };
    // Every connection is open before any request goes, so the requests reach the server
    // within a scheduler tick of each other and batch.
    let mut conns = Vec::with_capacity(bodies.len());
    for _ in bodies {
        conns.push(rest_connect(addr, timeout).await);
    }
    let tasks: Vec<_> = conns
        .into_iter()
        .zip(bodies)
        .map(|(conn, b)| {
            let (host, path, b) = (host.clone(), path.clone(), b.clone());
            tokio::spawn(async move { rest_post(conn?, &host, &path, &b, timeout).await })
        })
        .collect();
    let together = in_order(tasks).await;
    Ok(Passes::Both { alone, together })
}

type RestConn = (
    hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    AbortOnDrop<Result<(), hyper::Error>>,
);

/// One HTTP/1.1 connection through hyper, driven beside its request and aborted with it.
async fn rest_connect(addr: SocketAddr, timeout: Duration) -> Result<RestConn, Failure> {
    let connect = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("{addr}: HTTP handshake: {e}"))?;
        Ok::<_, String>((sender, AbortOnDrop(tokio::spawn(conn))))
    };
    tokio::time::timeout(timeout, connect)
        .await
        .map_err(|_| {
            format!(
                "{addr}: no connection within {}",
                humantime::format_duration(timeout)
            )
        })
        .and_then(|r| r)
        .map_err(Failure::NoAnswer)
}

/// One predict POST: the numbers of a 200's answer, else why not. The body read is capped
/// at [`MAX_ANSWER`] bytes.
async fn rest_post(
    conn: RestConn,
    host: &str,
    path: &str,
    body: &str,
    timeout: Duration,
) -> Result<Answer, Failure> {
    use http_body_util::{BodyExt, Full, Limited};
    let (mut sender, _driver) = conn;
    let req = http::Request::post(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body.to_string())))
        .map_err(|e| Failure::NoAnswer(format!("building the request: {e}")))?;
    let exchange = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("{host}: POST {path}: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| format!("{host}: reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| {
            format!(
                "{host}: no answer within {}",
                humantime::format_duration(timeout)
            )
        })
        .and_then(|r| r)
        .map_err(Failure::NoAnswer)?;
    let text = String::from_utf8_lossy(&body);
    if status == 200 {
        Ok(Answer {
            shape: String::new(),
            numbers: numbers(&text),
        })
    } else {
        Err(Failure::Refused(format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        )))
    }
}

async fn grpc_passes(
    target: &str,
    model: &str,
    signature: Option<&str>,
    bodies: &[String],
    timeout: Duration,
) -> Result<Passes, LoadError> {
    let channel = match grpc::connect(target, timeout).await {
        Ok(c) => c,
        Err(LoadError::Connect { reason, .. }) => {
            return Ok(Passes::NotCompared(format!(
                "the server could not be reached: {reason}"
            )));
        }
        Err(e) => return Err(e),
    };
    // The requests the gRPC executor would send: the same JSON bodies as tensors, an unnamed
    // input named from the model's signature.
    let parsed = bodies
        .iter()
        .map(|b| request::json_to_inputs(b))
        .collect::<Result<Vec<_>, _>>()?;
    let name = if parsed.iter().any(request::Inputs::needs_name) {
        grpc::input_name(channel.clone(), model, signature).await?
    } else {
        None
    };
    let reqs = parsed
        .iter()
        .map(|i| request::predict_request(i, model, signature, name.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let client = PredictionServiceClient::new(channel).max_decoding_message_size(MAX_ANSWER);
    let alone = alone_pass(reqs.len(), |i| {
        grpc_predict(client.clone(), reqs[i].clone(), timeout)
    })
    .await;
    let alone = match alone {
        Ok(a) => a,
        Err(why) => return Ok(Passes::NotCompared(why)),
    };
    // All at once on the one HTTP/2 connection: they reach the server together and batch.
    let tasks: Vec<_> = reqs
        .into_iter()
        .map(|r| tokio::spawn(grpc_predict(client.clone(), r, timeout)))
        .collect();
    let together = in_order(tasks).await;
    Ok(Passes::Both { alone, together })
}

async fn grpc_predict(
    mut client: PredictionServiceClient<tonic::transport::Channel>,
    req: PredictRequest,
    timeout: Duration,
) -> Result<Answer, Failure> {
    match tokio::time::timeout(timeout, client.predict(req)).await {
        Err(_) => Err(Failure::NoAnswer(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
        // A status the client made from a transport error carries that error as its
        // source; one the server sent does not.
        Ok(Err(s)) if std::error::Error::source(&s).is_some() => Err(Failure::NoAnswer(format!(
            "gRPC {:?}: {}",
            s.code(),
            s.message()
        ))),
        Ok(Err(s)) => Err(Failure::Refused(format!(
            "gRPC {:?}: {}",
            s.code(),
            s.message()
        ))),
        Ok(Ok(r)) => Ok(tensors(&r.into_inner())),
    }
}

/// Every output of a PredictResponse, by name: its type and shape, and its values as numbers
/// (`float_val`, `double_val`, `int_val`, `int64_val`, `bool_val`, or `tensor_content` decoded
/// by type; strings as their bytes, compared exactly).
pub fn tensors(r: &PredictResponse) -> Answer {
    let sorted: BTreeMap<&String, &TensorProto> = r.outputs.iter().collect();
    let mut shape = Vec::with_capacity(sorted.len());
    let mut numbers = Vec::new();
    for (name, t) in sorted {
        let dims: Vec<String> = t
            .tensor_shape
            .as_ref()
            .map(|s| s.dim.iter().map(|d| d.size.to_string()).collect())
            .unwrap_or_default();
        let dtype = DataType::try_from(t.dtype)
            .map(|d| d.as_str_name().to_string())
            .unwrap_or_else(|_| t.dtype.to_string());
        shape.push(format!("{name} {dtype}[{}]", dims.join(",")));
        numbers.extend(t.float_val.iter().map(|&x| f64::from(x)));
        numbers.extend(t.double_val.iter().copied());
        numbers.extend(t.int_val.iter().map(|&x| f64::from(x)));
        numbers.extend(t.int64_val.iter().map(|&x| x as f64));
        numbers.extend(t.bool_val.iter().map(|&x| f64::from(u8::from(x))));
        for s in &t.string_val {
            numbers.extend(s.iter().map(|&b| f64::from(b)));
        }
        numbers.extend(content(t));
    }
    Answer {
        shape: shape.join(", "),
        numbers,
    }
}

/// `tensor_content`: the values packed little-endian (TensorProto's documented encoding);
/// a type without a decoding here gives its bytes, compared exactly.
fn content(t: &TensorProto) -> Vec<f64> {
    let c = &t.tensor_content;
    fn each<const N: usize>(c: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        c.chunks_exact(N)
            .map(|b| f(b.try_into().unwrap_or([0; N])))
            .collect()
    }
    match DataType::try_from(t.dtype) {
        Ok(DataType::DtFloat) => each::<4>(c, |b| f64::from(f32::from_le_bytes(b))),
        Ok(DataType::DtDouble) => each::<8>(c, f64::from_le_bytes),
        Ok(DataType::DtInt32) => each::<4>(c, |b| f64::from(i32::from_le_bytes(b))),
        Ok(DataType::DtInt64) => each::<8>(c, |b| i64::from_le_bytes(b) as f64),
        _ => c.iter().map(|&b| f64::from(b)).collect(),
    }
}

/// Compares two passes of REST answer bodies, request by request.
pub fn compare(
    alone: &[Result<String, String>],
    together: &[Result<String, String>],
) -> AnswerCheck {
    let answer = |r: &Result<String, String>| {
        r.as_ref().map_err(Clone::clone).map(|b| Answer {
            shape: String::new(),
            numbers: numbers(b),
        })
    };
    let a: Vec<_> = alone.iter().map(answer).collect();
    let t: Vec<_> = together.iter().map(answer).collect();
    compare_answers(&a, &t)
}

/// Compares two passes, request by request.
pub fn compare_answers(
    alone: &[Result<Answer, String>],
    together: &[Result<Answer, String>],
) -> AnswerCheck {
    let mut out = AnswerCheck {
        sample: alone.len() as u32,
        compared: 0,
        tolerance: TOLERANCE,
        differing: 0,
        worst: None,
        note: None,
    };
    let mut worst: f64 = 0.0;
    let mut failed: Option<String> = None;
    for (i, (a, b)) in alone.iter().zip(together).enumerate() {
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                failed.get_or_insert_with(|| format!("request {i}: {e}"));
                continue;
            }
        };
        out.compared += 1;
        let (na, nb) = (&a.numbers, &b.numbers);
        if a.shape != b.shape || na.len() != nb.len() {
            out.differing += 1;
            if worst < f64::INFINITY {
                worst = f64::INFINITY;
                out.worst = Some(if a.shape != b.shape {
                    format!(
                        "request {i}: outputs {} batched, {} alone",
                        b.shape, a.shape
                    )
                } else {
                    format!(
                        "request {i}: {} numbers batched, {} alone",
                        nb.len(),
                        na.len()
                    )
                });
            }
            continue;
        }
        let mut differs = false;
        for (k, (x, y)) in na.iter().zip(nb).enumerate() {
            let scale = x.abs().max(y.abs());
            let diff = (x - y).abs();
            // NaN against NaN is the same answer; NaN against a number is not.
            let nan_mismatch = x.is_nan() != y.is_nan();
            if nan_mismatch || diff > TOLERANCE * scale {
                differs = true;
                let rel = if nan_mismatch {
                    f64::INFINITY
                } else {
                    diff / scale
                };
                if rel > worst || out.worst.is_none() {
                    worst = worst.max(rel);
                    out.worst = Some(format!(
                        "request {i}, number {k}: {y} batched, {x} alone, relative difference {rel:.2e}"
                    ));
                }
            }
        }
        if differs {
            out.differing += 1;
        }
    }
    if let Some(f) = failed {
        out.note = Some(format!(
            "{} not answered successfully in both passes, e.g. {f}",
            out.sample - out.compared
        ));
    }
    out
}

/// Every number of a predict answer's `predictions` or `outputs`, in order; a body that is
/// not such an answer gives its own text's bytes as numbers, so two different bodies differ.
fn numbers(body: &str) -> Vec<f64> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Number(n) => out.push(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Object(o) => o.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(v) => match v.get("predictions").or_else(|| v.get("outputs")) {
            Some(p) => walk(p, &mut out),
            None => out.extend(body.bytes().map(f64::from)),
        },
        Err(_) => out.extend(body.bytes().map(f64::from)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_of(source: &RequestSource) -> Sample<'_> {
        Sample {
            model: "m",
            signature: None,
            source,
            seed: 1,
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn an_unreachable_server_is_noted_after_one_attempt_not_an_error() {
        // A port nothing listens on: connection refused at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = check(
            &format!("http://127.0.0.1:{port}"),
            &sample_of(&RequestSource::Body(r#"{"instances": [[1.0]]}"#.into())),
        )
        .unwrap();
        assert_eq!((c.compared, c.differing), (0, 0));
        assert!(c.note.unwrap().contains("could not be reached"));
    }

    /// A TF-Serving-shaped gRPC server: Predict answers every input value times two, and
    /// with `corrupt` 1% more while another Predict is in flight (it would share a batch);
    /// GetModelMetadata names the single input `x`, as TF Serving does for row requests.
    struct FakeGrpc {
        corrupt: bool,
        in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }

    #[tonic::async_trait]
    impl crate::proto::serving::prediction_service_server::PredictionService for FakeGrpc {
        async fn predict(
            &self,
            request: tonic::Request<PredictRequest>,
        ) -> Result<tonic::Response<PredictResponse>, tonic::Status> {
            use std::sync::atomic::Ordering::SeqCst;
            let req = request.into_inner();
            let x = req
                .inputs
                .get("x")
                .ok_or_else(|| tonic::Status::invalid_argument("no input x"))?
                .clone();
            let before = self.in_flight.fetch_add(1, SeqCst);
            // Long enough for requests sent together to overlap here.
            tokio::time::sleep(Duration::from_millis(40)).await;
            let shared = before > 0 || self.in_flight.load(SeqCst) > 1;
            self.in_flight.fetch_sub(1, SeqCst);
            let factor = if self.corrupt && shared { 2.02 } else { 2.0 };
            let y = TensorProto {
                dtype: DataType::DtFloat as i32,
                tensor_shape: x.tensor_shape.clone(),
                float_val: x.float_val.iter().map(|v| v * factor).collect(),
                ..Default::default()
            };
            Ok(tonic::Response::new(PredictResponse {
                model_spec: req.model_spec,
                outputs: std::collections::HashMap::from([("y".to_string(), y)]),
            }))
        }

        async fn get_model_metadata(
            &self,
            _request: tonic::Request<crate::proto::serving::GetModelMetadataRequest>,
        ) -> Result<tonic::Response<crate::proto::serving::GetModelMetadataResponse>, tonic::Status>
        {
            use crate::proto::serving::{SignatureDef, SignatureDefMap, TensorInfo};
            use prost::Message as _;
            let def = SignatureDef {
                inputs: std::collections::HashMap::from([(
                    "x".to_string(),
                    TensorInfo {
                        name: "x:0".into(),
                        dtype: DataType::DtFloat as i32,
                        tensor_shape: None,
                    },
                )]),
                ..Default::default()
            };
            let map = SignatureDefMap {
                signature_def: std::collections::HashMap::from([(
                    "serving_default".to_string(),
                    def,
                )]),
            };
            Ok(tonic::Response::new(
                crate::proto::serving::GetModelMetadataResponse {
                    model_spec: None,
                    metadata: std::collections::HashMap::from([(
                        "signature_def".to_string(),
                        prost_types::Any {
                            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap"
                                .into(),
                            value: map.encode_to_vec(),
                        },
                    )]),
                },
            ))
        }
    }

    /// Serves a [`FakeGrpc`] on loopback port 0 on its own thread; returns `grpc://ADDR`.
    fn fake_grpc(corrupt: bool) -> String {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let incoming =
                    tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
                        .unwrap();
                tx.send(incoming.local_addr().unwrap()).unwrap();
                let svc = FakeGrpc {
                    corrupt,
                    in_flight: Default::default(),
                };
                tonic::transport::Server::builder()
                    .add_service(
                        crate::proto::serving::prediction_service_server::PredictionServiceServer::new(svc),
                    )
                    .serve_with_incoming(incoming)
                    .await
                    .unwrap();
            });
        });
        format!("grpc://{}", rx.recv().unwrap())
    }

    #[test]
    fn a_server_whose_answers_change_under_batching_is_caught_over_grpc() {
        // Row format: the unnamed input is named from GetModelMetadata, as the executor does.
        let body = RequestSource::Body(r#"{"instances": [[1.0, 2.0], [3.0, 4.0]]}"#.into());
        let c = check(&fake_grpc(true), &sample_of(&body)).unwrap();
        assert_eq!(
            (c.sample, c.compared),
            (SAMPLE as u32, SAMPLE as u32),
            "{c:?}"
        );
        assert!(c.differs(), "{c:?}");
        let worst = c.worst.as_deref().unwrap();
        assert!(worst.contains("relative difference 9.90e-3"), "{worst}");
        assert!(c.summary().contains("DIFFER"), "{}", c.summary());

        let c = check(&fake_grpc(false), &sample_of(&body)).unwrap();
        assert_eq!((c.compared, c.differing), (SAMPLE as u32, 0), "{c:?}");
        assert!(c.summary().ends_with("identical"), "{}", c.summary());
    }

    #[test]
    fn an_unreachable_grpc_server_is_noted_not_an_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = check(
            &format!("grpc://127.0.0.1:{port}"),
            &sample_of(&RequestSource::Body(r#"{"inputs": {"x": [[1.0]]}}"#.into())),
        )
        .unwrap();
        assert_eq!((c.compared, c.differing), (0, 0));
        assert!(c.note.unwrap().contains("could not be reached"));
    }

    #[test]
    fn output_tensors_are_compared_by_name_type_shape_and_every_value() {
        use crate::proto::tensorflow::{TensorShapeProto, tensor_shape_proto::Dim};
        let t = |vals: &[f32], content: &[u8]| TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![Dim {
                    size: vals.len().max(content.len() / 4) as i64,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            float_val: vals.to_vec(),
            tensor_content: content.to_vec(),
            ..Default::default()
        };
        let resp = |t: TensorProto| PredictResponse {
            model_spec: None,
            outputs: std::collections::HashMap::from([("y".to_string(), t)]),
        };
        let a = tensors(&resp(t(&[1.0, 2.0], &[])));
        assert_eq!(a.shape, "y DT_FLOAT[2]");
        assert_eq!(a.numbers, vec![1.0, 2.0]);
        // tensor_content: little-endian floats.
        let packed: Vec<u8> = [1.0f32, 2.5].iter().flat_map(|f| f.to_le_bytes()).collect();
        assert_eq!(tensors(&resp(t(&[], &packed))).numbers, vec![1.0, 2.5]);
        // A different shape differs, whatever the values.
        let b = tensors(&resp(t(&[1.0, 2.0, 3.0], &[])));
        let c = compare_answers(&[Ok(a.clone())], &[Ok(b)]);
        assert_eq!(c.differing, 1);
        assert!(c.worst.unwrap().contains("outputs y DT_FLOAT[3] batched"));
        assert_eq!(compare_answers(&[Ok(a.clone())], &[Ok(a)]).differing, 0);
    }

    #[test]
    fn several_targets_are_summed_and_the_difference_names_its_target() {
        let ok = |s| AnswerCheck {
            sample: 16,
            compared: s,
            tolerance: TOLERANCE,
            differing: 0,
            worst: None,
            note: None,
        };
        let mut bad = ok(16);
        bad.differing = 2;
        bad.worst = Some("request 1, number 0: 1.01 batched, 1 alone".into());
        let c = combine(vec![
            ("http://a:1".into(), ok(16)),
            ("http://b:2".into(), bad),
        ]);
        assert_eq!((c.sample, c.compared, c.differing), (32, 32, 2));
        assert!(c.worst.unwrap().starts_with("http://b:2: request 1"));
        assert!(c.note.unwrap().contains("each of 2 targets checked"));
        assert_eq!(combine(vec![("x".into(), ok(3))]), ok(3));
    }

    #[test]
    fn answers_within_the_relative_tolerance_agree_and_others_are_named() {
        let a = |x: &str| Ok::<String, String>(format!(r#"{{"predictions": [[{x}]]}}"#));
        let alone = [
            a("0.4213"),
            a("100.0"),
            a("0.0"),
            Err("HTTP 503: shed".to_string()),
        ];
        let close = [a("0.42130001"), a("100.0"), a("0.0"), a("1")];
        let c = compare(&alone, &close);
        assert_eq!((c.sample, c.compared, c.differing), (4, 3, 0), "{c:?}");
        assert!(c.note.as_deref().unwrap().contains("HTTP 503"), "{c:?}");
        assert!(
            c.summary().contains("relative tolerance 1e-4: identical"),
            "{}",
            c.summary()
        );
        let off = [a("0.4213"), a("100.1"), a("0.0"), a("1")];
        let c = compare(&alone, &off);
        assert_eq!(c.differing, 1);
        assert!(c.differs());
        let worst = c.worst.unwrap();
        assert!(
            worst.contains("request 1, number 0: 100.1 batched, 100 alone"),
            "{worst}"
        );
        // A different shape is a difference too.
        let shape = [a("0.4213, 1"), a("100.0"), a("0.0"), a("1")];
        assert_eq!(compare(&alone, &shape).differing, 1);
    }
}
