//! Will a serving resource's replicas fit its GKE cluster, and can one more (the rolling
//! update's surge pod) fit beside them? Computed before anything is created, from the machine
//! type's vCPUs and memory, GKE's allocatable reservation and the share GKE's own system pods
//! request, by placing the pods the way the scheduler would.
//!
//! Sources:
//! - Machine shapes: https://cloud.google.com/compute/docs/general-purpose-machines (E2, N2,
//!   N2D, C3) and https://cloud.google.com/compute/docs/compute-optimized-machines (C2);
//!   Compute Engine's "GB" of memory is GiB.
//! - Reservation: https://cloud.google.com/kubernetes-engine/docs/concepts/plan-node-sizes
//!   ("Memory and CPU reservations"): CPU 6% of the first core, 1% of the next, 0.5% of the
//!   next 2, 0.25% of any above 4; memory 255 MiB below 1 GiB, else 25% of the first 4 GiB,
//!   20% of the next 4, 10% of the next 8, 6% of the next 112, 2% above 128 GiB; plus a
//!   100 MiB eviction threshold.
//! - System pods: what `kubectl describe node` lists in kube-system on a GKE Standard node
//!   (kube-proxy 100m; fluentbit-gke 100m/200Mi; gke-metrics-agent 6m/100Mi; pdcsi-node
//!   10m/20Mi) and the cluster's add-on Deployments (kube-dns 260m/110Mi per replica, two
//!   replicas spread over nodes; metrics-server, kube-dns-autoscaler, konnectivity-agent,
//!   l7-default-backend), which land on some nodes and not others.

use std::collections::BTreeMap;
use std::fmt;

use crate::vocab::resources::{ClusterConfig, ServingConfig};

use super::k8s::{DEFAULT_CPU, DEFAULT_MEMORY};

const MIB: f64 = 1024.0 * 1024.0;

/// CPU in millicores and memory in MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu_m: u64,
    pub memory_mib: u64,
}

impl Resources {
    fn fits_in(&self, free: &Resources) -> bool {
        self.cpu_m <= free.cpu_m && self.memory_mib <= free.memory_mib
    }

    fn take_from(&self, free: &mut Resources) {
        free.cpu_m = free.cpu_m.saturating_sub(self.cpu_m);
        free.memory_mib = free.memory_mib.saturating_sub(self.memory_mib);
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} CPU and {}",
            cpu_text(self.cpu_m),
            mib_text(self.memory_mib)
        )
    }
}

fn cpu_text(m: u64) -> String {
    if m.is_multiple_of(1000) {
        format!("{}", m / 1000)
    } else {
        format!("{:.2}", m as f64 / 1000.0)
    }
}

fn mib_text(mib: u64) -> String {
    if mib >= 1024 {
        format!("{:.2} GiB", mib as f64 / 1024.0)
    } else {
        format!("{mib} MiB")
    }
}

/// What every node's kube-system DaemonSets request (kube-proxy, fluentbit-gke,
/// gke-metrics-agent, pdcsi-node).
pub const DAEMONSET_SHARE: Resources = Resources {
    cpu_m: 216,
    memory_mib: 320,
};

/// GKE's add-on Deployments: (name, requests per replica, replicas). kube-dns replicas are
/// spread over distinct nodes; the rest land wherever there is room.
pub const SYSTEM_DEPLOYMENTS: &[(&str, Resources, u32)] = &[
    (
        "kube-dns",
        Resources {
            cpu_m: 260,
            memory_mib: 110,
        },
        2,
    ),
    (
        "metrics-server",
        Resources {
            cpu_m: 48,
            memory_mib: 105,
        },
        1,
    ),
    (
        "kube-dns-autoscaler",
        Resources {
            cpu_m: 20,
            memory_mib: 10,
        },
        1,
    ),
    (
        "konnectivity-agent",
        Resources {
            cpu_m: 10,
            memory_mib: 30,
        },
        1,
    ),
    (
        "l7-default-backend",
        Resources {
            cpu_m: 10,
            memory_mib: 20,
        },
        1,
    ),
];

/// A Compute Engine machine type's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineType {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// Machine shapes Compute Engine described (the plan's preflight, `machineTypes.get`), by
/// name. They win over the built-in table, which stays the offline fallback. A machine type's
/// name means the same shape in every zone and project, so one map serves a whole stack. The
/// preflight returns them; `ops` hands them to the plan (`PlanOptions::machine_shapes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MachineShapes(BTreeMap<String, MachineType>);

impl MachineShapes {
    /// Records a shape Compute Engine reported.
    pub fn insert(&mut self, m: MachineType) {
        self.0.insert(m.name.clone(), m);
    }

