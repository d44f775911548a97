//! Reading datasets into DataFusion and writing query results to local
//! files in the three formats.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use skein_plan::{Dataset, Format};

use crate::error::MigrateError;
use crate::location::{listing_extension, Location};

/// A DataFusion session for one migration.
pub fn session() -> SessionContext {
    let config = SessionConfig::new().with_information_schema(false);
    SessionContext::new_with_config(config)
}

/// A DataFusion session as `opts` bound it: with a memory limit, every
/// operator's memory comes from one [`FairSpillPool`] of that size (those
/// that can spill, sorts and aggregations, spill into `spill_dir` when
/// their fair share is used up; those that cannot, a hash join's build
/// side, fail with `ResourcesExhausted`); `target_partitions` sets how many
/// streams run in parallel (each holds its own buffers). Without either,
/// the same session as [`session`].
pub fn session_for(opts: &crate::Options, spill_dir: &Path) -> Result<SessionContext, MigrateError> {
    let mut config = SessionConfig::new().with_information_schema(false);
    if let Some(n) = opts.target_partitions {
        config = config.with_target_partitions(n.max(1));
    }
    let Some(limit) = opts.memory_limit else {
        return Ok(SessionContext::new_with_config(config));
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    // A sort reserves this much up front to merge what it spilled (10 MiB
    // by default): more than a small limit holds, so a fraction of it.
    let merge = config.options().execution.sort_spill_reservation_bytes.min(limit / 16);
    config = config.with_sort_spill_reservation_bytes(merge);
    // A sort merging what it spilled holds a batch of every run it merges,
    // and that memory cannot spill: under a small limit, smaller batches
    // (1024 rows at 8 MiB, the default 8192 from 64 MiB up), so that each
    // parallel stream can still merge.
    let batch = (limit / (8 << 10)).clamp(1024, config.batch_size().max(1024));
    config = config.with_batch_size(batch);
    std::fs::create_dir_all(spill_dir)?;
    // The top consumers are named in the error when the pool runs out.
    let pool = TrackConsumersPool::new(FairSpillPool::new(limit), NonZeroUsize::MIN.saturating_add(4));
    let runtime =
        RuntimeEnvBuilder::new().with_memory_pool(Arc::new(pool)).with_temp_file_path(spill_dir).build_arc()?;
    Ok(SessionContext::new_with_config_rt(config, runtime))
}

/// Registers the files `paths` (local paths or object-store URLs of one
/// store; or one folder, ending in `/`) as table `name`, in `format`, with
/// `partition_cols` read from hive folder names (`dt=.../`) as strings.
pub async fn register_paths(
    ctx: &SessionContext,
    name: &str,
    paths: Vec<String>,
    format: Format,
    options: Option<&Dataset>,
    partition_cols: &[String],
) -> Result<(), MigrateError> {
    let _ = ctx.deregister_table(name);
    let ext = format!(".{}", format.extension());
    let cols: Vec<(String, DataType)> = partition_cols.iter().map(|c| (c.clone(), DataType::Utf8)).collect();
    let df = match format {
        Format::Csv => {
            let mut o = CsvReadOptions::new().file_extension(&ext).table_partition_cols(cols);
            if let Some(d) = options {
                if let Some(h) = d.has_header {
                    o = o.has_header(h);
                }
                if let Some(c) = d.delimiter {
                    o = o.delimiter(c as u8);
                }
            }
            ctx.read_csv(paths, o).await
        }
        Format::Parquet => {
            ctx.read_parquet(paths, ParquetReadOptions::default().file_extension(&ext).table_partition_cols(cols)).await
        }
        Format::Jsonl => {
            ctx.read_json(paths, JsonReadOptions::default().file_extension(&ext).table_partition_cols(cols)).await
        }
    }?;
    ctx.register_table(name, df.into_view())?;
    Ok(())
}

/// Makes `loc`'s object store known to the session (local paths need nothing).
pub fn register_store(ctx: &SessionContext, loc: &Location) {
    if let Location::Remote { base, store, .. } = loc {
        ctx.register_object_store(base, store.clone());
    }
}

/// Registers the dataset at `loc` as table `name`. `options` gives the CSV
/// settings (delimiter, header).
pub async fn register(
    ctx: &SessionContext,
    name: &str,
    loc: &Location,
    format: Format,
    options: Option<&Dataset>,
) -> Result<(), MigrateError> {
    let _ = ctx.deregister_table(name);
    let path = loc.table_path();
    let ext = listing_extension(loc, format);
    let result = match format {
        Format::Csv => {
            let mut o = CsvReadOptions::new().file_extension(&ext);
            if let Some(d) = options {
                if let Some(h) = d.has_header {
                    o = o.has_header(h);
                }
                if let Some(c) = d.delimiter {
                    o = o.delimiter(c as u8);
                }
            }
            ctx.register_csv(name, &path, o).await
        }
        Format::Parquet => ctx.register_parquet(name, &path, ParquetReadOptions::default().file_extension(&ext)).await,
        Format::Jsonl => ctx.register_json(name, &path, JsonReadOptions::default().file_extension(&ext)).await,
    };
    result.map_err(|e| match MigrateError::from(e) {
        MigrateError::SourceNotFound(_) => MigrateError::SourceNotFound(loc.display()),
        MigrateError::Plan(m) if m.contains("No files found") || m.contains("not found") => {
            MigrateError::SourceNotFound(format!("{} ({m})", loc.display()))
        }
        other => other,
    })
}

/// Registers `df` as table `name`, replacing any table of that name.
pub fn register_frame(ctx: &SessionContext, name: &str, df: &DataFrame) -> Result<(), MigrateError> {
    let _ = ctx.deregister_table(name);
    ctx.register_table(name, df.clone().into_view())?;
    Ok(())
}

/// What writing a dataset produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
}

