//! Object navigation in procedurally generated houses (`"house_nav"`), a reduction of ReLIC's
//! ExtObjNav to what our renderer draws.
//!
//! - **Task** = a house seed ([`crate::house::generate`]); train tasks are seeds
//!   `0..train_houses`, test tasks `TEST_HOUSE_BASE + 0..test_houses`, validation tasks
//!   `VALIDATION_HOUSE_BASE + 0..test_houses` (as many as the test houses). A trial is many episodes
//!   in one house.
//! - **Episode**: a uniformly random start cell of the house's navigable floor (at least
//!   `min_start_distance` m of geodesic distance from the target when one is found in 200 draws), a uniformly random heading and
//!   a uniformly random target category among those present; at most `horizon` (500) steps.
//! - **Actions**: `0` stop, `1` forward 0.25 m (a blocked move leaves the agent in place),
//!   `2` turn left 30 deg, `3` turn right 30 deg.
//! - **Observation**: the RGB frame, the target category one-hot (`categories` long) and the
//!   displacement since the episode start *in the start frame* (2 values, metres: forward and
//!   leftward along the start heading), like Habitat's episodic GPS sensor.
//! - **Reward**: decrease in geodesic distance to the nearest target instance (approach cells,
//!   see [`crate::house`]) - `slack_penalty` (0.001) per step, + `success_reward` (2) on success.
//!   The navigation grid follows the motion ([`crate::nav`]), so a step changes the distance by
//!   at most `forward_step` plus a resolution term: with the defaults, by less than
//!   `forward_step` + [`NAV_RES`](crate::house::NAV_RES) = 0.5 m (about 0.4 m at most in
//!   practice), which bounds the reward of every step that does not stop.
//! - **Success**: the agent stops within `success_distance` (2 m, Euclidean, agent centre to the
//!   instance footprint) of an instance of the target category that covers at least
//!   `min_visible_pixels` pixels of the current frame (counted from the renderer's object-id
//!   buffer). Stop ends the episode either way (terminated; `success` set accordingly).
//!
//! The oracle follows the geodesic distance field: among the headings reachable by turning it
//! picks the one whose forward step lowers the distance most, turns towards it (or walks), turns
//! to face the nearest instance once the distance cannot drop further, and stops as soon as the
//! success condition holds. It follows the oracle's variant of the distance
//! ([`House::oracle_geodesic`]), which closes the few channels too narrow for an agent with 12
//! fixed headings to walk along (a greedy walk into one gets stuck), and falls back to the
//! reward's distance where that leaves it no way.

use std::sync::Arc;

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::house::{generate, House, HouseParams, CATEGORIES};
use crate::render::{RenderParams, Renderer};
use crate::rng::{slot_rng, SlotRng};
use crate::world::{wrap_angle, Pose};
use crate::{
    check_actions, check_image_side, check_range_f32, check_slot, require, EnvError, EnvSpec,
    ImageSpec, ObsBatch, Split, StepBatch, TaskId, VecEnv,
};

/// Action: stop (ends the episode).
pub const STOP: u32 = 0;
/// Action: forward.
pub const FORWARD: u32 = 1;
/// Action: turn left.
pub const TURN_LEFT: u32 = 2;
/// Action: turn right.
pub const TURN_RIGHT: u32 = 3;
/// Number of actions.
pub const NUM_ACTIONS: usize = 4;
/// First id of the test houses.
pub const TEST_HOUSE_BASE: u64 = 1 << 40;
/// First validation house seed (never a train or test seed).
pub const VALIDATION_HOUSE_BASE: u64 = 1 << 41;

