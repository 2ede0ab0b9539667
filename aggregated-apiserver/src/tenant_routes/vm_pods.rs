//! VM pods on the tenant routes: bodies in the Arktos shape are stored as
//! pods of RuntimeClass `arktos-vm` (and read back in that shape), patches
//! of a VM are applied to its Arktos shape and reach the cluster as a
//! `resize` (resources) plus an update (everything else), and
//! `POST pods/{name}/action` creates an `Action`.

use std::sync::Arc;

use arktos_crds::status::{self, FieldError, FieldErrorType, Subject};
use arktos_crds::vm::action::{self, ActionSpec, Operation};
use arktos_crds::vm::shape::{self, Observed};
use arktos_crds::vm::{NODE_LABEL, annotations};
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::{Value, json};
use warp::reply::Response;

use super::backend::{Outgoing, Rewrite};
use super::mapping::View;
use super::{TenantRoutes, join, with_query};
use crate::authn::UserInfo;
use crate::request::ApiRequest;

/// Resources whose objects hold a pod spec (the pod's or a template's).
pub fn holds_pods(group: &str, resource: &str) -> bool {
    matches!(
        (group, resource),
        ("", "pods" | "podtemplates" | "replicationcontrollers")
            | (
                "apps",
                "replicasets" | "deployments" | "statefulsets" | "daemonsets"
            )
            | ("batch", "jobs" | "cronjobs")
    )
}

/// An answer (object, list, watch event) with VM pods in the Arktos shape.
pub fn response(value: &mut Value) {
    if value_is_event(value) {
        if let Some(object) = value.get_mut("object") {
            shape::to_arktos(object);
        }
        return;
    }
    let kind = value["kind"].as_str().unwrap_or_default().to_string();
    if let Some(item_kind) = kind.strip_suffix("List") {
        for item in value["items"].as_array_mut().into_iter().flatten() {
            // List items carry no kind of their own.
            item["kind"] = item_kind.into();
            shape::to_arktos(item);
            if let Some(item) = item.as_object_mut() {
                item.remove("kind");
            }
        }
        return;
    }
    shape::to_arktos(value);
}

fn value_is_event(value: &Value) -> bool {
    value.get("type").is_some() && value.get("kind").is_none()
}

/// Whether a patch touches the Arktos-only parts of a pod.
pub fn patches_vm_shape(body: &[u8]) -> bool {
    let Ok(patch) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match &patch {
        Value::Array(operations) => operations.iter().any(|op| {
            op["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/spec/virtualMachine") || p == "/spec/nics")
        }),
        object => {
            object.pointer("/spec/virtualMachine").is_some()
                || object.pointer("/spec/nics").is_some()
        }
    }
}

fn pod_subject(name: &str) -> Subject<'_> {
    Subject {
        resource: "pods",
        kind: "Pod",
        name,
        ..Default::default()
    }
}

fn action_subject(name: &str) -> Subject<'_> {
    Subject {
        group: arktos_crds::vm::GROUP,
        resource: action::PLURAL,
        kind: action::KIND,
        name,
    }
}

/// Strategic-merge directives (`$patch`, `$setElementOrder/...`) have no
/// meaning on the Arktos shape, which has no merge keys.
fn drop_directives(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, _| !key.starts_with('$'));
            map.values_mut().for_each(drop_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_directives),
        _ => {}
    }
}

impl TenantRoutes {
    /// Converts a create or update body in the Arktos shape into storage
    /// form; `namespace` is the storage namespace (for `keyPairName`).
    pub(super) async fn vm_body(
        &self,
        user: &UserInfo,
        namespace: &str,
        kind: &str,
        body: &mut Value,
    ) -> Result<(), Status> {
        if body.get("kind").and_then(Value::as_str).is_none() {
            body["kind"] = kind.into();
        }
        let key_pair = match shape::key_pair_name(body) {
            Some(name) => self.public_key(user, namespace, &name).await?,
            None => None,
        };
        let name = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        shape::to_storage(body, key_pair.as_deref()).map_err(|errors| {
            status::invalid(
                &Subject {
                    kind,
                    name: &name,
                    ..Default::default()
                },
                &errors,
            )
        })
    }

