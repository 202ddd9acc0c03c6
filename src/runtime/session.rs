//! One model's pair of ONNX Runtime sessions (extractor and head), owned by one worker.

use std::path::Path;

use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use super::{FeatureLayout, ProviderConfig, ProviderKind, RuntimeError};

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
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self { intra_threads: 0, optimization_level: 3, spinning: false, provider: ProviderConfig::default() }
    }
}

/// A graph's single input and single output as ONNX Runtime reports them (-1 = dynamic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphSignature {
    pub input_name: String,
    pub input_shape: Vec<i64>,
    pub output_name: String,
    pub output_shape: Vec<i64>,
}

/// Reads the first input and output of a session (the model layer validates the rest).
pub fn read_signature(session: &Session) -> Result<GraphSignature, String> {
    let shape = |o: &ort::value::Outlet| -> Result<Vec<i64>, String> {
        o.dtype().tensor_shape().map(|s| s.to_vec()).ok_or_else(|| format!("`{}` is not a tensor", o.name()))
    };
    let input = session.inputs().first().ok_or("the graph has no input")?;
    let output = session.outputs().first().ok_or("the graph has no output")?;
    if session.inputs().len() != 1 {
        return Err(format!("the graph has {} inputs, expected 1", session.inputs().len()));
    }
    Ok(GraphSignature {
        input_name: input.name().to_string(),
        input_shape: shape(input)?,
        output_name: output.name().to_string(),
        output_shape: shape(output)?,
    })
}

/// Opens one session with the configured threads, optimisation and provider.
pub fn open_session(path: &Path, cfg: &SessionConfig, provider: ProviderKind) -> Result<Session, RuntimeError> {
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
    let mut builder = builder;
    builder.commit_from_file(path).map_err(wrap)
}

/// The two sessions of one model, with the shapes needed to run them.
pub struct ModelSessions {
    extractor: Session,
    head: Session,
    /// C, H, W of one input image.
    input_chw: [usize; 3],
    /// K, h, w of one image's feature grid.
    feature_khw: [usize; 3],
    layout: FeatureLayout,
    head_len: usize,
}

/// Shape facts a caller already validated (see `model::ModelInfo`).
#[derive(Clone, Copy, Debug)]
pub struct SessionShapes {
    pub input_chw: [usize; 3],
    pub feature_khw: [usize; 3],
    pub layout: FeatureLayout,
    /// Values of one image's head output (a classifier's classes).
    pub head_len: usize,
}

impl ModelSessions {
    pub fn open(
        extractor: &Path,
        head: &Path,
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
            head_len: shapes.head_len,
        })
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
        if values.len() != out_len {
            return Err(RuntimeError::OutputShape(format!("expected {out_len} values, got {}", values.len())));
        }
        then(values)
    }

    /// Values one batch of `n` images' features holds in the graph's layout.
    fn features_len(&self, n: usize) -> usize {
        let [k, fh, fw] = self.feature_khw;
        n * (k * fh * fw + self.layout.extra_len(self.feature_khw))
    }

    fn raw_head(&mut self, features: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let shape = self.layout.graph_shape(n, self.feature_khw);
        Self::run_with(&mut self.head, &shape, features, n * self.head_len, |v| Ok(v.to_vec()))
    }

    /// The extractor on `n` stacked images: n canonical feature maps (K×h×w, then the
    /// layout's extra values).
    pub fn features(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let [c, h, w] = self.input_chw;
        let (len, layout, khw) = (self.features_len(n), self.layout, self.feature_khw);
        Self::run_with(&mut self.extractor, &[n, c, h, w], batch, len, |raw| Ok(layout.to_canonical(raw, n, khw)))
    }

    /// The head on `n` stacked canonical feature maps: n head outputs (a classifier's
    /// logits); what they mean is `cam::HeadKind`'s business.
    pub fn head_output(&mut self, features: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        if self.layout == FeatureLayout::Nchw {
            return self.raw_head(features, n);
        }
        let raw = self.layout.from_canonical(features, n, self.feature_khw);
        self.raw_head(&raw, n)
    }

    /// The full model on `n` stacked images: n head outputs. The extractor's output goes
    /// to the head as it is: no copy, no layout round trip (this is the masked passes' hot
    /// path).
    pub fn model_output(&mut self, batch: &[f32], n: usize) -> Result<Vec<f32>, RuntimeError> {
        let [c, h, w] = self.input_chw;
        let len = self.features_len(n);
        let shape = self.layout.graph_shape(n, self.feature_khw);
        let head_len = self.head_len;
        let head = &mut self.head;
        Self::run_with(&mut self.extractor, &[n, c, h, w], batch, len, |features| {
            Self::run_with(head, &shape, features, n * head_len, |v| Ok(v.to_vec()))
        })
    }
}
