//! The Tenant resource: reads and watches pass through to the storage;
//! every write is checked here first (schema, Tenant rules, the `system`
//! tenant) and then written pinned to the resourceVersion it was checked
//! against, so no write skips the checks and no update is lost.

use std::sync::Arc;

use arktos_crds::naming::SYSTEM_TENANT;
use arktos_crds::partition::placement;
use arktos_crds::status::{self, FieldError, FieldErrorType, Subject};
use arktos_crds::tenant::{API_VERSION, KIND, Tenant, validation};
use http::{Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;
use warp::reply::Response;

use crate::authn::UserInfo;
use crate::authz::{Attributes, Authorizer};
use crate::request::{ApiRequest, encode_query};
use crate::respond;
use crate::storage::{Answer, Call, Storage};
use crate::tenant_routes::backend::Backend;
use crate::tenant_routes::list_cache::Store;
use arktos_crds::sharding;

/// How often a patch is retried when the object changed under it.
const PATCH_ATTEMPTS: usize = 5;

/// Which part of the Tenant resource a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Collection,
    Object { name: String, status: bool },
}

pub struct TenantApi {
    storage: Storage,
    authorizer: Arc<Authorizer>,
    placement: Placement,
    /// Copies of the Tenants, and the connection to ask kube-apiserver
    /// which of them a read names.
    copies: Option<(Backend, Arc<Store>)>,
}

/// What placement knows: the root cluster as a partition, and where the
/// tenants are.
#[derive(Clone)]
pub struct Placement {
    /// The root's name.
    pub root: String,
    /// The root's share of new tenants.
    pub root_weight: u32,
    pub placed: Arc<crate::placed_tenants::PlacedTenants>,
}

fn subject(name: &str) -> Subject<'_> {
    crate::rename::TENANTS.subject(name)
}

impl TenantApi {
    pub fn new(storage: Storage, authorizer: Arc<Authorizer>, placement: Placement) -> Self {
        Self {
            storage,
            authorizer,
            placement,
            copies: None,
        }
    }

    /// Answers reads from `copies` (see `tenant_routes::list_cache`) where
    /// they can: a GET or LIST in JSON.
    pub fn with_copies(mut self, backend: Backend, copies: Arc<Store>) -> Self {
        self.copies = Some((backend, copies));
        self
    }

    /// The root cluster's name as a partition.
    pub fn root_partition(&self) -> &str {
        &self.placement.root
    }

    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    pub async fn handle(&self, user: &UserInfo, request: &ApiRequest, target: Target) -> Response {
        let outcome = match (&request.method, &target) {
            (&Method::GET, Target::Collection) if request.is_watch() => {
                self.watch(request, None).await
            }
            (
                &Method::GET,
                Target::Object {
                    name,
                    status: false,
                },
            ) if request.is_watch() => self.watch(request, Some(name)).await,
            (&Method::GET, Target::Collection) => self.read(request, None).await,
            (
                &Method::GET,
                Target::Object {
                    name,
                    status: false,
                },
            ) => self.read(request, Some(name)).await,
            (&Method::GET, Target::Object { name, status: true }) => {
                self.pass(Method::GET, request, Some(name), Some("status"))
                    .await
            }
            (&Method::POST, Target::Collection) => self.create(request).await,
            (&Method::PUT, Target::Object { name, status }) => {
                self.update(user, request, name, *status).await
            }
            (&Method::PATCH, Target::Object { name, status }) => {
                self.patch(user, request, name, *status).await
            }
            (
                &Method::DELETE,
                Target::Object {
                    name,
                    status: false,
                },
            ) => self.delete(request, name).await,
            (method, Target::Collection) => Err(status::method_not_allowed(
                method.as_str(),
                "the tenants collection",
            )),
            (method, Target::Object { .. }) => Err(status::method_not_allowed(
                method.as_str(),
                "this tenant path",
            )),
        };
        outcome.unwrap_or_else(respond::status)
    }

    /// A GET of the collection or of object `name`: from the copies when
    /// they can answer it (JSON, not a Table), else from the storage.
    async fn read(&self, request: &ApiRequest, name: Option<&str>) -> Result<Response, Status> {
        let accept = request.accept();
        if let Some((backend, copies)) = &self.copies
            && !accept.contains("as=")
            && request.param("pretty").is_none()
            && let Some(answer) = copies.answer_served(backend, name, &request.query).await
        {
            return answer;
        }
        self.pass(Method::GET, request, name, None).await
    }

