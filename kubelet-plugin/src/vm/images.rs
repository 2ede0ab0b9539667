//! Content-addressed cache of VM base images: each is fetched once, checked
//! (qcow2 or raw disk, not corrupt, no backing file), and stored as
//! `<sha256>.<format>`; the index maps the names it was pulled by.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use hyper::Method;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;

use super::translate::{ImageSource, Translations, normalize};
use crate::fsutil::write_atomic;
use crate::ids::hex;

const MAX_REDIRECTS: usize = 5;
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// Why an image could not be pulled; the message goes back to the kubelet.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot fetch VM image {reference} from {url}: {reason}")]
    Unreachable {
        reference: String,
        url: String,
        reason: String,
    },
    #[error("VM image {reference}{from} is not a disk image: {reason}")]
    NotAnImage {
        reference: String,
        from: String,
        reason: String,
    },
    #[error("VM image {reference}{from} is a corrupt qcow2: {reason}")]
    Corrupt {
        reference: String,
        from: String,
        reason: String,
    },
    #[error("VM image {0} is used by VM containers {1}")]
    InUse(String, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CachedImage {
    /// `sha256:<hex>` of the bytes.
    pub id: String,
    /// The names it was pulled by.
    pub names: Vec<String>,
    /// `qcow2` or `raw`.
    pub format: String,
    pub size: u64,
    pub pulled_at: u64,
    /// Fetched with credentials: every later pull asks the server again
    /// with the puller's own credentials (a tenant without them must not
    /// get another tenant's private image from this node's cache).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
}

/// HTTP Basic credentials for a VM image server, from the kubelet's CRI
/// `AuthConfig` (the pod's image pull secret for the image's host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl Credentials {
    /// From CRI's `username`/`password`, else its base64 `auth` (`user:password`).
    pub fn from_cri(auth: &k8s_cri::v1::AuthConfig) -> Option<Self> {
        use base64::Engine;
        if !auth.username.is_empty() {
            return Some(Self {
                username: auth.username.clone(),
                password: auth.password.clone(),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.auth.trim())
            .ok()?;
        let (username, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        Some(Self {
            username: username.into(),
            password: password.into(),
        })
    }

    fn header(&self) -> String {
        use base64::Engine;
        let pair = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

impl CachedImage {
    fn digest(&self) -> &str {
        self.id.trim_start_matches("sha256:")
    }
}

#[derive(Default, Serialize, Deserialize)]
struct Index {
    images: Vec<CachedImage>,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Empty<bytes::Bytes>,
>;

pub struct ImageCache {
    dir: PathBuf,
    translations: Translations,
    index: Mutex<Index>,
    /// One pull at a time per reference, so concurrent pulls fetch once.
    pulls: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    http: HttpClient,
}

impl ImageCache {
    pub fn open(dir: &Path, translations: Translations) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let index = match std::fs::read(dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Index::default(),
            Err(e) => return Err(e.into()),
        };
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()?
            .https_or_http()
            .enable_http1()
            .build();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(https);
        Ok(Self {
            dir: dir.to_path_buf(),
            translations,
            index: Mutex::new(index),
            pulls: Mutex::new(HashMap::new()),
            http,
        })
    }

    /// Whether `reference` names a VM image: by its shape, or because it
    /// is the name or id of one in the cache.
    pub async fn is_vm_image(&self, reference: &str) -> bool {
        self.translations.is_vm_image(reference) || self.find(reference).await.is_some()
    }

    pub fn path_of(&self, image: &CachedImage) -> PathBuf {
        self.dir
            .join(format!("{}.{}", image.digest(), image.format))
    }

    /// The cached image a reference (name or id) names.
    pub async fn find(&self, reference: &str) -> Option<CachedImage> {
        let reference = normalize(reference);
        let index = self.index.lock().await;
        index
            .images
            .iter()
            .find(|img| img.id == reference || img.names.iter().any(|n| n == reference))
            .cloned()
    }

    pub async fn list(&self) -> Vec<CachedImage> {
        self.index.lock().await.images.clone()
    }

    /// Fetches `reference` unless it is cached; concurrent pulls of one
    /// reference fetch once. A cached image that was fetched with
    /// credentials is handed out only once the server accepts these
    /// `credentials` for it (as a registry checks every pull).
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<&Credentials>,
    ) -> Result<CachedImage, ImageError> {
        let reference = normalize(reference);
        let gate = {
            let mut pulls = self.pulls.lock().await;
            pulls.entry(reference.to_string()).or_default().clone()
        };
        let _one_at_a_time = gate.lock().await;
        let source = self.translations.source(reference);
        if let Some(img) = self.find(reference).await {
            if img.private
                && let ImageSource::Url(url) = &source
            {
                self.fetch(reference, url, credentials, Method::HEAD)
                    .await?;
            }
            return Ok(img);
        }
        // Said in errors only when a translation or scheme changed it.
        let from = match &source {
            ImageSource::Url(u) if u != reference => format!(" (fetched from {u})"),
            ImageSource::Path(p) if p.as_os_str() != reference => {
                format!(" (read from {})", p.display())
            }
            _ => String::new(),
        };
        let tmp = self.dir.join(format!(".pull-{}", random_suffix()));
        let fetched = match &source {
            ImageSource::Url(url) => self.download(reference, url, credentials, &tmp).await,
            ImageSource::Path(path) => copy_hashing(reference, path, &tmp).await,
        };
        let (digest, size) = match fetched {
            Ok(v) => v,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let format = match inspect(reference, &from, &tmp).await {
            Ok(f) => f,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let image = CachedImage {
            id: format!("sha256:{digest}"),
            names: vec![reference.to_string()],
            format,
            size,
            pulled_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            private: credentials.is_some() && matches!(source, ImageSource::Url(_)),
        };
        let path = self.path_of(&image);
        tokio::fs::rename(&tmp, &path).await?;
        let mut index = self.index.lock().await;
        let stored = if let Some(existing) = index.images.iter_mut().find(|i| i.id == image.id) {
            // The same bytes under another name: one file, both names.
            if !existing.names.iter().any(|n| n == reference) {
                existing.names.push(reference.to_string());
            }
            existing.private |= image.private;
            existing.clone()
        } else {
            index.images.push(image.clone());
            image
        };
        self.save(&index).await?;
        tracing::info!(reference, id = %stored.id, format = %stored.format, size = stored.size, "VM image cached");
        Ok(stored)
    }

    /// Removes a cached image unless a VM container's disk is built on it.
    pub async fn remove(&self, reference: &str, users: &[String]) -> Result<(), ImageError> {
        let reference = normalize(reference);
        let mut index = self.index.lock().await;
        let Some(pos) = index
            .images
            .iter()
            .position(|img| img.id == reference || img.names.iter().any(|n| n == reference))
        else {
            return Ok(());
        };
        if !users.is_empty() {
            return Err(ImageError::InUse(reference.to_string(), users.join(", ")));
        }
        let image = index.images.remove(pos);
        match tokio::fs::remove_file(self.path_of(&image)).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        self.save(&index).await?;
        Ok(())
    }

    /// Bytes and files the cache holds, for ImageFsInfo.
    pub async fn usage(&self) -> (u64, u64) {
        let index = self.index.lock().await;
        (
            index.images.iter().map(|i| i.size).sum(),
            index.images.len() as u64,
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn save(&self, index: &Index) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(index).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join("index.json"), &bytes).await
    }

    /// Asks the server for `url` (following redirects), with the
    /// credentials if any; the answer once it is a success.
    async fn fetch(
        &self,
        reference: &str,
        url: &str,
        credentials: Option<&Credentials>,
        method: Method,
    ) -> Result<(String, hyper::Response<hyper::body::Incoming>), ImageError> {
        let unreachable = |url: &str, reason: String| ImageError::Unreachable {
            reference: reference.to_string(),
            url: url.to_string(),
            reason,
        };
        let mut url = url.to_string();
        for _ in 0..=MAX_REDIRECTS {
            let uri: hyper::Uri = url
                .parse()
                .map_err(|e| unreachable(&url, format!("bad URL: {e}")))?;
            let mut req = hyper::Request::builder()
                .method(method.clone())
                .uri(uri)
                .header(
                    "user-agent",
                    concat!("arktos-node/", env!("CARGO_PKG_VERSION")),
                );
            if let Some(credentials) = credentials {
                req = req.header(hyper::header::AUTHORIZATION, credentials.header());
            }
            let req = req
                .body(http_body_util::Empty::new())
                .map_err(|e| unreachable(&url, e.to_string()))?;
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| unreachable(&url, error_chain(&e)))?;
            if resp.status().is_redirection() {
                let next = resp
                    .headers()
                    .get(hyper::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        unreachable(&url, format!("{} without Location", resp.status()))
                    })?;
                url = resolve_location(&url, next);
                continue;
            }
            let status = resp.status();
            if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
                let why = if credentials.is_some() {
                    "the credentials of the pod's image pull secret were refused"
                } else {
                    "the server requires credentials: give the pod an image pull secret for this image's host"
                };
                return Err(unreachable(&url, format!("HTTP {status}: {why}")));
            }
            if !status.is_success() {
                return Err(unreachable(&url, format!("HTTP {status}")));
            }
            return Ok((url, resp));
        }
        Err(unreachable(&url, "too many redirects".into()))
    }

    async fn download(
        &self,
        reference: &str,
        url: &str,
        credentials: Option<&Credentials>,
        to: &Path,
    ) -> Result<(String, u64), ImageError> {
        let unreachable = |url: &str, reason: String| ImageError::Unreachable {
            reference: reference.to_string(),
            url: url.to_string(),
            reason,
        };
        let (url, resp) = self.fetch(reference, url, credentials, Method::GET).await?;
        let total = resp
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        tracing::info!(reference, %url, total_bytes = total, "pulling VM image");
        let mut body = resp.into_body();
        let mut file = tokio::fs::File::create(to).await?;
        let mut hasher = Sha256::new();
        let mut done: u64 = 0;
        let started = Instant::now();
        let mut last_report = Instant::now();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| unreachable(&url, format!("body: {}", error_chain(&e))))?;
            if let Ok(data) = frame.into_data() {
                hasher.update(&data);
                file.write_all(&data).await?;
                done += data.len() as u64;
                if last_report.elapsed() >= PROGRESS_EVERY {
                    last_report = Instant::now();
                    tracing::info!(
                        reference,
                        bytes = done,
                        total_bytes = total,
                        "pulling VM image"
                    );
                }
            }
        }
        file.sync_all().await?;
        if let Some(total) = total
            && total != done
        {
            return Err(unreachable(
                &url,
                format!("body ended after {done} of {total} bytes"),
            ));
        }
        tracing::info!(
            reference,
            bytes = done,
            seconds = started.elapsed().as_secs_f64(),
            "VM image fetched"
        );
        Ok((hex(&hasher.finalize()), done))
    }
}

async fn copy_hashing(
    reference: &str,
    from: &Path,
    to: &Path,
) -> Result<(String, u64), ImageError> {
    let mut src = tokio::fs::File::open(from)
        .await
        .map_err(|e| ImageError::Unreachable {
            reference: reference.to_string(),
            url: from.display().to_string(),
            reason: e.to_string(),
        })?;
    let mut dst = tokio::fs::File::create(to).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = src.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n]).await?;
        done += n as u64;
    }
    dst.sync_all().await?;
    Ok((hex(&hasher.finalize()), done))
}

