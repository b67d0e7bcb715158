//! CPU reference of argmax.

/// Index of the largest value of `x` (the lowest index on ties; NaNs are never picked unless
/// every value is NaN, then 0).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || (x[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}
