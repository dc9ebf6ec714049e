//! Operations the commands share (cargo's `ops` pattern): reading the flags plan, apply and
//! destroy have in common, loading a stack with its variables, checking its providers,
//! opening the state, planning with refresh, and the remote preflight of a plan on GKE.
//! Commands call these and print; nothing here prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::miette;

use crate::plan::{Plan, PlanOptions};
use crate::provider::{Observer, Providers, cluster_providers, gke, provider_for};
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
    crate::stack::load(path, &inputs).map_err(miette::Report::new)
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

/// The state as last published, read without the lock (None: nothing applied yet).
pub fn open_view(dir: &Path) -> miette::Result<Option<state::View>> {
    state::View::open(dir).map_err(|e| miette!("{e}"))
}

pub fn make_plan(
    stack: Option<&Stack>,
    store: &Store,
    providers: &Providers,
    flags: &PlanFlags,
    destroy: bool,
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
        destroy,
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
    destroy: bool,
) -> miette::Result<Plan> {
    let opts = PlanOptions {
        targets: parse_addresses("target", &flags.targets)?,
        replace: parse_addresses("replace", &flags.replace)?,
        destroy,
    };
    let observer = Observer {
        providers,
        state_dir,
    };
    let observe: Option<&dyn crate::provider::Observe> =
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
    /// Compute Engine described a machine type differently from the built-in table (or one
    /// the table lacks): a plan made before has to be made again for the capacity check.
    pub reshaped: bool,
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
pub fn preflight(stack: &Stack, plan: Option<&Plan>) -> Preflight {
    let request = preflight_request(stack, plan);
    if request.clusters.is_empty() {
        return Preflight::default();
    }
    let report = gke::preflight::run(&request, &gke::preflight::Endpoints::from_env());
    let span_of = |a: &Address| {
        stack
            .resources
            .iter()
            .find(|r| &r.address == a)
            .map(|r| r.span.clone())
    };
    let mut out = Preflight {
        ran: true,
        reshaped: report.reshaped(),
        ..Preflight::default()
    };
    for f in &report.findings {
        let at = f.address.as_ref().map(|a| a.to_string());
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

/// `enable_apis = true`: enables the disabled APIs the plan's stack needs in those clusters'
/// projects, before anything is applied (nothing for a destroy, a plan without changes, or a
/// stack without such a cluster). `progress` hears each step.
pub fn enable_apis(
    plan: &Plan,
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
        &gke::preflight::Endpoints::from_env(),
        std::time::Duration::from_millis(500),
        progress,
    )
}
