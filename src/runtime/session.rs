//! One model's pair of ONNX Runtime sessions (extractor and head), owned by one worker.

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use std::borrow::Cow;

use ort::session::SessionInputValue;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use super::{FeatureLayout, GraphBytes, ProviderConfig, ProviderKind, RuntimeError};

/// How sessions are built. Workers × `intra_threads` should not exceed the cores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Threads ONNX Runtime uses inside one operator (per worker).
    pub intra_threads: usize,
    /// Graph optimisation level 0 (none) to 3 (all, with layout changes).
    pub optimization_level: u8,
    /// Let idle ONNX Runtime threads spin for work; faster hand-offs, but burns a core
    /// that mask building could use.
    pub spinning: bool,
    pub provider: ProviderConfig,
    /// Treat subnormal floats as zero while running (flush-to-zero, denormals-are-zero):
    /// unset = as the model's package says (model.toml `[engine] flush_denormals`, written
    /// where it measured faster), true or false = for every model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flush_denormals: Option<bool>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            intra_threads: 0,
            optimization_level: 3,
            spinning: false,
            provider: ProviderConfig::default(),
            flush_denormals: None,
        }
    }
}

/// One input or output of a graph: its name and shape (-1 = dynamic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub name: String,
    pub shape: Vec<i64>,
}

/// A graph's inputs and outputs as ONNX Runtime reports them, in the graph's order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphSignature {
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
}

impl GraphSignature {
    /// A graph of one input and one output (tests, tools).
    pub fn single(input: Port, output: Port) -> Self {
        Self { inputs: vec![input], outputs: vec![output] }
    }
}

/// Reads every input and output of a session (the model layer validates them).
pub fn read_signature(session: &Session) -> Result<GraphSignature, String> {
    let port = |o: &ort::value::Outlet| -> Result<Port, String> {
        let shape =
            o.dtype().tensor_shape().map(|s| s.to_vec()).ok_or_else(|| format!("`{}` is not a tensor", o.name()))?;
        Ok(Port { name: o.name().to_string(), shape })
    };
    let inputs = session.inputs().iter().map(port).collect::<Result<Vec<_>, _>>()?;
    let outputs = session.outputs().iter().map(port).collect::<Result<Vec<_>, _>>()?;
    if inputs.is_empty() || outputs.is_empty() {
        return Err("the graph needs at least one input and one output".into());
    }
    Ok(GraphSignature { inputs, outputs })
}

/// Opens one session of `graph` with the configured threads, optimisation and provider.
pub fn open_session(graph: &GraphBytes, cfg: &SessionConfig, provider: ProviderKind) -> Result<Session, RuntimeError> {
    let path = graph.path.as_path();
    let wrap = |e: ort::Error| RuntimeError::Session { path: path.to_path_buf(), source: e };
    let env = super::library::environment().ok_or_else(|| RuntimeError::LibraryLoad {
        path: path.to_path_buf(),
        reason: "ONNX Runtime was not initialised before opening a session".into(),
    })?;
    let level = match cfg.optimization_level {
        0 => GraphOptimizationLevel::Disable,
        1 => GraphOptimizationLevel::Level1,
        2 => GraphOptimizationLevel::Level2,
        _ => GraphOptimizationLevel::All,
    };
    let builder = Session::builder(&env)
        .map_err(wrap)?
        .with_optimization_level(level)
        .map_err(|e| wrap(e.into()))?
        .with_intra_threads(cfg.intra_threads)
        .map_err(|e| wrap(e.into()))?
        .with_intra_op_spinning(cfg.spinning)
        .map_err(|e| wrap(e.into()))?
        .with_execution_providers(cfg.provider.dispatch(provider))
        .map_err(|e| wrap(e.into()))?;
    // ONNX Runtime's pool threads (intra_threads > 1); the calling thread is `FlushDenormals`'.
    let builder = if cfg.flush_denormals == Some(true) {
        builder.with_flush_to_zero().map_err(|e| wrap(e.into()))?
    } else {
        builder
    };
    // A graph over 2 GiB keeps its weights in a file beside it, found from this folder.
    let folder = path.parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    let mut builder = builder
        .with_config_entry("session.model_external_initializers_file_folder_path", folder)
        .map_err(|e| wrap(e.into()))?;
    builder.commit_from_memory(&graph.bytes).map_err(wrap)
}

