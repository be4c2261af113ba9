//! Tests of the logging module, including a cross-check with TensorBoard's own reader.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::*;

/// The Python (with torch, safetensors, numpy and tensorboard) used by cross-check tests:
/// `$ICRL_PYTHON`, else the `bin/python` of the venv that `<workspace>/.libtorch` points
/// into. Panics with instructions when there is none: those tests must not pass silently.
pub(crate) fn python_for_tests() -> PathBuf {
    if let Some(p) = std::env::var_os("ICRL_PYTHON") {
        let p = PathBuf::from(p);
        assert!(p.exists(), "ICRL_PYTHON={} does not exist", p.display());
        return p;
    }
    let link = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.libtorch");
    let torch = std::fs::canonicalize(&link).unwrap_or_else(|e| {
        panic!(
            "no Python for the cross-check tests: ICRL_PYTHON is unset and {} cannot be \
             resolved ({e}); run `make build` (which installs torch and creates the link) or \
             set ICRL_PYTHON to a Python with torch, safetensors and tensorboard",
            link.display()
        )
    });
    // <venv>/lib/pythonX.Y/site-packages/torch -> <venv>/bin/python
    let python = torch.join("../../../../bin/python");
    assert!(
        python.exists(),
        "no Python at {} (from {}); set ICRL_PYTHON to a Python with torch, safetensors and tensorboard",
        python.display(),
        link.display()
    );
    python
}

/// Runs `script` with `args` and returns its stdout; panics with its stderr on failure.
pub(crate) fn run_python(script: &str, args: &[&Path]) -> String {
    let python = python_for_tests();
    let out = Command::new(&python)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python script failed ({}):\n--- stderr ---\n{}\n--- stdout ---\n{stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A 3 (high) x 5 (wide) image whose every pixel is distinct: R = row, G = column, B = 200.
fn test_image() -> Vec<u8> {
    let mut rgb = Vec::new();
    for y in 0..3u8 {
        for x in 0..5u8 {
            rgb.extend_from_slice(&[y * 60, x * 50, 200]);
        }
    }
    rgb
}

const TEXT: &str = "# Config\n\n```ron\n(seed: 1)\n```\n";

fn hist_values() -> Vec<f64> {
    (0..100).map(|i| f64::from(i) * 0.1 - 2.0).collect()
}

/// Writes the standard set of values into a new TensorBoard log in `dir`.
fn write_standard_log(dir: &Path) -> PathBuf {
    let mut l = TensorBoardLogger::new(dir).unwrap();
    for (step, v) in [(0u64, 1.5), (10, -2.25), (20, 1e-3)] {
        l.scalar("losses/policy", step, v).unwrap();
    }
    l.histogram("weights", 5, &hist_values()).unwrap();
    l.image("frames/rgb", 7, &test_image(), 3, 5).unwrap();
    l.text("config", 0, TEXT).unwrap();
    l.flush().unwrap();
    l.path().to_path_buf()
}

fn only_event_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

#[test]
fn tensorboard_events_read_back_record_by_record() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_standard_log(tmp.path());
    let file = only_event_file(tmp.path());
    assert_eq!(file, path);
    let name = file.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with("events.out.tfevents."), "{name}");
    assert!(
        name.contains(&format!(".{}.", std::process::id())),
        "{name}"
    );

    let events = read_events(&file).unwrap();
    assert_eq!(events.len(), 7);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert!(events[0].values.is_empty());
    let now = super::event::now();
    assert!(events.iter().all(|e| (now - e.wall_time).abs() < 600.0));

    let scalars: Vec<(i64, String, ValueData)> = events[1..4]
        .iter()
        .map(|e| (e.step, e.values[0].tag.clone(), e.values[0].data.clone()))
        .collect();
    assert_eq!(
        scalars,
        vec![
            (0, "losses/policy".into(), ValueData::Scalar(1.5)),
            (10, "losses/policy".into(), ValueData::Scalar(-2.25)),
            (20, "losses/policy".into(), ValueData::Scalar(1e-3f32)),
        ]
    );

    assert_eq!(
        (events[4].step, events[4].values[0].tag.as_str()),
        (5, "weights")
    );
    let ValueData::Histogram(h) = &events[4].values[0].data else {
        panic!("{:?}", events[4])
    };
    assert_eq!(h.num, 100.0);
    assert_eq!(h.buckets.iter().sum::<f64>(), 100.0);
    assert!(
        (h.min + 2.0).abs() < 1e-12 && (h.max - 7.9).abs() < 1e-12,
        "{h:?}"
    );
    assert!((h.sum - hist_values().iter().sum::<f64>()).abs() < 1e-9);

    assert_eq!(
        (events[5].step, events[5].values[0].tag.as_str()),
        (7, "frames/rgb")
    );
    let ValueData::Image(img) = &events[5].values[0].data else {
        panic!("{:?}", events[5])
    };
    assert_eq!((img.height, img.width, img.colorspace), (3, 5, 3));
    // The PNG itself is 5 wide, 3 high, with every pixel where it was given.
    let mut dec = png::Decoder::new(img.encoded.as_slice())
        .read_info()
        .unwrap();
    let mut pixels = vec![0; dec.output_buffer_size()];
    let info = dec.next_frame(&mut pixels).unwrap();
    assert_eq!(
        (info.width, info.height, info.color_type),
        (5, 3, png::ColorType::Rgb)
    );
    assert_eq!(&pixels[..info.buffer_size()], test_image().as_slice());

    let text = &events[6].values[0];
    assert_eq!((events[6].step, text.tag.as_str()), (0, "config"));
    assert_eq!(text.plugin_name.as_deref(), Some("text"));
    assert_eq!(text.data, ValueData::Text(vec![TEXT.to_string()]));
}

