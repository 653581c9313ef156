//! Berth's control-plane components: programs that, like kube-scheduler and
//! kube-controller-manager, see the cluster only through the Kubernetes API (a kube-rs client,
//! in-process or over HTTPS) and never touch the store. Each runs under leader election so that
//! several servers sharing one etcd run exactly one active copy.
//!
//! - [`leader`]: leader election on a coordination.k8s.io/v1 Lease, upstream's semantics.
//! - [`nodeipam`]: pod CIDRs for nodes from the cluster CIDR.
//! - [`nodelifecycle`]: nodes whose kubelet went quiet: Unknown conditions, taints, evictions.
//! - [`scheduler`]: the default scheduler (queue, cache, filter/score plugins, binder).
//! - [`volume`]: PersistentVolume binding and the local-path provisioner.
//! - [`manager`]: the workload controllers ([`replicaset`], [`deployment`], [`daemonset`],
//!   [`job`], [`cronjob`]) on shared
//!   [`informer`]s, with what they share in [`controller`], [`workqueue`] and [`recorder`];
//!   the [`namespace`] controller and the [`garbagecollector`], which read the API's
//!   [`discovery`] and work on every resource through kube's dynamic API; the Services'
//!   [`endpointslice`] and [`endpoints`] controllers, [`servicelb`] (LoadBalancer Services
//!   on the nodes' addresses), and the HorizontalPodAutoscaler's [`podautoscaler`].

pub mod controller;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod discovery;
pub mod disruption;
pub mod endpoints;
pub mod endpointslice;
pub mod garbagecollector;
pub mod informer;
pub mod job;
pub mod leader;
pub mod manager;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podautoscaler;
pub mod podgc;
pub mod recorder;
pub mod replicaset;
pub mod scheduler;
pub mod selection;
pub mod servicelb;
pub mod statefulset;
pub mod volume;
pub mod workqueue;
