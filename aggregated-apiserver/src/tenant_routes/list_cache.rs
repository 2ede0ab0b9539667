//! Lists answered from arktos-apiserver's own copy of a resource
//! (docs/tenant-routes.md), kept current by a watch and stored already in
//! each object's tenant's terms, so a list costs copying bytes rather than kube-apiserver
//! encoding every object in JSON again.
//!
//! kube-apiserver still decides what a list holds: the gateway sends it the
//! very request it would have sent (same user, same selectors, same
//! `resourceVersion`, `limit` and `continue`), asking for object metadata
//! only, in protobuf, several times cheaper to produce. The answer is then
//! assembled from the copies at exactly the versions kube-apiserver named.
//! A copy that is missing or at another version (the watch is behind) means
//! a short wait for the watch, then the ordinary list: an answer from here
//! is never older, newer or wider than kube-apiserver's own.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use arktos_crds::naming::{TENANT_LABEL, TenantName, split_storage_namespace};
use arktos_crds::sharding::BUCKET_LABEL;
use arktos_crds::sharding::ring::Range;
use arktos_crds::status;
use arktos_crds::tenant::{STORAGE_GROUP, STORAGE_VERSION};
use bytes::Bytes;
use futures::StreamExt;
use http::StatusCode;
use http_body_util::BodyExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::watch;
use warp::reply::Response;

use super::backend::{Backend, Outgoing};
use super::list_stream::{ListRewrite, tenant_item};
use super::mapping::View;
use super::protobuf::{METADATA_LIST_ACCEPT, MetadataList, metadata_list};
use crate::authn::UserInfo;
use crate::metrics::ListCacheMetrics;
use crate::rename::Stored;
use crate::respond;

/// How long a list waits for the watch to bring the versions
/// kube-apiserver named before it is served the ordinary way.
const CATCH_UP: Duration = Duration::from_millis(250);

/// Objects per page when (re)listing a resource for the copies.
const RELIST_PAGE: usize = 500;

/// A resource whose lists are served from a copy: `v1/pods`,
/// `apps/v1/deployments`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResource {
    pub group: String,
    pub version: String,
    pub resource: String,
}

impl CachedResource {
    fn collection_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.resource)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.resource)
        }
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

impl FromStr for CachedResource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        };
        match parts.as_slice() {
            [version, resource] if valid(version) && valid(resource) => Ok(Self {
                group: String::new(),
                version: version.to_string(),
                resource: resource.to_string(),
            }),
            [group, version, resource] if valid(group) && valid(version) && valid(resource) => {
                Ok(Self {
                    group: group.to_string(),
                    version: version.to_string(),
                    resource: resource.to_string(),
                })
            }
            _ => Err(format!(
                "{text:?}: expected VERSION/RESOURCE (core) or GROUP/VERSION/RESOURCE"
            )),
        }
    }
}

/// The copies of every cached resource.
#[derive(Clone, Default)]
pub struct ListCache {
    stores: Vec<Arc<Store>>,
    /// Held for its Drop.
    _watches: Arc<Watches>,
}

/// The watches feeding the stores: they end when the last copy of the
/// cache goes (a partition removed takes its watches with it).
#[derive(Default)]
struct Watches(Vec<tokio::task::AbortHandle>);

impl Drop for Watches {
    fn drop(&mut self) {
        for watch in &self.0 {
            watch.abort();
        }
    }
}

impl ListCache {
    /// Starts one watch per resource, as arktos-apiserver, over the objects
    /// carrying the tenant label (every object in a tenant's namespaces)
    /// of the tenants in `share` (this replica's part of the sharding
    /// ring, see `list_share`), again whenever the share changes.
    pub fn start(
        backend: &Backend,
        resources: &[CachedResource],
        metrics: ListCacheMetrics,
        share: &watch::Receiver<Range>,
    ) -> Self {
        let mut watches = Watches::default();
        let stores = resources
            .iter()
            .map(|resource| {
                let store = Arc::new(Store::new(resource.clone(), metrics.clone()));
                let watch = tokio::spawn(reflect(store.clone(), backend.clone(), share.clone()));
                watches.0.push(watch.abort_handle());
                store
            })
            .collect();
        Self {
            stores,
            _watches: Arc::new(watches),
        }
    }

