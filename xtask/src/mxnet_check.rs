//! `cargo xtask mxnet-check`: checkpoints written by accnn must load and run in MXNet 1.9.

use std::path::{Path, PathBuf};
use std::process::Command;

use accnn::{Analysis, Scope, apply_plan, factorise_all, full_rank_plan, plan_for_ratio};
use accnn_graph::mxnet::{load_checkpoint, save_checkpoint};
use anyhow::{Context, Result, bail};

#[derive(clap::Args, Debug)]
pub struct MxnetCheckArgs {
    /// A Python with mxnet==1.9.1 and numpy<1.24 installed.
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
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
        let plans = [
            ("full", full_rank_plan(&analysis), Some("1e-5")),
            ("x2", plan_for_ratio(&analysis, &svds, 2.0, Scope::All)?, None),
        ];
        for (tag, plan, tolerance) in plans {
            let (fast, _) = apply_plan(model.clone(), &analysis, &svds, &plan)?;
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
    let _ = std::fs::remove_dir_all(&dir);
    if failures > 0 {
        bail!("{failures} checkpoint(s) failed the MXNet check");
    }
    println!("mxnet-check: all checkpoints load in MXNet and full-rank ones reproduce the original");
    Ok(())
}
