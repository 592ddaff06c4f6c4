//! `cargo xtask mxnet-check`: checkpoints written by accnn must load and run in MXNet 1.9.

use std::path::{Path, PathBuf};
use std::process::Command;

use accnn_graph::fold_batch_norms;
use accnn_graph::mxnet::{load_checkpoint, save_checkpoint};
use accnn_plan::{Analysis, Scope, apply_plan, factorise_all, full_rank_plan, plan_for_ratio};
use anyhow::{Context, Result, bail};
use rand::SeedableRng;

#[derive(clap::Args, Debug)]
pub struct MxnetCheckArgs {
    /// A Python with mxnet==1.9.1 and numpy<1.24 installed.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
}

/// accnn's engine output feeding the softmax head (the logits), for one input.
fn engine_logits(model: &accnn_graph::Model, input: &[f32], shape: &[usize]) -> Result<Vec<f32>> {
    let mut m = model.clone();
    let head = m.graph.heads[0].node;
    if matches!(m.graph.nodes[head].op, accnn_graph::Op::SoftmaxOutput) {
        m.graph.heads = vec![m.graph.nodes[head].inputs[0]];
    }
    let engine = accnn_infer::Engine::new(&m, accnn_infer::EngineOptions::default())?;
    let x = candle_core::Tensor::from_slice(input, shape, &candle_core::Device::Cpu)?;
    Ok(engine.run(&x)?.remove(0).flatten_all()?.to_vec1::<f32>()?)
}

pub fn run(root: &Path, args: &MxnetCheckArgs) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("accnn-mxnet-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = root.join("xtask/python/mxnet_check.py");
    let cases = [
        ("fixtures/vgg16-mini", [1, 1, 32, 32]),
        ("fixtures/mxnet/dag", [1, 3, 11, 9]),
    ];
    let mut failures = 0;
    for (prefix, shape) in cases {
        let orig = root.join(prefix).to_string_lossy().into_owned();
        let model = load_checkpoint(&orig, 1)?;
        let analysis = Analysis::new(&model, &shape)?;
        let svds = factorise_all(&model, &analysis, Default::default(), |_, _| {})?;
        let stem = Path::new(prefix)
            .file_name()
            .context("prefix")?
            .to_string_lossy()
            .into_owned();
        // BatchNorm folded into the convolutions, then every layer at full rank: MXNet must
        // compute what the original computes.
        let (folded, _) = fold_batch_norms(model.clone())?;
        let folded_analysis = Analysis::new(&folded, &shape)?;
        let folded_svds = factorise_all(&folded, &folded_analysis, Default::default(), |_, _| {})?;
        let (folded_full, _) = apply_plan(
            folded.clone(),
            &folded_analysis,
            &folded_svds,
            &full_rank_plan(&folded_analysis),
            None,
        )?;
        let plans = [
            ("full", full_rank_plan(&analysis), Some("1e-5"), None),
            ("x2", plan_for_ratio(&analysis, &svds, 2.0, Scope::All)?, None, None),
            (
                "folded-full",
                full_rank_plan(&analysis),
                Some("1e-5"),
                Some(folded_full),
            ),
        ];
        for (tag, plan, tolerance, ready) in plans {
            let fast = match ready {
                Some(m) => m,
                None => apply_plan(model.clone(), &analysis, &svds, &plan, None)?.0,
            };
            let new = dir.join(format!("{stem}-{tag}")).to_string_lossy().into_owned();
            save_checkpoint(&fast, &new, 1)?;
            let chw = format!("{},{},{}", shape[1], shape[2], shape[3]);
            let mut cmd = Command::new(&args.python);
            cmd.arg(&script).arg(&orig).arg(&new).arg(chw);
            if let Some(t) = tolerance {
                cmd.args(["--max-rel-error", t]);
            }
            let status = cmd
                .status()
                .with_context(|| format!("cannot run {}", args.python.display()))?;
            if !status.success() {
                failures += 1;
            }
        }
    }
    // accnn's engine against MXNet on VGG-16 at 224x224 with seeded weights, and on its decomposition.
    let vgg = dir.join("vgg16").to_string_lossy().into_owned();
    let model = crate::vgg::build(&crate::vgg::VggArgs::full(vgg.clone()));
    save_checkpoint(&model, &vgg, 1)?;
    let shape = [1, 3, 224, 224];
    let analysis = Analysis::new(&model, &shape)?;
    let convs = |l: &accnn_plan::Layer| l.kind == accnn_plan::LayerKind::Convolution;
    let svds = accnn_plan::factorise_layers(
        &model,
        &analysis,
        &analysis.select(convs),
        Default::default(),
        &mut |_, _| {},
    )?;
    let plan = plan_for_ratio(&analysis, &svds, 2.4, Scope::ConvOnly)?;
    let (fast, _) = apply_plan(model.clone(), &analysis, &svds, &plan, None)?;
    drop(svds);
    let fast_prefix = dir.join("vgg16-x2.4").to_string_lossy().into_owned();
    save_checkpoint(&fast, &fast_prefix, 1)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let input: Vec<f32> = (0..shape.iter().product())
        .map(|_| rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng))
        .collect();
    let input_path = dir.join("input.f32");
    std::fs::write(
        &input_path,
        input.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    )?;
    for (m, prefix) in [(&model, &vgg), (&fast, &fast_prefix)] {
        let logits = engine_logits(m, &input, &shape)?;
        let out_path = dir.join("logits.f32");
        std::fs::write(
            &out_path,
            logits.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
        )?;
        let status = Command::new(&args.python)
            .arg(root.join("xtask/python/engine_check.py"))
            .args([
                prefix.as_str(),
                &input_path.to_string_lossy(),
                &out_path.to_string_lossy(),
                "1,3,224,224",
            ])
            .status()
            .with_context(|| format!("cannot run {}", args.python.display()))?;
        if !status.success() {
            failures += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if failures > 0 {
        bail!("{failures} checkpoint(s) failed the MXNet check");
    }
    println!(
        "mxnet-check: all checkpoints load in MXNet, full-rank ones reproduce the original, accnn's engine matches MXNet"
    );
    Ok(())
}