    /// The public key of key pair Secret `name`, read as the user (so only
    /// a Secret they may read can be named).
    async fn public_key(
        &self,
        user: &UserInfo,
        namespace: &str,
        name: &str,
    ) -> Result<Option<String>, Status> {
        if name.is_empty() || name.contains('/') {
            return Ok(None);
        }
        let outgoing = Outgoing {
            as_user: Some(user),
            ..Outgoing::get_as_us(
                join(&["/api/v1/namespaces", namespace, "secrets", name]),
                "application/json",
            )
        };
        let (code, secret) = self.backend.json(outgoing).await?;
        match code {
            StatusCode::OK => Ok(shape::public_key_of_secret(&secret)),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(status::forbidden(
                &Subject {
                    resource: "secrets",
                    kind: "Secret",
                    name,
                    ..Default::default()
                },
                "the key pair named by keyPairName cannot be read",
            )),
        }
    }

    /// GET of a pod as the user, in storage form.
    async fn stored_pod(
        &self,
        user: &UserInfo,
        view: &View,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Status> {
        let outgoing = Outgoing {
            as_user: Some(user),
            ..Outgoing::get_as_us(pod_path(namespace, name), "application/json")
        };
        let (code, pod) = self.backend.json(outgoing).await?;
        if code.is_success() {
            return Ok(pod);
        }
        Err(backend_status(view, code, pod))
    }

    /// A patch of a VM pod's Arktos shape: applied to that shape, then
    /// resources go through the `resize` subresource (the kubelet resizes
    /// the running VM) and the rest as an update of the stored pod.
    pub(super) async fn patch_vm_pod(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        namespace: &str,
        name: &str,
        request: &ApiRequest,
        params: &[(String, String)],
    ) -> Result<Response, Status> {
        let current = self.stored_pod(user, &view, namespace, name).await?;
        let mut desired = patched_arktos(&current, name, &request.content_type(), &request.body)?;
        self.vm_body(user, namespace, "Pod", &mut desired).await?;
        view.request_body(&mut desired, false)?;

        let mut latest = current;
        let wanted_resources = desired.pointer("/spec/containers/0/resources").cloned();
        if wanted_resources != latest.pointer("/spec/containers/0/resources").cloned() {
            shape::check_resize(
                &observed_of(&latest),
                wanted_resources.as_ref().unwrap_or(&Value::Null),
            )
            .map_err(|errors| status::invalid(&pod_subject(name), &errors))?;
            let resize = json!([{"op": "replace", "path": "/spec/containers/0/resources",
                "value": wanted_resources.unwrap_or_else(|| json!({}))}]);
            latest = self
                .write_pod(
                    user,
                    &view,
                    Method::PATCH,
                    with_query(
                        join(&[&pod_path(namespace, name), "resize"]),
                        &dry_run(params),
                    ),
                    "application/json-patch+json",
                    resize,
                )
                .await?;
        }
        // The rest goes as a JSON patch of exactly what changed (no
        // resourceVersion: the kubelet and the node agent write the pod all
        // the time, and this patch does not touch what they write).
        let changes = changes_besides_resources(&latest, &desired);
        if !changes.0.is_empty() {
            latest = self
                .write_pod(
                    user,
                    &view,
                    Method::PATCH,
                    with_query(pod_path(namespace, name), &dry_run(params)),
                    "application/json-patch+json",
                    serde_json::to_value(&changes).map_err(|e| status::internal(&e.to_string()))?,
                )
                .await?;
        }
        view.response(&mut latest);
        response(&mut latest);
        Ok(crate::respond::json(StatusCode::OK, &latest))
    }

    async fn write_pod(
        &self,
        user: &UserInfo,
        view: &View,
        method: Method,
        uri: String,
        content_type: &str,
        body: Value,
    ) -> Result<Value, Status> {
        let outgoing = Outgoing {
            method,
            uri,
            accept: "application/json",
            content_type,
            body: Some(serde_json::to_vec(&body).map_err(|e| status::internal(&e.to_string()))?),
            as_user: Some(user),
            watch: false,
            list: None,
        };
        let (code, answer) = self.backend.json(outgoing).await?;
        if code.is_success() {
            Ok(answer)
        } else {
            Err(backend_status(view, code, answer))
        }
    }

    /// `POST pods/{name}/action`: an Action for the pod's VM, checked here
    /// (the pod is a VM, a restored snapshot exists) and created as the user.
    pub(super) async fn create_action(
        &self,
        user: &UserInfo,
        view: Arc<View>,
        namespace: &str,
        pod_name: &str,
        request: &ApiRequest,
        params: &[(String, String)],
    ) -> Result<Response, Status> {
        let body = request.json_body()?;
        let spec = action_spec(&body, pod_name)?;
        let operation = spec
            .operation()
            .map_err(|errors| status::invalid(&action_subject(""), &errors))?;
        let pod = self.stored_pod(user, &view, namespace, pod_name).await?;
        check_action(&pod, &operation)?;
        let mut labels = json!({});
        if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            labels[NODE_LABEL] = node.into();
        }
        let mut object = json!({
            "apiVersion": action::API_VERSION,
            "kind": action::KIND,
            "metadata": {
                "generateName": format!("{pod_name}-{}-", operation.name()),
                "labels": labels,
                "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod_name,
                    "uid": pod["metadata"]["uid"]}],
            },
            "spec": spec,
        });
        view.request_body(&mut object, false)?;
        let rewrite_view = view.clone();
        let rewrite: Rewrite = Arc::new(move |value: &mut Value| rewrite_view.response(value));
        let outgoing = Outgoing {
            method: Method::POST,
            uri: with_query(
                join(&[
                    "/apis/vm.arktos.io/v1alpha1/namespaces",
                    namespace,
                    action::PLURAL,
                ]),
                &dry_run(params),
            ),
            accept: "application/json",
            content_type: "application/json",
            body: Some(serde_json::to_vec(&object).map_err(|e| status::internal(&e.to_string()))?),
            as_user: Some(user),
            watch: false,
            list: None,
        };
        self.backend.send(outgoing, rewrite).await
    }
}

