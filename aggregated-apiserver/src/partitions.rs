//! The Partition API (`tenancy.arktos.io/v1alpha1` `partitions`): served
//! like Tenants, stored as `PartitionRecord`s, whose schema (generated from
//! `arktos_crds::partition`) kube-apiserver enforces. Who may do what is
//! decided before (a SubjectAccessReview on `partitions`); nothing here is
//! per user. docs/architecture.md says where partitions are going.

use arktos_crds::partition::KIND;
use arktos_crds::status;
use http::Method;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use warp::reply::Response;

use crate::request::ApiRequest;
use crate::respond;
use crate::storage::{Call, Storage};
use crate::tenants::{Target, match_name, stamp_type};

pub struct PartitionApi {
    storage: Storage,
}

impl PartitionApi {
    pub fn new(storage: Storage) -> Self {
        Self { storage }
    }

    pub async fn handle(&self, request: &ApiRequest, target: Target) -> Response {
        self.serve(request, target)
            .await
            .unwrap_or_else(respond::status)
    }

    async fn serve(&self, request: &ApiRequest, target: Target) -> Result<Response, Status> {
        let (name, subresource) = match &target {
            Target::Collection => (None, None),
            Target::Object { name, status } => (Some(name.as_str()), status.then_some("status")),
        };
        match (&request.method, name) {
            (&Method::GET, _) if request.is_watch() && subresource.is_none() => {
                self.storage.watch_for(request, name).await
            }
            (&Method::GET, _) | (&Method::DELETE, Some(_)) => {
                self.send(request, name, subresource, None).await
            }
            (&Method::POST, None) | (&Method::PUT, Some(_)) => {
                let mut body = request.json_body()?;
                stamp_type(&mut body, KIND)?;
                if let Some(name) = name {
                    match_name(&mut body, name)?;
                }
                self.send(request, name, subresource, Some(body)).await
            }
            (&Method::PATCH, Some(_)) => {
                let body = request.json_body()?;
                self.send(request, name, subresource, Some(body)).await
            }
            (method, _) => Err(status::method_not_allowed(
                method.as_str(),
                "this partition path",
            )),
        }
    }

    async fn send(
        &self,
        request: &ApiRequest,
        name: Option<&str>,
        subresource: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<Response, Status> {
        let content_type = request.content_type();
        // Records are custom resources: no strategic merge, and without
        // list directives a merge patch means the same.
        let content_type = match content_type.as_str() {
            "application/strategic-merge-patch+json" => "application/merge-patch+json",
            other => other,
        };
        let body = match (&request.method, body) {
            (&Method::DELETE, _) if request.body.is_empty() => None,
            (&Method::DELETE, _) => Some(request.json_body()?),
            (_, body) => body,
        };
        let call = Call {
            name,
            subresource,
            query: request.query.clone(),
            accept: &request.accept(),
            content_type,
            body,
        };
        Ok(self
            .storage
            .call(request.method.clone(), call)
            .await?
            .into_response())
    }
}
