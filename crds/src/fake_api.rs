//! A small in-memory stand-in for kube-apiserver, for unit tests of the
//! controllers' orchestration: objects live in a map keyed by their path;
//! server-side applies merge into it, gets, lists (narrowed by an equality
//! label selector) and deletes read and change it; every request is
//! recorded as `METHOD path`. Not a Kubernetes: no admission, no versions
//! beyond a counter, no watches.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<String>,
    version: u64,
}

impl FakeApi {
    /// A kube client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, std::convert::Infallible>(fake.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    /// Stores `object` at `path` (e.g. `/api/v1/namespaces/acme--web`).
    pub fn put(&self, path: &str, object: Value) {
        self.state
            .lock()
            .expect("fake state")
            .objects
            .insert(path.to_string(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("fake state")
            .objects
            .get(path)
            .cloned()
    }

    /// The requests so far, as `METHOD path`, reads included.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("fake state").requests.clone()
    }

    /// The requests so far that change something.
    pub fn writes(&self) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| !r.starts_with("GET "))
            .collect()
    }

    async fn answer(&self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let mut state = self.state.lock().expect("fake state");
        state.requests.push(format!("{method} {path}"));
        state.version += 1;
        let version = state.version.to_string();
        let (code, answer) = match method {
            Method::GET => match state.objects.get(&path) {
                Some(object) => (StatusCode::OK, object.clone()),
                None if is_collection(&path) => (StatusCode::OK, list(&state, &path, &query)),
                None => not_found(&path),
            },
            Method::PATCH | Method::PUT | Method::POST => {
                let key = if method == Method::POST {
                    let name = body["metadata"]["name"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("generated-{version}"));
                    format!("{path}/{name}")
                } else {
                    path.trim_end_matches("/status").to_string()
                };
                let mut object = state.objects.get(&key).cloned().unwrap_or(json!({}));
                if body.is_array() {
                    // A JSON patch (the finalizer helper's): applied as such.
                    if let Ok(patch) = serde_json::from_value::<json_patch::Patch>(body) {
                        let _ = json_patch::patch(&mut object, &patch);
                    }
                } else {
                    json_patch::merge(&mut object, &body);
                }
                object["metadata"]["resourceVersion"] = version.into();
                state.objects.insert(key, object.clone());
                let code = if method == Method::POST {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                };
                (code, object)
            }
            Method::DELETE if is_collection(&path) => {
                // deletecollection: what the list would show goes.
                let gone = list(&state, &path, &query);
                let names: Vec<String> = gone["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|o| o["metadata"]["name"].as_str())
                    .map(|name| format!("{path}/{name}"))
                    .collect();
                for key in names {
                    state.objects.remove(&key);
                }
                (StatusCode::OK, gone)
            }
            Method::DELETE => match state.objects.remove(&path) {
                Some(object) => (StatusCode::OK, object),
                None => not_found(&path),
            },
            _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
        };
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(answer.to_string())))
            .expect("a response")
    }
}

/// `/api/v1/namespaces`, `/apis/g/v/namespaces/ns/things`: an odd number
/// of segments after the group-version names a collection.
fn is_collection(path: &str) -> bool {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let after = if segments.first() == Some(&"api") {
        2
    } else {
        3
    };
    segments.len() > after && (segments.len() - after) % 2 == 1
}

fn list(state: &State, path: &str, query: &str) -> Value {
    let selector = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("labelSelector="))
        .map(|s| s.replace("%3D", "=").replace("%2F", "/"));
    let items: Vec<Value> = state
        .objects
        .iter()
        .filter(|(key, _)| {
            key.strip_prefix(path)
                .and_then(|rest| rest.strip_prefix('/'))
                .is_some_and(|rest| !rest.contains('/'))
        })
        .map(|(_, object)| object.clone())
        .filter(|object| {
            selector.as_deref().is_none_or(|selector| {
                selector.split(',').all(|term| {
                    let (key, value) = term.split_once('=').unwrap_or((term, ""));
                    object["metadata"]["labels"][key] == value
                })
            })
        })
        .collect();
    json!({"kind": "List", "apiVersion": "v1",
        "metadata": {"resourceVersion": state.version.to_string()}, "items": items})
}

fn not_found(path: &str) -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": format!("{path} not found"), "reason": "NotFound", "code": 404}),
    )
}
