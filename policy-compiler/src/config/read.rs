//! Typed readers over the spanned value tree. Each reader reports its own errors (with
//! the option name and the offending input) and returns `None` on error, so the loader
//! goes on and collects every error.
//!
//! Readers are weakly typed the way Pomerium's viper/mapstructure decoding is: a string
//! `"true"` is a valid bool, a number is a valid string, a comma-separated string is a
//! valid list. That is also how environment variables (always strings) are read.

use crate::diag::Diagnostics;
use crate::value::{Span, Spanned, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use url::Url;

/// Reads values of one source (the config file, or one environment variable) and
/// collects diagnostics against that source's name.
pub(crate) struct Reader {
    pub file: String,
    pub diags: Diagnostics,
}

impl Reader {
    pub fn new(file: impl Into<String>) -> Self {
        Reader {
            file: file.into(),
            diags: Diagnostics::new(),
        }
    }

    pub fn err(&mut self, span: Span, msg: impl Into<String>) {
        let file = self.file.clone();
        self.diags.error(&file, span, msg);
    }

    pub fn warn(&mut self, span: Span, msg: impl Into<String>) {
        let file = self.file.clone();
        self.diags.warning(&file, span, msg);
    }

    fn type_err(&mut self, name: &str, expected: &str, v: &Spanned<Value>) {
        self.err(
            v.span,
            format!("`{name}` must be {expected}, found {}", v.value.kind()),
        );
    }

    /// A scalar as text (numbers and bools are rendered, as Go's weak decoding does).
    pub fn string(&mut self, name: &str, v: &Spanned<Value>) -> Option<String> {
        match v.value.scalar_text() {
            Some(s) => Some(s),
            None => {
                self.type_err(name, "a string", v);
                None
            }
        }
    }

    /// A non-empty string (after trimming).
    pub fn non_empty(&mut self, name: &str, v: &Spanned<Value>) -> Option<String> {
        let s = self.string(name, v)?;
        if s.trim().is_empty() {
            self.err(v.span, format!("`{name}` must not be empty"));
            return None;
        }
        Some(s)
    }

    /// A bool: YAML bools, or a string Go's `strconv.ParseBool` accepts.
    pub fn bool(&mut self, name: &str, v: &Spanned<Value>) -> Option<bool> {
        match &v.value {
            Value::Bool(b) => Some(*b),
            Value::Int(0) => Some(false),
            Value::Int(1) => Some(true),
            Value::String(s) => match parse_go_bool(s) {
                Some(b) => Some(b),
                None => {
                    self.err(
                        v.span,
                        format!("`{name}` must be `true` or `false`, found `{s}`"),
                    );
                    None
                }
            },
            _ => {
                self.type_err(name, "a boolean", v);
                None
            }
        }
    }

    /// A Go duration (`14h`, `1m30s`, `500ms`). A bare number is refused (Go would read
    /// it as nanoseconds, which is never what was meant) except `0`.
    pub fn duration(&mut self, name: &str, v: &Spanned<Value>) -> Option<Duration> {
        let text = match &v.value {
            Value::String(s) => s.clone(),
            Value::Int(0) => return Some(Duration::ZERO),
            Value::Int(i) => {
                self.err(
                    v.span,
                    format!(
                        "invalid duration `{i}` for `{name}`: a unit is required (e.g. `{i}s`)"
                    ),
                );
                return None;
            }
            _ => {
                self.type_err(name, "a duration such as `30s`", v);
                return None;
            }
        };
        match parse_go_duration(&text) {
            Ok(d) => Some(d),
            Err(why) => {
                self.err(
                    v.span,
                    format!("invalid duration `{text}` for `{name}`: {why}"),
                );
                None
            }
        }
    }

    /// An absolute URL with a scheme and a host (Pomerium's `ParseAndValidateURL`).
    pub fn url(&mut self, name: &str, v: &Spanned<Value>) -> Option<Url> {
        let s = self.non_empty(name, v)?;
        match parse_url(&s) {
            Ok(u) => Some(u),
            Err(why) => {
                self.err(v.span, format!("invalid `{name}` URL `{s}`: {why}"));
                None
            }
        }
    }

    /// A list of strings: a YAML list of scalars, or one comma-separated string.
    pub fn string_list(&mut self, name: &str, v: &Spanned<Value>) -> Option<Vec<Spanned<String>>> {
        match &v.value {
            Value::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item.value.scalar_text() {
                        Some(s) => out.push(Spanned::new(item.span, s)),
                        None => {
                            self.err(
                                item.span,
                                format!(
                                    "items of `{name}` must be strings, found {}",
                                    item.value.kind()
                                ),
                            );
                        }
                    }
                }
                // Bad items are reported; the good ones are kept so later checks still run.
                Some(out)
            }
            Value::Null => Some(Vec::new()),
            _ => match v.value.scalar_text() {
                Some(s) => Some(
                    split_list(&s)
                        .into_iter()
                        .map(|s| Spanned::new(v.span, s))
                        .collect(),
                ),
                None => {
                    self.type_err(name, "a list of strings", v);
                    None
                }
            },
        }
    }

    /// A map of strings to strings (values may be any scalar; order of the file is not
    /// kept: header maps are sets).
    pub fn string_map(
        &mut self,
        name: &str,
        v: &Spanned<Value>,
    ) -> Option<BTreeMap<String, String>> {
        let Some(entries) = v.value.as_map() else {
            if matches!(v.value, Value::Null) {
                return Some(BTreeMap::new());
            }
            self.type_err(name, "a map", v);
            return None;
        };
        let mut out = BTreeMap::new();
        for (k, val) in entries {
            match val.value.scalar_text() {
                Some(s) => {
                    out.insert(k.value.clone(), s);
                }
                None if matches!(val.value, Value::Null) => {
                    out.insert(k.value.clone(), String::new());
                }
                None => {
                    self.err(
                        val.span,
                        format!(
                            "values of `{name}` must be strings, found {} for `{}`",
                            val.value.kind(),
                            k.value
                        ),
                    );
                }
            }
        }
        // Bad values are reported; the good entries are kept so later checks still run.
        Some(out)
    }

    /// The entries of a map (for nested option objects).
    pub fn map<'v>(
        &mut self,
        name: &str,
        v: &'v Spanned<Value>,
    ) -> Option<&'v [(Spanned<String>, Spanned<Value>)]> {
        match &v.value {
            Value::Map(m) => Some(m),
            Value::Null => Some(&[]),
            _ => {
                self.type_err(name, "a map", v);
                None
            }
        }
    }

    /// The items of a list.
    pub fn seq<'v>(&mut self, name: &str, v: &'v Spanned<Value>) -> Option<&'v [Spanned<Value>]> {
        match &v.value {
            Value::Seq(s) => Some(s),
            Value::Null => Some(&[]),
            _ => {
                self.type_err(name, "a list", v);
                None
            }
        }
    }
}

