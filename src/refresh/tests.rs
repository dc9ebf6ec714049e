use std::collections::BTreeMap;

use super::*;
use crate::plan::tests::{action_of, addr, applied, local_stack, plan_for};
use crate::plan::{Action, render};
use crate::state::Intent;
use crate::vocab::resources::Kind;

/// Answers refresh and recovery for one address as told; everything else is present.
struct FakeObserve {
    address: Address,
    read: fn() -> Result<Observation, ProviderError>,
    recover: fn() -> Result<Option<Value>, ProviderError>,
}

impl FakeObserve {
    fn reads(address: Address, read: fn() -> Result<Observation, ProviderError>) -> Self {
        FakeObserve {
            address,
            read,
            recover: || Ok(None),
        }
    }
}

impl LiveReader for FakeObserve {
    fn read(&self, prior: &ResourceState) -> Result<Observation, ProviderError> {
        if prior.address == self.address {
            (self.read)()
        } else {
            Ok(Observation::Present(prior.observed.clone()))
        }
    }
    fn recover(
        &self,
        _: &Intent,
        _: Option<&ResourceState>,
    ) -> Result<Option<Value>, ProviderError> {
        (self.recover)()
    }
}

#[test]
fn refresh_recreates_a_serving_process_that_died() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Ok(Observation::Gone(
            "replica 1 (pid 42) is no longer running".into(),
        ))
    });
    let plan = plan(
        Some(&stack),
        &snap,
        BTreeMap::new(),
        Some(&obs),
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(
        action_of(&plan, "serving.tf"),
        (
            Action::Create,
            Some("replica 1 (pid 42) is no longer running".into())
        )
    );
    assert_eq!(action_of(&plan, "loadtest.lt").0, Action::Run);
}

#[test]
fn a_failed_refresh_stops_the_plan_naming_the_resource_and_is_never_a_replacement() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Err(ProviderError::new(
            crate::provider::ErrorKind::Unavailable,
            "reading Deployment benchstack/tf",
            "the server is currently unable to handle the request",
        ))
    });
    let err = plan(
        Some(&stack),
        &snap,
        BTreeMap::new(),
        Some(&obs),
        &PlanOptions::default(),
    )
    .unwrap_err();
    match &err {
        RefreshError::Refresh { address, error } => {
            assert_eq!(address.to_string(), "serving.tf");
            assert_eq!(
                error.message(),
                Some("the server is currently unable to handle the request")
            );
        }
        other => panic!("expected a refresh error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.starts_with("serving.tf: refresh failed: reading Deployment benchstack/tf: the server is currently unable"), "{text}");
    assert!(text.contains("--refresh=false"), "{text}");
}

#[test]
fn an_unsettled_resource_plans_no_change_and_carries_a_warning() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Ok(Observation::Unsettled {
            observed: serde_json::json!({}),
            warning: "cluster serving is DEGRADED: unhealthy nodes".into(),
        })
    });
    let plan = plan(
        Some(&stack),
        &snap,
        BTreeMap::new(),
        Some(&obs),
        &PlanOptions::default(),
    )
    .unwrap();
    assert!(!plan.has_changes(), "{}", render::text(&plan));
    assert_eq!(plan.warnings.len(), 1);
    assert_eq!(plan.warnings[0].address.to_string(), "serving.tf");
    assert_eq!(
        plan.to_json()["warnings"][0]["message"],
        "cluster serving is DEGRADED: unhealthy nodes"
    );
}

#[test]
fn a_resource_broken_for_good_is_replaced_with_the_reason() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let obs = FakeObserve::reads(addr(Kind::Serving, "tf"), || {
        Ok(Observation::Drifted("replica 2 (pid 43) exited".into()))
    });
    let plan = plan(
        Some(&stack),
        &snap,
        BTreeMap::new(),
        Some(&obs),
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(
        action_of(&plan, "serving.tf"),
        (Action::Replace, Some("replica 2 (pid 43) exited".into()))
    );
}

#[test]
fn a_failed_recovery_stops_the_plan_instead_of_planning_over_the_intent() {
    let stack = local_stack(8);
    let mut snap = applied(&plan_for(&stack, &Snapshot::default()));
    let a = addr(Kind::Serving, "tf");
    let prior = snap.resources[&a].clone();
    snap.intents.insert(
        a.clone(),
        Intent {
            address: a.clone(),
            operation: "update".into(),
            provider: "local".into(),
            config: Some(prior.config.clone()),
            depends_on: prior.depends_on.clone(),
            rendered: prior.rendered.clone(),
            upstream: BTreeMap::new(),
            data: Value::Null,
            pid: 1,
            started: 0,
        },
    );
    let obs = FakeObserve {
        address: a.clone(),
        read: || Ok(Observation::Present(Value::Null)),
        recover: || {
            Err(ProviderError::new(
                crate::provider::ErrorKind::Unavailable,
                "reading Deployment benchstack/tf",
                "connection refused",
            ))
        },
    };
    let err = plan(
        Some(&stack),
        &snap,
        BTreeMap::new(),
        Some(&obs),
        &PlanOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, RefreshError::Recover { address, .. } if *address == a),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(text.contains("serving.tf"), "{text}");
    assert!(text.contains("connection refused"), "{text}");
    assert!(text.contains("record is kept"), "{text}");
}

/// Gone for the cluster; an error for anything read on it.
struct ClusterGone;

impl LiveReader for ClusterGone {
    fn read(&self, prior: &ResourceState) -> Result<Observation, ProviderError> {
        match prior.address.kind {
            Kind::Cluster => Ok(Observation::Gone("deleted outside benchstack".into())),
            Kind::Model => Ok(Observation::Present(prior.observed.clone())),
            _ => Err(ProviderError::new(
                crate::provider::ErrorKind::Unavailable,
                "reading",
                "connection refused",
            )),
        }
    }
    fn recover(
        &self,
        _: &Intent,
        _: Option<&ResourceState>,
    ) -> Result<Option<Value>, ProviderError> {
        Ok(None)
    }
}

#[test]
fn what_runs_on_a_cluster_that_is_gone_is_created_again_without_being_read() {
    let stack = local_stack(8);
    let snap = applied(&plan_for(&stack, &Snapshot::default()));
    let plan = plan(
        Some(&stack),
        &snap,
        BTreeMap::new(),
        Some(&ClusterGone),
        &PlanOptions::default(),
    )
    .unwrap();
    assert_eq!(action_of(&plan, "cluster.local").0, Action::Create);
    assert_eq!(
        action_of(&plan, "serving.tf"),
        (
            Action::Create,
            Some("cluster.local no longer exists".into())
        )
    );
    assert_eq!(action_of(&plan, "loadtest.lt").0, Action::Run);
}
