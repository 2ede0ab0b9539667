//! The subcommands.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use arktos_crds::TenantName;
use arktos_crds::tenant::{Owner, OwnerKind, Tenant, TenantQuota, TenantSpec};
use clap::{Parser, Subcommand};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::contexts;

#[derive(Parser)]
#[command(
    name = "kubectl-tenant",
    bin_name = "kubectl tenant",
    version,
    about = "Manage Arktos tenants and switch kubectl between them",
    long_about = "Manage Arktos tenants (tenancy.arktos.io) and kubectl contexts that point at a \
tenant's own API on the tenant gateway. Uses the current kubeconfig (KUBECONFIG or ~/.kube/config)."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Use this context of the kubeconfig instead of the current one.
    #[arg(long, global = true)]
    context: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a tenant.
    Create {
        name: String,
        /// An owner: `user:NAME`, `group:NAME` or `serviceaccount:NAMESPACE:NAME`. Repeatable.
        #[arg(long = "owner")]
        owners: Vec<String>,
        /// A tenant-wide hard limit, `KEY=QUANTITY` (e.g. requests.cpu=20). Repeatable.
        #[arg(long = "quota")]
        quota: Vec<String>,
        /// Pod Security Standard of the tenant's namespaces.
        #[arg(long, default_value = "restricted", value_parser = ["restricted", "baseline"])]
        pod_security: String,
        /// Wait until the tenant is Ready (its namespaces and access in
        /// place); `--wait=false` returns once it is created.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
        /// How long to wait for Ready, in seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
        /// The partition to hold the tenant (a Partition's name, or the
        /// root cluster's, `local` by default); unset, arktos-apiserver
        /// places it.
        #[arg(long)]
        partition: Option<String>,
    },
    /// List tenants.
    List,
    /// Show a tenant as YAML.
    Get { name: String },
    /// Delete a tenant and everything it owns.
    Delete { name: String },
    /// Add (or update) a context NAME pointing at tenant NAME on the gateway, with the current user, and switch to it.
    Use { name: String },
    /// Print the tenant of the current context.
    Current,
    /// Print a kubeconfig for tenant NAME with the current user's credentials.
    Kubeconfig { name: String },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Current => {
            let (kubeconfig, _) = contexts::load()?;
            match contexts::current_tenant(&kubeconfig) {
                Some(tenant) => println!("{tenant}"),
                None => bail!(
                    "the current context does not point at a tenant (use `kubectl tenant use NAME`)"
                ),
            }
            Ok(())
        }
        Command::Use { name } => {
            let tenant = TenantName::new(&name)?;
            let client = contexts::client(cli.context.as_deref()).await?;
            let gateway = contexts::gateway(&client).await?;
            let (mut kubeconfig, path) = contexts::load()?;
            contexts::add_tenant_context(
                &mut kubeconfig,
                cli.context.as_deref(),
                &tenant,
                &gateway,
                true,
            )?;
            contexts::save(&kubeconfig, &path)?;
            println!(
                "Switched to tenant {name:?} (context {name:?} in {}).",
                path.display()
            );
            Ok(())
        }
        Command::Kubeconfig { name } => {
            let tenant = TenantName::new(&name)?;
            let client = contexts::client(cli.context.as_deref()).await?;
            let gateway = contexts::gateway(&client).await?;
            let (kubeconfig, _) = contexts::load()?;
            let standalone =
                contexts::standalone(&kubeconfig, cli.context.as_deref(), &tenant, &gateway)?;
            print!("{}", serde_yaml::to_string(&standalone)?);
            Ok(())
        }
        command => {
            let client = contexts::client(cli.context.as_deref()).await?;
            let tenants: Api<Tenant> = Api::all(client);
            manage(command, tenants).await
        }
    }
}

/// The spec `kubectl tenant create` asks for.
fn tenant_spec(
    owners: &[String],
    quota: &[String],
    pod_security: String,
    partition: Option<String>,
) -> anyhow::Result<TenantSpec> {
    let mut spec = TenantSpec {
        owners: owners
            .iter()
            .map(|o| parse_owner(o))
            .collect::<anyhow::Result<_>>()?,
        pod_security: serde_json::from_value(serde_json::Value::String(pod_security))?,
        ..Default::default()
    };
    if let Some(partition) = partition {
        spec.partition = partition;
    }
    if !quota.is_empty() {
        let mut hard = BTreeMap::new();
        for item in quota {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("--quota {item:?}: expected KEY=QUANTITY"))?;
            hard.insert(key.to_string(), Quantity(value.to_string()));
        }
        spec.quota = Some(TenantQuota { hard });
    }
    Ok(spec)
}

