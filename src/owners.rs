//! Where the mutating webhook finds a VMI's owner VirtualMachine.
//!
//! The decisions only see [`Owner`]; sources return the lean [`VmInfo`] and
//! [`resolve`] applies the uid check the same way for all of them. A source
//! that answers from a cache checks the reference itself first (the uid,
//! and the VMI's `kubevirt.io/vm-generation`) and reads the API when the
//! cache is behind: see `cluster::vm_cache`.

use std::collections::HashMap;
use std::path::Path;

use futures::future::BoxFuture;

use crate::admission::{is_kubevirt_vm, Owner, OwnerRef, VmInfo};
use crate::object_files;

/// Why a VM could not be read. The message reaches the user ("retry").
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LookupError(pub String);

/// A source of VirtualMachines, looked up by an owner reference.
pub trait VmSource: Send + Sync {
    /// The VM under the reference's namespace and name. `Ok(None)`: no such
    /// VM. `Err`: unknown (API unreachable and not cached).
    fn get<'a>(&'a self, owner: &'a OwnerRef)
        -> BoxFuture<'a, Result<Option<VmInfo>, LookupError>>;
}

/// Resolves a VMI's owner reference through `source`, checking the uid.
pub async fn resolve(source: &dyn VmSource, owner: &OwnerRef) -> Owner {
    match source.get(owner).await {
        Ok(Some(vm)) => {
            let uid_matches = match (&vm.uid, &owner.uid) {
                (Some(have), Some(want)) => have == want,
                // File-sourced VMs written by hand carry no uid; nothing to compare.
                _ => true,
            };
            if uid_matches {
                Owner::Found(vm)
            } else {
                Owner::NotFound
            }
        }
        Ok(None) => Owner::NotFound,
        Err(e) => Owner::Unavailable(e.0),
    }
}

/// VirtualMachines read once from files (`--objects DIR`, `check`).
#[derive(Debug, Default)]
pub struct StaticVms {
    vms: HashMap<(String, String), VmInfo>,
}

impl StaticVms {
    /// Reads the `.yaml`, `.yml` and `.json` files of a directory (with
    /// its subdirectories if `recursive`), or a single file, and keeps the
    /// VirtualMachines (`serve --objects`, `check --objects`).
    pub fn from_path(path: &Path, recursive: bool) -> Result<Self, object_files::Error> {
        let mut vms = StaticVms::default();
        for doc in object_files::read_path(path, recursive)? {
            vms.insert(&doc.value);
        }
        Ok(vms)
    }

    /// Adds the object if it is a KubeVirt VirtualMachine.
    pub fn insert(&mut self, obj: &serde_json::Value) {
        let is_vm = is_kubevirt_vm(obj);
        let meta = obj.get("metadata");
        let field = |k: &str| meta.and_then(|m| m.get(k)).and_then(|v| v.as_str());
        if let (true, Some(name)) = (is_vm, field("name")) {
            let ns = field("namespace").unwrap_or("default");
            self.vms
                .insert((ns.to_owned(), name.to_owned()), VmInfo::from_object(obj));
        }
    }

    /// How many VirtualMachines were read.
    pub(crate) fn len(&self) -> usize {
        self.vms.len()
    }
}

impl VmSource for StaticVms {
    /// Files have no watch to lag behind: the reference's generation is not checked.
    fn get<'a>(
        &'a self,
        owner: &'a OwnerRef,
    ) -> BoxFuture<'a, Result<Option<VmInfo>, LookupError>> {
        let found = self
            .vms
            .get(&(owner.namespace.clone(), owner.name.clone()))
            .cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
