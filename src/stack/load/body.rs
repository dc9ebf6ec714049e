//! What every block decoder shares: the body check against the block's schema (unknown,
//! repeated and misplaced attributes and blocks), typed views of values whose "expected …"
//! texts, ranges and defaults come from `stack::schema`, and reference checks.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block, Body, Structure};

use super::super::eval::{Decls, Instances, Scope};
use super::super::schema::{Attr, BlockSchema, DefaultValue, Nested, Presence, Type, article};
use super::super::sources::{Sources, range_of};
use super::super::value::{Reference, Value, suggest};
use crate::vocab::load::{self as spec, SpecError, parse_duration};
use crate::vocab::resources::{Address, Kind};

pub(super) fn block_label(b: &Block) -> Option<&str> {
    b.labels.first().map(|l| l.as_str())
}

pub(super) fn is_valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '-')
}

/// The attributes and nested blocks of one block, checked against what is allowed.
pub(super) struct Checked<'b> {
    pub(super) attrs: HashMap<String, &'b Attribute>,
    pub(super) blocks: Vec<&'b Block>,
}

impl Sources {
    pub(super) fn check_body<'b>(
        &mut self,
        file: usize,
        body: &'b Body,
        what: &str,
        schema: &BlockSchema,
    ) -> Checked<'b> {
        let attrs = &schema.attr_names()[..];
        let blocks = &schema.block_names()[..];
        let mut out = Checked {
            attrs: HashMap::new(),
            blocks: Vec::new(),
        };
        for s in body.iter() {
            match s {
                Structure::Attribute(a) => {
                    let key = a.key.value().to_string();
                    if !attrs.contains(&key.as_str()) {
                        let is_block = blocks.contains(&key.as_str());
                        let help = if is_block {
                            Some(format!(
                                "`{key}` is a block: write `{key} {{ … }}` without `=`"
                            ))
                        } else {
                            suggest(&key, attrs.iter().chain(blocks).copied())
                                .map(|s| format!("did you mean `{s}`?"))
                        };
                        self.error(file, range_of(&a.key), format!("found the unknown attribute `{key}` in {what}, expected one of: {}", attrs.join(", ")), help);
                        continue;
                    }
                    if let Some(prev) = out.attrs.get(&key) {
                        let first = self.span(file, range_of(&prev.key));
                        self.error(file, range_of(&a.key), format!("found `{key}` a second time in {what}, expected each attribute once (first set at {first})"), None);
                        continue;
                    }
                    out.attrs.insert(key, a);
                }
                Structure::Block(b) => {
                    let ident = b.ident.value().to_string();
                    if !blocks.contains(&ident.as_str()) {
                        let is_attr = attrs.contains(&ident.as_str());
                        let help = if is_attr {
                            Some(format!("`{ident}` is an attribute: write `{ident} = …`"))
                        } else {
                            suggest(&ident, blocks.iter().chain(attrs).copied())
                                .map(|s| format!("did you mean `{s}`?"))
                        };
                        let expected = if blocks.is_empty() {
                            "no nested blocks".to_string()
                        } else {
                            format!("one of: {}", blocks.join(", "))
                        };
                        self.error(
                            file,
                            range_of(&b.ident),
                            format!(
                                "found the unknown block `{ident}` in {what}, expected {expected}"
                            ),
                            help,
                        );
                        continue;
                    }
                    if !b.labels.is_empty() {
                        self.error(file, range_of(&b.labels[0]), format!("found a label on the `{ident}` block, expected `{ident} {{ … }}` without labels"), None);
                    }
                    out.blocks.push(b);
                }
            }
        }
        out
    }
}

/// Typed views of values: each returns what was expected when the value does not fit.
pub(super) fn as_string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(Type::String.expected()),
    }
}

pub(super) fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        // Values from --var and BENCHSTACK_VAR_* arrive as strings; HCL converts them.
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A whole number in the range a `Type::Uint` (or `Type::UintList`) declares.
pub(super) fn as_uint(v: &Value, ty: &Type) -> Result<u64, String> {
    let (min, max) = match ty {
        Type::Uint { min, max } | Type::UintList { min, max } => (*min, *max),
        _ => (0, u64::MAX),
    };
    match as_number(v) {
        Some(n) if n.fract() == 0.0 && n >= min as f64 && n <= max as f64 => Ok(n as u64),
        _ => Err(Type::Uint { min, max }.expected()),
    }
}

/// A Kubernetes resource quantity: a positive number with an optional suffix (`7`, `7500m`,
/// `0.5`, `4Gi`, `512M`). Numbers are accepted and written as they read.
pub(super) fn as_quantity(v: &Value, ty: &Type) -> Result<String, String> {
    let text = match v {
        Value::Number(n) if *n > 0.0 => return Ok(format!("{n}")),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(ty.expected()),
    };
    const SUFFIXES: &[&str] = &[
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let ok = SUFFIXES.iter().any(|suffix| {
        text.strip_suffix(suffix).is_some_and(|num| {
            !num.is_empty()
                && num.chars().all(|c| c.is_ascii_digit() || c == '.')
                && num.parse::<f64>().is_ok_and(|n| n > 0.0)
        })
    });
    if ok { Ok(text) } else { Err(ty.expected()) }
}

pub(super) fn as_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err(Type::Bool.expected()),
    }
}

