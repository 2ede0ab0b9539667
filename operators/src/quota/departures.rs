//! Objects the quota counts that were just deleted. A create that is
//! deleted again before the controller settles the ledger leaves a pending
//! charge whose object was never seen stored; knowing it departed lets the
//! charge go at once instead of after the grace period.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arktos_crds::tenant::Tenant;
use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::ledger::PENDING_GRACE;
use super::usage::COUNTED;
use crate::metrics::Metrics;

#[derive(Default)]
pub struct Departures {
    recent: Mutex<HashMap<String, Instant>>,
}

impl Departures {
    pub fn record(&self, uid: &str) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Only as long as a pending charge may wait: bounded by the delete rate.
        recent.retain(|_, at| at.elapsed() < PENDING_GRACE);
        recent.insert(uid.to_string(), Instant::now());
    }

    pub fn departed(&self, uid: &str) -> bool {
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(uid)
    }
}

/// Every create, change and delete of what the quota counts in tenant
/// namespaces, as the Tenant to settle (metadata-only watches, one per
/// counted resource, of the objects `config` selects); deletions are
/// recorded in `departures` on the way.
pub fn counted_changes(
    client: kube::Client,
    config: watcher::Config,
    departures: Arc<Departures>,
    metrics: Arc<Metrics>,
) -> BoxStream<'static, ObjectRef<Tenant>> {
    let streams = COUNTED.iter().map(move |counted| {
        let gvk = GroupVersionKind::gvk(counted.group, counted.version, counted.kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, counted.plural);
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(client.clone(), &resource);
        let departures = departures.clone();
        let metrics = metrics.clone();
        let plural = counted.plural;
        watcher(api, config.clone())
            .default_backoff()
            .filter_map(move |event| {
                let departures = departures.clone();
                if matches!(event, Ok(ref e) if !matches!(e, watcher::Event::Init | watcher::Event::InitDone)) {
                    metrics.watch_event(plural);
                }
                async move {
                    let object = match event {
                        Ok(watcher::Event::Delete(object)) => {
                            if let Some(uid) = object.uid() {
                                departures.record(&uid);
                            }
                            object
                        }
                        Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                            object
                        }
                        Ok(_) => return None,
                        Err(err) => {
                            tracing::debug!(error = %err, "watching what the quota counts");
                            return None;
                        }
                    };
                    object
                        .labels()
                        .get(arktos_crds::naming::TENANT_LABEL)
                        .map(|tenant| ObjectRef::new(tenant))
                }
            })
            .boxed()
    });
    futures::stream::select_all(streams).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_recent_departures() {
        let departures = Departures::default();
        departures.record("u1");
        assert!(departures.departed("u1"));
        assert!(!departures.departed("u2"));
    }
}
