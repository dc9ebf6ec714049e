//! `for_each`: one instance per key of a map, a set of strings or another for_each
//! resource.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use hcl_edit::expr::Expression;
use hcl_edit::structure::Attribute;

use super::super::eval::{Decls, Instances, Scope, kind_from_str};
use super::super::schema::Type;
use super::super::sources::{Sources, range_of};
use super::super::value::{Reference, Value};
use super::Decl;
use crate::vocab::resources::{Address, Kind};

/// One instance of a resource block to decode.
pub(super) struct Instance {
    pub(super) key: Option<String>,
    pub(super) each: Option<Value>,
}

/// `serving.tf` exactly: (kind, name).
pub(super) fn whole_resource_ref(e: &Expression) -> Option<(Kind, String)> {
    let Expression::Traversal(t) = e else {
        return None;
    };
    let Expression::Variable(v) = &t.expr else {
        return None;
    };
    let kind = kind_from_str(v.value().as_str())?;
    if t.operators.len() != 1 {
        return None;
    }
    match t.operators[0].value() {
        hcl_edit::expr::TraversalOperator::GetAttr(id) => Some((kind, id.value().to_string())),
        _ => None,
    }
}

pub(super) fn for_each_instances(
    ld: &mut Sources,
    file: usize,
    attr: &Attribute,
    v: Value,
    decls: &Decls,
) -> Option<Vec<Instance>> {
    let r = range_of(&attr.value);
    let expected = Type::ForEach.expected();
    match v {
        Value::Map(m) => Some(
            m.into_iter()
                .map(|(k, v)| Instance {
                    key: Some(k),
                    each: Some(v),
                })
                .collect(),
        ),
        Value::List(l) => {
            let mut keys: Vec<String> = Vec::new();
            for x in &l {
                match x {
                    Value::String(s) => {
                        if !keys.contains(s) {
                            keys.push(s.clone());
                        }
                    }
                    other => {
                        ld.error(
                            file,
                            r,
                            format!(
                                "for_each: found {} in the set, expected {expected}",
                                other.describe()
                            ),
                            None,
                        );
                        return None;
                    }
                }
            }
            keys.sort();
            Some(
                keys.into_iter()
                    .map(|k| Instance {
                        key: Some(k.clone()),
                        each: Some(Value::String(k)),
                    })
                    .collect(),
            )
        }
        Value::Ref(Reference {
            address,
            attribute: None,
        }) if address.key.is_none() => match decls.get(&(address.kind, address.name.clone())) {
            Some(Instances::Keys(keys)) => Some(
                keys.iter()
                    .map(|k| Instance {
                        key: Some(k.clone()),
                        each: Some(Value::Ref(Reference {
                            address: Address {
                                key: Some(k.clone()),
                                ..address.clone()
                            },
                            attribute: None,
                        })),
                    })
                    .collect(),
            ),
            Some(Instances::Unknown) => None,
            _ => {
                ld.error(
                    file,
                    r,
                    format!(
                        "for_each: found {address}, which has no for_each, expected {expected}"
                    ),
                    None,
                );
                None
            }
        },
        other => {
            ld.error(
                file,
                r,
                format!("for_each: found {}, expected {expected}", other.describe()),
                None,
            );
            None
        }
    }
}

impl Sources {
    /// Evaluates every resource's `for_each` (one that refers to another for_each resource
    /// waits for that one's keys) into the instances to decode, by index in `resources`.
    /// A resource without for_each has no entry: it is one instance.
    pub(super) fn expand_for_each(
        &mut self,
        resources: &[(Kind, String, Decl)],
        var_values: &BTreeMap<String, Value>,
        failed_vars: &HashSet<String>,
    ) -> (Decls, HashMap<usize, Vec<Instance>>) {
        let mut decls: Decls = HashMap::new();
        let mut pending: Vec<usize> = Vec::new();
        for (i, (kind, name, d)) in resources.iter().enumerate() {
            if d.block.body.get_attribute("for_each").is_some() {
                decls.insert((*kind, name.clone()), Instances::Unknown);
                pending.push(i);
            } else {
                decls.insert((*kind, name.clone()), Instances::Single);
            }
        }
        let mut instances: HashMap<usize, Vec<Instance>> = HashMap::new();
        let empty_dir = PathBuf::from(".");
        loop {
            let mut progress = false;
            let mut still = Vec::new();
            for &i in &pending {
                let (kind, name, d) = &resources[i];
                let Some(attr) = d.block.body.get_attribute("for_each") else {
                    continue;
                };
                let dir = self
                    .files
                    .get(d.file)
                    .map(|f| f.dir.clone())
                    .unwrap_or(empty_dir.clone());
                // A reference to another for_each resource waits for that one's keys.
                if let Some((k, n)) = whole_resource_ref(&attr.value)
                    && pending.contains(
                        &resources
                            .iter()
                            .position(|(rk, rn, _)| *rk == k && *rn == n)
                            .unwrap_or(usize::MAX),
                    )
                    && !(k == *kind && n == *name)
                {
                    still.push(i);
                    continue;
                }
                if whole_resource_ref(&attr.value).is_some_and(|(k, n)| k == *kind && n == *name) {
                    self.error(d.file, range_of(&attr.value), format!("for_each: found {}.{name}, the resource itself, expected a map, a set of strings or another resource with for_each", kind.as_str()), None);
                    instances.insert(i, Vec::new());
                    progress = true;
                    continue;
                }
                let scope = Scope::new(var_values, &decls, &dir).with_failed(failed_vars);
                let result = scope.eval(&attr.value);
                let inst = match result {
                    Err(e) => {
                        self.eval_error(d.file, e, None);
                        None
                    }
                    Ok(v) => for_each_instances(self, d.file, attr, v, &decls),
                };
                match inst {
                    Some(list) => {
                        decls.insert(
                            (*kind, name.clone()),
                            Instances::Keys(list.iter().filter_map(|x| x.key.clone()).collect()),
                        );
                        instances.insert(i, list);
                    }
                    None => {
                        instances.insert(i, Vec::new());
                    }
                }
                progress = true;
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if !progress {
                for &i in &pending {
                    let (kind, name, d) = &resources[i];
                    if let Some(attr) = d.block.body.get_attribute("for_each") {
                        self.error(d.file, range_of(&attr.value), format!("for_each: found a for_each cycle through {}.{name}, expected for_each to refer to resources whose instances do not depend on this one", kind.as_str()), None);
                    }
                    instances.insert(i, Vec::new());
                }
                break;
            }
        }
        (decls, instances)
    }
}
