//! The `users` table: accounts and their digest credentials.
//!
//! A digest HA1 is `H(username:realm:password)`, so it depends on the exact `username` string
//! the client is configured with. SIP clients use either the user part (`alice`) or the whole
//! identity (`alice@localhost`), so each account stores four HA1 values: MD5 and SHA-256 for
//! each form. The password itself is never stored.

use core::fmt;
use core::net::Ipv6Addr;

use cpm_sip_core::digest::{self, Algorithm};
use rusqlite::{OptionalExtension, params};

use crate::{Store, StoreError};

/// An address of record, `user@domain` (RFC 3261 section 10: the SIP URI `sip:user@domain`
/// without the scheme). The domain is kept lowercase (host names compare case-insensitively,
/// RFC 3261 section 19.1.4); the user part is case-sensitive and kept as written.
#[derive(Clone, Debug, Eq, Hash, Ord, PartialEq, PartialOrd)]
pub struct Aor {
    text: String,
    at: usize,
}

impl Aor {
    /// Parses `user@domain`: a non-empty user part without `:` (no scheme, no password), a
    /// domain that is a host name or a bracketed IPv6 address, and no whitespace or control
    /// characters anywhere.
    pub fn parse(aor: &str) -> Result<Self, StoreError> {
        let invalid = |reason| StoreError::InvalidAor {
            aor: aor.to_owned(),
            reason,
        };
        if aor.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("contains whitespace or control characters"));
        }
        let Some((user, domain)) = aor.split_once('@') else {
            return Err(invalid("expected user@domain"));
        };
        if user.is_empty() {
            return Err(invalid("empty user part"));
        }
        if user.contains(':') {
            return Err(invalid(
                "the user part contains ':' (give user@domain, no sip:)",
            ));
        }
        if user.contains(['<', '>', '"']) {
            return Err(invalid("the user part contains '<', '>' or '\"'"));
        }
        if domain.is_empty() {
            return Err(invalid("empty domain"));
        }
        let is_host_name = domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..");
        let is_ipv6_ref = domain
            .strip_prefix('[')
            .and_then(|d| d.strip_suffix(']'))
            .is_some_and(|d| d.parse::<Ipv6Addr>().is_ok());
        if !is_host_name && !is_ipv6_ref {
            return Err(invalid("the domain is not a host name"));
        }
        Ok(Self {
            text: format!("{user}@{}", domain.to_ascii_lowercase()),
            at: user.len(),
        })
    }

    /// `user@domain`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The user part.
    pub fn user(&self) -> &str {
        &self.text[..self.at]
    }

    /// The domain, lowercase.
    pub fn domain(&self) -> &str {
        &self.text[self.at + 1..]
    }
}

impl fmt::Display for Aor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// One account, as listed by [`Store::list_users`].
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct UserRecord {
    /// The address of record, `user@domain`.
    pub aor: String,
    /// The digest realm the HA1 values were computed for.
    pub realm: String,
    /// When the account was created, Unix seconds (as given to [`Store::add_user`]).
    pub created_at: u64,
}

/// The digest secrets of one account for one `username` form, from
/// [`Store::user_credentials`].
#[derive(Clone, Eq, PartialEq)]
pub struct UserCredentials {
    /// The address of record the username belongs to.
    pub aor: String,
    /// MD5 HA1, lowercase hex, for the username as the client gave it.
    pub ha1_md5: String,
    /// SHA-256 HA1, lowercase hex, for the username as the client gave it.
    pub ha1_sha256: String,
}

