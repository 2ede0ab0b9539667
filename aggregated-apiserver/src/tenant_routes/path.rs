//! A path as a tenant writes it (`/api/v1/namespaces/web/pods/x/log`),
//! parsed into what it asks for.

/// What a tenant path names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantPath {
    /// `/api`, `/apis`, `/api/v1`, `/apis/{g}`, `/apis/{g}/{v}`.
    Discovery {
        group: Option<String>,
        version: Option<String>,
        legacy_root: bool,
    },
    Version,
    /// `/openapi/...`, with the rest of the path.
    OpenApi(String),
    /// A resource request.
    Resource(ResourcePath),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub namespace: Option<String>,
    pub resource: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// Legacy `/watch/` prefix.
    pub watch: bool,
}

impl ResourcePath {
    pub fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    pub fn is_namespaces(&self) -> bool {
        self.group.is_empty() && self.resource == "namespaces"
    }

    /// CustomResourceDefinitions (a tenant's own; see `crds`).
    pub fn is_crds(&self) -> bool {
        self.group == "apiextensions.k8s.io"
            && self.resource == "customresourcedefinitions"
            && self.namespace.is_none()
    }

    /// "pods" or "pods/log".
    pub fn full_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }
}

fn segment_ok(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && !segment.contains('%')
        && segment.len() <= 253
}

/// Parses a tenant path; `None` for anything unknown or suspicious (fails
/// closed as a 404).
pub fn parse(path: &str) -> Option<TenantPath> {
    let trimmed = path.trim_end_matches('/');
    let segments: Vec<&str> = trimmed.split('/').skip(1).collect();
    if trimmed.is_empty() || segments.iter().any(|s| !segment_ok(s)) {
        return None;
    }
    if let Some(other) = not_a_resource(&segments, trimmed) {
        return Some(other);
    }
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => (String::new(), version.to_string(), rest),
        ["apis", group, version, rest @ ..] => (group.to_string(), version.to_string(), rest),
        _ => return None,
    };
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        rest => (false, rest),
    };
    let (namespace, rest) = match rest {
        // The namespace's own subresources, not a resource in it.
        ["namespaces", _, "status" | "finalize"] => (None, rest.to_vec()),
        ["namespaces", ns, resource, rest @ ..] => (Some(ns.to_string()), {
            let mut v = vec![*resource];
            v.extend_from_slice(rest);
            v
        }),
        other => (None, other.to_vec()),
    };
    let (resource, name, subresource) = match (namespace.is_some(), rest.as_slice()) {
        // `/api/v1/namespaces/web` and `/api/v1/namespaces/web/status`
        // name the namespace itself.
        (false, ["namespaces", ns]) => ("namespaces".to_string(), Some(ns.to_string()), None),
        (false, ["namespaces", ns, sub]) if matches!(*sub, "status" | "finalize") => (
            "namespaces".to_string(),
            Some(ns.to_string()),
            Some(sub.to_string()),
        ),
        (_, [resource]) => (resource.to_string(), None, None),
        (_, [resource, name]) => (resource.to_string(), Some(name.to_string()), None),
        (_, [resource, name, sub]) => (
            resource.to_string(),
            Some(name.to_string()),
            Some(sub.to_string()),
        ),
        _ => return None,
    };
    Some(TenantPath::Resource(ResourcePath {
        group,
        version,
        namespace,
        resource,
        name,
        subresource,
        watch,
    }))
}

/// Discovery, version and OpenAPI paths.
fn not_a_resource(segments: &[&str], path: &str) -> Option<TenantPath> {
    let discovery = |group: Option<&str>, version: Option<&str>, legacy_root: bool| {
        Some(TenantPath::Discovery {
            group: group.map(str::to_string),
            version: version.map(str::to_string),
            legacy_root,
        })
    };
    match segments {
        ["version"] => Some(TenantPath::Version),
        ["openapi", ..] => Some(TenantPath::OpenApi(path.to_string())),
        ["api"] => discovery(None, None, true),
        ["apis"] => discovery(None, None, false),
        ["api", "v1"] => discovery(Some(""), Some("v1"), false),
        ["apis", group] => discovery(Some(group), None, false),
        ["apis", group, version] => discovery(Some(group), Some(version), false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> ResourcePath {
        match parse(path) {
            Some(TenantPath::Resource(r)) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn parses_namespaced_and_cluster_paths() {
        let pods = resource("/api/v1/namespaces/web/pods/x/log");
        assert_eq!(
            (pods.namespace.as_deref(), pods.resource.as_str()),
            (Some("web"), "pods")
        );
        assert_eq!(
            (pods.name.as_deref(), pods.subresource.as_deref()),
            (Some("x"), Some("log"))
        );
        let deployments = resource("/apis/apps/v1/namespaces/web/deployments");
        assert_eq!(deployments.group, "apps");
        assert_eq!(deployments.prefix(), "/apis/apps/v1");
        let all = resource("/api/v1/pods");
        assert_eq!((all.namespace, all.name), (None, None));
        let ns = resource("/api/v1/namespaces/web");
        assert!(ns.is_namespaces() && ns.name.as_deref() == Some("web"));
        let status = resource("/api/v1/namespaces/web/status");
        assert!(status.is_namespaces() && status.subresource.as_deref() == Some("status"));
        assert_eq!(status.namespace, None);
        assert!(resource("/api/v1/watch/namespaces/web/pods").watch);
        assert_eq!(
            parse("/apis/apps"),
            Some(TenantPath::Discovery {
                group: Some("apps".into()),
                version: None,
                legacy_root: false
            })
        );
    }

    #[test]
    fn suspicious_paths_are_refused() {
        for path in [
            "/api/v1/namespaces/../pods",
            "/api/v1/namespaces/web%2F..%2Fx/pods",
            "/api/v1//pods",
            "/healthz",
            "/api/v1/namespaces/a/pods/b/c/d",
            "",
        ] {
            assert_eq!(parse(path), None, "{path}");
        }
    }
}
