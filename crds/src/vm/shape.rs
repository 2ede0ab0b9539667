//! The Arktos pod shape (`spec.virtualMachine`, pod-level `spec.nics`) and
//! the ordinary pod it is stored as: RuntimeClass `arktos-vm`, one container
//! with the image and resources, VM-only fields in `vm.arktos.io/`
//! annotations. Both directions live here so they cannot drift apart.
//!
//! Works on JSON so that it applies to Pods and to the pod templates of
//! workloads alike, without knowing their types.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{RUNTIME_CLASS, annotations as ann};
use crate::naming::is_dns_label;
use crate::status::{FieldError, FieldErrorType};

/// The `virtualMachine` of a pod spec, as Arktos users write it.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualMachine {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default)]
    pub image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pair_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// cloud-init user-data, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
    /// A shell script run by cloud-init, as plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init_user_data_script: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power_spec: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_mounts: Option<Value>,
    /// Data disks, attached live.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DataDisk>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DataDisk {
    pub name: String,
    /// A quantity, e.g. `64Mi`.
    pub size: String,
}

/// One of Arktos' pod-level `spec.nics`; NICs after the first are
/// attached live. Fields beyond the name are kept as written.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Nic {
    pub name: String,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// What the node agent saw of a VM; it writes this as a pod annotation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// `Running` or `Shutdown`.
    pub power_state: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// Extra NICs attached now, by name.
    #[serde(default)]
    pub nics: Vec<String>,
    /// Data disks attached now, by name.
    #[serde(default)]
    pub disks: Vec<String>,
    /// Snapshots the VM has, by name.
    #[serde(default)]
    pub snapshots: Vec<String>,
    /// The most vCPUs and memory the VM can grow to live (fixed when it
    /// was created).
    #[serde(default)]
    pub max_vcpus: u32,
    #[serde(default)]
    pub max_memory_mib: u64,
    /// Why the last reconcile of NICs, disks or power did not finish.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The vCPUs and memory (MiB) container resources give a VM, as the node
/// reads them: CPU from the limit, else the request (rounded up); memory
/// from the limit.
pub fn vm_size(resources: &Value) -> (u32, Option<u64>) {
    let quantity = |path: &str| {
        resources
            .pointer(path)
            .and_then(Value::as_str)
            .and_then(crate::quantity::to_milli)
    };
    let vcpus = quantity("/limits/cpu")
        .or_else(|| quantity("/requests/cpu"))
        .map(|milli| ((milli + 999) / 1000).max(1) as u32)
        .unwrap_or(1);
    let memory = quantity("/limits/memory").map(|milli| (milli / 1000 / (1024 * 1024)) as u64);
    (vcpus, memory)
}