    async fn pass(
        &self,
        method: Method,
        request: &ApiRequest,
        name: Option<&str>,
        subresource: Option<&str>,
    ) -> Result<Response, Status> {
        let call = Call {
            name,
            subresource,
            query: request.query.clone(),
            accept: &request.accept(),
            ..Default::default()
        };
        Ok(self.storage.call(method, call).await?.into_response())
    }

    async fn watch(&self, request: &ApiRequest, name: Option<&str>) -> Result<Response, Status> {
        self.storage.watch_for(request, name).await
    }

    async fn create(&self, request: &ApiRequest) -> Result<Response, Status> {
        let mut value = request.json_body()?;
        stamp_type(&mut value, KIND)?;
        let tenant = typed(&value)?;
        let name = tenant.metadata.name.clone().unwrap_or_default();
        reject_invalid(&name, validation::validate(&tenant))?;
        let partition = self.place(&name, &tenant.spec.partition).await?;
        fill_partition(&mut value, &partition);
        stamp_bucket(&mut value, &name);
        let call = Call {
            query: request.query.clone(),
            accept: &request.accept(),
            body: Some(value),
            ..Default::default()
        };
        Ok(self.storage.call(Method::POST, call).await?.into_response())
    }

    /// The partition of a new tenant: the one `asked` (an admin's
    /// `spec.partition`) if it exists, else placement's choice (see
    /// `placement`), with the tenants counted by `placed_tenants`.
    async fn place(&self, name: &str, asked: &str) -> Result<String, Status> {
        let partitions = self
            .storage
            .sibling(&crate::rename::PARTITIONS)
            .call(Method::GET, Call::default())
            .await?
            .body;
        let placed = &self.placement.placed;
        if asked.is_empty() && !placed.listed().await {
            return Err(status::service_unavailable(&format!(
                "cannot place tenant {name:?} yet: the tenants' placement is still being listed"
            )));
        }
        let candidates = placement::candidates(
            &self.placement.root,
            self.placement.root_weight,
            &partitions,
            |partition| placed.count(partition),
        );
        let asked = (!asked.is_empty()).then_some(asked);
        match placement::choose(&candidates, asked) {
            Ok(chosen) => Ok(chosen.to_string()),
            Err(placement::NoPlace::Unknown(partition)) => Err(status::invalid(
                &subject(name),
                &[
                    FieldError::new(
                        "spec.partition",
                        FieldErrorType::NotFound,
                        format!(
                            "no partition {partition:?}: name a Partition, or {:?} for the cluster itself",
                            self.placement.root
                        ),
                    )
                    .with_value(&partition),
                ],
            )),
            Err(closed) => Err(status::service_unavailable(&format!(
                "cannot place tenant {name:?}: {closed}"
            ))),
        }
    }

    async fn update(
        &self,
        user: &UserInfo,
        request: &ApiRequest,
        name: &str,
        status: bool,
    ) -> Result<Response, Status> {
        let mut value = request.json_body()?;
        stamp_type(&mut value, KIND)?;
        match_name(&mut value, name)?;
        stamp_bucket(&mut value, name);
        if !status {
            let old = typed(&self.current(name).await?)?;
            fill_partition(&mut value, &old.spec.partition);
            reject_invalid(name, validation::validate_update(&old, &typed(&value)?))?;
            self.guard_system(user, name).await?;
        }
        Ok(self
            .put(request, name, status, value)
            .await?
            .into_response())
    }

    async fn put(
        &self,
        request: &ApiRequest,
        name: &str,
        status: bool,
        value: Value,
    ) -> Result<Answer, Status> {
        let kept: Vec<(String, String)> = request
            .params()
            .into_iter()
            .filter(|(k, _)| {
                matches!(
                    k.as_str(),
                    "dryRun" | "fieldManager" | "fieldValidation" | "pretty"
                )
            })
            .collect();
        let call = Call {
            name: Some(name),
            subresource: status.then_some("status"),
            query: encode_query(&kept),
            accept: &request.accept(),
            body: Some(value),
            ..Default::default()
        };
        self.storage.call(Method::PUT, call).await
    }

    async fn patch(
        &self,
        user: &UserInfo,
        request: &ApiRequest,
        name: &str,
        status: bool,
    ) -> Result<Response, Status> {
        match request.content_type().as_str() {
            "application/apply-patch+yaml" => self.apply(user, request, name, status).await,
            kind @ ("application/json-patch+json"
            | "application/merge-patch+json"
            | "application/strategic-merge-patch+json") => {
                self.patch_by_update(user, request, name, status, kind)
                    .await
            }
            other => Err(status::unsupported_media_type(other)),
        }
    }

