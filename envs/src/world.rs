//! Geometry of the 3D worlds: a wall grid, box-shaped objects on the floor, agent poses and
//! collision tests. Shared by the renderer, the navigation grid and the map drawer.
//!
//! Coordinates: metres, `x` to the east, `y` to the north, headings in radians counter-
//! clockwise from `+x`. "Turn left" increases the heading.

/// An RGB colour.
pub type Rgb = [u8; 3];

/// An agent pose on the floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pose {
    /// East coordinate (m).
    pub x: f32,
    /// North coordinate (m).
    pub y: f32,
    /// Heading (rad, counter-clockwise from +x).
    pub heading: f32,
}

impl Pose {
    /// Unit heading vector.
    #[inline]
    pub fn dir(&self) -> [f32; 2] {
        [self.heading.cos(), self.heading.sin()]
    }
}

/// Wrap an angle to `(-pi, pi]`.
#[inline]
pub fn wrap_angle(a: f32) -> f32 {
    let two_pi = std::f32::consts::TAU;
    let mut r = a % two_pi;
    if r <= -std::f32::consts::PI {
        r += two_pi;
    } else if r > std::f32::consts::PI {
        r -= two_pi;
    }
    r
}

/// An axis-aligned box standing on the floor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SceneObject {
    /// South-west corner of the footprint (m).
    pub min: [f32; 2],
    /// North-east corner of the footprint (m).
    pub max: [f32; 2],
    /// Height (m).
    pub height: f32,
    /// Base colour.
    pub colour: Rgb,
    /// Category index (meaning is up to the environment).
    pub category: u8,
}

impl SceneObject {
    /// Footprint centre.
    pub fn centre(&self) -> [f32; 2] {
        [
            0.5 * (self.min[0] + self.max[0]),
            0.5 * (self.min[1] + self.max[1]),
        ]
    }

    /// Euclidean distance from a point to the footprint (0 inside).
    #[inline]
    pub fn distance(&self, p: [f32; 2]) -> f32 {
        dist_point_rect(p, self.min, self.max)
    }
}

/// Euclidean distance from `p` to the rectangle `[min, max]` (0 inside).
#[inline]
pub fn dist_point_rect(p: [f32; 2], min: [f32; 2], max: [f32; 2]) -> f32 {
    let dx = (min[0] - p[0]).max(0.0).max(p[0] - max[0]);
    let dy = (min[1] - p[1]).max(0.0).max(p[1] - max[1]);
    (dx * dx + dy * dy).sqrt()
}

/// Euclidean distance from the segment `a -> b` to the rectangle `[min, max]` (0 when they
/// meet): without meeting, the nearest pair is an end of the segment and the rectangle, or a
/// corner of the rectangle and the segment.
#[inline]
pub fn dist_segment_rect(a: [f32; 2], b: [f32; 2], min: [f32; 2], max: [f32; 2]) -> f32 {
    if segment_meets_box(a, b, min, max) {
        return 0.0;
    }
    let ends = dist_point_rect(a, min, max).min(dist_point_rect(b, min, max));
    [min, max, [min[0], max[1]], [max[0], min[1]]]
        .iter()
        .fold(ends, |d, &c| d.min(dist_point_segment(c, a, b)))
}

/// Whether the segment `a -> b` meets the closed box `[min, max]` (slab test).
#[inline]
fn segment_meets_box(a: [f32; 2], b: [f32; 2], min: [f32; 2], max: [f32; 2]) -> bool {
    let (mut t0, mut t1) = (0.0f32, 1.0f32);
    for k in 0..2 {
        let d = b[k] - a[k];
        if d == 0.0 {
            if a[k] < min[k] || a[k] > max[k] {
                return false;
            }
        } else {
            let (u, v) = ((min[k] - a[k]) / d, (max[k] - a[k]) / d);
            t0 = t0.max(u.min(v));
            t1 = t1.min(u.max(v));
            if t0 > t1 {
                return false;
            }
        }
    }
    true
}

