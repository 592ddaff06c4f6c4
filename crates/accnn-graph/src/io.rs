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

fn write_temp(target: &Path, bytes: &[u8]) -> Result<PathBuf, GraphError> {
    let tmp = temp_path(target);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
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
    let mut temps = Vec::with_capacity(files.len());
    for (target, bytes) in files {
        match write_temp(target, bytes) {
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
