//! kubevirt-reboot-webhook: admission for KubeVirt's `rebootPolicy` and the
//! `BootOnce` runStrategy (VEP 0171).
//!
//! Where things live: the decisions in [`admission`] (pure), the gate in
//! [`gates`], VM owner lookup in [`owners`] and [`cluster`], HTTP and TLS in
//! [`server`] and [`tls`], the offline command in [`check`].

pub mod admission;
pub mod certs;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod gates;
pub mod health;
pub mod linger;
pub mod manifests;
pub mod metrics;
pub mod owners;
pub mod serve;
pub mod server;
pub mod tls;
pub mod webhook;
