//! Who is asking. Three ways, as an aggregated API server of Kubernetes
//! accepts them:
//! - identity headers (`X-Remote-User`, ...) on a connection whose client
//!   certificate is a front-proxy certificate: the aggregator vouches;
//! - a client certificate signed by the cluster's client CA;
//! - a bearer token, checked with a TokenReview.
//!
//! Identity headers on any other connection are ignored, never trusted.

use std::collections::BTreeMap;
use std::time::Duration;

use arktos_crds::status;
use http::HeaderMap;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::Api;
use kube::api::PostParams;
use sha2::{Digest, Sha256};

use crate::cache::TtlCache;
use crate::serve::PeerCertificate;

pub const AUTHENTICATED: &str = "system:authenticated";

/// An authenticated user, as Kubernetes describes one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl UserInfo {
    /// The tenant whose namespace this user is a service account of: a
    /// workload of that tenant, at home in its API.
    pub fn service_account_tenant(&self) -> Option<&str> {
        let rest = self.name.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        arktos_crds::naming::split_storage_namespace(namespace).map(|(tenant, _)| tenant)
    }

    fn with_authenticated_group(mut self) -> Self {
        if !self.groups.iter().any(|g| g == AUTHENTICATED) {
            self.groups.push(AUTHENTICATED.to_string());
        }
        self
    }
}

/// The header names the front proxy uses, from
/// `kube-system/extension-apiserver-authentication`.
#[derive(Clone, Debug)]
pub struct RequestHeaderNames {
    pub username: Vec<String>,
    pub uid: Vec<String>,
    pub group: Vec<String>,
    pub extra_prefix: Vec<String>,
}

impl Default for RequestHeaderNames {
    fn default() -> Self {
        Self {
            username: vec!["X-Remote-User".into()],
            uid: vec!["X-Remote-Uid".into()],
            group: vec!["X-Remote-Group".into()],
            extra_prefix: vec!["X-Remote-Extra-".into()],
        }
    }
}

/// The outcome when nothing identifies the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    User(UserInfo),
    /// The aggregator itself, asking without a user (availability checks,
    /// discovery, OpenAPI).
    Aggregator,
}

pub struct Authenticator {
    headers: RequestHeaderNames,
    client: Option<kube::Client>,
    tokens: TtlCache<[u8; 32], Option<UserInfo>>,
}

impl Authenticator {
    /// `client` reviews tokens; without one, tokens are refused.
    pub fn new(headers: RequestHeaderNames, client: Option<kube::Client>) -> Self {
        Self {
            headers,
            client,
            tokens: TtlCache::new(Duration::from_secs(10), 10_000),
        }
    }

    pub async fn authenticate(
        &self,
        peer: &PeerCertificate,
        headers: &HeaderMap,
    ) -> Result<Identity, Status> {
        if let PeerCertificate::FrontProxy { .. } = peer {
            return Ok(match self.user_from_request_headers(headers) {
                Some(user) => Identity::User(user.with_authenticated_group()),
                None => Identity::Aggregator,
            });
        }
        if let Some(token) = bearer_token(headers) {
            return self.review_token(token).await.map(Identity::User);
        }
        match peer {
            PeerCertificate::User { name, groups } => Ok(Identity::User(
                UserInfo {
                    name: name.clone(),
                    groups: groups.clone(),
                    ..Default::default()
                }
                .with_authenticated_group(),
            )),
            PeerCertificate::Untrusted { reason } => Err(status::unauthorized(reason)),
            _ => Err(status::unauthorized(
                "Unauthorized: no client certificate signed by a trusted CA and no bearer token",
            )),
        }
    }

