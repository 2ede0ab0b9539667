//! Each VM pod has one owner at a time: whoever holds its [`VmGuard`].
//! Only the holder writes the pod's records (its sandbox and containers)
//! and starts or stops following its consoles, so a lifecycle call, an
//! operation (restore, power, hot-plug) and the monitor never act on the
//! same VM at once, and no one can write a VM's record without holding it.
//! Everyone else reads the records as their owner last wrote them: CRI
//! lists and status never wait for a busy VM (a stop may take the whole
//! grace period).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as SyncMutex, RwLock as SyncRwLock};

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio::task::JoinHandle;
use tonic::Status;

use super::console::ConsoleLog;
use super::internal;
use super::records::{ContainerRecord, SandboxRecord, Store};

/// The records of every VM pod on the node, and who owns each pod.
pub(super) struct Vms {
    store: Store,
    /// Per sandbox, the lock whose guard makes its holder the owner.
    owners: SyncMutex<HashMap<String, Arc<Mutex<Held>>>>,
    /// The records as their owners last wrote them.
    written: SyncRwLock<Written>,
}

#[derive(Default)]
struct Written {
    sandboxes: HashMap<String, SandboxRecord>,
    containers: HashMap<String, ContainerRecord>,
}

/// What only a pod's owner touches besides its records: the tasks that
/// copy its containers' consoles into their CRI logs.
#[derive(Default)]
struct Held {
    consoles: HashMap<String, JoinHandle<()>>,
}

/// Ownership of one VM pod (sandbox) while held.
pub(super) struct VmGuard<'a> {
    vms: &'a Vms,
    sandbox_id: String,
    held: OwnedMutexGuard<Held>,
}

impl Vms {
    /// The records the store kept.
    pub fn open(store: Store) -> anyhow::Result<Self> {
        let (sandboxes, containers) = store.load()?;
        Ok(Self {
            store,
            owners: SyncMutex::default(),
            written: SyncRwLock::new(Written {
                sandboxes: sandboxes.into_iter().map(|s| (s.id.clone(), s)).collect(),
                containers: containers.into_iter().map(|c| (c.id.clone(), c)).collect(),
            }),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Written> {
        self.written.read().expect("VM records lock")
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Written> {
        self.written.write().expect("VM records lock")
    }

    pub fn sandbox(&self, id: &str) -> Option<SandboxRecord> {
        self.read().sandboxes.get(id).cloned()
    }

    pub fn container(&self, id: &str) -> Option<ContainerRecord> {
        self.read().containers.get(id).cloned()
    }

    pub fn known_sandbox(&self, id: &str) -> Result<SandboxRecord, Status> {
        self.sandbox(id).ok_or_else(|| sandbox_not_found(id))
    }

    pub fn known_container(&self, id: &str) -> Result<ContainerRecord, Status> {
        self.container(id).ok_or_else(|| container_not_found(id))
    }

    pub fn has_sandbox(&self, id: &str) -> bool {
        self.read().sandboxes.contains_key(id)
    }

    pub fn has_container(&self, id: &str) -> bool {
        self.read().containers.contains_key(id)
    }

    /// The sandboxes that `keep` selects, as last written.
    pub fn sandboxes<T>(&self, keep: impl FnMut(&SandboxRecord) -> Option<T>) -> Vec<T> {
        self.read().sandboxes.values().filter_map(keep).collect()
    }

    /// The containers that `keep` selects, as last written.
    pub fn containers<T>(&self, keep: impl FnMut(&ContainerRecord) -> Option<T>) -> Vec<T> {
        self.read().containers.values().filter_map(keep).collect()
    }

    fn owner(&self, sandbox_id: &str) -> Arc<Mutex<Held>> {
        self.owners
            .lock()
            .expect("VM owners lock")
            .entry(sandbox_id.to_string())
            .or_default()
            .clone()
    }

    /// Becomes the owner of sandbox `sandbox_id` (known or about to be),
    /// waiting for the one before.
    pub async fn hold(&self, sandbox_id: &str) -> VmGuard<'_> {
        VmGuard {
            vms: self,
            sandbox_id: sandbox_id.to_string(),
            held: self.owner(sandbox_id).lock_owned().await,
        }
    }

    /// The owner of sandbox `sandbox_id` if no one else is.
    pub fn try_hold(&self, sandbox_id: &str) -> Option<VmGuard<'_>> {
        Some(VmGuard {
            vms: self,
            sandbox_id: sandbox_id.to_string(),
            held: self.owner(sandbox_id).try_lock_owned().ok()?,
        })
    }

    /// The owner of container `id`'s pod, with the container's record as
    /// it is once held.
    pub async fn hold_container(&self, id: &str) -> Result<(VmGuard<'_>, ContainerRecord), Status> {
        let sandbox_id = self.known_container(id)?.sandbox_id;
        let vm = self.hold(&sandbox_id).await;
        let c = vm.container(id)?;
        Ok((vm, c))
    }
}

fn sandbox_not_found(id: &str) -> Status {
    Status::not_found(format!("VM pod sandbox {id} not found"))
}

fn container_not_found(id: &str) -> Status {
    Status::not_found(format!("VM container {id} not found"))
}

impl VmGuard<'_> {
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    pub fn sandbox(&self) -> Result<SandboxRecord, Status> {
        self.vms.known_sandbox(&self.sandbox_id)
    }

    /// Container `id` of this pod.
    pub fn container(&self, id: &str) -> Result<ContainerRecord, Status> {
        self.vms
            .container(id)
            .filter(|c| c.sandbox_id == self.sandbox_id)
            .ok_or_else(|| container_not_found(id))
    }

    /// This pod's containers.
    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.vms
            .containers(|c| (c.sandbox_id == self.sandbox_id).then(|| c.clone()))
    }

