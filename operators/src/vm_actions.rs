//! The VM Action controller: an Action created without going through the
//! tenant routes (kubectl apply of an Action) is checked here and bound to
//! the node of its pod, so that node's agent carries it out; finished
//! Actions are deleted after a retention. Each instance handles the Actions
//! whose UID falls in its share of the one sharding ring.

use std::sync::Arc;
use std::time::Duration;

use arktos_crds::vm::NODE_LABEL;
use arktos_crds::vm::action::{Action, ActionPhase, check_pod};
use arktos_crds::vm::shape::Observed;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action as Next, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::sharding::Stop;
use crate::sharding::ring::Range;

const FIELD_MANAGER: &str = "arktos-operators";
/// How often an Action whose pod is not scheduled yet is looked at again.
const UNSCHEDULED_RETRY: Duration = Duration::from_secs(5);

struct Context {
    client: kube::Client,
    range: Range,
    retention: Duration,
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Runs until `stop` resolves, on the Actions of `range` (all without a shard).
pub async fn run(client: kube::Client, range: Option<Range>, retention: Duration, stop: Stop) {
    let context = Arc::new(Context {
        client: client.clone(),
        range: range.unwrap_or(Range::ALL),
        retention,
    });
    Controller::new(Api::<Action>::all(client), watcher::Config::default())
        .with_config(controller::Config::default().debounce(Duration::from_millis(200)))
        .graceful_shutdown_on(async move {
            let _ = stop.await;
        })
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            if let Err(err) = outcome {
                tracing::debug!(error = %err, "Action reconcile outcome");
            }
        })
        .await;
}

#[tracing::instrument(
    name = "action",
    skip_all,
    fields(namespace = action.namespace().unwrap_or_default(), name = %action.name_any())
)]
async fn reconcile(action: Arc<Action>, context: Arc<Context>) -> Result<Next, Error> {
    let uid = action.uid().unwrap_or_default();
    if !context.range.owns(&uid) {
        return Ok(Next::await_change());
    }
    let namespace = action.namespace().unwrap_or_default();
    let actions: Api<Action> = Api::namespaced(context.client.clone(), &namespace);
    let status = action.status.clone().unwrap_or_default();
    if status.phase.is_done() {
        let finished = status
            .completion_time
            .map(|t| t.0)
            .or_else(|| action.creation_timestamp().map(|t| t.0))
            .unwrap_or_else(Timestamp::now);
        let age = Timestamp::now().duration_since(finished).unsigned_abs();
        if age >= context.retention {
            tracing::info!(action = %action.name_any(), %namespace, "deleting a finished Action after its retention");
            match actions
                .delete(&action.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(Next::await_change());
        }
        return Ok(Next::requeue(context.retention - age));
    }
    if action.labels().contains_key(NODE_LABEL) {
        return Ok(Next::await_change());
    }
    let operation = match action.spec.operation() {
        Ok(operation) => operation,
        Err(errors) => {
            let why: Vec<String> = errors.iter().map(|e| e.message()).collect();
            fail(&actions, &action, &why.join("; ")).await?;
            return Ok(Next::await_change());
        }
    };
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let Some(pod) = pods.get_opt(&action.spec.pod_name).await? else {
        fail(
            &actions,
            &action,
            &format!("pod {:?} not found", action.spec.pod_name),
        )
        .await?;
        return Ok(Next::await_change());
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let observed = Observed::from_annotation(
        pod.annotations()
            .get(arktos_crds::vm::annotations::OBSERVED)
            .map(String::as_str),
    );
    if let Err(error) = check_pod(
        &action.spec.pod_name,
        spec.runtime_class_name.as_deref(),
        &observed,
        &operation,
    ) {
        fail(&actions, &action, &error.message()).await?;
        return Ok(Next::await_change());
    }
    let Some(node) = spec.node_name else {
        return Ok(Next::requeue(UNSCHEDULED_RETRY));
    };
    let bind = json!({"metadata": {"labels": {NODE_LABEL: node}}});
    actions
        .patch(
            &action.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&bind),
        )
        .await?;
    tracing::info!(action = %action.name_any(), %namespace, %node, "Action bound to its pod's node");
    Ok(Next::await_change())
}

async fn fail(actions: &Api<Action>, action: &Action, why: &str) -> Result<(), Error> {
    tracing::info!(action = %action.name_any(), why, "Action refused");
    let status = json!({"status": {
        "phase": ActionPhase::Failed, "message": why, "completionTime": Time(Timestamp::now()),
        "conditions": [{"type": "Complete", "status": "False", "reason": "Invalid", "message": why,
            "lastTransitionTime": Time(Timestamp::now())}],
    }});
    actions
        .patch_status(
            &action.name_any(),
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&status),
        )
        .await?;
    Ok(())
}

fn error_policy(action: Arc<Action>, error: &Error, _context: Arc<Context>) -> Next {
    tracing::warn!(action = %action.name_any(), %error, "Action reconcile failed; retrying");
    Next::requeue(Duration::from_secs(2))
}
