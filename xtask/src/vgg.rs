//! VGG-16 topology (13 convolutions, 3 FC layers) with seeded He-normal weights.

use accnn_graph::ir::{Activation, ConvAttrs, PoolAttrs, PoolKind};
use accnn_graph::mxnet::save_checkpoint;
use accnn_graph::{Entry, Model, ModelBuilder, Op, Tensor};
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

/// A [`ModelBuilder`] that draws He-normal weights.
struct Builder {
    model: ModelBuilder,
    rng: rand::rngs::StdRng,
}

impl Builder {
    fn tensor(&mut self, shape: Vec<usize>, std: f32) -> Tensor {
        let n = shape.iter().product();
        let normal = Normal::new(0.0f32, std).expect("positive std");
        let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut self.rng)).collect();
        Tensor::new(shape, data).expect("shape")
    }

    fn conv(&mut self, name: &str, x: Entry, cin: usize, cout: usize) -> Entry {
        let w = self.tensor(vec![cout, cin, 3, 3], (2.0 / (cin * 9) as f32).sqrt());
        let b = self.tensor(vec![cout], 0.01);
        let c = self.model.conv(name, x, ConvAttrs::same([3, 3], cout), w, Some(b));
        self.model
            .activation(&name.replace("conv", "relu"), c, Activation::Relu)
    }

    fn fc(&mut self, name: &str, x: Entry, inputs: usize, outputs: usize) -> Entry {
        let w = self.tensor(vec![outputs, inputs], (2.0 / inputs as f32).sqrt());
        let b = self.tensor(vec![outputs], 0.01);
        self.model.dense(name, x, w, Some(b), true)
    }
}

/// Builds the model.
pub fn build(args: &VggArgs) -> Model {
    let mut b = Builder {
        model: ModelBuilder::new(),
        rng: rand::rngs::StdRng::seed_from_u64(args.seed),
    };
    let [c, h, w] = args.data_shape.0;
    let mut x = b.model.input("data");
    b.model.set_attr(x, "__shape__", &format!("(1, {c}, {h}, {w})"));
    let (mut cin, mut size) = (c, (h, w));
    for (s, (width, convs)) in STAGES.iter().enumerate() {
        let width = (width / args.width_divisor).max(1);
        for i in 1..=*convs {
            x = b.conv(&format!("conv{}_{i}", s + 1), x, cin, width);
            cin = width;
        }
        let pool = Op::Pooling(PoolAttrs::new(PoolKind::Max, [2, 2], [2, 2]));
        x = b.model.node(&format!("pool{}", s + 1), pool, &[x]);
        size = (size.0 / 2, size.1 / 2);
    }
    x = b.model.node("flatten", Op::Flatten { axis: 1 }, &[x]);
    let features = cin * size.0 * size.1;
    x = b.fc("fc6", x, features, args.fc_width);
    x = b.model.activation("relu6", x, Activation::Relu);
    x = b.model.node("drop6", Op::Dropout, &[x]);
    x = b.fc("fc7", x, args.fc_width, args.fc_width);
    x = b.model.activation("relu7", x, Activation::Relu);
    x = b.model.node("drop7", Op::Dropout, &[x]);
    x = b.fc("fc8", x, args.fc_width, args.classes);
    let label = b.model.input("softmax_label");
    let out = b.model.node("softmax", Op::SoftmaxOutput, &[x, label]);
    b.model.build(&[out]).expect("VGG-16 is a valid graph")
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