/// The spec of an action request: our `Action` (or its spec), or Arktos'
/// `CustomAction` (`operation`, `rebootParams`, `snapshotParams`,
/// `restoreParams`). The pod is the one in the path.
/// The stored pod `current` in the Arktos shape with the request's patch
/// applied: what the tenant wants, before it is put in storage form.
fn patched_arktos(
    current: &Value,
    name: &str,
    content_type: &str,
    patch: &[u8],
) -> Result<Value, Status> {
    let mut arktos = current.clone();
    arktos["kind"] = "Pod".into();
    shape::to_arktos(&mut arktos);
    if arktos.pointer("/spec/virtualMachine").is_none() {
        return Err(status::invalid(
            &pod_subject(name),
            &[FieldError::new(
                "spec.virtualMachine",
                FieldErrorType::Forbidden,
                "a container pod cannot become a VM pod",
            )],
        ));
    }
    apply_patch(&mut arktos, name, content_type, patch)?;
    // The containers a read shows are the VM's echo; a patch that changes
    // the VM leaves the old echo behind.
    let echo = json!([{"name": current["spec"]["containers"][0]["name"],
        "image": current["spec"]["containers"][0]["image"]}]);
    if arktos.pointer("/spec/containers") == Some(&echo)
        && let Some(spec) = arktos["spec"].as_object_mut()
    {
        spec.remove("containers");
    }
    // Identity stays the stored pod's whatever the patch said.
    for key in ["name", "namespace", "uid"] {
        arktos["metadata"][key] = current["metadata"][key].clone();
    }
    if let Some(object) = arktos.as_object_mut() {
        object.remove("status");
    }
    Ok(arktos)
}

