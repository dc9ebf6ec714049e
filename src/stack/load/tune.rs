//! `tune` blocks and a cluster's `hourly_price` (schema: `schema::TUNE`,
//! `schema::CLUSTER`): not resources (plan and apply ignore them), decoded after the
//! resources so a tune's references can be checked against them. The decoded types are in
//! `stack::tune`.

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use hcl_edit::expr::{Expression, ObjectKey};
use hcl_edit::structure::{Attribute, Block};

use super::super::eval::{Decls, Scope};
use super::super::schema::{CLUSTER, TUNE, Type};
use super::super::sources::{Sources, range_of};
use super::super::tune::{Dimension, Knob, Objective, Search, StackExtras, TuneConfig};
use super::super::value::Value;
use super::body::header_range;
use crate::vocab::load::{Rate, parse_duration};
use crate::vocab::resources::{Address, FlagValue, Kind, Resource, ResourceConfig, ServingConfig};

/// A top-level block handed over by the loader: its name, file index and block.
pub(super) type TopBlock<'b> = (String, usize, &'b Block);

/// Decodes every tune block and every cluster's `hourly_price`; problems become located
/// diagnostics in `ld`. `resources` are the decoded resources (to check references).
#[allow(clippy::too_many_arguments)]
pub(super) fn decode(
    ld: &mut Sources,
    tunes: &[TopBlock],
    clusters: &[TopBlock],
    vars: &BTreeMap<String, Value>,
    failed_vars: &HashSet<String>,
    decls: &Decls,
    resources: &[Resource],
) -> StackExtras {
    let mut out = StackExtras::default();
    for (name, file, block) in clusters {
        let price = CLUSTER.attr("hourly_price");
        let Some(a) = block.body.get_attribute(price.name) else {
            continue;
        };
        let dir = ld.files[*file].dir.clone();
        let scope = Scope::new(vars, decls, &dir).with_failed(failed_vars);
        let Some(v) = eval(ld, *file, &scope, &a.value) else {
            continue;
        };
        match v {
            Value::Number(n) if number_fits(n, &price.ty) => {
                out.hourly_prices.insert(
                    Address {
                        kind: Kind::Cluster,
                        name: name.clone(),
                        key: None,
                    },
                    n,
                );
            }
            other => ld.error(
                *file,
                range_of(&a.value),
                format!(
                    "{}: found {}, expected the price of one node-hour in USD, {} such as {}",
                    price.name,
                    other.describe(),
                    price.ty.expected(),
                    price.example
                ),
                None,
            ),
        }
    }
    for (name, file, block) in tunes {
        if let Some(t) = decode_tune(ld, name, *file, block, vars, failed_vars, decls, resources) {
            out.tunes.push(t);
        }
    }
    out
}

