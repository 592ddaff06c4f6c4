//! The latency plan closed on the model: plans whose models measure short are made again, stricter.

use accnn::Error;
use accnn::latency::{LatencyTarget, OVERSHOOT, REPLANS, Timer, measured_latency_plan};
use accnn_graph::mxnet::load_checkpoint;
use accnn_plan::{Analysis, Precision, RankPlan, Scope, factorise_all};

fn fixture() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/vgg16-mini").to_string()
}

/// Runs the closed loop with `measured` as what each plan's model measures; returns the plans made
/// and the loop's choice, or `None` when this machine times no decomposition faster at all.
fn run(ratio: f64, measured: &[f64]) -> Option<(Vec<RankPlan>, accnn::latency::MeasuredPlan)> {
    let model = load_checkpoint(&fixture(), 1).unwrap();
    let analysis = Analysis::new(&model, &[1, 1, 32, 32]).unwrap();
    let svds = factorise_all(&model, &analysis, Precision::Auto, |_, _| {}).unwrap();
    let timer = Timer::Engine(accnn_infer::EngineOptions {
        threads: 1,
        ..Default::default()
    });
    let mut original = timer.prepare(&model, None, &analysis.data_shape, 1).unwrap();
    let target = LatencyTarget {
        ratio,
        scope: Scope::All,
        align: 1,
        batch: 1,
        cache: None,
    };
    let mut plans = Vec::new();
    let mut next = measured.iter().copied();
    let measure = |plan: &RankPlan, _: &mut accnn::latency::TimedModel| -> Result<f64, Error> {
        plans.push(plan.clone());
        Ok(next.next().expect("no more plans than scripted"))
    };
    match measured_latency_plan(&model, &mut original, &analysis, &svds, &target, &timer, measure) {
        Ok(chosen) => Some((plans, chosen)),
        // A loaded machine can time every decomposition of this 1 ms model as slower.
        Err(Error::LatencyOutOfReach { .. }) => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_plan_measured_short_is_made_again_stricter_and_the_first_that_reaches_is_kept() {
    // 1.23 reaches 1.2 by less than OVERSHOOT: no plan between is tried.
    const { assert!(1.23 < 1.2 * (1.0 + OVERSHOOT)) };
    let Some((plans, chosen)) = run(1.2, &[1.0, 1.23, 9.0]) else {
        eprintln!("skipped: no decomposition timed faster on this machine now");
        return;
    };
    if chosen.attempts == 1 {
        // The first plan was already the fastest the timings allow: nothing stricter to make.
        assert!(chosen.planned.reachable.is_some(), "{chosen:?}");
        assert_eq!((plans.len(), chosen.measured), (1, 1.0));
        return;
    }
    assert_eq!(chosen.attempts, 2, "{chosen:?}");
    assert_eq!(chosen.measured, 1.23);
    assert_eq!(plans.len(), 2);
    assert_eq!(chosen.planned.plan, plans[1]);
    // The second plan asked for 1.2 x 1.2 / 1.0 = 1.44x: a different, faster plan.
    assert_ne!(plans[1], plans[0]);
}

#[test]
fn when_no_plan_reaches_the_fastest_measured_is_kept() {
    let scripted = [1.05, 1.1, 1.08];
    let Some((plans, chosen)) = run(1.2, &scripted) else {
        eprintln!("skipped: no decomposition timed faster on this machine now");
        return;
    };
    assert!(plans.len() <= REPLANS + 1);
    assert_eq!(chosen.attempts, plans.len());
    let best = scripted[..plans.len()].iter().copied().fold(0.0, f64::max);
    assert_eq!(chosen.measured, best);
    let at = scripted.iter().position(|&m| m == best).unwrap();
    assert_eq!(chosen.planned.plan, plans[at]);
}

/// A re-plan that overshoots the ratio after one that fell short is followed by a plan between
/// the two: kept when it reaches the ratio (it keeps more energy), dropped when it falls short.
#[test]
fn an_overshooting_re_plan_is_followed_by_one_between() {
    for (third, kept) in [(1.25, 2), (1.1, 1)] {
        let Some((plans, chosen)) = run(1.2, &[1.0, 1.6, third]) else {
            eprintln!("skipped: no decomposition timed faster on this machine now");
            return;
        };
        if plans.len() < 3 {
            eprintln!("no plan between: {} plans", plans.len());
            // The timings allowed nothing stricter than the first plan, or nothing between the
            // first two: the loop stops at what it has.
            assert!(
                chosen.measured == 1.6 || chosen.planned.reachable.is_some(),
                "{chosen:?}"
            );
            return;
        }
        assert_eq!(plans.len(), 3);
        assert_eq!(chosen.attempts, 3);
        assert_eq!(chosen.planned.plan, plans[kept], "third plan measured {third}");
        assert_eq!(chosen.measured, [1.0, 1.6, third][kept]);
        // The plan between asked for less than the overshooting one: it differs from both.
        assert!(plans[2] != plans[1] && plans[2] != plans[0]);
    }
}
