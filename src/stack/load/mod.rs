//! Loading a stack: parse every file, evaluate variables and for_each, decode each block into
//! its typed configuration, check references, ranges and the graph, and collect every problem.
//!
//! One file per block kind (`backend`, `cluster`, `model`, `image`, `serving`, `loadtest`, `output`; `variable`
//! blocks are evaluated by `stack::vars`, `tune` blocks and a cluster's `hourly_price` are
//! decoded in `tune`), the shared body checks and typed views in `body`, `for_each`
//! expansion in `for_each`, and the checks that need several resources in `cross`. What each
//! block allows (attributes, nested blocks, types, ranges, defaults, "expected …" texts) is
//! read from `stack::schema`. Adding a block kind: declare it in `stack::schema`, add its
//! decoder file, and one arm in the top-level dispatch below (and in `Sources::decode` for a
//! resource).

mod backend;
mod body;
mod cluster;
mod cross;
mod for_each;
mod image;
mod loadtest;
mod model;
mod output;
mod serving;
mod tune;

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use hcl_edit::structure::{Block, Body, Structure};

use super::diag::Diagnostics;
use super::eval::{Scope, kind_from_str};
use super::schema::{self, CLUSTER, IMAGE, LOADTEST, MODEL, SERVING};
use super::sources::{Sources, range_of};
use super::tune::StackExtras as TuneExtras;
use super::value::{Value, suggest};
use super::vars::{self, VarInputs};
use crate::vocab::resources::{Address, Kind, ModelConfig, Resource, ResourceConfig, Span, Stack};
use body::{Ctx, block_label, header_range, is_valid_name};
use for_each::Instance;

/// A block declared at the top level, with the file it is in.
#[derive(Clone, Copy)]
struct Decl<'b> {
    file: usize,
    block: &'b Block,
}

/// What the loader produces before cross-resource checks.
struct Decoded {
    resource: Resource,
    file: usize,
    block_header: Range<usize>,
    /// Attribute values kept for checks that need other resources.
    loadtest_cluster: Option<Address>,
    loadtest_model: Option<(String, Range<usize>)>,
    /// The attributes the block writes, whether or not their values evaluated: a value left
    /// unknown by an error reported elsewhere (an unset variable) is not also "missing".
    written: std::collections::HashSet<String>,
}

pub(crate) fn load_stack(
    path: &Path,
    inputs: &VarInputs,
    env: &[(String, String)],
) -> Result<Stack, Diagnostics> {
    load_stack_full(path, inputs, env).map(|(stack, _)| stack)
}

