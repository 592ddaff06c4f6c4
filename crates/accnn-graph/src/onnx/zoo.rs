//! Seeded ONNX models with known topologies, for tests and benchmarks: a torchvision-style
//! ResNet-18 (as `torch.onnx.export` names it, BatchNorm kept) and three small graphs covering a
//! chain, a residual block with a strided 1x1 shortcut, and a concatenation of branches.

use super::attrs;
use super::builder::GraphBuilder;
use crate::tensor::Tensor;

/// A small deterministic generator (xorshift64*), so that models need no random-number crate.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn tensor(&mut self, shape: Vec<usize>, f: impl Fn(&mut Self) -> f64) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| f(self) as f32).collect();
        Tensor::new(shape, data).expect("shape matches")
    }
}

/// Layers with PyTorch-export names: `/PREFIX/Conv` nodes, `PREFIX.weight` initializers.
struct Net {
    b: GraphBuilder,
    rng: Rng,
}

impl Net {
    fn named(&mut self, name: &str, op: &str, inputs: &[&str], attribute: Vec<super::proto::AttributeProto>) -> String {
        let out = format!("{name}_output_0");
        self.b.named_node(name, op, inputs, &[&out], attribute);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn conv(&mut self, prefix: &str, x: &str, cin: usize, cout: usize, k: usize, stride: usize, bias: bool) -> String {
        let std = (2.0 / (cin * k * k) as f64).sqrt();
        let w = self.rng.tensor(vec![cout, cin, k, k], |r| r.normal() * std);
        let wname = format!("{}.weight", prefix.trim_start_matches('/').replace('/', "."));
        self.b.initializer(&wname, w);
        let mut inputs = vec![x.to_string(), wname.clone()];
        if bias {
            let bname = wname.replace(".weight", ".bias");
            let t = self.rng.tensor(vec![cout], |r| 0.1 * r.normal());
            self.b.initializer(&bname, t);
            inputs.push(bname);
        }
        let p = (k / 2) as i64;
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        self.named(
            &format!("{prefix}/Conv"),
            "Conv",
            &refs,
            vec![
                attrs::ints("kernel_shape", &[k as i64, k as i64]),
                attrs::ints("strides", &[stride as i64, stride as i64]),
                attrs::ints("pads", &[p, p, p, p]),
                attrs::ints("dilations", &[1, 1]),
                attrs::int("group", 1),
            ],
        )
    }

    fn bn(&mut self, prefix: &str, x: &str, c: usize) -> String {
        let base = prefix.trim_start_matches('/').replace('/', ".");
        let names: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|s| format!("{base}.{s}"))
            .collect();
        let gamma = self.rng.tensor(vec![c], |r| 0.5 + r.uniform());
        let beta = self.rng.tensor(vec![c], |r| 0.1 * r.normal());
        let mean = self.rng.tensor(vec![c], |r| 0.1 * r.normal());
        let var = self.rng.tensor(vec![c], |r| 0.5 + r.uniform());
        for (n, t) in names.iter().zip([gamma, beta, mean, var]) {
            self.b.initializer(n, t);
        }
        let refs: Vec<&str> = std::iter::once(x).chain(names.iter().map(String::as_str)).collect();
        self.named(
            &format!("{prefix}/BatchNormalization"),
            "BatchNormalization",
            &refs,
            vec![attrs::float("epsilon", 1e-5), attrs::float("momentum", 0.9)],
        )
    }

    fn relu(&mut self, prefix: &str, x: &str) -> String {
        self.named(&format!("{prefix}/Relu"), "Relu", &[x], vec![])
    }

    fn gemm(&mut self, prefix: &str, x: &str, inputs: usize, outputs: usize) -> String {
        let base = prefix.trim_start_matches('/');
        let w = self
            .rng
            .tensor(vec![outputs, inputs], |r| r.normal() / (inputs as f64).sqrt());
        let b = self.rng.tensor(vec![outputs], |r| 0.1 * r.normal());
        let (wn, bn) = (format!("{base}.weight"), format!("{base}.bias"));
        self.b.initializer(&wn, w);
        self.b.initializer(&bn, b);
        self.named(
            &format!("{prefix}/Gemm"),
            "Gemm",
            &[x, &wn, &bn],
            vec![
                attrs::float("alpha", 1.0),
                attrs::float("beta", 1.0),
                attrs::int("transB", 1),
            ],
        )
    }

