//! Navigation grids and geodesic distances for the 3D worlds.
//!
//! A [`NavGrid`] marks which cells of a regular grid an agent (a disc) can stand on. Geodesic
//! distances are shortest paths on that grid, 8-connected with step costs `res` (straight) and
//! `res * sqrt 2` (diagonal, allowed only when both side cells are free, so paths never cut
//! corners). They are computed by a breadth-first search generalised to these two costs
//! (Dijkstra with a binary heap): a breadth-first search over the same grid would measure
//! Manhattan-like lengths that overestimate straight paths by up to 41%.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::world::Scene;

/// Distance value of unreachable cells.
pub const UNREACHABLE: f32 = f32::INFINITY;

/// A grid of free/blocked cells.
#[derive(Debug, Clone, PartialEq)]
pub struct NavGrid {
    /// World position of cell (0, 0)'s corner.
    pub origin: [f32; 2],
    /// Cell side (m).
    pub res: f32,
    /// Cells along x.
    pub width: usize,
    /// Cells along y.
    pub height: usize,
    /// `width * height` flags, row-major by y: true = an agent can stand at the cell centre.
    pub free: Vec<bool>,
}

const NEIGHBOURS: [(i32, i32); 8] = [
    (1, 0),
    (-1, 0),
    (0, 1),
    (0, -1),
    (1, 1),
    (1, -1),
    (-1, 1),
    (-1, -1),
];

impl NavGrid {
    /// The navigation grid of a scene at resolution `res`: a cell is free when a disc of
    /// `agent_radius` at its centre touches no wall and no object.
    pub fn from_scene(scene: &Scene, res: f32, agent_radius: f32) -> NavGrid {
        let (lo, hi) = scene.extent();
        let width = (((hi[0] - lo[0]) / res).ceil() as usize).max(1);
        let height = (((hi[1] - lo[1]) / res).ceil() as usize).max(1);
        let mut g = NavGrid {
            origin: lo,
            res,
            width,
            height,
            free: vec![false; width * height],
        };
        for cy in 0..height {
            for cx in 0..width {
                let c = g.centre(cx as i32, cy as i32);
                g.free[cy * width + cx] = !scene.collides(c, agent_radius);
            }
        }
        g
    }

    /// A grid from text rows (`.` free, anything else blocked); the first row is the *top*
    /// (largest y), as a map is drawn. For tests and examples.
    pub fn from_ascii(rows: &[&str], res: f32) -> NavGrid {
        let height = rows.len();
        let width = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut free = vec![false; width * height];
        for (i, row) in rows.iter().enumerate() {
            let cy = height - 1 - i;
            for (cx, ch) in row.chars().enumerate() {
                free[cy * width + cx] = ch == '.';
            }
        }
        NavGrid {
            origin: [0.0, 0.0],
            res,
            width,
            height,
            free,
        }
    }

    /// Index of a cell, or `None` outside the grid.
    #[inline]
    pub fn index(&self, cx: i32, cy: i32) -> Option<usize> {
        if cx < 0 || cy < 0 || cx as usize >= self.width || cy as usize >= self.height {
            None
        } else {
            Some(cy as usize * self.width + cx as usize)
        }
    }

    /// Whether a cell is free (outside = blocked).
    #[inline]
    pub fn is_free(&self, cx: i32, cy: i32) -> bool {
        self.index(cx, cy).is_some_and(|i| self.free[i])
    }

    /// The cell containing a world point.
    #[inline]
    pub fn cell_of(&self, p: [f32; 2]) -> (i32, i32) {
        (
            ((p[0] - self.origin[0]) / self.res).floor() as i32,
            ((p[1] - self.origin[1]) / self.res).floor() as i32,
        )
    }

    /// World centre of a cell.
    #[inline]
    pub fn centre(&self, cx: i32, cy: i32) -> [f32; 2] {
        [
            self.origin[0] + (cx as f32 + 0.5) * self.res,
            self.origin[1] + (cy as f32 + 0.5) * self.res,
        ]
    }

    /// Cell coordinates of an index.
    #[inline]
    pub fn coords(&self, i: usize) -> (i32, i32) {
        ((i % self.width) as i32, (i / self.width) as i32)
    }