/// Object navigation in procedural houses.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HouseNavConfig {
    /// Image rows (pixels); 1..=1024.
    pub image_height: usize,
    /// Image columns (pixels); 1..=1024.
    pub image_width: usize,
    /// Episode step limit; ReLIC: 500.
    pub horizon: usize,
    /// Horizontal field of view (deg).
    pub hfov_deg: f32,
    /// Camera height (m).
    pub camera_height: f32,
    /// Wall height (m).
    pub wall_height: f32,
    /// Fewest rooms along each axis of the house grid.
    pub rooms_min: usize,
    /// Most rooms along each axis of the house grid.
    pub rooms_max: usize,
    /// Smallest room side (m).
    pub room_min_m: f32,
    /// Largest room side (m).
    pub room_max_m: f32,
    /// Number of object categories (the first of [`CATEGORIES`]); 1..=16; the one-hot length.
    pub categories: usize,
    /// Instances placed per category (fewer only when a house has no room left).
    pub instances_per_category: usize,
    /// Forward step (m); ReLIC: 0.25.
    pub forward_step: f32,
    /// Turn per turn action (deg); ReLIC: 30.
    pub turn_deg: f32,
    /// Agent radius (m) for collisions and the navigation grid.
    pub agent_radius: f32,
    /// Success distance (m) to an instance's footprint; ReLIC: 2.
    pub success_distance: f32,
    /// Target pixels that must be visible in the frame for success (at least 1 is always
    /// required); ReLIC: 10.
    pub min_visible_pixels: usize,
    /// Reward subtracted every step; ReLIC: 0.001.
    pub slack_penalty: f32,
    /// Reward added on success; ReLIC: 2.
    pub success_reward: f32,
    /// Smallest geodesic distance (m) from the start to the target.
    pub min_start_distance: f32,
    /// Number of training houses (seeds `0..train_houses`).
    pub train_houses: usize,
    /// Number of test houses (seeds `TEST_HOUSE_BASE + 0..test_houses`).
    pub test_houses: usize,
}

impl Default for HouseNavConfig {
    fn default() -> Self {
        HouseNavConfig {
            image_height: 64,
            image_width: 64,
            horizon: 500,
            hfov_deg: 90.0,
            camera_height: 1.25,
            wall_height: 2.5,
            rooms_min: 2,
            rooms_max: 3,
            room_min_m: 4.0,
            room_max_m: 6.0,
            categories: 8,
            instances_per_category: 3,
            forward_step: 0.25,
            turn_deg: 30.0,
            agent_radius: 0.2,
            success_distance: 2.0,
            min_visible_pixels: 10,
            slack_penalty: 0.001,
            success_reward: 2.0,
            min_start_distance: 1.0,
            train_houses: 10_000,
            test_houses: 100,
        }
    }
}

impl HouseNavConfig {
    /// Field errors (relative paths). Empty = valid.
    pub fn validate(&self) -> Vec<(String, String)> {
        let mut e = Vec::new();
        check_image_side(&mut e, "image_height", self.image_height);
        check_image_side(&mut e, "image_width", self.image_width);
        require(
            &mut e,
            (1..=10_000_000).contains(&self.horizon),
            "horizon",
            || format!("must be in 1..=10000000, got {}", self.horizon),
        );
        check_range_f32(&mut e, "hfov_deg", self.hfov_deg, 5.0, 170.0);
        check_range_f32(&mut e, "wall_height", self.wall_height, 0.5, 10.0);
        check_range_f32(
            &mut e,
            "camera_height",
            self.camera_height,
            0.05,
            self.wall_height.clamp(0.5, 10.0) - 0.05,
        );
        require(
            &mut e,
            (1..=6).contains(&self.rooms_min),
            "rooms_min",
            || format!("must be in 1..=6, got {}", self.rooms_min),
        );
        require(
            &mut e,
            (self.rooms_min.max(1)..=6).contains(&self.rooms_max) && self.rooms_max >= 2,
            "rooms_max",
            || format!("must be in max(2, rooms_min)..=6, got {}", self.rooms_max),
        );
        check_range_f32(&mut e, "room_min_m", self.room_min_m, 2.0, 20.0);
        check_range_f32(
            &mut e,
            "room_max_m",
            self.room_max_m,
            self.room_min_m.clamp(2.0, 20.0),
            20.0,
        );
        require(
            &mut e,
            (1..=CATEGORIES.len()).contains(&self.categories),
            "categories",
            || {
                format!(
                    "must be in 1..={}, got {}",
                    CATEGORIES.len(),
                    self.categories
                )
            },
        );
        require(
            &mut e,
            (1..=8).contains(&self.instances_per_category),
            "instances_per_category",
            || format!("must be in 1..=8, got {}", self.instances_per_category),
        );
        check_range_f32(&mut e, "forward_step", self.forward_step, 0.01, 2.0);
        check_range_f32(&mut e, "turn_deg", self.turn_deg, 1.0, 180.0);
        check_range_f32(&mut e, "agent_radius", self.agent_radius, 0.05, 0.35);
        check_range_f32(
            &mut e,
            "success_distance",
            self.success_distance,
            0.0,
            100.0,
        );
        require(
            &mut e,
            self.min_visible_pixels <= self.image_height.saturating_mul(self.image_width),
            "min_visible_pixels",
            || {
                format!(
                    "must be <= the pixels of a frame ({}), got {}",
                    self.image_height.saturating_mul(self.image_width),
                    self.min_visible_pixels
                )
            },
        );
        check_range_f32(&mut e, "slack_penalty", self.slack_penalty, -1e6, 1e6);
        check_range_f32(&mut e, "success_reward", self.success_reward, -1e6, 1e6);
        check_range_f32(
            &mut e,
            "min_start_distance",
            self.min_start_distance,
            0.0,
            50.0,
        );
        require(
            &mut e,
            (1..=1usize << 39).contains(&self.train_houses),
            "train_houses",
            || format!("must be in 1..=2^39, got {}", self.train_houses),
        );
        require(
            &mut e,
            (1..=1usize << 39).contains(&self.test_houses),
            "test_houses",
            || format!("must be in 1..=2^39, got {}", self.test_houses),
        );
        e
    }

