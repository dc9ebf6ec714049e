//! TF Serving's gRPC API: `PredictionService/Predict`, `PredictionService/GetModelMetadata`
//! and `ModelService/GetModelStatus`.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message as _;
use tonic::{Request, Response, Status};

use super::core::{ApiError, Core, VersionChoice};
use super::metrics::{Entrypoint, status_name};
use super::model::{Servable, TensorSpec};
use crate::proto::serving::{
    self, GetModelMetadataRequest, GetModelMetadataResponse, GetModelStatusRequest,
    GetModelStatusResponse, ModelSpec, ModelVersionStatus, PredictRequest, PredictResponse,
    SignatureDef, SignatureDefMap, StatusProto, TensorInfo,
    model_spec::VersionChoice as SpecVersion, model_version_status::State,
};
use crate::proto::tensorflow::{DataType, TensorProto, TensorShapeProto, tensor_shape_proto::Dim};

#[derive(Clone)]
pub struct Service {
    pub core: Arc<Core>,
}

fn version_choice(spec: &ModelSpec) -> VersionChoice {
    match &spec.version_choice {
        Some(SpecVersion::Version(v)) => VersionChoice::Number(*v),
        Some(SpecVersion::VersionLabel(l)) if !l.is_empty() => VersionChoice::Label(l.clone()),
        _ => VersionChoice::Latest,
    }
}

fn spec_of(req: Option<&ModelSpec>) -> Result<&ModelSpec, ApiError> {
    match req {
        Some(s) if !s.name.is_empty() => Ok(s),
        _ => Err(ApiError::invalid(
            "Missing ModelSpec: expected model_spec with a model name",
        )),
    }
}