    pub async fn put_sandbox(&mut self, s: SandboxRecord) -> Result<(), Status> {
        assert_eq!(s.id, self.sandbox_id, "a pod's owner writes only its pod");
        self.vms
            .store
            .save_sandbox(&s)
            .await
            .map_err(|e| internal("saving sandbox record", e))?;
        self.vms.write().sandboxes.insert(s.id.clone(), s);
        Ok(())
    }

    pub async fn put_container(&mut self, c: ContainerRecord) -> Result<(), Status> {
        assert_eq!(
            c.sandbox_id, self.sandbox_id,
            "a pod's owner writes only its pod"
        );
        self.vms
            .store
            .save_container(&c)
            .await
            .map_err(|e| internal("saving container record", e))?;
        self.vms.write().containers.insert(c.id.clone(), c);
        Ok(())
    }

    /// Forgets container `id` (its files are the caller's).
    pub async fn forget_container(&mut self, id: &str) -> Result<(), Status> {
        self.container(id)?;
        self.vms
            .store
            .delete_container(id)
            .await
            .map_err(|e| internal("deleting container record", e))?;
        self.vms.write().containers.remove(id);
        Ok(())
    }

    /// Forgets the pod once its containers are forgotten.
    pub async fn forget_sandbox(self) -> Result<(), Status> {
        self.vms
            .store
            .delete_sandbox(&self.sandbox_id)
            .await
            .map_err(|e| internal("deleting sandbox record", e))?;
        self.vms.write().sandboxes.remove(&self.sandbox_id);
        self.vms
            .owners
            .lock()
            .expect("VM owners lock")
            .remove(&self.sandbox_id);
        Ok(())
    }

    /// Copies container `c`'s console into its CRI log from now on.
    pub fn follow_console(&mut self, c: &ContainerRecord) {
        if c.log_path.is_empty() {
            return;
        }
        let follower = console_of(c).follow();
        if let Some(old) = self.held.consoles.insert(c.id.clone(), follower) {
            old.abort();
        }
    }

    /// Stops following container `c`'s console, after copying what the
    /// guest printed last.
    pub async fn leave_console(&mut self, c: &ContainerRecord) {
        let Some(follower) = self.held.consoles.remove(&c.id) else {
            return;
        };
        follower.abort();
        let mut offset = tokio::fs::read_to_string(c.dir.join("console.offset"))
            .await
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        let _ = console_of(c).pump(&mut offset, &mut Vec::new()).await;
    }
}

fn console_of(c: &ContainerRecord) -> ConsoleLog {
    ConsoleLog {
        raw: c.dir.join("console.raw"),
        log: c.log_path.clone().into(),
    }
}
