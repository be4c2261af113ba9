//! Pretraining datasets for DPT and AD (`icrl data`): generation, a compact binary file format,
//! and memory-mapped reading.
//!
//! # What a record holds
//! One record is one training example of one task: a query observation with its optimal-action
//! label (DPT) and `T = context_len` transitions `(s, a, r, s')` with per-step flags and the
//! step within the episode (the whole learning history, or a window of it, for AD). The
//! generators ([`ContextKind`]):
//! - `Uniform` (grid worlds): DPT's contexts, i.i.d. uniform states and actions.
//! - `DirichletMixture` (bandit): DPT's bandit contexts.
//! - `RandomWalk` (any env): `T` consecutive steps of a uniformly random policy from a trial's
//!   start; episodes auto-reset inside the context.
//! - `LearningHistory` (any env): tabular Q-learning over hashed observations (the observation
//!   bytes are the table key), epsilon decaying linearly; each record is a window of a history.
//!
//! Query states: uniform over the states on grid worlds (as DPT), a constant on bandits, and on
//! other envs the state reached after a random walk of uniformly random length (below the
//! horizon) from an episode start. Labels come from the env's oracle.
//!
//! Image observations (`one_room`, `house_nav`) are **stored** as RGB bytes at the configured
//! image size (no re-rendering at training time): a 25x25 frame costs 1875 bytes, twice per
//! transition (s and s').
//!
//! # File format (version 1, little endian)
//! ```text
//! 0   magic "ICRLDSET" (8 bytes)
//! 8   version u32
//! 12  header length H u32
//! 16  payload length u64 (bytes)
//! 24  CRC-32 of the payload u32
//! 28  reserved u32 (0)
//! 32  header: H bytes of JSON (Header: env and its config, split, generator, sizes, seed,
//!     config hash)
//! ..  zero padding to a multiple of 8
//! P   payload: `records` fixed-size records (layout: [`Layout`])
//! ```
//! Files are written to a temporary file of their own while streaming (a progress bar counts
//! records), the payload length and checksum are patched in at the end, and the file is
//! linked into place under a lock that jobs needing the same dataset share
//! ([`generate_file`]).
//! Readers map the file and refuse a wrong magic or version, a truncated file, a checksum
//! mismatch, or a header that does not match the config asking for it.

use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use envs::grid::GridRules;
use envs::{EnvConfig, ObsBatch, Split, StepBatch, TaskId};

use crate::config::{ContextKind, DataConfig};
use crate::error::UsageError;

/// First bytes of every dataset file.
pub const MAGIC: &[u8; 8] = b"ICRLDSET";
/// Format version written and accepted.
pub const VERSION: u32 = 1;
/// Bytes before the JSON header.
const PREAMBLE: usize = 32;
/// File extension of datasets.
pub const EXTENSION: &str = "icrld";

/// Flag: this step is the first of an episode.
pub const FLAG_START: u8 = 1;
/// Flag: the episode ended with this step (terminated or truncated).
pub const FLAG_DONE: u8 = 2;
/// Flag: the episode terminated with this step.
pub const FLAG_TERMINATED: u8 = 4;

/// The JSON header of a dataset file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Header {
    /// Format version (= the preamble's).
    pub version: u32,
    /// Environment name.
    pub env: String,
    /// The env section it was generated for (RON).
    pub env_config: String,
    /// The data section it was generated for (RON, `cache_dir` cleared).
    pub data_config: String,
    /// Task split the records come from: "train" or "test".
    pub split: String,
    /// Context generator.
    pub context: ContextKind,
    /// Which code produced it.
    pub generator: String,
    /// Number of records.
    pub records: u64,
    /// Distinct tasks.
    pub tasks: usize,
    /// Transitions per record.
    pub context_len: usize,
    /// f32 features of an observation vector.
    pub state_dim: usize,
    /// Bytes of an image observation (0 without images).
    pub image_bytes: usize,
    /// Actions of the env.
    pub num_actions: usize,
    /// Bytes per record.
    pub record_bytes: usize,
    /// Generator seed.
    pub seed: u64,
    /// Hash of (version, env section, data section without cache_dir, split), hex.
    pub config_hash: String,
}

/// Byte layout of one record (all fields little endian):
/// `task u64 | label u32 | query_vec [S] f32 | query_img [I] u8 | pad4 | vec [T, S] f32 |
/// next_vec [T, S] f32 | reward [T] f32 | step [T] u32 | action [T] u8 | flags [T] u8 |
/// img [T, I] u8 | next_img [T, I] u8 | pad8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// State (vector) dimension S.
    pub s: usize,
    /// Image bytes I.
    pub i: usize,
    /// Transitions T.
    pub t: usize,
}

fn pad(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl Layout {
    fn query_vec(&self) -> usize {
        12
    }
    fn query_img(&self) -> usize {
        12 + 4 * self.s
    }
    fn vec(&self) -> usize {
        pad(self.query_img() + self.i, 4)
    }
    fn next_vec(&self) -> usize {
        self.vec() + 4 * self.t * self.s
    }
    fn reward(&self) -> usize {
        self.next_vec() + 4 * self.t * self.s
    }
    fn step(&self) -> usize {
        self.reward() + 4 * self.t
    }
    fn action(&self) -> usize {
        self.step() + 4 * self.t
    }
    fn flags(&self) -> usize {
        self.action() + self.t
    }
    fn img(&self) -> usize {
        self.flags() + self.t
    }
    fn next_img(&self) -> usize {
        self.img() + self.t * self.i
    }
    /// Bytes of one record.
    pub fn bytes(&self) -> usize {
        pad(self.next_img() + self.t * self.i, 8)
    }
}

/// One record, owned (what generators produce).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Record {
    /// The task.
    pub task: TaskId,
    /// Optimal action of the query state.
    pub label: u32,
    /// Query observation vector `[S]`.
    pub query_vec: Vec<f32>,
    /// Query image `[I]` (empty without images).
    pub query_img: Vec<u8>,
    /// Observation before each step `[T, S]`.
    pub vec: Vec<f32>,
    /// Observation after each step (before any auto-reset) `[T, S]`.
    pub next_vec: Vec<f32>,
    /// Reward of each step `[T]`.
    pub reward: Vec<f32>,
    /// Step within the episode of each step `[T]`.
    pub step: Vec<u32>,
    /// Action of each step `[T]`.
    pub action: Vec<u8>,
    /// [`FLAG_START`] / [`FLAG_DONE`] / [`FLAG_TERMINATED`] of each step `[T]`.
    pub flags: Vec<u8>,
    /// Image before each step `[T, I]`.
    pub img: Vec<u8>,
    /// Image after each step `[T, I]`.
    pub next_img: Vec<u8>,
}

