//! `serving` blocks and their `batching` block (schema: `schema::SERVING`, `schema::BATCHING`).

use std::collections::BTreeMap;

use hcl_edit::structure::Block;

use super::super::schema::{BATCHING, RESERVED_FLAGS, SERVING};
use super::super::sources::{Sources, range_of};
use super::super::value::Value;
use super::body::{Checked, Ctx, as_quantity, as_uint, expect_ref, object_key_range};
use crate::vocab::resources::{BatchingConfig, FlagValue, Kind, ServingConfig};

impl Sources {
    pub(super) fn decode_serving(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
    ) -> Option<ServingConfig> {
        let a = |name| SERVING.attr(name);
        let cluster = self
            .required(cx, c, block, what, a("cluster"))
            .and_then(|attr| self.reference(cx, attr, Kind::Cluster));
        let (image, image_from) = self.image_ref(cx, c, a("image"));
        let replicas = self.uint_or_default(cx, c, a("replicas")) as u32;
        let mut models = Vec::new();
        let models_attr = a("models");
        match self.required(cx, c, block, what, models_attr) {
            None => {}
            Some(a) => {
                if let Some(v) = self.value(cx, a) {
                    match &v {
                        Value::List(l) if !l.is_empty() => {
                            for x in l {
                                match expect_ref(x, Kind::Model, cx.decls) {
                                    Ok(addr) => {
                                        if models.contains(&addr) {
                                            self.error(cx.file, range_of(&a.value), format!("models: found {addr} twice, expected each model once"), None);
                                        }
                                        models.push(addr);
                                    }
                                    Err(expected) => self.error(
                                        cx.file,
                                        range_of(&a.value),
                                        format!(
                                            "models: found {} in the list, expected {expected}",
                                            x.describe()
                                        ),
                                        None,
                                    ),
                                }
                            }
                        }
                        other => self.error(
                            cx.file,
                            range_of(&a.value),
                            format!(
                                "models: found {}, expected {}",
                                other.describe(),
                                models_attr.ty.expected()
                            ),
                            None,
                        ),
                    }
                }
            }
        }
        let flags_attr = a("flags");
        let flags = self.opt(cx, c, flags_attr.name, |v| match v {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| {
                    let fv = match v {
                        Value::Bool(b) => FlagValue::Bool(*b),
                        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
                            FlagValue::Int(*n as i64)
                        }
                        Value::Number(n) => FlagValue::Float(*n),
                        Value::String(s) => FlagValue::String(s.clone()),
                        other => {
                            return Err(format!(
                                "a map of scalar flag values (bool, number or string); `{k}` is {}",
                                other.describe()
                            ));
                        }
                    };
                    Ok((k.clone(), fv))
                })
                .collect::<Result<BTreeMap<_, _>, _>>(),
            _ => Err(flags_attr.ty.expected()),
        });
        if let (Some(flags), Some(a)) = (&flags, c.attrs.get("flags")) {
            for k in flags.keys() {
                let bare = k.trim_start_matches('-');
                let r = object_key_range(&a.value, k).unwrap_or_else(|| range_of(&a.value));
                if RESERVED_FLAGS.contains(&bare) {
                    self.error(cx.file, r.clone(), format!("flags: found `{k}`, which benchstack sets itself; expected other TF Serving flags (ports, models and batching come from the serving block)"), None);
                } else if bare != k || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.error(cx.file, r, format!("flags: found the flag name {k:?}, expected a bare flag name such as tensorflow_intra_op_parallelism"), None);
                }
            }
        }
        let batching = SERVING
            .nested(BATCHING.name)
            .map(|n| self.nested(cx, c, block, what, n))
            .unwrap_or_default()
            .first()
            .and_then(|b| self.decode_batching(cx, b));
        let cpu_attr = a("cpu");
        let cpu = self.opt(cx, c, cpu_attr.name, |v| as_quantity(v, &cpu_attr.ty));
        let memory_attr = a("memory");
        let memory = self.opt(cx, c, memory_attr.name, |v| as_quantity(v, &memory_attr.ty));
        Some(ServingConfig {
            cluster: cluster?,
            image,
            image_from,
            replicas,
            models,
            flags: flags.unwrap_or_default(),
            batching,
            cpu,
            memory,
        })
    }

    pub(super) fn decode_batching(&mut self, cx: &Ctx, b: &Block) -> Option<BatchingConfig> {
        let c = self.check_body(cx.file, &b.body, "batching", &BATCHING);
        let before = self.diags.len();
        // The ranges are the stand-in's startup bounds (schema::BATCHING), so validate
        // refuses what `benchstack serve` would (TF Serving's tuned values are far below them).
        let a = |name| BATCHING.attr(name);
        let mut cfg = BatchingConfig {
            max_batch_size: self.uint(cx, &c, a("max_batch_size")),
            batch_timeout_micros: self.uint(cx, &c, a("batch_timeout_micros")),
            max_enqueued_batches: self.uint(cx, &c, a("max_enqueued_batches")),
            num_batch_threads: self.uint(cx, &c, a("num_batch_threads")),
            allowed_batch_sizes: Vec::new(),
            pad_variable_length_inputs: self.boolean(cx, &c, a("pad_variable_length_inputs")),
            enable_large_batch_splitting: self.boolean(cx, &c, a("enable_large_batch_splitting")),
            max_execution_batch_size: self.uint(cx, &c, a("max_execution_batch_size")),
        };
        let sizes_attr = a("allowed_batch_sizes");
        if let Some(attr) = c.attrs.get(sizes_attr.name)
            && let Some(sizes) = self.typed(cx, attr, |v| match v {
                Value::List(l) if !l.is_empty() => l
                    .iter()
                    .map(|x| as_uint(x, &sizes_attr.ty).map_err(|_| sizes_attr.ty.expected()))
                    .collect::<Result<Vec<u64>, String>>(),
                _ => Err(sizes_attr.ty.expected()),
            })
        {
            let r = range_of(&attr.value);
            if let Some(w) = sizes.windows(2).find(|w| w[1] <= w[0]) {
                self.error(cx.file, r.clone(), format!("allowed_batch_sizes: found {} after {}, expected strictly increasing sizes", w[1], w[0]), None);
            } else if let Some(&last) = sizes.last() {
                // TF Serving: the last allowed size equals max_execution_batch_size when large
                // batches are split, else max_batch_size (default 1000).
                let (limit, name) = if cfg.enable_large_batch_splitting == Some(true) {
                    (
                        cfg.max_execution_batch_size
                            .or(cfg.max_batch_size)
                            .unwrap_or(1000),
                        "max_execution_batch_size",
                    )
                } else {
                    (cfg.max_batch_size.unwrap_or(1000), "max_batch_size")
                };
                if last != limit {
                    let default_note = if cfg.max_batch_size.is_none() {
                        " (TF Serving's default, as max_batch_size is not set)"
                    } else {
                        ""
                    };
                    self.error(cx.file, r, format!("allowed_batch_sizes: found a list ending at {last}, expected it to end at {name} = {limit}{default_note}"), None);
                }
            }
            cfg.allowed_batch_sizes = sizes;
        }
        if let (Some(exec), Some(max)) = (cfg.max_execution_batch_size, cfg.max_batch_size)
            && cfg.enable_large_batch_splitting == Some(true)
            && exec > max
            && let Some(a) = c.attrs.get("max_execution_batch_size")
        {
            self.error(cx.file, range_of(&a.value), format!("max_execution_batch_size: found {exec}, expected at most max_batch_size = {max}"), None);
        }
        if self.diags.len() > before {
            None
        } else {
            Some(cfg)
        }
    }
}
