//! `Sequential`: modules applied one after another.

use super::{Kind, Module};
use crate::error::Result;
use crate::tensor::Tensor;

/// Named modules run in order (PyTorch `nn.Sequential`, with an
/// `OrderedDict` when the names are given). Parameter names are
/// `child_name.parameter_name`.
#[derive(Default)]
pub struct Sequential {
    children: Vec<(String, Box<dyn Module>)>,
}

impl Sequential {
    pub fn new() -> Sequential {
        Sequential::default()
    }

    /// Appends `module` under `name`.
    pub fn add(mut self, name: impl Into<String>, module: impl Module + 'static) -> Sequential {
        self.push(name, module);
        self
    }

    /// Appends `module` under `name`.
    pub fn push(&mut self, name: impl Into<String>, module: impl Module + 'static) {
        self.children.push((name.into(), Box::new(module)));
    }

    /// Appends `module` named by its position, as `nn.Sequential(a, b)` does.
    pub fn push_indexed(&mut self, module: impl Module + 'static) {
        let name = self.children.len().to_string();
        self.push(name, module);
    }

    pub fn len(&self) -> usize {
        self.children.len()
    }

    pub fn is_empty(&self) -> bool {
        self.children.is_empty()
    }
}

impl Module for Sequential {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut y = x.clone();
        for (_, m) in &self.children {
            y = m.forward(&y)?;
        }
        Ok(y)
    }

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(&str, &Tensor, Kind)) {
        for (name, m) in &self.children {
            m.visit(&format!("{prefix}{name}."), f);
        }
    }

    fn set_training(&mut self, training: bool) {
        for (_, m) in &mut self.children {
            m.set_training(training);
        }
    }
}
