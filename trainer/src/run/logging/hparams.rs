//! The data of TensorBoard's HParams plugin, so that the runs of a sweep can be compared side by
//! side by their settings and final metrics (`tensorboard --logdir sweeps/NAME`, HPARAMS tab).
//!
//! The plugin reads three summaries (tags and messages from TensorBoard's
//! `plugins/hparams/metadata.py`, `plugin_data.proto` and `api.proto`), each a
//! `HParamsPluginData { version: 0, oneof data }` in the value's plugin metadata:
//! - `_hparams_/session_start_info` in every run: the run's hyper-parameter values;
//! - `_hparams_/session_end_info` when the run ends: its status;
//! - `_hparams_/experiment` once at the top of a sweep folder: the hyper-parameters and the
//!   metrics (scalar tags) to show as columns. Without it the plugin infers both.
//!
//! The metrics are ordinary scalar tags of the runs (e.g. `eval/return_last_episode`); the
//! plugin shows each one's last value.

use super::proto::Encoder;
use super::{LogError, Logger};

/// Plugin name in the summary metadata.
pub const PLUGIN: &str = "hparams";
/// Tag of the experiment summary (hyper-parameter and metric columns).
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// Tag of a run's session start (its hyper-parameter values).
pub const SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// Tag of a run's session end (its status).
pub const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// One hyper-parameter value (`google.protobuf.Value`'s number, string and bool kinds).
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    /// A number (TensorBoard's hparams are doubles).
    Number(f64),
    /// Any other value, as written in the config (`Some(64)`, `KvTrainable`, ...).
    Text(String),
    /// true / false.
    Bool(bool),
}

impl HParamValue {
    /// The value of a `--set path=VALUE` right-hand side: a number or bool when it reads as
    /// one, otherwise the text without surrounding quotes.
    pub fn parse(value: &str) -> HParamValue {
        let v = value.trim();
        if let Ok(x) = v.parse::<f64>() {
            if x.is_finite() {
                return HParamValue::Number(x);
            }
        }
        match v {
            "true" => HParamValue::Bool(true),
            "false" => HParamValue::Bool(false),
            _ => HParamValue::Text(
                v.strip_prefix('"')
                    .and_then(|s| s.strip_suffix('"'))
                    .unwrap_or(v)
                    .to_string(),
            ),
        }
    }

    /// The `api.proto` `DataType` of this value: STRING 1, BOOL 2, FLOAT64 3.
    fn data_type(&self) -> u64 {
        match self {
            HParamValue::Text(_) => 1,
            HParamValue::Bool(_) => 2,
            HParamValue::Number(_) => 3,
        }
    }

    /// Encodes `google.protobuf.Value` (number_value 2, string_value 3, bool_value 4).
    fn encode(&self, e: &mut Encoder) {
        match self {
            HParamValue::Number(x) => e.double(2, *x),
            HParamValue::Text(s) => e.string(3, s),
            HParamValue::Bool(b) => e.varint(4, u64::from(*b)),
        }
    }
}

/// How a run ended (`api.proto` `Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    /// The run finished its budget.
    Success = 1,
    /// The run stopped with an error.
    Failure = 2,
}

/// `HParamsPluginData { version: 0, <field>: message }`.
fn plugin_data(field: u32, body: impl FnOnce(&mut Encoder)) -> Vec<u8> {
    let mut e = Encoder::new();
    // version 0 is the default and therefore not written, as protobuf encoders do.
    e.message(field, body);
    e.finish()
}

/// The serialized `session_start_info` of a run with these hyper-parameters.
pub fn session_start(hparams: &[(String, HParamValue)], start_time_secs: f64) -> Vec<u8> {
    plugin_data(3, |s| {
        for (name, value) in hparams {
            // map<string, Value> hparams = 1: repeated { key = 1; value = 2 }.
            s.message(1, |entry| {
                entry.string(1, name);
                entry.message(2, |v| value.encode(v));
            });
        }
        s.double(5, start_time_secs);
    })
}