    /// The spec: 4 actions, target one-hot ++ displacement, an RGB image.
    pub fn spec(&self) -> EnvSpec {
        EnvSpec {
            name: "house_nav".into(),
            num_actions: NUM_ACTIONS,
            vector_dim: self.categories + 2,
            vector_segments: vec![
                ("target".into(), self.categories),
                ("displacement".into(), 2),
            ],
            image: Some(ImageSpec {
                height: self.image_height,
                width: self.image_width,
            }),
            horizon: self.horizon,
            has_success: true,
        }
    }

    /// The house-generation parameters.
    pub fn house_params(&self) -> HouseParams {
        HouseParams {
            rooms_min: self.rooms_min,
            rooms_max: self.rooms_max,
            room_min_m: self.room_min_m,
            room_max_m: self.room_max_m,
            categories: self.categories,
            instances: self.instances_per_category,
            agent_radius: self.agent_radius,
            wall_height: self.wall_height,
        }
    }

    /// The renderer parameters.
    pub fn render_params(&self) -> RenderParams {
        RenderParams {
            width: self.image_width,
            height: self.image_height,
            hfov_deg: self.hfov_deg,
            camera_height: self.camera_height,
            floor: [125, 108, 92],
            ceiling: [228, 228, 232],
            fog: 0.08,
        }
    }
}

/// One episode's state in a house.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpisodeState {
    /// Current pose.
    pub pose: Pose,
    /// Pose at the episode start.
    pub start: Pose,
    /// Target category.
    pub target: usize,
}

/// The outcome of one action.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Outcome {
    /// Next pose.
    pub pose: Pose,
    /// Reward.
    pub reward: f32,
    /// The agent stopped (episode over).
    pub stopped: bool,
    /// It stopped successfully.
    pub success: bool,
    /// Geodesic distance to the target after the action.
    pub geodesic: f32,
}

/// Rules of house navigation as pure functions of a house, a state and the visible pixels.
#[derive(Debug, Clone)]
pub struct HouseRules {
    /// The configuration.
    pub cfg: HouseNavConfig,
}

impl HouseRules {
    /// Displacement since the episode start in the start frame: (forward, left) in metres.
    pub fn displacement(&self, s: &EpisodeState) -> [f32; 2] {
        let (dx, dy) = (s.pose.x - s.start.x, s.pose.y - s.start.y);
        let (c, si) = (s.start.heading.cos(), s.start.heading.sin());
        [dx * c + dy * si, -dx * si + dy * c]
    }

    /// Whether stopping now succeeds, given per-object visible pixel counts of the current frame.
    pub fn success(&self, house: &House, s: &EpisodeState, visible: &[u32]) -> bool {
        let p = [s.pose.x, s.pose.y];
        house.scene.objects.iter().enumerate().any(|(i, o)| {
            o.category as usize == s.target
                && o.distance(p) <= self.cfg.success_distance
                && visible.get(i).copied().unwrap_or(0) as usize
                    >= self.cfg.min_visible_pixels.max(1)
        })
    }

