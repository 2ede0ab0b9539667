//! Every request enters here: health (always allowed), then who is asking
//! (authn), what they ask (the path), whether they may (SubjectAccessReview),
//! and the handler. Anything unknown or unauthorised fails closed with a
//! `Status`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use arktos_crds::status;
use arktos_crds::tenant::{GROUP, PLURAL, VERSION};
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderMap, Method, StatusCode};
use warp::Filter;
use warp::reply::Response;

use crate::authn::{Authenticator, Identity, UserInfo};
use crate::authz::{Attributes, Authorizer};
use crate::discovery;
use crate::metrics::Metrics;
use crate::openapi::{self, OpenApi};
use crate::request::{ApiRequest, MAX_BODY_BYTES};
use crate::respond;
use crate::serve::{ApiFilter, Listener, PeerCertificate};
use crate::tenant_routes::partitioned::PartitionRoutes;
use crate::tenant_routes::path::TenantPath;
use crate::tenants::{Target, TenantApi};
use crate::verb;

pub struct State {
    pub authn: Authenticator,
    pub authz: Arc<Authorizer>,
    pub tenants: TenantApi,
    pub partitions: crate::partitions::PartitionApi,
    pub tenant_routes: Arc<PartitionRoutes>,
    pub openapi: OpenApi,
    pub metrics: Arc<Metrics>,
    pub ready: AtomicBool,
}

/// The whole API as one warp filter.
pub fn filter(state: Arc<State>) -> ApiFilter {
    warp::any()
        .and(warp::ext::optional::<PeerCertificate>())
        .and(warp::ext::optional::<Listener>())
        .and(warp::ext::optional::<crate::serve::UpgradeSlot>())
        .and(warp::method())
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(
            move |peer: Option<PeerCertificate>,
                  listener: Option<Listener>,
                  upgrade: Option<crate::serve::UpgradeSlot>,
                  method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  body| {
                let state = state.clone();
                async move {
                    let body = match read_body(body).await {
                        Ok(body) => body,
                        Err(response) => return response,
                    };
                    let upgrade = upgrade.filter(|_| headers.contains_key(http::header::UPGRADE));
                    let request = ApiRequest {
                        method,
                        path: path.as_str().to_string(),
                        query,
                        headers,
                        body,
                        peer: peer.unwrap_or(PeerCertificate::None),
                        listener: listener.unwrap_or(Listener::Aggregated),
                        upgrade,
                    };
                    handle(&state, request).await
                }
            },
        )
        .boxed()
}

async fn read_body<S, B>(body: S) -> Result<Bytes, Response>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut collected = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk
            .map_err(|e| respond::status(status::bad_request(&format!("reading the body: {e}"))))?;
        if collected.len() as u64 + chunk.remaining() as u64 > MAX_BODY_BYTES {
            return Err(respond::status(status::request_entity_too_large(
                MAX_BODY_BYTES as usize,
            )));
        }
        collected.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Ok(collected.freeze())
}

/// What a path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Health,
    Ready,
    Metrics,
    Discovery,
    OpenApi,
    Tenants(Target),
    Partitions(Target),
    /// A tenant route: tenant name, the path as the tenant writes it, and
    /// what that path asks for (`None`: nothing a tenant may ask for).
    ForTenant {
        tenant: String,
        path: String,
        parsed: Option<TenantPath>,
    },
    /// A Kubernetes path on the gateway without a tenant (`/api/...`): the
    /// in-cluster config of a tenant's pods, served as its tenant's route.
    Plain(String),
    NotFound,
}

/// Paths of the tenant gateway: `/tenants/{t}/...`, and the Arktos forms
/// `/api/v1/tenants/{t}/...` and `/apis/{g}/{v}/tenants/{t}/...`.
fn gateway_route(path: &str) -> Route {
    match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/healthz/ping" | "/livez/ping" => return Route::Health,
        "/readyz" => return Route::Ready,
        "/metrics" => return Route::Metrics,
        _ => {}
    }
    if path.contains("/../")
        || path.ends_with("/..")
        || path.contains("//")
        || path.to_ascii_lowercase().contains("%2f")
    {
        return Route::NotFound;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let (tenant, inner) = match segments.as_slice() {
        ["tenants", tenant, rest @ ..] => (*tenant, format!("/{}", rest.join("/"))),
        ["api", version, "tenants", tenant, rest @ ..] => {
            (*tenant, format!("/api/{version}/{}", rest.join("/")))
        }
        ["apis", group, version, "tenants", tenant, rest @ ..] => (
            *tenant,
            format!("/apis/{group}/{version}/{}", rest.join("/")),
        ),
        ["api" | "apis" | "version" | "openapi", ..] => {
            return Route::Plain(path.trim_end_matches('/').to_string());
        }
        _ => return Route::NotFound,
    };
    for_tenant(tenant, inner)
}

