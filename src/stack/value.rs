//! Values of the stack language while it is evaluated.

use std::collections::BTreeMap;
use std::fmt;

use crate::vocab::resources::Address;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    List(Vec<Value>),
    /// Objects and maps (keys in lexical order, as Terraform shows them).
    Map(BTreeMap<String, Value>),
    /// A reference to a resource (`serving.tf`, `serving.tf["small"]`) or to an attribute a
    /// provider reports (`serving.tf.rest_endpoint`). Its value is known only after apply.
    Ref(Reference),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reference {
    /// For a resource with for_each and no `["key"]`, `key` is None: all its instances.
    pub address: Address,
    pub attribute: Option<String>,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.address)?;
        if let Some(a) = &self.attribute {
            write!(f, ".{a}")?;
        }
        Ok(())
    }
}

impl Value {
    /// How a value is named in "found …" messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => format!("the bool {b}"),
            Value::Number(n) => format!("the number {}", format_number(*n)),
            Value::String(s) => {
                let mut shown: String = s.chars().take(40).collect();
                if shown.len() < s.len() {
                    shown.push('…');
                }
                format!("the string {shown:?}")
            }
            Value::List(l) => format!("a list of {} element(s)", l.len()),
            Value::Map(m) => format!("a map/object with {} key(s)", m.len()),
            Value::Ref(r) => format!("a reference to {r}"),
        }
    }

    /// The string form used by templates and `tostring`: strings, numbers and bools only.
    pub fn to_template_string(&self) -> Option<String> {
        match self {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(format_number(*n)),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => (*b).into(),
            Value::Number(n) => {
                if n.fract() == 0.0 && n.abs() < 9.0e15 {
                    (*n as i64).into()
                } else {
                    serde_json::Number::from_f64(*n)
                        .map(serde_json::Value::Number)
                        .unwrap_or(serde_json::Value::Null)
                }
            }
            Value::String(s) => s.clone().into(),
            Value::List(l) => l.iter().map(Value::to_json).collect(),
            Value::Map(m) => m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            Value::Ref(r) => r.to_string().into(),
        }
    }

    /// Every reference inside this value.
    pub fn references(&self) -> Vec<&Reference> {
        let mut out = Vec::new();
        fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Reference>) {
            match v {
                Value::Ref(r) => out.push(r),
                Value::List(l) => l.iter().for_each(|x| walk(x, out)),
                Value::Map(m) => m.values().for_each(|x| walk(x, out)),
                _ => {}
            }
        }
        walk(self, &mut out);
        out
    }
}

pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// The closest of `candidates` to `name`, if it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.to_string())
}