/// Go's `strconv.ParseBool`.
pub(crate) fn parse_go_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Split a comma-separated list (mapstructure's `StringToSliceHookFunc(",")`), trimming
/// blanks and dropping empty items.
pub(crate) fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units
/// `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, optionally signed (negative durations are refused
/// here: no option takes one).
pub(crate) fn parse_go_duration(s: &str) -> Result<Duration, &'static str> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration");
    }
    if let Some(r) = s.strip_prefix('-') {
        if r.starts_with(['-', '+']) {
            return Err("expected a number");
        }
        return match parse_go_duration(r) {
            Ok(d) if d.is_zero() => Ok(d),
            Ok(_) => Err("negative durations are not allowed"),
            Err(e) => Err(e),
        };
    }
    let rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total: u128 = 0;
    let mut rest = rest;
    if rest.is_empty() {
        return Err("empty duration");
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(num_len);
        if num.is_empty() || num == "." {
            return Err("expected a number");
        }
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let nanos_per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err("missing unit (use one of `ns`, `us`, `ms`, `s`, `m`, `h`)"),
            _ => return Err("unknown unit (use one of `ns`, `us`, `ms`, `s`, `m`, `h`)"),
        };
        let (int_part, frac_part) = match num.split_once('.') {
            Some((i, f)) => (i, f),
            None => (num, ""),
        };
        if frac_part.contains('.') {
            return Err("expected a number");
        }
        let int: u128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| "number too large")?
        };
        let mut nanos = int
            .checked_mul(nanos_per_unit)
            .ok_or("duration too large")?;
        // Fraction: at most 18 digits matter at nanosecond precision.
        let mut scale = nanos_per_unit;
        for d in frac_part.chars().take(18) {
            let digit = u128::from(d.to_digit(10).ok_or("expected a number")?);
            scale /= 10;
            nanos = nanos.saturating_add(digit * scale);
        }
        total = total.checked_add(nanos).ok_or("duration too large")?;
        rest = tail;
    }
    // Go's limit is i64 nanoseconds (~292 years).
    if total > i64::MAX as u128 {
        return Err("duration too large");
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| "duration too large")?;
    let nanos = u32::try_from(total % 1_000_000_000).map_err(|_| "duration too large")?;
    Ok(Duration::new(secs, nanos))
}

/// Parse an absolute URL that must have a scheme and a host.
pub(crate) fn parse_url(s: &str) -> Result<Url, String> {
    let u = Url::parse(s.trim()).map_err(|e| e.to_string())?;
    if !u.has_host() || u.host_str().is_some_and(str::is_empty) {
        return Err("a host is required".to_owned());
    }
    Ok(u)
}