fn for_tenant(tenant: &str, path: String) -> Route {
    Route::ForTenant {
        tenant: tenant.to_string(),
        parsed: crate::tenant_routes::path::parse(&path),
        path,
    }
}

fn route(path: &str, watch_prefix: &mut bool) -> Route {
    if path.contains("/../")
        || path.ends_with("/..")
        || path.contains("//")
        || path.to_ascii_lowercase().contains("%2f")
    {
        return Route::NotFound;
    }
    let path = path.trim_end_matches('/');
    match path {
        "/healthz" | "/livez" | "/healthz/ping" | "/livez/ping" => return Route::Health,
        "/readyz" => return Route::Ready,
        "/metrics" => return Route::Metrics,
        "" | "/apis" => return Route::Discovery,
        "/openapi/v2" | "/openapi/v3" => return Route::OpenApi,
        _ => {}
    }
    let group = format!("/apis/{GROUP}");
    let version = format!("{group}/{VERSION}");
    if path == group || path == version {
        return Route::Discovery;
    }
    if path == format!("/openapi/v3/apis/{GROUP}/{VERSION}") {
        return Route::OpenApi;
    }
    let Some(rest) = path.strip_prefix(&format!("{version}/")) else {
        return Route::NotFound;
    };
    let rest = match rest.strip_prefix("watch/") {
        Some(rest) => {
            *watch_prefix = true;
            rest
        }
        None => rest,
    };
    let segments: Vec<&str> = rest.split('/').collect();
    if let Some(target) = partition_target(&segments, *watch_prefix) {
        return Route::Partitions(target);
    }
    match segments.as_slice() {
        [resource] if *resource == PLURAL => Route::Tenants(Target::Collection),
        [resource, name] if *resource == PLURAL && valid_name(name) => {
            Route::Tenants(Target::Object {
                name: name.to_string(),
                status: false,
            })
        }
        [resource, name, "status"] if *resource == PLURAL && valid_name(name) && !*watch_prefix => {
            Route::Tenants(Target::Object {
                name: name.to_string(),
                status: true,
            })
        }
        // Tenant routes on the aggregated path. `namespaces/...` is the
        // Arktos form of the core group's namespaced paths.
        [resource, name, first, rest @ ..]
            if *resource == PLURAL
                && valid_name(name)
                && !*watch_prefix
                && matches!(
                    *first,
                    "api" | "apis" | "version" | "openapi" | "namespaces"
                ) =>
        {
            let inner = if *first == "namespaces" {
                format!("/api/v1/namespaces/{}", rest.join("/"))
            } else {
                format!("/{first}/{}", rest.join("/"))
            };
            for_tenant(name, inner.trim_end_matches('/').to_string())
        }
        _ => Route::NotFound,
    }
}

/// What a path under the group-version asks of `partitions`, if anything.
fn partition_target(segments: &[&str], watch_prefix: bool) -> Option<Target> {
    let plural = arktos_crds::partition::PLURAL;
    match segments {
        [resource] if *resource == plural => Some(Target::Collection),
        [resource, name] if *resource == plural && valid_name(name) => Some(Target::Object {
            name: name.to_string(),
            status: false,
        }),
        [resource, name, "status"] if *resource == plural && valid_name(name) && !watch_prefix => {
            Some(Target::Object {
                name: name.to_string(),
                status: true,
            })
        }
        _ => None,
    }
}

/// Object names we pass on: DNS subdomain characters only, so nothing in a
/// name can change the meaning of the storage URL.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[tracing::instrument(name = "request", skip_all, fields(method = %request.method, path = %request.path))]
pub async fn handle(state: &State, mut request: ApiRequest) -> Response {
    let started = Instant::now();
    let mut watch_prefix = false;
    let route = match request.listener {
        Listener::Aggregated => route(&request.path, &mut watch_prefix),
        Listener::Gateway => gateway_route(&request.path),
    };
    if watch_prefix && !request.is_watch() {
        request.query = if request.query.is_empty() {
            "watch=true".into()
        } else {
            format!("{}&watch=true", request.query)
        };
    }
    let (verb, resource) = labels(&route, &request);
    let response = match route {
        Route::Health => respond::text(StatusCode::OK, "ok"),
        Route::Ready => {
            if state.ready.load(Ordering::Relaxed) {
                respond::text(StatusCode::OK, "ok")
            } else {
                respond::text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the tenant storage is not reachable yet",
                )
            }
        }
        other => match state
            .authn
            .authenticate(&request.peer, &request.headers)
            .await
        {
            Ok(identity) => authorized(state, &request, identity, other).await,
            Err(denied) => respond::status(denied),
        },
    };
    let code = response.status().as_u16();
    state
        .metrics
        .observe(verb, resource, code, started.elapsed());
    tracing::info!(
        method = %request.method,
        path = %request.path,
        code,
        took_ms = started.elapsed().as_millis() as u64,
        "request"
    );
    response
}

