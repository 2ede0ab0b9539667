//! VM pods end to end through a tenant route, on the real node: the Arktos
//! examples as written, VM Actions, power state, live resize, NIC and disk
//! hot-plug, and the refusals of bad input.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use libtest_mimic::Trial;
use serde_json::{Value, json};

use crate::support::{TenantOwner, eventually, kubectl_with, tenant_kubeconfig};
use crate::{Ctx, long_trial};

pub const NAMES: &[&str] = &[
    "vm_examples_run_through_a_tenant_context",
    "vm_actions_reboot_snapshot_restore_stop_start",
    "vm_power_spec_resize_and_hot_plug_reach_the_running_guest",
    "vm_bad_inputs_fail_clearly_and_change_nothing",
];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    let long = Duration::from_secs(420);
    vec![
        long_trial(
            ctx,
            NAMES[0],
            long,
            |ctx| async move { examples(&ctx).await },
        ),
        long_trial(
            ctx,
            NAMES[1],
            long,
            |ctx| async move { actions(&ctx).await },
        ),
        long_trial(ctx, NAMES[2], long, |ctx| async move {
            power_resize_hot_plug(&ctx).await
        }),
        long_trial(
            ctx,
            NAMES[3],
            long,
            |ctx| async move { refusals(&ctx).await },
        ),
    ]
}

/// A tenant with one namespace, its kubeconfig, and raw access for its owner.
struct Tenant {
    owner: TenantOwner,
    namespace: String,
    kubeconfig: PathBuf,
}

impl Tenant {
    async fn new(
        ctx: &Arc<Ctx>,
        prefix: &str,
        spec: Value,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let owner = TenantOwner::create(ctx, prefix, spec).await?;
        owner.namespace(namespace).await?;
        let kubeconfig = tenant_kubeconfig(ctx, &owner, namespace)?;
        Ok(Self {
            owner,
            namespace: namespace.to_string(),
            kubeconfig,
        })
    }

