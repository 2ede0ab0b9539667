//! VM records as CRI messages, and the CRI filters applied to them.

use std::collections::HashMap;
use std::path::Path;

use k8s_cri::v1 as cri;

use super::HANDLER;
use super::libvirt::DomainFacts;
use super::records::{ContainerRecord, Phase, SandboxRecord};

/// CRI filters take an ID prefix, as crictl's truncated IDs need.
fn id_matches(id: &str, wanted: &str) -> bool {
    wanted.is_empty() || id.starts_with(wanted)
}

pub fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn sandbox_state(s: &SandboxRecord) -> cri::PodSandboxState {
    if s.ready {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    }
}

fn sandbox_metadata(s: &SandboxRecord) -> cri::PodSandboxMetadata {
    cri::PodSandboxMetadata {
        name: s.name.clone(),
        uid: s.uid.clone(),
        namespace: s.namespace.clone(),
        attempt: s.attempt,
    }
}

pub fn sandbox_matches(s: &SandboxRecord, filter: Option<&cri::PodSandboxFilter>) -> bool {
    let Some(f) = filter else {
        return true;
    };
    id_matches(&s.id, &f.id)
        && f.state
            .as_ref()
            .is_none_or(|v| v.state == sandbox_state(s) as i32)
        && labels_match(&s.labels, &f.label_selector)
}

pub fn sandbox(s: &SandboxRecord) -> cri::PodSandbox {
    cri::PodSandbox {
        id: s.id.clone(),
        metadata: Some(sandbox_metadata(s)),
        state: sandbox_state(s) as i32,
        created_at: s.created_at,
        labels: s.labels.clone(),
        annotations: s.annotations.clone(),
        runtime_handler: HANDLER.to_string(),
    }
}

pub fn sandbox_status(s: &SandboxRecord) -> cri::PodSandboxStatus {
    cri::PodSandboxStatus {
        id: s.id.clone(),
        metadata: Some(sandbox_metadata(s)),
        state: sandbox_state(s) as i32,
        created_at: s.created_at,
        network: Some(cri::PodSandboxNetworkStatus {
            ip: s.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default(),
            additional_ips: Vec::new(),
        }),
        linux: Some(cri::LinuxPodSandboxStatus {
            namespaces: Some(cri::Namespace {
                options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Pod as i32,
                    pid: cri::NamespaceMode::Pod as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
            }),
        }),
        labels: s.labels.clone(),
        annotations: s.annotations.clone(),
        runtime_handler: HANDLER.to_string(),
    }
}

fn container_state(c: &ContainerRecord) -> cri::ContainerState {
    match c.phase {
        Phase::Created => cri::ContainerState::ContainerCreated,
        Phase::Running => cri::ContainerState::ContainerRunning,
        Phase::Exited => cri::ContainerState::ContainerExited,
    }
}

fn image_spec(c: &ContainerRecord) -> cri::ImageSpec {
    cri::ImageSpec {
        image: c.image.clone(),
        ..Default::default()
    }
}

pub fn container_matches(c: &ContainerRecord, filter: Option<&cri::ContainerFilter>) -> bool {
    let Some(f) = filter else {
        return true;
    };
    id_matches(&c.id, &f.id)
        && id_matches(&c.sandbox_id, &f.pod_sandbox_id)
        && f.state
            .as_ref()
            .is_none_or(|v| v.state == container_state(c) as i32)
        && labels_match(&c.labels, &f.label_selector)
}

pub fn stats_matches(c: &ContainerRecord, filter: Option<&cri::ContainerStatsFilter>) -> bool {
    let Some(f) = filter else {
        return true;
    };
    id_matches(&c.id, &f.id)
        && id_matches(&c.sandbox_id, &f.pod_sandbox_id)
        && labels_match(&c.labels, &f.label_selector)
}

pub fn container(c: &ContainerRecord) -> cri::Container {
    cri::Container {
        id: c.id.clone(),
        pod_sandbox_id: c.sandbox_id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        state: container_state(c) as i32,
        created_at: c.created_at,
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        ..Default::default()
    }
}

