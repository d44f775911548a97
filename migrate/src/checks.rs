//! `validate` steps: row counts, schema, checksums and SQL assertions over
//! `source` and `target`. A check that does not hold is a
//! [`MigrateError::Validation`] saying what differed.

use datafusion::arrow::array::{Array, AsArray, BooleanArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use skein_plan::{Column, Validation};

use crate::error::MigrateError;
use crate::io::register_frame;

/// Runs every check of `v` against `target` (registered as table `target`
/// while they run) and the session's `source`. Returns a line per check
/// that held.
pub async fn validate(
    ctx: &SessionContext,
    v: &Validation,
    target: &DataFrame,
    source_rows: &mut Option<u64>,
) -> Result<Vec<String>, MigrateError> {
    register_frame(ctx, "target", target)?;
    let mut held = Vec::new();
    if let Some(rule) = &v.row_count {
        let s = match *source_rows {
            Some(n) => n,
            None => {
                let n = ctx.table("source").await?.count().await? as u64;
                *source_rows = Some(n);
                n
            }
        };
        let t = target.clone().count().await? as u64;
        let expr = if rule.eq_ignore_ascii_case("equal") || rule == "=" || rule == "==" {
            "target = source".to_string()
        } else {
            rule.clone()
        };
        let sql = format!("SELECT CAST(({expr}) AS BOOLEAN) AS ok FROM (SELECT CAST({s} AS BIGINT) AS source, CAST({t} AS BIGINT) AS target)");
        let batches = ctx
            .sql_with_options(&sql, crate::queries_only())
            .await
            .map_err(|e| {
                MigrateError::Plan(format!("row_count {rule:?} is not an expression over source and target: {e}"))
            })?
            .collect()
            .await?;
        let ok = batches
            .first()
            .and_then(|b| {
                b.column(0).as_any().downcast_ref::<BooleanArray>().map(|a| a.len() == 1 && a.is_valid(0) && a.value(0))
            })
            .unwrap_or(false);
        if !ok {
            return Err(MigrateError::Validation(format!(
                "row count: source has {s} rows, target {t}; `{expr}` does not hold"
            )));
        }
        held.push(format!("row count: source {s}, target {t} ({expr})"));
    }
    if !v.schema.is_empty() {
        let fields: Vec<Field> = target.schema().as_arrow().fields().iter().map(|f| f.as_ref().clone()).collect();
        check_schema(&fields, &v.schema)?;
        held.push(format!("schema: {} columns as expected", v.schema.len()));
    }
    if let Some(c) = &v.checksum {
        let source = ctx.table("source").await?;
        let (s_sum, s_rows) = checksum(source, &c.columns, "source").await?;
        let (t_sum, t_rows) = checksum(target.clone(), &c.columns, "target").await?;
        if (s_sum, s_rows) != (t_sum, t_rows) {
            return Err(MigrateError::Validation(format!(
                "checksum of [{}]: source {s_sum:016x} over {s_rows} rows, target {t_sum:016x} over {t_rows} rows",
                c.columns.join(", ")
            )));
        }
        held.push(format!("checksum of [{}]: {s_sum:016x} over {s_rows} rows", c.columns.join(", ")));
    }
    if let Some(query) = &v.assert {
        let df = ctx
            .sql_with_options(query, crate::queries_only())
            .await
            .map_err(|e| MigrateError::Plan(format!("assert query {query:?}: {e}")))?;
        let rows = df.clone().count().await?;
        if rows > 0 {
            let sample = df.limit(0, Some(5))?.collect().await?;
            let shown = pretty_format_batches(&sample).map(|t| t.to_string()).unwrap_or_default();
            return Err(MigrateError::Validation(format!(
                "assertion returned {rows} row(s), expected none: {query}\n{shown}"
            )));
        }
        held.push(format!("assertion returned no rows: {query}"));
    }
    let _ = ctx.deregister_table("target");
    Ok(held)
}

/// The target's columns against the expected ones, in order.
pub fn check_schema(actual: &[Field], expected: &[Column]) -> Result<(), MigrateError> {
    let mut diffs = Vec::new();
    for (i, want) in expected.iter().enumerate() {
        match actual.get(i) {
            None => diffs.push(format!(
                "column {} should be {} {}, but the target has only {} columns",
                i + 1,
                want.name,
                want.data_type,
                actual.len()
            )),
            Some(f) => {
                let (got, wanted) = (type_class(f.data_type()), type_class_of_name(&want.data_type));
                if f.name() != &want.name || got != wanted {
                    diffs.push(format!(
                        "column {} is {} {} ({}), expected {} {}",
                        i + 1,
                        f.name(),
                        got,
                        f.data_type(),
                        want.name,
                        wanted
                    ));
                }
            }
        }
    }
    if actual.len() > expected.len() {
        let extra: Vec<&str> = actual[expected.len()..].iter().map(|f| f.name().as_str()).collect();
        diffs.push(format!("unexpected extra columns: {}", extra.join(", ")));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(MigrateError::Validation(format!("schema: {}", diffs.join("; "))))
    }
}

/// A type's family name, the same for the forms one engine or another
/// produces (`Utf8`, `Utf8View` and `varchar` are all `string`).
pub fn type_class(t: &DataType) -> String {
    match t {
        DataType::Int8 => "tinyint".into(),
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::UInt8 => "tinyint unsigned".into(),
        DataType::UInt16 => "smallint unsigned".into(),
        DataType::UInt32 => "int unsigned".into(),
        DataType::UInt64 => "bigint unsigned".into(),
        DataType::Float16 | DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 | DataType::Date64 => "date".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Decimal128(..) | DataType::Decimal256(..) => "decimal".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "binary".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

/// The family of a type named in a plan (SQL or Arrow spelling).
pub fn type_class_of_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    let base = n.split('(').next().unwrap_or(&n).trim().to_string();
    match base.as_str() {
        "tinyint" | "int8" => "tinyint".into(),
        "smallint" | "int16" => "smallint".into(),
        "int" | "integer" | "int32" => "int".into(),
        "bigint" | "int64" | "long" => "bigint".into(),
        "float" | "real" | "float32" | "float4" | "float16" => "float".into(),
        "double" | "double precision" | "float64" | "float8" => "double".into(),
        "string" | "varchar" | "text" | "char" | "utf8" | "largeutf8" | "utf8view" => "string".into(),
        "bool" | "boolean" => "boolean".into(),
        "date" | "date32" | "date64" => "date".into(),
        "decimal" | "numeric" | "decimal128" | "decimal256" => "decimal".into(),
        "binary" | "bytea" | "varbinary" => "binary".into(),
        b if b.starts_with("timestamp") => "timestamp".into(),
        other => other.to_string(),
    }
}

/// The SQL spelling of a type named in a plan, for `CAST`.
pub fn sql_type(name: &str) -> String {
    let n = name.trim();
    match n.to_ascii_lowercase().as_str() {
        "int8" => "TINYINT".into(),
        "int16" => "SMALLINT".into(),
        "int32" => "INT".into(),
        "int64" | "long" => "BIGINT".into(),
        "float32" | "float4" => "FLOAT".into(),
        "float64" | "float8" => "DOUBLE".into(),
        "string" | "utf8" | "largeutf8" | "utf8view" => "VARCHAR".into(),
        "bool" => "BOOLEAN".into(),
        "date32" => "DATE".into(),
        _ => n.to_string(),
    }
}

/// An order-independent checksum of `columns`: the wrapping sum of a 64-bit
/// hash of each row's values as text. Returns it with the row count.
pub async fn checksum(df: DataFrame, columns: &[String], which: &str) -> Result<(u64, u64), MigrateError> {
    let names: Vec<&str> = columns.iter().map(String::as_str).collect();
    let df = df.select_columns(&names).map_err(|e| {
        MigrateError::Plan(format!("checksum: the {which} lacks a column of [{}]: {e}", columns.join(", ")))
    })?;
    let mut stream = df.execute_stream().await?;
    let (mut sum, mut rows) = (0u64, 0u64);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let texts = batch.columns().iter().map(|c| cast(c, &DataType::Utf8)).collect::<Result<Vec<_>, _>>()?;
        let strings: Vec<_> = texts.iter().map(|a| a.as_string::<i32>()).collect();
        for row in 0..batch.num_rows() {
            let mut h = FNV_OFFSET;
            for s in &strings {
                if s.is_null(row) {
                    h = fnv1a(h, &[0xff]);
                } else {
                    h = fnv1a(h, s.value(row).as_bytes());
                }
                h = fnv1a(h, &[0x1f]);
            }
            sum = sum.wrapping_add(mix(h));
            rows += 1;
        }
    }
    Ok((sum, rows))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A finalizer (splitmix64's), so that sums of row hashes do not cancel out.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