/// One of `ModelSessions`' runs on a batch of `n` stacked inputs.
type RunFn = fn(&mut ModelSessions, &[f32], usize) -> Result<Vec<f32>, RuntimeError>;

/// The two sessions of one model, with the shapes needed to run them.
pub struct ModelSessions {
    extractor: Session,
    head: Session,
    /// C, H, W of one input image.
    input_chw: [usize; 3],
    /// K, h, w of one image's feature grid.
    feature_khw: [usize; 3],
    layout: FeatureLayout,
    feed: HeadFeed,
    /// The graphs take one image per run (batch axis fixed at 1).
    one_image_per_run: bool,
    /// Runs treat subnormal floats as zero (`SessionConfig::flush_denormals`).
    flush_denormals: bool,
}

/// What the head graph takes and gives besides the target layer's grid.
struct HeadFeed {
    /// The head's input for the target layer.
    features_name: String,
    sides: Vec<SideTensor>,
    /// Values of one image's head output.
    head_len: usize,
    /// Graph outputs concatenated into it.
    outputs: usize,
}

/// A tensor the head takes besides the target layer (a U-Net's skip connection, an FPN's
/// other levels): an output of the extractor and an input of the head, of one name. Above
/// the runtime it rides at the end of each image's canonical features, so head-only
/// passes keep it at its clean value while full passes recompute it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideTensor {
    pub name: String,
    /// One image's shape (no batch axis).
    pub shape: Vec<usize>,
}

impl SideTensor {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn batch_shape(&self, n: usize) -> Vec<usize> {
        std::iter::once(n).chain(self.shape.iter().copied()).collect()
    }
}

/// Shape facts a caller already validated (see `model::ModelInfo`).
#[derive(Clone, Debug)]
pub struct SessionShapes {
    pub input_chw: [usize; 3],
    pub feature_khw: [usize; 3],
    pub layout: FeatureLayout,
    /// Values of one image's head output (a classifier's classes), over its outputs.
    pub head_len: usize,
    /// How many of the head graph's outputs make one image's output, concatenated per image
    /// in the graph's order (a detector's boxes then scores).
    pub head_outputs: usize,
    /// The names of the extractor's features output and of the head's features input.
    pub features_names: (String, String),
    pub sides: Vec<SideTensor>,
    /// The graphs' batch axis is fixed at 1: a batch runs as one run per image.
    pub one_image_per_run: bool,
}

impl ModelSessions {
    pub fn open(
        extractor: &GraphBytes,
        head: &GraphBytes,
        shapes: SessionShapes,
        cfg: &SessionConfig,
        provider: ProviderKind,
    ) -> Result<Self, RuntimeError> {
        Ok(Self {
            extractor: open_session(extractor, cfg, provider)?,
            head: open_session(head, cfg, provider)?,
            input_chw: shapes.input_chw,
            feature_khw: shapes.feature_khw,
            layout: shapes.layout,
            feed: HeadFeed {
                features_name: shapes.features_names.1,
                sides: shapes.sides,
                head_len: shapes.head_len,
                outputs: shapes.head_outputs.max(1),
            },
            one_image_per_run: shapes.one_image_per_run,
            flush_denormals: cfg.flush_denormals == Some(true),
        })
    }

    /// `run` on each of the `n` images stacked in `batch`, one at a time, outputs
    /// concatenated: how graphs exported for one image run a batch.
    fn each_image(&mut self, batch: &[f32], n: usize, run: RunFn) -> Result<Vec<f32>, RuntimeError> {
        if n == 0 || !batch.len().is_multiple_of(n) {
            return Err(RuntimeError::OutputShape(format!("{} values do not split into {n} images", batch.len())));
        }
        let mut out = Vec::new();
        for image in batch.chunks_exact(batch.len() / n) {
            out.extend(run(self, image, 1)?);
        }
        Ok(out)
    }

