//! Recording, while a build runs, how each snapshot it made or found can be
//! made again: a start snapshot plus layers (a [`Plan`] per snapshot, kept
//! by the [`Recorder`] the scheduler holds).

use crate::cache::layers::{LayerRef, LayerStack};
use crate::image::manifest::Descriptor;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// One ingredient of a recipe as the build knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// A layer of this build (the diff `parent` -> `name`).
    Layer(LayerRef),
    /// A blob on local disk (a base image layer).
    Blob(Descriptor, PathBuf),
}

/// How to make a snapshot: `start` (or empty) with `parts` applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The snapshot to start from.
    pub start: Option<String>,
    /// What to apply.
    pub parts: Vec<Part>,
}

/// The recipes of the snapshots one build made or found, by snapshot name.
/// Cheap: a map behind a mutex, filled as steps finish.
#[derive(Debug, Default)]
pub struct Recorder {
    pub(super) plans: Mutex<BTreeMap<String, Plan>>,
    pub(super) deps: Mutex<BTreeMap<String, Vec<String>>>,
}

impl Recorder {
    /// Note that snapshot `name` is `start` with `parts` applied (the first
    /// recipe noted for a name is kept).
    pub fn record(&self, name: &str, start: Option<&str>, parts: Vec<Part>) {
        let mut g = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name.to_string()).or_insert_with(|| Plan { start: start.map(str::to_string), parts });
    }

    /// Note the recipes a step's result implies: each of its layers is its
    /// parent plus that layer; a top snapshot with no recipe yet (a
    /// `COPY --link` tree, a downloaded source) is its whole tree as one layer.
    pub fn record_state(&self, st: &impl LayerStack) {
        let mut g = self.plans.lock().unwrap_or_else(|e| e.into_inner());
        for l in st.layers() {
            g.entry(l.name.clone()).or_insert_with(|| Plan { start: l.parent.clone(), parts: vec![Part::Layer(l.clone())] });
        }
        if let Some(top) = st.top() {
            if !top.starts_with("img-") && !g.contains_key(top) {
                let whole = LayerRef { name: top.to_string(), parent: None, label: None, origin: format!("snapshot {top}") };
                g.insert(top.to_string(), Plan { start: None, parts: vec![Part::Layer(whole)] });
            }
        }
    }

    /// Note that the step making snapshot `name` needed snapshots `deps`
    /// that its recipe does not name (the layers a `remove` dropped), so
    /// `mode=min` exports them too: the importing build passes through them.
    pub fn depend(&self, name: &str, deps: Vec<String>) {
        let mut g = self.deps.lock().unwrap_or_else(|e| e.into_inner());
        g.entry(name.to_string()).or_default().extend(deps);
    }

    /// A copy of the recipes.
    pub fn plans(&self) -> BTreeMap<String, Plan> {
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
