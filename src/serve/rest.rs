//! TF Serving's REST API: `POST /v1/models/NAME[/versions/V|/labels/L]:predict` in row
//! (`instances`) and columnar (`inputs`) formats, `GET /v1/models/NAME[/versions/V]`
//! (version status), `…/metadata`, and TF Serving's metrics in Prometheus text at the path
//! --monitoring_config_file names (usually `/monitoring/prometheus/metrics`).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use super::core::{ApiError, Code, Core, MAX_ELEMENTS, MAX_MESSAGE_BYTES, VersionChoice};
use super::metrics::{Entrypoint, status_name};
use super::model::{Signature, TensorSpec};

pub type Body = Full<Bytes>;

fn json_response(status: StatusCode, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

fn error_response(e: &ApiError) -> Response<Body> {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json_response(status, &json!({ "error": e.message }))
}

/// Routes one request; never panics on input. Every request to /v1/models is counted in
/// `request_count` under the model it names, and a successful one is timed into
/// `request_latency`, as TF Serving's HTTP server does.
pub async fn handle(core: Arc<Core>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if method == Method::GET && core.metrics_path.as_deref() == Some(path.as_str()) {
        let mut r = Response::new(Full::new(Bytes::from(core.prometheus())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain"),
        );
        return r;
    }
    let (model, api, result) = route(&core, req, &method, &path).await;
    let m = &core.metrics;
    match result {
        Ok(v) => {
            m.count_request(&model, status_name(None));
            m.request_latency(
                &model,
                api,
                Entrypoint::Rest,
                started.elapsed().as_micros() as u64,
            );
            json_response(StatusCode::OK, &v)
        }
        Err(e) => {
            m.count_request(&model, status_name(Some(e.code)));
            error_response(&e)
        }
    }
}

/// The model the request names (empty when the path names none), the API label TF Serving
/// gives it (`predict`, or empty for a GET) and the answer.
async fn route(
    core: &Core,
    req: Request<hyper::body::Incoming>,
    method: &Method,
    path: &str,
) -> (String, &'static str, Result<Value, ApiError>) {
    let route = match parse_route(method, path) {
        Ok(r) => r,
        Err(e) => return (String::new(), "", Err(e)),
    };
    match route {
        Route::Status { model, version } => {
            let r = status(core, &model, &version);
            (model, "", r)
        }
        Route::Metadata { model, version } => {
            let r = metadata(core, &model, &version);
            (model, "", r)
        }
        Route::Predict { model, version } => {
            // A declared length over the limit is refused before a byte of it is read.
            let declared = hyper::body::Body::size_hint(req.body()).lower();
            if declared > MAX_MESSAGE_BYTES as u64 {
                let e = ApiError::invalid(format!(
                    "the request body is {declared} bytes; the limit is {} MiB",
                    MAX_MESSAGE_BYTES >> 20
                ));
                return (model, "predict", Err(e));
            }
            let body = match Limited::new(req.into_body(), MAX_MESSAGE_BYTES)
                .collect()
                .await
            {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    let e = ApiError::invalid(format!("cannot read the request body: {e}"));
                    return (model, "predict", Err(e));
                }
            };
            let r = predict(core, &model, &version, &body).await;
            (model, "predict", r)
        }
    }
}

#[derive(Debug, PartialEq)]
enum Route {
    Status {
        model: String,
        version: VersionChoice,
    },
    Metadata {
        model: String,
        version: VersionChoice,
    },
    Predict {
        model: String,
        version: VersionChoice,
    },
}

fn malformed(method: &Method, path: &str) -> ApiError {
    ApiError::not_found(format!(
        "Malformed request: {method} {path}; expected POST /v1/models/NAME[/versions/V|/labels/L]:predict, GET /v1/models/NAME[/versions/V] or GET /v1/models/NAME/metadata"
    ))
}

fn parse_route(method: &Method, path: &str) -> Result<Route, ApiError> {
    let rest = path
        .strip_prefix("/v1/models/")
        .ok_or_else(|| malformed(method, path))?;
    let segments: Vec<&str> = rest.split('/').collect();
    // The verb sits in the last segment after ':' (`regression:predict`).
    let (last, verb) = match segments.last().and_then(|s| s.split_once(':')) {
        Some((l, v)) => (l, Some(v)),
        None => (*segments.last().unwrap_or(&""), None),
    };
    let mut segs: Vec<&str> = segments[..segments.len() - 1].to_vec();
    segs.push(last);
    let (model, version, tail) = match segs.as_slice() {
        [m] => (*m, VersionChoice::Latest, None),
        [m, "metadata"] => (*m, VersionChoice::Latest, Some("metadata")),
        [m, "versions", v] => (*m, VersionChoice::Number(parse_version(v)?), None),
        [m, "versions", v, "metadata"] => (
            *m,
            VersionChoice::Number(parse_version(v)?),
            Some("metadata"),
        ),
        [m, "labels", l] => (*m, VersionChoice::Label(l.to_string()), None),
        [m, "labels", l, "metadata"] => (*m, VersionChoice::Label(l.to_string()), Some("metadata")),
        _ => return Err(malformed(method, path)),
    };
    if model.is_empty() {
        return Err(malformed(method, path));
    }
    let model = model.to_string();
    match (method, verb, tail) {
        (&Method::GET, None, None) => Ok(Route::Status { model, version }),
        (&Method::GET, None, Some("metadata")) => Ok(Route::Metadata { model, version }),
        (&Method::POST, Some("predict"), None) => Ok(Route::Predict { model, version }),
        (&Method::POST, Some(v @ ("classify" | "regress")), None) => Err(ApiError {
            code: Code::Unimplemented,
            message: format!(
                "the stand-in implements :predict; :{v} needs tensorflow_model_server"
            ),
        }),
        _ => Err(malformed(method, path)),
    }
}

fn parse_version(v: &str) -> Result<i64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::invalid(format!("version `{v}` is not an integer")))
}

