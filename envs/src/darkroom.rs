//! Dark Room in three versions.
//!
//! - `darkroom` ([`DarkRoomConfig`]): DPT's official Dark Room. 10x10, start `(0, 0)`,
//!   observation `(x, y)` as floats, actions `0: x+1, 1: x-1, 2: y+1, 3: y-1, 4: stay` clipped
//!   at the walls, reward 1 on every step that ends on the goal, never terminal, horizon 100.
//!   The 100 goals are the cells `(x, y)`, task id `x * 10 + y` (DPT's order: x outer, y inner),
//!   split exactly as DPT's official code does (`collect_data.py`: the goal array in that order,
//!   `np.random.RandomState(seed=0).shuffle(goals)`, the first 80 train, the last 20 test;
//!   reproduced by [`crate::numpy_random::RandomState`]), so the 20 test goals are DPT's and
//!   ReLIC's. Of DPT's 80 training goals the last 10 are our Validation split, the first 70
//!   Train (see [`crate::Split`]).
//! - `darkroom_ad` ([`DarkRoomAdConfig`]): AD's Dark Room. 9x9, start at the centre `(4, 4)`,
//!   20-step episodes, reward 1 on every goal step; 81 goals split 56 train / 8 validation /
//!   17 test by the same rule (AD's split is not published).
//! - `darkroom_hard` ([`DarkRoomHardConfig`]): AD's Dark Room Hard. 17x17, start at the centre
//!   `(8, 8)`, reward only once: reaching the goal pays 1 and **terminates** the episode with
//!   success (after the single reward nothing can be earned, so the episode ends rather than
//!   spending context on empty steps; this also keeps the state Markov in `(x, y)`). Horizon 50
//!   (our choice: AD does not state it; the farthest goal is 16 steps away). 289 goals split
//!   203 train / 28 validation / 58 test.
//!
//! The oracle moves in x first, then y, and stays on the goal. The pure functions below are the
//! DPT Dark Room's single source of truth; the batched env runs the same [`GridRules`].

use serde::{Deserialize, Serialize};

use crate::grid::{GoalReward, GridRules, GridState, GridTask, StartRule};
use crate::{EnvError, TaskSplit};

/// Largest grid side for the Dark Rooms.
pub const MAX_SIZE: usize = 256;

/// DPT's Dark Room (`"darkroom"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DarkRoomConfig {
    /// Grid side (cells); DPT: 10.
    pub size: usize,
    /// Episode length in steps; DPT: 100.
    pub horizon: usize,
}

impl Default for DarkRoomConfig {
    fn default() -> Self {
        DarkRoomConfig {
            size: 10,
            horizon: 100,
        }
    }
}

impl DarkRoomConfig {
    /// The rules of this Dark Room.
    pub fn rules(&self) -> GridRules {
        GridRules {
            name: "darkroom",
            size: self.size,
            max_size: MAX_SIZE,
            horizon: self.horizon,
            start: StartRule::Fixed(0, 0),
            goal_reward: GoalReward::EveryStep,
            key_to_door: false,
        }
    }
}

/// AD's Dark Room (`"darkroom_ad"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DarkRoomAdConfig {
    /// Grid side (cells); AD: 9.
    pub size: usize,
    /// Episode length in steps; AD: 20.
    pub horizon: usize,
}

impl Default for DarkRoomAdConfig {
    fn default() -> Self {
        DarkRoomAdConfig {
            size: 9,
            horizon: 20,
        }
    }
}

impl DarkRoomAdConfig {
    /// The rules of this Dark Room.
    pub fn rules(&self) -> GridRules {
        GridRules {
            name: "darkroom_ad",
            size: self.size,
            max_size: MAX_SIZE,
            horizon: self.horizon,
            start: StartRule::Centre,
            goal_reward: GoalReward::EveryStep,
            key_to_door: false,
        }
    }
}

/// AD's Dark Room Hard (`"darkroom_hard"`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DarkRoomHardConfig {
    /// Grid side (cells); AD: 17.
    pub size: usize,
    /// Episode step limit; 50 (our choice, see the module docs).
    pub horizon: usize,
}

impl Default for DarkRoomHardConfig {
    fn default() -> Self {
        DarkRoomHardConfig {
            size: 17,
            horizon: 50,
        }
    }
}

impl DarkRoomHardConfig {
    /// The rules of this Dark Room.
    pub fn rules(&self) -> GridRules {
        GridRules {
            name: "darkroom_hard",
            size: self.size,
            max_size: MAX_SIZE,
            horizon: self.horizon,
            start: StartRule::Centre,
            goal_reward: GoalReward::OnceTerminal,
            key_to_door: false,
        }
    }
}

/// The rules of DPT's default 10x10 Dark Room.
pub fn dpt_rules() -> GridRules {
    DarkRoomConfig::default().rules()
}

