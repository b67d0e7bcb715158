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
/// Longest metadata key (the GGUF spec: at most 2^16 - 1 bytes).
pub const MAX_KEY_LEN: u64 = (1 << 16) - 1;
/// Longest metadata string value (chat templates are tens of KiB; this is a sanity cap).
pub const MAX_STRING_LEN: u64 = 1 << 26;
/// Most dimensions a tensor may have (ggml's GGML_MAX_DIMS). Zero dimensions is a scalar.
pub const MAX_DIMS: u32 = 4;
/// Most entries reserved up front for any list read from the file; longer lists grow as their
/// entries are actually read, so a count alone never sizes an allocation.
const MAX_PREALLOC: u64 = 4096;

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
    /// ggml order: `dims[0]` is the row length (contiguous), as in the file. Empty for a
    /// scalar. Each dim is at most `i64::MAX`, and so are the product of the nonzero ones and
    /// the byte size of a row: no size computed from them overflows.
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
    /// Elements per row (ggml `ne[0]`; 1 for a scalar).
    pub fn row_len(&self) -> usize {
        self.dims.first().map_or(1, |&d| d as usize)
    }
    /// Number of rows (product of the other dims; cannot overflow, the reader checked it).
    pub fn n_rows(&self) -> usize {
        self.dims.iter().skip(1).product::<u64>() as usize
    }
    /// Bytes per row (cannot overflow, the reader checked it).
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
        let io = |source: std::io::Error| Error::Io {
            path: path.display().to_string(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.is_dir() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "is a directory, not a GGUF file",
            )));
        }
        if !meta.is_file() {
            // A FIFO or device: opening could block, and there is no size to check against.
            return Err(Error::gguf(format!(
                "{}: not a regular file, not a GGUF file",
                path.display()
            )));
        }
        if meta.len() == 0 {
            return Err(Error::gguf(format!(
                "{}: empty file (0 bytes), not a GGUF file",
                path.display()
            )));
        }
        let file = std::fs::File::open(path).map_err(io)?;
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

/// Describes the field being read, for error messages (built only when an error happens).
type What<'a> = &'a dyn Fn() -> String;

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64, what: What) -> Result<&'a [u8]> {
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

    fn array<const N: usize>(&mut self, what: What) -> Result<[u8; N]> {
        Ok(self
            .take(N as u64, what)?
            .try_into()
            .expect("take returned N bytes"))
    }
    fn u8(&mut self, what: What) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u32(&mut self, what: What) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: What) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A length-prefixed UTF-8 string of at most `cap` bytes.
    fn string(&mut self, cap: u64, what: What) -> Result<String> {
        let at = self.pos;
        let len = self.u64(&|| format!("{} (string length)", what()))?;
        if len > cap {
            return Err(Error::gguf(format!(
                "{} at byte offset {at}: string length {len} is over the limit of {cap} bytes",
                what()
            )));
        }
        let bytes = self.take(len, what)?;
        std::str::from_utf8(bytes).map(str::to_owned).map_err(|e| {
            Error::gguf(format!(
                "{} at byte offset {}: not valid UTF-8 (invalid byte at offset {})",
                what(),
                at + 8,
                at + 8 + e.valid_up_to()
            ))
        })
    }
}

