//! Tensors to plain slices and back.

use half::f16;

use super::proto::TensorProto;
use std::path::Path;

use super::external::{external_ref, is_external, read_external};
use super::proto::tensor_proto::DataType;
use crate::error::{Error, Result};

/// The float element types a weight may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatType {
    /// IEEE half precision (`FLOAT16`).
    F16,
    /// IEEE single precision (`FLOAT`).
    F32,
    /// IEEE double precision (`DOUBLE`).
    F64,
}

impl FloatType {
    /// The float type of an ONNX `data_type`, if it is one sora-onnx decomposes.
    pub fn from_data_type(data_type: i32) -> Option<Self> {
        match DataType::try_from(data_type).ok()? {
            DataType::Float16 => Some(FloatType::F16),
            DataType::Float => Some(FloatType::F32),
            DataType::Double => Some(FloatType::F64),
            _ => None,
        }
    }

    /// The ONNX `data_type` of this float type.
    pub fn data_type(self) -> DataType {
        match self {
            FloatType::F16 => DataType::Float16,
            FloatType::F32 => DataType::Float,
            FloatType::F64 => DataType::Double,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatType::F16 => 2,
            FloatType::F32 => 4,
            FloatType::F64 => 8,
        }
    }

    /// `value` rounded to this type, as stored.
    pub fn round(self, value: f64) -> f64 {
        match self {
            FloatType::F16 => f16::from_f64(value).to_f64(),
            FloatType::F32 => value as f32 as f64,
            FloatType::F64 => value,
        }
    }

    fn read(self, bytes: &[u8]) -> f64 {
        match self {
            FloatType::F16 => f16::from_le_bytes([bytes[0], bytes[1]]).to_f64(),
            FloatType::F32 => f32::from_le_bytes(bytes.try_into().expect("4 bytes")) as f64,
            FloatType::F64 => f64::from_le_bytes(bytes.try_into().expect("8 bytes")),
        }
    }

    fn write(self, value: f64, out: &mut Vec<u8>) {
        match self {
            FloatType::F16 => out.extend_from_slice(&f16::from_f64(value).to_le_bytes()),
            FloatType::F32 => out.extend_from_slice(&(value as f32).to_le_bytes()),
            FloatType::F64 => out.extend_from_slice(&value.to_le_bytes()),
        }
    }
}

/// The ONNX name of a `data_type` (`FLOAT`, `INT8`, ...), or its number if unknown.
pub fn data_type_name(data_type: i32) -> String {
    DataType::try_from(data_type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| format!("data type {data_type}"))
}

/// Bytes `count` elements of `data_type` take in raw data, if the type has a fixed size
/// (4-bit types pack two elements per byte; strings have none).
pub fn stored_bytes(data_type: i32, count: usize) -> Option<usize> {
    use DataType::*;
    let bits = match DataType::try_from(data_type).ok()? {
        Uint4 | Int4 | Float4e2m1 => 4,
        Uint8 | Int8 | Bool | Float8e4m3fn | Float8e4m3fnuz | Float8e5m2 | Float8e5m2fnuz => 8,
        Uint16 | Int16 | Float16 | Bfloat16 => 16,
        Float | Int32 | Uint32 => 32,
        Int64 | Uint64 | Double | Complex64 => 64,
        Complex128 => 128,
        _ => return None,
    };
    count.checked_mul(bits).map(|b| b.div_ceil(8))
}

/// Number of elements of a tensor with `dims`; refuses negative dims and overflow.
pub fn element_count(name: &str, dims: &[i64]) -> Result<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d)
            .map_err(|_| Error::tensor(name, format!("negative dimension {d}")))?;
        acc.checked_mul(d)
            .ok_or_else(|| Error::tensor(name, format!("dimensions {dims:?} overflow")))
    })
}

