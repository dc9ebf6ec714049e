//! The stack language's schema, declared once: every block kind, its attributes (name, type,
//! range or allowed values, default, whether a change updates in place or forces
//! replacement, documentation) and its nested blocks.
//!
//! Everything else comes from here: the loader's list of allowed attributes and blocks, its
//! "expected …" messages, ranges and defaults (`stack::load`), the plan's replacement rule
//! ([`forces_replacement`]) and the reference page `docs/stack-language.md`
//! ([`reference_markdown`]; `tests/stack_docs.rs` fails when the committed page differs).
//!
//! Adding a block kind: declare its [`BlockSchema`], list it in [`BLOCKS`], and write its
//! decoder (one file under `stack/load/`, one arm in the loader's dispatch).

use std::fmt::Write as _;

use crate::vocab::limits::{
    MAX_BATCH_SIZE, MAX_BATCH_TIMEOUT_MICROS, MAX_CONNECTIONS, MAX_ENQUEUED_BATCHES, MAX_THREADS,
};
use crate::vocab::load::MAX_RATE;
use crate::vocab::load::MAX_STAGES;

/// What a change to an attribute does to the resource that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The resource is updated where it stands (a node pool resize, a rolling update).
    InPlace,
    /// The resource is deleted and created again.
    Replace,
    /// The load test runs again (a load test has no live resource to update).
    Rerun,
    /// Not part of an instance's configuration: `for_each` adds or removes instances,
    /// `depends_on` orders them.
    Meta,
    /// Not a resource (variables and outputs).
    Unmanaged,
}

impl Change {
    fn describe(self) -> &'static str {
        match self {
            Change::InPlace => "update in place",
            Change::Replace => "**forces replacement**",
            Change::Rerun => "re-run",
            Change::Meta => "instances / order",
            Change::Unmanaged => "—",
        }
    }
}

/// Whether an attribute must be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Optional,
    Required,
    /// Required when the resource is on a `gke` cluster; optional (and unused) on `local`.
    RequiredOnGke,
    /// Only with `provider = "gke"`, and required there.
    GkeRequired,
    /// Only with `provider = "gke"`, optional there.
    GkeOnly,
}

impl Presence {
    fn describe(self) -> &'static str {
        match self {
            Presence::Optional => "optional",
            Presence::Required => "required",
            Presence::RequiredOnGke => "required on gke",
            Presence::GkeRequired => "required, gke only",
            Presence::GkeOnly => "optional, gke only",
        }
    }

    /// Allowed only on a gke cluster.
    pub fn gke_only(self) -> bool {
        matches!(self, Presence::GkeRequired | Presence::GkeOnly)
    }
}

