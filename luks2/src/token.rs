//! LUKS2 tokens: JSON objects with a `type` and the `keyslots` they unlock, where external unlock
//! metadata lives (systemd-tpm2, clevis, a KMS reference...).
//!
//! Import follows cryptsetup's `crypt_token_json_set`: the object must have a string `type` and
//! a `keyslots` array of existing keyslot numbers; the `luks2-` type prefix is reserved for
//! cryptsetup's built-in tokens, of which only `luks2-keyring` (with a string `key_description`)
//! exists, so any other `luks2-*` type is refused.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::header::{self, Header};
use crate::io::Device;
use crate::metadata::{KeyslotId, Metadata, TOKENS_MAX, Token, TokenId};

/// The reserved prefix of built-in token types.
pub const BUILTIN_PREFIX: &str = "luks2-";
/// The one built-in token type of cryptsetup 2.6.
pub const KEYRING_TOKEN: &str = "luks2-keyring";

/// Parses and validates a token JSON text for `md` (keyslot references must exist).
pub fn parse_token(md: &Metadata, json: &str) -> Result<Token> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Error::InvalidArgument(format!("token JSON is not valid: {e}")))?;
    let token = Token::from_json(&value)
        .map_err(|e| Error::InvalidArgument(format!("invalid token: {e}")))?;
    if token.type_name.starts_with(BUILTIN_PREFIX) {
        if token.type_name != KEYRING_TOKEN {
            return Err(Error::InvalidArgument(format!(
                "token type {:?} uses the reserved {BUILTIN_PREFIX:?} prefix",
                token.type_name
            )));
        }
        if !token
            .fields
            .get("key_description")
            .is_some_and(Value::is_string)
        {
            return Err(Error::InvalidArgument(
                "luks2-keyring token needs a string key_description".into(),
            ));
        }
    }
    for k in &token.keyslots {
        if !md.keyslots.contains_key(k) {
            return Err(Error::InvalidArgument(format!(
                "token refers to keyslot {k}, which is not active"
            )));
        }
    }
    Ok(token)
}

/// Imports a token (`cryptsetup token import`): `id` (or the lowest free number), optionally
/// also assigned to `keyslot`. Returns the token number.
pub fn add_token<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    json: &str,
    id: Option<TokenId>,
    keyslot: Option<KeyslotId>,
) -> Result<TokenId> {
    header.metadata.ensure_writable()?;
    let mut token = parse_token(&header.metadata, json)?;
    // Stored as given (member order included), as cryptsetup's import stores the object.
    let value: Value = serde_json::from_str(json)
        .map_err(|e| Error::InvalidArgument(format!("token JSON is not valid: {e}")))?;
    let id = match id {
        Some(id) if id.get() >= TOKENS_MAX => {
            return Err(Error::InvalidArgument(format!(
                "token {id} is out of range"
            )));
        }
        Some(id) if header.metadata.tokens.contains_key(&id) => {
            return Err(Error::Slot(format!("token {id} is in use")));
        }
        Some(id) => id,
        None => header
            .metadata
            .next_free_token()
            .ok_or_else(|| Error::Slot("all token slots are full".into()))?,
    };
    if let Some(k) = keyslot {
        if !header.metadata.keyslots.contains_key(&k) {
            return Err(Error::Slot(format!("keyslot {k} is not active")));
        }
        if !token.keyslots.contains(&k) {
            token.keyslots.push(k);
        }
    }
    let mut updated = header.clone();
    updated.metadata.tokens.insert(id, token);
    updated.metadata.set_stored_token(id, value);
    header::write(dev, &mut updated)?;
    *header = updated;
    Ok(id)
}

/// Removes token `id`.
pub fn remove_token<D: Device + ?Sized>(
    dev: &mut D,
    header: &mut Header,
    id: TokenId,
) -> Result<()> {
    header.metadata.ensure_writable()?;
    if !header.metadata.tokens.contains_key(&id) {
        return Err(Error::Slot(format!("token {id} is not in use")));
    }
    let mut updated = header.clone();
    updated.metadata.tokens.remove(&id);
    header::write(dev, &mut updated)?;
    *header = updated;
    Ok(())
}

/// The token's JSON text, compact, as `cryptsetup token export` prints it: its members in their
/// stored order.
pub fn export_token(md: &Metadata, id: TokenId) -> Result<String> {
    md.token_value(id)
        .map(|v| v.to_string())
        .ok_or_else(|| Error::Slot(format!("token {id} is not in use")))
}

/// All tokens: number and type.
pub fn list_tokens(md: &Metadata) -> Vec<(TokenId, String)> {
    md.tokens
        .iter()
        .map(|(id, t)| (*id, t.type_name.clone()))
        .collect()
}
