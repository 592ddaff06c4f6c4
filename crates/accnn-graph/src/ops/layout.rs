//! Index arithmetic of the operators that move values without computing them (transpose, slice,
//! gather, concatenation, broadcasting), generic over the element type: the same code folds integer
//! shape tensors at import and evaluates float tensors in the reference interpreter.
//!
//! Arrays are row-major: `data.len()` is the product of `dims` (callers guarantee it).

use super::context::strides;
use super::resolve_axis;

/// Calls `f` with each multi-index of `dims` in row-major order.
pub(crate) fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize])) {
    if dims.contains(&0) {
        return;
    }
    let mut index = vec![0usize; dims.len()];
    loop {
        f(&index);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            index[d] += 1;
            if index[d] < dims[d] {
                break;
            }
            index[d] = 0;
        }
    }
}

/// `data` with its axes permuted: output axis `k` is input axis `perm[k]`. `None` when `perm` is not
/// a permutation of the axes.
pub fn transpose<T: Copy>(dims: &[usize], data: &[T], perm: &[usize]) -> Option<(Vec<usize>, Vec<T>)> {
    let mut seen = vec![false; dims.len()];
    if perm.len() != dims.len()
        || perm
            .iter()
            .any(|&p| p >= dims.len() || std::mem::replace(&mut seen[p], true))
    {
        return None;
    }
    let out_dims: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let st = strides(dims);
    let mut out = Vec::with_capacity(data.len());
    for_each_index(&out_dims, |idx| {
        let offset: usize = idx.iter().zip(perm).map(|(&i, &p)| i * st[p]).sum();
        out.push(data[offset]);
    });
    Some((out_dims, out))
}

/// One axis of a slice: the first element taken, the step between taken elements, how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SliceAxis {
    pub start: i64,
    pub step: i64,
    pub count: usize,
}

/// The ranges ONNX `Slice` takes from an array of `dims`: `starts`/`ends` (negative from the end,
/// clamped), on `axes` (default all, negative from the end), with `steps` (default 1, never 0).
pub fn slice_axes(
    dims: &[usize],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> Result<Vec<SliceAxis>, String> {
    let mut ranges: Vec<SliceAxis> = dims
        .iter()
        .map(|&d| SliceAxis {
            start: 0,
            step: 1,
            count: d,
        })
        .collect();
    let all: Vec<i64> = (0..starts.len() as i64).collect();
    let axes = axes.unwrap_or(&all);
    if starts.len() != ends.len() || axes.len() != starts.len() || steps.is_some_and(|s| s.len() != starts.len()) {
        return Err(format!(
            "starts {starts:?}, ends {ends:?}, axes {axes:?} and steps {steps:?} differ in length"
        ));
    }
    for (k, &axis) in axes.iter().enumerate() {
        let a = resolve_axis(axis, dims.len()).ok_or_else(|| format!("slice axis {axis} is out of range"))?;
        let dim = dims[a] as i64;
        let step = steps.map_or(1, |s| s[k]);
        if step == 0 {
            return Err("slice step 0".into());
        }
        let resolve = |v: i64| if v < 0 { v.saturating_add(dim) } else { v };
        let (start, end) = (resolve(starts[k]), resolve(ends[k]));
        let (start, end) = if step > 0 {
            (start.clamp(0, dim), end.clamp(0, dim))
        } else {
            (start.clamp(0, dim - 1), end.clamp(-1, dim - 1))
        };
        let span = if step > 0 { end - start } else { start - end };
        let count = if span <= 0 {
            0
        } else {
            (span + step.abs() - 1) / step.abs()
        };
        ranges[a] = SliceAxis {
            start,
            step,
            count: count as usize,
        };
    }
    Ok(ranges)
}

/// The elements `ranges` (one per axis, from [`slice_axes`]) select.
pub fn slice<T: Copy>(dims: &[usize], data: &[T], ranges: &[SliceAxis]) -> (Vec<usize>, Vec<T>) {
    let out_dims: Vec<usize> = ranges.iter().map(|r| r.count).collect();
    let st = strides(dims);
    let mut out = Vec::with_capacity(out_dims.iter().product());
    for_each_index(&out_dims, |idx| {
        let offset: i64 = idx
            .iter()
            .zip(ranges)
            .zip(&st)
            .map(|((&i, r), &s)| (r.start + i as i64 * r.step) * s as i64)
            .sum();
        out.push(data[offset as usize]);
    });
    (out_dims, out)
}

/// ONNX `Gather`: along `axis`, the slices at `indices` (negative from the end), shaped
/// `dims[..axis] ++ index_dims ++ dims[axis + 1..]`. `None` when an index is out of range.
pub fn gather<T: Copy>(
    dims: &[usize],
    data: &[T],
    axis: usize,
    indices: &[i64],
    index_dims: &[usize],
) -> Option<(Vec<usize>, Vec<T>)> {
    let n = dims[axis] as i64;
    let picked: Vec<usize> = indices
        .iter()
        .map(|&i| {
            let i = if i < 0 { i + n } else { i };
            (0..n).contains(&i).then_some(i as usize)
        })
        .collect::<Option<_>>()?;
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * picked.len() * inner);
    for o in 0..outer {
        for &i in &picked {
            let base = (o * dims[axis] + i) * inner;
            out.extend_from_slice(&data[base..base + inner]);
        }
    }
    let mut out_dims = dims[..axis].to_vec();
    out_dims.extend_from_slice(index_dims);
    out_dims.extend_from_slice(&dims[axis + 1..]);
    Some((out_dims, out))
}