    pub fn store(&self, group: &str, version: &str, resource: &str) -> Option<&Arc<Store>> {
        self.stores.iter().find(|s| {
            s.resource.group == group
                && s.resource.version == version
                && s.resource.resource == resource
        })
    }
}

/// One object as a tenant sees it, at one version.
struct Copy {
    resource_version: String,
    item: Bytes,
}

/// Storage namespace -> name -> copy, with running totals for the
/// metrics (kept as objects come and go, not recounted).
#[derive(Default)]
struct Copies {
    by_namespace: HashMap<String, HashMap<String, Copy>>,
    count: i64,
    bytes: i64,
}

impl Copies {
    fn insert(&mut self, namespace: String, name: String, copy: Copy) {
        self.count += 1;
        self.bytes += copy.item.len() as i64;
        if let Some(old) = self
            .by_namespace
            .entry(namespace)
            .or_default()
            .insert(name, copy)
        {
            self.count -= 1;
            self.bytes -= old.item.len() as i64;
        }
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(names) = self.by_namespace.get_mut(namespace) else {
            return;
        };
        if let Some(old) = names.remove(name) {
            self.count -= 1;
            self.bytes -= old.item.len() as i64;
        }
        if names.is_empty() {
            self.by_namespace.remove(namespace);
        }
    }

    fn get(&self, namespace: &str, name: &str) -> Option<&Copy> {
        self.by_namespace.get(namespace)?.get(name)
    }
}

/// Why a list cannot be assembled from the copies.
#[derive(Debug, PartialEq, Eq)]
enum Unready {
    /// A copy is missing or at another version: the watch may bring it.
    Behind,
    /// A member has no tenant label, so the watch never brings it.
    Never,
}

/// The copies of one resource.
pub struct Store {
    resource: CachedResource,
    /// A kind arktos-apiserver serves from its storage group (Tenants),
    /// copied whole in the served view; `None` for a resource of tenants'
    /// namespaces, copied in each object's tenant's terms.
    served: Option<&'static Stored>,
    /// The kind of the items (`Pod`), learnt from the first list.
    kind: RwLock<String>,
    objects: RwLock<Copies>,
    changed: tokio::sync::Notify,
    /// Listed, and watching since: lists may be answered from here.
    synced: AtomicBool,
    /// The tenants whose objects are copied.
    share: RwLock<Range>,
    metrics: ListCacheMetrics,
}

#[derive(Deserialize)]
struct Head {
    metadata: HeadMetadata,
}

#[derive(Deserialize)]
struct HeadMetadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
}

#[derive(Deserialize)]
struct RawList<'a> {
    #[serde(default)]
    kind: String,
    metadata: ListMetadata,
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct ListMetadata {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "continue", default)]
    continue_token: String,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    object: &'a RawValue,
}

impl Store {
    fn new(resource: CachedResource, metrics: ListCacheMetrics) -> Self {
        Self {
            resource,
            served: None,
            kind: RwLock::new(String::new()),
            objects: RwLock::new(Copies::default()),
            changed: tokio::sync::Notify::new(),
            synced: AtomicBool::new(false),
            share: RwLock::new(Range::ALL),
            metrics,
        }
    }

    /// Copies of every record of `kind` (TenantRecords for Tenants), kept by
    /// a watch started here, for as long as the process runs.
    pub fn served(
        backend: &Backend,
        kind: &'static Stored,
        metrics: ListCacheMetrics,
    ) -> Arc<Self> {
        let store = Arc::new(Self {
            served: Some(kind),
            kind: RwLock::new(kind.kind.to_string()),
            ..Self::new(
                CachedResource {
                    group: STORAGE_GROUP.into(),
                    version: STORAGE_VERSION.into(),
                    resource: kind.record_plural.into(),
                },
                metrics,
            )
        });
        // The whole ring, always: every replica serves every Tenant.
        let (_whole, share) = watch::channel(Range::ALL);
        tokio::spawn(reflect(store.clone(), backend.clone(), share));
        store
    }

    /// Whether `tenant`'s objects are copied here (by its bucket, the
    /// division the label selector of the watch makes).
    fn covers(&self, tenant: &TenantName) -> bool {
        let share = *self.share.read().unwrap_or_else(|e| e.into_inner());
        share == Range::ALL || share.owns(tenant.as_str())
    }

    /// Whether every labelled object is copied, those made before objects
    /// carried their tenant's bucket included.
    fn whole(&self) -> bool {
        *self.share.read().unwrap_or_else(|e| e.into_inner()) == Range::ALL
    }

