//! The lean projection of a VirtualMachine the cache decodes: namespace,
//! name, uid, resourceVersion, generation, `spec.runStrategy` and the
//! reserved annotation. Everything else is skipped by the deserializer without being
//! allocated.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::NamespaceResourceScope;
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::admission::{VmInfo, BOOTONCE_ANNOTATION};

/// A VirtualMachine as the cache decodes it.
#[derive(Clone, Debug, Deserialize)]
pub struct LeanVm {
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: LeanSpec,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeanSpec {
    #[serde(default)]
    pub run_strategy: Option<String>,
}

impl kube::Resource for LeanVm {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        "VirtualMachine".into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        "kubevirt.io".into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        "v1".into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        "virtualmachines".into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl LeanVm {
    pub(super) fn info(&self) -> VmInfo {
        VmInfo::from_fields(
            self.metadata.uid.clone(),
            self.spec.run_strategy.as_deref(),
            (self.metadata.annotations.as_ref())
                .and_then(|a| a.get(BOOTONCE_ANNOTATION))
                .map(String::as_str),
        )
    }
}

/// Decodes `metadata` keeping name, namespace, uid, resourceVersion,
/// generation and only the reserved annotation; `managedFields`, labels and the rest are skipped.
fn lean_meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    struct MetaVisitor;
    impl<'de> Visitor<'de> for MetaVisitor {
        type Value = ObjectMeta;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("object metadata")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ObjectMeta, A::Error> {
            let mut meta = ObjectMeta::default();
            while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                match key.as_ref() {
                    "name" => meta.name = map.next_value()?,
                    "namespace" => meta.namespace = map.next_value()?,
                    "uid" => meta.uid = map.next_value()?,
                    "resourceVersion" => meta.resource_version = map.next_value()?,
                    "generation" => meta.generation = map.next_value()?,
                    "annotations" => {
                        let Reserved(v) = map.next_value()?;
                        meta.annotations = v.map(|v| [(BOOTONCE_ANNOTATION.to_owned(), v)].into());
                    }
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(meta)
        }
    }
    d.deserialize_map(MetaVisitor)
}

/// The reserved annotation's value out of an annotations map; other entries skipped.
struct Reserved(Option<String>);

impl<'de> Deserialize<'de> for Reserved {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Reserved;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an annotations map")
            }
            fn visit_unit<E>(self) -> Result<Reserved, E> {
                Ok(Reserved(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Reserved, A::Error> {
                let mut found = None;
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    if key == BOOTONCE_ANNOTATION {
                        found = map.next_value()?;
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Reserved(found))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::RunStrategy;

    #[test]
    fn lean_decoding_keeps_only_what_decisions_need() {
        let vm: LeanVm = serde_json::from_value(serde_json::json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": "a", "namespace": "ns", "uid": "u1", "resourceVersion": "7", "generation": 4,
                "labels": {"x": "y"},
                "annotations": {"other": "z", "runstrategy.kubevirt.io": "BootOnce"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}]},
            "spec": {"runStrategy": "Once", "template": {"spec": {"domain": {}}}},
            "status": {"printableStatus": "Running"}
        }))
        .unwrap();
        assert_eq!(vm.metadata.labels, None);
        assert_eq!(vm.metadata.managed_fields, None);
        assert_eq!(vm.metadata.annotations.as_ref().map(|a| a.len()), Some(1));
        assert_eq!(vm.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(vm.metadata.generation, Some(4));
        let info = vm.info();
        assert_eq!(info.uid.as_deref(), Some("u1"));
        assert_eq!(info.run_strategy, RunStrategy::Once);
        assert!(info.annotated);
    }
}
