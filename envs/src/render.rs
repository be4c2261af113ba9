//! A software first-person renderer (no GPU, no window): a column raycaster over the wall grid
//! of a [`Scene`] with a per-column depth, plus the scene's boxes drawn as extruded prisms
//! (side faces and, when below eye level, their tops), painted far to near per column.
//!
//! Shading: floor and ceiling rows are precomputed with distance fog; walls are shaded by
//! distance, darker on faces that face east/west, with dark seams at cell edges (motion cues);
//! boxes are shaded by distance and face, tops lighter. Every frame also fills an object-id
//! buffer (`0` = no object, `i + 1` = object `i`), from which visible pixels are counted.
//!
//! The camera looks along the pose heading, horizontally, with a configurable horizontal field
//! of view; pixels are square, so the vertical field of view follows from the aspect ratio.
//! Column 0 is the left edge of the view, row 0 the top.

use crate::world::{Pose, Rgb, Scene};
use crate::EnvError;

/// Camera and image parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderParams {
    /// Image width (pixels).
    pub width: usize,
    /// Image height (pixels).
    pub height: usize,
    /// Horizontal field of view (degrees).
    pub hfov_deg: f32,
    /// Camera height above the floor (m).
    pub camera_height: f32,
    /// Floor colour (before shading).
    pub floor: Rgb,
    /// Ceiling colour (before shading).
    pub ceiling: Rgb,
    /// Fog density: brightness is `1 / (1 + fog * distance)`.
    pub fog: f32,
}

/// Entries of the distance-shading table and its resolution.
const LUT_LEN: usize = 2048;
const LUT_PER_M: f32 = 16.0;
/// Near clipping distance (m).
const NEAR: f32 = 0.02;

#[derive(Debug, Clone, Copy, Default)]
struct Hit {
    t_near: f32,
    t_far: f32,
    obj: u16,
    x_face: bool,
}

/// A renderer for one image size; holds precomputed tables and scratch space (no allocation
/// per frame).
#[derive(Debug, Clone)]
pub struct Renderer {
    p: RenderParams,
    focal: f32,
    col_k: Vec<f32>,
    tan_half: f32,
    shade: Vec<u16>,
    background: Vec<u8>,
    bg_wall_height: f32,
    hits: Vec<Hit>,
    obj_cols: Vec<(i32, i32)>,
}

impl Renderer {
    /// A renderer; errors on a zero or too large image or a field of view outside (1, 179) deg.
    pub fn new(p: RenderParams) -> Result<Self, EnvError> {
        let mut errs = Vec::new();
        if !(1..=crate::MAX_IMAGE_SIDE).contains(&p.width)
            || !(1..=crate::MAX_IMAGE_SIDE).contains(&p.height)
        {
            errs.push(format!(
                "image size must be 1..={} on each side, got {}x{}",
                crate::MAX_IMAGE_SIDE,
                p.height,
                p.width
            ));
        }
        if !(p.hfov_deg > 1.0 && p.hfov_deg < 179.0) {
            errs.push(format!("hfov_deg must be in (1, 179), got {}", p.hfov_deg));
        }
        let cam_ok = p.camera_height.is_finite() && p.camera_height > 0.0;
        let fog_ok = p.fog.is_finite() && p.fog >= 0.0;
        if !(cam_ok && fog_ok) {
            errs.push("camera_height must be > 0 and fog >= 0".to_string());
        }
        if !errs.is_empty() {
            return Err(EnvError::InvalidConfig(errs));
        }
        let tan_half = (p.hfov_deg.to_radians() * 0.5).tan();
        let focal = (p.width as f32 * 0.5) / tan_half;
        let col_k = (0..p.width)
            .map(|c| ((2.0 * (c as f32 + 0.5) / p.width as f32) - 1.0) * tan_half)
            .collect();
        let shade = (0..LUT_LEN)
            .map(|i| {
                let d = i as f32 / LUT_PER_M;
                (256.0 / (1.0 + p.fog * d)).round() as u16
            })
            .collect();
        Ok(Renderer {
            p,
            focal,
            col_k,
            tan_half,
            shade,
            background: vec![0; p.width * p.height * 3],
            bg_wall_height: f32::NAN,
            hits: Vec::new(),
            obj_cols: Vec::new(),
        })
    }

