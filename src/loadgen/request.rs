//! What requests carry, built once before the run: TF Serving JSON predict bodies (from a
//! file, or sampled from CSV rows), the raw HTTP/1.1 requests for REST, and PredictRequests
//! for gRPC (converted from the same JSON).

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::proto::serving::{ModelSpec, PredictRequest};
use crate::proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto};

use crate::vocab::load::RequestSource;

/// How many distinct bodies are pre-built from CSV rows (requests cycle through them).
pub const SAMPLED_BODIES: usize = 1024;
/// The most rows one request may carry (as the stack language allows).
pub const MAX_BATCH_SIZE: u32 = 1_000_000;
/// The most rows sampled in all (fewer distinct bodies for large batches), so memory stays
/// bounded whatever the batch size.
const MAX_SAMPLED_ROWS: usize = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RequestError {
    #[error("is not JSON: {0}")]
    NotJson(String),
    #[error("is not a TF Serving predict body: {0}")]
    NotPredictBody(String),
    #[error("line {line}: {reason}")]
    Csv { line: usize, reason: String },
    #[error("cannot be read: {0}")]
    Io(String),
    #[error("a batch size of {0} rows is too large: expected at most {MAX_BATCH_SIZE}")]
    BatchSize(u32),
}

/// Builds the JSON predict bodies: the file's body as is, or `SAMPLED_BODIES` bodies of
/// `batch_size` rows drawn (seeded, with replacement) from the CSV. With a signature, its
/// name is set in every body.
pub fn json_bodies(
    source: &RequestSource,
    signature: Option<&str>,
    seed: u64,
) -> Result<Vec<String>, RequestError> {
    let bodies = match source {
        RequestSource::Body(text) => {
            let mut v: Value =
                serde_json::from_str(text).map_err(|e| RequestError::NotJson(e.to_string()))?;
            check_predict_body(&v)?;
            if let (Some(sig), Some(obj)) = (signature, v.as_object_mut()) {
                obj.insert("signature_name".into(), Value::String(sig.to_string()));
                vec![v.to_string()]
            } else {
                vec![text.trim().to_string()]
            }
        }
        RequestSource::Data { path, batch_size } => {
            if *batch_size > MAX_BATCH_SIZE {
                return Err(RequestError::BatchSize(*batch_size));
            }
            let rows = read_csv(path)?;
            sample_bodies(&rows, *batch_size as usize, signature, seed)
        }
    };
    Ok(bodies)
}

fn check_predict_body(v: &Value) -> Result<(), RequestError> {
    let obj = v
        .as_object()
        .ok_or_else(|| RequestError::NotPredictBody("expected a JSON object".into()))?;
    match (obj.get("instances"), obj.get("inputs")) {
        (Some(_), Some(_)) => Err(RequestError::NotPredictBody(
            "it has both `instances` and `inputs`; expected exactly one".into(),
        )),
        (None, None) => Err(RequestError::NotPredictBody(
            "expected an `instances` (row format) or `inputs` (columnar) member".into(),
        )),
        (Some(Value::Array(rows)), None) if rows.is_empty() => {
            Err(RequestError::NotPredictBody("`instances` is empty".into()))
        }
        (Some(Value::Array(_)), None) => Ok(()),
        (Some(_), None) => Err(RequestError::NotPredictBody(
            "`instances` must be a list".into(),
        )),
        (None, Some(_)) => Ok(()),
    }
}

/// Reads a CSV with a header of column names and rows of numbers.
pub fn read_csv(path: &Path) -> Result<Vec<Vec<f64>>, RequestError> {
    let text = std::fs::read_to_string(path).map_err(|e| RequestError::Io(e.to_string()))?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or(RequestError::Csv {
        line: 1,
        reason: "the file is empty; expected a header line of column names".into(),
    })?;
    let columns = header.split(',').count();
    if header.split(',').all(|c| c.trim().parse::<f64>().is_ok()) {
        return Err(RequestError::Csv {
            line: 1,
            reason: "expected a header line of column names, found numbers".into(),
        });
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() != columns {
            return Err(RequestError::Csv {
                line: i + 1,
                reason: format!(
                    "{} columns, expected {columns} as in the header",
                    fields.len()
                ),
            });
        }
        let row = fields
            .iter()
            .enumerate()
            .map(|(c, f)| {
                f.trim().parse::<f64>().map_err(|_| RequestError::Csv {
                    line: i + 1,
                    reason: format!("column {}: `{}` is not a number", c + 1, f.trim()),
                })
            })
            .collect::<Result<Vec<f64>, _>>()?;
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(RequestError::Csv {
            line: 2,
            reason: "no data rows after the header".into(),
        });
    }
    Ok(rows)
}

