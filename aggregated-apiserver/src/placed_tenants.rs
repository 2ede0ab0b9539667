//! Where every tenant is placed, kept by a watch on the Tenants' storage:
//! one small entry per tenant (its name and a partition name shared by all
//! the tenants there) and a count per partition, so placing a tenant and
//! probing a partition cost the same with 10 tenants or 100,000 instead of
//! a list of them all.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arktos_crds::tenant::{STORAGE_GROUP, STORAGE_KIND, STORAGE_PLURAL, STORAGE_VERSION};
use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_stream};
use tokio::sync::watch;

/// How long placement waits for the first full list before refusing.
const FIRST_LIST_WITHIN: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Placement {
    /// Tenant name -> partition.
    tenants: HashMap<Box<str>, Arc<str>>,
    /// Partition -> tenants there; every partition name held once.
    counts: HashMap<Arc<str>, u64>,
}

impl Placement {
    fn place(&mut self, tenant: &str, partition: &str) {
        let shared = match self.counts.get_key_value(partition) {
            Some((shared, _)) => shared.clone(),
            None => Arc::from(partition),
        };
        if let Some(before) = self.tenants.insert(tenant.into(), shared.clone()) {
            self.uncount(&before);
        }
        *self.counts.entry(shared).or_default() += 1;
    }

    fn remove(&mut self, tenant: &str) {
        if let Some(before) = self.tenants.remove(tenant) {
            self.uncount(&before);
        }
    }

    fn uncount(&mut self, partition: &Arc<str>) {
        if let Some(count) = self.counts.get_mut(partition) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(partition);
            }
        }
    }
}

pub struct PlacedTenants {
    /// The cluster itself as a partition: where a tenant that names none is.
    root: String,
    now: RwLock<Placement>,
    /// Whether the first full list is in.
    listed: watch::Sender<bool>,
}

impl PlacedTenants {
    pub fn new(root: &str) -> Self {
        Self {
            root: root.to_string(),
            now: RwLock::default(),
            listed: watch::Sender::new(false),
        }
    }

    /// Tenants placed on `partition` now.
    pub fn count(&self, partition: &str) -> u64 {
        let now = self.now.read().expect("not poisoned");
        now.counts.get(partition).copied().unwrap_or_default()
    }

    /// Tenants known, on every partition.
    pub fn len(&self) -> usize {
        self.now.read().expect("not poisoned").tenants.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the first full list; `false` when it is not in within a
    /// few seconds (the storage does not answer).
    pub async fn listed(&self) -> bool {
        let mut listed = self.listed.subscribe();
        let first = listed.wait_for(|done| *done);
        matches!(
            tokio::time::timeout(FIRST_LIST_WITHIN, first).await,
            Ok(Ok(_))
        )
    }

    fn apply(&self, placement: &mut Placement, object: &DynamicObject) {
        let Some(name) = object.metadata.name.as_deref() else {
            return;
        };
        let partition = object.data["spec"]["partition"]
            .as_str()
            .unwrap_or_default();
        let partition = if partition.is_empty() {
            self.root.as_str()
        } else {
            partition
        };
        placement.place(name, partition);
    }

    /// Follows the Tenants' storage for as long as the process runs,
    /// listing again (and swapping the whole map) whenever the watch must.
    pub async fn follow(self: Arc<Self>, client: kube::Client) {
        let resource = ApiResource {
            group: STORAGE_GROUP.into(),
            version: STORAGE_VERSION.into(),
            api_version: format!("{STORAGE_GROUP}/{STORAGE_VERSION}"),
            kind: STORAGE_KIND.into(),
            plural: STORAGE_PLURAL.into(),
        };
        let api = kube::Api::<DynamicObject>::all_with(client, &resource);
        let events = watch_stream(api, watcher::Config::default()).default_backoff();
        let mut events = std::pin::pin!(events);
        let mut relisting = Placement::default();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => relisting = Placement::default(),
                Ok(Event::InitApply(object)) => self.apply(&mut relisting, &object),
                Ok(Event::InitDone) => {
                    *self.now.write().expect("not poisoned") = std::mem::take(&mut relisting);
                    self.listed.send_replace(true);
                    tracing::info!(tenants = self.len(), "tenants' placement listed");
                }
                Ok(Event::Apply(object)) => {
                    self.apply(&mut self.now.write().expect("not poisoned"), &object)
                }
                Ok(Event::Delete(object)) => {
                    let name = object.metadata.name.unwrap_or_default();
                    self.now.write().expect("not poisoned").remove(&name);
                }
                Err(err) => tracing::warn!(error = %err, "watching the tenants' placement"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str, partition: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "storage/v1", "kind": "TenantRecord",
            "metadata": {"name": name}, "spec": {"partition": partition},
        }))
        .expect("an object")
    }

    #[test]
    fn counts_follow_creates_moves_and_deletes() {
        let placed = PlacedTenants::new("local");
        let mut now = Placement::default();
        placed.apply(&mut now, &tenant("a", "p2"));
        placed.apply(&mut now, &tenant("b", "p2"));
        placed.apply(&mut now, &tenant("c", ""));
        placed.apply(&mut now, &tenant("b", "p2"));
        assert_eq!(
            (now.counts["p2"], now.counts["local"]),
            (2, 1),
            "an update is not a second tenant"
        );
        placed.apply(&mut now, &tenant("a", "p3"));
        now.remove("b");
        now.remove("gone");
        assert_eq!(
            now.counts.get("p2"),
            None,
            "a partition with none left is forgotten"
        );
        assert_eq!((now.counts["p3"], now.tenants.len()), (1, 2));
    }

    #[test]
    fn tenants_on_one_partition_share_its_name() {
        let placed = PlacedTenants::new("local");
        let mut now = Placement::default();
        placed.apply(&mut now, &tenant("a", "p2"));
        placed.apply(&mut now, &tenant("b", "p2"));
        assert!(Arc::ptr_eq(&now.tenants["a"], &now.tenants["b"]));
    }

    #[tokio::test]
    async fn the_counts_wait_for_nothing_but_placement_waits_for_the_first_list() {
        let placed = PlacedTenants::new("local");
        assert_eq!(placed.count("local"), 0);
        placed.listed.send_replace(true);
        assert!(placed.listed().await);
    }
}