fn eval(ld: &mut Sources, file: usize, scope: &Scope, e: &Expression) -> Option<Value> {
    match scope.eval(e) {
        Ok(v) => Some(v),
        Err(err) => {
            // An empty message is a consequence of a problem already reported.
            if !err.message.is_empty() {
                ld.error(file, err.range, err.message, err.help);
            }
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decode_tune(
    ld: &mut Sources,
    name: &str,
    file: usize,
    block: &Block,
    vars: &BTreeMap<String, Value>,
    failed_vars: &HashSet<String>,
    decls: &Decls,
    resources: &[Resource],
) -> Option<TuneConfig> {
    let what = format!("tune \"{name}\"");
    let before = ld.diags.len();
    let dir = ld.files[file].dir.clone();
    let scope = Scope::new(vars, decls, &dir).with_failed(failed_vars);
    let attrs = ld.check_body(file, &block.body, &what, &TUNE).attrs;
    // A typed attribute: evaluates it and checks it with `f`, which says what was expected.
    let typed = |ld: &mut Sources,
                 key: &str,
                 f: &dyn Fn(&Value) -> Result<(), String>|
     -> Option<(Value, Range<usize>)> {
        let a = attrs.get(key)?;
        let v = eval(ld, file, &scope, &a.value)?;
        match f(&v) {
            Ok(()) => Some((v, range_of(&a.value))),
            Err(expected) => {
                ld.error(
                    file,
                    range_of(&a.value),
                    format!("{key}: found {}, expected {expected}", v.describe()),
                    None,
                );
                None
            }
        }
    };
    let reference = |kind: Kind| {
        move |v: &Value| -> Result<(), String> {
            let k = kind.as_str();
            match v {
                Value::Ref(r) if r.address.kind == kind && r.attribute.is_none() => {
                    let declared = decls.contains_key(&(kind, r.address.name.clone()));
                    if !declared {
                        return Err(format!(
                            "a reference to a declared {k} ({} is not declared)",
                            r.address
                        ));
                    }
                    if r.address.key.is_none()
                        && matches!(
                            decls.get(&(kind, r.address.name.clone())),
                            Some(super::super::eval::Instances::Keys(_))
                        )
                    {
                        return Err(format!(
                            "one instance such as {}[\"KEY\"] ({} has for_each)",
                            r.address, r.address
                        ));
                    }
                    Ok(())
                }
                _ => Err(Type::Ref(k).expected()),
            }
        }
    };
    let as_addr = |v: &Value| match v {
        Value::Ref(r) => Some(r.address.clone()),
        _ => None,
    };
    let serving = match typed(ld, "serving", &reference(Kind::Serving)) {
        Some((v, _)) => as_addr(&v),
        None => {
            if !attrs.contains_key("serving") {
                ld.error(
                    file,
                    header_range(block),
                    format!("found {what} without `serving`, expected `serving = serving.NAME` (the resource whose settings vary)"),
                    None,
                );
            }
            None
        }
    };
    let loadtest = match typed(ld, "loadtest", &reference(Kind::Loadtest)) {
        Some((v, r)) => as_addr(&v).map(|a| (a, r)),
        None => {
            if !attrs.contains_key("loadtest") {
                ld.error(
                    file,
                    header_range(block),
                    format!("found {what} without `loadtest`, expected `loadtest = loadtest.NAME` (how to measure: protocol, requests, connections, SLOs)"),
                    None,
                );
            }
            None
        }
    };
    let find = |a: &Address| resources.iter().find(|r| &r.address == a);
    let serving_config = serving.as_ref().and_then(|a| match &find(a)?.config {
        ResourceConfig::Serving(s) => Some(s.clone()),
        _ => None,
    });
    // The load test must measure the tuned resource and have an SLO to tune against.
    if let (Some(s), Some((l, r))) = (&serving, &loadtest)
        && let Some(res) = find(l)
        && let ResourceConfig::Loadtest(lc) = &res.config
    {
        if &lc.target != s {
            ld.error(
                file,
                r.clone(),
                format!("loadtest: found {l}, whose target is {}, expected a load test of {s} (the resource this tune varies)", lc.target),
                None,
            );
        } else if !lc
            .slos
            .iter()
            .any(|x| matches!(x, crate::vocab::load::Slo::Latency { .. }))
        {
            ld.error(
                file,
                r.clone(),
                format!("loadtest: found {l} without a latency SLO, expected one such as `slo {{ p99 = \"50ms\" }}`: capacity is the most traffic that meets it"),
                None,
            );
        }
    }
    let space = match attrs.get("space") {
        None => {
            ld.error(
                file,
                header_range(block),
                format!("found {what} without `space`, expected `space = {{ \"batching.max_batch_size\" = [8, 32] }}`"),
                None,
            );
            None
        }
        Some(a) => decode_space(ld, file, &scope, a, serving_config.as_ref()),
    };
    // The scalar attributes: type, range, expected text and default from `schema::TUNE`.
    let declared = |name: &str| TUNE.attr(name);
    let fits = |name: &'static str| {
        let a = declared(name);
        move |v: &Value| -> Result<(), String> {
            let ok = match (&a.ty, v) {
                (Type::Choice(values), Value::String(s)) => values.iter().any(|(v, _)| v == s),
                (Type::PerSecond, Value::Number(n)) => Rate::per_second(*n).is_ok(),
                (Type::Number { .. } | Type::Uint { .. }, Value::Number(n)) => {
                    number_fits(*n, &a.ty)
                }
                (Type::DurationBetween { min, max }, Value::String(s)) => {
                    match (parse_duration(s), parse_duration(min), parse_duration(max)) {
                        (Ok(d), Ok(lo), Ok(hi)) => d >= lo && d <= hi,
                        _ => false,
                    }
                }
                _ => false,
            };
            match (ok, &a.ty) {
                (true, _) => Ok(()),
                (false, Type::Choice(_)) => Err(a.ty.expected()),
                (false, _) => Err(format!("{}, such as {}", a.ty.expected(), a.example)),
            }
        }
    };
    let num = |ld: &mut Sources, name: &'static str| match typed(ld, name, &fits(name)) {
        Some((Value::Number(n), _)) => Some(n),
        _ => None,
    };
    let choice = |ld: &mut Sources, name: &'static str| match typed(ld, name, &fits(name)) {
        Some((Value::String(s), _)) => s,
        _ => declared(name).default_str().unwrap_or_default().to_string(),
    };
    let search = match choice(ld, "search").as_str() {
        "auto" => Search::Auto,
        _ => Search::Grid,
    };
    let objective = match choice(ld, "objective").as_str() {
        "cost" => Objective::Cost,
        _ => Objective::Capacity,
    };
    let or_default = |n: Option<f64>, name: &str| {
        n.or_else(|| declared(name).default_number())
            .unwrap_or_default()
    };
    let start_rate = or_default(num(ld, "start_rate"), "start_rate");
    let target_rate = num(ld, "target_rate");
    let precision = or_default(num(ld, "precision"), "precision");
    let repeats = or_default(num(ld, "repeats"), "repeats") as u32;
    let max_trials = or_default(num(ld, "max_trials"), "max_trials") as u32;
    let probe_duration = match typed(ld, "probe_duration", &fits("probe_duration")) {
        Some((Value::String(s), _)) => parse_duration(&s).ok(),
        _ => None,
    }
    .or_else(|| declared("probe_duration").default_duration())
    .unwrap_or(Duration::from_secs(10));
    if ld.diags.len() > before {
        return None;
    }
    Some(TuneConfig {
        name: name.to_string(),
        span: ld.span(file, range_of(&block.ident)),
        serving: serving?,
        loadtest: loadtest?.0,
        space: space?,
        search,
        start_rate,
        probe_duration,
        precision,
        repeats,
        objective,
        target_rate,
        max_trials,
    })
}

