//! Checkpoints: safetensors files with the run's metadata (docs/architecture.md).
//!
//! # File format
//!
//! `<dir>/ckpt_<step:012>.safetensors`, a plain [safetensors] file that any safetensors
//! reader opens (`safetensors.safe_open(path, "pt")` in Python):
//!
//! - tensors are named after the module tree, i.e. tch `VarStore` variable names such as
//!   `trunk.layers.0.attn.wq.weight`. Tensors come in *groups* that share a name prefix: the
//!   model under `""`, an optimiser's moments under e.g. `optim.m.` and `optim.v.` (so
//!   `optim.m.trunk.layers.0.attn.wq.weight`). A name belongs to the group with the longest
//!   matching prefix;
//! - the header's `__metadata__` string map holds `format_version` ([`FORMAT_VERSION`]),
//!   `step`, `config` (the resolved config as RON text), `state` (a JSON blob: RNG state,
//!   trainer counters...), `groups` (JSON list of the group prefixes), `crc32` (JSON map
//!   from tensor name to the CRC-32 of its bytes: safetensors has no checksum of its own,
//!   and a flipped bit in the weights must not load silently), any
//!   [`CheckpointMeta::extra`] entries, and `meta_crc32`: the CRC-32 of every other metadata
//!   entry (see [`metadata_checksum`]), so an edited `step` or trainer state (`env_steps`)
//!   is refused like a damaged tensor. Files of format version 1 have no `meta_crc32` and
//!   still load (their tensors are checked); from version 2 on it is required.
//!
//! Supported dtypes: f32, f64, bf16, f16, i64, i32, i16, i8, u8, bool. Loading always
//! produces CPU tensors; [`load_into_varstore`] copies them onto the model's device.
//!
//! # Writing
//!
//! [`save`] is atomic: it writes a hidden temporary file in the same folder, fsyncs it,
//! renames it into place and fsyncs the folder, so a run killed at any moment leaves either
//! the previous checkpoints or the new one, never a half-written `ckpt_*` file. Leftover
//! temporary files are ignored by [`latest`] and [`list`]. After writing, all but the last
//! `keep_last` checkpoints are deleted.
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use tch::{Device, Kind, Tensor};

/// Version of the metadata layout written by this code; newer files are refused. Version 2
/// added `meta_crc32`; version 1 files (without it) still load.
pub const FORMAT_VERSION: u32 = 2;

const FILE_PREFIX: &str = "ckpt_";
const FILE_SUFFIX: &str = ".safetensors";
const RESERVED_KEYS: [&str; 7] = [
    "format_version",
    "step",
    "config",
    "state",
    "groups",
    "crc32",
    META_CRC_KEY,
];

/// The metadata entry holding [`metadata_checksum`].
const META_CRC_KEY: &str = "meta_crc32";

/// CRC-32 of every metadata entry but `meta_crc32` itself, in key order, each as its key and
/// value with their lengths (so no two different maps hash the same text).
pub fn metadata_checksum<'a>(entries: impl IntoIterator<Item = (&'a String, &'a String)>) -> u32 {
    let mut sorted: Vec<(&String, &String)> = entries
        .into_iter()
        .filter(|(k, _)| k.as_str() != META_CRC_KEY)
        .collect();
    sorted.sort();
    let mut hasher = crc32fast::Hasher::new();
    for (key, value) in sorted {
        for part in [key, value] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hasher.finalize()
}

/// An error while saving, finding or loading a checkpoint. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file-system operation failed.
    // The I/O error is part of the message, not a `source`: anyhow's `{:#}` would print it
    // twice ("File too large (os error 27): File too large (os error 27)").
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What was being done ("read", "rename to the final name", ...).
        action: &'static str,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is not a readable icrl checkpoint (truncated, damaged, or foreign).
    #[error("corrupt checkpoint {}: {reason}", path.display())]
    Corrupt {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The checkpoint does not fit the model it is loaded into; lists every problem.
    #[error("checkpoint {} does not fit the model ({} problem{}):\n  {}", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, problems.join("\n  "))]
    Incompatible {
        /// The checkpoint file.
        path: PathBuf,
        /// One line per tensor: `tensor <name>: <what differs>`.
        problems: Vec<String>,
    },
    /// The caller asked for something impossible (bad tensor names, unsupported dtype...).
    #[error("cannot save checkpoint {}: {reason}", path.display())]
    InvalidInput {
        /// The checkpoint file that was to be written.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A libtorch operation failed.
    #[error("checkpoint {}: tensor {name}: {source}", path.display())]
    Torch {
        /// The checkpoint file.
        path: PathBuf,
        /// The tensor concerned.
        name: String,
        /// The libtorch error.
        source: tch::TchError,
    },
}

/// Everything in a checkpoint besides the tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointMeta {
    /// The trainer's global step; also names the file.
    pub step: u64,
    /// The run's resolved config, as RON text (as written to the run's `config.ron`).
    pub config: String,
    /// Trainer state that is not a tensor: RNG states, counters, schedules... (JSON).
    pub state: serde_json::Value,
    /// Further string entries for the header's `__metadata__` (keys must not collide with
    /// the reserved ones: `format_version`, `step`, `config`, `state`, `groups`, `crc32`,
    /// `meta_crc32`).
    pub extra: BTreeMap<String, String>,
}