    async fn kubectl(
        &self,
        ctx: &Arc<Ctx>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<String> {
        let (ok, out, err) = kubectl_with(ctx, &self.kubeconfig, args, stdin).await?;
        ensure!(ok, "kubectl {} failed: {err}", args.join(" "));
        Ok(out)
    }

    fn path(&self, rest: &str) -> String {
        format!("/api/v1/namespaces/{}/{rest}", self.namespace)
    }

    /// A request as the owner through the gateway: the JSON answer, or the
    /// refusal's Status.
    async fn call(
        &self,
        method: http::Method,
        path: &str,
        content_type: &str,
        body: Value,
    ) -> anyhow::Result<Result<Value, kube::core::Status>> {
        match arktos_e2e::api::request_json(&self.owner.client, method, path, content_type, body)
            .await?
        {
            Ok(value) => Ok(Ok(value)),
            Err(kube::Error::Api(status)) => Ok(Err(*status)),
            Err(other) => Err(other.into()),
        }
    }

    async fn pod(&self, name: &str) -> anyhow::Result<Value> {
        self.call(
            http::Method::GET,
            &self.path(&format!("pods/{name}")),
            "",
            Value::Null,
        )
        .await?
        .map_err(|s| anyhow::anyhow!("GET pod {name}: {}", s.message))
    }

    async fn create_pod(&self, pod: Value) -> anyhow::Result<Value> {
        self.call(
            http::Method::POST,
            &self.path("pods"),
            "application/json",
            pod,
        )
        .await?
        .map_err(|s| anyhow::anyhow!("creating a pod: {}", s.message))
    }

    async fn patch_pod(
        &self,
        name: &str,
        patch: Value,
    ) -> anyhow::Result<Result<Value, kube::core::Status>> {
        self.call(
            http::Method::PATCH,
            &self.path(&format!("pods/{name}")),
            "application/merge-patch+json",
            patch,
        )
        .await
    }

    async fn log(&self, pod: &str) -> String {
        let request = http::Request::get(self.path(&format!("pods/{pod}/log")))
            .body(Vec::new())
            .expect("a request");
        self.owner
            .client
            .request_text(request)
            .await
            .unwrap_or_default()
    }

    /// POSTs an action for `pod` and waits for it to finish; returns the
    /// finished Action.
    async fn act(&self, pod: &str, body: Value) -> anyhow::Result<Value> {
        let created = self
            .call(
                http::Method::POST,
                &self.path(&format!("pods/{pod}/action")),
                "application/json",
                body,
            )
            .await?
            .map_err(|s| anyhow::anyhow!("POST action: {}", s.message))?;
        let name = created["metadata"]["name"]
            .as_str()
            .context("the action's name")?
            .to_string();
        let path = format!(
            "/apis/vm.arktos.io/v1alpha1/namespaces/{}/actions/{name}",
            self.namespace
        );
        let last = std::sync::Mutex::new(Value::Null);
        let (path, last_ref) = (&path, &last);
        eventually(
            &format!("action {name} finishes"),
            Duration::from_secs(90),
            || async move {
                let action = self
                    .call(http::Method::GET, path, "", Value::Null)
                    .await??;
                let done = matches!(
                    action["status"]["phase"].as_str(),
                    Some("Succeeded" | "Failed")
                );
                *last_ref.lock().expect("last") = action;
                Ok(done)
            },
        )
        .await?;
        let last = last.into_inner().expect("last");
        ensure!(
            last["status"]["phase"] == "Succeeded",
            "action {name} failed: {}",
            last["status"]
        );
        Ok(last)
    }

    /// Waits until `check` holds for the pod as the tenant reads it.
    async fn until(
        &self,
        pod: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> anyhow::Result<Value> {
        let last = std::sync::Mutex::new(Value::Null);
        let (check, last_ref) = (&check, &last);
        let found = eventually(what, Duration::from_secs(120), || async move {
            let p = self.pod(pod).await?;
            let ok = check(&p);
            *last_ref.lock().expect("last") = p;
            Ok(ok)
        })
        .await;
        let last = last.into_inner().expect("last");
        found.with_context(|| format!("pod {pod} last: {}", last["status"]))?;
        Ok(last)
    }

    /// Waits until the pod's console log satisfies `check`.
    async fn console(
        &self,
        pod: &str,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let last = std::sync::Mutex::new(String::new());
        let (check, last_ref) = (&check, &last);
        let found = eventually(what, Duration::from_secs(120), || async move {
            let log = self.log(pod).await;
            let ok = check(&log);
            *last_ref.lock().expect("last") = log;
            Ok(ok)
        })
        .await;
        let last = last.into_inner().expect("last");
        found.with_context(|| format!("console of {pod}:\n{}", tail(&last, 15)))?;
        Ok(last)
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn running(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["virtualMachineStatus"]["state"] == "Running"
}

/// The last `ARKTOS-GUEST-STATE` line of a console.
fn guest_state(log: &str) -> String {
    log.lines()
        .rev()
        .find_map(|l| {
            l.split_once("ARKTOS-GUEST-STATE ")
                .map(|(_, s)| s.to_string())
        })
        .unwrap_or_default()
}

fn ticks(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            l.split_once("ARKTOS-GUEST-TICK ")
                .and_then(|(_, n)| n.trim().parse().ok())
        })
        .collect()
}

/// A VM pod in the Arktos shape; its guest counts aloud every second.
fn ticking_vm(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 5,
            "virtualMachine": {
                "name": "vm",
                "image": "download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img",
                "cloudInitUserDataScript": "#!/bin/sh\n( n=0; while :; do n=$((n+1)); echo \"ARKTOS-GUEST-TICK $n\"; sleep 1; done ) &\n",
                "resources": {"limits": {"cpu": "1", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "256Mi"}}
            }
        }
    })
}

