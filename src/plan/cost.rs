//! What the stack's clusters cost per hour before and after a plan: node count × the price of
//! a node, per cluster. A node's price is the stack's `hourly_price` for that cluster, else
//! (gke) the dated list price of its machine type; a cluster with neither is named as
//! unpriced, never counted as free. Pure: the caller passes the prices.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Action, Plan};
use crate::vocab::resources::{Address, ClusterConfig, ProviderKind, ResourceConfig};

/// Where node prices come from.
pub struct PriceBook<'a> {
    /// `hourly_price` per cluster, as the stack declares it (USD per node-hour).
    pub overrides: &'a BTreeMap<Address, f64>,
    /// The list price of a gke machine type (USD per node-hour).
    pub table: &'a dyn Fn(&str) -> Option<f64>,
    /// What the table is, for the source text ("on-demand list price as of …").
    pub table_source: &'a str,
}

/// One side (before or after) of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub nodes: u32,
    pub machine_type: Option<String>,
    /// USD per node-hour; None: no price is known for it.
    pub hourly_price: Option<f64>,
    pub source: Option<String>,
}

impl Side {
    pub fn per_hour(&self) -> Option<f64> {
        self.hourly_price.map(|p| p * f64::from(self.nodes))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterCost {
    pub address: Address,
    pub action: Action,
    pub before: Option<Side>,
    pub after: Option<Side>,
}

/// The clusters of a plan, priced.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanCost {
    pub clusters: Vec<ClusterCost>,
}

fn sum<'a>(sides: impl Iterator<Item = Option<&'a Side>>) -> f64 {
    // An empty f64 sum is -0.0, which prints as "$-0.00".
    sides.flatten().filter_map(Side::per_hour).sum::<f64>() + 0.0
}

impl PlanCost {
    /// USD per hour of the priced clusters as they run now (0 when none runs).
    pub fn before_per_hour(&self) -> f64 {
        sum(self.clusters.iter().map(|c| c.before.as_ref()))
    }

    /// USD per hour of the priced clusters after apply.
    pub fn after_per_hour(&self) -> f64 {
        sum(self.clusters.iter().map(|c| c.after.as_ref()))
    }

    /// Clusters with a side that has no price (their cost is not in the totals).
    pub fn unpriced(&self) -> Vec<&Address> {
        self.clusters
            .iter()
            .filter(|c| {
                [&c.before, &c.after]
                    .iter()
                    .any(|s| s.as_ref().is_some_and(|s| s.hourly_price.is_none()))
            })
            .map(|c| &c.address)
            .collect()
    }

    /// `$0.59 → $0.79 per hour (+$0.20)`, with the unpriced clusters named.
    pub fn line(&self) -> String {
        let (b, a) = (self.before_per_hour(), self.after_per_hour());
        let delta = a - b;
        let change = if delta.abs() < 0.0005 {
            String::new()
        } else if delta > 0.0 {
            format!(" (+{})", usd(delta))
        } else {
            format!(" (−{})", usd(-delta))
        };
        let mut s = format!("{} → {} per hour{change}", usd(b), usd(a));
        let unpriced = self.unpriced();
        if !unpriced.is_empty() {
            let names: Vec<String> = unpriced.iter().map(|a| a.to_string()).collect();
            s.push_str(&format!(
                ", without {} (no price: set `hourly_price`)",
                names.join(", ")
            ));
        }
        s
    }

