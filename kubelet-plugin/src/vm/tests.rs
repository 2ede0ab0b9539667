//! The VM runtime's orchestration against a fake hypervisor and fake taps
//! (`fakes.rs`): what it does when the hypervisor is slow, unreachable, or
//! a guest will not power off, and the races fixed before, each held
//! midway on purpose. (No libvirt, no QEMU: what libvirt itself does is the
//! e2e suite's.)

use std::sync::Arc;

use arktos_crds::vm::shape::{POWER_RUNNING, POWER_SHUTDOWN};
use tokio::sync::Semaphore;

use super::domain::domain_name;
use super::fakes::{FakeHypervisor, FakeRuntime, Ping, runtime, vm_pod};
use super::network::tap_name;
use super::records::Phase;
use super::*;

#[tokio::test(start_paused = true)]
async fn a_hypervisor_that_does_not_answer_shows_as_slow_and_health_still_answers_at_once() {
    let rt = runtime(FakeHypervisor::new(Ping::Hangs)).await;
    assert!(rt.libvirt_health().answer.is_err(), "not asked yet");
    rt.check_libvirt_and_vms().await;
    let health = rt.libvirt_health();
    let reason = health.answer.expect_err("a hung hypervisor is not ready");
    assert!(reason.contains("did not answer within 5s"), "{reason}");
    assert!(health.checked_at.is_some());
}

#[tokio::test]
async fn an_unreachable_hypervisor_is_reported_with_its_reason() {
    let rt = runtime(FakeHypervisor::new(Ping::Refuses("socket gone".into()))).await;
    rt.check_libvirt_and_vms().await;
    let reason = rt.libvirt_health().answer.expect_err("unreachable");
    assert!(reason.contains("socket gone"), "{reason}");
}

#[tokio::test]
async fn a_hypervisor_that_answers_is_ready() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    rt.check_libvirt_and_vms().await;
    assert_eq!(rt.libvirt_health().answer.as_deref(), Ok("fake 1.0"));
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_ignores_the_power_button_is_destroyed_after_the_grace() {
    let mut fake = FakeHypervisor::new(Ping::Answers).running("arktos-x");
    fake.ignores_power_button = true;
    let rt = runtime(fake).await;
    let graceful = rt
        .power_off_domain("arktos-x", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(!graceful);
    assert_eq!(
        rt.libvirt.calls(),
        ["shutdown arktos-x", "destroy arktos-x"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_guest_that_powers_off_in_time_is_not_destroyed() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running("arktos-y")).await;
    let graceful = rt
        .power_off_domain("arktos-y", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(graceful);
    assert_eq!(rt.libvirt.calls(), ["shutdown arktos-y"]);
}

#[tokio::test(start_paused = true)]
async fn no_grace_destroys_at_once() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running("arktos-z")).await;
    let graceful = rt
        .power_off_domain("arktos-z", Duration::ZERO)
        .await
        .unwrap();
    assert!(!graceful);
    assert_eq!(rt.libvirt.calls(), ["destroy arktos-z"]);
}

#[tokio::test]
async fn a_guest_that_powered_itself_off_is_an_exited_container() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    vm_pod(&rt, "c1").await;
    rt.libvirt.set(&domain_name("c1"), false);
    rt.check_libvirt_and_vms().await;
    let c = rt.vms.known_container("c1").unwrap();
    assert_eq!((c.phase, c.reason.as_str()), (Phase::Exited, "Completed"));
}

#[tokio::test]
async fn a_vm_whose_domain_is_gone_exited_with_an_error() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    vm_pod(&rt, "c2").await;
    rt.check_libvirt_and_vms().await;
    let c = rt.vms.known_container("c2").unwrap();
    assert_eq!((c.phase, c.exit_code), (Phase::Exited, 255));
}

/// A race fixed before: the monitor read a VM whose domain an operation
/// (a restore) had stopped for a moment, and wrote it back as exited, so
/// the kubelet replaced the container. While the operation holds the VM,
/// the monitor leaves it alone.
#[tokio::test]
async fn the_monitor_leaves_a_vm_alone_while_an_operation_holds_it() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers)).await;
    vm_pod(&rt, "c3").await;
    rt.libvirt.set(&domain_name("c3"), false);
    let (held, _) = rt.hold_running("c3").await.unwrap();
    rt.check_libvirt_and_vms().await;
    assert_eq!(rt.vms.known_container("c3").unwrap().phase, Phase::Running);
    drop(held);
    rt.check_libvirt_and_vms().await;
    assert_eq!(rt.vms.known_container("c3").unwrap().phase, Phase::Exited);
}

/// A VM powered off by an Action or `powerSpec` is still a running
/// container to the kubelet (its pod keeps its node, disk and IP), and the
/// monitor does not take it for exited.
#[tokio::test]
async fn a_vm_powered_off_on_purpose_stays_a_running_container() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running(&domain_name("c4"))).await;
    vm_pod(&rt, "c4").await;
    assert!(rt.power_off("c4").await.unwrap());
    assert!(!rt.libvirt.is_active(&domain_name("c4")));
    assert_eq!(rt.taps.place(&tap_name("c4")), None, "its tap is gone");
    rt.check_libvirt_and_vms().await;
    let c = rt.vms.known_container("c4").unwrap();
    assert_eq!((c.phase, c.powered_off), (Phase::Running, true));
    assert!(!rt.power_off("c4").await.unwrap(), "off already: no change");
}

