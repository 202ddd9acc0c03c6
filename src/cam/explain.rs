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
}
