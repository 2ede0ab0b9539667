//! Whether a partition answers, as its probe last found. A kube-apiserver
//! that is gone refuses connections and the backend turns that into a 503
//! at once; one that hangs (stopped, out of memory, behind a dead link)
//! would hold every request of its tenants until their clients give up.
//! So while the probe finds a partition not answering, its tenants'
//! requests are refused at once, and those in flight when it is found so
//! are cut with the same 503. Watches that already stream are left alone:
//! a hung server sends nothing, a server that stops closes them.

use std::future::Future;

use arktos_crds::status;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use tokio::sync::watch;

/// One partition's health: `None` while it answers, else why it does not.
pub struct Health {
    partition: String,
    down: watch::Sender<Option<String>>,
}

impl Health {
    pub fn new(partition: &str) -> Self {
        Self {
            partition: partition.to_string(),
            down: watch::Sender::new(None),
        }
    }

    /// Records what the probe found: `None` answers, `Some(why)` does not.
    pub fn set(&self, down: Option<String>) {
        self.down.send_if_modified(|now| {
            let changed = *now != down;
            if changed {
                match &down {
                    Some(why) => {
                        tracing::warn!(partition = %self.partition, %why, "partition not answering: its requests are refused")
                    }
                    None => tracing::info!(partition = %self.partition, "partition answers again"),
                }
                *now = down;
            }
            changed
        });
    }

    /// Runs `work` unless the partition is down, and only while it is not.
    pub async fn while_up<T>(
        &self,
        work: impl Future<Output = Result<T, Status>>,
    ) -> Result<T, Status> {
        let mut down = self.down.subscribe();
        if let Some(why) = down.borrow_and_update().clone() {
            return Err(self.refusal(&why));
        }
        tokio::select! {
            done = work => done,
            why = down.wait_for(Option::is_some) => {
                let why = why.map(|w| w.clone().unwrap_or_default()).unwrap_or_default();
                Err(self.refusal(&why))
            }
        }
    }

    fn refusal(&self, why: &str) -> Status {
        status::partition_unavailable(
            &self.partition,
            &format!("its API server does not answer ({why})"),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn reason(result: Result<(), Status>) -> (u16, String) {
        let status = result.expect_err("refused");
        (
            status.code.unwrap_or_default() as u16,
            status.message.unwrap_or_default(),
        )
    }

    #[tokio::test]
    async fn a_partition_that_answers_serves() {
        let health = Health::new("p1");
        assert_eq!(
            health.while_up(async { Ok::<_, Status>(7) }).await.ok(),
            Some(7)
        );
    }

    #[tokio::test]
    async fn a_partition_found_down_refuses_at_once_and_names_itself() {
        let health = Health::new("p1");
        health.set(Some("no answer within 3 s".into()));
        let (code, message) = reason(health.while_up(std::future::pending()).await);
        assert_eq!(code, 503);
        assert!(
            message.contains("\"p1\"") && message.contains("no answer within 3 s"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_request_in_flight_when_the_partition_is_found_down_is_cut() {
        let health = std::sync::Arc::new(Health::new("p1"));
        let waiting = {
            let health = health.clone();
            tokio::spawn(async move {
                health
                    .while_up(std::future::pending::<Result<(), Status>>())
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        health.set(Some("/readyz: connection refused".into()));
        let cut = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        let (code, _) = reason(cut.expect("cut, not left waiting").expect("no panic"));
        assert_eq!(code, 503);
    }

    #[tokio::test]
    async fn a_partition_back_serves_again() {
        let health = Health::new("p1");
        health.set(Some("down".into()));
        health.set(None);
        assert!(health.while_up(async { Ok::<_, Status>(()) }).await.is_ok());
    }
}
