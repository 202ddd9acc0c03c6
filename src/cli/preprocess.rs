//! `scorecam preprocess IMAGE… --model NAME -o X.npy`: the images as the model sees them (the
//! service's own decoding and preprocessing, by the package's model.toml), stacked into one
//! N×C×H×W little-endian float32 `.npy`. What `scripts/tools/quantize_int8.py` calibrates on,
//! so a quantised package is calibrated on exactly the tensors it will be fed.

use std::path::Path;

use super::CliError;
use super::args::PreprocessArgs;
use crate::service::{ImageInput, Service};

pub async fn preprocess(service: &Service, args: PreprocessArgs) -> Result<(), CliError> {
    let model = service.model(args.model.as_deref())?;
    let name = model.name().to_string();
    let [c, h, w] = model.package.info.input_chw;
    let mut data = Vec::with_capacity(args.images.len() * c * h * w);
    for image in &args.images {
        let bytes = std::fs::read(image).map_err(CliError::io(image))?;
        let tensor = service
            .preprocess(&name, ImageInput::Encoded(bytes.into()))
            .await
            .map_err(|source| CliError::Input { path: image.clone(), source })?;
        if tensor.len() != c * h * w {
            return Err(CliError::Invalid(format!(
                "{}: preprocessed to {} values, expected {c}×{h}×{w}",
                image.display(),
                tensor.len()
            )));
        }
        data.extend_from_slice(&tensor);
    }
    write_npy(&args.output, &[args.images.len(), c, h, w], &data)?;
    eprintln!("model: {name}; wrote {} ({}×{c}×{h}×{w} float32)", args.output.display(), args.images.len());
    Ok(())
}

/// `.npy` format 1.0: magic, version, header length, a dict padded with spaces to a multiple
/// of 64 bytes (newline last), then the data.
fn npy_bytes(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    let unpadded = 10 + header.len() + 1;
    header.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

fn write_npy(path: &Path, shape: &[usize], data: &[f32]) -> Result<(), CliError> {
    std::fs::write(path, npy_bytes(shape, data)).map_err(CliError::io(path))
}

#[cfg(test)]
mod tests {
    use super::npy_bytes;

    #[test]
    fn the_npy_header_is_padded_to_64_bytes_and_the_data_follows() {
        let bytes = npy_bytes(&[1, 2, 1, 2], &[1.0, -2.0, 0.5, 3.0]);
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 1, 2), }"));
        assert!(header.ends_with('\n'));
        let data: Vec<f32> =
            bytes[10 + len..].chunks(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(data, [1.0, -2.0, 0.5, 3.0]);
    }
}