impl Record {
    fn with_layout(l: &Layout) -> Record {
        Record {
            task: 0,
            label: 0,
            query_vec: vec![0.0; l.s],
            query_img: vec![0; l.i],
            vec: vec![0.0; l.t * l.s],
            next_vec: vec![0.0; l.t * l.s],
            reward: vec![0.0; l.t],
            step: vec![0; l.t],
            action: vec![0; l.t],
            flags: vec![0; l.t],
            img: vec![0; l.t * l.i],
            next_img: vec![0; l.t * l.i],
        }
    }

    /// Appends the record's bytes to `out` (the layout must match its lengths).
    pub fn encode(&self, l: &Layout, out: &mut Vec<u8>) -> Result<()> {
        anyhow::ensure!(
            self.query_vec.len() == l.s
                && self.query_img.len() == l.i
                && self.vec.len() == l.t * l.s
                && self.next_vec.len() == l.t * l.s
                && self.reward.len() == l.t
                && self.step.len() == l.t
                && self.action.len() == l.t
                && self.flags.len() == l.t
                && self.img.len() == l.t * l.i
                && self.next_img.len() == l.t * l.i,
            "record of task {} does not fit the layout {l:?}",
            self.task
        );
        let start = out.len();
        out.extend_from_slice(&self.task.to_le_bytes());
        out.extend_from_slice(&self.label.to_le_bytes());
        let f32s = |out: &mut Vec<u8>, v: &[f32]| {
            for x in v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
        f32s(out, &self.query_vec);
        out.extend_from_slice(&self.query_img);
        out.resize(start + l.vec(), 0);
        f32s(out, &self.vec);
        f32s(out, &self.next_vec);
        f32s(out, &self.reward);
        for x in &self.step {
            out.extend_from_slice(&x.to_le_bytes());
        }
        out.extend_from_slice(&self.action);
        out.extend_from_slice(&self.flags);
        out.extend_from_slice(&self.img);
        out.extend_from_slice(&self.next_img);
        out.resize(start + l.bytes(), 0);
        Ok(())
    }
}

/// A record inside a mapped file: typed accessors that copy into caller buffers.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    bytes: &'a [u8],
    layout: Layout,
}

fn read_f32s(src: &[u8], dst: &mut [f32]) {
    for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
}

impl<'a> RecordView<'a> {
    /// A view of one encoded record (`bytes.len() == layout.bytes()`, as written by
    /// [`Record::encode`]).
    pub fn new(bytes: &'a [u8], layout: Layout) -> Self {
        RecordView { bytes, layout }
    }

    /// The record's layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }
    /// The task.
    pub fn task(&self) -> TaskId {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[0..8]);
        u64::from_le_bytes(b)
    }
    /// The query's optimal action.
    pub fn label(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[8..12]);
        u32::from_le_bytes(b)
    }
    /// Copies the query vector into `dst` (`[S]`).
    pub fn query_vec(&self, dst: &mut [f32]) {
        let l = self.layout;
        read_f32s(&self.bytes[l.query_vec()..l.query_img()], dst);
    }
    /// The query image bytes (`[I]`).
    pub fn query_img(&self) -> &'a [u8] {
        let l = self.layout;
        &self.bytes[l.query_img()..l.query_img() + l.i]
    }
    /// Copies observation vectors of steps `range` into `dst` (`[len, S]`).
    pub fn vec(&self, range: std::ops::Range<usize>, dst: &mut [f32]) {
        let (l, s) = (self.layout, self.layout.s);
        read_f32s(
            &self.bytes[l.vec() + 4 * s * range.start..l.vec() + 4 * s * range.end],
            dst,
        );
    }
    /// Copies next-observation vectors of steps `range` into `dst` (`[len, S]`).
    pub fn next_vec(&self, range: std::ops::Range<usize>, dst: &mut [f32]) {
        let (l, s) = (self.layout, self.layout.s);
        read_f32s(
            &self.bytes[l.next_vec() + 4 * s * range.start..l.next_vec() + 4 * s * range.end],
            dst,
        );
    }
    /// Copies rewards of steps `range` into `dst`.
    pub fn reward(&self, range: std::ops::Range<usize>, dst: &mut [f32]) {
        let l = self.layout;
        read_f32s(
            &self.bytes[l.reward() + 4 * range.start..l.reward() + 4 * range.end],
            dst,
        );
    }
    /// The step within its episode of step `k`.
    pub fn step(&self, k: usize) -> u32 {
        let o = self.layout.step() + 4 * k;
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[o..o + 4]);
        u32::from_le_bytes(b)
    }
    /// Actions of all steps (`[T]`).
    pub fn actions(&self) -> &'a [u8] {
        let l = self.layout;
        &self.bytes[l.action()..l.action() + l.t]
    }
    /// Flags of all steps (`[T]`).
    pub fn flags(&self) -> &'a [u8] {
        let l = self.layout;
        &self.bytes[l.flags()..l.flags() + l.t]
    }
    /// Images of steps `range` (`[len, I]` bytes).
    pub fn img(&self, range: std::ops::Range<usize>) -> &'a [u8] {
        let (l, i) = (self.layout, self.layout.i);
        &self.bytes[l.img() + i * range.start..l.img() + i * range.end]
    }
    /// Next images of steps `range` (`[len, I]` bytes).
    pub fn next_img(&self, range: std::ops::Range<usize>) -> &'a [u8] {
        let (l, i) = (self.layout, self.layout.i);
        &self.bytes[l.next_img() + i * range.start..l.next_img() + i * range.end]
    }

    /// The whole record, owned.
    pub fn to_record(&self) -> Record {
        let l = self.layout;
        let mut r = Record::with_layout(&l);
        r.task = self.task();
        r.label = self.label();
        self.query_vec(&mut r.query_vec);
        r.query_img.copy_from_slice(self.query_img());
        self.vec(0..l.t, &mut r.vec);
        self.next_vec(0..l.t, &mut r.next_vec);
        self.reward(0..l.t, &mut r.reward);
        for k in 0..l.t {
            r.step[k] = self.step(k);
        }
        r.action.copy_from_slice(self.actions());
        r.flags.copy_from_slice(self.flags());
        r.img.copy_from_slice(self.img(0..l.t));
        r.next_img.copy_from_slice(self.next_img(0..l.t));
        r
    }
}