/// The verb and resource labels of a request's metrics.
fn labels(route: &Route, request: &ApiRequest) -> (&'static str, &'static str) {
    match route {
        Route::ForTenant {
            parsed: Some(TenantPath::Resource(r)),
            ..
        } => (
            verb::of(
                &request.method,
                r.name.is_some(),
                r.watch || request.is_watch(),
            ),
            "tenant-routes",
        ),
        Route::ForTenant { .. } => ("get", "tenant-routes"),
        Route::Plain(_) => ("get", "tenant-routes"),
        Route::Tenants(target) | Route::Partitions(target) => (
            verb::of(
                &request.method,
                matches!(target, Target::Object { .. }),
                request.is_watch(),
            ),
            if matches!(route, Route::Tenants(_)) {
                "tenants"
            } else {
                "partitions"
            },
        ),
        Route::Health => ("get", "healthz"),
        Route::Ready => ("get", "readyz"),
        Route::Discovery => ("get", "discovery"),
        Route::OpenApi => ("get", "openapi"),
        Route::Metrics => ("get", "metrics"),
        Route::NotFound => ("get", "other"),
    }
}

async fn authorized(
    state: &State,
    request: &ApiRequest,
    identity: Identity,
    route: Route,
) -> Response {
    // Impersonation is kube-apiserver's job; a client that asks us for it
    // directly is refused rather than ignored.
    if request
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("impersonate-"))
    {
        return respond::status(status::forbidden_path(
            &user_name(&identity),
            "impersonate",
            &request.path,
        ));
    }
    match route {
        Route::Discovery | Route::OpenApi | Route::Metrics => {
            own_document(state, request, &identity, &route).await
        }
        Route::Tenants(target) => {
            match authorize_stored(state, request, identity, &target, PLURAL).await {
                Ok(user) => state.tenants.handle(&user, request, target).await,
                Err(denied) => denied,
            }
        }
        Route::Partitions(target) => {
            let plural = arktos_crds::partition::PLURAL;
            match authorize_stored(state, request, identity, &target, plural).await {
                Ok(_) => state.partitions.handle(request, target).await,
                Err(denied) => denied,
            }
        }
        Route::ForTenant {
            tenant,
            path,
            parsed,
        } => {
            let Identity::User(user) = identity else {
                return respond::status(status::unauthorized(
                    "Unauthorized: the request carries no user",
                ));
            };
            state
                .tenant_routes
                .handle(&user, &tenant, &path, parsed, request)
                .await
        }
        Route::Plain(path) => {
            let tenant = match &identity {
                Identity::User(user) => user.service_account_tenant().map(str::to_string),
                Identity::Aggregator => None,
            };
            let Some(tenant) = tenant else {
                return respond::status(status::path_not_found(&format!(
                    "{path}; paths without /tenants/{{tenant}} serve only a tenant's service accounts"
                )));
            };
            let route = for_tenant(&tenant, path);
            Box::pin(authorized(state, request, identity, route)).await
        }
        _ => respond::status(status::path_not_found(&request.path)),
    }
}

/// The user, if they may do what `request` asks of `target` of `plural`
/// (a SubjectAccessReview); else the refusal.
async fn authorize_stored(
    state: &State,
    request: &ApiRequest,
    identity: Identity,
    target: &Target,
    plural: &str,
) -> Result<UserInfo, Response> {
    let Identity::User(user) = identity else {
        return Err(respond::status(status::unauthorized(
            "Unauthorized: the request carries no user",
        )));
    };
    let verb = verb::of(
        &request.method,
        matches!(target, Target::Object { .. }),
        request.is_watch(),
    );
    let (name, subresource) = match target {
        Target::Collection => ("", ""),
        Target::Object { name, status } => (name.as_str(), if *status { "status" } else { "" }),
    };
    let attributes = Attributes::resource(verb, GROUP, plural, subresource, name);
    state
        .authz
        .authorize(&user, &attributes)
        .await
        .map_err(respond::status)?;
    Ok(user)
}

