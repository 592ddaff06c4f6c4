//! Model files in the formats accnn reads and writes: MXNet checkpoints and ONNX.
//!
//! A model is written back in the format it came in by default: an MXNet prefix gives
//! `NEW-symbol.json` + `NEW-0001.params`, an ONNX file gives `NEW.onnx` (plus `NEW.onnx.data` when the
//! original kept its weights in an external file or the new model would pass protobuf's 2 GiB
//! limit). A model read from an MXNet checkpoint can also be written as a new ONNX model
//! ([`accnn_graph::onnx::encode_standalone`]): how a user leaves MXNet, and how onnxruntime times it.

use std::path::{Path, PathBuf};

use accnn_graph::Model;
use accnn_graph::io::{FileContent, same_file};
use accnn_graph::mxnet::{self, CheckpointPaths};
use accnn_graph::onnx::{self, OnnxSource};

use crate::Error;

/// The file formats accnn reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelFormat {
    /// An MXNet checkpoint: `PREFIX-symbol.json` and `PREFIX-EPOCH.params`.
    Mxnet,
    /// An ONNX file.
    Onnx,
}

impl ModelFormat {
    /// Why a destination of the other format is refused (`self` is the format being written).
    pub fn destination_rule(self) -> &'static str {
        match self {
            ModelFormat::Mxnet => {
                "the model is written as an MXNet checkpoint: give a prefix (or --save-format onnx and a path ending in .onnx)"
            }
            ModelFormat::Onnx => "the model is written as ONNX: give a path ending in .onnx",
        }
    }

    /// The format's name as the `--save-format` flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            ModelFormat::Mxnet => "mxnet",
            ModelFormat::Onnx => "onnx",
        }
    }
}

/// Where a model came from, with what writing it back needs.
pub enum ModelSource {
    Mxnet { prefix: String, paths: CheckpointPaths },
    Onnx { path: PathBuf, source: Box<OnnxSource> },
}

impl ModelSource {
    /// The format the model was read in, and is written back in.
    pub fn format(&self) -> ModelFormat {
        match self {
            ModelSource::Mxnet { .. } => ModelFormat::Mxnet,
            ModelSource::Onnx { .. } => ModelFormat::Onnx,
        }
    }
}

/// A model read from disk.
pub struct ModelFile {
    pub model: Model,
    pub source: ModelSource,
    /// The input shape the file declares (without the batch), if it does.
    pub declared_shape: Option<Vec<usize>>,
    /// The input dimensions the file leaves symbolic (ONNX `dim_param`s), when it declares no shape.
    pub symbolic_dims: Vec<String>,
}

/// Whether `spec` names an ONNX file rather than an MXNet prefix.
pub fn is_onnx(spec: &str) -> bool {
    Path::new(spec)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

impl ModelFile {
    /// Reads an ONNX file (`*.onnx`) or an MXNet checkpoint (`PREFIX` with `epoch`).
    /// `data_shape` (batch first) is needed only by ONNX layers with `auto_pad = SAME_*` when the
    /// model's input size is symbolic.
    pub fn open(spec: &str, epoch: u32, data_shape: Option<&[usize]>) -> Result<Self, Error> {
        if is_onnx(spec) {
            let path = PathBuf::from(spec);
            let read = onnx::read_onnx(&path, data_shape)?;
            return Ok(Self::of_onnx(path, read));
        }
        let model = mxnet::load_checkpoint(spec, epoch)?;
        let data = model.data_input()?;
        let declared_shape = model.graph.nodes[data]
            .attrs
            .get("__shape__")
            .and_then(|s| mxnet::parse_tuple_shape(s))
            .map(|s| s.get(1..).unwrap_or(&[]).to_vec());
        Ok(ModelFile {
            model,
            source: ModelSource::Mxnet {
                prefix: spec.to_string(),
                paths: CheckpointPaths::new(spec, epoch),
            },
            declared_shape,
            // An MXNet symbol declares no shape at all: the original tool's 3x224x224 applies.
            symbolic_dims: Vec::new(),
        })
    }

    /// Decodes the bytes of an ONNX file called `name` in messages (the model exists in memory only;
    /// external data files are looked for beside `name`).
    pub fn from_onnx_bytes(name: &str, bytes: Vec<u8>, data_shape: Option<&[usize]>) -> Result<Self, Error> {
        let path = PathBuf::from(name);
        let read = onnx::decode_onnx_owned(bytes, &path, data_shape)?;
        Ok(Self::of_onnx(path, read))
    }

    fn of_onnx(path: PathBuf, read: onnx::OnnxModel) -> Self {
        let declared_shape = onnx::declared_input_shape(&read.source);
        let symbolic_dims = onnx::symbolic_input_dims(&read.source);
        ModelFile {
            model: read.model,
            source: ModelSource::Onnx {
                path,
                source: Box::new(read.source),
            },
            declared_shape,
            symbolic_dims,
        }
    }

    /// The files the model was read from (the ONNX external data file is not listed).
    pub fn input_files(&self) -> Vec<PathBuf> {
        match &self.source {
            ModelSource::Mxnet { paths, .. } => vec![paths.symbol.clone(), paths.params.clone()],
            ModelSource::Onnx { path, .. } => vec![path.clone()],
        }
    }

    /// What the user called the model.
    pub fn name(&self) -> String {
        match &self.source {
            ModelSource::Mxnet { prefix, .. } => prefix.clone(),
            ModelSource::Onnx { path, .. } => path.display().to_string(),
        }
    }
}

/// A model's files, ready to be written together (with
/// [`accnn_graph::io::write_contents_atomically`]).
pub struct EncodedModel<'m> {
    pub files: Vec<(PathBuf, ModelBytes<'m>)>,
}

/// One file of an [`EncodedModel`].
pub enum ModelBytes<'m> {
    Bytes(Vec<u8>),
    /// MXNet weights, encoded while being written rather than held twice in memory.
    MxnetParams(mxnet::ParamsFile<'m>),
    /// An `.onnx` file, encoded while being written.
    Onnx(Box<onnx::OnnxMessage>),
}

impl ModelBytes<'_> {
    pub fn content(&self) -> FileContent<'_> {
        match self {
            ModelBytes::Bytes(b) => FileContent::Bytes(b),
            ModelBytes::MxnetParams(p) => FileContent::Streamed(p),
            ModelBytes::Onnx(m) => FileContent::Streamed(m.as_ref()),
        }
    }
}

