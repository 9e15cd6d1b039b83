//! The report: a `README.md` with one Markdown table per group of results,
//! and a PNG bar chart of the ratios per group plus one of them all.
//!
//! The charts are drawn with plotters' bitmap backend into memory and
//! written with the `png` crate; their text is laid
//! out and rasterised here with `ab_glyph` (plotters' own `ab_glyph` text
//! ignores each glyph's side bearing, which spaces letters unevenly). It
//! needs a TrueType font, read at run time from the usual places (no
//! fontconfig or freetype); without one the charts still have their bars and
//! reference line, and the README says the text is missing.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ab_glyph::{Font as _, FontVec, PxScale, ScaleFont as _};
use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::results::{Record, Size};

/// What the report says about the run besides the results.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    /// When the suite ran, as the caller likes to print it.
    pub(crate) date: String,
    /// The machine, for example `"2 cores, Linux 6.8, ..."`.
    pub(crate) machine: String,
    /// How much was run.
    pub(crate) size: Size,
    /// The command line that produced the results.
    pub(crate) command: String,
}

/// Writes `README.md`, one `<group>.png` per group and `summary.png` into
/// `dir`, creating it if missing. A missing font only costs the charts their
/// text; any other failure (writing a file, encoding a PNG) is returned.
pub(crate) fn write_report(dir: &Path, records: &[Record], meta: &Meta) -> io::Result<()> {
    write_report_with(dir, records, meta, ChartFont::get())
}

/// [`write_report`] with the font decided by the caller: `None` draws the
/// charts without text (the tests use it to cover the no-font case).
fn write_report_with(dir: &Path, records: &[Record], meta: &Meta, font: Option<&ChartFont>) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let groups = groups(records);
    let text = font.map(|f| &f.font);
    for (group, file) in &groups {
        let rows: Vec<(String, f64)> =
            records.iter().filter(|r| r.group == *group).map(|r| (r.name.clone(), r.ratio())).collect();
        draw_chart(&dir.join(file), &format!("trio vs tokio: {group}"), &rows, text)?;
    }
    let all: Vec<(String, f64)> = records.iter().map(|r| (format!("{}: {}", r.group, r.name), r.ratio())).collect();
    draw_chart(&dir.join(SUMMARY_PNG), "trio vs tokio: all workloads", &all, text)?;
    std::fs::write(dir.join("README.md"), readme(records, meta, &groups, font.map(|f| f.path.as_path())))
}

/// The summary chart's file name (no group gets it, see [`groups`]).
const SUMMARY_PNG: &str = "summary.png";

/// The groups in the order they first appear, each with its chart's file
/// name: the group with anything but ASCII letters, digits, `-` and `_`
/// replaced by `_`, made unique (and never `summary.png`).
fn groups(records: &[Record]) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    for r in records {
        if out.iter().any(|(g, _)| *g == r.group) {
            continue;
        }
        let mut stem: String =
            r.group.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        if stem.is_empty() {
            stem.push_str("group");
        }
        let taken = |name: &str| name == SUMMARY_PNG || out.iter().any(|(_, f)| f == name);
        let mut file = format!("{stem}.png");
        // At most one candidate per group already named, plus `summary.png`.
        for n in 2..=out.len() + 2 {
            if !taken(&file) {
                break;
            }
            file = format!("{stem}-{n}.png");
        }
        out.push((r.group, file));
    }
    out
}

// --- README.md -------------------------------------------------------------

