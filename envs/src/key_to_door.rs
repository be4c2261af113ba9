//! AD's Dark Key-to-Door (`"key_to_door"`): a 9x9 dark grid, 50-step episodes, a uniformly
//! random start cell each episode; reward 1 for reaching the key, then 1 for reaching the door
//! while holding the key, which ends the episode (terminated, success).
//!
//! Tasks are (key, door) pairs: `81^2 = 6561` task ids `key_index * 81 + door_index` with
//! `index = x * 9 + y` (key and door may coincide: then the agent must be on the cell on two
//! successive steps). They are split by the grid worlds' rule (numpy's seed-0 shuffle,
//! [`crate::rng::fixed_split`]) into 4592 train, 656 validation and 1313 test tasks. The observation is `(x, y, has_key)` (the key flag makes the state Markov, which DPT-
//! style query labels need). Actions as in every grid world: `0: x+1, 1: x-1, 2: y+1, 3: y-1,
//! 4: stay`. On a step the key is taken first; the door pays only if the key was already held
//! before the step, so key and door rewards never fall on the same step.

use serde::{Deserialize, Serialize};

use crate::grid::{GoalReward, GridRules, StartRule};

/// Largest grid side for Key-to-Door (the task count grows as `size^4`).
pub const MAX_SIZE: usize = 32;

/// AD's Dark Key-to-Door (`"key_to_door"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KeyToDoorConfig {
    /// Grid side (cells); AD: 9.
    pub size: usize,
    /// Episode step limit; AD: 50.
    pub horizon: usize,
}

impl Default for KeyToDoorConfig {
    fn default() -> Self {
        KeyToDoorConfig {
            size: 9,
            horizon: 50,
        }
    }
}

impl KeyToDoorConfig {
    /// The rules of this world.
    pub fn rules(&self) -> GridRules {
        GridRules {
            name: "key_to_door",
            size: self.size,
            max_size: MAX_SIZE,
            horizon: self.horizon,
            start: StartRule::Random,
            goal_reward: GoalReward::OnceTerminal,
            key_to_door: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{GridState, GridTask, DOWN, LEFT, RIGHT, STAY, UP};
    use crate::{EnvConfig, ObsBatch, Split, StepBatch};

    #[test]
    fn reward_order_key_then_door() {
        let r = KeyToDoorConfig::default().rules();
        let task = GridTask {
            goal: (3, 0),
            key: Some((1, 0)),
        };
        let mut s = GridState {
            x: 4,
            y: 0,
            has_key: false,
        };
        // Passing the door without the key pays nothing.
        let tr = r.step(&task, s, LEFT).unwrap();
        assert_eq!((tr.next.x, tr.reward, tr.terminated), (3, 0.0, false));
        s = tr.next;
        let tr = r.step(&task, s, LEFT).unwrap();
        assert_eq!(tr.reward, 0.0);
        s = tr.next;
        // Key.
        let tr = r.step(&task, s, LEFT).unwrap();
        assert_eq!(
            (tr.reward, tr.next.has_key, tr.terminated),
            (1.0, true, false)
        );
        s = tr.next;
        // Staying on the key again pays nothing more.
        let tr = r.step(&task, s, STAY).unwrap();
        assert_eq!(tr.reward, 0.0);
        s = tr.next;
        let tr = r.step(&task, s, RIGHT).unwrap();
        assert_eq!(tr.reward, 0.0);
        s = tr.next;
        // Door with the key: reward and termination.
        let tr = r.step(&task, s, RIGHT).unwrap();
        assert_eq!((tr.reward, tr.terminated), (1.0, true));
    }

    #[test]
    fn key_on_door_cell_needs_two_steps() {
        let r = KeyToDoorConfig::default().rules();
        let task = GridTask {
            goal: (1, 1),
            key: Some((1, 1)),
        };
        let s = GridState {
            x: 1,
            y: 0,
            has_key: false,
        };
        let t1 = r.step(&task, s, UP).unwrap();
        assert_eq!(
            (t1.reward, t1.terminated, t1.next.has_key),
            (1.0, false, true)
        );
        let t2 = r.step(&task, t1.next, STAY).unwrap();
        assert_eq!((t2.reward, t2.terminated), (1.0, true));
        assert_eq!(r.optimal_action(&task, &s), UP);
        assert_eq!(r.optimal_action(&task, &t1.next), STAY);
    }

    #[test]
    fn oracle_collects_key_then_door() {
        let r = KeyToDoorConfig::default().rules();
        for id in [0u64, 17, 4000, 6560] {
            let task = r.task(id).unwrap();
            assert_eq!(r.task_id(&task), id);
            for start in r.states().into_iter().filter(|s| !s.has_key).step_by(7) {
                assert_eq!(
                    r.oracle_return(&task, start),
                    2.0,
                    "task {id} start {start:?}"
                );
            }
        }
        let task = r.task(5).unwrap();
        let s = GridState {
            x: 8,
            y: 8,
            has_key: true,
        };
        assert_eq!(r.optimal_action(&task, &s), LEFT);
        let s = GridState {
            x: task.goal.0,
            y: 8,
            has_key: true,
        };
        assert_eq!(
            r.optimal_action(&task, &s),
            if task.goal.1 < 8 { DOWN } else { STAY }
        );
    }

    #[test]
    fn tasks_split_and_env() {
        let cfg = EnvConfig::from_name("key_to_door").unwrap();
        let mut env = cfg.build(1, 0, 4).unwrap();
        let train = env.tasks(Split::Train);
        let validation = env.tasks(Split::Validation);
        let test = env.tasks(Split::Test);
        assert_eq!(
            (train.len(), validation.len(), test.len()),
            (4592, 656, 1313)
        );
        let mut all: Vec<u64> = [train, validation, test].concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6561);
        assert!(env.set_task(0, 6561).is_err());
        let spec = env.spec().clone();
        assert_eq!(spec.vector_dim, 3);
        let mut obs = ObsBatch::new(&spec, 4);
        env.reset(&mut obs);
        // Random starts differ across slots (with overwhelming probability for 4 slots).
        let starts: Vec<(f32, f32)> = (0..4)
            .map(|i| (obs.vector[3 * i], obs.vector[3 * i + 1]))
            .collect();
        assert!(starts.iter().any(|s| *s != starts[0]), "{starts:?}");
        // Oracle policy earns 2 per episode in the vector env too.
        let mut out = StepBatch::new(&spec, 4);
        let mut acts = [0u32; 4];
        let mut total = [0.0f32; 4];
        let mut ended = [false; 4];
        for _ in 0..50 {
            env.oracle_actions(&mut acts);
            env.step(&acts, &mut out).unwrap();
            for i in 0..4 {
                if !ended[i] {
                    total[i] += out.reward[i];
                    ended[i] = out.terminated[i];
                    if out.terminated[i] {
                        assert!(out.success[i]);
                    }
                }
            }
        }
        assert_eq!(total, [2.0; 4]);
        assert_eq!(ended, [true; 4]);
    }
}
