//! Sweeps across machines: each machine runs its share of a `--vary` sweep (`fleetsim plan …
//! --shard I/N --out plan-I.json`, point j when j mod N = I) and writes a `PlanShard`; merging
//! the files (`fleetsim plan --merge plan-*.json`) gives back the rows one machine would have
//! computed, in value order. Points are independent, seeded simulations (every seed of a point
//! runs on the point's machine), so where a point ran changes nothing in its row.
//!
//! The merge checks that the files are one sweep's shards — same scenario (digest, with every
//! override), seeds, key, values and scaled keys, the same shard count, every index once, each
//! file holding exactly its share — and names the files when they are not. Pure: the caller
//! reads and writes the files.

use fleetsim_core::shard::Shard;
use serde::{Deserialize, Serialize};

use super::PlanRow;

/// The plan shard file's format version (`schema_version`).
/// 2: a point holds one run per seed (`seeds`), not one run.
pub const PLAN_SCHEMA_VERSION: u32 = 2;

/// One point of a sweep with its place in the whole sweep.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanPoint {
    /// The point's index in the sweep's values (0-based).
    pub index: usize,
    /// Its row, as the table shows it.
    pub row: PlanRow,
}

/// One machine's share of a `--vary` sweep: what `fleetsim plan --shard I/N --out F` writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanShard {
    /// `PLAN_SCHEMA_VERSION`.
    pub schema_version: u32,
    /// The scenario's name.
    pub scenario: String,
    /// `Scenario::digest` of the scenario with every override but the varied value (profile,
    /// `--set`, `--threshold`, `--seed`): the shards of one sweep share it.
    pub scenario_digest: String,
    /// The run seed the plan's seeds derive from.
    pub seed: u64,
    /// The seeds every point ran, in order.
    pub seeds: Vec<u64>,
    /// The varied key.
    pub key: String,
    /// Every value of the sweep, in order (not only this shard's).
    pub values: Vec<String>,
    /// `--scale-with` keys, in order.
    pub scale_with: Vec<String>,
    /// Which share this is.
    pub shard: Shard,
    /// This shard's points (index j with j mod N = I), ascending.
    pub points: Vec<PlanPoint>,
}

impl PlanShard {
    /// The sweep indices shard `shard` runs out of `values` values.
    pub fn share(shard: Shard, values: usize) -> impl Iterator<Item = usize> {
        (shard.index as usize..values).step_by(shard.count as usize)
    }
}

/// Why plan shard files are not one sweep's shards.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanMergeError {
    /// No files were given.
    #[error("no plan results to merge")]
    Empty,
    /// A file of another format version.
    #[error(
        "{label}: plan schema_version {found} is not supported (this build reads {PLAN_SCHEMA_VERSION})"
    )]
    Version {
        /// The file.
        label: String,
        /// Its version.
        found: u32,
    },
    /// Two files disagree on which sweep they belong to.
    #[error(
        "{other} has {what} {other_value} but {first} has {what} {first_value}: they are not \
         shards of one sweep"
    )]
    Mismatch {
        /// What differs (`scenario digest`, `seed`, `key`, …).
        what: &'static str,
        /// The first file.
        first: String,
        /// Its value.
        first_value: String,
        /// The differing file.
        other: String,
        /// Its value.
        other_value: String,
    },
    /// Two files claim the same shard.
    #[error("{first} and {second} are both shard {shard}; give each shard's result once")]
    Duplicate {
        /// The shard claimed twice.
        shard: Shard,
        /// The first file.
        first: String,
        /// The second one.
        second: String,
    },
    /// Some shards have no file.
    #[error("{}", missing_message(*count, missing))]
    Missing {
        /// The sweep's shard count.
        count: u32,
        /// The indices without a file, ascending.
        missing: Vec<u32>,
    },
    /// A file's `shard` is not a shard (index not below count, or count outside
    /// 1..=`MAX_SHARDS`).
    #[error("{label}: shard {shard} is not a shard: {reason}")]
    Invalid {
        /// The file.
        label: String,
        /// What it claims.
        shard: Shard,
        /// Why that is not a shard.
        reason: fleetsim_core::shard::ShardError,
    },
    /// A file's points are not its shard's share of the sweep.
    #[error("{label}: {message}")]
    Points {
        /// The file.
        label: String,
        /// What is wrong with its points.
        message: String,
    },
}

