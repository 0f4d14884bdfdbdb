//! The cache: keys, the RFC 9111 policy, stored objects and the store.
//!
//! `policy` decides (pure functions), `store` keeps (moka), `key` and
//! `object` are the data in between. Only `proxy` combines them with
//! backend fetches.

pub mod key;
pub mod object;
pub mod policy;
pub mod store;

pub use key::CacheKey;
pub use object::CachedObject;
pub use store::{MemoryStore, ObjectStore};