    fn user_from_request_headers(&self, headers: &HeaderMap) -> Option<UserInfo> {
        let first = |names: &[String]| {
            names
                .iter()
                .find_map(|n| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .filter(|v| !v.is_empty())
                })
                .map(str::to_string)
        };
        let name = first(&self.headers.username)?;
        let uid = first(&self.headers.uid).unwrap_or_default();
        let groups = self
            .headers
            .group
            .iter()
            .flat_map(|n| headers.get_all(n).iter())
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (key, value) in headers {
            let key = key.as_str();
            for prefix in &self.headers.extra_prefix {
                let prefix = prefix.to_ascii_lowercase();
                if let Some(extra_key) = key.strip_prefix(&prefix)
                    && let Ok(value) = value.to_str()
                {
                    extra
                        .entry(percent_decode(extra_key))
                        .or_default()
                        .push(value.to_string());
                }
            }
        }
        Some(UserInfo {
            name,
            uid,
            groups,
            extra,
        })
    }

    async fn review_token(&self, token: &str) -> Result<UserInfo, Status> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let answer = match self.tokens.get(&key) {
            Some(answer) => answer,
            None => {
                let answer = self.ask_token_review(token).await?;
                self.tokens.insert(key, answer.clone());
                answer
            }
        };
        answer.ok_or_else(|| status::unauthorized("Unauthorized: the bearer token is not valid"))
    }

    async fn ask_token_review(&self, token: &str) -> Result<Option<UserInfo>, Status> {
        let Some(client) = &self.client else {
            return Err(status::unauthorized(
                "Unauthorized: bearer tokens are not accepted here",
            ));
        };
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, "TokenReview failed");
                status::service_unavailable("cannot verify the bearer token right now")
            })?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Ok(None);
        }
        let user = status.user.unwrap_or_default();
        Ok(Some(
            UserInfo {
                name: user.username.unwrap_or_default(),
                uid: user.uid.unwrap_or_default(),
                groups: user.groups.unwrap_or_default(),
                extra: user.extra.unwrap_or_default(),
            }
            .with_authenticated_group(),
        ))
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

/// Extra keys arrive percent-encoded (`authentication.kubernetes.io%2fcredential-id`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(byte) = u8::from_str_radix(&text[i + 1..i + 3], 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        map
    }

    fn authn() -> Authenticator {
        Authenticator::new(RequestHeaderNames::default(), None)
    }

    #[test]
    fn service_accounts_of_tenant_namespaces_belong_to_their_tenant() {
        let user = |name: &str| UserInfo {
            name: name.into(),
            ..Default::default()
        };
        for (name, tenant) in [
            ("system:serviceaccount:acme--web:default", Some("acme")),
            ("system:serviceaccount:acme--web:", None),
            ("system:serviceaccount:kube-system:default", None),
            ("system:serviceaccount:--web:default", None),
            ("acme--web", None),
            ("system:serviceaccounts:acme--web", None),
        ] {
            assert_eq!(user(name).service_account_tenant(), tenant, "{name}");
        }
    }

    #[tokio::test]
    async fn trusts_identity_headers_only_from_the_front_proxy() {
        let h = headers(&[
            ("x-remote-user", "alice"),
            ("x-remote-group", "acme-admins"),
            ("x-remote-group", "devs"),
            (
                "x-remote-extra-authentication.kubernetes.io%2fcredential-id",
                "X509SHA256=ab",
            ),
        ]);
        let proxy = PeerCertificate::FrontProxy {
            common_name: "front-proxy-client".into(),
        };
        let Identity::User(user) = authn().authenticate(&proxy, &h).await.unwrap() else {
            panic!("expected a user")
        };
        assert_eq!(user.name, "alice");
        assert_eq!(user.groups, ["acme-admins", "devs", AUTHENTICATED]);
        assert_eq!(
            user.extra["authentication.kubernetes.io/credential-id"],
            ["X509SHA256=ab"]
        );

        for peer in [
            PeerCertificate::None,
            PeerCertificate::Untrusted {
                reason: "unknown CA".into(),
            },
        ] {
            let err = authn().authenticate(&peer, &h).await.unwrap_err();
            assert_eq!(err.code, Some(401), "{peer:?}");
        }
    }

    #[tokio::test]
    async fn a_client_certificate_user_is_authenticated_and_headers_are_ignored() {
        let h = headers(&[
            ("x-remote-user", "system:admin"),
            ("x-remote-group", "system:masters"),
        ]);
        let peer = PeerCertificate::User {
            name: "bob".into(),
            groups: vec!["globex".into()],
        };
        let Identity::User(user) = authn().authenticate(&peer, &h).await.unwrap() else {
            panic!("expected a user")
        };
        assert_eq!(user.name, "bob");
        assert_eq!(user.groups, ["globex", AUTHENTICATED]);
    }

    #[tokio::test]
    async fn the_aggregator_without_a_user_is_recognised() {
        let proxy = PeerCertificate::FrontProxy {
            common_name: "front-proxy-client".into(),
        };
        assert_eq!(
            authn()
                .authenticate(&proxy, &HeaderMap::new())
                .await
                .unwrap(),
            Identity::Aggregator
        );
    }

    #[test]
    fn parses_bearer_tokens() {
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc")])),
            Some("abc")
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Basic abc")])),
            None
        );
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer ")])),
            None
        );
    }
}
