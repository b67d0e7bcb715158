//! CPU reference of the KV-cache append.

use crate::ops::Element;

/// `cache[pos0 + t, :] = src[t, :]` for every row of `src [n, row_len]`, converted to the
/// cache's element type (f32, or f16 rounded to nearest even); cache `[n_ctx, row_len]`.
pub fn kv_append<T: Element>(cache: &mut [T], src: &[f32], pos0: usize, row_len: usize) {
    let dst = &mut cache[pos0 * row_len..pos0 * row_len + src.len()];
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = T::from_f32(s);
    }
}