impl EncodedModel<'_> {
    pub fn paths(&self) -> Vec<&Path> {
        self.files.iter().map(|(p, _)| p.as_path()).collect()
    }

    /// Each file with its contents, as [`accnn_graph::io::write_contents_atomically`] takes them.
    pub fn contents(&self) -> Vec<(&Path, FileContent<'_>)> {
        self.files.iter().map(|(p, b)| (p.as_path(), b.content())).collect()
    }
}

/// The files a model from `source` saved as `dest` in `format` may occupy, checked against `inputs`
/// (the files it was read from, or any other file that must survive): a clear error instead of an
/// overwrite, or of a conversion accnn does not make (ONNX to MXNet).
pub fn check_destination(
    source: &ModelSource,
    dest: &str,
    format: ModelFormat,
    inputs: &[PathBuf],
) -> Result<Vec<PathBuf>, Error> {
    if (source.format(), format) == (ModelFormat::Onnx, ModelFormat::Mxnet) {
        return Err(Error::Conversion { dest: dest.to_string() });
    }
    let targets = match format {
        ModelFormat::Mxnet => {
            if is_onnx(dest) {
                return Err(Error::DestinationFormat {
                    dest: dest.to_string(),
                    format,
                });
            }
            let paths = CheckpointPaths::new(dest, 1);
            vec![paths.symbol, paths.params]
        }
        ModelFormat::Onnx => {
            if !is_onnx(dest) {
                return Err(Error::DestinationFormat {
                    dest: dest.to_string(),
                    format,
                });
            }
            let path = PathBuf::from(dest);
            let data = path.with_file_name(format!("{}.data", file_name(&path)));
            vec![path, data]
        }
    };
    for target in &targets {
        if let Some(input) = inputs.iter().find(|i| same_file(target, i)) {
            return Err(Error::WouldOverwrite {
                dest: dest.to_string(),
                input: input.clone(),
            });
        }
    }
    Ok(targets)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where and how a model is saved: a destination in a format, and the input shape (batch first) a
/// new ONNX model declares.
#[derive(Clone, Copy, Debug)]
pub struct SaveAs<'a> {
    /// An MXNet prefix, or an `.onnx` path.
    pub dest: &'a str,
    pub format: ModelFormat,
    pub data_shape: &'a [usize],
}

/// The files of `model`, read from `source`, written as `save` says, refusing any that would
/// overwrite one of `inputs`.
pub fn encode_model<'m>(
    source: &ModelSource,
    model: &'m Model,
    save: SaveAs<'_>,
    inputs: &[PathBuf],
) -> Result<EncodedModel<'m>, Error> {
    check_destination(source, save.dest, save.format, inputs)?;
    let path = PathBuf::from(save.dest);
    let data_name = format!("{}.data", file_name(&path));
    let weight_bytes: usize = model.args.values().map(|t| t.len() * 4).sum();
    let past_limit = weight_bytes > (1 << 30) + (1 << 29);
    let onnx_files = |encoded: onnx::OnnxFiles| {
        let mut files = vec![(path.clone(), ModelBytes::Onnx(Box::new(encoded.model)))];
        if let Some(data) = encoded.data {
            files.push((path.with_file_name(&data_name), ModelBytes::Bytes(data)));
        }
        files
    };
    let files = match (source, save.format) {
        (_, ModelFormat::Mxnet) => {
            let paths = CheckpointPaths::new(save.dest, 1);
            vec![
                (
                    paths.symbol,
                    ModelBytes::Bytes(mxnet::symbol_json(&model.graph).into_bytes()),
                ),
                (
                    paths.params,
                    ModelBytes::MxnetParams(mxnet::ParamsFile {
                        args: &model.args,
                        aux: &model.aux,
                    }),
                ),
            ]
        }
        (ModelSource::Onnx { source, .. }, ModelFormat::Onnx) => {
            let external = source.had_external_data() || past_limit;
            onnx_files(onnx::onnx_files(source, model, external.then_some(data_name.as_str()))?)
        }
        (ModelSource::Mxnet { .. }, ModelFormat::Onnx) => onnx_files(onnx::standalone_files(
            model,
            save.data_shape,
            past_limit.then_some(data_name.as_str()),
        )?),
    };
    Ok(EncodedModel { files })
}
