//! MXNet's `.params` NDArray-list format.
//!
//! Layout (little endian): `u64 0x112`, `u64 reserved`, `u64 count`, `count` arrays, `u64 count`,
//! `count` names (`u64 length` + bytes, prefixed `arg:` or `aux:`). An array is one of
//! - legacy: `u32 ndim`, `ndim x u32 dims`, context, `i32 dtype`, data;
//! - V1 (`0xF993FAC8`): magic, `u32 ndim`, `ndim x i64 dims`, context, dtype, data;
//! - V2 (`0xF993FAC9`) and V3 (`0xF993FACA`, numpy shape semantics): magic, `i32 storage type`, then
//!   as V1 (sparse storage adds a storage shape and aux arrays, which accnn refuses).
//!
//! The context is `i32 dev_type, i32 dev_id`. Every count and size is checked against the bytes left
//! in the file before anything is allocated, so a corrupt or hostile file cannot exhaust memory.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::GraphError;
use crate::tensor::{DType, Tensor, element_count};

const LIST_MAGIC: u64 = 0x112;
const V1_MAGIC: u32 = 0xF993_FAC8;
const V2_MAGIC: u32 = 0xF993_FAC9;
const V3_MAGIC: u32 = 0xF993_FACA;
const MAX_NDIM: usize = 32;

/// Arrays of a params file, split by their `arg:`/`aux:` prefix.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSet {
    pub args: BTreeMap<String, Tensor>,
    pub aux: BTreeMap<String, Tensor>,
}

