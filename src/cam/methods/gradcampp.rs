//! Grad-CAM++ (pytorch-grad-cam 1.5.7), exact for a head that is global average pooling
//! followed by a linear layer: see `closed_form`.

use std::sync::Arc;

use super::closed_form::{ClosedForm, Kind};
use super::{Args, CamMethod, MethodEntry};

pub(super) static ENTRY: MethodEntry = MethodEntry {
    name: "gradcampp",
    summary: "Grad-CAM++: channels weighed by positive gradients and second-order terms (closed form; no extra pass)",
    params: &[],
    build,
};

fn build(_: &Args) -> Result<Arc<dyn CamMethod>, String> {
    ClosedForm::build(Kind::GradCamPlusPlus, &ENTRY)
}
