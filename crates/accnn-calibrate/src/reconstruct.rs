//! Pass 2: the planned layers replaced in network order, each pair's second half refitted on the
//! approximated network's inputs against the original network's responses.

use std::time::Instant;

use accnn_decompose::LeastSquares;
use accnn_graph::ir::ConvAttrs;
use accnn_graph::rewrite::{LayerSplit, apply_splits};
use accnn_graph::{Entry, Model, Op, Tensor};
use accnn_infer::data::Dataset;
use accnn_plan::{Analysis, Factorisation, LayerId, RankPlan, Report, plan_report};

use crate::patches::{Sampler, vertical_patches};
use crate::{CalibrateError, CalibrateOptions, LayerResponses, Statistics, batches, conv_of, engine, with_values};

/// What reconstruction did to one layer: relative squared response error on the calibration
/// samples (`‖y − ŷ‖² / ‖y‖²`, pre-activation, inputs from the approximated network) with the
/// factors as the SVD gave them and after the least-squares refit.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerFit {
    pub name: String,
    pub width: usize,
    pub error_before: f64,
    pub error_after: f64,
    /// Whether the second half was refitted: it is not when there were fewer than
    /// [`MIN_SAMPLES_PER_FEATURE`] samples per unknown of the regression.
    pub refit: bool,
    pub samples: u64,
    pub features: usize,
}

/// Samples per regression unknown below which a layer keeps its factorisation's second half.
pub const MIN_SAMPLES_PER_FEATURE: u64 = 4;

/// The approximated model, its report, and one [`LayerFit`] per decomposed layer.
pub struct Reconstruction {
    pub model: Model,
    pub report: Report,
    pub fits: Vec<LayerFit>,
    pub seconds: f64,
}

/// The approximated network's activations after the last layer refitted from them, for every
/// calibration batch: every value computed before that layer that it or a later node reads, by
/// node name (splitting a layer renumbers the nodes before it: its old weights go).
struct Resume {
    entries: Vec<(String, usize)>,
    batches: Vec<Vec<candle_core::Tensor>>,
}

impl Resume {
    /// The kept entries as entries of `model`, in the order of each batch's values.
    fn entries_in(&self, model: &Model) -> Result<Vec<Entry>, CalibrateError> {
        self.entries
            .iter()
            .map(|(name, output)| {
                let node =
                    model.graph.nodes.iter().position(|n| &n.name == name).ok_or_else(|| {
                        CalibrateError::Data(format!("node '{name}' vanished while layers were split"))
                    })?;
                Ok(Entry { node, output: *output })
            })
            .collect()
    }
}

/// The entries before node `cut` that it or a later node reads, computed ones only: weights,
/// labels and the data input (the images are at hand anyway) are not kept.
fn live_values(model: &Model, cut: usize) -> Vec<Entry> {
    let graph = &model.graph;
    graph
        .live_at(cut)
        .into_iter()
        .filter(|e| !matches!(graph.nodes[e.node].op, Op::Variable))
        .collect()
}