/// The type and range of an attribute's value. `expected()` is the text of the loader's
/// "found …, expected …" message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Type {
    String,
    Bool,
    /// A whole number from `min` to `max`.
    Uint {
        min: u64,
        max: u64,
    },
    /// One of these strings.
    Enum(&'static [&'static str]),
    /// One of these strings, each with what it means (said in "expected …").
    Choice(&'static [(&'static str, &'static str)]),
    /// A duration with a unit (`"500ms"`, `"60s"`), at most 366 days; `nonzero`: greater than 0.
    Duration {
        nonzero: bool,
    },
    /// Requests per second greater than 0 and at most `MAX_RATE`, or `"max"`.
    Rate,
    /// Requests per second greater than 0 and at most `MAX_RATE` (no `"max"`).
    PerSecond,
    /// A number from `min` to `max` (`f64::INFINITY`: no upper bound).
    Number {
        min: f64,
        max: f64,
    },
    /// A duration from `min` to `max`, both written as durations (`"100ms"`, `"1h"`).
    DurationBetween {
        min: &'static str,
        max: &'static str,
    },
    /// A tune's search space: serving attributes in dotted form to lists of values.
    Space,
    /// An error rate: `"0.1%"`, between 0% and 100%.
    ErrorRate,
    /// A Kubernetes quantity (`"7"`, `"7500m"`, `"4Gi"`); the text is what was expected.
    Quantity(&'static str),
    /// A reference to a resource of this kind (`cluster.NAME`).
    Ref(&'static str),
    /// A non-empty list of references to resources of this kind.
    RefList(&'static str),
    /// A non-empty, strictly increasing list of whole numbers from `min` to `max`.
    UintList {
        min: u64,
        max: u64,
    },
    /// A path relative to the stack file's directory: a directory or a file.
    Path {
        dir: bool,
    },
    /// A name of letters, digits, `_` and `-`.
    Name,
    /// A map of GKE labels.
    Labels,
    /// A map of strings (build args).
    StringMap,
    /// An image reference string, or a reference to an `image` block.
    ImageRef,
    /// A container image name in a repository (lowercase path components).
    ImageName,
    /// A map of TF Serving flags with scalar values.
    Flags,
    /// A TF Serving JSON predict body.
    JsonBody,
    /// A model name or a reference to a model.
    ModelName,
    /// An absolute path in the serving image or a `gs://` URL.
    ServingPath,
    /// A map, a set of strings or a resource with for_each.
    ForEach,
    /// A list of resource references.
    RefListAny,
    /// A variable type expression (`string`, `number`, `list(string)`, …).
    TypeExpr,
    /// Any value (variables' defaults, outputs' values).
    Any,
}

impl Type {
    /// What the loader says was expected when a value does not fit.
    pub fn expected(&self) -> String {
        match self {
            Type::String => "a string".into(),
            Type::Bool => "true or false".into(),
            Type::Uint { min, max } => {
                if *max >= u64::from(u32::MAX) {
                    format!("a whole number of at least {min}")
                } else {
                    format!("a whole number from {min} to {max}")
                }
            }
            Type::Enum(values) => quoted_choice(values),
            Type::Choice(values) => join_or(
                values
                    .iter()
                    .map(|(v, meaning)| format!("\"{v}\" ({meaning})"))
                    .collect(),
            ),
            Type::Duration { nonzero: false } => {
                "a duration with a unit, e.g. \"500ms\", \"60s\", \"2m\"".into()
            }
            Type::Duration { nonzero: true } => {
                "a duration greater than zero with a unit, e.g. \"500ms\", \"60s\", \"2m\"".into()
            }
            Type::Rate => format!(
                "a number of requests per second greater than 0 and at most {MAX_RATE}, or \"max\""
            ),
            Type::ErrorRate => {
                "a percentage of failed requests between 0% and 100%, such as \"0.1%\"".into()
            }
            Type::PerSecond => format!(
                "a rate in requests per second greater than 0 and at most {MAX_RATE}"
            ),
            Type::Number { min, max } if max.is_infinite() => format!("a number of at least {min}"),
            Type::Number { min, max } => format!("a number from {min} to {max}"),
            Type::DurationBetween { min, max } => format!("a duration from {min} to {max}"),
            Type::Space => "an object of serving attributes to lists of values, such as { \"batching.max_batch_size\" = [8, 32] }".into(),
            Type::Quantity(expected) => (*expected).into(),
            Type::Ref(kind) => format!("a reference to {} such as {kind}.NAME", article(kind)),
            Type::RefList(kind) => format!("a non-empty list such as [{kind}.NAME]"),
            Type::UintList { min, max } => format!(
                "a non-empty, strictly increasing list of whole numbers from {min} to {max}"
            ),
            Type::Path { dir: true } => "a path to a directory".into(),
            Type::Path { dir: false } => "a path to a file".into(),
            Type::Name => "a name of letters, digits, `_` and `-`".into(),
            Type::Labels => "a map of GKE labels: keys and values of lowercase letters, digits, `_` and `-`, at most 63 characters, keys starting with a letter".into(),
            Type::StringMap => "a map of strings, e.g. { VERSION = \"2.19.0\" }".into(),
            Type::ImageRef => {
                "an image reference such as \"REGISTRY/NAME:TAG\", or a reference to an image block such as image.NAME".into()
            }
            Type::ImageName => "an image name of lowercase letters, digits, `.`, `_`, `-` and `/`, such as \"benchstack\"".into(),
            Type::Flags => {
                "a map of TF Serving flags, e.g. { tensorflow_intra_op_parallelism = 4 }".into()
            }
            Type::JsonBody => {
                "a TF Serving predict body such as {\"instances\": [[…]]}".into()
            }
            Type::ModelName => "a model name or a reference such as model.NAME".into(),
            Type::ServingPath => {
                "an absolute path in the serving image (\"/models/NAME\") or a \"gs://…\" URL"
                    .into()
            }
            Type::ForEach => {
                "a map, a set of strings, or a resource with for_each (e.g. serving.tf)".into()
            }
            Type::RefListAny => "a list of resource references such as [serving.tf]".into(),
            Type::TypeExpr => {
                "string, number, bool, any, list(T), set(T), map(T) or object({…})".into()
            }
            Type::Any => "a value".into(),
        }
    }

    /// The type column of the reference page.
    fn describe(&self) -> String {
        match self {
            Type::String => "string".into(),
            Type::Bool => "bool".into(),
            Type::Uint { min, max } if *max >= u64::from(u32::MAX) => {
                format!("whole number ≥ {min}")
            }
            Type::Uint { min, max } => format!("whole number, {min} to {max}"),
            Type::Choice(values) => values
                .iter()
                .map(|(v, _)| format!("`\"{v}\"`"))
                .collect::<Vec<_>>()
                .join(" or "),
            Type::Enum(values) => values
                .iter()
                .map(|v| format!("`\"{v}\"`"))
                .collect::<Vec<_>>()
                .join(" or "),
            Type::Duration { nonzero: false } => "duration (`\"500ms\"`, `\"60s\"`)".into(),
            Type::Duration { nonzero: true } => "duration > 0 (`\"500ms\"`, `\"60s\"`)".into(),
            Type::Rate => format!("number > 0 and ≤ {MAX_RATE} (requests/s), or `\"max\"`"),
            Type::ErrorRate => "percentage (`\"0.1%\"`), 0% to 100%".into(),
            Type::PerSecond => format!("number > 0 and ≤ {MAX_RATE} (requests/s)"),
            Type::Number { min, max } if max.is_infinite() => format!("number ≥ {min}"),
            Type::Number { min, max } => format!("number, {min} to {max}"),
            Type::DurationBetween { min, max } => {
                format!("duration, `\"{min}\"` to `\"{max}\"`")
            }
            Type::Space => "map of `\"ATTRIBUTE\"` to a list of values".into(),
            Type::Quantity(_) => "Kubernetes quantity (string or number)".into(),
            Type::Ref(kind) => format!("reference: `{kind}.NAME`"),
            Type::RefList(kind) => format!("non-empty list of `{kind}.NAME`"),
            Type::UintList { min, max } => {
                format!("strictly increasing list of whole numbers, {min} to {max}")
            }
            Type::Path { dir: true } => "path (directory)".into(),
            Type::Path { dir: false } => "path (file)".into(),
            Type::Name => "name (letters, digits, `_`, `-`)".into(),
            Type::Labels => "map of strings (GKE labels)".into(),
            Type::Flags => "map of bool, number or string".into(),
            Type::StringMap => "map of strings".into(),
            Type::ImageRef => "string, or reference: `image.NAME`".into(),
            Type::ImageName => "image name (lowercase, `/`-separated)".into(),
            Type::JsonBody => "string (JSON predict body)".into(),
            Type::ModelName => "string, or reference: `model.NAME`".into(),
            Type::ServingPath => "string (`/path` or `gs://…`)".into(),
            Type::ForEach => "map, set of strings, or a resource with for_each".into(),
            Type::RefListAny => "list of references".into(),
            Type::TypeExpr => "type expression".into(),
            Type::Any => "any".into(),
        }
    }
}

fn quoted_choice(values: &[&str]) -> String {
    join_or(values.iter().map(|v| format!("\"{v}\"")).collect())
}

/// `a`, `a or b`, `a, b or c`.
fn join_or(items: Vec<String>) -> String {
    match items.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// "a cluster", "a serving resource", … for a block kind.
pub fn article(kind: &str) -> &'static str {
    match kind {
        "cluster" => "a cluster",
        "model" => "a model",
        "serving" => "a serving resource",
        "loadtest" => "a loadtest",
        "image" => "an image",
        _ => "a resource",
    }
}

/// An attribute's default when it is not written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DefaultValue {
    /// None: the attribute is required, or absent means "not set".
    None,
    Uint(u64),
    Number(f64),
    Bool(bool),
    /// One of an `Enum`'s values.
    Str(&'static str),
    /// A duration of this many seconds.
    Secs(u64),
    /// An empty map.
    EmptyMap,
    /// Worked out by the loader from the rest of the stack; the text says how.
    Derived(&'static str),
}

impl DefaultValue {
    fn describe(&self) -> String {
        match self {
            DefaultValue::None => "—".into(),
            DefaultValue::Uint(n) => format!("`{n}`"),
            DefaultValue::Number(n) => format!("`{n}`"),
            DefaultValue::Bool(b) => format!("`{b}`"),
            DefaultValue::Str(s) => format!("`\"{s}\"`"),
            DefaultValue::Secs(s) => format!("`\"{s}s\"`"),
            DefaultValue::EmptyMap => "`{}`".into(),
            DefaultValue::Derived(text) => (*text).into(),
        }
    }
}

/// One attribute of a block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attr {
    pub name: &'static str,
    pub ty: Type,
    pub presence: Presence,
    pub default: DefaultValue,
    pub change: Change,
    /// The value shown in "expected `NAME = EXAMPLE`" and in the reference page.
    pub example: &'static str,
    pub doc: &'static str,
}

impl Attr {
    /// The declared default of a whole-number attribute.
    pub fn default_uint(&self) -> Option<u64> {
        match self.default {
            DefaultValue::Uint(n) => Some(n),
            _ => None,
        }
    }

    /// How the attribute is written, for "found … without `NAME`, expected …":
    /// `` `rate = 300` (requests per second) or `rate = "max"` ``.
    pub fn written(&self) -> String {
        let (n, ex) = (self.name, self.example);
        match self.ty {
            Type::Rate => format!("`{n} = {ex}` (requests per second) or `{n} = \"max\"`"),
            Type::Any => format!("`{n} = {ex}` or a known value"),
            _ => format!("`{n} = {ex}`"),
        }
    }

    /// The declared default of a number attribute (a whole-number default counts too).
    pub fn default_number(&self) -> Option<f64> {
        match self.default {
            DefaultValue::Number(n) => Some(n),
            DefaultValue::Uint(n) => Some(n as f64),
            _ => None,
        }
    }

    /// The declared default of a duration attribute.
    pub fn default_duration(&self) -> Option<std::time::Duration> {
        match self.default {
            DefaultValue::Secs(s) => Some(std::time::Duration::from_secs(s)),
            _ => None,
        }
    }

    /// The declared default of an enum attribute.
    pub fn default_str(&self) -> Option<&'static str> {
        match self.default {
            DefaultValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// A block nested in another (`batching` in `serving`, `stage` in `loadtest`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nested {
    pub schema: &'static BlockSchema,
    pub min: usize,
    pub max: usize,
}

/// One block kind.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockSchema {
    pub name: &'static str,
    /// `Some("NAME")` for a top-level block with one label; nested blocks have none.
    pub label: Option<&'static str>,
    /// A resource (has an address, `for_each` and `depends_on`).
    pub resource: bool,
    pub doc: &'static str,
    pub attrs: &'static [Attr],
    pub blocks: &'static [Nested],
    /// Attributes whose names follow a pattern (`p99` in `slo`): documented, checked by the
    /// block's decoder.
    pub patterns: &'static [Attr],
    /// Attributes a provider reports after apply (`serving.NAME.rest_endpoint`).
    pub computed: &'static [(&'static str, &'static str)],
    /// A complete example, plain HCL.
    pub example: &'static str,
}

impl BlockSchema {
    /// Every attribute name allowed in the block, meta-arguments included.
    pub fn attr_names(&self) -> Vec<&'static str> {
        self.all_attrs().map(|a| a.name).collect()
    }

    pub fn block_names(&self) -> Vec<&'static str> {
        self.blocks.iter().map(|b| b.schema.name).collect()
    }

    /// The block's own attributes, then `for_each` and `depends_on` for a resource.
    pub fn all_attrs(&self) -> impl Iterator<Item = &'static Attr> + use<> {
        let own: &'static [Attr] = self.attrs;
        let meta: &'static [Attr] = if self.resource { META } else { &[] };
        own.iter().chain(meta.iter())
    }

    /// The attribute `name`, if declared (for names that come from outside the code).
    pub fn get(&self, name: &str) -> Option<&'static Attr> {
        self.all_attrs().find(|a| a.name == name)
    }

    /// The attribute `name`. Panics on a name that is not declared: a programming error
    /// caught by the loader's tests, never by user input.
    pub fn attr(&self, name: &str) -> &'static Attr {
        self.all_attrs()
            .find(|a| a.name == name)
            .unwrap_or_else(|| panic!("{}.{name} is not declared in stack::schema", self.name))
    }

    pub fn nested(&self, name: &str) -> Option<&'static Nested> {
        let blocks: &'static [Nested] = self.blocks;
        blocks.iter().find(|b| b.schema.name == name)
    }
}