/// Whether a resize to `resources` fits the VM's ceilings, as the node
/// reported them; errors name the field.
pub fn check_resize(observed: &Observed, resources: &Value) -> Result<(), Vec<FieldError>> {
    let (vcpus, memory) = vm_size(resources);
    let mut errors = Vec::new();
    if observed.max_vcpus > 0 && vcpus > observed.max_vcpus {
        errors.push(
            FieldError::new(
                "spec.virtualMachine.resources.limits.cpu",
                FieldErrorType::Invalid,
                format!(
                    "{vcpus} vCPUs is above the VM's maximum of {} (fixed at creation by the annotation {} or the node)",
                    observed.max_vcpus,
                    ann::MAX_VCPUS
                ),
            )
            .with_value(vcpus.to_string()),
        );
    }
    if let Some(memory) = memory
        && observed.max_memory_mib > 0
        && memory > observed.max_memory_mib
    {
        errors.push(
            FieldError::new(
                "spec.virtualMachine.resources.limits.memory",
                FieldErrorType::Invalid,
                format!(
                    "{memory}Mi is above the VM's maximum of {}Mi (fixed at creation by the annotation {} or the node)",
                    observed.max_memory_mib,
                    ann::MAX_MEMORY_MIB
                ),
            )
            .with_value(format!("{memory}Mi")),
        );
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

impl Observed {
    /// The node agent's report as kept in the pod annotation; empty when
    /// there is none yet (or it cannot be read).
    pub fn from_annotation(text: Option<&str>) -> Self {
        text.and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default()
    }
}

pub const POWER_RUNNING: &str = "Running";
pub const POWER_SHUTDOWN: &str = "Shutdown";

/// Where the pod spec and its metadata sit in an object of `kind`.
fn pod_parts(kind: &str) -> Option<(&'static str, &'static str)> {
    Some(match kind {
        "Pod" => ("/spec", "/metadata"),
        "ReplicaSet"
        | "Deployment"
        | "Job"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicationController" => ("/spec/template/spec", "/spec/template/metadata"),
        "CronJob" => (
            "/spec/jobTemplate/spec/template/spec",
            "/spec/jobTemplate/spec/template/metadata",
        ),
        "PodTemplate" => ("/template/spec", "/template/metadata"),
        _ => return None,
    })
}

fn field_prefix(spec_pointer: &str) -> String {
    spec_pointer.trim_start_matches('/').replace('/', ".")
}

/// Whether the object (a Pod or a workload) carries the Arktos shape.
pub fn has_virtual_machine(object: &Value) -> bool {
    let kind = object["kind"].as_str().unwrap_or_default();
    pod_parts(kind)
        .and_then(|(spec, _)| object.pointer(spec))
        .is_some_and(|spec| spec.get("virtualMachine").is_some())
}

/// The Secrets named by `keyPairName`, to be read before [`to_storage`].
pub fn key_pair_name(object: &Value) -> Option<String> {
    let (spec, _) = pod_parts(object["kind"].as_str()?)?;
    object
        .pointer(spec)?
        .pointer("/virtualMachine/keyPairName")?
        .as_str()
        .map(str::to_string)
}

/// The public key kept in a key pair Secret (`data.publicKey`, base64).
pub fn public_key_of_secret(secret: &Value) -> Option<String> {
    let encoded = secret.pointer("/data/publicKey")?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let key = String::from_utf8(bytes).ok()?;
    let key = key.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// Turns the Arktos shape into the stored form, in place. Objects without
/// `virtualMachine` are checked only for having some containers (pods).
/// `key_pair` is the public key read from the `keyPairName` Secret.
pub fn to_storage(object: &mut Value, key_pair: Option<&str>) -> Result<(), Vec<FieldError>> {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let Some((spec_at, metadata_at)) = pod_parts(&kind) else {
        return Ok(());
    };
    let prefix = field_prefix(spec_at);
    let Some(spec) = object.pointer_mut(spec_at).and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let containers = spec
        .get("containers")
        .and_then(Value::as_array)
        .is_some_and(|c| !c.is_empty());
    let Some(raw) = spec.remove("virtualMachine") else {
        if !containers {
            return Err(vec![FieldError::new(
                format!("{prefix}.containers"),
                FieldErrorType::Required,
                "a pod holds containers or a virtualMachine",
            )]);
        }
        return Ok(());
    };
    let vm_field = format!("{prefix}.virtualMachine");
    let vm: VirtualMachine = serde_json::from_value(raw).map_err(|e| {
        vec![FieldError::new(
            &vm_field,
            FieldErrorType::Invalid,
            e.to_string(),
        )]
    })?;
    let name = if vm.name.is_empty() { "vm" } else { &vm.name };
    let mut errors = check_vm_pod_spec(spec, &prefix, &vm_field, name, &vm.image, containers);
    errors.extend(check_vm(&vm, name, &vm_field, key_pair));
    let nics = match spec.remove("nics").map(|raw| parse_nics(raw, &prefix)) {
        None => None,
        Some(Ok(nics)) => Some(nics),
        Some(Err(wrong)) => {
            errors.extend(wrong);
            None
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut notes = vm_notes(&vm, key_pair, nics.as_deref());
    spec.insert(
        "containers".into(),
        json!([vm_container(&vm, name, &mut notes)]),
    );
    spec.insert("runtimeClassName".into(), RUNTIME_CLASS.into());
    // A VM has no use for the service account token volume.
    spec.entry("automountServiceAccountToken")
        .or_insert(Value::Bool(false));
    let metadata = ensure_object(object, metadata_at);
    let annotations = metadata
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("annotations is an object");
    // What the tenant wrote under our prefix is replaced, never trusted.
    annotations.retain(|key, _| !ann::INTERNAL.contains(&key.as_str()));
    for (key, value) in notes {
        annotations.insert(key.into(), value.into());
    }
    Ok(())
}

/// What a VM pod's spec may hold beside its `virtualMachine`.
fn check_vm_pod_spec(
    spec: &serde_json::Map<String, Value>,
    prefix: &str,
    vm_field: &str,
    name: &str,
    image: &str,
    containers: bool,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if containers && spec.get("containers") != Some(&echo_containers(name, image)) {
        errors.push(FieldError::new(
            vm_field,
            FieldErrorType::Forbidden,
            "a pod holds either containers or a virtualMachine, not both (the only containers allowed beside a virtualMachine are the [{name, image}] that reads of a VM pod show)",
        ));
    }
    for other in ["initContainers", "ephemeralContainers"] {
        if spec
            .get(other)
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
        {
            errors.push(FieldError::new(
                format!("{prefix}.{other}"),
                FieldErrorType::Forbidden,
                "a VM pod has no containers besides its virtualMachine",
            ));
        }
    }
    if let Some(class) = spec.get("runtimeClassName").and_then(Value::as_str)
        && class != RUNTIME_CLASS
    {
        errors.push(
            FieldError::new(
                format!("{prefix}.runtimeClassName"),
                FieldErrorType::Invalid,
                format!("a VM pod runs with RuntimeClass {RUNTIME_CLASS}"),
            )
            .with_value(class),
        );
    }
    errors
}

/// The `virtualMachine` itself: name, image, keys, user data, power,
/// disks.
fn check_vm(
    vm: &VirtualMachine,
    name: &str,
    vm_field: &str,
    key_pair: Option<&str>,
) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if !is_dns_label(name) {
        errors.push(
            FieldError::new(
                format!("{vm_field}.name"),
                FieldErrorType::Invalid,
                "a DNS label: at most 63 lowercase letters, digits and '-'",
            )
            .with_value(name),
        );
    }
    if vm.image.is_empty() {
        errors.push(FieldError::new(
            format!("{vm_field}.image"),
            FieldErrorType::Required,
            "the VM's disk image (an http(s) URL or a name the node translates)",
        ));
    }
    for (both, field, message) in [
        (
            vm.key_pair_name.is_some() && vm.public_key.is_some(),
            "publicKey",
            "set keyPairName or publicKey, not both",
        ),
        (
            vm.user_data.is_some() && vm.cloud_init_user_data_script.is_some(),
            "cloudInitUserDataScript",
            "set userData or cloudInitUserDataScript, not both",
        ),
    ] {
        if both {
            errors.push(FieldError::new(
                format!("{vm_field}.{field}"),
                FieldErrorType::Forbidden,
                message,
            ));
        }
    }
    if let Some(data) = &vm.user_data
        && base64::engine::general_purpose::STANDARD
            .decode(data)
            .is_err()
    {
        errors.push(FieldError::new(
            format!("{vm_field}.userData"),
            FieldErrorType::Invalid,
            "must be base64",
        ));
    }
    errors.extend(check_power(vm.power_spec.as_deref(), vm_field));
    errors.extend(check_disks(&vm.disks, vm_field));
    if vm.key_pair_name.is_some() && key_pair.is_none() {
        errors.push(
            FieldError::new(
                format!("{vm_field}.keyPairName"),
                FieldErrorType::NotFound,
                "no Secret of that name with a `publicKey` entry in the namespace",
            )
            .with_value(vm.key_pair_name.clone().unwrap_or_default()),
        );
    }
    errors
}

fn check_power(power: Option<&str>, vm_field: &str) -> Option<FieldError> {
    let power = power?;
    (power != POWER_RUNNING && power != POWER_SHUTDOWN).then(|| {
        FieldError::new(
            format!("{vm_field}.powerSpec"),
            FieldErrorType::NotSupported,
            format!("supported values: {POWER_RUNNING:?}, {POWER_SHUTDOWN:?}"),
        )
        .with_value(power)
    })
}

fn check_disks(disks: &[DataDisk], vm_field: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, disk) in disks.iter().enumerate() {
        if !is_dns_label(&disk.name) {
            errors.push(
                FieldError::new(
                    format!("{vm_field}.disks[{i}].name"),
                    FieldErrorType::Invalid,
                    "a DNS label",
                )
                .with_value(disk.name.clone()),
            );
        }
        if crate::quantity::to_milli(&disk.size).is_none_or(|milli| milli < 1024 * 1024 * 1000) {
            errors.push(
                FieldError::new(
                    format!("{vm_field}.disks[{i}].size"),
                    FieldErrorType::Invalid,
                    "a size of at least 1Mi",
                )
                .with_value(disk.size.clone()),
            );
        }
    }
    errors
}

/// A pod's `nics`, each named as a Linux interface may be.
fn parse_nics(raw: Value, prefix: &str) -> Result<Vec<Nic>, Vec<FieldError>> {
    let nics: Vec<Nic> = serde_json::from_value(raw).map_err(|e| {
        vec![FieldError::new(
            format!("{prefix}.nics"),
            FieldErrorType::Invalid,
            e.to_string(),
        )]
    })?;
    let errors: Vec<FieldError> = nics
        .iter()
        .enumerate()
        .filter(|(_, nic)| !is_dns_label(&nic.name) || nic.name.len() > 15)
        .map(|(i, nic)| {
            FieldError::new(
                format!("{prefix}.nics[{i}].name"),
                FieldErrorType::Invalid,
                "a DNS label of at most 15 characters",
            )
            .with_value(nic.name.clone())
        })
        .collect();
    if errors.is_empty() {
        Ok(nics)
    } else {
        Err(errors)
    }
}

/// The one container that stands for the VM in storage (the node runs it
/// as the VM); a memory request without a limit becomes the limit.
fn vm_container(vm: &VirtualMachine, name: &str, notes: &mut BTreeMap<&str, String>) -> Value {
    let mut resources = vm.resources.clone().unwrap_or_else(|| json!({}));
    if resources.pointer("/limits/memory").is_none()
        && let Some(memory) = resources.pointer("/requests/memory").cloned()
    {
        // The guest's memory is its size, not a floor: the node sizes VMs
        // from the limit, so an unset limit takes the request.
        resources["limits"]["memory"] = memory;
        notes.insert(ann::MEMORY_LIMIT_DEFAULTED, "true".into());
    }
    let mut container = json!({"name": name, "image": vm.image, "resources": resources,
        "securityContext": vm_security_context()});
    if let Some(policy) = &vm.image_pull_policy {
        container["imagePullPolicy"] = policy.clone().into();
    }
    if let Some(mounts) = &vm.volume_mounts {
        container["volumeMounts"] = mounts.clone();
    }
    container
}

/// The annotations that carry the rest of the Arktos shape.
fn vm_notes(
    vm: &VirtualMachine,
    key_pair: Option<&str>,
    nics: Option<&[Nic]>,
) -> BTreeMap<&'static str, String> {
    let mut notes: BTreeMap<&str, String> = BTreeMap::new();
    notes.insert(ann::SHAPE, "virtualMachine".into());
    if let Some(key) = key_pair {
        notes.insert(ann::PUBLIC_KEY, key.to_string());
        notes.insert(
            ann::KEY_PAIR_NAME,
            vm.key_pair_name.clone().unwrap_or_default(),
        );
    } else if let Some(key) = &vm.public_key {
        notes.insert(ann::PUBLIC_KEY, key.clone());
    }
    if let Some(data) = &vm.user_data {
        notes.insert(ann::USER_DATA, data.clone());
    } else if let Some(script) = &vm.cloud_init_user_data_script {
        notes.insert(
            ann::USER_DATA,
            base64::engine::general_purpose::STANDARD.encode(script),
        );
        notes.insert(ann::USER_DATA_IS_SCRIPT, "true".into());
    }
    notes.insert(
        ann::POWER_SPEC,
        vm.power_spec
            .clone()
            .unwrap_or_else(|| POWER_RUNNING.into()),
    );
    if let Some(nics) = nics {
        notes.insert(ann::NICS, serde_json::to_string(nics).unwrap_or_default());
    }
    if !vm.disks.is_empty() {
        notes.insert(
            ann::DISKS,
            serde_json::to_string(&vm.disks).unwrap_or_default(),
        );
    }
    notes
}

/// The `containers` a VM pod reads back with, naming the VM as its one
/// container: kubectl picks (and checks) containers from this list for
/// `logs`, which then shows the VM's serial console.
fn echo_containers(name: &str, image: &str) -> Value {
    json!([{"name": name, "image": image}])
}

/// The guest runs inside QEMU, not in the container's Linux sandbox, so
/// the container's security context only has to satisfy the namespace's
/// Pod Security level: the "restricted" one, which every level accepts.
fn vm_security_context() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": true,
        "runAsUser": 65534,
        "seccompProfile": {"type": "RuntimeDefault"},
    })
}

