//! What a Compute Engine node costs per hour in its region, on demand, for the plan's cost and
//! the tuner's cost per million predictions; and GKE's cluster management fee.
//!
//! Compute Engine bills a predefined machine type by resource: its vCPUs × the family's price
//! per vCPU-hour plus its memory (GiB) × the family's price per GiB-hour, both set per region
//! (https://cloud.google.com/compute/docs/machine-types, "Billing": "you are billed for each
//! vCPU and GB of memory individually"; https://cloud.google.com/compute/vm-instance-pricing:
//! memory in GiB). So the table ([`table`]) holds those two prices per family and region, and a
//! node's price follows from its shape: the one the plan's preflight read from Compute Engine
//! (`MachineShapes`), else the built-in shapes (`capacity::table_machine_type`). A region is
//! never priced as another: without figures for the cluster's region there is no price.
//!
//! Source of the figures: the Cloud Billing Catalog API's Compute Engine SKUs (service
//! 6F81-5844-456A, e.g. "E2 Instance Core running in Americas" and "... Ram ..."), as exported
//! per machine type and region in
//! https://github.com/Cyclenerd/google-cloud-pricing-cost-calculator/blob/fd66b26ff84fee5cdd94f341ea89206e76c06b99/pricing.yml
//! ("generated: Thu Jul 30 06:13:17 2026"; its `hour` is the sum of the on-demand vCPU and RAM
//! SKU prices, `build/pricing.pl`). Google's own pricing page could not be read with its price
//! tables (the stored copies lack them), hence this export of Google's SKU catalog. Each
//! family's two prices were solved from two of its shapes of different memory ratio and then
//! checked against every other predefined standard/highcpu/highmem type of that family in that
//! region, all within $0.0000005 per hour (in us-central1: 14 E2 types, 22 N1, 29 N2, 31
//! N2D, 24 N4, 27 N4D, 21 C2D, 18 C3, 24 C3D, 33 C4, 30 C4D). C2 and T2D have one shape
//! (4 GiB per vCPU), so they are priced per vCPU of that shape only. The us-central1 figures
//! agree with a separate price book "retrieved 2026-09-25" (E2 $0.021811 and $0.002923, N2
//! $0.031611 and $0.004237, N2D $0.027502 and $0.003686, C3 $0.034650 and $0.003938). Per
//! machine, us-central1: e2-highcpu-8 $0.19788096, e2-standard-4 $0.13402284, n2-standard-4
//! $0.194236, n2-highcpu-8 $0.286784, c2-standard-8 $0.417616 (the tests check these).
//!
//! Not priced here, on purpose: shared-core types (e2-micro, e2-small, e2-medium, f1, g1:
//! billed as a fraction of a vCPU, not by the vCPUs Compute Engine reports), custom types
//! (billed with a premium), types with bundled local SSD or GPUs (`-lssd`, A2, G2, …), and spot
//! nodes (their prices change up to once every 30 days). No sustained- or committed-use
//! discount is applied: these are list prices.
//!
//! GKE's cluster management fee: "$0.10 per cluster per hour (charged in 1 second increments)
//! applies to all GKE clusters irrespective of the mode of operation, cluster size, or
//! topology"; "the GKE free tier provides $74.40 in monthly credits per billing account, which
//! is equivalent to one free Autopilot or zonal Standard cluster per month"
//! (https://cloud.google.com/kubernetes-engine/pricing, undated; read 2026-12-07). The plan
//! counts the fee for every gke cluster and does not subtract the free tier: one credit per
//! billing account cannot be placed on any one cluster of a stack.

mod table;

use super::capacity::{MachineShapes, MachineType};

/// The date the table's source shows.
pub const PRICES_AS_OF: &str = "2026-07-30";

/// Where the table's figures come from (an export of Google's Cloud Billing Catalog SKUs).
pub const PRICES_SOURCE: &str = "https://github.com/Cyclenerd/google-cloud-pricing-cost-calculator/blob/fd66b26ff84fee5cdd94f341ea89206e76c06b99/pricing.yml";

/// GKE's cluster management fee, USD per cluster-hour.
pub const GKE_MANAGEMENT_FEE: f64 = 0.10;

/// What the fee is and what is not subtracted, for the plan's footnote.
pub const GKE_FEE_SOURCE: &str = "GKE cluster management fee $0.10/h per cluster \
    (https://cloud.google.com/kubernetes-engine/pricing); the free tier's monthly credit \
    (one zonal or Autopilot cluster per billing account) is not subtracted";

/// The region of a GKE location: a zone (`us-central1-a`) is in its region (`us-central1`); a
/// region is itself.
pub fn region_of(location: &str) -> &str {
    match location.rsplit_once('-') {
        Some((region, zone))
            if zone.len() == 1
                && zone.bytes().all(|b| b.is_ascii_lowercase())
                && region.contains('-') =>
        {
            region
        }
        _ => location,
    }
}

/// A node's on-demand list price.
#[derive(Debug, Clone, PartialEq)]
pub struct ListPrice {
    /// USD per node-hour.
    pub per_hour: f64,
    /// How it was made: the machine type, region, shape and the family's prices, and the date.
    pub basis: String,
}

