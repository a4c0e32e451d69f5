//! [`SecretMap`]: Secret values (KMS tokens, private keys) that are wiped when dropped. The
//! request's `secrets` of every gRPC call and the operator commands' `--secret-dir` files are
//! held in one, so that no copy the driver owns outlives its use.

use std::collections::HashMap;

/// Secret keys and values, wiped on drop (no `Debug`: it holds tokens and private keys).
#[derive(Default)]
pub struct SecretMap(HashMap<String, String>);

impl SecretMap {
    /// Takes the values out of `map` (a request's `secrets`), leaving it empty.
    pub fn take(map: &mut HashMap<String, String>) -> Self {
        SecretMap(std::mem::take(map))
    }

    /// Adds a value.
    pub fn insert(&mut self, key: String, value: String) {
        if let Some(mut old) = self.0.insert(key, value) {
            zeroize::Zeroize::zeroize(&mut old);
        }
    }
}

impl std::ops::Deref for SecretMap {
    type Target = HashMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for SecretMap {
    fn drop(&mut self) {
        for v in self.0.values_mut() {
            zeroize::Zeroize::zeroize(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_empties_the_request_and_drop_wipes_the_values() {
        let mut request = HashMap::from([("token".to_owned(), "s.secret".to_owned())]);
        let mut secrets = SecretMap::take(&mut request);
        assert!(request.is_empty(), "no second copy stays in the request");
        assert_eq!(secrets["token"], "s.secret");
        // Zeroize clears the String's buffer before it is freed; what we can observe is that
        // the value is emptied in place, through the same call drop makes.
        for v in secrets.0.values_mut() {
            zeroize::Zeroize::zeroize(v);
        }
        assert_eq!(secrets["token"], "");
    }
}