/// The Markdown document.
fn readme(records: &[Record], meta: &Meta, groups: &[(&'static str, String)], font: Option<&Path>) -> String {
    let mut md = String::new();
    let size = match meta.size {
        Size::Full => "full",
        Size::Quick => "quick (`--quick`: fewer rounds, shorter windows)",
        Size::Tiny => "tiny (`--tiny`: every workload once at a tiny size; the figures mean nothing)",
    };
    md.push_str("# trio vs tokio: benchmark report\n\n");
    let _ = writeln!(md, "- Date: {}", one_line(&meta.date));
    let _ = writeln!(md, "- Machine: {}", one_line(&meta.machine));
    let _ = writeln!(md, "- Size: {size}");
    let _ = writeln!(md, "- Command: {}\n", code_span(&meta.command));
    md.push_str(
        "Absolute figures depend on the machine; the ratios are what to read. The ratio is trio/tokio for \
         times and sizes and tokio/trio for rates, so below 1 means trio is faster or leaner. Ratios of 1 \
         or less are in **bold**; n/a means a figure was 0.\n\n",
    );
    match font {
        Some(path) => {
            let _ = writeln!(md, "Chart text is set in `{}`.\n", path.display());
        }
        None => md.push_str(
            "The charts have no text (no labels, values or axis figures): no TrueType font was found (set \
             `TRIO_BENCH_FONT` to a `.ttf` file). Each bar is one row of its group's table, in order; green \
             bars (ratio 1 or less) are trio's, red ones tokio's, the dark line is 1.\n\n",
        ),
    }
    if records.is_empty() {
        md.push_str("No results.\n");
        return md;
    }
    let _ = writeln!(md, "Overall: {}\n", tally(records.iter()));
    let _ = writeln!(md, "![All workloads: trio/tokio ratios]({SUMMARY_PNG})\n");
    for (group, file) in groups {
        let rows: Vec<&Record> = records.iter().filter(|r| r.group == *group).collect();
        let python = rows.iter().any(|r| r.python_trio.is_some());
        let monoio = rows.iter().any(|r| r.monoio.is_some());
        let _ = writeln!(md, "## {}\n", one_line(group));
        let _ = writeln!(md, "{}\n", tally(rows.iter().copied()));
        md.push_str("| workload | trio | tokio | unit | ratio |");
        if python {
            md.push_str(" Python Trio | Python/trio |");
        }
        if monoio {
            md.push_str(" monoio | trio/monoio |");
        }
        md.push_str("\n|---|---:|---:|---|---:|");
        if python {
            md.push_str("---:|---:|");
        }
        if monoio {
            md.push_str("---:|---:|");
        }
        md.push('\n');
        for r in rows {
            let ratio = r.ratio();
            let ratio = if ratio <= 1.0 { format!("**{}**", sig(ratio)) } else { sig(ratio) };
            let _ =
                write!(md, "| {} | {} | {} | {} | {ratio} |", cell(&r.name), sig(r.trio), sig(r.tokio), cell(r.unit));
            if python {
                match r.python_trio {
                    Some(p) => {
                        // How many times slower Python Trio is: its time over
                        // ours, or our rate over its.
                        let slower = if r.higher_is_better { r.trio / p } else { p / r.trio };
                        let slower = if slower.is_finite() { format!("{}×", sig(slower)) } else { "n/a".to_owned() };
                        let _ = write!(md, " {} | {slower} |", sig(p));
                    }
                    None => md.push_str(" – | – |"),
                }
            }
            if monoio {
                match r.monoio {
                    Some(m) => {
                        // Oriented as the main ratio: below 1, trio is better.
                        let ratio = if r.higher_is_better { m / r.trio } else { r.trio / m };
                        let ratio = match ratio {
                            x if !x.is_finite() => "n/a".to_owned(),
                            x if x <= 1.0 => format!("**{}**", sig(x)),
                            x => sig(x),
                        };
                        let _ = write!(md, " {} | {ratio} |", sig(m));
                    }
                    None => md.push_str(" – | – |"),
                }
            }
            md.push('\n');
        }
        if monoio {
            md.push_str(
                "\nIn the rows with a monoio figure, the trio column is trio on its io_uring driver (against \
                 tokio, and against monoio on its io_uring driver); trio/monoio is oriented like the main ratio \
                 (below 1: trio is faster or leaner).\n",
            );
        }
        if python {
            md.push_str(
                "\nPython/trio: how many times slower Python Trio is than trio (its time over ours, or our rate \
                 over its).\n",
            );
        }
        let _ = writeln!(md, "\n![{}: trio/tokio ratios]({file})\n", one_line(group));
    }
    md
}

/// "trio is faster or leaner in 3 of 5 workloads (geometric mean of the
/// ratios 0.812)."
fn tally<'a>(records: impl Iterator<Item = &'a Record>) -> String {
    let ratios: Vec<f64> = records.map(Record::ratio).collect();
    let wins = ratios.iter().filter(|r| **r <= 1.0).count();
    let logs: Vec<f64> = ratios.iter().filter(|r| r.is_finite() && **r > 0.0).map(|r| r.ln()).collect();
    let mut out = format!(
        "trio is as fast or leaner in {wins} of {} workload{}",
        ratios.len(),
        if ratios.len() == 1 { "" } else { "s" }
    );
    if !logs.is_empty() {
        let mean = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
        let _ = write!(out, " (geometric mean of the ratios: {})", sig(mean));
    }
    out.push('.');
    out
}

/// A figure to 3 significant digits (whole numbers from 100 up, exponent
/// form for the very large and very small); `n/a` for NaN and infinities.
fn sig(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let a = x.abs();
    if a == 0.0 {
        "0".to_owned()
    } else if !(1e-3..1e9).contains(&a) {
        format!("{x:.2e}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else {
        let decimals = (2.0 - a.log10().floor()).max(0.0) as usize;
        format!("{x:.decimals$}")
    }
}

/// Text on one line (for list items and headings).
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Text for a table cell: on one line, with `|` escaped.
fn cell(s: &str) -> String {
    one_line(s).replace('|', "\\|")
}

/// A Markdown code span holding `s`, fenced with more backticks than `s`
/// has in a row.
fn code_span(s: &str) -> String {
    let s = one_line(s);
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if longest > 0 { " " } else { "" };
    format!("{fence}{pad}{s}{pad}{fence}")
}

// --- Fonts -------------------------------------------------------------------

/// Fonts to try first, in order (the first that parses wins).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];

/// Folders searched (a few levels deep) when none of [`FONT_PATHS`] is there.
const FONT_DIRS: &[&str] = &["/usr/share/fonts", "/usr/local/share/fonts", "/System/Library/Fonts", "/Library/Fonts"];

/// The font the charts' text is set in, and where it came from.
struct ChartFont {
    /// The file it was read from.
    path: PathBuf,
    /// The parsed font.
    font: FontVec,
}

impl std::fmt::Debug for ChartFont {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChartFont").field("path", &self.path).finish_non_exhaustive()
    }
}

impl ChartFont {
    /// The font, found and parsed on the first call: `$TRIO_BENCH_FONT`,
    /// then [`FONT_PATHS`], then any `.ttf` or `.otf` under [`FONT_DIRS`]
    /// (regular sans-serif faces first). `None` if there is none.
    fn get() -> Option<&'static ChartFont> {
        static FONT: OnceLock<Option<ChartFont>> = OnceLock::new();
        FONT.get_or_init(|| {
            let first: Vec<PathBuf> = std::env::var_os("TRIO_BENCH_FONT")
                .map(PathBuf::from)
                .into_iter()
                .chain(FONT_PATHS.iter().map(PathBuf::from))
                .collect();
            first.into_iter().find_map(ChartFont::load).or_else(|| scan_fonts().into_iter().find_map(ChartFont::load))
        })
        .as_ref()
    }

    /// The font file at `path`, if it can be read and parsed.
    fn load(path: PathBuf) -> Option<ChartFont> {
        let bytes = std::fs::read(&path).ok()?;
        let font = FontVec::try_from_vec(bytes).ok()?;
        Some(ChartFont { path, font })
    }
}