/// Applies a JSON, merge or strategic merge patch (its directives
/// dropped: the Arktos shape has no patch strategy) to `target`.
fn apply_patch(
    target: &mut Value,
    name: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(), Status> {
    let mut patch: Value = serde_json::from_slice(body)
        .map_err(|e| status::bad_request(&format!("the patch is malformed: {e}")))?;
    match content_type {
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| status::bad_request(&format!("the JSON patch is malformed: {e}")))?;
            json_patch::patch(target, &operations).map_err(|e| {
                status::invalid(
                    &pod_subject(name),
                    &[FieldError::new(
                        "spec",
                        FieldErrorType::Invalid,
                        e.to_string(),
                    )],
                )
            })
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
            drop_directives(&mut patch);
            json_patch::merge(target, &patch);
            Ok(())
        }
        other => Err(status::unsupported_media_type(&format!(
            "{other} (a VM pod's virtualMachine is patched with a JSON, merge or strategic merge patch)"
        ))),
    }
}

/// What `desired` (storage form) changes in the stored pod `latest`
/// besides the container's resources (resized apart): labels,
/// annotations (the node agent's report kept), image, and the rest of the
/// spec.
fn changes_besides_resources(latest: &Value, desired: &Value) -> json_patch::Patch {
    let mut update = latest.clone();
    update["metadata"]["labels"] = desired["metadata"]["labels"].clone();
    update["metadata"]["annotations"] = desired["metadata"]["annotations"].clone();
    if let Some(observed) = latest
        .pointer(&format!(
            "/metadata/annotations/{}",
            annotations::OBSERVED.replace('/', "~1")
        ))
        .cloned()
    {
        update["metadata"]["annotations"][annotations::OBSERVED] = observed;
    }
    let container = &desired["spec"]["containers"][0];
    for key in ["image", "imagePullPolicy"] {
        if let Some(value) = container.get(key) {
            update["spec"]["containers"][0][key] = value.clone();
        }
    }
    if let Some(spec) = desired["spec"].as_object() {
        for (key, value) in spec {
            if !matches!(key.as_str(), "containers" | "runtimeClassName") {
                update["spec"][key] = value.clone();
            }
        }
    }
    let mut before = latest.clone();
    for object in [&mut before, &mut update] {
        if let Some(object) = object.as_object_mut() {
            object.remove("status");
        }
    }
    json_patch::diff(&before, &update)
}