/// As `load_stack`, with the tune blocks and cluster prices (`stack::tune`).
pub(crate) fn load_stack_full(
    path: &Path,
    inputs: &VarInputs,
    env: &[(String, String)],
) -> Result<(Stack, TuneExtras), Diagnostics> {
    let mut ld = Sources::new();
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

    // 2. Top-level blocks, by kind: the kinds are `schema::BLOCKS`; each goes to its list
    // here (variables, resources, outputs) and is decoded in the steps below.
    let top_blocks = schema::block_names();
    let mut variables: Vec<(String, Decl)> = Vec::new();
    let mut resources: Vec<(Kind, String, Decl)> = Vec::new();
    let mut outputs: Vec<(String, Decl)> = Vec::new();
    let mut tunes: Vec<tune::TopBlock> = Vec::new();
    let mut backend_blocks: Vec<(Span, Decl)> = Vec::new();
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
                            top_blocks.join(", ")
                        ),
                        None,
                    );
                    continue;
                }
                Structure::Block(b) => b,
            };
            let ident = b.ident.value().to_string();
            if !top_blocks.contains(&ident.as_str()) {
                let help = suggest(&ident, top_blocks.iter().copied())
                    .map(|s| format!("did you mean `{s}`?"));
                ld.error(
                    file,
                    range_of(&b.ident),
                    format!(
                        "found the unknown block type `{ident}`, expected one of: {}",
                        top_blocks.join(", ")
                    ),
                    help,
                );
                continue;
            }
            // The backend is labelled by its type, not named, and there is one per stack.
            if ident == "backend" {
                let label = block_label(b).unwrap_or_default();
                if b.labels.len() != 1 || label != "gcs" {
                    let r = b.labels.first().map(range_of).unwrap_or(range_of(&b.ident));
                    ld.error(file, r, format!("found the backend {}, expected `backend \"gcs\" {{ … }}` (Cloud Storage is the only remote state; without a backend block the state is local)", if b.labels.is_empty() { "without a type".to_string() } else { format!("type {label:?}") }), None);
                    continue;
                }
                let here = ld.span(file, range_of(&b.ident));
                if let Some((first, _)) = &backend_blocks.first() {
                    let first: &Span = first;
                    let first = first.clone();
                    ld.error(file, header_range(b), format!("found a second backend block, expected one per stack (the first is at {first})"), None);
                    continue;
                }
                backend_blocks.push((here, Decl { file, block: b }));
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
            // The block-kind dispatch: one arm per kind that is not a resource.
            match ident.as_str() {
                "variable" => variables.push((name, d)),
                "output" => outputs.push((name, d)),
                "tune" => tunes.push((name, d.file, d.block)),
                k => match kind_from_str(k) {
                    Some(kind) => resources.push((kind, name, d)),
                    None => ld.error(
                        file,
                        range_of(&b.ident),
                        format!("found the block type `{ident}`, which this version declares but does not decode; expected one of: {}", top_blocks.join(", ")),
                        None,
                    ),
                },
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
    let (decls, mut instances) = ld.expand_for_each(&resources, &var_values, &failed_vars);

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
    ld.fill_serving_presets(&mut decoded);

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
        if let Some(o) = ld.decode_output(&cx, d.block, name) {
            outs.push(o);
        }
    }

    // 8. The graph, and where load can go.
    let cluster_blocks: Vec<tune::TopBlock> = (resources.iter())
        .filter(|(k, _, _)| *k == Kind::Cluster)
        .map(|(_, n, d)| (n.clone(), d.file, d.block))
        .collect();
    let resources: Vec<Resource> = decoded.into_iter().map(|d| d.resource).collect();
    ld.check_graph(&resources);
    ld.check_reach(&resources);

    // 9. Tune blocks and cluster prices (not resources: plan and apply ignore them).
    let extras = tune::decode(
        &mut ld,
        &tunes,
        &cluster_blocks,
        &var_values,
        &failed_vars,
        &decls,
        &resources,
    );

    // 10. The backend (literal values only: read before variables, as in Terraform).
    let backend = backend_blocks
        .first()
        .and_then(|(_, d)| ld.decode_backend(d.file, d.block));

    if !ld.diags.is_empty() {
        ld.diags.finish();
        return Err(ld.diags);
    }
    let stack = Stack {
        files: stack_files,
        resources,
        outputs: outs,
        backend,
    };
    Ok((stack, extras))
}

impl Sources {
    fn decode(&mut self, cx: &Ctx, block: &Block, address: Address) -> Option<Decoded> {
        let what = format!("{} \"{}\"", address.kind.as_str(), address.name);
        let schema = match address.kind {
            Kind::Cluster => &CLUSTER,
            Kind::Model => &MODEL,
            Kind::Serving => &SERVING,
            Kind::Loadtest => &LOADTEST,
            Kind::Image => &IMAGE,
        };
        let c = self.check_body(cx.file, &block.body, &what, schema);
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
            written: c.attrs.keys().cloned().collect(),
        };
        // depends_on: explicit edges to any kind.
        if let Some(a) = c.attrs.get("depends_on")
            && let Some(v) = self.value(cx, a)
        {
            let ok = matches!(&v, Value::List(l) if l.iter().all(|x| matches!(x, Value::Ref(r) if r.attribute.is_none())));
            if !ok {
                self.error(
                    cx.file,
                    range_of(&a.value),
                    format!(
                        "depends_on: found {}, expected {}",
                        v.describe(),
                        schema.attr("depends_on").ty.expected()
                    ),
                    None,
                );
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
            Kind::Image => self
                .decode_image(cx, &c, block, &what)
                .map(ResourceConfig::Image),
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
}
