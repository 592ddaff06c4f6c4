//! What `accnn inspect` prints: every node with its output shape, every layer with its costs.

use std::fmt::Write as _;

use crate::LoadedModel;

impl LoadedModel {
    /// A table of every node with its op and output shape, and of every convolution and FC layer with
    /// its weight shape, MACs, parameters and largest rank, then the totals (one line each).
    pub fn inspection(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_inspection(&mut out);
        out
    }

    fn write_inspection(&self, out: &mut String) -> std::fmt::Result {
        let model = &self.model;
        let shapes = &self.analysis.shapes;
        writeln!(out, "model {} (input {:?})", self.name, self.analysis.data_shape)?;
        writeln!(
            out,
            "{:<24} {:<16} {:<20} {:<20} {:>14} {:>12} {:>8}",
            "node", "op", "output shape", "weight", "MACs", "params", "max K"
        )?;
        for (i, node) in model.graph.nodes.iter().enumerate() {
            if matches!(node.op, accnn_graph::Op::Variable) {
                continue;
            }
            let layer = self.analysis.layers.iter().find(|l| l.node == i);
            let shape = format!("{:?}", shapes.of(i));
            let (weight, macs, params, max_k) = match layer {
                Some(l) => (
                    format!("{:?}", l.weight_shape),
                    l.macs.to_string(),
                    l.params.to_string(),
                    l.max_width().to_string(),
                ),
                None => (String::new(), String::new(), String::new(), String::new()),
            };
            writeln!(
                out,
                "{:<24} {:<16} {:<20} {:<20} {:>14} {:>12} {:>8}",
                node.name,
                node.op.mxnet_name(),
                shape,
                weight,
                macs,
                params,
                max_k
            )?;
        }
        let macs: u64 = self.analysis.layers.iter().map(|l| l.macs).sum();
        let params: u64 = model.args.values().map(|t| t.len() as u64).sum();
        writeln!(
            out,
            "total: {macs} MACs in convolution and FC layers, {params} parameters"
        )
    }
}
