//! An explanation run in-line, for tests and tools (the engine runs the same steps across
//! worker threads).

use super::pass_set::score_passes;
use super::{MaskPlan, Saliency, combine};

/// Runs a whole explanation in-line: `score(batch, n)` returns n rows of logits for n
/// stacked pass inputs (images, or activations for a head-only method). Returns one map
/// per target, in order.
pub fn explain_with(
    plan: &MaskPlan,
    x: &[f32],
    clean_logits: &[f32],
    targets: &[usize],
    batch_size: usize,
    score: impl FnMut(&[f32], usize) -> Vec<f32>,
) -> Vec<Saliency> {
    let per_target = score_passes(plan, x, clean_logits, targets, batch_size, score);
    per_target.iter().map(|ts| combine(plan, ts)).collect()
}

#[cfg(test)]
mod tests {
    //! Each method against a straight, unoptimised transcription of its spec.

    use super::*;
    use crate::cam::pass_set::score_passes;
    use crate::cam::passes::Pass;
    use crate::cam::test_support::*;
    use crate::cam::{
        Activations, Align, Graph, PassSet, Preset, min_max, normalize_min_max, resize, top_channels_by_std,
    };

    #[test]
    fn every_preset_matches_the_unoptimised_spec_for_every_target() {
        let Scene { hw, x, model, clean } = scene();
        for preset in Preset::ALL {
            let plan = plan(preset, activations(), hw);
            for batch in [1, 2, 64] {
                let maps = explain_with(&plan, &x, &clean, &[0, 3], batch, |b, n| model.batch(b, n));
                for (map, class) in maps.iter().zip([0, 3]) {
                    let want = reference(preset, &model, &activations(), &x, hw, class);
                    assert_close(&map.input.data, &want.input.data, 1e-5);
                    assert_eq!(map.feature.is_some(), want.feature.is_some());
                    if let (Some(a), Some(b)) = (&map.feature, &want.feature) {
                        assert_close(&a.data, &b.data, 1e-5);
                    }
                    let (lo, hi) = min_max(&map.input.data);
                    assert!(lo >= 0.0 && hi <= 1.0 + 1e-6, "{preset}: range {lo}..{hi}");
                }
            }
        }
    }

    #[test]
    fn passes_run_widest_spread_first_and_a_budget_takes_a_prefix() {
        // Channel 1 varies more (std 1.5) than channel 0 (0.5); their masks differ.
        let act = Activations::new(2, 1, 2, vec![1.0, 0.0, 2.0, 5.0]);
        let plan = std::sync::Arc::new(plan(Preset::Official, act, (2, 4)));
        assert_eq!(plan.passes(), &[Pass::channel(1), Pass::channel(0)]);
        let prefix = crate::cam::PlanPrefix { plan: plan.clone(), len: 1 };
        assert_eq!(prefix.len(), 1);
        let x = input(2, 4);
        let (mut whole, mut first) = (vec![0.0; 2 * 24], vec![0.0; 24]);
        plan.fill_batch(&x, 0..2, &mut whole);
        prefix.fill_batch(&x, 0..1, &mut first);
        assert_eq!(first, whole[..24], "the prefix's pass is the plan's first");
    }