/// Reads the single float input tensor into rows. Public so tests can check every form.
pub fn decode_input(
    req: &PredictRequest,
    servable: &Servable,
) -> Result<(usize, Vec<f32>), ApiError> {
    let input = &servable.signature.inputs[0];
    let width = servable.signature.row_width();
    if req.inputs.len() != 1 || !req.inputs.contains_key(&input.key) {
        let keys: Vec<&String> = req.inputs.keys().collect();
        return Err(ApiError::invalid(format!(
            "input names {keys:?} do not match the signature; expected exactly [\"{}\"]",
            input.key
        )));
    }
    let Some(t) = req.inputs.get(&input.key) else {
        return Err(ApiError::invalid(format!(
            "the request has no input \"{}\"",
            input.key
        )));
    };
    let shape = t.tensor_shape.as_ref();
    if shape.is_some_and(|s| s.unknown_rank) {
        return Err(ApiError::invalid(format!(
            "input \"{}\" has an unknown rank; expected shape {:?} (-1 = any)",
            input.key, input.shape
        )));
    }
    let dims: Vec<i64> = shape
        .map(|s| s.dim.iter().map(|d| d.size).collect())
        .unwrap_or_default();
    // Rank, signs and the product are checked before anything is sized from them: the shape
    // is the client's word, and a 40-byte message can declare [10^12, 10].
    let count = super::core::element_count(&input.key, &dims)?;
    if dims.len() != input.shape.len()
        || dims
            .iter()
            .zip(&input.shape)
            .any(|(d, e)| *e >= 0 && d != e)
    {
        return Err(ApiError::invalid(format!(
            "input \"{}\" has shape {dims:?}; expected {:?} (-1 = any)",
            input.key, input.shape
        )));
    }
    let values: Vec<f32> = match DataType::try_from(t.dtype) {
        Ok(DataType::DtFloat) => {
            if !t.tensor_content.is_empty() {
                // count <= MAX_ELEMENTS, so this cannot overflow; saturating all the same.
                let need = count.saturating_mul(4);
                if t.tensor_content.len() != need {
                    return Err(ApiError::invalid(format!(
                        "tensor_content holds {} bytes; shape {dims:?} of DT_FLOAT needs {need}",
                        t.tensor_content.len(),
                    )));
                }
                t.tensor_content
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else if t.float_val.len() == count {
                t.float_val.clone()
            } else if t.float_val.len() == 1 {
                // TF fills the whole tensor from a single value; element_count bounded it.
                vec![t.float_val[0]; count]
            } else {
                return Err(ApiError::invalid(format!(
                    "float_val holds {} values; shape {dims:?} needs {count}",
                    t.float_val.len()
                )));
            }
        }
        _ => {
            let name = DataType::try_from(t.dtype)
                .map(|d| d.as_str_name().to_string())
                .unwrap_or_else(|_| t.dtype.to_string());
            return Err(ApiError::invalid(format!(
                "Expects arg[0] (\"{}\") to be float (DT_FLOAT) but {name} is provided",
                input.key
            )));
        }
    };
    if width == 0 || count % width != 0 {
        return Err(ApiError::invalid(format!(
            "input \"{}\" has shape {dims:?}, which is not whole rows of {width} values",
            input.key
        )));
    }
    Ok((count / width, values))
}

fn tensor_info(t: &TensorSpec) -> TensorInfo {
    TensorInfo {
        name: t.tensor_name.clone(),
        dtype: DataType::DtFloat as i32,
        tensor_shape: Some(TensorShapeProto {
            dim: t
                .shape
                .iter()
                .map(|s| Dim {
                    size: *s,
                    name: String::new(),
                })
                .collect(),
            unknown_rank: false,
        }),
    }
}

impl Service {
    async fn predict_inner(&self, req: PredictRequest) -> Result<PredictResponse, ApiError> {
        let spec = spec_of(req.model_spec.as_ref())?;
        let version = version_choice(spec);
        let servable = self.core.executor(&spec.name, &version)?.servable().clone();
        super::core::check_signature(&servable, &spec.signature_name)?;
        let out_key = servable.signature.outputs[0].key.clone();
        for f in &req.output_filter {
            if *f != out_key {
                return Err(ApiError::invalid(format!(
                    "output tensor alias not found in signature: {f}; expected \"{out_key}\""
                )));
            }
        }
        let (rows, values) = decode_input(&req, &servable)?;
        let (servable, out) = self
            .core
            .predict(&spec.name, &version, &spec.signature_name, rows, values)
            .await?;
        let width = servable.signature.output_row_width() as i64;
        let tensor = TensorProto {
            dtype: DataType::DtFloat as i32,
            tensor_shape: Some(TensorShapeProto {
                dim: vec![
                    Dim {
                        size: rows as i64,
                        name: String::new(),
                    },
                    Dim {
                        size: width,
                        name: String::new(),
                    },
                ],
                unknown_rank: false,
            }),
            float_val: out,
            ..Default::default()
        };
        Ok(PredictResponse {
            outputs: HashMap::from([(out_key, tensor)]),
            model_spec: Some(ModelSpec {
                name: spec.name.clone(),
                version_choice: Some(SpecVersion::Version(servable.version)),
                signature_name: servable.signature.name.clone(),
            }),
        })
    }
}

#[tonic::async_trait]
impl serving::prediction_service_server::PredictionService for Service {
    async fn predict(
        &self,
        request: Request<PredictRequest>,
    ) -> Result<Response<PredictResponse>, Status> {
        let started = std::time::Instant::now();
        let req = request.into_inner();
        let model = req
            .model_spec
            .as_ref()
            .map(|s| s.name.clone())
            .unwrap_or_default();
        let m = &self.core.metrics;
        match self.predict_inner(req).await {
            Ok(r) => {
                m.count_request(&model, status_name(None));
                m.request_latency(
                    &model,
                    "Predict",
                    Entrypoint::Grpc,
                    started.elapsed().as_micros() as u64,
                );
                Ok(Response::new(r))
            }
            Err(e) => {
                m.count_request(&model, status_name(Some(e.code)));
                Err(e.grpc_status())
            }
        }
    }

    async fn get_model_metadata(
        &self,
        request: Request<GetModelMetadataRequest>,
    ) -> Result<Response<GetModelMetadataResponse>, Status> {
        let req = request.into_inner();
        let spec = spec_of(req.model_spec.as_ref()).map_err(|e| e.grpc_status())?;
        if req.metadata_field.is_empty() || req.metadata_field.iter().any(|f| f != "signature_def")
        {
            return Err(ApiError::invalid(format!(
                "metadata_field {:?}: expected [\"signature_def\"]",
                req.metadata_field
            ))
            .grpc_status());
        }
        let servable = self
            .core
            .executor(&spec.name, &version_choice(spec))
            .map_err(|e| e.grpc_status())?
            .servable()
            .clone();
        let sig = &servable.signature;
        let def = SignatureDef {
            inputs: sig
                .inputs
                .iter()
                .map(|t| (t.key.clone(), tensor_info(t)))
                .collect(),
            outputs: sig
                .outputs
                .iter()
                .map(|t| (t.key.clone(), tensor_info(t)))
                .collect(),
            method_name: sig.method_name.clone(),
        };
        let map = SignatureDefMap {
            signature_def: HashMap::from([(sig.name.clone(), def)]),
        };
        let any = prost_types::Any {
            type_url: "type.googleapis.com/tensorflow.serving.SignatureDefMap".into(),
            value: map.encode_to_vec(),
        };
        Ok(Response::new(GetModelMetadataResponse {
            model_spec: Some(ModelSpec {
                name: spec.name.clone(),
                version_choice: Some(SpecVersion::Version(servable.version)),
                signature_name: String::new(),
            }),
            metadata: HashMap::from([("signature_def".to_string(), any)]),
        }))
    }
}

#[tonic::async_trait]
impl serving::model_service_server::ModelService for Service {
    async fn get_model_status(
        &self,
        request: Request<GetModelStatusRequest>,
    ) -> Result<Response<GetModelStatusResponse>, Status> {
        let req = request.into_inner();
        let spec = spec_of(req.model_spec.as_ref()).map_err(|e| e.grpc_status())?;
        let model = self.core.model(&spec.name).map_err(|e| e.grpc_status())?;
        let versions: Vec<i64> = match version_choice(spec) {
            VersionChoice::Latest => model.executors.keys().rev().copied().collect(),
            other => vec![
                self.core
                    .executor(&spec.name, &other)
                    .map_err(|e| e.grpc_status())?
                    .servable()
                    .version,
            ],
        };
        Ok(Response::new(GetModelStatusResponse {
            model_version_status: versions
                .into_iter()
                .map(|v| ModelVersionStatus {
                    version: v,
                    state: State::Available as i32,
                    status: Some(StatusProto {
                        error_code: 0,
                        error_message: String::new(),
                    }),
                })
                .collect(),
        }))
    }
}
