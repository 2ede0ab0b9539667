//! Small file helpers shared by the state store and the image cache.

use std::path::Path;

use tokio::io::AsyncWriteExt;

/// Writes `bytes` to `path` so that readers see the old or the new content,
/// never a part (write a sibling, fsync, rename).
pub async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = tokio::fs::File::create(&tmp).await?;
    f.write_all(bytes).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, path).await
}

/// Removes a file or directory tree; absent is fine (deletes are idempotent).
pub async fn remove_all(path: &Path) -> std::io::Result<()> {
    let result = match tokio::fs::symlink_metadata(path).await {
        Ok(m) if m.is_dir() => tokio::fs::remove_dir_all(path).await,
        Ok(_) => tokio::fs::remove_file(path).await,
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}