fn sample_bodies(
    rows: &[Vec<f64>],
    batch_size: usize,
    signature: Option<&str>,
    seed: u64,
) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_b0d1);
    let count = if batch_size >= rows.len() && rows.len() == 1 {
        1
    } else {
        (MAX_SAMPLED_ROWS / batch_size.max(1)).clamp(1, SAMPLED_BODIES)
    };
    (0..count)
        .map(|_| {
            let instances: Vec<&Vec<f64>> = (0..batch_size.max(1))
                .map(|_| &rows[rng.random_range(0..rows.len())])
                .collect();
            let mut body = serde_json::json!({ "instances": instances });
            if let Some(sig) = signature {
                body["signature_name"] = Value::String(sig.to_string());
            }
            body.to_string()
        })
        .collect()
}

/// The raw bytes of one keep-alive HTTP/1.1 predict request.
pub fn http_request(host: &str, model: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v1/models/{model}:predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A predict body's tensors: unnamed (one input, name from the model's signature) or named.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Unnamed(TensorProto),
    Named(Vec<(String, TensorProto)>),
}

impl Inputs {
    pub fn needs_name(&self) -> bool {
        matches!(self, Inputs::Unnamed(_))
    }
}

/// Converts a JSON predict body into tensors (rows are stacked along a new first dimension).
pub fn json_to_inputs(body: &str) -> Result<Inputs, RequestError> {
    let v: Value = serde_json::from_str(body).map_err(|e| RequestError::NotJson(e.to_string()))?;
    check_predict_body(&v)?;
    if let Some(Value::Array(rows)) = v.get("instances") {
        if rows.iter().all(Value::is_object) {
            let mut names: Vec<String> = Vec::new();
            let mut columns: HashMap<String, Vec<Value>> = HashMap::new();
            for row in rows {
                let obj = row.as_object().expect("checked: every row is an object");
                for (k, val) in obj {
                    if !columns.contains_key(k) {
                        names.push(k.clone());
                    }
                    columns.entry(k.clone()).or_default().push(val.clone());
                }
            }
            let mut out = Vec::new();
            for n in names {
                let vals = columns.remove(&n).unwrap_or_default();
                if vals.len() != rows.len() {
                    return Err(RequestError::NotPredictBody(format!(
                        "input `{n}` is missing from some instances"
                    )));
                }
                out.push((n, tensor(&Value::Array(vals))?));
            }
            return Ok(Inputs::Named(out));
        }
        return Ok(Inputs::Unnamed(tensor(&Value::Array(rows.clone()))?));
    }
    match v.get("inputs") {
        Some(Value::Object(map)) => Ok(Inputs::Named(
            map.iter()
                .map(|(k, val)| Ok((k.clone(), tensor(val)?)))
                .collect::<Result<_, RequestError>>()?,
        )),
        Some(other) => Ok(Inputs::Unnamed(tensor(other)?)),
        None => Err(RequestError::NotPredictBody(
            "expected `instances` or `inputs`".into(),
        )),
    }
}

/// Builds the PredictRequest; `input_name` names an unnamed input (the signature's single input).
pub fn predict_request(
    inputs: &Inputs,
    model: &str,
    signature: Option<&str>,
    input_name: Option<&str>,
) -> Result<PredictRequest, RequestError> {
    let map: HashMap<String, TensorProto> = match inputs {
        Inputs::Named(v) => v.iter().cloned().collect(),
        Inputs::Unnamed(t) => {
            let name = input_name.ok_or_else(|| {
                RequestError::NotPredictBody(
                    "its input has no name and the model's signature could not tell it".into(),
                )
            })?;
            HashMap::from([(name.to_string(), t.clone())])
        }
    };
    Ok(PredictRequest {
        model_spec: Some(ModelSpec {
            name: model.to_string(),
            signature_name: signature.unwrap_or_default().to_string(),
            version_choice: None,
        }),
        inputs: map,
        output_filter: Vec::new(),
    })
}