#[test]
fn corrupted_or_truncated_event_files_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let path = write_standard_log(tmp.path());
    let good = std::fs::read(&path).unwrap();
    // Flip one byte inside the image record's PNG data.
    let mut bad = good.clone();
    let at = good
        .windows(8)
        .position(|w| w == b"\x89PNG\r\n\x1a\n")
        .unwrap()
        + 20;
    bad[at] ^= 0x01;
    std::fs::write(&path, &bad).unwrap();
    let err = read_events(&path).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LogError::Corrupt { record: 5, .. }), "{msg}");
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("CRC"),
        "{msg}"
    );

    std::fs::write(&path, &good[..good.len() - 3]).unwrap();
    let msg = read_events(&path).unwrap_err().to_string();
    assert!(
        msg.contains("truncated") && msg.contains("record 6"),
        "{msg}"
    );

    let missing = tmp.path().join("nope");
    let msg = read_events(&missing).unwrap_err().to_string();
    assert!(msg.contains("nope"), "{msg}");
}

#[test]
fn several_loggers_in_one_folder_get_their_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = TensorBoardLogger::new(tmp.path()).unwrap();
    let mut b = TensorBoardLogger::new(tmp.path()).unwrap();
    assert_ne!(a.path(), b.path());
    a.scalar("x", 1, 1.0).unwrap();
    b.scalar("x", 1, 2.0).unwrap();
    let a_path = a.path().to_path_buf();
    drop(a); // drop flushes
    b.flush().unwrap();
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    for (p, want) in [(a_path, 1.0), (b.path().to_path_buf(), 2.0)] {
        assert_eq!(
            read_events(p).unwrap()[1].values[0].data,
            ValueData::Scalar(want)
        );
    }
}

