//! What a dataset run writes: per image an overlay, a heatmap, the raw maps (`.npy`) and/or
//! the JSON document, each written atomically; and one index of JSON lines that records
//! every image's outcome, from which `--resume` knows what is done.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::{Deserialize, Serialize};

use super::inputs::output_stem;
use crate::cli::CliError;
use crate::render::Colormap;
use crate::service::Map;
use crate::service::{Prediction, heatmap_png, overlay_png};

pub use crate::cli::args::OutputKind;

/// Where each kind goes.
impl OutputKind {
    fn suffix(self) -> &'static str {
        match self {
            Self::Overlay => ".overlay.png",
            Self::Heatmap => ".heatmap.png",
            Self::Npy => ".npy",
            Self::Json => ".json",
        }
    }
}

/// An explained image, from the local service or a server alike.
#[derive(Debug)]
pub struct Explained {
    pub model: String,
    pub method: String,
    pub predictions: Vec<Prediction>,
    /// Per explained class, its map at the asked resolution.
    pub maps: Vec<(Prediction, Map)>,
    pub passes: usize,
    /// The JSON document as the service gave it (only when a `.json` output is asked for).
    pub json: Option<Vec<u8>>,
}

/// Writes one image's outputs.
pub struct Writer {
    pub dir: PathBuf,
    pub kinds: Vec<OutputKind>,
    pub colormap: Colormap,
    pub alpha: f32,
}

impl Writer {
    pub fn needs_image(&self) -> bool {
        self.kinds.contains(&OutputKind::Overlay)
    }

    pub fn needs_json(&self) -> bool {
        self.kinds.contains(&OutputKind::Json)
    }

    /// Writes every output of `key`; returns their paths relative to the output folder.
    pub fn write(&self, key: &str, image: Option<&RgbImage>, e: &Explained) -> Result<Vec<String>, String> {
        let (_, first) = e.maps.first().ok_or("the explanation has no map")?;
        let stem = output_stem(&self.dir, key);
        let mut written = Vec::new();
        for kind in &self.kinds {
            let bytes = match kind {
                OutputKind::Overlay => {
                    let image = image.ok_or("an overlay needs the image")?;
                    overlay_png(image, first, self.colormap, self.alpha).map_err(|e| e.to_string())?
                }
                OutputKind::Heatmap => heatmap_png(first, self.colormap).map_err(|e| e.to_string())?,
                OutputKind::Npy => npy(&e.maps.iter().map(|(_, m)| m).collect::<Vec<_>>())?,
                OutputKind::Json => e.json.clone().ok_or("no JSON document")?,
            };
            let mut name = stem.clone().into_os_string();
            name.push(kind.suffix());
            let path = PathBuf::from(name);
            write_atomic(&path, &bytes).map_err(|err| format!("{}: {err}", path.display()))?;
            written.push(path.strip_prefix(&self.dir).unwrap_or(&path).to_string_lossy().replace('\\', "/"));
        }
        Ok(written)
    }
}

/// Writes a sibling temporary file and renames it over `path`, so a stopped run leaves
/// either the whole file or none.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_data()
    });
    match result.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// The maps as a little-endian float32 NumPy array: H×W for one class, T×H×W for several.
