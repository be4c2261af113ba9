//! Navigation grids and geodesic distances for the 3D worlds.
//!
//! A [`NavGrid`] marks which cells of a regular grid an agent (a disc) can stand on. Geodesic
//! distances are shortest paths between the cells' *representative points* ([`NavGrid::rep`])
//! with straight, diagonal and (on grids built from a scene) knight moves (two cells along one
//! axis and one along the other), each costing the Euclidean length between the two points.
//! They are computed by a breadth-first search generalised to these costs (Dijkstra with a
//! binary heap): a breadth-first search would measure Manhattan-like lengths that overestimate
//! straight paths by up to 41%; 8-connected lengths overestimate them by up to 8%, 16-connected
//! ones by up to 3%.
//!
//! # Agreeing with the motion
//!
//! The grid must agree with the continuous motion it measures (forward steps of `res` that
//! land wherever the disc fits), or one small step can change the distance by metres: a gap the
//! agent walks through that the grid considers closed puts the distance on its far side at a
//! long detour (a diagonal squeeze between two obstacle corners whose side cells are both
//! blocked, a channel between a wall and a piece of furniture that no cell centre falls in).
//! So a grid built from a scene ([`NavGrid::from_scene`], [`NavGrid::link`]) tests everything
//! with the motion's collision test ([`Scene::collides`] of the agent disc) and exact segment
//! clearances:
//!
//! - a cell is *free* when the disc fits at its centre (episode starts, connectivity of
//!   furniture placement); its representative point is the centre;
//! - a cell whose centre is blocked but which holds points where the disc fits (a sliver along
//!   a wall, part of a narrow channel) is *walkable* too: its representative point is the one
//!   nearest the centre among a [`SUBGRID`] x [`SUBGRID`] lattice of points of the cell;
//! - a segment is *clear* ([`NavGrid::clear`]) when it keeps at least
//!   [`NavGrid::min_clearance`] (`sqrt(r^2 - (0.6 res)^2)`, 0.132 m for the agent radius
//!   `r` = 0.2 m) from every wall and object and, where it comes closer than `r`, does not
//!   squeeze through a gap narrower than the agent plus one lattice spacing. So it may cut into
//!   an obstacle corner's margin as deep as a chord of `1.2 res` between two points where the
//!   disc fits (a forward step of `res` between two such points keeps 0.156 m; arcs round a
//!   corner need chords a little longer than a cell), but never passes where the disc cannot
//!   (gaps whose open part is narrower than the lattice spacing, which the lattice may miss,
//!   count as closed). [`NavGrid::clear_of_gaps`] closes wider gaps too (for the oracle);
//! - a move between two walkable cells is allowed when the segment between their
//!   representative points is clear, whatever the cells it crosses.
//!
//! A point's distance ([`NavGrid::distance_in`]) is the smallest `field[cell] + |p - rep|` over
//! the walkable cells of the 5x5 block around it whose representative point `rep` it reaches
//! along a clear segment. A free point's own cell is walkable, so every free point has a nearby
//! anchor, and a forward step of `res` changes the distance by less than `2 res` (tested in
//! [`crate::house`]; sampled over hundreds of houses, the largest change is about 0.4 m for
//! `res` = 0.25 m: the step plus a resolution term).
//!
//! Grids drawn as text ([`NavGrid::from_ascii`]) have no scene: the free cells are the walkable
//! ones, straight moves join free cells, diagonal moves need both side cells free, there are no
//! knight moves, and [`NavGrid::distance_at`] looks points up without a visibility test.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::world::{dist_point_rect, Scene};

/// Distance value of unreachable cells.
pub const UNREACHABLE: f32 = f32::INFINITY;

/// Points per side of the lattice searched for a blocked cell's representative point.
pub const SUBGRID: usize = 8;

