//! `cargo xtask node-tests`: ONNX's own backend node tests (shipped in the `onnx` wheel,
//! `onnx/backend/test/data/node/test_*/`) run through accnn's importer and engine, for every
//! operator accnn claims, with the tolerances of ONNX's runner (rtol 1e-3, atol 1e-7).
//!
//! A test's extra graph inputs (a convolution's weight, an addend) become initializers holding their
//! test values, since accnn's models have one data input. Outcomes: pass; fail (wrong numbers or an
//! engine error); refused (accnn keeps the node opaque: an attribute or input form it does not
//! support); skipped (the data input is neither float32 nor boolean). Every test that does not pass must be listed,
//! with its reason, in `xtask/node-tests-exceptions.txt`, and every listed one must still not pass:
//! the run fails otherwise, so the table can only change on purpose.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use accnn_graph::onnx::proto::{ModelProto, TensorProto};
use accnn_graph::onnx::{decode_onnx, read_tensor_file};
use accnn_infer::{Engine, EngineOptions};
use anyhow::{Context, Result, bail};
use prost::Message;

#[derive(clap::Args, Debug)]
pub struct NodeTestsArgs {
    /// A Python with the onnx package installed (its test data is used).
    #[arg(long, default_value = "python3")]
    pub python: PathBuf,
    /// The node test folder itself, instead of finding it through --python.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print every test's outcome, not only the table.
    #[arg(long)]
    pub verbose: bool,
}

/// The ONNX operators accnn's importer maps onto its IR (`accnn_graph::onnx` import).
const CLAIMED: &[&str] = &[
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "Softsign",
    "LeakyRelu",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Sqrt",
    "Reciprocal",
    "HardSigmoid",
    "HardSwish",
    "Elu",
    "Selu",
    "Mish",
    "Clip",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "Flatten",
    "Reshape",
    "BatchNormalization",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Min",
    "Max",
    "Concat",
    "Softmax",
    "Dropout",
    "Identity",
    "Sum",
    "Transpose",
    "LRN",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSumExp",
    "ConvTranspose",
    "Resize",
    "Upsample",
    "Erf",
    "Gelu",
    "LayerNormalization",
    "InstanceNormalization",
    "GroupNormalization",
    "Split",
    "PRelu",
    "LogSoftmax",
    "Pad",
    "Gather",
    "Expand",
    "Tile",
    "DepthToSpace",
    "SpaceToDepth",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Not",
    "Where",
];

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Pass,
    Fail(String),
    Refused(String),
    Skipped(String),
}

fn data_dir(args: &NodeTestsArgs) -> Result<PathBuf> {
    if let Some(dir) = &args.dir {
        return Ok(dir.clone());
    }
    let out = Command::new(&args.python)
        .args(["-c", "import onnx, os; print(os.path.dirname(onnx.__file__))"])
        .output()
        .with_context(|| format!("cannot run {}", args.python.display()))?;
    if !out.status.success() {
        bail!("{} cannot import onnx", args.python.display());
    }
    let root = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(root.join("backend/test/data/node"))
}

/// The single operator a node test's model applies, if it is one node.
fn operator(model: &ModelProto) -> Option<String> {
    let graph = model.graph.as_ref()?;
    match graph.node.as_slice() {
        [only] => Some(only.op_type.clone()),
        _ => None,
    }
}

fn read_proto(path: &Path) -> Result<TensorProto> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(TensorProto::decode(&bytes[..])?)
}

