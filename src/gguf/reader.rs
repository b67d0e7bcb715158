//! A strict, pure GGUF (v2/v3) reader.
//!
//! Layout of a file (little-endian):
//!   magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
//!   n_kv x (key: string, value_type u32, value)
//!   n_tensors x (name: string, n_dims u32, ne[n_dims] u64, type u32, offset u64)
//!   padding to `general.alignment` (default 32) | data section (tensor offsets are relative to it)
//! where string = len u64 + UTF-8 bytes and array = elem_type u32 + count u64 + elements.
//!
//! Nothing is trusted: every count and length is checked against the bytes really left before
//! anything is allocated, all arithmetic is checked, tensors must be aligned, lie inside the data
//! section and not overlap, and no bytes may trail the last tensor beyond its padding.
//! Every error names the field and the byte offset where it was read.

use std::collections::HashMap;
use std::path::Path;

use super::types::GgmlType;
use crate::error::{Error, Result};

pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Largest `general.alignment` accepted.
pub const MAX_ALIGNMENT: u64 = 1 << 20;
/// Longest tensor name (ggml's GGML_MAX_NAME).
pub const MAX_TENSOR_NAME: usize = 64;
/// Longest metadata key.
pub const MAX_KEY_LEN: u64 = 1 << 16;
/// Longest metadata string value (chat templates are tens of KiB; this is a sanity cap).
pub const MAX_STRING_LEN: u64 = 1 << 26;
pub const MAX_DIMS: u32 = 4;

/// A metadata value. Arrays hold values of one type; an array may hold arrays one level deep.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    /// The GGUF type name of this value ("u32", "string", "array", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            MetaValue::U8(_) => "u8",
            MetaValue::I8(_) => "i8",
            MetaValue::U16(_) => "u16",
            MetaValue::I16(_) => "i16",
            MetaValue::U32(_) => "u32",
            MetaValue::I32(_) => "i32",
            MetaValue::U64(_) => "u64",
            MetaValue::I64(_) => "i64",
            MetaValue::F32(_) => "f32",
            MetaValue::F64(_) => "f64",
            MetaValue::Bool(_) => "bool",
            MetaValue::Str(_) => "string",
            MetaValue::Array(_) => "array",
        }
    }

    /// Any integer type as i128 (so u64 and i64 both fit); `None` for other types.
    pub fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v as i128,
            MetaValue::I8(v) => v as i128,
            MetaValue::U16(v) => v as i128,
            MetaValue::I16(v) => v as i128,
            MetaValue::U32(v) => v as i128,
            MetaValue::I32(v) => v as i128,
            MetaValue::U64(v) => v as i128,
            MetaValue::I64(v) => v as i128,
            _ => return None,
        })
    }

    /// Any float or integer type as f64; `None` for other types.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            MetaValue::F32(v) => Some(v as f64),
            MetaValue::F64(v) => Some(v),
            _ => self.as_int().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One tensor's header entry, checked against the file.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (contiguous), as in the file.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Byte offset relative to the start of the data section.
    pub offset: u64,
    pub nbytes: u64,
    pub n_elements: u64,
}

impl TensorInfo {
    /// NumPy order (reversed ggml `ne`): the last axis is contiguous.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
    /// Elements per row (ggml `ne[0]`).
    pub fn row_len(&self) -> usize {
        self.dims[0] as usize
    }
    /// Number of rows (product of the other dims).
    pub fn n_rows(&self) -> usize {
        self.dims[1..].iter().product::<u64>() as usize
    }
    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.row_len() / self.ggml_type.block_size() * self.ggml_type.type_size()
    }
}

