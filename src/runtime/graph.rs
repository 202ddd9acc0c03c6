//! An ONNX graph read from its file once. Every session of one model load is made from
//! these bytes, so all workers run the graph that was validated, whatever happens to the
//! file afterwards (a package replaced or removed while requests still run on it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone)]
pub struct GraphBytes {
    /// Where it was read from: for messages, and the folder of any external weights.
    pub path: PathBuf,
    pub bytes: Arc<[u8]>,
}

impl GraphBytes {
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Ok(Self { path: path.to_path_buf(), bytes: std::fs::read(path)?.into() })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

impl fmt::Debug for GraphBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GraphBytes").field("path", &self.path).field("len", &self.bytes.len()).finish()
    }
}
