//! Loading a stack: parse every file, evaluate variables and for_each, decode each block into
//! its typed configuration, check references, ranges and the graph, and collect every problem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hcl_edit::expr::Expression;
use hcl_edit::structure::{Attribute, Block, Body, Structure};

use super::diag::{Diagnostic, Diagnostics, Location};
use super::eval::{Decls, EvalError, Instances, Scope, kind_from_str};
use super::funcs::resolve;
use super::source::{SourceFile, comma_blocks};
use super::types::*;
use super::value::{Reference, Value, suggest};
use super::vars::{self, VarInputs};
use crate::graph::Graph;
use crate::loadgen::spec::{
    Arrival, MAX_RATE, Protocol, Rate, RequestSource, Slo, SpecError, Stage, parse_duration,
};

const TOP_BLOCKS: &[&str] = &[
    "variable", "cluster", "model", "serving", "loadtest", "output", "tune",
];
const CLUSTER_ATTRS: &[&str] = &[
    "provider",
    "project",
    "location",
    "machine_type",
    "node_count",
    "disk_size_gb",
    "spot",
    "private_nodes",
    "labels",
    "hourly_price", // decoded with the tune blocks (stack/tune.rs)
    "for_each",
    "depends_on",
];
const MODEL_ATTRS: &[&str] = &[
    "base_path",
    "serving_path",
    "name",
    "for_each",
    "depends_on",
];
const SERVING_ATTRS: &[&str] = &[
    "cluster",
    "image",
    "replicas",
    "models",
    "flags",
    "cpu",
    "memory",
    "for_each",
    "depends_on",
];
const SERVING_BLOCKS: &[&str] = &["batching"];
const BATCHING_ATTRS: &[&str] = &[
    "max_batch_size",
    "batch_timeout_micros",
    "max_enqueued_batches",
    "num_batch_threads",
    "allowed_batch_sizes",
    "pad_variable_length_inputs",
    "enable_large_batch_splitting",
    "max_execution_batch_size",
];
const LOADTEST_ATTRS: &[&str] = &[
    "cluster",
    "target",
    "model",
    "protocol",
    "signature",
    "request",
    "data",
    "batch_size",
    "workers",
    "loadgen_image",
    "connections",
    "arrival",
    "seed",
    "warmup",
    "timeout",
    "for_each",
    "depends_on",
];
const LOADTEST_BLOCKS: &[&str] = &["stage", "slo"];
const STAGE_ATTRS: &[&str] = &["rate", "duration", "name"];
const OUTPUT_ATTRS: &[&str] = &["value", "description"];
/// Attributes a provider reports after apply, by kind.
const SERVING_OUTPUTS: &[&str] = &["rest_endpoint", "grpc_endpoint"];
/// Flags benchstack sets itself from the rest of the serving block.
const RESERVED_FLAGS: &[&str] = &[
    "port",
    "rest_api_port",
    "model_name",
    "model_base_path",
    "model_config_file",
    "enable_batching",
    "batching_parameters_file",
];

/// A block declared at the top level, with the file it is in.
#[derive(Clone, Copy)]
struct Decl<'b> {
    file: usize,
    block: &'b Block,
}

/// One instance of a resource block to decode.
struct Instance {
    key: Option<String>,
    each: Option<Value>,
}

pub(crate) struct Loader {
    pub files: Vec<SourceFile>,
    pub diags: Diagnostics,
}

fn range_of(x: &impl hcl_edit::Span) -> Range<usize> {
    x.span().unwrap_or(0..0)
}

impl Loader {
    pub fn new() -> Self {
        Loader {
            files: Vec::new(),
            diags: Diagnostics::default(),
        }
    }

    pub fn span(&self, file: usize, r: Range<usize>) -> Span {
        let f = &self.files[file];
        let (line, col) = f.line_col(r.start);
        Span {
            file: f.path.clone(),
            line,
            col,
        }
    }

    pub fn error(
        &mut self,
        file: usize,
        r: Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let f = &self.files[file];
        let r = r.start.min(f.text.len())..r.end.clamp(r.start, f.text.len());
        let (line, col) = f.line_col(r.start);
        let line_text = f.line_text(line).to_string();
        let (_, end_col) = f.line_col(r.end);
        let (end_line, _) = f.line_col(r.end);
        let width = if end_line == line {
            end_col.saturating_sub(col).max(1)
        } else {
            line_text.chars().count().saturating_sub(col - 1).max(1)
        };
        self.diags.push(Diagnostic {
            location: Location::Source {
                span: Span {
                    file: f.path.clone(),
                    line,
                    col,
                },
                line_text,
                width,
            },
            message: message.into(),
            help,
            note: None,
        });
    }

    fn eval_error(&mut self, file: usize, e: EvalError, note: Option<&str>) {
        // An empty message marks a consequence of a problem already reported (a variable
        // without a value): saying it again at every use would bury the cause.
        if e.message.is_empty() {
            return;
        }
        self.error(file, e.range, e.message, e.help);
        if let (Some(n), Some(d)) = (note, self.diags.items.last_mut()) {
            d.note = Some(n.to_string());
        }
    }

    /// Reads and parses a file; syntax errors become diagnostics.
    pub fn parse_file(&mut self, path: &Path) -> Option<(usize, Body)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.diags.path(
                    path,
                    format!("found a file that cannot be read ({e}), expected a readable HCL file"),
                );
                return None;
            }
        };
        self.files.push(SourceFile::new(path, text));
        let idx = self.files.len() - 1;
        self.parse_source(idx).map(|body| (idx, body))
    }

    /// Parses a loaded file exactly as written; syntax errors become diagnostics.
    pub fn parse_source(&mut self, idx: usize) -> Option<Body> {
        let e = match hcl_edit::parser::parse_body(&self.files[idx].text) {
            Ok(body) => return Some(body),
            Err(e) => e,
        };
        let off = e.location().offset();
        // hcl-edit stops at the first error, and on the old comma form its message ("expected
        // newline") does not say how to fix it: name every such block instead.
        let blocks = comma_blocks(&self.files[idx].text);
        let explained = blocks.iter().any(|b| {
            let f = &self.files[idx];
            f.line_col(b.range.start).0 == f.line_col(off).0
        });
        if !explained {
            let msg = e.message().trim().replace('\n', "; ");
            self.error(
                idx,
                off..off + 1,
                format!("found invalid HCL syntax, {}", syntax_expected(&msg)),
                None,
            );
        }
        for b in &blocks {
            let attrs = b.attributes(&self.files[idx].text);
            let n = attrs.len();
            let listed = match attrs.split_last() {
                Some((last, [])) => format!("`{last}`"),
                Some((last, rest)) => format!(
                    "{} and `{last}`",
                    rest.iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => String::new(),
            };
            let header = &b.header;
            self.error(
                idx,
                b.range.clone(),
                format!(
                    "found a one-line `{header}` block with {n} attributes separated by commas, \
                     expected one attribute per line: a one-line block holds at most one attribute"
                ),
                Some(format!(
                    "write `{header} {{` with {listed} on their own lines, then `}}` \
                     (`benchstack fmt` rewrites it)"
                )),
            );
        }
        None
    }
}

