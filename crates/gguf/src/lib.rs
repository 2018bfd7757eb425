//! llama.cpp GGUF files (v2/v3): metadata, tensor table and dequantisation of
//! F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 and the k-quants Q4_K/Q5_K/Q6_K (what
//! llama.cpp's `Q4_K_M`-style files hold) to f32.
//!
//! Every length, count and offset read from the file is checked against the file size
//! before use: a malformed file gives [`GgufError::Format`], never a panic or an
//! out-of-bounds read. This crate has no tensor-library dependency, so it can be fuzzed
//! on its own (`fuzz/` in the burn-lora repository); burn-lora re-exports it as
//! `burn_lora::io::gguf`.
#![deny(missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

/// What can go wrong reading a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file is malformed.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A tensor name is not in the file.
    #[error("tensor `{name}` not found in {}", path.display())]
    MissingTensor {
        /// The name looked up.
        name: String,
        /// The file.
        path: PathBuf,
    },
    /// Opening or mapping the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`GgufError`].
pub type Result<T> = std::result::Result<T, GgufError>;

fn io_err(path: &Path, source: std::io::Error) -> GgufError {
    GgufError::Io {
        path: path.to_path_buf(),
        source,
    }
}

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// Upper bound on array/string lengths and counts, far above any real file, so a
/// corrupted count fails fast instead of allocating.
const MAX_COUNT: u64 = 1 << 28;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// Unsigned integer (u8/u16/u32/u64).
    U64(u64),
    /// Signed integer (i8/i16/i32/i64).
    I64(i64),
    /// Float (f32/f64).
    F64(f64),
    /// Boolean.
    Bool(bool),
    /// UTF-8 string.
    Str(String),
    /// Array of values.
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// As an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            GgufValue::U64(v) => Some(*v),
            GgufValue::I64(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }

    /// As a float.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            GgufValue::F64(v) => Some(*v),
            GgufValue::U64(v) => Some(*v as f64),
            GgufValue::I64(v) => Some(*v as f64),
            _ => None,
        }
    }

    /// As a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// As an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// ggml tensor types this reader can dequantise (named as ggml names them).
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit float.
    F16,
    /// bfloat16.
    BF16,
    /// Blocks of 32: f16 scale + 32 × int8.
    Q8_0,
    /// Blocks of 32: f16 scale + 32 × 4-bit (offset 8).
    Q4_0,
    /// Blocks of 32: f16 scale, f16 minimum + 32 × 4-bit.
    Q4_1,
    /// Blocks of 32: f16 scale + 32 × 5-bit (offset 16).
    Q5_0,
    /// Blocks of 32: f16 scale, f16 minimum + 32 × 5-bit.
    Q5_1,
    /// Super-blocks of 256: f16 scale and minimum, 8 × 6-bit sub-block scales and
    /// minimums, 256 × 4-bit.
    Q4_K,
    /// As [`GgmlType::Q4_K`] with 5-bit values.
    Q5_K,
    /// Super-blocks of 256: 256 × 6-bit (offset 32), 16 × int8 sub-block scales, f16 scale.
    Q6_K,
}

impl GgmlType {
    fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            13 => GgmlType::Q5_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// Elements per block and bytes per block (1 and the element size for float types).
    pub fn block_layout(self) -> (usize, usize) {
        let (elements, bytes) = self.block();
        (elements as usize, bytes as usize)
    }

    /// Whether values are stored in quantised blocks (not as plain floats).
    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    /// (elements per block, bytes per block).
    fn block(self) -> (u64, u64) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q4_K => (256, 144),
            GgmlType::Q5_K => (256, 176),
            GgmlType::Q6_K => (256, 210),
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name (`blk.0.attn_q.weight`, ...).
    pub name: String,
    /// Dimensions in ggml order (fastest-varying first); PyTorch's shape is the reverse.
    pub dims: Vec<u64>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Byte length of the data.
    pub size: u64,
}