#[test]
fn removed_log_folder_stops_or_continues_by_policy_without_panic() {
    for policy in [LogPolicy::Stop, LogPolicy::Continue] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("run/tb");
        let inner = TensorBoardLogger::new(&dir).unwrap();
        let path = inner.path().to_path_buf();
        let mut l = GuardedLogger::new(inner, policy);
        l.scalar("a", 1, 1.0).unwrap();
        l.flush().unwrap();
        std::fs::remove_dir_all(tmp.path().join("run")).unwrap();
        let r1 = l.scalar("a", 2, 2.0).and_then(|()| l.flush());
        let r2 = l.scalar("a", 3, 3.0);
        match policy {
            LogPolicy::Stop => {
                let msg = r1.unwrap_err().to_string();
                assert!(msg.contains(&path.display().to_string()), "{msg}");
                assert!(r2.is_err(), "a broken logger keeps failing");
                assert!(l.first_error().is_some() && !l.is_disabled());
            }
            LogPolicy::Continue => {
                assert!(r1.is_ok() && r2.is_ok());
                assert!(l.is_disabled());
                assert!(l.first_error().unwrap().contains("tfevents"));
                assert!(l.histogram("h", 4, &[1.0]).is_ok() && l.flush().is_ok());
            }
        }
        assert!(!dir.exists());
    }
}

/// A writer that behaves like a full disk.
struct FullDisk;
impl Write for FullDisk {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(28)) // ENOSPC
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn full_disk_is_an_error_naming_the_file() {
    let err = TensorBoardLogger::from_writer(
        PathBuf::from("/x/events.out.tfevents.1"),
        Box::new(FullDisk),
    )
    .err()
    .expect("the file-version record cannot be written");
    let msg = err.to_string();
    assert!(
        err.is_io() && msg.contains("/x/events.out.tfevents.1"),
        "{msg}"
    );

    /// Accepts `budget` bytes, then fails like a full disk.
    struct Budget(Vec<u8>, usize);
    impl Write for Budget {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.0.len() + buf.len() > self.1 {
                return Err(io::Error::from_raw_os_error(28));
            }
            self.0.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let l = TensorBoardLogger::from_writer(PathBuf::from("ev"), Box::new(Budget(Vec::new(), 100)))
        .unwrap()
        .with_flush_interval(Duration::ZERO);
    let mut g = GuardedLogger::new(l, LogPolicy::Stop);
    let results: Vec<bool> = (0..5).map(|i| g.scalar("x", i, 0.0).is_ok()).collect();
    assert!(results[0], "{results:?}");
    assert!(!results[4], "{results:?}");
    let first_fail = results.iter().position(|ok| !ok).unwrap();
    assert!(results[first_fail..].iter().all(|ok| !ok), "{results:?}");
}

#[test]
fn invalid_images_are_rejected_or_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut l = TensorBoardLogger::new(tmp.path()).unwrap();
    for (rgb, h, w) in [
        (vec![0u8; 44], 3, 5),
        (vec![], 0, 5),
        (vec![0u8; 3], 1, usize::MAX),
    ] {
        let err = l.image("img", 0, &rgb, h, w).unwrap_err();
        assert!(
            matches!(err, LogError::InvalidInput { .. }) && err.to_string().contains("img"),
            "{err}"
        );
    }
    let mem = MemoryLogger::new();
    let mut g = GuardedLogger::new(mem.clone(), LogPolicy::Continue);
    g.image("img", 0, &[1, 2], 1, 1).unwrap();
    g.scalar("after", 1, 1.0).unwrap();
    assert!(mem.images("img").is_empty());
    assert_eq!(mem.scalars("after"), vec![(1, 1.0)]);
    assert!(!g.is_disabled(), "bad input does not switch logging off");
    let mut s = GuardedLogger::new(mem, LogPolicy::Stop);
    assert!(s.image("img", 0, &[1, 2], 1, 1).is_err());
    assert!(l.scalar("big", u64::MAX, 1.0).is_err(), "step beyond int64");
}

