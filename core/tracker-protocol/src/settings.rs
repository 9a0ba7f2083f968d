//! Settings read from one declared source. Each component declares its variables once, in [`Section`]s: name,
//! default and meaning. The loader takes defaults from that declaration (a default cannot be written twice), reading
//! an undeclared name is a bug the tests catch, every number is checked for its range and every duration for
//! overflow, and the README's tables are rendered from the same declaration ([`markdown`]) and tested against it.
//!
//! Shared by the core node, `tracker-consumer`, the archive and the edge Worker (so no I/O here: values come
//! through a lookup function).

use core::fmt::Display;
use core::ops::RangeInclusive;
use core::str::FromStr;
use core::time::Duration;

/// What a variable is when it is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// Unset means off or absent.
    None,
    /// This value, parsed like a set one.
    Value(&'static str),
    /// Computed from other settings, as described (for example `DATA_DIR/archive`).
    Derived(&'static str),
}

/// One variable: its name, its default and what it means.
#[derive(Debug, Clone, Copy)]
pub struct Variable {
    pub name: &'static str,
    pub default: Fallback,
    pub meaning: &'static str,
}

/// Declares a variable: `var(name, default, meaning)`, the default `""` for none and `"=<text>"` for derived.
pub const fn var(name: &'static str, default: &'static str, meaning: &'static str) -> Variable {
    let default = match default.as_bytes() {
        [] => Fallback::None,
        [b'=', ..] => match default.split_at_checked(1) {
            Some((_, rest)) => Fallback::Derived(rest),
            None => Fallback::None,
        },
        _ => Fallback::Value(default),
    };
    Variable { name, default, meaning }
}

/// The variables of one part of the configuration (HTTP, log, store, ...).
#[derive(Debug, Clone, Copy)]
pub struct Section {
    pub title: &'static str,
    pub variables: &'static [Variable],
}

/// A variable with a value that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}: {reason}")]
pub struct SettingError {
    pub name: &'static str,
    pub reason: String,
}

pub fn invalid(name: &'static str, reason: impl Into<String>) -> SettingError {
    SettingError { name, reason: reason.into() }
}

/// The longest duration a setting may hold: about 30 years, so adding one to any time cannot overflow.
pub const MAX_DURATION_SECS: u64 = 1_000_000_000;

/// The unit a duration variable is given in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Millis,
    Secs,
    Hours,
    Days,
}

/// Values looked up by name (`get` returns a variable's raw value), with the defaults of `sections`.
pub struct Settings<'a, F> {
    sections: &'a [Section],
    get: F,
}

impl<F> core::fmt::Debug for Settings<'_, F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // values may be secrets: only the sections' names are shown
        f.debug_list().entries(self.sections.iter().map(|s| s.title)).finish()
    }
}

impl<'a, F: Fn(&str) -> Option<String>> Settings<'a, F> {
    pub fn new(sections: &'a [Section], get: F) -> Self {
        Settings { sections, get }
    }

    fn declared(&self, name: &str) -> Option<&Variable> {
        self.sections.iter().flat_map(|s| s.variables).find(|v| v.name == name)
    }

    /// The value set for `name` (empty counts as unset), ignoring its default.
    ///
    /// # Panics
    /// In debug builds, when `name` is not declared in the sections (a bug: every variable read is documented).
    pub fn get(&self, name: &str) -> Option<String> {
        debug_assert!(self.declared(name).is_some(), "{name} is read but not declared in any settings section");
        (self.get)(name).filter(|v| !v.is_empty())
    }

    /// The value set for `name`, or its declared default value.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name).or_else(|| match self.declared(name)?.default {
            Fallback::Value(v) => Some(v.to_owned()),
            Fallback::None | Fallback::Derived(_) => None,
        })
    }

    /// `name` parsed, or `None` when it is unset and has no default value.
    pub fn parse<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, SettingError>
    where
        T::Err: Display,
    {
        match self.text(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|e: T::Err| invalid(name, format!("{v:?}: {e}"))),
        }
    }

    /// `name` parsed; one without a value and without a default is an error.
    pub fn value<T: FromStr>(&self, name: &'static str) -> Result<T, SettingError>
    where
        T::Err: Display,
    {
        self.parse(name)?.ok_or_else(|| invalid(name, "is required"))
    }

    /// A number within `range`.
    pub fn number<T>(&self, name: &'static str, range: RangeInclusive<T>) -> Result<T, SettingError>
    where
        T: FromStr + PartialOrd + Display,
        T::Err: Display,
    {
        let n: T = self.value(name)?;
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(invalid(name, format!("must be {} to {}", range.start(), range.end())))
        }
    }

    /// A whole number of `unit`s, at most [`MAX_DURATION_SECS`].
    pub fn duration(&self, name: &'static str, unit: Unit) -> Result<Duration, SettingError> {
        let n: u64 = self.value(name)?;
        let too_large = || invalid(name, "is too large");
        let (secs, millis) = match unit {
            Unit::Millis => (n / 1000, n),
            Unit::Secs => (n, n.checked_mul(1000).ok_or_else(too_large)?),
            Unit::Hours => (n.checked_mul(3600).ok_or_else(too_large)?, 0),
            Unit::Days => (n.checked_mul(86_400).ok_or_else(too_large)?, 0),
        };
        if secs > MAX_DURATION_SECS {
            return Err(too_large());
        }
        Ok(match unit {
            Unit::Millis | Unit::Secs => Duration::from_millis(millis),
            Unit::Hours | Unit::Days => Duration::from_secs(secs),
        })
    }

    /// `true`/`1` or `false`/`0`.
    pub fn flag(&self, name: &'static str) -> Result<bool, SettingError> {
        match self.text(name).as_deref().unwrap_or("false") {
            "true" | "1" => Ok(true),
            "false" | "0" => Ok(false),
            other => Err(invalid(name, format!("{other:?} is not true or false"))),
        }
    }

    /// One of `choices` (the value, or the default).
    pub fn choice(&self, name: &'static str, choices: &[&'static str]) -> Result<&'static str, SettingError> {
        let v: String = self.value(name)?;
        choices.iter().copied().find(|c| *c == v).ok_or_else(|| {
            let listed = choices.join(", ");
            invalid(name, format!("{v:?} is not one of {listed}"))
        })
    }
}