fn run_test(dir: &Path) -> Result<Outcome> {
    let bytes = std::fs::read(dir.join("model.onnx"))?;
    let mut model = ModelProto::decode(&bytes[..])?;
    let data = dir.join("test_data_set_0");
    let first = read_proto(&data.join("input_0.pb"))?;
    // Float32 data, and booleans: accnn's engine holds them as 0.0 and 1.0 (the logical operators'
    // and Where's tests feed them).
    if first.data_type != 1 && first.data_type != 9 {
        return Ok(Outcome::Skipped(format!("input element type {}", first.data_type)));
    }
    let graph = model.graph.as_mut().context("no graph")?;
    let inputs = graph.input.len();
    let initialised: Vec<String> = graph.initializer.iter().map(|t| t.name.clone()).collect();
    let mut k = 1;
    for i in 1..inputs {
        let name = graph.input[i].name.clone();
        if initialised.contains(&name) {
            continue;
        }
        let path = data.join(format!("input_{k}.pb"));
        k += 1;
        if !path.exists() {
            continue;
        }
        let mut t = read_proto(&path)?;
        t.name = name;
        graph.initializer.push(t);
    }
    let x = read_tensor_file(&data.join("input_0.pb"))?;
    let want = read_tensor_file(&data.join("output_0.pb"))?;
    let read = match decode_onnx(&model.encode_to_vec(), &dir.join("model.onnx"), Some(x.shape())) {
        Ok(r) => r,
        Err(e) => return Ok(Outcome::Refused(e.to_string())),
    };
    if let Some(n) = read
        .model
        .graph
        .nodes
        .iter()
        .find(|n| matches!(n.op, accnn_graph::Op::Opaque { .. }))
    {
        return Ok(Outcome::Refused(format!("'{}' kept opaque", n.name)));
    }
    let run = || -> Result<Vec<f32>> {
        let engine = Engine::new(&read.model, EngineOptions::default())?;
        let input = candle_core::Tensor::from_slice(x.data(), x.shape(), &candle_core::Device::Cpu)?;
        Ok(engine.run(&input)?.remove(0).flatten_all()?.to_vec1::<f32>()?)
    };
    let got = match run() {
        Ok(v) => v,
        Err(e) => return Ok(Outcome::Fail(format!("{e:#}"))),
    };
    if got.len() != want.len() {
        return Ok(Outcome::Fail(format!("{} values, expected {}", got.len(), want.len())));
    }
    let bad = got
        .iter()
        .zip(want.data())
        .filter(|(g, w)| {
            let (g, w) = (**g as f64, **w as f64);
            // As numpy's assert_allclose: equal infinities and NaN against NaN agree.
            !((g - w).abs() <= 1e-7 + 1e-3 * w.abs() || g == w || (g.is_nan() && w.is_nan()))
        })
        .count();
    Ok(if bad == 0 {
        Outcome::Pass
    } else {
        Outcome::Fail(format!("{bad} of {} values outside tolerance", want.len()))
    })
}

pub fn run(args: &NodeTestsArgs) -> Result<()> {
    let dir = data_dir(args)?;
    let mut tests: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("model.onnx").exists())
        .collect();
    tests.sort();
    let mut by_op: BTreeMap<String, Vec<(String, Outcome)>> = BTreeMap::new();
    for test in &tests {
        let bytes = std::fs::read(test.join("model.onnx"))?;
        let Some(op) = ModelProto::decode(&bytes[..]).ok().as_ref().and_then(operator) else {
            continue;
        };
        if !CLAIMED.contains(&op.as_str()) {
            continue;
        }
        let name = test.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let outcome = run_test(test).unwrap_or_else(|e| Outcome::Fail(format!("{e:#}")));
        by_op.entry(op).or_default().push((name, outcome));
    }
    println!("| operator | tests | pass | fail | refused | skipped (dtype) |");
    println!("|---|---|---|---|---|---|");
    let (mut total, mut passed) = (0, 0);
    for (op, results) in &by_op {
        let count = |f: fn(&Outcome) -> bool| results.iter().filter(|(_, o)| f(o)).count();
        let pass = count(|o| matches!(o, Outcome::Pass));
        println!(
            "| {op} | {} | {pass} | {} | {} | {} |",
            results.len(),
            count(|o| matches!(o, Outcome::Fail(_))),
            count(|o| matches!(o, Outcome::Refused(_))),
            count(|o| matches!(o, Outcome::Skipped(_)))
        );
        total += results.len();
        passed += pass;
    }
    println!(
        "\n{passed} of {total} node tests of {} claimed operators pass",
        by_op.len()
    );
    let expected = exceptions()?;
    let mut surprises = Vec::new();
    for results in by_op.values() {
        for (name, outcome) in results {
            if args.verbose || (*outcome != Outcome::Pass && !expected.contains_key(name)) {
                println!("{name}: {outcome:?}");
            }
            match (outcome, expected.contains_key(name)) {
                (Outcome::Pass, true) => surprises.push(format!("{name} passes now: remove it from the exceptions")),
                (Outcome::Pass, false) | (_, true) => {}
                (other, false) => surprises.push(format!("{name}: {other:?}")),
            }
        }
    }
    if !surprises.is_empty() {
        bail!(
            "{} node tests differ from xtask/node-tests-exceptions.txt:\n{}",
            surprises.len(),
            surprises.join("\n")
        );
    }
    Ok(())
}

/// The tests expected not to pass, `NAME: reason` a line.
fn exceptions() -> Result<BTreeMap<String, String>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("node-tests-exceptions.txt");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(':') {
            Some((name, why)) => (name.trim().to_string(), why.trim().to_string()),
            None => (l.trim().to_string(), String::new()),
        })
        .collect())
}
