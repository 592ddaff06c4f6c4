//! An ONNX model kept as its protobuf message and encoded straight into the file it is written to:
//! holding the encoded bytes as well would double a large model's weights in memory (VGG-16's
//! 528 MB) at the moment it is saved.

use std::io::Write;
use std::mem::MaybeUninit;

use prost::Message;
use prost::bytes::BufMut;
use prost::bytes::buf::UninitSlice;

use super::proto::ModelProto;
use crate::io::WriteTo;

/// The `.onnx` file of a written model, as a message: [`WriteTo`] encodes it into the file,
/// [`OnnxMessage::to_bytes`] into memory.
pub struct OnnxMessage {
    proto: ModelProto,
}

impl OnnxMessage {
    pub(crate) fn new(proto: ModelProto) -> Self {
        Self { proto }
    }

    /// The encoded file.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.proto.encode_to_vec()
    }

    /// Size of the encoded file in bytes.
    pub fn len(&self) -> usize {
        self.proto.encoded_len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl WriteTo for OnnxMessage {
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut buf = WriteBuf::new(out);
        self.proto
            .encode(&mut buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        buf.finish()
    }
}

/// Bytes gathered in a fixed chunk and written out when it fills; large slices (weights) go
/// straight through. `BufMut` cannot fail, so the first write error is kept and returned by
/// [`WriteBuf::finish`]; nothing is written after it.
struct WriteBuf<'a> {
    out: &'a mut dyn Write,
    /// Never grows past its initial capacity (`chunk_mut` hands out its spare capacity).
    chunk: Vec<u8>,
    error: Option<std::io::Error>,
}

const CHUNK: usize = 1 << 16;

impl<'a> WriteBuf<'a> {
    fn new(out: &'a mut dyn Write) -> Self {
        Self {
            out,
            chunk: Vec::with_capacity(CHUNK),
            error: None,
        }
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(bytes)
        {
            self.error = Some(e);
        }
    }

    fn flush_chunk(&mut self) {
        if self.error.is_none()
            && let Err(e) = self.out.write_all(&self.chunk)
        {
            self.error = Some(e);
        }
        self.chunk.clear();
    }

    fn finish(mut self) -> std::io::Result<()> {
        self.flush_chunk();
        match self.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

// SAFETY: `chunk_mut` returns the chunk's spare capacity, and `advance_mut` only extends the
// chunk's length over bytes the caller initialised in it (at most that capacity, as `BufMut`
// requires of callers).
unsafe impl BufMut for WriteBuf<'_> {
    fn remaining_mut(&self) -> usize {
        usize::MAX
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        let len = self.chunk.len() + cnt;
        assert!(len <= self.chunk.capacity(), "advanced past the chunk");
        // SAFETY: the caller initialised `cnt` bytes of the spare capacity `chunk_mut` returned.
        unsafe { self.chunk.set_len(len) };
        if self.chunk.len() == self.chunk.capacity() {
            self.flush_chunk();
        }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        if self.chunk.len() == self.chunk.capacity() {
            self.flush_chunk();
        }
        let spare: &mut [MaybeUninit<u8>] = self.chunk.spare_capacity_mut();
        UninitSlice::uninit(spare)
    }

    fn put_slice(&mut self, src: &[u8]) {
        if self.chunk.len() + src.len() <= self.chunk.capacity() {
            self.chunk.extend_from_slice(src);
        } else {
            self.flush_chunk();
            if src.len() >= CHUNK {
                self.write(src);
            } else {
                self.chunk.extend_from_slice(src);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::proto::{GraphProto, TensorProto};

    fn model_with(sizes: &[usize]) -> ModelProto {
        let initializer = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| TensorProto {
                name: format!("t{i}"),
                dims: vec![n as i64],
                data_type: 2,
                raw_data: (0..n).map(|k| (k * 7 + i) as u8).collect::<Vec<u8>>().into(),
                ..Default::default()
            })
            .collect();
        ModelProto {
            ir_version: 8,
            graph: Some(GraphProto {
                name: "g".into(),
                initializer,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn streamed_bytes_are_the_encoded_message() {
        // Small fields, slices across chunk boundaries, and slices larger than a chunk.
        for sizes in [
            vec![],
            vec![3],
            vec![CHUNK - 5, 9, 1],
            vec![3 * CHUNK + 11, 2, CHUNK, CHUNK + 1],
        ] {
            let message = OnnxMessage::new(model_with(&sizes));
            let mut streamed = Vec::new();
            message.write_to(&mut streamed).expect("writes into memory");
            assert_eq!(streamed, message.to_bytes(), "sizes {sizes:?}");
            assert_eq!(streamed.len(), message.len());
        }
    }

    struct FailsAfter(usize);

    impl Write for FailsAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if buf.len() > self.0 {
                return Err(std::io::Error::other("disk full"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_is_returned() {
        let message = OnnxMessage::new(model_with(&[4 * CHUNK]));
        let err = message.write_to(&mut FailsAfter(CHUNK)).expect_err("the writer fails");
        assert_eq!(err.to_string(), "disk full");
        message.write_to(&mut FailsAfter(usize::MAX)).expect("room enough");
    }
}
