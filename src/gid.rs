//! GID allocation. One pool across all classes: no two live PVs made by this provisioner share
//! a GID, whatever their classes' ranges (the in-tree table was per class, and overlapping
//! ranges handed out duplicates).
//!
//! The GIDs in use are read from the PV cache, which is rebuilt from the API at start; GIDs
//! handed out whose PV is not in the cache yet are held as reservations.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::{Error, Result};

#[derive(Default)]
pub struct GidAllocator {
    /// PV name -> GID, for provisions in flight.
    reserved: Mutex<HashMap<String, u32>>,
}

impl GidAllocator {
    /// The lowest GID in `min..=max` that neither a cached PV (`in_use`: PV name and GID) nor
    /// a reservation holds, reserved for `pv`. A retry for the same PV gets its GID again.
    pub fn allocate(
        &self,
        pv: &str,
        min: u32,
        max: u32,
        in_use: impl IntoIterator<Item = (String, u32)>,
    ) -> Result<u32> {
        let mut reserved = self.reserved.lock().expect("gid lock");
        let mut taken = HashSet::new();
        for (name, gid) in in_use {
            if name == pv {
                // The PV exists already: its GID is the volume's.
                reserved.remove(&name);
                return Ok(gid);
            }
            // The PV is cached now, so its GID is counted from there.
            reserved.remove(&name);
            taken.insert(gid);
        }
        if let Some(&gid) = reserved.get(pv).filter(|g| (min..=max).contains(*g)) {
            return Ok(gid);
        }
        taken.extend(reserved.values().copied());
        let gid = (min..=max)
            .find(|g| !taken.contains(g))
            .ok_or(Error::GidRangeFull { min, max })?;
        reserved.insert(pv.to_string(), gid);
        Ok(gid)
    }

    /// Holds `gid` for `pv` instead of what it was given: the volume has that one.
    pub fn reserve(&self, pv: &str, gid: u32) {
        self.reserved
            .lock()
            .expect("gid lock")
            .insert(pv.to_string(), gid);
    }

    /// Gives back the GID of a provision that failed.
    pub fn release(&self, pv: &str) {
        self.reserved.lock().expect("gid lock").remove(pv);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(pairs: &[(&str, u32)]) -> Vec<(String, u32)> {
        pairs.iter().map(|(n, g)| (n.to_string(), *g)).collect()
    }

    #[test]
    fn lowest_free_across_classes_and_reservations() {
        let a = GidAllocator::default();
        assert_eq!(
            a.allocate("pv1", 2000, 2010, used(&[("old", 2000), ("x", 2002)]))
                .unwrap(),
            2001
        );
        // pv1 is in flight, so a second class with an overlapping range skips 2001 too.
        assert_eq!(
            a.allocate("pv2", 1990 + 10, 2005, used(&[("old", 2000), ("x", 2002)]))
                .unwrap(),
            2003
        );
        assert_eq!(
            a.allocate("pv1", 2000, 2010, used(&[])).unwrap(),
            2001,
            "retry keeps its GID"
        );
        a.release("pv1");
        assert_eq!(
            a.allocate("pv3", 2000, 2010, used(&[("old", 2000)]))
                .unwrap(),
            2001
        );
    }

    #[test]
    fn a_volume_found_with_another_gid_holds_that_one() {
        let a = GidAllocator::default();
        assert_eq!(a.allocate("pv1", 10, 12, used(&[])).unwrap(), 10);
        a.reserve("pv1", 11);
        assert_eq!(a.allocate("pv2", 10, 12, used(&[])).unwrap(), 10);
        assert_eq!(a.allocate("pv3", 10, 12, used(&[])).unwrap(), 12);
    }

    #[test]
    fn a_cached_pv_keeps_its_gid() {
        let a = GidAllocator::default();
        assert_eq!(
            a.allocate("pv1", 5000, 5010, used(&[("pv0", 5000)]))
                .unwrap(),
            5001
        );
        // Asked again once its PV is cached (a provision repeated before the cache had the PV).
        let cached = used(&[("pv0", 5000), ("pv1", 5001)]);
        assert_eq!(a.allocate("pv1", 5000, 5010, cached).unwrap(), 5001);
    }

    #[test]
    fn cached_pvs_replace_reservations_and_full_ranges_fail() {
        let a = GidAllocator::default();
        assert_eq!(a.allocate("pv1", 5000, 5001, used(&[])).unwrap(), 5000);
        assert_eq!(
            a.allocate("pv2", 5000, 5001, used(&[("pv1", 5000)]))
                .unwrap(),
            5001
        );
        let err = a
            .allocate("pv3", 5000, 5001, used(&[("pv1", 5000)]))
            .unwrap_err();
        assert_eq!(err.to_string(), "GID range 5000-5001 is full");
        // pv1 deleted: its GID comes back once the cache no longer has it.
        assert_eq!(
            a.allocate("pv3", 5000, 5001, used(&[("pv2", 5001)]))
                .unwrap(),
            5000
        );
    }
}