    /// The parameters.
    pub fn params(&self) -> &RenderParams {
        &self.p
    }

    /// Bytes of one RGB frame.
    pub fn frame_bytes(&self) -> usize {
        self.p.width * self.p.height * 3
    }

    /// Pixels of one frame (the id buffer's length).
    pub fn frame_pixels(&self) -> usize {
        self.p.width * self.p.height
    }

    #[inline]
    fn shade_at(&self, d: f32) -> u32 {
        let i = ((d * LUT_PER_M) as usize).min(LUT_LEN - 1);
        self.shade[i] as u32
    }

    fn build_background(&mut self, wall_height: f32) {
        let (w, h) = (self.p.width, self.p.height);
        let half = h as f32 * 0.5;
        let ceil_above = (wall_height - self.p.camera_height).max(0.05);
        for r in 0..h {
            let yc = r as f32 + 0.5;
            let (base, d) = if yc < half {
                (self.p.ceiling, ceil_above * self.focal / (half - yc))
            } else {
                (
                    self.p.floor,
                    self.p.camera_height * self.focal / (yc - half),
                )
            };
            let f = self.shade_at(d);
            let col = scale(base, f);
            for c in 0..w {
                let i = (r * w + c) * 3;
                self.background[i..i + 3].copy_from_slice(&col);
            }
        }
        self.bg_wall_height = wall_height;
    }

    /// Pixel rows covered by the continuous interval `[a, b)` (clipped to the image).
    #[inline]
    fn rows(&self, a: f32, b: f32) -> (usize, usize) {
        let h = self.p.height as f32;
        let r0 = (a - 0.5).ceil().clamp(0.0, h) as usize;
        let r1 = (b - 0.5).ceil().clamp(0.0, h) as usize;
        (r0, r1.max(r0))
    }