/// The sections as Markdown tables (one per section, under a `####` heading): what the README shows.
pub fn markdown(sections: &[Section]) -> String {
    let mut out = String::new();
    for (i, s) in sections.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("#### {}\n\n| variable | default | meaning |\n|---|---|---|\n", s.title));
        for v in s.variables {
            let default = match v.default {
                Fallback::None => String::new(),
                Fallback::Value(d) | Fallback::Derived(d) => format!("`{d}`"),
            };
            out.push_str(&format!("| `{}` | {default} | {} |\n", v.name, v.meaning));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const SECTION: Section = Section {
        title: "Test",
        variables: &[
            var("PORT", "3030", "a port"),
            var("WAIT_MS", "5", "a wait"),
            var("KEEP_HOURS", "168", "a retention"),
            var("ON", "false", "a flag"),
            var("MODE", "fast", "a choice"),
            var("HOME_DIR", "=DATA_DIR/home", "a derived default"),
            var("TOKEN", "", "no default"),
        ],
    };

    fn with(pairs: &'static [(&'static str, &'static str)]) -> Settings<'static, impl Fn(&str) -> Option<String>> {
        Settings::new(core::slice::from_ref(&SECTION), move |name: &str| {
            pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn defaults_come_from_the_declaration() {
        let s = with(&[]);
        assert_eq!(s.number::<u16>("PORT", 1..=65535).unwrap(), 3030);
        assert_eq!(s.duration("WAIT_MS", Unit::Millis).unwrap(), Duration::from_millis(5));
        assert_eq!(s.duration("KEEP_HOURS", Unit::Hours).unwrap(), Duration::from_secs(168 * 3600));
        assert!(!s.flag("ON").unwrap());
        assert_eq!(s.choice("MODE", &["fast", "slow"]).unwrap(), "fast");
        assert_eq!(s.text("HOME_DIR"), None, "a derived default is computed by the loader");
        assert_eq!(s.parse::<String>("TOKEN").unwrap(), None);
        assert_eq!(s.value::<String>("TOKEN").unwrap_err().to_string(), "TOKEN: is required");
    }

    #[test]
    fn bad_values_name_the_variable_and_never_overflow() {
        let s = with(&[("PORT", "70000"), ("KEEP_HOURS", "18446744073709551615"), ("ON", "yes"), ("MODE", "x")]);
        assert_eq!(s.number::<u32>("PORT", 1..=65535).unwrap_err().to_string(), "PORT: must be 1 to 65535");
        assert_eq!(s.duration("KEEP_HOURS", Unit::Hours).unwrap_err().to_string(), "KEEP_HOURS: is too large");
        assert!(s.flag("ON").unwrap_err().to_string().starts_with("ON:"));
        assert_eq!(
            s.choice("MODE", &["fast", "slow"]).unwrap_err().to_string(),
            "MODE: \"x\" is not one of fast, slow"
        );
        let s = with(&[("WAIT_MS", "18446744073709551615"), ("PORT", "")]);
        assert!(s.duration("WAIT_MS", Unit::Millis).is_err(), "past 30 years");
        assert_eq!(s.number::<u16>("PORT", 1..=65535).unwrap(), 3030, "empty counts as unset");
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not declared")]
    fn reading_an_undeclared_variable_is_a_bug() {
        let _ = with(&[]).get("UNDECLARED");
    }

    #[test]
    fn markdown_lists_every_variable_with_its_default() {
        let md = markdown(&[SECTION]);
        assert!(md.starts_with("#### Test\n\n| variable | default | meaning |\n|---|---|---|\n"), "{md}");
        assert!(md.contains("| `PORT` | `3030` | a port |\n"));
        assert!(md.contains("| `HOME_DIR` | `DATA_DIR/home` | a derived default |\n"));
        assert!(md.contains("| `TOKEN` |  | no default |\n"));
    }
}
