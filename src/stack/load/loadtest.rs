//! `loadtest` blocks and their `stage` and `slo` blocks (schema: `schema::LOADTEST`,
//! `schema::STAGE`, `schema::SLO`).

use std::time::Duration;

use hcl_edit::structure::{Block, Structure};

use super::super::funcs::resolve;
use super::super::schema::{LOADTEST, SLO, STAGE};
use super::super::sources::{Sources, range_of};
use super::super::value::{Value, suggest};
use super::Decoded;
use super::body::{Checked, Ctx, as_duration, as_string, expect_ref, header_range};
use crate::vocab::load::{
    self as spec, Arrival, Protocol, Rate, RequestSource, Slo, Stage, parse_error_rate,
};
use crate::vocab::resources::{Address, Kind, LoadtestConfig};

impl Sources {
    pub(super) fn decode_loadtest(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
        dec: &mut Decoded,
    ) -> Option<LoadtestConfig> {
        let a = |name| LOADTEST.attr(name);
        let target = self
            .required(cx, c, block, what, a("target"))
            .and_then(|attr| self.reference(cx, attr, Kind::Serving));
        dec.loadtest_cluster = self.reference_attr(cx, c, a("cluster"));
        let model_attr = a("model");
        if let Some(a) = c.attrs.get(model_attr.name)
            && let Some(v) = self.value(cx, a)
        {
            match &v {
                Value::String(s) => dec.loadtest_model = Some((s.clone(), range_of(&a.value))),
                Value::Ref(_) => {
                    if let Ok(addr) = expect_ref(&v, Kind::Model, cx.decls) {
                        dec.loadtest_model = Some((format!("\u{0}{addr}"), range_of(&a.value)));
                    } else {
                        self.error(
                            cx.file,
                            range_of(&a.value),
                            format!(
                                "model: found {}, expected {}",
                                v.describe(),
                                model_attr.ty.expected()
                            ),
                            None,
                        );
                    }
                }
                other => self.error(
                    cx.file,
                    range_of(&a.value),
                    format!(
                        "model: found {}, expected {}",
                        other.describe(),
                        model_attr.ty.expected()
                    ),
                    None,
                ),
            }
        }
        // On an error, decoding goes on with the default so that later problems are found too
        // (the resource is dropped because an error was reported).
        let protocol = self
            .choice(cx, c, a("protocol"), |s| Protocol::parse(s).ok())
            .unwrap_or(Protocol::Rest);
        let signature = self.string(cx, c, a("signature"));
        let body_attr = a("request");
        let request = c.attrs.get(body_attr.name).and_then(|a| {
            let body = self.typed(cx, a, as_string)?;
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Object(o))
                    if o.contains_key("instances") || o.contains_key("inputs") =>
                {
                    Some(body)
                }
                Ok(_) => {
                    self.error(
                        cx.file,
                        range_of(&a.value),
                        format!(
                            "request: found JSON without \"instances\" or \"inputs\", expected {}",
                            body_attr.ty.expected()
                        ),
                        None,
                    );
                    None
                }
                Err(e) => {
                    self.error(
                        cx.file,
                        range_of(&a.value),
                        format!(
                            "request: found text that is not JSON ({e}), expected {}",
                            body_attr.ty.expected()
                        ),
                        None,
                    );
                    None
                }
            }
        });
        let data = c.attrs.get("data").and_then(|a| {
            let p = self.typed(cx, a, as_string)?;
            let path = resolve(cx.scope.dir, &p);
            if path.is_file() {
                Some(path)
            } else {
                self.error(cx.file, range_of(&a.value), format!("data: found {p:?}, but {} is not a file; expected a CSV file with a header row (relative paths resolve against the stack file's directory)", path.display()), None);
                None
            }
        });
        let batch_size = self.uint(cx, c, a("batch_size")).map(|n| n as u32);
        if batch_size.is_some()
            && !c.attrs.contains_key("data")
            && let Some(a) = c.attrs.get("batch_size")
        {
            self.error(cx.file, range_of(&a.key), "found batch_size without data, expected batch_size only with data = \"….csv\" (a request body fixes its own batch)".to_string(), None);
        }
        let request = match (
            c.attrs.contains_key("request"),
            c.attrs.contains_key("data"),
        ) {
            (true, true) => {
                if let Some(a) = c.attrs.get("data") {
                    self.error(
                        cx.file,
                        range_of(&a.key),
                        "found both request and data, expected one of them".to_string(),
                        None,
                    );
                }
                None
            }
            (false, false) => {
                self.error(cx.file, header_range(block), format!("found {what} with neither `request` nor `data`, expected `data = {}` or `request = {}`", a("data").example, a("request").example), None);
                None
            }
            (true, false) => request.map(RequestSource::Body),
            (false, true) => data.map(|path| RequestSource::Data {
                path,
                batch_size: batch_size
                    .unwrap_or(a("batch_size").default_uint().unwrap_or(1) as u32),
            }),
        };
        let workers = self.uint_or_default(cx, c, a("workers")) as u32;
        let start_tolerance_ms = self
            .duration(cx, c, a("start_tolerance"))
            .ok()
            .flatten()
            .map_or(crate::vocab::resources::DEFAULT_START_TOLERANCE_MS, |d| {
                d.as_millis() as u64
            });
        let (loadgen_image, loadgen_image_from) = self.image_ref(cx, c, a("loadgen_image"));
        let connections = self.uint_or_default(cx, c, a("connections")) as u32;
        let arrival = self
            .choice(cx, c, a("arrival"), |s| Arrival::parse(s).ok())
            .unwrap_or_default();
        let seed = self.uint_or_default(cx, c, a("seed"));
        let warmup = self
            .duration(cx, c, a("warmup"))
            .ok()
            .flatten()
            .unwrap_or(Duration::ZERO);
        let timeout = self.duration(cx, c, a("timeout")).ok().flatten();
        let mut stages = Vec::new();
        if let Some(n) = LOADTEST.nested(STAGE.name) {
            for b in self.nested(cx, c, block, what, n) {
                if let Some(s) = self.decode_stage(cx, b, stages.len()) {
                    stages.push(s);
                }
            }
        }
        let slos = match LOADTEST.nested(SLO.name) {
            Some(n) => match self.nested(cx, c, block, what, n).first() {
                Some(b) => self.decode_slo(cx, b),
                None => Vec::new(),
            },
            None => Vec::new(),
        };
        // The load generator refuses these too (one check, `spec::check_run_length`); here
        // they are found at validate, located.
        if let Err(spec::SpecError::RunTooLong) = spec::check_run_length(warmup, &stages) {
            self.error(cx.file, header_range(block), format!("found {what} whose warmup and stages last longer than 366 days, expected a shorter run"), None);
        }
        Some(LoadtestConfig {
            // Filled in by the cross-resource checks (default: the target's cluster).
            cluster: dec.loadtest_cluster.clone().unwrap_or(Address {
                kind: Kind::Cluster,
                name: String::new(),
                key: None,
            }),
            target: target?,
            model: String::new(),
            signature,
            protocol,
            request: request?,
            workers,
            start_tolerance_ms,
            loadgen_image,
            loadgen_image_from,
            connections,
            arrival,
            seed,
            warmup,
            timeout: timeout?,
            stages,
            slos,
        })
    }

    pub(super) fn decode_stage(&mut self, cx: &Ctx, b: &Block, index: usize) -> Option<Stage> {
        let c = self.check_body(cx.file, &b.body, "stage", &STAGE);
        let a = |name| STAGE.attr(name);
        let rate_attr = a("rate");
        let rate = self
            .required(cx, &c, b, "a stage", rate_attr)
            .and_then(|attr| {
                self.typed(cx, attr, |v| {
                    match v {
                        Value::Number(n) => Rate::per_second(*n),
                        Value::String(s) => Rate::parse(s),
                        _ => Err(spec::SpecError::Rate(String::new())),
                    }
                    .map_err(|_| rate_attr.ty.expected())
                })
            });
        let duration = match self.required(cx, &c, b, "a stage", a("duration")) {
            Some(_) => self.duration(cx, &c, a("duration")).ok().flatten(),
            None => None,
        };
        let name = self
            .string(cx, &c, a("name"))
            .unwrap_or_else(|| format!("stage-{}", index + 1));
        Some(Stage {
            name,
            rate: rate?,
            duration: duration?,
        })
    }

    pub(super) fn decode_slo(&mut self, cx: &Ctx, b: &Block) -> Vec<Slo> {
        let mut out = Vec::new();
        for s in b.body.iter() {
            match s {
                Structure::Block(inner) => self.error(
                    cx.file,
                    range_of(&inner.ident),
                    format!(
                        "found the block `{}` in slo, expected percentiles such as p99 = \"50ms\" or errors = \"0.1%\"",
                        inner.ident.value()
                    ),
                    None,
                ),
                Structure::Attribute(a) => {
                    let key = a.key.value().as_str();
                    if key == "errors" {
                        if let Some(text) = self.typed(cx, a, as_string) {
                            match parse_error_rate(text.trim()) {
                                Some(errors) => out.push(Slo::ErrorRate { errors }),
                                None => self.error(
                                    cx.file,
                                    range_of(&a.value),
                                    format!("errors: found \"{text}\", expected {}", SLO.attr("errors").ty.expected()),
                                    None,
                                ),
                            }
                        }
                        continue;
                    }
                    let Some(percentile) = Slo::parse_percentile(key) else {
                        let help = suggest(key, ["p50", "p90", "p99", "p999", "errors"])
                            .map(|s| format!("did you mean `{s}`?"));
                        self.error(cx.file, range_of(&a.key), format!("found `{key}` in slo, expected a percentile such as p50, p90, p99 or p999, or errors"), help);
                        continue;
                    };
                    match self.typed(cx, a, as_duration) {
                        Some(d) if d.is_zero() => self.error(
                            cx.file,
                            range_of(&a.value),
                            format!("{key}: found 0s, expected a latency limit greater than zero"),
                            None,
                        ),
                        Some(limit) => out.push(Slo::Latency { percentile, limit }),
                        None => {}
                    }
                }
            }
        }
        out
    }
}