/// Font files under [`FONT_DIRS`], at most 4 levels down and 5000 entries
/// looked at, regular sans-serif faces first.
fn scan_fonts() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs: Vec<(PathBuf, usize)> = FONT_DIRS.iter().map(|d| (PathBuf::from(d), 0)).collect();
    let mut budget = 5000usize;
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            let path = entry.path();
            if path.is_dir() {
                if depth < 4 {
                    dirs.push((path, depth + 1));
                }
            } else if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf") || e.eq_ignore_ascii_case("otf")) {
                found.push(path);
            }
        }
    }
    let rank = |p: &PathBuf| {
        let name = p.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        let styled = ["bold", "italic", "oblique", "mono", "light", "condensed"].iter().any(|s| name.contains(s));
        (!name.contains("sans"), styled)
    };
    found.sort_by_key(|p| (rank(p), p.clone()));
    found
}

// --- Charts ------------------------------------------------------------------

/// Every chart's width in pixels.
const WIDTH: u32 = 1000;
/// Height of one bar's row.
const ROW: u32 = 34;
/// Space above the bars (title and subtitle).
const TOP: u32 = 64;
/// Space below the bars (tick figures and legend).
const BOTTOM: u32 = 64;
/// Space right of the plot, for the value of a bar that reaches the end.
const RIGHT: i32 = 80;

