//! The gateway's rules as a table: a request of tenant `acme` (and one of
//! the system tenant) -> the plan, or the refusal's HTTP code.

use arktos_crds::naming::TenantName;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};

use super::*;
use crate::request::ApiRequest;
use crate::serve::{Listener, PeerCertificate};
use crate::tenant_routes::path::{self, TenantPath};

const LABEL: &str = "tenancy.arktos.io/tenant=acme";

struct Req {
    method: Method,
    path: &'static str,
    query: &'static str,
    content_type: &'static str,
    accept: &'static str,
    body: &'static str,
    upgrade: bool,
    tenant: &'static str,
}

fn req(method: Method, path: &'static str) -> Req {
    Req {
        method,
        path,
        query: "",
        content_type: "",
        accept: "application/json",
        body: "",
        upgrade: false,
        tenant: "acme",
    }
}

fn get(path: &'static str) -> Req {
    req(Method::GET, path)
}

impl Req {
    fn query(self, query: &'static str) -> Self {
        Self { query, ..self }
    }
    fn body(self, content_type: &'static str, body: &'static str) -> Self {
        Self {
            content_type,
            body,
            ..self
        }
    }
    fn json(self, body: &'static str) -> Self {
        self.body("application/json", body)
    }
    fn accept(self, accept: &'static str) -> Self {
        Self { accept, ..self }
    }
    fn upgraded(self) -> Self {
        Self {
            upgrade: true,
            ..self
        }
    }
    fn of_tenant(self, tenant: &'static str) -> Self {
        Self { tenant, ..self }
    }

    /// Parsed and planned as the routes do.
    fn plan(self, entry: Option<Resource>) -> Result<Plan, i32> {
        let (request, r, view) = self.parts();
        let mut incoming = Incoming::of(&request, &r);
        incoming.upgrade = self.upgrade;
        resource(&view, &r, entry.as_ref(), &incoming).map_err(|s| s.code.unwrap_or_default())
    }

    fn namespace_plan(self) -> Result<NamespacePlan, i32> {
        let (request, r, view) = self.parts();
        assert!(r.is_namespaces(), "{}", self.path);
        namespaces(&view, &r, &Incoming::of(&request, &r)).map_err(|s| s.code.unwrap_or_default())
    }

    fn parts(&self) -> (ApiRequest, ResourcePath, View) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::ACCEPT, HeaderValue::from_static(self.accept));
        if !self.content_type.is_empty() {
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static(self.content_type),
            );
        }
        let request = ApiRequest {
            method: self.method.clone(),
            path: self.path.to_string(),
            query: self.query.to_string(),
            headers,
            body: Bytes::from_static(self.body.as_bytes()),
            peer: PeerCertificate::None,
            listener: Listener::Gateway,
            upgrade: None,
        };
        let Some(TenantPath::Resource(r)) = path::parse(self.path) else {
            panic!("{} is not a resource path", self.path);
        };
        let view = View::new(TenantName::new(self.tenant).expect("a tenant name"));
        (request, r, view)
    }
}

fn namespaced(kind: &str) -> Option<Resource> {
    Some(Resource {
        namespaced: true,
        kind: kind.into(),
        verbs: vec![],
    })
}

fn cluster(kind: &str) -> Option<Resource> {
    Some(Resource {
        namespaced: false,
        kind: kind.into(),
        verbs: vec![],
    })
}

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A forward as the user, nothing special.
fn to(method: Method, path: &str) -> Forward {
    Forward {
        method,
        path: path.into(),
        params: vec![],
        identity: Identity::User,
        check_each_namespace: None,
        body: Body::None,
        vm_answers: false,
        streamed_list: None,
        watch: false,
        bridge: false,
    }
}

fn streamed(vm_kind: Option<&str>) -> Option<StreamedList> {
    Some(StreamedList {
        vm_kind: vm_kind.map(str::to_string),
    })
}

fn vm_body(kind: &str) -> Body {
    Body::VmPod {
        namespace: "acme--web".into(),
        kind: kind.into(),
    }
}

