//! The example plugins of `examples/plugins/` in the languages cargo does not build: each is
//! built on first use in a test process with its language's build script (`plugin-sdk/python/
//! build.sh`, `plugin-sdk/js/build.sh`), which installs its pinned tool when missing, into
//! `target/polyglot/`. A build is reused while it is newer than its sources, the SDK and the WIT.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use anyhow::{Context, bail};

/// A language with an SDK build script.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Language {
    /// `plugin-sdk/python`, componentize-py.
    Python,
    /// `plugin-sdk/js`, componentize-qjs (QuickJS).
    Js,
}

impl Language {
    /// The directory name under `plugin-sdk/` and under each example.
    pub fn dir(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::Js => "js",
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the repository root").to_owned()
}

/// The newest modification time of any source file under `dir` (not what tools leave there).
fn newest(dir: &Path) -> SystemTime {
    let entries = std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok);
    let skipped = |path: &Path| path.file_name().is_some_and(|n| n == "node_modules" || n == "__pycache__");
    entries
        .map(|entry| entry.path())
        .filter(|path| !skipped(path))
        .map(|path| if path.is_dir() { newest(&path) } else { modified(&path) })
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Builds `examples/plugins/<example>/<language>` (once per process) and returns the path of
/// its component.
pub fn example(example: &str, language: Language) -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<(String, Language), PathBuf>>> = OnceLock::new();
    // One build at a time: the first one of a language installs its tool.
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(path) = built.get(&(example.to_owned(), language)) {
        return Ok(path.clone());
    }
    let root = root();
    let source = root.join("examples/plugins").join(example).join(language.dir());
    let sdk = root.join("plugin-sdk").join(language.dir());
    let out_dir = root.join("target/polyglot");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let out = out_dir.join(format!("{example}-{}.wasm", language.dir()));
    let shared = modified(&root.join("plugin-sdk/build-args.sh")).max(modified(&root.join("wit/plugin.wit")));
    let sources = newest(&source).max(newest(&sdk)).max(shared);
    if !out.is_file() || modified(&out) < sources {
        let script = sdk.join("build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg(&source)
            .arg(&out)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} {} {} failed ({}):\n{}{}",
                script.display(),
                source.display(),
                out.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
            );
        }
    }
    built.insert((example.to_owned(), language), out.clone());
    Ok(out)
}
