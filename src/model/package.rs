//! One model package: its files, manifest, labels and validated shapes.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::HeadKindName;
use super::{DeclaredLayout, Manifest, ModelError};
use crate::cam::HeadKind;
use crate::runtime::{self, GraphBytes, GraphSignature, Port, ProviderKind, SessionConfig, SessionShapes, SideTensor};

/// The shapes a validated package guarantees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct ModelInfo {
    /// Channels, height, width of one input image.
    pub input_chw: [usize; 3],
    /// Channels (K), height, width of the target layer's grid for one image, whatever the
    /// graph's layout (the runtime converts).
    pub feature_khw: [usize; 3],
    /// How the graphs lay the target layer out.
    #[serde(skip)]
    pub layout: runtime::FeatureLayout,
    /// Classes a target may name (a one-logit binary head has two; an embedding none).
    pub classes: usize,
    /// What the head returns per image.
    #[serde(skip)]
    pub head: HeadKind,
    /// Values of one image's side tensors: what the head takes besides the target layer
    /// (skip connections), 0 for a head that reads only the cut.
    pub side_len: usize,
    /// A graph takes one image per run (its batch axis is fixed at 1): the runtime runs it
    /// once per image of a batch, which saves the work of stacking but not of the passes.
    pub one_image_per_run: bool,
}

impl ModelInfo {
    /// Values besides the grid that one image's features carry (a transformer's prefix
    /// tokens, a U-Net's skip connections), which head-only passes give the head back
    /// unchanged.
    pub fn feature_extra(&self) -> usize {
        self.layout.extra_len(self.feature_khw) + self.side_len
    }
}

/// How the two graphs connect: the names of the target layer's tensor (the extractor's
/// first output, the head's first input) and the side tensors the head takes besides it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wiring {
    pub features_names: (String, String),
    pub sides: Vec<SideTensor>,
}

#[derive(Clone, Debug)]
pub struct ModelPackage {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub labels: Vec<String>,
    pub info: ModelInfo,
    pub wiring: Wiring,
    /// The two graphs as read and validated: what every worker's sessions are made from.
    pub extractor: GraphBytes,
    pub head: GraphBytes,
}

impl ModelPackage {
    /// What the runtime needs to run the two graphs.
    pub fn session_shapes(&self) -> SessionShapes {
        let i = &self.info;
        SessionShapes {
            input_chw: i.input_chw,
            feature_khw: i.feature_khw,
            layout: i.layout,
            head_len: i.head.output_len(),
            head_outputs: self.manifest.head.outputs(),
            features_names: self.wiring.features_names.clone(),
            sides: self.wiring.sides.clone(),
            one_image_per_run: i.one_image_per_run,
        }
    }

    /// Bytes of the two ONNX graphs (their weights, mostly): what each open pair of
    /// sessions holds in memory, roughly (and what the load itself holds once).
    pub fn weights_bytes(&self) -> u64 {
        (self.extractor.len() + self.head.len()) as u64
    }

    /// A detector's default prediction thresholds (score, IoU).
    pub fn nms(&self) -> (f32, f32) {
        (self.manifest.head.score_threshold, self.manifest.head.iou_threshold)
    }

    /// What the head returns, as the methods and the service read it.
    pub fn head(&self) -> HeadKind {
        self.info.head
    }

    pub fn label(&self, class: usize) -> &str {
        self.labels.get(class).map(String::as_str).unwrap_or("")
    }

    /// Reads and validates a package. ONNX Runtime must be initialised: the graphs'
    /// signatures are read from real sessions, so what is validated is what will run.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| ModelError::Manifest { path: dir.into(), message: "folder name is not UTF-8".into() })?
            .to_string();
        let manifest = Manifest::from_file(&dir.join("model.toml"))?;
        let labels_path = dir.join("labels.txt");
        // An embedding has no classes: its labels are optional.
        let labels = if manifest.head.kind == HeadKindName::Embedding && !labels_path.exists() {
            Vec::new()
        } else {
            read_labels(&labels_path)?
        };
        let extractor = read_graph(&dir.join("extractor.onnx"))?;
        let head = read_graph(&dir.join("head.onnx"))?;
        let ext_sig = signature(&extractor)?;
        let head_sig = signature(&head)?;
        let (info, wiring) = validate_signatures(dir, &manifest, labels.len(), &ext_sig, &head_sig)?;
        let labels = binary_labels(info.head, labels);
        Ok(Self { name, dir: dir.to_path_buf(), manifest, labels, info, wiring, extractor, head })
    }
}

