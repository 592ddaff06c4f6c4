//! Exact multiple-choice knapsack: pick one option per item, maximising the summed value with the
//! summed cost within a budget.
//!
//! Dynamic programming over items on Pareto-optimal partial solutions, with bounds. The bound for the
//! items not yet fixed is their linear-programming
//! relaxation (Sinha–Zoltners): each item's options reduced to the upper concave hull of
//! (cost, value), all hull segments of the remaining items taken greedily by slope, the last one
//! fractionally. For each suffix of items that bound is a concave piecewise-linear function of the
//! remaining budget, precomputed once and evaluated by binary search. Rank-selection instances
//! (concave log-energy curves, one "keep the layer" option) have a tiny relaxation gap, so almost
//! every partial solution is cut at once; an incumbent from rounding the relaxation starts the cuts.

/// One option: what it costs and what it is worth.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Choice {
    pub cost: u64,
    pub value: f64,
}

/// The optimum: for each item the index (into the item's options) of the chosen option.
#[derive(Clone, Debug, PartialEq)]
pub struct Solution {
    pub picks: Vec<usize>,
    pub cost: u64,
    pub value: f64,
    /// Extensions of partial solutions examined, to show how hard the instance was.
    pub nodes: u64,
}

struct Item {
    /// Pareto-optimal options, cost and value both strictly increasing: (cost, value, original index).
    options: Vec<(u64, f64, usize)>,
}

/// Upper bound on the value of a suffix of items as a function of the budget left for them.
struct SuffixBound {
    base_cost: u64,
    base_value: f64,
    /// Hull segments sorted by slope, as cumulative (cost, value) breakpoints after the base.
    cum_cost: Vec<u64>,
    cum_value: Vec<f64>,
}

impl SuffixBound {
    /// Slope of the relaxation at `budget`: the value of one more unit of cost (0 past the hull).
    fn marginal_value(&self, budget: u64) -> f64 {
        let extra = budget.saturating_sub(self.base_cost);
        let i = self.cum_cost.partition_point(|&c| c <= extra);
        if i >= self.cum_cost.len() {
            return 0.0;
        }
        let (c0, v0) = if i == 0 {
            (0, 0.0)
        } else {
            (self.cum_cost[i - 1], self.cum_value[i - 1])
        };
        (self.cum_value[i] - v0) / (self.cum_cost[i] - c0) as f64
    }

    fn eval(&self, budget: u64) -> f64 {
        if budget < self.base_cost {
            return f64::NEG_INFINITY;
        }
        let extra = budget - self.base_cost;
        // First breakpoint whose cumulative cost exceeds the extra budget.
        let i = self.cum_cost.partition_point(|&c| c <= extra);
        let (c0, v0) = if i == 0 {
            (0, 0.0)
        } else {
            (self.cum_cost[i - 1], self.cum_value[i - 1])
        };
        let mut v = self.base_value + v0;
        if i < self.cum_cost.len() {
            let (dc, dv) = (self.cum_cost[i] - c0, self.cum_value[i] - v0);
            v += dv * (extra - c0) as f64 / dc as f64;
        }
        v
    }
}

/// Indices of the options on the upper concave hull of (cost, value), cheapest first.
fn hull_points(options: &[(u64, f64, usize)]) -> Vec<usize> {
    let mut hull: Vec<usize> = Vec::with_capacity(options.len());
    for (k, &(c, v, _)) in options.iter().enumerate() {
        while hull.len() >= 2 {
            let (c1, v1, _) = options[hull[hull.len() - 2]];
            let (c2, v2, _) = options[hull[hull.len() - 1]];
            // Drop the middle point when it lies on or below the chord from (c1,v1) to (c,v).
            if (v2 - v1) * (c - c1) as f64 <= (v - v1) * (c2 - c1) as f64 {
                hull.pop();
            } else {
                break;
            }
        }
        hull.push(k);
    }
    hull
}

/// Hull segments (cost increase, value increase), slopes decreasing.
fn hull_segments(options: &[(u64, f64, usize)]) -> Vec<(u64, f64)> {
    let hull = hull_points(options);
    hull.windows(2)
        .map(|w| (options[w[1]].0 - options[w[0]].0, options[w[1]].1 - options[w[0]].1))
        .collect()
}