impl UserCredentials {
    /// The HA1 to pass to [`digest::verify`] for credentials using `alg`.
    pub fn ha1(&self, alg: Algorithm) -> &str {
        match alg {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

impl fmt::Debug for UserCredentials {
    /// The HA1 values are password equivalents for their realm: not printed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserCredentials")
            .field("aor", &self.aor)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Creates an account. `aor` is `user@domain` (see [`Aor::parse`]); `realm` is the digest
    /// realm the node challenges with, normally the domain (the `alice` username form is looked
    /// up as `alice@<realm>`); `created_at` is the current time in Unix seconds.
    ///
    /// Stores the four HA1 values, never the password. Fails with [`StoreError::UserExists`]
    /// if the AOR is taken.
    pub fn add_user(
        &self,
        aor: &str,
        password: &str,
        realm: &str,
        created_at: u64,
    ) -> Result<(), StoreError> {
        let aor = Aor::parse(aor)?;
        if password.is_empty() {
            return Err(StoreError::EmptyPassword);
        }
        if realm.is_empty() {
            return Err(StoreError::EmptyRealm);
        }
        let ha1 = |alg, username| digest::ha1(alg, username, realm, password);
        let result = self.conn.execute(
            "INSERT INTO users (aor, realm, ha1_md5_user, ha1_md5_aor, ha1_sha256_user,
                                ha1_sha256_aor, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                aor.as_str(),
                realm,
                ha1(Algorithm::Md5, aor.user()),
                ha1(Algorithm::Md5, aor.as_str()),
                ha1(Algorithm::Sha256, aor.user()),
                ha1(Algorithm::Sha256, aor.as_str()),
                i64::try_from(created_at).unwrap_or(i64::MAX),
            ],
        );
        match result {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::UserExists(aor.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an account; `false` if there was none with this AOR.
    pub fn remove_user(&self, aor: &str) -> Result<bool, StoreError> {
        let aor = Aor::parse(aor)?;
        let n = self
            .conn
            .execute("DELETE FROM users WHERE aor = ?1", [aor.as_str()])?;
        Ok(n > 0)
    }

    /// All accounts, ordered by AOR.
    pub fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT aor, realm, created_at FROM users ORDER BY aor")?;
        let rows = stmt.query_map([], |row| {
            Ok(UserRecord {
                aor: row.get(0)?,
                realm: row.get(1)?,
                created_at: u64::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Whether an account with this AOR exists. A string that is not a valid AOR names no
    /// account.
    pub fn user_exists(&self, aor: &str) -> Result<bool, StoreError> {
        let Ok(aor) = Aor::parse(aor) else {
            return Ok(false);
        };
        let found = self
            .conn
            .query_row("SELECT 1 FROM users WHERE aor = ?1", [aor.as_str()], |_| {
                Ok(())
            })
            .optional()?;
        Ok(found.is_some())
    }

    /// The HA1 values for a digest `username` in `realm`, as the registrar needs them to
    /// [`digest::verify`] credentials. `username` is either the full AOR (`alice@localhost`)
    /// or the user part (`alice`, then the AOR is `alice@<realm>`); the HA1 values returned
    /// are those computed with that same username string (with the domain in lowercase, so
    /// a client that hashed `alice@LOCALHOST` will not verify). `None` if no account matches,
    /// or the account's realm is another one.
    pub fn user_credentials(
        &self,
        username: &str,
        realm: &str,
    ) -> Result<Option<UserCredentials>, StoreError> {
        let (aor, sql) = if username.contains('@') {
            (
                Aor::parse(username),
                "SELECT ha1_md5_aor, ha1_sha256_aor FROM users WHERE aor = ?1 AND realm = ?2",
            )
        } else {
            (
                Aor::parse(&format!("{username}@{realm}")),
                "SELECT ha1_md5_user, ha1_sha256_user FROM users WHERE aor = ?1 AND realm = ?2",
            )
        };
        let Ok(aor) = aor else {
            return Ok(None);
        };
        let found = self
            .conn
            .query_row(sql, params![aor.as_str(), realm], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        Ok(found.map(|(ha1_md5, ha1_sha256)| UserCredentials {
            aor: aor.to_string(),
            ha1_md5,
            ha1_sha256,
        }))
    }
}

#[cfg(test)]
mod tests {
    use cpm_sip_core::digest::{Challenge, Credentials, NonceKey, Qop};

    use super::*;
    use crate::sqlite::test_dir::TempDir;

    const NOW: u64 = 1_750_000_000;

    #[test]
    fn add_list_remove() {
        let dir = TempDir::new("users-crud");
        let store = Store::open(dir.path()).unwrap();
        assert!(store.list_users().unwrap().is_empty());
        store
            .add_user("bob@localhost", "pw-b", "localhost", NOW)
            .unwrap();
        store
            .add_user("alice@localhost", "pw-a", "localhost", NOW + 1)
            .unwrap();
        assert_eq!(
            store.list_users().unwrap(),
            vec![
                UserRecord {
                    aor: "alice@localhost".into(),
                    realm: "localhost".into(),
                    created_at: NOW + 1,
                },
                UserRecord {
                    aor: "bob@localhost".into(),
                    realm: "localhost".into(),
                    created_at: NOW,
                },
            ]
        );
        assert!(store.user_exists("alice@localhost").unwrap());
        assert!(!store.user_exists("carol@localhost").unwrap());
        assert!(!store.user_exists("not an aor").unwrap());
        assert!(store.remove_user("alice@localhost").unwrap());
        assert!(!store.remove_user("alice@localhost").unwrap());
        assert!(!store.user_exists("alice@localhost").unwrap());
        assert_eq!(store.list_users().unwrap().len(), 1);
    }

    #[test]
    fn duplicate_add_is_user_exists() {
        let dir = TempDir::new("users-dup");
        let store = Store::open(dir.path()).unwrap();
        store
            .add_user("alice@localhost", "a", "localhost", NOW)
            .unwrap();
        let err = store
            .add_user("alice@localhost", "b", "localhost", NOW)
            .unwrap_err();
        assert!(matches!(&err, StoreError::UserExists(a) if a == "alice@localhost"));
        assert_eq!(err.to_string(), "user alice@localhost exists");
        // The domain is case-insensitive, so this is the same account.
        let err = store
            .add_user("alice@LocalHost", "b", "localhost", NOW)
            .unwrap_err();
        assert!(matches!(err, StoreError::UserExists(_)), "{err}");
        // The user part is case-sensitive.
        store
            .add_user("Alice@localhost", "c", "localhost", NOW)
            .unwrap();
    }

    #[test]
    fn invalid_input_is_refused() {
        let dir = TempDir::new("users-invalid");
        let store = Store::open(dir.path()).unwrap();
        for aor in [
            "",
            "alice",
            "@localhost",
            "alice@",
            "al ice@localhost",
            "alice@local host",
            "alice@localhost\n",
            "sip:alice@localhost",
            "alice@localhost:5060",
            "alice@a@b",
            "alice@.localhost",
            "alice@localhost.",
            "alice@[not-v6]",
            "<alice@localhost>",
        ] {
            let err = store.add_user(aor, "pw", "localhost", NOW).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidAor { .. }),
                "{aor:?}: {err}"
            );
        }
        store.add_user("a.b+c@[::1]", "pw", "[::1]", NOW).unwrap();
        assert!(matches!(
            store.add_user("x@localhost", "", "localhost", NOW),
            Err(StoreError::EmptyPassword)
        ));
        assert!(matches!(
            store.add_user("x@localhost", "pw", "", NOW),
            Err(StoreError::EmptyRealm)
        ));
        assert!(matches!(
            store.remove_user("nope"),
            Err(StoreError::InvalidAor { .. })
        ));
        assert_eq!(store.list_users().unwrap().len(), 1);
    }

    #[test]
    fn aor_parts() {
        let aor = Aor::parse("Alice@LocalHost").unwrap();
        assert_eq!(aor.as_str(), "Alice@localhost");
        assert_eq!(aor.user(), "Alice");
        assert_eq!(aor.domain(), "localhost");
        assert_eq!(aor.to_string(), "Alice@localhost");
    }

    /// A client answers the registrar's challenge with `username`; the registrar finds the
    /// account and verifies the response with the stored HA1.
    fn client_verifies(store: &Store, username: &str, password: &str, alg: Algorithm) -> bool {
        let realm = "localhost";
        let key = NonceKey::new([9; 32]);
        let nonce = key.make_nonce(NOW, realm, 1);
        let ch = Challenge::parse(&digest::challenge(realm, &nonce, alg, false, None)).unwrap();
        assert_eq!(ch.qop, Some(Qop::Auth));
        let value = digest::respond(
            &ch,
            "REGISTER",
            "sip:localhost",
            username,
            password,
            "0a4f113b",
            1,
        );
        let creds = Credentials::parse(&value).unwrap();
        let Some(user) = store
            .user_credentials(&creds.username, &creds.realm)
            .unwrap()
        else {
            return false;
        };
        assert_eq!(user.aor, "alice@localhost");
        digest::verify(&creds, "REGISTER", user.ha1(creds.algorithm))
    }

    #[test]
    fn credentials_for_both_username_forms_verify() {
        let dir = TempDir::new("users-creds");
        let store = Store::open(dir.path()).unwrap();
        store
            .add_user("alice@localhost", "wonderland", "localhost", NOW)
            .unwrap();
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            for username in ["alice", "alice@localhost"] {
                assert!(
                    client_verifies(&store, username, "wonderland", alg),
                    "{username} {alg}"
                );
                assert!(
                    !client_verifies(&store, username, "wrong", alg),
                    "{username} {alg}"
                );
            }
            assert!(!client_verifies(&store, "bob", "wonderland", alg));
            // The account is found, but the client hashed another username string than the
            // one the HA1 was computed with.
            assert!(!client_verifies(
                &store,
                "alice@LOCALHOST",
                "wonderland",
                alg
            ));
        }
        // The two forms have different HA1 values, each the hash of its own username.
        let short = store
            .user_credentials("alice", "localhost")
            .unwrap()
            .unwrap();
        let full = store
            .user_credentials("alice@localhost", "localhost")
            .unwrap()
            .unwrap();
        assert_eq!(
            short.ha1(Algorithm::Md5),
            digest::ha1(Algorithm::Md5, "alice", "localhost", "wonderland")
        );
        assert_eq!(
            full.ha1(Algorithm::Sha256),
            digest::ha1(
                Algorithm::Sha256,
                "alice@localhost",
                "localhost",
                "wonderland"
            )
        );
        assert_ne!(short.ha1_md5, full.ha1_md5);
        assert_ne!(short.ha1_sha256, full.ha1_sha256);
        assert!(!format!("{short:?}").contains(&short.ha1_md5));
        // Another realm finds nothing.
        assert!(
            store
                .user_credentials("alice@localhost", "example.com")
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .user_credentials("alice", "example.com")
                .unwrap()
                .is_none()
        );
        assert!(store.user_credentials("", "localhost").unwrap().is_none());
    }

    #[test]
    fn the_password_is_not_stored() {
        let dir = TempDir::new("users-nopw");
        let store = Store::open(dir.path()).unwrap();
        let password = "Very-Distinctive-Password-42";
        store
            .add_user("alice@localhost", password, "localhost", NOW)
            .unwrap();
        for name in ["cpm.db", "cpm.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
                assert!(
                    !bytes
                        .windows(password.len())
                        .any(|w| w == password.as_bytes()),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn two_stores_on_one_file_see_each_other() {
        let dir = TempDir::new("users-two");
        let node = Store::open(dir.path()).unwrap();
        let admin = Store::open(dir.path()).unwrap();
        admin
            .add_user("alice@localhost", "pw", "localhost", NOW)
            .unwrap();
        assert!(node.user_exists("alice@localhost").unwrap());
        assert!(
            node.user_credentials("alice", "localhost")
                .unwrap()
                .is_some()
        );
        // A read in progress on one connection does not block a write on the other (WAL).
        let mut stmt = node.conn.prepare("SELECT aor FROM users").unwrap();
        let mut rows = stmt.query([]).unwrap();
        assert!(rows.next().unwrap().is_some());
        node.add_user("bob@localhost", "pw", "localhost", NOW)
            .unwrap();
        admin
            .add_user("carol@localhost", "pw", "localhost", NOW)
            .unwrap();
        drop(rows);
        drop(stmt);
        assert!(admin.remove_user("bob@localhost").unwrap());
        assert_eq!(
            node.list_users()
                .unwrap()
                .into_iter()
                .map(|u| u.aor)
                .collect::<Vec<_>>(),
            ["alice@localhost", "carol@localhost"]
        );
        // Duplicates are refused across connections too.
        assert!(matches!(
            node.add_user("alice@localhost", "x", "localhost", NOW),
            Err(StoreError::UserExists(_))
        ));
    }
}