const fn attr(
    name: &'static str,
    ty: Type,
    presence: Presence,
    default: DefaultValue,
    change: Change,
    example: &'static str,
    doc: &'static str,
) -> Attr {
    Attr {
        name,
        ty,
        presence,
        default,
        change,
        example,
        doc,
    }
}

use Change::{InPlace, Replace, Rerun};
use Presence::{GkeOnly, GkeRequired, Optional, Required, RequiredOnGke};

/// `for_each` and `depends_on`, on every resource.
pub const META: &[Attr] = &[
    attr(
        "for_each",
        Type::ForEach,
        Optional,
        DefaultValue::None,
        Change::Meta,
        "{ small = 8, large = 128 }",
        "One instance per key, addressed `KIND.NAME[\"KEY\"]`; `each.key` and `each.value` hold the instance's key and value. A resource with for_each (`serving.tf`) gives one instance per instance of it.",
    ),
    attr(
        "depends_on",
        Type::RefListAny,
        Optional,
        DefaultValue::None,
        Change::Meta,
        "[serving.tf]",
        "Extra dependency edges to resources this block does not reference.",
    ),
];

pub const CLUSTER: BlockSchema = BlockSchema {
    name: "cluster",
    label: Some("NAME"),
    resource: true,
    doc: "Where things run: this machine (`local`) or a GKE cluster (`gke`). Serving resources and load tests name their cluster.",
    attrs: &[
        attr(
            "provider",
            Type::Enum(&["local", "gke"]),
            Optional,
            DefaultValue::Str("local"),
            Replace,
            "\"gke\"",
            "`local`: this machine. `gke`: a Google Kubernetes Engine cluster with one node pool.",
        ),
        attr(
            "project",
            Type::String,
            GkeRequired,
            DefaultValue::None,
            Replace,
            "\"my-gcp-project\"",
            "The Google Cloud project.",
        ),
        attr(
            "location",
            Type::String,
            GkeRequired,
            DefaultValue::None,
            Replace,
            "\"us-central1-a\"",
            "The zone (or region) of the cluster.",
        ),
        attr(
            "machine_type",
            Type::String,
            GkeRequired,
            DefaultValue::None,
            Replace,
            "\"e2-highcpu-8\"",
            "The node pool's machine type.",
        ),
        attr(
            "node_count",
            Type::Uint { min: 1, max: 5000 },
            Optional,
            DefaultValue::Uint(1),
            InPlace,
            "3",
            "Nodes in the pool. A local cluster is this machine: exactly 1.",
        ),
        attr(
            "disk_size_gb",
            Type::Uint {
                min: 10,
                max: 65536,
            },
            GkeOnly,
            DefaultValue::Derived("GKE's default"),
            Replace,
            "100",
            "Boot disk size of each node, in GB.",
        ),
        attr(
            "spot",
            Type::Bool,
            GkeOnly,
            DefaultValue::Bool(false),
            Replace,
            "true",
            "Spot VMs for the node pool.",
        ),
        attr(
            "private_nodes",
            Type::Bool,
            GkeOnly,
            DefaultValue::Bool(false),
            Replace,
            "true",
            "Nodes without public IP addresses. The control plane's private range is GKE's choice (GKE 1.29 and later), so several private clusters can share a network.",
        ),
        attr(
            "service_account",
            Type::String,
            GkeOnly,
            DefaultValue::Derived("the Compute Engine default service account"),
            Replace,
            "\"bench-nodes@my-gcp-project.iam.gserviceaccount.com\"",
            "The service account the nodes run as (it needs read access to the registry of the images, e.g. `roles/artifactregistry.reader`). Nodes get gcloud's `gke-default` access scopes. GKE cannot change a node pool's service account, so a change re-creates the cluster.",
        ),
        attr(
            "network",
            Type::String,
            GkeOnly,
            DefaultValue::Derived("`default`"),
            Replace,
            "\"bench-vpc\"",
            "The VPC network of the cluster, for projects without a `default` network.",
        ),
        attr(
            "subnetwork",
            Type::String,
            GkeOnly,
            DefaultValue::Derived("GKE's choice in `network`"),
            Replace,
            "\"bench-subnet\"",
            "The subnetwork of `network` in the cluster's region.",
        ),
        attr(
            "enable_apis",
            Type::Bool,
            GkeOnly,
            DefaultValue::Bool(false),
            InPlace,
            "true",
            "`apply` enables, through Service Usage, the APIs the stack needs in this cluster's `project` that are off: Kubernetes Engine and Compute Engine, and Artifact Registry and Cloud Build when the stack has `image` blocks there. It waits for Service Usage's operation and says which it enabled, before anything is created; `plan`'s preflight then reports those APIs as to be enabled, not as errors. Off (the default), the preflight names each disabled API with the `gcloud services enable` command. Enabling needs `serviceusage.services.enable` (`roles/serviceusage.serviceUsageAdmin`). It changes nothing on the cluster: a change plans nothing.",
        ),
        attr(
            "labels",
            Type::Labels,
            Optional,
            DefaultValue::EmptyMap,
            InPlace,
            "{ team = \"ml\" }",
            "Resource labels on the cluster (GKE's rules: lowercase letters, digits, `_` and `-`). benchstack adds `managed-by = \"benchstack\"` and `benchstack-lineage` (the state's lineage) itself; those two keys are reserved.",
        ),
        attr(
            "hourly_price",
            Type::Number {
                min: 0.0,
                max: f64::INFINITY,
            },
            Optional,
            DefaultValue::Derived(
                "gke: the built-in on-demand list price of `machine_type` in the cluster's region, when known",
            ),
            Change::Unmanaged,
            "0.198",
            "What one node costs per hour, in USD, for the plan's cost per hour and `benchstack tune`'s cost figures (a spot, shared-core or custom node, or a region the built-in prices lack, has no other price). Not part of the cluster's configuration: a change plans nothing.",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"cluster "serving" {
  provider     = "gke"
  project      = "my-gcp-project"
  location     = "us-central1-a"
  machine_type = "e2-highcpu-8"
  node_count   = 3
}
"#,
};

pub const MODEL: BlockSchema = BlockSchema {
    name: "model",
    label: Some("NAME"),
    resource: true,
    doc: "A TensorFlow SavedModel in TF Serving's versioned layout (`BASE/1/saved_model.pb`).",
    attrs: &[
        attr(
            "base_path",
            Type::Path { dir: true },
            Required,
            DefaultValue::None,
            InPlace,
            "\"path/to/model\"",
            "The model's base path on this machine: a directory of numbered versions. Relative paths resolve against the stack file's directory.",
        ),
        attr(
            "serving_path",
            Type::ServingPath,
            Optional,
            DefaultValue::Derived("`/models/NAME` (in the serving image)"),
            InPlace,
            "\"gs://bucket/models/regression\"",
            "Where the serving image finds the model on Kubernetes.",
        ),
        attr(
            "name",
            Type::Name,
            Optional,
            DefaultValue::Derived("the block label (`LABEL-KEY` for a for_each instance)"),
            InPlace,
            "\"regression\"",
            "The name the model is served under (`/v1/models/NAME`).",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"model "regression" {
  base_path = "examples/model/regression"
}
"#,
};

pub const BATCHING: BlockSchema = BlockSchema {
    name: "batching",
    label: None,
    resource: false,
    doc: "TF Serving's batching parameters (`batching_parameters.txt`); with this block serving runs with `--enable_batching`. Unset values take TF Serving's defaults.",
    attrs: &[
        attr(
            "max_batch_size",
            Type::Uint {
                min: 1,
                max: MAX_BATCH_SIZE as u64,
            },
            Optional,
            DefaultValue::Derived("TF Serving's (1000)"),
            InPlace,
            "32",
            "The largest batch formed.",
        ),
        attr(
            "batch_timeout_micros",
            Type::Uint {
                min: 0,
                max: MAX_BATCH_TIMEOUT_MICROS,
            },
            Optional,
            DefaultValue::Derived("TF Serving's"),
            InPlace,
            "1000",
            "How long a partial batch waits for more requests, in microseconds.",
        ),
        attr(
            "max_enqueued_batches",
            Type::Uint {
                min: 1,
                max: MAX_ENQUEUED_BATCHES as u64,
            },
            Optional,
            DefaultValue::Derived("TF Serving's"),
            InPlace,
            "100",
            "Batches queued before requests are refused.",
        ),
        attr(
            "num_batch_threads",
            Type::Uint {
                min: 1,
                max: MAX_THREADS as u64,
            },
            Optional,
            DefaultValue::Derived("TF Serving's"),
            InPlace,
            "4",
            "Threads that process batches.",
        ),
        attr(
            "allowed_batch_sizes",
            Type::UintList {
                min: 1,
                max: MAX_BATCH_SIZE as u64,
            },
            Optional,
            DefaultValue::None,
            InPlace,
            "[8, 16, 32]",
            "Batches are padded up to one of these sizes. The last one equals `max_batch_size` (or `max_execution_batch_size` when large batches are split).",
        ),
        attr(
            "pad_variable_length_inputs",
            Type::Bool,
            Optional,
            DefaultValue::Derived("TF Serving's"),
            InPlace,
            "true",
            "Pad inputs of different lengths to one length.",
        ),
        attr(
            "enable_large_batch_splitting",
            Type::Bool,
            Optional,
            DefaultValue::Derived("TF Serving's"),
            InPlace,
            "true",
            "Split batches larger than `max_execution_batch_size`.",
        ),
        attr(
            "max_execution_batch_size",
            Type::Uint {
                min: 1,
                max: MAX_BATCH_SIZE as u64,
            },
            Optional,
            DefaultValue::Derived("TF Serving's"),
            InPlace,
            "64",
            "The largest batch executed when large batches are split; at most `max_batch_size`.",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"batching {
  max_batch_size       = 32
  batch_timeout_micros = 1000
  max_enqueued_batches = 100
  num_batch_threads    = 4
}
"#,
};

pub const SERVING: BlockSchema = BlockSchema {
    name: "serving",
    label: Some("NAME"),
    resource: true,
    doc: "A TF Serving deployment of one or more models on a cluster: a process on a local cluster, a Deployment and Service on gke.",
    attrs: &[
        attr(
            "cluster",
            Type::Ref("cluster"),
            Required,
            DefaultValue::None,
            Replace,
            "cluster.NAME",
            "The cluster it runs on.",
        ),
        attr(
            "image",
            Type::ImageRef,
            RequiredOnGke,
            DefaultValue::None,
            InPlace,
            "\"tensorflow/serving:2.19.0\"",
            "The serving image on Kubernetes: a reference string, or `image.NAME` to deploy what an `image` block builds by its digest (`REPOSITORY/NAME@sha256:…`; a rebuild rolls the Deployment). A local cluster runs `tensorflow_model_server` from PATH, or the built-in stand-in.",
        ),
        attr(
            "replicas",
            Type::Uint { min: 1, max: 1000 },
            Optional,
            DefaultValue::Uint(1),
            InPlace,
            "3",
            "Serving processes (local) or pods (gke); load tests spread connections over them.",
        ),
        attr(
            "models",
            Type::RefList("model"),
            Required,
            DefaultValue::None,
            InPlace,
            "[model.NAME]",
            "The models served, with distinct names.",
        ),
        attr(
            "flags",
            Type::Flags,
            Optional,
            DefaultValue::EmptyMap,
            InPlace,
            "{ tensorflow_intra_op_parallelism = 4 }",
            "TF Serving flags, `--NAME=VALUE`. Ports, models and batching come from the rest of the block and cannot be set here.",
        ),
        attr(
            "cpu",
            Type::Quantity("a CPU quantity such as \"7\" or \"7500m\""),
            Optional,
            DefaultValue::None,
            InPlace,
            "\"7\"",
            "The CPU each replica requests on Kubernetes.",
        ),
        attr(
            "memory",
            Type::Quantity("a memory quantity such as \"4Gi\" or \"512Mi\""),
            Optional,
            DefaultValue::None,
            InPlace,
            "\"4Gi\"",
            "The memory each replica requests on Kubernetes.",
        ),
    ],
    blocks: &[Nested {
        schema: &BATCHING,
        min: 0,
        max: 1,
    }],
    patterns: &[],
    computed: &[
        (
            "rest_endpoint",
            "The REST base URL of the first replica (`http://HOST:PORT`).",
        ),
        (
            "grpc_endpoint",
            "The gRPC address of the first replica (`grpc://HOST:PORT`).",
        ),
    ],
    example: r#"serving "tf" {
  cluster  = cluster.serving
  image    = "tensorflow/serving:2.19.0"
  replicas = 3
  models   = [model.regression]
  flags = {
    tensorflow_intra_op_parallelism = 4
  }
  batching {
    max_batch_size    = 32
    num_batch_threads = 4
  }
}
"#,
};

pub const STAGE: BlockSchema = BlockSchema {
    name: "stage",
    label: None,
    resource: false,
    doc: "One step of offered load; stages run in order.",
    attrs: &[
        attr(
            "rate",
            Type::Rate,
            Required,
            DefaultValue::None,
            Rerun,
            "300",
            "Requests per second over all workers, sent on schedule (open loop), or `\"max\"`: as fast as the connections allow (closed loop).",
        ),
        attr(
            "duration",
            Type::Duration { nonzero: true },
            Required,
            DefaultValue::None,
            Rerun,
            "\"60s\"",
            "How long the stage runs.",
        ),
        attr(
            "name",
            Type::String,
            Optional,
            DefaultValue::Derived("`stage-N`"),
            Rerun,
            "\"peak\"",
            "The stage's name in reports.",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"stage {
  rate     = 300
  duration = "60s"
}
"#,
};

pub const SLO: BlockSchema = BlockSchema {
    name: "slo",
    label: None,
    resource: false,
    doc: "Objectives every stage is judged against. A failed request counts against every objective (for a percentile it never completed in time).",
    attrs: &[attr(
        "errors",
        Type::ErrorRate,
        Optional,
        DefaultValue::None,
        Rerun,
        "\"0.1%\"",
        "The largest share of failed requests.",
    )],
    blocks: &[],
    patterns: &[attr(
        "pNN",
        Type::Duration { nonzero: true },
        Optional,
        DefaultValue::None,
        Rerun,
        "\"50ms\"",
        "A latency percentile's limit, named `p` and the percentile: `p50`, `p90`, `p99`, `p999` (the 99.9th), `p9999` (the 99.99th).",
    )],
    computed: &[],
    example: r#"slo {
  p99    = "50ms"
  errors = "0.1%"
}
"#,
};

pub const LOADTEST: BlockSchema = BlockSchema {
    name: "loadtest",
    label: Some("NAME"),
    resource: true,
    doc: "An open-loop load test against a serving resource. It runs on apply when it never ran or when its configuration, or anything it depends on, changed; its results are kept in the state.",
    attrs: &[
        attr(
            "cluster",
            Type::Ref("cluster"),
            Optional,
            DefaultValue::Derived("the target's cluster"),
            Rerun,
            "cluster.NAME",
            "Where the load generator runs: this machine (local) or an Indexed Job of worker pods (gke).",
        ),
        attr(
            "target",
            Type::Ref("serving"),
            Required,
            DefaultValue::None,
            Rerun,
            "serving.NAME",
            "The serving resource under test.",
        ),
        attr(
            "model",
            Type::ModelName,
            Optional,
            DefaultValue::Derived("the target's model, when it serves one"),
            Rerun,
            "\"regression\"",
            "The model requests go to.",
        ),
        attr(
            "protocol",
            Type::Enum(&["rest", "grpc"]),
            Optional,
            DefaultValue::Str("rest"),
            Rerun,
            "\"grpc\"",
            "TF Serving's REST API or its gRPC PredictionService.",
        ),
        attr(
            "signature",
            Type::String,
            Optional,
            DefaultValue::Derived("the model's default signature"),
            Rerun,
            "\"serving_default\"",
            "The signature requests name.",
        ),
        attr(
            "request",
            Type::JsonBody,
            Optional,
            DefaultValue::None,
            Rerun,
            "file(\"body.json\")",
            "A TF Serving JSON predict body sent with every request. Give `request` or `data`.",
        ),
        attr(
            "data",
            Type::Path { dir: false },
            Optional,
            DefaultValue::None,
            Rerun,
            "\"rows.csv\"",
            "A CSV with a header row; each request samples `batch_size` rows. Give `request` or `data`.",
        ),
        attr(
            "batch_size",
            Type::Uint {
                min: 1,
                max: 1_000_000,
            },
            Optional,
            DefaultValue::Uint(1),
            Rerun,
            "1",
            "Rows per request, only with `data`.",
        ),
        attr(
            "workers",
            Type::Uint { min: 1, max: 1000 },
            Optional,
            DefaultValue::Uint(1),
            Rerun,
            "4",
            "Load generators sharing the load (processes locally, pods on gke); reports are merged.",
        ),
        attr(
            "start_tolerance",
            Type::DurationBetween {
                min: "1ms",
                max: "10s",
            },
            Optional,
            DefaultValue::Derived("`\"50ms\"`"),
            Rerun,
            "\"50ms\"",
            "Distributed runs on gke: how late a worker may start after the common start, and how far its clock may be from the coordinator's, before the run is marked invalid (stored and shown, never judged).",
        ),
        attr(
            "loadgen_image",
            Type::ImageRef,
            RequiredOnGke,
            DefaultValue::None,
            Rerun,
            "\"REGISTRY/benchstack:TAG\"",
            "The image of the worker pods (this binary) on gke: a reference string, or `image.NAME` to run what an `image` block builds, by its digest.",
        ),
        attr(
            "connections",
            Type::Uint {
                min: 1,
                max: MAX_CONNECTIONS as u64,
            },
            Optional,
            DefaultValue::Uint(64),
            Rerun,
            "64",
            "Connections over all workers.",
        ),
        attr(
            "arrival",
            Type::Enum(&["constant", "poisson"]),
            Optional,
            DefaultValue::Str("constant"),
            Rerun,
            "\"poisson\"",
            "How send times are spaced: evenly, or with exponential gaps (seeded).",
        ),
        attr(
            "seed",
            Type::Uint {
                min: 0,
                max: u64::MAX,
            },
            Optional,
            DefaultValue::Uint(1),
            Rerun,
            "7",
            "Seeds Poisson arrivals and row sampling.",
        ),
        attr(
            "warmup",
            Type::Duration { nonzero: false },
            Optional,
            DefaultValue::Secs(0),
            Rerun,
            "\"5s\"",
            "Load at the first stage's rate before the stages, not recorded.",
        ),
        attr(
            "timeout",
            Type::Duration { nonzero: true },
            Optional,
            DefaultValue::Secs(10),
            Rerun,
            "\"10s\"",
            "Per request (and per connection attempt); a request that takes longer fails.",
        ),
    ],
    blocks: &[
        Nested {
            schema: &STAGE,
            min: 1,
            max: MAX_STAGES,
        },
        Nested {
            schema: &SLO,
            min: 0,
            max: 1,
        },
    ],
    patterns: &[],
    computed: &[],
    example: r#"loadtest "baseline" {
  target     = serving.tf
  protocol   = "grpc"
  data       = "examples/model/test.csv"
  batch_size = 1
  stage {
    rate     = 300
    duration = "60s"
  }
  slo {
    p99 = "50ms"
  }
}
"#,
};

pub const VARIABLE: BlockSchema = BlockSchema {
    name: "variable",
    label: Some("NAME"),
    resource: false,
    doc: "An input, used as `var.NAME`. Values come from the default, `BENCHSTACK_VAR_NAME` in the environment, `--var-file` and `--var NAME=VALUE`, later ones winning.",
    attrs: &[
        attr(
            "default",
            Type::Any,
            Optional,
            DefaultValue::None,
            Change::Unmanaged,
            "32",
            "The value when none is given; without one, a value must be given.",
        ),
        attr(
            "type",
            Type::TypeExpr,
            Optional,
            DefaultValue::Derived("`any`"),
            Change::Unmanaged,
            "number",
            "Values given are converted to this type, or refused.",
        ),
        attr(
            "description",
            Type::String,
            Optional,
            DefaultValue::None,
            Change::Unmanaged,
            "\"The largest batch\"",
            "What the variable is for.",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"variable "max_batch_size" {
  type    = number
  default = 32
}
"#,
};

pub const OUTPUT: BlockSchema = BlockSchema {
    name: "output",
    label: Some("NAME"),
    resource: false,
    doc: "A value shown after apply and by `benchstack output`.",
    attrs: &[
        attr(
            "value",
            Type::Any,
            Required,
            DefaultValue::None,
            Change::Unmanaged,
            "serving.NAME.rest_endpoint",
            "A value known at load, or an attribute a provider reports after apply (`serving.NAME.rest_endpoint`, `serving.NAME.grpc_endpoint`).",
        ),
        attr(
            "description",
            Type::String,
            Optional,
            DefaultValue::None,
            Change::Unmanaged,
            "\"The REST endpoint\"",
            "What the output is.",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"output "endpoint" {
  value = serving.tf.rest_endpoint
}
"#,
};

pub const TUNE: BlockSchema = BlockSchema {
    name: "tune",
    label: Some("NAME"),
    resource: false,
    doc: "A configuration search run by `benchstack tune` (plan and apply ignore it): which settings of a serving resource vary, the load test that measures each configuration's capacity under its latency SLO, and what to optimise. `benchstack tune --write` proposes the winner as an edit of the serving block.",
    attrs: &[
        attr(
            "serving",
            Type::Ref("serving"),
            Required,
            DefaultValue::None,
            Change::Unmanaged,
            "serving.NAME",
            "The serving resource whose settings vary (one instance, `serving.NAME[\"KEY\"]`, of a for_each resource).",
        ),
        attr(
            "loadtest",
            Type::Ref("loadtest"),
            Required,
            DefaultValue::None,
            Change::Unmanaged,
            "loadtest.NAME",
            "How a configuration is measured (protocol, requests, connections): a load test of the tuned resource with a latency SLO; capacity is the most traffic that meets its SLOs.",
        ),
        attr(
            "space",
            Type::Space,
            Required,
            DefaultValue::None,
            Change::Unmanaged,
            "{ \"batching.max_batch_size\" = [8, 32] }",
            "The values to try per serving attribute, in dotted form: `batching.NAME` (max_batch_size, batch_timeout_micros, max_enqueued_batches, num_batch_threads, max_execution_batch_size, pad_variable_length_inputs, enable_large_batch_splitting), `flags.NAME`, `replicas`, `image`, `cpu` or `memory`. Each value is checked as the serving block checks it.",
        ),
        attr(
            "search",
            Type::Choice(&[
                ("grid", "every combination"),
                ("auto", "coordinate descent"),
            ]),
            Optional,
            DefaultValue::Str("grid"),
            Change::Unmanaged,
            "\"auto\"",
            "`grid`: every combination of the space. `auto`: coordinate descent from the stack's current configuration.",
        ),
        attr(
            "start_rate",
            Type::PerSecond,
            Optional,
            DefaultValue::Number(100.0),
            Change::Unmanaged,
            "500",
            "The first probe's rate in requests per second; the capacity search doubles or halves it, then bisects.",
        ),
        attr(
            "probe_duration",
            Type::DurationBetween {
                min: "100ms",
                max: "1h",
            },
            Optional,
            DefaultValue::Secs(10),
            Change::Unmanaged,
            "\"10s\"",
            "How long each capacity probe runs.",
        ),
        attr(
            "precision",
            Type::Number {
                min: 0.001,
                max: 0.5,
            },
            Optional,
            DefaultValue::Number(0.05),
            Change::Unmanaged,
            "0.05",
            "The capacity search stops when the bracket is within this fraction of its upper end (0.05: 5%).",
        ),
        attr(
            "repeats",
            Type::Uint { min: 1, max: 20 },
            Optional,
            DefaultValue::Uint(3),
            Change::Unmanaged,
            "3",
            "How many measurements the best configurations get in all.",
        ),
        attr(
            "objective",
            Type::Choice(&[
                ("capacity", "most requests/s under the SLOs"),
                ("cost", "lowest price per million predictions"),
            ]),
            Optional,
            DefaultValue::Str("capacity"),
            Change::Unmanaged,
            "\"cost\"",
            "`capacity`: the most requests per second under the SLOs. `cost`: the lowest price per million predictions (needs a price for the serving cluster's nodes).",
        ),
        attr(
            "target_rate",
            Type::PerSecond,
            Optional,
            DefaultValue::None,
            Change::Unmanaged,
            "3900",
            "Size the deployment for this traffic (requests per second).",
        ),
        attr(
            "max_trials",
            Type::Uint {
                min: 1,
                max: 10_000,
            },
            Optional,
            DefaultValue::Uint(50),
            Change::Unmanaged,
            "20",
            "The most configurations `auto` measures.",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"tune "batching" {
  serving  = serving.tf
  loadtest = loadtest.baseline
  space = {
    "batching.max_batch_size"    = [8, 32, 128]
    "batching.num_batch_threads" = [2, 4]
  }
  search = "grid"
}
"#,
};

/// TF Serving flags benchstack sets itself from the rest of the serving block: a serving
/// block's `flags` and a tune's `space` refuse them (the one list, shared with the renderer).
pub use crate::vocab::resources::MANAGED_FLAGS as RESERVED_FLAGS;

/// Every top-level block kind, in the order the reference page lists them.
pub const IMAGE: BlockSchema = BlockSchema {
    name: "image",
    label: Some("NAME"),
    resource: true,
    doc: "A container image built by `apply` with Cloud Build from a directory on this machine and pushed to an Artifact Registry repository. Its content hash (the context's files after `.dockerignore`, with their paths and executable bits; the Dockerfile's path; the build args) decides: an unchanged hash plans no build, a changed one plans a rebuild, and every serving or load test that uses it (`image = image.NAME`) rolls to the new digest. The context is uploaded as a tar.gz to the bucket `PROJECT_cloudbuild` (or `BENCHSTACK_BUILD_BUCKET`); the repository is created when missing.",
    attrs: &[
        attr(
            "repository",
            Type::String,
            Required,
            DefaultValue::None,
            InPlace,
            "\"us-central1-docker.pkg.dev/PROJECT/benchstack\"",
            "The Artifact Registry repository, `LOCATION-docker.pkg.dev/PROJECT/REPOSITORY` (the project and location of the build come from it).",
        ),
        attr(
            "name",
            Type::ImageName,
            Required,
            DefaultValue::None,
            InPlace,
            "\"benchstack\"",
            "The image's name in the repository; it is pushed as `REPOSITORY/NAME` and deployed as `REPOSITORY/NAME@sha256:…`.",
        ),
        attr(
            "preset",
            Type::Choice(&[(
                "serving",
                "a TF Serving image generated from the serving resource that uses it",
            )]),
            Optional,
            DefaultValue::None,
            InPlace,
            "\"serving\"",
            "`\"serving\"`: no Dockerfile of yours. The image is generated for the one serving resource whose `image` is this block: `FROM base_image`, the version folders of each of its models copied to the model's `serving_path`, and the plan's own rendered `models.config`, `batching_parameters.txt` and `monitoring.config` at `/config`. The context is exactly those files (never a directory of yours), so the image and the plan cannot disagree: a batching change renders a new file, which plans a rebuild (`config/batching_parameters.txt changed`) and rolls the serving resource to the new digest. On the cluster TF Serving reads `/config` from the serving resource's ConfigMap, mounted over the image's copy: both are the same rendered bytes, and the image carries them so its digest names the whole served configuration (`docker run` of it serves the same). A `tune` trial that changes only these files does not rebuild it: the ConfigMap carries the trial, the Deployment keeps the digest last applied (each probe records it with the trial's settings), and the next `plan` shows the rebuild if the stack's files differ from the build's. Not with `context`, `dockerfile` or `args`.",
        ),
        attr(
            "base_image",
            Type::String,
            Optional,
            DefaultValue::Str("tensorflow/serving:2.19.0"),
            InPlace,
            "\"tensorflow/serving:2.19.0\"",
            "With `preset = \"serving\"`: the TF Serving image the generated Dockerfile starts `FROM` (use a release at least as new as the TensorFlow that exported the model; pin a tag or a digest).",
        ),
        attr(
            "context",
            Type::Path { dir: true },
            Optional,
            DefaultValue::Derived("none: required unless `preset` is set"),
            InPlace,
            "\"..\"",
            "The build context: a directory, relative to the stack file's directory. Its `.dockerignore` (Docker's rules: patterns from the context root, `**`, `!` exceptions, the last match wins) decides what is uploaded and hashed.",
        ),
        attr(
            "dockerfile",
            Type::String,
            Optional,
            DefaultValue::Derived("`\"Dockerfile\"`"),
            InPlace,
            "\"deploy/loadgen.Dockerfile\"",
            "The Dockerfile, relative to the context and inside it.",
        ),
        attr(
            "args",
            Type::StringMap,
            Optional,
            DefaultValue::EmptyMap,
            InPlace,
            "{ TF_SERVING_VERSION = \"2.19.0\" }",
            "Build arguments (`--build-arg NAME=VALUE`).",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[
        (
            "digest",
            "The pushed image's digest (`sha256:…`), from the build's results.",
        ),
        (
            "reference",
            "`REPOSITORY/NAME@sha256:…`: what serving and load tests deploy.",
        ),
        (
            "content_hash",
            "SHA-256 of what a build sees (shown by `plan`): the context's files, the Dockerfile's path and the args; for `preset = \"serving\"`, the generated files and the models' version folders. A change plans a rebuild.",
        ),
    ],
    example: r#"image "worker" {
  repository = "us-central1-docker.pkg.dev/my-project/benchstack"
  name       = "benchstack"
  context    = ".."
  dockerfile = "deploy/loadgen.Dockerfile"
}
"#,
};

/// `backend "gcs"`: where the stack's state lives (docs/state.md). Read before variables, like
/// Terraform's backend blocks, so its values are literal strings.
pub const BACKEND: BlockSchema = BlockSchema {
    name: "backend",
    label: Some("gcs"),
    resource: false,
    doc: "Where the stack's state lives: a team state on Google Cloud Storage (docs/state.md), instead of the local default `./state`. At most one per stack; `gcs` is the only type. `--state` and `BENCHSTACK_STATE` override it. A command given the stack binds its working directory to this backend (`.benchstack/backend.json`), so `results`, `output` and `state …` run there without the stack find the same state; a later stack whose backend differs from the binding is refused until `benchstack state migrate --to` moves the state. Its values are literal strings: the backend is read before variables are, as in Terraform, so variables, references and functions are refused here.",
    attrs: &[
        attr(
            "bucket",
            Type::String,
            Required,
            DefaultValue::None,
            Change::Unmanaged,
            "\"team-bench-state\"",
            "The bucket (it must exist; enable Object Versioning on it): lowercase letters, digits, `-`, `_` and `.`.",
        ),
        attr(
            "prefix",
            Type::String,
            Optional,
            DefaultValue::Derived("`\"\"` (the bucket's root)"),
            Change::Unmanaged,
            "\"bench/prod\"",
            "The folder the state's objects live under (`PREFIX/state.json`, `PREFIX/lock.json`, `PREFIX/runs/`); one prefix per state.",
        ),
        attr(
            "kms_key_name",
            Type::String,
            Optional,
            DefaultValue::None,
            Change::Unmanaged,
            "\"projects/P/locations/L/keyRings/R/cryptoKeys/K\"",
            "A customer-managed Cloud KMS key that encrypts every object benchstack writes (state, runs, lock); `BENCHSTACK_GCS_KMS_KEY` overrides it. Without it the bucket's default encryption applies.",
        ),
    ],
    blocks: &[],
    patterns: &[],
    computed: &[],
    example: r#"backend "gcs" {
  bucket = "team-bench-state"
  prefix = "bench/prod"
}
"#,
};

pub const BLOCKS: &[&BlockSchema] = &[
    &BACKEND, &VARIABLE, &CLUSTER, &MODEL, &IMAGE, &SERVING, &LOADTEST, &OUTPUT, &TUNE,
];

/// The top-level block kind `name`.
pub fn block(name: &str) -> Option<&'static BlockSchema> {
    BLOCKS.iter().copied().find(|b| b.name == name)
}

/// The top-level block names, for "expected one of: …".
pub fn block_names() -> Vec<&'static str> {
    BLOCKS.iter().map(|b| b.name).collect()
}

/// What changing the attribute at `path` of a `kind` resource does: `path` is the
/// attribute as written in HCL, dotted through nested blocks (`location`,
/// `batching.max_batch_size`, `stage.rate`). A nested block as a whole (`batching`) changes
/// as its attributes do (replacement if any of them forces it). `None` for an undeclared
/// kind or attribute.
pub fn change(kind: &str, path: &str) -> Option<Change> {
    let mut schema = block(kind)?;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        // `stage[0]` and `stages` (the typed config's field names) name the block too.
        let part = part.split('[').next().unwrap_or(part);
        if let Some(a) = schema.all_attrs().find(|a| a.name == part) {
            return Some(a.change);
        }
        let nested = schema.nested(part).or_else(|| {
            part.strip_suffix('s')
                .and_then(|singular| schema.nested(singular))
        })?;
        schema = nested.schema;
        if parts.peek().is_none() {
            let changes: Vec<Change> = schema.all_attrs().map(|a| a.change).collect();
            return if changes.contains(&Change::Replace) {
                Some(Change::Replace)
            } else {
                changes.first().copied()
            };
        }
    }
    None
}

/// Whether changing the attribute at `path` (see [`change`]) of a `kind` resource deletes
/// and re-creates it. This is the plan's replacement rule (ARCHITECTURE.md, "Where a change goes").
pub fn forces_replacement(kind: &str, path: &str) -> bool {
    change(kind, path) == Some(Change::Replace)
}

/// The attributes of `kind` whose change forces replacement, as written in HCL.
pub fn replacement_attributes(kind: &str) -> Vec<&'static str> {
    block(kind)
        .map(|b| {
            b.all_attrs()
                .filter(|a| a.change == Change::Replace)
                .map(|a| a.name)
                .collect()
        })
        .unwrap_or_default()
}

