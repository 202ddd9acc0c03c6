//! What the closed-form gradient family (Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM) needs
//! of a model beyond its passes: its head measured once as global average pooling followed
//! by a linear layer, or the reason it is not one. Kept per loaded model (by its load id:
//! a changed package is measured again) beside the service's other method logic, not in
//! the engine, which knows nothing of methods.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::explain::{Prepared, blocking, options};
use super::progress::Stage;
use super::{Service, ServiceError};
use crate::cam::{HeadProbe, LinearHead, PassSet, Readout};
use crate::engine::{Admission, EngineModel};

/// A model's measured head, or why it has no closed form.
pub(crate) type Measured = Result<Arc<LinearHead>, String>;

/// The measured heads of the loaded models, by model load id.
#[derive(Default)]
pub(crate) struct LinearHeads(Mutex<HashMap<u64, Arc<OnceLock<Measured>>>>);

impl LinearHeads {
    fn slot(&self, model: &EngineModel) -> Arc<OnceLock<Measured>> {
        let mut heads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        heads.entry(model.id).or_default().clone()
    }

    /// What is known of a model's head: `None` until the first request measured it.
    pub fn known(&self, model: &EngineModel) -> Option<Measured> {
        self.slot(model).get().cloned()
    }

    /// Forgets the heads of models no longer loaded (a replaced or removed package).
    pub fn retain(&self, loaded: &[u64]) {
        let mut heads = self.0.lock().unwrap_or_else(|e| e.into_inner());
        heads.retain(|id, _| loaded.contains(id));
    }
}

impl Service {
    /// The model's head in closed form, measured by head passes on first use and kept with
    /// the loaded model (two first requests may both measure it; the first result stays),
    /// and the head passes this call ran for it.
    pub(super) async fn linear_head(
        &self,
        admission: &Admission<'_>,
        p: &Prepared,
    ) -> Result<(Arc<LinearHead>, usize), ServiceError> {
        let model = p.model();
        let slot = self.linear_heads.slot(model);
        if let Some(known) = slot.get() {
            return known.clone().map(|h| (h, 0)).map_err(|r| p.unsupported(r));
        }
        let (fitted, passes) = self.measure_head(admission, p).await?;
        match &fitted {
            Ok(_) => tracing::info!(model = %model.name(), "head measured: pooling followed by a linear layer"),
            Err(reason) => tracing::info!(model = %model.name(), %reason, "head measured: no closed form"),
        }
        slot.get_or_init(|| fitted).clone().map(|h| (h, passes)).map_err(|r| p.unsupported(r))
    }

    /// Runs the head probe's passes and fits the head to their outputs.
    async fn measure_head(&self, admission: &Admission<'_>, p: &Prepared) -> Result<(Measured, usize), ServiceError> {
        let model = p.model();
        let [k, h, w] = model.package.info.feature_khw;
        let head = model.package.head();
        let classes = head.classes();
        let probe = Arc::new(HeadProbe::new(k, h, w));
        let readout = Arc::new(Readout::classes(head, &(0..classes).collect::<Vec<_>>()));
        let scored = admission.score(p.tensor(), probe.clone(), readout, &options(p, None, Stage::Masked)).await?;
        let passes = scored.counts.head;
        let fitted = blocking("measuring the head", move || {
            // Pass-major logits from the engine's class-major scores.
            let mut logits = vec![0.0f32; probe.len() * classes];
            for (c, s) in scored.scores.iter().enumerate() {
                for (i, z) in s.logits.iter().enumerate() {
                    logits[i * classes + c] = *z;
                }
            }
            probe.fit(&logits, classes).map(Arc::new)
        })
        .await?;
        Ok((fitted, passes))
    }
}
