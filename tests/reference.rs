//! The four presets against the peer libraries' outputs (tests/fixtures/reference; where
//! they came from: docs/reference-maps.md) on the real EfficientNet-Lite0 model.

mod common;

use std::sync::Arc;

use scorecam::cam::Preset;
use scorecam::service::{
    ExplainDocument, ExplainRequest, ImageInput, OutputFormat, Rendered, Rendering, Resolution, TargetSpec,
};
use serde_json::Value;

const CASES: [&str; 4] = ["chelsea", "goldfish", "golden_retriever", "airliner"];
/// The tolerance the issue sets; an independent port reaches ~1e-6.
const TOLERANCE: f32 = 1e-3;

fn cases() -> Value {
    let text = std::fs::read_to_string(common::root().join("tests/fixtures/reference/cases.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn image(case: &str) -> Arc<[u8]> {
    std::fs::read(common::root().join(format!("tests/fixtures/reference/{case}.png"))).unwrap().into()
}

async fn explain_json(case: &str, preset: Preset, resolution: Resolution, targets: TargetSpec) -> ExplainDocument {
    let service = common::default_service();
    let request = ExplainRequest {
        model: Some("efficientnet-lite0".into()),
        method: preset.into(),
        targets,
        rendering: Rendering { format: OutputFormat::Json, resolution, ..Default::default() },
        ..Default::default()
    };
    match service.explain(request, ImageInput::Encoded(image(case)), None).await.unwrap() {
        Rendered::Json(doc) => *doc,
        Rendered::Png { .. } => panic!("asked for JSON"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_preset_matches_its_peer_library_on_every_case() {
    let cases = cases();
    for case in CASES {
        let expected = &cases[case];
        let active = expected["active_channels"].as_u64().unwrap() as usize;
        for preset in Preset::ALL {
            // torch-cam returns its map at feature resolution; the others at 224×224.
            let resolution = if preset == Preset::Torchcam { Resolution::Feature } else { Resolution::Input };
            let doc = explain_json(case, preset, resolution, TargetSpec::TopK(1)).await;
            let (shape, want) =
                common::read_npy(&common::root().join(format!("tests/fixtures/reference/{case}.{preset}.npy")));
            let got = &doc.explanations[0].saliency;
            assert_eq!([got.height, got.width], [shape[0], shape[1]], "{case}/{preset}: map size");
            let diff = common::max_abs_diff(&got.data, &want);
            if preset == Preset::PytorchCnnVisualizations {
                // Its maps are bytes / 255: a probability a few ulps off may move a byte by
                // one step, nothing more; where the bytes agree the values are equal.
                let step = |v: f32| (v * 255.0).round() as i32;
                let differ = got.data.iter().zip(&want).filter(|&(a, b)| step(*a) != step(*b)).count();
                assert!(diff <= 1.0 / 255.0 + 1e-6, "{case}/{preset}: max |Δ| = {diff}");
                assert!(differ * 100 <= want.len(), "{case}/{preset}: {differ} bytes differ");
                assert!(
                    got.data.iter().zip(&want).all(|(a, b)| step(*a) != step(*b) || a == b),
                    "{case}/{preset}: unequal where the bytes agree"
                );
            } else {
                assert!(diff <= TOLERANCE, "{case}/{preset}: max |Δ| = {diff}");
            }

            // The explained class is the reference's argmax, with its probability.
            let target = &doc.explanations[0].target;
            assert_eq!(target.index as u64, expected["cls"].as_u64().unwrap(), "{case}: class");
            let prob = expected["prob"].as_f64().unwrap() as f32;
            assert!((target.score - prob).abs() < 1e-4, "{case}: p = {} vs {prob}", target.score);
            let top5: Vec<u64> = doc.predictions.iter().map(|p| p.index as u64).collect();
            let want5: Vec<u64> =
                expected["logits_top5"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
            assert_eq!(top5, want5, "{case}: top-5");

            // Exact savings: official skips constant channels, the others give them one
            // shared pass; channels with the same normalised mask share one pass. The maps
            // still match the peers (above), which run every channel.
            let passes = doc.stats.forward_passes;
            let shared = doc.stats.shared_mask_channels;
            match preset {
                Preset::Official | Preset::PytorchCnnVisualizations => {
                    assert_eq!(passes, active - shared + 1, "{case}: clean pass + distinct active masks");
                    assert!(shared > 0, "{case}: no repeated mask among {active} active channels");
                }
                _ => assert!(
                    passes <= active - shared + 2,
                    "{case}/{preset}: {passes} passes for {active} active channels, {shared} shared"
                ),
            }
            assert_eq!(doc.stats.skipped_channels, 1280 - active);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_targets_cost_the_passes_of_one_and_give_the_same_maps() {
    let one = explain_json("chelsea", Preset::Official, Resolution::Model, TargetSpec::Classes(vec![285])).await;
    let two = explain_json("chelsea", Preset::Official, Resolution::Model, TargetSpec::Classes(vec![285, 281])).await;
    assert_eq!(one.stats.forward_passes, two.stats.forward_passes);
    assert_eq!(two.explanations.len(), 2);
    assert_eq!(two.explanations[1].target.index, 281);
    assert_eq!(one.explanations[0].saliency.data, two.explanations[0].saliency.data);
    let d = common::max_abs_diff(&two.explanations[0].saliency.data, &two.explanations[1].saliency.data);
    assert!(d > 0.01, "different classes should give different maps (max |Δ| = {d})");
}

#[tokio::test(flavor = "multi_thread")]
async fn maps_come_back_at_the_uploaded_resolution() {
    // A 300×200 upload of the reference image: the map must be 300×200 too.
    let img = image::load_from_memory(&image("goldfish")).unwrap();
    let resized = img.resize_exact(300, 200, image::imageops::FilterType::Triangle);
    let mut bytes = Vec::new();
    resized.write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png).unwrap();
    let service = common::default_service();
    let rendering = Rendering { format: OutputFormat::Json, ..Default::default() };
    let request = ExplainRequest { model: Some("efficientnet-lite0".into()), rendering, ..Default::default() };
    let Rendered::Json(doc) = service.explain(request, ImageInput::Encoded(bytes.into()), None).await.unwrap() else {
        panic!("asked for JSON")
    };
    let map = &doc.explanations[0].saliency;
    assert_eq!((map.width, map.height), (300, 200));
    assert!(map.data.iter().all(|v| (0.0..=1.0).contains(v)));
    assert_eq!(doc.explanations[0].target.index, 1, "still a goldfish");
}