impl CheckpointMeta {
    /// Metadata with no extra entries.
    pub fn new(step: u64, config: impl Into<String>, state: serde_json::Value) -> Self {
        Self {
            step,
            config: config.into(),
            state,
            extra: BTreeMap::new(),
        }
    }
}

/// A set of tensors saved under one name prefix (e.g. `""` for the model, `"optim.m."` for
/// Adam's first moments). Full names are `prefix + name`.
#[derive(Debug)]
pub struct TensorGroup {
    /// The prefix; use `""` or a string ending in `.`.
    pub prefix: String,
    /// `(name without prefix, tensor)`; tensors may live on any device.
    pub tensors: Vec<(String, Tensor)>,
}

impl TensorGroup {
    /// A group from explicit tensors.
    pub fn new(prefix: impl Into<String>, tensors: Vec<(String, Tensor)>) -> Self {
        Self {
            prefix: prefix.into(),
            tensors,
        }
    }

    /// Every variable of `vs` (shallow handles, no copy), sorted by name.
    pub fn from_varstore(prefix: impl Into<String>, vs: &tch::nn::VarStore) -> Self {
        let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Self::new(prefix, tensors)
    }
}

/// A loaded checkpoint: CPU tensors sorted by full name, plus metadata.
#[derive(Debug)]
pub struct Checkpoint {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// `(full name, tensor)`, sorted by name.
    pub tensors: Vec<(String, Tensor)>,
    /// The group prefixes, as saved.
    pub groups: Vec<String>,
    /// The metadata.
    pub meta: CheckpointMeta,
}

/// The group (longest matching prefix) that the full name `name` belongs to.
fn group_of<'g>(name: &str, groups: &'g [String]) -> Option<&'g str> {
    groups
        .iter()
        .filter(|g| name.starts_with(g.as_str()))
        .max_by_key(|g| g.len())
        .map(String::as_str)
}

impl Checkpoint {
    /// The tensor with this full name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i].1)
    }

    /// The tensors of group `prefix` as `(name without prefix, tensor)`; empty if there is
    /// no such group. Tensors of more specific groups (e.g. `optim.m.` inside `""`) are not
    /// included.
    pub fn group(&self, prefix: &str) -> Vec<(&str, &Tensor)> {
        self.tensors
            .iter()
            .filter(|(n, _)| group_of(n, &self.groups) == Some(prefix))
            .map(|(n, t)| (&n[prefix.len()..], t))
            .collect()
    }
}

/// The file name of the checkpoint of `step` in `dir`.
pub fn checkpoint_path(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("{FILE_PREFIX}{step:012}{FILE_SUFFIX}"))
}