/// Why a node has no list price.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NoPrice {
    #[error("{0} is a shared-core machine type, billed as a fraction of a vCPU; not in the table")]
    SharedCore(String),
    #[error("{0} is not a predefined standard, highcpu or highmem machine type; not in the table")]
    NotPredefined(String),
    #[error("the shape of {0} is not known (the preflight reads it from Compute Engine)")]
    NoShape(String),
    #[error("no list price for {family} machine types in {region}")]
    Region { family: String, region: String },
    #[error("{0} has {1} MiB of memory per vCPU, a shape its family's one price does not cover")]
    Shape(String, u64),
    #[error("spot nodes have no list price (their prices change up to once every 30 days)")]
    Spot,
}

/// USD per vCPU-hour and per GiB-hour of a family in a region.
fn components(family: &str, region: &str) -> Option<(f64, f64)> {
    table::COMPONENTS
        .iter()
        .find(|(f, r, _, _)| *f == family && *r == region)
        .map(|(_, _, cpu, gib)| (*cpu, *gib))
}

/// USD per vCPU-hour (memory included) and GiB per vCPU of a one-shape family in a region.
fn per_vcpu(family: &str, region: &str) -> Option<(f64, f64)> {
    table::PER_VCPU
        .iter()
        .find(|(f, _, r, _)| *f == family && *r == region)
        .map(|(_, ratio, _, p)| (*p, *ratio))
}

fn known_family(family: &str) -> bool {
    table::COMPONENTS.iter().any(|(f, ..)| *f == family)
        || table::PER_VCPU.iter().any(|(f, ..)| *f == family)
}

/// The on-demand list price of one node of `machine_type` in `location` (a zone or region).
/// The shape is Compute Engine's (`shapes`, from the preflight) or the built-in one.
pub fn node_price(
    machine_type: &str,
    location: &str,
    shapes: &MachineShapes,
) -> Result<ListPrice, NoPrice> {
    let parts: Vec<&str> = machine_type.split('-').collect();
    let family = parts[0];
    if matches!(
        machine_type,
        "e2-micro" | "e2-small" | "e2-medium" | "f1-micro" | "g1-small"
    ) {
        return Err(NoPrice::SharedCore(machine_type.into()));
    }
    let predefined = parts.len() == 3
        && matches!(parts[1], "standard" | "highcpu" | "highmem")
        && !parts[2].is_empty()
        && parts[2].bytes().all(|b| b.is_ascii_digit());
    if !predefined {
        return Err(NoPrice::NotPredefined(machine_type.into()));
    }
    let region = region_of(location);
    if !known_family(family) {
        return Err(NoPrice::Region {
            family: family.to_uppercase(),
            region: region.into(),
        });
    }
    let MachineType {
        vcpus, memory_mib, ..
    } = shapes
        .machine_type(machine_type)
        .ok_or_else(|| NoPrice::NoShape(machine_type.into()))?;
    let gib = memory_mib as f64 / 1024.0;
    let dated = format!("on-demand list prices of {PRICES_AS_OF}, {PRICES_SOURCE}");
    if let Some((cpu, mem)) = components(family, region) {
        return Ok(ListPrice {
            per_hour: f64::from(vcpus) * cpu + gib * mem,
            basis: format!(
                "{machine_type} in {region}: {vcpus} vCPU × ${cpu} + {gib} GiB × ${mem} per hour, {dated}"
            ),
        });
    }
    if let Some((p, ratio)) = per_vcpu(family, region) {
        if (gib - f64::from(vcpus) * ratio).abs() > 1e-9 {
            return Err(NoPrice::Shape(
                machine_type.into(),
                memory_mib / u64::from(vcpus.max(1)),
            ));
        }
        return Ok(ListPrice {
            per_hour: f64::from(vcpus) * p,
            basis: format!(
                "{machine_type} in {region}: {vcpus} vCPU × ${p} per hour (with {ratio} GiB each), {dated}"
            ),
        });
    }
    Err(NoPrice::Region {
        family: family.to_uppercase(),
        region: region.into(),
    })
}