    /// The list `uri` asks for, as `as_user`, from the copies; `None` when
    /// it must be answered the ordinary way (the copy is not in step, the
    /// tenant keeps no prefix, kube-apiserver refused: the ordinary request
    /// then gets its refusal in full).
    pub async fn answer(
        &self,
        backend: &Backend,
        uri: String,
        as_user: Option<&UserInfo>,
        view: &View,
    ) -> Option<Response> {
        if !self.synced.load(Ordering::Relaxed)
            || view.storage_prefix().is_empty()
            || !self.covers(view.tenant())
        {
            return None;
        }
        let members = members_of(backend, uri, as_user).await?;
        let body = self.list(&members, Some(view)).await?;
        Some(respond::raw(StatusCode::OK, body, "application/json"))
    }

    /// A served kind's list (`query` as the client sent it) or object
    /// `name` from the copies, by the members kube-apiserver names for that
    /// request (a list narrowed to `name` for an object): so every
    /// `resourceVersion` rule, selector and page is kube-apiserver's own.
    /// `None` when it must be answered the ordinary way.
    pub async fn answer_served(
        &self,
        backend: &Backend,
        name: Option<&str>,
        query: &str,
    ) -> Option<Result<Response, Status>> {
        let served = self.served?;
        if !self.synced.load(Ordering::Relaxed) {
            return None;
        }
        let mut query = query.to_string();
        if let Some(name) = name {
            // One object: kube-apiserver answers a list narrowed to one
            // name from its watch cache by key.
            query = narrowed_to(&query, name);
        }
        let uri = format!("{}?{query}", self.resource.collection_path());
        let members = members_of(backend, uri, None).await?;
        let Some(name) = name else {
            let body = self.list(&members, None).await?;
            return Some(Ok(respond::raw(StatusCode::OK, body, "application/json")));
        };
        if members.items.is_empty() {
            return Some(Err(status::not_found(&served.subject(name))));
        }
        let item = self.list_items(&members, None).await?;
        Some(Ok(respond::raw(StatusCode::OK, item, "application/json")))
    }

    /// `{"kind":"PodList","apiVersion":"v1","metadata":..,"items":[..]}` for
    /// the members kube-apiserver named, if every one has a copy at its
    /// version. Members outside the tenant are left out, as the streamed
    /// list leaves them out.
    pub async fn list(&self, members: &MetadataList, view: Option<&View>) -> Option<Vec<u8>> {
        let items = self.list_items(members, view).await?;
        Some(self.envelope(members, view, items))
    }