/// Euclidean distance from `p` to the segment `a -> b`.
#[inline]
pub fn dist_point_segment(p: [f32; 2], a: [f32; 2], b: [f32; 2]) -> f32 {
    let d = [b[0] - a[0], b[1] - a[1]];
    let len2 = d[0] * d[0] + d[1] * d[1];
    let t = if len2 > 0.0 {
        (((p[0] - a[0]) * d[0] + (p[1] - a[1]) * d[1]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (u, v) = (p[0] - a[0] - t * d[0], p[1] - a[1] - t * d[1]);
    (u * u + v * v).sqrt()
}

/// A world: walls on a square-cell grid plus objects.
#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    /// World position of the grid's corner (cell (0, 0) spans `origin .. origin + cell`).
    pub origin: [f32; 2],
    /// Cell side (m).
    pub cell: f32,
    /// Cells along x.
    pub width: usize,
    /// Cells along y.
    pub height: usize,
    /// `width * height` flags, row-major by y: true = wall. Outside the grid counts as wall.
    pub walls: Vec<bool>,
    /// Per cell: the colour a wall face shows when seen from this (empty) cell.
    pub face_colour: Vec<Rgb>,
    /// Objects (boxes) standing on the floor. At most 255 (ids are `index + 1` in `u8`).
    pub objects: Vec<SceneObject>,
    /// Wall height (m).
    pub wall_height: f32,
}

impl Scene {
    /// An empty grid of `width x height` cells with a one-cell wall border.
    pub fn bordered(width: usize, height: usize, cell: f32, origin: [f32; 2], colour: Rgb) -> Self {
        let mut walls = vec![false; width * height];
        for y in 0..height {
            for x in 0..width {
                if x == 0 || y == 0 || x + 1 == width || y + 1 == height {
                    walls[y * width + x] = true;
                }
            }
        }
        Scene {
            origin,
            cell,
            width,
            height,
            walls,
            face_colour: vec![colour; width * height],
            objects: Vec::new(),
            wall_height: 2.5,
        }
    }

    /// Whether cell `(cx, cy)` is a wall (outside the grid counts as wall).
    #[inline]
    pub fn is_wall(&self, cx: i32, cy: i32) -> bool {
        if cx < 0 || cy < 0 || cx as usize >= self.width || cy as usize >= self.height {
            return true;
        }
        self.walls[cy as usize * self.width + cx as usize]
    }

    /// Set a cell's wall flag (ignored outside the grid).
    pub fn set_wall(&mut self, cx: usize, cy: usize, wall: bool) {
        if cx < self.width && cy < self.height {
            self.walls[cy * self.width + cx] = wall;
        }
    }

    /// The cell containing a world point.
    #[inline]
    pub fn cell_of(&self, p: [f32; 2]) -> (i32, i32) {
        (
            ((p[0] - self.origin[0]) / self.cell).floor() as i32,
            ((p[1] - self.origin[1]) / self.cell).floor() as i32,
        )
    }

    /// World rectangle of a cell.
    #[inline]
    pub fn cell_rect(&self, cx: i32, cy: i32) -> ([f32; 2], [f32; 2]) {
        let x0 = self.origin[0] + cx as f32 * self.cell;
        let y0 = self.origin[1] + cy as f32 * self.cell;
        ([x0, y0], [x0 + self.cell, y0 + self.cell])
    }

    /// World extent of the grid: (min, max).
    pub fn extent(&self) -> ([f32; 2], [f32; 2]) {
        (
            self.origin,
            [
                self.origin[0] + self.width as f32 * self.cell,
                self.origin[1] + self.height as f32 * self.cell,
            ],
        )
    }

    /// Whether a disc of radius `r` at `p` overlaps a wall cell.
    pub fn disc_hits_wall(&self, p: [f32; 2], r: f32) -> bool {
        let (x0, y0) = self.cell_of([p[0] - r, p[1] - r]);
        let (x1, y1) = self.cell_of([p[0] + r, p[1] + r]);
        for cy in y0..=y1 {
            for cx in x0..=x1 {
                if self.is_wall(cx, cy) {
                    let (a, b) = self.cell_rect(cx, cy);
                    if dist_point_rect(p, a, b) < r {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Whether a disc of radius `r` at `p` overlaps a wall or an object.
    pub fn collides(&self, p: [f32; 2], r: f32) -> bool {
        if !p[0].is_finite() || !p[1].is_finite() {
            return true;
        }
        self.disc_hits_wall(p, r) || self.objects.iter().any(|o| o.distance(p) < r)
    }

    /// The smallest distance from the segment `a -> b` to a wall cell or an object footprint,
    /// or `limit` when none is closer than `limit` (exact, not sampled; 0 for a segment that
    /// touches one, or has a non-finite end).
    pub fn segment_clearance(&self, a: [f32; 2], b: [f32; 2], limit: f32) -> f32 {
        if !(a[0].is_finite() && a[1].is_finite() && b[0].is_finite() && b[1].is_finite()) {
            return 0.0;
        }
        let lo = [a[0].min(b[0]) - limit, a[1].min(b[1]) - limit];
        let hi = [a[0].max(b[0]) + limit, a[1].max(b[1]) + limit];
        let (x0, y0) = self.cell_of(lo);
        let (x1, y1) = self.cell_of(hi);
        let mut best = limit;
        for cy in y0..=y1 {
            for cx in x0..=x1 {
                if self.is_wall(cx, cy) {
                    let (rmin, rmax) = self.cell_rect(cx, cy);
                    best = best.min(dist_segment_rect(a, b, rmin, rmax));
                }
            }
        }
        for o in &self.objects {
            if o.min[0] <= hi[0] && o.max[0] >= lo[0] && o.min[1] <= hi[1] && o.max[1] >= lo[1] {
                best = best.min(dist_segment_rect(a, b, o.min, o.max));
            }
        }
        best
    }

    /// Whether the straight segment `a -> b` at floor level crosses a wall cell (sampled every
    /// quarter cell; for coarse line-of-sight tests, not for rendering).
    pub fn segment_hits_wall(&self, a: [f32; 2], b: [f32; 2]) -> bool {
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        let n = ((len / (0.25 * self.cell)).ceil() as usize).max(1);
        (0..=n).any(|i| {
            let t = i as f32 / n as f32;
            let (cx, cy) = self.cell_of([a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])]);
            self.is_wall(cx, cy)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collisions_with_walls_and_objects() {
        let mut s = Scene::bordered(6, 6, 1.0, [0.0, 0.0], [200, 200, 200]);
        s.objects.push(SceneObject {
            min: [3.0, 3.0],
            max: [3.5, 3.5],
            height: 1.0,
            colour: [255, 0, 0],
            category: 0,
        });
        assert!(!s.collides([2.0, 2.0], 0.4));
        assert!(s.collides([1.3, 2.0], 0.4)); // border wall spans x in [0, 1]
        assert!(s.collides([2.7, 3.2], 0.4)); // object
        assert!(!s.collides([2.5, 2.0], 0.4));
        assert!(s.collides([f32::NAN, 2.0], 0.4));
        assert!(s.segment_hits_wall([2.0, 2.0], [2.0, 5.5]));
        assert!(!s.segment_hits_wall([2.0, 2.0], [4.5, 4.5]));
        // Exact segment clearance: the object spans [3, 3.5]^2, the border walls [0, 1] and
        // [5, 6] along each axis.
        let cl = |a: [f32; 2], b: [f32; 2]| s.segment_clearance(a, b, 5.0);
        // 1 m from the left and bottom walls.
        assert!((cl([2.0, 2.0], [2.0, 4.0]) - 1.0).abs() < 1e-6);
        // Touching the corner (3.5, 3.5).
        assert_eq!(cl([2.5, 4.5], [4.5, 2.5]), 0.0);
        // Through the object.
        assert_eq!(cl([3.2, 2.0], [3.2, 4.0]), 0.0);
        // Passing its corner (3, 3) at distance 0.6 / sqrt 2.
        assert!((cl([2.4, 3.0], [3.0, 2.4]) - 0.6 / 2f32.sqrt()).abs() < 1e-5);
        // Beside its edge x = 3 at distance 0.3.
        assert!((cl([2.7, 2.0], [2.7, 4.5]) - 0.3).abs() < 1e-5);
        // Only obstacles closer than the limit count.
        assert_eq!(s.segment_clearance([2.7, 2.0], [2.7, 4.5], 0.25), 0.25);
        assert_eq!(cl([f32::NAN, 2.0], [2.0, 2.0]), 0.0);
        assert!((dist_point_segment([1.0, 1.0], [0.0, 0.0], [2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!((dist_point_segment([3.0, 0.0], [0.0, 0.0], [2.0, 0.0]) - 1.0).abs() < 1e-6);
        assert!(
            (dist_segment_rect([0.0, 2.0], [2.0, 2.0], [0.5, 0.0], [1.0, 1.5]) - 0.5).abs() < 1e-6
        );
    }

    #[test]
    fn wrap() {
        assert!((wrap_angle(3.0 * std::f32::consts::PI) - std::f32::consts::PI).abs() < 1e-5);
        assert!((wrap_angle(-0.5) + 0.5).abs() < 1e-6);
        assert!((wrap_angle(7.0) - (7.0 - std::f32::consts::TAU)).abs() < 1e-5);
    }
}