impl GgufTensorInfo {
    /// The shape in PyTorch order (`[rows, cols]` for a `[out, in]` weight).
    pub fn torch_shape(&self) -> Vec<usize> {
        self.dims.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A parsed GGUF file held in memory (or memory-mapped by the caller).
#[derive(Debug)]
pub struct GgufFile {
    path: PathBuf,
    /// Format version.
    pub version: u32,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, GgufTensorInfo>,
    data: memmap2::Mmap,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, message: impl Into<String>) -> GgufError {
        GgufError::Format {
            path: self.path.to_path_buf(),
            message: format!("{} (at byte {})", message.into(), self.pos),
        }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8]> {
        let n = usize::try_from(n).map_err(|_| self.err("length overflows"))?;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.err(format!("truncated: need {n} more bytes")))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn count(&mut self, what: &str) -> Result<u64> {
        let n = self.u64()?;
        if n > MAX_COUNT {
            return Err(self.err(format!("{what} count {n} is implausibly large")));
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<String> {
        let n = self.count("string length")?;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| self.err("string is not UTF-8"))
    }

    fn value(&mut self, ty: u32, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U64(self.u8()? as u64),
            1 => GgufValue::I64(self.u8()? as i8 as i64),
            2 => GgufValue::U64(self.u16()? as u64),
            3 => GgufValue::I64(self.u16()? as i16 as i64),
            4 => GgufValue::U64(self.u32()? as u64),
            5 => GgufValue::I64(self.u32()? as i32 as i64),
            6 => GgufValue::F64(f32::from_bits(self.u32()?) as f64),
            7 => GgufValue::Bool(self.u8()? != 0),
            8 => GgufValue::Str(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.err("arrays nested too deeply"));
                }
                let inner = self.u32()?;
                let n = self.count("array")?;
                // Each element takes at least one byte: a count beyond the rest of the
                // file is corrupt.
                if n > (self.bytes.len() - self.pos) as u64 {
                    return Err(self.err(format!("array of {n} elements exceeds the file")));
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(inner, depth + 1)?);
                }
                GgufValue::Array(v)
            }
            10 => GgufValue::U64(self.u64()?),
            11 => GgufValue::I64(self.u64()? as i64),
            12 => GgufValue::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.err(format!("unknown metadata value type {other}"))),
        })
    }
}

/// A parsed header: version, metadata, tensor table.
pub type GgufHeader = (
    u32,
    BTreeMap<String, GgufValue>,
    BTreeMap<String, GgufTensorInfo>,
);

/// Parse a GGUF header and tensor table from bytes (the whole file).
pub fn parse_header(bytes: &[u8], path: &Path) -> Result<GgufHeader> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        path,
    };
    if c.take(4)? != MAGIC {
        return Err(c.err("bad magic: not a GGUF file"));
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(c.err(format!("unsupported GGUF version {version}")));
    }
    let n_tensors = c.count("tensor")?;
    let n_kv = c.count("metadata")?;
    let mut metadata = BTreeMap::new();
    for _ in 0..n_kv {
        let key = c.string()?;
        let ty = c.u32()?;
        let value = c.value(ty, 0)?;
        metadata.insert(key, value);
    }
    let alignment = metadata
        .get("general.alignment")
        .and_then(GgufValue::as_u64)
        .unwrap_or(DEFAULT_ALIGNMENT);
    if alignment == 0 || !alignment.is_power_of_two() {
        return Err(c.err(format!("bad alignment {alignment}")));
    }
    let mut infos = Vec::new();
    for _ in 0..n_tensors {
        let name = c.string()?;
        let n_dims = c.u32()?;
        if n_dims == 0 || n_dims > 4 {
            return Err(c.err(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(c.u64()?);
        }
        let type_id = c.u32()?;
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            c.err(format!(
                "tensor `{name}` has unsupported ggml type {type_id}"
            ))
        })?;
        let offset = c.u64()?;
        infos.push((name, dims, ggml_type, offset));
    }
    let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
    let mut tensors = BTreeMap::new();
    for (name, dims, ggml_type, offset) in infos {
        let elements = dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| c.err(format!("tensor `{name}`: element count overflows")))?;
        let (per_block, block_bytes) = ggml_type.block();
        if elements % per_block != 0 {
            return Err(c.err(format!(
                "tensor `{name}`: {elements} elements is not a whole number of blocks"
            )));
        }
        let size = (elements / per_block)
            .checked_mul(block_bytes)
            .ok_or_else(|| c.err(format!("tensor `{name}`: size overflows")))?;
        let start = data_start
            .checked_add(offset)
            .ok_or_else(|| c.err(format!("tensor `{name}`: offset overflows")))?;
        start
            .checked_add(size)
            .filter(|&e| e <= bytes.len() as u64)
            .ok_or_else(|| {
                c.err(format!(
                    "tensor `{name}`: data [{start}, +{size}) lies past the end of the file"
                ))
            })?;
        tensors.insert(
            name.clone(),
            GgufTensorInfo {
                name,
                dims,
                ggml_type,
                offset: start,
                size,
            },
        );
    }
    Ok((version, metadata, tensors))
}

