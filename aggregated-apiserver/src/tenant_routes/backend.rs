//! Requests to kube-apiserver on a tenant's behalf: as the user
//! (impersonation, so RBAC inside the tenant's namespaces applies) or, for
//! what Arktos manages itself (a tenant's namespaces, shared read-only
//! objects), as arktos-apiserver. Answers are rewritten into the tenant's
//! view as they pass, watch events one by one.

use std::sync::Arc;

use arktos_crds::status;
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;
use tokio_stream::wrappers::ReceiverStream;
use warp::Reply;
use warp::reply::Response;

use super::list_stream::{ListRewrite, ListStream, Progress};
use crate::authn::UserInfo;

const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// Request headers a connection upgrade needs end to end (websocket and
/// SPDY, with the stream sub-protocols the client offers).
const UPGRADE_HEADERS: &[&str] = &[
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
];

/// Turns one JSON answer (object, list, event) into the tenant's view;
/// `false` drops it (a watch event about something not the tenant's).
pub type Rewrite = Arc<dyn Fn(&mut Value) -> bool + Send + Sync>;

/// One request to kube-apiserver.
pub struct Outgoing<'a> {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub accept: &'a str,
    pub content_type: &'a str,
    pub body: Option<Vec<u8>>,
    /// Impersonate this user; `None` acts as arktos-apiserver.
    pub as_user: Option<&'a UserInfo>,
    pub watch: bool,
    /// Lists: rewritten item by item as they stream (see `list_stream`),
    /// with [`Rewrite`] on the parsed answer when not shaped for that.
    pub list: Option<ListRewrite>,
}

impl<'a> Outgoing<'a> {
    /// A GET done as arktos-apiserver itself (not the user), answered in
    /// `accept`.
    pub fn get_as_us(uri: String, accept: &'a str) -> Self {
        Self {
            method: Method::GET,
            uri,
            accept,
            content_type: "",
            body: None,
            as_user: None,
            watch: false,
            list: None,
        }
    }

    /// A DELETE as arktos-apiserver, with the client's DeleteOptions (if
    /// any) as it sent them.
    pub fn delete_as_us(uri: String, content_type: &'a str, options: &[u8]) -> Self {
        Self {
            method: Method::DELETE,
            content_type,
            body: (!options.is_empty()).then(|| options.to_vec()),
            ..Self::get_as_us(uri, "application/json")
        }
    }

    /// A write of `body` (in `content_type`) answered in JSON, as
    /// `as_user` (`None`: as arktos-apiserver).
    pub fn write(
        method: Method,
        uri: String,
        content_type: &'a str,
        body: Vec<u8>,
        as_user: Option<&'a UserInfo>,
    ) -> Self {
        Self {
            method,
            uri,
            accept: "application/json",
            content_type,
            body: Some(body),
            as_user,
            watch: false,
            list: None,
        }
    }
}

/// The kube-apiserver of one partition, with the connections to it.
#[derive(Clone)]
pub struct Backend {
    client: kube::Client,
    /// The partition's name, for the Status of a request it cannot answer.
    partition: Arc<str>,
}