    /// The shape of a machine type: as Compute Engine described it, else from the built-in
    /// table ([`table_machine_type`]).
    pub fn machine_type(&self, name: &str) -> Option<MachineType> {
        self.0
            .get(name)
            .cloned()
            .or_else(|| table_machine_type(name))
    }

    /// A shape Compute Engine described differently from the built-in table, or one the
    /// table lacks: a capacity check made without these shapes used none or another.
    pub fn differ_from_table(&self) -> bool {
        self.0
            .values()
            .any(|m| table_machine_type(&m.name).as_ref() != Some(m))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &MachineType> {
        self.0.values()
    }
}

impl FromIterator<MachineType> for MachineShapes {
    fn from_iter<I: IntoIterator<Item = MachineType>>(iter: I) -> Self {
        let mut shapes = MachineShapes::default();
        for m in iter {
            shapes.insert(m);
        }
        shapes
    }
}

/// The shape of a common GKE machine type (E2, N2, N2D, C2, C3 predefined types); None for
/// any other (shared-core, custom, other families), which the check then skips unless
/// Compute Engine described it.
pub fn table_machine_type(name: &str) -> Option<MachineType> {
    let mut parts = name.split('-');
    let (family, class, size) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let vcpus: u32 = size.parse().ok()?;
    // (GiB per vCPU, the sizes the family offers in that class).
    let (gib_per_vcpu, sizes): (f64, &[u32]) = match (family, class) {
        ("e2", "standard") => (4.0, &[2, 4, 8, 16, 32]),
        ("e2", "highcpu") => (1.0, &[2, 4, 8, 16, 32]),
        ("e2", "highmem") => (8.0, &[2, 4, 8, 16]),
        ("n2", "standard") => (4.0, &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128]),
        ("n2", "highcpu") => (1.0, &[2, 4, 8, 16, 32, 48, 64, 80, 96]),
        ("n2", "highmem") => (8.0, &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128]),
        ("n2d", "standard") => (4.0, &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224]),
        ("n2d", "highcpu") => (1.0, &[2, 4, 8, 16, 32, 48, 64, 80, 96, 128, 224]),
        ("n2d", "highmem") => (8.0, &[2, 4, 8, 16, 32, 48, 64, 80, 96]),
        ("c2", "standard") => (4.0, &[4, 8, 16, 30, 60]),
        ("c3", "standard") => (4.0, &[4, 8, 22, 44, 88, 176]),
        ("c3", "highcpu") => (2.0, &[4, 8, 22, 44, 88, 176]),
        ("c3", "highmem") => (8.0, &[4, 8, 22, 44, 88, 176]),
        _ => return None,
    };
    if !sizes.contains(&vcpus) {
        return None;
    }
    Some(MachineType {
        name: name.to_string(),
        vcpus,
        memory_mib: (f64::from(vcpus) * gib_per_vcpu * 1024.0) as u64,
    })
}

/// What GKE leaves allocatable to pods on a node of this shape (the reservation table and the
/// eviction threshold, see the module comment).
pub fn allocatable(m: &MachineType) -> Resources {
    // CPU: marginal rates per core band, in millicores per core.
    let cores = f64::from(m.vcpus);
    let band = |from: f64, to: f64| (cores.min(to) - from).max(0.0);
    let reserved_cpu = 1000.0
        * (0.06 * band(0.0, 1.0)
            + 0.01 * band(1.0, 2.0)
            + 0.005 * band(2.0, 4.0)
            + 0.0025 * band(4.0, f64::INFINITY));
    let gib = m.memory_mib as f64 / 1024.0;
    let gband = |from: f64, to: f64| (gib.min(to) - from).max(0.0);
    let reserved_mem_mib = if gib < 1.0 {
        255.0
    } else {
        1024.0
            * (0.25 * gband(0.0, 4.0)
                + 0.20 * gband(4.0, 8.0)
                + 0.10 * gband(8.0, 16.0)
                + 0.06 * gband(16.0, 128.0)
                + 0.02 * gband(128.0, f64::INFINITY))
    };
    let eviction_mib = 100.0;
    Resources {
        cpu_m: (f64::from(m.vcpus) * 1000.0 - reserved_cpu).floor() as u64,
        memory_mib: (m.memory_mib as f64 - reserved_mem_mib - eviction_mib).floor() as u64,
    }
}

/// Millicores of a CPU quantity (`7`, `7500m`, `0.5`).
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    let (num, scale) = match q.strip_suffix('m') {
        Some(n) => (n, 1.0),
        None => (q, 1000.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v > 0.0).then(|| (v * scale).ceil() as u64)
}

