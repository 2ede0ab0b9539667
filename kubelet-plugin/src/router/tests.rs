//! The router between its two back ends, both fakes: a VM runtime over a
//! fake hypervisor (`vm/fakes.rs`) and a containerd that records what it is
//! asked (`fake_containerd.rs`). Which back end answers each call, and how
//! their answers are merged, is the router's; what each does is not.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use prost::Message;
use tonic::{Code, Request};

use super::Router;
use super::fake_containerd::{FakeContainerd, Reply};
use crate::metrics::Metrics;
use crate::vm::fakes::{FakeHypervisor, FakeRuntime, FakeTaps, Ping, runtime, vm_pod};

/// A router over a runtime holding VM pod `c1` (sandbox `s-c1`) and a
/// containerd answering as `replies` say.
async fn router(
    ping: Ping,
    replies: HashMap<&'static str, Reply>,
) -> (Router<FakeHypervisor, FakeTaps>, FakeContainerd) {
    let vm: Arc<FakeRuntime> = runtime(FakeHypervisor::new(ping)).await;
    vm_pod(&vm, "c1").await;
    let containerd = FakeContainerd::start(replies);
    let router = Router {
        vm,
        containerd: containerd.client.clone(),
        metrics: Arc::new(Metrics::new()),
    };
    (router, containerd)
}

