//! The Kubernetes verb of a request, named as kube-apiserver's request info
//! names it: the one mapping used for authorization and for metrics.

use http::Method;

/// `named`: the path names one object; `watch`: `?watch=true` or the
/// legacy `/watch/` prefix.
pub fn of(method: &Method, named: bool, watch: bool) -> &'static str {
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if named => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_kubernetes() {
        for (method, named, watch, verb) in [
            (Method::GET, false, false, "list"),
            (Method::GET, false, true, "watch"),
            (Method::GET, true, true, "watch"),
            (Method::GET, true, false, "get"),
            (Method::HEAD, true, false, "get"),
            (Method::POST, false, false, "create"),
            (Method::PUT, true, false, "update"),
            (Method::PATCH, true, false, "patch"),
            (Method::DELETE, true, false, "delete"),
            (Method::DELETE, false, false, "deletecollection"),
            (Method::OPTIONS, false, false, "unknown"),
        ] {
            assert_eq!(of(&method, named, watch), verb, "{method} {named} {watch}");
        }
    }
}