/// `parts` joined along `axis`; `None` when their other dimensions differ.
pub fn concat<T: Copy>(parts: &[(&[usize], &[T])], axis: usize) -> Option<(Vec<usize>, Vec<T>)> {
    let (first, _) = parts.first()?;
    let mut out_dims = first.to_vec();
    out_dims[axis] = 0;
    for (d, _) in parts {
        if d.len() != first.len()
            || d.iter()
                .zip(first.iter())
                .enumerate()
                .any(|(k, (a, b))| k != axis && a != b)
        {
            return None;
        }
        out_dims[axis] += d[axis];
    }
    let outer: usize = first[..axis].iter().product();
    let mut out = Vec::with_capacity(out_dims.iter().product());
    for o in 0..outer {
        for (d, data) in parts {
            let chunk: usize = d[axis..].iter().product();
            out.extend_from_slice(&data[o * chunk..(o + 1) * chunk]);
        }
    }
    Some((out_dims, out))
}

/// `f` applied elementwise to `a` and `b` broadcast together (numpy rules); `None` when the shapes
/// do not broadcast.
pub fn broadcast_map<A: Copy, B: Copy, U>(
    (a_dims, a): (&[usize], &[A]),
    (b_dims, b): (&[usize], &[B]),
    f: impl Fn(A, B) -> U,
) -> Option<(Vec<usize>, Vec<U>)> {
    let out_dims = super::elementwise::broadcast("", a_dims, b_dims).ok()?;
    let source = |dims: &[usize]| -> Vec<usize> {
        // Per output axis, the stride in the operand (0 where it is broadcast).
        let st = strides(dims);
        let off = out_dims.len() - dims.len();
        (0..out_dims.len())
            .map(|k| if k < off || dims[k - off] == 1 { 0 } else { st[k - off] })
            .collect()
    };
    let (sa, sb) = (source(a_dims), source(b_dims));
    let mut out = Vec::with_capacity(out_dims.iter().product());
    for_each_index(&out_dims, |idx| {
        let (mut ia, mut ib) = (0, 0);
        for (k, &i) in idx.iter().enumerate() {
            ia += i * sa[k];
            ib += i * sb[k];
        }
        out.push(f(a[ia], b[ib]));
    });
    Some((out_dims, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_moves_each_element_to_its_permuted_index() {
        let dims = [2, 3, 4];
        let data: Vec<usize> = (0..24).collect();
        let (out_dims, out) = transpose(&dims, &data, &[2, 0, 1]).expect("a permutation");
        assert_eq!(out_dims, vec![4, 2, 3]);
        for (flat, &v) in out.iter().enumerate() {
            let (k, i, j) = (flat / 6, (flat / 3) % 2, flat % 3);
            assert_eq!(v, i * 12 + j * 4 + k);
        }
        assert!(transpose(&dims, &data, &[0, 0, 1]).is_none());
    }

    #[test]
    fn slices_follow_python_semantics() {
        let data: Vec<i64> = (0..10).collect();
        let cases: [(i64, i64, i64); 5] = [(1, 8, 3), (-3, i64::MAX, 1), (8, 1, -2), (-1, i64::MIN, -1), (5, 2, 1)];
        for (start, end, step) in cases {
            let r = slice_axes(&[10], &[start], &[end], None, Some(&[step])).expect("valid");
            let (_, got) = slice(&[10], &data, &r);
            // Python's own slicing, clamped the same way.
            let norm = |v: i64, lo: i64, hi: i64| {
                if v < 0 {
                    (v.saturating_add(10)).max(lo)
                } else {
                    v.min(hi)
                }
            };
            let mut want = Vec::new();
            if step > 0 {
                let (mut i, e) = (norm(start, 0, 10), norm(end, 0, 10));
                while i < e {
                    want.push(i);
                    i += step;
                }
            } else {
                let (mut i, e) = (norm(start, -1, 9), norm(end, -1, 9));
                while i > e {
                    want.push(i);
                    i += step;
                }
            }
            assert_eq!(got, want, "[{start}:{end}:{step}]");
        }
    }

    #[test]
    fn gather_concat_and_broadcast_agree_with_hand_computed_values() {
        let data: Vec<i64> = (0..6).collect();
        let (d, g) = gather(&[2, 3], &data, 1, &[2, -3], &[2]).expect("in range");
        assert_eq!((d, g), (vec![2, 2], vec![2, 0, 5, 3]));
        assert!(gather(&[2, 3], &data, 1, &[3], &[1]).is_none());
        let (d, c) = concat(&[(&[2, 1][..], &[9, 8][..]), (&[2, 2][..], &[1, 2, 3, 4][..])], 1).expect("fits");
        assert_eq!((d, c), (vec![2, 3], vec![9, 1, 2, 8, 3, 4]));
        let (d, s) = broadcast_map((&[2, 1], &[10, 20]), (&[3], &[1, 2, 3]), |a, b| a + b).expect("broadcasts");
        assert_eq!((d, s), (vec![2, 3], vec![11, 12, 13, 21, 22, 23]));
        assert!(broadcast_map((&[2], &[1, 2]), (&[3], &[1, 2, 3]), |a: i64, b: i64| a + b).is_none());
    }
}