fn suffix_bounds(items: &[Item]) -> Vec<SuffixBound> {
    let mut out = Vec::with_capacity(items.len() + 1);
    let mut segments: Vec<(u64, f64)> = Vec::new();
    let (mut base_cost, mut base_value) = (0u64, 0.0f64);
    out.push(SuffixBound {
        base_cost: 0,
        base_value: 0.0,
        cum_cost: vec![],
        cum_value: vec![],
    });
    for item in items.iter().rev() {
        base_cost += item.options[0].0;
        base_value += item.options[0].1;
        segments.extend(hull_segments(&item.options));
        segments.sort_by(|a, b| (b.1 * a.0 as f64).total_cmp(&(a.1 * b.0 as f64)));
        let (mut c, mut v) = (0u64, 0.0f64);
        let (cum_cost, cum_value) = segments
            .iter()
            .map(|&(dc, dv)| {
                c += dc;
                v += dv;
                (c, v)
            })
            .unzip();
        out.push(SuffixBound {
            base_cost,
            base_value,
            cum_cost,
            cum_value,
        });
    }
    out.reverse();
    out
}

/// Solves the problem exactly, or returns `None` when even the cheapest options exceed the budget.
/// Values must be finite.
pub fn solve(items: &[Vec<Choice>], budget: u64) -> Option<Solution> {
    let reduced: Vec<Item> = items
        .iter()
        .map(|opts| {
            let mut sorted: Vec<(u64, f64, usize)> =
                opts.iter().enumerate().map(|(i, c)| (c.cost, c.value, i)).collect();
            sorted.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
            let mut pareto: Vec<(u64, f64, usize)> = Vec::with_capacity(sorted.len());
            for o in sorted {
                if pareto.last().is_none_or(|last| o.1 > last.1) {
                    pareto.push(o);
                }
            }
            Item { options: pareto }
        })
        .collect();
    if reduced.iter().any(|i| i.options.is_empty()) {
        return None;
    }
    let min_cost: u64 = reduced.iter().map(|i| i.options[0].0).sum();
    if min_cost > budget {
        return None;
    }
    let bounds = suffix_bounds(&reduced);
    let incumbent = lp_rounding(&reduced, budget);
    let mut best_value: f64 = incumbent.iter().zip(&reduced).map(|(&k, it)| it.options[k].1).sum();
    let tolerance = |v: f64| v + 1e-12 * v.abs().max(1.0);

    // The relaxation's price of one unit of cost at the full budget: the slope of the hull segment
    // the greedy relaxation stops in. With it, `v - λc` summed over items plus `λ·budget` bounds any
    // completion (Lagrangian relaxation), in O(1) per option.
    let lambda = bounds[0].marginal_value(budget);
    let reduced_value = |&(c, v, _): &(u64, f64, usize)| v - lambda * c as f64;
    let by_reduced_value: Vec<Vec<usize>> = reduced
        .iter()
        .map(|item| {
            let mut order: Vec<usize> = (0..item.options.len()).collect();
            order.sort_by(|&a, &b| reduced_value(&item.options[b]).total_cmp(&reduced_value(&item.options[a])));
            order
        })
        .collect();
    let mut lagrange_suffix = vec![0.0; reduced.len() + 1];
    for i in (0..reduced.len()).rev() {
        let best = reduced[i]
            .options
            .iter()
            .map(reduced_value)
            .fold(f64::NEG_INFINITY, f64::max);
        lagrange_suffix[i] = lagrange_suffix[i + 1] + best;
    }

    // Dynamic programming over items on Pareto-optimal partial solutions (cost, value): a partial
    // solution is dropped when a cheaper one is at least as good (dominance) or when even the
    // relaxed completion of the remaining items cannot beat the incumbent (bound).
    let mut layers: Vec<Vec<State>> = Vec::with_capacity(reduced.len());
    let mut states = vec![State {
        cost: 0,
        value: 0.0,
        parent: usize::MAX,
        option: 0,
    }];
    let mut nodes = 0u64;
    for (depth, item) in reduced.iter().enumerate() {
        if depth + 1 == reduced.len() {
            // The last item: each partial solution takes the most valuable option that fits (Pareto
            // options are sorted by cost and value together), and only the best total matters.
            let mut best: Option<State> = None;
            for (p, s) in states.iter().enumerate() {
                nodes += 1;
                let left = budget - s.cost;
                let fits = item.options.partition_point(|o| o.0 <= left);
                if fits == 0 {
                    continue;
                }
                let (cost, value, _) = item.options[fits - 1];
                if s.value + value > tolerance(best_value) {
                    best_value = s.value + value;
                    best = Some(State {
                        cost: s.cost + cost,
                        value: s.value + value,
                        parent: p,
                        option: fits - 1,
                    });
                }
            }
            layers.push(std::mem::replace(&mut states, best.into_iter().collect()));
            break;
        }
        let rest = &bounds[depth + 1];
        let mut next: Vec<State> = Vec::new();
        for (p, s) in states.iter().enumerate() {
            // Options by decreasing reduced value: once the Lagrangian bound fails, it fails for
            // every option after it.
            let base = s.value + lambda * (budget - s.cost) as f64 + lagrange_suffix[depth + 1];
            for &k in &by_reduced_value[depth] {
                nodes += 1;
                let (cost, value, _) = item.options[k];
                if base + value - lambda * cost as f64 <= tolerance(best_value) {
                    break;
                }
                let Some(left) = budget.checked_sub(s.cost + cost) else {
                    continue;
                };
                let v = s.value + value;
                if v + rest.eval(left) <= tolerance(best_value) {
                    continue;
                }
                next.push(State {
                    cost: s.cost + cost,
                    value: v,
                    parent: p,
                    option: k,
                });
            }
        }
        next.sort_by(|a, b| a.cost.cmp(&b.cost).then(b.value.total_cmp(&a.value)));
        let mut pareto: Vec<State> = Vec::with_capacity(next.len());
        for st in next {
            if pareto.last().is_none_or(|last| st.value > last.value) {
                pareto.push(st);
            }
        }
        layers.push(std::mem::replace(&mut states, pareto));
        if states.is_empty() {
            break;
        }
    }
    let picks_reduced: Vec<usize> = match states.iter().max_by(|a, b| a.value.total_cmp(&b.value)) {
        // Final states survive only by beating the incumbent.
        Some(best) if layers.len() == reduced.len() => {
            // Walk the parents back from the best final state.
            let mut picks = vec![0; reduced.len()];
            let mut at = *best;
            for depth in (0..reduced.len()).rev() {
                picks[depth] = at.option;
                if depth > 0 {
                    at = layers[depth][at.parent];
                }
            }
            picks
        }
        // Every partial solution was cut: the incumbent is optimal.
        _ => incumbent,
    };
    let picks: Vec<usize> = picks_reduced
        .iter()
        .zip(&reduced)
        .map(|(&k, it)| it.options[k].2)
        .collect();
    let cost = picks.iter().zip(items).map(|(&k, opts)| opts[k].cost).sum();
    let value = picks.iter().zip(items).map(|(&k, opts)| opts[k].value).sum();
    Some(Solution {
        picks,
        cost,
        value,
        nodes,
    })
}

