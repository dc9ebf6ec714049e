//! TF Serving's REST API: `POST /v1/models/NAME[/versions/V|/labels/L]:predict` in row
//! (`instances`) and columnar (`inputs`) formats, `GET /v1/models/NAME[/versions/V]`
//! (version status), `…/metadata`, and Prometheus text at `/monitoring/prometheus/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use super::core::{ApiError, Code, Core, VersionChoice};
use super::model::{Signature, TensorSpec};

/// Bodies larger than this are refused (TF Serving's default gRPC limit is similar).
const MAX_BODY: usize = 64 << 20;

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

/// Routes one request; never panics on input.
pub async fn handle(core: Arc<Core>, req: Request<hyper::body::Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if path == "/monitoring/prometheus/metrics" && method == Method::GET {
        let mut r = Response::new(Full::new(Bytes::from(core.prometheus())));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        return r;
    }
    let route = match parse_route(&method, &path) {
        Ok(r) => r,
        Err(e) => return error_response(&e),
    };
    match route {
        Route::Status { model, version } => match status(&core, &model, &version) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => error_response(&e),
        },
        Route::Metadata { model, version } => match metadata(&core, &model, &version) {
            Ok(v) => json_response(StatusCode::OK, &v),
            Err(e) => error_response(&e),
        },
        Route::Predict { model, version } => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    core.requests.rest_error.fetch_add(1, Ordering::Relaxed);
                    return error_response(&ApiError::invalid(format!(
                        "cannot read the request body: {e}"
                    )));
                }
            };
            match predict(&core, &model, &version, &body).await {
                Ok(v) => {
                    core.requests.rest_ok.fetch_add(1, Ordering::Relaxed);
                    json_response(StatusCode::OK, &v)
                }
                Err(e) => {
                    core.requests.rest_error.fetch_add(1, Ordering::Relaxed);
                    error_response(&e)
                }
            }
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
pub fn decode_predict_body(body: &[u8], signature: &Signature) -> Result<Decoded, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid(format!(
            "JSON parse error: {e}; expected a JSON object with \"instances\" or \"inputs\""
        ))
    })?;
    let obj = v.as_object().ok_or_else(|| {
        ApiError::invalid("the request body must be a JSON object with \"instances\" or \"inputs\"")
    })?;
    for k in obj.keys() {
        if !matches!(k.as_str(), "instances" | "inputs" | "signature_name") {
            return Err(ApiError::invalid(format!(
                "unknown key \"{k}\" in the request; expected \"instances\" or \"inputs\" and optionally \"signature_name\""
            )));
        }
    }
    let signature_name = match obj.get("signature_name") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "\"signature_name\" must be a string, found {other}"
            )));
        }
    };
    let input = &signature.inputs[0];
    let width = signature.row_width();
    let mut values = Vec::new();
    match (obj.get("instances"), obj.get("inputs")) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "Not both 'instances' and 'inputs' can be set in the request",
        )),
        (None, None) => Err(ApiError::invalid(
            "Missing 'inputs' or 'instances' key in the request",
        )),
        (Some(instances), None) => {
            let list = instances
                .as_array()
                .ok_or_else(|| ApiError::invalid("\"instances\" must be a list of rows"))?;
            for (i, row) in list.iter().enumerate() {
                let row = match row {
                    Value::Object(named) => {
                        expect_only_key(named, &input.key, &format!("instances[{i}]"))?;
                        &named[&input.key]
                    }
                    other => other,
                };
                let before = values.len();
                flatten(row, &mut values, &format!("instances[{i}]"))?;
                let got = values.len() - before;
                if got != width {
                    return Err(shape_error(&format!("instances[{i}]"), got, width, input));
                }
            }
            Ok(Decoded {
                signature: signature_name,
                columnar: false,
                rows: list.len(),
                values,
            })
        }
        (None, Some(inputs)) => {
            let tensor = match inputs {
                Value::Object(named) => {
                    expect_only_key(named, &input.key, "inputs")?;
                    &named[&input.key]
                }
                other => other,
            };
            let rows = tensor.as_array().ok_or_else(|| {
                ApiError::invalid(format!(
                    "\"inputs\" for \"{}\" must be a list of rows of {width} numbers",
                    input.key
                ))
            })?;
            for (i, row) in rows.iter().enumerate() {
                let before = values.len();
                flatten(row, &mut values, &format!("inputs[{i}]"))?;
                let got = values.len() - before;
                if got != width {
                    return Err(shape_error(&format!("inputs[{i}]"), got, width, input));
                }
            }
            Ok(Decoded {
                signature: signature_name,
                columnar: true,
                rows: rows.len(),
                values,
            })
        }
    }
}

fn expect_only_key(
    named: &serde_json::Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<(), ApiError> {
    if named.len() == 1 && named.contains_key(key) {
        return Ok(());
    }
    let found: Vec<&str> = named.keys().map(|k| k.as_str()).collect();
    Err(ApiError::invalid(format!(
        "{at} names inputs {found:?}; expected exactly the input \"{key}\""
    )))
}

fn shape_error(at: &str, got: usize, width: usize, input: &TensorSpec) -> ApiError {
    ApiError::invalid(format!(
        "{at} has {got} values; expected {width} (input \"{}\" has shape {:?}, one row per instance)",
        input.key, input.shape
    ))
}

fn flatten(v: &Value, out: &mut Vec<f32>, at: &str) -> Result<(), ApiError> {
    match v {
        Value::Number(n) => {
            let x = n
                .as_f64()
                .ok_or_else(|| ApiError::invalid(format!("{at}: {n} is not a float")))?;
            out.push(x as f32);
            Ok(())
        }
        Value::Array(items) => {
            for (j, item) in items.iter().enumerate() {
                if out.len() > MAX_BODY {
                    return Err(ApiError::invalid("the request holds too many values"));
                }
                flatten(item, out, &format!("{at}[{j}]"))?;
            }
            Ok(())
        }
        other => Err(ApiError::invalid(format!(
            "{at}: JSON value {other} is not of expected type: float (DT_FLOAT)"
        ))),
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
            if let Err(e) = decode_predict_body(&body, &signature()) {
                prop_assert_eq!(e.code, Code::InvalidArgument);
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