/// Replaces the planned layers one by one in network order, refitting each pair's second half on
/// the approximated network's inputs against the original network's responses.
///
/// Each layer's inputs come from the approximated network resumed at the previous layer where its
/// activations over the calibration set fit in [`CalibrateOptions::resume_bytes`], else from the
/// last layer whose did, else from the images. `progress` hears of each layer once it is replaced,
/// with how many of how many are done.
#[allow(clippy::too_many_arguments)]
pub fn reconstruct(
    model: Model,
    analysis: &Analysis,
    svds: &accnn_plan::PerLayer<Factorisation>,
    plan: &RankPlan,
    stats: &Statistics,
    data: &Dataset,
    options: &CalibrateOptions,
    progress: &mut impl FnMut(LayerId, usize, usize),
) -> Result<Reconstruction, CalibrateError> {
    let started = Instant::now();
    let report = plan_report(analysis, svds, plan)?;
    let mut planned = plan.layers.clone();
    planned.sort_by_key(|p| analysis[p.layer].node);
    let batch_count = data.len().div_ceil(options.batch.max(1));
    let mut current = model;
    let mut fits = Vec::new();
    let mut resume: Option<Resume> = None;
    let total = planned.len();
    for (done, p) in planned.into_iter().enumerate() {
        let layer = &analysis[p.layer];
        let svd = svds.get(p.layer).ok_or_else(|| CalibrateError::Layer {
            layer: layer.name.clone(),
            message: "no factorisation was computed".into(),
        })?;
        let mut split = svd.split(&current, layer, p.rank, None)?;
        let groups = conv_of(&current, split.node).map_or(1, |c| c.num_group);
        if let (Some(responses), 1) = (stats.layers.get(p.layer), groups) {
            let mut refitter = Refitter::new(&current, p.layer.index(), layer, &split, responses, options);
            let live = live_values(&current, split.node);
            let input = current.graph.nodes[split.node].inputs[0];
            // The run computes the live values, and the layer's input (the data input, for a
            // first layer) if it is not one of them.
            let mut wanted = live.clone();
            let at = match live.iter().position(|e| *e == input) {
                Some(at) => at,
                None => {
                    wanted.push(input);
                    live.len()
                }
            };
            let engine = engine(&current, options, &wanted)?;
            let known_entries = resume.as_ref().map(|r| r.entries_in(&current)).transpose()?;
            let mut kept: Option<Vec<Vec<candle_core::Tensor>>> = (!live.is_empty()).then(Vec::new);
            for (b, (start, images)) in batches(data, options.batch).enumerate() {
                let images = images?;
                let mut values = match (&resume, &known_entries) {
                    (Some(r), Some(entries)) => {
                        let known: Vec<_> = entries.iter().copied().zip(r.batches[b].iter().cloned()).collect();
                        engine.run_from(Some(&images), &known, &wanted)?
                    }
                    _ => engine.run_collect(&images, &wanted)?,
                };
                with_values(&values[at], |x| refitter.add(start, x))??;
                values.truncate(live.len());
                if b == 0 {
                    let bytes: usize = values.iter().map(|v| v.elem_count() * 4).sum();
                    if bytes.saturating_mul(batch_count) > options.resume_bytes {
                        kept = None;
                    }
                }
                if let Some(k) = &mut kept {
                    k.push(values);
                    // The new activations replace the old: each old batch goes once used, so the
                    // two sets never both fill memory.
                    if let Some(r) = &mut resume {
                        r.batches[b].clear();
                    }
                }
            }
            if let Some(batches) = kept {
                let names = live
                    .iter()
                    .map(|e| (current.graph.nodes[e.node].name.clone(), e.output))
                    .collect();
                resume = Some(Resume {
                    entries: names,
                    batches,
                });
            }
            let refit = refitter.finish(&split)?;
            split.second = refit.second;
            split.bias = refit.bias;
            fits.push(refit.fit);
        }
        current = apply_splits(current, vec![split])?;
        progress(p.layer, done + 1, total);
    }
    Ok(Reconstruction {
        model: current,
        report,
        fits,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A refitted second half: its weight, its bias (when the layer has one) and how well it fits.
struct Refit {
    second: Tensor,
    bias: Option<Tensor>,
    fit: LayerFit,
}

/// The least-squares refit of one layer's second half (and bias), fed the layer's inputs in the
/// current network batch by batch.
struct Refitter<'a> {
    layer: &'a accnn_plan::Layer,
    responses: &'a LayerResponses,
    sampler: Option<Sampler>,
    conv: Option<ConvAttrs>,
    old_bias: Option<Vec<f32>>,
    /// The first half as a `d x K` matrix: one product turns a block of input patches into the
    /// vertical responses the second half reads (a convolution's: small, in f64).
    first_t: faer::Mat<f64>,
    /// A dense layer's first half, `K x d` row-major, read in place (VGG-16's fc6: 25,088 wide).
    first: &'a [f32],
    rank: usize,
    taps: usize,
    ls: LeastSquares,
    /// Ridge of the least squares, relative to the mean diagonal of `FᵀF`.
    ridge: f64,
    /// Calibration samples consumed so far (rows of `responses.targets`).
    row: usize,
}

impl<'a> Refitter<'a> {
    fn new(
        current: &Model,
        index: usize,
        layer: &'a accnn_plan::Layer,
        split: &'a LayerSplit,
        responses: &'a LayerResponses,
        options: &CalibrateOptions,
    ) -> Self {
        let node = split.node;
        let old_bias = current.graph.nodes[node]
            .inputs
            .get(2)
            .and_then(|e| current.param(&current.graph.nodes[e.node].name))
            .map(|t| t.data().to_vec());
        let first = &split.first;
        let rank = first.shape()[0];
        let first_len = first.len() / rank;
        let conv = conv_of(current, node).cloned();
        let first_t = match conv {
            Some(_) => faer::Mat::<f64>::from_fn(first_len, rank, |i, k| first.data()[k * first_len + i] as f64),
            None => faer::Mat::<f64>::zeros(first_len, 0),
        };
        let taps = conv.as_ref().map_or(1, |c| c.kernel[1]);
        let features = rank * taps + usize::from(old_bias.is_some());
        let sampler = conv.as_ref().map(|_| {
            let (ho, wo) = (layer.output_shape[2], layer.output_shape[3]);
            Sampler::new(index, options.positions, ho, wo)
        });
        Refitter {
            layer,
            responses,
            sampler,
            conv,
            old_bias,
            first_t,
            first: first.data(),
            rank,
            taps,
            ls: LeastSquares::new(features, responses.outputs),
            ridge: options.ridge * 1e-3,
            row: 0,
        }
    }

    fn features(&self) -> usize {
        self.ls.features()
    }

    /// The layer's inputs for the images numbered from `start` on.
    fn add(&mut self, start: usize, x: &[f32]) -> Result<(), CalibrateError> {
        let (rank, taps, n_out) = (self.rank, self.taps, self.responses.outputs);
        let has_bias = self.old_bias.is_some();
        let first_len = self.first.len() / rank;
        let mut feats: Vec<f64> = Vec::new();
        let mut targets: Vec<f64> = Vec::new();
        let push_row = |z: &[f64], feats: &mut Vec<f64>| {
            feats.extend_from_slice(z);
            if has_bias {
                feats.push(1.0);
            }
        };
        let take_targets = |row: &mut usize, targets: &mut Vec<f64>| -> Result<(), CalibrateError> {
            let slice = self
                .responses
                .targets
                .get(*row * n_out..(*row + 1) * n_out)
                .ok_or_else(|| CalibrateError::Data("the calibration set changed between the two passes".into()))?;
            targets.extend(slice.iter().map(|&t| t as f64));
            *row += 1;
            Ok(())
        };
        match (&self.conv, &self.sampler) {
            (Some(c), Some(sampler)) => {
                let s = &self.layer.input_shape;
                let (ch, h, w) = (s[1], s[2], s[3]);
                let per_image = ch * h * w;
                let images = x.len() / per_image;
                let mut patches: Vec<f64> = Vec::new();
                for b in 0..images {
                    let image = &x[b * per_image..(b + 1) * per_image];
                    for (r, col) in sampler.positions(start + b) {
                        for tap in 0..taps {
                            patches.extend(vertical_patches(image, [ch, h, w], c, r, col, tap));
                        }
                        take_targets(&mut self.row, &mut targets)?;
                    }
                }
                let samples = patches.len() / (first_len * taps);
                let p = faer::MatRef::from_row_major_slice(&patches, samples * taps, first_len);
                let z = p * self.first_t.as_ref();
                for s in 0..samples {
                    // Features ordered (k, tap).
                    let f: Vec<f64> = (0..rank * taps).map(|i| z[(s * taps + i % taps, i / taps)]).collect();
                    push_row(&f, &mut feats);
                }
            }
            _ => {
                // In f32, as the layer runs: the products are the features, accumulated in f64.
                let samples = x.len() / first_len;
                let p = faer::MatRef::from_row_major_slice(&x[..samples * first_len], samples, first_len);
                let w = faer::MatRef::from_row_major_slice(self.first, rank, first_len);
                let z = p * w.transpose();
                for s in 0..samples {
                    let f: Vec<f64> = (0..rank).map(|k| z[(s, k)] as f64).collect();
                    push_row(&f, &mut feats);
                    take_targets(&mut self.row, &mut targets)?;
                }
            }
        }
        self.ls.add(&feats, &targets);
        Ok(())
    }

    fn finish(self, split: &LayerSplit) -> Result<Refit, CalibrateError> {
        let (rank, taps, n_out) = (self.rank, self.taps, self.responses.outputs);
        let features = self.features();
        let second = &split.second;
        let layer = self.layer;
        // The SVD's own second half in the same feature layout, to report the error it leaves.
        let svd_b = faer::Mat::<f64>::from_fn(features, n_out, |f, n| {
            if f < rank * taps {
                let (k, tap) = (f / taps, f % taps);
                second.data()[(n * rank + k) * taps + tap] as f64
            } else {
                self.old_bias.as_ref().map_or(0.0, |b| b[n] as f64)
            }
        });
        let ls = &self.ls;
        let energy = ls.target_energy().max(f64::MIN_POSITIVE);
        let error_before = ls.residual(&svd_b) / energy;
        // With too few samples per unknown the regression would fit the calibration set, not the
        // layer: the factorisation's own second half is kept.
        let samples = ls.count();
        if samples < MIN_SAMPLES_PER_FEATURE * features as u64 {
            let fit = LayerFit {
                name: layer.name.clone(),
                width: rank,
                error_before,
                error_after: error_before,
                refit: false,
                samples,
                features,
            };
            return Ok(Refit {
                second: second.clone(),
                bias: None,
                fit,
            });
        }
        let ridge = self.ridge;
        let fitted = ls.solve(ridge).map_err(|e| CalibrateError::Layer {
            layer: layer.name.clone(),
            message: e.to_string(),
        })?;
        let fit = LayerFit {
            name: layer.name.clone(),
            width: rank,
            error_before,
            error_after: ls.residual(&fitted) / energy,
            refit: true,
            samples,
            features,
        };
        let mut data_h = vec![0f32; second.len()];
        for n in 0..n_out {
            for k in 0..rank {
                for tap in 0..taps {
                    data_h[(n * rank + k) * taps + tap] = fitted[(k * taps + tap, n)] as f32;
                }
            }
        }
        let horizontal = Tensor::new(second.shape().to_vec(), data_h)?;
        let bias = if self.old_bias.is_some() {
            Some(Tensor::new(
                vec![n_out],
                (0..n_out).map(|n| fitted[(rank * taps, n)] as f32).collect(),
            )?)
        } else {
            None
        };
        Ok(Refit {
            second: horizontal,
            bias,
            fit,
        })
    }
}
