//! `cargo bench --bench jpeg_decode -- --bench [--images DIR] [--rounds R]`
//!
//! JPEG decode time of `imaging::decode` (libjpeg-turbo, Pillow's settings) beside the
//! `image` crate's decoder (zune-jpeg) that it replaced, interleaved: each round decodes
//! every photo with both, the order alternating between rounds, so drift hits both alike.
//! Reports the median over photos of each photo's median time, and their ratio. The
//! `image` side is `load_from_memory_with_format(.., Jpeg)` then `into_rgb8()`, the old
//! path less its limit checks and orientation (nothing for photos without EXIF rotation).
//!
//! Photos: `--images DIR` or SCORECAM_IMAGES (every .jpg/.jpeg/.JPEG there), else the
//! fixtures in tests/fixtures/jpeg/. Under `cargo test --all-targets` the binary runs one
//! round on the fixtures (a smoke test, so the benchmark never rots).

use std::path::PathBuf;
use std::time::Instant;

use scorecam::imaging::{ImageLimits, decode};

fn photos(args: &[String]) -> Vec<(String, Vec<u8>)> {
    let value = args.iter().position(|a| a == "--images").and_then(|i| args.get(i + 1)).cloned();
    let dir = value
        .or_else(|| std::env::var("SCORECAM_IMAGES").ok())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg"));
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg")))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect()
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 }
}

/// Milliseconds to decode `bytes` with libjpeg-turbo (`new`) or the image crate.
fn time(bytes: &[u8], new: bool) -> f64 {
    let start = Instant::now();
    let pixels = if new {
        decode(bytes, &ImageLimits::default()).unwrap().into_raw()
    } else {
        image::load_from_memory_with_format(bytes, image::ImageFormat::Jpeg).unwrap().into_rgb8().into_raw()
    };
    let ms = start.elapsed().as_secs_f64() * 1e3;
    std::hint::black_box(pixels);
    ms
}

fn cpu() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1));
    model.unwrap_or("unknown").trim().to_string()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` passes --bench; anything else (cargo test) is a smoke run.
    let quick = !args.iter().any(|a| a == "--bench");
    let rounds = if quick {
        1
    } else {
        args.iter()
            .position(|a| a == "--rounds")
            .and_then(|i| args.get(i + 1))
            .and_then(|r| r.parse().ok())
            .unwrap_or(7)
    };
    let photos = photos(&args);
    assert!(!photos.is_empty(), "no JPEGs to decode");
    // One untimed pass of each: page in the code and the allocator's pools.
    for (_, bytes) in &photos {
        time(bytes, true);
        time(bytes, false);
    }
    let mut times = vec![(Vec::new(), Vec::new()); photos.len()];
    for round in 0..rounds {
        for ((_, bytes), (new, old)) in photos.iter().zip(&mut times) {
            let new_first = round % 2 == 0;
            let a = time(bytes, new_first);
            let b = time(bytes, !new_first);
            let (n, o) = if new_first { (a, b) } else { (b, a) };
            new.push(n);
            old.push(o);
        }
    }
    let (mut new, mut old): (Vec<f64>, Vec<f64>) = times.iter_mut().map(|(n, o)| (median(n), median(o))).unzip();
    let mut ratios: Vec<f64> = new.iter().zip(&old).map(|(n, o)| n / o).collect();
    let pixels: f64 = photos
        .iter()
        .map(|(_, b)| {
            let img = image::load_from_memory_with_format(b, image::ImageFormat::Jpeg).unwrap();
            f64::from(img.width()) * f64::from(img.height())
        })
        .sum::<f64>()
        / photos.len() as f64;
    println!(
        "# JPEG decode{}: {} photos, {rounds} rounds, CPU {}",
        if quick { " (smoke run)" } else { "" },
        photos.len(),
        cpu()
    );
    println!("mean photo size: {:.0} pixels", pixels);
    println!("image crate (zune-jpeg): median {:.3} ms per photo", median(&mut old));
    println!("libjpeg-turbo (scorecam): median {:.3} ms per photo", median(&mut new));
    println!("libjpeg-turbo / image crate: median ratio per photo {:.2}", median(&mut ratios));
}