    /// The `cost` object of `plan --json` (docs/plan-json.md).
    pub fn to_json(&self) -> Value {
        let side = |s: &Option<Side>| {
            s.as_ref().map(|s| {
                json!({
                    "nodes": s.nodes,
                    "machine_type": s.machine_type,
                    "hourly_price": s.hourly_price,
                    "per_hour": s.per_hour(),
                    "source": s.source,
                })
            })
        };
        json!({
            "currency": "USD",
            "before_per_hour": self.before_per_hour(),
            "after_per_hour": self.after_per_hour(),
            "unpriced": self.unpriced().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "clusters": self.clusters.iter().map(|c| json!({
                "address": c.address.to_string(),
                "action": c.action.as_str(),
                "before": side(&c.before),
                "after": side(&c.after),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Dollars: cents from $1 up, a tenth of a cent below (node prices like $0.198).
pub fn usd(x: f64) -> String {
    if x >= 1.0 || x == 0.0 {
        format!("${x:.2}")
    } else {
        format!("${x:.3}")
    }
}

fn price_of(
    address: &Address,
    c: &ClusterConfig,
    book: &PriceBook,
    declared: bool,
) -> (Option<f64>, Option<String>) {
    if declared
        && let Some(p) = book
            .overrides
            .iter()
            .find_map(|(a, p)| (a == address).then_some(*p))
    {
        return (Some(p), Some(format!("hourly_price of {address}")));
    }
    if c.provider == ProviderKind::Gke
        && let Some(m) = c.machine_type.as_deref()
        && let Some(p) = (book.table)(m)
    {
        return (Some(p), Some(format!("{m} {}", book.table_source)));
    }
    (None, None)
}

fn side(address: &Address, c: &ClusterConfig, book: &PriceBook, declared: bool) -> Side {
    let (hourly_price, source) = price_of(address, c, book, declared);
    Side {
        nodes: c.node_count,
        machine_type: c.machine_type.clone(),
        hourly_price,
        source,
    }
}

/// The plan's clusters priced before and after; None when no cluster has a price on either
/// side (a local stack without `hourly_price`: nothing to say).
///
/// The stack's `hourly_price` prices the cluster it declares; it prices the running cluster
/// too when the provider and machine type are the same (else the running one is priced by
/// the table, or not at all).
pub fn estimate(plan: &Plan, book: &PriceBook) -> Option<PlanCost> {
    let mut clusters = Vec::new();
    for c in &plan.changes {
        let config = |x: &Option<ResourceConfig>| match x {
            Some(ResourceConfig::Cluster(c)) => Some(c.clone()),
            _ => None,
        };
        let (before, after) = (config(&c.before), config(&c.after));
        if before.is_none() && after.is_none() {
            continue;
        }
        let same_nodes = matches!((&before, &after), (Some(b), Some(a))
            if b.provider == a.provider && b.machine_type == a.machine_type);
        clusters.push(ClusterCost {
            address: c.address.clone(),
            action: c.action,
            before: before
                .as_ref()
                .map(|b| side(&c.address, b, book, same_nodes)),
            after: after.as_ref().map(|a| side(&c.address, a, book, true)),
        });
    }
    let priced = clusters.iter().any(|c| {
        [&c.before, &c.after]
            .iter()
            .any(|s| s.as_ref().is_some_and(|s| s.hourly_price.is_some()))
    });
    priced.then_some(PlanCost { clusters })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{addr, applied, local_stack, plan_for};
    use crate::vocab::resources::Kind;

    fn table(m: &str) -> Option<f64> {
        (m == "e2-highcpu-8").then_some(0.198)
    }

    #[test]
    fn a_local_stack_without_hourly_price_has_no_cost_and_with_one_has_its_nodes_price() {
        let stack = local_stack(8);
        let plan = plan_for(&stack, &Default::default());
        let none = BTreeMap::new();
        let book = PriceBook {
            overrides: &none,
            table: &table,
            table_source: "list price",
        };
        assert_eq!(estimate(&plan, &book), None);
        let prices = BTreeMap::from([(addr(Kind::Cluster, "local"), 0.5)]);
        let book = PriceBook {
            overrides: &prices,
            table: &table,
            table_source: "list price",
        };
        let cost = estimate(&plan, &book).unwrap();
        // Nothing runs yet: $0 → one node at $0.50.
        assert_eq!(cost.before_per_hour(), 0.0);
        assert_eq!(cost.after_per_hour(), 0.5);
        assert_eq!(cost.line(), "$0.00 → $0.500 per hour (+$0.500)");
        // Applied, then a batching edit: the nodes cost the same.
        let snap = applied(&plan);
        let edited = plan_for(&local_stack(16), &snap);
        let cost = estimate(&edited, &book).unwrap();
        assert_eq!(cost.line(), "$0.500 → $0.500 per hour");
        assert_eq!(cost.to_json()["after_per_hour"], 0.5);
    }

    #[test]
    fn a_gke_machine_type_change_prices_each_side_by_its_own_type_and_names_an_unknown_one() {
        let mut stack = local_stack(8);
        let gke = |m: &str, n: u32| ClusterConfig {
            provider: ProviderKind::Gke,
            project: Some("p".into()),
            location: Some("us-central1-a".into()),
            machine_type: Some(m.into()),
            node_count: n,
            disk_size_gb: None,
            spot: false,
            private_nodes: false,
            labels: BTreeMap::new(),
            service_account: None,
            network: None,
            subnetwork: None,
            enable_apis: false,
        };
        stack.resources[0].config = ResourceConfig::Cluster(gke("e2-highcpu-8", 3));
        let none = BTreeMap::new();
        let book = PriceBook {
            overrides: &none,
            table: &table,
            table_source: "list price",
        };
        let plan = plan_for(&stack, &Default::default());
        let snap = applied(&plan);
        stack.resources[0].config = ResourceConfig::Cluster(gke("n9-unknown-4", 3));
        let plan = plan_for(&stack, &snap);
        let cost = estimate(&plan, &book).unwrap();
        assert!((cost.before_per_hour() - 0.594).abs() < 1e-9);
        assert_eq!(cost.after_per_hour(), 0.0);
        assert_eq!(cost.unpriced(), vec![&addr(Kind::Cluster, "local")]);
        assert!(
            cost.line().contains("without cluster.local"),
            "{}",
            cost.line()
        );
    }
}