    /// Render `scene` from `pose` into `rgb` (`H*W*3`, HWC) and `ids` (`H*W`, object ids).
    pub fn render(
        &mut self,
        scene: &Scene,
        pose: &Pose,
        rgb: &mut [u8],
        ids: &mut [u8],
    ) -> Result<(), EnvError> {
        let (w, h) = (self.p.width, self.p.height);
        if rgb.len() != w * h * 3 || ids.len() != w * h {
            return Err(EnvError::Io(format!(
                "render buffers are {} / {} bytes, expected {} / {}",
                rgb.len(),
                ids.len(),
                w * h * 3,
                w * h
            )));
        }
        if self.bg_wall_height != scene.wall_height {
            self.build_background(scene.wall_height);
        }
        rgb.copy_from_slice(&self.background);
        ids.fill(0);

        let dir = pose.dir();
        let right = [dir[1], -dir[0]];
        let cam_h = self.p.camera_height;
        let half = h as f32 * 0.5;
        let focal = self.focal;
        let top_above = scene.wall_height - cam_h;

        // Per-frame object culling: the range of columns each object can cover.
        let nobj = scene.objects.len().min(255);
        self.obj_cols.clear();
        for o in &scene.objects[..nobj] {
            self.obj_cols
                .push(self.column_range(o.min, o.max, pose, dir, right));
        }
        if self.hits.len() < nobj {
            self.hits.resize(nobj, Hit::default());
        }

        let inv_cell = 1.0 / scene.cell;
        let gx = (pose.x - scene.origin[0]) * inv_cell;
        let gy = (pose.y - scene.origin[1]) * inv_cell;
        let start_x = gx.floor() as i32;
        let start_y = gy.floor() as i32;
        let start_in_wall = scene.is_wall(start_x, start_y);
        let max_iter = scene.width + scene.height + 4;

        for c in 0..w {
            let k = self.col_k[c];
            let rdx = dir[0] + right[0] * k;
            let rdy = dir[1] + right[1] * k;

            // --- walls: DDA in grid units; t is the perpendicular depth in cells.
            let depth;
            if start_in_wall {
                depth = NEAR;
                fill_column((rgb, ids), w, c, (0, h), [0, 0, 0], 0);
            } else {
                let ddx = if rdx == 0.0 {
                    f32::INFINITY
                } else {
                    (1.0 / rdx).abs()
                };
                let ddy = if rdy == 0.0 {
                    f32::INFINITY
                } else {
                    (1.0 / rdy).abs()
                };
                let (step_x, mut side_x) = if rdx < 0.0 {
                    (-1, (gx - start_x as f32) * ddx)
                } else {
                    (1, (start_x as f32 + 1.0 - gx) * ddx)
                };
                let (step_y, mut side_y) = if rdy < 0.0 {
                    (-1, (gy - start_y as f32) * ddy)
                } else {
                    (1, (start_y as f32 + 1.0 - gy) * ddy)
                };
                let (mut mx, mut my) = (start_x, start_y);
                let mut hit_x_side = false;
                let mut prev = (mx, my);
                for _ in 0..max_iter {
                    prev = (mx, my);
                    if side_x < side_y {
                        side_x += ddx;
                        mx += step_x;
                        hit_x_side = true;
                    } else {
                        side_y += ddy;
                        my += step_y;
                        hit_x_side = false;
                    }
                    if scene.is_wall(mx, my) {
                        break;
                    }
                }
                let perp = if hit_x_side {
                    side_x - ddx
                } else {
                    side_y - ddy
                };
                depth = (perp * scene.cell).max(NEAR);
                // Position along the wall face, in cells, for seams.
                let along = if hit_x_side {
                    gy + perp * rdy
                } else {
                    gx + perp * rdx
                };
                let frac = along - along.floor();
                let mut f = self.shade_at(depth);
                if hit_x_side {
                    f = (f * 205) >> 8;
                }
                if !(0.03..=0.97).contains(&frac) {
                    f = (f * 140) >> 8;
                }
                let pc = prev.1 as usize * scene.width + prev.0 as usize;
                let base = scene
                    .face_colour
                    .get(pc)
                    .copied()
                    .unwrap_or([128, 128, 128]);
                let col = scale(base, f);
                let inv = focal / depth;
                let (r0, r1) = self.rows(half - top_above * inv, half + cam_h * inv);
                fill_column((rgb, ids), w, c, (r0, r1), col, 0);
            }

            // --- objects in front of the wall, painted far to near.
            let mut nh = 0;
            let ci = c as i32;
            let inv_x = if rdx == 0.0 { 1e30 } else { 1.0 / rdx };
            let inv_y = if rdy == 0.0 { 1e30 } else { 1.0 / rdy };
            for (i, o) in scene.objects[..nobj].iter().enumerate() {
                let (c0, c1) = self.obj_cols[i];
                if ci < c0 || ci > c1 {
                    continue;
                }
                let tx1 = (o.min[0] - pose.x) * inv_x;
                let tx2 = (o.max[0] - pose.x) * inv_x;
                let ty1 = (o.min[1] - pose.y) * inv_y;
                let ty2 = (o.max[1] - pose.y) * inv_y;
                let txn = tx1.min(tx2);
                let tyn = ty1.min(ty2);
                let tn = txn.max(tyn);
                let tf = tx1.max(tx2).min(ty1.max(ty2));
                if tn > tf || tf <= NEAR || tn >= depth {
                    continue;
                }
                self.hits[nh] = Hit {
                    t_near: tn.max(NEAR),
                    t_far: tf.min(depth),
                    obj: i as u16,
                    x_face: txn > tyn,
                };
                nh += 1;
            }
            // Insertion sort, farthest first.
            for a in 1..nh {
                let mut b = a;
                while b > 0 && self.hits[b - 1].t_near < self.hits[b].t_near {
                    self.hits.swap(b - 1, b);
                    b -= 1;
                }
            }
            for hi in 0..nh {
                let hit = self.hits[hi];
                let o = &scene.objects[hit.obj as usize];
                let id = (hit.obj + 1) as u8;
                let inv_n = focal / hit.t_near;
                let bottom = half + cam_h * inv_n;
                let top_near = half - (o.height - cam_h) * inv_n;
                let mut f = self.shade_at(hit.t_near);
                if hit.x_face {
                    f = (f * 205) >> 8;
                }
                let (r0, r1) = self.rows(top_near, bottom);
                fill_column((rgb, ids), w, c, (r0, r1), scale(o.colour, f), id);
                if o.height < cam_h {
                    // The top face shows between the far and the near top edges.
                    let top_far = half - (o.height - cam_h) * (focal / hit.t_far);
                    let ft = ((self.shade_at(hit.t_near) * 300) >> 8).min(320);
                    let (r0, r1) = self.rows(top_far, top_near);
                    fill_column((rgb, ids), w, c, (r0, r1), scale(o.colour, ft), id);
                }
            }
        }
        Ok(())
    }

