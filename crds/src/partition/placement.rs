//! Where a new tenant goes. Rules as data: the candidates as arktos-apiserver
//! sees them, and one pure choice, so the policy is tested without a cluster.
//!
//! The policy: among partitions that are ready, schedulable and of weight
//! above 0, the one with the fewest tenants per unit of weight, so tenants
//! spread in proportion to weight (a partition of weight 2 takes twice the
//! tenants of one of weight 1); ties go to the name first in order, so the
//! choice is the same on every replica. An admin's `spec.partition` is
//! taken as asked if that partition is known (even unschedulable: an admin
//! may fill a drained partition on purpose) and refused otherwise.

/// A partition as placement sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub weight: u32,
    pub tenants: u64,
    pub ready: bool,
    pub unschedulable: bool,
}

/// Why no partition can take the tenant.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoPlace {
    #[error("partition {0:?} does not exist")]
    Unknown(String),
    #[error("no partition takes new tenants (ready, schedulable, weight above 0): {0}")]
    NoneOpen(String),
}

/// The partition for a new tenant: `asked` (an admin's `spec.partition`),
/// or the open candidate with the fewest tenants per unit of weight.
pub fn choose<'a>(candidates: &'a [Candidate], asked: Option<&str>) -> Result<&'a str, NoPlace> {
    if let Some(asked) = asked {
        return candidates
            .iter()
            .find(|c| c.name == asked)
            .map(|c| c.name.as_str())
            .ok_or_else(|| NoPlace::Unknown(asked.to_string()));
    }
    candidates
        .iter()
        .filter(|c| c.ready && !c.unschedulable && c.weight > 0)
        // tenants / weight, compared without division.
        .min_by(|a, b| {
            (u128::from(a.tenants) * u128::from(b.weight))
                .cmp(&(u128::from(b.tenants) * u128::from(a.weight)))
                .then_with(|| a.name.cmp(&b.name))
        })
        .map(|c| c.name.as_str())
        .ok_or_else(|| NoPlace::NoneOpen(why_closed(candidates)))
}

/// The candidates as the stored lists say: the root cluster (always ready:
/// it serves this request; `root_weight` from the command line) and every
/// Partition with its probed readiness, each with its tenants as `placed`
/// counts them.
pub fn candidates(
    root: &str,
    root_weight: u32,
    partitions: &serde_json::Value,
    placed: impl Fn(&str) -> u64,
) -> Vec<Candidate> {
    let root = Candidate {
        name: root.to_string(),
        weight: root_weight,
        tenants: placed(root),
        ready: true,
        unschedulable: false,
    };
    let items = partitions["items"].as_array().into_iter().flatten();
    let others = items.filter_map(|p| {
        let name = p["metadata"]["name"].as_str()?;
        let weight = p["spec"]["weight"].as_u64().unwrap_or(1);
        Some(Candidate {
            name: name.to_string(),
            weight: u32::try_from(weight).unwrap_or(super::MAX_WEIGHT),
            tenants: placed(name),
            ready: p["status"]["ready"].as_bool().unwrap_or(false),
            unschedulable: p["spec"]["unschedulable"].as_bool().unwrap_or(false),
        })
    });
    std::iter::once(root).chain(others).collect()
}

fn why_closed(candidates: &[Candidate]) -> String {
    if candidates.is_empty() {
        return "none is known".into();
    }
    candidates
        .iter()
        .map(|c| {
            let why = if !c.ready {
                "not ready"
            } else if c.unschedulable {
                "unschedulable"
            } else {
                "weight 0"
            };
            format!("{} {why}", c.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(name: &str, weight: u32, tenants: u64) -> Candidate {
        Candidate {
            name: name.into(),
            weight,
            tenants,
            ready: true,
            unschedulable: false,
        }
    }

    #[test]
    fn candidates_are_the_root_and_every_partition_with_their_tenants() {
        let partitions = serde_json::json!({"items": [
            {"metadata": {"name": "p2"}, "spec": {"weight": 3, "unschedulable": true}, "status": {"ready": true}},
            {"metadata": {"name": "p3"}, "spec": {}},
        ]});
        let placed = |p: &str| match p {
            "local" => 1,
            "p2" => 2,
            _ => 0,
        };
        let found = candidates("local", 1, &partitions, placed);
        assert_eq!(
            found,
            [
                partition("local", 1, 1),
                Candidate {
                    unschedulable: true,
                    ..partition("p2", 3, 2)
                },
                Candidate {
                    ready: false,
                    ..partition("p3", 1, 0)
                },
            ]
        );
    }

    #[test]
    fn the_fewest_tenants_per_unit_of_weight_wins() {
        let fleet = [partition("local", 1, 10), partition("p2", 2, 15)];
        assert_eq!(choose(&fleet, None), Ok("p2"), "7.5 per unit against 10");
        let fleet = [partition("local", 1, 10), partition("p2", 1, 10)];
        assert_eq!(choose(&fleet, None), Ok("local"), "ties by name");
    }

    #[test]
    fn tenants_spread_in_proportion_to_weight() {
        let mut fleet = [partition("a", 1, 0), partition("b", 3, 0)];
        for _ in 0..400 {
            let name = choose(&fleet, None).unwrap().to_string();
            fleet.iter_mut().find(|c| c.name == name).unwrap().tenants += 1;
        }
        assert_eq!((fleet[0].tenants, fleet[1].tenants), (100, 300));
    }

    #[test]
    fn closed_partitions_take_no_new_tenants_unless_an_admin_asks() {
        let fleet = [
            Candidate {
                ready: false,
                ..partition("down", 1, 0)
            },
            Candidate {
                unschedulable: true,
                ..partition("drained", 1, 0)
            },
            partition("empty", 0, 0),
        ];
        assert_eq!(
            choose(&fleet, None),
            Err(NoPlace::NoneOpen(
                "down not ready, drained unschedulable, empty weight 0".into()
            ))
        );
        assert_eq!(choose(&fleet, Some("drained")), Ok("drained"));
        assert_eq!(
            choose(&fleet, Some("p9")),
            Err(NoPlace::Unknown("p9".into()))
        );
        assert_eq!(
            choose(&[], None),
            Err(NoPlace::NoneOpen("none is known".into()))
        );
    }
}