    /// JSON and merge patches (strategic merge is merge for this type): read,
    /// patch and check here, then update pinned to the version read; retry
    /// when that version was overtaken, unless the client pinned one itself.
    async fn patch_by_update(
        &self,
        user: &UserInfo,
        request: &ApiRequest,
        name: &str,
        status: bool,
        content_type: &str,
    ) -> Result<Response, Status> {
        for _ in 0..PATCH_ATTEMPTS {
            let current = self.current(name).await?;
            let mut patched = apply_patch(content_type, current.clone(), &request.body)?;
            let current_version = resource_version(&current);
            let pinned_by_client = resource_version(&patched) != current_version;
            if !pinned_by_client {
                patched["metadata"]["resourceVersion"] = current_version.clone().into();
            }
            stamp_type(&mut patched, KIND)?;
            match_name(&mut patched, name)?;
            let current_partition = &current["spec"]["partition"];
            fill_partition(&mut patched, current_partition.as_str().unwrap_or_default());
            let new = typed(&patched)?;
            if !status {
                reject_invalid(name, validation::validate_update(&typed(&current)?, &new))?;
                self.guard_system(user, name).await?;
            }
            let answer = self.put(request, name, status, patched).await?;
            if answer.code == StatusCode::CONFLICT && !pinned_by_client {
                continue;
            }
            return Ok(answer.into_response());
        }
        Err(status::conflict(
            &subject(name),
            "the object kept changing; try again",
        ))
    }

    /// Server-side apply: the storage computes the result (field managers,
    /// conflicts) in a dry run; it is checked here; the real apply is then
    /// pinned to the version that was checked.
    async fn apply(
        &self,
        user: &UserInfo,
        request: &ApiRequest,
        name: &str,
        status: bool,
    ) -> Result<Response, Status> {
        let config = request.json_body()?;
        if config.get("apiVersion").is_none() || config.get("kind").is_none() {
            return Err(status::bad_request(
                "an apply configuration needs apiVersion and kind",
            ));
        }
        let mut config = config;
        stamp_type(&mut config, KIND)?;
        match_name(&mut config, name)?;
        let params = request.params();
        let client_dry_run = params.iter().any(|(k, _)| k == "dryRun");
        let pinned_by_client = !resource_version(&config).is_empty();
        for _ in 0..PATCH_ATTEMPTS {
            let old = self.storage.get(name).await?;
            // The partition is part of every apply, so no apply removes it
            // and one that creates the tenant places it.
            let partition = match &old {
                Some(old) => old["spec"]["partition"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                None if status => String::new(),
                None => {
                    let asked = config["spec"]["partition"].as_str().unwrap_or_default();
                    self.place(name, asked).await?
                }
            };
            let mut config = config.clone();
            fill_partition(&mut config, &partition);
            let mut dry = params.clone();
            dry.retain(|(k, _)| k != "dryRun");
            dry.push(("dryRun".into(), "All".into()));
            let rehearsal = self
                .send_apply(request, name, status, &dry, config.clone())
                .await?;
            if !rehearsal.is_success() {
                return Ok(rehearsal.into_response());
            }
            if !status {
                let result = typed(&rehearsal.body)?;
                let errors = match &old {
                    Some(old) => validation::validate_update(&typed(old)?, &result),
                    None => validation::validate(&result),
                };
                reject_invalid(name, errors)?;
                if old.is_some() {
                    self.guard_system(user, name).await?;
                }
            }
            if client_dry_run {
                return Ok(rehearsal.into_response());
            }
            let mut body = config.clone();
            if let (Some(old), false) = (&old, pinned_by_client) {
                body["metadata"]["resourceVersion"] = resource_version(old).into();
            }
            let answer = self
                .send_apply(request, name, status, &params, body)
                .await?;
            let overtaken = answer.code == StatusCode::CONFLICT
                && answer.body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("has been modified"));
            if overtaken && !pinned_by_client {
                continue;
            }
            return Ok(answer.into_response());
        }
        Err(status::conflict(
            &subject(name),
            "the object kept changing; try again",
        ))
    }

