//! Operations the commands share (cargo's `ops` pattern): reading the flags plan, apply and
//! destroy have in common, loading a stack with its variables, checking its providers,
//! opening the state, planning with refresh, and the remote preflight of a plan on GKE.
//! Commands call these and print; nothing here prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::miette;

use crate::plan::{MachineShapes, Plan, PlanOptions};
use crate::provider::{ProviderReader, Providers, cluster_providers, gcp, gke, provider_for};
use crate::refresh;
use crate::state::{self, Store};
use crate::vocab::resources::{Address, Stack};

/// Flags shared by plan and apply.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanFlags {
    /// Only these resources (and what they depend on); repeatable.
    #[arg(long = "target", value_name = "ADDR")]
    pub targets: Vec<String>,
    /// Replace (or re-run) this resource even if unchanged; repeatable.
    #[arg(long = "replace", value_name = "ADDR")]
    pub replace: Vec<String>,
    /// Check what is actually running before planning (`--refresh=false` trusts the state).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub refresh: bool,
    /// Set a variable: NAME=VALUE; repeatable.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Read variables from a file; repeatable.
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
}

pub fn parse_addresses(flag: &str, values: &[String]) -> miette::Result<Vec<Address>> {
    values
        .iter()
        .map(|v| state::parse_address(v).map_err(|e| miette!("--{flag}: {e}")))
        .collect()
}

/// Loads the stack; a bad stack is reported with file, line and column.
pub fn load_stack(path: &Path, flags: &PlanFlags) -> miette::Result<Stack> {
    load_stack_priced(path, flags).map(|(stack, _)| stack)
}

/// As [`load_stack`], with each cluster's `hourly_price` (the plan's cost).
pub fn load_stack_priced(
    path: &Path,
    flags: &PlanFlags,
) -> miette::Result<(Stack, BTreeMap<Address, f64>)> {
    let mut vars = Vec::new();
    for v in &flags.vars {
        let (k, val) = v
            .split_once('=')
            .ok_or_else(|| miette!("--var `{v}`: expected NAME=VALUE"))?;
        vars.push((k.trim().to_string(), val.to_string()));
    }
    let inputs = crate::stack::VarInputs {
        vars,
        var_files: flags.var_files.clone(),
    };
    crate::stack::load_with_tunes(path, &inputs)
        .map(|(stack, extras)| (stack, extras.hourly_prices))
        .map_err(miette::Report::new)
}

/// Every resource's provider must exist in this build (checked before anything is touched).
pub fn check_providers(stack: &Stack, providers: &Providers) -> miette::Result<()> {
    let clusters = cluster_providers(stack);
    for r in &stack.resources {
        let name = provider_for(&r.config, &clusters);
        providers
            .provider(name)
            .map_err(|e| miette!("{} ({}): {e}", r.address, r.span))?;
    }
    Ok(())
}

/// Where a state on GCS is reached, from the one reading of the environment
/// ([`gcp::Apis::from_env`]: `STORAGE_EMULATOR_HOST` names an emulator).
pub fn storage() -> state::gcs::Endpoint {
    gcp::Apis::from_env().state_storage()
}

/// The state as last published, read without the lock (None: nothing applied yet).
pub fn open_view(dir: &Path) -> miette::Result<Option<state::View>> {
    state::View::open(dir, &storage()).map_err(|e| miette!("{e}"))
}

/// What a plan is made for, beyond its flags.
#[derive(Debug, Clone, Default)]
pub struct Planning {
    /// A destroy plan.
    pub destroy: bool,
    /// The machine shapes the preflight read from Compute Engine (`Preflight::machine_shapes`;
    /// empty before it ran): the capacity check and the rollout use them.
    pub machine_shapes: MachineShapes,
}

impl Planning {
    pub fn destroy() -> Planning {
        Planning {
            destroy: true,
            ..Planning::default()
        }
    }
}

pub fn make_plan(
    stack: Option<&Stack>,
    store: &Store,
    providers: &Providers,
    flags: &PlanFlags,
    planning: &Planning,
) -> miette::Result<Plan> {
    let snap = store.snapshot().map_err(|e| miette!("{e}"))?;
    let outputs = store.outputs().map_err(|e| miette!("{e}"))?;
    plan_from(
        stack,
        &snap,
        outputs,
        store.dir(),
        providers,
        flags,
        planning,
    )
}

