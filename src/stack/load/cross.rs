//! The checks that need several resources: references between kinds (a gke serving needs
//! an image, a load test's model must be served by its target), the dependency graph, and
//! where load can go.

use std::collections::{HashMap, HashSet};

use super::super::diag::{Diagnostic, Location};
use super::super::schema::{LOADTEST, SERVING};
use super::super::sources::Sources;
use super::super::value::suggest;
use super::Decoded;
use crate::graph::Graph;
use crate::vocab::resources::{
    Address, BakedModel, ModelConfig, ProviderKind, Resource, ResourceConfig, ServingConfig,
};

impl Sources {
    pub(super) fn cross_check(&mut self, decoded: &mut [Decoded]) {
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
                    if clusters.get(&s.cluster) == Some(&ProviderKind::Gke)
                        && s.image.is_none()
                        && s.image_from.is_none()
                        && (!d.written.contains("image") || self.diags.is_empty())
                    {
                        self.error(d.file, d.block_header.clone(), format!("found {} on {} (provider \"gke\") without `image`, expected `image = {}`", d.resource.address, s.cluster, SERVING.attr("image").example), None);
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
                        && l.loadgen_image_from.is_none()
                        && (!d.written.contains("loadgen_image") || self.diags.is_empty())
                    {
                        self.error(d.file, d.block_header.clone(), format!("found {} on {} (provider \"gke\") without `loadgen_image`, expected `loadgen_image = {}`", d.resource.address, l.cluster, LOADTEST.attr("loadgen_image").example), None);
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

    /// A `preset = "serving"` image is generated for exactly one serving resource: its
    /// models are filled in here (the plan adds the rendered files and the hash).
    pub(super) fn fill_serving_presets(&mut self, decoded: &mut [Decoded]) {
        let model_configs: HashMap<Address, ModelConfig> = decoded
            .iter()
            .filter_map(|d| match &d.resource.config {
                ResourceConfig::Model(m) => Some((d.resource.address.clone(), m.clone())),
                _ => None,
            })
            .collect();
        let servings: Vec<(Address, Option<Address>, Vec<Address>)> = decoded
            .iter()
            .filter_map(|d| match &d.resource.config {
                ResourceConfig::Serving(s) => Some((
                    d.resource.address.clone(),
                    s.image_from.clone(),
                    s.models.clone(),
                )),
                _ => None,
            })
            .collect();
        let workers: Vec<(Address, Address)> = decoded
            .iter()
            .filter_map(|d| match &d.resource.config {
                ResourceConfig::Loadtest(l) => l
                    .loadgen_image_from
                    .clone()
                    .map(|i| (d.resource.address.clone(), i)),
                _ => None,
            })
            .collect();
        for d in decoded.iter_mut() {
            let address = d.resource.address.clone();
            let ResourceConfig::Image(i) = &mut d.resource.config else {
                continue;
            };
            let Some(preset) = &mut i.preset else {
                continue;
            };
            if let Some((l, _)) = workers.iter().find(|(_, img)| img == &address) {
                self.error(d.file, d.block_header.clone(), format!("found {address} (preset = \"serving\") as the `loadgen_image` of {l}, expected a worker image built from a Dockerfile (`context` and `dockerfile`, such as deploy/loadgen.Dockerfile)"), None);
                continue;
            }
            let users: Vec<&(Address, Option<Address>, Vec<Address>)> = servings
                .iter()
                .filter(|(_, img, _)| img.as_ref() == Some(&address))
                .collect();
            match users.as_slice() {
                // A serving block that failed to decode is not a user: its error says why.
                [] if !self.diags.is_empty() => {}
                [] => {
                    self.error(d.file, d.block_header.clone(), format!("found {address} with `preset = \"serving\"` that no serving resource uses, expected `image = {address}` in the serving block it is generated for"), None);
                }
                [(serving, _, models)] => {
                    preset.serving = Some(serving.clone());
                    preset.models = models
                        .iter()
                        .filter_map(|m| model_configs.get(m))
                        .map(|m| BakedModel {
                            name: m.name.clone(),
                            base_path: m.base_path.clone(),
                            serving_path: m
                                .serving_path
                                .clone()
                                .unwrap_or_else(|| format!("/models/{}", m.name)),
                        })
                        .collect();
                }
                many => {
                    let names: Vec<String> = many.iter().map(|(a, _, _)| a.to_string()).collect();
                    self.error(d.file, d.block_header.clone(), format!("found {address} (preset = \"serving\") used by {}, expected one serving resource per serving-preset image (it carries that resource's models.config and batching file): declare one image block for each", names.join(" and ")), None);
                }
            }
        }
    }

    /// A dependency cycle is an error that names the cycle.
    pub(super) fn check_graph(&mut self, resources: &[Resource]) {
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
            let file = self
                .files
                .iter()
                .position(|f| f.path == span.file)
                .unwrap_or(0);
            let f = &self.files[file];
            let line_text = f.line_text(span.line).to_string();
            self.diags.push(Diagnostic {
                location: Location::Source { span, line_text, width: first.kind.as_str().len() },
                message: format!("found a dependency cycle: {path}, expected resources that do not depend on themselves"),
                help: Some("remove one of these references (or depends_on entries)".into()),
                note: None,
            });
        }
    }

    /// A load test on a gke cluster runs in pods on that cluster, which cannot reach serving
    /// on this machine's loopback.
    pub(super) fn check_reach(&mut self, resources: &[Resource]) {
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
        for r in resources {
            let ResourceConfig::Loadtest(l) = &r.config else {
                continue;
            };
            let target_cluster = resources
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
                let line_text = self
                    .files
                    .iter()
                    .find(|f| f.path == span.file)
                    .map(|f| f.line_text(span.line).to_string())
                    .unwrap_or_default();
                self.diags.push(Diagnostic {
                    location: Location::Source { span, line_text, width: "loadtest".len() },
                    message: format!("{}: found a load test on {} (gke) against {} on {tc} (local), expected a target the load-generation pods can reach: serving on a gke cluster", r.address, l.cluster, l.target),
                    help: Some(format!("run the load test on a local cluster, or move {} to a gke cluster", l.target)),
                    note: None,
                });
            }
        }
    }
}
