//! The CRI services the kubelet talks to: each call goes to the VM back end
//! when it concerns a VM sandbox, container or image, and to containerd,
//! unchanged, otherwise. Lists and stats merge both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_server::ImageService;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::cri_client::CriClient;
use crate::metrics::{Backend, Metrics};
use crate::vm::hypervisor::Hypervisor;
use crate::vm::libvirt::Libvirt;
use crate::vm::taps::{HostTaps, Taps};
use crate::vm::{HANDLER, LibvirtHealth, VmRuntime};

const NO_STREAMS: &str = "is not available in VM containers (arktos-vm): the guest runs no container runtime; read its console with `kubectl logs` or reach it over the pod network";

/// The CRI server arktos-node is: VM calls to `vm`, the rest to containerd.
pub struct Router<H: Hypervisor = Libvirt, N: Taps = HostTaps> {
    pub vm: Arc<VmRuntime<H, N>>,
    pub containerd: CriClient,
    pub metrics: Arc<Metrics>,
}

impl<H: Hypervisor, N: Taps> Clone for Router<H, N> {
    fn clone(&self) -> Self {
        Self {
            vm: self.vm.clone(),
            containerd: self.containerd.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

type CriResult<T> = Result<Response<T>, Status>;

impl<H: Hypervisor, N: Taps> Router<H, N> {
    fn record<T>(
        &self,
        method: &'static str,
        backend: Backend,
        started: Instant,
        result: &Result<T, Status>,
    ) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics
            .observe(method, backend, code, started.elapsed());
        if let Err(s) = result
            && backend == Backend::Vm
        {
            tracing::warn!(method, code = ?s.code(), message = %s.message(), "VM call failed");
        }
    }

    async fn vm<T>(
        &self,
        method: &'static str,
        fut: impl std::future::Future<Output = Result<T, Status>>,
    ) -> CriResult<T> {
        let started = Instant::now();
        let result = fut.await;
        self.record(method, Backend::Vm, started, &result);
        result.map(Response::new)
    }

    /// Deletes and stops are idempotent in the CRI: an ID neither back end
    /// knows (already removed) is success, which containerd 1.6 answers
    /// with NotFound.
    async fn passthrough_idempotent<T: Default>(
        &self,
        method: &'static str,
        fut: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> CriResult<T> {
        match self.passthrough(method, fut).await {
            Err(s) if s.code() == tonic::Code::NotFound => Ok(Response::new(T::default())),
            other => other,
        }
    }

    async fn passthrough<T>(
        &self,
        method: &'static str,
        fut: impl std::future::Future<Output = Result<Response<T>, Status>>,
    ) -> CriResult<T> {
        let started = Instant::now();
        let result = fut.await;
        self.record(method, Backend::Containerd, started, &result);
        result
    }

    /// Whether a pulled or inspected image is a VM image: the kubelet names
    /// the pod's sandbox, or the handler, or the reference has a VM form.
    async fn is_vm_image(
        &self,
        spec: Option<&cri::ImageSpec>,
        sandbox: Option<&cri::PodSandboxConfig>,
    ) -> bool {
        let Some(spec) = spec else {
            return false;
        };
        if spec.runtime_handler == HANDLER {
            return true;
        }
        if let Some(uid) = sandbox
            .and_then(|s| s.metadata.as_ref())
            .map(|m| m.uid.as_str())
            && self.vm.sandbox_of_pod(uid).is_some()
        {
            return true;
        }
        self.vm.images.is_vm_image(&spec.image).await
    }
}

fn vm_image(img: &crate::vm::images::CachedImage) -> cri::Image {
    cri::Image {
        id: img.id.clone(),
        repo_tags: img.names.clone(),
        repo_digests: Vec::new(),
        size: img.size,
        spec: Some(cri::ImageSpec {
            image: img.id.clone(),
            runtime_handler: HANDLER.to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `ArktosVMReady` condition from the monitor's last look at libvirt
/// (never a libvirt call of its own: a slow libvirt must not time Status out).
fn vm_condition(health: &LibvirtHealth, domain_type: &str) -> cri::RuntimeCondition {
    let stale = health
        .checked_at
        .is_none_or(|at| at.elapsed() > Duration::from_secs(STALE_HEALTH_SECS));
    let (status, reason, message) = match &health.answer {
        _ if stale => (
            false,
            "LibvirtSlow",
            format!("libvirt has not answered for more than {STALE_HEALTH_SECS}s"),
        ),
        Ok(version) => (true, "", format!("{version}, {domain_type}")),
        Err(e) => (false, "LibvirtUnreachable", e.clone()),
    };
    cri::RuntimeCondition {
        r#type: "ArktosVMReady".to_string(),
        status,
        reason: reason.to_string(),
        message,
    }
}

/// The monitor asks every second and gives up on an answer after five; an
/// answer older than this means it is stuck in a libvirt call.
const STALE_HEALTH_SECS: u64 = 10;

#[tonic::async_trait]
impl<H: Hypervisor, N: Taps> RuntimeService for Router<H, N> {
    async fn version(
        &self,
        request: Request<cri::VersionRequest>,
    ) -> CriResult<cri::VersionResponse> {
        let mut inner = self
            .passthrough(
                "Version",
                self.containerd.runtime().version(request.into_inner()),
            )
            .await?
            .into_inner();
        inner.runtime_version = format!(
            "{} (arktos-vm; containerd {} {})",
            env!("CARGO_PKG_VERSION"),
            inner.runtime_name,
            inner.runtime_version
        );
        inner.runtime_name = "arktos-node".to_string();
        Ok(Response::new(inner))
    }

    async fn run_pod_sandbox(
        &self,
        request: Request<cri::RunPodSandboxRequest>,
    ) -> CriResult<cri::RunPodSandboxResponse> {
        let req = request.into_inner();
        if req.runtime_handler == HANDLER {
            let config = req.config.unwrap_or_default();
            return self
                .vm("RunPodSandbox", async {
                    let pod_sandbox_id = self.vm.run_sandbox(config).await?;
                    Ok(cri::RunPodSandboxResponse { pod_sandbox_id })
                })
                .await;
        }
        self.passthrough(
            "RunPodSandbox",
            self.containerd.runtime().run_pod_sandbox(req),
        )
        .await
    }

    async fn stop_pod_sandbox(
        &self,
        request: Request<cri::StopPodSandboxRequest>,
    ) -> CriResult<cri::StopPodSandboxResponse> {
        let req = request.into_inner();
        if self.vm.owns_sandbox(&req.pod_sandbox_id) {
            return self
                .vm("StopPodSandbox", async {
                    self.vm.stop_sandbox(&req.pod_sandbox_id).await?;
                    Ok(cri::StopPodSandboxResponse {})
                })
                .await;
        }
        self.passthrough_idempotent(
            "StopPodSandbox",
            self.containerd.runtime().stop_pod_sandbox(req),
        )
        .await
    }

    async fn remove_pod_sandbox(
        &self,
        request: Request<cri::RemovePodSandboxRequest>,
    ) -> CriResult<cri::RemovePodSandboxResponse> {
        let req = request.into_inner();
        if self.vm.owns_sandbox(&req.pod_sandbox_id) {
            return self
                .vm("RemovePodSandbox", async {
                    self.vm.remove_sandbox(&req.pod_sandbox_id).await?;
                    Ok(cri::RemovePodSandboxResponse {})
                })
                .await;
        }
        self.passthrough_idempotent(
            "RemovePodSandbox",
            self.containerd.runtime().remove_pod_sandbox(req),
        )
        .await
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> CriResult<cri::PodSandboxStatusResponse> {
        let req = request.into_inner();
        if self.vm.owns_sandbox(&req.pod_sandbox_id) {
            return self
                .vm(
                    "PodSandboxStatus",
                    self.vm.sandbox_status(&req.pod_sandbox_id, req.verbose),
                )
                .await;
        }
        self.passthrough(
            "PodSandboxStatus",
            self.containerd.runtime().pod_sandbox_status(req),
        )
        .await
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> CriResult<cri::ListPodSandboxResponse> {
        let req = request.into_inner();
        let mut items = self.vm.list_sandboxes(req.filter.as_ref());
        let theirs = self
            .passthrough(
                "ListPodSandbox",
                self.containerd.runtime().list_pod_sandbox(req),
            )
            .await?
            .into_inner();
        items.extend(theirs.items);
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn create_container(
        &self,
        request: Request<cri::CreateContainerRequest>,
    ) -> CriResult<cri::CreateContainerResponse> {
        let req = request.into_inner();
        if self.vm.owns_sandbox(&req.pod_sandbox_id) {
            let config = req.config.unwrap_or_default();
            return self
                .vm("CreateContainer", async {
                    let container_id = self
                        .vm
                        .create_container(&req.pod_sandbox_id, config)
                        .await?;
                    Ok(cri::CreateContainerResponse { container_id })
                })
                .await;
        }
        self.passthrough(
            "CreateContainer",
            self.containerd.runtime().create_container(req),
        )
        .await
    }

    async fn start_container(
        &self,
        request: Request<cri::StartContainerRequest>,
    ) -> CriResult<cri::StartContainerResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("StartContainer", async {
                    self.vm.start_container(&req.container_id).await?;
                    Ok(cri::StartContainerResponse {})
                })
                .await;
        }
        self.passthrough(
            "StartContainer",
            self.containerd.runtime().start_container(req),
        )
        .await
    }

    async fn stop_container(
        &self,
        request: Request<cri::StopContainerRequest>,
    ) -> CriResult<cri::StopContainerResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("StopContainer", async {
                    self.vm
                        .stop_container(&req.container_id, req.timeout)
                        .await?;
                    Ok(cri::StopContainerResponse {})
                })
                .await;
        }
        self.passthrough_idempotent(
            "StopContainer",
            self.containerd.runtime().stop_container(req),
        )
        .await
    }

    async fn remove_container(
        &self,
        request: Request<cri::RemoveContainerRequest>,
    ) -> CriResult<cri::RemoveContainerResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("RemoveContainer", async {
                    self.vm.remove_container(&req.container_id).await?;
                    Ok(cri::RemoveContainerResponse {})
                })
                .await;
        }
        self.passthrough_idempotent(
            "RemoveContainer",
            self.containerd.runtime().remove_container(req),
        )
        .await
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> CriResult<cri::ListContainersResponse> {
        let req = request.into_inner();
        let mut containers = self.vm.list_containers(req.filter.as_ref());
        let theirs = self
            .passthrough(
                "ListContainers",
                self.containerd.runtime().list_containers(req),
            )
            .await?
            .into_inner();
        containers.extend(theirs.containers);
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> CriResult<cri::ContainerStatusResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm(
                    "ContainerStatus",
                    self.vm.container_status(&req.container_id, req.verbose),
                )
                .await;
        }
        self.passthrough(
            "ContainerStatus",
            self.containerd.runtime().container_status(req),
        )
        .await
    }

    async fn update_container_resources(
        &self,
        request: Request<cri::UpdateContainerResourcesRequest>,
    ) -> CriResult<cri::UpdateContainerResourcesResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("UpdateContainerResources", async {
                    self.vm
                        .update_resources(&req.container_id, req.linux.as_ref())
                        .await?;
                    Ok(cri::UpdateContainerResourcesResponse {})
                })
                .await;
        }
        self.passthrough(
            "UpdateContainerResources",
            self.containerd.runtime().update_container_resources(req),
        )
        .await
    }

    async fn reopen_container_log(
        &self,
        request: Request<cri::ReopenContainerLogRequest>,
    ) -> CriResult<cri::ReopenContainerLogResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            // The console follower opens the log for every write, so a
            // rotated file is picked up by itself.
            return self
                .vm("ReopenContainerLog", async {
                    Ok(cri::ReopenContainerLogResponse {})
                })
                .await;
        }
        self.passthrough(
            "ReopenContainerLog",
            self.containerd.runtime().reopen_container_log(req),
        )
        .await
    }

