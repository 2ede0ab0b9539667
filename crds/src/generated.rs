//! Manifests generated from the Rust types, so the YAML never drifts from
//! the code. `cargo run -p arktos-crds --bin arktos-crdgen` writes them.

use kube::CustomResourceExt;

use crate::partition;
use crate::tenant::{QuotaLedger, storage_crd};
use crate::vm::action::Action;

const HEADER: &str = "# Generated from the Rust types by `cargo run -p arktos-crds --bin arktos-crdgen`; do not edit.\n";

/// (file name, YAML) of every generated manifest.
pub fn files() -> Vec<(String, String)> {
    [
        storage_crd(),
        partition::storage_crd(),
        QuotaLedger::crd(),
        Action::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = serde_yaml::to_string(&crd).expect("a CRD serialises");
        (format!("{name}.yaml"), format!("{HEADER}{yaml}"))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    #[test]
    fn committed_manifests_match_a_fresh_generation() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/crds");
        for (file, yaml) in super::files() {
            let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
            assert!(
                committed == yaml,
                "manifests/crds/{file} is stale: run `cargo run -p arktos-crds --bin arktos-crdgen`"
            );
        }
    }
}