    #[test]
    fn a_partial_run_is_the_exact_map_of_the_channels_it_completed() {
        let Scene { hw, x, model, clean } = scene();
        let act = activations();
        let plan = plan(Preset::Torchcam, act.clone(), hw);
        let scores = score_passes(&plan, &x, &clean, &[2], 3, |b, n| model.batch(b, n)).remove(0);
        // Every pass done: the exact map, bit for bit.
        let exact = combine(&plan, &scores);
        let all = crate::cam::combine_partial(&plan, &scores, &vec![true; plan.len()]);
        assert_eq!(exact.input.data, all.input.data);
        assert!(plan.coverage(&vec![true; plan.len()]).is_complete());
        // Only the first pass (channel 1, the widest spread): the torch-cam map of that
        // channel alone, whatever the other passes' scores were.
        let mut done = vec![false; plan.len()];
        done[0] = true;
        let mut noisy = scores.clone();
        noisy.logits[1..].iter_mut().for_each(|z| *z = 1e6);
        let partial = crate::cam::combine_partial(&plan, &noisy, &done);
        let alone = Activations::new(1, act.height, act.width, act.channel(1).to_vec());
        let want = torchcam_map(&alone, &[scores.logits[0] - scores.clean_logit], hw);
        assert_close(&partial.input.data, &want.input.data, 1e-6);
        let c = plan.coverage(&done);
        assert_eq!((c.passes_done, c.passes_total, c.channels_done, c.channels_total), (1, 3, 1, 4));
        // Masses: 15, 8.5, 0 and 36 (the constant channel).
        assert!((c.estimated_mass - 8.5 / 59.5).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn all_constant_activations_give_an_all_zero_official_map() {
        let act = Activations::new(2, 2, 2, vec![0.0; 8]);
        let plan = plan(Preset::Official, act, (4, 4));
        assert!(plan.is_empty());
        let maps = explain_with(&plan, &input(4, 4), &[0.0, 1.0], &[1], 8, |_, _| unreachable!());
        assert!(maps[0].input.data.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn sscam_and_iscam_match_the_spec_without_sharing() {
        let Scene { hw, x, model, clean } = scene();
        for method in [Smoothed::Ss { samples: 3, sigma: 2.0, seed: 7 }, Smoothed::Is { steps: 4 }] {
            let plan = plan(method, activations(), hw);
            let maps = explain_with(&plan, &x, &clean, &[1, 2], 5, |b, n| model.batch(b, n));
            for (map, class) in maps.iter().zip([1, 2]) {
                let want = reference_smoothed(method, &model, &activations(), &x, hw, class);
                assert_close(&map.input.data, &want.input.data, 1e-5);
                assert_close(&map.feature.as_ref().unwrap().data, &want.feature.unwrap().data, 1e-5);
            }
        }
    }

    #[test]
    fn channels_with_the_same_mask_share_passes_and_the_maps_do_not_change() {
        let Scene { hw, x, model, clean } = scene();
        // (method, passes, channels sharing): official shares 1, 4 and 6; pytorch_grad_cam
        // not 6 (its 1e-8 matters at that range). torch-cam adds its 1e-8 at feature size:
        // it vanishes in f32 next to ranges of 5 and 15 (1 and 4 share), not next to 0.005
        // (6 does not).
        /// The spec each case is checked against.
        #[derive(Clone, Copy, Debug)]
        enum Spec {
            ScoreCam(Preset),
            Smoothed(Smoothed),
        }
        let cases: [(Spec, usize, usize); 5] = [
            (Spec::ScoreCam(Preset::Official), 3, 3),
            (Spec::ScoreCam(Preset::PytorchGradCam), 4 + 1, 2),
            (Spec::ScoreCam(Preset::Torchcam), 4 + 1, 2),
            (Spec::Smoothed(Smoothed::Ss { samples: 2, sigma: 2.0, seed: 3 }), 2 * 4 + 2, 2),
            (Spec::Smoothed(Smoothed::Is { steps: 3 }), 3 * 4 + 1, 2),
        ];
        for (method, passes, shared) in cases {
            let plan = match method {
                Spec::ScoreCam(preset) => plan(preset, repeating_activations(), hw),
                Spec::Smoothed(m) => plan(m, repeating_activations(), hw),
            };
            assert_eq!((plan.len(), plan.shared_mask_channels()), (passes, shared), "{method:?}");
            assert_eq!(plan.skipped_channels(), 1, "{method:?}: the constant channel");
            let maps = explain_with(&plan, &x, &clean, &[0, 2], 3, |b, n| model.batch(b, n));
            for (map, class) in maps.iter().zip([0, 2]) {
                let want = match method {
                    Spec::ScoreCam(preset) => reference(preset, &model, &repeating_activations(), &x, hw, class),
                    Spec::Smoothed(m) => reference_smoothed(m, &model, &repeating_activations(), &x, hw, class),
                };
                assert_close(&map.input.data, &want.input.data, 1e-5);
            }
        }
        // Ablating different channels never gives the same input.
        let ablation = plan(ablationcam(), repeating_activations(), hw);
        assert_eq!((ablation.len(), ablation.shared_mask_channels()), (7, 0), "no channel is all zero");
    }

    #[test]
    fn ablation_runs_the_head_on_activations_and_matches_the_spec() {
        let act = activations();
        let head = Linear::new(3, act.data.len());
        let clean = head.logits(&act.data);
        let plan = plan(ablationcam(), act.clone(), (5, 7));
        assert_eq!(plan.graph(), Graph::Head);
        assert_eq!(plan.pass_len(), act.data.len());
        // The all-zero channel cannot change the head's output: no pass. The constant 6s can
        // (spread 0, so they go last); channel 1 varies a little more than channel 0.
        assert_eq!(plan.passes(), &[Pass::channel(1), Pass::channel(0), Pass::channel(3)]);
        let maps = explain_with(&plan, &[], &clean, &[0, 2], 2, |b, n| head.batch(b, n));
        for (map, class) in maps.iter().zip([0, 2]) {
            let want = reference_ablation(&head, &act, (5, 7), class);
            assert_close(&map.input.data, &want.input.data, 1e-5);
        }
    }

    #[test]
    fn max_channels_keeps_the_channels_with_the_largest_spread() {
        let Scene { hw, x, model, clean } = scene();
        // By hand: channel 1 has std 1.740 (mean 17/12), channel 0 (the 0..5 ramp) 1.708;
        // the constant channels 0, so index order breaks their tie.
        assert_eq!(top_channels_by_std(&activations(), 1), vec![1]);
        assert_eq!(top_channels_by_std(&activations(), 3), vec![0, 1, 2]);
        let fast = faster(Preset::Official, 1);
        let p = plan(fast, activations(), hw);
        assert_eq!(p.passes(), &[Pass::channel(1)]);
        assert_eq!(p.skipped_channels(), 3);
        // With one channel the official map is that channel's upsampled, normalised map.
        let map = &explain_with(&p, &x, &clean, &[0], 4, |b, n| model.batch(b, n))[0];
        let mut want = resize(activations().channel(1), (2, 3), hw, Align::HalfPixel);
        normalize_min_max(&mut want);
        assert_close(&map.input.data, &want, 1e-6);
        // Keeping every channel is exact Score-CAM.
        for preset in Preset::ALL {
            let all = faster(preset, 4);
            let a = &explain_with(&plan(all, activations(), hw), &x, &clean, &[3], 4, |b, n| model.batch(b, n))[0];
            let b = &explain_with(&plan(preset, activations(), hw), &x, &clean, &[3], 4, |b, n| model.batch(b, n))[0];
            assert_close(&a.input.data, &b.input.data, 1e-7);
        }
    }

    /// A head that is the mean over each channel's cells followed by a linear layer.
    fn pooled_linear(act: &Activations, classes: usize) -> impl Fn(&[f32], usize) -> Vec<f32> {
        let (k, n) = (act.channels, act.height * act.width);
        move |batch: &[f32], rows: usize| {
            batch
                .chunks_exact(batch.len() / rows)
                .flat_map(|grid| {
                    let means: Vec<f32> = grid.chunks_exact(n).map(|c| c.iter().sum::<f32>() / n as f32).collect();
                    (0..classes)
                        .map(|c| {
                            (0..k).map(|i| means[i] * (((c * 3 + i * 5) % 7) as f32 - 2.0) * 0.4).sum::<f32>() + 0.1
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        }
    }

    #[test]
    fn gradient_methods_use_the_measured_head_and_pytorch_grad_cams_formulas() {
        let act = activations();
        let classes = 3;
        let head = pooled_linear(&act, classes);
        let probe = crate::cam::HeadProbe::new(act.channels, act.height, act.width);
        let scores = score_passes(&probe, &[], &vec![0.0; classes], &(0..classes).collect::<Vec<_>>(), 7, &head);
        let mut logits = vec![0.0f32; probe.len() * classes];
        for (c, s) in scores.iter().enumerate() {
            s.logits.iter().enumerate().for_each(|(i, z)| logits[i * classes + c] = *z);
        }
        let fitted = std::sync::Arc::new(probe.fit(&logits, classes).unwrap());
        let n = (act.height * act.width) as f64;
        let hw = (5, 7);
        for name in ["gradcam", "gradcampp", "xgradcam", "layercam"] {
            let method = crate::cam::Method::parse(Some(name), &[]).unwrap();
            let plan = MaskPlan::new(&method, act.clone(), [3, hw.0, hw.1]).with_linear_head(Some(fitted.clone()));
            assert_eq!(plan.len(), 0, "{name}: no pass beyond the clean one");
            let clean = head(&act.data, 1);
            for class in [0, 2] {
                let map = &explain_with(&plan, &[], &clean, &[class], 4, |_, _| unreachable!())[0];
                // The per-cell formulas of pytorch-grad-cam with g = W[c, k] / cells.
                let mut cam = vec![0.0f64; act.height * act.width];
                for k in 0..act.channels {
                    let g = f64::from((((class * 3 + k * 5) % 7) as f32 - 2.0) * 0.4) / n;
                    let a = act.channel(k);
                    let s: f64 = a.iter().map(|&v| f64::from(v)).sum();
                    for (cell, &v) in cam.iter_mut().zip(a) {
                        let v = f64::from(v);
                        *cell += match name {
                            "gradcam" => g * v,
                            "gradcampp" => {
                                let aij = if g == 0.0 { 0.0 } else { g * g / (2.0 * g * g + s * g * g * g + 1e-6) };
                                n * g.max(0.0) * aij * v
                            }
                            "xgradcam" => g * s / (s + 1e-7) * v,
                            _ => g.max(0.0) * v,
                        };
                    }
                }
                let mut cam: Vec<f32> = cam.iter().map(|&v| v.max(0.0) as f32).collect();
                crate::cam::normalize_shift_eps(&mut cam, 1e-7);
                assert_close(&map.feature.as_ref().unwrap().data, &cam, 1e-5);
                assert!(cam.iter().any(|v| *v > 0.5), "{name}/{class}: a degenerate case");
            }
        }
    }

    #[test]
    fn reciprocam_runs_one_head_pass_per_cell_and_all_zero_cells_share_one() {
        // Cell 0 is zero in every channel (after zeroing it in channels 0 and 3).
        let mut act = activations();
        let n = act.height * act.width;
        for k in 0..act.channels {
            act.data[k * n] = 0.0;
        }
        for kernel in ["cell", "gaussian"] {
            let method = crate::cam::Method::parse(Some("reciprocam"), &[("kernel", kernel)]).unwrap();
            let plan = MaskPlan::new(&method, act.clone(), [3, 5, 7]);
            assert_eq!(plan.graph(), Graph::Head);
            assert_eq!(plan.len(), n - 1 + 1, "{kernel}: 5 cells and the shared zero pass");
            let mut out = vec![9.0; plan.len() * plan.pass_len()];
            plan.fill_batch(&[], 0..plan.len(), &mut out);
            let zero = out.chunks_exact(plan.pass_len()).filter(|p| p.iter().all(|v| *v == 0.0)).count();
            assert_eq!(zero, 1, "{kernel}: one all-zero pass");
        }
    }

    #[test]
    fn rise_is_reproducible_for_a_seed_and_its_masks_keep_the_asked_share() {
        let Scene { hw, x, model, clean } = scene();
        let rise = |seed: &str, masks: &str| {
            let m =
                crate::cam::Method::parse(Some("rise"), &[("masks", masks), ("grid", "3"), ("seed", seed)]).unwrap();
            let plan = MaskPlan::new(&m, activations(), [3, hw.0, hw.1]);
            assert_eq!(plan.len(), masks.parse::<usize>().unwrap());
            let maps = explain_with(&plan, &x, &clean, &[1], 16, |b, n| model.batch(b, n));
            (plan, maps[0].input.data.clone())
        };
        let (plan, a) = rise("5", "200");
        assert_eq!(a, rise("5", "200").1);
        assert_ne!(a, rise("6", "200").1);
        let (lo, hi) = min_max(&a);
        assert!((lo, hi) == (0.0, 1.0), "{lo}..{hi}");
        // With X = 1 the passes are the masks themselves: values in 0..1, about half kept.
        let ones = vec![1.0f32; 3 * hw.0 * hw.1];
        let mut out = vec![0.0; plan.len() * ones.len()];
        plan.fill_batch(&ones, 0..plan.len(), &mut out);
        let mean = out.iter().map(|&v| f64::from(v)).sum::<f64>() / out.len() as f64;
        assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
        assert!((mean - 0.5).abs() < 0.05, "mean mask {mean}");
        // The first n masks of a run are a run with n masks.
        let scores = score_passes(&plan, &x, &clean, &[1], 16, |b, n| model.batch(b, n)).remove(0);
        let mut done = vec![false; plan.len()];
        done[..50].iter_mut().for_each(|d| *d = true);
        let partial = crate::cam::combine_partial(&plan, &scores, &done);
        assert_close(&partial.input.data, &rise("5", "50").1, 1e-6);
    }
}