/// MiB (rounded up) of a memory quantity (`4Gi`, `512Mi`, `4G`, `1000000000`).
pub fn memory_mib(q: &str) -> Option<u64> {
    let q = q.trim();
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", MIB),
        ("Gi", 1024.0 * MIB),
        ("Ti", 1024.0 * 1024.0 * MIB),
        ("Pi", 1024.0 * 1024.0 * 1024.0 * MIB),
        ("Ei", 1024.0 * 1024.0 * 1024.0 * 1024.0 * MIB),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let (num, scale) = SUFFIXES
        .iter()
        .find_map(|(s, f)| q.strip_suffix(s).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v > 0.0).then(|| ((v * scale) / MIB).ceil() as u64)
}

/// How a Deployment replaces its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollout {
    /// `maxSurge 1, maxUnavailable 0`: a new pod first, then an old one goes.
    Surge,
    /// `maxSurge 0, maxUnavailable 1`: an old pod goes first (one replica fewer serves while
    /// its successor starts), for nodes that have no room for an extra pod.
    OneAtATime,
}

/// What the capacity check found.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The replicas fit; `rollout` is how to update them, and `note` says why when it is not
    /// the default surge.
    Fits {
        rollout: Rollout,
        note: Option<String>,
    },
    /// The check could not be made (an unknown machine type): a plan warning.
    Unknown(String),
    /// The replicas cannot all run: a plan error.
    DoesNotFit(String),
}

/// How many nodes a GKE node pool of `node_count` has: per zone, and a regional location
/// (`us-central1`, no zone suffix) spreads the pool over three zones by default.
pub fn node_total(cluster: &ClusterConfig) -> u32 {
    let regional = cluster
        .location
        .as_deref()
        .is_some_and(|l| l.matches('-').count() == 1);
    if regional {
        cluster.node_count.saturating_mul(3)
    } else {
        cluster.node_count
    }
}

/// Places `count` pods of `pod` on `free` nodes the way the default scheduler scores them
/// (least allocated first); returns how many were placed.
fn place(free: &mut [Resources], pod: Resources, count: u32, spread: bool) -> u32 {
    let mut placed = 0;
    let mut used: Vec<usize> = Vec::new();
    for _ in 0..count {
        let best = free
            .iter()
            .enumerate()
            .filter(|(i, f)| pod.fits_in(f) && !(spread && used.contains(i)))
            .max_by_key(|(i, f)| (f.cpu_m, f.memory_mib, usize::MAX - i))
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                pod.take_from(&mut free[i]);
                used.push(i);
                placed += 1;
            }
            None => break,
        }
    }
    placed
}

/// The check for a serving resource on a GKE cluster, with the machine shapes Compute Engine
/// described (empty: the built-in table alone).
pub fn check(cluster: &ClusterConfig, serving: &ServingConfig, shapes: &MachineShapes) -> Verdict {
    let Some(name) = cluster.machine_type.as_deref() else {
        return Verdict::Unknown(
            "the cluster names no machine_type, so the replicas' fit on its nodes is not checked"
                .into(),
        );
    };
    let Some(m) = shapes.machine_type(name) else {
        return Verdict::Unknown(format!(
            "machine type {name} is not in benchstack's table (E2, N2, N2D, C2, C3 predefined \
             types) and Compute Engine was not asked (plan's preflight), so the replicas' fit \
             on its nodes is not checked"
        ));
    };
    let cpu = serving.cpu.as_deref().unwrap_or(DEFAULT_CPU);
    let memory = serving.memory.as_deref().unwrap_or(DEFAULT_MEMORY);
    let (Some(cpu_m), Some(mem)) = (cpu_millis(cpu), memory_mib(memory)) else {
        return Verdict::Unknown(format!(
            "cannot read the requests cpu = {cpu:?}, memory = {memory:?}; the fit is not checked"
        ));
    };
    let pod = Resources {
        cpu_m,
        memory_mib: mem,
    };
    let nodes = node_total(cluster);
    let alloc = allocatable(&m);
    let mut free: Vec<Resources> = (0..nodes)
        .map(|_| Resources {
            cpu_m: alloc.cpu_m.saturating_sub(DAEMONSET_SHARE.cpu_m),
            memory_mib: alloc.memory_mib.saturating_sub(DAEMONSET_SHARE.memory_mib),
        })
        .collect();
    for (dep, req, replicas) in SYSTEM_DEPLOYMENTS {
        place(&mut free, *req, *replicas, *dep == "kube-dns");
    }
    let replicas = serving.replicas;
    let placed = place(&mut free, pod, replicas, false);
    let shape = format!(
        "{nodes} × {name} (each {} allocatable after GKE's reservation, of which its system \
         pods request {} on every node, plus kube-dns and metrics-server on some)",
        alloc, DAEMONSET_SHARE
    );
    let (asking, fit) = if replicas == 1 {
        (format!("1 replica requesting {pod}"), "does not fit")
    } else {
        (
            format!("{replicas} replicas requesting {pod} each"),
            "do not fit",
        )
    };
    if placed < replicas {
        return Verdict::DoesNotFit(format!(
            "{asking} {fit} on {shape}: only {placed} \
             would be scheduled and the rest would stay Pending (Insufficient {}). Lower `cpu` \
             or `memory`, run fewer `replicas`, or give the cluster more or larger nodes",
            insufficient(&free, pod)
        ));
    }
    if place(&mut free.clone(), pod, 1, false) == 1 {
        Verdict::Fits {
            rollout: Rollout::Surge,
            note: None,
        }
    } else {
        Verdict::Fits {
            rollout: Rollout::OneAtATime,
            note: Some(format!(
                "updates roll one replica at a time (maxSurge 0, maxUnavailable 1): the \
                 {asking} fit{} on {shape}, but a surge pod \
                 beside {} would not (Insufficient {}), so during a rollout {} of {replicas} \
                 serve",
                if replicas == 1 { "s" } else { "" },
                if replicas == 1 { "it" } else { "them" },
                insufficient(&free, pod),
                replicas.saturating_sub(1)
            )),
        }
    }
}