    /// torchvision's BasicBlock: conv-bn-relu-conv-bn, plus a 1x1 conv-bn shortcut when the shape
    /// changes, added and rectified.
    fn basic_block(&mut self, prefix: &str, x: &str, cin: usize, cout: usize, stride: usize) -> String {
        let c1 = self.conv(&format!("{prefix}/conv1"), x, cin, cout, 3, stride, false);
        let b1 = self.bn(&format!("{prefix}/bn1"), &c1, cout);
        let r1 = self.relu(&format!("{prefix}/relu"), &b1);
        let c2 = self.conv(&format!("{prefix}/conv2"), &r1, cout, cout, 3, 1, false);
        let b2 = self.bn(&format!("{prefix}/bn2"), &c2, cout);
        let shortcut = if stride != 1 || cin != cout {
            let d = self.conv(
                &format!("{prefix}/downsample/downsample.0"),
                x,
                cin,
                cout,
                1,
                stride,
                false,
            );
            self.bn(&format!("{prefix}/downsample/downsample.1"), &d, cout)
        } else {
            x.to_string()
        };
        let sum = self.named(&format!("{prefix}/Add"), "Add", &[&b2, &shortcut], vec![]);
        self.relu(&format!("{prefix}/relu_1"), &sum)
    }
}

fn net(seed: u64, opset: i64) -> Net {
    Net {
        b: GraphBuilder::new(opset),
        rng: Rng::new(seed),
    }
}

/// ResNet-18 for `classes` classes at 3x224x224 with a symbolic batch, weights from `seed`,
/// laid out and named as `torch.onnx.export` writes torchvision's model (opset 17, BatchNorm kept).
pub fn resnet18(seed: u64, classes: usize) -> Vec<u8> {
    let mut n = net(seed, 17);
    n.b.input_symbolic_batch("input", &[1, 3, 224, 224]);
    let c = n.conv("/conv1", "input", 3, 64, 7, 2, false);
    let b = n.bn("/bn1", &c, 64);
    let r = n.relu("/relu", &b);
    let mut x = n.named(
        "/maxpool/MaxPool",
        "MaxPool",
        &[&r],
        vec![
            attrs::ints("kernel_shape", &[3, 3]),
            attrs::ints("strides", &[2, 2]),
            attrs::ints("pads", &[1, 1, 1, 1]),
            attrs::int("ceil_mode", 0),
        ],
    );
    let mut cin = 64;
    for (stage, cout) in [64usize, 128, 256, 512].into_iter().enumerate() {
        for block in 0..2 {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let prefix = format!("/layer{}/layer{}.{block}", stage + 1, stage + 1);
            x = n.basic_block(&prefix, &x, cin, cout, stride);
            cin = cout;
        }
    }
    let pooled = n.named("/avgpool/GlobalAveragePool", "GlobalAveragePool", &[&x], vec![]);
    let flat = n.named("/Flatten", "Flatten", &[&pooled], vec![attrs::int("axis", 1)]);
    let logits = n.gemm("/fc", &flat, 512, classes);
    n.b.named_node("/Identity", "Identity", &[&logits], &["output"], vec![]);
    n.b.output("output", &[None, Some(classes)]);
    n.b.finish()
}