/// A tensor from nested JSON lists of numbers, booleans or strings (shape from the nesting).
fn tensor(v: &Value) -> Result<TensorProto, RequestError> {
    let mut shape: Vec<i64> = Vec::new();
    let mut probe = v;
    while let Value::Array(items) = probe {
        shape.push(items.len() as i64);
        match items.first() {
            Some(first) => probe = first,
            None => break,
        }
    }
    let mut t = TensorProto {
        tensor_shape: Some(TensorShapeProto {
            dim: shape
                .iter()
                .map(|&size| tensor_shape_proto::Dim {
                    size,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
        ..Default::default()
    };
    let mut leaves = Vec::new();
    flatten(v, &shape, 0, &mut leaves)?;
    match leaves.first() {
        None | Some(Value::Number(_)) => {
            t.dtype = DataType::DtFloat as i32;
            for l in leaves {
                let x = l.as_f64().ok_or_else(|| mixed(l))?;
                t.float_val.push(x as f32);
            }
        }
        Some(Value::Bool(_)) => {
            t.dtype = DataType::DtBool as i32;
            for l in leaves {
                t.bool_val.push(l.as_bool().ok_or_else(|| mixed(l))?);
            }
        }
        Some(Value::String(_)) => {
            t.dtype = DataType::DtString as i32;
            for l in leaves {
                t.string_val
                    .push(l.as_str().ok_or_else(|| mixed(l))?.as_bytes().to_vec());
            }
        }
        Some(other) => {
            return Err(RequestError::NotPredictBody(format!(
                "a tensor value must be a number, boolean or string, found {other}"
            )));
        }
    }
    Ok(t)
}

fn mixed(l: &Value) -> RequestError {
    RequestError::NotPredictBody(format!("a tensor mixes value types (found {l})"))
}

fn flatten<'a>(
    v: &'a Value,
    shape: &[i64],
    depth: usize,
    out: &mut Vec<&'a Value>,
) -> Result<(), RequestError> {
    match v {
        Value::Array(items) => {
            if depth >= shape.len() || items.len() as i64 != shape[depth] {
                return Err(RequestError::NotPredictBody(
                    "a tensor's nested lists are not rectangular".into(),
                ));
            }
            for i in items {
                flatten(i, shape, depth + 1, out)?;
            }
            Ok(())
        }
        leaf => {
            if depth != shape.len() {
                return Err(RequestError::NotPredictBody(
                    "a tensor's nested lists are not rectangular".into(),
                ));
            }
            out.push(leaf);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_file_must_be_json_and_a_predict_body() {
        let body = |s: &str| json_bodies(&RequestSource::Body(s.into()), None, 1);
        assert!(matches!(body("{nope"), Err(RequestError::NotJson(_))));
        assert!(matches!(
            body(r#"{"rows": [[1]]}"#),
            Err(RequestError::NotPredictBody(_))
        ));
        assert!(matches!(
            body(r#"{"instances": [[1]], "inputs": [[1]]}"#),
            Err(RequestError::NotPredictBody(_))
        ));
        assert_eq!(body(r#"{"instances": [[1]]}"#).unwrap().len(), 1);
    }

    #[test]
    fn the_signature_name_is_set_in_the_body() {
        let b = json_bodies(
            &RequestSource::Body(r#"{"instances": [[1]]}"#.into()),
            Some("serving_default"),
            1,
        )
        .unwrap();
        assert!(b[0].contains(r#""signature_name":"serving_default""#));
    }

    #[test]
    fn rows_become_a_float_tensor_with_a_batch_dimension() {
        let Inputs::Unnamed(t) =
            json_to_inputs(r#"{"instances": [[1, 2, 3], [4, 5, 6]]}"#).unwrap()
        else {
            panic!("expected an unnamed input")
        };
        let dims: Vec<i64> = t.tensor_shape.unwrap().dim.iter().map(|d| d.size).collect();
        assert_eq!(dims, vec![2, 3]);
        assert_eq!(t.float_val, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(t.dtype, DataType::DtFloat as i32);
    }

    #[test]
    fn named_rows_and_columnar_inputs_keep_their_names() {
        let Inputs::Named(v) =
            json_to_inputs(r#"{"instances": [{"a": [1, 2]}, {"a": [3, 4]}]}"#).unwrap()
        else {
            panic!()
        };
        assert_eq!(v[0].0, "a");
        let Inputs::Named(v) = json_to_inputs(r#"{"inputs": {"x": [[1.5]]}}"#).unwrap() else {
            panic!()
        };
        assert_eq!(v[0].1.float_val, vec![1.5]);
        assert!(json_to_inputs(r#"{"instances": [[1, 2], [3]]}"#).is_err());
    }

    #[test]
    fn csv_rows_are_sampled_into_batches() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.csv");
        std::fs::write(&p, "a,b\n1,2\n3,4\n").unwrap();
        let b = json_bodies(
            &RequestSource::Data {
                path: p.clone(),
                batch_size: 3,
            },
            None,
            9,
        )
        .unwrap();
        assert_eq!(b.len(), SAMPLED_BODIES);
        let v: Value = serde_json::from_str(&b[0]).unwrap();
        assert_eq!(v["instances"].as_array().unwrap().len(), 3);
        std::fs::write(&p, "a,b\n1,2\n3\n").unwrap();
        let err = read_csv(&p).unwrap_err();
        assert_eq!(
            err,
            RequestError::Csv {
                line: 3,
                reason: "1 columns, expected 2 as in the header".into()
            }
        );
        std::fs::write(&p, "a,b\n1,x\n").unwrap();
        assert!(matches!(
            read_csv(&p),
            Err(RequestError::Csv { line: 2, .. })
        ));
    }
}