/// Turns a stored VM pod (or workload template) back into the Arktos
/// shape, in place; anything else is left alone. Pods get
/// `status.virtualMachineStatus`.
pub fn to_arktos(object: &mut Value) {
    let kind = object["kind"].as_str().unwrap_or_default().to_string();
    let Some((spec_at, metadata_at)) = pod_parts(&kind) else {
        return;
    };
    let Some(notes) = object
        .pointer(metadata_at)
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .filter(|a| a.contains_key(ann::SHAPE))
        .cloned()
    else {
        return;
    };
    let note = |key: &str| notes.get(key).and_then(Value::as_str).map(str::to_string);
    let Some(spec) = object.pointer_mut(spec_at).and_then(Value::as_object_mut) else {
        return;
    };
    let Some(Value::Array(mut containers)) = spec.remove("containers") else {
        return;
    };
    let container = if containers.is_empty() {
        Value::Null
    } else {
        containers.remove(0)
    };
    spec.remove("runtimeClassName");
    if spec.get("automountServiceAccountToken") == Some(&Value::Bool(false)) {
        spec.remove("automountServiceAccountToken");
    }
    let vm = vm_of(&container, &note);
    spec.insert(
        "virtualMachine".into(),
        serde_json::to_value(&vm).unwrap_or_default(),
    );
    spec.insert("containers".into(), echo_containers(&vm.name, &vm.image));
    if let Some(nics) = note(ann::NICS).and_then(|n| serde_json::from_str::<Value>(&n).ok()) {
        spec.insert("nics".into(), nics);
    }
    if let Some(annotations) = object
        .pointer_mut(metadata_at)
        .and_then(|m| m.get_mut("annotations"))
        .and_then(Value::as_object_mut)
    {
        annotations.retain(|key, _| !ann::INTERNAL.contains(&key.as_str()));
    }
    if kind == "Pod" {
        let observed = note(ann::OBSERVED).and_then(|o| serde_json::from_str(&o).ok());
        vm_status(object, &vm, observed);
    }
}

