//! Which daemon certificates the coordinator accepts: the certificates it issued at enrollment,
//! by fingerprint, with the machine id each was issued for and whether it was revoked.
//!
//! A leaf shared by the HTTP side (it checks a connection's client certificate before any
//! upgrade) and the actor (it adds a certificate at enrollment and marks a machine's certificates
//! revoked). The store keeps the same records; this is the coordinator's view of them in memory.

use std::{collections::HashMap, sync::RwLock};

/// What the coordinator knows of one issued certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertEntry {
    /// The machine id the certificate was issued for.
    pub machine_id: String,
    /// True once `adora cluster revoke` named the machine.
    pub revoked: bool,
}

/// Issued certificates by fingerprint.
#[derive(Debug, Default)]
pub(crate) struct CertRegistry(RwLock<HashMap<String, CertEntry>>);

impl CertRegistry {
    /// The entry of the certificate with this fingerprint, if it was issued here.
    pub fn lookup(&self, fingerprint: &str) -> Option<CertEntry> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(fingerprint)
            .cloned()
    }

    /// Records an issued (or loaded) certificate.
    pub fn insert(&self, fingerprint: String, entry: CertEntry) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(fingerprint, entry);
    }

    /// Marks every certificate of `machine_id` revoked; returns how many were not yet.
    pub fn revoke_machine(&self, machine_id: &str) -> usize {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        let mut n = 0;
        for entry in map.values_mut().filter(|e| e.machine_id == machine_id) {
            n += usize::from(!entry.revoked);
            entry.revoked = true;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoking_a_machine_marks_all_its_certificates() {
        let certs = CertRegistry::default();
        let entry = |m: &str| CertEntry {
            machine_id: m.into(),
            revoked: false,
        };
        certs.insert("aa".into(), entry("robot"));
        certs.insert("bb".into(), entry("robot"));
        certs.insert("cc".into(), entry("server"));
        assert_eq!(certs.revoke_machine("robot"), 2);
        assert_eq!(certs.revoke_machine("robot"), 0);
        assert!(certs.lookup("aa").expect("issued").revoked);
        assert!(!certs.lookup("cc").expect("issued").revoked);
        assert_eq!(certs.lookup("dd"), None);
    }
}