    /// Runs `session` on one tensor and hands its output, checked for length, to `then`
    /// while ONNX Runtime still owns it (callers copy only what they keep).
    fn run_with<R>(
        session: &mut Session,
        shape: &[usize],
        data: &[f32],
        out_len: usize,
        then: impl FnOnce(&[f32]) -> Result<R, RuntimeError>,
    ) -> Result<R, RuntimeError> {
        let input = TensorRef::from_array_view((shape, data))?;
        let outputs = session.run(ort::inputs![input])?;
        let (_, values) = outputs[0].try_extract_tensor::<f32>()?;
        check_len(values, out_len)?;
        then(values)
    }

    /// Values one batch of `n` images' features holds in the graph's layout.
    fn features_len(&self, n: usize) -> usize {
        let [k, fh, fw] = self.feature_khw;
        n * (k * fh * fw + self.layout.extra_len(self.feature_khw))
    }

    /// The head on `n` images' features in the graph's layout and their side tensors.
    fn run_head(&mut self, features: &[f32], sides: &[&[f32]], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let shape = self.layout.graph_shape(n, self.feature_khw);
        self.feed.run(&mut self.head, (&shape, features), sides, n)
    }

    /// The extractor on `n` stacked images: n canonical feature maps (K×h×w, then the
    /// layout's extra values, then the side tensors).
    pub fn features(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let _flush = super::FlushDenormals::new(self.flush_denormals);
        if self.one_image_per_run && n > 1 {
            return self.each_image(batch, n, Self::features);
        }
        let [c, h, w] = self.input_chw;
        let (len, layout, khw) = (self.features_len(n), self.layout, self.feature_khw);
        if self.feed.sides.is_empty() {
            return Self::run_with(&mut self.extractor, &[n, c, h, w], batch, len, |raw| {
                Ok(layout.to_canonical(raw, n, khw))
            });
        }
        let input = TensorRef::from_array_view(([n, c, h, w], batch))?;
        let outputs = self.extractor.run(ort::inputs![input])?;
        let (_, raw) = outputs[0].try_extract_tensor::<f32>()?;
        check_len(raw, len)?;
        let grid = layout.to_canonical(raw, n, khw);
        let per = len / n.max(1);
        let mut out = Vec::with_capacity(n * (per + self.feed.sides_len()));
        let mut sides = Vec::with_capacity(self.feed.sides.len());
        for side in &self.feed.sides {
            let (_, values) = outputs[side.name.as_str()].try_extract_tensor::<f32>()?;
            check_len(values, n * side.len())?;
            sides.push(values);
        }
        for i in 0..n {
            out.extend_from_slice(&grid[i * per..(i + 1) * per]);
            for (side, values) in self.feed.sides.iter().zip(&sides) {
                out.extend_from_slice(&values[i * side.len()..(i + 1) * side.len()]);
            }
        }
        Ok(out)
    }

    /// The head on `n` stacked canonical feature maps: n head outputs (a classifier's
    /// logits); what they mean is `cam::HeadKind`'s business.
    pub fn head_output(&mut self, features: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let _flush = super::FlushDenormals::new(self.flush_denormals);
        if self.one_image_per_run && n > 1 {
            return self.each_image(features, n, Self::head_output);
        }
        if self.feed.sides.is_empty() {
            let raw = match self.layout {
                FeatureLayout::Nchw => Cow::Borrowed(features),
                layout => Cow::Owned(layout.from_canonical(features, n, self.feature_khw)),
            };
            return self.run_head(&raw, &[], n);
        }
        // Each image's canonical features, then its side tensors: regather per tensor.
        let per = self.features_len(1);
        let stride = per + self.feed.sides_len();
        check_len(features, n * stride)?;
        let grid: Vec<f32> = features.chunks_exact(stride).flat_map(|image| &image[..per]).copied().collect();
        let grid = self.layout.from_canonical(&grid, n, self.feature_khw);
        let mut sides = Vec::with_capacity(self.feed.sides.len());
        let mut offset = per;
        for side in &self.feed.sides {
            let len = side.len();
            sides.push(
                features
                    .chunks_exact(stride)
                    .flat_map(|image| &image[offset..offset + len])
                    .copied()
                    .collect::<Vec<f32>>(),
            );
            offset += len;
        }
        let views: Vec<&[f32]> = sides.iter().map(Vec::as_slice).collect();
        self.run_head(&grid, &views, n)
    }