    /// The copies of `members`, joined by commas, once every one is in.
    async fn list_items(&self, members: &MetadataList, view: Option<&View>) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.items(members, view) {
                Ok(items) => {
                    self.metrics.hits.inc();
                    return Some(items);
                }
                Err(Unready::Never) => {
                    self.metrics.misses.inc();
                    return None;
                }
                Err(Unready::Behind) => {}
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                self.metrics.misses.inc();
                return None;
            }
        }
    }

    fn items(&self, members: &MetadataList, view: Option<&View>) -> Result<Vec<u8>, Unready> {
        let prefix = view.map(View::storage_prefix).unwrap_or_default();
        // Served records carry no tenant labels: all are copied.
        let whole = self.whole() || self.served.is_some();
        let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(usize::try_from(objects.bytes).unwrap_or(0).min(1 << 26));
        for member in members
            .items
            .iter()
            .filter(|m| m.namespace.starts_with(prefix))
        {
            if self.served.is_none() && !member.tenant_labelled
                || !(member.bucket_labelled || whole)
            {
                return Err(Unready::Never);
            }
            let copy = objects
                .get(&member.namespace, &member.name)
                .ok_or(Unready::Behind)?;
            if copy.resource_version != member.resource_version {
                return Err(Unready::Behind);
            }
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(&copy.item);
        }
        Ok(out)
    }

    fn envelope(&self, members: &MetadataList, view: Option<&View>, items: Vec<u8>) -> Vec<u8> {
        let mut metadata = serde_json::Map::new();
        metadata.insert(
            "resourceVersion".into(),
            members.resource_version.clone().into(),
        );
        if !members.continue_token.is_empty() {
            let token = match view {
                Some(view) => view.continue_to_tenant(&members.continue_token),
                None => members.continue_token.clone(),
            };
            metadata.insert("continue".into(), token.into());
        }
        if let Some(count) = members.remaining_item_count {
            metadata.insert("remainingItemCount".into(), count.into());
        }
        let api_version = match self.served {
            Some(_) => arktos_crds::tenant::API_VERSION.to_string(),
            None => self.resource.api_version(),
        };
        let head = serde_json::json!({
            "kind": format!("{}List", self.kind.read().unwrap_or_else(|e| e.into_inner())),
            "apiVersion": api_version,
            "metadata": metadata,
        })
        .to_string();
        let mut out = Vec::with_capacity(head.len() + items.len() + 16);
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"items\":[");
        out.extend_from_slice(&items);
        out.extend_from_slice(b"]}");
        out
    }

    /// An object (as kube-apiserver wrote it, list item or watch object)
    /// in its tenant's terms, with where it belongs; `None` for objects
    /// outside tenants or not shaped as lists write them.
    fn copy_of(&self, object: &str) -> Option<(String, String, Copy)> {
        let head: Head = serde_json::from_str(object).ok()?;
        if let Some(served) = self.served {
            return Some(served_copy(served, object, head));
        }
        let (tenant, _) = split_storage_namespace(&head.metadata.namespace)?;
        let kind = self.kind.read().unwrap_or_else(|e| e.into_inner()).clone();
        let rewrite = ListRewrite {
            view: Arc::new(View::new(TenantName::new(tenant).ok()?)),
            vm_kind: super::vm_pods::holds_pods(&self.resource.group, &self.resource.resource)
                .then_some(kind),
        };
        let item = tenant_item(&rewrite, list_item(object).as_bytes())??;
        Some((
            head.metadata.namespace,
            head.metadata.name,
            Copy {
                resource_version: head.metadata.resource_version,
                item: Bytes::from(item),
            },
        ))
    }

    fn learn_kind(&self, list_kind: &str) {
        if self.served.is_some() {
            return;
        }
        *self.kind.write().unwrap_or_else(|e| e.into_inner()) = list_kind
            .strip_suffix("List")
            .unwrap_or(list_kind)
            .to_string();
    }

    fn add_page(&self, copies: &mut Copies, page: &RawList<'_>) {
        for item in &page.items {
            if let Some((namespace, name, copy)) = self.copy_of(item.get()) {
                copies.insert(namespace, name, copy);
            }
        }
    }

    fn install(&self, copies: Copies) {
        *self.objects.write().unwrap_or_else(|e| e.into_inner()) = copies;
        self.changed_now();
    }

    /// Applies one watch event; returns the version it brings, and an error
    /// when kube-apiserver ended the watch with one (a relist is due).
    fn apply(&self, line: &[u8]) -> Result<Option<String>, String> {
        let Ok(event) = serde_json::from_slice::<RawEvent<'_>>(line) else {
            return Ok(None);
        };
        let version = || {
            serde_json::from_str::<Head>(event.object.get())
                .ok()
                .map(|head| head.metadata)
        };
        match event.kind.as_str() {
            "ADDED" | "MODIFIED" => {
                if let Some((namespace, name, copy)) = self.copy_of(event.object.get()) {
                    let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
                    objects.insert(namespace, name, copy);
                }
                self.changed_now();
                Ok(version().map(|m| m.resource_version))
            }
            "DELETED" => {
                let metadata = version();
                if let Some(m) = &metadata {
                    let mut objects = self.objects.write().unwrap_or_else(|e| e.into_inner());
                    objects.remove(&m.namespace, &m.name);
                }
                self.changed_now();
                Ok(metadata.map(|m| m.resource_version))
            }
            "BOOKMARK" => Ok(version().map(|m| m.resource_version)),
            _ => Err(format!("the watch ended with {}", event.object.get())),
        }
    }

    fn changed_now(&self) {
        let (count, bytes) = {
            let objects = self.objects.read().unwrap_or_else(|e| e.into_inner());
            (objects.count, objects.bytes)
        };
        self.metrics.objects.set(count);
        self.metrics.bytes.set(bytes);
        self.changed.notify_waiters();
    }
}

/// A served kind's record (list item or watch object) in the served view,
/// as kube-apiserver's answer would be once translated (see `rename`).
fn served_copy(served: &Stored, object: &str, head: Head) -> (String, String, Copy) {
    let mut value: serde_json::Value = serde_json::from_str(object).unwrap_or_default();
    served.to_view(&mut value);
    (
        String::new(),
        head.metadata.name,
        Copy {
            resource_version: head.metadata.resource_version,
            item: Bytes::from(value.to_string()),
        },
    )
}