/// The `virtualMachine` a stored VM pod's one container and annotations
/// (`note`) stand for.
fn vm_of(container: &Value, note: &dyn Fn(&str) -> Option<String>) -> VirtualMachine {
    let mut resources = container.get("resources").cloned();
    if note(ann::MEMORY_LIMIT_DEFAULTED).is_some()
        && let Some(limits) = resources
            .as_mut()
            .and_then(|r| r.get_mut("limits"))
            .and_then(Value::as_object_mut)
    {
        limits.remove("memory");
        if limits.is_empty()
            && let Some(r) = resources.as_mut().and_then(Value::as_object_mut)
        {
            r.remove("limits");
        }
    }
    let script = note(ann::USER_DATA_IS_SCRIPT).is_some();
    let user_data = note(ann::USER_DATA);
    VirtualMachine {
        name: container["name"].as_str().unwrap_or("vm").to_string(),
        image: container["image"].as_str().unwrap_or_default().to_string(),
        image_pull_policy: container["imagePullPolicy"].as_str().map(str::to_string),
        resources,
        key_pair_name: note(ann::KEY_PAIR_NAME),
        public_key: note(ann::KEY_PAIR_NAME)
            .is_none()
            .then(|| note(ann::PUBLIC_KEY))
            .flatten(),
        user_data: user_data.clone().filter(|_| !script),
        cloud_init_user_data_script: user_data.filter(|_| script).and_then(|data| {
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        }),
        power_spec: note(ann::POWER_SPEC),
        volume_mounts: container.get("volumeMounts").cloned(),
        disks: note(ann::DISKS)
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_default(),
    }
}