    async fn exec_sync(
        &self,
        request: Request<cri::ExecSyncRequest>,
    ) -> CriResult<cri::ExecSyncResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("ExecSync", async {
                    Err(Status::unimplemented(format!("exec {NO_STREAMS}")))
                })
                .await;
        }
        self.passthrough("ExecSync", self.containerd.runtime().exec_sync(req))
            .await
    }

    async fn exec(&self, request: Request<cri::ExecRequest>) -> CriResult<cri::ExecResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("Exec", async {
                    Err(Status::unimplemented(format!("exec {NO_STREAMS}")))
                })
                .await;
        }
        self.passthrough("Exec", self.containerd.runtime().exec(req))
            .await
    }

    async fn attach(&self, request: Request<cri::AttachRequest>) -> CriResult<cri::AttachResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("Attach", async {
                    Err(Status::unimplemented(format!("attach {NO_STREAMS}")))
                })
                .await;
        }
        self.passthrough("Attach", self.containerd.runtime().attach(req))
            .await
    }

    async fn port_forward(
        &self,
        request: Request<cri::PortForwardRequest>,
    ) -> CriResult<cri::PortForwardResponse> {
        let req = request.into_inner();
        if self.vm.owns_sandbox(&req.pod_sandbox_id) {
            return self
                .vm("PortForward", async {
                    Err(Status::unimplemented(format!("port-forward {NO_STREAMS}")))
                })
                .await;
        }
        self.passthrough("PortForward", self.containerd.runtime().port_forward(req))
            .await
    }

    async fn container_stats(
        &self,
        request: Request<cri::ContainerStatsRequest>,
    ) -> CriResult<cri::ContainerStatsResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("ContainerStats", async {
                    let stats = self.vm.container_stats(&req.container_id).await?;
                    Ok(cri::ContainerStatsResponse { stats: Some(stats) })
                })
                .await;
        }
        self.passthrough(
            "ContainerStats",
            self.containerd.runtime().container_stats(req),
        )
        .await
    }

    async fn list_container_stats(
        &self,
        request: Request<cri::ListContainerStatsRequest>,
    ) -> CriResult<cri::ListContainerStatsResponse> {
        let req = request.into_inner();
        let mut stats = self.vm.list_stats(req.filter.as_ref()).await;
        let theirs = self
            .passthrough(
                "ListContainerStats",
                self.containerd.runtime().list_container_stats(req),
            )
            .await?
            .into_inner();
        stats.extend(theirs.stats);
        Ok(Response::new(cri::ListContainerStatsResponse { stats }))
    }

    async fn pod_sandbox_stats(
        &self,
        request: Request<cri::PodSandboxStatsRequest>,
    ) -> CriResult<cri::PodSandboxStatsResponse> {
        let req = request.into_inner();
        if self.vm.owns_sandbox(&req.pod_sandbox_id) {
            return self
                .vm("PodSandboxStats", async {
                    let stats = self.vm.sandbox_stats(&req.pod_sandbox_id).await?;
                    Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
                })
                .await;
        }
        self.passthrough(
            "PodSandboxStats",
            self.containerd.runtime().pod_sandbox_stats(req),
        )
        .await
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: Request<cri::ListPodSandboxStatsRequest>,
    ) -> CriResult<cri::ListPodSandboxStatsResponse> {
        let req = request.into_inner();
        let mut stats = Vec::new();
        let filter = req.filter.clone();
        for s in self.vm.list_sandboxes(None) {
            let wanted = filter.as_ref().is_none_or(|f| {
                (f.id.is_empty() || s.id.starts_with(&f.id))
                    && crate::vm::cri_view::labels_match(&s.labels, &f.label_selector)
            });
            if wanted && let Ok(st) = self.vm.sandbox_stats(&s.id).await {
                stats.push(st);
            }
        }
        let theirs = self
            .passthrough(
                "ListPodSandboxStats",
                self.containerd.runtime().list_pod_sandbox_stats(req),
            )
            .await?
            .into_inner();
        stats.extend(theirs.stats);
        Ok(Response::new(cri::ListPodSandboxStatsResponse { stats }))
    }

    async fn update_runtime_config(
        &self,
        request: Request<cri::UpdateRuntimeConfigRequest>,
    ) -> CriResult<cri::UpdateRuntimeConfigResponse> {
        self.passthrough(
            "UpdateRuntimeConfig",
            self.containerd
                .runtime()
                .update_runtime_config(request.into_inner()),
        )
        .await
    }

    async fn status(&self, request: Request<cri::StatusRequest>) -> CriResult<cri::StatusResponse> {
        let req = request.into_inner();
        let verbose = req.verbose;
        let mut inner = self
            .passthrough("Status", self.containerd.runtime().status(req))
            .await?
            .into_inner();
        let condition = vm_condition(&self.vm.libvirt_health(), self.vm.accel().domain_type());
        inner
            .status
            .get_or_insert_with(Default::default)
            .conditions
            .push(condition);
        if !inner.runtime_handlers.iter().any(|h| h.name == HANDLER) {
            inner.runtime_handlers.push(cri::RuntimeHandler {
                name: HANDLER.to_string(),
                features: Some(cri::RuntimeHandlerFeatures::default()),
            });
        }
        if verbose {
            inner.info.insert(
                "arktos-vm".to_string(),
                serde_json::json!({
                    "libvirt": self.vm.libvirt_health().answer,
                    "accel": self.vm.accel().domain_type(),
                    "sandboxes": self.vm.list_sandboxes(None).len(),
                })
                .to_string(),
            );
        }
        Ok(Response::new(inner))
    }

    async fn checkpoint_container(
        &self,
        request: Request<cri::CheckpointContainerRequest>,
    ) -> CriResult<cri::CheckpointContainerResponse> {
        let req = request.into_inner();
        if self.vm.owns_container(&req.container_id) {
            return self
                .vm("CheckpointContainer", async {
                    Err(Status::unimplemented(
                        "checkpoint is not available for VM containers; use a vm.arktos.io Action snapshot",
                    ))
                })
                .await;
        }
        self.passthrough(
            "CheckpointContainer",
            self.containerd.runtime().checkpoint_container(req),
        )
        .await
    }

    type GetContainerEventsStream = tonic::codec::Streaming<cri::ContainerEventResponse>;

    async fn get_container_events(
        &self,
        request: Request<cri::GetEventsRequest>,
    ) -> CriResult<Self::GetContainerEventsStream> {
        self.passthrough(
            "GetContainerEvents",
            self.containerd
                .runtime()
                .get_container_events(request.into_inner()),
        )
        .await
    }

    async fn list_metric_descriptors(
        &self,
        request: Request<cri::ListMetricDescriptorsRequest>,
    ) -> CriResult<cri::ListMetricDescriptorsResponse> {
        self.passthrough(
            "ListMetricDescriptors",
            self.containerd
                .runtime()
                .list_metric_descriptors(request.into_inner()),
        )
        .await
    }

    async fn list_pod_sandbox_metrics(
        &self,
        request: Request<cri::ListPodSandboxMetricsRequest>,
    ) -> CriResult<cri::ListPodSandboxMetricsResponse> {
        self.passthrough(
            "ListPodSandboxMetrics",
            self.containerd
                .runtime()
                .list_pod_sandbox_metrics(request.into_inner()),
        )
        .await
    }

    async fn runtime_config(
        &self,
        request: Request<cri::RuntimeConfigRequest>,
    ) -> CriResult<cri::RuntimeConfigResponse> {
        self.passthrough(
            "RuntimeConfig",
            self.containerd
                .runtime()
                .runtime_config(request.into_inner()),
        )
        .await
    }
}