    /// Geodesic distance (m) from every cell to the nearest source cell; blocked and unreachable
    /// cells get [`UNREACHABLE`]. Sources that are blocked or out of range are ignored.
    pub fn distance_field(&self, sources: &[usize]) -> Vec<f32> {
        let mut dist = vec![UNREACHABLE; self.free.len()];
        let mut heap = BinaryHeap::new();
        for &s in sources {
            if s < dist.len() && self.free[s] && dist[s] != 0.0 {
                dist[s] = 0.0;
                heap.push(Reverse((0u32, s)));
            }
        }
        let diag = self.res * std::f32::consts::SQRT_2;
        while let Some(Reverse((dbits, i))) = heap.pop() {
            let d = f32::from_bits(dbits);
            if d > dist[i] {
                continue;
            }
            let (cx, cy) = self.coords(i);
            for (dx, dy) in NEIGHBOURS {
                let (nx, ny) = (cx + dx, cy + dy);
                let Some(j) = self.index(nx, ny) else {
                    continue;
                };
                if !self.free[j] {
                    continue;
                }
                let cost = if dx != 0 && dy != 0 {
                    if !self.is_free(cx + dx, cy) || !self.is_free(cx, cy + dy) {
                        continue;
                    }
                    diag
                } else {
                    self.res
                };
                let nd = d + cost;
                if nd < dist[j] {
                    dist[j] = nd;
                    // Non-negative f32 bit patterns order like the values.
                    heap.push(Reverse((nd.to_bits(), j)));
                }
            }
        }
        dist
    }

    /// Free cells reachable from `start` (8-connected without corner cutting, which connects
    /// exactly the cells that 4-connectivity connects; computed by a 4-connected flood fill).
    pub fn reachable(&self, start: usize) -> Vec<bool> {
        let mut seen = vec![false; self.free.len()];
        if start >= self.free.len() || !self.free[start] {
            return seen;
        }
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            let (cx, cy) = self.coords(i);
            for (dx, dy) in &NEIGHBOURS[..4] {
                if let Some(j) = self.index(cx + dx, cy + dy) {
                    if self.free[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        seen
    }

    /// Geodesic distance of an arbitrary point to a field's sources: the minimum over free cells
    /// of the 3x3 block around `p`'s cell of `field[cell] + |p - centre(cell)|` (so it is
    /// continuous along straight moves); [`UNREACHABLE`] when no neighbouring cell is reachable.
    pub fn distance_at(&self, field: &[f32], p: [f32; 2]) -> f32 {
        let (cx, cy) = self.cell_of(p);
        let mut best = UNREACHABLE;
        for dy in -1..=1 {
            for dx in -1..=1 {
                if let Some(i) = self.index(cx + dx, cy + dy) {
                    let f = field.get(i).copied().unwrap_or(UNREACHABLE);
                    if f.is_finite() {
                        let c = self.centre(cx + dx, cy + dy);
                        let e = ((p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2)).sqrt();
                        best = best.min(f + e);
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geodesic_distance_on_a_hand_made_map() {
        // A wall with a gap at the right: from the bottom-left to the top-left the path must go
        // around it.
        let rows = [
            ".......", // y = 4, source at (0, 4)
            ".......", "#####.#", // y = 2: wall, gap at x = 5
            ".......", ".......", // y = 0
        ];
        let g = NavGrid::from_ascii(&rows, 1.0);
        let src = g.index(0, 4).unwrap();
        let d = g.distance_field(&[src]);
        let at = |x: i32, y: i32| d[g.index(x, y).unwrap()];
        assert_eq!(at(0, 4), 0.0);
        assert_eq!(at(3, 4), 3.0);
        // (1, 3): one diagonal.
        assert!((at(1, 3) - std::f32::consts::SQRT_2).abs() < 1e-5);
        // Wall cells are unreachable.
        assert!(at(0, 2).is_infinite());
        // Through the gap (5, 2), whose diagonal neighbours are cut off by the wall corners:
        // (0,0) -> (5,1): 4 straight + 1 diagonal; (5,1) -> (5,2) -> (5,3): 2;
        // (5,3) -> (0,4): 4 straight + 1 diagonal.
        let want = 4.0 + 2.0 + 4.0 + 2.0 * std::f32::consts::SQRT_2;
        assert!((at(0, 0) - want).abs() < 1e-4, "{} vs {want}", at(0, 0));
        // Far more than the straight-line distance (4).
        assert!(at(0, 0) > 4.0 * 3.0);
        // distance_at of a cell centre equals the field there; nearby points are continuous.
        let c = g.centre(0, 0);
        assert!((g.distance_at(&d, c) - want).abs() < 1e-4);
        let p = [c[0] + 0.1, c[1]];
        assert!((g.distance_at(&d, p) - want).abs() < 0.15);
    }

    #[test]
    fn unreachable_region_and_reachability() {
        let g = NavGrid::from_ascii(&["..#..", "..#..", "..#.."], 0.5);
        let r = g.reachable(g.index(0, 0).unwrap());
        assert!(r[g.index(1, 2).unwrap()]);
        assert!(!r[g.index(3, 0).unwrap()]);
        let d = g.distance_field(&[g.index(4, 1).unwrap()]);
        assert!(d[g.index(0, 0).unwrap()].is_infinite());
        assert!((d[g.index(3, 1).unwrap()] - 0.5).abs() < 1e-6);
        assert!(g.distance_at(&d, [0.2, 0.2]).is_infinite());
    }
}