/// The members of the list `uri` names, asked of kube-apiserver as
/// `as_user` (arktos-apiserver itself when `None`) in their metadata only;
/// `None` when it refuses (the ordinary request then gets the refusal in
/// full).
async fn members_of(
    backend: &Backend,
    uri: String,
    as_user: Option<&UserInfo>,
) -> Option<MetadataList> {
    let outgoing = Outgoing {
        as_user,
        ..Outgoing::get_as_us(uri, METADATA_LIST_ACCEPT)
    };
    let (code, body) = backend.raw(outgoing).await.ok()?;
    if !code.is_success() {
        return None;
    }
    let bytes = body.collect().await.ok()?.to_bytes();
    metadata_list(&bytes)
}

/// `query` as a list narrowed to object `name` (its own field selector,
/// paging and `watch` dropped; `resourceVersion` kept).
fn narrowed_to(query: &str, name: &str) -> String {
    let mut params = crate::request::parse_query(query);
    params.retain(|(key, _)| matches!(key.as_str(), "resourceVersion" | "resourceVersionMatch"));
    params.push(("fieldSelector".into(), format!("metadata.name={name}")));
    crate::request::encode_query(&params)
}

/// A watch event's object starts `{"kind":..,"apiVersion":..,"metadata"`;
/// list items start with their metadata and carry no kind.
fn list_item(object: &str) -> std::borrow::Cow<'_, str> {
    match object.find("\"metadata\":{") {
        Some(at) if at > 1 && !object[1..at].contains('{') => format!("{{{}", &object[at..]).into(),
        _ => object.into(),
    }
}

