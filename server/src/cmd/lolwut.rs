//! LOLWUT: a drawing and the version, as Redis answers it. With no
//! VERSION (or one other than 5 and 6) the answer is the version line
//! alone, as Redis 7.0's. `VERSION 5` draws a grid of squares that come
//! apart row by row, after Georg Nees's plotter drawing "Schotter" (1968),
//! in Braille dots; `VERSION 6` draws a skyline in four shades of grey
//! with terminal colours. Both are anykv's own drawings (random each
//! time, as Redis's); the arguments, their limits and errors are Redis's.

use rand::Rng;

use super::Ctx;
use crate::util::parse_i64;

/// The tallest drawing VERSION 5 makes, in dots (1000 lines of text):
/// Redis has no such bound (`VERSION 5 1000 1 200` allocates 800 MB
/// there), but here one call would stall every database on the thread.
const MAX_DOTS_HIGH: usize = 4000;

/// `LOLWUT [VERSION v] [args...]`.
pub fn lolwut(ctx: &mut Ctx) {
    let mut version = 7u32;
    let mut from = 1;
    if ctx.args.len() >= 3 && ctx.args[1].eq_ignore_ascii_case(b"version") {
        let Some(v) = ctx.arg_i64(2) else { return };
        // (Redis reads it as an unsigned int.)
        version = v as u32;
        from = 3;
    }
    // A drawing's own numbers (3 for version 5, 2 for version 6; any
    // further arguments are ignored, as by Redis), then clamped.
    let wanted = match version {
        5 => 3,
        6 => 2,
        _ => 0,
    };
    let mut nums = Vec::new();
    for a in ctx.args[from..].iter().take(wanted) {
        match parse_i64(a) {
            Some(n) => nums.push(n),
            None => return ctx.err(super::errors::NOT_INTEGER),
        }
    }
    let arg =
        |i: usize, default: i64, max: i64| nums.get(i).copied().unwrap_or(default).clamp(1, max);
    let tail = format!("Redis ver. {}\n", crate::shared::REDIS_VERSION);
    let text = match version {
        5 => {
            let art = schotter(arg(0, 66, 1000), arg(1, 8, 200), arg(2, 12, 200));
            format!("{art}\nAfter Georg Nees, \"Schotter\", 1968. {tail}")
        }
        6 => {
            let art = skyline(arg(0, 80, 1000), arg(1, 20, 1000));
            format!("{art}A city at night, in four greys. {tail}")
        }
        _ => tail,
    };
    ctx.out.verbatim(text.as_bytes());
}

/// A bitmap drawn in Braille characters: each character is 2x4 dots.
struct Canvas {
    w: usize,
    h: usize,
    dots: Vec<bool>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Canvas {
        Canvas {
            w,
            h,
            dots: vec![false; w * h],
        }
    }

    fn set(&mut self, x: i64, y: i64) {
        if x >= 0 && y >= 0 && (x as usize) < self.w && (y as usize) < self.h {
            self.dots[y as usize * self.w + x as usize] = true;
        }
    }

    /// A straight line (Bresenham's).
    fn line(&mut self, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64)) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            self.set(x0, y0);
            if x0 == x1 && y0 == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x0 += sx;
            }
            if e2 <= dx {
                err += dx;
                y0 += sy;
            }
        }
    }

    /// One line of text per 4 rows of dots. A Braille character's dots
    /// are bits: 1, 2, 3 and 7 down the left column, 4, 5, 6 and 8 down
    /// the right (Unicode's U+2800 block).
    fn render(&self) -> String {
        const LEFT: [u32; 4] = [0x01, 0x02, 0x04, 0x40];
        const RIGHT: [u32; 4] = [0x08, 0x10, 0x20, 0x80];
        let mut out = String::new();
        for cy in (0..self.h).step_by(4) {
            for cx in (0..self.w).step_by(2) {
                let mut bits = 0;
                for dy in 0..4 {
                    let y = cy + dy;
                    if y >= self.h {
                        break;
                    }
                    if self.dots[y * self.w + cx] {
                        bits |= LEFT[dy];
                    }
                    if cx + 1 < self.w && self.dots[y * self.w + cx + 1] {
                        bits |= RIGHT[dy];
                    }
                }
                out.push(char::from_u32(0x2800 + bits).unwrap_or(' '));
            }
            out.push('\n');
        }
        out
    }
}