impl GgufFile {
    /// Open and parse a GGUF file (memory-mapped).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
        // SAFETY: read-only map of a file this process does not modify.
        let data = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| io_err(&path, e))?;
        let (version, metadata, tensors) = parse_header(&data, &path)?;
        Ok(GgufFile {
            path,
            version,
            metadata,
            tensors,
            data,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// A required unsigned metadata value.
    pub fn meta_u64(&self, key: &str) -> Result<u64> {
        self.meta(key)
            .and_then(GgufValue::as_u64)
            .ok_or_else(|| GgufError::Format {
                path: self.path.clone(),
                message: format!("metadata `{key}` missing or not an integer"),
            })
    }

    /// Tensor `name` as stored: its type, its raw bytes (a whole number of blocks) and its
    /// PyTorch-order shape.
    pub fn raw(&self, name: &str) -> Result<(GgmlType, &[u8], Vec<usize>)> {
        let info = self
            .tensors
            .get(name)
            .ok_or_else(|| GgufError::MissingTensor {
                name: name.to_string(),
                path: self.path.clone(),
            })?;
        // Bounds were checked at parse time.
        let bytes = &self.data[info.offset as usize..(info.offset + info.size) as usize];
        Ok((info.ggml_type, bytes, info.torch_shape()))
    }

    /// Dequantise tensor `name` to f32, returning values and the PyTorch-order shape.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (ty, bytes, shape) = self.raw(name)?;
        Ok((dequantize(ty, bytes), shape))
    }
}

