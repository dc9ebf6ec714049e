//! What the stack's clusters cost per hour before and after a plan: node count × the price of
//! a node, plus GKE's cluster management fee for a gke cluster, per cluster. A node's price is
//! the stack's `hourly_price` for that cluster, else (gke) the dated list price of its machine
//! type in the cluster's region; a cluster with neither is named as unpriced, with the reason,
//! never counted as free. Pure: the caller passes the prices.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Action, Plan};
use crate::vocab::resources::{Address, ClusterConfig, ProviderKind, ResourceConfig};

/// A gke cluster's list price per node-hour and where it comes from, or why it has none.
pub type ListPrice<'a> = dyn Fn(&ClusterConfig) -> Result<(f64, String), String> + 'a;

/// Where node prices come from.
pub struct PriceBook<'a> {
    /// `hourly_price` per cluster, as the stack declares it (USD per node-hour).
    pub overrides: &'a BTreeMap<Address, f64>,
    /// The list price of a gke cluster's nodes (USD per node-hour, in its region).
    pub list_price: &'a ListPrice<'a>,
    /// GKE's cluster management fee (USD per cluster-hour) and what it is, for the footnote;
    /// None: not counted.
    pub gke_fee: Option<(f64, &'a str)>,
}

/// One side (before or after) of a cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Side {
    pub nodes: u32,
    pub machine_type: Option<String>,
    /// USD per node-hour; None: no price is known for it.
    pub hourly_price: Option<f64>,
    pub source: Option<String>,
    /// Why there is no price (None when there is one).
    pub unpriced: Option<String>,
    /// GKE's cluster management fee, USD per hour (a gke cluster; None for a local one).
    pub management_fee: Option<f64>,
}

impl Side {
    /// The nodes and the cluster's management fee; None without a node price.
    pub fn per_hour(&self) -> Option<f64> {
        self.hourly_price
            .map(|p| p * f64::from(self.nodes) + self.management_fee.unwrap_or(0.0))
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
    /// What the management fee counted in the figures is (None when no cluster pays one).
    pub management_fee_source: Option<String>,
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
        self.unpriced_with_reasons()
            .into_iter()
            .map(|(a, _)| a)
            .collect()
    }

