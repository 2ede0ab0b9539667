//! Applies the tenant controller may skip. A tenant is reconciled on every
//! change in it (each namespace, pod or ConfigMap created re-settles its
//! quota), and each server-side apply costs kube-apiserver a write path and
//! three webhook calls, even when it changes nothing. So every applied
//! object carries the hash of what was applied (annotation
//! `tenancy.arktos.io/applied`), and an object whose hash matches what is
//! desired now, and whose last writer (by its managed fields) is the
//! controller itself, needs no second apply. Anything else, someone's edit
//! or deletion included, is applied again: drift is still repaired at once.
//! The judgement needs only metadata, held by a metadata watch, and no state
//! of its own: an instance taking over a share skips what is in place.

use std::fmt::Debug;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// On every object the controller applies: the hash of what it applied.
pub const APPLIED_ANNOTATION: &str = "tenancy.arktos.io/applied";

/// One kind of object the controller writes, as the metadata watch saw it.
pub struct Written<K: Resource<DynamicType = ()> + Clone + 'static> {
    seen: Store<PartialObjectMeta<K>>,
}

impl<K> Written<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// The tracker, kept current by a metadata watch (of every `K`,
    /// narrowed by `config`), and the objects that watch saw change or go:
    /// the caller polls the stream, which fills the tracker as it goes.
    pub fn watch(
        client: kube::Client,
        config: watcher::Config,
    ) -> (Self, BoxStream<'static, PartialObjectMeta<K>>) {
        let (seen, writer) = reflector::store();
        let api: Api<PartialObjectMeta<K>> = Api::all(client);
        let touched = reflector::reflector(writer, watcher(api, config).default_backoff())
            .touched_objects()
            .filter_map(|object| {
                futures::future::ready(match object {
                    Ok(object) => Some(object),
                    Err(err) => {
                        tracing::warn!(kind = %K::kind(&()), error = %err, "watching what the controller wrote");
                        None
                    }
                })
            })
            .boxed();
        (Self { seen }, touched)
    }

    /// Resolves once the watch has listed.
    pub async fn ready(&self) {
        let _ = self.seen.wait_until_ready().await;
    }

    /// A tracker that has seen nothing (every apply goes out): for tests.
    #[cfg(test)]
    pub fn unwatched() -> Self {
        let (seen, _writer) = reflector::store();
        Self { seen }
    }

    /// Whether the object `desired` names holds what `stamp` made of it,
    /// written last by `manager`.
    pub fn in_place(&self, desired: &K, manager: &str) -> bool {
        let mut reference = ObjectRef::<PartialObjectMeta<K>>::new(&desired.name_any());
        if let Some(ns) = desired.namespace() {
            reference = reference.within(&ns);
        }
        let Some(seen) = self.seen.get(&reference) else {
            return false;
        };
        let hash = desired.annotations().get(APPLIED_ANNOTATION);
        hash.is_some()
            && seen.annotations().get(APPLIED_ANNOTATION) == hash
            && last_writer(seen.meta().managed_fields.as_deref().unwrap_or_default())
                == Some(manager)
    }
}

/// Stamps `desired` with the hash of its content (before the stamp).
pub fn stamp<K: Resource + Serialize>(desired: &mut K) {
    let hash = arktos_crds::sharding::fnv1a64(&serde_json::to_vec(desired).unwrap_or_default());
    desired
        .annotations_mut()
        .insert(APPLIED_ANNOTATION.into(), format!("{hash:016x}"));
}

/// The manager of the most recent write; `None` when unknown or tied
/// between managers.
fn last_writer(fields: &[ManagedFieldsEntry]) -> Option<&str> {
    let latest = fields.iter().filter_map(|f| f.time.as_ref()).max()?;
    let mut writers = fields
        .iter()
        .filter(|f| f.time.as_ref() == Some(latest))
        .filter_map(|f| f.manager.as_deref());
    let first = writers.next()?;
    writers.all(|w| w == first).then_some(first)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    use super::*;

    fn mk_binding(user: &str) -> RoleBinding {
        let mut binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "owners", "namespace": "acme--web"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": user}],
        }))
        .expect("a binding");
        stamp(&mut binding);
        binding
    }

    fn mk_seen(applied: &str, writers: &[(&str, &str)]) -> PartialObjectMeta<RoleBinding> {
        let fields: Vec<_> = writers
            .iter()
            .map(|(manager, time)| json!({"manager": manager, "operation": "Apply", "time": time}))
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "owners", "namespace": "acme--web", "resourceVersion": "7",
                "annotations": {APPLIED_ANNOTATION: applied}, "managedFields": fields},
        }))
        .expect("metadata")
    }

    fn mk_written() -> (
        Written<RoleBinding>,
        reflector::store::Writer<PartialObjectMeta<RoleBinding>>,
    ) {
        let (seen, writer) = reflector::store();
        (Written { seen }, writer)
    }

    #[test]
    fn stamps_follow_the_content() {
        let (alice, bob) = (mk_binding("alice"), mk_binding("bob"));
        assert_ne!(
            alice.annotations()[APPLIED_ANNOTATION],
            bob.annotations()[APPLIED_ANNOTATION]
        );
        assert_eq!(
            alice.annotations()[APPLIED_ANNOTATION],
            mk_binding("alice").annotations()[APPLIED_ANNOTATION]
        );
    }

    #[test]
    fn an_apply_is_skipped_only_while_what_we_wrote_stands() {
        let (written, mut writer) = mk_written();
        let desired = mk_binding("alice");
        let hash = desired.annotations()[APPLIED_ANNOTATION].clone();
        assert!(
            !written.in_place(&desired, "arktos-operators"),
            "never seen"
        );
        let ours = [("arktos-operators", "2026-12-07T06:00:00Z")];
        writer.apply_watcher_event(&Event::Apply(mk_seen(&hash, &ours)));
        assert!(written.in_place(&desired, "arktos-operators"));
        assert!(
            !written.in_place(&mk_binding("bob"), "arktos-operators"),
            "the owners changed"
        );
        // Someone wrote after us (an admin's kubectl edit).
        let edited = [
            ("arktos-operators", "2026-12-07T06:00:00Z"),
            ("kubectl-edit", "2026-12-07T06:01:00Z"),
        ];
        writer.apply_watcher_event(&Event::Apply(mk_seen(&hash, &edited)));
        assert!(!written.in_place(&desired, "arktos-operators"));
        // Deleted.
        writer.apply_watcher_event(&Event::Delete(mk_seen(&hash, &ours)));
        assert!(!written.in_place(&desired, "arktos-operators"));
    }

    #[test]
    fn a_tie_between_writers_is_no_proof() {
        let fields: Vec<ManagedFieldsEntry> = serde_json::from_value(json!([
            {"manager": "arktos-operators", "time": "2026-12-07T06:00:00Z"},
            {"manager": "other", "time": "2026-12-07T06:00:00Z"}]))
        .unwrap();
        assert_eq!(last_writer(&fields), None);
        assert_eq!(last_writer(&fields[..1]), Some("arktos-operators"));
        assert_eq!(last_writer(&[]), None);
    }
}