#[derive(Clone, Copy, Debug)]
struct State {
    cost: u64,
    value: f64,
    /// Index of the partial solution this one extends, in the previous item's list.
    parent: usize,
    /// Option chosen for the current item.
    option: usize,
}

/// A good feasible solution: the relaxation's greedy walk over hull segments, skipping any segment
/// that does not fit whole (and the rest of that item's hull).
fn lp_rounding(items: &[Item], budget: u64) -> Vec<usize> {
    let mut segments: Vec<(usize, usize, u64, f64)> = Vec::new();
    let hulls: Vec<Vec<usize>> = items.iter().map(|it| hull_points(&it.options)).collect();
    for (i, hull) in hulls.iter().enumerate() {
        for s in 1..hull.len() {
            let (a, b) = (items[i].options[hull[s - 1]], items[i].options[hull[s]]);
            segments.push((i, s, b.0 - a.0, b.1 - a.1));
        }
    }
    segments.sort_by(|a, b| (b.3 * a.2 as f64).total_cmp(&(a.3 * b.2 as f64)));
    let mut at: Vec<usize> = vec![0; items.len()];
    let mut left = budget - items.iter().map(|it| it.options[0].0).sum::<u64>();
    let mut blocked = vec![false; items.len()];
    for (i, s, dc, _) in segments {
        if blocked[i] || at[i] + 1 != s {
            continue;
        }
        if dc <= left {
            left -= dc;
            at[i] = s;
        } else {
            blocked[i] = true;
        }
    }
    let mut picks: Vec<usize> = at.iter().zip(&hulls).map(|(&s, h)| h[s]).collect();
    // Spend what is left on the most valuable affordable option of each item, in turn.
    for (i, item) in items.iter().enumerate() {
        let current = item.options[picks[i]].0;
        if let Some(k) = (picks[i]..item.options.len())
            .rev()
            .find(|&k| item.options[k].0 - current <= left)
        {
            left -= item.options[k].0 - current;
            picks[i] = k;
        }
    }
    picks
}
