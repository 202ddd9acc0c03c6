//! Arbitrary bytes → `imaging::decode` with the default limits → `imaging::preprocess` for
//! the default model's input settings (and for a centre-crop model) → `map_to_original`.
//!
//! Invariants: no panic; an `Ok` image is within the limits; the tensor has the model's
//! shape and finite values; a map at the model's input size maps back onto exactly the
//! upload's pixels. Unbounded allocation is caught by libFuzzer's `-malloc_limit_mb`
//! (scripts/ci/fuzz.sh sets it just above the 512 MiB decoder budget).
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use scorecam::cam::Map;
use scorecam::imaging::{ImageLimits, decode, preprocess};
use scorecam::model::{InputSpec, Manifest, ResizeMode};

/// The default model's input settings, read from its manifest so they never drift.
static DEFAULT_SPEC: LazyLock<InputSpec> = LazyLock::new(|| {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/efficientnet-lite0/model.toml");
    Manifest::from_file(std::path::Path::new(path)).expect("the default model's manifest parses").input
});

/// The other resize mode a package may declare (shorter side to 256, centre 224×224).
static CROP_SPEC: LazyLock<InputSpec> =
    LazyLock::new(|| InputSpec { resize: ResizeMode::ShorterSideCrop, crop_from: Some(256), ..DEFAULT_SPEC.clone() });

fuzz_target!(|data: &[u8]| {
    let limits = ImageLimits::default();
    let Ok(img) = decode(data, &limits) else { return };
    let (w, h) = img.dimensions();
    assert!(w > 0 && h > 0, "decoded an empty image");
    assert!(w <= limits.max_width && h <= limits.max_height, "{w}×{h} is over the side limits");
    assert!(u64::from(w) * u64::from(h) <= limits.max_pixels, "{w}×{h} is over the pixel limit");
    for spec in [&*DEFAULT_SPEC, &*CROP_SPEC] {
        let p = preprocess(&img, spec);
        let (iw, ih) = (spec.width as usize, spec.height as usize);
        assert_eq!((p.input_width, p.input_height), (iw, ih));
        assert_eq!(p.tensor.len(), 3 * iw * ih);
        assert!(p.tensor.iter().all(|v| v.is_finite()), "non-finite input value");
        assert_eq!((p.original_width, p.original_height), (w, h));
        let r = p.region;
        // A centre crop of a tiny photo shows less than one of its pixels (224/256 of a
        // 1×1 upload): the region is positive, not necessarily a whole pixel.
        assert!(r.x >= 0.0 && r.y >= 0.0 && r.width > 0.0 && r.height > 0.0, "{r:?}");
        assert!(r.x + r.width <= f64::from(w) && r.y + r.height <= f64::from(h), "{r:?} outside {w}×{h}");
        let map = Map::new(iw, ih, vec![0.5; iw * ih]);
        let back = p.map_to_original(&map);
        assert_eq!((back.width, back.height), (w as usize, h as usize));
        assert_eq!(back.data.len(), w as usize * h as usize);
    }
});