/// Discovery, OpenAPI and metrics of arktos-apiserver itself: for users
/// allowed to read the path, and the aggregator (not metrics).
async fn own_document(
    state: &State,
    request: &ApiRequest,
    identity: &Identity,
    route: &Route,
) -> Response {
    if let Identity::User(user) = identity {
        let attributes = Attributes::NonResource {
            verb: "get".into(),
            path: request.path.clone(),
        };
        if let Err(denied) = state.authz.authorize(user, &attributes).await {
            return respond::status(denied);
        }
    } else if *route == Route::Metrics {
        return respond::status(status::forbidden_path(
            "system:kube-aggregator",
            "get",
            "/metrics",
        ));
    }
    match route {
        Route::Discovery => discovery_document(request),
        Route::OpenApi => openapi_document(state, request).await,
        _ => respond::raw(
            StatusCode::OK,
            state.metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
    }
}

fn user_name(identity: &Identity) -> String {
    match identity {
        Identity::User(UserInfo { name, .. }) => name.clone(),
        Identity::Aggregator => "system:kube-aggregator".into(),
    }
}

fn discovery_document(request: &ApiRequest) -> Response {
    let path = request.path.trim_end_matches('/');
    if path.is_empty() || path == "/apis" {
        if discovery::wants_aggregated(&request.accept()) {
            return respond::json_with_type(
                StatusCode::OK,
                &discovery::aggregated_group_list(),
                discovery::AGGREGATED,
            );
        }
        return respond::json(StatusCode::OK, &discovery::api_group_list());
    }
    if path == format!("/apis/{GROUP}") {
        return respond::json(StatusCode::OK, &discovery::api_group());
    }
    respond::json(StatusCode::OK, &discovery::api_resource_list())
}

async fn openapi_document(state: &State, request: &ApiRequest) -> Response {
    let documents = match state.openapi.documents().await {
        Ok(documents) => documents,
        Err(unavailable) => return respond::status(unavailable),
    };
    match request.path.trim_end_matches('/') {
        "/openapi/v2" => respond::json(StatusCode::OK, documents.v2.as_ref()),
        "/openapi/v3" => respond::json(StatusCode::OK, &openapi::v3_index(&documents.v3_hash)),
        _ => respond::json(StatusCode::OK, documents.v3.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(path: &str) -> (Route, bool) {
        let mut watch = false;
        (route(path, &mut watch), watch)
    }

    #[test]
    fn paths_map_to_routes() {
        assert_eq!(
            target("/apis/tenancy.arktos.io/v1alpha1/tenants").0,
            Route::Tenants(Target::Collection)
        );
        assert_eq!(
            target("/apis/tenancy.arktos.io/v1alpha1/tenants/acme/status").0,
            Route::Tenants(Target::Object {
                name: "acme".into(),
                status: true
            })
        );
        assert_eq!(
            target("/apis/tenancy.arktos.io/v1alpha1/watch/tenants/acme"),
            (
                Route::Tenants(Target::Object {
                    name: "acme".into(),
                    status: false
                }),
                true
            )
        );
        assert_eq!(
            target("/apis/tenancy.arktos.io/v1alpha1").0,
            Route::Discovery
        );
        assert_eq!(
            target("/openapi/v3/apis/tenancy.arktos.io/v1alpha1").0,
            Route::OpenApi
        );
    }

    #[test]
    fn suspicious_paths_fail_closed() {
        for path in [
            "/apis/tenancy.arktos.io/v1alpha1/tenants/../../api/v1/nodes",
            "/apis/tenancy.arktos.io/v1alpha1/tenants/acme%2F..%2Fglobex",
            "/apis/tenancy.arktos.io/v1alpha1//tenants",
            "/apis/tenancy.arktos.io/v1alpha1/tenants/ACME",
            "/apis/tenancy.arktos.io/v1alpha1/tenants/a?b",
            "/apis/tenancy.arktos.io/v1alpha1/tenants/acme/finalize",
            "/api/v1/nodes",
        ] {
            assert_eq!(target(path).0, Route::NotFound, "{path}");
        }
    }

    #[test]
    fn the_gateway_serves_tenant_paths_and_plain_paths_apart() {
        assert!(matches!(
            gateway_route("/tenants/acme/api/v1/namespaces/web/pods"),
            Route::ForTenant { tenant, path, .. } if tenant == "acme" && path == "/api/v1/namespaces/web/pods"
        ));
        for path in [
            "/api/v1/namespaces/web/pods",
            "/apis/apps/v1/",
            "/version",
            "/openapi/v2",
        ] {
            assert_eq!(
                gateway_route(path),
                Route::Plain(path.trim_end_matches('/').into()),
                "{path}"
            );
        }
        for path in [
            "/api/v1/../../tenants",
            "/apis//apps",
            "/api/v1%2Fnodes",
            "/other",
        ] {
            assert_eq!(gateway_route(path), Route::NotFound, "{path}");
        }
    }
}