impl Backend {
    pub fn new(client: kube::Client, partition: &str) -> Self {
        Self {
            client,
            partition: partition.into(),
        }
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The prompt refusal of a request whose partition does not answer:
    /// its tenants learn which partition is down, nobody waits.
    fn unreachable(&self, err: impl std::fmt::Display) -> Status {
        tracing::warn!(partition = %self.partition, error = %err, "the partition's kube-apiserver did not answer");
        status::partition_unavailable(&self.partition, "its API server is not reachable right now")
    }

    /// Sends `request` to the partition's kube-apiserver.
    async fn call(
        &self,
        request: http::Request<kube::client::Body>,
    ) -> Result<http::Response<kube::client::Body>, Status> {
        self.client
            .send(request)
            .await
            .map_err(|e| self.unreachable(e))
    }

    fn build(&self, outgoing: &Outgoing<'_>) -> Result<http::Request<kube::client::Body>, Status> {
        self.build_accepting(outgoing, &json_accept(outgoing.accept))
    }

    fn build_accepting(
        &self,
        outgoing: &Outgoing<'_>,
        accept: &str,
    ) -> Result<http::Request<kube::client::Body>, Status> {
        let mut builder = http::Request::builder()
            .method(outgoing.method.clone())
            .uri(&outgoing.uri)
            .header(http::header::ACCEPT, accept);
        if !outgoing.content_type.is_empty() {
            builder = builder.header(http::header::CONTENT_TYPE, outgoing.content_type);
        }
        if let Some(user) = outgoing.as_user {
            builder = builder.header("Impersonate-User", &user.name);
            if !user.uid.is_empty() {
                builder = builder.header("Impersonate-Uid", &user.uid);
            }
            for group in &user.groups {
                builder = builder.header("Impersonate-Group", group);
            }
            // The credential id describes how the user proved themselves to
            // kube-apiserver; it is not an attribute to impersonate.
            for (key, values) in user
                .extra
                .iter()
                .filter(|(k, _)| k.as_str() != CREDENTIAL_ID)
            {
                let name = format!("Impersonate-Extra-{}", crate::request::encode(key));
                for value in values {
                    builder = builder.header(name.as_str(), value);
                }
            }
        }
        let body = outgoing
            .body
            .clone()
            .map(kube::client::Body::from)
            .unwrap_or_else(kube::client::Body::empty);
        builder
            .body(body)
            .map_err(|e| status::bad_request(&format!("cannot forward the request: {e}")))
    }

    /// An upgraded stream (exec, attach, port-forward): the client's upgrade
    /// request goes to kube-apiserver with the user impersonated; on 101 the
    /// client gets the same answer (so the websocket accept key matches its
    /// own key) and both upgraded connections are joined byte for byte.
    /// Refusals come back as Statuses in the tenant's view.
    pub async fn upgrade(
        &self,
        outgoing: Outgoing<'_>,
        client_headers: &http::HeaderMap,
        client: crate::serve::UpgradeSlot,
        rewrite: Rewrite,
    ) -> Result<Response, Status> {
        let mut request = self.build(&outgoing)?;
        let headers = request.headers_mut();
        headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("Upgrade"),
        );
        for name in UPGRADE_HEADERS {
            for value in client_headers.get_all(*name) {
                headers.append(*name, value.clone());
            }
        }
        let response = self.call(request).await?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            let code = response.status();
            let bytes =
                response.into_body().collect_bytes().await.map_err(|e| {
                    status::internal(&format!("reading kube-apiserver's answer: {e}"))
                })?;
            let mut value: Value = serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code.as_u16(), "message": String::from_utf8_lossy(&bytes)}));
            rewrite(&mut value);
            let status: Status = serde_json::from_value(value)
                .unwrap_or_else(|_| status::internal("kube-apiserver refused the stream"));
            return Err(status);
        }
        let mut reply = Response::new(Default::default());
        *reply.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for (name, value) in response.headers() {
            reply.headers_mut().append(name.clone(), value.clone());
        }
        let Some(client_upgrade) = client.take() else {
            return Err(status::bad_request("the connection was already upgraded"));
        };
        tokio::spawn(async move {
            let backend = match hyper::upgrade::on(response).await {
                Ok(up) => up,
                Err(e) => {
                    tracing::debug!(error = %e, "kube-apiserver's side of a stream did not upgrade");
                    return;
                }
            };
            let client = match client_upgrade.await {
                Ok(up) => up,
                Err(e) => {
                    tracing::debug!(error = %e, "the client's side of a stream did not upgrade");
                    return;
                }
            };
            let mut client = hyper_util::rt::TokioIo::new(client);
            let mut backend = hyper_util::rt::TokioIo::new(backend);
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut backend).await {
                tracing::debug!(error = %e, "stream ended");
            }
        });
        Ok(reply)
    }

    /// Sends the request; JSON answers are rewritten, others (logs) pass
    /// unchanged; watches stream.
    pub async fn send(&self, outgoing: Outgoing<'_>, rewrite: Rewrite) -> Result<Response, Status> {
        let request = self.build(&outgoing)?;
        let response = self.call(request).await?;
        let code = response.status();
        let content_type = content_type_of(response.headers());
        let warnings: Vec<HeaderValue> = response
            .headers()
            .get_all("warning")
            .iter()
            .cloned()
            .collect();
        let is_json = content_type.starts_with("application/json");
        let mut reply = if outgoing.watch && code.is_success() && is_json {
            stream_events(response.into_body(), rewrite)
        } else if !is_json && code.is_success() {
            stream_raw(response.into_body(), &content_type)
        } else if let Some(list) = outgoing.list.clone().filter(|_| code.is_success()) {
            stream_list(
                response.into_body(),
                list,
                code,
                &content_type,
                &outgoing.uri,
                rewrite,
            )
            .await?
        } else {
            let bytes = response
                .into_body()
                .collect_bytes()
                .await
                .map_err(|e| self.unreachable(e))?;
            parsed(code, bytes.to_vec(), &content_type, &outgoing.uri, &rewrite)?
        };
        *reply.status_mut() = code;
        for warning in warnings {
            reply.headers_mut().append("warning", warning);
        }
        Ok(reply)
    }

    /// A document nothing in it needs rewriting (`/version`, OpenAPI):
    /// asked for in the client's own `Accept`, so protobuf stays protobuf
    /// (kubectl reads `/openapi/v2` only as protobuf), and streamed back as
    /// it comes. The caching headers pass both ways, so clients cache the
    /// documents as they do on kube-apiserver; a redirect to another
    /// document (an OpenAPI v3 hash that changed) stays under `prefix`,
    /// the tenant's route.
    pub async fn pass_through(
        &self,
        outgoing: Outgoing<'_>,
        client_headers: &http::HeaderMap,
        prefix: &str,
    ) -> Result<Response, Status> {
        let mut request = self.build_accepting(&outgoing, outgoing.accept)?;
        for name in [http::header::IF_NONE_MATCH, http::header::IF_MODIFIED_SINCE] {
            if let Some(value) = client_headers.get(&name) {
                request.headers_mut().insert(name, value.clone());
            }
        }
        let response = self.call(request).await?;
        let code = response.status();
        let upstream = response.headers().clone();
        let content_type = content_type_of(&upstream);
        let mut reply = stream_raw(response.into_body(), &content_type);
        *reply.status_mut() = code;
        let headers = reply.headers_mut();
        for name in [
            http::header::ETAG,
            http::header::CACHE_CONTROL,
            http::header::EXPIRES,
            http::header::LAST_MODIFIED,
            http::header::VARY,
        ] {
            if let Some(value) = upstream.get(&name) {
                headers.insert(name, value.clone());
            }
        }
        if let Some(location) = upstream
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .filter(|l| l.starts_with('/'))
            .and_then(|l| HeaderValue::from_str(&format!("{prefix}{l}")).ok())
        {
            headers.insert(http::header::LOCATION, location);
        }
        Ok(reply)
    }

    /// Sends the request in its own `Accept` and returns the code and the
    /// body as it streams.
    pub async fn raw(
        &self,
        outgoing: Outgoing<'_>,
    ) -> Result<(StatusCode, kube::client::Body), Status> {
        let request = self.build_accepting(&outgoing, outgoing.accept)?;
        let response = self.call(request).await?;
        Ok((response.status(), response.into_body()))
    }

    /// Sends the request and returns the JSON answer, un-rewritten.
    pub async fn json(&self, outgoing: Outgoing<'_>) -> Result<(StatusCode, Value), Status> {
        let (code, _, value) = self.json_with_warnings(outgoing).await?;
        Ok((code, value))
    }

    /// As [`Backend::json`], with the answer's `Warning` headers.
    pub async fn json_with_warnings(
        &self,
        outgoing: Outgoing<'_>,
    ) -> Result<(StatusCode, Vec<HeaderValue>, Value), Status> {
        let request = self.build(&outgoing)?;
        let response = self.call(request).await?;
        let code = response.status();
        let warnings = response
            .headers()
            .get_all("warning")
            .iter()
            .cloned()
            .collect();
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| self.unreachable(e))?;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((code, warnings, value))
    }
}

