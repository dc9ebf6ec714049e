//! The Kubernetes objects for a serving resource (Namespace, ConfigMap, Deployment, Service)
//! and for a distributed load test (an Indexed Job of `benchstack worker` pods): exactly what
//! the kubernetes provider sends with server-side apply and what `benchstack render` writes.
//! Deterministic, so renders and plans diff cleanly.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, Namespace, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use super::capacity::Rollout;
use super::{
    BATCHING_PARAMETERS, FilePaths, MODELS_CONFIG, MONITORING_CONFIG, ManifestError, ModelPaths,
    batching_parameters, flag_list, models_config, monitoring_config,
};
use crate::vocab::resources::{Address, LoadtestConfig, ModelConfig, ServingConfig};

/// The rendered file holding a serving resource's objects (plans diff it; render writes it).
pub const KUBERNETES_YAML: &str = "kubernetes.yaml";
/// Every object benchstack makes lives in this namespace.
pub const NAMESPACE: &str = "benchstack";
pub const FIELD_MANAGER: &str = "benchstack";
pub const GRPC_PORT: u16 = 8500;
pub const REST_PORT: u16 = 8501;
/// The serving container's name (cAdvisor labels its metrics with it).
pub const SERVING_CONTAINER: &str = "tensorflow-serving";
/// Where the ConfigMap is mounted in the serving container.
pub const CONFIG_DIR: &str = "/config";
pub const DEFAULT_CPU: &str = "1";
pub const DEFAULT_MEMORY: &str = "1Gi";
/// The port a worker serves its clock and takes the common start on (gang start, through
/// the API server's pod proxy); also its readiness probe.
pub const WORKER_CONTROL_PORT: u16 = 8089;
/// The environment variable a worker learns its pod IP from (the downward API).
pub const WORKER_POD_IP_ENV: &str = "POD_IP";

/// The environment variable that carries the run's control token into every worker pod:
/// the coordinator makes one per run, and a worker takes the common start only from a
/// request that carries it. Anyone who can read the Job can read it, the same people who
/// could create pods in the namespace and so run anything there anyway.
pub const WORKER_TOKEN_ENV: &str = "BENCHSTACK_WORKER_TOKEN";

/// The environment variable that carries a worker's spec (JSON) into its pod.
pub const WORKER_SPEC_ENV: &str = "BENCHSTACK_WORKER_SPEC";
/// Linux refuses to exec with one environment string over 128 KiB (MAX_ARG_STRLEN); stay
/// clear of it so a pod never fails to start on its own spec.
pub const MAX_WORKER_SPEC_BYTES: usize = 120 * 1024;

pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// The resource address in a label-safe form (`serving.tf`, `loadtest.sweep.small`).
pub const LABEL_ADDRESS: &str = "benchstack.dev/address";

/// A DNS-1035 label for an address: the name, with a for_each key appended
/// (`serving.tf["small"]` → `tf-small`), lower-cased, other characters as `-`, at most 63.
pub fn object_name(address: &Address) -> String {
    let mut raw = address.name.clone();
    if let Some(k) = &address.key {
        raw.push('-');
        raw.push_str(k);
    }
    dns_label(&raw)
}

fn dns_label(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let mut out = out.trim_matches('-').to_string();
    if !out.starts_with(|c: char| c.is_ascii_lowercase()) {
        out.insert_str(0, "x-");
    }
    out.truncate(63);
    out.trim_end_matches('-').to_string()
}

fn address_label(address: &Address) -> String {
    let mut s = format!("{}.{}", address.kind.as_str(), address.name);
    if let Some(k) = &address.key {
        s.push('.');
        s.push_str(k);
    }
    // Label values: alphanumerics, '-', '_', '.', at most 63, alphanumeric at both ends.
    let mut v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    v.truncate(63);
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

fn labels(address: &Address, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_NAME.to_string(), object_name(address)),
        (LABEL_COMPONENT.to_string(), component.to_string()),
        (LABEL_MANAGED_BY.to_string(), "benchstack".to_string()),
        (LABEL_ADDRESS.to_string(), address_label(address)),
    ])
}

fn meta(name: &str, labels: &BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(NAMESPACE.to_string()),
        labels: Some(labels.clone()),
        ..Default::default()
    }
}

