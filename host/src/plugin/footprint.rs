//! What one instance of a component takes from the pooling allocator: its core instances,
//! linear memories and tables, counted from the binary at load. A Rust plugin is 3 core
//! instances; a Python one (CPython inside) 14. Counting lets a pool the allocator cannot hold
//! be refused at load, and so at `check`, with the numbers, rather than at the first instance
//! it fails to make.

use std::ops::{Add, Mul};

use wasmparser::{Encoding, Instance, Parser, Payload};

/// Allocator slots of one kind per instance, or in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Footprint {
    /// Core module instances.
    pub core_instances: u64,
    /// Linear memories the instantiated modules define (imported ones are shared).
    pub memories: u64,
    /// Tables the instantiated modules define.
    pub tables: u64,
}

/// One module or component being read, in nesting order.
enum Frame {
    Module {
        memories: u64,
        tables: u64,
    },
    /// Its modules by index, and what its instantiations take.
    Component {
        modules: Vec<(u64, u64)>,
        taken: Footprint,
    },
}

impl Footprint {
    /// What one instance of the component `bytes` takes: each core instantiation with the
    /// memories and tables its module defines, nested components counted once each.
    pub fn of(bytes: &[u8]) -> Result<Footprint, wasmparser::BinaryReaderError> {
        let mut stack: Vec<Frame> = Vec::new();
        let mut total = Footprint::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload? {
                Payload::Version { encoding: Encoding::Module, .. } => {
                    stack.push(Frame::Module { memories: 0, tables: 0 })
                }
                Payload::Version { encoding: Encoding::Component, .. } => {
                    stack.push(Frame::Component { modules: Vec::new(), taken: Footprint::default() })
                }
                Payload::MemorySection(section) => {
                    if let Some(Frame::Module { memories, .. }) = stack.last_mut() {
                        *memories += u64::from(section.count());
                    }
                }
                Payload::TableSection(section) => {
                    if let Some(Frame::Module { tables, .. }) = stack.last_mut() {
                        *tables += u64::from(section.count());
                    }
                }
                Payload::InstanceSection(section) => {
                    if let Some(Frame::Component { modules, taken }) = stack.last_mut() {
                        for instance in section {
                            if let Instance::Instantiate { module_index, .. } = instance? {
                                // A module this component did not define (imported, aliased)
                                // counts as one memory and one table, to err on the safe side.
                                let (memories, tables) =
                                    modules.get(module_index as usize).copied().unwrap_or((1, 1));
                                *taken = *taken + Footprint { core_instances: 1, memories, tables };
                            }
                        }
                    }
                }
                Payload::End(_) => match (stack.pop(), stack.last_mut()) {
                    (Some(Frame::Module { memories, tables }), Some(Frame::Component { modules, .. })) => {
                        modules.push((memories, tables))
                    }
                    (Some(Frame::Component { taken, .. }), Some(Frame::Component { taken: outer, .. })) => {
                        *outer = *outer + taken
                    }
                    (Some(Frame::Component { taken, .. }), None) => total = taken,
                    // A core module on its own is one instance of itself.
                    (Some(Frame::Module { memories, tables }), None) => {
                        total = Footprint { core_instances: 1, memories, tables }
                    }
                    _ => {}
                },
                _ => {}
            }
        }
        Ok(total)
    }

    /// True if every count fits within `capacity`'s.
    pub fn fits(&self, capacity: &Footprint) -> bool {
        self.core_instances <= capacity.core_instances
            && self.memories <= capacity.memories
            && self.tables <= capacity.tables
    }

    /// The counts over `capacity`'s, with `per` instance, e.g. `2114 core instances (14 each) of
    /// the 2048 reserved`, for an error message.
    pub fn overflow(&self, per: &Footprint, capacity: &Footprint) -> String {
        [
            ("core instances", self.core_instances, per.core_instances, capacity.core_instances),
            ("memories", self.memories, per.memories, capacity.memories),
            ("tables", self.tables, per.tables, capacity.tables),
        ]
        .into_iter()
        .filter(|(_, need, _, have)| need > have)
        .map(|(what, need, each, have)| format!("{need} {what} ({each} each) of the {have} reserved"))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

impl Add for Footprint {
    type Output = Footprint;
    fn add(self, other: Footprint) -> Footprint {
        Footprint {
            core_instances: self.core_instances + other.core_instances,
            memories: self.memories + other.memories,
            tables: self.tables + other.tables,
        }
    }
}

impl Mul<u64> for Footprint {
    type Output = Footprint;
    fn mul(self, n: u64) -> Footprint {
        Footprint {
            core_instances: self.core_instances * n,
            memories: self.memories * n,
            tables: self.tables * n,
        }
    }
}
