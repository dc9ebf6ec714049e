//! The serving cluster's node price, for the tuner's cost per million predictions: the
//! stack's `hourly_price` for that cluster (the only price a local cluster has), else for a gke
//! cluster the dated on-demand list price of its machine type in its region
//! (`manifest::prices`: sourced per family and region, a region without figures unpriced).
//! The cost per prediction counts the nodes only, not GKE's per-cluster management fee: the
//! fee does not grow with the load a configuration carries.

use crate::manifest::capacity::MachineShapes;
use crate::manifest::prices::cluster_node_price;
use crate::vocab::resources::{Address, ClusterConfig, ProviderKind, ResourceConfig, Stack};

use super::Pricing;

/// The price of the serving cluster's nodes: the stack's `hourly_price` for that cluster,
/// else (gke) the list price of its machine type in its region (the built-in shape); none for
/// a local cluster without one, or a gke cluster without a list price.
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
    let price = cluster_node_price(
        c.machine_type.as_deref()?,
        c.location.as_deref()?,
        c.spot,
        &MachineShapes::default(),
    )
    .ok()?;
    Some(Pricing {
        hourly_price: price.per_hour,
        nodes: c.node_count,
        source: format!("{}; nodes only, no cluster fee", price.basis),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::{Kind, Resource, Span};
    use std::collections::BTreeMap;

    fn stack_with(location: &str, machine: &str, spot: bool) -> (Stack, Address) {
        let address = Address {
            kind: Kind::Cluster,
            name: "serving".into(),
            key: None,
        };
        let config = ClusterConfig {
            provider: ProviderKind::Gke,
            project: Some("p".into()),
            location: Some(location.into()),
            machine_type: Some(machine.into()),
            node_count: 3,
            disk_size_gb: None,
            spot,
            private_nodes: false,
            labels: BTreeMap::new(),
            service_account: None,
            network: None,
            subnetwork: None,
            enable_apis: false,
        };
        let stack = Stack {
            files: vec![],
            resources: vec![Resource {
                address: address.clone(),
                config: ResourceConfig::Cluster(config),
                depends_on: vec![],
                span: Span::default(),
            }],
            outputs: vec![],
            backend: None,
        };
        (stack, address)
    }

    #[test]
    fn the_machine_types_of_the_shipped_stacks_have_a_price_in_their_region() {
        for m in ["e2-highcpu-8", "e2-highcpu-32", "n2-highcpu-8"] {
            let (stack, address) = stack_with("us-central1-a", m, false);
            let p = pricing(&stack, &address, &BTreeMap::new()).unwrap();
            assert!(p.hourly_price > 0.0, "{m}");
            assert!(p.source.contains("in us-central1"), "{}", p.source);
        }
        let (stack, address) = stack_with("us-central1-a", "e2-highcpu-8", false);
        let p = pricing(&stack, &address, &BTreeMap::new()).unwrap();
        assert!((p.hourly_price - 0.19788096).abs() < 1e-9);
    }

    #[test]
    fn an_unpriced_region_or_spot_nodes_have_no_price_but_hourly_price_gives_one() {
        let (stack, address) = stack_with("mars-north1-a", "e2-highcpu-8", false);
        assert_eq!(pricing(&stack, &address, &BTreeMap::new()), None);
        let (spot, address) = stack_with("us-central1-a", "e2-highcpu-8", true);
        assert_eq!(pricing(&spot, &address, &BTreeMap::new()), None);
        let declared = BTreeMap::from([(address.clone(), 0.07)]);
        assert_eq!(
            pricing(&spot, &address, &declared).map(|p| p.hourly_price),
            Some(0.07)
        );
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