/// [`node_price`] for a cluster's nodes: none for spot nodes.
pub fn cluster_node_price(
    machine_type: &str,
    location: &str,
    spot: bool,
    shapes: &MachineShapes,
) -> Result<ListPrice, NoPrice> {
    if spot {
        return Err(NoPrice::Spot);
    }
    node_price(machine_type, location, shapes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(m: &str, location: &str) -> f64 {
        node_price(m, location, &MachineShapes::default())
            .unwrap_or_else(|e| panic!("{m} in {location}: {e}"))
            .per_hour
    }

    #[test]
    fn a_zone_is_priced_by_its_region() {
        assert_eq!(region_of("us-central1-a"), "us-central1");
        assert_eq!(region_of("europe-west4-c"), "europe-west4");
        assert_eq!(region_of("us-central1"), "us-central1");
        assert_eq!(
            region_of("northamerica-northeast1-b"),
            "northamerica-northeast1"
        );
        assert_eq!(
            price("e2-highcpu-8", "us-central1-a"),
            price("e2-highcpu-8", "us-central1")
        );
        assert_eq!(
            price("e2-highcpu-8", "us-central1-f"),
            price("e2-highcpu-8", "us-central1")
        );
    }

    /// The per-machine list prices of the source (module comment), within a cent and in fact
    /// within its rounding.
    #[test]
    fn components_give_the_published_machine_prices() {
        for (m, location, published) in [
            ("e2-highcpu-8", "us-central1-a", 0.19788096),
            ("e2-standard-4", "us-central1", 0.13402284),
            ("e2-highcpu-32", "us-central1-b", 0.79152384),
            ("n2-standard-4", "us-central1-c", 0.194236),
            ("n2-highcpu-8", "us-central1-a", 0.286784),
            ("n2d-highmem-4", "us-central1-a", 0.22796),
            ("c3-highcpu-8", "us-central1-a", 0.340208),
            ("c2-standard-8", "us-central1-a", 0.417616),
            ("n2-standard-4", "europe-west1-b", 0.213668),
            ("e2-standard-4", "europe-west1-b", 0.14743092),
            ("c2-standard-8", "europe-west1-b", 0.4594),
        ] {
            let p = price(m, location);
            assert!((p - published).abs() < 0.01, "{m} in {location}: {p}");
            assert!((p - published).abs() < 1e-6, "{m} in {location}: {p}");
        }
    }

    #[test]
    fn a_region_without_figures_is_not_priced_as_another() {
        let e = node_price("e2-highcpu-8", "mars-north1-a", &MachineShapes::default());
        assert_eq!(
            e,
            Err(NoPrice::Region {
                family: "E2".into(),
                region: "mars-north1".into()
            })
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "no list price for E2 machine types in mars-north1"
        );
        // A family the table lacks, anywhere.
        assert!(matches!(
            node_price("m3-megamem-64", "us-central1-a", &MachineShapes::default()),
            Err(NoPrice::NotPredefined(_))
        ));
        assert!(matches!(
            node_price("z9-standard-8", "us-central1-a", &MachineShapes::default()),
            Err(NoPrice::Region { .. })
        ));
    }

    #[test]
    fn a_shape_compute_engine_described_is_priced_by_components() {
        // n1 is not in the built-in shapes table: unpriced without the preflight…
        let none = MachineShapes::default();
        assert_eq!(
            node_price("n1-standard-4", "us-central1-a", &none),
            Err(NoPrice::NoShape("n1-standard-4".into()))
        );
        // …and priced from the shape Compute Engine described (4 vCPUs, 15 GiB).
        let shapes: MachineShapes = [MachineType {
            name: "n1-standard-4".into(),
            vcpus: 4,
            memory_mib: 15 * 1024,
        }]
        .into_iter()
        .collect();
        let p = node_price("n1-standard-4", "us-central1-a", &shapes).unwrap();
        // Published: n1-standard-4 in us-central1, $0.189999 (4 × 0.031611 + 15 × 0.004237).
        assert!((p.per_hour - 0.189999).abs() < 1e-9, "{}", p.per_hour);
        assert!(
            p.basis
                .contains("in us-central1: 4 vCPU × $0.031611 + 15 GiB × $0.004237")
        );
        assert!(p.basis.contains(PRICES_AS_OF), "{}", p.basis);
    }

    #[test]
    fn shared_core_custom_and_spot_nodes_have_no_list_price() {
        let none = MachineShapes::default();
        for m in ["e2-medium", "e2-micro", "g1-small"] {
            assert_eq!(
                node_price(m, "us-central1-a", &none),
                Err(NoPrice::SharedCore(m.into()))
            );
        }
        for m in [
            "n2-custom-4-8192",
            "c3-standard-4-lssd",
            "a2-highgpu-1g",
            "",
        ] {
            assert_eq!(
                node_price(m, "us-central1-a", &none),
                Err(NoPrice::NotPredefined(m.into()))
            );
        }
        assert_eq!(
            cluster_node_price("e2-highcpu-8", "us-central1-a", true, &none),
            Err(NoPrice::Spot)
        );
        // A one-shape family described with another shape.
        let odd: MachineShapes = [MachineType {
            name: "c2-standard-8".into(),
            vcpus: 8,
            memory_mib: 8 * 1024,
        }]
        .into_iter()
        .collect();
        assert!(matches!(
            node_price("c2-standard-8", "us-central1-a", &odd),
            Err(NoPrice::Shape(..))
        ));
    }

    #[test]
    fn every_figure_is_a_positive_price_once_per_family_and_region() {
        let mut seen = std::collections::BTreeSet::new();
        for (f, r, cpu, gib) in table::COMPONENTS {
            assert!(
                *cpu > 0.0 && *cpu < 1.0 && *gib > 0.0 && *gib < 0.1,
                "{f} {r}"
            );
            assert!(seen.insert((*f, *r)), "{f} {r} twice");
        }
        for (f, ratio, r, p) in table::PER_VCPU {
            assert!(*p > 0.0 && *p < 1.0 && *ratio > 0.0, "{f} {r}");
            assert!(seen.insert((*f, *r)), "{f} {r} twice");
        }
    }
}