/// A whole JSON answer, parsed and rewritten (others pass as they are).
fn parsed(
    code: StatusCode,
    bytes: Vec<u8>,
    content_type: &str,
    uri: &str,
    rewrite: &Rewrite,
) -> Result<Response, Status> {
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(mut value) => {
            if !rewrite(&mut value) {
                return Err(status::path_not_found(uri));
            }
            Ok(crate::respond::json_with_type(code, &value, content_type))
        }
        Err(_) => Ok(crate::respond::raw(code, bytes, content_type)),
    }
}

/// An answer that is not a list (a GET of one object): rewritten as raw
/// text like a list's items when it is shaped for that, else parsed.
fn whole(
    code: StatusCode,
    bytes: Vec<u8>,
    content_type: &str,
    uri: &str,
    rewrite: &Rewrite,
    object: &ListRewrite,
) -> Result<Response, Status> {
    match super::list_stream::tenant_object(object, &bytes) {
        Some(out) => Ok(crate::respond::raw(code, out, content_type)),
        None => parsed(code, bytes, content_type, uri, rewrite),
    }
}

/// How much of a streamed list is written at once.
const LIST_PIECE: usize = 256 * 1024;

/// A list answer rewritten item by item while kube-apiserver writes it;
/// parsed whole if it is not shaped for that (decided before any byte is
/// sent).
async fn stream_list(
    body: kube::client::Body,
    list: ListRewrite,
    code: StatusCode,
    content_type: &str,
    uri: &str,
    rewrite: Rewrite,
) -> Result<Response, Status> {
    let mut chunks = body.into_data_stream();
    let object = list.clone();
    let mut stream = ListStream::new(list);
    let mut first = Vec::new();
    loop {
        match chunks.next().await {
            Some(Ok(chunk)) => match stream.push(&chunk) {
                Progress::Emit(out) => {
                    first.extend_from_slice(&out);
                    if stream.started() {
                        break;
                    }
                }
                Progress::Unexpected => {
                    let mut bytes = stream.into_buffered();
                    while let Some(chunk) = chunks.next().await {
                        bytes.extend_from_slice(&chunk.map_err(unreachable)?);
                    }
                    return whole(code, bytes, content_type, uri, &rewrite, &object);
                }
            },
            Some(Err(e)) => return Err(unreachable(e)),
            None => {
                let bytes = stream.into_buffered();
                return whole(code, bytes, content_type, uri, &rewrite, &object);
            }
        }
    }
    Ok(stream_rest(chunks, stream, first, code, content_type))
}

