//! Raw requests to an API server (or a tenant route) that tests and
//! benchmarks make where no typed client fits: the Arktos pod shape, VM
//! actions.

use serde_json::Value;

/// `method path` with a JSON `body` (none when null); the JSON answer, or
/// kube's error (a refusal is `kube::Error::Api` with the Status).
pub async fn request_json(
    client: &kube::Client,
    method: http::Method,
    path: &str,
    content_type: &str,
    body: Value,
) -> anyhow::Result<kube::Result<Value>> {
    let mut request = http::Request::builder().method(method).uri(path);
    if !content_type.is_empty() {
        request = request.header(http::header::CONTENT_TYPE, content_type);
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body)?
    };
    Ok(client.request::<Value>(request.body(body)?).await)
}