/// `status.virtualMachineStatus` from the container's status and what the
/// node agent observed; `containerStatuses` go (there are no containers).
fn vm_status(pod: &mut Value, vm: &VirtualMachine, observed: Option<Observed>) {
    let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) else {
        return;
    };
    let container = status
        .remove("containerStatuses")
        .and_then(|mut c| {
            c.as_array_mut()
                .filter(|a| !a.is_empty())
                .map(|a| a.remove(0))
        })
        .unwrap_or(Value::Null);
    let (state, reason) = match container.get("state").and_then(Value::as_object) {
        Some(state) if state.contains_key("running") => ("Running", None),
        Some(state) if state.contains_key("terminated") => (
            "Terminated",
            state["terminated"]["reason"].as_str().map(str::to_string),
        ),
        Some(state) if state.contains_key("waiting") => (
            "Waiting",
            state["waiting"]["reason"].as_str().map(str::to_string),
        ),
        _ => ("Pending", None),
    };
    let power_state = observed
        .as_ref()
        .map(|o| o.power_state.clone())
        .unwrap_or_else(|| {
            if state == "Running" {
                POWER_RUNNING.into()
            } else {
                POWER_SHUTDOWN.into()
            }
        });
    let mut out = json!({
        "name": vm.name,
        "image": vm.image,
        "state": state,
        "powerState": power_state,
        "ready": container["ready"].as_bool().unwrap_or(false),
        "restartCount": container["restartCount"].as_i64().unwrap_or(0),
    });
    if let Some(reason) = reason {
        out["reason"] = reason.into();
    }
    if let Some(id) = container.get("containerID") {
        out["virtualMachineID"] = id.clone();
    }
    if let Some(applied) = container.get("resources") {
        out["resources"] = applied.clone();
    }
    if let Some(o) = observed {
        out["vcpus"] = o.vcpus.into();
        out["memoryMiB"] = o.memory_mib.into();
        out["nics"] = json!(o.nics);
        out["disks"] = json!(o.disks);
        out["snapshots"] = json!(o.snapshots);
        if !o.message.is_empty() {
            out["message"] = o.message.into();
        }
    }
    status.insert("virtualMachineStatus".into(), out);
}

