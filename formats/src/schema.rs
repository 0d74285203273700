//! Schemas given by users as text: `name:type,name:type`.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// The type names [`parse_schema`] accepts.
pub const TYPE_NAMES: &[&str] = &[
    "utf8",
    "string",
    "int64",
    "int32",
    "float64",
    "float32",
    "bool",
    "boolean",
    "date32",
    "date",
    "timestamp",
];

/// Parses `name:type,name:type,…` into a schema; every field is nullable.
/// `timestamp` is microseconds without a time zone.
///
/// # Errors
/// On an empty or duplicate name, a missing `:`, or an unknown type.
pub fn parse_schema(text: &str) -> Result<SchemaRef, String> {
    let mut fields: Vec<Field> = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, ty) = part
            .rsplit_once(':')
            .ok_or_else(|| format!("schema field '{part}' needs a type, as in '{part}:utf8'"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("schema field '{part}' has no name"));
        }
        if fields.iter().any(|f| f.name() == name) {
            return Err(format!("schema names field '{name}' twice"));
        }
        let data_type = match ty.trim().to_ascii_lowercase().as_str() {
            "utf8" | "string" => DataType::Utf8,
            "int64" => DataType::Int64,
            "int32" => DataType::Int32,
            "float64" => DataType::Float64,
            "float32" => DataType::Float32,
            "bool" | "boolean" => DataType::Boolean,
            "date32" | "date" => DataType::Date32,
            "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
            other => {
                return Err(format!(
                    "unknown type '{other}' for field '{name}' (known: {})",
                    TYPE_NAMES.join(", ")
                ));
            }
        };
        fields.push(Field::new(name, data_type, true));
    }
    if fields.is_empty() {
        return Err("the schema names no fields".into());
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let s = parse_schema("id:int64, name:utf8,when:timestamp").expect("valid");
        assert_eq!(s.fields().len(), 3);
        assert_eq!(s.field(0).data_type(), &DataType::Int64);
        assert!(parse_schema("id").unwrap_err().contains("needs a type"));
        assert!(
            parse_schema("id:money")
                .unwrap_err()
                .contains("unknown type 'money'")
        );
        assert!(
            parse_schema("a:utf8,a:int64")
                .unwrap_err()
                .contains("twice")
        );
    }
}