/// A chart's height for `rows` bars (an empty chart has room for one).
fn chart_height(rows: usize) -> u32 {
    TOP + ROW * rows.max(1) as u32 + BOTTOM
}

/// Trio's colour: bars with a ratio of 1 or less.
const GOOD: RGBColor = RGBColor(46, 139, 87);
/// Tokio's colour: bars with a ratio above 1.
const BAD: RGBColor = RGBColor(205, 82, 72);
/// Text.
const INK: RGBColor = RGBColor(30, 30, 30);
/// Secondary text.
const GREY: RGBColor = RGBColor(100, 100, 100);
/// Grid lines.
const GRID: RGBColor = RGBColor(215, 215, 215);
/// Every other row's background.
const STRIPE: RGBColor = RGBColor(246, 246, 246);

/// How ratios map onto the x axis.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    /// From 0 to `max`; bars start at 0.
    Linear {
        /// The right end.
        max: f64,
        /// Distance between grid lines.
        step: f64,
    },
    /// Decades from `lo` to `hi`; bars start at 1.
    Log {
        /// The left end, a power of 10.
        lo: f64,
        /// The right end, a power of 10.
        hi: f64,
    },
}

impl Scale {
    /// Linear from 0 unless the ratios (and 1) span more than 16 times,
    /// then logarithmic. NaN and infinities are left out.
    fn choose(ratios: &[f64]) -> Scale {
        let finite = ratios.iter().copied().filter(|r| r.is_finite() && *r >= 0.0);
        let hi = finite.clone().fold(1.0, f64::max);
        let lo = finite.filter(|r| *r > 0.0).fold(1.0, f64::min);
        if hi / lo > 16.0 {
            Scale::Log { lo: 10f64.powi(lo.log10().floor() as i32), hi: 10f64.powi(hi.log10().ceil() as i32) }
        } else {
            let raw = hi * 1.1 / 6.0;
            let decade = 10f64.powi(raw.log10().floor() as i32);
            let step =
                [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * decade).find(|s| *s >= raw).unwrap_or(10.0 * decade);
            Scale::Linear { max: (hi * 1.1 / step).ceil() * step, step }
        }
    }

    /// Where `r` is, from 0 (left end) to 1 (right end), clamped.
    fn frac(self, r: f64) -> f64 {
        let f = match self {
            Scale::Linear { max, .. } => r / max,
            Scale::Log { lo, hi } => (r.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln()),
        };
        f.clamp(0.0, 1.0)
    }

    /// Where bars start.
    fn base(self) -> f64 {
        match self {
            Scale::Linear { .. } => 0.0,
            Scale::Log { .. } => 1.0,
        }
    }

    /// The grid lines: every step, or every decade (with 2 and 5 between
    /// when there are at most 3 decades).
    fn ticks(self) -> Vec<f64> {
        match self {
            Scale::Linear { max, step } => {
                let n = (max / step).round() as usize;
                (0..=n.min(20)).map(|i| i as f64 * step).collect()
            }
            Scale::Log { lo, hi } => {
                let decades = (hi / lo).log10().round() as i32;
                let mut out = Vec::new();
                for d in 0..decades.clamp(0, 30) {
                    let base = lo * 10f64.powi(d);
                    out.push(base);
                    if decades <= 3 {
                        out.extend([2.0 * base, 5.0 * base]);
                    }
                }
                out.push(hi);
                out
            }
        }
    }