fn action_spec(body: &Value, pod_name: &str) -> Result<ActionSpec, Status> {
    let malformed = |why: String| {
        status::invalid(
            &action_subject(""),
            &[FieldError::new("spec", FieldErrorType::Invalid, why)],
        )
    };
    let mut spec: ActionSpec = if let Some(operation) = body.get("operation") {
        let operation = operation.as_str().unwrap_or_default().to_ascii_lowercase();
        let mut spec = ActionSpec::default();
        match operation.as_str() {
            "reboot" => {
                spec.reboot = Some(action::Reboot {
                    delay_seconds: body
                        .pointer("/rebootParams/delayInSeconds")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        .min(u64::from(u32::MAX)) as u32,
                });
            }
            "stop" => spec.stop = Some(action::Empty {}),
            "start" => spec.start = Some(action::Empty {}),
            "snapshot" => {
                spec.snapshot = Some(action::Snapshot {
                    name: body
                        .pointer("/snapshotParams/snapshotLocation")
                        .or_else(|| body.pointer("/snapshotParams/name"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            "restore" => {
                spec.restore = Some(action::Restore {
                    snapshot: body
                        .pointer("/restoreParams/snapshotID")
                        .or_else(|| body.pointer("/restoreParams/snapshot"))
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                });
            }
            other => {
                return Err(status::invalid(
                    &action_subject(""),
                    &[FieldError::new(
                        "operation",
                        FieldErrorType::NotSupported,
                        "supported values: \"Reboot\", \"Stop\", \"Start\", \"Snapshot\", \"Restore\"",
                    )
                    .with_value(other)],
                ));
            }
        }
        spec
    } else {
        let raw = body.get("spec").cloned().unwrap_or_else(|| body.clone());
        let mut raw = raw;
        if let Some(object) = raw.as_object_mut() {
            for key in ["apiVersion", "kind", "metadata"] {
                object.remove(key);
            }
        }
        serde_path_to_error::deserialize(raw).map_err(|e| malformed(e.to_string()))?
    };
    if !spec.pod_name.is_empty() && spec.pod_name != pod_name {
        return Err(status::invalid(
            &action_subject(""),
            &[FieldError::new(
                "spec.podName",
                FieldErrorType::Invalid,
                format!("the action is posted to pod {pod_name:?}"),
            )
            .with_value(spec.pod_name)],
        ));
    }
    spec.pod_name = pod_name.to_string();
    Ok(spec)
}

/// What can be known before the node acts: the pod is a VM, and a
/// snapshot to restore exists (one to take does not).
pub fn check_action(pod: &Value, operation: &Operation) -> Result<(), Status> {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let observed = observed_of(pod);
    let runtime_class = pod
        .pointer("/spec/runtimeClassName")
        .and_then(Value::as_str);
    let refused = |error: FieldError| status::invalid(&action_subject(""), &[error]);
    action::check_pod(name, runtime_class, &observed, operation).map_err(refused)?;
    // Through this route a name already taken is refused; the node agent
    // would answer with the existing snapshot.
    match operation {
        Operation::Snapshot { name: snapshot } if observed.snapshots.contains(snapshot) => {
            Err(refused(
                FieldError::new(
                    "spec.snapshot.name",
                    FieldErrorType::Duplicate,
                    format!("pod {name:?} already has a snapshot of that name"),
                )
                .with_value(snapshot.clone()),
            ))
        }
        _ => Ok(()),
    }
}

/// What the node agent last reported of a stored VM pod.
fn observed_of(pod: &Value) -> Observed {
    Observed::from_annotation(
        pod.pointer(&format!(
            "/metadata/annotations/{}",
            annotations::OBSERVED.replace('/', "~1")
        ))
        .and_then(Value::as_str),
    )
}

fn pod_path(namespace: &str, name: &str) -> String {
    join(&["/api/v1/namespaces", namespace, "pods", name])
}

fn dry_run(params: &[(String, String)]) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(k, _)| k == "dryRun" || k == "fieldManager")
        .cloned()
        .collect()
}

/// kube-apiserver's refusal, in the tenant's terms.
fn backend_status(view: &View, code: StatusCode, mut answer: Value) -> Status {
    view.response(&mut answer);
    serde_json::from_value::<Status>(answer)
        .ok()
        .filter(|s| s.code.is_some())
        .unwrap_or_else(|| {
            status::internal(&format!("kube-apiserver answered {code} without a Status"))
        })
}

#[cfg(test)]
mod tests {
    use arktos_crds::vm::RUNTIME_CLASS;

    use super::*;

    #[test]
    fn arktos_custom_actions_and_action_specs_are_both_understood() {
        let arktos = json!({"apiVersion": "v1", "kind": "CustomAction", "operation": "Reboot",
            "rebootParams": {"delayInSeconds": 3}});
        let spec = action_spec(&arktos, "vm1").unwrap();
        assert_eq!(spec.pod_name, "vm1");
        assert_eq!(
            spec.operation().unwrap(),
            Operation::Reboot { delay_seconds: 3 }
        );
        let ours = json!({"spec": {"snapshot": {"name": "s1"}}});
        assert_eq!(
            action_spec(&ours, "vm1").unwrap().operation().unwrap(),
            Operation::Snapshot { name: "s1".into() }
        );
        let elsewhere = json!({"podName": "other", "stop": {}});
        assert!(action_spec(&elsewhere, "vm1").is_err());
        let unknown = json!({"operation": "Explode"});
        assert_eq!(action_spec(&unknown, "vm1").unwrap_err().code, Some(422));
    }

    #[test]
    fn actions_need_a_vm_pod_and_restores_an_existing_snapshot() {
        let container = json!({"metadata": {"name": "c"}, "spec": {}});
        assert!(check_action(&container, &Operation::Stop).is_err());
        let observed = serde_json::to_string(&Observed {
            snapshots: vec!["s1".into()],
            ..Default::default()
        })
        .unwrap();
        let vm = json!({"metadata": {"name": "vm1", "annotations": {annotations::OBSERVED: observed}},
            "spec": {"runtimeClassName": RUNTIME_CLASS}});
        assert!(check_action(&vm, &Operation::Stop).is_ok());
        assert!(
            check_action(
                &vm,
                &Operation::Restore {
                    snapshot: "s1".into()
                }
            )
            .is_ok()
        );
        let missing = check_action(
            &vm,
            &Operation::Restore {
                snapshot: "nope".into(),
            },
        )
        .unwrap_err();
        assert!(
            missing.message.unwrap().contains("no such snapshot"),
            "clear message"
        );
    }

    #[test]
    fn only_vm_parts_of_a_patch_take_the_vm_path() {
        let patch = json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{\"virtualMachine\":{}}}"}}});
        assert!(patch.pointer("/spec/virtualMachine").is_none());
        let mut directive = json!({"spec": {"$setElementOrder/x": [], "virtualMachine": {"powerSpec": "Shutdown"}}});
        drop_directives(&mut directive);
        assert_eq!(
            directive,
            json!({"spec": {"virtualMachine": {"powerSpec": "Shutdown"}}})
        );
    }

    /// A VM pod as kube-apiserver stores it.
    fn stored_vm_pod() -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "vm1", "namespace": "acme--web", "uid": "u1",
                "labels": {"app": "a"}},
            "spec": {"virtualMachine": {
                "name": "vm", "image": "vm.test/guest.qcow2",
                "resources": {"requests": {"cpu": "1", "memory": "256Mi"}},
                "powerSpec": "Running"
            }},
            "status": {"phase": "Running"}
        });
        shape::to_storage(&mut pod, None).unwrap();
        pod
    }

    #[test]
    fn a_merge_patch_changes_the_arktos_shape_and_keeps_identity() {
        let stored = stored_vm_pod();
        let patch = br#"{"metadata": {"name": "other", "uid": "forged"},
            "spec": {"virtualMachine": {"powerSpec": "Shutdown"}}}"#;
        let desired =
            patched_arktos(&stored, "vm1", "application/merge-patch+json", patch).unwrap();
        assert_eq!(desired["spec"]["virtualMachine"]["powerSpec"], "Shutdown");
        assert_eq!(desired["metadata"]["name"], "vm1");
        assert_eq!(desired["metadata"]["uid"], "u1");
        assert!(desired.get("status").is_none());
        assert!(
            desired["spec"].get("containers").is_none(),
            "the echo of the VM is dropped"
        );
    }

    #[test]
    fn a_json_patch_that_does_not_apply_is_invalid() {
        let stored = stored_vm_pod();
        let patch = br#"[{"op": "remove", "path": "/spec/virtualMachine/nope"}]"#;
        let refused = patched_arktos(&stored, "vm1", "application/json-patch+json", patch);
        assert_eq!(refused.unwrap_err().code, Some(422));
    }

    #[test]
    fn a_vm_pod_patch_needs_a_known_patch_type_and_a_vm_pod() {
        let stored = stored_vm_pod();
        let patch = br#"{"spec": {"virtualMachine": {}}}"#;
        let apply = patched_arktos(&stored, "vm1", "application/apply-patch+yaml", patch);
        assert_eq!(apply.unwrap_err().code, Some(415));
        let malformed = patched_arktos(&stored, "vm1", "application/merge-patch+json", b"{");
        assert_eq!(malformed.unwrap_err().code, Some(400));
        let container = json!({"metadata": {"name": "c"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let refused = patched_arktos(&container, "c", "application/merge-patch+json", patch);
        assert_eq!(refused.unwrap_err().code, Some(422));
    }

    #[test]
    fn the_rest_of_a_vm_pod_patch_keeps_the_node_agents_report_and_resources() {
        let mut latest = stored_vm_pod();
        latest["metadata"]["annotations"][annotations::OBSERVED] = "{}".into();
        let mut desired = latest.clone();
        desired["metadata"]["labels"]["app"] = "b".into();
        desired["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(annotations::OBSERVED);
        desired["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
        let changes = changes_besides_resources(&latest, &desired);
        let paths: Vec<String> = changes.0.iter().map(|op| op.path().to_string()).collect();
        assert_eq!(paths, ["/metadata/labels/app"], "{changes:?}");
        assert!(changes_besides_resources(&latest, &latest).0.is_empty());
    }
}