/// Plans against `snap` (the locked store's, or a published snapshot's).
pub fn plan_from(
    stack: Option<&Stack>,
    snap: &state::Snapshot,
    outputs: BTreeMap<String, serde_json::Value>,
    state_dir: &Path,
    providers: &Providers,
    flags: &PlanFlags,
    planning: &Planning,
) -> miette::Result<Plan> {
    let opts = PlanOptions {
        targets: parse_addresses("target", &flags.targets)?,
        replace: parse_addresses("replace", &flags.replace)?,
        destroy: planning.destroy,
        machine_shapes: planning.machine_shapes.clone(),
        keep_config_only_image_builds: false,
    };
    let observer = ProviderReader {
        providers,
        state_dir,
    };
    let observe: Option<&dyn crate::provider::LiveReader> =
        if flags.refresh { Some(&observer) } else { None };
    refresh::plan(stack, snap, outputs, observe, &opts).map_err(|e| miette!("{e}"))
}

/// What the remote preflight found: errors at the attribute at fault (the plan stops), and
/// warnings (a check that could not be made).
#[derive(Debug, Default)]
pub struct Preflight {
    pub errors: crate::stack::Diagnostics,
    pub warnings: Vec<String>,
    /// Whether there was anything to check (a gke cluster).
    pub ran: bool,
    /// The machine types Compute Engine described, for the plan's capacity check
    /// (`Planning::machine_shapes`).
    pub machine_shapes: MachineShapes,
}

impl Preflight {
    /// Compute Engine described a machine type differently from the built-in table (or one
    /// the table lacks): a plan made without its shapes has to be made again with them, so
    /// the capacity check and the rollout it rendered use them.
    pub fn reshaped(&self) -> bool {
        self.machine_shapes.differ_from_table()
    }
}

/// The stack's gke clusters (with what `plan` does to each; every one counts as created when
/// there is no plan) and the images its Kubernetes resources run.
pub fn preflight_request(stack: &Stack, plan: Option<&Plan>) -> gke::preflight::Request {
    use crate::plan::Action;
    use crate::vocab::resources::{ProviderKind, ResourceConfig};
    let change = |a: &Address| plan.and_then(|p| p.changes.iter().find(|c| &c.address == a));
    let gke_cluster = |a: &Address| {
        stack.resources.iter().any(|r| {
            &r.address == a
                && matches!(&r.config, ResourceConfig::Cluster(c) if c.provider == ProviderKind::Gke)
        })
    };
    let mut request = gke::preflight::Request::default();
    for r in &stack.resources {
        match &r.config {
            ResourceConfig::Cluster(c) if c.provider == ProviderKind::Gke => {
                let ch = change(&r.address);
                let action = ch.map(|c| c.action);
                let replaces = match ch {
                    Some(c) if c.action == Action::Replace => match &c.before {
                        Some(ResourceConfig::Cluster(b)) => Some(b.clone()),
                        _ => None,
                    },
                    _ => None,
                };
                request.clusters.push(gke::preflight::ClusterItem {
                    address: r.address.clone(),
                    config: c.clone(),
                    creates: plan.is_none()
                        || matches!(action, Some(Action::Create | Action::Replace)),
                    replaces,
                });
            }
            ResourceConfig::Serving(s) if gke_cluster(&s.cluster) => {
                if let Some(image) = &s.image {
                    request.images.push(gke::preflight::ImageItem {
                        address: r.address.clone(),
                        attribute: "image",
                        image: image.clone(),
                    });
                }
            }
            // Built on apply: Cloud Build and Artifact Registry must be on in its project.
            ResourceConfig::Image(i) => {
                if let Some((_, project, _)) = i.artifact_registry() {
                    request.builds.push(gke::preflight::BuildItem {
                        address: r.address.clone(),
                        project,
                    });
                }
            }
            ResourceConfig::Loadtest(l) if gke_cluster(&l.cluster) => {
                if let Some(image) = &l.loadgen_image {
                    request.images.push(gke::preflight::ImageItem {
                        address: r.address.clone(),
                        attribute: "loadgen_image",
                        image: image.clone(),
                    });
                }
            }
            _ => {}
        }
    }
    request
}