/// Whether `n` is in the range a `Type::Number` or `Type::Uint` declares (whole for `Uint`).
fn number_fits(n: f64, ty: &Type) -> bool {
    match *ty {
        Type::Number { min, max } => n.is_finite() && n >= min && n <= max,
        Type::Uint { min, max } => n.fract() == 0.0 && n >= min as f64 && n <= max as f64,
        _ => false,
    }
}

fn decode_space(
    ld: &mut Sources,
    file: usize,
    scope: &Scope,
    a: &Attribute,
    serving: Option<&ServingConfig>,
) -> Option<Vec<Dimension>> {
    let Expression::Object(obj) = &a.value else {
        let found = eval(ld, file, scope, &a.value)
            .map(|v| v.describe())
            .unwrap_or_else(|| "an expression".into());
        ld.error(
            file,
            range_of(&a.value),
            format!(
                "space: found {found}, expected {}",
                TUNE.attr("space").ty.expected()
            ),
            None,
        );
        return None;
    };
    let before = ld.diags.len();
    let mut out: Vec<Dimension> = Vec::new();
    for (k, v) in obj.iter() {
        let key = match k {
            ObjectKey::Ident(i) => i.value().to_string(),
            ObjectKey::Expression(Expression::String(s)) => s.value().clone(),
            ObjectKey::Expression(Expression::Variable(v)) => v.value().to_string(),
            ObjectKey::Expression(e) => {
                ld.error(
                    file,
                    range_of(e),
                    "space: found a computed key, expected a quoted serving attribute such as \"batching.max_batch_size\"".to_string(),
                    None,
                );
                continue;
            }
        };
        let knob = match Knob::parse(&key) {
            Ok(k) => k,
            Err(expected) => {
                ld.error(
                    file,
                    range_of(k),
                    format!("space: found the key \"{key}\", expected {expected}"),
                    None,
                );
                continue;
            }
        };
        if out.iter().any(|d| d.knob == knob) {
            ld.error(
                file,
                range_of(k),
                format!("space: found \"{key}\" a second time, expected each attribute once"),
                None,
            );
            continue;
        }
        if knob == Knob::Batching("max_batch_size".into())
            && serving
                .and_then(|s| s.batching.as_ref())
                .is_some_and(|b| !b.allowed_batch_sizes.is_empty())
        {
            ld.error(
                file,
                range_of(k),
                "space: found \"batching.max_batch_size\" while the serving resource sets allowed_batch_sizes, which must end at max_batch_size; expected a serving resource without allowed_batch_sizes".to_string(),
                None,
            );
            continue;
        }
        let Some(list) = eval(ld, file, scope, v.expr()) else {
            continue;
        };
        let Value::List(items) = list else {
            ld.error(
                file,
                range_of(v.expr()),
                format!("space \"{key}\": found {}, expected a non-empty list of values such as [8, 32]", list.describe()),
                None,
            );
            continue;
        };
        if items.is_empty() {
            ld.error(
                file,
                range_of(v.expr()),
                format!("space \"{key}\": found an empty list, expected at least one value"),
                None,
            );
            continue;
        }
        let mut values: Vec<FlagValue> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            // Point at the element itself where the list is written out.
            let r = match v.expr() {
                Expression::Array(arr) => arr.iter().nth(i).map(range_of),
                _ => None,
            }
            .unwrap_or_else(|| range_of(v.expr()));
            match knob.check(item) {
                Ok(fv) => {
                    if values.contains(&fv) {
                        ld.error(
                            file,
                            r,
                            format!("space \"{key}\": found {fv} twice, expected each value once"),
                            None,
                        );
                    } else {
                        values.push(fv);
                    }
                }
                Err(expected) => ld.error(
                    file,
                    r,
                    format!(
                        "space \"{key}\": found {}, expected {expected}",
                        item.describe()
                    ),
                    None,
                ),
            }
        }
        out.push(Dimension { knob, values });
    }
    if out.is_empty() && ld.diags.len() == before {
        ld.error(
            file,
            range_of(&a.value),
            "space: found no attributes, expected at least one such as \"batching.max_batch_size\" = [8, 32]".to_string(),
            None,
        );
    }
    (ld.diags.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use crate::stack::{VarInputs, load_with_env};
    use crate::vocab::resources::FlagValue;

    fn stack(tune: &str) -> String {
        let model = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/model/regression");
        format!(
            "cluster \"local\" {{\n  provider     = \"local\"\n  hourly_price = 0.5\n}}\n\nmodel \"m\" {{\n  base_path = \"{model}\"\n}}\n\nserving \"tf\" {{\n  cluster = cluster.local\n  models  = [model.m]\n}}\n\nloadtest \"lt\" {{\n  target  = serving.tf\n  request = \"{{\\\"instances\\\": [[1.0]]}}\"\n  stage {{\n    rate     = 10\n    duration = \"1s\"\n  }}\n  slo {{\n    p99 = \"50ms\"\n  }}\n}}\n\n{tune}\n"
        )
    }

    fn load(text: &str) -> Result<crate::stack::tune::StackExtras, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.hcl");
        std::fs::write(&p, text).unwrap();
        super::super::load_stack_full(&p, &VarInputs::default(), &[])
            .map(|(_, x)| x)
            .map_err(|d| d.to_string())
    }

    #[test]
    fn a_tune_block_is_decoded_with_defaults_and_the_cluster_price() {
        let x = load(&stack(
            "tune \"b\" {\n  serving  = serving.tf\n  loadtest = loadtest.lt\n  space = {\n    \"batching.max_batch_size\" = [8, 32]\n    \"flags.tensorflow_inter_op_parallelism\" = [1, 2]\n  }\n}",
        ))
        .unwrap();
        let t = &x.tunes[0];
        assert_eq!(t.address(), "tune.b");
        assert_eq!(t.space.len(), 2);
        assert_eq!(
            t.space[0].values,
            vec![FlagValue::Int(8), FlagValue::Int(32)]
        );
        assert_eq!(t.repeats, 3);
        assert_eq!(t.search, crate::stack::tune::Search::Grid);
        assert_eq!(
            x.hourly_prices.values().copied().collect::<Vec<_>>(),
            vec![0.5]
        );
        // The load() used by plan and apply accepts the same stack.
        let _ = load_with_env;
    }

    #[test]
    fn tune_errors_are_located_and_say_what_was_expected() {
        let e = load(&stack(
            "tune \"b\" {\n  serving  = serving.tf\n  loadtest = loadtest.lt\n  space = {\n    \"batching.max_batch_sise\" = [8]\n    \"batching.num_batch_threads\" = [0, 2]\n    \"replicas\" = 2\n  }\n  search = \"random\"\n  colour = 1\n}",
        ))
        .unwrap_err();
        assert!(e.contains("s.hcl:31:5"), "{e}");
        assert!(e.contains("did you mean batching.max_batch_size?"), "{e}");
        assert!(e.contains("s.hcl:32:37"), "{e}");
        assert!(
            e.contains("space \"batching.num_batch_threads\": found the number 0, expected a whole number from 1 to 1024"),
            "{e}"
        );
        assert!(e.contains("expected a non-empty list of values"), "{e}");
        assert!(
            e.contains("search: found the string \"random\", expected \"grid\""),
            "{e}"
        );
        assert!(
            e.contains("found the unknown attribute `colour` in tune \"b\""),
            "{e}"
        );
    }

    #[test]
    fn a_tune_must_measure_the_resource_it_varies() {
        let e = load(&stack(
            "tune \"b\" {\n  serving  = serving.tf\n  loadtest = serving.tf\n}",
        ))
        .unwrap_err();
        assert!(
            e.contains(
                "loadtest: found a reference to serving.tf, expected a reference to a loadtest"
            ),
            "{e}"
        );
        assert!(e.contains("without `space`"), "{e}");
    }
}