/// VM pod `id` restoring snapshot `clean` (with memory), held midway: its
/// domain destroyed, the revert waiting for a permit of the gate returned.
async fn midway_through_a_restore(
    id: &str,
) -> (
    Arc<FakeRuntime>,
    Arc<Semaphore>,
    tokio::task::JoinHandle<Result<(), tonic::Status>>,
) {
    let gate = Arc::new(Semaphore::new(0));
    let mut fake = FakeHypervisor::new(Ping::Answers)
        .running(&domain_name(id))
        .with_snapshot("clean", true);
    fake.revert_gate = Some(gate.clone());
    let rt = runtime(fake).await;
    vm_pod(&rt, id).await;
    let restore = tokio::spawn({
        let (rt, id) = (rt.clone(), id.to_string());
        async move { rt.restore(&id, "clean").await }
    });
    rt.libvirt
        .called(&format!("revert {} clean", domain_name(id)))
        .await;
    (rt, gate, restore)
}

/// A race fixed before: the kubelet stopped a VM while a restore had its
/// domain destroyed and was reverting it. The stop now waits for the
/// restore, then powers off the VM the restore left running; the record
/// says what the stop did, not what the restore saw.
#[tokio::test]
async fn a_stop_during_a_restore_waits_for_it_then_stops_the_restored_vm() {
    let (rt, gate, restore) = midway_through_a_restore("c6").await;
    let stop = tokio::spawn({
        let rt = rt.clone();
        async move { rt.stop_container("c6", 10).await }
    });
    // Midway: the domain is destroyed. The stop and the monitor wait or
    // look away; neither marks the VM exited.
    rt.check_libvirt_and_vms().await;
    tokio::task::yield_now().await;
    assert!(!stop.is_finished(), "the stop waits for the restore");
    assert_eq!(rt.vms.known_container("c6").unwrap().phase, Phase::Running);

    gate.add_permits(1);
    restore.await.unwrap().unwrap();
    stop.await.unwrap().unwrap();
    let c = rt.vms.known_container("c6").unwrap();
    assert_eq!(
        (c.phase, c.exit_code, c.reason.as_str()),
        (Phase::Exited, 0, "Completed")
    );
    let name = domain_name("c6");
    assert_eq!(
        rt.libvirt.calls(),
        [
            format!("destroy {name}"),
            format!("revert {name} clean"),
            format!("shutdown {name}")
        ]
    );
    assert_eq!(rt.taps.place(&tap_name("c6")), None);
}

/// A race fixed before: the agent carried out a pod's `powerSpec` again
/// after a start Action, powering the VM off once more. A `powerSpec` is
/// carried out once, when it changes; Actions in between stand.
#[tokio::test]
async fn a_power_spec_is_carried_out_once_so_actions_after_it_stand() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running(&domain_name("c7"))).await;
    vm_pod(&rt, "c7").await;
    let name = domain_name("c7");

    assert_eq!(
        rt.apply_power_spec("c7", POWER_SHUTDOWN).await.unwrap(),
        Some(true)
    );
    assert!(!rt.libvirt.is_active(&name));
    assert!(rt.power_on("c7").await.unwrap(), "a start Action");
    assert_eq!(
        rt.taps.place(&tap_name("c7")).as_deref(),
        Some("ns-c7"),
        "the tap is back in the pod"
    );

    assert_eq!(
        rt.apply_power_spec("c7", POWER_SHUTDOWN).await.unwrap(),
        None
    );
    assert!(rt.libvirt.is_active(&name), "the Action stands");
    assert_eq!(
        rt.apply_power_spec("c7", POWER_RUNNING).await.unwrap(),
        Some(false)
    );
}

/// Both at once: whichever holds the VM first finishes before the other
/// starts, so the VM ends as the last of them asked.
#[tokio::test]
async fn a_power_spec_and_an_action_at_once_run_one_after_the_other() {
    let rt = runtime(FakeHypervisor::new(Ping::Answers).running(&domain_name("c8"))).await;
    vm_pod(&rt, "c8").await;
    let held = rt.vms.hold("s-c8").await;
    let spec = tokio::spawn({
        let rt = rt.clone();
        async move { rt.apply_power_spec("c8", POWER_SHUTDOWN).await }
    });
    tokio::task::yield_now().await;
    let action = tokio::spawn({
        let rt = rt.clone();
        async move { rt.power_on("c8").await }
    });
    tokio::task::yield_now().await;
    assert!(!spec.is_finished() && !action.is_finished());
    drop(held);
    assert_eq!(spec.await.unwrap().unwrap(), Some(true));
    assert!(action.await.unwrap().unwrap());
    let c = rt.vms.known_container("c8").unwrap();
    assert!(!c.powered_off && rt.libvirt.is_active(&domain_name("c8")));
    assert_eq!(c.power_spec_applied, POWER_SHUTDOWN);
}

/// What the agent reports is read once no operation holds the VM: never
/// the destroyed domain in the middle of a restore.
#[tokio::test]
async fn observe_waits_for_an_operation_and_reports_what_it_left() {
    let (rt, gate, restore) = midway_through_a_restore("c9").await;
    let observe = tokio::spawn({
        let rt = rt.clone();
        async move { rt.observe("c9").await }
    });
    tokio::task::yield_now().await;
    assert!(!observe.is_finished());
    gate.add_permits(1);
    restore.await.unwrap().unwrap();
    let observed = observe.await.unwrap().unwrap();
    assert_eq!(observed.power_state, POWER_RUNNING);
    assert_eq!(observed.snapshots, ["clean"]);
}
