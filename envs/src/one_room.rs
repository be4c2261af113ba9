//! DPT's Miniworld task (`"one_room"`): a modified Miniworld OneRoom.
//!
//! A square room (`room_size` = 6 m) with four boxes in fixed corners: task 0 = blue at the
//! south-west corner, 1 = red at the south-east, 2 = green at the north-west, 3 = yellow at the
//! north-east (box centres `box_size / 2 + 0.35` m from both walls). The task is the target
//! colour; there are only 4 tasks, and, as in DPT, train, validation and test all hold all four
//! (the split is not disjoint). Each episode starts at the room centre with a uniformly random heading.
//!
//! Actions: `0` turn left 15 deg, `1` turn right 15 deg, `2` forward 0.7 m (blocked moves leave
//! the agent in place, as in Miniworld), `3` no-op. Reward 1 on every step that ends with the
//! agent within `agent_radius + box_radius + 1.05` m of the target box centre (box radius = half
//! its footprint diagonal) and facing it within 30 deg (DPT's code; the paper says 15). Never
//! terminal; truncated at the horizon (50). Observation: the RGB frame and the heading
//! `(cos, sin)`.
//!
//! The oracle turns towards the target (when off by more than half a turn), walks forward until
//! it is rewarded, then waits (no-op).

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::render::{RenderParams, Renderer};
use crate::rng::{slot_rng, SlotRng};
use crate::world::{wrap_angle, Pose, Rgb, Scene, SceneObject};
use crate::{
    check_actions, check_image_side, check_range_f32, check_slot, require, EnvError, EnvSpec,
    ImageSpec, ObsBatch, Split, StepBatch, TaskId, VecEnv,
};

/// Action: turn left.
pub const TURN_LEFT: u32 = 0;
/// Action: turn right.
pub const TURN_RIGHT: u32 = 1;
/// Action: move forward.
pub const FORWARD: u32 = 2;
/// Action: do nothing.
pub const NOOP: u32 = 3;
/// Number of actions.
pub const NUM_ACTIONS: usize = 4;
/// Names of the box colours, by task id.
pub const COLOUR_NAMES: [&str; 4] = ["blue", "red", "green", "yellow"];
/// Box colours, by task id.
pub const COLOURS: [Rgb; 4] = [[30, 60, 235], [225, 35, 30], [35, 190, 50], [235, 215, 30]];

/// DPT's Miniworld one-room task.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OneRoomConfig {
    /// Image rows (pixels); 1..=1024. DPT used 25.
    pub image_height: usize,
    /// Image columns (pixels); 1..=1024. DPT used 25.
    pub image_width: usize,
    /// Episode length in steps; DPT: 50.
    pub horizon: usize,
    /// Side of the square room (m); Miniworld OneRoom (DPT): 6.
    pub room_size: f32,
    /// Forward step (m); DPT: 0.7.
    pub forward_step: f32,
    /// Turn per turn action (deg); DPT: 15.
    pub turn_deg: f32,
    /// Facing tolerance for the reward (deg); DPT's code: 30 (paper: 15).
    pub facing_deg: f32,
    /// Extra distance beyond the two radii within which the target counts as near (m); DPT: 1.05.
    pub near_margin: f32,
    /// Agent radius (m), for collisions and the near test; Miniworld: 0.4.
    pub agent_radius: f32,
    /// Box footprint side and height (m).
    pub box_size: f32,
    /// Horizontal field of view (deg); Miniworld: 60.
    pub hfov_deg: f32,
    /// Camera height (m); Miniworld: 1.5.
    pub camera_height: f32,
}

impl Default for OneRoomConfig {
    fn default() -> Self {
        OneRoomConfig {
            image_height: 64,
            image_width: 64,
            horizon: 50,
            room_size: 6.0,
            forward_step: 0.7,
            turn_deg: 15.0,
            facing_deg: 30.0,
            near_margin: 1.05,
            agent_radius: 0.4,
            box_size: 0.8,
            hfov_deg: 60.0,
            camera_height: 1.5,
        }
    }
}