/// The serialized `session_end_info` of a run.
pub fn session_end(status: SessionStatus, end_time_secs: f64) -> Vec<u8> {
    plugin_data(4, |s| {
        s.varint(1, status as u64);
        s.double(2, end_time_secs);
    })
}

/// The serialized `experiment`: the hyper-parameter columns (name and an example value that
/// gives its type; `differs` set) and the metric columns (scalar tags).
pub fn experiment(name: &str, hparams: &[(String, HParamValue)], metrics: &[&str]) -> Vec<u8> {
    plugin_data(2, |x| {
        x.string(6, name);
        for (hparam, example) in hparams {
            x.message(4, |h| {
                h.string(1, hparam);
                h.varint(4, example.data_type());
                h.varint(7, 1);
            });
        }
        for tag in metrics {
            // MetricInfo { name: MetricName { group: "", tag } }
            x.message(5, |m| m.message(1, |n| n.string(2, tag)));
        }
    })
}

/// Seconds since the Unix epoch.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes a run's session start (at step 0).
pub fn log_session_start(
    logger: &mut dyn Logger,
    hparams: &[(String, HParamValue)],
) -> Result<(), LogError> {
    logger.plugin(SESSION_START_TAG, 0, PLUGIN, &session_start(hparams, now()))
}

/// Writes a run's session end at its last step.
pub fn log_session_end(
    logger: &mut dyn Logger,
    step: u64,
    status: SessionStatus,
) -> Result<(), LogError> {
    logger.plugin(SESSION_END_TAG, step, PLUGIN, &session_end(status, now()))
}

/// Writes the experiment summary of a sweep (into the logger of the sweep's top folder).
pub fn log_experiment(
    logger: &mut dyn Logger,
    name: &str,
    hparams: &[(String, HParamValue)],
    metrics: &[&str],
) -> Result<(), LogError> {
    logger.plugin(
        EXPERIMENT_TAG,
        0,
        PLUGIN,
        &experiment(name, hparams, metrics),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::logging::proto::Decoder;

    #[test]
    fn override_values_parse_to_their_kind() {
        assert_eq!(HParamValue::parse("3"), HParamValue::Number(3.0));
        assert_eq!(HParamValue::parse(" 2e-4"), HParamValue::Number(2e-4));
        assert_eq!(HParamValue::parse("false"), HParamValue::Bool(false));
        assert_eq!(
            HParamValue::parse("\"cpu\""),
            HParamValue::Text("cpu".into())
        );
        assert_eq!(
            HParamValue::parse("Some(20)"),
            HParamValue::Text("Some(20)".into())
        );
        assert_eq!(HParamValue::parse("inf"), HParamValue::Text("inf".into()));
    }

    #[test]
    fn session_start_encodes_a_map_of_values() {
        let bytes = session_start(
            &[
                ("seed".into(), HParamValue::Number(3.0)),
                ("name".into(), HParamValue::Text("kv".into())),
            ],
            12.5,
        );
        // HParamsPluginData.session_start_info (field 3)
        let mut d = Decoder::new(&bytes);
        let (field, w) = d.next_field().unwrap().unwrap();
        assert_eq!(field, 3);
        assert!(d.next_field().unwrap().is_none());
        let mut s = Decoder::new(w.as_bytes().unwrap());
        let mut keys = Vec::new();
        let mut start = None;
        while let Some((field, w)) = s.next_field().unwrap() {
            match field {
                1 => {
                    let mut entry = Decoder::new(w.as_bytes().unwrap());
                    let (k, key) = entry.next_field().unwrap().unwrap();
                    assert_eq!(k, 1);
                    keys.push(key.as_string().unwrap());
                    let (v, _) = entry.next_field().unwrap().unwrap();
                    assert_eq!(v, 2);
                }
                5 => start = Some(w.as_f64().unwrap()),
                other => panic!("unexpected field {other}"),
            }
        }
        assert_eq!(keys, ["seed", "name"]);
        assert_eq!(start, Some(12.5));
    }
}