/// A dataset file, memory-mapped.
pub struct Dataset {
    /// The file.
    pub path: PathBuf,
    /// Its header.
    pub header: Header,
    layout: Layout,
    offset: usize,
    mmap: memmap2::Mmap,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("path", &self.path)
            .field("header", &self.header)
            .finish()
    }
}

impl Dataset {
    /// Maps and checks a dataset file: magic, version, sizes against the file length
    /// (truncation), the payload checksum, and, when `expected` is given, that it was
    /// generated for the same env, data section and split.
    pub fn open(path: &Path, expected: Option<&Header>) -> Result<Dataset> {
        let bad = |what: String| -> anyhow::Error {
            UsageError(format!(
                "{}: {what}; delete the file and run `icrl data` (or `icrl train`) again to regenerate it",
                path.display()
            ))
            .into()
        };
        let file = std::fs::File::open(path)
            .map_err(|e| UsageError(format!("{}: cannot open the dataset: {e}", path.display())))?;
        // SAFETY: the map is read-only and the file is never modified in place by icrl (new
        // datasets are written to a temporary file and renamed); another process truncating
        // it while mapped is outside what we guard against.
        let mmap = unsafe { memmap2::Mmap::map(&file) }
            .map_err(|e| UsageError(format!("{}: cannot map the dataset: {e}", path.display())))?;
        if mmap.len() < PREAMBLE || &mmap[0..8] != MAGIC {
            return Err(bad("not an icrl dataset (bad magic)".into()));
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([mmap[o], mmap[o + 1], mmap[o + 2], mmap[o + 3]]);
        let version = u32_at(8);
        if version != VERSION {
            return Err(bad(format!(
                "format version {version}, this icrl reads version {VERSION}"
            )));
        }
        let header_len = u32_at(12) as usize;
        let mut b8 = [0u8; 8];
        b8.copy_from_slice(&mmap[16..24]);
        let payload_len = u64::from_le_bytes(b8) as usize;
        let crc = u32_at(24);
        if mmap.len() < PREAMBLE + header_len {
            return Err(bad(format!(
                "truncated: the header needs {} bytes, the file has {}",
                PREAMBLE + header_len,
                mmap.len()
            )));
        }
        let header: Header = serde_json::from_slice(&mmap[PREAMBLE..PREAMBLE + header_len])
            .map_err(|e| bad(format!("unreadable header: {e}")))?;
        let layout = Layout {
            s: header.state_dim,
            i: header.image_bytes,
            t: header.context_len,
        };
        if layout.bytes() != header.record_bytes {
            return Err(bad(format!(
                "header says {} bytes per record, the layout needs {}",
                header.record_bytes,
                layout.bytes()
            )));
        }
        let offset = pad(PREAMBLE + header_len, 8);
        let want = header
            .records
            .checked_mul(header.record_bytes as u64)
            .ok_or_else(|| bad("record count overflows".into()))? as usize;
        if payload_len != want {
            return Err(bad(format!(
                "incomplete: the payload holds {payload_len} bytes, {} records need {want} (was generation interrupted?)",
                header.records
            )));
        }
        if mmap.len() != offset + want {
            return Err(bad(format!(
                "truncated or padded: expected {} bytes, the file has {}",
                offset + want,
                mmap.len()
            )));
        }
        let actual = crc32fast::hash(&mmap[offset..]);
        if actual != crc {
            return Err(bad(format!(
                "checksum mismatch (stored {crc:08x}, computed {actual:08x}): the file is corrupt"
            )));
        }
        if let Some(e) = expected {
            let mut diffs = Vec::new();
            if e.env != header.env {
                diffs.push(format!("env {} (expected {})", header.env, e.env));
            }
            if e.split != header.split {
                diffs.push(format!("split {} (expected {})", header.split, e.split));
            }
            if e.config_hash != header.config_hash {
                diffs.push(format!(
                    "config hash {} (expected {}: the env or data section differs)",
                    header.config_hash, e.config_hash
                ));
            }
            for (name, a, b) in [
                ("context_len", header.context_len, e.context_len),
                ("state_dim", header.state_dim, e.state_dim),
                ("image_bytes", header.image_bytes, e.image_bytes),
                ("num_actions", header.num_actions, e.num_actions),
            ] {
                if a != b {
                    diffs.push(format!("{name} {a} (expected {b})"));
                }
            }
            if !diffs.is_empty() {
                return Err(bad(format!(
                    "generated for another config: {}",
                    diffs.join(", ")
                )));
            }
        }
        Ok(Dataset {
            path: path.to_path_buf(),
            header,
            layout,
            offset,
            mmap,
        })
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.header.records as usize
    }

    /// True without records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Record `i` (`i < len()`, else an error).
    pub fn record(&self, i: usize) -> Result<RecordView<'_>> {
        anyhow::ensure!(
            i < self.len(),
            "record {i} out of range: {} has {} records",
            self.path.display(),
            self.len()
        );
        let n = self.layout.bytes();
        let start = self.offset + i * n;
        Ok(RecordView {
            bytes: &self.mmap[start..start + n],
            layout: self.layout,
        })
    }
}

