//! VGG-16 topology (13 convolutions, 3 FC layers) with seeded He-normal weights.

use accnn_graph::ir::{Activation, ConvAttrs, FcAttrs, Padding2d, PoolAttrs, PoolConvention, PoolKind};
use accnn_graph::mxnet::{op_attrs, save_checkpoint};
use accnn_graph::{Entry, Model, Node, Op, Tensor};
use anyhow::Result;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

/// VGG-16's five stages: (channels, convolutions).
pub const STAGES: [(usize, usize); 5] = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)];

#[derive(clap::Args, Debug)]
pub struct VggArgs {
    /// Output prefix (writes PREFIX-symbol.json and PREFIX-0001.params).
    #[arg(long)]
    pub out: String,
    /// Input shape C,H,W.
    #[arg(long, default_value = "3,224,224", value_parser = parse_shape)]
    pub data_shape: DataShape,
    /// Channels of the five convolution stages, divided by this (VGG-16: 64,128,256,512,512).
    #[arg(long, default_value_t = 1)]
    pub width_divisor: usize,
    /// Width of fc6 and fc7.
    #[arg(long, default_value_t = 4096)]
    pub fc_width: usize,
    #[arg(long, default_value_t = 1000)]
    pub classes: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

impl VggArgs {
    /// VGG-16 itself: 3x224x224 input, 1000 classes, seed 42.
    pub fn full(out: String) -> Self {
        VggArgs {
            out,
            data_shape: DataShape([3, 224, 224]),
            width_divisor: 1,
            fc_width: 4096,
            classes: 1000,
            seed: 42,
        }
    }

    /// The committed fixture: Fashion-MNIST sized (1x32x32, 10 classes), a quarter of VGG-16's
    /// convolution widths and 256-wide FC layers (about 1 M parameters).
    pub fn mini(out: String) -> Self {
        VggArgs {
            out,
            data_shape: DataShape([1, 32, 32]),
            width_divisor: 4,
            fc_width: 256,
            classes: 10,
            seed: 42,
        }
    }
}

/// An input shape `C,H,W`.
#[derive(Clone, Copy, Debug)]
pub struct DataShape(pub [usize; 3]);

fn parse_shape(text: &str) -> Result<DataShape, String> {
    let dims: Option<Vec<usize>> = text.split(',').map(|d| d.trim().parse().ok()).collect();
    dims.and_then(|d| <[usize; 3]>::try_from(d).ok())
        .map(DataShape)
        .ok_or_else(|| format!("expected C,H,W, got '{text}'"))
}

struct Builder {
    model: Model,
    rng: rand::rngs::StdRng,
}

impl Builder {
    fn node(&mut self, name: &str, op: Op, inputs: Vec<Entry>) -> Entry {
        let attrs = op_attrs(&op).expect("VGG uses symmetric padding");
        self.model.graph.nodes.push(Node {
            name: name.to_string(),
            op,
            inputs,
            attrs,
        });
        Entry::new(self.model.graph.nodes.len() - 1)
    }

    fn param(&mut self, name: &str, shape: Vec<usize>, std: f32) -> Entry {
        let n = shape.iter().product();
        let normal = Normal::new(0.0f32, std).expect("positive std");
        let data: Vec<f32> = if std > 0.0 {
            (0..n).map(|_| normal.sample(&mut self.rng)).collect()
        } else {
            vec![0.0; n]
        };
        self.model
            .args
            .insert(name.to_string(), Tensor::new(shape, data).expect("shape"));
        self.node(name, Op::Variable, vec![])
    }

    fn conv(&mut self, name: &str, x: Entry, cin: usize, cout: usize) -> Entry {
        let std = (2.0 / (cin * 9) as f32).sqrt();
        let w = self.param(&format!("{name}_weight"), vec![cout, cin, 3, 3], std);
        let b = self.param(&format!("{name}_bias"), vec![cout], 0.01);
        let op = Op::Convolution(ConvAttrs::same([3, 3], cout));
        let c = self.node(name, op, vec![x, w, b]);
        self.node(&name.replace("conv", "relu"), Op::Activation(Activation::Relu), vec![c])
    }

    fn fc(&mut self, name: &str, x: Entry, inputs: usize, outputs: usize) -> Entry {
        let std = (2.0 / inputs as f32).sqrt();
        let w = self.param(&format!("{name}_weight"), vec![outputs, inputs], std);
        let b = self.param(&format!("{name}_bias"), vec![outputs], 0.01);
        let op = Op::FullyConnected(FcAttrs {
            num_hidden: outputs,
            no_bias: false,
            flatten: true,
        });
        self.node(name, op, vec![x, w, b])
    }
}

/// Builds the model.
pub fn build(args: &VggArgs) -> Model {
    let mut b = Builder {
        model: Model::default(),
        rng: rand::rngs::StdRng::seed_from_u64(args.seed),
    };
    let [c, h, w] = args.data_shape.0;
    let mut x = b.node("data", Op::Variable, vec![]);
    b.model.graph.nodes[0]
        .attrs
        .insert("__shape__".into(), format!("(1, {c}, {h}, {w})"));
    let (mut cin, mut size) = (c, (h, w));
    for (s, (width, convs)) in STAGES.iter().enumerate() {
        let width = (width / args.width_divisor).max(1);
        for i in 1..=*convs {
            x = b.conv(&format!("conv{}_{i}", s + 1), x, cin, width);
            cin = width;
        }
        let pool = Op::Pooling(PoolAttrs {
            kind: PoolKind::Max,
            kernel: [2, 2],
            stride: [2, 2],
            pad: Padding2d::default(),
            global: false,
            convention: PoolConvention::Valid,
            count_include_pad: true,
        });
        x = b.node(&format!("pool{}", s + 1), pool, vec![x]);
        size = (size.0 / 2, size.1 / 2);
    }
    x = b.node("flatten", Op::Flatten, vec![x]);
    let features = cin * size.0 * size.1;
    x = b.fc("fc6", x, features, args.fc_width);
    x = b.node("relu6", Op::Activation(Activation::Relu), vec![x]);
    x = b.node("drop6", Op::Dropout, vec![x]);
    x = b.fc("fc7", x, args.fc_width, args.fc_width);
    x = b.node("relu7", Op::Activation(Activation::Relu), vec![x]);
    x = b.node("drop7", Op::Dropout, vec![x]);
    x = b.fc("fc8", x, args.fc_width, args.classes);
    let label = b.node("softmax_label", Op::Variable, vec![]);
    let out = b.node("softmax", Op::SoftmaxOutput, vec![x, label]);
    b.model.graph.heads = vec![out];
    b.model
}

pub fn generate(args: &VggArgs) -> Result<()> {
    let model = build(args);
    let paths = save_checkpoint(&model, &args.out, 1)?;
    let params: usize = model.args.values().map(Tensor::len).sum();
    println!(
        "wrote {} and {} ({params} parameters)",
        paths.symbol.display(),
        paths.params.display()
    );
    Ok(())
}
