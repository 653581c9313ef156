//! The `kube-dns` Service in kube-system, as k3s's CoreDNS manifest has it (labels
//! k8s-app=kube-dns, kubernetes.io/name=CoreDNS; ports `dns` 53/UDP and `dns-tcp` 53/TCP),
//! with the cluster DNS address as its cluster IP: made by `berth server` at start so the
//! address is reserved and `kubectl get svc -n kube-system` shows it. It has no selector: every
//! node answers on the address itself, so no proxy rule or endpoint stands behind it. A
//! `kube-dns` Service already there is left as it is.

use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use kube::Api;

pub const NAMESPACE: &str = "kube-system";
pub const NAME: &str = "kube-dns";

/// The Service for the cluster DNS address `ip`.
pub fn kube_dns(ip: IpAddr) -> Service {
    let v = serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {
            "name": NAME, "namespace": NAMESPACE,
            "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ip.to_string(), "clusterIPs": [ip.to_string()],
            "ipFamilyPolicy": "SingleStack",
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}
            ]
        }
    });
    // a literal of the Service type: it deserializes
    serde_json::from_value(v).unwrap_or_default()
}

/// Makes the `kube-dns` Service for `ip` unless one exists; retried while the API is not ready.
/// Refusals that retrying cannot fix (the address taken, outside the service range) are logged.
pub async fn ensure(client: kube::Client, ip: IpAddr) {
    let api: Api<Service> = Api::namespaced(client, NAMESPACE);
    let mut delay = Duration::from_millis(200);
    loop {
        match api.get_opt(NAME).await {
            Ok(Some(existing)) => {
                let have = existing.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
                if have != ip.to_string() {
                    tracing::warn!(cluster_ip = %have, cluster_dns = %ip, "the kube-dns Service has another cluster IP than --cluster-dns; left as it is");
                }
                return;
            }
            Ok(None) => match api.create(&PostParams::default(), &kube_dns(ip)).await {
                Ok(_) => {
                    tracing::info!(cluster_ip = %ip, "made the kube-dns Service");
                    return;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(kube::Error::Api(e)) if e.code == 422 => {
                    tracing::error!(cluster_ip = %ip, error = %e.message, "the kube-dns Service cannot have the cluster DNS address");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "making the kube-dns Service; retrying"),
            },
            Err(e) => tracing::warn!(error = %e, "reading the kube-dns Service; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_reserves_the_address_on_the_dns_ports() {
        let s = kube_dns("10.43.0.10".parse().unwrap());
        let spec = s.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.43.0.10"));
        assert!(spec.selector.is_none());
        let ports: Vec<_> = spec.ports.unwrap().into_iter().map(|p| (p.name.unwrap(), p.port, p.protocol.unwrap())).collect();
        assert_eq!(ports, [("dns".to_string(), 53, "UDP".to_string()), ("dns-tcp".to_string(), 53, "TCP".to_string())]);
        assert_eq!(s.metadata.labels.unwrap()["k8s-app"], "kube-dns");
    }
}
