//! kubevirt-reboot-webhook: admission for KubeVirt's `rebootPolicy` and the
//! `BootOnce` runStrategy (VEP 0171).
//!
//! Where things live: the decisions in [`admission`] (pure), the gate in
//! [`feature_gate`] and [`cluster::kubevirt_gate`], VM owner lookup in
//! [`owners`] and [`cluster::vm_cache`], HTTP and TLS in [`server`] and
//! [`tls`], the `serve` command's set-up in [`startup`], the offline command
//! in [`check`] (manifests read by [`object_files`]), the flags in [`cli`]
//! and the parsers of their values in [`values`] (a leaf); glibc malloc's
//! tuning for `serve` in [`allocator`].

pub mod admission;
pub mod allocator;
pub mod certs;
pub mod check;
pub mod cli;
pub mod cluster;
pub mod feature_gate;
pub mod health;
pub mod metrics;
pub mod object_files;
pub mod owners;
pub mod server;
pub mod startup;
pub mod tls;
pub mod values;
pub mod webhook;
