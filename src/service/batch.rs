//! Requests of several images (KServe V1 `instances`, an Open Inference Protocol batch):
//! the images go in together, each with its own admission, so their passes batch with each
//! other's and with other requests' in the engine. A bounded number run at once: the
//! engine's running slots for explanations (more would only queue, or be refused); every
//! image of a prediction batch (one cheap pass each).

use futures_util::stream::{self, StreamExt, TryStreamExt};

use super::request::{ExplainRequest, ImageInput, OutputFormat, PredictRequest, Rendering, Resolution};
use super::result::{Explanation, PredictDocument, Rendered};
use super::{Service, ServiceError};
use crate::cam::HeadKind;

/// One image of an inference batch: its class probabilities and, when asked, its
/// explanation.
#[derive(Debug)]
pub struct Inferred {
    /// Per-class scores (`HeadKind::class_scores`; empty for an embedding).
    pub probabilities: Vec<f32>,
    /// An embedding model's output vector.
    pub embedding: Option<Vec<f32>>,
    /// The explained class and its map at the model's input size.
    pub explained: Option<(usize, Vec<f32>)>,
}

/// What an inference batch asks of each image.
#[derive(Clone, Debug)]
pub enum Inference {
    /// Its probabilities (a prediction's parameters).
    Predict(PredictRequest),
    /// Its probabilities and its explanation (an explanation's parameters).
    Explain(ExplainRequest),
}

impl Service {
    /// Images explained at once for one batch request.
    fn batch_concurrency(&self) -> usize {
        self.engine.config().max_concurrent_jobs.max(1)
    }

    /// `/predict` for each image, in order; the first failure fails the batch (the rest is
    /// cancelled).
    pub async fn predict_many(
        &self,
        request: &PredictRequest,
        images: Vec<ImageInput>,
    ) -> Result<Vec<PredictDocument>, ServiceError> {
        let n = images.len().max(1);
        stream::iter(images).map(|image| self.predict(request.clone(), image)).buffered(n).try_collect().await
    }

    /// `/explain` for each image, in order, rendered as the request asks. `keep` sees each
    /// result as it is ready, in order; its error ends the batch at once (the images still
    /// running are cancelled), so a caller can bound what it holds.
    pub async fn explain_many<T>(
        &self,
        request: &ExplainRequest,
        images: Vec<ImageInput>,
        mut keep: impl FnMut(usize, Rendered) -> Result<T, ServiceError>,
    ) -> Result<Vec<T>, ServiceError> {
        let mut results = stream::iter(images)
            .map(|image| self.explain(request.clone(), image, None))
            .buffered(self.batch_concurrency());
        let mut kept = Vec::new();
        while let Some(rendered) = results.try_next().await? {
            kept.push(keep(kept.len(), rendered)?);
        }
        Ok(kept)
    }

    /// The Open Inference Protocol's batch on `model`: each image's probabilities, and when
    /// asked its explanation's map at the model's input size.
    pub async fn infer_many(
        &self,
        model: &str,
        images: Vec<ImageInput>,
        inference: Inference,
    ) -> Result<Vec<Inferred>, ServiceError> {
        match inference {
            Inference::Explain(mut request) => {
                request.model = Some(model.to_string());
                request.rendering =
                    Rendering { format: OutputFormat::Json, resolution: Resolution::Model, ..request.rendering };
                let request = &request;
                stream::iter(images)
                    .map(|image| async move {
                        let e = self.explain_unrendered(request.clone(), image, None).await?;
                        Ok::<_, ServiceError>(inferred(&e))
                    })
                    .buffered(self.batch_concurrency())
                    .try_collect()
                    .await
            }
            Inference::Predict(predict) => {
                let n = images.len().max(1);
                let request = &PredictRequest { model: Some(model.to_string()), ..predict };
                stream::iter(images)
                    .map(|image| async move {
                        let c = self.classify(request, image).await?;
                        let embedding = c.embedding();
                        Ok::<_, ServiceError>(Inferred { probabilities: c.probabilities, embedding, explained: None })
                    })
                    .buffered(n)
                    .try_collect()
                    .await
            }
        }
    }
}

fn inferred(e: &Explanation) -> Inferred {
    Inferred {
        embedding: matches!(e.model.package.head(), HeadKind::Embedding { .. }).then(|| e.logits.clone()),
        probabilities: e.probabilities(),
        explained: e.targets.first().zip(e.maps.first()).map(|(t, m)| (*t, m.input.data.clone())),
    }
}