    /// A tick's figure: the shortest decimal form.
    fn tick_label(x: f64) -> String {
        let rounded = (x * 1e9).round() / 1e9;
        if rounded >= 1e6 { format!("{rounded:.0e}") } else { format!("{rounded}") }
    }
}

/// A plotters error as an I/O error.
fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing a chart: {e}"))
}

/// Where text is anchored horizontally.
#[derive(Clone, Copy, Debug)]
enum Align {
    /// At its left end.
    Left,
    /// At its middle.
    Center,
    /// At its right end.
    Right,
}

/// Text on a chart: where to draw it and in which font.
struct Pen<'a, 'b> {
    /// The chart.
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    /// The font.
    font: &'a FontVec,
}

impl Pen<'_, '_> {
    /// The width in pixels of `s` at `size` pixels.
    fn width(&self, s: &str, size: f32) -> i32 {
        let font = self.font.as_scaled(PxScale::from(size));
        let mut width = 0.0;
        let mut prev = None;
        for c in s.chars() {
            let id = font.glyph_id(c);
            if let Some(p) = prev {
                width += font.kern(p, id);
            }
            width += font.h_advance(id);
            prev = Some(id);
        }
        width.ceil() as i32
    }

    /// Draws `s` at `size` pixels: anchored at `x` by `align`, and with its
    /// top at `y` or, with `middle`, its capitals centred on `y`.
    fn text(
        &self,
        s: &str,
        size: f32,
        color: RGBColor,
        (x, y): (i32, i32),
        align: Align,
        middle: bool,
    ) -> io::Result<()> {
        let scale = PxScale::from(size);
        let scaled = self.font.as_scaled(scale);
        let width = self.width(s, size) as f32;
        let mut caret = match align {
            Align::Left => x as f32,
            Align::Center => x as f32 - width / 2.0,
            Align::Right => x as f32 - width,
        };
        // Capitals are about 0.72 of the scale tall in most sans-serif faces.
        let baseline = if middle { y as f32 + 0.36 * size } else { y as f32 + scaled.ascent() };
        let mut pixels: Vec<((i32, i32), f32)> = Vec::new();
        let mut prev = None;
        for c in s.chars() {
            let id = scaled.glyph_id(c);
            if let Some(p) = prev {
                caret += scaled.kern(p, id);
            }
            prev = Some(id);
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(caret, baseline));
            caret += scaled.h_advance(id);
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let bounds = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    if coverage > 0.0 {
                        pixels.push(((bounds.min.x as i32 + gx as i32, bounds.min.y as i32 + gy as i32), coverage));
                    }
                });
            }
        }
        for (at, coverage) in pixels {
            self.root.draw_pixel(at, &color.mix(f64::from(coverage.min(1.0)))).map_err(io_err)?;
        }
        Ok(())
    }
}

/// Draws `rows` (label, ratio) as horizontal bars into the PNG at `path`.
/// Without a font, only the bars, grid and reference line.
fn draw_chart(path: &Path, title: &str, rows: &[(String, f64)], font: Option<&FontVec>) -> io::Result<()> {
    let height = chart_height(rows.len());
    let mut pixels = vec![0u8; WIDTH as usize * height as usize * 3];
    draw_bars(&mut pixels, height, title, rows, font)?;
    write_png(path, WIDTH, height, &pixels)
}

