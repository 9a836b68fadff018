//! An incident alert's labels or annotations, kept as the JSON text of the
//! store's document until something reads them.
//!
//! Why: a storm incident holds a hundred alerts or more, and every change to it
//! reads and rewrites all of them, while most changes look at the labels of one
//! or two (the alert that joined, the first alert for the title); inhibition
//! and service topology read more, and parse what they read. Building a label
//! map is most of the cost of reading an alert (a `String` per name and value,
//! B-tree nodes); copying its text is a fraction of that. Writing it back
//! copies the text again: an alert's labels and annotations do not change once
//! it has joined an incident, so the text stays true.
//!
//! Only the store document is read and written this way
//! ([`super::from_store_document`], [`super::to_store_document`]); everywhere
//! else (the API, adapters, templates, the memory store) the map serializes and
//! deserializes as an ordinary JSON object.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

/// A `name → value` map of strings, parsed on first read when it came from a
/// store document (see the module header). Reads go through `Deref`.
#[derive(Clone, Default)]
pub struct StoredMap {
    /// The JSON object as the store document held it (checked on load).
    text: Option<Box<RawValue>>,
    map: OnceLock<BTreeMap<String, String>>,
}

impl StoredMap {
    /// A copy of the map.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        (**self).clone()
    }

    /// Whether the map is still the text it was loaded as: nothing has read
    /// it since. False for a map that was never text.
    pub fn is_unparsed(&self) -> bool {
        self.text.is_some() && self.map.get().is_none()
    }
}

impl Deref for StoredMap {
    type Target = BTreeMap<String, String>;

    fn deref(&self) -> &Self::Target {
        self.map.get_or_init(|| {
            let Some(text) = &self.text else {
                return BTreeMap::new();
            };
            // The text was checked to be an object of strings when it was
            // loaded (`deserialize`), so this parse does not fail.
            serde_json::from_str(text.get()).unwrap_or_else(|e| {
                debug_assert!(false, "checked labels failed to parse: {e}");
                BTreeMap::new()
            })
        })
    }
}

impl From<BTreeMap<String, String>> for StoredMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        StoredMap {
            text: None,
            map: OnceLock::from(map),
        }
    }
}

impl PartialEq for StoredMap {
    fn eq(&self, other: &Self) -> bool {
        // The engine compares an incident with the copy it changed to see
        // whether anything did: the same text is the same map, unparsed.
        if let (Some(a), Some(b)) = (&self.text, &other.text)
            && a.get() == b.get()
        {
            return true;
        }
        **self == **other
    }
}

/// Map equality, so reflexive: an incident alert is `Eq`, which lets the
/// alerts an incident shares with its copy compare by pointer.
impl Eq for StoredMap {}

impl fmt::Debug for StoredMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

impl Serialize for StoredMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.text {
            // The text is only spliced into a store document, which is always
            // JSON; other serializers (templates) get the map.
            Some(text) if super::in_store_document() => text.serialize(s),
            _ => (**self).serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for StoredMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !super::in_store_document() {
            return BTreeMap::deserialize(d).map(StoredMap::from);
        }
        let text = Box::<RawValue>::deserialize(d)?;
        // Checked now, without building anything, so that a corrupt document
        // fails to load rather than losing labels when first read.
        serde_json::from_str::<StringMapCheck>(text.get())
            .map_err(|_| de::Error::custom("labels and annotations must be objects of strings"))?;
        Ok(StoredMap {
            text: Some(text),
            map: OnceLock::new(),
        })
    }
}

/// Accepts a JSON object whose values are strings, allocating nothing.
struct StringMapCheck;

/// Accepts a JSON string, borrowed or escaped, allocating nothing.
struct StrCheck;

impl<'de> Deserialize<'de> for StrCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<StrCheck, E> {
                Ok(StrCheck)
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for StringMapCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StringMapCheck;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StringMapCheck, A::Error> {
                while m.next_entry::<StrCheck, StrCheck>()?.is_some() {}
                Ok(StringMapCheck)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> BTreeMap<String, String> {
        [("alertname", "TargetDown"), ("note", "say \"hi\"\n")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn outside_a_store_document_it_is_an_ordinary_json_object() {
        let map = StoredMap::from(labels());
        let json = serde_json::to_string(&map).expect("serializes");
        assert_eq!(json, serde_json::to_string(&labels()).expect("serializes"));
        let back: StoredMap = serde_json::from_str(&json).expect("deserializes");
        assert!(!back.is_unparsed());
        assert_eq!(*back, labels());
    }

    #[test]
    fn a_map_loaded_from_a_store_document_is_parsed_only_when_read_and_written_back_as_read() {
        // Not how serde_json writes it (key order, spaces, an escaped
        // letter): written back verbatim, it comes back exactly so.
        let text = r#"{ "note": "say \"hi\"\n",  "alertname":"Target\u0044own" }"#;
        let map: StoredMap =
            super::super::with_store_document(|| serde_json::from_str(text)).expect("loads");
        assert!(map.is_unparsed());
        let again =
            super::super::with_store_document(|| serde_json::to_string(&map)).expect("writes");
        assert_eq!(again, text);
        assert!(map.is_unparsed(), "writing it back does not parse it");
        let copy = map.clone();
        assert!(
            copy == map && copy.is_unparsed(),
            "same text: equal, unparsed"
        );
        assert_eq!(map.get("alertname").map(String::as_str), Some("TargetDown"));
        assert_eq!(*map, labels());
        assert!(
            StoredMap::from(labels()) == map,
            "text against a map: compared as maps"
        );
        // Elsewhere it is the map.
        assert_eq!(
            serde_json::to_string(&map).expect("serializes"),
            serde_json::to_string(&labels()).expect("serializes")
        );
    }

    #[test]
    fn a_store_document_that_is_not_utf8_fails_to_load() {
        assert!(super::super::from_store_document(b"{\"id\":\"\xff\"}").is_err());
    }

    #[test]
    fn a_store_document_whose_labels_are_not_strings_fails_to_load() {
        for bad in [
            r#"{"a":1}"#,
            r#"["a"]"#,
            r#""a""#,
            r#"{"a":{"b":"c"}}"#,
            r#"{"a":null}"#,
            "null",
        ] {
            let loaded: Result<StoredMap, _> =
                super::super::with_store_document(|| serde_json::from_str(bad));
            assert!(loaded.is_err(), "{bad} loaded");
        }
    }
}