fn status(core: &Core, model: &str, version: &VersionChoice) -> Result<Value, ApiError> {
    let m = core.model(model)?;
    let versions: Vec<i64> = match version {
        VersionChoice::Latest => m.executors.keys().copied().collect(),
        other => vec![core.executor(model, other)?.servable().version],
    };
    let list: Vec<Value> = versions
        .iter()
        .rev()
        .map(|v| {
            json!({"version": v.to_string(), "state": "AVAILABLE",
                   "status": {"error_code": "OK", "error_message": ""}})
        })
        .collect();
    Ok(json!({ "model_version_status": list }))
}

fn tensor_info(t: &TensorSpec) -> Value {
    let dims: Vec<Value> = t
        .shape
        .iter()
        .map(|d| json!({"size": d.to_string(), "name": ""}))
        .collect();
    json!({"dtype": "DT_FLOAT", "tensor_shape": {"dim": dims, "unknown_rank": false}, "name": t.tensor_name})
}

fn metadata(core: &Core, model: &str, version: &VersionChoice) -> Result<Value, ApiError> {
    let s = core.executor(model, version)?.servable().clone();
    let sig = &s.signature;
    let inputs: serde_json::Map<String, Value> = sig
        .inputs
        .iter()
        .map(|t| (t.key.clone(), tensor_info(t)))
        .collect();
    let outputs: serde_json::Map<String, Value> = sig
        .outputs
        .iter()
        .map(|t| (t.key.clone(), tensor_info(t)))
        .collect();
    Ok(json!({
        "model_spec": {"name": model, "signature_name": "", "version": s.version.to_string()},
        "metadata": {"signature_def": {"signature_def": {
            sig.name.clone(): {"inputs": inputs, "outputs": outputs, "method_name": sig.method_name, "defaults": {}}
        }}}
    }))
}

/// The body of a predict request, decoded into rows for the single input.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub signature: String,
    pub columnar: bool,
    pub rows: usize,
    pub values: Vec<f32>,
}