    /// Apply an action (unchecked; values >= 4 act as turn right). `prev_geodesic` is the
    /// geodesic distance before the action; `visible` the current frame's pixel counts.
    pub fn step(
        &self,
        house: &House,
        s: &EpisodeState,
        action: u32,
        prev_geodesic: f32,
        visible: &[u32],
    ) -> Outcome {
        let mut pose = s.pose;
        let turn = self.cfg.turn_deg.to_radians();
        match action {
            STOP => {
                let success = self.success(house, s, visible);
                let reward = -self.cfg.slack_penalty
                    + if success {
                        self.cfg.success_reward
                    } else {
                        0.0
                    };
                return Outcome {
                    pose,
                    reward,
                    stopped: true,
                    success,
                    geodesic: prev_geodesic,
                };
            }
            FORWARD => {
                let d = pose.dir();
                let np = [
                    pose.x + self.cfg.forward_step * d[0],
                    pose.y + self.cfg.forward_step * d[1],
                ];
                if !house.scene.collides(np, self.cfg.agent_radius) {
                    pose.x = np[0];
                    pose.y = np[1];
                }
            }
            TURN_LEFT => pose.heading = wrap_angle(pose.heading + turn),
            _ => pose.heading = wrap_angle(pose.heading - turn),
        }
        let g = house.geodesic(s.target, [pose.x, pose.y]);
        let delta = if g.is_finite() && prev_geodesic.is_finite() {
            prev_geodesic - g
        } else {
            0.0
        };
        let geodesic = if g.is_finite() { g } else { prev_geodesic };
        Outcome {
            pose,
            reward: delta - self.cfg.slack_penalty,
            stopped: false,
            success: false,
            geodesic,
        }
    }

    /// The oracle's action (module docs).
    pub fn optimal_action(&self, house: &House, s: &EpisodeState, visible: &[u32]) -> u32 {
        if self.success(house, s, visible) {
            return STOP;
        }
        let p = [s.pose.x, s.pose.y];
        // The oracle's distance; the reward's where that leaves no way (the agent stands in a
        // channel too narrow for it).
        let oracle = house.oracle_geodesic(s.target, p).is_finite();
        let geodesic = |q: [f32; 2]| {
            if oracle {
                house.oracle_geodesic(s.target, q)
            } else {
                house.geodesic(s.target, q)
            }
        };
        let d0 = geodesic(p);
        let turn = self.cfg.turn_deg.to_radians();
        let k = ((std::f32::consts::TAU / turn).round() as usize).max(1);
        let mut best = (f32::INFINITY, 0usize);
        for j in 0..k {
            let h = s.pose.heading + j as f32 * turn;
            let q = [
                p[0] + self.cfg.forward_step * h.cos(),
                p[1] + self.cfg.forward_step * h.sin(),
            ];
            if house.scene.collides(q, self.cfg.agent_radius) {
                continue;
            }
            let g = geodesic(q);
            // Prefer fewer turns on (near) ties.
            let turns = j.min(k - j) as f32;
            if g + 1e-3 * turns < best.0 {
                best = (g + 1e-3 * turns, j);
            }
        }
        let turn_to = |j: usize| if j <= k / 2 { TURN_LEFT } else { TURN_RIGHT };
        if best.0 < d0 - 0.02 {
            return if best.1 == 0 {
                FORWARD
            } else {
                turn_to(best.1)
            };
        }
        // Next to the target: face the nearest instance, then approach it.
        if let Some((dist, i)) = house.nearest_instance(s.target, p) {
            let c = house.scene.objects[i].centre();
            let err = wrap_angle((c[1] - p[1]).atan2(c[0] - p[0]) - s.pose.heading);
            if err.abs() > 0.5 * turn + 1e-3 {
                return if err > 0.0 { TURN_LEFT } else { TURN_RIGHT };
            }
            if dist > 0.3 {
                let d = s.pose.dir();
                let q = [
                    p[0] + self.cfg.forward_step * d[0],
                    p[1] + self.cfg.forward_step * d[1],
                ];
                if !house.scene.collides(q, self.cfg.agent_radius) {
                    return FORWARD;
                }
            }
        }
        TURN_LEFT
    }
}

/// A batch of house-navigation slots.
pub struct HouseNavVecEnv {
    rules: HouseRules,
    params: HouseParams,
    spec: EnvSpec,
    renderer: Renderer,
    houses: Vec<Arc<House>>,
    task_ids: Vec<TaskId>,
    state: Vec<EpisodeState>,
    geodesic: Vec<f32>,
    t: Vec<u32>,
    rngs: Vec<SlotRng>,
    /// Per slot: object ids of the frame at the current pose.
    ids: Vec<u8>,
    /// Per slot: the frame at the current pose (for `final_obs` after a stop).
    frames: Vec<u8>,
    counts: Vec<u32>,
}

