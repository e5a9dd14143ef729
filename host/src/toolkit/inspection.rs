//! `wasmgate plugin inspect`: what a component is, read without a gateway: the contract it
//! targets, what it imports and whether this host provides it, what one instance takes from
//! the pooling allocator, what compiling it costs, and the phases its `init` declares for a
//! given config.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmparser::{Parser, Payload};

use crate::plugin::{Footprint, Phase, PluginError, PluginSpec, Runtime, RuntimeConfig};

/// The contract this host implements: `wit/plugin.wit`'s package.
pub const CONTRACT: &str = "wasmgate:plugin@0.1.2";
/// Its patch version: components of every `0.1.x` up to it load.
const CONTRACT_PATCH: u64 = 2;

/// The WASI 0.2 packages the host links, and the newest minor release it serves.
const WASI_PACKAGES: [&str; 6] = ["cli", "clocks", "filesystem", "io", "random", "sockets"];
const WASI_NEWEST: u64 = 12;

/// The interfaces of the contract, each with the version that added it.
const CONTRACT_INTERFACES: [(&str, u64); 13] = [
    ("types", 0),
    ("log", 0),
    ("request", 0),
    ("response", 0),
    ("upstream", 0),
    ("state", 0),
    ("metrics", 0),
    ("store", 0),
    ("clock", 0),
    ("outbound", 0),
    ("handler", 0),
    ("routes", 1),
    ("cache", 2),
];

/// Why a component could not be inspected.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("{}: not a WebAssembly component: {reason}", path.display())]
    NotAComponent {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// The engine could not be built.
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(String),
}

/// What an import is to this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provided {
    /// The host links it.
    Yes,
    /// The host does not: the component will not load.
    No,
}

/// What `plugin inspect` found.
#[derive(Debug)]
pub struct Report {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: usize,
    /// Its SHA-256, as `sha256 = "…"` pins it.
    pub sha256: String,
    /// The contract its `handler` export names (`wasmgate:plugin@0.1.0`), if any.
    pub contract: Option<String>,
    /// Its top-level imports, each with whether this host provides it.
    pub imports: Vec<(String, Provided)>,
    /// Its top-level exports.
    pub exports: Vec<String>,
    /// What one instance takes from the pooling allocator.
    pub footprint: Footprint,
    /// Loading it (compiling, linking, one instance, `init`): milliseconds, bytes of compiled
    /// code, and the phases `init` declared, or why loading failed.
    pub loaded: Result<(f64, u64, Vec<&'static str>), PluginError>,
}

impl Report {
    /// Reads and loads `path`, calling its `init` with `config_json`. The component is compiled
    /// afresh (into a cache of its own, removed after), so the figures are a first load's.
    pub async fn of(path: &Path, config_json: &str) -> Result<Report, InspectError> {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|source| InspectError::Read { path: path.to_owned(), source })?;
        let not_a_component = |reason: String| InspectError::NotAComponent { path: path.to_owned(), reason };
        let footprint = Footprint::of(&bytes).map_err(|e| not_a_component(e.to_string()))?;
        let (imports, exports) = names(&bytes).map_err(|e| not_a_component(e.to_string()))?;
        let contract = exports.iter().find_map(|name| {
            let version = name.strip_prefix("wasmgate:plugin/handler@")?;
            Some(format!("wasmgate:plugin@{version}"))
        });
        let cache = std::env::temp_dir().join(format!("wasmgate-inspect-{}", std::process::id()));
        let runtime = Runtime::new(&RuntimeConfig { cache_dir: Some(cache.clone()), ..Default::default() })
            .map_err(|e| InspectError::Runtime(format!("{e:#}")))?;
        let mut spec = PluginSpec::new(crate::toolkit::name_of(path), path);
        spec.config_json = config_json.to_owned();
        spec.instances = 1;
        let started = Instant::now();
        let loaded = runtime.load(&spec).await.map(|plugin| {
            let ms = started.elapsed().as_secs_f64() * 1e3;
            let phases =
                Phase::ALL.into_iter().filter(|&p| p != Phase::Init && plugin.has(p)).map(Phase::as_str);
            (ms, dir_size(&cache), phases.collect())
        });
        let _ = std::fs::remove_dir_all(&cache);
        Ok(Report {
            path: path.to_owned(),
            size: bytes.len(),
            sha256: crate::plugin::content_hash(&bytes),
            contract,
            imports: imports
                .into_iter()
                .map(|name: String| {
                    let p = provided(&name);
                    (name, p)
                })
                .collect(),
            exports,
            footprint,
            loaded,
        })
    }

