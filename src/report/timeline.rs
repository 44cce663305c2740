//! The expiry timeline: active keys expiring per week over the next 52 weeks, by store,
//! drawn as inline SVG (presentation attributes only, no inline style or script) and the
//! same numbers as a table. Pure: reads the `Report`, returns markup.

use super::escape::esc;
use super::{Report, RowStatus};
use chrono::{DateTime, Duration, Utc};
use std::fmt::Write;

pub const WEEKS: usize = 52;

/// Colours for stores, in order (distinguishable with colour-blindness, dark enough on white).
const PALETTE: [&str; 6] = [
    "#0b5cad", "#b35900", "#1a7f37", "#8250df", "#a40e26", "#4d4d4d",
];

/// Start of week `w` (week 0 starts at the report's time).
fn week_start(now: DateTime<Utc>, w: usize) -> DateTime<Utc> {
    now + Duration::days(7 * w as i64)
}

/// `counts[store][week]`: active keys of each shown store expiring in that week.
pub fn counts(r: &Report) -> Vec<(String, Vec<usize>)> {
    let now = r.generated_at;
    r.stores
        .iter()
        .map(|s| {
            let mut weeks = vec![0usize; WEEKS];
            for k in r
                .keys
                .iter()
                .filter(|k| k.store == s.name && k.status == RowStatus::Active)
            {
                if let Some(e) = k.expires_at.filter(|e| *e > now) {
                    let w = ((e - now).num_seconds() / (7 * 86_400)) as usize;
                    if let Some(c) = weeks.get_mut(w) {
                        *c += 1;
                    }
                }
            }
            (s.name.clone(), weeks)
        })
        .collect()
}

/// The chart. `id` makes its title/description ids unique on a page.
pub fn svg(r: &Report, id: &str) -> String {
    let data = counts(r);
    let (w, h, left, top, bottom) = (780.0_f64, 260.0_f64, 40.0_f64, 16.0_f64, 56.0_f64);
    let plot_w = w - left - 10.0;
    let plot_h = h - top - bottom;
    let max = (0..WEEKS)
        .map(|i| data.iter().map(|(_, c)| c[i]).sum::<usize>())
        .max()
        .unwrap_or(0);
    let total: usize = data.iter().map(|(_, c)| c.iter().sum::<usize>()).sum();
    let scale = if max == 0 { 0.0 } else { plot_h / max as f64 };
    let bar = plot_w / WEEKS as f64;
    let id = esc(id);
    let mut b = format!(
        "<figure class=\"timeline\"><svg id=\"{id}\" class=\"timeline\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {w} {h}\" width=\"100%\" role=\"img\" aria-labelledby=\"{id}-t {id}-d\">\
         <title id=\"{id}-t\">Keys expiring per week, next 52 weeks</title>\
         <desc id=\"{id}-d\">{total} active keys expire within a year; the busiest week has {max}.</desc>\n"
    );
    // Axes and the y scale.
    let base = top + plot_h;
    let _ = writeln!(
        b,
        "<line x1=\"{left}\" y1=\"{base}\" x2=\"{}\" y2=\"{base}\" stroke=\"#333\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{base}\" stroke=\"#333\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\">0</text>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"11\">{max}</text>",
        left + plot_w,
        left - 4.0,
        base + 4.0,
        left - 4.0,
        top + 4.0
    );
    b.push_str(&month_ticks(r.generated_at, left, bar, base));
    for i in 0..WEEKS {
        let mut y = base;
        for (si, (store, c)) in data.iter().enumerate() {
            if c[i] == 0 {
                continue;
            }
            let bh = c[i] as f64 * scale;
            y -= bh;
            let _ = writeln!(
                b,
                "<rect class=\"bar\" data-store=\"{}\" data-week=\"{i}\" data-count=\"{}\" x=\"{:.1}\" y=\"{:.1}\" \
                 width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {} key(s) expiring in the week of {}</title></rect>",
                esc(store),
                c[i],
                left + i as f64 * bar + 1.0,
                y,
                (bar - 2.0).max(1.0),
                bh,
                PALETTE[si % PALETTE.len()],
                esc(store),
                c[i],
                week_start(r.generated_at, i).format("%Y-%m-%d")
            );
        }
    }
    if total == 0 {
        let _ = writeln!(
            b,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\">No active key expires in the next year.</text>",
            left + plot_w / 2.0,
            top + plot_h / 2.0
        );
    }
    b.push_str(&legend(&data, left, h - 14.0));
    b.push_str("</svg></figure>\n");
    b
}

fn month_ticks(now: DateTime<Utc>, left: f64, bar: f64, base: f64) -> String {
    let mut b = String::new();
    let mut last = now.format("%m").to_string();
    for i in 1..WEEKS {
        let m = week_start(now, i).format("%m").to_string();
        if m != last {
            let x = left + i as f64 * bar;
            let _ = write!(
                b,
                "<line x1=\"{x:.1}\" y1=\"{base}\" x2=\"{x:.1}\" y2=\"{}\" stroke=\"#333\"/>\
                 <text x=\"{x:.1}\" y=\"{}\" font-size=\"11\">{}</text>",
                base + 4.0,
                base + 16.0,
                week_start(now, i).format("%b")
            );
            last = m;
        }
    }
    b.push('\n');
    b
}

fn legend(data: &[(String, Vec<usize>)], left: f64, y: f64) -> String {
    let mut b = String::new();
    let mut x = left;
    for (si, (store, _)) in data.iter().enumerate() {
        let _ = write!(
            b,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" font-size=\"12\">{}</text>",
            y - 10.0,
            PALETTE[si % PALETTE.len()],
            x + 16.0,
            esc(store)
        );
        x += 24.0 + 7.5 * store.chars().count().min(40) as f64;
    }
    b.push('\n');
    b
}

/// The chart's numbers as a table (weeks with at least one expiring key).
pub fn table(r: &Report) -> String {
    let data = counts(r);
    let mut b = String::from(
        "<table class=\"timeline-data\"><caption>Keys expiring per week (weeks with none left out)</caption><thead><tr>\
         <th scope=\"col\">Week of</th>",
    );
    for (s, _) in &data {
        let _ = write!(b, "<th scope=\"col\" class=\"num\">{}</th>", esc(s));
    }
    b.push_str("</tr></thead><tbody>\n");
    let mut any = false;
    for i in 0..WEEKS {
        if data.iter().all(|(_, c)| c[i] == 0) {
            continue;
        }
        any = true;
        let _ = write!(
            b,
            "<tr><th scope=\"row\">{}</th>",
            week_start(r.generated_at, i).format("%Y-%m-%d")
        );
        for (_, c) in &data {
            let _ = write!(b, "<td class=\"num\">{}</td>", c[i]);
        }
        b.push_str("</tr>\n");
    }
    if !any {
        let _ = writeln!(
            b,
            "<tr><td colspan=\"{}\">No active key expires in the next year.</td></tr>",
            data.len() + 1
        );
    }
    b.push_str("</tbody></table>\n");
    b
}