async fn virsh_state_of(pod: &Value) -> anyhow::Result<String> {
    let id = pod["status"]["virtualMachineStatus"]["virtualMachineID"]
        .as_str()
        .and_then(|id| id.split("://").nth(1))
        .context("the VM pod reports no VM ID")?;
    let out = tokio::process::Command::new("virsh")
        .args(["-c", "qemu:///system", "domstate", &format!("arktos-{id}")])
        .output()
        .await?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

async fn delete_pods(tenant: &Tenant, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let _ = tenant
            .call(
                http::Method::DELETE,
                &tenant.path(&format!("pods/{name}")),
                "",
                Value::Null,
            )
            .await?;
    }
    for name in names {
        eventually(
            &format!("pod {name} is gone"),
            Duration::from_secs(120),
            || async move { Ok(tenant.pod(name).await.is_err()) },
        )
        .await?;
    }
    Ok(())
}

async fn examples(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let registry = ctx
        .cluster
        .local()
        .context("this test needs the local cluster's real node")?
        .registry();
    // The container example sets no securityContext: Pod Security baseline.
    let tenant = Tenant::new(ctx, "arktos", json!({"podSecurity": "baseline"}), "demo").await?;
    let dir = arktos_e2e::home::source_root().join("manifests/examples/arktos");
    let read = |file: &str| {
        std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))
    };
    // The changes the examples' README allows: the container image, and CPU
    // requests scaled down to fit one 2-core node.
    let vm_pod = read("vm-pod.yaml")?.replace("cpu: \"1\"", "cpu: \"500m\"");
    let container_pod = read("container-pod.yaml")?
        .replace("image: ubuntu", &format!("image: {registry}/arktos/bash:5"))
        .replace("cpu: \"1\"", "cpu: \"250m\"");
    let replica_set = read("vm-replicaset.yaml")?;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFooBarFooBarFooBarFooBarFooBarFooBarFooBar foobar@arktos";
    tenant
        .kubectl(
            ctx,
            &[
                "create",
                "secret",
                "generic",
                "foobar",
                &format!("--from-literal=publicKey={key}"),
            ],
            None,
        )
        .await?;
    for manifest in [&vm_pod, &container_pod, &replica_set] {
        tenant
            .kubectl(ctx, &["apply", "-f", "-"], Some(manifest))
            .await?;
    }
    let tenant_ref = &tenant;
    let listed = eventually(
        "the examples' pods are Running",
        Duration::from_secs(240),
        || async move {
            let tenant = tenant_ref;
            let out = tenant
                .kubectl(ctx, &["get", "pods", "-o", "json"], None)
                .await?;
            let pods: Value = serde_json::from_str(&out)?;
            let items = pods["items"].as_array().cloned().unwrap_or_default();
            let running = items
                .iter()
                .filter(|p| p["status"]["phase"] == "Running")
                .count();
            Ok(items.len() == 4 && running == 4)
        },
    )
    .await;
    if let Err(e) = listed {
        let out = tenant
            .kubectl(ctx, &["get", "pods", "-o", "wide"], None)
            .await
            .unwrap_or_default();
        bail!("{e:#}\n{out}");
    }
    // Events written by the scheduler and the kubelet name the tenant's
    // namespace, not the storage one, as JSON and as kubectl's table.
    let storage_prefix = format!("{}--", tenant.owner.tenant);
    for format in [&["-o", "json"][..], &[][..]] {
        let events = tenant
            .kubectl(ctx, &[&["get", "events"][..], format].concat(), None)
            .await?;
        ensure!(
            !events.contains(&storage_prefix),
            "events name storage namespaces:\n{events}"
        );
        ensure!(
            events.contains("Successfully assigned demo/vm1"),
            "no scheduling event for demo/vm1:\n{events}"
        );
    }
    let yaml = tenant
        .kubectl(ctx, &["get", "pods", "-o", "yaml"], None)
        .await?;
    let pods: Value = serde_yaml::from_str(&yaml)?;
    let items = pods["items"].as_array().context("a pod list")?;
    let vm1 = items
        .iter()
        .find(|p| p["metadata"]["name"] == "vm1")
        .context("vm1 listed")?;
    ensure!(
        vm1["spec"]["virtualMachine"]["image"]
            == "download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img"
            && vm1["spec"].get("runtimeClassName").is_none()
            && vm1["status"]["virtualMachineStatus"]["state"] == "Running"
            && vm1["status"]["virtualMachineStatus"]["powerState"] == "Running",
        "vm1 is not in the Arktos shape:\n{}",
        serde_yaml::to_string(vm1)?
    );
    let annotations = vm1["metadata"]["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    ensure!(
        annotations.keys().all(|k| !k.starts_with("vm.arktos.io/")),
        "internal annotations shown to the tenant: {annotations:?}"
    );
    let container1 = items
        .iter()
        .find(|p| p["metadata"]["name"] == "container1")
        .context("container1 listed")?;
    ensure!(
        container1["spec"].get("virtualMachine").is_none(),
        "container1 got a VM"
    );
    let replicas: Vec<&Value> = items
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("demo-"))
        })
        .collect();
    ensure!(
        replicas.len() == 2
            && replicas
                .iter()
                .all(|p| p["spec"]["virtualMachine"]["keyPairName"] == "foobar"),
        "the ReplicaSet's VMs: {replicas:?}"
    );
    // Stored as plain pods of the VM RuntimeClass, with the key resolved.
    let storage = tenant.owner.storage("demo");
    let stored = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(
        tenant.owner.admin.clone(),
        &storage,
    )
    .get("vm1")
    .await?;
    ensure!(
        stored
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            == Some("arktos-vm"),
        "stored vm1 is not of RuntimeClass arktos-vm"
    );
    let demo = replicas[0]["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let stored_demo = kube::Api::<k8s_openapi::api::core::v1::Pod>::namespaced(
        tenant.owner.admin.clone(),
        &storage,
    )
    .get(&demo)
    .await?;
    ensure!(
        stored_demo
            .metadata
            .annotations
            .unwrap_or_default()
            .get("vm.arktos.io/public-key")
            .map(String::as_str)
            == Some(key),
        "the key pair foobar did not reach {demo}"
    );
    tenant
        .console(
            "vm1",
            "vm1's console (kubectl logs) shows the guest booted",
            |log| log.contains("ARKTOS-GUEST-BOOTED") && log.contains("ARKTOS-GUEST-HOSTNAME vm1"),
        )
        .await?;
    let via_kubectl = tenant.kubectl(ctx, &["logs", "vm1"], None).await?;
    ensure!(
        via_kubectl.contains("ARKTOS-GUEST-BOOTED"),
        "kubectl logs vm1:\n{via_kubectl}"
    );
    tenant
        .console(&demo, "the ReplicaSet's VM got the key pair", |log| {
            log.contains("ARKTOS-GUEST-KEYS 1")
        })
        .await?;
    tenant
        .console("container1", "container1 prints its dots", |log| {
            log.contains('.')
        })
        .await?;
    tenant
        .kubectl(ctx, &["delete", "replicaset", "demo"], None)
        .await?;
    delete_pods(&tenant, &["vm1", "container1"]).await?;
    Ok(())
}

