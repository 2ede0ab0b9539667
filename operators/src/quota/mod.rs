//! Tenant-wide quota: what objects use ([`usage`]) and the ledger that
//! makes charging atomic across namespaces and webhook replicas
//! ([`ledger`]). See the README's "Tenant-wide quota" for the mechanism.

pub mod departures;
pub mod ledger;
pub mod usage;
