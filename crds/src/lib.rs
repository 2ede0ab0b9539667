//! Types that cross a process boundary in Arktos, and the rules every binary
//! shares about them: the tenant name mapping lives here and nowhere else.
#![forbid(unsafe_code)]

pub mod naming;

pub use naming::{NameError, StorageNamespace, TenantName};