/// The step of a checkpoint file name, `None` for any other file (temporary files too).
fn step_of(file_name: &str) -> Option<u64> {
    let digits = file_name
        .strip_prefix(FILE_PREFIX)?
        .strip_suffix(FILE_SUFFIX)?;
    if digits.len() < 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every checkpoint in `dir` as `(step, path)`, oldest first. A missing folder has none.
pub fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(CheckpointError::Io {
                path: dir.to_path_buf(),
                action: "list",
                error: source,
            })
        }
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            action: "list",
            error: source,
        })?;
        if let Some(step) = entry.file_name().to_str().and_then(step_of) {
            out.push((step, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// The checkpoint with the highest step in `dir`, if any (temporary files are ignored).
pub fn latest(dir: &Path) -> Result<Option<PathBuf>, CheckpointError> {
    Ok(list(dir)?.pop().map(|(_, p)| p))
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Half => Dtype::F16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F16 => Kind::Half,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// A tensor's bytes, ready for safetensors.
struct Bytes {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Bytes {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn tensor_bytes(t: &Tensor) -> Result<(Kind, Vec<usize>, Vec<u8>), tch::TchError> {
    let t = t.f_detach()?.f_to_device(Device::Cpu)?.f_contiguous()?;
    let kind = t.f_kind()?;
    let shape: Vec<usize> = t.size().iter().map(|&d| d.max(0) as usize).collect();
    let numel: usize = shape.iter().product();
    let mut data = vec![0u8; numel * kind.elt_size_in_bytes()];
    if numel > 0 {
        t.f_copy_data_u8(&mut data, numel)?;
    }
    Ok((kind, shape, data))
}

/// Writes `groups` and `meta` to `dir/ckpt_<meta.step:012>.safetensors` atomically (see the
/// module doc), creating `dir` if needed and replacing a checkpoint of the same step; then
/// deletes all but the `keep_last` checkpoints with the highest steps (0 keeps all; the
/// file just written is always kept). Returns the new file's path.
///
/// Fails without touching existing checkpoints if a name is empty or appears twice, if a
/// tensor's full name would fall into another group, if an `extra` key is reserved, or if a
/// dtype is not supported.
pub fn save(
    dir: &Path,
    groups: &[TensorGroup],
    meta: &CheckpointMeta,
    keep_last: usize,
) -> Result<PathBuf, CheckpointError> {
    let path = checkpoint_path(dir, meta.step);
    let invalid = |reason: String| CheckpointError::InvalidInput {
        path: path.clone(),
        reason,
    };

    let prefixes: Vec<String> = groups.iter().map(|g| g.prefix.clone()).collect();
    let mut tensors: BTreeMap<String, Bytes> = BTreeMap::new();
    let mut crcs: BTreeMap<String, u32> = BTreeMap::new();
    for (i, g) in groups.iter().enumerate() {
        if prefixes[..i].contains(&g.prefix) {
            return Err(invalid(format!(
                "tensor group prefix '{}' given twice",
                g.prefix
            )));
        }
        for (name, t) in &g.tensors {
            let full = format!("{}{name}", g.prefix);
            if name.is_empty() {
                return Err(invalid(format!(
                    "empty tensor name in group '{}'",
                    g.prefix
                )));
            }
            if group_of(&full, &prefixes) != Some(g.prefix.as_str()) {
                return Err(invalid(format!(
                    "tensor {full} of group '{}' would be read back as part of group '{}'",
                    g.prefix,
                    group_of(&full, &prefixes).unwrap_or_default()
                )));
            }
            if tensors.contains_key(&full) {
                return Err(invalid(format!("tensor {full} given twice")));
            }
            let (kind, shape, data) = tensor_bytes(t).map_err(|source| CheckpointError::Torch {
                path: path.clone(),
                name: full.clone(),
                source,
            })?;
            let dtype = dtype_of(kind).ok_or_else(|| {
                invalid(format!("tensor {full}: dtype {kind:?} is not supported"))
            })?;
            crcs.insert(full.clone(), crc32fast::hash(&data));
            tensors.insert(full, Bytes { dtype, shape, data });
        }
    }
    let mut header: HashMap<String, String> = HashMap::new();
    for (k, v) in &meta.extra {
        if RESERVED_KEYS.contains(&k.as_str()) {
            return Err(invalid(format!("metadata key '{k}' is reserved")));
        }
        header.insert(k.clone(), v.clone());
    }
    header.insert("format_version".into(), FORMAT_VERSION.to_string());
    header.insert("step".into(), meta.step.to_string());
    header.insert("config".into(), meta.config.clone());
    header.insert("state".into(), to_json(&meta.state));
    header.insert("groups".into(), to_json(&prefixes));
    header.insert("crc32".into(), to_json(&crcs));
    let meta_crc = metadata_checksum(&header);
    header.insert(META_CRC_KEY.into(), meta_crc.to_string());

    std::fs::create_dir_all(dir).map_err(|source| CheckpointError::Io {
        path: dir.to_path_buf(),
        action: "create checkpoint folder",
        error: source,
    })?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = dir.join(format!(
        ".{FILE_PREFIX}{:012}{FILE_SUFFIX}.tmp.{}.{nanos}",
        meta.step,
        std::process::id()
    ));
    let _quit_cleanup = crate::run::signals::TempFileGuard::new(&tmp);
    let result = write_synced(&tmp, &tensors, header).and_then(|()| {
        std::fs::rename(&tmp, &path).map_err(|source| CheckpointError::Io {
            path: path.clone(),
            action: "rename the temporary file to",
            error: source,
        })
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)?;
    if keep_last > 0 {
        let all = list(dir)?;
        let excess = all.len().saturating_sub(keep_last);
        for (_, old) in all.iter().filter(|(_, p)| *p != path).take(excess) {
            match std::fs::remove_file(old) {
                // Someone else removed it already: fine.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CheckpointError::Io {
                        path: old.clone(),
                        action: "delete old checkpoint",
                        error: source,
                    })
                }
                Ok(()) => {}
            }
        }
    }
    Ok(path)
}

/// JSON text of a value (serde_json cannot fail on the map and list types used here).
fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn write_synced(
    tmp: &Path,
    tensors: &BTreeMap<String, Bytes>,
    header: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    safetensors::serialize_to_file(
        tensors.iter().map(|(n, b)| (n.as_str(), b)),
        Some(header),
        tmp,
    )
    .map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => CheckpointError::Io {
            path: tmp.to_path_buf(),
            action: "write",
            error: source,
        },
        other => CheckpointError::InvalidInput {
            path: tmp.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|source| CheckpointError::Io {
            path: tmp.to_path_buf(),
            action: "fsync",
            error: source,
        })
}

fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|source| CheckpointError::Io {
            path: dir.to_path_buf(),
            action: "fsync folder",
            error: source,
        })?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Reads a checkpoint written by [`save`]: every tensor (as a CPU tensor, dtype as saved,
/// CRC-checked) and the metadata. A truncated, damaged or foreign file, a newer
/// `format_version` or an unsupported dtype is an error naming the file.
pub fn load(path: &Path) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
        path: path.to_path_buf(),
        action: "read",
        error: source,
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| {
        corrupt(format!(
            "not a valid safetensors file (truncated or damaged?): {e}"
        ))
    })?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        corrupt(format!(
            "not a valid safetensors file (truncated or damaged?): {e}"
        ))
    })?;
    let Some(map) = header.metadata().clone() else {
        return Err(corrupt(
            "no __metadata__ in the header (not an icrl checkpoint?)".into(),
        ));
    };
    let get = |key: &str| {
        map.get(key).ok_or_else(|| {
            corrupt(format!(
                "metadata entry '{key}' is missing (not an icrl checkpoint?)"
            ))
        })
    };
    let version: u32 = get("format_version")?
        .parse()
        .map_err(|e| corrupt(format!("bad format_version: {e}")))?;
    if version > FORMAT_VERSION {
        return Err(corrupt(format!(
            "format_version {version} is newer than this icrl understands ({FORMAT_VERSION})"
        )));
    }
    match map.get(META_CRC_KEY) {
        Some(saved) => {
            let saved: u32 = saved
                .parse()
                .map_err(|e| corrupt(format!("bad {META_CRC_KEY}: {e}")))?;
            if saved != metadata_checksum(&map) {
                return Err(corrupt(
                    "metadata checksum mismatch (step, config or trainer state damaged or edited)"
                        .into(),
                ));
            }
        }
        // Version 1 wrote no metadata checksum.
        None if version >= 2 => {
            return Err(corrupt(format!(
                "metadata entry '{META_CRC_KEY}' is missing (damaged or edited)"
            )))
        }
        None => {}
    }
    let step: u64 = get("step")?
        .parse()
        .map_err(|e| corrupt(format!("bad step: {e}")))?;
    let config = get("config")?.clone();
    let state: serde_json::Value =
        serde_json::from_str(get("state")?).map_err(|e| corrupt(format!("bad state JSON: {e}")))?;
    let groups: Vec<String> = serde_json::from_str(get("groups")?)
        .map_err(|e| corrupt(format!("bad groups JSON: {e}")))?;
    let crcs: BTreeMap<String, u32> =
        serde_json::from_str(get("crc32")?).map_err(|e| corrupt(format!("bad crc32 JSON: {e}")))?;
    let extra: BTreeMap<String, String> = map
        .into_iter()
        .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
        .collect();

    let mut tensors = Vec::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype()).ok_or_else(|| {
            corrupt(format!(
                "tensor {name}: dtype {:?} is not supported",
                view.dtype()
            ))
        })?;
        let data = view.data();
        let numel: usize = view.shape().iter().product();
        if numel.checked_mul(kind.elt_size_in_bytes()) != Some(data.len()) {
            return Err(corrupt(format!(
                "tensor {name}: {} bytes for shape {:?}",
                data.len(),
                view.shape()
            )));
        }
        match crcs.get(&name) {
            None => {
                return Err(corrupt(format!(
                    "tensor {name}: no checksum in the metadata"
                )))
            }
            Some(&crc) if crc != crc32fast::hash(data) => {
                return Err(corrupt(format!(
                    "tensor {name}: checksum mismatch (data damaged)"
                )))
            }
            Some(_) => {}
        }
        if group_of(&name, &groups).is_none() {
            return Err(corrupt(format!(
                "tensor {name} belongs to no tensor group {groups:?}"
            )));
        }
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = if numel == 0 {
            Tensor::f_zeros(&shape, (kind, Device::Cpu))
        } else {
            Tensor::f_from_data_size(data, &shape, kind)
        }
        .map_err(|source| CheckpointError::Torch {
            path: path.to_path_buf(),
            name: name.clone(),
            source,
        })?;
        tensors.push((name, t));
    }
    if let Some(name) = crcs.keys().find(|n| !tensors.iter().any(|(t, _)| t == *n)) {
        return Err(corrupt(format!(
            "tensor {name} is listed in the metadata but missing"
        )));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Checkpoint {
        path: path.to_path_buf(),
        tensors,
        groups,
        meta: CheckpointMeta {
            step,
            config,
            state,
            extra,
        },
    })
}

