//! JPEG decoding with libjpeg-turbo's decoder (as vendored by mozjpeg-sys) and Pillow's
//! settings, so an upload decodes to exactly the pixels that Pillow's
//! `Image.open(p).convert("RGB")` gives the reference pipelines (tests/jpeg.rs checks this
//! against Pillow's own output).
//!
//! libjpeg reports a fatal error by calling `error_exit`, which must not return. Pillow
//! longjmps out of it; here it unwinds (a panic payload, without the panic hook) back to
//! the `catch_unwind` in [`decode`], and the decompressor's `Drop` frees libjpeg's memory,
//! as Pillow's `jpeg_destroy_decompress` after the longjmp does. mozjpeg-sys compiles the C
//! with unwind tables and declares every callback `C-unwind` for exactly this.

use std::ffi::{c_int, c_long, c_ulong};
use std::marker::PhantomData;
use std::mem;
use std::panic::{self, AssertUnwindSafe};

use image::RgbImage;
use image::metadata::Orientation;
use mozjpeg_sys as ffi;

use super::ImagingError;
use super::decode::{ImageLimits, check_size};

// With panic=abort, a corrupt upload would abort the whole server instead of failing its
// request: refuse to build that way rather than find out in production.
#[cfg(panic = "abort")]
compile_error!("scorecam's JPEG decoder turns libjpeg's fatal errors into unwinding; build with panic=unwind");

/// Most scans a progressive JPEG may have. Each scan costs a pass over the whole image
/// while a few bytes can encode one, so a small file with thousands of scans could keep a
/// worker busy for minutes. Real encoders write about 10 (mozjpeg's optimised scripts a few
/// dozen); libjpeg-turbo's TurboJPEG API offers the same guard (its scan limit).
const MAX_SCANS: c_int = 500;

const JPEG_HEADER_OK: c_int = 1;
const APP1: c_int = 0xE1;
/// libjpeg's message codes (jerror.h) that say "too large" rather than "broken", besides
/// JERR_NO_BACKING_STORE (over `max_memory_to_use`, the decoding budget).
const TOO_LARGE_CODES: [c_int; 3] =
    [ffi::JERR_OUT_OF_MEMORY as c_int, ffi::JERR_IMAGE_TOO_BIG as c_int, ffi::JERR_WIDTH_OVERFLOW as c_int];

/// A decoded JPEG and the EXIF orientation it asks for (not applied yet).
pub(super) struct Jpeg {
    pub image: RgbImage,
    pub orientation: Orientation,
}

/// Decodes a JPEG to RGB as Pillow does: ISLOW IDCT, fancy upsampling, block smoothing
/// (libjpeg's defaults, which Pillow keeps outside draft mode); greyscale replicated to RGB;
/// CMYK and YCCK read as Adobe-inverted CMYK and converted with Pillow's formula.
pub(super) fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<Jpeg, ImagingError> {
    match panic::catch_unwind(AssertUnwindSafe(|| decode_unguarded(bytes, limits))) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<Failure>() {
            Ok(failure) => Err(failure.into_error(limits)),
            // A bug of ours, not a broken file: let it go on as the panic it is.
            Err(other) => panic::resume_unwind(other),
        },
    }
}

fn decode_unguarded(bytes: &[u8], limits: &ImageLimits) -> Result<Jpeg, ImagingError> {
    let mut d = Decompressor::new(bytes)?;
    d.read_header()?;
    let (w, h) = d.size();
    let rgb_bytes = u64::from(w) * u64::from(h) * 3;
    check_size(w, h, rgb_bytes, limits)?;
    let orientation = d.orientation();
    // What the RGB result leaves of the budget is libjpeg's.
    d.start(limits.max_alloc_bytes.saturating_sub(rgb_bytes))?;
    let image = d.read_rgb(w, h)?;
    d.finish()?;
    Ok(Jpeg { image, orientation })
}