fn missing_message(count: u32, missing: &[u32]) -> String {
    format!(
        "plan {} missing: the table needs every shard's points",
        fleetsim_core::shard::describe_missing(count, missing)
    )
}

/// Merge one sweep's shard files (each with a label naming it, its file name) into the varied
/// key and the rows in value order: exactly what `sweep` on one machine returns.
pub fn merge_plan_shards(
    inputs: &[(String, PlanShard)],
) -> Result<(String, Vec<PlanRow>), PlanMergeError> {
    let Some((first_label, first)) = inputs.first() else {
        return Err(PlanMergeError::Empty);
    };
    for (label, p) in inputs {
        if p.schema_version != PLAN_SCHEMA_VERSION {
            return Err(PlanMergeError::Version {
                label: label.clone(),
                found: p.schema_version,
            });
        }
        // Read from JSON, never checked by `Shard::new`; its count sizes the slots below.
        if let Err(reason) = Shard::new(p.shard.index, p.shard.count) {
            return Err(PlanMergeError::Invalid {
                label: label.clone(),
                shard: p.shard,
                reason,
            });
        }
        check_same(first_label, first, label, p)?;
    }
    let count = first.shard.count;
    let mut slots: Vec<Option<&(String, PlanShard)>> = vec![None; count as usize];
    for input in inputs {
        let shard = input.1.shard;
        // Every shard was checked valid and of the first's count, so the index is in range.
        let slot = &mut slots[shard.index as usize];
        if let Some(earlier) = slot {
            return Err(PlanMergeError::Duplicate {
                shard,
                first: earlier.0.clone(),
                second: input.0.clone(),
            });
        }
        *slot = Some(input);
    }
    let missing: Vec<u32> = (0..count)
        .filter(|&i| slots[i as usize].is_none())
        .collect();
    if !missing.is_empty() {
        return Err(PlanMergeError::Missing { count, missing });
    }
    let mut rows: Vec<Option<PlanRow>> = vec![None; first.values.len()];
    for (label, p) in slots.into_iter().flatten() {
        check_share(label, p)?;
        for point in &p.points {
            rows[point.index] = Some(point.row.clone());
        }
    }
    // Every index is some shard's share, and each share was checked complete.
    let rows = rows.into_iter().flatten().collect();
    Ok((first.key.clone(), rows))
}