/// A one-logit binary head's two classes: its labels file may name only the positive one.
fn binary_labels(head: HeadKind, labels: Vec<String>) -> Vec<String> {
    match labels.as_slice() {
        [positive] if head.is_binary() => vec![format!("not {positive}"), positive.clone()],
        _ => labels,
    }
}

fn read_labels(path: &Path) -> Result<Vec<String>, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    let labels: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
    if labels.is_empty() || labels.iter().any(String::is_empty) {
        return Err(ModelError::Labels { path: path.into(), message: "expected one non-empty label per line".into() });
    }
    Ok(labels)
}

fn read_graph(path: &Path) -> Result<GraphBytes, ModelError> {
    GraphBytes::read(path).map_err(|source| ModelError::Io { path: path.into(), source })
}

fn signature(graph: &GraphBytes) -> Result<GraphSignature, ModelError> {
    let path = graph.path.as_path();
    let cfg = SessionConfig { intra_threads: 1, optimization_level: 0, ..Default::default() };
    let session = runtime::open_session(graph, &cfg, ProviderKind::Cpu)
        .map_err(|e| ModelError::Graph { path: path.into(), message: e.to_string() })?;
    runtime::read_signature(&session).map_err(|message| ModelError::Graph { path: path.into(), message })
}

fn dims(shape: &[i64]) -> String {
    let parts: Vec<String> = shape.iter().map(|d| if *d < 0 { "?".into() } else { d.to_string() }).collect();
    format!("[{}]", parts.join("×"))
}

fn fail<T>(path: &Path, message: String) -> Result<T, ModelError> {
    Err(ModelError::Mismatch { path: path.into(), message })
}

/// A graph tensor has the rank wanted and a dynamic batch axis, or one fixed at 1 (a graph
/// exported for one image, which the runtime then runs once per image).
fn rank(path: &Path, what: &str, shape: &[i64], want: usize) -> Result<(), ModelError> {
    if shape.len() != want {
        return fail(path, format!("{what} has shape {}, expected rank {want}", dims(shape)));
    }
    if shape[0] >= 0 && shape[0] != 1 {
        return fail(
            path,
            format!(
                "{what} has a fixed batch dimension {} ({}); re-export with a dynamic batch axis (or one of 1)",
                shape[0],
                dims(shape)
            ),
        );
    }
    Ok(())
}

/// Checks the extractor/head pair against each other, the manifest and the labels.
pub fn validate_signatures(
    dir: &Path,
    manifest: &Manifest,
    labels: usize,
    ext: &GraphSignature,
    head: &GraphSignature,
) -> Result<(ModelInfo, Wiring), ModelError> {
    let (ext_path, head_path) = (dir.join("extractor.onnx"), dir.join("head.onnx"));
    if ext.inputs.len() != 1 {
        return fail(&ext_path, format!("has {} inputs; the extractor takes one, the image", ext.inputs.len()));
    }
    let (input, features, head_in, head_out) = (&ext.inputs[0], &ext.outputs[0], &head.inputs[0], &head.outputs[0]);
    let layout = manifest.target_layer.layout;
    let feature_rank = if matches!(layout, DeclaredLayout::Tokens { .. }) { 3 } else { 4 };
    rank(&ext_path, "input", &input.shape, 4)?;
    rank(&ext_path, "output", &features.shape, feature_rank)?;
    rank(&head_path, "input", &head_in.shape, feature_rank)?;
    rank(&head_path, "output", &head_out.shape, manifest.head.output_rank())?;
    let (h, w) = check_input(&ext_path, manifest, &input.shape)?;
    check_pair(&ext_path, &head_path, &features.shape, &head_in.shape)?;
    let (feature_khw, runtime_layout) = feature_grid(&ext_path, layout, &features.shape)?;
    let head_kind = check_head(dir, manifest, &head.outputs, labels)?;
    let sides = side_tensors(&head_path, &ext.outputs[1..], &head.inputs[1..])?;
    let info = ModelInfo {
        input_chw: [manifest.input.channels as usize, h, w],
        feature_khw,
        layout: runtime_layout,
        classes: head_kind.classes(),
        head: head_kind,
        side_len: sides.iter().map(SideTensor::len).sum(),
        one_image_per_run: [&ext.inputs, &ext.outputs, &head.inputs, &head.outputs]
            .into_iter()
            .flatten()
            .any(|port| port.shape.first() == Some(&1)),
    };
    Ok((info, Wiring { features_names: (features.name.clone(), head_in.name.clone()), sides }))
}

