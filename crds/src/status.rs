//! The one place Kubernetes `Status` errors are built. Every error a client
//! of ours sees comes from here, with the code, reason and message
//! Kubernetes itself would use, so kubectl and client libraries react to it
//! as they do to kube-apiserver's own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

/// What an error is about: `tenants.tenancy.arktos.io "acme"`.
#[derive(Clone, Debug, Default)]
pub struct Subject<'a> {
    /// Empty for the core group.
    pub group: &'a str,
    /// Plural resource name, e.g. `tenants`.
    pub resource: &'a str,
    /// Kind, e.g. `Tenant` (used in 422 messages, as Kubernetes does).
    pub kind: &'a str,
    /// Object name; empty for collections.
    pub name: &'a str,
}

impl Subject<'_> {
    fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.to_string()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn details(&self, causes: Vec<StatusCause>) -> StatusDetails {
        StatusDetails {
            group: (!self.group.is_empty()).then(|| self.group.to_string()),
            kind: Some(self.resource.to_string()),
            name: (!self.name.is_empty()).then(|| self.name.to_string()),
            causes: (!causes.is_empty()).then_some(causes),
            ..Default::default()
        }
    }
}

/// Why a field is wrong, with the `StatusCause.reason` Kubernetes uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldErrorType {
    Invalid,
    Required,
    TooLong,
    NotSupported,
    Forbidden,
    Duplicate,
    Unknown,
    NotFound,
}

impl FieldErrorType {
    fn reason(self) -> &'static str {
        match self {
            Self::Invalid => "FieldValueInvalid",
            Self::Required => "FieldValueRequired",
            Self::TooLong => "FieldValueTooLong",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Unknown => "FieldValueUnknown",
            Self::NotFound => "FieldValueNotFound",
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            Self::Invalid => "Invalid value",
            Self::Required => "Required value",
            Self::TooLong => "Too long",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::Duplicate => "Duplicate value",
            Self::Unknown => "Unknown field",
            Self::NotFound => "Not found",
        }
    }
}

/// One invalid field: its path, what is wrong, and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub kind: FieldErrorType,
    /// The offending value, when showing it helps.
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, kind: FieldErrorType, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind,
            value: None,
            detail: detail.into(),
        }
    }

    pub fn with_value(mut self, value: impl Into<String>) -> Self {
        self.value = Some(value.into());
        self
    }

    /// `spec.partition: Invalid value: "b": partition is immutable`
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.cause_message())
    }

    /// The message without the field, as Kubernetes puts it in a cause
    /// (clients print the field beside it).
    pub fn cause_message(&self) -> String {
        let mut message = self.kind.phrase().to_string();
        if let Some(value) = &self.value {
            message.push_str(&format!(": {value:?}"));
        }
        if !self.detail.is_empty() {
            message.push_str(": ");
            message.push_str(&self.detail);
        }
        message
    }
}

fn failure(code: u16, reason: &str, message: String, details: Option<StatusDetails>) -> Status {
    Status {
        code: Some(i32::from(code)),
        reason: Some(reason.to_string()),
        message: Some(message),
        details,
        status: Some("Failure".to_string()),
        ..Default::default()
    }
}

/// 422: the object breaks validation rules; every cause names its field.
pub fn invalid(subject: &Subject<'_>, errors: &[FieldError]) -> Status {
    let messages: Vec<String> = errors.iter().map(FieldError::message).collect();
    let message = match messages.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    let causes = errors
        .iter()
        .map(|e| StatusCause {
            field: Some(e.field.clone()),
            reason: Some(e.kind.reason().to_string()),
            message: Some(e.cause_message()),
        })
        .collect();
    let mut details = subject.details(causes);
    details.kind = Some(subject.kind.to_string());
    failure(
        422,
        "Invalid",
        format!(
            "{} {:?} is invalid: {message}",
            subject.qualified_kind(),
            subject.name
        ),
        Some(details),
    )
}

/// 404 for an object that does not exist (or must not be seen to exist).
pub fn not_found(subject: &Subject<'_>) -> Status {
    failure(
        404,
        "NotFound",
        format!(
            "{} {:?} not found",
            subject.qualified_resource(),
            subject.name
        ),
        Some(subject.details(Vec::new())),
    )
}

/// 404 for a path that serves nothing.
pub fn path_not_found(path: &str) -> Status {
    failure(
        404,
        "NotFound",
        format!("the server could not find the requested resource ({path})"),
        None,
    )
}

pub fn already_exists(subject: &Subject<'_>) -> Status {
    failure(
        409,
        "AlreadyExists",
        format!(
            "{} {:?} already exists",
            subject.qualified_resource(),
            subject.name
        ),
        Some(subject.details(Vec::new())),
    )
}

/// 409 when a write lost a race (stale resourceVersion).
pub fn conflict(subject: &Subject<'_>, why: &str) -> Status {
    failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} {:?}: {why}",
            subject.qualified_resource(),
            subject.name
        ),
        Some(subject.details(Vec::new())),
    )
}

