//! `accnn inspect`: every node with its output shape, and every layer with its costs.

use anyhow::Result;

use crate::flags::ModelArgs;

pub(crate) fn run(args: &ModelArgs) -> Result<()> {
    let loaded = crate::load(args)?;
    let model = &loaded.model;
    let shapes = &loaded.analysis.shapes;
    say!("model {} (input {:?})", loaded.name, loaded.analysis.data_shape)?;
    say!(
        "{:<24} {:<16} {:<20} {:<20} {:>14} {:>12} {:>8}",
        "node",
        "op",
        "output shape",
        "weight",
        "MACs",
        "params",
        "max K"
    )?;
    for (i, node) in model.graph.nodes.iter().enumerate() {
        if matches!(node.op, accnn_graph::Op::Variable) {
            continue;
        }
        let layer = loaded.analysis.layers.iter().find(|l| l.node == i);
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
        say!(
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
    let macs: u64 = loaded.analysis.layers.iter().map(|l| l.macs).sum();
    let params: u64 = model.args.values().map(|t| t.len() as u64).sum();
    say!("total: {macs} MACs in convolution and FC layers, {params} parameters")?;
    Ok(())
}
