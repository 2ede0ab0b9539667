//! Which image references are VM images, and where they are fetched from.
//!
//! A VM image is named by an http(s) URL, a local path (`/...` or
//! `file:///...`), Arktos' URL without scheme (`host/path/disk.img`), or a
//! name the translation config maps to a URL (as Virtlet's and Arktos' image
//! translations did). Everything else is a container image for containerd.

use std::path::PathBuf;

use serde::Deserialize;

/// Where a VM image's bytes come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    Url(String),
    Path(PathBuf),
}

/// One rule: an exact name, or a prefix replaced by the URL's.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Translation {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    pub url: String,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Translations {
    #[serde(default)]
    pub translations: Vec<Translation>,
}

const DISK_SUFFIXES: &[&str] = &[".img", ".qcow2", ".qcow", ".raw"];

/// The reference as the user wrote it: the kubelet appends `:latest` to any
/// image name without a tag, which a VM image URL never has.
pub fn normalize(reference: &str) -> &str {
    match reference.strip_suffix(":latest") {
        Some(rest) if !rest.rsplit('/').next().unwrap_or(rest).contains(':') => rest,
        _ => reference,
    }
}

impl Translations {
    pub fn parse(yaml: &str) -> anyhow::Result<Self> {
        let t: Self = serde_yaml::from_str(yaml)?;
        for rule in &t.translations {
            if rule.name.is_some() == rule.prefix.is_some() {
                anyhow::bail!(
                    "translation to {} must have exactly one of name and prefix",
                    rule.url
                );
            }
        }
        Ok(t)
    }

    fn translate(&self, reference: &str) -> Option<String> {
        self.translations.iter().find_map(|rule| {
            if let Some(name) = &rule.name {
                (name == reference).then(|| rule.url.clone())
            } else {
                let prefix = rule.prefix.as_deref()?;
                let rest = reference.strip_prefix(prefix)?;
                Some(format!("{}{}", rule.url, rest))
            }
        })
    }

    /// Whether `reference` names a VM image rather than a container image.
    pub fn is_vm_image(&self, reference: &str) -> bool {
        let reference = normalize(reference);
        self.translate(reference).is_some()
            || reference.starts_with("http://")
            || reference.starts_with("https://")
            || reference.starts_with("file://")
            || reference.starts_with('/')
            || looks_like_disk_url(reference)
    }

    /// Where a VM image is fetched from: translations first, then the
    /// reference itself (https assumed when it has no scheme).
    pub fn source(&self, reference: &str) -> ImageSource {
        let reference = normalize(reference);
        let url = self
            .translate(reference)
            .unwrap_or_else(|| reference.to_string());
        if let Some(path) = url.strip_prefix("file://") {
            ImageSource::Path(PathBuf::from(path))
        } else if url.starts_with('/') {
            ImageSource::Path(PathBuf::from(url))
        } else if url.starts_with("http://") || url.starts_with("https://") {
            ImageSource::Url(url)
        } else {
            ImageSource::Url(format!("https://{url}"))
        }
    }
}

/// `host.domain/.../name.img`: a container reference has no disk suffix and
/// its last segment carries a tag or digest instead.
fn looks_like_disk_url(reference: &str) -> bool {
    let Some((host, path)) = reference.split_once('/') else {
        return false;
    };
    let base = path.rsplit('/').next().unwrap_or(path);
    host.contains('.') && DISK_SUFFIXES.iter().any(|s| base.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Translations {
        Translations::parse(
            "translations:\n  - prefix: download.cirros-cloud.net/\n    url: http://127.0.0.1:8080/cirros/\n  - name: guest\n    url: file:///srv/guest.qcow2\n",
        )
        .unwrap()
    }

    #[test]
    fn arktos_image_names_are_vm_images_and_registry_refs_are_not() {
        let t = Translations::default();
        for vm in [
            "download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img",
            "https://example.org/x.qcow2",
            "http://127.0.0.1/guest",
            "/var/lib/images/a.raw",
            "file:///a.img",
        ] {
            assert!(t.is_vm_image(vm), "{vm}");
        }
        for container in [
            "busybox",
            "docker.io/library/busybox:1.28",
            "127.0.0.1:5000/arktos/debian:12",
            "registry.k8s.io/pause:3.10",
            "sha256:0123",
        ] {
            assert!(!t.is_vm_image(container), "{container}");
        }
        assert!(rules().is_vm_image("guest"));
    }

    #[test]
    fn the_kubelets_default_tag_is_dropped() {
        assert_eq!(
            normalize("example.org/a/disk.img:latest"),
            "example.org/a/disk.img"
        );
        assert_eq!(normalize("http://h:80/a.img:latest"), "http://h:80/a.img");
        assert_eq!(normalize("busybox:1.28"), "busybox:1.28");
        assert!(
            Translations::default()
                .is_vm_image("download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img:latest")
        );
    }

    #[test]
    fn translations_rewrite_prefixes_and_names() {
        let t = rules();
        assert_eq!(
            t.source("download.cirros-cloud.net/0.3.5/cirros-0.3.5-x86_64-disk.img"),
            ImageSource::Url(
                "http://127.0.0.1:8080/cirros/0.3.5/cirros-0.3.5-x86_64-disk.img".into()
            )
        );
        assert_eq!(
            t.source("guest"),
            ImageSource::Path("/srv/guest.qcow2".into())
        );
        assert_eq!(
            Translations::default().source("example.org/a.img"),
            ImageSource::Url("https://example.org/a.img".into())
        );
    }

    #[test]
    fn a_rule_needs_exactly_one_matcher() {
        assert!(Translations::parse("translations:\n  - url: http://x/\n").is_err());
        assert!(Translations::parse("translations:\n  - {name: a, prefix: b, url: c}\n").is_err());
        assert!(Translations::parse("translation: []\n").is_err());
    }
}
