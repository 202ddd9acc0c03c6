//! EXIF orientation as a package setting a request may override: the model sees the photo
//! upright (`apply`) or as stored (`ignore`, what `PIL.Image.open` and torchvision give),
//! and the maps at the upload's resolution land on the upright photo either way.

mod common;

use image::{DynamicImage, GrayImage};
use scorecam::cam::Method;
use scorecam::imaging::{ImageLimits, Orientation, decode, decode_stored, orient_map};
use scorecam::service::{
    ExifOrientation, ExplainDocument, ExplainRequest, ImageInput, Map, OutputFormat, Rendered, Rendering, Resolution,
    TargetSpec,
};

/// A photo stored on its side with Orientation = 6 (made by Pillow:
/// scripts/dev/make_jpeg_fixtures.py).
const PHOTO: &str = "tests/fixtures/jpeg/exif_orientation6_420_37x29.jpg";

async fn explain(image: ImageInput, exif: Option<ExifOrientation>) -> ExplainDocument {
    let request = ExplainRequest {
        model: Some("efficientnet-lite0".into()),
        targets: TargetSpec::Classes(vec![409]),
        method: Method::parse(Some("gradcam"), &[]).unwrap(),
        rendering: Rendering { format: OutputFormat::Json, resolution: Resolution::Input, ..Default::default() },
        exif_orientation: exif,
        ..Default::default()
    };
    match common::default_service().explain(request, image, None).await.unwrap() {
        Rendered::Json(doc) => *doc,
        Rendered::Png(_) => panic!("asked for JSON"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_model_sees_the_photo_as_asked_and_the_map_lands_on_the_upright_photo() {
    let bytes = std::fs::read(common::root().join(PHOTO)).unwrap();
    let (stored, orientation) = decode_stored(&bytes, &ImageLimits::default()).unwrap();
    assert_eq!(orientation, Orientation::Rotate90, "the fixture is stored on its side");
    let upright = decode(&bytes, &ImageLimits::default()).unwrap();
    assert_eq!((upright.width(), upright.height()), (stored.height(), stored.width()));
    let photo = || ImageInput::Encoded(bytes.clone().into());

    // `ignore`: exactly the stored pixels' explanation, its map turned onto the upright photo.
    let ignored = explain(photo(), Some(ExifOrientation::Ignore)).await;
    let as_stored = explain(ImageInput::Pixels(stored), None).await;
    assert_eq!(ignored.exif_orientation, ExifOrientation::Ignore);
    assert_eq!(ignored.predictions, as_stored.predictions, "the model saw the stored pixels");
    let map = &ignored.explanations[0].saliency;
    assert_eq!((map.width, map.height), (upright.width() as usize, upright.height() as usize));
    let turned = orient_map(as_stored.explanations[0].saliency.clone(), orientation);
    assert_eq!(map, &turned, "the stored pixels' map, turned upright");

    // The package's default (`apply` for the shipped model): the upright pixels'.
    let applied = explain(photo(), None).await;
    let as_upright = explain(ImageInput::Pixels(upright), None).await;
    assert_eq!(applied.exif_orientation, ExifOrientation::Apply);
    assert_eq!(applied.predictions, as_upright.predictions);
    assert_eq!(applied.explanations[0].saliency, as_upright.explanations[0].saliency);
    assert_ne!(applied.predictions, ignored.predictions, "the two choices feed the model different pixels");
}

/// `orient_map` turns a map as the `image` crate's own `apply_orientation` turns a photo,
/// for all eight EXIF orientations.
#[test]
fn maps_turn_as_photos_turn() {
    let values: Vec<u8> = (0..6).collect();
    let all = [
        Orientation::NoTransforms,
        Orientation::Rotate90,
        Orientation::Rotate180,
        Orientation::Rotate270,
        Orientation::FlipHorizontal,
        Orientation::FlipVertical,
        Orientation::Rotate90FlipH,
        Orientation::Rotate270FlipH,
    ];
    for orientation in all {
        let mut photo = DynamicImage::ImageLuma8(GrayImage::from_raw(3, 2, values.clone()).unwrap());
        photo.apply_orientation(orientation);
        let photo = photo.into_luma8();
        let map = orient_map(Map::new(3, 2, values.iter().map(|&v| f32::from(v)).collect()), orientation);
        assert_eq!((map.width as u32, map.height as u32), photo.dimensions(), "{orientation:?}");
        let expected: Vec<f32> = photo.into_raw().into_iter().map(f32::from).collect();
        assert_eq!(map.data, expected, "{orientation:?}");
    }
}