/// Decodes a REST predict body against a signature. Public so it can be fuzzed.
///
/// After a key scan, the body is read in one streaming pass straight into the f32 values: a JSON tree
/// (`serde_json::Value`) would cost some 16 bytes of memory per body byte, which a hostile
/// client could multiply by the body limit and the connection count. Each instance is checked
/// against the input's shape as it is read, and the value count is bounded.
pub fn decode_predict_body(body: &[u8], signature: &Signature) -> Result<Decoded, ApiError> {
    scan_keys(body)?;
    let input = &signature.inputs[0];
    let mut ctx = Ctx {
        input,
        width: signature.row_width(),
        values: Vec::new(),
        top: "instances",
        path: Vec::new(),
        error: None,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::de::DeserializeSeed::deserialize(BodySeed(&mut ctx), &mut de)
        .and_then(|r| de.end().map(|()| r));
    match parsed {
        Ok((signature, top, rows)) => Ok(Decoded {
            signature,
            columnar: top == "inputs",
            rows,
            values: ctx.values,
        }),
        // Our own refusals travel through serde as a bare error; the message is in `ctx`.
        Err(e) => Err(ctx.error.take().unwrap_or_else(|| parse_error(&e))),
    }
}

/// A first pass that keeps nothing (values are skipped as `IgnoredAny`): malformed JSON,
/// a body that is not an object and wrong top-level keys are reported before any value is
/// looked at, whatever order the keys come in.
fn scan_keys(body: &[u8]) -> Result<(), ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let scanned = serde::de::Deserializer::deserialize_any(&mut de, KeyScan)
        .and_then(|r| de.end().map(|()| r));
    let keys = match scanned {
        Err(e) => return Err(parse_error(&e)),
        Ok(None) => {
            return Err(ApiError::invalid(
                "the request body must be a JSON object with \"instances\" or \"inputs\"",
            ));
        }
        Ok(Some(keys)) => keys,
    };
    if let Some(k) = keys.unknown {
        return Err(ApiError::invalid(format!(
            "unknown key \"{k}\" in the request; expected \"instances\" or \"inputs\" and optionally \"signature_name\""
        )));
    }
    match (keys.instances, keys.inputs) {
        (0, 0) => Err(ApiError::invalid(
            "Missing 'inputs' or 'instances' key in the request",
        )),
        (1, 0) | (0, 1) => Ok(()),
        (_, 0) | (0, _) => Err(ApiError::invalid(
            "\"instances\" or \"inputs\" is given more than once",
        )),
        _ => Err(ApiError::invalid(
            "Not both 'instances' and 'inputs' can be set in the request",
        )),
    }
}

#[derive(Default)]
struct TopKeys {
    instances: usize,
    inputs: usize,
    unknown: Option<String>,
}

/// Visits the top level: `Some(keys)` for an object, `None` for anything else.
struct KeyScan;

impl<'de> serde::de::Visitor<'de> for KeyScan {
    type Value = Option<TopKeys>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = TopKeys::default();
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match k.as_ref() {
                "instances" => keys.instances += 1,
                "inputs" => keys.inputs += 1,
                "signature_name" => {}
                other => {
                    if keys.unknown.is_none() {
                        keys.unknown = Some(other.to_string());
                    }
                }
            }
            map.next_value::<serde::de::IgnoredAny>()?;
        }
        Ok(Some(keys))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

fn parse_error(e: &serde_json::Error) -> ApiError {
    ApiError::invalid(format!(
        "JSON parse error: {e}; expected a JSON object with \"instances\" or \"inputs\""
    ))
}

/// What the decoding seeds share: where they are (for messages) and what they have read.
struct Ctx<'a> {
    input: &'a TensorSpec,
    /// Values per row.
    width: usize,
    values: Vec<f32>,
    /// "instances" or "inputs", and the list indices below it.
    top: &'static str,
    path: Vec<usize>,
    error: Option<ApiError>,
}