/// 64-bit FNV-1a.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The expected header of the dataset of (`env`, `data`, `split`), without the counts that
/// only the file knows (records are computed from the config).
pub fn expected_header(env: &EnvConfig, data: &DataConfig, split: Split) -> Result<Header> {
    let spec = env.spec();
    let mut data_clean = data.clone();
    data_clean.cache_dir = None;
    let env_config = crate::config::to_ron_string(env);
    let data_config = crate::config::to_ron_string(&data_clean);
    let split_name = split.name();
    // The task list is part of the key: a change of an env's split makes a new dataset.
    let tasks = task_list(env, data, split)?;
    let key = format!("v{VERSION}\n{env_config}\n{data_config}\n{split_name}\n{tasks:?}");
    let layout = Layout {
        s: spec.vector_dim,
        i: spec.image_bytes(),
        t: data.context_len,
    };
    Ok(Header {
        version: VERSION,
        env: env.name().to_string(),
        env_config,
        data_config,
        split: split_name.into(),
        context: data.context,
        generator: format!("icrl {} trainer/src/data.rs", env!("CARGO_PKG_VERSION")),
        records: (tasks.len() * data.samples_per_task) as u64,
        tasks: tasks.len(),
        context_len: data.context_len,
        state_dim: spec.vector_dim,
        image_bytes: spec.image_bytes(),
        num_actions: spec.num_actions,
        record_bytes: layout.bytes(),
        seed: data.seed,
        config_hash: format!("{:016x}", fnv1a(key.as_bytes())),
    })
}

/// The tasks a dataset covers: the split's tasks, the first `max_tasks` of them.
pub fn task_list(env: &EnvConfig, data: &DataConfig, split: Split) -> Result<Vec<TaskId>> {
    let probe = env.build(0, 0, 1)?;
    let mut tasks = probe.tasks(split);
    if let Some(m) = data.max_tasks {
        tasks.truncate(m);
    }
    anyhow::ensure!(!tasks.is_empty(), "{} has no {split:?} tasks", env.name());
    Ok(tasks)
}

/// Where the dataset of (`env`, `data`) lives: `cache_dir` or `<runs>/datasets`, named by
/// env, generator and config hash.
pub fn dataset_path(env: &EnvConfig, data: &DataConfig, runs_dir: &Path) -> Result<PathBuf> {
    let h = expected_header(env, data, Split::Train)?;
    let dir = match &data.cache_dir {
        Some(d) => PathBuf::from(d),
        None => runs_dir.join("datasets"),
    };
    let kind = format!("{:?}", data.context).to_lowercase();
    Ok(dir.join(format!(
        "{}_{kind}_{}.{EXTENSION}",
        env.name(),
        h.config_hash
    )))
}

/// Checks that the generator fits the env.
fn check_kind(env: &EnvConfig, kind: ContextKind) -> Result<()> {
    let ok = match kind {
        ContextKind::Uniform => env.grid_rules().is_some(),
        ContextKind::DirichletMixture => matches!(env, EnvConfig::Bandit(_)),
        ContextKind::RandomWalk | ContextKind::LearningHistory => true,
    };
    if ok {
        Ok(())
    } else {
        Err(UsageError(format!(
            "data.context {kind:?} does not apply to env {}: Uniform needs a grid world \
             (darkroom, darkroom_ad, darkroom_hard, key_to_door, darkroom_random), DirichletMixture the bandit; \
             RandomWalk and LearningHistory work everywhere",
            env.name()
        ))
        .into())
    }
}

/// One unit of generation: records of one task from one seeded stream.
#[derive(Clone, Copy, Debug)]
struct Job {
    task: TaskId,
    seed: u64,
    records: usize,
}

/// The jobs of a dataset, in file order: per task, its records.
fn jobs(data: &DataConfig, tasks: &[TaskId], seed: u64) -> Vec<Job> {
    let per_job = match data.context {
        ContextKind::LearningHistory => data.windows_per_history,
        _ => 1,
    };
    let mut out = Vec::new();
    for (ti, &task) in tasks.iter().enumerate() {
        let mut left = data.samples_per_task;
        let mut j = 0u64;
        while left > 0 {
            let n = per_job.min(left);
            out.push(Job {
                task,
                seed: envs::rng::mix64(
                    seed ^ envs::rng::mix64((ti as u64) << 24 ^ j ^ 0xDA7A_0000_0000),
                ),
                records: n,
            });
            left -= n;
            j += 1;
        }
    }
    out
}

/// Generates the records of `per_task` samples for each of `tasks` in memory (offline
/// evaluation contexts, tests). Same generators as the files.
pub fn generate_in_memory(
    env: &EnvConfig,
    data: &DataConfig,
    tasks: &[TaskId],
    seed: u64,
) -> Result<Vec<Record>> {
    check_kind(env, data.context)?;
    let all = jobs(data, tasks, seed);
    let mut out = Vec::new();
    for chunk in all.chunks(chunk_jobs(env, data)) {
        out.extend(generate_chunk(env, data, chunk)?);
    }
    Ok(out)
}

/// Jobs run together in one vector env (bounded so a chunk's buffers stay near 64 MiB).
fn chunk_jobs(env: &EnvConfig, data: &DataConfig) -> usize {
    let spec = env.spec();
    let steps = match data.context {
        ContextKind::LearningHistory => data.history_len,
        _ => data.context_len,
    };
    let per_step = 8 * spec.vector_dim + 2 * spec.image_bytes() + 16;
    let per_job = steps.saturating_mul(per_step).max(1);
    ((64usize << 20) / per_job).clamp(1, 256)
}

fn generate_chunk(env: &EnvConfig, data: &DataConfig, jobs: &[Job]) -> Result<Vec<Record>> {
    let spec = env.spec();
    let layout = Layout {
        s: spec.vector_dim,
        i: spec.image_bytes(),
        t: data.context_len,
    };
    match data.context {
        ContextKind::Uniform => {
            let rules = env
                .grid_rules()
                .context("Uniform contexts need a grid world")?;
            jobs.iter()
                .map(|j| uniform_grid(&rules, &layout, j))
                .collect()
        }
        ContextKind::DirichletMixture => {
            let EnvConfig::Bandit(cfg) = env else {
                anyhow::bail!("DirichletMixture contexts need the bandit env");
            };
            Ok(jobs
                .iter()
                .map(|j| dirichlet_bandit(cfg, &layout, j))
                .collect())
        }
        ContextKind::RandomWalk | ContextKind::LearningHistory => {
            rollouts(env, data, &layout, jobs)
        }
    }
}