    /// The full model on `n` stacked images: n head outputs. The extractor's outputs go
    /// to the head as they are: no copy, no layout round trip (this is the masked passes'
    /// hot path).
    pub fn model_output(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let _flush = super::FlushDenormals::new(self.flush_denormals);
        if self.one_image_per_run && n > 1 {
            return self.each_image(batch, n, Self::model_output);
        }
        let [c, h, w] = self.input_chw;
        let len = self.features_len(n);
        if self.feed.sides.is_empty() && self.feed.outputs == 1 {
            let shape = self.layout.graph_shape(n, self.feature_khw);
            let head_len = self.feed.head_len;
            let head = &mut self.head;
            return Self::run_with(&mut self.extractor, &[n, c, h, w], batch, len, |features| {
                Self::run_with(head, &shape, features, n * head_len, |v| Ok(v.to_vec()))
            });
        }
        let input = TensorRef::from_array_view(([n, c, h, w], batch))?;
        let outputs = self.extractor.run(ort::inputs![input])?;
        let (_, features) = outputs[0].try_extract_tensor::<f32>()?;
        check_len(features, len)?;
        let mut sides = Vec::with_capacity(self.feed.sides.len());
        for side in &self.feed.sides {
            let (_, values) = outputs[side.name.as_str()].try_extract_tensor::<f32>()?;
            check_len(values, n * side.len())?;
            sides.push(values);
        }
        let shape = self.layout.graph_shape(n, self.feature_khw);
        self.feed.run(&mut self.head, (&shape, features), &sides, n)
    }
}

impl HeadFeed {
    /// Values of one image's side tensors.
    fn sides_len(&self) -> usize {
        self.sides.iter().map(SideTensor::len).sum()
    }

    /// `head` on `n` images' features (their graph shape and values) and side tensors
    /// (each batch-major, in `self.sides`' order): n head outputs.
    fn run(
        &self,
        head: &mut Session,
        (shape, features): (&[usize], &[f32]),
        sides: &[&[f32]],
        n: usize,
    ) -> Result<Vec<f32>, RuntimeError> {
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> =
            vec![(Cow::Borrowed(self.features_name.as_str()), TensorRef::from_array_view((shape, features))?.into())];
        for (side, values) in self.sides.iter().zip(sides) {
            let view = TensorRef::from_array_view((side.batch_shape(n), *values))?;
            inputs.push((Cow::Borrowed(side.name.as_str()), view.into()));
        }
        let outputs = head.run(inputs)?;
        if self.outputs == 1 {
            let (_, values) = outputs[0].try_extract_tensor::<f32>()?;
            check_len(values, n * self.head_len)?;
            return Ok(values.to_vec());
        }
        // Several outputs: each image's part of each, in the graph's order.
        let mut parts = Vec::with_capacity(self.outputs);
        for i in 0..self.outputs {
            let (_, values) = outputs[i].try_extract_tensor::<f32>()?;
            parts.push(values);
        }
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total != n * self.head_len {
            return Err(RuntimeError::OutputShape(format!("expected {} values, got {total}", n * self.head_len)));
        }
        let mut out = Vec::with_capacity(n * self.head_len);
        for image in 0..n {
            for part in &parts {
                let per = part.len() / n.max(1);
                out.extend_from_slice(&part[image * per..(image + 1) * per]);
            }
        }
        Ok(out)
    }
}

fn check_len(values: &[f32], want: usize) -> Result<(), RuntimeError> {
    if values.len() != want {
        return Err(RuntimeError::OutputShape(format!("expected {want} values, got {}", values.len())));
    }
    Ok(())
}