/// Creates tenant `name`, and waits until it is Ready when asked to.
async fn create(
    tenants: &Api<Tenant>,
    name: &str,
    spec: TenantSpec,
    wait: bool,
    timeout: u64,
) -> anyhow::Result<()> {
    tenants
        .create(&PostParams::default(), &Tenant::new(name, spec))
        .await
        .map_err(api_error)?;
    println!("tenant/{name} created");
    if wait {
        crate::ready::wait(tenants, name, std::time::Duration::from_secs(timeout)).await?;
        println!("tenant/{name} ready");
    }
    Ok(())
}

async fn manage(command: Command, tenants: Api<Tenant>) -> anyhow::Result<()> {
    match command {
        Command::Create {
            name,
            owners,
            quota,
            pod_security,
            wait,
            timeout,
            partition,
        } => {
            TenantName::new(&name)?;
            let spec = tenant_spec(&owners, &quota, pod_security, partition)?;
            create(&tenants, &name, spec, wait, timeout).await?;
        }
        Command::List => {
            let list = tenants
                .list(&ListParams::default())
                .await
                .map_err(api_error)?;
            println!(
                "{:<22} {:<12} {:<11} {:<14} OWNERS",
                "NAME", "PHASE", "NAMESPACES", "PARTITION"
            );
            for tenant in list.items {
                let status = tenant.status.clone().unwrap_or_default();
                let owners: Vec<String> = tenant
                    .spec
                    .owners
                    .iter()
                    .map(|o| format!("{:?}:{}", o.kind, o.name))
                    .collect();
                println!(
                    "{:<22} {:<12} {:<11} {:<14} {}",
                    tenant.metadata.name.unwrap_or_default(),
                    status.phase.map(|p| format!("{p:?}")).unwrap_or_default(),
                    status.namespaces.map(|n| n.to_string()).unwrap_or_default(),
                    tenant.spec.partition,
                    owners.join(",")
                );
            }
        }
        Command::Get { name } => {
            let tenant = tenants.get(&name).await.map_err(api_error)?;
            print!("{}", serde_yaml::to_string(&tenant)?);
        }
        Command::Delete { name } => {
            tenants
                .delete(&name, &DeleteParams::default())
                .await
                .map_err(api_error)?;
            println!("tenant/{name} deleted");
        }
        Command::Use { .. } | Command::Current | Command::Kubeconfig { .. } => {
            unreachable!("handled by run")
        }
    }
    Ok(())
}

fn parse_owner(text: &str) -> anyhow::Result<Owner> {
    let mut parts = text.splitn(3, ':');
    let kind = parts.next().unwrap_or_default().to_ascii_lowercase();
    let (kind, namespace, name) = match (kind.as_str(), parts.next(), parts.next()) {
        ("user", Some(name), None) => (OwnerKind::User, None, name),
        ("group", Some(name), None) => (OwnerKind::Group, None, name),
        ("serviceaccount", Some(ns), Some(name)) => {
            (OwnerKind::ServiceAccount, Some(ns.to_string()), name)
        }
        _ => bail!(
            "--owner {text:?}: expected user:NAME, group:NAME or serviceaccount:NAMESPACE:NAME"
        ),
    };
    Ok(Owner {
        kind,
        name: name.to_string(),
        namespace,
    })
}

/// The server's own message, not kube's debug rendering of it.
fn api_error(err: kube::Error) -> anyhow::Error {
    match err {
        kube::Error::Api(status) => anyhow::anyhow!("{}", status.message),
        other => anyhow::anyhow!(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_parsed_or_refused_clearly() {
        assert_eq!(parse_owner("user:alice").unwrap().kind, OwnerKind::User);
        let sa = parse_owner("serviceaccount:web:ci").unwrap();
        assert_eq!(
            (sa.namespace.as_deref(), sa.name.as_str()),
            (Some("web"), "ci")
        );
        assert!(
            parse_owner("alice")
                .unwrap_err()
                .to_string()
                .contains("expected user:NAME")
        );
    }
}