/// The format of a fetched file, refusing what cannot boot or is unsafe.
async fn inspect(reference: &str, from: &str, file: &Path) -> Result<String, ImageError> {
    let not_image = |reason: String| ImageError::NotAnImage {
        reference: reference.to_string(),
        from: from.to_string(),
        reason,
    };
    let mut head = vec![0u8; 64 * 1024];
    let n = {
        let mut f = tokio::fs::File::open(file).await?;
        let mut filled = 0;
        while filled < head.len() {
            let k = f.read(&mut head[filled..]).await?;
            if k == 0 {
                break;
            }
            filled += k;
        }
        filled
    };
    let head = &head[..n];
    let corrupt = |reason: String| ImageError::Corrupt {
        reference: reference.to_string(),
        from: from.to_string(),
        reason,
    };
    if head.starts_with(b"QFI\xfb") {
        let info = qemu_img(&["info", "--output=json", "-f", "qcow2"], file)
            .await
            .map_err(corrupt)?;
        let info: serde_json::Value =
            serde_json::from_str(&info).map_err(|e| not_image(e.to_string()))?;
        if info.get("backing-filename").is_some() {
            // A backing file would make the VM read a host path.
            return Err(not_image(
                "qcow2 with a backing file is not accepted".into(),
            ));
        }
        qemu_img(&["check", "-q", "-f", "qcow2"], file)
            .await
            .map_err(corrupt)?;
        return Ok("qcow2".into());
    }
    let boot_sector = head.len() >= 512 && head[510] == 0x55 && head[511] == 0xAA;
    let iso = head.len() >= 0x8006 && &head[0x8001..0x8006] == b"CD001";
    if boot_sector || iso {
        return Ok("raw".into());
    }
    let what = if head.is_empty() {
        "the file is empty".to_string()
    } else if std::str::from_utf8(head).is_ok() {
        "it is text, with no qcow2 header and no boot sector".to_string()
    } else {
        "no qcow2 header, no boot sector, no ISO 9660 volume".to_string()
    };
    Err(not_image(what))
}

