//! Applies the tenant controller may skip. A tenant is reconciled on every
//! change in it (each namespace, pod or ConfigMap created re-settles its
//! quota), and each server-side apply costs kube-apiserver a write path and
//! three webhook calls, even when it changes nothing. An object this
//! instance applied, with the same desired content, and unchanged since (the
//! metadata watch still shows the resourceVersion the apply returned) needs
//! no second apply. Anything else, someone's edit or deletion included, is
//! applied again: drift is still repaired at once.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Mutex;

use futures::Stream;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// An object, by namespace (none when cluster-scoped) and name.
type Key = (Option<String>, String);
/// The hash of what was applied, and the resourceVersion the apply returned.
type Applied = (u64, String);

/// One kind of object the controller writes.
pub struct Written<K: Resource<DynamicType = ()> + Clone + 'static> {
    /// What the metadata watch last saw.
    seen: Store<PartialObjectMeta<K>>,
    applied: Mutex<HashMap<Key, Applied>>,
}

impl<K> Written<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// The tracker, and the metadata watch (of every `K`, narrowed by
    /// `config`) that feeds it; the controller runs the watch as a trigger.
    pub fn watch(
        client: kube::Client,
        config: watcher::Config,
    ) -> (
        Self,
        impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
    ) {
        let (seen, writer) = reflector::store();
        let api: Api<PartialObjectMeta<K>> = Api::all(client);
        let trigger =
            reflector::reflector(writer, watcher(api, config).default_backoff()).touched_objects();
        let written = Self {
            seen,
            applied: Mutex::default(),
        };
        (written, trigger)
    }

    /// Whether `desired` was applied as it is and nobody changed the object since.
    pub fn unchanged(&self, namespace: Option<&str>, name: &str, desired: &impl Serialize) -> bool {
        let key = (namespace.map(str::to_string), name.to_string());
        let Some((hash, version)) = self.applied.lock().expect("applied").get(&key).cloned() else {
            return false;
        };
        let mut reference = ObjectRef::<PartialObjectMeta<K>>::new(name);
        if let Some(ns) = namespace {
            reference = reference.within(ns);
        }
        hash == hash_of(desired)
            && self
                .seen
                .get(&reference)
                .is_some_and(|meta| meta.resource_version().as_deref() == Some(version.as_str()))
    }

    /// Records an apply of `desired` that left the object at `version`.
    pub fn record(
        &self,
        namespace: Option<&str>,
        name: &str,
        desired: &impl Serialize,
        version: Option<String>,
    ) {
        let key = (namespace.map(str::to_string), name.to_string());
        let mut applied = self.applied.lock().expect("applied");
        match version {
            Some(version) => applied.insert(key, (hash_of(desired), version)),
            None => applied.remove(&key),
        };
    }

    /// Forgets an object (deleted by the controller).
    pub fn forget(&self, namespace: Option<&str>, name: &str) {
        let key = (namespace.map(str::to_string), name.to_string());
        self.applied.lock().expect("applied").remove(&key);
    }
}

fn hash_of(desired: &impl Serialize) -> u64 {
    arktos_crds::sharding::fnv1a64(&serde_json::to_vec(desired).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;

    fn mk_meta(namespace: &str, name: &str, version: &str) -> PartialObjectMeta<RoleBinding> {
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
        }))
        .expect("metadata")
    }

    fn mk_written() -> (
        Written<RoleBinding>,
        reflector::store::Writer<PartialObjectMeta<RoleBinding>>,
    ) {
        let (seen, writer) = reflector::store();
        let written = Written {
            seen,
            applied: Mutex::default(),
        };
        (written, writer)
    }

    #[test]
    fn an_apply_is_skipped_only_while_nothing_changed() {
        let (written, mut writer) = mk_written();
        let desired = json!({"subjects": [{"kind": "User", "name": "alice"}]});
        assert!(
            !written.unchanged(Some("acme--web"), "owners", &desired),
            "never applied"
        );
        written.record(Some("acme--web"), "owners", &desired, Some("7".into()));
        assert!(
            !written.unchanged(Some("acme--web"), "owners", &desired),
            "not seen yet"
        );
        writer.apply_watcher_event(&Event::Apply(mk_meta("acme--web", "owners", "7")));
        assert!(written.unchanged(Some("acme--web"), "owners", &desired));
        let other = json!({"subjects": [{"kind": "User", "name": "bob"}]});
        assert!(
            !written.unchanged(Some("acme--web"), "owners", &other),
            "owners changed"
        );
        // Someone edited it: its version moved on.
        writer.apply_watcher_event(&Event::Apply(mk_meta("acme--web", "owners", "9")));
        assert!(!written.unchanged(Some("acme--web"), "owners", &desired));
        // Deleted.
        written.record(Some("acme--web"), "owners", &desired, Some("9".into()));
        writer.apply_watcher_event(&Event::Delete(mk_meta("acme--web", "owners", "9")));
        assert!(!written.unchanged(Some("acme--web"), "owners", &desired));
        written.forget(Some("acme--web"), "owners");
        assert!(!written.unchanged(Some("acme--web"), "owners", &desired));
    }
}
