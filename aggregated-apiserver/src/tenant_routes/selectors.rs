//! The namespace-name label in a tenant's terms. kube-apiserver labels
//! every namespace `kubernetes.io/metadata.name=<its name>`, the storage
//! name here; a tenant selects on its own (`web`, not `acme--web`). So the
//! label's values are mapped both ways wherever a selector can name them:
//! label selectors in namespace queries, and `namespaceSelector`s in bodies
//! (NetworkPolicy peers, pod affinity terms), which the cluster then
//! enforces on storage names.

use arktos_crds::naming::NAMESPACE_NAME_LABEL;
use serde_json::{Map, Value};

use super::mapping::View;

/// Which way a value is mapped.
#[derive(Clone, Copy)]
pub enum Toward {
    Storage,
    Tenant,
}

impl View {
    fn name_label_value(&self, value: &str, toward: Toward) -> String {
        match toward {
            Toward::Storage => format!("{}{value}", self.storage_prefix()),
            Toward::Tenant => value
                .strip_prefix(self.storage_prefix())
                .unwrap_or(value)
                .to_string(),
        }
    }

    /// A label selector over namespaces with its name-label values mapped.
    pub fn namespace_label_selector(&self, selector: &str, toward: Toward) -> String {
        split_terms(selector)
            .into_iter()
            .map(|term| self.selector_term(term, toward))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn selector_term(&self, term: &str, toward: Toward) -> String {
        let trimmed = term.trim();
        let Some(rest) = trimmed.strip_prefix(NAMESPACE_NAME_LABEL) else {
            return term.to_string();
        };
        let rest = rest.trim_start();
        for op in ["==", "!=", "="] {
            if let Some(value) = rest.strip_prefix(op) {
                let value = self.name_label_value(value.trim(), toward);
                return format!("{NAMESPACE_NAME_LABEL}{op}{value}");
            }
        }
        for op in ["notin", "in"] {
            if let Some(values) = rest
                .strip_prefix(op)
                .map(str::trim)
                .and_then(|v| v.strip_prefix('('))
                .and_then(|v| v.strip_suffix(')'))
            {
                let values: Vec<String> = values
                    .split(',')
                    .map(|v| self.name_label_value(v.trim(), toward))
                    .collect();
                return format!("{NAMESPACE_NAME_LABEL} {op} ({})", values.join(","));
            }
        }
        term.to_string()
    }

    /// Maps the name label in every `namespaceSelector` of an object.
    pub fn namespace_selectors(&self, value: &mut Value, toward: Toward) {
        match value {
            Value::Object(object) => self.selectors_in_fields(object, toward, false),
            Value::Array(items) => {
                for item in items {
                    self.namespace_selectors(item, toward);
                }
            }
            _ => {}
        }
    }

    /// As `namespace_selectors`, leaving a list's `items` to the caller
    /// (which maps each item on its own).
    pub fn namespace_selectors_outside_items(
        &self,
        object: &mut Map<String, Value>,
        toward: Toward,
    ) {
        self.selectors_in_fields(object, toward, true);
    }

    fn selectors_in_fields(
        &self,
        object: &mut Map<String, Value>,
        toward: Toward,
        skip_items: bool,
    ) {
        for (key, inner) in object.iter_mut() {
            match key.as_str() {
                "items" if skip_items => {}
                "namespaceSelector" => self.label_selector_object(inner, toward),
                _ => self.namespace_selectors(inner, toward),
            }
        }
    }

    /// A `LabelSelector` object: `matchLabels` and `matchExpressions`.
    fn label_selector_object(&self, selector: &mut Value, toward: Toward) {
        if let Some(Value::String(value)) = selector
            .get_mut("matchLabels")
            .and_then(|labels| labels.get_mut(NAMESPACE_NAME_LABEL))
        {
            *value = self.name_label_value(value, toward);
        }
        let expressions = selector
            .get_mut("matchExpressions")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter(|e| e["key"] == NAMESPACE_NAME_LABEL);
        for expression in expressions {
            for value in expression
                .get_mut("values")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Value::String(text) = value {
                    *text = self.name_label_value(text, toward);
                }
            }
        }
    }
}

/// A selector's terms: split at commas outside parentheses.
fn split_terms(selector: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    terms.into_iter().filter(|t| !t.trim().is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use arktos_crds::naming::TenantName;
    use serde_json::json;

    use super::*;

    fn acme() -> View {
        View::new(TenantName::new("acme").unwrap())
    }

    #[test]
    fn namespace_queries_select_by_the_tenants_names() {
        let cases = [
            (
                "kubernetes.io/metadata.name=web",
                "kubernetes.io/metadata.name=acme--web",
            ),
            (
                "kubernetes.io/metadata.name!=web",
                "kubernetes.io/metadata.name!=acme--web",
            ),
            (
                "team=a,kubernetes.io/metadata.name in (web, db),x notin (y,z)",
                "team=a,kubernetes.io/metadata.name in (acme--web,acme--db),x notin (y,z)",
            ),
            ("kubernetes.io/metadata.name", "kubernetes.io/metadata.name"),
            ("app=web", "app=web"),
        ];
        for (tenant, storage) in cases {
            assert_eq!(
                acme().namespace_label_selector(tenant, Toward::Storage),
                storage
            );
        }
    }

    #[test]
    fn network_policy_namespace_selectors_are_enforced_on_storage_names() {
        let policy = json!({"kind": "NetworkPolicy", "spec": {"ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "web"}}},
            {"namespaceSelector": {"matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["db"]},
                {"key": "team", "operator": "In", "values": ["db"]}]}},
        ]}]}});
        let mut stored = policy.clone();
        acme().namespace_selectors(&mut stored, Toward::Storage);
        let from = &stored["spec"]["ingress"][0]["from"];
        assert_eq!(
            from[0]["namespaceSelector"]["matchLabels"][NAMESPACE_NAME_LABEL],
            "acme--web"
        );
        assert_eq!(
            from[1]["namespaceSelector"]["matchExpressions"][0]["values"][0],
            "acme--db"
        );
        assert_eq!(
            from[1]["namespaceSelector"]["matchExpressions"][1]["values"][0],
            "db"
        );
        acme().namespace_selectors(&mut stored, Toward::Tenant);
        assert_eq!(stored, policy);
    }
}
