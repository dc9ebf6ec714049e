//! Input variables: `variable` blocks with defaults and types, and the values given from outside.
//!
//! Precedence, as in Terraform (later wins): the default, then `BENCHSTACK_VAR_NAME` from the
//! environment, then each `--var-file` in order, then each `--var NAME=VALUE` in order.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use hcl_edit::Span as _;
use hcl_edit::expr::Expression;
use hcl_edit::structure::{Block, Structure};

use super::schema::VARIABLE;
use super::sources::Sources;
use super::value::{Value, suggest};

/// Values for variables from outside the stack files.
#[derive(Debug, Clone, Default)]
pub struct VarInputs {
    /// `--var NAME=VALUE`, in command-line order.
    pub vars: Vec<(String, String)>,
    /// `--var-file FILE` (HCL attributes `NAME = value`), in command-line order.
    pub var_files: Vec<PathBuf>,
}

impl VarInputs {
    /// Parses `NAME=VALUE` as given to `--var`.
    pub fn parse_var(s: &str) -> Result<(String, String), String> {
        match s.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
            _ => Err(format!("found {s:?}, expected NAME=VALUE")),
        }
    }
}

/// A variable's `type` constraint.
#[derive(Debug, Clone, PartialEq)]
pub enum VarType {
    Any,
    String,
    Number,
    Bool,
    List(Box<VarType>),
    Set(Box<VarType>),
    Map(Box<VarType>),
    Object(BTreeMap<String, VarType>),
}

impl fmt::Display for VarType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VarType::Any => f.write_str("any value"),
            VarType::String => f.write_str("a string"),
            VarType::Number => f.write_str("a number"),
            VarType::Bool => f.write_str("a bool"),
            VarType::List(t) => write!(f, "a list of ({t})"),
            VarType::Set(t) => write!(f, "a set of ({t})"),
            VarType::Map(t) => write!(f, "a map of ({t})"),
            VarType::Object(fields) => write!(
                f,
                "an object with {}",
                fields.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl VarType {
    fn parse(e: &Expression) -> Result<VarType, ()> {
        match e {
            Expression::Variable(v) => match v.value().as_str() {
                "string" => Ok(VarType::String),
                "number" => Ok(VarType::Number),
                "bool" => Ok(VarType::Bool),
                "any" => Ok(VarType::Any),
                _ => Err(()),
            },
            Expression::FuncCall(c) if c.args.len() == 1 => {
                let arg = c.args.iter().next().ok_or(())?;
                match c.name.name.value().as_str() {
                    "list" => Ok(VarType::List(Box::new(Self::parse(arg)?))),
                    "set" => Ok(VarType::Set(Box::new(Self::parse(arg)?))),
                    "map" => Ok(VarType::Map(Box::new(Self::parse(arg)?))),
                    "object" => {
                        let Expression::Object(o) = arg else {
                            return Err(());
                        };
                        let mut fields = BTreeMap::new();
                        for (k, v) in o.iter() {
                            let name = match k {
                                hcl_edit::expr::ObjectKey::Ident(i) => i.value().to_string(),
                                hcl_edit::expr::ObjectKey::Expression(Expression::Variable(i)) => {
                                    i.value().to_string()
                                }
                                hcl_edit::expr::ObjectKey::Expression(Expression::String(s)) => {
                                    s.value().clone()
                                }
                                _ => return Err(()),
                            };
                            fields.insert(name, Self::parse(v.expr())?);
                        }
                        Ok(VarType::Object(fields))
                    }
                    _ => Err(()),
                }
            }
            _ => Err(()),
        }
    }

    /// Converts a value to this type as Terraform does (numbers and bools from strings, …).
    pub fn convert(&self, v: Value) -> Result<Value, ()> {
        match (self, v) {
            (VarType::Any, v) => Ok(v),
            (_, Value::Null) => Ok(Value::Null),
            (VarType::String, Value::String(s)) => Ok(Value::String(s)),
            (VarType::String, v @ (Value::Number(_) | Value::Bool(_))) => {
                v.to_template_string().map(Value::String).ok_or(())
            }
            (VarType::Number, Value::Number(n)) => Ok(Value::Number(n)),
            (VarType::Number, Value::String(s)) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Value::Number)
                .ok_or(()),
            (VarType::Bool, Value::Bool(b)) => Ok(Value::Bool(b)),
            (VarType::Bool, Value::String(s)) if s == "true" || s == "false" => {
                Ok(Value::Bool(s == "true"))
            }
            (VarType::List(t), Value::List(l)) => l
                .into_iter()
                .map(|x| t.convert(x))
                .collect::<Result<_, _>>()
                .map(Value::List),
            (VarType::Set(t), Value::List(l)) => {
                let mut out: Vec<Value> = Vec::new();
                for x in l {
                    let x = t.convert(x)?;
                    if !out.contains(&x) {
                        out.push(x);
                    }
                }
                Ok(Value::List(out))
            }
            (VarType::Map(t), Value::Map(m)) => m
                .into_iter()
                .map(|(k, x)| t.convert(x).map(|x| (k, x)))
                .collect::<Result<_, _>>()
                .map(Value::Map),
            (VarType::Object(fields), Value::Map(mut m)) => {
                let mut out = BTreeMap::new();
                for (k, t) in fields {
                    let x = m.remove(k).ok_or(())?;
                    out.insert(k.clone(), t.convert(x)?);
                }
                Ok(Value::Map(out))
            }
            _ => Err(()),
        }
    }

    /// Whether a value given as text from outside is read as HCL (complex types) or taken as is.
    fn reads_hcl(&self) -> bool {
        matches!(
            self,
            VarType::List(_) | VarType::Set(_) | VarType::Map(_) | VarType::Object(_)
        )
    }
}