/// What unwinds out of libjpeg's callbacks.
enum Failure {
    Libjpeg { code: c_int, message: String },
    TooManyScans,
}

impl Failure {
    fn into_error(self, limits: &ImageLimits) -> ImagingError {
        match self {
            // A progressive JPEG holds every DCT coefficient (2 bytes a sample) before the
            // first pixel comes out, more than the RGB image takes.
            Failure::Libjpeg { code, .. } if code == ffi::JERR_NO_BACKING_STORE as c_int => ImagingError::TooLarge(
                format!("decoding this JPEG needs more than the limit of {} bytes", limits.max_alloc_bytes),
            ),
            Failure::Libjpeg { code, message } if TOO_LARGE_CODES.contains(&code) => ImagingError::TooLarge(format!(
                "{message} (limit: {} bytes decoded, {}×{} pixels)",
                limits.max_alloc_bytes, limits.max_width, limits.max_height
            )),
            Failure::Libjpeg { message, .. } => ImagingError::Decode(message),
            Failure::TooManyScans => {
                ImagingError::Decode(format!("the progressive JPEG has more than {MAX_SCANS} scans"))
            }
        }
    }
}

/// libjpeg's error manager, with what the warnings told us after it. `repr(C)` with the
/// library's struct first, so the `cinfo.err` pointer libjpeg hands to the callbacks is
/// also a pointer to this.
#[repr(C)]
struct ErrorManager {
    public: ffi::jpeg_error_mgr,
    /// libjpeg ran out of data and made up an end-of-image marker (JWRN_JPEG_EOF): the
    /// file is truncated, which Pillow refuses ("image file is truncated").
    ran_out_of_data: bool,
}

/// One libjpeg decompressor over `bytes`. Boxed parts, since libjpeg keeps pointers to the
/// error and progress managers and to the struct itself.
struct Decompressor<'a> {
    cinfo: Box<ffi::jpeg_decompress_struct>,
    errors: Box<ErrorManager>,
    progress: Box<ffi::jpeg_progress_mgr>,
    input: PhantomData<&'a [u8]>,
}

impl<'a> Decompressor<'a> {
    fn new(bytes: &'a [u8]) -> Result<Self, ImagingError> {
        let len = c_ulong::try_from(bytes.len()).map_err(|_| ImagingError::TooLarge("the JPEG is too long".into()))?;
        // SAFETY: all-zero is a valid value of these plain C structs (null pointers, `None`
        // callbacks, zero numbers, enums whose 0 is a variant), and `jpeg_std_error` then
        // fills in the error manager's defaults.
        let mut errors: Box<ErrorManager> = Box::new(unsafe { mem::zeroed() });
        unsafe { ffi::jpeg_std_error(&mut errors.public) };
        errors.public.error_exit = Some(error_exit);
        errors.public.emit_message = Some(emit_message);
        let mut progress: Box<ffi::jpeg_progress_mgr> = Box::new(unsafe { mem::zeroed() });
        progress.progress_monitor = Some(limit_scans);
        let mut d = Decompressor { cinfo: Box::new(unsafe { mem::zeroed() }), errors, progress, input: PhantomData };
        d.cinfo.common.err = &mut d.errors.public;
        // SAFETY: `cinfo` has its error manager; `jpeg_create_decompress` keeps it and sets
        // up the rest. If it fails it unwinds, and `Drop` (which copes with a half-created
        // struct: `jpeg_destroy` skips a null memory manager) cleans up. `bytes` outlives
        // `d` (the lifetime `'a`), and libjpeg only reads through the pointer.
        unsafe {
            ffi::jpeg_create_decompress(&mut *d.cinfo);
            d.cinfo.common.progress = &mut *d.progress;
            ffi::jpeg_mem_src(&mut d.cinfo, bytes.as_ptr(), len);
            // Keep APP1 segments (64 KiB each at most) for the EXIF orientation.
            ffi::jpeg_save_markers(&mut d.cinfo, APP1, 0xFFFF);
        }
        Ok(d)
    }