pub(super) fn as_duration(v: &Value) -> Result<Duration, String> {
    let expected = Type::Duration { nonzero: false }.expected();
    match v {
        Value::String(s) => parse_duration(s).map_err(|e| match e {
            SpecError::DurationTooLong(_) => "a duration of at most 366 days".to_string(),
            _ => expected,
        }),
        _ => Err("a duration string with a unit, e.g. \"500ms\", \"60s\", \"2m\"".into()),
    }
}

pub(super) struct Ctx<'s, 'a> {
    pub(super) file: usize,
    pub(super) scope: &'s Scope<'a>,
    /// The instance address, noted on diagnostics of for_each instances.
    pub(super) note: Option<String>,
    pub(super) decls: &'s Decls,
}

impl Sources {
    pub(super) fn value(&mut self, cx: &Ctx, a: &Attribute) -> Option<Value> {
        match cx.scope.eval(&a.value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.eval_error(cx.file, e, cx.note.as_deref());
                None
            }
        }
    }

    pub(super) fn typed<T>(
        &mut self,
        cx: &Ctx,
        a: &Attribute,
        f: impl Fn(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let v = self.value(cx, a)?;
        match f(&v) {
            Ok(t) => Some(t),
            Err(expected) => {
                self.error(
                    cx.file,
                    range_of(&a.value),
                    format!(
                        "{}: found {}, expected {expected}",
                        a.key.value(),
                        v.describe()
                    ),
                    None,
                );
                if let (Some(n), Some(d)) = (&cx.note, self.diags.items.last_mut()) {
                    d.note = Some(n.clone());
                }
                None
            }
        }
    }

    pub(super) fn opt<T>(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        name: &str,
        f: impl Fn(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let a = c.attrs.get(name)?;
        self.typed(cx, a, f)
    }

    /// The string value of `a`, when written.
    pub(super) fn string(&mut self, cx: &Ctx, c: &Checked, a: &Attr) -> Option<String> {
        self.opt(cx, c, a.name, as_string)
    }

    /// The boolean value of `a`, or its declared default.
    pub(super) fn boolean(&mut self, cx: &Ctx, c: &Checked, a: &Attr) -> Option<bool> {
        self.opt(cx, c, a.name, as_bool).or(match a.default {
            DefaultValue::Bool(b) => Some(b),
            _ => None,
        })
    }

    /// The whole number value of `a` in its declared range, when written.
    pub(super) fn uint(&mut self, cx: &Ctx, c: &Checked, a: &Attr) -> Option<u64> {
        self.opt(cx, c, a.name, |v| as_uint(v, &a.ty))
    }

    /// As [`Sources::uint`], or the declared default (also when the value was refused, so
    /// decoding goes on and finds later problems too).
    pub(super) fn uint_or_default(&mut self, cx: &Ctx, c: &Checked, a: &Attr) -> u64 {
        self.uint(cx, c, a).or(a.default_uint()).unwrap_or(0)
    }

    /// A duration, refusing zero when the type says so. `Err(())` when written but refused;
    /// `Ok(None)` when not written and without a default.
    pub(super) fn duration(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        a: &Attr,
    ) -> Result<Option<Duration>, ()> {
        let Some(attr) = c.attrs.get(a.name) else {
            return Ok(match a.default {
                DefaultValue::Secs(s) => Some(Duration::from_secs(s)),
                _ => None,
            });
        };
        let d = self.typed(cx, attr, as_duration).ok_or(())?;
        if let Type::DurationBetween { min, max } = a.ty
            && let (Ok(lo), Ok(hi)) = (
                crate::vocab::load::parse_duration(min),
                crate::vocab::load::parse_duration(max),
            )
            && (d < lo || d > hi)
        {
            self.error(
                cx.file,
                range_of(&attr.value),
                format!(
                    "`{}` is {}, expected {}, such as {}",
                    a.name,
                    humantime::format_duration(d),
                    a.ty.expected(),
                    a.example
                ),
                None,
            );
            return Err(());
        }
        if !matches!(a.ty, Type::Duration { nonzero: true }) {
            return Ok(Some(d));
        }
        // The one zero-duration check (`vocab::load::nonzero`), located here.
        match spec::nonzero(d, a.name) {
            Ok(d) => Ok(Some(d)),
            Err(e) => {
                self.error(cx.file, range_of(&attr.value), e.to_string(), None);
                Err(())
            }
        }
    }

    /// One of an enum attribute's declared values, parsed by `parse`; the declared default
    /// when not written (or when refused, so decoding goes on).
    pub(super) fn choice<T>(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        a: &Attr,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Option<T> {
        let default = match a.default {
            DefaultValue::Str(s) => parse(s),
            _ => None,
        };
        let Some(attr) = c.attrs.get(a.name) else {
            return default;
        };
        let s = self.typed(cx, attr, as_string)?;
        if let Some(v) = parse(&s) {
            return Some(v);
        }
        let values: &[&str] = match a.ty {
            Type::Enum(values) => values,
            _ => &[],
        };
        let help = suggest(&s, values.iter().copied()).map(|x| format!("did you mean \"{x}\"?"));
        self.error(
            cx.file,
            range_of(&attr.value),
            format!("{}: found {s:?}, expected {}", a.name, a.ty.expected()),
            help,
        );
        if let Some(n) = &cx.note
            && let Some(d) = self.diags.items.last_mut()
        {
            d.note = Some(n.clone());
        }
        default
    }

    /// The attribute `a`, reporting it missing at `block`'s header when it is not written.
    pub(super) fn required<'c>(
        &mut self,
        cx: &Ctx,
        c: &Checked<'c>,
        block: &Block,
        what: &str,
        a: &Attr,
    ) -> Option<&'c Attribute> {
        let found = c.attrs.get(a.name).copied();
        if found.is_none() {
            self.error(
                cx.file,
                header_range(block),
                format!(
                    "found {what} without `{}`, expected {}",
                    a.name,
                    a.written()
                ),
                None,
            );
        }
        found
    }

    /// A reference to a resource of the kind `a` declares (`Type::Ref`).
    pub(super) fn reference_attr(&mut self, cx: &Ctx, c: &Checked, a: &Attr) -> Option<Address> {
        let attr = c.attrs.get(a.name)?;
        let kind = match a.ty {
            Type::Ref(k) | Type::RefList(k) => super::super::eval::kind_from_str(k)?,
            _ => return None,
        };
        self.reference(cx, attr, kind)
    }

    /// The nested blocks `n` declares in a checked body, with too few or too many reported.
    pub(super) fn nested<'c>(
        &mut self,
        cx: &Ctx,
        c: &Checked<'c>,
        block: &Block,
        what: &str,
        n: &Nested,
    ) -> Vec<&'c Block> {
        let schema = n.schema;
        let mut found: Vec<&'c Block> = Vec::new();
        for b in &c.blocks {
            if b.ident.value().as_str() == schema.name {
                found.push(b);
            }
        }
        let name = schema.name;
        if found.len() < n.min {
            let required: Vec<String> = schema
                .attrs
                .iter()
                .filter(|a| a.presence == Presence::Required)
                .map(|a| format!("`{} = {}`", a.name, a.example))
                .collect();
            let with = if required.is_empty() {
                String::new()
            } else {
                format!(" ({}, each on its own line)", required.join(" and "))
            };
            self.error(
                cx.file,
                header_range(block),
                format!(
                    "found {what} without a {name}, expected at least one `{name}` block{with}"
                ),
                None,
            );
        } else if n.max == 1 && found.len() > 1 {
            self.error(
                cx.file,
                range_of(&found[1].ident),
                format!("found a second `{name}` block, expected at most one (put all its attributes in the first)"),
                None,
            );
            found.truncate(1);
        } else if found.len() > n.max {
            self.error(
                cx.file,
                header_range(block),
                format!(
                    "found {what} with {} {name} blocks, expected at most {}",
                    found.len(),
                    n.max
                ),
                None,
            );
        }
        found
    }

    pub(super) fn reference(&mut self, cx: &Ctx, a: &Attribute, kind: Kind) -> Option<Address> {
        self.typed(cx, a, |v| expect_ref(v, kind, cx.decls))
    }
}