/// hcl-edit says e.g. "invalid expression; expected `\"`, `[`, …": keep what it expected.
fn syntax_expected(msg: &str) -> String {
    if let Some(i) = msg.find("expected") {
        msg[i..].to_string()
    } else {
        format!("expected valid HCL ({msg})")
    }
}

fn block_label(b: &Block) -> Option<&str> {
    b.labels.first().map(|l| l.as_str())
}

fn is_valid_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == '-')
}

/// The attributes and nested blocks of one block, checked against what is allowed.
struct Checked<'b> {
    attrs: HashMap<String, &'b Attribute>,
    blocks: Vec<&'b Block>,
}

impl Loader {
    fn check_body<'b>(
        &mut self,
        file: usize,
        body: &'b Body,
        what: &str,
        attrs: &[&str],
        blocks: &[&str],
    ) -> Checked<'b> {
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
fn as_string(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err("a string".into()),
    }
}

fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => Some(*n),
        // Values from --var and BENCHSTACK_VAR_* arrive as strings; HCL converts them.
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

fn as_uint(v: &Value, min: u64, max: u64) -> Result<u64, String> {
    let expected = if max >= u64::from(u32::MAX) {
        format!("a whole number of at least {min}")
    } else {
        format!("a whole number from {min} to {max}")
    };
    match as_number(v) {
        Some(n) if n.fract() == 0.0 && n >= min as f64 && n <= max as f64 => Ok(n as u64),
        _ => Err(expected),
    }
}

/// A Kubernetes resource quantity: a positive number with an optional suffix (`7`, `7500m`,
/// `0.5`, `4Gi`, `512M`). Numbers are accepted and written as they read.
fn as_quantity(v: &Value, expected: &str) -> Result<String, String> {
    let text = match v {
        Value::Number(n) if *n > 0.0 => return Ok(format!("{n}")),
        Value::String(s) => s.trim().to_string(),
        _ => return Err(expected.to_string()),
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
    if ok {
        Ok(text)
    } else {
        Err(expected.to_string())
    }
}

fn as_bool(v: &Value) -> Result<bool, String> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s == "true" => Ok(true),
        Value::String(s) if s == "false" => Ok(false),
        _ => Err("true or false".into()),
    }
}

fn as_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::String(s) => parse_duration(s).map_err(|e| match e {
            SpecError::DurationTooLong(_) => "a duration of at most 366 days".to_string(),
            _ => "a duration with a unit, e.g. \"500ms\", \"60s\", \"2m\"".to_string(),
        }),
        _ => Err("a duration string with a unit, e.g. \"500ms\", \"60s\", \"2m\"".into()),
    }
}

struct Ctx<'s, 'a> {
    file: usize,
    scope: &'s Scope<'a>,
    /// The instance address, noted on diagnostics of for_each instances.
    note: Option<String>,
    decls: &'s Decls,
}

impl Loader {
    fn value(&mut self, cx: &Ctx, a: &Attribute) -> Option<Value> {
        match cx.scope.eval(&a.value) {
            Ok(v) => Some(v),
            Err(e) => {
                self.eval_error(cx.file, e, cx.note.as_deref());
                None
            }
        }
    }

