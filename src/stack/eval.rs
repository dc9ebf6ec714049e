//! The expression evaluator: HCL expressions (as parsed by hcl-edit, with byte spans) to
//! [`Value`]s. Written here rather than using hcl-rs's evaluator so that every error points at
//! the sub-expression that caused it and so that resource references are values of their own.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::Path;

use hcl_edit::expr::{BinaryOperator, Expression, TraversalOperator, UnaryOperator};
use hcl_edit::template::{Element, Template};

use super::funcs;
use super::value::{Reference, Value, format_number, suggest};
use crate::vocab::resources::{Address, Kind};

#[derive(Debug, Clone)]
pub struct EvalError {
    /// Byte range in the parsed text.
    pub range: Range<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl EvalError {
    pub fn new(range: Range<usize>, message: impl Into<String>) -> Self {
        EvalError {
            range,
            message: message.into(),
            help: None,
        }
    }

    pub fn help(mut self, help: Option<String>) -> Self {
        self.help = help;
        self
    }
}

/// What is known about a declared resource while the stack is evaluated.
#[derive(Debug, Clone, PartialEq)]
pub enum Instances {
    /// No for_each: one instance, addressed without a key.
    Single,
    /// for_each with these keys.
    Keys(Vec<String>),
    /// for_each whose value could not be evaluated (already reported): keys are not checked.
    Unknown,
}

pub type Decls = HashMap<(Kind, String), Instances>;

pub struct Scope<'a> {
    pub vars: &'a BTreeMap<String, Value>,
    /// `each.key` and `each.value` in a block with for_each.
    pub each: Option<(String, Value)>,
    pub decls: &'a Decls,
    /// The directory of the file being evaluated (relative paths resolve against it).
    pub dir: &'a Path,
    /// Bindings of for expressions, innermost last.
    locals: RefCell<Vec<(String, Value)>>,
    /// Resource instances referenced while evaluating (graph edges).
    pub refs: RefCell<Vec<Address>>,
    /// Whether `var.` may be used (not in variable defaults or var files).
    pub allow_vars: bool,
    pub allow_refs: bool,
    /// Variables whose value could not be determined (already reported).
    pub failed_vars: Option<&'a std::collections::HashSet<String>>,
}

fn span_of(e: &impl hcl_edit::Span) -> Range<usize> {
    e.span().unwrap_or(0..0)
}

pub fn kind_from_str(s: &str) -> Option<Kind> {
    Some(match s {
        "cluster" => Kind::Cluster,
        "model" => Kind::Model,
        "serving" => Kind::Serving,
        "loadtest" => Kind::Loadtest,
        "image" => Kind::Image,
        _ => return None,
    })
}

impl<'a> Scope<'a> {
    pub fn new(vars: &'a BTreeMap<String, Value>, decls: &'a Decls, dir: &'a Path) -> Self {
        Scope {
            vars,
            each: None,
            decls,
            dir,
            locals: RefCell::new(Vec::new()),
            refs: RefCell::new(Vec::new()),
            allow_vars: true,
            allow_refs: true,
            failed_vars: None,
        }
    }

    pub fn with_failed(mut self, failed: &'a std::collections::HashSet<String>) -> Self {
        self.failed_vars = Some(failed);
        self
    }

    pub fn take_refs(&self) -> Vec<Address> {
        std::mem::take(&mut *self.refs.borrow_mut())
    }

