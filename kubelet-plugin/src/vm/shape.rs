//! What a VM gets from its container's CRI resources: vCPUs and memory now,
//! and the ceilings it may grow to live.

use std::collections::HashMap;

use k8s_cri::v1::LinuxContainerResources;
use serde::{Deserialize, Serialize};

const MIB: i64 = 1024 * 1024;
/// Pod annotation raising a VM's ceiling for live vCPU growth.
pub const MAX_VCPUS_ANNOTATION: &str = arktos_crds::vm::annotations::MAX_VCPUS;
/// Pod annotation raising a VM's ceiling for live memory growth (MiB).
pub const MAX_MEMORY_ANNOTATION: &str = arktos_crds::vm::annotations::MAX_MEMORY_MIB;

/// The node's defaults and bounds for VM sizes.
#[derive(Clone, Debug)]
pub struct SizePolicy {
    /// Memory when the container sets no memory limit.
    pub default_memory_mib: u64,
    /// Below this the test guest (and most cloud images) cannot boot.
    pub min_memory_mib: u64,
    /// Default ceiling for live vCPU growth.
    pub max_vcpus: u32,
    /// Default ceiling for live memory growth.
    pub max_memory_mib: u64,
}

impl Default for SizePolicy {
    fn default() -> Self {
        Self {
            default_memory_mib: 256,
            min_memory_mib: 128,
            max_vcpus: 4,
            max_memory_mib: 1024,
        }
    }
}

/// vCPUs and memory of a VM, current and maximum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmShape {
    pub vcpus: u32,
    pub max_vcpus: u32,
    pub memory_mib: u64,
    pub max_memory_mib: u64,
}

/// How much a CRI resource request asks for, before bounds are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wanted {
    pub vcpus: u32,
    pub memory_mib: u64,
}

impl Wanted {
    /// CPU from the CFS quota (the pod's limit) when set, else from the
    /// shares (its request); memory from the limit, else the node default.
    pub fn from_resources(
        resources: Option<&LinuxContainerResources>,
        policy: &SizePolicy,
    ) -> Self {
        let Some(r) = resources else {
            return Self {
                vcpus: 1,
                memory_mib: policy.default_memory_mib,
            };
        };
        let vcpus = if r.cpu_quota > 0 && r.cpu_period > 0 {
            ceil_div(r.cpu_quota, r.cpu_period)
        } else if r.cpu_shares > 2 {
            // The kubelet maps 1 CPU of request to 1024 shares; 2 is its
            // floor for "no request".
            ceil_div(r.cpu_shares, 1024)
        } else {
            1
        };
        let memory_mib = if r.memory_limit_in_bytes > 0 {
            ceil_div(r.memory_limit_in_bytes, MIB) as u64
        } else {
            policy.default_memory_mib
        };
        Self {
            vcpus: vcpus.max(1) as u32,
            memory_mib,
        }
    }
}

fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// Why a size cannot be given to a VM.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShapeError {
    #[error("memory {asked}Mi is below the guest's minimum of {min}Mi")]
    BelowMinimum { asked: u64, min: u64 },
    #[error(
        "{what} {asked} is above the VM's maximum of {max} (set at creation; raise it with the pod annotation {annotation})"
    )]
    AboveMaximum {
        what: &'static str,
        asked: u64,
        max: u64,
        annotation: &'static str,
    },
    #[error("annotation {0} must be a positive integer")]
    BadAnnotation(&'static str),
}

impl VmShape {
    /// The shape of a new VM: what is wanted now, and ceilings from the pod's
    /// annotations or the node's policy, never below what is wanted.
    pub fn new(
        wanted: Wanted,
        annotations: &HashMap<String, String>,
        policy: &SizePolicy,
    ) -> Result<Self, ShapeError> {
        if wanted.memory_mib < policy.min_memory_mib {
            return Err(ShapeError::BelowMinimum {
                asked: wanted.memory_mib,
                min: policy.min_memory_mib,
            });
        }
        let max_vcpus = annotation_number(annotations, MAX_VCPUS_ANNOTATION)?
            .map_or(policy.max_vcpus, |n| n as u32);
        let max_memory_mib =
            annotation_number(annotations, MAX_MEMORY_ANNOTATION)?.unwrap_or(policy.max_memory_mib);
        Ok(Self {
            vcpus: wanted.vcpus,
            max_vcpus: max_vcpus.max(wanted.vcpus),
            memory_mib: wanted.memory_mib,
            max_memory_mib: max_memory_mib.max(wanted.memory_mib),
        })
    }

