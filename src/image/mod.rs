//! Images: references, the registry client, the content and snapshot stores, pulls and
//! imports. The CRI layer (`crate::cri::images`) serves these over the ImageService.
pub mod content;
pub mod error;
pub mod http_clients;
pub mod import;
pub mod meta;
pub mod oci;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;
