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

/// Growth a person would call a leak rather than a warm-up, or `None`: at least 8 points over
/// at least `min_window_ms`, a Theil–Sen line climbing by at least `min_increase` across them,
/// AND the median of each quarter of the window above the one before. One step up (a pool
/// filling once, sockets opened at start-up) leaves two neighbouring quarters level, and a
/// burst that returns moves no median at all. Returns the slope (per ms) and the fitted
/// increase across the window.
pub fn steady_growth(
    points: &[(f64, f64)],
    min_window_ms: f64,
    min_increase: f64,
) -> Option<(f64, f64)> {
    if points.len() < 8 {
        return None;
    }
    let span_ms = points.last()?.0 - points.first()?.0;
    if span_ms < min_window_ms {
        return None;
    }
    let slope = theil_sen_slope(points)?;
    let fitted_increase = slope * span_ms;
    if slope <= 0.0 || fitted_increase < min_increase.max(1.0) {
        return None;
    }
    let quarter = points.len() / 4;
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
    if !medians.windows(2).all(|w| w[0] < w[1]) || medians[3] - medians[0] < min_increase {
        return None;
    }
    Some((slope, fitted_increase))
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