async fn actions(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let tenant = Tenant::new(ctx, "actions", json!({}), "vms").await?;
    tenant.create_pod(ticking_vm("vm")).await?;
    tenant.until("vm", "the VM pod runs", running).await?;
    tenant
        .console("vm", "the guest counts", |log| ticks(log).len() >= 2)
        .await?;

    // Reboot, in Arktos' own CustomAction form: a second boot.
    let reboot = tenant
        .act("vm", json!({"apiVersion": "v1", "kind": "CustomAction", "operation": "Reboot", "rebootParams": {"delayInSeconds": 1}}))
        .await?;
    ensure!(
        reboot["status"]["operation"] == "reboot",
        "{}",
        reboot["status"]
    );
    tenant
        .console("vm", "the console shows a second boot", |log| {
            log.matches("ARKTOS-GUEST-BOOTED").count() == 2
        })
        .await?;
    tenant
        .console("vm", "the rebooted guest counts", |log| {
            let after = log.rsplit("ARKTOS-GUEST-BOOTED").next().unwrap_or_default();
            ticks(after).len() >= 2
        })
        .await?;

    // Snapshot, a change in the guest (its counter runs on), restore: the
    // counter is back where it was at the snapshot.
    let snapshot = tenant
        .act("vm", json!({"spec": {"snapshot": {"name": "before"}}}))
        .await?;
    ensure!(
        snapshot["status"]["snapshot"]["memory"] == true,
        "{}",
        snapshot["status"]
    );
    let at_snapshot = ticks(&tenant.log("vm").await).last().copied().unwrap_or(0);
    tenant
        .until("vm", "the snapshot is listed", |p| {
            p["status"]["virtualMachineStatus"]["snapshots"]
                .as_array()
                .is_some_and(|s| s.contains(&json!("before")))
        })
        .await?;
    let changed = tenant
        .console("vm", "the guest changes after the snapshot", |log| {
            ticks(log).last().is_some_and(|t| *t >= at_snapshot + 6)
        })
        .await?;
    let before_restore = changed.len();
    let latest = ticks(&changed).last().copied().unwrap_or(0);
    tenant
        .act("vm", json!({"spec": {"restore": {"snapshot": "before"}}}))
        .await?;
    // The old guest may still print a tick or two between the read above
    // and the restore: what counts is that the counter goes back to where
    // it was at the snapshot.
    let back = |log: &str| {
        log.get(before_restore..).is_some_and(|after| {
            ticks(after)
                .iter()
                .any(|t| *t <= at_snapshot + 3 && *t < latest)
        })
    };
    let restored = tenant
        .console(
            "vm",
            "the guest counts again from the snapshot after the restore",
            back,
        )
        .await
        .with_context(|| {
            format!("at the snapshot it was at {at_snapshot}, before the restore at {latest}")
        })?;
    let resumed = ticks(&restored[before_restore..]);
    eprintln!(
        "  restore: ticks {at_snapshot} at the snapshot, {latest} before the restore, then {resumed:?}"
    );

    // Stop and start through Actions: the pod keeps running, its VM does not.
    tenant.act("vm", json!({"spec": {"stop": {}}})).await?;
    let stopped = tenant
        .until("vm", "the VM reports Shutdown", |p| {
            p["status"]["virtualMachineStatus"]["powerState"] == "Shutdown"
        })
        .await?;
    let state = virsh_state_of(&stopped).await?;
    ensure!(
        state == "shut off",
        "libvirt says the VM is {state:?}; the pod reports {}",
        stopped["status"]["virtualMachineStatus"]
    );
    ensure!(
        stopped["status"]["phase"] == "Running"
            && stopped["status"]["virtualMachineStatus"]["restartCount"] == 0,
        "stopping the VM disturbed its pod: {}",
        stopped["status"]
    );
    let boots = tenant
        .log("vm")
        .await
        .matches("ARKTOS-GUEST-BOOTED")
        .count();
    tenant.act("vm", json!({"spec": {"start": {}}})).await?;
    let started = tenant
        .until("vm", "the VM reports Running", |p| {
            p["status"]["virtualMachineStatus"]["powerState"] == "Running"
        })
        .await?;
    ensure!(
        virsh_state_of(&started).await? == "running",
        "libvirt says the VM is off"
    );
    tenant
        .console("vm", "the started VM boots", |log| {
            log.matches("ARKTOS-GUEST-BOOTED").count() > boots
        })
        .await?;
    let table = tenant.kubectl(ctx, &["get", "actions"], None).await?;
    ensure!(
        table.contains("POD")
            && table.contains("OPERATION")
            && table.contains("PHASE")
            && table.contains("restore")
            && table.contains("Succeeded"),
        "kubectl get actions:\n{table}"
    );

    // An Action applied as a plain object (not through pods/{name}/action):
    // arktos-operators bind it to the pod's node, the node agent carries it
    // out; one naming a container pod is refused by the operators.
    tenant
        .create_pod(serde_json::to_value(crate::support::restricted_pod(
            "plain",
        ))?)
        .await?;
    let direct = |name: &str, pod: &str| {
        format!(
            "apiVersion: vm.arktos.io/v1alpha1\nkind: Action\nmetadata:\n  name: {name}\nspec:\n  podName: {pod}\n  snapshot:\n    name: applied\n"
        )
    };
    tenant
        .kubectl(ctx, &["apply", "-f", "-"], Some(&direct("applied", "vm")))
        .await?;
    tenant
        .kubectl(ctx, &["apply", "-f", "-"], Some(&direct("wrong", "plain")))
        .await?;
    let tenant_ref = &tenant;
    let phase = move |name: &'static str| async move {
        tenant_ref
            .kubectl(
                ctx,
                &[
                    "get",
                    "action",
                    name,
                    "-o",
                    "jsonpath={.status.phase}|{.status.message}",
                ],
                None,
            )
            .await
    };
    eventually(
        "the applied Action succeeds",
        Duration::from_secs(60),
        || async move { Ok(phase("applied").await?.starts_with("Succeeded")) },
    )
    .await?;
    eventually(
        "the Action on a container pod is refused",
        Duration::from_secs(60),
        || async move {
            let out = phase("wrong").await?;
            Ok(out.starts_with("Failed") && out.contains("not a VM pod"))
        },
    )
    .await?;
    // Finished Actions are deleted after the retention (a minute here).
    eventually(
        "finished Actions are garbage-collected",
        Duration::from_secs(150),
        || async move {
            let left = tenant_ref
                .kubectl(ctx, &["get", "actions", "-o", "name"], None)
                .await?;
            Ok(!left.contains("vm-reboot-") && !left.contains("/applied"))
        },
    )
    .await?;
    delete_pods(&tenant, &["vm", "plain"]).await
}

