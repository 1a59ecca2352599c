//! A kernel in memory, for tests of everything above the dataplane: it keeps every call and
//! applies element changes the way the kernel would.

use podwall_policy::ruleset::Element;

use super::elements::{ElementOp, Key};
use super::names::map_direction;
use super::{DataplaneError, Desired, Fingerprint, Kernel, Structure, TablesId};

/// One call a `RecordingKernel` received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Replace,
    Elements(Vec<ElementOp>),
    Structure(Structure),
}

/// A kernel that keeps every call and the resulting table in memory.
#[derive(Debug, Default)]
pub struct RecordingKernel {
    pub calls: Vec<Call>,
    pub table: Option<Desired>,
    /// The next calls fail with these details, one each, and change nothing.
    pub refusals: std::collections::VecDeque<String>,
    /// The bridge port each address is behind.
    pub ports: std::collections::BTreeMap<std::net::IpAddr, String>,
    /// The addresses whose flows were forgotten, each with the number of calls before.
    pub forgotten: Vec<(usize, Vec<std::net::IpAddr>)>,
    /// Forgetting flows fails with this, while set.
    pub conntrack_refusal: Option<String>,
    /// The handle the table got when it was last created (each replace creates it anew).
    pub handle: u64,
}

impl RecordingKernel {
    /// Refuse the next `times` calls with `detail`.
    pub fn refuse(&mut self, detail: &str, times: usize) {
        self.refusals
            .extend(std::iter::repeat_n(detail.to_string(), times));
    }

    fn fail(&mut self, ops: usize) -> Result<(), DataplaneError> {
        match self.refusals.pop_front() {
            Some(detail) => Err(DataplaneError::Rejected { ops, detail }),
            None => Ok(()),
        }
    }
}

impl Kernel for RecordingKernel {
    fn replace(&mut self, desired: &Desired) -> Result<(), DataplaneError> {
        self.fail(1)?;
        self.table = Some(desired.clone());
        self.handle += 1;
        self.calls.push(Call::Replace);
        Ok(())
    }

    fn apply_elements(&mut self, ops: &[ElementOp]) -> Result<(), DataplaneError> {
        self.fail(ops.len())?;
        let table = self.table.get_or_insert_with(Desired::default);
        for op in ops {
            apply_op(table, op);
        }
        self.calls.push(Call::Elements(ops.to_vec()));
        Ok(())
    }

    fn apply_structure(&mut self, structure: &Structure) -> Result<(), DataplaneError> {
        self.fail(structure.elements.len() + structure.chains.len())?;
        let table = self.table.get_or_insert_with(Desired::default);
        let ruleset = &mut table.ruleset;
        for (name, set) in structure.new_sets.iter().chain(&structure.refilled_sets) {
            ruleset.sets.insert(name.clone(), set.clone());
        }
        for (name, change) in &structure.chains {
            ruleset.chains.insert(name.clone(), change.chain.clone());
        }
        for op in &structure.elements {
            apply_op(table, op);
        }
        for name in &structure.removed_chains {
            table.ruleset.chains.remove(name);
        }
        for name in &structure.removed_sets {
            table.ruleset.sets.remove(name);
        }
        self.calls.push(Call::Structure(structure.clone()));
        Ok(())
    }

    fn dump(&mut self) -> Result<Option<Fingerprint>, DataplaneError> {
        Ok(self.table.as_ref().map(Fingerprint::of))
    }

    fn forget_flows_of(&mut self, ips: &[std::net::IpAddr]) -> Result<usize, DataplaneError> {
        if let Some(detail) = &self.conntrack_refusal {
            return Err(DataplaneError::Rejected {
                ops: 1,
                detail: detail.clone(),
            });
        }
        self.forgotten.push((self.calls.len(), ips.to_vec()));
        Ok(0)
    }

    fn exact(&mut self) -> Result<Option<super::Exact>, DataplaneError> {
        Ok(self.table.as_ref().map(super::Exact::of))
    }

    fn tables_id(&mut self) -> Result<Option<TablesId>, DataplaneError> {
        Ok(self.table.as_ref().map(|_| TablesId {
            boot: "recorded".to_string(),
            netns: 1,
            handles: vec![("inet".to_string(), self.handle)],
        }))
    }

    fn host_ports(
        &mut self,
        ips: &std::collections::BTreeSet<std::net::IpAddr>,
    ) -> Result<std::collections::BTreeMap<std::net::IpAddr, String>, DataplaneError> {
        Ok((self.ports.iter())
            .filter(|(ip, _)| ips.contains(ip))
            .map(|(ip, port)| (*ip, port.clone()))
            .collect())
    }
}

/// An element op applied to the in-memory tables, as the kernel would.
fn apply_op(table: &mut Desired, op: &ElementOp) {
    let (set, key, add) = match op {
        ElementOp::Add { set, key, .. } => (set.as_str(), key, true),
        ElementOp::Delete { set, key } => (set.as_str(), key, false),
    };
    match key {
        Key::IfName(port) => {
            if add {
                table.guard.sources.entry(port.clone()).or_default();
            } else {
                table.guard.sources.remove(port);
            }
        }
        Key::IfNameAddr(port, ip) => {
            if add {
                table
                    .guard
                    .sources
                    .entry(port.clone())
                    .or_default()
                    .insert(*ip);
            } else if let Some(ips) = table.guard.sources.get_mut(port) {
                ips.remove(ip);
            }
        }
        Key::Addr(ip) if map_direction(set).is_some() => {
            let map = match map_direction(set) {
                Some(podwall_policy::Direction::Ingress) => &mut table.ruleset.ingress,
                _ => &mut table.ruleset.egress,
            };
            match op {
                ElementOp::Add {
                    jump: Some(chain), ..
                } => {
                    map.insert(*ip, chain.clone());
                }
                _ => {
                    map.remove(ip);
                }
            }
        }
        // Hairpin pairs follow the ingress map's keys; the table holds them implicitly.
        Key::AddrPair(_) => {}
        Key::Addr(_) | Key::AddrPort(..) => {
            let element = match key {
                Key::AddrPort(ip, port) => Element::AddressPort(*ip, *port),
                Key::Addr(ip) => Element::Address(*ip),
                _ => unreachable!("matched above"),
            };
            if let Some(s) = table.ruleset.sets.get_mut(set) {
                if add {
                    s.insert(element);
                } else {
                    s.remove(&element);
                }
            }
        }
    }
}