/// VGG-16 (configuration D) for `classes` classes at 3x224x224 with a symbolic batch, weights from
/// `seed` (He-normal convolutions), opset 13. Layers are named as MXNet's VGG-16 names them
/// (`conv1_1` ... `conv5_3`, `fc6` ... `fc8`), so that the original tool's `config.json` applies.
pub fn vgg16(seed: u64, classes: usize) -> Vec<u8> {
    let mut n = net(seed, 13);
    n.b.input_symbolic_batch("data", &[1, 3, 224, 224]);
    let mut x = "data".to_string();
    let mut cin = 3;
    for (stage, (cout, convs)) in [(64usize, 2usize), (128, 2), (256, 3), (512, 3), (512, 3)]
        .into_iter()
        .enumerate()
    {
        for i in 1..=convs {
            let name = format!("conv{}_{i}", stage + 1);
            let std = (2.0 / (cin * 9) as f64).sqrt();
            let w = n.rng.tensor(vec![cout, cin, 3, 3], |r| r.normal() * std);
            let b = n.rng.tensor(vec![cout], |r| 0.01 * r.normal());
            n.b.initializer(&format!("{name}_weight"), w);
            n.b.initializer(&format!("{name}_bias"), b);
            let (w, b) = (format!("{name}_weight"), format!("{name}_bias"));
            let out = format!("{name}_output");
            n.b.named_node(
                &name,
                "Conv",
                &[&x, &w, &b],
                &[&out],
                vec![attrs::ints("kernel_shape", &[3, 3]), attrs::ints("pads", &[1, 1, 1, 1])],
            );
            x = format!("relu{}_{i}_output", stage + 1);
            n.b.named_node(&format!("relu{}_{i}", stage + 1), "Relu", &[&out], &[&x], vec![]);
            cin = cout;
        }
        let out = format!("pool{}_output", stage + 1);
        n.b.named_node(
            &format!("pool{}", stage + 1),
            "MaxPool",
            &[&x],
            &[&out],
            vec![attrs::ints("kernel_shape", &[2, 2]), attrs::ints("strides", &[2, 2])],
        );
        x = out;
    }
    n.b.named_node(
        "flatten",
        "Flatten",
        &[&x],
        &["flatten_output"],
        vec![attrs::int("axis", 1)],
    );
    x = "flatten_output".into();
    for (name, inputs, outputs) in [("fc6", 512 * 7 * 7, 4096), ("fc7", 4096, 4096), ("fc8", 4096, classes)] {
        let w = n
            .rng
            .tensor(vec![outputs, inputs], |r| r.normal() * (2.0 / inputs as f64).sqrt());
        let b = n.rng.tensor(vec![outputs], |r| 0.01 * r.normal());
        let (wn, bn) = (format!("{name}_weight"), format!("{name}_bias"));
        n.b.initializer(&wn, w);
        n.b.initializer(&bn, b);
        let out = format!("{name}_output");
        n.b.named_node(name, "Gemm", &[&x, &wn, &bn], &[&out], vec![attrs::int("transB", 1)]);
        x = out;
        if name != "fc8" {
            let relu = format!("relu{}", &name[2..]);
            let out = format!("{relu}_output");
            n.b.named_node(&relu, "Relu", &[&x], &[&out], vec![]);
            x = out;
        }
    }
    n.b.named_node("prob", "Softmax", &[&x], &["prob"], vec![attrs::int("axis", 1)]);
    n.b.output("prob", &[None, Some(classes)]);
    n.b.finish()
}

/// A VGG-style chain at 3x16x16: conv-relu-conv-relu-maxpool-conv(strided, `auto_pad`)-relu, global
/// pooling, flatten,
/// and two FC layers (the first as MatMul + Add, the second as Gemm).
pub fn vgg_chain(seed: u64, opset: i64) -> Vec<u8> {
    let mut n = net(seed, opset);
    n.b.input_symbolic_batch("data", &[1, 3, 16, 16]);
    let mut x = "data".to_string();
    for (i, (cin, cout)) in [(3usize, 16usize), (16, 16)].into_iter().enumerate() {
        let c = n.conv(&format!("/features.{i}"), &x, cin, cout, 3, 1, true);
        x = n.relu(&format!("/features.{i}"), &c);
    }
    let pooled = n.named(
        "/pool/MaxPool",
        "MaxPool",
        &[&x],
        vec![attrs::ints("kernel_shape", &[2, 2]), attrs::ints("strides", &[2, 2])],
    );
    // A strided convolution padded by auto_pad: SAME_UPPER pads 0 above and 1 below the 8 rows.
    let w = n.rng.tensor(vec![32, 16, 3, 3], |r| r.normal() / 12.0);
    n.b.initializer("features.2.weight", w);
    let c = n.named(
        "/features.2/Conv",
        "Conv",
        &[&pooled, "features.2.weight"],
        vec![
            attrs::ints("kernel_shape", &[3, 3]),
            attrs::ints("strides", &[2, 2]),
            attrs::string("auto_pad", "SAME_UPPER"),
        ],
    );
    let r = n.relu("/features.2", &c);
    let g = n.named("/gap/GlobalAveragePool", "GlobalAveragePool", &[&r], vec![]);
    let f = n.named("/flatten/Flatten", "Flatten", &[&g], vec![]);
    let w = n.rng.tensor(vec![32, 24], |r| r.normal() / 32f64.sqrt());
    let bias = n.rng.tensor(vec![24], |r| 0.1 * r.normal());
    n.b.initializer("fc1.weight_t", w);
    n.b.initializer("fc1.bias", bias);
    let m = n.named("/fc1/MatMul", "MatMul", &[&f, "fc1.weight_t"], vec![]);
    let a = n.named("/fc1/Add", "Add", &[&m, "fc1.bias"], vec![]);
    let r = n.relu("/fc1", &a);
    let logits = n.gemm("/fc2", &r, 24, 10);
    n.b.named_node(
        "/softmax/Softmax",
        "Softmax",
        &[&logits],
        &["prob"],
        vec![attrs::int("axis", 1)],
    );
    n.b.output("prob", &[None, Some(10)]);
    n.b.finish()
}

