//! A lean `Value` for the request's objects: serde_json's own, minus the
//! root's `metadata.managedFields`.

use serde::Deserialize;
use serde_json::Value;

/// `request.object` or `oldObject` as a `Value`, without the top-level
/// `metadata.managedFields`. No rule reads it, and in a real object it
/// restates every field as `f:` keys, a large share of the allocations of
/// parsing a VMI, skipped here without building them (figures in
/// bench/README.md, "Findings").
pub(super) struct LeanObject(pub(super) Value);

impl<'de> Deserialize<'de> for LeanObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Lean { in_metadata: false })
            .map(LeanObject)
    }
}

/// Builds a `Value` as serde_json does, except that `managedFields` is
/// skipped inside the root's `metadata`.
#[derive(Clone, Copy)]
struct Lean {
    in_metadata: bool,
}

impl<'de> serde::de::DeserializeSeed<'de> for Lean {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Lean {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element::<Value>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = match (self.in_metadata, key.as_str()) {
                (false, "metadata") => map.next_value_seed(Lean { in_metadata: true })?,
                (true, "managedFields") => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    continue;
                }
                _ => map.next_value::<Value>()?,
            };
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{decode, DecodeError, API_VERSION, KIND};
    use super::*;

    fn review(object: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": API_VERSION, "kind": KIND,
            "request": {
                "uid": "u", "operation": "UPDATE",
                "kind": {"group": "kubevirt.io", "version": "v1", "kind": "VirtualMachine"},
                "object": object, "oldObject": object,
            }
        }))
        .unwrap()
    }

    #[test]
    fn managed_fields_are_skipped_and_nothing_else() {
        let object = json!({
            "apiVersion": "kubevirt.io/v1",
            "metadata": {
                "name": "vm", "generation": 3, "deletionGracePeriodSeconds": null,
                "annotations": {"runstrategy.kubevirt.io": "BootOnce"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {".": {}}}}],
            },
            "spec": {
                "runStrategy": "BootOnce", "ratio": 0.5, "big": u64::MAX, "neg": -1,
                "list": [1, "two", null, true, {"managedFields": "kept: not metadata"}],
                "template": {"metadata": {"managedFields": "kept: not the root's"}},
            },
        });
        let mut want = object.clone();
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("managedFields");
        let r = decode(&review(object)).unwrap();
        assert_eq!(r.request.object.as_ref(), Some(&want));
        assert_eq!(r.request.old_object.as_ref(), Some(&want));
    }

    #[test]
    fn wrongly_typed_objects_still_name_their_type() {
        for (object, what) in [
            (json!("text"), "a string"),
            (json!([1]), "an array"),
            (json!(1.5), "a number"),
            (json!(false), "a boolean"),
        ] {
            assert_eq!(
                decode(&review(object)).unwrap_err(),
                DecodeError::NotObject("object", what)
            );
        }
        // Metadata of the wrong type is kept as it is, for the rules to judge.
        let r = decode(&review(json!({"metadata": "x"}))).unwrap();
        assert_eq!(r.request.object, Some(json!({"metadata": "x"})));
    }
}