    async fn send_apply(
        &self,
        request: &ApiRequest,
        name: &str,
        status: bool,
        params: &[(String, String)],
        body: Value,
    ) -> Result<Answer, Status> {
        let call = Call {
            name: Some(name),
            subresource: status.then_some("status"),
            query: encode_query(params),
            accept: &request.accept(),
            content_type: "application/apply-patch+yaml",
            body: Some(body),
        };
        self.storage.call(Method::PATCH, call).await
    }

    async fn delete(&self, request: &ApiRequest, name: &str) -> Result<Response, Status> {
        if name == SYSTEM_TENANT {
            return Err(status::forbidden(
                &subject(name),
                "the system tenant always exists and cannot be deleted",
            ));
        }
        let body = if request.body.is_empty() {
            None
        } else {
            Some(request.json_body()?)
        };
        let call = Call {
            name: Some(name),
            query: request.query.clone(),
            accept: &request.accept(),
            body,
            ..Default::default()
        };
        Ok(self
            .storage
            .call(Method::DELETE, call)
            .await?
            .into_response())
    }

    async fn current(&self, name: &str) -> Result<Value, Status> {
        self.storage
            .get(name)
            .await?
            .ok_or_else(|| status::not_found(&subject(name)))
    }

    /// Only cluster administrators may change the `system` tenant.
    async fn guard_system(&self, user: &UserInfo, name: &str) -> Result<(), Status> {
        if name != SYSTEM_TENANT {
            return Ok(());
        }
        if self
            .authorizer
            .allowed(user, &Attributes::everything())
            .await?
        {
            return Ok(());
        }
        Err(status::forbidden(
            &subject(name),
            &format!(
                "only cluster administrators may change the system tenant, and User {:?} is not one",
                user.name
            ),
        ))
    }
}

/// Fills in apiVersion and kind, and refuses any other type.
/// The shard bucket label, for controllers sharded by label where the
/// API server has no sharded watches. Always the bucket of the name.
/// Sets `spec.partition` to `partition` when the body leaves it out: a
/// tenant's partition is set once, at creation, and kept by every write.
fn fill_partition(value: &mut Value, partition: &str) {
    let missing = value["spec"]["partition"]
        .as_str()
        .is_none_or(str::is_empty);
    if missing && !partition.is_empty() && value.is_object() {
        if !value["spec"].is_object() {
            value["spec"] = Value::Object(Default::default());
        }
        value["spec"]["partition"] = partition.into();
    }
}

fn stamp_bucket(value: &mut Value, name: &str) {
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        let labels = metadata
            .entry("labels")
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(
                sharding::BUCKET_LABEL.into(),
                sharding::bucket_of(name).to_string().into(),
            );
        }
    }
}

/// The body's apiVersion and kind must be ours for `kind` (or absent: then
/// they are stamped).
pub(crate) fn stamp_type(value: &mut Value, kind: &str) -> Result<(), Status> {
    let Some(object) = value.as_object_mut() else {
        return Err(status::bad_request("the body must be a JSON object"));
    };
    match object.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            object.insert("apiVersion".into(), API_VERSION.into());
        }
        Some(API_VERSION) => {}
        Some(other) => {
            return Err(status::bad_request(&format!(
                "the API version in the data ({other}) does not match the expected API version ({API_VERSION})"
            )));
        }
    }
    match object.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            object.insert("kind".into(), kind.into());
        }
        Some(found) if found == kind => {}
        Some(other) => {
            return Err(status::bad_request(&format!(
                "the kind in the data ({other}) does not match the expected kind ({kind})"
            )));
        }
    }
    Ok(())
}

/// The body's name must be the path's (or absent: then it is the path's).
pub(crate) fn match_name(value: &mut Value, name: &str) -> Result<(), Status> {
    match value.pointer("/metadata/name").and_then(Value::as_str) {
        None | Some("") => {
            value["metadata"]["name"] = name.into();
            Ok(())
        }
        Some(body_name) if body_name == name => Ok(()),
        Some(body_name) => Err(status::bad_request(&format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        ))),
    }
}

/// Reads the body as a Tenant; a field of the wrong shape is a 422 naming it.
pub fn typed(value: &Value) -> Result<Tenant, Status> {
    serde_path_to_error::deserialize::<_, Tenant>(value).map_err(|err| {
        let path = err.path().to_string();
        let detail = err.inner().to_string();
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let error = match detail.strip_prefix("missing field `") {
            Some(rest) => {
                let field = rest.trim_end_matches('`');
                let full = if path == "." {
                    field.to_string()
                } else {
                    format!("{path}.{field}")
                };
                FieldError::new(full, FieldErrorType::Required, "")
            }
            None => FieldError::new(path, FieldErrorType::Invalid, detail),
        };
        status::invalid(&subject(name), &[error])
    })
}

