//! Turning answers into HTTP responses: JSON objects, `Status` errors
//! (always with the code the Status carries), and streams.

use http::{HeaderValue, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::Serialize;
use warp::Reply;
use warp::reply::Response;

const JSON: &str = "application/json";

pub fn json<T: Serialize>(code: StatusCode, body: &T) -> Response {
    json_with_type(code, body, JSON)
}

pub fn json_with_type<T: Serialize>(code: StatusCode, body: &T, content_type: &str) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => raw(code, bytes, content_type),
        Err(err) => status(arktos_crds::status::internal(&format!(
            "encoding the response: {err}"
        ))),
    }
}

pub fn raw(code: StatusCode, body: impl Into<bytes::Bytes>, content_type: &str) -> Response {
    let mut response = Response::new(body.into().into());
    *response.status_mut() = code;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(http::header::CONTENT_TYPE, value);
    }
    response
}

/// A `Status` error, sent with the HTTP code it names.
pub fn status(status: Status) -> Response {
    let code = status
        .code
        .and_then(|c| u16::try_from(c).ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(code, &status)
}

pub fn text(code: StatusCode, body: &'static str) -> Response {
    let mut response = warp::reply::with_status(body, code).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