/// A ResNet block at 8x12x12 with BatchNorm after every convolution and a strided 1x1 shortcut,
/// followed by a LeakyRelu, a Clip and a Mul by a constant.
pub fn residual_block(seed: u64, opset: i64) -> Vec<u8> {
    let mut n = net(seed, opset);
    n.b.input_symbolic_batch("data", &[1, 8, 12, 12]);
    let y = n.basic_block("/block", "data", 8, 16, 2);
    let l = n.named("/leaky/LeakyRelu", "LeakyRelu", &[&y], vec![attrs::float("alpha", 0.1)]);
    let scale = n.rng.tensor(vec![1, 16, 1, 1], |r| 0.5 + r.uniform());
    n.b.initializer("scale", scale);
    let m = n.named("/scale/Mul", "Mul", &[&l, "scale"], vec![]);
    let clipped = if opset >= 11 {
        n.b.initializer("clip_min", Tensor::new(vec![], vec![0.0]).expect("scalar"));
        n.b.initializer("clip_max", Tensor::new(vec![], vec![6.0]).expect("scalar"));
        n.named("/clip/Clip", "Clip", &[&m, "clip_min", "clip_max"], vec![])
    } else {
        n.named(
            "/clip/Clip",
            "Clip",
            &[&m],
            vec![attrs::float("min", 0.0), attrs::float("max", 6.0)],
        )
    };
    n.b.named_node("/out/Identity", "Identity", &[&clipped], &["out"], vec![]);
    n.b.output("out", &[None, Some(16), Some(6), Some(6)]);
    n.b.finish()
}

/// Two branches from one input (3x3 and 1x1 convolutions, the first with asymmetric padding and a
/// dilation, the second strided then average-pooled), concatenated on channels and reshaped.
pub fn concat_branch(seed: u64, opset: i64) -> Vec<u8> {
    let mut n = net(seed, opset);
    n.b.input_symbolic_batch("data", &[1, 4, 10, 10]);
    let w = n.rng.tensor(vec![6, 4, 3, 3], |r| r.normal() / 6.0);
    n.b.initializer("left.weight", w);
    let left = n.named(
        "/left/Conv",
        "Conv",
        &["data", "left.weight"],
        vec![
            attrs::ints("kernel_shape", &[3, 3]),
            attrs::ints("pads", &[1, 1, 3, 1]),
            attrs::ints("dilations", &[2, 1]),
            attrs::ints("strides", &[2, 2]),
        ],
    );
    let right = n.conv("/right", "data", 4, 5, 1, 1, true);
    let mut pool_attrs = vec![
        attrs::ints("kernel_shape", &[3, 3]),
        attrs::ints("strides", &[2, 2]),
        attrs::ints("pads", &[1, 1, 1, 1]),
        attrs::int("count_include_pad", 0),
    ];
    if opset >= 10 {
        pool_attrs.push(attrs::int("ceil_mode", 0)); // (added in AveragePool-10)
    }
    let right = n.named("/right/AveragePool", "AveragePool", &[&right], pool_attrs);
    let cat = n.named("/cat/Concat", "Concat", &[&left, &right], vec![attrs::int("axis", 1)]);
    let shape_name = "shape";
    n.b.int_initializer(shape_name, &[2], &[0, -1]);
    let flat = n.named("/reshape/Reshape", "Reshape", &[&cat, shape_name], vec![]);
    let logits = n.gemm("/head", &flat, 11 * 5 * 5, 7);
    n.b.named_node("/out/Identity", "Identity", &[&logits], &["out"], vec![]);
    n.b.output("out", &[None, Some(7)]);
    n.b.finish()
}