    /// The same VM resized live; the ceilings are fixed at creation.
    pub fn resized(&self, wanted: Wanted, policy: &SizePolicy) -> Result<Self, ShapeError> {
        if wanted.memory_mib < policy.min_memory_mib {
            return Err(ShapeError::BelowMinimum {
                asked: wanted.memory_mib,
                min: policy.min_memory_mib,
            });
        }
        if wanted.vcpus > self.max_vcpus {
            return Err(ShapeError::AboveMaximum {
                what: "vCPUs",
                asked: wanted.vcpus.into(),
                max: self.max_vcpus.into(),
                annotation: MAX_VCPUS_ANNOTATION,
            });
        }
        if wanted.memory_mib > self.max_memory_mib {
            return Err(ShapeError::AboveMaximum {
                what: "memory (MiB)",
                asked: wanted.memory_mib,
                max: self.max_memory_mib,
                annotation: MAX_MEMORY_ANNOTATION,
            });
        }
        Ok(Self {
            vcpus: wanted.vcpus,
            memory_mib: wanted.memory_mib,
            ..*self
        })
    }

    /// The CRI view of what the VM has: quota/period for its vCPUs, its
    /// memory as the limit.
    pub fn as_resources(&self) -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: i64::from(self.vcpus) * 100_000,
            cpu_shares: i64::from(self.vcpus) * 1024,
            memory_limit_in_bytes: self.memory_mib as i64 * MIB,
            ..Default::default()
        }
    }
}

fn annotation_number(
    annotations: &HashMap<String, String>,
    key: &'static str,
) -> Result<Option<u64>, ShapeError> {
    match annotations.get(key) {
        None => Ok(None),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(ShapeError::BadAnnotation(key)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(quota: i64, shares: i64, memory_mib: i64) -> LinuxContainerResources {
        LinuxContainerResources {
            cpu_period: if quota > 0 { 100_000 } else { 0 },
            cpu_quota: quota,
            cpu_shares: shares,
            memory_limit_in_bytes: memory_mib * MIB,
            ..Default::default()
        }
    }

    #[test]
    fn quota_wins_over_shares_and_rounds_up() {
        let p = SizePolicy::default();
        let w = Wanted::from_resources(Some(&res(150_000, 1024, 512)), &p);
        assert_eq!(
            w,
            Wanted {
                vcpus: 2,
                memory_mib: 512
            }
        );
        let w = Wanted::from_resources(Some(&res(0, 2048, 0)), &p);
        assert_eq!(
            w,
            Wanted {
                vcpus: 2,
                memory_mib: 256
            }
        );
        let w = Wanted::from_resources(Some(&res(0, 2, 0)), &p);
        assert_eq!(w.vcpus, 1);
        assert_eq!(Wanted::from_resources(None, &p).vcpus, 1);
    }

    #[test]
    fn ceilings_come_from_annotations_or_policy_and_never_below_wanted() {
        let p = SizePolicy::default();
        let wanted = Wanted {
            vcpus: 6,
            memory_mib: 256,
        };
        let shape = VmShape::new(wanted, &HashMap::new(), &p).unwrap();
        assert_eq!((shape.max_vcpus, shape.max_memory_mib), (6, 1024));
        let ann = HashMap::from([(MAX_MEMORY_ANNOTATION.to_string(), "2048".to_string())]);
        assert_eq!(VmShape::new(wanted, &ann, &p).unwrap().max_memory_mib, 2048);
        let bad = HashMap::from([(MAX_VCPUS_ANNOTATION.to_string(), "lots".to_string())]);
        assert_eq!(
            VmShape::new(wanted, &bad, &p),
            Err(ShapeError::BadAnnotation(MAX_VCPUS_ANNOTATION))
        );
    }

    #[test]
    fn too_little_memory_is_refused_with_the_minimum() {
        let p = SizePolicy::default();
        let err = VmShape::new(
            Wanted {
                vcpus: 1,
                memory_mib: 32,
            },
            &HashMap::new(),
            &p,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "memory 32Mi is below the guest's minimum of 128Mi"
        );
    }

    #[test]
    fn resize_stays_within_the_ceilings() {
        let p = SizePolicy::default();
        let shape = VmShape::new(
            Wanted {
                vcpus: 1,
                memory_mib: 256,
            },
            &HashMap::new(),
            &p,
        )
        .unwrap();
        let grown = shape
            .resized(
                Wanted {
                    vcpus: 2,
                    memory_mib: 512,
                },
                &p,
            )
            .unwrap();
        assert_eq!(
            (grown.vcpus, grown.memory_mib, grown.max_vcpus),
            (2, 512, 4)
        );
        let err = shape
            .resized(
                Wanted {
                    vcpus: 8,
                    memory_mib: 256,
                },
                &p,
            )
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("vCPUs 8 is above the VM's maximum of 4"),
            "{err}"
        );
        assert!(
            shape
                .resized(
                    Wanted {
                        vcpus: 1,
                        memory_mib: 4096
                    },
                    &p
                )
                .is_err()
        );
    }

    #[test]
    fn cri_view_round_trips() {
        let p = SizePolicy::default();
        let shape = VmShape::new(
            Wanted {
                vcpus: 2,
                memory_mib: 384,
            },
            &HashMap::new(),
            &p,
        )
        .unwrap();
        let back = Wanted::from_resources(Some(&shape.as_resources()), &p);
        assert_eq!(
            back,
            Wanted {
                vcpus: 2,
                memory_mib: 384
            }
        );
    }
}
