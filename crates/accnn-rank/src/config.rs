//! `config.json`: the ranks of each decomposed layer, in the original accnn's schema
//! `{"conv_params": {"conv1_1": 5, ...}, "fc_params": {"fc6": 2048}}`.
//!
//! A convolution's value is the number of filters of its vertical half (`K` of `(K, C, kh, 1)`), a
//! fully-connected layer's the width of its reducing half. Layers not listed stay whole.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

/// Ranks keyed by layer name, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankConfig {
    pub conv_params: Vec<(String, usize)>,
    pub fc_params: Vec<(String, usize)>,
}

#[derive(Debug, thiserror::Error)]
pub enum RankConfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

impl RankConfig {
    /// Parses config JSON; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, RankConfigError> {
        let err = |message: String| RankConfigError::Format {
            path: path.to_path_buf(),
            message,
        };
        let root: Value = serde_json::from_str(text).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let obj = root
            .as_object()
            .ok_or_else(|| err("expected an object with conv_params and fc_params".into()))?;
        let mut config = RankConfig::default();
        for (key, value) in obj {
            let target = match key.as_str() {
                "conv_params" => &mut config.conv_params,
                "fc_params" => &mut config.fc_params,
                other => {
                    return Err(err(format!(
                        "unknown section '{other}' (expected conv_params, fc_params)"
                    )));
                }
            };
            let layers = value
                .as_object()
                .ok_or_else(|| err(format!("'{key}' must map layer names to ranks")))?;
            for (name, rank) in layers {
                let k = rank
                    .as_u64()
                    .and_then(|k| usize::try_from(k).ok())
                    .ok_or_else(|| err(format!("{key}.{name}: rank must be a non-negative integer, got {rank}")))?;
                if k == 0 {
                    return Err(err(format!(
                        "{key}.{name}: rank 0 would remove the layer; omit it to keep it whole"
                    )));
                }
                target.push((name.clone(), k));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (name, _) in config.conv_params.iter().chain(&config.fc_params) {
            if !seen.insert(name) {
                return Err(err(format!("layer '{name}' is listed twice")));
            }
        }
        Ok(config)
    }

    pub fn read(path: &Path) -> Result<Self, RankConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| RankConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Pretty JSON in the original schema, layers in the order given.
    pub fn to_json(&self) -> String {
        let section = |items: &[(String, usize)]| {
            Value::Object(
                items
                    .iter()
                    .map(|(n, k)| (n.clone(), Value::from(*k)))
                    .collect::<Map<_, _>>(),
            )
        };
        let mut root = Map::new();
        root.insert("conv_params".into(), section(&self.conv_params));
        root.insert("fc_params".into(), section(&self.fc_params));
        let mut text = serde_json::to_string_pretty(&Value::Object(root)).expect("JSON values serialise");
        text.push('\n');
        text
    }

    /// The rank given for `name`, in either section.
    pub fn rank_of(&self, name: &str) -> Option<usize> {
        self.conv_params
            .iter()
            .chain(&self.fc_params)
            .find(|(n, _)| n == name)
            .map(|(_, k)| *k)
    }
}