/// Weights and shapes computed in the graph, as exporters write them (at 3x16x16, symbolic batch):
/// a convolution whose weight is a Keras-layout (HWIO) initializer `Transpose`d in the graph, a
/// per-channel scale from a `Constant` node `Unsqueeze`d to `(C, 1, 1)`, a bias made by
/// `ConstantOfShape`, a flatten through `Shape → Gather → Unsqueeze → Concat → Reshape`, an
/// attention-style product of two computed tensors (`MatMul`, `Transpose`, `Slice`, `ReduceMean`),
/// and a `MatMul + Add` head. Every constant folds at import for a given input shape.
pub fn exported_shapes(seed: u64, opset: i64) -> Vec<u8> {
    let mut n = net(seed, opset);
    n.b.input_symbolic_batch("data", &[1, 3, 16, 16]);
    let hwio = n.rng.tensor(vec![3, 3, 3, 8], |r| r.normal() / 4.0);
    n.b.initializer("conv.kernel_hwio", hwio);
    let w = n.named(
        "/w/Transpose",
        "Transpose",
        &["conv.kernel_hwio"],
        vec![attrs::ints("perm", &[3, 2, 0, 1])],
    );
    let c = n.named(
        "/conv/Conv",
        "Conv",
        &["data", &w],
        vec![attrs::ints("kernel_shape", &[3, 3]), attrs::ints("pads", &[1, 1, 1, 1])],
    );
    let r = n.relu("/relu", &c);
    let scale = n.rng.tensor(vec![8], |r| 0.5 + r.uniform());
    n.b.named_node(
        "/scale/Constant",
        "Constant",
        &[],
        &["scale"],
        vec![attrs::tensor("value", &scale)],
    );
    let unsqueezed = if opset >= 13 {
        n.b.int_initializer("scale_axes", &[2], &[1, 2]);
        n.named("/scale/Unsqueeze", "Unsqueeze", &["scale", "scale_axes"], vec![])
    } else {
        n.named(
            "/scale/Unsqueeze",
            "Unsqueeze",
            &["scale"],
            vec![attrs::ints("axes", &[1, 2])],
        )
    };
    let scaled = n.named("/scale/Mul", "Mul", &[&r, &unsqueezed], vec![]);
    n.b.int_initializer("bias_shape", &[4], &[1, 8, 1, 1]);
    let fill = Tensor::new(vec![1], vec![0.25]).expect("one value");
    let bias = n.named(
        "/bias/ConstantOfShape",
        "ConstantOfShape",
        &["bias_shape"],
        vec![attrs::tensor("value", &fill)],
    );
    let shifted = n.named("/bias/Add", "Add", &[&scaled, &bias], vec![]);
    // (B, 8, 16, 16) → (B, 8, 256) → attention-like (B, 8, 8) weights → mean over the last axis.
    let shape = n.named("/flat/Shape", "Shape", &[&shifted], vec![]);
    n.b.int_initializer("zero", &[], &[0]);
    let batch = n.named("/flat/Gather", "Gather", &[&shape, "zero"], vec![attrs::int("axis", 0)]);
    let batch = if opset >= 13 {
        n.b.int_initializer("zero_axis", &[1], &[0]);
        n.named("/flat/Unsqueeze", "Unsqueeze", &[&batch, "zero_axis"], vec![])
    } else {
        n.named(
            "/flat/Unsqueeze",
            "Unsqueeze",
            &[&batch],
            vec![attrs::ints("axes", &[0])],
        )
    };
    n.b.int_initializer("rows", &[2], &[8, -1]);
    let target = n.named("/flat/Concat", "Concat", &[&batch, "rows"], vec![attrs::int("axis", 0)]);
    let rows = n.named("/flat/Reshape", "Reshape", &[&shifted, &target], vec![]);
    let cols = n.named(
        "/attn/Transpose",
        "Transpose",
        &[&rows],
        vec![attrs::ints("perm", &[0, 2, 1])],
    );
    let half = n.named(
        "/attn/Slice",
        "Slice",
        &[&cols, "slice_starts", "slice_ends", "slice_axes"],
        vec![],
    );
    n.b.int_initializer("slice_starts", &[1], &[0]);
    n.b.int_initializer("slice_ends", &[1], &[128]);
    n.b.int_initializer("slice_axes", &[1], &[1]);
    let rows_half = n.named(
        "/attn/SliceRows",
        "Slice",
        &[&rows, "slice_starts", "slice_ends", "slice_row_axes"],
        vec![],
    );
    n.b.int_initializer("slice_row_axes", &[1], &[2]);
    let product = n.named("/attn/MatMul", "MatMul", &[&rows_half, &half], vec![]);
    let mean = n.named(
        "/attn/ReduceMean",
        "ReduceMean",
        &[&product],
        vec![attrs::ints("axes", &[-1]), attrs::int("keepdims", 0)],
    );
    let head_w = n.rng.tensor(vec![8, 5], |r| r.normal() / 3.0);
    n.b.initializer("head.weight", head_w);
    let logits = n.named("/head/MatMul", "MatMul", &[&mean, "head.weight"], vec![]);
    let head_b = n.rng.tensor(vec![5], |r| 0.1 * r.normal());
    n.b.initializer("head.bias", head_b);
    n.b.named_node("/head/Add", "Add", &[&logits, "head.bias"], &["out"], vec![]);
    n.b.output("out", &[None, Some(5)]);
    n.b.finish()
}

