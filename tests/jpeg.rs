//! JPEG decoding against Pillow: every fixture in tests/fixtures/jpeg/ (written by
//! scripts/dev/make_jpeg_fixtures.py) must decode to exactly the bytes Pillow's
//! `Image.open(p).convert("RGB")` gives; and broken JPEGs must give errors, not panics.

use std::path::{Path, PathBuf};

use scorecam::imaging::{ImageLimits, ImagingError, decode};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg")
}

fn read(name: &str) -> Vec<u8> {
    let path = fixtures().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn cases() -> Vec<Value> {
    let manifest: Value = serde_json::from_slice(&read("cases.json")).expect("cases.json parses");
    manifest["cases"].as_array().expect("a list of cases").clone()
}

/// `None` when equal, else what differs: the size, or how many bytes and by how much.
fn difference(got: &image::RgbImage, want: &image::RgbImage) -> Option<String> {
    if got.dimensions() != want.dimensions() {
        return Some(format!("size {:?}, Pillow's {:?}", got.dimensions(), want.dimensions()));
    }
    let diffs: Vec<u8> =
        got.as_raw().iter().zip(want.as_raw()).map(|(a, b)| a.abs_diff(*b)).filter(|&d| d > 0).collect();
    let max = diffs.iter().max()?;
    Some(format!("{} of {} bytes differ, by up to {max}", diffs.len(), got.as_raw().len()))
}

#[test]
fn every_fixture_decodes_to_pillows_bytes() {
    let cases = cases();
    assert!(cases.len() >= 10, "only {} fixtures", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let want = image::load_from_memory(&read(case["expected"].as_str().unwrap())).unwrap().into_rgb8();
        match decode(&read(case["jpeg"].as_str().unwrap()), &ImageLimits::default()) {
            Ok(got) => failures.extend(difference(&got, &want).map(|d| format!("{name}: {d}"))),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "not Pillow's bytes:\n{}", failures.join("\n"));
}

fn decode_error(bytes: &[u8]) -> ImagingError {
    decode_error_with(bytes, &ImageLimits::default())
}

fn decode_error_with(bytes: &[u8], limits: &ImageLimits) -> ImagingError {
    match decode(bytes, limits) {
        Ok(img) => panic!("decoded ({}×{}) what should have failed", img.width(), img.height()),
        Err(e) => e,
    }
}

/// Where each marker segment or scan starts: (offset of the FF, marker byte). Entropy-coded
/// data stuffs FF with 00 and restart markers sit inside scans, so neither starts a segment.
fn markers(jpeg: &[u8]) -> Vec<(usize, u8)> {
    jpeg.windows(2)
        .enumerate()
        .filter(|(_, w)| w[0] == 0xFF && !matches!(w[1], 0x00 | 0xFF | 0xD0..=0xD7))
        .map(|(i, w)| (i, w[1]))
        .collect()
}

fn offset_of(jpeg: &[u8], marker: u8) -> usize {
    markers(jpeg).iter().find(|(_, m)| *m == marker).unwrap_or_else(|| panic!("no FF{marker:02X}")).0
}

#[test]
fn a_jpeg_cut_short_is_an_error() {
    let bytes = read("baseline_420_64x48.jpg");
    let sos = offset_of(&bytes, 0xDA);
    for len in [4, sos / 2, sos, sos + 40, bytes.len() - 200, bytes.len() - 2] {
        let e = decode_error(&bytes[..len]);
        assert!(matches!(e, ImagingError::Decode(_)), "cut to {len} bytes: {e:?}");
    }
}

#[test]
fn a_jpeg_cut_short_is_an_error_even_with_an_end_marker_earlier_in_the_file() {
    // An EXIF thumbnail is a JPEG inside an APP1 segment, with its own FF D9: a truncated
    // photo still contains one. libjpeg notices the data running out, so this is refused too.
    let bytes = read("baseline_420_64x48.jpg");
    let thumbnail = [b"Exif\0\0".as_slice(), &[0xFF, 0xD8, 0xFF, 0xD9]].concat();
    let mut with_app1 = bytes[..2].to_vec();
    with_app1.extend_from_slice(&[0xFF, 0xE1]);
    with_app1.extend_from_slice(&(thumbnail.len() as u16 + 2).to_be_bytes());
    with_app1.extend_from_slice(&thumbnail);
    with_app1.extend_from_slice(&bytes[2..]);
    assert!(decode(&with_app1, &ImageLimits::default()).is_ok(), "the whole file decodes");
    let e = decode_error(&with_app1[..with_app1.len() - 300]);
    assert!(matches!(e, ImagingError::Decode(_)), "{e:?}");
}

#[test]
fn a_corrupt_huffman_table_is_an_error_not_a_crash() {
    // A DHT whose 16 code counts add up to more than 256 codes: libjpeg's error_exit, which
    // must come back as an error rather than end the process.
    let mut bytes = read("baseline_420_37x29.jpg");
    let dht = offset_of(&bytes, 0xC4);
    bytes[dht + 5..dht + 5 + 16].fill(0xFF);
    let e = decode_error(&bytes);
    assert!(matches!(e, ImagingError::Decode(_)), "{e:?}");
}

#[test]
fn twelve_bit_samples_are_an_error() {
    // Pillow refuses 12-bit JPEGs too ("cannot handle 12-bit layers").
    let mut bytes = read("baseline_444_37x29.jpg");
    let sof = offset_of(&bytes, 0xC0);
    bytes[sof + 4] = 12;
    let e = decode_error(&bytes);
    assert!(matches!(e, ImagingError::Decode(_)), "{e:?}");
}

#[test]
fn garbage_in_the_scan_never_panics() {
    let clean = read("progressive_420_37x29.jpg");
    let sos = offset_of(&clean, 0xDA);
    // A small deterministic generator (xorshift): the same bytes every run.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..300 {
        let mut bytes = clean.clone();
        for _ in 0..4 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let at = sos + (state as usize) % (bytes.len() - 2 - sos);
            bytes[at] = (state >> 32) as u8;
        }
        match decode(&bytes, &ImageLimits::default()) {
            Ok(img) => assert_eq!(img.dimensions(), (37, 29)),
            Err(e) => assert!(matches!(e, ImagingError::Decode(_)), "{e:?}"),
        }
    }
}