enum Storage {
    Mmap(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file whose bytes stay memory-mapped (or owned, for in-memory parsing).
pub struct GgufFile {
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute byte offset of the data section.
    pub data_offset: u64,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
    storage: Storage,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("file_size", &self.file_size())
            .finish()
    }
}

impl GgufFile {
    /// Open and memory-map a file. Missing files, directories and permission problems keep
    /// their I/O error kind; everything about the contents is `Error::Gguf`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        let io = |source: std::io::Error| Error::Io { path: path.display().to_string(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a GGUF file",
            )));
        }
        let file = std::fs::File::open(path).map_err(io)?;
        if meta.len() == 0 {
            return Err(Error::gguf(format!("{}: empty file (0 bytes), not a GGUF file", path.display())));
        }
        // SAFETY: the map is read-only; like every mmap-based reader we assume the file is not
        // truncated by another process while it is open.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(Storage::Mmap(mmap)).map_err(|e| match e {
            Error::Gguf(m) => Error::Gguf(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Parse a file held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile> {
        let h = parse(storage.bytes())?;
        Ok(GgufFile {
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            alignment: h.alignment,
            data_offset: h.data_offset,
            meta_index: h.meta_index,
            tensor_index: h.tensor_index,
            storage,
        })
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    pub fn file_size(&self) -> u64 {
        self.bytes().len() as u64
    }

    pub fn meta(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The stored bytes of a tensor (already checked to lie inside the file).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> &[u8] {
        let start = (self.data_offset + info.offset) as usize;
        &self.bytes()[start..start + info.nbytes as usize]
    }

    /// Look a tensor up by name; a missing one is `Error::Gguf` naming it.
    pub fn tensor(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self
            .tensor_info(name)
            .ok_or_else(|| Error::gguf(format!("tensor {name:?} not found in the file")))?;
        Ok((info, self.tensor_bytes(info)))
    }

    /// `general.architecture`, if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.meta("general.architecture").and_then(|v| v.as_str())
    }
}

/// What `parse` finds in a file's bytes.
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    pub data_offset: u64,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

/// A bounds-checked little-endian cursor whose errors carry the byte offset.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::gguf(format!(
                "{} at byte offset {}: needs {} bytes but only {} remain (file is {} bytes)",
                what(),
                self.pos,
                n,
                self.remaining(),
                self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        Ok(self.take(N as u64, what)?.try_into().expect("take returned N bytes"))
    }
    fn u8(&mut self, what: &dyn Fn() -> String) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed UTF-8 string of at most `cap` bytes.
    fn string(&mut self, cap: u64, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos;
        let len = self.u64(&|| format!("{} (string length)", what()))?;
        if len > cap {
            return Err(Error::gguf(format!(
                "{} at byte offset {at}: string length {len} is over the limit of {cap} bytes",
                what()
            )));
        }
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::gguf(format!(
                "{} at byte offset {}: not valid UTF-8 ({e})",
                what(),
                at + 8
            ))
        })
    }
}

// GGUF metadata value type ids.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// The smallest encoding of one value of a type (used to bound counts before allocating).
fn min_value_size(t: u32) -> Option<u64> {
    Some(match t {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 | T_STRING => 8,
        T_ARRAY => 12,
        _ => return None,
    })
}

fn read_value(c: &mut Cursor, t: u32, depth: u32, key: &str) -> Result<MetaValue> {
    let what = || format!("metadata {key:?}");
    let at = c.pos;
    Ok(match t {
        T_U8 => MetaValue::U8(c.u8(&what)?),
        T_I8 => MetaValue::I8(c.u8(&what)? as i8),
        T_U16 => MetaValue::U16(u16::from_le_bytes(c.array(&what)?)),
        T_I16 => MetaValue::I16(i16::from_le_bytes(c.array(&what)?)),
        T_U32 => MetaValue::U32(c.u32(&what)?),
        T_I32 => MetaValue::I32(c.u32(&what)? as i32),
        T_U64 => MetaValue::U64(c.u64(&what)?),
        T_I64 => MetaValue::I64(c.u64(&what)? as i64),
        T_F32 => MetaValue::F32(f32::from_le_bytes(c.array(&what)?)),
        T_F64 => MetaValue::F64(f64::from_le_bytes(c.array(&what)?)),
        T_BOOL => match c.u8(&what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => {
                return Err(Error::gguf(format!(
                    "metadata {key:?} at byte offset {at}: bool byte is {b}, must be 0 or 1"
                )))
            }
        },
        T_STRING => MetaValue::Str(c.string(MAX_STRING_LEN, &what)?),
        T_ARRAY => {
            if depth >= 2 {
                return Err(Error::gguf(format!(
                    "metadata {key:?} at byte offset {at}: arrays nested more than one level deep"
                )));
            }
            let elem_t = c.u32(&|| format!("metadata {key:?} (array element type)"))?;
            let min = min_value_size(elem_t).ok_or_else(|| {
                Error::gguf(format!(
                    "metadata {key:?} at byte offset {at}: unknown array element type {elem_t}"
                ))
            })?;
            let count_at = c.pos;
            let count = c.u64(&|| format!("metadata {key:?} (array count)"))?;
            // Bound the count by the bytes left before allocating anything.
            let need = count.checked_mul(min);
            if need.map_or(true, |n| n > c.remaining()) {
                return Err(Error::gguf(format!(
                    "metadata {key:?} at byte offset {count_at}: array of {count} elements cannot fit in the {} bytes left",
                    c.remaining()
                )));
            }
            let mut items = Vec::with_capacity(count as usize);
            for _ in 0..count {
                items.push(read_value(c, elem_t, depth + 1, key)?);
            }
            MetaValue::Array(items)
        }
        other => {
            return Err(Error::gguf(format!(
                "metadata {key:?} at byte offset {}: unknown value type {other}",
                at.saturating_sub(4)
            )))
        }
    })
}