/// DPT's uniform Dark Room context: i.i.d. uniform states and actions; uniform query.
fn uniform_grid(rules: &GridRules, l: &Layout, job: &Job) -> Result<Record> {
    let task = rules.task(job.task)?;
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
    let mut r = Record::with_layout(l);
    r.task = job.task;
    let s = l.s;
    for k in 0..l.t {
        let state = rules.sample_state(&mut rng);
        let a = rng.random_range(0..envs::grid::NUM_ACTIONS as u32);
        let tr = rules.step_unchecked(&task, state, a);
        rules.observe(&state, &mut r.vec[k * s..(k + 1) * s]);
        rules.observe(&tr.next, &mut r.next_vec[k * s..(k + 1) * s]);
        r.reward[k] = tr.reward;
        r.action[k] = a as u8;
        r.flags[k] = if tr.terminated { FLAG_TERMINATED } else { 0 };
    }
    let q = rules.sample_state(&mut rng);
    rules.observe(&q, &mut r.query_vec);
    r.label = rules.optimal_action(&task, &q);
    Ok(r)
}

/// A standard normal draw (Box-Muller).
pub fn normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// DPT's bandit context: pulls i.i.d. from (1 - w) Dirichlet(1) + w onehot(random arm).
fn dirichlet_bandit(cfg: &envs::BanditConfig, l: &Layout, job: &Job) -> Record {
    let mut rng = ChaCha8Rng::seed_from_u64(job.seed);
    let means = envs::bandit::arm_means(job.task, cfg.arms);
    let probs = dirichlet_mixture_probs(cfg.arms, &mut rng);
    let mut r = Record::with_layout(l);
    r.task = job.task;
    for k in 0..l.t {
        let a = sample_categorical(&probs, rng.random::<f64>());
        r.action[k] = a as u8;
        r.reward[k] = means[a] + cfg.noise_std * normal(&mut rng) as f32;
        r.step[k] = k as u32;
    }
    r.label = envs::bandit::best_arm(&means);
    r
}

/// Arm probabilities (1 - w) Dirichlet(1) + w onehot(random arm), w uniform in {0, .1, .., 1}.
pub fn dirichlet_mixture_probs(arms: usize, rng: &mut impl Rng) -> Vec<f64> {
    let w = rng.random_range(0..=10) as f64 / 10.0;
    let e: Vec<f64> = (0..arms)
        .map(|_| -(rng.random::<f64>().max(f64::MIN_POSITIVE)).ln())
        .collect();
    let total: f64 = e.iter().sum();
    let hot = rng.random_range(0..arms);
    e.iter()
        .enumerate()
        .map(|(i, x)| (1.0 - w) * x / total + if i == hot { w } else { 0.0 })
        .collect()
}

/// Index drawn from `probs` with the uniform draw `u` in [0, 1).
pub fn sample_categorical(probs: &[f64], u: f64) -> usize {
    let mut acc = 0.0;
    for (i, p) in probs.iter().enumerate() {
        acc += p;
        if u < acc {
            return i;
        }
    }
    probs.len() - 1
}

/// Hash of one slot's observation (vector bits and image bytes): the Q-table key.
fn obs_key(obs: &ObsBatch, slot: usize, s: usize, i: usize) -> u64 {
    let mut h = fnv1a(&[]);
    for x in &obs.vector[slot * s..(slot + 1) * s] {
        h = envs::rng::mix64(h ^ x.to_bits() as u64);
    }
    if i > 0 {
        h ^= fnv1a(&obs.image[slot * i..(slot + 1) * i]);
    }
    h
}