/// Asks Service Usage, Compute Engine and the registries whether applying `plan` (or, with
/// no plan, creating the whole stack) would fail for a reason that is already visible: a
/// disabled API, a machine type or zone that does not exist, a CPU quota too small for the
/// clusters it creates, an image that is not in its registry. A stack without gke clusters
/// asks nothing.
pub fn preflight(stack: &Stack, plan: Option<&Plan>, apis: &gcp::Apis) -> Preflight {
    preflight_with(stack, plan, None, apis)
}

/// Images a command may run besides the ones the stack declares: a tune space's `image`
/// values, run on `serving`, reported at `attribute` of the block at `span` (named `label`).
#[derive(Debug, Clone)]
pub struct ExtraImages {
    pub serving: Address,
    pub images: Vec<String>,
    pub label: String,
    pub span: crate::vocab::resources::Span,
    pub attribute: &'static str,
}

/// As [`preflight`], with `extra` images checked too (and located at their own block).
pub fn preflight_with(
    stack: &Stack,
    plan: Option<&Plan>,
    extra: Option<&ExtraImages>,
    apis: &gcp::Apis,
) -> Preflight {
    let mut request = preflight_request(stack, plan);
    if request.clusters.is_empty() {
        return Preflight::default();
    }
    // Only a serving resource on a gke cluster pulls from the registries asked here.
    let on_gke = |serving: &Address| {
        stack.resources.iter().any(|r| {
            &r.address == serving
                && matches!(&r.config, crate::vocab::resources::ResourceConfig::Serving(s)
                    if request.clusters.iter().any(|c| c.address == s.cluster))
        })
    };
    if let Some(x) = extra.filter(|x| on_gke(&x.serving)) {
        for image in &x.images {
            request.images.push(gke::preflight::ImageItem {
                address: x.serving.clone(),
                attribute: x.attribute,
                image: image.clone(),
            });
        }
    }
    let report = gke::preflight::run(&request, apis);
    let span_of = |a: &Address| {
        stack
            .resources
            .iter()
            .find(|r| &r.address == a)
            .map(|r| r.span.clone())
    };
    // A finding about an extra image: at its own block, under its own name.
    let extra_at = |f: &gke::preflight::Finding| {
        extra.filter(|x| f.address.as_ref() == Some(&x.serving) && f.attribute == Some(x.attribute))
    };
    let mut out = Preflight {
        ran: true,
        machine_shapes: report.machine_types.iter().cloned().collect(),
        ..Preflight::default()
    };
    for f in &report.findings {
        if let (gke::preflight::Severity::Error, Some(x)) = (f.severity, extra_at(f)) {
            out.errors.push(crate::stack::attribute_diagnostic(
                &x.span,
                Some(x.attribute),
                format!("{}: {}", x.label, f.message),
                f.fix.clone(),
            ));
            continue;
        }
        let at = match extra_at(f) {
            Some(x) => Some(x.label.clone()),
            None => f.address.as_ref().map(|a| a.to_string()),
        };
        match (f.severity, f.address.as_ref().and_then(span_of)) {
            (gke::preflight::Severity::Error, Some(span)) => {
                out.errors.push(crate::stack::attribute_diagnostic(
                    &span,
                    f.attribute,
                    format!("{}: {}", at.unwrap_or_default(), f.message),
                    f.fix.clone(),
                ));
            }
            (gke::preflight::Severity::Error, None) => out.errors.push(crate::stack::Diagnostic {
                location: crate::stack::Location::Input(at.unwrap_or_else(|| "preflight".into())),
                message: f.message.clone(),
                help: f.fix.clone(),
                note: None,
            }),
            (gke::preflight::Severity::Warning, _) => out.warnings.push(match (at, &f.fix) {
                (Some(a), Some(fix)) => format!("{a}: {} ({fix})", f.message),
                (Some(a), None) => format!("{a}: {}", f.message),
                (None, Some(fix)) => format!("{} ({fix})", f.message),
                (None, None) => f.message.clone(),
            }),
        }
    }
    out.errors.finish();
    out
}