impl Ctx<'_> {
    fn at(&self) -> String {
        let mut s = self.top.to_string();
        for i in &self.path {
            s.push_str(&format!("[{i}]"));
        }
        s
    }

    /// Records the refusal and returns the error that unwinds serde.
    fn fail<E: serde::de::Error>(&mut self, message: impl Into<String>) -> E {
        self.error = Some(ApiError::invalid(message));
        E::custom("refused")
    }

    fn push<E: serde::de::Error>(&mut self, dims: &[i64], x: f64) -> Result<(), E> {
        if !dims.is_empty() {
            let at = self.at();
            return Err(self.fail(format!(
                "{at}: found a number where input \"{}\" (shape {:?}) has a list",
                self.input.key, self.input.shape
            )));
        }
        if self.values.len() >= MAX_ELEMENTS {
            return Err(self.fail(format!("the request holds more than {MAX_ELEMENTS} values")));
        }
        self.values.push(x as f32);
        Ok(())
    }

    fn not_float<E: serde::de::Error>(&mut self, what: impl std::fmt::Display) -> E {
        let at = self.at();
        self.fail(format!(
            "{at}: JSON value {what} is not of expected type: float (DT_FLOAT)"
        ))
    }
}

/// The whole body: `{"signature_name"?, "instances" | "inputs"}` → (signature, key, rows).
struct BodySeed<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = (String, &'static str, usize);
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodySeed<'_, '_> {
    type Value = (String, &'static str, usize);

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object with \"instances\" or \"inputs\"")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.0;
        let mut signature = String::new();
        let mut found: Option<(&'static str, usize)> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let top = match key.as_ref() {
                "signature_name" => {
                    signature = map.next_value_seed(StringSeed(&mut *ctx, "signature_name"))?;
                    continue;
                }
                "instances" => "instances",
                "inputs" => "inputs",
                other => {
                    return Err(ctx.fail(format!(
                        "unknown key \"{other}\" in the request; expected \"instances\" or \"inputs\" and optionally \"signature_name\""
                    )));
                }
            };
            if found.is_some() {
                return Err(ctx.fail("Not both 'instances' and 'inputs' can be set in the request"));
            }
            ctx.top = top;
            let rows = map.next_value_seed(TopSeed(&mut *ctx))?;
            found = Some((top, rows));
        }
        match found {
            Some((top, rows)) => Ok((signature, top, rows)),
            None => Err(ctx.fail("Missing 'inputs' or 'instances' key in the request")),
        }
    }
}

/// A string field that must be a string.
struct StringSeed<'c, 'a>(&'c mut Ctx<'a>, &'static str);

impl<'de> serde::de::DeserializeSeed<'de> for StringSeed<'_, '_> {
    type Value = String;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for StringSeed<'_, '_> {
    type Value = String;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self
            .0
            .fail(format!("\"{}\" must be a string, found an object", self.1)))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self
            .0
            .fail(format!("\"{}\" must be a string, found a list", self.1)))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
        Err(self
            .0
            .fail(format!("\"{}\" must be a string, found {v}", self.1)))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
        Err(self
            .0
            .fail(format!("\"{}\" must be a string, found {v}", self.1)))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
        Err(self
            .0
            .fail(format!("\"{}\" must be a string, found {v}", self.1)))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
        Err(self
            .0
            .fail(format!("\"{}\" must be a string, found {v}", self.1)))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<String, E> {
        Err(self
            .0
            .fail(format!("\"{}\" must be a string, found null", self.1)))
    }
}