/// Random walks or Q-learning histories of every job's task, in lockstep in one vector env.
fn rollouts(env: &EnvConfig, data: &DataConfig, l: &Layout, jobs: &[Job]) -> Result<Vec<Record>> {
    let n = jobs.len();
    let spec = env.spec();
    let (s, i, a_n) = (l.s, l.i, spec.num_actions);
    let learning = data.context == ContextKind::LearningHistory;
    let steps = if learning { data.history_len } else { l.t };
    let env_seed = jobs.first().map_or(0, |j| j.seed);
    let mut venv = env.build(env_seed, 0, n)?;
    for (slot, j) in jobs.iter().enumerate() {
        venv.set_task(slot, j.task)?;
    }
    let mut obs = ObsBatch::new(&spec, n);
    venv.reset(&mut obs);
    let mut out = StepBatch::new(&spec, n);
    let mut rngs: Vec<ChaCha8Rng> = jobs
        .iter()
        .map(|j| ChaCha8Rng::seed_from_u64(j.seed))
        .collect();
    // Whole histories: [slot][step].
    let mut hist: Vec<Record> = (0..n)
        .map(|_| Record::with_layout(&Layout { s, i, t: steps }))
        .collect();
    let mut q: Vec<HashMap<u64, Vec<f32>>> = vec![HashMap::new(); n];
    let mut step_in_ep = vec![0u32; n];
    let mut actions = vec![0u32; n];
    let mut keys = vec![0u64; n];
    for t in 0..steps {
        let eps = if steps > 1 {
            data.q_epsilon_start
                + (data.q_epsilon_end - data.q_epsilon_start) * t as f64 / (steps - 1) as f64
        } else {
            data.q_epsilon_start
        };
        for slot in 0..n {
            let rng = &mut rngs[slot];
            actions[slot] = if learning {
                keys[slot] = obs_key(&obs, slot, s, i);
                let row = q[slot].entry(keys[slot]).or_insert_with(|| vec![0.0; a_n]);
                if rng.random::<f64>() < eps {
                    rng.random_range(0..a_n as u32)
                } else {
                    let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    let ties: Vec<usize> = (0..a_n).filter(|&a| row[a] == best).collect();
                    ties[rng.random_range(0..ties.len())] as u32
                }
            } else {
                rng.random_range(0..a_n as u32)
            };
            let h = &mut hist[slot];
            h.vec[t * s..(t + 1) * s].copy_from_slice(&obs.vector[slot * s..(slot + 1) * s]);
            h.img[t * i..(t + 1) * i].copy_from_slice(&obs.image[slot * i..(slot + 1) * i]);
            h.action[t] = actions[slot] as u8;
            h.step[t] = step_in_ep[slot];
            h.flags[t] = if step_in_ep[slot] == 0 { FLAG_START } else { 0 };
        }
        venv.step(&actions, &mut out)?;
        for slot in 0..n {
            let done = out.terminated[slot] || out.truncated[slot];
            let next = if done { &out.final_obs } else { &out.obs };
            let h = &mut hist[slot];
            h.next_vec[t * s..(t + 1) * s].copy_from_slice(&next.vector[slot * s..(slot + 1) * s]);
            h.next_img[t * i..(t + 1) * i].copy_from_slice(&next.image[slot * i..(slot + 1) * i]);
            h.reward[t] = out.reward[slot];
            if done {
                h.flags[t] |= FLAG_DONE;
            }
            if out.terminated[slot] {
                h.flags[t] |= FLAG_TERMINATED;
            }
            if learning {
                let next_key = obs_key(next, slot, s, i);
                let future = if out.terminated[slot] {
                    0.0
                } else {
                    q[slot]
                        .get(&next_key)
                        .map_or(0.0, |r| r.iter().cloned().fold(f32::NEG_INFINITY, f32::max))
                };
                let target = out.reward[slot] + data.q_gamma as f32 * future;
                if let Some(row) = q[slot].get_mut(&keys[slot]) {
                    let a = actions[slot] as usize;
                    row[a] += data.q_lr as f32 * (target - row[a]);
                }
            }
            step_in_ep[slot] = if done { 0 } else { step_in_ep[slot] + 1 };
        }
        std::mem::swap(&mut obs, &mut out.obs);
        // `out.obs` now holds stale data; the next step overwrites it entirely.
    }
    // Cut records (windows) out of the histories and attach queries.
    let queries = query_states(env, l, jobs)?;
    let mut records = Vec::with_capacity(jobs.iter().map(|j| j.records).sum());
    for (slot, j) in jobs.iter().enumerate() {
        let rng = &mut rngs[slot];
        for w in 0..j.records {
            let off = if steps > l.t {
                rng.random_range(0..=steps - l.t)
            } else {
                0
            };
            let h = &hist[slot];
            let mut r = Record::with_layout(l);
            r.task = j.task;
            let span = off..off + l.t;
            r.vec.copy_from_slice(&h.vec[span.start * s..span.end * s]);
            r.next_vec
                .copy_from_slice(&h.next_vec[span.start * s..span.end * s]);
            r.img.copy_from_slice(&h.img[span.start * i..span.end * i]);
            r.next_img
                .copy_from_slice(&h.next_img[span.start * i..span.end * i]);
            r.reward.copy_from_slice(&h.reward[span.clone()]);
            r.step.copy_from_slice(&h.step[span.clone()]);
            r.action.copy_from_slice(&h.action[span.clone()]);
            r.flags.copy_from_slice(&h.flags[span]);
            let (qv, qi, label) = &queries[slot][w % queries[slot].len()];
            r.query_vec.copy_from_slice(qv);
            r.query_img.copy_from_slice(qi);
            r.label = *label;
            records.push(r);
        }
    }
    Ok(records)
}

/// A query: observation vector, image bytes, oracle label.
type Query = (Vec<f32>, Vec<u8>, u32);

/// Query observations with oracle labels for each job (`job.records` of them): uniform states
/// on grid worlds; elsewhere the state after a random walk of uniformly random length below
/// the horizon from an episode start.
fn query_states(env: &EnvConfig, l: &Layout, jobs: &[Job]) -> Result<Vec<Vec<Query>>> {
    let n = jobs.len();
    let (s, i) = (l.s, l.i);
    let mut rngs: Vec<ChaCha8Rng> = jobs
        .iter()
        .map(|j| ChaCha8Rng::seed_from_u64(envs::rng::mix64(j.seed ^ 0x0E_E1)))
        .collect();
    if let Some(rules) = env.grid_rules() {
        return jobs
            .iter()
            .zip(rngs.iter_mut())
            .map(|(j, rng)| {
                let task = rules.task(j.task)?;
                Ok((0..j.records)
                    .map(|_| {
                        let st = rules.sample_state(rng);
                        let mut v = vec![0.0; s];
                        rules.observe(&st, &mut v);
                        (v, Vec::new(), rules.optimal_action(&task, &st))
                    })
                    .collect())
            })
            .collect();
    }
    let spec = env.spec();
    let rounds = jobs.iter().map(|j| j.records).max().unwrap_or(0);
    let mut out: Vec<Vec<Query>> = vec![Vec::new(); n];
    let seed = envs::rng::mix64(jobs.first().map_or(0, |j| j.seed) ^ 0x0E_E2);
    let mut venv = env.build(seed, 0, n)?;
    let mut obs = ObsBatch::new(&spec, n);
    let mut step = StepBatch::new(&spec, n);
    let mut oracle = vec![0u32; n];
    let mut actions = vec![0u32; n];
    for round in 0..rounds {
        for (slot, j) in jobs.iter().enumerate() {
            venv.set_task(slot, j.task)?;
        }
        venv.reset(&mut obs);
        let lengths: Vec<usize> = rngs
            .iter_mut()
            .map(|r| r.random_range(0..spec.horizon.max(1)))
            .collect();
        let longest = lengths.iter().copied().max().unwrap_or(0);
        for t in 0..=longest {
            venv.oracle_actions(&mut oracle);
            for slot in 0..n {
                if t == lengths[slot] && round < jobs[slot].records {
                    out[slot].push((
                        obs.vector[slot * s..(slot + 1) * s].to_vec(),
                        obs.image[slot * i..(slot + 1) * i].to_vec(),
                        oracle[slot],
                    ));
                }
            }
            if t == longest {
                break;
            }
            for (slot, a) in actions.iter_mut().enumerate() {
                *a = rngs[slot].random_range(0..spec.num_actions as u32);
            }
            venv.step(&actions, &mut step)?;
            std::mem::swap(&mut obs, &mut step.obs);
        }
    }
    Ok(out)
}