fn reject_invalid(name: &str, errors: Vec<FieldError>) -> Result<(), Status> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(status::invalid(&subject(name), &errors))
    }
}

fn resource_version(value: &Value) -> String {
    value
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn apply_patch(content_type: &str, mut document: Value, body: &[u8]) -> Result<Value, Status> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| status::bad_request(&format!("the patch is not valid JSON: {e}")))?;
    if content_type == "application/json-patch+json" {
        let operations: json_patch::Patch = serde_json::from_value(patch)
            .map_err(|e| status::bad_request(&format!("the JSON patch is malformed: {e}")))?;
        for operation in operations.0 {
            // As in Kubernetes, `test` of null passes where the path is
            // missing (clients use it to add a list only if there is none).
            if let json_patch::PatchOperation::Test(test) = &operation
                && test.value.is_null()
                && document.pointer(test.path.as_str()).is_none()
            {
                continue;
            }
            json_patch::patch(&mut document, &[operation]).map_err(|e| {
                status::bad_request(&format!("the JSON patch cannot be applied: {e}"))
            })?;
        }
    } else {
        if !patch.is_object() {
            return Err(status::bad_request("a merge patch must be a JSON object"));
        }
        json_patch::merge(&mut document, &patch);
    }
    Ok(document)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn shapes_that_do_not_fit_are_422_with_the_field() {
        let err =
            typed(&json!({"metadata": {"name": "acme"}, "spec": {"podSecurity": "privileged"}}))
                .unwrap_err();
        assert_eq!(err.code, Some(422));
        let cause = &err.details.unwrap().causes.unwrap()[0];
        assert_eq!(cause.field.as_deref(), Some("spec.podSecurity"));

        let err = typed(&json!({"metadata": {"name": "acme"}})).unwrap_err();
        let cause = &err.details.unwrap().causes.unwrap()[0];
        assert_eq!(cause.field.as_deref(), Some("spec"));
        assert_eq!(cause.reason.as_deref(), Some("FieldValueRequired"));
    }

    #[test]
    fn other_types_are_refused_and_missing_type_is_filled_in() {
        let mut value = json!({"metadata": {"name": "a"}});
        stamp_type(&mut value, KIND).unwrap();
        assert_eq!(value["kind"], "Tenant");
        assert_eq!(
            stamp_type(&mut json!({"kind": "Pod"}), KIND)
                .unwrap_err()
                .code,
            Some(400)
        );
        assert_eq!(
            stamp_type(&mut json!({"apiVersion": "v1"}), KIND)
                .unwrap_err()
                .code,
            Some(400)
        );
    }

    #[test]
    fn patches_apply_as_their_content_type_says() {
        let doc = json!({"spec": {"podSecurity": "restricted", "owners": []}});
        let merged = apply_patch(
            "application/merge-patch+json",
            doc.clone(),
            br#"{"spec":{"podSecurity":"baseline"}}"#,
        )
        .unwrap();
        assert_eq!(merged["spec"]["podSecurity"], "baseline");
        let patched = apply_patch(
            "application/json-patch+json",
            doc.clone(),
            br#"[{"op":"replace","path":"/spec/podSecurity","value":"baseline"}]"#,
        )
        .unwrap();
        assert_eq!(patched["spec"]["podSecurity"], "baseline");
        let absent = apply_patch(
            "application/json-patch+json",
            doc.clone(),
            br#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["f"]}]"#,
        );
        assert!(absent.is_err(), "no metadata object to add to");
        let with_metadata = apply_patch(
            "application/json-patch+json",
            json!({"metadata": {}}),
            br#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["f"]}]"#,
        )
        .unwrap();
        assert_eq!(with_metadata["metadata"]["finalizers"][0], "f");
        let err = apply_patch(
            "application/json-patch+json",
            doc,
            br#"[{"op":"test","path":"/spec/podSecurity","value":"x"}]"#,
        )
        .unwrap_err();
        assert_eq!(err.code, Some(400));
    }

    #[test]
    fn a_body_may_not_rename_the_object() {
        let mut value = json!({"metadata": {"name": "other"}});
        assert_eq!(match_name(&mut value, "acme").unwrap_err().code, Some(400));
        let mut value = json!({"metadata": {}});
        match_name(&mut value, "acme").unwrap();
        assert_eq!(value["metadata"]["name"], "acme");
    }
}
