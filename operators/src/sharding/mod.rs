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
pub mod membership;
pub mod ring;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use kube::runtime::watcher;

use crate::metrics::Metrics;
use membership::Membership;
use ring::Range;

/// How an instance asks the API server for its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Probe the server: `shardSelector` where it is honoured, else labels.
    Auto,
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
            _ => config,
        }
    }

    /// A client whose lists and watches of `collection` (a path such as
    /// `/apis/tenancy.arktos.io/v1alpha1/tenants`) carry the range's
    /// `shardSelector` (kube-rs has no such parameter yet).
    pub fn client(&self, config: &kube::Config, collection: &str) -> anyhow::Result<kube::Client> {
        let builder = kube::client::ClientBuilder::try_from(config.clone())?;
        Ok(match self.mode {
            Mode::Labels => builder.build(),
            _ => builder
                .with_layer(&layer::ShardSelectorLayer::new(
                    collection,
                    &self.range.server_selector(),
                ))
                .build(),
        })
    }
}

/// Whether the server honours `shardSelector` on `collection`. Built-in
/// resources echo the selector as `metadata.shardInfo`; custom resources
/// filter without saying so, so ask for a sliver of the hash space too: a
/// server that honours it answers with (almost surely) nothing there, while
/// the collection is not empty.
pub async fn probe(client: &kube::Client, collection: &str) -> Mode {
    let list = |selector: Option<&str>| {
        let path = match selector {
            Some(s) => format!("{collection}?limit=1&shardSelector={}", layer::encode(s)),
            None => format!("{collection}?limit=1"),
        };
        let request = http::Request::get(path)
            .body(Vec::new())
            .expect("a valid request");
        client.request::<serde_json::Value>(request)
    };
    let items = |list: &serde_json::Value| list["items"].as_array().map_or(0, Vec::len);
    let sliver = Range { start: 0, end: 1 }.server_selector();
    match (list(None).await, list(Some(&sliver)).await) {
        (_, Ok(narrowed)) if narrowed.pointer("/metadata/shardInfo").is_some() => Mode::Server,
        (Ok(all), Ok(narrowed)) if items(&all) > 0 && items(&narrowed) == 0 => Mode::Server,
        (Ok(_), Ok(_)) => Mode::Labels,
        (Err(err), _) | (_, Err(err)) => {
            tracing::warn!(error = %err, "probing for sharded list and watch; using labels");
            Mode::Labels
        }
    }
}

/// Resolves when a controller must stop (the sender is dropped or fires).
pub type Stop = tokio::sync::oneshot::Receiver<()>;

/// Runs a controller sharded: `start(shard, stop)` must run the
/// controller on `shard` until `stop` resolves, then finish its in-flight
/// reconciles and return.
pub async fn run<S>(membership: Arc<Membership>, mode: Mode, metrics: Arc<Metrics>, start: S)
where
    S: Fn(Shard, Stop) -> BoxFuture<'static, ()>,
{
    let tick = Duration::from_secs(1);
    let duration = membership.duration();
    let mut running: Option<(
        Range,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )> = None;
    let mut claim: Option<Range> = None;
    let mut renewed = Instant::now();
    loop {
        match membership.renew(claim).await {
            Ok(()) => renewed = Instant::now(),
            Err(err) => tracing::warn!(error = %err, "cannot renew the shard lease"),
        }
        // Out of touch for two thirds of the lease: stop before others may
        // take over.
        if renewed.elapsed() > duration * 2 / 3 {
            stop(&mut running, &metrics).await;
            claim = None;
        }
        let members = match membership.members().await {
            Ok(members) => members,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the shard leases");
                tokio::time::sleep(tick).await;
                continue;
            }
        };
        let names: Vec<String> = members.iter().map(|m| m.instance.clone()).collect();
        let wanted = ring::share_of(&names, membership.instance());
        if running.as_ref().map(|(r, _, _)| *r) != wanted {
            stop(&mut running, &metrics).await;
            if claim != wanted {
                claim = wanted;
                if let Err(err) = membership.renew(claim).await {
                    tracing::warn!(error = %err, "cannot publish the shard claim");
                }
                // Check after publishing: see the module docs.
                tokio::time::sleep(tick).await;
                continue;
            }
            if let Some(range) = wanted {
                let contested = members.iter().any(|m| {
                    m.instance != membership.instance()
                        && m.claim.is_some_and(|c| c.intersects(&range))
                });
                if contested {
                    tracing::info!(%range, "waiting for the previous owner to hand over");
                } else {
                    tracing::info!(%range, share = range.fraction(), members = names.len(), "starting on my range");
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    let work = start(Shard { range, mode }, rx);
                    running = Some((range, tx, tokio::spawn(work)));
                    metrics.shard_owned(range.fraction());
                }
            }
        }
        tokio::time::sleep(tick).await;
    }
}

async fn stop(
    running: &mut Option<(
        Range,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    )>,
    metrics: &Metrics,
) {
    if let Some((range, tx, work)) = running.take() {
        let started = Instant::now();
        let _ = tx.send(());
        let _ = work.await;
        metrics.shard_handed_over(started.elapsed());
        metrics.shard_owned(0.0);
        tracing::info!(%range, took_ms = started.elapsed().as_millis() as u64, "handed over my range");
    }
}