/// The preflight of a command that applies serving configurations of its own through
/// targeted plans (`tune`'s trials, `compare`'s two sides): what it checks the quotas against
/// is the plan of what those serving resources stand on (their clusters, models and images;
/// the serving resources themselves are left out, so that a configuration that does not fit
/// its nodes is the command's to report, not a failed plan here). `None` when the stack has
/// no gke cluster (nothing is asked, no plan is made).
pub fn preflight_servings(
    stack: &Stack,
    store: &Store,
    providers: &Providers,
    servings: &[Address],
    extra: Option<&ExtraImages>,
    apis: &gcp::Apis,
) -> miette::Result<Option<Preflight>> {
    if preflight_request(stack, None).clusters.is_empty() {
        return Ok(None);
    }
    let mut targets: Vec<Address> = Vec::new();
    for r in stack
        .resources
        .iter()
        .filter(|r| servings.contains(&r.address))
    {
        for d in &r.depends_on {
            if !servings.contains(d) && !targets.contains(d) {
                targets.push(d.clone());
            }
        }
    }
    let plan = if targets.is_empty() {
        None
    } else {
        let snap = store.snapshot().map_err(|e| miette!("{e}"))?;
        let outputs = store.outputs().map_err(|e| miette!("{e}"))?;
        let observer = ProviderReader {
            providers,
            state_dir: store.dir(),
        };
        let observe: &dyn crate::provider::LiveReader = &observer;
        let opts = PlanOptions {
            targets,
            ..PlanOptions::default()
        };
        Some(
            refresh::plan(Some(stack), &snap, outputs, Some(observe), &opts)
                .map_err(|e| miette!("{e}"))?,
        )
    };
    Ok(Some(preflight_with(stack, plan.as_ref(), extra, apis)))
}

/// The local state directory when nothing else names one.
pub const DEFAULT_STATE_DIR: &str = "state";

/// Where a command's state is. In order: `--state` (or `BENCHSTACK_STATE`), which overrides
/// everything; the stack's `backend "gcs"` block, for commands given a stack, which binds the
/// working directory to it (`state::workdir`, as `terraform init` does); the working
/// directory's binding, for commands without a stack; the local `./state`. A stack whose
/// backend differs from the binding is refused, naming both, until `state migrate` moves the
/// state (Terraform's "Backend configuration changed").
#[derive(Debug, Clone, Default)]
pub struct StateArg {
    /// `--state` / `BENCHSTACK_STATE`.
    pub flag: Option<PathBuf>,
}

impl StateArg {
    /// True when `--state` or `BENCHSTACK_STATE` named the state.
    pub fn named(&self) -> bool {
        self.flag.is_some()
    }