    fn read_header(&mut self) -> Result<(), ImagingError> {
        // SAFETY: created in `new`; errors unwind. `require_image` makes a tables-only
        // stream an error rather than a second return code to handle.
        if unsafe { ffi::jpeg_read_header(&mut self.cinfo, 1) } != JPEG_HEADER_OK {
            return Err(ImagingError::Decode("the JPEG has no image".into()));
        }
        // Pillow opens 1, 3 or 4 components (L, RGB, CMYK) and nothing else.
        self.cinfo.out_color_space = match self.cinfo.num_components {
            // libjpeg replicates grey into R, G and B, as Pillow's convert("RGB") of "L" does.
            1 | 3 => ffi::J_COLOR_SPACE::JCS_RGB,
            // Adobe CMYK or YCCK (which libjpeg turns into CMYK, as it does for Pillow).
            4 => ffi::J_COLOR_SPACE::JCS_CMYK,
            n => return Err(ImagingError::Decode(format!("cannot handle {n}-component JPEGs"))),
        };
        // libjpeg's defaults, which Pillow keeps (it changes them only in draft mode): set
        // here so that a different default could never slip in unnoticed.
        self.cinfo.dct_method = ffi::J_DCT_METHOD::JDCT_ISLOW;
        self.cinfo.do_fancy_upsampling = 1;
        self.cinfo.do_block_smoothing = 1;
        Ok(())
    }

    fn size(&self) -> (u32, u32) {
        (self.cinfo.image_width, self.cinfo.image_height)
    }

    /// The orientation in the first EXIF APP1 segment (Pillow reads the first one too); a
    /// missing or unreadable one is upright, so a broken EXIF block never costs a request.
    fn orientation(&self) -> Orientation {
        let mut marker = self.cinfo.marker_list;
        while !marker.is_null() {
            // SAFETY: libjpeg's list of saved markers, alive until the decompressor is
            // destroyed; `data` holds `data_length` bytes.
            let m = unsafe { &*marker };
            let data = if m.data.is_null() {
                &[][..]
            } else {
                unsafe { std::slice::from_raw_parts(m.data, m.data_length as usize) }
            };
            if c_int::from(m.marker) == APP1
                && let Some(tiff) = data.strip_prefix(b"Exif\0\0")
            {
                return Orientation::from_exif_chunk(tiff).unwrap_or(Orientation::NoTransforms);
            }
            marker = m.next;
        }
        Orientation::NoTransforms
    }

    /// Starts decompression with at most `budget` bytes for libjpeg's own buffers. A
    /// progressive (or multi-scan) JPEG needs every DCT coefficient first, 2 bytes a
    /// sample, more than the RGB result; libjpeg checks that against `max_memory_to_use`
    /// before allocating it, and fails (JERR_NO_BACKING_STORE) over it.
    fn start(&mut self, budget: u64) -> Result<(), ImagingError> {
        // 0 would mean "no limit" to libjpeg; 1 refuses any whole-image buffer.
        let budget = c_long::try_from(budget.max(1)).unwrap_or(c_long::MAX);
        // SAFETY: `mem` was set by `jpeg_create_decompress`.
        unsafe { (*self.cinfo.common.mem).max_memory_to_use = budget };
        // SAFETY: after a successful `read_header`; errors unwind. The memory source never
        // suspends, so FALSE cannot happen, but is an error rather than a hang if it did.
        if unsafe { ffi::jpeg_start_decompress(&mut self.cinfo) } == 0 {
            return Err(ImagingError::Decode("libjpeg suspended".into()));
        }
        Ok(())
    }