/// `cols` characters wide: `per_row` squares across, `per_col` down, each
/// row turned and shifted more at random than the one above it.
fn schotter(cols: i64, per_row: i64, per_col: i64) -> String {
    let width = cols as usize * 2;
    let pad = if width > 4 { 2 } else { 0 };
    // Redis's sizes: a square's side in dots, not rounded.
    let side = (width - 2 * pad) as f64 / per_row as f64;
    let height = ((side * per_col as f64) as usize + 2 * pad).min(MAX_DOTS_HIGH);
    let left = pad as f64;
    let mut c = Canvas::new(width, height);
    let mut rng = rand::rng();
    for row in 0..per_col {
        // 0 at the top, 1 at the bottom: how far this row comes apart.
        let disorder = row as f64 / per_col as f64;
        for col in 0..per_row {
            let cx = left + side * (col as f64 + 0.5);
            let cy = pad as f64 + side * (row as f64 + 0.5);
            let turn = rng.random_range(-1.0..=1.0) * disorder * std::f64::consts::FRAC_PI_4;
            let dx = rng.random_range(-1.0..=1.0) * disorder * side / 3.0;
            let dy = rng.random_range(-1.0..=1.0) * disorder * side / 3.0;
            let half = side / 2.0;
            let corner = |k: usize| {
                let (sx, sy) = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)][k];
                let (x, y) = (sx * half, sy * half);
                let (s, co) = turn.sin_cos();
                (
                    (cx + dx + x * co - y * s).round() as i64,
                    (cy + dy + x * s + y * co).round() as i64,
                )
            };
            for k in 0..4 {
                c.line(corner(k), corner((k + 1) % 4));
            }
        }
    }
    c.render()
}

/// The four greys, darkest first, as terminal colour codes (foreground and
/// background the same, so a space shows the colour).
const GREYS: [(u8, u8); 4] = [(30, 40), (90, 100), (37, 47), (97, 107)];

/// A skyline `cols` x `rows` cells: a pale sky, three rows of buildings
/// (nearer is darker and lower), lit windows on the nearest.
fn skyline(cols: i64, rows: i64) -> String {
    let (w, h) = (cols as usize, rows as usize);
    let mut px = vec![3u8; w * h];
    let mut rng = rand::rng();
    for (layer, shade) in [(0usize, 2u8), (1, 1), (2, 0)] {
        let mut x = 0;
        while x < w {
            let bw = rng.random_range(3..=8usize).min(w - x);
            // Farther rows are taller, so they show above the nearer.
            let max = (h * 3 / 4).saturating_sub(layer * h / 6).max(1);
            let top = h - rng.random_range((max / 3).max(1)..=max);
            for yy in top..h {
                for xx in x..x + bw {
                    px[yy * w + xx] = shade;
                }
            }
            if shade == 0 {
                // Lit windows on the nearest buildings.
                for yy in (top + 1..h.saturating_sub(1)).step_by(2) {
                    for xx in (x + 1..(x + bw).saturating_sub(1)).step_by(2) {
                        if rng.random_bool(0.3) {
                            px[yy * w + xx] = 3;
                        }
                    }
                }
            }
            x += bw + rng.random_range(0..=2usize) * (2 - layer.min(2)) / 2;
        }
    }
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            let (fg, bg) = GREYS[px[y * w + x] as usize];
            out.push_str(&format!("\x1b[0;{fg};{bg}m \x1b[0m"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schotter_is_a_grid_coming_apart() {
        let art = schotter(20, 3, 2);
        let lines: Vec<&str> = art.lines().collect();
        assert!(lines.iter().all(|l| l.chars().count() == 20), "{art}");
        assert!(
            art.chars().any(|c| c != '\u{2800}' && c != '\n'),
            "something is drawn"
        );
        // The top row is square and straight: a full horizontal edge.
        assert!(
            lines.iter().any(|l| l.matches('\u{2824}').count() >= 10
                || l.matches('\u{2809}').count() >= 10
                || l.matches('\u{2812}').count() >= 10
                || l.matches('\u{28c0}').count() >= 10),
            "{art}"
        );
    }

    #[test]
    fn skyline_has_its_size_and_shades() {
        let art = skyline(30, 8);
        let lines: Vec<&str> = art.lines().collect();
        assert_eq!(lines.len(), 8);
        for l in &lines {
            assert_eq!(l.matches("\x1b[0m").count(), 30);
        }
        // Sky on top, the darkest buildings at the bottom.
        assert!(lines[0].contains("97;107m"));
        assert!(lines[7].contains("30;40m"));
    }
}
