//! Triton's binary tensor data extension, the framing part: an inference body may be a JSON
//! header followed by tensors' raw bytes, the header's length given by
//! `Inference-Header-Content-Length`, each binary tensor's length by its parameter
//! `binary_data_size`, in the order the header lists the tensors. Tensor data is
//! little-endian and row-major; a `BYTES` element is a 4-byte little-endian length and that
//! many bytes. What the tensors mean is `v2`'s business.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ApiError;

/// The header that gives the JSON header's length in bytes (the rest of the body is binary).
pub const HEADER_LENGTH: &str = "inference-header-content-length";

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// A request body split into its JSON header and the binary data after it, which the
/// inputs claim in order with [`Framed::take`].
#[derive(Debug)]
pub struct Framed {
    pub json: Bytes,
    binary: Bytes,
    claimed: usize,
}

impl Framed {
    /// Splits `body` at the length `Inference-Header-Content-Length` gives; without the
    /// header the whole body is JSON. The body was read within the body limit, so the
    /// split only has to check the length against it.
    pub fn split(headers: &HeaderMap, body: Bytes) -> Result<Self, ApiError> {
        let Some(value) = headers.get(HEADER_LENGTH) else {
            return Ok(Self { json: body, binary: Bytes::new(), claimed: 0 });
        };
        let text = value.to_str().unwrap_or_default().trim();
        let length: usize = text.parse().map_err(|_| {
            bad(format!(
                "Inference-Header-Content-Length must be the JSON header's length in bytes, got `{text}` \
                 (binary tensor data extension)"
            ))
        })?;
        if length > body.len() {
            return Err(bad(format!(
                "Inference-Header-Content-Length says the JSON header is {length} bytes, but the whole body \
                 is {} bytes",
                body.len()
            )));
        }
        let binary = body.slice(length..);
        Ok(Self { json: body.slice(..length), binary, claimed: 0 })
    }

    /// The next `size` bytes of binary data, for the input `name`.
    pub fn take(&mut self, name: &str, size: u64) -> Result<Bytes, ApiError> {
        let left = self.binary.len() - self.claimed;
        let size = usize::try_from(size).ok().filter(|s| *s <= left).ok_or_else(|| {
            bad(format!(
                "input `{name}` has binary_data_size {size}, but only {left} bytes of binary data are left after \
                 the JSON header (send Inference-Header-Content-Length with the JSON header's length, and the \
                 tensors' bytes after it in the order of `inputs`)"
            ))
        })?;
        let data = self.binary.slice(self.claimed..self.claimed + size);
        self.claimed += size;
        Ok(data)
    }

    /// Fails when binary data is left that no input's `binary_data_size` claimed (a wrong
    /// size, or a header length that cuts the JSON short).
    pub fn finish(&self) -> Result<(), ApiError> {
        match self.binary.len() - self.claimed {
            0 => Ok(()),
            left => Err(bad(format!(
                "{left} bytes after the JSON header belong to no input: each binary input names its length in \
                 its `parameters.binary_data_size`, and Inference-Header-Content-Length gives the JSON header's \
                 length"
            ))),
        }
    }
}

/// `binary_data_size`: a byte count.
pub fn data_size(name: &str, value: &Value) -> Result<u64, ApiError> {
    value
        .as_u64()
        .ok_or_else(|| bad(format!("input `{name}`: `binary_data_size` must be a whole number of bytes, got {value}")))
}

/// `count` BYTES elements, each a 4-byte little-endian length and that many bytes, which
/// must fill `data` exactly.
pub fn bytes_elements(name: &str, data: &Bytes, count: usize) -> Result<Vec<Bytes>, ApiError> {
    let mut elements = Vec::with_capacity(count);
    let mut at = 0;
    for i in 0..count {
        let prefix: [u8; 4] = data
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad(format!("input `{name}`: BYTES element {i} has no 4-byte length prefix")))?;
        let length = u32::from_le_bytes(prefix) as usize;
        let start = at + 4;
        if length > data.len() - start {
            return Err(bad(format!(
                "input `{name}`: BYTES element {i} says {length} bytes, but {} are left",
                data.len() - start
            )));
        }
        elements.push(data.slice(start..start + length));
        at = start + length;
    }
    if at != data.len() {
        return Err(bad(format!(
            "input `{name}`: {} bytes follow its {count} BYTES elements (the shape says {count})",
            data.len() - at
        )));
    }
    Ok(elements)
}