struct Var {
    file: usize,
    block_range: std::ops::Range<usize>,
    ty: Option<VarType>,
    default: Option<Value>,
    value: Option<Value>,
}

/// Evaluates every variable; problems become diagnostics and the variable is left out.
pub(crate) fn evaluate(
    ld: &mut Sources,
    decls: &[(String, usize, &Block)],
    inputs: &VarInputs,
    env: &[(String, String)],
) -> (BTreeMap<String, Value>, HashSet<String>) {
    let mut failed = HashSet::new();
    let mut vars: BTreeMap<String, Var> = BTreeMap::new();
    let allowed = VARIABLE.attr_names();
    let allowed_text = allowed.join(", ");
    for (name, file, block) in decls {
        let what = format!("variable \"{name}\"");
        let dir = ld.files[*file].dir.clone();
        let mut ty = None;
        let mut default = None;
        for s in block.body.iter() {
            match s {
                Structure::Block(b) => ld.error(*file, b.ident.span().unwrap_or(0..0), format!("found the block `{}` in {what}, expected only the attributes {allowed_text}", b.ident.value()), None),
                Structure::Attribute(a) => match a.key.value().as_str() {
                    "type" => match VarType::parse(&a.value) {
                        Ok(t) => ty = Some(t),
                        Err(()) => ld.error(*file, a.value.span().unwrap_or(0..0), format!("type: found an unknown type, expected {}", VARIABLE.attr("type").ty.expected()), None),
                    },
                    "default" => default = ld.eval_constant(*file, &a.value, &dir).map(|v| (v, a.value.span().unwrap_or(0..0))),
                    "description" => {
                        if let Some(v) = ld.eval_constant(*file, &a.value, &dir)
                            && !matches!(v, Value::String(_))
                        {
                            ld.error(*file, a.value.span().unwrap_or(0..0), format!("description: found {}, expected {}", v.describe(), VARIABLE.attr("description").ty.expected()), None);
                        }
                    }
                    other => {
                        let help = suggest(other, allowed.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                        ld.error(*file, a.key.span().unwrap_or(0..0), format!("found the unknown attribute `{other}` in {what}, expected one of: {allowed_text}"), help);
                    }
                },
            }
        }
        let mut default_value = None;
        if let Some((v, r)) = default {
            match &ty {
                Some(t) => match t.convert(v.clone()) {
                    Ok(c) => default_value = Some(c),
                    Err(()) => ld.error(
                        *file,
                        r,
                        format!(
                            "default: found {}, expected {t} (the variable's type)",
                            v.describe()
                        ),
                        None,
                    ),
                },
                None => default_value = Some(v),
            }
        }
        let start = block.ident.span().unwrap_or(0..0).start;
        let end = block
            .labels
            .last()
            .and_then(|l| l.span())
            .map(|r| r.end)
            .unwrap_or(start);
        vars.insert(
            name.clone(),
            Var {
                file: *file,
                block_range: start..end,
                ty,
                default: default_value,
                value: None,
            },
        );
    }
    let names: Vec<String> = vars.keys().cloned().collect();
    let undeclared = |name: &str| {
        let help = suggest(name, names.iter().map(String::as_str));
        format!(
            "found a value for \"{name}\", but no variable \"{name}\" is declared; expected one of: {}{}",
            if names.is_empty() {
                "(none declared)".to_string()
            } else {
                names.join(", ")
            },
            help.map(|h| format!(" (did you mean \"{h}\"?)"))
                .unwrap_or_default()
        )
    };

    // Environment: BENCHSTACK_VAR_NAME. Unknown names are ignored there, as Terraform does,
    // since the environment is shared with other stacks.
    let mut env_sorted: Vec<&(String, String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with("BENCHSTACK_VAR_"))
        .collect();
    env_sorted.sort();
    for (k, raw) in env_sorted {
        let name = &k["BENCHSTACK_VAR_".len()..];
        if let Some(var) = vars.get_mut(name) {
            match from_text(ld, raw, var) {
                Ok(v) => var.value = Some(v),
                Err(expected) => ld
                    .diags
                    .input(k.clone(), format!("found {raw:?}, expected {expected}")),
            }
        }
    }

    // Var files.
    for path in &inputs.var_files {
        let Some((file, body)) = ld.parse_file(path) else {
            continue;
        };
        let dir = ld.files[file].dir.clone();
        for s in body.iter() {
            match s {
                Structure::Block(b) => ld.error(
                    file,
                    b.ident.span().unwrap_or(0..0),
                    format!(
                        "found the block `{}` in a var file, expected only NAME = value lines",
                        b.ident.value()
                    ),
                    None,
                ),
                Structure::Attribute(a) => {
                    let name = a.key.value().to_string();
                    let Some(value) = ld.eval_constant(file, &a.value, &dir) else {
                        continue;
                    };
                    match vars.get_mut(&name) {
                        None => {
                            let r = a.key.span().unwrap_or(0..0);
                            ld.error(file, r, undeclared(&name), None);
                        }
                        Some(var) => match &var.ty {
                            Some(t) => match t.convert(value.clone()) {
                                Ok(v) => var.value = Some(v),
                                Err(()) => ld.error(
                                    file,
                                    a.value.span().unwrap_or(0..0),
                                    format!("{name}: found {}, expected {t}", value.describe()),
                                    None,
                                ),
                            },
                            None => var.value = Some(value),
                        },
                    }
                }
            }
        }
    }

    // --var NAME=VALUE.
    for (name, raw) in &inputs.vars {
        let origin = format!("--var {name}={raw}");
        match vars.get_mut(name) {
            None => ld.diags.input(origin, undeclared(name)),
            Some(var) => match from_text(ld, raw, var) {
                Ok(v) => var.value = Some(v),
                Err(expected) => ld
                    .diags
                    .input(origin, format!("found {raw:?}, expected {expected}")),
            },
        }
    }

    let mut out = BTreeMap::new();
    for (name, var) in vars {
        match var.value.or(var.default) {
            Some(v) => {
                out.insert(name, v);
            }
            None => {
                failed.insert(name.clone());
                ld.error(var.file, var.block_range, format!("found variable \"{name}\" with no value, expected a default or a value from --var {name}=…, --var-file or BENCHSTACK_VAR_{name}"), None);
            }
        }
    }
    (out, failed)
}

/// Reads a value given as text (`--var`, the environment): a string unless the variable's type
/// (or its default's shape) is a collection, which is read as an HCL expression.
fn from_text(ld: &mut Sources, raw: &str, var: &Var) -> Result<Value, String> {
    let inferred = match (&var.ty, &var.default) {
        (Some(t), _) => t.clone(),
        (None, Some(Value::Number(_))) => VarType::Number,
        (None, Some(Value::Bool(_))) => VarType::Bool,
        (None, Some(Value::List(_))) => VarType::List(Box::new(VarType::Any)),
        (None, Some(Value::Map(_))) => VarType::Map(Box::new(VarType::Any)),
        _ => VarType::String,
    };
    let _ = ld;
    if inferred.reads_hcl() {
        let expr = hcl_edit::parser::parse_expr(raw).map_err(|_| {
            format!("{inferred} written in HCL syntax, e.g. [\"a\", \"b\"] or {{ k = \"v\" }}")
        })?;
        let vars = BTreeMap::new();
        let decls = super::eval::Decls::new();
        let dir = std::env::current_dir().unwrap_or_default();
        let mut scope = super::eval::Scope::new(&vars, &decls, &dir);
        scope.allow_vars = false;
        scope.allow_refs = false;
        let v = scope
            .eval(&expr)
            .map_err(|e| format!("a constant value ({})", e.message))?;
        return inferred.convert(v).map_err(|()| inferred.to_string());
    }
    inferred
        .convert(Value::String(raw.to_string()))
        .map_err(|()| inferred.to_string())
}