    /// Reads every scanline: straight into the image for RGB, through a row of CMYK
    /// converted as Pillow does otherwise.
    fn read_rgb(&mut self, w: u32, h: u32) -> Result<RgbImage, ImagingError> {
        let channels = self.cinfo.output_components as usize;
        if (self.cinfo.output_width, self.cinfo.output_height) != (w, h) || !matches!(channels, 3 | 4) {
            return Err(ImagingError::Decode("libjpeg's output is not the size its header gave".into()));
        }
        let row_len = w as usize * 3;
        let mut pixels = zeroed_vec(row_len * h as usize)?;
        let mut cmyk = if channels == 4 { zeroed_vec(w as usize * 4)? } else { Vec::new() };
        for row in pixels.chunks_exact_mut(row_len) {
            if channels == 3 {
                self.read_scanline(row)?;
            } else {
                self.read_scanline(&mut cmyk)?;
                adobe_cmyk_to_rgb(&cmyk, row);
            }
        }
        RgbImage::from_raw(w, h, pixels)
            .ok_or_else(|| ImagingError::Decode("the decoded buffer has the wrong size".into()))
    }

    fn read_scanline(&mut self, row: &mut [u8]) -> Result<(), ImagingError> {
        // libjpeg writes output_width × output_components bytes; `read_rgb` sized `row` so.
        debug_assert_eq!(row.len(), self.cinfo.output_width as usize * self.cinfo.output_components as usize);
        let mut rows = [row.as_mut_ptr()];
        // SAFETY: one row pointer to a buffer of a full scanline, checked above; errors unwind.
        let read = unsafe { ffi::jpeg_read_scanlines(&mut self.cinfo, rows.as_mut_ptr(), 1) };
        if read != 1 {
            return Err(ImagingError::Decode("libjpeg returned no scanline".into()));
        }
        Ok(())
    }

    /// Reads up to the end-of-image marker, as Pillow does, then refuses a file that ran out
    /// before it: libjpeg made up the missing data (grey), Pillow says "truncated".
    fn finish(&mut self) -> Result<(), ImagingError> {
        // SAFETY: every scanline has been read; errors unwind.
        unsafe { ffi::jpeg_finish_decompress(&mut self.cinfo) };
        if self.errors.ran_out_of_data {
            return Err(ImagingError::Decode("the JPEG is truncated (its data ends before the image does)".into()));
        }
        Ok(())
    }
}

impl Drop for Decompressor<'_> {
    fn drop(&mut self) {
        // SAFETY: frees whatever libjpeg allocated, from any state, including after an
        // error unwound out of the middle of a call (what Pillow does after its longjmp).
        unsafe { ffi::jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

/// A zeroed buffer of `len` bytes, or an error if the allocator says no (the size was
/// checked against the limits already; this is for a server short of memory).
fn zeroed_vec(len: usize) -> Result<Vec<u8>, ImagingError> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| ImagingError::TooLarge(format!("could not allocate {len} bytes")))?;
    v.resize(len, 0);
    Ok(v)
}

/// Pillow reads a 4-component JPEG as "CMYK;I" (inverted, Adobe's convention, always) and
/// `convert("RGB")` then applies libImaging's `cmyk2rgb` (Convert.c): with nk = 255 − K,
/// each channel is nk − MULDIV255(C, nk), where MULDIV255(a, b) = ((t >> 8) + t) >> 8 for
/// t = a·b + 128 (a rounded a·b/255). The result is in 0..=255 already (Pillow's CLIP8 is
/// a no-op here), so no clamp is needed.
fn adobe_cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    for (src, dst) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let nk = u32::from(src[3]); // 255 − (255 − raw K)
        for (d, &s) in dst.iter_mut().zip(&src[..3]) {
            let t = u32::from(255 - s) * nk + 128;
            *d = (nk - (((t >> 8) + t) >> 8)) as u8;
        }
    }
}

/// libjpeg's `error_exit`: must not return, so it unwinds with the library's message.
unsafe extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let code = unsafe { (*cinfo.err).msg_code };
    let message = unsafe { libjpeg_message(cinfo) };
    // `resume_unwind`, not `panic!`: no panic hook, so no backtrace in the logs for what is
    // only a bad upload.
    panic::resume_unwind(Box::new(Failure::Libjpeg { code, message }))
}

