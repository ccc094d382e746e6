//! `wasi:nn` for Sandpiper guests: owned tensors, named outputs, and the
//! error type, plus (on the guest target) graphs and execution contexts.
//!
//! The tensor contract itself (names, types, what each `compute` does) is
//! `wit/nn-protocol.md`. The types here are plain Rust so that code driving a
//! model can be written against them and unit-tested off-wasm with a fake.

use std::fmt;

/// Why a `wasi:nn` call failed, mirroring `wasi:nn/errors.error-code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    InvalidEncoding,
    Timeout,
    RuntimeError,
    UnsupportedOperation,
    TooLarge,
    NotFound,
    Security,
    Unknown,
}

/// A failed `wasi:nn` call (or a reply that breaks the tensor contract).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NnError {
    pub code: ErrorCode,
    /// The backend's own description (`error.data()`), or ours.
    pub message: String,
}

impl NnError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// A reply that does not match `nn-protocol.md`: a host bug, not the client's.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::RuntimeError, message)
    }
}

impl fmt::Display for NnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wasi:nn {:?}: {}", self.code, self.message)
    }
}

impl std::error::Error for NnError {}

/// The 500 for a served model that failed: "The model `m` {what}: {e}".
pub fn model_failed(model: &str, what: &str, e: &NnError) -> crate::ApiError {
    crate::ApiError::server_error(format!("The model `{model}` {what}: {e}"))
}

/// Element type of a tensor (`wasi:nn/tensor.tensor-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    Fp16,
    Fp32,
    Fp64,
    Bf16,
    U8,
    I32,
    I64,
}

/// An owned tensor: dimensions, element type and little-endian data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    pub dims: Vec<u32>,
    pub ty: TensorType,
    pub data: Vec<u8>,
}

impl Tensor {
    /// A `U8 [n]` tensor of raw bytes (UTF-8 text or JSON, per the protocol).
    pub fn bytes(data: impl Into<Vec<u8>>) -> Self {
        let data = data.into();
        Self {
            dims: vec![data.len() as u32],
            ty: TensorType::U8,
            data,
        }
    }