pub fn namespace() -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.to_string()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_string(),
                "benchstack".to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// The objects of one serving resource, in the order they are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ServingObjects {
    pub namespace: Namespace,
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
}

impl ServingObjects {
    /// The object (and Deployment, Service, ConfigMap) name.
    pub fn name(&self) -> &str {
        self.deployment.metadata.name.as_deref().unwrap_or_default()
    }

    /// A multi-document kubernetes.yaml of all four, in apply order.
    pub fn to_yaml(&self) -> Result<String, ManifestError> {
        yaml_documents(&[
            &to_json(&self.namespace)?,
            &to_json(&self.config_map)?,
            &to_json(&self.deployment)?,
            &to_json(&self.service)?,
        ])
    }
}

impl ServingObjects {
    /// Reads back a kubernetes.yaml that [`ServingObjects::to_yaml`] wrote (the plan's
    /// rendered file): the provider applies these very objects rather than rendering its own.
    pub fn from_yaml(text: &str) -> Result<ServingObjects, ManifestError> {
        let bad = |why: String| ManifestError::Rendered(format!("{KUBERNETES_YAML}: {why}"));
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(text).map_err(|e| bad(e.to_string()))?;
        let [namespace, config_map, deployment, service] = <[serde_json::Value; 4]>::try_from(docs)
            .map_err(|d| {
                bad(format!(
                    "{} documents where Namespace, ConfigMap, Deployment and Service were rendered",
                    d.len()
                ))
            })?;
        fn object<T: serde::de::DeserializeOwned>(
            v: serde_json::Value,
            kind: &str,
        ) -> Result<T, ManifestError> {
            if v["kind"] != kind {
                return Err(ManifestError::Rendered(format!(
                    "{KUBERNETES_YAML}: a {} where the {kind} was rendered",
                    v["kind"].as_str().unwrap_or("document without a kind")
                )));
            }
            serde_json::from_value(v)
                .map_err(|e| ManifestError::Rendered(format!("{KUBERNETES_YAML}: the {kind}: {e}")))
        }
        Ok(ServingObjects {
            namespace: object(namespace, "Namespace")?,
            config_map: object(config_map, "ConfigMap")?,
            deployment: object(deployment, "Deployment")?,
            service: object(service, "Service")?,
        })
    }

    /// Names `image` in the serving container: what only apply knows, the digest an
    /// `image = image.NAME` reference was built to (the plan rendered it symbolically).
    pub fn set_image(&mut self, image: &str) -> Result<(), ManifestError> {
        let container = self
            .deployment
            .spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .and_then(|p| {
                p.containers
                    .iter_mut()
                    .find(|c| c.name == SERVING_CONTAINER)
            })
            .ok_or_else(|| {
                ManifestError::Rendered(format!(
                    "{KUBERNETES_YAML}: the Deployment has no {SERVING_CONTAINER} container"
                ))
            })?;
        container.image = Some(image.to_string());
        Ok(())
    }
}

fn to_json<T: Serialize>(object: &T) -> Result<serde_json::Value, ManifestError> {
    serde_json::to_value(object).map_err(|e| ManifestError::Render(e.to_string()))
}