/// libjpeg's `emit_message`: silent, as Pillow's; level −1 is a warning ("corrupt data",
/// which libjpeg decodes past, as Pillow does), except running out of data, noted for
/// `finish`.
unsafe extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    // SAFETY: `err` is the `public` field at the start of our `repr(C)` ErrorManager.
    let errors = unsafe { &mut *cinfo.err.cast::<ErrorManager>() };
    if level < 0 && errors.public.msg_code == ffi::JWRN_JPEG_EOF as c_int {
        errors.ran_out_of_data = true;
    }
}

/// libjpeg's progress monitor, called as it consumes input: refuses a JPEG past
/// [`MAX_SCANS`] scans.
unsafe extern "C-unwind" fn limit_scans(cinfo: &mut ffi::jpeg_common_struct) {
    if cinfo.is_decompressor == 0 {
        return;
    }
    // SAFETY: libjpeg passes the decompressor itself as its common part (C's j_common_ptr
    // convention), and a decompressor's common fields start its `repr(C)` struct.
    let scans = unsafe { (*std::ptr::from_mut(cinfo).cast::<ffi::jpeg_decompress_struct>()).input_scan_number };
    if scans > MAX_SCANS {
        panic::resume_unwind(Box::new(Failure::TooManyScans))
    }
}

/// The text of libjpeg's current message, from its own formatter.
unsafe fn libjpeg_message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    // JMSG_LENGTH_MAX: libjpeg writes at most this many bytes, NUL included.
    let mut buffer = [0u8; 200];
    let Some(format) = (unsafe { (*cinfo.err).format_message }) else {
        return format!("libjpeg error {}", unsafe { (*cinfo.err).msg_code });
    };
    // SAFETY: mozjpeg-sys declares the buffer `&[u8; 80]`, but libjpeg writes into it (up
    // to JMSG_LENGTH_MAX = 200 bytes): call it through the C signature, a pointer to a
    // writable buffer that large. Same ABI (two pointers).
    let format: unsafe extern "C-unwind" fn(*mut ffi::jpeg_common_struct, *mut u8) = unsafe { mem::transmute(format) };
    unsafe { format(cinfo, buffer.as_mut_ptr()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    String::from_utf8_lossy(&buffer[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmyk_converts_as_pillow_does() {
        // Pillow 13: Image.frombytes("CMYK", ...).convert("RGB") of these (C, M, Y, K);
        // libjpeg hands us the inverted bytes, 255 − each.
        let cases: [([u8; 4], [u8; 3]); 8] = [
            ([0, 0, 0, 0], [255, 255, 255]),
            ([255, 255, 255, 255], [0, 0, 0]),
            ([255, 0, 0, 0], [0, 255, 255]),
            ([0, 0, 0, 255], [0, 0, 0]),
            ([128, 64, 32, 16], [119, 179, 209]),
            ([1, 2, 3, 254], [1, 1, 1]),
            ([200, 100, 50, 128], [27, 77, 102]),
            ([17, 250, 131, 77], [166, 3, 87]),
        ];
        for (cmyk, want) in cases {
            let raw: Vec<u8> = cmyk.iter().map(|v| 255 - v).collect();
            let mut got = [0u8; 3];
            adobe_cmyk_to_rgb(&raw, &mut got);
            assert_eq!(got, want, "CMYK {cmyk:?}");
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for bytes in [&b"\xFF\xD8\xFF\xD9"[..], b"\xFF\xD8", b"\xFF\xD8\xFF\xC0\x00\x02", b"not a jpeg"] {
            match decode(bytes, &ImageLimits::default()) {
                Err(ImagingError::Decode(_)) => {}
                other => panic!("{bytes:?}: {:?}", other.map(|j| j.image.dimensions())),
            }
        }
    }
}
