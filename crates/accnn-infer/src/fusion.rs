//! Which nodes the CPU kernels absorb into the convolution before them.
//!
//! A ReLU that is a convolution's only reader is applied in the convolution's epilogue. A residual
//! `Add` of a convolution's output and an earlier value (a ResNet block's shortcut) is too, and
//! so is a ReLU after that `Add`: the convolution adds the shortcut to its outputs as it writes
//! them, so the block's sum never makes a pass over memory of its own, and on a small machine
//! the engine's workers are not left idle through an elementwise step.
//!
//! An absorbed node's value is its convolution's: the step reads the convolution's output in place.
//! A convolution that is one of the wanted outputs is never fused, so its own value stays observable.

use accnn_graph::ir::{Activation, BinaryOp};
use accnn_graph::{Entry, Graph, Op};

/// The fusion plan of a graph.
pub(crate) struct Fusion {
    /// Convolutions that apply a ReLU to their outputs (after any residual).
    pub relu: Vec<bool>,
    /// Convolutions that add this value to their outputs (before any ReLU).
    pub residual: Vec<Option<Entry>>,
    /// Nodes whose value is their (rewritten) first input's: a fused ReLU or residual `Add`.
    pub absorbed: Vec<bool>,
    /// Each node's inputs as its step reads them: a fusing convolution also reads its residual
    /// (last), a fused `Add` only the convolution.
    pub inputs: Vec<Vec<Entry>>,
}

impl Fusion {
    /// No fusion at all: every node computes its own value.
    pub fn none(graph: &Graph) -> Fusion {
        let n = graph.nodes.len();
        Fusion {
            relu: vec![false; n],
            residual: vec![None; n],
            absorbed: vec![false; n],
            inputs: graph.nodes.iter().map(|node| node.inputs.clone()).collect(),
        }
    }

    /// The fusions for a graph whose `outputs` are wanted. `residuals`: whether the convolution
    /// kernels take a residual (accnn's CPU kernels do, candle's tensor ops do not).
    pub fn plan(graph: &Graph, outputs: &[Entry], residuals: bool) -> Fusion {
        let mut fusion = Fusion::none(graph);
        let mut uses = graph.use_counts();
        for e in outputs {
            // Counted as a use of its own: a wanted value is never folded into another node.
            uses[e.node] += 1;
        }
        let nodes = &graph.nodes;
        let is_conv = |i: usize| matches!(nodes[i].op, Op::Convolution(_));
        for (i, node) in nodes.iter().enumerate() {
            match (&node.op, node.inputs.as_slice()) {
                (Op::Binary { op: BinaryOp::Add, .. }, [a, b]) if residuals && a.output == 0 && b.output == 0 => {
                    // The later operand is the convolution, so the shortcut is computed before it runs.
                    let (conv, shortcut) = if a.node > b.node { (*a, *b) } else { (*b, *a) };
                    if is_conv(conv.node)
                        && uses[conv.node] == 1
                        && shortcut.node != conv.node
                        && !fusion.relu[conv.node]
                        && fusion.residual[conv.node].is_none()
                    {
                        fusion.residual[conv.node] = Some(shortcut);
                        fusion.inputs[conv.node].push(shortcut);
                        fusion.absorbed[i] = true;
                        fusion.inputs[i] = vec![conv];
                    }
                }
                (Op::Activation(Activation::Relu), [x]) if x.output == 0 && uses[x.node] == 1 => {
                    // Directly after a convolution, or after an Add that one absorbed.
                    let conv = if is_conv(x.node) {
                        Some(x.node)
                    } else if fusion.absorbed[x.node] && matches!(nodes[x.node].op, Op::Binary { .. }) {
                        Some(fusion.inputs[x.node][0].node)
                    } else {
                        None
                    };
                    if let Some(conv) = conv.filter(|&c| !fusion.relu[c]) {
                        fusion.relu[conv] = true;
                        fusion.absorbed[i] = true;
                    }
                }
                _ => {}
            }
        }
        fusion
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use accnn_graph::ir::ConvAttrs;
    use accnn_graph::{ModelBuilder, Tensor as Weights};

    fn conv(b: &mut ModelBuilder, name: &str, x: Entry) -> Entry {
        let w = b.weight(
            &format!("{name}_w"),
            Weights::new(vec![4, 4, 3, 3], vec![0.0; 144]).unwrap(),
        );
        b.node(name, Op::Convolution(ConvAttrs::same([3, 3], 4)), &[x, w])
    }

    fn add(b: &mut ModelBuilder, name: &str, x: Entry, y: Entry) -> Entry {
        let op = Op::Binary {
            op: BinaryOp::Add,
            broadcast: false,
        };
        b.node(name, op, &[x, y])
    }

    fn relu(b: &mut ModelBuilder, name: &str, x: Entry) -> Entry {
        b.node(name, Op::Activation(Activation::Relu), &[x])
    }

    #[test]
    fn a_residual_block_folds_into_its_last_convolution() {
        let mut b = ModelBuilder::new();
        let x = b.input("data");
        let c1 = conv(&mut b, "c1", x);
        let r1 = relu(&mut b, "r1", c1);
        let c2 = conv(&mut b, "c2", r1);
        let sum = add(&mut b, "sum", x, c2);
        let out = relu(&mut b, "out", sum);
        let model = b.build(&[out]).unwrap();
        let f = Fusion::plan(&model.graph, &model.graph.heads, true);
        let id = |e: Entry| e.node;
        assert!(f.relu[id(c1)] && f.absorbed[id(r1)]);
        assert_eq!(f.residual[id(c2)], Some(x));
        assert_eq!(f.inputs[id(c2)].last(), Some(&x));
        assert!(f.relu[id(c2)] && f.absorbed[id(sum)] && f.absorbed[id(out)]);
        assert_eq!(f.inputs[id(sum)], vec![c2]);
        // Without residual kernels only the ReLU after the first convolution fuses.
        let g = Fusion::plan(&model.graph, &model.graph.heads, false);
        assert!(g.relu[id(c1)] && !g.relu[id(c2)] && g.residual.iter().all(Option::is_none));
        assert!(!g.absorbed[id(sum)] && !g.absorbed[id(out)]);
    }

    #[test]
    fn a_convolution_read_elsewhere_or_wanted_is_not_fused() {
        let mut b = ModelBuilder::new();
        let x = b.input("data");
        let c1 = conv(&mut b, "c1", x);
        let c2 = conv(&mut b, "c2", c1);
        // c1 is read by c2 and by the sum: the sum cannot fold into c1; c2 is later, and fuses.
        let sum = add(&mut b, "sum", c1, c2);
        let c3 = conv(&mut b, "c3", sum);
        let other = add(&mut b, "other", c3, x);
        let model = b.build(&[other, c3]).unwrap();
        let f = Fusion::plan(&model.graph, &model.graph.heads, true);
        assert_eq!(f.residual[c2.node], Some(c1));
        assert!(f.absorbed[sum.node]);
        // c3 is an output of its own: the Add after it stays a step.
        assert!(f.residual[c3.node].is_none() && !f.absorbed[other.node]);
    }
}
