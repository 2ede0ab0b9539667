//! Port layout of a local cluster: a base port and fixed offsets, so two
//! clusters with different bases never collide.

use std::net::TcpListener;

use crate::{Error, Result};

/// Ports a cluster reserves above its base; offsets 6 and up belong to the
/// Arktos components started beside the control plane: 6 arktos-apiserver,
/// 7 a second replica (tests), 8 the tenant gateway.
pub const RESERVED: u16 = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Ports {
    pub base: u16,
}

impl Ports {
    pub fn new(base: u16) -> Self {
        Self { base }
    }

    pub fn apiserver(&self) -> u16 {
        self.base
    }
    pub fn etcd_client(&self) -> u16 {
        self.base + 1
    }
    pub fn etcd_peer(&self) -> u16 {
        self.base + 2
    }
    pub fn controller_manager(&self) -> u16 {
        self.base + 3
    }
    pub fn scheduler(&self) -> u16 {
        self.base + 4
    }
    pub fn kwok(&self) -> u16 {
        self.base + 5
    }
    /// The n-th port left for Arktos components (0-based).
    pub fn component(&self, n: u16) -> u16 {
        assert!(
            6 + n < RESERVED,
            "port offset {n} outside the reserved range"
        );
        self.base + 6 + n
    }

    fn named(&self) -> [(u16, &'static str); 6] {
        [
            (self.apiserver(), "kube-apiserver"),
            (self.etcd_client(), "etcd client"),
            (self.etcd_peer(), "etcd peer"),
            (self.controller_manager(), "kube-controller-manager"),
            (self.scheduler(), "kube-scheduler"),
            (self.kwok(), "kwok"),
        ]
    }

    /// Fails naming the first port that something already listens on.
    pub fn check_free(&self) -> Result<()> {
        for (port, what) in self.named() {
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                return Err(Error::PortInUse { port, what });
            }
        }
        Ok(())
    }

    /// A base whose whole range is free, searched from a start that differs
    /// per process and per call, so parallel test runs, and clusters started
    /// at once by one process, rarely reach for the same range.
    pub fn find_free() -> Result<Self> {
        static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let slots = (30000 - 20000) / RESERVED;
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let first = ((std::process::id() as u16 % slots) + call.wrapping_mul(7)) % slots;
        (0..slots)
            .map(|i| Self::new(20000 + ((first + i) % slots) * RESERVED))
            .find(|ports| {
                (0..RESERVED)
                    .all(|offset| TcpListener::bind(("127.0.0.1", ports.base + offset)).is_ok())
            })
            .ok_or_else(|| Error::Other("no free range of ports between 20000 and 30000".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_with_different_bases_do_not_overlap() {
        let a = Ports::new(6443);
        let b = Ports::new(6443 + RESERVED);
        let a_ports: Vec<u16> = a.named().iter().map(|(p, _)| *p).collect();
        assert!(b.named().iter().all(|(p, _)| !a_ports.contains(p)));
        assert_eq!(a.component(RESERVED - 7), 6443 + RESERVED - 1);
    }

    #[test]
    fn calls_in_one_process_get_different_ranges() {
        assert_ne!(Ports::find_free().unwrap(), Ports::find_free().unwrap());
    }

    #[test]
    fn a_port_in_use_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = Ports::new(port).check_free().unwrap_err();
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }
}