    /// Columns an axis-aligned box can cover from `pose` (conservative; `(1, 0)` = none).
    fn column_range(
        &self,
        min: [f32; 2],
        max: [f32; 2],
        pose: &Pose,
        dir: [f32; 2],
        right: [f32; 2],
    ) -> (i32, i32) {
        let w = self.p.width as i32;
        let corners = [
            [min[0], min[1]],
            [max[0], min[1]],
            [min[0], max[1]],
            [max[0], max[1]],
        ];
        let mut qmin = f32::INFINITY;
        let mut qmax = f32::NEG_INFINITY;
        let mut behind = 0;
        for c in corners {
            let vx = c[0] - pose.x;
            let vy = c[1] - pose.y;
            let fwd = vx * dir[0] + vy * dir[1];
            let lat = vx * right[0] + vy * right[1];
            if fwd <= NEAR {
                behind += 1;
                continue;
            }
            let q = lat / fwd;
            qmin = qmin.min(q);
            qmax = qmax.max(q);
        }
        if behind == 4 {
            return (1, 0);
        }
        if behind > 0 {
            return (0, w - 1);
        }
        let to_col = |q: f32| (q / self.tan_half + 1.0) * 0.5 * self.p.width as f32 - 0.5;
        let c0 = to_col(qmin).floor().max(-1.0) as i32;
        let c1 = to_col(qmax).ceil().min(w as f32) as i32;
        if c1 < 0 || c0 >= w {
            return (1, 0);
        }
        (c0.max(0), c1.min(w - 1))
    }
}

/// Scale a colour by `f / 256` (saturating).
#[inline(always)]
fn scale(c: Rgb, f: u32) -> Rgb {
    [
        ((c[0] as u32 * f) >> 8).min(255) as u8,
        ((c[1] as u32 * f) >> 8).min(255) as u8,
        ((c[2] as u32 * f) >> 8).min(255) as u8,
    ]
}

/// Paint rows `r0..r1` of column `c` with `col` and object id `id`.
#[inline(always)]
fn fill_column(
    (rgb, ids): (&mut [u8], &mut [u8]),
    w: usize,
    c: usize,
    (r0, r1): (usize, usize),
    col: Rgb,
    id: u8,
) {
    let stride = w * 3;
    let mut i = r0 * stride + c * 3;
    let mut j = r0 * w + c;
    for _ in r0..r1 {
        if let Some(px) = rgb.get_mut(i..i + 3) {
            px.copy_from_slice(&col);
        }
        if let Some(v) = ids.get_mut(j) {
            *v = id;
        }
        i += stride;
        j += w;
    }
}