async fn qemu_img(args: &[&str], file: &Path) -> Result<String, String> {
    let out = tokio::process::Command::new("qemu-img")
        .args(args)
        .arg(file)
        .output()
        .await
        .map_err(|e| format!("qemu-img: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let msg = String::from_utf8_lossy(&out.stderr);
        let msg = msg.trim().replace(&file.display().to_string(), "<image>");
        Err(if msg.is_empty() {
            format!("qemu-img {} failed ({})", args[0], out.status)
        } else {
            msg
        })
    }
}

fn resolve_location(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    if location.starts_with('/') {
        format!("{}{}", &base[..host_end], location)
    } else {
        let dir_end = base
            .rfind('/')
            .filter(|&i| i >= host_end)
            .unwrap_or(host_end);
        format!("{}/{}", &base[..dir_end], location)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn random_suffix() -> String {
    crate::ids::new_id()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_request() {
        assert_eq!(
            resolve_location("http://h:1/a/b.img", "/c.img"),
            "http://h:1/c.img"
        );
        assert_eq!(
            resolve_location("http://h:1/a/b.img", "c.img"),
            "http://h:1/a/c.img"
        );
        assert_eq!(resolve_location("http://h/a", "https://o/x"), "https://o/x");
    }

    #[tokio::test]
    async fn text_and_empty_files_are_not_images() {
        let dir = std::env::temp_dir().join(format!("arktos-inspect-{}", random_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("t");
        std::fs::write(&text, "<html>not found</html>").unwrap();
        let err = inspect("x", "http://h/x", &text).await.unwrap_err();
        assert!(err.to_string().contains("it is text"), "{err}");
        let empty = dir.join("e");
        std::fs::write(&empty, "").unwrap();
        assert!(
            inspect("x", "h", &empty)
                .await
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let mut mbr = vec![0u8; 1024];
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        let disk = dir.join("d");
        std::fs::write(&disk, &mbr).unwrap();
        assert_eq!(inspect("x", "h", &disk).await.unwrap(), "raw");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