/// Keeps `store` current: list, then watch from the list's version until
/// kube-apiserver ends the watch with an error or the share changes (then
/// list again).
async fn reflect(store: Arc<Store>, backend: Backend, mut share: watch::Receiver<Range>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let range = *share.borrow_and_update();
        *store.share.write().unwrap_or_else(|e| e.into_inner()) = range;
        store.metrics.share.set(range.fraction());
        match relist(&store, &backend).await {
            Ok(version) => {
                backoff = Duration::from_secs(1);
                store.synced.store(true, Ordering::Relaxed);
                tokio::select! {
                    ended = watch_from(&store, &backend, version) => {
                        if let Err(err) = ended {
                            tracing::info!(resource = %store.resource.resource, error = %err, "list cache: watching again from a new list");
                        }
                    }
                    Ok(()) = share.changed() => {
                        tracing::info!(resource = %store.resource.resource, share = %*share.borrow(), "list cache: copying a new share");
                    }
                }
                store.synced.store(false, Ordering::Relaxed);
            }
            Err(err) => {
                tracing::warn!(resource = %store.resource.resource, error = %err, "list cache: cannot list");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The label selector of the copied objects: the tenant label, and the
/// buckets of the share unless it is the whole ring.
fn selector(share: Range) -> String {
    if share == Range::ALL {
        return TENANT_LABEL.to_string();
    }
    let buckets = share
        .label_selector()
        .unwrap_or_else(|| format!("{BUCKET_LABEL}=none"));
    format!("{TENANT_LABEL},{buckets}")
}

/// A GET of the copied objects of `store`'s resource, as arktos-apiserver,
/// with `query` added.
fn labelled(store: &Store, query: &str) -> Outgoing<'static> {
    let share = *store.share.read().unwrap_or_else(|e| e.into_inner());
    let uri = match store.served {
        Some(_) => format!("{}?{query}", store.resource.collection_path()),
        None => format!(
            "{}?labelSelector={}&{query}",
            store.resource.collection_path(),
            crate::request::encode(&selector(share))
        ),
    };
    Outgoing::get_as_us(uri, "application/json")
}

/// Lists every labelled object in pages (one snapshot: the pages share
/// the first one's version) and installs them as the new copies.
async fn relist(store: &Store, backend: &Backend) -> Result<String, String> {
    let mut copies = Copies::default();
    let mut continue_token = String::new();
    let mut version = None;
    loop {
        let mut query = format!("limit={RELIST_PAGE}");
        if !continue_token.is_empty() {
            query.push_str("&continue=");
            query.push_str(&crate::request::encode(&continue_token));
        }
        let (code, body) = backend
            .raw(labelled(store, &query))
            .await
            .map_err(|s| s.message.unwrap_or_default())?;
        let bytes = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        if !code.is_success() {
            return Err(format!("{code}: {}", String::from_utf8_lossy(&bytes)));
        }
        let page: RawList<'_> = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if version.is_none() {
            store.learn_kind(&page.kind);
            version = Some(page.metadata.resource_version.clone());
        }
        store.add_page(&mut copies, &page);
        continue_token = page.metadata.continue_token.clone();
        if continue_token.is_empty() {
            break;
        }
    }
    tracing::info!(resource = %store.resource.resource, objects = copies.count, "list cache: listed");
    store.install(copies);
    Ok(version.unwrap_or_default())
}

async fn watch_from(store: &Store, backend: &Backend, mut version: String) -> Result<(), String> {
    loop {
        let query = format!(
            "watch=true&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={version}"
        );
        let (code, body) = backend
            .raw(labelled(store, &query))
            .await
            .map_err(|s| s.message.unwrap_or_default())?;
        if !code.is_success() {
            return Err(format!("watch answered {code}"));
        }
        let mut chunks = body.into_data_stream();
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = chunks.next().await {
            pending.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            while let Some(end) = memchr::memchr(b'\n', &pending) {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Some(newer) = store.apply(&line)? {
                    version = newer;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant_routes::protobuf::Member;

    fn store() -> Store {
        let store = Store::new("v1/pods".parse().unwrap(), ListCacheMetrics::default());
        let list = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"10"},"items":[
            {"metadata":{"name":"a","namespace":"acme--web","resourceVersion":"5"},"spec":{}},
            {"metadata":{"name":"b","namespace":"globex--web","resourceVersion":"6"},"spec":{}},
            {"metadata":{"name":"c","namespace":"kube-system","resourceVersion":"7"},"spec":{}}]}"#;
        let page: RawList<'_> = serde_json::from_str(list).unwrap();
        store.learn_kind(&page.kind);
        let mut copies = Copies::default();
        store.add_page(&mut copies, &page);
        store.install(copies);
        store
    }

    fn members(items: &[(&str, &str, &str)]) -> MetadataList {
        MetadataList {
            resource_version: "10".into(),
            continue_token: String::new(),
            remaining_item_count: None,
            items: items
                .iter()
                .map(|(namespace, name, version)| Member {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                    resource_version: version.to_string(),
                    tenant_labelled: true,
                    bucket_labelled: true,
                })
                .collect(),
        }
    }

    fn acme() -> View {
        View::new(TenantName::new("acme").unwrap())
    }

    #[test]
    fn resources_parse_core_and_grouped() {
        assert_eq!(
            "apps/v1/deployments"
                .parse::<CachedResource>()
                .unwrap()
                .collection_path(),
            "/apis/apps/v1/deployments"
        );
        assert_eq!(
            "v1/pods"
                .parse::<CachedResource>()
                .unwrap()
                .collection_path(),
            "/api/v1/pods"
        );
        assert!("pods".parse::<CachedResource>().is_err());
        assert!("v1/po?ds".parse::<CachedResource>().is_err());
    }

    #[tokio::test]
    async fn lists_are_assembled_at_exactly_the_named_versions() {
        let store = store();
        let listed = store
            .list(
                &members(&[("acme--web", "a", "5"), ("globex--web", "b", "6")]),
                Some(&acme()),
            )
            .await
            .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&listed).unwrap();
        assert_eq!(value["kind"], "PodList");
        assert_eq!(value["metadata"]["resourceVersion"], "10");
        // Another tenant's member is left out; names are the tenant's.
        assert_eq!(value["items"].as_array().unwrap().len(), 1);
        assert_eq!(value["items"][0]["metadata"]["namespace"], "web");
        // A member without the tenant label is never copied: no wait.
        let mut unlabelled = members(&[("acme--web", "a", "5")]);
        unlabelled.items[0].tenant_labelled = false;
        assert_eq!(store.items(&unlabelled, Some(&acme())), Err(Unready::Never));
        assert_eq!(
            store.items(&members(&[("acme--web", "a", "4")]), Some(&acme())),
            Err(Unready::Behind)
        );
        // A version the copy does not have: not served from here.
        assert!(
            store
                .list(&members(&[("acme--web", "a", "4")]), Some(&acme()))
                .await
                .is_none()
        );
        assert!(
            store
                .list(&members(&[("acme--web", "z", "4")]), Some(&acme()))
                .await
                .is_none()
        );
    }

    #[test]
    fn a_share_of_the_ring_copies_only_its_tenants() {
        let store = store();
        assert_eq!(selector(Range::ALL), TENANT_LABEL);
        let tenant = TenantName::new("acme").unwrap();
        let bucket = u128::from(arktos_crds::sharding::bucket_of("acme"));
        let width = 1u128 << 56;
        let with = Range {
            start: bucket * width,
            end: (bucket + 1) * width,
        };
        let without = Range {
            start: ((bucket + 1) % 256) * width,
            end: ((bucket + 1) % 256 + 1) * width,
        };
        *store.share.write().unwrap() = with;
        assert!(store.covers(&tenant));
        assert_eq!(
            selector(with),
            format!("{TENANT_LABEL},{BUCKET_LABEL} in ({bucket})")
        );
        // Objects made before they carried their tenant's bucket are not
        // copied by a share: listed the ordinary way, without waiting.
        let mut unstamped = members(&[("acme--web", "a", "5")]);
        unstamped.items[0].bucket_labelled = false;
        assert_eq!(store.items(&unstamped, Some(&acme())), Err(Unready::Never));
        *store.share.write().unwrap() = without;
        assert!(!store.covers(&tenant));
        *store.share.write().unwrap() = Range::ALL;
        assert!(store.items(&unstamped, Some(&acme())).is_ok());
    }

    #[tokio::test]
    async fn served_records_are_copied_in_the_served_view() {
        let store = Store {
            served: Some(&crate::rename::TENANTS),
            kind: RwLock::new("Tenant".into()),
            ..Store::new("v1/pods".parse().unwrap(), ListCacheMetrics::default())
        };
        let record = r#"{"apiVersion":"storage.tenancy.arktos.io/v1alpha1","kind":"TenantRecord","metadata":{"name":"acme","resourceVersion":"5"},"spec":{"partition":"local"}}"#;
        let page = format!(
            r#"{{"kind":"TenantRecordList","apiVersion":"storage.tenancy.arktos.io/v1alpha1","metadata":{{"resourceVersion":"6"}},"items":[{record}]}}"#
        );
        let page: RawList<'_> = serde_json::from_str(&page).unwrap();
        store.learn_kind(&page.kind);
        let mut copies = Copies::default();
        store.add_page(&mut copies, &page);
        store.install(copies);
        let mut members = members(&[("", "acme", "5")]);
        members.items[0].tenant_labelled = false;
        let listed: serde_json::Value =
            serde_json::from_slice(&store.list(&members, None).await.unwrap()).unwrap();
        assert_eq!(listed["kind"], "TenantList");
        assert_eq!(listed["apiVersion"], "tenancy.arktos.io/v1alpha1");
        assert_eq!(listed["items"][0]["kind"], "Tenant");
        assert_eq!(listed["items"][0]["status"]["partition"], "local");
        assert_eq!(
            narrowed_to("limit=5&resourceVersion=0&watch=true", "acme"),
            "resourceVersion=0&fieldSelector=metadata.name%3Dacme"
        );
    }

    #[tokio::test]
    async fn a_list_waits_for_the_watch_to_bring_the_version() {
        let store = Arc::new(store());
        let waiting = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .list(&members(&[("acme--web", "a", "8")]), Some(&acme()))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let event = br#"{"type":"MODIFIED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"acme--web","resourceVersion":"8"},"spec":{"x":1}}}"#;
        assert_eq!(store.apply(event).unwrap().as_deref(), Some("8"));
        let listed: serde_json::Value =
            serde_json::from_slice(&waiting.await.unwrap().unwrap()).unwrap();
        assert_eq!(listed["items"][0]["spec"]["x"], 1);
        assert!(listed["items"][0].get("kind").is_none());
        let deleted = br#"{"type":"DELETED","object":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"a","namespace":"acme--web","resourceVersion":"9"}}}"#;
        store.apply(deleted).unwrap();
        assert!(
            store
                .list(&members(&[("acme--web", "a", "8")]), Some(&acme()))
                .await
                .is_none()
        );
        let gone = br#"{"type":"ERROR","object":{"kind":"Status","code":410}}"#;
        assert!(store.apply(gone).is_err());
    }
}
