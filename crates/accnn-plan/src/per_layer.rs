//! Per-layer data keyed by layer, and selections of layers.
//!
//! Everything accnn computes per decomposable layer (factorisations, measured costs, calibration
//! statistics) is held in a [`PerLayer`] keyed by the layer's [`LayerId`], never in vectors that
//! must stay aligned by position; every choice of layers is a [`LayerSet`].

use std::fmt;

/// A decomposable layer of an [`crate::Analysis`]: its position among the analysis' layers, in
/// graph order. Ids of one analysis are `0..layers.len()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LayerId(pub usize);

impl LayerId {
    /// The position of the layer in [`crate::Analysis::layers`].
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for LayerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer #{}", self.0)
    }
}

/// A value for some of the layers of one analysis.
///
/// ```
/// use accnn_plan::{LayerId, PerLayer};
/// let mut energy = PerLayer::new();
/// energy.insert(LayerId(2), 0.9);
/// assert_eq!(energy.get(LayerId(2)), Some(&0.9));
/// assert_eq!(energy.get(LayerId(0)), None);
/// assert_eq!(energy.ids().collect::<Vec<_>>(), vec![LayerId(2)]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct PerLayer<T> {
    values: Vec<Option<T>>,
}

impl<T> Default for PerLayer<T> {
    fn default() -> Self {
        PerLayer { values: Vec::new() }
    }
}

impl<T> PerLayer<T> {
    /// No value for any layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of layer `id`, if it has one.
    pub fn get(&self, id: LayerId) -> Option<&T> {
        self.values.get(id.0).and_then(Option::as_ref)
    }

    /// The value of layer `id`, mutably.
    pub fn get_mut(&mut self, id: LayerId) -> Option<&mut T> {
        self.values.get_mut(id.0).and_then(Option::as_mut)
    }

    /// Sets the value of layer `id`, returning the one it replaces.
    pub fn insert(&mut self, id: LayerId, value: T) -> Option<T> {
        if self.values.len() <= id.0 {
            self.values.resize_with(id.0 + 1, || None);
        }
        self.values[id.0].replace(value)
    }

    /// Takes the value of layer `id` out.
    pub fn remove(&mut self, id: LayerId) -> Option<T> {
        self.values.get_mut(id.0).and_then(Option::take)
    }

    /// Whether layer `id` has a value.
    pub fn contains(&self, id: LayerId) -> bool {
        self.get(id).is_some()
    }

    /// The layers that have a value, in graph order.
    pub fn ids(&self) -> impl Iterator<Item = LayerId> + '_ {
        self.iter().map(|(id, _)| id)
    }

    /// `(layer, value)` pairs in graph order.
    pub fn iter(&self) -> impl Iterator<Item = (LayerId, &T)> + '_ {
        self.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (LayerId(i), v)))
    }

    /// The values, mutably, in graph order.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut T> + '_ {
        self.values.iter_mut().flatten()
    }

    /// How many layers have a value.
    pub fn len(&self) -> usize {
        self.values.iter().filter(|v| v.is_some()).count()
    }

    /// Whether no layer has a value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The layers that have a value, as a set.
    pub fn keys(&self) -> LayerSet {
        self.ids().collect()
    }
}

impl<T> FromIterator<(LayerId, T)> for PerLayer<T> {
    fn from_iter<I: IntoIterator<Item = (LayerId, T)>>(iter: I) -> Self {
        let mut out = PerLayer::new();
        for (id, v) in iter {
            out.insert(id, v);
        }
        out
    }
}

/// A selection of layers: the ones to factorise, to calibrate, to budget.
///
/// ```
/// use accnn_plan::{LayerId, LayerSet};
/// let set: LayerSet = [LayerId(3), LayerId(1)].into_iter().collect();
/// assert!(set.contains(LayerId(1)) && !set.contains(LayerId(2)));
/// assert_eq!(set.iter().collect::<Vec<_>>(), vec![LayerId(1), LayerId(3)]);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerSet {
    members: std::collections::BTreeSet<LayerId>,
}

impl LayerSet {
    /// No layer.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, id: LayerId) -> bool {
        self.members.insert(id)
    }

    pub fn contains(&self, id: LayerId) -> bool {
        self.members.contains(&id)
    }

    /// The members in graph order.
    pub fn iter(&self) -> impl Iterator<Item = LayerId> + '_ {
        self.members.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

impl FromIterator<LayerId> for LayerSet {
    fn from_iter<I: IntoIterator<Item = LayerId>>(iter: I) -> Self {
        LayerSet {
            members: iter.into_iter().collect(),
        }
    }
}