/// A DB-style detection head at 4x12x12 (symbolic batch), as paddle2onnx and torch write it:
/// convolution, nearest `Resize` by constant scales (`roi` empty, or omitted from opset 13), a 1x1 convolution, a strided
/// `ConvTranspose` with bias, a linear half-pixel `Resize` back down, and a `Sigmoid` map.
pub fn detection_head(seed: u64, opset: i64) -> Vec<u8> {
    let mut n = net(seed, opset);
    n.b.input_symbolic_batch("data", &[1, 4, 12, 12]);
    let c = n.conv("/neck/conv", "data", 4, 8, 3, 1, true);
    let r = n.relu("/neck/relu", &c);
    let scales = Tensor::new(vec![4], vec![1.0, 1.0, 2.0, 2.0]).expect("4 scales");
    n.b.initializer("up.scales", scales);
    // Resize-11 requires its roi input; from 13 it may be left empty.
    let roi = if opset < 13 {
        n.b.initializer("roi", Tensor::new(vec![0], vec![]).expect("empty"));
        "roi"
    } else {
        ""
    };
    let up = n.named(
        "/neck/Resize",
        "Resize",
        &[&r, roi, "up.scales"],
        vec![
            attrs::string("mode", "nearest"),
            attrs::string("coordinate_transformation_mode", "asymmetric"),
            attrs::string("nearest_mode", "floor"),
        ],
    );
    let fuse = n.conv("/head/conv", &up, 8, 6, 1, 1, false);
    let w = n.rng.tensor(vec![6, 4, 2, 2], |r| r.normal() / 3.0);
    n.b.initializer("head.deconv.weight", w);
    let b = n.rng.tensor(vec![4], |r| 0.1 * r.normal());
    n.b.initializer("head.deconv.bias", b);
    let deconv = n.named(
        "/head/ConvTranspose",
        "ConvTranspose",
        &[&fuse, "head.deconv.weight", "head.deconv.bias"],
        vec![
            attrs::ints("kernel_shape", &[2, 2]),
            attrs::ints("strides", &[2, 2]),
            attrs::ints("pads", &[0, 0, 0, 0]),
        ],
    );
    let half = Tensor::new(vec![4], vec![1.0, 1.0, 0.5, 0.5]).expect("4 scales");
    n.b.initializer("down.scales", half);
    let down = n.named(
        "/head/Resize",
        "Resize",
        &[&deconv, roi, "down.scales"],
        vec![attrs::string("mode", "linear")],
    );
    n.b.named_node("/head/Sigmoid", "Sigmoid", &[&down], &["map"], vec![]);
    n.b.output("map", &[None, Some(4), Some(24), Some(24)]);
    n.b.finish()
}