    pub fn eval(&self, expr: &Expression) -> Result<Value, EvalError> {
        let range = span_of(expr);
        match expr {
            Expression::Null(_) => Ok(Value::Null),
            Expression::Bool(b) => Ok(Value::Bool(*b.value())),
            Expression::Number(n) => n.value().as_f64().map(Value::Number).ok_or_else(|| {
                EvalError::new(
                    range,
                    "found a number that does not fit in 64 bits, expected a smaller number",
                )
            }),
            Expression::String(s) => Ok(Value::String(s.value().clone())),
            Expression::Array(a) => a
                .iter()
                .map(|e| self.eval(e))
                .collect::<Result<_, _>>()
                .map(Value::List),
            Expression::Object(o) => {
                let mut out = BTreeMap::new();
                for (k, v) in o.iter() {
                    let key = match k {
                        hcl_edit::expr::ObjectKey::Ident(id) => id.value().to_string(),
                        hcl_edit::expr::ObjectKey::Expression(e) => {
                            // `{ (var.x) = 1 }` and `{ "a" = 1 }`; a bare variable name is a key.
                            if let Expression::Variable(id) = e {
                                id.value().to_string()
                            } else {
                                let kv = self.eval(e)?;
                                kv.to_template_string().ok_or_else(|| {
                                    EvalError::new(
                                        span_of(e),
                                        format!(
                                            "found {} as an object key, expected a string",
                                            kv.describe()
                                        ),
                                    )
                                })?
                            }
                        }
                    };
                    out.insert(key, self.eval(v.expr())?);
                }
                Ok(Value::Map(out))
            }
            Expression::StringTemplate(t) => self.eval_template(t, range),
            Expression::HeredocTemplate(h) => {
                let mut h = (**h).clone();
                h.dedent();
                self.eval_template(&h.template, range)
            }
            Expression::Parenthesis(p) => self.eval(p.inner()),
            Expression::Variable(v) => {
                self.eval_traversal(expr, v.value().as_str(), span_of(v), &[], range)
            }
            Expression::Traversal(t) => match &t.expr {
                Expression::Variable(v) => {
                    self.eval_traversal(expr, v.value().as_str(), span_of(v), &t.operators, range)
                }
                other => {
                    let base = self.eval(other)?;
                    self.apply_ops(base, &t.operators, range)
                }
            },
            Expression::Conditional(c) => {
                let cond = self.eval(&c.cond_expr)?;
                match cond {
                    Value::Bool(true) => self.eval(&c.true_expr),
                    Value::Bool(false) => self.eval(&c.false_expr),
                    other => Err(EvalError::new(
                        span_of(&c.cond_expr),
                        format!("found {} as a condition, expected a bool", other.describe()),
                    )),
                }
            }
            Expression::FuncCall(call) => {
                let name = call.name.name.value().as_str();
                if call.name.is_namespaced() {
                    let ns: Vec<&str> = call
                        .name
                        .namespace
                        .iter()
                        .map(|n| n.value().as_str())
                        .collect();
                    return Err(EvalError::new(
                        range,
                        format!(
                            "found the namespaced function `{}::{name}`, expected one of: {}",
                            ns.join("::"),
                            funcs::NAMES.join(", ")
                        ),
                    ));
                }
                let mut args = Vec::with_capacity(call.args.len());
                let mut ranges = Vec::with_capacity(call.args.len());
                for a in call.args.iter() {
                    args.push(self.eval(a)?);
                    ranges.push(span_of(a));
                }
                if call.args.expand_final() {
                    match args.pop() {
                        Some(Value::List(l)) => {
                            let r = ranges.pop().unwrap_or(range.clone());
                            for v in l {
                                args.push(v);
                                ranges.push(r.clone());
                            }
                        }
                        Some(other) => {
                            return Err(EvalError::new(
                                ranges.pop().unwrap_or(range),
                                format!(
                                    "found {} before `...`, expected a list to expand",
                                    other.describe()
                                ),
                            ));
                        }
                        None => {}
                    }
                }
                funcs::call(name, &args, self.dir).map_err(|e| {
                    let r = e
                        .arg
                        .and_then(|i| ranges.get(i).cloned())
                        .unwrap_or(range.clone());
                    let help = if e.unknown {
                        suggest(name, funcs::NAMES.iter().copied())
                            .map(|s| format!("did you mean `{s}`?"))
                    } else {
                        None
                    };
                    EvalError::new(r, e.message).help(help)
                })
            }
            Expression::UnaryOp(u) => {
                let v = self.eval(&u.expr)?;
                match (u.operator.value(), v) {
                    (UnaryOperator::Neg, Value::Number(n)) => Ok(Value::Number(-n)),
                    (UnaryOperator::Not, Value::Bool(b)) => Ok(Value::Bool(!b)),
                    (UnaryOperator::Neg, other) => Err(EvalError::new(
                        span_of(&u.expr),
                        format!("found {} after `-`, expected a number", other.describe()),
                    )),
                    (UnaryOperator::Not, other) => Err(EvalError::new(
                        span_of(&u.expr),
                        format!("found {} after `!`, expected a bool", other.describe()),
                    )),
                }
            }
            Expression::BinaryOp(b) => self.eval_binary(b, range),
            Expression::ForExpr(f) => self.eval_for(f, range),
        }
    }