/// A params file read front to back, from bytes in memory or straight from the file (so that a large
/// model is not held twice while it is parsed). `len` is the source's total size: every size is
/// checked against what is left before anything is read or allocated.
struct Reader<'a> {
    src: &'a mut dyn std::io::Read,
    len: usize,
    pos: usize,
    path: &'a Path,
    scratch: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn err(&self, message: impl std::fmt::Display) -> GraphError {
        GraphError::format(self.path, format!("{message} (at byte {})", self.pos))
    }

    /// Checks that `n` more bytes exist.
    fn need(&self, n: usize, what: &str) -> Result<(), GraphError> {
        let left = self.left();
        if n > left {
            return Err(self.err(format_args!("truncated: {what} needs {n} bytes, {left} left")));
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), GraphError> {
        self.src.read_exact(buf).map_err(|e| GraphError::io(self.path, e))?;
        self.pos += buf.len();
        Ok(())
    }

    /// The next `n` bytes (a small item: a header field or a name).
    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], GraphError> {
        self.need(n, what)?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(n, 0);
        self.fill(&mut buf)?;
        self.scratch = buf;
        Ok(&self.scratch)
    }

    /// `count` elements of `size` bytes each, decoded by `decode`, read in pieces.
    fn values(&mut self, count: usize, size: usize, decode: impl Fn(&[u8]) -> f32) -> Result<Vec<f32>, GraphError> {
        let mut out = Vec::with_capacity(count);
        let mut chunk = vec![0u8; ((1 << 20) / size * size).min(count * size)];
        let mut left = count * size;
        while left > 0 {
            let take = left.min(chunk.len());
            let piece = &mut chunk[..take];
            self.fill(piece)?;
            out.extend(piece.chunks_exact(size).map(&decode));
            left -= piece.len();
        }
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GraphError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn i32(&mut self, what: &str) -> Result<i32, GraphError> {
        Ok(i32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, GraphError> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn i64(&mut self, what: &str) -> Result<i64, GraphError> {
        Ok(i64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn left(&self) -> usize {
        self.len - self.pos
    }

    /// A count of items each at least `min_item_bytes` long, checked against the bytes left.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize, GraphError> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes) <= self.left());
        fits.ok_or_else(|| self.err(format_args!("{what} is {n}, more than the file can hold")))
    }

    /// Shape with `i64` dims (V1..V3). `None` means an empty ("none") array.
    fn shape_i64(&mut self, numpy_semantics: bool) -> Result<Option<Vec<usize>>, GraphError> {
        let ndim = self.i32("ndim")?;
        if numpy_semantics && ndim == -1 {
            return Ok(None);
        }
        if ndim < 0 || ndim as usize > MAX_NDIM {
            return Err(self.err(format_args!("invalid number of dimensions {ndim}")));
        }
        if ndim == 0 && !numpy_semantics {
            return Ok(None);
        }
        let mut dims = Vec::with_capacity(ndim as usize);
        for _ in 0..ndim {
            let d = self.i64("dimension")?;
            if d < 0 {
                return Err(self.err(format_args!("negative dimension {d}")));
            }
            dims.push(usize::try_from(d).map_err(|_| self.err(format_args!("dimension {d} too large")))?);
        }
        Ok(Some(dims))
    }

    fn array(&mut self, index: usize) -> Result<Option<Tensor>, GraphError> {
        let first = self.u32("array header")?;
        let shape = match first {
            V2_MAGIC | V3_MAGIC => {
                let stype = self.i32("storage type")?;
                match stype {
                    0 => {}
                    1 | 2 => {
                        let kind = if stype == 1 { "row_sparse" } else { "csr" };
                        return Err(self.err(format_args!(
                            "array #{index} uses {kind} storage; accnn reads dense arrays only (convert it with .tostype('default'))"
                        )));
                    }
                    other => return Err(self.err(format_args!("array #{index} has unknown storage type {other}"))),
                }
                self.shape_i64(first == V3_MAGIC)?
            }
            V1_MAGIC => self.shape_i64(false)?,
            ndim => {
                // Legacy layout: the first word is the number of dimensions, dims are u32.
                let ndim = ndim as usize;
                if ndim > MAX_NDIM {
                    return Err(self.err(format_args!("array #{index}: unknown header {first:#x}")));
                }
                if ndim == 0 {
                    None
                } else {
                    let mut dims = Vec::with_capacity(ndim);
                    for _ in 0..ndim {
                        dims.push(self.u32("dimension")? as usize);
                    }
                    Some(dims)
                }
            }
        };
        let Some(shape) = shape else { return Ok(None) };
        let _dev_type = self.i32("context")?;
        let _dev_id = self.i32("context")?;
        let flag = self.i32("dtype")?;
        let dtype = match flag {
            0 => DType::Float32,
            1 => DType::Float64,
            2 => DType::Float16,
            3..=7 | 12 => {
                return Err(self.err(format_args!(
                    "array #{index} has integer dtype flag {flag}; accnn reads float32, float64 and float16 weights"
                )));
            }
            other => return Err(self.err(format_args!("array #{index} has unknown dtype flag {other}"))),
        };
        let n = element_count(&shape).map_err(|e| self.err(e))?;
        let bytes = n
            .checked_mul(dtype.size())
            .ok_or_else(|| self.err(format_args!("array #{index} of shape {shape:?} is too large")))?;
        self.need(bytes, "array data")?;
        let data = match dtype {
            DType::Float32 => self.values(n, 4, |c| f32::from_le_bytes(c.try_into().expect("4")))?,
            DType::Float64 => self.values(n, 8, |c| f64::from_le_bytes(c.try_into().expect("8")) as f32)?,
            DType::Float16 => self.values(n, 2, |c| half::f16::from_le_bytes(c.try_into().expect("2")).to_f32())?,
        };
        Ok(Some(Tensor::new(shape, data)?.with_stored_type(dtype)))
    }
}

/// Parses the bytes of a params file; `path` is only used in error messages.
pub fn parse_params(bytes: &[u8], path: &Path) -> Result<ParamSet, GraphError> {
    parse_from(&mut &bytes[..], bytes.len(), path)
}

/// Reads a params file, straight from the disk into the tensors.
pub fn read_params(path: &Path) -> Result<ParamSet, GraphError> {
    let file = std::fs::File::open(path).map_err(|e| GraphError::io(path, e))?;
    let len = file.metadata().map_err(|e| GraphError::io(path, e))?.len();
    let len = usize::try_from(len).map_err(|_| GraphError::format(path, "too large for this machine"))?;
    parse_from(&mut std::io::BufReader::with_capacity(1 << 16, file), len, path)
}

fn parse_from(src: &mut dyn std::io::Read, len: usize, path: &Path) -> Result<ParamSet, GraphError> {
    let mut r = Reader {
        src,
        len,
        pos: 0,
        path,
        scratch: Vec::new(),
    };
    let magic = r.u64("header")?;
    if magic != LIST_MAGIC {
        return Err(r.err(format_args!(
            "not an MXNet params file (magic {magic:#x}, expected 0x112)"
        )));
    }
    let _reserved = r.u64("header")?;
    // The smallest array is a legacy empty one: a single u32.
    let count = r.count("array count", 4)?;
    let mut arrays = Vec::with_capacity(count);
    for i in 0..count {
        arrays.push(r.array(i)?);
    }
    let name_count = r.count("name count", 8)?;
    if name_count != count {
        return Err(r.err(format_args!("{count} arrays but {name_count} names")));
    }
    let mut set = ParamSet::default();
    for (i, array) in arrays.into_iter().enumerate() {
        let len = r.count("name length", 1)?;
        let raw = r.take(len, "name")?.to_vec();
        let name = std::str::from_utf8(&raw).map_err(|_| r.err(format_args!("name #{i} is not UTF-8")))?;
        let (map, key) = if let Some(k) = name.strip_prefix("arg:") {
            (&mut set.args, k)
        } else if let Some(k) = name.strip_prefix("aux:") {
            (&mut set.aux, k)
        } else {
            (&mut set.args, name)
        };
        let Some(array) = array else { continue };
        if map.insert(key.to_string(), array).is_some() {
            return Err(r.err(format_args!("array name '{name}' appears twice")));
        }
    }
    if r.left() != 0 {
        return Err(r.err(format_args!("{} unexpected bytes after the last name", r.left())));
    }
    Ok(set)
}

/// Serialises arrays in the V2 dense layout that MXNet 1.x `nd.load` and `load_checkpoint` read:
/// `args` as `arg:NAME`, `aux` as `aux:NAME`. Every array is written as float32.
pub fn encode_params(args: &BTreeMap<String, Tensor>, aux: &BTreeMap<String, Tensor>) -> Vec<u8> {
    use crate::io::WriteTo;
    let params = ParamsFile { args, aux };
    let mut out = Vec::with_capacity(params.encoded_len());
    params.write_to(&mut out).expect("writing to a Vec cannot fail");
    out
}

/// A params file to be written straight to its destination ([`crate::io::WriteTo`]), so that a large
/// model is never held twice in memory (VGG-16: 0.5 GB).
#[derive(Clone, Copy)]
pub struct ParamsFile<'m> {
    pub args: &'m BTreeMap<String, Tensor>,
    pub aux: &'m BTreeMap<String, Tensor>,
}

impl ParamsFile<'_> {
    /// The file's size in bytes.
    pub fn encoded_len(&self) -> usize {
        let arrays: usize = self
            .args
            .values()
            .chain(self.aux.values())
            .map(|t| 4 + 4 + 4 + 8 * t.shape().len() + 8 + 4 + 4 * t.len())
            .sum();
        let names: usize = self.args.keys().chain(self.aux.keys()).map(|k| 8 + 4 + k.len()).sum();
        24 + arrays + 8 + names
    }
}

impl crate::io::WriteTo for ParamsFile<'_> {
    fn write_to(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let (args, aux) = (self.args, self.aux);
        let count = (args.len() + aux.len()) as u64;
        out.write_all(&LIST_MAGIC.to_le_bytes())?;
        out.write_all(&0u64.to_le_bytes())?;
        out.write_all(&count.to_le_bytes())?;
        let mut chunk = Vec::with_capacity(1 << 16);
        for tensor in args.values().chain(aux.values()) {
            let mut header = Vec::with_capacity(40);
            header.extend_from_slice(&V2_MAGIC.to_le_bytes());
            header.extend_from_slice(&0i32.to_le_bytes()); // dense storage
            header.extend_from_slice(&(tensor.shape().len() as u32).to_le_bytes());
            for &d in tensor.shape() {
                header.extend_from_slice(&(d as i64).to_le_bytes());
            }
            header.extend_from_slice(&1i32.to_le_bytes()); // cpu
            header.extend_from_slice(&0i32.to_le_bytes()); // device 0
            header.extend_from_slice(&0i32.to_le_bytes()); // float32
            out.write_all(&header)?;
            for values in tensor.data().chunks(1 << 14) {
                chunk.clear();
                chunk.extend(values.iter().flat_map(|v| v.to_le_bytes()));
                out.write_all(&chunk)?;
            }
        }
        out.write_all(&count.to_le_bytes())?;
        let names = args
            .keys()
            .map(|k| format!("arg:{k}"))
            .chain(aux.keys().map(|k| format!("aux:{k}")));
        for name in names {
            out.write_all(&(name.len() as u64).to_le_bytes())?;
            out.write_all(name.as_bytes())?;
        }
        Ok(())
    }
}