/// 403 with the reason, phrased as kube-apiserver phrases RBAC denials.
pub fn forbidden(subject: &Subject<'_>, why: &str) -> Status {
    let what = if subject.name.is_empty() {
        subject.qualified_resource()
    } else {
        format!("{} {:?}", subject.qualified_resource(), subject.name)
    };
    failure(
        403,
        "Forbidden",
        format!("{what} is forbidden: {why}"),
        Some(subject.details(Vec::new())),
    )
}

/// One quota key a request would push past its tenant-wide limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaExcess {
    pub key: String,
    pub requested: String,
    pub used: String,
    pub limited: String,
}

/// 403 when a create would exceed the tenant-wide quota, worded as
/// kube-apiserver words ResourceQuota denials, naming the tenant.
pub fn quota_exceeded(subject: &Subject<'_>, tenant: &str, excess: &[QuotaExcess]) -> Status {
    let list = |field: fn(&QuotaExcess) -> &str| {
        excess
            .iter()
            .map(|e| format!("{}={}", e.key, field(e)))
            .collect::<Vec<_>>()
            .join(",")
    };
    forbidden(
        subject,
        &format!(
            "exceeded quota: tenant {tenant}, requested: {}, used: {}, limited: {}",
            list(|e| &e.requested),
            list(|e| &e.used),
            list(|e| &e.limited)
        ),
    )
}

/// 403 for a non-resource path.
pub fn forbidden_path(user: &str, verb: &str, path: &str) -> Status {
    failure(
        403,
        "Forbidden",
        format!("forbidden: User {user:?} cannot {verb} path {path:?}"),
        None,
    )
}

pub fn unauthorized(why: &str) -> Status {
    failure(401, "Unauthorized", why.to_string(), None)
}

pub fn bad_request(why: &str) -> Status {
    failure(400, "BadRequest", why.to_string(), None)
}

pub fn method_not_allowed(method: &str, what: &str) -> Status {
    failure(
        405,
        "MethodNotAllowed",
        format!("{method} is not supported on {what}"),
        None,
    )
}

pub fn not_acceptable(why: &str) -> Status {
    failure(406, "NotAcceptable", why.to_string(), None)
}

pub fn unsupported_media_type(content_type: &str) -> Status {
    failure(
        415,
        "UnsupportedMediaType",
        format!("the body of the request was in an unknown format: {content_type}"),
        None,
    )
}

/// 410 when a watch or list asks for a resourceVersion no longer kept.
pub fn expired(why: &str) -> Status {
    failure(410, "Expired", why.to_string(), None)
}

pub fn request_entity_too_large(limit: usize) -> Status {
    failure(
        413,
        "RequestEntityTooLarge",
        format!("the request body is larger than {limit} bytes"),
        None,
    )
}

pub fn internal(why: &str) -> Status {
    failure(
        500,
        "InternalError",
        format!("Internal error occurred: {why}"),
        None,
    )
}

pub fn service_unavailable(why: &str) -> Status {
    failure(503, "ServiceUnavailable", why.to_string(), None)
}

/// A 503 naming the partition a tenant's request could not be served on.
pub fn partition_unavailable(partition: &str, why: &str) -> Status {
    service_unavailable(&format!("partition {partition:?}: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acme() -> Subject<'static> {
        Subject {
            group: "tenancy.arktos.io",
            resource: "tenants",
            kind: "Tenant",
            name: "acme",
        }
    }

    #[test]
    fn invalid_names_every_field_like_kubernetes() {
        let status = invalid(
            &acme(),
            &[FieldError::new(
                "spec.partition",
                FieldErrorType::Invalid,
                "partition is immutable",
            )
            .with_value("b")],
        );
        assert_eq!(status.code, Some(422));
        assert_eq!(status.reason.as_deref(), Some("Invalid"));
        assert_eq!(
            status.message.as_deref(),
            Some(
                "Tenant.tenancy.arktos.io \"acme\" is invalid: spec.partition: Invalid value: \"b\": partition is immutable"
            )
        );
        let details = status.details.unwrap();
        assert_eq!(details.kind.as_deref(), Some("Tenant"));
        let cause = &details.causes.unwrap()[0];
        assert_eq!(cause.field.as_deref(), Some("spec.partition"));
        assert_eq!(cause.reason.as_deref(), Some("FieldValueInvalid"));
    }

    #[test]
    fn not_found_and_conflict_read_as_kube_apiserver_writes_them() {
        assert_eq!(
            not_found(&acme()).message.as_deref(),
            Some("tenants.tenancy.arktos.io \"acme\" not found")
        );
        let status = conflict(
            &acme(),
            "the object has been modified; please apply your changes to the latest version and try again",
        );
        assert_eq!(status.code, Some(409));
        assert_eq!(status.reason.as_deref(), Some("Conflict"));
        let core = Subject {
            resource: "pods",
            kind: "Pod",
            name: "web",
            ..Default::default()
        };
        assert_eq!(
            not_found(&core).message.as_deref(),
            Some("pods \"web\" not found")
        );
    }

    #[test]
    fn serialises_with_kind_and_api_version() {
        let json = serde_json::to_value(unauthorized("no credentials")).unwrap();
        assert_eq!(json["kind"], "Status");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["code"], 401);
    }
}
