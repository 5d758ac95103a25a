//! Screenshots: a ratatui buffer (what the dashboard drew) as an SVG image with its colours,
//! so README pictures come from the real app drawing real data.

use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use std::fmt::Write;

const CELL_W: f32 = 8.4;
const CELL_H: f32 = 17.0;
const DEFAULT_FG: &str = "#d4d4d4";
const DEFAULT_BG: &str = "#1e1e1e";

fn hex(c: Color, default: &'static str) -> String {
    let named = |s: &str| s.to_string();
    match c {
        Color::Reset => default.to_string(),
        Color::Black => named("#000000"),
        Color::Red => named("#e05561"),
        Color::Green => named("#8cc265"),
        Color::Yellow => named("#d18f52"),
        Color::Blue => named("#4aa5f0"),
        Color::Magenta => named("#c162de"),
        Color::Cyan => named("#42b3c2"),
        Color::Gray => named("#b0b0b0"),
        Color::DarkGray => named("#7a7a7a"),
        Color::LightRed => named("#ff616e"),
        Color::LightGreen => named("#a5e075"),
        Color::LightYellow => named("#f0a45d"),
        Color::LightBlue => named("#4dc4ff"),
        Color::LightMagenta => named("#de73ff"),
        Color::LightCyan => named("#4cd1e0"),
        Color::White => named("#ffffff"),
        Color::Rgb(r, g, b) => format!("#{r:02x}{g:02x}{b:02x}"),
        Color::Indexed(i) => indexed(i),
    }
}

/// xterm's 256-colour palette beyond the 16 named colours.
fn indexed(i: u8) -> String {
    match i {
        16..=231 => {
            let level = |v: u8| if v == 0 { 0 } else { 55 + v * 40 };
            let v = i - 16;
            format!(
                "#{:02x}{:02x}{:02x}",
                level(v / 36),
                level(v / 6 % 6),
                level(v % 6)
            )
        }
        232..=255 => {
            let g = 8 + (i - 232) * 10;
            format!("#{g:02x}{g:02x}{g:02x}")
        }
        _ => DEFAULT_FG.to_string(),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The buffer as a standalone SVG document.
pub fn buffer_to_svg(buf: &Buffer) -> String {
    let area = buf.area;
    let (w, h) = (area.width as f32 * CELL_W, area.height as f32 * CELL_H);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0}" height="{h:.0}" viewBox="0 0 {w:.0} {h:.0}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="14">"#
    );
    let _ = write!(
        out,
        r#"<rect width="100%" height="100%" fill="{DEFAULT_BG}"/>"#
    );
    for y in 0..area.height {
        // Backgrounds first, merged into runs.
        let mut x = 0;
        while x < area.width {
            let cell = &buf[(area.x + x, area.y + y)];
            let (fg, bg) = colors(cell.fg, cell.bg, cell.modifier);
            let start = x;
            while x < area.width {
                let c = &buf[(area.x + x, area.y + y)];
                if colors(c.fg, c.bg, c.modifier).1 != bg {
                    break;
                }
                x += 1;
            }
            let _ = fg;
            if bg != DEFAULT_BG {
                let _ = write!(
                    out,
                    r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{CELL_H}" fill="{bg}"/>"#,
                    start as f32 * CELL_W,
                    y as f32 * CELL_H,
                    (x - start) as f32 * CELL_W
                );
            }
        }
        // Then text, one element per run of equal style; cells placed by x so wide glyphs
        // and font metrics never drift.
        let mut x = 0;
        while x < area.width {
            let cell = &buf[(area.x + x, area.y + y)];
            let style = (
                colors(cell.fg, cell.bg, cell.modifier).0,
                cell.modifier.contains(Modifier::BOLD),
            );
            let start = x;
            let mut text = String::new();
            while x < area.width {
                let c = &buf[(area.x + x, area.y + y)];
                if (
                    colors(c.fg, c.bg, c.modifier).0,
                    c.modifier.contains(Modifier::BOLD),
                ) != style
                {
                    break;
                }
                text.push_str(if c.symbol().is_empty() {
                    " "
                } else {
                    c.symbol()
                });
                x += 1;
            }
            if text.trim().is_empty() {
                continue;
            }
            let weight = if style.1 {
                r#" font-weight="bold""#
            } else {
                ""
            };
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" fill="{}"{weight} textLength="{:.1}" lengthAdjust="spacingAndGlyphs" xml:space="preserve">{}</text>"#,
                start as f32 * CELL_W,
                y as f32 * CELL_H + CELL_H * 0.78,
                style.0,
                (x - start) as f32 * CELL_W,
                escape(&text)
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn colors(fg: Color, bg: Color, m: Modifier) -> (String, String) {
    let (fg, bg) = (hex(fg, DEFAULT_FG), hex(bg, DEFAULT_BG));
    if m.contains(Modifier::REVERSED) {
        let fg2 = if bg == DEFAULT_BG {
            DEFAULT_BG.to_string()
        } else {
            bg
        };
        let bg2 = if fg == DEFAULT_FG {
            DEFAULT_FG.to_string()
        } else {
            fg
        };
        (fg2, bg2)
    } else {
        (fg, bg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::layout::Rect;
    use ratatui::style::Style;

    #[test]
    fn draws_text_and_colours() {
        let mut buf = Buffer::empty(Rect::new(0, 0, 10, 2));
        buf.set_string(0, 0, "a<b", Style::default().fg(Color::Red));
        buf.set_string(
            0,
            1,
            "sel",
            Style::default().add_modifier(Modifier::REVERSED),
        );
        let svg = buffer_to_svg(&buf);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains(">a&lt;b</text>"), "{svg}");
        assert!(svg.contains("#e05561"));
        // reversed default colours: light background behind dark text
        assert!(svg.contains(&format!(r#"fill="{DEFAULT_FG}""#)));
        assert_eq!(indexed(238), "#444444");
        assert_eq!(indexed(196), "#ff0000");
    }
}
