//! The hash every shard decision uses, and the bucket label that stands in
//! for server-side sharded watches on API servers without them.

/// 64-bit FNV-1a, the hash kube-apiserver's `shardRange` uses.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Label carrying an object's bucket: the top 8 bits of the FNV-1a hash of
/// its name. arktos-apiserver stamps it on every Tenant.
pub const BUCKET_LABEL: &str = "sharding.arktos.io/bucket";

/// Buckets of the hash space (bucket `b` starts at `b * 2^56`).
pub const BUCKETS: u16 = 256;

pub fn bucket_of(name: &str) -> u8 {
    (fnv1a64(name.as_bytes()) >> 56) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(bucket_of("a"), 0xaf);
    }
}
