//! Tenant routes: the Python `kubernetes` client (from PyPI, installed by the
//! test run into a venv under $ARKTOS_HOME) works unmodified against a
//! tenant kubeconfig whose server URL is the gateway's `/tenants/<t>`.

use std::sync::Arc;

use anyhow::{Context, ensure};
use arktos_e2e::cluster::kubeconfig;
use arktos_e2e::home::ArktosHome;
use libtest_mimic::Trial;

use crate::{Ctx, trial};

pub const NAMES: &[&str] = &["python_client_works_against_a_tenant_kubeconfig"];

pub fn trials(ctx: &Arc<Ctx>) -> Vec<Trial> {
    vec![trial(
        ctx,
        NAMES[0],
        python_client_works_against_a_tenant_kubeconfig,
    )]
}

const SCRIPT: &str = r#"
import json, sys, copy
from kubernetes import client, config, watch
config.load_kube_config(config_file=sys.argv[1])
other = sys.argv[2]
foreign = other + "--web"
core = client.CoreV1Api()
apps = client.AppsV1Api()
rbac = client.RbacAuthorizationV1Api()

def code(call):
    try:
        call()
        return 200
    except client.exceptions.ApiException as e:
        return e.status

core.create_namespace({"metadata": {"name": "py"}})
core.create_namespaced_config_map("py", {"metadata": {"name": "from-python"}, "data": {"k": "v"}})
apps.create_namespaced_deployment("py", {"metadata": {"name": "app"}, "spec": {
    "replicas": 0, "selector": {"matchLabels": {"app": "a"}},
    "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
core.create_namespaced_service("py", {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80}]}})
rbac.create_namespaced_role("py", {"metadata": {"name": "reader"}, "rules": [
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]})
rbac.create_namespaced_role_binding("py", {"metadata": {"name": "reader"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
    "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "py"}]})
for i in range(3):
    core.create_namespaced_pod("py", {"metadata": {"name": "p%d" % i}, "spec": {
        "schedulingGates": [{"name": "arktos.io/e2e"}],
        "containers": [{"name": "c", "image": "x", "securityContext": {
            "allowPrivilegeEscalation": False, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}}]}})

# Pods across the tenant, one per page.
paged, token = [], None
while len(paged) < 10:
    page = core.list_pod_for_all_namespaces(limit=1, _continue=token)
    paged += ["%s/%s" % (p.metadata.namespace, p.metadata.name) for p in page.items]
    token = page.metadata._continue
    if not token:
        break

# A watch sees a new object with tenant names.
seen = []
w = watch.Watch()
core.create_namespaced_config_map("py", {"metadata": {"name": "watched"}})
for event in w.stream(core.list_namespaced_config_map, "py", timeout_seconds=5):
    seen.append("%s %s/%s" % (event["type"], event["object"].metadata.namespace, event["object"].metadata.name))
    if event["object"].metadata.name == "watched":
        w.stop()

maps = core.list_namespaced_config_map("py").items
everywhere = core.list_config_map_for_all_namespaces().items
refused = {
    "nodes": code(lambda: core.list_node()),
    "path to a storage namespace": code(lambda: core.read_namespaced_config_map("cfg", foreign)),
    "namespace object by storage name": code(lambda: core.read_namespace(foreign)),
    "field selector on a foreign namespace":
        404 if not core.list_config_map_for_all_namespaces(field_selector="metadata.namespace=" + foreign).items else 200,
    "label selector on another tenant":
        404 if not core.list_config_map_for_all_namespaces(label_selector="tenancy.arktos.io/tenant=" + other).items else 200,
    "body namespace of another tenant": code(lambda: core.create_namespaced_config_map(
        "py", {"metadata": {"name": "x", "namespace": foreign}})),
    "update by path": code(lambda: core.replace_namespaced_config_map(
        "cfg", foreign, {"metadata": {"name": "cfg"}, "data": {"x": "y"}})),
    "patch by path": code(lambda: core.patch_namespaced_config_map("cfg", foreign, {"data": {"x": "y"}})),
    "delete by path": code(lambda: core.delete_namespaced_config_map("cfg", foreign)),
    "watch by path": code(lambda: core.list_namespaced_config_map(foreign, watch=True, timeout_seconds=1,
                                                                  _preload_content=False)),
    # kube-system is the tenant's own now; the cluster's stays out of reach.
    "the cluster's kube-system by path":
        200 if any(m.metadata.name == "extension-apiserver-authentication"
                   for m in core.list_namespaced_config_map("kube-system").items) else 404,
    # A tenant's ClusterRoleBinding names the tenant's own "cluster-admin" (none).
    "binding cluster-admin": code(lambda: rbac.create_cluster_role_binding({"metadata": {"name": "escalate"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}]})),
}
# Another tenant's route, the system tenant, and impersonation headers.
base = client.Configuration.get_default_copy()
def elsewhere(tenant, headers={}):
    conf = copy.deepcopy(base)
    conf.host = base.host.rsplit("/tenants/", 1)[0] + "/tenants/" + tenant
    api = client.ApiClient(conf)
    for k, v in headers.items():
        api.set_default_header(k, v)
    return client.CoreV1Api(api)
refused["use of another tenant"] = code(lambda: elsewhere(other).list_namespaced_config_map("web"))
refused["tenant system"] = code(lambda: elsewhere("system").list_namespaced_config_map("default"))
mine = base.host.rsplit("/tenants/", 1)[1]
refused["impersonation headers"] = code(
    lambda: elsewhere(mine, {"Impersonate-User": "system:admin"}).list_namespaced_config_map("py"))
print(json.dumps({
    "namespaces": [n.metadata.name for n in core.list_namespace().items],
    "maps": sorted(m.metadata.name for m in maps),
    "all_namespaces": sorted({m.metadata.namespace for m in everywhere}),
    "deployments": [d.metadata.name for d in apps.list_namespaced_deployment("py").items],
    "services": [x.metadata.name for x in core.list_namespaced_service("py").items],
    "bindings": [(b.metadata.name, b.subjects[0].namespace) for b in rbac.list_namespaced_role_binding("py").items],
    "paged": paged,
    "watched": seen,
    "refused": refused,
}))
"#;

/// A venv with the `kubernetes` package, made once and kept.
pub async fn python() -> anyhow::Result<std::path::PathBuf> {
    let venv = ArktosHome::from_env().root().join("python");
    let interpreter = venv.join("bin").join("python");
    if !venv.join(".kubernetes-installed").exists() {
        let made = tokio::process::Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv)
            .status()
            .await?;
        ensure!(made.success(), "python3 -m venv failed");
        let pip = tokio::process::Command::new(&interpreter)
            .args(["-m", "pip", "install", "--quiet", "kubernetes"])
            .output()
            .await?;
        ensure!(
            pip.status.success(),
            "pip install kubernetes: {}",
            String::from_utf8_lossy(&pip.stderr)
        );
        std::fs::write(venv.join(".kubernetes-installed"), "")?;
    }
    Ok(interpreter)
}

async fn python_client_works_against_a_tenant_kubeconfig(ctx: Arc<Ctx>) -> anyhow::Result<()> {
    let interpreter = python().await?;
    let (tenant, _mine, _admin) = crate::tenant_watch::mk_tenant_with_namespace(&ctx, "py").await?;
    // Another tenant with a ConfigMap `cfg` in its namespace `web`.
    let (other, theirs, _) = crate::tenant_watch::mk_tenant_with_namespace(&ctx, "pyother").await?;
    let cfg: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "cfg"}, "data": {"a": "b"}}),
    )?;
    kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(theirs.clone(), "web")
        .create(&Default::default(), &cfg)
        .await?;
    let (pki, server) = {
        let local = ctx
            .cluster
            .local()
            .context("this test needs the local cluster")?;
        (local.pki().clone(), local.gateway_url(&tenant))
    };
    let dir = std::env::temp_dir().join(format!("arktos-e2e-python-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("tenant.kubeconfig");
    kubeconfig::write(&config, &tenant, &server, &pki, &format!("{tenant}-owner"))?;
    let script = dir.join("check.py");
    std::fs::write(&script, SCRIPT)?;
    let out = tokio::process::Command::new(&interpreter)
        .arg(&script)
        .arg(&config)
        .arg(&other)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let mut namespaces: Vec<String> = serde_json::from_value(answer["namespaces"].clone())?;
    namespaces.sort();
    ensure!(
        namespaces == ["default", "kube-public", "kube-system", "py", "web"],
        "namespaces {namespaces:?}"
    );
    ensure!(
        answer["maps"]
            .as_array()
            .is_some_and(|m| m.iter().any(|n| n == "from-python")),
        "{answer}"
    );
    let all: Vec<String> = serde_json::from_value(answer["all_namespaces"].clone())?;
    ensure!(
        all.iter().all(|ns| ["py", "web", "default", "kube-public", "kube-system"]
            .contains(&ns.as_str())),
        "foreign namespaces in -A: {all:?}"
    );
    for (what, want) in [("deployments", "app"), ("services", "svc")] {
        ensure!(
            answer[what]
                .as_array()
                .is_some_and(|v| v.iter().any(|n| n == want)),
            "{what}: {}",
            answer[what]
        );
    }
    // The subject's namespace comes back in the tenant's terms.
    ensure!(
        answer["bindings"]
            .as_array()
            .is_some_and(|b| b.contains(&serde_json::json!(["reader", "py"]))),
        "role bindings: {}",
        answer["bindings"]
    );
    let paged: Vec<String> = serde_json::from_value(answer["paged"].clone())?;
    ensure!(
        paged == ["py/p0", "py/p1", "py/p2"],
        "pods across the tenant, a page each: {paged:?}"
    );
    ensure!(
        answer["watched"]
            .as_array()
            .is_some_and(|v| v.iter().any(|e| e == "ADDED py/watched")),
        "watch: {}",
        answer["watched"]
    );
    // The isolation attempts, each failing closed as with kube-rs.
    let allowed: &[(&str, &[u64])] = &[
        ("nodes", &[404]),
        ("path to a storage namespace", &[403, 404]),
        ("namespace object by storage name", &[404]),
        ("field selector on a foreign namespace", &[404]),
        ("label selector on another tenant", &[404]),
        ("body namespace of another tenant", &[400, 404, 422]),
        ("update by path", &[403, 404]),
        ("patch by path", &[403, 404]),
        ("delete by path", &[403, 404]),
        ("watch by path", &[403, 404]),
        ("the cluster's kube-system by path", &[403, 404]),
        ("binding cluster-admin", &[403]),
        ("use of another tenant", &[403]),
        ("tenant system", &[403]),
        ("impersonation headers", &[403]),
    ];
    for (what, codes) in allowed {
        let got = answer["refused"][what].as_u64().unwrap_or_default();
        ensure!(
            codes.contains(&got),
            "python, {what}: {got}, expected one of {codes:?}"
        );
    }
    ensure!(
        answer["refused"].as_object().map(|m| m.len()) == Some(allowed.len()),
        "{}",
        answer["refused"]
    );
    let untouched = kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(theirs, "web")
        .get("cfg")
        .await?;
    ensure!(
        untouched.data == cfg.data,
        "the other tenant's ConfigMap changed: {:?}",
        untouched.data
    );
    eprintln!(
        "  python: {} isolation attempts refused: {}",
        allowed.len(),
        answer["refused"]
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