/// Count visible pixels per object id in an id buffer: `counts[i]` for object `i`
/// (`counts.len()` objects; ids beyond are ignored).
pub fn count_ids(ids: &[u8], counts: &mut [u32]) {
    counts.fill(0);
    for &id in ids {
        if id != 0 {
            if let Some(c) = counts.get_mut(id as usize - 1) {
                *c += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::SceneObject;
    use std::f32::consts::PI;

    fn params(w: usize, h: usize) -> RenderParams {
        RenderParams {
            width: w,
            height: h,
            hfov_deg: 60.0,
            camera_height: 0.6,
            floor: [90, 80, 70],
            ceiling: [200, 200, 210],
            fog: 0.1,
        }
    }

    fn room() -> Scene {
        // 10 x 10 cells of 1 m with a border; interior [1, 9] x [1, 9].
        Scene::bordered(10, 10, 1.0, [0.0, 0.0], [180, 180, 180])
    }

    fn boxed(min: [f32; 2], max: [f32; 2], colour: Rgb) -> SceneObject {
        SceneObject {
            min,
            max,
            height: 1.2,
            colour,
            category: 0,
        }
    }

    fn px(rgb: &[u8], w: usize, r: usize, c: usize) -> Rgb {
        let i = (r * w + c) * 3;
        [rgb[i], rgb[i + 1], rgb[i + 2]]
    }

    fn is_blue(p: Rgb) -> bool {
        p[2] > 40 && p[2] as u32 > 2 * p[0] as u32 + 10 && p[2] as u32 > 2 * p[1] as u32 + 10
    }

    #[test]
    fn facing_a_box_puts_its_colour_at_the_centre() {
        let mut s = room();
        s.objects.push(boxed([6.0, 4.5], [7.0, 5.5], [20, 40, 230]));
        let mut r = Renderer::new(params(64, 64)).unwrap();
        let mut rgb = vec![0; 64 * 64 * 3];
        let mut ids = vec![0; 64 * 64];
        r.render(
            &s,
            &Pose {
                x: 2.0,
                y: 5.0,
                heading: 0.0,
            },
            &mut rgb,
            &mut ids,
        )
        .unwrap();
        assert!(is_blue(px(&rgb, 64, 32, 32)), "{:?}", px(&rgb, 64, 32, 32));
        assert_eq!(ids[32 * 64 + 32], 1);
        // Facing away: no blue anywhere, no ids.
        r.render(
            &s,
            &Pose {
                x: 2.0,
                y: 5.0,
                heading: PI,
            },
            &mut rgb,
            &mut ids,
        )
        .unwrap();
        assert!(!is_blue(px(&rgb, 64, 32, 32)));
        assert!(ids.iter().all(|&i| i == 0));
        // Box to the left of the heading (north when facing east) shows in the left half.
        r.render(
            &s,
            &Pose {
                x: 2.0,
                y: 3.0,
                heading: 0.0,
            },
            &mut rgb,
            &mut ids,
        )
        .unwrap();
        let mut counts = [0u32; 1];
        let (mut left, mut right) = (0, 0);
        for row in 0..64 {
            for col in 0..64 {
                if ids[row * 64 + col] == 1 {
                    if col < 32 {
                        left += 1
                    } else {
                        right += 1
                    }
                }
            }
        }
        count_ids(&ids, &mut counts);
        assert!(left > 0 && right == 0, "left {left} right {right}");
        assert_eq!(counts[0], left);
    }

    #[test]
    fn a_wall_hides_an_object_behind_it() {
        let mut s = room();
        s.objects.push(boxed([6.0, 4.5], [7.0, 5.5], [20, 40, 230]));
        let mut r = Renderer::new(params(48, 32)).unwrap();
        let mut rgb = vec![0; 48 * 32 * 3];
        let mut ids = vec![0; 48 * 32];
        let pose = Pose {
            x: 2.0,
            y: 5.0,
            heading: 0.0,
        };
        r.render(&s, &pose, &mut rgb, &mut ids).unwrap();
        assert!(ids.contains(&1));
        // A wall column at x = 4 between camera and box.
        for y in 1..9 {
            s.set_wall(4, y, true);
        }
        r.render(&s, &pose, &mut rgb, &mut ids).unwrap();
        assert!(ids.iter().all(|&i| i == 0));
        assert!(rgb.chunks(3).all(|p| !is_blue([p[0], p[1], p[2]])));
    }

    #[test]
    fn nearer_object_occludes_farther_and_walls_shrink_with_distance() {
        let mut s = room();
        s.objects.push(boxed([7.0, 4.5], [8.0, 5.5], [20, 40, 230]));
        s.objects.push(boxed([4.0, 4.9], [4.5, 5.1], [230, 30, 20]));
        let mut r = Renderer::new(params(64, 64)).unwrap();
        let mut rgb = vec![0; 64 * 64 * 3];
        let mut ids = vec![0; 64 * 64];
        r.render(
            &s,
            &Pose {
                x: 2.0,
                y: 5.0,
                heading: 0.0,
            },
            &mut rgb,
            &mut ids,
        )
        .unwrap();
        assert_eq!(ids[32 * 64 + 32], 2, "red box in front");
        assert!(ids.contains(&1), "blue box visible around it");
        // Wall height in pixels at the centre column: nearer wall looks taller.
        let bg = r.background.clone();
        let wall_rows = |ids: &[u8], rgb: &[u8]| {
            (0..64)
                .filter(|&row| {
                    ids[row * 64 + 32] == 0
                        && px(rgb, 64, row, 32) != bg[(row * 64 + 32) * 3..][..3]
                })
                .count()
        };
        s.objects.clear();
        r.render(
            &s,
            &Pose {
                x: 2.0,
                y: 5.0,
                heading: 0.0,
            },
            &mut rgb,
            &mut ids,
        )
        .unwrap();
        let far = wall_rows(&ids, &rgb);
        r.render(
            &s,
            &Pose {
                x: 6.0,
                y: 5.0,
                heading: 0.0,
            },
            &mut rgb,
            &mut ids,
        )
        .unwrap();
        let near = wall_rows(&ids, &rgb);
        assert!(near > far + 10, "near {near} far {far}");
    }

    #[test]
    fn bad_sizes_and_buffers_are_errors() {
        assert!(Renderer::new(params(0, 64)).is_err());
        assert!(Renderer::new(params(64, 2000)).is_err());
        assert!(Renderer::new(RenderParams {
            hfov_deg: 0.0,
            ..params(8, 8)
        })
        .is_err());
        let mut r = Renderer::new(params(8, 8)).unwrap();
        let mut rgb = vec![0; 10];
        let mut ids = vec![0; 64];
        assert!(r
            .render(
                &room(),
                &Pose {
                    x: 2.0,
                    y: 2.0,
                    heading: 0.0
                },
                &mut rgb,
                &mut ids
            )
            .is_err());
    }

    #[test]
    fn deterministic_and_never_panics_inside_walls() {
        let s = room();
        let mut r = Renderer::new(params(16, 16)).unwrap();
        let mut a = vec![0; 16 * 16 * 3];
        let mut b = vec![0; 16 * 16 * 3];
        let mut ids = vec![0; 256];
        let pose = Pose {
            x: 3.3,
            y: 6.1,
            heading: 1.234,
        };
        r.render(&s, &pose, &mut a, &mut ids).unwrap();
        r.render(&s, &pose, &mut b, &mut ids).unwrap();
        assert_eq!(a, b);
        for pose in [
            Pose {
                x: 0.5,
                y: 0.5,
                heading: 0.3,
            },
            Pose {
                x: -50.0,
                y: 3.0,
                heading: 2.0,
            },
            Pose {
                x: 1.0,
                y: 1.0,
                heading: 0.0,
            },
        ] {
            r.render(&s, &pose, &mut a, &mut ids).unwrap();
        }
    }
}