#[tonic::async_trait]
impl<H: Hypervisor, N: Taps> ImageService for Router<H, N> {
    async fn list_images(
        &self,
        request: Request<cri::ListImagesRequest>,
    ) -> CriResult<cri::ListImagesResponse> {
        let req = request.into_inner();
        let wanted = req
            .filter
            .as_ref()
            .and_then(|f| f.image.as_ref())
            .map(|i| i.image.clone());
        let mut images: Vec<cri::Image> = self
            .vm
            .images
            .list()
            .await
            .iter()
            .filter(|img| {
                wanted
                    .as_deref()
                    .is_none_or(|w| w.is_empty() || img.id == w || img.names.iter().any(|n| n == w))
            })
            .map(vm_image)
            .collect();
        let theirs = self
            .passthrough("ListImages", self.containerd.image().list_images(req))
            .await?
            .into_inner();
        images.extend(theirs.images);
        Ok(Response::new(cri::ListImagesResponse { images }))
    }

    async fn image_status(
        &self,
        request: Request<cri::ImageStatusRequest>,
    ) -> CriResult<cri::ImageStatusResponse> {
        let req = request.into_inner();
        if self.is_vm_image(req.image.as_ref(), None).await {
            let reference = req
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default();
            return self
                .vm("ImageStatus", async {
                    Ok(cri::ImageStatusResponse {
                        image: self.vm.images.find(&reference).await.as_ref().map(vm_image),
                        info: Default::default(),
                    })
                })
                .await;
        }
        self.passthrough("ImageStatus", self.containerd.image().image_status(req))
            .await
    }

