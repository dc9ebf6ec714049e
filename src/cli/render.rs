//! `benchstack render STACK --out DIR`: the files apply would send, for review and GitOps.
//! Per serving resource `DIR/<name>/` holds models.config, batching_parameters.txt, the flag
//! list and (on a gke cluster) kubernetes.yaml with exactly the objects apply sends; per
//! distributed load test `DIR/loadtest-<name>/job.yaml` holds its Indexed Job.

use std::collections::BTreeMap;
use std::path::PathBuf;

use miette::{IntoDiagnostic, WrapErr, miette};

use super::validate::VarArgs;
use crate::manifest::k8s;
use crate::plan::render_resource;
use crate::provider::{cluster_providers, provider_for};
use crate::vocab::load::Protocol;
use crate::vocab::resources::{Address, ProviderKind, ResourceConfig, Stack};

/// What a rendered Job shows for the control token (`BENCHSTACK_WORKER_TOKEN`).
pub const RENDERED_TOKEN: &str = "(made by apply for each run)";

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A stack file or a directory of *.hcl files.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The directory to write into (created if missing; files benchstack writes are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub vars: VarArgs,
}

pub fn run(args: Args) -> miette::Result<super::Outcome> {
    let stack = match crate::stack::load(&args.path, &args.vars.var_inputs()) {
        Ok(s) => s,
        Err(diags) => {
            eprintln!("{diags}");
            return Ok(super::Outcome::Failed);
        }
    };
    let files = render_stack(&stack).map_err(|e| miette!("{e}"))?;
    for (rel, text) in &files {
        let path = args.out.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .into_diagnostic()
                .wrap_err_with(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    if files.is_empty() {
        println!("nothing to render: the stack has no serving resources or load tests");
    }
    Ok(super::Outcome::Success)
}

/// Every rendered file, keyed by its path relative to the output directory.
pub fn render_stack(stack: &Stack) -> Result<BTreeMap<PathBuf, String>, String> {
    let clusters: BTreeMap<&Address, ProviderKind> = stack
        .resources
        .iter()
        .filter_map(|r| match &r.config {
            ResourceConfig::Cluster(c) => Some((&r.address, c.provider)),
            _ => None,
        })
        .collect();
    let on_gke = |a: &Address| clusters.get(a) == Some(&ProviderKind::Gke);
    let kinds = cluster_providers(stack);
    let mut out = BTreeMap::new();
    for r in &stack.resources {
        let at = |e: &dyn std::fmt::Display| format!("{} ({}): {e}", r.address, r.span);
        match &r.config {
            ResourceConfig::Serving(_) => {
                let provider = provider_for(&r.config, &kinds);
                let dir = PathBuf::from(k8s::object_name(&r.address));
                for (name, text) in
                    // No remote call here: the rollout is sized from the built-in table.
                    render_resource(
                        r,
                        stack,
                        provider,
                        &crate::manifest::capacity::MachineShapes::default(),
                    )
                    .map_err(|e| e.to_string())?
                {
                    out.insert(dir.join(name), text);
                }
            }
            ResourceConfig::Loadtest(l) if on_gke(&l.cluster) => {
                // The serving endpoints exist only after apply.
                let (scheme, port) = match l.protocol {
                    Protocol::Rest => ("http", k8s::REST_PORT),
                    Protocol::Grpc => ("grpc", k8s::GRPC_PORT),
                };
                let target = format!(
                    "{scheme}://{}-known-after-apply:{port}",
                    k8s::object_name(&l.target)
                );
                let mut spec = l.worker_spec(vec![target]).map_err(|e| at(&e))?;
                // As apply runs it: a gang start through the workers' control port.
                spec.control_port = Some(k8s::WORKER_CONTROL_PORT);
                let json = serde_json::to_string(&spec).map_err(|e| at(&e))?;
                let name = k8s::object_name(&r.address);
                let mut l = l.clone();
                if let Some(image) = &l.loadgen_image_from {
                    l.loadgen_image = Some(crate::plan::symbolic_image(stack, image));
                }
                // The control token is made by apply for each run; a rendered file is no
                // place for a secret.
                let job = k8s::loadtest_job(&r.address, &l, &name, &json, RENDERED_TOKEN)
                    .map_err(|e| at(&e))?;
                out.insert(
                    PathBuf::from(format!("loadtest-{name}")).join("job.yaml"),
                    k8s::job_yaml(&job).map_err(|e| at(&e))?,
                );
            }
            _ => {}
        }
    }
    Ok(out)
}