/// The value of "instances" (a list of rows, each bare or `{"input": row}`) or of "inputs"
/// (a list of rows, bare or `{"input": [rows]}`); returns the row count.
struct TopSeed<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for TopSeed<'_, '_> {
    type Value = usize;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl TopSeed<'_, '_> {
    fn refuse<E: serde::de::Error>(self) -> E {
        let ctx = self.0;
        let message = if ctx.top == "instances" {
            "\"instances\" must be a list of rows".to_string()
        } else {
            format!(
                "\"inputs\" for \"{}\" must be a list of rows of {} numbers",
                ctx.input.key, ctx.width
            )
        };
        ctx.fail(message)
    }
}

impl<'de> serde::de::Visitor<'de> for TopSeed<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of rows")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<usize, A::Error> {
        let named_rows = self.0.top == "instances";
        rows(self.0, seq, named_rows)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<usize, A::Error> {
        let ctx = self.0;
        if ctx.top == "instances" {
            return Err(TopSeed(ctx).refuse());
        }
        // Columnar with named inputs: exactly the one input of the signature.
        let mut rows_read = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.as_ref() != ctx.input.key || rows_read.is_some() {
                return Err(ctx.fail(format!(
                    "inputs names input \"{key}\"; expected exactly the input \"{}\"",
                    ctx.input.key
                )));
            }
            rows_read = Some(map.next_value_seed(RowsSeed(&mut *ctx))?);
        }
        match rows_read {
            Some(n) => Ok(n),
            None => Err(ctx.fail(format!(
                "inputs names no input; expected exactly the input \"{}\"",
                ctx.input.key
            ))),
        }
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<usize, E> {
        Err(self.refuse())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<usize, E> {
        Err(self.refuse())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<usize, E> {
        Err(self.refuse())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<usize, E> {
        Err(self.refuse())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<usize, E> {
        Err(self.refuse())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<usize, E> {
        Err(self.refuse())
    }
}

/// The list of rows under a named columnar input.
struct RowsSeed<'c, 'a>(&'c mut Ctx<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for RowsSeed<'_, '_> {
    type Value = usize;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<usize, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for RowsSeed<'_, '_> {
    type Value = usize;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a list of rows")
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<usize, A::Error> {
        rows(self.0, seq, false)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, _: A) -> Result<usize, A::Error> {
        Err(TopSeed(self.0).refuse())
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<usize, E> {
        Err(TopSeed(self.0).refuse())
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<usize, E> {
        Err(TopSeed(self.0).refuse())
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<usize, E> {
        Err(TopSeed(self.0).refuse())
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<usize, E> {
        Err(TopSeed(self.0).refuse())
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<usize, E> {
        Err(TopSeed(self.0).refuse())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<usize, E> {
        Err(TopSeed(self.0).refuse())
    }
}

/// Reads a list of rows; each must hold `width` values shaped like the input's row.
fn rows<'de, A: serde::de::SeqAccess<'de>>(
    ctx: &mut Ctx<'_>,
    mut seq: A,
    named_rows: bool,
) -> Result<usize, A::Error> {
    let input = ctx.input;
    let row_dims = input.shape.get(1..).unwrap_or(&[]);
    let mut n = 0;
    loop {
        ctx.path.push(n);
        let before = ctx.values.len();
        let more = seq.next_element_seed(TensorSeed {
            ctx: &mut *ctx,
            dims: row_dims,
            named: named_rows,
        })?;
        if more.is_none() {
            ctx.path.pop();
            return Ok(n);
        }
        let got = ctx.values.len() - before;
        if got != ctx.width {
            let at = ctx.at();
            return Err(ctx.fail(format!(
                "{at} has {got} values; expected {} (input \"{}\" has shape {:?}, one row per instance)",
                ctx.width, input.key, input.shape
            )));
        }
        ctx.path.pop();
        n += 1;
    }
}

/// One tensor value of shape `dims` (-1 = any length); `named` also takes `{"input": value}`.
struct TensorSeed<'c, 'a, 'd> {
    ctx: &'c mut Ctx<'a>,
    dims: &'d [i64],
    named: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for TensorSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TensorSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a number or a list")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        let Some((&want, inner)) = self.dims.split_first() else {
            let at = ctx.at();
            return Err(ctx.fail(format!(
                "{at}: found a list where input \"{}\" (shape {:?}) has a number",
                ctx.input.key, ctx.input.shape
            )));
        };
        let mut n: usize = 0;
        loop {
            ctx.path.push(n);
            let more = seq.next_element_seed(TensorSeed {
                ctx: &mut *ctx,
                dims: inner,
                named: false,
            })?;
            ctx.path.pop();
            if more.is_none() {
                break;
            }
            n += 1;
            // Stop at the first surplus element rather than read on.
            if want >= 0 && n as u64 > want as u64 {
                break;
            }
        }
        if want >= 0 && n as u64 != want as u64 {
            let at = ctx.at();
            let what = if inner.is_empty() { "values" } else { "lists" };
            return Err(ctx.fail(format!(
                "{at} has {n}{} {what}; expected {want} (input \"{}\" has shape {:?})",
                if n as u64 > want as u64 {
                    " or more"
                } else {
                    ""
                },
                ctx.input.key,
                ctx.input.shape
            )));
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let ctx = self.ctx;
        if !self.named {
            return Err(ctx.not_float("{…} (an object)"));
        }
        let mut seen = false;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key.as_ref() != ctx.input.key || seen {
                let at = ctx.at();
                return Err(ctx.fail(format!(
                    "{at} names input \"{key}\"; expected exactly the input \"{}\"",
                    ctx.input.key
                )));
            }
            seen = true;
            map.next_value_seed(TensorSeed {
                ctx: &mut *ctx,
                dims: self.dims,
                named: false,
            })?;
        }
        if !seen {
            let at = ctx.at();
            return Err(ctx.fail(format!(
                "{at} names no input; expected exactly the input \"{}\"",
                ctx.input.key
            )));
        }
        Ok(())
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
        self.ctx.push(self.dims, v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
        self.ctx.push(self.dims, v as f64)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
        self.ctx.push(self.dims, v as f64)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        Err(self.ctx.not_float(format!("{v:?}")))
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
        Err(self.ctx.not_float(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        Err(self.ctx.not_float("null"))
    }
}

async fn predict(
    core: &Core,
    model: &str,
    version: &VersionChoice,
    body: &[u8],
) -> Result<Value, ApiError> {
    let exec = core.executor(model, version)?;
    let servable = exec.servable().clone();
    let d = decode_predict_body(body, &servable.signature)?;
    let (servable, out) = core
        .predict(model, version, &d.signature, d.rows, d.values)
        .await?;
    let width = servable.signature.output_row_width();
    let rows: Vec<Value> = out.chunks(width.max(1)).map(|r| json!(r)).collect();
    Ok(if d.columnar {
        json!({ "outputs": rows })
    } else {
        json!({ "predictions": rows })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn signature() -> Signature {
        let spec = |k: &str, w: i64| TensorSpec {
            key: k.into(),
            tensor_name: format!("{k}:0"),
            shape: vec![-1, w],
        };
        Signature {
            name: "serving_default".into(),
            method_name: "tensorflow/serving/predict".into(),
            inputs: vec![spec("features", 10)],
            outputs: vec![spec("prediction", 1)],
        }
    }

    proptest! {
        #[test]
        fn any_body_decodes_or_is_refused_as_invalid_argument(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            match decode_predict_body(&body, &signature()) {
                // Never more values than the body has bytes: nothing is sized from its claims.
                Ok(d) => prop_assert!(d.values.len() <= body.len()),
                Err(e) => prop_assert_eq!(e.code, Code::InvalidArgument),
            }
        }

        #[test]
        fn json_shaped_bodies_never_panic(
            key in prop_oneof![Just("instances".to_string()), Just("inputs".to_string()), Just("signature_name".to_string()), "[a-z]{1,8}"],
            rows in proptest::collection::vec(proptest::collection::vec(-1e6f64..1e6, 0..12), 0..6),
            named in any::<bool>(),
            junk in "[\\[\\]{}\",:0-9a-z ]{0,40}",
        ) {
            let value = if named { json!({"features": rows}) } else { json!(rows) };
            let body = format!("{{\"{key}\": {value}{junk}}}");
            match decode_predict_body(body.as_bytes(), &signature()) {
                Ok(d) => {
                    prop_assert_eq!(d.values.len(), d.rows * 10);
                    prop_assert!(rows.iter().all(|r| r.len() == 10));
                }
                Err(e) => prop_assert_eq!(e.code, Code::InvalidArgument),
            }
        }
    }

    #[test]
    fn row_and_columnar_bodies_decode_to_the_same_values() {
        let row: Vec<f32> = (0..10).map(|i| i as f32).collect();
        let a = decode_predict_body(
            json!({"instances": [row, row]}).to_string().as_bytes(),
            &signature(),
        )
        .unwrap();
        let b = decode_predict_body(
            json!({"inputs": {"features": [row, row]}})
                .to_string()
                .as_bytes(),
            &signature(),
        )
        .unwrap();
        assert_eq!((a.rows, &a.values), (b.rows, &b.values));
        assert!(!a.columnar && b.columnar);
    }

    #[test]
    fn rows_must_have_the_inputs_shape_and_keys_are_checked_first() {
        let refuse = |body: Value, fragment: &str| {
            let e = decode_predict_body(body.to_string().as_bytes(), &signature()).unwrap_err();
            assert_eq!(e.code, Code::InvalidArgument);
            assert!(e.message.contains(fragment), "{}: {}", body, e.message);
        };
        // Ten values, but as five pairs: not the input's [10].
        refuse(
            json!({"instances": [[[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]]}),
            "instances[0][0]: found a list",
        );
        refuse(
            json!({"instances": [[1, 2, 3]]}),
            "instances[0] has 3 values; expected 10",
        );
        refuse(
            json!({"instances": [vec![0; 1000]]}),
            "instances[0] has 11 or more values; expected 10",
        );
        refuse(
            json!({"instances": [{"features": vec![0; 10], "extra": 1}]}),
            "expected exactly the input \"features\"",
        );
        refuse(json!({"instances": [{}]}), "names no input");
        refuse(
            json!({"inputs": {"features": [[0, 0, 0, 0, 0, 0, 0, 0, 0, null]]}}),
            "inputs[0][9]: JSON value null",
        );
        refuse(
            json!({"signature_name": 5, "instances": [vec![0; 10]]}),
            "must be a string",
        );
        // The key check sees the whole object before any value is decoded.
        refuse(json!({"instances": [[1]], "inputs": [[1]]}), "Not both");
        refuse(
            json!({"instances": [[1]], "extra": 1}),
            "unknown key \"extra\"",
        );
        let e = decode_predict_body(b"{\"instances\": [[1,2,3,4,5,6,7,8,9,10]] ", &signature())
            .unwrap_err();
        assert!(e.message.contains("JSON parse error"), "{}", e.message);
    }

    #[test]
    fn routes_split_the_verb_from_the_last_segment() {
        let p = |m: Method, s: &str| parse_route(&m, s);
        assert_eq!(
            p(Method::POST, "/v1/models/regression:predict").unwrap(),
            Route::Predict {
                model: "regression".into(),
                version: VersionChoice::Latest
            }
        );
        assert_eq!(
            p(Method::POST, "/v1/models/r/versions/2:predict").unwrap(),
            Route::Predict {
                model: "r".into(),
                version: VersionChoice::Number(2)
            }
        );
        assert_eq!(
            p(Method::POST, "/v1/models/r/labels/stable:predict").unwrap(),
            Route::Predict {
                model: "r".into(),
                version: VersionChoice::Label("stable".into())
            }
        );
        assert_eq!(
            p(Method::GET, "/v1/models/r/metadata").unwrap(),
            Route::Metadata {
                model: "r".into(),
                version: VersionChoice::Latest
            }
        );
        assert_eq!(
            p(Method::GET, "/v1/models/r").unwrap(),
            Route::Status {
                model: "r".into(),
                version: VersionChoice::Latest
            }
        );
        assert_eq!(p(Method::GET, "/v2/x").unwrap_err().code, Code::NotFound);
        assert_eq!(
            p(Method::POST, "/v1/models/r/versions/x:predict")
                .unwrap_err()
                .code,
            Code::InvalidArgument
        );
        assert_eq!(
            p(Method::POST, "/v1/models/r:classify").unwrap_err().code,
            Code::Unimplemented
        );
    }
}
