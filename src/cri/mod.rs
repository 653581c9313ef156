//! The CRI layer: the CRI v1 messages and services generated from proto/runtime/v1 (`v1`),
//! the CRI services as Rust traits (`api`, with `chunks` for the Stream* calls), their implementation over the image store and
//! runtime (`images`, `runtime`), and the gRPC server that adapts them to the wire (`grpc`,
//! `server`). The node agent calls the same traits in-process.
pub mod api;
mod chunks;
pub mod grpc;
pub mod images;
pub mod node_runtime;
pub mod runtime;
pub mod server;
pub mod transfer;

/// CRI v1 (package `runtime.v1`): messages, clients and servers generated from
/// proto/runtime/v1/api.proto.
#[allow(clippy::all)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");

    /// Credentials stay out of logs: the secret fields print as `<redacted>` when set.
    impl std::fmt::Debug for AuthConfig {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let secret = |s: &str| if s.is_empty() { "" } else { "<redacted>" };
            f.debug_struct("AuthConfig")
                .field("username", &self.username)
                .field("password", &secret(&self.password))
                .field("auth", &secret(&self.auth))
                .field("server_address", &self.server_address)
                .field("identity_token", &secret(&self.identity_token))
                .field("registry_token", &secret(&self.registry_token))
                .finish()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn debug_output_of_a_pull_redacts_the_credentials() {
        let auth = v1::AuthConfig { username: "berth".into(), password: "s3cret".into(), registry_token: "t0ken".into(), ..Default::default() };
        let req = v1::PullImageRequest { auth: Some(auth), ..Default::default() };
        let text = format!("{req:?}");
        assert!(!text.contains("s3cret") && !text.contains("t0ken"), "{text}");
        assert!(text.contains("\"berth\"") && text.contains("<redacted>"), "{text}");
    }
}