/// The head's inputs after the first are extractor outputs of the same name and shape:
/// tensors computed before the cut that the head needs (skip connections).
fn side_tensors(head_path: &Path, outputs: &[Port], inputs: &[Port]) -> Result<Vec<SideTensor>, ModelError> {
    inputs
        .iter()
        .map(|input| {
            let Some(output) = outputs.iter().find(|o| o.name == input.name) else {
                let have: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
                return fail(
                    head_path,
                    format!(
                        "input `{}` is not an output of extractor.onnx (its other outputs: {}); a head input \
                         besides the features must be an extractor output of the same name",
                        input.name,
                        if have.is_empty() { "none".to_string() } else { have.join(", ") }
                    ),
                );
            };
            let what = format!("side tensor `{}`", input.name);
            rank(head_path, &what, &input.shape, input.shape.len().max(1))?;
            if input.shape[1..].iter().any(|d| *d <= 0) || output.shape.get(1..) != Some(&input.shape[1..]) {
                return fail(
                    head_path,
                    format!(
                        "{what} is {} in head.onnx and {} in extractor.onnx; it needs the same fixed sizes but for the batch",
                        dims(&input.shape),
                        dims(&output.shape)
                    ),
                );
            }
            Ok(SideTensor { name: input.name.clone(), shape: input.shape[1..].iter().map(|&d| d as usize).collect() })
        })
        .collect()
}

/// The extractor's input has the manifest's channels and size (or is dynamic there); its
/// H, W.
fn check_input(path: &Path, manifest: &Manifest, input: &[i64]) -> Result<(usize, usize), ModelError> {
    let (w, h) = (manifest.input.width as i64, manifest.input.height as i64);
    let channels = i64::from(manifest.input.channels);
    if input[1] != channels {
        return fail(
            path,
            format!(
                "input has {} channels ({}) but model.toml says input.channels = {channels}; set it to match \
                 (1 for a grey model, 3 for RGB)",
                input[1],
                dims(input)
            ),
        );
    }
    if (input[2] >= 0 && input[2] != h) || (input[3] >= 0 && input[3] != w) {
        return fail(path, format!("input is {} but model.toml says {h}×{w}", dims(input)));
    }
    Ok((h as usize, w as usize))
}

/// The head takes what the extractor gives, which is fixed but for the batch.
fn check_pair(ext_path: &Path, head_path: &Path, features: &[i64], head_input: &[i64]) -> Result<(), ModelError> {
    if features[1..].iter().any(|d| *d <= 0) {
        return fail(ext_path, format!("output {} must have fixed channel and spatial sizes", dims(features)));
    }
    if head_input[1..] != features[1..] && head_input[1..].iter().zip(&features[1..]).any(|(a, b)| *a >= 0 && a != b) {
        return fail(
            head_path,
            format!("input {} does not match the extractor's output {}", dims(head_input), dims(features)),
        );
    }
    Ok(())
}

/// The target layer's K×h×w grid and how the runtime converts it, as the manifest
/// declares the layout; refused when it cannot give a map.
fn feature_grid(
    path: &Path,
    layout: DeclaredLayout,
    features: &[i64],
) -> Result<([usize; 3], runtime::FeatureLayout), ModelError> {
    let (khw, runtime_layout) = match layout {
        DeclaredLayout::Nchw => ([features[1], features[2], features[3]], runtime::FeatureLayout::Nchw),
        DeclaredLayout::Nhwc => ([features[3], features[1], features[2]], runtime::FeatureLayout::Nhwc),
        DeclaredLayout::Tokens { grid: (gh, gw), prefix } => {
            let tokens = (prefix + gh * gw) as i64;
            if features[1] != tokens {
                return fail(
                    path,
                    format!(
                        "output {} has {} tokens but model.toml's layout needs prefix_tokens + grid = \
                         {prefix} + {gh}×{gw} = {tokens}",
                        dims(features),
                        features[1]
                    ),
                );
            }
            ([features[2], gh as i64, gw as i64], runtime::FeatureLayout::Tokens { prefix })
        }
    };
    if khw[1] * khw[2] <= 1 {
        return fail(
            path,
            format!(
                "output {} has a 1×1 grid, which cannot give a map (a cut after global pooling?); cut at the last \
                 spatial feature map before it (scripts/tools/split_model.py --list-layers ranks them)",
                dims(features)
            ),
        );
    }
    Ok((khw.map(|d| d as usize), runtime_layout))
}