    fn eval_template(&self, t: &Template, range: Range<usize>) -> Result<Value, EvalError> {
        // A template that is exactly one interpolation keeps the value's type (as in HCL).
        if let Some(Element::Interpolation(i)) = t.as_single_element() {
            return self.eval(&i.expr);
        }
        let mut out = String::new();
        for el in t.iter() {
            match el {
                Element::Literal(s) => out.push_str(s.value()),
                Element::Interpolation(i) => {
                    let v = self.eval(&i.expr)?;
                    match v.to_template_string() {
                        Some(s) => out.push_str(&s),
                        None => {
                            return Err(EvalError::new(
                                span_of(&i.expr),
                                format!(
                                    "found {} inside a string, expected a string, number or bool",
                                    v.describe()
                                ),
                            ));
                        }
                    }
                }
                Element::Directive(_) => {
                    return Err(EvalError::new(
                        range,
                        "found a template directive (%{if}/%{for}), expected plain text and ${…} interpolations; use a conditional (c ? a : b) or join() with a for expression",
                    ));
                }
            }
        }
        Ok(Value::String(out))
    }

    fn eval_traversal(
        &self,
        whole: &Expression,
        root: &str,
        root_range: Range<usize>,
        ops: &[hcl_edit::Decorated<TraversalOperator>],
        range: Range<usize>,
    ) -> Result<Value, EvalError> {
        let _ = whole;
        // for-expression bindings shadow everything.
        if let Some(v) = self
            .locals
            .borrow()
            .iter()
            .rev()
            .find(|(n, _)| n == root)
            .map(|(_, v)| v.clone())
        {
            return self.apply_ops(v, ops, range);
        }
        let first_attr = |what: &str| -> Result<(String, Range<usize>), EvalError> {
            match ops.first().map(|o| o.value()) {
                Some(TraversalOperator::GetAttr(id)) => {
                    Ok((id.value().to_string(), span_of(&ops[0])))
                }
                _ => Err(EvalError::new(
                    range.clone(),
                    format!("found `{root}` alone, expected {what}"),
                )),
            }
        };
        match root {
            "var" => {
                let (name, _) = first_attr("var.NAME")?;
                if !self.allow_vars {
                    return Err(EvalError::new(
                        range,
                        format!(
                            "found var.{name} here, expected a constant value (variable values cannot refer to other variables)"
                        ),
                    ));
                }
                if self.failed_vars.is_some_and(|f| f.contains(&name)) {
                    return Err(EvalError::new(range, ""));
                }
                let Some(v) = self.vars.get(&name) else {
                    let help = suggest(&name, self.vars.keys().map(String::as_str))
                        .map(|s| format!("did you mean var.{s}?"));
                    return Err(EvalError::new(range, format!("found var.{name}, but no variable \"{name}\" is declared; expected one of the declared variables ({})", list_or_none(self.vars.keys()))).help(help));
                };
                self.apply_ops(v.clone(), &ops[1..], range)
            }
            "each" => {
                let (attr, attr_range) = first_attr("each.key or each.value")?;
                let Some((key, value)) = &self.each else {
                    return Err(EvalError::new(
                        range,
                        format!(
                            "found each.{attr} in a block without for_each, expected it only where for_each is set"
                        ),
                    ));
                };
                let v = match attr.as_str() {
                    "key" => Value::String(key.clone()),
                    "value" => {
                        if let Value::Ref(r) = value {
                            self.refs.borrow_mut().push(r.address.clone());
                        }
                        value.clone()
                    }
                    other => {
                        return Err(EvalError::new(
                            attr_range,
                            format!("found each.{other}, expected each.key or each.value"),
                        ));
                    }
                };
                self.apply_ops(v, &ops[1..], range)
            }
            "path" => {
                let (attr, attr_range) = first_attr("path.module or path.cwd")?;
                let v = match attr.as_str() {
                    "module" => Value::String(self.dir.display().to_string()),
                    "cwd" => Value::String(
                        std::env::current_dir()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default(),
                    ),
                    other => {
                        return Err(EvalError::new(
                            attr_range,
                            format!("found path.{other}, expected path.module or path.cwd"),
                        ));
                    }
                };
                self.apply_ops(v, &ops[1..], range)
            }
            _ => {
                if let Some(kind) = kind_from_str(root) {
                    return self.eval_reference(kind, ops, range);
                }
                let mut known: Vec<&str> = vec![
                    "var", "each", "path", "cluster", "model", "serving", "loadtest",
                ];
                let locals = self.locals.borrow();
                known.extend(locals.iter().map(|(n, _)| n.as_str()));
                let help =
                    suggest(root, known.iter().copied()).map(|s| format!("did you mean `{s}`?"));
                let _ = root_range;
                Err(EvalError::new(range, format!("found the unknown name `{root}`, expected var.NAME, each.key, each.value, path.module, or a reference such as serving.NAME")).help(help))
            }
        }
    }

