//! Fresh names that do not collide with the ones a model already uses.

use std::collections::HashSet;

/// The names taken so far; [`TakenNames::fresh`] hands out new ones.
#[derive(Clone, Debug, Default)]
pub(crate) struct TakenNames(HashSet<String>);

impl TakenNames {
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        TakenNames(names.into_iter().collect())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    /// Marks `name` as taken; false if it already was.
    pub fn insert(&mut self, name: String) -> bool {
        self.0.insert(name)
    }

    pub fn extend(&mut self, names: impl IntoIterator<Item = String>) {
        self.0.extend(names);
    }

    /// `base` if it is free, else `base_2`, `base_3`, ...; the result is taken.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.0.contains(&name) {
            k += 1;
            name = format!("{base}_{k}");
        }
        self.0.insert(name.clone());
        name
    }
}
