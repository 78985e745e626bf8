//! Simulators for acquiro: an issuer host with rules and a ledger, POS terminals that retransmit and
//! reverse like real ones, and the reconciliation of the two — the check of the switch's invariant that
//! every transaction's net debit equals what its terminal was told.

pub mod issuer;
pub mod ledger;
mod outcome;
pub mod purchase;
pub mod reconcile;
pub mod relay;
mod report;
pub mod rules;
pub mod settlement;
mod shared;
pub mod terminals;

pub use issuer::IssuerSim;
pub use ledger::{Account, Ledger};
pub use purchase::{Purchase, settlement};
pub use reconcile::{Mismatch, Reconciliation, reconcile};
pub use rules::{Action, Rules};
pub use terminals::{Load, Outcome, Progress, Run, Told};
