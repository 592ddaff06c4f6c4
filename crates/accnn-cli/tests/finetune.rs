//! `accnn finetune` end to end: a decomposed fixture trained back towards its original, written in
//! its format, resumed; and every bad input refused with one line, a non-zero exit and no file
//! written or changed.

use std::path::Path;

mod common;
use common::{FASHION_MNIST_INPUT, accnn, snapshot};

fn fixture(name: &str) -> String {
    format!("{}/../../fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// `finetune` of `student` towards the committed VGG fixture on the 512 committed training images.
fn finetune_args<'a>(student: &'a str, teacher: &'a str, train: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "finetune",
        "-m",
        student,
        "--teacher",
        teacher,
        "--data",
        train,
        "--save-model",
        out,
        "--batch",
        "64",
        "--threads",
        "2",
    ];
    args.extend(FASHION_MNIST_INPUT);
    args
}

/// The validation top-1 the run printed, before and at its best.
fn top1s(stdout: &str) -> (f64, f64) {
    let after = |key: &str| -> f64 {
        let line = stdout
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no '{key}' in\n{stdout}"));
        let pct = line.split(key).nth(1).unwrap().trim().split('%').next().unwrap();
        pct.parse().unwrap()
    };
    (after("top-1 before fine-tuning:"), after("best validation top-1:"))
}

#[test]
fn finetuning_wins_back_accuracy_writes_best_and_last_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let teacher = fixture("vgg16-mini");
    let out = accnn(&["-m", &teacher, "--ratio", "3", "--save-model", "x3"], cwd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let train = fixture("fashion-mnist-train-512");
    let val = fixture("fashion-mnist-1k");
    let mut args = finetune_args("x3", &teacher, &train, "tuned");
    args.extend([
        "--val",
        &val,
        "--val-limit",
        "400",
        "--epochs",
        "2",
        "--lr",
        "0.02",
        "--train",
        "all",
    ]);
    let out = accnn(&args, cwd);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let (before, best) = top1s(&stdout);
    // Data-free 3x leaves the fixture near chance; two epochs on 512 images win most of it back.
    assert!(best > before + 20.0, "validation top-1 {before}% → {best}%\n{stdout}");
    for file in [
        "tuned-symbol.json",
        "tuned-0001.params",
        "tuned.last-symbol.json",
        "tuned.last-0001.params",
        "tuned.last.state",
    ] {
        assert!(cwd.join(file).exists(), "{file} missing\n{stdout}");
    }
    // The written model is what was validated: eval on the same 400 images gives the best top-1.
    let mut eval = vec!["eval", "-m", "tuned", "--data", &val, "--limit", "400"];
    eval.extend(FASHION_MNIST_INPUT);
    let out = accnn(&eval, cwd);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(&format!("top-1 {best:.2}%")), "{text} vs best {best}");
    // Resume: one more epoch from the last checkpoint (step 16 of 8 per epoch).
    let mut more = finetune_args("x3", &teacher, &train, "tuned");
    more.extend([
        "--val",
        &val,
        "--val-limit",
        "400",
        "--epochs",
        "3",
        "--lr",
        "0.02",
        "--train",
        "all",
        "--resume",
    ]);
    let out = accnn(&more, cwd);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("resumed at step 16"), "{stdout}");
    assert!(stdout.contains("epoch 3:") && !stdout.contains("epoch 2:"), "{stdout}");
}

#[test]
fn an_onnx_student_is_written_back_as_onnx() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let teacher = fixture("resnet14-fmnist.onnx");
    let out = accnn(&["-m", &teacher, "--ratio", "2", "--save-model", "x2.onnx"], cwd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let train = fixture("fashion-mnist-train-512");
    let mut args = finetune_args("x2.onnx", &teacher, &train, "tuned.onnx");
    args.extend(["--steps", "2", "--feature-weight", "1"]);
    let out = accnn(&args, cwd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["tuned.onnx", "tuned.last.onnx", "tuned.last.state"] {
        assert!(cwd.join(file).exists(), "{file} missing");
    }
    let out = accnn(&["inspect", "-m", "tuned.onnx"], cwd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A classifier of `side x side` images with `classes` outputs, as an MXNet checkpoint.
fn other_classifier(prefix: &Path, classes: usize, side: usize) {
    use accnn_graph::{ModelBuilder, Tensor};
    let mut b = ModelBuilder::new();
    let x = b.input("data");
    b.set_attr(x, "__shape__", &format!("(1, 1, {side}, {side})"));
    let pixels = side * side;
    let w = Tensor::new(vec![classes, pixels], vec![0.001; classes * pixels]).unwrap();
    let fc = b.dense("fc", x, w, None, true);
    let model = b.build(&[fc]).unwrap();
    accnn_graph::mxnet::save_checkpoint(&model, prefix.to_str().unwrap(), 1).unwrap();
}

fn refused(cwd: &Path, args: &[&str], expected: &str) {
    let before = snapshot(cwd);
    let out = accnn(args, cwd);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(expected),
        "{args:?}: expected '{expected}' in\n{stderr}"
    );
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(before, snapshot(cwd), "{args:?} changed the folder");
}

#[test]
fn bad_input_is_refused_with_one_line_and_no_file_written_or_changed() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let teacher = fixture("vgg16-mini");
    let out = accnn(&["-m", &teacher, "--ratio", "2", "--save-model", "x2"], cwd);
    assert!(out.status.success());
    let train = fixture("fashion-mnist-train-512");
    other_classifier(&cwd.join("seven"), 7, 32);
    other_classifier(&cwd.join("small"), 10, 28);
    let base = |extra: &[&'static str], teacher: &str| -> Vec<String> {
        let mut a: Vec<String> = finetune_args("x2", teacher, &train, "tuned")
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let run = |args: Vec<String>, expected: &str| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(cwd, &refs, expected);
    };
    run(
        base(&["--steps", "1"], "seven"),
        "the student gives 10 outputs per image but the teacher 7: fine-tuning needs the same classifier",
    );
    run(
        base(&["--steps", "1"], "small"),
        "the student 'x2' takes inputs [1, 32, 32] but the teacher 'small' takes [1, 28, 28]",
    );
    run(
        base(&["--steps", "1", "--limit", "0"], &teacher),
        "the training data holds no images",
    );
    run(
        base(&["--steps", "1", "--resume"], &teacher),
        "cannot resume from tuned.last.state",
    );
    run(
        base(&["--steps", "1"], &teacher)
            .into_iter()
            .map(|a| if a == "tuned" { "x2".to_string() } else { a })
            .collect(),
        "would overwrite the input file",
    );
    run(
        base(&["--steps", "1", "--alpha", "2"], &teacher),
        "--alpha must be between 0 and 1",
    );
    // A loss that overflows (inputs scaled past f32's range by a wrong --std) stops with its step,
    // and the last good checkpoint stays as it was.
    let good: Vec<String> = base(&["--steps", "1"], &teacher);
    let out = accnn(&good.iter().map(String::as_str).collect::<Vec<_>>(), cwd);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    run(
        base(&["--steps", "4"], &teacher)
            .into_iter()
            .map(|a| if a == "0.353" { "1e-38".to_string() } else { a })
            .collect(),
        "the loss became NaN or infinite at step 1",
    );
}