fn shape_str(s: &[i64]) -> String {
    format!("{s:?}")
}

/// Copies the checkpoint's group `prefix` into the variables of `vs` (matched by name:
/// checkpoint name = `prefix` + variable name), under `no_grad`, onto the variables'
/// devices. Nothing is copied unless everything fits: otherwise the error lists every
/// variable missing from the checkpoint, every checkpoint tensor of the group with no
/// variable, and every shape or dtype mismatch, e.g.
/// `tensor trunk.layers.3.attn.wq.weight: shape [64, 64] in checkpoint, [128, 64] in model`.
pub fn load_into_varstore(
    vs: &mut tch::nn::VarStore,
    ckpt: &Checkpoint,
    prefix: &str,
) -> Result<(), CheckpointError> {
    let incompatible = |problems: Vec<String>| CheckpointError::Incompatible {
        path: ckpt.path.clone(),
        problems,
    };
    if !ckpt.groups.iter().any(|g| g == prefix) {
        return Err(incompatible(vec![format!(
            "no tensor group '{prefix}' in checkpoint (groups: {:?})",
            ckpt.groups
        )]));
    }
    let saved: BTreeMap<&str, &Tensor> = ckpt.group(prefix).into_iter().collect();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let mut problems = Vec::new();
    let mut pairs = Vec::new();
    for (name, var) in &vars {
        let full = format!("{prefix}{name}");
        let Some(src) = saved.get(name.as_str()) else {
            problems.push(format!("tensor {full}: missing in checkpoint"));
            continue;
        };
        let (ss, vsz) = (src.size(), var.size());
        if ss != vsz {
            problems.push(format!(
                "tensor {full}: shape {} in checkpoint, {} in model",
                shape_str(&ss),
                shape_str(&vsz)
            ));
            continue;
        }
        let (sk, vk) = (src.kind(), var.kind());
        if sk != vk {
            problems.push(format!(
                "tensor {full}: dtype {sk:?} in checkpoint, {vk:?} in model"
            ));
            continue;
        }
        pairs.push((full, var, *src));
    }
    for name in saved.keys() {
        if !vars.iter().any(|(v, _)| v == name) {
            problems.push(format!(
                "tensor {prefix}{name}: unexpected in checkpoint (no such variable in the model)"
            ));
        }
    }
    if !problems.is_empty() {
        return Err(incompatible(problems));
    }
    tch::no_grad(|| {
        for (full, var, src) in pairs {
            let mut dst = var.shallow_clone();
            dst.f_copy_(src).map_err(|source| CheckpointError::Torch {
                path: ckpt.path.clone(),
                name: full,
                source,
            })?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn;

    fn bytes_of(t: &Tensor) -> (Kind, Vec<usize>, Vec<u8>) {
        tensor_bytes(t).unwrap()
    }

    fn meta(step: u64) -> CheckpointMeta {
        let mut m = CheckpointMeta::new(
            step,
            "(seed: 3, model: (d_model: 64))\n",
            serde_json::json!({"rng": [1u64, u64::MAX, 3], "updates": 17, "lr": 2.5e-4}),
        );
        m.extra.insert("git".into(), "abc123".into());
        m
    }

    fn sample_tensors() -> Vec<(String, Tensor)> {
        tch::manual_seed(0);
        vec![
            (
                "a.f32".into(),
                Tensor::randn([3, 4], (Kind::Float, Device::Cpu)),
            ),
            (
                "a.f32_transposed".into(),
                Tensor::randn([4, 3], (Kind::Float, Device::Cpu)).tr(),
            ),
            (
                "b.bf16".into(),
                Tensor::randn([5], (Kind::Float, Device::Cpu)).to_kind(Kind::BFloat16),
            ),
            (
                "b.f16".into(),
                Tensor::randn([2, 2], (Kind::Float, Device::Cpu)).to_kind(Kind::Half),
            ),
            (
                "c.f64".into(),
                Tensor::from_slice(&[1.0f64 / 3.0, -0.0, 1e300]),
            ),
            (
                "c.i64".into(),
                Tensor::arange(6, (Kind::Int64, Device::Cpu)).view([2, 3]) - 3,
            ),
            ("c.i32".into(), Tensor::from_slice(&[i32::MIN, 0, i32::MAX])),
            ("d.u8".into(), Tensor::from_slice(&[0u8, 7, 255])),
            ("d.bool".into(), Tensor::from_slice(&[true, false, true])),
            ("e.scalar".into(), Tensor::from(2.5f32)),
            (
                "e.empty".into(),
                Tensor::zeros([0, 3], (Kind::Float, Device::Cpu)),
            ),
        ]
    }

    #[test]
    fn round_trip_is_bit_identical_with_equal_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let model = sample_tensors();
        let moments = vec![(
            "a.f32".to_string(),
            Tensor::ones([3, 4], (Kind::Float, Device::Cpu)),
        )];
        let groups = [
            TensorGroup::new("", model),
            TensorGroup::new("optim.m.", moments),
        ];
        let path = save(tmp.path(), &groups, &meta(42), 2).unwrap();
        assert_eq!(path, tmp.path().join("ckpt_000000000042.safetensors"));
        let ck = load(&path).unwrap();
        assert_eq!(ck.meta, meta(42));
        assert_eq!(ck.groups, vec!["".to_string(), "optim.m.".to_string()]);
        assert_eq!(ck.tensors.len(), 12);
        for (name, t) in &groups[0].tensors {
            let got = ck.get(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(bytes_of(got), bytes_of(t), "{name}");
            assert_eq!(got.device(), Device::Cpu);
        }
        let m = ck.group("optim.m.");
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].0, "a.f32");
        assert_eq!(bytes_of(m[0].1), bytes_of(&groups[1].tensors[0].1));
        let model_group: Vec<&str> = ck.group("").into_iter().map(|(n, _)| n).collect();
        assert_eq!(model_group.len(), 11);
        assert!(!model_group.iter().any(|n| n.starts_with("optim")));
        assert!(ck.group("nope.").is_empty());
    }

    /// A small module tree: `trunk.layers.<i>.wq` linear layers of width `widths[i]`.
    fn model(widths: &[i64], seed: i64) -> nn::VarStore {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        for (i, &w) in widths.iter().enumerate() {
            let _ = nn::linear(
                root.sub("trunk").sub("layers").sub(i.to_string()).sub("wq"),
                8,
                w,
                Default::default(),
            );
        }
        vs
    }

    fn var_bytes(vs: &nn::VarStore) -> BTreeMap<String, (Kind, Vec<usize>, Vec<u8>)> {
        vs.variables()
            .iter()
            .map(|(n, t)| (n.clone(), bytes_of(t)))
            .collect()
    }

    #[test]
    fn varstore_round_trip_and_incompatible_models_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let a = model(&[8, 8, 8], 1);
        let moments: Vec<(String, Tensor)> = a
            .variables()
            .into_iter()
            .map(|(n, t)| (n, t.zeros_like() + 0.5))
            .collect();
        let groups = [
            TensorGroup::from_varstore("", &a),
            TensorGroup::new("optim.m.", moments),
        ];
        assert_eq!(groups[0].tensors[0].0, "trunk.layers.0.wq.bias");
        let path = save(tmp.path(), &groups, &meta(1), 0).unwrap();
        let ck = load(&path).unwrap();

        let mut b = model(&[8, 8, 8], 2);
        assert_ne!(var_bytes(&a), var_bytes(&b));
        load_into_varstore(&mut b, &ck, "").unwrap();
        assert_eq!(var_bytes(&a), var_bytes(&b));
        // The optimiser group loads into a store of the same shapes.
        let mut m = model(&[8, 8, 8], 3);
        load_into_varstore(&mut m, &ck, "optim.m.").unwrap();
        assert!(m
            .variables()
            .values()
            .all(|t| t.eq(0.5).all().int64_value(&[]) == 1));

        // Layer 1 wider, layer 2 gone, layer 3 new.
        let mut c = model(&[8, 16], 4);
        let _ = nn::linear(
            c.root().sub("trunk").sub("layers").sub("3").sub("wq"),
            8,
            8,
            Default::default(),
        );
        let before = var_bytes(&c);
        let err = load_into_varstore(&mut c, &ck, "").unwrap_err();
        let msg = err.to_string();
        let CheckpointError::Incompatible { problems, .. } = &err else {
            panic!("{msg}")
        };
        assert_eq!(
            problems,
            &vec![
                "tensor trunk.layers.1.wq.bias: shape [8] in checkpoint, [16] in model".to_string(),
                "tensor trunk.layers.1.wq.weight: shape [8, 8] in checkpoint, [16, 8] in model".into(),
                "tensor trunk.layers.3.wq.bias: missing in checkpoint".into(),
                "tensor trunk.layers.3.wq.weight: missing in checkpoint".into(),
                "tensor trunk.layers.2.wq.bias: unexpected in checkpoint (no such variable in the model)".into(),
                "tensor trunk.layers.2.wq.weight: unexpected in checkpoint (no such variable in the model)".into(),
            ]
        );
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("6 problems"),
            "{msg}"
        );
        assert_eq!(
            var_bytes(&c),
            before,
            "nothing is copied when anything does not fit"
        );

        let mut d = nn::VarStore::new(Device::Cpu);
        let _ = d.root().var("x", &[8], nn::Init::Const(0.0));
        d.half();
        let ck2_path = save(
            &tmp.path().join("two"),
            &[TensorGroup::new(
                "",
                vec![("x".into(), Tensor::zeros([8], (Kind::Float, Device::Cpu)))],
            )],
            &meta(1),
            0,
        )
        .unwrap();
        let msg = load_into_varstore(&mut d, &load(&ck2_path).unwrap(), "")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("tensor x: dtype Float in checkpoint, Half in model"),
            "{msg}"
        );
        let msg = load_into_varstore(&mut b, &ck, "optim.v.")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("no tensor group 'optim.v.'"), "{msg}");
    }

    #[test]
    fn last_k_are_kept_and_temp_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("checkpoints");
        assert_eq!(
            latest(&dir).unwrap(),
            None,
            "a missing folder has no checkpoint"
        );
        let g = [TensorGroup::new(
            "",
            vec![("w".into(), Tensor::ones([2], (Kind::Float, Device::Cpu)))],
        )];
        for step in [100u64, 200, 300, 400, 500] {
            save(&dir, &g, &meta(step), 3).unwrap();
        }
        let steps: Vec<u64> = list(&dir).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![300, 400, 500]);
        // A save killed before its rename leaves a temp file (and junk may lie around).
        for junk in [
            ".ckpt_000000000900.safetensors.tmp.1.2",
            "ckpt_9.safetensors",
            "ckpt_000000000800.safetensors.partial",
        ] {
            std::fs::write(dir.join(junk), b"half a file").unwrap();
        }
        assert_eq!(latest(&dir).unwrap(), Some(checkpoint_path(&dir, 500)));
        assert_eq!(
            load(&latest(&dir).unwrap().unwrap()).unwrap().meta.step,
            500
        );
        // Saving an older step keeps the file just written.
        save(&dir, &g, &meta(250), 3).unwrap();
        let steps: Vec<u64> = list(&dir).unwrap().into_iter().map(|(s, _)| s).collect();
        assert_eq!(steps, vec![250, 400, 500]);
        save(&dir, &g, &meta(600), 0).unwrap();
        assert_eq!(list(&dir).unwrap().len(), 4, "keep_last 0 keeps everything");

        // A rejected save writes nothing and leaves no temp file.
        let files_before = std::fs::read_dir(&dir).unwrap().count();
        let dup = [
            TensorGroup::new(
                "",
                vec![(
                    "optim.m.w".into(),
                    Tensor::ones([1], (Kind::Float, Device::Cpu)),
                )],
            ),
            TensorGroup::new(
                "optim.m.",
                vec![("w".into(), Tensor::ones([1], (Kind::Float, Device::Cpu)))],
            ),
        ];
        let msg = save(&dir, &dup, &meta(700), 3).unwrap_err().to_string();
        assert!(msg.contains("tensor optim.m.w of group ''"), "{msg}");
        let mut reserved = meta(700);
        reserved.extra.insert("step".into(), "1".into());
        assert!(save(&dir, &g, &reserved, 3)
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        let complex = [TensorGroup::new(
            "",
            vec![(
                "z".into(),
                Tensor::ones([1], (Kind::ComplexFloat, Device::Cpu)),
            )],
        )];
        assert!(save(&dir, &complex, &meta(700), 3)
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), files_before);

        // A folder that cannot be created: the error names it.
        let blocker = tmp.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let msg = save(&blocker.join("sub"), &g, &meta(1), 3)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("file/sub"), "{msg}");
    }

    #[test]
    fn damaged_files_give_errors_naming_the_path() {
        let tmp = tempfile::tempdir().unwrap();
        let g = [TensorGroup::new("", sample_tensors())];
        let path = save(tmp.path(), &g, &meta(5), 0).unwrap();
        let good = std::fs::read(&path).unwrap();
        let p = path.display().to_string();
        let check = |bytes: &[u8], want: &str| {
            std::fs::write(&path, bytes).unwrap();
            let msg = load(&path).unwrap_err().to_string();
            assert!(
                msg.contains(&p) && msg.contains(want),
                "want '{want}' in: {msg}"
            );
        };
        let mut flipped = good.clone();
        let last = flipped.len() - 1; // the last byte of the last tensor's data
        flipped[last] ^= 0x04;
        check(&flipped, "checksum mismatch");
        check(&good[..good.len() - 10], "truncated or damaged");
        check(&good[..5], "truncated or damaged");
        check(b"", "truncated or damaged");
        let mut header = good.clone();
        header[10] = b'#';
        check(&header, "truncated or damaged");
        // A valid safetensors file that is not ours.
        let foreign = safetensors::serialize(Vec::<(&str, &Bytes)>::new(), None).unwrap();
        check(&foreign, "not an icrl checkpoint");
        let msg = load(&tmp.path().join("missing.safetensors"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("missing.safetensors") && msg.contains("read"),
            "{msg}"
        );
    }

    /// Rewrites a checkpoint with its tensors unchanged and its metadata edited by `edit`.
    fn rewrite_metadata(path: &Path, edit: impl FnOnce(&mut HashMap<String, String>)) {
        let bytes = std::fs::read(path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
        let mut map = header.metadata().clone().unwrap();
        edit(&mut map);
        let tensors: Vec<(String, Bytes)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| {
                let b = Bytes {
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    data: view.data().to_vec(),
                };
                (name, b)
            })
            .collect();
        let refs: Vec<(&str, &Bytes)> = tensors.iter().map(|(n, b)| (n.as_str(), b)).collect();
        safetensors::serialize_to_file(refs, Some(map), path).unwrap();
    }

    #[test]
    fn edited_metadata_is_refused_and_version_1_files_still_load() {
        let tmp = tempfile::tempdir().unwrap();
        let g = [TensorGroup::new("", sample_tensors())];
        let path = save(tmp.path(), &g, &meta(5), 0).unwrap();
        assert!(load(&path).is_ok());
        // The trainer state edited (the issue's case: env_steps), the step, an extra entry.
        for (key, value) in [
            (
                "state",
                r#"{"rng":[1,18446744073709551615,3],"updates":99,"lr":0.00025}"#,
            ),
            ("step", "6"),
            ("git", "def456"),
        ] {
            let good = std::fs::read(&path).unwrap();
            rewrite_metadata(&path, |m| {
                m.insert(key.into(), value.into());
            });
            let msg = load(&path).unwrap_err().to_string();
            assert!(msg.contains("metadata checksum mismatch"), "{key}: {msg}");
            std::fs::write(&path, good).unwrap();
        }
        // Removing the checksum of a version 2 file is no way around it.
        rewrite_metadata(&path, |m| {
            m.remove(META_CRC_KEY);
        });
        let msg = load(&path).unwrap_err().to_string();
        assert!(msg.contains("'meta_crc32' is missing"), "{msg}");
        // A version 1 file (written before the metadata checksum) loads as before.
        rewrite_metadata(&path, |m| {
            m.insert("format_version".into(), "1".into());
        });
        let ck = load(&path).unwrap();
        assert_eq!(ck.meta, meta(5));
    }

    /// The Python safetensors library opens our files: every tensor, the metadata, the values.
    #[test]
    fn python_safetensors_reads_our_files() {
        let tmp = tempfile::tempdir().unwrap();
        let tensors = sample_tensors();
        let path = save(
            tmp.path(),
            &[TensorGroup::new("", tensors.shallow())],
            &meta(9),
            0,
        )
        .unwrap();
        let script = r#"
import json, struct, sys, torch
from safetensors import safe_open
out = {"tensors": {}}
with safe_open(sys.argv[1], "pt") as f:
    out["metadata"] = f.metadata()
    for k in f.keys():
        t = f.get_tensor(k)
        # values as the bits of their float64 value: exact through JSON
        bits = [struct.unpack("<q", struct.pack("<d", x))[0] for x in t.to(torch.float64).flatten().tolist()]
        out["tensors"][k] = [str(t.dtype), list(t.shape), bits]
print(json.dumps(out))
"#;
        let stdout = crate::run::logging::tests::run_python(script, &[&path]);
        let v: serde_json::Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let md = &v["metadata"];
        assert_eq!(md["step"], "9");
        assert_eq!(md["format_version"], FORMAT_VERSION.to_string());
        assert_eq!(md["config"], meta(9).config);
        assert_eq!(md["git"], "abc123");
        let state: serde_json::Value = serde_json::from_str(md["state"].as_str().unwrap()).unwrap();
        assert_eq!(state, meta(9).state);
        let got = v["tensors"].as_object().unwrap();
        assert_eq!(got.len(), tensors.len());
        for (name, t) in &tensors {
            let torch_dtype = match t.kind() {
                Kind::Float => "torch.float32",
                Kind::Double => "torch.float64",
                Kind::BFloat16 => "torch.bfloat16",
                Kind::Half => "torch.float16",
                Kind::Int64 => "torch.int64",
                Kind::Int => "torch.int32",
                Kind::Uint8 => "torch.uint8",
                Kind::Bool => "torch.bool",
                k => panic!("{k:?}"),
            };
            let want: Vec<f64> = Vec::try_from(t.to_kind(Kind::Double).flatten(0, -1)).unwrap();
            let want: Vec<i64> = want.iter().map(|x| x.to_bits() as i64).collect();
            let shape: Vec<i64> = t.size();
            assert_eq!(
                got[name],
                serde_json::json!([torch_dtype, shape, want]),
                "{name}"
            );
        }
    }

    trait Shallow {
        fn shallow(&self) -> Self;
    }
    impl Shallow for Vec<(String, Tensor)> {
        fn shallow(&self) -> Self {
            self.iter()
                .map(|(n, t)| (n.clone(), t.shallow_clone()))
                .collect()
        }
    }
}