impl OneRoomConfig {
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
        check_range_f32(&mut e, "room_size", self.room_size, 3.0, 100.0);
        check_range_f32(&mut e, "forward_step", self.forward_step, 0.01, 5.0);
        check_range_f32(&mut e, "turn_deg", self.turn_deg, 0.1, 180.0);
        check_range_f32(&mut e, "facing_deg", self.facing_deg, 0.0, 180.0);
        check_range_f32(&mut e, "near_margin", self.near_margin, 0.0, 100.0);
        check_range_f32(&mut e, "agent_radius", self.agent_radius, 0.01, 1.0);
        check_range_f32(&mut e, "box_size", self.box_size, 0.05, 1.5);
        check_range_f32(&mut e, "hfov_deg", self.hfov_deg, 5.0, 170.0);
        check_range_f32(&mut e, "camera_height", self.camera_height, 0.05, 2.4);
        e
    }

    /// The spec: 4 actions, heading `(cos, sin)`, an RGB image.
    pub fn spec(&self) -> EnvSpec {
        EnvSpec {
            name: "one_room".into(),
            num_actions: NUM_ACTIONS,
            vector_dim: 2,
            vector_segments: vec![("heading".into(), 2)],
            image: Some(ImageSpec {
                height: self.image_height,
                width: self.image_width,
            }),
            horizon: self.horizon,
            has_success: false,
        }
    }
}

/// The room's geometry and rules: pure functions of (pose, task, action), used by the vector
/// env and available to data generators.
#[derive(Debug, Clone)]
pub struct OneRoomWorld {
    /// The configuration.
    pub cfg: OneRoomConfig,
    /// Walls and the four boxes (object `i` is task `i`'s box).
    pub scene: Scene,
}

impl OneRoomWorld {
    /// The world of a (valid) config.
    pub fn new(cfg: &OneRoomConfig) -> OneRoomWorld {
        let s = cfg.room_size;
        let cell = s / 6.0;
        let mut scene = Scene::bordered(8, 8, cell, [-cell, -cell], [190, 185, 175]);
        scene.wall_height = 2.5;
        let m = cfg.box_size * 0.5 + 0.35;
        let h = cfg.box_size * 0.5;
        let centres = [[m, m], [s - m, m], [m, s - m], [s - m, s - m]];
        for (i, c) in centres.iter().enumerate() {
            scene.objects.push(SceneObject {
                min: [c[0] - h, c[1] - h],
                max: [c[0] + h, c[1] + h],
                height: cfg.box_size,
                colour: COLOURS[i],
                category: i as u8,
            });
        }
        OneRoomWorld {
            cfg: cfg.clone(),
            scene,
        }
    }

    /// The start position (room centre); the heading is random per episode.
    pub fn start(&self, heading: f32) -> Pose {
        Pose {
            x: self.cfg.room_size * 0.5,
            y: self.cfg.room_size * 0.5,
            heading,
        }
    }

    fn target(&self, task: u8) -> &SceneObject {
        &self.scene.objects[(task as usize).min(3)]
    }

    /// Distance (m) from the pose to the target box's centre and the heading error towards it
    /// (rad, positive = the box is to the left).
    pub fn target_geometry(&self, pose: &Pose, task: u8) -> (f32, f32) {
        let c = self.target(task).centre();
        let (dx, dy) = (c[0] - pose.x, c[1] - pose.y);
        let dist = (dx * dx + dy * dy).sqrt();
        (dist, wrap_angle(dy.atan2(dx) - pose.heading))
    }

    /// Whether a pose is rewarded: near the target and facing it.
    pub fn rewarded(&self, pose: &Pose, task: u8) -> bool {
        let (dist, err) = self.target_geometry(pose, task);
        let box_radius = self.cfg.box_size * std::f32::consts::FRAC_1_SQRT_2;
        dist < self.cfg.agent_radius + box_radius + self.cfg.near_margin
            && err.abs() <= self.cfg.facing_deg.to_radians() + 1e-6
    }

