//! Glance's predefined metadata definitions (`metadefs/`, see its NOTICE), built into the binary,
//! and their loading: what `glance-manage db_load_metadefs` does.

use std::path::Path;

use serde_json::Value;

use crate::store::metadefs::{MetadefError, MetadefStore};

/// The definition files shipped with imagemeta: (file name, contents).
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "cim-processor-allocation-setting-data.json",
        include_str!("../metadefs/cim-processor-allocation-setting-data.json"),
    ),
    (
        "cim-resource-allocation-setting-data.json",
        include_str!("../metadefs/cim-resource-allocation-setting-data.json"),
    ),
    ("cim-storage-allocation-setting-data.json", include_str!("../metadefs/cim-storage-allocation-setting-data.json")),
    ("cim-virtual-system-setting-data.json", include_str!("../metadefs/cim-virtual-system-setting-data.json")),
    ("compute-aggr-disk-filter.json", include_str!("../metadefs/compute-aggr-disk-filter.json")),
    ("compute-aggr-iops-filter.json", include_str!("../metadefs/compute-aggr-iops-filter.json")),
    ("compute-aggr-num-instances.json", include_str!("../metadefs/compute-aggr-num-instances.json")),
    ("compute-cpu-pinning.json", include_str!("../metadefs/compute-cpu-pinning.json")),
    ("compute-guest-memory-backing.json", include_str!("../metadefs/compute-guest-memory-backing.json")),
    ("compute-guest-shutdown.json", include_str!("../metadefs/compute-guest-shutdown.json")),
    ("compute-host-capabilities.json", include_str!("../metadefs/compute-host-capabilities.json")),
    ("compute-hypervisor.json", include_str!("../metadefs/compute-hypervisor.json")),
    ("compute-instance-data.json", include_str!("../metadefs/compute-instance-data.json")),
    ("compute-libvirt-image.json", include_str!("../metadefs/compute-libvirt-image.json")),
    ("compute-libvirt.json", include_str!("../metadefs/compute-libvirt.json")),
    ("compute-quota.json", include_str!("../metadefs/compute-quota.json")),
    ("compute-randomgen.json", include_str!("../metadefs/compute-randomgen.json")),
    ("compute-vcputopology.json", include_str!("../metadefs/compute-vcputopology.json")),
    ("compute-vmware-flavor.json", include_str!("../metadefs/compute-vmware-flavor.json")),
    ("compute-vmware-quota-flavor.json", include_str!("../metadefs/compute-vmware-quota-flavor.json")),
    ("compute-vmware.json", include_str!("../metadefs/compute-vmware.json")),
    ("compute-vtpm-hw.json", include_str!("../metadefs/compute-vtpm-hw.json")),
    ("compute-vtpm.json", include_str!("../metadefs/compute-vtpm.json")),
    ("compute-watchdog.json", include_str!("../metadefs/compute-watchdog.json")),
    ("compute-xenapi.json", include_str!("../metadefs/compute-xenapi.json")),
    ("glance-common-image-props.json", include_str!("../metadefs/glance-common-image-props.json")),
    ("image-signature-verification.json", include_str!("../metadefs/image-signature-verification.json")),
    ("operating-system.json", include_str!("../metadefs/operating-system.json")),
    ("software-databases.json", include_str!("../metadefs/software-databases.json")),
    ("software-runtimes.json", include_str!("../metadefs/software-runtimes.json")),
    ("software-webservers.json", include_str!("../metadefs/software-webservers.json")),
    ("storage-volume-type.json", include_str!("../metadefs/storage-volume-type.json")),
];

/// The largest definition file read from a directory (Glance's biggest is 30 KiB).
const MAX_FILE: u64 = 4 << 20;
/// The most files one load reads from a directory.
const MAX_FILES: usize = 1000;

/// What a load did, by namespace name.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Created.
    pub loaded: Vec<String>,
    /// Present already (left as they are, as `db_load_metadefs` leaves them).
    pub skipped: Vec<String>,
}

/// The `*.json` definition files of `dir`, by name.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<(String, String)>> {
    use anyhow::Context;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "json") || !path.is_file() {
            continue;
        }
        anyhow::ensure!(files.len() < MAX_FILES, "{} holds more than {MAX_FILES} definition files", dir.display());
        let size = std::fs::metadata(&path)?.len();
        anyhow::ensure!(size <= MAX_FILE, "{} is larger than {MAX_FILE} bytes", path.display());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        files.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), text));
    }
    files.sort();
    anyhow::ensure!(!files.is_empty(), "{} holds no *.json definition files", dir.display());
    Ok(files)
}

/// Loads definition files into the catalogue: every file is checked first (one that does not
/// parse or fit the namespace schema loads nothing), then each namespace is created with what
/// it holds, all or nothing, unless one of its name exists.
pub async fn load(store: &dyn MetadefStore, files: &[(String, String)]) -> anyhow::Result<Loaded> {
    let mut parsed = Vec::with_capacity(files.len());
    for (name, text) in files {
        let value: Value = serde_json::from_str(text).map_err(|e| anyhow::anyhow!("{name}: not JSON: {e}"))?;
        let new =
            crate::api::image_v2::metadefs::definition_file(&value).map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        parsed.push((name, new));
    }
    let mut done = Loaded::default();
    for (file, new) in parsed {
        let namespace = new.fields.name.clone();
        match store.load_namespace(new).await {
            Ok(true) => done.loaded.push(namespace),
            Ok(false) => done.skipped.push(namespace),
            Err(e) => anyhow::bail!("{file}: namespace {namespace}: {}", describe(&e)),
        }
    }
    Ok(done)
}

fn describe(e: &MetadefError) -> String {
    match e {
        MetadefError::Store(e) => e.to_string(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_file_is_a_namespace_glance_would_load() {
        assert_eq!(BUNDLED.len(), 32);
        for (name, text) in BUNDLED {
            let value: Value = serde_json::from_str(text).unwrap();
            let new = crate::api::image_v2::metadefs::definition_file(&value).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(Some(new.fields.name.as_str()), value["namespace"].as_str(), "{name}");
        }
    }
}