    fn eval_reference(
        &self,
        kind: Kind,
        ops: &[hcl_edit::Decorated<TraversalOperator>],
        range: Range<usize>,
    ) -> Result<Value, EvalError> {
        let kind_s = kind.as_str();
        let name = match ops.first().map(|o| o.value()) {
            Some(TraversalOperator::GetAttr(id)) => id.value().to_string(),
            _ => {
                return Err(EvalError::new(
                    range,
                    format!("found `{kind_s}` alone, expected {kind_s}.NAME"),
                ));
            }
        };
        if !self.allow_refs {
            return Err(EvalError::new(
                range,
                format!(
                    "found a reference to {kind_s}.{name} here, expected a value known before any resource exists"
                ),
            ));
        }
        let Some(instances) = self.decls.get(&(kind, name.clone())) else {
            let names: Vec<&str> = self
                .decls
                .keys()
                .filter(|(k, _)| *k == kind)
                .map(|(_, n)| n.as_str())
                .collect();
            let help = suggest(&name, names.iter().copied())
                .map(|s| format!("did you mean {kind_s}.{s}?"));
            let mut sorted = names.clone();
            sorted.sort_unstable();
            return Err(EvalError::new(range, format!("found a reference to {kind_s}.{name}, but no {kind_s} \"{name}\" is declared; expected one of: {}", if sorted.is_empty() { "(none declared)".to_string() } else { sorted.iter().map(|n| format!("{kind_s}.{n}")).collect::<Vec<_>>().join(", ") })).help(help));
        };
        let mut rest = &ops[1..];
        let mut key = None;
        if let Some(op) = rest.first() {
            let idx = match op.value() {
                TraversalOperator::Index(e) => Some((self.eval(e)?, span_of(e))),
                TraversalOperator::LegacyIndex(i) => {
                    Some((Value::Number(*i.value() as f64), span_of(op)))
                }
                _ => None,
            };
            if let Some((v, r)) = idx {
                let k = match v {
                    Value::String(s) => s,
                    other => {
                        return Err(EvalError::new(
                            r,
                            format!(
                                "found {} as an instance key, expected a string key such as \"small\"",
                                other.describe()
                            ),
                        ));
                    }
                };
                match instances {
                    Instances::Single => {
                        return Err(EvalError::new(
                            r,
                            format!(
                                "found an instance key [{k:?}] on {kind_s}.{name}, which has no for_each; expected {kind_s}.{name}"
                            ),
                        ));
                    }
                    Instances::Keys(keys) if !keys.contains(&k) => {
                        let help = suggest(&k, keys.iter().map(String::as_str))
                            .map(|s| format!("did you mean [{s:?}]?"));
                        return Err(EvalError::new(r, format!("found {kind_s}.{name}[{k:?}], but its for_each has no key {k:?}; expected one of: {}", keys.iter().map(|k| format!("{k:?}")).collect::<Vec<_>>().join(", "))).help(help));
                    }
                    _ => {}
                }
                key = Some(k);
                rest = &rest[1..];
            }
        }
        let mut attribute = None;
        if let Some(op) = rest.first() {
            match op.value() {
                TraversalOperator::GetAttr(id) => {
                    attribute = Some(id.value().to_string());
                    rest = &rest[1..];
                }
                _ => {
                    return Err(EvalError::new(
                        span_of(op),
                        format!(
                            "found an index or splat after {kind_s}.{name}, expected .ATTRIBUTE or [\"KEY\"]"
                        ),
                    ));
                }
            }
        }
        if let Some(op) = rest.first() {
            return Err(EvalError::new(
                span_of(op),
                "found more after a resource attribute, expected KIND.NAME.ATTRIBUTE at most",
            ));
        }
        let address = Address { kind, name, key };
        // A whole for_each resource depends on every instance.
        match (&address.key, instances) {
            (None, Instances::Keys(keys)) => {
                let mut refs = self.refs.borrow_mut();
                for k in keys {
                    refs.push(Address {
                        key: Some(k.clone()),
                        ..address.clone()
                    });
                }
            }
            _ => self.refs.borrow_mut().push(address.clone()),
        }
        Ok(Value::Ref(Reference { address, attribute }))
    }

