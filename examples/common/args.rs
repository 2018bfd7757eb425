//! The examples' flags: a table of `--name [VALUE]` with help texts, parsed by `lexopt`
//! (`--name value`, `--name=value`, `-h`/`--help`), values converted with their type's
//! `FromStr` and a bad one reported with exit status 2.
//!
//! `lexopt` rather than `clap`: clap's derive macros turn on `heck`'s default features,
//! which changes the build hash of every burn crate and costs a full rebuild of burn.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr;

/// Parsed command-line flags.
pub struct Args {
    values: BTreeMap<String, Vec<String>>,
    switches: Vec<String>,
}

/// One accepted flag: name, whether it takes a value, help text.
pub struct Flag {
    pub name: &'static str,
    pub takes_value: bool,
    pub help: &'static str,
}

pub const fn value(name: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        takes_value: true,
        help,
    }
}

pub const fn switch(name: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        takes_value: false,
        help,
    }
}

fn usage(about: &str, flags: &[Flag]) -> String {
    let mut s = format!("{about}\n\nflags:\n");
    for f in flags {
        let v = if f.takes_value { " VALUE" } else { "" };
        s.push_str(&format!("  --{}{v}\n      {}\n", f.name, f.help));
    }
    s
}

impl Args {
    /// Parse `std::env::args()`; prints usage and exits on `--help` or a bad flag.
    pub fn parse(about: &str, flags: &[Flag]) -> Args {
        Self::parse_from(about, flags, std::env::args().skip(1))
    }

    /// [`parse`](Args::parse) over given arguments (a program that passes the flags after
    /// `--` on to another).
    pub fn parse_from(about: &str, flags: &[Flag], args: impl Iterator<Item = String>) -> Args {
        match Self::try_parse(args, flags) {
            Ok(a) => a,
            Err(msg) if msg == "help" => {
                // Not `println!`: `--help | head` closes the pipe, which is no error.
                use std::io::Write;
                let _ = writeln!(std::io::stdout(), "{}", usage(about, flags));
                std::process::exit(0)
            }
            Err(msg) => {
                eprintln!("error: {msg}\n\n{}", usage(about, flags));
                std::process::exit(2)
            }
        }
    }

    fn try_parse(args: impl Iterator<Item = String>, flags: &[Flag]) -> Result<Args, String> {
        use lexopt::prelude::*;
        let mut values = BTreeMap::new();
        let mut switches = Vec::new();
        let mut parser = lexopt::Parser::from_args(args);
        while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
            let name = match arg {
                Short('h') | Long("help") => return Err("help".into()),
                Long(name) => name.to_string(),
                Short(c) => return Err(format!("unknown flag `-{c}`")),
                Value(v) => return Err(format!("unexpected argument `{}`", v.to_string_lossy())),
            };
            let flag = flags
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| format!("unknown flag `--{name}`"))?;
            if flag.takes_value {
                let v = parser
                    .value()
                    .map_err(|_| format!("`--{name}` needs a value"))?
                    .string()
                    .map_err(|e| format!("`--{name}`: {e}"))?;
                values.entry(name).or_insert_with(Vec::new).push(v);
            } else {
                // `--resume=false` must mean false, not "the switch was given".
                let on = match parser.optional_value().map(|v| v.string()) {
                    None => true,
                    Some(Ok(v)) => match v.as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        v => {
                            return Err(format!("`--{name}` is a switch: `{v}` is not true/false"));
                        }
                    },
                    Some(Err(e)) => return Err(format!("`--{name}`: {e}")),
                };
                switches.retain(|s| *s != name);
                if on {
                    switches.push(name);
                }
            }
        }
        Ok(Args { values, switches })
    }

    /// A required value.
    pub fn required<T: FromStr>(&self, name: &str) -> T
    where
        T::Err: Display,
    {
        match self.values.get(name).and_then(|v| v.last()) {
            Some(v) => self.convert(name, v),
            None => {
                eprintln!("error: `--{name}` is required");
                std::process::exit(2)
            }
        }
    }

    /// An optional value.
    pub fn get<T: FromStr>(&self, name: &str) -> Option<T>
    where
        T::Err: Display,
    {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(|v| self.convert(name, v))
    }

    /// Every value of a flag given several times, in order.
    pub fn get_all<T: FromStr>(&self, name: &str) -> Vec<T>
    where
        T::Err: Display,
    {
        self.values
            .get(name)
            .map(|vs| vs.iter().map(|v| self.convert(name, v)).collect())
            .unwrap_or_default()
    }

    /// A value with a default.
    pub fn get_or<T: FromStr>(&self, name: &str, default: T) -> T
    where
        T::Err: Display,
    {
        self.get(name).unwrap_or(default)
    }

    /// Whether a switch was given.
    pub fn flag(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }

    fn convert<T: FromStr>(&self, name: &str, v: &str) -> T
    where
        T::Err: Display,
    {
        v.parse().unwrap_or_else(|e| {
            eprintln!("error: bad value `{v}` for `--{name}`: {e}");
            std::process::exit(2)
        })
    }
}
