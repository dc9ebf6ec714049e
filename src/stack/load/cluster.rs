//! `cluster` blocks (schema: `schema::CLUSTER`).

use std::collections::BTreeMap;

use hcl_edit::structure::Block;

use super::super::schema::CLUSTER;
use super::super::sources::{Sources, range_of};
use super::super::value::Value;
use super::body::{Checked, Ctx, header_range};
use crate::vocab::resources::{ClusterConfig, LINEAGE_LABEL, MANAGED_BY_LABEL, ProviderKind};

fn provider(s: &str) -> Option<ProviderKind> {
    match s {
        "local" => Some(ProviderKind::Local),
        "gke" => Some(ProviderKind::Gke),
        _ => None,
    }
}

impl Sources {
    pub(super) fn decode_cluster(
        &mut self,
        cx: &Ctx,
        c: &Checked,
        block: &Block,
        what: &str,
    ) -> Option<ClusterConfig> {
        let a = |name| CLUSTER.attr(name);
        let before = self.diags.len();
        let provider = self.choice(cx, c, a("provider"), provider);
        if self.diags.len() > before {
            return None;
        }
        let provider = provider?;
        let project = self.string(cx, c, a("project"));
        let location = self.string(cx, c, a("location"));
        let machine_type = self.string(cx, c, a("machine_type"));
        let node_count = self.uint_or_default(cx, c, a("node_count")) as u32;
        let disk_size_gb = self.uint(cx, c, a("disk_size_gb")).map(|n| n as u32);
        let spot = self.boolean(cx, c, a("spot")).unwrap_or_default();
        let private_nodes = self.boolean(cx, c, a("private_nodes")).unwrap_or_default();
        let enable_apis = self.boolean(cx, c, a("enable_apis")).unwrap_or_default();
        let service_account = self.string(cx, c, a("service_account"));
        let network = self.string(cx, c, a("network"));
        let subnetwork = self.string(cx, c, a("subnetwork"));
        for (name, value) in [
            ("service_account", &service_account),
            ("network", &network),
            ("subnetwork", &subnetwork),
        ] {
            if let (Some(v), Some(found)) = (value, c.attrs.get(name))
                && v.trim().is_empty()
            {
                self.error(
                    cx.file,
                    range_of(&found.value),
                    format!(
                        "{name}: found an empty string, expected {} (or leave `{name}` out)",
                        CLUSTER.attr(name).example
                    ),
                    None,
                );
            }
        }
        if let (Some(found), None) = (c.attrs.get("subnetwork"), &network) {
            self.error(cx.file, range_of(&found.key), "found `subnetwork` without `network`, expected `network` too (a subnetwork belongs to a network)".to_string(), None);
        }
        let labels_attr = a("labels");
        let labels = self.opt(cx, c, labels_attr.name, |v| match v {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| match v {
                    Value::String(s) if is_gke_label(k, true) && is_gke_label(s, false) => {
                        Ok((k.clone(), s.clone()))
                    }
                    _ => Err(labels_attr.ty.expected()),
                })
                .collect::<Result<BTreeMap<_, _>, _>>(),
            _ => Err("a map of strings".into()),
        });
        if let (Some(found), Some(labels)) = (c.attrs.get("labels"), &labels) {
            for reserved in [MANAGED_BY_LABEL, LINEAGE_LABEL] {
                if labels.contains_key(reserved) {
                    self.error(cx.file, range_of(&found.value), format!("labels: found `{reserved}`, expected other keys (benchstack sets `{reserved}` on every cluster itself)"), None);
                }
            }
        }
        // What the schema allows only with provider = "gke".
        for attr in CLUSTER.attrs.iter().filter(|a| a.presence.gke_only()) {
            let name = attr.name;
            match (provider, c.attrs.get(name)) {
                (ProviderKind::Gke, None)
                    if attr.presence == super::super::schema::Presence::GkeRequired =>
                {
                    self.error(cx.file, header_range(block), format!("found {what} with provider \"gke\" but no `{name}`, expected `{name} = {}`", attr.example), None);
                }
                (ProviderKind::Local, Some(found)) => {
                    self.error(cx.file, range_of(&found.key), format!("found `{name}` on a local cluster, expected it only with provider = \"gke\""), None);
                }
                _ => {}
            }
        }
        if provider == ProviderKind::Local
            && node_count != 1
            && let Some(found) = c.attrs.get("node_count")
        {
            self.error(cx.file, range_of(&found.value), format!("node_count: found {node_count} on a local cluster, expected 1 (a local cluster is this machine)"), None);
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
            service_account,
            network,
            subnetwork,
            enable_apis,
        })
    }
}

fn is_gke_label(s: &str, key: bool) -> bool {
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && (!key || s.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
}