/// A YOLO-style split block at 8x8x8 (symbolic batch), with the rearranging operators of today's
/// exports: a 1x1 convolution `Split` in two halves (the `split` attribute before opset 13, an input
/// from 13), a reflect `Pad` and unpadded 3x3 max pooling on the second half, a 3x3 convolution with a
/// per-channel `PRelu`, `Concat` of both halves and that branch, a 1x1 convolution, `DepthToSpace`
/// (DCR) to 4x16x16, a `Tile` along the batch-free width, and `LogSoftmax` over the channels (over the
/// last axis before opset 13, whose softmax flattens every axis from `axis` on, as torch exports it).
pub fn split_block(seed: u64, opset: i64) -> Vec<u8> {
    let mut n = net(seed, opset);
    n.b.input_symbolic_batch("images", &[1, 8, 8, 8]);
    let c = n.conv("/model.0/cv1", "images", 8, 16, 1, 1, true);
    let halves = ["/model.0/Split_output_0", "/model.0/Split_output_1"];
    let mut split_inputs = vec![c.as_str()];
    let mut split_attrs = vec![attrs::int("axis", 1)];
    if opset < 13 {
        split_attrs.push(attrs::ints("split", &[8, 8]));
    } else {
        n.b.int_initializer("split.sizes", &[2], &[8, 8]);
        split_inputs.push("split.sizes");
    }
    n.b.named_node("/model.0/Split", "Split", &split_inputs, &halves, split_attrs);
    let pad_attrs = vec![attrs::string("mode", "reflect")];
    let padded = if opset < 11 {
        let mut a = pad_attrs;
        a.push(attrs::ints("pads", &[0, 0, 1, 1, 0, 0, 1, 1]));
        n.named("/model.0/Pad", "Pad", &[halves[1]], a)
    } else {
        n.b.int_initializer("pad.pads", &[8], &[0, 0, 1, 1, 0, 0, 1, 1]);
        n.named("/model.0/Pad", "Pad", &[halves[1], "pad.pads"], pad_attrs)
    };
    let pooled = n.named(
        "/model.0/MaxPool",
        "MaxPool",
        &[&padded],
        vec![attrs::ints("kernel_shape", &[3, 3]), attrs::ints("strides", &[1, 1])],
    );
    let m = n.conv("/model.0/m", &pooled, 8, 8, 3, 1, true);
    let slope = n.rng.tensor(vec![8, 1, 1], |r| 0.25 + 0.1 * r.normal());
    n.b.initializer("model.0.act.slope", slope);
    let act = n.named("/model.0/PRelu", "PRelu", &[&m, "model.0.act.slope"], vec![]);
    let cat = n.named(
        "/model.0/Concat",
        "Concat",
        &[halves[0], halves[1], &act],
        vec![attrs::int("axis", 1)],
    );
    let cv2 = n.conv("/model.0/cv2", &cat, 24, 16, 1, 1, true);
    let d2s = n.named(
        "/model.1/DepthToSpace",
        "DepthToSpace",
        &[&cv2],
        vec![attrs::int("blocksize", 2), attrs::string("mode", "DCR")],
    );
    n.b.int_initializer("tile.repeats", &[4], &[1, 1, 1, 2]);
    let tiled = n.named("/model.1/Tile", "Tile", &[&d2s, "tile.repeats"], vec![]);
    n.b.named_node(
        "/model.1/LogSoftmax",
        "LogSoftmax",
        &[&tiled],
        &["scores"],
        vec![attrs::int("axis", if opset < 13 { 3 } else { 1 })],
    );
    n.b.output("scores", &[None, Some(4), Some(16), Some(32)]);
    n.b.finish()
}