/// Half-side (cells) of the block of cells [`NavGrid::distance_in`] looks a point up in.
const LOOKUP: i32 = 2;

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
    /// `width * height` representative points (module docs): a free cell's centre, a point of
    /// a walkable blocked cell where the agent fits, NaN for a cell where it fits nowhere.
    /// Empty until [`NavGrid::link`] (no cell is walkable then).
    pub rep: Vec<[f32; 2]>,
    /// `width * height` masks: bit `k` set = the move [`MOVES`]`[k]` from the cell is allowed.
    /// Symmetric: move `k` from `a` to `b` is allowed exactly when move `k ^ 1` from `b` to `a`
    /// is. Empty until [`NavGrid::link`].
    pub links: Vec<u16>,
    /// The agent radius the moves were tested for (0 for text grids).
    pub agent_radius: f32,
}

/// Straight, diagonal and knight moves, in the bit order of [`NavGrid::links`]; move `k ^ 1`
/// is the reverse of move `k`.
pub const MOVES: [(i32, i32); 16] = [
    (1, 0),
    (-1, 0),
    (0, 1),
    (0, -1),
    (1, 1),
    (-1, -1),
    (1, -1),
    (-1, 1),
    (2, 1),
    (-2, -1),
    (1, 2),
    (-1, -2),
    (-1, 2),
    (1, -2),
    (-2, 1),
    (2, -1),
];

const STRAIGHT: [(i32, i32); 4] = [(1, 0), (-1, 0), (0, 1), (0, -1)];

/// An obstacle rectangle (min, max).
type Rect = ([f32; 2], [f32; 2]);

impl NavGrid {
    /// The navigation grid of a scene at resolution `res`: [`NavGrid::free_cells`], then
    /// [`NavGrid::link`].
    pub fn from_scene(scene: &Scene, res: f32, agent_radius: f32) -> NavGrid {
        let mut g = NavGrid::free_cells(scene, res, agent_radius);
        g.link(scene, agent_radius);
        g
    }

    /// The free cells of a scene at resolution `res` (a cell is free when a disc of
    /// `agent_radius` at its centre touches no wall and no object), without representative
    /// points or moves: call [`NavGrid::link`] before measuring distances.
    pub fn free_cells(scene: &Scene, res: f32, agent_radius: f32) -> NavGrid {
        let (lo, hi) = scene.extent();
        let width = (((hi[0] - lo[0]) / res).ceil() as usize).max(1);
        let height = (((hi[1] - lo[1]) / res).ceil() as usize).max(1);
        let mut g = NavGrid {
            origin: lo,
            res,
            width,
            height,
            free: vec![false; width * height],
            rep: Vec::new(),
            links: Vec::new(),
            agent_radius,
        };
        for cy in 0..height {
            for cx in 0..width {
                let c = g.centre(cx as i32, cy as i32);
                g.free[cy * width + cx] = !scene.collides(c, agent_radius);
            }
        }
        g
    }

    /// Compute [`NavGrid::rep`] and [`NavGrid::links`] from the free flags, a scene and an
    /// agent radius (module docs). Call again after changing `free` or the scene.
    pub fn link(&mut self, scene: &Scene, agent_radius: f32) {
        self.agent_radius = agent_radius;
        let n = self.free.len();
        self.rep = vec![[f32::NAN; 2]; n];
        // Lattice offsets from the cell centre, nearest first.
        let step = self.res / SUBGRID as f32;
        let at = |a: usize| (a as f32 + 0.5) * step - 0.5 * self.res;
        let mut offsets: Vec<[f32; 2]> = (0..SUBGRID * SUBGRID)
            .map(|k| [at(k % SUBGRID), at(k / SUBGRID)])
            .collect();
        offsets.sort_by(|a, b| a[0].hypot(a[1]).total_cmp(&b[0].hypot(b[1])));
        // Every point of a cell is within res / sqrt 2 of its centre.
        let hopeless = agent_radius - std::f32::consts::FRAC_1_SQRT_2 * self.res;
        let mut near: Vec<Rect> = Vec::new();
        for i in 0..n {
            let (cx, cy) = self.coords(i);
            let c = self.centre(cx, cy);
            if self.free[i] {
                self.rep[i] = c;
                continue;
            }
            obstacles_near(scene, c, agent_radius + 0.5 * self.res, &mut near);
            if near
                .iter()
                .any(|&(a, b)| dist_point_rect(c, a, b) < hopeless)
            {
                continue;
            }
            let fits = |q: [f32; 2]| {
                near.iter()
                    .all(|&(a, b)| dist_point_rect(q, a, b) >= agent_radius)
                    && !scene.collides(q, agent_radius)
            };
            if let Some(q) = offsets
                .iter()
                .map(|o| [c[0] + o[0], c[1] + o[1]])
                .find(|&q| fits(q))
            {
                self.rep[i] = q;
            }
        }
        self.link_by(MOVES.len(), |g, i, j| g.clear(scene, g.rep[i], g.rep[j]));
    }

