//! Membership of a sharded controller: one coordination.k8s.io Lease per
//! instance, labelled with the controller's group, renewed while the
//! instance lives, carrying the range it claims (annotation). A Lease not
//! renewed within its duration is a dead instance.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::ring::Range;

pub const GROUP_LABEL: &str = "sharding.arktos.io/group";
const CLAIM_ANNOTATION: &str = "sharding.arktos.io/claim";

/// A name for this process among the instances when none is given:
/// the host's name (a pod's name) and the process ID.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

/// A live instance and the range it claims (works on, or is about to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub instance: String,
    pub claim: Option<Range>,
}

pub struct Membership {
    api: Api<Lease>,
    group: String,
    instance: String,
    duration: Duration,
}

impl Membership {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        group: &str,
        instance: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            group: group.to_string(),
            instance: instance.to_string(),
            duration,
        }
    }

    pub fn duration(&self) -> Duration {
        self.duration
    }

    pub fn instance(&self) -> &str {
        &self.instance
    }

    fn lease_name(&self) -> String {
        format!("{}-{}", self.group, self.instance)
    }

    /// Renews this instance's Lease with `claim` (creating it if need be).
    pub async fn renew(&self, claim: Option<Range>) -> Result<(), kube::Error> {
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {
                "name": self.lease_name(),
                "labels": {GROUP_LABEL: self.group},
                "annotations": {CLAIM_ANNOTATION: claim.map(|c| c.to_string()).unwrap_or_default()},
            },
            "spec": {
                "holderIdentity": self.instance,
                "leaseDurationSeconds": self.duration.as_secs(),
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        self.api
            .patch(
                &self.lease_name(),
                &PatchParams::apply("arktos-sharding").force(),
                &Patch::Apply(&lease),
            )
            .await?;
        Ok(())
    }

    /// The live instances of the group (this one included once renewed).
    pub async fn members(&self) -> Result<Vec<Member>, kube::Error> {
        let leases = self
            .api
            .list(&ListParams::default().labels(&format!("{GROUP_LABEL}={}", self.group)))
            .await?;
        let now = Timestamp::now();
        Ok(leases
            .items
            .into_iter()
            .filter_map(|lease| {
                let spec = lease.spec.as_ref()?;
                let renewed = spec.renew_time.as_ref()?.0;
                let duration = i64::from(spec.lease_duration_seconds?);
                let live = now.duration_since(renewed).as_secs() < duration;
                let claim = lease
                    .annotations()
                    .get(CLAIM_ANNOTATION)
                    .and_then(|c| Range::parse(c));
                live.then(|| Member {
                    instance: spec.holder_identity.clone().unwrap_or_default(),
                    claim,
                })
            })
            .collect())
    }

    /// Leaves the group at once (a clean stop), so the others rebalance
    /// without waiting for the Lease to expire.
    pub async fn leave(&self) {
        if let Err(err) = self
            .api
            .delete(&self.lease_name(), &DeleteParams::default())
            .await
        {
            tracing::debug!(error = %err, "cannot delete the shard lease");
        }
    }
}