async fn power_resize_hot_plug(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let tenant = Tenant::new(ctx, "vmlive", json!({}), "vms").await?;
    tenant.create_pod(ticking_vm("vm")).await?;
    tenant.until("vm", "the VM pod runs", running).await?;
    tenant
        .console("vm", "the guest booted", |log| {
            log.contains("ARKTOS-GUEST-STATE")
        })
        .await?;

    // powerSpec Shutdown keeps the pod, its node and disk; Running boots again.
    tenant
        .patch_pod(
            "vm",
            json!({"spec": {"virtualMachine": {"powerSpec": "Shutdown"}}}),
        )
        .await?
        .map_err(|s| anyhow::anyhow!("powerSpec Shutdown: {}", s.message))?;
    let off = tenant
        .until("vm", "powerSpec Shutdown is carried out", |p| {
            p["spec"]["virtualMachine"]["powerSpec"] == "Shutdown"
                && p["status"]["virtualMachineStatus"]["powerState"] == "Shutdown"
        })
        .await?;
    let state = virsh_state_of(&off).await?;
    ensure!(
        state == "shut off",
        "libvirt says the VM is {state:?}; the pod reports {}",
        off["status"]["virtualMachineStatus"]
    );
    ensure!(
        off["status"]["phase"] == "Running",
        "the pod stopped: {}",
        off["status"]
    );
    tenant
        .patch_pod(
            "vm",
            json!({"spec": {"virtualMachine": {"powerSpec": "Running"}}}),
        )
        .await?
        .map_err(|s| anyhow::anyhow!("powerSpec Running: {}", s.message))?;
    tenant
        .until("vm", "powerSpec Running is carried out", |p| {
            p["status"]["virtualMachineStatus"]["powerState"] == "Running"
        })
        .await?;
    tenant
        .console("vm", "the VM boots again", |log| {
            log.matches("ARKTOS-GUEST-BOOTED").count() == 2
        })
        .await?;

    // Resize from 1 to 2 vCPUs and 256 to 512 MiB, live.
    let resized = tenant
        .patch_pod("vm", json!({"spec": {"virtualMachine": {"resources": {
            "limits": {"cpu": "2", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "512Mi"}}}}}))
        .await?
        .map_err(|s| anyhow::anyhow!("resize: {}", s.message))?;
    ensure!(
        resized["spec"]["virtualMachine"]["resources"]["limits"]["cpu"] == "2",
        "{}",
        resized["spec"]
    );
    tenant
        .console("vm", "the guest sees 2 vCPUs and more memory", |log| {
            let state = guest_state(log);
            let kib: u64 = state
                .split_whitespace()
                .find_map(|f| f.strip_prefix("mem_kib="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            state.contains("cpus=2") && kib > 400 * 1024
        })
        .await?;
    tenant
        .until("vm", "the status reports the new size", |p| {
            let s = &p["status"]["virtualMachineStatus"];
            s["vcpus"] == 2 && s["memoryMiB"] == 512
        })
        .await?;

    // A NIC and a 64 MiB disk, plugged in and out while the VM runs.
    tenant
        .patch_pod(
            "vm",
            json!({"spec": {"nics": [{"name": "eth0"}, {"name": "eth1"}],
            "virtualMachine": {"disks": [{"name": "data", "size": "64Mi"}]}}}),
        )
        .await?
        .map_err(|s| anyhow::anyhow!("plugging: {}", s.message))?;
    tenant
        .console(
            "vm",
            "the guest sees a second NIC and a third disk",
            |log| {
                let state = guest_state(log);
                state.contains("nics=eth0,eth1") && state.contains("disks=vda,vdb,vdc")
            },
        )
        .await?;
    tenant
        .until("vm", "the status reports the NIC and disk", |p| {
            let s = &p["status"]["virtualMachineStatus"];
            s["nics"] == json!(["eth1"]) && s["disks"] == json!(["data"])
        })
        .await?;
    tenant
        .patch_pod(
            "vm",
            json!({"spec": {"nics": [{"name": "eth0"}], "virtualMachine": {"disks": null}}}),
        )
        .await?
        .map_err(|s| anyhow::anyhow!("unplugging: {}", s.message))?;
    tenant
        .console("vm", "the guest lost the NIC and the disk", |log| {
            let state = guest_state(log);
            state.contains("nics=eth0 ") && state.ends_with("disks=vda,vdb")
        })
        .await?;
    let last = tenant
        .until("vm", "the status reports them gone", |p| {
            let s = &p["status"]["virtualMachineStatus"];
            s["nics"] == json!([]) && s["disks"] == json!([])
        })
        .await?;
    ensure!(
        last["status"]["virtualMachineStatus"]["restartCount"] == 0,
        "the VM restarted: {}",
        last["status"]
    );
    delete_pods(&tenant, &["vm"]).await
}

async fn post_action(
    tenant: &Tenant,
    pod: &str,
    body: Value,
) -> anyhow::Result<Result<Value, kube::core::Status>> {
    let path = tenant.path(&format!("pods/{pod}/action"));
    tenant
        .call(http::Method::POST, &path, "application/json", body)
        .await
}

async fn refusals(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let tenant = Tenant::new(ctx, "vmbad", json!({}), "vms").await?;
    let other = Tenant::new(ctx, "vmother", json!({}), "vms").await?;
    tenant.create_pod(ticking_vm("vm")).await?;
    tenant
        .create_pod(serde_json::to_value(crate::support::restricted_pod(
            "plain",
        ))?)
        .await?;
    let vm = tenant.until("vm", "the VM pod runs", running).await?;

    let refused = |answer: Result<Value, kube::core::Status>,
                   code: u16,
                   words: &str,
                   what: &str|
     -> anyhow::Result<()> {
        match answer {
            Ok(value) => bail!("{what}: accepted: {value}"),
            Err(status) => {
                ensure!(
                    status.code == code && status.message.contains(words),
                    "{what}: expected {code} saying {words:?}, got {} {:?}",
                    status.code,
                    status.message
                );
                Ok(())
            }
        }
    };
    refused(
        post_action(&tenant, "plain", json!({"spec": {"reboot": {}}})).await?,
        422,
        "not a VM pod",
        "an action on a container pod",
    )?;
    refused(
        post_action(&other, "vm", json!({"spec": {"reboot": {}}})).await?,
        404,
        "not found",
        "an action on another tenant's pod",
    )?;
    refused(
        post_action(
            &tenant,
            "vm",
            json!({"spec": {"restore": {"snapshot": "never-taken"}}}),
        )
        .await?,
        422,
        "no such snapshot",
        "restore of an unknown snapshot",
    )?;
    refused(
        post_action(&tenant, "vm", json!({"spec": {"stop": {}, "start": {}}})).await?,
        422,
        "exactly one",
        "two operations at once",
    )?;
    refused(
        post_action(&tenant, "vm", json!({"operation": "Explode"})).await?,
        422,
        "Unsupported value",
        "an unknown Arktos operation",
    )?;

    // Resize above the VM's ceiling (4 vCPUs on this node): refused, unchanged.
    let tenant_ref = &tenant;
    eventually(
        "the node reports the VM's ceilings",
        Duration::from_secs(60),
        || async move {
            Ok(tenant_ref.pod("vm").await?["status"]["virtualMachineStatus"]["vcpus"] == 1)
        },
    )
    .await?;
    refused(
        tenant.patch_pod("vm", json!({"spec": {"virtualMachine": {"resources": {"limits": {"cpu": "8", "memory": "256Mi"}}}}})).await?,
        422,
        "above the VM's maximum",
        "a resize above the VM's maximum",
    )?;
    let after = tenant.pod("vm").await?;
    ensure!(
        after["spec"]["virtualMachine"]["resources"] == vm["spec"]["virtualMachine"]["resources"],
        "the refused resize changed the pod"
    );

    // Malformed VM pods: nothing is created.
    let malformed = [
        (
            json!({"virtualMachine": {"image": "x", "cpus": 2}}),
            "unknown field",
        ),
        (
            json!({"virtualMachine": {"image": "x"}, "containers": [{"name": "c", "image": "y"}]}),
            "not both",
        ),
        (json!({}), "containers or a virtualMachine"),
        (
            json!({"virtualMachine": {"image": "x", "powerSpec": "Paused"}}),
            "Unsupported value",
        ),
        (
            json!({"virtualMachine": {"image": "x", "keyPairName": "missing"}}),
            "keyPairName",
        ),
        (
            json!({"virtualMachine": {"name": "Bad_Name", "image": "x"}}),
            "DNS label",
        ),
    ];
    for (spec, words) in malformed {
        let pod =
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad"}, "spec": spec});
        let answer = tenant
            .call(
                http::Method::POST,
                &tenant.path("pods"),
                "application/json",
                pod,
            )
            .await?;
        refused(answer, 422, words, &format!("a malformed VM pod ({words})"))?;
        ensure!(
            tenant.pod("bad").await.is_err(),
            "a refused pod was created"
        );
    }
    // An unknown VM image: the pod says why it cannot start.
    let mut unknown = ticking_vm("noimage");
    unknown["spec"]["virtualMachine"]["image"] =
        json!("download.cirros-cloud.net/0.0.0/no-such-image.img");
    tenant.create_pod(unknown).await?;
    tenant
        .until("noimage", "the unknown image is reported", |p| {
            p["status"]["virtualMachineStatus"]["state"] == "Waiting"
                && p["status"]["virtualMachineStatus"]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("Image"))
        })
        .await?;
    delete_pods(&tenant, &["vm", "plain", "noimage"]).await
}