    /// The least clearance (m) of a clear segment from walls and objects:
    /// `sqrt(r^2 - (0.6 res)^2)` for the agent radius `r`, at least 1 mm (module docs).
    pub fn min_clearance(&self) -> f32 {
        let (r, h) = (self.agent_radius, 0.6 * self.res);
        (r * r - h * h).max(0.0).sqrt().max(1e-3)
    }

    /// Whether the segment `a -> b` is clear in `scene` (module docs): it keeps at least
    /// [`NavGrid::min_clearance`] from every wall and object, and where it comes closer than
    /// the agent radius `r` it does not pass through a gap narrower than `2 r` plus one lattice
    /// spacing: at no inner checkpoint (at most `res / 2` apart) are the nearest obstacles on its
    /// two sides closer together than that.
    pub fn clear(&self, scene: &Scene, a: [f32; 2], b: [f32; 2]) -> bool {
        let r = self.agent_radius;
        self.clear_within(scene, a, b, r, 2.0 * r + self.res / SUBGRID as f32)
    }

    /// Whether the segment `a -> b` is clear ([`NavGrid::clear`]) and, besides, passes through
    /// no gap narrower than `2 r + margin` anywhere (`r` the agent radius; the gaps checked
    /// at its inner checkpoints).
    pub fn clear_of_gaps(&self, scene: &Scene, a: [f32; 2], b: [f32; 2], margin: f32) -> bool {
        let r = self.agent_radius;
        let margin = margin.max(self.res / SUBGRID as f32);
        // Both sides of a gap narrower than 2 r + margin are closer than r + margin / 2.
        self.clear_within(scene, a, b, r + 0.5 * margin, 2.0 * r + margin)
    }

    /// Whether `a -> b` keeps [`NavGrid::min_clearance`], and where it comes closer than
    /// `near` to an obstacle, no inner checkpoint lies in a gap narrower than `gap`.
    fn clear_within(&self, scene: &Scene, a: [f32; 2], b: [f32; 2], near: f32, gap: f32) -> bool {
        let c = scene.segment_clearance(a, b, near);
        if c >= near {
            return true;
        }
        if c < self.min_clearance() {
            return false;
        }
        let d = [b[0] - a[0], b[1] - a[1]];
        let n = ((2.0 * length(a, b) / self.res).ceil() as usize).max(2);
        (1..n).all(|k| {
            let t = k as f32 / n as f32;
            gap_across(scene, [a[0] + t * d[0], a[1] + t * d[1]], d, gap) >= gap
        })
    }

    /// The moves of [`NavGrid::links`] whose segments are also clear of gaps narrower than the
    /// agent plus `margin` ([`NavGrid::clear_of_gaps`]), as a links mask.
    pub fn links_clear_of_gaps(&self, scene: &Scene, margin: f32) -> Vec<u16> {
        let mut out = vec![0u16; self.links.len()];
        for (i, &mask) in self.links.iter().enumerate() {
            let (cx, cy) = self.coords(i);
            for (k, (dx, dy)) in MOVES.into_iter().enumerate().step_by(2) {
                if mask & (1 << k) != 0 {
                    let j = (cy + dy) as usize * self.width + (cx + dx) as usize;
                    if self.clear_of_gaps(scene, self.rep[i], self.rep[j], margin) {
                        out[i] |= 1 << k;
                        out[j] |= 1 << (k ^ 1);
                    }
                }
            }
        }
        out
    }