/// Parse and validate a whole GGUF file held in `buf`.
pub fn parse(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    if buf.is_empty() {
        return Err(Error::gguf("empty file (0 bytes), not a GGUF file"));
    }
    let magic: [u8; 4] = c.array(&|| "magic".to_string())?;
    if magic != GGUF_MAGIC {
        let mut swapped = magic;
        swapped.reverse();
        return Err(Error::gguf(if swapped == GGUF_MAGIC {
            "bad magic at byte offset 0: \"FUGG\" is \"GGUF\" byte-swapped (a big-endian file?); only little-endian GGUF is supported".to_string()
        } else {
            format!("bad magic at byte offset 0: {magic:02x?}, expected \"GGUF\" (47 47 55 46): not a GGUF file")
        }));
    }
    let version = c.u32(&|| "version".to_string())?;
    if version != 2 && version != 3 {
        let hint = if matches!(version.swap_bytes(), 2 | 3) {
            " (looks byte-swapped: a big-endian file? only little-endian GGUF is supported)"
        } else if version == 1 {
            " (GGUF v1 is obsolete)"
        } else {
            ""
        };
        return Err(Error::gguf(format!(
            "version at byte offset 4 is {version}; only versions 2 and 3 are supported{hint}"
        )));
    }
    let n_tensors = c.u64(&|| "n_tensors".to_string())?;
    let n_kv = c.u64(&|| "n_kv".to_string())?;
    // Smallest encodings: kv = key len 8 + 1 byte key + type 4 + 1 byte value;
    // tensor = name len 8 + 1 + n_dims 4 + 1 dim 8 + type 4 + offset 8.
    if n_kv.checked_mul(14).map_or(true, |n| n > c.remaining()) {
        return Err(Error::gguf(format!(
            "n_kv at byte offset 16 is {n_kv}: that many metadata entries cannot fit in the {} bytes left",
            c.remaining()
        )));
    }
    if n_tensors.checked_mul(33).map_or(true, |n| n > c.remaining()) {
        return Err(Error::gguf(format!(
            "n_tensors at byte offset 8 is {n_tensors}: that many tensor infos cannot fit in the {} bytes left",
            c.remaining()
        )));
    }

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut meta_index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key_at = c.pos;
        let key = c.string(MAX_KEY_LEN, &|| format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(Error::gguf(format!("metadata key #{i} at byte offset {key_at} is empty")));
        }
        if meta_index.contains_key(&key) {
            return Err(Error::gguf(format!(
                "metadata key {key:?} at byte offset {key_at} appears twice"
            )));
        }
        let t = c.u32(&|| format!("metadata {key:?} (value type)"))?;
        let value = read_value(&mut c, t, 0, &key)?;
        meta_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match meta_index.get("general.alignment").map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(MetaValue::U32(a)) => {
            let a = *a as u64;
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(Error::gguf(format!(
                    "general.alignment is {a}: must be a power of two between 1 and {MAX_ALIGNMENT}"
                )));
            }
            a
        }
        Some(v) => {
            return Err(Error::gguf(format!(
                "general.alignment has type {}, must be u32",
                v.type_name()
            )))
        }
    };

    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name_at = c.pos;
        let name = c.string(MAX_TENSOR_NAME as u64, &|| format!("tensor #{i} name"))?;
        if name.is_empty() {
            return Err(Error::gguf(format!("tensor #{i} at byte offset {name_at}: empty name")));
        }
        if tensor_index.contains_key(&name) {
            return Err(Error::gguf(format!(
                "tensor {name:?} at byte offset {name_at}: name appears twice"
            )));
        }
        let what = |f: &str| format!("tensor {name:?} {f}");
        let nd_at = c.pos;
        let n_dims = c.u32(&|| what("n_dims"))?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(Error::gguf(format!(
                "tensor {name:?} at byte offset {nd_at}: n_dims is {n_dims}, must be 1..={MAX_DIMS}"
            )));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        let mut n_elements: u64 = 1;
        for d in 0..n_dims {
            let dim_at = c.pos;
            let ne = c.u64(&|| what(&format!("dim {d}")))?;
            if ne > i64::MAX as u64 {
                return Err(Error::gguf(format!(
                    "tensor {name:?} at byte offset {dim_at}: dim {d} is negative ({})",
                    ne as i64
                )));
            }
            n_elements = n_elements.checked_mul(ne).filter(|&n| n <= i64::MAX as u64).ok_or_else(|| {
                Error::gguf(format!(
                    "tensor {name:?} at byte offset {dim_at}: element count overflows (dims {:?} x {ne})",
                    dims
                ))
            })?;
            dims.push(ne);
        }
        let type_at = c.pos;
        let type_id = c.u32(&|| what("type"))?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            Error::gguf(format!(
                "tensor {name:?} at byte offset {type_at}: unknown or retired ggml type id {type_id}"
            ))
        })?;
        if dims[0] % ggml_type.block_size() as u64 != 0 {
            return Err(Error::gguf(format!(
                "tensor {name:?}: row length {} is not a multiple of {}'s block size {}",
                dims[0],
                ggml_type,
                ggml_type.block_size()
            )));
        }
        let nbytes = ggml_type.bytes_for(n_elements).ok_or_else(|| {
            Error::gguf(format!("tensor {name:?}: byte size of {n_elements} {ggml_type} elements overflows"))
        })?;
        let off_at = c.pos;
        let offset = c.u64(&|| what("offset"))?;
        if offset % alignment != 0 {
            return Err(Error::gguf(format!(
                "tensor {name:?} at byte offset {off_at}: data offset {offset} is not a multiple of the alignment {alignment}"
            )));
        }
        tensor_index.insert(name.clone(), tensors.len());
        tensors.push(TensorInfo { name, dims, ggml_type, offset, nbytes, n_elements });
    }

    let header_end = c.pos as u64;
    let data_offset = header_end
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| Error::gguf("data section offset overflows"))?;
    let file_len = buf.len() as u64;
    let data_len = file_len.saturating_sub(data_offset);

    // Tensors must lie inside the data section and not overlap.
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| tensors[i].offset);
    let mut end_of_data: u64 = 0;
    let mut prev: Option<usize> = None;
    for &i in &order {
        let t = &tensors[i];
        let end = t.offset.checked_add(t.nbytes).ok_or_else(|| {
            Error::gguf(format!("tensor {:?}: offset {} + size {} overflows", t.name, t.offset, t.nbytes))
        })?;
        if end > data_len {
            return Err(Error::gguf(format!(
                "tensor {:?}: data [{}, {}) at absolute byte offset {} runs past the end of the file ({} bytes, data section {} bytes)",
                t.name,
                t.offset,
                end,
                data_offset + t.offset,
                file_len,
                data_len
            )));
        }
        if let Some(p) = prev {
            if t.offset < end_of_data {
                return Err(Error::gguf(format!(
                    "tensor {:?} at data offset {} overlaps tensor {:?} which ends at {}",
                    t.name, t.offset, tensors[p].name, end_of_data
                )));
            }
        }
        if end >= end_of_data {
            end_of_data = end;
            prev = Some(i);
        }
    }
    if !tensors.is_empty() {
        let padded = end_of_data.checked_next_multiple_of(alignment).unwrap_or(u64::MAX);
        if data_len > padded {
            return Err(Error::gguf(format!(
                "{} unexplained bytes after the last tensor (data section is {} bytes, tensors end at {})",
                data_len - padded,
                data_len,
                end_of_data
            )));
        }
    }
    Ok(Header { version, metadata, tensors, alignment, data_offset, meta_index, tensor_index })
}
