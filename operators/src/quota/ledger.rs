//! Charging creates against a tenant's `QuotaLedger`, and settling the
//! ledger against what is stored.
//!
//! A charge is a compare-and-swap: read the ledger, check the sum of its
//! charges plus the request against the limits, and write the new charge
//! with a merge patch that carries the resourceVersion read, which
//! kube-apiserver refuses (409) if anyone wrote in between. So two creates
//! anywhere in the tenant, on any replica, can never both take the last
//! unit. Within a replica, creates of one tenant queue on a lock first, so
//! replicas rarely collide.

use std::collections::BTreeMap;
use std::time::Duration;

use arktos_crds::naming::{TENANT_LABEL, TenantName};
use arktos_crds::quantity;
use arktos_crds::status::QuotaExcess;
use arktos_crds::tenant::{Charge, QuotaLedger, QuotaLedgerSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::departures::Departures;
use super::usage::{self, Counted, Usage};

/// How long a charge may wait for its object to be stored before the
/// controller drops it (its create failed after admission).
pub const PENDING_GRACE: Duration = Duration::from_secs(30);
const STRIPES: usize = 64;
const MAX_ATTEMPTS: usize = 200;

/// The limits of a tenant's quota, in thousandths.
pub fn limits(hard: &BTreeMap<String, Quantity>) -> Usage {
    hard.iter()
        .filter_map(|(k, q)| Some((k.clone(), quantity::to_milli(&q.0)?)))
        .collect()
}

/// The charge of an object: its usage of the quota's keys only.
pub fn charge_of(resource: &Counted, object: &Value, limits: &Usage, pending: bool) -> Charge {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    Charge {
        object: format!("{}/{namespace}/{name}", resource.plural),
        usage: usage::usage(resource, object)
            .into_iter()
            .filter(|(k, _)| limits.contains_key(k))
            .map(|(k, v)| (k, quantity::from_milli(v)))
            .collect(),
        pending_since: pending.then(|| Time(Timestamp::now())),
    }
}

/// The ledger key of an object: its UID, which it has from admission on.
pub fn key_of(resource: &Counted, object: &Value) -> String {
    match object.pointer("/metadata/uid").and_then(Value::as_str) {
        Some(uid) if !uid.is_empty() => uid.to_string(),
        _ => charge_of(resource, object, &Usage::new(), false).object,
    }
}

/// The sum of every charge, per key.
pub fn totals(ledger: &QuotaLedgerSpec) -> Usage {
    let mut totals = Usage::new();
    for charge in ledger.charges.values() {
        for (k, v) in &charge.usage {
            *totals.entry(k.clone()).or_default() += quantity::to_milli(v).unwrap_or(0);
        }
    }
    totals
}

/// The keys a request would push past their limits.
pub fn excess(limits: &Usage, used: &Usage, charge: &Charge) -> Vec<QuotaExcess> {
    charge
        .usage
        .iter()
        .filter_map(|(key, requested)| {
            let limit = *limits.get(key)?;
            let requested_milli = quantity::to_milli(requested).unwrap_or(0);
            let current = used.get(key).copied().unwrap_or(0);
            (requested_milli > 0 && current + requested_milli > limit).then(|| QuotaExcess {
                key: key.clone(),
                requested: requested.clone(),
                used: quantity::from_milli(current),
                limited: quantity::from_milli(limit),
            })
        })
        .collect()
}

/// The ledger that matches what is stored: a charge for every stored
/// object, and pending charges still within their grace period (their
/// creates may be under way) unless their object already departed.
pub fn settled(
    current: &QuotaLedgerSpec,
    stored: BTreeMap<String, Charge>,
    departed: impl Fn(&str) -> bool,
    now: Timestamp,
) -> QuotaLedgerSpec {
    let mut charges = stored;
    for (key, charge) in &current.charges {
        let young = charge.pending_since.as_ref().is_some_and(|since| {
            now.duration_since(since.0).as_secs_f64() < PENDING_GRACE.as_secs_f64()
        });
        if young && !departed(key) && !charges.contains_key(key) {
            charges.insert(key.clone(), charge.clone());
        }
    }
    QuotaLedgerSpec { charges }
}

/// A merge patch turning `before` into `after`: what `after` leaves out
/// must be nulled, or the merge would keep it.
fn merge_patch(before: Option<&Charge>, after: &Charge) -> Value {
    let mut patch = serde_json::to_value(after).unwrap_or_default();
    if let Some(before) = before {
        if after.pending_since.is_none() && before.pending_since.is_some() {
            patch["pendingSince"] = Value::Null;
        }
        for key in before
            .usage
            .keys()
            .filter(|k| !after.usage.contains_key(*k))
        {
            patch["usage"][key] = Value::Null;
        }
    }
    patch
}

/// A tenant's ledger, labelled with the tenant.
fn new_ledger(tenant: &str, spec: QuotaLedgerSpec) -> QuotaLedger {
    let mut ledger = QuotaLedger::new(tenant, spec);
    ledger.metadata.labels = Some([(TENANT_LABEL.to_string(), tenant.to_string())].into());
    ledger
}

#[derive(Debug, thiserror::Error)]
pub enum ChargeError {
    #[error("exceeded quota")]
    Exceeded(Vec<QuotaExcess>),
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("the quota ledger of tenant {0} stays contended; try again")]
    Contended(String),
}