    async fn pull_image(
        &self,
        request: Request<cri::PullImageRequest>,
    ) -> CriResult<cri::PullImageResponse> {
        let req = request.into_inner();
        if self
            .is_vm_image(req.image.as_ref(), req.sandbox_config.as_ref())
            .await
        {
            let reference = req
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default();
            return self
                .vm("PullImage", async {
                    if reference.is_empty() {
                        return Err(Status::invalid_argument("image reference is empty"));
                    }
                    let credentials = req
                        .auth
                        .as_ref()
                        .and_then(crate::vm::images::Credentials::from_cri);
                    let img = self
                        .vm
                        .images
                        .pull(&reference, credentials.as_ref())
                        .await?;
                    Ok(cri::PullImageResponse { image_ref: img.id })
                })
                .await;
        }
        self.passthrough("PullImage", self.containerd.image().pull_image(req))
            .await
    }

    async fn remove_image(
        &self,
        request: Request<cri::RemoveImageRequest>,
    ) -> CriResult<cri::RemoveImageResponse> {
        let req = request.into_inner();
        if self.is_vm_image(req.image.as_ref(), None).await {
            let reference = req
                .image
                .as_ref()
                .map(|i| i.image.clone())
                .unwrap_or_default();
            return self
                .vm("RemoveImage", async {
                    self.vm.remove_image(&reference).await?;
                    Ok(cri::RemoveImageResponse {})
                })
                .await;
        }
        self.passthrough("RemoveImage", self.containerd.image().remove_image(req))
            .await
    }

    async fn image_fs_info(
        &self,
        request: Request<cri::ImageFsInfoRequest>,
    ) -> CriResult<cri::ImageFsInfoResponse> {
        let mut inner = self
            .passthrough(
                "ImageFsInfo",
                self.containerd.image().image_fs_info(request.into_inner()),
            )
            .await?
            .into_inner();
        let (bytes, files) = self.vm.images.usage().await;
        inner.image_filesystems.push(cri::FilesystemUsage {
            timestamp: crate::vm::cri_view::now_ns(),
            fs_id: Some(cri::FilesystemIdentifier {
                mountpoint: self.vm.images.dir().display().to_string(),
            }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: files }),
        });
        Ok(Response::new(inner))
    }
}

#[cfg(test)]
mod fake_containerd;
#[cfg(test)]
mod tests;
