//! The storage of the kinds arktos-apiserver serves: a record resource of
//! kube-apiserver (`TenantRecord` for Tenants), reached with
//! arktos-apiserver's own identity. Answers come back translated into the
//! served view (see `rename`).

use arktos_crds::status;
use arktos_crds::tenant::{STORAGE_GROUP, STORAGE_VERSION};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;
use warp::reply::Response;

use crate::rename::{self, Stored};

/// One answer of the storage, already in the Tenant view.
#[derive(Debug)]
pub struct Answer {
    pub code: StatusCode,
    pub body: Value,
    /// `Warning` headers, translated.
    pub warnings: Vec<String>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.code.is_success()
    }

    pub fn into_response(self) -> Response {
        let mut response = crate::respond::json(self.code, &self.body);
        for warning in self.warnings {
            if let Ok(value) = HeaderValue::from_str(&warning) {
                response.headers_mut().append("warning", value);
            }
        }
        response
    }

    /// The answer as a `Status` error (for non-success answers).
    pub fn into_status(self) -> Status {
        serde_json::from_value(self.body)
            .unwrap_or_else(|_| status::internal("the storage answered without a Status"))
    }
}

/// What to send to the storage.
#[derive(Debug, Default)]
pub struct Call<'a> {
    pub name: Option<&'a str>,
    pub subresource: Option<&'a str>,
    pub query: String,
    pub accept: &'a str,
    pub content_type: &'a str,
    pub body: Option<Value>,
}

#[derive(Clone)]
pub struct Storage {
    client: kube::Client,
    kind: &'static Stored,
}

impl Storage {
    /// The storage of Tenants.
    pub fn new(client: kube::Client) -> Self {
        Self::of(client, &rename::TENANTS)
    }

    /// The storage of `kind`.
    pub fn of(client: kube::Client, kind: &'static Stored) -> Self {
        Self { client, kind }
    }

    /// The storage of `kind`, reached the same way.
    pub fn sibling(&self, kind: &'static Stored) -> Self {
        Self::of(self.client.clone(), kind)
    }

    fn uri(&self, call: &Call<'_>) -> String {
        let plural = self.kind.record_plural;
        let mut path = format!("/apis/{STORAGE_GROUP}/{STORAGE_VERSION}/{plural}");
        if let Some(name) = call.name {
            path.push('/');
            path.push_str(name);
        }
        if let Some(sub) = call.subresource {
            path.push('/');
            path.push_str(sub);
        }
        if !call.query.is_empty() {
            path.push('?');
            path.push_str(&call.query);
        }
        path
    }

    fn request(
        &self,
        method: Method,
        call: Call<'_>,
    ) -> Result<http::Request<kube::client::Body>, Status> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(self.uri(&call))
            .header(http::header::ACCEPT, accept_json_or_table(call.accept));
        let body = match call.body {
            Some(mut value) => {
                self.kind.to_storage(&mut value);
                let content_type =
                    if call.content_type.is_empty() || call.content_type.contains("yaml") {
                        // YAML bodies were read into JSON already; apply
                        // patches are JSON too (YAML is a superset).
                        if call.content_type.contains("apply-patch") {
                            "application/apply-patch+yaml"
                        } else {
                            "application/json"
                        }
                    } else {
                        call.content_type
                    };
                builder = builder.header(http::header::CONTENT_TYPE, content_type);
                kube::client::Body::from(
                    serde_json::to_vec(&value).map_err(|e| status::internal(&e.to_string()))?,
                )
            }
            None => kube::client::Body::empty(),
        };
        builder
            .body(body)
            .map_err(|e| status::bad_request(&format!("cannot forward the request: {e}")))
    }

    /// Sends one request and reads the whole answer.
    pub async fn call(&self, method: Method, call: Call<'_>) -> Result<Answer, Status> {
        let request = self.request(method, call)?;
        let response = self.client.send(request).await.map_err(unavailable)?;
        let code = response.status();
        let warnings = warnings(self.kind, response.headers());
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(unavailable)?;
        let mut body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::to_value(status::internal(&String::from_utf8_lossy(&bytes)))
                .unwrap_or_default()
        });
        self.kind.to_view(&mut body);
        Ok(Answer {
            code,
            body,
            warnings,
        })
    }

    /// The current object, `None` if there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Value>, Status> {
        let answer = self
            .call(
                Method::GET,
                Call {
                    name: Some(name),
                    ..Default::default()
                },
            )
            .await?;
        match answer.code {
            StatusCode::NOT_FOUND => Ok(None),
            code if code.is_success() => Ok(Some(answer.body)),
            _ => Err(answer.into_status()),
        }
    }

    /// A client's watch of the collection, or of object `name` (the
    /// collection narrowed to it).
    pub async fn watch_for(
        &self,
        request: &crate::request::ApiRequest,
        name: Option<&str>,
    ) -> Result<Response, Status> {
        let mut params = request.params();
        if let Some(name) = name {
            params.retain(|(k, _)| k != "fieldSelector");
            params.push(("fieldSelector".into(), format!("metadata.name={name}")));
        }
        params.retain(|(k, _)| k != "watch");
        params.push(("watch".into(), "true".into()));
        let call = Call {
            query: crate::request::encode_query(&params),
            accept: &request.accept(),
            ..Default::default()
        };
        self.watch(call).await
    }

    /// A watch: the storage's event stream, translated event by event as it
    /// arrives, for as long as the client and the storage keep it open.
    pub async fn watch(&self, call: Call<'_>) -> Result<Response, Status> {
        let request = self.request(Method::GET, call)?;
        let response = self.client.send(request).await.map_err(unavailable)?;
        let code = response.status();
        if !code.is_success() {
            let bytes = response
                .into_body()
                .collect_bytes()
                .await
                .map_err(unavailable)?;
            let mut body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            self.kind.to_view(&mut body);
            return Ok(crate::respond::json(code, &body));
        }
        let kind = self.kind;
        let rewrite: crate::tenant_routes::backend::Rewrite =
            std::sync::Arc::new(move |event: &mut Value| {
                kind.to_view(event);
                true
            });
        let reply = crate::tenant_routes::backend::stream_events(response.into_body(), rewrite);
        Ok(reply)
    }
}

/// We speak JSON (and JSON Tables) only; protobuf is for built-in types.
fn accept_json_or_table(accept: &str) -> String {
    let kept: Vec<&str> = accept
        .split(',')
        .map(str::trim)
        .filter(|part| part.starts_with("application/json") || part.starts_with("*/*"))
        .collect();
    if kept.is_empty() {
        "application/json".into()
    } else {
        kept.join(",")
    }
}

fn warnings(kind: &Stored, headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|text| kind.text_to_view(text))
        .collect()
}

fn unavailable(err: impl std::fmt::Display) -> Status {
    tracing::warn!(error = %err, "the storage did not answer");
    status::service_unavailable("the tenant storage is not reachable right now")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_json_or_tables_only() {
        assert_eq!(accept_json_or_table(""), "application/json");
        assert_eq!(
            accept_json_or_table("application/vnd.kubernetes.protobuf"),
            "application/json"
        );
        assert_eq!(
            accept_json_or_table("application/json;as=Table;v=v1;g=meta.k8s.io, application/json"),
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        );
    }
}
