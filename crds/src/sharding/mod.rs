//! The hash every shard decision uses, the bucket label that stands in
//! for server-side sharded watches on API servers without them, the one
//! ring dividing the hash space among live instances, and their Leases:
//! shared by the sharded controllers and arktos-apiserver's list copies.

pub mod membership;
pub mod ring;

/// 64-bit FNV-1a, the hash kube-apiserver's `shardRange` uses.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Label carrying an object's bucket: the top 8 bits of its name's FNV-1a
/// hash, finalised (MurmurHash3's fmix64) because FNV-1a barely moves its
/// top bits when names differ only at the end (`t-1`, `t-2`...).
/// arktos-apiserver stamps it on every Tenant, and the tenant's bucket is
/// on every object of the tenant too (`naming::tenant_labels`).
pub const BUCKET_LABEL: &str = "sharding.arktos.io/bucket";

/// Buckets of the hash space (bucket `b` starts at `b * 2^56`).
pub const BUCKETS: u16 = 256;

pub fn bucket_of(name: &str) -> u8 {
    let mut h = fnv1a64(name.as_bytes());
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h >> 56) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn names_that_differ_at_the_end_spread_over_the_buckets() {
        let mut thirds = [0usize; 3];
        for i in 0..3000 {
            let bucket = usize::from(bucket_of(&format!("tenant-{i}")));
            thirds[(bucket * 3) / 256] += 1;
        }
        assert!(thirds.iter().all(|n| (850..1150).contains(n)), "{thirds:?}");
    }
}