/// The span of `key` in an object literal, to point at one entry of a map.
pub(super) fn object_key_range(e: &Expression, key: &str) -> Option<Range<usize>> {
    let Expression::Object(o) = e else {
        return None;
    };
    o.iter().find_map(|(k, _)| {
        let name = match k {
            hcl_edit::expr::ObjectKey::Ident(i) => i.value().to_string(),
            hcl_edit::expr::ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
            hcl_edit::expr::ObjectKey::Expression(Expression::Variable(v)) => v.value().to_string(),
            _ => return None,
        };
        (name == key).then(|| range_of(k))
    })
}

pub(super) fn header_range(b: &Block) -> Range<usize> {
    let start = range_of(&b.ident).start;
    let end = b
        .labels
        .last()
        .map(|l| range_of(l).end)
        .unwrap_or(range_of(&b.ident).end);
    start..end
}

pub(super) fn expect_ref(v: &Value, kind: Kind, decls: &Decls) -> Result<Address, String> {
    let wanted = Type::Ref(kind.as_str()).expected();
    let Value::Ref(Reference { address, attribute }) = v else {
        return Err(wanted);
    };
    if address.kind != kind {
        return Err(format!(
            "{wanted} ({} is {})",
            address,
            article(address.kind.as_str())
        ));
    }
    if attribute.is_some() {
        return Err(format!("a reference to the resource itself, {address}"));
    }
    if address.key.is_none()
        && let Some(Instances::Keys(keys)) = decls.get(&(kind, address.name.clone()))
    {
        let example = keys
            .first()
            .map(|k| format!("{address}[{k:?}]"))
            .unwrap_or_else(|| format!("{address}[\"KEY\"]"));
        return Err(format!(
            "one instance, such as {example} or {address}[each.key] ({address} has for_each)"
        ));
    }
    Ok(address.clone())
}
