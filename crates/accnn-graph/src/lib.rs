//! The model IR of accnn and everything that reads, writes, measures and rewrites it.
//!
//! - [`ir`]: [`Model`] = a topologically ordered [`Graph`] of [`Node`]s plus named weight [`Tensor`]s;
//!   [`ModelBuilder`] makes one by hand.
//! - [`mxnet`]: MXNet checkpoints (`PREFIX-symbol.json` in the 2016 and 1.x dialects, `.params` in
//!   the legacy, V1, V2 and V3 layouts), read and written.
//! - [`onnx`]: ONNX models (opsets 9 to 21), read and written back with everything accnn did not
//!   change kept as it was.
//! - [`ops`]: the operators, one module each: attributes, output shapes, MACs, reference evaluation.
//! - [`shape`]: shape inference from an input shape, with every weight checked against its layer.
//! - [`cost`]: multiply-accumulates and parameters of convolution and fully-connected layers.
//! - [`rewrite`]: replacing a layer by a low-rank pair of layers.
//!
//! ```
//! use accnn_graph::{mxnet, shape, cost};
//! # fn main() -> Result<(), accnn_graph::GraphError> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let prefix = dir.path().join("net").to_string_lossy().into_owned();
//! # let text = r#"{"nodes":[{"op":"null","name":"data","inputs":[]},
//! #   {"op":"null","name":"fc_weight","inputs":[]},
//! #   {"op":"FullyConnected","name":"fc","attrs":{"num_hidden":"2","no_bias":"True"},"inputs":[[0,0,0],[1,0,0]]}],
//! #   "arg_nodes":[0,1],"heads":[[2,0,0]]}"#;
//! # std::fs::write(format!("{prefix}-symbol.json"), text).unwrap();
//! # let mut set = mxnet::ParamSet::default();
//! # set.args.insert("fc_weight".into(), accnn_graph::Tensor::zeros(vec![2, 3]));
//! # std::fs::write(format!("{prefix}-0001.params"), mxnet::encode_params(&set.args, &set.aux)).unwrap();
//! let model = mxnet::load_checkpoint(&prefix, 1)?;
//! let shapes = shape::infer_shapes(&model, &[1, 3])?;
//! let costs = cost::layer_costs(&model, &shapes);
//! assert_eq!(costs[0].macs, 6);
//! # Ok(()) }
//! ```

mod builder;
pub mod cost;
mod error;
mod fold;
pub mod io;
pub mod ir;
pub mod moments;
pub mod mxnet;
mod names;
pub mod onnx;
pub mod ops;
pub mod rewrite;
pub mod shape;
mod tensor;

pub use builder::ModelBuilder;
pub use error::GraphError;
pub use fold::{FoldedBatchNorm, fold_batch_norms};
pub use ir::{Entry, Graph, Model, Node, Op};
pub use tensor::{DType, Tensor, element_count};
