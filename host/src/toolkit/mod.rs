//! The plugin author's tools, run without a gateway: [`inspection`] (`wasmgate plugin
//! inspect`: what a component is and what it costs) and [`rehearsal`] (`wasmgate plugin test`:
//! a plugin's phases run against requests from a file, with what it did to each).

pub mod inspection;
pub mod rehearsal;

/// The name a tool gives the plugin in `file`: its file name without `.wasm`, in the letters a
/// plugin name may hold, so that log lines and metrics name it.
fn name_of(file: &std::path::Path) -> String {
    let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '-' }).collect();
    if name.is_empty() { "plugin".to_owned() } else { name }
}