/// DPT Dark Room (10x10): apply `action` at `state` with goal `goal`; returns the next cell and
/// the reward (1 when the next cell is the goal). Errors on a bad action or a cell off the grid.
pub fn step(
    goal: (i32, i32),
    state: (i32, i32),
    action: u32,
) -> Result<((i32, i32), f32), EnvError> {
    let r = dpt_rules();
    let task = GridTask { goal, key: None };
    if !r.contains(&GridState {
        x: goal.0,
        y: goal.1,
        has_key: false,
    }) {
        return Err(EnvError::InvalidState {
            state: format!("goal {goal:?}"),
            size: r.side(),
        });
    }
    let tr = r.step(
        &task,
        GridState {
            x: state.0,
            y: state.1,
            has_key: false,
        },
        action,
    )?;
    Ok(((tr.next.x, tr.next.y), tr.reward))
}

/// DPT Dark Room: the optimal action at `state` for `goal` (x first, then y, stay on the goal).
pub fn optimal_action(goal: (i32, i32), state: (i32, i32)) -> u32 {
    dpt_rules().optimal_action(
        &GridTask { goal, key: None },
        &GridState {
            x: state.0,
            y: state.1,
            has_key: false,
        },
    )
}

/// DPT Dark Room: the goal cell of a task id (`x * 10 + y`).
pub fn goal_of(task: u64) -> Result<(i32, i32), EnvError> {
    Ok(dpt_rules().task(task)?.goal)
}

