//! A request as the API handlers see it, independent of the HTTP stack, so
//! handlers are tested in-process without sockets.

use arktos_crds::status;
use bytes::Bytes;
use http::{HeaderMap, Method};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde_json::Value;

use crate::serve::{Listener, PeerCertificate, UpgradeSlot};

/// Largest request body accepted (kube-apiserver's limit).
pub const MAX_BODY_BYTES: u64 = 3 * 1024 * 1024;

#[derive(Clone, Debug)]
pub struct ApiRequest {
    pub method: Method,
    pub path: String,
    /// The raw query string, without `?`.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: PeerCertificate,
    pub listener: Listener,
    /// Set when the client asked to upgrade the connection (streams).
    pub upgrade: Option<UpgradeSlot>,
}

impl ApiRequest {
    /// Decoded query parameters, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        parse_query(&self.query)
    }

    pub fn param(&self, name: &str) -> Option<String> {
        self.params()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    pub fn is_watch(&self) -> bool {
        self.param("watch").is_some_and(|v| v == "true" || v == "1")
    }

    pub fn content_type(&self) -> String {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default()
    }

    pub fn accept(&self) -> String {
        self.headers
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The body as JSON, from JSON or YAML.
    pub fn json_body(&self) -> Result<Value, Status> {
        if self.body.is_empty() {
            return Err(status::bad_request("the request body is empty"));
        }
        let content_type = self.content_type();
        if content_type.contains("yaml") {
            return serde_yaml::from_slice::<Value>(&self.body)
                .map_err(|e| status::bad_request(&format!("the body is not valid YAML: {e}")));
        }
        if !(content_type.is_empty() || content_type.contains("json")) {
            return Err(status::unsupported_media_type(&content_type));
        }
        serde_json::from_slice(&self.body)
            .map_err(|e| status::bad_request(&format!("the body is not valid JSON: {e}")))
    }
}

pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decoding, with `+` as a space as in forms.
pub fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match std::str::from_utf8(&bytes[i + 1..(i + 3).min(bytes.len())])
                    .ok()
                    .filter(|h| h.len() == 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Percent-encodes a query value.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub fn encode_query(params: &[(String, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_round_trip() {
        let params = parse_query("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&limit=");
        assert_eq!(
            params[0],
            ("labelSelector".into(), "app=web,tier in (a)".into())
        );
        assert_eq!(params[1], ("watch".into(), "true".into()));
        assert_eq!(params[2], ("limit".into(), "".into()));
        assert_eq!(parse_query(&encode_query(&params)), params);
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