/// The values of a float tensor (`FLOAT16`, `FLOAT`, `DOUBLE`), widened to f64.
/// Checks that the stored data has exactly as many elements as the dims declare. Data
/// in an external file is read from the model's folder `dir` (refused without one),
/// after the checks of [`external_ref`].
pub fn float_values(t: &TensorProto, dir: Option<&Path>) -> Result<Vec<f64>> {
    let name = t.name();
    let ty = FloatType::from_data_type(t.data_type()).ok_or_else(|| {
        Error::tensor(
            name,
            format!("is {}, not a float tensor", data_type_name(t.data_type())),
        )
    })?;
    let count = element_count(name, &t.dims)?;
    if is_external(t) {
        let dir = dir.ok_or_else(|| {
            Error::tensor(
                name,
                "stores its data in an external file, but the model's folder is unknown",
            )
        })?;
        let bytes = (count as u64)
            .checked_mul(ty.size() as u64)
            .ok_or_else(|| Error::tensor(name, format!("dimensions {:?} overflow", t.dims)))?;
        let raw = read_external(&external_ref(t, dir, Some(bytes))?, name)?;
        return Ok(raw.chunks_exact(ty.size()).map(|b| ty.read(b)).collect());
    }
    let mismatch = |found: usize| {
        Error::tensor(
            name,
            format!("declares {count} elements but stores {found}"),
        )
    };
    if let Some(raw) = t
        .raw_data
        .as_deref()
        .filter(|raw| !raw.is_empty() || count == 0)
    {
        if raw.len() != count * ty.size() {
            return Err(mismatch(raw.len() / ty.size()));
        }
        return Ok(raw.chunks_exact(ty.size()).map(|b| ty.read(b)).collect());
    }
    let values: Vec<f64> = match ty {
        FloatType::F16 => t
            .int32_data
            .iter()
            .map(|&bits| f16::from_bits(bits as u16).to_f64())
            .collect(),
        FloatType::F32 => t.float_data.iter().map(|&v| v as f64).collect(),
        FloatType::F64 => t.double_data.clone(),
    };
    if values.len() != count {
        return Err(mismatch(values.len()));
    }
    Ok(values)
}

fn with_raw(name: &str, dims: &[usize], data_type: DataType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.to_string()),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: Some(data_type as i32),
        raw_data: Some(raw.into()),
        ..Default::default()
    }
}

/// A float tensor of type `ty` holding `values` (rounded to `ty`).
pub fn float_tensor(name: &str, dims: &[usize], ty: FloatType, values: &[f64]) -> TensorProto {
    let mut raw = Vec::with_capacity(values.len() * ty.size());
    for &v in values {
        ty.write(v, &mut raw);
    }
    with_raw(name, dims, ty.data_type(), raw)
}

/// A `UINT8` tensor.
pub fn u8_tensor(name: &str, dims: &[usize], values: Vec<u8>) -> TensorProto {
    with_raw(name, dims, DataType::Uint8, values)
}

/// A `UINT4` tensor: `values` (each below 16) packed two to a byte, the first in the
/// low nibble, as ONNX lays out 4-bit data.
pub fn uint4_tensor(name: &str, dims: &[usize], values: &[u8]) -> TensorProto {
    let raw = values
        .chunks(2)
        .map(|pair| (pair[0] & 0x0f) | (pair.get(1).map_or(0, |high| high & 0x0f) << 4))
        .collect();
    with_raw(name, dims, DataType::Uint4, raw)
}

/// An `INT32` tensor.
pub fn i32_tensor(name: &str, dims: &[usize], values: &[i32]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    with_raw(name, dims, DataType::Int32, raw)
}

/// An `INT64` tensor.
pub fn i64_tensor(name: &str, dims: &[usize], values: &[i64]) -> TensorProto {
    let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    with_raw(name, dims, DataType::Int64, raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_tensors_round_trip_in_every_type() {
        let values = [0.5, -1.25, 3.0, 1e-3];
        for ty in [FloatType::F16, FloatType::F32, FloatType::F64] {
            let t = float_tensor("w", &[2, 2], ty, &values);
            let back = float_values(&t, None).unwrap();
            let expected: Vec<f64> = values.iter().map(|&v| ty.round(v)).collect();
            assert_eq!(back, expected, "{ty:?}");
        }
    }

    #[test]
    fn typed_fields_are_read() {
        let t = TensorProto {
            name: Some("w".into()),
            dims: vec![2],
            data_type: Some(DataType::Float16 as i32),
            int32_data: vec![
                f16::from_f32(1.5).to_bits() as i32,
                f16::from_f32(-2.0).to_bits() as i32,
            ],
            ..Default::default()
        };
        assert_eq!(float_values(&t, None).unwrap(), vec![1.5, -2.0]);
    }

    #[test]
    fn size_mismatch_names_the_tensor() {
        let mut t = float_tensor("w", &[3], FloatType::F32, &[1.0, 2.0, 3.0]);
        t.dims = vec![4];
        let err = float_values(&t, None).unwrap_err().to_string();
        assert_eq!(err, "tensor 'w': declares 4 elements but stores 3");
    }

    #[test]
    fn negative_and_overflowing_dims_are_refused() {
        assert!(element_count("w", &[2, -1]).is_err());
        assert!(element_count("w", &[i64::MAX, 4]).is_err());
        assert_eq!(element_count("w", &[]).unwrap(), 1);
    }
}