#[test]
fn a_header_over_the_limits_is_refused_before_decoding() {
    // The SOF claims 8000×8000 (64 M pixels, over the default 40 M); the scan that follows
    // is far too short for that, so only the header check can say `TooLarge`.
    let mut bytes = read("baseline_420_37x29.jpg");
    let sof = offset_of(&bytes, 0xC0);
    bytes[sof + 5..sof + 9].copy_from_slice(&[0x1F, 0x40, 0x1F, 0x40]);
    let e = decode_error(&bytes);
    assert!(matches!(e, ImagingError::TooLarge(_)), "{e:?}");
    let narrow = ImageLimits { max_width: 36, ..ImageLimits::default() };
    let e = decode_error_with(&read("baseline_420_37x29.jpg"), &narrow);
    assert!(matches!(e, ImagingError::TooLarge(_)), "{e:?}");
}

#[test]
fn a_progressive_jpeg_whose_coefficients_do_not_fit_the_budget_is_too_large() {
    // 64×48 RGB is 9216 bytes decoded, but a progressive JPEG first keeps every DCT
    // coefficient (4:4:4: 3 × 48 blocks × 64 × 2 bytes = 18 KiB). A budget between the two
    // passes the header check; libjpeg's own memory limit then refuses the coefficients.
    let bytes = read("progressive_444_64x48.jpg");
    let tight = ImageLimits { max_alloc_bytes: 12_000, ..ImageLimits::default() };
    let e = decode_error_with(&bytes, &tight);
    assert!(matches!(e, ImagingError::TooLarge(_)), "{e:?}");
    let roomy = ImageLimits { max_alloc_bytes: 64_000, ..ImageLimits::default() };
    assert!(decode(&bytes, &roomy).is_ok());
}

#[test]
fn a_progressive_jpeg_with_thousands_of_scans_is_refused() {
    // Each scan of a progressive JPEG costs a pass over the whole image: a few bytes per
    // scan repeated make a small file that takes minutes. Repeating the last scan is
    // allowed by libjpeg (with a warning), so only the scan limit stops this.
    let bytes = read("progressive_420_37x29.jpg");
    let all = markers(&bytes);
    let (last_sos, _) = *all.iter().rev().find(|(_, m)| *m == 0xDA).unwrap();
    let eoi = bytes.len() - 2;
    assert_eq!(&bytes[eoi..], &[0xFF, 0xD9]);
    let mut many = bytes[..eoi].to_vec();
    for _ in 0..2000 {
        many.extend_from_slice(&bytes[last_sos..eoi]);
    }
    many.extend_from_slice(&[0xFF, 0xD9]);
    let e = decode_error(&many);
    assert!(matches!(e, ImagingError::Decode(ref m) if m.contains("scans")), "{e:?}");
    // A few repeats are still decoded.
    let mut some = bytes[..eoi].to_vec();
    some.extend_from_slice(&bytes[last_sos..eoi]);
    some.extend_from_slice(&[0xFF, 0xD9]);
    assert!(decode(&some, &ImageLimits::default()).is_ok());
}
