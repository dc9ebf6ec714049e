//! `output` blocks (schema: `schema::OUTPUT`; what a provider reports: `computed` in the
//! resource kinds' schemas).

use hcl_edit::structure::Block;

use super::super::schema::{self, OUTPUT};
use super::super::sources::{Sources, range_of};
use super::super::value::{Reference, Value, suggest};
use super::body::{Checked, Ctx, expect_ref};
use crate::vocab::resources::{Output, OutputValue};

/// The attributes a provider reports after apply for `kind` (`serving` → `rest_endpoint`, …).
fn computed(kind: &str) -> Vec<&'static str> {
    schema::block(kind)
        .map(|b| b.computed.iter().map(|(name, _)| *name).collect())
        .unwrap_or_default()
}

/// Every `KIND.NAME.ATTRIBUTE` a provider reports, for "expected …".
fn computed_examples() -> String {
    let all: Vec<String> = schema::BLOCKS
        .iter()
        .flat_map(|b| {
            b.computed
                .iter()
                .map(|(a, _)| format!("{}.NAME.{a}", b.name))
        })
        .collect();
    match all.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

impl Sources {
    pub(super) fn decode_output(&mut self, cx: &Ctx, b: &Block, name: &str) -> Option<Output> {
        let what = format!("output \"{name}\"");
        let c: Checked = self.check_body(cx.file, &b.body, &what, &OUTPUT);
        let _ = self.string(cx, &c, OUTPUT.attr("description"));
        let a = self.required(cx, &c, b, &what, OUTPUT.attr("value"))?;
        let v = self.value(cx, a)?;
        let span = self.span(cx.file, range_of(&b.ident));
        let value = match &v {
            Value::Ref(Reference {
                address,
                attribute: Some(attr),
            }) => {
                let reported = computed(address.kind.as_str());
                if !reported.contains(&attr.as_str()) {
                    let help = suggest(attr, reported.iter().copied())
                        .map(|s| format!("did you mean {address}.{s}?"));
                    self.error(cx.file, range_of(&a.value), format!("value: found {address}.{attr}, expected an attribute a provider reports: {}", computed_examples()), help);
                    return None;
                }
                if let Err(expected) = expect_ref(
                    &Value::Ref(Reference {
                        address: address.clone(),
                        attribute: None,
                    }),
                    address.kind,
                    cx.decls,
                ) {
                    self.error(
                        cx.file,
                        range_of(&a.value),
                        format!("value: found {address}.{attr}, expected {expected}"),
                        None,
                    );
                    return None;
                }
                OutputValue::Attribute {
                    address: address.clone(),
                    attribute: attr.clone(),
                }
            }
            Value::Ref(r) => {
                self.error(cx.file, range_of(&a.value), format!("value: found a reference to {r}, expected one of its attributes, e.g. {r}.rest_endpoint"), None);
                return None;
            }
            other if !other.references().is_empty() => {
                self.error(cx.file, range_of(&a.value), format!("value: found {} holding resource references, expected a single reference such as serving.NAME.rest_endpoint or a value known at load", other.describe()), None);
                return None;
            }
            other => OutputValue::Known(other.to_json()),
        };
        Some(Output {
            name: name.to_string(),
            span,
            value,
        })
    }
}