/// Generates the training dataset of (`env`, `data`) at `path`; returns the header written.
///
/// Several jobs may need the same dataset at once (seeds of a sweep with `--jobs 2`): a lock
/// file beside it (`.<name>.lock`, `flock`) lets one of them generate it while the others wait
/// and then use its file. The data is streamed into a temporary file with a name of its own
/// (process id and time), which is removed on every error (a full disk, a stop signal, a
/// generator error) and published with a hard link, which never replaces a file: if the
/// dataset appeared meanwhile (another machine sharing the folder, or a file system without
/// locks), the existing file is kept and used.
pub fn generate_file(env: &EnvConfig, data: &DataConfig, path: &Path) -> Result<Header> {
    check_kind(env, data.context)?;
    let header = expected_header(env, data, Split::Train)?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the dataset folder", dir.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?
        .to_string_lossy()
        .into_owned();
    let _lock = lock_exclusive(&dir.join(format!(".{name}.lock")))?;
    if path.exists() {
        eprintln!(
            "{}: generated meanwhile by another job; using it",
            path.display()
        );
        return Ok(header);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp.{}.{nanos}", std::process::id()));
    let quit_cleanup = crate::run::signals::TempFileGuard::new(&tmp);
    let written = write_dataset(env, data, header, &tmp).and_then(|header| {
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(header),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                eprintln!(
                    "{}: written meanwhile by another job; using it",
                    path.display()
                );
                Ok(header)
            }
            // No hard links on this file system: an atomic rename (which would replace a
            // file written meanwhile by an identical one).
            Err(_) => std::fs::rename(&tmp, path)
                .map(|()| header)
                .with_context(|| format!("{}: cannot move into place", path.display())),
        }
    });
    // The temporary file goes in every case: published (the link holds the data), failed,
    // or interrupted.
    let _ = std::fs::remove_file(&tmp);
    drop(quit_cleanup);
    written
}

/// Holds an exclusive `flock` on a lock file until dropped (the kernel releases it when the
/// process dies). Waits for another holder, checking for stop signals.
struct FileLock(std::fs::File);

fn lock_exclusive(path: &Path) -> Result<FileLock> {
    use std::os::unix::io::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("{}: cannot open the lock file", path.display()))?;
    let mut told = false;
    loop {
        // SAFETY: flock on a file descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(FileLock(file));
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK)
            && err.kind() != std::io::ErrorKind::Interrupted
        {
            return Err(err).with_context(|| format!("{}: cannot lock", path.display()));
        }
        if crate::run::interrupted() {
            return Err(crate::run::signals::Stopped {
                what: "waiting for another job to generate the dataset".into(),
            }
            .into());
        }
        if !told {
            eprintln!(
                "waiting for another job to finish the dataset ({} is locked)",
                path.display()
            );
            told = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        use std::os::unix::io::AsRawFd;
        // SAFETY: unlocking our own descriptor (closing it would release the lock too).
        unsafe {
            libc::flock(self.0.as_raw_fd(), libc::LOCK_UN);
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Streams the dataset into `tmp` (created here), patches its length and checksum in, and
/// syncs it to disk.
fn write_dataset(env: &EnvConfig, data: &DataConfig, header: Header, tmp: &Path) -> Result<Header> {
    let tasks = task_list(env, data, Split::Train)?;
    let layout = Layout {
        s: header.state_dim,
        i: header.image_bytes,
        t: header.context_len,
    };
    let write_failed = || format!("{}: write failed", tmp.display());
    let file =
        std::fs::File::create(tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    let json = serde_json::to_vec(&header)?;
    let mut pre = Vec::with_capacity(PREAMBLE);
    pre.extend_from_slice(MAGIC);
    pre.extend_from_slice(&VERSION.to_le_bytes());
    pre.extend_from_slice(&(json.len() as u32).to_le_bytes());
    pre.extend_from_slice(&0u64.to_le_bytes()); // payload length, patched at the end
    pre.extend_from_slice(&0u32.to_le_bytes()); // checksum, patched at the end
    pre.extend_from_slice(&0u32.to_le_bytes());
    w.write_all(&pre).with_context(write_failed)?;
    w.write_all(&json).with_context(write_failed)?;
    let offset = pad(PREAMBLE + json.len(), 8);
    w.write_all(&vec![0u8; offset - PREAMBLE - json.len()])
        .with_context(write_failed)?;

    let all = jobs(data, &tasks, data.seed);
    let per_chunk = chunk_jobs(env, data);
    let chunks: Vec<&[Job]> = all.chunks(per_chunk).collect();
    let bar = crate::run::progress::bar(header.records, &format!("data {}", env.name()), "records");
    let mut crc = crc32fast::Hasher::new();
    let mut written = 0u64;
    // A pool of its own: a thread that cannot start is an error here, not a panic in rayon's
    // global pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("data-{i}"))
        .build()
        .context("cannot start the dataset generation threads")?;
    let threads = pool.current_num_threads().max(1);
    let mut buf = Vec::new();
    for group in chunks.chunks(threads) {
        if crate::run::interrupted() {
            return Err(crate::run::signals::Stopped {
                what: format!(
                    "dataset generation after {written} of {} records; the partial file is removed",
                    header.records
                ),
            }
            .into());
        }
        let produced: Vec<Result<Vec<Record>>> = pool.install(|| {
            group
                .par_iter()
                .map(|c| {
                    // A panic in a generator is an error of this dataset, not of the process.
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        generate_chunk(env, data, c)
                    }))
                    .unwrap_or_else(|p| {
                        Err(anyhow::anyhow!(
                            "the dataset generator panicked: {}",
                            panic_text(p.as_ref())
                        ))
                    })
                })
                .collect()
        });
        for records in produced {
            for r in records? {
                buf.clear();
                r.encode(&layout, &mut buf)?;
                crc.update(&buf);
                w.write_all(&buf)
                    .with_context(|| format!("{}: write failed", tmp.display()))?;
                written += 1;
            }
            bar.set_position(written);
        }
    }
    anyhow::ensure!(
        written == header.records,
        "generated {written} records, expected {}",
        header.records
    );
    let mut file = w
        .into_inner()
        .map_err(|e| anyhow::anyhow!("{}: write failed: {e}", tmp.display()))?;
    file.seek(SeekFrom::Start(16)).with_context(write_failed)?;
    file.write_all(&(written * layout.bytes() as u64).to_le_bytes())
        .with_context(write_failed)?;
    file.write_all(&crc.finalize().to_le_bytes())
        .with_context(write_failed)?;
    file.sync_all().with_context(write_failed)?;
    bar.finish_and_clear();
    Ok(header)
}