/// The command that rewrites `docs/stack-language.md` from this schema.
pub const REGENERATE_DOCS: &str = "BLESS=1 cargo test --test stack_docs";

/// The reference page `docs/stack-language.md`, generated from the declarations above.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str("<!-- Generated from src/stack/schema.rs: do not edit by hand. Regenerate with\n");
    let _ = writeln!(out, "     {REGENERATE_DOCS} -->");
    out.push_str(
        "\n# The stack language: reference\n\n\
         A stack is one `*.hcl` file, or every `*.hcl` file in a directory, in HCL native syntax \
         (whatever hcl-edit, python-hcl2 or an editor parses). Blocks with several attributes \
         hold one attribute per line. Relative paths resolve against the directory of the file \
         that holds them. A resource's address is `KIND.NAME` (`serving.tf`), or \
         `KIND.NAME[\"KEY\"]` for one instance of a `for_each` resource; a reference to a \
         resource is a dependency.\n\n\
         Every problem is reported with its file, line and column and what was expected, by \
         `benchstack validate` and by `plan` before anything is touched.\n\n\
         The **on change** column says what `plan` proposes when the attribute changes: \
         *update in place*, **forces replacement** (delete, then create), or *re-run* (a load \
         test runs again). A resource that depends on a replaced cluster is replaced with it. \
         *instances / order* (`for_each`, `depends_on`) adds or removes instances or orders \
         them; — marks what is not part of a resource (variables, outputs, `tune` blocks, a \
         cluster's `hourly_price`): a change to it plans nothing; in the `backend` block, a \
         change of place is refused until `benchstack state migrate` moves the state.\n\n",
    );
    out.push_str("Top-level blocks: ");
    out.push_str(
        &BLOCKS
            .iter()
            .map(|b| format!("[`{}`](#{})", b.name, b.name))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push_str(".\n");
    for b in BLOCKS {
        block_markdown(&mut out, b, 2, None);
    }
    out.push_str("\n## Meta-arguments\n\nEvery resource block (");
    out.push_str(
        &BLOCKS
            .iter()
            .filter(|b| b.resource)
            .map(|b| format!("`{}`", b.name))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.push_str(") also takes:\n\n");
    attr_table(&mut out, META);
    out
}

fn block_markdown(out: &mut String, b: &BlockSchema, level: usize, parent: Option<&str>) {
    let hashes = "#".repeat(level);
    let title = match (parent, b.label) {
        (Some(p), _) => format!("`{}` (in `{p}`)", b.name),
        (None, Some(label)) => format!("`{} \"{label}\"`", b.name),
        (None, None) => format!("`{}`", b.name),
    };
    let _ = writeln!(out, "\n{hashes} {title}\n");
    let _ = writeln!(out, "{}\n", b.doc);
    let _ = writeln!(out, "```hcl\n{}```\n", b.example);
    let mut attrs: Vec<Attr> = b.attrs.to_vec();
    attrs.extend_from_slice(b.patterns);
    attr_table(out, &attrs);
    if !b.blocks.is_empty() {
        out.push_str("\nNested blocks:\n\n");
        for n in b.blocks {
            let count = match (n.min, n.max) {
                (0, 1) => "at most one".to_string(),
                (1, 1) => "exactly one".to_string(),
                (min, max) => format!("{min} to {max}"),
            };
            let _ = writeln!(out, "- `{}`: {count}", n.schema.name);
        }
    }
    if !b.computed.is_empty() {
        let _ = writeln!(
            out,
            "\nAttributes a provider reports after apply (for `output` values, shown as \
             `(known after apply)` in a plan):\n"
        );
        for (name, doc) in b.computed {
            let _ = writeln!(out, "- `{}.NAME.{name}`: {doc}", b.name);
        }
    }
    for n in b.blocks {
        block_markdown(out, n.schema, level + 1, Some(b.name));
    }
}

fn attr_table(out: &mut String, attrs: &[Attr]) {
    out.push_str("| attribute | type | presence | default | on change | description |\n");
    out.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for a in attrs {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} Example: `{} = {}` |",
            a.name,
            cell(&a.ty.describe()),
            a.presence.describe(),
            cell(&a.default.describe()),
            a.change.describe(),
            cell(a.doc),
            a.name,
            cell(a.example),
        );
    }
}