/// DPT Dark Room: the fixed goal-task split, 70 train / 10 validation / 20 test (DPT's 80
/// training goals are train + validation, its 20 test goals are test).
pub fn split() -> TaskSplit {
    dpt_rules().split()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid::{DOWN, LEFT, RIGHT, STAY, UP};
    use crate::{EnvConfig, ObsBatch, Split, StepBatch};

    #[test]
    fn hand_checked_sequence_with_clipping_and_goal_reward() {
        let goal = (2, 1);
        let mut s = (0, 0);
        // (action, expected next, expected reward)
        let seq = [
            (LEFT, (0, 0), 0.0), // clipped at x = 0
            (DOWN, (0, 0), 0.0), // clipped at y = 0
            (RIGHT, (1, 0), 0.0),
            (UP, (1, 1), 0.0),
            (RIGHT, (2, 1), 1.0), // on the goal
            (STAY, (2, 1), 1.0),  // every step on the goal pays
            (UP, (2, 2), 0.0),
            (DOWN, (2, 1), 1.0),
        ];
        for (a, want, rew) in seq {
            let (next, r) = step(goal, s, a).unwrap();
            assert_eq!((next, r), (want, rew), "action {a} from {s:?}");
            s = next;
        }
        // Far wall clipping.
        assert_eq!(step(goal, (9, 9), RIGHT).unwrap().0, (9, 9));
        assert_eq!(step(goal, (9, 9), UP).unwrap().0, (9, 9));
        assert_eq!(step(goal, (9, 4), LEFT).unwrap().0, (8, 4));
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(step((1, 1), (0, 0), 5).is_err());
        assert!(step((1, 1), (10, 0), 0).is_err());
        assert!(step((1, 1), (-1, 0), 0).is_err());
        assert!(step((10, 1), (0, 0), 0).is_err());
        assert!(goal_of(100).is_err());
    }

    #[test]
    fn optimal_action_x_first_then_y() {
        assert_eq!(optimal_action((3, 5), (0, 0)), RIGHT);
        assert_eq!(optimal_action((3, 5), (3, 0)), UP);
        assert_eq!(optimal_action((3, 5), (7, 9)), LEFT);
        assert_eq!(optimal_action((3, 5), (3, 9)), DOWN);
        assert_eq!(optimal_action((3, 5), (3, 5)), STAY);
        // Following the oracle from (0, 0) reaches the goal in |dx| + |dy| steps and stays.
        let goal = (6, 3);
        let mut s = (0, 0);
        let mut ret = 0.0;
        for _ in 0..100 {
            let (n, r) = step(goal, s, optimal_action(goal, s)).unwrap();
            s = n;
            ret += r;
        }
        assert_eq!(s, goal);
        assert_eq!(ret, 100.0 - 9.0 + 1.0);
    }

    #[test]
    fn goal_order_is_x_outer() {
        assert_eq!(goal_of(0).unwrap(), (0, 0));
        assert_eq!(goal_of(1).unwrap(), (0, 1));
        assert_eq!(goal_of(10).unwrap(), (1, 0));
        assert_eq!(goal_of(99).unwrap(), (9, 9));
    }

    #[test]
    fn split_fixed_and_disjoint() {
        let s = split();
        assert_eq!(
            (s.train.len(), s.validation.len(), s.test.len()),
            (70, 10, 20)
        );
        let mut all: Vec<u64> = [&s.train[..], &s.validation, &s.test].concat();
        all.sort();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        let env = EnvConfig::from_name("darkroom")
            .unwrap()
            .build(0, 0, 1)
            .unwrap();
        assert_eq!(env.tasks(Split::Train), s.train);
        assert_eq!(env.tasks(Split::Validation), s.validation);
        assert_eq!(env.tasks(Split::Test), s.test);
    }

    #[test]
    fn test_goals_are_dpts() {
        // DPT's official split (collect_data.py), run once with numpy 2.4.6:
        // python -c "import numpy as np; g = np.array([[(j, i) for i in range(10)]
        //   for j in range(10)]).reshape(-1, 2); np.random.RandomState(seed=0).shuffle(g);
        //   print(g[80:].tolist(), g[70:80].tolist())"
        let dpt_test: [(i32, i32); 20] = [
            (2, 5),
            (3, 7),
            (8, 1),
            (4, 6),
            (3, 9),
            (6, 5),
            (5, 8),
            (1, 2),
            (8, 8),
            (7, 0),
            (8, 7),
            (3, 6),
            (2, 1),
            (8, 3),
            (0, 9),
            (9, 6),
            (6, 7),
            (6, 4),
            (4, 7),
            (4, 4),
        ];
        let dpt_last_train: [(i32, i32); 10] = [
            (1, 9),
            (2, 9),
            (4, 9),
            (9, 7),
            (9, 8),
            (6, 9),
            (2, 0),
            (9, 4),
            (7, 2),
            (7, 7),
        ];
        let goals =
            |ids: &[u64]| -> Vec<(i32, i32)> { ids.iter().map(|&t| goal_of(t).unwrap()).collect() };
        let s = split();
        assert_eq!(goals(&s.test), dpt_test.to_vec());
        assert_eq!(goals(&s.validation), dpt_last_train.to_vec());
    }

    #[test]
    fn vec_env_matches_pure_functions_and_truncates() {
        let cfg = EnvConfig::DarkRoom(DarkRoomConfig {
            size: 10,
            horizon: 5,
        });
        let mut env = cfg.build(3, 0, 2).unwrap();
        env.set_task(0, 2 * 10 + 1).unwrap(); // goal (2, 1)
        env.set_task(1, 0).unwrap(); // goal (0, 0): the start
        let spec = env.spec().clone();
        let mut obs = ObsBatch::new(&spec, 2);
        env.reset(&mut obs);
        assert_eq!(obs.vector, vec![0.0, 0.0, 0.0, 0.0]);
        let mut out = StepBatch::new(&spec, 2);
        let acts = [RIGHT, RIGHT, UP, STAY, STAY];
        let mut rewards0 = vec![];
        for (k, &a) in acts.iter().enumerate() {
            env.step(&[a, STAY], &mut out).unwrap();
            rewards0.push(out.reward[0]);
            assert_eq!(out.reward[1], 1.0);
            assert!(!out.terminated[0] && !out.terminated[1]);
            let last = k == acts.len() - 1;
            assert_eq!(out.truncated, vec![last, last]);
            if last {
                // Final obs is the pre-reset cell; obs is the new episode's start.
                assert_eq!(&out.final_obs.vector[0..2], &[2.0, 1.0]);
                assert_eq!(&out.obs.vector[0..2], &[0.0, 0.0]);
            }
        }
        assert_eq!(rewards0, vec![0.0, 0.0, 1.0, 1.0, 1.0]);
        assert!(!spec.has_success);
    }

    #[test]
    fn hard_rewards_once_and_terminates() {
        let cfg = EnvConfig::DarkRoomHard(DarkRoomHardConfig::default());
        let rules = DarkRoomHardConfig::default().rules();
        let mut env = cfg.build(0, 0, 1).unwrap();
        let goal = (10, 8);
        env.set_task(0, rules.task_id(&GridTask { goal, key: None }))
            .unwrap();
        let spec = env.spec().clone();
        let mut obs = ObsBatch::new(&spec, 1);
        env.reset(&mut obs);
        assert_eq!(obs.vector, vec![8.0, 8.0]);
        let mut out = StepBatch::new(&spec, 1);
        env.step(&[RIGHT], &mut out).unwrap();
        assert_eq!((out.reward[0], out.terminated[0]), (0.0, false));
        env.step(&[RIGHT], &mut out).unwrap();
        assert_eq!(
            (out.reward[0], out.terminated[0], out.success[0]),
            (1.0, true, true)
        );
        assert_eq!(out.final_obs.vector, vec![10.0, 8.0]);
        assert_eq!(out.obs.vector, vec![8.0, 8.0]);
        let mut a = [0u32];
        env.oracle_actions(&mut a);
        assert_eq!(a[0], RIGHT);
    }

    #[test]
    fn ad_darkroom_starts_at_centre_with_20_steps() {
        let cfg = EnvConfig::from_name("darkroom_ad").unwrap();
        let spec = cfg.spec();
        assert_eq!(spec.horizon, 20);
        let mut env = cfg.build(0, 0, 1).unwrap();
        let mut obs = ObsBatch::new(&spec, 1);
        env.reset(&mut obs);
        assert_eq!(obs.vector, vec![4.0, 4.0]);
        let sizes: Vec<usize> = Split::ALL.iter().map(|&s| env.tasks(s).len()).collect();
        assert_eq!(sizes, vec![56, 8, 17]);
    }
}
