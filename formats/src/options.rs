//! Reading a format's `key=value` options, refusing unknown keys.

use std::collections::BTreeMap;

use rota_core::format::DecodeOptions;
use rota_core::{DecodeError, DecodeErrorKind, Position};

/// A format's view of its options: typed getters, and an error for any key
/// it does not know (a typo must not be ignored silently).
pub(crate) struct FormatOptions<'a> {
    location: &'a str,
    known: &'static [&'static str],
    left: BTreeMap<String, String>,
    schema_given: bool,
}

impl<'a> FormatOptions<'a> {
    pub(crate) fn new(options: &'a DecodeOptions, known: &'static [&'static str]) -> Self {
        Self {
            location: &options.location,
            known,
            left: options.options.clone(),
            schema_given: options.schema.is_some(),
        }
    }

    fn error(&self, message: String) -> DecodeError {
        DecodeError {
            location: self.location.to_owned(),
            position: Position::default(),
            kind: DecodeErrorKind::Options,
            message,
        }
    }

    pub(crate) fn bool(&mut self, key: &str, default: bool) -> Result<bool, DecodeError> {
        match self.left.remove(key).as_deref() {
            None => Ok(default),
            Some("true" | "yes" | "1") => Ok(true),
            Some("false" | "no" | "0") => Ok(false),
            Some(other) => Err(self.error(format!(
                "option {key}: expected true or false, got '{other}'"
            ))),
        }
    }

    pub(crate) fn byte(&mut self, key: &str, default: u8) -> Result<u8, DecodeError> {
        match self.left.remove(key).as_deref() {
            None => Ok(default),
            Some("\\t" | "tab") => Ok(b'\t'),
            Some(s) if s.len() == 1 => Ok(s.as_bytes()[0]),
            Some(other) => Err(self.error(format!(
                "option {key}: expected a single ASCII character, got '{other}'"
            ))),
        }
    }

    /// For formats whose input carries its schema: refuses a given one,
    /// saying `why` (and perhaps what to do instead).
    pub(crate) fn no_schema(&self, why: &str) -> Result<(), DecodeError> {
        if self.schema_given {
            return Err(self.error(format!("{why}; --schema does not apply")));
        }
        Ok(())
    }

    /// A dotted path of keys (`a.b`); empty when the option is absent.
    pub(crate) fn key_path(&mut self, key: &str) -> Result<Vec<String>, DecodeError> {
        let Some(path) = self.left.remove(key) else {
            return Ok(Vec::new());
        };
        let steps: Vec<String> = path.split('.').map(|s| s.trim().to_owned()).collect();
        if steps.iter().any(String::is_empty) {
            return Err(self.error(format!("option {key}: empty key in '{path}'")));
        }
        Ok(steps)
    }

    pub(crate) fn string(&mut self, key: &str) -> Option<String> {
        self.left.remove(key)
    }

    pub(crate) fn u64(&mut self, key: &str, default: u64) -> Result<u64, DecodeError> {
        match self.left.remove(key) {
            None => Ok(default),
            Some(s) => s.trim().parse().map_err(|_| {
                self.error(format!("option {key}: expected a whole number, got '{s}'"))
            }),
        }
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.left.keys().next() {
            None => Ok(()),
            Some(key) => Err(self.error(format!(
                "unknown option '{key}' (this format takes: {})",
                if self.known.is_empty() {
                    "no options".to_owned()
                } else {
                    self.known.join(", ")
                }
            ))),
        }
    }
}