    fn typed<T>(
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

    fn opt<T>(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        name: &str,
        f: impl Fn(&Value) -> Result<T, String>,
    ) -> Option<T> {
        let a = c.attrs.get(name)?;
        self.typed(cx, a, f)
    }

    fn reference(&mut self, cx: &Ctx, a: &Attribute, kind: Kind) -> Option<Address> {
        self.typed(cx, a, |v| expect_ref(v, kind, cx.decls))
    }
}

/// The span of `key` in an object literal, to point at one entry of a map.
fn object_key_range(e: &Expression, key: &str) -> Option<Range<usize>> {
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

fn header_range(b: &Block) -> Range<usize> {
    let start = range_of(&b.ident).start;
    let end = b
        .labels
        .last()
        .map(|l| range_of(l).end)
        .unwrap_or(range_of(&b.ident).end);
    start..end
}

fn kind_article(k: Kind) -> &'static str {
    match k {
        Kind::Cluster => "a cluster",
        Kind::Model => "a model",
        Kind::Serving => "a serving resource",
        Kind::Loadtest => "a loadtest",
    }
}

fn expect_ref(v: &Value, kind: Kind, decls: &Decls) -> Result<Address, String> {
    let k = kind.as_str();
    let wanted = format!("a reference to {} such as {k}.NAME", kind_article(kind));
    let Value::Ref(Reference { address, attribute }) = v else {
        return Err(wanted);
    };
    if address.kind != kind {
        return Err(format!(
            "{wanted} ({} is {})",
            address,
            kind_article(address.kind)
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

/// What the loader produces before cross-resource checks.
struct Decoded {
    resource: Resource,
    file: usize,
    block_header: Range<usize>,
    /// Attribute value ranges kept for checks that need other resources.
    loadtest_cluster: Option<Address>,
    loadtest_model: Option<(String, Range<usize>)>,
    target_range: Range<usize>,
}

pub fn load_stack(
    path: &Path,
    inputs: &VarInputs,
    env: &[(String, String)],
) -> Result<Stack, Diagnostics> {
    load_stack_full(path, inputs, env).map(|(stack, _)| stack)
}

/// As `load_stack`, with the tune blocks and cluster prices (`stack::tune`).
pub fn load_stack_full(
    path: &Path,
    inputs: &VarInputs,
    env: &[(String, String)],
) -> Result<(Stack, super::tune::StackExtras), Diagnostics> {
    let mut ld = Loader::new();
    // 1. Files.
    let mut paths: Vec<PathBuf> = Vec::new();
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => match std::fs::read_dir(path) {
            Ok(rd) => {
                paths = rd
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "hcl") && p.is_file())
                    .collect();
                paths.sort();
                if paths.is_empty() {
                    ld.diags.path(path, "found a directory with no *.hcl files, expected a stack file or a directory of them");
                }
            }
            Err(e) => ld.diags.path(path, format!("found a directory that cannot be read ({e}), expected a readable stack directory")),
        },
        Ok(_) => paths.push(path.to_path_buf()),
        Err(_) => ld.diags.path(path, "found no such file or directory, expected a stack file (*.hcl) or a directory of them"),
    }
    let mut bodies: Vec<(usize, Body)> = Vec::new();
    for p in &paths {
        if let Some(b) = ld.parse_file(p) {
            bodies.push(b);
        }
    }
    // Absolute, so a plan file made here can be applied from any working directory.
    let stack_files: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();

    // 2. Top-level blocks.
    let mut variables: Vec<(String, Decl)> = Vec::new();
    let mut resources: Vec<(Kind, String, Decl)> = Vec::new();
    let mut outputs: Vec<(String, Decl)> = Vec::new();
    let mut tunes: Vec<super::tune::TopBlock> = Vec::new();
    let mut seen: HashMap<(String, String), Span> = HashMap::new();
    for (file, body) in &bodies {
        let file = *file;
        for s in body.iter() {
            let b = match s {
                Structure::Attribute(a) => {
                    ld.error(
                        file,
                        range_of(&a.key),
                        format!(
                            "found the attribute `{}` at the top level, expected a block: {}",
                            a.key.value(),
                            TOP_BLOCKS.join(", ")
                        ),
                        None,
                    );
                    continue;
                }
                Structure::Block(b) => b,
            };
            let ident = b.ident.value().to_string();
            if !TOP_BLOCKS.contains(&ident.as_str()) {
                let help = suggest(&ident, TOP_BLOCKS.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"));
                ld.error(
                    file,
                    range_of(&b.ident),
                    format!(
                        "found the unknown block type `{ident}`, expected one of: {}",
                        TOP_BLOCKS.join(", ")
                    ),
                    help,
                );
                continue;
            }
            if b.labels.len() != 1 {
                let r = if b.labels.len() > 1 {
                    range_of(&b.labels[1])
                } else {
                    range_of(&b.ident)
                };
                ld.error(file, r, format!("found {} label(s) on `{ident}`, expected one name: {ident} \"NAME\" {{ … }}", b.labels.len()), None);
                continue;
            }
            let name = block_label(b).unwrap_or_default().to_string();
            if !is_valid_name(&name) {
                ld.error(file, range_of(&b.labels[0]), format!("found the name {name:?}, expected a name of letters, digits, `_` and `-` that starts with a letter or `_`"), None);
                continue;
            }
            let here = ld.span(file, range_of(&b.ident));
            if let Some(first) = seen.get(&(ident.clone(), name.clone())) {
                let first = first.clone();
                ld.error(file, header_range(b), format!("found a second {ident} \"{name}\", expected unique addresses ({ident}.{name} is first declared at {first})"), None);
                continue;
            }
            seen.insert((ident.clone(), name.clone()), here);
            let d = Decl { file, block: b };
            match ident.as_str() {
                "variable" => variables.push((name, d)),
                "output" => outputs.push((name, d)),
                "tune" => tunes.push((name, d.file, d.block)),
                k => {
                    if let Some(kind) = kind_from_str(k) {
                        resources.push((kind, name, d));
                    }
                }
            }
        }
    }

    // 3. Variables.
    let (var_values, failed_vars) = vars::evaluate(
        &mut ld,
        &variables
            .iter()
            .map(|(n, d)| (n.clone(), d.file, d.block))
            .collect::<Vec<_>>(),
        inputs,
        env,
    );

    // 4. for_each.
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
            let dir = ld
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
                ld.error(d.file, range_of(&attr.value), format!("for_each: found {}.{name}, the resource itself, expected a map, a set of strings or another resource with for_each", kind.as_str()), None);
                instances.insert(i, Vec::new());
                progress = true;
                continue;
            }
            let scope = Scope::new(&var_values, &decls, &dir).with_failed(&failed_vars);
            let result = scope.eval(&attr.value);
            let inst = match result {
                Err(e) => {
                    ld.eval_error(d.file, e, None);
                    None
                }
                Ok(v) => for_each_instances(&mut ld, d.file, attr, v, &decls),
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
                    ld.error(d.file, range_of(&attr.value), format!("for_each: found a for_each cycle through {}.{name}, expected for_each to refer to resources whose instances do not depend on this one", kind.as_str()), None);
                }
                instances.insert(i, Vec::new());
            }
            break;
        }
    }

    // 5. Decode each instance.
    let mut decoded: Vec<Decoded> = Vec::new();
    for (i, (kind, name, d)) in resources.iter().enumerate() {
        let list = match instances.remove(&i) {
            Some(l) => l,
            None => vec![Instance {
                key: None,
                each: None,
            }],
        };
        let dir = ld.files[d.file].dir.clone();
        for inst in list {
            let mut scope = Scope::new(&var_values, &decls, &dir).with_failed(&failed_vars);
            let address = Address {
                kind: *kind,
                name: name.clone(),
                key: inst.key.clone(),
            };
            if let (Some(k), Some(v)) = (&inst.key, &inst.each) {
                scope.each = Some((k.clone(), v.clone()));
            }
            let note = inst.key.as_ref().map(|_| format!("in {address}"));
            let cx = Ctx {
                file: d.file,
                scope: &scope,
                note,
                decls: &decls,
            };
            if let Some(dec) = ld.decode(&cx, d.block, address) {
                decoded.push(dec);
            }
        }
    }

    // 6. Checks across resources.
    ld.cross_check(&mut decoded);

    // 7. Outputs.
    let mut outs = Vec::new();
    for (name, d) in &outputs {
        let dir = ld.files[d.file].dir.clone();
        let scope = Scope::new(&var_values, &decls, &dir).with_failed(&failed_vars);
        let cx = Ctx {
            file: d.file,
            scope: &scope,
            note: None,
            decls: &decls,
        };
        if let Some(o) = ld.decode_output(&cx, d.block, name, &decoded) {
            outs.push(o);
        }
    }

    // 8. The graph.
    let cluster_blocks: Vec<super::tune::TopBlock> = (resources.iter())
        .filter(|(k, _, _)| *k == Kind::Cluster)
        .map(|(_, n, d)| (n.clone(), d.file, d.block))
        .collect();
    let resources: Vec<Resource> = decoded.into_iter().map(|d| d.resource).collect();
    if let Err(cycle) = Graph::from_edges(
        resources
            .iter()
            .map(|r| (r.address.clone(), r.depends_on.clone())),
    ) && let Some(first) = cycle.cycle.first()
        && let Some(r) = resources.iter().find(|r| &r.address == first)
    {
        let path = cycle
            .cycle
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(" -> ");
        let span = r.span.clone();
        let file = ld
            .files
            .iter()
            .position(|f| f.path == span.file)
            .unwrap_or(0);
        let f = &ld.files[file];
        let line_text = f.line_text(span.line).to_string();
        ld.diags.push(Diagnostic {
            location: Location::Source { span, line_text, width: first.kind.as_str().len() },
            message: format!("found a dependency cycle: {path}, expected resources that do not depend on themselves"),
            help: Some("remove one of these references (or depends_on entries)".into()),
            note: None,
        });
    }

    // 9. Where load can go: a load test on a gke cluster runs in pods on that cluster, which
    // cannot reach serving on this machine's loopback.
    let cluster_kind = |a: &Address| {
        resources
            .iter()
            .find(|r| &r.address == a)
            .and_then(|r| match &r.config {
                ResourceConfig::Cluster(c) => Some(c.provider),
                _ => None,
            })
    };
    for r in &resources {
        let ResourceConfig::Loadtest(l) = &r.config else {
            continue;
        };
        let target_cluster =
            resources
                .iter()
                .find(|t| t.address == l.target)
                .and_then(|t| match &t.config {
                    ResourceConfig::Serving(s) => Some(&s.cluster),
                    _ => None,
                });
        if cluster_kind(&l.cluster) == Some(ProviderKind::Gke)
            && let Some(tc) = target_cluster
            && cluster_kind(tc) == Some(ProviderKind::Local)
        {
            let span = r.span.clone();
            let line_text = ld
                .files
                .iter()
                .find(|f| f.path == span.file)
                .map(|f| f.line_text(span.line).to_string())
                .unwrap_or_default();
            ld.diags.push(Diagnostic {
                location: Location::Source { span, line_text, width: "loadtest".len() },
                message: format!("{}: found a load test on {} (gke) against {} on {tc} (local), expected a target the load-generation pods can reach: serving on a gke cluster", r.address, l.cluster, l.target),
                help: Some(format!("run the load test on a local cluster, or move {} to a gke cluster", l.target)),
                note: None,
            });
        }
    }

    // 10. Tune blocks and cluster prices (not resources: plan and apply ignore them).
    let extras = super::tune::decode(
        &mut ld,
        &tunes,
        &cluster_blocks,
        &var_values,
        &failed_vars,
        &decls,
        &resources,
    );

    if !ld.diags.is_empty() {
        ld.diags.finish();
        return Err(ld.diags);
    }
    let stack = Stack {
        files: stack_files,
        resources,
        outputs: outs,
    };
    Ok((stack, extras))
}

