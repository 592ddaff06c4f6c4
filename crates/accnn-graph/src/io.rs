//! Crash-safe output: write to a temporary file in the target directory, then rename.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::GraphError;

fn temp_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Something that writes a file's contents itself, in pieces (see [`FileContent::Streamed`]).
pub trait WriteTo {
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()>;
}

/// The contents of one output file.
#[derive(Clone, Copy)]
pub enum FileContent<'a> {
    Bytes(&'a [u8]),
    /// Written straight to the temporary file: for outputs too large to hold a second copy of.
    Streamed(&'a dyn WriteTo),
}

fn write_temp(target: &Path, content: FileContent<'_>) -> Result<PathBuf, GraphError> {
    let tmp = temp_path(target);
    let result = (|| {
        let f = std::fs::File::create(&tmp)?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, f);
        match content {
            FileContent::Bytes(bytes) => out.write_all(bytes)?,
            FileContent::Streamed(writer) => writer.write_to(&mut out)?,
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    match result {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(GraphError::io(target, e))
        }
    }
}

/// Writes each `(path, bytes)` pair so that either all targets are replaced with complete contents or,
/// on error, none of the temporary files is left behind. Targets are renamed into place only after
/// every temporary file has been written and synced.
pub fn write_files_atomically(files: &[(&Path, &[u8])]) -> Result<(), GraphError> {
    let contents: Vec<(&Path, FileContent<'_>)> = files.iter().map(|&(p, b)| (p, FileContent::Bytes(b))).collect();
    write_contents_atomically(&contents)
}

/// [`write_files_atomically`] for contents that may be written in pieces.
pub fn write_contents_atomically(files: &[(&Path, FileContent<'_>)]) -> Result<(), GraphError> {
    let mut temps = Vec::with_capacity(files.len());
    for &(target, content) in files {
        match write_temp(target, content) {
            Ok(tmp) => temps.push(tmp),
            Err(e) => {
                for t in &temps {
                    let _ = std::fs::remove_file(t);
                }
                return Err(e);
            }
        }
    }
    for (i, (tmp, (target, _))) in temps.iter().zip(files).enumerate() {
        if let Err(e) = std::fs::rename(tmp, target) {
            for t in &temps[i..] {
                let _ = std::fs::remove_file(t);
            }
            return Err(GraphError::io(target, e));
        }
    }
    Ok(())
}

/// Whether `path` names the same file as `other` (both existing), or the same path text.
pub fn same_file(path: &Path, other: &Path) -> bool {
    match (path.canonicalize(), other.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => path == other,
    }
}
