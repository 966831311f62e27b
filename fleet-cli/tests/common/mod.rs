//! Helpers the fleet-cli binary tests share.

use std::path::Path;

/// Copies an example stack into a test directory, pointing its templates at instance/.
pub fn copy_stack(src: &Path, dst: &Path) {
    let instance = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instance/");
    let text = std::fs::read_to_string(src).unwrap();
    let text = text.replace("../instance/", &format!("{}/", instance.display()));
    std::fs::write(dst, text).unwrap();
}
