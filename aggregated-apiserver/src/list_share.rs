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
/// share (the whole ring until the members are first read).
pub fn follow(membership: Arc<Membership>) -> watch::Receiver<Range> {
    let (share, receiver) = watch::channel(Range::ALL);
    tokio::spawn(async move {
        loop {
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
            tokio::time::sleep(TICK).await;
        }
    });
    receiver
}