    /// Set `links` for the first `moves` of [`MOVES`] between walkable cells `i`, `j` by
    /// `allowed(grid, i, j)` (asked once per pair of cells).
    fn link_by(&mut self, moves: usize, allowed: impl Fn(&NavGrid, usize, usize) -> bool) {
        self.links.clear();
        self.links.resize(self.free.len(), 0);
        for i in 0..self.free.len() {
            if !self.walkable(i) {
                continue;
            }
            let (cx, cy) = self.coords(i);
            // Each pair from one end: the even moves, whose reverses are the odd ones.
            for k in (0..moves).step_by(2) {
                let (dx, dy) = MOVES[k];
                if let Some(j) = self.index(cx + dx, cy + dy) {
                    if self.walkable(j) && allowed(self, i, j) {
                        self.links[i] |= 1 << k;
                        self.links[j] |= 1 << (k ^ 1);
                    }
                }
            }
        }
    }

    /// A grid from text rows (`.` free, anything else blocked); the first row is the *top*
    /// (largest y), as a map is drawn; moves as the module docs say. For tests and examples.
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
        let mut g = NavGrid {
            origin: [0.0, 0.0],
            res,
            width,
            height,
            free,
            rep: Vec::new(),
            links: Vec::new(),
            agent_radius: 0.0,
        };
        g.rep = (0..g.free.len())
            .map(|i| {
                let (cx, cy) = g.coords(i);
                if g.free[i] {
                    g.centre(cx, cy)
                } else {
                    [f32::NAN; 2]
                }
            })
            .collect();
        g.link_by(8, |g, i, j| {
            let ((ax, ay), (bx, by)) = (g.coords(i), g.coords(j));
            ax == bx || ay == by || (g.is_free(bx, ay) && g.is_free(ax, by))
        });
        g
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

