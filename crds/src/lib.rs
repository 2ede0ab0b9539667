//! Types that cross a process boundary in Arktos, and the rules every binary
//! shares about them: the tenant name mapping, Tenant validation and the
//! Kubernetes `Status` errors live here and nowhere else.
#![forbid(unsafe_code)]

pub mod client;
#[cfg(feature = "fake-api")]
pub mod fake_api;
pub mod generated;
pub mod logging;
pub mod naming;
pub mod partition;
pub mod quantity;
pub mod sharding;
pub mod status;
pub mod tenant;
pub mod vm;

pub use naming::{NameError, StorageNamespace, TenantName};
pub use tenant::{Tenant, TenantSpec, TenantStatus};