pub fn npy(maps: &[&Map]) -> Result<Vec<u8>, String> {
    let first = maps.first().ok_or("no map")?;
    if maps.iter().any(|m| (m.width, m.height) != (first.width, first.height) || m.data.len() != m.width * m.height) {
        return Err("the maps differ in size".into());
    }
    let shape = if maps.len() == 1 {
        format!("({}, {})", first.height, first.width)
    } else {
        format!("({}, {}, {})", maps.len(), first.height, first.width)
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header, padded with spaces to a multiple of 64
    // and ended by a newline (the format's rule).
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + 4 * first.data.len() * maps.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for m in maps {
        for v in &m.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Error,
}

/// One line of the index.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub path: String,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The most probable class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<Prediction>,
    /// The explained classes with their probabilities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<Prediction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passes: Option<usize>,
    /// Wall time of this image, from reading it to its outputs written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Record {
    pub fn failed(path: &str, error: String, ms: f64) -> Self {
        Self {
            path: path.to_string(),
            status: Status::Error,
            model: None,
            method: None,
            prediction: None,
            targets: Vec::new(),
            passes: None,
            ms: Some(ms),
            outputs: Vec::new(),
            error: Some(error),
        }
    }
}

/// The index: appended a line per image as the run goes (so a stopped run keeps what it
/// did), then rewritten in name order with one line per image when the run ends.
pub struct Index {
    path: PathBuf,
    file: std::fs::File,
}

/// Every whole line of an index that parses; a line cut by a stop is ignored.
fn parse_records(text: &str) -> Vec<Record> {
    text.lines().filter_map(|line| serde_json::from_str::<Record>(line).ok()).collect()
}

fn read_records(path: &Path) -> Result<(Vec<Record>, String), CliError> {
    let text = std::fs::read(path).map_err(CliError::io(path))?;
    let text = String::from_utf8_lossy(&text).into_owned();
    Ok((parse_records(&text), text))
}

impl Index {
    /// Opens the index for a run; with `resume`, returns the images that any index of its
    /// folder records as explained. Without `resume` an existing index is refused rather than overwritten:
    /// it may hold days of work.
    pub fn open(path: PathBuf, resume: bool) -> Result<(Self, HashSet<String>), CliError> {
        let exists = path.exists();
        if exists && !resume {
            return Err(CliError::Invalid(format!(
                "{} exists: pass --resume to continue that run, or choose another --output",
                path.display()
            )));
        }
        let text = if exists { read_records(&path)?.1 } else { String::new() };
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        std::fs::create_dir_all(&dir).map_err(CliError::io(&dir))?;
        // Any index of the folder counts: a plain resume after shards redoes none of theirs.
        let done = if resume { explained_in(&dir)? } else { HashSet::new() };
        let mut file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).map_err(CliError::io(&path))?;
        // A line cut by a stop has no newline: start ours on a fresh line.
        if !text.is_empty() && !text.ends_with('\n') {
            file.write_all(b"\n").map_err(CliError::io(&path))?;
        }
        Ok((Self { path, file }, done))
    }

    /// Appends one record as one write of one line.
    pub fn append(&mut self, record: &Record) -> Result<(), CliError> {
        let mut line = serde_json::to_vec(record).map_err(|e| CliError::Invalid(e.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(CliError::io(&self.path))
    }

    /// Rewrites the index in name order, one line per image (its last record). Returns
    /// (explained, failed).
    pub fn compact(&self) -> Result<(usize, usize), CliError> {
        let mut last: BTreeMap<String, Record> = BTreeMap::new();
        for r in read_records(&self.path)?.0 {
            last.insert(r.path.clone(), r);
        }
        let mut bytes = Vec::new();
        for r in last.values() {
            serde_json::to_writer(&mut bytes, r).map_err(|e| CliError::Invalid(e.to_string()))?;
            bytes.push(b'\n');
        }
        write_atomic(&self.path, &bytes).map_err(CliError::io(&self.path))?;
        let ok = last.values().filter(|r| r.status == Status::Ok).count();
        Ok((ok, last.len() - ok))
    }
}

/// Whether a file name is an index a run writes: `index.jsonl` or `index-I-of-N.jsonl`.
fn is_index_name(name: &str) -> bool {
    let shard = |rest: &str| {
        let (i, n) = rest.split_once("-of-").unwrap_or(("", ""));
        !i.is_empty() && !n.is_empty() && (i.bytes().chain(n.bytes())).all(|b| b.is_ascii_digit())
    };
    name == "index.jsonl" || name.strip_prefix("index-").and_then(|r| r.strip_suffix(".jsonl")).is_some_and(shard)
}

/// The indexes in `dir`, oldest first (by modification time, then name): the order their
/// records were written in.
fn index_files(dir: &Path) -> Result<Vec<PathBuf>, CliError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CliError::Io { path: dir.into(), source: e }),
    };
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(is_index_name))
        .map(|e| (e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH), e.path()))
        .collect();
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Per image, its last record over every index of `dir`; an explained record is never
/// replaced by a failure (a later run that failed to reread a file does not undo it).
fn last_records(dir: &Path) -> Result<BTreeMap<String, Record>, CliError> {
    let mut last: BTreeMap<String, Record> = BTreeMap::new();
    for file in index_files(dir)? {
        for r in read_records(&file)?.0 {
            let keeps_ok = last.get(&r.path).is_some_and(|old| old.status == Status::Ok && r.status != Status::Ok);
            if !keeps_ok {
                last.insert(r.path.clone(), r);
            }
        }
    }
    Ok(last)
}