/// The head's outputs are fixed-size blocks per image, of the manifest's kind, with a
/// label per class.
fn check_head(dir: &Path, manifest: &Manifest, outputs: &[Port], labels: usize) -> Result<HeadKind, ModelError> {
    let head_path = dir.join("head.onnx");
    let wanted = manifest.head.outputs();
    if outputs.len() < wanted {
        return fail(
            &head_path,
            format!("has {} outputs; a {} head needs {wanted}", outputs.len(), manifest.head.kind.name()),
        );
    }
    let mut shapes = Vec::with_capacity(wanted);
    for port in &outputs[..wanted] {
        let shape = &port.shape;
        if shape.len() < 2 || shape[1..].iter().any(|d| *d <= 0) {
            return fail(
                &head_path,
                format!("output `{}` {} must have fixed sizes but for the batch", port.name, dims(shape)),
            );
        }
        shapes.push(shape[1..].iter().map(|&d| d as usize).collect::<Vec<_>>());
    }
    let head = manifest.head.kind(&shapes, labels).map_err(|message| ModelError::Mismatch {
        path: head_path.clone(),
        message: format!(
            "{message}; its outputs are {}",
            outputs.iter().map(|p| dims(&p.shape)).collect::<Vec<_>>().join(", ")
        ),
    })?;
    let classes = head.classes();
    let labels_ok = match head {
        HeadKind::Embedding { .. } => true,
        _ if head.is_binary() => matches!(labels, 1 | 2),
        _ => labels == classes,
    };
    if !labels_ok {
        return fail(
            &dir.join("labels.txt"),
            format!(
                "{labels} labels but head.onnx outputs {classes} classes ({} head {})",
                head.name(),
                dims(&outputs[0].shape)
            ),
        );
    }
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(input: &[i64], output: &[i64]) -> GraphSignature {
        GraphSignature::single(
            Port { name: "in".into(), shape: input.to_vec() },
            Port { name: "out".into(), shape: output.to_vec() },
        )
    }

    fn manifest(layer: &str) -> Manifest {
        Manifest::parse(&format!(
            "description = \"d\"\nsource = \"s\"\nlicense = \"l\"\n[input]\nwidth = 16\nheight = 16\n\
             mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n[target_layer]\ndescription = \"t\"\n{layer}"
        ))
        .unwrap()
    }

    fn info(layer: &str, features: &[i64]) -> Result<ModelInfo, String> {
        let ext = sig(&[-1, 3, 16, 16], features);
        let head = sig(features, &[-1, 5]);
        validate_signatures(Path::new("m"), &manifest(layer), 5, &ext, &head)
            .map(|(info, _)| info)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_layout_becomes_a_canonical_grid() {
        let nchw = info("", &[-1, 6, 4, 4]).unwrap();
        assert_eq!((nchw.feature_khw, nchw.layout), ([6, 4, 4], runtime::FeatureLayout::Nchw));
        let nhwc = info("layout = \"nhwc\"", &[-1, 4, 3, 6]).unwrap();
        assert_eq!((nhwc.feature_khw, nhwc.layout), ([6, 4, 3], runtime::FeatureLayout::Nhwc));
        let tokens = info("layout = \"tokens\"\ngrid = [4, 3]\nprefix_tokens = 2", &[-1, 14, 6]).unwrap();
        assert_eq!(tokens.feature_khw, [6, 4, 3]);
        assert_eq!((tokens.layout, tokens.feature_extra()), (runtime::FeatureLayout::Tokens { prefix: 2 }, 12));
    }

    #[test]
    fn shapes_that_cannot_be_read_as_the_layout_are_refused() {
        let e = info("layout = \"tokens\"\ngrid = [4, 4]\nprefix_tokens = 2", &[-1, 17, 6]).unwrap_err();
        assert!(e.contains("17 tokens") && e.contains("prefix_tokens"), "{e}");
        let e = info("layout = \"tokens\"\ngrid = [4, 4]", &[-1, 6, 4, 4]).unwrap_err();
        assert!(e.contains("rank 3"), "{e}");
        let e = info("", &[-1, 512, 1, 1]).unwrap_err();
        assert!(e.contains("1×1") && e.contains("global pooling"), "{e}");
    }
}
