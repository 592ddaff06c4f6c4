//! The library's errors, worded for the flags that caused them: one line each.

use accnn::Error;
use accnn::PlanError;
use anyhow::anyhow;

/// `e` as the one-line message the CLI prints, naming the flag where a flag was the cause.
pub fn explain(e: Error) -> anyhow::Error {
    match e {
        Error::Plan(PlanError::InvalidRatio { ratio }) => {
            anyhow!("--ratio must be a number of at least 1, got {ratio}")
        }
        Error::Plan(PlanError::InvalidAlignment) => anyhow!("--align must be at least 1"),
        Error::Plan(PlanError::DestinationFormat { dest, format }) => {
            anyhow!("--save-model {dest}: {}", format.destination_rule())
        }
        Error::Plan(PlanError::Conversion { dest }) => anyhow!(
            "--save-format mxnet: the model was read from ONNX and is written as ONNX; accnn does not convert it to MXNet (--save-model {dest})"
        ),
        Error::Plan(PlanError::WouldOverwrite { dest, input }) => anyhow!(
            "--save-model {dest} would overwrite the input file {}; choose another name",
            input.display()
        ),
        Error::ConfigClash {
            path,
            clash,
            input: true,
            ..
        } if clash != path => anyhow!("--config-out {} would overwrite {}", path.display(), clash.display()),
        Error::ConfigClash { clash, input: true, .. } => {
            anyhow!("--config-out would overwrite the input file {}", clash.display())
        }
        Error::ConfigClash { path, .. } => {
            anyhow!(
                "--config-out {} is one of the model files being written",
                path.display()
            )
        }
        Error::NoSuchLayer { name } => {
            anyhow!("--layer '{name}': the model has no convolution or fully-connected layer of that name")
        }
        Error::LayerKind { name, kind } => anyhow!("--layer '{name}' is a {kind:?} layer; use the other subcommand"),
        Error::LayerWidth(e) => anyhow::Error::new(e).context("--K"),
        Error::SymbolicInput { spec, dims } => anyhow!(
            "model '{spec}': its input dimensions {} are symbolic and the model records no size for them; give --data-shape C,H,W",
            dims.join(", ")
        ),
        Error::NoCalibrationImages => anyhow!("--calib-samples must be positive"),
        Error::CalibrationData(e) => anyhow!("--calibrate {:#}", anyhow::Error::new(e)),
        Error::Onnxruntime(e) => anyhow!("--runtime onnxruntime: {e}"),
        other => anyhow::Error::new(other),
    }
}
