//! CPU reference of the embedding lookup.

use rayon::prelude::*;

use crate::error::Result;
use crate::ops::WeightView;

/// `out[t, :] = dequant(table)[ids[t], :]`; table `[vocab, dim]` in its GGUF type,
/// out `[ids.len(), dim]`. Ids must be `< vocab` (checked by the caller).
pub fn embedding(table: &WeightView, ids: &[u32], out: &mut [f32]) -> Result<()> {
    out.par_chunks_mut(table.cols)
        .zip(ids.par_iter())
        .try_for_each(|(row, &id)| table.dequantize_rows(id as usize, row))
}