/// Every tenant's ledger, as one replica reaches them.
pub struct Ledgers {
    api: Api<QuotaLedger>,
    client: kube::Client,
    stripes: Vec<Mutex<()>>,
}

impl Ledgers {
    pub fn new(client: kube::Client) -> Self {
        Self {
            api: Api::all(client.clone()),
            client,
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }

    fn stripe(&self, tenant: &str) -> &Mutex<()> {
        let hash = arktos_crds::sharding::fnv1a64(tenant.as_bytes());
        &self.stripes[(hash % STRIPES as u64) as usize]
    }

    /// Charges `charge` under `key` unless that would exceed `limits`; a
    /// dry run only checks. A key already charged (a retried admission) is
    /// not charged twice.
    pub async fn charge(
        &self,
        tenant: &str,
        limits: &Usage,
        key: &str,
        charge: Charge,
        dry_run: bool,
    ) -> Result<(), ChargeError> {
        let _queued = self.stripe(tenant).lock().await;
        for attempt in 0..MAX_ATTEMPTS {
            let current = self.api.get_opt(tenant).await?;
            let spec = current.as_ref().map(|l| l.spec.clone()).unwrap_or_default();
            if spec.charges.contains_key(key) {
                return Ok(());
            }
            let over = excess(limits, &totals(&spec), &charge);
            if !over.is_empty() {
                return Err(ChargeError::Exceeded(over));
            }
            if dry_run {
                return Ok(());
            }
            let written = match &current {
                None => {
                    let ledger = new_ledger(
                        tenant,
                        QuotaLedgerSpec {
                            charges: [(key.to_string(), charge.clone())].into(),
                        },
                    );
                    self.api
                        .create(&PostParams::default(), &ledger)
                        .await
                        .map(|_| ())
                }
                Some(ledger) => {
                    let patch = json!({
                        "metadata": {"resourceVersion": ledger.resource_version()},
                        "spec": {"charges": {key: charge}},
                    });
                    self.api
                        .patch(tenant, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                        .map(|_| ())
                }
            };
            match written {
                Ok(()) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    // Another replica wrote first: read again and re-check.
                    tokio::time::sleep(Duration::from_millis(1 + (attempt as u64 % 5))).await;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Err(ChargeError::Contended(tenant.to_string()))
    }

    /// Brings the tenant's ledger in line with what is stored and returns
    /// the usage it then records. Without a quota there is no ledger.
    pub async fn settle(
        &self,
        tenant: &TenantName,
        hard: &BTreeMap<String, Quantity>,
        departures: &Departures,
    ) -> Result<Usage, kube::Error> {
        let name = tenant.as_str();
        if hard.is_empty() {
            if self.api.get_opt(name).await?.is_some() {
                self.api.delete(name, &Default::default()).await?;
            }
            return Ok(Usage::new());
        }
        let limits = limits(hard);
        // Read the ledger first: a charge written after this read is either
        // for an object the lists below already see, or stays pending.
        let current = self.api.get_opt(name).await?;
        let stored = self.stored_charges(tenant, &limits).await?;
        let spec = current.as_ref().map(|l| l.spec.clone()).unwrap_or_default();
        let wanted = settled(
            &spec,
            stored,
            |key| departures.departed(key),
            Timestamp::now(),
        );
        if wanted != spec {
            match &current {
                None => {
                    let ledger = new_ledger(name, wanted.clone());
                    self.api.create(&PostParams::default(), &ledger).await?;
                }
                Some(ledger) => {
                    let mut charges = serde_json::Map::new();
                    for key in spec
                        .charges
                        .keys()
                        .filter(|k| !wanted.charges.contains_key(*k))
                    {
                        charges.insert(key.clone(), Value::Null);
                    }
                    for (key, charge) in &wanted.charges {
                        match spec.charges.get(key) {
                            Some(before) if before == charge => {}
                            before => {
                                charges.insert(key.clone(), merge_patch(before, charge));
                            }
                        }
                    }
                    let patch = json!({
                        "metadata": {"resourceVersion": ledger.resource_version()},
                        "spec": {"charges": charges},
                    });
                    self.api
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
            }
        }
        Ok(totals(&wanted))
    }

    /// A confirmed charge for every stored object of the tenant that the
    /// quota counts.
    async fn stored_charges(
        &self,
        tenant: &TenantName,
        limits: &Usage,
    ) -> Result<BTreeMap<String, Charge>, kube::Error> {
        let prefix = tenant.storage_prefix();
        let selector = format!("{TENANT_LABEL}={}", tenant.as_str());
        let mut charges = BTreeMap::new();
        for resource in usage::counted_for(limits.keys()) {
            let gvk = GroupVersionKind::gvk(resource.group, resource.version, resource.kind);
            let api: Api<DynamicObject> = Api::all_with(
                self.client.clone(),
                &ApiResource::from_gvk_with_plural(&gvk, resource.plural),
            );
            let list = api.list(&ListParams::default().labels(&selector)).await?;
            for object in list.items {
                let home = if resource.namespaced {
                    object.namespace().unwrap_or_default()
                } else {
                    object.name_any()
                };
                if !home.starts_with(&prefix) {
                    continue;
                }
                let value = serde_json::to_value(&object).unwrap_or_default();
                let charge = charge_of(resource, &value, limits, false);
                if !charge.usage.is_empty() {
                    charges.insert(key_of(resource, &value), charge);
                }
            }
        }
        Ok(charges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(pods: &str, pending: Option<Timestamp>) -> Charge {
        Charge {
            object: "pods/acme--web/p".into(),
            usage: [("pods".to_string(), pods.to_string())].into(),
            pending_since: pending.map(Time),
        }
    }

    #[test]
    fn a_charge_past_the_limit_names_the_key_and_amounts() {
        let limits = Usage::from([("pods".to_string(), 2000)]);
        let mut ledger = QuotaLedgerSpec::default();
        ledger.charges.insert("a".into(), charge("1", None));
        assert!(excess(&limits, &totals(&ledger), &charge("1", None)).is_empty());
        ledger.charges.insert("b".into(), charge("1", None));
        let over = excess(&limits, &totals(&ledger), &charge("1", None));
        assert_eq!(
            over,
            [QuotaExcess {
                key: "pods".into(),
                requested: "1".into(),
                used: "2".into(),
                limited: "2".into(),
            }]
        );
    }

    #[test]
    fn a_settled_charge_loses_what_it_no_longer_has() {
        let mut before = charge("1", Some(Timestamp::now()));
        before.usage.insert("requests.cpu".into(), "1".into());
        let patch = merge_patch(Some(&before), &charge("1", None));
        assert_eq!(patch["pendingSince"], Value::Null);
        assert_eq!(patch["usage"]["requests.cpu"], Value::Null);
        assert_eq!(patch["usage"]["pods"], "1");
    }

    #[test]
    fn settling_keeps_stored_objects_and_young_pending_charges_only() {
        let now = Timestamp::now();
        let old = now - k8s_openapi::jiff::SignedDuration::from_secs(60);
        let mut ledger = QuotaLedgerSpec::default();
        ledger.charges.insert("deleted".into(), charge("1", None));
        ledger
            .charges
            .insert("in-flight".into(), charge("1", Some(now)));
        ledger
            .charges
            .insert("failed".into(), charge("1", Some(old)));
        ledger
            .charges
            .insert("stored".into(), charge("1", Some(now)));
        ledger
            .charges
            .insert("came-and-went".into(), charge("1", Some(now)));
        let stored = BTreeMap::from([("stored".to_string(), charge("1", None))]);
        let settled = settled(&ledger, stored, |key| key == "came-and-went", now);
        let keys: Vec<&String> = settled.charges.keys().collect();
        assert_eq!(keys, ["in-flight", "stored"]);
        assert!(settled.charges["stored"].pending_since.is_none());
    }
}