#[test]
fn memory_logger_records_everything_and_can_fail() {
    let mem = MemoryLogger::new();
    let mut boxed: Box<dyn Logger> = Box::new(mem.clone());
    boxed.scalar("a", 1, 0.5).unwrap();
    boxed.scalar("b", 1, 7.0).unwrap();
    boxed.scalar("a", 2, 0.25).unwrap();
    boxed.histogram("h", 3, &[1.0, 2.0]).unwrap();
    boxed.image("i", 4, &test_image(), 3, 5).unwrap();
    boxed.text("t", 5, "**hi**").unwrap();
    boxed.flush().unwrap();
    assert_eq!(mem.scalars("a"), vec![(1, 0.5), (2, 0.25)]);
    assert_eq!(mem.histograms("h"), vec![(3, vec![1.0, 2.0])]);
    let imgs = mem.images("i");
    assert_eq!((imgs[0].0, imgs[0].1.height, imgs[0].1.width), (4, 3, 5));
    assert_eq!(mem.texts("t"), vec![(5, "**hi**".to_string())]);
    assert_eq!(mem.tags(), vec!["a", "b", "h", "i", "t"]);
    assert_eq!((mem.records().len(), mem.flushes()), (6, 1));
    mem.fail_with(Some(io::ErrorKind::StorageFull));
    assert!(boxed.scalar("a", 3, 1.0).unwrap_err().is_io());
    let mut g = GuardedLogger::new(boxed, LogPolicy::Continue);
    assert!(g.scalar("a", 3, 1.0).is_ok() && g.is_disabled());
    mem.fail_with(None);
    g.scalar("a", 4, 1.0).unwrap();
    assert_eq!(
        mem.scalars("a").len(),
        2,
        "a disabled guard logs nothing more"
    );
}

#[test]
fn code_blocks_fence_longer_than_the_text() {
    assert_eq!(code_block("ron", "(a: 1)"), "```ron\n(a: 1)\n```\n");
    assert_eq!(code_block("", "x ```` y\n"), "`````\nx ```` y\n`````\n");
}

/// TensorBoard's own reader (EventAccumulator) must see every value we wrote, and its text
/// plugin must render our markdown.
#[test]
fn tensorboard_event_accumulator_reads_our_files() {
    let tmp = tempfile::tempdir().unwrap();
    write_standard_log(tmp.path());
    let script = r#"
import json, struct, sys
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.text import text_plugin
from tensorboard.util import tensor_util
acc = ea.EventAccumulator(sys.argv[1], size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
acc.Reload()
out = {"scalars": [[e.step, e.value] for e in acc.Scalars("losses/policy")]}
h = acc.Histograms("weights")
out["hist"] = [[e.step, e.histogram_value.num, sum(e.histogram_value.bucket),
                e.histogram_value.min, e.histogram_value.max] for e in h]
im = acc.Images("frames/rgb")
png = im[0].encoded_image_string
assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
png_w, png_h = struct.unpack(">II", png[16:24])
out["image"] = [im[0].step, im[0].width, im[0].height, png_w, png_h, len(im)]
t = acc.Tensors("config")
arr = tensor_util.make_ndarray(t[0].tensor_proto)
out["text"] = [t[0].step, t[0].tensor_proto.dtype, arr.item().decode()]
out["text_plugin_tags"] = sorted(acc.PluginTagToContent("text").keys())
out["html"] = text_plugin.text_array_to_html(arr, enable_markdown=True)
print(json.dumps(out))
"#;
    let stdout = run_python(script, &[tmp.path()]);
    let v: serde_json::Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let scalars: Vec<(u64, f64)> = serde_json::from_value(v["scalars"].clone()).unwrap();
    assert_eq!(scalars.len(), 3);
    for ((s, x), (ws, wx)) in scalars.iter().zip([(0u64, 1.5), (10, -2.25), (20, 1e-3)]) {
        assert_eq!(*s, ws);
        assert!((x - wx).abs() < 1e-6, "{x} vs {wx}");
    }
    assert_eq!(v["hist"][0][0], 5);
    assert_eq!(v["hist"][0][1], 100.0);
    assert_eq!(v["hist"][0][2], 100.0);
    assert!((v["hist"][0][3].as_f64().unwrap() + 2.0).abs() < 1e-9);
    // step, width, height from the summary; width, height from the PNG header; count.
    assert_eq!(v["image"], serde_json::json!([7, 5, 3, 5, 3, 1]));
    assert_eq!(v["text"], serde_json::json!([0, 7, TEXT]));
    assert_eq!(v["text_plugin_tags"], serde_json::json!(["config"]));
    let html = v["html"].as_str().unwrap();
    assert!(
        html.contains("<h1>Config</h1>") && html.contains("<code"),
        "{html}"
    );
}