fn ensure_object<'a>(object: &'a mut Value, pointer: &str) -> &'a mut Map<String, Value> {
    let mut at = object;
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if !at.get(part).is_some_and(Value::is_object) {
            at[part] = json!({});
        }
        at = at.get_mut(part).expect("just made");
    }
    at.as_object_mut().expect("an object")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm_pod() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "vm1", "annotations": {"mine": "x", "vm.arktos.io/public-key": "forged"}},
            "spec": {"virtualMachine": {
                "name": "vm",
                "image": "download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img",
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}},
                "cloudInitUserDataScript": "#!/bin/sh\necho hi\n",
                "powerSpec": "Running"
            }, "nics": [{"name": "eth1", "subnetName": "s1"}]}
        })
    }

    #[test]
    fn a_vm_pod_is_stored_as_a_pod_of_the_vm_runtime_class_and_reads_back_unchanged() {
        let original = vm_pod();
        let mut pod = original.clone();
        to_storage(&mut pod, None).unwrap();
        assert_eq!(pod["spec"]["runtimeClassName"], RUNTIME_CLASS);
        assert_eq!(pod["spec"]["containers"][0]["name"], "vm");
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["memory"],
            "1Gi"
        );
        assert!(pod["spec"].get("virtualMachine").is_none());
        assert!(pod["spec"].get("nics").is_none());
        let notes = &pod["metadata"]["annotations"];
        assert!(notes.get(ann::PUBLIC_KEY).is_none(), "forged key dropped");
        assert_eq!(notes[ann::POWER_SPEC], "Running");
        assert_eq!(notes["mine"], "x");
        let mut back = pod.clone();
        to_arktos(&mut back);
        let mut expected = original;
        expected["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove("vm.arktos.io/public-key");
        expected["spec"]["containers"] = json!([{"name": "vm",
            "image": "download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img"}]);
        assert_eq!(back, expected);
        // What a read shows can be written back as it is.
        let mut again = back;
        to_storage(&mut again, None).unwrap();
        assert_eq!(again["spec"]["containers"], pod["spec"]["containers"]);
    }

    #[test]
    fn templates_of_workloads_are_converted_and_key_pairs_resolved() {
        let mut rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "demo"},
            "spec": {"replicas": 2, "template": {"metadata": {"labels": {"tier": "frontend"}},
            "spec": {"virtualMachine": {"keyPairName": "foobar", "name": "vm", "image": "img",
              "resources": {"limits": {"cpu": "1", "memory": "200Mi"}, "requests": {"cpu": "0.1", "memory": "200Mi"}}}}}}});
        assert_eq!(key_pair_name(&rs).as_deref(), Some("foobar"));
        assert!(to_storage(&mut rs.clone(), None).is_err(), "missing secret");
        to_storage(&mut rs, Some("ssh-ed25519 AAAA k")).unwrap();
        let template = &rs["spec"]["template"];
        assert_eq!(template["spec"]["runtimeClassName"], RUNTIME_CLASS);
        assert_eq!(
            template["metadata"]["annotations"][ann::PUBLIC_KEY],
            "ssh-ed25519 AAAA k"
        );
        assert!(template["metadata"]["annotations"][ann::MEMORY_LIMIT_DEFAULTED].is_null());
        to_arktos(&mut rs);
        assert_eq!(
            rs["spec"]["template"]["spec"]["virtualMachine"]["keyPairName"],
            "foobar"
        );
        assert!(rs["spec"]["template"]["spec"]["virtualMachine"]["publicKey"].is_null());
    }

    #[test]
    fn malformed_vm_pods_are_refused_with_the_field_named() {
        let cases = [
            (
                json!({"containers": [{"name": "c", "image": "x"}], "virtualMachine": {"image": "i"}}),
                "spec.virtualMachine",
            ),
            (json!({}), "spec.containers"),
            (
                json!({"virtualMachine": {"image": "i", "cpus": 2}}),
                "spec.virtualMachine",
            ),
            (json!({"virtualMachine": {}}), "spec.virtualMachine.image"),
            (
                json!({"virtualMachine": {"image": "i", "powerSpec": "Paused"}}),
                "spec.virtualMachine.powerSpec",
            ),
            (
                json!({"virtualMachine": {"image": "i", "userData": "%%%"}}),
                "spec.virtualMachine.userData",
            ),
            (
                json!({"virtualMachine": {"image": "i"}, "runtimeClassName": "runc"}),
                "spec.runtimeClassName",
            ),
            (
                json!({"virtualMachine": {"image": "i", "disks": [{"name": "d", "size": "1k"}]}}),
                "spec.virtualMachine.disks[0].size",
            ),
        ];
        for (spec, field) in cases {
            let mut pod = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec});
            let errors = to_storage(&mut pod, None).unwrap_err();
            assert!(
                errors.iter().any(|e| e.field == field),
                "{field}: {errors:?}"
            );
        }
    }

    #[test]
    fn status_reports_the_vm() {
        let mut pod = vm_pod();
        to_storage(&mut pod, None).unwrap();
        let observed = Observed {
            power_state: "Shutdown".into(),
            vcpus: 2,
            memory_mib: 512,
            ..Default::default()
        };
        pod["metadata"]["annotations"][ann::OBSERVED] =
            serde_json::to_string(&observed).unwrap().into();
        pod["status"] = json!({"phase": "Running", "containerStatuses": [{"name": "vm", "ready": true,
            "restartCount": 1, "state": {"running": {}}, "resources": {"requests": {"cpu": "2"}}}]});
        to_arktos(&mut pod);
        let status = &pod["status"]["virtualMachineStatus"];
        assert_eq!(status["state"], "Running");
        assert_eq!(status["powerState"], "Shutdown");
        assert_eq!(status["vcpus"], 2);
        assert_eq!(status["restartCount"], 1);
        assert_eq!(status["resources"]["requests"]["cpu"], "2");
        assert!(pod["status"].get("containerStatuses").is_none());
        assert!(pod["metadata"]["annotations"].get(ann::OBSERVED).is_none());
    }

    #[test]
    fn resizes_beyond_the_vm_ceiling_are_refused() {
        let observed = Observed {
            max_vcpus: 4,
            max_memory_mib: 1024,
            ..Default::default()
        };
        let fits = json!({"limits": {"cpu": "2", "memory": "512Mi"}, "requests": {"cpu": "100m"}});
        assert_eq!(vm_size(&fits), (2, Some(512)));
        assert!(check_resize(&observed, &fits).is_ok());
        let too_big = json!({"limits": {"cpu": "8", "memory": "2Gi"}});
        let errors = check_resize(&observed, &too_big).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(errors[0].message().contains("maximum of 4"), "{errors:?}");
        assert_eq!(vm_size(&json!({"requests": {"cpu": "1500m"}})), (2, None));
    }

    #[test]
    fn container_pods_pass_unchanged() {
        let pod = json!({"kind": "Pod", "metadata": {"name": "c"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
        let mut stored = pod.clone();
        to_storage(&mut stored, None).unwrap();
        assert_eq!(stored, pod);
        to_arktos(&mut stored);
        assert_eq!(stored, pod);
    }
}
