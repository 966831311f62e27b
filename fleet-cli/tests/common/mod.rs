//! Helpers the fleet-cli binary tests (and the webhook bench) share.

// Each test crate uses some of them.
#![allow(dead_code)]

use std::path::Path;

use serde_json::Value;

/// Copies an example stack into a test directory, pointing its templates at instance/.
pub fn copy_stack(src: &Path, dst: &Path) {
    let instance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/");
    let text = std::fs::read_to_string(src).unwrap();
    let text = text.replace("../instance/", &format!("{}/", instance.display()));
    std::fs::write(dst, text).unwrap();
}

/// Names of the instances alive in the sandbox cloud whose file is `cloud`, sorted
/// (duplicates kept).
pub fn alive_in(cloud: &Path) -> Vec<String> {
    let world: Value = serde_json::from_slice(&std::fs::read(cloud).unwrap()).unwrap();
    let mut names: Vec<String> = world["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["terminated_at"].is_null())
        .map(|i| i["tags"]["fleet:name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}