fn sandbox_ids(items: &[cri::PodSandbox]) -> Vec<&str> {
    let mut ids: Vec<&str> = items.iter().map(|s| s.id.as_str()).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn calls_about_a_vm_pod_never_reach_containerd() {
    let (router, containerd) = router(Ping::Answers, HashMap::new()).await;
    let status = router
        .pod_sandbox_status(Request::new(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "s-c1".into(),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status.unwrap().metadata.unwrap().name, "pod-c1");
    let container = router
        .container_status(Request::new(cri::ContainerStatusRequest {
            container_id: "c1".into(),
            verbose: false,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        container.status.unwrap().state,
        cri::ContainerState::ContainerRunning as i32
    );
    assert_eq!(containerd.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn exec_and_attach_into_a_vm_are_refused_with_what_to_do_instead() {
    let (router, containerd) = router(Ping::Answers, HashMap::new()).await;
    let exec = router
        .exec_sync(Request::new(cri::ExecSyncRequest {
            container_id: "c1".into(),
            cmd: vec!["true".into()],
            timeout: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(exec.code(), Code::Unimplemented);
    assert!(
        exec.message().contains("kubectl logs"),
        "{}",
        exec.message()
    );
    let attach = router
        .attach(Request::new(cri::AttachRequest {
            container_id: "c1".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(attach.code(), Code::Unimplemented);
    assert_eq!(containerd.calls(), Vec::<String>::new());
    let metrics = router.metrics.render();
    assert!(
        metrics.contains(r#"method="ExecSync",backend="Vm",code="Unimplemented""#),
        "{metrics}"
    );
}

#[tokio::test]
async fn calls_about_other_pods_go_to_containerd() {
    let (router, containerd) = router(Ping::Answers, HashMap::new()).await;
    router
        .pod_sandbox_status(Request::new(cri::PodSandboxStatusRequest {
            pod_sandbox_id: "ctr-sandbox".into(),
            verbose: false,
        }))
        .await
        .unwrap();
    router
        .exec_sync(Request::new(cri::ExecSyncRequest {
            container_id: "ctr-container".into(),
            cmd: vec!["true".into()],
            timeout: 0,
        }))
        .await
        .unwrap();
    assert_eq!(containerd.calls(), ["PodSandboxStatus", "ExecSync"]);
}

/// The CRI's stops and removals are idempotent; containerd answers
/// NotFound for an ID it no longer knows, the kubelet expects success.
#[tokio::test]
async fn stopping_or_removing_what_neither_back_end_knows_succeeds() {
    let gone = Reply::Fails(Code::NotFound, "not found");
    let (router, containerd) = router(
        Ping::Answers,
        HashMap::from([
            ("StopPodSandbox", gone.clone()),
            ("RemovePodSandbox", gone.clone()),
            ("StopContainer", gone.clone()),
            ("RemoveContainer", gone),
        ]),
    )
    .await;
    let sandbox = || "long-gone".to_string();
    router
        .stop_pod_sandbox(Request::new(cri::StopPodSandboxRequest {
            pod_sandbox_id: sandbox(),
        }))
        .await
        .unwrap();
    router
        .remove_pod_sandbox(Request::new(cri::RemovePodSandboxRequest {
            pod_sandbox_id: sandbox(),
        }))
        .await
        .unwrap();
    router
        .stop_container(Request::new(cri::StopContainerRequest {
            container_id: sandbox(),
            timeout: 0,
        }))
        .await
        .unwrap();
    router
        .remove_container(Request::new(cri::RemoveContainerRequest {
            container_id: sandbox(),
        }))
        .await
        .unwrap();
    assert_eq!(containerd.calls().len(), 4);
}

#[tokio::test]
async fn lists_hold_both_back_ends_pods() {
    let theirs = cri::ListPodSandboxResponse {
        items: vec![cri::PodSandbox {
            id: "ctr-sandbox".into(),
            ..Default::default()
        }],
    };
    let (router, _containerd) = router(
        Ping::Answers,
        HashMap::from([("ListPodSandbox", Reply::Message(theirs.encode_to_vec()))]),
    )
    .await;
    let listed = router
        .list_pod_sandbox(Request::new(cri::ListPodSandboxRequest { filter: None }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sandbox_ids(&listed.items), ["ctr-sandbox", "s-c1"]);
}

/// A list missing containerd's half would make the kubelet think its
/// container pods died: containerd's failure is the answer.
#[tokio::test]
async fn a_list_fails_when_containerd_fails_rather_than_answer_half() {
    let (router, _containerd) = router(
        Ping::Answers,
        HashMap::from([(
            "ListContainers",
            Reply::Fails(Code::Unavailable, "containerd restarting"),
        )]),
    )
    .await;
    let err = router
        .list_containers(Request::new(cri::ListContainersRequest { filter: None }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn status_adds_the_vm_handler_and_libvirt_as_a_condition() {
    let (router, containerd) = router(Ping::Refuses("socket gone".into()), HashMap::new()).await;
    router.vm.check_libvirt_and_vms().await;
    let status = router
        .status(Request::new(cri::StatusRequest { verbose: false }))
        .await
        .unwrap()
        .into_inner();
    let vm = status
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.r#type == "ArktosVMReady")
        .expect("the VM condition");
    assert!(!vm.status);
    assert_eq!(vm.reason, "LibvirtUnreachable");
    assert!(vm.message.contains("socket gone"), "{}", vm.message);
    assert!(
        status
            .runtime_handlers
            .iter()
            .any(|h| h.name == "arktos-vm")
    );
    assert_eq!(containerd.calls(), ["Status"]);
}

#[tokio::test]
async fn version_names_arktos_node_and_the_containerd_behind_it() {
    let theirs = cri::VersionResponse {
        version: "0.1.0".into(),
        runtime_name: "containerd".into(),
        runtime_version: "v1.7".into(),
        runtime_api_version: "v1".into(),
    };
    let (router, _containerd) = router(
        Ping::Answers,
        HashMap::from([("Version", Reply::Message(theirs.encode_to_vec()))]),
    )
    .await;
    let version = router
        .version(Request::new(cri::VersionRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "arktos-node");
    assert!(
        version.runtime_version.contains("containerd v1.7"),
        "{}",
        version.runtime_version
    );
}

/// An image that neither the kubelet (by handler or pod) nor the VM image
/// cache marks as a VM image is containerd's.
#[tokio::test]
async fn image_status_of_an_unknown_container_image_asks_containerd() {
    let (router, containerd) = router(Ping::Answers, HashMap::new()).await;
    router
        .image_status(Request::new(cri::ImageStatusRequest {
            image: Some(cri::ImageSpec {
                image: "registry.test/app:1".into(),
                ..Default::default()
            }),
            verbose: false,
        }))
        .await
        .unwrap();
    assert_eq!(containerd.calls(), ["ImageStatus"]);
}
