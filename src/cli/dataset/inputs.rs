//! Which images a dataset run explains: files, folders (searched recursively), a list file
//! or standard input of paths; sorted by name, and cut to this worker's shard.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::cli::CliError;
use crate::service::is_image_name;

// Folders give the files whose extension is the service's (`service::is_image_name`);
// files named directly or in a list are taken whatever their name, and fail in the index
// if they are not images.

/// Folder depth a search follows (symbolic links can make loops).
const MAX_DEPTH: usize = 64;

/// One image of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Input {
    pub path: PathBuf,
    /// Its name in the index and under the output folder: the path below the folder it was
    /// found in, or the path as given.
    pub key: String,
}

/// Shard `index` of `count` (`I/N` on the command line).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl FromStr for Shard {
    type Err = CliError;

    fn from_str(s: &str) -> Result<Self, CliError> {
        let bad = || CliError::Invalid(format!("--shard {s:?}: expected I/N with 0 <= I < N, e.g. 0/4"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Whether this shard takes `key`. By a hash of the name alone, so workers that list
    /// the same dataset in any order (or after files were added) never overlap.
    pub fn takes(&self, key: &str) -> bool {
        let hash = blake3::hash(key.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        u64::from_le_bytes(first) % self.count == self.index
    }
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<Input>) -> Result<(), CliError> {
    if depth > MAX_DEPTH {
        return Err(CliError::Invalid(format!(
            "{}: folders nested over {MAX_DEPTH} deep (a link loop?)",
            dir.display()
        )));
    }
    for entry in std::fs::read_dir(dir).map_err(CliError::io(dir))? {
        let path = entry.map_err(CliError::io(dir))?.path();
        if path.is_dir() {
            walk(root, &path, depth + 1, out)?;
        } else if is_image_name(&path) {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let key = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            out.push(Input { path, key });
        }
    }
    Ok(())
}

fn given(path: PathBuf, out: &mut Vec<Input>) -> Result<(), CliError> {
    if path.is_dir() {
        return walk(&path, &path, 0, out);
    }
    let key = path.to_string_lossy().into_owned();
    out.push(Input { path, key });
    Ok(())
}

/// Every input, sorted by key. Two inputs with one key (the same file named twice, or two
/// folders holding the same relative name) would write the same outputs: refused.
pub fn collect(paths: &[PathBuf], list: Option<&Path>) -> Result<Vec<Input>, CliError> {
    let mut found = Vec::new();
    for p in paths {
        given(p.clone(), &mut found)?;
    }
    if let Some(list) = list {
        let lines: Box<dyn BufRead> = if list == Path::new("-") {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::io::BufReader::new(std::fs::File::open(list).map_err(CliError::io(list))?))
        };
        for line in lines.lines() {
            let line = line.map_err(CliError::io(list))?;
            let line = line.trim();
            if !line.is_empty() && !line.starts_with('#') {
                given(PathBuf::from(line), &mut found)?;
            }
        }
    }
    let mut by_key: BTreeMap<String, Input> = BTreeMap::new();
    for input in found {
        if let Some(other) = by_key.get(&input.key) {
            if other.path != input.path {
                return Err(CliError::Invalid(format!(
                    "{} and {} would both be written as {:?}: explain them in separate runs",
                    other.path.display(),
                    input.path.display(),
                    input.key
                )));
            }
            continue;
        }
        by_key.insert(input.key.clone(), input);
    }
    Ok(by_key.into_values().collect())
}

/// Where a key's outputs go below the output folder: its normal components only, so an
/// absolute path or `..` in a list cannot write outside the folder.
pub fn output_stem(dir: &Path, key: &str) -> PathBuf {
    let mut out = dir.to_path_buf();
    for c in Path::new(key).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => out.push("__"),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_names_once_and_evenly() {
        let names: Vec<String> = (0..3000).map(|i| format!("class{}/img{i}.jpg", i % 7)).collect();
        let shards: Vec<Shard> = (0..3).map(|i| Shard { index: i, count: 3 }).collect();
        let mut sizes = [0usize; 3];
        for n in &names {
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].takes(n)).collect();
            assert_eq!(owners.len(), 1, "{n} belongs to {owners:?}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&s| (900..1100).contains(&s)), "{sizes:?}");
    }

    #[test]
    fn shard_syntax() {
        assert_eq!("1/4".parse::<Shard>().unwrap(), Shard { index: 1, count: 4 });
        for bad in ["4/4", "1/0", "1", "a/b", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn folders_are_searched_recursively_and_keys_are_relative() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        for f in ["x.JPEG", "a/y.png", "a/b/z.webp", "a/notes.txt"] {
            std::fs::write(dir.path().join(f), b"").unwrap();
        }
        let keys: Vec<String> =
            collect(&[dir.path().to_path_buf()], None).unwrap().into_iter().map(|i| i.key).collect();
        assert_eq!(keys, ["a/b/z.webp", "a/y.png", "x.JPEG"]);
    }

    #[test]
    fn one_name_from_two_places_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        std::fs::write(a.path().join("same.png"), b"").unwrap();
        std::fs::write(b.path().join("same.png"), b"").unwrap();
        let err = collect(&[a.path().into(), b.path().into()], None).unwrap_err();
        assert!(err.to_string().contains("would both be written"), "{err}");
    }

    #[test]
    fn outputs_stay_inside_the_folder() {
        assert_eq!(output_stem(Path::new("/out"), "/etc/../x.png"), Path::new("/out/etc/__/x.png"));
        assert_eq!(output_stem(Path::new("out"), "a/b.jpg"), Path::new("out/a/b.jpg"));
    }
}