    /// The state of a command given `stack`.
    pub fn for_stack(&self, stack: &Stack) -> miette::Result<PathBuf> {
        if let Some(flag) = &self.flag {
            // The flag wins; the block's key still applies to the bucket the block names.
            let kms = match (stack.backend.as_ref(), state_address(flag)?) {
                (Some(b), Some(a)) if a.bucket == b.bucket && a.prefix == b.prefix => {
                    b.kms_key_name.clone()
                }
                _ => None,
            };
            return resolve_flag(flag, kms.as_deref());
        }
        let cwd = current_dir()?;
        let bound = state::workdir::read(&cwd).map_err(|e| miette!("{e}"))?;
        match (&stack.backend, bound) {
            (Some(b), Some(d)) if d.gcs.bucket == b.bucket && d.gcs.prefix == b.prefix => {
                if d.kms_key_name != b.kms_key_name {
                    // A new key applies to what is written from now on; the state stays put.
                    state::workdir::write(
                        &cwd,
                        &state::workdir::DirBinding {
                            kms_key_name: b.kms_key_name.clone(),
                            ..d.clone()
                        },
                    )
                    .map_err(|e| miette!("{e}"))?;
                }
                bind_gcs(&d.gcs, b.kms_key_name.as_deref())
            }
            (Some(b), Some(d)) => Err(miette!(
                "Backend configuration changed: the stack's backend (at {}) names {}, but this directory's state is {} (bound by {}, recorded in {}).\n  \
                 To move the state there: `benchstack state migrate --to {}` (this directory is then bound to it).\n  \
                 To keep using {} for now: `--state {}`.",
                b.span,
                b.url(),
                d.gcs,
                d.bound_by,
                state::workdir::FILE,
                b.url(),
                d.gcs,
                d.gcs,
            )),
            (Some(b), None) => {
                if state::Store::exists(Path::new(DEFAULT_STATE_DIR), &storage()) {
                    return Err(miette!(
                        "the stack's backend (at {}) names {}, but this directory has a local state in ./{DEFAULT_STATE_DIR}: applying to the bucket would create everything again beside what the local state manages.\n  \
                         Copy it to the bucket first: `benchstack state migrate --to {}` (this directory is then bound to it), or move ./{DEFAULT_STATE_DIR} away to start from the bucket's state.",
                        b.span,
                        b.url(),
                        b.url(),
                    ));
                }
                let address = gcs_address(&b.url())?;
                state::workdir::write(
                    &cwd,
                    &state::workdir::DirBinding {
                        gcs: address.clone(),
                        kms_key_name: b.kms_key_name.clone(),
                        bound_by: format!("the backend block at {}", b.span),
                    },
                )
                .map_err(|e| miette!("{e}"))?;
                bind_gcs(&address, b.kms_key_name.as_deref())
            }
            (None, Some(d)) => Err(miette!(
                "Backend configuration changed: the stack has no backend block (its state would be ./{DEFAULT_STATE_DIR}), but this directory's state is {} (bound by {}, recorded in {}).\n  \
                 Add the backend block back, or move the state here: `benchstack state migrate --to {DEFAULT_STATE_DIR}` (this directory is then unbound).\n  \
                 For another state just this once: `--state DIR`.",
                d.gcs,
                d.bound_by,
                state::workdir::FILE,
            )),
            (None, None) => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        }
    }

    /// The state of a command without a stack: the flag, else the directory's binding, else
    /// the local `./state`.
    pub fn without_stack(&self) -> miette::Result<PathBuf> {
        if let Some(flag) = &self.flag {
            return resolve_flag(flag, None);
        }
        match state::workdir::read(&current_dir()?).map_err(|e| miette!("{e}"))? {
            Some(d) => bind_gcs(&d.gcs, d.kms_key_name.as_deref()),
            None => Ok(PathBuf::from(DEFAULT_STATE_DIR)),
        }
    }
}

fn current_dir() -> miette::Result<PathBuf> {
    std::env::current_dir().map_err(|e| miette!("cannot read the working directory: {e}"))
}

fn gcs_address(url: &str) -> miette::Result<state::gcs::Address> {
    state::gcs::Address::parse(url).map_err(|e| miette!("{e}"))
}

/// The GCS address `flag` names, if it names one.
fn state_address(flag: &Path) -> miette::Result<Option<state::gcs::Address>> {
    match flag.to_str() {
        Some(s) if s.starts_with("gs://") => state::gcs::Address::parse(s)
            .map(Some)
            .map_err(|e| miette!("--state: {e}")),
        _ => Ok(None),
    }
}

fn resolve_flag(flag: &Path, kms: Option<&str>) -> miette::Result<PathBuf> {
    match state_address(flag)? {
        Some(a) => bind_gcs(&a, kms),
        None => Ok(flag.to_path_buf()),
    }
}

fn bind_gcs(address: &state::gcs::Address, kms: Option<&str>) -> miette::Result<PathBuf> {
    state::gcs::bind(address, kms).map_err(|e| miette!("{e}"))
}

/// `enable_apis = true`: enables the disabled APIs the plan's stack needs in those clusters'
/// projects, before anything is applied (nothing for a destroy, a plan without changes, or a
/// stack without such a cluster). `progress` hears each step.
pub fn enable_apis(
    plan: &Plan,
    apis: &gcp::Apis,
    progress: &dyn Fn(String),
) -> Result<gke::services::Enabled, gke::services::EnableError> {
    let Some(stack) = plan
        .stack
        .as_ref()
        .filter(|_| !plan.destroy && plan.has_changes())
    else {
        return Ok(gke::services::Enabled::default());
    };
    let request = preflight_request(stack, Some(plan));
    gke::services::enable(
        &request,
        apis,
        std::time::Duration::from_millis(500),
        progress,
    )
}
