//! Builds pprof protobufs (`profile.proto`, the `pprof` crate's prost types) from stacks of
//! addresses: one string table, one function per name and file, one location per address
//! with its inlined frames, and per-sample labels. Shared by the CPU and the heap profiles.

use std::{collections::HashMap, time::SystemTime};

use cpu_sampler::{Frame, Symbolizer};
use pprof::protos::{self, Message};

/// One pprof profile under construction.
pub struct PprofBuilder<'a> {
    symbols: &'a mut Symbolizer,
    profile: protos::Profile,
    strings: HashMap<String, i64>,
    functions: HashMap<(i64, i64), u64>,
    /// Keyed by (address, whether it is a return address, whether it is a trimmed leaf).
    locations: HashMap<(usize, bool, bool), u64>,
    /// Inlined frames to leave out of a sample's innermost location (allocator internals).
    trim_leaf: Option<fn(&Frame) -> bool>,
}

impl<'a> PprofBuilder<'a> {
    /// A profile whose samples carry one value per `sample_types` entry (`(type, unit)`).
    pub fn new(
        symbols: &'a mut Symbolizer,
        sample_types: &[(&str, &str)],
        period_type: (&str, &str),
        period: i64,
    ) -> Self {
        let mut builder = Self {
            symbols,
            profile: protos::Profile::default(),
            strings: HashMap::new(),
            functions: HashMap::new(),
            locations: HashMap::new(),
            trim_leaf: None,
        };
        builder.string("");
        builder.profile.sample_type = sample_types
            .iter()
            .map(|&(ty, unit)| builder.value_type(ty, unit))
            .collect();
        builder.profile.period_type = Some(builder.value_type(period_type.0, period_type.1));
        builder.profile.period = period;
        builder
    }

    /// Leaves the innermost inlined frames for which `is_noise` holds out of each sample's
    /// leaf location (unless that would leave none), so the leaf is the code that did the work.
    pub fn trim_leaf(mut self, is_noise: fn(&Frame) -> bool) -> Self {
        self.trim_leaf = Some(is_noise);
        self
    }

    fn value_type(&mut self, ty: &str, unit: &str) -> protos::ValueType {
        protos::ValueType {
            ty: self.string(ty),
            unit: self.string(unit),
        }
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.strings.get(s) {
            return id;
        }
        let id = self.profile.string_table.len() as i64;
        self.profile.string_table.push(s.to_owned());
        self.strings.insert(s.to_owned(), id);
        id
    }

    /// The frames at `address`, innermost first (for filtering stacks).
    pub fn frames(&mut self, address: usize, is_return_address: bool) -> &[Frame] {
        self.symbols.frames(address, is_return_address)
    }

    fn location(&mut self, address: usize, is_return_address: bool, leaf: bool) -> u64 {
        let trim = self.trim_leaf.filter(|_| leaf);
        let key = (address, is_return_address, trim.is_some());
        if let Some(&id) = self.locations.get(&key) {
            return id;
        }
        let mut frames = self.symbols.frames(address, is_return_address).to_vec();
        if let Some(is_noise) = trim {
            let noise = frames.iter().take_while(|f| is_noise(f)).count();
            if noise < frames.len() {
                frames.drain(..noise);
            }
        }
        let mut lines = Vec::with_capacity(frames.len());
        for frame in frames {
            let key = (self.string(&frame.function), self.string(&frame.file));
            let next_id = self.profile.function.len() as u64 + 1;
            let function_id = *self.functions.entry(key).or_insert(next_id);
            if function_id == next_id {
                let system_name = self.string(&frame.system_name);
                self.profile.function.push(protos::Function {
                    id: function_id,
                    name: key.0,
                    system_name,
                    filename: key.1,
                    start_line: 0,
                });
            }
            lines.push(protos::Line {
                function_id,
                line: i64::from(frame.line),
            });
        }
        let id = self.profile.location.len() as u64 + 1;
        self.profile.location.push(protos::Location {
            id,
            mapping_id: 0,
            address: address as u64,
            line: lines,
            is_folded: false,
        });
        self.locations.insert(key, id);
        id
    }

    /// Adds one sample. `frames` are innermost first; when `leaf_is_exact`, the first is the
    /// interrupted instruction (a CPU sample) rather than a return address.
    pub fn sample(
        &mut self,
        frames: &[usize],
        leaf_is_exact: bool,
        values: Vec<i64>,
        labels: &[(&str, &str)],
    ) {
        let location_id = frames
            .iter()
            .enumerate()
            .map(|(i, &address)| self.location(address, i > 0 || !leaf_is_exact, i == 0))
            .collect();
        let label = labels
            .iter()
            .map(|&(key, value)| protos::Label {
                key: self.string(key),
                str: self.string(value),
                num: 0,
                num_unit: 0,
            })
            .collect();
        self.profile.sample.push(protos::Sample {
            location_id,
            value: values,
            label,
        });
    }

    /// Samples added so far.
    pub fn sample_count(&self) -> usize {
        self.profile.sample.len()
    }

    /// The encoded profile of the time from `from` to `until`.
    pub fn encode(mut self, from: SystemTime, until: SystemTime) -> Vec<u8> {
        let nanos = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64)
        };
        self.profile.time_nanos = nanos(from);
        self.profile.duration_nanos = (nanos(until) - nanos(from)).max(0);
        self.profile.encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_values_survive_encoding() {
        let mut symbols = Symbolizer::new();
        let here = labels_and_values_survive_encoding as *const () as usize;
        let mut builder = PprofBuilder::new(
            &mut symbols,
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            10_000_000,
        );
        builder.sample(
            &[here, here],
            true,
            vec![2, 20_000_000],
            &[("span_id", "00f067aa0ba902b7")],
        );
        let bytes = builder.encode(SystemTime::now(), SystemTime::now());
        let profile = protos::Profile::decode(bytes.as_slice()).unwrap();
        let s = |i: i64| profile.string_table[i as usize].as_str();
        assert_eq!(profile.sample[0].value, [2, 20_000_000]);
        let label = &profile.sample[0].label[0];
        assert_eq!(
            (s(label.key), s(label.str)),
            ("span_id", "00f067aa0ba902b7")
        );
        assert_eq!(s(profile.sample_type[1].ty), "cpu");
        assert_eq!(profile.sample[0].location_id.len(), 2);
        assert_eq!(s(0), "");
    }
}
