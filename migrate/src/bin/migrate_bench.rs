//! The migration bench's in-process half (`scripts/bench-migration.sh` runs
//! the rest):
//!
//! - `migrate_bench gen --rows N --out FILE.parquet`: a synthetic dataset
//!   (`id`, `name`, `amount`, `country`, `created`), deterministic;
//! - `migrate_bench direct --source FILE --target FILE --query SQL`: the
//!   query run by DataFusion alone, in this process, its result written as
//!   Parquet with DataFusion's own writer; prints rows, seconds and rows/s
//!   (one line of JSON);
//! - `migrate_bench engine ...`: the same through skein's migration engine
//!   in this process (no cluster), the median of 3 runs.
//!
//! No timing assertions: it prints figures.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::config::TableParquetOptions;
use datafusion::dataframe::DataFrameWriteOptions;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::prelude::{ParquetReadOptions, SessionContext};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: migrate_bench gen --rows N --out FILE.parquet | direct --source FILE --target FILE --query SQL [--repeat N] | engine --source FILE --target FILE --query SQL";
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let rows: usize = arg(&args, "--rows").ok_or(usage)?.parse()?;
            let out = arg(&args, "--out").ok_or(usage)?;
            gen(rows, &out)?;
            println!("{{\"rows\": {rows}, \"file\": {out:?}}}");
        }
        Some("direct") => {
            let source = arg(&args, "--source").ok_or(usage)?;
            let target = arg(&args, "--target").ok_or(usage)?;
            let query = arg(&args, "--query").ok_or(usage)?;
            let repeat: usize = arg(&args, "--repeat").map_or(Ok(3), |r| r.parse())?;
            // The median of a few runs: the first one also warms the page cache.
            let mut runs = Vec::new();
            let mut rows = 0;
            for _ in 0..repeat.max(1) {
                let started = Instant::now();
                rows = direct(&source, &target, &query).await?;
                runs.push(started.elapsed().as_secs_f64());
            }
            runs.sort_by(f64::total_cmp);
            let secs = runs[runs.len() / 2];
            println!(
                "{{\"rows\": {rows}, \"seconds\": {secs:.3}, \"rows_per_s\": {:.0}, \"runs\": {}}}",
                rows as f64 / secs,
                runs.len()
            );
        }
        Some("engine") => {
            // The same migration through skein's engine, in this process
            // (no cluster): what skein adds besides Raft and leasing.
            let source = arg(&args, "--source").ok_or(usage)?;
            let target = arg(&args, "--target").ok_or(usage)?;
            let query = arg(&args, "--query").ok_or(usage)?;
            let parquet = |url: String| skein_plan::Dataset {
                url,
                format: Some(skein_plan::Format::Parquet),
                delimiter: None,
                has_header: None,
                partition: None,
                partition_by: Vec::new(),
                max_rows_per_file: None,
            };
            let spec = skein_plan::MigrationSpec {
                sources: [(skein_plan::SOURCE_TABLE.to_string(), parquet(source))].into(),
                target: parquet(target.clone()),
                steps: vec![skein_plan::Step::Sql { query }],
            };
            let scratch = std::env::temp_dir().join(format!("migrate-bench-{}", std::process::id()));
            let mut runs = Vec::new();
            let mut rows = 0;
            for token in 1..=3 {
                let started = Instant::now();
                let attempt = skein_migrate::Attempt { task: 0, attempt: 1, token };
                rows = skein_migrate::run(&spec, attempt, &skein_migrate::Options::new(&scratch)).await?.rows_written;
                runs.push(started.elapsed().as_secs_f64());
            }
            let _ = std::fs::remove_dir_all(&scratch);
            runs.sort_by(f64::total_cmp);
            let secs = runs[runs.len() / 2];
            println!(
                "{{\"rows\": {rows}, \"seconds\": {secs:.3}, \"rows_per_s\": {:.0}, \"runs\": {}}}",
                rows as f64 / secs,
                runs.len()
            );
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

/// The query by DataFusion alone: its own Parquet writer, with the same
/// compression skein writes (Snappy), one output file.
async fn direct(source: &str, target: &str, query: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let ctx = SessionContext::new();
    ctx.register_parquet("source", source, ParquetReadOptions::default()).await?;
    let df = ctx.sql(query).await?;
    let mut opts = TableParquetOptions::default();
    opts.global.compression = Some("snappy".into());
    let written =
        df.write_parquet(target, DataFrameWriteOptions::new().with_single_file_output(true), Some(opts)).await?;
    Ok(written
        .iter()
        .filter_map(|b| {
            b.column(0).as_any().downcast_ref::<datafusion::arrow::array::UInt64Array>().map(|a| a.value(0))
        })
        .sum())
}

fn gen(rows: usize, out: &str) -> Result<(), Box<dyn std::error::Error>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("created", DataType::Utf8, false),
    ]));
    let file = std::fs::File::create(out)?;
    let mut w = ArrowWriter::try_new(file, schema.clone(), None)?;
    let countries = ["UK", "US", "DE", "FR", "JP", "BR"];
    let batch = 65_536;
    let mut start = 0;
    while start < rows {
        let n = batch.min(rows - start);
        let ids: Vec<i64> = (start..start + n).map(|i| i as i64 + 1).collect();
        let names: Vec<String> = ids.iter().map(|i| format!("customer-{i}")).collect();
        let amounts: Vec<f64> = ids.iter().map(|i| (i * 7919 % 100_000) as f64 / 100.0).collect();
        let cs: Vec<&str> = ids.iter().map(|i| countries[(*i as usize) % countries.len()]).collect();
        let created: Vec<String> = ids.iter().map(|i| format!("2025-{:02}-{:02}", 1 + i % 12, 1 + i % 28)).collect();
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(names)),
                Arc::new(Float64Array::from(amounts)),
                Arc::new(StringArray::from(cs)),
                Arc::new(StringArray::from(created)),
            ],
        )?;
        w.write(&b)?;
        start += n;
    }
    w.close()?;
    Ok(())
}
