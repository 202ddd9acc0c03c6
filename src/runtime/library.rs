//! Locating and loading `libonnxruntime`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::RuntimeError;

/// The ONNX Runtime release the `ort` crate (API 1.31) and `scripts/setup/ort.sh` agree on.
pub const ORT_VERSION: &str = "1.31.1";

/// Where the library path came from, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LibrarySource {
    Environment,
    Config,
    Checkout,
}

/// Resolves the library: `ORT_DYLIB_PATH`, then the configured path, then the checkout's
/// `.ort/<variant>/` folder that `scripts/setup/ort.sh` fills (searched upwards from the
/// working directory and from the executable, so `cargo run`, tests and an installed
/// binary all find it).
pub fn resolve_library(configured: Option<&Path>, variant: &str) -> Result<(PathBuf, LibrarySource), RuntimeError> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return Ok((PathBuf::from(p), LibrarySource::Environment));
    }
    if let Some(p) = configured {
        return Ok((p.to_path_buf(), LibrarySource::Config));
    }
    let file = format!("libonnxruntime.so.{ORT_VERSION}");
    let mut searched = Vec::new();
    let starts = [std::env::current_dir().ok(), std::env::current_exe().ok()];
    for start in starts.iter().flatten() {
        for dir in start.ancestors() {
            let candidate = dir.join(".ort").join(variant).join(&file);
            if candidate.is_file() {
                return Ok((candidate, LibrarySource::Checkout));
            }
            searched.push(candidate.display().to_string());
        }
    }
    Err(RuntimeError::LibraryNotFound { searched: format!("ORT_DYLIB_PATH, config, {}", searched.join(", ")) })
}

static ENVIRONMENT: OnceLock<Result<(ort::environment::Environment, PathBuf), String>> = OnceLock::new();

/// Loads ONNX Runtime and creates the process-wide environment (once; later calls return
/// the first result, because ONNX Runtime allows one environment per process).
pub fn init(path: &Path) -> Result<ort::environment::Environment, RuntimeError> {
    let result = ENVIRONMENT.get_or_init(|| {
        if !path.is_file() {
            return Err(format!("{} does not exist", path.display()));
        }
        let builder = ort::init_from(path).map_err(|e| e.to_string())?;
        let env = builder.with_name("scorecam").build().map_err(|e| e.to_string())?;
        Ok((env, path.to_path_buf()))
    });
    match result {
        Ok((env, _)) => Ok(env.clone()),
        Err(reason) => Err(RuntimeError::LibraryLoad { path: path.to_path_buf(), reason: reason.clone() }),
    }
}

/// The environment made by [`init`], if it succeeded.
pub(crate) fn environment() -> Option<ort::environment::Environment> {
    match ENVIRONMENT.get() {
        Some(Ok((env, _))) => Some(env.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_library_is_a_clear_error_that_says_how_to_fix_it() {
        if std::env::var_os("ORT_DYLIB_PATH").is_some() {
            return; // the environment variable legitimately takes precedence
        }
        // No checkout has a `.ort/` folder of this variant: the search itself fails.
        let err = resolve_library(None, "no-such-variant").unwrap_err();
        assert!(matches!(err, RuntimeError::LibraryNotFound { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("scripts/setup/ort.sh") && msg.contains("ORT_DYLIB_PATH"), "{msg}");
        assert!(msg.contains(".ort/no-such-variant/libonnxruntime.so"), "says where it looked: {msg}");
    }

    #[test]
    fn configured_path_wins_over_the_checkout() {
        if std::env::var_os("ORT_DYLIB_PATH").is_some() {
            return; // the environment variable legitimately takes precedence
        }
        let (p, src) = resolve_library(Some(Path::new("/custom/lib.so")), "cpu").unwrap();
        assert_eq!(p, PathBuf::from("/custom/lib.so"));
        assert_eq!(src, LibrarySource::Config);
    }
}