/// `serving.tf` exactly: (kind, name).
fn whole_resource_ref(e: &Expression) -> Option<(Kind, String)> {
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

fn for_each_instances(
    ld: &mut Loader,
    file: usize,
    attr: &Attribute,
    v: Value,
    decls: &Decls,
) -> Option<Vec<Instance>> {
    let r = range_of(&attr.value);
    let expected = "a map, a set of strings, or a resource with for_each (e.g. serving.tf)";
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

impl Loader {
    fn decode(&mut self, cx: &Ctx, block: &Block, address: Address) -> Option<Decoded> {
        let what = format!("{} \"{}\"", address.kind.as_str(), address.name);
        let (attrs, blocks): (&[&str], &[&str]) = match address.kind {
            Kind::Cluster => (CLUSTER_ATTRS, &[]),
            Kind::Model => (MODEL_ATTRS, &[]),
            Kind::Serving => (SERVING_ATTRS, SERVING_BLOCKS),
            Kind::Loadtest => (LOADTEST_ATTRS, LOADTEST_BLOCKS),
        };
        let c = self.check_body(cx.file, &block.body, &what, attrs, blocks);
        let span = self.span(cx.file, range_of(&block.ident));
        let errors_before = self.diags.len();
        let mut dec = Decoded {
            resource: Resource {
                address: address.clone(),
                span,
                depends_on: Vec::new(),
                config: ResourceConfig::Model(ModelConfig {
                    name: String::new(),
                    base_path: PathBuf::new(),
                    serving_path: None,
                }),
            },
            file: cx.file,
            block_header: header_range(block),
            loadtest_cluster: None,
            loadtest_model: None,
            target_range: 0..0,
        };
        // depends_on: explicit edges to any kind.
        if let Some(a) = c.attrs.get("depends_on")
            && let Some(v) = self.value(cx, a)
        {
            let ok = matches!(&v, Value::List(l) if l.iter().all(|x| matches!(x, Value::Ref(r) if r.attribute.is_none())));
            if !ok {
                self.error(cx.file, range_of(&a.value), format!("depends_on: found {}, expected a list of resource references such as [serving.tf]", v.describe()), None);
            }
        }
        let config = match address.kind {
            Kind::Cluster => self
                .decode_cluster(cx, &c, block, &what)
                .map(ResourceConfig::Cluster),
            Kind::Model => self
                .decode_model(cx, &c, block, &what, &address)
                .map(ResourceConfig::Model),
            Kind::Serving => self
                .decode_serving(cx, &c, block, &what)
                .map(ResourceConfig::Serving),
            Kind::Loadtest => self
                .decode_loadtest(cx, &c, block, &what, &mut dec)
                .map(ResourceConfig::Loadtest),
        };
        let mut deps: Vec<Address> = cx.scope.take_refs();
        deps.retain(|a| a != &address);
        let mut uniq = HashSet::new();
        deps.retain(|a| uniq.insert(a.clone()));
        dec.resource.depends_on = deps;
        if self.diags.len() > errors_before {
            return None;
        }
        dec.resource.config = config?;
        Some(dec)
    }

    fn decode_cluster(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
    ) -> Option<ClusterConfig> {
        let provider = match self.opt(cx, c, "provider", as_string) {
            None => ProviderKind::Local,
            Some(p) => match p.as_str() {
                "local" => ProviderKind::Local,
                "gke" => ProviderKind::Gke,
                other => {
                    let a = c.attrs.get("provider")?;
                    let help =
                        suggest(other, ["local", "gke"]).map(|s| format!("did you mean \"{s}\"?"));
                    self.error(
                        cx.file,
                        range_of(&a.value),
                        format!("provider: found {other:?}, expected \"local\" or \"gke\""),
                        help,
                    );
                    return None;
                }
            },
        };
        let project = self.opt(cx, c, "project", as_string);
        let location = self.opt(cx, c, "location", as_string);
        let machine_type = self.opt(cx, c, "machine_type", as_string);
        let node_count = self
            .opt(cx, c, "node_count", |v| {
                as_uint(v, 1, 5000).map(|n| n as u32)
            })
            .unwrap_or(1);
        let disk_size_gb = self.opt(cx, c, "disk_size_gb", |v| {
            as_uint(v, 10, 65536).map(|n| n as u32)
        });
        let spot = self.opt(cx, c, "spot", as_bool).unwrap_or(false);
        let private_nodes = self.opt(cx, c, "private_nodes", as_bool).unwrap_or(false);
        let labels = self.opt(cx, c, "labels", |v| match v {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) if is_gke_label(k, true) && is_gke_label(s, false) => Ok((k.clone(), s.clone())),
                    _ => Err("a map of GKE labels: keys and values of lowercase letters, digits, `_` and `-`, at most 63 characters, keys starting with a letter".to_string()),
                })
                .collect::<Result<BTreeMap<_, _>, _>>(),
            _ => Err("a map of strings".into()),
        });
        match provider {
            ProviderKind::Gke => {
                for (name, example) in [
                    ("project", "\"my-gcp-project\""),
                    ("location", "\"us-central1-a\""),
                    ("machine_type", "\"e2-highcpu-8\""),
                ] {
                    if !c.attrs.contains_key(name) {
                        self.error(cx.file, header_range(block), format!("found {what} with provider \"gke\" but no `{name}`, expected `{name} = {example}`"), None);
                    }
                }
            }
            ProviderKind::Local => {
                for name in [
                    "project",
                    "location",
                    "machine_type",
                    "disk_size_gb",
                    "spot",
                    "private_nodes",
                ] {
                    if let Some(a) = c.attrs.get(name) {
                        self.error(cx.file, range_of(&a.key), format!("found `{name}` on a local cluster, expected it only with provider = \"gke\""), None);
                    }
                }
                if node_count != 1
                    && let Some(a) = c.attrs.get("node_count")
                {
                    self.error(cx.file, range_of(&a.value), format!("node_count: found {node_count} on a local cluster, expected 1 (a local cluster is this machine)"), None);
                }
            }
        }
        Some(ClusterConfig {
            provider,
            project,
            location,
            machine_type,
            node_count,
            disk_size_gb,
            spot,
            private_nodes,
            labels: labels.unwrap_or_default(),
        })
    }

    fn decode_model(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
        address: &Address,
    ) -> Option<ModelConfig> {
        let name = self.opt(cx, c, "name", |v| match v {
            Value::String(s) if is_valid_name(s) => Ok(s.clone()),
            _ => Err("a model name of letters, digits, `_` and `-`".into()),
        });
        let name = name.unwrap_or_else(|| match &address.key {
            Some(k) => format!("{}-{k}", address.name),
            None => address.name.clone(),
        });
        if !c.attrs.contains_key("base_path") {
            self.error(
                cx.file,
                header_range(block),
                format!(
                    "found {what} without `base_path`, expected `base_path = \"path/to/model\"`"
                ),
                None,
            );
            return None;
        }
        let base = self.opt(cx, c, "base_path", as_string)?;
        let path = resolve(cx.scope.dir, &base);
        let a = c.attrs.get("base_path")?;
        match std::fs::metadata(&path) {
            Err(_) => {
                self.error(cx.file, range_of(&a.value), format!("base_path: found {base:?}, but {} does not exist; expected a model directory with numbered versions (relative paths resolve against the stack file's directory)", path.display()), None);
                return None;
            }
            Ok(m) if !m.is_dir() => {
                self.error(cx.file, range_of(&a.value), format!("base_path: found {base:?}, which is a file; expected a directory holding versions such as 1/saved_model.pb"), None);
                return None;
            }
            Ok(_) => {
                let has_version = std::fs::read_dir(&path)
                    .map(|rd| {
                        rd.filter_map(|e| e.ok()).any(|e| {
                            e.path().is_dir()
                                && e.file_name()
                                    .to_string_lossy()
                                    .chars()
                                    .all(|c| c.is_ascii_digit())
                        })
                    })
                    .unwrap_or(false);
                if !has_version {
                    self.error(cx.file, range_of(&a.value), format!("base_path: found {} with no numbered version directory, expected versions such as {}/1/saved_model.pb (TF Serving's layout)", path.display(), base), None);
                    return None;
                }
            }
        }
        let serving_path = self.opt(cx, c, "serving_path", |v| match v {
            Value::String(s) if s.starts_with('/') || s.starts_with("gs://") => Ok(s.clone()),
            _ => Err(
                "an absolute path in the serving image (\"/models/NAME\") or a \"gs://…\" URL"
                    .into(),
            ),
        });
        Some(ModelConfig {
            name,
            base_path: path,
            serving_path,
        })
    }

    fn decode_serving(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
    ) -> Option<ServingConfig> {
        let cluster = match c.attrs.get("cluster") {
            Some(a) => self.reference(cx, a, Kind::Cluster),
            None => {
                self.error(
                    cx.file,
                    header_range(block),
                    format!("found {what} without `cluster`, expected `cluster = cluster.NAME`"),
                    None,
                );
                None
            }
        };
        let image = self.opt(cx, c, "image", as_string);
        let replicas = self
            .opt(cx, c, "replicas", |v| as_uint(v, 1, 1000).map(|n| n as u32))
            .unwrap_or(1);
        let mut models = Vec::new();
        match c.attrs.get("models") {
            None => self.error(
                cx.file,
                header_range(block),
                format!("found {what} without `models`, expected `models = [model.NAME]`"),
                None,
            ),
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
                                    Err(expected) => self.error(cx.file, range_of(&a.value), format!("models: found {} in the list, expected {expected}", x.describe()), None),
                                }
                            }
                        }
                        other => self.error(cx.file, range_of(&a.value), format!("models: found {}, expected a non-empty list such as [model.regression]", other.describe()), None),
                    }
                }
            }
        }
        let flags = self.opt(cx, c, "flags", |v| match v {
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
            _ => Err(
                "a map of TF Serving flags, e.g. { tensorflow_intra_op_parallelism = 4 }".into(),
            ),
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
        let batching_blocks: Vec<&&Block> = c
            .blocks
            .iter()
            .filter(|b| b.ident.value().as_str() == "batching")
            .collect();
        if batching_blocks.len() > 1 {
            self.error(
                cx.file,
                range_of(&batching_blocks[1].ident),
                "found a second `batching` block, expected at most one".to_string(),
                None,
            );
        }
        let batching = batching_blocks
            .first()
            .and_then(|b| self.decode_batching(cx, b));
        let cpu = self.opt(cx, c, "cpu", |v| {
            as_quantity(v, "a CPU quantity such as \"7\" or \"7500m\"")
        });
        let memory = self.opt(cx, c, "memory", |v| {
            as_quantity(v, "a memory quantity such as \"4Gi\" or \"512Mi\"")
        });
        Some(ServingConfig {
            cluster: cluster?,
            image,
            replicas,
            models,
            flags: flags.unwrap_or_default(),
            batching,
            cpu,
            memory,
        })
    }

    fn decode_batching(&mut self, cx: &Ctx, b: &Block) -> Option<BatchingConfig> {
        let c = self.check_body(cx.file, &b.body, "batching", BATCHING_ATTRS, &[]);
        let before = self.diags.len();
        // The stand-in's startup bounds, so validate refuses what `benchstack serve` would
        // (TF Serving's tuned values are far below them).
        use crate::serve::config::{
            MAX_BATCH_SIZE, MAX_BATCH_TIMEOUT_MICROS, MAX_ENQUEUED_BATCHES, MAX_THREADS,
        };
        let rows = |v: &Value| as_uint(v, 1, MAX_BATCH_SIZE as u64);
        let mut cfg = BatchingConfig {
            max_batch_size: self.opt(cx, &c, "max_batch_size", rows),
            batch_timeout_micros: self.opt(cx, &c, "batch_timeout_micros", |v| {
                as_uint(v, 0, MAX_BATCH_TIMEOUT_MICROS)
            }),
            max_enqueued_batches: self.opt(cx, &c, "max_enqueued_batches", |v| {
                as_uint(v, 1, MAX_ENQUEUED_BATCHES as u64)
            }),
            num_batch_threads: self.opt(cx, &c, "num_batch_threads", |v| {
                as_uint(v, 1, MAX_THREADS as u64)
            }),
            allowed_batch_sizes: Vec::new(),
            pad_variable_length_inputs: self.opt(cx, &c, "pad_variable_length_inputs", as_bool),
            enable_large_batch_splitting: self.opt(cx, &c, "enable_large_batch_splitting", as_bool),
            max_execution_batch_size: self.opt(cx, &c, "max_execution_batch_size", rows),
        };
        if let Some(a) = c.attrs.get("allowed_batch_sizes")
            && let Some(sizes) = self.typed(cx, a, |v| match v {
                Value::List(l) if !l.is_empty() => l
                    .iter()
                    .map(|x| {
                        as_uint(x, 1, MAX_BATCH_SIZE as u64).map_err(|_| {
                            format!("a list of whole numbers from 1 to {MAX_BATCH_SIZE}")
                        })
                    })
                    .collect::<Result<Vec<u64>, String>>(),
                _ => Err("a non-empty list of batch sizes, e.g. [8, 32, 128]".into()),
            })
        {
            let r = range_of(&a.value);
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

    fn decode_loadtest(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
        dec: &mut Decoded,
    ) -> Option<LoadtestConfig> {
        let target = match c.attrs.get("target") {
            Some(a) => {
                dec.target_range = range_of(&a.value);
                self.reference(cx, a, Kind::Serving)
            }
            None => {
                self.error(
                    cx.file,
                    header_range(block),
                    format!("found {what} without `target`, expected `target = serving.NAME`"),
                    None,
                );
                None
            }
        };
        dec.loadtest_cluster = c
            .attrs
            .get("cluster")
            .and_then(|a| self.reference(cx, a, Kind::Cluster));
        if let Some(a) = c.attrs.get("model")
            && let Some(v) = self.value(cx, a)
        {
            match &v {
                Value::String(s) => dec.loadtest_model = Some((s.clone(), range_of(&a.value))),
                Value::Ref(_) => {
                    if let Ok(addr) = expect_ref(&v, Kind::Model, cx.decls) {
                        dec.loadtest_model = Some((format!("\u{0}{addr}"), range_of(&a.value)));
                    } else {
                        self.error(cx.file, range_of(&a.value), format!("model: found {}, expected a model name or a reference such as model.NAME", v.describe()), None);
                    }
                }
                other => self.error(
                    cx.file,
                    range_of(&a.value),
                    format!(
                        "model: found {}, expected a model name or a reference such as model.NAME",
                        other.describe()
                    ),
                    None,
                ),
            }
        }
        // On an error, decoding goes on with the default so that later problems are found too
        // (the resource is dropped because an error was reported).
        let protocol = match c.attrs.get("protocol") {
            None => Protocol::Rest,
            Some(a) => match self.typed(cx, a, as_string) {
                None => Protocol::Rest,
                Some(s) => match Protocol::parse(&s) {
                    Ok(p) => p,
                    Err(_) => {
                        let help =
                            suggest(&s, ["rest", "grpc"]).map(|x| format!("did you mean \"{x}\"?"));
                        self.error(
                            cx.file,
                            range_of(&a.value),
                            format!("protocol: found {s:?}, expected \"rest\" or \"grpc\""),
                            help,
                        );
                        Protocol::Rest
                    }
                },
            },
        };
        let signature = self.opt(cx, c, "signature", as_string);
        let request = c.attrs.get("request").and_then(|a| {
            let body = self.typed(cx, a, as_string)?;
            match serde_json::from_str::<serde_json::Value>(&body) {
                Ok(serde_json::Value::Object(o)) if o.contains_key("instances") || o.contains_key("inputs") => Some(body),
                Ok(_) => {
                    self.error(cx.file, range_of(&a.value), "request: found JSON without \"instances\" or \"inputs\", expected a TF Serving predict body such as {\"instances\": [[…]]}".to_string(), None);
                    None
                }
                Err(e) => {
                    self.error(cx.file, range_of(&a.value), format!("request: found text that is not JSON ({e}), expected a TF Serving predict body such as {{\"instances\": [[…]]}}"), None);
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
        let batch_size = self.opt(cx, c, "batch_size", |v| {
            as_uint(v, 1, 1_000_000).map(|n| n as u32)
        });
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
                self.error(cx.file, header_range(block), format!("found {what} with neither `request` nor `data`, expected `data = \"rows.csv\"` or `request = file(\"body.json\")`"), None);
                None
            }
            (true, false) => request.map(RequestSource::Body),
            (false, true) => data.map(|path| RequestSource::Data {
                path,
                batch_size: batch_size.unwrap_or(1),
            }),
        };
        let workers = self
            .opt(cx, c, "workers", |v| as_uint(v, 1, 1000).map(|n| n as u32))
            .unwrap_or(1);
        let loadgen_image = self.opt(cx, c, "loadgen_image", as_string);
        let connections = self
            .opt(cx, c, "connections", |v| {
                as_uint(v, 1, 100_000).map(|n| n as u32)
            })
            .unwrap_or(64);
        let arrival = match c.attrs.get("arrival") {
            None => Arrival::Constant,
            Some(a) => match self.typed(cx, a, as_string) {
                None => Arrival::Constant,
                Some(s) => match Arrival::parse(&s) {
                    Ok(x) => x,
                    Err(_) => {
                        let help = suggest(&s, ["constant", "poisson"])
                            .map(|x| format!("did you mean \"{x}\"?"));
                        self.error(
                            cx.file,
                            range_of(&a.value),
                            format!("arrival: found {s:?}, expected \"constant\" or \"poisson\""),
                            help,
                        );
                        Arrival::Constant
                    }
                },
            },
        };
        let seed = self
            .opt(cx, c, "seed", |v| as_uint(v, 0, u64::MAX))
            .unwrap_or(1);
        let warmup = self
            .opt(cx, c, "warmup", as_duration)
            .unwrap_or(Duration::ZERO);
        let timeout = match self.opt(cx, c, "timeout", as_duration) {
            Some(d) if d.is_zero() => {
                if let Some(a) = c.attrs.get("timeout") {
                    self.error(
                        cx.file,
                        range_of(&a.value),
                        "timeout: found 0s, expected a duration greater than zero".to_string(),
                        None,
                    );
                }
                None
            }
            Some(d) => Some(d),
            None => Some(Duration::from_secs(10)),
        };
        let mut stages = Vec::new();
        let mut slos = Vec::new();
        let mut slo_seen = false;
        for b in &c.blocks {
            match b.ident.value().as_str() {
                "stage" => {
                    if let Some(s) = self.decode_stage(cx, b, stages.len()) {
                        stages.push(s);
                    }
                }
                "slo" => {
                    if slo_seen {
                        self.error(
                            cx.file,
                            range_of(&b.ident),
                            "found a second `slo` block, expected one (put every percentile in it)"
                                .to_string(),
                            None,
                        );
                        continue;
                    }
                    slo_seen = true;
                    slos = self.decode_slo(cx, b);
                }
                _ => {}
            }
        }
        if !c.blocks.iter().any(|b| b.ident.value().as_str() == "stage") {
            self.error(cx.file, header_range(block), format!("found {what} without a stage, expected at least one `stage` block (`rate = 300` and `duration = \"60s\"` on their own lines)"), None);
        }
        // The load generator refuses these too; here they are found at validate, located.
        if stages.len() > crate::loadgen::MAX_STAGES {
            self.error(
                cx.file,
                header_range(block),
                format!(
                    "found {what} with {} stages, expected at most {}",
                    stages.len(),
                    crate::loadgen::MAX_STAGES
                ),
                None,
            );
        } else if stages
            .iter()
            .try_fold(warmup, |t, s| t.checked_add(s.duration))
            .is_none_or(|t| t > crate::loadgen::spec::MAX_DURATION)
        {
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
            loadgen_image,
            connections,
            arrival,
            seed,
            warmup,
            timeout: timeout?,
            stages,
            slos,
        })
    }

    fn decode_stage(&mut self, cx: &Ctx, b: &Block, index: usize) -> Option<Stage> {
        let c = self.check_body(cx.file, &b.body, "stage", STAGE_ATTRS, &[]);
        let rate = match c.attrs.get("rate") {
            None => {
                self.error(cx.file, range_of(&b.ident), "found a stage without `rate`, expected `rate = 300` (requests per second) or `rate = \"max\"`".to_string(), None);
                None
            }
            Some(a) => self.typed(cx, a, |v| {
                let expected = || {
                    format!("a number of requests per second greater than 0 and at most {MAX_RATE}, or \"max\"")
                };
                match v {
                    Value::Number(n) if n.is_finite() && *n > 0.0 && *n <= MAX_RATE => {
                        Ok(Rate::PerSecond(*n))
                    }
                    Value::String(s) => Rate::parse(s).map_err(|_| expected()),
                    _ => Err(expected()),
                }
            }),
        };
        let duration = match c.attrs.get("duration") {
            None => {
                self.error(
                    cx.file,
                    range_of(&b.ident),
                    "found a stage without `duration`, expected `duration = \"60s\"`".to_string(),
                    None,
                );
                None
            }
            Some(a) => match self.typed(cx, a, as_duration) {
                Some(d) if d.is_zero() => {
                    self.error(
                        cx.file,
                        range_of(&a.value),
                        "duration: found 0s, expected a duration greater than zero".to_string(),
                        None,
                    );
                    None
                }
                d => d,
            },
        };
        let name = self
            .opt(cx, &c, "name", as_string)
            .unwrap_or_else(|| format!("stage-{}", index + 1));
        Some(Stage {
            name,
            rate: rate?,
            duration: duration?,
        })
    }

    fn decode_slo(&mut self, cx: &Ctx, b: &Block) -> Vec<Slo> {
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
                            match crate::loadgen::spec::parse_error_rate(text.trim()) {
                                Some(errors) => out.push(Slo::ErrorRate { errors }),
                                None => self.error(
                                    cx.file,
                                    range_of(&a.value),
                                    format!("errors: found \"{text}\", expected a percentage of failed requests between 0% and 100%, such as \"0.1%\""),
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

    fn cross_check(&mut self, decoded: &mut [Decoded]) {
        let clusters: HashMap<Address, ProviderKind> = decoded
            .iter()
            .filter_map(|d| match &d.resource.config {
                ResourceConfig::Cluster(c) => Some((d.resource.address.clone(), c.provider)),
                _ => None,
            })
            .collect();
        let models: HashMap<Address, String> = decoded
            .iter()
            .filter_map(|d| match &d.resource.config {
                ResourceConfig::Model(m) => Some((d.resource.address.clone(), m.name.clone())),
                _ => None,
            })
            .collect();
        let servings: HashMap<Address, ServingConfig> = decoded
            .iter()
            .filter_map(|d| match &d.resource.config {
                ResourceConfig::Serving(s) => Some((d.resource.address.clone(), s.clone())),
                _ => None,
            })
            .collect();
        for d in decoded.iter_mut() {
            let note = d
                .resource
                .address
                .key
                .as_ref()
                .map(|_| format!("in {}", d.resource.address));
            let before = self.diags.len();
            match &mut d.resource.config {
                ResourceConfig::Serving(s) => {
                    if clusters.get(&s.cluster) == Some(&ProviderKind::Gke) && s.image.is_none() {
                        self.error(d.file, d.block_header.clone(), format!("found {} on {} (provider \"gke\") without `image`, expected `image = \"tensorflow/serving:2.19.0\"`", d.resource.address, s.cluster), None);
                    }
                    let mut names = HashSet::new();
                    for m in &s.models {
                        if let Some(n) = models.get(m)
                            && !names.insert(n.clone())
                        {
                            self.error(d.file, d.block_header.clone(), format!("found two models named {n:?} in {}, expected distinct model names", d.resource.address), None);
                        }
                    }
                }
                ResourceConfig::Loadtest(l) => {
                    let Some(target) = servings.get(&l.target) else {
                        continue;
                    };
                    if d.loadtest_cluster.is_none() {
                        l.cluster = target.cluster.clone();
                    }
                    if clusters.get(&l.cluster) == Some(&ProviderKind::Gke)
                        && l.loadgen_image.is_none()
                    {
                        self.error(d.file, d.block_header.clone(), format!("found {} on {} (provider \"gke\") without `loadgen_image`, expected `loadgen_image = \"REGISTRY/benchstack:TAG\"`", d.resource.address, l.cluster), None);
                    }
                    let served: Vec<String> = target
                        .models
                        .iter()
                        .filter_map(|m| models.get(m).cloned())
                        .collect();
                    match &d.loadtest_model {
                        None => {
                            if served.len() == 1 {
                                l.model = served[0].clone();
                            } else {
                                self.error(d.file, d.block_header.clone(), format!("found {} without `model` while {} serves {} models, expected `model = \"NAME\"` (one of: {})", d.resource.address, l.target, served.len(), served.join(", ")), None);
                            }
                        }
                        Some((name, r)) => {
                            let name = if let Some(addr) = name.strip_prefix('\u{0}') {
                                models
                                    .iter()
                                    .find(|(a, _)| a.to_string() == addr)
                                    .map(|(_, n)| n.clone())
                                    .unwrap_or_default()
                            } else {
                                name.clone()
                            };
                            if served.contains(&name) {
                                l.model = name;
                            } else if !served.is_empty() {
                                let help = suggest(&name, served.iter().map(String::as_str))
                                    .map(|s| format!("did you mean \"{s}\"?"));
                                self.error(d.file, r.clone(), format!("model: found {name:?}, which {} does not serve; expected one of: {}", l.target, served.join(", ")), help);
                            }
                        }
                    }
                    let _ = &d.target_range;
                }
                _ => {}
            }
            if let (Some(n), true) = (note, self.diags.len() > before) {
                for x in &mut self.diags.items[before..] {
                    x.note = Some(n.clone());
                }
            }
        }
    }

    fn decode_output(
        &mut self,
        cx: &Ctx,
        b: &Block,
        name: &str,
        decoded: &[Decoded],
    ) -> Option<Output> {
        let what = format!("output \"{name}\"");
        let c = self.check_body(cx.file, &b.body, &what, OUTPUT_ATTRS, &[]);
        let _ = self.opt(cx, &c, "description", as_string);
        let Some(a) = c.attrs.get("value") else {
            self.error(cx.file, header_range(b), format!("found {what} without `value`, expected `value = serving.NAME.rest_endpoint` or a known value"), None);
            return None;
        };
        let v = self.value(cx, a)?;
        let span = self.span(cx.file, range_of(&b.ident));
        let value = match &v {
            Value::Ref(Reference {
                address,
                attribute: Some(attr),
            }) => {
                if address.kind != Kind::Serving || !SERVING_OUTPUTS.contains(&attr.as_str()) {
                    let help = if address.kind == Kind::Serving {
                        suggest(attr, SERVING_OUTPUTS.iter().copied())
                            .map(|s| format!("did you mean {address}.{s}?"))
                    } else {
                        None
                    };
                    self.error(cx.file, range_of(&a.value), format!("value: found {address}.{attr}, expected an attribute a provider reports: serving.NAME.rest_endpoint or serving.NAME.grpc_endpoint"), help);
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
                let _ = decoded;
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

fn is_gke_label(s: &str, key: bool) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && (!key || s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
}

/// Shared with `vars`: evaluate an expression with no variables or references in scope.
pub(crate) fn eval_constant(
    ld: &mut Loader,
    file: usize,
    e: &Expression,
    dir: &Path,
) -> Option<Value> {
    let vars = BTreeMap::new();
    let decls = Decls::new();
    let mut scope = Scope::new(&vars, &decls, dir);
    scope.allow_vars = false;
    scope.allow_refs = false;
    match scope.eval(e) {
        Ok(v) => Some(v),
        Err(err) => {
            ld.eval_error(file, err, None);
            None
        }
    }
}
