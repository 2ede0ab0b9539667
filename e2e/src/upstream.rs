//! The pinned upstream components (etcd, kube-apiserver, controller-manager,
//! scheduler, kubelet, kubectl, KWOK), built from the Go module in
//! `e2e/upstream` into one binary that dispatches by name, as hyperkube did.
//!
//! `e2e/upstream/go.mod` is the one place where upstream versions are pinned.
//! The build lands in `$ARKTOS_HOME/upstream/<kubernetes version>-<hash>/`,
//! keyed by the Go module's files and the Go toolchain, so a warm run does
//! not rebuild and a changed pin does.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::home::{ArktosHome, source_root};
use crate::{Error, IoContext, Result};

/// Commands the upstream binary answers to.
pub const COMMANDS: &[&str] = &[
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kubectl",
    "kwok",
    "kwok-stages",
    "client-check",
];

const BINARY: &str = "arktos-upstream";

/// A built set of upstream components.
#[derive(Clone, Debug)]
pub struct Upstream {
    dir: PathBuf,
    pub kubernetes_version: String,
}

impl Upstream {
    /// Path of the link named after `command` (what `ps` shows).
    pub fn command(&self, command: &str) -> PathBuf {
        self.dir.join(command)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the built components, building them first if this version
    /// and these inputs were never built here.
    pub fn ensure(home: &ArktosHome) -> Result<Self> {
        let module = source_root().join("e2e").join("upstream");
        let go_mod = read(&module.join("go.mod"))?;
        let kubernetes_version = pinned_version(&go_mod, "k8s.io/kubernetes").ok_or_else(|| {
            Error::UpstreamBuild("go.mod does not require k8s.io/kubernetes".into())
        })?;
        let go_version = go_version()?;
        let mut hash = Sha256::new();
        for file in ["go.mod", "go.sum", "main.go", "clientcheck.go"] {
            hash.update(read(&module.join(file))?.as_bytes());
        }
        hash.update(go_version.as_bytes());
        let key = hex(&hash.finalize()[..6]);
        let dir = home
            .upstream_dir()
            .join(format!("{kubernetes_version}-{key}"));
        let upstream = Self {
            dir,
            kubernetes_version,
        };
        if !upstream.command(BINARY).exists() {
            upstream.build(&module)?;
        }
        upstream.link_commands()?;
        Ok(upstream)
    }

    fn build(&self, module: &Path) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .context(|| format!("creating {}", self.dir.display()))?;
        let partial = self.dir.join(format!("{BINARY}.partial"));
        let version = &self.kubernetes_version;
        let (major, minor) = major_minor(version);
        let ldflags = [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ]
        .iter()
        .flat_map(|pkg| {
            [
                format!("-X {pkg}.gitVersion={version}"),
                format!("-X {pkg}.gitMajor={major}"),
                format!("-X {pkg}.gitMinor={minor}"),
            ]
        })
        .collect::<Vec<_>>()
        .join(" ");
        eprintln!(
            "building upstream Kubernetes {version} components into {} (about 12 minutes on 2 cores when cold)",
            self.dir.display()
        );
        let started = Instant::now();
        // `-v` names each package as it is compiled: that is our progress.
        let mut child = Command::new("go")
            .args(["build", "-v", "-trimpath", "-ldflags"])
            .arg(format!("-s -w {ldflags}"))
            .arg("-o")
            .arg(&partial)
            .arg(".")
            .current_dir(module)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context(|| "running `go build` (is Go installed?)".into())?;
        let mut errors = Vec::new();
        let mut packages = 0usize;
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines().map_while(|line| line.ok()) {
                if line.contains(' ') || line.starts_with('#') {
                    errors.push(line);
                    continue;
                }
                packages += 1;
                if packages.is_multiple_of(250) {
                    eprintln!(
                        "  ... {packages} packages compiled ({}s)",
                        started.elapsed().as_secs()
                    );
                }
            }
        }
        let status = child.wait().context(|| "waiting for `go build`".into())?;
        if !status.success() {
            return Err(Error::UpstreamBuild(errors.join("\n")));
        }
        std::fs::rename(&partial, self.command(BINARY))
            .context(|| format!("moving the build into {}", self.dir.display()))?;
        eprintln!(
            "built upstream components in {}s ({packages} packages)",
            started.elapsed().as_secs()
        );
        Ok(())
    }

    fn link_commands(&self) -> Result<()> {
        for command in COMMANDS {
            let link = self.command(command);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(BINARY, &link)
                    .context(|| format!("linking {}", link.display()))?;
            }
        }
        Ok(())
    }

    /// Points `<home>/bin/kubectl` at this build, for people and scripts.
    pub fn link_kubectl(&self, home: &ArktosHome) -> Result<PathBuf> {
        let bin = home.bin_dir();
        std::fs::create_dir_all(&bin).context(|| format!("creating {}", bin.display()))?;
        let link = bin.join("kubectl");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(self.command("kubectl"), &link)
            .context(|| format!("linking {}", link.display()))?;
        Ok(link)
    }
}