/// Runs `df` and writes its rows to the local file `path` in `format`,
/// calling `on_rows` with the running count after each batch. The file is
/// fsynced before this returns.
pub async fn write_local(
    df: DataFrame,
    format: Format,
    path: &Path,
    mut on_rows: impl FnMut(u64),
) -> Result<Written, MigrateError> {
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let mut stream = df.execute_stream().await?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = File::create(path)?;
    let mut writer = FormatWriter::new(format, file, schema)?;
    let mut rows = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
        on_rows(rows);
    }
    let file = writer.finish()?;
    file.sync_all()?;
    let bytes = file.metadata()?.len();
    Ok(Written { rows, bytes })
}

/// One writer per format, over a buffered file.
pub(crate) enum FormatWriter {
    Parquet(ArrowWriter<File>),
    Csv(datafusion::arrow::csv::Writer<BufWriter<File>>),
    Jsonl(datafusion::arrow::json::LineDelimitedWriter<BufWriter<File>>),
}

impl FormatWriter {
    pub(crate) fn new(format: Format, file: File, schema: SchemaRef) -> Result<FormatWriter, MigrateError> {
        Ok(match format {
            Format::Parquet => {
                let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
                FormatWriter::Parquet(ArrowWriter::try_new(file, schema, Some(props))?)
            }
            Format::Csv => FormatWriter::Csv(
                datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(BufWriter::with_capacity(1 << 20, file)),
            ),
            Format::Jsonl => FormatWriter::Jsonl(datafusion::arrow::json::LineDelimitedWriter::new(
                BufWriter::with_capacity(1 << 20, file),
            )),
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<(), MigrateError> {
        match self {
            FormatWriter::Parquet(w) => w.write(batch)?,
            FormatWriter::Csv(w) => w.write(batch)?,
            FormatWriter::Jsonl(w) => w.write(batch)?,
        }
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<File, MigrateError> {
        Ok(match self {
            FormatWriter::Parquet(w) => w.into_inner()?,
            FormatWriter::Csv(w) => {
                let mut buf = w.into_inner();
                buf.flush()?;
                buf.into_inner().map_err(|e| MigrateError::Storage(e.to_string()))?
            }
            FormatWriter::Jsonl(mut w) => {
                w.finish()?;
                let mut buf = w.into_inner();
                buf.flush()?;
                buf.into_inner().map_err(|e| MigrateError::Storage(e.to_string()))?
            }
        })
    }
}
