//! The JSON metadata as it was stored, kept beside the model so that what the model does not
//! interpret survives every write: cryptsetup edits its json-c object in place, so unknown
//! members (an extra key inside `config`, a vendor field in a keyslot) and the stored member
//! order are kept by `dump --json`, every header write and `token export`. We do the same by
//! merging the JSON the model generates into the stored JSON ([`merge`]).
//!
//! The merge is driven by a [`Shape`] that names, per object, the members the model owns: those
//! take the generated value (or disappear when the model no longer has them), every other stored
//! member is kept where it was, and members new to the stored object are appended, as json-c's
//! `json_object_object_add` appends.

use serde_json::Value;

use super::JsonMap;

/// What the model knows about a JSON value.
pub(super) enum Shape {
    /// Produced whole by the model: the generated value replaces the stored one.
    Whole,
    /// An object whose listed members the model owns; unlisted stored members are kept.
    Members(&'static [(&'static str, &'static Shape)]),
    /// Numbered entries (keyslots, tokens, segments, digests), each of the given shape; an entry
    /// the model no longer has is gone, a new one is appended.
    Entries(&'static Shape),
}

static WHOLE: Shape = Shape::Whole;

static KDF: Shape = Shape::Members(&[
    ("type", &WHOLE),
    ("salt", &WHOLE),
    ("hash", &WHOLE),
    ("iterations", &WHOLE),
    ("time", &WHOLE),
    ("memory", &WHOLE),
    ("cpus", &WHOLE),
]);

static AF: Shape = Shape::Members(&[("type", &WHOLE), ("hash", &WHOLE), ("stripes", &WHOLE)]);

static AREA: Shape = Shape::Members(&[
    ("type", &WHOLE),
    ("encryption", &WHOLE),
    ("key_size", &WHOLE),
    ("offset", &WHOLE),
    ("size", &WHOLE),
]);

/// A keyslot of type `luks2`. Other keyslot types are generated verbatim from the stored object,
/// so every stored member is also generated and nothing is lost with this shape either.
static KEYSLOT: Shape = Shape::Members(&[
    ("type", &WHOLE),
    ("key_size", &WHOLE),
    ("priority", &WHOLE),
    ("kdf", &KDF),
    ("af", &AF),
    ("area", &AREA),
]);

/// A token: `type` and `keyslots`; all its other members are generated verbatim.
pub(super) static TOKEN: Shape = Shape::Members(&[("type", &WHOLE), ("keyslots", &WHOLE)]);

static SEGMENT: Shape = Shape::Members(&[
    ("type", &WHOLE),
    ("offset", &WHOLE),
    ("size", &WHOLE),
    ("flags", &WHOLE),
    ("iv_tweak", &WHOLE),
    ("encryption", &WHOLE),
    ("sector_size", &WHOLE),
    ("integrity", &WHOLE),
]);

static DIGEST: Shape = Shape::Members(&[
    ("type", &WHOLE),
    ("keyslots", &WHOLE),
    ("segments", &WHOLE),
    ("hash", &WHOLE),
    ("iterations", &WHOLE),
    ("salt", &WHOLE),
    ("digest", &WHOLE),
]);

static REQUIREMENTS: Shape = Shape::Members(&[("mandatory", &WHOLE)]);

static CONFIG: Shape = Shape::Members(&[
    ("json_size", &WHOLE),
    ("keyslots_size", &WHOLE),
    ("flags", &WHOLE),
    ("requirements", &REQUIREMENTS),
]);

static KEYSLOTS: Shape = Shape::Entries(&KEYSLOT);
static TOKENS: Shape = Shape::Entries(&TOKEN);
static SEGMENTS: Shape = Shape::Entries(&SEGMENT);
static DIGESTS: Shape = Shape::Entries(&DIGEST);

/// The whole metadata object.
pub(super) static ROOT: Shape = Shape::Members(&[
    ("keyslots", &KEYSLOTS),
    ("tokens", &TOKENS),
    ("segments", &SEGMENTS),
    ("digests", &DIGESTS),
    ("config", &CONFIG),
]);

/// The stored JSON object, if the metadata was read (or a token imported) rather than built.
///
/// It is not part of [`super::Metadata`]'s equality, which compares the model.
#[derive(Clone, Default)]
pub(super) struct StoredJson(pub(super) Option<Value>);

impl PartialEq for StoredJson {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for StoredJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The members are the metadata's own; Debug of the model already shows what matters.
        match &self.0 {
            Some(_) => f.write_str("StoredJson(..)"),
            None => f.write_str("StoredJson(none)"),
        }
    }
}

/// `generated` with everything of `stored` the model does not own kept, in stored order.
pub(super) fn merge(stored: &Value, generated: Value, shape: &Shape) -> Value {
    match (shape, stored, generated) {
        (Shape::Members(owned), Value::Object(s), Value::Object(mut g)) => {
            let mut out = JsonMap::new();
            for (k, sv) in s {
                let child = owned.iter().find(|(name, _)| name == k).map(|(_, sh)| *sh);
                match (g.shift_remove(k), child) {
                    (Some(gv), Some(sh)) => {
                        out.insert(k.clone(), merge(sv, gv, sh));
                    }
                    // Generated but not owned: a verbatim member of an `Other` kind.
                    (Some(gv), None) => {
                        out.insert(k.clone(), gv);
                    }
                    // Owned by the model, which dropped it.
                    (None, Some(_)) => {}
                    // Unknown to the model: data, kept.
                    (None, None) => {
                        out.insert(k.clone(), sv.clone());
                    }
                }
            }
            out.extend(g);
            Value::Object(out)
        }
        (Shape::Entries(entry), Value::Object(s), Value::Object(mut g)) => {
            let mut out = JsonMap::new();
            for (k, sv) in s {
                if let Some(gv) = g.shift_remove(k) {
                    out.insert(k.clone(), merge(sv, gv, entry));
                }
            }
            out.extend(g);
            Value::Object(out)
        }
        (_, _, g) => g,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_members_and_order_survive_owned_ones_follow_the_model() {
        let stored = json!({
            "config": {"x-vendor": {"a": 1}, "keyslots_size": "1", "json_size": "2",
                       "flags": ["allow-discards"]},
            "keyslots": {"1": {"area": {"size": "9"}, "type": "luks2", "x": true},
                         "0": {"type": "luks2", "priority": 2}},
        });
        let generated = json!({
            "keyslots": {"0": {"type": "luks2"}, "2": {"type": "luks2"}},
            "config": {"json_size": "2", "keyslots_size": "3"},
        });
        let out = merge(&stored, generated, &ROOT);
        assert_eq!(
            out.to_string(),
            json!({
                "config": {"x-vendor": {"a": 1}, "keyslots_size": "3", "json_size": "2"},
                "keyslots": {"0": {"type": "luks2"}, "2": {"type": "luks2"}},
            })
            .to_string()
        );
    }
}