/// FP32 values from their little-endian bytes (a whole number of them: the caller checked
/// the length against the shape).
pub fn f32_values(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// A 200 with binary outputs: the JSON header, then the outputs' bytes in the order the
/// header lists them.
pub fn response(json: Vec<u8>, binary: Vec<u8>) -> Response {
    let length = HeaderValue::from(json.len());
    let mut body = json;
    body.extend_from_slice(&binary);
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream")),
        (header::HeaderName::from_static(HEADER_LENGTH), length),
    ];
    (StatusCode::OK, headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(json: &[u8], binary: &[u8], length: Option<&str>) -> Result<Framed, ApiError> {
        let mut headers = HeaderMap::new();
        if let Some(l) = length {
            headers.insert(HEADER_LENGTH, HeaderValue::from_str(l).unwrap());
        }
        Framed::split(&headers, Bytes::from([json, binary].concat()))
    }

    #[test]
    fn splits_claims_in_order_and_refuses_leftovers() {
        let mut f = framed(b"{}", b"abcdef", Some("2")).unwrap();
        assert_eq!(&f.json[..], b"{}");
        assert_eq!(&f.take("a", 2).unwrap()[..], b"ab");
        assert!(f.finish().unwrap_err().to_string().contains("4 bytes after the JSON header"));
        assert_eq!(&f.take("b", 4).unwrap()[..], b"cdef");
        f.finish().unwrap();
        assert!(f.take("c", 1).unwrap_err().to_string().contains("only 0 bytes"));
    }

    #[test]
    fn without_the_header_the_body_is_json() {
        let mut f = framed(b"{}", b"", None).unwrap();
        assert_eq!(&f.json[..], b"{}");
        f.finish().unwrap();
        assert!(f.take("image", 10).is_err());
    }

    #[test]
    fn refuses_bad_header_lengths() {
        for length in ["-1", "x", "1e3", ""] {
            let e = framed(b"{}", b"", Some(length)).unwrap_err().to_string();
            assert!(e.contains("must be the JSON header's length"), "{length}: {e}");
        }
        let e = framed(b"{}", b"", Some("3")).unwrap_err().to_string();
        assert!(e.contains("whole body is 2 bytes"), "{e}");
        assert!(framed(b"{}", b"", Some("18446744073709551616")).is_err());
        assert!(framed(b"{}", b"ab", Some("2")).unwrap().take("x", u64::MAX).is_err());
    }

    #[test]
    fn bytes_elements_are_length_prefixed() {
        let data =
            Bytes::from([&3u32.to_le_bytes()[..], b"abc", &0u32.to_le_bytes(), &1u32.to_le_bytes(), b"z"].concat());
        let e = bytes_elements("image", &data, 3).unwrap();
        assert_eq!(e.iter().map(|b| &b[..]).collect::<Vec<_>>(), [&b"abc"[..], b"", b"z"]);
        assert!(bytes_elements("image", &data, 2).unwrap_err().to_string().contains("follow its 2 BYTES elements"));
        assert!(bytes_elements("image", &data, 4).unwrap_err().to_string().contains("element 3 has no 4-byte"));
        let short = Bytes::from([&9u32.to_le_bytes()[..], b"abc"].concat());
        assert!(bytes_elements("image", &short, 1).unwrap_err().to_string().contains("says 9 bytes, but 3"));
        let huge = Bytes::from(u32::MAX.to_le_bytes().to_vec());
        assert!(bytes_elements("image", &huge, 1).is_err());
    }

    #[test]
    fn f32_values_are_little_endian() {
        let bytes: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(f32_values(&bytes), [1.5, -2.0]);
    }
}