fn ok(forward: Forward) -> Result<Plan, i32> {
    Ok(Plan::Forward(forward))
}

macro_rules! table {
    ($($name:ident: $got:expr => $want:expr;)*) => {
        $(
            #[test]
            fn $name() {
                assert_eq!($got, $want);
            }
        )*
    };
}

// Namespaced resources: into the tenant's storage namespace, as the user.
table! {
    get_in_own_namespace_is_rewritten_as_a_list_item:
        get("/api/v1/namespaces/web/configmaps/cfg").plan(namespaced("ConfigMap"))
        => ok(Forward { streamed_list: streamed(None), ..to(Method::GET, "/api/v1/namespaces/acme--web/configmaps/cfg") });
    list_in_namespace_streams:
        get("/api/v1/namespaces/web/configmaps").plan(namespaced("ConfigMap"))
        => ok(Forward { streamed_list: streamed(None), ..to(Method::GET, "/api/v1/namespaces/acme--web/configmaps") });
    table_list_is_not_streamed:
        get("/api/v1/namespaces/web/configmaps")
            .accept("application/json;as=Table;v=v1;g=meta.k8s.io")
            .plan(namespaced("ConfigMap"))
        => ok(to(Method::GET, "/api/v1/namespaces/acme--web/configmaps"));
    watch_in_namespace:
        get("/api/v1/namespaces/web/configmaps").query("watch=true").plan(namespaced("ConfigMap"))
        => ok(Forward { watch: true, params: params(&[("watch", "true")]), ..to(Method::GET, "/api/v1/namespaces/acme--web/configmaps") });
    legacy_watch_prefix_becomes_a_watch:
        get("/api/v1/watch/namespaces/web/configmaps").plan(namespaced("ConfigMap"))
        => ok(Forward { watch: true, params: params(&[("watch", "true")]), ..to(Method::GET, "/api/v1/namespaces/acme--web/configmaps") });
    group_resources_keep_their_prefix:
        get("/apis/apps/v1/namespaces/web/controllerrevisions/r1").plan(namespaced("ControllerRevision"))
        => ok(Forward { streamed_list: streamed(None), ..to(Method::GET, "/apis/apps/v1/namespaces/acme--web/controllerrevisions/r1") });
    create_configmap_maps_the_body:
        req(Method::POST, "/api/v1/namespaces/web/configmaps").json("{}").plan(namespaced("ConfigMap"))
        => ok(Forward { body: Body::Mapped, ..to(Method::POST, "/api/v1/namespaces/acme--web/configmaps") });
    create_without_body_sends_none:
        req(Method::POST, "/api/v1/namespaces/web/configmaps").plan(namespaced("ConfigMap"))
        => ok(to(Method::POST, "/api/v1/namespaces/acme--web/configmaps"));
    delete_collection_in_namespace:
        req(Method::DELETE, "/api/v1/namespaces/web/configmaps").plan(namespaced("ConfigMap"))
        => ok(to(Method::DELETE, "/api/v1/namespaces/acme--web/configmaps"));
    dry_run_passes_through:
        req(Method::DELETE, "/api/v1/namespaces/web/configmaps/cfg").query("dryRun=All").plan(namespaced("ConfigMap"))
        => ok(Forward { params: params(&[("dryRun", "All")]), ..to(Method::DELETE, "/api/v1/namespaces/acme--web/configmaps/cfg") });
    delete_options_in_protobuf_pass_as_sent:
        req(Method::DELETE, "/api/v1/namespaces/web/configmaps/cfg").body("application/vnd.kubernetes.protobuf", "k8s\0")
            .plan(namespaced("ConfigMap"))
        => ok(Forward { body: Body::AsSent, ..to(Method::DELETE, "/api/v1/namespaces/acme--web/configmaps/cfg") });
    deletecollection_options_pass_as_sent:
        req(Method::DELETE, "/api/v1/namespaces/web/configmaps").json(r#"{"kind":"DeleteOptions","propagationPolicy":"Background"}"#)
            .plan(namespaced("ConfigMap"))
        => ok(Forward { body: Body::AsSent, ..to(Method::DELETE, "/api/v1/namespaces/acme--web/configmaps") });
    field_selector_namespace_is_mapped:
        get("/api/v1/namespaces/web/events").query("fieldSelector=involvedObject.namespace%3Dweb").plan(namespaced("Event"))
        => ok(Forward { params: params(&[("fieldSelector", "involvedObject.namespace=acme--web")]), ..to(Method::GET, "/api/v1/namespaces/acme--web/events") });
    rolebinding_lists_are_parsed_whole:
        get("/apis/rbac.authorization.k8s.io/v1/namespaces/web/rolebindings").plan(namespaced("RoleBinding"))
        => ok(to(Method::GET, "/apis/rbac.authorization.k8s.io/v1/namespaces/acme--web/rolebindings"));
    event_lists_are_parsed_whole:
        get("/api/v1/namespaces/web/events").plan(namespaced("Event"))
        => ok(to(Method::GET, "/api/v1/namespaces/acme--web/events"));
    pod_log_is_a_subresource_get:
        get("/api/v1/namespaces/web/pods/p/log").plan(namespaced("Pod"))
        => ok(Forward { vm_answers: true, ..to(Method::GET, "/api/v1/namespaces/acme--web/pods/p/log") });
    system_tenant_namespaces_keep_their_names:
        get("/api/v1/namespaces/web/configmaps/cfg").of_tenant("system").plan(namespaced("ConfigMap"))
        => ok(Forward { streamed_list: streamed(None), ..to(Method::GET, "/api/v1/namespaces/web/configmaps/cfg") });
    namespace_too_long_does_not_exist:
        get("/api/v1/namespaces/a-namespace-name-that-is-far-too-long-to-fit-with-the-tenant-prefix-x/configmaps").plan(namespaced("ConfigMap"))
        => Err(404);
    unknown_resource_is_not_found:
        get("/api/v1/namespaces/web/widgets").plan(None)
        => Err(404);
}

// A tenant's own ClusterRoles and ClusterRoleBindings: carried out by
// `cluster_rbac`; the system tenant's are the cluster's, as the user.
table! {
    tenant_cluster_roles_are_the_tenants:
        get("/apis/rbac.authorization.k8s.io/v1/clusterroles").plan(cluster("ClusterRole"))
        => Ok(Plan::ClusterRbac(Kind::Role));
    tenant_cluster_role_bindings_are_the_tenants:
        req(Method::DELETE, "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/readers")
            .plan(cluster("ClusterRoleBinding"))
        => Ok(Plan::ClusterRbac(Kind::Binding));
    system_tenant_cluster_roles_are_the_clusters:
        get("/apis/rbac.authorization.k8s.io/v1/clusterroles/view").of_tenant("system")
            .plan(cluster("ClusterRole"))
        => ok(to(Method::GET, "/apis/rbac.authorization.k8s.io/v1/clusterroles/view"));
}

// Cluster-scoped resources of a tenant's own CRDs (the group already
// mapped to storage by the routes): names kept, as the user; no one else's.
table! {
    own_cluster_scoped_objects_keep_their_names:
        get("/apis/example.com.acme.tenants.arktos.io/v1/gizmos/g1").plan(cluster("Gizmo"))
        => ok(to(Method::GET, "/apis/example.com.acme.tenants.arktos.io/v1/gizmos/g1"));
    own_cluster_scoped_lists_are_mapped_not_streamed:
        get("/apis/example.com.acme.tenants.arktos.io/v1/gizmos").plan(cluster("Gizmo"))
        => ok(to(Method::GET, "/apis/example.com.acme.tenants.arktos.io/v1/gizmos"));
    own_cluster_scoped_writes_map_the_body:
        req(Method::POST, "/apis/example.com.acme.tenants.arktos.io/v1/gizmos").json("{}")
            .plan(cluster("Gizmo"))
        => ok(Forward {
            body: Body::Mapped,
            ..to(Method::POST, "/apis/example.com.acme.tenants.arktos.io/v1/gizmos")
        });
    another_tenants_cluster_scoped_objects_are_not_found:
        get("/apis/example.com.acme.tenants.arktos.io/v1/gizmos/g1").of_tenant("globex")
            .plan(cluster("Gizmo"))
        => Err(404);
}

// Questions about oneself: answered in the tenant's terms, only created.
table! {
    can_i_is_a_self_review:
        req(Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").json("{}")
            .plan(cluster("SelfSubjectAccessReview"))
        => Ok(Plan::SelfReview(SelfReview::Access));
    can_i_list_is_a_self_review:
        req(Method::POST, "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews").json("{}")
            .plan(cluster("SelfSubjectRulesReview"))
        => Ok(Plan::SelfReview(SelfReview::Rules));
    whoami_is_a_self_review:
        req(Method::POST, "/apis/authentication.k8s.io/v1/selfsubjectreviews").json("{}")
            .plan(cluster("SelfSubjectReview"))
        => Ok(Plan::SelfReview(SelfReview::Whoami));
    reviews_are_only_created:
        get("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")
            .plan(cluster("SelfSubjectAccessReview"))
        => Err(405);
    reviews_about_others_are_not_served:
        req(Method::POST, "/apis/authorization.k8s.io/v1/subjectaccessreviews").json("{}")
            .plan(None)
        => Err(404);
}

// Lists across the tenant's namespaces: checked per namespace, done as us,
// narrowed by the tenant label.
table! {
    list_across_namespaces:
        get("/api/v1/configmaps").plan(namespaced("ConfigMap"))
        => ok(Forward {
            identity: Identity::Gateway,
            check_each_namespace: Some("list"),
            params: params(&[("labelSelector", LABEL)]),
            streamed_list: streamed(None),
            ..to(Method::GET, "/api/v1/configmaps")
        });
    watch_across_namespaces:
        get("/api/v1/configmaps").query("watch=true").plan(namespaced("ConfigMap"))
        => ok(Forward {
            identity: Identity::Gateway,
            check_each_namespace: Some("watch"),
            params: params(&[("watch", "true"), ("labelSelector", LABEL)]),
            watch: true,
            ..to(Method::GET, "/api/v1/configmaps")
        });
    label_selector_across_is_narrowed:
        get("/api/v1/configmaps").query("labelSelector=app%3Dx").plan(namespaced("ConfigMap"))
        => ok(Forward {
            identity: Identity::Gateway,
            check_each_namespace: Some("list"),
            params: params(&[("labelSelector", "app=x,tenancy.arktos.io/tenant=acme")]),
            streamed_list: streamed(None),
            ..to(Method::GET, "/api/v1/configmaps")
        });
    field_selector_across_is_mapped:
        get("/api/v1/configmaps").query("fieldSelector=metadata.namespace%3Dweb").plan(namespaced("ConfigMap"))
        => ok(Forward {
            identity: Identity::Gateway,
            check_each_namespace: Some("list"),
            params: params(&[("fieldSelector", "metadata.namespace=acme--web"), ("labelSelector", LABEL)]),
            streamed_list: streamed(None),
            ..to(Method::GET, "/api/v1/configmaps")
        });
    pods_across_namespaces_show_vm_pods:
        get("/api/v1/pods").plan(namespaced("Pod"))
        => ok(Forward {
            identity: Identity::Gateway,
            check_each_namespace: Some("list"),
            params: params(&[("labelSelector", LABEL)]),
            streamed_list: streamed(Some("Pod")),
            vm_answers: true,
            ..to(Method::GET, "/api/v1/pods")
        });
    create_without_namespace_is_not_found:
        req(Method::POST, "/api/v1/configmaps").json("{}").plan(namespaced("ConfigMap"))
        => Err(404);
    delete_without_namespace_is_not_found:
        req(Method::DELETE, "/api/v1/configmaps").plan(namespaced("ConfigMap"))
        => Err(404);
    cluster_resource_not_shared_is_not_found:
        get("/api/v1/persistentvolumes").plan(cluster("PersistentVolume"))
        => Err(404);
}

// Shared cluster objects: read-only, read as us.
table! {
    shared_list_is_read_as_us:
        get("/apis/storage.k8s.io/v1/storageclasses").plan(cluster("StorageClass"))
        => ok(Forward { identity: Identity::Gateway, ..to(Method::GET, "/apis/storage.k8s.io/v1/storageclasses") });
    shared_get_is_read_as_us:
        get("/apis/node.k8s.io/v1/runtimeclasses/arktos-vm").plan(cluster("RuntimeClass"))
        => ok(Forward { identity: Identity::Gateway, ..to(Method::GET, "/apis/node.k8s.io/v1/runtimeclasses/arktos-vm") });
    shared_watch_is_read_as_us:
        get("/apis/scheduling.k8s.io/v1/priorityclasses").query("watch=1").plan(cluster("PriorityClass"))
        => ok(Forward {
            identity: Identity::Gateway,
            watch: true,
            params: params(&[("watch", "1")]),
            ..to(Method::GET, "/apis/scheduling.k8s.io/v1/priorityclasses")
        });
    shared_create_is_forbidden:
        req(Method::POST, "/apis/storage.k8s.io/v1/storageclasses").json("{}").plan(cluster("StorageClass"))
        => Err(403);
    shared_delete_is_forbidden:
        req(Method::DELETE, "/apis/node.k8s.io/v1/runtimeclasses/arktos-vm").plan(cluster("RuntimeClass"))
        => Err(403);
    shared_patch_is_forbidden:
        req(Method::PATCH, "/apis/scheduling.k8s.io/v1/priorityclasses/high").json("{}").plan(cluster("PriorityClass"))
        => Err(403);
}

// Objects that hold pods: VM pods in the Arktos shape both ways.
table! {
    create_pod_converts_the_vm_shape:
        req(Method::POST, "/api/v1/namespaces/web/pods").json("{}").plan(namespaced("Pod"))
        => ok(Forward { body: vm_body("Pod"), vm_answers: true, ..to(Method::POST, "/api/v1/namespaces/acme--web/pods") });
    update_pod_converts_the_vm_shape:
        req(Method::PUT, "/api/v1/namespaces/web/pods/vm1").json("{}").plan(namespaced("Pod"))
        => ok(Forward { body: vm_body("Pod"), vm_answers: true, ..to(Method::PUT, "/api/v1/namespaces/acme--web/pods/vm1") });
    create_pod_in_protobuf_is_only_mapped:
        req(Method::POST, "/api/v1/namespaces/web/pods").body("application/vnd.kubernetes.protobuf", "k8s").plan(namespaced("Pod"))
        => ok(Forward { body: Body::Mapped, vm_answers: true, ..to(Method::POST, "/api/v1/namespaces/acme--web/pods") });
    create_deployment_converts_its_template:
        req(Method::POST, "/apis/apps/v1/namespaces/web/deployments").json("{}").plan(namespaced("Deployment"))
        => ok(Forward { body: vm_body("Deployment"), vm_answers: true, ..to(Method::POST, "/apis/apps/v1/namespaces/acme--web/deployments") });
    list_deployments_streams_vm_templates:
        get("/apis/apps/v1/namespaces/web/deployments").plan(namespaced("Deployment"))
        => ok(Forward { streamed_list: streamed(Some("Deployment")), vm_answers: true, ..to(Method::GET, "/apis/apps/v1/namespaces/acme--web/deployments") });
    cronjob_holds_pods:
        get("/apis/batch/v1/namespaces/web/cronjobs/nightly").plan(namespaced("CronJob"))
        => ok(Forward { vm_answers: true, streamed_list: streamed(Some("CronJob")), ..to(Method::GET, "/apis/batch/v1/namespaces/acme--web/cronjobs/nightly") });
    merge_patch_of_the_vm_shape_is_done_by_us:
        req(Method::PATCH, "/api/v1/namespaces/web/pods/vm1")
            .body("application/merge-patch+json", r#"{"spec":{"virtualMachine":{"powerSpec":"Shutdown"}}}"#)
            .plan(namespaced("Pod"))
        => Ok(Plan::PatchVmPod { namespace: "acme--web".into(), pod: "vm1".into(), params: vec![] });
    json_patch_of_the_vm_shape_is_done_by_us:
        req(Method::PATCH, "/api/v1/namespaces/web/pods/vm1")
            .body("application/json-patch+json", r#"[{"op":"replace","path":"/spec/virtualMachine/powerSpec","value":"Running"}]"#)
            .plan(namespaced("Pod"))
        => Ok(Plan::PatchVmPod { namespace: "acme--web".into(), pod: "vm1".into(), params: vec![] });
    nic_patch_is_done_by_us:
        req(Method::PATCH, "/api/v1/namespaces/web/pods/vm1")
            .body("application/merge-patch+json", r#"{"spec":{"nics":[]}}"#)
            .plan(namespaced("Pod"))
        => Ok(Plan::PatchVmPod { namespace: "acme--web".into(), pod: "vm1".into(), params: vec![] });
    label_patch_of_a_pod_is_forwarded:
        req(Method::PATCH, "/api/v1/namespaces/web/pods/vm1")
            .body("application/merge-patch+json", r#"{"metadata":{"labels":{"a":"b"}}}"#)
            .plan(namespaced("Pod"))
        => ok(Forward { body: Body::Mapped, vm_answers: true, ..to(Method::PATCH, "/api/v1/namespaces/acme--web/pods/vm1") });
    status_patch_is_forwarded_as_it_is:
        req(Method::PATCH, "/api/v1/namespaces/web/pods/vm1/status")
            .body("application/merge-patch+json", r#"{"spec":{"virtualMachine":{}}}"#)
            .plan(namespaced("Pod"))
        => ok(Forward { body: Body::Mapped, vm_answers: true, ..to(Method::PATCH, "/api/v1/namespaces/acme--web/pods/vm1/status") });
    status_update_is_only_mapped:
        req(Method::PUT, "/api/v1/namespaces/web/pods/vm1/status").json("{}").plan(namespaced("Pod"))
        => ok(Forward { body: Body::Mapped, vm_answers: true, ..to(Method::PUT, "/api/v1/namespaces/acme--web/pods/vm1/status") });
}

// Arktos Actions and streams.
table! {
    action_is_created_by_us:
        req(Method::POST, "/api/v1/namespaces/web/pods/vm1/action").json(r#"{"operation":"Reboot"}"#).plan(None)
        => Ok(Plan::Action { namespace: "acme--web".into(), pod: "vm1".into(), params: vec![] });
    action_keeps_dry_run:
        req(Method::POST, "/api/v1/namespaces/web/pods/vm1/action").query("dryRun=All").json("{}").plan(None)
        => Ok(Plan::Action { namespace: "acme--web".into(), pod: "vm1".into(), params: params(&[("dryRun", "All")]) });
    action_read_is_not_allowed:
        get("/api/v1/namespaces/web/pods/vm1/action").plan(None)
        => Err(405);
    action_without_namespace_is_not_found:
        req(Method::POST, "/api/v1/pods/vm1/action").json("{}").plan(None)
        => Err(404);
    exec_without_upgrade_is_not_allowed:
        req(Method::POST, "/api/v1/namespaces/web/pods/p/exec").plan(namespaced("PodExecOptions"))
        => Err(405);
    exec_is_bridged_as_the_user:
        req(Method::POST, "/api/v1/namespaces/web/pods/p/exec").query("command=sh").upgraded().plan(namespaced("PodExecOptions"))
        => ok(Forward {
            bridge: true,
            vm_answers: true,
            params: params(&[("command", "sh")]),
            ..to(Method::POST, "/api/v1/namespaces/acme--web/pods/p/exec")
        });
    attach_is_bridged:
        get("/api/v1/namespaces/web/pods/p/attach").upgraded().plan(namespaced("PodAttachOptions"))
        => ok(Forward { bridge: true, vm_answers: true, ..to(Method::GET, "/api/v1/namespaces/acme--web/pods/p/attach") });
    port_forward_is_bridged:
        get("/api/v1/namespaces/web/pods/p/portforward").upgraded().plan(namespaced("PodPortForwardOptions"))
        => ok(Forward { bridge: true, vm_answers: true, ..to(Method::GET, "/api/v1/namespaces/acme--web/pods/p/portforward") });
}

// The tenant's own namespaces.
table! {
    namespaces_list_is_narrowed:
        get("/api/v1/namespaces").namespace_plan()
        => Ok(NamespacePlan { verb: "list", op: NamespaceOp::List { params: params(&[("labelSelector", LABEL)]), watch: false } });
    namespaces_watch:
        get("/api/v1/namespaces").query("watch=true").namespace_plan()
        => Ok(NamespacePlan { verb: "watch", op: NamespaceOp::List { params: params(&[("watch", "true"), ("labelSelector", LABEL)]), watch: true } });
    namespace_name_selector_is_mapped:
        get("/api/v1/namespaces").query("fieldSelector=metadata.name%3Dweb").namespace_plan()
        => Ok(NamespacePlan { verb: "list", op: NamespaceOp::List { params: params(&[("fieldSelector", "metadata.name=acme--web"), ("labelSelector", LABEL)]), watch: false } });
    namespace_name_label_selector_is_mapped:
        get("/api/v1/namespaces").query("labelSelector=kubernetes.io%2Fmetadata.name%3Dweb").namespace_plan()
        => Ok(NamespacePlan { verb: "list", op: NamespaceOp::List { params: params(&[("labelSelector", &format!("kubernetes.io/metadata.name=acme--web,{LABEL}"))]), watch: false } });
    namespace_get:
        get("/api/v1/namespaces/web").namespace_plan()
        => Ok(NamespacePlan { verb: "get", op: NamespaceOp::Get { name: "web".into(), subresource: None } });
    namespace_status_get:
        get("/api/v1/namespaces/web/status").namespace_plan()
        => Ok(NamespacePlan { verb: "get", op: NamespaceOp::Get { name: "web".into(), subresource: Some("status".into()) } });
    namespace_create:
        req(Method::POST, "/api/v1/namespaces").json(r#"{"metadata":{"name":"web"}}"#).namespace_plan()
        => Ok(NamespacePlan { verb: "create", op: NamespaceOp::Create { params: vec![] } });
    namespace_delete:
        req(Method::DELETE, "/api/v1/namespaces/web").namespace_plan()
        => Ok(NamespacePlan { verb: "delete", op: NamespaceOp::Delete { name: "web".into(), params: vec![] } });
    default_namespace_may_not_be_deleted:
        req(Method::DELETE, "/api/v1/namespaces/default").namespace_plan()
        => Err(403);
    kube_system_may_not_be_deleted:
        req(Method::DELETE, "/api/v1/namespaces/kube-system").namespace_plan()
        => Err(403);
    namespace_update_changes_labels_and_annotations:
        req(Method::PUT, "/api/v1/namespaces/web").json("{}").namespace_plan()
        => Ok(NamespacePlan { verb: "update", op: NamespaceOp::Update { name: "web".into(), params: vec![] } });
    namespace_patch_changes_labels_and_annotations:
        req(Method::PATCH, "/api/v1/namespaces/web").query("fieldManager=kubectl-label").json("{}").namespace_plan()
        => Ok(NamespacePlan { verb: "patch", op: NamespaceOp::Patch { name: "web".into(), params: params(&[("fieldManager", "kubectl-label")]) } });
    namespace_status_patch_is_not_allowed:
        req(Method::PATCH, "/api/v1/namespaces/web/status").json("{}").namespace_plan()
        => Err(405);
    namespace_finalize_is_not_allowed:
        req(Method::PUT, "/api/v1/namespaces/web/finalize").json("{}").namespace_plan()
        => Err(405);
    namespaces_delete_collection_is_not_allowed:
        req(Method::DELETE, "/api/v1/namespaces").namespace_plan()
        => Err(405);
}

#[test]
fn joined_paths_skip_empty_segments() {
    assert_eq!(
        join(&["/api/v1", "namespaces", "", "x/"]),
        "/api/v1/namespaces/x"
    );
}