    /// An `I32 [k]` tensor of token ids, little-endian.
    pub fn i32s(values: &[i32]) -> Self {
        Self {
            dims: vec![values.len() as u32],
            ty: TensorType::I32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Reads an `I32` tensor back as values.
    pub fn to_i32s(&self) -> Result<Vec<i32>, NnError> {
        if self.ty != TensorType::I32 || !self.data.len().is_multiple_of(4) {
            return Err(NnError::protocol(format!(
                "expected an I32 tensor, got {:?} with {} bytes",
                self.ty,
                self.data.len()
            )));
        }
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// An `FP32 [k]` tensor, little-endian.
    pub fn f32s(values: &[f32]) -> Self {
        Self {
            dims: vec![values.len() as u32],
            ty: TensorType::Fp32,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }

    /// Reads an `FP32` tensor back as values.
    pub fn to_f32s(&self) -> Result<Vec<f32>, NnError> {
        if self.ty != TensorType::Fp32 || !self.data.len().is_multiple_of(4) {
            return Err(NnError::protocol(format!(
                "expected an FP32 tensor, got {:?} with {} bytes",
                self.ty,
                self.data.len()
            )));
        }
        Ok(self
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// Takes the bytes of a `U8` tensor.
    pub fn into_bytes(self) -> Result<Vec<u8>, NnError> {
        if self.ty != TensorType::U8 {
            return Err(NnError::protocol(format!(
                "expected a U8 tensor, got {:?}",
                self.ty
            )));
        }
        Ok(self.data)
    }
}

/// The named tensors one `compute` returned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs(pub Vec<(String, Tensor)>);

impl Outputs {
    /// Removes and returns the output called `name`; its absence breaks the
    /// protocol, so it is an error rather than an `Option`.
    pub fn take(&mut self, name: &str) -> Result<Tensor, NnError> {
        let at = self
            .0
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| NnError::protocol(format!("compute returned no `{name}` output")))?;
        Ok(self.0.swap_remove(at).1)
    }

    /// Turns a protocol-level failure into an `Err`.
    ///
    /// wasmtime-wasi-nn flattens every backend failure into a `runtime-error`
    /// whose message the guest cannot read, so errors a guest can act on
    /// arrive as a *successful* compute whose only output is `error`: U8
    /// JSON `{"code": "...", "message": "..."}` (`wit/nn-protocol.md`). The
    /// codes map onto wasi-nn's: `context_length_exceeded` → `TooLarge`,
    /// `invalid_tokens` → `InvalidArgument`, anything else → `RuntimeError`
    /// (with the code kept in the message).
    pub fn into_result(mut self) -> Result<Self, NnError> {
        let Some(at) = self.0.iter().position(|(n, _)| n == "error") else {
            return Ok(self);
        };
        let tensor = self.0.swap_remove(at).1;
        let reply: serde_json::Value = serde_json::from_slice(&tensor.data).unwrap_or_default();
        let code = reply["code"].as_str().unwrap_or("unknown");
        let message = reply["message"].as_str().unwrap_or("").to_string();
        Err(match code {
            "context_length_exceeded" => NnError::new(ErrorCode::TooLarge, message),
            "invalid_tokens" => NnError::new(ErrorCode::InvalidArgument, message),
            other => NnError::new(ErrorCode::RuntimeError, format!("{other}: {message}")),
        })
    }
}

#[cfg(target_arch = "wasm32")]
pub use guest::{Context, Graph};

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::{ErrorCode, NnError, Outputs, Tensor, TensorType};
    use crate::bindings::wasi::nn::{errors, graph, inference, tensor};

    impl From<errors::Error> for NnError {
        fn from(e: errors::Error) -> Self {
            let code = match e.code() {
                errors::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
                errors::ErrorCode::InvalidEncoding => ErrorCode::InvalidEncoding,
                errors::ErrorCode::Timeout => ErrorCode::Timeout,
                errors::ErrorCode::RuntimeError => ErrorCode::RuntimeError,
                errors::ErrorCode::UnsupportedOperation => ErrorCode::UnsupportedOperation,
                errors::ErrorCode::TooLarge => ErrorCode::TooLarge,
                errors::ErrorCode::NotFound => ErrorCode::NotFound,
                errors::ErrorCode::Security => ErrorCode::Security,
                errors::ErrorCode::Unknown => ErrorCode::Unknown,
            };
            NnError::new(code, e.data())
        }
    }

    fn to_wit(ty: TensorType) -> tensor::TensorType {
        match ty {
            TensorType::Fp16 => tensor::TensorType::Fp16,
            TensorType::Fp32 => tensor::TensorType::Fp32,
            TensorType::Fp64 => tensor::TensorType::Fp64,
            TensorType::Bf16 => tensor::TensorType::Bf16,
            TensorType::U8 => tensor::TensorType::U8,
            TensorType::I32 => tensor::TensorType::I32,
            TensorType::I64 => tensor::TensorType::I64,
        }
    }

    fn from_wit(ty: tensor::TensorType) -> TensorType {
        match ty {
            tensor::TensorType::Fp16 => TensorType::Fp16,
            tensor::TensorType::Fp32 => TensorType::Fp32,
            tensor::TensorType::Fp64 => TensorType::Fp64,
            tensor::TensorType::Bf16 => TensorType::Bf16,
            tensor::TensorType::U8 => TensorType::U8,
            tensor::TensorType::I32 => TensorType::I32,
            tensor::TensorType::I64 => TensorType::I64,
        }
    }

    /// A model the host serves, loaded by its id.
    pub struct Graph(graph::Graph);

    impl Graph {
        /// `load-by-name`: the id is the one `models::list-models` reports.
        /// An unknown id fails with [`ErrorCode::NotFound`].
        pub fn load_by_name(name: &str) -> Result<Self, NnError> {
            Ok(Self(graph::load_by_name(name)?))
        }

        /// [`load_by_name`](Self::load_by_name) for a request's `model`:
        /// 404 `model_not_found` when the host has no such graph, else 500.
        pub fn load_model(id: &str) -> Result<Self, crate::ApiError> {
            Self::load_by_name(id).map_err(|e| match e.code {
                ErrorCode::NotFound => crate::ApiError::model_not_found(id),
                _ => super::model_failed(id, "could not be loaded", &e),
            })
        }

        /// A fresh execution context: for chat models, one sequence with its
        /// own KV cache.
        pub fn context(&self) -> Result<Context, NnError> {
            Ok(Context(self.0.init_execution_context()?))
        }
    }

    /// An execution context of a [`Graph`].
    pub struct Context(inference::GraphExecutionContext);

    impl Context {
        /// One `compute` with named inputs. What it does depends on the
        /// first input's name (see `wit/nn-protocol.md`). Both wasi-nn
        /// errors and the protocol's `error` output come back as `Err`.
        pub fn compute(&self, inputs: Vec<(&str, Tensor)>) -> Result<Outputs, NnError> {
            let inputs = inputs
                .into_iter()
                .map(|(name, t)| {
                    let wit = tensor::Tensor::new(&t.dims, to_wit(t.ty), &t.data);
                    (name.to_string(), wit)
                })
                .collect();
            let outputs = self.0.compute(inputs)?;
            Outputs(
                outputs
                    .into_iter()
                    .map(|(name, t)| {
                        let tensor = Tensor {
                            dims: t.dimensions(),
                            ty: from_wit(t.ty()),
                            data: t.data(),
                        };
                        (name, tensor)
                    })
                    .collect(),
            )
            .into_result()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i32_tensor_round_trips_little_endian() {
        let t = Tensor::i32s(&[1, -2, 49151]);
        assert_eq!(t.dims, vec![3]);
        assert_eq!(&t.data[..4], &[1, 0, 0, 0]);
        assert_eq!(t.to_i32s().unwrap(), vec![1, -2, 49151]);
    }

    #[test]
    fn f32_tensor_round_trips_little_endian() {
        let t = Tensor::f32s(&[1.0, -0.5]);
        assert_eq!((t.dims.clone(), t.ty), (vec![2], TensorType::Fp32));
        assert_eq!(&t.data[..4], &1.0f32.to_le_bytes());
        assert_eq!(t.to_f32s().unwrap(), vec![1.0, -0.5]);
        assert!(Tensor::i32s(&[1]).to_f32s().is_err());
    }

    #[test]
    fn wrong_types_are_protocol_errors() {
        assert!(Tensor::bytes(b"abc".to_vec()).to_i32s().is_err());
        assert!(Tensor::i32s(&[1]).into_bytes().is_err());
        let mut t = Tensor::bytes(b"abcde".to_vec());
        t.ty = TensorType::I32;
        assert!(t.to_i32s().is_err());
    }

    #[test]
    fn outputs_take_by_name() {
        let mut out = Outputs(vec![
            ("token".into(), Tensor::i32s(&[7])),
            ("bytes".into(), Tensor::bytes(b"hi".to_vec())),
        ]);
        assert_eq!(out.take("bytes").unwrap().into_bytes().unwrap(), b"hi");
        assert_eq!(out.take("token").unwrap().to_i32s().unwrap(), vec![7]);
        assert!(out.take("token").is_err());
    }

    #[test]
    fn error_output_becomes_err() {
        let err = |json: &str| {
            Outputs(vec![("error".into(), Tensor::bytes(json.as_bytes()))])
                .into_result()
                .unwrap_err()
        };
        assert_eq!(
            err(r#"{"code": "context_length_exceeded", "message": "full"}"#),
            NnError::new(ErrorCode::TooLarge, "full")
        );
        assert_eq!(
            err(r#"{"code": "invalid_tokens", "message": "id 99999"}"#).code,
            ErrorCode::InvalidArgument
        );
        let other = err(r#"{"code": "new_thing", "message": "m"}"#);
        assert_eq!(other.code, ErrorCode::RuntimeError);
        assert_eq!(other.message, "new_thing: m");
        assert_eq!(err("not json").code, ErrorCode::RuntimeError);

        let fine = Outputs(vec![("token".into(), Tensor::i32s(&[1]))]);
        assert_eq!(fine.clone().into_result(), Ok(fine));
    }
}
