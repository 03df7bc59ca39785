//! Keeps the config file's `devices` lists true when a device joins a pool (`aegis device add`
//! or `replace` through aegisd), so the pool mounts whole at the next start. The file is
//! edited in place with its comments and layout kept, through a temporary file renamed over
//! it.

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConfigEditError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is no longer valid TOML: {source}")]
    Parse {
        path: String,
        source: toml_edit::TomlError,
    },
    #[error("{path} has no [[pool]] named {pool} with a devices list")]
    NoPool { path: String, pool: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Appends `device` to the `devices` of the `[[pool]]` named `pool` in the file at `path`,
/// unless it is listed already; whether the file changed.
pub fn add_device(path: &Path, pool: &str, device: &str) -> Result<bool, ConfigEditError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigEditError::Read {
        path: shown.clone(),
        source,
    })?;
    let mut document: toml_edit::DocumentMut =
        text.parse().map_err(|source| ConfigEditError::Parse {
            path: shown.clone(),
            source,
        })?;
    let no_pool = || ConfigEditError::NoPool {
        path: shown.clone(),
        pool: pool.to_owned(),
    };
    let devices = document
        .get_mut("pool")
        .and_then(toml_edit::Item::as_array_of_tables_mut)
        .and_then(|pools| {
            pools
                .iter_mut()
                .find(|table| table.get("name").and_then(toml_edit::Item::as_str) == Some(pool))
        })
        .and_then(|table| table.get_mut("devices"))
        .and_then(toml_edit::Item::as_array_mut)
        .ok_or_else(no_pool)?;
    if devices.iter().any(|listed| listed.as_str() == Some(device)) {
        return Ok(false);
    }
    devices.push(device);
    let temporary = path.with_extension("toml.aegis-new");
    let write = |source| ConfigEditError::Write {
        path: shown.clone(),
        source,
    };
    std::fs::write(&temporary, document.to_string()).map_err(write)?;
    if let Ok(metadata) = std::fs::metadata(path) {
        std::fs::set_permissions(&temporary, metadata.permissions()).map_err(write)?;
    }
    std::fs::rename(&temporary, path).map_err(write)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_appended_to_its_pool_only_and_comments_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.toml");
        std::fs::write(
            &path,
            "# the pools\n[[pool]]\nname = \"a\"\ndevices = [\"/dev/x\"] # fast first\n\n\
             [[pool]]\nname = \"tank\"\ndevices = [\"/dev/y\", \"/dev/z\"]\n",
        )
        .unwrap();
        assert!(add_device(&path, "tank", "/dev/new").unwrap());
        assert!(
            !add_device(&path, "tank", "/dev/new").unwrap(),
            "listed once"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("# the pools") && text.contains("# fast first"),
            "{text}"
        );
        assert!(text.contains("devices = [\"/dev/x\"]"), "{text}");
        assert!(
            text.contains("devices = [\"/dev/y\", \"/dev/z\", \"/dev/new\"]"),
            "{text}"
        );
        let err = add_device(&path, "nope", "/dev/q").unwrap_err().to_string();
        assert!(err.contains("no [[pool]] named nope"), "{err}");
    }
}