/// The images any index of `dir` records as explained.
fn explained_in(dir: &Path) -> Result<HashSet<String>, CliError> {
    Ok(last_records(dir)?.into_values().filter(|r| r.status == Status::Ok).map(|r| r.path).collect())
}

/// Writes `dir/index.jsonl` from every index of `dir`, one record per image in name order
/// (the shards' own indexes stay as they are). Returns (explained, failed).
pub fn merge_indexes(dir: &Path) -> Result<(usize, usize), CliError> {
    let last = last_records(dir)?;
    if last.is_empty() {
        return Err(CliError::Invalid(format!(
            "{}: no index to merge (index.jsonl, index-I-of-N.jsonl)",
            dir.display()
        )));
    }
    let mut bytes = Vec::new();
    for r in last.values() {
        serde_json::to_writer(&mut bytes, r).map_err(|e| CliError::Invalid(e.to_string()))?;
        bytes.push(b'\n');
    }
    let path = dir.join("index.jsonl");
    write_atomic(&path, &bytes).map_err(CliError::io(&path))?;
    let ok = last.values().filter(|r| r.status == Status::Ok).count();
    Ok((ok, last.len() - ok))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_the_plain_runs_and_the_shards() {
        for name in ["index.jsonl", "index-0-of-2.jsonl", "index-11-of-12.jsonl"] {
            assert!(is_index_name(name), "{name}");
        }
        for name in ["index.json", "index-a-of-2.jsonl", "index-0-of-.jsonl", "myindex.jsonl", "index-0-2.jsonl"] {
            assert!(!is_index_name(name), "{name}");
        }
    }

    #[test]
    fn npy_header_is_aligned_and_data_follows() {
        let m = Map::new(3, 2, vec![0.0, 0.5, 1.0, 0.25, 0.75, 0.125]);
        let bytes = npy(&[&m]).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.contains("'shape': (2, 3)") && header.ends_with('\n'), "{header}");
        let data: Vec<f32> =
            bytes[10 + len..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(data, m.data);
        let two = npy(&[&m, &m]).unwrap();
        assert!(String::from_utf8_lossy(&two[..128]).contains("'shape': (2, 2, 3)"));
    }

    #[test]
    fn an_index_cut_mid_line_resumes_and_compacts_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.jsonl");
        let (mut index, done) = Index::open(path.clone(), false).unwrap();
        assert!(done.is_empty());
        index.append(&Record::failed("b.png", "bad".into(), 1.0)).unwrap();
        let mut ok = Record::failed("a.png", String::new(), 2.0);
        (ok.status, ok.error) = (Status::Ok, None);
        index.append(&ok).unwrap();
        drop(index);
        // A stop in the middle of a line.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"path\":\"c.p").unwrap();
        assert!(Index::open(path.clone(), false).is_err(), "an existing index is not overwritten");
        let (mut index, done) = Index::open(path.clone(), true).unwrap();
        assert_eq!(done, HashSet::from(["a.png".to_string()]));
        let mut fixed = ok.clone();
        fixed.path = "b.png".into();
        index.append(&fixed).unwrap();
        assert_eq!(index.compact().unwrap(), (2, 0));
        let lines: Vec<Record> =
            std::fs::read_to_string(&path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), ["a.png", "b.png"]);
        assert!(lines.iter().all(|r| r.status == Status::Ok));
    }
}