    fn apply_ops(
        &self,
        mut v: Value,
        ops: &[hcl_edit::Decorated<TraversalOperator>],
        range: Range<usize>,
    ) -> Result<Value, EvalError> {
        for (i, op) in ops.iter().enumerate() {
            let op_range = span_of(op);
            v = match op.value() {
                TraversalOperator::GetAttr(id) => get_key(v, id.value().as_str(), op_range)?,
                TraversalOperator::Index(e) => {
                    let idx = self.eval(e)?;
                    index(v, &idx, span_of(e))?
                }
                TraversalOperator::LegacyIndex(n) => {
                    index(v, &Value::Number(*n.value() as f64), op_range)?
                }
                TraversalOperator::AttrSplat(_) | TraversalOperator::FullSplat(_) => {
                    let items = match v {
                        Value::List(l) => l,
                        Value::Null => Vec::new(),
                        other => vec![other],
                    };
                    let rest = &ops[i + 1..];
                    let out = items
                        .into_iter()
                        .map(|x| self.apply_ops(x, rest, range.clone()))
                        .collect::<Result<Vec<_>, _>>()?;
                    return Ok(Value::List(out));
                }
            };
        }
        Ok(v)
    }

    fn eval_binary(
        &self,
        b: &hcl_edit::expr::BinaryOp,
        range: Range<usize>,
    ) -> Result<Value, EvalError> {
        use BinaryOperator::*;
        let op = *b.operator.value();
        let l = self.eval(&b.lhs_expr)?;
        // Short-circuit the logical operators.
        if matches!(op, And | Or) {
            let lb = as_bool(&l, span_of(&b.lhs_expr), op)?;
            if (op == And && !lb) || (op == Or && lb) {
                return Ok(Value::Bool(lb));
            }
            let r = self.eval(&b.rhs_expr)?;
            return Ok(Value::Bool(as_bool(&r, span_of(&b.rhs_expr), op)?));
        }
        let r = self.eval(&b.rhs_expr)?;
        match op {
            Eq => Ok(Value::Bool(l == r)),
            NotEq => Ok(Value::Bool(l != r)),
            _ => {
                let x = as_num(&l, span_of(&b.lhs_expr), op)?;
                let y = as_num(&r, span_of(&b.rhs_expr), op)?;
                Ok(match op {
                    Less => Value::Bool(x < y),
                    LessEq => Value::Bool(x <= y),
                    Greater => Value::Bool(x > y),
                    GreaterEq => Value::Bool(x >= y),
                    Plus => Value::Number(x + y),
                    Minus => Value::Number(x - y),
                    Mul => Value::Number(x * y),
                    Div | Mod if y == 0.0 => {
                        return Err(EvalError::new(
                            range,
                            format!(
                                "found a division by zero, expected a non-zero divisor for `{}`",
                                op.as_str()
                            ),
                        ));
                    }
                    Div => Value::Number(x / y),
                    Mod => Value::Number(x % y),
                    _ => unreachable!("logical and equality operators are handled above"),
                })
            }
        }
    }

