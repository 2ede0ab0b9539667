//! Sharded, active-active controllers. Every instance of a controller holds
//! a Lease; the live instances split the 64-bit hash space of object keys
//! equally ([`ring`]); each instance list-watches only its range, filtered
//! by the API server (`shardSelector`, or a bucket label where the server
//! lacks sharded watches).
//!
//! Hand-over never lets two instances work on one range: an instance whose
//! range changes first stops its controller and lets in-flight reconciles
//! finish, then publishes its new claim in its Lease, re-reads every Lease
//! and starts only when no live instance claims an overlapping range. Since
//! each instance publishes before it checks, two instances with
//! overlapping claims cannot both see the other's claim absent. An instance
//! that cannot renew its Lease stops working before the Lease expires.

mod layer;
pub mod log;

pub use arktos_crds::sharding::{membership, ring};

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use kube::runtime::watcher;

use crate::metrics::Metrics;
use membership::{Member, Membership};
use ring::Range;

/// How an instance asks the API server for its range (`--sharding`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Server-side sharded list and watch (`shardSelector`).
    Server,
    /// The bucket label and a set-based label selector.
    Labels,
}

/// The range an instance works on, and how to ask for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    pub range: Range,
    pub mode: Mode,
}

impl Shard {
    /// The watcher configuration of the sharded resource.
    pub fn narrow(&self, config: watcher::Config) -> watcher::Config {
        match (self.mode, self.range.label_selector()) {
            (Mode::Labels, Some(selector)) => config.labels(&selector),
            (Mode::Labels, None) => {
                config.labels(&format!("{}=none", arktos_crds::sharding::BUCKET_LABEL))
            }
            (Mode::Server, _) => config,
        }
    }

    /// The watcher configuration of objects that belong to the sharded
    /// resource's objects (a tenant's namespaces, what the controller wrote
    /// for it), selected by `labels`: narrowed to the range by the tenant's
    /// bucket label, which admission and the controller stamp on them. A
    /// server-side range hashes each object's own UID, which says nothing
    /// of its tenant, so with [`Mode::Server`] these watches stay whole.
    pub fn owned(&self, labels: &str) -> watcher::Config {
        let config = watcher::Config::default().labels(labels);
        match self.mode {
            Mode::Labels => {
                let buckets = self
                    .range
                    .label_selector()
                    .unwrap_or_else(|| format!("{}=none", arktos_crds::sharding::BUCKET_LABEL));
                config.labels(&format!("{labels},{buckets}"))
            }
            Mode::Server => config,
        }
    }

    /// A client whose lists and watches of `collection` (a path such as
    /// `/apis/tenancy.arktos.io/v1alpha1/tenants`) carry the range's
    /// `shardSelector` (kube-rs has no such parameter yet).
    pub fn client(&self, config: &kube::Config, collection: &str) -> anyhow::Result<kube::Client> {
        let builder = kube::client::ClientBuilder::try_from(config.clone())?;
        Ok(match self.mode {
            Mode::Labels => builder.build(),
            Mode::Server => builder
                .with_layer(&layer::ShardSelectorLayer::new(
                    collection,
                    &self.range.server_selector(),
                ))
                .build(),
        })
    }
}

/// Resolves when a controller must stop (the sender is dropped or fires).
pub type Stop = tokio::sync::oneshot::Receiver<()>;

/// A controller running on one piece of this instance's range.
struct Piece {
    range: Range,
    stop: tokio::sync::oneshot::Sender<()>,
    work: tokio::task::JoinHandle<()>,
}

/// The parts of `wanted` that no piece in `kept` (all inside `wanted`)
/// covers, in order.
fn gaps(wanted: Range, kept: &[Range]) -> Vec<Range> {
    let mut kept = kept.to_vec();
    kept.sort_by_key(|r| r.start);
    let mut gaps = Vec::new();
    let mut at = wanted.start;
    for range in kept {
        if range.start > at {
            gaps.push(Range {
                start: at,
                end: range.start,
            });
        }
        at = at.max(range.end);
    }
    if at < wanted.end {
        gaps.push(Range {
            start: at,
            end: wanted.end,
        });
    }
    gaps
}