/// Dequantise raw ggml data of a whole number of blocks.
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let f16_at = |b: &[u8], i: usize| f16::from_le_bytes([b[i], b[i + 1]]).to_f32();
    // Block sizes come from the same table the parser checked the tensor against.
    let (per_block, block_bytes) = ty.block();
    let blocks = bytes.chunks_exact(block_bytes as usize);
    let mut out = Vec::with_capacity(blocks.len() * per_block as usize);
    match ty {
        GgmlType::F32 => {
            out.extend(blocks.map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
        }
        GgmlType::F16 => out.extend(blocks.map(|c| f16_at(c, 0))),
        GgmlType::BF16 => out.extend(blocks.map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())),
        GgmlType::Q8_0 => {
            for block in blocks {
                let d = f16_at(block, 0);
                out.extend(block[2..].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
            // f16 scale [+ f16 minimum] [+ u32 of fifth bits] + 16 bytes of nibbles.
            let with_min = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
            let five = matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1);
            let header = if with_min { 4 } else { 2 };
            let nibbles_at = header + if five { 4 } else { 0 };
            let offset_q = match ty {
                GgmlType::Q4_0 => 8.0,
                GgmlType::Q5_0 => 16.0,
                _ => 0.0,
            };
            for block in blocks {
                let d = f16_at(block, 0);
                let m = if with_min { f16_at(block, 2) } else { 0.0 };
                let high = if five {
                    u32::from_le_bytes([
                        block[header],
                        block[header + 1],
                        block[header + 2],
                        block[header + 3],
                    ])
                } else {
                    0
                };
                // Low nibbles are elements 0..16, high nibbles 16..32; bit j of `high` is
                // element j's fifth bit.
                let fifth = |j: usize| (((high >> j) & 1) << 4) as u8;
                let mut vals = [0f32; 32];
                for (j, &q) in block[nibbles_at..].iter().enumerate() {
                    vals[j] = (((q & 0x0F) | fifth(j)) as f32 - offset_q) * d + m;
                    vals[j + 16] = (((q >> 4) | fifth(j + 16)) as f32 - offset_q) * d + m;
                }
                out.extend_from_slice(&vals);
            }
        }
        GgmlType::Q4_K | GgmlType::Q5_K => {
            let five = ty == GgmlType::Q5_K;
            for block in blocks {
                let d = f16_at(block, 0);
                let dmin = f16_at(block, 2);
                let scales = &block[4..16];
                let (high, qs) = if five {
                    (Some(&block[16..48]), &block[48..])
                } else {
                    (None, &block[16..])
                };
                // Sub-block j (32 values) takes the low nibbles of 32 bytes of `qs` for even
                // j, the high nibbles for odd j; Q5_K adds bit j of each `high` byte.
                for j in 0..8 {
                    let (sc, m) = k_scale_min(scales, j);
                    let (scale, min) = (d * sc as f32, dmin * m as f32);
                    let bytes_q = &qs[(j / 2) * 32..(j / 2) * 32 + 32];
                    for (l, &q) in bytes_q.iter().enumerate() {
                        let mut v = if j % 2 == 0 { q & 0x0F } else { q >> 4 };
                        if let Some(h) = high {
                            v |= ((h[l] >> j) & 1) << 4;
                        }
                        out.push(scale * v as f32 - min);
                    }
                }
            }
        }
        GgmlType::Q6_K => {
            for block in blocks {
                let (low, rest) = block.split_at(128);
                let (high, rest) = rest.split_at(64);
                let (scales, d) = rest.split_at(16);
                let d = f16_at(d, 0);
                // Two halves of 128 values; chunk c of 32 inside a half reads nibble c/2 of
                // bytes (c%2)*32.. of the half's 64 low bytes and bits 2c..2c+2 of its 32
                // high bytes. Each run of 16 values shares one int8 scale.
                for half in 0..2 {
                    for c in 0..4 {
                        for l in 0..32 {
                            let lo = low[half * 64 + (c % 2) * 32 + l];
                            let lo = if c < 2 { lo & 0x0F } else { lo >> 4 };
                            let hi = (high[half * 32 + l] >> (2 * c)) & 3;
                            let q = (lo | (hi << 4)) as i32 - 32;
                            let element = half * 128 + c * 32 + l;
                            let scale = scales[element / 16] as i8 as f32;
                            out.push(d * scale * q as f32);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Scale and minimum (6 bits each) of sub-block `j` in a k-quant's 12 packed bytes:
/// sub-blocks 0..4 sit in the low 6 bits of bytes `j` and `j+4`; 4..8 take a nibble of
/// byte `j+4` and the top two bits of bytes `j-4` and `j`.
fn k_scale_min(scales: &[u8], j: usize) -> (u8, u8) {
    if j < 4 {
        (scales[j] & 63, scales[j + 4] & 63)
    } else {
        (
            (scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4),
            (scales[j + 4] >> 4) | ((scales[j] >> 6) << 4),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid GGUF: one u32 metadata entry and one 2×2 F32 tensor.
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&1u64.to_le_bytes()); // tensors
        b.extend_from_slice(&1u64.to_le_bytes()); // kv
        let key = b"llama.block_count";
        b.extend_from_slice(&(key.len() as u64).to_le_bytes());
        b.extend_from_slice(key);
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        let name = b"w";
        b.extend_from_slice(&(name.len() as u64).to_le_bytes());
        b.extend_from_slice(name);
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // F32
        b.extend_from_slice(&0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for v in [1f32, 2.0, 3.0, 4.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b
    }

    fn parse(b: &[u8]) -> Result<GgufHeader> {
        parse_header(b, Path::new("test.gguf"))
    }

    #[test]
    fn parses_a_valid_file() {
        let (v, meta, tensors) = parse(&tiny()).unwrap();
        assert_eq!(v, 3);
        assert_eq!(meta["llama.block_count"].as_u64(), Some(2));
        assert_eq!(tensors["w"].torch_shape(), vec![2, 2]);
    }

    #[test]
    fn malformed_files_are_errors() {
        let good = tiny();
        // Every truncation is an error, never a panic.
        for n in 0..good.len() - 1 {
            assert!(parse(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut bad = good.clone();
        bad[0] = b'X';
        assert!(parse(&bad).is_err());
        let mut huge = good.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&huge).is_err());
        // Header 24 bytes, metadata entry 33, then name (8 + 1), n_dims 4, dims 16: the
        // type id is at byte 86 and the data offset at 90.
        let mut unknown = good.clone();
        unknown[86..90].copy_from_slice(&99u32.to_le_bytes());
        assert!(parse(&unknown).is_err());
        let mut past_end = good.clone();
        past_end[90..98].copy_from_slice(&64u64.to_le_bytes());
        assert!(parse(&past_end).is_err());
        let mut dims_overflow = good.clone();
        dims_overflow[70..78].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(parse(&dims_overflow).is_err());
    }

    #[test]
    fn dequantizes_blocks() {
        // Q4_1: d = 0.5, m = -1, nibbles 0..15 then 15..0.
        let mut block = Vec::new();
        block.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for j in 0..16u8 {
            block.push(j | ((15 - j) << 4));
        }
        let v = dequantize(GgmlType::Q4_1, &block);
        assert_eq!(v[0], -1.0);
        assert_eq!(v[15], 6.5);
        assert_eq!(v[16], 6.5);
        // Q8_0: d = 0.25, q = -4.
        let mut q8 = f16::from_f32(0.25).to_le_bytes().to_vec();
        q8.extend(std::iter::repeat_n((-4i8) as u8, 32));
        assert!(dequantize(GgmlType::Q8_0, &q8).iter().all(|&x| x == -1.0));
    }
}