    fn eval_for(
        &self,
        f: &hcl_edit::expr::ForExpr,
        range: Range<usize>,
    ) -> Result<Value, EvalError> {
        let coll = self.eval(&f.intro.collection_expr)?;
        let pairs: Vec<(Value, Value)> = match coll {
            Value::List(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, v)| (Value::Number(i as f64), v))
                .collect(),
            Value::Map(m) => m.into_iter().map(|(k, v)| (Value::String(k), v)).collect(),
            other => {
                return Err(EvalError::new(
                    span_of(&f.intro.collection_expr),
                    format!(
                        "found {} after `in`, expected a list or a map",
                        other.describe()
                    ),
                ));
            }
        };
        let key_var = f.intro.key_var.as_ref().map(|k| k.value().to_string());
        let value_var = f.intro.value_var.value().to_string();
        let mut list = Vec::new();
        let mut map: BTreeMap<String, Value> = BTreeMap::new();
        for (k, v) in pairs {
            let pushed = {
                let mut locals = self.locals.borrow_mut();
                let n = locals.len();
                if let Some(kv) = &key_var {
                    locals.push((kv.clone(), k));
                }
                locals.push((value_var.clone(), v));
                n
            };
            let result = (|| -> Result<(), EvalError> {
                if let Some(cond) = &f.cond {
                    match self.eval(&cond.expr)? {
                        Value::Bool(true) => {}
                        Value::Bool(false) => return Ok(()),
                        other => {
                            return Err(EvalError::new(
                                span_of(&cond.expr),
                                format!("found {} after `if`, expected a bool", other.describe()),
                            ));
                        }
                    }
                }
                let value = self.eval(&f.value_expr)?;
                match &f.key_expr {
                    Some(ke) => {
                        let kv = self.eval(ke)?;
                        let key = kv.to_template_string().ok_or_else(|| {
                            EvalError::new(
                                span_of(ke),
                                format!("found {} as a key, expected a string", kv.describe()),
                            )
                        })?;
                        if f.grouping {
                            match map.entry(key).or_insert_with(|| Value::List(Vec::new())) {
                                Value::List(l) => l.push(value),
                                _ => unreachable!("grouped entries are lists"),
                            }
                        } else if map.insert(key.clone(), value).is_some() {
                            return Err(EvalError::new(
                                range.clone(),
                                format!(
                                    "found the key {key:?} twice, expected distinct keys (use `...` to group)"
                                ),
                            ));
                        }
                    }
                    None => list.push(value),
                }
                Ok(())
            })();
            self.locals.borrow_mut().truncate(pushed);
            result?;
        }
        Ok(if f.key_expr.is_some() {
            Value::Map(map)
        } else {
            Value::List(list)
        })
    }
}

fn list_or_none<'b>(it: impl Iterator<Item = &'b String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none are".to_string()
    } else {
        v.join(", ")
    }
}

fn as_bool(v: &Value, r: Range<usize>, op: BinaryOperator) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(EvalError::new(
            r,
            format!(
                "found {} next to `{}`, expected a bool",
                other.describe(),
                op.as_str()
            ),
        )),
    }
}

fn as_num(v: &Value, r: Range<usize>, op: BinaryOperator) -> Result<f64, EvalError> {
    match v {
        Value::Number(n) => Ok(*n),
        // HCL converts numeric strings in arithmetic.
        Value::String(s) if s.trim().parse::<f64>().is_ok() => {
            Ok(s.trim().parse::<f64>().unwrap_or_default())
        }
        other => Err(EvalError::new(
            r,
            format!(
                "found {} next to `{}`, expected a number",
                other.describe(),
                op.as_str()
            ),
        )),
    }
}

fn get_key(v: Value, key: &str, r: Range<usize>) -> Result<Value, EvalError> {
    match v {
        Value::Map(mut m) => match m.remove(key) {
            Some(x) => Ok(x),
            None => {
                let help = suggest(key, m.keys().map(String::as_str))
                    .map(|s| format!("did you mean .{s}?"));
                Err(EvalError::new(
                    r,
                    format!(
                        "found .{key}, but the map has no such key; expected one of: {}",
                        list_or_none(m.keys())
                    ),
                )
                .help(help))
            }
        },
        other => Err(EvalError::new(
            r,
            format!(
                "found .{key} on {}, expected a map or object",
                other.describe()
            ),
        )),
    }
}

fn index(v: Value, idx: &Value, r: Range<usize>) -> Result<Value, EvalError> {
    match (v, idx) {
        (Value::List(l), Value::Number(n)) => {
            let len = l.len();
            if n.fract() == 0.0 && *n >= 0.0 && (*n as usize) < len {
                Ok(l.into_iter().nth(*n as usize).unwrap_or(Value::Null))
            } else {
                Err(EvalError::new(
                    r,
                    format!(
                        "found index {}, expected a whole number from 0 to {}",
                        format_number(*n),
                        len.saturating_sub(1)
                    ),
                ))
            }
        }
        (Value::Map(m), Value::String(_) | Value::Number(_)) => {
            let key = idx.to_template_string().unwrap_or_default();
            get_key(Value::Map(m), &key, r)
        }
        (v, idx) => Err(EvalError::new(
            r,
            format!(
                "found [{}] on {}, expected a list index or a map key",
                idx.describe(),
                v.describe()
            ),
        )),
    }
}