/// A key or name as it appears in messages: quoted, and cut short if very long.
fn shown(s: &str) -> String {
    const MAX_CHARS: usize = 80;
    match s.char_indices().nth(MAX_CHARS) {
        None => format!("{s:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &s[..cut], s.len()),
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

// Smallest encodings of the header's entries, used to bound n_kv and n_tensors by the bytes left:
// a metadata entry is key length 8 + a 1-byte key + value type 4 + a 1-byte value; a tensor info
// is name length 8 + a 1-byte name + n_dims 4 + no dims (a scalar) + type 4 + offset 8.
const MIN_KV_SIZE: u64 = 8 + 1 + 4 + 1;
const MIN_TENSOR_INFO_SIZE: u64 = 8 + 1 + 4 + 4 + 8;

/// Read one value of type `t`. `depth` is 0 for a metadata value, 1 inside an array.
fn read_value(c: &mut Cursor, t: u32, depth: u32, what: What) -> Result<MetaValue> {
    let at = c.pos;
    Ok(match t {
        T_U8 => MetaValue::U8(c.u8(what)?),
        T_I8 => MetaValue::I8(c.u8(what)? as i8),
        T_U16 => MetaValue::U16(u16::from_le_bytes(c.array(what)?)),
        T_I16 => MetaValue::I16(i16::from_le_bytes(c.array(what)?)),
        T_U32 => MetaValue::U32(c.u32(what)?),
        T_I32 => MetaValue::I32(c.u32(what)? as i32),
        T_U64 => MetaValue::U64(c.u64(what)?),
        T_I64 => MetaValue::I64(c.u64(what)? as i64),
        T_F32 => MetaValue::F32(f32::from_le_bytes(c.array(what)?)),
        T_F64 => MetaValue::F64(f64::from_le_bytes(c.array(what)?)),
        T_BOOL => match c.u8(what)? {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => {
                return Err(Error::gguf(format!(
                    "{} at byte offset {at}: bool byte is {b}, must be 0 or 1",
                    what()
                )))
            }
        },
        T_STRING => MetaValue::Str(c.string(MAX_STRING_LEN, what)?),
        T_ARRAY => {
            if depth >= 2 {
                return Err(Error::gguf(format!(
                    "{} at byte offset {at}: arrays nested more than one level deep",
                    what()
                )));
            }
            let elem_t = c.u32(&|| format!("{} (array element type)", what()))?;
            let min = min_value_size(elem_t).ok_or_else(|| {
                Error::gguf(format!(
                    "{} at byte offset {at}: unknown array element type {elem_t}",
                    what()
                ))
            })?;
            let count_at = c.pos;
            let count = c.u64(&|| format!("{} (array count)", what()))?;
            // Bound the count by the bytes left before allocating anything.
            if count.checked_mul(min).is_none_or(|n| n > c.remaining()) {
                return Err(Error::gguf(format!(
                    "{} at byte offset {count_at}: array count {count} cannot fit in the {} bytes left",
                    what(),
                    c.remaining()
                )));
            }
            let mut items = Vec::with_capacity(count.min(MAX_PREALLOC) as usize);
            for i in 0..count {
                items.push(read_value(c, elem_t, depth + 1, &|| {
                    format!("{}[{i}]", what())
                })?);
            }
            MetaValue::Array(items)
        }
        other => {
            return Err(Error::gguf(format!(
                "{} at byte offset {}: unknown value type {other}",
                what(),
                at.saturating_sub(4)
            )))
        }
    })
}

/// Magic and version; returns the version.
fn read_magic_and_version(c: &mut Cursor) -> Result<u32> {
    if c.buf.is_empty() {
        return Err(Error::gguf("empty file (0 bytes), not a GGUF file"));
    }
    let magic: [u8; 4] = c.array(&|| "magic".to_string())?;
    if magic != GGUF_MAGIC {
        let mut swapped = magic;
        swapped.reverse();
        return Err(Error::gguf(if swapped == GGUF_MAGIC {
            "magic at byte offset 0: \"FUGG\" is \"GGUF\" byte-swapped (a big-endian file?); only little-endian GGUF is supported".to_string()
        } else {
            format!(
                "bad magic at byte offset 0: \"{}\" (hex {:02x} {:02x} {:02x} {:02x}), expected \"GGUF\" (hex 47 47 55 46): not a GGUF file",
                magic.escape_ascii(),
                magic[0],
                magic[1],
                magic[2],
                magic[3]
            )
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
    Ok(version)
}

/// Metadata entries in file order, with the byte offset of each value's type field.
struct Metadata {
    entries: Vec<(String, MetaValue)>,
    value_at: Vec<usize>,
    index: HashMap<String, usize>,
}

fn read_metadata(c: &mut Cursor, n_kv: u64) -> Result<Metadata> {
    let cap = n_kv.min(MAX_PREALLOC) as usize;
    let mut md = Metadata {
        entries: Vec::with_capacity(cap),
        value_at: Vec::with_capacity(cap),
        index: HashMap::with_capacity(cap),
    };
    for i in 0..n_kv {
        let key_at = c.pos;
        let key = c.string(MAX_KEY_LEN, &|| format!("metadata key #{i}"))?;
        if key.is_empty() {
            return Err(Error::gguf(format!(
                "metadata key #{i} at byte offset {key_at} is empty"
            )));
        }
        if md.index.contains_key(&key) {
            return Err(Error::gguf(format!(
                "metadata key {} at byte offset {key_at} appears twice",
                shown(&key)
            )));
        }
        let value_at = c.pos;
        let what = || format!("metadata {}", shown(&key));
        let t = c.u32(&|| format!("{} (value type)", what()))?;
        let value = read_value(c, t, 0, &what)?;
        md.index.insert(key.clone(), md.entries.len());
        md.entries.push((key, value));
        md.value_at.push(value_at);
    }
    Ok(md)
}

/// `general.alignment` (default 32): a u32 power of two, at most `MAX_ALIGNMENT`.
fn alignment_of(md: &Metadata) -> Result<u64> {
    let Some(&i) = md.index.get("general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let at = md.value_at[i];
    match &md.entries[i].1 {
        MetaValue::U32(a) => {
            let a = *a as u64;
            if a == 0 || !a.is_power_of_two() || a > MAX_ALIGNMENT {
                return Err(Error::gguf(format!(
                    "general.alignment at byte offset {at} is {a}: must be a power of two between 1 and {MAX_ALIGNMENT}"
                )));
            }
            Ok(a)
        }
        v => Err(Error::gguf(format!(
            "general.alignment at byte offset {at} has type {}, must be u32",
            v.type_name()
        ))),
    }
}

/// One tensor info; `index` is its position in the file.
fn read_tensor_info(c: &mut Cursor, index: u64, alignment: u64) -> Result<TensorInfo> {
    let name_at = c.pos;
    let name = c.string(MAX_TENSOR_NAME as u64, &|| format!("tensor #{index} name"))?;
    if name.is_empty() {
        return Err(Error::gguf(format!(
            "tensor #{index} at byte offset {name_at}: empty name"
        )));
    }
    let what = |field: &str| format!("tensor {name:?} {field}");
    let n_dims_at = c.pos;
    let n_dims = c.u32(&|| what("n_dims"))?;
    if n_dims > MAX_DIMS {
        return Err(Error::gguf(format!(
            "tensor {name:?} n_dims at byte offset {n_dims_at} is {n_dims}, must be at most {MAX_DIMS}"
        )));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    // The product of the nonzero dims must fit in i64 (ggml's int64_t ne), so that no product of
    // any subset of the dims (rows, elements) can overflow, even when another dim is 0.
    let mut nonzero_product: u64 = 1;
    for d in 0..n_dims {
        let dim_at = c.pos;
        let ne = c.u64(&|| what(&format!("dim {d}")))?;
        if ne > i64::MAX as u64 {
            return Err(Error::gguf(format!(
                "tensor {name:?} dim {d} at byte offset {dim_at} is negative ({})",
                ne as i64
            )));
        }
        nonzero_product = nonzero_product
            .checked_mul(ne.max(1))
            .filter(|&n| n <= i64::MAX as u64)
            .ok_or_else(|| {
                Error::gguf(format!(
                    "tensor {name:?} dim {d} at byte offset {dim_at}: element count overflows (dims {dims:?} times {ne})"
                ))
            })?;
        dims.push(ne);
    }
    let n_elements = if dims.contains(&0) {
        0
    } else {
        nonzero_product
    };
    let type_at = c.pos;
    let type_id = c.u32(&|| what("type"))?;
    let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
        Error::gguf(format!(
            "tensor {name:?} type at byte offset {type_at}: unknown or retired ggml type id {type_id}"
        ))
    })?;
    let row_len = dims.first().copied().unwrap_or(1);
    if row_len % ggml_type.block_size() as u64 != 0 {
        return Err(Error::gguf(format!(
            "tensor {name:?} dim 0 at byte offset {}: row length {row_len} is not a multiple of {ggml_type}'s block size {}",
            n_dims_at + 4,
            ggml_type.block_size()
        )));
    }
    // Bytes per row must fit in i64 too: another dim of 0 (no data at all) must not hide a row
    // whose size overflows (dims [2^62, 0] of F32).
    let overflow = || {
        Error::gguf(format!(
            "tensor {name:?} at byte offset {name_at}: byte size of dims {dims:?} of {ggml_type} overflows"
        ))
    };
    let fits = |n: &u64| *n <= i64::MAX as u64;
    (row_len / ggml_type.block_size() as u64)
        .checked_mul(ggml_type.type_size() as u64)
        .filter(fits)
        .ok_or_else(overflow)?;
    let nbytes = ggml_type.bytes_for(n_elements).ok_or_else(overflow)?;
    let offset_at = c.pos;
    let offset = c.u64(&|| what("offset"))?;
    if offset % alignment != 0 {
        return Err(Error::gguf(format!(
            "tensor {name:?} offset at byte offset {offset_at} is {offset}, not a multiple of the alignment {alignment}"
        )));
    }
    Ok(TensorInfo {
        name,
        dims,
        ggml_type,
        offset,
        nbytes,
        n_elements,
    })
}

/// Tensors must tile the data section: sorted by offset, each starts exactly where the previous
/// one ends, rounded up to the alignment (the first at 0), none runs past the end of the file,
/// and the file ends within the padding after the last one.
fn check_data_layout(
    tensors: &[TensorInfo],
    header_end: u64,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<()> {
    let data_len = file_len.saturating_sub(data_offset);
    let absolute = |data_off: u64| data_offset as u128 + data_off as u128;
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by_key(|&i| (tensors[i].offset, tensors[i].nbytes));
    // End of the tensor data seen so far, and the tensor that ends there.
    let mut end_of_data: u64 = 0;
    let mut last: Option<&TensorInfo> = None;
    for &i in &order {
        let t = &tensors[i];
        let end = match t.offset.checked_add(t.nbytes) {
            Some(end) if end <= data_len => end,
            _ => return Err(Error::gguf(format!(
                "tensor {:?}: its {} bytes at byte offset {} (data offset {}) run past the end of the file ({} bytes, data section starts at {})",
                t.name,
                t.nbytes,
                absolute(t.offset),
                t.offset,
                file_len,
                data_offset
            ))),
        };
        if t.offset < end_of_data {
            let p = last.expect("end_of_data > 0 means a tensor was seen");
            return Err(Error::gguf(format!(
                "tensor {:?} at byte offset {} (data offset {}) overlaps tensor {:?}, which ends at byte offset {}",
                t.name,
                absolute(t.offset),
                t.offset,
                p.name,
                absolute(end_of_data)
            )));
        }
        let expected = end_of_data.next_multiple_of(alignment);
        if t.offset > expected {
            let after = match last {
                Some(p) => format!(
                    "tensor {:?} ends at byte offset {}",
                    p.name,
                    absolute(end_of_data)
                ),
                None => format!("the data section starts at byte offset {data_offset}"),
            };
            return Err(Error::gguf(format!(
                "tensor {:?} at byte offset {} (data offset {}): {} unaccounted bytes before it ({after}, padded to {})",
                t.name,
                absolute(t.offset),
                t.offset,
                t.offset - expected,
                absolute(expected)
            )));
        }
        end_of_data = end;
        last = Some(t);
    }
    if tensors.is_empty() {
        if file_len > data_offset {
            return Err(Error::gguf(format!(
                "{} unexplained bytes at byte offset {data_offset}: the file has no tensors, so it should end with the header (byte {header_end}, padded to {data_offset})",
                file_len - data_offset
            )));
        }
        return Ok(());
    }
    if file_len < data_offset {
        return Err(Error::gguf(format!(
            "file ends at byte offset {file_len}, inside the padding before the data section (which starts at byte offset {data_offset})"
        )));
    }
    let padded_end = end_of_data.next_multiple_of(alignment);
    if data_len > padded_end {
        return Err(Error::gguf(format!(
            "{} unexplained bytes at byte offset {} after the last tensor {:?} (file is {} bytes)",
            data_len - padded_end,
            absolute(padded_end),
            last.map_or("", |t| &t.name),
            file_len
        )));
    }
    Ok(())
}

/// Parse and validate a whole GGUF file held in `buf`.
pub fn parse(buf: &[u8]) -> Result<Header> {
    let mut c = Cursor { buf, pos: 0 };
    let version = read_magic_and_version(&mut c)?;
    let n_tensors = c.u64(&|| "n_tensors".to_string())?;
    let n_kv = c.u64(&|| "n_kv".to_string())?;
    let left = c.remaining();
    let kv_min = n_kv.checked_mul(MIN_KV_SIZE);
    let tensors_min = n_tensors.checked_mul(MIN_TENSOR_INFO_SIZE);
    if kv_min.is_none_or(|n| n > left) {
        return Err(Error::gguf(format!(
            "n_kv at byte offset 16 is {n_kv}: that many metadata entries cannot fit in the {left} bytes left"
        )));
    }
    if tensors_min.is_none_or(|n| n > left) {
        return Err(Error::gguf(format!(
            "n_tensors at byte offset 8 is {n_tensors}: that many tensor infos cannot fit in the {left} bytes left"
        )));
    }

    let md = read_metadata(&mut c, n_kv)?;
    let alignment = alignment_of(&md)?;

    let left = c.remaining();
    if tensors_min.is_none_or(|n| n > left) {
        return Err(Error::gguf(format!(
            "n_tensors at byte offset 8 is {n_tensors}: that many tensor infos cannot fit in the {left} bytes left after the metadata (at byte offset {})",
            c.pos
        )));
    }
    let cap = n_tensors.min(MAX_PREALLOC) as usize;
    let mut tensors: Vec<TensorInfo> = Vec::with_capacity(cap);
    let mut tensor_index = HashMap::with_capacity(cap);
    for i in 0..n_tensors {
        let info_at = c.pos;
        let info = read_tensor_info(&mut c, i, alignment)?;
        if tensor_index.contains_key(&info.name) {
            return Err(Error::gguf(format!(
                "tensor {:?} at byte offset {info_at}: name appears twice",
                info.name
            )));
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    let header_end = c.pos as u64;
    let data_offset = header_end.next_multiple_of(alignment);
    check_data_layout(
        &tensors,
        header_end,
        data_offset,
        alignment,
        buf.len() as u64,
    )?;
    Ok(Header {
        version,
        metadata: md.entries,
        tensors,
        alignment,
        data_offset,
        meta_index: md.index,
        tensor_index,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// name, dims (ggml order), type id, offset
    type TensorEntry = (String, Vec<u64>, u32, u64);

    /// Writes GGUF bytes by hand, so tests can build files no writer would produce.
    struct TestFile {
        version: u32,
        kvs: Vec<(String, u32, Vec<u8>)>,
        tensors: Vec<TensorEntry>,
        alignment: u64,
        data: Vec<u8>,
    }

    fn string(x: &str) -> Vec<u8> {
        let mut out = (x.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(x.as_bytes());
        out
    }

    fn array(elem_type: u32, count: u64, elems: &[u8]) -> Vec<u8> {
        let mut out = elem_type.to_le_bytes().to_vec();
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(elems);
        out
    }

    impl TestFile {
        /// Two tensors: "a" F32 [8] (32 bytes at 0) and "b" F16 [4, 4] (32 bytes at 32), so the
        /// last tensor ends exactly at the end of the file.
        fn valid() -> TestFile {
            let mut data: Vec<u8> = (0..8).flat_map(|i| (i as f32).to_le_bytes()).collect();
            data.extend((0..16).flat_map(|i| half::f16::from_f32(i as f32 * 0.5).to_le_bytes()));
            TestFile {
                version: 3,
                kvs: vec![
                    ("general.architecture".into(), T_STRING, string("llama")),
                    (
                        "llama.block_count".into(),
                        T_U32,
                        2u32.to_le_bytes().to_vec(),
                    ),
                ],
                tensors: vec![("a".into(), vec![8], 0, 0), ("b".into(), vec![4, 4], 1, 32)],
                alignment: DEFAULT_ALIGNMENT,
                data,
            }
        }

        fn kv(mut self, key: &str, t: u32, payload: Vec<u8>) -> Self {
            self.kvs.push((key.into(), t, payload));
            self
        }

        fn header(&self) -> Vec<u8> {
            let mut out = b"GGUF".to_vec();
            out.extend_from_slice(&self.version.to_le_bytes());
            out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
            out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
            for (k, t, payload) in &self.kvs {
                out.extend(string(k));
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(payload);
            }
            for (name, dims, t, offset) in &self.tensors {
                out.extend(string(name));
                out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
                for d in dims {
                    out.extend_from_slice(&d.to_le_bytes());
                }
                out.extend_from_slice(&t.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
            out
        }

        fn bytes(&self) -> Vec<u8> {
            let mut out = self.header();
            out.resize(out.len().next_multiple_of(self.alignment as usize), 0);
            out.extend_from_slice(&self.data);
            out
        }
    }

    fn parse_err(bytes: &[u8]) -> String {
        match parse(bytes) {
            Ok(_) => panic!("parsed a malformed file"),
            Err(Error::Gguf(m)) => m,
            Err(other) => panic!("expected Error::Gguf, got {other:?}"),
        }
    }

    fn assert_err(bytes: &[u8], needles: &[&str]) {
        let msg = parse_err(bytes);
        for n in needles {
            assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
        }
        assert!(
            msg.contains("byte offset"),
            "message {msg:?} gives no byte offset"
        );
    }

    #[test]
    fn valid_file_parses() {
        let f = TestFile::valid()
            .kv("u8", T_U8, vec![200])
            .kv("i8", T_I8, vec![0xff])
            .kv("i64", T_I64, (-5i64).to_le_bytes().to_vec())
            .kv("f64", T_F64, 2.5f64.to_le_bytes().to_vec())
            .kv("flag", T_BOOL, vec![1])
            .kv(
                "ints",
                T_ARRAY,
                array(T_I32, 2, &[1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]),
            )
            .kv(
                "nested",
                T_ARRAY,
                array(T_ARRAY, 1, &array(T_U8, 2, &[7, 9])),
            );
        let bytes = f.bytes();
        let g = GgufFile::from_bytes(bytes.clone()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.alignment, 32);
        assert_eq!(g.architecture(), Some("llama"));
        assert_eq!(g.meta("u8"), Some(&MetaValue::U8(200)));
        assert_eq!(g.meta("i8"), Some(&MetaValue::I8(-1)));
        assert_eq!(g.meta("i64"), Some(&MetaValue::I64(-5)));
        assert_eq!(g.meta("f64"), Some(&MetaValue::F64(2.5)));
        assert_eq!(g.meta("flag"), Some(&MetaValue::Bool(true)));
        assert_eq!(
            g.meta("ints"),
            Some(&MetaValue::Array(vec![
                MetaValue::I32(1),
                MetaValue::I32(-2)
            ]))
        );
        assert_eq!(
            g.meta("nested"),
            Some(&MetaValue::Array(vec![MetaValue::Array(vec![
                MetaValue::U8(7),
                MetaValue::U8(9)
            ])]))
        );
        let (b, b_bytes) = g.tensor("b").unwrap();
        assert_eq!(b.shape(), vec![4, 4]);
        assert_eq!((b.nbytes, b.n_rows(), b.row_bytes()), (32, 4, 8));
        assert_eq!(g.data_offset + 64, bytes.len() as u64);
        assert_eq!(b_bytes, &bytes[bytes.len() - 32..]);
        assert!(g.tensor("missing").is_err());

        let mut v2 = f;
        v2.version = 2;
        assert_eq!(parse(&v2.bytes()).unwrap().version, 2);
    }

    #[test]
    fn every_prefix_is_rejected() {
        let bytes = TestFile::valid().bytes();
        for cut in 0..bytes.len() {
            let msg = parse_err(&bytes[..cut]);
            assert!(cut == 0 || msg.contains("byte offset"), "cut {cut}: {msg}");
        }
        assert!(parse(&bytes).is_ok());
    }

    #[test]
    fn header_fields() {
        let good = TestFile::valid().bytes();
        let patched = |at: usize, b: &[u8]| {
            let mut v = good.clone();
            v[at..at + b.len()].copy_from_slice(b);
            v
        };
        assert_err(&patched(0, b"GGML"), &["magic", "not a GGUF file"]);
        assert_err(&patched(0, b"FUGG"), &["magic", "byte-swapped"]);
        assert_err(&patched(4, &1u32.to_le_bytes()), &["version", "obsolete"]);
        assert_err(
            &patched(4, &3u32.to_be_bytes()),
            &["version", "byte-swapped"],
        );
        assert_err(&patched(4, &4u32.to_le_bytes()), &["version", "4"]);
        assert_err(&patched(8, &u64::MAX.to_le_bytes()), &["n_tensors"]);
        assert_err(&patched(8, &(1u64 << 40).to_le_bytes()), &["n_tensors"]);
        assert_err(&patched(16, &u64::MAX.to_le_bytes()), &["n_kv"]);
        assert_err(&patched(16, &(1u64 << 40).to_le_bytes()), &["n_kv"]);
        // One more entry than there is: the tensor infos are read as metadata and fail.
        assert!(parse(&patched(16, &3u64.to_le_bytes())).is_err());
    }

    #[test]
    fn metadata_entries() {
        let v = TestFile::valid;
        let huge = u64::MAX.to_le_bytes().to_vec();
        assert_err(
            &v().kv("s", T_STRING, huge.clone()).bytes(),
            &["\"s\"", "string length"],
        );
        let past_eof = 1_000_000u64.to_le_bytes().to_vec();
        assert_err(
            &v().kv("s", T_STRING, past_eof).bytes(),
            &["\"s\"", "needs 1000000 bytes"],
        );
        let mut bytes = v().kv("QZQ", T_U8, vec![1]).bytes();
        let key_at = bytes.windows(3).position(|w| w == b"QZQ").unwrap();
        bytes[key_at + 1] = 0xff;
        assert_err(&bytes, &["metadata key #2", "UTF-8"]);
        assert_err(
            &v().kv("", T_U8, vec![1]).bytes(),
            &["metadata key #2", "empty"],
        );
        assert_err(
            &v().kv("llama.block_count", T_U8, vec![1]).bytes(),
            &["llama.block_count", "twice"],
        );
        assert_err(
            &v().kv("t", 13, vec![0; 8]).bytes(),
            &["\"t\"", "unknown value type 13"],
        );
        assert_err(
            &v().kv("t", T_ARRAY, array(99, 1, &[0])).bytes(),
            &["\"t\"", "element type 99"],
        );
        assert_err(
            &v().kv("t", T_ARRAY, array(T_U32, 1 << 60, &[])).bytes(),
            &["\"t\"", "array count"],
        );
        assert_err(
            &v().kv("t", T_ARRAY, array(T_U8, u64::MAX, &[])).bytes(),
            &["\"t\"", "array count"],
        );
        let three_deep = array(T_ARRAY, 1, &array(T_ARRAY, 1, &array(T_U8, 1, &[1])));
        assert_err(
            &v().kv("t", T_ARRAY, three_deep).bytes(),
            &["\"t\"[0]", "nested"],
        );
        assert_err(
            &v().kv("flag", T_BOOL, vec![2]).bytes(),
            &["\"flag\"", "bool byte is 2"],
        );
        assert_err(
            &v().kv("flags", T_ARRAY, array(T_BOOL, 2, &[1, 7])).bytes(),
            &["\"flags\"[1]", "bool"],
        );
        let long_key = "k".repeat(MAX_KEY_LEN as usize + 1);
        assert_err(
            &v().kv(&long_key, T_U8, vec![1]).bytes(),
            &["metadata key #2", "over the limit"],
        );
    }

    #[test]
    fn alignment() {
        let v = TestFile::valid;
        for bad in [0u32, 3, 48, 1 << 21] {
            let msg = parse_err(
                &v().kv("general.alignment", T_U32, bad.to_le_bytes().to_vec())
                    .bytes(),
            );
            assert!(
                msg.contains("general.alignment") && msg.contains("byte offset"),
                "{msg}"
            );
        }
        let wrong_type = v().kv("general.alignment", T_U64, 32u64.to_le_bytes().to_vec());
        assert_err(&wrong_type.bytes(), &["general.alignment", "type u64"]);
        let mut big = v().kv("general.alignment", T_U32, 128u32.to_le_bytes().to_vec());
        big.alignment = 128;
        big.tensors[1].3 = 128;
        big.data = [&big.data[..32], &[0u8; 96][..], &big.data[32..]].concat();
        let g = parse(&big.bytes()).unwrap();
        assert_eq!((g.alignment, g.data_offset % 128), (128, 0));
        // With alignment 128, "b" at 32 is misaligned.
        let mut misaligned = v().kv("general.alignment", T_U32, 128u32.to_le_bytes().to_vec());
        misaligned.alignment = 128;
        assert_err(
            &misaligned.bytes(),
            &["\"b\"", "not a multiple of the alignment 128"],
        );
    }

    #[test]
    fn tensor_infos() {
        let with = |i: usize, f: &dyn Fn(&mut TensorEntry)| {
            let mut t = TestFile::valid();
            f(&mut t.tensors[i]);
            t.bytes()
        };
        assert_err(
            &with(1, &|t| t.0 = String::new()),
            &["tensor #1", "empty name"],
        );
        assert_err(&with(1, &|t| t.0 = "a".into()), &["\"a\"", "twice"]);
        assert_err(
            &with(1, &|t| t.0 = "n".repeat(65)),
            &["tensor #1 name", "over the limit of 64"],
        );
        assert!(parse(&with(1, &|t| t.0 = "n".repeat(64))).is_ok());
        assert_err(&with(1, &|t| t.1 = vec![1; 5]), &["\"b\"", "n_dims", "5"]);
        assert_err(
            &with(1, &|t| t.1 = vec![4, u64::MAX]),
            &["\"b\"", "dim 1", "negative"],
        );
        assert_err(
            &with(1, &|t| t.1 = vec![1 << 32, 1 << 32]),
            &["\"b\"", "dim 1", "overflows"],
        );
        // A zero dim must not hide an overflowing product of the others, nor a row whose byte
        // size overflows (found by fuzzing: fuzz/regressions/row-bytes-overflow-zero-dim.gguf).
        assert_err(
            &with(1, &|t| t.1 = vec![0, 1 << 40, 1 << 40]),
            &["\"b\"", "dim 2", "overflows"],
        );
        assert_err(
            &with(1, &|t| {
                t.1 = vec![1 << 62, 0];
                t.2 = 0;
            }),
            &["\"b\"", "byte size", "overflows"],
        );
        assert_err(
            &with(1, &|t| {
                t.1 = vec![1 << 61, 0, 3];
                t.2 = 28;
            }),
            &["\"b\"", "byte size", "overflows"],
        );
        assert_err(&with(1, &|t| t.2 = 4), &["\"b\"", "retired ggml type id 4"]);
        assert_err(&with(1, &|t| t.2 = 1000), &["\"b\"", "type id 1000"]);
        assert_err(&with(1, &|t| t.2 = 8), &["\"b\"", "block size 32"]); // Q8_0, row of 4
        assert_err(&with(1, &|t| t.3 = 33), &["\"b\"", "alignment 32"]);
        assert_err(&with(1, &|t| t.3 = 64), &["\"b\"", "past the end"]);
        assert_err(
            &with(1, &|t| t.3 = u64::MAX - 31),
            &["\"b\"", "past the end"],
        );
        assert_err(&with(1, &|t| t.3 = 0), &["\"b\"", "overlaps tensor \"a\""]);
        // Q8_0 [32 x 2^57]: 34 * 2^57 bytes fits in u64 but is far past the end.
        assert_err(
            &with(1, &|t| {
                t.1 = vec![32, 1 << 57];
                t.2 = 8;
            }),
            &["\"b\"", "past the end"],
        );
        // F64 [2^62]: 2^62 elements are fine, 2^65 bytes are not.
        assert_err(
            &with(1, &|t| {
                t.1 = vec![1 << 62];
                t.2 = 28;
            }),
            &["\"b\"", "byte size", "overflows"],
        );
    }

    #[test]
    fn data_section_is_tiled_exactly() {
        let mut gap = TestFile::valid();
        gap.tensors[1].3 = 64;
        gap.data.extend_from_slice(&[0; 32]);
        assert_err(&gap.bytes(), &["\"b\"", "32 unaccounted bytes"]);
        let mut late_start = TestFile::valid();
        late_start.tensors[0].3 = 64;
        late_start.tensors[1].3 = 96;
        late_start.data = [vec![0; 64], late_start.data].concat();
        assert_err(&late_start.bytes(), &["\"a\"", "64 unaccounted bytes"]);
        let mut trailing = TestFile::valid().bytes();
        trailing.extend_from_slice(&[0; 33]);
        assert_err(&trailing, &["unexplained bytes", "\"b\""]);
        // Padding after the last tensor (up to the alignment) is fine, as writers produce it.
        let mut short_last = TestFile::valid();
        short_last.tensors[1].1 = vec![4, 3];
        short_last.data.truncate(56);
        assert!(parse(&short_last.bytes()).is_ok());
        short_last.data.extend_from_slice(&[0; 8]);
        assert!(parse(&short_last.bytes()).is_ok());
        short_last.data.push(0);
        assert!(parse(&short_last.bytes()).is_err());
        // Listed out of order is fine as long as the data tiles.
        let mut swapped = TestFile::valid();
        swapped.tensors.swap(0, 1);
        assert!(parse(&swapped.bytes()).is_ok());
    }

    /// Every input the fuzzer ever flagged (fuzz/regressions/) parses or fails cleanly, and a
    /// parsed one keeps the reader's promises.
    #[test]
    fn fuzz_regressions() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            n += 1;
            let Ok(g) = GgufFile::from_bytes(bytes) else {
                continue;
            };
            for (key, value) in &g.metadata {
                assert!(
                    std::ptr::eq(g.meta(key).unwrap(), value),
                    "{}",
                    path.display()
                );
            }
            for t in &g.tensors {
                assert_eq!(g.tensor_bytes(t).len() as u64, t.nbytes);
                assert_eq!(t.n_rows() as u64 * t.row_bytes() as u64, t.nbytes);
            }
        }
        assert!(n > 0, "no regression inputs in {}", dir.display());
    }

    #[test]
    fn nan_metadata() {
        let floats = [f32::NAN, -1.0]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<_>>();
        let f = TestFile::valid().kv("t.floats", T_ARRAY, array(T_F32, 2, &floats));
        let g = parse(&f.bytes()).unwrap();
        let v = g.metadata.iter().find(|(k, _)| k == "t.floats").unwrap();
        assert!(v.1.as_array().unwrap()[0].as_f64().unwrap().is_nan());
    }

    #[test]
    fn no_tensors_and_scalars() {
        let mut empty = TestFile::valid();
        empty.tensors.clear();
        empty.data.clear();
        let header = empty.header();
        assert!(parse(&header).is_ok());
        assert!(parse(&empty.bytes()).is_ok());
        let mut extra = empty.bytes();
        extra.extend_from_slice(&[0; 32]);
        assert_err(&extra, &["unexplained bytes"]);

        let mut scalar = TestFile::valid();
        scalar.tensors[1] = ("s".into(), vec![], 0, 32);
        scalar.data.truncate(36);
        let g = GgufFile::from_bytes(scalar.bytes()).unwrap();
        let (s, s_bytes) = g.tensor("s").unwrap();
        assert_eq!(
            (s.shape(), s.n_elements, s.n_rows(), s.row_bytes()),
            (vec![], 1, 1, 4)
        );
        assert_eq!(s_bytes.len(), 4);
    }
}