impl HouseNavVecEnv {
    /// Build slots `[first_slot, first_slot + count)` (the config must be valid).
    pub fn new(
        cfg: HouseNavConfig,
        seed: u64,
        first_slot: usize,
        count: usize,
    ) -> Result<Self, EnvError> {
        let renderer = Renderer::new(cfg.render_params())?;
        let (px, fb) = (renderer.frame_pixels(), renderer.frame_bytes());
        let params = cfg.house_params();
        let dummy = Pose {
            x: 0.0,
            y: 0.0,
            heading: 0.0,
        };
        let mut env = HouseNavVecEnv {
            spec: cfg.spec(),
            rules: HouseRules { cfg: cfg.clone() },
            renderer,
            houses: Vec::with_capacity(count),
            task_ids: vec![0; count],
            state: vec![
                EpisodeState {
                    pose: dummy,
                    start: dummy,
                    target: 0
                };
                count
            ],
            geodesic: vec![0.0; count],
            t: vec![0; count],
            rngs: (0..count).map(|i| slot_rng(seed, first_slot + i)).collect(),
            ids: vec![0; count * px],
            frames: vec![0; count * fb],
            counts: vec![0; 256],
            params,
        };
        for i in 0..count {
            let task = ((first_slot + i) % cfg.train_houses) as u64;
            let house = env.house_for(task);
            env.houses.push(house);
            env.task_ids[i] = task;
            env.start_episode(i);
        }
        Ok(env)
    }

    /// A house for `task`, shared with any slot already on it.
    fn house_for(&self, task: TaskId) -> Arc<House> {
        match self
            .houses
            .iter()
            .zip(&self.task_ids)
            .find(|(_, &t)| t == task)
        {
            Some((h, _)) => h.clone(),
            None => Arc::new(generate(task, &self.params)),
        }
    }

    /// The house of a slot.
    pub fn house(&self, slot: usize) -> Option<&House> {
        self.houses.get(slot).map(|h| h.as_ref())
    }

    /// The episode state of a slot.
    pub fn episode(&self, slot: usize) -> Option<EpisodeState> {
        self.state.get(slot).copied()
    }

    /// Put slot `slot` at a given pose (test and debugging hook; the next observation is
    /// rendered by [`VecEnv::observe_slot`] or the next step).
    pub fn set_pose(&mut self, slot: usize, pose: Pose, target: usize) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        let house = &self.houses[slot];
        if target >= house.fields.len()
            || house
                .scene
                .collides([pose.x, pose.y], self.rules.cfg.agent_radius)
        {
            return Err(EnvError::InvalidState {
                state: format!("{pose:?} target {target}"),
                size: 0,
            });
        }
        self.state[slot] = EpisodeState {
            pose,
            start: pose,
            target,
        };
        self.geodesic[slot] = house.geodesic(target, [pose.x, pose.y]);
        self.t[slot] = 0;
        self.render_slot(slot, pose);
        Ok(())
    }

    fn start_episode(&mut self, i: usize) {
        let house = self.houses[i].clone();
        let rng = &mut self.rngs[i];
        // The k-th present category, without allocating.
        let npresent = house.present.iter().filter(|&&p| p).count();
        let target = if npresent == 0 {
            0
        } else {
            let k = rng.random_range(0..npresent);
            (0..house.present.len())
                .filter(|&c| house.present[c])
                .nth(k)
                .unwrap_or(0)
        };
        // Houses always have floor; `cell` 0 is only a guard against an empty list.
        let mut cell = house.start_cells.first().copied().unwrap_or(0);
        let n = house.start_cells.len();
        for _ in 0..if n > 0 { 200 } else { 0 } {
            let c = house.start_cells[rng.random_range(0..n)];
            cell = c;
            let d = house.fields.get(target).map_or(f32::INFINITY, |f| f[c]);
            if d.is_finite() && d >= self.rules.cfg.min_start_distance {
                break;
            }
        }
        let (cx, cy) = house.nav.coords(cell);
        let q = house.nav.centre(cx, cy);
        let heading = wrap_angle(rng.random::<f32>() * std::f32::consts::TAU);
        let pose = Pose {
            x: q[0],
            y: q[1],
            heading,
        };
        self.state[i] = EpisodeState {
            pose,
            start: pose,
            target,
        };
        self.geodesic[i] = house.geodesic(target, q);
        self.t[i] = 0;
    }

    /// Render slot `i` at `pose` into its frame cache and id buffer.
    fn render_slot(&mut self, i: usize, pose: Pose) {
        let (px, fb) = (self.renderer.frame_pixels(), self.renderer.frame_bytes());
        let _ = self.renderer.render(
            &self.houses[i].scene,
            &pose,
            &mut self.frames[i * fb..(i + 1) * fb],
            &mut self.ids[i * px..(i + 1) * px],
        );
    }

    /// Write slot `i`'s cached frame and vector into row `i` of `obs`.
    fn write_cached(&self, i: usize, obs: &mut ObsBatch) {
        let fb = self.renderer.frame_bytes();
        obs.image[i * fb..(i + 1) * fb].copy_from_slice(&self.frames[i * fb..(i + 1) * fb]);
        let d = self.spec.vector_dim;
        let v = &mut obs.vector[i * d..(i + 1) * d];
        v.fill(0.0);
        let s = &self.state[i];
        if let Some(x) = v.get_mut(s.target) {
            *x = 1.0;
        }
        let disp = self.rules.displacement(s);
        v[d - 2] = disp[0];
        v[d - 1] = disp[1];
    }

    /// Per-object visible pixel counts of slot `i`'s current frame into `self.counts`.
    fn count_visible(&mut self, i: usize) {
        let px = self.renderer.frame_pixels();
        crate::render::count_ids(&self.ids[i * px..(i + 1) * px], &mut self.counts);
    }

    fn visible_counts(&self, i: usize) -> Vec<u32> {
        let px = self.renderer.frame_pixels();
        let mut c = vec![0u32; 256];
        crate::render::count_ids(&self.ids[i * px..(i + 1) * px], &mut c);
        c
    }
}