    /// Whether the cell of index `i` is walkable: it has a representative point.
    #[inline]
    pub fn walkable(&self, i: usize) -> bool {
        self.rep.get(i).is_some_and(|r| !r[0].is_nan())
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

    /// Geodesic distance (m) from every cell to the nearest source cell; cells that are not
    /// walkable or not reachable get [`UNREACHABLE`]. Sources that are not walkable or out of
    /// range are ignored.
    pub fn distance_field(&self, sources: &[usize]) -> Vec<f32> {
        self.distance_field_over(sources, &self.links)
    }

    /// [`NavGrid::distance_field`] over the moves of a links mask (a subset of
    /// [`NavGrid::links`], e.g. from [`NavGrid::links_clear_of_gaps`]).
    pub fn distance_field_over(&self, sources: &[usize], links: &[u16]) -> Vec<f32> {
        let mut dist = vec![UNREACHABLE; self.free.len()];
        let mut heap = BinaryHeap::new();
        for &s in sources {
            if self.walkable(s) && dist[s] != 0.0 {
                dist[s] = 0.0;
                heap.push(Reverse((0u32, s)));
            }
        }
        while let Some(Reverse((dbits, i))) = heap.pop() {
            let d = f32::from_bits(dbits);
            if d > dist[i] {
                continue;
            }
            let (cx, cy) = self.coords(i);
            let (mask, a) = (links.get(i).copied().unwrap_or(0), self.rep[i]);
            for (k, (dx, dy)) in MOVES.into_iter().enumerate() {
                if mask & (1 << k) == 0 {
                    continue;
                }
                // Linked cells exist and are walkable.
                let j = (cy + dy) as usize * self.width + (cx + dx) as usize;
                let b = self.rep[j];
                let nd = d + length(a, b);
                if nd < dist[j] {
                    dist[j] = nd;
                    // Non-negative f32 bit patterns order like the values.
                    heap.push(Reverse((nd.to_bits(), j)));
                }
            }
        }
        dist
    }

    /// Free cells 4-connected to `start` through free cells (a flood fill over straight moves
    /// between cell centres, which are always allowed: every cell reached has a finite distance
    /// from `start`).
    pub fn reachable(&self, start: usize) -> Vec<bool> {
        let mut seen = vec![false; self.free.len()];
        if start >= self.free.len() || !self.free[start] {
            return seen;
        }
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            let (cx, cy) = self.coords(i);
            for (dx, dy) in STRAIGHT {
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

    /// Geodesic distance of an arbitrary point to a field's sources, without a visibility test
    /// (for grids without a scene): the smallest `field[cell] + |p - rep(cell)|` over the
    /// cells of the 3x3 block around `p`'s cell; [`UNREACHABLE`] when none is reachable.
    pub fn distance_at(&self, field: &[f32], p: [f32; 2]) -> f32 {
        let (cx, cy) = self.cell_of(p);
        let mut best = UNREACHABLE;
        for y in cy - 1..=cy + 1 {
            for x in cx - 1..=cx + 1 {
                if let Some(i) = self.index(x, y) {
                    let f = field.get(i).copied().unwrap_or(UNREACHABLE);
                    if f < best && self.walkable(i) {
                        let r = self.rep[i];
                        best = best.min(f + length(p, r));
                    }
                }
            }
        }
        best
    }

    /// Geodesic distance of a point where the agent fits to a field's sources, in the scene
    /// the grid was linked for (module docs): the smallest `field[cell] + |p - rep(cell)|` over
    /// the cells of the 5x5 block around `p`'s cell whose representative point `p` reaches
    /// along a clear segment (over all of them when it reaches none); [`UNREACHABLE`] when
    /// none is reachable.
    pub fn distance_in(&self, scene: &Scene, field: &[f32], p: [f32; 2]) -> f32 {
        self.distance_in_by(field, p, |a, b| self.clear(scene, a, b))
    }

    /// [`NavGrid::distance_in`] over segments that are also clear of gaps narrower than the
    /// agent plus `margin` ([`NavGrid::clear_of_gaps`]).
    pub fn distance_in_clear_of_gaps(
        &self,
        scene: &Scene,
        field: &[f32],
        p: [f32; 2],
        margin: f32,
    ) -> f32 {
        self.distance_in_by(field, p, |a, b| self.clear_of_gaps(scene, a, b, margin))
    }

    /// [`NavGrid::distance_in`] with segments judged by `clear`.
    fn distance_in_by(
        &self,
        field: &[f32],
        p: [f32; 2],
        clear: impl Fn([f32; 2], [f32; 2]) -> bool,
    ) -> f32 {
        const N: usize = ((2 * LOOKUP + 1) * (2 * LOOKUP + 1)) as usize;
        let (cx, cy) = self.cell_of(p);
        // Candidates: values and cells.
        let (mut value, mut cell) = ([UNREACHABLE; N], [0usize; N]);
        let mut n = 0;
        for y in cy - LOOKUP..=cy + LOOKUP {
            for x in cx - LOOKUP..=cx + LOOKUP {
                let Some(i) = self.index(x, y) else {
                    continue;
                };
                let f = field.get(i).copied().unwrap_or(UNREACHABLE);
                // Finite only at walkable cells, whose representative points are numbers.
                if f.is_finite() {
                    value[n] = f + length(p, self.rep[i]);
                    cell[n] = i;
                    n += 1;
                }
            }
        }
        // The best candidate is nearly always clear: pick minima until one is.
        let mut first = None;
        loop {
            let (mut k, mut v) = (0, UNREACHABLE);
            for (j, &w) in value[..n].iter().enumerate() {
                if w < v {
                    (k, v) = (j, w);
                }
            }
            if v == UNREACHABLE {
                return first.unwrap_or(UNREACHABLE);
            }
            if clear(p, self.rep[cell[k]]) {
                return v;
            }
            first.get_or_insert(v);
            value[k] = UNREACHABLE;
        }
    }
}

/// The width of the gap across the line through `x` along `d`: the distance from `x` to the
/// nearest obstacle on its left plus that to the nearest on its right (judged by each
/// obstacle's point nearest `x`), or `limit` when that is at least `limit`.
fn gap_across(scene: &Scene, x: [f32; 2], d: [f32; 2], limit: f32) -> f32 {
    let mut near = [limit; 2];
    let mut side = |min: [f32; 2], max: [f32; 2]| {
        let (u, v) = (
            x[0].clamp(min[0], max[0]) - x[0],
            x[1].clamp(min[1], max[1]) - x[1],
        );
        let e = (u * u + v * v).sqrt();
        if e < limit {
            let s = usize::from(d[0] * v - d[1] * u < 0.0);
            near[s] = near[s].min(e);
        }
    };
    let (x0, y0) = scene.cell_of([x[0] - limit, x[1] - limit]);
    let (x1, y1) = scene.cell_of([x[0] + limit, x[1] + limit]);
    for cy in y0..=y1 {
        for cx in x0..=x1 {
            if scene.is_wall(cx, cy) {
                let (min, max) = scene.cell_rect(cx, cy);
                side(min, max);
            }
        }
    }
    for o in &scene.objects {
        side(o.min, o.max);
    }
    (near[0] + near[1]).min(limit)
}

/// Euclidean distance (`hypot` without its overflow care, which is slow).
#[inline]
fn length(a: [f32; 2], b: [f32; 2]) -> f32 {
    let (u, v) = (b[0] - a[0], b[1] - a[1]);
    (u * u + v * v).sqrt()
}

/// Wall cells and object footprints within `reach` (per axis) of `c` into `out` (cleared).
fn obstacles_near(scene: &Scene, c: [f32; 2], reach: f32, out: &mut Vec<Rect>) {
    out.clear();
    let (x0, y0) = scene.cell_of([c[0] - reach, c[1] - reach]);
    let (x1, y1) = scene.cell_of([c[0] + reach, c[1] + reach]);
    for cy in y0..=y1 {
        for cx in x0..=x1 {
            if scene.is_wall(cx, cy) {
                out.push(scene.cell_rect(cx, cy));
            }
        }
    }
    for o in &scene.objects {
        if o.min[0] <= c[0] + reach
            && o.max[0] >= c[0] - reach
            && o.min[1] <= c[1] + reach
            && o.max[1] >= c[1] - reach
        {
            out.push((o.min, o.max));
        }
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

    use crate::world::SceneObject;

    /// A 4 m x 4 m room (0.5 m border walls, so the floor is [0.5, 3.5]^2) with boxes.
    fn room(boxes: &[([f32; 2], [f32; 2])]) -> Scene {
        let mut s = Scene::bordered(8, 8, 0.5, [0.0, 0.0], [200, 200, 200]);
        for &(min, max) in boxes {
            s.objects.push(SceneObject {
                min,
                max,
                height: 1.0,
                colour: [255, 0, 0],
                category: 0,
            });
        }
        s
    }

    /// The same free cells linked as a text grid (diagonals only past two free side cells).
    fn as_text(g: &NavGrid) -> NavGrid {
        let rows: Vec<String> = (0..g.height)
            .rev()
            .map(|cy| {
                (0..g.width)
                    .map(|cx| if g.free[cy * g.width + cx] { '.' } else { '#' })
                    .collect()
            })
            .collect();
        let rows: Vec<&str> = rows.iter().map(|r| r.as_str()).collect();
        NavGrid::from_ascii(&rows, g.res)
    }

    #[test]
    fn a_diagonal_squeeze_between_two_corners_is_a_move() {
        // The corners of house 6 that seed 737 walked through: cells (7, 8) and (8, 7) are
        // free, their side cells (7, 7) and (8, 8) are not (each centre is within 0.2 m of a
        // box), but the disc passes diagonally between the corners (1.834, 1.751) and
        // (2.092, 2.271) with 0.28 m to spare.
        let s = room(&[([1.0, 1.0], [1.834, 1.751]), ([2.092, 2.271], [3.0, 3.0])]);
        let g = NavGrid::from_scene(&s, 0.25, 0.2);
        assert!(g.is_free(7, 8) && g.is_free(8, 7));
        assert!(!g.is_free(7, 7) && !g.is_free(8, 8));
        let (a, b) = (g.index(8, 7).unwrap(), g.index(7, 8).unwrap());
        let d = g.distance_field(&[a]);
        assert!(
            (d[b] - 0.25 * std::f32::consts::SQRT_2).abs() < 1e-5,
            "{}",
            d[b]
        );
        // Without the squeeze the way round a box is metres longer.
        let t = as_text(&g);
        assert!(t.distance_field(&[a])[b] > 2.0);
        // Along the squeeze, distances change by the distance walked.
        let (p, q) = (g.centre(8, 7), g.centre(7, 8));
        let mut prev = g.distance_in(&s, &d, p);
        for k in 1..=10 {
            let t = k as f32 / 10.0;
            let x = [p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])];
            assert!(!s.collides(x, 0.2));
            let now = g.distance_in(&s, &d, x);
            assert!(
                (now - prev).abs() <= 0.0354 + 1e-4,
                "{prev} -> {now} at {x:?}"
            );
            prev = now;
        }
    }

    #[test]
    fn a_channel_no_cell_centre_falls_in_is_walkable() {
        // A box 0.55 m from the west wall (x = 0.5) leaves a channel x in [0.7, 0.85] where the
        // disc fits; cell centres lie at x = 0.625 and 0.875, outside it.
        let s = room(&[([1.05, 1.0], [2.0, 3.0])]);
        let g = NavGrid::from_scene(&s, 0.25, 0.2);
        let (south, north) = (g.index(3, 3).unwrap(), g.index(3, 12).unwrap());
        assert!(g.free[south] && g.free[north]);
        for cy in 5..=10 {
            let i = g.index(3, cy).unwrap();
            assert!(!g.free[i] && g.walkable(i), "cell (3, {cy})");
            assert!((0.7..=0.85).contains(&g.rep[i][0]), "{:?}", g.rep[i]);
            assert!(!s.collides(g.rep[i], 0.2));
        }
        // Through the channel, about its length; round the box, metres more.
        let d = g.distance_field(&[south]);
        assert!(d[north] < 2.5, "{}", d[north]);
        assert!(as_text(&g).distance_field(&[south])[north] > 4.0);
        // Walking up the channel, the distance grows by the distance walked (plus a few cm).
        let mut prev = g.distance_in(&s, &d, g.centre(3, 3));
        for k in 1..=9 {
            let x = [0.78, 0.875 + 0.25 * k as f32];
            assert!(!s.collides(x, 0.2));
            let now = g.distance_in(&s, &d, x);
            assert!(
                now - prev <= 0.25 + 0.05 && now - prev >= 0.15,
                "{prev} -> {now}"
            );
            prev = now;
        }
    }

    #[test]
    fn a_gap_narrower_than_the_agent_stays_closed() {
        // The box 0.39 m from the west wall: no way through for a disc of diameter 0.4, so the
        // way from south to north goes round the box's east side.
        let s = room(&[([0.89, 1.0], [2.0, 3.0])]);
        let g = NavGrid::from_scene(&s, 0.25, 0.2);
        let (south, north) = (g.index(2, 2).unwrap(), g.index(2, 13).unwrap());
        let d = g.distance_field(&[south]);
        assert!(d[north] > 4.0, "{}", d[north]);
        // Points at the channel's mouths see no shortcut through it either.
        let near_north = [0.7, 3.3];
        assert!(!s.collides(near_north, 0.2));
        assert!(g.distance_in(&s, &d, near_north) > 4.0);
        assert!(!g.clear(&s, [0.7, 0.7], [0.7, 3.3]));
        // A segment beside the box keeping 0.15 m from it, in the open, is clear.
        assert!(g.clear(&s, [2.15, 0.7], [2.15, 3.3]));
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
