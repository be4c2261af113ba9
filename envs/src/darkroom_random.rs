//! Dark Room with random starts (`"darkroom_random"`): DPT's Dark Room (10x10, reward 1 on
//! every step that ends on the goal, never terminal, horizon 100, the same 100 goals and 80/20
//! split), except that every episode starts in a uniformly random cell drawn from the slot's
//! RNG. A policy can no longer memorise one path from `(0, 0)`: to do well in later episodes
//! of a trial it has to remember *where* the goal was, not how it got there. The oracle moves
//! in x first, then y, and stays on the goal, as in every grid world of [`crate::grid`].
//!
//! The first task added by following docs/extending.md: one config type with its
//! [`GridRules`], and one line in each of `EnvConfig`'s registration points.

use serde::{Deserialize, Serialize};

use crate::darkroom::MAX_SIZE;
use crate::grid::{GoalReward, GridRules, StartRule};

/// Dark Room with a random start cell every episode (`"darkroom_random"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DarkRoomRandomConfig {
    /// Grid side (cells); as DPT's Dark Room: 10.
    pub size: usize,
    /// Episode length in steps; as DPT's Dark Room: 100.
    pub horizon: usize,
}

impl Default for DarkRoomRandomConfig {
    fn default() -> Self {
        DarkRoomRandomConfig {
            size: 10,
            horizon: 100,
        }
    }
}

impl DarkRoomRandomConfig {
    /// The rules of this Dark Room: DPT's, with random starts.
    pub fn rules(&self) -> GridRules {
        GridRules {
            name: "darkroom_random",
            size: self.size,
            max_size: MAX_SIZE,
            horizon: self.horizon,
            start: StartRule::Random,
            goal_reward: GoalReward::EveryStep,
            key_to_door: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::GridState;
    use crate::{EnvConfig, ObsBatch, Split, StepBatch};

    #[test]
    fn is_registered_under_its_name_with_darkroom_tasks() {
        let env = EnvConfig::from_name("darkroom_random").unwrap();
        assert_eq!(env.name(), "darkroom_random");
        assert!(env.validate().is_empty());
        let dark = EnvConfig::from_name("darkroom").unwrap();
        assert_eq!(env.spec().num_actions, dark.spec().num_actions);
        assert_eq!(env.spec().horizon, 100);
        let (a, b) = (env.build(0, 0, 1).unwrap(), dark.build(0, 0, 1).unwrap());
        assert_eq!(a.tasks(Split::Train), b.tasks(Split::Train));
        assert_eq!(a.tasks(Split::Test), b.tasks(Split::Test));
        assert_eq!(a.tasks(Split::Test).len(), 20);
    }

    #[test]
    fn episodes_start_in_random_cells_reproducibly_per_slot() {
        let env = EnvConfig::DarkRoomRandom(DarkRoomRandomConfig {
            size: 10,
            horizon: 3,
        });
        let spec = env.spec();
        let starts = |seed: u64| -> Vec<(f32, f32)> {
            let mut v = env.build(seed, 0, 8).unwrap();
            let mut obs = ObsBatch::new(&spec, 8);
            v.reset(&mut obs);
            let mut out = StepBatch::new(&spec, 8);
            let mut cells: Vec<(f32, f32)> = (0..8)
                .map(|s| (obs.vector[2 * s], obs.vector[2 * s + 1]))
                .collect();
            // After `horizon` steps every slot is truncated and starts again.
            for _ in 0..3 {
                v.step(&[4; 8], &mut out).unwrap();
            }
            assert!(out.truncated.iter().all(|&t| t));
            cells.extend((0..8).map(|s| (out.obs.vector[2 * s], out.obs.vector[2 * s + 1])));
            cells
        };
        let a = starts(7);
        assert_eq!(a, starts(7), "same seed, same starts");
        assert_ne!(a, starts(8), "another seed, other starts");
        let distinct: std::collections::HashSet<(i32, i32)> =
            a.iter().map(|&(x, y)| (x as i32, y as i32)).collect();
        assert!(
            distinct.len() > 4,
            "16 starts in {} cells: {a:?}",
            distinct.len()
        );
        assert!(a
            .iter()
            .all(|&(x, y)| (0.0..10.0).contains(&x) && (0.0..10.0).contains(&y)));
    }

    #[test]
    fn the_oracle_reaches_the_goal_from_any_start_and_stays() {
        let rules = DarkRoomRandomConfig::default().rules();
        let task = rules.task(37).unwrap(); // goal (3, 7)
        for s in rules.states() {
            // `dist` moves to the goal, the last of which already pays; then every step pays.
            let dist = (s.x - task.goal.0).abs() + (s.y - task.goal.1).abs();
            let want = (rules.horizon as i32 - (dist - 1).max(0)) as f32;
            assert_eq!(rules.oracle_return(&task, s), want, "start {s:?}");
        }
        let far = GridState {
            x: 9,
            y: 0,
            has_key: false,
        };
        assert_eq!(rules.oracle_return(&task, far), 100.0 - 12.0);
    }
}