/// The rest of a list being rewritten, streamed on after `first` (what
/// was rewritten while deciding to stream).
fn stream_rest(
    mut chunks: http_body_util::BodyDataStream<kube::client::Body>,
    mut stream: ListStream,
    first: Vec<u8>,
    code: StatusCode,
    content_type: &str,
) -> Response {
    let (sender, received) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        if sender.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        // Written on in pieces of LIST_PIECE: a write per upstream chunk
        // costs more (TLS records, syscalls) than the overlap gains.
        let mut pending = Vec::with_capacity(LIST_PIECE);
        while let Some(chunk) = chunks.next().await {
            match chunk {
                Ok(chunk) => {
                    if let Progress::Emit(out) = stream.push(&chunk) {
                        pending.extend_from_slice(&out);
                    }
                }
                Err(e) => {
                    let _ = sender.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            }
            if pending.len() >= LIST_PIECE {
                let piece = std::mem::replace(&mut pending, Vec::with_capacity(LIST_PIECE));
                if sender.send(Ok(Bytes::from(piece))).await.is_err() {
                    return;
                }
            }
        }
        let end = match stream.finish() {
            Some(tail) => {
                pending.extend_from_slice(&tail);
                Ok(Bytes::from(pending))
            }
            None => Err(std::io::Error::other("kube-apiserver's list ended early")),
        };
        let _ = sender.send(end).await;
    });
    let mut reply = warp::reply::stream(ReceiverStream::new(received)).into_response();
    *reply.status_mut() = code;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        reply
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    reply
}

/// Streams newline-delimited JSON events from kube-apiserver, each passed
/// through `rewrite` as it arrives; closing either side closes the other.
pub fn stream_events(body: kube::client::Body, rewrite: Rewrite) -> Response {
    let (lines, received) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut chunks = body.into_data_stream();
    tokio::spawn(async move {
        let mut pending = Vec::new();
        while let Some(Ok(chunk)) = chunks.next().await {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(mut event) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                if !rewrite(&mut event) {
                    continue;
                }
                let mut out = serde_json::to_vec(&event).unwrap_or_default();
                out.push(b'\n');
                if lines.send(Ok(Bytes::from(out))).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut reply = warp::reply::stream(ReceiverStream::new(received)).into_response();
    reply.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    reply
}

fn stream_raw(body: kube::client::Body, content_type: &str) -> Response {
    let (chunks_out, received) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let mut chunks = body.into_data_stream();
    tokio::spawn(async move {
        while let Some(chunk) = chunks.next().await {
            // An upstream failure is passed on, so the client's connection
            // is cut rather than the body ending early as if complete.
            let chunk = chunk.map_err(|e| std::io::Error::other(e.to_string()));
            let failed = chunk.is_err();
            if chunks_out.send(chunk).await.is_err() || failed {
                return;
            }
        }
    });
    let mut reply = warp::reply::stream(ReceiverStream::new(received)).into_response();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        reply
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    reply
}

fn content_type_of(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// JSON and JSON tables only; protobuf would hide names from the rewrite.
pub fn json_accept(accept: &str) -> String {
    let kept: Vec<&str> = accept
        .split(',')
        .map(str::trim)
        .filter(|part| {
            part.starts_with("application/json")
                || part.starts_with("*/*")
                || part.starts_with("text/plain")
        })
        .collect();
    if kept.is_empty() {
        "application/json".into()
    } else {
        kept.join(",")
    }
}

/// A list cut off as it streamed.
fn unreachable(err: impl std::fmt::Display) -> Status {
    tracing::warn!(error = %err, "kube-apiserver's answer was cut off");
    status::service_unavailable("the partition's API server stopped answering")
}