/// Objects as `---`-separated YAML documents.
pub fn yaml_documents(objects: &[&serde_json::Value]) -> Result<String, ManifestError> {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        let doc = serde_saphyr::to_string(o).map_err(|e| ManifestError::Render(e.to_string()))?;
        out.push_str(&doc);
        if !doc.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// Namespace, ConfigMap (models.config, monitoring.config, batching_parameters.txt), Deployment (the stack's
/// image, replicas and TF Serving flags, ports 8500/8501, requests, a readiness probe on the
/// REST model status) and a LoadBalancer Service (8500 grpc, 8501 rest).
pub fn serving_objects(
    address: &Address,
    serving: &ServingConfig,
    models: &[ModelConfig],
    rollout: Rollout,
) -> Result<ServingObjects, ManifestError> {
    let name = object_name(address);
    let image = serving
        .image
        .clone()
        .ok_or_else(|| ManifestError::MissingImage(address.to_string()))?;
    let labels = labels(address, "serving");
    let selector = BTreeMap::from([
        (LABEL_NAME.to_string(), name.clone()),
        (LABEL_COMPONENT.to_string(), "serving".to_string()),
    ]);

    let mut data = BTreeMap::new();
    data.insert(
        MODELS_CONFIG.to_string(),
        models_config(models, ModelPaths::Image)?,
    );
    data.insert(MONITORING_CONFIG.to_string(), monitoring_config());
    if let Some(b) = &serving.batching {
        data.insert(BATCHING_PARAMETERS.to_string(), batching_parameters(b));
    }
    let config_map = ConfigMap {
        metadata: meta(&name, &labels),
        data: Some(data),
        ..Default::default()
    };

    let files = FilePaths::in_dir(CONFIG_DIR);
    let mut args = vec![
        format!("--port={GRPC_PORT}"),
        format!("--rest_api_port={REST_PORT}"),
    ];
    args.extend(flag_list(serving, &files)?);

    // The readiness probe asks for the first model's status: ready once it is loaded.
    let probe_model = models.first().ok_or(ManifestError::NoModels)?;
    let quantity = |q: &Option<String>, default: &str| {
        Quantity(q.clone().unwrap_or_else(|| default.to_string()))
    };
    let requests = BTreeMap::from([
        ("cpu".to_string(), quantity(&serving.cpu, DEFAULT_CPU)),
        (
            "memory".to_string(),
            quantity(&serving.memory, DEFAULT_MEMORY),
        ),
    ]);
    let container = Container {
        name: SERVING_CONTAINER.to_string(),
        image: Some(image),
        args: Some(args),
        ports: Some(vec![
            ContainerPort {
                name: Some("grpc".to_string()),
                container_port: i32::from(GRPC_PORT),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("rest".to_string()),
                container_port: i32::from(REST_PORT),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            },
        ]),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            ..Default::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some(format!("/v1/models/{}", probe_model.name)),
                port: IntOrString::String("rest".to_string()),
                ..Default::default()
            }),
            initial_delay_seconds: Some(5),
            period_seconds: Some(5),
            failure_threshold: Some(60),
            ..Default::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".to_string(),
            mount_path: CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let deployment = Deployment {
        metadata: meta(&name, &labels),
        spec: Some(DeploymentSpec {
            replicas: Some(serving.replicas as i32),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_string()),
                // Surge when the nodes have room for one more pod; otherwise an old pod must go
                // first, or the new one stays Pending and the rollout never ends.
                rolling_update: Some(match rollout {
                    Rollout::Surge => RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(1)),
                        max_unavailable: Some(IntOrString::Int(0)),
                    },
                    Rollout::OneAtATime => RollingUpdateDeployment {
                        max_surge: Some(IntOrString::Int(0)),
                        max_unavailable: Some(IntOrString::Int(1)),
                    },
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    // A ConfigMap edit alone does not restart pods: the checksum does.
                    annotations: Some(BTreeMap::from([(
                        "benchstack.dev/config-sha256".to_string(),
                        config_checksum(config_map.data.as_ref()),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".to_string(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: name.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(&name, &labels),
        spec: Some(ServiceSpec {
            type_: Some("LoadBalancer".to_string()),
            selector: Some(selector),
            ports: Some(vec![
                ServicePort {
                    name: Some("grpc".to_string()),
                    port: i32::from(GRPC_PORT),
                    target_port: Some(IntOrString::String("grpc".to_string())),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("rest".to_string()),
                    port: i32::from(REST_PORT),
                    target_port: Some(IntOrString::String("rest".to_string())),
                    protocol: Some("TCP".to_string()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(ServingObjects {
        namespace: namespace(),
        config_map,
        deployment,
        service,
    })
}

fn config_checksum(data: Option<&BTreeMap<String, String>>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in data.into_iter().flatten() {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The Indexed Job of a distributed load test: `workers` pods of `benchstack worker`, each
/// given the whole spec (JSON, in `BENCHSTACK_WORKER_SPEC`) and its index by Kubernetes
/// (`JOB_COMPLETION_INDEX`). `name` is the Job's name (unique per run).
pub fn loadtest_job(
    address: &Address,
    loadtest: &LoadtestConfig,
    name: &str,
    spec_json: &str,
    token: &str,
) -> Result<Job, ManifestError> {
    let image = loadtest
        .loadgen_image
        .clone()
        .ok_or_else(|| ManifestError::MissingLoadgenImage(address.to_string()))?;
    if spec_json.len() > MAX_WORKER_SPEC_BYTES {
        return Err(ManifestError::WorkerSpecTooLarge {
            bytes: spec_json.len(),
        });
    }
    let labels = labels(address, "loadgen");
    let workers = loadtest.workers.max(1) as i32;
    Ok(Job {
        metadata: meta(name, &labels),
        spec: Some(JobSpec {
            completion_mode: Some("Indexed".to_string()),
            completions: Some(workers),
            parallelism: Some(workers),
            // One replacement pod: a worker lost after the common start (evicted, OOM-killed)
            // is replaced and handed the same start, so the run still completes and is
            // stored as invalid with the reason, never silently short of a worker. A second
            // failure fails the Job. (A failure before the start fails the run at once.)
            backoff_limit: Some(1),
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    containers: vec![Container {
                        name: "worker".to_string(),
                        image: Some(image),
                        args: Some(vec!["worker".to_string()]),
                        env: Some(vec![
                            EnvVar {
                                name: WORKER_SPEC_ENV.to_string(),
                                value: Some(spec_json.to_string()),
                                ..Default::default()
                            },
                            EnvVar {
                                name: WORKER_TOKEN_ENV.to_string(),
                                value: Some(token.to_string()),
                                ..Default::default()
                            },
                            // The control port is bound on the pod's own address
                            // (https://kubernetes.io/docs/concepts/workloads/pods/downward-api/).
                            EnvVar {
                                name: WORKER_POD_IP_ENV.to_string(),
                                value_from: Some(EnvVarSource {
                                    field_ref: Some(ObjectFieldSelector {
                                        field_path: "status.podIP".to_string(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]),
                        ports: Some(vec![ContainerPort {
                            name: Some("control".to_string()),
                            container_port: i32::from(WORKER_CONTROL_PORT),
                            ..Default::default()
                        }]),
                        // Ready once it serves its clock: the coordinator publishes the
                        // common start only when every worker is.
                        readiness_probe: Some(Probe {
                            http_get: Some(HTTPGetAction {
                                path: Some("/clock".to_string()),
                                port: IntOrString::Int(i32::from(WORKER_CONTROL_PORT)),
                                ..Default::default()
                            }),
                            period_seconds: Some(1),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The Job as one YAML document.
pub fn job_yaml(job: &Job) -> Result<String, ManifestError> {
    yaml_documents(&[&to_json(job)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::resources::{BatchingConfig, FlagValue, Kind};

    fn addr(kind: Kind, name: &str, key: Option<&str>) -> Address {
        Address {
            kind,
            name: name.into(),
            key: key.map(String::from),
        }
    }

    /// The original experiment's settings.
    fn original() -> ServingConfig {
        ServingConfig {
            cluster: addr(Kind::Cluster, "serving", None),
            image: Some("tensorflow/serving:2.19.0".into()),
            image_from: None,
            replicas: 3,
            models: vec![addr(Kind::Model, "regression", None)],
            flags: BTreeMap::from([
                (
                    "tensorflow_intra_op_parallelism".to_string(),
                    FlagValue::Int(4),
                ),
                (
                    "tensorflow_inter_op_parallelism".to_string(),
                    FlagValue::Int(4),
                ),
            ]),
            batching: Some(BatchingConfig {
                max_batch_size: Some(8000),
                batch_timeout_micros: Some(4),
                max_enqueued_batches: Some(100),
                num_batch_threads: Some(4),
                ..Default::default()
            }),
            cpu: None,
            memory: None,
        }
    }

    fn model() -> ModelConfig {
        ModelConfig {
            name: "regression".into(),
            base_path: "/here/examples/model/regression".into(),
            serving_path: Some("/models/regression".into()),
        }
    }

    #[test]
    fn the_deployment_carries_the_original_experiments_arguments() {
        let o = serving_objects(
            &addr(Kind::Serving, "tf", None),
            &original(),
            &[model()],
            Rollout::Surge,
        )
        .unwrap();
        let spec = o.deployment.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let c = &spec.template.spec.as_ref().unwrap().containers[0];
        assert_eq!(
            c.args.as_ref().unwrap(),
            &[
                "--port=8500",
                "--rest_api_port=8501",
                "--model_config_file=/config/models.config",
                "--monitoring_config_file=/config/monitoring.config",
                "--enable_batching=true",
                "--batching_parameters_file=/config/batching_parameters.txt",
                "--tensorflow_inter_op_parallelism=4",
                "--tensorflow_intra_op_parallelism=4",
            ]
        );
        let data = o.config_map.data.as_ref().unwrap();
        assert!(data["models.config"].contains("base_path: \"/models/regression\""));
        // TF Serving's Prometheus page on, where benchstack scrapes it.
        assert_eq!(
            data["monitoring.config"],
            crate::manifest::monitoring_config()
        );
        assert!(
            data["monitoring.config"].contains("path: \"/monitoring/prometheus/metrics\""),
            "{}",
            data["monitoring.config"]
        );
        assert_eq!(
            data["batching_parameters.txt"],
            "max_batch_size { value: 8000 }\nbatch_timeout_micros { value: 4 }\nmax_enqueued_batches { value: 100 }\nnum_batch_threads { value: 4 }\n"
        );
        let svc = o.service.spec.as_ref().unwrap();
        assert_eq!(svc.type_.as_deref(), Some("LoadBalancer"));
        let ports: Vec<i32> = svc.ports.as_ref().unwrap().iter().map(|p| p.port).collect();
        assert_eq!(ports, [8500, 8501]);
    }

    #[test]
    fn a_deployment_without_room_for_a_surge_pod_replaces_one_pod_at_a_time() {
        let strategy = |rollout| {
            let o = serving_objects(
                &addr(Kind::Serving, "tf", None),
                &original(),
                &[model()],
                rollout,
            )
            .unwrap();
            let ru = o
                .deployment
                .spec
                .unwrap()
                .strategy
                .unwrap()
                .rolling_update
                .unwrap();
            (ru.max_surge.unwrap(), ru.max_unavailable.unwrap())
        };
        assert_eq!(
            strategy(Rollout::Surge),
            (IntOrString::Int(1), IntOrString::Int(0))
        );
        assert_eq!(
            strategy(Rollout::OneAtATime),
            (IntOrString::Int(0), IntOrString::Int(1))
        );
    }

    #[test]
    fn the_rendered_yaml_reads_back_as_the_same_objects_and_only_the_image_is_set() {
        let mut s = original();
        s.image = Some("us-docker.pkg.dev/p/r/tf@(digest of image.serving)".into());
        let o = serving_objects(
            &addr(Kind::Serving, "tf", None),
            &s,
            &[model()],
            Rollout::OneAtATime,
        )
        .unwrap();
        let yaml = o.to_yaml().unwrap();
        let mut read = ServingObjects::from_yaml(&yaml).unwrap();
        assert_eq!(read, o);
        let digest = "us-docker.pkg.dev/p/r/tf@sha256:".to_string() + &"a".repeat(64);
        read.set_image(&digest).unwrap();
        let mut expected = o.clone();
        expected
            .deployment
            .spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some(digest);
        assert_eq!(read, expected);
    }

    #[test]
    fn a_rendered_yaml_that_is_not_four_serving_objects_is_refused() {
        let o = serving_objects(
            &addr(Kind::Serving, "tf", None),
            &original(),
            &[model()],
            Rollout::Surge,
        )
        .unwrap();
        let yaml = o.to_yaml().unwrap();
        let three: String = yaml
            .split("---\n")
            .take(4)
            .collect::<Vec<_>>()
            .join("---\n");
        let e = ServingObjects::from_yaml(&three).unwrap_err().to_string();
        assert!(e.contains("3 documents"), "{e}");
        let swapped = yaml.replacen("kind: ConfigMap", "kind: Secret", 1);
        let e = ServingObjects::from_yaml(&swapped).unwrap_err().to_string();
        assert!(
            e.contains("a Secret where the ConfigMap was rendered"),
            "{e}"
        );
        assert!(ServingObjects::from_yaml(": [").is_err());
    }

    #[test]
    fn yaml_has_four_documents_with_api_version_and_kind() {
        let o = serving_objects(
            &addr(Kind::Serving, "tf", None),
            &original(),
            &[model()],
            Rollout::Surge,
        )
        .unwrap();
        let yaml = o.to_yaml().unwrap();
        assert_eq!(yaml.matches("---\n").count(), 4, "{yaml}");
        for kind in ["Namespace", "ConfigMap", "Deployment", "Service"] {
            assert!(yaml.contains(&format!("kind: {kind}")), "{kind} in\n{yaml}");
        }
        assert!(yaml.contains("apiVersion: apps/v1"), "{yaml}");
    }

    #[test]
    fn a_batching_change_changes_the_pod_template() {
        let a = serving_objects(
            &addr(Kind::Serving, "tf", None),
            &original(),
            &[model()],
            Rollout::Surge,
        )
        .unwrap();
        let mut changed = original();
        changed.batching.as_mut().unwrap().batch_timeout_micros = Some(1000);
        let b = serving_objects(
            &addr(Kind::Serving, "tf", None),
            &changed,
            &[model()],
            Rollout::Surge,
        )
        .unwrap();
        assert_ne!(
            a.deployment.spec.unwrap().template.metadata,
            b.deployment.spec.unwrap().template.metadata,
            "the config checksum must roll the pods"
        );
    }

    #[test]
    fn names_are_dns_labels() {
        assert_eq!(
            object_name(&addr(Kind::Serving, "tf", Some("small"))),
            "tf-small"
        );
        assert_eq!(
            object_name(&addr(Kind::Serving, "TF_main", Some("8 k"))),
            "tf-main-8-k"
        );
        assert_eq!(object_name(&addr(Kind::Serving, "1st", None)), "x-1st");
        assert_eq!(
            address_label(&addr(Kind::Serving, "tf", Some("a b"))),
            "serving.tf.a_b"
        );
    }

    #[test]
    fn a_worker_spec_too_large_for_an_environment_variable_is_refused() {
        let l = LoadtestConfig {
            cluster: addr(Kind::Cluster, "loadgen", None),
            target: addr(Kind::Serving, "tf", None),
            model: "regression".into(),
            signature: None,
            protocol: crate::vocab::load::Protocol::Grpc,
            request: crate::vocab::load::RequestSource::Body("{}".into()),
            workers: 2,
            start_tolerance_ms: 50,
            loadgen_image: Some("img".into()),
            loadgen_image_from: None,
            connections: 8,
            arrival: Default::default(),
            seed: 1,
            warmup: std::time::Duration::ZERO,
            timeout: std::time::Duration::from_secs(1),
            stages: vec![],
            slos: vec![],
        };
        let a = addr(Kind::Loadtest, "big", None);
        let job = loadtest_job(&a, &l, "big", "{}", "t0k3n").unwrap();
        // The gang start: the worker serves its clock on the control port (its readiness)
        // bound on its pod IP; one replacement for a worker lost after the start.
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(1));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        let c = &pod.containers[0];
        let probe = c
            .readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(probe.path.as_deref(), Some("/clock"));
        assert_eq!(probe.port, IntOrString::Int(i32::from(WORKER_CONTROL_PORT)));
        let pod_ip = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == WORKER_POD_IP_ENV)
            .unwrap();
        let token = c
            .env
            .iter()
            .flatten()
            .find(|e| e.name == WORKER_TOKEN_ENV)
            .unwrap();
        assert_eq!(token.value.as_deref(), Some("t0k3n"));
        assert_eq!(
            pod_ip
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "status.podIP"
        );
        let huge = "x".repeat(MAX_WORKER_SPEC_BYTES + 1);
        assert_eq!(
            loadtest_job(&a, &l, "big", &huge, "t0k3n"),
            Err(ManifestError::WorkerSpecTooLarge {
                bytes: MAX_WORKER_SPEC_BYTES + 1
            })
        );
    }

    #[test]
    fn serving_without_an_image_is_refused() {
        let mut s = original();
        s.image = None;
        assert_eq!(
            serving_objects(
                &addr(Kind::Serving, "tf", None),
                &s,
                &[model()],
                Rollout::Surge
            ),
            Err(ManifestError::MissingImage("serving.tf".into()))
        );
    }
}
