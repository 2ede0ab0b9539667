//! The node agent between fakes: the in-memory API server
//! (`arktos_crds::fake_api`) and a VM runtime over the fake hypervisor
//! (`vm/fakes.rs`). What it writes to the API, and what it asks of the VM.

use std::sync::Arc;

use arktos_crds::fake_api::FakeApi;
use arktos_crds::vm::action::Action;
use arktos_crds::vm::annotations as ann;
use arktos_crds::vm::shape::{Observed, POWER_SHUTDOWN};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::Agent;
use crate::vm::domain::domain_name;
use crate::vm::fakes::{FakeHypervisor, FakeRuntime, FakeTaps, Ping, runtime, vm_pod};

const POD: &str = "/api/v1/namespaces/default/pods/pod-c1";
const ACTIONS: &str = "/apis/vm.arktos.io/v1alpha1/namespaces/default/actions";

/// An agent of node `node-1` whose runtime holds VM pod `c1` (pod
/// `pod-c1`, running), and the API server it talks to, holding the pod.
async fn agent(annotations: Value) -> (Agent<FakeHypervisor, FakeTaps>, FakeApi) {
    let vm: Arc<FakeRuntime> =
        runtime(FakeHypervisor::new(Ping::Answers).running(&domain_name("c1"))).await;
    vm_pod(&vm, "c1").await;
    let api = FakeApi::default();
    api.put(
        POD,
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "pod-c1", "namespace": "default", "uid": "uid-c1",
            "annotations": annotations,
        }, "spec": {"runtimeClassName": "arktos-vm", "nodeName": "node-1", "containers": []}}),
    );
    let state = std::env::temp_dir().join(format!("arktos-agent-test-{}", crate::ids::new_id()));
    std::fs::create_dir_all(state.join("actions")).unwrap();
    (Agent::new(api.client(), "node-1", vm, &state), api)
}

fn action(name: &str, spec: Value) -> Action {
    serde_json::from_value(json!({
        "apiVersion": "vm.arktos.io/v1alpha1", "kind": "Action",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": spec,
    }))
    .unwrap()
}

fn pod(api: &FakeApi) -> Pod {
    serde_json::from_value(api.get(POD).unwrap()).unwrap()
}

fn observed(api: &FakeApi) -> Observed {
    let pod = api.get(POD).unwrap();
    Observed::from_annotation(pod["metadata"]["annotations"][ann::OBSERVED].as_str())
}

#[tokio::test]
async fn a_stop_action_powers_the_vm_off_and_reports_it() {
    let (agent, api) = agent(json!({})).await;
    let stop = action("stop", json!({"podName": "pod-c1", "stop": {}}));
    api.put(
        &format!("{ACTIONS}/stop"),
        serde_json::to_value(&stop).unwrap(),
    );
    agent.carry_out(stop).await;

    let status = &api.get(&format!("{ACTIONS}/stop")).unwrap()["status"];
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["message"], "the VM was powered off");
    assert_eq!(status["conditions"][0]["type"], "Complete");
    assert!(!agent.vms.hypervisor().is_active(&domain_name("c1")));
    assert_eq!(observed(&api).power_state, POWER_SHUTDOWN);
}

/// An outcome kept on disk before arktos-node restarted is reported, and
/// the VM is not acted on again.
#[tokio::test]
async fn an_action_finished_before_a_restart_is_reported_not_done_again() {
    let (agent, api) = agent(json!({})).await;
    let stop = action("stop", json!({"podName": "pod-c1", "stop": {}}));
    std::fs::write(
        agent.outcomes.join("uid-stop.json"),
        json!({"phase": "Succeeded", "message": "the VM was powered off"}).to_string(),
    )
    .unwrap();
    agent.carry_out(stop).await;
    let status = &api.get(&format!("{ACTIONS}/stop")).unwrap()["status"];
    assert_eq!(status["phase"], "Succeeded");
    assert!(
        agent.vms.hypervisor().is_active(&domain_name("c1")),
        "not stopped twice"
    );
}

#[tokio::test]
async fn an_action_on_a_pod_without_a_vm_here_fails_with_why() {
    let (agent, api) = agent(json!({})).await;
    agent
        .carry_out(action("x", json!({"podName": "elsewhere", "reboot": {}})))
        .await;
    let status = &api.get(&format!("{ACTIONS}/x")).unwrap()["status"];
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["message"], r#"pod "elsewhere" not found"#);
}

#[tokio::test]
async fn an_invalid_action_fails_without_touching_the_vm() {
    let (agent, api) = agent(json!({})).await;
    agent
        .carry_out(action(
            "two",
            json!({"podName": "pod-c1", "stop": {}, "start": {}}),
        ))
        .await;
    let status = &api.get(&format!("{ACTIONS}/two")).unwrap()["status"];
    assert_eq!(status["phase"], "Failed");
    assert!(agent.vms.hypervisor().is_active(&domain_name("c1")));
}

/// A pod's annotations are carried out: `powerSpec`, then extra NICs and
/// disks, and what the VM has is written back in `observed`.
#[tokio::test]
async fn a_vm_pod_gets_its_power_spec_nics_and_disks_and_says_what_it_has() {
    let (agent, api) = agent(json!({
        ann::POWER_SPEC: POWER_SHUTDOWN,
        ann::NICS: r#"[{"name":"eth0"},{"name":"eth1"}]"#,
    }))
    .await;
    agent.reconcile(&pod(&api)).await;
    assert!(!agent.vms.hypervisor().is_active(&domain_name("c1")));
    let calls = agent.vms.hypervisor().calls();
    assert!(
        calls.contains(&format!("attach {}", domain_name("c1"))),
        "{calls:?}"
    );
    let observed = observed(&api);
    assert_eq!(observed.power_state, POWER_SHUTDOWN);
    assert_eq!(observed.message, "");

    // Reconciled again, nothing changes: powerSpec is carried out once.
    let writes = api.writes().len();
    agent.reconcile(&pod(&api)).await;
    assert_eq!(api.writes().len(), writes, "{:?}", api.writes());
}
