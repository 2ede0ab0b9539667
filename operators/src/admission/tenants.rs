//! The Tenants admission decides by: one watch of all Tenants (no
//! per-tenant state), and a live read when a Tenant is not cached yet (it
//! may have been created a moment ago).

use std::sync::Arc;

use arktos_crds::tenant::Tenant;
use futures::StreamExt;
use kube::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};

#[derive(Clone)]
pub struct Tenants {
    api: Api<Tenant>,
    store: Store<Tenant>,
}

impl Tenants {
    /// Starts watching Tenants in the background.
    pub fn watch(client: kube::Client) -> Self {
        let api: Api<Tenant> = Api::all(client);
        let (store, writer) = reflector::store();
        let stream = reflector::reflector(writer, watcher(api.clone(), watcher::Config::default()))
            .default_backoff()
            .applied_objects();
        tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(err) = event {
                    tracing::warn!(error = %err, "watching Tenants");
                }
            }
        });
        Self { api, store }
    }

    /// The Tenant `name`; `Ok(None)` if it does not exist.
    pub async fn get(&self, name: &str) -> Result<Option<Arc<Tenant>>, kube::Error> {
        if let Some(tenant) = self.store.get(&ObjectRef::new(name)) {
            return Ok(Some(tenant));
        }
        Ok(self.api.get_opt(name).await?.map(Arc::new))
    }
}
