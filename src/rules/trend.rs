//! Robust trend estimation shared by the growth and exhaustion rules.
//!
//! Theil–Sen (the median of pairwise slopes) rather than least squares: one burst or one
//! outlier moves a least-squares line a lot and a Theil–Sen line hardly at all, which is what
//! "not fooled by a single burst" asks for.

/// Slope per millisecond of `(t_ms, value)` points, or `None` with fewer than 3 points.
pub fn theil_sen_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    // Bound the work: at most ~120 points (7,000 pairs), evenly subsampled.
    let step = points.len().div_ceil(120);
    let pts: Vec<(f64, f64)> = points.iter().step_by(step).copied().collect();
    let mut slopes = Vec::with_capacity(pts.len() * pts.len() / 2);
    for i in 0..pts.len() {
        for j in i + 1..pts.len() {
            let dt = pts[j].0 - pts[i].0;
            if dt > 0.0 {
                slopes.push((pts[j].1 - pts[i].1) / dt);
            }
        }
    }
    median(&mut slopes)
}

pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

/// Growth a person would call a leak rather than a warm-up or churn, or `None`. The window
/// must span at least `min_window_ms`; within it, a run of samples with one value counts as one
/// observation (see [`observations`]), and at least 8 observations must show
/// - a Theil–Sen line climbing by at least `min_increase` across the window;
/// - the median of each quarter of them above the one before: one step up (a pool filling
///   once, sockets opened at start-up) leaves two neighbouring quarters level, and a burst that
///   returns moves no median at all;
/// - a rise that churn does not make: Mann–Kendall's z at least [`MIN_TREND_Z`]. A healthy
///   service under load opens and closes connections, threads and tasks in waves; a handful of
///   its levels can come out in rising order by chance, which the first two tests alone
///   took for a leak (one run read 35 → 29 descriptors as steady growth).
///
/// Returns the slope (per ms) and the fitted increase across the window.
pub fn steady_growth(
    points: &[(f64, f64)],
    min_window_ms: f64,
    min_increase: f64,
) -> Option<(f64, f64)> {
    let span_ms = points.last()?.0 - points.first()?.0;
    if span_ms < min_window_ms {
        return None;
    }
    let seen = observations(points);
    if seen.len() < 8 {
        return None;
    }
    let slope = theil_sen_slope(&seen)?;
    let fitted_increase = slope * span_ms;
    if slope <= 0.0 || fitted_increase < min_increase.max(1.0) {
        return None;
    }
    // Quarters both of the values seen and of the samples in time: collapsing runs keeps churn
    // from passing for a trend, but alone it lets a long flat stretch count as one point, so
    // that a quiet minute followed by a busy one reads as a climb (the probe's own test
    // suite under `check`: 11 fds for 20 s, then servers started and stopped test by test).
    if !quarters_rise(&seen, min_increase)? || !quarters_rise(points, min_increase)? {
        return None;
    }
    if mann_kendall_z(&seen) < MIN_TREND_Z {
        return None;
    }
    Some((slope, fitted_increase))
}

/// How sure [`steady_growth`] must be that a rise is a trend: Mann–Kendall's z of 3 is what
/// trendless values exceed about once in 700 looks. A steady leak gets there within about 10
/// changes of its count (a climb of 10 without a step back has z 3.9).
pub const MIN_TREND_Z: f64 = 3.0;

/// The points where the value changed: the first sample of each run of equal values. A count
/// that holds still between samples (kept-alive connections, an idle pool) repeats one
/// observation; sampling it 4 times a second instead of once must not make a trend out of a
/// handful of levels.
pub fn observations(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> = Vec::with_capacity(points.len());
    for &p in points {
        if out.last().is_none_or(|last| last.1 != p.1) {
            out.push(p);
        }
    }
    out
}

/// Mann–Kendall's trend statistic as a z-score: the rising pairs minus the falling ones (in
/// time order), over their standard deviation when the order is chance, with the usual
/// continuity correction. Ties count as neither, and the variance ignores them, which only
/// makes it more cautious. 0 when it does not rise; at most ~120 points are read, evenly
/// subsampled, as [`theil_sen_slope`] does.
pub fn mann_kendall_z(points: &[(f64, f64)]) -> f64 {
    let step = points.len().div_ceil(120).max(1);
    let pts: Vec<f64> = points.iter().step_by(step).map(|p| p.1).collect();
    let n = pts.len() as f64;
    let mut s = 0i64;
    for i in 0..pts.len() {
        for j in i + 1..pts.len() {
            s += match pts[j].total_cmp(&pts[i]) {
                std::cmp::Ordering::Greater => 1,
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
            };
        }
    }
    if s <= 0 || pts.len() < 3 {
        return 0.0;
    }
    let variance = n * (n - 1.0) * (2.0 * n + 5.0) / 18.0;
    (s as f64 - 1.0) / variance.sqrt()
}

/// Whether the median of each quarter of `points` is above the one before, the last by at
/// least `min_increase` over the first. `None` with fewer than 4 points.
fn quarters_rise(points: &[(f64, f64)], min_increase: f64) -> Option<bool> {
    let quarter = points.len() / 4;
    if quarter == 0 {
        return None;
    }
    let mut medians = Vec::with_capacity(4);
    for i in 0..4 {
        let end = if i == 3 {
            points.len()
        } else {
            (i + 1) * quarter
        };
        let mut v: Vec<f64> = points[i * quarter..end].iter().map(|p| p.1).collect();
        medians.push(median(&mut v)?);
    }
    Some(medians.windows(2).all(|w| w[0] < w[1]) && medians[3] - medians[0] >= min_increase)
}

/// Fraction of consecutive steps that did not go down: 1.0 for a monotone climb.
pub fn non_decreasing_fraction(points: &[(f64, f64)]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let ups = points.windows(2).filter(|w| w[1].1 >= w[0].1).count();
    ups as f64 / (points.len() - 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<_> = (0..10)
            .map(|i| (i as f64 * 1000.0, 5.0 + 2.0 * i as f64))
            .collect();
        let s = theil_sen_slope(&pts).unwrap();
        assert!((s * 1000.0 - 2.0).abs() < 1e-9);
    }

    #[test]
    fn one_burst_hardly_moves_it() {
        let mut pts: Vec<_> = (0..20).map(|i| (i as f64 * 1000.0, 50.0)).collect();
        pts[10].1 = 500.0;
        assert_eq!(theil_sen_slope(&pts).unwrap(), 0.0);
    }
}
