//! The one sharding ring: the 64-bit FNV-1a hash space divided into equal
//! contiguous ranges, one per live instance in name order, and the two ways
//! of asking the API server for one range only.

use std::fmt;

use super::{BUCKET_LABEL, BUCKETS};

const SPACE: u128 = 1 << 64;

/// `[start, end)` of the hash space; `end` may be 2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Range {
    pub start: u128,
    pub end: u128,
}

impl Range {
    pub const ALL: Range = Range {
        start: 0,
        end: SPACE,
    };

    pub fn intersects(&self, other: &Range) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The share of the whole space, 0 to 1.
    pub fn fraction(&self) -> f64 {
        (self.end - self.start) as f64 / SPACE as f64
    }

    /// `shardRange(object.metadata.uid, '0x..', '0x..')` for kube-apiserver.
    pub fn server_selector(&self) -> String {
        format!(
            "shardRange(object.metadata.uid, '0x{:016x}', '0x{:016x}')",
            self.start, self.end
        )
    }

    /// Buckets whose start lies in the range, as a set-based label
    /// selector (`None` when the range holds no bucket).
    pub fn label_selector(&self) -> Option<String> {
        let width = SPACE / u128::from(BUCKETS);
        let buckets: Vec<String> = (0..u128::from(BUCKETS))
            .filter(|b| (self.start..self.end).contains(&(b * width)))
            .map(|b| b.to_string())
            .collect();
        (!buckets.is_empty()).then(|| format!("{BUCKET_LABEL} in ({})", buckets.join(",")))
    }

    /// Whether an object keyed `key` is this range's, by its bucket: the
    /// same division as [`Range::label_selector`], for resources that are
    /// filtered on the client.
    pub fn owns(&self, key: &str) -> bool {
        let width = SPACE / u128::from(BUCKETS);
        let start = u128::from(super::bucket_of(key)) * width;
        (self.start..self.end).contains(&start)
    }

    /// `start-end` in hex, as kept in a Lease annotation.
    pub fn parse(text: &str) -> Option<Range> {
        let (start, end) = text.split_once('-')?;
        let range = Range {
            start: u128::from_str_radix(start, 16).ok()?,
            end: u128::from_str_radix(end, 16).ok()?,
        };
        (range.start < range.end && range.end <= SPACE).then_some(range)
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{:x}", self.start, self.end)
    }
}

/// The range of `me` among `members` (any order): equal contiguous shares
/// by name order. `None` if `me` is not a member.
pub fn share_of(members: &[String], me: &str) -> Option<Range> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    sorted.dedup();
    let index = sorted.iter().position(|m| *m == me)? as u128;
    let count = sorted.len() as u128;
    Some(Range {
        start: SPACE * index / count,
        end: SPACE * (index + 1) / count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_space_once_and_equally() {
        let members: Vec<String> = ["c", "a", "b"].iter().map(|s| s.to_string()).collect();
        let shares: Vec<Range> = ["a", "b", "c"]
            .iter()
            .map(|m| share_of(&members, m).unwrap())
            .collect();
        assert_eq!(shares[0].start, 0);
        assert_eq!(shares[2].end, SPACE);
        for pair in shares.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
            assert!(!pair[0].intersects(&pair[1]));
        }
        let sizes: Vec<u128> = shares.iter().map(|r| r.end - r.start).collect();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        assert!(share_of(&members, "d").is_none());
    }

    #[test]
    fn selectors_name_the_range() {
        let half = share_of(&["a".into(), "b".into()], "b").unwrap();
        assert_eq!(
            half.server_selector(),
            "shardRange(object.metadata.uid, '0x8000000000000000', '0x10000000000000000')"
        );
        let labels = half.label_selector().unwrap();
        assert!(labels.starts_with("sharding.arktos.io/bucket in (128,129,"));
        assert!(labels.ends_with(",255)"));
        assert_eq!(Range::parse(&half.to_string()), Some(half));
        assert_eq!(Range::parse("5-3"), None);
    }
}