pub fn container_status(c: &ContainerRecord) -> cri::ContainerStatus {
    cri::ContainerStatus {
        id: c.id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        state: container_state(c) as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: c.finished_at,
        exit_code: c.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        reason: c.reason.clone(),
        message: c.message.clone(),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
        log_path: c.log_path.clone(),
        resources: Some(cri::ContainerResources {
            linux: Some(c.shape.as_resources()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn attributes(c: &ContainerRecord) -> cri::ContainerAttributes {
    cri::ContainerAttributes {
        id: c.id.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        labels: c.labels.clone(),
        annotations: c.annotations.clone(),
    }
}

/// Now, as CRI timestamps count it (nanoseconds since the epoch).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i64
}

/// CPU time and guest memory from libvirt, the overlay disk as the
/// writable layer. Memory is what the guest uses (what it could give back
/// through the balloon does not count), so a resize may shrink a VM down to
/// that; before the guest reports, the memory it was given.
pub fn container_stats(
    c: &ContainerRecord,
    facts: Option<DomainFacts>,
    disk_bytes: u64,
    state_dir: &Path,
) -> cri::ContainerStats {
    let ts = now_ns();
    cri::ContainerStats {
        attributes: Some(attributes(c)),
        cpu: Some(cri::CpuUsage {
            timestamp: ts,
            usage_core_nano_seconds: Some(cri::UInt64Value {
                value: facts.map_or(0, |f| f.cpu_time_ns),
            }),
            ..Default::default()
        }),
        memory: Some({
            let used = facts.map_or(0, |f| f.used_kib.unwrap_or(f.memory_kib) * 1024);
            cri::MemoryUsage {
                timestamp: ts,
                working_set_bytes: Some(cri::UInt64Value { value: used }),
                usage_bytes: Some(cri::UInt64Value { value: used }),
                ..Default::default()
            }
        }),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: state_dir.display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: disk_bytes }),
            inodes_used: Some(cri::UInt64Value { value: 3 }),
        }),
        ..Default::default()
    }
}

pub fn sandbox_stats(
    s: &SandboxRecord,
    containers: Vec<cri::ContainerStats>,
) -> cri::PodSandboxStats {
    let ts = now_ns();
    let cpu: u64 = containers
        .iter()
        .filter_map(|c| {
            c.cpu
                .as_ref()?
                .usage_core_nano_seconds
                .as_ref()
                .map(|v| v.value)
        })
        .sum();
    let mem: u64 = containers
        .iter()
        .filter_map(|c| {
            c.memory
                .as_ref()?
                .working_set_bytes
                .as_ref()
                .map(|v| v.value)
        })
        .sum();
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: s.id.clone(),
            metadata: Some(sandbox_metadata(s)),
            labels: s.labels.clone(),
            annotations: s.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: Some(cri::CpuUsage {
                timestamp: ts,
                usage_core_nano_seconds: Some(cri::UInt64Value { value: cpu }),
                ..Default::default()
            }),
            memory: Some(cri::MemoryUsage {
                timestamp: ts,
                working_set_bytes: Some(cri::UInt64Value { value: mem }),
                usage_bytes: Some(cri::UInt64Value { value: mem }),
                ..Default::default()
            }),
            containers,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_need_every_pair() {
        let labels = HashMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), "2".to_string()),
        ]);
        assert!(labels_match(&labels, &HashMap::new()));
        assert!(labels_match(
            &labels,
            &HashMap::from([("a".to_string(), "1".to_string())])
        ));
        assert!(!labels_match(
            &labels,
            &HashMap::from([("a".to_string(), "2".to_string())])
        ));
        assert!(!labels_match(
            &labels,
            &HashMap::from([("c".to_string(), "1".to_string())])
        ));
    }

    #[test]
    fn ids_match_by_prefix() {
        assert!(id_matches("abcdef", ""));
        assert!(id_matches("abcdef", "abc"));
        assert!(!id_matches("abcdef", "abd"));
    }
}