/// Table cells cannot hold `|`.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_placement_forces_replacement_and_size_does_not() {
        for a in [
            "provider",
            "project",
            "location",
            "machine_type",
            "disk_size_gb",
            "spot",
            "private_nodes",
        ] {
            assert!(forces_replacement("cluster", a), "cluster.{a}");
        }
        assert!(!forces_replacement("cluster", "node_count"));
        assert!(!forces_replacement("cluster", "labels"));
    }

    #[test]
    fn a_serving_resource_is_replaced_only_when_its_cluster_changes() {
        assert!(forces_replacement("serving", "cluster"));
        for a in ["image", "replicas", "models", "flags", "batching", "cpu"] {
            assert!(!forces_replacement("serving", a), "serving.{a}");
        }
        assert_eq!(
            change("serving", "batching.max_batch_size"),
            Some(Change::InPlace)
        );
        assert!(replacement_attributes("model").is_empty());
    }

    #[test]
    fn a_load_test_change_reruns_it_through_nested_blocks_too() {
        assert_eq!(change("loadtest", "stage.rate"), Some(Change::Rerun));
        assert_eq!(change("loadtest", "stages[0].rate"), Some(Change::Rerun));
        assert_eq!(change("loadtest", "slo"), Some(Change::Rerun));
        assert_eq!(change("loadtest", "nonsense"), None);
        assert_eq!(change("nonsense", "rate"), None);
    }

    #[test]
    fn expected_texts_keep_the_loader_wording() {
        assert_eq!(
            SERVING.attr("replicas").ty.expected(),
            "a whole number from 1 to 1000"
        );
        assert_eq!(
            LOADTEST.attr("seed").ty.expected(),
            "a whole number of at least 0"
        );
        assert_eq!(
            CLUSTER.attr("provider").ty.expected(),
            "\"local\" or \"gke\""
        );
    }

    #[test]
    fn every_attribute_example_is_an_hcl_attribute() {
        fn check(b: &BlockSchema) {
            for a in b.all_attrs().chain(b.patterns.iter()) {
                let text = format!("{} = {}\n", a.name, a.example);
                hcl_edit::parser::parse_body(&text)
                    .unwrap_or_else(|e| panic!("{}.{}: {text}: {e}", b.name, a.name));
            }
            for n in b.blocks {
                check(n.schema);
            }
        }
        for b in BLOCKS {
            check(b);
        }
    }

    #[test]
    fn tune_choices_say_what_each_value_means() {
        assert_eq!(
            TUNE.attr("search").ty.expected(),
            "\"grid\" (every combination) or \"auto\" (coordinate descent)"
        );
        assert_eq!(TUNE.attr("search").default_str(), Some("grid"));
        assert_eq!(CLUSTER.attr("hourly_price").change, Change::Unmanaged);
        assert!(!forces_replacement("cluster", "hourly_price"));
    }

    #[test]
    fn every_example_is_one_block_of_the_kind_it_documents() {
        fn check(b: &BlockSchema) {
            let body = hcl_edit::parser::parse_body(b.example)
                .unwrap_or_else(|e| panic!("{}: {e}", b.name));
            let blocks: Vec<_> = body.blocks().collect();
            assert_eq!(blocks.len(), 1, "{}", b.name);
            assert_eq!(blocks[0].ident.value().as_str(), b.name);
            for n in b.blocks {
                check(n.schema);
            }
        }
        for b in BLOCKS {
            check(b);
        }
    }
}