    /// Apply an action (unchecked: actions >= 3 are no-ops): next pose and reward.
    pub fn step(&self, pose: &Pose, task: u8, action: u32) -> (Pose, f32) {
        let mut p = *pose;
        let turn = self.cfg.turn_deg.to_radians();
        match action {
            TURN_LEFT => p.heading = wrap_angle(p.heading + turn),
            TURN_RIGHT => p.heading = wrap_angle(p.heading - turn),
            FORWARD => {
                let d = p.dir();
                let np = [
                    p.x + self.cfg.forward_step * d[0],
                    p.y + self.cfg.forward_step * d[1],
                ];
                if !self.scene.collides(np, self.cfg.agent_radius) {
                    p.x = np[0];
                    p.y = np[1];
                }
            }
            _ => {}
        }
        let r = if self.rewarded(&p, task) { 1.0 } else { 0.0 };
        (p, r)
    }

    /// The oracle's action (see the module docs).
    pub fn optimal_action(&self, pose: &Pose, task: u8) -> u32 {
        if self.rewarded(pose, task) {
            return NOOP;
        }
        let (_, err) = self.target_geometry(pose, task);
        let half_turn = 0.5 * self.cfg.turn_deg.to_radians() + 1e-4;
        // Walk when facing the box within half a turn (a turn cannot align it better).
        if err.abs() <= half_turn {
            let (np, _) = self.step(pose, task, FORWARD);
            if np != *pose {
                return FORWARD;
            }
        }
        if err > 0.0 {
            TURN_LEFT
        } else {
            TURN_RIGHT
        }
    }
}

/// A batch of one-room slots.
pub struct OneRoomVecEnv {
    world: OneRoomWorld,
    spec: EnvSpec,
    renderer: Renderer,
    ids: Vec<u8>,
    poses: Vec<Pose>,
    task: Vec<u8>,
    t: Vec<u32>,
    rngs: Vec<SlotRng>,
}

impl OneRoomVecEnv {
    /// Build slots `[first_slot, first_slot + count)` (the config must be valid).
    pub fn new(
        cfg: OneRoomConfig,
        seed: u64,
        first_slot: usize,
        count: usize,
    ) -> Result<Self, EnvError> {
        let renderer = Renderer::new(RenderParams {
            width: cfg.image_width,
            height: cfg.image_height,
            hfov_deg: cfg.hfov_deg,
            camera_height: cfg.camera_height,
            floor: [120, 105, 90],
            ceiling: [215, 215, 225],
            fog: 0.12,
        })?;
        let world = OneRoomWorld::new(&cfg);
        let mut rngs: Vec<SlotRng> = (0..count).map(|i| slot_rng(seed, first_slot + i)).collect();
        let poses = rngs
            .iter_mut()
            .map(|r| world.start(random_heading(r)))
            .collect();
        Ok(OneRoomVecEnv {
            spec: cfg.spec(),
            ids: vec![0; renderer.frame_pixels()],
            renderer,
            poses,
            task: (0..count).map(|i| ((first_slot + i) % 4) as u8).collect(),
            t: vec![0; count],
            rngs,
            world,
        })
    }

    /// The world (geometry and rules).
    pub fn world(&self) -> &OneRoomWorld {
        &self.world
    }

    /// A slot's pose.
    pub fn pose(&self, slot: usize) -> Option<Pose> {
        self.poses.get(slot).copied()
    }

    fn start_episode(&mut self, i: usize) {
        let h = random_heading(&mut self.rngs[i]);
        self.poses[i] = self.world.start(h);
        self.t[i] = 0;
    }

    fn write(&mut self, i: usize, pose: Pose, obs: &mut ObsBatch) {
        let fb = self.renderer.frame_bytes();
        let img = &mut obs.image[i * fb..(i + 1) * fb];
        // Buffers are sized by `fit`, so rendering cannot fail here.
        let _ = self
            .renderer
            .render(&self.world.scene, &pose, img, &mut self.ids);
        obs.vector[2 * i] = pose.heading.cos();
        obs.vector[2 * i + 1] = pose.heading.sin();
    }
}

fn random_heading(rng: &mut SlotRng) -> f32 {
    wrap_angle(rng.random::<f32>() * std::f32::consts::TAU)
}

impl VecEnv for OneRoomVecEnv {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn num_envs(&self) -> usize {
        self.poses.len()
    }

    fn tasks(&self, _split: Split) -> Vec<TaskId> {
        vec![0, 1, 2, 3]
    }