/// The first difference between two files that makes them shards of different sweeps.
fn check_same(
    first: &str,
    a: &PlanShard,
    other: &str,
    b: &PlanShard,
) -> Result<(), PlanMergeError> {
    let join = |s: &[u64]| s.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let checks: [(&'static str, String, String); 7] = [
        (
            "scenario digest",
            a.scenario_digest.clone(),
            b.scenario_digest.clone(),
        ),
        ("seed", a.seed.to_string(), b.seed.to_string()),
        ("seeds", join(&a.seeds), join(&b.seeds)),
        ("key", a.key.clone(), b.key.clone()),
        ("values", a.values.join(","), b.values.join(",")),
        (
            "--scale-with",
            a.scale_with.join(","),
            b.scale_with.join(","),
        ),
        (
            "shard count",
            a.shard.count.to_string(),
            b.shard.count.to_string(),
        ),
    ];
    for (what, first_value, other_value) in checks {
        if first_value != other_value {
            return Err(PlanMergeError::Mismatch {
                what,
                first: first.to_string(),
                first_value,
                other: other.to_string(),
                other_value,
            });
        }
    }
    Ok(())
}

/// A file holds exactly its shard's points, each with the value of its index and a run for
/// every seed.
fn check_share(label: &str, p: &PlanShard) -> Result<(), PlanMergeError> {
    let want: Vec<usize> = PlanShard::share(p.shard, p.values.len()).collect();
    let got: Vec<usize> = p.points.iter().map(|pt| pt.index).collect();
    let bad = |message: String| PlanMergeError::Points {
        label: label.to_string(),
        message,
    };
    if got != want {
        return Err(bad(format!(
            "shard {} of {} values should hold points {want:?}, holds {got:?}",
            p.shard,
            p.values.len()
        )));
    }
    for pt in &p.points {
        if pt.row.value != p.values[pt.index] {
            return Err(bad(format!(
                "point {} has value {:?}, the sweep's value there is {:?}",
                pt.index, pt.row.value, p.values[pt.index]
            )));
        }
        let seeds: Vec<u64> = pt.row.runs.iter().map(|r| r.seed).collect();
        if seeds != p.seeds {
            return Err(bad(format!(
                "point {} ran seeds {seeds:?}, the sweep's seeds are {:?}",
                pt.index, p.seeds
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value: &str) -> PlanRow {
        let run = |seed: u64| crate::plan::PlanRun {
            seed,
            pickup_p50_s: 0.1,
            pickup_p99_s: 0.2,
            error_rate: 0.0,
            jobs_succeeded: 1,
            jobs_per_s: 0.01,
            jobs_lost: 0,
            utilisation: vec![],
            station_wait_s: vec![],
            passed: true,
            trace_hash: format!("h{value}-{seed}"),
        };
        PlanRow {
            value: value.into(),
            runs: vec![run(1), run(2)],
        }
    }

    fn shards(count: u32) -> Vec<(String, PlanShard)> {
        let values: Vec<String> = (1..=5).map(|v| (v * 10).to_string()).collect();
        (0..count)
            .map(|i| {
                let shard = Shard::new(i, count).expect("shard");
                let points = PlanShard::share(shard, values.len())
                    .map(|index| PlanPoint {
                        index,
                        row: row(&values[index]),
                    })
                    .collect();
                let p = PlanShard {
                    schema_version: PLAN_SCHEMA_VERSION,
                    scenario: "plan".into(),
                    scenario_digest: "abcd".into(),
                    seed: 1,
                    seeds: vec![1, 2],
                    key: "fleet.agents".into(),
                    values: values.clone(),
                    scale_with: vec![],
                    shard,
                    points,
                };
                (format!("plan-{i}.json"), p)
            })
            .collect()
    }

    // Goal: shards' points come back as the rows in value order; each way a file set is not
    // one sweep's shards is an error naming the file or index.
    #[test]
    fn plan_shards_merge_in_value_order_or_are_refused_by_name() {
        let (key, rows) = merge_plan_shards(&shards(2)).expect("merge");
        assert_eq!(key, "fleet.agents");
        let values: Vec<&str> = rows.iter().map(|r| r.value.as_str()).collect();
        assert_eq!(values, ["10", "20", "30", "40", "50"]);

        let err = merge_plan_shards(&shards(3)[..2]).unwrap_err();
        assert!(
            err.to_string().starts_with("plan shard 2/3 missing"),
            "{err}"
        );
        let mut dup = shards(2);
        dup.push(dup[1].clone());
        dup[2].0 = "again.json".into();
        let err = merge_plan_shards(&dup).unwrap_err();
        assert!(matches!(err, PlanMergeError::Duplicate { .. }), "{err}");
        let mut seed = shards(2);
        seed[1].1.seed = 2;
        let err = merge_plan_shards(&seed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "plan-1.json has seed 2 but plan-0.json has seed 1: they are not shards of one sweep"
        );
        let mut seeds = shards(2);
        seeds[1].1.seeds = vec![1, 2, 3];
        let err = merge_plan_shards(&seeds).unwrap_err();
        assert!(
            matches!(err, PlanMergeError::Mismatch { what: "seeds", .. }),
            "{err}"
        );
        let mut one_run = shards(2);
        one_run[0].1.points[0].row.runs.pop();
        let err = merge_plan_shards(&one_run).unwrap_err();
        assert!(err.to_string().contains("ran seeds [1]"), "{err}");
        let mut short = shards(2);
        short[0].1.points.pop();
        let err = merge_plan_shards(&short).unwrap_err();
        assert!(matches!(err, PlanMergeError::Points { ref label, .. } if label == "plan-0.json"));
        let mut digest = shards(2);
        digest[1].1.scenario_digest = "ffff".into();
        assert!(matches!(
            merge_plan_shards(&digest).unwrap_err(),
            PlanMergeError::Mismatch {
                what: "scenario digest",
                ..
            }
        ));
        assert!(matches!(merge_plan_shards(&[]), Err(PlanMergeError::Empty)));
        let mut invalid = shards(2);
        invalid[0].1.shard = Shard {
            index: 0,
            count: u32::MAX,
        };
        invalid[1].1.shard = invalid[0].1.shard;
        let err = merge_plan_shards(&invalid).unwrap_err();
        assert!(matches!(err, PlanMergeError::Invalid { .. }), "{err}");
    }
}
