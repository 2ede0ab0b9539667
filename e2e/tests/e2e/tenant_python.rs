//! Issue #4: the Python `kubernetes` client (from PyPI, installed by the
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
import json, sys
from kubernetes import client, config
config.load_kube_config(config_file=sys.argv[1])
core = client.CoreV1Api()
core.create_namespace({"metadata": {"name": "py"}})
core.create_namespaced_config_map("py", {"metadata": {"name": "from-python"}, "data": {"k": "v"}})
maps = core.list_namespaced_config_map("py").items
everywhere = core.list_config_map_for_all_namespaces().items
try:
    core.list_node()
    nodes = "visible"
except client.exceptions.ApiException as e:
    nodes = e.status
print(json.dumps({
    "namespaces": [n.metadata.name for n in core.list_namespace().items],
    "maps": sorted(m.metadata.name for m in maps),
    "all_namespaces": sorted({m.metadata.namespace for m in everywhere}),
    "nodes": nodes,
}))
"#;

/// A venv with the `kubernetes` package, made once and kept.
async fn python() -> anyhow::Result<std::path::PathBuf> {
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
    ensure!(namespaces == ["py", "web"], "namespaces {namespaces:?}");
    ensure!(
        answer["maps"]
            .as_array()
            .is_some_and(|m| m.iter().any(|n| n == "from-python")),
        "{answer}"
    );
    let all: Vec<String> = serde_json::from_value(answer["all_namespaces"].clone())?;
    ensure!(
        all.iter().all(|ns| ns == "py" || ns == "web"),
        "foreign namespaces in -A: {all:?}"
    );
    ensure!(answer["nodes"] == 404, "nodes: {}", answer["nodes"]);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
