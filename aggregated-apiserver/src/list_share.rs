//! Which tenants' list copies this replica keeps: its share of the one
//! sharding ring (`arktos_crds::sharding`), among the live replicas, each
//! holding a Lease (group `arktos-apiserver-lists`) as the sharded
//! operators do.
//!
//! Unlike a controller's, a list copy never decides anything: every list
//! is still decided by kube-apiserver, and a tenant outside the copies'
//! share is listed the ordinary way. So replicas need no hand-over
//! protocol: two replicas briefly copying the same tenants, or none
//! copying some, costs time, never correctness. A replica that cannot read
//! the Leases keeps its share.

use std::sync::Arc;
use std::time::Duration;

use arktos_crds::sharding::membership::Membership;
use arktos_crds::sharding::ring::{self, Range};
use tokio::sync::watch;

/// The Lease group of arktos-apiserver replicas.
pub const GROUP: &str = "arktos-apiserver-lists";

/// How often the Lease is renewed and the members read.
const TICK: Duration = Duration::from_secs(1);

/// Starts following the membership; the receiver holds this replica's
/// share. The first share is read before this returns (the whole ring if
/// the Leases cannot be read), so a new replica never copies more than
/// its share first.
pub async fn follow(membership: Arc<Membership>) -> watch::Receiver<Range> {
    let (share, receiver) = watch::channel(Range::ALL);
    tick(&membership, &share).await;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(TICK).await;
            tick(&membership, &share).await;
        }
    });
    receiver
}

/// Renews this replica's Lease, reads the members and publishes the share
/// if it changed.
async fn tick(membership: &Membership, share: &watch::Sender<Range>) {
    let current = *share.borrow();
    if let Err(err) = membership.renew(Some(current)).await {
        tracing::warn!(error = %err, "cannot renew the list share lease");
    }
    match membership.members().await {
        Ok(members) => {
            let names: Vec<String> = members.into_iter().map(|m| m.instance).collect();
            if let Some(mine) = ring::share_of(&names, membership.instance()) {
                share.send_if_modified(|current| {
                    let changed = *current != mine;
                    if changed {
                        tracing::info!(share = %mine, fraction = mine.fraction(), replicas = names.len(), "list copies: new share");
                        *current = mine;
                    }
                    changed
                });
            }
        }
        Err(err) => tracing::warn!(error = %err, "cannot read the list share leases"),
    }
}
