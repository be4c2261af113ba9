//! PNG output and top-down maps for people debugging environments.
//!
//! Maps are drawn north-up: image row 0 is the largest `y`, column 0 the smallest `x`.

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use crate::grid::{GridRules, GridTask};
use crate::world::{Rgb, Scene};
use crate::EnvError;

/// An RGB image (row-major HWC).
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width * height * 3` bytes.
    pub data: Vec<u8>,
}

impl RgbImage {
    /// A filled image.
    pub fn new(width: usize, height: usize, fill: Rgb) -> Self {
        let mut data = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            data.extend_from_slice(&fill);
        }
        RgbImage {
            width,
            height,
            data,
        }
    }

    /// Set a pixel (ignored outside the image).
    #[inline]
    pub fn put(&mut self, x: i64, y: i64, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.data[i..i + 3].copy_from_slice(&c);
        }
    }

    /// The pixel at `(x, y)`, if inside.
    pub fn get(&self, x: usize, y: usize) -> Option<Rgb> {
        if x < self.width && y < self.height {
            let i = (y * self.width + x) * 3;
            Some([self.data[i], self.data[i + 1], self.data[i + 2]])
        } else {
            None
        }
    }

    /// Fill a rectangle of pixels `[x0, x1) x [y0, y1)`.
    pub fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0..y1 {
            for x in x0..x1 {
                self.put(x, y, c);
            }
        }
    }

    /// Draw a line of the given thickness (pixels) between two pixel positions.
    pub fn line(&mut self, a: [f32; 2], b: [f32; 2], c: Rgb, thickness: i64) {
        let len = ((b[0] - a[0]).abs())
            .max((b[1] - a[1]).abs())
            .ceil()
            .max(1.0) as usize;
        for i in 0..=len {
            let t = i as f32 / len as f32;
            let x = (a[0] + t * (b[0] - a[0])).round() as i64;
            let y = (a[1] + t * (b[1] - a[1])).round() as i64;
            let h = thickness / 2;
            self.rect(x - h, y - h, x - h + thickness, y - h + thickness, c);
        }
    }

    /// Write as an 8-bit RGB PNG.
    pub fn save(&self, path: &Path) -> Result<(), EnvError> {
        write_png(path, self.width, self.height, &self.data)
    }
}

/// Write an 8-bit RGB PNG (`rgb` is `width * height * 3` bytes, HWC).
pub fn write_png(path: &Path, width: usize, height: usize, rgb: &[u8]) -> Result<(), EnvError> {
    if width == 0 || height == 0 || rgb.len() != width * height * 3 {
        return Err(EnvError::Io(format!(
            "cannot write {}: {}x{} image with {} bytes",
            path.display(),
            width,
            height,
            rgb.len()
        )));
    }
    let err = |e: &dyn std::fmt::Display| EnvError::Io(format!("writing {}: {e}", path.display()));
    let file = File::create(path).map_err(|e| err(&e))?;
    let mut enc = png::Encoder::new(BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(|e| err(&e))?;
    w.write_image_data(rgb).map_err(|e| err(&e))?;
    w.finish().map_err(|e| err(&e))?;
    Ok(())
}

fn lighten(c: Rgb) -> Rgb {
    [
        ((c[0] as u32 + 255) / 2) as u8,
        ((c[1] as u32 + 255) / 2) as u8,
        ((c[2] as u32 + 255) / 2) as u8,
    ]
}

/// A top-down map of a 3D scene at `px_per_m` pixels per metre: walls dark grey, floor in the
/// rooms' (lightened) colours, objects in their colours with dark outlines, and the episodes'
/// paths (one polyline per episode) in red with a green start and a blue end marker.
pub fn scene_map(scene: &Scene, paths: &[Vec<[f32; 2]>], px_per_m: f32) -> RgbImage {
    let (lo, hi) = scene.extent();
    let width = (((hi[0] - lo[0]) * px_per_m).ceil() as usize).clamp(1, 4096);
    let height = (((hi[1] - lo[1]) * px_per_m).ceil() as usize).clamp(1, 4096);
    let mut img = RgbImage::new(width, height, [0, 0, 0]);
    let to_px = |p: [f32; 2]| [(p[0] - lo[0]) * px_per_m, (hi[1] - p[1]) * px_per_m];
    for y in 0..height {
        for x in 0..width {
            let wx = lo[0] + (x as f32 + 0.5) / px_per_m;
            let wy = hi[1] - (y as f32 + 0.5) / px_per_m;
            let (cx, cy) = scene.cell_of([wx, wy]);
            let c = if scene.is_wall(cx, cy) {
                [70, 70, 70]
            } else {
                lighten(scene.face_colour[cy as usize * scene.width + cx as usize])
            };
            img.put(x as i64, y as i64, c);
        }
    }
    for o in &scene.objects {
        let a = to_px([o.min[0], o.max[1]]);
        let b = to_px([o.max[0], o.min[1]]);
        let (x0, y0, x1, y1) = (
            a[0].round() as i64,
            a[1].round() as i64,
            b[0].round() as i64,
            b[1].round() as i64,
        );
        img.rect(x0, y0, x1.max(x0 + 1), y1.max(y0 + 1), [20, 20, 20]);
        img.rect(
            x0 + 1,
            y0 + 1,
            (x1 - 1).max(x0 + 1),
            (y1 - 1).max(y0 + 1),
            o.colour,
        );
    }
    for path in paths {
        for w in path.windows(2) {
            img.line(to_px(w[0]), to_px(w[1]), [220, 0, 0], 2);
        }
        if let (Some(&s), Some(&e)) = (path.first(), path.last()) {
            let s = to_px(s);
            let e = to_px(e);
            img.rect(
                s[0] as i64 - 3,
                s[1] as i64 - 3,
                s[0] as i64 + 4,
                s[1] as i64 + 4,
                [0, 170, 0],
            );
            img.rect(
                e[0] as i64 - 2,
                e[1] as i64 - 2,
                e[0] as i64 + 3,
                e[1] as i64 + 3,
                [0, 60, 255],
            );
        }
    }
    img
}

/// A top-down map of a grid world (`cell_px` pixels per cell): the goal (door) gold, the key
/// cyan, visited cells shaded by visit count, and the path in red.
pub fn grid_map(
    rules: &GridRules,
    task: &GridTask,
    paths: &[Vec<(i32, i32)>],
    cell_px: usize,
) -> RgbImage {
    let n = rules.side() as usize;
    let cp = cell_px.max(4);
    let mut img = RgbImage::new(n * cp, n * cp, [30, 30, 40]);
    let mut visits = vec![0u32; n * n];
    for p in paths.iter().flatten() {
        if let Some(v) = visits.get_mut(p.0 as usize * n + p.1 as usize) {
            *v += 1;
        }
    }
    let maxv = visits.iter().copied().max().unwrap_or(1).max(1);
    let origin = |x: i32, y: i32| ((x as usize * cp) as i64, ((n - 1 - y as usize) * cp) as i64);
    for x in 0..n as i32 {
        for y in 0..n as i32 {
            let v = visits[x as usize * n + y as usize];
            let shade = 60 + (120 * v / maxv) as u8;
            let mut c = [shade, shade, shade + 10];
            if (x, y) == task.goal {
                c = [230, 190, 30];
            } else if Some((x, y)) == task.key {
                c = [30, 210, 230];
            }
            let (px, py) = origin(x, y);
            img.rect(px + 1, py + 1, px + cp as i64 - 1, py + cp as i64 - 1, c);
        }
    }
    let centre = |p: (i32, i32)| {
        let (px, py) = origin(p.0, p.1);
        [px as f32 + cp as f32 / 2.0, py as f32 + cp as f32 / 2.0]
    };
    for path in paths {
        for w in path.windows(2) {
            img.line(centre(w[0]), centre(w[1]), [220, 0, 0], 2);
        }
    }
    img
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::SceneObject;

    #[test]
    fn map_shows_walls_objects_and_path() {
        let mut s = Scene::bordered(6, 6, 1.0, [0.0, 0.0], [200, 100, 100]);
        s.objects.push(SceneObject {
            min: [3.0, 3.0],
            max: [4.0, 4.0],
            height: 1.0,
            colour: [0, 0, 255],
            category: 0,
        });
        let img = scene_map(&s, &[vec![[1.5, 1.5], [4.5, 1.5]]], 10.0);
        assert_eq!((img.width, img.height), (60, 60));
        assert_eq!(img.get(5, 5), Some([70, 70, 70])); // border wall (top-left)
        assert_eq!(img.get(35, 25), Some([0, 0, 255])); // object centre (3.5, 3.5) -> row 25
        assert_eq!(img.get(30, 45), Some([220, 0, 0])); // path at y = 1.5 -> row 45
        assert_eq!(img.get(25, 15), Some(lighten([200, 100, 100]))); // floor
    }

    #[test]
    fn png_roundtrip_and_errors() {
        let dir = std::env::temp_dir().join(format!("envs_png_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.png");
        let img = RgbImage::new(3, 2, [1, 2, 3]);
        img.save(&p).unwrap();
        let dec = png::Decoder::new(std::io::BufReader::new(File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (3, 2));
        assert_eq!(&buf[..info.buffer_size()], &img.data[..]);
        assert!(write_png(&p, 3, 3, &img.data).is_err());
        assert!(write_png(&dir.join("no/such/dir.png"), 3, 2, &img.data).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
