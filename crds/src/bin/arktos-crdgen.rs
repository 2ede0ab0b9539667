//! Writes the CRDs generated from the Rust types into `manifests/crds/`.
//! A test fails when the committed files differ from a fresh generation.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds"));
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in arktos_crds::generated::files() {
        let path = dir.join(file);
        std::fs::write(&path, yaml)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
