//! The documentation generated from the command line's own definition, so that it can never
//! disagree with it: man pages, and the sample config file (`imagemeta sample-config`, the
//! package's `/etc/imagemeta/imagemeta.toml`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;

use crate::cli::Cli;

/// Writes `imagemeta.1` and `imagemeta-COMMAND[-SUBCOMMAND].1` for every command into `dir`.
pub fn manpages(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut root = Cli::definition();
    root.build();
    let mut written = Vec::new();
    write_page(&root, "imagemeta", dir, &mut written)?;
    for name in written {
        println!("{}", dir.join(name).display());
    }
    Ok(())
}

fn write_page(command: &clap::Command, name: &str, dir: &Path, written: &mut Vec<String>) -> anyhow::Result<()> {
    // Leaked: clap names are static strings, and this runs once per page.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let page =
        command.clone().name(leak(name.to_owned())).display_name(name.to_owned()).bin_name(name.replace('-', " "));
    let mut text = Vec::new();
    clap_mangen::Man::new(page).render(&mut text)?;
    let file = format!("{name}.1");
    std::fs::write(dir.join(&file), text).with_context(|| format!("cannot write {}", dir.join(&file).display()))?;
    written.push(file);
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_page(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}

/// A config file for `serve --config`: every setting of `serve`, commented out, with its help,
/// its environment variable and its default.
pub fn sample_config() -> String {
    let root = Cli::definition();
    let serve = root.find_subcommand("serve").expect("the serve subcommand");
    let mut out = String::from(
        "# imagemeta serve --config FILE: every setting of `imagemeta serve`, each key a flag's\n\
         # name with _ for - . Flags win over the environment, which wins over this file, which\n\
         # wins over the defaults; a key that names no setting is an error.\n",
    );
    for arg in serve.get_arguments() {
        let (Some(long), false) = (arg.get_long(), arg.is_hide_set()) else {
            continue;
        };
        if matches!(long, "config" | "help" | "version") {
            continue;
        }
        out.push('\n');
        let help = arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default();
        for line in wrap(&help, 86) {
            let _ = writeln!(out, "# {line}");
        }
        if let Some(env) = arg.get_env() {
            let _ = writeln!(out, "# Environment: {}.", env.to_string_lossy());
        }
        let key = long.replace('-', "_");
        let defaults: Vec<String> = arg.get_default_values().iter().map(|v| toml_value(&v.to_string_lossy())).collect();
        let many = matches!(arg.get_action(), clap::ArgAction::Append) || arg.get_value_delimiter().is_some();
        let flag = matches!(arg.get_action(), clap::ArgAction::SetTrue);
        let value = match (defaults.as_slice(), many, flag) {
            (_, _, true) => "false".to_owned(),
            ([], true, _) => "[]".to_owned(),
            ([], false, _) => {
                out.push_str("# Not set by default.\n");
                let _ = writeln!(out, "#{key} =");
                continue;
            }
            (values, true, _) => format!("[{}]", values.join(", ")),
            ([one], false, _) => one.clone(),
            (values, false, _) => values.join(" "),
        };
        let _ = writeln!(out, "#{key} = {value}");
    }
    out
}

/// A default as TOML: a number or a boolean bare, anything else a string.
fn toml_value(v: &str) -> String {
    if v == "true" || v == "false" || v.parse::<i64>().is_ok() || v.parse::<f64>().is_ok_and(f64::is_finite) {
        return v.to_owned();
    }
    // A JSON string is a TOML basic string (the same escapes).
    serde_json::to_string(v).expect("a string serializes")
}

/// `text` in lines of at most `width` characters (longer words stay whole), paragraphs kept.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for (i, paragraph) in text.split("\n\n").enumerate() {
        if i > 0 {
            lines.push(String::new());
        }
        let mut line = String::new();
        for word in paragraph.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        if !line.is_empty() {
            lines.push(line);
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line of the sample, uncommented, is a valid setting with its default: the file
    /// parses as TOML, and names every setting of `serve` that has a default.
    #[test]
    fn the_sample_config_uncommented_is_the_defaults() {
        let sample = sample_config();
        let uncommented: String = sample
            .lines()
            .filter_map(|l| l.strip_prefix('#'))
            .filter(|l| !l.starts_with(' ') && !l.is_empty() && !l.ends_with(" ="))
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = uncommented.parse().unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
        assert_eq!(table["compute_listen"].as_str(), Some("127.0.0.1:8774"));
        assert_eq!(
            table["shutdown_timeout"].as_integer().map(|n| n as f64).or(table["shutdown_timeout"].as_float()),
            Some(30.0)
        );
        assert_eq!(table["access_log"].as_bool(), Some(false));
        assert_eq!(table["image_store"].as_array().map(Vec::len), Some(0));
        assert!(!table.contains_key("config"));
        assert!(sample.contains("# Environment: IMAGEMETA_COMPUTE_LISTEN."));
        assert!(sample.contains("#keystone_url =\n"), "a setting without a default is listed too");
        // And serve takes it as its config file.
        let path = std::env::temp_dir().join(format!("imagemeta-sample-{}.toml", std::process::id()));
        std::fs::write(&path, &uncommented).unwrap();
        let parsed = Cli::load_from(vec!["imagemeta".into(), "serve".into(), "--config".into(), path.clone().into()]);
        let _ = std::fs::remove_file(&path);
        if let Err(e) = parsed {
            panic!("serve refuses its own sample config: {e}");
        }
    }
}
