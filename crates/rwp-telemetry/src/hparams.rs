//! TensorBoard's HParams plugin: the summaries that let its HPARAMS tab
//! compare the trials of a sweep. Each is a [`tfevents::Value`] whose
//! metadata names the `hparams` plugin and carries a serialised
//! `tensorboard.hparams.HParamsPluginData` (tensorboard/plugins/hparams/
//! plugin_data.proto and api.proto), encoded by prost from the messages
//! below, beside an empty tensor, as TensorBoard's own `hparams.summary`
//! writes them:
//!
//! - an *experiment* (tag `_hparams_/experiment`): the hyper-parameters and
//!   their domains, the metrics to show; written once, in the sweep's run;
//! - a *session start* (`_hparams_/session_start_info`): one trial's values,
//!   in the trial's own run, whose scalars are the session's metrics;
//! - a *session end* (`_hparams_/session_end_info`): how the trial ended.

use std::collections::BTreeMap;

use prost::Message;

use crate::tfevents::{Kind, PluginData, SummaryMetadata, TensorProto, Value};

/// The plugin name TensorBoard's HParams plugin reads.
pub const PLUGIN_NAME: &str = "hparams";
pub const EXPERIMENT_TAG: &str = "_hparams_/experiment";
pub const SESSION_START_INFO_TAG: &str = "_hparams_/session_start_info";
pub const SESSION_END_INFO_TAG: &str = "_hparams_/session_end_info";

/// `HParamsPluginData`.
#[derive(Clone, PartialEq, Message)]
pub struct HParamsPluginData {
    /// Always 0 (`PLUGIN_DATA_VERSION`).
    #[prost(int32, tag = "1")]
    pub version: i32,
    #[prost(oneof = "PluginContent", tags = "2, 3, 4")]
    pub data: Option<PluginContent>,
}

/// `HParamsPluginData.data`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PluginContent {
    #[prost(message, tag = "2")]
    Experiment(Experiment),
    #[prost(message, tag = "3")]
    SessionStartInfo(SessionStartInfo),
    #[prost(message, tag = "4")]
    SessionEndInfo(SessionEndInfo),
}

/// `Experiment` (api.proto).
#[derive(Clone, PartialEq, Message)]
pub struct Experiment {
    #[prost(string, tag = "6")]
    pub name: String,
    #[prost(string, tag = "1")]
    pub description: String,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

/// `HParamInfo`: one hyper-parameter, its type and its domain.
#[derive(Clone, PartialEq, Message)]
pub struct HParamInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub display_name: String,
    #[prost(string, tag = "3")]
    pub description: String,
    #[prost(enumeration = "DataType", tag = "4")]
    pub r#type: i32,
    #[prost(oneof = "Domain", tags = "5, 6")]
    pub domain: Option<Domain>,
    #[prost(bool, tag = "7")]
    pub differs: bool,
}

/// `HParamInfo.domain`: the values tried, or the interval drawn from.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Domain {
    #[prost(message, tag = "5")]
    Discrete(ListValue),
    #[prost(message, tag = "6")]
    Interval(Interval),
}

/// `Interval`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Interval {
    #[prost(double, tag = "1")]
    pub min_value: f64,
    #[prost(double, tag = "2")]
    pub max_value: f64,
}

/// `DataType` of a hyper-parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DataType {
    Unset = 0,
    String = 1,
    Bool = 2,
    Float64 = 3,
}

/// `MetricInfo`: a scalar tag of the sessions' runs to show as a column.
#[derive(Clone, PartialEq, Message)]
pub struct MetricInfo {
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
    #[prost(string, tag = "3")]
    pub display_name: String,
    #[prost(string, tag = "4")]
    pub description: String,
    #[prost(enumeration = "DatasetType", tag = "5")]
    pub dataset_type: i32,
}

/// `MetricName`: the scalar's tag, in the session's run (`group` empty) or
/// in a run below it.
#[derive(Clone, PartialEq, Message)]
pub struct MetricName {
    #[prost(string, tag = "1")]
    pub group: String,
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `DatasetType` of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DatasetType {
    Unknown = 0,
    Training = 1,
    Validation = 2,
}

/// `SessionStartInfo`: a trial's hyper-parameter values.
#[derive(Clone, PartialEq, Message)]
pub struct SessionStartInfo {
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, ProtoValue>,
    #[prost(string, tag = "2")]
    pub model_uri: String,
    #[prost(string, tag = "3")]
    pub monitor_url: String,
    /// Sessions of one group are repeats of the same values; empty: the
    /// session is a group of its own.
    #[prost(string, tag = "4")]
    pub group_name: String,
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `SessionEndInfo`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct SessionEndInfo {
    #[prost(enumeration = "Status", tag = "1")]
    pub status: i32,
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// `Status` of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Status {
    Unknown = 0,
    Success = 1,
    Failure = 2,
    Running = 3,
}

/// `google.protobuf.Value`, the kinds a hyper-parameter takes.
#[derive(Clone, PartialEq, Message)]
pub struct ProtoValue {
    #[prost(oneof = "ValueKind", tags = "2, 3, 4")]
    pub kind: Option<ValueKind>,
}

/// `google.protobuf.Value.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    #[prost(double, tag = "2")]
    Number(f64),
    #[prost(string, tag = "3")]
    Text(String),
    #[prost(bool, tag = "4")]
    Bool(bool),
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<ProtoValue>,
}

impl ProtoValue {
    #[must_use]
    pub fn number(x: f64) -> Self {
        Self { kind: Some(ValueKind::Number(x)) }
    }