    /// True if the component loads and its `init` accepted the config.
    pub fn loads(&self) -> bool {
        self.loaded.is_ok()
    }

    /// The report as `plugin inspect` prints it.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "file        {}", self.path.display());
        let _ = writeln!(out, "size        {} bytes", self.size);
        let _ = writeln!(out, "sha256      {}", self.sha256);
        let contract = self.contract.as_deref().unwrap_or("none (no wasmgate:plugin/handler export)");
        let _ = writeln!(out, "contract    {contract} (this host: {CONTRACT})");
        let _ = writeln!(out, "exports     {}", self.exports.join(", "));
        let f = &self.footprint;
        let _ = writeln!(
            out,
            "instance    {} core instances, {} memories, {} tables (of the pooling allocator's slots)",
            f.core_instances, f.memories, f.tables
        );
        match &self.loaded {
            Ok((ms, compiled, phases)) => {
                let _ = writeln!(out, "compiled    {ms:.0} ms, {compiled} bytes of machine code");
                let _ = writeln!(
                    out,
                    "phases      {}",
                    if phases.is_empty() { "none".to_owned() } else { phases.join(", ") }
                );
            }
            Err(error) => {
                let _ = writeln!(out, "loads       no: {error}");
            }
        }
        let _ = writeln!(out, "imports     {}", self.imports.len());
        for (name, provided) in &self.imports {
            let mark = if *provided == Provided::Yes { "provided" } else { "MISSING " };
            let _ = writeln!(out, "  {mark}  {name}");
        }
        out
    }
}

/// The top-level import and export names of a component.
fn names(bytes: &[u8]) -> Result<(Vec<String>, Vec<String>), wasmparser::BinaryReaderError> {
    let (mut imports, mut exports, mut depth) = (Vec::new(), Vec::new(), 0usize);
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import?.name.name.to_owned());
                }
            }
            Payload::ComponentExportSection(section) if depth == 1 => {
                for export in section {
                    exports.push(export?.name.name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok((imports, exports))
}

/// Whether this host links the interface `name` (`wasi:io/streams@0.2.3`).
fn provided(name: &str) -> Provided {
    let Some((package, version)) = name.split_once('@') else {
        return Provided::No;
    };
    let patch_of =
        |prefix: &str| -> Option<u64> { version.strip_prefix(prefix)?.split('.').next()?.parse().ok() };
    let known = if let Some(interface) = package.strip_prefix("wasmgate:plugin/") {
        CONTRACT_INTERFACES.iter().any(|(i, since)| {
            *i == interface && patch_of("0.1.").is_some_and(|n| n >= *since && n <= CONTRACT_PATCH)
        })
    } else if let Some(rest) = package.strip_prefix("wasi:") {
        let wasi_package = rest.split('/').next().unwrap_or_default();
        WASI_PACKAGES.contains(&wasi_package) && patch_of("0.2.").is_some_and(|n| n <= WASI_NEWEST)
    } else {
        false
    };
    if known { Provided::Yes } else { Provided::No }
}

/// Bytes of the files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| if e.path().is_dir() { dir_size(&e.path()) } else { e.metadata().map_or(0, |m| m.len()) })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_contract_of_the_wit_it_was_built_with() {
        let wit = include_str!("../../../wit/plugin.wit");
        assert!(wit.contains(&format!("package {CONTRACT};")), "update CONTRACT to wit/plugin.wit's package");
        assert!(CONTRACT.ends_with(&format!(".{CONTRACT_PATCH}")));
        for (interface, _) in CONTRACT_INTERFACES {
            assert!(wit.contains(&format!("interface {interface} {{")), "{interface}");
        }
    }

    #[test]
    fn knows_what_the_host_links() {
        for name in [
            "wasmgate:plugin/request@0.1.0",
            "wasmgate:plugin/cache@0.1.2",
            "wasi:io/streams@0.2.0",
            "wasi:cli/stdout@0.2.12",
        ] {
            assert_eq!(provided(name), Provided::Yes, "{name}");
        }
        for name in [
            "wasi:http/types@0.2.10",
            "wasmgate:plugin/cache@0.1.1",
            "wasmgate:plugin/request@0.2.0",
            "wasi:io/streams@0.2.13",
            "acme:x/y@1.0.0",
            "wasi:io/streams",
        ] {
            assert_eq!(provided(name), Provided::No, "{name}");
        }
    }
}
