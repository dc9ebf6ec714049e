//! On-demand hourly prices of the GCE machine types the shipped stacks use, for the tuner's
//! cost per million predictions.
//!
//! Source: Google Cloud's published Compute Engine on-demand list prices for us-central1
//! (https://cloud.google.com/compute/vm-instance-pricing), in USD per VM-hour, Linux, no
//! sustained- or committed-use discounts, no GKE management fee. As of: PRICES_AS_OF. These
//! figures were written from the author's knowledge without network access when this table
//! was made; they need checking against the page above before they are relied on, and prices
//! differ by region. A cluster's `hourly_price` attribute overrides the table (and is the only
//! price a local cluster has).

use crate::vocab::resources::{Address, ClusterConfig, ProviderKind, ResourceConfig, Stack};

use super::Pricing;

/// When the table's figures were taken.
pub const PRICES_AS_OF: &str = "2025-01 (us-central1 on-demand; to be checked)";

/// (machine type, USD per hour).
const ON_DEMAND_US_CENTRAL1: &[(&str, f64)] = &[
    ("e2-standard-2", 0.067),
    ("e2-standard-4", 0.134),
    ("e2-standard-8", 0.268),
    ("e2-standard-16", 0.536),
    ("e2-standard-32", 1.072),
    ("e2-highcpu-2", 0.049),
    ("e2-highcpu-4", 0.099),
    ("e2-highcpu-8", 0.198),
    ("e2-highcpu-16", 0.396),
    ("e2-highcpu-32", 0.792),
    ("n2-standard-2", 0.097),
    ("n2-standard-4", 0.194),
    ("n2-standard-8", 0.388),
    ("n2-standard-16", 0.777),
    ("n2-standard-32", 1.554),
    ("n2-highcpu-2", 0.072),
    ("n2-highcpu-4", 0.143),
    ("n2-highcpu-8", 0.287),
    ("n2-highcpu-16", 0.573),
    ("n2-highcpu-32", 1.147),
    ("c2-standard-4", 0.209),
    ("c2-standard-8", 0.418),
    ("c2-standard-16", 0.835),
    ("c2-standard-30", 1.566),
];

/// The table's on-demand price of a machine type, USD per hour.
pub fn on_demand(machine_type: &str) -> Option<f64> {
    ON_DEMAND_US_CENTRAL1
        .iter()
        .find(|(m, _)| *m == machine_type)
        .map(|(_, p)| *p)
}

/// The price of the serving cluster's nodes: the stack's `hourly_price` for that cluster,
/// else (gke) the table's price of its machine type; none for a local cluster without one.
pub fn pricing(
    stack: &Stack,
    cluster: &Address,
    overrides: &std::collections::BTreeMap<Address, f64>,
) -> Option<Pricing> {
    let c: &ClusterConfig = stack.resources.iter().find_map(|r| match &r.config {
        ResourceConfig::Cluster(c) if &r.address == cluster => Some(c),
        _ => None,
    })?;
    let by_name = overrides
        .iter()
        .find_map(|(a, p)| (a.kind == cluster.kind && a.name == cluster.name).then_some(*p));
    if let Some(p) = by_name {
        return Some(Pricing {
            hourly_price: p,
            nodes: c.node_count,
            source: format!("hourly_price of {cluster}"),
        });
    }
    if c.provider == ProviderKind::Local {
        return None;
    }
    let machine = c.machine_type.as_deref()?;
    on_demand(machine).map(|p| Pricing {
        hourly_price: p,
        nodes: c.node_count,
        source: format!("{machine} on-demand list price as of {PRICES_AS_OF}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machine_types_of_the_shipped_stacks_have_a_price() {
        for m in ["e2-highcpu-8", "e2-highcpu-32", "n2-highcpu-8"] {
            assert!(on_demand(m).is_some_and(|p| p > 0.0), "{m}");
        }
        assert_eq!(on_demand("no-such-type"), None);
    }

    #[test]
    fn cost_per_million_is_node_hours_over_predictions() {
        let p = Pricing {
            hourly_price: 0.198,
            nodes: 3,
            source: String::new(),
        };
        // 3 × 0.198 $/h for 1000 req/s × 3600 s = 3.6 M predictions per hour.
        let c = p.cost_per_million(1000.0).unwrap();
        assert!((c - 3.0 * 0.198 / 3.6).abs() < 1e-9, "{c}");
        assert_eq!(p.cost_per_million(0.0), None);
    }
}