/// The version `go.mod` requires of `module`.
fn pinned_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.next()?;
        let version = words.next()?;
        (name == module && words.next().is_none_or(|w| w.starts_with("//")))
            .then(|| version.to_string())
    })
}

fn major_minor(version: &str) -> (&str, &str) {
    let mut parts = version.trim_start_matches('v').split('.');
    (parts.next().unwrap_or("1"), parts.next().unwrap_or("0"))
}

fn go_version() -> Result<String> {
    let out = Command::new("go")
        .args(["env", "GOVERSION"])
        .output()
        .context(|| "running `go env GOVERSION` (is Go installed?)".into())?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).context(|| format!("reading {}", path.display()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_pinned_kubernetes_version() {
        let go_mod = "module x\n\nrequire (\n\tk8s.io/kubernetes v1.37.2\n\tsigs.k8s.io/kwok v0.8.0 // indirect\n)\nreplace k8s.io/api => k8s.io/api v0.37.2\n";
        assert_eq!(
            pinned_version(go_mod, "k8s.io/kubernetes").as_deref(),
            Some("v1.37.2")
        );
        assert_eq!(
            pinned_version(go_mod, "sigs.k8s.io/kwok").as_deref(),
            Some("v0.8.0")
        );
        assert_eq!(pinned_version(go_mod, "k8s.io/api"), None);
        assert_eq!(major_minor("v1.37.2"), ("1", "37"));
    }

    #[test]
    fn the_repository_pins_one_kubernetes_release() {
        let go_mod = read(&source_root().join("e2e/upstream/go.mod")).unwrap();
        let version = pinned_version(&go_mod, "k8s.io/kubernetes").unwrap();
        let (_, minor) = major_minor(&version);
        // Every staging module is replaced by the release matching k8s.io/kubernetes.
        let staging = format!("v0.{minor}.{}", version.rsplit('.').next().unwrap());
        for line in go_mod.lines().filter(|l| l.contains("=>")) {
            assert!(line.trim_end().ends_with(&staging), "{line}");
        }
    }
}

/// Upstream programs the tests use beside the cluster, built from the Go
/// module in `e2e/nodetools` (its go.mod pins them): the distribution
/// registry, crictl and critest for the real node, helm for tenant
/// contexts. Kept apart from the Kubernetes bundle so pinning one never
/// rebuilds the other.
#[derive(Clone, Debug)]
pub struct NodeTools {
    dir: PathBuf,
}

impl NodeTools {
    pub fn ensure(home: &ArktosHome) -> Result<Self> {
        let module = source_root().join("e2e").join("nodetools");
        let mut hash = Sha256::new();
        for file in ["go.mod", "go.sum", "tools.go"] {
            hash.update(read(&module.join(file))?.as_bytes());
        }
        hash.update(go_version()?.as_bytes());
        let dir = home
            .root()
            .join("nodetools")
            .join(hex(&hash.finalize()[..6]));
        let tools = Self { dir };
        if !tools.command("helm").exists() {
            tools.build(&module)?;
        }
        Ok(tools)
    }

    pub fn command(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn build(&self, module: &Path) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .context(|| format!("creating {}", self.dir.display()))?;
        eprintln!(
            "building registry, crictl, critest and helm into {} (a minute or two when cold)",
            self.dir.display()
        );
        let started = Instant::now();
        let partial = self.dir.join("partial");
        std::fs::create_dir_all(&partial).context(|| format!("creating {}", partial.display()))?;
        let go = |args: &[&str]| -> Result<()> {
            let out = Command::new("go")
                .args(args)
                .current_dir(module)
                .output()
                .context(|| "running `go` (is Go installed?)".into())?;
            if !out.status.success() {
                return Err(Error::UpstreamBuild(format!(
                    "go {}: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            Ok(())
        };
        let out_dir = format!("{}/", partial.display());
        go(&[
            "build",
            "-trimpath",
            "-ldflags=-s -w",
            "-o",
            &out_dir,
            "github.com/distribution/distribution/v3/cmd/registry",
            "sigs.k8s.io/cri-tools/cmd/crictl",
            "helm.sh/helm/v3/cmd/helm",
        ])?;
        // critest is a test binary upstream, built as one.
        go(&[
            "test",
            "-c",
            "-trimpath",
            "-o",
            &format!("{out_dir}critest"),
            "sigs.k8s.io/cri-tools/cmd/critest",
        ])?;
        for name in ["registry", "crictl", "critest", "helm"] {
            std::fs::rename(partial.join(name), self.command(name))
                .context(|| format!("moving {name} into {}", self.dir.display()))?;
        }
        eprintln!("built node tools in {}s", started.elapsed().as_secs());
        Ok(())
    }
}