    /// The unpriced clusters, each with why (the first side without a price).
    pub fn unpriced_with_reasons(&self) -> Vec<(&Address, &str)> {
        self.clusters
            .iter()
            .filter_map(|c| {
                [&c.before, &c.after]
                    .into_iter()
                    .flatten()
                    .find(|s| s.hourly_price.is_none())
                    .map(|s| (&c.address, s.unpriced.as_deref().unwrap_or("no price")))
            })
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
        let unpriced = self.unpriced_with_reasons();
        if !unpriced.is_empty() {
            let names: Vec<String> = unpriced
                .iter()
                .map(|(a, why)| format!("{a} ({why})"))
                .collect();
            s.push_str(&format!(
                ", without {}: set `hourly_price`",
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
                    "management_fee": s.management_fee,
                    "per_hour": s.per_hour(),
                    "source": s.source,
                    "unpriced": s.unpriced,
                })
            })
        };
        json!({
            "currency": "USD",
            "before_per_hour": self.before_per_hour(),
            "after_per_hour": self.after_per_hour(),
            "unpriced": self.unpriced().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "management_fee_source": self.management_fee_source,
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

/// A node's price and its source, or why there is none.
fn price_of(
    address: &Address,
    c: &ClusterConfig,
    book: &PriceBook,
    declared: bool,
) -> Result<(f64, String), String> {
    if declared
        && let Some(p) = book
            .overrides
            .iter()
            .find_map(|(a, p)| (a == address).then_some(*p))
    {
        return Ok((p, format!("hourly_price of {address}")));
    }
    match c.provider {
        ProviderKind::Gke => (book.list_price)(c),
        ProviderKind::Local => Err("a local cluster has no list price".into()),
    }
}

fn side(address: &Address, c: &ClusterConfig, book: &PriceBook, declared: bool) -> Side {
    let (hourly_price, source, unpriced) = match price_of(address, c, book, declared) {
        Ok((p, source)) => (Some(p), Some(source), None),
        Err(why) => (None, None, Some(why)),
    };
    Side {
        nodes: c.node_count,
        machine_type: c.machine_type.clone(),
        hourly_price,
        source,
        unpriced,
        management_fee: book
            .gke_fee
            .filter(|_| c.provider == ProviderKind::Gke)
            .map(|(fee, _)| fee),
    }
}

/// The plan's clusters priced before and after; None when no cluster has a price on either
/// side and none is a gke cluster (a local stack without `hourly_price`: nothing to say).
///
/// The stack's `hourly_price` prices the cluster it declares; it prices the running cluster
/// too when the provider, machine type, location and spot are the same (else the running one
/// is priced by its list price, or not at all).
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
            if b.provider == a.provider && b.machine_type == a.machine_type
                && b.location == a.location && b.spot == a.spot);
        clusters.push(ClusterCost {
            address: c.address.clone(),
            action: c.action,
            before: before
                .as_ref()
                .map(|b| side(&c.address, b, book, same_nodes)),
            after: after.as_ref().map(|a| side(&c.address, a, book, true)),
        });
    }
    // A gke cluster always has something to say: its price, or why it has none.
    let priced = clusters.iter().any(|c| {
        [&c.before, &c.after].iter().any(|s| {
            s.as_ref()
                .is_some_and(|s| s.hourly_price.is_some() || s.management_fee.is_some())
        })
    });
    let pays_fee = clusters.iter().any(|c| {
        [&c.before, &c.after]
            .iter()
            .any(|s| s.as_ref().is_some_and(|s| s.management_fee.is_some()))
    });
    let management_fee_source = book
        .gke_fee
        .filter(|_| pays_fee)
        .map(|(_, what)| what.to_string());
    priced.then_some(PlanCost {
        clusters,
        management_fee_source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{addr, applied, local_stack, plan_for};
    use crate::vocab::resources::Kind;

    /// e2-highcpu-8 in us-central1 only, as the real table would price it.
    fn list(c: &ClusterConfig) -> Result<(f64, String), String> {
        let region = c.location.as_deref().unwrap_or_default();
        match (c.machine_type.as_deref(), region) {
            (Some("e2-highcpu-8"), "us-central1-a") => Ok((0.198, "list price".into())),
            (Some(m), r) => Err(format!("no list price for {m} in {r}")),
            (None, _) => Err("no machine type".into()),
        }
    }

    fn book<'a>(overrides: &'a BTreeMap<Address, f64>) -> PriceBook<'a> {
        PriceBook {
            overrides,
            list_price: &list,
            gke_fee: Some((0.10, "the fee")),
        }
    }

    fn gke(m: &str, location: &str, n: u32) -> ClusterConfig {
        ClusterConfig {
            provider: ProviderKind::Gke,
            project: Some("p".into()),
            location: Some(location.into()),
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
        }
    }

    #[test]
    fn a_local_stack_without_hourly_price_has_no_cost_and_with_one_has_its_nodes_price() {
        let stack = local_stack(8);
        let plan = plan_for(&stack, &Default::default());
        let none = BTreeMap::new();
        assert_eq!(estimate(&plan, &book(&none)), None);
        let prices = BTreeMap::from([(addr(Kind::Cluster, "local"), 0.5)]);
        let cost = estimate(&plan, &book(&prices)).unwrap();
        // Nothing runs yet: $0 → one node at $0.50; a local cluster pays no GKE fee.
        assert_eq!(cost.before_per_hour(), 0.0);
        assert_eq!(cost.after_per_hour(), 0.5);
        assert_eq!(cost.line(), "$0.00 → $0.500 per hour (+$0.500)");
        assert_eq!(cost.management_fee_source, None);
        // Applied, then a batching edit: the nodes cost the same.
        let snap = applied(&plan);
        let edited = plan_for(&local_stack(16), &snap);
        let cost = estimate(&edited, &book(&prices)).unwrap();
        assert_eq!(cost.line(), "$0.500 → $0.500 per hour");
        assert_eq!(cost.to_json()["after_per_hour"], 0.5);
    }

    #[test]
    fn a_gke_machine_type_change_prices_each_side_by_its_own_type_and_names_an_unknown_one() {
        let mut stack = local_stack(8);
        stack.resources[0].config =
            ResourceConfig::Cluster(gke("e2-highcpu-8", "us-central1-a", 3));
        let none = BTreeMap::new();
        let plan = plan_for(&stack, &Default::default());
        let snap = applied(&plan);
        stack.resources[0].config =
            ResourceConfig::Cluster(gke("n9-unknown-4", "us-central1-a", 3));
        let plan = plan_for(&stack, &snap);
        let cost = estimate(&plan, &book(&none)).unwrap();
        // 3 nodes × $0.198 and the cluster's $0.10 management fee.
        assert!((cost.before_per_hour() - 0.694).abs() < 1e-9);
        assert_eq!(cost.after_per_hour(), 0.0);
        assert_eq!(cost.unpriced(), vec![&addr(Kind::Cluster, "local")]);
        assert_eq!(
            cost.line(),
            "$0.694 → $0.00 per hour (−$0.694), without cluster.local \
             (no list price for n9-unknown-4 in us-central1-a): set `hourly_price`"
        );
        assert_eq!(cost.management_fee_source.as_deref(), Some("the fee"));
        let json = cost.to_json();
        assert_eq!(json["clusters"][0]["before"]["management_fee"], 0.10);
        assert_eq!(
            json["clusters"][0]["after"]["unpriced"],
            "no list price for n9-unknown-4 in us-central1-a"
        );
    }

    #[test]
    fn a_cluster_moved_to_a_region_without_prices_is_named_not_priced_as_the_old_one() {
        let mut stack = local_stack(8);
        stack.resources[0].config =
            ResourceConfig::Cluster(gke("e2-highcpu-8", "us-central1-a", 3));
        let plan = plan_for(&stack, &Default::default());
        let snap = applied(&plan);
        stack.resources[0].config =
            ResourceConfig::Cluster(gke("e2-highcpu-8", "mars-north1-a", 3));
        let plan = plan_for(&stack, &snap);
        let none = BTreeMap::new();
        let cost = estimate(&plan, &book(&none)).unwrap();
        assert!(
            cost.line()
                .ends_with("without cluster.local (no list price for e2-highcpu-8 in mars-north1-a): set `hourly_price`"),
            "{}",
            cost.line()
        );
        // The stack's hourly_price prices the declared (new) cluster, not the running one in
        // another region: that one keeps its list price.
        let declared = BTreeMap::from([(addr(Kind::Cluster, "local"), 0.3)]);
        let cost = estimate(&plan, &book(&declared)).unwrap();
        assert!((cost.before_per_hour() - 0.694).abs() < 1e-9);
        assert!((cost.after_per_hour() - 1.0).abs() < 1e-9);
        assert!(cost.unpriced().is_empty());
    }
}