    fn set_task(&mut self, slot: usize, task: TaskId) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        if task > 3 {
            return Err(EnvError::InvalidTask {
                env: "one_room".into(),
                task,
                reason: "tasks are 0 blue, 1 red, 2 green, 3 yellow".into(),
            });
        }
        self.task[slot] = task as u8;
        self.start_episode(slot);
        Ok(())
    }

    fn task(&self, slot: usize) -> Result<TaskId, EnvError> {
        check_slot(slot, self.num_envs())?;
        Ok(self.task[slot] as TaskId)
    }

    fn reset(&mut self, obs: &mut ObsBatch) {
        let n = self.num_envs();
        obs.fit(&self.spec, n);
        for i in 0..n {
            self.start_episode(i);
            self.write(i, self.poses[i], obs);
        }
    }

    fn observe_slot(&mut self, slot: usize, obs: &mut ObsBatch) -> Result<(), EnvError> {
        check_slot(slot, self.num_envs())?;
        obs.fit(&self.spec, self.num_envs());
        self.write(slot, self.poses[slot], obs);
        Ok(())
    }

    fn step(&mut self, actions: &[u32], out: &mut StepBatch) -> Result<(), EnvError> {
        let n = self.num_envs();
        check_actions(&self.spec, n, actions)?;
        out.fit(&self.spec, n);
        let horizon = self.spec.horizon as u32;
        for (i, &action) in actions.iter().enumerate() {
            let (p, r) = self.world.step(&self.poses[i], self.task[i], action);
            let t = self.t[i] + 1;
            let trunc = t >= horizon;
            out.reward[i] = r;
            out.terminated[i] = false;
            out.truncated[i] = trunc;
            out.success[i] = false;
            if trunc {
                self.write(i, p, &mut out.final_obs);
                self.start_episode(i);
            } else {
                self.poses[i] = p;
                self.t[i] = t;
            }
            self.write(i, self.poses[i], &mut out.obs);
        }
        Ok(())
    }

    fn oracle_actions(&self, out: &mut [u32]) {
        for ((o, p), &task) in out.iter_mut().zip(&self.poses).zip(&self.task) {
            *o = self.world.optimal_action(p, task);
        }
    }

    fn describe(&self, slot: usize) -> serde_json::Value {
        let Some(p) = self.pose(slot) else {
            return json!({ "error": format!("slot {slot} out of range") });
        };
        let task = self.task[slot];
        let (dist, err) = self.world.target_geometry(&p, task);
        json!({
            "x": p.x,
            "y": p.y,
            "heading_deg": p.heading.to_degrees(),
            "t": self.t[slot],
            "task": task,
            "target": COLOUR_NAMES[task as usize],
            "target_distance": dist,
            "target_bearing_deg": err.to_degrees(),
            "rewarded": self.world.rewarded(&p, task),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EnvConfig;
    use std::f32::consts::PI;

    fn world() -> OneRoomWorld {
        OneRoomWorld::new(&OneRoomConfig::default())
    }

    #[test]
    fn reward_geometry() {
        let w = world();
        // Blue box centre at (0.75, 0.75); threshold 0.4 + 0.566 + 1.05 = 2.016 m.
        let towards = |x: f32, y: f32| (0.75 - y).atan2(0.75 - x);
        let p = Pose {
            x: 2.0,
            y: 2.0,
            heading: towards(2.0, 2.0),
        }; // 1.77 m away, facing
        assert!(w.rewarded(&p, 0));
        assert!(!w.rewarded(&p, 1), "wrong target");
        let p = Pose {
            x: 2.3,
            y: 2.3,
            heading: towards(2.3, 2.3),
        }; // 2.19 m away
        assert!(!w.rewarded(&p, 0));
        // Facing within 30 deg but not 35 deg.
        let h = towards(2.0, 2.0);
        assert!(w.rewarded(
            &Pose {
                x: 2.0,
                y: 2.0,
                heading: h + 29f32.to_radians()
            },
            0
        ));
        assert!(!w.rewarded(
            &Pose {
                x: 2.0,
                y: 2.0,
                heading: h - 35f32.to_radians()
            },
            0
        ));
    }

    #[test]
    fn moves_turns_and_collisions() {
        let w = world();
        let p = w.start(0.0);
        let (q, _) = w.step(&p, 0, FORWARD);
        assert!((q.x - 3.7).abs() < 1e-5 && (q.y - 3.0).abs() < 1e-6);
        let (q, _) = w.step(&p, 0, TURN_LEFT);
        assert!((q.heading - 15f32.to_radians()).abs() < 1e-6);
        let (q, _) = w.step(&p, 0, TURN_RIGHT);
        assert!((q.heading + 15f32.to_radians()).abs() < 1e-6);
        // Walking east ends against the wall (radius 0.4 from x = 6).
        let mut q = p;
        for _ in 0..10 {
            q = w.step(&q, 0, FORWARD).0;
        }
        assert!(q.x <= 5.6 + 1e-4 && q.x > 4.8, "{}", q.x);
        let (r, _) = w.step(&q, 0, NOOP);
        assert_eq!(r, q);
    }

    #[test]
    fn oracle_reaches_every_target_from_every_heading() {
        let w = world();
        for task in 0..4u8 {
            for k in 0..24 {
                let mut p = w.start(wrap_angle(k as f32 * PI / 12.0 + 0.05));
                let mut ret = 0.0;
                let mut first = None;
                for t in 0..50 {
                    let a = w.optimal_action(&p, task);
                    let (q, r) = w.step(&p, task, a);
                    p = q;
                    ret += r;
                    if r > 0.0 && first.is_none() {
                        first = Some(t);
                    }
                }
                let first = first.expect("oracle never rewarded");
                // At most 12 turns + 2 steps, then rewarded every step.
                assert!(
                    first <= 14,
                    "task {task} heading {k}: first reward at {first}"
                );
                assert_eq!(ret, (50 - first) as f32);
            }
        }
    }

    #[test]
    fn facing_the_target_shows_its_colour_near_the_image_centre_column() {
        let cfg = EnvConfig::OneRoom(OneRoomConfig::default());
        let mut env = cfg.build(0, 0, 1).unwrap();
        let spec = env.spec().clone();
        let mut obs = ObsBatch::new(&spec, 1);
        let mut out = StepBatch::new(&spec, 1);
        env.set_task(0, 1).unwrap();
        env.reset(&mut obs);
        let mut a = [0u32];
        for _ in 0..30 {
            env.oracle_actions(&mut a);
            env.step(&a, &mut out).unwrap();
        }
        // Now facing the red box within 7.5 deg: the centre column's lower half shows red.
        let img = &out.obs.image;
        let red = (32..64).filter(|&r| {
            let i = (r * 64 + 32) * 3;
            img[i] > 60
                && img[i] as u32 > 2 * img[i + 1] as u32
                && img[i] as u32 > 2 * img[i + 2] as u32
        });
        assert!(red.count() >= 3);
        let d = env.describe(0);
        assert_eq!(d["target"], "red");
        assert_eq!(d["rewarded"], true);
    }

    #[test]
    fn truncation_final_obs_and_new_episode() {
        let cfg = EnvConfig::OneRoom(OneRoomConfig {
            horizon: 3,
            image_height: 16,
            image_width: 16,
            ..Default::default()
        });
        let mut env = cfg.build(5, 0, 2).unwrap();
        let spec = env.spec().clone();
        let mut obs = ObsBatch::new(&spec, 2);
        env.reset(&mut obs);
        let mut out = StepBatch::new(&spec, 2);
        env.step(&[FORWARD, NOOP], &mut out).unwrap();
        env.step(&[FORWARD, NOOP], &mut out).unwrap();
        let before = out.obs.clone();
        env.step(&[NOOP, NOOP], &mut out).unwrap();
        assert_eq!(out.truncated, vec![true, true]);
        // Slot 1 never moved: its final obs equals its previous obs.
        let fb = 16 * 16 * 3;
        assert_eq!(out.final_obs.image[fb..], before.image[fb..]);
        assert_eq!(out.final_obs.image[..fb], before.image[..fb]);
        // New episode: back at the centre.
        let d = env.describe(0);
        assert!((d["x"].as_f64().unwrap() - 3.0).abs() < 1e-6);
        assert_eq!(d["t"], 0);
        assert!(env.set_task(0, 4).is_err());
        assert!(env.step(&[4, 0], &mut out).is_err());
    }
}
