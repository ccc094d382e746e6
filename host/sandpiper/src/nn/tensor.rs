//! Conversions between wasi-nn tensors and the values in wit/nn-protocol.md.

use wasmtime_wasi_nn::backend::BackendError;
use wasmtime_wasi_nn::wit::TensorType;
use wasmtime_wasi_nn::Tensor;

pub(crate) fn invalid(msg: impl Into<String>) -> BackendError {
    BackendError::BackendAccess(wasmtime::format_err!("{}", msg.into()))
}

pub(crate) fn bytes(data: Vec<u8>) -> Tensor {
    Tensor::new(vec![data.len() as u32], TensorType::U8, data)
}

pub(crate) fn i32s(values: &[u32]) -> Tensor {
    let data = values
        .iter()
        .flat_map(|v| (*v as i32).to_le_bytes())
        .collect();
    Tensor::new(vec![values.len() as u32], TensorType::I32, data)
}

pub(crate) fn to_tokens(name: &str, t: &Tensor) -> Result<Vec<u32>, BackendError> {
    if t.ty != TensorType::I32 || !t.data.len().is_multiple_of(4) {
        return Err(invalid(format!("`{name}` must be an I32 tensor")));
    }
    t.data
        .chunks_exact(4)
        .map(|c| {
            let v = i32::from_le_bytes(c.try_into().unwrap());
            u32::try_from(v).map_err(|_| invalid(format!("negative token id {v} in `{name}`")))
        })
        .collect()
}

pub(crate) fn to_bytes<'a>(name: &str, t: &'a Tensor) -> Result<&'a [u8], BackendError> {
    if t.ty != TensorType::U8 {
        return Err(invalid(format!("`{name}` must be a U8 tensor")));
    }
    Ok(&t.data)
}

pub(crate) fn to_text<'a>(name: &str, t: &'a Tensor) -> Result<&'a str, BackendError> {
    std::str::from_utf8(to_bytes(name, t)?).map_err(|_| invalid(format!("`{name}` is not UTF-8")))
}
