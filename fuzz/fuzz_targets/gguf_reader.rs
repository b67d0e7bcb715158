//! Coverage-guided fuzzing of the GGUF reader: any bytes either parse into a file whose every
//! promise holds (tensors inside the file, sizes consistent, lookups agree, small tensors
//! dequantize) or give `Error::Gguf`; nothing panics, overflows or over-allocates.
//! Run with `scripts/fuzz.sh [seconds]`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rocmforge::gguf::{quants, GgufFile, MetaValue};
use rocmforge::Error;

/// Tensors up to this many elements are dequantized (bigger ones only have their bytes read).
const MAX_DEQUANTIZE_ELEMENTS: u64 = 1 << 16;

fn touch_value(v: &MetaValue) -> usize {
    match v {
        MetaValue::Str(s) => s.len(),
        MetaValue::Array(items) => items.iter().map(touch_value).sum::<usize>() + 1,
        other => {
            other.as_f64().map_or(0, |x| x.is_nan() as usize) + other.as_bool().is_some() as usize
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let file = match GgufFile::from_bytes(data.to_vec()) {
        Ok(file) => file,
        Err(Error::Gguf(message)) => {
            assert!(!message.is_empty());
            return;
        }
        Err(other) => panic!("a parse error that is not Error::Gguf: {other:?}"),
    };
    assert!(file.version == 2 || file.version == 3);
    assert!(file.alignment.is_power_of_two());
    assert_eq!(file.data_offset % file.alignment, 0);

    let mut seen = 0usize;
    for (key, value) in &file.metadata {
        assert!(!key.is_empty());
        // the same entry (not just an equal one: NaN != NaN)
        assert!(file.meta(key).is_some_and(|v| std::ptr::eq(v, value)));
        seen = seen.wrapping_add(touch_value(value));
    }

    let file_size = file.file_size();
    for t in &file.tensors {
        assert!(file
            .tensor_info(&t.name)
            .is_some_and(|i| std::ptr::eq(i, t)));
        let bytes = file.tensor_bytes(t);
        assert_eq!(bytes.len() as u64, t.nbytes);
        let end = file.data_offset + t.offset + t.nbytes;
        assert!(end <= file_size);
        seen = seen.wrapping_add(bytes.iter().map(|&b| b as usize).sum::<usize>());

        let shape = t.shape();
        assert_eq!(shape.len(), t.dims.len());
        let elements: u64 = t.dims.iter().product();
        assert_eq!(elements, t.n_elements);
        assert_eq!(
            (t.n_rows() as u64).checked_mul(t.row_bytes() as u64),
            Some(t.nbytes)
        );
        assert_eq!(t.row_len() % t.ggml_type.block_size(), 0);

        if t.ggml_type.can_dequantize() && t.n_elements <= MAX_DEQUANTIZE_ELEMENTS {
            let mut out = vec![0f32; t.n_elements as usize];
            match quants::dequantize(t.ggml_type, bytes, &mut out) {
                Ok(()) => seen = seen.wrapping_add(out.iter().filter(|x| x.is_finite()).count()),
                Err(Error::Unsupported(_)) => {}
                Err(other) => panic!(
                    "dequantizing {:?} ({}) failed: {other:?}",
                    t.name, t.ggml_type
                ),
            }
        }
    }
    std::hint::black_box(seen);
});