impl VecEnv for HouseNavVecEnv {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn num_envs(&self) -> usize {
        self.state.len()
    }

    fn tasks(&self, split: Split) -> Vec<TaskId> {
        match split {
            Split::Train => (0..self.rules.cfg.train_houses as u64).collect(),
            Split::Validation => (0..self.rules.cfg.test_houses as u64)
                .map(|i| VALIDATION_HOUSE_BASE + i)
                .collect(),
            Split::Test => (0..self.rules.cfg.test_houses as u64)
                .map(|i| TEST_HOUSE_BASE + i)
                .collect(),
        }
    }

    fn set_task(&mut self, slot: usize, task: TaskId) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        if self.task_ids[slot] != task {
            let h = self.house_for(task);
            self.houses[slot] = h;
            self.task_ids[slot] = task;
        }
        self.start_episode(slot);
        let pose = self.state[slot].pose;
        self.render_slot(slot, pose);
        Ok(())
    }

    fn task(&self, slot: usize) -> Result<TaskId, EnvError> {
        check_slot(slot, self.num_envs())?;
        Ok(self.task_ids[slot])
    }

    fn reset(&mut self, obs: &mut ObsBatch) {
        let n = self.num_envs();
        obs.fit(&self.spec, n);
        for i in 0..n {
            self.start_episode(i);
            let pose = self.state[i].pose;
            self.render_slot(i, pose);
            self.write_cached(i, obs);
        }
    }

    fn observe_slot(&mut self, slot: usize, obs: &mut ObsBatch) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        obs.fit(&self.spec, self.num_envs());
        let pose = self.state[slot].pose;
        self.render_slot(slot, pose);
        self.write_cached(slot, obs);
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepBatch) -> Result<(), EnvError> {
        let n = self.num_envs();
        check_actions(&self.spec, n, actions)?;
        out.fit(&self.spec, n);
        let horizon = self.spec.horizon as u32;
        for (i, &action) in actions.iter().enumerate() {
            let a = action;
            if a == STOP {
                self.count_visible(i);
            }
            let o = self.rules.step(
                &self.houses[i],
                &self.state[i],
                a,
                self.geodesic[i],
                &self.counts,
            );
            let t = self.t[i] + 1;
            let trunc = !o.stopped && t >= horizon;
            out.reward[i] = o.reward;
            out.terminated[i] = o.stopped;
            out.truncated[i] = trunc;
            out.success[i] = o.success;
            self.state[i].pose = o.pose;
            self.geodesic[i] = o.geodesic;
            self.t[i] = t;
            if o.stopped || trunc {
                if !o.stopped {
                    self.render_slot(i, o.pose);
                }
                self.write_cached(i, &mut out.final_obs);
                self.start_episode(i);
            }
            let pose = self.state[i].pose;
            self.render_slot(i, pose);
            self.write_cached(i, &mut out.obs);
        }
        Ok(())
    }

    fn oracle_actions(&self, out: &mut [u32]) {
        for (i, o) in out.iter_mut().enumerate().take(self.num_envs()) {
            let c = self.visible_counts(i);
            *o = self
                .rules
                .optimal_action(&self.houses[i], &self.state[i], &c);
        }
    }

    fn describe(&self, slot: usize) -> serde_json::Value {
        let Some(s) = self.episode(slot) else {
            return json!({ "error": format!("slot {slot} out of range") });
        };
        let house = &self.houses[slot];
        let c = self.visible_counts(slot);
        let visible: u32 = house
            .scene
            .objects
            .iter()
            .enumerate()
            .filter(|(_, o)| o.category as usize == s.target)
            .map(|(i, _)| c[i])
            .sum();
        let p = [s.pose.x, s.pose.y];
        json!({
            "x": s.pose.x,
            "y": s.pose.y,
            "heading_deg": s.pose.heading.to_degrees(),
            "t": self.t[slot],
            "house": self.task_ids[slot],
            "room": house.room_at(p),
            "target": s.target,
            "target_name": CATEGORIES.get(s.target).map_or("?", |c| c.name),
            "geodesic": self.geodesic[slot],
            "nearest_target_distance": house.nearest_instance(s.target, p).map(|x| x.0),
            "visible_target_pixels": visible,
            "displacement": self.rules.displacement(&s),
            "stop_would_succeed": self.rules.success(house, &s, &c),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::FastRng;
    use std::f32::consts::PI;

    fn env(seed: u64, n: usize) -> HouseNavVecEnv {
        HouseNavVecEnv::new(HouseNavConfig::default(), seed, 0, n).unwrap()
    }

    fn facing(from: [f32; 2], to: [f32; 2]) -> f32 {
        (to[1] - from[1]).atan2(to[0] - from[0])
    }

    /// Candidate poses (free cells) facing instance `obj`, with their distance to it.
    fn candidates(h: &House, obj: usize) -> Vec<(Pose, f32)> {
        let o = h.scene.objects[obj];
        h.start_cells
            .iter()
            .map(|&k| {
                let (cx, cy) = h.nav.coords(k);
                let q = h.nav.centre(cx, cy);
                (
                    Pose {
                        x: q[0],
                        y: q[1],
                        heading: facing(q, o.centre()),
                    },
                    o.distance(q),
                )
            })
            .collect()
    }

    #[test]
    fn stop_near_and_visible_succeeds_far_or_unseen_fails() {
        let mut e = env(0, 1);
        e.set_task(0, 3).unwrap();
        let h = e.houses[0].clone();
        let target = 0usize;
        let spec = e.spec().clone();
        let mut out = StepBatch::new(&spec, 1);
        let mut checked = [false; 3];
        for (obj, o) in h.scene.objects.iter().enumerate() {
            if o.category as usize != target {
                continue;
            }
            for (pose, dist) in candidates(&h, obj) {
                e.set_pose(0, pose, target).unwrap();
                let vis = e.describe(0)["visible_target_pixels"].as_u64().unwrap();
                if dist < 1.5 && vis >= 40 && !checked[0] {
                    e.step(&[STOP], &mut out).unwrap();
                    assert!(out.success[0] && out.terminated[0]);
                    assert!((out.reward[0] - (2.0 - 0.001)).abs() < 1e-6);
                    checked[0] = true;
                    // Same place, facing away: nothing of the target in view -> failure.
                    let away = Pose {
                        heading: wrap_angle(pose.heading + PI),
                        ..pose
                    };
                    e.set_pose(0, away, target).unwrap();
                    if e.describe(0)["visible_target_pixels"].as_u64().unwrap() < 10 {
                        e.step(&[STOP], &mut out).unwrap();
                        assert!(!out.success[0] && out.terminated[0]);
                        assert!((out.reward[0] + 0.001).abs() < 1e-6);
                        checked[1] = true;
                    }
                } else if h.nearest_instance(target, [pose.x, pose.y]).unwrap().0 > 2.5
                    && vis >= 40
                    && !checked[2]
                {
                    e.step(&[STOP], &mut out).unwrap();
                    assert!(!out.success[0] && out.terminated[0], "far stop must fail");
                    checked[2] = true;
                }
            }
        }
        assert_eq!(
            checked, [true; 3],
            "near+visible, near+unseen, far+visible all exercised"
        );
    }

    #[test]
    fn oracle_succeeds_in_most_episodes() {
        let mut e = env(1, 3);
        for (i, house) in [10u64, 11, 12].into_iter().enumerate() {
            e.set_task(i, house).unwrap();
        }
        let spec = e.spec().clone();
        let mut out = StepBatch::new(&spec, 3);
        let mut acts = [0u32; 3];
        let (mut ended, mut succ, mut steps) = (0, 0, 0);
        while ended < 45 && steps < 20_000 {
            e.oracle_actions(&mut acts);
            e.step(&acts, &mut out).unwrap();
            steps += 1;
            for i in 0..3 {
                if out.terminated[i] || out.truncated[i] {
                    ended += 1;
                    succ += out.success[i] as usize;
                }
            }
        }
        assert!(ended >= 45);
        assert!(
            succ as f32 >= 0.9 * ended as f32,
            "{succ}/{ended} successes"
        );
        // Oracle episodes are short (most well under the 500-step limit).
        assert!(
            steps * 3 < ended * 120,
            "{steps} steps for {ended} episodes"
        );
    }

    #[test]
    fn rewards_telescope_to_geodesic_progress() {
        let mut e = env(2, 1);
        let spec = e.spec().clone();
        let mut obs = ObsBatch::new(&spec, 1);
        e.reset(&mut obs);
        let g0 = e.describe(0)["geodesic"].as_f64().unwrap();
        let mut out = StepBatch::new(&spec, 1);
        let mut rng = FastRng::new(9);
        let mut total = 0.0f64;
        for _ in 0..100 {
            let a = 1 + rng.below(3); // never stop
            e.step(&[a], &mut out).unwrap();
            total += out.reward[0] as f64;
        }
        let g1 = e.describe(0)["geodesic"].as_f64().unwrap();
        assert!(
            (total - (g0 - g1 - 0.1)).abs() < 1e-3,
            "{total} vs {}",
            g0 - g1 - 0.1
        );
        assert!(g0 >= 1.0);
    }

    #[test]
    fn displacement_is_in_the_start_frame() {
        let rules = HouseRules {
            cfg: HouseNavConfig::default(),
        };
        let start = Pose {
            x: 2.0,
            y: 3.0,
            heading: PI / 2.0,
        }; // facing north
        let s = |x: f32, y: f32| EpisodeState {
            pose: Pose { x, y, heading: 0.0 },
            start,
            target: 0,
        };
        let d = rules.displacement(&s(2.0, 4.0));
        assert!((d[0] - 1.0).abs() < 1e-6 && d[1].abs() < 1e-6);
        let d = rules.displacement(&s(1.0, 3.0)); // west = left of north
        assert!(d[0].abs() < 1e-6 && (d[1] - 1.0).abs() < 1e-6);
    }

    #[test]
    fn stop_auto_resets_with_final_obs_and_vector_parts() {
        let mut e = env(4, 2);
        let spec = e.spec().clone();
        assert_eq!(spec.vector_dim, 10);
        let mut obs = ObsBatch::new(&spec, 2);
        e.reset(&mut obs);
        let t0 = e.episode(0).unwrap().target;
        assert_eq!(obs.vector[t0], 1.0);
        assert_eq!(obs.vector[..8].iter().sum::<f32>(), 1.0);
        assert_eq!(&obs.vector[8..10], &[0.0, 0.0]);
        let mut out = StepBatch::new(&spec, 2);
        e.step(&[TURN_LEFT, TURN_LEFT], &mut out).unwrap();
        let before = out.obs.clone();
        e.step(&[STOP, TURN_RIGHT], &mut out).unwrap();
        assert!(out.terminated[0] && !out.terminated[1]);
        let fb = 64 * 64 * 3;
        assert_eq!(out.final_obs.image[..fb], before.image[..fb]);
        assert_eq!(e.describe(0)["t"], 0);
        assert_eq!(e.describe(1)["t"], 2);
        // Truncation at the horizon.
        let cfg = HouseNavConfig {
            horizon: 2,
            ..Default::default()
        };
        let mut e = HouseNavVecEnv::new(cfg, 0, 0, 1).unwrap();
        e.step(&[TURN_LEFT], &mut out).unwrap();
        assert!(!out.truncated[0]);
        e.step(&[TURN_LEFT], &mut out).unwrap();
        assert!(out.truncated[0] && !out.terminated[0]);
    }

    #[test]
    fn frames_are_deterministic_per_seed() {
        let run = |seed: u64| {
            let mut e = env(seed, 2);
            let spec = e.spec().clone();
            let mut obs = ObsBatch::new(&spec, 2);
            e.reset(&mut obs);
            let mut out = StepBatch::new(&spec, 2);
            let mut rng = FastRng::new(1);
            let mut frames = obs.image.clone();
            for _ in 0..40 {
                let a = [rng.below(4), rng.below(4)];
                e.step(&a, &mut out).unwrap();
                frames.extend_from_slice(&out.obs.image);
            }
            frames
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
