//! Duplicate fields under `fieldValidation`. A body the gateway maps is
//! parsed and written again, and a JSON object keeps one value per key, so
//! kube-apiserver would never see a field sent twice. When the client's
//! body has one, the body exactly as sent is first tried (a dry run, as the
//! user), so that kube-apiserver itself says what it says of it: under
//! `Strict` its refusal naming every unknown and duplicate field, under
//! `Warn` its warnings, which the real answer then carries.

use std::collections::HashSet;
use std::fmt;

use http::HeaderValue;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use warp::reply::Response;

use super::backend::Outgoing;
use super::mapping::View;
use super::{TenantRoutes, with_query};
use crate::authn::UserInfo;
use crate::request::ApiRequest;
use crate::respond;

/// Whether any JSON object in the value has a key twice.
struct Found(bool);

impl<'de> Deserialize<'de> for Found {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Walk)
    }
}

struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = Found;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let mut keys = HashSet::new();
        let mut found = false;
        while let Some(key) = map.next_key::<String>()? {
            found |= !keys.insert(key);
            found |= map.next_value::<Found>()?.0;
        }
        Ok(Found(found))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let mut found = false;
        while let Some(item) = seq.next_element::<Found>()? {
            found |= item.0;
        }
        Ok(Found(found))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Found, E> {
        Ok(Found(false))
    }
    fn visit_i64<E>(self, _: i64) -> Result<Found, E> {
        Ok(Found(false))
    }
    fn visit_u64<E>(self, _: u64) -> Result<Found, E> {
        Ok(Found(false))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Found, E> {
        Ok(Found(false))
    }
    fn visit_str<E>(self, _: &str) -> Result<Found, E> {
        Ok(Found(false))
    }
    fn visit_unit<E>(self) -> Result<Found, E> {
        Ok(Found(false))
    }
}

/// Whether a JSON body has a key twice in one object (false when it is
/// not JSON at all: the mapping reports that).
pub fn has_duplicate_keys(body: &[u8]) -> bool {
    serde_json::from_slice::<Found>(body).is_ok_and(|found| found.0)
}

/// What trying the body as sent said.
pub enum Tried {
    /// kube-apiserver refused it for its fields: the answer to give.
    Refused(Response),
    /// Go on, adding these warnings to the answer.
    Warnings(Vec<HeaderValue>),
}

impl TenantRoutes {
    /// Tries a JSON body with a field sent twice as kube-apiserver would
    /// see it, when its `fieldValidation` looks at fields (module docs).
    pub(super) async fn try_duplicate_fields(
        &self,
        user: Option<&UserInfo>,
        view: &View,
        request: &ApiRequest,
        method: &http::Method,
        path: &str,
        params: &[(String, String)],
    ) -> Result<Tried, Status> {
        let validation = request.param("fieldValidation").unwrap_or_default();
        // No content type is JSON to kube-apiserver (`kubectl create --raw`).
        let content_type = request.content_type();
        let json = content_type.is_empty() || content_type.contains("json");
        if validation.eq_ignore_ascii_case("Ignore") || !json || !has_duplicate_keys(&request.body)
        {
            return Ok(Tried::Warnings(Vec::new()));
        }
        let mut trial: Vec<(String, String)> = params
            .iter()
            .filter(|(k, _)| k != "dryRun")
            .cloned()
            .collect();
        trial.push(("dryRun".into(), "All".into()));
        let uri = with_query(path.to_string(), &trial);
        let body = request.body.to_vec();
        let outgoing = Outgoing::write(method.clone(), uri, &content_type, body, user);
        let (code, warnings, mut answer) = self.backend.json_with_warnings(outgoing).await?;
        let decoding = answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("strict decoding error"));
        if code.is_client_error() && decoding {
            view.response(&mut answer);
            let mut reply = respond::json(code, &answer);
            for warning in warnings {
                reply.headers_mut().append("warning", warning);
            }
            return Ok(Tried::Refused(reply));
        }
        let duplicates = warnings
            .into_iter()
            .filter(|w| w.to_str().is_ok_and(|w| w.contains("duplicate field")))
            .collect();
        Ok(Tried::Warnings(duplicates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_key_twice_at_any_depth() {
        assert!(has_duplicate_keys(
            br#"{"spec": {"replicas": 1, "replicas": 2}}"#
        ));
        assert!(has_duplicate_keys(br#"{"a": [{"b": 1, "b": 1}]}"#));
        assert!(has_duplicate_keys(br#"{"kind": "x", "kind": "x"}"#));
        assert!(!has_duplicate_keys(
            br#"{"spec": {"replicas": 1}, "status": {"replicas": 1}}"#
        ));
        assert!(!has_duplicate_keys(
            br#"[{"a": null, "b": true, "c": 1.5, "d": -1}]"#
        ));
        assert!(!has_duplicate_keys(b"not json"));
        assert!(has_duplicate_keys(
            br#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dup", "namespace": "web"},
        "data": {"a": "1"}, "data": {"a": "2"}, "unknownField": 1}"#
        ));
    }
}