/// The training dataset of (`env`, `data`): opened from the cache when present (and checked),
/// generated first when missing.
pub fn ensure(env: &EnvConfig, data: &DataConfig, runs_dir: &Path) -> Result<Dataset> {
    let path = dataset_path(env, data, runs_dir)?;
    let expected = expected_header(env, data, Split::Train)?;
    if !path.exists() {
        eprintln!(
            "generating dataset {} ({} records of {} transitions)",
            path.display(),
            expected.records,
            expected.context_len
        );
        let t0 = std::time::Instant::now();
        generate_file(env, data, &path)?;
        eprintln!("dataset ready in {:.1} s", t0.elapsed().as_secs_f64());
    }
    Dataset::open(&path, Some(&expected))
}

/// `icrl data`: the dataset of a DPT or AD config, generated when missing; returns its path.
pub fn command(config: &crate::Config, runs_dir: &Path) -> Result<PathBuf> {
    let data = match &config.method {
        crate::config::Method::Dpt(c) => &c.data,
        crate::config::Method::Ad(c) => &c.data,
        _ => {
            return Err(UsageError(format!(
                "icrl data: method {} has no dataset (DPT and AD have one)",
                config.method_name()
            ))
            .into())
        }
    };
    let ds = ensure(&config.env, data, runs_dir)?;
    eprintln!(
        "{}: {} records of {} transitions ({} tasks, {:?} generator, {:.1} MiB)",
        ds.path.display(),
        ds.len(),
        ds.header.context_len,
        ds.header.tasks,
        ds.header.context,
        (ds.len() * ds.layout().bytes()) as f64 / (1 << 20) as f64
    );
    Ok(ds.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(context: ContextKind) -> DataConfig {
        DataConfig {
            context,
            max_tasks: Some(3),
            samples_per_task: 4,
            context_len: 12,
            history_len: 30,
            windows_per_history: 2,
            ..DataConfig::default()
        }
    }

    #[test]
    fn round_trip_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        for (env, kind) in [
            ("darkroom", ContextKind::Uniform),
            ("darkroom", ContextKind::RandomWalk),
            ("key_to_door", ContextKind::LearningHistory),
            ("bandit", ContextKind::DirichletMixture),
        ] {
            let env = EnvConfig::from_name(env).unwrap();
            let data = small(kind);
            let ds = ensure(&env, &data, dir.path()).unwrap();
            assert_eq!(ds.len(), 12);
            let tasks = task_list(&env, &data, Split::Train).unwrap();
            let again = generate_in_memory(&env, &data, &tasks, data.seed).unwrap();
            assert_eq!(again.len(), 12);
            for (k, r) in again.iter().enumerate() {
                assert_eq!(&ds.record(k).unwrap().to_record(), r, "{kind:?} record {k}");
            }
            assert!(ds.record(12).is_err());
            // A second `ensure` opens the cached file.
            let ds2 = ensure(&env, &data, dir.path()).unwrap();
            assert_eq!(ds2.header, ds.header);
        }
    }

    #[test]
    fn uniform_transitions_follow_the_dynamics_and_labels_the_oracle() {
        let env = EnvConfig::from_name("darkroom").unwrap();
        let data = small(ContextKind::Uniform);
        let tasks = task_list(&env, &data, Split::Train).unwrap();
        let recs = generate_in_memory(&env, &data, &tasks, 3).unwrap();
        for r in &recs {
            let goal = envs::darkroom::goal_of(r.task).unwrap();
            for k in 0..12 {
                let s = (r.vec[2 * k] as i32, r.vec[2 * k + 1] as i32);
                let (next, rew) = envs::darkroom::step(goal, s, r.action[k] as u32).unwrap();
                assert_eq!(
                    (r.next_vec[2 * k] as i32, r.next_vec[2 * k + 1] as i32),
                    next
                );
                assert_eq!(r.reward[k], rew);
            }
            let q = (r.query_vec[0] as i32, r.query_vec[1] as i32);
            assert_eq!(r.label, envs::darkroom::optimal_action(goal, q));
        }
    }

    #[test]
    fn corruption_truncation_and_mismatch_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let env = EnvConfig::from_name("darkroom").unwrap();
        let data = small(ContextKind::Uniform);
        let path = dataset_path(&env, &data, dir.path()).unwrap();
        let expected = expected_header(&env, &data, Split::Train).unwrap();
        generate_file(&env, &data, &path).unwrap();
        let good = std::fs::read(&path).unwrap();
        Dataset::open(&path, Some(&expected)).unwrap();

        // One flipped payload byte: checksum.
        let mut bytes = good.clone();
        let last = bytes.len() - 20;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let e = Dataset::open(&path, None).unwrap_err().to_string();
        assert!(e.contains("checksum"), "{e}");

        // Truncated.
        std::fs::write(&path, &good[..good.len() - 100]).unwrap();
        let e = Dataset::open(&path, None).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");

        // Not a dataset.
        std::fs::write(&path, b"hello").unwrap();
        let e = Dataset::open(&path, None).unwrap_err().to_string();
        assert!(e.contains("magic"), "{e}");

        // Made for another config.
        std::fs::write(&path, &good).unwrap();
        let mut other = data.clone();
        other.samples_per_task = 5;
        let want = expected_header(&env, &other, Split::Train).unwrap();
        let e = Dataset::open(&path, Some(&want)).unwrap_err().to_string();
        assert!(
            e.contains("another config") && e.contains("config hash"),
            "{e}"
        );

        // A generator that does not fit the env is a clear error.
        let bandit = EnvConfig::from_name("bandit").unwrap();
        let e = generate_in_memory(&bandit, &data, &[0], 0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Uniform") && e.contains("grid"), "{e}");
    }
}