/// Runs a controller sharded: `start(shard, stop)` must run the
/// controller on `shard` until `stop` resolves, then finish its in-flight
/// reconciles and return. When this instance's range grows (another
/// instance left), the new part gets a controller of its own and the old
/// part keeps running untouched; a piece that no longer fits is stopped
/// and drained before the new claim is published.
pub async fn run<S>(membership: Arc<Membership>, mode: Mode, metrics: Arc<Metrics>, start: S)
where
    S: Fn(Shard, Stop) -> BoxFuture<'static, ()>,
{
    // Leases are renewed every second; membership is checked twice as often,
    // so a lapsed Lease is noticed within half a second.
    let tick = Duration::from_millis(500);
    let renew_every = Duration::from_secs(1);
    let duration = membership.duration();
    // Held across each Lease write, so a renewal never republishes a claim
    // that was just replaced.
    let claim: Arc<tokio::sync::Mutex<Option<Range>>> = Arc::default();
    let renewed = Arc::new(std::sync::Mutex::new(Instant::now()));
    // Renewal runs on its own, so that a long drain never lets the Lease lapse.
    let renewing = spawn_renewal(
        membership.clone(),
        claim.clone(),
        renewed.clone(),
        renew_every,
    );
    let mut pieces: Vec<Piece> = Vec::new();
    let mut last_seen: Vec<String> = Vec::new();
    loop {
        let last_renewal = *renewed.lock().unwrap_or_else(|e| e.into_inner());
        // Out of touch for two thirds of the lease: stop before others may
        // take over.
        if last_renewal.elapsed() > duration * 2 / 3 {
            for piece in pieces.drain(..) {
                stop(piece, &metrics).await;
            }
            *claim.lock().await = None;
            tokio::time::sleep(tick).await;
            continue;
        }
        let mut members = match membership.members().await {
            Ok(members) => members,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the shard leases");
                tokio::time::sleep(tick).await;
                continue;
            }
        };
        let mut names: Vec<String> = members.iter().map(|m| m.instance.clone()).collect();
        names.sort();
        // Idle (just started, or everything handed over): start only on a
        // membership seen twice in a row, so instances starting together
        // do not each take the whole space and hand most of it back.
        let settled = names == last_seen;
        last_seen = names.clone();
        if pieces.is_empty() && !settled {
            tokio::time::sleep(tick).await;
            continue;
        }
        let wanted = ring::share_of(&names, membership.instance());
        stop_misfits(&mut pieces, wanted, &metrics).await;
        // Check members only after publishing a changed claim: see the
        // module docs.
        match publish(&membership, &claim, wanted).await {
            Ok(Some(after)) => members = after,
            Ok(None) => {}
            Err(()) => {
                tokio::time::sleep(tick).await;
                continue;
            }
        }
        if let Some(wanted) = wanted {
            start_gaps(&membership, &members, wanted, mode, &start, &mut pieces);
        }
        let owned: f64 = pieces.iter().map(|p| p.range.fraction()).sum();
        metrics.shard_owned(owned);
        tokio::time::sleep(tick).await;
        if renewing.is_finished() {
            return;
        }
    }
}

/// Stops (and drains) the pieces that no longer fit in `wanted`.
async fn stop_misfits(pieces: &mut Vec<Piece>, wanted: Option<Range>, metrics: &Metrics) {
    let (keep, misfits): (Vec<Piece>, Vec<Piece>) = std::mem::take(pieces)
        .into_iter()
        .partition(|p| wanted.is_some_and(|w| w.start <= p.range.start && p.range.end <= w.end));
    for piece in misfits {
        stop(piece, metrics).await;
    }
    *pieces = keep;
}

/// Publishes `wanted` as this instance's claim if it changed; then the
/// members as they are after it (`None`: unchanged, nothing written).
async fn publish(
    membership: &Membership,
    claim: &tokio::sync::Mutex<Option<Range>>,
    wanted: Option<Range>,
) -> Result<Option<Vec<Member>>, ()> {
    let mut published = claim.lock().await;
    if *published == wanted {
        return Ok(None);
    }
    *published = wanted;
    let written = membership.renew(wanted).await;
    drop(published);
    if let Err(err) = written {
        tracing::warn!(error = %err, "cannot publish the shard claim");
        return Err(());
    }
    membership.members().await.map(Some).map_err(|_| ())
}

/// Keeps this instance's Lease renewed with the current claim.
fn spawn_renewal(
    membership: Arc<Membership>,
    claim: Arc<tokio::sync::Mutex<Option<Range>>>,
    renewed: Arc<std::sync::Mutex<Instant>>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let current = claim.lock().await;
            // The Lease says when the request was made, not when it
            // landed: judge our own freshness the way others will.
            let sent = Instant::now();
            match membership.renew(*current).await {
                Ok(()) => *renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent,
                Err(err) => tracing::warn!(error = %err, "cannot renew the shard lease"),
            }
            drop(current);
            tokio::time::sleep(every).await;
        }
    })
}

/// Starts a controller piece on each part of `wanted` that no piece runs
/// on yet and that no other member still claims.
fn start_gaps<S>(
    membership: &Membership,
    members: &[Member],
    wanted: Range,
    mode: Mode,
    start: &S,
    pieces: &mut Vec<Piece>,
) where
    S: Fn(Shard, Stop) -> BoxFuture<'static, ()>,
{
    let kept: Vec<Range> = pieces.iter().map(|p| p.range).collect();
    for gap in gaps(wanted, &kept) {
        let contested = members.iter().any(|m| {
            m.instance != membership.instance() && m.claim.is_some_and(|c| c.intersects(&gap))
        });
        if contested {
            tracing::info!(range = %gap, "waiting for the previous owner to hand over");
            continue;
        }
        tracing::info!(range = %gap, share = wanted.fraction(), members = members.len(), "starting on a range");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let work = start(Shard { range: gap, mode }, rx);
        pieces.push(Piece {
            range: gap,
            stop: tx,
            work: tokio::spawn(work),
        });
    }
}

async fn stop(piece: Piece, metrics: &Metrics) {
    let started = Instant::now();
    let _ = piece.stop.send(());
    let _ = piece.work.await;
    metrics.shard_handed_over(started.elapsed());
    tracing::info!(range = %piece.range, took_ms = started.elapsed().as_millis() as u64, "stopped and drained a range");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_what_the_kept_pieces_leave() {
        let r = |start, end| Range { start, end };
        assert_eq!(gaps(r(0, 100), &[]), [r(0, 100)]);
        assert_eq!(gaps(r(0, 100), &[r(0, 50)]), [r(50, 100)]);
        assert_eq!(
            gaps(r(0, 100), &[r(60, 70), r(10, 20)]),
            [r(0, 10), r(20, 60), r(70, 100)]
        );
        assert!(gaps(r(0, 100), &[r(0, 100)]).is_empty());
    }
}