/// Draws the chart of [`draw_chart`] into `pixels` (RGB, [`WIDTH`] by
/// `height`).
fn draw_bars(
    pixels: &mut [u8],
    height: u32,
    title: &str,
    rows: &[(String, f64)],
    font: Option<&FontVec>,
) -> io::Result<()> {
    let root = BitMapBackend::with_buffer(pixels, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(io_err)?;
    let pen = font.map(|font| Pen { root: &root, font });
    const LABEL: f32 = 15.0;
    const VALUE: f32 = 14.0;
    const SMALL: f32 = 13.0;

    // The labels' column: as wide as the widest label, within limits (longer
    // labels are cut).
    let max_label = 420;
    let mut labels: Vec<String> = Vec::with_capacity(rows.len());
    let mut label_w = 0;
    for (label, _) in rows {
        let mut label = label.clone();
        if let Some(pen) = &pen {
            // One character less per round, at most as many rounds as characters.
            for _ in 0..label.chars().count() {
                if pen.width(&label, LABEL) <= max_label {
                    break;
                }
                if label.pop() == Some('…') {
                    label.pop();
                }
                label.push('…');
            }
            label_w = label_w.max(pen.width(&label, LABEL));
        }
        labels.push(label);
    }
    let left = if pen.is_some() { label_w + 24 } else { 24 };
    let right = WIDTH as i32 - RIGHT;
    let top = TOP as i32;
    let bottom = top + (ROW * rows.len().max(1) as u32) as i32;
    let row = ROW as i32;

    let ratios: Vec<f64> = rows.iter().map(|(_, r)| *r).collect();
    let scale = Scale::choose(&ratios);
    let x = |r: f64| left + ((right - left) as f64 * scale.frac(r)).round() as i32;

    // Stripes, grid, axis.
    for i in (1..rows.len()).step_by(2) {
        let y = top + row * i as i32;
        root.draw(&Rectangle::new([(0, y), (WIDTH as i32, y + row)], STRIPE.filled())).map_err(io_err)?;
    }
    for t in scale.ticks() {
        let tx = x(t);
        root.draw(&PathElement::new(vec![(tx, top), (tx, bottom + 4)], GRID.stroke_width(1))).map_err(io_err)?;
        if let Some(pen) = &pen {
            pen.text(&Scale::tick_label(t), SMALL, GREY, (tx, bottom + 8), Align::Center, false)?;
        }
    }
    root.draw(&PathElement::new(vec![(left, bottom), (right, bottom)], GREY.stroke_width(1))).map_err(io_err)?;

    // Bars.
    let base = x(scale.base());
    for (i, ((_, ratio), label)) in rows.iter().zip(&labels).enumerate() {
        let y0 = top + row * i as i32;
        let mid = y0 + row / 2;
        if let Some(pen) = &pen {
            pen.text(label, LABEL, INK, (left - 12, mid), Align::Right, true)?;
        }
        if !ratio.is_finite() || *ratio < 0.0 {
            if let Some(pen) = &pen {
                pen.text("n/a", VALUE, GREY, (base + 8, mid), Align::Left, true)?;
            }
            continue;
        }
        let end = x(*ratio);
        let color = if *ratio <= 1.0 { GOOD } else { BAD };
        // At least 2 pixels, so a ratio at the base still shows.
        let (a, b) = if end >= base { (base, end.max(base + 2)) } else { (end.min(base - 2), base) };
        root.draw(&Rectangle::new([(a, y0 + 7), (b, y0 + row - 7)], color.filled())).map_err(io_err)?;
        if let Some(pen) = &pen {
            let value = sig(*ratio);
            if end >= base {
                pen.text(&value, VALUE, INK, (b + 6, mid), Align::Left, true)?;
            } else if a - left >= pen.width(&value, VALUE) + 8 {
                pen.text(&value, VALUE, INK, (a - 6, mid), Align::Right, true)?;
            } else {
                pen.text(&value, VALUE, INK, (base + 6, mid), Align::Left, true)?;
            }
        }
    }

    // The reference line at 1, over the bars.
    let one = x(1.0);
    root.draw(&Rectangle::new([(one - 1, top - 4), (one + 1, bottom + 4)], INK.filled())).map_err(io_err)?;

    if let Some(pen) = &pen {
        let log = if matches!(scale, Scale::Log { .. }) { "; log scale" } else { "" };
        pen.text(title, 22.0, INK, (20, 10), Align::Left, false)?;
        let subtitle = format!(
            "ratio: trio/tokio for times and sizes, tokio/trio for rates; below 1 = trio faster or leaner{log}"
        );
        pen.text(&subtitle, VALUE, GREY, (20, 40), Align::Left, false)?;
        let legend_y = height as i32 - 22;
        let mut lx = left;
        for (color, what) in [(GOOD, "trio faster or leaner (ratio ≤ 1)"), (BAD, "tokio faster or leaner (ratio > 1)")]
        {
            root.draw(&Rectangle::new([(lx, legend_y - 6), (lx + 12, legend_y + 6)], color.filled()))
                .map_err(io_err)?;
            pen.text(what, VALUE, INK, (lx + 18, legend_y), Align::Left, true)?;
            lx += 18 + pen.width(what, VALUE) + 30;
        }
    }
    root.present().map_err(io_err)
}

/// Writes `rgb` (8-bit RGB, `width` by `height`) as a PNG file (with the
/// `png` crate directly: plotters' own encoder would bring in `image` and
/// its JPEG decoder, about 25 s of a cold release build).
fn write_png(path: &Path, width: u32, height: u32, rgb: &[u8]) -> io::Result<()> {
    let file = io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(io::Error::other)?;
    writer.write_image_data(rgb).map_err(io::Error::other)?;
    writer.finish().map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary one.
    fn temp_dir(what: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        std::env::temp_dir().join(format!("trio-bench-report-{what}-{}-{nanos}", std::process::id()))
    }

    /// A name too long for a chart's label column.
    const LONG: &str =
        "TLS bulk transfer of 1 MiB over loopback in 16 KiB records, both ends on the runtime under test";

    /// Two groups; one with Python Trio figures, a NaN ratio, a huge ratio,
    /// a ratio of exactly 1, a `|` in a name and a very long name.
    fn records() -> Vec<Record> {
        let mut spawn = Record::lower("micro", "spawn+join 1k children", 50.0, 100.0, "ns/op");
        spawn.python_trio = Some(2500.0);
        vec![
            spawn,
            Record::lower("micro", "checkpoint", 30.0, 20.0, "ns/op"),
            Record::lower("micro", "zero tokio", 5.0, 0.0, "ns/op"),
            Record::higher("echo", "64 B | 100 conns", 200_000.0, 100_000.0, "msgs/s"),
            Record::higher("echo", "huge", 1.0, 5000.0, "msgs/s"),
            Record::lower("echo", LONG, 2.0, 2.0, "ms"),
        ]
    }

    fn meta() -> Meta {
        Meta {
            date: "2025-01-02".to_owned(),
            machine: "2 cores, Linux 6.x".to_owned(),
            size: Size::Quick,
            command: "trio-bench --quick --report out".to_owned(),
        }
    }

    /// Checks the PNG at `path` decodes to `WIDTH` by the height for `rows`.
    fn check_png(path: &Path, rows: usize) {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is not a PNG", path.display());
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (WIDTH, chart_height(rows)), "{}", path.display());
        let mut buf = vec![0; reader.output_buffer_size()];
        reader.next_frame(&mut buf).unwrap();
        // Something was drawn: not all white.
        assert!(buf.iter().any(|b| *b != 255), "{} is blank", path.display());
    }

    /// Writes the report into a fresh directory, checks it, removes it (unless
    /// `TRIO_BENCH_KEEP_REPORT` is set, to look at the charts).
    fn check_report(what: &str, font: Option<&ChartFont>) -> String {
        let dir = temp_dir(what);
        write_report_with(&dir, &records(), &meta(), font).unwrap();
        let md = std::fs::read_to_string(dir.join("README.md")).unwrap();
        check_png(&dir.join("micro.png"), 3);
        check_png(&dir.join("echo.png"), 3);
        check_png(&dir.join("summary.png"), 6);
        if std::env::var_os("TRIO_BENCH_KEEP_REPORT").is_some() {
            eprintln!("report kept in {}", dir.display());
        } else {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        md
    }

    #[test]
    fn report_has_tables_and_charts() {
        let md = check_report("text", ChartFont::get());
        for name in ["spawn+join 1k children", "checkpoint", "zero tokio", "64 B \\| 100 conns", "huge"] {
            assert!(md.contains(&format!("| {name} |")), "{name} missing:\n{md}");
        }
        assert!(md.contains("- Command: `trio-bench --quick --report out`"), "{md}");
        assert!(md.contains("2 cores, Linux 6.x") && md.contains("2025-01-02"), "{md}");
        assert!(md.contains("below 1 means trio is faster or leaner"), "{md}");
        let micro = md.find("## micro").expect("micro heading");
        let echo = md.find("## echo").expect("echo heading");
        assert!(micro < echo, "groups out of order");
        let (micro_md, echo_md) = (&md[micro..echo], &md[echo..]);
        assert!(micro_md.contains("| workload | trio | tokio | unit | ratio | Python Trio | Python/trio |"));
        assert!(micro_md.contains("| spawn+join 1k children | 50.0 | 100 | ns/op | **0.500** | 2500 | 50.0× |"));
        assert!(micro_md.contains("| checkpoint | 30.0 | 20.0 | ns/op | 1.50 | – | – |"));
        assert!(micro_md.contains("| zero tokio | 5.00 | 0 | ns/op | n/a | – | – |"));
        assert!(micro_md.contains("![micro: trio/tokio ratios](micro.png)"));
        assert!(echo_md.contains("| workload | trio | tokio | unit | ratio |\n"));
        assert!(!echo_md.contains("Python"));
        assert!(echo_md.contains("| 64 B \\| 100 conns | 200000 | 100000 | msgs/s | **0.500** |"));
        assert!(echo_md.contains("| huge | 1.00 | 5000 | msgs/s | 5000 |"));
        assert!(echo_md.contains(&format!("| {LONG} | 2.00 | 2.00 | ms | **1.00** |")));
        assert!(echo_md.contains("![echo: trio/tokio ratios](echo.png)"));
        assert!(md.contains("![All workloads: trio/tokio ratios](summary.png)"));
        assert!(md.contains("trio is as fast or leaner in 3 of 6 workloads"), "{md}");
        if ChartFont::get().is_some() {
            assert!(md.contains("Chart text is set in"));
        }
    }

    #[test]
    fn report_without_a_font_still_has_charts() {
        let md = check_report("notext", None);
        assert!(md.contains("The charts have no text"), "{md}");
        assert!(md.contains("| huge |"));
    }

    #[test]
    fn figures_have_three_significant_digits() {
        assert_eq!(sig(0.5), "0.500");
        assert_eq!(sig(1.0), "1.00");
        assert_eq!(sig(12.345), "12.3");
        assert_eq!(sig(123.4), "123");
        assert_eq!(sig(123456.7), "123457");
        assert_eq!(sig(0.01234), "0.0123");
        assert_eq!(sig(0.0), "0");
        assert_eq!(sig(f64::NAN), "n/a");
        assert_eq!(sig(f64::INFINITY), "n/a");
        assert_eq!(sig(2.5e12), "2.50e12");
        assert_eq!(sig(-0.5), "-0.500");
    }

    #[test]
    fn chart_files_are_safe_and_unique() {
        let rs =
            ["micro", "a b", "a_b", "summary", "", "micro"].map(|g| Record::lower(g, "x", 1.0, 1.0, "ns/op")).to_vec();
        let files: Vec<String> = groups(&rs).into_iter().map(|(_, f)| f).collect();
        assert_eq!(files, ["micro.png", "a_b.png", "a_b-2.png", "summary-2.png", "group.png"]);
    }

    #[test]
    fn scale_is_linear_unless_ratios_span_widely() {
        assert_eq!(Scale::choose(&[0.5, 1.5, f64::NAN]), Scale::Linear { max: 2.0, step: 0.5 });
        assert_eq!(Scale::choose(&[0.5, 5000.0]), Scale::Log { lo: 0.1, hi: 10000.0 });
        let log = Scale::Log { lo: 0.1, hi: 10.0 };
        assert_eq!(log.ticks(), [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]);
        assert!((log.frac(1.0) - 0.5).abs() < 1e-12);
        assert_eq!(log.frac(0.0), 0.0);
        assert_eq!(Scale::tick_label(0.2), "0.2");
        assert_eq!(code_span("a `b`"), "`` a `b` ``");
    }
}