/// Which of cpu and memory is short everywhere (as the scheduler's message names them).
fn insufficient(free: &[Resources], pod: Resources) -> &'static str {
    let cpu = free.iter().all(|f| f.cpu_m < pod.cpu_m);
    let mem = free.iter().all(|f| f.memory_mib < pod.memory_mib);
    match (cpu, mem) {
        (true, true) => "cpu and memory",
        (false, true) => "memory",
        _ => "cpu",
    }
}

/// The rollout a serving resource's Deployment uses on this cluster: surge unless the check
/// found no room for a surge pod.
pub fn rollout_for(
    cluster: Option<&ClusterConfig>,
    serving: &ServingConfig,
    shapes: &MachineShapes,
) -> Rollout {
    match cluster.map(|c| check(c, serving, shapes)) {
        Some(Verdict::Fits { rollout, .. }) => rollout,
        _ => Rollout::Surge,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::{Address, Kind, ProviderKind};

    fn cluster(machine: &str, nodes: u32) -> ClusterConfig {
        ClusterConfig {
            provider: ProviderKind::Gke,
            project: Some("p".into()),
            location: Some("us-central1-a".into()),
            machine_type: Some(machine.into()),
            node_count: nodes,
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

    fn serving(replicas: u32, cpu: &str, memory: &str) -> ServingConfig {
        ServingConfig {
            cluster: Address {
                kind: Kind::Cluster,
                name: "serving".into(),
                key: None,
            },
            image: Some("img".into()),
            image_from: None,
            replicas,
            models: vec![],
            flags: BTreeMap::new(),
            batching: None,
            cpu: Some(cpu.into()),
            memory: Some(memory.into()),
        }
    }

    #[test]
    fn machine_shapes_come_from_the_family_tables() {
        let m = table_machine_type("e2-highcpu-8").unwrap();
        assert_eq!((m.vcpus, m.memory_mib), (8, 8192));
        assert_eq!(
            table_machine_type("n2-standard-4").unwrap().memory_mib,
            16384
        );
        assert_eq!(
            table_machine_type("c3-highcpu-22").unwrap().memory_mib,
            44 * 1024
        );
        assert_eq!(table_machine_type("c2-standard-30").unwrap().vcpus, 30);
        assert_eq!(table_machine_type("e2-medium"), None);
        assert_eq!(table_machine_type("e2-highcpu-7"), None);
        assert_eq!(table_machine_type("a2-highgpu-1g"), None);
    }

    #[test]
    fn allocatable_follows_gkes_reservation_table() {
        // 8 cores: 60 + 10 + 2×5 + 4×2.5 = 90m reserved; 8 GiB: 1024 + 819.2 MiB + 100 MiB.
        let a = allocatable(&table_machine_type("e2-highcpu-8").unwrap());
        assert_eq!(a.cpu_m, 7910);
        assert_eq!(a.memory_mib, 6248);
        // 4 cores / 16 GiB: 80m; 1024 + 819.2 + 819.2 + 100 MiB.
        let a = allocatable(&table_machine_type("e2-standard-4").unwrap());
        assert_eq!(a.cpu_m, 3920);
        assert_eq!(a.memory_mib, 13621);
    }

    #[test]
    fn quantities_are_read_as_kubernetes_writes_them() {
        assert_eq!(cpu_millis("7"), Some(7000));
        assert_eq!(cpu_millis("7500m"), Some(7500));
        assert_eq!(cpu_millis("0.5"), Some(500));
        assert_eq!(cpu_millis("x"), None);
        assert_eq!(memory_mib("4Gi"), Some(4096));
        assert_eq!(memory_mib("512Mi"), Some(512));
        assert_eq!(memory_mib("1G"), Some(954));
        assert_eq!(memory_mib("-1"), None);
    }

    #[test]
    fn seven_cpus_on_e2_highcpu_8_fit_but_leave_no_room_for_a_surge_pod() {
        match check(
            &cluster("e2-highcpu-8", 3),
            &serving(3, "7", "4Gi"),
            &MachineShapes::default(),
        ) {
            Verdict::Fits {
                rollout: Rollout::OneAtATime,
                note: Some(n),
            } => {
                assert!(n.contains("maxSurge 0, maxUnavailable 1"), "{n}");
                assert!(n.contains("Insufficient cpu and memory"), "{n}");
            }
            other => panic!("expected a one-at-a-time rollout, got {other:?}"),
        }
    }

    #[test]
    fn small_replicas_roll_with_a_surge_pod() {
        assert_eq!(
            check(
                &cluster("e2-highcpu-8", 3),
                &serving(3, "2", "1Gi"),
                &MachineShapes::default()
            ),
            Verdict::Fits {
                rollout: Rollout::Surge,
                note: None
            }
        );
    }

    #[test]
    fn more_replicas_than_the_nodes_hold_do_not_fit() {
        match check(
            &cluster("e2-highcpu-8", 3),
            &serving(4, "7", "4Gi"),
            &MachineShapes::default(),
        ) {
            Verdict::DoesNotFit(m) => {
                assert!(m.contains("only 3 would be scheduled"), "{m}");
                assert!(m.contains("3 × e2-highcpu-8"), "{m}");
            }
            other => panic!("expected DoesNotFit, got {other:?}"),
        }
        match check(
            &cluster("e2-highcpu-8", 3),
            &serving(1, "8", "1Gi"),
            &MachineShapes::default(),
        ) {
            Verdict::DoesNotFit(m) => assert!(m.contains("Insufficient cpu"), "{m}"),
            other => panic!("expected DoesNotFit, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_machine_type_skips_the_check() {
        assert!(matches!(
            check(
                &cluster("e2-medium", 3),
                &serving(3, "1", "1Gi"),
                &MachineShapes::default()
            ),
            Verdict::Unknown(_)
        ));
    }

    #[test]
    fn a_shape_compute_engine_described_is_used_where_the_table_has_none() {
        let name = "e2-medium";
        let none = MachineShapes::default();
        assert!(matches!(
            check(&cluster(name, 3), &serving(3, "1", "1Gi"), &none),
            Verdict::Unknown(_)
        ));
        let described: MachineShapes = [MachineType {
            name: name.into(),
            vcpus: 2,
            memory_mib: 4096,
        }]
        .into_iter()
        .collect();
        assert!(described.differ_from_table());
        assert!(matches!(
            check(&cluster(name, 3), &serving(3, "1", "1Gi"), &described),
            Verdict::Fits { .. }
        ));
        assert!(matches!(
            check(&cluster(name, 3), &serving(3, "3", "1Gi"), &described),
            Verdict::DoesNotFit(_)
        ));
    }

    #[test]
    fn compute_engines_shape_wins_over_the_table() {
        // The table says 8 vCPUs; a shape Compute Engine described otherwise is the one used.
        let shapes: MachineShapes = [MachineType {
            name: "e2-highcpu-8".into(),
            vcpus: 2,
            memory_mib: 2048,
        }]
        .into_iter()
        .collect();
        assert!(shapes.differ_from_table());
        assert_eq!(shapes.machine_type("e2-highcpu-8").unwrap().vcpus, 2);
        assert!(matches!(
            check(
                &cluster("e2-highcpu-8", 3),
                &serving(3, "2", "1Gi"),
                &shapes
            ),
            Verdict::DoesNotFit(_)
        ));
        let same: MachineShapes = table_machine_type("e2-highcpu-8").into_iter().collect();
        assert!(!same.differ_from_table());
    }

    #[test]
    fn a_regional_pool_has_nodes_in_three_zones() {
        let mut c = cluster("e2-highcpu-8", 1);
        c.location = Some("us-central1".into());
        assert_eq!(node_total(&c), 3);
    }
}