    #[must_use]
    pub fn text(t: impl Into<String>) -> Self {
        Self { kind: Some(ValueKind::Text(t.into())) }
    }

    #[must_use]
    pub fn flag(b: bool) -> Self {
        Self { kind: Some(ValueKind::Bool(b)) }
    }

    /// The hyper-parameter type of this value.
    #[must_use]
    pub fn data_type(&self) -> DataType {
        match self.kind {
            Some(ValueKind::Number(_)) => DataType::Float64,
            Some(ValueKind::Text(_)) => DataType::String,
            Some(ValueKind::Bool(_)) => DataType::Bool,
            None => DataType::Unset,
        }
    }
}

/// A metric info for the scalar `tag` of each session's own run.
#[must_use]
pub fn metric(tag: &str, dataset: DatasetType) -> MetricInfo {
    MetricInfo {
        name: Some(MetricName { group: String::new(), tag: tag.to_owned() }),
        display_name: tag.to_owned(),
        description: String::new(),
        dataset_type: dataset as i32,
    }
}

fn summary(tag: &str, data: PluginContent) -> Value {
    let content = HParamsPluginData { version: 0, data: Some(data) }.encode_to_vec();
    Value {
        tag: tag.to_owned(),
        metadata: Some(SummaryMetadata {
            plugin_data: Some(PluginData { plugin_name: PLUGIN_NAME.to_owned(), content }),
        }),
        value: Some(Kind::Tensor(TensorProto::empty_float())),
    }
}

/// The experiment summary, for the run of the sweep.
#[must_use]
pub fn experiment_summary(experiment: Experiment) -> Value {
    summary(EXPERIMENT_TAG, PluginContent::Experiment(experiment))
}

/// A session's start: its hyper-parameter values, for the trial's run.
#[must_use]
pub fn session_start_summary(hparams: BTreeMap<String, ProtoValue>, start_time_secs: f64) -> Value {
    let info = SessionStartInfo { hparams, start_time_secs, ..SessionStartInfo::default() };
    summary(SESSION_START_INFO_TAG, PluginContent::SessionStartInfo(info))
}

/// A session's end, for the trial's run.
#[must_use]
pub fn session_end_summary(status: Status, end_time_secs: f64) -> Value {
    let info = SessionEndInfo { status: status as i32, end_time_secs };
    summary(SESSION_END_INFO_TAG, PluginContent::SessionEndInfo(info))
}

/// The HParams data of a summary value, when it is the plugin's. For tests
/// and tools.
#[must_use]
pub fn plugin_data(value: &Value) -> Option<HParamsPluginData> {
    let data = value.metadata.as_ref()?.plugin_data.as_ref()?;
    if data.plugin_name != PLUGIN_NAME {
        return None;
    }
    HParamsPluginData::decode(data.content.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tfevents::{read_events, EventWriter, What};

    #[test]
    fn summaries_round_trip_through_an_event_file() {
        let dir = std::env::temp_dir().join(format!("rwp-hparams-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut w = EventWriter::create(&dir, "hparams").unwrap();
        let experiment = Experiment {
            name: "grid".into(),
            hparam_infos: vec![HParamInfo {
                name: "sigma".into(),
                r#type: DataType::Float64 as i32,
                domain: Some(Domain::Discrete(ListValue { values: vec![ProtoValue::number(0.01)] })),
                ..HParamInfo::default()
            }],
            metric_infos: vec![metric("validation/accuracy", DatasetType::Validation)],
            ..Experiment::default()
        };
        let hparams = BTreeMap::from([("sigma".to_owned(), ProtoValue::number(0.01))]);
        w.summary(0, 1.0, vec![experiment_summary(experiment.clone())]).unwrap();
        w.summary(0, 1.0, vec![session_start_summary(hparams.clone(), 1.0)]).unwrap();
        w.summary(9, 2.0, vec![session_end_summary(Status::Success, 2.0)]).unwrap();
        let path = w.path().to_owned();
        drop(w);
        let data: Vec<(String, HParamsPluginData)> = read_events(&path)
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.what {
                Some(What::Summary(s)) => Some(s.value),
                _ => None,
            })
            .flatten()
            .map(|v| (v.tag.clone(), plugin_data(&v).unwrap()))
            .collect();
        let tags: Vec<&str> = data.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, [EXPERIMENT_TAG, SESSION_START_INFO_TAG, SESSION_END_INFO_TAG]);
        assert_eq!(data[0].1.data, Some(PluginContent::Experiment(experiment)));
        let start = SessionStartInfo { hparams, start_time_secs: 1.0, ..SessionStartInfo::default() };
        assert_eq!(data[1].1.data, Some(PluginContent::SessionStartInfo(start)));
        let end = SessionEndInfo { status: Status::Success as i32, end_time_secs: 2.0 };
        assert_eq!(data[2].1.data, Some(PluginContent::SessionEndInfo(end)));
        let _ = std::fs::remove_dir_all(dir);
    }
}
